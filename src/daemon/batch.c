/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: batches: many files per message (PRESERVE_FDS, RETRIEVE_FDS)
 *
 * A PRESERVE_FDS batch travels as parts, one message each (protocol.h).  luod
 * stages each part's files, holding the fds the message brought, and applies
 * the whole batch when the part flagged COMMIT comes: every file is
 * preserved by the engine's own rules, in order; when one fails, those of
 * the batch preserved so far are taken out again (newest first, as an abort
 * does), none of it remains, and the reply names the failing file's index.
 * Nothing of a batch is visible (listings, limits, EBUSY) before it applies.
 *
 * Between parts luod serves everyone else: a part is one request like any
 * other.  The apply answers nobody else while it runs, so each part brings
 * what can be asked early: the fstat() of each of its files (what a file is
 * cannot change while luod holds it), the dearest call of a preserve; the
 * apply of 15,000 memfds so takes about 16 ms rather than 25.  A batch ends,
 * its staged files dropped, when its last part applies
 * it, when a part fails, on ABORT, when its client exits (luod watches the
 * process that made the first part's reply socket, through a pidfd: the
 * session may be shared with processes that live on), when the session
 * socket its parts come on hangs up, or when its session moves on (a
 * handover, a reboot).
 *
 * Crash safety: each staged part is an entry of the journal (LUOD_EXT_BATCH,
 * the tokens and the fd numbers), committed with the end of the request that
 * brought it, so the fds move from the request's record to the batch's in
 * one commit.  A worker that dies between parts leaves the staged parts to
 * its successor, which takes them back (batch_recover()) and goes on with
 * the next part: staged parts are recovered, never silently dropped.  The
 * apply is one request: its engine changes, the removal of the batch's
 * entries and the reply commit together, so a successor finds the batch
 * either staged whole (and runs the COMMIT part again) or applied whole.
 *
 * Staged files count against their owner's limits (files, fd capacity) as
 * preserved files do, so that a batch never started cannot pin more of luod
 * than a finished one could.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "basic/socket-util.h"
#include "luod.h"
#include "protocol/protocol.h"

struct batch {
	struct list_node node; /* in d->batches */
	struct endpoint *ep;
	pid_t pid;		/* its client, or 0 if unknown */
	struct endpoint *watch; /* EP_BATCH: the client's pidfd, or NULL */
	uint64_t id;
	uint64_t handle;
	uint32_t uid;
	uint32_t serial;
	uint32_t n_parts;
	size_t n, cap;
	uint64_t *tokens;
	int *fds;
	/* Each staged fd's fstat() as its part came (st_known), so that the
	 * apply, which answers nobody else meanwhile, need not ask it again. */
	struct stat *st;
	bool *st_known;
};

static struct batch *batch_find(struct luod *d, struct endpoint *ep, uint64_t id)
{
	LIST_FOREACH (i, &d->batches) {
		struct batch *b = list_entry(i, struct batch, node);

		if (b->ep == ep && b->id == id)
			return b;
	}
	return NULL;
}

static uint64_t part_key(const struct batch *b, uint32_t part)
{
	return ((uint64_t)b->serial << LUOD_BATCH_PART_BITS) | part;
}

static void batch_free(struct luod *d, struct batch *b, bool close);

/*
 * The client of a batch is watched through a pidfd, so that its death drops
 * what it staged even while other processes keep the session open.  The
 * client is the process that made the request's own reply socket (its
 * SO_PEERCRED); a request without one leaves the client unknown, and then
 * only the session's last close drops the batch.  The pidfd is luod's only
 * for as long as the batch: a worker's successor opens it again from the pid
 * in the journal, and the exec of an update closes it (O_CLOEXEC) likewise.
 */
static void watch_start(struct luod *d, struct batch *b)
{
	struct endpoint *w;
	int fd;

	if (b->pid <= 0 || d->epoll_fd < 0)
		return;
	fd = (int)syscall(SYS_pidfd_open, b->pid, 0);
	if (fd < 0) {
		/* Gone already (or no pidfds): nobody is left to finish it. */
		if (errno == ESRCH)
			b->pid = -1;
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		safe_close(fd);
		return;
	}
	w->type = EP_BATCH;
	w->fd = fd;
	if (epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, fd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = w }) < 0) {
		safe_close(fd);
		free(w);
		return;
	}
	b->watch = w;
}

static void watch_stop(struct luod *d, struct batch *b)
{
	struct endpoint *w = b->watch;

	if (!w)
		return;
	b->watch = NULL;
	(void)epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, w->fd, NULL);
	/* Named by no journal entry: closed now.  An event of the current batch
	 * of events may still point at it: freed after the batch. */
	w->fd = safe_close(w->fd);
	w->dead = true;
	list_append(&d->graveyard, &w->node);
}

void batch_watch_all(struct luod *d)
{
	LIST_FOREACH_SAFE (i, &d->batches) {
		struct batch *b = list_entry(i, struct batch, node);

		if (!b->watch)
			watch_start(d, b);
		/* Its client exited while no worker ran. */
		if (b->pid < 0)
			batch_free(d, b, true);
	}
}

void batch_client_exited(struct luod *d, struct endpoint *ep)
{
	bool any = false;

	LIST_FOREACH_SAFE (i, &d->batches) {
		struct batch *b = list_entry(i, struct batch, node);

		if (b->watch == ep) {
			log_debug("the client of a batch exited: %zu staged files dropped", b->n);
			batch_free(d, b, true);
			any = true;
		}
	}
	if (any)
		journal_commit(d);
}

/* The process that made the request's own reply socket, or 0. */
static pid_t request_client(struct luod *d)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (!d->request_reply_ep ||
	    getsockopt(d->request_reply_ep->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return 0;
	return cred.pid > 0 ? cred.pid : 0;
}

/* Forgets b: its journal entries go, and (close) its staged fds are closed
 * once the journal no longer names them; without close, they were taken. */
static void batch_free(struct luod *d, struct batch *b, bool close)
{
	struct uid_usage *u = uid_usage_get(d, b->uid);

	if (d->journal)
		for (uint32_t k = 0; k < b->n_parts; k++)
			journal_check(
				d, luo_journal_ext_del(d->journal, LUOD_EXT_BATCH, part_key(b, k)));
	if (close)
		luod_close_later_many(d, b->fds, b->n);
	if (u)
		u->n_staged -= MIN(u->n_staged, (uint64_t)b->n);
	watch_stop(d, b);
	list_remove(&d->batches, &b->node);
	free(b->tokens);
	free(b->fds);
	free(b->st);
	free(b->st_known);
	free(b);
}

static struct batch *batch_new(struct luod *d, struct endpoint *ep, uint64_t id, uint64_t handle,
			       uint32_t uid)
{
	struct batch *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->ep = ep;
	b->id = id;
	b->handle = handle;
	b->uid = uid;
	b->pid = request_client(d);
	watch_start(d, b);
	/* Serials wrap only after 2^32 batches; one still staged is skipped. */
	for (;;) {
		bool taken = false;

		b->serial = d->batch_serial++;
		LIST_FOREACH (i, &d->batches)
			taken |= list_entry(i, struct batch, node)->serial == b->serial;
		if (!taken)
			break;
	}
	list_append(&d->batches, &b->node);
	return b;
}

/* Grows array p (in place) to cap elements; false, p untouched, without memory. */
#define ARRAY_GROW(p, cap)                                                                         \
	({                                                                                         \
		typeof(p) _q = reallocarray((p), (cap), sizeof(*(p)));                             \
		if (_q)                                                                            \
			(p) = _q;                                                                  \
		_q != NULL;                                                                        \
	})

static int batch_grow(struct batch *b, size_t more)
{
	size_t cap;

	if (b->n + more <= b->cap)
		return 0;
	cap = MAX(b->cap * 2, b->n + more);
	if (!ARRAY_GROW(b->tokens, cap) || !ARRAY_GROW(b->fds, cap) || !ARRAY_GROW(b->st, cap) ||
	    !ARRAY_GROW(b->st_known, cap))
		return -ENOMEM;
	memset(b->st_known + b->n, 0, (cap - b->n) * sizeof(*b->st_known));
	b->cap = cap;
	return 0;
}

/* The journal entry of part `part`, which holds b's files [first, first + n). */
static void journal_part(struct luod *d, struct batch *b, uint32_t part, size_t first, size_t n)
{
	static uint8_t entry[sizeof(struct ext_batch) +
			     LUO_WIRE_BATCH_MAX * (sizeof(uint64_t) + sizeof(int32_t))];
	struct ext_batch e = {
		.ep_fd = b->ep->fd,
		.uid = b->uid,
		.id = b->id,
		.handle = b->handle,
		.part = part,
		.n = (uint32_t)n,
		.pid = b->pid > 0 ? b->pid : 0,
	};
	uint8_t *p = entry;

	if (!d->journal)
		return;
	memcpy(p, &e, sizeof(e));
	p += sizeof(e);
	memcpy(p, b->tokens + first, n * sizeof(uint64_t));
	p += n * sizeof(uint64_t);
	for (size_t i = 0; i < n; i++) {
		int32_t fd = b->fds[first + i];
		memcpy(p + i * sizeof(fd), &fd, sizeof(fd));
	}
	p += n * sizeof(int32_t);
	journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_BATCH, part_key(b, part), entry,
					     (size_t)(p - entry)));
}

/* A reply of the request's header with failed; held: fds are the engine's own. */
static void reply_fds_struct(struct luod *d, struct endpoint *ep, uint32_t tag, int r,
			     const struct luo_wire_fds *f, uint32_t failed, const int *fds,
			     size_t n_fds, bool held)
{
	struct luo_wire_fds h;

	memcpy(&h, f, LUO_WIRE_FDS_HEADER);
	h.failed = failed;
	/* The header alone: the tokens were the client's. */
	if (held)
		endpoint_reply_fds_held(d, ep, tag, r, &h, LUO_WIRE_FDS_HEADER, fds, n_fds);
	else
		endpoint_reply_fds(d, ep, tag, r, &h, LUO_WIRE_FDS_HEADER, fds, n_fds);
}

void batch_fail(struct luod *d, struct endpoint *ep, uint32_t tag, uint64_t id, int r,
		uint32_t failed)
{
	struct luo_wire_fds h = { .size = LUO_WIRE_FDS_HEADER, .batch = id, .failed = failed };
	struct batch *b = id ? batch_find(d, ep, id) : NULL;

	if (b)
		batch_free(d, b, true);
	endpoint_reply_fds(d, ep, tag, r, &h, LUO_WIRE_FDS_HEADER, NULL, 0);
}

/* How many more files uid may have luod hold (files limit, fd capacity). */
static size_t room_for(struct luod *d, uint32_t uid, size_t want)
{
	struct uid_usage *u = uid_usage_get(d, uid);
	uint64_t limit = limit_files(d, uid), used;
	size_t lo = 0, hi;

	if (!u)
		return 0;
	used = u->n_files + u->n_staged;
	hi = used >= limit ? 0 : (size_t)MIN((uint64_t)want, limit - used);
	if (capacity_check(d, uid, hi) == 0)
		return hi;
	/* The largest count the capacity still takes. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo + 1) / 2;

		if (capacity_check(d, uid, mid) == 0)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

/* One file of an applying batch: the checks of a single preserve, then the
 * engine keeps the staged fd itself (no dup: a batch as big as luod's fd
 * limit allows must not need twice the fds).  On failure the fd stays ours.
 * The limits were checked as the parts were staged. */
static int apply_one(struct luod *d, luo_session *s, const struct batch *b, size_t i)
{
	uint64_t token = b->tokens[i];
	int fd = b->fds[i];
	struct stat st;

	if (b->st_known[i])
		st = b->st[i];
	else if (fstat(fd, &st) < 0)
		return -EBADF;
	/* A session fd: no handler takes it in the kernel; here it would also keep
	 * its own session open forever. */
	if (S_ISSOCK(st.st_mode) && st.st_dev == d->sock_dev &&
	    session_ep_find_by_ino(d, st.st_ino))
		return -ENOENT;
	/* Received inheritable, as the engine holds its fds in luod: taken as is. */
	return luo_session_preserve_fd_take(s, token, fd, &st);
}

/*
 * Applies the whole batch: 0, or -errno with *ret_failed, and then nothing of
 * it is preserved.  Then b is freed, its fds taken by the engine (success)
 * or closed (failure), its staged files uncharged and preserved ones charged.
 */
static int batch_apply(struct luod *d, struct endpoint *ep, luo_session *s, struct batch *b,
		       uint32_t *ret_failed)
{
	size_t sessions = luod_n_sessions(d), files = luo_engine_n_files(d->engine);
	uint32_t uid = b->uid;
	bool reaped = false;
	size_t i;
	int r = 0;

	for (i = 0; i < b->n; i++) {
		r = apply_one(d, s, b, i);
		/* The file may be held by a session whose last fd was closed just
		 * before: take that close in first, as the kernel would have. */
		if ((r == -EBUSY || r == -EMFILE || r == -ENFILE) && !reaped) {
			reaped = true;
			if (server_reap_hangups(d, ep) > 0)
				r = apply_one(d, s, b, i);
		}
		if (r < 0)
			break;
	}
	if (r < 0) {
		/* Newest first, as an abort: the engine closes the fds it took. */
		for (size_t k = i; k-- > 0;)
			(void)luo_session_unpreserve_fd(s, b->tokens[k]);
		luod_close_later_many(d, b->fds + i, b->n - i);
		*ret_failed = (uint32_t)i;
	} else if (d->journal) {
		journal_check(d, luo_journal_note_files(d->journal, s, b->tokens, b->n, false));
	}
	if (d->journal)
		journal_check(d, luo_journal_note_engine(d->journal));
	fault_point(d, "batch-applied");
	batch_free(d, b, false);
	uid_usage_charge(d, uid, sessions, files);
	return r;
}

void batch_preserve(struct luod *d, struct endpoint *ep, luo_session *s,
		    const struct luo_wire_parsed *p, const void *fds_struct, int *fds, size_t n_fds)
{
	const struct luo_wire_fds *f = fds_struct;
	uint32_t uid = luo_session_uid(s), failed = 0;
	struct batch *b = batch_find(d, ep, f->batch);
	size_t first, room;
	int r;

	if (f->flags & LUO_WIRE_FDS_ABORT) {
		if (b)
			batch_free(d, b, true);
		reply_fds_struct(d, ep, p->tag, 0, f, LUO_WIRE_FDS_NONE, NULL, 0, false);
		return;
	}

	if (b && ((f->flags & LUO_WIRE_FDS_BEGIN) || b->handle != luo_session_handle(s))) {
		/* Begun again (the client gave up on it), or another session's id. */
		batch_free(d, b, true);
		b = NULL;
	}
	if (!b && !(f->flags & LUO_WIRE_FDS_BEGIN)) {
		/* A part of a batch luod does not have (an earlier part failed). */
		luod_close_later_many(d, fds, n_fds);
		batch_fail(d, ep, p->tag, 0, -ESTALE, LUO_WIRE_FDS_NONE);
		return;
	}
	first = b ? b->n : 0;
	/* Within the owner's limits, counting what is staged: the file past them fails. */
	room = room_for(d, uid, f->count);
	if (room < f->count && server_reap_hangups(d, ep) > 0)
		room = room_for(d, uid, f->count);
	if (room < f->count) {
		luod_close_later_many(d, fds, n_fds);
		batch_fail(d, ep, p->tag, f->batch, -ENOSPC, (uint32_t)(first + room));
		return;
	}
	if (!b)
		b = batch_new(d, ep, f->batch, luo_session_handle(s), uid);
	if (!b || batch_grow(b, f->count) < 0) {
		luod_close_later_many(d, fds, n_fds);
		batch_fail(d, ep, p->tag, f->batch, -ENOMEM, LUO_WIRE_FDS_NONE);
		return;
	}
	memcpy(b->tokens + b->n, f->tokens, f->count * sizeof(uint64_t));
	memcpy(b->fds + b->n, fds, f->count * sizeof(int));
	/* What a file is cannot change while luod holds it: asked now, between
	 * other clients' requests, rather than all at once in the apply. */
	for (size_t i = b->n; i < b->n + f->count; i++)
		b->st_known[i] = fstat(b->fds[i], &b->st[i]) == 0;
	b->n += f->count;
	{
		struct uid_usage *u = uid_usage_get(d, uid);
		if (u)
			u->n_staged += f->count;
	}
	if (!(f->flags & LUO_WIRE_FDS_COMMIT)) {
		journal_part(d, b, b->n_parts++, first, f->count);
		fault_point(d, "batch-staged");
		reply_fds_struct(d, ep, p->tag, 0, f, 0, NULL, 0, false);
		return;
	}
	r = batch_apply(d, ep, s, b, &failed);
	reply_fds_struct(d, ep, p->tag, r, f, r < 0 ? failed : 0, NULL, 0, false);
}

void batch_retrieve(struct luod *d, struct endpoint *ep, luo_session *s,
		    const struct luo_wire_parsed *p, const void *fds_struct)
{
	const struct luo_wire_fds *f = fds_struct;
	int out[LUO_WIRE_BATCH_MAX];
	bool first_time[LUO_WIRE_BATCH_MAX], held;
	size_t i;
	int r = 0;

	/* What would fail without running a handler fails first, changing nothing. */
	for (i = 0; i < f->count; i++) {
		bool retrieved = false;

		r = luo_session_file_check(s, f->tokens[i], &retrieved);
		if (r < 0) {
			batch_fail(d, ep, p->tag, 0, r, (uint32_t)i);
			return;
		}
		first_time[i] = !retrieved;
	}
	/* Sent at once to the request's own reply socket: the engine's fds
	 * themselves, without a dup each. */
	held = endpoint_reply_private(d, ep);
	for (i = 0; i < f->count; i++) {
		r = held ? luo_session_retrieve_fd_held(s, f->tokens[i], &out[i])
			 : luo_session_retrieve_fd(s, f->tokens[i], &out[i]);
		if (r < 0)
			break;
	}
	/* A first retrieve changed the file, failed or not (a failure is for good). */
	if (d->journal) {
		uint64_t changed[LUO_WIRE_BATCH_MAX];
		size_t n_changed = 0;

		for (size_t k = 0; k < MIN(i + 1, (size_t)f->count); k++)
			if (first_time[k])
				changed[n_changed++] = f->tokens[k];
		journal_check(d, luo_journal_note_files(d->journal, s, changed, n_changed, true));
		journal_check(d, luo_journal_note_engine(d->journal));
	}
	if (r < 0) {
		/* Not named by the journal: closed at once (the held ones are the engine's). */
		if (!held)
			close_many(out, i);
		batch_fail(d, ep, p->tag, 0, r, (uint32_t)i);
		return;
	}
	reply_fds_struct(d, ep, p->tag, 0, f, 0, out, f->count, held);
}

void batch_drop_endpoint(struct luod *d, struct endpoint *ep)
{
	LIST_FOREACH_SAFE (i, &d->batches) {
		struct batch *b = list_entry(i, struct batch, node);

		if (b->ep == ep)
			batch_free(d, b, true);
	}
}

void batch_drop_stale(struct luod *d)
{
	LIST_FOREACH_SAFE (i, &d->batches) {
		struct batch *b = list_entry(i, struct batch, node);
		luo_session *s = luo_engine_session_by_handle(d->engine, b->handle);

		if (!s || luo_session_kind(s) != LUO_SESSION_OUTGOING)
			batch_free(d, b, true);
	}
}

size_t batch_n_staged(const struct luod *d)
{
	size_t n = 0;

	LIST_FOREACH (i, &d->batches)
		n += list_entry(i, struct batch, node)->n;
	return n;
}

void batch_foreach_fd(struct luod *d, void (*fn)(int fd, void *userdata), void *userdata)
{
	LIST_FOREACH (i, &d->batches) {
		struct batch *b = list_entry(i, struct batch, node);

		for (size_t k = 0; k < b->n; k++)
			fn(b->fds[k], userdata);
	}
}

/* The entry's header, and where its tokens and fds start; -EBADMSG if it does not add up. */
static int entry_parse(const void *data, size_t size, struct ext_batch *ret,
		       const uint8_t **ret_tokens, const uint8_t **ret_fds)
{
	if (size < sizeof(*ret))
		return -EBADMSG;
	memcpy(ret, data, sizeof(*ret));
	if (ret->n == 0 || ret->n > LUO_WIRE_BATCH_MAX ||
	    size != sizeof(*ret) + (size_t)ret->n * (sizeof(uint64_t) + sizeof(int32_t)))
		return -EBADMSG;
	*ret_tokens = (const uint8_t *)data + sizeof(*ret);
	*ret_fds = *ret_tokens + (size_t)ret->n * sizeof(uint64_t);
	return 0;
}

int batch_entry_fds(const void *data, size_t size, void (*fn)(int fd, void *userdata),
		    void *userdata)
{
	const uint8_t *tokens, *fdp;
	struct ext_batch e;
	int r = entry_parse(data, size, &e, &tokens, &fdp);

	if (r < 0)
		return r;
	for (uint32_t i = 0; i < e.n; i++) {
		int32_t fd;

		memcpy(&fd, fdp + i * sizeof(fd), sizeof(fd));
		fn(fd, userdata);
	}
	return 0;
}

struct part_item {
	uint64_t key;
	const void *data;
	size_t size;
};

struct part_list {
	struct part_item *items;
	size_t n, cap;
};

static int list_part(uint64_t key, const void *data, size_t size, void *userdata)
{
	struct part_list *l = userdata;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct part_item *p = reallocarray(l->items, cap, sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->items = p;
		l->cap = cap;
	}
	l->items[l->n++] = (struct part_item){ key, data, size };
	return 0;
}

static int cmp_part(const void *a, const void *b)
{
	uint64_t x = ((const struct part_item *)a)->key, y = ((const struct part_item *)b)->key;

	return (x > y) - (x < y);
}

static struct endpoint *endpoint_of_fd(struct luod *d, int fd)
{
	LIST_FOREACH (i, &d->conns) {
		struct endpoint *ep = list_entry(i, struct endpoint, node);
		if (ep->fd == fd)
			return ep;
	}
	return session_ep_find_by_fd(d, fd);
}

int batch_recover(struct luod *d)
{
	struct part_list l = {};
	struct batch *b = NULL;
	int r;

	if (!d->journal)
		return 0;
	r = luo_journal_ext_foreach(d->journal, LUOD_EXT_BATCH, list_part, &l);
	if (r < 0 || l.n == 0)
		goto out;
	/* By serial, then part: each batch's parts in the order they came. */
	qsort(l.items, l.n, sizeof(*l.items), cmp_part);
	for (size_t k = 0; k < l.n; k++) {
		uint32_t serial = (uint32_t)(l.items[k].key >> LUOD_BATCH_PART_BITS);
		const uint8_t *tokens, *fdp;
		struct endpoint *ep;
		struct ext_batch e;

		r = entry_parse(l.items[k].data, l.items[k].size, &e, &tokens, &fdp);
		if (r < 0)
			goto out;
		if (!b || b->serial != serial) {
			ep = endpoint_of_fd(d, e.ep_fd);
			b = calloc(1, sizeof(*b));
			if (!b) {
				r = -ENOMEM;
				goto out;
			}
			b->ep = ep;
			b->id = e.id;
			b->handle = e.handle;
			b->uid = e.uid;
			b->pid = e.pid;
			b->serial = serial;
			list_append(&d->batches, &b->node);
			if (serial >= d->batch_serial)
				d->batch_serial = serial + 1;
		}
		r = batch_grow(b, e.n);
		if (r < 0)
			goto out;
		memcpy(b->tokens + b->n, tokens, (size_t)e.n * sizeof(uint64_t));
		for (uint32_t i = 0; i < e.n; i++) {
			int32_t fd;

			memcpy(&fd, fdp + i * sizeof(fd), sizeof(fd));
			b->fds[b->n + i] = fd;
		}
		b->n += e.n;
		b->n_parts =
			MAX(b->n_parts,
			    (uint32_t)(l.items[k].key & ((1u << LUOD_BATCH_PART_BITS) - 1)) + 1);
		{
			struct uid_usage *u = uid_usage_get(d, b->uid);
			if (u)
				u->n_staged += e.n;
		}
	}
	/* A batch whose endpoint, session or client is gone is dropped, as it
	 * would have been. */
	LIST_FOREACH_SAFE (i, &d->batches) {
		struct batch *x = list_entry(i, struct batch, node);

		if (!x->ep || (x->pid > 0 && kill(x->pid, 0) < 0 && errno == ESRCH))
			batch_free(d, x, true);
	}
	batch_drop_stale(d);
out:
	free(l.items);
	return r;
}
