#!/usr/bin/env bash
# The main job: builds luo, starts luod, and shows the example key-value
# server keeping its data and its clients' connections across restarts and
# across a live update of luod itself, while a client keeps sending requests.
# Prints the measured restart times (SIGTERM to the successor being ready)
# and luod's blackout.  Exits non-zero if any data was lost or any request
# failed.  Everything it starts is stopped and its temporary directory
# removed on exit.
#
# Knobs (environment): DEMO_KEYS (default 200000), DEMO_SIZE bytes per value
# (default 1000), DEMO_RESTARTS (default 5), DEMO_UPDATES (default 2),
# DEMO_CRASH (1: end with a SIGKILL of the server; default 1), DEMO_LUOD_CRASH
# (1: SIGKILL luod's worker once along the way; default 1), LUO_BUILD_DIR
# (default build).
set -euo pipefail
cd "$(dirname "$0")/.."

keys=${DEMO_KEYS:-200000}
size=${DEMO_SIZE:-1000}
restarts=${DEMO_RESTARTS:-5}
updates=${DEMO_UPDATES:-2}
crash=${DEMO_CRASH:-1}
luod_crash=${DEMO_LUOD_CRASH:-1}

section() { printf '\n== %s\n\n' "$*"; }
fail() {
	echo "FAILED: $*" >&2
	local f
	for f in server.log luod.log hammer.err; do
		if [ -n "${tmp:-}" ] && [ -s "$tmp/$f" ]; then
			echo "-- last lines of $f:" >&2
			tail -n 10 "$tmp/$f" >&2
		fi
	done
	exit 1
}

build=${LUO_BUILD_DIR:-build}
section "Installing what is missing and building luo into $build/"
. tools/deps.sh
luo_install_deps
jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" >/dev/null
fi
demo_targets="src/daemon/luod src/cli/luoctl examples/kv-server examples/kv-client"
if ! ninja -C "$build" -j "$jobs" >"$build/demo-build.log" 2>&1; then
	grep -E 'error|FAILED' "$build/demo-build.log" | head -n 20 >&2 || true
	echo "warning: the full build failed (above); building only what the demo needs" >&2
	# shellcheck disable=SC2086
	ninja -C "$build" -j "$jobs" $demo_targets >/dev/null || ninja -C "$build" -j 1 $demo_targets
fi
luod=$build/src/daemon/luod
luoctl=$build/src/cli/luoctl
server=$build/examples/kv-server
client=$build/examples/kv-client
for b in "$luod" "$luoctl" "$server" "$client"; do
	[ -x "$b" ] || fail "$b was not built"
done
echo "built: $luod $luoctl $server $client"

tmp=$(mktemp -d /tmp/luo-demo.XXXXXX)
luod_pid=""
server_pid=""
hammer_pid=""
cleanup() {
	local p
	for p in $hammer_pid $server_pid $luod_pid; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in $hammer_pid $server_pid $luod_pid; do
		for _ in $(seq 50); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Microseconds on the wall clock, without forking (bash >= 5).
now_us() { echo "${EPOCHREALTIME/./}"; }

section "Starting luod"
export LUO_SOCKET=$tmp/luod.sock
"$luod" --foreground --socket "$LUO_SOCKET" 2>"$tmp/luod.log" >/dev/null &
luod_pid=$!
for _ in $(seq 500); do
	"$luoctl" status >/dev/null 2>&1 && break
	kill -0 "$luod_pid" 2>/dev/null || { cat "$tmp/luod.log" >&2; fail "luod did not start"; }
	sleep 0.01
done
"$luoctl" status || fail "luod does not answer"

# Starts a kv-server and waits for its ready file; sets port, how, startup_ms, kept, ready_us.
start_server() {
	rm -f "$tmp/ready"
	"$server" --session demo --port "${port:-0}" --ready-file "$tmp/ready" \
		>>"$tmp/server.out" 2>>"$tmp/server.log" &
	server_pid=$!
	for _ in $(seq 2000); do
		[ -f "$tmp/ready" ] && break
		kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; fail "kv-server did not start"; }
		sleep 0.005
	done
	[ -f "$tmp/ready" ] || fail "kv-server did not become ready"
	local pid http keys ready_ns gen
	read -r pid port http keys how ready_ns startup_ms gen kept <"$tmp/ready"
	ready_us=$((ready_ns / 1000))
	server_keys=$keys
}

section "Starting the key-value server"
start_server
tail -n 1 "$tmp/server.out"
[ "$how" = fresh ] || fail "expected a fresh start, got: $how"

section "Loading $keys keys of $size bytes"
"$client" --port "$port" --keys "$keys" --size "$size" load
"$client" --port "$port" cmd STATS
"$luoctl" list

section "Restarting the server $((restarts + 1)) times and updating luod $updates times under load"
echo "a client sends requests over 4 connections all along (GETs checked byte for byte, and"
echo "new keys written); each restart sends SIGTERM and starts the successor at once"
echo
"$client" --port "$port" --keys "$keys" --size "$size" --conns 4 hammer >"$tmp/hammer.out" 2>"$tmp/hammer.err" &
hammer_pid=$!
sleep 1
restart_ms=()
blackouts=()
# The successor starts right after SIGTERM: it waits for the session, which
# arrives as soon as the old process has handed it over, and does not wait
# for the old process to finish exiting (unmapping a large store takes time).
restart_once() {
	local n=$1 t0 t1 old=$server_pid old_port=$port st=0
	t0=$(now_us)
	kill -TERM "$old"
	start_server
	wait "$old" || st=$?
	t1=$(now_us)
	[ "$st" = 0 ] || fail "kv-server $old exited with status $st on SIGTERM"
	[ "$how" = restored ] || fail "the successor started $how instead of restored"
	[ "$port" = "$old_port" ] || fail "the port changed from $old_port to $port"
	local ms old_ms
	ms=$(awk -v a="$t0" -v b="$ready_us" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
	old_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
	restart_ms+=("$ms")
	printf 'restart %d: pid %d -> %d, %s keys, %s connections kept, %s ms from SIGTERM to ready\n' \
		"$n" "$old" "$server_pid" "$server_keys" "$kept" "$ms"
	printf '           (the old process had exited after %s ms)\n' "$old_ms"
	sleep 0.5
}
update_once() {
	local out b
	out=$("$luoctl" update) || { echo "$out"; fail "luoctl update failed"; }
	echo "$out" | sed 's/^/  /'
	b=$(echo "$out" | sed -n 's/^blackout: *\([^ ]* *[a-zµ]*\).*/\1/p')
	blackouts+=("$b")
	sleep 0.5
}
n=0
for i in $(seq "$restarts"); do
	n=$((n + 1))
	restart_once "$n"
	if [ "$i" -le "$updates" ]; then
		echo "luoctl update ($i):"
		update_once
	fi
done
if [ "$luod_crash" = 1 ]; then
	echo
	echo "luod crash: SIGKILL of luod's worker (the process that serves) under load:"
	json=$("$luoctl" --json status) || fail "luoctl status failed"
	keeper=$(echo "$json" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
	worker=$(echo "$json" | sed -n 's/.*"worker_pid":\([0-9]*\).*/\1/p')
	t0=$(now_us)
	kill -KILL "$worker"
	for _ in $(seq 2000); do
		json=$("$luoctl" --json status 2>/dev/null) && new=$(echo "$json" | sed -n 's/.*"worker_pid":\([0-9]*\).*/\1/p') &&
			[ -n "$new" ] && [ "$new" != "$worker" ] && break
		sleep 0.005
	done
	[ -n "${new:-}" ] && [ "$new" != "$worker" ] || fail "no new luod worker answered"
	[ "$(echo "$json" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')" = "$keeper" ] || fail "luod's pid changed"
	printf 'luod worker %d -> %d (luod pid %d unchanged), serving again %s ms after the SIGKILL;\n' \
		"$worker" "$new" "$keeper" "$(awk -v a="$t0" -v b="$(now_us)" 'BEGIN { printf "%.2f", (b - a) / 1000 }')"
	echo "  the new worker recovered every session from the journal; the client's connections"
	echo "  to kv-server never noticed, and the server's sessions are all still there:"
	"$luoctl" list | sed 's/^/  /'
	sleep 0.5
fi
# After luod's updates (and crash) the server's session still hands over: one more restart proves it.
n=$((n + 1))
restart_once "$n"

if [ "$crash" = 1 ]; then
	echo
	echo "crash: SIGKILL instead of SIGTERM (no handover asked for):"
	old=$server_pid
	old_port=$port
	t0=$(now_us)
	kill -KILL "$old"
	wait "$old" 2>/dev/null || true
	start_server
	[ "$how" = restored ] || fail "after the crash the successor started $how"
	[ "$port" = "$old_port" ] || fail "the port changed from $old_port to $port"
	printf 'crash restart: pid %d -> %d, %s keys, %s ms from SIGKILL to ready\n' "$old" \
		"$server_pid" "$server_keys" \
		"$(awk -v a="$t0" -v b="$ready_us" 'BEGIN { printf "%.2f", (b - a) / 1000 }')"
	echo "  the session was handed over by luod when the killed process's fd closed (handover"
	echo "  on close); data and port survive, the open connections do not: the client reconnects"
	echo "  (counted as retries below) and its requests still succeed"
	sleep 0.5
fi

section "Stopping the client"
kill -INT "$hammer_pid"
hammer_status=0
wait "$hammer_pid" || hammer_status=$?
hammer_pid=""
cat "$tmp/hammer.out"
[ -s "$tmp/hammer.err" ] && sed 's/^/  /' "$tmp/hammer.err"

section "Checking the data"
verify_status=0
"$client" --port "$port" --keys "$keys" --size "$size" verify || verify_status=$?
"$client" --port "$port" cmd STATS
"$luoctl" status

section "Summary"
sorted=$(printf '%s\n' "${restart_ms[@]}" | sort -n)
printf 'kv-server restarts (SIGTERM to ready, %d): min %s ms, median %s ms, max %s ms\n' \
	"${#restart_ms[@]}" "$(echo "$sorted" | head -n 1)" \
	"$(echo "$sorted" | sed -n "$(((${#restart_ms[@]} + 1) / 2))p")" "$(echo "$sorted" | tail -n 1)"
if [ "${#blackouts[@]}" -gt 0 ]; then
	printf 'luod live update blackout: %s\n' "$(printf '%s, ' "${blackouts[@]}" | sed 's/, $//')"
fi
grep -h 'requests in' "$tmp/hammer.out" | sed 's/^kv-client hammer: /client: /'
status=0
if [ "$verify_status" != 0 ]; then
	echo "DATA LOST: the verification found missing or wrong keys"
	status=1
fi
if [ "$hammer_status" != 0 ]; then
	echo "REQUESTS FAILED: the client saw failures or lost writes"
	status=1
fi
if [ "$status" = 0 ]; then
	echo "OK: no data lost, no request failed"
fi
exit $status
