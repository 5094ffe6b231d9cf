/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the pipe handler ("pipe-v1")
 *
 * Serves pipes and FIFOs.  luod holds the pipe end, so the bytes buffered in
 * the pipe stay there and the other end keeps working.
 *
 * The read end and the write end of one pipe share an inode, yet each is a
 * file of its own that a program may want to keep.  So the identity for EBUSY
 * is the inode plus the access mode: both ends of a pipe are preservable, a
 * dup (or a second open of a FIFO with the same mode) of an end already
 * preserved is not.
 *
 *   preserve: record dev, ino, access mode and (for information) the pipe's
 *             capacity (F_GETPIPE_SZ)
 *   freeze:   record them again
 *   retrieve: check it is still that end of that pipe (-EIO if not)
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "handlers-internal.h"

#define PIPE_RECORD_VERSION 1

enum {
	PIPE_DEV,
	PIPE_INO,
	PIPE_ACCMODE,
	PIPE_SIZE,
	_PIPE_FIELDS,
};

static bool pipe_can_preserve(const struct luo_handler *h, int fd, const struct stat *st)
{
	return S_ISFIFO(st->st_mode) && !handler_fd_is_path_only(fd);
}

static int pipe_get_id(const struct luo_handler *h, int fd, const struct stat *st,
		       struct luo_file_id *ret)
{
	int fl = handler_getfl(fd);

	if (fl < 0)
		return fl;
	*ret = (struct luo_file_id){
		.dev = (uint64_t)st->st_dev,
		.ino = (uint64_t)st->st_ino,
		.extra = (uint64_t)(fl & O_ACCMODE),
	};
	return 0;
}

static int pipe_describe(int fd, uint64_t fields[_PIPE_FIELDS])
{
	struct stat st;
	int fl, sz, r;

	/* At preserve the engine has just made this fstat() and fcntl(). */
	r = handler_fstat(fd, &st);
	if (r < 0)
		return r;
	if (!S_ISFIFO(st.st_mode))
		return -EIO;
	fl = handler_getfl(fd);
	if (fl < 0)
		return fl;
	sz = fcntl(fd, F_GETPIPE_SZ);
	fields[PIPE_DEV] = (uint64_t)st.st_dev;
	fields[PIPE_INO] = (uint64_t)st.st_ino;
	fields[PIPE_ACCMODE] = (uint64_t)(fl & O_ACCMODE);
	/* Informational only: a failure to read it must not refuse the pipe. */
	fields[PIPE_SIZE] = sz < 0 ? HANDLER_UNKNOWN : (uint64_t)sz;
	return 0;
}

static int pipe_record(struct luo_handler_file *f)
{
	uint64_t fields[_PIPE_FIELDS];
	int r;

	r = pipe_describe(f->fd, fields);
	if (r < 0)
		return r;
	return handler_record_store(&f->data, &f->data_size, PIPE_RECORD_VERSION, fields,
				    _PIPE_FIELDS);
}

static int pipe_retrieve(struct luo_handler_file *f)
{
	uint64_t rec[_PIPE_FIELDS], now[_PIPE_FIELDS];
	int r;

	r = handler_record_parse(f->data, f->data_size, PIPE_RECORD_VERSION, rec, _PIPE_FIELDS);
	if (r < 0)
		return r;
	r = pipe_describe(f->fd, now);
	if (r < 0)
		return r;
	if (rec[PIPE_DEV] != now[PIPE_DEV] || rec[PIPE_INO] != now[PIPE_INO] ||
	    rec[PIPE_ACCMODE] != now[PIPE_ACCMODE])
		return -EIO;
	return 0;
}

const struct luo_handler luo_handler_pipe = {
	.compatible = "pipe-v1",
	.can_preserve = pipe_can_preserve,
	.get_id = pipe_get_id,
	.preserve = pipe_record,
	.freeze = pipe_record,
	.retrieve = pipe_retrieve,
	.retrieve_keeps_fd = true,
	.can_finish = handler_can_finish_always,
	.refuses_path_fds = true,
};
