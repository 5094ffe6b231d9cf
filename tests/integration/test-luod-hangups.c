/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: how luod takes in hang-ups
 *
 * Real client processes close sessions in batches that make handover-on-close
 * sessions wait for their names (the pattern that once recursed until luod's
 * stack overflowed), before and across a live update, by the hundred; and a
 * session closed during an update's blackout, behind 600 connections with
 * requests pending, is seen before any later request is answered.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/macro.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-client.h"

/* Incoming sessions name-0 .. name-(n-1), retrieved and kept open in fds[]. */
static void make_retrieved(int conn, const char *prefix, int n, int *fds)
{
	for (int i = 0; i < n; i++) {
		char name[64];
		int s;

		snprintf(name, sizeof(name), "%s-%d", prefix, i);
		ASSERT_OK(cl_create(conn, name, 0, &s));
		ASSERT_OK(cl_handover(s));
		close(s);
		ASSERT_OK(cl_retrieve(conn, name, &fds[i]));
	}
}

static void luod_stop_signal(const struct test_luod *d)
{
	test_luod_pause(d, true);
}

/*
 * A child creates handover-on-close sessions prefix-first .. prefix-(first+n-1),
 * each preserving a memfd "next <name>", and exits: all its session fds close
 * in one batch (luod is stopped meanwhile, so that it sees them all at once,
 * whatever the machine's speed).  Returns once it is reaped.
 */
static void child_creates_and_exits(const struct test_luod *d, const char *prefix, int first, int n)
{
	int status, p[2], q[2];
	char byte;
	pid_t pid;

	ASSERT_OK(pipe2(p, O_CLOEXEC));
	ASSERT_OK(pipe2(q, O_CLOEXEC));
	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		int c = test_luod_connect(d);

		if (c < 0)
			_exit(1);
		for (int i = first; i < first + n; i++) {
			char name[64], text[96];
			int s, m;

			snprintf(name, sizeof(name), "%s-%d", prefix, i);
			snprintf(text, sizeof(text), "next %s", name);
			m = cl_memfd(text);
			if (m < 0 || cl_create(c, name, LUO_SESSION_HANDOVER_ON_CLOSE, &s) < 0 ||
			    cl_preserve(s, 7, m) < 0)
				_exit(2);
			close(m);
			/* s stays open until the exit */
		}
		close(q[1]);
		(void)!write(p[1], "r", 1);
		/* Exits once the parent has stopped luod and closed its end of q. */
		(void)!read(q[0], &byte, 1);
		_exit(0);
	}
	close(p[1]);
	close(q[0]);
	ASSERT_EQ(read(p[0], &byte, 1), 1);
	close(p[0]);
	luod_stop_signal(d);
	close(q[1]);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	test_luod_pause(d, false);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Finishes and closes the retrieved sessions, then checks that each waiting
 * session was handed over in their place, in that order. */
static void close_and_check_successors(int conn, const char *prefix, int n, int *fds)
{
	for (int i = 0; i < n; i++) {
		ASSERT_OK(cl_finish(fds[i]));
		close(fds[i]);
	}
	for (int i = 0; i < n; i++) {
		char name[64], text[96];
		int s, fd;

		snprintf(name, sizeof(name), "%s-%d", prefix, i);
		snprintf(text, sizeof(text), "next %s", name);
		ASSERT_OK(cl_retrieve(conn, name, &s));
		ASSERT_OK(cl_retrieve_fd(s, 7, &fd));
		ASSERT_TRUE(cl_memfd_has(fd, text));
		close(fd);
		ASSERT_OK(cl_finish(s));
		close(s);
	}
}

static void assert_sessions(int conn, uint64_t outgoing, uint64_t incoming)
{
	struct luo_wire_status st;

	/* STATUS takes in every close made before it: no waiting needed. */
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.n_outgoing, outgoing);
	ASSERT_EQ(st.n_incoming, incoming);
}

/* The first trigger of the old recursion: two waiting sessions closed in one batch. */
TEST(two_waiting_handovers_closed_in_one_batch)
{
	struct test_luod d;
	int conn, fds[2];

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	make_retrieved(conn, "pair", 2, fds);
	child_creates_and_exits(&d, "pair", 0, 2);
	assert_luod_serves(&d);
	/* Both wait for their names, still outgoing. */
	assert_sessions(conn, 2, 2);
	close_and_check_successors(conn, "pair", 2, fds);
	assert_sessions(conn, 0, 0);
	close(conn);
	test_luod_stop(&d);
}

/* The second trigger: sessions made to wait one at a time, then a live update. */
TEST(waiting_handovers_survive_a_live_update)
{
	struct luo_wire_update u;
	struct test_luod d;
	int conn, fds[2];

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	make_retrieved(conn, "one", 2, fds);
	child_creates_and_exits(&d, "one", 0, 1);
	assert_sessions(conn, 1, 2);
	child_creates_and_exits(&d, "one", 1, 1);
	assert_sessions(conn, 2, 2);
	ASSERT_OK(cl_update(conn, NULL, &u));
	assert_luod_serves(&d);
	assert_sessions(conn, 2, 2);
	ASSERT_OK(cl_update(conn, NULL, &u));
	assert_luod_serves(&d);
	close_and_check_successors(conn, "one", 2, fds);
	assert_sessions(conn, 0, 0);
	close(conn);
	test_luod_stop(&d);
}

#define MANY 300

/* Hundreds at once: taking hang-ups in has no depth that grows with their number. */
TEST(hundreds_of_waiting_handovers_closed_in_one_batch)
{
	static int fds[MANY];
	struct test_luod d;
	struct rlimit rl;
	int conn;

	ASSERT_OK(getrlimit(RLIMIT_NOFILE, &rl));
	if (rl.rlim_cur < 2 * MANY + 64) {
		rl.rlim_cur = MIN(rl.rlim_max, (rlim_t)(2 * MANY + 64));
		ASSERT_OK(setrlimit(RLIMIT_NOFILE, &rl));
	}
	if (rl.rlim_cur < 2 * MANY + 64)
		test_skip("needs %d fds, RLIMIT_NOFILE allows %llu", 2 * MANY + 64,
			  (unsigned long long)rl.rlim_cur);
	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	make_retrieved(conn, "many", MANY, fds);
	child_creates_and_exits(&d, "many", 0, MANY);
	assert_luod_serves(&d);
	assert_sessions(conn, MANY, MANY);
	close_and_check_successors(conn, "many", MANY, fds);
	assert_sessions(conn, 0, 0);
	close(conn);
	test_luod_stop(&d);
}

#define BUSY 600

struct raw_status {
	struct luo_wire_request h;
	struct luo_wire_status s;
};

/*
 * Sessions closed while luod is stopped, behind 600 connections with requests
 * pending and an UPDATE ahead of them all: after the update, a create of the
 * closed name and a retrieve of the closed handover-on-close session, sent
 * after the closes, see them.  (luod is stopped with SIGSTOP so that every
 * request is pending at once, whatever the machine's speed.)
 */
TEST(closes_during_an_update_are_seen_before_later_requests)
{
	static int busy[BUSY];
	struct {
		struct luo_wire_request h;
		struct luo_wire_update u;
	} upd = { .h = { .op = LUO_IOCTL_UPDATE, .tag = 1 }, .u = { .size = sizeof(upd.u) } };
	struct {
		struct luo_wire_request h;
		struct luo_wire_create_session c;
	} create = { .h = { .op = LIVEUPDATE_IOCTL_CREATE_SESSION, .tag = 2 },
		     .c = { .size = sizeof(create.c), .name = "plain" } };
	struct {
		struct luo_wire_request h;
		struct liveupdate_ioctl_retrieve_session r;
	} retrieve = { .h = { .op = LIVEUPDATE_IOCTL_RETRIEVE_SESSION, .tag = 3 },
		       .r = { .size = sizeof(retrieve.r), .name = "hoc" } };
	struct raw_status st = { .h = { .op = LUO_IOCTL_STATUS, .tag = 4 },
				 .s = { .size = sizeof(st.s) } };
	struct luo_wire_update u;
	struct test_luod d;
	struct rlimit rl;
	int conn_u, conn_c, conn_r, s_hoc, s_plain, m;
	int32_t result;

	ASSERT_OK(getrlimit(RLIMIT_NOFILE, &rl));
	if (rl.rlim_cur < BUSY + 64) {
		rl.rlim_cur = MIN(rl.rlim_max, (rlim_t)(BUSY + 64));
		ASSERT_OK(setrlimit(RLIMIT_NOFILE, &rl));
	}
	if (rl.rlim_cur < BUSY + 64)
		test_skip("needs %d fds, RLIMIT_NOFILE allows %llu", BUSY + 64,
			  (unsigned long long)rl.rlim_cur);
	test_luod_start(&d, NULL);
	/* The requesters connect first: luod serves them ahead of the busy ones. */
	conn_u = test_luod_connect(&d);
	conn_c = test_luod_connect(&d);
	conn_r = test_luod_connect(&d);
	for (int i = 0; i < BUSY; i++)
		busy[i] = ASSERT_OK(test_luod_connect(&d));
	ASSERT_OK(cl_create(conn_u, "plain", 0, &s_plain));
	ASSERT_OK(cl_create(conn_u, "hoc", LUO_SESSION_HANDOVER_ON_CLOSE, &s_hoc));
	m = ASSERT_OK(cl_memfd("kept"));
	ASSERT_OK(cl_preserve(s_hoc, 1, m));
	close(m);

	luod_stop_signal(&d);
	ASSERT_OK(raw_send(conn_u, &upd, sizeof(upd), NULL, 0));
	for (int i = 0; i < BUSY; i++)
		ASSERT_OK(raw_send(busy[i], &st, sizeof(st), NULL, 0));
	close(s_plain);
	close(s_hoc);
	ASSERT_OK(raw_send(conn_c, &create, sizeof(create), NULL, 0));
	ASSERT_OK(raw_send(conn_r, &retrieve, sizeof(retrieve), NULL, 0));
	test_luod_pause(&d, false);

	ASSERT_OK(raw_recv(conn_u, &result, &u, sizeof(u)));
	ASSERT_EQ(result, 0);
	ASSERT_OK(raw_recv(conn_c, &result, NULL, 0));
	ASSERT_EQ(result, 0); /* not EEXIST: the close of "plain" came first */
	ASSERT_OK(raw_recv(conn_r, &result, NULL, 0));
	ASSERT_EQ(result, 0); /* not ENOENT: "hoc" was handed over at its close */
	for (int i = 0; i < BUSY; i++) {
		ASSERT_OK(raw_recv(busy[i], &result, NULL, 0));
		ASSERT_EQ(result, 0);
		close(busy[i]);
	}
	close(conn_u);
	close(conn_c);
	close(conn_r);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(two_waiting_handovers_closed_in_one_batch),
	  TEST_CASE(waiting_handovers_survive_a_live_update),
	  TEST_CASE(hundreds_of_waiting_handovers_closed_in_one_batch),
	  TEST_CASE(closes_during_an_update_are_seen_before_later_requests))
