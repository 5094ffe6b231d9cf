/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's internal interfaces
 *
 * One struct luod per process holds everything the daemon keeps beside the
 * engine: the listening socket, the epoll set, the client connections, the
 * daemon's end of every session socketpair (indexed by the inode of the
 * client end, for LUO_CMD_IS_SESSION), per-uid usage for the limits, and the
 * journal, where all of it that must outlive a worker is kept.
 *
 * Lifecycle: main.c parses options, starts fresh (server_listen, an empty
 * journal) or resumes after a live update (--resume), and runs the keeper
 * (keeper.c), which runs workers (worker.c): each recovers from the journal
 * and then serves (server_run()) until SIGTERM/SIGINT, or until it stops
 * for an update, after which the keeper execve()s the new binary with the
 * same fds.
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
#include "core/journal.h"

/* Exit codes, documented in luod(8). */
#define LUOD_EXIT_OK 0
#define LUOD_EXIT_FAILURE 1
#define LUOD_EXIT_USAGE 2
#define LUOD_EXIT_RUNNING 3
/* The keeper gave up: its worker died LUOD_STORM_DEATHS times within
 * LUOD_STORM_WINDOW_USEC (luod(8)). */
#define LUOD_EXIT_WORKER_FAILED 4

/* How a worker tells its keeper why it ended (its exit code). */
#define LUOD_WORKER_EXIT_SHUTDOWN 0  /* SIGTERM: sessions dropped, luod ends */
#define LUOD_WORKER_EXIT_UPDATE 70   /* stopped for an update: exec owner->update_binary */
#define LUOD_WORKER_EXIT_RECOVERY 71 /* this binary cannot recover the journal */

/* Compactions an update waits for at most before it stops the worker. */
#define LUOD_UPDATE_COMPACTIONS 3

#define LUOD_STORM_DEATHS 10
#define LUOD_STORM_WINDOW_USEC (UINT64_C(10) * 1000000)

/* Default per-uid limits (luod(8)); options override them for every uid. */
#define LUOD_ROOT_MAX_SESSIONS UINT64_C(1000000)
#define LUOD_ROOT_MAX_FILES UINT64_C(4000000)
#define LUOD_USER_MAX_SESSIONS UINT64_C(65536)
#define LUOD_USER_MAX_FILES UINT64_C(262144)
#define LUOD_MAX_CONNECTIONS UINT64_C(1024)

/*
 * fds luod keeps for itself out of its RLIMIT_NOFILE: stdio, the listening
 * socket, the signalfd, two epoll sets, the spare fd, and what a request or a
 * live update holds for a moment (a session's socketpair, the state memfd,
 * the binary, a checker's pidfd and pipe).  Every connection, session and
 * preserved file costs one more: the rest of the limit is luod's capacity.
 */
#define LUOD_OWN_FDS 16
/* The fewest it starts with: room for one connection, one session and one file. */
#define LUOD_MIN_FDS (LUOD_OWN_FDS + 3)

/*
 * Bytes of replies luod queues for slow readers before it refuses listings
 * (ENOBUFS).  Budgets are per uid: root may use all of it; each other uid a
 * quarter; and the other uids together never more than what leaves root a
 * quarter, so that no uid's unread listings can refuse another's.
 */
#define LUOD_QUEUE_BUDGET (UINT64_C(256) << 20)

/* The most fds one request may carry before the message counts as hostile. */
#define LUOD_RECV_MAX_FDS 253

enum endpoint_type {
	EP_LISTEN,
	EP_SIGNAL,
	EP_CONN,
	EP_SESSION,
	EP_CHECK,   /* the pidfd of an update's state checker */
	EP_COMPACT, /* the pidfd of a compaction child */
	EP_REPLY,   /* a request's own reply socket (LUO_WIRE_OP_REPLY_SOCKET): never read */
	EP_BATCH,   /* the pidfd of the client of a batch under way (batch.c) */
};

/* In an EXT_REPLY key: the reply goes to the request's own reply socket, whose
 * fd is in bits 32..62, not to an endpoint. */
#define LUOD_REPLY_KEY_PRIVATE (UINT64_C(1) << 63)

struct outmsg {
	struct outmsg *next;
	uint64_t key;	/* its EXT_REPLY entry in the journal */
	size_t n_fds;	/* fds[] are sent with the message, then closed (unless the
			 * entry in data says they are the engine's: EXT_REPLY_FDS_HELD) */
	int *fds;	/* n_fds of them (a batch's many), or NULL */
	size_t len;	/* of the message */
	size_t ext_len; /* of the journal entry in data (ext_reply, message, fd tail) */
	uint8_t data[];
};

struct uid_usage {
	struct hash_node node;
	uint32_t uid;
	uint64_t queued_bytes; /* replies queued for its endpoints */
	uint64_t n_sessions;
	uint64_t n_files;
	uint64_t n_connections;
	uint64_t n_staged; /* files of unfinished batches luod holds (batch.c) */
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
	/* hung up, waiting in luod.hangups for the loop that takes hang-ups in */
	bool hangup_queued;
	struct list_node hangup_node;
	/* EP_CONN */
	pid_t pid;
	bool device_holder;
	/* EP_SESSION */
	uint64_t handle;    /* engine handle id; 0 once known to be stale */
	uint32_t reply_seq; /* EP_CONN, EP_SESSION: keys of the replies it queues */
	uint64_t ino;	    /* inode of the client end */
	struct hash_node by_ino;
};

/*
 * The keeper's part of the journal's header page (its owner area): what
 * outlives a worker and an update but is no session state.  The keeper
 * writes it only while no worker runs; a worker writes update_binary only.
 */
#define LUOD_KEEPER_MAGIC UINT64_C(0x4c554f444b505231) /* "LUODKPR1" */
struct keeper_area {
	uint64_t magic;
	uint64_t started_usec;	    /* CLOCK_REALTIME of luod's first start */
	uint64_t binary_since_usec; /* CLOCK_REALTIME when the running binary started */
	uint64_t n_live_updates;
	uint64_t n_worker_restarts; /* workers started again after one died */
	uint64_t t_stop_usec;	    /* CLOCK_MONOTONIC: the worker stopped for an update */
	uint64_t t_exec_usec;	    /* CLOCK_MONOTONIC just before the keeper's execve() */
	int32_t update_error;	    /* the update's exec failed (-errno), or 0 */
	int32_t rolled_back;	    /* errno the new binary refused the journal with, or 0 */
	uint32_t fault_fired[16];   /* fault injection (test builds): times each point fired */
	uint32_t fault_hits[16];    /* ... and times each was reached */
	char update_binary[512];    /* written by the worker before LUOD_WORKER_EXIT_UPDATE */
	char binary[512];	    /* the binary running now, as started or updated to */
	/* 1 once a worker of a luod started afresh looked for what a kexec
	 * carried (kexec.c), so that its successors do not look again. */
	uint32_t kexec_checked;
	uint32_t reserved;
};

/* The daemon's own entries in the journal's ext table: (type, key) -> bytes. */
enum {
	LUOD_EXT_CONN = 1,	   /* key fd: struct ext_conn */
	LUOD_EXT_SESSION = 2,	   /* key fd: struct ext_session */
	LUOD_EXT_REQUEST = 3,	   /* key fd: struct ext_request, the message, then fds */
	LUOD_EXT_REPLY = 4,	   /* key fd << 32 | seq: struct ext_reply, the message */
	LUOD_EXT_UPDATE = 5,	   /* key 0: struct ext_update */
	LUOD_EXT_SESSION_INFO = 6, /* key hash of (uid, name): struct ext_session_info */
	LUOD_EXT_BATCH = 7,	   /* key serial << 24 | part: struct ext_batch, tokens, fds */
};

/*
 * One staged part of a PRESERVE_FDS batch (batch.c): the files luod holds
 * for it until the batch's last part applies or drops them.  Then n uint64
 * tokens and n int32 fds.
 */
struct ext_batch {
	int32_t ep_fd; /* the endpoint the parts come on */
	uint32_t uid;  /* the session's owner, charged for the staged files */
	uint64_t id;   /* the client's id of the batch */
	uint64_t handle;
	uint32_t part;
	uint32_t n;
	int32_t pid; /* the client (its reply socket's creator), or 0 if unknown */
	uint32_t reserved;
};
#define LUOD_BATCH_PART_BITS 24

struct ext_conn {
	uint32_t uid;
	int32_t pid;
	uint32_t flags; /* EXT_CONN_DEVICE_HOLDER */
	uint32_t reserved;
};
#define EXT_CONN_DEVICE_HOLDER 1u

struct ext_session {
	uint32_t uid;
	uint32_t flags; /* EXT_SESSION_DEFERRED */
	uint64_t handle;
	uint64_t ino;
};
#define EXT_SESSION_DEFERRED 1u

struct ext_request {
	uint32_t attempts; /* workers this request was given to */
	uint32_t n_fds;
	uint32_t len;
	uint32_t reserved;
	/* then len bytes of the message, then n_fds int32 fds */
};

struct ext_reply {
	int32_t fd; /* sent with the message, or -1; EXT_REPLY_FDS: several, after the message */
	uint32_t len;
	/* then len bytes; with EXT_REPLY_FDS, then uint32_t n and n int32 fds */
};
#define EXT_REPLY_FDS (-2)
/* As EXT_REPLY_FDS, but the fds are the engine's own (a batch retrieve's):
 * sent, never closed with the reply.  Only a reply to a request's own reply
 * socket carries them, which is sent or dropped before the next request. */
#define EXT_REPLY_FDS_HELD (-3)
/*
 * The fds a reply entry (size bytes) carries: their count, and in *ret_tail
 * where the int32 fds start (NULL when none).  -EBADMSG if the entry's size
 * does not add up.
 */
int ext_reply_fds(const struct ext_reply *rp, size_t size, const uint8_t **ret_tail);
/* Whether the entry's fds are the engine's (EXT_REPLY_FDS_HELD), not its own. */
static inline bool ext_reply_held(const struct ext_reply *rp)
{
	return rp->fd == EXT_REPLY_FDS_HELD;
}
/* fd number i of a reply entry's tail. */
int ext_reply_fd_at(const uint8_t *tail, size_t i);

enum { UPDATE_CHECKING = 1, UPDATE_EXEC = 2 };
struct ext_update {
	uint32_t state; /* UPDATE_CHECKING or UPDATE_EXEC */
	int32_t conn_fd;
	uint32_t tag;
	uint32_t size;
	uint64_t t_request_usec;
	char binary[512]; /* empty: the binary installed at luod's path */
};

/* Default fairness of the fd capacity (luod(8)): root's reserve, in percent of the
 * capacity, and the share of what is left that one non-root uid may hold. */
#define LUOD_ROOT_RESERVE_PERCENT 10
#define LUOD_USER_SHARE_PERCENT 25

struct luod_limits {
	uint64_t max_sessions; /* 0: the default for the uid */
	uint64_t max_files;
	uint64_t max_connections;
	uint64_t
		root_reserve; /* fds; 0: LUOD_ROOT_RESERVE_PERCENT of the capacity; UINT64_MAX: none */
	uint64_t user_share;   /* percent; 0: LUOD_USER_SHARE_PERCENT */
	uint64_t queue_budget; /* bytes of queued replies; 0: LUOD_QUEUE_BUDGET */
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

/* What listings tell about a session beyond the engine's state (session-info.c). */
struct session_record {
	bool known;
	uint64_t created_usec;	/* CLOCK_REALTIME */
	uint64_t handover_usec; /* CLOCK_REALTIME; 0 until handed over */
	uint64_t update_number; /* the engine's, at creation */
	uint32_t creator_pid;
	char creator_comm[16];
};

/* What the journal keeps of a session's record (session-info.c). */
struct ext_session_info {
	uint32_t uid;
	char name[LUO_NAME_FIELD];
	struct session_record rec[2];
};

struct luod {
	luo_engine *engine;
	luo_journal *journal;
	int journal_fd;
	/* The keeper's fds (listening socket, journal, readiness pipe, ...): a
	 * worker never closes them, whatever its reconciliation finds. */
	int keeper_fds[8];
	size_t n_keeper_fds;
	int ready_fd; /* a worker's end of the readiness pipe, until it serves */
	pid_t compact_pid;
	int compact_fd; /* the new journal a compaction child writes */
	struct endpoint compact_ep;
	pid_t keeper_pid;
	bool in_request;		   /* replies wait for the request's commit */
	struct endpoint *request_ep;	   /* the request's, while in_request */
	struct endpoint *request_reply_ep; /* where request_ep's replies go instead, or NULL */
	bool update_exec;		   /* the worker stops for the keeper to execve() */
	bool update_now; /* an update's check passed synchronously: stop after the commit */
	bool update_after_compaction; /* an update waits for the running compaction */
	unsigned update_compactions;  /* compactions the update waited for */
	bool rolled_back; /* this image is the previous binary, back after a failed update */
	uint64_t t_recovered_usec;
	char *argv_area; /* the process's argument strings, for its name in ps */
	size_t argv_area_size;
	const char *fault; /* fault injection points (test builds only) */
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
	/*
	 * Hang-ups are taken in by one loop (server.c: hangups_run), never from
	 * inside another hang-up: a hang-up found anywhere is queued here first.
	 * hup_fd is a second epoll set holding every connection and session
	 * endpoint with EPOLLRDHUP only, so that it reports hang-ups and nothing
	 * else, all of them in one epoll_wait() (hup_events has room for all).
	 */
	struct list_head hangups;
	bool in_hangups;
	int hup_fd;
	struct epoll_event *hup_events;
	size_t n_hup_events;
	struct hashmap by_ino, uids;
	struct hashmap session_infos; /* session-info.c */
	struct endpoint *device_holder;
	struct list_head batches; /* PRESERVE_FDS batches under way (batch.c) */
	uint32_t batch_serial;
	struct luod_limits limits;
	uint64_t fd_capacity; /* RLIMIT_NOFILE less LUOD_OWN_FDS: what clients may make it hold */
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
	char *self_path;    /* argv[0] */
	bool kexec_restore; /* started afresh: the first worker takes what a kexec carried */
	bool quit;
	long fd_limit;
};

/* keeper.c */
/* Sets up the owner area of a new journal. */
int keeper_area_init(int journal_fd, const char *binary);
/* Runs the keeper until luod ends; returns luod's exit code.  on_ready runs
 * in the keeper when a worker first serves. */
int keeper_run(struct luod *d, int previous_exe_fd, void (*on_ready)(struct luod *d));

/* worker.c */
/* A worker's life: recovery, then the event loop; returns its exit code. */
int worker_main(struct luod *d);
/* The journal: what each change adds to it (no-ops without a journal). */
void journal_check(struct luod *d, int r);
void journal_commit(struct luod *d);
void journal_conn(struct luod *d, struct endpoint *ep);
void journal_session_ep(struct luod *d, struct endpoint *ep);
void journal_endpoint_gone(struct luod *d, struct endpoint *ep);
void journal_session_moved(struct luod *d, uint32_t uid, const char *name, bool was_outgoing,
			   bool was_incoming);
void journal_session_header(struct luod *d, luo_session *s);
void journal_file(struct luod *d, luo_session *s, uint64_t token);
void journal_reset(struct luod *d);
/* Closes fd once the journal no longer names it (at the next commit). */
void luod_close_later(struct luod *d, int fd);
void luod_close_later_many(struct luod *d, const int *fds, size_t n);
struct keeper_area *luod_keeper_area(struct luod *d);
/* Compaction: starts one in a child when the log has grown; takes its result. */
void compact_maybe(struct luod *d);
/* Starts a compaction now if the log is worth it (force: an update's, with a
 * lower floor); 1 if one runs (compact_done() follows), 0 if not. */
int compact_start(struct luod *d, bool force);
void compact_done(struct luod *d);
/* Fault injection (a build option for the tests): kills the worker at the
 * point named in $LUOD_FAULT.  Compiled out otherwise. */
#ifdef LUOD_FAULT_INJECTION
bool fault_point(struct luod *d, const char *point);
#else
static inline bool fault_point(struct luod *d, const char *point)
{
	return false;
}
#endif

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
/* Writes value to /proc/self/oom_score_adj, where it may (lowering needs privilege). */
void luod_set_oom_score_adj(const char *value);
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
 * Takes in every hang-up already pending (except current's), however many
 * endpoints are ready: sessions and connections whose last client fd was
 * closed and that have nothing left to read.  The kernel runs close()
 * synchronously; luod sees it as an event.  A client that closes a session
 * and then creates one of the same name (or closes the device and opens it
 * again) must not see EEXIST/EBUSY because luod has not yet looked at the
 * hang-up: commands that would fail that way call this and try again, and
 * those that report state (LIST, SHOW, STATUS) call it first.  Never
 * re-entered: called while hang-ups are being taken in, it does nothing.
 * Returns how many hang-ups it took in.
 */
int server_reap_hangups(struct luod *d, struct endpoint *current);
/*
 * Removes a session that no fd holds: an incoming one waiting to be retrieved
 * (or stuck), or a handover-on-close one waiting for its name (aborted, not
 * handed over).  -EBUSY if a program holds it open.  A handover-on-close
 * session waiting for the name of a dropped incoming one is handed over.
 */
int server_drop_session(struct luod *d, luo_session *s);
/* Both take ownership of fd (closed on failure too). */
struct endpoint *conn_add(struct luod *d, int fd, uint32_t uid, pid_t pid);
struct endpoint *session_ep_add(struct luod *d, int fd, uint64_t handle, uint64_t ino,
				uint32_t uid);
struct endpoint *session_ep_find_by_ino(struct luod *d, uint64_t ino);
struct endpoint *session_ep_find_by_fd(struct luod *d, int fd);
/* Sends a reply the journal holds for a request's own reply socket fd (a dead
 * worker's), then closes fd. */
int reply_socket_resend(struct luod *d, int fd, uint64_t key, const struct ext_reply *rp,
			size_t size);
/* Puts a reply the journal holds (a dead worker's) back in ep's queue. */
int endpoint_requeue(struct luod *d, struct endpoint *ep, uint64_t key, const struct ext_reply *rp,
		     size_t size);
/* Runs again the request the journal holds for the endpoint of fd. */
void request_resume(struct luod *d, int fd);
struct uid_usage *uid_usage_get(struct luod *d, uint32_t uid);
/* Whether uid may have n more bytes of replies queued (the listing budgets). */
bool queue_budget_allows(struct luod *d, uint32_t uid, uint64_t n);
/* Outgoing and incoming sessions together. */
size_t luod_n_sessions(const struct luod *d);
/* Charges the owner of a session what an engine call on it changed, given the
 * counts from before the call (it touches only that session). */
void uid_usage_charge(struct luod *d, uint32_t uid, size_t sessions_before, size_t files_before);
/* Recomputes session and file usage from the engine (after reboot and restore). */
int uid_usage_recount(struct luod *d);
uint64_t limit_sessions(const struct luod *d, uint32_t uid);
uint64_t limit_files(const struct luod *d, uint32_t uid);
/* The fd capacity's fairness: root's reserve, and the most one uid may hold. */
/* Re-reads RLIMIT_NOFILE into d->fd_capacity (it may be changed with prlimit). */
void capacity_refresh(struct luod *d);
uint64_t capacity_root_reserve(const struct luod *d);
uint64_t capacity_uid_share(const struct luod *d, uint32_t uid);
/* What uid's sessions, files and connections cost luod in fds. */
uint64_t uid_fds(struct luod *d, uint32_t uid);
/* 0 if uid may make luod hold n more fds, -ENOSPC if that would pass its share
 * of the capacity or eat into root's reserve.  Root, and luod's own uid, are
 * never refused here. */
int capacity_check(struct luod *d, uint32_t uid, uint64_t n);
/*
 * Sends one reply message: header, then payload.  fd (may be -EBADF) goes
 * with it and is consumed.  Queues it if the socket is full; drops it if the
 * peer is gone.
 */
void endpoint_reply(struct luod *d, struct endpoint *ep, uint32_t tag, int result, uint32_t flags,
		    const void *payload, size_t len, const void *extra, size_t extra_len, int fd);
/* The same with n_fds fds (a batch's, at most LUO_WIRE_BATCH_MAX), all consumed. */
void endpoint_reply_fds(struct luod *d, struct endpoint *ep, uint32_t tag, int result,
			const void *payload, size_t len, const int *fds, size_t n_fds);
/*
 * Whether a reply to ep now goes to the request's own reply socket, and
 * endpoint_reply_fds_held() may then send fds the engine holds, without a dup
 * each: that reply is sent, or dropped, before anything else runs.
 */
bool endpoint_reply_private(const struct luod *d, const struct endpoint *ep);
void endpoint_reply_fds_held(struct luod *d, struct endpoint *ep, uint32_t tag, int result,
			     const void *payload, size_t len, const int *fds, size_t n_fds);
/* Drops every queued reply (before a re-exec, which cannot carry them). */
void endpoint_drop_queue(struct luod *d, struct endpoint *ep);
void endpoint_flush(struct luod *d, struct endpoint *ep);

/* commands.c */
/* Handles one message; fds[0..n_fds) are consumed.  Returns -ECONNABORTED to
 * make the caller close a connection that sent junk. */
int handle_request(struct luod *d, struct endpoint *ep, const uint8_t *buf, size_t len, int *fds,
		   size_t n_fds, bool fds_truncated);

/* batch.c: the batch commands (struct luo_wire_fds); they reply themselves
 * and consume fds[0..n_fds). */
struct luo_wire_parsed;
void batch_preserve(struct luod *d, struct endpoint *ep, luo_session *s,
		    const struct luo_wire_parsed *p, const void *fds_struct, int *fds,
		    size_t n_fds);
void batch_retrieve(struct luod *d, struct endpoint *ep, luo_session *s,
		    const struct luo_wire_parsed *p, const void *fds_struct);
/* Replies an error to a batch command, with the index of the file that failed
 * (UINT32_MAX: none), and drops the batch id of ep (0: none). */
void batch_fail(struct luod *d, struct endpoint *ep, uint32_t tag, uint64_t id, int r,
		uint32_t failed);
/* Watches the client of every batch (after recovery, once the loop is armed);
 * one whose client is gone already is dropped. */
void batch_watch_all(struct luod *d);
/* The client of the batches watched by ep (EP_BATCH) exited: they go. */
void batch_client_exited(struct luod *d, struct endpoint *ep);
/* Drops every batch whose parts came on ep (it hung up), or whose session is
 * gone (a handover, a reboot). */
void batch_drop_endpoint(struct luod *d, struct endpoint *ep);
void batch_drop_stale(struct luod *d);
/* The fds staged batches hold. */
size_t batch_n_staged(const struct luod *d);
/* Calls fn for every staged fd. */
void batch_foreach_fd(struct luod *d, void (*fn)(int fd, void *userdata), void *userdata);
/* At recovery: the staged parts from the journal; parts of an endpoint that
 * is gone are dropped. */
int batch_recover(struct luod *d);
/* For reconcile(): calls fn for each fd a journal batch entry (size bytes) names. */
int batch_entry_fds(const void *data, size_t size, void (*fn)(int fd, void *userdata),
		    void *userdata);

/* session-info.c */
/* A session was created by pid. */
void session_info_created(struct luod *d, luo_session *s, pid_t pid);
/* The outgoing session (uid, name) was handed over (it is incoming now). */
void session_info_handed_over(struct luod *d, uint32_t uid, const char *name);
/* The record of s, or NULL if luod knows none (created before luod's last re-exec). */
const struct session_record *session_info_find(struct luod *d, const luo_session *s);
void session_info_done(struct luod *d);
/* At recovery: the records from the journal. */
int session_info_recover(struct luod *d);

/* kexec.c */
/* The kernel session holding luod's own state; its sessions are "luod-N". */
#define LUOD_KERNEL_SESSION "luod"
/* /dev/liveupdate (test builds: $LUOD_LIVEUPDATE_DEVICE if set). */
const char *luod_device_path(void);
/* Opens the device, retrying for a while when another process holds it (EBUSY);
 * -ENODEV if this kernel has none. */
int luod_device_open(void);
struct luo_wire_kexec;
/* Handles KEXEC: replies an error, or reboots into the new kernel.  fds are consumed. */
void kexec_request(struct luod *d, struct endpoint *ep, uint32_t tag, struct luo_wire_kexec *k,
		   uint32_t size, int *fds, size_t n_fds);
/* After a kexec: rebuilds the sessions a kexec carried for luod as incoming ones,
 * journals them and finishes the kernel sessions.  0 if there were none. */
int kexec_restore(struct luod *d);

/* liveupdate.c */
/* Handles UPDATE or REBOOT; replies itself (now, or from the worker after the update). */
void liveupdate_request(struct luod *d, struct endpoint *ep, uint32_t op, uint32_t tag,
			const void *req, uint32_t size, uint64_t t_request);
/* The checker exited or ran out of time: judge it, then stop for the update or reply the error. */
void liveupdate_check_done(struct luod *d);
/* Milliseconds until the running check times out, -1 if none runs. */
int liveupdate_check_timeout_ms(const struct luod *d);
/* Kills a running check (at exit). */
void liveupdate_check_cancel(struct luod *d);
/* A compaction ended: an update that waited for it stops the worker now. */
void liveupdate_compacted(struct luod *d);
/* Stops the worker for an update whose check passed during the last request. */
void liveupdate_stop_if_due(struct luod *d);
/* At recovery: answers an update the previous worker stopped for, or checks again. */
int liveupdate_resume(struct luod *d, uint64_t t_start);
/* `luod --check-journal FD`: 0 if this binary reads the journal in FD, else -errno. */
int liveupdate_check_journal(int fd);
