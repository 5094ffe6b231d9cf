/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's wire transport, both ends
 *
 * The one module that moves luod's messages, used by luod (replies), libluo,
 * luoctl and the preload shim:
 *
 *   - finding and connecting to luod (luo_wire_connect_default(): the rule
 *     every client shares; luo_wire_socket_path(): where luod itself binds);
 *   - one request out, its reply (or stream of replies) back, with fds as
 *     SCM_RIGHTS (built on socket_send_message()/socket_recv_message());
 *   - a deadline on every wait (poll() on CLOCK_MONOTONIC): a client waits at
 *     most luo_wire_get_timeout() milliseconds for connect(), for room to
 *     send and for its reply, then gets -ETIMEDOUT.
 *
 * Nothing on the client call path allocates or uses stdio (the shim calls it
 * from inside ioctl()), except luo_wire_call_stream(), which the shim never
 * uses.  Every function returns 0 (or a value) or -errno.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "protocol/protocol.h"

/* ---- waiting ---- */

/*
 * How long a client waits by default, in milliseconds.  luod answers in
 * microseconds and its live update blackout lasts milliseconds; an update's
 * state check may take up to 10 s.  What the limit is for is a luod that is
 * stopped (SIGSTOP, a debugger, a hung disk under its pages) or a peer that
 * is not luod at all: 30 s is long past anything a healthy luod does and short
 * enough for a program (or its supervisor) to notice and act.
 */
#define LUO_WIRE_TIMEOUT_DEFAULT_MS 30000

/*
 * Sets the process-wide limit on every wait of the client side: timeout_ms > 0
 * milliseconds, or 0 for no limit (wait as long as it takes).  0 or -EINVAL
 * (negative).  Thread-safe.
 */
/* The tag of this thread's n-th next call (0: the next one), for peers in
 * tests that answer before they are asked. */
uint32_t luo_wire_tag_after(unsigned n);
int luo_wire_set_timeout(int timeout_ms);
/* The limit in force (0: none). */
int luo_wire_get_timeout(void);

/* ---- finding luod ---- */

#define LUO_SOCKET_DEFAULT "/run/luo/luod.sock"
#define LUO_SOCKET_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */

/*
 * Where luod binds: $LUO_SOCKET if set and not empty, else
 * $XDG_RUNTIME_DIR/luo/luod.sock, else LUO_SOCKET_DEFAULT.  luod never falls
 * back: a per-user luod must not take the system's socket.  Writes it
 * NUL-terminated into buf; 0 or -ENAMETOOLONG.  Allocates nothing.
 */
int luo_wire_socket_path(char *buf, size_t size);

/*
 * The paths a client tries, in order, into paths[0..2) (each
 * LUO_SOCKET_PATH_MAX bytes): $LUO_SOCKET alone if set and not empty; else
 * $XDG_RUNTIME_DIR/luo/luod.sock (if $XDG_RUNTIME_DIR is set and not empty)
 * then LUO_SOCKET_DEFAULT.  Returns the number of paths (1 or 2), or
 * -ENAMETOOLONG if $LUO_SOCKET does not fit (a too long $XDG_RUNTIME_DIR is
 * skipped).  Allocates nothing.
 */
int luo_wire_socket_candidates(char paths[2][LUO_SOCKET_PATH_MAX]);

/*
 * A new O_CLOEXEC SOCK_SEQPACKET connection to path, within the timeout
 * (a full listen backlog of a stopped luod is waited out at most that long).
 * Returns the fd, or:
 *   -ENOENT        no such file (no luod has run there)
 *   -ECONNREFUSED  nobody listens there (a stale socket, or not a socket)
 *   -ETIMEDOUT     luod's backlog stayed full for the whole timeout
 *   -ENAMETOOLONG  path does not fit a socket address; -EINVAL: empty
 *   -EACCES, ...   from socket()/connect()
 */
int luo_wire_connect(const char *path);

/*
 * Connects to the first of paths[0..n) where somebody listens: a path that
 * gives -ENOENT, -ECONNREFUSED or -ENOTDIR is passed over, any other error
 * ends the search.  Returns the fd and the index of the path in *ret_index (if
 * not NULL), or the last path's error.  This is the decision of
 * luo_wire_connect_default(), with the paths given (tests use it with their
 * own "system" path).
 */
int luo_wire_connect_first(const char *const *paths, size_t n, size_t *ret_index);

/*
 * Connects to luod by the rule every client shares (luo_wire_socket_candidates()
 * tried in order with luo_wire_connect_first()): $LUO_SOCKET only, when set;
 * else the per-user luod at $XDG_RUNTIME_DIR/luo/luod.sock if one listens
 * there, else the system luod at LUO_SOCKET_DEFAULT.  The path connected to
 * (or, on failure, the last one tried) is written into ret_path if not NULL
 * (LUO_SOCKET_PATH_MAX bytes).  Allocates nothing (the shim calls it).
 */
int luo_wire_connect_default(char *ret_path);

/* ---- server side ---- */

/*
 * Sends one reply message: the header (result, tag, flags, size) followed by
 * size bytes of payload, with n_fds fds (not consumed).  Never blocks.
 * Returns 0 or -errno (-EMSGSIZE past LUO_WIRE_REPLY_MAX, -EPIPE when the peer
 * is gone, -EAGAIN when its socket is full).
 */
int luo_wire_reply_send(int sock, uint32_t tag, int result, uint32_t flags, const void *payload,
			size_t size, const int *fds, size_t n_fds);

/* The error luod refused this connection with (a queued LUO_WIRE_REPLY_REFUSED
 * message, left queued), or 0 if there is none.  Never blocks. */
int luo_wire_refusal(int sock);

/* ---- client side (libluo, luoctl, the preload shim) ----
 *
 * Any number of threads and processes may share one socket: each request is
 * tagged with the caller's thread id and each caller takes only the reply with
 * its own tag (it peeks at the head of the queue and waits while the head is
 * someone else's).  A reply whose tag names no living thread (its asker died)
 * is discarded so that it cannot block the socket.  After a call of a thread
 * timed out, that thread's later requests carry a new generation in the tag's
 * top bits (tags are tid | generation << 22), so a reply that arrives late is
 * recognised as stale and discarded instead of being taken for the answer to
 * a later request.  Works on blocking and non-blocking sockets.  May change
 * errno.
 */

/*
 * Sends op with the command struct arg (arg_size bytes, sent as they are:
 * the caller sets the size field) and fds (not consumed) attached, and waits
 * for the reply.  On success copies min(arg_size, reply size) bytes back into
 * arg and stores the reply's fd (O_CLOEXEC) in *ret_fd, or -EBADF if none came
 * (with ret_fd NULL a received fd is closed).  Returns the reply's result (0 or
 * the server's -errno; on errors nothing is written and no fd is left open),
 * or a local error:
 *   -EINVAL      arg NULL with arg_size > 0, or n_fds > SOCKET_MAX_FDS
 *   -E2BIG       the request does not fit LUO_WIRE_REQUEST_MAX and has non-zero
 *                bytes past the command's full struct (with only zeros there it
 *                is sent trimmed to the full struct, which luod treats alike)
 *   -EMSGSIZE    the request does not fit and is no known command
 *   -EBADMSG     a malformed reply (short, wrong size, more than one fd, a
 *                result that is not 0 or -errno)
 *   -ECONNRESET  the server closed the socket
 *   -ETIMEDOUT   no room to send, or no reply, within the timeout
 *   -EPIPE, -EBADF, -ENOTSOCK, ...: from sendmsg()/recvmsg()
 * No allocation, no stdio: the preload shim calls this from inside ioctl().
 * A reply flagged LUO_WIRE_REPLY_MORE is drained (its further messages dropped).
 */
int luo_wire_call(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds, size_t n_fds,
		  int *ret_fd);

/*
 * As luo_wire_call(), for a session command on a session socket (which every
 * process holding the session fd shares): the reply comes on a socket of the
 * caller's own (LUO_WIRE_OP_REPLY_SOCKET), so that the call never depends on
 * another holder reading its replies.  Without two free fds for that socket,
 * or with SOCKET_MAX_FDS fds to send, it takes luo_wire_call()'s shared way.
 * A reply's fd comes at the lowest number that was free when the call began,
 * as the kernel's would.
 */
int luo_wire_call_session(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds,
			  size_t n_fds, int *ret_fd);

/*
 * As luo_wire_call_session() for a batch (struct luo_wire_fds): n_fds fds
 * (at most SOCKET_MAX_FDS - 1, which leaves the reply socket its slot) go
 * with the request, and the reply's fds, at most max_ret_fds, come back in
 * ret_fds[0..*ret_n_fds) (O_CLOEXEC, the caller's), on success only.  An
 * error reply's payload is copied back into arg as on success (the batch's
 * `failed` index).  -EMFILE when the caller's fd table could not take the
 * reply's fds (none is left open).
 */
int luo_wire_call_fds(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds,
		      size_t n_fds, int *ret_fds, size_t max_ret_fds, size_t *ret_n_fds);

/*
 * As luo_wire_call(), but an error reply's payload is copied back into arg
 * too (luod's UPDATE reports a roll-back with its measurements in the struct).
 */
int luo_wire_call_keep_error(int sock, uint32_t op, void *arg, uint32_t arg_size, int *ret_fd);

/* Called for each message after the first of a streamed reply with its payload.
 * A negative return stops the calls (the stream is still drained) and is returned. */
typedef int (*luo_wire_chunk_fn)(const void *data, size_t size, void *userdata);

/*
 * As luo_wire_call() for LIST and SHOW: the first reply's struct is copied into
 * arg, then fn is called for each following message until one comes without
 * LUO_WIRE_REPLY_MORE.  Returns 0, the first reply's error, the first error
 * of a later message, fn's first negative return, or a local error as for
 * luo_wire_call() (-ENOMEM: it allocates one LUO_WIRE_REPLY_MAX buffer).
 */
int luo_wire_call_stream(int sock, uint32_t op, void *arg, uint32_t arg_size, luo_wire_chunk_fn fn,
			 void *userdata);
/*
 * As luo_wire_call_stream(), with fds (not consumed) attached to the request,
 * and the first reply's payload copied into arg and the later messages
 * passed to fn even when the first reply is an error (KEXEC's list of the
 * files the kernel refused).  Returns the first reply's result, or a local
 * error.
 */
int luo_wire_call_stream_keep_error(int sock, uint32_t op, void *arg, uint32_t arg_size,
				    const int *fds, size_t n_fds, luo_wire_chunk_fn fn,
				    void *userdata);
