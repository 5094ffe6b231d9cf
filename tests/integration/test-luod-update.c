/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's live update and reboot, over the raw protocol
 *
 * UPDATE re-execs luod keeping every fd: the same pid, the same fd table,
 * client connections and session fds that keep working, requests sent during
 * the blackout answered after it.  Updates to a binary that cannot run or
 * that refuses the state change nothing (the refusal inside the blackout
 * rolls back through the previous binary).  REBOOT is the kernel's kexec:
 * held sessions come back as incoming, everything else is dropped, old fds
 * are stale and closing them changes nothing.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/socket-util.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-client.h"

enum { SESSIONS = 20, FILES = 5 };

struct world {
	struct test_luod d;
	int conn, other;
	int s[SESSIONS];
	int fds_before;
};

static void text_for(char *buf, size_t size, int i, int j)
{
	snprintf(buf, size, "session %d file %d", i, j);
}

static void build_world(struct world *w)
{
	test_luod_start(&w->d, NULL);
	w->conn = test_luod_connect(&w->d);
	w->other = test_luod_connect(&w->d);
	ASSERT_OK(w->conn);
	ASSERT_OK(w->other);
	ASSERT_OK(cl_device_open(w->other));
	for (int i = 0; i < SESSIONS; i++) {
		char name[32];
		snprintf(name, sizeof(name), "world-%d", i);
		ASSERT_OK(cl_create(w->conn, name, 0, &w->s[i]));
		for (int j = 0; j < FILES; j++) {
			char text[64];
			text_for(text, sizeof(text), i, j);
			int m = cl_memfd(text);
			ASSERT_OK(cl_preserve(w->s[i], j, m));
			close(m);
		}
	}
	w->fds_before = stable_fd_count(&w->d);
}

/* Everything as before: sessions, their files (through a handover), connections. */
static void check_world(struct world *w)
{
	struct luo_wire_status st;

	ASSERT_EQ(stable_fd_count(&w->d), w->fds_before);
	ASSERT_OK(cl_status(w->conn, &st));
	ASSERT_EQ(st.pid, w->d.pid);
	ASSERT_EQ(st.n_outgoing, SESSIONS);
	ASSERT_EQ(st.n_files, SESSIONS * FILES);
	/* The device slot stayed with its holder. */
	ASSERT_ERR(cl_device_open(w->conn), -EBUSY);
	for (int i = 0; i < SESSIONS; i++) {
		char name[64], expect[32];
		snprintf(expect, sizeof(expect), "world-%d", i);
		ASSERT_OK(cl_get_name(w->s[i], name));
		ASSERT_STREQ(name, expect);
		ASSERT_EQ(cl_is_session(w->other, w->s[i]), 1);
	}
	/* The files themselves came through: hand one session over and read it back. */
	int in, fd;
	ASSERT_OK(cl_handover(w->s[3]));
	ASSERT_OK(cl_retrieve(w->conn, "world-3", &in));
	for (int j = 0; j < FILES; j++) {
		char text[64];
		text_for(text, sizeof(text), 3, j);
		ASSERT_OK(cl_retrieve_fd(in, j, &fd));
		ASSERT_TRUE(cl_memfd_has(fd, text));
		close(fd);
	}
	close(in);
}

static void free_world(struct world *w)
{
	for (int i = 0; i < SESSIONS; i++)
		close(w->s[i]);
	close(w->conn);
	close(w->other);
	test_luod_stop(&w->d);
}

TEST(update_keeps_every_fd_and_session)
{
	struct world w;
	struct luo_wire_update u;
	struct luo_wire_status st;

	build_world(&w);
	ASSERT_OK(cl_update(w.conn, NULL, &u));
	ASSERT_EQ(u.rolled_back, 0);
	ASSERT_TRUE(u.total_usec > 0);
	ASSERT_TRUE(u.state_size > 0);
	ASSERT_TRUE(u.total_usec >= u.exec_usec);
	ASSERT_OK(cl_status(w.conn, &st));
	ASSERT_EQ(st.n_live_updates, 1);
	check_world(&w);
	/* And again: the new image updates as well as the first one. */
	w.fds_before = stable_fd_count(&w.d);
	ASSERT_OK(cl_update(w.conn, NULL, &u));
	ASSERT_OK(cl_status(w.conn, &st));
	ASSERT_EQ(st.n_live_updates, 2);
	ASSERT_EQ(stable_fd_count(&w.d), w.fds_before);
	free_world(&w);
}

TEST(requests_during_update_are_served_after_it)
{
	struct world w;
	struct luo_wire_update u;
	int p[2], status;
	pid_t pid;

	build_world(&w);
	ASSERT_OK(pipe2(p, O_CLOEXEC));
	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		/* A client hammering both kinds of socket while luod re-execs. */
		struct luo_wire_status st;
		char name[64];
		int conn = test_luod_connect(&w.d);
		char c;

		close(p[1]);
		(void)!read(p[0], &c, 1);
		for (int i = 0; i < 400; i++) {
			if (cl_status(conn, &st) < 0 || cl_get_name(w.s[i % SESSIONS], name) < 0)
				_exit(1);
		}
		_exit(0);
	}
	close(p[0]);
	close(p[1]); /* go */
	usleep(2000);
	ASSERT_OK(cl_update(w.conn, NULL, &u));
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	check_world(&w);
	free_world(&w);
}

TEST(replies_a_client_has_not_read_survive_the_update)
{
	struct world w;
	struct luo_wire_update u;
	struct luo_wire_status st;
	struct {
		struct luo_wire_request h;
		struct luo_wire_create_session c;
	} req;
	int hog, n = 0;

	test_need_fds(4096);
	build_world(&w);
	hog = test_luod_connect(&w.d);
	ASSERT_OK(hog);
	/* Creates it does not read the replies of, each reply with a session fd, until
	 * its socket stays full: luod then has replies queued and has stopped reading. */
	for (int full = 0; n < 3000 && full < 50;) {
		memset(&req, 0, sizeof(req));
		req.h.op = LIVEUPDATE_IOCTL_CREATE_SESSION;
		req.h.tag = (uint32_t)n;
		req.c.size = sizeof(req.c);
		snprintf((char *)req.c.name, sizeof(req.c.name), "queued-%d", n);
		if (send(hog, &req, sizeof(req), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			ASSERT_EQ(errno, EAGAIN);
			full++;
			usleep(2000);
			continue;
		}
		n++;
		full = 0;
	}
	ASSERT_TRUE(n > 0 && n < 3000);
	ASSERT_OK(cl_update(w.conn, NULL, &u));
	/* Every request answered, in order, each with its session. */
	for (int i = 0; i < n; i++) {
		uint8_t buf[LUO_WIRE_REPLY_MAX];
		int fds[SOCKET_MAX_FDS];
		size_t n_fds = 0;
		struct luo_wire_reply h;
		struct pollfd p = { .fd = hog, .events = POLLIN };

		ASSERT_EQ(poll(&p, 1, 5000), 1);
		ssize_t k =
			socket_recv_message(hog, buf, sizeof(buf), fds, SOCKET_MAX_FDS, &n_fds, 0);
		ASSERT_TRUE(k >= (ssize_t)sizeof(h));
		memcpy(&h, buf, sizeof(h));
		ASSERT_EQ(h.tag, i);
		ASSERT_EQ(h.result, 0);
		ASSERT_EQ(n_fds, 1);
		ASSERT_EQ(cl_is_session(w.other, fds[0]), 1);
		close_many(fds, n_fds);
	}
	ASSERT_OK(cl_status(w.conn, &st));
	ASSERT_EQ(st.n_live_updates, 1);
	close(hog);
	free_world(&w);
}

static void write_script(const char *path, const char *body)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);

	ASSERT_OK(fd);
	ASSERT_EQ(write(fd, body, strlen(body)), (ssize_t)strlen(body));
	close(fd);
}

TEST(update_to_a_binary_that_cannot_run_changes_nothing)
{
	struct world w;
	struct luo_wire_update u;
	struct luo_wire_status st;
	char script[300];

	build_world(&w);
	ASSERT_ERR(cl_update(w.conn, "/nonexistent/luod", &u), -ENOEXEC);
	ASSERT_ERR(cl_update(w.conn, "/bin/false", &u), -ENOEXEC);
	/* Exiting 0 is not enough: a luod must confirm the state. */
	ASSERT_ERR(cl_update(w.conn, "/bin/true", &u), -ENOEXEC);
	snprintf(script, sizeof(script), "%s/not-executable", test_tmpdir());
	write_script(script, "");
	ASSERT_OK(chmod(script, 0644));
	ASSERT_ERR(cl_update(w.conn, script, &u), -ENOEXEC);
	ASSERT_OK(cl_status(w.conn, &st));
	ASSERT_EQ(st.n_live_updates, 0);
	check_world(&w);
	free_world(&w);
}

/* Scripts in the case's directory stand in for other binaries; some machines mount it noexec. */
static void need_exec_in_tmpdir(void)
{
	char script[300];

	snprintf(script, sizeof(script), "%s/exec-probe", test_tmpdir());
	write_script(script, "#!/bin/sh\nexit 0\n");
	if (test_run_command((const char *const[]){ script, NULL }) != 0)
		test_skip("cannot run programs from %s", test_tmpdir());
}

/*
 * After a failed update luod holds no fd made for it (the state memfd, the
 * previous binary), and its own machinery (epoll, signalfd, the spare fd) is
 * close-on-exec.  What it hands to each next image (sockets, held files) is
 * inheritable from birth.
 */
static void assert_only_kept_fds_inheritable(pid_t pid)
{
	char path[64];
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo", (int)pid);
	dir = opendir(path);
	ASSERT_TRUE(dir != NULL);
	for (struct dirent *de; (de = readdir(dir));) {
		char info[384], link[384], target[256], line[256];
		unsigned long flags = 0;
		ssize_t k;
		FILE *f;

		if (de->d_name[0] == '.' || atoi(de->d_name) <= 2)
			continue;
		snprintf(link, sizeof(link), "/proc/%d/fd/%s", (int)pid, de->d_name);
		k = readlink(link, target, sizeof(target) - 1);
		if (k < 0)
			continue;
		target[k] = 0;
		if (strstr(target, "luod-state") || strstr(target, "/luod"))
			test_fail_at(__FILE__, __LINE__, "luod fd %s (%s) outlived the update",
				     de->d_name, target);
		if (strcmp(target, "anon_inode:[eventpoll]") != 0 &&
		    strcmp(target, "anon_inode:[signalfd]") != 0 &&
		    strcmp(target, "/dev/null") != 0)
			continue;
		snprintf(info, sizeof(info), "%s/%s", path, de->d_name);
		f = fopen(info, "re");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "flags: %lo", &flags) == 1)
				break;
		fclose(f);
		if (!(flags & O_CLOEXEC))
			test_fail_at(__FILE__, __LINE__, "luod fd %s (%s) is not close-on-exec",
				     de->d_name, target);
	}
	closedir(dir);
}

TEST(update_whose_execve_fails_goes_on_serving)
{
	struct world w;
	struct luo_wire_update u;
	struct luo_wire_status st;
	char script[300], body[1200], luod[512];

	need_exec_in_tmpdir();
	build_world(&w);
	/* Passes the check, then is gone when luod execs it. */
	test_build_path("src/daemon/luod", luod, sizeof(luod));
	snprintf(script, sizeof(script), "%s/vanishing-luod", test_tmpdir());
	snprintf(body, sizeof(body), "#!/bin/sh\nrm -f \"$0\"\nexec '%s' \"$@\"\n", luod);
	write_script(script, body);
	ASSERT_ERR(cl_update(w.conn, script, &u), -ENOENT);
	assert_only_kept_fds_inheritable(w.d.pid);
	ASSERT_OK(cl_status(w.conn, &st));
	ASSERT_EQ(st.n_live_updates, 0);
	check_world(&w);
	free_world(&w);
}

TEST(update_to_a_binary_that_refuses_the_state_rolls_back)
{
	struct world w;
	struct luo_wire_update u;
	struct luo_wire_status st;
	char script[300], body[1200], luod[512];

	need_exec_in_tmpdir();
	build_world(&w);
	test_build_path("src/daemon/luod", luod, sizeof(luod));
	snprintf(script, sizeof(script), "%s/refusing-luod", test_tmpdir());
	snprintf(body, sizeof(body),
		 "#!/bin/sh\nLUOD_FAULT=update-recover-refuse:1000:refuse exec '%s' \"$@\"\n",
		 luod);
	write_script(script, body);
	memset(&u, 0, sizeof(u));
	ASSERT_ERR(cl_update(w.conn, script, &u), -EPROTONOSUPPORT);
	ASSERT_EQ(u.rolled_back, 1);
	ASSERT_OK(cl_status(w.conn, &st));
	ASSERT_EQ(st.n_live_updates, 0);
	check_world(&w);
	free_world(&w);
}

/*
 * Another binary is asked whether it accepts the state before anything is
 * frozen, and luod serves everyone while it thinks: this checker only answers
 * once the test, as a client, has been served during the check.  A second
 * update or a reboot meanwhile gets EBUSY.
 */
TEST(luod_serves_while_another_binary_checks_the_state)
{
	struct world w;
	struct luo_wire_update u;
	struct luo_wire_reboot rb;
	struct luo_wire_status st;
	char script[300], gate[300], started[300], body[2000], luod[512];
	int status, c;
	pid_t pid;

	need_exec_in_tmpdir();
	build_world(&w);
	test_build_path("src/daemon/luod", luod, sizeof(luod));
	snprintf(script, sizeof(script), "%s/slow-luod", test_tmpdir());
	snprintf(gate, sizeof(gate), "%s/gate", test_tmpdir());
	snprintf(started, sizeof(started), "%s/started", test_tmpdir());
	snprintf(body, sizeof(body),
		 "#!/bin/sh\n"
		 "if [ \"$1\" = --check-journal ]; then\n"
		 "  : > '%s'\n"
		 "  while [ ! -e '%s' ]; do sleep 0.01; done\n"
		 "fi\n"
		 "exec '%s' \"$@\"\n",
		 started, gate, luod);
	write_script(script, body);

	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		int conn = test_luod_connect(&w.d);
		_exit(conn >= 0 && cl_update(conn, script, &u) == 0 ? 0 : 1);
	}
	for (int i = 0; i < 2000 && access(started, F_OK) < 0; i++)
		usleep(5000);
	ASSERT_OK(access(started, F_OK));
	/* Served while the checker waits for us; the update has not happened. */
	c = ASSERT_OK(test_luod_connect(&w.d));
	ASSERT_OK(cl_status(c, &st));
	ASSERT_EQ(st.n_live_updates, 0);
	ASSERT_ERR(cl_update(c, script, &u), -EBUSY);
	ASSERT_ERR(cl_reboot(c, &rb), -EBUSY);
	write_script(gate, "");
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ASSERT_OK(cl_status(c, &st));
	ASSERT_EQ(st.n_live_updates, 1);
	ASSERT_EQ(st.pid, w.d.pid);
	close(c);
	free_world(&w);
}

TEST(options_survive_updates_and_rollbacks)
{
	struct test_luod d;
	struct luo_wire_update u;
	char script[300], body[1200], luod[512];
	int conn, s[3];

	need_exec_in_tmpdir();
	test_luod_start(&d, (const char *const[]){ "-fv", "--max-sessions", "2", NULL });
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_create(conn, "one", 0, &s[0]));
	ASSERT_OK(cl_update(conn, NULL, &u));
	ASSERT_OK(cl_create(conn, "two", 0, &s[1]));
	ASSERT_ERR(cl_create(conn, "three", 0, &s[2]), -ENOSPC);
	/* Through a rollback as well. */
	test_build_path("src/daemon/luod", luod, sizeof(luod));
	snprintf(script, sizeof(script), "%s/refusing-luod", test_tmpdir());
	snprintf(body, sizeof(body),
		 "#!/bin/sh\nLUOD_FAULT=update-recover-refuse:1000:refuse exec '%s' \"$@\"\n",
		 luod);
	write_script(script, body);
	ASSERT_ERR(cl_update(conn, script, &u), -EPROTONOSUPPORT);
	ASSERT_ERR(cl_create(conn, "three", 0, &s[2]), -ENOSPC);
	ASSERT_OK(cl_update(conn, NULL, &u));
	ASSERT_ERR(cl_create(conn, "three", 0, &s[2]), -ENOSPC);
	close(s[0]);
	close(s[1]);
	close(conn);
	test_luod_stop(&d);
}

TEST(update_request_rules)
{
	struct test_luod d;
	struct {
		struct luo_wire_request h;
		struct luo_wire_update u;
	} req = { .h = { .op = LUO_IOCTL_UPDATE, .tag = 5 }, .u = { .size = sizeof(req.u) } };
	int32_t result;
	int conn;

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	req.u.flags = 1;
	ASSERT_OK(raw_send(conn, &req, sizeof(req), NULL, 0));
	ASSERT_OK(raw_recv(conn, &result, NULL, 0));
	ASSERT_EQ(result, -EINVAL);
	req.u.flags = 0;
	memset(req.u.exec_path, 'x', sizeof(req.u.exec_path)); /* no NUL */
	ASSERT_OK(raw_send(conn, &req, sizeof(req), NULL, 0));
	ASSERT_OK(raw_recv(conn, &result, NULL, 0));
	ASSERT_EQ(result, -EINVAL);
	close(conn);
	test_luod_stop(&d);
}

TEST(check_journal_refuses_garbage)
{
	char luod[512], fdstr[16], out[128];
	int fd = memfd_create("garbage", MFD_CLOEXEC);

	ASSERT_OK(fd);
	ASSERT_EQ(write(fd, "not a state", 11), 11);
	/* The child must inherit it. */
	ASSERT_OK(fcntl(fd, F_SETFD, 0));
	snprintf(fdstr, sizeof(fdstr), "%d", fd);
	test_build_path("src/daemon/luod", luod, sizeof(luod));
	int code = test_run_command_output(
		(const char *const[]){ luod, "--check-journal", fdstr, NULL }, out, sizeof(out));
	/* The checker's exit code is the errno it refused the journal with. */
	ASSERT_EQ(code, EBADMSG);
	ASSERT_TRUE(strstr(out, "luod-state-ok") == NULL);
	close(fd);
}

TEST(reboot_is_the_kernels_kexec)
{
	struct test_luod d;
	struct luo_wire_reboot rb;
	struct luo_wire_status st;
	char name[64];
	int conn, held, closed, waiting, old, in, fd, m = cl_memfd("kept");

	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	ASSERT_OK(cl_create(conn, "held", 0, &held));
	ASSERT_OK(cl_preserve(held, 7, m));
	ASSERT_OK(cl_create(conn, "closed", 0, &closed));
	close(closed);
	ASSERT_OK(cl_create(conn, "waiting", 0, &waiting));
	ASSERT_OK(cl_handover(waiting)); /* handed over, not retrieved: carried */
	close(waiting);
	ASSERT_OK(cl_create(conn, "old", 0, &old));
	ASSERT_OK(cl_handover(old));
	close(old);
	ASSERT_OK(cl_retrieve(conn, "old", &old)); /* retrieved incoming: dropped too */

	ASSERT_OK(cl_reboot(conn, &rb));
	ASSERT_EQ(rb.update_number, 1);
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.pid, d.pid);
	ASSERT_EQ(st.update_number, 1);
	ASSERT_EQ(st.n_outgoing, 0);
	ASSERT_EQ(st.n_incoming, 2);

	/* Fds of the previous generation are stale for every command... */
	ASSERT_ERR(cl_get_name(held, name), -ESTALE);
	ASSERT_ERR(cl_preserve(held, 8, m), -ESTALE);
	ASSERT_ERR(cl_finish(old), -ESTALE);
	/* ...and closing them changes nothing. */
	close(held);
	close(old);
	usleep(50000);
	ASSERT_ERR(cl_retrieve(conn, "closed", &in), -ENOENT);
	ASSERT_ERR(cl_retrieve(conn, "old", &in), -ENOENT);
	ASSERT_OK(cl_retrieve(conn, "held", &in));
	ASSERT_OK(cl_retrieve_fd(in, 7, &fd));
	ASSERT_TRUE(cl_memfd_has(fd, "kept"));
	ASSERT_OK(cl_finish(in));
	close(fd);
	close(in);
	/* Both arrived with that reboot: the next one drops "waiting", never retrieved. */
	ASSERT_OK(cl_reboot(conn, &rb));
	ASSERT_EQ(rb.update_number, 2);
	ASSERT_ERR(cl_retrieve(conn, "waiting", &in), -ENOENT);
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.n_incoming, 0);
	close(m);
	close(conn);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(update_keeps_every_fd_and_session),
	  TEST_CASE(requests_during_update_are_served_after_it),
	  TEST_CASE(replies_a_client_has_not_read_survive_the_update),
	  TEST_CASE(update_to_a_binary_that_cannot_run_changes_nothing),
	  TEST_CASE(update_whose_execve_fails_goes_on_serving),
	  TEST_CASE(update_to_a_binary_that_refuses_the_state_rolls_back),
	  TEST_CASE(luod_serves_while_another_binary_checks_the_state),
	  TEST_CASE(options_survive_updates_and_rollbacks), TEST_CASE(update_request_rules),
	  TEST_CASE(check_journal_refuses_garbage), TEST_CASE(reboot_is_the_kernels_kexec))
