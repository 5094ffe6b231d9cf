#!/usr/bin/env bash
# Installs what is missing, builds luo twice (plain, and with AddressSanitizer
# + UndefinedBehaviorSanitizer) and runs the whole test suite in both builds.
# Shows progress all along (the build condensed to a line per 10 %, a line
# per test program, a note when a step has been quiet for 30 s), lists the
# skipped tests with their reasons, and ends with one line
# "N passed, N failed, N skipped"; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
luo_install_deps test
# A cached LUO kernel for the kernel suites (or LUO_KERNEL_SKIP with the reason).
. kernel/prepare.sh
luo_kernel_prepare

jobs=$(nproc 2>/dev/null || echo 2)

# Passes its input through, with ninja's "[N/M] step" lines condensed to one
# per 10 %, and says that LABEL is still running when nothing came for 30 s.
progress() { # label
	local label=$1 line rc last=-1 pct start=$SECONDS
	while :; do
		if IFS= read -r -t 30 line; then
			if [[ $line =~ ^\[([0-9]+)/([0-9]+)\]\ (.*)$ ]]; then
				pct=$((BASH_REMATCH[1] * 100 / BASH_REMATCH[2]))
				if ((pct / 10 != last)); then
					last=$((pct / 10))
					echo "$label: $pct% (${BASH_REMATCH[1]}/${BASH_REMATCH[2]}) ${BASH_REMATCH[3]:0:80}"
				fi
			else
				echo "$line"
			fi
		else
			rc=$?
			if ((rc <= 128)); then
				[ -z "$line" ] || echo "$line"
				break
			fi
			echo "$label: still running ($((SECONDS - start)) s)"
		fi
	done
}

setup() { # dir, extra options...
	local dir=$1; shift
	if [ ! -f "$dir/build.ninja" ]; then
		echo "== meson setup $dir $*"
		meson setup "$dir" "$@" >/dev/null
	else
		meson configure "$dir" "$@" >/dev/null
	fi
	echo "== building $dir"
	ninja -C "$dir" -j "$jobs" 2>&1 | progress "building $dir"
}

# The test builds let luod die at named points ($LUOD_FAULT) for the crash tests.
setup build -Dfault_injection=true
setup build-san -Db_sanitize=address,undefined -Db_lundef=false -Dfault_injection=true

status=0
for dir in build build-san; do
	echo "== meson test -C $dir"
	meson test -C "$dir" --num-processes "$jobs" --print-errorlogs ${LUO_TEST_ARGS:-} 2>&1 |
		progress "testing $dir" || status=1
done

python3 tools/test-summary.py build=build/meson-logs/testlog.json \
	build-san=build-san/meson-logs/testlog.json || status=1
exit $status
