/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the identity index behind EBUSY
 *
 * Every file the engine holds (preserved, or incoming and not yet finished)
 * is in one balanced tree (glibc's tsearch(), a red-black tree) keyed by its
 * struct luo_file_id: (dev, ino, extra), then, for identities by open file
 * description, the kernel's order of the open file descriptions behind
 * luod's own fds as kcmp(KCMP_FILE) reports it.  Every eventfd shares one
 * inode, so two eventfds differ only there, while a dup() of one compares
 * equal.  Lookups and changes are O(log n) comparisons, each at most one
 * kcmp() system call.
 *
 * Files enter when preserved (or decoded) and leave before their fd is
 * closed: the comparison needs the fd open.  luo_engine_free() destroys the
 * tree in one go and leaves the root NULL, after which removal only forgets.
 */
#include <errno.h>
#include <linux/kcmp.h>
#include <search.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine-internal.h"

static int cmp_u64(uint64_t a, uint64_t b)
{
	return a < b ? -1 : a > b ? 1 : 0;
}

/*
 * kcmp() needs our pid; getpid() is a system call of its own, so it is read
 * once per index operation rather than once per comparison (and not cached
 * for good, which a fork would invalidate).
 */
static pid_t identity_pid;

static int cmp_description(int fd1, int fd2)
{
	pid_t pid = identity_pid;
	long r;

	if (fd1 == fd2)
		return 0;
	r = syscall(SYS_kcmp, pid, pid, KCMP_FILE, fd1, fd2);
	switch (r) {
	case 0:
		return 0;
	case 1:
		return -1;
	case 2:
		return 1;
	default:
		/*
		 * No order from the kernel (kcmp unavailable): fall back to the
		 * fd numbers, which still keeps the tree consistent because
		 * luod's fds are stable while indexed; only dups go unnoticed.
		 */
		return fd1 < fd2 ? -1 : 1;
	}
}

static int identity_cmp(const void *a, const void *b)
{
	const struct luo_file *fa = a, *fb = b;
	int r;

	r = cmp_u64(fa->id.dev, fb->id.dev);
	if (r)
		return r;
	r = cmp_u64(fa->id.ino, fb->id.ino);
	if (r)
		return r;
	r = cmp_u64(fa->id.extra, fb->id.extra);
	if (r)
		return r;
	r = (int)fa->id.by_description - (int)fb->id.by_description;
	if (r)
		return r;
	if (!fa->id.by_description)
		return 0;
	return cmp_description(fa->hf.fd, fb->hf.fd);
}

int luo_identity_add(struct luo_engine *e, struct luo_file *f)
{
	void *node;

	if (f->id_node)
		return 0;
	identity_pid = getpid();
	node = tsearch(f, &e->identity_root, identity_cmp);
	if (!node)
		return -ENOMEM;
	if (*(struct luo_file **)node != f)
		return -EBUSY;
	f->id_node = node;
	return 0;
}

void luo_identity_remove(struct luo_engine *e, struct luo_file *f)
{
	if (!f->id_node)
		return;
	if (e->identity_root) {
		identity_pid = getpid();
		tdelete(f, &e->identity_root, identity_cmp);
	}
	f->id_node = NULL;
}

bool luo_identity_contains(struct luo_engine *e, const struct luo_file_id *id, int fd)
{
	struct luo_file key = { .id = *id, .hf.fd = fd };

	identity_pid = getpid();
	return tfind(&key, &e->identity_root, identity_cmp) != NULL;
}

bool luo_fd_same_description(int fd1, int fd2)
{
	pid_t pid = getpid();

	return syscall(SYS_kcmp, pid, pid, KCMP_FILE, fd1, fd2) == 0;
}
