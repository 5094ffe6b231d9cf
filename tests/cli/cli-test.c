/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: helpers of luoctl's lifecycle tests
 *
 * See cli-test.h.  luoctl's output goes to files in the case's temporary
 * directory rather than pipes, so that a large listing cannot deadlock the
 * test against a full pipe.
 */
#include "cli-test.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/macro.h"
#include "harness.h"
#include "luod-test.h"

static void read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	buf[0] = 0;
	if (fd < 0)
		return;
	while (got < size - 1) {
		ssize_t k = read(fd, buf + got, size - 1 - got);
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	buf[got] = 0;
	if (got == size - 1) {
		char more;
		if (read(fd, &more, 1) > 0)
			test_fail_at(__FILE__, __LINE__, "%s is larger than the test's %zu bytes",
				     path, size - 1);
	}
	close(fd);
}

void cli_luoctl(struct cli_out *o, const char *const *args)
{
	char luoctl[512], out[300], err[300];
	const char *argv[64];
	size_t n = 0;
	int status;
	pid_t pid;

	test_build_path("src/cli/luoctl", luoctl, sizeof(luoctl));
	snprintf(out, sizeof(out), "%s/luoctl.out", test_tmpdir());
	snprintf(err, sizeof(err), "%s/luoctl.err", test_tmpdir());
	argv[n++] = luoctl;
	for (size_t i = 0; args[i] && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		test_fail_at(__FILE__, __LINE__, "fork: %m");
	if (pid == 0) {
		int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (fo < 0 || fe < 0 || dup2(fo, STDOUT_FILENO) < 0 || dup2(fe, STDERR_FILENO) < 0)
			_exit(126);
		execv(luoctl, (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		test_fail_at(__FILE__, __LINE__, "waitpid: %m");
	o->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	read_file(out, o->out, sizeof(o->out));
	read_file(err, o->err, sizeof(o->err));
	test_diag("luoctl %s%s%s -> %d%s%s", args[0] ? args[0] : "", args[0] && args[1] ? " " : "",
		  args[0] && args[1] ? args[1] : "", o->status, o->err[0] ? ", stderr: " : "",
		  o->err);
}

void cli_need_jq(void)
{
	if (access("/usr/bin/jq", X_OK) < 0 && access("/usr/local/bin/jq", X_OK) < 0)
		test_skip("jq is not installed (apt-get install jq) to check the JSON output");
}

int cli_jq(const char *json, const char *expr)
{
	char path[300];
	int fd;

	snprintf(path, sizeof(path), "%s/luoctl.json", test_tmpdir());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		test_fail_at(__FILE__, __LINE__, "open %s: %m", path);
	if (write(fd, json, strlen(json)) != (ssize_t)strlen(json))
		test_fail_at(__FILE__, __LINE__, "write %s: %m", path);
	close(fd);
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		test_fail_at(__FILE__, __LINE__, "fork: %m");
	if (pid == 0) {
		/* jq prints the value it tested; only its exit status matters. */
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (null < 0 || dup2(null, STDOUT_FILENO) < 0)
			_exit(126);
		execlp("jq", "jq", "-e", expr, path, (char *)NULL);
		_exit(127);
	}
	return cli_wait(pid);
}

pid_t cli_spawn(int (*fn)(void *arg), void *arg)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		test_fail_at(__FILE__, __LINE__, "fork: %m");
	if (pid == 0) {
		int r = fn(arg);
		fflush(stdout);
		_exit(r);
	}
	return pid;
}

int cli_wait(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		test_fail_at(__FILE__, __LINE__, "waitpid %d: %m", (int)pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void cli_sync_init(struct cli_sync *s)
{
	if (pipe2(s->fd, O_CLOEXEC) < 0)
		test_fail_at(__FILE__, __LINE__, "pipe2: %m");
}

void cli_sync_post(struct cli_sync *s)
{
	if (write(s->fd[1], "x", 1) != 1)
		test_fail_at(__FILE__, __LINE__, "sync write: %m");
}

bool cli_sync_wait(struct cli_sync *s, int timeout_ms)
{
	struct pollfd p = { .fd = s->fd[0], .events = POLLIN };
	char c;

	if (poll(&p, 1, timeout_ms) <= 0)
		return false;
	return read(s->fd[0], &c, 1) == 1;
}

void cli_sync_close(struct cli_sync *s)
{
	for (int i = 0; i < 2; i++)
		if (s->fd[i] >= 0) {
			close(s->fd[i]);
			s->fd[i] = -1;
		}
}

static uint8_t pattern_byte(size_t i, uint32_t seed)
{
	return (uint8_t)((i * 2654435761u) >> 13 ^ seed ^ (i >> 8));
}

int cli_memfd_with_pattern(size_t size, uint32_t seed)
{
	_cleanup_close_ int fd = memfd_create("cli-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	uint8_t buf[4096];

	if (fd < 0)
		return -errno;
	for (size_t off = 0; off < size;) {
		size_t k = size - off < sizeof(buf) ? size - off : sizeof(buf);

		for (size_t i = 0; i < k; i++)
			buf[i] = pattern_byte(off + i, seed);
		if (pwrite(fd, buf, k, (off_t)off) != (ssize_t)k)
			return -errno;
		off += k;
	}
	return TAKE_FD(fd);
}

bool cli_fd_has_pattern(int fd, size_t size, uint32_t seed)
{
	uint8_t buf[4096];
	struct stat st;

	if (fstat(fd, &st) < 0 || (size_t)st.st_size != size)
		return false;
	for (size_t off = 0; off < size;) {
		size_t k = size - off < sizeof(buf) ? size - off : sizeof(buf);

		if (pread(fd, buf, k, (off_t)off) != (ssize_t)k)
			return false;
		for (size_t i = 0; i < k; i++)
			if (buf[i] != pattern_byte(off + i, seed))
				return false;
		off += k;
	}
	return true;
}

int cli_server_pid(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t len = sizeof(cred);
	_cleanup_close_ int fd = -EBADF;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	return cred.pid;
}
