/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's wire protocol: the command table and the server's checks
 *
 * The command table drives the kernel's argument checks on the server side,
 * so luod returns the kernel's errno for the kernel's commands word for word
 * and treats its own extensions by the same rules.  Moving messages (both
 * ends) is transport.c's.
 */
#include "protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>

#include "basic/macro.h"
#include "basic/socket-util.h"

#define WIRE_CMD(t, n, min, full, fds, rfds, nm)                                                   \
	{                                                                                          \
		.nr = (n), .target = (t), .min_size = (min), .full_size = (full), .n_fds = (fds),  \
		.reply_fds = (rfds), .name = (nm)                                                  \
	}

#define WIRE_BATCH(n, fds, rfds, nm)                                                               \
	{                                                                                          \
		.nr = (n), .target = LUO_WIRE_SESSION, .min_size = LUO_WIRE_FDS_HEADER,            \
		.full_size = sizeof(struct luo_wire_fds), .n_fds = (fds), .reply_fds = (rfds),     \
		.batch = true, .name = (nm)                                                        \
	}

static const struct luo_wire_command wire_commands[] = {
	/* The kernel's device commands; create knows luod's trailing flags. */
	WIRE_CMD(LUO_WIRE_DEVICE, LIVEUPDATE_CMD_CREATE_SESSION,
		 sizeof(struct liveupdate_ioctl_create_session),
		 sizeof(struct luo_wire_create_session), 0, 1, "CREATE_SESSION"),
	WIRE_CMD(LUO_WIRE_DEVICE, LIVEUPDATE_CMD_RETRIEVE_SESSION,
		 sizeof(struct liveupdate_ioctl_retrieve_session),
		 sizeof(struct liveupdate_ioctl_retrieve_session), 0, 1, "RETRIEVE_SESSION"),
	/* luod's device extensions. */
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_DEVICE_OPEN, sizeof(struct luo_wire_simple),
		 sizeof(struct luo_wire_simple), 0, 0, "DEVICE_OPEN"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_STATUS, offsetof(struct luo_wire_status, fd_capacity),
		 sizeof(struct luo_wire_status), 0, 0, "STATUS"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_LIST, LUO_WIRE_LIST_V1, sizeof(struct luo_wire_list), 0,
		 0, "LIST"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_SHOW, LUO_WIRE_SHOW_V1, sizeof(struct luo_wire_show), 0,
		 0, "SHOW"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_UPDATE, sizeof(struct luo_wire_update),
		 sizeof(struct luo_wire_update), 0, 0, "UPDATE"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_REBOOT, sizeof(struct luo_wire_reboot),
		 sizeof(struct luo_wire_reboot), 0, 0, "REBOOT"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_IS_SESSION, sizeof(struct luo_wire_is_session),
		 sizeof(struct luo_wire_is_session), 1, 0, "IS_SESSION"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_DROP, LUO_WIRE_DROP_V1, sizeof(struct luo_wire_drop), 0,
		 0, "DROP"),
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_DUMP_STATE, sizeof(struct luo_wire_dump_state),
		 sizeof(struct luo_wire_dump_state), 0, 1, "DUMP_STATE"),
	/* One or two fds (LUO_KEXEC_INITRD): luod checks the count itself. */
	WIRE_CMD(LUO_WIRE_DEVICE, LUO_CMD_KEXEC, sizeof(struct luo_wire_kexec),
		 sizeof(struct luo_wire_kexec), 2, 0, "KEXEC"),
	/* The kernel's session commands. */
	WIRE_CMD(LUO_WIRE_SESSION, LIVEUPDATE_CMD_SESSION_PRESERVE_FD,
		 sizeof(struct liveupdate_session_preserve_fd),
		 sizeof(struct liveupdate_session_preserve_fd), 1, 0, "PRESERVE_FD"),
	WIRE_CMD(LUO_WIRE_SESSION, LIVEUPDATE_CMD_SESSION_RETRIEVE_FD,
		 sizeof(struct liveupdate_session_retrieve_fd),
		 sizeof(struct liveupdate_session_retrieve_fd), 0, 1, "RETRIEVE_FD"),
	WIRE_CMD(LUO_WIRE_SESSION, LIVEUPDATE_CMD_SESSION_FINISH,
		 sizeof(struct liveupdate_session_finish), sizeof(struct liveupdate_session_finish),
		 0, 0, "FINISH"),
	WIRE_CMD(LUO_WIRE_SESSION, LIVEUPDATE_CMD_SESSION_GET_NAME,
		 sizeof(struct liveupdate_session_get_name),
		 sizeof(struct liveupdate_session_get_name), 0, 0, "GET_NAME"),
	/* luod's session extension. */
	WIRE_CMD(LUO_WIRE_SESSION, LUO_CMD_SESSION_HANDOVER, sizeof(struct luo_wire_simple),
		 sizeof(struct luo_wire_simple), 0, 0, "HANDOVER"),
	WIRE_CMD(LUO_WIRE_SESSION, LUO_CMD_SESSION_GET_OWNER, sizeof(struct luo_wire_get_owner),
		 sizeof(struct luo_wire_get_owner), 0, 0, "GET_OWNER"),
	/* Batches: the size follows the count (check_batch). */
	WIRE_BATCH(LUO_CMD_SESSION_PRESERVE_FDS, LUO_WIRE_BATCH_MAX, 0, "PRESERVE_FDS"),
	WIRE_BATCH(LUO_CMD_SESSION_RETRIEVE_FDS, 0, LUO_WIRE_BATCH_MAX, "RETRIEVE_FDS"),
};

/* The structs must have the kernel's sizes, or the E2BIG/EINVAL checks drift. */
_Static_assert(sizeof(struct liveupdate_ioctl_create_session) == 72, "create struct");
_Static_assert(sizeof(struct luo_wire_create_session) == 80, "luod create struct");
_Static_assert(sizeof(struct liveupdate_session_preserve_fd) == 16, "preserve struct");
_Static_assert(sizeof(struct liveupdate_session_retrieve_fd) == 16, "retrieve struct");
_Static_assert(sizeof(struct liveupdate_session_finish) == 8, "finish struct");
_Static_assert(sizeof(struct liveupdate_session_get_name) == 72, "get-name struct");
_Static_assert(sizeof(struct luo_wire_reply) == 16, "reply header");
/* Listings grow only at the end: the first versions' sizes stay valid prefixes. */
_Static_assert(offsetof(struct luo_wire_session_entry, bytes) == LUO_WIRE_SESSION_ENTRY_V1,
	       "session entry v1");
_Static_assert(sizeof(struct luo_wire_session_entry) == LUO_WIRE_SESSION_ENTRY_V2,
	       "session entry v2");
_Static_assert(offsetof(struct luo_wire_file_entry, file_size) == LUO_WIRE_FILE_ENTRY_V1,
	       "file entry v1");
_Static_assert(sizeof(struct luo_wire_file_entry) == LUO_WIRE_FILE_ENTRY_V2, "file entry v2");
_Static_assert(offsetof(struct luo_wire_list, entry_size) == LUO_WIRE_LIST_V1, "list v1");
_Static_assert(offsetof(struct luo_wire_show, session_entry_size) == LUO_WIRE_SHOW_V1, "show v1");
_Static_assert(sizeof(struct luo_wire_request) == 8, "request header");
_Static_assert(sizeof(struct luo_wire_request) + sizeof(struct luo_wire_kexec) <=
		       LUO_WIRE_REQUEST_MAX,
	       "kexec request");
_Static_assert(sizeof(struct luo_wire_kexec_file) == 128, "kexec file entry");
_Static_assert(offsetof(struct luo_wire_fds, tokens) == LUO_WIRE_FDS_HEADER, "batch header");
/* A whole batch message fits a request, and its fds with a session fd fit SCM_MAX_FD. */
_Static_assert(sizeof(struct luo_wire_request) + sizeof(struct luo_wire_fds) <=
		       LUO_WIRE_REQUEST_MAX,
	       "batch request");
_Static_assert(LUO_WIRE_BATCH_MAX + 1 <= SOCKET_MAX_FDS, "batch fds");

const struct luo_wire_command *luo_wire_command_find(enum luo_wire_target target, uint32_t nr)
{
	for (size_t i = 0; i < ELEMENTSOF(wire_commands); i++)
		if (wire_commands[i].target == target && wire_commands[i].nr == nr)
			return &wire_commands[i];
	return NULL;
}

/* ---- server side ---- */

uint32_t luo_wire_request_tag(const void *msg, size_t len)
{
	struct luo_wire_request h;

	if (!msg || len < sizeof(h))
		return 0;
	memcpy(&h, msg, sizeof(h));
	return h.tag;
}

int luo_wire_request_parse(enum luo_wire_target target, const void *msg, size_t len,
			   struct luo_wire_parsed *ret)
{
	const struct luo_wire_command *cmd;
	struct luo_wire_request h;
	const uint8_t *payload;
	size_t plen;
	uint32_t size;

	if (!ret || (!msg && len > 0))
		return -EINVAL;
	if (len < sizeof(h))
		return -EBADMSG;
	memcpy(&h, msg, sizeof(h));
	payload = (const uint8_t *)msg + sizeof(h);
	plen = len - sizeof(h);

	/* 1: the kernel looks at _IOC_NR() alone before anything else. */
	cmd = luo_wire_command_find(target, h.op & 0xffu);
	if (!cmd)
		return -EINVAL;
	/* 2: no size or direction bits, the right type byte. */
	if (h.op != (uint32_t)_IO(LIVEUPDATE_IOCTL_TYPE, cmd->nr))
		return -ENOTTY;
	/* 3: what a bad user pointer is on the wire: bytes that are not there. */
	if (plen < sizeof(uint32_t))
		return -EFAULT;
	memcpy(&size, payload, sizeof(size));
	if (size != plen)
		return -EFAULT;

	*ret = (struct luo_wire_parsed){
		.cmd = cmd,
		.op = h.op,
		.tag = h.tag,
		.payload = payload,
		.size = size,
	};
	return 0;
}

int luo_wire_request_check_struct(const struct luo_wire_parsed *p, void *ret_struct)
{
	if (!p || !p->cmd || !ret_struct || (!p->payload && p->size > 0))
		return -EINVAL;
	if (p->size < p->cmd->min_size)
		return -EINVAL;
	/* copy_struct_from_user(): a newer client may send a longer struct as long as
	 * it asks for nothing this luod does not know. */
	for (uint32_t i = p->cmd->full_size; i < p->size; i++)
		if (p->payload[i] != 0)
			return -E2BIG;

	uint32_t n = MIN(p->size, p->cmd->full_size);
	memcpy(ret_struct, p->payload, n);
	memset((uint8_t *)ret_struct + n, 0, p->cmd->full_size - n);
	return 0;
}

int luo_wire_request_check_fds(const struct luo_wire_parsed *p, size_t n_fds)
{
	if (!p || !p->cmd)
		return -EINVAL;
	/* The kernel, then the initrd if its flag says so. */
	if (p->cmd->nr == LUO_CMD_KEXEC && p->size >= sizeof(struct luo_wire_kexec)) {
		uint32_t flags;

		memcpy(&flags, p->payload + offsetof(struct luo_wire_kexec, flags), sizeof(flags));
		size_t want = (flags & LUO_KEXEC_INITRD) ? 2 : 1;

		return n_fds > want ? -EINVAL : n_fds < want ? -EBADF : 0;
	}
	if (n_fds > p->cmd->n_fds)
		return -EINVAL;
	/* The kernel's fdget() on a missing file. */
	if (n_fds < p->cmd->n_fds)
		return -EBADF;
	return 0;
}

int luo_wire_request_check_batch(const struct luo_wire_parsed *p, const struct luo_wire_fds *f,
				 size_t n_fds)
{
	bool preserve;

	if (!p || !p->cmd || !p->cmd->batch || !f)
		return -EINVAL;
	preserve = p->cmd->nr == LUO_CMD_SESSION_PRESERVE_FDS;
	if (preserve && (f->flags & LUO_WIRE_FDS_ABORT))
		return f->flags == LUO_WIRE_FDS_ABORT && f->count == 0 && f->batch != 0 &&
				       p->size == LUO_WIRE_FDS_HEADER && n_fds == 0
			       ? 0
			       : -EINVAL;
	if (f->count == 0 || f->count > LUO_WIRE_BATCH_MAX ||
	    p->size != LUO_WIRE_FDS_HEADER + 8 * (size_t)f->count)
		return -EINVAL;
	if (preserve ? (f->flags & ~LUO_WIRE_FDS_FLAGS) || f->batch == 0
		     : f->flags != 0 || f->batch != 0)
		return -EINVAL;
	if (!preserve)
		return n_fds > 0 ? -EINVAL : 0;
	if (n_fds > f->count)
		return -EINVAL;
	return n_fds < f->count ? -EBADF : 0;
}

uint32_t luo_wire_reply_size(const struct luo_wire_parsed *p)
{
	if (!p || !p->cmd)
		return 0;
	return MIN(p->size, p->cmd->full_size);
}
