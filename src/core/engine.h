/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the LUO engine
 *
 * The part of luod that plays the kernel's role (spec/kernel-luo.md), with no
 * I/O of its own beyond the files it holds.  It keeps sessions (outgoing and
 * incoming, each name-indexed), files (token-indexed per session, in
 * preservation order), handlers, FLB state, the identity index behind EBUSY
 * and the live update number.  Every state change goes through here.
 *
 * Session lifecycle:
 *
 *   outgoing: create -> preserve_fd ... -> release (abort, or handover if
 *             LUO_SESSION_FLAG_HANDOVER_ON_CLOSE) | handover | reboot
 *   incoming: (arrives by handover/reboot) -> retrieve -> retrieve_fd ...
 *             -> finish -> release (name gone);  release without finish
 *             finishes implicitly; if that is refused the session is stuck
 *             until the next reboot drops it.
 *
 * Handles: create and retrieve give the session a fresh handle id (u64,
 * never reused).  The daemon remembers the id behind each session fd and
 * looks it up with luo_engine_session_by_handle() on every command: after a
 * handover or reboot the id no longer resolves, which the daemon reports as
 * ESTALE.  Release is called once, when the last fd of a live handle closes.
 *
 * All functions return 0 (or a value) or -errno, and write outputs only on
 * success.  Names are passed as the kernel's 64-byte field.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "handler.h"

#define LUO_NAME_FIELD 64
#define LUO_SESSION_FLAG_HANDOVER_ON_CLOSE (UINT64_C(1) << 0)
/*
 * Set by the engine, never by a creator: an incoming session that was handed
 * over (luo_engine_handover_session()) since the last reboot, rather than
 * one that arrived with it.  The next reboot carries it (a service stopped
 * before the kexec, its state waiting for its successor) and clears the bit;
 * a session that arrived with a reboot and was never retrieved is dropped by
 * the next one, as the kernel drops it.  Kept in the state and the journal.
 */
#define LUO_SESSION_FLAG_HANDED_OVER (UINT64_C(1) << 1)
/* What a creator may ask for. */
#define LUO_SESSION_FLAGS_CREATE LUO_SESSION_FLAG_HANDOVER_ON_CLOSE
/* Every bit the state and the journal may carry. */
#define LUO_SESSION_FLAGS_ALL (LUO_SESSION_FLAG_HANDOVER_ON_CLOSE | LUO_SESSION_FLAG_HANDED_OVER)
#define LUO_UID_ANY UINT32_MAX

typedef struct luo_engine luo_engine;
typedef struct luo_session luo_session;

enum luo_session_kind {
	LUO_SESSION_OUTGOING = 0,
	LUO_SESSION_INCOMING = 1,
};

enum luo_session_state {
	LUO_SESSION_OPEN = 0,	   /* outgoing, held by its creator */
	LUO_SESSION_WAITING = 1,   /* incoming, not retrieved */
	LUO_SESSION_RETRIEVED = 2, /* incoming, retrieved, not finished */
	LUO_SESSION_FINISHED = 3,  /* incoming, finished, fd still open */
	LUO_SESSION_STUCK = 4,	   /* incoming, implicit finish refused */
};

/* Creates an empty engine with no handlers; update number 0. */
int luo_engine_new(luo_engine **ret);
/* Unpreserves nothing: closes every held fd and frees everything. NULL is fine. */
void luo_engine_free(luo_engine *e);
/*
 * Lets the fds the engine holds for preserved files be born without
 * FD_CLOEXEC (the default is with it), for a daemon that keeps them across
 * its own execve(): then a live update need not touch each held fd.  Set it
 * before the first preserve; it does not change fds already held.
 */
void luo_engine_set_inheritable_fds(luo_engine *e, bool inheritable);
/* Registers a handler after those registered so far; -EINVAL if its compatible is bad, -EEXIST if taken. */
int luo_engine_add_handler(luo_engine *e, const struct luo_handler *h);
/* Registers the built-in handlers in their order. */
int luo_engine_add_default_handlers(luo_engine *e);
const struct luo_handler *luo_engine_find_handler(const luo_engine *e, const char *compatible);

uint64_t luo_engine_update_number(const luo_engine *e);
size_t luo_engine_n_sessions(const luo_engine *e, enum luo_session_kind kind);
size_t luo_engine_n_files(const luo_engine *e);

/*
 * Device commands.  uid is the caller's, and names are per uid: each uid has
 * its own namespace of names (of each kind), in which it creates and
 * retrieves; another uid's session of the same name does not exist for it,
 * root included.  LUO_UID_ANY (tests and tools) retrieves the first session
 * of that name in any namespace.
 */
int luo_engine_create_session(luo_engine *e, const uint8_t name[LUO_NAME_FIELD], uint64_t flags,
			      uint32_t uid, luo_session **ret);
int luo_engine_retrieve_session(luo_engine *e, const uint8_t name[LUO_NAME_FIELD], uint32_t uid,
				luo_session **ret);
/* The session a handle id refers to, or NULL if the handle is stale. */
luo_session *luo_engine_session_by_handle(const luo_engine *e, uint64_t handle);
/* The session of kind by name in any uid's namespace (the first found, in
 * O(sessions)): tests and tools; NULL if none. */
luo_session *luo_engine_find_session(const luo_engine *e, enum luo_session_kind kind,
				     const char *name);
/* The session of kind by name in uid's namespace, or NULL. */
luo_session *luo_engine_find_session_of(const luo_engine *e, enum luo_session_kind kind,
					uint32_t uid, const char *name);

/* Session commands. */
/* Does not consume fd: the engine keeps its own dup. */
int luo_session_preserve_fd(luo_session *s, uint64_t token, int fd);
/* As luo_session_preserve_fd(), but on success the engine keeps fd itself as
 * its reference (no dup is made: fd must already have FD_CLOEXEC as the
 * engine's held fds have it, see luo_engine_set_inheritable_fds()); on failure
 * fd is left open, the caller's.  st, if not NULL, is fd's fstat(), which the
 * caller made already. */
int luo_session_preserve_fd_take(luo_session *s, uint64_t token, int fd, const struct stat *st);
/* Takes one file back out of an outgoing session, as an abort does (the
 * handler's and FLB's unpreserve): for undoing a batch that failed part way.
 * The kernel has no such command.  -ENOENT if the session has no such token. */
int luo_session_unpreserve_fd(luo_session *s, uint64_t token);
/* Returns a new O_CLOEXEC fd in *ret_fd, owned by the caller. */
int luo_session_retrieve_fd(luo_session *s, uint64_t token, int *ret_fd);
/*
 * As luo_session_retrieve_fd(), but *ret_fd is the engine's own fd, not a
 * dup: the caller may send it, never close it, and it is valid only until
 * the engine next changes.  What a batch sends right away spares a dup and a
 * close per file so.
 */
int luo_session_retrieve_fd_held(luo_session *s, uint64_t token, int *ret_fd);
/* What luo_session_retrieve_fd() of token would fail with before running any
 * handler (-EINVAL, -ENOENT, a permanent retrieve error), or 0; whether it
 * was retrieved already in *ret_retrieved (may be NULL).  Changes nothing. */
int luo_session_file_check(const luo_session *s, uint64_t token, bool *ret_retrieved);
int luo_session_finish(luo_session *s);
/* The last fd of the session's handle closed. s is invalid afterwards. */
void luo_session_release(luo_session *s);
/* Removes a session no fd holds (the caller checks): an outgoing one is aborted
 * (its files unpreserved, never handed over), an incoming one dropped as a
 * reboot drops it.  s is invalid afterwards. */
void luo_engine_drop_session(luo_engine *e, luo_session *s);

/* Update events. */
/* Hands one outgoing session over: freeze, then move to incoming.  -EEXIST if
 * an incoming session of that name exists; -EINVAL on an incoming session. */
int luo_engine_handover_session(luo_engine *e, luo_session *s);
/*
 * The kexec: hand over every open outgoing session in creation order; keep
 * every incoming session handed over since the last reboot and not retrieved
 * yet (LUO_SESSION_FLAG_HANDED_OVER, cleared now); drop every other incoming
 * one; live update number + 1.  An outgoing session replaces a handed-over
 * one of the same owner and name (the newer state of that name).  Incoming
 * sessions that stay come first, in their order, then the outgoing ones.
 * On a freeze error nothing changes.
 */
int luo_engine_reboot(luo_engine *e);
/* Whether the reboot would carry s (an outgoing session, or an incoming one it keeps). */
bool luo_session_crosses_reboot(const luo_session *s);

/* Introspection. */
const char *luo_session_name(const luo_session *s);
enum luo_session_kind luo_session_kind(const luo_session *s);
enum luo_session_state luo_session_state(const luo_session *s);
/* The creator's flags (LUO_SESSION_FLAGS_CREATE bits). */
uint64_t luo_session_flags(const luo_session *s);
uint32_t luo_session_uid(const luo_session *s);
uint64_t luo_session_handle(const luo_session *s); /* 0 if none */
size_t luo_session_n_files(const luo_session *s);

/* Names for people and scripts ("outgoing", "open", ...); "unknown" for other values. */
const char *luo_session_kind_name(uint32_t kind);
const char *luo_session_state_name(uint32_t state);

/* Iteration in creation (outgoing) or arrival (incoming) order. */
luo_session *luo_engine_first_session(const luo_engine *e, enum luo_session_kind kind);
luo_session *luo_session_next(const luo_session *s);

struct luo_file_info {
	uint64_t token;
	const char *compatible;
	int fd; /* luod's reference, -EBADF once discarded */
	bool retrieved;
	int retrieve_error; /* 0 or the permanent -errno of a failed retrieve */
	size_t data_size;
};
/* Calls cb for each file in preservation order; stops at and returns cb's first non-zero value. */
int luo_session_foreach_file(const luo_session *s,
			     int (*cb)(const struct luo_file_info *fi, void *userdata),
			     void *userdata);

/* FLB introspection (tests, status). */
/* Calls fn for the fd of every FLB instance that holds one. */
void luo_engine_foreach_flb_fd(const luo_engine *e, void (*fn)(int fd, void *userdata),
			       void *userdata);
const struct luo_flb *luo_engine_find_flb(const luo_engine *e, const char *compatible);
