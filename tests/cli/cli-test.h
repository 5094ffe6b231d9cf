/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: helpers of luoctl's lifecycle tests
 *
 * Running the build's luoctl and capturing its stdout, stderr and exit
 * status; checking JSON output with jq; child processes that act as real
 * clients (each a fork that ends with _exit(), its failures reported through
 * its exit status); and a one-byte pipe to pace parent and child.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct cli_out {
	int status; /* exit status, or 128 + signal */
	char out[1 << 20];
	char err[1 << 13];
};

/* Runs luoctl with args (NULL-terminated, without argv[0]); LUO_SOCKET as in this process. */
void cli_luoctl(struct cli_out *o, const char *const *args);
#define LUOCTL(o, ...) cli_luoctl((o), (const char *const[]){ __VA_ARGS__, NULL })

/* Skips the case unless jq is installed. */
void cli_need_jq(void);
/* The exit status of `jq -e expr` over json. */
int cli_jq(const char *json, const char *expr);
#define ASSERT_JQ(json, expr)                                                                      \
	do {                                                                                       \
		if (cli_jq((json), (expr)) != 0)                                                   \
			test_fail_at(__FILE__, __LINE__, "jq -e '%s' failed on: %.2000s", (expr),  \
				     (json));                                                      \
	} while (0)

/* Forks a child that runs fn(arg) and _exit()s with its return value. */
pid_t cli_spawn(int (*fn)(void *arg), void *arg);
/* Waits for pid: its exit status, or 128 + signal. */
int cli_wait(pid_t pid);

/* A pipe to pace two processes: one side writes a byte, the other waits for it. */
struct cli_sync {
	int fd[2];
};
void cli_sync_init(struct cli_sync *s);
void cli_sync_post(struct cli_sync *s);
/* Waits for a byte; false on EOF (the other side died) or after timeout_ms. */
bool cli_sync_wait(struct cli_sync *s, int timeout_ms);
void cli_sync_close(struct cli_sync *s);

/* A memfd holding size bytes of a pattern derived from seed. */
int cli_memfd_with_pattern(size_t size, uint32_t seed);
/* Whether fd holds size bytes of the pattern of seed (reads with pread). */
bool cli_fd_has_pattern(int fd, size_t size, uint32_t seed);
/* The pid of the process serving socket (SO_PEERCRED of a fresh connection), or -errno. */
int cli_server_pid(const char *path);
