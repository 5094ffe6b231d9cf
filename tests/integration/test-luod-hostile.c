/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: malformed and hostile messages
 *
 * One case per kind of bad message or bad behaviour.  Each case checks the
 * reply (or that luod closed the connection), then that luod still serves
 * others and that its fd table is back to what it was: luod never crashes and
 * never keeps an fd it received on an error path.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/socket-util.h"
#include "harness.h"
#include "luod-client.h"

struct fixture {
	struct test_luod d;
	int baseline; /* luod's fds with no client connected */
	int conn;
};

static void setup_args(struct fixture *f, const char *const *args)
{
	test_luod_start(&f->d, args);
	f->baseline = stable_fd_count(&f->d);
	ASSERT_OK(f->baseline);
	f->conn = test_luod_connect(&f->d);
	ASSERT_OK(f->conn);
}

static void setup(struct fixture *f)
{
	setup_args(f, NULL);
}

/* Still serving, nothing leaked, then stop. */
static void check_and_teardown(struct fixture *f)
{
	if (f->conn >= 0)
		close(f->conn);
	ASSERT_EQ(wait_fd_count(&f->d, f->baseline), f->baseline);
	assert_luod_serves(&f->d);
	ASSERT_EQ(wait_fd_count(&f->d, f->baseline), f->baseline);
	test_luod_stop(&f->d);
}

struct msg {
	struct luo_wire_request h;
	uint8_t payload[LUO_WIRE_REQUEST_MAX * 2];
};

static size_t make_msg(struct msg *m, uint32_t op, uint32_t size, size_t payload_len)
{
	memset(m, 0, sizeof(*m));
	m->h.op = op;
	m->h.tag = 99;
	memcpy(m->payload, &size, sizeof(size));
	return sizeof(m->h) + payload_len;
}

static int expect_reply(int sock, const struct msg *m, size_t len, const int *fds, size_t n_fds)
{
	int32_t result;
	int r;

	ASSERT_OK(raw_send(sock, m, len, fds, n_fds));
	r = raw_recv(sock, &result, NULL, 0);
	return r < 0 ? r : result;
}

TEST(empty_message_closes_the_connection)
{
	struct fixture f;
	int32_t result;

	setup(&f);
	ASSERT_OK(raw_send(f.conn, "", 0, NULL, 0));
	ASSERT_ERR(raw_recv(f.conn, &result, NULL, 0), -ECONNRESET);
	check_and_teardown(&f);
}

TEST(short_header_closes_the_connection)
{
	struct fixture f;
	int32_t result;
	int m = cl_memfd("x");

	setup(&f);
	ASSERT_OK(raw_send(f.conn, "abc", 3, &m, 1));
	ASSERT_ERR(raw_recv(f.conn, &result, NULL, 0), -ECONNRESET);
	close(m);
	check_and_teardown(&f);
}

TEST(unknown_op_is_einval)
{
	struct fixture f;
	struct msg m;
	int s;

	setup(&f);
	ASSERT_ERR(expect_reply(f.conn, &m, make_msg(&m, _IO(0xBA, 0x7f), 8, 8), NULL, 0), -EINVAL);
	/* A session command on a connection, and a device command on a session. */
	ASSERT_ERR(expect_reply(f.conn, &m, make_msg(&m, LIVEUPDATE_SESSION_FINISH, 8, 8), NULL, 0),
		   -EINVAL);
	ASSERT_OK(cl_create(f.conn, "s", 0, &s));
	ASSERT_ERR(expect_reply(s, &m, make_msg(&m, LUO_IOCTL_STATUS, 8, 8), NULL, 0), -EINVAL);
	close(s);
	check_and_teardown(&f);
}

TEST(wrong_type_byte_is_enotty)
{
	struct fixture f;
	struct msg m;

	setup(&f);
	ASSERT_ERR(expect_reply(f.conn, &m, make_msg(&m, _IO(0xBB, 0x00), 72, 72), NULL, 0),
		   -ENOTTY);
	/* Size and direction bits are not the kernel's command word either. */
	ASSERT_ERR(expect_reply(f.conn, &m, make_msg(&m, _IOWR(0xBA, 0x00, int), 72, 72), NULL, 0),
		   -ENOTTY);
	check_and_teardown(&f);
}

TEST(size_too_small_is_einval)
{
	struct fixture f;
	struct msg m;

	setup(&f);
	ASSERT_ERR(expect_reply(f.conn, &m, make_msg(&m, LIVEUPDATE_IOCTL_CREATE_SESSION, 71, 71),
				NULL, 0),
		   -EINVAL);
	check_and_teardown(&f);
}

TEST(size_larger_than_payload_is_efault)
{
	struct fixture f;
	struct msg m;

	setup(&f);
	ASSERT_ERR(expect_reply(f.conn, &m, make_msg(&m, LIVEUPDATE_IOCTL_CREATE_SESSION, 72, 16),
				NULL, 0),
		   -EFAULT);
	/* Not even the size field. */
	ASSERT_ERR(expect_reply(f.conn, &m, make_msg(&m, LIVEUPDATE_IOCTL_CREATE_SESSION, 72, 2),
				NULL, 0),
		   -EFAULT);
	check_and_teardown(&f);
}

TEST(nonzero_bytes_past_the_struct_are_e2big)
{
	struct fixture f;
	struct msg m;
	size_t len;

	setup(&f);
	len = make_msg(&m, LIVEUPDATE_IOCTL_CREATE_SESSION, 120, 120);
	memcpy(m.payload + 8, "big", 3);
	m.payload[100] = 1;
	ASSERT_ERR(expect_reply(f.conn, &m, len, NULL, 0), -E2BIG);
	/* Zeros past the struct are fine: a newer client asking for nothing new. */
	m.payload[100] = 0;
	ASSERT_EQ(expect_reply(f.conn, &m, len, NULL, 0), 0); /* raw_recv closed the session fd */
	check_and_teardown(&f);
}

TEST(oversized_message_is_refused)
{
	struct fixture f;
	struct msg m;

	setup(&f);
	ASSERT_ERR(expect_reply(f.conn, &m,
				make_msg(&m, LIVEUPDATE_IOCTL_CREATE_SESSION,
					 LUO_WIRE_REQUEST_MAX + 100, LUO_WIRE_REQUEST_MAX + 100),
				NULL, 0),
		   -EFAULT);
	/* Even when its size field matches what fits in a request. */
	size_t len = make_msg(&m, LIVEUPDATE_IOCTL_CREATE_SESSION, LUO_WIRE_REQUEST_MAX + 1 - 8,
			      LUO_WIRE_REQUEST_MAX + 100);
	memcpy(m.payload + 8, "oversized", 9);
	ASSERT_ERR(expect_reply(f.conn, &m, len, NULL, 0), -EFAULT);
	check_and_teardown(&f);
}

TEST(too_many_fds_is_einval_and_closes_them)
{
	struct fixture f;
	struct msg m;
	int s, fds[3];

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "fds", 0, &s));
	for (int i = 0; i < 3; i++)
		fds[i] = cl_memfd("x");
	make_msg(&m, LIVEUPDATE_SESSION_PRESERVE_FD, 16, 16);
	ASSERT_ERR(expect_reply(s, &m, sizeof(m.h) + 16, fds, 3), -EINVAL);
	/* Nothing was preserved: each file is still free. */
	for (int i = 0; i < 3; i++)
		ASSERT_OK(cl_preserve(s, i, fds[i]));
	close(s);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	check_and_teardown(&f);
}

TEST(fds_on_a_command_that_takes_none_are_einval)
{
	struct fixture f;
	struct msg m;
	int fds[253];

	setup(&f);
	for (int i = 0; i < 253; i++)
		fds[i] = i == 0 ? cl_memfd("x") : dup(fds[0]);
	make_msg(&m, LIVEUPDATE_IOCTL_CREATE_SESSION, 72, 72);
	memcpy(m.payload + 8, "withfds", 7);
	ASSERT_ERR(expect_reply(f.conn, &m, sizeof(m.h) + 72, fds, 1), -EINVAL);
	/* As many as one message can carry. */
	ASSERT_ERR(expect_reply(f.conn, &m, sizeof(m.h) + 72, fds, 253), -EINVAL);
	for (int i = 0; i < 253; i++)
		close(fds[i]);
	check_and_teardown(&f);
}

TEST(missing_fd_is_ebadf)
{
	struct fixture f;
	struct msg m;
	int s;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "nofd", 0, &s));
	ASSERT_ERR(
		expect_reply(s, &m, make_msg(&m, LIVEUPDATE_SESSION_PRESERVE_FD, 16, 16), NULL, 0),
		-EBADF);
	ASSERT_ERR(expect_reply(f.conn, &m, make_msg(&m, LUO_IOCTL_IS_SESSION, 16, 16), NULL, 0),
		   -EBADF);
	close(s);
	check_and_teardown(&f);
}

TEST(junk_on_a_session_fd_is_dropped)
{
	struct fixture f;
	char name[64];
	int s, m = cl_memfd("x");

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "junk", 0, &s));
	ASSERT_OK(raw_send(s, "", 0, NULL, 0));
	ASSERT_OK(raw_send(s, "ab", 2, &m, 1));
	/* The session goes on: a shared session fd is not closed for one bad writer. */
	ASSERT_OK(cl_get_name(s, name));
	ASSERT_STREQ(name, "junk");
	close(s);
	close(m);
	check_and_teardown(&f);
}

TEST(connection_flood_over_the_limit_is_shed)
{
	struct fixture f;
	struct luo_wire_status st;
	enum { LIMIT = 4, FLOOD = 32 };
	int ok[LIMIT], over[FLOOD];

	setup_args(&f, (const char *const[]){ "--max-connections", "4", NULL });
	close(f.conn);
	f.conn = -EBADF;
	for (int i = 0; i < LIMIT; i++) {
		ok[i] = test_luod_connect(&f.d);
		ASSERT_OK(cl_status(ok[i], &st));
	}
	for (int i = 0; i < FLOOD; i++) {
		over[i] = test_luod_connect(&f.d);
		ASSERT_OK(over[i]);
	}
	for (int i = 0; i < FLOOD; i++) {
		/* Refused with EMFILE, the answer to its first request, and hung up. */
		ASSERT_ERR(cl_status(over[i], &st), -EMFILE);
		close(over[i]);
	}
	/* Those within the limit are unaffected. */
	for (int i = 0; i < LIMIT; i++) {
		ASSERT_OK(cl_status(ok[i], &st));
		ASSERT_EQ(st.n_connections, LIMIT);
	}
	for (int i = 0; i < LIMIT; i++)
		close(ok[i]);
	check_and_teardown(&f);
}

TEST(client_dying_before_its_reply)
{
	struct fixture f;
	pid_t pid;
	int status;

	setup(&f);
	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		struct msg m;
		int s = -1, mem = cl_memfd("x");

		if (cl_create(f.conn, "dying", 0, &s) < 0)
			_exit(1);
		make_msg(&m, LIVEUPDATE_SESSION_PRESERVE_FD, 16, 16);
		(void)raw_send(s, &m, sizeof(m.h) + 16, &mem, 1);
		make_msg(&m, LIVEUPDATE_IOCTL_CREATE_SESSION, 72, 72);
		memcpy(m.payload + 8, "orphan", 6);
		(void)raw_send(f.conn, &m, sizeof(m.h) + 72, NULL, 0);
		raise(SIGKILL);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(status));
	check_and_teardown(&f);
}

TEST(client_that_never_reads_does_not_stall_others)
{
	struct fixture f;
	struct msg m;
	int hog, s[64];

	setup(&f);
	for (int i = 0; i < 64; i++) {
		char name[16];
		snprintf(name, sizeof(name), "hog-%d", i);
		ASSERT_OK(cl_create(f.conn, name, 0, &s[i]));
	}
	hog = test_luod_connect(&f.d);
	ASSERT_OK(hog);
	/* Listings it never reads, until its socket is full. */
	make_msg(&m, LUO_IOCTL_LIST, 16, 16);
	for (int i = 0; i < 2000; i++)
		if (send(hog, &m, sizeof(m.h) + 16, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			break;
	assert_luod_serves(&f.d);
	close(hog);
	for (int i = 0; i < 64; i++)
		close(s[i]);
	check_and_teardown(&f);
}

/*
 * Every holder of a session fd shares its socket.  A holder stopped with a
 * reply unread (here: a request sent the old way, answered on the shared
 * socket, and a call of its own in flight) must not hold up the others:
 * their replies come on sockets of their own.
 */
TEST(stopped_holder_of_a_shared_session_fd_does_not_stall_others)
{
	struct fixture f;
	struct msg m;
	char name[64];
	int s, status, ready[2];
	pid_t pid;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "shared", 0, &s));
	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		char n[64];

		close(ready[0]);
		/* The old way: a reply on the shared socket, never read. */
		make_msg(&m, LIVEUPDATE_SESSION_GET_NAME,
			 sizeof(struct liveupdate_session_get_name),
			 sizeof(struct liveupdate_session_get_name));
		if (raw_send(s, &m, sizeof(m.h) + sizeof(struct liveupdate_session_get_name), NULL,
			     0) < 0)
			_exit(1);
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			(void)cl_get_name(s, n);
	}
	close(ready[1]);
	{
		char c;
		ASSERT_EQ(read(ready[0], &c, 1), 1);
	}
	close(ready[0]);
	ASSERT_OK(kill(pid, SIGSTOP));
	ASSERT_EQ(waitpid(pid, &status, WUNTRACED), pid);
	ASSERT_TRUE(WIFSTOPPED(status));
	/* A stalled call ends at this limit with ETIMEDOUT instead of hanging. */
	ASSERT_OK(luo_wire_set_timeout(10000));
	for (int i = 0; i < 200; i++) {
		ASSERT_OK(cl_get_name(s, name));
		ASSERT_STREQ(name, "shared");
	}
	ASSERT_OK(luo_wire_set_timeout(LUO_WIRE_TIMEOUT_DEFAULT_MS));
	ASSERT_OK(kill(pid, SIGKILL));
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	close(s);
	check_and_teardown(&f);
}

/* A request's reply socket gets its reply, and the session socket nothing. */
TEST(reply_socket_takes_the_reply_alone)
{
	struct fixture f;
	struct msg m;
	struct liveupdate_session_get_name g;
	int s, sp[2], mem = cl_memfd("x");
	int32_t result;
	size_t len;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "private", 0, &s));
	ASSERT_OK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp));
	len = make_msg(&m, LIVEUPDATE_SESSION_GET_NAME | LUO_WIRE_OP_REPLY_SOCKET, sizeof(g),
		       sizeof(g));
	ASSERT_OK(raw_send(s, &m, len, &sp[1], 1));
	close(sp[1]);
	ASSERT_OK(raw_recv(sp[0], &result, &g, sizeof(g)));
	ASSERT_EQ(result, 0);
	ASSERT_STREQ((const char *)g.name, "private");
	/* luod closed its end once it had answered. */
	ASSERT_ERR(raw_recv(sp[0], &result, NULL, 0), -ECONNRESET);
	close(sp[0]);
	{
		char c;
		ASSERT_ERR(recv(s, &c, 1, MSG_DONTWAIT), -1);
		ASSERT_EQ(errno, EAGAIN);
	}
	/* A last fd that is no SOCK_SEQPACKET socket is no reply socket: the
	 * request is answered where it came, and its op, bit and all, is no
	 * command (ENOTTY). */
	len = make_msg(&m, LIVEUPDATE_SESSION_FINISH | LUO_WIRE_OP_REPLY_SOCKET,
		       sizeof(struct liveupdate_session_finish),
		       sizeof(struct liveupdate_session_finish));
	ASSERT_OK(raw_send(s, &m, len, &mem, 1));
	ASSERT_OK(raw_recv(s, &result, NULL, 0));
	ASSERT_EQ(result, -ENOTTY);
	close(mem);
	close(s);
	check_and_teardown(&f);
}

/* A retrieved fd comes at the lowest free number, as the kernel's does. */
TEST(retrieved_fd_takes_the_lowest_free_number)
{
	struct fixture f;
	int s, in, mem = cl_memfd("lowest"), hole, got;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "lowest", 0, &s));
	ASSERT_OK(cl_preserve(s, 7, mem));
	ASSERT_OK(cl_handover(s));
	close(s);
	ASSERT_OK(cl_retrieve(f.conn, "lowest", &in));
	hole = dup(0);
	ASSERT_OK(hole);
	close(hole);
	ASSERT_OK(cl_retrieve_fd(in, 7, &got));
	ASSERT_EQ(got, hole);
	ASSERT_TRUE(cl_memfd_has(got, "lowest"));
	close(got);
	close(mem);
	close(in);
	check_and_teardown(&f);
}

static int passrights(int fd)
{
	int v = -1;
	socklen_t len = sizeof(v);

	return getsockopt(fd, SOL_SOCKET, 83 /* SO_PASSRIGHTS */, &v, &len) < 0 ? -errno : v;
}

/* Waits (up to 30 s) until luod lists n sessions; returns the last count. */
static int wait_sessions(int conn, int n)
{
	int k = -1;

	for (int i = 0; i < 3000; i++) {
		k = cl_list_count(conn);
		if (k == n)
			break;
		usleep(10000);
	}
	return k;
}

/*
 * A session must not hold itself open: its own fd in flight in a unix socket
 * preserved in it (or in a chain of sessions) would keep it from its last
 * close forever.  Such a socket is refused (ELOOP), a preserved unix socket
 * takes no fds (EPERM for the sender), and once every program's fd is
 * closed the sessions are gone.
 */
TEST(session_cannot_pin_itself)
{
	struct fixture f;
	char b = 'x';
	int s, t, a[2], c[2], p[2];

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "pin-self", 0, &s));
	ASSERT_OK(cl_create(f.conn, "pin-other", 0, &t));
	ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a));
	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, c));
	ASSERT_OK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p));
	/* Its own fd already in flight in the socket. */
	ASSERT_OK(raw_send(a[1], &b, 1, &s, 1));
	ASSERT_ERR(cl_preserve(s, 1, a[0]), -ELOOP);
	/* A chain: another session's fd in flight, either way round. */
	ASSERT_OK(raw_send(c[1], &b, 1, &t, 1));
	ASSERT_ERR(cl_preserve(s, 2, c[0]), -ELOOP);
	/* Preserved first, then its own fd sent in. */
	ASSERT_OK(cl_preserve(s, 3, p[0]));
	if (passrights(p[0]) >= 0) {
		ASSERT_EQ(passrights(p[0]), 0);
		ASSERT_ERR(raw_send(p[1], &b, 1, &s, 1), -EPERM);
		ASSERT_ERR(raw_send(p[1], &b, 1, &t, 1), -EPERM);
	}
	ASSERT_EQ(cl_list_count(f.conn), 2);
	close(a[0]);
	close(a[1]);
	close(c[0]);
	close(c[1]);
	close(p[0]);
	close(p[1]);
	close(s);
	close(t);
	/* The last close of each: both are gone. */
	ASSERT_EQ(wait_sessions(f.conn, 0), 0);
	check_and_teardown(&f);
}

/* A cheap xorshift: the same garbage on every run, so a failure reproduces. */
static uint32_t next_random(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return (uint32_t)*state;
}

TEST(random_garbage_on_both_kinds_of_socket)
{
	struct fixture f;
	uint64_t seed = 0x6c756f64u;
	struct msg m;
	int s, mem = cl_memfd("x");

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "garbage", 0, &s));
	for (int i = 0; i < 3000; i++) {
		int sock = (i & 1) ? s : f.conn;
		size_t len = sizeof(m.h) + next_random(&seed) % 200;
		uint32_t nr = next_random(&seed) % 0x90, size;
		int fds[3] = { mem, mem, mem };
		size_t n_fds = next_random(&seed) % 4;

		memset(&m, 0, sizeof(m));
		for (size_t k = 0; k < len; k++)
			((uint8_t *)&m)[k] = (uint8_t)next_random(&seed);
		/* Mostly plausible headers, so that the checks past the first are reached. */
		if (next_random(&seed) % 4)
			m.h.op = _IO(0xBA, nr);
		size = (uint32_t)(len - sizeof(m.h));
		if (next_random(&seed) % 3 && len >= sizeof(m.h) + 4)
			memcpy(m.payload, &size, sizeof(size));
		(void)raw_send(sock, &m, len, fds, n_fds);
		/* Drain whatever came back (replies, session fds) without waiting. */
		for (;;) {
			uint8_t buf[LUO_WIRE_REPLY_MAX];
			int rfds[SOCKET_MAX_FDS];
			size_t n_rfds = 0;
			ssize_t n = socket_recv_message(sock, buf, sizeof(buf), rfds,
							SOCKET_MAX_FDS, &n_rfds, MSG_DONTWAIT);
			close_many(rfds, n_rfds);
			if (n <= 0)
				break;
		}
	}
	close(s);
	close(mem);
	check_and_teardown(&f);
}

TEST_MAIN(TEST_CASE(empty_message_closes_the_connection),
	  TEST_CASE(short_header_closes_the_connection), TEST_CASE(unknown_op_is_einval),
	  TEST_CASE(wrong_type_byte_is_enotty), TEST_CASE(size_too_small_is_einval),
	  TEST_CASE(size_larger_than_payload_is_efault),
	  TEST_CASE(nonzero_bytes_past_the_struct_are_e2big),
	  TEST_CASE(oversized_message_is_refused),
	  TEST_CASE(too_many_fds_is_einval_and_closes_them),
	  TEST_CASE(fds_on_a_command_that_takes_none_are_einval), TEST_CASE(missing_fd_is_ebadf),
	  TEST_CASE(junk_on_a_session_fd_is_dropped),
	  TEST_CASE(connection_flood_over_the_limit_is_shed),
	  TEST_CASE(client_dying_before_its_reply),
	  TEST_CASE(client_that_never_reads_does_not_stall_others),
	  TEST_CASE(stopped_holder_of_a_shared_session_fd_does_not_stall_others),
	  TEST_CASE(reply_socket_takes_the_reply_alone),
	  TEST_CASE(retrieved_fd_takes_the_lowest_free_number),
	  TEST_CASE(session_cannot_pin_itself), TEST_CASE(random_garbage_on_both_kinds_of_socket))
