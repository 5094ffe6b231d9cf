/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: bench-update, luod's live update blackout as a client sees it
 *
 * For each number of preserved files (default 0, 100, 1000, 10000, 100000):
 * a fresh luod; a few client processes (--clients) that each create their
 * share of the sessions (at most 1000 files per session) and preserve fresh
 * memfds into them, then hold their session fds and wait; and a pinger thread
 * in this process that sends GET_NAME on a session fd of its own back to back
 * and stamps every reply.  The main thread then asks luod to update (the
 * UPDATE command luoctl sends) --repeat times.  The blackout of one update is
 * the longest gap between two consecutive pinger replies that overlaps the
 * update: the time from the last reply before it to the first one after it.
 *
 * luod's own breakdown comes from its UPDATE reply (liveupdate.c): "stop" is
 * from the worker's stop at a clean point (everything is already in the
 * journal: nothing is serialized) to the keeper's execve(), which includes
 * the keeper reaping the worker; "exec" from execve() to the new image's
 * main(); "restore" the new worker's recovery from the journal (open,
 * replay, fd adoption, reconciling the fd table, arming the event loop).
 * The check of the target binary runs before the blackout, while luod
 * serves, and is not in it.  The journal's size is its snapshot and log.
 *
 * Beside it, the bare exec: fork, execve() of `luod --version`, exit, reaped,
 * which is what any re-exec of luod costs before it carries any state: 31
 * runs first, then 3 before each update at 0 files (the same load).  The
 * per-file slope is a least squares fit of the median blackout over the
 * sizes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <luo/luo.h>

#include "basic/macro.h"
#include "bench-util.h"
#include "protocol/protocol.h"

#define MAX_SIZES 16
#define FILES_PER_SESSION 1000
#define PING_SLOTS (4u << 20)

struct pinger {
	pthread_t thread;
	int session_fd;
	atomic_bool stop;
	atomic_size_t n; /* stamps written */
	uint64_t *stamps;
	int error;
};

static void *pinger_main(void *arg)
{
	struct pinger *p = arg;

	while (!atomic_load_explicit(&p->stop, memory_order_relaxed)) {
		char name[LUO_SESSION_NAME_LENGTH];
		size_t i = atomic_load_explicit(&p->n, memory_order_relaxed);
		int r = luo_session_get_name(p->session_fd, name);

		if (r < 0) {
			p->error = r;
			break;
		}
		/* Once full, the last slot keeps the newest stamp: the gap after it still shows. */
		p->stamps[MIN(i, PING_SLOTS - 1)] = bench_now_ns();
		atomic_store_explicit(&p->n, MIN(i + 1, (size_t)PING_SLOTS), memory_order_release);
	}
	return NULL;
}

/* The longest gap between consecutive stamps that ends after t0 and starts before t1. */
static uint64_t longest_gap(const uint64_t *s, size_t n, uint64_t t0, uint64_t t1)
{
	uint64_t best = 0;

	for (size_t i = 1; i < n; i++)
		if (s[i] >= t0 && s[i - 1] <= t1 && s[i] - s[i - 1] > best)
			best = s[i] - s[i - 1];
	return best;
}

/*
 * A client process: creates its sessions, fills them, reports on ready_fd and
 * holds everything until go_fd hangs up.
 */
static _noreturn_ void client_main(const char *socket, int index, int clients, size_t files,
				   int ready_fd, int go_fd)
{
	size_t sessions = MAX((size_t)clients, (files + FILES_PER_SESSION - 1) / FILES_PER_SESSION);
	int *fds = calloc(sessions, sizeof(int));
	_cleanup_close_ int conn = luo_connect(socket);
	size_t n_mine = 0;
	char c = 1;

	if (!fds || conn < 0)
		_exit(1);
	for (size_t s = (size_t)index; s < sessions; s += (size_t)clients) {
		char name[LUO_SESSION_NAME_LENGTH];
		/* Session s holds files s, s + sessions, ...: an even spread. */
		size_t in_this = files / sessions + (s < files % sessions);
		int r;

		snprintf(name, sizeof(name), "bench-update-%zu", s);
		r = luo_session_create(conn, name, 0, &fds[n_mine]);
		if (r < 0) {
			fprintf(stderr, "client %d: create %s: %s\n", index, name, strerror(-r));
			_exit(1);
		}
		for (size_t f = 0; f < in_this; f++) {
			_cleanup_close_ int mfd = memfd_create("bench-update", MFD_CLOEXEC);

			r = mfd < 0 ? negative_errno()
				    : luo_session_preserve_fd(fds[n_mine], f + 1, mfd);
			if (r < 0) {
				fprintf(stderr, "client %d: preserve: %s\n", index, strerror(-r));
				_exit(1);
			}
		}
		n_mine++;
	}
	if (write(ready_fd, &c, 1) != 1)
		_exit(1);
	/* Hold the sessions (and the connection) through the updates. */
	while (read(go_fd, &c, 1) > 0)
		;
	_exit(0);
}

struct update_result {
	double blackout_us, stop_us, exec_us, restore_us, total_us, call_us;
	uint64_t journal_size;
};

static int one_update(int conn, struct pinger *p, struct update_result *ret)
{
	struct luo_wire_update u = { .size = sizeof(u) };
	uint64_t t0, t1, deadline;
	size_t n, first;
	int r;

	/* Let the pinger get going, so that there is a reply just before the update. */
	n = atomic_load(&p->n);
	while (atomic_load(&p->n) < n + 100 && !p->error)
		usleep(100);
	first = atomic_load(&p->n) - 1;
	t0 = bench_now_ns();
	r = luo_wire_call(conn, LUO_IOCTL_UPDATE, &u, sizeof(u), NULL, 0, NULL);
	t1 = bench_now_ns();
	if (r < 0)
		return r;
	if (u.rolled_back)
		return -EPROTO;
	/* The first reply after the update, then a little more. */
	n = atomic_load(&p->n);
	deadline = bench_now_ns() + UINT64_C(2000000000);
	while (atomic_load(&p->n) < n + 100 && !p->error && bench_now_ns() < deadline)
		usleep(100);
	if (p->error)
		return p->error;
	n = atomic_load_explicit(&p->n, memory_order_acquire);
	*ret = (struct update_result){
		.blackout_us = (double)longest_gap(p->stamps + first, n - first, t0, t1) / 1e3,
		.stop_us = (double)u.serialize_usec, /* the worker's stop to the execve() */
		.exec_us = (double)u.exec_usec,
		.restore_us = (double)u.restore_usec,
		.total_us = (double)u.total_usec,
		.call_us = (double)(t1 - t0) / 1e3,
		.journal_size = u.state_size, /* snapshot + log */
	};
	return 0;
}

struct size_result {
	size_t files, sessions;
	int repeat;
	double blackout_us, blackout_min_us, blackout_max_us, stop_us, exec_us, restore_us,
		total_us, call_us;
	uint64_t journal_size, luod_memory;
};

/* Extra arguments for luod (--verbose). */
static const char *luod_args[2];

static struct bench_bare bare;

static int run_size(const char *luod_path, size_t files, int clients, int repeat,
		    struct size_result *res)
{
	_cleanup_free_ double *b = calloc(repeat, sizeof(double)),
			      *s = calloc(repeat, sizeof(double)),
			      *e = calloc(repeat, sizeof(double)),
			      *rs = calloc(repeat, sizeof(double)),
			      *t = calloc(repeat, sizeof(double)),
			      *c = calloc(repeat, sizeof(double));
	_cleanup_close_ int conn = -EBADF;
	struct pinger p = { .session_fd = -EBADF };
	struct bench_luod d;
	pid_t pids[64];
	int ready[2] = { -EBADF, -EBADF }, go[2] = { -EBADF, -EBADF }, n_clients = 0, r;
	bool pinging = false;

	if (!b || !s || !e || !rs || !t || !c)
		return -ENOMEM;
	p.stamps = calloc(PING_SLOTS, sizeof(uint64_t));
	if (!p.stamps)
		return -ENOMEM;
	r = bench_luod_start(&d, luod_path, luod_args);
	if (r < 0) {
		bench_log("cannot start luod: %s", strerror(-r));
		free(p.stamps);
		return r;
	}
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0) {
		r = negative_errno();
		goto out;
	}
	for (; n_clients < clients; n_clients++) {
		pid_t pid = fork();

		if (pid < 0) {
			r = negative_errno();
			goto out;
		}
		if (pid == 0) {
			close(ready[0]);
			close(go[1]);
			client_main(d.socket, n_clients, clients, files, ready[1], go[0]);
		}
		pids[n_clients] = pid;
	}
	ready[1] = safe_close(ready[1]);
	go[0] = safe_close(go[0]);
	for (int i = 0; i < clients; i++) {
		char ch;

		if (read(ready[0], &ch, 1) != 1) {
			bench_log("a client failed while filling its sessions");
			r = -EPROTO;
			goto out;
		}
	}

	conn = bench_luod_connect(&d);
	if (conn < 0) {
		r = conn;
		goto out;
	}
	r = luo_session_create(conn, "bench-update-pinger", 0, &p.session_fd);
	if (r < 0)
		goto out;
	r = -pthread_create(&p.thread, NULL, pinger_main, &p);
	if (r < 0)
		goto out;
	pinging = true;

	for (int i = 0; i < repeat; i++) {
		struct update_result u = {};

		if (files == 0) {
			r = bench_bare_sample(&bare, luod_path, 3);
			if (r < 0)
				goto out;
		}
		r = one_update(conn, &p, &u);
		if (r < 0) {
			bench_log("update with %zu files: %s", files, strerror(-r));
			goto out;
		}
		b[i] = u.blackout_us;
		s[i] = u.stop_us;
		e[i] = u.exec_us;
		rs[i] = u.restore_us;
		t[i] = u.total_us;
		c[i] = u.call_us;
		res->journal_size = u.journal_size;
	}
	{
		/* Keeper and the last worker, with the journal (bench-scale has the details). */
		struct bench_luod_status st;
		struct bench_luod_memory m;

		if (bench_luod_status(conn, &st) >= 0 &&
		    bench_luod_memory(d.pid, st.worker_pid, &m) >= 0)
			res->luod_memory = m.pss + m.journal;
	}
	res->files = files;
	res->sessions = MAX((size_t)clients, (files + FILES_PER_SESSION - 1) / FILES_PER_SESSION);
	res->repeat = repeat;
	res->blackout_min_us = bench_quantile(b, repeat, 0);
	res->blackout_max_us = bench_quantile(b, repeat, 1);
	res->blackout_us = bench_quantile(b, repeat, 0.5);
	res->stop_us = bench_quantile(s, repeat, 0.5);
	res->exec_us = bench_quantile(e, repeat, 0.5);
	res->restore_us = bench_quantile(rs, repeat, 0.5);
	res->total_us = bench_quantile(t, repeat, 0.5);
	res->call_us = bench_quantile(c, repeat, 0.5);
	r = 0;
out:
	if (pinging) {
		atomic_store(&p.stop, true);
		pthread_join(p.thread, NULL);
	}
	free(p.stamps);
	safe_close(p.session_fd);
	safe_close(ready[0]);
	safe_close(ready[1]);
	safe_close(go[0]);
	safe_close(go[1]); /* the clients exit */
	for (int i = 0; i < n_clients; i++) {
		int status;

		waitpid(pids[i], &status, 0);
		if ((!WIFEXITED(status) || WEXITSTATUS(status) != 0) && r >= 0)
			r = -EPROTO;
	}
	conn = safe_close(conn);
	if (bench_luod_stop(&d) != 0 && r >= 0)
		r = -EPROTO;
	return r;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "files", required_argument, NULL, 'f' },
		{ "clients", required_argument, NULL, 'c' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "luod", required_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{},
	};
	const char *luod_path = bench_default_luod();
	size_t sizes[MAX_SIZES] = { 0, 100, 1000, 10000, 100000 }, n_sizes = 5;
	struct size_result res[MAX_SIZES] = {};
	size_t requested[MAX_SIZES] = {};
	double x[MAX_SIZES], y[MAX_SIZES], slope, intercept, r2, bare_us = NAN;
	double at0 = NAN, at10k = NAN;
	int clients = 4, repeat = 7, ch, r;
	long limit;

	while ((ch = getopt_long(argc, argv, "f:c:r:l:v", longopts, NULL)) >= 0) {
		switch (ch) {
		case 'f':
			n_sizes = bench_parse_sizes(optarg, sizes, MAX_SIZES);
			break;
		case 'c':
			clients = atoi(optarg);
			break;
		case 'r':
			repeat = atoi(optarg);
			break;
		case 'l':
			luod_path = optarg;
			break;
		case 'v':
			/* luod logs the phases of each update (encode, keep fds, decode) on stderr. */
			luod_args[0] = "--verbose";
			break;
		default:
			return 2;
		}
	}
	if (clients < 1 || clients > 64 || repeat < 1 || n_sizes == 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);

	/* luod holds one fd per file and two per session; it raises its soft limit itself. */
	size_t most = 0;
	for (size_t i = 0; i < n_sizes; i++)
		most = MAX(most, sizes[i]);
	limit = bench_raise_fd_limit((long)most + (long)most / 100 + 4096);

	r = bench_bare_sample(&bare, luod_path, 31);
	if (r < 0) {
		bench_log("bare exec of %s: %s", luod_path, strerror(-r));
		return 1;
	}

	for (size_t i = 0; i < n_sizes; i++) {
		if ((long)sizes[i] + 4096 > limit) {
			/* luod holds one fd per file: the largest size this fd limit allows instead. */
			size_t fit = limit > 5096 ? (size_t)(limit - 4096) / 1000 * 1000 : 0;

			bench_log("%zu files do not fit the fd limit %ld: %zu instead", sizes[i],
				  limit, fit);
			requested[i] = sizes[i];
			sizes[i] = fit;
			if (i > 0 && sizes[i] <= sizes[i - 1]) {
				n_sizes = i;
				break;
			}
		}
		bench_log("%zu files, %d clients, %d updates", sizes[i], clients, repeat);
		r = run_size(luod_path, sizes[i], clients, repeat, &res[i]);
		if (r < 0)
			return 1;
		bench_log("  blackout %.0f us (stop %.0f, exec %.0f, restore %.0f)",
			  res[i].blackout_us, res[i].stop_us, res[i].exec_us, res[i].restore_us);
		x[i] = (double)sizes[i];
		y[i] = res[i].blackout_us;
		if (sizes[i] == 0)
			at0 = res[i].blackout_us;
		if (sizes[i] == 10000)
			at10k = res[i].blackout_us;
	}
	bare_us = bench_quantile(bare.samples, bare.n, 0.5);
	bench_log("bare exec of luod --version: %.0f us (median of %zu)", bare_us, bare.n);
	slope = bench_slope(x, y, n_sizes, &intercept, &r2);

	bench_json_begin("update");
	bench_json_int("clients", clients);
	bench_json_int("fd_limit", limit);
	bench_json_int("repeat", repeat);
	bench_json_num("bare_exec_us", bare_us);
	bench_json_int("bare_exec_samples", (int64_t)bare.n);
	bench_json_array_begin("sizes");
	for (size_t i = 0; i < n_sizes; i++) {
		bench_json_object_begin();
		bench_json_int("files", (int64_t)res[i].files);
		bench_json_int("sessions", (int64_t)res[i].sessions);
		if (requested[i])
			bench_json_int("requested_files", (int64_t)requested[i]);
		bench_json_num("blackout_us", res[i].blackout_us);
		bench_json_num("blackout_min_us", res[i].blackout_min_us);
		bench_json_num("blackout_max_us", res[i].blackout_max_us);
		bench_json_num("stop_us", res[i].stop_us);
		bench_json_num("exec_us", res[i].exec_us);
		bench_json_num("restore_us", res[i].restore_us);
		bench_json_num("luod_total_us", res[i].total_us);
		bench_json_num("update_call_us", res[i].call_us);
		bench_json_int("journal_size", (int64_t)res[i].journal_size);
		bench_json_int("luod_memory", (int64_t)res[i].luod_memory);
		bench_json_object_end();
	}
	bench_json_array_end();
	bench_json_num("slope_us_per_file", slope);
	bench_json_num("intercept_us", intercept);
	bench_json_num("fit_r2", r2);
	bench_json_num("blackout_0_vs_bare_exec", at0 / bare_us);
	/* A target whose size was not measured is left out (bench/run shows "-"). */
	if (isfinite(at10k))
		bench_json_bool("target_3ms_at_10000", at10k <= 3000);
	if (isfinite(at0))
		bench_json_bool("target_2x_bare_exec_at_0", at0 <= 2 * bare_us);
	bench_json_end();
	return 0;
}
