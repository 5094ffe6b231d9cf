/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: sessions
 *
 * A session is born outgoing and OPEN by create (or by the state decoder,
 * through the same luo_session_new()), indexed by name in its kind's
 * namespace and by handle while some fd refers to it.  It leaves the
 * outgoing namespace in one of three ways: release (abort: every file
 * unpreserved newest first, name reusable), handover or reboot (moved to the
 * incoming namespace as WAITING, handle dropped).  An incoming session is
 * retrieved once (RETRIEVED, new handle), finished (FINISHED, files gone,
 * name still taken), and freed when its handle is released.  Releasing a
 * retrieved session finishes it implicitly; if a handler refuses, the session
 * is STUCK without a handle until the next reboot drops it.
 *
 * Names are the kernel's: 1..63 arbitrary non-NUL bytes.  They are compared
 * by length and bytes and hashed with hash_bytes(), so lookups are O(1).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/macro.h"
#include "engine-internal.h"

/* Names are per uid: each uid has its own namespace of each kind. */
struct name_key {
	uint32_t uid;
	const char *name;
	size_t len;
};

static bool session_name_eq(const struct hash_node *n, const void *key)
{
	const struct luo_session *s = container_of(n, struct luo_session, by_name);
	const struct name_key *k = key;

	return s->uid == k->uid && s->name_len == k->len && memcmp(s->name, k->name, k->len) == 0;
}

static uint64_t name_hash(uint32_t uid, const char *name, size_t len)
{
	return hash_bytes(name, len) ^ hash_u64(uid);
}

static bool session_handle_eq(const struct hash_node *n, const void *key)
{
	return container_of(n, struct luo_session, by_handle)->handle == *(const uint64_t *)key;
}

static struct hashmap *names_of(struct luo_engine *e, enum luo_session_kind kind)
{
	return kind == LUO_SESSION_OUTGOING ? &e->outgoing_names : &e->incoming_names;
}

static struct list_head *list_of(struct luo_engine *e, enum luo_session_kind kind)
{
	return kind == LUO_SESSION_OUTGOING ? &e->outgoing : &e->incoming;
}

struct luo_session *luo_session_lookup(const struct luo_engine *e, enum luo_session_kind kind,
				       uint32_t uid, const char *name, size_t name_len)
{
	const struct hashmap *m =
		kind == LUO_SESSION_OUTGOING ? &e->outgoing_names : &e->incoming_names;
	struct name_key k = { uid, name, name_len };
	struct hash_node *n = hashmap_find(m, name_hash(uid, name, name_len), session_name_eq, &k);

	return n ? container_of(n, struct luo_session, by_name) : NULL;
}

struct luo_session *luo_session_lookup_any(const struct luo_engine *e, enum luo_session_kind kind,
					   const char *name, size_t name_len)
{
	const struct list_head *h = kind == LUO_SESSION_OUTGOING ? &e->outgoing : &e->incoming;

	LIST_FOREACH (i, h) {
		struct luo_session *s = list_entry(i, struct luo_session, order);

		if (s->name_len == name_len && memcmp(s->name, name, name_len) == 0)
			return s;
	}
	return NULL;
}

int luo_session_new(struct luo_engine *e, const char *name, size_t name_len,
		    enum luo_session_kind kind, enum luo_session_state state, uint64_t flags,
		    uint32_t uid, struct luo_session **ret)
{
	_cleanup_free_ struct luo_session *s = NULL;
	int r;

	if (!e || !name || name_len == 0 || name_len >= LUO_NAME_FIELD || memchr(name, 0, name_len))
		return -EINVAL;
	if (kind != LUO_SESSION_OUTGOING && kind != LUO_SESSION_INCOMING)
		return -EINVAL;
	if (luo_session_lookup(e, kind, uid, name, name_len))
		return -EEXIST;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->engine = e;
	memcpy(s->name, name, name_len);
	s->name_len = name_len;
	s->kind = kind;
	s->state = state;
	s->flags = flags;
	s->uid = uid;
	list_init(&s->files);
	hashmap_init(&s->tokens);
	r = hashmap_insert(names_of(e, kind), &s->by_name, name_hash(uid, name, name_len));
	if (r < 0)
		return r;
	list_append(list_of(e, kind), &s->order);
	if (ret)
		*ret = s;
	TAKE_PTR(s);
	return 0;
}

void luo_session_free(struct luo_session *s)
{
	struct luo_engine *e;

	if (!s)
		return;
	e = s->engine;
	LIST_FOREACH_REVERSE_SAFE (n, &s->files) {
		luo_file_free(list_entry(n, struct luo_file, order), !e->borrowed_fds);
	}
	luo_session_set_handle(s, 0);
	hashmap_remove(names_of(e, s->kind), &s->by_name);
	list_remove(list_of(e, s->kind), &s->order);
	hashmap_done(&s->tokens);
	free(s);
}

int luo_session_set_handle(struct luo_session *s, uint64_t handle)
{
	struct luo_engine *e = s->engine;
	int r;

	if (handle == s->handle)
		return 0;
	if (handle != 0 && hashmap_find(&e->handles, hash_u64(handle), session_handle_eq, &handle))
		return -EEXIST;
	if (s->handle != 0) {
		hashmap_remove(&e->handles, &s->by_handle);
		s->handle = 0;
	}
	if (handle == 0)
		return 0;
	r = hashmap_insert(&e->handles, &s->by_handle, hash_u64(handle));
	if (r < 0)
		return r;
	s->handle = handle;
	/* Handles are never reused, whoever set this one (command or decoder). */
	if (handle > e->next_handle)
		e->next_handle = handle;
	return 0;
}

/* Gives s the next handle id; 0 or -ENOMEM, in which case the id is not used up. */
static int session_new_handle(struct luo_session *s)
{
	return luo_session_set_handle(s, s->engine->next_handle + 1);
}

luo_session *luo_engine_session_by_handle(const luo_engine *e, uint64_t handle)
{
	struct hash_node *n;

	if (!e || handle == 0)
		return NULL;
	n = hashmap_find(&e->handles, hash_u64(handle), session_handle_eq, &handle);
	return n ? container_of(n, struct luo_session, by_handle) : NULL;
}

int luo_engine_create_session(luo_engine *e, const uint8_t name[LUO_NAME_FIELD], uint64_t flags,
			      uint32_t uid, luo_session **ret)
{
	struct luo_session *s;
	int len, r;

	if (!e)
		return -EINVAL;
	if (flags & ~LUO_SESSION_FLAGS_CREATE)
		return -EINVAL;
	len = luo_name_parse(name);
	if (len < 0)
		return len;
	r = luo_session_new(e, (const char *)name, (size_t)len, LUO_SESSION_OUTGOING,
			    LUO_SESSION_OPEN, flags, uid, &s);
	if (r < 0)
		return r;
	r = session_new_handle(s);
	if (r < 0)
		goto err_free;
	if (ret)
		*ret = s;
	return 0;

err_free:
	luo_session_free(s);
	return r;
}

int luo_engine_retrieve_session(luo_engine *e, const uint8_t name[LUO_NAME_FIELD], uint32_t uid,
				luo_session **ret)
{
	struct luo_session *s;
	int len, r;

	if (!e)
		return -EINVAL;
	len = luo_name_parse(name);
	if (len < 0)
		return len;
	/* In the caller's own namespace: another uid's session of that name is
	 * none at all, root's call included. */
	s = uid == LUO_UID_ANY ? luo_session_lookup_any(e, LUO_SESSION_INCOMING, (const char *)name,
							(size_t)len)
			       : luo_session_lookup(e, LUO_SESSION_INCOMING, uid,
						    (const char *)name, (size_t)len);
	if (!s)
		return -ENOENT;
	if (s->state != LUO_SESSION_WAITING)
		return -EINVAL;
	r = session_new_handle(s);
	if (r < 0)
		return r;
	s->state = LUO_SESSION_RETRIEVED;
	if (ret)
		*ret = s;
	return 0;
}

int luo_session_finish(luo_session *s)
{
	if (!s)
		return -EINVAL;
	if (s->kind != LUO_SESSION_INCOMING)
		return -EINVAL;
	if (s->state == LUO_SESSION_FINISHED)
		return 0;
	/* Only a retrieved session has a holder who could ask. */
	if (s->state != LUO_SESSION_RETRIEVED)
		return -EINVAL;
	/* All or nothing: any refusal leaves every file in place for a retry. */
	LIST_FOREACH (n, &s->files) {
		struct luo_file *f = list_entry(n, struct luo_file, order);

		if (f->handler->can_finish && !f->handler->can_finish(&f->hf))
			return -EBUSY;
	}
	LIST_FOREACH_REVERSE_SAFE (n, &s->files) {
		luo_file_finish(list_entry(n, struct luo_file, order));
	}
	s->state = LUO_SESSION_FINISHED;
	return 0;
}

/* Closing an outgoing session before the update: every file back, newest first. */
static void session_abort(struct luo_session *s)
{
	LIST_FOREACH_REVERSE_SAFE (n, &s->files) {
		luo_file_unpreserve(list_entry(n, struct luo_file, order));
	}
	luo_session_free(s);
}

void luo_session_release(luo_session *s)
{
	if (!s)
		return;
	if (s->kind == LUO_SESSION_OUTGOING) {
		if ((s->flags & LUO_SESSION_FLAG_HANDOVER_ON_CLOSE) &&
		    luo_engine_handover_session(s->engine, s) >= 0)
			return;
		session_abort(s);
		return;
	}
	switch (s->state) {
	case LUO_SESSION_RETRIEVED:
		if (luo_session_finish(s) < 0) {
			/* Kept, unreachable, until the next reboot drops it. */
			s->state = LUO_SESSION_STUCK;
			luo_session_set_handle(s, 0);
			return;
		}
		luo_session_free(s);
		return;
	case LUO_SESSION_FINISHED:
		luo_session_free(s);
		return;
	default:
		/* WAITING and STUCK sessions have no handle to release. */
		luo_session_set_handle(s, 0);
		return;
	}
}

void luo_engine_drop_session(luo_engine *e, luo_session *s)
{
	if (!e || !s || s->engine != e)
		return;
	if (s->kind == LUO_SESSION_OUTGOING)
		session_abort(s);
	else
		luo_session_drop(s);
}

int luo_session_freeze(struct luo_session *s)
{
	LIST_FOREACH (n, &s->files) {
		struct luo_file *f = list_entry(n, struct luo_file, order);
		int r;

		if (f->handler->freeze) {
			r = f->handler->freeze(&f->hf);
			if (r < 0) {
				/* Undo this session's freezes only; the caller undoes earlier sessions. */
				luo_session_unfreeze(s);
				return r;
			}
		}
		f->frozen = true;
	}
	return 0;
}

void luo_session_unfreeze(struct luo_session *s)
{
	LIST_FOREACH_REVERSE (n, &s->files) {
		struct luo_file *f = list_entry(n, struct luo_file, order);

		if (!f->frozen)
			continue;
		if (f->handler->unfreeze)
			f->handler->unfreeze(&f->hf);
		f->frozen = false;
	}
}

void luo_session_move_incoming(struct luo_session *s)
{
	struct luo_engine *e = s->engine;
	int r;

	luo_session_set_handle(s, 0);
	hashmap_remove(&e->outgoing_names, &s->by_name);
	list_remove(&e->outgoing, &s->order);
	r = hashmap_insert(&e->incoming_names, &s->by_name,
			   name_hash(s->uid, s->name, s->name_len));
	/* The caller reserved the room, so the insert cannot allocate. */
	assert(r == 0);
	(void)r;
	list_append(&e->incoming, &s->order);
	s->kind = LUO_SESSION_INCOMING;
	s->state = LUO_SESSION_WAITING;
	LIST_FOREACH (n, &s->files) {
		struct luo_file *f = list_entry(n, struct luo_file, order);

		if (f->flb) {
			f->flb->incoming = true;
			f->flb->retrieved = false;
		}
	}
}

void luo_session_drop(struct luo_session *s)
{
	LIST_FOREACH (n, &s->files) {
		struct luo_file *f = list_entry(n, struct luo_file, order);

		/*
		 * The file goes without a handler call, but its FLB must still
		 * learn that one dependent is gone, and release its resources
		 * when it was the last.
		 */
		if (f->flb)
			luo_flb_file_unpreserve(f->flb);
		f->flb = NULL;
	}
	luo_session_free(s);
}

const char *luo_session_name(const luo_session *s)
{
	return s->name;
}

enum luo_session_kind luo_session_kind(const luo_session *s)
{
	return s->kind;
}

enum luo_session_state luo_session_state(const luo_session *s)
{
	return s->state;
}

uint64_t luo_session_flags(const luo_session *s)
{
	return s->flags & LUO_SESSION_FLAGS_CREATE;
}

bool luo_session_crosses_reboot(const luo_session *s)
{
	if (s->kind == LUO_SESSION_OUTGOING)
		return true;
	/* An outgoing session of the same owner and name replaces it: it is the
	 * newer state of that name. */
	return s->state == LUO_SESSION_WAITING && (s->flags & LUO_SESSION_FLAG_HANDED_OVER) &&
	       !luo_session_lookup(s->engine, LUO_SESSION_OUTGOING, s->uid, s->name, s->name_len);
}

uint32_t luo_session_uid(const luo_session *s)
{
	return s->uid;
}

uint64_t luo_session_handle(const luo_session *s)
{
	return s->handle;
}

size_t luo_session_n_files(const luo_session *s)
{
	return s->files.count;
}
