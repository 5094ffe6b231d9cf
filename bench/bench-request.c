/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: bench-request, the cost of one request against the physical floor
 *
 * Measures, in one run:
 *   - the floor: a raw SCM_RIGHTS ping-pong over a SOCK_SEQPACKET
 *     socketpair between two processes, once with the fd going out with the
 *     request (the shape of PRESERVE_FD) and once with it coming back with
 *     the reply (the shape of RETRIEVE_FD).  This is the least any userspace
 *     holder of fds can cost: two context switches and an fd install;
 *   - luo_session_preserve_fd() of a fresh memfd, one at a time, from one
 *     client against a real luod;
 *   - luo_session_retrieve_fd() of each of them after the session was
 *     handed over and retrieved (in rounds of at most 10,000 files, each
 *     finished before the next, so that any count fits luod's fd limit).
 *   - a session command (GET_NAME) answered on the shared session socket
 *     (luo_wire_call()) and on a reply socket of the caller's own
 *     (luo_wire_call_session(), what libluo does): the price of not
 *     depending on other holders of the session fd.
 * Each sample is one round trip timed on CLOCK_MONOTONIC; median, p99 and
 * the resulting rate are reported.  The memfds are created and closed
 * outside the timed window, so only the request is timed.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <luo/luo.h>

#include "basic/macro.h"
#include "basic/socket-util.h"
#include "bench-util.h"
#include "protocol/transport.h"

#define WARMUP 500

struct sample_stats {
	double median_us, p99_us, mean_us, per_second;
};

static void stats_of(double *us, size_t n, struct sample_stats *ret)
{
	ret->mean_us = bench_mean(us, n);
	ret->per_second = ret->mean_us > 0 ? 1e6 / ret->mean_us : NAN;
	ret->median_us = bench_quantile(us, n, 0.5);
	ret->p99_us = bench_quantile(us, n, 0.99);
}

static void json_stats(const char *prefix, const struct sample_stats *s)
{
	char key[64];

	snprintf(key, sizeof(key), "%s_median_us", prefix);
	bench_json_num(key, s->median_us);
	snprintf(key, sizeof(key), "%s_p99_us", prefix);
	bench_json_num(key, s->p99_us);
	snprintf(key, sizeof(key), "%s_mean_us", prefix);
	bench_json_num(key, s->mean_us);
	snprintf(key, sizeof(key), "%s_per_second", prefix);
	bench_json_num(key, s->per_second);
}

/*
 * The peer of the floor: answers each 16-byte request with 16 bytes.  A
 * request that carries an fd has it closed (as luod would keep it); a request
 * whose first byte is 'R' gets the peer's memfd back with the reply.
 */
static _noreturn_ void floor_peer(int sock)
{
	char buf[16];
	int keep = memfd_create("bench-floor", MFD_CLOEXEC);

	for (;;) {
		int fds[SOCKET_MAX_FDS];
		size_t n_fds = 0;
		ssize_t n =
			socket_recv_message(sock, buf, sizeof(buf), fds, SOCKET_MAX_FDS, &n_fds, 0);
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };

		if (n <= 0)
			_exit(0);
		close_many(fds, n_fds);
		if (socket_send_message(sock, &iov, 1, &keep, buf[0] == 'R' ? 1 : 0) < 0)
			_exit(1);
	}
}

static int run_floor(size_t n, double *send_us, double *recv_us)
{
	_cleanup_close_ int mfd = memfd_create("bench-floor", MFD_CLOEXEC);
	int sv[2], status, r = 0;
	pid_t pid;

	if (mfd < 0)
		return negative_errno();
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return negative_errno();
	pid = fork();
	if (pid < 0) {
		r = negative_errno();
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	if (pid == 0) {
		close(sv[0]);
		floor_peer(sv[1]);
	}
	close(sv[1]);

	for (size_t i = 0; r >= 0 && i < WARMUP + n; i++) {
		char buf[16] = "P";
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		int fds[SOCKET_MAX_FDS];
		size_t n_fds;
		uint64_t t0 = bench_now_ns();

		r = (int)socket_send_message(sv[0], &iov, 1, &mfd, 1);
		if (r >= 0)
			r = (int)socket_recv_message(sv[0], buf, sizeof(buf), fds, SOCKET_MAX_FDS,
						     &n_fds, 0);
		if (r >= 0 && i >= WARMUP)
			send_us[i - WARMUP] = (double)(bench_now_ns() - t0) / 1e3;
		if (r >= 0)
			close_many(fds, n_fds);
	}
	for (size_t i = 0; r >= 0 && i < WARMUP + n; i++) {
		char buf[16] = "R";
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		int fds[SOCKET_MAX_FDS];
		size_t n_fds = 0;
		uint64_t t0 = bench_now_ns();

		r = (int)socket_send_message(sv[0], &iov, 1, NULL, 0);
		if (r >= 0)
			r = (int)socket_recv_message(sv[0], buf, sizeof(buf), fds, SOCKET_MAX_FDS,
						     &n_fds, 0);
		if (r >= 0 && i >= WARMUP)
			recv_us[i - WARMUP] = (double)(bench_now_ns() - t0) / 1e3;
		if (r >= 0) {
			if (n_fds != 1)
				r = -EBADMSG;
			close_many(fds, n_fds);
		}
	}
	close(sv[0]);
	waitpid(pid, &status, 0);
	return r < 0 ? r : 0;
}

/*
 * One round: a session, preserves of fresh memfds, a handover, the session
 * retrieved, retrieves, finish.  Finishing gives luod's fds back, so that
 * any number of samples fits luod's fd limit.  Samples after skip are kept.
 */
static int luo_round(int conn, size_t round, size_t n, size_t skip, double *preserve_us,
		     double *retrieve_us, uint64_t *ret_preserve_ns)
{
	_cleanup_close_ int session = -EBADF, incoming = -EBADF;
	char name[LUO_SESSION_NAME_LENGTH];
	uint64_t loop0;
	int r;

	snprintf(name, sizeof(name), "bench-request-%zu", round);
	r = luo_session_create(conn, name, 0, &session);
	if (r < 0)
		return r;
	loop0 = bench_now_ns();
	for (size_t i = 0; i < n; i++) {
		_cleanup_close_ int mfd = memfd_create("bench-request", MFD_CLOEXEC);
		uint64_t t0;

		if (mfd < 0)
			return negative_errno();
		t0 = bench_now_ns();
		r = luo_session_preserve_fd(session, i + 1, mfd);
		if (r < 0) {
			bench_log("preserve #%zu: %s", i, strerror(-r));
			return r;
		}
		if (i >= skip)
			preserve_us[i - skip] = (double)(bench_now_ns() - t0) / 1e3;
	}
	*ret_preserve_ns += bench_now_ns() - loop0;

	r = luo_session_handover(session);
	if (r < 0)
		return r;
	r = luo_session_retrieve(conn, name, &incoming);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		_cleanup_close_ int fd = -EBADF;
		uint64_t t0 = bench_now_ns();

		r = luo_session_retrieve_fd(incoming, i + 1, &fd);
		if (r < 0) {
			bench_log("retrieve #%zu: %s", i, strerror(-r));
			return r;
		}
		if (i >= skip)
			retrieve_us[i - skip] = (double)(bench_now_ns() - t0) / 1e3;
	}
	return luo_session_finish(incoming);
}

static int run_luo(const char *luod_path, size_t n, size_t per_round, double *preserve_us,
		   double *retrieve_us, double *ret_loop_per_second)
{
	_cleanup_close_ int conn = -EBADF;
	struct bench_luod d;
	uint64_t preserve_ns = 0;
	size_t done = 0, round = 0, timed = 0;
	int r;

	r = bench_luod_start(&d, luod_path, NULL);
	if (r < 0) {
		bench_log("cannot start luod %s: %s", luod_path, strerror(-r));
		return r;
	}
	conn = bench_luod_connect(&d);
	if (conn < 0) {
		r = conn;
		goto out;
	}
	/* The first round starts with WARMUP untimed requests. */
	while (done < n) {
		size_t skip = round == 0 ? WARMUP : 0;
		size_t k = MIN(per_round, n - done + skip);

		r = luo_round(conn, round, k, skip, preserve_us + done, retrieve_us + done,
			      &preserve_ns);
		if (r < 0)
			goto out;
		done += k - skip;
		timed += k;
		round++;
	}
	*ret_loop_per_second = (double)timed / ((double)preserve_ns / 1e9);
	r = 0;
out:
	conn = safe_close(conn);
	if (bench_luod_stop(&d) != 0 && r >= 0)
		r = -EPROTO;
	return r;
}

/* GET_NAME n times each way, alternating in blocks so that both see the same machine. */
static int run_reply_paths(const char *luod_path, size_t n, double *shared_us, double *own_us)
{
	_cleanup_close_ int conn = -EBADF, session = -EBADF;
	struct bench_luod d;
	int r;

	r = bench_luod_start(&d, luod_path, NULL);
	if (r < 0)
		return r;
	conn = bench_luod_connect(&d);
	r = conn < 0 ? conn : luo_session_create(conn, "reply-paths", 0, &session);
	for (size_t i = 0; r >= 0 && i < WARMUP + n; i += 100) {
		for (int own = 0; own <= 1 && r >= 0; own++)
			for (size_t k = i; k < MIN(i + 100, WARMUP + n) && r >= 0; k++) {
				struct liveupdate_session_get_name g = { .size = sizeof(g) };
				uint64_t t0 = bench_now_ns();

				r = own ? luo_wire_call_session(session,
								LIVEUPDATE_SESSION_GET_NAME, &g,
								sizeof(g), NULL, 0, NULL)
					: luo_wire_call(session, LIVEUPDATE_SESSION_GET_NAME, &g,
							sizeof(g), NULL, 0, NULL);
				if (k >= WARMUP)
					(own ? own_us : shared_us)[k - WARMUP] =
						(double)(bench_now_ns() - t0) / 1e3;
			}
	}
	session = safe_close(session);
	conn = safe_close(conn);
	if (bench_luod_stop(&d) != 0 && r >= 0)
		r = -EPROTO;
	return r < 0 ? r : 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "count", required_argument, NULL, 'n' },
		{ "luod", required_argument, NULL, 'l' },
		{},
	};
	_cleanup_free_ double *fs = NULL, *fr = NULL, *ps = NULL, *rs = NULL, *cs = NULL,
			      *co = NULL;
	const char *luod_path = bench_default_luod();
	struct sample_stats floor_send, floor_recv, preserve, retrieve, call_shared, call_own;
	double loop_rate = NAN;
	size_t n = 20000, per_round;
	long limit;
	int c, r;

	while ((c = getopt_long(argc, argv, "n:l:", longopts, NULL)) >= 0) {
		switch (c) {
		case 'n':
			n = strtoul(optarg, NULL, 10);
			break;
		case 'l':
			luod_path = optarg;
			break;
		default:
			return 2;
		}
	}
	if (n == 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	/* luod keeps every preserved memfd open until its round finishes. */
	limit = bench_raise_fd_limit(10000 + 1024);
	per_round = limit > 2048 + WARMUP ? MIN((size_t)limit - 1024, (size_t)10000) : 512;

	fs = calloc(n, sizeof(double));
	fr = calloc(n, sizeof(double));
	ps = calloc(n, sizeof(double));
	rs = calloc(n, sizeof(double));
	cs = calloc(n, sizeof(double));
	co = calloc(n, sizeof(double));
	if (!fs || !fr || !ps || !rs || !cs || !co)
		return 1;

	bench_log("floor: %zu SCM_RIGHTS round trips each way", n);
	r = run_floor(n, fs, fr);
	if (r < 0) {
		bench_log("floor: %s", strerror(-r));
		return 1;
	}
	bench_log("luo: %zu preserves and retrieves", n);
	r = run_luo(luod_path, n, per_round, ps, rs, &loop_rate);
	if (r < 0) {
		bench_log("luo: %s", strerror(-r));
		return 1;
	}
	bench_log("session calls: %zu on the shared socket, %zu on a reply socket of their own", n,
		  n);
	r = run_reply_paths(luod_path, n, cs, co);
	if (r < 0) {
		bench_log("session calls: %s", strerror(-r));
		return 1;
	}
	stats_of(cs, n, &call_shared);
	stats_of(co, n, &call_own);
	stats_of(fs, n, &floor_send);
	stats_of(fr, n, &floor_recv);
	stats_of(ps, n, &preserve);
	stats_of(rs, n, &retrieve);

	bench_json_begin("request");
	bench_json_int("samples", (int64_t)n);
	json_stats("floor_send_fd", &floor_send);
	json_stats("floor_recv_fd", &floor_recv);
	json_stats("preserve", &preserve);
	json_stats("retrieve", &retrieve);
	bench_json_num("preserve_loop_per_second", loop_rate);
	json_stats("session_call_shared", &call_shared);
	json_stats("session_call_own_socket", &call_own);
	bench_json_num("preserve_vs_floor", preserve.median_us / floor_send.median_us);
	bench_json_num("retrieve_vs_floor", retrieve.median_us / floor_recv.median_us);
	bench_json_bool("target_median_2x_floor",
			preserve.median_us <= 2 * floor_send.median_us &&
				retrieve.median_us <= 2 * floor_recv.median_us);
	bench_json_bool("target_100k_preserves_per_second", preserve.per_second >= 100000);
	bench_json_end();
	return 0;
}
