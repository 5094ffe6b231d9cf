/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: `luoctl kexec` where no kexec can happen
 *
 * The real kexec is tested in the kernel harness (tests/kernel/kexec).  Here,
 * on the development machine: luoctl's argument errors; ENODEV from a luod
 * on a kernel without /dev/liveupdate; EPERM for a uid that is not root; and,
 * with a device that is no LUO device standing in for it (a test build's
 * $LUOD_LIVEUPDATE_DEVICE), the list of files the kernel cannot carry and a
 * failure after luod opened the device.  After every refusal and failure,
 * every session is as it was.
 */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli-test.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-test.h"

#define NOBODY 65534

static struct cli_out o;

TEST(kexec_argument_errors)
{
	char big[2100];

	/* Nothing is sent to luod: there is none. */
	setenv("LUO_SOCKET", "/nonexistent/luod.sock", 1);
	LUOCTL(&o, "kexec");
	ASSERT_EQ(o.status, 2);
	ASSERT_TRUE(strstr(o.err, "kexec needs --kernel FILE") != NULL);
	LUOCTL(&o, "kexec", "--kernel", "/bin/true", "extra");
	ASSERT_EQ(o.status, 2);
	LUOCTL(&o, "kexec", "--kernel", "/bin/true", "--append", "x", "--reuse-cmdline");
	ASSERT_EQ(o.status, 2);
	ASSERT_TRUE(strstr(o.err, "not both") != NULL);
	LUOCTL(&o, "status", "--kernel", "/bin/true");
	ASSERT_EQ(o.status, 2);
	ASSERT_TRUE(strstr(o.err, "options of kexec only") != NULL);
	LUOCTL(&o, "list", "--drop-unsupported");
	ASSERT_EQ(o.status, 2);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	LUOCTL(&o, "kexec", "--kernel", "/bin/true", "--append", big);
	ASSERT_EQ(o.status, 2);
	ASSERT_TRUE(strstr(o.err, "at most 2047 fit") != NULL);
	LUOCTL(&o, "kexec", "--kernel", "/nonexistent/bzImage");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, "cannot open the kernel /nonexistent/bzImage") != NULL);
	LUOCTL(&o, "kexec", "--kernel", "/bin/true", "--initrd", "/nonexistent/initrd");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, "cannot open the initrd") != NULL);
	LUOCTL(&o, "--json", "kexec", "--kernel", "/bin/true");
	ASSERT_EQ(o.status, 2);
	/* Files are checked before luod is: it is not running. */
	LUOCTL(&o, "kexec", "--kernel", "/bin/true");
	ASSERT_EQ(o.status, 3);
}

/* The fds luod holds (keeper and worker share one table). */
static int luod_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	ASSERT_TRUE(dir != NULL);
	while ((e = readdir(dir)))
		n += e->d_name[0] != '.';
	closedir(dir);
	return n;
}

/* luod's fd count once it is n (hang-ups of luoctl's connections are taken in
 * as events), or what it is after 2 s. */
static int luod_fds_settle(pid_t pid, int n)
{
	int k = -1;

	for (int i = 0; i < 200 && (k = luod_fds(pid)) != n; i++)
		usleep(10000);
	return k;
}

/* An open outgoing session with a memfd, a handed-over one, and one with a socket. */
static void make_sessions(int luo, int *ret_open, int *ret_sock)
{
	int s, m, sv[2];

	ASSERT_OK(luo_session_create(luo, "open", 0, ret_open));
	m = cli_memfd_with_pattern(4096, 1);
	ASSERT_OK(luo_session_preserve_fd(*ret_open, 1, m));
	close(m);
	ASSERT_OK(luo_session_create(luo, "waiting", 0, &s));
	m = cli_memfd_with_pattern(4096, 2);
	ASSERT_OK(luo_session_preserve_fd(s, 2, m));
	close(m);
	ASSERT_OK(luo_session_handover(s));
	close(s);
	ASSERT_OK(luo_session_create(luo, "with socket", 0, ret_sock));
	ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_OK(luo_session_preserve_fd(*ret_sock, 7, sv[0]));
	close(sv[0]);
	close(sv[1]);
}

/* Everything as make_sessions() left it, with n_files files; the open
 * session still takes a file (token). */
static void assert_unchanged(int open_fd, int n_files, uint64_t token)
{
	char expr[256];
	int m;

	LUOCTL(&o, "--json", "status");
	snprintf(expr, sizeof(expr),
		 ".update_number == 0 and .outgoing_sessions == 2 and "
		 ".incoming_sessions == 1 and .files == %d",
		 n_files);
	ASSERT_JQ(o.out, expr);
	LUOCTL(&o, "--json", "list");
	ASSERT_JQ(o.out, "[.sessions[] | [.name, .kind, .state]] == "
			 "[[\"open\", \"outgoing\", \"open\"], [\"with socket\", \"outgoing\", "
			 "\"open\"], [\"waiting\", \"incoming\", \"waiting\"]]");
	m = cli_memfd_with_pattern(100, 3);
	ASSERT_OK(luo_session_preserve_fd(open_fd, token, m));
	close(m);
}

TEST(kexec_without_dev_liveupdate_is_enodev)
{
	struct test_luod d;
	int luo, open_fd, sock_fd;
	char dev[512];

#ifndef LUO_TEST_FAULT_INJECTION
	if (access("/dev/liveupdate", F_OK) == 0)
		test_skip("this machine has /dev/liveupdate (a test build can hide it)");
#endif
	/* A test build's luod looks there instead of /dev/liveupdate. */
	snprintf(dev, sizeof(dev), "%s/no-liveupdate", test_tmpdir());
	setenv("LUOD_LIVEUPDATE_DEVICE", dev, 1);
	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	make_sessions(luo, &open_fd, &sock_fd);
	/* --reuse-cmdline reads this kernel's /proc/cmdline into the request. */
	LUOCTL(&o, "kexec", "--kernel", "/bin/true", "--reuse-cmdline", "--drop-unsupported");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, "this kernel has no /dev/liveupdate") != NULL);
	ASSERT_TRUE(strstr(o.err, "nothing changed") != NULL);
	assert_unchanged(open_fd, 3, 3);
	close(open_fd);
	close(sock_fd);
	close(luo);
	test_luod_stop(&d);
	unsetenv("LUOD_LIVEUPDATE_DEVICE");
}

static int other_uid_kexec(void *arg)
{
	ASSERT_OK(setgroups(0, NULL));
	ASSERT_OK(setresgid(NOBODY, NOBODY, NOBODY));
	ASSERT_OK(setresuid(NOBODY, NOBODY, NOBODY));
	LUOCTL(&o, "kexec", "--kernel", "/bin/true");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, strerror(EPERM)) != NULL);
	ASSERT_TRUE(strstr(o.err, "only root") != NULL);
	return 0;
}

TEST(kexec_is_for_root_only)
{
	struct test_luod d;

	if (!test_is_root())
		test_skip("needs root to run a client as a second uid");
	test_luod_start(&d, NULL);
	ASSERT_OK(chmod(test_tmpdir(), 0777));
	ASSERT_OK(chmod(d.socket, 0666));
	ASSERT_EQ(cli_wait(cli_spawn(other_uid_kexec, NULL)), 0);
	test_luod_stop(&d);
}

/*
 * /dev/null stands in for the device: luod can open it, and every ioctl on
 * it fails.  The socket is refused by kind before the kernel is asked; with
 * --drop-unsupported the first kernel session luod asks for fails.
 */
TEST(kexec_refuses_sockets_with_the_list_and_fails_cleanly)
{
	struct test_luod d;
	int luo, open_fd, sock_fd, fds;

#ifndef LUO_TEST_FAULT_INJECTION
	test_skip("needs a test build (-Dfault_injection=true): $LUOD_LIVEUPDATE_DEVICE");
#endif
	cli_need_jq();
	setenv("LUOD_LIVEUPDATE_DEVICE", "/dev/null", 1);
	test_luod_start(&d, NULL);
	unsetenv("LUOD_LIVEUPDATE_DEVICE");
	luo = ASSERT_OK(luo_connect(NULL));
	make_sessions(luo, &open_fd, &sock_fd);
	LUOCTL(&o, "status");
	fds = luod_fds_settle(d.pid, -1);

	LUOCTL(&o, "kexec", "--kernel", "/bin/true");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, "  session \"with socket\" (uid 0), token 7: socket-v2 (") !=
		    NULL);
	ASSERT_TRUE(strstr(o.err, "the kernel cannot carry the 1 file(s) above (of 3 in 3 "
				  "sessions); --drop-unsupported leaves them behind; nothing "
				  "changed") != NULL);
	/* luod kept nothing of the attempt. */
	ASSERT_EQ(luod_fds_settle(d.pid, fds), fds);
	assert_unchanged(open_fd, 3, 3);
	fds++; /* the file just preserved */

	LUOCTL(&o, "kexec", "--kernel", "/bin/true", "--drop-unsupported");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, strerror(ENOTTY)) != NULL);
	ASSERT_TRUE(strstr(o.err, "nothing changed") != NULL);
	/* Nor of this one, which opened the device. */
	ASSERT_EQ(luod_fds_settle(d.pid, fds), fds);
	assert_unchanged(open_fd, 4, 4);
	close(open_fd);
	close(sock_fd);
	close(luo);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(kexec_argument_errors), TEST_CASE(kexec_without_dev_liveupdate_is_enodev),
	  TEST_CASE(kexec_is_for_root_only),
	  TEST_CASE(kexec_refuses_sockets_with_the_list_and_fails_cleanly))
