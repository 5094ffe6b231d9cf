#!/usr/bin/env bash
# kernel/lab.sh - build Live Update Orchestrator kernels from Debian's
# linux-source and test them in QEMU with a real kexec between stages.
#
#   kernel/lab.sh deps
#   kernel/lab.sh fetch  [--kver 7.3|7.2]
#   kernel/lab.sh build  [--kver K] [--patches DIR]
#   kernel/lab.sh run    SUITE_DIR [--kver K] [--patches DIR] [--stages N] ...
#   kernel/lab.sh status
#   kernel/lab.sh clean
#
# docs/kernel-harness.md describes every command, the cache and the suites.
# Everything large (apt lists, source trees, objects, kernels) lives in
# ${LUO_KERNEL_CACHE:-/var/cache/luo-kernel}, never in the repository.
set -euo pipefail
shopt -s nullglob

LAB_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${LUO_KERNEL_CACHE:-/var/cache/luo-kernel}
FRAGMENT=$LAB_HOME/config/luo.config
DEFAULT_KVER=7.3
# Bump when a change to the build steps changes what a build produces, so
# that cached kernels built by the old steps are not used any more.
RECIPE=1
DEPS="qemu-system-x86 kexec-tools busybox-static build-essential flex bison bc
	libelf-dev libssl-dev cpio dwarves xz-utils rsync file gzip patch
	debian-archive-keyring ca-certificates"

msg() { printf 'lab: %s\n' "$*" >&2; }
die() {
	printf 'lab: error: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# Seconds since the $EPOCHREALTIME value $1, as "12.3".
elapsed() {
	local a=${1/[.,]/} b=${EPOCHREALTIME/[.,]/} d
	d=$(((10#$b - 10#$a) / 100000))
	printf '%d.%d' $((d / 10)) $((d % 10))
}

# Seconds as "4m05s".
human_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

need_root() {
	[ "$(id -u)" = 0 ] || die "$1 needs root (it $2)"
}

# ---- deps ------------------------------------------------------------------

missing_deps() {
	local p out=""
	for p in $DEPS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || out="$out $p"
	done
	echo "${out# }"
}

cmd_deps() {
	[ $# = 0 ] || die "deps takes no arguments"
	command -v dpkg-query >/dev/null || die "not a Debian system: no dpkg-query"
	local missing
	missing=$(missing_deps)
	if [ -z "$missing" ]; then
		msg "deps: everything is installed"
		return 0
	fi
	need_root deps "installs $missing with apt-get"
	msg "deps: installing $missing"
	export DEBIAN_FRONTEND=noninteractive
	# kexec-tools would otherwise make the host's own reboots kexec into
	# /vmlinuz: the harness only needs the kexec binary.
	echo 'kexec-tools kexec-tools/load_kexec boolean false' | debconf-set-selections
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
	missing=$(missing_deps)
	[ -z "$missing" ] || die "deps: still missing after apt-get install: $missing"
	msg "deps: done"
}

# ---- private apt configuration ----------------------------------------------
#
# sid and experimental from the mirror the host's own apt sources name, with
# every directory apt writes (lists, package cache, status, its lock) inside
# $CACHE/apt: the host's apt state is never touched.

APT_DIR=$CACHE/apt

host_mirror() {
	if [ -n "${LUO_KERNEL_MIRROR:-}" ]; then
		echo "$LUO_KERNEL_MIRROR"
		return
	fi
	# One-line "deb URI suite ..." and deb822 "URIs: URI ..." forms; the
	# archive proper ends in /debian (not /debian-security).
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources; do
		[ ! -r "$f" ] || cat "$f"
	done |
		sed -n -E 's/^[[:space:]]*(deb|URIs:)[[:space:]].*/&/p' |
		grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' |
		head -n 1 | tr -d '[:space:]' | sed 's,/$,,'
}

apt_private_setup() {
	local mirror proxy
	mirror=$(host_mirror)
	[ -n "$mirror" ] || die "no Debian mirror in the host's apt sources; set LUO_KERNEL_MIRROR=URL"
	mkdir -p "$APT_DIR"/etc/apt.conf.d "$APT_DIR"/etc/preferences.d \
		"$APT_DIR"/etc/sources.list.d "$APT_DIR"/state/lists/partial \
		"$APT_DIR"/cache/archives/partial
	touch "$APT_DIR/state/status"
	# Written whole and renamed: a concurrent build may be reading them.
	cat >"$APT_DIR/etc/sources.list.$$" <<-EOF
		deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main
		deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror experimental main
	EOF
	mv -f "$APT_DIR/etc/sources.list.$$" "$APT_DIR/etc/sources.list"
	{
		echo "Dir::Etc \"$APT_DIR/etc\";"
		echo "Dir::State \"$APT_DIR/state\";"
		echo "Dir::State::status \"$APT_DIR/state/status\";"
		echo "Dir::Cache \"$APT_DIR/cache\";"
		echo "Acquire::Check-Valid-Until \"false\";"
		echo "Acquire::Languages \"none\";"
		echo "APT::Architecture \"amd64\";"
		echo "APT::Sandbox::User \"root\";"
		# The host's proxy, if any, still applies.
		for proxy in Acquire::http::Proxy Acquire::https::Proxy; do
			local v
			v=$(apt-config dump "$proxy" 2>/dev/null | sed -n "s/^$proxy \"\\(.*\\)\";$/\\1/p" | head -n 1)
			[ -z "$v" ] || echo "$proxy \"$v\";"
		done
	} >"$APT_DIR/apt.conf.$$"
	mv -f "$APT_DIR/apt.conf.$$" "$APT_DIR/apt.conf"
	MIRROR=$mirror
}

apt_private() { APT_CONFIG=$APT_DIR/apt.conf "$@"; }

# Refresh the private lists when they are older than a day (or on
# LUO_KERNEL_REFRESH=1). Offline, lists we already have are used as they are.
apt_lists_fresh() {
	local stamp=$APT_DIR/state/updated max=${LUO_KERNEL_APT_MAXAGE:-86400}
	[ -f "$stamp" ] && [ "${LUO_KERNEL_REFRESH:-0}" != 1 ] &&
		[ $(($(date +%s) - $(stat -c %Y "$stamp"))) -lt "$max" ]
}

apt_private_update() {
	local stamp=$APT_DIR/state/updated
	apt_lists_fresh && return 0
	msg "fetch: updating the private apt lists (sid, experimental) from $MIRROR"
	if apt_private apt-get update -qq 2>&1 | sed 's/^/lab: apt: /' >&2; then
		touch "$stamp"
	elif [ -f "$stamp" ]; then
		msg "fetch: apt-get update failed; using the lists of $(date -r "$stamp" -u '+%F %R UTC')"
	else
		die "fetch: apt-get update of the private lists failed"
	fi
}

# Sets PKG and PKGVER for $KVER.
resolve_package() {
	PKG=linux-source-$KVER
	PKGVER=$(apt_private apt-cache policy "$PKG" 2>/dev/null | sed -n 's/^ *Candidate: //p')
	[ -n "$PKGVER" ] && [ "$PKGVER" != "(none)" ] ||
		die "$PKG is in neither sid nor experimental on $MIRROR"
}

check_kver() {
	[[ $KVER =~ ^[0-9]+\.[0-9]+$ ]] || die "--kver wants a series like 7.3, not '$KVER'"
}

# Sets SRC to the unpacked, pristine source tree of $PKG $PKGVER, downloading
# and unpacking it when needed.
fetch_source() {
	local safe=${PKGVER//:/_} dl=$CACHE/dl deb tmp
	SRC=$CACHE/src/$PKG-$safe
	if [ -f "$SRC/.lab-complete" ]; then
		msg "fetch: $PKG $PKGVER already unpacked in $SRC"
		return 0
	fi
	mkdir -p "$dl" "$CACHE/src"
	deb=$(echo "$dl/${PKG}_${safe}_all.deb")
	if [ ! -s "$deb" ]; then
		msg "fetch: downloading $PKG $PKGVER"
		if ! (cd "$dl" && apt_private apt-get download -qq "$PKG=$PKGVER") 2>&1 |
			sed 's/^/lab: apt: /' >&2; then
			die "fetch: apt-get download $PKG=$PKGVER failed"
		fi
		# apt-get names the file after the version with ':' escaped.
		local got=("$dl/${PKG}_"*"_all.deb")
		[ -s "$deb" ] || deb=$(ls -t "${got[@]}" | head -n 1)
		[ -s "$deb" ] || die "fetch: no .deb for $PKG after the download"
	fi
	msg "fetch: unpacking $(basename "$deb")"
	tmp=$(mktemp -d "$CACHE/src/.unpack.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	dpkg-deb -x "$deb" "$tmp/deb"
	local tarball=("$tmp/deb/usr/src/$PKG".tar.*)
	[ ${#tarball[@]} = 1 ] || die "fetch: $deb holds no /usr/src/$PKG.tar.*"
	tar -C "$tmp" -xf "${tarball[0]}"
	[ -f "$tmp/$PKG/Makefile" ] || die "fetch: the tarball has no $PKG/Makefile"
	grep -q '^config LIVEUPDATE$' "$tmp/$PKG/kernel/liveupdate/Kconfig" 2>/dev/null ||
		die "fetch: $PKG $PKGVER has no CONFIG_LIVEUPDATE"
	touch "$tmp/$PKG/.lab-complete"
	rm -rf "$SRC"
	mv "$tmp/$PKG" "$SRC"
	rm -rf "$tmp"
	trap - EXIT
	msg "fetch: $PKG $PKGVER unpacked in $SRC"
}

lock_cache() {
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	if ! flock -n 9; then
		msg "waiting for another kernel/lab.sh holding $CACHE/.lock"
		flock 9
	fi
}

cmd_fetch() {
	KVER=$DEFAULT_KVER
	while [ $# -gt 0 ]; do
		case $1 in
		--kver) KVER=${2:?--kver wants a value}; shift 2 ;;
		--kver=*) KVER=${1#*=}; shift ;;
		*) die "fetch: unknown argument '$1'" ;;
		esac
	done
	check_kver
	need_root fetch "writes $CACHE"
	lock_cache
	apt_private_setup
	apt_private_update
	resolve_package
	fetch_source
	echo "$SRC"
}

# ---- build ------------------------------------------------------------------

# The patch files of DIR, in the order they are applied.
list_patches() {
	local dir=$1
	[ -n "$dir" ] || return 0
	[ -d "$dir" ] || die "--patches $dir: no such directory"
	local p
	for p in "$dir"/*.patch; do
		echo "$p"
	done | LC_ALL=C sort
}

# Hash of what decides a build besides the source: the recipe, the
# configuration fragment and the patches (names and contents, in order).
flavour_hash() {
	{
		echo "recipe $RECIPE"
		cat "$FRAGMENT"
		local p
		while IFS= read -r p; do
			[ -n "$p" ] || continue
			echo "patch $(basename "$p")"
			cat "$p"
		done <<<"$PATCHES"
	} | sha256sum | cut -c1-12
}

# Run a long command with its output in LOG, printing a heartbeat at least
# every 30 s: elapsed time, objects compiled so far, the last one.
with_heartbeat() {
	local label=$1 log=$2
	shift 2
	local start=$SECONDS last=$SECONDS pid rc
	"$@" >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 2
		if [ $((SECONDS - last)) -ge 30 ]; then
			last=$SECONDS
			local n what
			n=$(grep -cE '^  (CC|AS|LD|AR)' "$log" || true)
			what=$(grep -E '^  [A-Z]+' "$log" | tail -n 1 | sed -E 's/^ +//; s/ +/ /')
			msg "$label: $(human_time $((SECONDS - start))) elapsed, $n steps, last: ${what:-(starting)}"
		fi
	done
	rc=0
	wait "$pid" || rc=$?
	if [ $rc != 0 ]; then
		msg "$label failed (exit $rc); the end of $log:"
		tail -n 40 "$log" | sed 's/^/lab: | /' >&2
		return $rc
	fi
}

# Copies SRC to TREE and applies the patches. Hard links keep the copy cheap;
# every file a patch touches is unshared first so the pristine tree is never
# modified.
patched_tree() {
	local tree=$1 tmp p f
	if [ -f "$tree/.lab-complete" ]; then
		return 0
	fi
	tmp=$tree.tmp
	rm -rf "$tmp" "$tree"
	msg "build: applying $(grep -c . <<<"$PATCHES") patch(es) on a copy of $SRC"
	cp -al "$SRC" "$tmp"
	rm -f "$tmp/.lab-complete"
	while IFS= read -r p; do
		# shellcheck disable=SC2016
		while IFS= read -r f; do
			if [ -f "$tmp/$f" ]; then
				cp -p "$tmp/$f" "$tmp/$f.lab-unshare"
				mv -f "$tmp/$f.lab-unshare" "$tmp/$f"
			fi
		done < <(patch -p1 --dry-run -d "$tmp" <"$p" 2>/dev/null | sed -n 's/^checking file //p')
		patch -p1 -s -N --no-backup-if-mismatch -d "$tmp" <"$p" ||
			die "build: $(basename "$p") does not apply to $PKG $PKGVER"
		msg "build: applied $(basename "$p")"
	done <<<"$PATCHES"
	touch "$tmp/.lab-complete"
	mv "$tmp" "$tree"
}

check_config() {
	local obj=$1 line sym bad=0
	while IFS= read -r line; do
		case $line in '' | '#'*) continue ;; esac
		sym=${line%%=*}
		case $line in
		*=n)
			if grep -qE "^$sym=" "$obj/.config"; then
				msg "config: $line did not take: $(grep -E "^$sym=" "$obj/.config")"
				bad=1
			fi
			;;
		*)
			if ! grep -qxF "$line" "$obj/.config"; then
				msg "config: $line did not take: $(grep -E "^(# )?$sym[= ]" "$obj/.config" || echo absent)"
				bad=1
			fi
			;;
		esac
	done <"$FRAGMENT"
	[ $bad = 0 ] || die "build: the configuration fragment $FRAGMENT did not fully apply"
}

# The selftests' Makefile leaves its objects next to the sources; they are
# removed before and after so that no tree (the pristine one is shared by
# every build of its version) keeps any.
build_selftests() {
	local tree=$1 out=$2 hdr=$3 obj=$4
	local dir=$tree/tools/testing/selftests/liveupdate
	if [ ! -d "$dir" ]; then
		msg "build: $PKG has no liveupdate selftests"
		return 0
	fi
	rm -rf "$dir"/*.o "$dir"/*.d "$obj/selftests"
	mkdir -p "$obj/selftests" "$out"
	with_heartbeat "build: selftests" "$obj/selftests.log" \
		make -C "$dir" OUTPUT="$obj/selftests" KHDR_INCLUDES="-isystem $hdr" \
		LDFLAGS=-static -j"$JOBS"
	rm -rf "$dir"/*.o "$dir"/*.d
	local f n=0
	for f in "$obj"/selftests/*; do
		if [ -f "$f" ] && [ -x "$f" ]; then
			cp "$f" "$out/"
			n=$((n + 1))
		fi
	done
	msg "build: $n liveupdate selftests built (static)"
}

parse_build_args() {
	KVER=$DEFAULT_KVER
	PATCH_DIR=""
	REST=()
	while [ $# -gt 0 ]; do
		case $1 in
		--kver) KVER=${2:?--kver wants a value}; shift 2 ;;
		--kver=*) KVER=${1#*=}; shift ;;
		--patches) PATCH_DIR=${2:?--patches wants a directory}; shift 2 ;;
		--patches=*) PATCH_DIR=${1#*=}; shift ;;
		*) REST+=("$1"); shift ;;
		esac
	done
	check_kver
	if [ -n "$PATCH_DIR" ]; then
		PATCH_DIR=$(cd "$PATCH_DIR" 2>/dev/null && pwd) || die "--patches: no such directory"
	fi
	PATCHES=$(list_patches "$PATCH_DIR")
	FLAVOUR=$(flavour_hash)
}

# Sets key and out for $PKG $PKGVER $FLAVOUR.
build_key() {
	key=$(printf '%s\n%s\n%s\n' "$PKG" "$PKGVER" "$FLAVOUR" | sha256sum | cut -c1-16)
	out=$CACHE/kernels/$KVER-$key
}

# Reports and prints the cached kernel $out, if there is one.
cached_kernel() {
	[ -f "$out/lab.env" ] || return 1
	msg "build: using the cached kernel $PKG $PKGVER (key $key, $(env_get "$out" patches | grep . || echo unpatched)): $out"
	touch "$out/lab.env"
	echo "$out"
}

cmd_build() {
	parse_build_args "$@"
	[ ${#REST[@]} = 0 ] || die "build: unknown argument '${REST[0]}'"
	need_root build "writes $CACHE"
	[ -f "$FRAGMENT" ] || die "no configuration fragment $FRAGMENT"
	JOBS=${LUO_KERNEL_JOBS:-$(nproc)}
	local key out
	# A cached kernel needs no lock: another build may hold it for an hour.
	mkdir -p "$CACHE"
	apt_private_setup
	if apt_lists_fresh; then
		resolve_package
		build_key
		cached_kernel && return 0
	fi
	lock_cache
	apt_private_update
	resolve_package
	build_key
	cached_kernel && return 0
	local missing
	missing=$(missing_deps)
	[ -z "$missing" ] || die "build: missing packages: $missing (run kernel/lab.sh deps)"

	fetch_source
	local tree=$SRC
	if [ -n "$PATCHES" ]; then
		tree=$CACHE/src/$(basename "$SRC")-p$(echo "$PATCHES" | xargs cat | sha256sum | cut -c1-12)
		patched_tree "$tree"
	fi

	local obj=$CACHE/obj/$KVER-$key tmp=$out.tmp start=$SECONDS
	rm -rf "$tmp"
	mkdir -p "$obj" "$tmp"
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	msg "build: $PKG $PKGVER, key $key, $JOBS jobs, objects in $obj"
	make -C "$tree" O="$obj" -s tinyconfig >"$obj/config.log" 2>&1 ||
		die "build: make tinyconfig failed (see $obj/config.log)"
	"$tree/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$FRAGMENT" \
		>>"$obj/config.log" 2>&1 || die "build: merge_config.sh failed (see $obj/config.log)"
	make -C "$tree" O="$obj" -s olddefconfig >>"$obj/config.log" 2>&1 ||
		die "build: make olddefconfig failed (see $obj/config.log)"
	check_config "$obj"
	msg "build: configuration checked: every line of $(basename "$FRAGMENT") took"

	with_heartbeat "build: bzImage" "$obj/build.log" make -C "$tree" O="$obj" -j"$JOBS" bzImage
	msg "build: bzImage done in $(human_time $((SECONDS - start)))"
	make -C "$tree" O="$obj" -s INSTALL_HDR_PATH="$tmp/usr" headers_install \
		>"$obj/headers.log" 2>&1 || die "build: headers_install failed (see $obj/headers.log)"
	build_selftests "$tree" "$tmp/selftests" "$tmp/usr/include" "$obj"

	cp "$obj/arch/x86/boot/bzImage" "$tmp/bzImage"
	cp "$obj/.config" "$tmp/config"
	{
		echo "kver=$KVER"
		echo "package=$PKG"
		echo "version=$PKGVER"
		echo "key=$key"
		echo "flavour=$FLAVOUR"
		echo "patches=$(echo "$PATCHES" | xargs -r -n1 basename | paste -sd' ')"
		echo "patch_dir=$PATCH_DIR"
		echo "built=$(date -u '+%F %T UTC')"
		echo "build_seconds=$((SECONDS - start))"
		echo "release=$(cat "$obj/include/config/kernel.release" 2>/dev/null)"
	} >"$tmp/lab.env"
	rm -rf "$out"
	mv "$tmp" "$out"
	msg "build: done in $(human_time $((SECONDS - start))): $out"
	echo "$out"
}

# ---- run ----------------------------------------------------------------------

# Why this machine cannot run a suite, or nothing.
run_unavailable() {
	local missing=""
	[ "${LUO_KERNEL:-1}" != 0 ] || { echo "LUO_KERNEL=0"; return; }
	[ -z "${LUO_KERNEL_SKIP:-}" ] || { echo "$LUO_KERNEL_SKIP"; return; }
	[ "$(uname -m)" = x86_64 ] || { echo "the harness runs x86_64 guests on x86_64 hosts only"; return; }
	[ "$(id -u)" = 0 ] || { echo "needs root (the kernel cache $CACHE is root's)"; return; }
	command -v qemu-system-x86_64 >/dev/null || missing="$missing qemu-system-x86"
	command -v kexec >/dev/null || [ -x /sbin/kexec ] || missing="$missing kexec-tools"
	file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || missing="$missing busybox-static"
	command -v cpio >/dev/null || missing="$missing cpio"
	[ -z "$missing" ] || echo "missing packages:$missing (kernel/lab.sh deps installs them)"
}

# The newest cached kernel of $KVER built with this fragment and these
# patches ("build" touches the one it found), or nothing.
find_kernel() {
	local d best="" best_t=0 t
	for d in "$CACHE"/kernels/*/; do
		d=${d%/}
		[ -f "$d/lab.env" ] || continue
		grep -qx "kver=$KVER" "$d/lab.env" && grep -qx "flavour=$FLAVOUR" "$d/lab.env" || continue
		t=$(stat -c %Y "$d/lab.env")
		if [ "$t" -ge "$best_t" ]; then
			best=$d
			best_t=$t
		fi
	done
	echo "$best"
}

# copy_elf ROOT FILE DEST: FILE to ROOT/DEST, and for a dynamic ELF its
# libraries to ROOT/lab/lib (on the guest's LD_LIBRARY_PATH) and its loader
# to its own path.
copy_elf() {
	local root=$1 f=$2 dest=$3 lib
	mkdir -p "$root/$(dirname "$dest")"
	cp -L "$f" "$root/$dest"
	file -L "$f" | grep -q 'dynamically linked' || return 0
	ldd "$f" 2>/dev/null | while read -r a b c _; do
		case $a in
		/*) lib=$a ;;
		*) [ "$b" = "=>" ] && [ "${c#/}" != "$c" ] || continue; lib=$c ;;
		esac
		case $lib in
		*/ld-linux*) [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"; } ;;
		*) [ -e "$root/lab/lib/$(basename "$lib")" ] || cp -L "$lib" "$root/lab/lib/" ;;
		esac
	done
}

# pack_initramfs OUT SUITE KERNEL_DIR BIN...
pack_initramfs() {
	local out=$1 suite=$2 kdir=$3
	shift 3
	local root=$out.root f app
	rm -rf "$root"
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib64,proc,sys,dev,tmp,root,etc}
	mkdir -p "$root"/lab/{bin,lib,boot,suite,selftests,state,out}
	cp /bin/busybox "$root/bin/busybox"
	for app in $(/bin/busybox --list); do
		[ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"
	done
	copy_elf "$root" "$(command -v kexec || echo /sbin/kexec)" sbin/kexec
	cp "$LAB_HOME/guest/init" "$root/init"
	chmod 755 "$root/init"
	cp "$LAB_HOME/guest/lib.sh" "$root/lab/lib.sh"
	cp "$kdir/bzImage" "$root/lab/boot/bzImage"
	for f in "$kdir"/selftests/*; do
		[ -f "$f" ] && [ -x "$f" ] && cp "$f" "$root/lab/selftests/"
	done
	cp -a "$suite/." "$root/lab/suite/"
	while IFS= read -r -d '' f; do
		file -L "$f" | grep -q 'ELF.*dynamically linked' && copy_elf "$root" "$f" "lab/suite/${f#"$suite"/}"
	done < <(find "$suite" -type f -perm -u+x -print0)
	for f in "$@"; do
		copy_elf "$root" "$f" "lab/bin/$(basename "$f")"
	done
	echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
	echo "root:x:0:" >"$root/etc/group"
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
	rm -rf "$root"
}

tap_skip() {
	echo "1..0 # SKIP $1"
	exit 0
}

cmd_run() {
	local suite="" stages="" timeout=${LUO_KERNEL_TIMEOUT:-300} mem=2G append="" quiet=0
	local tap_skip=0 kdir="" keep=0 bins=() build=${LUO_BUILD_ROOT:-$LAB_HOME/../build}
	parse_build_args "$@"
	set -- "${REST[@]}"
	while [ $# -gt 0 ]; do
		case $1 in
		--stages) stages=${2:?--stages wants a number}; shift 2 ;;
		--bin) bins+=("${2:?--bin wants a file}"); shift 2 ;;
		--build) build=${2:?--build wants a directory}; shift 2 ;;
		--timeout) timeout=${2:?--timeout wants seconds}; shift 2 ;;
		--mem) mem=${2:?--mem wants a size}; shift 2 ;;
		--append) append=${2?--append wants a string}; shift 2 ;;
		--kernel) kdir=${2:?--kernel wants a directory}; shift 2 ;;
		--quiet) quiet=1; shift ;;
		--keep) keep=1; shift ;;
		--tap-skip) tap_skip=1; shift ;;
		-*) die "run: unknown option '$1'" ;;
		*)
			[ -z "$suite" ] || die "run: one suite directory only ('$suite', '$1')"
			suite=$1
			shift
			;;
		esac
	done
	[ -n "$suite" ] || die "run: which suite? (kernel/lab.sh run SUITE_DIR)"
	[ -d "$suite" ] || die "run: $suite is no directory"
	suite=$(cd "$suite" && pwd)
	[ -f "$suite/stage1.sh" ] || die "run: $suite has no stage1.sh"
	if [ -z "$stages" ]; then
		stages=1
		while [ -f "$suite/stage$((stages + 1)).sh" ]; do stages=$((stages + 1)); done
	fi
	[[ $stages =~ ^[1-9][0-9]*$ ]] || die "run: --stages wants a positive number"
	[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "run: --timeout wants seconds"
	local why
	why=$(run_unavailable)
	if [ -n "$why" ]; then
		[ $tap_skip = 1 ] && tap_skip "$why"
		die "run: $why"
	fi
	local f
	# Programs the suite names in its "bins" file, relative to the build.
	if [ -f "$suite/bins" ]; then
		while read -r f _; do
			case $f in '' | '#'*) continue ;; esac
			[ -x "$build/$f" ] || die "run: $(basename "$suite") needs $build/$f: build it (ninja -C $build) or say --build DIR"
			bins+=("$build/$f")
		done <"$suite/bins"
	fi
	for f in "${bins[@]}"; do
		[ -f "$f" ] && [ -x "$f" ] || die "run: --bin $f is no executable file"
	done

	if [ -z "$kdir" ]; then
		kdir=$(find_kernel)
		if [ -z "$kdir" ]; then
			if [ "${LUO_KERNEL_BUILD:-0}" = 1 ]; then
				msg "run: no cached $KVER kernel of this configuration: building it (LUO_KERNEL_BUILD=1)"
				local args=(--kver "$KVER")
				[ -z "$PATCH_DIR" ] || args+=(--patches "$PATCH_DIR")
				(cmd_build "${args[@]}") >/dev/null || {
					[ $tap_skip = 1 ] && tap_skip "building the $KVER kernel failed"
					die "run: building the $KVER kernel failed"
				}
				kdir=$(find_kernel)
			else
				why="no cached $KVER kernel for this configuration${PATCH_DIR:+ and $PATCH_DIR}: run kernel/lab.sh build${PATCH_DIR:+ --patches $PATCH_DIR} --kver $KVER (or set LUO_KERNEL_BUILD=1)"
				[ $tap_skip = 1 ] && tap_skip "$why"
				die "run: $why"
			fi
		fi
	fi
	[ -f "$kdir/bzImage" ] || die "run: no bzImage in $kdir"

	local name work
	name=$(basename "$suite")
	mkdir -p "$CACHE/run"
	work=$(mktemp -d "$CACHE/run/$name.XXXXXX")
	# shellcheck disable=SC2064
	[ $keep = 1 ] || trap "rm -rf '$work'" EXIT
	local t0=$EPOCHREALTIME
	pack_initramfs "$work/initrd.gz" "$suite" "$kdir" "${bins[@]}"
	local kinfo
	kinfo=$(env_get "$kdir" release)
	echo "TAP version 13"
	echo "# suite $name: $stages stage(s) on $kinfo ($(basename "$kdir")), initramfs $(($(stat -c %s "$work/initrd.gz") / 1024)) KiB packed in $(elapsed "$t0") s"

	local cmdline="console=ttyS0 liveupdate=on kho=on loglevel=4 panic=-1 lab_stage=1 lab_stages=$stages${append:+ $append}"
	local log=$work/console.log n=0 failed=0 stage=0 done=0 line payload
	local stage_t=() kexec_t="" prev_boot="" kexec_seen=0 qemu_rc="" expected=0
	run_result() { # ok|"not ok" DESC
		n=$((n + 1))
		[ "$1" = ok ] || failed=$((failed + 1))
		echo "$1 $n - $2"
	}
	shopt -s lastpipe
	t0=$EPOCHREALTIME
	{
		local rc=0
		timeout -k 10 "$timeout" qemu-system-x86_64 -accel tcg -cpu max -M pc -m "$mem" -smp 1 \
			-display none -monitor none -serial stdio -no-reboot -nodefaults \
			-kernel "$kdir/bzImage" -initrd "$work/initrd.gz" -append "$cmdline" </dev/null 2>&1 ||
			rc=$?
		echo "@@HOST@@ $rc"
	} | while IFS= read -r line; do
		line=${line%$'\r'}
		printf '%s %s\n' "$(elapsed "$t0")" "$line" >>"$log"
		case $line in
		"@@HOST@@ "*) qemu_rc=${line#@@HOST@@ } ;;
		*"@@LAB@@ "*)
			payload=${line#*@@LAB@@ }
			case $payload in
			"stage "*)
				local words
				read -r -a words <<<"$payload"
				stage=${words[1]}
				stage_t[stage]=$EPOCHREALTIME
				expected=$((expected + 1))
				if [ "$stage" != "$expected" ]; then
					run_result "not ok" "stage $expected: booted (the guest says stage $stage)"
				elif [ "$stage" = 1 ]; then
					run_result ok "stage 1: booted ${words[3]:-} in $(elapsed "$t0") s"
				elif [ $kexec_seen = 1 ] && [ "${words[2]}" != "$prev_boot" ]; then
					run_result ok "stage $stage: booted by a real kexec in $(elapsed "$kexec_t") s (boot id ${words[2]}, was $prev_boot; lab_stage=$stage on the command line)"
				else
					run_result "not ok" "stage $stage: booted by a real kexec (kexec seen: $kexec_seen, boot id ${words[2]}, was $prev_boot)"
				fi
				prev_boot=${words[2]}
				kexec_seen=0
				;;
			"kexec "*)
				kexec_t=$EPOCHREALTIME
				kexec_seen=1
				local words
				read -r -a words <<<"$payload"
				echo "# stage $stage: ran in $(elapsed "${stage_t[stage]}") s; kexec into stage ${words[1]} with a $((${words[2]:-0} / 1024)) KiB initramfs"
				;;
			"done "*)
				done=1
				echo "# stage $stage: ran in $(elapsed "${stage_t[stage]}") s"
				;;
			"ok "* | "not ok "*)
				local st=ok rest=${payload#ok - }
				case $payload in "not ok "*) st="not ok" rest=${payload#not ok - } ;; esac
				run_result "$st" "stage $stage: $rest"
				;;
			*) echo "# $line" ;;
			esac
			;;
		*) [ $quiet = 1 ] || echo "# $line" ;;
		esac
	done
	shopt -u lastpipe
	# The last console of each suite stays, with the time of every line.
	cp "$log" "$CACHE/run/$name.log"
	log=$CACHE/run/$name.log
	if [ $done = 1 ] && [ "$stage" = "$stages" ]; then
		run_result ok "all $stages stage(s) ran, QEMU ended after $(elapsed "$t0") s"
	else
		local why="QEMU exit ${qemu_rc:-?}"
		[ "$qemu_rc" != 124 ] && [ "$qemu_rc" != 137 ] || why="timed out after $timeout s"
		run_result "not ok" "all $stages stage(s) ran (stopped in stage $stage: $why)"
		echo "# the end of the console ($log):"
		tail -n 15 "$log" | sed 's/^/#   /'
	fi
	echo "1..$n"
	[ $keep = 0 ] || msg "run: kept $work"
	[ $failed = 0 ]
}

# ---- status / clean -----------------------------------------------------------

# The value of KEY in the lab.env of the kernel directory DIR.
env_get() { sed -n "s/^$2=//p" "$1/lab.env"; }

cmd_status() {
	[ $# = 0 ] || die "status takes no arguments"
	echo "cache: $CACHE"
	if [ ! -d "$CACHE" ]; then
		echo "(empty)"
		return 0
	fi
	local d
	echo "kernels:"
	local any=0
	for d in "$CACHE"/kernels/*/; do
		[ -f "$d/lab.env" ] || continue
		any=1
		printf '  %-22s %s %s (%s), patches: %s, built %s in %s, %s\n' \
			"$(basename "$d")" "$(env_get "$d" package)" "$(env_get "$d" version)" \
			"$(env_get "$d" release)" "$(env_get "$d" patches | grep . || echo none)" \
			"$(env_get "$d" built)" "$(human_time "$(env_get "$d" build_seconds)")" \
			"$(du -sh "$d" | cut -f1)"
	done
	[ $any = 1 ] || echo "  (none)"
	for d in src obj dl apt; do
		[ -d "$CACHE/$d" ] && printf '%-8s %s\n' "$d:" "$(du -sh "$CACHE/$d" | cut -f1)"
	done
	if [ -f "$APT_DIR/state/updated" ]; then
		echo "apt lists updated $(date -r "$APT_DIR/state/updated" -u '+%F %R UTC')"
	fi
	return 0
}

# Sources and objects can be rebuilt; kernels in use are kept.
cmd_clean() {
	[ $# = 0 ] || die "clean takes no arguments"
	need_root clean "removes files from $CACHE"
	lock_cache
	rm -rf "$CACHE/obj" "$CACHE/src" "$CACHE/dl" "$CACHE/run"
	msg "clean: removed sources, objects and downloads; kept $CACHE/kernels and the apt lists"
}

# ---- main ---------------------------------------------------------------------

main() {
	local cmd=${1:-}
	[ $# = 0 ] || shift
	case $cmd in
	deps) cmd_deps "$@" ;;
	fetch) cmd_fetch "$@" ;;
	build) cmd_build "$@" ;;
	run) cmd_run "$@" ;;
	status) cmd_status "$@" ;;
	clean) cmd_clean "$@" ;;
	-h | --help | help) usage ;;
	'') usage >&2; exit 2 ;;
	*) die "unknown command '$cmd' (deps, fetch, build, run, status, clean)" ;;
	esac
}

main "$@"; exit
