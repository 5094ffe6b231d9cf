/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: raw luod clients for the daemon's integration tests
 *
 * Thin wrappers over luo_wire_call() that build each command struct the way
 * the kernel's ioctl struct is built, so that the tests see luod's replies
 * exactly (no library in between), plus a raw message sender for the
 * hostile cases and a look at luod's own fd table.  Every function returns
 * 0 (or a value) or luod's -errno.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "luod-test.h"
#include "protocol/protocol.h"

int cl_create(int conn, const char *name, uint64_t flags, int *ret_fd);
int cl_retrieve(int conn, const char *name, int *ret_fd);
int cl_preserve(int session, uint64_t token, int fd);
int cl_retrieve_fd(int session, uint64_t token, int *ret_fd);
int cl_finish(int session);
int cl_get_name(int session, char ret_name[64]);
int cl_handover(int session);
int cl_device_open(int conn);
int cl_status(int conn, struct luo_wire_status *ret);
int cl_is_session(int conn, int fd);
/* LIST: the number of entries luod streams (checked against the count it announces). */
int cl_list_count(int conn);
/* Session kinds as luod numbers them (enum luo_session_kind). */
#define KIND_OUTGOING 0
#define KIND_INCOMING 1

/* SHOW: the number of file entries (checked against the count), -errno. */
int cl_show_files(int conn, uint32_t kind, const char *name);
/* UPDATE: the reply's result; *ret is written whenever luod sent the struct. */
int cl_update(int conn, const char *exec_path, struct luo_wire_update *ret);
/* The same, waiting up to timeout_ms for the answer (cl_update(): 5 s). */
int cl_update_wait(int conn, const char *exec_path, struct luo_wire_update *ret, int timeout_ms);
int cl_reboot(int conn, struct luo_wire_reboot *ret);

/* A memfd holding text, for preserving. */
int cl_memfd(const char *text);
/* Whether fd (a retrieved memfd) holds exactly text. */
int cl_memfd_has(int fd, const char *text);

/* Sends one raw message with fds (not consumed); 0 or -errno. */
int raw_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds);
/* Receives one reply: its result in *ret_result, payload bytes returned (or
 * -errno, -ECONNRESET when luod closed the socket); fds that came are closed.
 * Waits at most 5 s. */
int raw_recv(int sock, int32_t *ret_result, void *payload, size_t size);

/* Counts luod's own fds: those not shared with the calling test process. */
int proc_fd_count(pid_t pid);
/* luod's fd count, every close made before taken in, once two counts agree. */
int stable_fd_count(const struct test_luod *d);
/* Waits until luod's fd count, every close made before taken in, is n (at most
 * 500 tries); returns the last count seen. */
int wait_fd_count(const struct test_luod *d, int n);
/* Asserts that luod still serves: a fresh connection creates and closes a session. */
void assert_luod_serves(const struct test_luod *d);
