/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "fd-util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>

#include "macro.h"

int fd_set_cloexec(int fd, bool cloexec)
{
	int flags = fcntl(fd, F_GETFD);

	if (flags < 0)
		return negative_errno();
	int nflags = cloexec ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);

	if (nflags == flags)
		return 0;
	return fcntl(fd, F_SETFD, nflags) < 0 ? negative_errno() : 0;
}

int fd_set_nonblock(int fd, bool nonblock)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return negative_errno();
	int nflags = nonblock ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);

	if (nflags == flags)
		return 0;
	return fcntl(fd, F_SETFL, nflags) < 0 ? negative_errno() : 0;
}

int fd_dup_cloexec(int fd)
{
	return RET_NERRNO(fcntl(fd, F_DUPFD_CLOEXEC, 3));
}

int fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

int fd_count_open(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return negative_errno();
	for (struct dirent *de; (de = readdir(d));)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

long fd_raise_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return negative_errno();
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			return negative_errno();
	}
	return (long)rl.rlim_cur;
}

int fd_read_link(int fd, char *buf, size_t size)
{
	char path[64];
	ssize_t n;

	if (size == 0)
		return -EINVAL;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, size - 1);
	if (n < 0)
		return negative_errno();
	buf[n] = 0;
	return 0;
}
