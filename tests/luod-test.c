/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "luod-test.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static const char *root_path(const char *var, const char *rel, char *buf, size_t size)
{
	const char *root = getenv(var);

	if (!root)
		test_fail_at(__FILE__, __LINE__, "%s is not set (run the tests with meson test)",
			     var);
	snprintf(buf, size, "%s/%s", root, rel);
	return buf;
}

const char *test_build_path(const char *rel, char *buf, size_t size)
{
	return root_path("LUO_BUILD_ROOT", rel, buf, size);
}

const char *test_source_path(const char *rel, char *buf, size_t size)
{
	return root_path("LUO_SOURCE_ROOT", rel, buf, size);
}

int test_luod_connect(const struct test_luod *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (strlen(d->socket) >= sizeof(sa.sun_path)) {
		close(fd);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, d->socket, strlen(d->socket) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

void test_luod_start(struct test_luod *d, const char *const *extra_args)
{
	char luod[512];
	const char *argv[64];
	size_t n = 0;

	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "%s", test_tmpdir());
	snprintf(d->socket, sizeof(d->socket), "%s/luod.sock", d->dir);
	test_build_path("src/daemon/luod", luod, sizeof(luod));
	if (access(luod, X_OK) < 0)
		test_fail_at(__FILE__, __LINE__, "no luod at %s", luod);
	argv[n++] = luod;
	argv[n++] = "--foreground";
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	for (size_t i = 0; extra_args && extra_args[i] && n < 62; i++)
		argv[n++] = extra_args[i];
	argv[n] = NULL;

	fflush(stdout);
	d->pid = fork();
	if (d->pid < 0)
		test_fail_at(__FILE__, __LINE__, "fork: %m");
	if (d->pid == 0) {
		/* luod logs to stderr; keep stdout (the TAP stream) clean. */
		dup2(STDERR_FILENO, STDOUT_FILENO);
		execv(luod, (char *const *)argv);
		_exit(127);
	}
	setenv("LUO_SOCKET", d->socket, 1);
	for (int i = 0; i < 1000; i++) {
		int fd = test_luod_connect(d);

		if (fd >= 0) {
			struct ucred cred;
			socklen_t len = sizeof(cred);

			if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
				test_fail_at(__FILE__, __LINE__, "SO_PEERCRED: %m");
			close(fd);
			if (cred.pid != d->pid)
				test_fail_at(__FILE__, __LINE__,
					     "socket %s is served by pid %d, not our luod %d",
					     d->socket, (int)cred.pid, (int)d->pid);
			return;
		}
		int status;
		if (waitpid(d->pid, &status, WNOHANG) == d->pid)
			test_fail_at(__FILE__, __LINE__, "luod exited during start-up (status %d)",
				     status);
		usleep(5000);
	}
	test_fail_at(__FILE__, __LINE__, "luod did not start listening on %s", d->socket);
}

/* Whether pid's name is the worker's (the keeper may also have a dead
 * worker's update checker or compaction for a moment). */
static bool is_worker(pid_t pid)
{
	char path[64], comm[32] = "";
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	return n > 0 && strncmp(comm, "luod: worker", 12) == 0;
}

pid_t test_luod_worker_now(const struct test_luod *d)
{
	char path[64], buf[256];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)d->pid, (int)d->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	for (char *p = buf, *end; *p; p = end) {
		long pid = strtol(p, &end, 10);

		if (end == p || pid <= 0)
			break;
		if (is_worker((pid_t)pid))
			return (pid_t)pid;
	}
	return 0;
}

pid_t test_luod_worker_pid(const struct test_luod *d)
{
	/* The keeper listens before its first worker runs: wait for the worker. */
	for (int tries = 0; tries < 20000; tries++) {
		pid_t w = test_luod_worker_now(d);

		if (w > 0)
			return w;
		usleep(1000);
	}
	test_fail_at(__FILE__, __LINE__, "luod %d has no worker", (int)d->pid);
}

/* The state letter of /proc/pid/stat. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

void test_luod_pause(const struct test_luod *d, bool pause)
{
	pid_t w = test_luod_worker_pid(d);

	if (kill(w, pause ? SIGSTOP : SIGCONT) < 0 || kill(d->pid, pause ? SIGSTOP : SIGCONT) < 0)
		test_fail_at(__FILE__, __LINE__, "kill: %m");
	/* SIGSTOP takes effect asynchronously: wait until the worker no longer runs. */
	while (pause && proc_state(w) != 'T')
		usleep(1000);
}

void test_luod_stop(struct test_luod *d)
{
	int status;

	if (d->pid <= 0)
		return;
	kill(d->pid, SIGTERM);
	for (int i = 0; i < 2000; i++) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->pid = 0;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				test_fail_at(__FILE__, __LINE__, "luod ended with status 0x%x",
					     status);
			return;
		}
		usleep(5000);
	}
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &status, 0);
	d->pid = 0;
	test_fail_at(__FILE__, __LINE__, "luod did not exit on SIGTERM");
}

static int run(const char *const *argv, char *buf, size_t size)
{
	int pipefd[2] = { -1, -1 }, status;
	pid_t pid;

	if (buf && pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (buf)
			dup2(pipefd[1], STDOUT_FILENO);
		else
			dup2(STDERR_FILENO, STDOUT_FILENO);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (buf) {
		size_t got = 0;
		close(pipefd[1]);
		for (;;) {
			ssize_t k = read(pipefd[0], buf + got, size - 1 - got);
			if (k <= 0)
				break;
			got += k;
			if (got == size - 1) {
				char sink[4096];
				while (read(pipefd[0], sink, sizeof(sink)) > 0)
					;
				break;
			}
		}
		buf[got] = 0;
		close(pipefd[0]);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int test_run_command(const char *const *argv)
{
	return run(argv, NULL, 0);
}

int test_run_command_output(const char *const *argv, char *buf, size_t size)
{
	return run(argv, buf, size);
}
