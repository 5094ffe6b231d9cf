/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: helpers shared by the built-in file handlers
 *
 * Every handler keeps the same kind of record in f->data: a small versioned
 * little-endian array of 64-bit fields,
 *
 *   le32 version | le32 n_fields | n_fields x le64
 *
 * written at preserve, rewritten in place at freeze (the state at the update)
 * and parsed at retrieve.  The record crosses a live update inside the state
 * blob, so parsing trusts nothing: a wrong size, version or field count is
 * -EBADMSG.  Bumping a handler's version means changing its compatible string
 * too, so that an older luod refuses the file instead of misreading it.
 *
 * Everything here is static inline: the handler files must link without the
 * engine (the direct handler tests use them alone).
 */
#pragma once

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "basic/macro.h"
#include "core/handler.h"

/* Older uapi headers (bookworm's) lack some pseudo-filesystem magics. */
#ifndef PIDFS_MAGIC
#define PIDFS_MAGIC 0x50494446
#endif
#ifndef SECRETMEM_MAGIC
#define SECRETMEM_MAGIC 0x5345434d
#endif
#ifndef DMA_BUF_MAGIC
#define DMA_BUF_MAGIC 0x444d4142
#endif

#define HANDLER_RECORD_HEADER 8u
#define HANDLER_RECORD_MAX_FIELDS 16u

/* A field value meaning "not known" (e.g. the position of an unseekable file). */
#define HANDLER_UNKNOWN UINT64_MAX

static inline void handler_put_le32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void handler_put_le64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t handler_get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static inline uint64_t handler_get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static inline size_t handler_record_size(size_t n_fields)
{
	return HANDLER_RECORD_HEADER + 8 * n_fields;
}

static inline void handler_record_fill(uint8_t *p, uint32_t version, const uint64_t *fields,
				       size_t n)
{
	handler_put_le32(p, version);
	handler_put_le32(p + 4, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		handler_put_le64(p + HANDLER_RECORD_HEADER + 8 * i, fields[i]);
}

/*
 * Writes the record into *data.  A buffer of the right size is reused in
 * place, so that freeze, which rewrites a record preserve already allocated,
 * cannot fail for want of memory.  Otherwise a new buffer replaces the old
 * one; on failure *data is left as it was.
 */
static inline int handler_record_store(void **data, size_t *data_size, uint32_t version,
				       const uint64_t *fields, size_t n)
{
	size_t size = handler_record_size(n);
	uint8_t *p;

	assert(n <= HANDLER_RECORD_MAX_FIELDS);
	if (*data && *data_size == size) {
		handler_record_fill(*data, version, fields, n);
		return 0;
	}
	p = malloc(size);
	if (!p)
		return -ENOMEM;
	handler_record_fill(p, version, fields, n);
	free(*data);
	*data = p;
	*data_size = size;
	return 0;
}

/* Parses a record of exactly n fields of the given version; -EBADMSG otherwise. */
static inline int handler_record_parse(const void *data, size_t data_size, uint32_t version,
				       uint64_t *ret_fields, size_t n)
{
	const uint8_t *p = data;

	if (!p || data_size != handler_record_size(n))
		return -EBADMSG;
	if (handler_get_le32(p) != version || handler_get_le32(p + 4) != n)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++)
		ret_fields[i] = handler_get_le64(p + HANDLER_RECORD_HEADER + 8 * i);
	return 0;
}

/*
 * What the engine already knows of the fd it is preserving, for the handler
 * calls of that one preserve_fd (can_preserve, get_id, preserve), so that a
 * handler need not ask the kernel again: its fstat(), and its open flags once
 * any handler asked for them (HANDLER_FLAGS_UNKNOWN until then: the engine
 * does not ask, because a memfd or a socket has its own way to refuse an
 * O_PATH fd at no extra cost; every can_preserve must refuse one, and the
 * engine tells EBADF from ENOENT only when none accepted).  The engine sets it with
 * handler_preserve_begin() before the first of those calls and clears it
 * with handler_preserve_end() before returning; the fd stays open in between.
 * A handler trusts it only for that fd and only while it is set, so a direct
 * call of a handler, or any later call, asks the kernel as before.  @gen
 * tells one preserve from the next, for what a handler keeps of its own.
 *
 * Defined weak here rather than in one file, so that the handler files still
 * link without the engine and without each other; per thread like the calls.
 */
#define HANDLER_FLAGS_UNKNOWN INT_MIN

struct handler_preserve_ctx {
	int fd;	   /* -1 when no preserve is in progress */
	int flags; /* F_GETFL, or HANDLER_FLAGS_UNKNOWN */
	uint64_t gen;
	struct stat st;
	bool has_fs_type; /* fs_type holds the fstatfs() magic of fd */
	uint64_t fs_type;
};

__attribute__((weak)) __thread struct handler_preserve_ctx handler_preserve_ctx = { .fd = -1 };

static inline void handler_preserve_begin(int fd, int flags, const struct stat *st)
{
	handler_preserve_ctx.fd = fd;
	handler_preserve_ctx.flags = flags;
	handler_preserve_ctx.st = *st;
	handler_preserve_ctx.has_fs_type = false;
	handler_preserve_ctx.gen++;
}

static inline void handler_preserve_end(void)
{
	handler_preserve_ctx.fd = -1;
}

/* The engine's knowledge of fd while it preserves fd, else NULL. */
static inline const struct handler_preserve_ctx *handler_preserve_of(int fd)
{
	return fd >= 0 && handler_preserve_ctx.fd == fd ? &handler_preserve_ctx : NULL;
}

/* fstat(), or what the engine's fstat() of this fd said a moment ago. */
static inline int handler_fstat(int fd, struct stat *ret)
{
	const struct handler_preserve_ctx *c = handler_preserve_of(fd);

	if (c) {
		*ret = c->st;
		return 0;
	}
	return fstat(fd, ret) < 0 ? negative_errno() : 0;
}

/* fcntl(F_GETFL): the open flags or -errno. */
static inline int handler_getfl(int fd)
{
	int fl;

	if (handler_preserve_of(fd) && handler_preserve_ctx.flags != HANDLER_FLAGS_UNKNOWN)
		return handler_preserve_ctx.flags;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return negative_errno();
	if (handler_preserve_of(fd))
		handler_preserve_ctx.flags = fl;
	return fl;
}

/* O_PATH fds refer to a file without opening it: no handler may take one. */
static inline bool handler_fd_is_path_only(int fd)
{
	int fl = handler_getfl(fd);

	return fl < 0 || (fl & O_PATH);
}

/*
 * The filesystem magic of the file behind fd, or -errno.  During a preserve
 * it is asked once: several handlers' can_preserve may want it for one file.
 */
static inline int handler_fs_type(int fd, uint64_t *ret)
{
	struct statfs sfs;

	if (handler_preserve_of(fd) && handler_preserve_ctx.has_fs_type) {
		*ret = handler_preserve_ctx.fs_type;
		return 0;
	}
	if (fstatfs(fd, &sfs) < 0)
		return negative_errno();
	*ret = (uint64_t)(unsigned long)sfs.f_type;
	if (handler_preserve_of(fd)) {
		handler_preserve_ctx.fs_type = *ret;
		handler_preserve_ctx.has_fs_type = true;
	}
	return 0;
}

/*
 * Whether the file may be on a pseudo filesystem: tmpfs, anonymous inodes,
 * pidfs, nsfs, hugetlbfs ... all take an anonymous device number (major 0).
 * A file with any other device number is on a block device's filesystem,
 * which spares the fstatfs() that would say so.
 */
static inline bool handler_may_be_pseudo_fs(const struct stat *st)
{
	return major(st->st_dev) == 0;
}

/* The memfd handler's predicate, also used by the regular handler to stay disjoint from it. */
/*
 * The device of the kernel's own mount behind every memfd_create(), and its
 * filesystem's magic: that mount lives as long as the kernel, so its device
 * number is never another filesystem's.  Asked once per process; 0 if it
 * cannot be had (then every file asks fstatfs()).
 */
static inline dev_t handler_memfd_dev(uint64_t *ret_magic)
{
	static __thread dev_t dev;
	static __thread uint64_t magic;
	static __thread bool known;

	if (!known) {
		int fd = memfd_create("luo-probe", MFD_CLOEXEC);
		struct statfs sfs;
		struct stat st;

		known = true;
		if (fd >= 0 && fstat(fd, &st) == 0 && fstatfs(fd, &sfs) == 0) {
			dev = st.st_dev;
			magic = (uint64_t)(unsigned long)sfs.f_type;
		}
		if (fd >= 0)
			close(fd);
	}
	*ret_magic = magic;
	return dev;
}

static inline bool handler_is_unlinked_tmpfs(int fd, const struct stat *st)
{
	uint64_t magic;

	if (!S_ISREG(st->st_mode) || st->st_nlink != 0 || !handler_may_be_pseudo_fs(st))
		return false;
	/* A memfd (the common case) is known by its device alone. */
	if (st->st_dev == handler_memfd_dev(&magic) && st->st_dev != 0)
		return magic == TMPFS_MAGIC;
	if (handler_fs_type(fd, &magic) < 0)
		return false;
	return magic == TMPFS_MAGIC;
}

/*
 * At retrieve, the fd slot came from the state blob: -EIO unless it is still
 * the regular file recorded as (dev, ino).
 */
static inline int handler_check_regular(int fd, uint64_t dev, uint64_t ino)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return negative_errno();
	if ((uint64_t)st.st_dev != dev || (uint64_t)st.st_ino != ino || !S_ISREG(st.st_mode))
		return -EIO;
	return 0;
}

/* Identity by inode: the file, however many times it is opened or dup'ed. */
static inline int handler_get_id_inode(const struct luo_handler *h, int fd, const struct stat *st,
				       struct luo_file_id *ret)
{
	*ret = (struct luo_file_id){
		.dev = (uint64_t)st->st_dev,
		.ino = (uint64_t)st->st_ino,
	};
	return 0;
}

/* Every built-in handler lets any file finish: luod holds it, nothing is pending. */
static inline bool handler_can_finish_always(struct luo_handler_file *f)
{
	return true;
}
