/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the socket handler ("socket-v2", and "socket-v1" to read an older
 * luod's files) and the netns FLB ("netns-v1")
 *
 * Serves every socket, of any family and in any state (listening, connected,
 * unix, TCP, UDP, ...).  luod holds the socket itself, so a listening socket
 * keeps its port and its accept queue, and a connected one its peer and its
 * buffered bytes: nothing has to be rebuilt, only checked.
 *
 *   preserve: record dev, ino, SO_DOMAIN, and for a unix socket SO_TYPE (the
 *             others' SO_TYPE and SO_PROTOCOL, and every socket's namespace,
 *             are recorded as unknown: they would only be checked, and the
 *             inode names the socket); a unix socket is closed to fds
 *             (below)
 *   unpreserve: open a unix socket to fds again
 *   retrieve: check the socket is still the recorded one (-EIO if not; not
 *             asked again of a socket luod has held since it checked it at
 *             preserve), and open a unix socket to fds again
 *
 * A unix socket in luod's hands must not carry a session fd: the session
 * would hold itself open (its socket holds its own fd, luod holds the
 * socket) and never see its last close, and two sessions could hold each
 * other so.  So a connected or datagram unix socket is refused (-ELOOP) while
 * any socket is in flight in its receive queue (a session fd is one; any
 * other could later bring one in), and while it is preserved it refuses fds
 * itself: SO_PASSRIGHTS is off (a sender gets EPERM), and put back as it was
 * when the file leaves luod's hands.  The queue is read with MSG_PEEK from
 * offset 0 (SO_PEEK_OFF, put back after): nothing is taken off it.  A
 * listening unix socket is left as it is: its connections inherit the option
 * and would keep it after the program accepts them.  Kernels before 6.16
 * lack SO_PASSRIGHTS: there only the check at preserve is made.
 *
 * Identity for EBUSY is the socket's inode.
 *
 * The record's namespace field (once the inode of the socket's namespace,
 * from SIOCGSKNS) is written as unknown: a socket's namespace is fixed when
 * the socket is made, so the inode that names the socket names it too, and
 * asking cost a system call per socket in every restart of a server.
 *
 * Sockets depend on the network namespace they live in, which is shared by
 * all of them: that is the netns File-Lifecycle-Bound state.  The first
 * preserved socket makes the FLB open luod's own namespace (flb->fd) and
 * record its inode; after an update, the first retrieved socket makes it
 * check that the fd still refers to that namespace (on a kernel without
 * network namespaces there is only one: nothing is held, zeros are recorded).
 * The engine counts the sockets, and closes the fd and frees the record when
 * the last one goes, so unpreserve and finish have nothing left to do.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handlers-internal.h"

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

/* Version 1 records (6 fields, no SOCKET_PASSRIGHTS) are still read. */
#define SOCKET_RECORD_VERSION 2
#define SOCKET_RECORD_V1_FIELDS 6
#define NETNS_RECORD_VERSION 1

enum {
	SOCKET_DEV,
	SOCKET_INO,
	SOCKET_FAMILY,
	SOCKET_TYPE,
	SOCKET_PROTOCOL,
	SOCKET_NETNS,
	SOCKET_PASSRIGHTS, /* SO_PASSRIGHTS before preserve turned it off, or HANDLER_UNKNOWN */
	_SOCKET_FIELDS,
};

enum {
	NETNS_DEV,
	NETNS_INO,
	_NETNS_FIELDS,
};

static int socket_int_option(int fd, int opt, uint64_t *ret)
{
	int v;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, opt, &v, &len) < 0)
		return negative_errno();
	if (len != sizeof(v))
		return -EIO;
	*ret = (uint64_t)(unsigned)v;
	return 0;
}

/* The SO_DOMAIN can_preserve read, for the preserve of the same file that follows. */
static __thread struct {
	uint64_t gen;
	uint64_t family;
} socket_family_kept;

static int socket_family(int fd, uint64_t *ret)
{
	const struct handler_preserve_ctx *c = handler_preserve_of(fd);
	int r;

	if (c && socket_family_kept.gen == c->gen) {
		*ret = socket_family_kept.family;
		return 0;
	}
	r = socket_int_option(fd, SO_DOMAIN, ret);
	if (r >= 0 && c) {
		socket_family_kept.gen = c->gen;
		socket_family_kept.family = *ret;
	}
	return r;
}

/*
 * The socket's record.  At preserve (full unset) its type and protocol, which
 * only a check at retrieve would use, are left unknown unless the socket is a
 * unix one, whose type the preserve needs: the inode already names the
 * socket, and each option is a system call (0.7 us on a cold socket of a
 * virtual machine), paid 15,000 times in the restart of a server with 15,000
 * connections.  The namespace field is left unknown: a socket's namespace is
 * fixed when it is made, so its inode names that too.
 */
static int socket_describe(int fd, uint64_t fields[_SOCKET_FIELDS], bool full)
{
	struct stat st;
	int r;

	/* At preserve the engine has just made this fstat(). */
	r = handler_fstat(fd, &st);
	if (r < 0)
		return r;
	if (!S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	fields[SOCKET_DEV] = (uint64_t)st.st_dev;
	fields[SOCKET_INO] = (uint64_t)st.st_ino;
	r = socket_family(fd, &fields[SOCKET_FAMILY]);
	if (r < 0)
		return r;
	fields[SOCKET_TYPE] = fields[SOCKET_PROTOCOL] = fields[SOCKET_NETNS] = HANDLER_UNKNOWN;
	if (full || fields[SOCKET_FAMILY] == AF_UNIX) {
		r = socket_int_option(fd, SO_TYPE, &fields[SOCKET_TYPE]);
		if (r < 0)
			return r;
	}
	if (full) {
		r = socket_int_option(fd, SO_PROTOCOL, &fields[SOCKET_PROTOCOL]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Whether a socket is listening: nothing of the below applies to one. */
static bool socket_is_listening(int fd)
{
	uint64_t listening;

	return socket_int_option(fd, SO_ACCEPTCONN, &listening) < 0 || listening != 0;
}

/*
 * Whether a socket (of any family) is in flight in the receive queue of fd,
 * a socket of the given SO_TYPE: 1, 0, or -errno.  The queue is peeked from
 * its start to its end with SO_PEEK_OFF, which is put back as it was.
 */
static int socket_queue_carries_sockets(int fd, uint64_t type)
{
	static uint8_t buf[65536];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 253)];
	} control;
	int old_off = -1, zero = 0, found = 0;
	socklen_t len = sizeof(old_off);

	if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old_off, &len) < 0)
		return negative_errno();
	if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof(zero)) < 0)
		return negative_errno();
	/* A datagram queue holds at most net.unix.max_dgram_qlen messages and a
	 * stream's at most its peer's send buffer: the bound is never reached
	 * by a real queue. */
	for (unsigned i = 0; i < 65536 && !found; i++) {
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = &control,
			.msg_controllen = sizeof(control),
		};
		bool fds = false;
		ssize_t n;

		n = recvmsg(fd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break; /* EAGAIN: the end of the queue */
		for (struct cmsghdr *c = mh.msg_controllen ? CMSG_FIRSTHDR(&mh) : NULL; c;
		     c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
				struct stat st;
				int in;

				memcpy(&in, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
				if (fstat(in, &st) == 0 && S_ISSOCK(st.st_mode))
					found = 1;
				close(in);
				fds = true;
			}
		}
		/* More fds than a message may carry, or no room for them in our
		 * table: what they are is not known. */
		if (mh.msg_flags & MSG_CTRUNC)
			found = -EMFILE;
		/* The end of a stream (a datagram of 0 bytes is skipped once peeked). */
		if (n == 0 && !fds && !(mh.msg_flags & MSG_CTRUNC) && type == SOCK_STREAM)
			break;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old_off, sizeof(old_off));
	return found;
}

/* Turns SO_PASSRIGHTS off; the value it had, or HANDLER_UNKNOWN without one. */
static uint64_t socket_close_to_fds(int fd)
{
	uint64_t was;
	int off = 0;

	if (socket_int_option(fd, SO_PASSRIGHTS, &was) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &off, sizeof(off)) < 0)
		return HANDLER_UNKNOWN;
	return was;
}

static void socket_reopen_to_fds(int fd, uint64_t was)
{
	int v = was != 0;

	if (was != HANDLER_UNKNOWN)
		(void)setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &v, sizeof(v));
}

/* The record of either version; a version 1 record has no SOCKET_PASSRIGHTS. */
static int socket_record_parse(const struct luo_handler_file *f, uint64_t rec[_SOCKET_FIELDS])
{
	if (handler_record_parse(f->data, f->data_size, SOCKET_RECORD_VERSION, rec,
				 _SOCKET_FIELDS) == 0)
		return 0;
	rec[SOCKET_PASSRIGHTS] = HANDLER_UNKNOWN;
	return handler_record_parse(f->data, f->data_size, 1, rec, SOCKET_RECORD_V1_FIELDS);
}

/* A socket's option refuses an O_PATH fd (EBADF): F_GETFL need not be asked. */
static bool socket_can_preserve(const struct luo_handler *h, int fd, const struct stat *st)
{
	uint64_t family;

	return S_ISSOCK(st->st_mode) && socket_family(fd, &family) >= 0;
}

static int socket_preserve(struct luo_handler_file *f)
{
	uint64_t fields[_SOCKET_FIELDS];
	int r;

	r = socket_describe(f->fd, fields, false);
	if (r < 0)
		return r;
	fields[SOCKET_PASSRIGHTS] = HANDLER_UNKNOWN;
	if (fields[SOCKET_FAMILY] == AF_UNIX && !socket_is_listening(f->fd)) {
		/* Closed first, then checked: nothing can slip in between. */
		fields[SOCKET_PASSRIGHTS] = socket_close_to_fds(f->fd);
		r = socket_queue_carries_sockets(f->fd, fields[SOCKET_TYPE]);
		if (r != 0) {
			socket_reopen_to_fds(f->fd, fields[SOCKET_PASSRIGHTS]);
			return r > 0 ? -ELOOP : r;
		}
	}
	r = handler_record_store(&f->data, &f->data_size, SOCKET_RECORD_VERSION, fields,
				 _SOCKET_FIELDS);
	if (r < 0)
		socket_reopen_to_fds(f->fd, fields[SOCKET_PASSRIGHTS]);
	return r;
}

static void socket_unpreserve(struct luo_handler_file *f)
{
	uint64_t rec[_SOCKET_FIELDS];

	if (socket_record_parse(f, rec) == 0)
		socket_reopen_to_fds(f->fd, rec[SOCKET_PASSRIGHTS]);
}

static int socket_retrieve(struct luo_handler_file *f)
{
	uint64_t rec[_SOCKET_FIELDS], now[_SOCKET_FIELDS];
	int r;

	r = socket_record_parse(f, rec);
	if (r < 0)
		return r;
	/* Held since it was checked at preserve: it is the recorded socket. */
	if (f->held_since_preserve) {
		if (rec[SOCKET_FAMILY] == AF_UNIX)
			socket_reopen_to_fds(f->fd, rec[SOCKET_PASSRIGHTS]);
		return 0;
	}
	/*
	 * A socket's network namespace is fixed when it is made: the same
	 * socket (device and inode, checked here) is in the namespace recorded.
	 * Asking again would cost a file per socket on the successor's side of
	 * every restart, and prove nothing more.
	 */
	r = socket_describe(f->fd, now, true);
	if (r == -ENOTSOCK)
		return -EIO;
	if (r < 0)
		return r;
	for (unsigned i = 0; i < SOCKET_NETNS + 1; i++) {
		/* What a preserve did not ask (or could not) is not compared. */
		if (rec[i] == HANDLER_UNKNOWN || now[i] == HANDLER_UNKNOWN)
			continue;
		if (rec[i] != now[i])
			return -EIO;
	}
	socket_reopen_to_fds(f->fd, rec[SOCKET_PASSRIGHTS]);
	return 0;
}

/* What socket-v2 and the socket-v1 reader below share: all but preserving. */
#define SOCKET_HANDLER_FILE_OPS                                                                    \
	.get_id = handler_get_id_inode, .unpreserve = socket_unpreserve,                           \
	.retrieve = socket_retrieve, .retrieve_keeps_fd = true,                                    \
	.can_finish = handler_can_finish_always, .flb = &luo_flb_netns, .refuses_path_fds = true

const struct luo_handler luo_handler_socket = {
	.compatible = "socket-v2",
	.can_preserve = socket_can_preserve,
	.preserve = socket_preserve,
	SOCKET_HANDLER_FILE_OPS,
};

static int netns_preserve(struct luo_flb *flb)
{
	_cleanup_close_ int fd = -EBADF;
	uint64_t fields[_NETNS_FIELDS];
	struct stat st;
	int r;

	fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* A kernel without network namespaces (CONFIG_NET_NS=n) has one:
		 * nothing to hold, and zeros record that there was none. */
		fields[NETNS_DEV] = fields[NETNS_INO] = 0;
		return handler_record_store(&flb->data, &flb->data_size, NETNS_RECORD_VERSION,
					    fields, _NETNS_FIELDS);
	}
	if (fd < 0)
		return negative_errno();
	if (fstat(fd, &st) < 0)
		return negative_errno();
	fields[NETNS_DEV] = (uint64_t)st.st_dev;
	fields[NETNS_INO] = (uint64_t)st.st_ino;
	/*
	 * The fd belongs to the engine.  One still held here must be for this
	 * same namespace (luod does not move between namespaces); keep it rather
	 * than leak or close what is not ours.
	 */
	if (flb->fd >= 0) {
		struct stat held;

		if (fstat(flb->fd, &held) < 0)
			return negative_errno();
		if (held.st_dev != st.st_dev || held.st_ino != st.st_ino)
			return -EBUSY;
	}
	r = handler_record_store(&flb->data, &flb->data_size, NETNS_RECORD_VERSION, fields,
				 _NETNS_FIELDS);
	if (r < 0)
		return r;
	if (flb->fd < 0)
		flb->fd = TAKE_FD(fd);
	return 0;
}

static int netns_retrieve(struct luo_flb *flb)
{
	uint64_t fields[_NETNS_FIELDS];
	struct stat st;
	int r;

	r = handler_record_parse(flb->data, flb->data_size, NETNS_RECORD_VERSION, fields,
				 _NETNS_FIELDS);
	if (r < 0)
		return r;
	/* Recorded on a kernel without network namespaces: there is only the one. */
	if (fields[NETNS_DEV] == 0 && fields[NETNS_INO] == 0 && flb->fd < 0)
		return 0;
	if (flb->fd < 0)
		return -EBADF;
	if (fstat(flb->fd, &st) < 0)
		return negative_errno();
	if ((uint64_t)st.st_dev != fields[NETNS_DEV] || (uint64_t)st.st_ino != fields[NETNS_INO])
		return -EIO;
	return 0;
}

const struct luo_flb_ops luo_flb_netns = {
	.compatible = "netns-v1",
	.preserve = netns_preserve,
	.retrieve = netns_retrieve,
};

/*
 * The files of a luod before socket-v2, whose records name every field: read
 * (and retrieved, unpreserved, finished) as socket-v2's, never chosen for a
 * new file (no can_preserve).  socket-v2 records leave fields unknown that a
 * socket-v1 reader would compare, so they carry another name: an older luod
 * refuses them when it decodes its state, instead of failing each retrieve.
 */
const struct luo_handler luo_handler_socket_v1 = {
	.compatible = "socket-v1",
	SOCKET_HANDLER_FILE_OPS,
};
