/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: tests of the state codec
 *
 * Engines built by real commands (with the test handlers of test-util.h and
 * real eventfds and pipes) are encoded, decoded and encoded again; hand-made
 * blobs break one rule each and must give that rule's errno with the engine
 * left empty and no fd closed; every truncation and every single bit flip of
 * a small blob is decoded without a crash; the dump names what the blob holds
 * and its JSON form parses.
 */
#include <fcntl.h>
#include <libfdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/state.h"
#include "test-util.h"

/* ---- helpers ------------------------------------------------------------- */

/* An engine with both test handlers: pipes go to "test-flb-v1" (and its FLB),
 * eventfds to "test-v1". */
static luo_engine *both_engine(void)
{
	luo_engine *e = NULL;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_handler(e, &test_flb_handler));
	ASSERT_OK(luo_engine_add_handler(e, &test_handler));
	return e;
}

static void assert_engine_empty(const luo_engine *e)
{
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	ASSERT_EQ(e->handles.count, 0);
	ASSERT_EQ(e->outgoing_names.count, 0);
	ASSERT_EQ(e->incoming_names.count, 0);
	ASSERT_TRUE(e->identity_root == NULL);
	ASSERT_EQ(e->update_number, 0);
	ASSERT_EQ(e->next_handle, 0);
	ASSERT_FALSE(e->borrowed_fds);
	for (size_t i = 0; i < e->n_flbs; i++) {
		ASSERT_EQ(e->flbs[i].count, 0);
		ASSERT_TRUE(e->flbs[i].data == NULL);
		ASSERT_TRUE(e->flbs[i].fd < 0);
	}
}

static size_t flb_index(const luo_engine *e, const struct luo_flb *flb)
{
	return flb ? (size_t)(flb - e->flbs) : SIZE_MAX;
}

/* Everything the codec carries, field by field. */
static void assert_engines_equal(const luo_engine *a, const luo_engine *b)
{
	ASSERT_EQ(a->update_number, b->update_number);
	ASSERT_EQ(a->next_handle, b->next_handle);
	ASSERT_EQ(a->n_files, b->n_files);
	ASSERT_EQ(a->n_flbs, b->n_flbs);
	for (size_t i = 0; i < a->n_flbs; i++) {
		const struct luo_flb *x = &a->flbs[i], *y = &b->flbs[i];

		ASSERT_TRUE(x->ops == y->ops);
		ASSERT_EQ(x->count, y->count);
		ASSERT_EQ(x->incoming, y->incoming);
		ASSERT_EQ(x->retrieved, y->retrieved);
		ASSERT_EQ(x->fd, y->fd);
		ASSERT_EQ(x->data_size, y->data_size);
		if (x->data_size)
			ASSERT_MEMEQ(x->data, y->data, x->data_size);
	}
	for (int kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING; kind++) {
		luo_session *s = luo_engine_first_session(a, kind);
		luo_session *t = luo_engine_first_session(b, kind);

		for (; s && t; s = luo_session_next(s), t = luo_session_next(t)) {
			struct list_node *p, *q;

			ASSERT_EQ(s->name_len, t->name_len);
			ASSERT_MEMEQ(s->name, t->name, s->name_len);
			ASSERT_EQ(s->kind, t->kind);
			ASSERT_EQ(s->state, t->state);
			ASSERT_EQ(s->flags, t->flags);
			ASSERT_EQ(s->uid, t->uid);
			ASSERT_EQ(s->handle, t->handle);
			ASSERT_TRUE(luo_engine_session_by_handle(b, t->handle) ==
				    (t->handle ? t : NULL));
			ASSERT_EQ(s->files.count, t->files.count);
			for (p = s->files.node.next, q = t->files.node.next; p != &s->files.node;
			     p = p->next, q = q->next) {
				const struct luo_file *f = list_entry(p, struct luo_file, order);
				const struct luo_file *g = list_entry(q, struct luo_file, order);

				ASSERT_EQ(f->hf.token, g->hf.token);
				ASSERT_EQ(f->hf.fd, g->hf.fd);
				ASSERT_TRUE(f->handler == g->handler);
				ASSERT_EQ(flb_index(a, f->flb), flb_index(b, g->flb));
				ASSERT_EQ(f->frozen, g->frozen);
				ASSERT_EQ(f->retrieved, g->retrieved);
				ASSERT_EQ(f->retrieve_error, g->retrieve_error);
				/* The identity travels with every file that has one. */
				if (f->hf.fd >= 0 && (f->id_node || a->borrowed_fds)) {
					ASSERT_EQ(f->id.dev, g->id.dev);
					ASSERT_EQ(f->id.ino, g->id.ino);
					ASSERT_EQ(f->id.extra, g->id.extra);
					ASSERT_EQ(f->id.by_description, g->id.by_description);
				}
				ASSERT_EQ(f->hf.data_size, g->hf.data_size);
				if (f->hf.data_size)
					ASSERT_MEMEQ(f->hf.data, g->hf.data, f->hf.data_size);
				ASSERT_TRUE(luo_file_lookup(t, g->hf.token) == g);
			}
		}
		ASSERT_TRUE(!s && !t);
	}
}

static int test_pipe(int *ret_write)
{
	int p[2];

	ASSERT_OK(pipe2(p, O_CLOEXEC));
	*ret_write = p[1];
	return p[0];
}

static void preserve_pipe(luo_session *s, uint64_t token)
{
	int w, r = test_pipe(&w);

	ASSERT_OK(luo_session_preserve_fd(s, token, r));
	close(r);
	close(w);
}

static void handover(luo_engine *e, luo_session *s)
{
	ASSERT_OK(luo_engine_handover_session(e, s));
}

/*
 * An engine with a session in every state, files of both handlers, an FLB,
 * a failed retrieve and a handover-on-close flag.
 */
static luo_engine *rich_engine(void)
{
	uint8_t field[LUO_NAME_FIELD];
	luo_engine *e = both_engine();
	luo_session *s;

	s = test_create(e, "open-a");
	test_preserve_new(s, 1);
	preserve_pipe(s, 2);
	test_preserve_new(s, UINT64_MAX);
	test_preserve_new(s, 0);

	s = test_create(e, "waiting-b");
	test_preserve_new(s, 10);
	test_preserve_new(s, 11);
	handover(e, s);

	s = test_create(e, "retrieved-c");
	test_preserve_new(s, 20);
	test_preserve_new(s, 21);
	test_preserve_new(s, 22);
	preserve_pipe(s, 23);
	handover(e, s);
	s = test_retrieve_session(e, "retrieved-c");
	test_retrieve_close(s, 20);
	test_retrieve_close(s, 23);
	test_inject.retrieve = (struct test_fail){ true, 21, -EIO };
	int fd = -EBADF;
	ASSERT_ERR(luo_session_retrieve_fd(s, 21, &fd), -EIO);

	s = test_create(e, "finished-d");
	test_preserve_new(s, 30);
	handover(e, s);
	s = test_retrieve_session(e, "finished-d");
	ASSERT_OK(luo_session_finish(s));

	s = test_create(e, "stuck-e");
	test_preserve_new(s, 40);
	handover(e, s);
	s = test_retrieve_session(e, "stuck-e");
	test_inject.can_finish = (struct test_fail){ true, 40, 1 };
	luo_session_release(s);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_STUCK);

	/* The outgoing namespace is separate: the same name again. */
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "waiting-b"),
					    LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 0, &s));
	test_preserve_new(s, 50);
	/* Any byte but NUL may be in a name. */
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "we\"ird\\\n\xff\xc3\xa9"), 0, 4242,
					    &s));

	memset(&test_inject, 0, sizeof(test_inject));
	e->update_number = 7;
	return e;
}

static void encode(const luo_engine *e, const struct luo_state_ext *ext, void **blob, size_t *size)
{
	ASSERT_OK(luo_state_encode(e, ext, blob, size));
	ASSERT_OK(fdt_check_full(*blob, *size));
	ASSERT_EQ(fdt_totalsize(*blob), *size);
}

/* Decodes blob into a fresh engine (borrowing its fds), encodes it again and
 * checks that the bytes are the same; returns the engine. */
static luo_engine *round_trip(const void *blob, size_t size)
{
	_cleanup_free_ void *again = NULL;
	luo_engine *e = both_engine();
	size_t again_size;

	ASSERT_OK(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL));
	ASSERT_TRUE(e->borrowed_fds);
	encode(e, NULL, &again, &again_size);
	ASSERT_EQ(again_size, size);
	ASSERT_MEMEQ(again, blob, size);
	return e;
}

/* ---- round trips ----------------------------------------------------------- */

TEST(empty_engine_round_trips_to_identical_blob)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine(), *d;
	size_t size;

	encode(e, NULL, &blob, &size);
	ASSERT_STREQ(fdt_getprop(blob, 0, "compatible", NULL), LUO_STATE_COMPATIBLE);
	ASSERT_TRUE(fdt_first_subnode(blob, 0) < 0);
	d = round_trip(blob, size);
	assert_engines_equal(e, d);
	luo_engine_free(d);
	luo_engine_free(e);
}

TEST(every_session_state_round_trips_to_identical_blob)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = rich_engine(), *d;
	size_t size;

	encode(e, NULL, &blob, &size);
	d = round_trip(blob, size);
	assert_engines_equal(e, d);
	/* Borrowed: freeing the copy closes nothing the original holds. */
	luo_engine_free(d);
	LIST_FOREACH (n, &e->outgoing) {
		luo_session *s = list_entry(n, struct luo_session, order);

		LIST_FOREACH (m, &s->files)
			ASSERT_OK(fcntl(list_entry(m, struct luo_file, order)->hf.fd, F_GETFD));
	}
	luo_engine_free(e);
}

TEST(encoding_is_deterministic)
{
	_cleanup_free_ void *a = NULL, *b = NULL;
	luo_engine *e = rich_engine();
	size_t na, nb;

	encode(e, NULL, &a, &na);
	encode(e, NULL, &b, &nb);
	ASSERT_EQ(na, nb);
	ASSERT_MEMEQ(a, b, na);
	luo_engine_free(e);
}

TEST(decode_restores_sessions_states_tokens_data_handles_counts)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = rich_engine(), *d = both_engine();
	const struct luo_flb *flb;
	luo_session *s;
	size_t size;

	encode(e, NULL, &blob, &size);
	ASSERT_OK(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, NULL));
	assert_engines_equal(e, d);

	ASSERT_EQ(luo_engine_update_number(d), 7);
	ASSERT_EQ(luo_engine_n_sessions(d, LUO_SESSION_OUTGOING), 3);
	ASSERT_EQ(luo_engine_n_sessions(d, LUO_SESSION_INCOMING), 4);
	ASSERT_EQ(luo_engine_n_files(d), 4 + 2 + 4 + 1 + 1);

	s = luo_engine_find_session(d, LUO_SESSION_INCOMING, "retrieved-c");
	ASSERT_TRUE(s);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_RETRIEVED);
	ASSERT_EQ(luo_session_uid(s), 1000);
	ASSERT_TRUE(luo_session_handle(s) != 0);
	ASSERT_TRUE(luo_engine_session_by_handle(d, luo_session_handle(s)) == s);
	ASSERT_TRUE(luo_file_lookup(s, 20)->retrieved);
	ASSERT_EQ(luo_file_lookup(s, 21)->retrieve_error, -EIO);
	ASSERT_TRUE(luo_file_lookup(s, 22)->frozen);
	ASSERT_EQ(luo_file_lookup(s, 22)->hf.data_size, sizeof(uint64_t));
	ASSERT_EQ(*(uint64_t *)luo_file_lookup(s, 22)->hf.data, 22);
	ASSERT_STREQ(luo_file_lookup(s, 23)->handler->compatible, "test-flb-v1");
	ASSERT_TRUE(luo_file_lookup(s, 23)->flb != NULL);

	s = luo_engine_find_session(d, LUO_SESSION_INCOMING, "waiting-b");
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_WAITING);
	ASSERT_EQ(luo_session_handle(s), 0);
	s = luo_engine_find_session(d, LUO_SESSION_OUTGOING, "waiting-b");
	ASSERT_EQ(luo_session_flags(s), LUO_SESSION_FLAG_HANDOVER_ON_CLOSE);
	ASSERT_EQ(luo_session_uid(s), 0);
	ASSERT_EQ(luo_session_state(luo_engine_find_session(d, LUO_SESSION_INCOMING, "stuck-e")),
		  LUO_SESSION_STUCK);
	ASSERT_EQ(
		luo_session_n_files(luo_engine_find_session(d, LUO_SESSION_INCOMING, "finished-d")),
		0);
	s = luo_engine_find_session(d, LUO_SESSION_OUTGOING, "open-a");
	ASSERT_TRUE(luo_file_lookup(s, UINT64_MAX) && luo_file_lookup(s, 0));

	flb = luo_engine_find_flb(d, "test-flb-state-v1");
	ASSERT_TRUE(flb);
	ASSERT_EQ(flb->count, 2);
	ASSERT_TRUE(flb->fd >= 0);
	ASSERT_EQ(flb->data_size, 16);
	ASSERT_EQ(((uint8_t *)flb->data)[15], 0x5a);

	luo_engine_free(d);
	luo_engine_free(e);
}

TEST(adopted_fds_are_owned_indexed_and_usable)
{
	_cleanup_free_ void *blob = NULL, *again = NULL;
	uint8_t field[LUO_NAME_FIELD];
	luo_engine *e = rich_engine(), *d = both_engine();
	luo_session *s, *t;
	int open_a_fd, fd = -EBADF;
	size_t size, again_size;

	encode(e, NULL, &blob, &size);
	open_a_fd = luo_file_lookup(luo_engine_find_session(e, LUO_SESSION_OUTGOING, "open-a"), 1)
			    ->hf.fd;
	/* What luod does across its own execve(): the old engine lets go of its
	 * fds without closing them, the new one adopts them. */
	e->borrowed_fds = true;
	luo_engine_free(e);
	ASSERT_OK(luo_state_decode(d, blob, size, 0, NULL));
	ASSERT_FALSE(d->borrowed_fds);
	encode(d, NULL, &again, &again_size);
	ASSERT_EQ(again_size, size);
	ASSERT_MEMEQ(again, blob, size);

	/* The identity index is rebuilt: the same eventfd is busy. */
	s = luo_engine_find_session(d, LUO_SESSION_OUTGOING, "open-a");
	ASSERT_TRUE(luo_file_lookup(s, 1)->id_node != NULL);
	ASSERT_ERR(luo_session_preserve_fd(s, 99, open_a_fd), -EBUSY);

	/* Commands work on decoded sessions. */
	t = test_retrieve_session(d, "waiting-b");
	ASSERT_TRUE(luo_session_handle(t) > luo_session_handle(s));
	test_retrieve_close(t, 10);
	s = luo_engine_find_session(d, LUO_SESSION_INCOMING, "retrieved-c");
	ASSERT_ERR(luo_session_retrieve_fd(s, 21, &fd), -EIO);
	test_retrieve_close(s, 22);
	ASSERT_ERR(luo_engine_retrieve_session(d, test_name(field, "retrieved-c"), 1000, NULL),
		   -EINVAL);

	luo_engine_free(d);
	/* The engine closed what it adopted. */
	ASSERT_ERRNO(fcntl(open_a_fd, F_GETFD), EBADF);
}

TEST(encode_grows_its_buffer_for_large_handler_data)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine(), *d;
	luo_session *s;
	size_t size;

	s = test_create(e, "big");
	/* Built through the constructor with fake fd slots, borrowed: the data
	 * is far beyond the encoder's first guess. */
	e->borrowed_fds = true;
	for (uint64_t t = 0; t < 16; t++) {
		void *data = malloc(LUO_HANDLER_DATA_MAX);

		ASSERT_TRUE(data);
		memset(data, (int)t, LUO_HANDLER_DATA_MAX);
		ASSERT_OK(luo_file_new(s, t, &test_handler, 1000 + (int)t, data,
				       LUO_HANDLER_DATA_MAX, NULL));
	}
	encode(e, NULL, &blob, &size);
	ASSERT_TRUE(size > 16 * LUO_HANDLER_DATA_MAX);
	d = round_trip(blob, size);
	assert_engines_equal(e, d);
	luo_engine_free(d);
	luo_engine_free(e);
}

/* ---- the ext node ------------------------------------------------------------ */

struct ext_data {
	uint32_t value;
	int read_offset;
	int calls;
	int fail;
};

static int ext_write(void *fdt, void *userdata)
{
	struct ext_data *x = userdata;
	int r = fdt_property_u32(fdt, "value", x->value);

	return r < 0 ? luo_fdt_errno(r) : 0;
}

static int ext_read(const void *fdt, int offset, void *userdata)
{
	struct ext_data *x = userdata;
	const void *p;
	int len;

	x->calls++;
	x->read_offset = offset;
	if (x->fail)
		return x->fail;
	if (offset < 0)
		return 0;
	p = fdt_getprop(fdt, offset, "value", &len);
	if (!p || len != 4)
		return -EBADMSG;
	x->value = fdt32_ld(p);
	return 0;
}

TEST(ext_node_is_written_after_sessions_and_read_last)
{
	_cleanup_free_ void *blob = NULL;
	struct ext_data out = { .value = 0xfeed }, in = { 0 };
	struct luo_state_ext wext = { "luod", ext_write, ext_read, &out };
	struct luo_state_ext rext = { "luod", ext_write, ext_read, &in };
	luo_engine *e = rich_engine(), *d = both_engine();
	int node, last = -1;
	size_t size;

	encode(e, &wext, &blob, &size);
	fdt_for_each_subnode(node, blob, 0) last = node;
	ASSERT_STREQ(fdt_get_name(blob, last, NULL), "luod");

	ASSERT_OK(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, &rext));
	ASSERT_EQ(in.calls, 1);
	ASSERT_EQ(in.value, 0xfeed);
	ASSERT_EQ(in.read_offset, last);
	luo_engine_free(d);

	/* Without an ext the node is unknown. */
	d = both_engine();
	ASSERT_ERR(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, NULL), -EBADMSG);
	assert_engine_empty(d);
	luo_engine_free(d);
	luo_engine_free(e);
}

static int ext_write_many(void *fdt, void *userdata)
{
	for (int i = 0; i < 200; i++) {
		char name[32];
		int r;

		snprintf(name, sizeof(name), "property-%d", i % 100);
		if (i >= 100) {
			/* The same names again, in a subnode. */
			if (i == 100 && (r = fdt_begin_node(fdt, "again")) < 0)
				return luo_fdt_errno(r);
		}
		r = fdt_property_u32(fdt, name, (uint32_t)i);
		if (r < 0)
			return luo_fdt_errno(r);
	}
	return luo_fdt_errno(fdt_end_node(fdt));
}

static int ext_read_many(const void *fdt, int offset, void *userdata)
{
	int sub = fdt_subnode_offset(fdt, offset, "again"), len;
	const void *p;

	if (sub < 0)
		return -EBADMSG;
	for (int i = 0; i < 100; i++) {
		char name[32];

		snprintf(name, sizeof(name), "property-%d", i);
		p = fdt_getprop(fdt, offset, name, &len);
		if (!p || len != 4 || fdt32_ld(p) != (uint32_t)i)
			return -EBADMSG;
		p = fdt_getprop(fdt, sub, name, &len);
		if (!p || len != 4 || fdt32_ld(p) != (uint32_t)i + 100)
			return -EBADMSG;
	}
	return 0;
}

TEST(ext_node_with_many_property_names_round_trips)
{
	_cleanup_free_ void *blob = NULL, *again = NULL;
	struct luo_state_ext ext = { "luod", ext_write_many, ext_read_many, NULL };
	luo_engine *e = rich_engine(), *d = both_engine();
	size_t size, again_size;

	encode(e, &ext, &blob, &size);
	ASSERT_OK(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, &ext));
	assert_engines_equal(e, d);
	encode(d, &ext, &again, &again_size);
	ASSERT_EQ(again_size, size);
	ASSERT_MEMEQ(again, blob, size);
	luo_engine_free(d);
	luo_engine_free(e);
}

TEST(ext_read_gets_minus_one_when_node_absent)
{
	_cleanup_free_ void *blob = NULL;
	struct ext_data in = { .read_offset = 5 };
	struct luo_state_ext rext = { "luod", ext_write, ext_read, &in };
	luo_engine *e = both_engine(), *d = both_engine();
	size_t size;

	encode(e, NULL, &blob, &size);
	ASSERT_OK(luo_state_decode(d, blob, size, 0, &rext));
	ASSERT_EQ(in.calls, 1);
	ASSERT_EQ(in.read_offset, -1);
	luo_engine_free(d);
	luo_engine_free(e);
}

TEST(ext_read_failure_fails_decode_and_leaves_engine_empty)
{
	_cleanup_free_ void *blob = NULL;
	struct ext_data out = { .value = 1 }, in = { .fail = -EXDEV };
	struct luo_state_ext wext = { "luod", ext_write, ext_read, &out };
	struct luo_state_ext rext = { "luod", ext_write, ext_read, &in };
	luo_engine *e = rich_engine(), *d = both_engine();
	size_t size;

	encode(e, &wext, &blob, &size);
	e->borrowed_fds = true;
	luo_engine_free(e);
	/* Adopting, so a teardown that closed fds would be caught below. */
	ASSERT_ERR(luo_state_decode(d, blob, size, 0, &rext), -EXDEV);
	assert_engine_empty(d);
	in.fail = 0;
	ASSERT_OK(luo_state_decode(d, blob, size, 0, &rext));
	luo_engine_free(d);
}

/* ---- hand-made blobs, one broken rule each --------------------------------- */

enum breakage {
	OK,
	ROOT_COMPAT,
	ROOT_NO_COMPAT,
	SESSION_COMPAT,
	FILE_COMPAT,
	FLB_COMPAT,
	ROOT_UNKNOWN_PROP,
	ROOT_UNKNOWN_NODE,
	SESSION_UNKNOWN_PROP,
	FILE_UNKNOWN_PROP,
	FILE_SUBNODE,
	SESSION_MISSING_PROP,
	FILE_REPEATED_PROP,
	TOKEN_WRONG_LENGTH,
	NODE_INDEX_SKIPPED,
	DUP_OUTGOING_NAME,
	DUP_TOKEN,
	DUP_FD,
	DUP_FD_FLB,
	DUP_HANDLE,
	HANDLE_AHEAD,
	UNKNOWN_HANDLER,
	UNKNOWN_FLB,
	BAD_KIND,
	STATE_NOT_OF_KIND,
	NAME_EMPTY,
	NAME_64,
	NAME_NUL,
	SESSION_FLAGS_UNKNOWN,
	FILE_FLAGS_UNKNOWN,
	FILE_V1_FLAG_OF_V2,
	FLB_FLAGS_UNKNOWN,
	DATA_TOO_BIG,
	FD_NEGATIVE,
	FD_DISCARDED_OK,
	RETRIEVED_IN_OUTGOING,
	FROZEN_IN_OUTGOING,
	FINISHED_WITH_FILES,
	RETRIEVE_ERROR_NOT_ERRNO,
	HANDLER_NOT_STRING,
	TRAILING_BYTES,
	MEM_RESERVATION,
};

#define FDT_OK(expr) ASSERT_OK(expr)

struct file_spec {
	uint64_t token;
	const char *handler;
	int fd;
	uint32_t flags;
	int err;
};

static void put_file(void *fdt, size_t i, const struct file_spec *f, enum breakage b)
{
	char node[32];
	uint64_t data = f->token;

	snprintf(node, sizeof(node), "file@%zu", i);
	FDT_OK(fdt_begin_node(fdt, node));
	FDT_OK(fdt_property_string(fdt, "compatible",
				   b == FILE_COMPAT ? "luo-file-v3"
						    : LUO_STATE_FILE_V1_COMPATIBLE));
	if (b == TOKEN_WRONG_LENGTH)
		FDT_OK(fdt_property_u32(fdt, "token", (uint32_t)f->token));
	else
		FDT_OK(fdt_property_u64(fdt, "token", f->token));
	if (b == HANDLER_NOT_STRING)
		FDT_OK(fdt_property(fdt, "handler", f->handler, (int)strlen(f->handler)));
	else
		FDT_OK(fdt_property_string(fdt, "handler", f->handler));
	FDT_OK(fdt_property_u32(fdt, "fd", (uint32_t)f->fd));
	if (b == DATA_TOO_BIG) {
		static uint8_t big[LUO_HANDLER_DATA_MAX + 1];
		FDT_OK(fdt_property(fdt, "data", big, sizeof(big)));
	} else
		FDT_OK(fdt_property(fdt, "data", &data, sizeof(data)));
	FDT_OK(fdt_property_u32(fdt, "flags", f->flags));
	FDT_OK(fdt_property_u32(fdt, "retrieve-error", (uint32_t)f->err));
	if (b == FILE_UNKNOWN_PROP)
		FDT_OK(fdt_property_u32(fdt, "colour", 3));
	if (b == FILE_REPEATED_PROP)
		FDT_OK(fdt_property_u32(fdt, "flags", f->flags));
	if (b == FILE_SUBNODE) {
		FDT_OK(fdt_begin_node(fdt, "extra"));
		FDT_OK(fdt_end_node(fdt));
	}
	FDT_OK(fdt_end_node(fdt));
}

struct session_spec {
	const char *name;
	size_t name_len;
	uint32_t kind, state;
	uint64_t flags;
	uint64_t handle;
	size_t n_files;
	struct file_spec files[3];
};

static void put_session(void *fdt, size_t i, const struct session_spec *s, enum breakage b)
{
	char node[32];

	snprintf(node, sizeof(node), "session@%zu", i);
	FDT_OK(fdt_begin_node(fdt, node));
	FDT_OK(fdt_property_string(fdt, "compatible",
				   b == SESSION_COMPAT ? "luo-session-v0"
						       : LUO_STATE_SESSION_V1_COMPATIBLE));
	FDT_OK(fdt_property(fdt, "name", s->name, (int)s->name_len));
	FDT_OK(fdt_property_u32(fdt, "kind", s->kind));
	FDT_OK(fdt_property_u32(fdt, "state", s->state));
	FDT_OK(fdt_property_u64(fdt, "flags", s->flags));
	if (b != SESSION_MISSING_PROP)
		FDT_OK(fdt_property_u32(fdt, "uid", 1000));
	FDT_OK(fdt_property_u64(fdt, "handle", s->handle));
	if (b == SESSION_UNKNOWN_PROP)
		FDT_OK(fdt_property_u32(fdt, "colour", 3));
	for (size_t j = 0; j < s->n_files; j++)
		put_file(fdt, j, &s->files[j], b);
	FDT_OK(fdt_end_node(fdt));
}

/*
 * A small valid blob (an FLB, an outgoing session with two files, an
 * incoming waiting session with one) with the fd slots given, broken in
 * exactly one way.
 */
static void *make_blob(enum breakage b, const int fds[3], size_t *ret_size)
{
	size_t cap = 64 * 1024;
	void *fdt = malloc(cap);
	struct session_spec s[2] = {
		{ "alpha",
		  5,
		  LUO_SESSION_OUTGOING,
		  LUO_SESSION_OPEN,
		  0,
		  1,
		  2,
		  { { 7, "test-v1", fds[0], 0, 0 }, { 8, "test-flb-v1", fds[1], 0, 0 } } },
		{ "beta",
		  4,
		  LUO_SESSION_INCOMING,
		  LUO_SESSION_WAITING,
		  0,
		  0,
		  1,
		  { { 7, "test-v1", fds[2], LUO_STATE_FILE_FROZEN, 0 } } },
	};
	char node[32];

	ASSERT_TRUE(fdt);
	switch (b) {
	case DUP_OUTGOING_NAME:
		s[1].kind = LUO_SESSION_OUTGOING;
		s[1].state = LUO_SESSION_OPEN;
		s[1].files[0].flags = 0;
		s[1].name = "alpha";
		s[1].name_len = 5;
		break;
	case DUP_TOKEN:
		s[0].files[1].token = 7;
		break;
	case DUP_FD:
		s[1].files[0].fd = s[0].files[0].fd;
		break;
	case DUP_HANDLE:
		s[1].state = LUO_SESSION_RETRIEVED;
		s[1].handle = 1;
		break;
	case HANDLE_AHEAD:
		s[0].handle = 4;
		break;
	case UNKNOWN_HANDLER:
		s[0].files[1].handler = "nope-v1";
		break;
	case BAD_KIND:
		s[1].kind = 2;
		break;
	case STATE_NOT_OF_KIND:
		s[0].state = LUO_SESSION_RETRIEVED;
		break;
	case NAME_EMPTY:
		s[0].name_len = 0;
		break;
	case NAME_64:
		s[0].name = "0123456789012345678901234567890123456789012345678901234567890123";
		s[0].name_len = 64;
		break;
	case NAME_NUL:
		s[0].name = "al\0ha";
		break;
	case SESSION_FLAGS_UNKNOWN:
		s[0].flags = 1u << 5;
		break;
	case FILE_FLAGS_UNKNOWN:
		s[1].files[0].flags |= 1u << 7;
		break;
	case FILE_V1_FLAG_OF_V2:
		/* Only v2 records carry an identity to be by description. */
		s[1].files[0].flags |= LUO_STATE_FILE_ID_BY_DESCRIPTION;
		break;
	case FD_NEGATIVE:
		s[0].files[0].fd = -1;
		break;
	case FD_DISCARDED_OK:
		/* A failed retrieve may leave a file without its fd. */
		s[1].state = LUO_SESSION_RETRIEVED;
		s[1].handle = 2;
		s[1].files[0].fd = -1;
		s[1].files[0].err = -EIO;
		break;
	case RETRIEVED_IN_OUTGOING:
		s[0].files[0].flags = LUO_STATE_FILE_RETRIEVED;
		break;
	case FROZEN_IN_OUTGOING:
		s[0].files[0].flags = LUO_STATE_FILE_FROZEN;
		break;
	case FINISHED_WITH_FILES:
		s[1].state = LUO_SESSION_FINISHED;
		break;
	case RETRIEVE_ERROR_NOT_ERRNO:
		s[1].state = LUO_SESSION_RETRIEVED;
		s[1].files[0].err = 5;
		break;
	default:
		break;
	}

	FDT_OK(fdt_create(fdt, (int)cap));
	if (b == MEM_RESERVATION)
		FDT_OK(fdt_add_reservemap_entry(fdt, 0x1000, 0x1000));
	FDT_OK(fdt_finish_reservemap(fdt));
	FDT_OK(fdt_begin_node(fdt, ""));
	if (b != ROOT_NO_COMPAT)
		FDT_OK(fdt_property_string(fdt, "compatible",
					   b == ROOT_COMPAT ? "luod-v2" : LUO_STATE_COMPATIBLE));
	FDT_OK(fdt_property_u64(fdt, "update-number", 3));
	FDT_OK(fdt_property_u64(fdt, "next-handle", 3));
	if (b == ROOT_UNKNOWN_PROP)
		FDT_OK(fdt_property_u32(fdt, "colour", 3));

	FDT_OK(fdt_begin_node(fdt, "flb@0"));
	FDT_OK(fdt_property_string(fdt, "compatible",
				   b == FLB_COMPAT ? "luo-flb-v9" : LUO_STATE_FLB_COMPATIBLE));
	FDT_OK(fdt_property_string(fdt, "flb",
				   b == UNKNOWN_FLB ? "other-flb-v1" : "test-flb-state-v1"));
	FDT_OK(fdt_property_u64(fdt, "count", 1));
	FDT_OK(fdt_property_u32(fdt, "flags", b == FLB_FLAGS_UNKNOWN ? 4 : 0));
	FDT_OK(fdt_property_u32(fdt, "fd", b == DUP_FD_FLB ? (uint32_t)fds[1] : UINT32_MAX));
	FDT_OK(fdt_property(fdt, "data", "flb", 3));
	FDT_OK(fdt_end_node(fdt));

	for (size_t i = 0; i < 2; i++) {
		if (b == NODE_INDEX_SKIPPED && i == 1) {
			/* session@2 after session@0 */
			put_session(fdt, 2, &s[i], b);
			continue;
		}
		put_session(fdt, i, &s[i], b);
	}
	if (b == ROOT_UNKNOWN_NODE) {
		snprintf(node, sizeof(node), "stranger");
		FDT_OK(fdt_begin_node(fdt, node));
		FDT_OK(fdt_end_node(fdt));
	}
	FDT_OK(fdt_end_node(fdt));
	FDT_OK(fdt_finish(fdt));
	FDT_OK(fdt_pack(fdt));
	*ret_size = fdt_totalsize(fdt);
	if (b == TRAILING_BYTES)
		(*ret_size)++;
	return fdt;
}

static const int fake_fds[3] = { 500, 501, 502 };

/*
 * Decode (borrowing the fds) refuses blob with want and leaves the engine
 * empty; the dump refuses it alike, except for what needs the engine's
 * handlers (-ENOPROTOOPT), which it accepts.
 */
static void check_refused(const void *blob, size_t size, int want)
{
	luo_engine *e = both_engine();
	FILE *null = fopen("/dev/null", "we");

	ASSERT_TRUE(null);
	ASSERT_ERR(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL), want);
	assert_engine_empty(e);
	ASSERT_ERR(luo_state_dump(blob, size, null, false), want == -ENOPROTOOPT ? 0 : want);
	fclose(null);
	luo_engine_free(e);
}

/* A blob broken in way b (fake fd slots) is refused with want. */
static void check_broken(enum breakage b, int want)
{
	_cleanup_free_ void *blob = NULL;
	size_t size;

	blob = make_blob(b, fake_fds, &size);
	check_refused(blob, size, want);
}

TEST(hand_made_valid_blob_decodes_and_round_trips)
{
	_cleanup_free_ void *blob = NULL, *again = NULL;
	luo_engine *e = both_engine();
	size_t size, again_size;

	blob = make_blob(OK, fake_fds, &size);
	ASSERT_OK(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL));
	ASSERT_EQ(luo_engine_n_files(e), 3);
	ASSERT_EQ(luo_engine_find_flb(e, "test-flb-state-v1")->count, 1);
	encode(e, NULL, &again, &again_size);
	/* The hand-made sessions are luo-session-v1 with luo-file-v1 nodes:
	 * the one of two files comes back packed, the one of one file as a
	 * luo-file-v2 node, without identities, holding the same engine. */
	ASSERT_STREQ(fdt_getprop(again, fdt_path_offset(again, "/session@0"), "compatible", NULL),
		     LUO_STATE_SESSION_COMPATIBLE);
	ASSERT_TRUE(fdt_first_subnode(again, fdt_path_offset(again, "/session@0")) < 0);
	ASSERT_STREQ(fdt_getprop(again, fdt_path_offset(again, "/session@1"), "compatible", NULL),
		     LUO_STATE_SESSION_V1_COMPATIBLE);
	ASSERT_STREQ(
		fdt_getprop(again, fdt_path_offset(again, "/session@1/file@0"), "compatible", NULL),
		LUO_STATE_FILE_COMPATIBLE);
	{
		luo_engine *d = round_trip(again, again_size);

		assert_engines_equal(e, d);
		luo_engine_free(d);
	}
	luo_engine_free(e);
}

TEST(wrong_root_compatible_is_eprotonosupport)
{
	check_broken(ROOT_COMPAT, -EPROTONOSUPPORT);
	check_broken(ROOT_NO_COMPAT, -EBADMSG);
}

TEST(wrong_node_compatible_is_eprotonosupport)
{
	check_broken(SESSION_COMPAT, -EPROTONOSUPPORT);
	check_broken(FILE_COMPAT, -EPROTONOSUPPORT);
	check_broken(FLB_COMPAT, -EPROTONOSUPPORT);
}

TEST(unknown_properties_are_ebadmsg)
{
	check_broken(ROOT_UNKNOWN_PROP, -EBADMSG);
	check_broken(SESSION_UNKNOWN_PROP, -EBADMSG);
	check_broken(FILE_UNKNOWN_PROP, -EBADMSG);
}

TEST(unknown_nodes_are_ebadmsg)
{
	check_broken(ROOT_UNKNOWN_NODE, -EBADMSG);
	check_broken(FILE_SUBNODE, -EBADMSG);
	check_broken(NODE_INDEX_SKIPPED, -EBADMSG);
}

TEST(missing_repeated_or_wrong_length_properties_are_ebadmsg)
{
	check_broken(SESSION_MISSING_PROP, -EBADMSG);
	check_broken(FILE_REPEATED_PROP, -EBADMSG);
	check_broken(TOKEN_WRONG_LENGTH, -EBADMSG);
	check_broken(HANDLER_NOT_STRING, -EBADMSG);
}

TEST(duplicate_outgoing_names_are_ebadmsg)
{
	check_broken(DUP_OUTGOING_NAME, -EBADMSG);
}

TEST(duplicate_tokens_in_a_session_are_ebadmsg)
{
	check_broken(DUP_TOKEN, -EBADMSG);
}

TEST(duplicate_fd_slots_are_ebadmsg)
{
	check_broken(DUP_FD, -EBADMSG);
	check_broken(DUP_FD_FLB, -EBADMSG);
}

TEST(duplicate_or_future_handles_are_ebadmsg)
{
	check_broken(DUP_HANDLE, -EBADMSG);
	check_broken(HANDLE_AHEAD, -EBADMSG);
}

TEST(unknown_handler_is_enoprotoopt)
{
	check_broken(UNKNOWN_HANDLER, -ENOPROTOOPT);
	check_broken(UNKNOWN_FLB, -ENOPROTOOPT);
}

TEST(out_of_range_values_are_ebadmsg)
{
	check_broken(BAD_KIND, -EBADMSG);
	check_broken(STATE_NOT_OF_KIND, -EBADMSG);
	check_broken(SESSION_FLAGS_UNKNOWN, -EBADMSG);
	check_broken(FILE_FLAGS_UNKNOWN, -EBADMSG);
	check_broken(FILE_V1_FLAG_OF_V2, -EBADMSG);
	check_broken(FLB_FLAGS_UNKNOWN, -EBADMSG);
	check_broken(DATA_TOO_BIG, -EBADMSG);
	check_broken(RETRIEVE_ERROR_NOT_ERRNO, -EBADMSG);
}

TEST(names_must_have_1_to_63_bytes_without_nul)
{
	check_broken(NAME_EMPTY, -EBADMSG);
	check_broken(NAME_64, -EBADMSG);
	check_broken(NAME_NUL, -EBADMSG);
}

TEST(fd_must_be_a_slot_unless_the_file_was_discarded)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine();
	size_t size;

	check_broken(FD_NEGATIVE, -EBADMSG);
	blob = make_blob(FD_DISCARDED_OK, fake_fds, &size);
	ASSERT_OK(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL));
	luo_engine_free(e);
}

TEST(file_state_must_fit_its_session)
{
	check_broken(RETRIEVED_IN_OUTGOING, -EBADMSG);
	check_broken(FROZEN_IN_OUTGOING, -EBADMSG);
	check_broken(FINISHED_WITH_FILES, -EBADMSG);
}

TEST(trailing_bytes_and_reservations_are_ebadmsg)
{
	check_broken(TRAILING_BYTES, -EBADMSG);
	check_broken(MEM_RESERVATION, -EBADMSG);
}

TEST(other_fdt_versions_are_ebadmsg)
{
	_cleanup_free_ uint8_t *blob = NULL;
	luo_engine *e = both_engine();
	size_t size;

	blob = make_blob(OK, fake_fds, &size);
	/* Version 4 once crashed libfdt's own check. */
	for (uint32_t version = 1; version <= 18; version++) {
		if (version == 17)
			continue;
		fdt_set_version(blob, version);
		ASSERT_ERR(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL), -EBADMSG);
		assert_engine_empty(e);
	}
	fdt_set_version(blob, 17);
	fdt_set_last_comp_version(blob, 2);
	ASSERT_ERR(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL), -EBADMSG);
	fdt_set_last_comp_version(blob, 16);
	ASSERT_OK(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL));
	luo_engine_free(e);
}

TEST(encode_refuses_data_the_decoder_would_refuse)
{
	void *blob = NULL;
	luo_engine *e = both_engine();
	struct luo_file *f;
	luo_session *s;
	size_t size;

	s = test_create(e, "big");
	e->borrowed_fds = true;
	ASSERT_OK(luo_file_new(s, 1, &test_handler, 1000, NULL, 0, &f));
	/* As if a handler had grown its record after preserve. */
	f->hf.data = calloc(1, LUO_HANDLER_DATA_MAX + 1);
	f->hf.data_size = LUO_HANDLER_DATA_MAX + 1;
	ASSERT_ERR(luo_state_encode(e, NULL, &blob, &size), -EOVERFLOW);
	ASSERT_TRUE(blob == NULL);
	luo_engine_free(e);
}

TEST(misaligned_blob_decodes)
{
	_cleanup_free_ void *blob = NULL;
	_cleanup_free_ uint8_t *shifted = NULL;
	luo_engine *e = both_engine();
	size_t size;

	blob = make_blob(OK, fake_fds, &size);
	shifted = malloc(size + 1);
	ASSERT_TRUE(shifted);
	memcpy(shifted + 1, blob, size);
	ASSERT_OK(luo_state_decode(e, shifted + 1, size, LUO_STATE_BORROW_FDS, NULL));
	luo_engine_free(e);
}

TEST(decode_into_engine_with_sessions_is_ebusy)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine();
	size_t size;

	blob = make_blob(OK, fake_fds, &size);
	test_create(e, "already");
	ASSERT_ERR(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL), -EBUSY);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 1);
	luo_engine_free(e);
}

/* ---- fds: checked, adopted, never closed on failure ------------------------- */

TEST(closed_fd_is_ebadf_and_nothing_is_closed_or_left)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine();
	int fds[3], w;
	size_t size;

	fds[0] = test_eventfd();
	fds[1] = test_pipe(&w);
	fds[2] = test_eventfd();
	close(fds[2]); /* the last file's fd is not open */
	blob = make_blob(OK, fds, &size);
	ASSERT_ERR(luo_state_decode(e, blob, size, 0, NULL), -EBADF);
	assert_engine_empty(e);
	/* The fds named in the blob still belong to the caller. */
	ASSERT_OK(fcntl(fds[0], F_GETFD));
	ASSERT_OK(fcntl(fds[1], F_GETFD));

	/* With them all open the engine adopts them and closes them when freed. */
	fds[2] = test_eventfd();
	free(blob);
	blob = make_blob(OK, fds, &size);
	ASSERT_OK(luo_state_decode(e, blob, size, 0, NULL));
	ASSERT_EQ(luo_engine_n_files(e), 3);
	luo_engine_free(e);
	for (int i = 0; i < 3; i++)
		ASSERT_ERRNO(fcntl(fds[i], F_GETFD), EBADF);
	close(w);
}

TEST(closed_fd_with_a_carried_identity_is_ebadf_and_nothing_is_closed)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e, *d;
	int fds[1200], tmp, wr;
	luo_session *s;
	size_t size, i = 0;

	/* More files than one poll() batch, the closed one in the second. */
	test_need_fds(2600);
	e = both_engine();
	d = both_engine();
	s = test_create(e, "many");
	for (uint64_t t = 0; t < 1100; t++)
		test_preserve_new(s, t);
	preserve_pipe(s, 5000);
	LIST_FOREACH (pos, &s->files)
		fds[i++] = list_entry(pos, struct luo_file, order)->hf.fd;
	encode(e, NULL, &blob, &size);
	e->borrowed_fds = true;
	luo_engine_free(e);
	wr = fds[1050];
	ASSERT_OK(close(wr));

	ASSERT_ERR(luo_state_decode(d, blob, size, 0, NULL), -EBADF);
	assert_engine_empty(d);
	for (size_t k = 0; k < i; k++)
		if (k != 1050)
			ASSERT_OK(fcntl(fds[k], F_GETFD));

	/* Open again: adopted. */
	tmp = test_eventfd();
	ASSERT_OK(dup3(tmp, wr, O_CLOEXEC));
	close(tmp);
	ASSERT_OK(luo_state_decode(d, blob, size, 0, NULL));
	ASSERT_EQ(luo_engine_n_files(d), 1101);
	luo_engine_free(d);
	for (size_t k = 0; k < i; k++)
		ASSERT_ERRNO(fcntl(fds[k], F_GETFD), EBADF);
}

TEST(borrowed_fds_are_not_checked_indexed_or_closed)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine();
	int fds[3], w;
	size_t size;

	fds[0] = test_eventfd();
	fds[1] = test_pipe(&w);
	fds[2] = 999; /* not open: not looked at */
	blob = make_blob(OK, fds, &size);
	ASSERT_OK(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL));
	ASSERT_TRUE(e->identity_root == NULL);
	luo_engine_free(e);
	ASSERT_OK(fcntl(fds[0], F_GETFD));
	ASSERT_OK(fcntl(fds[1], F_GETFD));
	close(fds[0]);
	close(fds[1]);
	close(w);
}

TEST(same_file_twice_is_ebadmsg)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine();
	int fds[3], w;
	size_t size;

	fds[0] = test_eventfd();
	fds[1] = test_pipe(&w);
	fds[2] = fcntl(fds[0], F_DUPFD_CLOEXEC, 3); /* a dup: the same open file */
	ASSERT_TRUE(fds[2] >= 0);
	blob = make_blob(OK, fds, &size);
	ASSERT_ERR(luo_state_decode(e, blob, size, 0, NULL), -EBADMSG);
	assert_engine_empty(e);
	for (int i = 0; i < 3; i++) {
		ASSERT_OK(fcntl(fds[i], F_GETFD));
		close(fds[i]);
	}
	close(w);
	luo_engine_free(e);
}

/* ---- identities ------------------------------------------------------------ */

/* The record of the first file whose fd slot is -1 (discarded) or not, writable in
 * place, in a file node or in a packed session's array. */
static uint8_t *find_record(void *blob, bool discarded)
{
	int session, file;

	fdt_for_each_subnode(session, blob, 0)
	{
		int len;
		uint8_t *files = fdt_getprop_w(blob, session, "files", &len);

		for (int k = 0; files && k < len; k += 56)
			if ((fdt32_ld((const fdt32_t *)(files + k + 32)) == UINT32_MAX) ==
			    discarded)
				return files + k;
		fdt_for_each_subnode(file, blob, session)
		{
			uint8_t *p = fdt_getprop_w(blob, file, "record", &len);

			ASSERT_TRUE(p);
			ASSERT_EQ(len, 44);
			if ((fdt32_ld((const fdt32_t *)(p + 32)) == UINT32_MAX) == discarded)
				return p;
		}
	}
	ASSERT_TRUE(!"no such file");
	return NULL;
}

TEST(decode_indexes_the_identity_the_blob_carries_without_asking_the_handler)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine(), *d = both_engine();
	struct luo_file *f;
	luo_session *s;
	uint64_t ino;
	uint8_t *rec;
	size_t size;
	int fd;

	s = test_create(e, "carried");
	test_preserve_new(s, 1);
	f = luo_file_lookup(s, 1);
	fd = f->hf.fd;
	ino = f->id.ino;
	encode(e, NULL, &blob, &size);
	rec = find_record(blob, false);
	ASSERT_EQ(fdt64_ld((const fdt64_t *)(rec + 16)), ino);
	/* A value only the blob knows: decode must take it as is. */
	fdt64_st(rec + 16, ino ^ 0x5a5a);
	e->borrowed_fds = true;
	luo_engine_free(e);

	memset(test_calls, 0, sizeof(test_calls));
	ASSERT_OK(luo_state_decode(d, blob, size, 0, NULL));
	ASSERT_EQ(test_calls[OP_GET_ID], 0);
	f = luo_file_lookup(luo_engine_find_session(d, LUO_SESSION_OUTGOING, "carried"), 1);
	ASSERT_TRUE(f->id_node != NULL);
	ASSERT_EQ(f->id.ino, ino ^ 0x5a5a);
	luo_engine_free(d);
	ASSERT_ERRNO(fcntl(fd, F_GETFD), EBADF);
}

TEST(v1_files_are_identified_again_on_decode)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine();
	int fds[3], w;
	size_t size;

	fds[0] = test_eventfd();
	fds[1] = test_pipe(&w);
	fds[2] = test_eventfd();
	blob = make_blob(OK, fds, &size);
	memset(test_calls, 0, sizeof(test_calls));
	ASSERT_OK(luo_state_decode(e, blob, size, 0, NULL));
	ASSERT_EQ(test_calls[OP_GET_ID], 3);
	for (int kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING; kind++)
		for (luo_session *s = luo_engine_first_session(e, kind); s; s = luo_session_next(s))
			LIST_FOREACH (pos, &s->files) {
				struct luo_file *f = list_entry(pos, struct luo_file, order);
				struct stat st;

				ASSERT_TRUE(f->id_node != NULL);
				ASSERT_OK(fstat(f->hf.fd, &st));
				ASSERT_EQ(f->id.ino, (uint64_t)st.st_ino);
			}
	luo_engine_free(e);
	close(w);
}

TEST(record_identity_is_whole_and_only_with_an_fd)
{
	_cleanup_free_ void *blob = NULL, *copy = NULL;
	luo_engine *e = rich_engine(), *d;
	struct luo_file *f;
	uint8_t *rec;
	size_t size;

	/* A file whose failed retrieve lost its fd. */
	f = luo_file_lookup(luo_engine_find_session(e, LUO_SESSION_INCOMING, "retrieved-c"), 21);
	luo_identity_remove(e, f);
	close(f->hf.fd);
	f->hf.fd = -EBADF;
	encode(e, NULL, &blob, &size);
	copy = malloc(size);
	ASSERT_TRUE(copy);

	/* An identity for a file without fd. */
	memcpy(copy, blob, size);
	rec = find_record(copy, true);
	fdt64_st(rec + 8, 1);
	check_refused(copy, size, -EBADMSG);

	/* By description, but no identity. */
	memcpy(copy, blob, size);
	rec = find_record(copy, true);
	fdt32_st(rec + 36,
		 fdt32_ld((const fdt32_t *)(rec + 36)) | LUO_STATE_FILE_ID_BY_DESCRIPTION);
	check_refused(copy, size, -EBADMSG);

	/* A flag no version knows. */
	memcpy(copy, blob, size);
	rec = find_record(copy, false);
	fdt32_st(rec + 36, fdt32_ld((const fdt32_t *)(rec + 36)) | (1u << 3));
	check_refused(copy, size, -EBADMSG);

	/* No identity at all is "not known": accepted, computed again when adopted. */
	memcpy(copy, blob, size);
	rec = find_record(copy, false);
	memset(rec + 8, 0, 24);
	fdt32_st(rec + 36,
		 fdt32_ld((const fdt32_t *)(rec + 36)) & ~LUO_STATE_FILE_ID_BY_DESCRIPTION);
	d = both_engine();
	ASSERT_OK(luo_state_decode(d, copy, size, LUO_STATE_BORROW_FDS, NULL));
	luo_engine_free(d);
	luo_engine_free(e);
}

TEST(record_of_another_length_is_ebadmsg)
{
	_cleanup_free_ void *blob = NULL, *big = NULL;
	luo_engine *e = rich_engine();
	uint8_t rec[40] = { 0 };
	size_t size;
	int node;

	encode(e, NULL, &blob, &size);
	big = malloc(size + 64);
	ASSERT_TRUE(big);
	ASSERT_OK(fdt_open_into(blob, big, (int)size + 64));
	/* The first session of one file, which keeps a node for it. */
	fdt_for_each_subnode(node, big, 0) if (fdt_subnode_offset(big, node, "file@0") >= 0) break;
	ASSERT_TRUE(node >= 0);
	node = fdt_subnode_offset(big, node, "file@0");
	ASSERT_TRUE(node >= 0);
	memcpy(rec, fdt_getprop(big, node, "record", NULL), sizeof(rec));
	ASSERT_OK(fdt_setprop(big, node, "record", rec, sizeof(rec)));
	ASSERT_OK(fdt_pack(big));
	check_refused(big, fdt_totalsize(big), -EBADMSG);
	luo_engine_free(e);
}

/* ---- packed sessions (luo-session-v2) ---------------------------------------- */

#define PACKED_RECORD 56

/* One outgoing session of three files of two handlers, each with data. */
static luo_engine *packed_engine(void)
{
	luo_engine *e = both_engine();
	luo_session *s = test_create(e, "packed");

	test_preserve_new(s, 1);
	preserve_pipe(s, 2);
	test_preserve_new(s, 3);
	return e;
}

/* A copy of session@0's property name (at most cap bytes); its length. */
static int get_session_prop(const void *blob, const char *name, void *buf, size_t cap)
{
	int len;
	const void *p = fdt_getprop(blob, fdt_path_offset(blob, "/session@0"), name, &len);

	ASSERT_TRUE(p);
	ASSERT_TRUE(len >= 0 && (size_t)len <= cap);
	memcpy(buf, p, (size_t)len);
	return len;
}

/* blob with session@0's property name set to val: malloc'ed, its size in *ret_size. */
static void *with_session_prop(const void *blob, size_t size, const char *name, const void *val,
			       int len, size_t *ret_size)
{
	size_t cap = size + (size_t)len + 256;
	void *copy = malloc(cap);

	ASSERT_TRUE(copy);
	ASSERT_OK(fdt_open_into(blob, copy, (int)cap));
	ASSERT_OK(fdt_setprop(copy, fdt_path_offset(copy, "/session@0"), name, val, len));
	ASSERT_OK(fdt_pack(copy));
	*ret_size = fdt_totalsize(copy);
	return copy;
}

/* Sets session@0's property to val and checks that decode and dump give want. */
static void check_session_prop(const void *blob, size_t size, const char *name, const void *val,
			       int len, int want)
{
	_cleanup_free_ void *copy = NULL;
	size_t copy_size;

	copy = with_session_prop(blob, size, name, val, len, &copy_size);
	if (want == 0)
		luo_engine_free(round_trip(copy, copy_size));
	else
		check_refused(copy, copy_size, want);
}

TEST(session_of_several_files_carries_them_as_one_array)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = packed_engine(), *d;
	uint8_t files[4 * PACKED_RECORD], data[64];
	char handlers[128];
	int session, n, n_data, n_handlers;
	size_t size, off = 0;
	uint32_t used = 0;

	encode(e, NULL, &blob, &size);
	session = fdt_path_offset(blob, "/session@0");
	ASSERT_STREQ(fdt_getprop(blob, session, "compatible", NULL), "luo-session-v2");
	ASSERT_TRUE(fdt_first_subnode(blob, session) < 0);
	n = get_session_prop(blob, "files", files, sizeof(files));
	ASSERT_EQ(n, 3 * PACKED_RECORD);
	n_data = get_session_prop(blob, "file-data", data, sizeof(data));
	ASSERT_EQ(n_data, 3 * 8);
	n_handlers = get_session_prop(blob, "handlers", handlers, sizeof(handlers));
	/* Each record: its token, its handler by first use, its data in turn. */
	for (int k = 0; k < 3; k++) {
		const uint8_t *rec = files + k * PACKED_RECORD;
		const struct luo_file *f =
			luo_file_lookup(luo_engine_find_session(e, LUO_SESSION_OUTGOING, "packed"),
					(uint64_t)k + 1);
		uint32_t h = fdt32_ld((const fdt32_t *)(rec + 44));
		const char *name = handlers;

		ASSERT_EQ(fdt64_ld((const fdt64_t *)rec), (uint64_t)k + 1);
		ASSERT_EQ(fdt32_ld((const fdt32_t *)(rec + 32)), (uint32_t)f->hf.fd);
		ASSERT_TRUE(h <= used);
		used = MAX(used, h + 1);
		for (uint32_t j = 0; j < h; j++)
			name += strlen(name) + 1;
		ASSERT_STREQ(name, f->handler->compatible);
		ASSERT_EQ(fdt32_ld((const fdt32_t *)(rec + 48)), off);
		ASSERT_EQ(fdt32_ld((const fdt32_t *)(rec + 52)), 8);
		ASSERT_MEMEQ(data + off, f->hf.data, 8);
		off += 8;
	}
	ASSERT_EQ(used, 2);
	ASSERT_EQ((size_t)n_handlers,
		  strlen(handlers) + 1 + strlen(handlers + strlen(handlers) + 1) + 1);
	d = round_trip(blob, size);
	assert_engines_equal(e, d);
	luo_engine_free(d);
	/* The tampering below starts from a blob that decodes. */
	check_session_prop(blob, size, "files", files, n, 0);
	luo_engine_free(e);
}

TEST(packed_records_of_another_length_are_ebadmsg)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = packed_engine();
	uint8_t files[4 * PACKED_RECORD] = { 0 };
	size_t size;
	int n;

	encode(e, NULL, &blob, &size);
	n = get_session_prop(blob, "files", files, sizeof(files));
	check_session_prop(blob, size, "files", files, n - 4, -EBADMSG);
	check_session_prop(blob, size, "files", files, n - PACKED_RECORD + 1, -EBADMSG);
	check_session_prop(blob, size, "files", files, n + 4, -EBADMSG);
	/* A whole record fewer leaves data and a handler nobody owns. */
	check_session_prop(blob, size, "files", files, n - PACKED_RECORD, -EBADMSG);
	check_session_prop(blob, size, "files", files, 0, -EBADMSG);
	luo_engine_free(e);
}

TEST(packed_handler_index_out_of_range_or_order_is_ebadmsg)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = packed_engine();
	uint8_t files[4 * PACKED_RECORD], copy[sizeof(files)];
	size_t size;
	int n;

	encode(e, NULL, &blob, &size);
	n = get_session_prop(blob, "files", files, sizeof(files));
	ASSERT_EQ(fdt32_ld((const fdt32_t *)(files + 44)), 0);
	ASSERT_EQ(fdt32_ld((const fdt32_t *)(files + PACKED_RECORD + 44)), 1);
	ASSERT_EQ(fdt32_ld((const fdt32_t *)(files + 2 * PACKED_RECORD + 44)), 0);

	/* Past the end of the list. */
	for (uint32_t bad = 2; bad != 0; bad = bad == 2 ? UINT32_MAX : 0) {
		memcpy(copy, files, sizeof(files));
		fdt32_st(copy + 2 * PACKED_RECORD + 44, bad);
		check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	}
	/* Not in the order of first use. */
	memcpy(copy, files, sizeof(files));
	fdt32_st(copy + 44, 1);
	fdt32_st(copy + PACKED_RECORD + 44, 0);
	fdt32_st(copy + 2 * PACKED_RECORD + 44, 1);
	check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	/* A handler listed that no file uses. */
	memcpy(copy, files, sizeof(files));
	fdt32_st(copy + PACKED_RECORD + 44, 0);
	check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	luo_engine_free(e);
}

TEST(packed_handler_list_names_each_known_handler_once)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = packed_engine();
	char handlers[128], copy[256];
	size_t size, first;
	int n;

	encode(e, NULL, &blob, &size);
	n = get_session_prop(blob, "handlers", handlers, sizeof(handlers));
	first = strlen(handlers) + 1;

	/* The same name twice. */
	memcpy(copy, handlers, first);
	memcpy(copy + first, handlers, first);
	check_session_prop(blob, size, "handlers", copy, (int)(2 * first), -EBADMSG);
	/* The last name without its NUL. */
	check_session_prop(blob, size, "handlers", handlers, n - 1, -EBADMSG);
	/* An empty name. */
	copy[0] = '\0';
	memcpy(copy + 1, handlers + first, (size_t)n - first);
	check_session_prop(blob, size, "handlers", copy, n - (int)first + 1, -EBADMSG);
	/* A name of LUO_COMPATIBLE_MAX bytes. */
	memset(copy, 'x', LUO_COMPATIBLE_MAX);
	copy[LUO_COMPATIBLE_MAX] = '\0';
	memcpy(copy + LUO_COMPATIBLE_MAX + 1, handlers + first, (size_t)n - first);
	check_session_prop(blob, size, "handlers", copy, LUO_COMPATIBLE_MAX + 1 + n - (int)first,
			   -EBADMSG);
	/* A well-formed name this engine lacks. */
	memcpy(copy, "nope-v1", 8);
	memcpy(copy + 8, handlers + first, (size_t)n - first);
	check_session_prop(blob, size, "handlers", copy, 8 + n - (int)first, -ENOPROTOOPT);
	luo_engine_free(e);
}

TEST(packed_data_offset_or_length_out_of_range_is_ebadmsg)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = packed_engine();
	uint8_t files[4 * PACKED_RECORD], copy[sizeof(files)], data[64] = { 0 };
	size_t size;
	int n, n_data;

	encode(e, NULL, &blob, &size);
	n = get_session_prop(blob, "files", files, sizeof(files));
	n_data = get_session_prop(blob, "file-data", data, sizeof(data));
	ASSERT_EQ(n_data, 24);

	/* An offset not right after the previous file's data (overlapping, a gap, far out). */
	for (uint32_t off = 0; off < 4; off++) {
		static const uint32_t bad[] = { 0, 9, 24, UINT32_MAX };

		memcpy(copy, files, sizeof(files));
		fdt32_st(copy + PACKED_RECORD + 48, bad[off]);
		check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	}
	/* A length past the end of file-data, or wrapping around. */
	memcpy(copy, files, sizeof(files));
	fdt32_st(copy + 2 * PACKED_RECORD + 52, 9);
	check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	fdt32_st(copy + 2 * PACKED_RECORD + 52, UINT32_MAX);
	check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	/* A length short of the end: file-data has bytes nobody owns. */
	fdt32_st(copy + 2 * PACKED_RECORD + 52, 7);
	check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	check_session_prop(blob, size, "file-data", data, n_data + 1, -EBADMSG);
	check_session_prop(blob, size, "file-data", data, n_data - 1, -EBADMSG);
	/* Moving bytes between files keeps the layout whole: accepted. */
	memcpy(copy, files, sizeof(files));
	fdt32_st(copy + 52, 7);
	fdt32_st(copy + PACKED_RECORD + 48, 7);
	fdt32_st(copy + PACKED_RECORD + 52, 9);
	check_session_prop(blob, size, "files", copy, n, 0);
	luo_engine_free(e);
}

TEST(packed_duplicate_tokens_or_fd_slots_are_ebadmsg)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = packed_engine();
	uint8_t files[4 * PACKED_RECORD], copy[sizeof(files)];
	size_t size;
	int n;

	encode(e, NULL, &blob, &size);
	n = get_session_prop(blob, "files", files, sizeof(files));
	memcpy(copy, files, sizeof(files));
	memcpy(copy + 2 * PACKED_RECORD, copy, 8);
	check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	memcpy(copy, files, sizeof(files));
	memcpy(copy + 2 * PACKED_RECORD + 32, copy + 32, 4);
	check_session_prop(blob, size, "files", copy, n, -EBADMSG);
	luo_engine_free(e);
}

TEST(packed_session_with_file_nodes_is_ebadmsg)
{
	_cleanup_free_ void *blob = NULL, *copy = NULL;
	luo_engine *e = packed_engine();
	size_t size;
	int node;

	encode(e, NULL, &blob, &size);
	copy = malloc(size + 256);
	ASSERT_TRUE(copy);
	ASSERT_OK(fdt_open_into(blob, copy, (int)size + 256));
	node = fdt_add_subnode(copy, fdt_path_offset(copy, "/session@0"), "file@0");
	ASSERT_TRUE(node >= 0);
	ASSERT_OK(fdt_pack(copy));
	check_refused(copy, fdt_totalsize(copy), -EBADMSG);
	luo_engine_free(e);
}

TEST(v1_sessions_of_several_file_nodes_still_decode)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine();
	size_t size;
	int session, n = 0, file;

	blob = make_blob(OK, fake_fds, &size);
	session = fdt_path_offset(blob, "/session@0");
	ASSERT_STREQ(fdt_getprop(blob, session, "compatible", NULL), "luo-session-v1");
	fdt_for_each_subnode(file, blob, session) n++;
	ASSERT_EQ(n, 2);
	ASSERT_OK(luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL));
	ASSERT_EQ(luo_engine_n_files(e), 3);
	ASSERT_TRUE(luo_file_lookup(luo_engine_find_session(e, LUO_SESSION_OUTGOING, "alpha"), 8));
	luo_engine_free(e);
}

/* An ext node large enough that the blob is checked on a second thread. */
#define BULK_SIZE (200 * 1024)

static int ext_write_bulk(void *fdt, void *userdata)
{
	void *p;
	int r = fdt_property_placeholder(fdt, "bulk", BULK_SIZE, &p);

	if (r < 0)
		return luo_fdt_errno(r);
	memset(p, 0x5a, BULK_SIZE);
	return ext_write(fdt, userdata);
}

TEST(large_blob_is_checked_in_full_before_ext_read_and_success)
{
	_cleanup_free_ void *blob = NULL, *again = NULL;
	struct ext_data out = { .value = 7 }, in = { 0 };
	struct luo_state_ext wext = { "luod", ext_write_bulk, ext_read, &out };
	struct luo_state_ext rext = { "luod", ext_write_bulk, ext_read, &in };
	luo_engine *e = rich_engine(), *d = both_engine();
	size_t size, again_size;
	int node, prop;
	uint8_t *p;

	encode(e, &wext, &blob, &size);
	ASSERT_TRUE(size > BULK_SIZE);
	ASSERT_OK(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, &rext));
	ASSERT_EQ(in.calls, 1);
	ASSERT_EQ(in.value, 7);
	encode(d, &rext, &again, &again_size);
	ASSERT_EQ(again_size, size);
	ASSERT_MEMEQ(again, blob, size);
	luo_engine_free(d);

	/* A name no strings block holds, inside the node the walker skips:
	 * only fdt_check_full() sees it, and its verdict stands. */
	node = fdt_subnode_offset(blob, 0, "luod");
	ASSERT_TRUE(node >= 0);
	prop = fdt_first_property_offset(blob, node);
	ASSERT_TRUE(prop >= 0);
	p = fdt_offset_ptr_w(blob, prop, 12);
	ASSERT_TRUE(p);
	fdt32_st(p + 8, 0x7ffffff0);
	in.calls = 0;
	d = both_engine();
	ASSERT_ERR(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, &rext), -EBADMSG);
	ASSERT_EQ(in.calls, 0);
	assert_engine_empty(d);
	luo_engine_free(d);
	check_refused(blob, size, -EBADMSG);
	luo_engine_free(e);
}

/* ---- untrusted blobs ---------------------------------------------------------- */

TEST(truncated_blob_at_every_length_is_ebadmsg)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = both_engine();
	size_t size;

	blob = make_blob(OK, fake_fds, &size);
	for (size_t len = 0; len < size; len++) {
		_cleanup_free_ void *cut = malloc(len ? len : 1);

		ASSERT_TRUE(cut);
		memcpy(cut, blob, len);
		ASSERT_ERR(luo_state_decode(e, cut, len, LUO_STATE_BORROW_FDS, NULL), -EBADMSG);
		assert_engine_empty(e);
	}
	luo_engine_free(e);
}

TEST(every_single_bit_flip_decodes_cleanly_or_fails_cleanly_like_the_dump)
{
	_cleanup_free_ uint8_t *blob = NULL;
	size_t size, accepted = 0;

	FILE *null = fopen("/dev/null", "we");

	ASSERT_TRUE(null);
	blob = make_blob(OK, fake_fds, &size);
	for (size_t bit = 0; bit < size * 8; bit++) {
		luo_engine *e = both_engine();
		int r, dumped;

		blob[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		r = luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL);
		/* The dump's verdict is the decoder's, but for handlers it cannot know. */
		dumped = luo_state_dump(blob, size, null, false);
		if (r != -ENOPROTOOPT)
			ASSERT_EQ(dumped, r);
		if (r >= 0) {
			_cleanup_free_ void *again = NULL;
			size_t again_size;

			/* Whatever was accepted is a consistent engine. */
			accepted++;
			encode(e, NULL, &again, &again_size);
			luo_engine_free(round_trip(again, again_size));
		} else {
			ASSERT_TRUE(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOPROTOOPT);
			assert_engine_empty(e);
		}
		luo_engine_free(e);
		blob[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	fclose(null);
	/* Flips inside names, tokens and data are valid blobs too. */
	ASSERT_TRUE(accepted > 0);
	test_diag("%zu of %zu flipped blobs accepted", accepted, size * 8);
}

TEST(fdt_errors_translate_to_errno)
{
	ASSERT_EQ(luo_fdt_errno(0), 0);
	ASSERT_EQ(luo_fdt_errno(12), 12);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_NOTFOUND), -ENOENT);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_NOSPACE), -ENOSPC);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_EXISTS), -EEXIST);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_BADMAGIC), -EBADMSG);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_BADVERSION), -EBADMSG);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_BADSTRUCTURE), -EBADMSG);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_TRUNCATED), -EBADMSG);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_BADOFFSET), -EBADMSG);
	ASSERT_EQ(luo_fdt_errno(-FDT_ERR_ALIGNMENT), -EBADMSG);
	/* Never the raw code, which would read as -EPERM. */
	ASSERT_NE(luo_fdt_errno(-FDT_ERR_NOTFOUND), -EPERM);
}

TEST(bad_arguments_are_einval)
{
	void *blob = NULL;
	size_t size;
	luo_engine *e = both_engine();
	struct luo_state_ext bad = { "a@b", ext_write, ext_read, NULL };

	ASSERT_ERR(luo_state_encode(NULL, NULL, &blob, &size), -EINVAL);
	ASSERT_ERR(luo_state_encode(e, &bad, &blob, &size), -EINVAL);
	ASSERT_ERR(luo_state_decode(NULL, "x", 1, 0, NULL), -EINVAL);
	ASSERT_ERR(luo_state_decode(e, "x", 1, 1u << 9, NULL), -EINVAL);
	ASSERT_ERR(luo_state_dump("x", 1, NULL, false), -EINVAL);
	luo_engine_free(e);
}

/* ---- the dump ------------------------------------------------------------------ */

static char *dump_to_string(const void *blob, size_t size, bool json, int *ret)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	ASSERT_TRUE(f);
	*ret = luo_state_dump(blob, size, f, json);
	ASSERT_EQ(fclose(f), 0);
	return buf;
}

TEST(dump_names_sessions_tokens_handlers_and_data)
{
	_cleanup_free_ void *blob = NULL;
	_cleanup_free_ char *text = NULL;
	struct ext_data out = { .value = 1 };
	struct luo_state_ext wext = { "luod", ext_write, ext_read, &out };
	luo_engine *e = rich_engine();
	size_t size;
	int r;

	encode(e, &wext, &blob, &size);
	text = dump_to_string(blob, size, false, &r);
	ASSERT_OK(r);
	ASSERT_TRUE(strstr(text, "update number 7"));
	ASSERT_TRUE(strstr(text, "\"open-a\" outgoing open"));
	ASSERT_TRUE(strstr(text, "\"retrieved-c\" incoming retrieved"));
	ASSERT_TRUE(strstr(text, "\"stuck-e\" incoming stuck"));
	ASSERT_TRUE(strstr(text, "\"finished-d\" incoming finished"));
	ASSERT_TRUE(strstr(text, "\"waiting-b\" incoming waiting"));
	ASSERT_TRUE(strstr(text, "(handover-on-close)"));
	ASSERT_TRUE(strstr(text, "\"we\\\"ird\\\\\\x0a\\xff\\xc3\\xa9\""));
	ASSERT_TRUE(strstr(text, "token 18446744073709551615"));
	ASSERT_TRUE(strstr(text, "token 22 (0x16), handler \"test-v1\""));
	ASSERT_TRUE(strstr(text, "handler \"test-flb-v1\""));
	ASSERT_TRUE(strstr(text, "retrieve error -5"));
	/* The test handler's data is the token, in host order. */
	ASSERT_TRUE(strstr(text, "data 8 bytes: 1600000000000000"));
	ASSERT_TRUE(strstr(text, "flb 0: \"test-flb-state-v1\", count 2"));
	ASSERT_TRUE(strstr(text, "ext node \"luod\""));
	ASSERT_TRUE(strstr(text, "property \"value\", 4 bytes"));
	luo_engine_free(e);
}

static bool have_python3(void)
{
	return system("command -v python3 >/dev/null 2>&1") == 0;
}

/* Runs python's json parser over text; true if it parsed and the check held. */
static bool json_check(const char *text, const char *python_check)
{
	char cmd[1024];
	FILE *p;
	int status;

	snprintf(cmd, sizeof(cmd),
		 "python3 -c 'import json,sys; d = json.load(sys.stdin); sys.exit(0 if (%s) else "
		 "3)'",
		 python_check);
	p = popen(cmd, "we");
	ASSERT_TRUE(p);
	fputs(text, p);
	status = pclose(p);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(json_dump_parses_and_keeps_every_name)
{
	_cleanup_free_ void *blob = NULL;
	_cleanup_free_ char *json = NULL, *empty_json = NULL;
	struct ext_data out = { .value = 1 };
	struct luo_state_ext wext = { "luod", ext_write, ext_read, &out };
	luo_engine *e = rich_engine(), *empty = both_engine();
	size_t size;
	int r;

	if (!have_python3()) {
		luo_engine_free(e);
		luo_engine_free(empty);
		test_skip("python3 is not installed");
	}
	encode(e, &wext, &blob, &size);
	json = dump_to_string(blob, size, true, &r);
	ASSERT_OK(r);
	ASSERT_TRUE(json_check(json, "len(d[\"sessions\"]) == 7 and d[\"update_number\"] == 7"));
	ASSERT_TRUE(json_check(
		json, "d[\"sessions\"][2][\"name\"] == \"we\\\"ird\\\\\\n\\u00ff\\u00e9\""));
	ASSERT_TRUE(
		json_check(json, "d[\"sessions\"][2][\"name_hex\"] == \"7765226972645c0affc3a9\""));
	ASSERT_TRUE(json_check(json, "d[\"sessions\"][0][\"files\"][2][\"token\"] == 2**64 - 1"));
	ASSERT_TRUE(json_check(
		json, "d[\"flbs\"][0][\"count\"] == 2 and d[\"ext\"][\"node\"] == \"luod\""));
	luo_engine_free(e);

	free(blob);
	blob = NULL;
	encode(empty, NULL, &blob, &size);
	empty_json = dump_to_string(blob, size, true, &r);
	ASSERT_OK(r);
	ASSERT_TRUE(json_check(empty_json, "d[\"sessions\"] == [] and d[\"flbs\"] == []"));
	luo_engine_free(empty);
}

TEST(dump_of_bad_blob_prints_nothing_and_fails_like_decode)
{
	_cleanup_free_ void *blob = NULL;
	_cleanup_free_ char *text = NULL, *json = NULL;
	size_t size;
	int r;

	blob = make_blob(ROOT_COMPAT, fake_fds, &size);
	text = dump_to_string(blob, size, false, &r);
	ASSERT_ERR(r, -EPROTONOSUPPORT);
	ASSERT_STREQ(text, "");
	json = dump_to_string(blob, size - 1, true, &r);
	ASSERT_ERR(r, -EBADMSG);
	ASSERT_STREQ(json, "");
}

/* ---- a blob that crossed a kexec --------------------------------------- */

static int memfd_with(const char *text, off_t pos)
{
	int fd = ASSERT_OK(memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING));

	ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	ASSERT_EQ(lseek(fd, pos, SEEK_SET), pos);
	return fd;
}

/* What the kernel hands back after the kexec: a new memfd, same bytes and position. */
struct kexec_map {
	int calls;
	int fail_token; /* -1: none */
	int fds[8];
	int n_fds;
};

static int kexec_map(size_t session_index, uint64_t token, int *ret_fd, void *userdata)
{
	struct kexec_map *m = userdata;
	char text[32];

	m->calls++;
	if ((int)token == m->fail_token)
		return -EIO;
	if (session_index == 1 && token == 2)
		return -ENOENT; /* left behind */
	snprintf(text, sizeof(text), "file %zu/%u", session_index, (unsigned)token);
	*ret_fd = m->fds[m->n_fds++] = memfd_with(text, 3);
	return 0;
}

TEST(decode_mapped_takes_each_file_from_where_it_is_now)
{
	luo_engine *e = NULL, *e2 = NULL;
	luo_session *s;
	uint8_t field[LUO_NAME_FIELD];
	void *blob;
	size_t size;
	char buf[32];
	int fd;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_default_handlers(e));
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "a"), 0, 1000, &s));
	fd = memfd_with("old", 1);
	ASSERT_OK(luo_session_preserve_fd(s, 1, fd));
	close(fd);
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "b"), 0, 1001, &s));
	for (uint64_t t = 1; t <= 2; t++) {
		fd = memfd_with("old", 1);
		ASSERT_OK(luo_session_preserve_fd(s, t, fd));
		close(fd);
	}
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));

	/* A map that fails stops the decode; the engine stays empty, its fds are the caller's. */
	struct kexec_map m = { .fail_token = 2 };
	ASSERT_OK(luo_engine_new(&e2));
	ASSERT_OK(luo_engine_add_default_handlers(e2));
	ASSERT_ERR(luo_state_decode_mapped(e2, blob, size, kexec_map, &m), -EIO);
	assert_engine_empty(e2);
	for (int i = 0; i < m.n_fds; i++) {
		ASSERT_TRUE(fcntl(m.fds[i], F_GETFD) >= 0);
		close(m.fds[i]);
	}

	m = (struct kexec_map){ .fail_token = -1 };
	ASSERT_OK(luo_state_decode_mapped(e2, blob, size, kexec_map, &m));
	ASSERT_EQ(m.calls, 3);
	ASSERT_EQ(luo_engine_update_number(e2), 1);
	ASSERT_EQ(luo_engine_n_sessions(e2, LUO_SESSION_INCOMING), 2);
	ASSERT_EQ(luo_engine_n_files(e2), 2);
	/* Owners and names as they were; each file is the new one, at its position. */
	ASSERT_OK(luo_engine_retrieve_session(e2, test_name(field, "b"), 1001, &s));
	ASSERT_EQ(luo_session_n_files(s), 1);
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &fd));
	ASSERT_EQ(lseek(fd, 0, SEEK_CUR), 3);
	ASSERT_EQ(pread(fd, buf, sizeof(buf), 0), 8);
	ASSERT_EQ(memcmp(buf, "file 1/1", 8), 0);
	close(fd);
	ASSERT_ERR(luo_session_retrieve_fd(s, 2, &fd), -ENOENT);
	ASSERT_ERR(luo_engine_retrieve_session(e2, test_name(field, "a"), 1001, &s), -ENOENT);
	ASSERT_OK(luo_engine_retrieve_session(e2, test_name(field, "a"), 1000, &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &fd));
	ASSERT_EQ(pread(fd, buf, sizeof(buf), 0), 8);
	ASSERT_EQ(memcmp(buf, "file 0/1", 8), 0);
	/* Indexed under its new identity: preserving it again is EBUSY. */
	luo_session *o;
	ASSERT_OK(luo_engine_create_session(e2, test_name(field, "again"), 0, 1000, &o));
	ASSERT_ERR(luo_session_preserve_fd(o, 1, fd), -EBUSY);
	close(fd);
	ASSERT_ERR(luo_state_decode_mapped(e2, blob, size, NULL, NULL), -EINVAL);
	free(blob);
	luo_engine_free(e);
	luo_engine_free(e2);
}

/* ---- luo-session-v3: the handed-over bit ------------------------------- */

static int session_node_of(const void *blob, const char *compat_want)
{
	int off = fdt_path_offset(blob, "/session@0");
	int len;
	const char *c;

	ASSERT_TRUE(off >= 0);
	c = fdt_getprop(blob, off, "compatible", &len);
	ASSERT_TRUE(c != NULL);
	ASSERT_STREQ(c, compat_want);
	return off;
}

TEST(handed_over_sessions_are_luo_session_v3_and_only_v3_carries_the_bit)
{
	luo_engine *e = NULL, *e2 = NULL;
	luo_session *s;
	uint8_t field[LUO_NAME_FIELD];
	void *blob, *blob2;
	size_t size, size2;
	int fd, off;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_default_handlers(e));
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "svc"), 0, 1000, &s));
	fd = memfd_with("state", 0);
	ASSERT_OK(luo_session_preserve_fd(s, 1, fd));
	close(fd);
	ASSERT_OK(luo_engine_handover_session(e, s));
	/* An empty one too, which packs no file at all. */
	ASSERT_OK(luo_engine_create_session(e, test_name(field, "empty"), 0, 1000, &s));
	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	session_node_of(blob, LUO_STATE_SESSION_V3_COMPATIBLE);

	/* Decoded with the bit, so that a reboot still carries it; encoded alike. */
	ASSERT_OK(luo_engine_new(&e2));
	ASSERT_OK(luo_engine_add_default_handlers(e2));
	ASSERT_OK(luo_state_decode(e2, blob, size, LUO_STATE_BORROW_FDS, NULL));
	s = luo_engine_first_session(e2, LUO_SESSION_INCOMING);
	ASSERT_TRUE(s != NULL);
	ASSERT_TRUE(luo_session_crosses_reboot(s));
	ASSERT_TRUE(luo_session_crosses_reboot(luo_session_next(s)));
	ASSERT_EQ(luo_session_n_files(luo_session_next(s)), 0);
	ASSERT_OK(luo_state_encode(e2, NULL, &blob2, &size2));
	ASSERT_EQ(size2, size);
	ASSERT_EQ(memcmp(blob2, blob, size), 0);
	free(blob2);
	luo_engine_free(e2);

	/* The bit under an earlier version: refused, as an earlier reader refuses it. */
	off = session_node_of(blob, LUO_STATE_SESSION_V3_COMPATIBLE);
	ASSERT_EQ(fdt_setprop_inplace(blob, off, "compatible", LUO_STATE_SESSION_COMPATIBLE,
				      sizeof(LUO_STATE_SESSION_COMPATIBLE)),
		  0);
	ASSERT_OK(luo_engine_new(&e2));
	ASSERT_OK(luo_engine_add_default_handlers(e2));
	ASSERT_ERR(luo_state_decode(e2, blob, size, LUO_STATE_BORROW_FDS, NULL), -EBADMSG);
	/* And v3 without it. */
	ASSERT_EQ(fdt_setprop_inplace(blob, off, "compatible", LUO_STATE_SESSION_V3_COMPATIBLE,
				      sizeof(LUO_STATE_SESSION_V3_COMPATIBLE)),
		  0);
	ASSERT_EQ(fdt_setprop_inplace_u64(blob, off, "flags", 0), 0);
	ASSERT_ERR(luo_state_decode(e2, blob, size, LUO_STATE_BORROW_FDS, NULL), -EBADMSG);
	luo_engine_free(e2);

	/* After the reboot the bit is gone, and so is v3. */
	luo_engine_drop_session(e, luo_engine_find_session(e, LUO_SESSION_INCOMING, "empty"));
	ASSERT_OK(luo_engine_reboot(e));
	free(blob);
	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	session_node_of(blob, LUO_STATE_SESSION_V1_COMPATIBLE);
	free(blob);
	luo_engine_free(e);
}

TEST_MAIN(TEST_CASE(decode_mapped_takes_each_file_from_where_it_is_now),
	  TEST_CASE(handed_over_sessions_are_luo_session_v3_and_only_v3_carries_the_bit),
	  TEST_CASE(empty_engine_round_trips_to_identical_blob),
	  TEST_CASE(session_of_several_files_carries_them_as_one_array),
	  TEST_CASE(packed_records_of_another_length_are_ebadmsg),
	  TEST_CASE(packed_handler_index_out_of_range_or_order_is_ebadmsg),
	  TEST_CASE(packed_handler_list_names_each_known_handler_once),
	  TEST_CASE(packed_data_offset_or_length_out_of_range_is_ebadmsg),
	  TEST_CASE(packed_duplicate_tokens_or_fd_slots_are_ebadmsg),
	  TEST_CASE(packed_session_with_file_nodes_is_ebadmsg),
	  TEST_CASE(v1_sessions_of_several_file_nodes_still_decode),
	  TEST_CASE(every_session_state_round_trips_to_identical_blob),
	  TEST_CASE(encoding_is_deterministic),
	  TEST_CASE(decode_restores_sessions_states_tokens_data_handles_counts),
	  TEST_CASE(adopted_fds_are_owned_indexed_and_usable),
	  TEST_CASE(encode_grows_its_buffer_for_large_handler_data),
	  TEST_CASE(ext_node_is_written_after_sessions_and_read_last),
	  TEST_CASE(ext_node_with_many_property_names_round_trips),
	  TEST_CASE(ext_read_gets_minus_one_when_node_absent),
	  TEST_CASE(ext_read_failure_fails_decode_and_leaves_engine_empty),
	  TEST_CASE(hand_made_valid_blob_decodes_and_round_trips),
	  TEST_CASE(wrong_root_compatible_is_eprotonosupport),
	  TEST_CASE(wrong_node_compatible_is_eprotonosupport),
	  TEST_CASE(unknown_properties_are_ebadmsg), TEST_CASE(unknown_nodes_are_ebadmsg),
	  TEST_CASE(missing_repeated_or_wrong_length_properties_are_ebadmsg),
	  TEST_CASE(duplicate_outgoing_names_are_ebadmsg),
	  TEST_CASE(duplicate_tokens_in_a_session_are_ebadmsg),
	  TEST_CASE(duplicate_fd_slots_are_ebadmsg),
	  TEST_CASE(duplicate_or_future_handles_are_ebadmsg),
	  TEST_CASE(unknown_handler_is_enoprotoopt), TEST_CASE(out_of_range_values_are_ebadmsg),
	  TEST_CASE(names_must_have_1_to_63_bytes_without_nul),
	  TEST_CASE(fd_must_be_a_slot_unless_the_file_was_discarded),
	  TEST_CASE(file_state_must_fit_its_session),
	  TEST_CASE(trailing_bytes_and_reservations_are_ebadmsg),
	  TEST_CASE(other_fdt_versions_are_ebadmsg),
	  TEST_CASE(encode_refuses_data_the_decoder_would_refuse),
	  TEST_CASE(misaligned_blob_decodes), TEST_CASE(decode_into_engine_with_sessions_is_ebusy),
	  TEST_CASE(closed_fd_is_ebadf_and_nothing_is_closed_or_left),
	  TEST_CASE(closed_fd_with_a_carried_identity_is_ebadf_and_nothing_is_closed),
	  TEST_CASE(borrowed_fds_are_not_checked_indexed_or_closed),
	  TEST_CASE(same_file_twice_is_ebadmsg),
	  TEST_CASE(decode_indexes_the_identity_the_blob_carries_without_asking_the_handler),
	  TEST_CASE(v1_files_are_identified_again_on_decode),
	  TEST_CASE(record_identity_is_whole_and_only_with_an_fd),
	  TEST_CASE(record_of_another_length_is_ebadmsg),
	  TEST_CASE(large_blob_is_checked_in_full_before_ext_read_and_success),
	  TEST_CASE(truncated_blob_at_every_length_is_ebadmsg),
	  TEST_CASE(every_single_bit_flip_decodes_cleanly_or_fails_cleanly_like_the_dump),
	  TEST_CASE(fdt_errors_translate_to_errno), TEST_CASE(bad_arguments_are_einval),
	  TEST_CASE(dump_names_sessions_tokens_handlers_and_data),
	  TEST_CASE(json_dump_parses_and_keeps_every_name),
	  TEST_CASE(dump_of_bad_blob_prints_nothing_and_fails_like_decode))
