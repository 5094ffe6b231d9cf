/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: a program's restart through luo, and its owner dying
 *
 * Real processes against a real luod: a server holding a memfd with data and
 * a listening TCP socket hands its session over and exits, and its successor
 * gets the same bytes and accepts, on the same port, the connection that
 * waited in the backlog meanwhile.  An owner killed with SIGKILL loses its
 * session, unless the session was created handover-on-close, in which case
 * it waits, with every file, for the successor.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli-test.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-test.h"

#define DATA_SIZE (1u << 20)

static struct cli_out o;

/* Polls luoctl show until the session reaches want (exit code), or gives up. */
static void wait_show(const char *kind_opt, const char *name, int want)
{
	for (int i = 0; i < 500; i++) {
		LUOCTL(&o, "show", kind_opt, name);
		if (o.status == want)
			return;
		usleep(10000);
	}
	test_fail_at(__FILE__, __LINE__, "show %s %s never gave %d (last %d)", kind_opt, name, want,
		     o.status);
}

struct server_args {
	struct cli_sync ready; /* child -> parent */
	int port_pipe[2];
	const char *name;
	uint64_t flags;
	uint32_t seed;
};

static int tcp_listen_any_port(uint16_t *ret_port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -errno;
	*ret_port = ntohs(sa.sin_port);
	return fd;
}

static int tcp_connect(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* The first server: preserves its data and listening socket, hands them over, exits. */
static int old_server(void *arg)
{
	struct server_args *a = arg;
	uint16_t port = 0;
	int luo, s, m, l;

	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, a->name, 0, &s));
	m = ASSERT_OK(cli_memfd_with_pattern(DATA_SIZE, a->seed));
	l = ASSERT_OK(tcp_listen_any_port(&port));
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	ASSERT_OK(luo_session_preserve_fd(s, 2, l));
	ASSERT_EQ(write(a->port_pipe[1], &port, sizeof(port)), (ssize_t)sizeof(port));
	ASSERT_OK(luo_session_handover(s));
	/* After the handover the old fd refers to a session that moved on. */
	ASSERT_ERR(luo_session_preserve_fd(s, 3, m), -ESTALE);
	return 0;
}

/* The successor: retrieves everything, checks the bytes, serves the waiting client. */
static int new_server(void *arg)
{
	struct server_args *a = arg;
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	uint16_t port;
	char buf[8] = {};
	int luo, s, m, l, c;

	ASSERT_EQ(read(a->port_pipe[0], &port, sizeof(port)), (ssize_t)sizeof(port));
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_retrieve(luo, a->name, &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &m));
	ASSERT_OK(luo_session_retrieve_fd(s, 2, &l));
	ASSERT_TRUE(cli_fd_has_pattern(m, DATA_SIZE, a->seed));
	ASSERT_OK(getsockname(l, (struct sockaddr *)&sa, &len));
	ASSERT_EQ(ntohs(sa.sin_port), port);
	ASSERT_OK(luo_session_finish(s));
	close(s);
	/* The client that connected while no process held the socket. */
	c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	ASSERT_OK(c);
	ASSERT_EQ(read(c, buf, 4), 4);
	ASSERT_MEMEQ(buf, "ping", 4);
	ASSERT_EQ(write(c, "pong", 4), 4);
	close(c);
	/* And the socket keeps accepting new ones. */
	cli_sync_post(&a->ready);
	c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	ASSERT_OK(c);
	ASSERT_EQ(read(c, buf, 5), 5);
	ASSERT_MEMEQ(buf, "again", 5);
	close(c);
	return 0;
}

TEST(handover_restart_keeps_memfd_bytes_and_tcp_port)
{
	struct test_luod d;
	struct server_args a = { .name = "kv server", .seed = 42 };
	uint16_t port;
	char buf[8] = {};
	int c, c2;

	test_luod_start(&d, NULL);
	cli_sync_init(&a.ready);
	ASSERT_OK(pipe2(a.port_pipe, O_CLOEXEC));
	ASSERT_EQ(cli_wait(cli_spawn(old_server, &a)), 0);
	ASSERT_EQ(read(a.port_pipe[0], &port, sizeof(port)), (ssize_t)sizeof(port));

	/* Between the two processes the session waits, incoming, with both files. */
	LUOCTL(&o, "show", "--incoming", "kv server");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "state:    waiting") != NULL);
	ASSERT_TRUE(strstr(o.out, "files:    2") != NULL);

	/* No process holds the listening socket now, yet connecting works. */
	c = ASSERT_OK(tcp_connect(port));
	ASSERT_EQ(write(c, "ping", 4), 4);

	ASSERT_EQ(write(a.port_pipe[1], &port, sizeof(port)), (ssize_t)sizeof(port));
	pid_t pid = cli_spawn(new_server, &a);
	ASSERT_EQ(read(c, buf, 4), 4);
	ASSERT_MEMEQ(buf, "pong", 4);
	ASSERT_TRUE(cli_sync_wait(&a.ready, 10000));
	c2 = ASSERT_OK(tcp_connect(port));
	ASSERT_EQ(write(c2, "again", 5), 5);
	ASSERT_EQ(cli_wait(pid), 0);
	close(c);
	close(c2);

	/* Finished and closed: the name is gone. */
	wait_show("--incoming", "kv server", 4);
	cli_sync_close(&a.ready);
	close(a.port_pipe[0]);
	close(a.port_pipe[1]);
	test_luod_stop(&d);
}

struct owner_args {
	struct cli_sync ready;
	uint64_t flags;
};

/* Creates "owned" with a memfd, an eventfd (counter 5) and a pipe holding
 * bytes, says so, and waits to be killed. */
static int owner(void *arg)
{
	struct owner_args *a = arg;
	int luo, s, m, e, p[2];

	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "owned", a->flags, &s));
	m = ASSERT_OK(cli_memfd_with_pattern(DATA_SIZE, 9));
	e = ASSERT_OK(eventfd(5, EFD_CLOEXEC));
	ASSERT_OK(pipe2(p, O_CLOEXEC));
	ASSERT_EQ(write(p[1], "buffered", 8), 8);
	ASSERT_OK(luo_session_preserve_fd(s, 10, m));
	ASSERT_OK(luo_session_preserve_fd(s, 20, e));
	ASSERT_OK(luo_session_preserve_fd(s, 30, p[0]));
	cli_sync_post(&a->ready);
	for (;;)
		pause();
}

TEST(sigkill_owner_loses_its_session)
{
	struct test_luod d;
	struct owner_args a = { .flags = 0 };
	int luo, s;
	pid_t pid;

	test_luod_start(&d, NULL);
	cli_sync_init(&a.ready);
	pid = cli_spawn(owner, &a);
	ASSERT_TRUE(cli_sync_wait(&a.ready, 10000));
	LUOCTL(&o, "show", "--outgoing", "owned");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "files:    3") != NULL);

	ASSERT_OK(kill(pid, SIGKILL));
	ASSERT_EQ(cli_wait(pid), 128 + SIGKILL);
	/* Aborted: gone from both namespaces, nothing to retrieve, name free again. */
	wait_show("--outgoing", "owned", 4);
	LUOCTL(&o, "show", "owned");
	ASSERT_EQ(o.status, 4);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_ERR(luo_session_retrieve(luo, "owned", &s), -ENOENT);
	ASSERT_OK(luo_session_create(luo, "owned", 0, &s));
	LUOCTL(&o, "--json", "status");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "\"files\":0,") != NULL);
	close(s);
	close(luo);
	cli_sync_close(&a.ready);
	test_luod_stop(&d);
}

static int successor(void *arg)
{
	char buf[16] = {};
	uint64_t v = 0;
	int luo, s, m, e, p;

	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_retrieve(luo, "owned", &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 10, &m));
	ASSERT_OK(luo_session_retrieve_fd(s, 20, &e));
	ASSERT_OK(luo_session_retrieve_fd(s, 30, &p));
	ASSERT_TRUE(cli_fd_has_pattern(m, DATA_SIZE, 9));
	ASSERT_EQ(read(e, &v, sizeof(v)), (ssize_t)sizeof(v));
	ASSERT_EQ(v, 5);
	ASSERT_EQ(read(p, buf, sizeof(buf)), 8);
	ASSERT_MEMEQ(buf, "buffered", 8);
	ASSERT_OK(luo_session_finish(s));
	return 0;
}

TEST(sigkill_owner_with_handover_on_close_leaves_session_for_successor)
{
	struct test_luod d;
	struct owner_args a = { .flags = LUO_SESSION_HANDOVER_ON_CLOSE };
	pid_t pid;

	cli_need_jq();
	test_luod_start(&d, NULL);
	cli_sync_init(&a.ready);
	pid = cli_spawn(owner, &a);
	ASSERT_TRUE(cli_sync_wait(&a.ready, 10000));
	LUOCTL(&o, "list");
	ASSERT_TRUE(strstr(o.out, "handover-on-close") != NULL);
	ASSERT_OK(kill(pid, SIGKILL));
	ASSERT_EQ(cli_wait(pid), 128 + SIGKILL);

	wait_show("--incoming", "owned", 0);
	LUOCTL(&o, "--json", "show", "owned");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".sessions | length == 1");
	ASSERT_JQ(o.out, ".sessions[0].kind == \"incoming\" and .sessions[0].state == \"waiting\"");
	ASSERT_JQ(o.out, "[.sessions[0].file_list[].token] == [10, 20, 30]");

	ASSERT_EQ(cli_wait(cli_spawn(successor, NULL)), 0);
	wait_show("--incoming", "owned", 4);
	cli_sync_close(&a.ready);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(handover_restart_keeps_memfd_bytes_and_tcp_port),
	  TEST_CASE(sigkill_owner_loses_its_session),
	  TEST_CASE(sigkill_owner_with_handover_on_close_leaves_session_for_successor))
