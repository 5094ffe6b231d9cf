#!/bin/sh
# tests/kernel/test-guest-lib.sh - the guest's result helpers
# (kernel/guest/lib.sh) on the host, under the guest's shell (busybox sh
# when installed, else sh): what a stage reports is what the harness turns
# into TAP, so a helper that drops a failure would hide it.
#
#   test-guest-lib.sh LIB_SH
lib=${1:?usage: test-guest-lib.sh kernel/guest/lib.sh}
shell=sh
if [ -x /bin/busybox ]; then
	shell="/bin/busybox sh"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0

# check NAME EXPECTED_OUTPUT EXPECTED_STATUS SCRIPT
check() {
	n=$((n + 1))
	printf '%s\n' "$4" >"$tmp/script"
	out=$($shell -c ". '$lib'; . '$tmp/script'" 2>&1)
	status=$?
	if [ "$out" = "$2" ] && [ "$status" = "$3" ]; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		echo "# expected (status $3):"
		printf '%s\n' "$2" | sed 's/^/#   /'
		echo "# got (status $status):"
		printf '%s\n' "$out" | sed 's/^/#   /'
		failed=$((failed + 1))
	fi
}

# A TAP program that prints what it is given and exits with $1.
cat >"$tmp/tap" <<'EOF'
#!/bin/sh
rc=$1
shift
for line in "$@"; do echo "$line"; done
exit "$rc"
EOF
chmod +x "$tmp/tap"
tap=$tmp/tap

echo "TAP version 13"
check "lab_ok and lab_not_ok mark results" \
	"@@LAB@@ ok - a
@@LAB@@ not ok - b" 0 'lab_ok a; lab_not_ok b'
check "lab_skip is an ok with a SKIP directive" \
	"@@LAB@@ ok - c # SKIP no reason" 0 'lab_skip c "no reason"'
check "lab_check passes a zero exit" "@@LAB@@ ok - t" 0 'lab_check t true'
check "lab_check fails a non-zero exit with its status" \
	"@@LAB@@ not ok - f (exit 3)" 3 'lab_check f sh -c "exit 3"'
check "lab_kselftest: exit 4 is a skip" \
	"@@LAB@@ ok - k # SKIP the test skipped itself (exit 4)" 4 'lab_kselftest k sh -c "exit 4"'
check "lab_kselftest: exit 1 is a failure" \
	"@@LAB@@ not ok - k (exit 1)" 1 'lab_kselftest k sh -c "exit 1"'
check "lab_tap relays results under the program's name, comments as they are" \
	"TAP version 13
1..3
@@LAB@@ ok - p: one # 0.1 s
# diag
@@LAB@@ not ok - p: two
@@LAB@@ ok - p: three # SKIP why" 1 \
	"lab_tap p $tap 1 'TAP version 13' '1..3' 'ok 1 - one # 0.1 s' '# diag' 'not ok 2 - two' 'ok 3 three # SKIP why'"
check "lab_tap ignores indented subtest results" \
	"    ok 1 - sub
@@LAB@@ ok - p: top" 0 "lab_tap p $tap 0 '    ok 1 - sub' 'ok 1 top'"
check "lab_tap fails a program that exits non-zero after passing results" \
	"@@LAB@@ ok - p: one
@@LAB@@ not ok - p exited 2 after 1 results, none failed" 1 "lab_tap p $tap 2 'ok 1 one'"
check "lab_tap fails a program that prints no result" \
	"hello
@@LAB@@ not ok - p printed no TAP result (exit 0)" 1 "lab_tap p $tap 0 'hello'"
check "lab_tap: exit 4 without results is a skip" \
	"@@LAB@@ ok - p # SKIP the program skipped itself (exit 4)" 0 "lab_tap p $tap 4"
# (The shell's own message about the missing program varies: not compared.)
check "lab_tap fails a program that cannot be run" \
	"@@LAB@@ not ok - p printed no TAP result (exit 127)" 1 \
	"lab_tap p /nonexistent >'$tmp/out'; rc=\$?; grep '@@LAB@@' '$tmp/out'; exit \$rc"
echo "1..$n"
[ $failed = 0 ]
