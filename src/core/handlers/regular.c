/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the regular file handler ("regular-v1")
 *
 * Serves regular files on real filesystems, linked tmpfs files included,
 * that the memfd handler does not take (it takes unlinked tmpfs files; this
 * handler refuses them too, so the two never overlap whatever the order).
 * luod holds the open file, so contents, flags and locks are those of the
 * same open file; what can drift is the shared file position.
 *
 * Files that only look regular are refused: several pseudo-filesystems
 * (anonymous inodes on some kernels, pidfds, namespace files, secretmem,
 * dma-buf) give S_IFREG inodes that are not files one can keep this way, and
 * hugetlbfs files are refused as the kernel refuses hugetlb memfds.
 *
 *   preserve: record dev, ino, size, position (unknown if unseekable) and
 *             the open flags
 *   freeze:   record them again
 *   retrieve: check dev and ino (-EIO if not), then put the position back
 *
 * Identity for EBUSY is the inode.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "handlers-internal.h"

#define REGULAR_RECORD_VERSION 1

enum {
	REGULAR_DEV,
	REGULAR_INO,
	REGULAR_SIZE,
	REGULAR_POS,
	REGULAR_FLAGS,
	_REGULAR_FIELDS,
};

static bool regular_fs_refused(uint64_t magic)
{
	switch (magic) {
	case ANON_INODE_FS_MAGIC:
	case PIDFS_MAGIC:
	case NSFS_MAGIC:
	case SECRETMEM_MAGIC:
	case DMA_BUF_MAGIC:
	case HUGETLBFS_MAGIC:
		return true;
	default:
		return false;
	}
}

static bool regular_can_preserve(const struct luo_handler *h, int fd, const struct stat *st)
{
	uint64_t magic;

	if (!S_ISREG(st->st_mode) || handler_fd_is_path_only(fd))
		return false;
	/* Neither a memfd nor on a refused filesystem: all of those are pseudo ones. */
	if (!handler_may_be_pseudo_fs(st))
		return true;
	/* One fstatfs() answers both questions. */
	if (handler_fs_type(fd, &magic) < 0)
		return false;
	if (st->st_nlink == 0 && magic == TMPFS_MAGIC)
		return false; /* the memfd handler's */
	return !regular_fs_refused(magic);
}

static int regular_record(struct luo_handler_file *f)
{
	uint64_t fields[_REGULAR_FIELDS];
	struct stat st;
	off_t pos;
	int fl, r;

	/* At preserve the engine has just made this fstat() and fcntl(). */
	r = handler_fstat(f->fd, &st);
	if (r < 0)
		return r;
	fl = handler_getfl(f->fd);
	if (fl < 0)
		return fl;
	/* Some regular files (in /proc, say) cannot seek: keep them, without a position. */
	pos = lseek(f->fd, 0, SEEK_CUR);

	fields[REGULAR_DEV] = (uint64_t)st.st_dev;
	fields[REGULAR_INO] = (uint64_t)st.st_ino;
	fields[REGULAR_SIZE] = (uint64_t)st.st_size;
	fields[REGULAR_POS] = pos < 0 ? HANDLER_UNKNOWN : (uint64_t)pos;
	fields[REGULAR_FLAGS] = (uint64_t)(unsigned)fl;
	return handler_record_store(&f->data, &f->data_size, REGULAR_RECORD_VERSION, fields,
				    _REGULAR_FIELDS);
}

static int regular_retrieve(struct luo_handler_file *f)
{
	uint64_t fields[_REGULAR_FIELDS];
	int r;

	r = handler_record_parse(f->data, f->data_size, REGULAR_RECORD_VERSION, fields,
				 _REGULAR_FIELDS);
	if (r < 0)
		return r;
	if (fields[REGULAR_POS] != HANDLER_UNKNOWN && fields[REGULAR_POS] > (uint64_t)INT64_MAX)
		return -EBADMSG;

	r = handler_check_regular(f->fd, fields[REGULAR_DEV], fields[REGULAR_INO]);
	if (r < 0)
		return r;

	if (fields[REGULAR_POS] != HANDLER_UNKNOWN &&
	    lseek(f->fd, (off_t)fields[REGULAR_POS], SEEK_SET) < 0)
		return negative_errno();
	return 0;
}

const struct luo_handler luo_handler_regular = {
	.compatible = "regular-v1",
	.can_preserve = regular_can_preserve,
	.get_id = handler_get_id_inode,
	.preserve = regular_record,
	.freeze = regular_record,
	.retrieve = regular_retrieve,
	.retrieve_keeps_fd = true,
	.can_finish = handler_can_finish_always,
	.refuses_path_fds = true,
};
