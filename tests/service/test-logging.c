/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * luod's log targets: the journal's native protocol (one datagram per message
 * with PRIORITY=, SYSLOG_IDENTIFIER= and MESSAGE=), stderr in the foreground,
 * and a daemon that keeps nothing of the terminal or pipe it was started from.
 * The rule that picks a target is checked on its own (log_pick_target()).
 */
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/log.h"
#include "harness.h"
#include "luod-test.h"

static const char *luod_path(char *buf, size_t size)
{
	test_build_path("src/daemon/luod", buf, size);
	ASSERT_OK(access(buf, X_OK));
	return buf;
}

/* A journal stand-in: a datagram socket at path. */
static int journal_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	ASSERT_OK(fd);
	ASSERT_TRUE(strlen(path) < sizeof(sa.sun_path));
	strcpy(sa.sun_path, path);
	ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	return fd;
}

/* Receives datagrams until one holds what; returns it in buf. */
static void journal_wait_for(int fd, const char *what, char *buf, size_t size)
{
	for (;;) {
		ssize_t n = recv(fd, buf, size - 1, 0);

		ASSERT_OK(n);
		buf[n] = 0;
		if (strstr(buf, what))
			return;
	}
}

static pid_t spawn(const char *const *argv, int out_fd, int err_fd)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		dup2(out_fd, STDOUT_FILENO);
		dup2(err_fd, STDERR_FILENO);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static int wait_exit(pid_t pid)
{
	int status;

	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static size_t read_all(int fd, char *buf, size_t size)
{
	size_t got = 0;
	ssize_t n;

	while (got < size - 1 && (n = read(fd, buf + got, size - 1 - got)) > 0)
		got += n;
	buf[got] = 0;
	return got;
}

TEST(journal_gets_priority_identifier_and_message)
{
	char luod[512], jpath[256], target[300], msg[2048], expect[400];
	struct test_luod d;
	int j, null;
	pid_t pid;

	snprintf(jpath, sizeof(jpath), "%s/journal.sock", test_tmpdir());
	snprintf(target, sizeof(target), "--log-target=journal:%s", jpath);
	j = journal_socket(jpath);
	test_luod_start(&d, (const char *const[]){ target, NULL });
	journal_wait_for(j, "MESSAGE=listening on", msg, sizeof(msg));
	ASSERT_TRUE(strncmp(msg, "PRIORITY=6\n", 11) == 0);
	ASSERT_TRUE(strstr(msg, "\nSYSLOG_IDENTIFIER=luod\n") != NULL);
	snprintf(expect, sizeof(expect), "MESSAGE=listening on %s", d.socket);
	ASSERT_TRUE(strstr(msg, expect) != NULL);
	ASSERT_EQ(msg[strlen(msg) - 1], '\n');

	/* An error has the error priority: a second luod on the same socket. */
	null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	ASSERT_OK(null);
	pid = spawn((const char *const[]){ luod_path(luod, sizeof(luod)), "--foreground",
					   "--socket", d.socket, target, NULL },
		    null, null);
	close(null);
	ASSERT_EQ(wait_exit(pid), 3);
	journal_wait_for(j, "MESSAGE=another luod already serves", msg, sizeof(msg));
	ASSERT_TRUE(strncmp(msg, "PRIORITY=3\n", 11) == 0);

	test_luod_stop(&d);
	journal_wait_for(j, "MESSAGE=received signal 15", msg, sizeof(msg));
	close(j);
}

TEST(foreground_logs_to_stderr)
{
	char luod[512], sock[256], text[4096], expect[400];
	int out[2];
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/fg.sock", test_tmpdir());
	ASSERT_OK(pipe2(out, O_CLOEXEC));
	/* Neither $JOURNAL_STREAM nor $INVOCATION_ID: a service manager's variables
	 * in the environment of the test run must not change the target. */
	unsetenv("JOURNAL_STREAM");
	unsetenv("INVOCATION_ID");
	pid = spawn((const char *const[]){ luod_path(luod, sizeof(luod)), "--foreground",
					   "--socket", sock, NULL },
		    out[1], out[1]);
	close(out[1]);
	/* The path on stdout first, then the log line on stderr (the same pipe). */
	snprintf(expect, sizeof(expect), "luod[%d]: info: listening on %s", (int)pid, sock);
	text[0] = 0;
	for (size_t got = 0; !strstr(text, expect);) {
		ssize_t n = read(out[0], text + got, sizeof(text) - 1 - got);

		ASSERT_TRUE(n > 0);
		got += n;
		text[got] = 0;
	}
	ASSERT_OK(kill(pid, SIGTERM));
	read_all(out[0], text + strlen(text), sizeof(text) - strlen(text));
	close(out[0]);
	ASSERT_EQ(wait_exit(pid), 0);
	snprintf(expect, sizeof(expect), "luod[%d]: info: received signal 15", (int)pid);
	ASSERT_TRUE(strstr(text, expect) != NULL);
}

/* Whether any fd of pid is the file st names (same device and inode). */
static bool holds_file(pid_t pid, const struct stat *st)
{
	char path[128], dir[64];
	bool found = false;
	struct stat fst;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	for (int fd = 0; fd < 1024; fd++) {
		snprintf(path, sizeof(path), "%s/%d", dir, fd);
		if (stat(path, &fst) == 0 && fst.st_dev == st->st_dev && fst.st_ino == st->st_ino)
			found = true;
	}
	return found;
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

static void stop_daemon(pid_t pid, const char *sock)
{
	struct test_luod d = { .pid = pid };
	int conn;

	/* Not our child: wait for the socket to go away instead of reaping. */
	snprintf(d.socket, sizeof(d.socket), "%s", sock);
	ASSERT_OK(kill(pid, SIGTERM));
	while ((conn = test_luod_connect(&d)) >= 0) {
		close(conn);
		usleep(2000);
	}
}

TEST(daemon_keeps_nothing_of_the_pipe_it_was_started_from)
{
	char luod[512], sock[256], pidfile[256], out_text[512], err_text[512];
	int out[2], err[2];
	struct stat out_st, err_st;
	pid_t pid, daemon;

	snprintf(sock, sizeof(sock), "%s/d.sock", test_tmpdir());
	snprintf(pidfile, sizeof(pidfile), "%s/d.pid", test_tmpdir());
	ASSERT_OK(pipe2(out, O_CLOEXEC));
	ASSERT_OK(pipe2(err, O_CLOEXEC));
	ASSERT_OK(fstat(out[0], &out_st));
	ASSERT_OK(fstat(err[0], &err_st));
	pid = spawn((const char *const[]){ luod_path(luod, sizeof(luod)), "--socket", sock,
					   "--pid-file", pidfile, "--verbose", NULL },
		    out[1], err[1]);
	close(out[1]);
	close(err[1]);
	ASSERT_EQ(wait_exit(pid), 0);
	/* End of file on both once the parent is gone: the daemon holds neither. */
	read_all(out[0], out_text, sizeof(out_text));
	read_all(err[0], err_text, sizeof(err_text));
	close(out[0]);
	close(err[0]);
	daemon = read_pid_file(pidfile);
	ASSERT_TRUE(daemon > 0 && daemon != pid);
	ASSERT_FALSE(holds_file(daemon, &out_st));
	ASSERT_FALSE(holds_file(daemon, &err_st));
	/* The parent printed the path; nothing came on stderr. */
	ASSERT_TRUE(strncmp(out_text, sock, strlen(sock)) == 0);
	ASSERT_STREQ(err_text, "");
	stop_daemon(daemon, sock);
}

TEST(daemon_keeps_nothing_of_its_terminal)
{
	char luod[512], sock[256], pidfile[256], text[1024];
	struct stat tty_st;
	int master, slave, flags;
	size_t got = 0;
	pid_t pid, daemon;

	snprintf(sock, sizeof(sock), "%s/t.sock", test_tmpdir());
	snprintf(pidfile, sizeof(pidfile), "%s/t.pid", test_tmpdir());
	if (openpty(&master, &slave, NULL, NULL, NULL) < 0)
		test_skip("no pseudo-terminal: %m");
	fcntl(master, F_SETFD, FD_CLOEXEC);
	fcntl(slave, F_SETFD, FD_CLOEXEC);
	ASSERT_OK(fstat(slave, &tty_st));
	pid = spawn((const char *const[]){ luod_path(luod, sizeof(luod)), "--socket", sock,
					   "--pid-file", pidfile, "--verbose", NULL },
		    slave, slave);
	ASSERT_EQ(wait_exit(pid), 0);
	daemon = read_pid_file(pidfile);
	ASSERT_FALSE(holds_file(daemon, &tty_st));
	/* With the slave closed by everyone, the terminal holds what the parent
	 * wrote: the path alone. */
	close(slave);
	flags = fcntl(master, F_GETFL);
	ASSERT_OK(fcntl(master, F_SETFL, flags | O_NONBLOCK));
	for (;;) {
		ssize_t n = read(master, text + got, sizeof(text) - 1 - got);

		if (n <= 0)
			break;
		got += n;
	}
	text[got] = 0;
	close(master);
	test_diag("terminal: %s", text);
	ASSERT_TRUE(strncmp(text, sock, strlen(sock)) == 0);
	ASSERT_TRUE(strstr(text, "luod[") == NULL);
	stop_daemon(daemon, sock);
}

TEST(daemon_start_failure_is_told_by_the_parent)
{
	char luod[512], text[1024];
	struct test_luod d;
	int err[2], null;
	pid_t pid;

	test_luod_start(&d, NULL);
	ASSERT_OK(pipe2(err, O_CLOEXEC));
	null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	ASSERT_OK(null);
	pid = spawn(
		(const char *const[]){ luod_path(luod, sizeof(luod)), "--socket", d.socket, NULL },
		null, err[1]);
	close(null);
	close(err[1]);
	ASSERT_EQ(wait_exit(pid), 3);
	read_all(err[0], text, sizeof(text));
	close(err[0]);
	ASSERT_TRUE(strstr(text, "luod: another luod already serves") != NULL);
	test_luod_stop(&d);
}

TEST(bad_log_target_exits_2)
{
	char luod[512];
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	pid_t pid;

	ASSERT_OK(null);
	pid = spawn(
		(const char *const[]){ luod_path(luod, sizeof(luod)), "--log-target=kmsg", NULL },
		null, null);
	ASSERT_EQ(wait_exit(pid), 2);
	pid = spawn((const char *const[]){ luod_path(luod, sizeof(luod)),
					   "--log-target=journal:relative", NULL },
		    null, null);
	ASSERT_EQ(wait_exit(pid), 2);
	close(null);
}

TEST(auto_target_rule)
{
	struct stat st = { .st_dev = 0x803, .st_ino = 4242 };
	char stream[64];

	snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	/* stderr is the journal stream systemd named. */
	ASSERT_EQ(log_pick_target(stream, &st, false, true, false), LOG_TARGET_JOURNAL);
	/* ... but the journal is not there. */
	ASSERT_EQ(log_pick_target(stream, &st, false, false, false), LOG_TARGET_STDERR);
	/* $JOURNAL_STREAM inherited by a program whose stderr is something else. */
	ASSERT_EQ(log_pick_target("2051:1", &st, false, true, false), LOG_TARGET_STDERR);
	ASSERT_EQ(log_pick_target("2051:4242junk", &st, false, true, false), LOG_TARGET_STDERR);
	ASSERT_EQ(log_pick_target(stream, NULL, false, true, false), LOG_TARGET_STDERR);
	/* A systemd service with stderr elsewhere. */
	ASSERT_EQ(log_pick_target(NULL, &st, true, true, false), LOG_TARGET_JOURNAL);
	ASSERT_EQ(log_pick_target(NULL, &st, true, false, true), LOG_TARGET_SYSLOG);
	/* A daemon started by hand, and the foreground. */
	ASSERT_EQ(log_pick_target(NULL, &st, false, true, true), LOG_TARGET_SYSLOG);
	ASSERT_EQ(log_pick_target(NULL, &st, false, true, false), LOG_TARGET_STDERR);
}

TEST_MAIN(TEST_CASE(journal_gets_priority_identifier_and_message),
	  TEST_CASE(foreground_logs_to_stderr),
	  TEST_CASE(daemon_keeps_nothing_of_the_pipe_it_was_started_from),
	  TEST_CASE(daemon_keeps_nothing_of_its_terminal),
	  TEST_CASE(daemon_start_failure_is_told_by_the_parent), TEST_CASE(bad_log_target_exits_2),
	  TEST_CASE(auto_target_rule))
