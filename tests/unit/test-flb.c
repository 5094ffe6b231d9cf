/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * File-Lifecycle-Bound state (spec section 5): one instance per ops per
 * engine, preserved once with the first dependent file, unpreserved once
 * with the last, retrieved once after the update, finished with the last
 * finish, its count carried over handovers and reboots.  The dependent
 * handler is "test-flb-v1", which takes pipes.
 */
#include "core/state.h"
#include "test-util.h"

/* Preserves the read end of a new pipe under token. */
static void preserve_pipe(luo_session *s, uint64_t token)
{
	int fds[2];

	ASSERT_OK(pipe2(fds, O_CLOEXEC));
	ASSERT_OK(luo_session_preserve_fd(s, token, fds[0]));
	close(fds[0]);
	close(fds[1]);
}

static const struct luo_flb *flb_of(luo_engine *e)
{
	const struct luo_flb *flb = luo_engine_find_flb(e, "test-flb-state-v1");

	ASSERT_TRUE(flb != NULL);
	return flb;
}

TEST(flb_created_on_demand_one_per_engine)
{
	luo_engine *e = test_flb_engine();

	ASSERT_TRUE(luo_engine_find_flb(e, "test-flb-state-v1") == NULL);
	preserve_pipe(test_create(e, "a"), 1);
	preserve_pipe(test_create(e, "b"), 1);
	ASSERT_EQ(e->n_flbs, 1);
	ASSERT_TRUE(flb_of(e)->ops == &test_flb_ops);
	ASSERT_TRUE(luo_engine_find_flb(e, "nope") == NULL);
	luo_engine_free(e);
}

TEST(flb_preserved_once_on_first_dependent_file)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");

	preserve_pipe(a, 1);
	ASSERT_EQ(test_flb_calls[FLB_PRESERVE], 1);
	ASSERT_EQ(flb_of(e)->count, 1);
	ASSERT_TRUE(flb_of(e)->fd >= 0);
	preserve_pipe(a, 2);
	preserve_pipe(b, 1);
	ASSERT_EQ(test_flb_calls[FLB_PRESERVE], 1);
	ASSERT_EQ(flb_of(e)->count, 3);
	luo_engine_free(e);
}

TEST(flb_unpreserved_once_on_last_dependent_file)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");

	preserve_pipe(a, 1);
	preserve_pipe(a, 2);
	preserve_pipe(b, 1);
	luo_session_release(a);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 0);
	ASSERT_EQ(flb_of(e)->count, 1);
	luo_session_release(b);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 1);
	ASSERT_EQ(flb_of(e)->count, 0);
	/* Its resources are released by the engine (the harness checks the fd). */
	ASSERT_TRUE(flb_of(e)->fd < 0);
	ASSERT_TRUE(flb_of(e)->data == NULL);
	/* The next dependent file preserves it again. */
	preserve_pipe(test_create(e, "c"), 1);
	ASSERT_EQ(test_flb_calls[FLB_PRESERVE], 2);
	luo_engine_free(e);
}

TEST(flb_preserve_failure_fails_preserve_fd)
{
	luo_engine *e = test_flb_engine();
	luo_session *s = test_create(e, "s");
	int fds[2];

	test_flb_inject.fail_preserve = -ENODEV;
	ASSERT_OK(pipe2(fds, O_CLOEXEC));
	ASSERT_ERR(luo_session_preserve_fd(s, 1, fds[0]), -ENODEV);
	ASSERT_EQ(test_calls[OP_PRESERVE], 0);
	ASSERT_EQ(luo_session_n_files(s), 0);
	ASSERT_EQ(flb_of(e)->count, 0);
	/* Nothing indexed: the same pipe goes in once the FLB works. */
	test_flb_inject.fail_preserve = 0;
	ASSERT_OK(luo_session_preserve_fd(s, 1, fds[0]));
	ASSERT_EQ(flb_of(e)->count, 1);
	close(fds[0]);
	close(fds[1]);
	luo_engine_free(e);
}

TEST(flb_handler_preserve_failure_undoes_flb)
{
	luo_engine *e = test_flb_engine();
	luo_session *s = test_create(e, "s");
	int fds[2];

	ASSERT_OK(pipe2(fds, O_CLOEXEC));
	test_inject.preserve = (struct test_fail){ true, 1, -EOPNOTSUPP };
	ASSERT_ERR(luo_session_preserve_fd(s, 1, fds[0]), -EOPNOTSUPP);
	/* The FLB was preserved for this file alone, so it goes again. */
	ASSERT_EQ(test_flb_calls[FLB_PRESERVE], 1);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 1);
	ASSERT_EQ(flb_of(e)->count, 0);
	ASSERT_TRUE(flb_of(e)->fd < 0);
	close(fds[0]);
	close(fds[1]);
	luo_engine_free(e);
}

TEST(flb_count_carried_over_handover)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");

	preserve_pipe(a, 1);
	preserve_pipe(a, 2);
	preserve_pipe(b, 1);
	ASSERT_OK(luo_engine_handover_session(e, a));
	ASSERT_EQ(flb_of(e)->count, 3);
	ASSERT_TRUE(flb_of(e)->incoming);
	ASSERT_FALSE(flb_of(e)->retrieved);
	ASSERT_EQ(test_flb_calls[FLB_PRESERVE], 1);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 0);
	ASSERT_EQ(test_flb_calls[FLB_RETRIEVE], 0);
	luo_engine_free(e);
}

TEST(flb_count_carried_over_reboot)
{
	luo_engine *e = test_flb_engine();

	preserve_pipe(test_create(e, "a"), 1);
	preserve_pipe(test_create(e, "b"), 1);
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(flb_of(e)->count, 2);
	ASSERT_TRUE(flb_of(e)->incoming);
	ASSERT_TRUE(flb_of(e)->fd >= 0);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 0);
	luo_engine_free(e);
}

TEST(flb_retrieved_once_after_update)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a");

	preserve_pipe(a, 1);
	preserve_pipe(a, 2);
	ASSERT_OK(luo_engine_reboot(e));
	a = test_retrieve_session(e, "a");
	ASSERT_EQ(test_flb_calls[FLB_RETRIEVE], 0);
	test_retrieve_close(a, 2);
	ASSERT_EQ(test_flb_calls[FLB_RETRIEVE], 1);
	ASSERT_TRUE(flb_of(e)->retrieved);
	ASSERT_FALSE(flb_of(e)->incoming);
	test_retrieve_close(a, 1);
	test_retrieve_close(a, 2);
	ASSERT_EQ(test_flb_calls[FLB_RETRIEVE], 1);
	luo_engine_free(e);
}

TEST(flb_not_retrieved_without_update)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a");

	preserve_pipe(a, 1);
	ASSERT_FALSE(flb_of(e)->incoming);
	luo_session_release(a);
	ASSERT_EQ(test_flb_calls[FLB_RETRIEVE], 0);
	luo_engine_free(e);
}

TEST(flb_retrieve_failure_fails_file_retrieve_permanently)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a");
	int fd = -1;

	preserve_pipe(a, 1);
	preserve_pipe(a, 2);
	ASSERT_OK(luo_engine_reboot(e));
	a = test_retrieve_session(e, "a");
	test_flb_inject.fail_retrieve = -EIO;
	ASSERT_ERR(luo_session_retrieve_fd(a, 1, &fd), -EIO);
	ASSERT_EQ(test_calls[OP_RETRIEVE], 0);
	test_flb_inject.fail_retrieve = 0;
	ASSERT_ERR(luo_session_retrieve_fd(a, 1, &fd), -EIO);
	/* Another dependent file retries the FLB. */
	test_retrieve_close(a, 2);
	ASSERT_EQ(test_flb_calls[FLB_RETRIEVE], 2);
	ASSERT_TRUE(flb_of(e)->retrieved);
	ASSERT_EQ(fd, -1);
	luo_engine_free(e);
}

TEST(flb_finished_on_last_dependent_finish)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");

	preserve_pipe(a, 1);
	preserve_pipe(a, 2);
	preserve_pipe(b, 1);
	ASSERT_OK(luo_engine_reboot(e));
	a = test_retrieve_session(e, "a");
	b = test_retrieve_session(e, "b");
	test_retrieve_close(a, 1);
	ASSERT_OK(luo_session_finish(a));
	ASSERT_EQ(flb_of(e)->count, 1);
	ASSERT_EQ(test_flb_calls[FLB_FINISH], 0);
	/* b's file was never retrieved; finishing discards it and ends the FLB. */
	ASSERT_OK(luo_session_finish(b));
	ASSERT_EQ(flb_of(e)->count, 0);
	ASSERT_EQ(test_flb_calls[FLB_FINISH], 1);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 0);
	ASSERT_TRUE(flb_of(e)->fd < 0);
	ASSERT_FALSE(flb_of(e)->retrieved);
	luo_engine_free(e);
}

TEST(flb_refused_finish_keeps_count)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a");

	preserve_pipe(a, 1);
	preserve_pipe(a, 2);
	ASSERT_OK(luo_engine_reboot(e));
	a = test_retrieve_session(e, "a");
	test_inject.can_finish = (struct test_fail){ true, 2, 1 };
	ASSERT_ERR(luo_session_finish(a), -EBUSY);
	ASSERT_EQ(flb_of(e)->count, 2);
	ASSERT_EQ(test_flb_calls[FLB_FINISH], 0);
	luo_engine_free(e);
}

TEST(flb_reboot_drop_unpreserves_at_zero)
{
	luo_engine *e = test_flb_engine();

	preserve_pipe(test_create(e, "a"), 1);
	preserve_pipe(test_create(e, "a2"), 1);
	ASSERT_OK(luo_engine_reboot(e));
	/* Nobody retrieved them: the next reboot drops both files. */
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(flb_of(e)->count, 0);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 1);
	ASSERT_EQ(test_flb_calls[FLB_FINISH], 0);
	ASSERT_TRUE(flb_of(e)->fd < 0);
	luo_engine_free(e);
}

TEST(flb_reboot_drop_and_carry_in_one_reboot)
{
	luo_engine *e = test_flb_engine();

	preserve_pipe(test_create(e, "old"), 1);
	ASSERT_OK(luo_engine_reboot(e));
	preserve_pipe(test_create(e, "new"), 1);
	ASSERT_EQ(flb_of(e)->count, 2);
	/* "old" is dropped, "new" carried over: one dependent remains. */
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(flb_of(e)->count, 1);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 0);
	ASSERT_TRUE(flb_of(e)->incoming);
	luo_engine_free(e);
}

TEST(flb_freeze_failure_leaves_flb_unchanged)
{
	luo_engine *e = test_flb_engine();
	luo_session *a = test_create(e, "a");

	preserve_pipe(a, 1);
	test_inject.freeze = (struct test_fail){ true, 1, -EIO };
	ASSERT_ERR(luo_engine_reboot(e), -EIO);
	ASSERT_EQ(flb_of(e)->count, 1);
	ASSERT_FALSE(flb_of(e)->incoming);
	luo_engine_free(e);
}

TEST(flb_count_and_flags_survive_encode_decode)
{
	luo_engine *e = test_flb_engine(), *d = NULL;
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");
	const struct luo_flb *flb;
	void *blob = NULL;
	size_t size = 0;
	int flb_fd;

	preserve_pipe(a, 1);
	preserve_pipe(a, 2);
	preserve_pipe(b, 1);
	ASSERT_OK(luo_engine_handover_session(e, a));
	flb_fd = flb_of(e)->fd;
	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	ASSERT_OK(luo_engine_new(&d));
	ASSERT_OK(luo_engine_add_handler(d, &test_flb_handler));
	ASSERT_OK(luo_state_decode(d, blob, size, 0, NULL));
	free(blob);
	/* d owns the fds now. */
	e->borrowed_fds = true;
	luo_engine_free(e);

	flb = flb_of(d);
	ASSERT_EQ(flb->count, 3);
	ASSERT_TRUE(flb->incoming);
	ASSERT_FALSE(flb->retrieved);
	ASSERT_EQ(flb->fd, flb_fd);
	/* The counting goes on where it stopped: retrieve once, finish with the last. */
	a = test_retrieve_session(d, "a");
	test_retrieve_close(a, 1);
	test_retrieve_close(a, 2);
	ASSERT_EQ(test_flb_calls[FLB_RETRIEVE], 1);
	ASSERT_OK(luo_session_finish(a));
	ASSERT_EQ(flb_of(d)->count, 1);
	luo_session_release(luo_engine_find_session(d, LUO_SESSION_OUTGOING, "b"));
	ASSERT_EQ(flb_of(d)->count, 0);
	ASSERT_EQ(test_flb_calls[FLB_FINISH], 0);
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 1);
	ASSERT_FALSE(fd_is_open(flb_fd));
	luo_engine_free(d);
}

TEST(flb_engine_free_with_borrowed_fds_closes_nothing)
{
	luo_engine *e = test_flb_engine();
	luo_session *s = test_create(e, "a");
	int fd, file_fd;

	preserve_pipe(s, 1);
	fd = flb_of(e)->fd;
	file_fd = list_entry(s->files.node.next, struct luo_file, order)->hf.fd;
	ASSERT_TRUE(fd_is_open(fd));
	e->borrowed_fds = true;
	luo_engine_free(e);
	ASSERT_TRUE(fd_is_open(fd));
	ASSERT_TRUE(fd_is_open(file_fd));
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 0);
	close(fd);
	close(file_fd);
}

/* A copy of luod's state (a kexec's scratch engine) borrows the fds: a reboot
 * that drops the last dependent file must not close the FLB's fd, which is
 * the original engine's. */
TEST(flb_reboot_drop_in_a_borrowing_engine_closes_nothing)
{
	luo_engine *e = test_flb_engine();
	luo_session *s = test_create(e, "a");
	int fd, file_fd;

	preserve_pipe(s, 1);
	ASSERT_OK(luo_engine_handover_session(e, s));
	s = test_retrieve_session(e, "a"); /* retrieved: the reboot drops it */
	fd = flb_of(e)->fd;
	file_fd = list_entry(s->files.node.next, struct luo_file, order)->hf.fd;
	e->borrowed_fds = true;
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_n_files(e), 0);
	ASSERT_EQ(flb_of(e)->count, 0);
	ASSERT_TRUE(fd_is_open(fd));
	ASSERT_TRUE(fd_is_open(file_fd));
	luo_engine_free(e);
	ASSERT_TRUE(fd_is_open(fd));
	close(fd);
	close(file_fd);
}

TEST(flb_engine_free_closes_flb_fd)
{
	luo_engine *e = test_flb_engine();
	int fd;

	preserve_pipe(test_create(e, "a"), 1);
	fd = flb_of(e)->fd;
	luo_engine_free(e);
	ASSERT_FALSE(fd_is_open(fd));
	ASSERT_EQ(test_flb_calls[FLB_UNPRESERVE], 0);
}

TEST_MAIN(TEST_CASE(flb_created_on_demand_one_per_engine),
	  TEST_CASE(flb_reboot_drop_in_a_borrowing_engine_closes_nothing),
	  TEST_CASE(flb_preserved_once_on_first_dependent_file),
	  TEST_CASE(flb_unpreserved_once_on_last_dependent_file),
	  TEST_CASE(flb_preserve_failure_fails_preserve_fd),
	  TEST_CASE(flb_handler_preserve_failure_undoes_flb),
	  TEST_CASE(flb_count_carried_over_handover), TEST_CASE(flb_count_carried_over_reboot),
	  TEST_CASE(flb_retrieved_once_after_update), TEST_CASE(flb_not_retrieved_without_update),
	  TEST_CASE(flb_retrieve_failure_fails_file_retrieve_permanently),
	  TEST_CASE(flb_finished_on_last_dependent_finish),
	  TEST_CASE(flb_refused_finish_keeps_count), TEST_CASE(flb_reboot_drop_unpreserves_at_zero),
	  TEST_CASE(flb_reboot_drop_and_carry_in_one_reboot),
	  TEST_CASE(flb_freeze_failure_leaves_flb_unchanged),
	  TEST_CASE(flb_count_and_flags_survive_encode_decode),
	  TEST_CASE(flb_engine_free_with_borrowed_fds_closes_nothing),
	  TEST_CASE(flb_engine_free_closes_flb_fd))
