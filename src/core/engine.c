/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the engine object and its update events
 *
 * An engine is created empty (no handlers, update number 0), gets its
 * handlers registered once, then lives as long as luod's state: sessions and
 * files come and go through session.c and file.c, and the two update events
 * live here because they move sessions between the outgoing and incoming
 * namespaces.
 *
 * Both events are all-or-nothing.  Everything that can fail (every freeze,
 * and the room in the incoming name index) is done before anything moves; a
 * failing freeze unfreezes what was frozen so far, newest first, and the
 * engine is exactly as before.  After the last freeze nothing can fail.
 *
 * luo_engine_free() is not an abort: it calls no handler and only releases
 * what the engine holds (fds unless borrowed, memory).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/macro.h"
#include "engine-internal.h"
#include "journal.h"

int luo_engine_new(luo_engine **ret)
{
	struct luo_engine *e;

	if (!ret)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	list_init(&e->outgoing);
	list_init(&e->incoming);
	hashmap_init(&e->outgoing_names);
	hashmap_init(&e->incoming_names);
	hashmap_init(&e->handles);
	for (size_t i = 0; i < LUO_MAX_FLBS; i++)
		e->flbs[i].fd = -EBADF;
	*ret = e;
	return 0;
}

void luo_engine_free(luo_engine *e)
{
	if (!e)
		return;
	/*
	 * Tear the identity index down in one pass first: removing files one by
	 * one could cost kcmp() calls each.  With the root gone,
	 * luo_identity_remove() only forgets the files' nodes.
	 */
	luo_identity_destroy(e);
	LIST_FOREACH_SAFE (n, &e->outgoing)
		luo_session_free(list_entry(n, struct luo_session, order));
	LIST_FOREACH_SAFE (n, &e->incoming)
		luo_session_free(list_entry(n, struct luo_session, order));
	for (size_t i = 0; i < e->n_flbs; i++)
		luo_flb_release(&e->flbs[i], !e->borrowed_fds);
	/* The fds just released stay with the journal until its next commit. */
	luo_journal_attach(NULL, e);
	hashmap_done(&e->outgoing_names);
	hashmap_done(&e->incoming_names);
	hashmap_done(&e->handles);
	free(e);
}

const char *luo_session_kind_name(uint32_t kind)
{
	switch (kind) {
	case LUO_SESSION_OUTGOING:
		return "outgoing";
	case LUO_SESSION_INCOMING:
		return "incoming";
	default:
		return "unknown";
	}
}

const char *luo_session_state_name(uint32_t state)
{
	switch (state) {
	case LUO_SESSION_OPEN:
		return "open";
	case LUO_SESSION_WAITING:
		return "waiting";
	case LUO_SESSION_RETRIEVED:
		return "retrieved";
	case LUO_SESSION_FINISHED:
		return "finished";
	case LUO_SESSION_STUCK:
		return "stuck";
	default:
		return "unknown";
	}
}

void luo_engine_foreach_flb_fd(const luo_engine *e, void (*fn)(int fd, void *userdata),
			       void *userdata)
{
	for (size_t i = 0; i < e->n_flbs; i++)
		if (e->flbs[i].fd >= 0)
			fn(e->flbs[i].fd, userdata);
}

void luo_engine_set_inheritable_fds(luo_engine *e, bool inheritable)
{
	e->inheritable_fds = inheritable;
}

/* A compatible string fits its state record field: 1..LUO_COMPATIBLE_MAX-1 bytes. */
static bool compatible_is_valid(const char *compatible)
{
	size_t len;

	if (!compatible)
		return false;
	len = strnlen(compatible, LUO_COMPATIBLE_MAX);
	return len > 0 && len < LUO_COMPATIBLE_MAX;
}

int luo_engine_add_handler(luo_engine *e, const struct luo_handler *h)
{
	if (!e || !h || !compatible_is_valid(h->compatible))
		return -EINVAL;
	if (h->flb && !compatible_is_valid(h->flb->compatible))
		return -EINVAL;
	if (luo_engine_find_handler(e, h->compatible))
		return -EEXIST;
	if (e->n_handlers >= LUO_MAX_HANDLERS)
		return -ENOSPC;
	e->handlers[e->n_handlers++] = h;
	return 0;
}

const struct luo_handler *luo_engine_find_handler(const luo_engine *e, const char *compatible)
{
	if (!e || !compatible)
		return NULL;
	for (size_t i = 0; i < e->n_handlers; i++)
		if (strcmp(e->handlers[i]->compatible, compatible) == 0)
			return e->handlers[i];
	return NULL;
}

uint64_t luo_engine_update_number(const luo_engine *e)
{
	return e->update_number;
}

size_t luo_engine_n_sessions(const luo_engine *e, enum luo_session_kind kind)
{
	return kind == LUO_SESSION_OUTGOING ? e->outgoing.count : e->incoming.count;
}

size_t luo_engine_n_files(const luo_engine *e)
{
	return e->n_files;
}

int luo_name_parse(const uint8_t field[LUO_NAME_FIELD])
{
	const uint8_t *nul;

	if (!field)
		return -EINVAL;
	nul = memchr(field, 0, LUO_NAME_FIELD);
	if (!nul || nul == field)
		return -EINVAL;
	return (int)(nul - field);
}

luo_session *luo_engine_find_session(const luo_engine *e, enum luo_session_kind kind,
				     const char *name)
{
	size_t len;

	if (!e || !name)
		return NULL;
	len = strnlen(name, LUO_NAME_FIELD);
	if (len == 0 || len >= LUO_NAME_FIELD)
		return NULL;
	return luo_session_lookup_any(e, kind, name, len);
}

luo_session *luo_engine_find_session_of(const luo_engine *e, enum luo_session_kind kind,
					uint32_t uid, const char *name)
{
	size_t len;

	if (!e || !name)
		return NULL;
	len = strnlen(name, LUO_NAME_FIELD);
	if (len == 0 || len >= LUO_NAME_FIELD)
		return NULL;
	return luo_session_lookup(e, kind, uid, name, len);
}

luo_session *luo_engine_first_session(const luo_engine *e, enum luo_session_kind kind)
{
	const struct list_head *h = kind == LUO_SESSION_OUTGOING ? &e->outgoing : &e->incoming;

	if (list_empty(h))
		return NULL;
	return list_entry(h->node.next, struct luo_session, order);
}

luo_session *luo_session_next(const luo_session *s)
{
	const struct luo_engine *e = s->engine;
	const struct list_head *h = s->kind == LUO_SESSION_OUTGOING ? &e->outgoing : &e->incoming;

	if (s->order.next == &h->node)
		return NULL;
	return list_entry(s->order.next, struct luo_session, order);
}

const struct luo_flb *luo_engine_find_flb(const luo_engine *e, const char *compatible)
{
	if (!e || !compatible)
		return NULL;
	for (size_t i = 0; i < e->n_flbs; i++)
		if (strcmp(e->flbs[i].ops->compatible, compatible) == 0)
			return &e->flbs[i];
	return NULL;
}

int luo_engine_handover_session(luo_engine *e, luo_session *s)
{
	int r;

	if (!e || !s || s->engine != e)
		return -EINVAL;
	if (s->kind != LUO_SESSION_OUTGOING)
		return -EINVAL;
	/* Both checks come before any freeze, so a refusal leaves the files untouched. */
	if (luo_session_lookup(e, LUO_SESSION_INCOMING, s->uid, s->name, s->name_len))
		return -EEXIST;
	r = hashmap_reserve(&e->incoming_names, e->incoming_names.count + 1);
	if (r < 0)
		return r;
	r = luo_session_freeze(s);
	if (r < 0)
		return r;
	luo_session_move_incoming(s);
	s->flags |= LUO_SESSION_FLAG_HANDED_OVER;
	return 0;
}

int luo_engine_reboot(luo_engine *e)
{
	struct list_node *failed_at = NULL;
	int r;

	if (!e)
		return -EINVAL;
	/*
	 * Room for every session that may be incoming afterwards, reserved now so
	 * that the part after the freezes has no failure.
	 */
	r = hashmap_reserve(&e->incoming_names, e->incoming_names.count + e->outgoing.count);
	if (r < 0)
		return r;
	LIST_FOREACH (n, &e->outgoing) {
		r = luo_session_freeze(list_entry(n, struct luo_session, order));
		if (r < 0) {
			failed_at = n;
			break;
		}
	}
	if (failed_at) {
		/* The failing session already unfroze its own files; undo the earlier ones. */
		for (struct list_node *n = failed_at->prev; n != &e->outgoing.node; n = n->prev)
			luo_session_unfreeze(list_entry(n, struct luo_session, order));
		return r;
	}

	LIST_FOREACH_SAFE (n, &e->incoming) {
		struct luo_session *s = list_entry(n, struct luo_session, order);

		if (luo_session_crosses_reboot(s))
			s->flags &= ~LUO_SESSION_FLAG_HANDED_OVER;
		else
			luo_session_drop(s);
	}
	LIST_FOREACH_SAFE (n, &e->outgoing)
		luo_session_move_incoming(list_entry(n, struct luo_session, order));
	e->update_number++;
	return 0;
}
