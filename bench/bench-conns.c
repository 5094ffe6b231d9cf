/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: bench-conns, restarts that keep every connection
 *
 * Starts luod and kv-server, opens as many connections to kv-server as asked
 * (capped by the fd limit), and keeps every one of them busy: each sends
 * "GEN", waits for its answer (the store's generation, which grows by one
 * at each restart, so that the answer says which server gave it) and sends
 * the next at once.  Every --interval seconds the server is restarted as a
 * service manager would: SIGTERM to the running one, and its successor
 * started at once with the same arguments (a restart that takes longer is
 * waited for, and the next follows it).  Counted over --seconds:
 *
 *   - resets: connections the client saw end (EOF, ECONNRESET, EPIPE);
 *   - failed: requests that got no answer (their connection ended) or an
 *     error answer; connect()s that failed;
 *   - the blackout of each restart: from the SIGTERM to the moment every
 *     connection has had an answer from the successor (its generation).
 *
 * With --listen-only the server is started with --no-connections: the
 * listening socket goes through luo and the established connections are
 * closed at the restart, as the usual hot-restart schemes do; the client
 * reconnects each one at once and the blackout runs until every connection
 * (new ones included) has an answer from the successor.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/macro.h"
#include "bench-util.h"

/* The longest a restart is waited for before the next one. */
#define RESTART_MAX_NS (UINT64_C(20) * 1000000000)

struct conn {
	int fd;
	bool connecting;
	bool waiting; /* a request is out */
	bool seen;    /* answered at least once */
	uint64_t last_gen;
	char in[64];
	size_t in_len;
};

struct run {
	struct conn *conns;
	size_t n;
	int epfd, port;
	uint64_t requests, failed, resets, connect_failed;
	uint64_t max_gen;   /* the newest generation that answered */
	uint64_t want_gen;  /* during a restart: the successor's */
	size_t answered;    /* connections answered by want_gen so far */
	uint64_t t_restart; /* ns of the SIGTERM; 0 when no restart is under way */
	bool first_seen;    /* the successor has answered once in this restart */
	bool *round_seen;   /* while a round is timed: each connection answered since its mark */
	size_t round_left;  /* ... and how many are not */
	double *blackout_ms, *first_ms;
	size_t n_blackouts, n_first;
};

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static pid_t start_server(const char *kv_server, const char *luod_socket, int port,
			  bool listen_only)
{
	char port_s[16];
	pid_t pid;

	snprintf(port_s, sizeof(port_s), "%d", port);
	pid = fork();
	if (pid != 0)
		return pid;
	/* Its output would only slow the restarts down. */
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null >= 0 && !getenv("BENCH_CONNS_VERBOSE"))
		dup2(null, STDOUT_FILENO);
	execl(kv_server, kv_server, "--port", port_s, "--socket", luod_socket, "--session",
	      "bench-conns", "--wait", "30", listen_only ? "--no-connections" : NULL, (char *)NULL);
	_exit(127);
}

static int conn_open(struct run *r, struct conn *c)
{
	struct sockaddr_in sa = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)r->port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c };
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->connecting = true;
	c->waiting = false;
	c->in_len = 0;
	c->seen = false;
	c->last_gen = 0;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		int e = -errno;
		close(c->fd);
		c->fd = -1;
		return e;
	}
	if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		return -errno;
	return 0;
}

static void conn_send(struct run *r, struct conn *c)
{
	ssize_t k = send(c->fd, "GEN\n", 4, MSG_NOSIGNAL);

	if (k == 4)
		c->waiting = true;
}

/* The connection ended under us: counted, and opened again. */
static void conn_lost(struct run *r, struct conn *c, bool reset)
{
	if (reset)
		r->resets++;
	if (c->waiting)
		r->failed++;
	epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	if (conn_open(r, c) < 0)
		r->connect_failed++;
}

static void answered_by(struct run *r, struct conn *c, uint64_t gen)
{
	if (r->t_restart && gen >= r->want_gen && !r->first_seen) {
		r->first_seen = true;

		r->first_ms[r->n_first++] = (double)(bench_now_ns() - r->t_restart) / 1e6;
	}
	if (r->t_restart && gen >= r->want_gen && (!c->seen || c->last_gen < r->want_gen)) {
		if (++r->answered == r->n) {
			r->blackout_ms[r->n_blackouts++] =
				(double)(bench_now_ns() - r->t_restart) / 1e6;
			r->t_restart = 0;
		}
	}
	if (r->round_seen && !r->round_seen[c - r->conns]) {
		r->round_seen[c - r->conns] = true;
		r->round_left--;
	}
	c->seen = true;
	c->last_gen = gen;
	r->max_gen = MAX(r->max_gen, gen);
}

static void conn_event(struct run *r, struct conn *c, uint32_t events)
{
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		(void)getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			r->connect_failed++;
			r->failed++;
			epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
			close(c->fd);
			c->fd = -1;
			usleep(1000);
			if (conn_open(r, c) < 0)
				r->connect_failed++;
			return;
		}
		c->connecting = false;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
		epoll_ctl(r->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		conn_send(r, c);
		return;
	}
	for (;;) {
		ssize_t k = recv(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len, 0);
		char *nl;

		if (k == 0) {
			conn_lost(r, c, true);
			return;
		}
		if (k < 0) {
			if (errno == EAGAIN)
				break;
			conn_lost(r, c, true);
			return;
		}
		c->in_len += (size_t)k;
		c->in[c->in_len] = 0;
		while ((nl = memchr(c->in, '\n', c->in_len))) {
			unsigned long long g;

			*nl = 0;
			if (sscanf(c->in, "GEN %llu", &g) == 1) {
				r->requests++;
				answered_by(r, c, g);
			} else
				r->failed++;
			c->waiting = false;
			memmove(c->in, nl + 1, c->in_len - (size_t)(nl + 1 - c->in));
			c->in_len -= (size_t)(nl + 1 - c->in);
		}
		if (c->in_len >= sizeof(c->in) - 1)
			c->in_len = 0; /* junk: drop it */
	}
	if (!c->waiting)
		conn_send(r, c);
}

/* Runs the event loop until t_end (ns). */
static void pump(struct run *r, uint64_t t_end)
{
	struct epoll_event evs[512];

	while (bench_now_ns() < t_end) {
		int n = epoll_wait(r->epfd, evs, ELEMENTSOF(evs), 1);

		for (int i = 0; i < n; i++)
			conn_event(r, evs[i].data.ptr, evs[i].events);
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "connections", required_argument, NULL, 'c' },
		{ "seconds", required_argument, NULL, 's' },
		{ "interval", required_argument, NULL, 'i' },
		{ "listen-only", no_argument, NULL, 'L' },
		{ "kv-server", required_argument, NULL, 'k' },
		{ "luod", required_argument, NULL, 'l' },
		{},
	};
	const char *luod_path = bench_default_luod(), *kv_server = NULL;
	size_t asked = 15000, restarts = 0, unfinished = 0, answered_unfinished = SIZE_MAX;
	double seconds = 30, interval = 1;
	bool listen_only = false;
	struct bench_luod d;
	struct run r = { .epfd = -1 };
	pid_t server;
	long limit;
	int c, status;

	while ((c = getopt_long(argc, argv, "c:s:i:Lk:l:", longopts, NULL)) >= 0) {
		switch (c) {
		case 'c':
			asked = strtoul(optarg, NULL, 10);
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'i':
			interval = atof(optarg);
			break;
		case 'L':
			listen_only = true;
			break;
		case 'k':
			kv_server = optarg;
			break;
		case 'l':
			luod_path = optarg;
			break;
		default:
			return 2;
		}
	}
	if (!kv_server || asked == 0 || seconds <= 0 || interval <= 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	/* This process, kv-server and luod each hold every connection once. */
	limit = bench_raise_fd_limit((long)asked + 256);
	r.n = MIN(asked, (size_t)MAX(limit - 256, 16L));
	r.conns = calloc(r.n, sizeof(*r.conns));
	r.blackout_ms = calloc((size_t)(seconds / interval) + 2, sizeof(double));
	r.first_ms = calloc((size_t)(seconds / interval) + 2, sizeof(double));
	r.epfd = epoll_create1(EPOLL_CLOEXEC);
	r.port = free_port();
	if (!r.conns || !r.blackout_ms || !r.first_ms || r.epfd < 0 || r.port < 0)
		return 1;

	if (bench_luod_start(&d, luod_path, NULL) < 0)
		return 1;
	server = start_server(kv_server, d.socket, r.port, listen_only);
	/* Until it listens: the first connection that gets an answer. */
	for (int i = 0; i < 5000; i++) {
		struct conn probe = { .fd = -1 };

		if (conn_open(&r, &probe) == 0) {
			uint64_t t = bench_now_ns() + 50000000;
			struct epoll_event ev;
			bool up = false;

			while (!up && bench_now_ns() < t && epoll_wait(r.epfd, &ev, 1, 10) >= 0) {
				int err = 0;
				socklen_t len = sizeof(err);
				(void)getsockopt(probe.fd, SOL_SOCKET, SO_ERROR, &err, &len);
				up = err == 0 && (ev.events & EPOLLOUT);
				if (err)
					break;
			}
			epoll_ctl(r.epfd, EPOLL_CTL_DEL, probe.fd, NULL);
			close(probe.fd);
			if (up)
				break;
		}
		usleep(2000);
	}
	bench_log("opening %zu connections (asked %zu, fd limit %ld)", r.n, asked, limit);
	for (size_t i = 0; i < r.n; i++) {
		if (conn_open(&r, &r.conns[i]) < 0)
			r.connect_failed++;
		if (i % 1000 == 999)
			pump(&r, bench_now_ns() + 5000000);
	}
	/* Everyone established and answered once before the clock starts. */
	for (int k = 0; k < 200; k++) {
		size_t seen = 0;

		pump(&r, bench_now_ns() + 100000000ull);
		for (size_t i = 0; i < r.n; i++)
			seen += r.conns[i].seen;
		if (seen == r.n)
			break;
	}
	/*
	 * The round: how long the server, not restarted, takes to answer every
	 * connection once, timed as a blackout is (from a mark to the moment
	 * every connection has had an answer since).  A server that answers
	 * 15,000 busy connections in turn needs that long whatever happens; a
	 * restart's blackout less the round is what the restart itself cost.
	 */
	double round_ms[3];
	size_t n_round = 0;

	for (size_t k = 0; k < ELEMENTSOF(round_ms); k++) {
		uint64_t t0 = bench_now_ns();

		/* A connection is done at its first answer after the mark, as a
		 * connection is at its successor's first answer in a blackout. */
		r.round_seen = calloc(r.n, sizeof(bool));
		if (!r.round_seen)
			return 1;
		r.round_left = r.n;
		while (r.round_left > 0 && bench_now_ns() < t0 + 20000000000ull)
			pump(&r, bench_now_ns() + 1000000);
		if (r.round_left == 0)
			round_ms[n_round++] = (double)(bench_now_ns() - t0) / 1e6;
		free(r.round_seen);
		r.round_seen = NULL;
	}
	r.requests = r.failed = r.resets = r.connect_failed = 0;

	/*
	 * A restart every interval; one that takes longer (the old server has not
	 * exited, or some connection has no answer from the successor yet) is
	 * waited for, at most RESTART_MAX_NS, and the next one follows it.
	 */
	uint64_t t_end = bench_now_ns() + (uint64_t)(seconds * 1e9);
	while (bench_now_ns() < t_end) {
		uint64_t t0 = bench_now_ns(), next = t0 + (uint64_t)(interval * 1e9);
		pid_t succ;

		r.want_gen = r.max_gen + 1;
		r.answered = 0;
		r.first_seen = false;
		r.t_restart = t0;
		kill(server, SIGTERM);
		succ = start_server(kv_server, d.socket, r.port, listen_only);
		restarts++;
		while (bench_now_ns() < next || server > 0 || r.t_restart) {
			if (bench_now_ns() > t0 + RESTART_MAX_NS)
				break;
			/* Past the interval too, while the restart is still under way. */
			pump(&r, bench_now_ns() < next ? MIN(next, bench_now_ns() + 5000000)
						       : bench_now_ns() + 5000000);
			if (server > 0 && waitpid(server, &status, WNOHANG) == server) {
				if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
					bench_log("kv-server %d ended with status %#x", (int)server,
						  status);
				server = -1;
			}
		}
		if (server > 0) {
			bench_log("kv-server %d did not exit in time", (int)server);
			kill(server, SIGKILL);
			waitpid(server, &status, 0);
		}
		if (getenv("BENCH_CONNS_VERBOSE")) {
			size_t seen = 0, newer = 0, waiting = 0, closed = 0;

			for (size_t i = 0; i < r.n; i++) {
				seen += r.conns[i].seen;
				newer += r.conns[i].seen && r.conns[i].last_gen >= r.want_gen;
				waiting += r.conns[i].waiting;
				closed += r.conns[i].fd < 0;
			}
			bench_log("restart to generation %llu: %zu answered, %zu seen, %zu newer, "
				  "%zu waiting, %zu closed",
				  (unsigned long long)r.want_gen, r.answered, seen, newer, waiting,
				  closed);
		}
		if (r.t_restart) {
			/* The successor never answered on every connection. */
			unfinished++;
			answered_unfinished = MIN(answered_unfinished, r.answered);
			r.t_restart = 0;
		}
		server = succ;
	}
	kill(server, SIGTERM);
	waitpid(server, &status, 0);
	for (size_t i = 0; i < r.n; i++)
		if (r.conns[i].fd >= 0)
			close(r.conns[i].fd);
	bench_luod_stop(&d);

	bench_json_begin("conns");
	bench_json_str("mode", listen_only ? "listen-only" : "luo");
	bench_json_int("connections", (int64_t)r.n);
	if (asked != r.n)
		bench_json_int("requested_connections", (int64_t)asked);
	bench_json_int("fd_limit", limit);
	bench_json_num("seconds", seconds);
	bench_json_num("interval", interval);
	bench_json_int("restarts", (int64_t)restarts);
	bench_json_int("restarts_unfinished", (int64_t)unfinished);
	/* Of a restart the successor did not finish answering within the wait,
	 * the fewest connections it had answered. */
	if (unfinished)
		bench_json_int("unfinished_answered_min", (int64_t)answered_unfinished);
	bench_json_num("restart_wait_max_s", (double)RESTART_MAX_NS / 1e9);
	bench_json_int("requests", (int64_t)r.requests);
	bench_json_int("failed", (int64_t)r.failed);
	bench_json_int("resets", (int64_t)r.resets);
	bench_json_int("connect_failed", (int64_t)r.connect_failed);
	bench_json_num("blackout_median_ms",
		       r.n_blackouts ? bench_quantile(r.blackout_ms, r.n_blackouts, 0.5) : NAN);
	bench_json_num("blackout_max_ms",
		       r.n_blackouts ? bench_quantile(r.blackout_ms, r.n_blackouts, 1.0) : NAN);
	/* The dark time: no connection had an answer from anyone. */
	bench_json_num("first_answer_median_ms",
		       r.n_first ? bench_quantile(r.first_ms, r.n_first, 0.5) : NAN);
	bench_json_num("first_answer_max_ms",
		       r.n_first ? bench_quantile(r.first_ms, r.n_first, 1.0) : NAN);
	bench_json_num("round_median_ms", n_round ? bench_quantile(round_ms, n_round, 0.5) : NAN);
	if (n_round && r.n_blackouts)
		bench_json_num("blackout_over_round_median_ms",
			       bench_quantile(r.blackout_ms, r.n_blackouts, 0.5) -
				       bench_quantile(round_ms, n_round, 0.5));
	bench_json_end();
	return 0;
}
