/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: fuzz target for the wire protocol
 *
 * Input: one control byte, then one message.  Control bits 0-1 give the
 * number of fds (0..2, fresh eventfds) that come with the message; bit 2 also
 * feeds the message to the client side as a reply.
 *
 * Server side: the message is a request to both kinds of socket, checked
 * step by step as luod does (parse, struct, fds).  Client side: the message
 * is queued as a reply on a socketpair, with our tag written in if it is long
 * enough, followed by a well-formed last reply so that the call always ends;
 * luo_wire_call() and luo_wire_call_stream() must take it without crashing and
 * without leaving a received fd open (the harness of the replay counts them).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "basic/socket-util.h"
#include "protocol/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void server_side(enum luo_wire_target target, const uint8_t *msg, size_t len, size_t n_fds)
{
	/* Large enough for the largest struct luod knows. */
	uint8_t s[sizeof(struct luo_wire_update) + 64];
	struct luo_wire_parsed p;

	(void)luo_wire_request_tag(msg, len);
	if (luo_wire_request_parse(target, msg, len, &p) < 0)
		return;
	if (p.cmd->full_size > sizeof(s))
		__builtin_trap();
	if (luo_wire_request_check_struct(&p, s) < 0)
		return;
	(void)luo_wire_request_check_fds(&p, n_fds);
	if (luo_wire_reply_size(&p) > p.cmd->full_size)
		__builtin_trap();
}

static int ignore_chunk(const void *data, size_t size, void *userdata)
{
	return 0;
}

static void queue_reply(int sock, const uint8_t *msg, size_t len, const int *fds, size_t n_fds)
{
	uint8_t copy[LUO_WIRE_REPLY_MAX];
	struct iovec iov = { .iov_base = copy, .iov_len = len };
	uint32_t tag = luo_wire_tag_after(0);

	if (len > sizeof(copy))
		len = iov.iov_len = sizeof(copy);
	memcpy(copy, msg, len);
	if (len >= offsetof(struct luo_wire_reply, tag) + sizeof(tag))
		memcpy(copy + offsetof(struct luo_wire_reply, tag), &tag, sizeof(tag));
	(void)socket_send_message(sock, &iov, 1, fds, n_fds);
}

static void client_side(const uint8_t *msg, size_t len, const int *fds, size_t n_fds, bool stream)
{
	uint8_t arg[128] = { 0 };
	int sv[2], fd = -EBADF;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	queue_reply(sv[1], msg, len, fds, n_fds);
	/* The end of any stream, and a reply for a call that dropped the input. */
	(void)luo_wire_reply_send(sv[1], luo_wire_tag_after(0), 0, 0, NULL, 0, NULL, 0);
	(void)luo_wire_reply_send(sv[1], luo_wire_tag_after(0), 0, 0, NULL, 0, NULL, 0);
	arg[0] = sizeof(arg);
	if (stream)
		(void)luo_wire_call_stream(sv[0], LUO_IOCTL_LIST, arg, sizeof(arg), ignore_chunk,
					   NULL);
	else if (luo_wire_call(sv[0], LIVEUPDATE_SESSION_RETRIEVE_FD, arg, sizeof(arg), NULL, 0,
			       &fd) >= 0)
		safe_close(fd);
	/* Whatever is still queued (and its fds) goes with the sockets. */
	safe_close(sv[0]);
	safe_close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fds[2] = { -EBADF, -EBADF };
	int open_before = fd_count_open();
	size_t n_fds;

	if (size < 1)
		return 0;
	n_fds = MIN((size_t)(data[0] & 3), (size_t)2);
	for (size_t i = 0; i < n_fds; i++) {
		fds[i] = eventfd(0, EFD_CLOEXEC);
		if (fds[i] < 0)
			goto out;
	}

	server_side(LUO_WIRE_DEVICE, data + 1, size - 1, n_fds);
	server_side(LUO_WIRE_SESSION, data + 1, size - 1, n_fds);
	if (data[0] & 4) {
		client_side(data + 1, size - 1, fds, n_fds, false);
		client_side(data + 1, size - 1, fds, n_fds, true);
	}
out:
	for (size_t i = 0; i < n_fds; i++)
		safe_close(fds[i]);
	if (open_before >= 0 && fd_count_open() != open_before)
		__builtin_trap(); /* an fd leaked */
	return 0;
}
