# Times 10,000 sessions on this kernel: create and close them, then create
# them again and leave a holder with them open for the kexec into stage 2.
# Run by tests/kernel/session-bench.sh on the plain and the patched kernel.
. /lab/lib.sh
lab_tap bench kernel-session-bench create 10000
lab_tap bench kernel-session-bench hold 10000
exit 0
