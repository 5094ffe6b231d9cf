/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: a program written only against the kernel's uAPI, for `luoctl run`
 *
 * uapi-client NAME COMMAND...: opens /dev/liveupdate, creates the session
 * NAME with the kernel's ioctl, then runs COMMAND while holding it and exits
 * with COMMAND's status (10 + n when step n of its own fails).  Run under
 * `luoctl run`, the session lands in the luod luoctl pointed it at, so
 * COMMAND (say, `luoctl show NAME`) finds it there.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "luo/uapi.h"

int main(int argc, char **argv)
{
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c) };
	int dev, status;
	pid_t pid;

	if (argc < 3 || strlen(argv[1]) >= sizeof(c.name))
		return 2;
	dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		perror("open /dev/liveupdate");
		return 11;
	}
	memcpy(c.name, argv[1], strlen(argv[1]));
	if (ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &c) < 0) {
		perror("LIVEUPDATE_IOCTL_CREATE_SESSION");
		return 12;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return 13;
	if (pid == 0) {
		execvp(argv[2], argv + 2);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return 14;
	close(c.fd);
	close(dev);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
