/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the example key-value server restarting through a real luod
 *
 * Each case starts luod on a socket in its temporary directory, runs the
 * build's kv-server (port 0, so cases never collide) and drives it with the
 * build's kv-client or a raw TCP socket.  The server writes a ready file
 * ("pid port http_port keys fresh|restored ready_ns startup_ms generation
 * connections"); the cases read it to learn the port and how the server
 * started.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "harness.h"
#include "luod-test.h"

#define SESSION "kv-test"

struct kvs {
	pid_t pid;
	int port;
	int http_port;
	unsigned long long keys;
	char how[16];
	unsigned long long generation;
	unsigned long conns;
	char ready[300];
};

static char server_bin[512], client_bin[512];

static void find_binaries(void)
{
	test_build_path("examples/kv-server", server_bin, sizeof(server_bin));
	test_build_path("examples/kv-client", client_bin, sizeof(client_bin));
	if (access(server_bin, X_OK) < 0 || access(client_bin, X_OK) < 0)
		test_fail_at(__FILE__, __LINE__, "kv-server or kv-client not built");
}

/* Spawns argv with stdout and stderr going to the TAP log's diagnostics (stderr). */
static pid_t spawn(const char *const *argv, const char *stdout_file)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		test_fail_at(__FILE__, __LINE__, "fork: %m");
	if (pid == 0) {
		if (stdout_file) {
			int fd = open(stdout_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0)
				_exit(127);
		} else {
			dup2(STDERR_FILENO, STDOUT_FILENO);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Waits until the ready file appears, or fails if the server exits first. */
static void wait_ready(struct kvs *s)
{
	for (int i = 0; i < 2000; i++) {
		FILE *f = fopen(s->ready, "re");
		int status, pid;

		if (f) {
			int n = fscanf(f, "%d %d %d %llu %15s %*d %*f %llu %lu", &pid, &s->port,
				       &s->http_port, &s->keys, s->how, &s->generation, &s->conns);
			fclose(f);
			if (n != 7)
				test_fail_at(__FILE__, __LINE__, "bad ready file (%d fields)", n);
			ASSERT_EQ(pid, s->pid);
			return;
		}
		if (waitpid(s->pid, &status, WNOHANG) == s->pid)
			test_fail_at(__FILE__, __LINE__,
				     "kv-server exited during start (status 0x%x)", status);
		usleep(5000);
	}
	test_fail_at(__FILE__, __LINE__, "kv-server did not become ready");
}

static void server_start(struct kvs *s, const struct test_luod *d, const char *const *extra)
{
	const char *argv[32] = { server_bin, "--socket", d->socket, "--session",
				 SESSION,    "--port",	 "0",	    "--ready-file" };
	size_t n = 8;

	snprintf(s->ready, sizeof(s->ready), "%s/ready", d->dir);
	unlink(s->ready);
	argv[n++] = s->ready;
	for (size_t i = 0; extra && extra[i] && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	s->pid = spawn(argv, NULL);
	wait_ready(s);
}

/* SIGTERM: the server hands its session over and must exit 0. */
static void server_stop(struct kvs *s)
{
	int status;

	ASSERT_OK(kill(s->pid, SIGTERM));
	ASSERT_EQ(waitpid(s->pid, &status, 0), s->pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		test_fail_at(__FILE__, __LINE__, "kv-server ended with status 0x%x", status);
	s->pid = 0;
}

static void server_kill(struct kvs *s)
{
	int status;

	ASSERT_OK(kill(s->pid, SIGKILL));
	ASSERT_EQ(waitpid(s->pid, &status, 0), s->pid);
	s->pid = 0;
}

/* Runs kv-client against port with the given words; returns its exit status. */
static int client(int port, const char *const *words)
{
	char p[16];
	const char *argv[32] = { client_bin, "--port", p };
	size_t n = 3;

	snprintf(p, sizeof(p), "%d", port);
	for (size_t i = 0; words[i] && n < 31; i++)
		argv[n++] = words[i];
	argv[n] = NULL;
	return test_run_command(argv);
}

static int tcp_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { .tv_sec = 10 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ASSERT_OK(fd);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_OK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_OK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	return fd;
}

static void send_str(int fd, const char *s)
{
	ASSERT_EQ(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Reads exactly strlen(want) bytes and compares them. */
static void expect_reply(int fd, const char *want)
{
	char buf[512];
	size_t n = strlen(want), got = 0;

	ASSERT_TRUE(n < sizeof(buf));
	while (got < n) {
		ssize_t k = recv(fd, buf + got, n - got, 0);
		if (k <= 0)
			test_fail_at(__FILE__, __LINE__, "connection ended after \"%.*s\" (%s)",
				     (int)got, buf, k < 0 ? strerror(errno) : "EOF");
		got += (size_t)k;
	}
	buf[n] = 0;
	ASSERT_STREQ(buf, want);
}

/*
 * Waits (a minute at most) until the server has n connections besides the
 * one asking (its STATS line): a client spawned a moment ago may not have
 * connected yet on a busy machine.
 */
static void wait_connections(int port, size_t n)
{
	for (int i = 0; i < 6000; i++) {
		char buf[512] = { 0 };
		const char *p;
		size_t got = 0;
		int fd = tcp_connect(port);

		send_str(fd, "STATS\n");
		while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
			ssize_t k = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
			if (k <= 0)
				break;
			got += (size_t)k;
		}
		close(fd);
		p = strstr(buf, "connections=");
		if (p && strtoul(p + strlen("connections="), NULL, 10) >= n + 1)
			return;
		usleep(10000);
	}
	test_fail_at(__FILE__, __LINE__, "the server never had %zu connections", n);
}

static const char *const load_args[] = { "--keys", "3000", "--size", "4096", NULL };

static void load(int port)
{
	const char *w[] = { "load", load_args[0], load_args[1], load_args[2], load_args[3], NULL };

	ASSERT_EQ(client(port, w), 0);
}

static int verify(int port)
{
	const char *w[] = {
		"verify", load_args[0], load_args[1], load_args[2], load_args[3], NULL
	};

	return client(port, w);
}

TEST(restart_with_handover_keeps_every_key_and_the_port)
{
	/* 1 MiB initial store, 12 MiB of data: the memfd grows before the handover. */
	const char *const cap[] = { "--capacity", "1M", NULL };
	struct test_luod d;
	struct kvs a, b, c;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, cap);
	ASSERT_STREQ(a.how, "fresh");
	ASSERT_EQ(a.keys, 0);
	load(a.port);
	ASSERT_EQ(verify(a.port), 0);
	server_stop(&a);

	server_start(&b, &d, cap);
	ASSERT_STREQ(b.how, "restored");
	ASSERT_EQ(b.port, a.port);
	ASSERT_EQ(b.keys, 3000);
	ASSERT_EQ(b.generation, 1);
	ASSERT_EQ(verify(b.port), 0);
	server_stop(&b);

	/* And again: the session created by a restored server hands over as well. */
	server_start(&c, &d, cap);
	ASSERT_STREQ(c.how, "restored");
	ASSERT_EQ(c.port, a.port);
	ASSERT_EQ(c.generation, 2);
	ASSERT_EQ(verify(c.port), 0);
	server_stop(&c);
	test_luod_stop(&d);
}

TEST(verification_fails_when_data_differs)
{
	/* The checks above mean something only if kv-client can say no. */
	const char *w[] = { "verify", "--keys", "3000", "--size", "4096", "--seed", "2", NULL };
	struct test_luod d;
	struct kvs a;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	load(a.port);
	ASSERT_EQ(client(a.port, w), 1);
	server_stop(&a);
	test_luod_stop(&d);
}

TEST(sigkill_with_handover_on_close_leaves_every_key_to_the_successor)
{
	struct test_luod d;
	struct kvs a, b;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	load(a.port);
	server_kill(&a);

	/* No handover was asked for: luod hands the session over when the dead owner's fd closes. */
	server_start(&b, &d, NULL);
	ASSERT_STREQ(b.how, "restored");
	ASSERT_EQ(b.port, a.port);
	ASSERT_EQ(b.keys, 3000);
	ASSERT_EQ(verify(b.port), 0);
	server_stop(&b);
	test_luod_stop(&d);
}

TEST(open_connections_survive_a_restart_with_their_buffered_requests)
{
	struct test_luod d;
	struct kvs a, b;
	int fd;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	fd = tcp_connect(a.port);
	send_str(fd, "SET greeting hello world\n");
	expect_reply(fd, "OK\n");

	server_stop(&a);
	/* Sent while no server runs: it waits in the socket for the successor. */
	send_str(fd, "GET greeting\n");
	server_start(&b, &d, NULL);
	ASSERT_EQ(b.conns, 1);
	expect_reply(fd, "VALUE 11\nhello world\n");
	send_str(fd, "COUNT\n");
	expect_reply(fd, "COUNT 1\n");
	close(fd);
	server_stop(&b);
	test_luod_stop(&d);
}

/* More connections than one batch message carries (252), across several
 * restarts: every one stays open, and each request cut in half by a restart
 * (its first half in the server's parser, its second sent after) is answered
 * by the successor. */
TEST(hundreds_of_connections_survive_restarts_with_their_parser_state)
{
	enum { N = 300, RESTARTS = 3 };
	struct test_luod d;
	struct kvs a;
	int fds[N];
	char want[64];

	find_binaries();
	test_need_fds(4 * N);
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	for (int i = 0; i < N; i++) {
		fds[i] = tcp_connect(a.port);
		send_str(fds[i], "GEN\n");
	}
	snprintf(want, sizeof(want), "GEN %llu\n", a.generation);
	for (int i = 0; i < N; i++)
		expect_reply(fds[i], want);
	for (int k = 0; k < RESTARTS; k++) {
		for (int i = 0; i < N; i++)
			send_str(fds[i], "GE");
		server_stop(&a);
		server_start(&a, &d, NULL);
		ASSERT_EQ(a.conns, N);
		snprintf(want, sizeof(want), "GEN %llu\n", a.generation);
		for (int i = 0; i < N; i++) {
			send_str(fds[i], "N\n");
			expect_reply(fds[i], want);
		}
	}
	for (int i = 0; i < N; i++)
		close(fds[i]);
	server_stop(&a);
	test_luod_stop(&d);
}

TEST(a_request_cut_in_half_by_a_restart_is_completed_by_the_successor)
{
	struct test_luod d;
	struct kvs a, b;
	int fd;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	fd = tcp_connect(a.port);
	/*
	 * Half a request after a whole one, in one segment: once PONG is back the
	 * server has read the half too and holds it in its input buffer.
	 */
	send_str(fd, "PING\nSET partial va");
	expect_reply(fd, "PONG\n");
	server_stop(&a);
	send_str(fd, "lue\nGET partial\n");
	server_start(&b, &d, NULL);
	ASSERT_EQ(b.conns, 1);
	expect_reply(fd, "OK\nVALUE 5\nvalue\n");
	close(fd);
	server_stop(&b);
	test_luod_stop(&d);
}

/*
 * Input is parsed in the server's one read buffer and only a partial request
 * is kept per connection: requests that arrive byte by byte, several in one
 * segment, or a half of one after whole ones are all answered, in order, on
 * each of many connections at once.
 */
TEST(requests_in_pieces_and_in_bursts_are_answered_in_order)
{
	static const char burst[] = "SET a 1\nSET b 22\nGET a\nGET b\nPING\n";
	static const char reply[] = "OK\nOK\nVALUE 1\n1\nVALUE 2\n22\nPONG\n";
	struct test_luod d;
	struct kvs a;
	int fds[20];

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		fds[i] = tcp_connect(a.port);
	/* Byte by byte, each byte its own segment, interleaved over the connections. */
	for (const char *p = "SET piece value\nGET piece\n"; *p; p++)
		for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
			char one[2] = { *p, 0 };

			send_str(fds[i], one);
		}
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		expect_reply(fds[i], "OK\nVALUE 5\nvalue\n");
	/* Five requests in one segment, then a burst ending in half a request. */
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		send_str(fds[i], burst);
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		expect_reply(fds[i], reply);
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		send_str(fds[i], "PING\nGET pie");
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		expect_reply(fds[i], "PONG\n");
	for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
		send_str(fds[i], "ce\n");
		expect_reply(fds[i], "VALUE 5\nvalue\n");
		close(fds[i]);
	}
	server_stop(&a);
	test_luod_stop(&d);
}

TEST(values_of_several_mib_load_and_survive_a_restart)
{
	const char *w_load[] = { "--keys", "6", "--size", "3M", "load", NULL };
	const char *w_verify[] = { "--keys", "6", "--size", "3M", "verify", NULL };
	struct test_luod d;
	struct kvs a, b;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	ASSERT_EQ(client(a.port, w_load), 0);
	server_stop(&a);
	server_start(&b, &d, NULL);
	ASSERT_EQ(b.keys, 6);
	ASSERT_EQ(client(b.port, w_verify), 0);
	server_stop(&b);
	test_luod_stop(&d);
}

/* Starts kv-server without luo; extra options after --no-luo. */
static void plain_start(struct kvs *s, const char *dir, const char *const *extra)
{
	const char *argv[32] = { server_bin, "--no-luo", "--port", "0", "--ready-file" };
	size_t n = 5;

	snprintf(s->ready, sizeof(s->ready), "%s/ready", dir);
	unlink(s->ready);
	argv[n++] = s->ready;
	for (size_t i = 0; extra && extra[i] && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	s->pid = spawn(argv, NULL);
	wait_ready(s);
}

TEST(without_luo_a_restart_starts_empty_and_a_snapshot_brings_the_data_back)
{
	char snap[300], port[16];
	const char *snap_args[] = { "--snapshot", snap, "--port", port, NULL };
	struct kvs a, b, c, e;

	find_binaries();
	snprintf(snap, sizeof(snap), "%s/kv.snapshot", test_tmpdir());
	/* Plain stop and start: the comparison the benchmarks make. */
	plain_start(&a, test_tmpdir(), NULL);
	load(a.port);
	server_stop(&a);
	snprintf(port, sizeof(port), "%d", a.port);
	{
		const char *again[] = { "--port", port, NULL };
		plain_start(&e, test_tmpdir(), again);
	}
	ASSERT_STREQ(e.how, "fresh");
	ASSERT_EQ(e.keys, 0);
	ASSERT_EQ(verify(e.port), 1);
	server_stop(&e);

	/* With a snapshot file: written at SIGTERM, read at start. */
	plain_start(&b, test_tmpdir(), snap_args);
	ASSERT_STREQ(b.how, "fresh");
	load(b.port);
	server_stop(&b);
	ASSERT_OK(access(snap, R_OK));
	plain_start(&c, test_tmpdir(), snap_args);
	ASSERT_STREQ(c.how, "restored");
	ASSERT_EQ(c.keys, 3000);
	ASSERT_EQ(verify(c.port), 0);
	server_stop(&c);
}

TEST(new_connections_wait_in_the_backlog_during_a_restart)
{
	struct test_luod d;
	struct kvs a, b;
	int fd;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	server_stop(&a);
	/* luod holds the listening socket: connect() completes in the kernel's backlog. */
	fd = tcp_connect(a.port);
	send_str(fd, "PING\n");
	server_start(&b, &d, NULL);
	expect_reply(fd, "PONG\n");
	close(fd);
	server_stop(&b);
	test_luod_stop(&d);
}

TEST(requests_during_restarts_all_succeed)
{
	struct test_luod d;
	struct kvs s;
	char port[16], out[300], summary[4096];
	const char *hammer[] = { client_bin, "--port",	port, "--keys", "3000", "--size",
				 "4096",     "--conns", "4",  "hammer", NULL };
	pid_t h;
	int status;
	FILE *f;
	size_t n;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&s, &d, NULL);
	load(s.port);
	snprintf(port, sizeof(port), "%d", s.port);
	snprintf(out, sizeof(out), "%s/hammer.out", d.dir);
	h = spawn(hammer, out);
	wait_connections(s.port, 4);
	for (int i = 0; i < 4; i++) {
		server_stop(&s);
		server_start(&s, &d, NULL);
		ASSERT_STREQ(s.how, "restored");
		usleep(150 * 1000);
	}
	ASSERT_OK(kill(h, SIGINT));
	ASSERT_EQ(waitpid(h, &status, 0), h);
	f = fopen(out, "re");
	ASSERT_TRUE(f);
	n = fread(summary, 1, sizeof(summary) - 1, f);
	fclose(f);
	summary[n] = 0;
	/* kv-client exits 1 on any failed request, wrong answer or lost write. */
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	ASSERT_TRUE(strstr(summary, " 0 failures,"));
	ASSERT_TRUE(strstr(summary, " 0 of them lost"));
	/* Some requests must have been made, or the check above proves nothing. */
	ASSERT_FALSE(strstr(summary, "hammer: 0 requests"));
	for (char *line = strtok(summary, "\n"); line; line = strtok(NULL, "\n"))
		test_diag("%s", line);
	ASSERT_EQ(verify(s.port), 0);
	server_stop(&s);
	test_luod_stop(&d);
}

TEST(http_endpoint_keeps_alive_and_serves_get_and_ping)
{
	const char *const http[] = { "--http-port", "0", NULL };
	struct test_luod d;
	struct kvs a, b;
	int fd, line;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, http);
	ASSERT_TRUE(a.http_port > 0);
	line = tcp_connect(a.port);
	send_str(line, "SET k%2F1 v\n");
	expect_reply(line, "OK\n");
	close(line);

	fd = tcp_connect(a.http_port);
	send_str(fd, "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
	expect_reply(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
			 "PONG\n");
	/* Same connection, a URL-encoded key, then a missing one. */
	send_str(fd, "GET /get?key=k%252F1 HTTP/1.1\r\nHost: x\r\n\r\n");
	expect_reply(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\n"
			 "v");
	send_str(fd, "GET /get?key=none HTTP/1.1\r\nHost: x\r\n\r\n");
	expect_reply(fd, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
			 "Content-Length: 10\r\n\r\nnot found\n");

	/* The HTTP port and this keep-alive connection survive a restart too. */
	server_stop(&a);
	server_start(&b, &d, NULL);
	ASSERT_EQ(b.http_port, a.http_port);
	send_str(fd, "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	expect_reply(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
			 "Connection: close\r\n\r\nPONG\n");
	close(fd);
	server_stop(&b);
	test_luod_stop(&d);
}

static int luoctl(const struct test_luod *d, const char *cmd)
{
	char bin[512];
	const char *argv[] = { bin, "--socket", d->socket, cmd, NULL };

	test_build_path("src/cli/luoctl", bin, sizeof(bin));
	return test_run_command(argv);
}

TEST(luod_live_updates_under_load_lose_no_request_and_the_server_still_hands_over)
{
	struct test_luod d;
	struct kvs s;
	char port[16], out[300];
	const char *hammer[] = { client_bin, "--port",	port, "--keys", "3000", "--size",
				 "4096",     "--conns", "2",  "hammer", NULL };
	pid_t h;
	int status;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&s, &d, NULL);
	load(s.port);
	snprintf(port, sizeof(port), "%d", s.port);
	snprintf(out, sizeof(out), "%s/hammer.out", d.dir);
	h = spawn(hammer, out);
	wait_connections(s.port, 2);
	ASSERT_EQ(luoctl(&d, "update"), 0);
	ASSERT_EQ(luoctl(&d, "update"), 0);
	/* The session fd the server got before the updates still works. */
	server_stop(&s);
	server_start(&s, &d, NULL);
	ASSERT_STREQ(s.how, "restored");
	ASSERT_EQ(s.conns, 2);
	usleep(100 * 1000);
	ASSERT_OK(kill(h, SIGINT));
	ASSERT_EQ(waitpid(h, &status, 0), h);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	ASSERT_EQ(verify(s.port), 0);
	server_stop(&s);
	test_luod_stop(&d);
}

TEST(after_a_reboot_the_successor_still_finds_every_key)
{
	struct test_luod d;
	struct kvs a, b;

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	load(a.port);
	/*
	 * The simulated kexec carries the open session into the next generation;
	 * the server's own handover then gets ESTALE and it still exits 0.
	 */
	ASSERT_EQ(luoctl(&d, "reboot"), 0);
	server_stop(&a);
	server_start(&b, &d, NULL);
	ASSERT_STREQ(b.how, "restored");
	ASSERT_EQ(b.port, a.port);
	ASSERT_EQ(verify(b.port), 0);
	server_stop(&b);
	test_luod_stop(&d);
}

TEST(a_second_server_with_the_same_session_name_refuses_to_start)
{
	struct test_luod d;
	struct kvs a;
	char ready[300];
	const char *argv[] = { server_bin, "--socket", d.socket,       "--session", SESSION,
			       "--port",   "0",	       "--ready-file", ready,	    NULL };

	find_binaries();
	test_luod_start(&d, NULL);
	server_start(&a, &d, NULL);
	snprintf(ready, sizeof(ready), "%s/ready2", d.dir);
	/* Its session create fails with EEXIST: it must exit non-zero, not steal or serve. */
	ASSERT_EQ(test_run_command(argv), 1);
	ASSERT_EQ(access(ready, F_OK), -1);
	server_stop(&a);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(restart_with_handover_keeps_every_key_and_the_port),
	  TEST_CASE(verification_fails_when_data_differs),
	  TEST_CASE(sigkill_with_handover_on_close_leaves_every_key_to_the_successor),
	  TEST_CASE(open_connections_survive_a_restart_with_their_buffered_requests),
	  TEST_CASE(hundreds_of_connections_survive_restarts_with_their_parser_state),
	  TEST_CASE(a_request_cut_in_half_by_a_restart_is_completed_by_the_successor),
	  TEST_CASE(requests_in_pieces_and_in_bursts_are_answered_in_order),
	  TEST_CASE(values_of_several_mib_load_and_survive_a_restart),
	  TEST_CASE(without_luo_a_restart_starts_empty_and_a_snapshot_brings_the_data_back),
	  TEST_CASE(new_connections_wait_in_the_backlog_during_a_restart),
	  TEST_CASE(requests_during_restarts_all_succeed),
	  TEST_CASE(http_endpoint_keeps_alive_and_serves_get_and_ping),
	  TEST_CASE(luod_live_updates_under_load_lose_no_request_and_the_server_still_hands_over),
	  TEST_CASE(after_a_reboot_the_successor_still_finds_every_key),
	  TEST_CASE(a_second_server_with_the_same_session_name_refuses_to_start))
