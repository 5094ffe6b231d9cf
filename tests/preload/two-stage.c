/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the kernel's two-stage live update flow under luo-preload.so
 *
 * As with a real kexec: stage 1, a kernel-uAPI program under the shim,
 * creates sessions, preserves memfds with data, and leaves a child holding
 * the session fds; `luoctl reboot` plays the kexec; stage 2, a new program
 * under the shim, retrieves the sessions and files, checks the bytes, the
 * O_CLOEXEC flags and the kernel's rules for incoming sessions, and
 * finishes.  The negative control lets the holder die before the reboot:
 * stage 2 must find nothing.
 *
 * Each case runs in the test runner's process (no shim there): it starts
 * luod, runs the stages as this program re-executed with `--stage NAME`
 * under the shim, and releases the holder at the end through a pipe whose
 * read end only the holder keeps.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "luo/uapi.h"
#include "preload-test.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define HOLD_FD_ENV "LUO_TEST_HOLD_FD"

/* ---- the uAPI, as a kernel program uses it ---- */

/* A memfd holding "<name>:<token>" repeated to len bytes. */
static int make_memfd(const char *name, uint64_t token, size_t len)
{
	char unit[96];
	int fd = ASSERT_OK(memfd_create("two-stage", MFD_CLOEXEC));
	int n = snprintf(unit, sizeof(unit), "%s:%" PRIu64 ";", name, token);

	for (size_t off = 0; off < len; off += (size_t)n)
		ASSERT_EQ(write(fd, unit, MIN((size_t)n, len - off)),
			  (ssize_t)MIN((size_t)n, len - off));
	return fd;
}

static void check_memfd(int fd, const char *name, uint64_t token, size_t len)
{
	char unit[96], buf[4096];
	int n = snprintf(unit, sizeof(unit), "%s:%" PRIu64 ";", name, token);
	size_t got = 0;
	ssize_t k;

	while ((k = pread(fd, buf, sizeof(buf), (off_t)got)) > 0) {
		for (ssize_t i = 0; i < k; i++)
			if (buf[i] != unit[(got + (size_t)i) % (size_t)n])
				test_fail_at(__FILE__, __LINE__,
					     "%s token %" PRIu64 ": byte %zu differs", name, token,
					     got + (size_t)i);
		got += (size_t)k;
	}
	ASSERT_EQ(got, len);
}

/* ---- the scenarios: what stage 1 builds and stage 2 expects ---- */

struct scenario {
	const char *name;
	unsigned n_sessions;
	unsigned
		files_per_session; /* session i has (i % 3 == 1 ? 0 : files_per_session) if sparse */
	bool sparse;		   /* some sessions empty */
	size_t bytes;		   /* per memfd */
	bool holder_dies;	   /* the negative control */
};

static const struct scenario scenarios[] = {
	{ "one-session", 1, 1, false, 100000, false },
	{ "several-with-empty", 6, 3, true, 5000, false },
	{ "two-thousand-sessions", 2000, 1, false, 16, false },
	{ "five-hundred-files", 1, 500, false, 64, false },
	{ "holder-dies", 3, 2, false, 100, true },
};

static const struct scenario *scenario_find(const char *name)
{
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (strcmp(scenarios[i].name, name) == 0)
			return &scenarios[i];
	return NULL;
}

static unsigned files_in(const struct scenario *s, unsigned i)
{
	return s->sparse && i % 3 == 1 ? 0 : s->files_per_session;
}

static void session_name(const struct scenario *s, unsigned i, char *buf, size_t size)
{
	snprintf(buf, size, "%s-%u", s->name, i);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Stage 1: build the sessions, fork the holder, exit. */
static int stage1(const struct scenario *s)
{
	char name[64];
	int dev, hold = -1;
	const char *env = getenv(HOLD_FD_ENV);

	if (!preload_loaded())
		test_fail_at(__FILE__, __LINE__, "luo-preload.so is not loaded");
	if (env)
		hold = atoi(env);
	raise_fd_limit();
	dev = ASSERT_OK(dev_open());
	for (unsigned i = 0; i < s->n_sessions; i++) {
		int sfd;

		session_name(s, i, name, sizeof(name));
		ASSERT_OK(create_session(dev, name, &sfd));
		assert_cloexec(sfd);
		for (unsigned f = 0; f < files_in(s, i); f++) {
			int m = make_memfd(name, f * 7 + 1, s->bytes);
			ASSERT_OK(preserve(sfd, m, f * 7 + 1));
			close(m);
		}
		/* sfd stays open: the holder inherits it. */
	}
	close(dev);

	pid_t pid = fork();
	if (pid < 0)
		test_fail_at(__FILE__, __LINE__, "fork: %m");
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		char c;

		/* Let go of the test runner's output pipes: only the session fds matter. */
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (s->holder_dies || hold < 0)
			_exit(0);
		while (read(hold, &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	if (s->holder_dies) {
		/* The negative control: the holder (and we) are gone before the reboot. */
		int status;
		waitpid(pid, &status, 0);
	}
	return 0;
}

/* Stage 2: a new program retrieves, verifies and finishes, with the kernel's incoming rules. */
static int stage2(const struct scenario *s)
{
	char name[64];
	int dev;

	if (!preload_loaded())
		test_fail_at(__FILE__, __LINE__, "luo-preload.so is not loaded");
	raise_fd_limit();
	dev = ASSERT_OK(dev_open());
	for (unsigned i = 0; i < s->n_sessions; i++) {
		int sfd, again, fd, kept = -1;

		session_name(s, i, name, sizeof(name));
		if (s->holder_dies) {
			ASSERT_ERR(retrieve_session(dev, name, &sfd), -ENOENT);
			continue;
		}
		ASSERT_OK(retrieve_session(dev, name, &sfd));
		assert_cloexec(sfd);
		/* Retrieved once: a second retrieve is EINVAL while it is held. */
		ASSERT_ERR(retrieve_session(dev, name, &again), -EINVAL);
		/* Incoming sessions take no new files. */
		int m = make_memfd(name, 0, 1);
		ASSERT_ERR(preserve(sfd, m, 999999), -EINVAL);
		/* ... and the kind is checked before the size: EINVAL even with E2BIG bytes. */
		struct {
			struct liveupdate_session_preserve_fd p;
			uint64_t extra;
		} big = { .p = { .size = sizeof(big), .fd = m, .token = 999998 }, .extra = 1 };
		ASSERT_ERR(sys(ioctl(sfd, LIVEUPDATE_SESSION_PRESERVE_FD, &big)), -EINVAL);
		close(m);
		/* An incoming name is free in the outgoing namespace. */
		int out;
		if (i == 0) {
			ASSERT_OK(create_session(dev, name, &out));
			close(out);
		}
		ASSERT_ERR(retrieve_fd(sfd, 424242, &fd), -ENOENT);
		for (unsigned f = 0; f < files_in(s, i); f++) {
			uint64_t token = f * 7 + 1;

			/* Retrieve only every other file of big sessions: finish discards the rest. */
			if (files_in(s, i) > 10 && f % 2)
				continue;
			ASSERT_OK(retrieve_fd(sfd, token, &fd));
			assert_cloexec(fd);
			/* Mainline's memfd handler: O_RDWR | O_LARGEFILE (the kernel's 0100000),
			 * at the position it had when preserved (stage 1 wrote it all). */
			ASSERT_EQ(fcntl(fd, F_GETFL), O_RDWR | 0100000);
			ASSERT_EQ(lseek(fd, 0, SEEK_CUR), (off_t)s->bytes);
			check_memfd(fd, name, token, s->bytes);
			int fd2;
			ASSERT_OK(retrieve_fd(sfd, token, &fd2));
			/* The same open file again: shared offset. */
			ASSERT_OK(sys((int)lseek(fd, 3, SEEK_SET)));
			ASSERT_EQ(lseek(fd2, 0, SEEK_CUR), 3);
			close(fd2);
			if (i == 0 && f == 0 && kept < 0)
				kept = fd;
			else
				close(fd);
		}
		int out2 = -1;
		if (kept >= 0) {
			/* A retrieved file not yet finished is still LUO's: EBUSY elsewhere. */
			ASSERT_OK(create_session(dev, "reuse", &out2));
			ASSERT_ERR(preserve(out2, kept, 1), -EBUSY);
		}
		ASSERT_OK(finish(sfd));
		if (kept >= 0) {
			/* Finished: the file stays valid in our hands and is free to preserve again. */
			check_memfd(kept, name, 1, s->bytes);
			ASSERT_OK(preserve(out2, kept, 1));
			close(out2);
			close(kept);
			kept = -1;
		}
		if (files_in(s, i) > 0)
			ASSERT_ERR(retrieve_fd(sfd, 1, &fd), -ENOENT);
		ASSERT_OK(finish(sfd));
		/* Still retrieved until closed. */
		ASSERT_ERR(retrieve_session(dev, name, &again), -EINVAL);
		close(sfd);
		/* Closed after finish: the name is gone. */
		ASSERT_ERR(retrieve_session(dev, name, &again), -ENOENT);
	}
	close(dev);
	return 0;
}

/* ---- the cases, in the test runner's process ---- */

static void run_two_stage(const char *scenario)
{
	const struct scenario *s = scenario_find(scenario);
	char luod[512], luoctl[512], self[512], fdstr[16];
	struct test_luod d;
	int hold[2], r;
	ssize_t n;

	ASSERT_TRUE(s);
	preload_need_luod(luod, sizeof(luod));
	test_build_path("src/cli/luoctl", luoctl, sizeof(luoctl));
	if (access(luoctl, X_OK) < 0)
		test_skip("luoctl is not built (%s)", luoctl);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	ASSERT_TRUE(n > 0);
	self[n] = 0;
	test_need_fds((long)s->n_sessions * 2 + 256);

	test_luod_start(&d, NULL);
	ASSERT_OK(sys(pipe2(hold, O_CLOEXEC)));
	snprintf(fdstr, sizeof(fdstr), "%d", hold[0]);
	setenv(HOLD_FD_ENV, fdstr, 1);

	r = preload_wait(preload_spawn(
		(const char *const[]){ self, "--stage", "1", scenario, NULL }, hold[0]));
	close(hold[0]);
	if (r != 0) {
		close(hold[1]);
		test_luod_stop(&d);
		test_fail_at(__FILE__, __LINE__, "stage 1 exited with %d", r);
	}
	/* No pause when the holder died: its fds closed with it, and the reboot
	 * must find its sessions gone, as a kexec would. */
	r = test_run_command((const char *const[]){ luoctl, "--socket", d.socket, "reboot", NULL });
	if (r != 0) {
		close(hold[1]);
		test_luod_stop(&d);
		test_fail_at(__FILE__, __LINE__, "luoctl reboot exited with %d", r);
	}

	r = preload_wait(
		preload_spawn((const char *const[]){ self, "--stage", "2", scenario, NULL }, -1));
	close(hold[1]); /* releases the holder */
	test_luod_stop(&d);
	if (r != 0)
		test_fail_at(__FILE__, __LINE__, "stage 2 exited with %d", r);
}

TEST(one_session_with_one_memfd)
{
	run_two_stage("one-session");
}

TEST(several_sessions_including_empty_ones)
{
	run_two_stage("several-with-empty");
}

TEST(two_thousand_sessions)
{
	run_two_stage("two-thousand-sessions");
}

TEST(five_hundred_files)
{
	run_two_stage("five-hundred-files");
}

TEST(holder_dead_before_reboot_leaves_nothing)
{
	run_two_stage("holder-dies");
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
		TEST_CASE(one_session_with_one_memfd),
		TEST_CASE(several_sessions_including_empty_ones),
		TEST_CASE(two_thousand_sessions),
		TEST_CASE(five_hundred_files),
		TEST_CASE(holder_dead_before_reboot_leaves_nothing),
	};

	if (argc == 4 && strcmp(argv[1], "--stage") == 0) {
		const struct scenario *s = scenario_find(argv[3]);

		if (!s)
			return 2;
		return strcmp(argv[2], "1") == 0 ? stage1(s) : stage2(s);
	}
	return test_main(cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
}
