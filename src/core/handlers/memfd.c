/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the memfd handler ("memfd-v1")
 *
 * Serves memfds and every other unlinked tmpfs file, as the kernel's memfd
 * handler does (spec section 6).  hugetlb memfds live on hugetlbfs, not tmpfs,
 * and are refused here and by the regular handler, so the engine answers
 * ENOENT for them as the kernel does.
 *
 * In userspace mode luod holds the file itself, so contents and size need no
 * copying: they are the file.  What the record keeps is what the spec promises
 * to carry and what someone else could change behind our back: the file
 * position and the seals, plus the size and the inode for checking.
 *
 *   preserve: record dev, ino and size; the position and the seals are
 *             recorded as unknown: only those at a freeze count (spec
 *             section 6), and every way to an incoming session freezes first
 *   freeze:   record them all again, position and seals included (the state
 *             at the update is what counts)
 *   retrieve: check that the file is the recorded one (-EIO if not), then
 *             put the position back.  Seals only ever grow: whoever holds the
 *             memfd may add one after the handover (it is the same file), and
 *             the successor gets the file with the seals it has then, which
 *             include every recorded one; that is no reason to fail.  A file
 *             luod has held since it checked it at preserve (no replay or
 *             update in between) is the recorded one: only its position is
 *             put back.
 *
 * So a preserve costs one system call beyond the engine's fstat(): F_GETFL,
 * which refuses an O_PATH fd (the cheapest call that does: on 15,000 cold
 * memfds 0.34 us, F_GET_SEALS 0.52 us, fstat() 1.2 us on a virtual machine).
 *
 * Identity for EBUSY is the inode: a second open of the same memfd through
 * /proc is the same memfd.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "handlers-internal.h"

#define MEMFD_RECORD_VERSION 1

enum {
	MEMFD_DEV,
	MEMFD_INO,
	MEMFD_SIZE,
	MEMFD_POS,
	MEMFD_SEALS,
	_MEMFD_FIELDS,
};

static bool memfd_can_preserve(const struct luo_handler *h, int fd, const struct stat *st)
{
	return handler_is_unlinked_tmpfs(fd, st) && !handler_fd_is_path_only(fd);
}

static int memfd_store(struct luo_handler_file *f, const struct stat *st, uint64_t pos,
		       uint64_t seals)
{
	uint64_t fields[_MEMFD_FIELDS];

	fields[MEMFD_DEV] = (uint64_t)st->st_dev;
	fields[MEMFD_INO] = (uint64_t)st->st_ino;
	fields[MEMFD_SIZE] = (uint64_t)st->st_size;
	fields[MEMFD_POS] = pos;
	fields[MEMFD_SEALS] = seals;
	return handler_record_store(&f->data, &f->data_size, MEMFD_RECORD_VERSION, fields,
				    _MEMFD_FIELDS);
}

static int memfd_preserve(struct luo_handler_file *f)
{
	struct stat st;
	int r;

	/* At preserve the engine has just made this fstat(). */
	r = handler_fstat(f->fd, &st);
	if (r < 0)
		return r;
	return memfd_store(f, &st, HANDLER_UNKNOWN, HANDLER_UNKNOWN);
}

static int memfd_freeze(struct luo_handler_file *f)
{
	struct stat st;
	off_t pos;
	int r, seals;

	r = handler_fstat(f->fd, &st);
	if (r < 0)
		return r;
	pos = lseek(f->fd, 0, SEEK_CUR);
	if (pos < 0)
		return negative_errno();
	seals = fcntl(f->fd, F_GET_SEALS);
	if (seals < 0)
		return negative_errno();
	return memfd_store(f, &st, (uint64_t)pos, (uint64_t)(unsigned)seals);
}

static int memfd_retrieve(struct luo_handler_file *f)
{
	uint64_t fields[_MEMFD_FIELDS];
	int r, seals;

	r = handler_record_parse(f->data, f->data_size, MEMFD_RECORD_VERSION, fields,
				 _MEMFD_FIELDS);
	if (r < 0)
		return r;
	/* Unknown only if never frozen, which no incoming file is. */
	if (fields[MEMFD_POS] > (uint64_t)INT64_MAX && fields[MEMFD_POS] != HANDLER_UNKNOWN)
		return -EBADMSG;

	if (!f->held_since_preserve) {
		r = handler_check_regular(f->fd, fields[MEMFD_DEV], fields[MEMFD_INO]);
		if (r < 0)
			return r;
		seals = fcntl(f->fd, F_GET_SEALS);
		if (seals < 0)
			return negative_errno();
		/* Seals cannot be taken away: a recorded one missing means another file. */
		if (fields[MEMFD_SEALS] != HANDLER_UNKNOWN &&
		    (fields[MEMFD_SEALS] & ~(uint64_t)(unsigned)seals))
			return -EIO;
	}
	if (fields[MEMFD_POS] != HANDLER_UNKNOWN &&
	    lseek(f->fd, (off_t)fields[MEMFD_POS], SEEK_SET) < 0)
		return negative_errno();
	return 0;
}

const struct luo_handler luo_handler_memfd = {
	.compatible = "memfd-v1",
	.can_preserve = memfd_can_preserve,
	.get_id = handler_get_id_inode,
	.preserve = memfd_preserve,
	.freeze = memfd_freeze,
	.retrieve = memfd_retrieve,
	.retrieve_keeps_fd = true,
	.can_finish = handler_can_finish_always,
	.refuses_path_fds = true,
};
