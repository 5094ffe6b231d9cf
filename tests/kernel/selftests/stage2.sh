# After the kexec: stage 2 of every kexec test (retrieve, verify, finish),
# then the API test again on the new kernel.
. /lab/lib.sh
cd "$LAB_SELFTESTS" || exit 1
for t in luo_kexec_simple luo_multi_session luo_stress_sessions luo_stress_files; do
	if [ -x "./$t" ]; then
		lab_kselftest "$t stage 2" "./$t" -s 2
	else
		lab_skip "$t stage 2" "not among this kernel's selftests"
	fi
done
lab_tap "liveupdate after the kexec" ./liveupdate
exit 0
