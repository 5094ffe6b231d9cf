/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's sessions across a real kexec (`luoctl kexec`)
 *
 * Run by kernel/lab.sh inside a QEMU guest booted on a LUO kernel (the
 * tests/kernel/kexec suite), one case per invocation, with luod running and
 * LUO_SOCKET naming it.  Stage 1 makes sessions of two uids through luod, in
 * every state the kexec's rule looks at, and one kernel session of its own
 * beside luod's; holders keep them open.  The stage script then runs
 * `luoctl kexec`.  Stage 2, in the new kernel with a new luod, checks that
 * exactly the sessions the rule carries arrived, with their owners, names,
 * tokens and bytes, and the kernel's rules on them; stage 3, after a second
 * kexec, that what arrived with the first one and was never retrieved is
 * gone.
 *
 * Each case skips outside the harness (no LAB_STAGE, or another stage).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "luo/luo.h"
#include "luo/uapi.h"

#include "harness.h"
#include "kernel-guest.h"

/* Skips outside this suite's stage (kernel-guest.h). */
#define need_stage(stage) kernel_need_stage(stage, "tests/kernel/kexec", false)
#define USER_UID 1000
/* 63 bytes, the longest name. */
#define NAME63 "a-session-name-of-sixty-three-bytes-the-longest-the-kernel-take"
_Static_assert(sizeof(NAME63) == 64, "NAME63 has 63 bytes");

static int memfd_text(const char *text, off_t pos)
{
	int fd = ASSERT_OK(memfd_create("kexec-test", MFD_CLOEXEC));

	ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	ASSERT_EQ(lseek(fd, pos, SEEK_SET), pos);
	return fd;
}

/* The file holds exactly text and its position is pos. */
static void assert_text(int fd, const char *text, off_t pos)
{
	char buf[256];
	struct stat st;

	ASSERT_OK(fstat(fd, &st) < 0 ? -errno : 0);
	ASSERT_EQ(st.st_size, (off_t)strlen(text));
	ASSERT_EQ(pread(fd, buf, sizeof(buf), 0), (ssize_t)strlen(text));
	ASSERT_EQ(memcmp(buf, text, strlen(text)), 0);
	ASSERT_EQ(lseek(fd, 0, SEEK_CUR), pos);
}

/* Runs fn as USER_UID in a child; its exit status. */
static int as_user(void (*fn)(void))
{
	int status;
	pid_t pid = fork();

	ASSERT_TRUE(pid >= 0);
	if (pid == 0) {
		if (setgid(USER_UID) < 0 || setuid(USER_UID) < 0)
			_exit(99);
		fn();
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int create_with(int luo, const char *name, uint64_t token, const char *text, off_t pos)
{
	int s, m = memfd_text(text, pos);

	ASSERT_OK(luo_session_create(luo, name, 0, &s));
	ASSERT_OK(luo_session_preserve_fd(s, token, m));
	close(m);
	return s;
}

static int kernel_session(int dev, unsigned long op, const char *name, int *ret_fd)
{
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c) };

	snprintf((char *)c.name, sizeof(c.name), "%s", name);
	if (ioctl(dev, op, &c) < 0)
		return -errno;
	*ret_fd = c.fd;
	return 0;
}

/* ---- stage 1 ---- */

static void user_stage1(void)
{
	int luo = ASSERT_OK(luo_connect(NULL));
	int keep[3];

	keep[0] = luo;
	/* Another uid's session of a name root uses too. */
	keep[1] = create_with(luo, "alpha", 1, "user alpha", 4);
	/* Handed over and waiting for its successor: crosses. */
	keep[2] = create_with(luo, "svc", 5, "user svc", 0);
	ASSERT_OK(luo_session_handover(keep[2]));
	start_holder(keep, 3);
	for (int i = 0; i < 3; i++)
		close(keep[i]);
}

TEST(stage1_sessions)
{
	int keep[8], n = 0, s, m, sv[2], dev;

	need_stage("1");
	int luo = ASSERT_OK(luo_connect(NULL));
	keep[n++] = luo;
	/* Open outgoing sessions: cross. */
	s = create_with(luo, "alpha", 1, "alpha one", 100);
	m = memfd_text("alpha zero", 3);
	ASSERT_OK(luo_session_preserve_fd(s, 0, m));
	close(m);
	keep[n++] = s;
	keep[n++] = create_with(luo, NAME63, 42, "sixty-three", 0);
	/* A socket the kernel cannot carry, beside a memfd it can. */
	s = create_with(luo, "sock", 1, "sock memfd", 0);
	ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ? -errno : 0);
	ASSERT_OK(luo_session_preserve_fd(s, 2, sv[0]));
	close(sv[0]);
	close(sv[1]);
	keep[n++] = s;
	/* Handed over and retrieved by a successor in this generation: does not cross. */
	s = create_with(luo, "taken", 1, "taken", 0);
	ASSERT_OK(luo_session_handover(s));
	close(s);
	ASSERT_OK(luo_session_retrieve(luo, "taken", &s));
	keep[n++] = s;
	/* Handed over, never retrieved: crosses the first kexec, dropped by the second. */
	s = create_with(luo, "left", 9, "left waiting", 0);
	ASSERT_OK(luo_session_handover(s));
	close(s);
	/* A kernel session of the program's own, beside luod's: luod leaves it alone. */
	dev = open(KERNEL_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_TRUE(dev >= 0);
	ASSERT_OK(kernel_session(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, "other", &s));
	m = memfd_text("other", 0);
	struct liveupdate_session_preserve_fd p = { .size = sizeof(p), .fd = m, .token = 3 };
	ASSERT_OK(ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &p) < 0 ? -errno : 0);
	close(m);
	close(dev);
	keep[n++] = s;
	start_holder(keep, (size_t)n);
	/* The holder has them now. */
	for (int i = 0; i < n; i++)
		close(keep[i]);
	ASSERT_EQ(as_user(user_stage1), 0);
}

/* After a kexec that failed: luod's kernel sessions are gone, its own still serve. */
TEST(stage1_after_failed_kexec)
{
	int luo, s, dev, k;

	need_stage("1");
	dev = open(KERNEL_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_TRUE(dev >= 0);
	/* The names luod used are free again: the kernel dropped its sessions. */
	ASSERT_OK(kernel_session(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, "luod", &k));
	close(k);
	ASSERT_OK(kernel_session(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, "luod-0", &k));
	close(k);
	close(dev);
	luo = ASSERT_OK(luo_connect(NULL));
	/* Still outgoing, still held: the name is taken. */
	ASSERT_ERR(luo_session_create(luo, "alpha", 0, &s), -EEXIST);
	ASSERT_ERR(luo_session_create(luo, "sock", 0, &s), -EEXIST);
	/* Still waiting for its successor. */
	s = create_with(luo, "fresh", 1, "fresh", 0);
	close(s);
	close(luo);
}

/* ---- stage 2 ---- */

static void user_stage2(void)
{
	int luo = ASSERT_OK(luo_connect(NULL)), s, f;
	uid_t uid;

	ASSERT_OK(luo_session_retrieve(luo, "alpha", &s));
	ASSERT_OK(luo_session_get_owner(s, &uid));
	ASSERT_EQ(uid, USER_UID);
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &f));
	assert_text(f, "user alpha", 4);
	close(f);
	ASSERT_ERR(luo_session_retrieve_fd(s, 0, &f), -ENOENT);
	ASSERT_OK(luo_session_finish(s));
	close(s);
	ASSERT_OK(luo_session_retrieve(luo, "svc", &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 5, &f));
	assert_text(f, "user svc", 0);
	close(f);
	ASSERT_OK(luo_session_finish(s));
	close(s);
	/* Root's sessions are not among this uid's names. */
	ASSERT_ERR(luo_session_retrieve(luo, NAME63, &s), -ENOENT);
	ASSERT_ERR(luo_session_retrieve(luo, "left", &s), -ENOENT);
	close(luo);
}

TEST(stage2_sessions)
{
	char name[LUO_SESSION_NAME_LENGTH];
	int luo, s, s2, f, f2, dev;

	need_stage("2");
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_retrieve(luo, "alpha", &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &f));
	assert_text(f, "alpha one", 100);
	/* Retrieving again gives the same open file: shared offset. */
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &f2));
	ASSERT_EQ(lseek(f2, 7, SEEK_SET), 7);
	ASSERT_EQ(lseek(f, 0, SEEK_CUR), 7);
	close(f2);
	close(f);
	ASSERT_OK(luo_session_retrieve_fd(s, 0, &f));
	assert_text(f, "alpha zero", 3);
	close(f);
	/* Retrieved once at a time; incoming, so no preserve. */
	ASSERT_ERR(luo_session_retrieve(luo, "alpha", &s2), -EINVAL);
	f = memfd_text("x", 0);
	ASSERT_ERR(luo_session_preserve_fd(s, 77, f), -EINVAL);
	close(f);
	ASSERT_OK(luo_session_finish(s));
	ASSERT_ERR(luo_session_retrieve_fd(s, 0, &f), -ENOENT);
	ASSERT_OK(luo_session_finish(s));
	ASSERT_ERR(luo_session_retrieve(luo, "alpha", &s2), -EINVAL);
	close(s);
	/* Let luod take the close in; then the name is gone. */
	for (int i = 0; i < 100 && luo_session_retrieve(luo, "alpha", &s2) == -EINVAL; i++)
		usleep(10000);
	ASSERT_ERR(luo_session_retrieve(luo, "alpha", &s2), -ENOENT);

	ASSERT_OK(luo_session_retrieve(luo, NAME63, &s));
	ASSERT_OK(luo_session_get_name(s, name));
	ASSERT_STREQ(name, NAME63);
	ASSERT_OK(luo_session_retrieve_fd(s, 42, &f));
	assert_text(f, "sixty-three", 0);
	close(f);
	/* FINISH without retrieving the rest is fine; close finishes implicitly. */
	close(s);

	/* The socket stayed behind (--drop-unsupported), the memfd beside it came. */
	ASSERT_OK(luo_session_retrieve(luo, "sock", &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &f));
	assert_text(f, "sock memfd", 0);
	close(f);
	ASSERT_ERR(luo_session_retrieve_fd(s, 2, &f), -ENOENT);
	ASSERT_OK(luo_session_finish(s));
	close(s);

	/* Retrieved in the previous generation: dropped, as the kernel drops it. */
	ASSERT_ERR(luo_session_retrieve(luo, "taken", &s), -ENOENT);
	/* Closed after the failed kexec, before the real one: aborted. */
	ASSERT_ERR(luo_session_retrieve(luo, "fresh", &s), -ENOENT);
	ASSERT_EQ(as_user(user_stage2), 0);

	/* luod finished its kernel sessions; the program's own is untouched. */
	dev = open(KERNEL_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_TRUE(dev >= 0);
	ASSERT_ERR(kernel_session(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, "luod", &s), -ENOENT);
	ASSERT_ERR(kernel_session(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, "luod-0", &s), -ENOENT);
	/* libluo on the kernel's own device and session fds. */
	ASSERT_OK(luo_session_retrieve_wait(dev, "other", 1000, &s));
	ASSERT_EQ(luo_fd_is_session(s), 1);
	ASSERT_OK(luo_session_get_name(s, name));
	ASSERT_STREQ(name, "other");
	uid_t owner;
	ASSERT_ERR(luo_session_get_owner(s, &owner), -EOPNOTSUPP);
	ASSERT_ERR(luo_session_handover(s), -EOPNOTSUPP);
	ASSERT_OK(luo_session_retrieve_fd(s, 3, &f));
	assert_text(f, "other", 0);
	close(f);
	ASSERT_OK(luo_session_finish(s));
	ASSERT_ERR(luo_session_retrieve_fd(s, 3, &f), -ENOENT);
	close(s);
	ASSERT_ERR(luo_session_retrieve(dev, "other", &s), -ENOENT);
	close(dev);
	/* "left" waits, never retrieved, for the next kexec to drop it. */
	close(luo);
}

/* ---- stage 3 ---- */

TEST(stage3_sessions)
{
	int luo, s;

	need_stage("3");
	luo = ASSERT_OK(luo_connect(NULL));
	/* It arrived with the first kexec and nobody retrieved it: the second dropped it. */
	ASSERT_ERR(luo_session_retrieve(luo, "left", &s), -ENOENT);
	ASSERT_ERR(luo_session_retrieve(luo, NAME63, &s), -ENOENT);
	close(luo);
}

TEST_MAIN(TEST_CASE(stage1_sessions), TEST_CASE(stage1_after_failed_kexec),
	  TEST_CASE(stage2_sessions), TEST_CASE(stage3_sessions))
