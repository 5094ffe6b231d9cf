/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: access control and limits
 *
 * Sessions belong to their creator's uid: another uid (a child of the test
 * that drops root) cannot retrieve, list or show them, nor update or reboot
 * luod.  The per-uid limits on sessions and files give ENOSPC, and luod out
 * of fds gives EMFILE to the request that needed one, never a crash.
 */
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/socket-util.h"
#include "harness.h"
#include "luod-client.h"

#define OTHER_UID 65534

/* Runs fn as OTHER_UID in a child; returns its exit code. */
static int as_other_uid(const struct test_luod *d, int (*fn)(const struct test_luod *d))
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(OTHER_UID) < 0 || setuid(OTHER_UID) < 0)
			_exit(100);
		_exit(fn(d));
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void start_shared(struct test_luod *d, const char *const *args)
{
	if (!test_is_root())
		test_skip("needs root to run a client as another uid");
	/* The other uid must reach the socket in the case's directory. */
	ASSERT_OK(chmod(test_tmpdir(), 0755));
	test_luod_start(d, args);
}

static int other_cannot_touch_secret(const struct test_luod *d)
{
	int conn = test_luod_connect(d), s;

	if (conn < 0)
		return 1;
	if (cl_retrieve(conn, "secret", &s) != -ENOENT)
		return 2;
	if (cl_list_count(conn) != 0)
		return 3;
	if (cl_show_files(conn, KIND_INCOMING, "secret") != -ENOENT)
		return 4;
	if (cl_show_files(conn, KIND_OUTGOING, "held") != -ENOENT)
		return 5;
	/* Its own session it sees. */
	if (cl_create(conn, "mine", 0, &s) < 0)
		return 6;
	if (cl_list_count(conn) != 1 || cl_show_files(conn, KIND_OUTGOING, "mine") != 0)
		return 7;
	close(s);
	close(conn);
	return 0;
}

TEST(other_uid_cannot_retrieve_list_or_show)
{
	struct test_luod d;
	int conn, s, held, m = cl_memfd("x");

	start_shared(&d, NULL);
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_create(conn, "secret", 0, &s));
	ASSERT_OK(cl_preserve(s, 1, m));
	ASSERT_OK(cl_handover(s));
	ASSERT_OK(cl_create(conn, "held", 0, &held));
	ASSERT_EQ(as_other_uid(&d, other_cannot_touch_secret), 0);
	/* Root sees everyone's sessions, and its own is still there. */
	ASSERT_OK(cl_show_files(conn, KIND_INCOMING, "secret"));
	close(s);
	ASSERT_OK(cl_retrieve(conn, "secret", &s));
	close(s);
	close(held);
	close(m);
	close(conn);
	test_luod_stop(&d);
}

static int other_cannot_update_or_reboot(const struct test_luod *d)
{
	struct luo_wire_update u;
	struct luo_wire_reboot rb;
	int conn = test_luod_connect(d);

	if (conn < 0)
		return 1;
	if (cl_update(conn, NULL, &u) != -EPERM)
		return 2;
	if (cl_reboot(conn, &rb) != -EPERM)
		return 3;
	close(conn);
	return 0;
}

static int other_leaves_a_session(const struct test_luod *d)
{
	int conn = test_luod_connect(d), s, m = cl_memfd("theirs");

	if (conn < 0 || m < 0 || cl_create(conn, "theirs", 0, &s) < 0 || cl_preserve(s, 1, m) < 0 ||
	    cl_handover(s) < 0)
		return 1;
	return 0;
}

TEST(root_may_take_any_uids_session)
{
	struct test_luod d;
	int conn, s, fd;

	start_shared(&d, NULL);
	ASSERT_EQ(as_other_uid(&d, other_leaves_a_session), 0);
	conn = test_luod_connect(&d);
	ASSERT_EQ(cl_list_count(conn), 1);
	ASSERT_OK(cl_retrieve(conn, "theirs", &s));
	ASSERT_OK(cl_retrieve_fd(s, 1, &fd));
	ASSERT_TRUE(cl_memfd_has(fd, "theirs"));
	close(fd);
	close(s);
	close(conn);
	test_luod_stop(&d);
}

TEST(other_uid_cannot_update_or_reboot)
{
	struct test_luod d;
	struct luo_wire_status st;
	int conn;

	start_shared(&d, NULL);
	ASSERT_EQ(as_other_uid(&d, other_cannot_update_or_reboot), 0);
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.n_live_updates, 0);
	ASSERT_EQ(st.update_number, 0);
	close(conn);
	test_luod_stop(&d);
}

static int other_creates_two(const struct test_luod *d)
{
	int conn = test_luod_connect(d), a, b, c;

	if (conn < 0)
		return 1;
	if (cl_create(conn, "u1", 0, &a) < 0 || cl_create(conn, "u2", 0, &b) < 0)
		return 2;
	if (cl_create(conn, "u3", 0, &c) != -ENOSPC)
		return 3;
	return 0;
}

TEST(session_limit_is_per_uid_and_gives_enospc)
{
	struct test_luod d;
	int conn, s[3];

	start_shared(&d, (const char *const[]){ "--max-sessions", "2", NULL });
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_create(conn, "r1", 0, &s[0]));
	ASSERT_OK(cl_create(conn, "r2", 0, &s[1]));
	ASSERT_ERR(cl_create(conn, "r3", 0, &s[2]), -ENOSPC);
	/* Another uid has its own count. */
	ASSERT_EQ(as_other_uid(&d, other_creates_two), 0);
	/* An ended session gives its place back. */
	close(s[0]);
	int r = -ENOSPC;
	for (int i = 0; i < 100 && r == -ENOSPC; i++) {
		r = cl_create(conn, "r3", 0, &s[2]);
		if (r == -ENOSPC)
			usleep(10000);
	}
	ASSERT_OK(r);
	close(s[1]);
	close(s[2]);
	close(conn);
	test_luod_stop(&d);
}

TEST(file_limit_gives_enospc)
{
	struct test_luod d;
	int conn, s, m[3];

	test_luod_start(&d, (const char *const[]){ "--max-files", "2", NULL });
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_create(conn, "files", 0, &s));
	for (int i = 0; i < 3; i++)
		m[i] = cl_memfd("x");
	ASSERT_OK(cl_preserve(s, 0, m[0]));
	ASSERT_OK(cl_preserve(s, 1, m[1]));
	ASSERT_ERR(cl_preserve(s, 2, m[2]), -ENOSPC);
	close(s);
	/* Aborting the session frees its files' places. */
	int r = -ENOSPC;
	for (int i = 0; i < 100 && r == -ENOSPC; i++) {
		r = cl_create(conn, "files", 0, &s);
		if (r >= 0) {
			r = cl_preserve(s, 0, m[2]);
			if (r == -ENOSPC) {
				close(s);
				usleep(10000);
			}
		} else
			usleep(10000);
	}
	ASSERT_OK(r);
	close(s);
	for (int i = 0; i < 3; i++)
		close(m[i]);
	close(conn);
	test_luod_stop(&d);
}

TEST(luod_out_of_fds_gives_emfile)
{
	struct test_luod d;
	struct rlimit rl = { 48, 48 };
	int conn, s[64], n = 0, r = 0, m = cl_memfd("x");

	/* luod inherits this as its hard limit. */
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &rl));
	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	for (; n < 64; n++) {
		char name[16];
		snprintf(name, sizeof(name), "fd-%d", n);
		r = cl_create(conn, name, 0, &s[n]);
		if (r < 0)
			break;
	}
	ASSERT_ERR(r, -EMFILE);
	ASSERT_TRUE(n > 0);
	/* A file needs an fd in luod too. */
	ASSERT_ERR(cl_preserve(s[0], 1, m), -EMFILE);
	for (int i = 0; i < n; i++)
		close(s[i]);
	close(m);
	close(conn);
	/* The closes above give luod its fds back before it answers anyone. */
	assert_luod_serves(&d);
	test_luod_stop(&d);
}

/* A luod that could never hold a session refuses to start, and says why. */
TEST(tiny_fd_limit_refuses_to_start)
{
	char luod[512], cmd[2048], log[300], sock[300], text[4096] = { 0 };
	int fd;

	test_build_path("src/daemon/luod", luod, sizeof(luod));
	snprintf(log, sizeof(log), "%s/log", test_tmpdir());
	snprintf(sock, sizeof(sock), "%s/tiny.sock", test_tmpdir());
	snprintf(cmd, sizeof(cmd), "ulimit -n 12 && exec '%s' -f --socket '%s' 2>'%s'", luod, sock,
		 log);
	ASSERT_EQ(test_run_command((const char *const[]){ "/bin/sh", "-c", cmd, NULL }), 1);
	ASSERT_TRUE(access(sock, F_OK) < 0);
	fd = ASSERT_OK(open(log, O_RDONLY | O_CLOEXEC));
	ASSERT_TRUE(read(fd, text, sizeof(text) - 1) > 0);
	close(fd);
	ASSERT_TRUE(strstr(text, "RLIMIT_NOFILE is 12") != NULL);
	ASSERT_TRUE(strstr(text, "at least") != NULL);
}

/* At its real fd limit luod refuses a connection it cannot take in so many
 * words: EMFILE as the answer to the first request, never a bare reset. */
TEST(connections_beyond_the_fd_limit_are_refused_with_emfile)
{
	struct test_luod d;
	struct rlimit rl = { 48, 48 };
	struct luo_wire_status st;
	int conns[96], n = 0, refused = 0;

	/* luod's limit alone: this process needs more than luod can take. */
	test_luod_start(&d, NULL);
	ASSERT_OK(prlimit(d.pid, RLIMIT_NOFILE, &rl, NULL));
	for (; n < 96; n++) {
		int r;

		conns[n] = ASSERT_OK(test_luod_connect(&d));
		r = cl_status(conns[n], &st);
		if (r == -EMFILE) {
			refused++;
			continue;
		}
		ASSERT_OK(r);
	}
	ASSERT_TRUE(refused > 0);
	ASSERT_TRUE(refused < n);
	close_many(conns, n);
	assert_luod_serves(&d);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(other_uid_cannot_retrieve_list_or_show),
	  TEST_CASE(root_may_take_any_uids_session), TEST_CASE(other_uid_cannot_update_or_reboot),
	  TEST_CASE(session_limit_is_per_uid_and_gives_enospc), TEST_CASE(file_limit_gives_enospc),
	  TEST_CASE(luod_out_of_fds_gives_emfile), TEST_CASE(tiny_fd_limit_refuses_to_start),
	  TEST_CASE(connections_beyond_the_fd_limit_are_refused_with_emfile))
