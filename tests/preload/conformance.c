/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the kernel LUO conformance suite, run under luo-preload.so
 *
 * An ordinary kernel-uAPI program: it knows only <luo/uapi.h>, open() and
 * ioctl().  Each case checks one rule of the kernel's LUO, errno for errno,
 * against a real luod behind the shim (and, compiled again by tests/kernel,
 * against a real kernel).  Where mainline and the proposed session
 * filesystem differ, a case asks profile_proposed() which one it checks:
 * the meson suite runs this program once per profile.  The rules about
 * incoming sessions need an update in between and live in two-stage.c.
 */
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "luo/uapi.h"
#include "preload-test.h"

/* ---- the uAPI calls themselves are in preload-test.h ---- */

static int memfd_with(const char *data)
{
	int fd = ASSERT_OK(memfd_create("conformance", MFD_CLOEXEC));

	ASSERT_EQ(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	return fd;
}

/* ---- 1. the device ---- */

PRELOAD_TEST(device_is_a_character_device)
{
	struct stat st;

	ASSERT_OK(sys(stat(DEV, &st)));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_EQ(st.st_mode & 07777, 0600);
	ASSERT_OK(sys(access(DEV, R_OK | W_OK)));
	int dev = ASSERT_OK(dev_open());
	struct stat fst;
	ASSERT_OK(sys(fstat(dev, &fst)));
	ASSERT_TRUE(S_ISCHR(fst.st_mode));
	ASSERT_EQ(fst.st_rdev, st.st_rdev);
	ASSERT_EQ(fst.st_ino, st.st_ino);
	struct statx stx;
	ASSERT_OK(sys(statx(AT_FDCWD, DEV, 0, STATX_BASIC_STATS, &stx)));
	ASSERT_TRUE(S_ISCHR(stx.stx_mode));
	ASSERT_OK(sys(statx(dev, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx)));
	ASSERT_TRUE(S_ISCHR(stx.stx_mode));
	ASSERT_OK(sys(fstatat(AT_FDCWD, DEV, &fst, 0)));
	ASSERT_TRUE(S_ISCHR(fst.st_mode));
	ASSERT_OK(sys(lstat(DEV, &fst)));
	ASSERT_TRUE(S_ISCHR(fst.st_mode));
	ASSERT_ERRNO(faccessat(AT_FDCWD, DEV, X_OK, 0), EACCES);
	close(dev);
}

PRELOAD_TEST(second_open_in_same_process_is_ebusy)
{
	int dev = ASSERT_OK(dev_open());

	ASSERT_ERRNO(open(DEV, O_RDWR), EBUSY);
	ASSERT_ERRNO(openat(AT_FDCWD, DEV, O_RDWR | O_CLOEXEC), EBUSY);
	close(dev);
	/* And it is a device, not something to create. */
	ASSERT_ERRNO(open(DEV, O_RDWR | O_CREAT | O_EXCL, 0600), EEXIST);
	ASSERT_ERRNO(open(DEV, O_RDONLY | O_DIRECTORY), ENOTDIR);
}

PRELOAD_TEST(second_open_from_other_process_is_ebusy)
{
	int dev = ASSERT_OK(dev_open());
	pid_t pid = fork();

	ASSERT_TRUE(pid >= 0);
	if (pid == 0)
		_exit(open(DEV, O_RDWR) < 0 && errno == EBUSY ? 0 : 1);
	int status;
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(dev);
}

PRELOAD_TEST(close_frees_the_device)
{
	int dev = ASSERT_OK(dev_open());

	close(dev);
	dev = ASSERT_OK(dev_open());
	close(dev);
}

PRELOAD_TEST(holder_death_frees_the_device)
{
	int p[2];

	ASSERT_OK(sys(pipe2(p, O_CLOEXEC)));
	pid_t pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (pid == 0) {
		int fd = open(DEV, O_RDWR);
		char c = fd >= 0 ? 'y' : 'n';
		if (write(p[1], &c, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(p[1]);
	char c = 0;
	ASSERT_EQ(read(p[0], &c, 1), 1);
	close(p[0]);
	ASSERT_EQ(c, 'y');
	ASSERT_ERRNO(open(DEV, O_RDWR), EBUSY);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	int dev = ASSERT_OK(dev_open());
	close(dev);
}

PRELOAD_TEST(device_close_keeps_sessions)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_OK(create_session(dev, "kept", &s));
	close(dev);
	ASSERT_OK(get_name(s, name));
	ASSERT_STREQ(name, "kept");
	dev = ASSERT_OK(dev_open());
	int s2;
	ASSERT_ERR(create_session(dev, "kept", &s2), -EEXIST);
	close(s);
	close(dev);
}

PRELOAD_TEST(device_fd_cloexec_as_requested)
{
	int dev = ASSERT_OK(sys(open(DEV, O_RDWR | O_CLOEXEC)));

	assert_cloexec(dev);
	close(dev);
	/* Closing freed the device at once, as in the kernel. */
	dev = ASSERT_OK(sys(open(DEV, O_RDWR)));
	ASSERT_EQ(fcntl(dev, F_GETFD) & FD_CLOEXEC, 0);
	close(dev);
}

PRELOAD_TEST(no_luod_means_no_device)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/nobody.sock", test_tmpdir());
	setenv("LUO_SOCKET", path, 1);
	ASSERT_ERRNO(open(DEV, O_RDWR), ENOENT);
	ASSERT_ERRNO(stat(DEV, &st), ENOENT);
	ASSERT_ERRNO(access(DEV, F_OK), ENOENT);
}

/* ---- 3. CREATE_SESSION names ---- */

PRELOAD_TEST(create_duplicate_name_is_eexist)
{
	int dev = ASSERT_OK(dev_open()), a, b;

	ASSERT_OK(create_session(dev, "twice", &a));
	ASSERT_ERR(create_session(dev, "twice", &b), -EEXIST);
	close(a);
	/* Closing the outgoing session frees its name. */
	ASSERT_OK(create_session(dev, "twice", &b));
	close(b);
	close(dev);
}

PRELOAD_TEST(create_empty_name_is_einval)
{
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_ERR(create_session(dev, "", &s), -EINVAL);
	close(dev);
}

PRELOAD_TEST(create_unterminated_name_is_einval)
{
	struct liveupdate_ioctl_create_session a = { .size = sizeof(a) };
	int dev = ASSERT_OK(dev_open());

	memset(a.name, 'x', sizeof(a.name));
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &a), EINVAL);
	close(dev);
}

PRELOAD_TEST(create_name_of_63_bytes_is_ok)
{
	char name[64], back[64];
	int dev = ASSERT_OK(dev_open()), s;

	memset(name, 'n', 63);
	name[63] = 0;
	ASSERT_OK(create_session(dev, name, &s));
	ASSERT_OK(get_name(s, back));
	ASSERT_STREQ(back, name);
	close(s);
	close(dev);
}

PRELOAD_TEST(create_name_of_64_bytes_is_einval)
{
	struct liveupdate_ioctl_create_session a = { .size = sizeof(a) };
	int dev = ASSERT_OK(dev_open());

	/* 64 name bytes leave no room for the NUL inside the field. */
	memset(a.name, 'n', 64);
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &a), EINVAL);
	close(dev);
}

PRELOAD_TEST(create_ignores_bytes_after_nul_and_takes_any_byte)
{
	struct liveupdate_ioctl_create_session a = { .size = sizeof(a) };
	char back[64];
	int dev = ASSERT_OK(dev_open());

	memcpy(a.name, "\xff /\t\x01", 6);
	memset(a.name + 6, 'g', sizeof(a.name) - 6);
	ASSERT_OK(sys(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &a)));
	ASSERT_OK(get_name(a.fd, back));
	ASSERT_STREQ(back, "\xff /\t\x01");
	close(a.fd);
	close(dev);
}

PRELOAD_TEST(session_fds_are_cloexec)
{
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_OK(create_session(dev, "cloexec", &s));
	assert_cloexec(s);
	close(s);
	close(dev);
}

PRELOAD_TEST(two_thousand_sessions)
{
	enum { N = 2000 };
	static int fds[N];
	char name[64], back[64];
	int dev;

	test_need_fds(N + 64);
	dev = ASSERT_OK(dev_open());
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "session-%d", i);
		ASSERT_OK(create_session(dev, name, &fds[i]));
	}
	for (int i = 0; i < N; i += 97) {
		snprintf(name, sizeof(name), "session-%d", i);
		ASSERT_OK(get_name(fds[i], back));
		ASSERT_STREQ(back, name);
	}
	for (int i = 0; i < N; i++)
		close(fds[i]);
	close(dev);
}

PRELOAD_TEST(retrieve_unknown_session_is_enoent)
{
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_ERR(retrieve_session(dev, "never-existed", &s), -ENOENT);
	/* An outgoing session is not in the incoming namespace. */
	ASSERT_OK(create_session(dev, "outgoing", &s));
	int r;
	ASSERT_ERR(retrieve_session(dev, "outgoing", &r), -ENOENT);
	close(s);
	close(dev);
}

/* ---- 3. PRESERVE_FD ---- */

PRELOAD_TEST(five_hundred_files_in_one_session)
{
	int dev = ASSERT_OK(dev_open()), s;

	test_need_fds(600);
	ASSERT_OK(create_session(dev, "files", &s));
	for (uint64_t t = 0; t < 500; t++) {
		int m = memfd_with("x");
		ASSERT_OK(preserve(s, m, t * 3));
		/* LUO holds its own reference: the caller may close at once. */
		close(m);
	}
	int m = memfd_with("y");
	ASSERT_ERR(preserve(s, m, 3 * 499), -EEXIST);
	close(m);
	close(s);
	close(dev);
}

PRELOAD_TEST(preserve_same_token_is_eexist_and_tokens_are_per_session)
{
	int dev = ASSERT_OK(dev_open()), s1, s2;
	int m1 = memfd_with("a"), m2 = memfd_with("b"), m3 = memfd_with("c");

	ASSERT_OK(create_session(dev, "t1", &s1));
	ASSERT_OK(create_session(dev, "t2", &s2));
	ASSERT_OK(preserve(s1, m1, 0));
	ASSERT_ERR(preserve(s1, m2, 0), -EEXIST);
	ASSERT_OK(preserve(s2, m3, 0));
	ASSERT_OK(preserve(s1, m2, UINT64_MAX));
	close(m1);
	close(m2);
	close(m3);
	close(s1);
	close(s2);
	close(dev);
}

PRELOAD_TEST(preserve_same_memfd_other_token_is_ebusy)
{
	int dev = ASSERT_OK(dev_open()), s, m = memfd_with("d");

	ASSERT_OK(create_session(dev, "dbl", &s));
	ASSERT_OK(preserve(s, m, 1));
	ASSERT_ERR(preserve(s, m, 2), -EBUSY);
	close(m);
	close(s);
	close(dev);
}

PRELOAD_TEST(preserve_same_memfd_other_session_is_ebusy)
{
	int dev = ASSERT_OK(dev_open()), s1, s2, m = memfd_with("d");

	ASSERT_OK(create_session(dev, "dbl1", &s1));
	ASSERT_OK(create_session(dev, "dbl2", &s2));
	ASSERT_OK(preserve(s1, m, 1));
	ASSERT_ERR(preserve(s2, m, 1), -EBUSY);
	close(m);
	close(s1);
	close(s2);
	close(dev);
}

PRELOAD_TEST(preserve_dup_of_preserved_memfd_is_ebusy)
{
	int dev = ASSERT_OK(dev_open()), s, m = memfd_with("d");
	int d = ASSERT_OK(sys(fcntl(m, F_DUPFD_CLOEXEC, 0)));

	ASSERT_OK(create_session(dev, "dup", &s));
	ASSERT_OK(preserve(s, m, 1));
	ASSERT_ERR(preserve(s, d, 2), -EBUSY);
	close(d);
	close(m);
	close(s);
	close(dev);
}

PRELOAD_TEST(preserve_reopened_memfd_is_ebusy)
{
	char path[64];
	int dev = ASSERT_OK(dev_open()), s, m = memfd_with("d");

	snprintf(path, sizeof(path), "/proc/self/fd/%d", m);
	int again = ASSERT_OK(sys(open(path, O_RDWR | O_CLOEXEC)));
	ASSERT_OK(create_session(dev, "reopen", &s));
	ASSERT_OK(preserve(s, m, 1));
	ASSERT_ERR(preserve(s, again, 2), -EBUSY);
	close(again);
	close(m);
	close(s);
	close(dev);
}

PRELOAD_TEST(closing_outgoing_session_unpreserves_its_files)
{
	int dev = ASSERT_OK(dev_open()), s, m = memfd_with("d");

	ASSERT_OK(create_session(dev, "abort", &s));
	ASSERT_OK(preserve(s, m, 1));
	close(s);
	ASSERT_OK(create_session(dev, "abort", &s));
	/* The memfd is free again the moment the aborted session's fd is closed. */
	ASSERT_OK(preserve(s, m, 1));
	close(m);
	close(s);
	close(dev);
}

PRELOAD_TEST(preserve_dev_null_is_enoent)
{
	int dev = ASSERT_OK(dev_open()), s;
	int null = ASSERT_OK(sys(open("/dev/null", O_RDWR | O_CLOEXEC)));

	ASSERT_OK(create_session(dev, "null", &s));
	ASSERT_ERR(preserve(s, null, 1), -ENOENT);
	close(null);
	close(s);
	close(dev);
}

PRELOAD_TEST(preserve_closed_or_opath_fd_is_ebadf)
{
	int dev = ASSERT_OK(dev_open()), s;
	int opath = ASSERT_OK(sys(open("/tmp", O_PATH | O_CLOEXEC)));

	ASSERT_OK(create_session(dev, "badf", &s));
	ASSERT_ERR(preserve(s, 1000, 1), -EBADF);
	ASSERT_ERR(preserve(s, -1, 1), -EBADF);
	ASSERT_ERR(preserve(s, opath, 1), -EBADF);
	close(opath);
	close(s);
	close(dev);
}

/* ---- 3. commands an outgoing session refuses, GET_NAME ---- */

PRELOAD_TEST(retrieve_fd_and_finish_on_outgoing_are_einval)
{
	int dev = ASSERT_OK(dev_open()), s, fd;

	ASSERT_OK(create_session(dev, "out", &s));
	ASSERT_ERR(retrieve_fd(s, 0, &fd), -EINVAL);
	ASSERT_ERR(finish(s), -EINVAL);
	/* The kind of session is checked before the size: EINVAL, not E2BIG. */
	struct {
		struct liveupdate_session_finish f;
		uint64_t extra;
	} big = { .f = { .size = sizeof(big) }, .extra = 1 };
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_FINISH, &big), EINVAL);
	close(s);
	close(dev);
}

PRELOAD_TEST(reserved_fields_must_be_zero)
{
	struct liveupdate_session_get_name g = { .size = sizeof(g), .reserved = 1 };
	struct liveupdate_session_finish f = { .size = sizeof(f), .reserved = 1 };
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_OK(create_session(dev, "reserved", &s));
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &g), EINVAL);
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_FINISH, &f), EINVAL);
	close(s);
	close(dev);
}

/* ---- 2. sizes and pointers ---- */

PRELOAD_TEST(short_size_is_einval)
{
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c) - 1, .name = "short" };
	struct liveupdate_session_get_name g = { .size = sizeof(g) - 1 };
	struct liveupdate_session_preserve_fd p = { .size = 12 };
	struct liveupdate_session_finish f = { .size = 4 };
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &c), EINVAL);
	c.size = 0;
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &c), EINVAL);
	ASSERT_OK(create_session(dev, "sizes", &s));
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &g), EINVAL);
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &p), EINVAL);
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_FINISH, &f), EINVAL);
	/* Nothing was created by the short request. */
	int s2;
	ASSERT_OK(create_session(dev, "short", &s2));
	close(s2);
	close(s);
	close(dev);
}

PRELOAD_TEST(larger_size_with_zeros_is_accepted)
{
	static uint8_t buf[1 << 20] __attribute__((aligned(8)));
	struct liveupdate_ioctl_create_session *c = (void *)buf;
	struct liveupdate_session_get_name *g = (void *)buf;
	int dev = ASSERT_OK(dev_open());

	c->size = sizeof(buf);
	strcpy((char *)c->name, "large");
	ASSERT_OK(sys(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, c)));
	int s = c->fd;
	/* The size word comes back as the caller wrote it. */
	ASSERT_EQ(c->size, sizeof(buf));
	memset(buf, 0, sizeof(buf));
	g->size = sizeof(*g) + 8;
	ASSERT_OK(sys(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, g)));
	ASSERT_STREQ((char *)g->name, "large");
	close(s);
	close(dev);
}

PRELOAD_TEST(nonzero_byte_past_struct_is_e2big)
{
	static uint8_t buf[8192] __attribute__((aligned(8)));
	struct liveupdate_ioctl_create_session *c = (void *)buf;
	struct liveupdate_session_get_name *g = (void *)buf;
	int dev = ASSERT_OK(dev_open()), s;

	c->size = sizeof(buf);
	strcpy((char *)c->name, "e2big");
	buf[sizeof(buf) - 1] = 1;
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, c), E2BIG);
	ASSERT_OK(create_session(dev, "e2big", &s));
	memset(buf, 0, sizeof(buf));
	g->size = sizeof(*g) + 1;
	buf[sizeof(*g)] = 0x80;
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, g), E2BIG);
	close(s);
	close(dev);
}

PRELOAD_TEST(luod_create_flags_are_unreachable)
{
	struct {
		struct liveupdate_ioctl_create_session k;
		uint64_t flags;
	} c = { .k = { .size = sizeof(c), .name = "flags" }, .flags = 1 };
	int dev = ASSERT_OK(dev_open());

	/* luod's handover-on-close flag sits past the kernel's struct: to a kernel program, E2BIG. */
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &c), E2BIG);
	close(dev);
}

PRELOAD_TEST(bad_pointer_is_efault)
{
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *map =
		mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_TRUE(map != MAP_FAILED);
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, NULL), EFAULT);
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, (void *)8), EFAULT);
	/* A struct that runs into an unmapped page. */
	ASSERT_OK(sys(munmap(map + page, page)));
	struct liveupdate_ioctl_create_session *c = (void *)(map + page - 16);
	c->size = sizeof(*c);
	memcpy(c->name, "edge", 5);
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, c), EFAULT);
	/* A size reaching past the mapping, over zeros only: the scan reaches the fault. */
	struct liveupdate_ioctl_create_session *d = (void *)map;
	memset(map, 0, page);
	d->size = (uint32_t)page + 64;
	memcpy(d->name, "edge", 5);
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, d), EFAULT);
	/* A read-only struct fails before anything happens: the name is still free. */
	d->size = sizeof(*d);
	ASSERT_OK(sys(mprotect(map, page, PROT_READ)));
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, d), EFAULT);
	ASSERT_OK(create_session(dev, "edge", &s));
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, NULL), EFAULT);
	munmap(map, page);
	close(s);
	close(dev);
}

/* ---- 2. command words ---- */

PRELOAD_TEST(session_command_on_device_is_einval)
{
	struct liveupdate_session_get_name g = { .size = sizeof(g) };
	struct liveupdate_session_preserve_fd p = { .size = sizeof(p) };
	int dev = ASSERT_OK(dev_open());

	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_SESSION_GET_NAME, &g), EINVAL);
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_SESSION_PRESERVE_FD, &p), EINVAL);
	close(dev);
}

PRELOAD_TEST(device_command_on_session_is_einval)
{
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c), .name = "inner" };
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_OK(create_session(dev, "outer", &s));
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_IOCTL_CREATE_SESSION, &c), EINVAL);
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &c), EINVAL);
	close(s);
	close(dev);
}

PRELOAD_TEST(unknown_nr_is_einval)
{
	struct liveupdate_session_finish f = { .size = sizeof(f) };
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_OK(create_session(dev, "nr", &s));
	ASSERT_ERRNO(ioctl(dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0x02), &f), EINVAL);
	ASSERT_ERRNO(ioctl(dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0xff), &f), EINVAL);
	ASSERT_ERRNO(ioctl(s, _IO(LIVEUPDATE_IOCTL_TYPE, 0x4f), &f), EINVAL);
	/* luod's own extensions do not exist for a kernel program. */
	ASSERT_ERRNO(ioctl(dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0x80), &f), EINVAL);
	ASSERT_ERRNO(ioctl(dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0x85), &f), EINVAL);
	ASSERT_ERRNO(ioctl(s, _IO(LIVEUPDATE_IOCTL_TYPE, 0x44), &f), EINVAL);
	close(s);
	close(dev);
}

PRELOAD_TEST(size_or_direction_bits_are_enotty)
{
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c), .name = "bits" };
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_ERRNO(ioctl(dev, _IOW(LIVEUPDATE_IOCTL_TYPE, 0x00, c), &c), ENOTTY);
	ASSERT_ERRNO(ioctl(dev, _IOR(LIVEUPDATE_IOCTL_TYPE, 0x00, c), &c), ENOTTY);
	ASSERT_ERRNO(ioctl(dev, _IOWR(LIVEUPDATE_IOCTL_TYPE, 0x00, uint32_t), &c), ENOTTY);
	ASSERT_OK(create_session(dev, "bits", &s));
	struct liveupdate_session_finish f = { .size = sizeof(f) };
	ASSERT_ERRNO(ioctl(s, _IOWR(LIVEUPDATE_IOCTL_TYPE, 0x42, f), &f), ENOTTY);
	close(s);
	close(dev);
}

PRELOAD_TEST(luo_ioctl_on_other_fd_passes_through)
{
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c), .name = "pipe" };
	int p[2];

	ASSERT_OK(sys(pipe2(p, O_CLOEXEC)));
	ASSERT_ERRNO(ioctl(p[0], LIVEUPDATE_IOCTL_CREATE_SESSION, &c), ENOTTY);
	ASSERT_ERRNO(ioctl(1000, LIVEUPDATE_IOCTL_CREATE_SESSION, &c), EBADF);
	close(p[0]);
	close(p[1]);
}

PRELOAD_TEST(errno_untouched_on_success)
{
	struct stat st;
	struct statfs sf;
	int dev, s;
	char name[64];

	errno = 1234;
	dev = open(DEV, O_RDWR | O_CLOEXEC);
	ASSERT_OK(dev);
	ASSERT_EQ(errno, 1234);
	ASSERT_OK(stat(DEV, &st));
	ASSERT_OK(fstat(dev, &st));
	ASSERT_OK(access(DEV, R_OK));
	ASSERT_EQ(errno, 1234);
	ASSERT_OK(create_session(dev, "errno", &s));
	ASSERT_EQ(errno, 1234);
	ASSERT_OK(get_name(s, name));
	ASSERT_EQ(errno, 1234);
	ASSERT_OK(fstatfs(s, &sf));
	ASSERT_EQ(errno, 1234);
	close(s);
	close(dev);
}

/* ---- 2. the order of the checks around the pointer ---- */

PRELOAD_TEST(size_is_read_before_the_command_word)
{
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_OK(create_session(dev, "order", &s));
	/* The nr is judged first: EINVAL before the pointer is touched. */
	ASSERT_ERRNO(ioctl(dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0x05), NULL), EINVAL);
	ASSERT_ERRNO(ioctl(s, _IO(LIVEUPDATE_IOCTL_TYPE, 0x05), NULL), EINVAL);
	/* Then the size word is read (EFAULT), and only then the word compared (ENOTTY). */
	ASSERT_ERRNO(ioctl(dev, _IOW(LIVEUPDATE_IOCTL_TYPE, 0x00, uint32_t), NULL), EFAULT);
	ASSERT_ERRNO(ioctl(s, _IOWR(LIVEUPDATE_IOCTL_TYPE, 0x42, uint64_t), NULL), EFAULT);
	close(s);
	close(dev);
}

PRELOAD_TEST(trailing_bytes_are_scanned_in_order)
{
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *map =
		mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_TRUE(map != MAP_FAILED);
	ASSERT_OK(sys(munmap(map + page, page)));
	struct liveupdate_ioctl_create_session *c = (void *)map;
	c->size = (uint32_t)page + 64;
	memcpy(c->name, "scan", 5);
	/* A non-zero byte past the struct, before the unmapped page: E2BIG first. */
	map[page - 1] = 1;
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, c), E2BIG);
	/* Only zeros up to the fault: EFAULT. */
	map[page - 1] = 0;
	ASSERT_ERRNO(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, c), EFAULT);
	/* Nothing was created. */
	ASSERT_OK(create_session(dev, "scan", &s));
	/* The kind of session comes before the struct: FINISH on an outgoing session is
	 * EINVAL even when its struct would be E2BIG or EFAULT. */
	struct liveupdate_session_finish *f = (void *)(map + page - 8);
	f->size = 72;
	f->reserved = 0;
	ASSERT_ERRNO(ioctl(s, LIVEUPDATE_SESSION_FINISH, f), EINVAL);
	munmap(map, page);
	close(s);
	close(dev);
}

PRELOAD_TEST(other_ioctls_on_luo_fds_are_the_kernels)
{
	int dev = ASSERT_OK(dev_open()), s, n = 0;
	struct {
		uint32_t size;
		uint8_t rest[60];
	} buf = { .size = 4 };

	ASSERT_OK(create_session(dev, "other", &s));
	/* A session file has no other ioctls: FIONREAD's nr (0x1b) is outside its range. */
	ASSERT_ERRNO(ioctl(s, FIONREAD, &n), EINVAL);
	ASSERT_ERRNO(ioctl(dev, FIONREAD, &n), EINVAL);
	/* TCGETS has nr 1, the device's RETRIEVE_SESSION: the word does not match. */
	ASSERT_ERRNO(ioctl(dev, TCGETS, &buf), ENOTTY);
	ASSERT_ERRNO(ioctl(s, TCGETS, &buf), EINVAL);
	ASSERT_ERRNO(ioctl(s, FIOQSIZE, &buf), ENOTTY);
	/* The VFS's own ioctls work on any file. */
	ASSERT_OK(sys(ioctl(s, FIONCLEX)));
	ASSERT_EQ(fcntl(s, F_GETFD) & FD_CLOEXEC, 0);
	ASSERT_OK(sys(ioctl(s, FIOCLEX)));
	assert_cloexec(s);
	close(s);
	close(dev);
}

/* ---- 7. how session fds look ---- */

PRELOAD_TEST(link_text_of_session_and_device)
{
	char path[64], text[256], want[128];
	int dev = ASSERT_OK(dev_open()), s;
	ssize_t n;

	ASSERT_OK(create_session(dev, "linked name", &s));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", s);
	n = readlink(path, text, sizeof(text) - 1);
	ASSERT_TRUE(n > 0);
	text[n] = 0;
	snprintf(want, sizeof(want),
		 profile_proposed() ? "luo_session:[%s]" : "anon_inode:[luo_session] %s",
		 "linked name");
	ASSERT_STREQ(text, want);
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), dev);
	n = readlink(path, text, sizeof(text) - 1);
	ASSERT_TRUE(n > 0);
	text[n] = 0;
	ASSERT_STREQ(text, DEV);
	/* readlink() truncates without a NUL. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", s);
	memset(text, 'z', sizeof(text));
	ASSERT_EQ(readlink(path, text, 4), 4);
	ASSERT_EQ(text[4], 'z');
	close(s);
	close(dev);
}

PRELOAD_TEST(fstatfs_of_session_and_device)
{
	int dev = ASSERT_OK(dev_open()), s;
	struct statfs sf, devfs;

	ASSERT_OK(create_session(dev, "magic", &s));
	ASSERT_OK(sys(fstatfs(s, &sf)));
	ASSERT_EQ(sf.f_type, session_magic());
	/* The device sits on /dev's filesystem. */
	ASSERT_OK(sys(fstatfs(dev, &sf)));
	ASSERT_OK(sys(statfs("/dev", &devfs)));
	ASSERT_EQ(sf.f_type, devfs.f_type);
	close(s);
	close(dev);
}

PRELOAD_TEST(fstat_of_sessions)
{
	int dev = ASSERT_OK(dev_open()), a, b;
	struct stat sa, sd, sb;

	ASSERT_OK(create_session(dev, "same-a", &a));
	ASSERT_OK(create_session(dev, "same-b", &b));
	int d = ASSERT_OK(sys(fcntl(a, F_DUPFD_CLOEXEC, 0)));
	ASSERT_OK(sys(fstat(a, &sa)));
	ASSERT_OK(sys(fstat(d, &sd)));
	ASSERT_OK(sys(fstat(b, &sb)));
	ASSERT_TRUE(sa.st_dev == sd.st_dev && sa.st_ino == sd.st_ino);
	ASSERT_FALSE(S_ISSOCK(sa.st_mode));
	if (profile_proposed()) {
		/* One inode per session. */
		ASSERT_FALSE(sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino);
	} else {
		/* Mainline: every session is the anonymous inode an eventfd has too. */
		int e = ASSERT_OK(sys(eventfd(0, EFD_CLOEXEC)));
		struct stat se;

		ASSERT_OK(sys(fstat(e, &se)));
		close(e);
		ASSERT_TRUE(sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino);
		ASSERT_TRUE(sa.st_dev == se.st_dev && sa.st_ino == se.st_ino);
		ASSERT_EQ(sa.st_mode, se.st_mode);
	}
	close(d);
	close(a);
	close(b);
	close(dev);
}

PRELOAD_TEST(session_fd_flags)
{
	int dev = ASSERT_OK(dev_open()), s;

	ASSERT_OK(create_session(dev, "flags", &s));
	ASSERT_EQ(fcntl(s, F_GETFL), O_RDWR);
	assert_cloexec(s);
	close(s);
	close(dev);
}

PRELOAD_TEST(read_write_seek_mmap_poll_on_luo_fds)
{
	int dev = ASSERT_OK(dev_open()), s;
	char c = 'x';

	ASSERT_OK(create_session(dev, "io", &s));
	/* No read, write, llseek or mmap operations: the VFS's answers. */
	ASSERT_ERRNO(read(s, &c, 1), EINVAL);
	ASSERT_ERRNO(write(s, &c, 1), EINVAL);
	ASSERT_ERRNO(pread(s, &c, 1, 0), ESPIPE);
	ASSERT_ERRNO(lseek(s, 0, SEEK_SET), ESPIPE);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, s, 0) == MAP_FAILED);
	ASSERT_EQ(errno, ENODEV);
	/* A copy of the fd is the same file. */
	int d = ASSERT_OK(sys(dup(s)));
	ASSERT_ERRNO(read(d, &c, 1), EINVAL);
	close(d);
	ASSERT_ERRNO(read(dev, &c, 1), EINVAL);
	ASSERT_ERRNO(write(dev, &c, 1), EINVAL);
	ASSERT_ERRNO(pread(dev, &c, 1, 0), EINVAL);
	ASSERT_ERRNO(lseek(dev, 0, SEEK_CUR), ESPIPE);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, dev, 0) == MAP_FAILED);
	ASSERT_EQ(errno, ENODEV);
	/* No poll operation: always readable and writable, never waits. */
	int p[2];
	ASSERT_OK(sys(pipe2(p, O_CLOEXEC)));
	struct pollfd pfd[3] = { { .fd = s, .events = POLLIN | POLLOUT | POLLPRI },
				 { .fd = p[0], .events = POLLIN },
				 { .fd = dev, .events = POLLIN } };
	ASSERT_EQ(poll(pfd, 3, -1), 2);
	ASSERT_EQ(pfd[0].revents, POLLIN | POLLOUT);
	ASSERT_EQ(pfd[1].revents, 0);
	ASSERT_EQ(pfd[2].revents, POLLIN);
	ASSERT_EQ(pfd[0].fd, s);
	close(p[0]);
	close(p[1]);
	close(s);
	close(dev);
}

/* ---- 5. which files a handler takes ---- */

PRELOAD_TEST(preserve_handler_set)
{
	int dev = ASSERT_OK(dev_open()), s, other, p[2], sp[2];
	int m = memfd_with("m");
	int e = ASSERT_OK(sys(eventfd(0, EFD_CLOEXEC)));
	/* luo's extra handlers exist in the proposed profile only. */
	int extra = profile_proposed() ? 0 : -ENOENT;
	uint64_t t = 0;

	ASSERT_OK(sys(pipe2(p, O_CLOEXEC)));
	ASSERT_OK(sys(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp)));
	ASSERT_OK(create_session(dev, "handlers", &s));
	ASSERT_OK(create_session(dev, "handlers-other", &other));
	ASSERT_OK(preserve(s, m, t++));
	/* A token in use is EEXIST before the file is looked at. */
	ASSERT_ERR(preserve(s, p[0], 0), -EEXIST);
	ASSERT_ERR(preserve(s, p[0], t++), extra);
	ASSERT_ERR(preserve(s, sp[0], t++), extra);
	ASSERT_ERR(preserve(s, e, t++), extra);
	/* No handler takes a session fd or the device. */
	ASSERT_ERR(preserve(s, other, t++), -ENOENT);
	ASSERT_ERR(preserve(s, dev, t++), -ENOENT);
	/* Unlinked files on tmpfs are shmem files, as memfds are. */
	int tmp = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (tmp >= 0) {
		ASSERT_OK(preserve(s, tmp, t++));
		close(tmp);
	}
	char path[] = "/dev/shm/luo-conformance-XXXXXX";
	int un = mkostemp(path, O_CLOEXEC);
	if (un >= 0) {
		/* Linked, it is not accepted; unlinked, it is. */
		ASSERT_ERR(preserve(s, un, t++), extra);
		unlink(path);
		if (!profile_proposed())
			ASSERT_OK(preserve(s, un, t++));
		close(un);
	}
	close(m);
	close(e);
	close(p[0]);
	close(p[1]);
	close(sp[0]);
	close(sp[1]);
	close(other);
	close(s);
	close(dev);
}

/* ---- 6. a preserved memfd ---- */

PRELOAD_TEST(preserved_memfd_size_is_frozen)
{
	int dev = ASSERT_OK(dev_open()), s, m = memfd_with("abcd");

	ASSERT_OK(create_session(dev, "frozen", &s));
	ASSERT_OK(preserve(s, m, 1));
	/* While preserved, no size change: EPERM from ftruncate, fallocate, a write past the end. */
	ASSERT_ERRNO(ftruncate(m, 8), EPERM);
	ASSERT_ERRNO(ftruncate(m, 2), EPERM);
	ASSERT_OK(sys(ftruncate(m, 4)));
	ASSERT_ERRNO(fallocate(m, 0, 0, 8192), EPERM);
	ASSERT_ERRNO(pwrite(m, "x", 1, 4), EPERM);
	ASSERT_EQ(lseek(m, 0, SEEK_END), 4);
	ASSERT_ERRNO(write(m, "x", 1), EPERM);
	/* Writes inside the file are fine; one reaching past the end from the last
	 * page is refused whole, as the kernel writes and refuses page by page. */
	ASSERT_EQ(pwrite(m, "xy", 2, 0), 2);
	ASSERT_ERRNO(pwrite(m, "12345678", 8, 0), EPERM);
	ASSERT_OK(sys((int)lseek(m, 2, SEEK_SET)));
	ASSERT_ERRNO(write(m, "345", 3), EPERM);
	char back[5] = { 0 };
	ASSERT_EQ(pread(m, back, 4, 0), 4);
	ASSERT_STREQ(back, "xycd");
	ASSERT_EQ(fcntl(m, F_GETFL) & O_ACCMODE, O_RDWR);
	struct stat st;
	ASSERT_OK(sys(fstat(m, &st)));
	ASSERT_EQ(st.st_size, 4);
	/* Closing the session unpreserves the file: it may grow again. */
	close(s);
	ASSERT_OK(sys(ftruncate(m, 8)));
	ASSERT_EQ(pwrite(m, "z", 1, 8), 1);
	close(m);
	close(dev);
}

TEST_MAIN(TEST_CASE(device_is_a_character_device), TEST_CASE(second_open_in_same_process_is_ebusy),
	  TEST_CASE(second_open_from_other_process_is_ebusy), TEST_CASE(close_frees_the_device),
	  TEST_CASE(holder_death_frees_the_device), TEST_CASE(device_close_keeps_sessions),
	  TEST_CASE(device_fd_cloexec_as_requested), TEST_CASE(no_luod_means_no_device),
	  TEST_CASE(create_duplicate_name_is_eexist), TEST_CASE(create_empty_name_is_einval),
	  TEST_CASE(create_unterminated_name_is_einval), TEST_CASE(create_name_of_63_bytes_is_ok),
	  TEST_CASE(create_name_of_64_bytes_is_einval),
	  TEST_CASE(create_ignores_bytes_after_nul_and_takes_any_byte),
	  TEST_CASE(session_fds_are_cloexec), TEST_CASE(two_thousand_sessions),
	  TEST_CASE(retrieve_unknown_session_is_enoent),
	  TEST_CASE(five_hundred_files_in_one_session),
	  TEST_CASE(preserve_same_token_is_eexist_and_tokens_are_per_session),
	  TEST_CASE(preserve_same_memfd_other_token_is_ebusy),
	  TEST_CASE(preserve_same_memfd_other_session_is_ebusy),
	  TEST_CASE(preserve_dup_of_preserved_memfd_is_ebusy),
	  TEST_CASE(preserve_reopened_memfd_is_ebusy),
	  TEST_CASE(closing_outgoing_session_unpreserves_its_files),
	  TEST_CASE(preserve_dev_null_is_enoent), TEST_CASE(preserve_closed_or_opath_fd_is_ebadf),
	  TEST_CASE(retrieve_fd_and_finish_on_outgoing_are_einval),
	  TEST_CASE(reserved_fields_must_be_zero), TEST_CASE(short_size_is_einval),
	  TEST_CASE(larger_size_with_zeros_is_accepted),
	  TEST_CASE(nonzero_byte_past_struct_is_e2big),
	  TEST_CASE(luod_create_flags_are_unreachable), TEST_CASE(bad_pointer_is_efault),
	  TEST_CASE(session_command_on_device_is_einval),
	  TEST_CASE(device_command_on_session_is_einval), TEST_CASE(unknown_nr_is_einval),
	  TEST_CASE(size_or_direction_bits_are_enotty),
	  TEST_CASE(luo_ioctl_on_other_fd_passes_through), TEST_CASE(errno_untouched_on_success),
	  TEST_CASE(size_is_read_before_the_command_word),
	  TEST_CASE(trailing_bytes_are_scanned_in_order),
	  TEST_CASE(other_ioctls_on_luo_fds_are_the_kernels),
	  TEST_CASE(link_text_of_session_and_device), TEST_CASE(fstatfs_of_session_and_device),
	  TEST_CASE(fstat_of_sessions), TEST_CASE(session_fd_flags),
	  TEST_CASE(read_write_seek_mmap_poll_on_luo_fds), TEST_CASE(preserve_handler_set),
	  TEST_CASE(preserved_memfd_size_is_frozen))
