# The session filesystem of kernel/patches (run with --patches kernel/patches):
# session files, luo_fd_is_session() without /proc; the last case leaves a
# holder with two sessions open for the kexec.
. /lab/lib.sh
for c in stage1_session_files stage1_fd_is_session_by_fstatfs stage1_preserve_and_hold; do
	lab_tap kernel-patched kernel-patched "$c"
done
exit 0
