/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_SKIP 77

static char tmpdir[256];

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	for (struct dirent *de; (de = readdir(d));)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

static void list_fds(void)
{
	DIR *d = opendir("/proc/self/fd");

	if (!d)
		return;
	for (struct dirent *de; (de = readdir(d));) {
		char path[300], target[256];
		ssize_t k;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		k = readlink(path, target, sizeof(target) - 1);
		if (k < 0)
			continue;
		target[k] = 0;
		printf("#   fd %s -> %s\n", de->d_name, target);
	}
	closedir(d);
}

/* Prints a TAP comment; every line of a multi-line message gets its own "# ". */
__attribute__((format(printf, 2, 0))) static void diag_lines(const char *prefix, const char *fmt,
							     va_list ap)
{
	char buf[8192];
	const char *p = buf;

	vsnprintf(buf, sizeof(buf), fmt, ap);
	for (;;) {
		const char *nl = strchr(p, '\n');
		int len = nl ? (int)(nl - p) : (int)strlen(p);

		if (!nl && len == 0 && p != buf)
			break;
		printf("# %s%.*s\n", p == buf ? prefix : "", len, p);
		if (!nl)
			break;
		p = nl + 1;
	}
	fflush(stdout);
}

void test_diag(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	diag_lines("", fmt, ap);
	va_end(ap);
}

void test_fail_at(const char *file, int line, const char *fmt, ...)
{
	char prefix[512];
	va_list ap;

	snprintf(prefix, sizeof(prefix), "%s:%d: ", file, line);
	va_start(ap, fmt);
	diag_lines(prefix, fmt, ap);
	va_end(ap);
	exit(1);
}

void test_skip(const char *fmt, ...)
{
	va_list ap;
	char reason[512];
	int fd;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	/* The parent reads the reason from fd 3 of the case's pipe, see run_case(). */
	fd = atoi(getenv("LUO_TEST_SKIP_FD") ? getenv("LUO_TEST_SKIP_FD") : "-1");
	if (fd >= 0) {
		(void)!write(fd, reason, strlen(reason));
	}
	exit(EXIT_SKIP);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

const char *test_tmpdir(void)
{
	if (!tmpdir[0]) {
		const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

		snprintf(tmpdir, sizeof(tmpdir), "%s/luo-test-XXXXXX", base);
		if (!mkdtemp(tmpdir))
			test_fail_at(__FILE__, __LINE__, "mkdtemp: %m");
	}
	return tmpdir;
}

bool test_is_root(void)
{
	return geteuid() == 0;
}

void test_need_fds(long n)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		test_fail_at(__FILE__, __LINE__, "getrlimit: %m");
	if ((long)rl.rlim_cur >= n)
		return;
	if ((long)rl.rlim_max < n && rl.rlim_max != RLIM_INFINITY) {
		long hard = (long)rl.rlim_max;

		rl.rlim_max = n;
		rl.rlim_cur = n;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			test_skip(
				"needs %ld fds; the RLIMIT_NOFILE hard limit is %ld and cannot be "
				"raised (%m: CAP_SYS_RESOURCE is missing)",
				n, hard);
		return;
	}
	rl.rlim_cur = n;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		test_skip("cannot raise RLIMIT_NOFILE to %ld: %m", n);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* 0 pass, 1 fail, 2 skip */
static int run_case(const struct test_case *c, unsigned timeout, char *reason, size_t reason_size)
{
	int pipefd[2], status;
	pid_t pid;
	double start = now();
	bool timed_out = false;

	reason[0] = 0;
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		snprintf(reason, reason_size, "pipe: %m");
		return 1;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		snprintf(reason, reason_size, "fork: %m");
		close(pipefd[0]);
		close(pipefd[1]);
		return 1;
	}
	if (pid == 0) {
		char buf[16];
		int before, after;

		close(pipefd[0]);
		snprintf(buf, sizeof(buf), "%d", pipefd[1]);
		setenv("LUO_TEST_SKIP_FD", buf, 1);
		setpgid(0, 0);
		before = count_fds();
		c->fn();
		fflush(stdout);
		if (tmpdir[0])
			nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		after = count_fds();
		if (after != before) {
			printf("# leaked %d fd(s): %d open before the case, %d after\n",
			       after - before, before, after);
			list_fds();
			fflush(stdout);
			_exit(1);
		}
		exit(0);
	}
	close(pipefd[1]);
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			break;
		if (now() - start > timeout) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			timed_out = true;
			break;
		}
		usleep(2000);
	}
	/* Whatever the case left running in its process group goes too. */
	kill(-pid, SIGKILL);
	ssize_t k = read(pipefd[0], reason, reason_size - 1);
	reason[k > 0 ? k : 0] = 0;
	close(pipefd[0]);
	if (timed_out) {
		snprintf(reason, reason_size, "timed out after %u s", timeout);
		return 1;
	}
	if (WIFSIGNALED(status)) {
		snprintf(reason, reason_size, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
		return 1;
	}
	if (WEXITSTATUS(status) == EXIT_SKIP)
		return 2;
	return WEXITSTATUS(status) == 0 ? 0 : 1;
}

int test_main(const struct test_case *cases, size_t n, int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;
	unsigned timeout =
		getenv("LUO_TEST_TIMEOUT") ? (unsigned)atoi(getenv("LUO_TEST_TIMEOUT")) : 60;
	size_t planned = 0, failed = 0, num = 0;

	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < n; i++)
		if (!only || strcmp(only, cases[i].name) == 0)
			planned++;
	if (planned == 0) {
		fprintf(stderr, "no test case named %s\n", only ? only : "(none)");
		return 1;
	}
	printf("TAP version 13\n1..%zu\n", planned);
	for (size_t i = 0; i < n; i++) {
		char reason[512];
		double start;
		int r;

		if (only && strcmp(only, cases[i].name) != 0)
			continue;
		num++;
		start = now();
		r = run_case(&cases[i], timeout, reason, sizeof(reason));
		if (r == 0)
			printf("ok %zu - %s # %.3f s\n", num, cases[i].name, now() - start);
		else if (r == 2) {
			printf("ok %zu - %s # SKIP %s\n", num, cases[i].name, reason);
		} else {
			printf("not ok %zu - %s%s%s\n", num, cases[i].name, reason[0] ? " # " : "",
			       reason);
			failed++;
		}
	}
	/* Under TAP the skips are in the plan; the exit code reports failures only. */
	return failed ? 1 : 0;
}
