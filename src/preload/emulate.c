/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the kernel's LUO ioctl handler, played against luod
 *
 * preload_emulate_ioctl() is what the kernel's ioctl entry does for
 * /dev/liveupdate and session fds, check for check and in the kernel's order:
 * nr of the right kind of fd, whatever the type byte (EINVAL); the size word
 * read (EFAULT); the exact command word (ENOTTY); size at least the kernel's
 * struct (EINVAL); the bytes past it scanned in order, zeros or E2BIG, an
 * unreadable page EFAULT; the struct readable and writable (EFAULT).  Only
 * then is exactly the kernel-sized struct sent to luod, so luod's own
 * extensions (create's flags, its extra command nrs) can never be reached
 * through the shim.  The answer is copied back and a
 * received fd is put into the struct's fd field.
 *
 * Requests go through luo_wire_call() (src/protocol), which allocates nothing
 * and is safe for several threads, and processes that inherited the same
 * session fd, calling at once on one socket: replies are matched by thread id.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/macro.h"
#include "preload-internal.h"
#include "protocol/protocol.h"

/* The largest struct the shim ever sends: the kernel's 72 bytes plus the E2BIG probe's 8. */
#define PRELOAD_STRUCT_MAX 80
#define PRELOAD_ZERO_CHUNK 4096

struct kernel_command {
	uint32_t nr;
	enum preload_fd_kind kind;
	uint32_t size; /* the kernel's full struct */
	bool fd_in;    /* the struct's fd field names a file to send */
	bool fd_out;   /* success returns a new fd in the struct's fd field */
};

/* Exactly the kernel's commands: luod's extension nrs are unknown here on purpose. */
static const struct kernel_command kernel_commands[] = {
	{ LIVEUPDATE_CMD_CREATE_SESSION, PRELOAD_FD_DEVICE,
	  sizeof(struct liveupdate_ioctl_create_session), false, true },
	{ LIVEUPDATE_CMD_RETRIEVE_SESSION, PRELOAD_FD_DEVICE,
	  sizeof(struct liveupdate_ioctl_retrieve_session), false, true },
	{ LIVEUPDATE_CMD_SESSION_PRESERVE_FD, PRELOAD_FD_SESSION,
	  sizeof(struct liveupdate_session_preserve_fd), true, false },
	{ LIVEUPDATE_CMD_SESSION_RETRIEVE_FD, PRELOAD_FD_SESSION,
	  sizeof(struct liveupdate_session_retrieve_fd), false, true },
	{ LIVEUPDATE_CMD_SESSION_FINISH, PRELOAD_FD_SESSION,
	  sizeof(struct liveupdate_session_finish), false, false },
	{ LIVEUPDATE_CMD_SESSION_GET_NAME, PRELOAD_FD_SESSION,
	  sizeof(struct liveupdate_session_get_name), false, false },
};

int preload_connect(char *ret_path)
{
	return luo_wire_connect_default(ret_path);
}

int preload_wire_call(int sock, uint32_t op, void *arg, uint32_t arg_size, int send_fd, int *ret_fd)
{
	int r;

	/* A session command's reply comes on a socket of our own, so that a
	 * process sharing the session fd cannot hold it up. */
	if (luo_wire_command_find(LUO_WIRE_SESSION, op & 0xffu))
		r = luo_wire_call_session(sock, op, arg, arg_size, send_fd >= 0 ? &send_fd : NULL,
					  send_fd >= 0, ret_fd);
	else
		r = luo_wire_call(sock, op, arg, arg_size, send_fd >= 0 ? &send_fd : NULL,
				  send_fd >= 0, ret_fd);
	switch (r) {
	case -ECONNRESET:
	case -EPIPE:
	case -ENOTCONN:
	case -EBADMSG:
	case -EMSGSIZE:
		/* luod is gone or spoke nonsense: no kernel errno fits better than EIO.
		 * A stopped luod stays -ETIMEDOUT (after LUO_WIRE_TIMEOUT_DEFAULT_MS):
		 * the kernel never says it, but it tells what happened. */
		return -EIO;
	default:
		return r;
	}
}

/*
 * The kernel's check_zeroed_user() on the caller's [from, to): the bytes are
 * scanned in order, so a non-zero byte before the first unreadable one is
 * -E2BIG and an unreadable page reached first is -EFAULT; else 0.  Chunks end
 * at page boundaries, so that a readable page is never failed for its
 * unreadable neighbour.
 */
static int check_zeroed(const uint8_t *arg, size_t from, size_t to)
{
	uint8_t buf[PRELOAD_ZERO_CHUNK];

	while (from < to) {
		uintptr_t at = (uintptr_t)(arg + from);
		size_t to_page = PRELOAD_ZERO_CHUNK - (at & (PRELOAD_ZERO_CHUNK - 1));
		size_t k = MIN(to - from, to_page);
		int r = uaccess_read(buf, arg + from, k);

		if (r < 0)
			return r;
		for (size_t i = 0; i < k; i++)
			if (buf[i])
				return -E2BIG;
		from += k;
	}
	return 0;
}

/*
 * The kernel decides "wrong kind of session" (EINVAL) before it reads the
 * struct, so a session command whose struct fails locally (E2BIG, EFAULT)
 * must still give EINVAL when, say, PRESERVE_FD is sent to an incoming
 * session.  Ask luod with a struct that can only fail: 8 non-zero bytes past
 * the kernel's.  luod answers EINVAL for the wrong kind, else E2BIG, and then
 * the local error stands.
 */
static int session_kind_first(int fd, const struct kernel_command *c, int local_error)
{
	uint8_t req[PRELOAD_STRUCT_MAX] = { 0 };
	uint32_t size = c->size + 8;
	int r;

	memcpy(req, &size, sizeof(size));
	memset(req + c->size, 0xff, 8);
	r = preload_wire_call(fd, _IO(LIVEUPDATE_IOCTL_TYPE, c->nr), req, size, -EBADF, NULL);
	return r < 0 && r != -EIO && r != -E2BIG ? r : local_error;
}

int preload_emulate_ioctl(int fd, enum preload_fd_kind kind, unsigned int cmd, void *arg)
{
	const struct kernel_command *c = NULL;
	uint8_t local[PRELOAD_STRUCT_MAX], out[PRELOAD_STRUCT_MAX];
	uint32_t user_size, nr = _IOC_NR(cmd);
	int send_fd = -EBADF, new_fd = -EBADF;
	_cleanup_close_ int null_fd = -EBADF;
	int32_t fd_field;
	int r;

	/* 1: the nr must be one of this kind of fd's (whatever the type byte). */
	for (size_t i = 0; i < ELEMENTSOF(kernel_commands); i++)
		if (kernel_commands[i].nr == nr && kernel_commands[i].kind == kind)
			c = &kernel_commands[i];
	if (!c)
		return -EINVAL;
	/* The kernel reads the size word (get_user) before it compares the command word. */
	r = uaccess_read(&user_size, arg, sizeof(user_size));
	if (r < 0)
		return r;
	/* 2: the exact command word (the kernel's -ENOIOCTLCMD, which the VFS makes ENOTTY). */
	if (cmd != _IO(LIVEUPDATE_IOCTL_TYPE, nr))
		return -ENOTTY;
	/* 3 (the kind of session) and 4: luod checks the kind; a short size is EINVAL either way. */
	if (user_size < c->size)
		return -EINVAL;
	/* 5 and 6, as copy_struct_from_user(): the bytes past the struct, then the struct. */
	r = check_zeroed(arg, c->size, user_size);
	if (r == 0)
		r = uaccess_read(local, arg, c->size);
	if (r < 0)
		return kind == PRELOAD_FD_SESSION ? session_kind_first(fd, c, r) : r;
	/* Fail a read-only struct now, before luod acts, so that nothing half-happens. */
	r = uaccess_write(arg, local, c->size);
	if (r < 0)
		return r;

	memcpy(local, &c->size, sizeof(uint32_t));
	if (c->fd_in) {
		memcpy(&fd_field, local + 4, sizeof(fd_field));
		/*
		 * A closed fd travels as no fd at all: luod then applies the kernel's
		 * order of checks.  A file the kernel has no handler for (in the
		 * default profile anything but a shmem file; in both, a device or
		 * session fd, which luod would take for a socket) travels as
		 * /dev/null, which luod refuses with ENOENT after its own earlier
		 * checks (kind of session, token in use), as the kernel does.
		 */
		if (fd_field >= 0 && fcntl(fd_field, F_GETFD) >= 0) {
			if (preload_kernel_can_preserve(fd_field)) {
				send_fd = fd_field;
			} else {
				null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				if (null_fd < 0)
					return negative_errno();
				send_fd = null_fd;
			}
		}
	}
	memcpy(out, local, c->size);
	r = preload_wire_call(fd, cmd, out, c->size, send_fd, c->fd_out ? &new_fd : NULL);
	if (r < 0)
		return r;
	if (c->fd_out) {
		if (new_fd < 0)
			return -EIO;
		fd_field = new_fd;
		memcpy(out + 4, &fd_field, sizeof(fd_field));
	}
	/* The kernel copies back the caller's own size word. */
	memcpy(out, &user_size, sizeof(user_size));
	r = uaccess_write(arg, out, c->size);
	if (r < 0) {
		safe_close(new_fd);
		return r;
	}
	if (c->fd_out && c->kind == PRELOAD_FD_DEVICE)
		preload_remember_session(new_fd);
	if (send_fd >= 0 && send_fd != null_fd && preload_mainline_can_preserve(send_fd))
		preload_remember_preserved(send_fd, fd);
	return 0;
}
