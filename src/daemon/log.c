/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's logging
 *
 * One line per message on stderr, "luod[PID]: LEVEL: message", written with
 * a single write() so that lines from several processes (a daemon and the
 * --check-state child it runs) never interleave.  Debug lines only with
 * --verbose.  The pid is looked up per line because a live update keeps it
 * while daemonizing changes it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

#include "luod.h"

bool log_verbose;

static void log_line(const char *level, const char *fmt, va_list ap)
{
	char line[1024];
	int saved = errno;
	int n = snprintf(line, sizeof(line), "luod[%d]: %s: ", (int)getpid(), level);

	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	errno = saved; /* for %m */
	int k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (k < 0)
		k = 0;
	n += (k < (int)(sizeof(line) - n - 2) ? k : (int)(sizeof(line) - n - 2));
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
	errno = saved;
}

#define LOG_FN(name, level, cond)                                                                  \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		va_list ap;                                                                        \
		if (!(cond))                                                                       \
			return;                                                                    \
		va_start(ap, fmt);                                                                 \
		log_line(level, fmt, ap);                                                          \
		va_end(ap);                                                                        \
	}

LOG_FN(log_debug, "debug", log_verbose)
LOG_FN(log_info, "info", true)
LOG_FN(log_warning, "warning", true)
LOG_FN(log_error, "error", true)

uint64_t now_usec(int clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}
