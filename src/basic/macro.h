/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: common macros
 *
 * Ownership helpers in the systemd manner: locals own resources through
 * cleanup attributes and hand them off with TAKE_FD()/TAKE_PTR().  fds start
 * at -EBADF so that "no fd" is never confused with fd 0.
 */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _public_ __attribute__((visibility("default")))
#define _unused_ __attribute__((unused))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Return the value of a variable and reset the variable, for handing off ownership. */
#define TAKE_GENERIC(var, type, nullvalue)                                                         \
	({                                                                                         \
		type *_pvar_ = &(var);                                                             \
		type _var_ = *_pvar_;                                                              \
		type _nullvalue_ = nullvalue;                                                      \
		*_pvar_ = _nullvalue_;                                                             \
		_var_;                                                                             \
	})
#define TAKE_PTR(ptr) TAKE_GENERIC(ptr, __typeof__(ptr), NULL)
#define TAKE_FD(fd) TAKE_GENERIC(fd, int, -EBADF)

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Close an fd, preserving errno, and return -EBADF for assignment. */
static inline int safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;
		(void)close(fd);
		errno = saved;
	}
	return -EBADF;
}

static inline void closep(int *fd)
{
	safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* The one place where libc's -1/errno becomes -errno. */
static inline int negative_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}
#define RET_NERRNO(expr)                                                                           \
	({                                                                                         \
		long _r_ = (long)(expr);                                                           \
		_r_ < 0 ? negative_errno() : (int)_r_;                                             \
	})
