/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: reading and writing the caller's memory without faulting
 *
 * The kernel answers a bad ioctl pointer with EFAULT; a userspace shim that
 * simply dereferenced it would crash the program instead.  Every access to
 * the caller's struct therefore goes through process_vm_readv()/
 * process_vm_writev() on our own pid, which report an unmapped or read-only
 * page as an error.  Where those calls are unavailable (seccomp filters,
 * kernels built without CONFIG_CROSS_MEMORY_ATTACH) the bytes travel through
 * a private pipe instead: write() from an unreadable buffer and read() into
 * an unwritable one fail with EFAULT just the same.  The pipe lives for one
 * call only, so the shim never keeps an fd of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/uio.h>
#include <unistd.h>

#include "basic/macro.h"
#include "preload-internal.h"

#define UACCESS_CHUNK 4096

/* 1 when the transfer is done (0 or -EFAULT in *r), 0 when the fallback must be used. */
static int vm_copy(bool to_caller, void *caller, void *local, size_t n, int *r)
{
	struct iovec l = { .iov_base = local, .iov_len = n };
	struct iovec c = { .iov_base = caller, .iov_len = n };
	ssize_t k;

	if (to_caller)
		k = process_vm_writev(getpid(), &l, 1, &c, 1, 0);
	else
		k = process_vm_readv(getpid(), &l, 1, &c, 1, 0);
	if (k >= 0) {
		/* A short transfer means the caller's range ran into a bad page. */
		*r = (size_t)k == n ? 0 : -EFAULT;
		return 1;
	}
	if (errno == EFAULT) {
		*r = -EFAULT;
		return 1;
	}
	return 0;
}

static int pipe_copy(bool to_caller, void *caller, void *local, size_t n)
{
	_cleanup_close_ int rd = -EBADF, wr = -EBADF;
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return negative_errno();
	rd = p[0];
	wr = p[1];
	for (size_t off = 0; off < n;) {
		size_t k = MIN(n - off, (size_t)UACCESS_CHUNK);
		char *src = (char *)(to_caller ? local : caller) + off;
		char *dst = (char *)(to_caller ? caller : local) + off;
		ssize_t w = write(wr, src, k);

		if (w < 0)
			return negative_errno();
		ssize_t got = read(rd, dst, (size_t)w);
		if (got < 0)
			return negative_errno();
		if (got != w)
			return -EFAULT;
		off += (size_t)w;
	}
	return 0;
}

static int uaccess_copy(bool to_caller, void *caller, void *local, size_t n)
{
	int saved = errno, r;

	if (n == 0)
		return 0;
	if (!vm_copy(to_caller, caller, local, n, &r))
		r = pipe_copy(to_caller, caller, local, n);
	errno = saved;
	return r;
}

int uaccess_read(void *dst, const void *src, size_t n)
{
	return uaccess_copy(false, (void *)src, dst, n);
}

int uaccess_write(void *dst, const void *src, size_t n)
{
	return uaccess_copy(true, dst, (void *)src, n);
}
