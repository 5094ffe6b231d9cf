/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the session filesystem of kernel/patches, seen from userspace
 *
 * Run by kernel/lab.sh inside a QEMU guest booted on the kernel built with
 * kernel/patches (the tests/kernel/patched suite), one case per invocation.
 * On that kernel every session fd is a file of its own on the session
 * filesystem: fstatfs() reports LUO_SESSION_MAGIC, fstat() gives each
 * session its own inode, and the /proc/self/fd link reads
 * "luo_session:[NAME]".  These cases check that, that libluo's
 * luo_fd_is_session() recognises such a session by fstatfs() alone (with
 * /proc unmounted), and that the same holds for a session retrieved after a
 * real kexec.  On a mainline kernel they fail: that is what they tell apart.
 *
 * Each case skips outside the harness (no LAB_STAGE, or another stage).
 */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "luo/luo.h"
#include "luo/uapi.h"

#include "harness.h"
#include "kernel-guest.h"

/* Skips outside this suite's stage (kernel-guest.h). */
#define need_stage(stage)                                                                          \
	kernel_need_stage(stage, "tests/kernel/patched --patches kernel/patches", true)
#define KEXEC_SESSION "patched-kexec"
#define OTHER_SESSION "patched-kexec-other"
#define TOKEN 7
#define DATA "a memfd in a session on the session filesystem"

static uint32_t fs_type(int fd)
{
	struct statfs sf;

	ASSERT_OK(fstatfs(fd, &sf) < 0 ? -errno : 0);
	return (uint32_t)sf.f_type;
}

static void stat_fd(int fd, struct stat *st)
{
	ASSERT_OK(fstat(fd, st) < 0 ? -errno : 0);
}

/* The session filesystem's identity of a session fd: magic, link, no file type. */
static void assert_session_file(int fd, const char *name)
{
	char path[64], link[128], expected[128];
	struct stat st;
	ssize_t n;

	ASSERT_EQ(fs_type(fd), LUO_SESSION_MAGIC);
	stat_fd(fd, &st);
	ASSERT_EQ(st.st_mode & S_IFMT, 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	ASSERT_TRUE(n > 0);
	link[n] = '\0';
	snprintf(expected, sizeof(expected), "luo_session:[%s]", name);
	ASSERT_STREQ(link, expected);
	/*
	 * No reopening through /proc: the inode has no file operations, and
	 * being immutable it refuses write access first.
	 */
	ASSERT_ERRNO(open(path, O_RDONLY | O_CLOEXEC), ENXIO);
	ASSERT_ERRNO(open(path, O_RDWR | O_CLOEXEC), EPERM);
}

TEST(stage1_session_files)
{
	struct stat a, a_dup, b, ev;
	int dev, s1, s2, d, e;

	need_stage("1");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_create(dev, "patched-one", 0, &s1));
	ASSERT_OK(luo_session_create(dev, "patched-two", 0, &s2));
	d = ASSERT_OK(fcntl(s1, F_DUPFD_CLOEXEC, 0));
	e = ASSERT_OK(eventfd(0, EFD_CLOEXEC));

	assert_session_file(s1, "patched-one");
	assert_session_file(s2, "patched-two");
	/* The device and other anonymous inodes are not on it. */
	ASSERT_NE(fs_type(dev), LUO_SESSION_MAGIC);
	ASSERT_NE(fs_type(e), LUO_SESSION_MAGIC);

	stat_fd(s1, &a);
	stat_fd(d, &a_dup);
	stat_fd(s2, &b);
	stat_fd(e, &ev);
	ASSERT_EQ(a.st_dev, a_dup.st_dev);
	ASSERT_EQ(a.st_ino, a_dup.st_ino);
	ASSERT_EQ(a.st_dev, b.st_dev);
	ASSERT_NE(a.st_ino, b.st_ino);
	ASSERT_NE(a.st_dev, ev.st_dev);

	/* Immutable: mode and owner stay. */
	ASSERT_ERRNO(fchmod(s1, 0666), EPERM);
	ASSERT_ERRNO(fchown(s1, 0, 0), EPERM);

	close(e);
	close(d);
	close(s2);
	close(s1);
	close(dev);
}

/*
 * luo_fd_is_session() in a child whose mount namespace has no /proc: only
 * fstatfs() can tell it a kernel session then.
 */
static int fd_is_session_without_proc(int session, int dup_session, int dev, int memfd, int ev)
{
	char path[64], link[64];

	if (unshare(CLONE_NEWNS) < 0)
		return 10;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return 11;
	if (umount2("/proc", MNT_DETACH) < 0)
		return 12;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", session);
	if (readlink(path, link, sizeof(link)) >= 0)
		return 13; /* /proc is still there */
	if (luo_fd_is_session(session) != 1)
		return 1;
	if (luo_fd_is_session(dup_session) != 1)
		return 2;
	if (luo_fd_is_session(dev) != 0)
		return 3;
	if (luo_fd_is_session(memfd) != 0)
		return 4;
	if (luo_fd_is_session(ev) != 0)
		return 5;
	return 0;
}

TEST(stage1_fd_is_session_by_fstatfs)
{
	int dev, s, d, m, e, status;
	pid_t pid;

	need_stage("1");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_create(dev, "patched-is-session", 0, &s));
	d = ASSERT_OK(dup(s));
	m = ASSERT_OK(memfd_create("patched-not-a-session", MFD_CLOEXEC));
	e = ASSERT_OK(eventfd(0, EFD_CLOEXEC));

	/* With /proc, as everywhere. */
	ASSERT_EQ(luo_fd_is_session(s), 1);
	ASSERT_EQ(luo_fd_is_session(dev), 0);

	pid = ASSERT_OK(fork());
	if (pid == 0)
		_exit(fd_is_session_without_proc(s, d, dev, m, e));
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	if (WEXITSTATUS(status) >= 10)
		test_fail_at(__FILE__, __LINE__, "could not take /proc away in a child (step %d)",
			     WEXITSTATUS(status));
	/* 1: the session, 2: its dup, 3: the device, 4: a memfd, 5: an eventfd. */
	ASSERT_EQ(WEXITSTATUS(status), 0);

	close(e);
	close(m);
	close(d);
	close(s);
	close(dev);
}

/* Leaves a holder with two sessions (one with a memfd) open for the kexec. */
TEST(stage1_preserve_and_hold)
{
	int dev, s, o, m, status;
	pid_t pid;

	need_stage("1");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_create(dev, KEXEC_SESSION, 0, &s));
	ASSERT_OK(luo_session_create(dev, OTHER_SESSION, 0, &o));
	m = ASSERT_OK(memfd_create("patched-data", MFD_CLOEXEC));
	ASSERT_EQ(write(m, DATA, strlen(DATA)), (ssize_t)strlen(DATA));
	ASSERT_OK(luo_session_preserve_fd(s, TOKEN, m));
	close(m);
	close(dev);

	pid = ASSERT_OK(fork());
	if (pid == 0) {
		/* The holder: outlives this case, keeps s and o open until kexec -e. */
		pid_t holder;

		setsid();
		holder = fork();
		if (holder != 0)
			_exit(holder < 0 ? 1 : 0);
		for (int fd = 0; fd < 1024; fd++)
			if (fd != s && fd != o)
				close(fd);
		for (;;)
			pause();
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(o);
	close(s);
}

TEST(stage2_retrieved_sessions_are_session_files)
{
	struct stat a, b;
	char buf[128] = { 0 };
	int dev, s, o, m;

	need_stage("2");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_retrieve(dev, KEXEC_SESSION, &s));
	ASSERT_OK(luo_session_retrieve(dev, OTHER_SESSION, &o));
	assert_session_file(s, KEXEC_SESSION);
	assert_session_file(o, OTHER_SESSION);
	stat_fd(s, &a);
	stat_fd(o, &b);
	ASSERT_EQ(a.st_dev, b.st_dev);
	ASSERT_NE(a.st_ino, b.st_ino);
	ASSERT_EQ(luo_fd_is_session(s), 1);

	ASSERT_OK(luo_session_retrieve_fd(s, TOKEN, &m));
	ASSERT_EQ(pread(m, buf, sizeof(buf) - 1, 0), (ssize_t)strlen(DATA));
	ASSERT_STREQ(buf, DATA);
	ASSERT_OK(luo_session_finish(s));
	ASSERT_OK(luo_session_finish(o));
	close(m);
	close(o);
	close(s);
	close(dev);
}

TEST_MAIN(TEST_CASE(stage1_session_files), TEST_CASE(stage1_fd_is_session_by_fstatfs),
	  TEST_CASE(stage1_preserve_and_hold),
	  TEST_CASE(stage2_retrieved_sessions_are_session_files))
