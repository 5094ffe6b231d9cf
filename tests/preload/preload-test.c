/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: running test cases under luo-preload.so (see preload-test.h)
 *
 * The outer run (no shim) starts luod and re-executes the test program with
 * LD_PRELOAD and a marker in the environment; the inner run finds the marker,
 * insists that the shim is mapped, and runs the case's body.  Inner output
 * goes to stderr so that only the outer TAP stream reaches the runner.
 */
#include "preload-test.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define INNER_MARKER "LUO_PRELOAD_TEST_INNER"

bool preload_loaded(void)
{
	char line[1024];
	bool found = false;
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		test_fail_at(__FILE__, __LINE__, "/proc/self/maps: %m");
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, "/luo-preload.so") != NULL;
	fclose(f);
	return found;
}

bool preload_inner(void)
{
	return getenv(INNER_MARKER) != NULL;
}

const char *preload_need_luod(char *buf, size_t size)
{
	test_build_path("src/daemon/luod", buf, size);
	if (access(buf, X_OK) < 0)
		test_skip("luod is not built (%s)", buf);
	return buf;
}

void preload_setenv(void)
{
	char shim[512], value[1024];

	test_build_path("src/preload/luo-preload.so", shim, sizeof(shim));
	if (access(shim, R_OK) < 0)
		test_fail_at(__FILE__, __LINE__, "no shim at %s", shim);
#ifdef PRELOAD_SANITIZER_RUNTIME
	/* A sanitized shim needs the ASan runtime first in the initial library list. */
	snprintf(value, sizeof(value), "%s:%s", PRELOAD_SANITIZER_RUNTIME, shim);
#else
	snprintf(value, sizeof(value), "%s", shim);
#endif
	setenv("LD_PRELOAD", value, 1);
	setenv(INNER_MARKER, "1", 1);
}

pid_t preload_spawn(const char *const *argv, int keep_fd)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		test_fail_at(__FILE__, __LINE__, "fork: %m");
	if (pid == 0) {
		preload_setenv();
		dup2(STDERR_FILENO, STDOUT_FILENO);
		if (keep_fd >= 0)
			fcntl(keep_fd, F_SETFD, 0);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

int preload_wait(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			test_fail_at(__FILE__, __LINE__, "waitpid: %m");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void preload_case(const char *name, void (*body)(void))
{
	char luod[512], self[512];
	struct test_luod d;
	ssize_t n;
	int r;

	if (preload_inner()) {
		if (!preload_loaded())
			test_fail_at(__FILE__, __LINE__, "luo-preload.so is not loaded");
		body();
		return;
	}
	preload_need_luod(luod, sizeof(luod));
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		test_fail_at(__FILE__, __LINE__, "readlink /proc/self/exe: %m");
	self[n] = 0;
	test_luod_start(&d, NULL);
	r = preload_wait(preload_spawn((const char *const[]){ self, name, NULL }, -1));
	test_luod_stop(&d);
	if (r != 0)
		test_fail_at(__FILE__, __LINE__, "%s under the shim exited with %d", name, r);
}

int dev_open(void)
{
	for (int i = 0; i < 400; i++) {
		int fd = open(DEV, O_RDWR | O_CLOEXEC);

		if (fd >= 0 || errno != EBUSY)
			return fd < 0 ? -errno : fd;
		usleep(5000);
	}
	return -EBUSY;
}

int create_session(int dev, const char *name, int *ret_fd)
{
	struct liveupdate_ioctl_create_session a = { .size = sizeof(a) };
	int r;

	memcpy(a.name, name, strnlen(name, sizeof(a.name)));
	r = sys(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &a));
	if (r >= 0)
		*ret_fd = a.fd;
	return r;
}

int retrieve_session(int dev, const char *name, int *ret_fd)
{
	struct liveupdate_ioctl_retrieve_session a = { .size = sizeof(a) };
	int r;

	memcpy(a.name, name, strnlen(name, sizeof(a.name)));
	r = sys(ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &a));
	if (r >= 0)
		*ret_fd = a.fd;
	return r;
}

int preserve(int session, int fd, uint64_t token)
{
	struct liveupdate_session_preserve_fd a = { .size = sizeof(a), .fd = fd, .token = token };

	return sys(ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, &a));
}

int retrieve_fd(int session, uint64_t token, int *ret_fd)
{
	struct liveupdate_session_retrieve_fd a = { .size = sizeof(a), .token = token };
	int r = sys(ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD, &a));

	if (r >= 0)
		*ret_fd = a.fd;
	return r;
}

int finish(int session)
{
	struct liveupdate_session_finish a = { .size = sizeof(a) };

	return sys(ioctl(session, LIVEUPDATE_SESSION_FINISH, &a));
}

int get_name(int session, char name[LIVEUPDATE_SESSION_NAME_LENGTH])
{
	struct liveupdate_session_get_name a = { .size = sizeof(a) };
	int r = sys(ioctl(session, LIVEUPDATE_SESSION_GET_NAME, &a));

	if (r >= 0)
		memcpy(name, a.name, sizeof(a.name));
	return r;
}

bool profile_proposed(void)
{
	const char *p = getenv("LUO_PRELOAD_PROFILE");

	return p && strcmp(p, "proposed") == 0;
}

long session_magic(void)
{
	return profile_proposed() ? LUO_SESSION_MAGIC : ANON_INODE_FS_MAGIC;
}

void assert_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	ASSERT_TRUE(flags >= 0);
	ASSERT_TRUE(flags & FD_CLOEXEC);
}
