# Stage 1: sessions of two uids in every state the kexec's rule looks at,
# kv-server's 256 MiB store handed over by a stopped server, a kexec refused
# for a socket and one failed on a bad kernel file (nothing changes), then
# `luoctl kexec`.
. ./common.sh
start_luod || exit 1
lab_tap kernel-kexec kernel-kexec stage1_sessions

start_kv || exit 1
t0=$(uptime_s)
lab_check "kv-client loads $KV_KEYS keys of $KV_SIZE bytes" \
	kv-client --port $KV_PORT --keys $KV_KEYS --size $KV_SIZE load
lab_diag "load took $(echo "$(uptime_s) $t0" | awk '{printf "%.1f", $1 - $2}') s"
# Stopped before the kexec, as a service manager stops services: its state waits in luod.
kill -TERM $KV_PID
wait $KV_PID
out=$(luoctl list)
echo "$out"
case $out in
*kv*incoming*waiting*) lab_ok "the stopped kv-server's session waits in luod" ;;
*) lab_not_ok "the stopped kv-server's session waits in luod" ;;
esac

# Sockets: the kernel cannot carry them.  Without --drop-unsupported: refused, with the list.
out=$(luoctl kexec --kernel /lab/boot/bzImage 2>&1)
rc=$?
echo "$out"
case $out in
*'session "sock" (uid 0), token 2: socket-v2'*'the kernel cannot carry'*)
	[ $rc = 1 ] && lab_ok "luoctl kexec without --drop-unsupported is refused with the list of sockets" ||
		lab_not_ok "luoctl kexec without --drop-unsupported exits 1 (exit $rc)" ;;
*) lab_not_ok "luoctl kexec without --drop-unsupported is refused with the list of sockets (exit $rc)" ;;
esac
case $out in
*'session "kv" (uid 0), token 2: socket-v2'*) lab_ok "the list names kv-server's listening socket" ;;
*) lab_not_ok "the list names kv-server's listening socket" ;;
esac
# A file that is no kernel: kexec_file_load() fails after luod preserved everything.
out=$(luoctl kexec --kernel /lab/suite/stage1.sh --drop-unsupported 2>&1)
rc=$?
echo "$out"
case $out in
*'nothing changed'*) [ $rc = 1 ] && lab_ok "luoctl kexec of a bad kernel file fails and says nothing changed" ||
	lab_not_ok "luoctl kexec of a bad kernel file exits 1 (exit $rc)" ;;
*) lab_not_ok "luoctl kexec of a bad kernel file fails and says nothing changed (exit $rc)" ;;
esac
# Another opener of /dev/liveupdate (systemd, say): luod waits a little, then says so.
exec 9<>/dev/liveupdate
t0=$(uptime_s)
out=$(luoctl kexec --kernel /lab/boot/bzImage --drop-unsupported 2>&1)
rc=$?
exec 9>&-
echo "$out"
case $out in
*'another process holds /dev/liveupdate'*'nothing changed'*)
	[ $rc = 1 ] && lab_ok "luoctl kexec while another process holds /dev/liveupdate fails with EBUSY after $(echo "$(uptime_s) $t0" | awk '{printf "%.1f", $1 - $2}') s" ||
		lab_not_ok "luoctl kexec while /dev/liveupdate is held exits 1 (exit $rc)" ;;
*) lab_not_ok "luoctl kexec while another process holds /dev/liveupdate fails with EBUSY (exit $rc)" ;;
esac
lab_tap kernel-kexec kernel-kexec stage1_after_failed_kexec
luoctl list
kexec_now
