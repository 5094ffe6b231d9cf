# Stage 2, after luod's kexec: luod started afresh finds what the kexec
# carried; kv-server takes its store back; the sessions' rules.  Then a second
# kexec with kv-server still running.
. ./common.sh
check_new_boot
start_luod || exit 1
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
