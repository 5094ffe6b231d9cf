# After a real kexec: the retrieved sessions are session files too.
. /lab/lib.sh
lab_tap kernel-patched kernel-patched stage2_retrieved_sessions_are_session_files
exit 0
