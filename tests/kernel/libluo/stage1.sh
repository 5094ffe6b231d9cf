# libluo's session functions on the kernel's own fds; the last case leaves a
# holder with two sessions open for the kexec.
. /lab/lib.sh
for c in stage1_kernel_session_calls stage1_preserve_and_hold stage1_batch_preserve_and_hold; do
	lab_tap kernel-libluo kernel-libluo "$c"
done
exit 0
