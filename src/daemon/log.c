/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's logging
 *
 * Every message goes to one target (log.h says how it is chosen):
 *   - stderr: one line "luod[PID]: LEVEL: message", written with a single
 *     write() so that lines from several processes (a daemon and the
 *     --check-state child it runs) never interleave;
 *   - the journal: one datagram per message in the journal's native protocol
 *     (PRIORITY=, SYSLOG_IDENTIFIER=luod, MESSAGE=), so that priorities
 *     survive; if the journal does not take it, the line goes to stderr;
 *   - syslog(3), with the level as priority, facility daemon.
 * Debug messages only with --verbose.  The pid is looked up per line
 * because a live update keeps it while daemonizing changes it.  No target
 * keeps an fd open between messages: luod accounts for every fd it holds
 * (luoctl status), and a log socket is not one of its own.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "log.h"
#include "luod.h"

bool log_verbose;

static enum log_target target = LOG_TARGET_AUTO;
static char journal_path[sizeof(((struct sockaddr_un *)0)->sun_path)] = LOG_JOURNAL_SOCKET;
static char target_spec[sizeof(journal_path) + 16] = "auto";
static char last_error[512];

int log_parse_target(const char *spec)
{
	enum log_target t;
	const char *path = LOG_JOURNAL_SOCKET;

	if (strcmp(spec, "auto") == 0)
		t = LOG_TARGET_AUTO;
	else if (strcmp(spec, "stderr") == 0)
		t = LOG_TARGET_STDERR;
	else if (strcmp(spec, "syslog") == 0)
		t = LOG_TARGET_SYSLOG;
	else if (strcmp(spec, "journal") == 0)
		t = LOG_TARGET_JOURNAL;
	else if (strncmp(spec, "journal:", 8) == 0 && spec[8] == '/' &&
		 strlen(spec + 8) < sizeof(journal_path)) {
		t = LOG_TARGET_JOURNAL;
		path = spec + 8;
	} else
		return -EINVAL;
	target = t;
	snprintf(journal_path, sizeof(journal_path), "%s", path);
	return 0;
}

enum log_target log_pick_target(const char *journal_stream, const struct stat *stderr_st,
				bool invocation_id, bool journal_exists, bool daemonized)
{
	unsigned long long dev, ino;
	int n = -1;

	/* systemd connected stderr to the journal: this stderr, not one inherited
	 * by way of some other program that redirected it. */
	if (journal_stream && stderr_st && journal_exists &&
	    sscanf(journal_stream, "%llu:%llu%n", &dev, &ino, &n) == 2 &&
	    (size_t)n == strlen(journal_stream) && dev == (unsigned long long)stderr_st->st_dev &&
	    ino == (unsigned long long)stderr_st->st_ino)
		return LOG_TARGET_JOURNAL;
	/* A service of systemd's whose stderr goes elsewhere (a file, the console). */
	if (invocation_id && journal_exists)
		return LOG_TARGET_JOURNAL;
	if (daemonized)
		return LOG_TARGET_SYSLOG;
	return LOG_TARGET_STDERR;
}

void log_open(bool daemonized)
{
	if (target == LOG_TARGET_AUTO) {
		struct stat st, journal;
		bool have_stderr = fstat(STDERR_FILENO, &st) == 0;

		target = log_pick_target(
			getenv("JOURNAL_STREAM"), have_stderr ? &st : NULL,
			getenv("INVOCATION_ID") != NULL,
			stat(journal_path, &journal) == 0 && S_ISSOCK(journal.st_mode), daemonized);
	}
	switch (target) {
	case LOG_TARGET_JOURNAL:
		if (strcmp(journal_path, LOG_JOURNAL_SOCKET) == 0)
			snprintf(target_spec, sizeof(target_spec), "journal");
		else
			snprintf(target_spec, sizeof(target_spec), "journal:%s", journal_path);
		break;
	case LOG_TARGET_SYSLOG:
		snprintf(target_spec, sizeof(target_spec), "syslog");
		break;
	default:
		target = LOG_TARGET_STDERR;
		snprintf(target_spec, sizeof(target_spec), "stderr");
		break;
	}
}

const char *log_target_spec(void)
{
	return target_spec;
}

const char *log_last_error(void)
{
	return last_error;
}

static void write_stderr(const char *level, const char *msg)
{
	char line[1100];
	int n = snprintf(line, sizeof(line), "luod[%d]: %s: %s\n", (int)getpid(), level, msg);

	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	(void)!write(STDERR_FILENO, line, n);
}

/* One datagram; MESSAGE in the binary form (length first) only when it has a newline. */
static int send_journal(int priority, const char *msg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char head[64];
	uint64_t len = strlen(msg);
	struct iovec iov[5];
	size_t n_iov = 0;
	_cleanup_close_ int fd = -EBADF;
	int n = snprintf(head, sizeof(head), "PRIORITY=%d\nSYSLOG_IDENTIFIER=luod\n", priority);

	iov[n_iov++] = (struct iovec){ head, (size_t)n };
	if (memchr(msg, '\n', len)) {
		/* Little-endian, as the protocol wants; luod builds for the host only. */
		static const char name[] = "MESSAGE\n";
		uint8_t le[8];

		for (int i = 0; i < 8; i++)
			le[i] = (uint8_t)(len >> (8 * i));
		iov[n_iov++] = (struct iovec){ (void *)name, sizeof(name) - 1 };
		iov[n_iov++] = (struct iovec){ le, sizeof(le) };
	} else
		iov[n_iov++] = (struct iovec){ "MESSAGE=", 8 };
	iov[n_iov++] = (struct iovec){ (void *)msg, len };
	iov[n_iov++] = (struct iovec){ "\n", 1 };

	memcpy(sa.sun_path, journal_path, strlen(journal_path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	struct msghdr mh = {
		.msg_name = &sa,
		.msg_namelen = sizeof(sa),
		.msg_iov = iov,
		.msg_iovlen = n_iov,
	};
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0)
		return negative_errno();
	return 0;
}

static void log_message(int priority, const char *level, const char *fmt, va_list ap)
{
	char msg[1024];
	int saved = errno; /* %m below reads it: nothing may change it before */

	if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
		msg[0] = 0;
	if (priority <= LOG_ERR)
		snprintf(last_error, sizeof(last_error), "%s", msg);

	switch (target) {
	case LOG_TARGET_JOURNAL:
		if (send_journal(priority, msg) < 0)
			write_stderr(level, msg);
		break;
	case LOG_TARGET_SYSLOG:
		/* Opened and closed each time: no fd stays open between messages. */
		openlog("luod", LOG_PID, LOG_DAEMON);
		syslog(priority, "%s", msg);
		closelog();
		break;
	default:
		write_stderr(level, msg);
		break;
	}
	errno = saved;
}

#define LOG_FN(name, priority, level, cond)                                                        \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		va_list ap;                                                                        \
		if (!(cond))                                                                       \
			return;                                                                    \
		va_start(ap, fmt);                                                                 \
		log_message(priority, level, fmt, ap);                                             \
		va_end(ap);                                                                        \
	}

LOG_FN(log_debug, LOG_DEBUG, "debug", log_verbose)
LOG_FN(log_info, LOG_INFO, "info", true)
LOG_FN(log_warning, LOG_WARNING, "warning", true)
LOG_FN(log_error, LOG_ERR, "error", true)

uint64_t now_usec(int clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}
