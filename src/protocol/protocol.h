/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's wire protocol
 *
 * One request per SOCK_SEQPACKET message: a struct luo_wire_request header,
 * then a command struct shaped exactly like the kernel's ioctl struct (first
 * __u32 is its size; the payload must carry exactly `size` bytes).  Files
 * travel as SCM_RIGHTS.  Device commands go to a connection on luod's
 * listening socket, session commands to a session fd (one end of a
 * socketpair whose other end luod keeps).
 *
 * Each reply is one message (or, for the streaming listings, several): a
 * struct luo_wire_reply, then the command struct copied back (min(size,
 * full size) bytes), then for listings an array of entries.  Replies echo the
 * request's tag; clients use their thread id (and, after a call timed out, a
 * generation in the top bits: transport.h), so that several processes or
 * threads sharing one socket each take only their own reply (peek first).
 *
 * luod applies the kernel's checks word for word (spec section 2), in order:
 *   1. nr not a command of this kind of socket          -> EINVAL
 *   2. op != _IO(0xBA, nr) exactly                       -> ENOTTY
 *   3. payload shorter than 4 bytes or != size           -> EFAULT
 *   4. (session) command does not suit the session kind  -> EINVAL
 *   5. size < the kernel's full struct                   -> EINVAL
 *   6. non-zero bytes past the struct luod knows          -> E2BIG
 *   7. wrong number of fds for the command                -> EBADF/EINVAL
 * Extensions (luod only) use nrs the kernel does not: 0x44.. on sessions,
 * 0x80.. on connections, and trailing fields the kernel struct lacks
 * (create: flags @72).
 *
 * The fd field of PRESERVE_FD's struct means nothing on the wire (the file is
 * the SCM_RIGHTS fd); clients send -1 and luod ignores it.  Likewise the fd
 * fields of create/retrieve replies: the new fd is the reply's SCM_RIGHTS fd.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "luo/uapi.h"

/* The whole request message, header included; luod answers a longer one
 * EFAULT (step 3: the payload is not what its size says). */
#define LUO_WIRE_REQUEST_MAX 4096
#define LUO_WIRE_REPLY_MAX 65536 /* whole reply message */

/*
 * In a session command's op: the request's last SCM_RIGHTS fd is a socket
 * (SOCK_SEQPACKET) of the caller's own, on which luod sends this request's
 * reply instead of on the session socket.  Without it every process holding
 * a session fd shares one queue of replies, and each caller waits while the
 * head reply is another's: one stopped holder would stall all of them.  luod
 * takes the bit and the fd off before the kernel's checks; on a connection
 * (device commands) the bit makes the op no command (ENOTTY).
 */
#define LUO_WIRE_OP_REPLY_SOCKET (1u << 31)

/* The header of a request; the command struct follows it. */
struct luo_wire_request {
	uint32_t op;  /* command word, _IO(0xBA, nr) */
	uint32_t tag; /* echoed in the reply */
};

#define LUO_WIRE_REPLY_MORE (1u << 0) /* another reply message follows (listings) */
/*
 * Sent unasked, tagged 0, when luod refuses a connection (EMFILE: the uid is at
 * its connection limit); luod closes the connection after it.  Its result is
 * the answer to every request made on that connection.
 */
#define LUO_WIRE_REPLY_REFUSED (1u << 1)

struct luo_wire_reply {
	int32_t result; /* 0 or -errno */
	uint32_t tag;
	uint32_t flags; /* LUO_WIRE_REPLY_* */
	uint32_t size;	/* bytes of payload that follow */
};

/* ---- luod's extensions of the device commands (on a connection) ---- */

/* CREATE_SESSION with luod's trailing flags field (the kernel struct is 72 bytes). */
struct luo_wire_create_session {
	uint32_t size;
	int32_t fd;
	uint8_t name[LIVEUPDATE_SESSION_NAME_LENGTH];
	uint64_t flags; /* LUO_SESSION_HANDOVER_ON_CLOSE */
};

enum {
	LUO_CMD_DEVICE_OPEN =
		0x80, /* claim the exclusive /dev/liveupdate slot for this connection */
	LUO_CMD_STATUS = 0x81,
	LUO_CMD_LIST = 0x82,
	LUO_CMD_SHOW = 0x83,
	LUO_CMD_UPDATE = 0x84,
	LUO_CMD_REBOOT = 0x85,
	LUO_CMD_IS_SESSION = 0x86, /* one fd attached */
	LUO_CMD_DROP = 0x87,	   /* remove a session nobody holds */
	LUO_CMD_DUMP_STATE = 0x88, /* the reply carries a sealed memfd */
	LUO_CMD_KEXEC = 0x89,	   /* the kernel (and initrd) fds attached */
};
#define LUO_IOCTL_DEVICE_OPEN _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_DEVICE_OPEN)
#define LUO_IOCTL_STATUS _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_STATUS)
#define LUO_IOCTL_LIST _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_LIST)
#define LUO_IOCTL_SHOW _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_SHOW)
#define LUO_IOCTL_UPDATE _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_UPDATE)
#define LUO_IOCTL_REBOOT _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_REBOOT)
#define LUO_IOCTL_IS_SESSION _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_IS_SESSION)
#define LUO_IOCTL_DROP _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_DROP)
#define LUO_IOCTL_DUMP_STATE _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_DUMP_STATE)
#define LUO_IOCTL_KEXEC _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_KEXEC)

/* DEVICE_OPEN: no arguments beyond size; reserved must be 0. */
struct luo_wire_simple {
	uint32_t size;
	uint32_t reserved;
};

struct luo_wire_status {
	uint32_t size;
	uint32_t reserved;
	uint64_t update_number;
	uint64_t pid;
	uint64_t n_outgoing;
	uint64_t n_incoming;
	uint64_t n_files;
	uint64_t n_connections;
	uint64_t fd_limit; /* luod's RLIMIT_NOFILE */
	uint64_t fds_in_use;
	uint64_t started_usec;	 /* CLOCK_REALTIME of luod's first start */
	uint64_t n_live_updates; /* luod re-execs since its first start */
	char version[32];
	/* luod's capacity and the caller's uid's part of it (luod(8)); a client
	 * that sends the struct without these fields gets it without them. */
	uint64_t fd_capacity;  /* fd_limit less the fds luod keeps for itself */
	uint64_t root_reserve; /* of the capacity, what no other uid can take */
	uint64_t uid_fd_share; /* the most the caller's uid may hold (root: capacity) */
	uint64_t uid_fds;      /* what it holds: sessions, files and connections */
	/* Since luod has a keeper and a worker (older luods stop at version). */
	uint64_t worker_pid;
	uint64_t n_worker_restarts; /* workers started again after one died */
	uint64_t binary_since_usec; /* CLOCK_REALTIME when the running binary started */
	uint64_t journal_size;	    /* bytes of snapshot and log */
	char binary[256];	    /* the binary running now */
};

/*
 * Listing entries grow at the end.  A client says in its LIST/SHOW request
 * which entry size it knows (0, or a request without the field: the first
 * version's); luod sends each entry cut or padded to min(that, its own size)
 * and says which size it used.  So an old client gets the entries it knows,
 * and a new client reads what an old luod sends.
 */
struct luo_wire_session_entry {
	uint8_t name[LIVEUPDATE_SESSION_NAME_LENGTH];
	uint32_t kind;	/* enum luo_session_kind */
	uint32_t state; /* enum luo_session_state */
	uint32_t uid;
	uint32_t reserved;
	uint64_t flags;
	uint64_t n_files;
	/* since luo 0.2 (LUO_WIRE_SESSION_ENTRY_V2) */
	uint64_t bytes;		/* sum of the files' sizes (file_size below) */
	uint64_t created_usec;	/* CLOCK_REALTIME of its creation; 0: unknown */
	uint64_t handover_usec; /* CLOCK_REALTIME of its handover; 0: none or unknown */
	uint64_t update_number; /* luod's live update number when it was created */
	uint32_t creator_pid;	/* the process that created it; 0: unknown */
	uint32_t reserved2;
	char creator_comm[16]; /* that process's name (comm), NUL-terminated */
};
#define LUO_WIRE_SESSION_ENTRY_V1 96
#define LUO_WIRE_SESSION_ENTRY_V2 152

/*
 * LIST: the first reply carries this struct (count set) like any reply; when
 * it has LUO_WIRE_REPLY_MORE, further messages follow, each a payload of whole
 * entries of entry_size bytes (possibly none), LUO_WIRE_REPLY_MORE on all but
 * the last.  A 16-byte request (the first version) gets
 * LUO_WIRE_SESSION_ENTRY_V1 entries.
 */
struct luo_wire_list {
	uint32_t size;
	uint32_t reserved;
	uint64_t count; /* out: total entries */
	/* since luo 0.2 */
	uint32_t entry_size; /* in: the size the client knows (0: v1); out: the size sent */
	uint32_t reserved2;
	uint64_t update_number; /* out: luod's live update number */
};
#define LUO_WIRE_LIST_V1 16

struct luo_wire_file_entry {
	uint64_t token;
	char compatible[48];
	uint32_t retrieved;
	int32_t retrieve_error;
	uint64_t data_size; /* bytes of handler data in luod's record */
	/* since luo 0.2 (LUO_WIRE_FILE_ENTRY_V2) */
	uint64_t file_size; /* st_size of the file luod holds (memfd and regular file bytes) */
	uint32_t file_mode; /* its st_mode (type and permission bits) */
	uint32_t reserved;
};
#define LUO_WIRE_FILE_ENTRY_V1 72
#define LUO_WIRE_FILE_ENTRY_V2 88

/*
 * SHOW: the first reply carries this struct (count set), with
 * LUO_WIRE_REPLY_MORE; the second message carries exactly one session entry
 * (session_entry_size bytes); then file entries (file_entry_size bytes each)
 * stream as for LIST.  An 80-byte request (the first version) gets v1 entries.
 */
struct luo_wire_show {
	uint32_t size;
	uint32_t kind; /* which namespace: enum luo_session_kind */
	uint8_t name[LIVEUPDATE_SESSION_NAME_LENGTH];
	uint64_t count; /* out: files */
	/* since luo 0.2 */
	uint32_t session_entry_size; /* in: known (0: v1); out: sent */
	uint32_t file_entry_size;    /* in: known (0: v1); out: sent */
	uint64_t update_number;	     /* out: luod's live update number */
	/* in: with LUO_WIRE_OF_UID in of_flags, the session is looked up in
	 * of_uid's names instead of the caller's (root, or that uid itself). */
	uint32_t of_uid;
	uint32_t of_flags;
};
#define LUO_WIRE_SHOW_V1 80
/* Names are per uid: a command names a session in the caller's own names
 * unless it sets this flag and a uid (luoctl --uid). */
#define LUO_WIRE_OF_UID (1u << 0)

/*
 * DUMP_STATE: luod encodes its engine's state (luo_state_encode(), the format
 * of its live update) into a sealed memfd, which the reply carries.  Root or
 * luod's own uid only (EPERM otherwise): the state names every uid's sessions.
 */
struct luo_wire_dump_state {
	uint32_t size;
	uint32_t reserved;
	uint64_t state_size; /* out: bytes in the memfd */
};

#define LUO_UPDATE_PATH_MAX 512
struct luo_wire_update {
	uint32_t size;
	uint32_t flags;			     /* none defined */
	char exec_path[LUO_UPDATE_PATH_MAX]; /* empty: luod's own binary */
	/* out: measured by luod */
	uint64_t serialize_usec;
	uint64_t exec_usec; /* from execve() to the new luod's main() */
	uint64_t restore_usec;
	uint64_t total_usec; /* from receiving the request to replying */
	uint64_t state_size;
	int32_t rolled_back; /* 1 if the new binary refused and the old one took back */
	uint32_t reserved2;
};

struct luo_wire_reboot {
	uint32_t size;
	uint32_t reserved;
	uint64_t update_number; /* out */
	uint64_t total_usec;	/* out */
};

struct luo_wire_is_session {
	uint32_t size;
	uint32_t reserved;
	uint32_t is_session; /* out: 1 or 0 */
	uint32_t reserved2;
};

/* Which namespace DROP looks in; ANY: the incoming session of the name, else the outgoing. */
enum {
	LUO_DROP_ANY = 0,
	LUO_DROP_OUTGOING = 1,
	LUO_DROP_INCOMING = 2,
};

struct luo_wire_drop {
	uint32_t size;
	uint32_t kind; /* LUO_DROP_* */
	uint8_t name[LIVEUPDATE_SESSION_NAME_LENGTH];
	uint32_t of_uid; /* as in struct luo_wire_show */
	uint32_t of_flags;
};
#define LUO_WIRE_DROP_V1 72

/*
 * KEXEC: a real kexec through the kernel's /dev/liveupdate (docs/kernel-mode.md).
 * Root only (EPERM).  The request carries the new kernel's fd and, with
 * LUO_KEXEC_INITRD, the initrd's as a second fd.  On success luod replies
 * nothing: the machine reboots into the new kernel.  Errors: ENODEV (no
 * /dev/liveupdate), EBUSY (another process holds the device, or an update is
 * under way), EOPNOTSUPP (files the kernel cannot carry, without
 * LUO_KEXEC_DROP_UNSUPPORTED: the reply carries the struct with n_refused set
 * and LUO_WIRE_REPLY_MORE, then messages of whole struct
 * luo_wire_kexec_file entries, the last without LUO_WIRE_REPLY_MORE; at most
 * LUO_KEXEC_REFUSED_MAX entries are listed), or the errno of
 * kexec_file_load() or reboot().  On any error nothing has changed.
 */
#define LUO_KEXEC_DROP_UNSUPPORTED (1u << 0) /* leave the files the kernel refuses behind */
#define LUO_KEXEC_INITRD (1u << 1)	     /* a second fd: the initrd */
#define LUO_KEXEC_FLAGS_ALL (LUO_KEXEC_DROP_UNSUPPORTED | LUO_KEXEC_INITRD)
/* The command line with its NUL: x86's COMMAND_LINE_SIZE. */
#define LUO_KEXEC_CMDLINE_MAX 2048
#define LUO_KEXEC_REFUSED_MAX 4096
struct luo_wire_kexec {
	uint32_t size;
	uint32_t flags; /* LUO_KEXEC_* */
	/* out (an EOPNOTSUPP reply) */
	uint64_t n_sessions;		     /* sessions that would cross */
	uint64_t n_files;		     /* files of those sessions */
	uint64_t n_refused;		     /* files the kernel cannot carry */
	char cmdline[LUO_KEXEC_CMDLINE_MAX]; /* NUL-terminated, may be empty */
};

struct luo_wire_kexec_file {
	uint8_t name[LIVEUPDATE_SESSION_NAME_LENGTH]; /* the session's */
	uint32_t uid;				      /* its owner */
	int32_t error;				      /* what the kernel said (-errno) */
	uint64_t token;
	char kind[48]; /* the handler's compatible ("socket-v2") */
};

/* ---- luod's extensions of the session commands (on a session fd) ---- */
enum {
	LUO_CMD_SESSION_HANDOVER = 0x44,
	LUO_CMD_SESSION_GET_OWNER = 0x45,
	LUO_CMD_SESSION_PRESERVE_FDS = 0x46, /* 1..LUO_WIRE_BATCH_MAX fds attached */
	LUO_CMD_SESSION_RETRIEVE_FDS = 0x47, /* the reply carries count fds */
};
#define LUO_SESSION_HANDOVER _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_SESSION_HANDOVER)
#define LUO_SESSION_GET_OWNER _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_SESSION_GET_OWNER)
#define LUO_SESSION_PRESERVE_FDS _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_SESSION_PRESERVE_FDS)
#define LUO_SESSION_RETRIEVE_FDS _IO(LIVEUPDATE_IOCTL_TYPE, LUO_CMD_SESSION_RETRIEVE_FDS)
/* GET_OWNER: the uid that owns the session (whose names it is among). */
struct luo_wire_get_owner {
	uint32_t size;
	uint32_t reserved;
	uint32_t uid; /* out */
	uint32_t reserved2;
};
/* HANDOVER: struct luo_wire_simple, reserved must be 0. */

/*
 * Batches: many files per message (libluo's luo_session_preserve_fds() and
 * luo_session_retrieve_fds()).  One message carries at most
 * LUO_WIRE_BATCH_MAX files: SCM_MAX_FD (253) less one slot kept for the
 * request's own reply socket (LUO_WIRE_OP_REPLY_SOCKET), the last fd, which
 * luod takes off before the batch is checked.  The struct is variable: size is
 * offsetof(tokens) + 8 * count, and the message's SCM_RIGHTS fds are the
 * files, fds[i] under tokens[i].
 *
 * PRESERVE_FDS: a batch of any size travels as parts, each one message with
 * its reply.  The first part has LUO_WIRE_FDS_BEGIN, the last
 * LUO_WIRE_FDS_COMMIT (one part: both); every part names the batch with the
 * client's id.  luod stages the files of each part (nothing is preserved,
 * nothing is visible) and applies the whole batch when the last part comes:
 * all of it, or, when a file fails, none of it, with `failed` set to the
 * failing file's index in the whole batch in the error reply's payload.
 * Staged parts are dropped when the endpoint they came on hangs up, when a
 * part fails, when the session moves on, or by a message with only
 * LUO_WIRE_FDS_ABORT (count 0, no fds: the client gave up, the reply is 0).
 *
 * RETRIEVE_FDS: count tokens in, count fds out in the reply (in order); on
 * an error, `failed` is the index in this message of the token that failed.
 * Each message stands alone (a retrieve can be repeated: libluo closes what
 * earlier messages gave when a later one fails).
 */
#define LUO_WIRE_BATCH_MAX 252
#define LUO_WIRE_FDS_BEGIN (1u << 0)  /* PRESERVE_FDS: the first part of a batch */
#define LUO_WIRE_FDS_COMMIT (1u << 1) /* PRESERVE_FDS: the last part: apply the batch */
#define LUO_WIRE_FDS_ABORT (1u << 2)  /* PRESERVE_FDS: drop the batch (count 0, no fds) */
#define LUO_WIRE_FDS_FLAGS (LUO_WIRE_FDS_BEGIN | LUO_WIRE_FDS_COMMIT | LUO_WIRE_FDS_ABORT)
#define LUO_WIRE_FDS_NONE UINT32_MAX /* `failed` when no one file failed */
struct luo_wire_fds {
	uint32_t size;
	uint32_t flags;	 /* LUO_WIRE_FDS_* (0 for RETRIEVE_FDS) */
	uint32_t count;	 /* tokens in this message, 1..LUO_WIRE_BATCH_MAX (ABORT: 0) */
	uint32_t failed; /* out (error replies too): index of the file that failed */
	uint64_t batch;	 /* PRESERVE_FDS: the client's id of the batch; 0 for RETRIEVE_FDS */
	uint64_t tokens[LUO_WIRE_BATCH_MAX];
};
#define LUO_WIRE_FDS_HEADER 24 /* offsetof(struct luo_wire_fds, tokens) */

/* ---- command table: the kernel's checks are driven by it ---- */
enum luo_wire_target {
	LUO_WIRE_DEVICE = 0,  /* a connection to luod's listening socket */
	LUO_WIRE_SESSION = 1, /* a session fd */
};

struct luo_wire_command {
	uint32_t nr;
	enum luo_wire_target target;
	uint32_t min_size;  /* the kernel's full struct (or luod's for extensions) */
	uint32_t full_size; /* the struct luod knows */
	uint8_t n_fds;	    /* fds the request carries (a batch: at most this many) */
	uint8_t reply_fds;  /* fds the reply carries on success (a batch: at most) */
	bool batch;	    /* struct luo_wire_fds: as many fds as its count says */
	const char *name;
};

/* The command nr on target, or NULL. */
const struct luo_wire_command *luo_wire_command_find(enum luo_wire_target target, uint32_t nr);

/* ---- server side (luod) ----
 *
 * A request is checked in the order of the list at the top of this file:
 *
 *   uint32_t tag = luo_wire_request_tag(msg, len);   // for the reply, even on errors
 *   r = luo_wire_request_parse(target, msg, len, &p);               // steps 1-3
 *   (luod: the handle lookup / ESTALE, then step 4, the session kind)
 *   r = luo_wire_request_check_struct(&p, buf);                    // steps 5-6
 *   r = luo_wire_request_check_fds(&p, n_fds);                     // step 7
 *   ... run the command on buf ...
 *   luo_wire_reply_send(sock, p.tag, 0, 0, buf, luo_wire_reply_size(&p), &fd, 1);
 *
 * On an error reply the payload is empty (as the kernel copies nothing back
 * on failure); luod closes every received fd itself on every path.  None of
 * these functions allocates or reads past len.
 */

/* A request that passed steps 1-3.  payload points into the caller's message. */
struct luo_wire_parsed {
	const struct luo_wire_command *cmd;
	uint32_t op;
	uint32_t tag;
	const uint8_t *payload; /* the command struct as sent, size bytes (unaligned) */
	uint32_t size;		/* its size field, == the payload's length */
};

/* The request's tag, or 0 when msg is shorter than the header (0 is nobody's tag). */
uint32_t luo_wire_request_tag(const void *msg, size_t len);

/*
 * Checks steps 1-3 of a request message received on a socket of kind target.
 * Returns 0 and fills *ret, or:
 *   -EBADMSG  len < sizeof(struct luo_wire_request): no header, no tag;
 *             luod may drop the message or close the connection
 *   -EINVAL   the nr (op & 0xff) is no command of target
 *   -ENOTTY   op != _IO(0xBA, nr)
 *   -EFAULT   the payload is shorter than 4 bytes or not exactly `size` bytes
 */
int luo_wire_request_parse(enum luo_wire_target target, const void *msg, size_t len,
			   struct luo_wire_parsed *ret);

/*
 * Steps 5-6: copies the struct into ret_struct (p->cmd->full_size bytes; the
 * bytes the client did not send are zeroed, the size field is the client's).
 * Returns 0, or:
 *   -EINVAL   size < p->cmd->min_size
 *   -E2BIG    a non-zero byte past p->cmd->full_size
 * ret_struct is written only on success.
 */
int luo_wire_request_check_struct(const struct luo_wire_parsed *p, void *ret_struct);

/*
 * Step 7: n_fds is the number of fds that came with the request.  Returns 0,
 * or -EBADF when a command that takes one fd came without, -EINVAL when fds
 * came with a command that takes none, or more than the command takes.  For a
 * batch command, with its struct (checked) in batch_struct: -EINVAL for a
 * count of 0 (but for an ABORT alone) or above LUO_WIRE_BATCH_MAX, a size
 * that is not the count's, or unknown flags; then (PRESERVE_FDS) -EBADF for fewer fds than the count,
 * -EINVAL for more; (RETRIEVE_FDS) -EINVAL for any fd.
 */
int luo_wire_request_check_fds(const struct luo_wire_parsed *p, size_t n_fds);
int luo_wire_request_check_batch(const struct luo_wire_parsed *p, const struct luo_wire_fds *f,
				 size_t n_fds);

/* Bytes of the struct to copy back in a successful reply: min(size, full_size). */
uint32_t luo_wire_reply_size(const struct luo_wire_parsed *p);

/* The transport (connecting, sending and receiving with fds, waits with a
 * deadline, the client call) is in transport.h. */
#include "protocol/transport.h"
