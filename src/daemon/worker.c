/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the worker: recovery, the journal's daemon entries, shutdown
 *
 * Every worker starts the same way, whether luod just started (an empty
 * journal), a worker died (any signal, any exit) or an update replaced the
 * binary: it recovers from the journal.
 *
 *   1. the engine and the ext table from the journal (snapshot + records);
 *   2. connections and session sockets from their ext entries;
 *   3. the fd table reconciled with the state: every fd the state names
 *      must be open, every other one (beyond stdio and the keeper's) was
 *      opened by a worker that died before it committed it, and is closed;
 *      a connection accepted from the listening socket but not yet
 *      recorded is kept as a connection instead;
 *   4. the work a dead worker left: replies committed but not sent go out;
 *      a request recorded but not answered is run again (a request that
 *      was given to two workers that both died is answered EIO and
 *      dropped); an update under way goes on or is answered;
 *   5. it tells the keeper it serves, and serves.
 *
 * The rule the request path keeps (server.c): a request is peeked, not
 * taken, and recorded with its fds; the engine's changes, the replies and
 * the end of the request are committed together; only then is the message
 * taken off the socket and the replies sent, each reply's entry deleted once
 * it is on the socket.  A successor can tell whether the request was taken
 * by comparing the head of the socket with the recorded message (the same
 * client thread cannot have sent another: it waits for this reply).
 */
#include <limits.h>
#include <poll.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "luod.h"
#include "protocol/protocol.h"

/* ---- the daemon's entries ---- */

static void journal_failed(struct luod *d, int r)
{
	/* A change the journal cannot hold must not be answered: a new worker
	 * recovers from what was committed and runs the request again. */
	log_error("cannot write the journal: %s: restarting the worker", strerror(-r));
	_exit(LUOD_EXIT_FAILURE);
}

void journal_check(struct luod *d, int r)
{
	if (r < 0)
		journal_failed(d, r);
}

void journal_commit(struct luod *d)
{
	if (!d->journal)
		return;
	if (luo_journal_staged(d->journal))
		fault_point(d, "commit-before");
	luo_journal_commit(d->journal);
	fault_point(d, "commit-after");
	compact_maybe(d);
}

void journal_conn(struct luod *d, struct endpoint *ep)
{
	struct ext_conn c = {
		.uid = ep->uid,
		.pid = ep->pid,
		.flags = ep->device_holder ? EXT_CONN_DEVICE_HOLDER : 0,
	};

	if (d->journal)
		journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_CONN, (uint64_t)ep->fd,
						     &c, sizeof(c)));
}

void journal_session_ep(struct luod *d, struct endpoint *ep)
{
	struct ext_session s = {
		.uid = ep->uid,
		.flags = ep->deferred ? EXT_SESSION_DEFERRED : 0,
		.handle = ep->handle,
		.ino = ep->ino,
	};

	if (d->journal)
		journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_SESSION, (uint64_t)ep->fd,
						     &s, sizeof(s)));
}

void journal_endpoint_gone(struct luod *d, struct endpoint *ep)
{
	if (!d->journal)
		return;
	journal_check(d, luo_journal_ext_del(d->journal,
					     ep->type == EP_CONN ? LUOD_EXT_CONN : LUOD_EXT_SESSION,
					     (uint64_t)ep->fd));
	journal_check(d, luo_journal_ext_del(d->journal, LUOD_EXT_REQUEST, (uint64_t)ep->fd));
}

/* The engine's changes to the session of this name (a handover, finish,
 * release or drop: the session is written whole where it now is). */
void journal_session_moved(struct luod *d, uint32_t uid, const char *name, bool was_outgoing,
			   bool was_incoming)
{
	luo_journal *j = d->journal;

	if (!j)
		return;
	if (was_outgoing)
		journal_check(d, luo_journal_note_session_gone(j, LUO_SESSION_OUTGOING, uid, name));
	if (was_incoming)
		journal_check(d, luo_journal_note_session_gone(j, LUO_SESSION_INCOMING, uid, name));
	for (int kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING; kind++) {
		luo_session *s = luo_engine_find_session_of(d->engine, kind, uid, name);

		if (s)
			journal_check(d, luo_journal_note_session(j, s, true));
	}
	journal_check(d, luo_journal_note_engine(j));
}

void journal_session_header(struct luod *d, luo_session *s)
{
	if (!d->journal)
		return;
	journal_check(d, luo_journal_note_session(d->journal, s, false));
	journal_check(d, luo_journal_note_engine(d->journal));
}

void journal_file(struct luod *d, luo_session *s, uint64_t token)
{
	if (!d->journal)
		return;
	journal_check(d, luo_journal_note_file(d->journal, s, token));
	journal_check(d, luo_journal_note_engine(d->journal));
}

void journal_reset(struct luod *d)
{
	if (d->journal)
		journal_check(d, luo_journal_note_all(d->journal));
}

void luod_close_later(struct luod *d, int fd)
{
	if (d->journal)
		luo_journal_close_later(d->journal, fd);
	else
		safe_close(fd);
}

_Static_assert(sizeof(struct keeper_area) <= LUO_JOURNAL_OWNER_AREA,
	       "the keeper's area fits the journal's owner area");

struct keeper_area *luod_keeper_area(struct luod *d)
{
	return d->journal ? luo_journal_owner_area(d->journal) : NULL;
}

/* ---- recovery ---- */

static struct endpoint *find_endpoint(struct luod *d, int fd)
{
	LIST_FOREACH (i, &d->conns) {
		struct endpoint *ep = list_entry(i, struct endpoint, node);
		if (ep->fd == fd)
			return ep;
	}
	LIST_FOREACH (i, &d->sessions) {
		struct endpoint *ep = list_entry(i, struct endpoint, node);
		if (ep->fd == fd)
			return ep;
	}
	return NULL;
}

static int rebuild_conn(uint64_t key, const void *data, size_t size, void *userdata)
{
	struct luod *d = userdata;
	const struct ext_conn *c = data;
	struct endpoint *ep;

	if (size != sizeof(*c) || key < 3 || key > INT32_MAX)
		return -EBADMSG;
	ep = conn_add(d, (int)key, c->uid, c->pid);
	if (!ep)
		return -ENOMEM;
	if (c->flags & EXT_CONN_DEVICE_HOLDER) {
		ep->device_holder = true;
		d->device_holder = ep;
	}
	return 0;
}

static int rebuild_session(uint64_t key, const void *data, size_t size, void *userdata)
{
	struct luod *d = userdata;
	const struct ext_session *s = data;
	struct endpoint *ep;

	if (size != sizeof(*s) || key < 3 || key > INT32_MAX)
		return -EBADMSG;
	ep = session_ep_add(d, (int)key, s->handle, s->ino, s->uid);
	if (!ep)
		return -ENOMEM;
	if (s->flags & EXT_SESSION_DEFERRED) {
		ep->deferred = true;
		list_append(&d->deferred, &ep->deferred_node);
	}
	return 0;
}

struct named_fds {
	int *fds;
	size_t n, cap;
};

static void named_add(struct named_fds *n, int fd)
{
	if (fd < 0)
		return;
	if (n->n == n->cap) {
		size_t cap = n->cap ? n->cap * 2 : 1024;
		int *p = realloc(n->fds, cap * sizeof(int));

		if (!p)
			return;
		n->fds = p;
		n->cap = cap;
	}
	n->fds[n->n++] = fd;
}

static void named_flb(int fd, void *userdata)
{
	named_add(userdata, fd);
}

static int named_request(uint64_t key, const void *data, size_t size, void *userdata)
{
	const struct ext_request *rq = data;
	const uint8_t *p = data;

	if (size < sizeof(*rq) || (size - sizeof(*rq) - rq->len) != rq->n_fds * sizeof(int32_t))
		return -EBADMSG;
	for (uint32_t i = 0; i < rq->n_fds; i++) {
		int32_t fd;

		memcpy(&fd, p + sizeof(*rq) + rq->len + i * sizeof(fd), sizeof(fd));
		named_add(userdata, fd);
	}
	return 0;
}

static int named_reply(uint64_t key, const void *data, size_t size, void *userdata)
{
	const struct ext_reply *rp = data;
	const uint8_t *tail;
	int n = ext_reply_fds(rp, size, &tail);

	if (n < 0)
		return n;
	if (!tail)
		named_add(userdata, rp->fd);
	/* Held fds are the engine's, named by its files. */
	for (int i = 0; tail && !ext_reply_held(rp) && i < n; i++)
		named_add(userdata, ext_reply_fd_at(tail, (size_t)i));
	/* A request's own reply socket, named by its first reply (one per request
	 * on a session; a hostile client's stream on a connection has more). */
	if ((key & LUOD_REPLY_KEY_PRIVATE) && (uint32_t)key == 0)
		named_add(userdata, (int)((key & ~LUOD_REPLY_KEY_PRIVATE) >> 32));
	return 0;
}

static int named_batch(uint64_t key, const void *data, size_t size, void *userdata)
{
	return batch_entry_fds(data, size, named_flb, userdata);
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

static int collect_file_fd(const struct luo_file_info *fi, void *userdata)
{
	named_add(userdata, fi->fd);
	return 0;
}

/* Is fd a connection accepted from our listening socket? */
static bool is_our_connection(struct luod *d, int fd)
{
	struct sockaddr_un sa = {}, la = {};
	socklen_t len = sizeof(sa), llen = sizeof(la);
	int type = 0;
	socklen_t tlen = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || type != SOCK_SEQPACKET)
		return false;
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &type, &tlen) == 0 && type)
		return false;
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_family != AF_UNIX ||
	    getsockname(d->listen_ep.fd, (struct sockaddr *)&la, &llen) < 0)
		return false;
	return len == llen && memcmp(&sa, &la, len) == 0;
}

#define POLL_BATCH 1024 /* never above RLIMIT_NOFILE's usual soft limit */

/* How many fd numbers the table may hold: its size from /proc/self/status
 * (FDSize), at least past the highest fd named and the fd limit. */
static int fd_table_size(int highest_named)
{
	struct rlimit rl;
	char buf[2048];
	int size = highest_named + 1, fd;
	ssize_t len;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < INT_MAX)
		size = MAX(size, (int)rl.rlim_cur);
	fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		len = read(fd, buf, sizeof(buf) - 1);
		safe_close(fd);
		if (len > 0) {
			const char *f;

			buf[len] = 0;
			f = strstr(buf, "\nFDSize:");
			if (f)
				size = MAX(size, atoi(f + 8));
		}
	}
	return size;
}

/*
 * Closes what no one names; checks that what the state names is open.  A
 * connection a dead worker accepted but had not recorded is adopted.
 */
static int reconcile(struct luod *d, size_t *ret_closed, size_t *ret_adopted)
{
	struct named_fds n = {};
	size_t closed = 0, adopted = 0;
	int r = 0;

	for (int fd = 0; fd <= 2; fd++)
		named_add(&n, fd);
	for (size_t i = 0; i < d->n_keeper_fds; i++)
		named_add(&n, d->keeper_fds[i]);
	named_add(&n, d->journal_fd);
	named_add(&n, d->listen_ep.fd);
	for (int kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING; kind++)
		for (luo_session *s = luo_engine_first_session(d->engine, kind); s;
		     s = luo_session_next(s))
			(void)luo_session_foreach_file(s, collect_file_fd, &n);
	luo_engine_foreach_flb_fd(d->engine, named_flb, &n);
	LIST_FOREACH (i, &d->conns)
		named_add(&n, list_entry(i, struct endpoint, node)->fd);
	LIST_FOREACH (i, &d->sessions)
		named_add(&n, list_entry(i, struct endpoint, node)->fd);
	r = luo_journal_ext_foreach(d->journal, LUOD_EXT_REQUEST, named_request, &n);
	if (r >= 0)
		r = luo_journal_ext_foreach(d->journal, LUOD_EXT_REPLY, named_reply, &n);
	if (r >= 0)
		r = luo_journal_ext_foreach(d->journal, LUOD_EXT_BATCH, named_batch, &n);
	if (r < 0)
		goto out;
	qsort(n.fds, n.n, sizeof(int), cmp_int);
	for (size_t i = 1; i < n.n; i++)
		if (n.fds[i] == n.fds[i - 1] && n.fds[i] > 2) {
			/* The keeper's fds may repeat (journal, listening socket); the
			 * state's may not. */
			bool keeper = false;

			for (size_t k = 0; k < d->n_keeper_fds; k++)
				keeper |= d->keeper_fds[k] == n.fds[i];
			keeper |= n.fds[i] == d->journal_fd || n.fds[i] == d->listen_ep.fd;
			if (!keeper) {
				log_error("the journal names fd %d twice", n.fds[i]);
				r = -EBADMSG;
				goto out;
			}
		}
	/*
	 * Which fds are open: one poll() (no event asked, POLLNVAL for a number
	 * that is not open) per batch of numbers, over the whole table.  Not a
	 * listing of /proc/self/fd, which makes the kernel build a dentry and an
	 * inode for every open fd (30 ms at 10,000), and the keeper pay again to
	 * free them when it reaps this worker.
	 */
	{
		int size = fd_table_size(n.n ? n.fds[n.n - 1] : 2), batch = POLL_BATCH;
		struct pollfd p[POLL_BATCH];
		struct rlimit rl;
		size_t k = 0; /* next named fd */

		/* poll() takes at most RLIMIT_NOFILE entries at once. */
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)batch)
			batch = MAX((int)rl.rlim_cur, 1);
		for (int base = 0; base < size; base += batch) {
			unsigned m = (unsigned)MIN(size - base, batch);

			if (m > POLL_BATCH)
				m = POLL_BATCH;
			for (unsigned i = 0; i < m; i++)
				p[i] = (struct pollfd){ .fd = base + (int)i };
			if (poll(p, m, 0) < 0) {
				r = negative_errno();
				goto out;
			}
			for (unsigned i = 0; i < m; i++) {
				int fd = base + (int)i;
				bool open = !(p[i].revents & POLLNVAL), named = false;

				while (k < n.n && n.fds[k] < fd)
					k++;
				named = k < n.n && n.fds[k] == fd;
				if (named && !open && fd > 2) {
					log_error("the journal names fd %d, which is not open", fd);
					r = -EBADF;
					goto out;
				}
				if (named || !open)
					continue;
				if (is_our_connection(d, fd)) {
					struct ucred cred;
					socklen_t len = sizeof(cred);
					struct endpoint *ep;

					if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) ==
						    0 &&
					    (ep = conn_add(d, fd, cred.uid, cred.pid))) {
						journal_conn(d, ep);
						adopted++;
						continue;
					}
				}
				safe_close(fd);
				closed++;
			}
		}
	}
out:
	free(n.fds);
	*ret_closed = closed;
	*ret_adopted = adopted;
	return r;
}

struct reply_item {
	uint64_t key;
	const struct ext_reply *rp;
	size_t size;
};

struct reply_list {
	struct reply_item *items;
	size_t n, cap;
};

static int list_reply(uint64_t key, const void *data, size_t size, void *userdata)
{
	struct reply_list *l = userdata;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct reply_item *p = realloc(l->items, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->items = p;
		l->cap = cap;
	}
	l->items[l->n++] = (struct reply_item){ key, data, size };
	return 0;
}

static int cmp_reply(const void *a, const void *b)
{
	uint64_t x = ((const struct reply_item *)a)->key, y = ((const struct reply_item *)b)->key;

	return (x > y) - (x < y);
}

/* Replies a dead worker committed and had not sent: queued again, in order. */
static int requeue_replies(struct luod *d)
{
	struct reply_list l = {};
	int r = luo_journal_ext_foreach(d->journal, LUOD_EXT_REPLY, list_reply, &l);

	if (r < 0 || l.n == 0)
		goto out;
	qsort(l.items, l.n, sizeof(*l.items), cmp_reply);
	for (size_t i = 0; i < l.n; i++) {
		struct endpoint *ep;

		if (l.items[i].key & LUOD_REPLY_KEY_PRIVATE) {
			/* A request's own reply socket: sent now, then closed. */
			r = reply_socket_resend(
				d, (int)((l.items[i].key & ~LUOD_REPLY_KEY_PRIVATE) >> 32),
				l.items[i].key, l.items[i].rp, l.items[i].size);
			if (r < 0)
				goto out;
			continue;
		}
		ep = find_endpoint(d, (int)(l.items[i].key >> 32));
		if (!ep) {
			const uint8_t *tail;
			int n = ext_reply_fds(l.items[i].rp, l.items[i].size, &tail);

			/* Its connection is gone: so is the reply (held fds are the engine's). */
			if (!tail && n > 0)
				luod_close_later(d, l.items[i].rp->fd);
			for (int k = 0; tail && !ext_reply_held(l.items[i].rp) && k < n; k++)
				luod_close_later(d, ext_reply_fd_at(tail, (size_t)k));
			journal_check(
				d, luo_journal_ext_del(d->journal, LUOD_EXT_REPLY, l.items[i].key));
			continue;
		}
		r = endpoint_requeue(d, ep, l.items[i].key, l.items[i].rp, l.items[i].size);
		if (r < 0)
			goto out;
	}
out:
	free(l.items);
	return r;
}

struct request_list {
	int fds[4096];
	size_t n;
};

static int list_request(uint64_t key, const void *data, size_t size, void *userdata)
{
	struct request_list *l = userdata;

	if (l->n < ELEMENTSOF(l->fds))
		l->fds[l->n++] = (int)key;
	return 0;
}

static int finish_requests(struct luod *d)
{
	struct request_list *l = calloc(1, sizeof(*l));
	int r;

	if (!l)
		return -ENOMEM;
	r = luo_journal_ext_foreach(d->journal, LUOD_EXT_REQUEST, list_request, l);
	for (size_t i = 0; r >= 0 && i < l->n; i++)
		request_resume(d, l->fds[i]);
	free(l);
	return r;
}

static void set_process_name(struct luod *d, const char *name)
{
	(void)prctl(PR_SET_NAME, name);
	/* ps and pgrep -f show the argument area: write the name there too. */
	if (d->argv_area && d->argv_area_size > 1) {
		memset(d->argv_area, 0, d->argv_area_size);
		snprintf(d->argv_area, d->argv_area_size, "%s", name);
	}
}

/* Logs every session SIGTERM drops (a reboot without kexec). */
static void log_dropped(struct luod *d)
{
	size_t n = 0;

	for (int kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING; kind++)
		for (luo_session *s = luo_engine_first_session(d->engine, kind); s;
		     s = luo_session_next(s), n++)
			log_warning("shutdown: dropping %s session \"%s\" of uid %u with %zu files",
				    luo_session_kind_name(kind), luo_session_name(s),
				    (unsigned)luo_session_uid(s), luo_session_n_files(s));
	log_info("shut down: %zu sessions dropped", n);
}

int worker_main(struct luod *d)
{
	uint64_t t0 = now_usec(CLOCK_MONOTONIC);
	struct luo_journal_stats stats = {};
	size_t closed = 0, adopted = 0;
	char c = 'R';
	int r;

	set_process_name(d, "luod: worker");
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != d->keeper_pid)
		return LUOD_EXIT_FAILURE; /* the keeper died before we got here */
	/* The keeper keeps itself from the OOM killer where it may; the worker,
	 * which holds the memory, is the one to go. */
	luod_set_oom_score_adj("0");
	r = luo_journal_open(d->journal_fd, &d->journal);
	/* Not before the journal is open: a point's counts are in its owner area. */
	if (r >= 0)
		fault_point(d, "worker-start");
	/* A test build's stand-in for a new binary that cannot read the journal. */
	if (r >= 0 && luod_keeper_area(d)->update_binary[0] && !d->rolled_back &&
	    fault_point(d, "update-recover-refuse"))
		r = -EPROTONOSUPPORT;
	if (r >= 0)
		r = luo_journal_recover(d->journal, d->engine, 0, &stats);
	if (r < 0) {
		log_error("cannot recover the journal: %s", strerror(-r));
		return LUOD_WORKER_EXIT_RECOVERY;
	}
	fault_point(d, "recover-replayed");
	r = luo_journal_ext_foreach(d->journal, LUOD_EXT_CONN, rebuild_conn, d);
	if (r >= 0)
		r = luo_journal_ext_foreach(d->journal, LUOD_EXT_SESSION, rebuild_session, d);
	if (r >= 0)
		r = session_info_recover(d);
	if (r >= 0)
		r = reconcile(d, &closed, &adopted);
	if (r < 0) {
		log_error("cannot recover the daemon's state: %s", strerror(-r));
		return LUOD_WORKER_EXIT_RECOVERY;
	}
	luo_journal_attach(d->journal, d->engine);
	/* A luod started afresh takes in what a kexec carried for it, once. */
	struct keeper_area *ka = luod_keeper_area(d);
	if (d->kexec_restore && ka && !ka->kexec_checked) {
		(void)kexec_restore(d);
		ka->kexec_checked = 1;
	}
	r = uid_usage_recount(d);
	if (r >= 0)
		r = batch_recover(d);
	if (r >= 0)
		r = server_arm(d);
	if (r < 0) {
		log_error("cannot set up the event loop: %s", strerror(-r));
		return LUOD_EXIT_FAILURE;
	}
	batch_watch_all(d);
	fault_point(d, "recover-armed");
	d->t_recovered_usec = now_usec(CLOCK_MONOTONIC);
	/* An update's new image recovered: the previous binary, kept for a
	 * rollback, goes before anyone is answered (the keeper forgets it when
	 * this worker says it serves; nothing opens an fd in between). */
	if (d->previous_exe_fd >= 0)
		d->previous_exe_fd = safe_close(d->previous_exe_fd);
	r = requeue_replies(d);
	if (r >= 0)
		r = finish_requests(d);
	if (r >= 0)
		r = liveupdate_resume(d, t0);
	if (r < 0) {
		log_error("cannot finish what the previous worker left: %s", strerror(-r));
		return LUOD_EXIT_FAILURE;
	}
	journal_commit(d);
	if (stats.seq > 0 || closed || adopted)
		log_info("recovered %zu sessions, %zu files, %zu connections from the journal "
			 "(%" PRIu64 " records, %" PRIu64 " us); closed %zu stray fds, adopted %zu "
			 "connections",
			 luod_n_sessions(d), luo_engine_n_files(d->engine), d->conns.count,
			 stats.n_records, now_usec(CLOCK_MONOTONIC) - t0, closed, adopted);
	(void)!write(d->ready_fd, &c, 1);

	r = server_run(d);
	if (r < 0) {
		log_error("event loop failed: %s", strerror(-r));
		return LUOD_EXIT_FAILURE;
	}
	if (d->update_exec)
		return LUOD_WORKER_EXIT_UPDATE;
	log_dropped(d);
	return LUOD_WORKER_EXIT_SHUTDOWN;
}

/* ---- compaction ---- */

/*
 * The log may grow to this, or to the snapshot's size, before it is
 * compacted: a successor replays at most about as much as it decodes, while
 * the cost of compacting stays proportional to what was logged.  That cost is
 * more than the child's encode: after the fork() every page the worker
 * writes faults once for its copy (5 us a page on a virtual machine), so
 * compacting at a quarter of the snapshot, as luod once did, cost a batch of
 * 15,000 files 1.7 us per file in faults alone (docs/performance.md).  An
 * update compacts first whatever the log's size (a log smaller than
 * COMPACT_UPDATE_MIN is not worth it), so that the new image replays almost
 * nothing in the blackout.
 */
#define COMPACT_MIN_LOG (UINT64_C(1) << 20)
#define COMPACT_UPDATE_MIN (UINT64_C(16) << 10)

int compact_start(struct luod *d, bool force)
{
	luo_journal *j = d->journal;
	uint64_t log, snap, seq;
	int fd, pidfd;
	pid_t pid, parent;

	if (!j || d->compact_pid > 0 || luo_journal_staged(j) != 0)
		return 0;
	log = luo_journal_log_size(j);
	snap = luo_journal_snapshot_size(j);
	if (log < (force ? COMPACT_UPDATE_MIN : MAX(COMPACT_MIN_LOG, snap)))
		return 0;
	fd = memfd_create("luod-journal", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	seq = luo_journal_seq(j);
	/*
	 * The snapshot is written by a child, from its copy of this worker's
	 * memory as it is now (seq): requests go on meanwhile, and the records
	 * they add are carried over when the result is taken in.
	 */
	/*
	 * fork() with the fd table shared, not copied: a copy would hold a
	 * reference to every socket luod has (a session socket's client end on
	 * its way out, say, whose session would then not see its client close
	 * it) until the child is done.  The child touches no fd but the new
	 * journal's.
	 */
	fflush(NULL);
	parent = getpid();
	pid = (pid_t)syscall(SYS_clone, CLONE_FILES | SIGCHLD, NULL, NULL, NULL, NULL);
	if (pid == 0) {
		/*
		 * The child writes through an fd number of the table it shares.
		 * Should the worker die, its successor closes that number as a
		 * stray and may give it to a file it holds (a client's memfd): a
		 * child still writing would then truncate and overwrite that file.
		 * So it dies with the worker, and does not start without one.
		 */
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		fault_point(d, "compact-child");
		_exit(luo_journal_write_snapshot(j, fd, seq) < 0 ? 1 : 0);
	}
	if (pid < 0) {
		safe_close(fd);
		return 0;
	}
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0 ||
	    epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, pidfd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &d->compact_ep }) < 0) {
		safe_close(pidfd);
		(void)waitpid(pid, NULL, 0);
		safe_close(fd);
		return 0;
	}
	d->compact_ep.type = EP_COMPACT;
	d->compact_ep.fd = pidfd;
	d->compact_pid = pid;
	d->compact_fd = fd;
	log_debug("compacting the journal (%" PRIu64 " bytes of log, snapshot %" PRIu64 ")", log,
		  snap);
	return 1;
}

void compact_maybe(struct luod *d)
{
	(void)compact_start(d, false);
}

void compact_done(struct luod *d)
{
	int status = 0, r;

	if (d->compact_pid <= 0)
		return;
	if (waitpid(d->compact_pid, &status, WNOHANG) != d->compact_pid)
		return;
	(void)epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, d->compact_ep.fd, NULL);
	d->compact_ep.fd = safe_close(d->compact_ep.fd);
	d->compact_pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_warning("journal compaction failed");
		d->compact_fd = safe_close(d->compact_fd);
		liveupdate_compacted(d);
		return;
	}
	fault_point(d, "compact-switch");
	r = luo_journal_switch(d->journal, d->compact_fd);
	d->compact_fd = -EBADF;
	if (r < 0)
		log_warning("cannot take in the compacted journal: %s", strerror(-r));
	else
		log_debug("journal compacted: snapshot %" PRIu64 " bytes, log %" PRIu64 " bytes",
			  luo_journal_snapshot_size(d->journal), luo_journal_log_size(d->journal));
	liveupdate_compacted(d);
}

#ifdef LUOD_FAULT_INJECTION
/*
 * $LUOD_FAULT: a comma-separated list of POINT[@SKIP][:TIMES[:ACTION]]: the
 * worker dies at POINT after passing it SKIP times (0 by default), TIMES
 * times over luod's life (1 by default), by ACTION: kill (SIGKILL, the
 * default), segv or abort; or, with ACTION refuse, the point returns true
 * (at "update-recover-refuse": the binary an update started refuses the
 * journal); with ACTION sleep, the process sleeps 3 s and goes on (at
 * "compact-child": a compaction child that is slow to write).  The counts live in the keeper's area, so that they hold across
 * workers and across the keeper's execve().
 */
bool fault_point(struct luod *d, const char *point)
{
	struct keeper_area *ka = luod_keeper_area(d);
	const char *p = d->fault;
	size_t plen = strlen(point);

	for (unsigned idx = 0; p && *p && ka && idx < ELEMENTSOF(ka->fault_fired); idx++) {
		const char *end = strchrnul(p, ',');
		size_t nlen = strcspn(p, "@:,");
		unsigned times = 1, skip = 0;
		char action[8] = "kill", buf[48];
		size_t l = MIN((size_t)(end - p - nlen), sizeof(buf) - 1);

		memcpy(buf, p + nlen, l);
		buf[l] = 0;
		if (buf[0] == '@')
			skip = (unsigned)strtoul(buf + 1, NULL, 10);
		{
			const char *c = strchr(buf, ':');
			if (c)
				(void)sscanf(c + 1, "%u:%7s", &times, action);
		}
		if (nlen == plen && memcmp(p, point, plen) == 0 && ka->fault_hits[idx]++ >= skip &&
		    ka->fault_fired[idx] < times) {
			ka->fault_fired[idx]++;
			log_warning("fault injection: %s at %s", action, point);
			if (strcmp(action, "refuse") == 0)
				return true;
			if (strcmp(action, "sleep") == 0) {
				(void)sleep(3);
				return false;
			}
			if (strcmp(action, "segv") == 0)
				raise(SIGSEGV);
			else if (strcmp(action, "abort") == 0)
				abort();
			kill(getpid(), SIGKILL);
		}
		p = *end ? end + 1 : end;
	}
	return false;
}
#endif
