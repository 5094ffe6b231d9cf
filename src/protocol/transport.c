/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's wire transport, both ends
 *
 * See transport.h.  The client side sends one request and takes the one reply
 * carrying its tag.  It runs inside the preload shim's ioctl(), possibly in
 * many threads at once and in processes that share a session fd after
 * fork(): it allocates nothing, uses no stdio, and never takes a message
 * that is not its own.
 *
 * Lifecycle of a call: a deadline is taken from the process-wide timeout;
 * send (tag = tid | generation << 22), waiting for room with poll() if the
 * socket is full; then repeatedly poll() for input and peek at the head of
 * the receive queue: ours -> take it; an earlier, timed-out request of this
 * thread's, or a dead asker's -> discard it; someone else's -> back off
 * briefly and look again.  Every wait ends at the deadline with -ETIMEDOUT,
 * after which the thread's generation moves on so that the late reply is
 * recognised as stale.
 */
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/socket-util.h"

_Static_assert(sizeof(((struct sockaddr_un *)NULL)->sun_path) == LUO_SOCKET_PATH_MAX,
	       "socket path size");

/* Thread ids are below PID_MAX_LIMIT (2^22): the rest of a tag is free. */
#define TAG_TID_BITS 22
#define TAG_TID_MASK ((UINT32_C(1) << TAG_TID_BITS) - 1)
#define TAG_GENERATIONS (UINT32_C(1) << (32 - TAG_TID_BITS))

/* ---- deadlines ---- */

static atomic_int wire_timeout_ms = LUO_WIRE_TIMEOUT_DEFAULT_MS;

int luo_wire_set_timeout(int timeout_ms)
{
	if (timeout_ms < 0)
		return -EINVAL;
	atomic_store(&wire_timeout_ms, timeout_ms);
	return 0;
}

int luo_wire_get_timeout(void)
{
	return atomic_load(&wire_timeout_ms);
}

static uint64_t monotonic_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The deadline of a call starting now (CLOCK_MONOTONIC usec), 0 for none. */
static uint64_t deadline_start(void)
{
	int t = luo_wire_get_timeout();

	return t > 0 ? monotonic_usec() + (uint64_t)t * 1000 : 0;
}

/* Milliseconds left for poll(): -1 without a deadline, 0 once it passed (rounded up). */
static int deadline_left_ms(uint64_t deadline)
{
	uint64_t now;

	if (deadline == 0)
		return -1;
	now = monotonic_usec();
	if (now >= deadline)
		return 0;
	return (int)MIN((deadline - now + 999) / 1000, (uint64_t)INT_MAX);
}

static bool deadline_passed(uint64_t deadline)
{
	return deadline != 0 && monotonic_usec() >= deadline;
}

/*
 * Waits until sock has events (POLLIN or POLLOUT) or the peer hung up.
 * 0, -ETIMEDOUT at the deadline, or -errno.
 */
static int wait_socket(int sock, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = sock, .events = events | POLLRDHUP };
		int r = poll(&pfd, 1, deadline_left_ms(deadline));

		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return negative_errno();
		if (r == 0 && deadline_passed(deadline))
			return -ETIMEDOUT;
	}
}

/* ---- finding luod ---- */

int luo_wire_socket_path(char *buf, size_t size)
{
	const char *env = getenv("LUO_SOCKET");
	int n;

	if (env && *env)
		n = snprintf(buf, size, "%s", env);
	else if ((env = getenv("XDG_RUNTIME_DIR")) && *env)
		n = snprintf(buf, size, "%s/luo/luod.sock", env);
	else
		n = snprintf(buf, size, "%s", LUO_SOCKET_DEFAULT);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

int luo_wire_socket_candidates(char paths[2][LUO_SOCKET_PATH_MAX])
{
	const char *env = getenv("LUO_SOCKET");
	int n, k = 0;

	if (env && *env) {
		n = snprintf(paths[0], LUO_SOCKET_PATH_MAX, "%s", env);
		return n < 0 || n >= LUO_SOCKET_PATH_MAX ? -ENAMETOOLONG : 1;
	}
	env = getenv("XDG_RUNTIME_DIR");
	if (env && *env) {
		n = snprintf(paths[0], LUO_SOCKET_PATH_MAX, "%s/luo/luod.sock", env);
		/* A per-user luod could not bind there either. */
		if (n > 0 && n < LUO_SOCKET_PATH_MAX)
			k++;
	}
	snprintf(paths[k], LUO_SOCKET_PATH_MAX, "%s", LUO_SOCKET_DEFAULT);
	return k + 1;
}

int luo_wire_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -EBADF;
	int t = luo_wire_get_timeout(), r;
	struct timeval tv = {
		.tv_sec = t / 1000,
		.tv_usec = (t % 1000) * 1000,
	};
	size_t len;

	if (!path || !*path)
		return -EINVAL;
	len = strlen(path);
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len + 1);

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	/* connect() of a unix socket waits for room in a full backlog for at most
	 * SO_SNDTIMEO, then says EAGAIN.  Cleared again after: the fd is the
	 * caller's, and the calls on it keep their own deadlines. */
	if (t > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return negative_errno();
	do
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EAGAIN ? -ETIMEDOUT : negative_errno();
	if (t > 0) {
		tv = (struct timeval){ 0 };
		if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
			return negative_errno();
	}
	return TAKE_FD(fd);
}

int luo_wire_connect_first(const char *const *paths, size_t n, size_t *ret_index)
{
	int r = -ENOENT;

	for (size_t i = 0; i < n; i++) {
		r = luo_wire_connect(paths[i]);
		if (r >= 0) {
			if (ret_index)
				*ret_index = i;
			return r;
		}
		/* Nobody there: the next candidate.  Anything else (EACCES, ETIMEDOUT)
		 * is a luod that exists and must be reported, not stepped over. */
		if (r != -ENOENT && r != -ECONNREFUSED && r != -ENOTDIR)
			return r;
	}
	return r;
}

int luo_wire_connect_default(char *ret_path)
{
	char paths[2][LUO_SOCKET_PATH_MAX];
	const char *p[2] = { paths[0], paths[1] };
	size_t i = 0;
	int n, r;

	n = luo_wire_socket_candidates(paths);
	if (n < 0)
		return n;
	r = luo_wire_connect_first(p, (size_t)n, &i);
	if (ret_path) {
		/* On failure: the last one tried, which is what the error is about. */
		if (r < 0)
			i = (size_t)n - 1;
		memcpy(ret_path, paths[i], LUO_SOCKET_PATH_MAX);
	}
	return r;
}

/* ---- server side ---- */

int luo_wire_reply_send(int sock, uint32_t tag, int result, uint32_t flags, const void *payload,
			size_t size, const int *fds, size_t n_fds)
{
	struct luo_wire_reply h = {
		.result = result,
		.tag = tag,
		.flags = flags,
		.size = (uint32_t)size,
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)payload, .iov_len = size },
	};
	ssize_t n;

	if (sock < 0)
		return -EBADF;
	if (!payload && size > 0)
		return -EINVAL;
	if (size > LUO_WIRE_REPLY_MAX - sizeof(h))
		return -EMSGSIZE;
	if (n_fds > SOCKET_MAX_FDS)
		return -EINVAL;
	/* The server must never block on one slow client. */
	n = socket_send_message_flags(sock, iov, size > 0 ? 2 : 1, fds, n_fds, MSG_DONTWAIT);
	return n < 0 ? (int)n : 0;
}

/* ---- client side ---- */

/* Serialises discarding a dead asker's reply among this process's threads, so
 * that two of them never both discard "the head" and so drop a live reply. */
static pthread_mutex_t discard_lock = PTHREAD_MUTEX_INITIALIZER;

/* Moves on after each call of this thread; 0 until the first.
 * initial-exec: reaching it must never allocate (the shim, inside ioctl()). */
static _Thread_local uint32_t tag_generation __attribute__((tls_model("initial-exec")));

static uint32_t own_tag(void)
{
	return ((uint32_t)gettid() & TAG_TID_MASK) | (tag_generation << TAG_TID_BITS);
}

/* The replies to this thread's calls so far, the one still awaited included, are stale. */
static void tag_generation_next(void)
{
	/* Never back to 0, the generation of threads that never timed out. */
	tag_generation = tag_generation % (TAG_GENERATIONS - 1) + 1;
}

uint32_t luo_wire_tag_after(unsigned n)
{
	uint32_t g = tag_generation;

	while (n--)
		g = g % (TAG_GENERATIONS - 1) + 1;
	return ((uint32_t)gettid() & TAG_TID_MASK) | (g << TAG_TID_BITS);
}

/* Whether the thread that asked for a reply tagged tag is gone. */
static bool tag_owner_gone(uint32_t tag)
{
	pid_t tid = (pid_t)(tag & TAG_TID_MASK);

	/* 0 is nobody's, and a tid of 0 would make kill() signal our process group. */
	if (tid == 0)
		return true;
	return kill(tid, 0) < 0 && errno == ESRCH;
}

/*
 * Peeks at the head message's header; returns the message's full length.
 * A plain recv(): socket_recv_message() rightly calls a truncated message an
 * error, and a peek at just the header is truncated by design.
 */
static int peek_header(int sock, struct luo_wire_reply *ret, int flags)
{
	ssize_t n;

	*ret = (struct luo_wire_reply){ 0 };
	/* No control buffer: any fds stay queued with the message for its owner. */
	do
		n = recv(sock, ret, sizeof(*ret), MSG_PEEK | MSG_TRUNC | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();
	return (int)MIN(n, (ssize_t)INT_MAX);
}

int luo_wire_refusal(int sock)
{
	struct luo_wire_reply h;
	int n = peek_header(sock, &h, MSG_DONTWAIT);

	/* A hang-up with our request unread is reported (once) before the queue. */
	if (n == -ECONNRESET)
		n = peek_header(sock, &h, MSG_DONTWAIT);
	if (n < (int)sizeof(h) || h.tag != 0 || !(h.flags & LUO_WIRE_REPLY_REFUSED))
		return 0;
	return h.result < 0 && h.result >= -4095 ? h.result : -ECONNREFUSED;
}

/*
 * Drops the head message if it is still nobody's: too short to carry a tag, or
 * tagged dead_tag.  The re-check under the lock keeps two threads from both
 * dropping "the head" and so losing a live reply.
 */
static void discard_head(int sock, uint32_t dead_tag)
{
	struct luo_wire_reply h;
	int n;

	pthread_mutex_lock(&discard_lock);
	n = peek_header(sock, &h, MSG_DONTWAIT);
	if (n >= 0 && (n < (int)sizeof(h) || h.tag == dead_tag)) {
		char sink[1];
		/* Taken without room for fds: whatever it carried is closed. */
		(void)socket_recv_message(sock, sink, sizeof(sink), NULL, 0, NULL, MSG_DONTWAIT);
	}
	pthread_mutex_unlock(&discard_lock);
}

/* Sleeps a little longer each time another thread's reply is at the head,
 * never past the deadline. */
static int backoff(unsigned *ns, uint64_t deadline)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = *ns };
	int left = deadline_left_ms(deadline);

	if (left == 0)
		return -ETIMEDOUT;
	if (left > 0 && (uint64_t)left * 1000000 < *ns)
		ts.tv_nsec = (long)left * 1000000;
	(void)nanosleep(&ts, NULL);
	if (*ns < 1000000)
		*ns *= 2;
	return 0;
}

/* Whether the peer has shut down its sending side (or is gone). */
static bool peer_hung_up(int sock)
{
	struct pollfd pfd = { .fd = sock, .events = POLLIN | POLLRDHUP };

	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLRDHUP));
}

/*
 * Waits until the head of the queue is a message tagged tag; it stays queued.
 * Without a deadline the peek itself blocks (on a blocking socket), which saves
 * a poll() per call; with one, poll() waits and the peek never blocks.
 */
static int wait_for_own(int sock, uint32_t tag, uint64_t deadline, struct luo_wire_reply *ret)
{
	unsigned ns = 2000;

	for (;;) {
		struct luo_wire_reply h;
		int n;

		if (deadline != 0) {
			n = wait_socket(sock, POLLIN, deadline);
			if (n < 0)
				return n;
		}
		n = peek_header(sock, &h, deadline != 0 ? MSG_DONTWAIT : 0);
		if (n == -EAGAIN) {
			/* Nothing queued (another thread took it, or a non-blocking socket). */
			if (deadline == 0) {
				n = wait_socket(sock, POLLIN, 0);
				if (n < 0)
					return n;
			}
			continue;
		}
		if (n < 0)
			return n;
		if (n == 0 && peer_hung_up(sock))
			return -ECONNRESET; /* nothing left, and the peer will send no more */
		if (n < (int)sizeof(h)) {
			/* Too short to carry a tag: nobody's, and it would block the queue. */
			discard_head(sock, 0);
			continue;
		}
		if (h.tag == 0 && (h.flags & LUO_WIRE_REPLY_REFUSED))
			/* Left queued: it answers every request on this connection. */
			return h.result < 0 ? h.result : -ECONNREFUSED;
		if (h.tag == tag) {
			*ret = h;
			return 0;
		}
		/* Our thread's, but of a call that timed out; or a dead asker's. */
		if ((h.tag & TAG_TID_MASK) == (tag & TAG_TID_MASK) || tag_owner_gone(h.tag)) {
			discard_head(sock, h.tag);
			continue;
		}
		n = backoff(&ns, deadline);
		if (n < 0)
			return n;
	}
}

/*
 * Takes the message at the head (known to be ours) into buf.  Returns the
 * payload size (after the header, which is copied into *ret) and the fd it
 * carried (or -EBADF); on error nothing is left open.
 */
static int take_own_fds(int sock, void *buf, size_t size, size_t max_fds,
			struct luo_wire_reply *ret, int *fds, size_t *ret_n_fds)
{
	size_t n_fds = 0;
	struct luo_wire_reply h;
	ssize_t n;

	n = socket_recv_message(sock, buf, size, fds, max_fds, &n_fds, MSG_DONTWAIT);
	if (n < 0)
		return (int)n;
	if ((size_t)n < sizeof(h)) {
		close_many(fds, n_fds);
		return -EBADMSG;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.size != (size_t)n - sizeof(h) || h.result > 0 || h.result < -4095 ||
	    (h.result < 0 && n_fds > 0)) {
		close_many(fds, n_fds);
		return -EBADMSG;
	}
	*ret = h;
	*ret_n_fds = n_fds;
	return (int)h.size;
}

/* The same for a reply that carries at most one fd: it, or -EBADF. */
static int take_own(int sock, void *buf, size_t size, size_t max_fds, struct luo_wire_reply *ret,
		    int *ret_fd)
{
	int fds[1] = { -EBADF };
	size_t n_fds = 0;
	int r = take_own_fds(sock, buf, size, MIN(max_fds, (size_t)1), ret, fds, &n_fds);

	if (r >= 0)
		*ret_fd = n_fds > 0 ? fds[0] : -EBADF;
	return r;
}

/* Takes and drops our remaining messages of a streamed reply. */
static int drain_stream(int sock, uint32_t tag, uint64_t deadline)
{
	for (;;) {
		struct luo_wire_reply h;
		char sink[sizeof(h)];
		int r;

		r = wait_for_own(sock, tag, deadline, &h);
		if (r < 0)
			return r;
		/* Truncating drops the payload and closes any fds: that is the point. */
		(void)socket_recv_message(sock, sink, sizeof(sink), NULL, 0, NULL, MSG_DONTWAIT);
		if (!(h.flags & LUO_WIRE_REPLY_MORE))
			return 0;
	}
}

/* Sends one message, waiting (until the deadline) for room in a full socket. */
static int send_all(int sock, const struct iovec *iov, size_t iovlen, const int *fds, size_t n_fds,
		    uint64_t deadline)
{
	for (;;) {
		ssize_t n = socket_send_message_flags(sock, iov, iovlen, fds, n_fds, MSG_DONTWAIT);
		int r;

		if (n >= 0)
			return 0;
		if (n != -EAGAIN)
			return (int)n;
		r = wait_socket(sock, POLLOUT, deadline);
		if (r < 0)
			return r;
	}
}

static int send_request(int sock, uint32_t op, uint32_t tag, const void *arg, uint32_t arg_size,
			const int *fds, size_t n_fds, uint64_t deadline)
{
	struct luo_wire_request h = { .op = op, .tag = tag };
	uint8_t trimmed[LUO_WIRE_REQUEST_MAX - sizeof(struct luo_wire_request)];
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)arg, .iov_len = arg_size },
	};

	if (sizeof(h) + (size_t)arg_size > LUO_WIRE_REQUEST_MAX) {
		uint32_t bare = op & ~LUO_WIRE_OP_REPLY_SOCKET;
		const struct luo_wire_command *cmd =
			luo_wire_command_find(LUO_WIRE_DEVICE, bare & 0xffu);

		if (!cmd)
			cmd = luo_wire_command_find(LUO_WIRE_SESSION, bare & 0xffu);
		if (!cmd || bare != (uint32_t)_IO(LIVEUPDATE_IOCTL_TYPE, cmd->nr))
			return -EMSGSIZE;
		/* The kernel would accept zeros past its struct: send the same
		 * request at the size luod knows. */
		for (uint32_t i = cmd->full_size; i < arg_size; i++)
			if (((const uint8_t *)arg)[i] != 0)
				return -E2BIG;
		memcpy(trimmed, arg, cmd->full_size);
		memcpy(trimmed, &cmd->full_size, sizeof(uint32_t));
		iov[1].iov_base = trimmed;
		iov[1].iov_len = cmd->full_size;
	}
	return send_all(sock, iov, iov[1].iov_len > 0 ? 2 : 1, fds, n_fds, deadline);
}

/* The request of one call and where its reply comes (reply_socket_attach()). */
struct request_fds {
	const int *fds;
	size_t n_fds;
	uint32_t op;
	int sp[2];	/* the private reply socket, or -EBADF */
	int reply_sock; /* sp[0], or the shared socket */
	int buf[SOCKET_MAX_FDS];
};

/*
 * A private reply socket for one call: luod's end travels with the request
 * (the last fd), ours takes the reply, so that no other holder of sock reads
 * or holds up our answer.  Made where the kernel would put the fd the reply
 * brings (the lowest free number): a reply's fd is moved onto it at the end.
 * Without a free fd for it, or with SOCKET_MAX_FDS fds to send already, the
 * reply comes on sock.  Returns 1 with a socket, 0 without, or -EBADF when
 * one of fds was not open (socketpair() took its number).
 */
static int reply_socket_attach(int sock, struct request_fds *q)
{
	q->sp[0] = q->sp[1] = -EBADF;
	q->reply_sock = sock;
	if (q->n_fds >= SOCKET_MAX_FDS ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, q->sp) < 0) {
		q->sp[0] = q->sp[1] = -EBADF;
		return 0;
	}
	for (size_t i = 0; i < q->n_fds; i++)
		if (q->fds[i] == q->sp[0] || q->fds[i] == q->sp[1]) {
			close_many(q->sp, 2);
			return -EBADF;
		}
	if (q->n_fds)
		memcpy(q->buf, q->fds, q->n_fds * sizeof(int));
	q->buf[q->n_fds++] = q->sp[1];
	q->fds = q->buf;
	q->op |= LUO_WIRE_OP_REPLY_SOCKET;
	q->reply_sock = q->sp[0];
	return 1;
}

/*
 * Sends q's request and waits until the head of its reply socket's queue is
 * its reply.  A private socket that hangs up unanswered never reached luod
 * (it had no free fd to take the request's fds, and answers EMFILE where the
 * request came): then the answer is on sock.  A hang-up may hide luod's
 * refusal of the connection: then the refusal's error is the answer.
 */
static int send_and_wait(int sock, struct request_fds *q, uint32_t tag, const void *arg,
			 uint32_t arg_size, uint64_t deadline, struct luo_wire_reply *ret)
{
	int r = send_request(sock, q->op, tag, arg, arg_size, q->fds, q->n_fds, deadline);

	/* luod's end travels with the request now: a luod that goes away without
	 * answering leaves us a hang-up, not a wait. */
	q->sp[1] = safe_close(q->sp[1]);
	if (r >= 0)
		r = wait_for_own(q->reply_sock, tag, deadline, ret);
	if (r == -ECONNRESET && q->reply_sock != sock) {
		q->sp[0] = safe_close(q->sp[0]);
		q->reply_sock = sock;
		r = wait_for_own(sock, tag, deadline, ret);
	}
	if (r == -EPIPE || r == -ECONNRESET) {
		int k = luo_wire_refusal(sock);
		if (k < 0)
			r = k;
	}
	return r;
}

/*
 * The rest of a reply that take_own() or take_own_fds() read, r being what
 * it returned: a stream left behind is drained, so that the next call does not
 * find it.  The reply's size, or -errno (the caller closes the fds it took).
 */
static int reply_rest(int reply_sock, uint32_t tag, uint64_t deadline,
		      const struct luo_wire_reply *h, int r)
{
	if (r < 0) {
		/* A stream we cannot hold must not be left for our next call. */
		if (r == -EMSGSIZE && (h->flags & LUO_WIRE_REPLY_MORE))
			(void)drain_stream(reply_sock, tag, deadline);
		return r;
	}
	if (h->flags & LUO_WIRE_REPLY_MORE) {
		int k = drain_stream(reply_sock, tag, deadline);

		if (k < 0)
			return k;
	}
	return r;
}

static int call(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds, size_t n_fds,
		int *ret_fd, bool keep_error, bool private_reply)
{
	uint8_t buf[sizeof(struct luo_wire_reply) + LUO_WIRE_REQUEST_MAX];
	struct request_fds q = {
		.fds = fds, .n_fds = n_fds, .op = op, .sp = { -EBADF, -EBADF }, .reply_sock = sock
	};
	uint64_t deadline = deadline_start();
	uint32_t tag = own_tag();
	struct luo_wire_reply h;
	int fd = -EBADF, slot = -EBADF, reply_sock, r;

	if (sock < 0)
		return -EBADF;
	if ((!arg && arg_size > 0) || n_fds > SOCKET_MAX_FDS || (!fds && n_fds > 0))
		return -EINVAL;

	r = private_reply ? reply_socket_attach(sock, &q) : 0;
	if (r < 0)
		return r;
	if (r == 0 && ret_fd) {
		/* The kernel takes a free fd before it commits anything, and answers
		 * EMFILE without one.  So does the caller's side: luod's fd would be
		 * lost in a full fd table, and the session or file with it.  The
		 * slot is held until the reply is there, and given back just before
		 * it is received.  (A private reply socket's other end is such a
		 * slot: closed once sent.) */
		slot = fcntl(sock, F_DUPFD_CLOEXEC, 0);
		if (slot < 0)
			return negative_errno();
	}
	r = send_and_wait(sock, &q, tag, arg, arg_size, deadline, &h);
	reply_sock = q.reply_sock;
	slot = safe_close(slot);
	if (r < 0)
		goto out;
	r = reply_rest(reply_sock, tag, deadline, &h,
		       take_own(reply_sock, buf, sizeof(buf), 1, &h, &fd));
	if (r < 0) {
		safe_close(fd);
		goto out;
	}
	if (h.result < 0 && !keep_error) {
		r = h.result;
		goto out;
	}

	memcpy(arg, buf + sizeof(h), MIN((size_t)arg_size, (size_t)r));
	if (fd >= 0 && q.sp[0] >= 0 && fd > q.sp[0]) {
		/* Onto our reply socket's number, the lowest that was free. */
		if (dup3(fd, q.sp[0], O_CLOEXEC) >= 0) {
			safe_close(fd);
			fd = q.sp[0];
			q.sp[0] = -EBADF;
		}
	}
	if (ret_fd)
		*ret_fd = fd;
	else
		safe_close(fd);
	r = h.result;
out:
	safe_close(q.sp[0]);
	/* Every call has a tag of its own: a reply luod sends twice (its worker
	 * died between sending it and recording that it had) is stale for the
	 * next call, as is one that comes after a timeout. */
	tag_generation_next();
	return r;
}

/*
 * A session command whose reply may carry many fds (a batch): up to
 * max_ret_fds of them into ret_fds[0..*ret_n_fds).  The reply comes on a
 * socket of the caller's own as call()'s private_reply does, the shared way
 * when none can be made.  No free slot is held for the reply's fds: a reply
 * the fd table cannot take is -EMFILE and its fds are gone (luod keeps its
 * own: a retrieve can be repeated).
 */
static int call_fds(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds,
		    size_t n_fds, int *ret_fds, size_t max_ret_fds, size_t *ret_n_fds)
{
	uint8_t buf[sizeof(struct luo_wire_reply) + LUO_WIRE_REQUEST_MAX];
	struct request_fds q = {
		.fds = fds, .n_fds = n_fds, .op = op, .sp = { -EBADF, -EBADF }, .reply_sock = sock
	};
	uint64_t deadline = deadline_start();
	uint32_t tag = own_tag();
	struct luo_wire_reply h;
	size_t got = 0;
	int reply_sock, r;

	if (sock < 0)
		return -EBADF;
	if ((!arg && arg_size > 0) || n_fds > SOCKET_MAX_FDS || (!fds && n_fds > 0) ||
	    max_ret_fds > SOCKET_MAX_FDS || (max_ret_fds > 0 && (!ret_fds || !ret_n_fds)))
		return -EINVAL;
	r = reply_socket_attach(sock, &q);
	if (r < 0)
		return r;
	r = send_and_wait(sock, &q, tag, arg, arg_size, deadline, &h);
	reply_sock = q.reply_sock;
	if (r < 0)
		goto out;
	r = reply_rest(reply_sock, tag, deadline, &h,
		       take_own_fds(reply_sock, buf, sizeof(buf), max_ret_fds, &h, ret_fds, &got));
	if (r < 0) {
		close_many(ret_fds, got);
		goto out;
	}
	/* The reply's result is the caller's to read, an error's index with it. */
	memcpy(arg, buf + sizeof(h), MIN((size_t)arg_size, (size_t)r));
	if (ret_n_fds)
		*ret_n_fds = got;
	r = h.result;
out:
	safe_close(q.sp[0]);
	tag_generation_next();
	return r;
}

int luo_wire_call_fds(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds,
		      size_t n_fds, int *ret_fds, size_t max_ret_fds, size_t *ret_n_fds)
{
	return call_fds(sock, op, arg, arg_size, fds, n_fds, ret_fds, max_ret_fds, ret_n_fds);
}

int luo_wire_call(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds, size_t n_fds,
		  int *ret_fd)
{
	return call(sock, op, arg, arg_size, fds, n_fds, ret_fd, false, false);
}

int luo_wire_call_session(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds,
			  size_t n_fds, int *ret_fd)
{
	return call(sock, op, arg, arg_size, fds, n_fds, ret_fd, false, true);
}

int luo_wire_call_keep_error(int sock, uint32_t op, void *arg, uint32_t arg_size, int *ret_fd)
{
	return call(sock, op, arg, arg_size, NULL, 0, ret_fd, true, false);
}

static int call_stream(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds,
		       size_t n_fds, bool keep_error, luo_wire_chunk_fn fn, void *userdata,
		       uint32_t tag, uint64_t deadline)
{
	_cleanup_free_ uint8_t *buf = NULL;
	/* A listing streams more than a private socket would take without
	 * waiting: its replies come on sock. */
	struct request_fds q = {
		.fds = fds, .n_fds = n_fds, .op = op, .sp = { -EBADF, -EBADF }, .reply_sock = sock
	};
	struct luo_wire_reply h;
	bool more;
	int fd = -EBADF, r, result;

	buf = malloc(LUO_WIRE_REPLY_MAX);
	if (!buf)
		return -ENOMEM;

	r = send_and_wait(sock, &q, tag, arg, arg_size, deadline, &h);
	if (r < 0)
		return r;
	r = take_own(sock, buf, LUO_WIRE_REPLY_MAX, 0, &h, &fd);
	if (r < 0)
		return r;
	safe_close(fd);
	result = h.result;
	if (result == 0 || keep_error)
		memcpy(arg, buf + sizeof(h), MIN((size_t)arg_size, (size_t)r));

	for (more = h.flags & LUO_WIRE_REPLY_MORE; more;) {
		r = wait_for_own(sock, tag, deadline, &h);
		if (r < 0)
			return r;
		/* The peeked header tells whether more follow, even if taking fails. */
		more = h.flags & LUO_WIRE_REPLY_MORE;
		r = take_own(sock, buf, LUO_WIRE_REPLY_MAX, 0, &h, &fd);
		if (r < 0) {
			if (result == 0)
				result = r;
			continue;
		}
		safe_close(fd);
		if (result < 0 && !keep_error)
			continue;
		if (h.result < 0) {
			if (result == 0)
				result = h.result;
			continue;
		}
		r = fn(buf + sizeof(h), (size_t)r, userdata);
		if (r < 0 && result == 0)
			result = r;
	}
	return result;
}

int luo_wire_call_stream(int sock, uint32_t op, void *arg, uint32_t arg_size, luo_wire_chunk_fn fn,
			 void *userdata)
{
	int r;

	if (sock < 0)
		return -EBADF;
	if ((!arg && arg_size > 0) || !fn)
		return -EINVAL;
	r = call_stream(sock, op, arg, arg_size, NULL, 0, false, fn, userdata, own_tag(),
			deadline_start());
	tag_generation_next();
	return r;
}

int luo_wire_call_stream_keep_error(int sock, uint32_t op, void *arg, uint32_t arg_size,
				    const int *fds, size_t n_fds, luo_wire_chunk_fn fn,
				    void *userdata)
{
	int r;

	if (sock < 0)
		return -EBADF;
	if ((!arg && arg_size > 0) || !fn || n_fds > SOCKET_MAX_FDS || (!fds && n_fds > 0))
		return -EINVAL;
	r = call_stream(sock, op, arg, arg_size, fds, n_fds, true, fn, userdata, own_tag(),
			deadline_start());
	tag_generation_next();
	return r;
}
