/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the shim in threaded and forking programs
 *
 * Kernel-uAPI programs under luo-preload.so that share the device fd among
 * threads issuing ioctls at once, use session fds inherited over fork() (the
 * parent still issuing commands on the same socket), over execve(), and
 * received with SCM_RIGHTS: the shim never handed those out itself and must
 * recognise them as session fds all the same.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "luo/uapi.h"
#include "preload-test.h"

static int new_memfd(void)
{
	int fd = ASSERT_OK(memfd_create("threads", MFD_CLOEXEC));

	ASSERT_EQ(write(fd, "t", 1), 1);
	return fd;
}

/* ---- eight threads at once ---- */

enum { N_THREADS = 8, SESSIONS_PER_THREAD = 40, FILES_PER_SESSION = 4 };

struct worker {
	pthread_t thread;
	int dev;
	int shared_session; /* every thread also preserves into this one */
	unsigned index;
	int result;
	char failure[128];
};

static void *worker_main(void *userdata)
{
	struct worker *w = userdata;
	char name[64], back[64];

	for (unsigned i = 0; i < SESSIONS_PER_THREAD; i++) {
		int s, r;

		snprintf(name, sizeof(name), "thread-%u-%u", w->index, i);
		r = create_session(w->dev, name, &s);
		if (r < 0) {
			snprintf(w->failure, sizeof(w->failure), "create %s: %d", name, r);
			w->result = r;
			return NULL;
		}
		for (unsigned f = 0; f < FILES_PER_SESSION && r >= 0; f++) {
			int m = memfd_create("threads", MFD_CLOEXEC);

			r = m < 0 ? -errno : preserve(s, m, f);
			if (r >= 0)
				r = preserve(w->shared_session, m,
					     (uint64_t)w->index << 32 | i << 8 | f) == -EBUSY
					    ? 0
					    : -EPROTO; /* same memfd twice must be EBUSY */
			if (m >= 0)
				close(m);
		}
		if (r >= 0)
			r = get_name(s, back);
		if (r >= 0 && strcmp(back, name) != 0)
			r = -EPROTO;
		if (r < 0) {
			snprintf(w->failure, sizeof(w->failure), "%s: %d", name, r);
			w->result = r;
			close(s);
			return NULL;
		}
		/* Keep every fourth session open, abort the rest at once. */
		if (i % 4)
			close(s);
	}
	return NULL;
}

PRELOAD_TEST(eight_threads_create_and_preserve_at_once)
{
	struct worker w[N_THREADS];
	int dev = ASSERT_OK(dev_open()), shared;

	test_need_fds(N_THREADS * SESSIONS_PER_THREAD + 64);
	ASSERT_OK(create_session(dev, "shared", &shared));
	for (unsigned i = 0; i < N_THREADS; i++) {
		w[i] = (struct worker){ .dev = dev, .shared_session = shared, .index = i };
		ASSERT_EQ(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
	}
	for (unsigned i = 0; i < N_THREADS; i++)
		ASSERT_EQ(pthread_join(w[i].thread, NULL), 0);
	for (unsigned i = 0; i < N_THREADS; i++)
		if (w[i].result < 0)
			test_fail_at(__FILE__, __LINE__, "thread %u: %s", i, w[i].failure);
	/* Every kept session is still there under its name: creating it again is EEXIST. */
	int s;
	ASSERT_ERR(create_session(dev, "thread-3-4", &s), -EEXIST);
	/* Close what the workers kept (every fd above the shared session is ours). */
	for (int fd = shared + 1; fd < shared + 1 + N_THREADS * SESSIONS_PER_THREAD; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			close(fd);
	close(shared);
	close(dev);
}

/* ---- fork ---- */

PRELOAD_TEST(child_uses_inherited_session_fd)
{
	int dev = ASSERT_OK(dev_open()), s;
	char name[64];

	ASSERT_OK(create_session(dev, "forked", &s));
	pid_t pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (pid == 0) {
		char back[64];
		int bad = 0;

		/* The child and the parent issue commands on the same socket at once. */
		for (int i = 0; i < 200 && !bad; i++) {
			int m = memfd_create("child", MFD_CLOEXEC);
			bad = get_name(s, back) < 0 || strcmp(back, "forked") != 0 ||
			      preserve(s, m, 1000 + i) < 0;
			close(m);
		}
		_exit(bad);
	}
	for (int i = 0; i < 200; i++) {
		int m = new_memfd();
		ASSERT_OK(get_name(s, name));
		ASSERT_STREQ(name, "forked");
		ASSERT_OK(preserve(s, m, i));
		close(m);
	}
	int status;
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The child's preservations landed in the same session. */
	int m = new_memfd();
	ASSERT_ERR(preserve(s, m, 1000), -EEXIST);
	close(m);
	close(s);
	close(dev);
}

PRELOAD_TEST(session_fd_received_with_scm_rights_is_recognised)
{
	char name[64], c, control[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = sizeof(control) };
	struct statfs sf;
	int sp[2], got, status;

	ASSERT_OK(sys(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp)));
	pid_t pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (pid == 0) {
		/* The session is made here, so the parent's shim has never seen it. */
		int dev = dev_open(), s = -1;

		if (dev < 0 || create_session(dev, "passed", &s) < 0)
			_exit(1);
		memset(control, 0, sizeof(control));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &s, sizeof(int));
		c = 'x';
		_exit(sendmsg(sp[1], &mh, 0) == 1 ? 0 : 1);
	}
	close(sp[1]);
	ASSERT_EQ(recvmsg(sp[0], &mh, MSG_CMSG_CLOEXEC), 1);
	close(sp[0]);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
	ASSERT_OK(get_name(got, name));
	ASSERT_STREQ(name, "passed");
	ASSERT_OK(sys(fstatfs(got, &sf)));
	ASSERT_EQ(sf.f_type, session_magic());
	close(got);
}

/* ---- exec: argv[1] "--exec-child FD" runs here, under the shim, as a new program ---- */

static int exec_child(int fd)
{
	char name[64];
	struct statfs sf;

	if (!preload_loaded())
		return 3;
	if (get_name(fd, name) < 0 || strcmp(name, "execed") != 0)
		return 4;
	if (fstatfs(fd, &sf) < 0 || sf.f_type != session_magic())
		return 5;
	return 0;
}

PRELOAD_TEST(session_fd_inherited_over_exec_is_recognised)
{
	char self[512], fdstr[16];
	int dev = ASSERT_OK(dev_open()), s;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	ASSERT_TRUE(n > 0);
	self[n] = 0;
	ASSERT_OK(create_session(dev, "execed", &s));
	close(dev);
	snprintf(fdstr, sizeof(fdstr), "%d", s);
	/* LD_PRELOAD is still set in this (inner) process's environment. */
	pid_t pid = preload_spawn((const char *const[]){ self, "--exec-child", fdstr, NULL }, s);
	ASSERT_EQ(preload_wait(pid), 0);
	close(s);
}

/* argv[1] "--exec-device FD": the device fd inherited over exec is still the device. */
static int exec_device_child(int dev)
{
	int s, flags = fcntl(dev, F_GETFD);

	if (!preload_loaded())
		return 3;
	if (flags < 0 || (flags & FD_CLOEXEC))
		return 4;
	/* The inherited fd still holds the slot. */
	if (open(DEV, O_RDWR | O_CLOEXEC) >= 0 || errno != EBUSY)
		return 5;
	if (create_session(dev, "from-exec", &s) < 0)
		return 6;
	close(s);
	return 0;
}

PRELOAD_TEST(device_fd_inherited_over_exec_is_still_the_device)
{
	char self[512], fdstr[16];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	int dev = -1;

	ASSERT_TRUE(n > 0);
	self[n] = 0;
	for (int i = 0; i < 400; i++) {
		dev = open(DEV, O_RDWR);
		if (dev >= 0 || errno != EBUSY)
			break;
		usleep(5000);
	}
	ASSERT_OK(sys(dev));
	snprintf(fdstr, sizeof(fdstr), "%d", dev);
	pid_t pid = preload_spawn((const char *const[]){ self, "--exec-device", fdstr, NULL }, dev);
	ASSERT_EQ(preload_wait(pid), 0);
	close(dev);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
		TEST_CASE(eight_threads_create_and_preserve_at_once),
		TEST_CASE(child_uses_inherited_session_fd),
		TEST_CASE(session_fd_received_with_scm_rights_is_recognised),
		TEST_CASE(session_fd_inherited_over_exec_is_recognised),
		TEST_CASE(device_fd_inherited_over_exec_is_still_the_device),
	};

	if (argc == 3 && strcmp(argv[1], "--exec-child") == 0)
		return exec_child(atoi(argv[2]));
	if (argc == 3 && strcmp(argv[1], "--exec-device") == 0)
		return exec_device_child(atoi(argv[2]));
	return test_main(cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
}
