/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: file handlers and File-Lifecycle-Bound state
 *
 * A handler serves one kind of file (spec section 5).  The engine owns the
 * preserved file: struct luo_handler_file is the part of it a handler sees.
 * @fd is luod's own reference to the file (O_CLOEXEC, owned by the engine,
 * closed by the engine); @data is the handler's serialized record, allocated
 * with malloc() by the handler, freed by the engine, written verbatim into
 * the state blob and handed back after a live update.
 *
 * Lifecycle of one file, with the operation the engine calls:
 *
 *   can_preserve -> get_id (EBUSY check) -> preserve
 *       -> [session closed before update] unpreserve
 *       -> [update] freeze -> ([another freeze failed] unfreeze)
 *   after the update:
 *       retrieve (first retrieve only) -> can_finish -> finish
 *
 * Operations return 0 or -errno; the bool ones return a decision.  A handler
 * may leave any optional operation NULL.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define LUO_COMPATIBLE_MAX 48 /* including the NUL: at most 47 bytes */
#define LUO_HANDLER_DATA_MAX 4096

struct luo_handler_file {
	int fd;
	void *data;
	size_t data_size;
	uint64_t token;
	/*
	 * Set while @fd is the very file this process checked at preserve and
	 * has held ever since (no replay, no decode, no update in between): a
	 * retrieve need not check again that @fd is the recorded file.
	 */
	bool held_since_preserve;
};

/*
 * The identity behind EBUSY.  Two files are the same when dev, ino and extra
 * are equal and, if by_description is set, kcmp(KCMP_FILE) says the open file
 * descriptions are the same.
 */
struct luo_file_id {
	uint64_t dev;
	uint64_t ino;
	uint64_t extra;
	bool by_description;
};

struct luo_flb;

struct luo_flb_ops {
	const char *compatible;
	/* First dependent file is being preserved. */
	int (*preserve)(struct luo_flb *flb);
	/* Last dependent file was unpreserved (its session aborted). */
	void (*unpreserve)(struct luo_flb *flb);
	/* First use after an update: a dependent file is being retrieved. */
	int (*retrieve)(struct luo_flb *flb);
	/* Last dependent file finished. */
	void (*finish)(struct luo_flb *flb);
};

/* One FLB instance per engine and ops; the engine counts, the ops keep data. */
struct luo_flb {
	const struct luo_flb_ops *ops;
	uint64_t count; /* dependent files preserved or not yet finished */
	bool incoming;	/* came over an update and is not yet retrieved */
	bool retrieved; /* retrieve ran after the update */
	int fd;		/* optional resource, owned by the engine, -EBADF if none */
	void *data;	/* malloc'ed by the ops, freed by the engine */
	size_t data_size;
	struct luo_engine *engine; /* the owner, NULL outside an engine */
};

struct luo_handler {
	const char *compatible;
	/* Cheap type check on luod's reference of the file, with its fstat(). */
	bool (*can_preserve)(const struct luo_handler *h, int fd, const struct stat *st);
	/* Identity of the file behind fd for the EBUSY check. */
	int (*get_id)(const struct luo_handler *h, int fd, const struct stat *st,
		      struct luo_file_id *ret);
	int (*preserve)(struct luo_handler_file *f);
	void (*unpreserve)(struct luo_handler_file *f);
	int (*freeze)(struct luo_handler_file *f);
	void (*unfreeze)(struct luo_handler_file *f);
	/* May replace f->fd; the engine hands out dups of f->fd afterwards. */
	int (*retrieve)(struct luo_handler_file *f);
	/*
	 * Set when retrieve only checks and repositions f->fd, never replaces
	 * it (nor its record, f->data): the engine then need not guard its
	 * identity index against a new fd, and the journal need not write the
	 * record again.
	 */
	bool retrieve_keeps_fd;
	/*
	 * Set when can_preserve refuses an O_PATH fd itself (F_GETFL, or any
	 * call that fails on one).  Unless every handler of an engine sets it,
	 * the engine asks F_GETFL first and no can_preserve sees an O_PATH fd.
	 */
	bool refuses_path_fds;
	bool (*can_finish)(struct luo_handler_file *f);
	void (*finish)(struct luo_handler_file *f);
	/* Optional File-Lifecycle-Bound state this handler's files depend on. */
	const struct luo_flb_ops *flb;
	/* Free for the handler's own use (tests keep their counters here). */
	void *userdata;
};

/* The built-in handlers, in registration order. */
extern const struct luo_handler luo_handler_memfd;
extern const struct luo_handler luo_handler_socket;
extern const struct luo_handler luo_handler_socket_v1; /* decodes an older luod's sockets */
extern const struct luo_handler luo_handler_pipe;
extern const struct luo_handler luo_handler_eventfd;
extern const struct luo_handler luo_handler_regular;
extern const struct luo_flb_ops luo_flb_netns;
