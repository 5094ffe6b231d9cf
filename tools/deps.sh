# shellcheck shell=bash
# Sourced by tools/test.sh, tools/demo.sh and tools/check-debian.sh: installs
# the Debian packages a command needs when they are missing (with sudo when
# not root), and nothing more.
#
#   luo_install_deps [WHAT...]     WHAT: build (the default), demo, test,
#                                  bench, fuzz, debian
#
#   build   compiling luo: meson, ninja, gcc, libfdt, pkg-config (and
#           systemd's pkg-config file, which says where the units go)
#   demo    the build alone (tools/demo.sh)
#   test    the build, jq (luoctl's JSON), systemd's tools (systemd-analyze,
#           systemd-socket-activate) and bash-completion for the service
#           tests, and redis-server and wrk, which the suite's benchmark
#           smoke test drives when present
#   bench   the build, redis-server and wrk (bench/run compares against them)
#   fuzz    the build and clang's libFuzzer (CC=clang -Dfuzz=true)
#   debian  the build, debhelper, lintian and mmdebstrap (tools/check-debian.sh)
#
# Installing redis-server starts a Redis service on Debian: it is installed
# with services kept from starting (policy-rc.d), and left disabled.
# LUO_EXTRA_PACKAGES adds packages to any call.

luo_packages_build="meson ninja-build pkg-config gcc libfdt-dev python3"
# bookworm ships systemd.pc in systemd itself; later releases in systemd-dev.
luo_packages_build_optional="systemd-dev"
luo_packages_test="jq systemd bash-completion"
luo_packages_test_optional="redis-server wrk"
luo_packages_bench="redis-server wrk"
luo_packages_fuzz="clang libclang-rt-14-dev"
luo_packages_debian="debhelper lintian dpkg-dev mmdebstrap"

luo_missing_packages() {
	local p missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	echo "$missing"
}

# Installs with invoke-rc.d refusing to start services, then disables the
# ones that would start at boot; removes only a policy-rc.d it made itself.
luo_install_without_starting() { # sudo, packages...
	local sudo=$1 policy=/usr/sbin/policy-rc.d made="" r=0
	shift
	if [ ! -e $policy ]; then
		printf '#!/bin/sh\n# Written by luo tools/deps.sh while installing packages.\nexit 101\n' |
			$sudo tee $policy >/dev/null && $sudo chmod 755 $policy && made=1
	fi
	$sudo apt-get install -y -qq "$@" >/dev/null || r=$?
	[ -n "$made" ] && $sudo rm -f $policy
	if [ $r = 0 ] && command -v systemctl >/dev/null; then
		local p
		for p in "$@"; do
			[ "$p" = redis-server ] || continue
			if [ -d /run/systemd/system ]; then
				$sudo systemctl disable --now redis-server.service >/dev/null 2>&1 || true
			else
				$sudo systemctl disable redis-server.service >/dev/null 2>&1 || true
			fi
		done
	fi
	return $r
}

luo_install_deps() {
	local what want="" optional="" w
	[ $# = 0 ] && set -- build
	for what in "$@"; do
		case $what in
		build | demo) want="$want $luo_packages_build"; optional="$optional $luo_packages_build_optional" ;;
		test) want="$want $luo_packages_build $luo_packages_test"
			optional="$optional $luo_packages_build_optional $luo_packages_test_optional" ;;
		bench) want="$want $luo_packages_build $luo_packages_bench" ;;
		fuzz) want="$want $luo_packages_build $luo_packages_fuzz" ;;
		debian) want="$want $luo_packages_build $luo_packages_debian" ;;
		*) echo "luo_install_deps: unknown '$what' (build, demo, test, bench, fuzz, debian)" >&2
			return 2 ;;
		esac
	done
	local missing opt
	missing=$(luo_missing_packages $want ${LUO_EXTRA_PACKAGES:-})
	opt=$(luo_missing_packages $optional)
	# An optional package another one already provides (systemd.pc) is not missing.
	case " $opt " in *" systemd-dev "*)
		pkg-config --exists systemd 2>/dev/null && opt=${opt/ systemd-dev/} ;;
	esac
	[ -z "$missing$opt" ] && return 0
	local sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	echo "installing:$missing$opt"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq || true
	if [ -n "$missing" ]; then
		luo_install_without_starting "$sudo" $missing
	fi
	for w in $opt; do
		luo_install_without_starting "$sudo" "$w" || echo "optional package not installed: $w"
	done
}
