/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the kernel's LUO ioctl handler, played against luod
 *
 * preload_emulate_ioctl() is what the kernel's ioctl entry does for
 * /dev/liveupdate and session fds, check for check (spec section 2): nr of
 * the right kind of fd (EINVAL), exact command word (ENOTTY), size at least
 * the kernel's struct (EINVAL), zeros past it (E2BIG), readable and writable
 * memory (EFAULT).  Only then is exactly the kernel-sized struct sent to
 * luod, so luod's own extensions (create's flags, its extra command nrs) can
 * never be reached through the shim.  The answer is copied back and a
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

	r = luo_wire_call(sock, op, arg, arg_size, send_fd >= 0 ? &send_fd : NULL, send_fd >= 0,
			  ret_fd);
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

/* -E2BIG if a byte of the caller's [from, to) is non-zero, -EFAULT if unreadable, else 0. */
static int check_zeroed(const uint8_t *arg, size_t from, size_t to)
{
	uint8_t buf[PRELOAD_ZERO_CHUNK];

	while (from < to) {
		size_t k = MIN(to - from, sizeof(buf));
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
 * The kernel decides "wrong kind of session" (EINVAL) before looking at the
 * size, so a session command with non-zero trailing bytes must still give
 * EINVAL when, say, PRESERVE_FD is sent to an incoming session.  Ask luod
 * with a struct that can only fail: 8 non-zero bytes past the kernel's.
 */
static int probe_e2big(int fd, const struct kernel_command *c, const uint8_t *local)
{
	uint8_t req[PRELOAD_STRUCT_MAX] = { 0 };
	uint32_t size = c->size + 8;
	int r;

	memcpy(req, local, c->size);
	memcpy(req, &size, sizeof(size));
	memset(req + c->size, 0xff, 8);
	r = preload_wire_call(fd, _IO(LIVEUPDATE_IOCTL_TYPE, c->nr), req, size, -EBADF, NULL);
	return r < 0 && r != -EIO ? r : -E2BIG;
}

int preload_emulate_ioctl(int fd, enum preload_fd_kind kind, unsigned int cmd, void *arg)
{
	const struct kernel_command *c = NULL;
	uint8_t local[PRELOAD_STRUCT_MAX], out[PRELOAD_STRUCT_MAX];
	uint32_t user_size, nr = _IOC_NR(cmd);
	int send_fd = -EBADF, new_fd = -EBADF;
	int32_t fd_field;
	int r;

	for (size_t i = 0; i < ELEMENTSOF(kernel_commands); i++)
		if (kernel_commands[i].nr == nr && kernel_commands[i].kind == kind)
			c = &kernel_commands[i];
	if (!c)
		return -EINVAL;
	if (cmd != _IO(LIVEUPDATE_IOCTL_TYPE, nr))
		return -ENOTTY;

	r = uaccess_read(&user_size, arg, sizeof(user_size));
	if (r < 0)
		return r;
	if (user_size < c->size)
		return -EINVAL;
	r = uaccess_read(local, arg, c->size);
	if (r < 0)
		return r;
	r = check_zeroed(arg, c->size, user_size);
	if (r == -E2BIG && kind == PRELOAD_FD_SESSION)
		return probe_e2big(fd, c, local);
	if (r < 0)
		return r;
	/* Fail a read-only struct now, before luod acts, so that nothing half-happens. */
	r = uaccess_write(arg, local, c->size);
	if (r < 0)
		return r;

	memcpy(local, &c->size, sizeof(uint32_t));
	if (c->fd_in) {
		memcpy(&fd_field, local + 4, sizeof(fd_field));
		/* A closed fd travels as no fd at all: luod then applies the kernel's order of checks. */
		if (fd_field >= 0 && fcntl(fd_field, F_GETFD) >= 0)
			send_fd = fd_field;
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
	return 0;
}
