# The 10,000 sessions crossed the kexec (the harness timed it: "stage 2:
# booted by a real kexec in ..."): retrieve, finish and close them. Nothing
# is held for the kexec into stage 3, the baseline.
. /lab/lib.sh
lab_tap bench kernel-session-bench retrieve 10000
exit 0
