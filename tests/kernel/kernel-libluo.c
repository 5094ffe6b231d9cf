/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: libluo on the kernel's own session fds, across a real kexec
 *
 * Run by kernel/lab.sh inside a QEMU guest booted on a LUO kernel (the
 * tests/kernel/libluo suite), one case per invocation.  Stage 1 opens
 * /dev/liveupdate and uses libluo's functions on the kernel's device and
 * session fds (libluo takes its ioctl path for them); the case that
 * preserves leaves a holder process with the session fds open, so that the
 * sessions are still outgoing when /init runs kexec -e.  Stage 2, in the new
 * kernel, retrieves with libluo and compares every byte.
 *
 * Each case skips outside the harness (no LAB_STAGE, or another stage), so
 * the program is harmless on a development machine.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "luo/luo.h"

#include "harness.h"
#include "kernel-guest.h"

/* Skips outside this suite's stage (kernel-guest.h). */
#define need_stage(stage) kernel_need_stage(stage, "tests/kernel/libluo", true)
#define KEXEC_SESSION "libluo-kexec"
#define FINISH_SESSION "libluo-finish-only"
#define ABORTED_SESSION "libluo-aborted"
#define BIG_TOKEN 1
#define SMALL_TOKEN UINT64_MAX
#define FINISH_TOKEN 0
#define BIG_SIZE (4u << 20)
#define BIG_POSITION 12345
#define SMALL_DATA "hello from the kernel before the kexec"

/* Byte i of the big memfd: not periodic in any power of two. */
static uint8_t big_byte(size_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13 ^ i / 4099);
}

static int big_memfd(void)
{
	int fd = ASSERT_OK(memfd_create("libluo-big", MFD_CLOEXEC));
	uint8_t *p;

	ASSERT_OK(ftruncate(fd, BIG_SIZE) < 0 ? -errno : 0);
	p = mmap(NULL, BIG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_TRUE(p != MAP_FAILED);
	for (size_t i = 0; i < BIG_SIZE; i++)
		p[i] = big_byte(i);
	munmap(p, BIG_SIZE);
	ASSERT_EQ(lseek(fd, BIG_POSITION, SEEK_SET), BIG_POSITION);
	return fd;
}

static int small_memfd(const char *data)
{
	int fd = ASSERT_OK(memfd_create("libluo-small", MFD_CLOEXEC));

	ASSERT_EQ(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	return fd;
}

static void assert_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	ASSERT_TRUE(flags >= 0 && (flags & FD_CLOEXEC));
}

/* ---- stage 1 ---- */

TEST(stage1_kernel_session_calls)
{
	char name[LUO_SESSION_NAME_LENGTH];
	int dev, s, other, m, m2, fd, p[2];

	need_stage("1");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_EQ(luo_fd_is_session(dev), 0);
	/* The kernel has no flags: libluo refuses rather than drop the promise. */
	ASSERT_ERR(luo_session_create(dev, "libluo-calls", LUO_SESSION_HANDOVER_ON_CLOSE, &s),
		   -EOPNOTSUPP);
	ASSERT_OK(luo_session_create(dev, "libluo-calls", 0, &s));
	assert_cloexec(s);
	ASSERT_EQ(luo_fd_is_session(s), 1);
	ASSERT_OK(luo_session_get_name(s, name));
	ASSERT_STREQ(name, "libluo-calls");
	ASSERT_ERR(luo_session_create(dev, "libluo-calls", 0, &other), -EEXIST);
	ASSERT_ERR(luo_session_retrieve(dev, "libluo-never-existed", &other), -ENOENT);

	m = small_memfd("calls");
	m2 = small_memfd("calls 2");
	ASSERT_EQ(luo_fd_is_session(m), 0);
	ASSERT_OK(luo_session_preserve_fd(s, 7, m));
	ASSERT_ERR(luo_session_preserve_fd(s, 8, m), -EBUSY);
	ASSERT_ERR(luo_session_preserve_fd(s, 7, m2), -EEXIST);
	ASSERT_ERR(luo_session_preserve_fd(s, 9, -1), -EBADF);
	ASSERT_OK(pipe2(p, O_CLOEXEC) < 0 ? -errno : 0);
	/* Mainline's handlers take memfds and unlinked shmem files only. */
	ASSERT_ERR(luo_session_preserve_fd(s, 10, p[0]), -ENOENT);
	close(p[0]);
	close(p[1]);

	/* Commands an outgoing session refuses, and what only luod offers. */
	ASSERT_ERR(luo_session_retrieve_fd(s, 7, &fd), -EINVAL);
	ASSERT_ERR(luo_session_finish(s), -EINVAL);
	ASSERT_ERR(luo_session_handover(s), -EOPNOTSUPP);
	/* A kernel fd that is no session gets the kernel's answer. */
	ASSERT_ERR(luo_session_preserve_fd(m2, 1, m), -ENOTTY);

	close(m);
	close(m2);
	close(s);
	/* Closing the outgoing session freed its name. */
	ASSERT_OK(luo_session_create(dev, "libluo-calls", 0, &s));
	close(s);
	close(dev);
}

TEST(stage1_preserve_and_hold)
{
	int dev, s, fin, aborted, big, small, m;

	need_stage("1");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_create(dev, KEXEC_SESSION, 0, &s));
	ASSERT_OK(luo_session_create(dev, FINISH_SESSION, 0, &fin));
	ASSERT_OK(luo_session_create(dev, ABORTED_SESSION, 0, &aborted));
	close(dev);

	big = big_memfd();
	small = small_memfd(SMALL_DATA);
	ASSERT_OK(luo_session_preserve_fd(s, BIG_TOKEN, big));
	ASSERT_OK(luo_session_preserve_fd(s, SMALL_TOKEN, small));
	/* LUO keeps its own reference: the memfds may be closed at once. */
	close(big);
	close(small);
	m = small_memfd("discarded by FINISH");
	ASSERT_OK(luo_session_preserve_fd(fin, FINISH_TOKEN, m));
	close(m);
	m = small_memfd("never crosses");
	ASSERT_OK(luo_session_preserve_fd(aborted, 1, m));
	close(m);
	/* Closed before the kexec: aborted, so stage 2 must not find it. */
	close(aborted);

	start_holder((int[]){ s, fin }, 2);
	close(s);
	close(fin);
}

#define BATCH_SESSION "libluo-batch"
#define BATCH_N 100

/* The text of batch file i. */
static void batch_text(size_t i, char *buf, size_t size)
{
	snprintf(buf, size, "batch file %zu", i);
}

/*
 * The batch calls on a kernel session: one ioctl per file, and no undo: the
 * files before a failing one stay preserved, as libluo(3) says.
 */
TEST(stage1_batch_preserve_and_hold)
{
	uint64_t tokens[BATCH_N];
	int dev, s, fds[BATCH_N];
	size_t failed = 0;

	need_stage("1");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_create(dev, BATCH_SESSION, 0, &s));
	close(dev);
	for (size_t i = 0; i < BATCH_N; i++) {
		char text[32];

		batch_text(i, text, sizeof(text));
		fds[i] = small_memfd(text);
		tokens[i] = 5000 + i;
	}
	tokens[60] = tokens[10];
	ASSERT_ERR(luo_session_preserve_fds(s, BATCH_N, tokens, fds, &failed), -EEXIST);
	ASSERT_EQ(failed, 60u);
	/* Files 0 to 59 stayed preserved in the kernel. */
	ASSERT_ERR(luo_session_preserve_fd(s, 9999, fds[0]), -EBUSY);
	tokens[60] = 5060;
	ASSERT_OK(luo_session_preserve_fds(s, BATCH_N - 60, tokens + 60, fds + 60, &failed));
	for (size_t i = 0; i < BATCH_N; i++)
		close(fds[i]);
	start_holder((int[]){ s }, 1);
	close(s);
}

/* ---- stage 2 ---- */

TEST(stage2_batch_retrieve)
{
	uint64_t tokens[BATCH_N];
	int dev, s, fds[BATCH_N];
	size_t failed = 0;

	need_stage("2");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_retrieve(dev, BATCH_SESSION, &s));
	close(dev);
	for (size_t i = 0; i < BATCH_N; i++)
		tokens[i] = 5000 + i;
	tokens[70] = 4242;
	/* The fds of 0 to 69 are closed again: the harness checks nothing leaks. */
	ASSERT_ERR(luo_session_retrieve_fds(s, BATCH_N, tokens, fds, &failed), -ENOENT);
	ASSERT_EQ(failed, 70u);
	tokens[70] = 5070;
	ASSERT_OK(luo_session_retrieve_fds(s, BATCH_N, tokens, fds, &failed));
	for (size_t i = 0; i < BATCH_N; i++) {
		char text[32], buf[32] = { 0 };

		batch_text(i, text, sizeof(text));
		assert_cloexec(fds[i]);
		ASSERT_EQ(pread(fds[i], buf, sizeof(buf) - 1, 0), (ssize_t)strlen(text));
		ASSERT_STREQ(buf, text);
		close(fds[i]);
	}
	ASSERT_OK(luo_session_finish(s));
	close(s);
}

TEST(stage2_retrieve_and_compare)
{
	char name[LUO_SESSION_NAME_LENGTH], buf[sizeof(SMALL_DATA)];
	int dev, s, again, big, big2, small, fd;
	struct stat st;
	uint8_t *p;

	need_stage("2");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_retrieve(dev, KEXEC_SESSION, &s));
	assert_cloexec(s);
	ASSERT_EQ(luo_fd_is_session(s), 1);
	ASSERT_OK(luo_session_get_name(s, name));
	ASSERT_STREQ(name, KEXEC_SESSION);
	/* Retrieved once; an aborted session never crossed. */
	ASSERT_ERR(luo_session_retrieve(dev, KEXEC_SESSION, &again), -EINVAL);
	ASSERT_ERR(luo_session_retrieve(dev, ABORTED_SESSION, &again), -ENOENT);

	ASSERT_OK(luo_session_retrieve_fd(s, BIG_TOKEN, &big));
	assert_cloexec(big);
	ASSERT_OK(fstat(big, &st) < 0 ? -errno : 0);
	ASSERT_EQ(st.st_size, BIG_SIZE);
	ASSERT_EQ(lseek(big, 0, SEEK_CUR), BIG_POSITION);
	p = mmap(NULL, BIG_SIZE, PROT_READ, MAP_SHARED, big, 0);
	ASSERT_TRUE(p != MAP_FAILED);
	for (size_t i = 0; i < BIG_SIZE; i++)
		if (p[i] != big_byte(i))
			test_fail_at(__FILE__, __LINE__, "byte %zu is %#x, expected %#x", i, p[i],
				     big_byte(i));
	munmap(p, BIG_SIZE);

	ASSERT_OK(luo_session_retrieve_fd(s, SMALL_TOKEN, &small));
	ASSERT_EQ(pread(small, buf, sizeof(buf), 0), (ssize_t)strlen(SMALL_DATA));
	buf[strlen(SMALL_DATA)] = 0;
	ASSERT_STREQ(buf, SMALL_DATA);

	/* A second retrieve of a token is the same open file: one offset. */
	ASSERT_OK(luo_session_retrieve_fd(s, BIG_TOKEN, &big2));
	ASSERT_EQ(lseek(big2, 77, SEEK_SET), 77);
	ASSERT_EQ(lseek(big, 0, SEEK_CUR), 77);
	ASSERT_ERR(luo_session_retrieve_fd(s, 4242, &fd), -ENOENT);
	/* An incoming session takes no files. */
	ASSERT_ERR(luo_session_preserve_fd(s, 4242, small), -EINVAL);

	ASSERT_OK(luo_session_finish(s));
	ASSERT_ERR(luo_session_retrieve_fd(s, SMALL_TOKEN, &fd), -ENOENT);
	ASSERT_OK(luo_session_finish(s));
	/* Retrieved files outlive FINISH. */
	ASSERT_EQ(pread(small, buf, sizeof(buf), 0), (ssize_t)strlen(SMALL_DATA));
	ASSERT_EQ(pread(big, buf, 1, BIG_SIZE - 1), 1);
	ASSERT_EQ((uint8_t)buf[0], big_byte(BIG_SIZE - 1));
	close(big);
	close(big2);
	close(small);
	close(s);
	/* Finished and closed: the name is gone. */
	ASSERT_ERR(luo_session_retrieve(dev, KEXEC_SESSION, &again), -ENOENT);
	close(dev);
}

TEST(stage2_finish_without_retrieving)
{
	int dev, s, fd;

	need_stage("2");
	dev = ASSERT_OK(kernel_dev_open());
	ASSERT_OK(luo_session_retrieve(dev, FINISH_SESSION, &s));
	ASSERT_OK(luo_session_finish(s));
	/* FINISH discarded the file nobody retrieved. */
	ASSERT_ERR(luo_session_retrieve_fd(s, FINISH_TOKEN, &fd), -ENOENT);
	close(s);
	close(dev);
}

TEST_MAIN(TEST_CASE(stage1_kernel_session_calls), TEST_CASE(stage1_preserve_and_hold),
	  TEST_CASE(stage1_batch_preserve_and_hold), TEST_CASE(stage2_retrieve_and_compare),
	  TEST_CASE(stage2_finish_without_retrieving), TEST_CASE(stage2_batch_retrieve))
