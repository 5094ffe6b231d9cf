/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: running test cases under luo-preload.so
 *
 * A shim test is an ordinary program: its cases use open()/ioctl() on
 * /dev/liveupdate with nothing but <luo/uapi.h>.  PRELOAD_TEST(name) makes a
 * harness case that, in the test runner's process, starts a real luod, then
 * re-executes the test program itself with LD_PRELOAD set to the built
 * luo-preload.so to run just that case, and fails unless that run passes.
 * Inside, the case first checks that the shim really is loaded (its mapping
 * in /proc/self/maps), so a case can never pass without the shim.  The
 * uAPI calls the cases make (dev_open(), create_session(), ...) are here
 * too, written once for all the shim tests.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "luo/uapi.h"

#include "harness.h"
#include "luod-test.h"

/* Whether luo-preload.so is mapped into this process. */
bool preload_loaded(void);
/* Whether this process is the re-executed one (the outer run sets a marker). */
bool preload_inner(void);
/* Runs body under the shim against a fresh luod (see above). */
void preload_case(const char *name, void (*body)(void));
/* Skips the case unless the build's luod exists; returns its path. */
const char *preload_need_luod(char *buf, size_t size);
/*
 * Forks and execs argv (argv[0] a path) with the shim preloaded; stdout goes
 * to stderr so that the TAP stream stays clean.  keep_fd (or -1) stays open
 * in the child.  Returns the child's pid.
 */
pid_t preload_spawn(const char *const *argv, int keep_fd);
/* Waits for pid; returns its exit status or 128+signal. */
int preload_wait(pid_t pid);
/* Sets LD_PRELOAD (and what the sanitizer runtime needs) in this process's environment. */
void preload_setenv(void);

/*
 * The uAPI spelled out as a kernel program uses it: open() and ioctl() only,
 * each returning >= 0 or -errno.
 */
#define DEV "/dev/liveupdate"

static inline int sys(int r)
{
	return r < 0 ? -errno : r;
}

/* Opens the device, waiting out the processes of a previous case that the harness
 * killed and that may still hold it while the kernel tears them down. */
int dev_open(void);
int create_session(int dev, const char *name, int *ret_fd);
int retrieve_session(int dev, const char *name, int *ret_fd);
int preserve(int session, int fd, uint64_t token);
int retrieve_fd(int session, uint64_t token, int *ret_fd);
int finish(int session);
int get_name(int session, char name[LIVEUPDATE_SESSION_NAME_LENGTH]);
/*
 * Whether the checks expect the proposed kernel (LUO_PRELOAD_PROFILE=proposed:
 * the session filesystem and luo's extra handlers) rather than mainline.  The
 * kernel harness sets it from the kernel it runs on.
 */
bool profile_proposed(void);
/* fstatfs() f_type of a session fd: LUO_SESSION_MAGIC, or mainline's anonymous inode fs. */
long session_magic(void);
/* Fails the case unless fd has FD_CLOEXEC set. */
void assert_cloexec(int fd);

#define PRELOAD_TEST(n)                                                                            \
	static void body_##n(void);                                                                \
	TEST(n)                                                                                    \
	{                                                                                          \
		preload_case(#n, body_##n);                                                        \
	}                                                                                          \
	static void body_##n(void)
