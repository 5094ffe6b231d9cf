/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the eventfd handler ("eventfd-v1")
 *
 * Serves eventfds.  luod holds the eventfd, so its counter stays as it is.
 *
 * Every eventfd is an anonymous-inode file sharing one inode with every other
 * one (and with epoll, timerfd, signalfd ...), so neither the file type nor
 * the inode can recognise or tell eventfds apart.  Recognition is by the
 * /proc/self/fd link, "anon_inode:[eventfd]"; identity for EBUSY is the open
 * file description (by_description: the engine compares with kcmp), so two
 * eventfds are two files and a dup of one is the same file.
 *
 *   preserve: record the flags: EFD_SEMAPHORE, from /proc/self/fdinfo where
 *             the kernel reports it ("eventfd-semaphore", with a field saying
 *             whether it did), and O_NONBLOCK
 *   freeze:   record O_NONBLOCK again (the semaphore mode is fixed for life),
 *             without opening anything: luod may be at its fd limit, and a
 *             healthy file must not make the update fail
 *   retrieve: check the file is still an eventfd of the same mode (-EIO);
 *             a mode that cannot be read now (no fd to spare) is not checked
 *             rather than failing the file for good
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "handlers-internal.h"

#define EVENTFD_RECORD_VERSION 1
#define EVENTFD_LINK "anon_inode:[eventfd]"

enum {
	EVENTFD_FLAGS,
	EVENTFD_SEMAPHORE_KNOWN, /* 1 if the kernel reported eventfd-semaphore */
	_EVENTFD_FIELDS,
};

static bool eventfd_is_eventfd(int fd)
{
	char link[64];

	if (fd_read_link(fd, link, sizeof(link)) < 0)
		return false;
	return strcmp(link, EVENTFD_LINK) == 0;
}

static bool eventfd_can_preserve(const struct luo_handler *h, int fd, const struct stat *st)
{
	uint64_t magic;

	/*
	 * Anonymous inodes have no file type, except on kernels that give them
	 * S_IFREG; there the filesystem tells them from regular files, more
	 * cheaply than the link does.
	 */
	if (S_ISREG(st->st_mode)) {
		if (handler_fs_type(fd, &magic) < 0 || magic != ANON_INODE_FS_MAGIC)
			return false;
	} else if ((st->st_mode & S_IFMT) != 0)
		return false;
	return eventfd_is_eventfd(fd) && !handler_fd_is_path_only(fd);
}

static int eventfd_get_id(const struct luo_handler *h, int fd, const struct stat *st,
			  struct luo_file_id *ret)
{
	*ret = (struct luo_file_id){
		.dev = (uint64_t)st->st_dev,
		.ino = (uint64_t)st->st_ino,
		.by_description = true,
	};
	return 0;
}

/*
 * Whether the eventfd is a semaphore, as /proc/self/fdinfo reports it: 1 or
 * 0, -ENODATA if the kernel does not report it, -errno if it cannot be read.
 * Plain open/read into a stack buffer: this runs once per preserved eventfd.
 */
static int eventfd_read_semaphore(int fd)
{
	_cleanup_close_ int info = -EBADF;
	char path[64], buf[512];
	const char *p;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	info = open(path, O_RDONLY | O_CLOEXEC);
	if (info < 0)
		return negative_errno();
	n = read(info, buf, sizeof(buf) - 1);
	if (n < 0)
		return negative_errno();
	buf[n] = 0;
	p = strstr(buf, "\neventfd-semaphore:");
	if (!p)
		return -ENODATA;
	p += strlen("\neventfd-semaphore:");
	p += strspn(p, " \t");
	if (*p != '0' && *p != '1')
		return -ENODATA;
	return *p == '1';
}

static uint64_t eventfd_nonblock(int fl)
{
	return (uint64_t)(fl & O_NONBLOCK);
}

static int eventfd_preserve(struct luo_handler_file *f)
{
	uint64_t fields[_EVENTFD_FIELDS];
	int fl, sem;

	fl = fcntl(f->fd, F_GETFL);
	if (fl < 0)
		return negative_errno();
	sem = eventfd_read_semaphore(f->fd);
	if (sem < 0 && sem != -ENODATA)
		return sem;
	fields[EVENTFD_FLAGS] = (sem > 0 ? EFD_SEMAPHORE : 0) | eventfd_nonblock(fl);
	fields[EVENTFD_SEMAPHORE_KNOWN] = sem >= 0;
	return handler_record_store(&f->data, &f->data_size, EVENTFD_RECORD_VERSION, fields,
				    _EVENTFD_FIELDS);
}

static int eventfd_freeze(struct luo_handler_file *f)
{
	uint64_t fields[_EVENTFD_FIELDS];
	int fl, r;

	r = handler_record_parse(f->data, f->data_size, EVENTFD_RECORD_VERSION, fields,
				 _EVENTFD_FIELDS);
	if (r < 0)
		return eventfd_preserve(f);
	fl = fcntl(f->fd, F_GETFL);
	if (fl < 0)
		return negative_errno();
	fields[EVENTFD_FLAGS] =
		(fields[EVENTFD_FLAGS] & ~(uint64_t)O_NONBLOCK) | eventfd_nonblock(fl);
	return handler_record_store(&f->data, &f->data_size, EVENTFD_RECORD_VERSION, fields,
				    _EVENTFD_FIELDS);
}

static int eventfd_retrieve(struct luo_handler_file *f)
{
	uint64_t rec[_EVENTFD_FIELDS];
	int r, sem;

	r = handler_record_parse(f->data, f->data_size, EVENTFD_RECORD_VERSION, rec,
				 _EVENTFD_FIELDS);
	if (r < 0)
		return r;
	if (rec[EVENTFD_FLAGS] & ~(uint64_t)(EFD_SEMAPHORE | O_NONBLOCK) ||
	    rec[EVENTFD_SEMAPHORE_KNOWN] > 1 ||
	    (!rec[EVENTFD_SEMAPHORE_KNOWN] && (rec[EVENTFD_FLAGS] & EFD_SEMAPHORE)))
		return -EBADMSG;
	/* The fd slot came from the state blob: make sure it is still an eventfd. */
	if (!eventfd_is_eventfd(f->fd))
		return -EIO;
	/* The semaphore mode is fixed at creation: a change means another file. */
	sem = eventfd_read_semaphore(f->fd);
	if (rec[EVENTFD_SEMAPHORE_KNOWN] && sem >= 0 &&
	    !!(rec[EVENTFD_FLAGS] & EFD_SEMAPHORE) != !!sem)
		return -EIO;
	return 0;
}

const struct luo_handler luo_handler_eventfd = {
	.compatible = "eventfd-v1",
	.can_preserve = eventfd_can_preserve,
	.get_id = eventfd_get_id,
	.preserve = eventfd_preserve,
	.freeze = eventfd_freeze,
	.retrieve = eventfd_retrieve,
	.can_finish = handler_can_finish_always,
};
