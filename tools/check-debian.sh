#!/usr/bin/env bash
# Release check of the Debian packaging: builds the binary packages luod,
# libluo0 and libluo-dev with `dpkg-buildpackage -b -us -uc` from a copy of
# this tree, runs lintian on them (any error fails; warnings are listed),
# installs them into a scratch root and checks there what a user gets: the
# systemd units (systemd-analyze verify; the system units enabled, the user
# units not), the manual pages, pkg-config, a program compiled and linked
# against the installed libluo, and a luod that serves luoctl.
#
# The scratch root is a minimal Debian made by mmdebstrap, in which the
# packages are installed by apt with their maintainer scripts; without
# mmdebstrap (or with LUO_DEB_ROOT=dpkg) the packages are unpacked with
# `dpkg --root` into an empty root instead (no maintainer scripts, and the
# checks use the host's tools on the unpacked files).
#
# Takes a few minutes (the build, and mmdebstrap fetching a base system):
# it is not part of tools/test.sh.  LUO_DEB_CHECK=1 runs the test suite
# during the build too; LUO_KEEP=1 keeps the work directory.  Ends with
# "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/deps.sh
luo_install_deps debian

src=$PWD
work=$(mktemp -d /tmp/luo-debian.XXXXXX)
cleanup() {
	if [ "${LUO_KEEP:-0}" = 1 ]; then
		echo "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

n_pass=0
n_fail=0
pass() { n_pass=$((n_pass + 1)); echo "ok - $*"; }
fail() { n_fail=$((n_fail + 1)); echo "FAILED - $*"; }
check() { # description, command...
	local what=$1 out
	shift
	if out=$("$@" 2>&1); then
		pass "$what"
	else
		fail "$what"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
	fi
}
# Shows the lines of a long step that match PATTERN, and a note every 30 s
# when none came; everything goes to LOG.
progress() { # label, log, pattern
	local label=$1 log=$2 pattern=$3 line start=$SECONDS quiet=$SECONDS
	while :; do
		if IFS= read -r -t 5 line; then
			printf '%s\n' "$line" >>"$log"
			if [[ $line =~ $pattern ]]; then
				echo "  $line"
				quiet=$SECONDS
			fi
		elif (($? <= 128)); then
			break
		fi
		if ((SECONDS - quiet >= 30)); then
			echo "  $label: still running ($((SECONDS - start)) s)"
			quiet=$SECONDS
		fi
	done
}

echo "== copying the tree to $work/luo"
mkdir -p "$work/luo"
git -C "$src" ls-files -co --exclude-standard | grep -v '^build' |
	tar -C "$src" -cf - -T - | tar -C "$work/luo" -xf -

echo "== dpkg-buildpackage -b -us -uc"
opts="parallel=2"
[ "${LUO_DEB_CHECK:-0}" = 1 ] || opts="$opts nocheck"
if ! (cd "$work/luo" && DEB_BUILD_OPTIONS="$opts" dpkg-buildpackage -b -us -uc 2>&1 </dev/null) |
	progress dpkg-buildpackage "$work/build.log" '^ +dh_[a-z_]+|^dpkg-[a-z]+: (error|warning)|error:'; then
	tail -n 40 "$work/build.log"
	fail "dpkg-buildpackage -b -us -uc (log: $work/build.log)"
	LUO_KEEP=1
	echo "$n_pass passed, $n_fail failed"
	exit 1
fi
pass "dpkg-buildpackage -b -us -uc"
debs=()
for p in luod libluo0 libluo-dev; do
	f=$(ls "$work"/${p}_*.deb 2>/dev/null | head -n 1)
	if [ -n "$f" ]; then pass "package $p built: $(basename "$f")"; debs+=("$f"); else fail "package $p built"; fi
done

echo "== lintian"
lintian --allow-root --fail-on error -I --display-level ">=info" "$work"/luo_*.changes >"$work/lintian.log" 2>&1 && lrc=0 || lrc=$?
sed 's/^/    /' "$work/lintian.log"
if [ $lrc = 0 ]; then pass "lintian: no errors ($(grep -c '^W:' "$work/lintian.log" || true) warnings)"; else fail "lintian: errors"; fi

# Which package holds what.
contents() { dpkg-deb -c "$1" | awk '{ print $6 }'; }
for want in "luod ./usr/sbin/luod" "luod ./usr/bin/luoctl" "luod ./lib/systemd/system/luod.service" \
	"luod ./lib/systemd/system/luod.socket" "luod ./usr/lib/systemd/user/luod.service" \
	"luod ./usr/share/man/man8/luod.8.gz" "luod ./usr/share/bash-completion/completions/luoctl" \
	"luod luo-preload.so" "libluo0 libluo.so.0" "libluo-dev ./usr/include/luo/luo.h" \
	"libluo-dev pkgconfig/luo.pc" "libluo-dev ./usr/share/man/man3/libluo.3.gz"; do
	set -- $want
	deb=$(ls "$work"/${1}_*.deb | head -n 1)
	if contents "$deb" | grep -q -- "$2"; then pass "$1 holds $2"; else fail "$1 holds $2"; fi
done

root=$work/root
mode=${LUO_DEB_ROOT:-}
[ -n "$mode" ] || { command -v mmdebstrap >/dev/null && mode=mmdebstrap || mode=dpkg; }
cat >"$work/hello.c" <<'C'
#include <errno.h>
#include <stdio.h>
#include <luo/luo.h>
int main(int argc, char **argv)
{
	int fd = luo_connect(argc > 1 ? argv[1] : "/nonexistent/luod.sock");

	printf("luo_connect: %d\n", fd);
	return fd >= 0 ? 0 : fd == -ENOENT || fd == -ECONNREFUSED ? 3 : 1;
}
C

if [ "$mode" = mmdebstrap ]; then
	echo "== mmdebstrap: a minimal Debian with the packages installed by apt"
	suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
	mkdir -p "$work/debs"
	cp "${debs[@]}" "$work/debs/"
	if ! mmdebstrap --variant=apt --include=pkg-config,gcc,libc6-dev,systemd,man-db \
		--customize-hook="copy-in $work/debs /tmp" \
		--customize-hook='chroot "$1" sh -c "apt-get install -y /tmp/debs/*.deb"' \
		"$suite" "$root" 2>&1 </dev/null | progress mmdebstrap "$work/mmdebstrap.log" '^[IEW]: '; then
		tail -n 30 "$work/mmdebstrap.log"
		fail "mmdebstrap with the packages installed (log: $work/mmdebstrap.log)"
		LUO_KEEP=1
		echo "$n_pass passed, $n_fail failed"
		exit 1
	fi
	pass "installed with apt in a scratch root made by mmdebstrap $suite (maintainer scripts ran)"
	in_root() { chroot "$root" "$@"; }
	check "dpkg says the three packages are installed" \
		sh -c "chroot '$root' dpkg-query -W -f='\${Status}\n' luod libluo0 libluo-dev | grep -c 'install ok installed' | grep -qx 3"
	check "systemd-analyze verify of the installed system units" \
		sh -c "out=\$(chroot '$root' systemd-analyze verify /lib/systemd/system/luod.service /lib/systemd/system/luod.socket 2>&1); echo \"\$out\"; [ -z \"\$out\" ]"
	check "systemd-analyze --user verify of the installed user units" \
		sh -c "out=\$(chroot '$root' env XDG_RUNTIME_DIR=/tmp systemd-analyze --user verify /usr/lib/systemd/user/luod.service /usr/lib/systemd/user/luod.socket 2>&1); echo \"\$out\"; [ -z \"\$out\" ]"
	check "luod.service and luod.socket are enabled" \
		sh -c "chroot '$root' systemctl is-enabled luod.service luod.socket"
	check "the per-user units are not enabled for every user" \
		sh -c "! chroot '$root' systemctl --global is-enabled luod.socket"
	check "man finds luod(8), luoctl(8), libluo(3), luo_connect(3)" \
		sh -c "for p in 8:luod 8:luoctl 3:libluo 3:luo_connect; do chroot '$root' man -w \${p%%:*} \${p#*:} || exit 1; done"
	check "the pages render without warnings" \
		sh -c "for p in luod luoctl libluo; do out=\$(chroot '$root' sh -c \"MANWIDTH=80 man --warnings \$p 2>&1 >/dev/null\"); [ -z \"\$out\" ] || { echo \"\$p: \$out\"; exit 1; }; done"
	check "pkg-config --cflags --libs luo" sh -c "chroot '$root' pkg-config --cflags --libs luo | grep -q -- -lluo"
	cp "$work/hello.c" "$root/tmp/hello.c"
	check "a program builds with pkg-config and links libluo.so.0" \
		sh -c "chroot '$root' sh -c 'cc /tmp/hello.c -o /tmp/hello \$(pkg-config --cflags --libs luo) && ldd /tmp/hello | grep -q libluo.so.0'"
	check "it runs: luo_connect() answers for a missing luod" sh -c "chroot '$root' /tmp/hello; [ \$? = 3 ]"
	check "luod --version and luoctl --version" sh -c "chroot '$root' luod --version && chroot '$root' luoctl --version"
	check "an installed luod serves the installed luoctl and the program" sh -c "
		chroot '$root' luod --socket /tmp/luod.sock --pid-file /tmp/luod.pid >/dev/null &&
		chroot '$root' luoctl --socket /tmp/luod.sock status &&
		chroot '$root' /tmp/hello /tmp/luod.sock; r=\$?
		kill \$(cat '$root/tmp/luod.pid'); exit \$r"
else
	echo "== dpkg --root: the packages unpacked into an empty root"
	mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
	touch "$root/var/lib/dpkg/status"
	# Only these packages are in the root: their dependencies are the host's.
	check "dpkg --root --unpack" dpkg --root="$root" --force-depends --unpack "${debs[@]}"
	for f in /lib/systemd/system/luod.service /lib/systemd/system/luod.socket \
		/usr/lib/systemd/user/luod.service /usr/lib/systemd/user/luod.socket; do
		[ -f "$root$f" ] && pass "unit $f" || fail "unit $f"
	done
	mkdir -p "$root/etc/systemd/system"
	cp -a /lib/systemd/system/*.target /lib/systemd/system/*.slice "$root/etc/systemd/system/" 2>/dev/null || true
	check "systemd-analyze verify --root of the system units" \
		sh -c "out=\$(systemd-analyze verify --man=no --root='$root' /lib/systemd/system/luod.service /lib/systemd/system/luod.socket 2>&1); echo \"\$out\"; [ -z \"\$out\" ]"
	for p in man8/luod.8.gz man8/luoctl.8.gz man3/libluo.3.gz man3/luo_connect.3.gz; do
		[ -f "$root/usr/share/man/$p" ] && pass "man page $p" || fail "man page $p"
	done
	check "the pages render without warnings" sh -c "for p in man8/luod.8.gz man8/luoctl.8.gz man3/libluo.3.gz; do out=\$(zcat '$root/usr/share/man/'\$p | groff -man -Tutf8 -ww -z 2>&1); [ -z \"\$out\" ] || { echo \"\$p: \$out\"; exit 1; }; done"
	triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
	pc() { PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_LIBDIR=$root/usr/lib/$triplet/pkgconfig pkg-config "$@"; }
	check "pkg-config --cflags --libs luo" sh -c "$(declare -f pc); root='$root' triplet='$triplet'; pc --cflags --libs luo | grep -q -- -lluo"
	check "a program builds with pkg-config and links the installed libluo.so.0" \
		sh -c "$(declare -f pc); root='$root' triplet='$triplet'; cc '$work/hello.c' -o '$work/hello' \$(pc --cflags --libs luo) && LD_LIBRARY_PATH='$root/usr/lib/$triplet' ldd '$work/hello' | grep -q '$root.*libluo.so.0'"
	check "it runs: luo_connect() answers for a missing luod" sh -c "LD_LIBRARY_PATH='$root/usr/lib/$triplet' '$work/hello'; [ \$? = 3 ]"
	check "luod --version and luoctl --version" sh -c "'$root/usr/sbin/luod' --version && '$root/usr/bin/luoctl' --version"
fi

echo "$n_pass passed, $n_fail failed"
[ $n_fail = 0 ]
