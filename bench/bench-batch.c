/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: bench-batch, batched preserve and retrieve against the physical floor
 *
 * Measures, in one run, per fd:
 *   - the floor: the same batches moved by raw SCM_RIGHTS between the same
 *     two kinds of peers, a client and a forked holder over a
 *     SOCK_SEQPACKET socketpair, message for message as luod gets them: a
 *     request of LUO_WIRE_BATCH_MAX fds and their tokens answered by a short
 *     reply (the shape of PRESERVE_FDS; the holder keeps the fds, as luod
 *     does), and a request of tokens answered by LUO_WIRE_BATCH_MAX fds (the
 *     shape of RETRIEVE_FDS);
 *   - luo_session_preserve_fds() of a whole batch of fresh memfds into a new
 *     session of a real luod (keeper, worker, journal on);
 *   - luo_session_retrieve_fds() of the whole batch after a handover.
 * Each round times one whole batch on CLOCK_MONOTONIC; the figure is the
 * round's time divided by its files, median over the rounds.  Creating the
 * memfds, the sessions and the handover are outside the timed windows.
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
#include "protocol/protocol.h"

#define PER_MSG LUO_WIRE_BATCH_MAX

/* The holder of the floor: keeps what comes (as luod does) and sends back
 * what it keeps.  Messages: 'P' + tokens with fds -> short reply; 'R' +
 * count -> that many kept fds; 'C' -> closes everything it keeps. */
static _noreturn_ void floor_holder(int sock, size_t max)
{
	static uint8_t buf[LUO_WIRE_REQUEST_MAX];
	int *kept = calloc(max, sizeof(int));
	size_t n_kept = 0, next = 0;

	if (!kept)
		_exit(1);
	for (;;) {
		int fds[SOCKET_MAX_FDS];
		size_t n_fds = 0;
		ssize_t n =
			socket_recv_message(sock, buf, sizeof(buf), fds, SOCKET_MAX_FDS, &n_fds, 0);
		struct luo_wire_reply h = { .size = LUO_WIRE_FDS_HEADER };
		uint8_t reply[sizeof(h) + LUO_WIRE_FDS_HEADER] = { 0 };
		struct iovec iov = { .iov_base = reply, .iov_len = sizeof(reply) };
		const int *send = NULL;
		size_t n_send = 0;

		if (n <= 0)
			_exit(0);
		if (buf[0] == 'P') {
			for (size_t i = 0; i < n_fds && n_kept < max; i++)
				kept[n_kept++] = fds[i];
		} else if (buf[0] == 'R') {
			uint32_t cnt;

			memcpy(&cnt, buf + 4, sizeof(cnt));
			n_send = MIN((size_t)cnt, n_kept - next);
			send = kept + next;
			next += n_send;
		} else {
			close_many(kept, n_kept);
			n_kept = next = 0;
		}
		memcpy(reply, &h, sizeof(h));
		if (socket_send_message(sock, &iov, 1, send, n_send) < 0)
			_exit(1);
	}
}

/* One request of the floor and its reply; fds received go to ret_fds. */
static int floor_call(int sock, char kind, const int *fds, size_t n_fds, uint32_t count,
		      int *ret_fds, size_t *ret_n)
{
	static uint8_t msg[sizeof(struct luo_wire_request) + LUO_WIRE_FDS_HEADER + 8 * PER_MSG];
	uint8_t reply[64];
	size_t len = sizeof(struct luo_wire_request) + LUO_WIRE_FDS_HEADER +
		     (kind == 'R' ? 8 * count : 8 * n_fds);
	struct iovec iov = { .iov_base = msg, .iov_len = len };
	size_t got = 0;
	ssize_t r;

	msg[0] = (uint8_t)kind;
	memcpy(msg + 4, &count, sizeof(count));
	r = socket_send_message(sock, &iov, 1, fds, n_fds);
	if (r < 0)
		return (int)r;
	r = socket_recv_message(sock, reply, sizeof(reply), ret_fds ? ret_fds : (int[1]){ 0 },
				ret_fds ? SOCKET_MAX_FDS : 0, &got, 0);
	if (r < 0)
		return (int)r;
	if (ret_n)
		*ret_n = got;
	return 0;
}

static int make_memfds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fds[i] = memfd_create("bench-batch", MFD_CLOEXEC);
		if (fds[i] < 0) {
			int r = negative_errno();
			close_many(fds, i);
			return r;
		}
	}
	return 0;
}

static int run_floor(size_t n, size_t rounds, double *send_ns, double *recv_ns)
{
	_cleanup_free_ int *fds = calloc(n, sizeof(int)), *back = calloc(n, sizeof(int));
	int sv[2], status, r = 0;
	pid_t pid;

	if (!fds || !back)
		return -ENOMEM;
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
		floor_holder(sv[1], n);
	}
	close(sv[1]);
	for (size_t k = 0; r >= 0 && k < rounds + 1; k++) {
		uint64_t t0;

		r = make_memfds(fds, n);
		if (r < 0)
			break;
		t0 = bench_now_ns();
		for (size_t i = 0; r >= 0 && i < n; i += PER_MSG)
			r = floor_call(sv[0], 'P', fds + i, MIN(n - i, (size_t)PER_MSG), 0, NULL,
				       NULL);
		if (k > 0)
			send_ns[k - 1] = (double)(bench_now_ns() - t0) / (double)n;
		close_many(fds, n);
		t0 = bench_now_ns();
		for (size_t i = 0; r >= 0 && i < n; i += PER_MSG) {
			size_t got = 0, want = MIN(n - i, (size_t)PER_MSG);

			r = floor_call(sv[0], 'R', NULL, 0, (uint32_t)want, back + i, &got);
			if (r >= 0 && got != want)
				r = -EBADMSG;
		}
		if (k > 0)
			recv_ns[k - 1] = (double)(bench_now_ns() - t0) / (double)n;
		if (r >= 0)
			close_many(back, n);
		if (r >= 0)
			r = floor_call(sv[0], 'C', NULL, 0, 0, NULL, NULL);
	}
	close(sv[0]);
	waitpid(pid, &status, 0);
	return r < 0 ? r : 0;
}

static int luo_round(int conn, size_t round, size_t n, int *fds, uint64_t *tokens, int *back,
		     double *preserve_ns, double *retrieve_ns)
{
	_cleanup_close_ int session = -EBADF, incoming = -EBADF;
	char name[LUO_SESSION_NAME_LENGTH];
	size_t failed = 0;
	uint64_t t0;
	int r;

	snprintf(name, sizeof(name), "bench-batch-%zu", round);
	r = luo_session_create(conn, name, 0, &session);
	if (r < 0)
		return r;
	r = make_memfds(fds, n);
	if (r < 0)
		return r;
	t0 = bench_now_ns();
	r = luo_session_preserve_fds(session, n, tokens, fds, &failed);
	*preserve_ns = (double)(bench_now_ns() - t0) / (double)n;
	/* luod holds them now: the retrieved ones take their slots. */
	close_many(fds, n);
	if (r < 0) {
		bench_log("preserve_fds: %s at %zu", strerror(-r), failed);
		return r;
	}
	r = luo_session_handover(session);
	if (r < 0)
		return r;
	r = luo_session_retrieve(conn, name, &incoming);
	if (r < 0)
		return r;
	t0 = bench_now_ns();
	r = luo_session_retrieve_fds(incoming, n, tokens, back, &failed);
	*retrieve_ns = (double)(bench_now_ns() - t0) / (double)n;
	if (r < 0) {
		bench_log("retrieve_fds: %s at %zu", strerror(-r), failed);
		return r;
	}
	close_many(back, n);
	return luo_session_finish(incoming);
}

static int run_luo(const char *luod_path, size_t n, size_t rounds, double *preserve_ns,
		   double *retrieve_ns)
{
	_cleanup_free_ int *fds = calloc(n, sizeof(int)), *back = calloc(n, sizeof(int));
	_cleanup_free_ uint64_t *tokens = calloc(n, sizeof(uint64_t));
	_cleanup_close_ int conn = -EBADF;
	struct bench_luod d;
	int r;

	if (!fds || !back || !tokens)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		tokens[i] = i + 1;
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
	/* Round 0 warms up (luod's first pages, the journal's). */
	for (size_t k = 0; k < rounds + 1; k++) {
		double p = NAN, q = NAN;

		r = luo_round(conn, k, n, fds, tokens, back, &p, &q);
		if (r < 0)
			goto out;
		if (k > 0) {
			preserve_ns[k - 1] = p;
			retrieve_ns[k - 1] = q;
		}
	}
	r = 0;
out:
	conn = safe_close(conn);
	if (bench_luod_stop(&d) != 0 && r >= 0)
		r = -EPROTO;
	return r;
}

static void json_side(const char *prefix, double *ns, size_t n)
{
	char key[64];
	double med = bench_quantile(ns, n, 0.5);

	snprintf(key, sizeof(key), "%s_ns_per_fd", prefix);
	bench_json_num(key, med);
	snprintf(key, sizeof(key), "%s_max_ns_per_fd", prefix);
	bench_json_num(key, bench_quantile(ns, n, 1.0));
	snprintf(key, sizeof(key), "%s_fds_per_second", prefix);
	bench_json_num(key, med > 0 ? 1e9 / med : NAN);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "files", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "luod", required_argument, NULL, 'l' },
		{},
	};
	_cleanup_free_ double *fs = NULL, *fr = NULL, *ps = NULL, *rs = NULL;
	const char *luod_path = bench_default_luod();
	size_t n = 15000, rounds = 20, asked;
	long limit;
	int c, r;

	while ((c = getopt_long(argc, argv, "n:r:l:", longopts, NULL)) >= 0) {
		switch (c) {
		case 'n':
			n = strtoul(optarg, NULL, 10);
			break;
		case 'r':
			rounds = strtoul(optarg, NULL, 10);
			break;
		case 'l':
			luod_path = optarg;
			break;
		default:
			return 2;
		}
	}
	if (n == 0 || rounds == 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	/* The client holds a batch at a time (originals, then the retrieved
	 * ones); luod and the floor's holder hold one batch each. */
	asked = n;
	limit = bench_raise_fd_limit((long)n + 1024);
	if (limit < 1024 + 16)
		return 1;
	n = MIN(n, (size_t)limit - 1024);

	fs = calloc(rounds, sizeof(double));
	fr = calloc(rounds, sizeof(double));
	ps = calloc(rounds, sizeof(double));
	rs = calloc(rounds, sizeof(double));
	if (!fs || !fr || !ps || !rs)
		return 1;

	bench_log("floor: %zu rounds of %zu fds in messages of %d", rounds, n, PER_MSG);
	r = run_floor(n, rounds, fs, fr);
	if (r < 0) {
		bench_log("floor: %s", strerror(-r));
		return 1;
	}
	bench_log("luo: %zu rounds of %zu files", rounds, n);
	r = run_luo(luod_path, n, rounds, ps, rs);
	if (r < 0) {
		bench_log("luo: %s", strerror(-r));
		return 1;
	}

	bench_json_begin("batch");
	bench_json_int("files", (int64_t)n);
	if (asked != n)
		bench_json_int("requested_files", (int64_t)asked);
	bench_json_int("rounds", (int64_t)rounds);
	bench_json_int("per_message", PER_MSG);
	json_side("floor_send", fs, rounds);
	json_side("floor_recv", fr, rounds);
	json_side("preserve", ps, rounds);
	json_side("retrieve", rs, rounds);
	double pv = bench_quantile(ps, rounds, 0.5) / bench_quantile(fs, rounds, 0.5);
	double rv = bench_quantile(rs, rounds, 0.5) / bench_quantile(fr, rounds, 0.5);
	bench_json_num("preserve_vs_floor", pv);
	bench_json_num("retrieve_vs_floor", rv);
	bench_json_bool("target_1.5x_floor", pv <= 1.5 && rv <= 1.5);
	bench_json_bool("target_500k_per_second", bench_quantile(ps, rounds, 0.5) <= 2000 &&
							  bench_quantile(rs, rounds, 0.5) <= 2000);
	bench_json_end();
	return 0;
}
