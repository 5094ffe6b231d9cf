/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: libluo, the client library
 *
 * Thin and stateless: every call is one request to luod over the caller's
 * connection or session fd (src/protocol/), or one of the kernel's ioctls
 * when the fd is the kernel's own (/dev/liveupdate or an anonymous-inode
 * session fd).  The library keeps nothing between calls, so any number of
 * threads and processes may use the same fds at once.
 *
 * Which path a call takes is decided per fd: a SOCK_SEQPACKET unix socket
 * whose peer is luod is luod's (see fd_kind()), a character device is
 * /dev/liveupdate, an fd whose /proc link reads "anon_inode:[luo_session]"
 * is a kernel session.
 *
 * Every wait for luod (connect, room to send, the reply) ends at a deadline:
 * luo_set_timeout() sets it for the whole process, LUO_WIRE_TIMEOUT_DEFAULT_MS
 * (30 s) by default, and a call that reaches it returns -ETIMEDOUT.
 *
 * LUO_LIB_FORCE_IOCTL=1 in the environment (meant for the library's tests
 * only) takes the ioctl path for every fd, so that the ioctl code can be
 * exercised against the preload shim on a kernel without LUO.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "basic/socket-util.h"
#include "luo/luo.h"
#include "luo/uapi.h"
#include "protocol/protocol.h"
#include "protocol/transport.h"

#define KERNEL_SESSION_LINK "anon_inode:[luo_session]"

_Static_assert(LUO_SESSION_NAME_LENGTH == LIVEUPDATE_SESSION_NAME_LENGTH, "name field");

enum fd_kind {
	FD_LUOD,   /* a socket to luod: messages */
	FD_KERNEL, /* the kernel's (or the shim's) fd: ioctls */
};

/* Test builds only (-Dfault_injection=true): serve every fd with the
 * kernel's ioctls, to test that path under luo-preload.so on any kernel.  A
 * release build reads no such variable. */
static bool force_ioctl(void)
{
#ifdef LUO_TEST_HOOKS
	const char *e = getenv("LUO_LIB_FORCE_IOCTL");

	return e && strcmp(e, "1") == 0;
#else
	return false;
#endif
}

static int is_kernel_session_link(int fd)
{
	char link[64];
	int r;

	r = fd_read_link(fd, link, sizeof(link));
	if (r < 0)
		return r;
	return strncmp(link, KERNEL_SESSION_LINK, strlen(KERNEL_SESSION_LINK)) == 0;
}

/*
 * 1 if fd (no socket) is a kernel session fd, 0 if not, -errno (-EBADF for a
 * closed fd).  A kernel with the session filesystem (kernel/patches) says so
 * itself: fstatfs() reports LUO_SESSION_MAGIC.  Mainline's sessions are
 * anonymous inodes, told apart from the others only by the /proc link text;
 * without /proc there is no telling them: then it is none.
 */
static int is_kernel_session(int fd)
{
	struct statfs sf;

	if (fstatfs(fd, &sf) < 0)
		return negative_errno();
	if ((uint32_t)sf.f_type == LUO_SESSION_MAGIC)
		return 1;
	if ((uint32_t)sf.f_type != ANON_INODE_FS_MAGIC)
		return 0;
	return is_kernel_session_link(fd) > 0 ? 1 : 0;
}

/* Returns SOCK_* of fd, 0 if it is no socket, or -errno (-EBADF if closed). */
static int socket_type(int fd)
{
	int type = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return errno == ENOTSOCK ? 0 : negative_errno();
	return type;
}

/*
 * Whether a SOCK_SEQPACKET socket may be luod's, by its peer's credentials
 * (SO_PEERCRED: the process that created the listening socket or the
 * socketpair, as it was then).  luod is another process running as root (the
 * system luod) or as the caller's own uid (a per-user luod).  A socketpair the
 * caller made itself names the caller; a socket of another user's process
 * names that user: neither can be luod's, and waiting for an answer from them
 * would only end at the timeout.  (A connection to a listening socket the
 * caller made and passed to luod, as a service manager does, names the caller
 * too: its peer has an address, a socketpair's has none.)
 */
static int peer_may_be_luod(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	/* A socket of another family has no peer credentials: pid 0. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return negative_errno();
	if (cred.pid <= 0)
		return 0;
	if (cred.pid == getpid()) {
		struct sockaddr_un sa = {};
		socklen_t salen = sizeof(sa);

		return getpeername(fd, (struct sockaddr *)&sa, &salen) == 0 &&
		       salen > offsetof(struct sockaddr_un, sun_path);
	}
	/* root may use any user's luod (with --socket or $LUO_SOCKET). */
	return cred.uid == 0 || cred.uid == geteuid() || geteuid() == 0;
}

/*
 * The kind of fd: luod's socket, or the kernel's own (for a device, a
 * character device; for a session, an fd whose link says so).  Two
 * getsockopt()s and a getpid() on the common path: the request round trip is
 * what luo is measured by.  Anything else gets the kernel's answer to a
 * foreign ioctl.
 */
static int fd_kind(int fd, bool device)
{
	struct stat st;
	int r;

	if (force_ioctl())
		return FD_KERNEL;
	r = socket_type(fd);
	if (r < 0)
		return r;
	if (r == SOCK_SEQPACKET) {
		r = peer_may_be_luod(fd);
		if (r < 0)
			return r;
		return r > 0 ? FD_LUOD : -ENOTTY;
	}
	if (r != 0)
		return -ENOTTY;
	if (device) {
		if (fstat(fd, &st) < 0)
			return negative_errno();
		return S_ISCHR(st.st_mode) ? FD_KERNEL : -ENOTTY;
	}
	/* fd is open (getsockopt() said so): a link we cannot read is no session. */
	return is_kernel_session(fd) > 0 ? FD_KERNEL : -ENOTTY;
}

static int kernel_ioctl(int fd, unsigned long cmd, void *arg)
{
	int r;

	do
		r = ioctl(fd, cmd, arg);
	while (r < 0 && errno == EINTR);
	return r < 0 ? negative_errno() : 0;
}

/*
 * One command down fd's path: the kernel's ioctl, or a request to luod that
 * carries send_fds[0..n_send) and takes the reply's fds: one into *ret_fds
 * (if not NULL) for a single command; for a batch (ret_n not NULL) up to
 * max_ret of them into ret_fds[0..*ret_n), and the reply's struct even on an
 * error (the index of the file that failed).  Every session command, single
 * or batch, goes through here.
 */
static int call_fds(int fd, int kind, unsigned long cmd, void *arg, uint32_t size,
		    const int *send_fds, size_t n_send, int *ret_fds, size_t max_ret, size_t *ret_n)
{
	if (kind == FD_KERNEL)
		return kernel_ioctl(fd, cmd, arg);
	if (ret_n)
		/* A batch: its replies come on a socket of our own too. */
		return luo_wire_call_fds(fd, (uint32_t)cmd, arg, size, send_fds, n_send, ret_fds,
					 max_ret, ret_n);
	/* A session command's reply comes on a socket of our own: other holders
	 * of the session fd neither read nor hold it up. */
	if (luo_wire_command_find(LUO_WIRE_SESSION, (uint32_t)cmd & 0xffu))
		return luo_wire_call_session(fd, (uint32_t)cmd, arg, size, send_fds, n_send,
					     ret_fds);
	return luo_wire_call(fd, (uint32_t)cmd, arg, size, send_fds, n_send, ret_fds);
}

static int call(int fd, int kind, unsigned long cmd, void *arg, uint32_t size, const int *send_fd,
		int *ret_fd)
{
	return call_fds(fd, kind, cmd, arg, size, send_fd, send_fd ? 1 : 0, ret_fd, ret_fd ? 1 : 0,
			NULL);
}

/*
 * A command that answers with a new fd: the kernel writes it into the
 * struct's fd field (*fd_field); luod's reply must carry it.
 */
static int call_for_fd(int fd, int kind, unsigned long cmd, void *arg, uint32_t size,
		       const __s32 *fd_field, int *ret_fd)
{
	int new_fd = -EBADF, r;

	r = call(fd, kind, cmd, arg, size, NULL, &new_fd);
	if (r < 0)
		return r;
	if (kind == FD_KERNEL)
		new_fd = *fd_field;
	else if (new_fd < 0)
		return -EBADMSG;
	*ret_fd = new_fd;
	return 0;
}

/* Name checks shared by create and retrieve: 1..63 bytes and a NUL within 64. */
static int check_name(const char *name)
{
	size_t n;

	if (!name)
		return -EINVAL;
	n = strnlen(name, LUO_SESSION_NAME_LENGTH);
	if (n == 0 || n == LUO_SESSION_NAME_LENGTH)
		return -EINVAL;
	return (int)n;
}

_public_ int luo_connect(const char *socket_path)
{
	if (socket_path && !*socket_path)
		return -EINVAL;
	if (socket_path)
		return luo_wire_connect(socket_path);
	return luo_wire_connect_default(NULL);
}

_public_ int luo_set_timeout(int timeout_ms)
{
	return luo_wire_set_timeout(timeout_ms);
}

_public_ int luo_session_create(int luo_fd, const char *name, uint64_t flags, int *ret_session_fd)
{
	int kind, n;

	if (luo_fd < 0)
		return -EBADF;
	n = check_name(name);
	if (n < 0)
		return n;
	if (!ret_session_fd || (flags & ~(uint64_t)LUO_SESSION_HANDOVER_ON_CLOSE))
		return -EINVAL;

	kind = fd_kind(luo_fd, true);
	if (kind < 0)
		return kind;
	if (kind == FD_KERNEL) {
		struct liveupdate_ioctl_create_session a = { .size = sizeof(a), .fd = -1 };

		/* The kernel has no flags; pretending would lose the promise. */
		if (flags != 0)
			return -EOPNOTSUPP;
		memcpy(a.name, name, n);
		return call_for_fd(luo_fd, kind, LIVEUPDATE_IOCTL_CREATE_SESSION, &a, sizeof(a),
				   &a.fd, ret_session_fd);
	}

	struct luo_wire_create_session w = { .size = sizeof(w), .fd = -1, .flags = flags };
	memcpy(w.name, name, n);
	return call_for_fd(luo_fd, kind, LIVEUPDATE_IOCTL_CREATE_SESSION, &w, sizeof(w), &w.fd,
			   ret_session_fd);
}

_public_ int luo_session_retrieve(int luo_fd, const char *name, int *ret_session_fd)
{
	struct liveupdate_ioctl_retrieve_session a = { .size = sizeof(a), .fd = -1 };
	int kind, n;

	if (luo_fd < 0)
		return -EBADF;
	n = check_name(name);
	if (n < 0)
		return n;
	if (!ret_session_fd)
		return -EINVAL;
	memcpy(a.name, name, n);

	kind = fd_kind(luo_fd, true);
	if (kind < 0)
		return kind;
	return call_for_fd(luo_fd, kind, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &a, sizeof(a), &a.fd,
			   ret_session_fd);
}

#define RETRIEVE_WAIT_FIRST_NSEC 1000000LL /* 1 ms */
#define RETRIEVE_WAIT_MAX_NSEC 50000000LL  /* 50 ms */

static int64_t monotonic_nsec(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleeps until the monotonic time t (absolute, so a signal costs no time). */
static void sleep_until_nsec(int64_t t)
{
	struct timespec ts = { .tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/*
 * Neither luod nor the kernel can tell a client when a name becomes
 * retrievable, so this polls: a retry costs one request, and the backoff
 * (1 ms doubling to 50 ms) keeps a long wait cheap while a successor that
 * starts just before its predecessor's hand-over still gets the session
 * within a few milliseconds.  The last try is made at the deadline, so that
 * -ETIMEDOUT always means "not there when the time was up".
 */
_public_ int luo_session_retrieve_wait(int luo_fd, const char *name, int timeout_ms,
				       int *ret_session_fd)
{
	int64_t deadline = 0, delay = RETRIEVE_WAIT_FIRST_NSEC;
	int r;

	if (luo_fd < 0)
		return -EBADF;
	r = check_name(name);
	if (r < 0)
		return r;
	if (!ret_session_fd || timeout_ms < -1)
		return -EINVAL;
	if (timeout_ms > 0)
		deadline = monotonic_nsec() + (int64_t)timeout_ms * 1000000LL;

	for (;;) {
		int64_t now, wake;

		r = luo_session_retrieve(luo_fd, name, ret_session_fd);
		if (r != -ENOENT)
			return r;
		if (timeout_ms == 0)
			return -ETIMEDOUT;
		now = monotonic_nsec();
		if (timeout_ms > 0 && now >= deadline)
			return -ETIMEDOUT;
		wake = now + delay;
		if (timeout_ms > 0 && wake > deadline)
			wake = deadline;
		sleep_until_nsec(wake);
		delay = MIN(delay * 2, RETRIEVE_WAIT_MAX_NSEC);
	}
}

_public_ int luo_session_preserve_fd(int session_fd, uint64_t token, int fd)
{
	struct liveupdate_session_preserve_fd a = { .size = sizeof(a), .fd = -1, .token = token };
	int kind;

	if (session_fd < 0 || fd < 0)
		return -EBADF;
	kind = fd_kind(session_fd, false);
	if (kind < 0)
		return kind;
	/* The kernel takes the file in the struct; luod as SCM_RIGHTS, which
	 * sendmsg() refuses for a closed fd with EBADF before anything is sent. */
	if (kind == FD_KERNEL)
		a.fd = fd;
	return call(session_fd, kind, LIVEUPDATE_SESSION_PRESERVE_FD, &a, sizeof(a), &fd, NULL);
}

_public_ int luo_session_retrieve_fd(int session_fd, uint64_t token, int *ret_fd)
{
	struct liveupdate_session_retrieve_fd a = { .size = sizeof(a), .fd = -1, .token = token };
	int kind;

	if (session_fd < 0)
		return -EBADF;
	if (!ret_fd)
		return -EINVAL;
	kind = fd_kind(session_fd, false);
	if (kind < 0)
		return kind;
	return call_for_fd(session_fd, kind, LIVEUPDATE_SESSION_RETRIEVE_FD, &a, sizeof(a), &a.fd,
			   ret_fd);
}

_public_ int luo_session_finish(int session_fd)
{
	struct liveupdate_session_finish a = { .size = sizeof(a) };
	int kind;

	if (session_fd < 0)
		return -EBADF;
	kind = fd_kind(session_fd, false);
	if (kind < 0)
		return kind;
	return call(session_fd, kind, LIVEUPDATE_SESSION_FINISH, &a, sizeof(a), NULL, NULL);
}

_public_ int luo_session_get_name(int session_fd, char ret_name[LUO_SESSION_NAME_LENGTH])
{
	struct liveupdate_session_get_name a = { .size = sizeof(a) };
	int kind, r;

	if (session_fd < 0)
		return -EBADF;
	if (!ret_name)
		return -EINVAL;
	kind = fd_kind(session_fd, false);
	if (kind < 0)
		return kind;
	r = call(session_fd, kind, LIVEUPDATE_SESSION_GET_NAME, &a, sizeof(a), NULL, NULL);
	if (r < 0)
		return r;
	/* Never hand the caller an unterminated string, whatever the peer sent. */
	a.name[LUO_SESSION_NAME_LENGTH - 1] = 0;
	memcpy(ret_name, a.name, LUO_SESSION_NAME_LENGTH);
	return 0;
}

/* ---- batches ---- */

/* Ids of this process's batches: the thread and a count, never 0. */
static _Thread_local uint32_t batch_count;

static uint64_t next_batch_id(void)
{
	return ((uint64_t)(uint32_t)gettid() << 32) | ++batch_count;
}

/* The first of fds[0..n) that is not open, or n. */
static size_t first_closed(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] < 0 || fcntl(fds[i], F_GETFD) < 0)
			return i;
	return n;
}

static void set_failed(size_t *ret_failed, size_t i)
{
	if (ret_failed)
		*ret_failed = i;
}

/* The kernel has one ioctl per file, and no way to take a file back out. */
static int kernel_preserve_fds(int session_fd, size_t n, const uint64_t tokens[], const int fds[],
			       size_t *ret_failed)
{
	for (size_t i = 0; i < n; i++) {
		struct liveupdate_session_preserve_fd a = {
			.size = sizeof(a),
			.fd = fds[i],
			.token = tokens[i],
		};
		int r = kernel_ioctl(session_fd, LIVEUPDATE_SESSION_PRESERVE_FD, &a);

		if (r < 0) {
			set_failed(ret_failed, i);
			return r;
		}
	}
	return 0;
}

static int kernel_retrieve_fds(int session_fd, size_t n, const uint64_t tokens[], int ret_fds[],
			       size_t *ret_failed)
{
	for (size_t i = 0; i < n; i++) {
		struct liveupdate_session_retrieve_fd a = {
			.size = sizeof(a),
			.fd = -1,
			.token = tokens[i],
		};
		int r = kernel_ioctl(session_fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &a);

		if (r < 0) {
			close_many(ret_fds, i);
			set_failed(ret_failed, i);
			return r;
		}
		ret_fds[i] = a.fd;
	}
	return 0;
}

/*
 * The checks both batch calls begin with.  1 and the fd's kind in *ret_kind,
 * 0 for an empty batch (nothing to do), or -errno.
 */
static int batch_begin(int session_fd, size_t n, const uint64_t tokens[], const int *fds,
		       int *ret_kind)
{
	if (session_fd < 0)
		return -EBADF;
	if (n > 0 && (!tokens || !fds))
		return -EINVAL;
	if (n == 0)
		return 0;
	*ret_kind = fd_kind(session_fd, false);
	return *ret_kind < 0 ? *ret_kind : 1;
}

/* Tells luod to drop what it staged of batch id (a part could not be sent). */
static void abort_batch(int session_fd, int kind, uint64_t id)
{
	struct luo_wire_fds w = {
		.size = LUO_WIRE_FDS_HEADER,
		.flags = LUO_WIRE_FDS_ABORT,
		.failed = LUO_WIRE_FDS_NONE,
		.batch = id,
	};
	size_t got = 0;

	(void)call_fds(session_fd, kind, LUO_SESSION_PRESERVE_FDS, &w, LUO_WIRE_FDS_HEADER, NULL, 0,
		       NULL, 0, &got);
}

/*
 * luod's path: parts of at most LUO_WIRE_BATCH_MAX files, one message each
 * with its reply; luod stages them and applies the batch at the last
 * (protocol.h), so that it is all or nothing however many parts it takes.
 */
_public_ int luo_session_preserve_fds(int session_fd, size_t n, const uint64_t tokens[],
				      const int fds[], size_t *ret_failed)
{
	uint64_t id;
	int kind, r;

	r = batch_begin(session_fd, n, tokens, fds, &kind);
	if (r <= 0) {
		if (r < 0)
			set_failed(ret_failed, n);
		return r;
	}
	if (kind == FD_KERNEL)
		return kernel_preserve_fds(session_fd, n, tokens, fds, ret_failed);

	id = next_batch_id();
	for (size_t start = 0; start < n; start += LUO_WIRE_BATCH_MAX) {
		size_t cnt = MIN(n - start, (size_t)LUO_WIRE_BATCH_MAX), got = 0;
		struct luo_wire_fds w = {
			.size = (uint32_t)(LUO_WIRE_FDS_HEADER + 8 * cnt),
			.flags = (start == 0 ? LUO_WIRE_FDS_BEGIN : 0) |
				 (start + cnt == n ? LUO_WIRE_FDS_COMMIT : 0),
			.count = (uint32_t)cnt,
			.failed = LUO_WIRE_FDS_NONE,
			.batch = id,
		};

		memcpy(w.tokens, tokens + start, cnt * sizeof(uint64_t));
		r = call_fds(session_fd, kind, LUO_SESSION_PRESERVE_FDS, &w, w.size, fds + start,
			     cnt, NULL, 0, &got);
		/* A part that failed on our side may leave earlier ones staged; luod
		 * has dropped them already if it answered the error itself. */
		if (r < 0 && n > LUO_WIRE_BATCH_MAX)
			abort_batch(session_fd, kind, id);
		if (r == -EBADF) {
			/* sendmsg() refuses a closed fd before anything is sent. */
			size_t k = first_closed(fds + start, cnt);

			if (k < cnt) {
				set_failed(ret_failed, start + k);
				return r;
			}
		}
		if (r < 0) {
			/* luod ended the batch; the index it gives is in the whole batch. */
			set_failed(ret_failed,
				   w.failed == LUO_WIRE_FDS_NONE ? n : (size_t)w.failed);
			return r;
		}
	}
	return 0;
}

_public_ int luo_session_retrieve_fds(int session_fd, size_t n, const uint64_t tokens[],
				      int ret_fds[], size_t *ret_failed)
{
	int kind, r;

	r = batch_begin(session_fd, n, tokens, ret_fds, &kind);
	if (r <= 0) {
		if (r < 0)
			set_failed(ret_failed, n);
		return r;
	}
	if (kind == FD_KERNEL)
		return kernel_retrieve_fds(session_fd, n, tokens, ret_fds, ret_failed);

	for (size_t start = 0; start < n; start += LUO_WIRE_BATCH_MAX) {
		size_t cnt = MIN(n - start, (size_t)LUO_WIRE_BATCH_MAX), got = 0;
		struct luo_wire_fds w = {
			.size = (uint32_t)(LUO_WIRE_FDS_HEADER + 8 * cnt),
			.count = (uint32_t)cnt,
			.failed = LUO_WIRE_FDS_NONE,
		};

		memcpy(w.tokens, tokens + start, cnt * sizeof(uint64_t));
		r = call_fds(session_fd, kind, LUO_SESSION_RETRIEVE_FDS, &w, w.size, NULL, 0,
			     ret_fds + start, cnt, &got);
		if (r >= 0 && got != cnt) {
			close_many(ret_fds + start, got);
			r = -EBADMSG;
		}
		if (r < 0) {
			/* All or nothing for the caller: what earlier parts gave goes. */
			close_many(ret_fds, start);
			set_failed(ret_failed, w.failed == LUO_WIRE_FDS_NONE || w.failed >= cnt
						       ? n
						       : start + w.failed);
			return r;
		}
	}
	return 0;
}

/* A session command only luod has: -EOPNOTSUPP on the kernel's session fds. */
static int luod_session_call(int session_fd, unsigned long cmd, void *arg, uint32_t size)
{
	int kind;

	if (session_fd < 0)
		return -EBADF;
	kind = fd_kind(session_fd, false);
	if (kind < 0)
		return kind;
	if (kind == FD_KERNEL)
		return -EOPNOTSUPP;
	return luo_wire_call_session(session_fd, (uint32_t)cmd, arg, size, NULL, 0, NULL);
}

/* The kernel hands sessions over only all at once, by kexec. */
_public_ int luo_session_handover(int session_fd)
{
	struct luo_wire_simple a = { .size = sizeof(a) };

	return luod_session_call(session_fd, LUO_SESSION_HANDOVER, &a, sizeof(a));
}

/* The kernel's sessions belong to the one opener of its device: no uid. */
_public_ int luo_session_get_owner(int session_fd, uid_t *ret_uid)
{
	struct luo_wire_get_owner a = { .size = sizeof(a) };
	int r;

	if (session_fd >= 0 && !ret_uid)
		return -EINVAL;
	r = luod_session_call(session_fd, LUO_SESSION_GET_OWNER, &a, sizeof(a));
	if (r < 0)
		return r;
	*ret_uid = (uid_t)a.uid;
	return 0;
}

_public_ int luo_session_drop(int luo_fd, const char *name)
{
	struct luo_wire_drop a = { .size = sizeof(a), .kind = LUO_DROP_ANY };
	int kind, n;

	if (luo_fd < 0)
		return -EBADF;
	n = check_name(name);
	if (n < 0)
		return n;
	memcpy(a.name, name, n);
	kind = fd_kind(luo_fd, true);
	if (kind < 0)
		return kind;
	/* The kernel keeps an incoming session until it is retrieved or the next kexec. */
	if (kind == FD_KERNEL)
		return -EOPNOTSUPP;
	return luo_wire_call(luo_fd, LUO_IOCTL_DROP, &a, sizeof(a), NULL, 0, NULL);
}

_public_ int luo_fd_is_session(int fd)
{
	struct luo_wire_is_session a = { .size = sizeof(a) };
	_cleanup_close_ int luo_fd = -EBADF;
	int r;

	if (fd < 0)
		return -EBADF;
	/* -EBADF for a closed fd; a kernel session is no socket. */
	r = socket_type(fd);
	if (r < 0)
		return r;
	if (r == 0)
		/* fstatfs() first (LUO_SESSION_MAGIC), else the /proc link text. */
		return is_kernel_session(fd);
	if (r != SOCK_SEQPACKET)
		return 0;
	r = peer_may_be_luod(fd);
	if (r <= 0)
		return r;

	/* Only luod knows the inodes of the session ends it handed out. */
	luo_fd = luo_connect(NULL);
	if (luo_fd == -ENOENT || luo_fd == -ECONNREFUSED)
		return 0; /* no luod: no live luod session either */
	if (luo_fd < 0)
		return luo_fd;
	r = luo_wire_call(luo_fd, LUO_IOCTL_IS_SESSION, &a, sizeof(a), &fd, 1, NULL);
	if (r < 0)
		return r;
	return a.is_session ? 1 : 0;
}
