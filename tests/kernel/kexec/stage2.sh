# Stage 2, after luod's kexec: luod started afresh finds what the kexec
# carried; kv-server takes its store back; the sessions' rules.  Then a second
# kexec with kv-server still running.
. ./common.sh
check_new_boot
# The worker that rebuilds the sessions dies right after it journaled them
# (a test build's fault injection): its successor has them all.
start_luod LUOD_FAULT=kexec-restored || exit 1
st=$(luoctl --json status)
case $st in
*'"worker_restarts":1,'*'"incoming_sessions":7,'* | *'"incoming_sessions":7,'*'"worker_restarts":1,'*)
	lab_ok "a worker killed right after it journaled the kexec's sessions leaves all 7 to its successor" ;;
*) lab_not_ok "a worker killed right after it journaled the kexec's sessions leaves all 7 to its successor ($st)" ;;
esac
check_update_number 1
luoctl list
start_kv || exit 1
case $KV_READY in
*" $KV_KEYS restored "*) lab_ok "kv-server restored its store from the session that crossed the kexec" ;;
*) lab_not_ok "kv-server restored its store from the session that crossed the kexec ($KV_READY)" ;;
esac
kv_verify "after the kexec, stopped before it"
lab_tap kernel-kexec kernel-kexec stage2_sessions
luoctl list
# kv-server keeps running: its session is open and outgoing at the kexec.
kexec_now
