/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: micro-benchmark of the engine's hot paths
 *
 * Measures, per operation and with the built-in handlers luod registers:
 * preserving an eventfd, retrieving it after a handover, the identity index
 * (add and lookup) with N files indexed, and decoding a state blob (per
 * file, the fds taken over as luod does after its re-exec).  It also times
 * the system calls those paths are made of, so that a change can be judged
 * against what it saves.  Nothing builds it; build it by hand against a
 * build directory's static libraries:
 *
 *   cc -O2 -std=gnu11 -I. -Iinclude -Isrc -o /tmp/engine-speed tools/engine-speed.c \
 *      build-perf/src/core/libcore.a build-perf/src/basic/libbasic.a -lfdt
 *   /tmp/engine-speed [n_files]     (default 19000: the fds must fit RLIMIT_NOFILE)
 *
 * Lifecycle: one run, everything freed before exit; prints one line per figure.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/engine-internal.h"
#include "core/state.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *what, double seconds, size_t n)
{
	printf("%-40s %10.3f us/op  (%zu ops, %.3f s)\n", what, seconds * 1e6 / (double)n, n,
	       seconds);
}

#define CHECK(expr)                                                                                \
	do {                                                                                       \
		long _r = (long)(expr);                                                            \
		if (_r < 0) {                                                                      \
			fprintf(stderr, "%s:%d: %s = %ld\n", __FILE__, __LINE__, #expr, _r);       \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static void bench_syscalls(void)
{
	int a = eventfd(0, EFD_CLOEXEC), b = eventfd(0, EFD_CLOEXEC);
	pid_t pid = getpid();
	const size_t n = 100000;
	char path[64], buf[512];
	struct stat st;
	double t;

	t = now();
	for (size_t i = 0; i < n; i++)
		syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b);
	report("syscall kcmp", now() - t, n);
	t = now();
	for (size_t i = 0; i < n; i++)
		(void)getpid();
	report("syscall getpid", now() - t, n);
	t = now();
	for (size_t i = 0; i < n; i++)
		fstat(a, &st);
	report("syscall fstat", now() - t, n);
	t = now();
	for (size_t i = 0; i < n; i++)
		fcntl(a, F_GETFL);
	report("syscall fcntl F_GETFL", now() - t, n);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", a);
	t = now();
	for (size_t i = 0; i < n; i++)
		(void)!readlink(path, buf, sizeof(buf));
	report("readlink /proc/self/fd/N", now() - t, n);
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", a);
	t = now();
	for (size_t i = 0; i < n; i++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		(void)!read(fd, buf, sizeof(buf));
		close(fd);
	}
	report("open+read+close /proc/self/fdinfo/N", now() - t, n);
	close(a);
	close(b);
}

static const uint8_t *name_field(uint8_t field[LUO_NAME_FIELD], size_t i)
{
	memset(field, 0, LUO_NAME_FIELD);
	snprintf((char *)field, LUO_NAME_FIELD, "speed-%zu", i);
	return field;
}

static void bench_engine(size_t n)
{
	uint8_t field[LUO_NAME_FIELD];
	luo_engine *e = NULL, *d = NULL;
	luo_session *s = NULL;
	int *fds = calloc(n, sizeof(*fds));
	void *blob = NULL;
	size_t size = 0;
	double t;

	CHECK(luo_engine_new(&e));
	CHECK(luo_engine_add_default_handlers(e));
	CHECK(luo_engine_create_session(e, name_field(field, 0), 0, 1000, &s));
	for (size_t i = 0; i < n; i++) {
		fds[i] = eventfd((unsigned)i, EFD_CLOEXEC | EFD_NONBLOCK);
		CHECK(fds[i]);
	}
	t = now();
	for (size_t i = 0; i < n; i++) {
		CHECK(luo_session_preserve_fd(s, i, fds[i]));
		/* The engine holds its own dup: ours can go, leaving room for more files. */
		close(fds[i]);
	}
	report("preserve eventfd (engine, up to n files)", now() - t, n);

	/* The EBUSY check of a dup of the engine's fd: the index looked up, n files in it. */
	t = now();
	LIST_FOREACH (node, &s->files) {
		struct luo_file *f = list_entry(node, struct luo_file, order);
		int fd = fcntl(f->hf.fd, F_DUPFD_CLOEXEC, 3);

		if (luo_session_preserve_fd(s, n + f->hf.token, fd) != -EBUSY)
			exit(1);
		close(fd);
	}
	report("preserve refused EBUSY (+dup, n files)", now() - t, n);

	/* The index alone: remove and re-add every file, n files indexed. */
	t = now();
	LIST_FOREACH (node, &s->files) {
		struct luo_file *f = list_entry(node, struct luo_file, order);

		luo_identity_remove(e, f);
		CHECK(luo_identity_add(e, f));
	}
	report("identity remove + add (n files)", now() - t, n);
	t = now();
	LIST_FOREACH (node, &s->files) {
		struct luo_file *f = list_entry(node, struct luo_file, order);

		if (!luo_identity_contains(e, &f->id, f->hf.fd))
			exit(1);
	}
	report("identity contains (n files)", now() - t, n);

	CHECK(luo_engine_handover_session(e, s));
	CHECK(luo_state_encode(e, NULL, &blob, &size));
	/* Borrowing the fds, the decoder neither checks nor indexes them. */
	CHECK(luo_engine_new(&d));
	CHECK(luo_engine_add_default_handlers(d));
	t = now();
	CHECK(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, NULL));
	report("decode, fds borrowed (per file)", now() - t, n);
	luo_engine_free(d);
	CHECK(luo_engine_new(&d));
	CHECK(luo_engine_add_default_handlers(d));
	t = now();
	CHECK(luo_state_decode(d, blob, size, 0, NULL));
	report("decode (per file)", now() - t, n);
	free(blob);
	e->borrowed_fds = true;
	luo_engine_free(e);

	CHECK(luo_engine_retrieve_session(d, name_field(field, 0), 1000, &s));
	t = now();
	for (size_t i = 0; i < n; i++) {
		int fd;

		CHECK(luo_session_retrieve_fd(s, i, &fd));
		close(fd);
	}
	report("retrieve eventfd (first, n files)", now() - t, n);
	t = now();
	for (size_t i = 0; i < n; i++) {
		int fd;

		CHECK(luo_session_retrieve_fd(s, i, &fd));
		close(fd);
	}
	report("retrieve eventfd (again)", now() - t, n);
	t = now();
	CHECK(luo_session_finish(s));
	report("finish (per file)", now() - t, n);
	luo_session_release(s);
	luo_engine_free(d);
	free(fds);
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 19000;
	struct rlimit rl;

	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	bench_syscalls();
	bench_engine(n);
	return 0;
}
