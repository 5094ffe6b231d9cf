# The kernel's own liveupdate selftests, built from the same source tree as
# the kernel: the API test before the kexec, then stage 1 of every kexec
# test (each leaves a holder process with its sessions open for the kexec).
. /lab/lib.sh
cd "$LAB_SELFTESTS" || exit 1
lab_tap "liveupdate before the kexec" ./liveupdate
for t in luo_kexec_simple luo_multi_session luo_stress_sessions luo_stress_files; do
	if [ -x "./$t" ]; then
		lab_kselftest "$t stage 1" "./$t" -s 1
	else
		lab_skip "$t stage 1" "not among this kernel's selftests"
	fi
done
exit 0
