/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: every device and session command of luod over its real socket
 *
 * One case per rule: each command's success and its kernel errnos, plus
 * luod's extensions (handover, device slot, status, listings, is-session),
 * against a real luod with the raw protocol.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "luod-client.h"

struct fixture {
	struct test_luod d;
	int conn;
};

static void setup(struct fixture *f)
{
	test_luod_start(&f->d, NULL);
	f->conn = test_luod_connect(&f->d);
	ASSERT_OK(f->conn);
}

static void teardown(struct fixture *f)
{
	close(f->conn);
	test_luod_stop(&f->d);
}

/* An incoming session named name holding one memfd with text under token 1. */
static int make_incoming(struct fixture *f, const char *name, const char *text)
{
	int s, m = cl_memfd(text);

	ASSERT_OK(m);
	ASSERT_OK(cl_create(f->conn, name, 0, &s));
	ASSERT_OK(cl_preserve(s, 1, m));
	ASSERT_OK(cl_handover(s));
	close(m);
	return s; /* stale now; the caller closes it */
}

TEST(create_gives_cloexec_session_fd)
{
	struct fixture f;
	int s;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "one", 0, &s));
	ASSERT_TRUE(fcntl(s, F_GETFD) & FD_CLOEXEC);
	ASSERT_EQ(cl_is_session(f.conn, s), 1);
	close(s);
	teardown(&f);
}

TEST(create_name_rules)
{
	struct fixture f;
	char n63[64], n64[65];
	int s1, s2, s3;

	setup(&f);
	memset(n63, 'x', 63);
	n63[63] = 0;
	memset(n64, 'y', 64);
	n64[64] = 0;
	ASSERT_ERR(cl_create(f.conn, "", 0, &s1), -EINVAL);
	ASSERT_ERR(cl_create(f.conn, n64, 0, &s1), -EINVAL); /* no NUL in the field */
	ASSERT_OK(cl_create(f.conn, n63, 0, &s1));
	ASSERT_OK(cl_create(f.conn, "dup", 0, &s2));
	ASSERT_ERR(cl_create(f.conn, "dup", 0, &s3), -EEXIST);
	ASSERT_OK(cl_create(f.conn, "\x01\xff any bytes", 0, &s3));
	close(s1);
	close(s2);
	close(s3);
	teardown(&f);
}

TEST(create_unknown_flag_is_einval)
{
	struct fixture f;
	int s;

	setup(&f);
	ASSERT_ERR(cl_create(f.conn, "flags", 1ULL << 5, &s), -EINVAL);
	teardown(&f);
}

TEST(create_with_incoming_name_is_allowed)
{
	struct fixture f;
	int old, s;

	setup(&f);
	old = make_incoming(&f, "both", "x");
	ASSERT_OK(cl_create(f.conn, "both", 0, &s));
	close(s);
	close(old);
	teardown(&f);
}

TEST(retrieve_unknown_is_enoent)
{
	struct fixture f;
	int s;

	setup(&f);
	ASSERT_ERR(cl_retrieve(f.conn, "nobody", &s), -ENOENT);
	ASSERT_ERR(cl_retrieve(f.conn, "", &s), -EINVAL);
	teardown(&f);
}

TEST(retrieve_twice_is_einval)
{
	struct fixture f;
	int old, s, s2;

	setup(&f);
	old = make_incoming(&f, "once", "x");
	ASSERT_OK(cl_retrieve(f.conn, "once", &s));
	ASSERT_ERR(cl_retrieve(f.conn, "once", &s2), -EINVAL);
	close(s);
	close(old);
	teardown(&f);
}

TEST(preserve_token_reuse_is_eexist)
{
	struct fixture f;
	int s, m1 = cl_memfd("a"), m2 = cl_memfd("b"), s2;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "tok", 0, &s));
	ASSERT_OK(cl_preserve(s, 0, m1)); /* token 0 is a token like any other */
	ASSERT_ERR(cl_preserve(s, 0, m2), -EEXIST);
	ASSERT_OK(cl_create(f.conn, "tok2", 0, &s2));
	ASSERT_OK(cl_preserve(s2, 0, m2)); /* tokens are per session */
	close(s);
	close(s2);
	close(m1);
	close(m2);
	teardown(&f);
}

TEST(preserve_same_file_twice_is_ebusy)
{
	struct fixture f;
	int s, s2, m = cl_memfd("a"), dup_m;

	setup(&f);
	dup_m = dup(m);
	ASSERT_OK(cl_create(f.conn, "busy", 0, &s));
	ASSERT_OK(cl_create(f.conn, "busy2", 0, &s2));
	ASSERT_OK(cl_preserve(s, 1, m));
	ASSERT_ERR(cl_preserve(s, 2, m), -EBUSY);
	ASSERT_ERR(cl_preserve(s2, 1, dup_m), -EBUSY);
	close(s);
	close(s2);
	close(m);
	close(dup_m);
	teardown(&f);
}

TEST(preserve_refused_files)
{
	struct fixture f;
	int s, other, null = open("/dev/null", O_RDWR | O_CLOEXEC);
	int path = open("/", O_PATH | O_CLOEXEC);

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "refuse", 0, &s));
	ASSERT_OK(cl_create(f.conn, "other", 0, &other));
	ASSERT_ERR(cl_preserve(s, 1, null), -ENOENT);
	ASSERT_ERR(cl_preserve(s, 2, path), -EBADF);
	/* A session fd has no handler, as in the kernel. */
	ASSERT_ERR(cl_preserve(s, 3, other), -ENOENT);
	ASSERT_ERR(cl_preserve(s, 4, s), -ENOENT);
	close(s);
	close(other);
	close(null);
	close(path);
	teardown(&f);
}

TEST(preserve_on_incoming_is_einval)
{
	struct fixture f;
	int old, s, m = cl_memfd("a");

	setup(&f);
	old = make_incoming(&f, "in", "x");
	ASSERT_OK(cl_retrieve(f.conn, "in", &s));
	ASSERT_ERR(cl_preserve(s, 9, m), -EINVAL);
	close(s);
	close(old);
	close(m);
	teardown(&f);
}

TEST(retrieve_fd_gives_the_file_and_the_same_file_again)
{
	struct fixture f;
	int old, s, a, b;

	setup(&f);
	old = make_incoming(&f, "files", "hello");
	ASSERT_OK(cl_retrieve(f.conn, "files", &s));
	ASSERT_OK(cl_retrieve_fd(s, 1, &a));
	ASSERT_TRUE(fcntl(a, F_GETFD) & FD_CLOEXEC);
	ASSERT_TRUE(cl_memfd_has(a, "hello"));
	ASSERT_OK(cl_retrieve_fd(s, 1, &b));
	/* The same open file: the offset is shared. */
	ASSERT_EQ(lseek(a, 3, SEEK_SET), 3);
	ASSERT_EQ(lseek(b, 0, SEEK_CUR), 3);
	ASSERT_ERR(cl_retrieve_fd(s, 2, &b), -ENOENT);
	close(a);
	close(b);
	close(s);
	close(old);
	teardown(&f);
}

TEST(retrieve_fd_and_finish_on_outgoing_are_einval)
{
	struct fixture f;
	int s, fd;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "out", 0, &s));
	ASSERT_ERR(cl_retrieve_fd(s, 1, &fd), -EINVAL);
	ASSERT_ERR(cl_finish(s), -EINVAL);
	close(s);
	teardown(&f);
}

TEST(finish_rules)
{
	struct fixture f;
	struct liveupdate_session_finish bad = { .size = sizeof(bad), .reserved = 1 };
	int old, s, fd, again;

	setup(&f);
	old = make_incoming(&f, "fin", "x");
	ASSERT_OK(cl_retrieve(f.conn, "fin", &s));
	ASSERT_ERR(luo_wire_call(s, LIVEUPDATE_SESSION_FINISH, &bad, sizeof(bad), NULL, 0, NULL),
		   -EINVAL);
	ASSERT_OK(cl_finish(s));
	ASSERT_ERR(cl_retrieve_fd(s, 1, &fd), -ENOENT);
	ASSERT_OK(cl_finish(s)); /* a second finish does nothing */
	ASSERT_ERR(cl_retrieve(f.conn, "fin", &again), -EINVAL);
	close(s);
	/* Closing the finished session ends its name. */
	for (int i = 0; i < 100 && cl_retrieve(f.conn, "fin", &again) != -ENOENT; i++)
		usleep(10000);
	ASSERT_ERR(cl_retrieve(f.conn, "fin", &again), -ENOENT);
	close(old);
	teardown(&f);
}

TEST(get_name_on_both_kinds)
{
	struct fixture f;
	struct liveupdate_session_get_name bad = { .size = sizeof(bad), .reserved = 7 };
	char name[64];
	int s, old, in;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "named", 0, &s));
	ASSERT_OK(cl_get_name(s, name));
	ASSERT_STREQ(name, "named");
	ASSERT_ERR(luo_wire_call(s, LIVEUPDATE_SESSION_GET_NAME, &bad, sizeof(bad), NULL, 0, NULL),
		   -EINVAL);
	old = make_incoming(&f, "incoming-name", "x");
	ASSERT_OK(cl_retrieve(f.conn, "incoming-name", &in));
	ASSERT_OK(cl_get_name(in, name));
	ASSERT_STREQ(name, "incoming-name");
	close(s);
	close(in);
	close(old);
	teardown(&f);
}

TEST(handover_makes_old_fd_stale)
{
	struct fixture f;
	char name[64];
	int s, m = cl_memfd("x"), fd;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "h", 0, &s));
	ASSERT_OK(cl_handover(s));
	ASSERT_ERR(cl_get_name(s, name), -ESTALE);
	ASSERT_ERR(cl_preserve(s, 1, m), -ESTALE);
	ASSERT_ERR(cl_retrieve_fd(s, 1, &fd), -ESTALE);
	ASSERT_ERR(cl_finish(s), -ESTALE);
	ASSERT_ERR(cl_handover(s), -ESTALE);
	close(s);
	/* Closing the stale fd changes nothing: the session still waits. */
	usleep(50000);
	ASSERT_OK(cl_retrieve(f.conn, "h", &s));
	close(s);
	close(m);
	teardown(&f);
}

TEST(handover_rules)
{
	struct fixture f;
	int old, s, in;

	setup(&f);
	old = make_incoming(&f, "twice", "x");
	ASSERT_OK(cl_create(f.conn, "twice", 0, &s));
	ASSERT_ERR(cl_handover(s), -EEXIST); /* an incoming session has the name */
	ASSERT_OK(cl_retrieve(f.conn, "twice", &in));
	ASSERT_ERR(cl_handover(in), -EINVAL); /* incoming sessions do not move */
	close(s);
	close(in);
	close(old);
	teardown(&f);
}

TEST(device_slot_is_exclusive)
{
	struct fixture f;
	int other;

	setup(&f);
	ASSERT_OK(cl_device_open(f.conn));
	other = test_luod_connect(&f.d);
	ASSERT_OK(other);
	ASSERT_ERR(cl_device_open(other), -EBUSY);
	ASSERT_ERR(cl_device_open(f.conn), -EBUSY);
	close(f.conn);
	/* Freed when the holder's connection closes. */
	int r = -EBUSY;
	for (int i = 0; i < 100 && r == -EBUSY; i++) {
		r = cl_device_open(other);
		if (r == -EBUSY)
			usleep(10000);
	}
	ASSERT_OK(r);
	f.conn = other;
	teardown(&f);
}

TEST(device_open_reserved_must_be_zero)
{
	struct fixture f;
	struct luo_wire_simple c = { .size = sizeof(c), .reserved = 1 };

	setup(&f);
	ASSERT_ERR(luo_wire_call(f.conn, LUO_IOCTL_DEVICE_OPEN, &c, sizeof(c), NULL, 0, NULL),
		   -EINVAL);
	ASSERT_OK(cl_device_open(f.conn)); /* the refused request took nothing */
	teardown(&f);
}

TEST(status_counts)
{
	struct fixture f;
	struct luo_wire_status st;
	int s, m = cl_memfd("x"), old;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "a", 0, &s));
	ASSERT_OK(cl_preserve(s, 1, m));
	old = make_incoming(&f, "b", "y");
	ASSERT_OK(cl_status(f.conn, &st));
	ASSERT_EQ(st.pid, f.d.pid);
	ASSERT_EQ(st.n_outgoing, 1);
	ASSERT_EQ(st.n_incoming, 1);
	ASSERT_EQ(st.n_files, 2);
	ASSERT_EQ(st.n_connections, 1);
	ASSERT_EQ(st.update_number, 0);
	ASSERT_TRUE(st.fd_limit > 0);
	ASSERT_TRUE(st.fds_in_use > 0);
	ASSERT_TRUE(st.version[0] != 0);
	close(s);
	close(old);
	close(m);
	teardown(&f);
}

TEST(list_and_show)
{
	struct fixture f;
	int s[3], m[2];

	setup(&f);
	ASSERT_EQ(cl_list_count(f.conn), 0);
	for (int i = 0; i < 3; i++) {
		char name[16];
		snprintf(name, sizeof(name), "list-%d", i);
		ASSERT_OK(cl_create(f.conn, name, 0, &s[i]));
	}
	for (int i = 0; i < 2; i++) {
		m[i] = cl_memfd("x");
		ASSERT_OK(cl_preserve(s[0], i, m[i]));
	}
	ASSERT_EQ(cl_list_count(f.conn), 3);
	ASSERT_EQ(cl_show_files(f.conn, KIND_OUTGOING, "list-0"), 2);
	ASSERT_EQ(cl_show_files(f.conn, KIND_OUTGOING, "list-1"), 0);
	ASSERT_ERR(cl_show_files(f.conn, KIND_INCOMING, "list-0"), -ENOENT);
	ASSERT_ERR(cl_show_files(f.conn, 7, "list-0"), -EINVAL);
	ASSERT_ERR(cl_show_files(f.conn, KIND_OUTGOING, ""), -EINVAL);
	for (int i = 0; i < 3; i++)
		close(s[i]);
	close(m[0]);
	close(m[1]);
	teardown(&f);
}

TEST(list_streams_many_messages)
{
	struct fixture f;
	enum { N = 1500 }; /* more than one reply message holds */
	static int s[N];

	test_need_fds(N + 64);
	setup(&f);
	for (int i = 0; i < N; i++) {
		char name[16];
		snprintf(name, sizeof(name), "many-%d", i);
		ASSERT_OK(cl_create(f.conn, name, 0, &s[i]));
	}
	ASSERT_EQ(cl_list_count(f.conn), N);
	for (int i = 0; i < N; i++)
		close(s[i]);
	teardown(&f);
}

TEST(show_streams_many_files)
{
	struct fixture f;
	enum { N = 800 }; /* more file entries than one reply message holds */
	int s;

	test_need_fds(N + 64);
	setup(&f);
	ASSERT_OK(cl_create(f.conn, "many-files", 0, &s));
	for (int i = 0; i < N; i++) {
		int m = eventfd(0, EFD_CLOEXEC);
		ASSERT_OK(cl_preserve(s, i, m));
		close(m);
	}
	ASSERT_EQ(cl_show_files(f.conn, KIND_OUTGOING, "many-files"), N);
	close(s);
	teardown(&f);
}

TEST(is_session_tells_session_fds_apart)
{
	struct fixture f;
	int s, s2, d, m = cl_memfd("x");
	struct stat a, b, c;

	setup(&f);
	ASSERT_OK(cl_create(f.conn, "is", 0, &s));
	ASSERT_OK(cl_create(f.conn, "is2", 0, &s2));
	d = dup(s);
	ASSERT_EQ(cl_is_session(f.conn, s), 1);
	ASSERT_EQ(cl_is_session(f.conn, d), 1);
	ASSERT_EQ(cl_is_session(f.conn, m), 0);
	ASSERT_EQ(cl_is_session(f.conn, f.conn), 0);
	/* Same session exactly when st_dev and st_ino match. */
	ASSERT_OK(fstat(s, &a));
	ASSERT_OK(fstat(d, &b));
	ASSERT_OK(fstat(s2, &c));
	ASSERT_TRUE(a.st_dev == b.st_dev && a.st_ino == b.st_ino);
	ASSERT_FALSE(a.st_dev == c.st_dev && a.st_ino == c.st_ino);
	/* A stale session fd is still a session fd. */
	ASSERT_OK(cl_handover(s2));
	ASSERT_EQ(cl_is_session(f.conn, s2), 1);
	close(s);
	close(s2);
	close(d);
	close(m);
	teardown(&f);
}

TEST_MAIN(TEST_CASE(create_gives_cloexec_session_fd), TEST_CASE(create_name_rules),
	  TEST_CASE(create_unknown_flag_is_einval), TEST_CASE(create_with_incoming_name_is_allowed),
	  TEST_CASE(retrieve_unknown_is_enoent), TEST_CASE(retrieve_twice_is_einval),
	  TEST_CASE(preserve_token_reuse_is_eexist), TEST_CASE(preserve_same_file_twice_is_ebusy),
	  TEST_CASE(preserve_refused_files), TEST_CASE(preserve_on_incoming_is_einval),
	  TEST_CASE(retrieve_fd_gives_the_file_and_the_same_file_again),
	  TEST_CASE(retrieve_fd_and_finish_on_outgoing_are_einval), TEST_CASE(finish_rules),
	  TEST_CASE(get_name_on_both_kinds), TEST_CASE(handover_makes_old_fd_stale),
	  TEST_CASE(handover_rules), TEST_CASE(device_slot_is_exclusive),
	  TEST_CASE(device_open_reserved_must_be_zero), TEST_CASE(status_counts),
	  TEST_CASE(list_and_show), TEST_CASE(list_streams_many_messages),
	  TEST_CASE(show_streams_many_files), TEST_CASE(is_session_tells_session_fds_apart))
