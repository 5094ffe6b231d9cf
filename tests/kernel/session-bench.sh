#!/bin/bash
# Times the kernel's sessions on the plain LUO kernel and on the kernel built
# with kernel/patches (the session filesystem), one after the other in the
# same run: 10,000 sessions created, closed, held across a real kexec and
# retrieved (the tests/kernel/bench suite), and the kexec with them held
# against a kexec with none. Prints both TAP streams' results and a table
# with the ratio patched/plain. Both kernels must be cached:
#   kernel/lab.sh build && kernel/lab.sh build --patches kernel/patches
# and the meson build must have tests/kernel/kernel-session-bench:
#   tests/kernel/session-bench.sh [BUILD_DIR]      (default: build)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-$root/build}
lab=$root/kernel/lab.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

[ -x "$build/tests/kernel/kernel-session-bench" ] ||
	{ echo "session-bench: no $build/tests/kernel/kernel-session-bench (ninja -C $build)" >&2; exit 1; }

for k in plain patched; do
	args=(run "$root/tests/kernel/bench" --build "$build" --quiet)
	[ $k = patched ] && args+=(--patches "$root/kernel/patches")
	echo "== $k kernel" >&2
	if ! "$lab" "${args[@]}" >"$out/$k.tap"; then
		cat "$out/$k.tap"
		echo "session-bench: the $k kernel's run failed" >&2
		exit 1
	fi
	cat "$out/$k.tap"
done

# "bench: create 10000 sessions: 1234.567 ms (...)" -> 1234.567
ms() { sed -n "s/.* - stage [0-9]*: bench: $2 [0-9]* sessions: \([0-9.]*\) ms.*/\1/p" "$out/$1.tap"; }
# "stage N: booted by a real kexec in 12.3 s" -> 12.3
kexec_s() { sed -n "s/.* - stage $2: booted by a real kexec in \([0-9.]*\) s.*/\1/p" "$out/$1.tap"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }'; }

printf '\n| step (10,000 sessions) | plain | patched | patched/plain |\n|---|---|---|---|\n'
for step in create close "create to hold" retrieve "finish and close"; do
	a=$(ms plain "$step") b=$(ms patched "$step")
	printf '| %s | %s ms | %s ms | %s |\n' "$step" "$a" "$b" "$(ratio "$a" "$b")"
done
for st in 2 3; do
	a=$(kexec_s plain $st) b=$(kexec_s patched $st)
	what="kexec with 10,000 sessions held"
	[ $st = 3 ] && what="kexec with none held (baseline)"
	printf '| %s | %s s | %s s | %s |\n' "$what" "$a" "$b" "$(ratio "$a" "$b")"
done
