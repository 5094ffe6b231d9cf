/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: bench-recovery, luod's recovery after its worker is killed
 *
 * For each number of preserved files (default 0, 1000, 10000): a fresh luod;
 * this process creates sessions of at most 1000 memfds each and holds the
 * session fds (the memfds themselves are closed here: luod holds them).  Then,
 * --repeat times: STATUS names the worker; the worker gets SIGKILL; at once a
 * STATUS is sent on an open connection, which waits in the socket until the
 * keeper's new worker has recovered from the journal and serves it.  The
 * recovery is the time from the kill() to that reply.  The reply must name a
 * new worker, one more worker restart and every file.
 *
 * The keeper gives up after LUOD_STORM_DEATHS (5) deaths within 30 s, so a
 * luod is killed at most KILLS_PER_LUOD times and then replaced by a fresh
 * one, filled again.
 *
 * luod's log (kept in a memfd here) says how long the worker's own recovery
 * took and how many journal records it replayed ("recovered ... (N records,
 * T us)"); the rest of the recovery is the kill, the keeper's wake-up and
 * clone(), the new worker's start and the reply.  Beside it, the bare exec
 * (fork, execve() of `luod --version`, exit, reaped): 31 runs before the
 * kills, and 3 more before each kill at 0 files, so that the comparison at 0
 * files is made under the same load (the machine may be shared).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <luo/luo.h>

#include "basic/macro.h"
#include "bench-util.h"

#define MAX_SIZES 16
#define FILES_PER_SESSION 1000
#define KILLS_PER_LUOD 4

/* A luod filled with files, and what this process holds of it. */
struct filled {
	struct bench_luod d;
	int conn;
	int *sessions;
	size_t n_sessions;
};

static void filled_stop(struct filled *f)
{
	for (size_t i = 0; i < f->n_sessions; i++)
		safe_close(f->sessions[i]);
	free(f->sessions);
	f->sessions = NULL;
	f->n_sessions = 0;
	f->conn = safe_close(f->conn);
	(void)bench_luod_stop(&f->d);
}

static int filled_start(struct filled *f, const char *luod_path, size_t files)
{
	size_t sessions = MAX((size_t)1, (files + FILES_PER_SESSION - 1) / FILES_PER_SESSION);
	int r;

	*f = (struct filled){ .conn = -EBADF };
	f->sessions = calloc(sessions, sizeof(int));
	if (!f->sessions)
		return -ENOMEM;
	r = bench_luod_start(&f->d, luod_path, NULL);
	if (r < 0) {
		free(f->sessions);
		f->sessions = NULL;
		return r;
	}
	f->conn = bench_luod_connect(&f->d);
	if (f->conn < 0) {
		r = f->conn;
		goto fail;
	}
	for (size_t s = 0; s < sessions; s++) {
		char name[LUO_SESSION_NAME_LENGTH];
		size_t in_this = files / sessions + (s < files % sessions);

		snprintf(name, sizeof(name), "bench-recovery-%zu", s);
		r = luo_session_create(f->conn, name, 0, &f->sessions[s]);
		if (r < 0)
			goto fail;
		f->n_sessions++;
		for (size_t i = 0; i < in_this; i++) {
			_cleanup_close_ int mfd = memfd_create("bench-recovery", MFD_CLOEXEC);

			r = mfd < 0 ? negative_errno()
				    : luo_session_preserve_fd(f->sessions[s], i + 1, mfd);
			if (r < 0)
				goto fail;
		}
	}
	return 0;
fail:
	filled_stop(f);
	return r;
}

/* The worker's own account of its last recovery, from luod's log. */
static void last_recovery(int log_fd, double *ret_us, double *ret_records)
{
	struct stat st;
	char *buf, *p, *last = NULL;

	*ret_us = *ret_records = NAN;
	if (fstat(log_fd, &st) < 0 || st.st_size <= 0)
		return;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return;
	if (pread(log_fd, buf, (size_t)st.st_size, 0) == st.st_size) {
		buf[st.st_size] = 0;
		for (p = buf; (p = strstr(p, "from the journal (")); p++)
			last = p;
		if (last) {
			uint64_t n, us;

			if (sscanf(last, "from the journal (%" SCNu64 " records, %" SCNu64 " us)",
				   &n, &us) == 2) {
				*ret_records = (double)n;
				*ret_us = (double)us;
			}
		}
	}
	free(buf);
}

struct size_result {
	size_t files, requested;
	int repeat;
	double recovery_us, recovery_min_us, recovery_max_us, worker_recover_us, records;
	uint64_t journal_size;
};

/* One kill of the worker and the first reply after it; in us. */
static int one_kill(struct filled *f, size_t files, double *ret_us)
{
	struct bench_luod_status before, after;
	uint64_t t0, t1;
	int r;

	r = bench_luod_status(f->conn, &before);
	if (r < 0)
		return r;
	if (before.worker_pid <= 0 || before.worker_pid == before.pid)
		return -ESRCH; /* a luod without a worker: nothing to measure */
	t0 = bench_now_ns();
	if (kill(before.worker_pid, SIGKILL) < 0)
		return negative_errno();
	/* Sent to a dead worker: it waits in the socket for the next one. */
	r = bench_luod_status(f->conn, &after);
	t1 = bench_now_ns();
	if (r < 0)
		return r;
	if (after.worker_pid == before.worker_pid ||
	    after.n_worker_restarts != before.n_worker_restarts + 1 || after.n_files != files) {
		bench_log("after the kill: worker %d (was %d), %" PRIu64 " restarts (was %" PRIu64
			  "), %" PRIu64 " files (want %zu)",
			  (int)after.worker_pid, (int)before.worker_pid, after.n_worker_restarts,
			  before.n_worker_restarts, after.n_files, files);
		return -EPROTO;
	}
	*ret_us = (double)(t1 - t0) / 1e3;
	return 0;
}

static struct bench_bare bare;

static int run_size(const char *luod_path, size_t files, int repeat, int log_fd,
		    struct size_result *res)
{
	_cleanup_free_ double *v = calloc(repeat, sizeof(double)),
			      *w = calloc(repeat, sizeof(double)),
			      *n = calloc(repeat, sizeof(double));
	struct filled f = { .conn = -EBADF };
	bool running = false;
	int r = 0;

	if (!v || !w || !n)
		return -ENOMEM;
	for (int i = 0; i < repeat; i++) {
		if (!running || i % KILLS_PER_LUOD == 0) {
			struct bench_luod_status st;

			if (running)
				filled_stop(&f);
			running = false;
			r = filled_start(&f, luod_path, files);
			if (r < 0) {
				bench_log("cannot fill a luod with %zu files: %s", files,
					  strerror(-r));
				return r;
			}
			running = true;
			r = bench_luod_status(f.conn, &st);
			if (r < 0)
				break;
			res->journal_size = st.journal_size;
		}
		if (files == 0) {
			r = bench_bare_sample(&bare, luod_path, 3);
			if (r < 0)
				break;
		}
		r = one_kill(&f, files, &v[i]);
		if (r < 0) {
			bench_log("kill %d at %zu files: %s", i, files, strerror(-r));
			break;
		}
		last_recovery(log_fd, &w[i], &n[i]);
	}
	if (running)
		filled_stop(&f);
	if (r < 0)
		return r;
	res->files = files;
	res->repeat = repeat;
	res->recovery_us = bench_quantile(v, repeat, 0.5);
	res->recovery_min_us = bench_quantile(v, repeat, 0);
	res->recovery_max_us = bench_quantile(v, repeat, 1);
	res->worker_recover_us = bench_quantile(w, repeat, 0.5);
	res->records = bench_quantile(n, repeat, 0.5);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "files", required_argument, NULL, 'f' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "luod", required_argument, NULL, 'l' },
		{},
	};
	const char *luod_path = bench_default_luod();
	size_t sizes[MAX_SIZES] = { 0, 1000, 10000 }, n_sizes = 3;
	struct size_result res[MAX_SIZES] = {};
	double bare_us = NAN, at0 = NAN, at10k = NAN;
	int repeat = 9, ch, r, log_fd;
	long limit;

	while ((ch = getopt_long(argc, argv, "f:r:l:", longopts, NULL)) >= 0) {
		switch (ch) {
		case 'f':
			n_sizes = bench_parse_sizes(optarg, sizes, MAX_SIZES);
			break;
		case 'r':
			repeat = atoi(optarg);
			break;
		case 'l':
			luod_path = optarg;
			break;
		default:
			return 2;
		}
	}
	if (repeat < 1 || n_sizes == 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);

	size_t most = 0;
	for (size_t i = 0; i < n_sizes; i++)
		most = MAX(most, sizes[i]);
	/* luod holds one fd per file; this process one per session. */
	limit = bench_raise_fd_limit((long)most + 4096);

	log_fd = memfd_create("bench-recovery-luod-log", MFD_CLOEXEC);
	if (log_fd < 0) {
		bench_log("memfd_create: %m");
		return 1;
	}
	bench_luod_log_fd = log_fd;

	r = bench_bare_sample(&bare, luod_path, 31);
	if (r < 0) {
		bench_log("bare exec of %s: %s", luod_path, strerror(-r));
		return 1;
	}

	for (size_t i = 0; i < n_sizes; i++) {
		size_t files = sizes[i];

		if ((long)files + 4096 > limit) {
			files = limit > 5096 ? (size_t)(limit - 4096) / 1000 * 1000 : 0;
			bench_log("%zu files do not fit the fd limit %ld: %zu instead", sizes[i],
				  limit, files);
			res[i].requested = sizes[i];
		}
		bench_log("%zu files, %d kills of the worker", files, repeat);
		/* A fresh log for each size: only this size's recoveries in it. */
		if (ftruncate(log_fd, 0) < 0 || lseek(log_fd, 0, SEEK_SET) < 0)
			return 1;
		r = run_size(luod_path, files, repeat, log_fd, &res[i]);
		if (r < 0)
			return 1;
		bench_log("  recovery %.0f us (worker's own %.0f us, %.0f records)",
			  res[i].recovery_us, res[i].worker_recover_us, res[i].records);
	}
	safe_close(log_fd);
	bare_us = bench_quantile(bare.samples, bare.n, 0.5);
	bench_log("bare exec of luod --version: %.0f us (median of %zu)", bare_us, bare.n);
	for (size_t i = 0; i < n_sizes; i++) {
		if (res[i].files == 0)
			at0 = res[i].recovery_us;
		if (res[i].files == 10000)
			at10k = res[i].recovery_us;
	}

	bench_json_begin("recovery");
	bench_json_int("fd_limit", limit);
	bench_json_int("repeat", repeat);
	bench_json_num("bare_exec_us", bare_us);
	bench_json_int("bare_exec_samples", (int64_t)bare.n);
	bench_json_array_begin("sizes");
	for (size_t i = 0; i < n_sizes; i++) {
		bench_json_object_begin();
		bench_json_int("files", (int64_t)res[i].files);
		if (res[i].requested)
			bench_json_int("requested_files", (int64_t)res[i].requested);
		bench_json_num("recovery_us", res[i].recovery_us);
		bench_json_num("recovery_min_us", res[i].recovery_min_us);
		bench_json_num("recovery_max_us", res[i].recovery_max_us);
		bench_json_num("worker_recover_us", res[i].worker_recover_us);
		bench_json_num("records_replayed", res[i].records);
		bench_json_int("journal_size", (int64_t)res[i].journal_size);
		bench_json_num("vs_bare_exec", res[i].recovery_us / bare_us);
		bench_json_object_end();
	}
	bench_json_array_end();
	bench_json_num("recovery_0_vs_bare_exec", at0 / bare_us);
	/* A target whose size was not measured is left out (bench/run shows "-"). */
	if (isfinite(at0))
		bench_json_bool("target_3x_bare_exec_at_0", at0 <= 3 * bare_us);
	if (isfinite(at10k))
		bench_json_bool("target_5ms_at_10000", at10k <= 5000);
	bench_json_end();
	return 0;
}
