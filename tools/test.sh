#!/usr/bin/env bash
# Installs what is missing, builds luo twice (plain, and with AddressSanitizer
# + UndefinedBehaviorSanitizer) and runs the whole test suite in both builds.
# Ends with one line "N passed, N failed, N skipped" and exits non-zero if
# anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
luo_install_deps
# A cached LUO kernel for the kernel suites (or LUO_KERNEL_SKIP with the reason).
. kernel/prepare.sh
luo_kernel_prepare

jobs=$(nproc 2>/dev/null || echo 2)
setup() { # dir, extra options...
	local dir=$1; shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir" -j "$jobs" >/dev/null || ninja -C "$dir" -j 1
}

setup build
setup build-san -Db_sanitize=address,undefined -Db_lundef=false

status=0
for dir in build build-san; do
	echo "== meson test -C $dir"
	meson test -C "$dir" --num-processes "$jobs" --print-errorlogs ${LUO_TEST_ARGS:-} || status=1
done
python3 tools/test-summary.py build/meson-logs/testlog.json build-san/meson-logs/testlog.json || status=1
exit $status
