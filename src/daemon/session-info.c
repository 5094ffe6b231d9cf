/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: what luod tells operators about a session beyond the engine's state
 *
 * For `luoctl list` and `show`: which process created a session (pid and
 * comm), when, in which live update number, and when it was handed over.
 * The engine does not need any of it, so it lives here, keyed by what names a
 * session for its whole life, across its move from outgoing to incoming:
 * (uid, name), with one record per kind.
 *
 * Lifecycle: create fills the outgoing record; a handover (explicit, or by
 * the close of a handover-on-close session) moves it to the incoming record
 * and stamps the time.  Records of sessions that ended are swept when the
 * records outnumber twice the sessions, so memory stays proportional to the
 * live sessions whatever a client creates and drops.
 *
 * The records are in the journal (LUOD_EXT_SESSION_INFO), so they survive a
 * worker's death and a live update like the sessions they describe.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "luod.h"

struct session_info {
	struct hash_node node;
	uint32_t uid;
	char name[LUO_NAME_FIELD];
	struct session_record rec[2]; /* by enum luo_session_kind */
};

struct info_key {
	uint32_t uid;
	const char *name;
};

static uint64_t info_hash(uint32_t uid, const char *name)
{
	return hash_bytes(name, strlen(name)) ^ hash_u64(uid);
}

static bool info_eq(const struct hash_node *n, const void *key)
{
	const struct session_info *i = container_of(n, struct session_info, node);
	const struct info_key *k = key;

	return i->uid == k->uid && strcmp(i->name, k->name) == 0;
}

static struct session_info *info_find(struct luod *d, uint32_t uid, const char *name)
{
	struct info_key k = { .uid = uid, .name = name };
	struct hash_node *n = hashmap_find(&d->session_infos, info_hash(uid, name), info_eq, &k);

	return n ? container_of(n, struct session_info, node) : NULL;
}

static void info_journal(struct luod *d, const struct session_info *i)
{
	struct ext_session_info e;

	if (!d->journal)
		return;
	memset(&e, 0, sizeof(e));
	e.uid = i->uid;
	memcpy(e.name, i->name, sizeof(e.name));
	memcpy(e.rec, i->rec, sizeof(e.rec));
	journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_SESSION_INFO,
					     info_hash(i->uid, i->name), &e, sizeof(e)));
}

static void info_free(struct luod *d, struct session_info *i)
{
	if (d->journal)
		journal_check(d, luo_journal_ext_del(d->journal, LUOD_EXT_SESSION_INFO,
						     info_hash(i->uid, i->name)));
	hashmap_remove(&d->session_infos, &i->node);
	free(i);
}

/* Whether the session of this kind that the record describes still exists. */
static bool record_live(struct luod *d, const struct session_info *i, enum luo_session_kind kind)
{
	return luo_engine_find_session_of(d->engine, kind, i->uid, i->name) != NULL;
}

/* Drops the records of sessions that are gone. */
static void sweep(struct luod *d)
{
	for (size_t b = 0; b < d->session_infos.n_buckets; b++)
		for (struct hash_node *n = d->session_infos.buckets[b], *next; n; n = next) {
			struct session_info *i = container_of(n, struct session_info, node);

			next = n->next;
			for (int k = LUO_SESSION_OUTGOING; k <= LUO_SESSION_INCOMING; k++)
				if (i->rec[k].known && !record_live(d, i, k))
					i->rec[k].known = false;
			if (!i->rec[LUO_SESSION_OUTGOING].known &&
			    !i->rec[LUO_SESSION_INCOMING].known)
				info_free(d, i);
		}
}

static uint64_t realtime_usec(void)
{
	return now_usec(CLOCK_REALTIME);
}

/* The name (comm) of pid, or "" if it cannot be read (it exited, /proc is absent). */
static void read_comm(pid_t pid, char ret[16])
{
	char path[64];
	ssize_t n = -1;
	int fd;

	memset(ret, 0, 16);
	if (pid <= 0)
		return;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd >= 0) {
		n = read(fd, ret, 15);
		safe_close(fd);
	}
	if (n <= 0) {
		memset(ret, 0, 16);
		return;
	}
	if (ret[n - 1] == '\n')
		ret[n - 1] = 0;
}

void session_info_created(struct luod *d, luo_session *s, pid_t pid)
{
	const char *name = luo_session_name(s);
	uint32_t uid = luo_session_uid(s);
	struct session_info *i;

	if (d->session_infos.count > 2 * luod_n_sessions(d) + 64)
		sweep(d);
	i = info_find(d, uid, name);
	if (!i) {
		i = calloc(1, sizeof(*i));
		/* Only what listings show is lost: the session itself is fine. */
		if (!i)
			return;
		i->uid = uid;
		snprintf(i->name, sizeof(i->name), "%s", name);
		if (hashmap_insert(&d->session_infos, &i->node, info_hash(uid, i->name)) < 0) {
			free(i);
			return;
		}
	}
	i->rec[LUO_SESSION_OUTGOING] = (struct session_record){
		.known = true,
		.created_usec = realtime_usec(),
		.update_number = luo_engine_update_number(d->engine),
		.creator_pid = pid > 0 ? (uint32_t)pid : 0,
	};
	read_comm(pid, i->rec[LUO_SESSION_OUTGOING].creator_comm);
	info_journal(d, i);
}

void session_info_handed_over(struct luod *d, uint32_t uid, const char *name)
{
	struct session_info *i = info_find(d, uid, name);

	if (!i || !i->rec[LUO_SESSION_OUTGOING].known)
		return;
	i->rec[LUO_SESSION_INCOMING] = i->rec[LUO_SESSION_OUTGOING];
	i->rec[LUO_SESSION_INCOMING].handover_usec = realtime_usec();
	i->rec[LUO_SESSION_OUTGOING].known = false;
	info_journal(d, i);
}

static int recover_one(uint64_t key, const void *data, size_t size, void *userdata)
{
	struct luod *d = userdata;
	const struct ext_session_info *e = data;
	struct session_info *i;

	if (size != sizeof(*e) || !memchr(e->name, 0, sizeof(e->name)))
		return -EBADMSG;
	if (info_find(d, e->uid, e->name))
		return 0;
	i = calloc(1, sizeof(*i));
	if (!i)
		return -ENOMEM;
	i->uid = e->uid;
	memcpy(i->name, e->name, sizeof(i->name));
	memcpy(i->rec, e->rec, sizeof(i->rec));
	if (hashmap_insert(&d->session_infos, &i->node, info_hash(i->uid, i->name)) < 0) {
		free(i);
		return -ENOMEM;
	}
	return 0;
}

int session_info_recover(struct luod *d)
{
	return luo_journal_ext_foreach(d->journal, LUOD_EXT_SESSION_INFO, recover_one, d);
}

const struct session_record *session_info_find(struct luod *d, const luo_session *s)
{
	struct session_info *i = info_find(d, luo_session_uid(s), luo_session_name(s));
	enum luo_session_kind kind = luo_session_kind(s);

	if (!i || kind > LUO_SESSION_INCOMING || !i->rec[kind].known)
		return NULL;
	return &i->rec[kind];
}

void session_info_done(struct luod *d)
{
	for (size_t b = 0; b < d->session_infos.n_buckets; b++)
		for (struct hash_node *n = d->session_infos.buckets[b], *next; n; n = next) {
			next = n->next;
			free(container_of(n, struct session_info, node));
		}
	hashmap_done(&d->session_infos);
}
