/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: where luod's log goes
 *
 * luod logs to one target, chosen once at start (log.c):
 *   - the journal, by its native protocol (a datagram per message with
 *     PRIORITY=, SYSLOG_IDENTIFIER=luod and MESSAGE=), when systemd started
 *     luod: $JOURNAL_STREAM names the very stderr luod has, or $INVOCATION_ID
 *     is set and the journal's socket exists;
 *   - syslog(3), when luod daemonized itself (it has no terminal then);
 *   - standard error otherwise, one line per message.
 * --log-target overrides the choice; a live update passes the chosen target
 * on, so that the next image logs to the same place.
 */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>

#define LOG_JOURNAL_SOCKET "/run/systemd/journal/socket"

enum log_target {
	LOG_TARGET_AUTO,
	LOG_TARGET_STDERR,
	LOG_TARGET_JOURNAL,
	LOG_TARGET_SYSLOG,
};

/* "auto", "stderr", "syslog", "journal" or "journal:PATH"; -EINVAL otherwise. */
int log_parse_target(const char *spec);
/*
 * Resolves "auto" (if that is the target) for a process that daemonized or
 * not, from the environment and stderr.  Call once the process is what it will
 * stay: after daemonizing.
 */
void log_open(bool daemonized);
/* The target in force, as --log-target takes it (for the next image). */
const char *log_target_spec(void);
/* The text of the last error logged, "" if none: a daemonizing parent shows it. */
const char *log_last_error(void);

/*
 * The rule of "auto", on its own for the tests: journal_stream is
 * $JOURNAL_STREAM (or NULL), stderr_st the fstat() of stderr (NULL if it is
 * closed), invocation_id whether $INVOCATION_ID is set, journal_exists whether
 * the journal's socket exists.
 */
enum log_target log_pick_target(const char *journal_stream, const struct stat *stderr_st,
				bool invocation_id, bool journal_exists, bool daemonized);
