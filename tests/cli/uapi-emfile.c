/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: a kernel-uAPI program whose fd table is full, for `luoctl run`
 *
 * uapi-emfile NAME TEXT: the incoming session NAME holds a memfd under token 1
 * with TEXT.  With no free fd slot (RLIMIT_NOFILE lowered to what is open),
 * RETRIEVE_SESSION, CREATE_SESSION and RETRIEVE_FD must fail with EMFILE, as
 * in the kernel, and change nothing: once a slot is free the same calls
 * succeed and the file holds TEXT.  Exits 0, or 10 + the step that failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "luo/uapi.h"

static int fillers[512];
static int n_fillers;
static struct rlimit old_limit;

static int fill(void)
{
	struct rlimit rl;
	int probe = fcntl(0, F_DUPFD_CLOEXEC, 0);

	if (probe < 0 || probe >= 256)
		return -1;
	close(probe);
	if (getrlimit(RLIMIT_NOFILE, &old_limit) < 0)
		return -1;
	rl = old_limit;
	rl.rlim_cur = 256;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	for (;;) {
		int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);

		if (fd < 0)
			return errno == EMFILE ? 0 : -1;
		if (n_fillers == (int)(sizeof(fillers) / sizeof(fillers[0])))
			return -1;
		fillers[n_fillers++] = fd;
	}
}

static int unfill(void)
{
	while (n_fillers > 0)
		close(fillers[--n_fillers]);
	return setrlimit(RLIMIT_NOFILE, &old_limit);
}

static int fails_emfile(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) < 0 && errno == EMFILE;
}

int main(int argc, char **argv)
{
	struct liveupdate_ioctl_retrieve_session r = { .size = sizeof(r) };
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c) };
	struct liveupdate_session_retrieve_fd f = { .size = sizeof(f), .token = 1 };
	struct liveupdate_session_finish fin = { .size = sizeof(fin) };
	char buf[256] = { 0 };
	int dev;

	if (argc != 3 || strlen(argv[1]) >= sizeof(r.name))
		return 2;
	memcpy(r.name, argv[1], strlen(argv[1]));
	snprintf((char *)c.name, sizeof(c.name), "%s-new", argv[1]);
	dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return 11;
	if (fill() < 0 || !fails_emfile(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &r) ||
	    !fails_emfile(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &c) || unfill() < 0)
		return 12;
	if (ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &r) < 0)
		return 13;
	if (fill() < 0 || !fails_emfile(r.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &f) || unfill() < 0)
		return 14;
	if (ioctl(r.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &f) < 0)
		return 15;
	if (pread(f.fd, buf, sizeof(buf) - 1, 0) < 0 || strcmp(buf, argv[2]) != 0)
		return 16;
	/* The create that could not be received made nothing: the name is free. */
	if (ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &c) < 0)
		return 17;
	if (ioctl(r.fd, LIVEUPDATE_SESSION_FINISH, &fin) < 0)
		return 18;
	close(c.fd);
	close(f.fd);
	close(r.fd);
	close(dev);
	return 0;
}
