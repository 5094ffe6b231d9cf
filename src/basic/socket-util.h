/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: SCM_RIGHTS messages
 *
 * One message per call on SOCK_SEQPACKET sockets, with fds alongside.
 * Receiving is strict: a truncated message or control block, a control
 * message of the wrong level/type, or more fds than the caller allows is an
 * error, and every fd that arrived is closed before returning it.  Nothing
 * here allocates, so the preload shim can use it.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* SCM_MAX_FD: the most fds the kernel carries in one message. */
#define SOCKET_MAX_FDS 253

/*
 * Sends iov as one message with n_fds fds (n_fds <= SOCKET_MAX_FDS).  Does
 * not consume the fds.  Retries on EINTR.  Returns the bytes sent or -errno
 * (-EPIPE when the peer is gone; SIGPIPE is never raised).
 */
ssize_t socket_send_message(int sock, const struct iovec *iov, size_t iovlen, const int *fds,
			    size_t n_fds);
/* The same with sendmsg() flags (MSG_DONTWAIT; MSG_NOSIGNAL is always added). */
ssize_t socket_send_message_flags(int sock, const struct iovec *iov, size_t iovlen, const int *fds,
				  size_t n_fds, int flags);

/*
 * Receives one message into buf.  Received fds are O_CLOEXEC and stored in
 * fds[0..*ret_n_fds).  flags are passed to recvmsg() (MSG_PEEK, MSG_DONTWAIT).
 * Returns the byte count (0 on hang-up), -EMSGSIZE if the message was larger
 * than size, -EBADMSG for a bad control block or more than max_fds fds,
 * -EMFILE if the kernel could not install a received fd (the message is
 * consumed and its fds are gone); on every error no fd is left open.
 */
ssize_t socket_recv_message(int sock, void *buf, size_t size, int *fds, size_t max_fds,
			    size_t *ret_n_fds, int flags);

/* Closes fds[0..n). */
void close_many(const int *fds, size_t n);
