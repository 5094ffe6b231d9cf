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
/* Describes a blob for a person (or as JSON) on f; the blob is checked as by decode. */
int luo_state_dump(const void *blob, size_t size, FILE *f, bool json);
