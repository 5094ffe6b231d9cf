/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The update transitions: handover of one session and the reboot of all
 * (spec section 4).  Both freeze in preservation order and are all or
 * nothing; the failure cases inject a freeze error at the first, a middle and
 * the last file, and in a later session, and compare a snapshot of the whole
 * engine before and after.
 */
#include "test-util.h"

/* Sessions "a" (tokens 1..3) and "b" (tokens 11..13), and an incoming "old". */
static luo_engine *two_sessions(luo_session **ret_a, luo_session **ret_b)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a"), *b;

	for (uint64_t t = 1; t <= 3; t++)
		test_preserve_new(a, t);
	b = test_create(e, "b");
	for (uint64_t t = 11; t <= 13; t++)
		test_preserve_new(b, t);
	if (ret_a)
		*ret_a = a;
	if (ret_b)
		*ret_b = b;
	return e;
}

static void assert_tokens(enum test_op op, const uint64_t *want, size_t n)
{
	uint64_t got[64];
	size_t k = test_log_tokens(op, got, ELEMENTSOF(got));

	ASSERT_EQ(k, n);
	for (size_t i = 0; i < n; i++)
		ASSERT_EQ(got[i], want[i]);
}

/* ---- handover ---- */

TEST(handover_incoming_session_einval)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");

	test_preserve_new(s, 1);
	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_ERR(luo_engine_handover_session(e, s), -EINVAL);
	s = test_retrieve_session(e, "s");
	ASSERT_ERR(luo_engine_handover_session(e, s), -EINVAL);
	ASSERT_EQ(test_calls[OP_FREEZE], 1);
	luo_engine_free(e);
}

TEST(handover_name_taken_by_incoming_eexist_before_freezing)
{
	luo_engine *e = test_engine();
	luo_session *s;
	char *before, *after;

	ASSERT_OK(luo_engine_handover_session(e, test_create(e, "s")));
	s = test_create(e, "s");
	test_preserve_new(s, 1);
	before = test_snapshot(e);
	ASSERT_ERR(luo_engine_handover_session(e, s), -EEXIST);
	ASSERT_EQ(test_calls[OP_FREEZE], 0);
	after = test_snapshot(e);
	ASSERT_SNAPSHOT_EQ(before, after);
	free(before);
	free(after);
	luo_engine_free(e);
}

TEST(handover_freezes_in_preservation_order)
{
	luo_session *a;
	luo_engine *e = two_sessions(&a, NULL);
	const uint64_t want[] = { 1, 2, 3 };

	ASSERT_OK(luo_engine_handover_session(e, a));
	assert_tokens(OP_FREEZE, want, 3);
	ASSERT_EQ(test_calls[OP_UNFREEZE], 0);
	luo_engine_free(e);
}

TEST(handover_moves_session_to_incoming_waiting_and_drops_handle)
{
	luo_session *a, *b;
	luo_engine *e = two_sessions(&a, &b);
	uint64_t h = luo_session_handle(a), update = luo_engine_update_number(e);

	ASSERT_OK(luo_engine_handover_session(e, a));
	ASSERT_EQ(luo_session_kind(a), LUO_SESSION_INCOMING);
	ASSERT_EQ(luo_session_state(a), LUO_SESSION_WAITING);
	ASSERT_EQ(luo_session_handle(a), 0);
	ASSERT_TRUE(luo_engine_session_by_handle(e, h) == NULL);
	ASSERT_EQ(luo_session_n_files(a), 3);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 1);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 1);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_OUTGOING, "a") == NULL);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_INCOMING, "a") == a);
	ASSERT_TRUE(luo_engine_first_session(e, LUO_SESSION_INCOMING) == a);
	/* Only this session moved; the update number is the reboot's. */
	ASSERT_EQ(luo_session_kind(b), LUO_SESSION_OUTGOING);
	ASSERT_EQ(luo_engine_update_number(e), update);
	/* The name is free for a new outgoing session. */
	test_create(e, "a");
	luo_engine_free(e);
}

TEST(handover_then_retrieve_and_finish_whole_cycle)
{
	luo_session *a;
	luo_engine *e = two_sessions(&a, NULL);
	const uint64_t finished[] = { 3, 2, 1 };

	ASSERT_OK(luo_engine_handover_session(e, a));
	a = test_retrieve_session(e, "a");
	test_retrieve_close(a, 2);
	test_retrieve_close(a, 3);
	ASSERT_OK(luo_session_finish(a));
	assert_tokens(OP_FINISH, finished, 3);
	luo_session_release(a);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	ASSERT_EQ(luo_engine_n_files(e), 3);
	luo_engine_free(e);
}

static void handover_freeze_fails_at(uint64_t token, const uint64_t *unfrozen, size_t n)
{
	luo_session *a, *b;
	luo_engine *e = two_sessions(&a, &b);
	char *before, *after;

	before = test_snapshot(e);
	test_inject.freeze = (struct test_fail){ true, token, -EIO };
	ASSERT_ERR(luo_engine_handover_session(e, a), -EIO);
	assert_tokens(OP_UNFREEZE, unfrozen, n);
	after = test_snapshot(e);
	ASSERT_SNAPSHOT_EQ(before, after);
	/* Still usable: another preserve, then a handover that works. */
	test_preserve_new(a, 4);
	test_inject.freeze.on = false;
	ASSERT_OK(luo_engine_handover_session(e, a));
	free(before);
	free(after);
	luo_engine_free(e);
}

TEST(handover_freeze_fails_at_first_file_nothing_changes)
{
	handover_freeze_fails_at(1, NULL, 0);
}

TEST(handover_freeze_fails_at_middle_file_unfreezes_and_nothing_changes)
{
	const uint64_t want[] = { 1 };

	handover_freeze_fails_at(2, want, 1);
}

TEST(handover_freeze_fails_at_last_file_unfreezes_newest_first)
{
	const uint64_t want[] = { 2, 1 };

	handover_freeze_fails_at(3, want, 2);
}

TEST(handover_empty_session_ok)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "empty");

	ASSERT_OK(luo_engine_handover_session(e, s));
	s = test_retrieve_session(e, "empty");
	ASSERT_OK(luo_session_finish(s));
	luo_session_release(s);
	luo_engine_free(e);
}

/* ---- reboot ---- */

TEST(reboot_freezes_sessions_in_creation_order_files_in_preservation_order)
{
	luo_engine *e = two_sessions(NULL, NULL);
	const uint64_t want[] = { 1, 2, 3, 11, 12, 13 };

	ASSERT_OK(luo_engine_reboot(e));
	assert_tokens(OP_FREEZE, want, 6);
	luo_engine_free(e);
}

TEST(reboot_moves_outgoing_to_incoming_in_creation_order)
{
	luo_session *a, *b;
	luo_engine *e = two_sessions(&a, &b);
	uint64_t ha = luo_session_handle(a), hb = luo_session_handle(b);
	luo_session *empty = test_create(e, "c-empty");

	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 3);
	ASSERT_TRUE(luo_engine_first_session(e, LUO_SESSION_INCOMING) == a);
	ASSERT_TRUE(luo_session_next(a) == b);
	ASSERT_TRUE(luo_session_next(b) == empty);
	for (luo_session *s = a; s; s = luo_session_next(s)) {
		ASSERT_EQ(luo_session_kind(s), LUO_SESSION_INCOMING);
		ASSERT_EQ(luo_session_state(s), LUO_SESSION_WAITING);
		ASSERT_EQ(luo_session_handle(s), 0);
	}
	ASSERT_TRUE(luo_engine_session_by_handle(e, ha) == NULL);
	ASSERT_TRUE(luo_engine_session_by_handle(e, hb) == NULL);
	ASSERT_EQ(luo_engine_n_files(e), 6);
	luo_engine_free(e);
}

TEST(reboot_increments_update_number)
{
	luo_engine *e = test_engine();

	ASSERT_EQ(luo_engine_update_number(e), 0);
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_update_number(e), 1);
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_update_number(e), 2);
	luo_engine_free(e);
}

TEST(reboot_drops_every_incoming_session_without_handler_calls)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *waiting = test_create(e, "waiting"), *retrieved = test_create(e, "retrieved"),
		    *finished = test_create(e, "finished"), *stuck = test_create(e, "stuck");
	uint64_t finished_handle;

	test_preserve_new(waiting, 1);
	test_preserve_new(retrieved, 2);
	test_preserve_new(retrieved, 3);
	test_preserve_new(finished, 4);
	test_preserve_new(stuck, 5);
	ASSERT_OK(luo_engine_reboot(e));
	retrieved = test_retrieve_session(e, "retrieved");
	test_retrieve_close(retrieved, 2);
	finished = test_retrieve_session(e, "finished");
	ASSERT_OK(luo_session_finish(finished));
	finished_handle = luo_session_handle(finished);
	stuck = test_retrieve_session(e, "stuck");
	test_inject.can_finish = (struct test_fail){ true, 5, 1 };
	luo_session_release(stuck);
	ASSERT_EQ(luo_session_state(stuck), LUO_SESSION_STUCK);
	test_create(e, "next");

	memset(test_calls, 0, sizeof(test_calls));
	ASSERT_OK(luo_engine_reboot(e));
	/* Only the new outgoing session was frozen; nothing else was called. */
	for (int i = 0; i < _OP_MAX; i++)
		ASSERT_EQ(test_calls[i], 0);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 1);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_INCOMING, "next") != NULL);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	ASSERT_TRUE(luo_engine_session_by_handle(e, finished_handle) == NULL);
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "waiting"), 1000, NULL),
		   -ENOENT);
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "stuck"), 1000, NULL), -ENOENT);
	luo_engine_free(e);
}

TEST(reboot_keeps_new_generation_retrievable)
{
	luo_session *a, *b;
	luo_engine *e = two_sessions(&a, &b);
	int fd = -1;

	ASSERT_OK(luo_engine_reboot(e));
	b = test_retrieve_session(e, "b");
	ASSERT_OK(luo_session_retrieve_fd(b, 12, &fd));
	close(fd);
	ASSERT_ERR(luo_session_retrieve_fd(b, 1, &fd), -ENOENT);
	ASSERT_OK(luo_session_finish(b));
	luo_engine_free(e);
}

TEST(reboot_outgoing_replaces_incoming_of_same_name)
{
	luo_engine *e = test_engine();
	luo_session *old = test_create(e, "same"), *cur;

	test_preserve_new(old, 1);
	ASSERT_OK(luo_engine_handover_session(e, old));
	cur = test_create(e, "same");
	test_preserve_new(cur, 2);
	test_preserve_new(cur, 3);
	/* Handing it over alone is refused, the reboot drops the old one first. */
	ASSERT_ERR(luo_engine_handover_session(e, cur), -EEXIST);
	ASSERT_FALSE(luo_session_crosses_reboot(old));
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 1);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_INCOMING, "same") == cur);
	ASSERT_EQ(luo_session_n_files(cur), 2);
	ASSERT_EQ(luo_engine_n_files(e), 2);
	luo_engine_free(e);
}

TEST(reboot_carries_handed_over_sessions_not_yet_retrieved)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *waiting = test_create(e, "waiting"), *taken = test_create(e, "taken"), *s;

	test_preserve_new(waiting, 1);
	test_preserve_new(taken, 2);
	ASSERT_OK(luo_engine_handover_session(e, waiting));
	ASSERT_OK(luo_engine_handover_session(e, taken));
	/* Retrieved by a successor in this generation: not carried. */
	taken = test_retrieve_session(e, "taken");
	test_create(e, "open");
	ASSERT_TRUE(luo_session_crosses_reboot(waiting));
	ASSERT_FALSE(luo_session_crosses_reboot(taken));

	memset(test_calls, 0, sizeof(test_calls));
	ASSERT_OK(luo_engine_reboot(e));
	/* The handed-over session was frozen at its handover, not again. */
	ASSERT_EQ(test_calls[OP_FREEZE], 0);
	ASSERT_EQ(luo_engine_update_number(e), 1);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 2);
	s = luo_engine_first_session(e, LUO_SESSION_INCOMING);
	ASSERT_TRUE(s == waiting);
	ASSERT_STREQ(luo_session_name(luo_session_next(s)), "open");
	ASSERT_EQ(luo_session_state(waiting), LUO_SESSION_WAITING);
	ASSERT_EQ(luo_session_n_files(waiting), 1);
	ASSERT_EQ(luo_engine_n_files(e), 1);
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "taken"), 1000, NULL), -ENOENT);
	/* It arrived with this reboot now: never retrieved, the next one drops it. */
	ASSERT_FALSE(luo_session_crosses_reboot(waiting));
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	luo_engine_free(e);
}

TEST(reboot_empty_engine_ok)
{
	luo_engine *e = test_engine();

	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	luo_engine_free(e);
}

/*
 * Sessions "a" (1..3), "b" (11..13), and an incoming "old" (21), handed over
 * and waiting, that a successful reboot carries; freeze fails at token;
 * unfrozen is the expected unfreeze order.
 */
static void reboot_freeze_fails_at(uint64_t token, const uint64_t *unfrozen, size_t n)
{
	luo_engine *e = test_engine();
	luo_session *old = test_create(e, "old"), *a, *b;
	char *before, *after;

	test_preserve_new(old, 21);
	ASSERT_OK(luo_engine_handover_session(e, old));
	a = test_create(e, "a");
	for (uint64_t t = 1; t <= 3; t++)
		test_preserve_new(a, t);
	b = test_create(e, "b");
	for (uint64_t t = 11; t <= 13; t++)
		test_preserve_new(b, t);
	test_log_n = 0;
	before = test_snapshot(e);
	test_inject.freeze = (struct test_fail){ true, token, -ENOSPC };
	ASSERT_ERR(luo_engine_reboot(e), -ENOSPC);
	assert_tokens(OP_UNFREEZE, unfrozen, n);
	after = test_snapshot(e);
	ASSERT_SNAPSHOT_EQ(before, after);
	ASSERT_EQ(luo_engine_update_number(e), 0);
	ASSERT_TRUE(luo_engine_session_by_handle(e, luo_session_handle(a)) == a);
	ASSERT_TRUE(luo_engine_session_by_handle(e, luo_session_handle(b)) == b);
	/* The sessions stay usable, and a later reboot goes through. */
	test_preserve_new(b, 14);
	test_inject.freeze.on = false;
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_update_number(e), 1);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 3);
	ASSERT_EQ(luo_engine_n_files(e), 8);
	free(before);
	free(after);
	luo_engine_free(e);
}

TEST(reboot_freeze_fails_at_first_file_nothing_changes)
{
	reboot_freeze_fails_at(1, NULL, 0);
}

TEST(reboot_freeze_fails_at_middle_file_nothing_changes)
{
	const uint64_t want[] = { 1 };

	reboot_freeze_fails_at(2, want, 1);
}

TEST(reboot_freeze_fails_at_last_file_of_first_session_nothing_changes)
{
	const uint64_t want[] = { 2, 1 };

	reboot_freeze_fails_at(3, want, 2);
}

TEST(reboot_freeze_fails_in_later_session_unfreezes_all_nothing_changes)
{
	const uint64_t want[] = { 11, 3, 2, 1 };

	reboot_freeze_fails_at(12, want, 4);
}

TEST(reboot_freeze_fails_at_very_last_file_nothing_changes)
{
	const uint64_t want[] = { 12, 11, 3, 2, 1 };

	reboot_freeze_fails_at(13, want, 5);
}

TEST_MAIN(TEST_CASE(handover_incoming_session_einval),
	  TEST_CASE(handover_name_taken_by_incoming_eexist_before_freezing),
	  TEST_CASE(handover_freezes_in_preservation_order),
	  TEST_CASE(handover_moves_session_to_incoming_waiting_and_drops_handle),
	  TEST_CASE(handover_then_retrieve_and_finish_whole_cycle),
	  TEST_CASE(handover_freeze_fails_at_first_file_nothing_changes),
	  TEST_CASE(handover_freeze_fails_at_middle_file_unfreezes_and_nothing_changes),
	  TEST_CASE(handover_freeze_fails_at_last_file_unfreezes_newest_first),
	  TEST_CASE(handover_empty_session_ok),
	  TEST_CASE(reboot_freezes_sessions_in_creation_order_files_in_preservation_order),
	  TEST_CASE(reboot_moves_outgoing_to_incoming_in_creation_order),
	  TEST_CASE(reboot_increments_update_number),
	  TEST_CASE(reboot_drops_every_incoming_session_without_handler_calls),
	  TEST_CASE(reboot_keeps_new_generation_retrievable),
	  TEST_CASE(reboot_carries_handed_over_sessions_not_yet_retrieved),
	  TEST_CASE(reboot_empty_engine_ok),
	  TEST_CASE(reboot_outgoing_replaces_incoming_of_same_name),
	  TEST_CASE(reboot_freeze_fails_at_first_file_nothing_changes),
	  TEST_CASE(reboot_freeze_fails_at_middle_file_nothing_changes),
	  TEST_CASE(reboot_freeze_fails_at_last_file_of_first_session_nothing_changes),
	  TEST_CASE(reboot_freeze_fails_in_later_session_unfreezes_all_nothing_changes),
	  TEST_CASE(reboot_freeze_fails_at_very_last_file_nothing_changes))
