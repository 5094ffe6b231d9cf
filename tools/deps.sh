# Sourced by tools/test.sh and tools/demo.sh: installs the Debian packages luo
# needs when they are missing (with sudo when not root).
luo_packages="meson ninja-build pkg-config gcc libfdt-dev python3"
# Optional: clang's libFuzzer for -Dfuzz=true builds; jq checks luoctl's JSON in
# the tests; redis-server and wrk are what the benchmarks compare luo against.
luo_optional_packages="clang libclang-rt-14-dev jq redis-server wrk"

luo_install_deps() {
	local missing="" p
	for p in $luo_packages ${LUO_EXTRA_PACKAGES:-}; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	local opt=""
	for p in $luo_optional_packages; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || opt="$opt $p"
	done
	[ -z "$missing$opt" ] && return 0
	local sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	echo "installing:$missing$opt"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq || true
	if [ -n "$missing" ]; then
		$sudo apt-get install -y -qq $missing >/dev/null
	fi
	if [ -n "$opt" ]; then
		$sudo apt-get install -y -qq $opt >/dev/null || echo "optional packages not installed:$opt"
	fi
}
