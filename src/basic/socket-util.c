/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "socket-util.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "macro.h"

void close_many(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		safe_close(fds[i]);
}

ssize_t socket_send_message(int sock, const struct iovec *iov, size_t iovlen, const int *fds,
			    size_t n_fds)
{
	return socket_send_message_flags(sock, iov, iovlen, fds, n_fds, 0);
}

ssize_t socket_send_message_flags(int sock, const struct iovec *iov, size_t iovlen, const int *fds,
				  size_t n_fds, int flags)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * SOCKET_MAX_FDS)];
	} control;
	struct msghdr mh = {
		.msg_iov = (struct iovec *)iov,
		.msg_iovlen = iovlen,
	};
	ssize_t n;

	if (n_fds > SOCKET_MAX_FDS)
		return -EINVAL;
	if (n_fds > 0) {
		memset(&control, 0, sizeof(control));
		mh.msg_control = &control;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}
	do
		n = sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? negative_errno() : n;
}

ssize_t socket_recv_message(int sock, void *buf, size_t size, int *fds, size_t max_fds,
			    size_t *ret_n_fds, int flags)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * SOCKET_MAX_FDS)];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = &control,
		.msg_controllen = sizeof(control),
	};
	size_t got = 0;
	bool bad = false;
	ssize_t n;

	if (max_fds > SOCKET_MAX_FDS)
		max_fds = SOCKET_MAX_FDS;
	if (max_fds == 0 && (flags & MSG_PEEK)) {
		/* A peek without room for fds leaves them queued for the real receive. */
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
	}
	do
		n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();

	for (struct cmsghdr *c = mh.msg_controllen ? CMSG_FIRSTHDR(&mh) : NULL; c;
	     c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0)) {
			bad = true;
			continue;
		}
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		const unsigned char *data = CMSG_DATA(c);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, data + i * sizeof(int), sizeof(int));
			if (got < max_fds)
				fds[got++] = fd;
			else {
				safe_close(fd);
				bad = true;
			}
		}
	}
	/* With room for every fd we accept, a truncated control block means the
	 * kernel could not install one: the receiver's fd table is full. */
	bool ctrunc = (mh.msg_flags & MSG_CTRUNC) && mh.msg_controllen;
	if (bad || ctrunc || (mh.msg_flags & MSG_TRUNC)) {
		close_many(fds, got);
		if (ret_n_fds)
			*ret_n_fds = 0;
		return (mh.msg_flags & MSG_TRUNC) ? -EMSGSIZE : bad ? -EBADMSG : -EMFILE;
	}
	if (ret_n_fds)
		*ret_n_fds = got;
	else
		close_many(fds, got);
	return n;
}
