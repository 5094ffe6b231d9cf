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
	  TEST_CASE(random_garbage_on_both_kinds_of_socket))
