/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's internal interfaces
 *
 * One struct luod per process holds everything the daemon keeps beside the
 * engine: the listening socket, the epoll set, the client connections, the
 * daemon's end of every session socketpair (indexed by the inode of the
 * client end, for LUO_CMD_IS_SESSION), per-uid usage for the limits, and the
 * bookkeeping that survives luod's own live update (timestamps, a pending
 * UPDATE/REBOOT reply).
 *
 * Lifecycle: main.c parses options and either starts fresh (server_listen)
 * or adopts a previous luod's state (liveupdate_restore); server_run() then
 * serves until SIGTERM/SIGINT, or until an UPDATE/REBOOT replaces the process
 * image with execve() (liveupdate.c), after which the new image continues
 * with the same fds.
 *
 * Every endpoint is one of: the listening socket, the signalfd, a client
 * connection (device commands) or the daemon's end of a session socketpair
 * (session commands).  Replies that do not fit in the peer's socket wait in
 * the endpoint's queue; while a queue is non-empty the endpoint's requests
 * are not read, so each peer has at most one request's replies pending.
 */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <time.h>

#include "basic/hashmap.h"
#include "basic/list.h"
#include "core/engine.h"

/* Exit codes, documented in luod(8). */
#define LUOD_EXIT_OK 0
#define LUOD_EXIT_FAILURE 1
#define LUOD_EXIT_USAGE 2
#define LUOD_EXIT_RUNNING 3

/* Default per-uid limits (luod(8)); options override them for every uid. */
#define LUOD_ROOT_MAX_SESSIONS UINT64_C(1000000)
#define LUOD_ROOT_MAX_FILES UINT64_C(4000000)
#define LUOD_USER_MAX_SESSIONS UINT64_C(65536)
#define LUOD_USER_MAX_FILES UINT64_C(262144)
#define LUOD_MAX_CONNECTIONS UINT64_C(1024)

/* Bytes of replies luod queues for slow readers, in total, before refusing listings. */
#define LUOD_QUEUE_BUDGET (UINT64_C(256) << 20)

/* The most fds one request may carry before the message counts as hostile. */
#define LUOD_RECV_MAX_FDS 253

enum endpoint_type {
	EP_LISTEN,
	EP_SIGNAL,
	EP_CONN,
	EP_SESSION,
	EP_CHECK, /* the pidfd of an update's state checker */
};

struct outmsg {
	struct outmsg *next;
	int fd; /* sent with the message, then closed; -EBADF if none */
	size_t len;
	uint8_t data[];
};

struct uid_usage {
	struct hash_node node;
	uint32_t uid;
	uint64_t n_sessions;
	uint64_t n_files;
	uint64_t n_connections;
};

struct endpoint {
	enum endpoint_type type;
	int fd;
	uint32_t uid;
	struct outmsg *out_head, *out_tail;
	size_t out_bytes;
	uint32_t events;       /* what epoll currently watches */
	struct list_node node; /* luod.conns or luod.sessions; luod.graveyard once dead */
	bool dead;	       /* closed; freed after the current batch of events */
	/* EP_SESSION hung up, waiting out an incoming session of its name (luod.deferred) */
	bool deferred;
	struct list_node deferred_node;
	/* EP_CONN */
	pid_t pid;
	bool device_holder;
	/* EP_SESSION */
	uint64_t handle; /* engine handle id; 0 once known to be stale */
	uint64_t ino;	 /* inode of the client end */
	struct hash_node by_ino;
};

struct luod_limits {
	uint64_t max_sessions; /* 0: the default for the uid */
	uint64_t max_files;
	uint64_t max_connections;
};

/* A reply luod owes across its own re-exec (UPDATE or REBOOT). */
struct pending_reply {
	bool active;
	int conn_fd;
	uint32_t op;
	uint32_t tag;
	uint32_t size;		   /* the request's size field, for the copy back */
	uint64_t t_request_usec;   /* CLOCK_MONOTONIC when the request arrived */
	uint64_t t_serialize_usec; /* CLOCK_MONOTONIC when the blackout began */
	uint64_t state_size;
};

/* An update waiting for another binary to accept the state (liveupdate.c). */
struct update_check {
	struct endpoint ep;	    /* EP_CHECK, fd: the checker's pidfd */
	pid_t pid;		    /* 0 when no check runs */
	int out_fd;		    /* the checker's stdout */
	struct endpoint *requester; /* NULL once it hung up */
	struct pending_reply pr;
	uint64_t deadline_usec;
	char binary[512];
};

struct luod {
	luo_engine *engine;
	int epoll_fd;
	int signal_fd;
	int reserve_fd; /* spare fd given up to accept and shed a connection at EMFILE */
	int previous_exe_fd;
	struct endpoint listen_ep, signal_ep;
	char socket_path[108];
	uint64_t sock_dev; /* st_dev of sockets: the filesystem of every session fd */
	struct list_head conns, sessions;
	struct list_head graveyard; /* closed endpoints the current event batch may still name */
	struct list_head deferred;  /* handover-on-close sessions waiting for their name */
	struct hashmap by_ino, uids;
	struct endpoint *device_holder;
	struct luod_limits limits;
	uint64_t queued_bytes;
	int base_fds;	       /* its own: stdio, listening socket, signalfd, epoll, reserve */
	uint64_t started_usec; /* CLOCK_REALTIME of the first start */
	uint64_t n_live_updates;
	uint64_t t_main_usec; /* CLOCK_MONOTONIC at main() */
	uint64_t t_exec_usec; /* CLOCK_MONOTONIC just before the execve() that started us */
	struct pending_reply pending;
	struct update_check check;
	char **args; /* the original arguments, passed on at re-exec */
	int n_args;
	char *self_path; /* argv[0] */
	bool quit;
};

/* log.c */
extern bool log_verbose;
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t now_usec(int clock);

/* server.c */
/* Blocks SIGTERM/SIGINT (for the signalfd) and ignores SIGPIPE and SIGHUP.
 * Called before the socket listens: a client may signal luod as soon as it
 * can connect. */
void luod_block_signals(sigset_t *ret_mask);
int luod_init(struct luod *d);
void luod_done(struct luod *d);
/* Binds and listens on d->socket_path (0), or takes the socket a service manager
 * passed (LISTEN_FDS) and sets d->socket_path to its path (1); -EADDRINUSE if a
 * live luod serves the path. */
int server_listen(struct luod *d);
/* Puts the listening socket, signalfd, connections and sessions in a new epoll set. */
int server_arm(struct luod *d);
int server_run(struct luod *d);
/*
 * Takes in the hang-ups already pending (except current's): sessions and
 * connections whose last client fd was closed and that have nothing left to
 * read.  The kernel runs close() synchronously; luod sees it as an event.  A
 * client that closes a session and then creates one of the same name (or
 * closes the device and opens it again) must not see EEXIST/EBUSY because
 * luod has not yet looked at the hang-up: commands that would fail that way
 * call this and try again.  Returns how many endpoints it closed.
 */
int server_reap_hangups(struct luod *d, struct endpoint *current);
/* Both take ownership of fd (closed on failure too). */
struct endpoint *conn_add(struct luod *d, int fd, uint32_t uid, pid_t pid);
struct endpoint *session_ep_add(struct luod *d, int fd, uint64_t handle, uint64_t ino,
				uint32_t uid);
struct endpoint *session_ep_find_by_ino(struct luod *d, uint64_t ino);
struct uid_usage *uid_usage_get(struct luod *d, uint32_t uid);
/* Outgoing and incoming sessions together. */
size_t luod_n_sessions(const struct luod *d);
/* Charges the owner of a session what an engine call on it changed, given the
 * counts from before the call (it touches only that session). */
void uid_usage_charge(struct luod *d, uint32_t uid, size_t sessions_before, size_t files_before);
/* Recomputes session and file usage from the engine (after reboot and restore). */
int uid_usage_recount(struct luod *d);
uint64_t limit_sessions(const struct luod *d, uint32_t uid);
uint64_t limit_files(const struct luod *d, uint32_t uid);
/*
 * Sends one reply message: header, then payload.  fd (may be -EBADF) goes
 * with it and is consumed.  Queues it if the socket is full; drops it if the
 * peer is gone.
 */
void endpoint_reply(struct luod *d, struct endpoint *ep, uint32_t tag, int result, uint32_t flags,
		    const void *payload, size_t len, const void *extra, size_t extra_len, int fd);
/* Drops every queued reply (before a re-exec, which cannot carry them). */
void endpoint_drop_queue(struct luod *d, struct endpoint *ep);
void endpoint_flush(struct luod *d, struct endpoint *ep);

/* commands.c */
/* Handles one message; fds[0..n_fds) are consumed.  Returns -ECONNABORTED to
 * make the caller close a connection that sent junk. */
int handle_request(struct luod *d, struct endpoint *ep, const uint8_t *buf, size_t len, int *fds,
		   size_t n_fds, bool fds_truncated);

/* liveupdate.c */
/* Handles UPDATE or REBOOT; replies itself (now, or from the new image). */
void liveupdate_request(struct luod *d, struct endpoint *ep, uint32_t op, uint32_t tag,
			const void *req, uint32_t size, uint64_t t_request);
/* The checker exited or ran out of time: judge it, then update or reply the error. */
void liveupdate_check_done(struct luod *d);
/* Milliseconds until the running check times out, -1 if none runs. */
int liveupdate_check_timeout_ms(const struct luod *d);
/* Kills a running check (at exit). */
void liveupdate_check_cancel(struct luod *d);
/* `luod --check-state FD`: 0 if this binary accepts the state, else -errno. */
int liveupdate_check_state(int memfd);
/* `luod --restore FD`: adopts the state; on refusal hands it back to the
 * previous binary (does not return then).  rollback_error != 0 means this
 * process is that previous binary taking the state back. */
int liveupdate_restore(struct luod *d, int memfd, int rollback_error);
