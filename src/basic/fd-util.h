/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: fd helpers
 *
 * Every function returns 0 (or a value) on success and -errno on failure.
 * None of them consumes the fd it is given.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Sets or clears FD_CLOEXEC. */
int fd_set_cloexec(int fd, bool cloexec);
/* Sets or clears O_NONBLOCK. */
int fd_set_nonblock(int fd, bool nonblock);
/* Returns a new fd >= 3 referring to the same open file, with FD_CLOEXEC. */
int fd_dup_cloexec(int fd);
/* 1 if fd is an open descriptor, 0 if not. */
int fd_is_open(int fd);
/* Counts the open fds of this process (by /proc/self/fd); -errno on failure. */
int fd_count_open(void);
/* Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit. */
long fd_raise_limit(void);
/* Reads the /proc/self/fd link of fd into buf (NUL-terminated). */
int fd_read_link(int fd, char *buf, size_t size);
