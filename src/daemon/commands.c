/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's request handling
 *
 * Every message a connection or a session socket delivers comes here.  The
 * checks are the kernel's, in the kernel's order (protocol.h): the header
 * (nr, command word, payload size), then, on a session socket, the handle
 * lookup (ESTALE for a previous generation) and the session-kind check, then
 * the struct (size, E2BIG) and the fd count; only then does the engine run.
 * Every fd that came with the message is closed on every path: the engine
 * keeps its own dup of a preserved file.
 *
 * Policy lives here too: the peer's uid (SO_PEERCRED of its connection)
 * owns the sessions it creates, other uids (except root) see none of them,
 * and the per-uid limits are checked before anything is allocated.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "basic/socket-util.h"
#include "config.h"
#include "core/state.h"
#include "luod.h"
#include "protocol/protocol.h"

union cmd_struct {
	struct luo_wire_create_session create;
	struct liveupdate_ioctl_retrieve_session retrieve;
	struct liveupdate_session_preserve_fd preserve;
	struct liveupdate_session_retrieve_fd retrieve_fd;
	struct liveupdate_session_finish finish;
	struct liveupdate_session_get_name get_name;
	struct luo_wire_simple simple;
	struct luo_wire_get_owner get_owner;
	struct luo_wire_status status;
	struct luo_wire_list list;
	struct luo_wire_show show;
	struct luo_wire_update update;
	struct luo_wire_reboot reboot;
	struct luo_wire_is_session is_session;
	struct luo_wire_drop drop;
	struct luo_wire_dump_state dump_state;
	struct luo_wire_kexec kexec;
	struct luo_wire_fds fds;
	uint8_t bytes[LUO_WIRE_REQUEST_MAX];
};

static bool is_session_fd(struct luod *d, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) || st.st_dev != d->sock_dev)
		return false;
	return session_ep_find_by_ino(d, st.st_ino) != NULL;
}

static void reply_ok(struct luod *d, struct endpoint *ep, const struct luo_wire_parsed *p,
		     const void *cmd, int fd)
{
	endpoint_reply(d, ep, p->tag, 0, 0, cmd, luo_wire_reply_size(p), NULL, 0, fd);
}

/* Closes what the request brought and replies: the error, or the struct and out_fd. */
static void finish_request(struct luod *d, struct endpoint *ep, const struct luo_wire_parsed *p,
			   union cmd_struct *c, int r, int *fds, size_t n_fds, int out_fd)
{
	luod_close_later_many(d, fds, n_fds);
	if (r < 0) {
		safe_close(out_fd);
		endpoint_reply(d, ep, p->tag, r, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	reply_ok(d, ep, p, c, out_fd);
}

/* ---- session commands ---- */

static int session_preserve_once(struct luod *d, luo_session *s, union cmd_struct *c, int fd)
{
	uint32_t uid = luo_session_uid(s);
	struct uid_usage *u = uid_usage_get(d, uid);
	size_t sessions = luod_n_sessions(d), files = luo_engine_n_files(d->engine);
	int flags, r;

	/* An O_PATH fd is no open file to the kernel either. */
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || (flags & O_PATH))
		return -EBADF;
	/* A session fd is an anonymous file in the kernel, which no handler takes;
	 * here it is also a socket that would keep its own session open forever. */
	if (is_session_fd(d, fd))
		return -ENOENT;
	if (!u)
		return -ENOMEM;
	if (u->n_files + u->n_staged >= limit_files(d, uid))
		return -ENOSPC;
	r = capacity_check(d, uid, 1);
	if (r < 0)
		return r;
	r = luo_session_preserve_fd(s, c->preserve.token, fd);
	if (r < 0)
		return r;
	journal_file(d, s, c->preserve.token);
	uid_usage_charge(d, uid, sessions, files);
	return 0;
}

static int session_preserve(struct luod *d, struct endpoint *ep, luo_session *s,
			    union cmd_struct *c, int fd)
{
	int r = session_preserve_once(d, s, c, fd);

	/* The file (or the quota) may be held by a session whose last fd was closed
	 * just before this request: take in that close first, as the kernel would have. */
	if ((r == -EBUSY || r == -ENOSPC || r == -EMFILE) && server_reap_hangups(d, ep) > 0)
		r = session_preserve_once(d, s, c, fd);
	return r;
}

static void handle_session_request(struct luod *d, struct endpoint *ep,
				   const struct luo_wire_parsed *p, int *fds, size_t n_fds,
				   bool fds_truncated)
{
	union cmd_struct c;
	luo_session *s;
	int r, out_fd = -EBADF;
	uint32_t nr = p->cmd->nr;

	s = ep->handle ? luo_engine_session_by_handle(d->engine, ep->handle) : NULL;
	if (!s) {
		/* A handover or reboot moved the session on: this fd is of an older generation. */
		ep->handle = 0;
		r = -ESTALE;
		goto out;
	}
	/* Step 4: the command must suit the session's kind. */
	bool outgoing = luo_session_kind(s) == LUO_SESSION_OUTGOING;
	if (((nr == LIVEUPDATE_CMD_SESSION_PRESERVE_FD || nr == LUO_CMD_SESSION_HANDOVER ||
	      nr == LUO_CMD_SESSION_PRESERVE_FDS) &&
	     !outgoing) ||
	    ((nr == LIVEUPDATE_CMD_SESSION_RETRIEVE_FD || nr == LIVEUPDATE_CMD_SESSION_FINISH ||
	      nr == LUO_CMD_SESSION_RETRIEVE_FDS) &&
	     outgoing)) {
		r = -EINVAL;
		goto out;
	}
	r = luo_wire_request_check_struct(p, &c);
	if (r < 0)
		goto out;
	if (p->cmd->batch) {
		/* A batch fails whole: a bad part ends the batch it belongs to. */
		uint64_t id = nr == LUO_CMD_SESSION_PRESERVE_FDS ? c.fds.batch : 0;

		r = fds_truncated ? -EMFILE : luo_wire_request_check_batch(p, &c.fds, n_fds);
		if (r < 0) {
			luod_close_later_many(d, fds, n_fds);
			batch_fail(d, ep, p->tag, id, r, LUO_WIRE_FDS_NONE);
		} else if (nr == LUO_CMD_SESSION_PRESERVE_FDS)
			batch_preserve(d, ep, s, p, &c.fds, fds, n_fds);
		else
			batch_retrieve(d, ep, s, p, &c.fds);
		return;
	}
	if (fds_truncated) {
		r = -EMFILE;
		goto out;
	}
	r = luo_wire_request_check_fds(p, n_fds);
	if (r < 0)
		goto out;

	switch (nr) {
	case LIVEUPDATE_CMD_SESSION_PRESERVE_FD:
		r = session_preserve(d, ep, s, &c, fds[0]);
		break;
	case LIVEUPDATE_CMD_SESSION_RETRIEVE_FD:
		r = luo_session_retrieve_fd(s, c.retrieve_fd.token, &out_fd);
		/* Retrieved, or failed for good: either way the file changed. */
		journal_file(d, s, c.retrieve_fd.token);
		if (r >= 0)
			c.retrieve_fd.fd = -1; /* the file is the reply's SCM_RIGHTS fd */
		break;
	case LIVEUPDATE_CMD_SESSION_FINISH: {
		size_t sessions = luod_n_sessions(d), files = luo_engine_n_files(d->engine);

		if (c.finish.reserved != 0) {
			r = -EINVAL;
			break;
		}
		r = luo_session_finish(s);
		if (r >= 0) {
			journal_session_moved(d, luo_session_uid(s), luo_session_name(s), false,
					      true);
			uid_usage_charge(d, luo_session_uid(s), sessions, files);
		}
		break;
	}
	case LIVEUPDATE_CMD_SESSION_GET_NAME:
		if (c.get_name.reserved != 0) {
			r = -EINVAL;
			break;
		}
		memset(c.get_name.name, 0, sizeof(c.get_name.name));
		snprintf((char *)c.get_name.name, sizeof(c.get_name.name), "%s",
			 luo_session_name(s));
		r = 0;
		break;
	case LUO_CMD_SESSION_GET_OWNER:
		if (c.get_owner.reserved != 0 || c.get_owner.reserved2 != 0) {
			r = -EINVAL;
			break;
		}
		c.get_owner.uid = luo_session_uid(s);
		r = 0;
		break;
	case LUO_CMD_SESSION_HANDOVER:
		if (c.simple.reserved != 0) {
			r = -EINVAL;
			break;
		}
		r = luo_engine_handover_session(d->engine, s);
		/* The incoming session of its name may have been closed just before. */
		if (r == -EEXIST && server_reap_hangups(d, ep) > 0)
			r = luo_engine_handover_session(d->engine, s);
		if (r >= 0) {
			journal_session_moved(d, luo_session_uid(s), luo_session_name(s), true,
					      false);
			session_info_handed_over(d, luo_session_uid(s), luo_session_name(s));
			log_debug("session handed over");
			ep->handle = 0;
			/* A batch still staged for it can no longer apply. */
			batch_drop_stale(d);
		}
		break;
	default:
		r = -EINVAL;
		break;
	}
out:
	finish_request(d, ep, p, &c, r, fds, n_fds, out_fd);
}

/* ---- device commands ---- */

/* Makes the socketpair behind a new session fd; returns luod's end, the client's in *ret_client. */
static int make_session_socket(uint64_t *ret_ino, int *ret_client)
{
	int pair[2];
	struct stat st;

	/* Blocking on both ends: the client's end is the client's file, and luod
	 * uses MSG_DONTWAIT on its own. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return negative_errno();
	/* luod's end goes to every next image of luod: inheritable from birth. */
	if (fstat(pair[1], &st) < 0 || fd_set_cloexec(pair[0], false) < 0) {
		int r = negative_errno();
		close_many(pair, 2);
		return r;
	}
	*ret_ino = st.st_ino;
	*ret_client = pair[1];
	return pair[0];
}

static int device_create_or_retrieve(struct luod *d, struct endpoint *ep, bool create,
				     union cmd_struct *c, int *ret_fd)
{
	_cleanup_close_ int ours = -EBADF, client = -EBADF;
	size_t sessions = luod_n_sessions(d), files = luo_engine_n_files(d->engine);
	uint64_t ino = 0;
	luo_session *s;
	int r;

	if (create) {
		struct uid_usage *u = uid_usage_get(d, ep->uid);

		if (!u)
			return -ENOMEM;
		if (c->create.flags & ~LUO_SESSION_FLAGS_CREATE)
			return -EINVAL;
		if ((u->n_sessions >= limit_sessions(d, ep->uid) ||
		     capacity_check(d, ep->uid, 1) < 0) &&
		    server_reap_hangups(d, ep) > 0) {
			/* Closes taken in changed the counts this request is charged from. */
			sessions = luod_n_sessions(d);
			files = luo_engine_n_files(d->engine);
		}
		if (u->n_sessions >= limit_sessions(d, ep->uid))
			return -ENOSPC;
		r = capacity_check(d, ep->uid, 1);
		if (r < 0)
			return r;
	}
	/* The socket first: undoing a created session could hand it over. */
	r = make_session_socket(&ino, &client);
	/* Out of fds: those of endpoints closed just before may be what is missing. */
	if ((r == -EMFILE || r == -ENFILE) && server_reap_hangups(d, ep) > 0) {
		sessions = luod_n_sessions(d);
		files = luo_engine_n_files(d->engine);
		r = make_session_socket(&ino, &client);
	}
	if (r < 0)
		return r;
	ours = r;
	for (int attempt = 0;; attempt++) {
		if (create)
			r = luo_engine_create_session(d->engine, c->create.name, c->create.flags,
						      ep->uid, &s);
		else
			r = luo_engine_retrieve_session(d->engine, c->retrieve.name, ep->uid, &s);
		/* The name may be held by a session whose last fd was closed just before
		 * this request (or, with handover-on-close, be about to arrive from one):
		 * take in that close first, as the kernel would have. */
		if (r >= 0 || attempt > 0 ||
		    !(r == -EEXIST || r == -EINVAL || (!create && r == -ENOENT)) ||
		    server_reap_hangups(d, ep) == 0)
			break;
		sessions = luod_n_sessions(d);
		files = luo_engine_n_files(d->engine);
	}
	if (r < 0)
		return r;
	uint32_t owner = luo_session_uid(s);
	struct endpoint *sep = session_ep_add(d, TAKE_FD(ours), luo_session_handle(s), ino, owner);
	if (!sep) {
		char name[LUO_NAME_FIELD];

		/* Nobody holds it: the close rule applies at once. */
		snprintf(name, sizeof(name), "%s", luo_session_name(s));
		luo_session_release(s);
		/* A created session never was in the journal; a retrieved one was. */
		if (!create)
			journal_session_moved(d, owner, name, false, true);
		uid_usage_charge(d, owner, sessions, files);
		return -ENOMEM;
	}
	journal_session_header(d, s);
	journal_session_ep(d, sep);
	uid_usage_charge(d, owner, sessions, files);
	if (create)
		session_info_created(d, s, ep->pid);
	log_debug("%s session \"%s\" for pid %d", create ? "created" : "retrieved",
		  luo_session_name(s), (int)ep->pid);
	c->create.fd = -1; /* the session is the reply's SCM_RIGHTS fd */
	*ret_fd = TAKE_FD(client);
	return 0;
}

/* The bytes of the file luod holds (st_size: a memfd's or a regular file's contents). */
static void file_stat(int fd, uint64_t *ret_size, uint32_t *ret_mode)
{
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		*ret_size = 0;
		*ret_mode = 0;
		return;
	}
	*ret_size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
	*ret_mode = st.st_mode;
}

static int add_file_size(const struct luo_file_info *fi, void *userdata)
{
	uint64_t size;
	uint32_t mode;

	file_stat(fi->fd, &size, &mode);
	*(uint64_t *)userdata += size;
	return 0;
}

static void fill_session_entry(struct luod *d, luo_session *s, struct luo_wire_session_entry *e)
{
	const struct session_record *rec = session_info_find(d, s);

	memset(e, 0, sizeof(*e));
	snprintf((char *)e->name, sizeof(e->name), "%s", luo_session_name(s));
	e->kind = luo_session_kind(s);
	e->state = luo_session_state(s);
	e->uid = luo_session_uid(s);
	e->flags = luo_session_flags(s);
	e->n_files = luo_session_n_files(s);
	(void)luo_session_foreach_file(s, add_file_size, &e->bytes);
	if (rec) {
		e->created_usec = rec->created_usec;
		e->handover_usec = rec->handover_usec;
		e->update_number = rec->update_number;
		e->creator_pid = rec->creator_pid;
		memcpy(e->creator_comm, rec->creator_comm, sizeof(e->creator_comm));
	}
}

/*
 * The entry size to send a client that knows `known` bytes of an entry
 * (0: the first version's, v1), or -EINVAL for a size no version had.
 */
static int entry_size_for(uint32_t known, uint32_t v1, uint32_t ours)
{
	if (known == 0)
		return (int)v1;
	if (known < v1)
		return -EINVAL;
	return (int)MIN(known, ours);
}

/*
 * The uid whose names a command looks in: the caller's own, or with
 * LUO_WIRE_OF_UID another's, which only root (and that uid) may ask for.
 * -EINVAL for unknown flags; another uid's names asked by a non-root caller
 * do not exist for it (-ENOENT).
 */
static int names_of(const struct endpoint *ep, uint32_t of_uid, uint32_t of_flags,
		    uint32_t *ret_uid)
{
	if (of_flags & ~LUO_WIRE_OF_UID)
		return -EINVAL;
	if (!(of_flags & LUO_WIRE_OF_UID)) {
		*ret_uid = ep->uid;
		return 0;
	}
	if (ep->uid != 0 && of_uid != ep->uid)
		return -ENOENT;
	*ret_uid = of_uid;
	return 0;
}

static bool visible(const struct endpoint *ep, luo_session *s)
{
	return ep->uid == 0 || luo_session_uid(s) == ep->uid;
}

static void device_list(struct luod *d, struct endpoint *ep, const struct luo_wire_parsed *p,
			union cmd_struct *c)
{
	_cleanup_free_ uint8_t *chunk = NULL;
	struct luo_wire_session_entry e;
	uint64_t count = 0;
	size_t n = 0, per;
	int esize;

	esize = entry_size_for(c->list.entry_size, LUO_WIRE_SESSION_ENTRY_V1, sizeof(e));
	if (esize < 0) {
		endpoint_reply(d, ep, p->tag, esize, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	per = (LUO_WIRE_REPLY_MAX - sizeof(struct luo_wire_reply)) / (size_t)esize;
	if (ep->uid == 0)
		count = luod_n_sessions(d);
	else
		for (int k = LUO_SESSION_OUTGOING; k <= LUO_SESSION_INCOMING; k++)
			for (luo_session *s = luo_engine_first_session(d->engine, k); s;
			     s = luo_session_next(s))
				count += visible(ep, s);
	if (!queue_budget_allows(d, ep->uid, count * (size_t)esize)) {
		endpoint_reply(d, ep, p->tag, -ENOBUFS, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	chunk = malloc(per * (size_t)esize);
	if (!chunk) {
		endpoint_reply(d, ep, p->tag, -ENOMEM, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	c->list.count = count;
	c->list.entry_size = (uint32_t)esize;
	c->list.update_number = luo_engine_update_number(d->engine);
	endpoint_reply(d, ep, p->tag, 0, count ? LUO_WIRE_REPLY_MORE : 0, c, luo_wire_reply_size(p),
		       NULL, 0, -EBADF);
	if (!count)
		return;
	uint64_t sent = 0;
	for (int k = LUO_SESSION_OUTGOING; k <= LUO_SESSION_INCOMING; k++)
		for (luo_session *s = luo_engine_first_session(d->engine, k); s;
		     s = luo_session_next(s)) {
			if (!visible(ep, s))
				continue;
			fill_session_entry(d, s, &e);
			memcpy(chunk + n++ * (size_t)esize, &e, (size_t)esize);
			sent++;
			if (n == per && sent < count) {
				endpoint_reply(d, ep, p->tag, 0, LUO_WIRE_REPLY_MORE, chunk,
					       n * (size_t)esize, NULL, 0, -EBADF);
				n = 0;
			}
		}
	endpoint_reply(d, ep, p->tag, 0, 0, chunk, n * (size_t)esize, NULL, 0, -EBADF);
}

struct show_ctx {
	struct luod *d;
	struct endpoint *ep;
	uint32_t tag;
	uint8_t *chunk;
	size_t n, per, esize;
	uint64_t left;
};

static int show_file(const struct luo_file_info *fi, void *userdata)
{
	struct show_ctx *x = userdata;
	struct luo_wire_file_entry e;

	memset(&e, 0, sizeof(e));
	e.token = fi->token;
	snprintf(e.compatible, sizeof(e.compatible), "%s", fi->compatible ? fi->compatible : "");
	e.retrieved = fi->retrieved;
	e.retrieve_error = fi->retrieve_error;
	e.data_size = fi->data_size;
	file_stat(fi->fd, &e.file_size, &e.file_mode);
	memcpy(x->chunk + x->n++ * x->esize, &e, x->esize);
	x->left--;
	if (x->n == x->per || x->left == 0) {
		endpoint_reply(x->d, x->ep, x->tag, 0, x->left ? LUO_WIRE_REPLY_MORE : 0, x->chunk,
			       x->n * x->esize, NULL, 0, -EBADF);
		x->n = 0;
	}
	return 0;
}

static bool name_field_valid(const uint8_t name[LIVEUPDATE_SESSION_NAME_LENGTH])
{
	return name[0] != 0 && memchr(name, 0, LIVEUPDATE_SESSION_NAME_LENGTH) != NULL;
}

static void device_show(struct luod *d, struct endpoint *ep, const struct luo_wire_parsed *p,
			union cmd_struct *c)
{
	struct luo_wire_session_entry entry;
	struct show_ctx x = { .d = d, .ep = ep, .tag = p->tag };
	int r = 0, ssize, fsize;
	luo_session *s;

	ssize = entry_size_for(c->show.session_entry_size, LUO_WIRE_SESSION_ENTRY_V1,
			       sizeof(entry));
	fsize = entry_size_for(c->show.file_entry_size, LUO_WIRE_FILE_ENTRY_V1,
			       sizeof(struct luo_wire_file_entry));
	uint32_t uid = 0;

	if (c->show.kind > LUO_SESSION_INCOMING || !name_field_valid(c->show.name) || ssize < 0 ||
	    fsize < 0)
		r = -EINVAL;
	else
		r = names_of(ep, c->show.of_uid, c->show.of_flags, &uid);
	if (r >= 0) {
		s = luo_engine_find_session_of(d->engine, c->show.kind, uid,
					       (const char *)c->show.name);
		/* Another uid's session does not exist as far as this peer can tell. */
		if (!s || !visible(ep, s))
			r = -ENOENT;
	}
	if (r >= 0) {
		x.left = luo_session_n_files(s);
		x.esize = (size_t)fsize;
		if (!queue_budget_allows(d, ep->uid, x.left * x.esize))
			r = -ENOBUFS;
	}
	if (r >= 0) {
		x.per = (LUO_WIRE_REPLY_MAX - sizeof(struct luo_wire_reply)) / x.esize;
		x.chunk = malloc(x.per * x.esize);
		if (!x.chunk)
			r = -ENOMEM;
	}
	if (r < 0) {
		endpoint_reply(d, ep, p->tag, r, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	c->show.count = x.left;
	c->show.session_entry_size = (uint32_t)ssize;
	c->show.file_entry_size = (uint32_t)fsize;
	c->show.update_number = luo_engine_update_number(d->engine);
	endpoint_reply(d, ep, p->tag, 0, LUO_WIRE_REPLY_MORE, c, luo_wire_reply_size(p), NULL, 0,
		       -EBADF);
	fill_session_entry(d, s, &entry);
	endpoint_reply(d, ep, p->tag, 0, x.left ? LUO_WIRE_REPLY_MORE : 0, &entry, (size_t)ssize,
		       NULL, 0, -EBADF);
	if (x.left)
		(void)luo_session_foreach_file(s, show_file, &x);
	free(x.chunk);
}

static luo_session *drop_target(struct luod *d, struct endpoint *ep, uint32_t kind, uint32_t uid,
				const char *name)
{
	luo_session *s;

	if (kind != LUO_DROP_OUTGOING) {
		s = luo_engine_find_session_of(d->engine, LUO_SESSION_INCOMING, uid, name);
		if (s && visible(ep, s))
			return s;
	}
	if (kind != LUO_DROP_INCOMING) {
		s = luo_engine_find_session_of(d->engine, LUO_SESSION_OUTGOING, uid, name);
		if (s && visible(ep, s))
			return s;
	}
	return NULL;
}

/* DROP: the owner (or root) removes a session nobody holds (luod(8)). */
static int device_drop(struct luod *d, struct endpoint *ep, union cmd_struct *c)
{
	const char *name = (const char *)c->drop.name;
	int r;

	uint32_t uid;

	if (c->drop.kind > LUO_DROP_INCOMING || !name_field_valid(c->drop.name))
		return -EINVAL;
	r = names_of(ep, c->drop.of_uid, c->drop.of_flags, &uid);
	if (r < 0)
		return r;
	for (int attempt = 0;; attempt++) {
		luo_session *s = drop_target(d, ep, c->drop.kind, uid, name);

		/* Another uid's session does not exist as far as this peer can tell. */
		r = s ? server_drop_session(d, s) : -ENOENT;
		/* The holder may have closed it just before: take that close in first. */
		if (r >= 0 || attempt > 0 || server_reap_hangups(d, ep) == 0)
			break;
	}
	return r;
}

/* The engine's state as luo_state_encode() writes it for a live update, in a sealed memfd. */
static int device_dump_state(struct luod *d, struct endpoint *ep, union cmd_struct *c, int *ret_fd)
{
	_cleanup_free_ void *blob = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t size, done = 0;
	int r;

	/* Every uid's sessions are in it: root's, or a per-user luod's owner's. */
	if (ep->uid != 0 && ep->uid != (uint32_t)geteuid())
		return -EPERM;
	if (c->dump_state.reserved != 0)
		return -EINVAL;
	r = luo_state_encode(d->engine, NULL, &blob, &size);
	if (r < 0)
		return r;
	fd = memfd_create("luod-state-dump", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return negative_errno();
	while (done < size) {
		ssize_t n = write(fd, (uint8_t *)blob + done, size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		done += (size_t)n;
	}
	/* The reader gets exactly what luod encoded, and cannot change it for anyone. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		return negative_errno();
	c->dump_state.state_size = size;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static void count_fd(int fd, void *userdata)
{
	(*(int *)userdata)++;
}

static void device_status(struct luod *d, struct endpoint *ep, union cmd_struct *c)
{
	struct rlimit rl;
	int n;

	struct keeper_area *ka = luod_keeper_area(d);

	c->status.update_number = luo_engine_update_number(d->engine);
	/* luod's pid is the keeper's: the one the pid file and service managers name. */
	c->status.pid = (uint64_t)(d->keeper_pid ? d->keeper_pid : getpid());
	c->status.worker_pid = (uint64_t)getpid();
	if (ep->uid == 0) {
		c->status.n_outgoing = luo_engine_n_sessions(d->engine, LUO_SESSION_OUTGOING);
		c->status.n_incoming = luo_engine_n_sessions(d->engine, LUO_SESSION_INCOMING);
		c->status.n_files = luo_engine_n_files(d->engine);
		c->status.n_connections = d->conns.count;
	} else {
		/* Another uid's sessions do not exist as far as this one can tell:
		 * its counts are its own (O(sessions), as its listing is). */
		struct uid_usage *u = uid_usage_get(d, ep->uid);

		c->status.n_outgoing = c->status.n_incoming = c->status.n_files = 0;
		for (int k = LUO_SESSION_OUTGOING; k <= LUO_SESSION_INCOMING; k++)
			for (luo_session *s = luo_engine_first_session(d->engine, k); s;
			     s = luo_session_next(s)) {
				if (luo_session_uid(s) != ep->uid)
					continue;
				if (k == LUO_SESSION_OUTGOING)
					c->status.n_outgoing++;
				else
					c->status.n_incoming++;
				c->status.n_files += luo_session_n_files(s);
			}
		c->status.n_connections = u ? u->n_connections : 0;
	}
	capacity_refresh(d);
	c->status.fd_limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 0;
	/* Counted, not walked: STATUS must not cost O(files). */
	n = d->base_fds + (int)(d->conns.count + d->sessions.count + luo_engine_n_files(d->engine) +
				batch_n_staged(d));
	luo_engine_foreach_flb_fd(d->engine, count_fd, &n);
	c->status.fds_in_use = n > 0 ? (uint64_t)n : 0;
	c->status.started_usec = ka ? ka->started_usec : d->started_usec;
	c->status.n_live_updates = ka ? ka->n_live_updates : d->n_live_updates;
	c->status.n_worker_restarts = ka ? ka->n_worker_restarts : 0;
	c->status.binary_since_usec = ka ? ka->binary_since_usec : 0;
	c->status.journal_size = d->journal ? luo_journal_snapshot_size(d->journal) +
						      luo_journal_log_size(d->journal)
					    : 0;
	memset(c->status.binary, 0, sizeof(c->status.binary));
	if (ka)
		snprintf(c->status.binary, sizeof(c->status.binary), "%.*s",
			 (int)sizeof(c->status.binary) - 1, ka->binary);
	memset(c->status.version, 0, sizeof(c->status.version));
	snprintf(c->status.version, sizeof(c->status.version), "%s", LUO_VERSION);
	c->status.fd_capacity = d->fd_capacity;
	c->status.root_reserve = capacity_root_reserve(d);
	c->status.uid_fd_share = capacity_uid_share(d, ep->uid);
	c->status.uid_fds = uid_fds(d, ep->uid);
}

static void handle_device_request(struct luod *d, struct endpoint *ep,
				  const struct luo_wire_parsed *p, int *fds, size_t n_fds,
				  bool fds_truncated)
{
	union cmd_struct c;
	int r, out_fd = -EBADF;

	r = luo_wire_request_check_struct(p, &c);
	if (r < 0)
		goto out;
	if (fds_truncated) {
		r = -EMFILE;
		goto out;
	}
	r = luo_wire_request_check_fds(p, n_fds);
	if (r < 0)
		goto out;

	/* Past the fd check, only IS_SESSION (fds[0]) and KEXEC (which consumes
	 * them) hold fds; the other commands that reply by themselves came with none. */
	switch (p->cmd->nr) {
	case LUO_CMD_STATUS:
	case LUO_CMD_LIST:
	case LUO_CMD_SHOW:
		/* What they report must include every close made before the request. */
		(void)server_reap_hangups(d, ep);
		break;
	default:
		break;
	}
	switch (p->cmd->nr) {
	case LIVEUPDATE_CMD_CREATE_SESSION:
	case LIVEUPDATE_CMD_RETRIEVE_SESSION:
		r = device_create_or_retrieve(d, ep, p->cmd->nr == LIVEUPDATE_CMD_CREATE_SESSION,
					      &c, &out_fd);
		break;
	case LUO_CMD_DEVICE_OPEN:
		if (c.simple.reserved != 0)
			r = -EINVAL;
		else if (d->device_holder && (server_reap_hangups(d, ep) == 0 || d->device_holder))
			r = -EBUSY; /* one opener in the whole system, as the kernel's device */
		else {
			d->device_holder = ep;
			ep->device_holder = true;
			journal_conn(d, ep);
			r = 0;
		}
		break;
	case LUO_CMD_STATUS:
		device_status(d, ep, &c);
		r = 0;
		break;
	case LUO_CMD_LIST:
		device_list(d, ep, p, &c);
		return;
	case LUO_CMD_SHOW:
		device_show(d, ep, p, &c);
		return;
	case LUO_CMD_IS_SESSION:
		c.is_session.is_session = is_session_fd(d, fds[0]);
		r = 0;
		break;
	case LUO_CMD_DROP:
		r = device_drop(d, ep, &c);
		break;
	case LUO_CMD_DUMP_STATE:
		r = device_dump_state(d, ep, &c, &out_fd);
		break;
	case LUO_CMD_UPDATE:
	case LUO_CMD_REBOOT:
		if (ep->uid != 0 && ep->uid != (uint32_t)geteuid()) {
			endpoint_reply(d, ep, p->tag, -EPERM, 0, NULL, 0, NULL, 0, -EBADF);
			return;
		}
		liveupdate_request(d, ep, p->op, p->tag, &c, p->size, now_usec(CLOCK_MONOTONIC));
		return;
	case LUO_CMD_KEXEC:
		kexec_request(d, ep, p->tag, &c.kexec, p->size, fds, n_fds);
		return;
	default:
		r = -EINVAL;
		break;
	}
out:
	finish_request(d, ep, p, &c, r, fds, n_fds, out_fd);
}

int handle_request(struct luod *d, struct endpoint *ep, const uint8_t *buf, size_t len, int *fds,
		   size_t n_fds, bool fds_truncated)
{
	enum luo_wire_target target = ep->type == EP_SESSION ? LUO_WIRE_SESSION : LUO_WIRE_DEVICE;
	struct luo_wire_parsed p;
	int r;

	r = luo_wire_request_parse(target, buf, len, &p);
	if (r == -EBADMSG) {
		luod_close_later_many(d, fds, n_fds);
		/* No header, no tag: nobody could take a reply.  A connection that sends
		 * junk is closed; a session fd may be shared, so its junk is dropped. */
		return ep->type == EP_CONN ? -ECONNABORTED : 0;
	}
	if (r < 0) {
		luod_close_later_many(d, fds, n_fds);
		endpoint_reply(d, ep, luo_wire_request_tag(buf, len), r, 0, NULL, 0, NULL, 0,
			       -EBADF);
		return 0;
	}
	if (ep->type == EP_SESSION)
		handle_session_request(d, ep, &p, fds, n_fds, fds_truncated);
	else
		handle_device_request(d, ep, &p, fds, n_fds, fds_truncated);
	return 0;
}
