#!/usr/bin/env bash
# luoctl's bash completion: commands, options before and after the command,
# session names for show and drop (from `luoctl list`, here a stand-in), and
# a command's own completion after `run --`.  TAP; skips without bash-completion.
set -u
src=${LUO_SOURCE_ROOT:?run with meson test}
bc=/usr/share/bash-completion/bash_completion
if [ ! -r $bc ]; then
	echo "1..0 # SKIP bash-completion is not installed (package bash-completion)"
	exit 0
fi
# shellcheck disable=SC1090
. $bc
. "$src/shell-completion/bash/luoctl"
# A command only this script has, for the completion after `run --`.
luoctl-no-such-cmd() { :; }
# The running luod's sessions, as `luoctl list` prints them.
luoctl() { printf 'NAME KIND STATE\nalpha outgoing open\nbeta incoming waiting\n'; }

n=0
failed=0
# check "LINE" "EXPECTED": completes the last word of LINE (empty after a space).
check() {
	local line=$1 expect=$2 got
	read -r -a COMP_WORDS <<<"$line"
	[[ $line == *" " ]] && COMP_WORDS+=("")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE=$line
	COMP_POINT=${#line}
	COMPREPLY=()
	_luoctl luoctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ')
	n=$((n + 1))
	if [ "$got" = "$expect" ]; then
		echo "ok $n - '$line' -> $expect"
	else
		echo "not ok $n - '$line': got '$got', expected '$expect'"
		failed=1
	fi
}
echo "1..13"
check "luoctl " "drop dump-state help kexec list reboot run show status update "
check "luoctl s" "show status "
check "luoctl --socket /tmp/x sh" "show "
check "luoctl show " "alpha beta "
check "luoctl drop a" "alpha "
check "luoctl show --o" "--outgoing "
check "luoctl update --e" "--exec "
check "luoctl kexec --kernel /x --d" "--drop-unsupported "
check "luoctl list --j" "--json "
check "luoctl --ti" "--timeout "
check "luoctl run -- trueX" " "
check "luoctl run -- luoctl-n" "luoctl-no-such-cmd "
n=$((n + 1))
if ! command -v zsh >/dev/null; then
	echo "ok $n - zsh completion parses # SKIP zsh is not installed"
elif zsh -n "$src/shell-completion/zsh/_luoctl"; then
	echo "ok $n - zsh completion parses"
else
	echo "not ok $n - zsh completion parses"
	failed=1
fi
exit $failed
