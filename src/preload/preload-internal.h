/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luo-preload.so internals
 *
 * The shim is split in three: preload.c holds the interposed libc entry
 * points and decides which calls are about /dev/liveupdate or its fds;
 * emulate.c plays the kernel's ioctl handler (argument checks, then one
 * request to luod); uaccess.c copies to and from the caller's memory without
 * ever faulting, so that a bad pointer becomes EFAULT as in the kernel.
 *
 * Nothing here allocates or keeps an fd open between calls: the only state
 * is two fixed-size tables of socket inode numbers (which sockets are device
 * fds, which are session fds), updated with atomics, so that every entry
 * point is safe in threaded programs and right after fork().
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define LUO_DEVICE_PATH "/dev/liveupdate"

/* Which kernel the shim plays: mainline 7.3 by default, or the proposed session filesystem. */
enum preload_profile {
	PRELOAD_PROFILE_DEFAULT = 0,
	PRELOAD_PROFILE_PROPOSED,
	PRELOAD_PROFILE_INVALID,
};

#define LUO_PRELOAD_PROFILE_ENV "LUO_PRELOAD_PROFILE"

enum preload_fd_kind {
	PRELOAD_FD_OTHER = 0,
	PRELOAD_FD_DEVICE,
	PRELOAD_FD_SESSION,
};

/* ---- uaccess.c ---- */

/* Copies n bytes from the caller's src to dst; -EFAULT if src is not readable. */
int uaccess_read(void *dst, const void *src, size_t n);
/* Copies n bytes from src to the caller's dst; -EFAULT if dst is not writable. */
int uaccess_write(void *dst, const void *src, size_t n);

/* ---- emulate.c ---- */

/* A new CLOEXEC connection to luod by the clients' rule (luo_wire_connect_default()),
 * or -errno; the path connected to goes to ret_path (LUO_SOCKET_PATH_MAX bytes) if
 * not NULL.  Never allocates. */
int preload_connect(char *ret_path);
/*
 * luo_wire_call() on sock with send_fd attached if >= 0 (not consumed): arg
 * is sent as is and luod's struct copied back into it; a received fd
 * (CLOEXEC) goes to *ret_fd, or is closed when ret_fd is NULL.  Returns
 * luod's result (0 or -errno), -EIO when luod is gone or misbehaves, or
 * -ETIMEDOUT when it does not answer within LUO_WIRE_TIMEOUT_DEFAULT_MS.
 */
int preload_wire_call(int sock, uint32_t op, void *arg, uint32_t arg_size, int send_fd,
		      int *ret_fd);
/* Emulates ioctl(fd, cmd, arg) for a device or session fd; 0 or -errno. */
int preload_emulate_ioctl(int fd, enum preload_fd_kind kind, unsigned int cmd, void *arg);

/* ---- preload.c ---- */

/* The profile named by $LUO_PRELOAD_PROFILE, read once; an unknown name is
 * PRELOAD_PROFILE_INVALID and is reported once on stderr. */
enum preload_profile preload_profile(void);
/* Remembers that fd (a memfd or unlinked shmem file) was preserved in the session
 * behind session_fd: its size is frozen while that session lives. */
void preload_remember_preserved(int fd, int session_fd);
/* Whether mainline's handlers (memfd: an unlinked shmem file) would take fd. */
bool preload_mainline_can_preserve(int fd);
/* Whether the profile's kernel has a handler for fd (never for a device or session fd). */
bool preload_kernel_can_preserve(int fd);

/* Remembers that the socket behind fd (by inode) is a luod session fd. */
void preload_remember_session(int fd);
/* The libc fstat(), bypassing the shim's own. */
int preload_real_fstat(int fd, struct stat *st);
