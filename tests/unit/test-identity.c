/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The EBUSY identity (spec section 3, PRESERVE_FD): the same underlying file
 * cannot be preserved twice while the engine holds it, in whatever form it
 * comes back (dup, other token, other session, a second open), and can be
 * again once the engine lets go (abort, finish, reboot drop).  Eventfds,
 * which share one inode, are compared by open file description; pipes by
 * inode.
 */
#include "test-util.h"

/* A decoded file is indexed under the identity the state recorded, without
 * asking its handler: it is then busy exactly like a preserved one. */
TEST(identity_add_known_indexes_without_the_handler)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s"), *other = test_create(e, "o");
	struct luo_file *f = NULL, *g = NULL;
	struct luo_file_id id;
	struct stat st;
	int p[2], calls;

	ASSERT_OK(pipe2(p, O_CLOEXEC));
	ASSERT_OK(fstat(p[0], &st));
	ASSERT_OK(test_handler.get_id(&test_handler, p[0], &st, &id));
	ASSERT_OK(luo_file_new(s, 1, &test_handler, fcntl(p[0], F_DUPFD_CLOEXEC, 3), NULL, 0, &f));
	calls = test_calls[OP_GET_ID];
	ASSERT_OK(luo_identity_add_known(e, f, &id));
	ASSERT_EQ(test_calls[OP_GET_ID], calls);
	/* Busy for anyone else now. */
	ASSERT_ERR(luo_session_preserve_fd(other, 1, p[0]), -EBUSY);
	/* Indexing the same file again replaces its entry. */
	ASSERT_OK(luo_identity_add_known(e, f, &id));
	ASSERT_ERR(luo_session_preserve_fd(other, 1, p[0]), -EBUSY);
	/* Another file with that identity is refused and left unindexed. */
	ASSERT_OK(luo_file_new(s, 2, &test_handler, fcntl(p[0], F_DUPFD_CLOEXEC, 3), NULL, 0, &g));
	ASSERT_ERR(luo_identity_add_known(e, g, &id), -EBUSY);
	ASSERT_TRUE(g->id_node == NULL);
	close(p[0]);
	close(p[1]);
	luo_engine_free(e);
}

TEST(identity_two_eventfds_both_preservable)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int a = test_eventfd(), b = test_eventfd();
	struct stat sa, sb;

	/* They share an inode: only the open file description tells them apart. */
	ASSERT_OK(fstat(a, &sa));
	ASSERT_OK(fstat(b, &sb));
	ASSERT_EQ(sa.st_ino, sb.st_ino);
	ASSERT_OK(luo_session_preserve_fd(s, 1, a));
	ASSERT_OK(luo_session_preserve_fd(s, 2, b));
	close(a);
	close(b);
	luo_engine_free(e);
}

TEST(identity_dup_of_preserved_eventfd_ebusy)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int a = test_eventfd(), d;

	ASSERT_OK(luo_session_preserve_fd(s, 1, a));
	d = fcntl(a, F_DUPFD_CLOEXEC, 0);
	ASSERT_TRUE(d >= 0);
	ASSERT_ERR(luo_session_preserve_fd(s, 2, d), -EBUSY);
	/* The original fd itself under another token, too. */
	ASSERT_ERR(luo_session_preserve_fd(s, 3, a), -EBUSY);
	ASSERT_EQ(luo_session_n_files(s), 1);
	ASSERT_EQ(test_calls[OP_PRESERVE], 1);
	close(a);
	/* Still busy with the caller's original closed: the engine holds it. */
	ASSERT_ERR(luo_session_preserve_fd(s, 4, d), -EBUSY);
	close(d);
	luo_engine_free(e);
}

TEST(identity_preserved_in_another_session_ebusy)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");
	int fd = test_eventfd();

	ASSERT_OK(luo_session_preserve_fd(a, 1, fd));
	ASSERT_ERR(luo_session_preserve_fd(b, 1, fd), -EBUSY);
	ASSERT_EQ(luo_session_n_files(b), 0);
	close(fd);
	luo_engine_free(e);
}

TEST(identity_pipe_by_inode_second_open_ebusy)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	char path[64];
	int fds[2], again;

	ASSERT_OK(pipe2(fds, O_CLOEXEC));
	ASSERT_OK(luo_session_preserve_fd(s, 1, fds[0]));
	/* The other end and a fresh open are other descriptions of the same pipe. */
	ASSERT_ERR(luo_session_preserve_fd(s, 2, fds[1]), -EBUSY);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[0]);
	again = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	ASSERT_TRUE(again >= 0);
	ASSERT_ERR(luo_session_preserve_fd(s, 3, again), -EBUSY);
	close(again);
	close(fds[0]);
	close(fds[1]);
	luo_engine_free(e);
}

TEST(identity_handed_over_not_retrieved_ebusy)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a");
	int fd = test_eventfd();

	ASSERT_OK(luo_session_preserve_fd(a, 1, fd));
	ASSERT_OK(luo_engine_handover_session(e, a));
	/* The engine still holds it for the successor. */
	ASSERT_ERR(luo_session_preserve_fd(test_create(e, "b"), 1, fd), -EBUSY);
	close(fd);
	luo_engine_free(e);
}

TEST(identity_retrieved_not_finished_ebusy)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a"), *b;
	int fd = test_eventfd(), got = -1;

	ASSERT_OK(luo_session_preserve_fd(a, 1, fd));
	close(fd);
	ASSERT_OK(luo_engine_reboot(e));
	a = test_retrieve_session(e, "a");
	ASSERT_OK(luo_session_retrieve_fd(a, 1, &got));
	b = test_create(e, "b");
	ASSERT_ERR(luo_session_preserve_fd(b, 1, got), -EBUSY);
	/* Finished: the file is the caller's alone and can be preserved again. */
	ASSERT_OK(luo_session_finish(a));
	ASSERT_OK(luo_session_preserve_fd(b, 1, got));
	close(got);
	luo_engine_free(e);
}

TEST(identity_released_after_abort)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a");
	int fd = test_eventfd();

	ASSERT_OK(luo_session_preserve_fd(a, 1, fd));
	luo_session_release(a);
	ASSERT_OK(luo_session_preserve_fd(test_create(e, "b"), 1, fd));
	close(fd);
	luo_engine_free(e);
}

TEST(identity_released_after_reboot_drop)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a");
	int fd = test_eventfd();

	ASSERT_OK(luo_session_preserve_fd(a, 1, fd));
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_OK(luo_session_preserve_fd(test_create(e, "b"), 1, fd));
	close(fd);
	luo_engine_free(e);
}

TEST(identity_failed_preserve_leaves_nothing_indexed)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = test_eventfd();

	test_inject.preserve = (struct test_fail){ true, 1, -EIO };
	ASSERT_ERR(luo_session_preserve_fd(s, 1, fd), -EIO);
	ASSERT_TRUE(e->identity_root == NULL);
	test_inject.preserve.on = false;
	ASSERT_OK(luo_session_preserve_fd(s, 2, fd));
	close(fd);
	luo_engine_free(e);
}

TEST(identity_replaced_fd_is_reindexed)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a");
	int orig = test_eventfd(), got = -1;

	ASSERT_OK(luo_session_preserve_fd(a, 1, orig));
	ASSERT_OK(luo_engine_handover_session(e, a));
	a = test_retrieve_session(e, "a");
	test_inject.retrieve_replace = true;
	ASSERT_OK(luo_session_retrieve_fd(a, 1, &got));
	/* The engine now holds the new file: that one is busy, the old one free. */
	ASSERT_ERR(luo_session_preserve_fd(test_create(e, "b"), 1, got), -EBUSY);
	ASSERT_OK(luo_session_preserve_fd(test_create(e, "c"), 1, orig));
	close(got);
	close(orig);
	luo_engine_free(e);
}

TEST(identity_many_eventfds_distinct_and_dups_busy)
{
	enum { N = 2000 };
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	static int fds[N];

	test_need_fds(3 * N + 64);
	for (int i = 0; i < N; i++) {
		fds[i] = test_eventfd();
		ASSERT_OK(luo_session_preserve_fd(s, (uint64_t)i, fds[i]));
	}
	/* Every dup is found, whatever its place in the tree. */
	for (int i = 0; i < N; i += 7) {
		int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);

		ASSERT_TRUE(d >= 0);
		ASSERT_ERR(luo_session_preserve_fd(s, N + (uint64_t)i, d), -EBUSY);
		close(d);
	}
	/* After the abort the index is empty; half of the files come back, and stay busy. */
	luo_session_release(s);
	s = test_create(e, "t");
	for (int i = 0; i < N; i += 2)
		ASSERT_OK(luo_session_preserve_fd(s, (uint64_t)i, fds[i]));
	for (int i = 0; i < N; i += 2)
		ASSERT_ERR(luo_session_preserve_fd(s, N + (uint64_t)i, fds[i]), -EBUSY);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	luo_engine_free(e);
}

TEST(identity_survives_handler_replacing_fd_in_finish)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");
	int keep[8];

	for (uint64_t t = 0; t < 64; t++)
		test_preserve_new(a, t);
	for (int i = 0; i < 8; i++) {
		keep[i] = test_eventfd();
		ASSERT_OK(luo_session_preserve_fd(b, (uint64_t)i, keep[i]));
	}
	ASSERT_OK(luo_engine_handover_session(e, a));
	a = test_retrieve_session(e, "a");
	test_inject.finish_replace = true;
	ASSERT_OK(luo_session_finish(a));
	/* The index holds b's files only, and still finds them. */
	for (int i = 0; i < 8; i++) {
		int d = fcntl(keep[i], F_DUPFD_CLOEXEC, 0);

		ASSERT_ERR(luo_session_preserve_fd(b, 100 + (uint64_t)i, d), -EBUSY);
		close(d);
		close(keep[i]);
	}
	luo_engine_free(e);
}

TEST_MAIN(TEST_CASE(identity_add_known_indexes_without_the_handler),
	  TEST_CASE(identity_two_eventfds_both_preservable),
	  TEST_CASE(identity_dup_of_preserved_eventfd_ebusy),
	  TEST_CASE(identity_preserved_in_another_session_ebusy),
	  TEST_CASE(identity_pipe_by_inode_second_open_ebusy),
	  TEST_CASE(identity_handed_over_not_retrieved_ebusy),
	  TEST_CASE(identity_retrieved_not_finished_ebusy),
	  TEST_CASE(identity_released_after_abort), TEST_CASE(identity_released_after_reboot_drop),
	  TEST_CASE(identity_failed_preserve_leaves_nothing_indexed),
	  TEST_CASE(identity_replaced_fd_is_reindexed),
	  TEST_CASE(identity_many_eventfds_distinct_and_dups_busy),
	  TEST_CASE(identity_survives_handler_replacing_fd_in_finish))
