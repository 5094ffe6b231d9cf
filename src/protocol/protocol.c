/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's wire protocol, both ends
 *
 * The command table drives the kernel's argument checks on the server side,
 * so luod returns the kernel's errno for the kernel's commands word for word
 * and treats its own extensions by the same rules.
 *
 * The client side sends one request and takes the one reply carrying its tag.
 * It runs inside the preload shim's ioctl(), possibly in many threads at once
 * and in processes that share a session fd after fork(): it allocates
 * nothing, uses no stdio, and never takes a message that is not its own.
 * Lifecycle of a call: send (tag = gettid()), then repeatedly peek at the head
 * of the receive queue: ours -> take it; a dead asker's -> discard it;
 * someone else's -> back off briefly and look again.
 */
#include "protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/socket-util.h"

#define WIRE_CMD(t, n, min, full, fds, rfds, nm)                                                   \
	{                                                                                          \
		.nr = (n), .target = (t), .min_size = (min), .full_size = (full), .n_fds = (fds),  \
		.reply_fds = (rfds), .name = (nm)                                                  \
	}

static const struct luo_wire_command wire_commands[] = {
	/* The kernel's device commands; create knows luod's trailing flags. */
	WIRE_CMD(LUO_WIRE_DEVICE, LIVEUPDATE_CMD_CREATE_SESSION,
		 sizeof(struct liveupdate_ioctl_create_session),
		 sizeof(struct luo_wire_create_session), 0, 1, "CREATE_SESSION"),
	WIRE_CMD(LUO_WIRE_DEVICE, LIVEUPDATE_CMD_RETRIEVE_SESSION,
		 sizeof(struct liveupdate_ioctl_retrieve_session),
		 sizeof(struct liveupdate_ioctl_retrieve_session), 0, 1, "RETRIEVE_SESSION"),
	/* luod's device extensions. */
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_DEVICE_OPEN, sizeof(struct luo_wire_simple),
		 sizeof(struct luo_wire_simple), 0, 0, "DEVICE_OPEN"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_STATUS, offsetof(struct luo_wire_status, fd_capacity),
		 sizeof(struct luo_wire_status), 0, 0, "STATUS"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_LIST, sizeof(struct luo_wire_list),
		 sizeof(struct luo_wire_list), 0, 0, "LIST"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_SHOW, sizeof(struct luo_wire_show),
		 sizeof(struct luo_wire_show), 0, 0, "SHOW"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_UPDATE, sizeof(struct luo_wire_update),
		 sizeof(struct luo_wire_update), 0, 0, "UPDATE"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_REBOOT, sizeof(struct luo_wire_reboot),
		 sizeof(struct luo_wire_reboot), 0, 0, "REBOOT"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_IS_SESSION, sizeof(struct luo_wire_is_session),
		 sizeof(struct luo_wire_is_session), 1, 0, "IS_SESSION"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_DROP, sizeof(struct luo_wire_drop),
		 sizeof(struct luo_wire_drop), 0, 0, "DROP"),
	/* The kernel's session commands. */
	WIRE_CMD(LUO_WIRE_SESSION, LIVEUPDATE_CMD_SESSION_PRESERVE_FD,
		 sizeof(struct liveupdate_session_preserve_fd),
		 sizeof(struct liveupdate_session_preserve_fd), 1, 0, "PRESERVE_FD"),
	WIRE_CMD(LUO_WIRE_SESSION, LIVEUPDATE_CMD_SESSION_RETRIEVE_FD,
		 sizeof(struct liveupdate_session_retrieve_fd),
		 sizeof(struct liveupdate_session_retrieve_fd), 0, 1, "RETRIEVE_FD"),
	WIRE_CMD(LUO_WIRE_SESSION, LIVEUPDATE_CMD_SESSION_FINISH,
		 sizeof(struct liveupdate_session_finish), sizeof(struct liveupdate_session_finish),
		 0, 0, "FINISH"),
	WIRE_CMD(LUO_WIRE_SESSION, LIVEUPDATE_CMD_SESSION_GET_NAME,
		 sizeof(struct liveupdate_session_get_name),
		 sizeof(struct liveupdate_session_get_name), 0, 0, "GET_NAME"),
	/* luod's session extension. */
	WIRE_CMD(LUO_WIRE_SESSION, LUO_CMD_SESSION_HANDOVER, sizeof(struct luo_wire_simple),
		 sizeof(struct luo_wire_simple), 0, 0, "HANDOVER"),
};

/* The structs must have the kernel's sizes, or the E2BIG/EINVAL checks drift. */
_Static_assert(sizeof(struct liveupdate_ioctl_create_session) == 72, "create struct");
_Static_assert(sizeof(struct luo_wire_create_session) == 80, "luod create struct");
_Static_assert(sizeof(struct liveupdate_session_preserve_fd) == 16, "preserve struct");
_Static_assert(sizeof(struct liveupdate_session_retrieve_fd) == 16, "retrieve struct");
_Static_assert(sizeof(struct liveupdate_session_finish) == 8, "finish struct");
_Static_assert(sizeof(struct liveupdate_session_get_name) == 72, "get-name struct");
_Static_assert(sizeof(struct luo_wire_reply) == 16, "reply header");
_Static_assert(sizeof(struct luo_wire_request) == 8, "request header");

const struct luo_wire_command *luo_wire_command_find(enum luo_wire_target target, uint32_t nr)
{
	for (size_t i = 0; i < ELEMENTSOF(wire_commands); i++)
		if (wire_commands[i].target == target && wire_commands[i].nr == nr)
			return &wire_commands[i];
	return NULL;
}

/* ---- server side ---- */

uint32_t luo_wire_request_tag(const void *msg, size_t len)
{
	struct luo_wire_request h;

	if (!msg || len < sizeof(h))
		return 0;
	memcpy(&h, msg, sizeof(h));
	return h.tag;
}

int luo_wire_request_parse(enum luo_wire_target target, const void *msg, size_t len,
			   struct luo_wire_parsed *ret)
{
	const struct luo_wire_command *cmd;
	struct luo_wire_request h;
	const uint8_t *payload;
	size_t plen;
	uint32_t size;

	if (!ret || (!msg && len > 0))
		return -EINVAL;
	if (len < sizeof(h))
		return -EBADMSG;
	memcpy(&h, msg, sizeof(h));
	payload = (const uint8_t *)msg + sizeof(h);
	plen = len - sizeof(h);

	/* 1: the kernel looks at _IOC_NR() alone before anything else. */
	cmd = luo_wire_command_find(target, h.op & 0xffu);
	if (!cmd)
		return -EINVAL;
	/* 2: no size or direction bits, the right type byte. */
	if (h.op != (uint32_t)_IO(LIVEUPDATE_IOCTL_TYPE, cmd->nr))
		return -ENOTTY;
	/* 3: what a bad user pointer is on the wire: bytes that are not there. */
	if (plen < sizeof(uint32_t))
		return -EFAULT;
	memcpy(&size, payload, sizeof(size));
	if (size != plen)
		return -EFAULT;

	*ret = (struct luo_wire_parsed){
		.cmd = cmd,
		.op = h.op,
		.tag = h.tag,
		.payload = payload,
		.size = size,
	};
	return 0;
}

int luo_wire_request_check_struct(const struct luo_wire_parsed *p, void *ret_struct)
{
	if (!p || !p->cmd || !ret_struct || (!p->payload && p->size > 0))
		return -EINVAL;
	if (p->size < p->cmd->min_size)
		return -EINVAL;
	/* copy_struct_from_user(): a newer client may send a longer struct as long as
	 * it asks for nothing this luod does not know. */
	for (uint32_t i = p->cmd->full_size; i < p->size; i++)
		if (p->payload[i] != 0)
			return -E2BIG;

	uint32_t n = MIN(p->size, p->cmd->full_size);
	memcpy(ret_struct, p->payload, n);
	memset((uint8_t *)ret_struct + n, 0, p->cmd->full_size - n);
	return 0;
}

int luo_wire_request_check_fds(const struct luo_wire_parsed *p, size_t n_fds)
{
	if (!p || !p->cmd)
		return -EINVAL;
	if (n_fds > p->cmd->n_fds)
		return -EINVAL;
	/* The kernel's fdget() on a missing file. */
	if (n_fds < p->cmd->n_fds)
		return -EBADF;
	return 0;
}

uint32_t luo_wire_reply_size(const struct luo_wire_parsed *p)
{
	if (!p || !p->cmd)
		return 0;
	return MIN(p->size, p->cmd->full_size);
}

static int send_all(int sock, const struct iovec *iov, size_t iovlen, const int *fds, size_t n_fds)
{
	for (;;) {
		ssize_t n = socket_send_message(sock, iov, iovlen, fds, n_fds);

		if (n >= 0)
			return 0;
		if (n != -EAGAIN)
			return (int)n;
		/* A non-blocking socket whose buffer is full: wait for room. */
		struct pollfd pfd = { .fd = sock, .events = POLLOUT };
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return negative_errno();
	}
}

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
	/* The server must never block on one slow client: no retry on EAGAIN. */
	n = socket_send_message(sock, iov, size > 0 ? 2 : 1, fds, n_fds);
	return n < 0 ? (int)n : 0;
}

/* ---- client side ---- */

/* Serialises discarding a dead asker's reply among this process's threads, so
 * that two of them never both discard "the head" and so drop a live reply. */
static pthread_mutex_t discard_lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t own_tag(void)
{
	return (uint32_t)gettid();
}

/* Whether the thread that asked for a reply tagged tag is gone. */
static bool tag_owner_gone(uint32_t tag)
{
	/* 0 and values past INT_MAX are no thread id (kill() would read them as
	 * process groups), so such a reply can be nobody's. */
	if (tag == 0 || tag > INT_MAX)
		return true;
	return kill((pid_t)tag, 0) < 0 && errno == ESRCH;
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

static void backoff(unsigned *ns)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = *ns };

	(void)nanosleep(&ts, NULL);
	if (*ns < 1000000)
		*ns *= 2;
}

/* Whether the peer has shut down its sending side (or is gone). */
static bool peer_hung_up(int sock)
{
	struct pollfd pfd = { .fd = sock, .events = POLLIN | POLLRDHUP };

	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLRDHUP));
}

/*
 * Waits until the head of the queue is a message tagged tag; it stays queued.
 * The peek itself blocks (on a blocking socket), which saves a poll() per
 * call on the path every request takes.
 */
static int wait_for_own(int sock, uint32_t tag, struct luo_wire_reply *ret)
{
	unsigned ns = 2000;

	for (;;) {
		struct luo_wire_reply h;
		int n;

		n = peek_header(sock, &h, 0);
		if (n == -EAGAIN) {
			/* A non-blocking socket: wait for something to look at. */
			struct pollfd pfd = { .fd = sock, .events = POLLIN | POLLRDHUP };

			if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
				return negative_errno();
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
		if (tag_owner_gone(h.tag)) {
			discard_head(sock, h.tag);
			continue;
		}
		backoff(&ns);
	}
}

/*
 * Takes the message at the head (known to be ours) into buf.  Returns the
 * payload size (after the header, which is copied into *ret) and the fd it
 * carried (or -EBADF); on error nothing is left open.
 */
static int take_own(int sock, void *buf, size_t size, size_t max_fds, struct luo_wire_reply *ret,
		    int *ret_fd)
{
	int fds[1] = { -EBADF };
	size_t n_fds = 0;
	struct luo_wire_reply h;
	ssize_t n;

	n = socket_recv_message(sock, buf, size, fds, MIN(max_fds, (size_t)1), &n_fds, 0);
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
	*ret_fd = n_fds > 0 ? fds[0] : -EBADF;
	return (int)h.size;
}

/* Takes and drops our remaining messages of a streamed reply. */
static int drain_stream(int sock, uint32_t tag)
{
	for (;;) {
		struct luo_wire_reply h;
		char sink[sizeof(h)];
		int r;

		r = wait_for_own(sock, tag, &h);
		if (r < 0)
			return r;
		/* Truncating drops the payload and closes any fds: that is the point. */
		(void)socket_recv_message(sock, sink, sizeof(sink), NULL, 0, NULL, 0);
		if (!(h.flags & LUO_WIRE_REPLY_MORE))
			return 0;
	}
}

static int send_request(int sock, uint32_t op, uint32_t tag, const void *arg, uint32_t arg_size,
			const int *fds, size_t n_fds)
{
	struct luo_wire_request h = { .op = op, .tag = tag };
	uint8_t trimmed[LUO_WIRE_REQUEST_MAX - sizeof(struct luo_wire_request)];
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)arg, .iov_len = arg_size },
	};

	if (sizeof(h) + (size_t)arg_size > LUO_WIRE_REQUEST_MAX) {
		const struct luo_wire_command *cmd =
			luo_wire_command_find(LUO_WIRE_DEVICE, op & 0xffu);

		if (!cmd)
			cmd = luo_wire_command_find(LUO_WIRE_SESSION, op & 0xffu);
		if (!cmd || op != (uint32_t)_IO(LIVEUPDATE_IOCTL_TYPE, cmd->nr))
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
	return send_all(sock, iov, iov[1].iov_len > 0 ? 2 : 1, fds, n_fds);
}

/*
 * Sends a request and waits until the head of the queue is its reply (left
 * queued).  A hang-up may hide luod's refusal of the connection: then the
 * refusal's error is the answer.
 */
static int ask(int sock, uint32_t op, uint32_t tag, const void *arg, uint32_t arg_size,
	       const int *fds, size_t n_fds, struct luo_wire_reply *ret)
{
	int r = send_request(sock, op, tag, arg, arg_size, fds, n_fds);

	if (r >= 0)
		r = wait_for_own(sock, tag, ret);
	if (r == -EPIPE || r == -ECONNRESET) {
		int k = luo_wire_refusal(sock);
		if (k < 0)
			return k;
	}
	return r;
}

int luo_wire_call(int sock, uint32_t op, void *arg, uint32_t arg_size, const int *fds, size_t n_fds,
		  int *ret_fd)
{
	uint8_t buf[sizeof(struct luo_wire_reply) + LUO_WIRE_REQUEST_MAX];
	uint32_t tag = own_tag();
	struct luo_wire_reply h;
	int fd = -EBADF, slot = -EBADF, r;

	if (sock < 0)
		return -EBADF;
	if ((!arg && arg_size > 0) || n_fds > SOCKET_MAX_FDS || (!fds && n_fds > 0))
		return -EINVAL;

	/* The kernel takes a free fd before it commits anything, and answers EMFILE
	 * without one.  So does the caller's side: luod's fd would be lost in a
	 * full fd table, and the session or file with it.  The slot is held until
	 * the reply is there, and given back just before it is received. */
	if (ret_fd) {
		slot = fcntl(sock, F_DUPFD_CLOEXEC, 0);
		if (slot < 0)
			return negative_errno();
	}
	r = ask(sock, op, tag, arg, arg_size, fds, n_fds, &h);
	slot = safe_close(slot);
	if (r < 0)
		return r;
	r = take_own(sock, buf, sizeof(buf), 1, &h, &fd);
	if (r < 0) {
		/* A stream we cannot hold must not be left for our next call. */
		if (r == -EMSGSIZE && (h.flags & LUO_WIRE_REPLY_MORE))
			(void)drain_stream(sock, tag);
		return r;
	}
	if (h.flags & LUO_WIRE_REPLY_MORE) {
		int k = drain_stream(sock, tag);
		if (k < 0) {
			safe_close(fd);
			return k;
		}
	}
	if (h.result < 0)
		return h.result;

	memcpy(arg, buf + sizeof(h), MIN((size_t)arg_size, (size_t)r));
	if (ret_fd)
		*ret_fd = fd;
	else
		safe_close(fd);
	return 0;
}

int luo_wire_call_stream(int sock, uint32_t op, void *arg, uint32_t arg_size, luo_wire_chunk_fn fn,
			 void *userdata)
{
	_cleanup_free_ uint8_t *buf = NULL;
	uint32_t tag = own_tag();
	struct luo_wire_reply h;
	bool more;
	int fd = -EBADF, r, result;

	if (sock < 0)
		return -EBADF;
	if ((!arg && arg_size > 0) || !fn)
		return -EINVAL;
	buf = malloc(LUO_WIRE_REPLY_MAX);
	if (!buf)
		return -ENOMEM;

	r = ask(sock, op, tag, arg, arg_size, NULL, 0, &h);
	if (r < 0)
		return r;
	r = take_own(sock, buf, LUO_WIRE_REPLY_MAX, 0, &h, &fd);
	if (r < 0)
		return r;
	safe_close(fd);
	result = h.result;
	if (result == 0)
		memcpy(arg, buf + sizeof(h), MIN((size_t)arg_size, (size_t)r));

	for (more = h.flags & LUO_WIRE_REPLY_MORE; more;) {
		r = wait_for_own(sock, tag, &h);
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
		if (result < 0)
			continue;
		if (h.result < 0) {
			result = h.result;
			continue;
		}
		r = fn(buf + sizeof(h), (size_t)r, userdata);
		if (r < 0)
			result = r;
	}
	return result;
}
