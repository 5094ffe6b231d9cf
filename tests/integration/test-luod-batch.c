/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: batches: luo_session_preserve_fds() and luo_session_retrieve_fds()
 *
 * Against a real luod: batches of one message and of several (more than
 * LUO_WIRE_BATCH_MAX files), every per-file rule of the kernel with the index
 * of the file that failed and nothing preserved (or retrieved) after a
 * failure, luod's own fd table back where it was after every failure, a
 * client that dies between parts, luod's worker killed between parts and
 * inside a part, and other clients served while a batch is under way.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "basic/socket-util.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-client.h"
#include "protocol/protocol.h"

#define MANY 600 /* three messages: 252 + 252 + 96 */

struct fixture {
	struct test_luod d;
	int conn;
	int fds[MANY];
	uint64_t tokens[MANY];
};

static void setup_with(struct fixture *f, const char *const *args)
{
	test_need_fds(4 * MANY);
	test_luod_start(&f->d, args);
	f->conn = luo_connect(f->d.socket);
	ASSERT_OK(f->conn);
	for (size_t i = 0; i < MANY; i++) {
		char text[32];

		snprintf(text, sizeof(text), "file %zu", i);
		f->fds[i] = cl_memfd(text);
		ASSERT_OK(f->fds[i]);
		f->tokens[i] = 1000 + i;
	}
}

static void setup(struct fixture *f)
{
	setup_with(f, NULL);
}

static void teardown(struct fixture *f)
{
	for (size_t i = 0; i < MANY; i++)
		if (f->fds[i] >= 0)
			close(f->fds[i]);
	close(f->conn);
	test_luod_stop(&f->d);
}

/*
 * The test's files luod holds: the fds in luod's table (the keeper's, which
 * the worker shares) that are this test's memfds ("luod-test"), staged or
 * preserved.  Only those: luod's own fds come and go with its work (a
 * compaction's journal and pidfd), and proc_fd_count() leaves out every fd
 * that names the same file as one of the test's.
 */
static int luod_fds(const struct test_luod *d)
{
	char path[300], link[300];
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	for (struct dirent *e; (e = readdir(dir));) {
		ssize_t k;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd/%s", (int)d->pid, e->d_name);
		k = readlink(path, link, sizeof(link) - 1);
		if (k <= 0)
			continue;
		link[k] = 0;
		n += strncmp(link, "/memfd:luod-test", 16) == 0;
	}
	closedir(dir);
	return n;
}

/* luod's fd count once it is n (at most 5 s); the last count seen. */
static int luod_fds_become(const struct test_luod *d, int n)
{
	int k = -1;

	for (int i = 0; i < 500 && (k = luod_fds(d)) != n; i++)
		usleep(10000);
	return k;
}

/* Whether ret_fds[i] holds file i's text, for every i < n. */
static void assert_files(const int *fds, size_t n, size_t first)
{
	for (size_t i = 0; i < n; i++) {
		char text[32];

		snprintf(text, sizeof(text), "file %zu", first + i);
		ASSERT_EQ(cl_memfd_has(fds[i], text), 1);
		ASSERT_TRUE(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
	}
}

/* Hands session s over and retrieves it; returns the incoming session's fd. */
static int hand_over(struct fixture *f, int s, const char *name)
{
	int in;

	ASSERT_OK(luo_session_handover(s));
	close(s);
	ASSERT_OK(luo_session_retrieve(f->conn, name, &in));
	return in;
}

/* luod's file count for the session name (outgoing), from SHOW. */
static int files_in(struct fixture *f, uint32_t kind, const char *name)
{
	int c = test_luod_connect(&f->d), n;

	ASSERT_OK(c);
	n = cl_show_files(c, kind, name);
	close(c);
	return n;
}

/* Runs a batch of n of the fixture's files, with the file at `at` replaced
 * by bad (if at < n), and checks that it fails with err at that index and
 * that the session and luod's fd table are as before. */
static void assert_batch_fails(struct fixture *f, int s, const char *name, size_t n, size_t at,
			       int bad, int err, size_t want_failed)
{
	int saved = -EBADF, before = luod_fds(&f->d), files = files_in(f, KIND_OUTGOING, name);
	size_t failed = 12345;

	if (at < n) {
		saved = f->fds[at];
		f->fds[at] = bad;
	}
	ASSERT_ERR(luo_session_preserve_fds(s, n, f->tokens, f->fds, &failed), err);
	ASSERT_EQ(failed, want_failed);
	if (at < n)
		f->fds[at] = saved;
	ASSERT_EQ(files_in(f, KIND_OUTGOING, name), files);
	ASSERT_EQ(luod_fds_become(&f->d, before), before);
}

TEST(preserve_fds_then_retrieve_fds_give_every_file_back)
{
	struct fixture f;
	int s, in, out[MANY];
	size_t failed = 7;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "many", 0, &s));
	ASSERT_OK(luo_session_preserve_fds(s, MANY, f.tokens, f.fds, &failed));
	ASSERT_EQ(failed, 7u); /* written on failure only */
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "many"), MANY);
	in = hand_over(&f, s, "many");
	ASSERT_OK(luo_session_retrieve_fds(in, MANY, f.tokens, out, NULL));
	assert_files(out, MANY, 0);
	for (size_t i = 0; i < MANY; i++)
		close(out[i]);
	close(in);
	teardown(&f);
}

TEST(one_message_batch_and_empty_batch)
{
	struct fixture f;
	int s, in, out[10];

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "small", 0, &s));
	ASSERT_OK(luo_session_preserve_fds(s, 0, NULL, NULL, NULL));
	ASSERT_OK(luo_session_preserve_fds(s, 10, f.tokens, f.fds, NULL));
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "small"), 10);
	in = hand_over(&f, s, "small");
	ASSERT_OK(luo_session_retrieve_fds(in, 0, NULL, NULL, NULL));
	ASSERT_OK(luo_session_retrieve_fds(in, 10, f.tokens, out, NULL));
	assert_files(out, 10, 0);
	for (size_t i = 0; i < 10; i++)
		close(out[i]);
	close(in);
	teardown(&f);
}

TEST(batch_calls_check_their_arguments)
{
	struct fixture f;
	size_t failed = 0;
	int s, out[1];

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "args", 0, &s));
	ASSERT_ERR(luo_session_preserve_fds(-1, 3, f.tokens, f.fds, &failed), -EBADF);
	ASSERT_EQ(failed, 3u);
	ASSERT_ERR(luo_session_preserve_fds(s, 3, NULL, f.fds, &failed), -EINVAL);
	ASSERT_ERR(luo_session_preserve_fds(s, 3, f.tokens, NULL, &failed), -EINVAL);
	ASSERT_ERR(luo_session_retrieve_fds(s, 1, f.tokens, NULL, &failed), -EINVAL);
	ASSERT_ERR(luo_session_retrieve_fds(-1, 1, f.tokens, out, &failed), -EBADF);
	/* Each kind of session takes only its own batch. */
	ASSERT_ERR(luo_session_retrieve_fds(s, 1, f.tokens, out, &failed), -EINVAL);
	ASSERT_EQ(failed, 1u);
	ASSERT_OK(luo_session_preserve_fd(s, 1, f.fds[0]));
	int in = hand_over(&f, s, "args");
	ASSERT_ERR(luo_session_preserve_fds(in, 1, f.tokens + 1, f.fds + 1, &failed), -EINVAL);
	close(in);
	teardown(&f);
}

TEST(a_token_twice_in_the_batch_is_eexist_at_the_second)
{
	struct fixture f;
	int s;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "dup", 0, &s));
	f.tokens[400] = f.tokens[17];
	assert_batch_fails(&f, s, "dup", MANY, MANY, -EBADF, -EEXIST, 400);
	f.tokens[400] = 1400;
	/* Nothing of it stayed: the same batch goes in whole now. */
	ASSERT_OK(luo_session_preserve_fds(s, MANY, f.tokens, f.fds, NULL));
	close(s);
	teardown(&f);
}

TEST(a_token_already_in_the_session_is_eexist)
{
	struct fixture f;
	int s, m = cl_memfd("other");

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "taken", 0, &s));
	ASSERT_OK(luo_session_preserve_fd(s, f.tokens[300], m));
	assert_batch_fails(&f, s, "taken", MANY, MANY, -EBADF, -EEXIST, 300);
	close(m);
	close(s);
	teardown(&f);
}

TEST(a_file_already_preserved_is_ebusy)
{
	struct fixture f;
	int s, other;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "busy", 0, &s));
	ASSERT_OK(luo_session_create(f.conn, "elsewhere", 0, &other));
	/* In another session. */
	ASSERT_OK(luo_session_preserve_fd(other, 1, f.fds[500]));
	assert_batch_fails(&f, s, "busy", MANY, MANY, -EBADF, -EBUSY, 500);
	/* Its close taken in (file 500 with it), so that it counts. */
	int held = luod_fds(&f.d);
	close(other);
	ASSERT_EQ(luod_fds_become(&f.d, held - 1), held - 1);
	/* Twice in the batch (a dup of it is the same file): the second is busy. */
	int dup_fd = fcntl(f.fds[3], F_DUPFD_CLOEXEC, 3);
	assert_batch_fails(&f, s, "busy", MANY, 260, dup_fd, -EBUSY, 260);
	close(dup_fd);
	ASSERT_OK(luo_session_preserve_fds(s, MANY, f.tokens, f.fds, NULL));
	close(s);
	teardown(&f);
}

TEST(a_file_no_handler_takes_is_enoent)
{
	struct fixture f;
	int s, null = open("/dev/null", O_RDONLY | O_CLOEXEC), other;

	setup(&f);
	ASSERT_OK(null);
	ASSERT_OK(luo_session_create(f.conn, "nohandler", 0, &s));
	assert_batch_fails(&f, s, "nohandler", MANY, 599, null, -ENOENT, 599);
	/* A session fd is no file to preserve either. */
	ASSERT_OK(luo_session_create(f.conn, "a-session", 0, &other));
	assert_batch_fails(&f, s, "nohandler", MANY, 0, other, -ENOENT, 0);
	close(other);
	close(null);
	close(s);
	teardown(&f);
}

TEST(a_closed_or_o_path_fd_is_ebadf_at_its_index)
{
	struct fixture f;
	int s, path, closed;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "badf", 0, &s));
	path = open("/", O_PATH | O_CLOEXEC);
	closed = eventfd(0, EFD_CLOEXEC);
	ASSERT_OK(path);
	ASSERT_OK(closed);
	close(closed);
	/* In the second message: the first was staged and must go too. */
	assert_batch_fails(&f, s, "badf", MANY, 300, closed, -EBADF, 300);
	assert_batch_fails(&f, s, "badf", MANY, 5, path, -EBADF, 5);
	close(path);
	close(s);
	teardown(&f);
}

TEST(a_batch_past_the_files_limit_is_enospc_at_the_first_file_over)
{
	struct fixture f;
	int s, m = cl_memfd("one");

	setup_with(&f, (const char *const[]){ "--max-files", "301", NULL });
	ASSERT_OK(luo_session_create(f.conn, "limit", 0, &s));
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	assert_batch_fails(&f, s, "limit", MANY, MANY, -EBADF, -ENOSPC, 300);
	ASSERT_OK(luo_session_preserve_fds(s, 300, f.tokens, f.fds, NULL));
	close(m);
	close(s);
	teardown(&f);
}

TEST(retrieve_fds_of_an_unknown_token_is_enoent_and_returns_nothing)
{
	struct fixture f;
	int s, in, out[MANY];
	size_t failed = 0;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "ret", 0, &s));
	ASSERT_OK(luo_session_preserve_fds(s, MANY, f.tokens, f.fds, NULL));
	in = hand_over(&f, s, "ret");
	f.tokens[550] = 99;
	/* The harness fails the case if any fd of the first two messages stayed open. */
	ASSERT_ERR(luo_session_retrieve_fds(in, MANY, f.tokens, out, &failed), -ENOENT);
	ASSERT_EQ(failed, 550u);
	f.tokens[550] = 1550;
	/* A repeated retrieve gives the same open file: the offset is shared. */
	ASSERT_OK(luo_session_retrieve_fds(in, MANY, f.tokens, out, NULL));
	int again;
	ASSERT_OK(luo_session_retrieve_fd(in, f.tokens[10], &again));
	ASSERT_EQ(lseek(out[10], 3, SEEK_SET), 3);
	ASSERT_EQ(lseek(again, 0, SEEK_CUR), 3);
	close(again);
	assert_files(out, MANY, 0);
	for (size_t i = 0; i < MANY; i++)
		close(out[i]);
	/* Finished: every token is gone. */
	ASSERT_OK(luo_session_finish(in));
	ASSERT_ERR(luo_session_retrieve_fds(in, 3, f.tokens, out, &failed), -ENOENT);
	ASSERT_EQ(failed, 0u);
	close(in);
	teardown(&f);
}

/* Sends one part of a batch by hand; the reply's result. */
static int send_part(int s, uint64_t id, uint32_t flags, const uint64_t *tokens, const int *fds,
		     size_t n, uint32_t *ret_failed)
{
	struct luo_wire_fds w = {
		.size = (uint32_t)(LUO_WIRE_FDS_HEADER + 8 * n),
		.flags = flags,
		.count = (uint32_t)n,
		.failed = LUO_WIRE_FDS_NONE,
		.batch = id,
	};
	size_t got = 0;
	int r;

	if (n > 0)
		memcpy(w.tokens, tokens, n * sizeof(uint64_t));
	r = luo_wire_call_fds(s, LUO_SESSION_PRESERVE_FDS, &w, w.size, fds, n, NULL, 0, &got);
	if (ret_failed)
		*ret_failed = w.failed;
	return r;
}

TEST(a_client_that_dies_between_parts_leaves_nothing_of_its_batch)
{
	struct fixture f;
	int status, in, out;
	pid_t pid;

	setup(&f);
	int before = luod_fds(&f.d);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		int s;

		/* Handed over at close: whatever it holds then is what the successor gets. */
		if (luo_session_create(f.conn, "dies", LUO_SESSION_HANDOVER_ON_CLOSE, &s) < 0 ||
		    luo_session_preserve_fd(s, 1, f.fds[0]) < 0 ||
		    send_part(s, 42, LUO_WIRE_FDS_BEGIN, f.tokens + 1, f.fds + 1,
			      LUO_WIRE_BATCH_MAX, NULL) < 0)
			_exit(1);
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ASSERT_OK(luo_session_retrieve_wait(f.conn, "dies", 5000, &in));
	ASSERT_EQ(files_in(&f, KIND_INCOMING, "dies"), 1);
	ASSERT_OK(luo_session_retrieve_fd(in, 1, &out));
	close(out);
	ASSERT_ERR(luo_session_retrieve_fd(in, f.tokens[1], &out), -ENOENT);
	/* luod holds the session's one file, none of the staged ones. */
	ASSERT_EQ(luod_fds_become(&f.d, before + 1), before + 1);
	close(in);
	teardown(&f);
}

/* The same while another process keeps the session open: luod watches the
 * client that started the batch, not only the session socket. */
TEST(a_client_that_dies_between_parts_of_a_shared_session_leaves_nothing)
{
	struct fixture f;
	int status, s;
	pid_t pid;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "shared", 0, &s));
	int before = luod_fds(&f.d);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0)
		_exit(send_part(s, 43, LUO_WIRE_FDS_BEGIN, f.tokens, f.fds, LUO_WIRE_BATCH_MAX,
				NULL) < 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The session is still open here, and holds none of the staged files. */
	ASSERT_EQ(luod_fds_become(&f.d, before), before);
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "shared"), 0);
	ASSERT_OK(luo_session_preserve_fds(s, MANY, f.tokens, f.fds, NULL));
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "shared"), MANY);
	close(s);
	teardown(&f);
}

TEST(other_clients_are_served_between_parts)
{
	struct fixture f;
	int s, other, in, out[2 * LUO_WIRE_BATCH_MAX];
	uint32_t failed;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "slow", 0, &s));
	ASSERT_OK(send_part(s, 7, LUO_WIRE_FDS_BEGIN, f.tokens, f.fds, LUO_WIRE_BATCH_MAX, NULL));
	/* Staged is not preserved: nobody sees it, and its files are not busy yet. */
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "slow"), 0);
	ASSERT_OK(luo_session_create(f.conn, "meanwhile", 0, &other));
	ASSERT_OK(luo_session_preserve_fd(other, 1, f.fds[599]));
	close(other);
	/* A part of a batch luod does not know is refused, and does not end this one. */
	ASSERT_ERR(send_part(s, 8, 0, f.tokens + 300, f.fds + 300, 1, &failed), -ESTALE);
	ASSERT_EQ(failed, LUO_WIRE_FDS_NONE);
	ASSERT_OK(send_part(s, 7, LUO_WIRE_FDS_COMMIT, f.tokens + LUO_WIRE_BATCH_MAX,
			    f.fds + LUO_WIRE_BATCH_MAX, LUO_WIRE_BATCH_MAX, NULL));
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "slow"), 2 * LUO_WIRE_BATCH_MAX);
	in = hand_over(&f, s, "slow");
	ASSERT_OK(luo_session_retrieve_fds(in, 2 * LUO_WIRE_BATCH_MAX, f.tokens, out, NULL));
	assert_files(out, 2 * LUO_WIRE_BATCH_MAX, 0);
	for (size_t i = 0; i < 2 * LUO_WIRE_BATCH_MAX; i++)
		close(out[i]);
	close(in);
	teardown(&f);
}

/* Files a batch staged are held by luod: they count against the owner's file
 * limit until the batch applies or is dropped. */
TEST(staged_files_count_against_the_files_limit)
{
	struct fixture f;
	int s;

	setup_with(&f, (const char *const[]){ "--max-files", "260", NULL });
	ASSERT_OK(luo_session_create(f.conn, "staged", 0, &s));
	ASSERT_OK(send_part(s, 3, LUO_WIRE_FDS_BEGIN, f.tokens, f.fds, LUO_WIRE_BATCH_MAX, NULL));
	for (size_t i = 0; i < 8; i++)
		ASSERT_OK(luo_session_preserve_fd(s, f.tokens[300 + i], f.fds[300 + i]));
	ASSERT_ERR(luo_session_preserve_fd(s, f.tokens[308], f.fds[308]), -ENOSPC);
	ASSERT_OK(send_part(s, 3, LUO_WIRE_FDS_ABORT, NULL, NULL, 0, NULL));
	ASSERT_OK(luo_session_preserve_fd(s, f.tokens[308], f.fds[308]));
	close(s);
	teardown(&f);
}

TEST(an_aborted_batch_leaves_nothing)
{
	struct fixture f;
	int s;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "abort", 0, &s));
	int before = luod_fds(&f.d);
	ASSERT_OK(send_part(s, 9, LUO_WIRE_FDS_BEGIN, f.tokens, f.fds, LUO_WIRE_BATCH_MAX, NULL));
	/* luod holds the staged files. */
	ASSERT_EQ(luod_fds(&f.d), before + LUO_WIRE_BATCH_MAX);
	ASSERT_OK(send_part(s, 9, LUO_WIRE_FDS_ABORT, NULL, NULL, 0, NULL));
	ASSERT_EQ(luod_fds_become(&f.d, before), before);
	ASSERT_ERR(send_part(s, 9, LUO_WIRE_FDS_COMMIT, f.tokens, f.fds, 1, NULL), -ESTALE);
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "abort"), 0);
	close(s);
	teardown(&f);
}

TEST(a_handover_between_parts_ends_the_batch)
{
	struct fixture f;
	int s, in;

	setup(&f);
	int before = luod_fds(&f.d);
	ASSERT_OK(luo_session_create(f.conn, "moved", 0, &s));
	ASSERT_OK(send_part(s, 5, LUO_WIRE_FDS_BEGIN, f.tokens, f.fds, LUO_WIRE_BATCH_MAX, NULL));
	ASSERT_OK(luo_session_handover(s));
	ASSERT_ERR(send_part(s, 5, LUO_WIRE_FDS_COMMIT, f.tokens + 300, f.fds + 300, 1, NULL),
		   -ESTALE);
	close(s);
	ASSERT_OK(luo_session_retrieve(f.conn, "moved", &in));
	ASSERT_EQ(files_in(&f, KIND_INCOMING, "moved"), 0);
	ASSERT_EQ(luod_fds_become(&f.d, before), before);
	close(in);
	teardown(&f);
}

/* The pid of luod's worker once it serves (after a kill: the next one). */
static pid_t serving_worker(struct fixture *f, pid_t not )
{
	for (int i = 0; i < 500; i++) {
		pid_t w = test_luod_worker_pid(&f->d);

		if (w > 0 && w != not ) {
			int c = test_luod_connect(&f->d);
			struct luo_wire_status st;

			ASSERT_OK(c);
			ASSERT_OK(cl_status(c, &st));
			close(c);
			if ((pid_t)st.worker_pid == w)
				return w;
		}
		usleep(10000);
	}
	test_fail_at(__FILE__, __LINE__, "luod's worker did not come back");
}

TEST(a_worker_killed_between_parts_leaves_the_staged_parts_to_its_successor)
{
	struct fixture f;
	int s, in, out[MANY];

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "crash", 0, &s));
	ASSERT_OK(send_part(s, 11, LUO_WIRE_FDS_BEGIN, f.tokens, f.fds, LUO_WIRE_BATCH_MAX, NULL));
	pid_t w = serving_worker(&f, 0);
	ASSERT_OK(kill(w, SIGKILL));
	(void)serving_worker(&f, w);
	ASSERT_OK(send_part(s, 11, 0, f.tokens + 252, f.fds + 252, LUO_WIRE_BATCH_MAX, NULL));
	w = serving_worker(&f, 0);
	ASSERT_OK(kill(w, SIGKILL));
	(void)serving_worker(&f, w);
	ASSERT_OK(send_part(s, 11, LUO_WIRE_FDS_COMMIT, f.tokens + 504, f.fds + 504, MANY - 504,
			    NULL));
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "crash"), MANY);
	in = hand_over(&f, s, "crash");
	ASSERT_OK(luo_session_retrieve_fds(in, MANY, f.tokens, out, NULL));
	assert_files(out, MANY, 0);
	for (size_t i = 0; i < MANY; i++)
		close(out[i]);
	close(in);
	teardown(&f);
}

/* A batch of MANY through libluo while luod's worker dies at fault. */
static void batch_under_fault(const char *fault)
{
	struct fixture f;
	struct rlimit no_core = { 0, 0 };
	int s, in, out[MANY];

#ifndef LUO_TEST_FAULT_INJECTION
	test_skip("luod is built without fault injection (meson setup -Dfault_injection=true)");
#endif
	(void)setrlimit(RLIMIT_CORE, &no_core);
	ASSERT_OK(setenv("LUOD_FAULT", fault, 1));
	setup(&f);
	unsetenv("LUOD_FAULT");
	ASSERT_OK(luo_session_create(f.conn, "fault", 0, &s));
	ASSERT_OK(luo_session_preserve_fds(s, MANY, f.tokens, f.fds, NULL));
	ASSERT_EQ(files_in(&f, KIND_OUTGOING, "fault"), MANY);
	in = hand_over(&f, s, "fault");
	ASSERT_OK(luo_session_retrieve_fds(in, MANY, f.tokens, out, NULL));
	assert_files(out, MANY, 0);
	for (size_t i = 0; i < MANY; i++)
		close(out[i]);
	close(in);
	/* Exactly one worker died: the point fired. */
	int c = test_luod_connect(&f.d);
	struct luo_wire_status st;
	ASSERT_OK(c);
	ASSERT_OK(cl_status(c, &st));
	ASSERT_EQ(st.n_worker_restarts, 1u);
	close(c);
	teardown(&f);
}

TEST(a_worker_killed_while_staging_a_part_loses_nothing)
{
	batch_under_fault("batch-staged@1");
}

TEST(a_worker_killed_while_applying_a_batch_loses_nothing)
{
	batch_under_fault("batch-applied");
}

TEST(a_worker_killed_after_committing_a_part_loses_nothing)
{
	/* The second request: create, then the first part, killed once committed. */
	batch_under_fault("request-committed@1");
}

TEST(a_worker_killed_while_answering_a_retrieve_batch_loses_nothing)
{
	/* create, 3 parts, SHOW, handover, retrieve session: the eighth request is
	 * the first retrieve message. */
	batch_under_fault("request-handled@7");
}

TEST(a_worker_killed_before_sending_a_retrieve_batch_reply_loses_nothing)
{
	/* The first retrieve message again, killed once its reply (252 fds) is
	 * committed and not yet sent: the successor sends it from the journal. */
	batch_under_fault("request-committed@7");
}

/*
 * A RETRIEVE_FDS on the session socket itself (no reply socket of its own: a
 * client with no room for one) gets dups of luod's files, as every reply on a
 * shared socket does (it may wait there for a slow reader): they are the
 * same open files, and outlive the session's finish and close.  On a reply
 * socket of its own luod sends its own fds: the same files either way.
 */
TEST(a_retrieve_batch_on_the_session_socket_itself_is_answered_with_dups)
{
	struct fixture f;
	uint8_t msg[sizeof(struct luo_wire_request) + LUO_WIRE_FDS_HEADER + 8 * 4];
	struct luo_wire_request rq = {
		.op = _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_SESSION_RETRIEVE_FDS), .tag = 77
	};
	struct luo_wire_fds h = { .size = LUO_WIRE_FDS_HEADER + 8 * 4, .count = 4 };
	struct iovec iov = { .iov_base = msg, .iov_len = sizeof(msg) };
	uint8_t reply[256];
	int s, in, got[8], own[4];
	size_t n = 0;
	struct luo_wire_reply rp;

	setup(&f);
	ASSERT_OK(luo_session_create(f.conn, "shared-reply", 0, &s));
	ASSERT_OK(luo_session_preserve_fds(s, 8, f.tokens, f.fds, NULL));
	in = hand_over(&f, s, "shared-reply");
	memcpy(msg, &rq, sizeof(rq));
	memcpy(msg + sizeof(rq), &h, LUO_WIRE_FDS_HEADER);
	memcpy(msg + sizeof(rq) + LUO_WIRE_FDS_HEADER, f.tokens, 8 * 4);
	ASSERT_EQ(socket_send_message(in, &iov, 1, NULL, 0), (ssize_t)sizeof(msg));
	ASSERT_TRUE(socket_recv_message(in, reply, sizeof(reply), got, ELEMENTSOF(got), &n, 0) >=
		    (ssize_t)sizeof(rp));
	memcpy(&rp, reply, sizeof(rp));
	ASSERT_EQ(rp.tag, 77u);
	ASSERT_EQ(rp.result, 0);
	ASSERT_EQ(n, 4u);
	assert_files(got, 4, 0);
	/* The rest through libluo, on a reply socket of its own. */
	ASSERT_OK(luo_session_retrieve_fds(in, 4, f.tokens + 4, own, NULL));
	assert_files(own, 4, 4);
	/* A repeated retrieve is the same open file: the offset is shared. */
	{
		int again;

		ASSERT_OK(luo_session_retrieve_fds(in, 1, f.tokens, &again, NULL));
		ASSERT_EQ(lseek(got[0], 3, SEEK_SET), 3);
		ASSERT_EQ(lseek(again, 0, SEEK_CUR), 3);
		close(again);
	}
	ASSERT_OK(luo_session_finish(in));
	close(in);
	/* luod let go of every file: what the client got is its own. */
	ASSERT_EQ(luod_fds_become(&f.d, 0), 0);
	assert_files(got, 4, 0);
	assert_files(own, 4, 4);
	close_many(got, 4);
	close_many(own, 4);
	teardown(&f);
}

/* The compaction child of the worker, or 0 while there is none. */
static pid_t compaction_child(pid_t worker)
{
	char path[64], buf[64] = "";
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)worker, (int)worker);
	fp = fopen(path, "re");
	if (!fp)
		return 0;
	if (!fgets(buf, sizeof(buf), fp))
		buf[0] = 0;
	fclose(fp);
	return (pid_t)atoi(buf);
}

/* Whether pid runs (not gone, not a zombie waiting for its reaper). */
static bool process_alive(pid_t pid)
{
	char path[64], buf[256];
	FILE *fp;
	char *p;
	bool alive = false;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fp = fopen(path, "re");
	if (!fp)
		return false;
	if (fgets(buf, sizeof(buf), fp) && (p = strrchr(buf, ')')) && p[1] == ' ')
		alive = p[2] != 'Z' && p[2] != 'X';
	fclose(fp);
	return alive;
}

/*
 * A compaction child writes the new journal through an fd number of the table
 * it shares with the worker.  When the worker dies, its successor closes that
 * number as a stray and may give it to the next file it keeps: here a staged
 * file of a batch, which the engine keeps as it came.  A child that outlived
 * its worker would then truncate that client's memfd and write a journal
 * header into it.  The child is made slow (it sleeps 3 s before writing),
 * the worker is killed meanwhile: the child must be gone at once, and the
 * files the successor takes in right after must come back whole.
 */
TEST(a_compaction_child_dies_with_its_worker)
{
	struct luo_wire_status st;
	struct fixture f;
	struct rlimit no_core = { 0, 0 };
	pid_t w, child = 0;
	int c, s, in, back[32];

#ifndef LUO_TEST_FAULT_INJECTION
	test_skip("luod is built without fault injection (meson setup -Dfault_injection=true)");
#endif
	(void)setrlimit(RLIMIT_CORE, &no_core);
	ASSERT_OK(setenv("LUOD_FAULT", "compact-child:1:sleep", 1));
	setup(&f);
	unsetenv("LUOD_FAULT");
	c = test_luod_connect(&f.d);
	ASSERT_OK(c);
	ASSERT_OK(cl_status(c, &st));
	w = (pid_t)st.worker_pid;
	/* Requests fill the log until a compaction starts. */
	for (int i = 0; i < 100000 && !(child = compaction_child(w)); i++)
		ASSERT_OK(cl_status(c, &st));
	ASSERT_TRUE(child > 0);
	ASSERT_OK(kill(w, SIGKILL));
	/* It sleeps 3 s before writing: gone well before, it died with the worker. */
	for (int i = 0; i < 200 && process_alive(child); i++)
		usleep(10000);
	ASSERT_FALSE(process_alive(child));
	/* It sleeps 3 s before writing: gone well before, it died with the worker. */
	for (int i = 0; i < 200 && process_alive(child); i++)
		usleep(10000);
	ASSERT_FALSE(process_alive(child));
	/* It sleeps 3 s before writing: gone well before, it died with the worker. */
	for (int i = 0; i < 200 && process_alive(child); i++)
		usleep(10000);
	ASSERT_FALSE(process_alive(child));
	for (int i = 0; i < 2000 && (pid_t)st.worker_pid == w; i++) {
		usleep(1000);
		close(c);
		c = test_luod_connect(&f.d);
		ASSERT_OK(c);
		ASSERT_OK(cl_status(c, &st));
	}
	ASSERT_NE((pid_t)st.worker_pid, w);
	ASSERT_OK(luo_session_create(f.conn, "after-compaction", 0, &s));
	ASSERT_OK(luo_session_preserve_fds(s, 32, f.tokens, f.fds, NULL));
	in = hand_over(&f, s, "after-compaction");
	ASSERT_OK(luo_session_retrieve_fds(in, 32, f.tokens, back, NULL));
	assert_files(back, 32, 0);
	for (int i = 0; i < 32; i++)
		ASSERT_EQ(lseek(back[i], 0, SEEK_END), (off_t)strlen("file ") + (i < 10 ? 1 : 2));
	close_many(back, 32);
	ASSERT_OK(luo_session_finish(in));
	close(in);
	close(c);
	teardown(&f);
}

TEST_MAIN(TEST_CASE(preserve_fds_then_retrieve_fds_give_every_file_back),
	  TEST_CASE(one_message_batch_and_empty_batch),
	  TEST_CASE(batch_calls_check_their_arguments),
	  TEST_CASE(a_token_twice_in_the_batch_is_eexist_at_the_second),
	  TEST_CASE(a_token_already_in_the_session_is_eexist),
	  TEST_CASE(a_file_already_preserved_is_ebusy),
	  TEST_CASE(a_file_no_handler_takes_is_enoent),
	  TEST_CASE(a_closed_or_o_path_fd_is_ebadf_at_its_index),
	  TEST_CASE(a_batch_past_the_files_limit_is_enospc_at_the_first_file_over),
	  TEST_CASE(retrieve_fds_of_an_unknown_token_is_enoent_and_returns_nothing),
	  TEST_CASE(a_client_that_dies_between_parts_leaves_nothing_of_its_batch),
	  TEST_CASE(a_client_that_dies_between_parts_of_a_shared_session_leaves_nothing),
	  TEST_CASE(other_clients_are_served_between_parts),
	  TEST_CASE(staged_files_count_against_the_files_limit),
	  TEST_CASE(an_aborted_batch_leaves_nothing),
	  TEST_CASE(a_handover_between_parts_ends_the_batch),
	  TEST_CASE(a_worker_killed_between_parts_leaves_the_staged_parts_to_its_successor),
	  TEST_CASE(a_worker_killed_while_staging_a_part_loses_nothing),
	  TEST_CASE(a_worker_killed_while_applying_a_batch_loses_nothing),
	  TEST_CASE(a_worker_killed_after_committing_a_part_loses_nothing),
	  TEST_CASE(a_worker_killed_while_answering_a_retrieve_batch_loses_nothing),
	  TEST_CASE(a_worker_killed_before_sending_a_retrieve_batch_reply_loses_nothing),
	  TEST_CASE(a_retrieve_batch_on_the_session_socket_itself_is_answered_with_dups),
	  TEST_CASE(a_compaction_child_dies_with_its_worker))
