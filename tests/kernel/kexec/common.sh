# Shared by the stages of the kexec suite: luod started as a service manager
# would start it, and kv-server with its data.
. /lab/lib.sh
LUO_SOCKET=/run/luo/luod.sock
export LUO_SOCKET
# 256 MiB of values: 65536 keys of 4 KiB, in a store with room to spare.
KV_KEYS=65536
KV_SIZE=4096
KV_CAPACITY=320M
KV_PORT=7000

# Seconds since boot, with hundredths (busybox date has no %N).
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# start_luod [ENV=VALUE...]: luod in the background, with that environment.
start_luod() {
	mkdir -p /run/luo
	env "$@" luod --foreground --socket "$LUO_SOCKET" --log-target stderr &
	LUOD_PID=$!
	_i=0
	while ! luoctl status >/dev/null 2>&1; do
		_i=$((_i + 1))
		if [ $_i -gt 200 ]; then
			lab_not_ok "luod serves on $LUO_SOCKET"
			return 1
		fi
		sleep 0.05
	done
	lab_ok "luod serves on $LUO_SOCKET (pid $LUOD_PID)"
}

# start_kv: kv-server in the background, waiting until it serves; KV_PID,
# and KV_READY: "pid port http_port keys fresh|restored ready_ns startup_ms".
start_kv() {
	rm -f /tmp/kv.ready
	kv-server --port $KV_PORT --capacity $KV_CAPACITY --ready-file /tmp/kv.ready &
	KV_PID=$!
	_i=0
	while [ ! -s /tmp/kv.ready ]; do
		_i=$((_i + 1))
		if [ $_i -gt 1200 ] || ! kill -0 $KV_PID 2>/dev/null; then
			lab_not_ok "kv-server serves on port $KV_PORT"
			return 1
		fi
		sleep 0.05
	done
	KV_READY=$(cat /tmp/kv.ready)
	lab_diag "kv-server: $KV_READY"
}

# kv_verify WHAT: every key, every byte, as loaded in stage 1.
kv_verify() {
	_t0=$(uptime_s)
	lab_check "kv-server restored $KV_KEYS keys of $KV_SIZE bytes $1, every byte verified" \
		kv-client --port $KV_PORT --keys $KV_KEYS --size $KV_SIZE verify
	lab_diag "verify took $(echo "$(uptime_s) $_t0" | awk '{printf "%.1f", $1 - $2}') s"
}

# The boot id differs from the previous stage's: a real kexec happened.
check_new_boot() {
	_prev=$(cat "$LAB_STATE/boot_id.$((LAB_STAGE - 1))")
	_now=$(cat /proc/sys/kernel/random/boot_id)
	if [ -n "$_prev" ] && [ "$_now" != "$_prev" ]; then
		lab_ok "a new kernel booted (boot id $_now, was $_prev)"
	else
		lab_not_ok "a new kernel booted (boot id $_now, was $_prev)"
	fi
}

# check_update_number N: luod's live update number after the kexecs.
check_update_number() {
	_st=$(luoctl --json status)
	case $_st in
	*"\"update_number\":$1,"*) lab_ok "luod's live update number is $1" ;;
	*) lab_not_ok "luod's live update number is $1 ($_st)" ;;
	esac
}

# kexec_now: the stage's kexec, done by luod (luoctl kexec) rather than /init.
kexec_now() {
	lab_kexec_prepare
	lab_diag "luoctl kexec into stage $((LAB_STAGE + 1)) at $(uptime_s) s"
	luoctl kexec --kernel "$LAB_NEXT_KERNEL" --initrd "$LAB_NEXT_INITRD" \
		--append "$LAB_NEXT_CMDLINE" --drop-unsupported
	lab_not_ok "luoctl kexec returned (exit $?) instead of rebooting"
	exit 1
}
