/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's event loop, connections and session sockets
 *
 * A single-threaded epoll loop over level-triggered fds: the listening
 * socket, a signalfd for SIGTERM/SIGINT, every client connection and luod's
 * end of every session socketpair.  Everything is non-blocking; requests are
 * handled one at a time, to completion, in the order each socket delivers
 * them.
 *
 * Connection lifecycle: accept4() -> SO_PEERCRED (uid, pid) -> per-uid
 * connection limit (over it: closed at once) -> requests -> hang-up: the
 * /dev/liveupdate slot it held is freed.
 *
 * Session socket lifecycle: created by CREATE/RETRIEVE (commands.c) ->
 * requests -> hang-up, which the kernel reports once the last client fd is
 * closed: a live handle is released in the engine (abort, implicit finish or
 * handover-on-close), a stale one (previous generation) is just dropped.
 *
 * Hang-ups: wherever one is found (the main loop reading end of stream, or
 * server_reap_hangups() reading a second epoll set that holds every endpoint
 * with EPOLLRDHUP alone, whole), it is queued, and one loop, hangups_run(),
 * takes the queue in; nothing it calls takes in another hang-up, it only
 * queues it.  A handover-on-close session waiting for its name is retried
 * from that loop when an incoming session goes away.  So any number of
 * closes costs a constant stack depth, and every close made before a request
 * is seen before that request is answered, however many endpoints are ready.
 *
 * Replies go out with MSG_DONTWAIT; what the socket cannot take waits in the
 * endpoint's queue and the endpoint's requests are not read until it drains,
 * so a peer that never reads makes luod hold at most one request's replies.
 *
 * Fds are luod's capacity: RLIMIT_NOFILE less LUOD_OWN_FDS.  Each non-root
 * uid may hold a share of it and root keeps a reserve (capacity_check()); at
 * the real limit a spare fd lets luod accept a connection only to refuse it
 * with EMFILE.
 */
#include <assert.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <linux/sockios.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "basic/socket-util.h"
#include "luod.h"
#include "protocol/protocol.h"

static bool uid_eq(const struct hash_node *n, const void *key)
{
	return container_of(n, struct uid_usage, node)->uid == *(const uint32_t *)key;
}

struct uid_usage *uid_usage_get(struct luod *d, uint32_t uid)
{
	uint64_t h = hash_u64(uid);
	struct hash_node *n = hashmap_find(&d->uids, h, uid_eq, &uid);
	struct uid_usage *u;

	if (n)
		return container_of(n, struct uid_usage, node);
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->uid = uid;
	if (hashmap_insert(&d->uids, &u->node, h) < 0) {
		free(u);
		return NULL;
	}
	return u;
}

size_t luod_n_sessions(const struct luod *d)
{
	return luo_engine_n_sessions(d->engine, LUO_SESSION_OUTGOING) +
	       luo_engine_n_sessions(d->engine, LUO_SESSION_INCOMING);
}

void uid_usage_charge(struct luod *d, uint32_t uid, size_t sessions_before, size_t files_before)
{
	struct uid_usage *u = uid_usage_get(d, uid);
	size_t sessions = luod_n_sessions(d), files = luo_engine_n_files(d->engine);

	if (!u)
		return;
	if (sessions >= sessions_before)
		u->n_sessions += sessions - sessions_before;
	else
		u->n_sessions -= MIN(u->n_sessions, sessions_before - sessions);
	if (files >= files_before)
		u->n_files += files - files_before;
	else
		u->n_files -= MIN(u->n_files, files_before - files);
}

uint64_t limit_sessions(const struct luod *d, uint32_t uid)
{
	if (d->limits.max_sessions)
		return d->limits.max_sessions;
	return uid == 0 ? LUOD_ROOT_MAX_SESSIONS : LUOD_USER_MAX_SESSIONS;
}

uint64_t limit_files(const struct luod *d, uint32_t uid)
{
	if (d->limits.max_files)
		return d->limits.max_files;
	return uid == 0 ? LUOD_ROOT_MAX_FILES : LUOD_USER_MAX_FILES;
}

/*
 * The limit may be changed from outside (prlimit): the capacity follows it.
 * The limit that counts is luod's, the keeper's (its pid is the one people
 * see); a worker takes it on as its own, since the kernel checks each
 * process's limit against the fd table both share.
 */
void capacity_refresh(struct luod *d)
{
	struct rlimit rl;

	if (d->keeper_pid > 0 && d->keeper_pid != getpid() &&
	    prlimit(d->keeper_pid, RLIMIT_NOFILE, NULL, &rl) == 0)
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		d->fd_capacity = rl.rlim_cur > LUOD_OWN_FDS ? rl.rlim_cur - LUOD_OWN_FDS : 1;
}

uint64_t capacity_root_reserve(const struct luod *d)
{
	uint64_t r = d->limits.root_reserve ? d->limits.root_reserve
					    : d->fd_capacity * LUOD_ROOT_RESERVE_PERCENT / 100;

	if (d->limits.root_reserve == UINT64_MAX)
		return 0; /* --root-reserve=0 */
	return MIN(r, d->fd_capacity);
}

/* What the non-root uids may hold together. */
static uint64_t capacity_pool(const struct luod *d)
{
	return d->fd_capacity - capacity_root_reserve(d);
}

/* Root, and the uid luod runs as (a user's own luod serves that user first). */
static bool uid_privileged(uint32_t uid)
{
	return uid == 0 || uid == (uint32_t)geteuid();
}

uint64_t capacity_uid_share(const struct luod *d, uint32_t uid)
{
	uint64_t pct = d->limits.user_share ? d->limits.user_share : LUOD_USER_SHARE_PERCENT;

	if (uid_privileged(uid))
		return d->fd_capacity;
	return MAX(capacity_pool(d) * pct / 100, (uint64_t)1);
}

static uint64_t usage_fds(const struct uid_usage *u)
{
	/* A batch's staged files are fds luod holds for the uid as much as its
	 * preserved ones are. */
	return u->n_sessions + u->n_files + u->n_connections + u->n_staged;
}

uint64_t uid_fds(struct luod *d, uint32_t uid)
{
	struct uid_usage *u = uid_usage_get(d, uid);

	return u ? usage_fds(u) : 0;
}

int capacity_check(struct luod *d, uint32_t uid, uint64_t n)
{
	uint64_t users = 0;

	/* Root is bounded by the real fds alone (EMFILE); the reserve is its own. */
	if (uid_privileged(uid))
		return 0;
	capacity_refresh(d);
	if (uid_fds(d, uid) + n > capacity_uid_share(d, uid))
		return -ENOSPC;
	/* O(uids that ever connected): only non-root requests that allocate pay it. */
	for (size_t b = 0; b < d->uids.n_buckets; b++)
		for (struct hash_node *h = d->uids.buckets[b]; h; h = h->next) {
			struct uid_usage *u = container_of(h, struct uid_usage, node);

			if (!uid_privileged(u->uid))
				users += usage_fds(u);
		}
	if (users + n > capacity_pool(d))
		return -ENOSPC;
	return 0;
}

static uint64_t limit_connections(const struct luod *d)
{
	return d->limits.max_connections ? d->limits.max_connections : LUOD_MAX_CONNECTIONS;
}

int uid_usage_recount(struct luod *d)
{
	/* Only after a reboot or restore: O(sessions) is the price of an update. */
	for (size_t b = 0; b < d->uids.n_buckets; b++)
		for (struct hash_node *n = d->uids.buckets[b]; n; n = n->next) {
			struct uid_usage *u = container_of(n, struct uid_usage, node);
			u->n_sessions = u->n_files = 0;
		}
	for (int kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING; kind++)
		for (luo_session *s = luo_engine_first_session(d->engine, kind); s;
		     s = luo_session_next(s)) {
			struct uid_usage *u = uid_usage_get(d, luo_session_uid(s));

			if (!u)
				return -ENOMEM;
			u->n_sessions++;
			u->n_files += luo_session_n_files(s);
		}
	return 0;
}

static bool ino_eq(const struct hash_node *n, const void *key)
{
	return container_of(n, struct endpoint, by_ino)->ino == *(const uint64_t *)key;
}

/* Queued reply bytes, in total and for the endpoint's uid. */
static void queued_charge(struct luod *d, const struct endpoint *ep, int64_t n)
{
	struct uid_usage *u = uid_usage_get(d, ep->uid);

	d->queued_bytes += (uint64_t)n;
	if (u)
		u->queued_bytes += (uint64_t)n;
}

bool queue_budget_allows(struct luod *d, uint32_t uid, uint64_t n)
{
	uint64_t budget = d->limits.queue_budget ? d->limits.queue_budget : LUOD_QUEUE_BUDGET;
	struct uid_usage *u = uid_usage_get(d, uid), *root = uid_usage_get(d, 0);
	uint64_t mine = u ? u->queued_bytes : 0, roots = root ? root->queued_bytes : 0;

	if (uid == 0)
		return mine + n <= budget;
	/* A quarter for each uid, and three quarters for all of them: root's
	 * quarter is always there. */
	return mine + n <= budget / 4 && (d->queued_bytes - roots) + n <= budget - budget / 4;
}

struct endpoint *session_ep_find_by_fd(struct luod *d, int fd)
{
	LIST_FOREACH (i, &d->sessions) {
		struct endpoint *ep = list_entry(i, struct endpoint, node);
		if (ep->fd == fd)
			return ep;
	}
	return NULL;
}

void luod_close_later_many(struct luod *d, const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		luod_close_later(d, fds[i]);
}

struct endpoint *session_ep_find_by_ino(struct luod *d, uint64_t ino)
{
	struct hash_node *n = hashmap_find(&d->by_ino, hash_u64(ino), ino_eq, &ino);

	return n ? container_of(n, struct endpoint, by_ino) : NULL;
}

static int endpoint_watch(struct luod *d, struct endpoint *ep, uint32_t events, bool add)
{
	struct epoll_event ev = { .events = events, .data.ptr = ep };

	if (d->epoll_fd < 0)
		return 0; /* restoring: server_arm() adds everything */
	if (!add && ep->events == events)
		return 0;
	if (epoll_ctl(d->epoll_fd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, ep->fd, &ev) < 0)
		return negative_errno();
	ep->events = events;
	if (add && (ep->type == EP_CONN || ep->type == EP_SESSION)) {
		/* Only EPOLLRDHUP (and the implied EPOLLHUP): this set reports hang-ups alone. */
		struct epoll_event hev = { .events = EPOLLRDHUP, .data.ptr = ep };

		if (epoll_ctl(d->hup_fd, EPOLL_CTL_ADD, ep->fd, &hev) < 0) {
			int r = negative_errno();

			(void)epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, ep->fd, NULL);
			return r;
		}
	}
	return 0;
}

/* Takes an endpoint out of both epoll sets (it is closed, or waits out of the loop). */
static void endpoint_unwatch(struct luod *d, struct endpoint *ep)
{
	if (d->epoll_fd >= 0)
		(void)epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, ep->fd, NULL);
	if (d->hup_fd >= 0)
		(void)epoll_ctl(d->hup_fd, EPOLL_CTL_DEL, ep->fd, NULL);
}

static uint32_t endpoint_wanted_events(const struct endpoint *ep)
{
	/* While replies wait, stop reading requests: one request's output at a time. */
	return ep->out_head ? EPOLLOUT : (EPOLLIN | EPOLLRDHUP);
}

struct endpoint *conn_add(struct luod *d, int fd, uint32_t uid, pid_t pid)
{
	struct uid_usage *u = uid_usage_get(d, uid);
	struct endpoint *ep;

	if (!u) {
		safe_close(fd);
		return NULL;
	}
	ep = calloc(1, sizeof(*ep));
	if (!ep) {
		safe_close(fd);
		return NULL;
	}
	ep->type = EP_CONN;
	ep->fd = fd;
	ep->uid = uid;
	ep->pid = pid;
	if (endpoint_watch(d, ep, EPOLLIN | EPOLLRDHUP, true) < 0) {
		safe_close(fd);
		free(ep);
		return NULL;
	}
	list_append(&d->conns, &ep->node);
	u->n_connections++;
	return ep;
}

struct endpoint *session_ep_add(struct luod *d, int fd, uint64_t handle, uint64_t ino, uint32_t uid)
{
	struct endpoint *ep = calloc(1, sizeof(*ep));

	if (!ep) {
		safe_close(fd);
		return NULL;
	}
	ep->type = EP_SESSION;
	ep->fd = fd;
	ep->uid = uid;
	ep->handle = handle;
	ep->ino = ino;
	if (hashmap_insert(&d->by_ino, &ep->by_ino, hash_u64(ino)) < 0) {
		safe_close(fd);
		free(ep);
		return NULL;
	}
	if (endpoint_watch(d, ep, EPOLLIN | EPOLLRDHUP, true) < 0) {
		hashmap_remove(&d->by_ino, &ep->by_ino);
		safe_close(fd);
		free(ep);
		return NULL;
	}
	list_append(&d->sessions, &ep->node);
	return ep;
}

/* Closes (once the journal no longer names them) the fds a reply carried. */
static void outmsg_free(struct luod *d, struct outmsg *m)
{
	if (!ext_reply_held((const struct ext_reply *)m->data))
		luod_close_later_many(d, m->fds, m->n_fds);
	free(m->fds);
	m->fds = NULL;
	m->n_fds = 0;
}

int ext_reply_fds(const struct ext_reply *rp, size_t size, const uint8_t **ret_tail)
{
	uint32_t n;

	*ret_tail = NULL;
	if (size < sizeof(*rp) || size - sizeof(*rp) < rp->len)
		return -EBADMSG;
	if (rp->fd != EXT_REPLY_FDS && rp->fd != EXT_REPLY_FDS_HELD) {
		if (size - sizeof(*rp) != rp->len)
			return -EBADMSG;
		return rp->fd >= 0 ? 1 : 0;
	}
	size -= sizeof(*rp) + rp->len;
	if (size < sizeof(n))
		return -EBADMSG;
	memcpy(&n, (const uint8_t *)(rp + 1) + rp->len, sizeof(n));
	if (n > LUOD_RECV_MAX_FDS || size != sizeof(n) + n * sizeof(int32_t))
		return -EBADMSG;
	*ret_tail = (const uint8_t *)(rp + 1) + rp->len + sizeof(n);
	return (int)n;
}

int ext_reply_fd_at(const uint8_t *tail, size_t i)
{
	int32_t fd;

	memcpy(&fd, tail + i * sizeof(fd), sizeof(fd));
	return fd;
}

void endpoint_drop_queue(struct luod *d, struct endpoint *ep)
{
	while (ep->out_head) {
		struct outmsg *m = ep->out_head;

		ep->out_head = m->next;
		if (d->journal)
			journal_check(d, luo_journal_ext_del(d->journal, LUOD_EXT_REPLY, m->key));
		outmsg_free(d, m);
		queued_charge(d, ep, -(int64_t)m->len);
		free(m);
	}
	ep->out_tail = NULL;
	ep->out_bytes = 0;
}

static void endpoint_free(struct luod *d, struct endpoint *ep)
{
	/* A client that dies midway through a batch leaves nothing of it. */
	batch_drop_endpoint(d, ep);
	endpoint_drop_queue(d, ep);
	endpoint_unwatch(d, ep);
	if (ep->hangup_queued) {
		list_remove(&d->hangups, &ep->hangup_node);
		ep->hangup_queued = false;
	}
	if (ep->type == EP_CONN) {
		struct uid_usage *u = uid_usage_get(d, ep->uid);

		if (u && u->n_connections > 0)
			u->n_connections--;
		if (d->device_holder == ep)
			d->device_holder = NULL;
		list_remove(&d->conns, &ep->node);
	} else if (ep->type == EP_SESSION) {
		hashmap_remove(&d->by_ino, &ep->by_ino);
		list_remove(&d->sessions, &ep->node);
		if (ep->deferred)
			list_remove(&d->deferred, &ep->deferred_node);
	}
	journal_endpoint_gone(d, ep);
	/* Closed once the journal no longer names it. */
	luod_close_later(d, ep->fd);
	ep->fd = -EBADF;
	if (d->check.requester == ep)
		d->check.requester = NULL;
	/* Later events of the current batch may still point here. */
	ep->dead = true;
	list_append(&d->graveyard, &ep->node);
}

static void bury_dead(struct luod *d)
{
	LIST_FOREACH_SAFE (i, &d->graveyard) {
		list_remove(&d->graveyard, i);
		free(list_entry(i, struct endpoint, node));
	}
}

/* Queues a hang-up for hangups_run(); the only way a hang-up is taken in. */
static void hangup_queue(struct luod *d, struct endpoint *ep)
{
	if (ep->dead || ep->hangup_queued)
		return;
	ep->hangup_queued = true;
	list_append(&d->hangups, &ep->hangup_node);
}

/* Queues the deferred handover-on-close sessions whose name is free now. */
static void retry_deferred(struct luod *d)
{
	LIST_FOREACH_SAFE (i, &d->deferred) {
		struct endpoint *ep = list_entry(i, struct endpoint, deferred_node);
		luo_session *s = luo_engine_session_by_handle(d->engine, ep->handle);

		if (s && luo_engine_find_session_of(d->engine, LUO_SESSION_INCOMING,
						    luo_session_uid(s), luo_session_name(s)))
			continue;
		list_remove(&d->deferred, i);
		ep->deferred = false;
		hangup_queue(d, ep);
	}
}

/*
 * The last client fd of a session closed: the kernel's close rule.  Called
 * by hangups_run() only; takes in no other hang-up itself (what it frees up
 * for a deferred session is queued, and the same loop gets to it).
 */
static void session_hangup(struct luod *d, struct endpoint *ep)
{
	luo_session *s = ep->handle ? luo_engine_session_by_handle(d->engine, ep->handle) : NULL;
	bool incoming = s && luo_session_kind(s) == LUO_SESSION_INCOMING;

	/*
	 * A handover-on-close cannot happen while an incoming session of the same
	 * name exists (the next program would not know which to take).  A program
	 * that died typically held both: the retrieved session it had not closed
	 * and the one it was building, whose fds close one after the other.  The
	 * new state must not be lost for that: the session waits, out of the
	 * event loop, until the incoming one of its name is gone, and is handed
	 * over then.  (A reboot hands it over in any case.)
	 */
	if (s && !incoming && (luo_session_flags(s) & LUO_SESSION_FLAG_HANDOVER_ON_CLOSE) &&
	    luo_engine_find_session_of(d->engine, LUO_SESSION_INCOMING, luo_session_uid(s),
				       luo_session_name(s))) {
		if (!ep->deferred) {
			log_info("session \"%s\" will be handed over once the incoming session of "
				 "its name is closed",
				 luo_session_name(s));
			endpoint_unwatch(d, ep);
			ep->deferred = true;
			list_append(&d->deferred, &ep->deferred_node);
			journal_session_ep(d, ep);
		}
		return;
	}
	if (ep->deferred) {
		list_remove(&d->deferred, &ep->deferred_node);
		ep->deferred = false;
	}
	if (s) {
		uint32_t uid = luo_session_uid(s);
		size_t sessions = luod_n_sessions(d), files = luo_engine_n_files(d->engine);
		char name[LUO_NAME_FIELD];

		bool outgoing = luo_session_kind(s) == LUO_SESSION_OUTGOING;

		snprintf(name, sizeof(name), "%s", luo_session_name(s));
		log_debug("session \"%s\" closed by its last holder", name);
		luo_session_release(s);
		journal_session_moved(d, uid, name, !incoming, incoming);
		/* A handover-on-close session is incoming now: listings say since when. */
		if (outgoing &&
		    luo_engine_find_session_of(d->engine, LUO_SESSION_INCOMING, uid, name))
			session_info_handed_over(d, uid, name);
		/* The engine decides whether the session ends, moves or sticks: charge the
		 * owner what actually went away. */
		uid_usage_charge(d, uid, sessions, files);
	}
	endpoint_free(d, ep);
	if (incoming && !list_empty(&d->deferred))
		retry_deferred(d);
}

/*
 * The one loop that takes hang-ups in, first queued first.  Not re-entrant
 * by construction: nothing it calls takes in a hang-up, it only queues one,
 * so the depth is the same for one hang-up or a million.
 */
static int hangups_run(struct luod *d)
{
	/* Nothing of a request under way is staged yet: the hang-ups can be
	 * committed at once, which closes their fds (a request that found the fd
	 * table full retries with them given back). */
	bool commit = !d->journal || luo_journal_staged(d->journal) == 0;
	int n = 0;

	if (d->in_hangups)
		return 0; /* the running loop gets to what was queued */
	d->in_hangups = true;
	while (!list_empty(&d->hangups)) {
		struct list_node *i = d->hangups.node.next;
		struct endpoint *ep = list_entry(i, struct endpoint, hangup_node);

		list_remove(&d->hangups, i);
		ep->hangup_queued = false;
		if (ep->type == EP_SESSION)
			session_hangup(d, ep);
		else
			endpoint_free(d, ep);
		n++;
	}
	d->in_hangups = false;
	if (n && commit)
		journal_commit(d);
	return n;
}

int server_drop_session(struct luod *d, luo_session *s)
{
	uint32_t uid = luo_session_uid(s);
	uint64_t handle = luo_session_handle(s);
	size_t sessions = luod_n_sessions(d), files = luo_engine_n_files(d->engine);
	bool incoming = luo_session_kind(s) == LUO_SESSION_INCOMING;
	struct endpoint *waiting = NULL;

	if (handle) {
		/* A handle nobody holds any more: a handover-on-close session waiting
		 * for its name.  Any other is some program's open session fd. */
		LIST_FOREACH (i, &d->deferred) {
			struct endpoint *ep = list_entry(i, struct endpoint, deferred_node);

			if (ep->handle == handle)
				waiting = ep;
		}
		if (!waiting)
			return -EBUSY;
	}
	char name[LUO_NAME_FIELD];

	snprintf(name, sizeof(name), "%s", luo_session_name(s));
	log_info("session \"%s\" (%s) dropped", name, incoming ? "incoming" : "outgoing");
	luo_engine_drop_session(d->engine, s);
	journal_session_moved(d, uid, name, !incoming, incoming);
	uid_usage_charge(d, uid, sessions, files);
	if (waiting) {
		list_remove(&d->deferred, &waiting->deferred_node);
		waiting->deferred = false;
		endpoint_free(d, waiting);
	}
	/* Its name is free: a handover-on-close session waiting for it goes over now. */
	if (incoming && !list_empty(&d->deferred)) {
		retry_deferred(d);
		(void)hangups_run(d);
	}
	return 0;
}

int server_reap_hangups(struct luod *d, struct endpoint *current)
{
	/* Every endpoint in the hang-up set fits in one answer: none is left for later. */
	size_t want = d->conns.count + d->sessions.count + 1;
	int n;

	if (d->in_hangups || d->hup_fd < 0)
		return 0;
	if (want > d->n_hup_events) {
		size_t size = MAX(want, 2 * d->n_hup_events);
		struct epoll_event *e = reallocarray(d->hup_events, size, sizeof(*e));

		if (!e) {
			log_warning("out of memory: hang-ups taken in later");
			return 0;
		}
		d->hup_events = e;
		d->n_hup_events = size;
	}
	do
		n = epoll_wait(d->hup_fd, d->hup_events, (int)MIN(want, (size_t)INT_MAX / 16), 0);
	while (n < 0 && errno == EINTR);
	for (int i = 0; i < n; i++) {
		struct endpoint *ep = d->hup_events[i].data.ptr;
		int queued = 0;

		if (ep == current || ep->dead || ep->deferred)
			continue;
		/* A request sent before the close is served in order by the main loop. */
		if (ioctl(ep->fd, SIOCINQ, &queued) < 0 || queued > 0)
			continue;
		hangup_queue(d, ep);
	}
	return hangups_run(d);
}

static void endpoint_update_events(struct luod *d, struct endpoint *ep)
{
	if (ep->type == EP_REPLY)
		return; /* never watched: written once, right after the commit */
	if (endpoint_watch(d, ep, endpoint_wanted_events(ep), false) < 0)
		log_warning("epoll_ctl failed for fd %d: %m", ep->fd);
}

/* One message with its fds, never blocking; the count sent or -errno. */
static ssize_t send_reply(int sock, struct iovec *iov, size_t iovlen, const int *fds, size_t n_fds)
{
	return socket_send_message_flags(sock, iov, iovlen, fds, n_fds, MSG_DONTWAIT);
}

void endpoint_flush(struct luod *d, struct endpoint *ep)
{
	while (ep->out_head) {
		struct outmsg *m = ep->out_head;
		struct iovec iov = { .iov_base = m->data + sizeof(struct ext_reply),
				     .iov_len = m->len };
		ssize_t n = send_reply(ep->fd, &iov, 1, m->fds, m->n_fds);

		if (n == -EAGAIN)
			break;
		if (n < 0)
			log_debug("reply to fd %d dropped: %s", ep->fd, strerror((int)-n));
		/* Sent, or the peer is gone: either way this message is done. */
		ep->out_head = m->next;
		if (!ep->out_head)
			ep->out_tail = NULL;
		ep->out_bytes -= m->len;
		queued_charge(d, ep, -(int64_t)m->len);
		if (d->journal)
			journal_check(d, luo_journal_ext_del(d->journal, LUOD_EXT_REPLY, m->key));
		outmsg_free(d, m);
		free(m);
		if (n == -EPIPE || n == -ECONNRESET || n == -ENOTCONN) {
			endpoint_drop_queue(d, ep);
			break;
		}
	}
	if (!d->in_request)
		journal_commit(d);
	endpoint_update_events(d, ep);
}

static void endpoint_enqueue(struct luod *d, struct endpoint *ep, struct outmsg *m)
{
	m->next = NULL;
	if (ep->out_tail)
		ep->out_tail->next = m;
	else
		ep->out_head = m;
	ep->out_tail = m;
	ep->out_bytes += m->len;
	queued_charge(d, ep, (int64_t)m->len);
	/* A reply to another endpoint than the request's (sent after the
	 * request's commit): its socket's room wakes the loop, which sends it. */
	if (d->in_request && ep != d->request_ep)
		endpoint_update_events(d, ep);
}

/*
 * Every reply is committed to the journal before it leaves: one that a
 * worker dies before sending, its successor sends.  The message is kept as
 * the journal entry's bytes (struct ext_reply, the message, and for more
 * than one fd their numbers after it).
 */
static void reply_queue(struct luod *d, struct endpoint *ep, const struct luo_wire_reply *hdr,
			const void *payload, size_t len, const void *extra, size_t extra_len,
			const int *fds, size_t n_fds, bool held)
{
	size_t total = sizeof(*hdr) + len + extra_len;
	size_t tail = n_fds > 1 || held ? sizeof(uint32_t) + n_fds * sizeof(int32_t) : 0;
	struct outmsg *m;
	int *mfds = NULL;

	/* The request came with a reply socket of its own: its answer goes there. */
	if (d->in_request && ep == d->request_ep && d->request_reply_ep)
		ep = d->request_reply_ep;

	m = malloc(sizeof(*m) + sizeof(struct ext_reply) + total + tail);
	if (n_fds > 0)
		mfds = malloc(n_fds * sizeof(int));
	if (!m || (n_fds > 0 && !mfds)) {
		log_warning("out of memory for a reply: dropped");
		if (!held)
			luod_close_later_many(d, fds, n_fds);
		free(m);
		free(mfds);
		return;
	}
	if (n_fds > 0)
		memcpy(mfds, fds, n_fds * sizeof(int));
	m->fds = mfds;
	m->n_fds = n_fds;
	m->len = total;
	m->ext_len = sizeof(struct ext_reply) + total + tail;
	m->key = ((uint64_t)(uint32_t)ep->fd << 32) | ep->reply_seq++;
	if (ep->type == EP_REPLY)
		m->key |= LUOD_REPLY_KEY_PRIVATE;
	struct ext_reply *rp = (struct ext_reply *)m->data;
	rp->fd = held ? EXT_REPLY_FDS_HELD : n_fds > 1 ? EXT_REPLY_FDS : n_fds == 1 ? fds[0] : -1;
	rp->len = (uint32_t)total;
	uint8_t *msg = m->data + sizeof(*rp);
	memcpy(msg, hdr, sizeof(*hdr));
	if (len)
		memcpy(msg + sizeof(*hdr), payload, len);
	if (extra_len)
		memcpy(msg + sizeof(*hdr) + len, extra, extra_len);
	if (tail) {
		uint32_t n = (uint32_t)n_fds;

		memcpy(msg + total, &n, sizeof(n));
		for (size_t i = 0; i < n_fds; i++) {
			int32_t fd = fds[i];
			memcpy(msg + total + sizeof(n) + i * sizeof(fd), &fd, sizeof(fd));
		}
	}
	if (d->journal)
		journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_REPLY, m->key, m->data,
						     m->ext_len));
	endpoint_enqueue(d, ep, m);
	if (!d->in_request) {
		journal_commit(d);
		endpoint_flush(d, ep);
	}
}

void endpoint_reply(struct luod *d, struct endpoint *ep, uint32_t tag, int result, uint32_t flags,
		    const void *payload, size_t len, const void *extra, size_t extra_len, int fd)
{
	struct luo_wire_reply hdr = {
		.result = result,
		.tag = tag,
		.flags = flags,
		.size = (uint32_t)(len + extra_len),
	};

	reply_queue(d, ep, &hdr, payload, len, extra, extra_len, &fd, fd >= 0 ? 1 : 0, false);
}

static void reply_fds(struct luod *d, struct endpoint *ep, uint32_t tag, int result,
		      const void *payload, size_t len, const int *fds, size_t n_fds, bool held)
{
	struct luo_wire_reply hdr = {
		.result = result,
		.tag = tag,
		.size = (uint32_t)len,
	};

	reply_queue(d, ep, &hdr, payload, len, NULL, 0, fds, n_fds, held);
}

void endpoint_reply_fds(struct luod *d, struct endpoint *ep, uint32_t tag, int result,
			const void *payload, size_t len, const int *fds, size_t n_fds)
{
	reply_fds(d, ep, tag, result, payload, len, fds, n_fds, false);
}

bool endpoint_reply_private(const struct luod *d, const struct endpoint *ep)
{
	return d->in_request && ep == d->request_ep && d->request_reply_ep;
}

void endpoint_reply_fds_held(struct luod *d, struct endpoint *ep, uint32_t tag, int result,
			     const void *payload, size_t len, const int *fds, size_t n_fds)
{
	/* Anywhere else the reply could outlive the files. */
	assert(endpoint_reply_private(d, ep));
	reply_fds(d, ep, tag, result, payload, len, fds, n_fds, true);
}

int endpoint_requeue(struct luod *d, struct endpoint *ep, uint64_t key, const struct ext_reply *rp,
		     size_t size)
{
	const uint8_t *tail;
	int n = ext_reply_fds(rp, size, &tail);
	struct outmsg *m;

	if (n < 0)
		return n;
	m = malloc(sizeof(*m) + size);
	if (!m)
		return -ENOMEM;
	m->n_fds = (size_t)n;
	m->fds = n > 0 ? malloc((size_t)n * sizeof(int)) : NULL;
	if (n > 0 && !m->fds) {
		free(m);
		return -ENOMEM;
	}
	if (tail)
		for (int i = 0; i < n; i++)
			m->fds[i] = ext_reply_fd_at(tail, (size_t)i);
	else if (n == 1)
		m->fds[0] = rp->fd;
	m->len = rp->len;
	m->ext_len = size;
	m->key = key;
	memcpy(m->data, rp, size);
	if ((uint32_t)key >= ep->reply_seq)
		ep->reply_seq = (uint32_t)key + 1;
	endpoint_enqueue(d, ep, m);
	endpoint_update_events(d, ep);
	return 0;
}

void luod_block_signals(sigset_t *ret_mask)
{
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	(void)sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A closed terminal must not take every session with it. */
	signal(SIGHUP, SIG_IGN);
	if (ret_mask)
		*ret_mask = mask;
}

void luod_set_oom_score_adj(const char *value)
{
	_cleanup_close_ int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);

	if (fd >= 0)
		(void)!write(fd, value, strlen(value));
}

int luod_init(struct luod *d)
{
	int r;

	memset(d, 0, sizeof(*d));
	d->epoll_fd = d->signal_fd = d->reserve_fd = d->previous_exe_fd = d->hup_fd = -EBADF;
	d->listen_ep.type = EP_LISTEN;
	d->listen_ep.fd = -EBADF;
	d->signal_ep.type = EP_SIGNAL;
	d->signal_ep.fd = -EBADF;
	d->pending.conn_fd = -EBADF;
	d->check.ep.type = EP_CHECK;
	d->check.ep.fd = -EBADF;
	d->check.out_fd = -EBADF;
	list_init(&d->conns);
	list_init(&d->sessions);
	list_init(&d->graveyard);
	list_init(&d->deferred);
	list_init(&d->hangups);
	list_init(&d->batches);
	hashmap_init(&d->by_ino);
	hashmap_init(&d->uids);
	r = luo_engine_new(&d->engine);
	if (r < 0)
		return r;
	/* Held files go to every next image: born inheritable, never touched at an update. */
	luo_engine_set_inheritable_fds(d->engine, true);
	return luo_engine_add_default_handlers(d->engine);
}

void luod_done(struct luod *d)
{
	LIST_FOREACH_SAFE (i, &d->conns)
		endpoint_free(d, list_entry(i, struct endpoint, node));
	LIST_FOREACH_SAFE (i, &d->sessions)
		endpoint_free(d, list_entry(i, struct endpoint, node));
	bury_dead(d);
	for (size_t b = 0; b < d->uids.n_buckets; b++)
		for (struct hash_node *n = d->uids.buckets[b], *next; n; n = next) {
			next = n->next;
			free(container_of(n, struct uid_usage, node));
		}
	hashmap_done(&d->uids);
	hashmap_done(&d->by_ino);
	session_info_done(d);
	luo_engine_free(d->engine);
	d->engine = NULL;
	d->listen_ep.fd = safe_close(d->listen_ep.fd);
	d->signal_ep.fd = safe_close(d->signal_ep.fd);
	d->epoll_fd = safe_close(d->epoll_fd);
	d->hup_fd = safe_close(d->hup_fd);
	free(d->hup_events);
	d->hup_events = NULL;
	d->n_hup_events = 0;
	d->reserve_fd = safe_close(d->reserve_fd);
	d->previous_exe_fd = safe_close(d->previous_exe_fd);
}

static int make_parent_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return negative_errno();
		*p = '/';
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return negative_errno();
	return 0;
}

/* The first fd a service manager passes (sd_listen_fds(3)). */
#define LISTEN_FDS_START 3

/*
 * The socket a service manager made for luod (LISTEN_PID/LISTEN_FDS, the
 * protocol of sd_listen_fds(3)): 0 if there is none for this process, 1 if it
 * was taken (d->socket_path set from its address), -errno if it is unusable
 * (the reason logged).  The variables are dropped either way, so that the
 * processes luod starts never take them as theirs.
 */
static int take_activated_socket(struct luod *d)
{
	const char *e_pid = getenv("LISTEN_PID"), *e_fds = getenv("LISTEN_FDS");
	struct sockaddr_un sa = {};
	socklen_t sa_len = sizeof(sa), len;
	int fd = LISTEN_FDS_START, type, listening, n, r;
	char *end;
	long v;

	if (!e_pid || !e_fds) {
		r = 0;
		goto out;
	}
	errno = 0;
	v = strtol(e_pid, &end, 10);
	if (errno || *end || v != getpid()) {
		r = 0; /* meant for another process */
		goto out;
	}
	errno = 0;
	v = strtol(e_fds, &end, 10);
	n = errno || *end || v < 0 || v > INT_MAX - LISTEN_FDS_START ? -1 : (int)v;
	if (n != 1) {
		log_error(
			"the service manager passed %s sockets (LISTEN_FDS); luod takes exactly one, "
			"a listening SOCK_SEQPACKET unix socket",
			e_fds);
		r = -EINVAL;
		goto out;
	}
	len = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
		r = negative_errno();
		log_error("fd %d from the service manager is not a socket: %s", fd, strerror(-r));
		goto out;
	}
	len = sizeof(listening);
	if (getsockname(fd, (struct sockaddr *)&sa, &sa_len) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0) {
		r = negative_errno();
		log_error("cannot inspect the socket from the service manager: %s", strerror(-r));
		goto out;
	}
	if (sa.sun_family != AF_UNIX || type != SOCK_SEQPACKET || !listening) {
		log_error("the socket from the service manager is not a listening SOCK_SEQPACKET "
			  "unix socket (ListenSequentialPacket= in the .socket unit, or "
			  "systemd-socket-activate --seqpacket)");
		r = sa.sun_family != AF_UNIX ? -EAFNOSUPPORT : -EPROTOTYPE;
		goto out;
	}
	if (sa_len <= offsetof(struct sockaddr_un, sun_path) || sa.sun_path[0] != '/') {
		log_error("the socket from the service manager has no file system path");
		r = -EINVAL;
		goto out;
	}
	/* sun_path need not be terminated when it fills the field. */
	len = sa_len - offsetof(struct sockaddr_un, sun_path);
	if (len >= sizeof(d->socket_path))
		len = sizeof(d->socket_path) - 1;
	memcpy(d->socket_path, sa.sun_path, len);
	d->socket_path[len] = 0;
	/* Like a socket luod makes: non-blocking, and inheritable by its next image. */
	r = fd_set_nonblock(fd, true);
	if (r >= 0)
		r = fd_set_cloexec(fd, false);
	if (r < 0) {
		log_error("cannot set up the socket from the service manager: %s", strerror(-r));
		goto out;
	}
	d->listen_ep.fd = fd;
	r = 1;
out:
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return r;
}

int server_listen(struct luod *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -EBADF;
	struct stat st;
	size_t len;
	int r;

	r = take_activated_socket(d);
	if (r != 0)
		return r;
	len = strlen(d->socket_path);
	if (len == 0 || len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, d->socket_path, len + 1);
	r = make_parent_dir(d->socket_path);
	if (r < 0)
		return r;

	/* Never take over a live socket: ask it first.  Only a socket nobody
	 * listens on (ECONNREFUSED) is stale and may be replaced. */
	/* Non-blocking: a live luod with a full backlog answers EAGAIN, not never. */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN)
		return -EADDRINUSE;
	if (errno == ECONNREFUSED && lstat(d->socket_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
		log_info("replacing stale socket %s", d->socket_path);
		if (unlink(d->socket_path) < 0 && errno != ENOENT)
			return negative_errno();
	}
	fd = safe_close(fd);

	/* The listening socket goes to every next image of luod: inheritable. */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return negative_errno();
	/* Isolation is by uid (SO_PEERCRED), not by file mode: every local user may connect. */
	if (chmod(d->socket_path, 0666) < 0) {
		r = negative_errno();
		(void)unlink(d->socket_path);
		return r;
	}
	if (listen(fd, SOMAXCONN) < 0) {
		r = negative_errno();
		(void)unlink(d->socket_path);
		return r;
	}
	d->listen_ep.fd = TAKE_FD(fd);
	return 0;
}

/*
 * luod's own fds (stdio, listening socket, signalfd, two epolls, reserve), so
 * that STATUS can report the fds in use without walking /proc (which, right
 * after a live update, would delay serving by O(files)).
 */
static int count_base_fds(void)
{
	int n = 5;

	for (int fd = 0; fd <= 2; fd++)
		n += fd_is_open(fd);
	return n;
}

int server_arm(struct luod *d)
{
	struct stat st;
	sigset_t mask;
	int r;

	if (fstat(d->listen_ep.fd, &st) < 0)
		return negative_errno();
	d->sock_dev = st.st_dev;

	luod_block_signals(&mask);
	d->signal_ep.fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (d->signal_ep.fd < 0)
		return negative_errno();
	d->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (d->reserve_fd < 0)
		return negative_errno();

	d->hup_fd = epoll_create1(EPOLL_CLOEXEC);
	if (d->hup_fd < 0)
		return negative_errno();
	d->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (d->epoll_fd < 0)
		return negative_errno();
	r = endpoint_watch(d, &d->listen_ep, EPOLLIN, true);
	if (r < 0)
		return r;
	r = endpoint_watch(d, &d->signal_ep, EPOLLIN, true);
	if (r < 0)
		return r;
	/* Sessions first: a close during an update's blackout is reported before any
	 * request of the same batch (and server_reap_hangups() sees every one anyway). */
	LIST_FOREACH (i, &d->sessions) {
		struct endpoint *ep = list_entry(i, struct endpoint, node);
		r = endpoint_watch(d, ep, endpoint_wanted_events(ep), true);
		if (r < 0)
			return r;
	}
	LIST_FOREACH (i, &d->conns) {
		struct endpoint *ep = list_entry(i, struct endpoint, node);
		r = endpoint_watch(d, ep, endpoint_wanted_events(ep), true);
		if (r < 0)
			return r;
	}
	d->base_fds = count_base_fds();
	return 0;
}

/* The answer to whatever a refused client asks first, then the hang-up. */
static void refuse_connection(int fd, int error)
{
	(void)luo_wire_reply_send(fd, 0, error, LUO_WIRE_REPLY_REFUSED, NULL, 0, NULL, 0);
	safe_close(fd);
}

static void shed_connection(struct luod *d)
{
	/* Out of fds: the pending connection would keep the listening socket readable
	 * forever.  Give up the spare fd to take it, refuse it in so many words
	 * (EMFILE, not a bare hang-up) and close it. */
	d->reserve_fd = safe_close(d->reserve_fd);
	int fd = accept4(d->listen_ep.fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0)
		refuse_connection(fd, -EMFILE);
	/* The slot just freed: nothing else runs in between to take it. */
	d->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (d->reserve_fd < 0)
		log_warning("cannot take back the spare fd: %m");
	log_warning("out of file descriptors: refused a connection");
}

static void handle_accept(struct luod *d)
{
	for (int i = 0; i < 64; i++) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		/* Connections go to every next image of luod: inheritable from birth. */
		int fd = accept4(d->listen_ep.fd, NULL, NULL, SOCK_NONBLOCK);

		if (fd < 0) {
			int e = errno;

			/* Out of fds: those of endpoints closed just before come back first. */
			if ((e == EMFILE || e == ENFILE) && server_reap_hangups(d, NULL) > 0)
				continue;
			if (e == EMFILE || e == ENFILE)
				shed_connection(d);
			else if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED)
				log_warning("accept: %s", strerror(e));
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			log_warning("SO_PEERCRED: %m");
			safe_close(fd);
			continue;
		}
		struct uid_usage *u = uid_usage_get(d, cred.uid);
		/* A connection costs an fd too: within the uid's share of the capacity. */
		if (!u || u->n_connections >= limit_connections(d) ||
		    capacity_check(d, cred.uid, 1) < 0) {
			log_debug("uid %u is at its connection limit: connection refused",
				  (unsigned)cred.uid);
			refuse_connection(fd, u ? -EMFILE : -ENOMEM);
			continue;
		}
		struct endpoint *ep = conn_add(d, fd, cred.uid, cred.pid);
		if (!ep) {
			log_warning("could not add a connection");
			continue;
		}
		journal_conn(d, ep);
		journal_commit(d);
		log_debug("connection from pid %d uid %u", (int)cred.pid, (unsigned)cred.uid);
	}
}

/*
 * Peeks at one request (flags MSG_PEEK) or takes it.  Returns its length
 * (> 0), 0 for an empty message, -EAGAIN when none is queued, -ECONNRESET
 * at end of stream.  fds that arrived are in fds[0..*ret_n_fds); *ret_ctrunc
 * says some could not be received (luod out of fds).  A peek installs the
 * message's fds; the take that follows it passes no room for them, so the
 * kernel drops its own references and the peeked fds stay the only ones.
 */
static ssize_t receive(int sock, uint8_t *buf, size_t size, int *fds, size_t *ret_n_fds,
		       bool *ret_ctrunc, bool *ret_trunc)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * LUOD_RECV_MAX_FDS)];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = &control,
		.msg_controllen = sizeof(control),
	};
	size_t n_fds = 0;
	ssize_t n;

	do
		/* Born inheritable, as every fd luod holds is (its next image keeps
		 * them): a batch's files become held fds as they came, no fcntl()
		 * each.  luod execs nothing while a request holds them but an
		 * update's checker, which gets luod's held fds anyway. */
		n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -EAGAIN;
		return -ECONNRESET;
	}
	for (struct cmsghdr *c = mh.msg_controllen ? CMSG_FIRSTHDR(&mh) : NULL; c;
	     c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (n_fds < LUOD_RECV_MAX_FDS)
				fds[n_fds++] = fd;
			else
				safe_close(fd);
		}
	}
	*ret_n_fds = n_fds;
	*ret_ctrunc = !!(mh.msg_flags & MSG_CTRUNC);
	*ret_trunc = !!(mh.msg_flags & MSG_TRUNC);
	if (*ret_trunc)
		return (ssize_t)size; /* longer than any request: refused, but its tag is here */
	if (n == 0 && n_fds == 0 && !*ret_ctrunc) {
		/* A zero-length read is an empty message or the end of the stream. */
		struct pollfd p = { .fd = sock, .events = POLLRDHUP };
		if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP))) {
			uint8_t peek;
			ssize_t k = recv(sock, &peek, 1, MSG_DONTWAIT | MSG_PEEK);
			if (k <= 0)
				return -ECONNRESET;
		}
	}
	return n;
}

/* Takes the message at the head of sock off the socket, dropping its fds. */
static void take_message(int sock)
{
	ssize_t n;

	do
		n = recv(sock, NULL, 0, MSG_DONTWAIT | MSG_TRUNC);
	while (n < 0 && errno == EINTR);
}

/* Whether the message at the head of sock is msg (len bytes). */
static bool head_is(int sock, const uint8_t *msg, size_t len)
{
	static uint8_t buf[LUO_WIRE_REQUEST_MAX + 1];
	ssize_t n;

	do
		n = recv(sock, buf, sizeof(buf), MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	return n >= 0 && (size_t)n == len && memcmp(buf, msg, MIN(len, sizeof(buf))) == 0;
}

static void journal_request(struct luod *d, struct endpoint *ep, uint32_t attempts,
			    const uint8_t *msg, size_t len, const int *fds, size_t n_fds)
{
	static uint8_t entry[sizeof(struct ext_request) + LUO_WIRE_REQUEST_MAX + 1 +
			     LUOD_RECV_MAX_FDS * sizeof(int32_t)];
	struct ext_request rq = {
		.attempts = attempts,
		.n_fds = (uint32_t)n_fds,
		.len = (uint32_t)len,
	};

	if (!d->journal)
		return;
	memcpy(entry, &rq, sizeof(rq));
	memcpy(entry + sizeof(rq), msg, len);
	for (size_t i = 0; i < n_fds; i++) {
		int32_t fd = fds[i];
		memcpy(entry + sizeof(rq) + len + i * sizeof(fd), &fd, sizeof(fd));
	}
	journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_REQUEST, (uint64_t)ep->fd, entry,
					     sizeof(rq) + len + n_fds * sizeof(int32_t)));
	journal_commit(d);
}

static struct endpoint *reply_ep_new(int fd, uint32_t uid)
{
	struct endpoint *rep = calloc(1, sizeof(*rep));

	if (!rep)
		return NULL;
	rep->type = EP_REPLY;
	rep->fd = fd;
	rep->uid = uid;
	return rep;
}

/*
 * Sends what a request's reply socket has queued (its answer, committed),
 * drops what does not fit (the socket is the caller's alone: a caller that
 * does not read loses only its own answer), and closes it once the journal
 * no longer names it.
 */
static void reply_ep_finish(struct luod *d, struct endpoint *rep)
{
	endpoint_flush(d, rep);
	endpoint_drop_queue(d, rep);
	journal_commit(d);
	luod_close_later(d, rep->fd);
	free(rep);
}

int reply_socket_resend(struct luod *d, int fd, uint64_t key, const struct ext_reply *rp,
			size_t size)
{
	struct endpoint *rep = reply_ep_new(fd, 0);
	int r;

	if (!rep)
		return -ENOMEM;
	r = endpoint_requeue(d, rep, key, rp, size);
	if (r < 0) {
		free(rep);
		return r;
	}
	reply_ep_finish(d, rep);
	return 0;
}

/*
 * A request whose op carries LUO_WIRE_OP_REPLY_SOCKET names its last fd as the
 * socket for its reply: the bit comes off the op in buf and the fd off fds,
 * and the returned endpoint takes the reply.  NULL (the request as it is,
 * answered on its own socket) when there is no such request, when the fd is
 * no SOCK_SEQPACKET socket, or without memory; with ctrunc (not every fd
 * came) the bit comes off all the same.
 */
static struct endpoint *reply_socket_take(struct endpoint *ep, uint8_t *buf, size_t n, int *fds,
					  size_t *n_fds, bool ctrunc)
{
	struct luo_wire_request h;
	struct endpoint *rep;
	int type = 0;
	socklen_t len = sizeof(type);

	if (n < sizeof(h))
		return NULL;
	memcpy(&h, buf, sizeof(h));
	if (!(h.op & LUO_WIRE_OP_REPLY_SOCKET))
		return NULL;
	if (ctrunc) {
		/* Not every fd reached us (no room in our table): which is the reply
		 * socket is not known.  The answer (EMFILE) goes where the request
		 * came, and the client, its own socket gone, looks there. */
		h.op &= ~LUO_WIRE_OP_REPLY_SOCKET;
		memcpy(buf, &h, sizeof(h));
		return NULL;
	}
	if (*n_fds == 0)
		return NULL;
	if (getsockopt(fds[*n_fds - 1], SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    type != SOCK_SEQPACKET)
		return NULL;
	rep = reply_ep_new(fds[*n_fds - 1], ep->uid);
	if (!rep)
		return NULL;
	h.op &= ~LUO_WIRE_OP_REPLY_SOCKET;
	memcpy(buf, &h, sizeof(h));
	(*n_fds)--;
	return rep;
}

/*
 * Runs one request that is recorded in the journal and still (or no
 * longer) at the head of its socket, then commits its effects with its
 * replies and the end of the record, takes it off the socket and sends the
 * replies.  Returns false if the endpoint was closed.
 */
static bool run_request(struct luod *d, struct endpoint *ep, uint8_t *buf, size_t n, int *fds,
			size_t n_fds, bool ctrunc, bool trunc, bool at_head)
{
	struct endpoint *rep = NULL;
	bool abort_conn = false;
	int r;

	d->in_request = true;
	d->request_ep = ep;
	if (!trunc)
		rep = reply_socket_take(ep, buf, n, fds, &n_fds, ctrunc);
	d->request_reply_ep = rep;
	if (trunc) {
		/* Larger than any request: as for a size that does not match the
		 * payload, the kernel's answer to bytes that are not there. */
		luod_close_later_many(d, fds, n_fds);
		endpoint_reply(d, ep, luo_wire_request_tag(buf, n), -EFAULT, 0, NULL, 0, NULL, 0,
			       -EBADF);
	} else {
		r = handle_request(d, ep, buf, n, fds, n_fds, ctrunc);
		abort_conn = r == -ECONNABORTED;
	}
	fault_point(d, "request-handled");
	if (at_head)
		take_message(ep->fd);
	fault_point(d, "request-taken");
	if (d->journal)
		journal_check(d,
			      luo_journal_ext_del(d->journal, LUOD_EXT_REQUEST, (uint64_t)ep->fd));
	d->in_request = false;
	d->request_reply_ep = NULL;
	journal_commit(d);
	fault_point(d, "request-committed");
	if (rep)
		reply_ep_finish(d, rep);
	if (abort_conn) {
		log_debug("closing connection of pid %d: unparseable message", (int)ep->pid);
		endpoint_free(d, ep);
		journal_commit(d);
		return false;
	}
	if (ep->out_head)
		endpoint_flush(d, ep);
	return true;
}

static void handle_endpoint_input(struct luod *d, struct endpoint *ep)
{
	/* Exactly the largest request: one byte more is truncated, and refused. */
	static uint8_t buf[LUO_WIRE_REQUEST_MAX];
	static int fds[LUOD_RECV_MAX_FDS];
	size_t n_fds = 0;
	bool ctrunc = false, trunc = false;
	ssize_t n;

	/* One request per wakeup: a peer waiting for its reply has sent nothing else, so a
	 * second read would only find EAGAIN; a busy peer is back at the next epoll_wait()
	 * along with everyone else, which keeps it from starving them. */
	if (ep->out_head)
		return;
	n = receive(ep->fd, buf, sizeof(buf), fds, &n_fds, &ctrunc, &trunc);
	if (n == -EAGAIN)
		return;
	if (n == -ECONNRESET) {
		if (ep->type == EP_SESSION) {
			hangup_queue(d, ep);
			(void)hangups_run(d);
		} else
			endpoint_free(d, ep);
		journal_commit(d);
		return;
	}
	/* Recorded before anything happens: a worker that dies now leaves it to
	 * its successor, which runs it and replies once. */
	journal_request(d, ep, 0, buf, (size_t)n, fds, n_fds);
	fault_point(d, "request-recorded");
	(void)run_request(d, ep, buf, (size_t)n, fds, n_fds, ctrunc, trunc, true);
}

void request_resume(struct luod *d, int fd)
{
	static uint8_t msg[LUO_WIRE_REQUEST_MAX + 1];
	static int fds[LUOD_RECV_MAX_FDS];
	const struct ext_request *rq;
	struct endpoint *ep = NULL;
	size_t size, len, n_fds;
	bool at_head;
	uint32_t attempts;

	rq = luo_journal_ext_get(d->journal, LUOD_EXT_REQUEST, (uint64_t)fd, &size);
	if (!rq)
		return;
	len = MIN((size_t)rq->len, sizeof(msg));
	n_fds = MIN((size_t)rq->n_fds, ELEMENTSOF(fds));
	memcpy(msg, rq + 1, len);
	for (size_t i = 0; i < n_fds; i++) {
		int32_t v;
		memcpy(&v, (const uint8_t *)(rq + 1) + rq->len + i * sizeof(v), sizeof(v));
		fds[i] = v;
	}
	attempts = rq->attempts + 1;
	LIST_FOREACH (i, &d->conns)
		if (list_entry(i, struct endpoint, node)->fd == fd)
			ep = list_entry(i, struct endpoint, node);
	if (!ep)
		ep = session_ep_find_by_fd(d, fd);
	if (!ep) {
		luod_close_later_many(d, fds, n_fds);
		journal_check(d, luo_journal_ext_del(d->journal, LUOD_EXT_REQUEST, (uint64_t)fd));
		journal_commit(d);
		return;
	}
	at_head = head_is(ep->fd, msg, len);
	if (attempts >= 2) {
		log_error("a request (command %#x) was given to two workers that both died: "
			  "answering EIO",
			  len >= 4 ? (unsigned)((const struct luo_wire_request *)msg)->op : 0u);
		struct endpoint *rep = len <= LUO_WIRE_REQUEST_MAX
					       ? reply_socket_take(ep, msg, len, fds, &n_fds, false)
					       : NULL;

		if (at_head)
			take_message(ep->fd);
		luod_close_later_many(d, fds, n_fds);
		d->in_request = true;
		d->request_ep = ep;
		d->request_reply_ep = rep;
		endpoint_reply(d, ep, luo_wire_request_tag(msg, len), -EIO, 0, NULL, 0, NULL, 0,
			       -EBADF);
		journal_check(d, luo_journal_ext_del(d->journal, LUOD_EXT_REQUEST, (uint64_t)fd));
		d->in_request = false;
		d->request_reply_ep = NULL;
		journal_commit(d);
		if (rep)
			reply_ep_finish(d, rep);
		endpoint_flush(d, ep);
		return;
	}
	journal_request(d, ep, attempts, msg, len, fds, n_fds);
	(void)run_request(d, ep, msg, len, fds, n_fds, false, len > LUO_WIRE_REQUEST_MAX, at_head);
}

static void handle_signal(struct luod *d)
{
	struct signalfd_siginfo si;

	while (read(d->signal_ep.fd, &si, sizeof(si)) == sizeof(si)) {
		log_info("received signal %u, exiting", si.ssi_signo);
		d->quit = true;
	}
}

int server_run(struct luod *d)
{
	struct epoll_event events[64];

	while (!d->quit) {
		int n = epoll_wait(d->epoll_fd, events, ELEMENTSOF(events),
				   liveupdate_check_timeout_ms(d));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		for (int i = 0; i < n && !d->quit; i++) {
			struct endpoint *ep = events[i].data.ptr;

			if (ep->dead)
				continue;
			switch (ep->type) {
			case EP_CHECK:
				liveupdate_check_done(d);
				break;
			case EP_COMPACT:
				compact_done(d);
				break;
			case EP_LISTEN:
				handle_accept(d);
				break;
			case EP_SIGNAL:
				handle_signal(d);
				break;
			case EP_CONN:
			case EP_SESSION:
				if (ep->out_head) {
					endpoint_flush(d, ep);
					if (ep->out_head)
						break;
				}
				handle_endpoint_input(d, ep);
				break;
			case EP_REPLY:
				break; /* never in the epoll set */
			case EP_BATCH:
				batch_client_exited(d, ep);
				break;
			}
			journal_commit(d);
			liveupdate_stop_if_due(d);
		}
		bury_dead(d);
		if (n == 0)
			liveupdate_check_done(d); /* the check's time is up */
	}
	liveupdate_check_cancel(d);
	return 0;
}
