/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine's commands, one case per rule and errno of spec sections 3 to 5
 * (handlers, names, create, retrieve, preserve_fd, retrieve_fd, finish and
 * release).  Update transitions are in test-transitions.c, FLB counting in
 * test-flb.c, the EBUSY identity in test-identity.c.
 */
#include <linux/kcmp.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "test-util.h"

static bool same_description(int a, int b)
{
	return syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b) == 0;
}

/* Hands s over and retrieves it again, returning the incoming session. */
static luo_session *handover_and_retrieve(luo_engine *e, luo_session *s)
{
	char name[LUO_NAME_FIELD];

	snprintf(name, sizeof(name), "%s", luo_session_name(s));
	ASSERT_OK(luo_engine_handover_session(e, s));
	return test_retrieve_session(e, name);
}

/* ---- handlers ---- */

TEST(add_handler_compatible_empty_einval)
{
	luo_engine *e = NULL;
	struct luo_handler h = test_handler;

	ASSERT_OK(luo_engine_new(&e));
	h.compatible = "";
	ASSERT_ERR(luo_engine_add_handler(e, &h), -EINVAL);
	h.compatible = NULL;
	ASSERT_ERR(luo_engine_add_handler(e, &h), -EINVAL);
	luo_engine_free(e);
}

TEST(add_handler_compatible_longer_than_47_einval)
{
	luo_engine *e = NULL;
	struct luo_handler h47 = test_handler, h48 = test_handler;
	char c47[48], c48[49];

	memset(c47, 'a', 47);
	c47[47] = 0;
	memset(c48, 'b', 48);
	c48[48] = 0;
	h47.compatible = c47;
	h48.compatible = c48;
	ASSERT_OK(luo_engine_new(&e));
	ASSERT_ERR(luo_engine_add_handler(e, &h48), -EINVAL);
	ASSERT_OK(luo_engine_add_handler(e, &h47));
	ASSERT_TRUE(luo_engine_find_handler(e, c47) == &h47);
	ASSERT_TRUE(luo_engine_find_handler(e, c48) == NULL);
	luo_engine_free(e);
}

TEST(add_handler_duplicate_compatible_eexist)
{
	luo_engine *e = test_engine();
	struct luo_handler h = test_handler;

	ASSERT_ERR(luo_engine_add_handler(e, &h), -EEXIST);
	ASSERT_TRUE(luo_engine_find_handler(e, "test-v1") == &test_handler);
	luo_engine_free(e);
}

TEST(add_handler_more_than_max_enospc)
{
	static struct luo_handler hs[LUO_MAX_HANDLERS + 1];
	static char names[LUO_MAX_HANDLERS + 1][16];
	luo_engine *e = NULL;

	ASSERT_OK(luo_engine_new(&e));
	for (size_t i = 0; i <= LUO_MAX_HANDLERS; i++) {
		hs[i] = test_handler;
		snprintf(names[i], sizeof(names[i]), "h%zu", i);
		hs[i].compatible = names[i];
		if (i < LUO_MAX_HANDLERS)
			ASSERT_OK(luo_engine_add_handler(e, &hs[i]));
		else
			ASSERT_ERR(luo_engine_add_handler(e, &hs[i]), -ENOSPC);
	}
	luo_engine_free(e);
}

/* ---- create ---- */

TEST(create_session_empty_name_einval)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD] = { 0 };

	ASSERT_ERR(luo_engine_create_session(e, field, 0, 1000, NULL), -EINVAL);
	/* Bytes after a leading NUL do not make it a name. */
	field[1] = 'x';
	ASSERT_ERR(luo_engine_create_session(e, field, 0, 1000, NULL), -EINVAL);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	luo_engine_free(e);
}

TEST(create_session_name_without_nul_einval)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];

	memset(field, 'n', sizeof(field));
	ASSERT_ERR(luo_engine_create_session(e, field, 0, 1000, NULL), -EINVAL);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	luo_engine_free(e);
}

TEST(create_session_name_of_63_bytes_ok)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = NULL;

	memset(field, 'n', sizeof(field));
	field[63] = 0;
	ASSERT_OK(luo_engine_create_session(e, field, 0, 1000, &s));
	ASSERT_EQ(strlen(luo_session_name(s)), 63);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_OUTGOING, (const char *)field) == s);
	luo_engine_free(e);
}

TEST(create_session_bytes_after_nul_ignored)
{
	luo_engine *e = test_engine();
	uint8_t a[LUO_NAME_FIELD] = "name\0garbage", b[LUO_NAME_FIELD] = "name\0other";
	luo_session *s = NULL;

	ASSERT_OK(luo_engine_create_session(e, a, 0, 1000, &s));
	ASSERT_STREQ(luo_session_name(s), "name");
	ASSERT_ERR(luo_engine_create_session(e, b, 0, 1000, NULL), -EEXIST);
	luo_engine_free(e);
}

TEST(create_session_any_non_nul_byte_allowed)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];

	/* 255 one-byte names, every byte value but NUL: all distinct. */
	for (int c = 1; c < 256; c++) {
		memset(field, 0, sizeof(field));
		field[0] = (uint8_t)c;
		ASSERT_OK(luo_engine_create_session(e, field, 0, 1000, NULL));
	}
	memset(field, 0, sizeof(field));
	memcpy(field, "\xff\x01 /\n\t", 6);
	ASSERT_OK(luo_engine_create_session(e, field, 0, 1000, NULL));
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 256);
	luo_engine_free(e);
}

TEST(create_session_unknown_flags_einval)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];

	ASSERT_ERR(
		luo_engine_create_session(e, test_name(field, "s"), UINT64_C(1) << 1, 1000, NULL),
		-EINVAL);
	ASSERT_ERR(luo_engine_create_session(e, field, UINT64_MAX, 1000, NULL), -EINVAL);
	ASSERT_OK(luo_engine_create_session(e, field, LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 1000,
					    NULL));
	luo_engine_free(e);
}

TEST(create_session_duplicate_outgoing_name_eexist)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = test_create(e, "dup");
	uint64_t next = e->next_handle;

	ASSERT_ERR(luo_engine_create_session(e, test_name(field, "dup"), 0, 1000, NULL), -EEXIST);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 1);
	/* A refused create uses up no handle. */
	ASSERT_EQ(e->next_handle, next);
	ASSERT_EQ(luo_session_handle(s), next);
	luo_engine_free(e);
}

TEST(create_session_with_incoming_name_allowed)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "same");

	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_TRUE(test_create(e, "same") != NULL);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 1);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 1);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_INCOMING, "same") == s);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_OUTGOING, "same") != s);
	luo_engine_free(e);
}

TEST(create_session_open_with_fresh_handle_and_owner)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *a = NULL, *b = NULL;

	ASSERT_OK(luo_engine_create_session(e, test_name(field, "a"),
					    LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 42, &a));
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "b"), 0, 43, &b));
	ASSERT_EQ(luo_session_kind(a), LUO_SESSION_OUTGOING);
	ASSERT_EQ(luo_session_state(a), LUO_SESSION_OPEN);
	ASSERT_EQ(luo_session_flags(a), LUO_SESSION_FLAG_HANDOVER_ON_CLOSE);
	ASSERT_EQ(luo_session_uid(a), 42);
	ASSERT_EQ(luo_session_uid(b), 43);
	ASSERT_NE(luo_session_handle(a), 0);
	ASSERT_EQ(luo_session_handle(b), luo_session_handle(a) + 1);
	ASSERT_TRUE(luo_engine_session_by_handle(e, luo_session_handle(a)) == a);
	ASSERT_TRUE(luo_engine_session_by_handle(e, luo_session_handle(b)) == b);
	ASSERT_TRUE(luo_engine_session_by_handle(e, 0) == NULL);
	ASSERT_TRUE(luo_engine_first_session(e, LUO_SESSION_OUTGOING) == a);
	ASSERT_TRUE(luo_session_next(a) == b);
	ASSERT_TRUE(luo_session_next(b) == NULL);
	ASSERT_EQ(luo_session_n_files(a), 0);
	luo_engine_free(e);
}

TEST(create_session_name_reusable_after_abort)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "again");
	uint64_t h = luo_session_handle(s);

	luo_session_release(s);
	ASSERT_TRUE(luo_engine_session_by_handle(e, h) == NULL);
	s = test_create(e, "again");
	/* Handles are never reused. */
	ASSERT_TRUE(luo_session_handle(s) > h);
	luo_engine_free(e);
}

/* ---- retrieve session ---- */

TEST(retrieve_session_unknown_name_enoent)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];

	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "nope"), 1000, NULL), -ENOENT);
	luo_engine_free(e);
}

TEST(retrieve_session_malformed_name_einval)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD] = { 0 };

	ASSERT_ERR(luo_engine_retrieve_session(e, field, 1000, NULL), -EINVAL);
	memset(field, 'x', sizeof(field));
	ASSERT_ERR(luo_engine_retrieve_session(e, field, 1000, NULL), -EINVAL);
	luo_engine_free(e);
}

TEST(retrieve_session_outgoing_name_enoent)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];

	test_create(e, "out");
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "out"), 1000, NULL), -ENOENT);
	luo_engine_free(e);
}

TEST(retrieve_session_waiting_becomes_retrieved_with_fresh_handle)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s"), *r;
	uint64_t old = luo_session_handle(s);

	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_EQ(luo_session_handle(s), 0);
	ASSERT_TRUE(luo_engine_session_by_handle(e, old) == NULL);
	r = test_retrieve_session(e, "s");
	ASSERT_TRUE(r == s);
	ASSERT_EQ(luo_session_state(r), LUO_SESSION_RETRIEVED);
	ASSERT_EQ(luo_session_kind(r), LUO_SESSION_INCOMING);
	ASSERT_TRUE(luo_session_handle(r) > old);
	ASSERT_TRUE(luo_engine_session_by_handle(e, luo_session_handle(r)) == r);
	ASSERT_TRUE(luo_engine_session_by_handle(e, old) == NULL);
	luo_engine_free(e);
}

TEST(retrieve_session_twice_einval)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = test_create(e, "twice");
	uint64_t h;

	ASSERT_OK(luo_engine_handover_session(e, s));
	test_retrieve_session(e, "twice");
	h = luo_session_handle(s);
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "twice"), 1000, NULL), -EINVAL);
	ASSERT_EQ(luo_session_handle(s), h);
	luo_engine_free(e);
}

TEST(retrieve_session_other_uid_enoent)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = test_create(e, "mine"); /* uid 1000 */

	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "mine"), 1001, NULL), -ENOENT);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_WAITING);
	luo_engine_free(e);
}

/*
 * Names are per uid: root retrieves in its own names like anyone, so a
 * session another uid left under a name is not root's to take by accident.
 * LUO_UID_ANY (tools) takes the first of that name in any uid's names.
 */
TEST(retrieve_session_in_the_callers_names_only)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");

	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "a"), 0, NULL), -ENOENT);
	ASSERT_EQ(luo_session_state(a), LUO_SESSION_WAITING);
	ASSERT_OK(luo_engine_retrieve_session(e, test_name(field, "a"), 1000, NULL));
	ASSERT_OK(luo_engine_retrieve_session(e, test_name(field, "b"), LUO_UID_ANY, NULL));
	ASSERT_EQ(luo_session_state(a), LUO_SESSION_RETRIEVED);
	ASSERT_EQ(luo_session_state(b), LUO_SESSION_RETRIEVED);
	/* The owner stays the creator. */
	ASSERT_EQ(luo_session_uid(a), 1000);
	luo_engine_free(e);
}

/* Two uids may use one name: neither can tell, nor take the other's. */
TEST(same_name_for_two_uids_is_two_sessions)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *mine, *theirs, *got;

	ASSERT_OK(luo_engine_create_session(e, test_name(field, "state"), 0, 1000, &mine));
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "state"), 0, 2000, &theirs));
	ASSERT_ERR(luo_engine_create_session(e, test_name(field, "state"), 0, 2000, &got), -EEXIST);
	ASSERT_OK(luo_engine_handover_session(e, mine));
	ASSERT_OK(luo_engine_handover_session(e, theirs));
	ASSERT_OK(luo_engine_retrieve_session(e, test_name(field, "state"), 2000, &got));
	ASSERT_TRUE(got == theirs);
	ASSERT_EQ(luo_session_uid(got), 2000);
	ASSERT_EQ(luo_session_state(mine), LUO_SESSION_WAITING);
	ASSERT_TRUE(luo_engine_find_session_of(e, LUO_SESSION_INCOMING, 1000, "state") == mine);
	luo_engine_free(e);
}

TEST(retrieve_session_finished_einval)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = handover_and_retrieve(e, test_create(e, "fin"));

	ASSERT_OK(luo_session_finish(s));
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "fin"), 1000, NULL), -EINVAL);
	luo_engine_free(e);
}

TEST(retrieve_session_after_finish_and_close_enoent)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = handover_and_retrieve(e, test_create(e, "gone"));

	ASSERT_OK(luo_session_finish(s));
	luo_session_release(s);
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "gone"), 1000, NULL), -ENOENT);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	luo_engine_free(e);
}

/* ---- preserve_fd ---- */

TEST(preserve_fd_on_incoming_session_einval)
{
	luo_engine *e = test_engine();
	luo_session *s = handover_and_retrieve(e, test_create(e, "in"));
	int fd = test_eventfd();

	ASSERT_ERR(luo_session_preserve_fd(s, 1, fd), -EINVAL);
	/* Checked before anything about the fd. */
	ASSERT_ERR(luo_session_preserve_fd(s, 1, -1), -EINVAL);
	ASSERT_EQ(test_calls[OP_CAN_PRESERVE], 0);
	close(fd);
	luo_engine_free(e);
}

static int held_fd_of(const struct luo_file_info *fi, void *userdata)
{
	*(int *)userdata = fi->fd;
	return 1;
}

/* The batch's preserve: the engine keeps the very fd it is given on success,
 * and gives it back open on every failure, after the handler's preserve too. */
TEST(preserve_fd_take_keeps_the_fd_on_success_and_gives_it_back_on_failure)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int a = test_eventfd(), b = test_eventfd(), held = -1;

	ASSERT_OK(luo_session_preserve_fd_take(s, 1, a, NULL));
	ASSERT_EQ(luo_session_foreach_file(s, held_fd_of, &held), 1);
	ASSERT_EQ(held, a);
	ASSERT_ERR(luo_session_preserve_fd_take(s, 1, b, NULL), -EEXIST);
	ASSERT_TRUE(fcntl(b, F_GETFD) >= 0);
	test_inject.preserve = (struct test_fail){ .on = true, .token = 2, .err = -EIO };
	ASSERT_ERR(luo_session_preserve_fd_take(s, 2, b, NULL), -EIO);
	ASSERT_EQ(test_calls[OP_PRESERVE], 2);
	ASSERT_TRUE(fcntl(b, F_GETFD) >= 0);
	ASSERT_EQ(luo_session_n_files(s), 1);
	close(b);
	luo_engine_free(e); /* closes a, the engine's */
	ASSERT_TRUE(fcntl(a, F_GETFD) < 0);
}

/* Undoing a file of a failed batch: the handler's unpreserve, the identity
 * freed (the file can be preserved again), the token free again. */
TEST(unpreserve_fd_takes_one_file_back_out)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int a = test_eventfd();

	ASSERT_OK(luo_session_preserve_fd(s, 1, a));
	ASSERT_OK(luo_session_unpreserve_fd(s, 1));
	ASSERT_EQ(test_calls[OP_UNPRESERVE], 1);
	ASSERT_EQ(luo_session_n_files(s), 0);
	ASSERT_ERR(luo_session_unpreserve_fd(s, 1), -ENOENT);
	ASSERT_OK(luo_session_preserve_fd(s, 1, a));
	luo_session *in = handover_and_retrieve(e, s);
	ASSERT_ERR(luo_session_unpreserve_fd(in, 1), -EINVAL);
	close(a);
	luo_engine_free(e);
}

/* The retrieve batch's check: what retrieve_fd would fail with before any
 * handler runs, and nothing called. */
TEST(file_check_changes_nothing)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s"), *in;
	bool retrieved = true;
	int a = test_eventfd();

	ASSERT_OK(luo_session_preserve_fd(s, 1, a));
	ASSERT_ERR(luo_session_file_check(s, 1, NULL), -EINVAL);
	in = handover_and_retrieve(e, s);
	ASSERT_OK(luo_session_file_check(in, 1, &retrieved));
	ASSERT_FALSE(retrieved);
	ASSERT_ERR(luo_session_file_check(in, 2, NULL), -ENOENT);
	ASSERT_EQ(test_calls[OP_RETRIEVE], 0);
	test_retrieve_close(in, 1);
	ASSERT_OK(luo_session_file_check(in, 1, &retrieved));
	ASSERT_TRUE(retrieved);
	close(a);
	luo_engine_free(e);
}

/* A failed first retrieve is permanent: the batch's check gives its error
 * before running anything, for good. */
TEST(file_check_reports_a_failed_retrieve_for_good)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s"), *in;
	int a = test_eventfd(), fd = -1;

	ASSERT_OK(luo_session_preserve_fd(s, 1, a));
	in = handover_and_retrieve(e, s);
	test_inject.retrieve = (struct test_fail){ .on = true, .token = 1, .err = -EIO };
	ASSERT_ERR(luo_session_retrieve_fd(in, 1, &fd), -EIO);
	test_inject.retrieve = (struct test_fail){ 0 };
	ASSERT_ERR(luo_session_file_check(in, 1, NULL), -EIO);
	ASSERT_ERR(luo_session_retrieve_fd(in, 1, &fd), -EIO);
	ASSERT_EQ(test_calls[OP_RETRIEVE], 1);
	close(a);
	luo_engine_free(e);
}

/* The engine's own reference is close-on-exec unless the daemon asked for
 * inheritable held fds (luod, which keeps them across its re-exec). */
TEST(held_fd_cloexec_unless_inheritable)
{
	for (int inheritable = 0; inheritable <= 1; inheritable++) {
		luo_engine *e = test_engine();
		luo_session *s;
		int fd = test_eventfd(), held = -1;

		luo_engine_set_inheritable_fds(e, inheritable);
		s = test_create(e, "s");
		ASSERT_OK(luo_session_preserve_fd(s, 1, fd));
		ASSERT_EQ(luo_session_foreach_file(s, held_fd_of, &held), 1);
		ASSERT_TRUE(held >= 3 && held != fd);
		ASSERT_EQ(!!(fcntl(held, F_GETFD) & FD_CLOEXEC), !inheritable);
		/* The caller's fd is untouched either way. */
		ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		close(fd);
		luo_engine_free(e);
	}
}

TEST(preserve_fd_same_token_eexist)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int a = test_eventfd(), b = test_eventfd();

	ASSERT_OK(luo_session_preserve_fd(s, 7, a));
	ASSERT_ERR(luo_session_preserve_fd(s, 7, b), -EEXIST);
	/* The token check comes before the fd checks. */
	ASSERT_ERR(luo_session_preserve_fd(s, 7, -1), -EEXIST);
	ASSERT_EQ(luo_session_n_files(s), 1);
	ASSERT_EQ(test_calls[OP_PRESERVE], 1);
	close(a);
	close(b);
	luo_engine_free(e);
}

TEST(preserve_fd_token_zero_and_max_ok)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");

	test_preserve_new(s, 0);
	test_preserve_new(s, UINT64_MAX);
	ASSERT_EQ(luo_session_n_files(s), 2);
	luo_engine_free(e);
}

TEST(preserve_fd_same_token_other_session_ok)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");

	test_preserve_new(a, 1);
	test_preserve_new(b, 1);
	ASSERT_EQ(luo_engine_n_files(e), 2);
	luo_engine_free(e);
}

TEST(preserve_fd_closed_fd_ebadf)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = test_eventfd();

	close(fd);
	ASSERT_ERR(luo_session_preserve_fd(s, 1, fd), -EBADF);
	ASSERT_ERR(luo_session_preserve_fd(s, 1, -1), -EBADF);
	ASSERT_ERR(luo_session_preserve_fd(s, 1, -EBADF), -EBADF);
	ASSERT_EQ(luo_session_n_files(s), 0);
	luo_engine_free(e);
}

TEST(preserve_fd_o_path_ebadf)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fds[2], p;

	/* A FIFO would be accepted if opened; by O_PATH it must not be. */
	ASSERT_OK(pipe2(fds, O_CLOEXEC));
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[0]);
	p = open(path, O_PATH | O_CLOEXEC);
	ASSERT_TRUE(p >= 0);
	ASSERT_ERR(luo_session_preserve_fd(s, 1, p), -EBADF);
	ASSERT_EQ(test_calls[OP_CAN_PRESERVE], 0);
	ASSERT_OK(luo_session_preserve_fd(s, 1, fds[0]));
	close(p);
	close(fds[0]);
	close(fds[1]);
	luo_engine_free(e);
}

TEST(preserve_fd_no_handler_enoent)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	ASSERT_TRUE(fd >= 0);
	ASSERT_ERR(luo_session_preserve_fd(s, 1, fd), -ENOENT);
	ASSERT_EQ(test_calls[OP_CAN_PRESERVE], 1);
	ASSERT_EQ(test_calls[OP_PRESERVE], 0);
	ASSERT_EQ(luo_session_n_files(s), 0);
	/* The caller's fd is untouched. */
	ASSERT_TRUE(fd_is_open(fd));
	close(fd);
	luo_engine_free(e);
}

static int collect_compatible(const struct luo_file_info *fi, void *userdata)
{
	const char **out = userdata;

	out[fi->token - 1] = fi->compatible;
	return 0;
}

TEST(preserve_fd_handlers_tried_in_registration_order)
{
	luo_engine *e = NULL;
	struct luo_handler second = test_handler;
	luo_session *s;
	int fds[2];

	second.compatible = "second-v1";
	ASSERT_OK(luo_engine_new(&e));
	/* test-flb-v1 takes only pipes, so eventfds fall through to the second. */
	ASSERT_OK(luo_engine_add_handler(e, &test_flb_handler));
	ASSERT_OK(luo_engine_add_handler(e, &second));
	s = test_create(e, "s");
	ASSERT_OK(pipe2(fds, O_CLOEXEC));
	ASSERT_OK(luo_session_preserve_fd(s, 1, fds[0]));
	test_preserve_new(s, 2);

	const char *compats[2] = { NULL, NULL };
	ASSERT_OK(luo_session_foreach_file(s, collect_compatible, compats));
	ASSERT_STREQ(compats[0], "test-flb-v1");
	ASSERT_STREQ(compats[1], "second-v1");
	close(fds[0]);
	close(fds[1]);
	luo_engine_free(e);
}

TEST(preserve_fd_handler_error_passes_through_and_undoes)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = test_eventfd();
	char *before = test_snapshot(e);
	char *after;

	test_inject.preserve = (struct test_fail){ true, 5, -EOPNOTSUPP };
	ASSERT_ERR(luo_session_preserve_fd(s, 5, fd), -EOPNOTSUPP);
	test_calls[OP_PRESERVE] = 0;
	after = test_snapshot(e);
	ASSERT_SNAPSHOT_EQ(before, after);
	/* Nothing is left indexed: the same file and token go in afterwards. */
	test_inject.preserve.on = false;
	ASSERT_OK(luo_session_preserve_fd(s, 5, fd));
	close(fd);
	free(before);
	free(after);
	luo_engine_free(e);
}

TEST(preserve_fd_get_id_error_passes_through)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = test_eventfd();

	test_inject.get_id = (struct test_fail){ true, 0, -ENOMEM };
	ASSERT_ERR(luo_session_preserve_fd(s, 1, fd), -ENOMEM);
	ASSERT_EQ(test_calls[OP_PRESERVE], 0);
	ASSERT_EQ(luo_session_n_files(s), 0);
	close(fd);
	luo_engine_free(e);
}

TEST(preserve_fd_does_not_consume_caller_fd)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = test_eventfd();
	int held = -1;

	ASSERT_OK(luo_session_preserve_fd(s, 1, fd));
	ASSERT_TRUE(fd_is_open(fd));
	LIST_FOREACH (n, &s->files) {
		held = list_entry(n, struct luo_file, order)->hf.fd;
	}
	/* The engine holds its own CLOEXEC dup of the same open file. */
	ASSERT_NE(held, fd);
	ASSERT_TRUE(fcntl(held, F_GETFD) & FD_CLOEXEC);
	ASSERT_TRUE(same_description(fd, held));
	/* The caller may close its fd at once; the file stays. */
	close(fd);
	ASSERT_TRUE(fd_is_open(held));
	luo_engine_free(e);
	/* luo_engine_free closed it, calling no handler. */
	ASSERT_FALSE(fd_is_open(held));
}

static int collect_tokens(const struct luo_file_info *fi, void *userdata)
{
	uint64_t *out = userdata;

	out[out[0]++ + 1] = fi->token;
	return 0;
}

TEST(preserve_fd_keeps_preservation_order)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	const uint64_t tokens[] = { 9, 3, 0, UINT64_MAX, 4 };
	uint64_t got[8] = { 0 };

	for (size_t i = 0; i < ELEMENTSOF(tokens); i++)
		test_preserve_new(s, tokens[i]);
	ASSERT_OK(luo_session_foreach_file(s, collect_tokens, got));
	ASSERT_EQ(got[0], ELEMENTSOF(tokens));
	for (size_t i = 0; i < ELEMENTSOF(tokens); i++)
		ASSERT_EQ(got[i + 1], tokens[i]);
	luo_engine_free(e);
}

static int stop_at_second(const struct luo_file_info *fi, void *userdata)
{
	return ++*(int *)userdata == 2 ? 42 : 0;
}

TEST(foreach_file_stops_at_first_nonzero)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int calls = 0;

	test_preserve_new(s, 1);
	test_preserve_new(s, 2);
	test_preserve_new(s, 3);
	ASSERT_EQ(luo_session_foreach_file(s, stop_at_second, &calls), 42);
	ASSERT_EQ(calls, 2);
	luo_engine_free(e);
}

static int fillers[4096];
static size_t n_fillers;

/* Lowers the soft fd limit and fills every free slot below it, so that no new
 * fd can be made; returns the old limit for fds_again(). */
static struct rlimit no_more_fds(void)
{
	struct rlimit old, rl;
	int max = 0, fd;

	ASSERT_OK(getrlimit(RLIMIT_NOFILE, &old));
	for (fd = 0; fd < 4096; fd++)
		if (fd_is_open(fd))
			max = fd;
	rl = old;
	rl.rlim_cur = (rlim_t)max + 1;
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &rl));
	n_fillers = 0;
	while (n_fillers < ELEMENTSOF(fillers) && (fd = fcntl(0, F_DUPFD_CLOEXEC, 0)) >= 0)
		fillers[n_fillers++] = fd;
	ASSERT_EQ(errno, EMFILE);
	return old;
}

static void fds_again(const struct rlimit *old)
{
	for (size_t i = 0; i < n_fillers; i++)
		close(fillers[i]);
	n_fillers = 0;
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, old));
}

TEST(preserve_fd_out_of_fds_emfile_changes_nothing)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = test_eventfd();
	struct rlimit old;
	char *before = test_snapshot(e), *after;

	old = no_more_fds();
	ASSERT_ERR(luo_session_preserve_fd(s, 1, fd), -EMFILE);
	fds_again(&old);
	after = test_snapshot(e);
	ASSERT_SNAPSHOT_EQ(before, after);
	ASSERT_OK(luo_session_preserve_fd(s, 1, fd));
	close(fd);
	free(before);
	free(after);
	luo_engine_free(e);
}

TEST(retrieve_fd_out_of_fds_emfile_is_not_permanent)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	struct rlimit old;
	int fd = -1;

	test_preserve_new(s, 1);
	s = handover_and_retrieve(e, s);
	old = no_more_fds();
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &fd), -EMFILE);
	fds_again(&old);
	ASSERT_EQ(fd, -1);
	test_retrieve_close(s, 1);
	test_retrieve_close(s, 1);
	ASSERT_EQ(test_calls[OP_RETRIEVE], 1);
	luo_engine_free(e);
}

/* ---- retrieve_fd ---- */

TEST(retrieve_fd_on_outgoing_session_einval)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = -1;

	test_preserve_new(s, 1);
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &fd), -EINVAL);
	ASSERT_EQ(fd, -1);
	ASSERT_EQ(test_calls[OP_RETRIEVE], 0);
	luo_engine_free(e);
}

TEST(retrieve_fd_unknown_token_enoent)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = -1;

	test_preserve_new(s, 1);
	s = handover_and_retrieve(e, s);
	ASSERT_ERR(luo_session_retrieve_fd(s, 2, &fd), -ENOENT);
	ASSERT_EQ(fd, -1);
	luo_engine_free(e);
}

TEST(retrieve_fd_after_finish_enoent)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = -1;

	test_preserve_new(s, 1);
	s = handover_and_retrieve(e, s);
	test_retrieve_close(s, 1);
	ASSERT_OK(luo_session_finish(s));
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &fd), -ENOENT);
	ASSERT_EQ(fd, -1);
	luo_engine_free(e);
}

TEST(retrieve_fd_failure_is_permanent)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = -1;

	test_preserve_new(s, 1);
	test_preserve_new(s, 2);
	s = handover_and_retrieve(e, s);
	test_inject.retrieve = (struct test_fail){ true, 1, -EIO };
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &fd), -EIO);
	/* The handler is not asked again, even once it would succeed. */
	test_inject.retrieve.on = false;
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &fd), -EIO);
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &fd), -EIO);
	ASSERT_EQ(fd, -1);
	ASSERT_EQ(test_calls[OP_RETRIEVE], 1);
	/* Other tokens are unaffected. */
	test_retrieve_close(s, 2);
	/* A failed file does not block finish. */
	ASSERT_OK(luo_session_finish(s));
	luo_engine_free(e);
}

TEST(retrieve_fd_again_returns_same_open_file)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int orig = test_eventfd(), a = -1, b = -1;
	uint64_t v = 5;

	ASSERT_OK(luo_session_preserve_fd(s, 1, orig));
	s = handover_and_retrieve(e, s);
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &a));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &b));
	ASSERT_NE(a, b);
	ASSERT_TRUE(same_description(a, b));
	ASSERT_TRUE(same_description(a, orig));
	ASSERT_TRUE(fcntl(a, F_GETFD) & FD_CLOEXEC);
	ASSERT_TRUE(fcntl(b, F_GETFD) & FD_CLOEXEC);
	ASSERT_EQ(write(a, &v, sizeof(v)), sizeof(v));
	v = 0;
	ASSERT_EQ(read(b, &v, sizeof(v)), sizeof(v));
	ASSERT_EQ(v, 5);
	ASSERT_EQ(test_calls[OP_RETRIEVE], 1);
	close(a);
	close(b);
	close(orig);
	luo_engine_free(e);
}

TEST(retrieve_fd_hands_out_fd_replaced_by_handler)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int orig = test_eventfd(), a = -1, b = -1;

	ASSERT_OK(luo_session_preserve_fd(s, 1, orig));
	s = handover_and_retrieve(e, s);
	test_inject.retrieve_replace = true;
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &a));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &b));
	ASSERT_FALSE(same_description(a, orig));
	ASSERT_TRUE(same_description(a, b));
	close(a);
	close(b);
	close(orig);
	luo_engine_free(e);
}

TEST(retrieve_fd_any_subset_any_order)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");

	for (uint64_t t = 1; t <= 5; t++)
		test_preserve_new(s, t);
	s = handover_and_retrieve(e, s);
	test_retrieve_close(s, 4);
	test_retrieve_close(s, 2);
	test_retrieve_close(s, 4);
	ASSERT_EQ(test_calls[OP_RETRIEVE], 2);
	ASSERT_OK(luo_session_finish(s));
	luo_engine_free(e);
}

/* ---- finish ---- */

TEST(finish_outgoing_session_einval)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");

	test_preserve_new(s, 1);
	ASSERT_ERR(luo_session_finish(s), -EINVAL);
	ASSERT_EQ(test_calls[OP_CAN_FINISH], 0);
	ASSERT_EQ(luo_session_n_files(s), 1);
	luo_engine_free(e);
}

TEST(finish_refused_by_can_finish_ebusy)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	char *before, *after;

	for (uint64_t t = 1; t <= 3; t++)
		test_preserve_new(s, t);
	s = handover_and_retrieve(e, s);
	test_retrieve_close(s, 1);
	before = test_snapshot(e);
	test_inject.can_finish = (struct test_fail){ true, 3, 1 };
	ASSERT_ERR(luo_session_finish(s), -EBUSY);
	/* Nothing finished, nothing changed. */
	ASSERT_EQ(test_calls[OP_FINISH], 0);
	after = test_snapshot(e);
	ASSERT_SNAPSHOT_EQ(before, after);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_RETRIEVED);
	test_retrieve_close(s, 1);
	/* Retrying succeeds once the handler agrees. */
	test_inject.can_finish.on = false;
	ASSERT_OK(luo_session_finish(s));
	ASSERT_EQ(test_calls[OP_FINISH], 3);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_FINISHED);
	free(before);
	free(after);
	luo_engine_free(e);
}

TEST(finish_asks_every_file_before_finishing_any)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");

	for (uint64_t t = 1; t <= 3; t++)
		test_preserve_new(s, t);
	s = handover_and_retrieve(e, s);
	test_log_n = 0;
	ASSERT_OK(luo_session_finish(s));
	ASSERT_EQ(test_log_n, 6);
	for (size_t i = 0; i < 3; i++)
		ASSERT_EQ(test_log[i].op, OP_CAN_FINISH);
	for (size_t i = 3; i < 6; i++)
		ASSERT_EQ(test_log[i].op, OP_FINISH);
	luo_engine_free(e);
}

TEST(finish_files_newest_first)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	uint64_t got[8];

	for (uint64_t t = 1; t <= 4; t++)
		test_preserve_new(s, t);
	s = handover_and_retrieve(e, s);
	test_retrieve_close(s, 2);
	ASSERT_OK(luo_session_finish(s));
	ASSERT_EQ(test_log_tokens(OP_FINISH, got, 8), 4);
	for (size_t i = 0; i < 4; i++)
		ASSERT_EQ(got[i], 4 - i);
	luo_engine_free(e);
}

TEST(finish_discards_never_retrieved_files)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");

	for (uint64_t t = 1; t <= 3; t++)
		test_preserve_new(s, t);
	s = handover_and_retrieve(e, s);
	ASSERT_OK(luo_session_finish(s));
	ASSERT_EQ(test_calls[OP_RETRIEVE], 0);
	ASSERT_EQ(test_calls[OP_FINISH], 3);
	ASSERT_EQ(luo_session_n_files(s), 0);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	luo_engine_free(e);
}

TEST(finish_retrieved_file_stays_valid)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	int fd = -1;
	uint64_t v = 3;

	test_preserve_new(s, 1);
	s = handover_and_retrieve(e, s);
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &fd));
	ASSERT_OK(luo_session_finish(s));
	luo_session_release(s);
	ASSERT_EQ(write(fd, &v, sizeof(v)), sizeof(v));
	ASSERT_EQ(read(fd, &v, sizeof(v)), sizeof(v));
	ASSERT_EQ(v, 3);
	close(fd);
	luo_engine_free(e);
}

TEST(finish_twice_succeeds_and_does_nothing)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");

	test_preserve_new(s, 1);
	s = handover_and_retrieve(e, s);
	ASSERT_OK(luo_session_finish(s));
	ASSERT_OK(luo_session_finish(s));
	ASSERT_EQ(test_calls[OP_CAN_FINISH], 1);
	ASSERT_EQ(test_calls[OP_FINISH], 1);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_FINISHED);
	luo_engine_free(e);
}

TEST(finish_keeps_handle_and_name_until_release)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = handover_and_retrieve(e, test_create(e, "s"));
	uint64_t h = luo_session_handle(s);

	ASSERT_OK(luo_session_finish(s));
	ASSERT_TRUE(luo_engine_session_by_handle(e, h) == s);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_INCOMING, "s") == s);
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "s"), 1000, NULL), -EINVAL);
	luo_session_release(s);
	ASSERT_TRUE(luo_engine_session_by_handle(e, h) == NULL);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_INCOMING, "s") == NULL);
	luo_engine_free(e);
}

/* ---- release ---- */

TEST(release_outgoing_aborts_newest_first)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	uint64_t got[8];

	for (uint64_t t = 1; t <= 4; t++)
		test_preserve_new(s, t);
	luo_session_release(s);
	ASSERT_EQ(test_log_tokens(OP_UNPRESERVE, got, 8), 4);
	for (size_t i = 0; i < 4; i++)
		ASSERT_EQ(got[i], 4 - i);
	ASSERT_EQ(test_calls[OP_FREEZE], 0);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	test_create(e, "s");
	luo_engine_free(e);
}

TEST(release_handover_on_close_hands_over)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = NULL;

	ASSERT_OK(luo_engine_create_session(e, test_name(field, "hoc"),
					    LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 1000, &s));
	test_preserve_new(s, 1);
	test_preserve_new(s, 2);
	luo_session_release(s);
	ASSERT_EQ(test_calls[OP_UNPRESERVE], 0);
	ASSERT_EQ(test_calls[OP_FREEZE], 2);
	ASSERT_EQ(luo_session_kind(s), LUO_SESSION_INCOMING);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_WAITING);
	ASSERT_EQ(luo_session_handle(s), 0);
	s = test_retrieve_session(e, "hoc");
	test_retrieve_close(s, 2);
	luo_engine_free(e);
}

TEST(release_handover_on_close_failing_aborts)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *first = test_create(e, "hoc"), *s = NULL;

	/* An incoming "hoc" makes the handover fail with EEXIST. */
	ASSERT_OK(luo_engine_handover_session(e, first));
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "hoc"),
					    LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 1000, &s));
	test_preserve_new(s, 1);
	luo_session_release(s);
	ASSERT_EQ(test_calls[OP_UNPRESERVE], 1);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 1);

	/* A failing freeze aborts too, after unfreezing. */
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "hoc2"),
					    LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 1000, &s));
	test_preserve_new(s, 2);
	test_preserve_new(s, 3);
	test_inject.freeze = (struct test_fail){ true, 3, -EIO };
	luo_session_release(s);
	ASSERT_EQ(test_calls[OP_UNFREEZE], 1);
	ASSERT_EQ(test_calls[OP_UNPRESERVE], 3);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	luo_engine_free(e);
}

TEST(release_retrieved_finishes_implicitly)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = test_create(e, "s");

	test_preserve_new(s, 1);
	test_preserve_new(s, 2);
	s = handover_and_retrieve(e, s);
	test_retrieve_close(s, 1);
	luo_session_release(s);
	ASSERT_EQ(test_calls[OP_FINISH], 2);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "s"), 1000, NULL), -ENOENT);
	luo_engine_free(e);
}

TEST(release_retrieved_refused_becomes_stuck)
{
	luo_engine *e = test_engine();
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = test_create(e, "s");
	uint64_t h;

	test_preserve_new(s, 1);
	s = handover_and_retrieve(e, s);
	h = luo_session_handle(s);
	test_inject.can_finish = (struct test_fail){ true, 1, 1 };
	luo_session_release(s);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_STUCK);
	ASSERT_EQ(luo_session_handle(s), 0);
	ASSERT_TRUE(luo_engine_session_by_handle(e, h) == NULL);
	ASSERT_EQ(luo_session_n_files(s), 1);
	ASSERT_EQ(test_calls[OP_FINISH], 0);
	/* Name kept, cannot be retrieved ... */
	ASSERT_ERR(luo_engine_retrieve_session(e, test_name(field, "s"), 1000, NULL), -EINVAL);
	/* ... until the next reboot drops it, without a handler call. */
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	ASSERT_EQ(test_calls[OP_FINISH], 0);
	ASSERT_EQ(test_calls[OP_UNPRESERVE], 0);
	ASSERT_ERR(luo_engine_retrieve_session(e, field, 1000, NULL), -ENOENT);
	luo_engine_free(e);
}

TEST(release_finished_frees_session)
{
	luo_engine *e = test_engine();
	luo_session *s = handover_and_retrieve(e, test_create(e, "s"));

	ASSERT_OK(luo_session_finish(s));
	luo_session_release(s);
	ASSERT_EQ(test_calls[OP_FINISH], 0);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	/* The name is free in both namespaces again. */
	s = test_create(e, "s");
	ASSERT_OK(luo_engine_handover_session(e, s));
	luo_engine_free(e);
}

TEST(finish_waiting_or_stuck_session_einval)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");

	test_preserve_new(s, 1);
	ASSERT_OK(luo_engine_handover_session(e, s));
	/* Not reachable through a handle, but refused all the same. */
	ASSERT_ERR(luo_session_finish(s), -EINVAL);
	ASSERT_EQ(test_calls[OP_CAN_FINISH], 0);
	s = test_retrieve_session(e, "s");
	test_inject.can_finish = (struct test_fail){ true, 1, 1 };
	luo_session_release(s);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_STUCK);
	test_inject.can_finish.on = false;
	ASSERT_ERR(luo_session_finish(s), -EINVAL);
	ASSERT_EQ(luo_session_n_files(s), 1);
	luo_engine_free(e);
}

/* ---- the constructors shared with the state decoder ---- */

TEST(session_new_checks_name_and_namespace)
{
	luo_engine *e = test_engine();
	luo_session *s = NULL;

	ASSERT_ERR(luo_session_new(e, "", 0, LUO_SESSION_OUTGOING, LUO_SESSION_OPEN, 0, 1, &s),
		   -EINVAL);
	ASSERT_ERR(luo_session_new(e, "a\0b", 3, LUO_SESSION_OUTGOING, LUO_SESSION_OPEN, 0, 1, &s),
		   -EINVAL);
	ASSERT_OK(luo_session_new(e, "x", 1, LUO_SESSION_INCOMING, LUO_SESSION_WAITING, 0, 1, &s));
	ASSERT_ERR(
		luo_session_new(e, "x", 1, LUO_SESSION_INCOMING, LUO_SESSION_RETRIEVED, 0, 1, NULL),
		-EEXIST);
	ASSERT_OK(luo_session_new(e, "x", 1, LUO_SESSION_OUTGOING, LUO_SESSION_OPEN, 0, 1, NULL));
	ASSERT_EQ(luo_session_handle(s), 0);
	ASSERT_TRUE(luo_engine_find_session(e, LUO_SESSION_INCOMING, "x") == s);
	luo_engine_free(e);
}

TEST(session_set_handle_unique_and_never_reused)
{
	luo_engine *e = test_engine();
	luo_session *a = NULL, *b = NULL;

	ASSERT_OK(luo_session_new(e, "a", 1, LUO_SESSION_OUTGOING, LUO_SESSION_OPEN, 0, 1, &a));
	ASSERT_OK(luo_session_new(e, "b", 1, LUO_SESSION_OUTGOING, LUO_SESSION_OPEN, 0, 1, &b));
	ASSERT_OK(luo_session_set_handle(a, 40));
	ASSERT_ERR(luo_session_set_handle(b, 40), -EEXIST);
	ASSERT_EQ(luo_session_handle(b), 0);
	ASSERT_TRUE(luo_engine_session_by_handle(e, 40) == a);
	/* Commands go on after the highest handle seen. */
	ASSERT_TRUE(test_create(e, "c")->handle > 40);
	ASSERT_OK(luo_session_set_handle(a, 0));
	ASSERT_TRUE(luo_engine_session_by_handle(e, 40) == NULL);
	luo_engine_free(e);
}

TEST(file_new_takes_fd_and_data_on_success_only)
{
	luo_engine *e = test_engine();
	luo_session *s = test_create(e, "s");
	struct luo_file *f = NULL;
	int fd = test_eventfd(), fd2 = test_eventfd();
	void *data = malloc(4), *data2 = malloc(4);

	ASSERT_TRUE(data && data2);
	ASSERT_OK(luo_file_new(s, 3, &test_handler, fd, data, 4, &f));
	ASSERT_EQ(f->hf.fd, fd);
	ASSERT_EQ(luo_engine_n_files(e), 1);
	ASSERT_ERR(luo_file_new(s, 3, &test_handler, fd2, data2, 4, NULL), -EEXIST);
	ASSERT_ERR(luo_file_new(s, 4, &test_handler, fd2, data2, LUO_HANDLER_DATA_MAX + 1, NULL),
		   -EINVAL);
	/* Refused: fd2 and data2 are still ours. */
	ASSERT_TRUE(fd_is_open(fd2));
	close(fd2);
	free(data2);
	ASSERT_OK(luo_file_identify(f));
	ASSERT_TRUE(f->id_node != NULL);
	/* Freed with the engine: fd closed, data freed (ASan checks the latter). */
	luo_engine_free(e);
	ASSERT_FALSE(fd_is_open(fd));
}

TEST(engine_free_calls_no_handler)
{
	luo_engine *e = test_engine();
	luo_session *a = test_create(e, "a"), *b = test_create(e, "b");

	test_preserve_new(a, 1);
	test_preserve_new(b, 1);
	ASSERT_OK(luo_engine_handover_session(e, b));
	test_preserve_new(test_create(e, "c"), 2);
	memset(test_calls, 0, sizeof(test_calls));
	luo_engine_free(e);
	for (int i = 0; i < _OP_MAX; i++)
		ASSERT_EQ(test_calls[i], 0);
	/* The harness fails the case if any held fd were left open. */
}

TEST_MAIN(TEST_CASE(add_handler_compatible_empty_einval),
	  TEST_CASE(preserve_fd_take_keeps_the_fd_on_success_and_gives_it_back_on_failure),
	  TEST_CASE(unpreserve_fd_takes_one_file_back_out), TEST_CASE(file_check_changes_nothing),
	  TEST_CASE(file_check_reports_a_failed_retrieve_for_good),
	  TEST_CASE(add_handler_compatible_longer_than_47_einval),
	  TEST_CASE(add_handler_duplicate_compatible_eexist),
	  TEST_CASE(add_handler_more_than_max_enospc), TEST_CASE(create_session_empty_name_einval),
	  TEST_CASE(create_session_name_without_nul_einval),
	  TEST_CASE(create_session_name_of_63_bytes_ok),
	  TEST_CASE(create_session_bytes_after_nul_ignored),
	  TEST_CASE(create_session_any_non_nul_byte_allowed),
	  TEST_CASE(create_session_unknown_flags_einval),
	  TEST_CASE(create_session_duplicate_outgoing_name_eexist),
	  TEST_CASE(create_session_with_incoming_name_allowed),
	  TEST_CASE(create_session_open_with_fresh_handle_and_owner),
	  TEST_CASE(create_session_name_reusable_after_abort),
	  TEST_CASE(retrieve_session_unknown_name_enoent),
	  TEST_CASE(retrieve_session_malformed_name_einval),
	  TEST_CASE(retrieve_session_outgoing_name_enoent),
	  TEST_CASE(retrieve_session_waiting_becomes_retrieved_with_fresh_handle),
	  TEST_CASE(retrieve_session_twice_einval), TEST_CASE(retrieve_session_other_uid_enoent),
	  TEST_CASE(retrieve_session_in_the_callers_names_only),
	  TEST_CASE(same_name_for_two_uids_is_two_sessions),
	  TEST_CASE(retrieve_session_finished_einval),
	  TEST_CASE(retrieve_session_after_finish_and_close_enoent),
	  TEST_CASE(preserve_fd_on_incoming_session_einval),
	  TEST_CASE(held_fd_cloexec_unless_inheritable), TEST_CASE(preserve_fd_same_token_eexist),
	  TEST_CASE(preserve_fd_token_zero_and_max_ok),
	  TEST_CASE(preserve_fd_same_token_other_session_ok),
	  TEST_CASE(preserve_fd_closed_fd_ebadf), TEST_CASE(preserve_fd_o_path_ebadf),
	  TEST_CASE(preserve_fd_no_handler_enoent),
	  TEST_CASE(preserve_fd_handlers_tried_in_registration_order),
	  TEST_CASE(preserve_fd_handler_error_passes_through_and_undoes),
	  TEST_CASE(preserve_fd_get_id_error_passes_through),
	  TEST_CASE(preserve_fd_does_not_consume_caller_fd),
	  TEST_CASE(preserve_fd_keeps_preservation_order),
	  TEST_CASE(foreach_file_stops_at_first_nonzero),
	  TEST_CASE(preserve_fd_out_of_fds_emfile_changes_nothing),
	  TEST_CASE(retrieve_fd_out_of_fds_emfile_is_not_permanent),
	  TEST_CASE(retrieve_fd_on_outgoing_session_einval),
	  TEST_CASE(retrieve_fd_unknown_token_enoent), TEST_CASE(retrieve_fd_after_finish_enoent),
	  TEST_CASE(retrieve_fd_failure_is_permanent),
	  TEST_CASE(retrieve_fd_again_returns_same_open_file),
	  TEST_CASE(retrieve_fd_hands_out_fd_replaced_by_handler),
	  TEST_CASE(retrieve_fd_any_subset_any_order), TEST_CASE(finish_outgoing_session_einval),
	  TEST_CASE(finish_refused_by_can_finish_ebusy),
	  TEST_CASE(finish_asks_every_file_before_finishing_any),
	  TEST_CASE(finish_files_newest_first), TEST_CASE(finish_discards_never_retrieved_files),
	  TEST_CASE(finish_retrieved_file_stays_valid),
	  TEST_CASE(finish_twice_succeeds_and_does_nothing),
	  TEST_CASE(finish_keeps_handle_and_name_until_release),
	  TEST_CASE(release_outgoing_aborts_newest_first),
	  TEST_CASE(release_handover_on_close_hands_over),
	  TEST_CASE(release_handover_on_close_failing_aborts),
	  TEST_CASE(release_retrieved_finishes_implicitly),
	  TEST_CASE(release_retrieved_refused_becomes_stuck),
	  TEST_CASE(release_finished_frees_session),
	  TEST_CASE(finish_waiting_or_stuck_session_einval),
	  TEST_CASE(session_new_checks_name_and_namespace),
	  TEST_CASE(session_set_handle_unique_and_never_reused),
	  TEST_CASE(file_new_takes_fd_and_data_on_success_only),
	  TEST_CASE(engine_free_calls_no_handler))
