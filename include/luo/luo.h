/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: libluo, the Live Update Orchestrator client library
 *
 * Programs put open files into named sessions held by luod (or, on kernels
 * with /dev/liveupdate, by the kernel); the files survive the program's
 * restart, luod's own live update and a (simulated or real) kexec.
 *
 * Every function returns 0 (or a non-negative value) on success and a
 * negative errno on failure; outputs are written only on success.  Every fd
 * the library returns has O_CLOEXEC.  See libluo(3).
 */
#ifndef LUO_LUO_H
#define LUO_LUO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LUO_SESSION_NAME_LENGTH 64
#define LUO_SESSION_HANDOVER_ON_CLOSE (1ULL << 0)

/* Connects to luod: socket_path, or $LUO_SOCKET, or the per-user luod if one
 * listens at $XDG_RUNTIME_DIR/luo/luod.sock, or the system luod.  Returns an fd. */
int luo_connect(const char *socket_path);
/* Sets how long every call of this process waits for luod, in milliseconds
 * (default 30000; 0: no limit).  A call that waits longer fails with -ETIMEDOUT. */
int luo_set_timeout(int timeout_ms);

/* Creates an outgoing session named name (1..63 bytes). */
int luo_session_create(int luo_fd, const char *name, uint64_t flags, int *ret_session_fd);
/* Retrieves the incoming session named name. */
int luo_session_retrieve(int luo_fd, const char *name, int *ret_session_fd);
/*
 * Retrieves the incoming session named name as luo_session_retrieve() does,
 * waiting up to timeout_ms (-1: no limit, 0: no wait) for a predecessor to
 * hand it over.  -ETIMEDOUT when it did not come in time; never -ENOENT.
 */
int luo_session_retrieve_wait(int luo_fd, const char *name, int timeout_ms, int *ret_session_fd);
/* Preserves the file behind fd under token; fd stays the caller's. */
int luo_session_preserve_fd(int session_fd, uint64_t token, int fd);
/* Retrieves the file preserved under token as a new fd. */
int luo_session_retrieve_fd(int session_fd, uint64_t token, int *ret_fd);
/*
 * Preserves n files at once: fds[i] under tokens[i], by the rules of
 * luo_session_preserve_fd() for each, in as few messages as SCM_RIGHTS allows.
 * All or nothing: on failure nothing was preserved, and *ret_failed (if not
 * NULL) is the index of the file that failed, or n if no one file did.  On a
 * kernel session fd the files go one ioctl each and an earlier success cannot
 * be undone (libluo(3)).
 */
int luo_session_preserve_fds(int session_fd, size_t n, const uint64_t tokens[], const int fds[],
			     size_t *ret_failed);
/*
 * Retrieves n files at once into ret_fds[0..n) (new O_CLOEXEC fds), by the
 * rules of luo_session_retrieve_fd().  On failure no fd is returned (ret_fds
 * is left undefined) and *ret_failed is as above; files retrieved before the
 * failing one stay retrieved (a retrieve cannot be undone, and a later one
 * gives the same open file again): libluo(3).
 */
int luo_session_retrieve_fds(int session_fd, size_t n, const uint64_t tokens[], int ret_fds[],
			     size_t *ret_failed);
/* Ends the handover of an incoming session. */
int luo_session_finish(int session_fd);
/* Copies the session's NUL-terminated name into ret_name. */
int luo_session_get_name(int session_fd, char ret_name[LUO_SESSION_NAME_LENGTH]);
/* Hands an outgoing session over to the next program (a one-session update). */
int luo_session_handover(int session_fd);
/* The uid that owns the session (luod's sessions only: -EOPNOTSUPP on the
 * kernel's): names are per uid, so a session fd another process passed may be
 * another uid's. */
int luo_session_get_owner(int session_fd, uid_t *ret_uid);
/* Removes the caller's session named name that no fd holds: the incoming one
 * waiting to be retrieved, else a handover-on-close one waiting for its name. */
int luo_session_drop(int luo_fd, const char *name);
/* 1 if fd is a session fd (luod's or the kernel's), 0 if not, or -errno. */
int luo_fd_is_session(int fd);

#ifdef __cplusplus
}
#endif

#endif /* LUO_LUO_H */
