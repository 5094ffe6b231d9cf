/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's process lifecycle and the session close rule
 *
 * Real client processes that exit or are killed midway: the last close of
 * a session fd aborts it, or hands it over when it was created
 * handover-on-close; a session fd shared over fork() lives until its last
 * holder.  And luod itself: refusing a second luod on a live socket (exit
 * code 3), replacing a stale socket file, daemonizing with readiness on
 * stdout, the pid file and $NOTIFY_SOCKET, the socket path resolution,
 * SIGTERM, the raised fd limit and the log format.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "luo/luo.h"
#include "luod-client.h"

static void wait_sessions(int conn, uint64_t outgoing, uint64_t incoming)
{
	struct luo_wire_status st;

	for (int i = 0; i < 300; i++) {
		ASSERT_OK(cl_status(conn, &st));
		if (st.n_outgoing == outgoing && st.n_incoming == incoming)
			return;
		usleep(10000);
	}
	test_fail_at(__FILE__, __LINE__,
		     "sessions: %llu outgoing, %llu incoming; expected %llu, %llu",
		     (unsigned long long)st.n_outgoing, (unsigned long long)st.n_incoming,
		     (unsigned long long)outgoing, (unsigned long long)incoming);
}

/* Forks a client that creates session name with n memfds ("file-<i>") and then
 * waits to be killed; returns its pid once the session is complete. */
static pid_t spawn_owner(const struct test_luod *d, const char *name, uint64_t flags, int n)
{
	int p[2];
	char c;
	pid_t pid;

	ASSERT_OK(pipe2(p, O_CLOEXEC));
	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		int conn = test_luod_connect(d), s;

		if (conn < 0 || cl_create(conn, name, flags, &s) < 0)
			_exit(1);
		for (int i = 0; i < n; i++) {
			char text[32];
			snprintf(text, sizeof(text), "file-%d", i);
			int m = cl_memfd(text);
			if (m < 0 || cl_preserve(s, i, m) < 0)
				_exit(1);
			close(m);
		}
		(void)!write(p[1], "r", 1);
		for (;;)
			pause();
	}
	close(p[1]);
	ASSERT_EQ(read(p[0], &c, 1), 1);
	close(p[0]);
	return pid;
}

static void kill_and_reap(pid_t pid)
{
	int status;

	ASSERT_OK(kill(pid, SIGKILL));
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
}

TEST(last_close_aborts_the_session)
{
	struct test_luod d;
	struct luo_wire_status st;
	int conn, s, m = cl_memfd("x");

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_create(conn, "abort", 0, &s));
	ASSERT_OK(cl_preserve(s, 1, m));
	close(s);
	wait_sessions(conn, 0, 0);
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.n_files, 0);
	/* The name can be used again. */
	ASSERT_OK(cl_create(conn, "abort", 0, &s));
	ASSERT_OK(cl_preserve(s, 1, m)); /* the file is free again too */
	close(s);
	close(m);
	close(conn);
	test_luod_stop(&d);
}

/*
 * The kernel runs close() synchronously: once close() returns, the session is
 * gone and its name, its files and the device are free.  luod sees the close
 * as an event; a request that arrives right after it must still find
 * everything freed.  No waiting between the close and the next request.
 */
TEST(close_then_create_same_name_never_eexist)
{
	struct test_luod d;
	int conn, s, m = cl_memfd("x");

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	for (int i = 0; i < 500; i++) {
		ASSERT_OK(cl_create(conn, "again", 0, &s));
		ASSERT_OK(cl_preserve(s, 1, m)); /* the file is free again at once too */
		close(s);
	}
	close(m);
	close(conn);
	test_luod_stop(&d);
}

TEST(close_retrieved_then_retrieve_gives_enoent_at_once)
{
	struct test_luod d;
	int conn, s;

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	for (int i = 0; i < 100; i++) {
		ASSERT_OK(cl_create(conn, "moved", 0, &s));
		ASSERT_OK(cl_handover(s));
		close(s);
		ASSERT_OK(cl_retrieve(conn, "moved", &s));
		close(s);
		/* Closed after retrieve: finished implicitly, its name is gone. */
		ASSERT_EQ(cl_retrieve(conn, "moved", &s), -ENOENT);
	}
	close(conn);
	test_luod_stop(&d);
}

TEST(device_close_then_open_never_ebusy)
{
	struct test_luod d;

	test_luod_start(&d, NULL);
	for (int i = 0; i < 500; i++) {
		int conn = test_luod_connect(&d);

		ASSERT_TRUE(conn >= 0);
		ASSERT_OK(cl_device_open(conn));
		close(conn);
	}
	test_luod_stop(&d);
}

TEST(owner_killed_session_is_gone)
{
	struct test_luod d;
	int conn, s;
	pid_t pid;

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	pid = spawn_owner(&d, "killed", 0, 3);
	wait_sessions(conn, 1, 0);
	kill_and_reap(pid);
	wait_sessions(conn, 0, 0);
	ASSERT_ERR(cl_retrieve(conn, "killed", &s), -ENOENT);
	close(conn);
	test_luod_stop(&d);
}

TEST(handover_on_close_owner_killed_waits_for_successor)
{
	struct test_luod d;
	int conn, s;
	pid_t pid;

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	pid = spawn_owner(&d, "survivor", LUO_SESSION_HANDOVER_ON_CLOSE, 4);
	kill_and_reap(pid);
	/* No waiting: the owner's fds closed when it died, so the session has been
	 * handed over by the time anyone asks for it. */
	ASSERT_OK(cl_retrieve(conn, "survivor", &s));
	for (int i = 0; i < 4; i++) {
		char text[32];
		int fd;

		snprintf(text, sizeof(text), "file-%d", i);
		ASSERT_OK(cl_retrieve_fd(s, i, &fd));
		ASSERT_TRUE(cl_memfd_has(fd, text));
		close(fd);
	}
	ASSERT_OK(cl_finish(s));
	close(s);
	wait_sessions(conn, 0, 0);
	close(conn);
	test_luod_stop(&d);
}

/*
 * A successor that retrieved the session, has not closed it yet and built the
 * next one with handover-on-close dies: both close at once, and the new
 * session must still be handed over (the retrieved one is finished first).
 */
TEST(handover_on_close_survives_dying_with_the_retrieved_session_open)
{
	struct test_luod d;
	int conn, s, fd, status;
	pid_t pid;

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_create(conn, "gen", 0, &s));
	ASSERT_OK(cl_handover(s));
	close(s);
	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		int c = test_luod_connect(&d), old, next, m = cl_memfd("generation 2");

		if (c < 0 || cl_retrieve(c, "gen", &old) < 0 ||
		    cl_create(c, "gen", LUO_SESSION_HANDOVER_ON_CLOSE, &next) < 0 ||
		    cl_preserve(next, 2, m) < 0)
			_exit(1);
		raise(SIGKILL);
		_exit(1);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	ASSERT_OK(cl_retrieve(conn, "gen", &s));
	ASSERT_OK(cl_retrieve_fd(s, 2, &fd));
	ASSERT_TRUE(cl_memfd_has(fd, "generation 2"));
	close(fd);
	close(s);
	close(conn);
	test_luod_stop(&d);
}

TEST(session_shared_over_fork_lives_until_last_holder)
{
	struct test_luod d;
	int conn, s, p[2], status;
	char c;
	pid_t pid;

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_create(conn, "shared", 0, &s));
	ASSERT_OK(pipe2(p, O_CLOEXEC));
	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		char name[64];

		close(p[1]);
		/* Wait until the parent closed its copy, then use ours. */
		if (read(p[0], &c, 1) != 1 || cl_get_name(s, name) < 0 || strcmp(name, "shared"))
			_exit(1);
		_exit(0);
	}
	close(p[0]);
	close(s);
	usleep(50000);
	wait_sessions(conn, 1, 0);
	ASSERT_EQ(write(p[1], "g", 1), 1);
	close(p[1]);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	wait_sessions(conn, 0, 0);
	close(conn);
	test_luod_stop(&d);
}

static int run_luod(const char *const *args, char *out, size_t size)
{
	char luod[512];
	const char *argv[16];
	size_t n = 0;

	test_build_path("src/daemon/luod", luod, sizeof(luod));
	argv[n++] = luod;
	for (size_t i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return out ? test_run_command_output(argv, out, size) : test_run_command(argv);
}

TEST(second_luod_on_a_live_socket_exits_3)
{
	struct test_luod d;
	struct stat before, after;

	test_luod_start(&d, NULL);
	ASSERT_OK(stat(d.socket, &before));
	ASSERT_EQ(run_luod((const char *const[]){ "--foreground", "--socket", d.socket, NULL },
			   NULL, 0),
		  3);
	/* The live socket was left alone and still serves. */
	ASSERT_OK(stat(d.socket, &after));
	ASSERT_EQ(before.st_ino, after.st_ino);
	assert_luod_serves(&d);
	test_luod_stop(&d);
}

TEST(stale_socket_file_is_replaced)
{
	struct test_luod d;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[256];
	int fd;

	/* A socket file nobody listens on, as a crashed luod leaves behind. */
	snprintf(path, sizeof(path), "%s/luod.sock", test_tmpdir());
	ASSERT_TRUE(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ASSERT_OK(fd);
	ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	close(fd);
	test_luod_start(&d, NULL);
	assert_luod_serves(&d);
	test_luod_stop(&d);
}

TEST(sighup_is_ignored)
{
	struct test_luod d;

	test_luod_start(&d, NULL);
	ASSERT_OK(kill(d.pid, SIGHUP));
	usleep(50000);
	assert_luod_serves(&d);
	test_luod_stop(&d);
}

TEST(sigterm_exits_0_and_unlinks_the_socket)
{
	struct test_luod d;
	struct stat st;

	test_luod_start(&d, NULL);
	ASSERT_OK(stat(d.socket, &st));
	ASSERT_EQ(st.st_mode & 0777, 0666); /* isolation is by uid, not by mode */
	test_luod_stop(&d);		    /* fails unless the exit code is 0 */
	ASSERT_ERRNO(stat(d.socket, &st), ENOENT);
}

static pid_t read_pid_file(const char *path)
{
	char buf[32] = { 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ASSERT_OK(fd);
	ASSERT_TRUE(read(fd, buf, sizeof(buf) - 1) > 0);
	close(fd);
	return (pid_t)atoi(buf);
}

static void stop_pid(pid_t pid, const char *socket)
{
	struct stat st;

	ASSERT_OK(kill(pid, SIGTERM));
	for (int i = 0; i < 500 && stat(socket, &st) == 0; i++)
		usleep(10000);
	ASSERT_ERRNO(stat(socket, &st), ENOENT);
}

TEST(daemonizes_once_listening_with_path_and_pid_file)
{
	char sock[256], pidfile[256], out[512];
	struct test_luod d = { 0 };
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/sub/dir/luod.sock", test_tmpdir());
	snprintf(pidfile, sizeof(pidfile), "%s/luod.pid", test_tmpdir());
	ASSERT_EQ(run_luod((const char *const[]){ "--socket", sock, "--pid-file", pidfile, NULL },
			   out, sizeof(out)),
		  0);
	/* The parent exited only once the socket listened: it serves right away. */
	ASSERT_TRUE(strncmp(out, sock, strlen(sock)) == 0);
	pid = read_pid_file(pidfile);
	ASSERT_TRUE(pid > 0);
	snprintf(d.socket, sizeof(d.socket), "%s", sock);
	d.pid = pid;
	assert_luod_serves(&d);
	stop_pid(pid, sock);
}

TEST(relative_paths_survive_the_daemons_chdir)
{
	char luod[512], cmd[1400], sock[300], pidfile[300], out[512];
	struct test_luod d = { 0 };
	struct stat st;
	pid_t pid;

	test_build_path("src/daemon/luod", luod, sizeof(luod));
	snprintf(cmd, sizeof(cmd), "cd '%s' && exec '%s' --socket rel.sock --pid-file rel.pid",
		 test_tmpdir(), luod);
	ASSERT_EQ(test_run_command_output((const char *const[]){ "/bin/sh", "-c", cmd, NULL }, out,
					  sizeof(out)),
		  0);
	snprintf(sock, sizeof(sock), "%s/rel.sock", test_tmpdir());
	snprintf(pidfile, sizeof(pidfile), "%s/rel.pid", test_tmpdir());
	/* The path it reports is absolute. */
	ASSERT_TRUE(strncmp(out, sock, strlen(sock)) == 0);
	pid = read_pid_file(pidfile);
	snprintf(d.socket, sizeof(d.socket), "%s", sock);
	d.pid = pid;
	assert_luod_serves(&d);
	stop_pid(pid, sock);
	/* Both were removed although the daemon runs in /. */
	for (int i = 0; i < 100 && stat(pidfile, &st) == 0; i++)
		usleep(10000);
	ASSERT_ERRNO(stat(pidfile, &st), ENOENT);
}

TEST(socket_path_comes_from_env_then_xdg_runtime_dir)
{
	char dir[256], expect[300], pidfile[300], out[512];
	pid_t pid;

	snprintf(dir, sizeof(dir), "%s/xdg", test_tmpdir());
	ASSERT_OK(mkdir(dir, 0700));
	snprintf(pidfile, sizeof(pidfile), "%s/luod.pid", test_tmpdir());
	unsetenv("LUO_SOCKET");
	setenv("XDG_RUNTIME_DIR", dir, 1);
	snprintf(expect, sizeof(expect), "%s/luo/luod.sock", dir);
	ASSERT_EQ(run_luod((const char *const[]){ "--pid-file", pidfile, NULL }, out, sizeof(out)),
		  0);
	ASSERT_TRUE(strncmp(out, expect, strlen(expect)) == 0);
	pid = read_pid_file(pidfile);
	stop_pid(pid, expect);

	snprintf(expect, sizeof(expect), "%s/env.sock", test_tmpdir());
	setenv("LUO_SOCKET", expect, 1);
	ASSERT_EQ(run_luod((const char *const[]){ "--pid-file", pidfile, NULL }, out, sizeof(out)),
		  0);
	ASSERT_TRUE(strncmp(out, expect, strlen(expect)) == 0);
	pid = read_pid_file(pidfile);
	stop_pid(pid, expect);
}

TEST(notifies_the_service_manager)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct test_luod d;
	char buf[64] = { 0 };
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", test_tmpdir());
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ASSERT_OK(fd);
	ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	test_luod_start(&d, NULL);
	unsetenv("NOTIFY_SOCKET");
	/* luod accepts connections a moment before it notifies: wait for it. */
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ASSERT_EQ(poll(&p, 1, 5000), 1);
	ASSERT_TRUE(recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT) > 0);
	ASSERT_STREQ(buf, "READY=1");
	close(fd);
	test_luod_stop(&d);
}

TEST(raises_fd_limit_to_the_hard_limit)
{
	struct test_luod d;
	struct luo_wire_status st;
	struct rlimit rl;
	int conn;

	ASSERT_OK(getrlimit(RLIMIT_NOFILE, &rl));
	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.fd_limit, rl.rlim_max);
	close(conn);
	test_luod_stop(&d);
}

TEST(logs_one_line_per_message_with_pid_and_level)
{
	char luod[512], cmd[2048], log[300], pidfile[300], sock[300], out[256];
	char text[4096] = { 0 }, expect[64];
	pid_t pid;
	int fd;

	test_build_path("src/daemon/luod", luod, sizeof(luod));
	snprintf(log, sizeof(log), "%s/log", test_tmpdir());
	snprintf(sock, sizeof(sock), "%s/log.sock", test_tmpdir());
	snprintf(pidfile, sizeof(pidfile), "%s/luod.pid", test_tmpdir());
	snprintf(cmd, sizeof(cmd),
		 "exec '%s' --socket '%s' --pid-file '%s' --log-target=stderr 2>'%s'", luod, sock,
		 pidfile, log);
	ASSERT_EQ(test_run_command_output((const char *const[]){ "/bin/sh", "-c", cmd, NULL }, out,
					  sizeof(out)),
		  0);
	pid = read_pid_file(pidfile);
	stop_pid(pid, sock);
	fd = open(log, O_RDONLY | O_CLOEXEC);
	ASSERT_OK(fd);
	ASSERT_TRUE(read(fd, text, sizeof(text) - 1) > 0);
	close(fd);
	snprintf(expect, sizeof(expect), "luod[%d]: info: listening on ", (int)pid);
	ASSERT_TRUE(strstr(text, expect) != NULL);
	snprintf(expect, sizeof(expect), "luod[%d]: info: received signal", (int)pid);
	ASSERT_TRUE(strstr(text, expect) != NULL);
}

TEST(bad_options_exit_2)
{
	ASSERT_EQ(run_luod((const char *const[]){ "--no-such-option", NULL }, NULL, 0), 2);
	ASSERT_EQ(run_luod((const char *const[]){ "--max-sessions", "0", NULL }, NULL, 0), 2);
	ASSERT_EQ(run_luod((const char *const[]){ "--version", NULL }, NULL, 0), 0);
	ASSERT_EQ(run_luod((const char *const[]){ "--help", NULL }, NULL, 0), 0);
}

TEST_MAIN(TEST_CASE(last_close_aborts_the_session),
	  TEST_CASE(close_then_create_same_name_never_eexist),
	  TEST_CASE(close_retrieved_then_retrieve_gives_enoent_at_once),
	  TEST_CASE(device_close_then_open_never_ebusy), TEST_CASE(owner_killed_session_is_gone),
	  TEST_CASE(handover_on_close_owner_killed_waits_for_successor),
	  TEST_CASE(handover_on_close_survives_dying_with_the_retrieved_session_open),
	  TEST_CASE(session_shared_over_fork_lives_until_last_holder),
	  TEST_CASE(second_luod_on_a_live_socket_exits_3), TEST_CASE(stale_socket_file_is_replaced),
	  TEST_CASE(sighup_is_ignored), TEST_CASE(sigterm_exits_0_and_unlinks_the_socket),
	  TEST_CASE(daemonizes_once_listening_with_path_and_pid_file),
	  TEST_CASE(relative_paths_survive_the_daemons_chdir),
	  TEST_CASE(socket_path_comes_from_env_then_xdg_runtime_dir),
	  TEST_CASE(notifies_the_service_manager), TEST_CASE(raises_fd_limit_to_the_hard_limit),
	  TEST_CASE(logs_one_line_per_message_with_pid_and_level), TEST_CASE(bad_options_exit_2))
