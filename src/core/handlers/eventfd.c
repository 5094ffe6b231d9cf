/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the eventfd handler ("eventfd-v1")
 *
 * Serves eventfds.  luod holds the eventfd, so its counter stays as it is.
 *
 * Every eventfd is an anonymous-inode file sharing one inode with every other
 * one (and with epoll, timerfd, signalfd ...), so neither the file type nor
 * the inode can recognise or tell eventfds apart.  The kernel's
 * /proc/self/fdinfo does both: only an eventfd's has "eventfd-count" (and an
 * O_PATH fd's has no eventfd lines at all), and this kernel adds
 * "eventfd-id", a number unique to each eventfd for as long as it lives.
 * Without those lines recognition falls back to the /proc/self/fd link,
 * "anon_inode:[eventfd]".  Identity for EBUSY is the open file description
 * (by_description), with the eventfd-id + 1 in extra when the kernel reports
 * it (0 when not): two eventfds are two files and a dup of one is the same
 * file, and with the id the engine tells them apart without kcmp().
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
 *
 * Reading fdinfo is most of the cost of preserving an eventfd, so one
 * preserve_fd of the engine reads it once: what can_preserve read is kept for
 * the get_id and preserve of the same preserve (handler_preserve_ctx says
 * which one that is).  Any other call reads fdinfo afresh.
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

/* What /proc/self/fdinfo says about an fd. */
struct eventfd_info {
	bool is_eventfd; /* an "eventfd-count" line */
	bool has_flags;
	int flags;	   /* the "flags" line: the open file's flags */
	int semaphore;	   /* 1 or 0, -ENODATA if not reported */
	uint64_t id_extra; /* eventfd-id + 1, 0 if not reported */
};

/* The fdinfo read during one preserve of the engine, for its later calls. */
static __thread struct {
	bool valid;
	uint64_t gen; /* handler_preserve_ctx.gen of that preserve */
	struct eventfd_info info;
} eventfd_kept;

static const char *eventfd_field(const char *line, const char *name)
{
	size_t n = strlen(name);

	if (strncmp(line, name, n) != 0 || line[n] != ':')
		return NULL;
	return line + n + 1 + strspn(line + n + 1, " \t");
}

/*
 * Reads fdinfo of fd: 0 or -errno.  Plain open/read into a stack buffer:
 * this runs once per preserved eventfd.  An eventfd's fdinfo is short; a
 * longer one (an epoll's, say) is cut, and is no eventfd's anyway.
 */
static int eventfd_read_info(int fd, struct eventfd_info *ret)
{
	_cleanup_close_ int info = -EBADF;
	char path[64], buf[512];
	ssize_t n;

	*ret = (struct eventfd_info){ .semaphore = -ENODATA };
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	info = open(path, O_RDONLY | O_CLOEXEC);
	if (info < 0)
		return negative_errno();
	n = read(info, buf, sizeof(buf) - 1);
	if (n < 0)
		return negative_errno();
	buf[n] = 0;
	for (char *line = buf, *next; line && *line; line = next) {
		const char *v;

		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		if ((v = eventfd_field(line, "flags"))) {
			char *end;
			unsigned long fl = strtoul(v, &end, 8);

			if (end != v) {
				ret->has_flags = true;
				ret->flags = (int)fl;
			}
		} else if (eventfd_field(line, "eventfd-count"))
			ret->is_eventfd = true;
		else if ((v = eventfd_field(line, "eventfd-id"))) {
			char *end;
			unsigned long long id = strtoull(v, &end, 10);

			if (end != v && *end == 0 && id < UINT64_MAX)
				ret->id_extra = (uint64_t)id + 1;
		} else if ((v = eventfd_field(line, "eventfd-semaphore"))) {
			if (*v == '0' || *v == '1')
				ret->semaphore = *v == '1';
		}
	}
	return 0;
}

static bool eventfd_link_is_eventfd(int fd)
{
	char link[64];

	if (fd_read_link(fd, link, sizeof(link)) < 0)
		return false;
	return strcmp(link, EVENTFD_LINK) == 0;
}

/*
 * Whether fd is an eventfd (and not an O_PATH fd of one), from its fdinfo if
 * that says so, else from its link.
 */
static bool eventfd_is_eventfd(int fd, const struct eventfd_info *info)
{
	if (info->is_eventfd)
		return !info->has_flags || !(info->flags & O_PATH);
	return eventfd_link_is_eventfd(fd) && !handler_fd_is_path_only(fd);
}

/* The fdinfo of fd: read once per preserve of the engine, else every time. */
static int eventfd_info_of(int fd, struct eventfd_info *ret)
{
	const struct handler_preserve_ctx *c = handler_preserve_of(fd);
	int r;

	if (c && eventfd_kept.valid && eventfd_kept.gen == c->gen) {
		*ret = eventfd_kept.info;
		return 0;
	}
	r = eventfd_read_info(fd, ret);
	if (r >= 0 && c) {
		eventfd_kept.valid = true;
		eventfd_kept.gen = c->gen;
		eventfd_kept.info = *ret;
	}
	return r;
}

static bool eventfd_can_preserve(const struct luo_handler *h, int fd, const struct stat *st)
{
	struct eventfd_info info;
	uint64_t magic;

	/*
	 * Anonymous inodes have no file type, except on kernels that give them
	 * S_IFREG; there the filesystem tells them from regular files.  Both
	 * checks come before any /proc read, which costs far more.
	 */
	if (S_ISREG(st->st_mode)) {
		if (!handler_may_be_pseudo_fs(st) || handler_fs_type(fd, &magic) < 0 ||
		    magic != ANON_INODE_FS_MAGIC)
			return false;
	} else if ((st->st_mode & S_IFMT) != 0)
		return false;
	if (eventfd_info_of(fd, &info) < 0)
		info = (struct eventfd_info){ .semaphore = -ENODATA };
	return eventfd_is_eventfd(fd, &info) && !handler_fd_is_path_only(fd);
}

static int eventfd_get_id(const struct luo_handler *h, int fd, const struct stat *st,
			  struct luo_file_id *ret)
{
	struct eventfd_info info;
	int r;

	/*
	 * Where /proc cannot tell (not mounted) no eventfd has an id and the
	 * description alone tells them apart.  A passing failure (no fd to
	 * spare) is an error rather than no id: a file indexed without its id
	 * would not meet a dup of it indexed with one.
	 */
	r = eventfd_info_of(fd, &info);
	if (r == -EMFILE || r == -ENFILE || r == -ENOMEM)
		return r;
	if (r < 0)
		info.id_extra = 0;
	*ret = (struct luo_file_id){
		.dev = (uint64_t)st->st_dev,
		.ino = (uint64_t)st->st_ino,
		.extra = info.id_extra,
		.by_description = true,
	};
	return 0;
}

static uint64_t eventfd_nonblock(int fl)
{
	return (uint64_t)(fl & O_NONBLOCK);
}

/* Records the flags of f's eventfd from info (or from fcntl() where it lacks them). */
static int eventfd_record(struct luo_handler_file *f, const struct eventfd_info *info)
{
	uint64_t fields[_EVENTFD_FIELDS];
	int fl = info->flags;

	if (!info->has_flags) {
		fl = handler_getfl(f->fd);
		if (fl < 0)
			return fl;
	}
	fields[EVENTFD_FLAGS] = (info->semaphore > 0 ? EFD_SEMAPHORE : 0) | eventfd_nonblock(fl);
	fields[EVENTFD_SEMAPHORE_KNOWN] = info->semaphore >= 0;
	return handler_record_store(&f->data, &f->data_size, EVENTFD_RECORD_VERSION, fields,
				    _EVENTFD_FIELDS);
}

static int eventfd_preserve(struct luo_handler_file *f)
{
	struct eventfd_info info;
	int r;

	r = eventfd_info_of(f->fd, &info);
	if (r < 0)
		return r;
	return eventfd_record(f, &info);
}

static int eventfd_freeze(struct luo_handler_file *f)
{
	uint64_t fields[_EVENTFD_FIELDS];
	int fl, r;

	r = handler_record_parse(f->data, f->data_size, EVENTFD_RECORD_VERSION, fields,
				 _EVENTFD_FIELDS);
	if (r < 0) {
		struct eventfd_info info;

		r = eventfd_read_info(f->fd, &info);
		return r < 0 ? r : eventfd_record(f, &info);
	}
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
	struct eventfd_info info;
	int r;

	r = handler_record_parse(f->data, f->data_size, EVENTFD_RECORD_VERSION, rec,
				 _EVENTFD_FIELDS);
	if (r < 0)
		return r;
	if (rec[EVENTFD_FLAGS] & ~(uint64_t)(EFD_SEMAPHORE | O_NONBLOCK) ||
	    rec[EVENTFD_SEMAPHORE_KNOWN] > 1 ||
	    (!rec[EVENTFD_SEMAPHORE_KNOWN] && (rec[EVENTFD_FLAGS] & EFD_SEMAPHORE)))
		return -EBADMSG;
	/*
	 * The fd slot came from the state blob: make sure it is still an eventfd.
	 * An fdinfo that cannot be read (no fd to spare) leaves the link to tell.
	 */
	if (eventfd_read_info(f->fd, &info) < 0)
		info = (struct eventfd_info){ .semaphore = -ENODATA };
	if (!eventfd_is_eventfd(f->fd, &info))
		return -EIO;
	/* The semaphore mode is fixed at creation: a change means another file. */
	if (rec[EVENTFD_SEMAPHORE_KNOWN] && info.semaphore >= 0 &&
	    !!(rec[EVENTFD_FLAGS] & EFD_SEMAPHORE) != !!info.semaphore)
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
	.retrieve_keeps_fd = true,
	.can_finish = handler_can_finish_always,
	.refuses_path_fds = true,
};
