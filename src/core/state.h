/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the state codec
 *
 * The whole engine (sessions of both kinds with their state, files with
 * handler data and fd slots, FLBs, the live update number, the handle
 * counter) as a flattened device tree, and back.  The layout is described in
 * state.c; every node carries its own `compatible` version string.
 *
 * The daemon adds its own node (connections, session sockets) through struct
 * luo_state_ext: the codec calls write() inside the root node while encoding
 * with libfdt's sequential-write API, and read() with the node's offset while
 * decoding (-1 if the blob has no such node).
 *
 * Encoding is deterministic: encode(decode(encode(e))) is byte-identical to
 * encode(e).  Decoding checks the whole blob (fdt_check_full), every
 * compatible, every property length, and cross-checks (unique names per
 * namespace, unique tokens per session, unique fd slots, known handlers).  A
 * bad blob gives -EBADMSG (-EPROTONOSUPPORT for an unknown version string,
 * -ENOPROTOOPT for a handler this binary lacks) and leaves the engine empty.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "engine.h"

#define LUO_STATE_COMPATIBLE "luod-v1"
#define LUO_STATE_MAX_SIZE (UINT32_C(1) << 30)

/* Do not adopt the fds named in the blob: they are not checked, not indexed for
 * EBUSY and never closed by the engine (for fuzzing and inspection). */
#define LUO_STATE_BORROW_FDS (1u << 0)

struct luo_state_ext {
	const char *node; /* node name under the root, e.g. "luod" */
	/* Sequential-write calls for the node's body; 0 or -errno (-ENOSPC: grow and retry). */
	int (*write)(void *fdt, void *userdata);
	/* offset is the node's, or -1 if absent; 0 or -errno. */
	int (*read)(const void *fdt, int offset, void *userdata);
	void *userdata;
};

/* Translates a libfdt error code (negative FDT_ERR_*) into -errno. */
int luo_fdt_errno(int fdt_err);

/* Encodes e (and ext, may be NULL) into a malloc'ed blob. */
int luo_state_encode(const luo_engine *e, const struct luo_state_ext *ext, void **ret_blob,
		     size_t *ret_size);
/*
 * Decodes blob into e, which must have no sessions and have its handlers
 * registered.  Unless LUO_STATE_BORROW_FDS, the engine takes ownership of the
 * fds the blob names, each of which must be open (-EBADF otherwise), and
 * rebuilds the identity index.  On failure e is as before and no fd is closed.
 */
int luo_state_decode(luo_engine *e, const void *blob, size_t size, unsigned flags,
		     const struct luo_state_ext *ext);
/*
 * Where a file of a blob that crossed a kexec is now: the fd that holds it
 * (taken over by the engine if the decode succeeds), or -ENOENT to leave the
 * file out; any other error stops the decode.  session_index counts the
 * blob's sessions from 0, in blob order.
 */
typedef int (*luo_state_fd_map)(size_t session_index, uint64_t token, int *ret_fd, void *userdata);
/*
 * Decodes a blob whose fd slots mean nothing in this process: the kernel
 * carried its files through a kexec and they were retrieved again.  map()
 * says where each file is now; its identity is computed from that fd, and
 * its handler records a frozen file again (its freeze), so that the record
 * describes the file as it is here.  FLB records are not read: nothing an
 * FLB holds crosses a kexec.  On failure e is as before and no fd map() gave
 * is closed (they are the caller's).
 */
int luo_state_decode_mapped(luo_engine *e, const void *blob, size_t size, luo_state_fd_map map,
			    void *userdata);
/* Describes a blob for a person (or as JSON) on f; the blob is checked as by decode. */
int luo_state_dump(const void *blob, size_t size, FILE *f, bool json);

/*
 * Codec internals shared by state.c and state-dump.c: the node versions, the
 * flag bits, and a validating walker over a blob.
 */
/* The name luod gives its ext node; luo_state_dump() accepts this one. */
#define LUO_STATE_EXT_NODE "luod"
#define LUO_STATE_FLB_COMPATIBLE "luo-flb-v1"
/* A session of two files or more: its files as arrays of the session node. */
#define LUO_STATE_SESSION_COMPATIBLE "luo-session-v2"
/* A session of at most one file: a node per file (still read whatever the count). */
#define LUO_STATE_SESSION_V1_COMPATIBLE "luo-session-v1"
/* The luo-session-v2 layout for a session whose flags carry
 * LUO_SESSION_FLAG_HANDED_OVER, which the earlier versions do not have: a
 * reader that predates the bit refuses the node by its version. */
#define LUO_STATE_SESSION_V3_COMPATIBLE "luo-session-v3"
#define LUO_STATE_FILE_COMPATIBLE "luo-file-v2"
/* Still read (its files' identities are computed again), never written. */
#define LUO_STATE_FILE_V1_COMPATIBLE "luo-file-v1"

#define LUO_STATE_FLB_INCOMING (1u << 0)
#define LUO_STATE_FLB_RETRIEVED (1u << 1)
#define LUO_STATE_FLB_FLAGS_ALL (LUO_STATE_FLB_INCOMING | LUO_STATE_FLB_RETRIEVED)
#define LUO_STATE_FILE_FROZEN (1u << 0)
#define LUO_STATE_FILE_RETRIEVED (1u << 1)
/* luo-file-v2 and luo-session-v2 records only: the identity in the record is by open file description. */
#define LUO_STATE_FILE_ID_BY_DESCRIPTION (1u << 2)
/* Bytes of a file's fixed record (token, dev, ino, extra, fd, flags, retrieve-error). */
#define LUO_STATE_FILE_RECORD_SIZE 44
#define LUO_STATE_FILE_V1_FLAGS_ALL (LUO_STATE_FILE_FROZEN | LUO_STATE_FILE_RETRIEVED)
#define LUO_STATE_FILE_FLAGS_ALL (LUO_STATE_FILE_V1_FLAGS_ALL | LUO_STATE_FILE_ID_BY_DESCRIPTION)

struct luo_state_root {
	uint64_t update_number;
	uint64_t next_handle;
	size_t size; /* of the blob */
};

struct luo_state_flb {
	const char *compatible; /* the FLB ops' compatible */
	uint64_t count;
	uint32_t flags;
	int fd; /* slot, or -1 */
	const void *data;
	size_t data_size;
};

struct luo_state_session {
	const char *name; /* not NUL-terminated: name_len bytes */
	size_t name_len;
	enum luo_session_kind kind;
	enum luo_session_state state;
	uint64_t flags;
	uint32_t uid;
	uint64_t handle;
};

struct luo_state_file {
	uint64_t token;
	const char *handler; /* the handler's compatible */
	int fd;		     /* slot, or -1 once discarded */
	uint32_t flags;	     /* frozen, retrieved (the identity's bit is in id) */
	/* The identity luod had indexed the file under (luo-file-v2), valid
	 * if has_id, which a zero dev, ino and extra in the blob leave unset. */
	struct luo_file_id id;
	bool has_id;
	int retrieve_error;
	const void *data;
	size_t data_size;
};

/*
 * Callbacks of luo_state_walk(), each optional, called in blob order as each
 * node is found valid, uniqueness included (fd slots across the blob,
 * handles, names per namespace, tokens per session, FLBs): a duplicate fails
 * at the node that repeats it, before its callback.  ext() comes last.  A
 * callback's error stops the walk and is returned.  Pointers into the blob
 * are valid during the call only.
 */
struct luo_state_visitor {
	/* The one ext node accepted under the root, or NULL for none. */
	const char *ext_node;
	int (*root)(const struct luo_state_root *r, void *userdata);
	int (*flb)(const struct luo_state_flb *flb, void *userdata);
	int (*session)(const struct luo_state_session *s, void *userdata);
	int (*file)(const struct luo_state_file *f, void *userdata);
	/* offset is -1 if there is no ext node; name is its name then, or NULL. */
	int (*ext)(const void *fdt, int offset, const char *name, void *userdata);
};

/* Checks blob as decode does (without handlers or fds) and reports what it holds. */
int luo_state_walk(const void *blob, size_t size, const struct luo_state_visitor *v,
		   void *userdata);
