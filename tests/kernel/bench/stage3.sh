# Booted by a kexec with no session held: the baseline for stage 2's kexec.
. /lab/lib.sh
lab_ok "no sessions held: the baseline kexec"
exit 0
