/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: running a real luod in a test
 *
 * test_luod_start() starts the build's luod in the foreground on a socket in
 * the case's temporary directory and waits until it accepts connections; the
 * pid is checked against the socket's SO_PEERCRED so that a test never talks
 * to some other luod.  test_luod_stop() sends SIGTERM and reaps it, failing
 * the case if it crashed or exited with an error.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct test_luod {
	pid_t pid;
	char socket[256];
	char dir[200];
};

/* $LUO_BUILD_ROOT/rel (the build directory the test runs from). */
const char *test_build_path(const char *rel, char *buf, size_t size);
/* $LUO_SOURCE_ROOT/rel. */
const char *test_source_path(const char *rel, char *buf, size_t size);
/* Starts luod with extra arguments (NULL-terminated list, may be NULL); sets LUO_SOCKET. */
void test_luod_start(struct test_luod *d, const char *const *extra_args);
/* Stops it; fails the case unless it exits 0 on SIGTERM. */
void test_luod_stop(struct test_luod *d);
/* The pid of d's worker, the process that serves (luod's pid is its keeper's). */
pid_t test_luod_worker_pid(const struct test_luod *d);
/* The same without waiting: 0 while it has none (between a worker's death and
 * its successor's start, say). */
pid_t test_luod_worker_now(const struct test_luod *d);
/* Stops luod (keeper and worker, waiting until the worker is stopped) or lets it go on. */
void test_luod_pause(const struct test_luod *d, bool pause);
/* Connects a plain SOCK_SEQPACKET socket to d's socket (no library involved). */
int test_luod_connect(const struct test_luod *d);
/* Runs argv to completion; returns its exit status (or 128+signal); output to the TAP log. */
int test_run_command(const char *const *argv);
/* Same, capturing stdout into buf (NUL-terminated, truncated to size). */
int test_run_command_output(const char *const *argv, char *buf, size_t size);
