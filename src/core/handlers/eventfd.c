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
 *   preserve: record the flags (EFD_SEMAPHORE from /proc/self/fdinfo, where
 *             the kernel reports it, and O_NONBLOCK) and, for information,
 *             the counter
 *   freeze:   record them again
 *   retrieve: check the file is still an eventfd of the same kind (-EIO)
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
	EVENTFD_COUNT,		 /* informational; HANDLER_UNKNOWN if not reported */
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
	/* Anonymous inodes are neither directories, devices, sockets nor pipes. */
	if (S_ISDIR(st->st_mode) || S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode) ||
	    S_ISSOCK(st->st_mode) || S_ISFIFO(st->st_mode) || S_ISLNK(st->st_mode))
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

/* Reads what the kernel reports about an eventfd in /proc/self/fdinfo. */
static int eventfd_read_fdinfo(int fd, bool *ret_sem_known, bool *ret_sem, uint64_t *ret_count)
{
	char path[64], line[256];
	FILE *file;
	bool sem_known = false, sem = false;
	uint64_t count = HANDLER_UNKNOWN;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	file = fopen(path, "re");
	if (!file)
		return negative_errno();
	while (fgets(line, sizeof(line), file)) {
		unsigned long long v;

		if (sscanf(line, "eventfd-semaphore: %llu", &v) == 1) {
			sem_known = true;
			sem = v != 0;
		} else if (sscanf(line, "eventfd-count: %llx", &v) == 1) {
			count = v;
		}
	}
	fclose(file);
	*ret_sem_known = sem_known;
	*ret_sem = sem;
	*ret_count = count;
	return 0;
}

static int eventfd_describe(int fd, uint64_t fields[_EVENTFD_FIELDS])
{
	bool sem_known, sem;
	uint64_t count;
	int fl, r;

	if (!eventfd_is_eventfd(fd))
		return -EIO;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return negative_errno();
	r = eventfd_read_fdinfo(fd, &sem_known, &sem, &count);
	if (r < 0)
		return r;
	fields[EVENTFD_FLAGS] = (uint64_t)((sem ? EFD_SEMAPHORE : 0) | (fl & O_NONBLOCK));
	fields[EVENTFD_SEMAPHORE_KNOWN] = sem_known;
	fields[EVENTFD_COUNT] = count;
	return 0;
}

static int eventfd_record(struct luo_handler_file *f)
{
	uint64_t fields[_EVENTFD_FIELDS];
	int r;

	r = eventfd_describe(f->fd, fields);
	if (r < 0)
		return r;
	return handler_record_store(&f->data, &f->data_size, EVENTFD_RECORD_VERSION, fields,
				    _EVENTFD_FIELDS);
}

static int eventfd_retrieve(struct luo_handler_file *f)
{
	uint64_t rec[_EVENTFD_FIELDS], now[_EVENTFD_FIELDS];
	int r;

	r = handler_record_parse(f->data, f->data_size, EVENTFD_RECORD_VERSION, rec,
				 _EVENTFD_FIELDS);
	if (r < 0)
		return r;
	if (rec[EVENTFD_FLAGS] & ~(uint64_t)(EFD_SEMAPHORE | O_NONBLOCK) ||
	    rec[EVENTFD_SEMAPHORE_KNOWN] > 1)
		return -EBADMSG;
	r = eventfd_describe(f->fd, now);
	if (r < 0)
		return r;
	/* The semaphore mode is fixed at creation: a change means another file. */
	if (rec[EVENTFD_SEMAPHORE_KNOWN] && now[EVENTFD_SEMAPHORE_KNOWN] &&
	    (rec[EVENTFD_FLAGS] & EFD_SEMAPHORE) != (now[EVENTFD_FLAGS] & EFD_SEMAPHORE))
		return -EIO;
	return 0;
}

const struct luo_handler luo_handler_eventfd = {
	.compatible = "eventfd-v1",
	.can_preserve = eventfd_can_preserve,
	.get_id = eventfd_get_id,
	.preserve = eventfd_record,
	.freeze = eventfd_record,
	.retrieve = eventfd_retrieve,
	.can_finish = handler_can_finish_always,
};
