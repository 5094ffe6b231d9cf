# kernel/guest/lib.sh - sourced by the guest's /init and by every stage script.
#
# Results go to the serial console as lines "@@LAB@@ ok - DESC" or
# "@@LAB@@ not ok - DESC"; the host (kernel/lab.sh run) numbers them, prefixes
# the stage and turns them into one TAP stream. Everything else a stage
# prints reaches the host as a TAP comment.
#
# Environment of a stage script:
#   LAB_STAGE, LAB_STAGES   this stage's number and the number of stages
#   LAB_SUITE               the suite's own files (the current directory)
#   LAB_BIN                 binaries given with run --bin (also on PATH)
#   LAB_SELFTESTS           the kernel's liveupdate selftests, built with it
#   LAB_STATE               files kept across the kexec into the next stage

LAB_MARK='@@LAB@@'
LAB_BIN=/lab/bin
LAB_SELFTESTS=/lab/selftests
LAB_STATE=/lab/state
LAB_SUITE=/lab/suite
export LAB_BIN LAB_SELFTESTS LAB_STATE LAB_SUITE

lab_ok() { echo "$LAB_MARK ok - $*"; }
lab_not_ok() { echo "$LAB_MARK not ok - $*"; }
# lab_skip DESC REASON
lab_skip() { echo "$LAB_MARK ok - $1 # SKIP $2"; }
lab_diag() { echo "# $*"; }

# lab_check DESC CMD [ARG...]: one result, ok when CMD exits 0.
lab_check() {
	_desc=$1
	shift
	"$@"
	_rc=$?
	if [ $_rc = 0 ]; then
		lab_ok "$_desc"
	else
		lab_not_ok "$_desc (exit $_rc)"
	fi
	return $_rc
}

# lab_kselftest DESC CMD [ARG...]: one result from a kselftest-style exit
# status (0 pass, 4 skip, anything else a failure).
lab_kselftest() {
	_desc=$1
	shift
	"$@"
	_rc=$?
	case $_rc in
	0) lab_ok "$_desc" ;;
	4) lab_skip "$_desc" "the test skipped itself (exit 4)" ;;
	*) lab_not_ok "$_desc (exit $_rc)" ;;
	esac
	return $_rc
}

# lab_tap NAME CMD [ARG...]: runs a program that prints TAP and relays each
# of its top-level results as one of ours, "NAME: its description". A
# program that fails without a failed result, or prints no result, is a
# failure of its own; exit status 4 with no result is a skip.
lab_tap() {
	_name=$1
	shift
	{
		"$@" 2>&1 </dev/null
		echo "@@RC@@ $?"
	} | {
		_n=0 _bad=0
		while IFS= read -r _line; do
			case $_line in
			"ok "* | "not ok "*)
				case $_line in
				"not ok "*) _st="not ok" _rest=${_line#not ok } _bad=$((_bad + 1)) ;;
				*) _st="ok" _rest=${_line#ok } ;;
				esac
				_rest=${_rest#"${_rest%%[!0-9]*}"}
				_rest=${_rest# }
				_rest=${_rest#- }
				_n=$((_n + 1))
				echo "$LAB_MARK $_st - $_name: $_rest"
				;;
			"@@RC@@ "*)
				_rc=${_line#@@RC@@ }
				if [ "$_rc" = 4 ] && [ $_n = 0 ]; then
					lab_skip "$_name" "the program skipped itself (exit 4)"
				elif [ $_n = 0 ]; then
					lab_not_ok "$_name printed no TAP result (exit $_rc)"
					_bad=1
				elif [ "$_rc" != 0 ] && [ $_bad = 0 ]; then
					lab_not_ok "$_name exited $_rc after $_n results, none failed"
					_bad=1
				fi
				[ $_bad = 0 ]
				exit $?
				;;
			*) echo "$_line" ;;
			esac
		done
		lab_not_ok "$_name: its output ended without an exit status"
		exit 1
	}
}

# lab_kexec_prepare: for a stage that does the kexec itself (luoctl kexec)
# instead of leaving it to /init.  Packs the running root filesystem as the
# next stage's initramfs, as /init does, and announces the kexec to the host.
# Sets LAB_NEXT_KERNEL, LAB_NEXT_INITRD and LAB_NEXT_CMDLINE (the command line
# with lab_stage=N+1), which the stage passes to its kexec.  Whatever the
# stage writes after this call does not reach the next stage.  If the stage
# comes back (its kexec failed), /init does its own kexec as usual.
lab_kexec_prepare() {
	_next=$((LAB_STAGE + 1))
	(cd / && find . -xdev | cpio -o -H newc 2>/dev/null | gzip -1 >/lab/out/next.gz)
	LAB_NEXT_KERNEL=/lab/boot/bzImage
	LAB_NEXT_INITRD=/lab/out/next.gz
	LAB_NEXT_CMDLINE=$(sed "s/lab_stage=[0-9]*/lab_stage=$_next/" /proc/cmdline)
	export LAB_NEXT_KERNEL LAB_NEXT_INITRD LAB_NEXT_CMDLINE
	echo "$LAB_MARK kexec $_next $(wc -c </lab/out/next.gz)"
}

# The value of NAME=VALUE on the kernel command line.
lab_cmdline_arg() {
	for _w in $(cat /proc/cmdline); do
		case $_w in "$1="*) echo "${_w#*=}" && return 0 ;; esac
	done
	return 1
}
