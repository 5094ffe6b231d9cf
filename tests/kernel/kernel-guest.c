/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "kernel-guest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

void kernel_need_stage(const char *stage, const char *run_hint, bool need_device)
{
	const char *s = getenv("LAB_STAGE");
	struct stat st;

	if (!s)
		test_skip("runs inside a LUO kernel guest only (kernel/lab.sh run %s)", run_hint);
	if (strcmp(s, stage) != 0)
		test_skip("a stage %s case, this is stage %s", stage, s);
	if (need_device && (stat(KERNEL_DEV, &st) < 0 || !S_ISCHR(st.st_mode)))
		test_fail_at(__FILE__, __LINE__, "no character device %s in the guest", KERNEL_DEV);
}

int kernel_dev_open(void)
{
	int fd = open(KERNEL_DEV, O_RDWR | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

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
