/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "kernel-holder.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <unistd.h>

#include "harness.h"

void start_holder(const int *keep, size_t n)
{
	int p[2];
	char c;

	ASSERT_OK(pipe2(p, O_CLOEXEC) < 0 ? -errno : 0);
	pid_t pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (pid == 0) {
		int max = (int)sysconf(_SC_OPEN_MAX);

		if (setsid() < 0)
			_exit(1);
		for (int fd = 0; fd < max; fd++) {
			bool kept = fd == p[1];

			for (size_t i = 0; i < n; i++)
				kept = kept || fd == keep[i];
			if (!kept)
				close(fd);
		}
		c = 'r';
		if (write(p[1], &c, 1) != 1)
			_exit(1);
		close(p[1]);
		for (;;)
			pause();
	}
	close(p[1]);
	ASSERT_EQ(read(p[0], &c, 1), 1);
	ASSERT_EQ(c, 'r');
	close(p[0]);
}
