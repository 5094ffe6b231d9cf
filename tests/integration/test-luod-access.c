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

/* Another uid's session left under a name: root sees it listed, but it is not
 * root's to retrieve by that name, and root's own session of the same name is
 * another one (no uid can squat or probe a name another uses). */
TEST(names_are_per_uid_root_included)
{
	struct test_luod d;
	int conn, s, mine, m, fd;

	start_shared(&d, NULL);
	ASSERT_EQ(as_other_uid(&d, other_leaves_a_session), 0);
	conn = test_luod_connect(&d);
	ASSERT_EQ(cl_list_count(conn), 1);
	ASSERT_ERR(cl_retrieve(conn, "theirs", &s), -ENOENT);
	/* Root's own "theirs": created and handed over beside the other uid's. */
	m = cl_memfd("root's");
	ASSERT_OK(cl_create(conn, "theirs", 0, &mine));
	ASSERT_OK(cl_preserve(mine, 1, m));
	ASSERT_OK(cl_handover(mine));
	close(mine);
	ASSERT_EQ(cl_list_count(conn), 2);
	ASSERT_OK(cl_retrieve(conn, "theirs", &s));
	ASSERT_OK(cl_retrieve_fd(s, 1, &fd));
	ASSERT_TRUE(cl_memfd_has(fd, "root's"));
	close(fd);
	close(s);
	close(m);
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

/* Runs luod with args in the foreground and returns its exit status (for usage errors). */
static int run_luod_args(const char *const *args)
{
	char luod[512];
	const char *argv[16] = { NULL };
	size_t n = 0;

	argv[n++] = test_build_path("src/daemon/luod", luod, sizeof(luod));
	for (; *args && n < 15; args++)
		argv[n++] = *args;
	return test_run_command(argv);
}

#define GREEDY_UID 65534
#define MODEST_UID 65533

/* Forks a child that switches to uid and returns fn(d, arg) as its exit code. */
static pid_t spawn_as(uint32_t uid, const struct test_luod *d,
		      int (*fn)(const struct test_luod *d, int arg), int arg)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0)
			_exit(100);
		_exit(fn(d, arg));
	}
	return pid;
}

static int wait_exit(pid_t pid)
{
	int status;

	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* Preserves memfds into a new session until luod refuses; returns how many it
 * took or -errno for the refusal when it is not ENOSPC. */
static int fill_share(int conn, const char *name, int *ret_session)
{
	int n = 0, r;

	r = cl_create(conn, name, 0, ret_session);
	if (r < 0)
		return r;
	for (;; n++) {
		int m = cl_memfd("greedy");

		if (m < 0)
			return m;
		r = cl_preserve(*ret_session, (uint64_t)n, m);
		close(m);
		if (r == -ENOSPC)
			return n;
		if (r < 0)
			return r;
	}
}

/* The greedy uid takes all it may, then holds it until ready_fd's peer (the
 * test) closes go_fd. */
static int greedy_pipes[2][2]; /* ready, go */

static int greedy(const struct test_luod *d, int unused)
{
	int ready = greedy_pipes[0][1], go = greedy_pipes[1][0], conn, s, s2, n;
	struct luo_wire_status st;
	char c;

	/* The test's ends: go must see EOF once the test closes its end. */
	close(greedy_pipes[0][0]);
	close(greedy_pipes[1][1]);

	conn = test_luod_connect(d);
	if (conn < 0)
		return 1;
	n = fill_share(conn, "greedy", &s);
	if (n < 0)
		return 2;
	/* Its share is used up: no session either. */
	if (cl_create(conn, "greedy-2", 0, &s2) != -ENOSPC)
		return 3;
	/* ENOSPC came exactly at the share luod reports. */
	if (cl_status(conn, &st) < 0 || st.uid_fds != st.uid_fd_share ||
	    st.uid_fd_share >= st.fd_capacity - st.root_reserve)
		return 4;
	if (write(ready, "r", 1) != 1)
		return 5;
	(void)!read(go, &c, 1);
	return 0;
}

/* Another non-root uid: what it asks for is well within its own share. */
static int modest(const struct test_luod *d, int n)
{
	int conn = test_luod_connect(d), s;

	if (conn < 0 || cl_create(conn, "modest", 0, &s) < 0)
		return 1;
	for (int i = 0; i < n; i++) {
		int m = cl_memfd("modest"), r;

		if (m < 0)
			return 2;
		r = cl_preserve(s, (uint64_t)i, m);
		close(m);
		if (r < 0)
			return 10 + (r == -ENOSPC) * 10 + (r == -EMFILE) * 20;
	}
	return 0;
}

/*
 * Two non-root uids and root share a luod of 116 fds (capacity 100): the
 * greedy uid gets ENOSPC at its share, and neither the other uid nor root is
 * refused anything for it.
 */
TEST(a_greedy_uid_gets_enospc_and_nobody_else_does)
{
	struct test_luod d;
	struct rlimit small = { 116, 116 };
	struct luo_wire_status st;
	int ready[2], go[2], conn, s, m;
	pid_t g;
	char c;

	if (!test_is_root())
		test_skip("needs root to run clients as two other uids");
	ASSERT_OK(chmod(test_tmpdir(), 0755));
	/* luod's limit alone, lowered from outside: its capacity follows. */
	test_luod_start(&d, NULL);
	ASSERT_OK(prlimit(d.pid, RLIMIT_NOFILE, &small, NULL));
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.fd_limit, 116);
	ASSERT_EQ(st.fd_capacity, 100);
	ASSERT_EQ(st.root_reserve, 10);
	ASSERT_EQ(st.uid_fd_share, 100); /* root: all of it */

	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	ASSERT_OK(pipe2(go, O_CLOEXEC));
	memcpy(greedy_pipes[0], ready, sizeof(ready));
	memcpy(greedy_pipes[1], go, sizeof(go));
	g = spawn_as(GREEDY_UID, &d, greedy, 0);
	close(ready[1]);
	close(go[0]);
	if (read(ready[0], &c, 1) != 1)
		test_fail_at(__FILE__, __LINE__, "the greedy uid failed: exit %d", wait_exit(g));

	/* The other uid may still use its own share... */
	ASSERT_EQ(wait_exit(spawn_as(MODEST_UID, &d, modest, 12)), 0);
	/* ...and root all the rest. */
	ASSERT_OK(cl_create(conn, "root", 0, &s));
	for (int i = 0; i < 20; i++) {
		m = ASSERT_OK(cl_memfd("root"));
		ASSERT_OK(cl_preserve(s, (uint64_t)i, m));
		close(m);
	}
	close(go[1]);
	ASSERT_EQ(wait_exit(g), 0);
	close(ready[0]);
	close(s);
	close(conn);
	test_luod_stop(&d);
}

/* A user's own luod: its uid is not held to a share of it. */
static int own_luod(const struct test_luod *unused, int arg)
{
	struct luo_wire_status st;
	struct test_luod d;
	int conn, ok;

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	ok = conn >= 0 && cl_status(conn, &st) == 0 && st.uid_fd_share == st.fd_capacity;
	close(conn);
	test_luod_stop(&d);
	return ok ? 0 : 1;
}

TEST(luods_own_uid_is_not_held_to_a_share)
{
	if (!test_is_root())
		test_skip("needs root to run luod as another uid");
	ASSERT_OK(chmod(test_tmpdir(), 0777));
	ASSERT_EQ(wait_exit(spawn_as(MODEST_UID, NULL, own_luod, 0)), 0);
}

/* The shares are options; they survive in status. */
TEST(root_reserve_and_user_share_are_settable)
{
	struct test_luod d;
	struct rlimit small = { 216, 216 };
	struct luo_wire_status st;
	int conn;

	test_luod_start(
		&d, (const char *const[]){ "--root-reserve", "50", "--user-share", "10", NULL });
	ASSERT_OK(prlimit(d.pid, RLIMIT_NOFILE, &small, NULL));
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.fd_capacity, 200);
	ASSERT_EQ(st.root_reserve, 50);
	ASSERT_EQ(st.uid_fd_share, 200);
	close(conn);
	test_luod_stop(&d);
	ASSERT_EQ(run_luod_args((const char *const[]){ "--user-share", "0", NULL }), 2);
	ASSERT_EQ(run_luod_args((const char *const[]){ "--user-share", "101", NULL }), 2);
	ASSERT_EQ(run_luod_args((const char *const[]){ "--root-reserve", "x", NULL }), 2);
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

/* A non-root uid's STATUS counts its own sessions, files and connections only. */
static int other_counts_its_own(const struct test_luod *d)
{
	struct luo_wire_status st;
	int conn = test_luod_connect(d), s, m;

	if (conn < 0 || cl_status(conn, &st) < 0)
		return 1;
	if (st.n_outgoing != 0 || st.n_incoming != 0 || st.n_files != 0 || st.n_connections != 1)
		return 2;
	m = cl_memfd("mine");
	if (cl_create(conn, "mine", 0, &s) < 0 || cl_preserve(s, 1, m) < 0)
		return 3;
	if (cl_status(conn, &st) < 0 || st.n_outgoing != 1 || st.n_files != 1)
		return 4;
	close(m);
	close(s);
	close(conn);
	return 0;
}

TEST(status_counts_are_the_callers_own)
{
	struct test_luod d;
	struct luo_wire_status st;
	int conn, a, b, m;

	start_shared(&d, NULL);
	conn = test_luod_connect(&d);
	m = cl_memfd("roots");
	ASSERT_OK(cl_create(conn, "root-a", 0, &a));
	ASSERT_OK(cl_create(conn, "root-b", 0, &b));
	ASSERT_OK(cl_preserve(a, 1, m));
	ASSERT_EQ(as_other_uid(&d, other_counts_its_own), 0);
	/* Root sees everything. */
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.n_outgoing, 2);
	ASSERT_EQ(st.n_files, 1);
	close(m);
	close(a);
	close(b);
	close(conn);
	test_luod_stop(&d);
}

#define BUDGET_SESSIONS 200

/* The other uid's listing is larger than its quarter of a small budget. */
static int other_listing_over_its_share(const struct test_luod *d)
{
	int conn = test_luod_connect(d), s[BUDGET_SESSIONS];
	char name[32];
	int r = 0;

	if (conn < 0)
		return 1;
	for (int i = 0; i < BUDGET_SESSIONS; i++) {
		snprintf(name, sizeof(name), "listed-%03d", i);
		if (cl_create(conn, name, 0, &s[i]) < 0)
			return 2;
	}
	if (cl_list_count(conn) != -ENOBUFS)
		r = 3;
	for (int i = 0; i < BUDGET_SESSIONS; i++)
		close(s[i]);
	close(conn);
	return r;
}

static int other_holds_its_sessions(const struct test_luod *d)
{
	int conn = test_luod_connect(d), s;
	char name[32];

	if (conn < 0)
		return 1;
	for (int i = 0; i < BUDGET_SESSIONS; i++) {
		snprintf(name, sizeof(name), "kept-%03d", i);
		if (cl_create(conn, name, 0, &s) < 0 || cl_handover(s) < 0)
			return 2;
		close(s);
	}
	close(conn);
	return 0;
}

/*
 * Listing budgets are per uid: a non-root uid gets a quarter of luod's reply
 * budget (ENOBUFS past it), while root, whose listing of the same sessions is
 * as large, is not refused for what another uid may queue.
 */
TEST(listing_budgets_are_per_uid)
{
	struct test_luod d;
	int conn;

	start_shared(&d, (const char *const[]){ "--queue-budget=65536", NULL });
	ASSERT_EQ(as_other_uid(&d, other_listing_over_its_share), 0);
	ASSERT_EQ(as_other_uid(&d, other_holds_its_sessions), 0);
	conn = test_luod_connect(&d);
	ASSERT_EQ(cl_list_count(conn), BUDGET_SESSIONS);
	close(conn);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(listing_budgets_are_per_uid), TEST_CASE(status_counts_are_the_callers_own),
	  TEST_CASE(other_uid_cannot_retrieve_list_or_show),
	  TEST_CASE(names_are_per_uid_root_included), TEST_CASE(other_uid_cannot_update_or_reboot),
	  TEST_CASE(session_limit_is_per_uid_and_gives_enospc), TEST_CASE(file_limit_gives_enospc),
	  TEST_CASE(luod_out_of_fds_gives_emfile), TEST_CASE(tiny_fd_limit_refuses_to_start),
	  TEST_CASE(connections_beyond_the_fd_limit_are_refused_with_emfile),
	  TEST_CASE(a_greedy_uid_gets_enospc_and_nobody_else_does),
	  TEST_CASE(root_reserve_and_user_share_are_settable),
	  TEST_CASE(luods_own_uid_is_not_held_to_a_share))
