/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: engine internals shared by session.c, file.c, flb.c, identity.c and
 * state.c.  Nothing outside src/core includes this.
 */
#pragma once

#include "basic/hashmap.h"
#include "basic/list.h"
#include "engine.h"
#include "state.h"

#define LUO_MAX_HANDLERS 32
#define LUO_MAX_FLBS 32

struct luo_file {
	struct luo_handler_file hf; /* fd, data, data_size, token: what the handler sees */
	const struct luo_handler *handler;
	struct luo_flb *flb; /* the handler's FLB instance, or NULL */
	struct luo_session *session;
	struct list_node order;	   /* session->files, preservation order */
	struct hash_node by_token; /* session->tokens */
	struct luo_file_id id;
	void *id_node;		  /* identity index entry, NULL when not indexed */
	struct hash_node id_hash; /* the identity index by inode, when id is by inode */
	bool frozen;
	bool retrieved;
	int retrieve_error; /* permanent -errno of a failed first retrieve */
};

struct luo_session {
	struct luo_engine *engine;
	char name[LUO_NAME_FIELD]; /* NUL-terminated, 1..63 bytes */
	size_t name_len;
	enum luo_session_kind kind;
	enum luo_session_state state;
	uint64_t flags;
	uint32_t uid;
	uint64_t handle;	    /* 0 when no live handle */
	struct list_node order;	    /* engine->outgoing or engine->incoming */
	struct hash_node by_name;   /* engine->outgoing_names or engine->incoming_names */
	struct hash_node by_handle; /* engine->handles, when handle != 0 */
	struct list_head files;
	struct hashmap tokens;
};

struct luo_engine {
	const struct luo_handler *handlers[LUO_MAX_HANDLERS];
	size_t n_handlers;
	struct luo_flb flbs[LUO_MAX_FLBS];
	size_t n_flbs;
	uint64_t update_number;
	uint64_t next_handle; /* last handle id given out */
	struct list_head outgoing, incoming;
	struct hashmap outgoing_names, incoming_names, handles;
	void *identity_root; /* identity index (identity.c), NULL when no file is indexed */
	size_t n_files;
	bool borrowed_fds; /* decoded without adopting fds: never close them */
	/* A journal is attached: held fds are closed at its next commit, not at once. */
	struct luo_journal *journal;
	bool inheritable_fds; /* held fds are born without FD_CLOEXEC */
};

/* journal.c: closes a held fd now, or at the attached journal's next commit
 * (after the records that stop naming it). */
void luo_engine_close_held(struct luo_engine *e, int fd);
/* journal.c: makes a borrowing engine (a decode or replay without fds) own
 * the fds its state names: distinct, open, indexed for EBUSY.  0, -EBADF,
 * -EBADMSG (an fd named twice, or two files of one identity), -ENOMEM; on
 * failure the engine still borrows. */
int luo_engine_adopt_fds(struct luo_engine *e);
/* state.c: whether every fd in p is open (-EBADF if not), in batched poll()s. */
struct pollfd;
int luo_fds_check_open(struct pollfd *p, size_t n);
/* state.c: the codec's fixed record of a file (LUO_STATE_FILE_RECORD_SIZE
 * bytes), as a session node carries it, and its parse (with the checks of
 * the codec; has_id, flags without the identity bit). */
void luo_state_fill_file_record(uint8_t *rec, const struct luo_engine *e, const struct luo_file *f);
int luo_state_read_file_record(const uint8_t *rec, struct luo_state_file *ret);
/* state.c: whether a session state belongs to a kind (outgoing: open; incoming: the rest). */
bool luo_state_fits_kind(uint32_t kind, uint32_t state);
/* state.c: the FLB ops of that compatible among e's handlers', or NULL. */
const struct luo_flb_ops *luo_state_find_flb_ops(const luo_engine *e, const char *compatible);
/* state.c: a malloc'ed copy of size bytes (NULL for 0); 0 or -ENOMEM. */
int luo_state_dup_data(const void *data, size_t size, void **ret);

/* file.c */
/* A new fd for the file behind fd, held by the engine: >= 3, FD_CLOEXEC unless
 * the engine's held fds are inheritable. */
int luo_engine_dup_held(const struct luo_engine *e, int fd);
void luo_file_free(struct luo_file *f, bool close_fd);
/* identity.c: 0 or -EBUSY (already present) / -ENOMEM. */
int luo_identity_add(struct luo_engine *e, struct luo_file *f);
void luo_identity_remove(struct luo_engine *e, struct luo_file *f);
/* Is a file with this id (and, by description, this fd) already indexed? */
bool luo_identity_contains(struct luo_engine *e, const struct luo_file_id *id, int fd);
/*
 * Indexes f under an identity computed before, with no system call unless an
 * identity by description shares its (dev, ino, extra) with another file.
 * For the state decoder: an id recorded at encode time (f->id of the old
 * engine) still holds for the same fd after luod's re-exec, since the fd
 * and its open file description travel unchanged.  Replaces any index entry
 * f had.  0, -EBUSY (another indexed file has this identity) or -ENOMEM;
 * on failure f is not indexed.  Costs O(1) for identities by inode and for
 * eventfds on kernels that report eventfd-id; luo_file_identify() costs an
 * fstat() and the handler's get_id() (for eventfds a /proc read) on top.
 */
int luo_identity_add_known(struct luo_engine *e, struct luo_file *f, const struct luo_file_id *id);
/* Drops the whole index at once (engine teardown); removal then only forgets. */
void luo_identity_destroy(struct luo_engine *e);
/* flb.c */
struct luo_flb *luo_flb_get(struct luo_engine *e, const struct luo_flb_ops *ops);
int luo_flb_file_preserve(struct luo_flb *flb);
void luo_flb_file_unpreserve(struct luo_flb *flb);
int luo_flb_file_retrieve(struct luo_flb *flb);
void luo_flb_file_finish(struct luo_flb *flb);

/*
 * Constructors shared by the command paths and the state decoder, so that a
 * decoded engine has exactly the invariants of one built by commands.
 */
/* session.c: allocates a session and links it into its kind's list and name
 * index; -EEXIST if the name is taken in that namespace, -ENOMEM. */
int luo_session_new(struct luo_engine *e, const char *name, size_t name_len,
		    enum luo_session_kind kind, enum luo_session_state state, uint64_t flags,
		    uint32_t uid, struct luo_session **ret);
/* Unlinks and frees a session and its files without calling any handler;
 * closes the files' fds unless the engine borrows them. */
void luo_session_free(struct luo_session *s);
/* Gives the session a handle id (0: none) and indexes it. */
int luo_session_set_handle(struct luo_session *s, uint64_t handle);
/* file.c: appends a file to s in preservation order and indexes its token.
 * Takes ownership of fd and data on success only.  -EEXIST for a taken token. */
int luo_file_new(struct luo_session *s, uint64_t token, const struct luo_handler *h, int fd,
		 void *data, size_t data_size, struct luo_file **ret);

/*
 * Helpers shared between the engine's own files (added after the constructors
 * above; the state codec may use them too).
 */
/* engine.c: checks the kernel's 64-byte name field: returns the name's length
 * (1..63) or -EINVAL when it is empty or has no NUL. */
int luo_name_parse(const uint8_t field[LUO_NAME_FIELD]);
/* session.c: the session of that name in uid's namespace of kind, or NULL. */
struct luo_session *luo_session_lookup(const struct luo_engine *e, enum luo_session_kind kind,
				       uint32_t uid, const char *name, size_t name_len);
/* session.c: the first session of that name of kind in any uid's namespace
 * (O(sessions): tests and tools). */
struct luo_session *luo_session_lookup_any(const struct luo_engine *e, enum luo_session_kind kind,
					   const char *name, size_t name_len);
/* session.c: freezes every file of s in preservation order; on failure unfreezes
 * those frozen so far (newest first) and returns the freeze error. */
int luo_session_freeze(struct luo_session *s);
/* session.c: unfreezes every frozen file of s, newest first. */
void luo_session_unfreeze(struct luo_session *s);
/* session.c: moves a frozen outgoing session to the incoming list as WAITING,
 * drops its handle and marks its FLBs incoming.  The caller has reserved room
 * in incoming_names and checked that the name is free there. */
void luo_session_move_incoming(struct luo_session *s);
/* session.c: drops a session at reboot: no handler call, FLB counts decremented. */
void luo_session_drop(struct luo_session *s);
/* file.c: the file with that token in s, or NULL. */
struct luo_file *luo_file_lookup(const struct luo_session *s, uint64_t token);
/* file.c: computes f's identity (fstat + the handler's get_id, or the open
 * file description by default) and indexes it: 0, -EBUSY, -ENOMEM or -errno. */
int luo_file_identify(struct luo_file *f);
/* file.c: end of one file on the abort path: handler unpreserve, FLB
 * unpreserve accounting, identity remove, close, free. */
void luo_file_unpreserve(struct luo_file *f);
/* file.c: end of one file on the finish path: handler finish, FLB finish
 * accounting, identity remove, close, free. */
void luo_file_finish(struct luo_file *f);
/* identity.c: whether two of our fds share one open file description
 * (false when the kernel cannot tell). */
bool luo_fd_same_description(int fd1, int fd2);
/* flb.c: closes the FLB's fd (if close_fd) and frees its data; resets its flags. */
void luo_flb_release(struct luo_flb *flb, bool close_fd);
