/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: bench-scale, luod's memory per preserved file and per session
 *
 * Two runs, each against a fresh luod:
 *   - files: one client preserves --files fresh memfds, 1000 per session;
 *   - sessions: one client creates --sessions empty sessions and holds them.
 * Before and after, all of luod's memory is read (bench_luod_memory()): the
 * keeper's and the worker's VmRSS (/proc/PID/status) and Pss
 * (/proc/PID/smaps_rollup), without their mappings of the journal, plus the
 * journal memfd's allocated bytes (its pages counted once, mapped or not).
 * The growth of Pss + journal divided by the count is the cost of one file or
 * one session in luod's own memory, journal included (the kernel's struct
 * file behind each fd is not in it and is the same for any holder); the same
 * with VmRSS is beside it.  The journal holds what the preserves wrote to its
 * log since the last compaction, so it is what a luod that has just taken
 * these files holds.  The time to create them all is reported beside.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <luo/luo.h>

#include "basic/macro.h"
#include "bench-util.h"

#define FILES_PER_SESSION 1000

struct scale_result {
	size_t count;
	struct bench_luod_memory before, after;
	double seconds;
};

static int luod_memory(const struct bench_luod *d, int conn, struct bench_luod_memory *ret)
{
	struct bench_luod_status st;
	int r = bench_luod_status(conn, &st);

	return r < 0 ? r : bench_luod_memory(d->pid, st.worker_pid, ret);
}

/*
 * Creates count sessions (files_per_session == 0) or preserves count memfds,
 * files_per_session to a session, in a fresh luod, and measures its memory
 * before and after and the time it took.
 */
static int run_scale(const char *luod_path, size_t count, size_t files_per_session,
		     struct scale_result *res)
{
	size_t sessions =
		files_per_session ? (count + files_per_session - 1) / files_per_session : count;
	_cleanup_free_ int *fds = calloc(MAX(sessions, (size_t)1), sizeof(int));
	_cleanup_close_ int conn = -EBADF;
	struct bench_luod d;
	size_t n_sessions = 0;
	uint64_t t0;
	int r;

	if (!fds)
		return -ENOMEM;
	r = bench_luod_start(&d, luod_path, NULL);
	if (r < 0)
		return r;
	conn = bench_luod_connect(&d);
	if (conn < 0) {
		r = conn;
		goto out;
	}
	r = luod_memory(&d, conn, &res->before);
	if (r < 0)
		goto out;
	t0 = bench_now_ns();
	for (size_t i = 0; i < count; i++) {
		_cleanup_close_ int mfd = -EBADF;

		if (files_per_session == 0 || i % files_per_session == 0) {
			char name[LUO_SESSION_NAME_LENGTH];

			snprintf(name, sizeof(name), "bench-scale-%zu", n_sessions);
			r = luo_session_create(conn, name, 0, &fds[n_sessions]);
			if (r < 0)
				goto out;
			n_sessions++;
		}
		if (files_per_session == 0)
			continue;
		mfd = memfd_create("bench-scale", MFD_CLOEXEC);
		if (mfd < 0) {
			r = negative_errno();
			goto out;
		}
		r = luo_session_preserve_fd(fds[n_sessions - 1], i + 1, mfd);
		if (r < 0)
			goto out;
	}
	res->seconds = (double)(bench_now_ns() - t0) / 1e9;
	r = luod_memory(&d, conn, &res->after);
	if (r < 0)
		goto out;
	res->count = count;
	r = 0;
out:
	for (size_t i = 0; i < n_sessions; i++)
		safe_close(fds[i]);
	conn = safe_close(conn);
	if (bench_luod_stop(&d) != 0 && r >= 0)
		r = -EPROTO;
	return r;
}

static void json_int(const char *prefix, const char *name, uint64_t v)
{
	char key[64];

	snprintf(key, sizeof(key), "%s_%s", prefix, name);
	bench_json_int(key, (int64_t)v);
}

static void json_num(const char *name, const char *prefix, double v)
{
	char key[64];

	snprintf(key, sizeof(key), "%s_%s", name, prefix);
	bench_json_num(key, v);
}

/* Bytes of luod's memory, journal included, per item: Pss based and VmRSS based. */
static double per_item(const struct scale_result *s, bool pss)
{
	double n = (double)MAX(s->count, (size_t)1);
	double a = (double)((pss ? s->after.pss : s->after.rss) + s->after.journal),
	       b = (double)((pss ? s->before.pss : s->before.rss) + s->before.journal);

	return (a - b) / n;
}

static void json_result(const char *prefix, const struct scale_result *s)
{
	bench_json_int(prefix, (int64_t)s->count);
	json_int(prefix, "rss_before", s->before.rss);
	json_int(prefix, "rss_after", s->after.rss);
	json_int(prefix, "pss_before", s->before.pss);
	json_int(prefix, "pss_after", s->after.pss);
	json_int(prefix, "keeper_pss_after", s->after.keeper_pss);
	json_int(prefix, "worker_pss_after", s->after.worker_pss);
	json_int(prefix, "journal_before", s->before.journal);
	json_int(prefix, "journal_after", s->after.journal);
	json_int(prefix, "journal_size_after", s->after.journal_size);
	/* The headline: Pss of both processes plus the journal, per item. */
	json_num("pss_bytes_per", prefix, per_item(s, true));
	json_num("bytes_per", prefix, per_item(s, false));
	json_num("journal_bytes_per", prefix,
		 ((double)s->after.journal - (double)s->before.journal) /
			 (double)MAX(s->count, (size_t)1));
	json_num(prefix, "create_seconds", s->seconds);
	json_num(prefix, "per_second", s->seconds > 0 ? (double)s->count / s->seconds : NAN);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "files", required_argument, NULL, 'f' },
		{ "sessions", required_argument, NULL, 's' },
		{ "luod", required_argument, NULL, 'l' },
		{},
	};
	const char *luod_path = bench_default_luod();
	struct scale_result files = {}, sessions = {};
	size_t n_files = 100000, n_sessions = 100000;
	long limit;
	int ch, r;

	while ((ch = getopt_long(argc, argv, "f:s:l:", longopts, NULL)) >= 0) {
		switch (ch) {
		case 'f':
			n_files = strtoul(optarg, NULL, 10);
			break;
		case 's':
			n_sessions = strtoul(optarg, NULL, 10);
			break;
		case 'l':
			luod_path = optarg;
			break;
		default:
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	/* This process holds one fd per session, luod one per file and one per session. */
	limit = bench_raise_fd_limit((long)MAX(n_files, n_sessions) + 4096);
	if (limit < (long)MAX(n_files, n_sessions) + 1024) {
		bench_log("the fd limit is %ld: fewer files and sessions", limit);
		n_files = MIN(n_files, (size_t)(limit - 1024));
		n_sessions = MIN(n_sessions, (size_t)(limit - 1024));
	}

	bench_log("%zu files", n_files);
	r = run_scale(luod_path, n_files, FILES_PER_SESSION, &files);
	if (r < 0) {
		bench_log("files: %s", strerror(-r));
		return 1;
	}
	bench_log("%zu sessions", n_sessions);
	r = run_scale(luod_path, n_sessions, 0, &sessions);
	if (r < 0) {
		bench_log("sessions: %s", strerror(-r));
		return 1;
	}

	bench_json_begin("scale");
	bench_json_int("fd_limit", limit);
	json_result("file", &files);
	json_result("session", &sessions);
	bench_json_bool("target_512_bytes_per_file", per_item(&files, true) <= 512);
	bench_json_end();
	return 0;
}
