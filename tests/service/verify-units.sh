#!/usr/bin/env bash
# The systemd units as `meson install` lays them out, checked by systemd's own
# `systemd-analyze verify` (which needs no systemd running): every unit
# parses without a warning, names programs that exist and are executable,
# and its man pages are installed.  System units are verified in the
# installed tree (--root); user units (--user has no --root) in a copy whose
# paths point into that tree.  TAP output; skips without systemd-analyze.
set -u
build=${LUO_BUILD_ROOT:?run with meson test}
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=1; echo "not ok $n - $*"; }

if ! command -v systemd-analyze >/dev/null; then
	echo "1..0 # SKIP systemd-analyze is not installed (package systemd)"
	exit 0
fi
if ! command -v meson >/dev/null; then
	echo "1..0 # SKIP meson is not in PATH"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
if ! meson install -C "$build" --destdir "$root" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
	sed 's/^/# /' "$tmp/install.log"
	echo "1..1"
	echo "not ok 1 - meson install --destdir"
	exit 1
fi
# The directories, from the build's own configuration (systemd.pc or the prefix).
intro=$(meson introspect --buildoptions "$build" 2>/dev/null)
opt() { python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]))' "$1" <<<"$intro"; }
prefix=$(opt prefix)
sysdir=$(find "$root" -path '*/systemd/system/luod.service' | head -n 1)
userdir=$(find "$root" -path '*/systemd/user/luod.service' | head -n 1)

echo "1..8"
for u in luod.service luod.socket; do
	if [ -n "$sysdir" ] && [ -f "$(dirname "$sysdir")/$u" ]; then ok "system $u installed in ${sysdir%/luod.service}"; else not_ok "system $u installed"; fi
done
for u in luod.service luod.socket; do
	if [ -n "$userdir" ] && [ -f "$(dirname "$userdir")/$u" ]; then ok "user $u installed in ${userdir%/luod.service}"; else not_ok "user $u installed"; fi
done

# System units, verified in the installed tree; it needs the targets they name.
mkdir -p "$root/etc/systemd/system"
cp -a /lib/systemd/system/*.target /lib/systemd/system/*.slice "$root/etc/systemd/system/" 2>/dev/null
rel=${sysdir#"$root"}
out=$(systemd-analyze verify --man=no --root="$root" "${rel%/luod.service}/luod.service" "${rel%/luod.service}/luod.socket" 2>&1)
rc=$?
if [ $rc = 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify: system units"; else echo "$out" | sed 's/^/# /'; not_ok "systemd-analyze verify: system units (exit $rc)"; fi

# User units: the same paths, pointed into the installed tree.
mkdir -p "$tmp/user" "$tmp/runtime"
for u in luod.service luod.socket; do
	sed "s|$prefix/|$root$prefix/|g" "$(dirname "$userdir")/$u" >"$tmp/user/$u"
done
out=$(XDG_RUNTIME_DIR=$tmp/runtime systemd-analyze --user verify --man=no "$tmp/user/luod.service" "$tmp/user/luod.socket" 2>&1)
rc=$?
if [ $rc = 0 ] && [ -z "$out" ]; then ok "systemd-analyze --user verify: user units"; else echo "$out" | sed 's/^/# /'; not_ok "systemd-analyze --user verify: user units (exit $rc)"; fi

# What the units promise: the programs and the pages their Documentation= names.
missing=""
for f in "$prefix/sbin/luod" "$prefix/bin/luoctl"; do
	[ -x "$root$f" ] || missing="$missing $f"
done
if [ -z "$missing" ] && grep -q "^ExecStart=$prefix/sbin/luod --foreground" "$sysdir" &&
	grep -q "^ExecReload=$prefix/bin/luoctl .*update" "$sysdir"; then
	ok "ExecStart= and ExecReload= name the installed luod and luoctl"
else
	not_ok "ExecStart= and ExecReload= name the installed luod and luoctl (missing:$missing)"
fi
pages=$(find "$root" -path '*/man8/luod.8*' -o -path '*/man8/luoctl.8*' | wc -l)
if [ "$pages" -ge 2 ]; then ok "luod(8) and luoctl(8) installed"; else not_ok "luod(8) and luoctl(8) installed"; fi
exit $failed
