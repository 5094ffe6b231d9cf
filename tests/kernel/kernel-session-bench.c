/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: how long the kernel takes to create, hold and retrieve many sessions
 *
 * A small static program for a QEMU guest (the tests/kernel/bench suite,
 * run by tests/kernel/session-bench.sh on the plain and the patched kernel).
 * It talks to /dev/liveupdate with nothing but ioctl(), so that what it
 * measures is the kernel:
 *
 *   kernel-session-bench create N     create N sessions, then close them all
 *   kernel-session-bench hold N       create N sessions and leave a holder
 *                                     process with them open for the kexec
 *   kernel-session-bench retrieve N   after the kexec: retrieve, finish and
 *                                     close the N sessions
 *
 * Output is TAP; the times are in the descriptions and in "# bench:" lines
 * (STEP N MICROSECONDS) for the script to collect.  Nothing is asserted
 * about the times: a result fails only when a call fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "luo/uapi.h"

#define DEV "/dev/liveupdate"

static int tap_n;

static void tap(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tap(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s %d - ", ok ? "ok" : "not ok", ++tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void name_of(char name[LIVEUPDATE_SESSION_NAME_LENGTH], long i)
{
	snprintf(name, LIVEUPDATE_SESSION_NAME_LENGTH, "bench-%06ld", i);
}

static int create_one(int dev, long i)
{
	struct liveupdate_ioctl_create_session a = { .size = sizeof(a) };

	name_of((char *)a.name, i);
	if (ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &a) < 0)
		return -errno;
	return a.fd;
}

static int retrieve_one(int dev, long i)
{
	struct liveupdate_ioctl_retrieve_session a = { .size = sizeof(a) };

	name_of((char *)a.name, i);
	if (ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &a) < 0)
		return -errno;
	return a.fd;
}

static int finish_one(int s)
{
	struct liveupdate_session_finish a = { .size = sizeof(a) };

	return ioctl(s, LIVEUPDATE_SESSION_FINISH, &a) < 0 ? -errno : 0;
}

static void report(const char *step, long n, uint64_t us)
{
	printf("# bench: %s %ld %" PRIu64 "\n", step, n, us);
	tap(true,
	    "%s %ld sessions: %" PRIu64 ".%03" PRIu64 " ms (%" PRIu64 ".%03" PRIu64
	    " us per session)",
	    step, n, us / 1000, us % 1000, us / (uint64_t)n, us * 1000 / (uint64_t)n % 1000);
}

/* Creates sessions 0..n-1 into fds[]; a failure is reported and ends the program. */
static void create_all(int dev, int *fds, long n, const char *step)
{
	uint64_t t0 = now_us();

	for (long i = 0; i < n; i++) {
		fds[i] = create_one(dev, i);
		if (fds[i] < 0) {
			tap(false, "create session %ld of %ld: %s", i, n, strerror(-fds[i]));
			exit(1);
		}
	}
	report(step, n, now_us() - t0);
}

static int do_create(int dev, int *fds, long n)
{
	uint64_t t0;

	create_all(dev, fds, n, "create");
	t0 = now_us();
	for (long i = 0; i < n; i++)
		close(fds[i]);
	report("close", n, now_us() - t0);
	return 0;
}

static int do_hold(int dev, int *fds, long n)
{
	pid_t pid;

	create_all(dev, fds, n, "create to hold");
	close(dev);
	pid = fork();
	if (pid < 0) {
		tap(false, "fork the holder: %s", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		/* The holder keeps the sessions open until kexec -e. */
		setsid();
		close(STDIN_FILENO);
		close(STDOUT_FILENO);
		close(STDERR_FILENO);
		for (;;)
			pause();
	}
	tap(true, "a holder (pid %d) keeps %ld sessions open for the kexec", (int)pid, n);
	return 0;
}

static int do_retrieve(int dev, int *fds, long n)
{
	uint64_t t0 = now_us();
	int r;

	for (long i = 0; i < n; i++) {
		fds[i] = retrieve_one(dev, i);
		if (fds[i] < 0) {
			tap(false, "retrieve session %ld of %ld: %s", i, n, strerror(-fds[i]));
			return 1;
		}
	}
	report("retrieve", n, now_us() - t0);
	t0 = now_us();
	for (long i = 0; i < n; i++) {
		r = finish_one(fds[i]);
		if (r < 0) {
			tap(false, "finish session %ld of %ld: %s", i, n, strerror(-r));
			return 1;
		}
		close(fds[i]);
	}
	report("finish and close", n, now_us() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	char *end;
	int dev, r;
	long n;
	int *fds;

	if (argc != 3) {
		fprintf(stderr, "usage: %s create|hold|retrieve N\n", argv[0]);
		return 2;
	}
	errno = 0;
	n = strtol(argv[2], &end, 10);
	if (errno || *end || n <= 0 || n > 1000000) {
		fprintf(stderr, "%s: N must be a number from 1 to 1000000, not '%s'\n", argv[0],
			argv[2]);
		return 2;
	}
	rl.rlim_cur = rl.rlim_max = (rlim_t)n + 64;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		tap(false, "RLIMIT_NOFILE to %ld: %s", n + 64, strerror(errno));
		return 1;
	}
	fds = calloc((size_t)n, sizeof(*fds));
	if (!fds) {
		tap(false, "memory for %ld fds", n);
		return 1;
	}
	dev = open(DEV, O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		tap(false, "open %s: %s", DEV, strerror(errno));
		return 1;
	}
	if (strcmp(argv[1], "create") == 0)
		r = do_create(dev, fds, n);
	else if (strcmp(argv[1], "hold") == 0)
		r = do_hold(dev, fds, n);
	else if (strcmp(argv[1], "retrieve") == 0)
		r = do_retrieve(dev, fds, n);
	else {
		fprintf(stderr, "%s: unknown step '%s' (create, hold or retrieve)\n", argv[0],
			argv[1]);
		r = 2;
	}
	printf("1..%d\n", tap_n);
	return r;
}
