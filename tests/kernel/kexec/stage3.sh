# Stage 3, after a second kexec in a row: kv-server, running at the kexec,
# takes its store back; what arrived with the first kexec and was never
# retrieved is gone.
. ./common.sh
check_new_boot
start_luod || exit 1
check_update_number 2
luoctl list
start_kv || exit 1
case $KV_READY in
*" $KV_KEYS restored "*) lab_ok "kv-server restored its store from the session that crossed the second kexec" ;;
*) lab_not_ok "kv-server restored its store from the session that crossed the second kexec ($KV_READY)" ;;
esac
kv_verify "after a second kexec, running at it"
lab_tap kernel-kexec kernel-kexec stage3_sessions
kill -TERM $KV_PID
wait $KV_PID
exit 0
