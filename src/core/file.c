/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: preserved files
 *
 * A file enters an outgoing session through preserve_fd (or the state
 * decoder, through the same luo_file_new()), as luod's own O_CLOEXEC dup of
 * the caller's fd: the caller's fd is never consumed.  It is indexed by token
 * in its session and by identity in the engine (the EBUSY check) for as long
 * as the engine holds it, retrieved or not.  It leaves in one of three ways:
 * unpreserve (its outgoing session aborted), finish (its incoming session
 * finished, retrieved or not) or drop (its incoming session dropped by a
 * reboot, without handler calls).  Each of them ends in luo_file_free().
 *
 * Retrieval happens once: the first successful retrieve_fd runs the FLB's
 * and the handler's retrieve; a failure there is recorded and returned
 * forever.  Every successful retrieve_fd hands out a new dup of the same fd,
 * so all of them share one open file description.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "engine-internal.h"
#include "handlers/handlers-internal.h"

int luo_engine_dup_held(const struct luo_engine *e, int fd)
{
	return RET_NERRNO(fcntl(fd, e->inheritable_fds ? F_DUPFD : F_DUPFD_CLOEXEC, 3));
}

static bool file_token_eq(const struct hash_node *n, const void *key)
{
	return container_of(n, struct luo_file, by_token)->hf.token == *(const uint64_t *)key;
}

struct luo_file *luo_file_lookup(const struct luo_session *s, uint64_t token)
{
	struct hash_node *n = hashmap_find(&s->tokens, hash_u64(token), file_token_eq, &token);

	return n ? container_of(n, struct luo_file, by_token) : NULL;
}

int luo_file_new(struct luo_session *s, uint64_t token, const struct luo_handler *h, int fd,
		 void *data, size_t data_size, struct luo_file **ret)
{
	struct luo_engine *e;
	struct luo_flb *flb = NULL;
	struct luo_file *f;
	int r;

	if (!s || !h || data_size > LUO_HANDLER_DATA_MAX || (data_size > 0 && !data))
		return -EINVAL;
	e = s->engine;
	if (luo_file_lookup(s, token))
		return -EEXIST;
	if (h->flb) {
		flb = luo_flb_get(e, h->flb);
		if (!flb)
			return -ENOSPC;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	r = hashmap_insert(&s->tokens, &f->by_token, hash_u64(token));
	if (r < 0) {
		free(f);
		return r;
	}
	f->hf.fd = fd;
	f->hf.data = data;
	f->hf.data_size = data_size;
	f->hf.token = token;
	f->handler = h;
	f->flb = flb;
	f->session = s;
	list_append(&s->files, &f->order);
	e->n_files++;
	if (ret)
		*ret = f;
	return 0;
}

void luo_file_free(struct luo_file *f, bool close_fd)
{
	struct luo_session *s;

	if (!f)
		return;
	s = f->session;
	/* Before the close: by-description identities are ordered through the fd. */
	luo_identity_remove(s->engine, f);
	hashmap_remove(&s->tokens, &f->by_token);
	list_remove(&s->files, &f->order);
	s->engine->n_files--;
	if (close_fd)
		luo_engine_close_held(s->engine, f->hf.fd);
	free(f->hf.data);
	free(f);
}

static int file_get_id(const struct luo_handler *h, int fd, const struct stat *st,
		       struct luo_file_id *ret)
{
	if (h->get_id)
		return h->get_id(h, fd, st, ret);
	/* The kernel's default identity is the open file description. */
	*ret = (struct luo_file_id){
		.dev = st->st_dev,
		.ino = st->st_ino,
		.by_description = true,
	};
	return 0;
}

int luo_file_identify(struct luo_file *f)
{
	struct luo_file_id id;
	struct stat st;
	int r;

	luo_identity_remove(f->session->engine, f);
	if (fstat(f->hf.fd, &st) < 0)
		return negative_errno();
	r = file_get_id(f->handler, f->hf.fd, &st, &id);
	if (r < 0)
		return r;
	f->id = id;
	return luo_identity_add(f->session->engine, f);
}

/*
 * The open flags for handler_preserve_begin(): asked now, and an O_PATH fd
 * refused (-EBADF), unless every handler refuses one itself; then they are
 * asked only by a handler that needs them.
 */
static int file_flags(const struct luo_engine *e, int fd)
{
	int flags;

	for (size_t i = 0; i < e->n_handlers; i++)
		if (!e->handlers[i]->refuses_path_fds) {
			flags = fcntl(fd, F_GETFL);
			return flags < 0 || (flags & O_PATH) ? -EBADF : flags;
		}
	return HANDLER_FLAGS_UNKNOWN;
}

/*
 * The handler calls of one preserve_fd, on luod's own dup of the caller's fd
 * (taken on success only); the handlers may rely on handler_preserve_ctx.
 */
static int file_preserve(struct luo_session *s, uint64_t token, int *dfdp, const struct stat *st,
			 bool take)
{
	const struct luo_handler *h = NULL;
	struct luo_engine *e = s->engine;
	struct luo_file_id id;
	struct luo_file *f;
	int dfd = *dfdp, r;

	for (size_t i = 0; i < e->n_handlers; i++)
		if (e->handlers[i]->can_preserve &&
		    e->handlers[i]->can_preserve(e->handlers[i], dfd, st)) {
			h = e->handlers[i];
			break;
		}
	if (!h) {
		/* Every can_preserve refuses an O_PATH fd: that one is EBADF. */
		int flags = handler_getfl(dfd);

		return flags < 0 || (flags & O_PATH) ? -EBADF : -ENOENT;
	}
	r = file_get_id(h, dfd, st, &id);
	if (r < 0)
		return r;

	r = luo_file_new(s, token, h, dfd, NULL, 0, &f);
	if (r < 0)
		return r;
	*dfdp = -EBADF;
	f->id = id;
	/*
	 * The EBUSY check and the indexing are one tree search: the file is
	 * indexed here or found busy.  Nothing observable happened before it.
	 */
	r = luo_identity_add(e, f);
	if (r < 0)
		goto err_free;
	if (f->flb) {
		r = luo_flb_file_preserve(f->flb);
		if (r < 0)
			goto err_free;
	}
	if (h->preserve) {
		r = h->preserve(&f->hf);
		if (r < 0)
			goto err_flb;
	}
	f->hf.held_since_preserve = true;
	/* The record goes into the state blob, which bounds it. */
	if (f->hf.data_size > LUO_HANDLER_DATA_MAX || (f->hf.data_size > 0 && !f->hf.data)) {
		r = -EOVERFLOW;
		goto err_unpreserve;
	}
	return 0;

err_unpreserve:
	if (h->unpreserve)
		h->unpreserve(&f->hf);
err_flb:
	if (f->flb)
		luo_flb_file_unpreserve(f->flb);
err_free:
	/* A taken fd goes back to the caller, open, as it came. */
	luo_file_free(f, !take);
	if (take)
		*dfdp = dfd;
	return r;
}

/* The checks both preserves make before they look at the file. */
static int preserve_args(const luo_session *s, uint64_t token, int fd)
{
	if (!s)
		return -EINVAL;
	if (s->kind != LUO_SESSION_OUTGOING)
		return -EINVAL;
	if (luo_file_lookup(s, token))
		return -EEXIST;
	if (fd < 0)
		return -EBADF;
	return 0;
}

/*
 * Preserves luod's own fd *dfdp (the engine's from now on if take), with its
 * fstat() in fd_st if the caller has it.  The handlers need not fstat() it,
 * nor ask its flags, again.
 */
static int preserve_own_fd(luo_session *s, uint64_t token, int *dfdp, const struct stat *fd_st,
			   bool take)
{
	struct stat st;
	int flags, r;

	flags = file_flags(s->engine, *dfdp);
	if (flags == -EBADF)
		return flags;
	if (fd_st)
		st = *fd_st;
	else if (fstat(*dfdp, &st) < 0)
		return take ? -EBADF : negative_errno();
	handler_preserve_begin(*dfdp, flags, &st);
	r = file_preserve(s, token, dfdp, &st, take);
	handler_preserve_end();
	return r;
}

int luo_session_preserve_fd(luo_session *s, uint64_t token, int fd)
{
	_cleanup_close_ int dfd = -EBADF;
	int r = preserve_args(s, token, fd);

	if (r < 0)
		return r;
	/* The dup shares the caller's open file description. */
	dfd = luo_engine_dup_held(s->engine, fd);
	if (dfd < 0)
		return dfd;
	return preserve_own_fd(s, token, &dfd, NULL, false);
}

int luo_session_preserve_fd_take(luo_session *s, uint64_t token, int fd, const struct stat *fd_st)
{
	int r = preserve_args(s, token, fd);

	if (r < 0)
		return r;
	return preserve_own_fd(s, token, &fd, fd_st, true);
}

int luo_session_unpreserve_fd(luo_session *s, uint64_t token)
{
	struct luo_file *f;

	if (!s || s->kind != LUO_SESSION_OUTGOING)
		return -EINVAL;
	f = luo_file_lookup(s, token);
	if (!f)
		return -ENOENT;
	luo_file_unpreserve(f);
	return 0;
}

/* The file a retrieve of token would take, or what it would fail with at once. */
static int file_to_retrieve(const luo_session *s, uint64_t token, struct luo_file **ret)
{
	struct luo_file *f;

	if (!s || s->kind != LUO_SESSION_INCOMING)
		return -EINVAL;
	if (s->state == LUO_SESSION_FINISHED)
		return -ENOENT;
	f = luo_file_lookup(s, token);
	if (!f)
		return -ENOENT;
	if (f->retrieve_error < 0)
		return f->retrieve_error;
	*ret = f;
	return 0;
}

int luo_session_file_check(const luo_session *s, uint64_t token, bool *ret_retrieved)
{
	struct luo_file *f;
	int r = file_to_retrieve(s, token, &f);

	if (r < 0)
		return r;
	if (ret_retrieved)
		*ret_retrieved = f->retrieved;
	return 0;
}

/*
 * The first retrieve of a file after its update; a failure is kept for good.
 * May hand back the caller's fd in *ret_fd (left alone otherwise).
 */
static int file_first_retrieve(struct luo_file *f, int *ret_fd, bool held)
{
	struct luo_engine *e = f->session->engine;
	_cleanup_close_ int keep = -EBADF;
	int old_fd = f->hf.fd, r = 0;

	if (f->flb) {
		r = luo_flb_file_retrieve(f->flb);
		if (r < 0) {
			f->retrieve_error = r;
			return r;
		}
	}
	/*
	 * A handler that keeps the fd needs no guard of the identity index
	 * against a new one.  The caller's dup, made before the handler runs,
	 * stands in for the guard's: the handler runs with exactly as many fds
	 * to spare, and a dup that fails leaves the file unretrieved.
	 */
	if (f->handler->retrieve_keeps_fd) {
		_cleanup_close_ int fd = held ? -EBADF : fd_dup_cloexec(old_fd);

		if (fd < 0 && !held)
			return fd;
		r = f->handler->retrieve ? f->handler->retrieve(&f->hf) : 0;
		if (r >= 0)
			*ret_fd = TAKE_FD(fd);
		goto done;
	}
	/*
	 * Any other handler may replace the fd (closing the old one), and
	 * by-description identities are ordered through it.  Holding a dup of
	 * the old file keeps it comparable, so the index entry can be moved only
	 * if the fd did change.
	 */
	keep = fd_dup_cloexec(old_fd);
	if (keep < 0)
		return keep;
	if (f->handler->retrieve)
		r = f->handler->retrieve(&f->hf);
	/* A new file may even have come back under the old fd's number. */
	if (f->hf.fd != old_fd || !luo_fd_same_description(f->hf.fd, keep)) {
		int new_fd = f->hf.fd;

		/* The handler's new fd is held like any other. */
		if (e->inheritable_fds && new_fd >= 0)
			(void)fd_set_cloexec(new_fd, false);

		f->hf.fd = keep;
		luo_identity_remove(e, f);
		f->hf.fd = new_fd;
		/* A retrieved file stays busy until it is finished. */
		(void)luo_file_identify(f);
	}
done:
	if (r < 0)
		f->retrieve_error = r;
	else
		f->retrieved = true;
	return r;
}

static int session_retrieve_fd(luo_session *s, uint64_t token, int *ret_fd, bool held)
{
	struct luo_file *f;
	int fd, r;

	if (!ret_fd)
		return -EINVAL;
	r = file_to_retrieve(s, token, &f);
	if (r < 0)
		return r;
	if (!f->retrieved) {
		fd = -EBADF;
		r = file_first_retrieve(f, &fd, held);
		if (r < 0)
			return r;
		if (fd >= 0) {
			*ret_fd = fd;
			return 0;
		}
	}
	if (held) {
		*ret_fd = f->hf.fd;
		return 0;
	}
	fd = fd_dup_cloexec(f->hf.fd);
	if (fd < 0)
		return fd;
	*ret_fd = fd;
	return 0;
}

int luo_session_retrieve_fd(luo_session *s, uint64_t token, int *ret_fd)
{
	return session_retrieve_fd(s, token, ret_fd, false);
}

int luo_session_retrieve_fd_held(luo_session *s, uint64_t token, int *ret_fd)
{
	return session_retrieve_fd(s, token, ret_fd, true);
}

/*
 * Both ends of a file leave the identity index before the handler runs: the
 * index orders by-description files through f->hf.fd, and a handler that
 * touched it would otherwise leave a stale entry behind.  Nothing looks at
 * the index while the handler runs, so the earlier removal changes nothing
 * else.
 */
static void file_end(struct luo_file *f, void (*end)(struct luo_handler_file *hf),
		     void (*flb_end)(struct luo_flb *flb))
{
	struct luo_engine *e = f->session->engine;

	luo_identity_remove(e, f);
	if (end)
		end(&f->hf);
	if (f->flb)
		flb_end(f->flb);
	luo_file_free(f, !e->borrowed_fds);
}

void luo_file_unpreserve(struct luo_file *f)
{
	file_end(f, f->handler->unpreserve, luo_flb_file_unpreserve);
}

void luo_file_finish(struct luo_file *f)
{
	file_end(f, f->handler->finish, luo_flb_file_finish);
}

int luo_session_foreach_file(const luo_session *s,
			     int (*cb)(const struct luo_file_info *fi, void *userdata),
			     void *userdata)
{
	if (!s || !cb)
		return -EINVAL;
	LIST_FOREACH (n, &s->files) {
		const struct luo_file *f = list_entry(n, struct luo_file, order);
		struct luo_file_info fi = {
			.token = f->hf.token,
			.compatible = f->handler->compatible,
			.fd = f->hf.fd,
			.retrieved = f->retrieved,
			.retrieve_error = f->retrieve_error,
			.data_size = f->hf.data_size,
		};
		int r = cb(&fi, userdata);

		if (r != 0)
			return r;
	}
	return 0;
}
