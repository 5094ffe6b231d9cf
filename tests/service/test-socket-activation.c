/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Socket activation: luod takes the listening socket a service manager passes
 * (LISTEN_PID/LISTEN_FDS at fd 3) instead of binding, refuses a socket of the
 * wrong kind with a clear message, never unlinks the path, and keeps all of
 * that across a live update.  The first case runs luod under systemd's own
 * systemd-socket-activate; the others pass the socket by hand, as systemd does.
 */
#include <fcntl.h>
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

#include "harness.h"
#include "luo/luo.h"
#include "luod-test.h"

#define PATTERN "kept across socket activation"

/* The output of a started process (stdout and stderr), read as it comes. */
struct proc {
	pid_t pid;
	int out;
	char text[16384];
	size_t len;
};

static bool find_in_path(const char *name, char *buf, size_t size)
{
	const char *path = getenv("PATH") ?: "/usr/bin:/bin";
	char dirs[4096];

	snprintf(dirs, sizeof(dirs), "%s:/usr/bin:/bin", path);
	for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d;
	     d = strtok_r(NULL, ":", &save)) {
		snprintf(buf, size, "%s/%s", d, name);
		if (access(buf, X_OK) == 0)
			return true;
	}
	return false;
}

/* Starts argv with stdout and stderr into a pipe; extra_fd, if >= 0, becomes fd 3
 * and LISTEN_PID/LISTEN_FDS name it (listen_pid 0: the child's own pid). */
static void proc_start(struct proc *p, const char *const *argv, int extra_fd, pid_t listen_pid,
		       const char *listen_fds)
{
	int pipefd[2];

	memset(p, 0, sizeof(*p));
	ASSERT_OK(pipe2(pipefd, O_CLOEXEC));
	fflush(stdout);
	p->pid = fork();
	ASSERT_OK(p->pid);
	if (p->pid == 0) {
		char buf[32];

		dup2(pipefd[1], STDOUT_FILENO);
		dup2(pipefd[1], STDERR_FILENO);
		if (extra_fd >= 0) {
			if (extra_fd != 3 && dup2(extra_fd, 3) < 0)
				_exit(126);
			fcntl(3, F_SETFD, 0);
			snprintf(buf, sizeof(buf), "%d",
				 listen_pid ? (int)listen_pid : (int)getpid());
			setenv("LISTEN_PID", buf, 1);
			setenv("LISTEN_FDS", listen_fds, 1);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	p->out = pipefd[0];
}

/* Reads until the output holds what (true) or ends (false). */
static bool proc_wait_for(struct proc *p, const char *what)
{
	while (!strstr(p->text, what)) {
		ssize_t n = read(p->out, p->text + p->len, sizeof(p->text) - 1 - p->len);

		if (n <= 0)
			return false;
		p->len += n;
		p->text[p->len] = 0;
	}
	return true;
}

/* Reads the rest of the output and reaps the process: its exit status. */
static int proc_finish(struct proc *p)
{
	int status;

	proc_wait_for(p, "\1never\1");
	close(p->out);
	ASSERT_EQ(waitpid(p->pid, &status, 0), p->pid);
	test_diag("output of pid %d:\n%s", (int)p->pid, p->text);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static const char *luod_path(char *buf, size_t size)
{
	test_build_path("src/daemon/luod", buf, size);
	ASSERT_OK(access(buf, X_OK));
	return buf;
}

static int listening_seqpacket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	ASSERT_OK(fd);
	ASSERT_TRUE(strlen(path) < sizeof(sa.sun_path));
	strcpy(sa.sun_path, path);
	ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_OK(listen(fd, 16));
	return fd;
}

static pid_t server_pid(int conn)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	ASSERT_OK(getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len));
	return cred.pid;
}

/* Hands a session over through path and takes it back: luod serves there. */
static void assert_session_round_trip(const char *path, const char *name)
{
	int luo, s, mfd, fd;
	char buf[64] = { 0 };

	luo = luo_connect(path);
	ASSERT_OK(luo);
	ASSERT_OK(luo_session_create(luo, name, 0, &s));
	mfd = memfd_create("activation", MFD_CLOEXEC);
	ASSERT_OK(mfd);
	ASSERT_EQ(write(mfd, PATTERN, sizeof(PATTERN)), (ssize_t)sizeof(PATTERN));
	ASSERT_OK(luo_session_preserve_fd(s, 1, mfd));
	close(mfd);
	ASSERT_OK(luo_session_handover(s));
	close(s);
	ASSERT_OK(luo_session_retrieve(luo, name, &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &fd));
	ASSERT_EQ(pread(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(PATTERN));
	ASSERT_STREQ(buf, PATTERN);
	close(fd);
	ASSERT_OK(luo_session_finish(s));
	close(s);
	close(luo);
}

static bool environ_has(pid_t pid, const char *prefix)
{
	char path[64], env[65536];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_OK(fd);
	n = read(fd, env, sizeof(env) - 1);
	close(fd);
	ASSERT_OK(n);
	env[n] = 0;
	for (char *e = env; e < env + n; e += strlen(e) + 1)
		if (strncmp(e, prefix, strlen(prefix)) == 0)
			return true;
	return false;
}

TEST(systemd_socket_activate_passes_the_socket_luod_serves)
{
	char tool[512], luod[512], luoctl[512], sock[256], exe[512], link[64];
	struct stat before, after;
	struct proc p;
	int conn;
	ssize_t n;

	if (!find_in_path("systemd-socket-activate", tool, sizeof(tool)))
		test_skip("systemd-socket-activate is not installed (package systemd)");
	snprintf(sock, sizeof(sock), "%s/luod.sock", test_tmpdir());
	proc_start(&p,
		   (const char *const[]){ tool, "--seqpacket", "-l", sock,
					  luod_path(luod, sizeof(luod)), "--foreground",
					  "--log-target=stderr", NULL },
		   -1, 0, NULL);
	/* systemd-socket-activate listens, then runs luod at the first connection. */
	ASSERT_TRUE(proc_wait_for(&p, "Listening on"));
	ASSERT_OK(stat(sock, &before));
	ASSERT_TRUE(S_ISSOCK(before.st_mode));

	assert_session_round_trip(sock, "activated");
	ASSERT_TRUE(proc_wait_for(&p, "the socket passed by the service manager (LISTEN_FDS)"));

	/* The luod serving is the process started, now running luod's binary. */
	conn = luo_connect(sock);
	ASSERT_OK(conn);
	ASSERT_EQ(server_pid(conn), p.pid);
	close(conn);
	snprintf(link, sizeof(link), "/proc/%d/exe", (int)p.pid);
	n = readlink(link, exe, sizeof(exe) - 1);
	ASSERT_OK(n);
	exe[n] = 0;
	ASSERT_TRUE(strcmp(exe, luod) == 0 || strstr(exe, "/src/daemon/luod") != NULL);
	/* luod did not bind a socket of its own. */
	ASSERT_OK(stat(sock, &after));
	ASSERT_EQ(before.st_ino, after.st_ino);

	/* A live update keeps the passed socket, and the next image never sees the
	 * service manager's variables. */
	test_build_path("src/cli/luoctl", luoctl, sizeof(luoctl));
	ASSERT_EQ(
		test_run_command((const char *const[]){ luoctl, "--socket", sock, "update", NULL }),
		0);
	ASSERT_FALSE(environ_has(p.pid, "LISTEN_FDS="));
	ASSERT_FALSE(environ_has(p.pid, "LISTEN_PID="));
	assert_session_round_trip(sock, "after-update");

	/* The socket belongs to the service manager: still there after luod stops. */
	ASSERT_OK(kill(p.pid, SIGTERM));
	ASSERT_EQ(proc_finish(&p), 0);
	ASSERT_OK(stat(sock, &after));
	ASSERT_EQ(before.st_ino, after.st_ino);
}

TEST(systemd_socket_activate_stream_socket_is_refused)
{
	char tool[512], luod[512], sock[256];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct proc p;
	int fd;

	if (!find_in_path("systemd-socket-activate", tool, sizeof(tool)))
		test_skip("systemd-socket-activate is not installed (package systemd)");
	snprintf(sock, sizeof(sock), "%s/luod.sock", test_tmpdir());
	proc_start(&p,
		   (const char *const[]){ tool, "-l", sock, luod_path(luod, sizeof(luod)),
					  "--foreground", "--log-target=stderr", NULL },
		   -1, 0, NULL);
	ASSERT_TRUE(proc_wait_for(&p, "Listening on"));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT_OK(fd);
	strcpy(sa.sun_path, sock);
	ASSERT_OK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_EQ(proc_finish(&p), 1);
	close(fd);
	ASSERT_TRUE(strstr(p.text, "not a listening SOCK_SEQPACKET unix socket") != NULL);
}

TEST(passed_socket_is_served_and_not_unlinked)
{
	char luod[512], sock[256], other[256];
	struct stat st;
	struct proc p;
	int lfd, conn;

	snprintf(sock, sizeof(sock), "%s/passed.sock", test_tmpdir());
	snprintf(other, sizeof(other), "%s/not-this.sock", test_tmpdir());
	lfd = listening_seqpacket(sock);
	/* --socket names another path: the passed socket wins, with a warning. */
	proc_start(&p,
		   (const char *const[]){ luod_path(luod, sizeof(luod)), "--foreground", "--socket",
					  other, "--log-target=stderr", NULL },
		   lfd, 0, "1");
	close(lfd);
	ASSERT_TRUE(proc_wait_for(&p, "(LISTEN_FDS)"));
	ASSERT_TRUE(strstr(p.text, "not --socket") != NULL);
	/* SO_PEERCRED names the process that listened (this one): the socket is
	 * the very one passed, and luod answers on it. */
	conn = luo_connect(sock);
	ASSERT_OK(conn);
	ASSERT_EQ(server_pid(conn), getpid());
	close(conn);
	assert_session_round_trip(sock, "passed");
	ASSERT_ERRNO(stat(other, &st), ENOENT);
	ASSERT_OK(kill(p.pid, SIGTERM));
	ASSERT_EQ(proc_finish(&p), 0);
	ASSERT_OK(stat(sock, &st));
}

TEST(passed_datagram_socket_is_refused)
{
	char luod[512], sock[256];
	struct stat st;
	struct proc p;
	int pair[2];

	snprintf(sock, sizeof(sock), "%s/own.sock", test_tmpdir());
	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair));
	proc_start(&p,
		   (const char *const[]){ luod_path(luod, sizeof(luod)), "--foreground", "--socket",
					  sock, "--log-target=stderr", NULL },
		   pair[0], 0, "1");
	close(pair[0]);
	close(pair[1]);
	ASSERT_EQ(proc_finish(&p), 1);
	ASSERT_TRUE(strstr(p.text, "not a listening SOCK_SEQPACKET unix socket") != NULL);
	/* Refused means refused: luod did not fall back to a socket of its own. */
	ASSERT_ERRNO(stat(sock, &st), ENOENT);
}

TEST(two_passed_sockets_are_refused)
{
	char luod[512], sock[256];
	struct proc p;
	int lfd;

	snprintf(sock, sizeof(sock), "%s/two.sock", test_tmpdir());
	lfd = listening_seqpacket(sock);
	proc_start(&p,
		   (const char *const[]){ luod_path(luod, sizeof(luod)), "--foreground", "--socket",
					  sock, "--log-target=stderr", NULL },
		   lfd, 0, "2");
	close(lfd);
	ASSERT_EQ(proc_finish(&p), 1);
	ASSERT_TRUE(strstr(p.text, "luod takes exactly one") != NULL);
}

TEST(socket_meant_for_another_process_is_left_alone)
{
	char luod[512], sock[256];
	struct proc p;
	int pair[2];

	snprintf(sock, sizeof(sock), "%s/own.sock", test_tmpdir());
	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair));
	/* LISTEN_PID names this test, not luod: luod binds its own socket. */
	proc_start(&p,
		   (const char *const[]){ luod_path(luod, sizeof(luod)), "--foreground", "--socket",
					  sock, "--log-target=stderr", NULL },
		   pair[0], getpid(), "1");
	close(pair[0]);
	close(pair[1]);
	ASSERT_TRUE(proc_wait_for(&p, "listening on"));
	ASSERT_TRUE(strstr(p.text, "LISTEN_FDS") == NULL);
	assert_session_round_trip(sock, "own");
	ASSERT_OK(kill(p.pid, SIGTERM));
	ASSERT_EQ(proc_finish(&p), 0);
}

TEST_MAIN(TEST_CASE(systemd_socket_activate_passes_the_socket_luod_serves),
	  TEST_CASE(systemd_socket_activate_stream_socket_is_refused),
	  TEST_CASE(passed_socket_is_served_and_not_unlinked),
	  TEST_CASE(passed_datagram_socket_is_refused), TEST_CASE(two_passed_sockets_are_refused),
	  TEST_CASE(socket_meant_for_another_process_is_left_alone))
