/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * DOC: the kernel's Live Update Orchestrator uAPI
 *
 * The command words, structs and constants of <linux/liveupdate.h>, for
 * systems whose headers lack it.  Where the system header exists it is used
 * instead and this file only adds what the kernel does not define yet
 * (LUO_SESSION_MAGIC).  Every command is _IO(LIVEUPDATE_IOCTL_TYPE, nr): no
 * size or direction bits; the struct's first __u32 is its size, so structs
 * can grow.
 */
#ifndef LUO_UAPI_H
#define LUO_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#if defined(__has_include)
#if __has_include(<linux/liveupdate.h>)
#include <linux/liveupdate.h>
#endif
#endif

#ifndef LIVEUPDATE_IOCTL_TYPE
#define LIVEUPDATE_IOCTL_TYPE 0xBA
#endif

#ifndef LIVEUPDATE_SESSION_NAME_LENGTH
#define LIVEUPDATE_SESSION_NAME_LENGTH 64

enum {
	LIVEUPDATE_CMD_BASE = 0x00,
	LIVEUPDATE_CMD_CREATE_SESSION = LIVEUPDATE_CMD_BASE,
	LIVEUPDATE_CMD_RETRIEVE_SESSION = 0x01,
};

enum {
	LIVEUPDATE_CMD_SESSION_BASE = 0x40,
	LIVEUPDATE_CMD_SESSION_PRESERVE_FD = LIVEUPDATE_CMD_SESSION_BASE,
	LIVEUPDATE_CMD_SESSION_RETRIEVE_FD = 0x41,
	LIVEUPDATE_CMD_SESSION_FINISH = 0x42,
	LIVEUPDATE_CMD_SESSION_GET_NAME = 0x43,
};

/* Creates an outgoing session; returns its fd in @fd. */
struct liveupdate_ioctl_create_session {
	__u32 size;
	__s32 fd;
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
};
#define LIVEUPDATE_IOCTL_CREATE_SESSION _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION)

/* Retrieves an incoming session by name; returns its fd in @fd. */
struct liveupdate_ioctl_retrieve_session {
	__u32 size;
	__s32 fd;
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
};
#define LIVEUPDATE_IOCTL_RETRIEVE_SESSION                                                          \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_RETRIEVE_SESSION)

/* Preserves the file behind @fd under @token in an outgoing session. */
struct liveupdate_session_preserve_fd {
	__u32 size;
	__s32 fd;
	__aligned_u64 token;
};
#define LIVEUPDATE_SESSION_PRESERVE_FD                                                             \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_PRESERVE_FD)

/* Retrieves the file under @token from an incoming session into @fd. */
struct liveupdate_session_retrieve_fd {
	__u32 size;
	__s32 fd;
	__aligned_u64 token;
};
#define LIVEUPDATE_SESSION_RETRIEVE_FD                                                             \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_RETRIEVE_FD)

/* Ends the handover of an incoming session; @reserved must be 0. */
struct liveupdate_session_finish {
	__u32 size;
	__u32 reserved;
};
#define LIVEUPDATE_SESSION_FINISH _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_FINISH)

/* Returns the session's name, NUL-terminated; @reserved must be 0. */
struct liveupdate_session_get_name {
	__u32 size;
	__u32 reserved;
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
};
#define LIVEUPDATE_SESSION_GET_NAME _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_GET_NAME)
#endif /* LIVEUPDATE_SESSION_NAME_LENGTH */

/* Proposed filesystem magic of session fds ("LUOS"), reported by fstatfs(). */
#ifndef LUO_SESSION_MAGIC
#define LUO_SESSION_MAGIC 0x4c554f53
#endif

#endif /* LUO_UAPI_H */
