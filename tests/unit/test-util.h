/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: test handlers for the engine's unit tests
 *
 * "test-v1" accepts eventfds and pipes, counts every call in the global
 * test_calls, logs each call with its token in order (test_log), and fails
 * or refuses on demand for one token (test_inject).  "test-flb-v1" does the
 * same for pipes only and depends on the FLB "test-flb-state-v1", whose
 * operations are counted in test_flb_calls.  Each test case runs in its own
 * forked child, so the globals start at zero in every case.
 *
 * preserve records an 8-byte data blob (the token) so that the engine's
 * ownership of handler data is exercised; retrieve can replace the engine's
 * fd with a new open file (test_inject.retrieve_replace) the way a handler
 * that rebuilds a file does.
 *
 * test_snapshot() writes everything observable about an engine (sessions in
 * order with kind, state, handle, flags, uid; files in order with token, fd,
 * retrieve state, frozen; FLBs; update number; counters) into a string, so
 * that "nothing changed" is a single string comparison.
 */
#pragma once

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "core/engine-internal.h"
#include "harness.h"

enum test_op {
	OP_CAN_PRESERVE,
	OP_GET_ID,
	OP_PRESERVE,
	OP_UNPRESERVE,
	OP_FREEZE,
	OP_UNFREEZE,
	OP_RETRIEVE,
	OP_CAN_FINISH,
	OP_FINISH,
	_OP_MAX,
};

struct test_fail {
	bool on;
	uint64_t token;
	int err; /* negative errno; for can_finish any non-zero value refuses */
};

static _unused_ struct {
	struct test_fail preserve, freeze, retrieve, can_finish, get_id;
	bool retrieve_replace; /* retrieve swaps in a new open file */
	bool finish_replace;   /* finish does too (handlers should not; the engine copes) */
} test_inject;

static _unused_ unsigned test_calls[_OP_MAX];

#define TEST_LOG_MAX 4096
static _unused_ struct {
	enum test_op op;
	uint64_t token;
} test_log[TEST_LOG_MAX];
static _unused_ size_t test_log_n;

enum test_flb_op {
	FLB_PRESERVE,
	FLB_UNPRESERVE,
	FLB_RETRIEVE,
	FLB_FINISH,
	_FLB_MAX,
};
static _unused_ unsigned test_flb_calls[_FLB_MAX];
static _unused_ struct {
	int fail_preserve; /* negative errno or 0 */
	int fail_retrieve;
} test_flb_inject;

static inline void test_record(enum test_op op, uint64_t token)
{
	test_calls[op]++;
	if (test_log_n < TEST_LOG_MAX) {
		test_log[test_log_n].op = op;
		test_log[test_log_n].token = token;
		test_log_n++;
	}
}

static inline bool test_fails(const struct test_fail *t, uint64_t token)
{
	return t->on && t->token == token;
}

/* The tokens of the logged calls of op, in call order, in out[]; returns their number. */
static inline size_t test_log_tokens(enum test_op op, uint64_t *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < test_log_n; i++)
		if (test_log[i].op == op && n < max)
			out[n++] = test_log[i].token;
	return n;
}

static inline bool test_is_eventfd(int fd)
{
	char link[64];

	if (fd_read_link(fd, link, sizeof(link)) < 0)
		return false;
	return strcmp(link, "anon_inode:[eventfd]") == 0;
}

static inline bool test_can_preserve(const struct luo_handler *h, int fd, const struct stat *st)
{
	test_record(OP_CAN_PRESERVE, 0);
	return S_ISFIFO(st->st_mode) || test_is_eventfd(fd);
}

static inline bool test_flb_can_preserve(const struct luo_handler *h, int fd, const struct stat *st)
{
	test_record(OP_CAN_PRESERVE, 0);
	return S_ISFIFO(st->st_mode);
}

static inline int test_get_id(const struct luo_handler *h, int fd, const struct stat *st,
			      struct luo_file_id *ret)
{
	test_record(OP_GET_ID, 0);
	if (test_inject.get_id.on)
		return test_inject.get_id.err;
	/* Pipes have their own inode; eventfds are told apart by open file description. */
	*ret = (struct luo_file_id){
		.dev = st->st_dev,
		.ino = st->st_ino,
		.by_description = !S_ISFIFO(st->st_mode),
	};
	return 0;
}

static inline int test_preserve(struct luo_handler_file *f)
{
	test_record(OP_PRESERVE, f->token);
	if (test_fails(&test_inject.preserve, f->token))
		return test_inject.preserve.err;
	f->data = malloc(sizeof(uint64_t));
	if (!f->data)
		return -ENOMEM;
	memcpy(f->data, &f->token, sizeof(uint64_t));
	f->data_size = sizeof(uint64_t);
	return 0;
}

static inline void test_unpreserve(struct luo_handler_file *f)
{
	test_record(OP_UNPRESERVE, f->token);
}

static inline int test_freeze(struct luo_handler_file *f)
{
	test_record(OP_FREEZE, f->token);
	if (test_fails(&test_inject.freeze, f->token))
		return test_inject.freeze.err;
	return 0;
}

static inline void test_unfreeze(struct luo_handler_file *f)
{
	test_record(OP_UNFREEZE, f->token);
}

static inline int test_retrieve(struct luo_handler_file *f)
{
	test_record(OP_RETRIEVE, f->token);
	if (test_fails(&test_inject.retrieve, f->token))
		return test_inject.retrieve.err;
	if (test_inject.retrieve_replace) {
		int fd = eventfd(0, EFD_CLOEXEC);

		if (fd < 0)
			return -errno;
		close(f->fd);
		f->fd = fd;
	}
	return 0;
}

static inline bool test_can_finish(struct luo_handler_file *f)
{
	test_record(OP_CAN_FINISH, f->token);
	return !test_fails(&test_inject.can_finish, f->token);
}

static inline void test_finish(struct luo_handler_file *f)
{
	test_record(OP_FINISH, f->token);
	if (test_inject.finish_replace) {
		close(f->fd);
		f->fd = eventfd(0, EFD_CLOEXEC);
	}
}

static inline int test_flb_preserve(struct luo_flb *flb)
{
	test_flb_calls[FLB_PRESERVE]++;
	if (test_flb_inject.fail_preserve)
		return test_flb_inject.fail_preserve;
	/* A resource of its own, which the engine must close and free. */
	flb->fd = eventfd(0, EFD_CLOEXEC);
	flb->data = malloc(16);
	flb->data_size = 16;
	if (flb->fd < 0 || !flb->data)
		return -ENOMEM;
	memset(flb->data, 0x5a, 16);
	return 0;
}

static inline void test_flb_unpreserve(struct luo_flb *flb)
{
	test_flb_calls[FLB_UNPRESERVE]++;
}

static inline int test_flb_retrieve(struct luo_flb *flb)
{
	test_flb_calls[FLB_RETRIEVE]++;
	return test_flb_inject.fail_retrieve;
}

static inline void test_flb_finish(struct luo_flb *flb)
{
	test_flb_calls[FLB_FINISH]++;
}

static _unused_ const struct luo_flb_ops test_flb_ops = {
	.compatible = "test-flb-state-v1",
	.preserve = test_flb_preserve,
	.unpreserve = test_flb_unpreserve,
	.retrieve = test_flb_retrieve,
	.finish = test_flb_finish,
};

static _unused_ const struct luo_handler test_handler = {
	.compatible = "test-v1",
	.can_preserve = test_can_preserve,
	.get_id = test_get_id,
	.preserve = test_preserve,
	.unpreserve = test_unpreserve,
	.freeze = test_freeze,
	.unfreeze = test_unfreeze,
	.retrieve = test_retrieve,
	.can_finish = test_can_finish,
	.finish = test_finish,
};

static _unused_ const struct luo_handler test_flb_handler = {
	.compatible = "test-flb-v1",
	.can_preserve = test_flb_can_preserve,
	.get_id = test_get_id,
	.preserve = test_preserve,
	.unpreserve = test_unpreserve,
	.freeze = test_freeze,
	.unfreeze = test_unfreeze,
	.retrieve = test_retrieve,
	.can_finish = test_can_finish,
	.finish = test_finish,
	.flb = &test_flb_ops,
};

/* An engine with "test-v1" as its only handler. */
static inline luo_engine *test_engine(void)
{
	luo_engine *e = NULL;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_handler(e, &test_handler));
	return e;
}

/* An engine whose only handler is "test-flb-v1" (pipes, with the FLB). */
static inline luo_engine *test_flb_engine(void)
{
	luo_engine *e = NULL;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_handler(e, &test_flb_handler));
	return e;
}

/* Fills the kernel's 64-byte name field from a C string. */
static inline const uint8_t *test_name(uint8_t field[LUO_NAME_FIELD], const char *name)
{
	memset(field, 0, LUO_NAME_FIELD);
	memcpy(field, name, strnlen(name, LUO_NAME_FIELD));
	return field;
}

static inline luo_session *test_create(luo_engine *e, const char *name)
{
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = NULL;

	ASSERT_OK(luo_engine_create_session(e, test_name(field, name), 0, 1000, &s));
	return s;
}

static inline luo_session *test_retrieve_session(luo_engine *e, const char *name)
{
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = NULL;

	ASSERT_OK(luo_engine_retrieve_session(e, test_name(field, name), 1000, &s));
	return s;
}

static inline int test_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);

	ASSERT_TRUE(fd >= 0);
	return fd;
}

/* Preserves a fresh eventfd under token and closes the caller's copy. */
static inline void test_preserve_new(luo_session *s, uint64_t token)
{
	int fd = test_eventfd();

	ASSERT_OK(luo_session_preserve_fd(s, token, fd));
	close(fd);
}

/* Retrieves token, checks the fd is CLOEXEC, closes it. */
static inline void test_retrieve_close(luo_session *s, uint64_t token)
{
	int fd = -EBADF;

	ASSERT_OK(luo_session_retrieve_fd(s, token, &fd));
	ASSERT_TRUE(fd >= 0);
	ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
}

struct test_buf {
	char *p;
	size_t len, size;
};

static inline void test_buf_printf(struct test_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline void test_buf_printf(struct test_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->size - b->len : 0, fmt, ap);
		va_end(ap);
		ASSERT_TRUE(n >= 0);
		if (b->p && b->len + (size_t)n < b->size) {
			b->len += (size_t)n;
			return;
		}
		b->size = (b->size + (size_t)n + 1) * 2;
		b->p = realloc(b->p, b->size);
		ASSERT_TRUE(b->p);
	}
}

static inline void test_snapshot_kind(struct test_buf *b, const luo_engine *e,
				      enum luo_session_kind kind)
{
	for (luo_session *s = luo_engine_first_session(e, kind); s; s = luo_session_next(s)) {
		test_buf_printf(b,
				"session %s kind=%d state=%d handle=%" PRIu64 " flags=%" PRIu64
				" uid=%u files=%zu\n",
				s->name, s->kind, s->state, s->handle, s->flags, s->uid,
				s->files.count);
		LIST_FOREACH (n, &s->files) {
			const struct luo_file *f = list_entry(n, struct luo_file, order);

			test_buf_printf(b,
					"  file %" PRIu64 " fd=%d frozen=%d retrieved=%d err=%d "
					"size=%zu indexed=%d flb=%p\n",
					f->hf.token, f->hf.fd, f->frozen, f->retrieved,
					f->retrieve_error, f->hf.data_size, f->id_node != NULL,
					(void *)f->flb);
		}
	}
}

/* Everything observable about e and the test handlers, as a malloc'ed string. */
static inline char *test_snapshot(const luo_engine *e)
{
	struct test_buf b = { 0 };

	test_buf_printf(&b, "update=%" PRIu64 " next_handle=%" PRIu64 " n_files=%zu\n",
			luo_engine_update_number(e), e->next_handle, luo_engine_n_files(e));
	test_snapshot_kind(&b, e, LUO_SESSION_OUTGOING);
	test_snapshot_kind(&b, e, LUO_SESSION_INCOMING);
	for (size_t i = 0; i < e->n_flbs; i++)
		test_buf_printf(&b, "flb %s count=%" PRIu64 " incoming=%d retrieved=%d fd=%d\n",
				e->flbs[i].ops->compatible, e->flbs[i].count, e->flbs[i].incoming,
				e->flbs[i].retrieved, e->flbs[i].fd >= 0);
	test_buf_printf(&b, "calls preserve=%u unpreserve=%u retrieve=%u finish=%u\n",
			test_calls[OP_PRESERVE], test_calls[OP_UNPRESERVE], test_calls[OP_RETRIEVE],
			test_calls[OP_FINISH]);
	return b.p;
}

#define ASSERT_SNAPSHOT_EQ(a, b)                                                                   \
	do {                                                                                       \
		if (strcmp((a), (b)) != 0)                                                         \
			test_fail_at(__FILE__, __LINE__,                                           \
				     "engine changed:\n--- before\n%s--- after\n%s", (a), (b));    \
	} while (0)
