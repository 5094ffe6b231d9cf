/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the state codec: the engine as a flattened device tree
 *
 * The layout (all integers big-endian, as libfdt stores them):
 *
 *   / {
 *       compatible = "luod-v1"; update-number = <u64>; next-handle = <u64>;
 *       flb@<i> { compatible = "luo-flb-v1"; flb = "<ops compatible>";
 *                 count = <u64>; flags = <u32: incoming, retrieved>;
 *                 fd = <s32 slot or -1>; data = [bytes]; };
 *       session@<i> { compatible = "luo-session-v2"; name = [1..63 bytes];
 *                 kind = <u32>; state = <u32>; flags = <u64>; uid = <u32>;
 *                 handle = <u64>;
 *                 handlers = "<handler compatible>", ...;
 *                 files = [n records of <token:u64 dev:u64 ino:u64
 *                          extra:u64 fd:s32 flags:u32 retrieve-error:s32
 *                          handler:u32 data-offset:u32 data-size:u32>];
 *                 file-data = [bytes]; };
 *       session@<i> { compatible = "luo-session-v1"; name; kind; state;
 *                 flags; uid; handle;
 *                 file@<j> { compatible = "luo-file-v2";
 *                            handler = "<handler compatible>";
 *                            record = <token:u64 dev:u64 ino:u64 extra:u64
 *                                      fd:s32 flags:u32 retrieve-error:s32>;
 *                            data = [bytes]; };
 *       };
 *       <ext node, written by the daemon through struct luo_state_ext>
 *   };
 *
 * A file's fixed fields share one property, its record, because the cost of
 * reading a blob (fdt_check_full() first of all) grows with the number of
 * properties, and a live update of 10,000 files has about 0.1 us for each.
 * For the same reason a session of two files or more (luo-session-v2)
 * carries them in three properties whatever their number: their records
 * back to back in files, each naming its handler by index into handlers
 * (each handler once, in the order of its first file, all of them used) and
 * its data by place in file-data (back to back in file order, filling it
 * exactly).  A session of one file or none is still written as
 * luo-session-v1, a node per file, where packing saves nothing; both
 * versions are read whatever their number of files.
 *
 * (dev, ino, extra) and the record's flag LUO_STATE_FILE_ID_BY_DESCRIPTION
 * are the identity the engine had indexed the file under: the decoder
 * indexes it again as is (luo_identity_add_known()), without a system call,
 * since the fd and its open file description come through execve()
 * unchanged (so does a luo-session-v2 record's).  All three zero means
 * "not known" (a file without fd, or one decoded from luo-file-v1): the
 * decoder computes it then.  luo-file-v1
 * nodes, { compatible; token = <u64>; handler; fd = <s32>; data;
 * flags = <u32>; retrieve-error = <s32>; }, are still read, never written.
 *
 * FLBs in the engine's order, then outgoing sessions in creation order and
 * incoming ones in arrival order, files in preservation order.  Node indexes
 * count from 0 per kind of node and are checked on the way in.  An fd "slot"
 * is the descriptor number in the process that holds the state (luod keeps
 * its fds across execve()).  What decodes re-encodes to a fixed point:
 * encode(decode(encode(e))) is encode(e), byte for byte.
 *
 * Rules beyond the layout, all checked on the way in: names 1..63 bytes
 * without NUL, unique per namespace; tokens unique per session; fd slots
 * unique across the blob, and -1 only for a file whose retrieve failed;
 * handles unique and never above next-handle; state consistent with kind;
 * frozen files only in incoming sessions, retrieved (or failed) files only
 * in retrieved, finished or stuck ones, no files in finished ones; no
 * unknown flags; data at most LUO_HANDLER_DATA_MAX bytes; an identity only
 * for a file with an fd, by description only if it is not all zero; every
 * handler and FLB known to the engine (else -ENOPROTOOPT).
 *
 * Lifecycle: luo_state_encode() measures the engine, allocates the blob
 * once and writes it in one pass (see "encoding" below).
 * luo_state_decode() lets luo_state_walk() check each node as it is
 * reached, uniqueness included, and builds the engine from it with the
 * engine's own constructors, node by node, in a single pass, while
 * fdt_check_full() runs beside it on a large blob.  Any failure tears down
 * everything built so far without closing an fd named in the blob: until
 * decode succeeds, those fds are the caller's.
 */
#include <assert.h>
#include <fcntl.h>
#include <libfdt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "basic/hashmap.h"
#include "basic/macro.h"
#include "core/engine-internal.h"
#include "core/state.h"

int luo_fdt_errno(int fdt_err)
{
	if (fdt_err >= 0)
		return fdt_err;
	switch (-fdt_err) {
	case FDT_ERR_NOTFOUND:
		return -ENOENT;
	case FDT_ERR_EXISTS:
		return -EEXIST;
	case FDT_ERR_NOSPACE:
		return -ENOSPC;
#ifdef FDT_ERR_NOMEM
	case FDT_ERR_NOMEM:
		return -ENOMEM;
#endif
	case FDT_ERR_BADFLAGS:
		return -EINVAL;
	default:
		/* BADMAGIC, BADVERSION, BADSTRUCTURE, TRUNCATED, BADOFFSET,
		 * ALIGNMENT, ...: all say the blob is not what it claims. */
		return -EBADMSG;
	}
}

/* ---- property names ------------------------------------------------------ */

/* Every property name the codec knows, in the order the encoder lays out its
 * strings block. */
enum prop {
	PROP_COMPATIBLE,
	PROP_UPDATE_NUMBER,
	PROP_NEXT_HANDLE,
	PROP_FLB,
	PROP_COUNT,
	PROP_FLAGS,
	PROP_FD,
	PROP_DATA,
	PROP_NAME,
	PROP_KIND,
	PROP_STATE,
	PROP_UID,
	PROP_HANDLE,
	PROP_HANDLER,
	PROP_RECORD,
	PROP_HANDLERS,
	PROP_FILES,
	PROP_FILE_DATA,
	N_PROPS_WRITTEN,
	/* luo-file-v1 only: read, never written. */
	PROP_TOKEN = N_PROPS_WRITTEN,
	PROP_RETRIEVE_ERROR,
	N_PROPS,
	PROP_UNKNOWN = N_PROPS,
};

static const struct {
	const char *name;
	uint8_t len;
} prop_names[N_PROPS] = {
#define P(id, s) [id] = { s, sizeof(s) - 1 }
	P(PROP_COMPATIBLE, "compatible"),
	P(PROP_UPDATE_NUMBER, "update-number"),
	P(PROP_NEXT_HANDLE, "next-handle"),
	P(PROP_FLB, "flb"),
	P(PROP_COUNT, "count"),
	P(PROP_FLAGS, "flags"),
	P(PROP_FD, "fd"),
	P(PROP_DATA, "data"),
	P(PROP_NAME, "name"),
	P(PROP_KIND, "kind"),
	P(PROP_STATE, "state"),
	P(PROP_UID, "uid"),
	P(PROP_HANDLE, "handle"),
	P(PROP_HANDLER, "handler"),
	P(PROP_RECORD, "record"),
	P(PROP_HANDLERS, "handlers"),
	P(PROP_FILES, "files"),
	P(PROP_FILE_DATA, "file-data"),
	P(PROP_TOKEN, "token"),
	P(PROP_RETRIEVE_ERROR, "retrieve-error"),
#undef P
};

/* The record of a luo-file-v2 node: big-endian, no padding. */
enum {
	RECORD_TOKEN = 0,
	RECORD_DEV = 8,
	RECORD_INO = 16,
	RECORD_EXTRA = 24,
	RECORD_FD = 32,
	RECORD_FLAGS = 36,
	RECORD_RETRIEVE_ERROR = 40,
	RECORD_SIZE = LUO_STATE_FILE_RECORD_SIZE,
};

/* A file's record in a luo-session-v2's files: a luo-file-v2 record, then where
 * its handler and its data are.  Big-endian, no padding. */
enum {
	PACKED_HANDLER = RECORD_SIZE, /* index into the session's handlers */
	PACKED_DATA_OFFSET = 48,      /* into the session's file-data */
	PACKED_DATA_SIZE = 52,
	PACKED_SIZE = 56,
};

static size_t tag_align(size_t n)
{
	return (n + FDT_TAGSIZE - 1) & ~(size_t)(FDT_TAGSIZE - 1);
}

/* ---- encoding ---------------------------------------------------------- */

/*
 * The blob is written by hand rather than through libfdt's sequential-write
 * calls, which cost about 0.3 us per property (each one grows the blob
 * through several checked calls, and fdt_finish() walks every tag again):
 * more than the whole budget of a live update.  The layout is the one
 * fdt_create() + fdt_finish() + fdt_pack() produce, version 17: header,
 * an empty reservation map, the structure block, the strings block.  Its
 * size is computed exactly first, so the buffer is allocated once and the
 * encoder never starts over.  The ext node alone is still written by libfdt
 * (the daemon writes it with the sequential-write calls), in a buffer of its
 * own whose structure is then copied in with its names moved into this
 * blob's strings block.
 */

#define BLOB_OFF_RSVMAP 40u			/* sizeof(struct fdt_header), aligned to 8 */
#define BLOB_OFF_STRUCT (BLOB_OFF_RSVMAP + 16u) /* one empty reservation entry */

struct out {
	uint8_t *p; /* next byte of the structure block */
	uint32_t nameoff[N_PROPS_WRITTEN];
};

static size_t digits_of(size_t index)
{
	size_t n = 1;

	while (index >= 10) {
		index /= 10;
		n++;
	}
	return n;
}

/* index in decimal at p, without NUL: digits_of(index) bytes, whose number is returned. */
static size_t put_decimal(char *p, size_t index)
{
	size_t n = digits_of(index);

	for (size_t k = n; k > 0; k--) {
		p[k - 1] = (char)('0' + index % 10);
		index /= 10;
	}
	return n;
}

static size_t node_size(size_t prefix_len, size_t index)
{
	/* BEGIN_NODE, "<prefix>@<index>\0" padded, END_NODE */
	return 2 * FDT_TAGSIZE + tag_align(prefix_len + 1 + digits_of(index) + 1);
}

static size_t prop_size(size_t len)
{
	return 3 * FDT_TAGSIZE + tag_align(len);
}

static void out32(struct out *o, uint32_t v)
{
	fdt32_st(o->p, v);
	o->p += 4;
}

static void out_bytes(struct out *o, const void *data, size_t len)
{
	/* Zero the padding first: the last word may be partly data. */
	if (len & (FDT_TAGSIZE - 1))
		memset(o->p + (len & ~(size_t)(FDT_TAGSIZE - 1)), 0, FDT_TAGSIZE);
	if (len > 0)
		memcpy(o->p, data, len);
	o->p += tag_align(len);
}

static void out_begin(struct out *o, const char *prefix, size_t prefix_len, size_t index)
{
	char name[48];
	size_t n;

	memcpy(name, prefix, prefix_len);
	name[prefix_len] = '@';
	n = put_decimal(name + prefix_len + 1, index);
	name[prefix_len + 1 + n] = '\0';
	out32(o, FDT_BEGIN_NODE);
	out_bytes(o, name, prefix_len + n + 2);
}

/* A property's header, its value to be written at o->p by the caller. */
static void out_prop_header(struct out *o, enum prop id, size_t len)
{
	out32(o, FDT_PROP);
	out32(o, (uint32_t)len);
	out32(o, o->nameoff[id]);
}

static void out_prop(struct out *o, enum prop id, const void *data, size_t len)
{
	out_prop_header(o, id, len);
	out_bytes(o, data, len);
}

static void out_u32(struct out *o, enum prop id, uint32_t v)
{
	fdt32_t be = cpu_to_fdt32(v);

	out_prop(o, id, &be, sizeof(be));
}

static void out_u64(struct out *o, enum prop id, uint64_t v)
{
	fdt64_t be = cpu_to_fdt64(v);

	out_prop(o, id, &be, sizeof(be));
}

static void out_string(struct out *o, enum prop id, const char *s)
{
	out_prop(o, id, s, strlen(s) + 1);
}

static uint32_t flb_flags(const struct luo_flb *flb)
{
	return (flb->incoming ? LUO_STATE_FLB_INCOMING : 0) |
	       (flb->retrieved ? LUO_STATE_FLB_RETRIEVED : 0);
}

/* Sizes must match the writers below byte for byte (checked at the end). */
static size_t flb_size(size_t index, const struct luo_flb *flb)
{
	return node_size(3, index) + prop_size(sizeof(LUO_STATE_FLB_COMPATIBLE)) +
	       prop_size(strlen(flb->ops->compatible) + 1) + prop_size(8) + 2 * prop_size(4) +
	       prop_size(flb->data_size);
}

static void write_flb(struct out *o, size_t index, const struct luo_flb *flb)
{
	out_begin(o, "flb", 3, index);
	out_string(o, PROP_COMPATIBLE, LUO_STATE_FLB_COMPATIBLE);
	out_string(o, PROP_FLB, flb->ops->compatible);
	out_u64(o, PROP_COUNT, flb->count);
	out_u32(o, PROP_FLAGS, flb_flags(flb));
	out_u32(o, PROP_FD, (uint32_t)(flb->fd >= 0 ? flb->fd : -1));
	out_prop(o, PROP_DATA, flb->data, flb->data_size);
	out32(o, FDT_END_NODE);
}

static size_t file_size(size_t index, const struct luo_file *f)
{
	return node_size(4, index) + prop_size(sizeof(LUO_STATE_FILE_COMPATIBLE)) +
	       prop_size(strlen(f->handler->compatible) + 1) + prop_size(RECORD_SIZE) +
	       prop_size(f->hf.data_size);
}

/* The fixed fields of a file (RECORD_SIZE bytes at rec). */
void luo_state_fill_file_record(uint8_t *rec, const luo_engine *e, const struct luo_file *f)
{
	struct luo_file_id id = {};
	uint32_t flags = 0;

	if (f->frozen)
		flags |= LUO_STATE_FILE_FROZEN;
	if (f->retrieved)
		flags |= LUO_STATE_FILE_RETRIEVED;
	/*
	 * The identity goes along only where it is known to be the fd's: an
	 * indexed file's, or what a borrowing decode read from its blob.  A
	 * zero identity tells the decoder to compute it.
	 */
	if (f->hf.fd >= 0 && (f->id_node || e->borrowed_fds))
		id = f->id;
	if (id.dev == 0 && id.ino == 0 && id.extra == 0)
		id.by_description = false;
	if (id.by_description)
		flags |= LUO_STATE_FILE_ID_BY_DESCRIPTION;
	fdt64_st(rec + RECORD_TOKEN, f->hf.token);
	fdt64_st(rec + RECORD_DEV, id.dev);
	fdt64_st(rec + RECORD_INO, id.ino);
	fdt64_st(rec + RECORD_EXTRA, id.extra);
	fdt32_st(rec + RECORD_FD, (uint32_t)(f->hf.fd >= 0 ? f->hf.fd : -1));
	fdt32_st(rec + RECORD_FLAGS, flags);
	fdt32_st(rec + RECORD_RETRIEVE_ERROR, (uint32_t)f->retrieve_error);
}

static void write_file(struct out *o, const luo_engine *e, size_t index, const struct luo_file *f)
{
	uint8_t record[RECORD_SIZE];

	luo_state_fill_file_record(record, e, f);
	out_begin(o, "file", 4, index);
	out_string(o, PROP_COMPATIBLE, LUO_STATE_FILE_COMPATIBLE);
	out_string(o, PROP_HANDLER, f->handler->compatible);
	out_prop(o, PROP_RECORD, record, sizeof(record));
	out_prop(o, PROP_DATA, f->hf.data, f->hf.data_size);
	out32(o, FDT_END_NODE);
}

/*
 * A session of one file (or none) keeps the luo-session-v1 layout, a node
 * per file, where packing saves nothing; more go into luo-session-v2's
 * arrays.  The choice depends on the engine alone, so encoding stays
 * deterministic.
 */
static bool session_is_packed(const struct luo_session *s)
{
	return s->files.count >= 2 || (s->flags & LUO_SESSION_FLAG_HANDED_OVER);
}

/* luo-session-v3 is v2 with the handed-over bit, which only it may carry. */
static const char *session_compatible(const struct luo_session *s)
{
	if (s->flags & LUO_SESSION_FLAG_HANDED_OVER)
		return LUO_STATE_SESSION_V3_COMPATIBLE;
	return session_is_packed(s) ? LUO_STATE_SESSION_COMPATIBLE
				    : LUO_STATE_SESSION_V1_COMPATIBLE;
}

/* The distinct handlers of s's files, in the order of their first file. */
struct handler_list {
	const struct luo_handler *h[LUO_MAX_HANDLERS];
	size_t n;
	size_t last; /* the index found last: files of one handler come in runs */
};

/* f's handler's index in l, added if new: >= 0, or -EINVAL past LUO_MAX_HANDLERS. */
static int handler_index(struct handler_list *l, const struct luo_handler *h)
{
	if (l->n > 0 && l->h[l->last] == h)
		return (int)l->last;
	for (size_t k = 0; k < l->n; k++)
		if (l->h[k] == h) {
			l->last = k;
			return (int)k;
		}
	if (l->n == LUO_MAX_HANDLERS)
		return -EINVAL;
	l->h[l->n] = h;
	l->last = l->n;
	return (int)l->n++;
}

static int session_size(size_t index, const struct luo_session *s, size_t *size)
{
	struct handler_list l = {};
	size_t j = 0, names = 0, data = 0;
	bool packed = session_is_packed(s);

	*size += node_size(7, index) + prop_size(s->name_len) + 3 * prop_size(4) + 2 * prop_size(8);
	LIST_FOREACH (pos, &s->files) {
		const struct luo_file *f = list_entry(pos, struct luo_file, order);
		size_t n = l.n;
		int r;

		/* Refuse here what the next binary would refuse to read. */
		if (f->hf.data_size > LUO_HANDLER_DATA_MAX)
			return -EOVERFLOW;
		if (!packed) {
			*size += file_size(j++, f);
			continue;
		}
		r = handler_index(&l, f->handler);
		if (r < 0)
			return r;
		if (l.n > n)
			names += strlen(f->handler->compatible) + 1;
		data += f->hf.data_size;
	}
	if (packed) {
		/* Offsets into file-data are 32 bits: the blob's own limit keeps it in range. */
		if (data > LUO_STATE_MAX_SIZE)
			return -E2BIG;
		*size += prop_size(strlen(session_compatible(s)) + 1) + prop_size(names) +
			 prop_size(s->files.count * PACKED_SIZE) + prop_size(data);
	} else
		*size += prop_size(sizeof(LUO_STATE_SESSION_V1_COMPATIBLE));
	return 0;
}

/* The handlers, files and file-data of a luo-session-v2 (sizes as in session_size()). */
static void write_packed_files(struct out *o, const luo_engine *e, const struct luo_session *s)
{
	struct handler_list l = {};
	size_t names = 0, data = 0;
	uint8_t *p;

	LIST_FOREACH (pos, &s->files) {
		const struct luo_file *f = list_entry(pos, struct luo_file, order);
		size_t n = l.n;

		(void)handler_index(&l, f->handler); /* cannot fail: session_size() ran */
		if (l.n > n)
			names += strlen(f->handler->compatible) + 1;
	}
	out_prop_header(o, PROP_HANDLERS, names);
	p = o->p;
	for (size_t k = 0; k < l.n; k++) {
		size_t len = strlen(l.h[k]->compatible) + 1;

		memcpy(p, l.h[k]->compatible, len);
		p += len;
	}
	memset(p, 0, tag_align(names) - names);
	o->p += tag_align(names);

	/* PACKED_SIZE is a multiple of the tag size: no padding. */
	out_prop_header(o, PROP_FILES, s->files.count * PACKED_SIZE);
	LIST_FOREACH (pos, &s->files) {
		const struct luo_file *f = list_entry(pos, struct luo_file, order);

		luo_state_fill_file_record(o->p, e, f);
		fdt32_st(o->p + PACKED_HANDLER, (uint32_t)handler_index(&l, f->handler));
		fdt32_st(o->p + PACKED_DATA_OFFSET, (uint32_t)data);
		fdt32_st(o->p + PACKED_DATA_SIZE, (uint32_t)f->hf.data_size);
		data += f->hf.data_size;
		o->p += PACKED_SIZE;
	}

	out_prop_header(o, PROP_FILE_DATA, data);
	p = o->p;
	LIST_FOREACH (pos, &s->files) {
		const struct luo_file *f = list_entry(pos, struct luo_file, order);

		if (f->hf.data_size > 0)
			memcpy(p, f->hf.data, f->hf.data_size);
		p += f->hf.data_size;
	}
	memset(p, 0, tag_align(data) - data);
	o->p += tag_align(data);
}

static void write_session(struct out *o, const luo_engine *e, size_t index,
			  const struct luo_session *s)
{
	bool packed = session_is_packed(s);
	size_t j = 0;

	out_begin(o, "session", 7, index);
	out_string(o, PROP_COMPATIBLE, session_compatible(s));
	out_prop(o, PROP_NAME, s->name, s->name_len);
	out_u32(o, PROP_KIND, (uint32_t)s->kind);
	out_u32(o, PROP_STATE, (uint32_t)s->state);
	out_u64(o, PROP_FLAGS, s->flags);
	out_u32(o, PROP_UID, s->uid);
	out_u64(o, PROP_HANDLE, s->handle);
	if (packed)
		write_packed_files(o, e, s);
	else
		LIST_FOREACH (pos, &s->files)
			write_file(o, e, j++, list_entry(pos, struct luo_file, order));
	out32(o, FDT_END_NODE);
}

struct name_slot {
	uint64_t hash; /* 0: empty */
	uint32_t off, len;
};

/* The strings block: the codec's own names, then the ext node's new ones. */
struct strings {
	char *table;
	size_t size, cap;
	struct name_slot *slots;
	size_t n_slots, count;
};

static void strings_done(struct strings *st)
{
	free(st->table);
	free(st->slots);
}

static void slot_put(struct name_slot *slots, size_t n_slots, const struct name_slot *e)
{
	size_t i = e->hash & (n_slots - 1);

	while (slots[i].hash)
		i = (i + 1) & (n_slots - 1);
	slots[i] = *e;
}

/* The offset of name in the block, added if new: >= 0 or -ENOMEM / -E2BIG. */
static int64_t strings_add(struct strings *st, const char *name, size_t len)
{
	uint64_t h = hash_bytes(name, len) | 1;
	size_t i;

	for (i = h & (st->n_slots - 1); st->slots[i].hash; i = (i + 1) & (st->n_slots - 1))
		if (st->slots[i].hash == h && st->slots[i].len == len &&
		    memcmp(st->table + st->slots[i].off, name, len) == 0)
			return st->slots[i].off;
	if ((st->count + 1) * 2 > st->n_slots) {
		size_t n = st->n_slots * 2;
		struct name_slot *bigger = calloc(n, sizeof(*bigger));

		if (!bigger)
			return -ENOMEM;
		for (size_t k = 0; k < st->n_slots; k++)
			if (st->slots[k].hash)
				slot_put(bigger, n, &st->slots[k]);
		free(st->slots);
		st->slots = bigger;
		st->n_slots = n;
	}
	if (st->size + len + 1 > LUO_STATE_MAX_SIZE)
		return -E2BIG;
	if (st->size + len + 1 > st->cap) {
		size_t cap = MAX(st->cap * 2, st->size + len + 1);
		char *t = realloc(st->table, cap);

		if (!t)
			return -ENOMEM;
		st->table = t;
		st->cap = cap;
	}
	memcpy(st->table + st->size, name, len);
	st->table[st->size + len] = '\0';
	slot_put(st->slots, st->n_slots,
		 &(struct name_slot){ h, (uint32_t)st->size, (uint32_t)len });
	st->count++;
	st->size += len + 1;
	return (int64_t)(st->size - len - 1);
}

static int strings_init(struct strings *st, uint32_t nameoff[N_PROPS_WRITTEN])
{
	*st = (struct strings){ .n_slots = 64, .cap = 256 };
	st->slots = calloc(st->n_slots, sizeof(*st->slots));
	st->table = malloc(st->cap);
	if (!st->slots || !st->table)
		return -ENOMEM;
	for (size_t k = 0; k < N_PROPS_WRITTEN; k++) {
		int64_t off = strings_add(st, prop_names[k].name, prop_names[k].len);

		if (off < 0)
			return (int)off;
		nameoff[k] = (uint32_t)off;
	}
	return 0;
}

/* The ext node, written by its owner with libfdt into a blob of its own. */
struct ext_part {
	void *fdt;
	const uint8_t *body; /* its structure block without the final FDT_END */
	size_t size;
};

/* Retries the whole ext node in a doubled buffer whenever libfdt runs out of room. */
#define EXT_TRY(expr)                                                                              \
	do {                                                                                       \
		int _r_ = (expr);                                                                  \
		if (_r_ < 0) {                                                                     \
			r = luo_fdt_errno(_r_);                                                    \
			goto fail;                                                                 \
		}                                                                                  \
	} while (0)

static int ext_build(const struct luo_state_ext *ext, struct strings *st, struct ext_part *part)
{
	size_t cap = 4096;
	int r;

	for (;;) {
		void *buf = malloc(cap);

		if (!buf)
			return -ENOMEM;
		part->fdt = buf;
		EXT_TRY(fdt_create_with_flags(buf, (int)cap, FDT_CREATE_FLAG_NO_NAME_DEDUP));
		EXT_TRY(fdt_finish_reservemap(buf));
		EXT_TRY(fdt_begin_node(buf, ext->node));
		r = ext->write(buf, ext->userdata);
		if (r < 0)
			goto fail;
		EXT_TRY(fdt_end_node(buf));
		EXT_TRY(fdt_finish(buf));
		break;
fail:
		free(buf);
		part->fdt = NULL;
		if (r != -ENOSPC)
			return r;
		if (cap >= LUO_STATE_MAX_SIZE)
			return -E2BIG;
		cap = MIN(cap * 2, (size_t)LUO_STATE_MAX_SIZE);
	}

	/*
	 * Move its names into ours (the offsets are rewritten in its own
	 * buffer, which is copied as is afterwards), and check that the writer
	 * closed every node it opened and nothing else.
	 */
	{
		uint8_t *base = (uint8_t *)part->fdt + fdt_off_dt_struct(part->fdt);
		const char *names = (const char *)part->fdt + fdt_off_dt_strings(part->fdt);
		int off = 0, next, depth = 0;

		for (;;) {
			uint32_t tag = fdt_next_tag(part->fdt, off, &next);

			if (next < 0)
				return -EINVAL;
			if (tag == FDT_END)
				break;
			if (tag == FDT_BEGIN_NODE)
				depth++;
			else if (tag == FDT_END_NODE && --depth < 0)
				return -EINVAL;
			else if (tag == FDT_PROP) {
				uint8_t *nameoff = base + off + 2 * FDT_TAGSIZE;
				const char *name = names + fdt32_ld((const fdt32_t *)nameoff);
				int64_t n = strings_add(st, name, strlen(name));

				if (n < 0)
					return (int)n;
				fdt32_st(nameoff, (uint32_t)n);
			}
			off = next;
		}
		if (depth != 0 || (size_t)off + FDT_TAGSIZE != fdt_size_dt_struct(part->fdt))
			return -EINVAL;
		part->body = base;
		part->size = (size_t)off;
	}
	return 0;
}

int luo_state_encode(const luo_engine *e, const struct luo_state_ext *ext, void **ret_blob,
		     size_t *ret_size)
{
	_cleanup_free_ void *ext_fdt = NULL;
	struct ext_part part = {};
	struct strings st = {};
	struct out o;
	size_t struct_size, total, i = 0;
	uint8_t *buf;
	int r;

	if (!e || !ret_blob || !ret_size)
		return -EINVAL;
	if (ext && (!ext->node || !ext->write || !ext->node[0] || strchr(ext->node, '@') ||
		    strchr(ext->node, '/')))
		return -EINVAL;

	/* The root: BEGIN_NODE "", its properties, END_NODE, then FDT_END. */
	struct_size = 2 * FDT_TAGSIZE + prop_size(sizeof(LUO_STATE_COMPATIBLE)) + 2 * prop_size(8) +
		      2 * FDT_TAGSIZE;
	for (size_t k = 0; k < e->n_flbs; k++) {
		if (e->flbs[k].data_size > LUO_HANDLER_DATA_MAX)
			return -EOVERFLOW;
		struct_size += flb_size(k, &e->flbs[k]);
	}
	LIST_FOREACH (pos, &e->outgoing) {
		r = session_size(i++, list_entry(pos, struct luo_session, order), &struct_size);
		if (r < 0)
			return r;
	}
	LIST_FOREACH (pos, &e->incoming) {
		r = session_size(i++, list_entry(pos, struct luo_session, order), &struct_size);
		if (r < 0)
			return r;
	}

	r = strings_init(&st, o.nameoff);
	if (r < 0)
		goto out;
	if (ext) {
		r = ext_build(ext, &st, &part);
		ext_fdt = part.fdt;
		if (r < 0)
			goto out;
		struct_size += part.size;
	}
	total = BLOB_OFF_STRUCT + struct_size + st.size;
	if (total > LUO_STATE_MAX_SIZE) {
		r = -E2BIG;
		goto out;
	}
	buf = malloc(total);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}

	memset(buf, 0, BLOB_OFF_STRUCT);
	fdt_set_magic(buf, FDT_MAGIC);
	fdt_set_totalsize(buf, (uint32_t)total);
	fdt_set_off_dt_struct(buf, BLOB_OFF_STRUCT);
	fdt_set_off_dt_strings(buf, (uint32_t)(BLOB_OFF_STRUCT + struct_size));
	fdt_set_off_mem_rsvmap(buf, BLOB_OFF_RSVMAP);
	fdt_set_version(buf, FDT_LAST_SUPPORTED_VERSION);
	fdt_set_last_comp_version(buf, FDT_LAST_COMPATIBLE_VERSION);
	fdt_set_size_dt_strings(buf, (uint32_t)st.size);
	fdt_set_size_dt_struct(buf, (uint32_t)struct_size);

	o.p = buf + BLOB_OFF_STRUCT;
	out32(&o, FDT_BEGIN_NODE);
	out_bytes(&o, "", 1);
	out_string(&o, PROP_COMPATIBLE, LUO_STATE_COMPATIBLE);
	out_u64(&o, PROP_UPDATE_NUMBER, e->update_number);
	out_u64(&o, PROP_NEXT_HANDLE, e->next_handle);
	for (size_t k = 0; k < e->n_flbs; k++)
		write_flb(&o, k, &e->flbs[k]);
	i = 0;
	LIST_FOREACH (pos, &e->outgoing)
		write_session(&o, e, i++, list_entry(pos, struct luo_session, order));
	LIST_FOREACH (pos, &e->incoming)
		write_session(&o, e, i++, list_entry(pos, struct luo_session, order));
	if (part.size > 0) {
		memcpy(o.p, part.body, part.size);
		o.p += part.size;
	}
	out32(&o, FDT_END_NODE);
	out32(&o, FDT_END);
	assert(o.p == buf + BLOB_OFF_STRUCT + struct_size);
	memcpy(o.p, st.table, st.size);

	*ret_blob = buf;
	*ret_size = total;
	r = 0;
out:
	strings_done(&st);
	return r;
}

/* ---- walking and checking ---------------------------------------------- */

/*
 * The uniqueness rules (fd slots across the blob, handles, names per uid and
 * namespace, tokens per session) are checked as each node is reached, so
 * that a duplicate is reported at the node that repeats, by decode and dump
 * alike, before the engine ever sees it.  Names, handles and FLBs (a few per
 * session) share one open-addressing set of byte strings told apart by a
 * tag; fd slots and tokens, one or two per file, have sets of their own
 * made for them.
 */
enum {
	UNIQUE_HANDLE,
	UNIQUE_NAME_OUTGOING,
	UNIQUE_NAME_INCOMING,
	UNIQUE_FLB,
};

struct unique_entry {
	uint64_t hash; /* 0: empty slot */
	uint64_t tag;
	const void *key;
	size_t len;
};

struct unique_set {
	struct unique_entry *slots;
	size_t n_slots; /* power of two, or 0 */
	size_t count;
};

static uint64_t unique_hash(uint64_t tag, const void *key, size_t len)
{
	uint64_t h = hash_u64(hash_bytes(key, len) ^ (tag * UINT64_C(0x9e3779b97f4a7c15)));

	return h ? h : 1;
}

static void unique_put(struct unique_entry *slots, size_t n_slots, const struct unique_entry *e)
{
	size_t i = e->hash & (n_slots - 1);

	while (slots[i].hash)
		i = (i + 1) & (n_slots - 1);
	slots[i] = *e;
}

/* 0 if added, -EBADMSG if already present, -ENOMEM. */
static int unique_add(struct unique_set *set, uint64_t tag, const void *key, size_t len)
{
	struct unique_entry e = { unique_hash(tag, key, len), tag, key, len };

	for (size_t i = set->n_slots ? e.hash & (set->n_slots - 1) : 0;
	     set->n_slots && set->slots[i].hash; i = (i + 1) & (set->n_slots - 1)) {
		const struct unique_entry *s = &set->slots[i];

		if (s->hash == e.hash && s->tag == tag && s->len == len &&
		    memcmp(s->key, key, len) == 0)
			return -EBADMSG;
	}
	/* Keep the load at most one half. */
	if ((set->count + 1) * 2 > set->n_slots) {
		size_t n = set->n_slots ? set->n_slots * 2 : 64;
		struct unique_entry *slots = calloc(n, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (size_t i = 0; i < set->n_slots; i++)
			if (set->slots[i].hash)
				unique_put(slots, n, &set->slots[i]);
		free(set->slots);
		set->slots = slots;
		set->n_slots = n;
	}
	unique_put(set->slots, set->n_slots, &e);
	set->count++;
	return 0;
}

/*
 * fd slots: luod's are small and dense, so a bitmap covers them (grown to
 * the largest slot seen, up to FD_BITMAP_MAX); larger ones, which only a
 * forged blob has, go to an open-addressing set of their own.
 */
#define FD_BITMAP_MAX (UINT32_C(1) << 20)

struct fd_slots {
	uint64_t *bits;
	size_t n_words;
	uint32_t *big; /* slot + 1; 0: empty */
	size_t n_big, count_big;
};

static int fd_slots_add(struct fd_slots *s, uint32_t fd)
{
	if (fd < FD_BITMAP_MAX) {
		size_t w = fd / 64;
		uint64_t bit = UINT64_C(1) << (fd % 64);

		if (w >= s->n_words) {
			size_t n = s->n_words ? s->n_words : 64;
			uint64_t *bits;

			while (n <= w)
				n *= 2;
			bits = realloc(s->bits, n * sizeof(*bits));
			if (!bits)
				return -ENOMEM;
			memset(bits + s->n_words, 0, (n - s->n_words) * sizeof(*bits));
			s->bits = bits;
			s->n_words = n;
		}
		if (s->bits[w] & bit)
			return -EBADMSG;
		s->bits[w] |= bit;
		return 0;
	}
	if ((s->count_big + 1) * 2 > s->n_big) {
		size_t n = s->n_big ? s->n_big * 2 : 64;
		uint32_t *big = calloc(n, sizeof(*big));

		if (!big)
			return -ENOMEM;
		for (size_t k = 0; k < s->n_big; k++) {
			size_t i;

			if (!s->big[k])
				continue;
			for (i = hash_u64(s->big[k]) & (n - 1); big[i]; i = (i + 1) & (n - 1))
				;
			big[i] = s->big[k];
		}
		free(s->big);
		s->big = big;
		s->n_big = n;
	}
	for (size_t i = hash_u64(fd + 1) & (s->n_big - 1);; i = (i + 1) & (s->n_big - 1)) {
		if (s->big[i] == fd + 1)
			return -EBADMSG;
		if (!s->big[i]) {
			s->big[i] = fd + 1;
			s->count_big++;
			return 0;
		}
	}
}

/*
 * Tokens, per session: one table reused by every session, whose entries
 * carry the session's number.  An entry of an earlier session counts as
 * empty: every entry of the current session was placed after all of those,
 * so a probe finds it before reaching one.
 */
struct token_entry {
	uint64_t token;
	uint32_t session; /* index + 1; 0: never used */
};

struct token_set {
	struct token_entry *slots;
	size_t n_slots, count; /* count: entries of the current session */
	uint32_t session;
};

static void token_set_next_session(struct token_set *t, uint32_t session)
{
	t->session = session + 1;
	t->count = 0;
}

static int token_set_add(struct token_set *t, uint64_t token)
{
	size_t i;

	if ((t->count + 1) * 2 > t->n_slots) {
		size_t n = t->n_slots ? t->n_slots * 2 : 256;
		struct token_entry *slots = calloc(n, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (size_t k = 0; k < t->n_slots; k++) {
			if (t->slots[k].session != t->session)
				continue;
			for (i = hash_u64(t->slots[k].token) & (n - 1); slots[i].session;
			     i = (i + 1) & (n - 1))
				;
			slots[i] = t->slots[k];
		}
		free(t->slots);
		t->slots = slots;
		t->n_slots = n;
	}
	for (i = hash_u64(token) & (t->n_slots - 1); t->slots[i].session == t->session;
	     i = (i + 1) & (t->n_slots - 1))
		if (t->slots[i].token == token)
			return -EBADMSG;
	t->slots[i] = (struct token_entry){ token, t->session };
	t->count++;
	return 0;
}

/*
 * The walker reads the structure block itself, bounds-checking each tag,
 * rather than through libfdt's accessors, which look a node's name up byte
 * by byte and each property's header and name again on every call.  It does
 * not rely on fdt_check_full() having run (which may be running at the same
 * time, see luo_state_walk()): every offset is checked here too.
 */
struct tag {
	uint32_t type;
	uint32_t next;	    /* offset of the tag after this one */
	const char *name;   /* BEGIN_NODE */
	uint32_t name_len;  /* BEGIN_NODE */
	const uint8_t *val; /* PROP */
	uint32_t len;	    /* PROP */
	uint32_t nameoff;   /* PROP */
};

struct name_cache {
	uint32_t key; /* nameoff + 1; 0: empty */
	uint32_t prop;
};

struct walk {
	const void *fdt;
	const uint8_t *st; /* the structure block */
	uint32_t st_size;
	const char *strings;
	uint32_t strings_size;
	const struct luo_state_visitor *v;
	void *userdata;
	uint64_t next_handle;
	size_t n_flbs, n_sessions;
	int ext_offset;
	const char *ext_name;
	struct unique_set unique;
	struct fd_slots fds;
	struct token_set tokens;
	struct name_cache names[64];
};

static int read_tag(const struct walk *w, uint32_t off, struct tag *t)
{
	if (off > w->st_size || w->st_size - off < FDT_TAGSIZE || off % FDT_TAGSIZE)
		return -EBADMSG;
	t->type = fdt32_ld((const fdt32_t *)(w->st + off));
	off += FDT_TAGSIZE;
	switch (t->type) {
	case FDT_BEGIN_NODE: {
		const char *name = (const char *)w->st + off;
		const char *nul = memchr(name, '\0', w->st_size - off);

		if (!nul)
			return -EBADMSG;
		t->name = name;
		t->name_len = (uint32_t)(nul - name);
		off += (uint32_t)tag_align(t->name_len + 1);
		break;
	}
	case FDT_PROP:
		if (w->st_size - off < 2 * FDT_TAGSIZE)
			return -EBADMSG;
		t->len = fdt32_ld((const fdt32_t *)(w->st + off));
		t->nameoff = fdt32_ld((const fdt32_t *)(w->st + off + 4));
		off += 2 * FDT_TAGSIZE;
		if (t->len > w->st_size - off)
			return -EBADMSG;
		t->val = w->st + off;
		off += (uint32_t)tag_align(t->len);
		break;
	case FDT_END_NODE:
	case FDT_NOP:
	case FDT_END:
		break;
	default:
		return -EBADMSG;
	}
	if (off > w->st_size)
		return -EBADMSG;
	t->next = off;
	return 0;
}

/* The codec's number for a property name (PROP_UNKNOWN for others), cached by offset. */
static int prop_of(struct walk *w, uint32_t nameoff)
{
	struct name_cache *c = &w->names[nameoff % ELEMENTSOF(w->names)];
	const char *name, *nul;
	size_t len;
	int id;

	if (c->key == nameoff + 1u && c->key != 0)
		return (int)c->prop;
	if (nameoff >= w->strings_size)
		return -EBADMSG;
	name = w->strings + nameoff;
	nul = memchr(name, '\0', w->strings_size - nameoff);
	if (!nul)
		return -EBADMSG;
	len = (size_t)(nul - name);
	for (id = 0; id < N_PROPS; id++)
		if (prop_names[id].len == len && memcmp(prop_names[id].name, name, len) == 0)
			break;
	*c = (struct name_cache){ nameoff + 1u, (uint32_t)id };
	return id;
}

struct props {
	const uint8_t *val[N_PROPS];
	uint32_t len[N_PROPS];
	uint32_t seen;
	bool bad; /* an unknown or repeated name */
};

/*
 * Reads the properties of the node whose BEGIN_NODE tag is at node.  Unknown
 * and repeated names only set p->bad, so that the caller can judge the
 * node's version first.  *ret_child is the offset of the first subnode, or
 * -1 when there is none, in which case *ret_end is the offset just past the
 * node's end.
 */
static int read_props(struct walk *w, uint32_t node, struct props *p, int *ret_child,
		      uint32_t *ret_end)
{
	struct tag t;
	uint32_t off;
	int r;

	r = read_tag(w, node, &t);
	if (r < 0)
		return r;
	if (t.type != FDT_BEGIN_NODE)
		return -EBADMSG;
	p->seen = 0;
	p->bad = false;
	for (off = t.next;; off = t.next) {
		int id;

		r = read_tag(w, off, &t);
		if (r < 0)
			return r;
		if (t.type == FDT_NOP)
			continue;
		if (t.type == FDT_BEGIN_NODE) {
			*ret_child = (int)off;
			return 0;
		}
		if (t.type == FDT_END_NODE) {
			*ret_child = -1;
			*ret_end = t.next;
			return 0;
		}
		if (t.type != FDT_PROP)
			return -EBADMSG;
		id = prop_of(w, t.nameoff);
		if (id < 0)
			return id;
		if (id == PROP_UNKNOWN || (p->seen & (1u << id))) {
			p->bad = true;
			continue;
		}
		p->seen |= 1u << id;
		p->val[id] = t.val;
		p->len[id] = t.len;
	}
}

/* A NUL-terminated string of 1..max-1 bytes without an inner NUL. */
static bool prop_is_string(const struct props *p, enum prop id, size_t max)
{
	const char *s = (const char *)p->val[id];
	uint32_t len = p->len[id];

	return len >= 2 && len <= max && s[len - 1] == '\0' && memchr(s, '\0', len - 1) == NULL;
}

/*
 * The node's version: the compatible property must be one of want[] (its
 * index is returned), another well-formed string is a version this binary
 * does not speak, anything else a bad blob.
 */
static int check_compatible(const struct props *p, const char *const *want, size_t n_want)
{
	if (!(p->seen & (1u << PROP_COMPATIBLE)) || !prop_is_string(p, PROP_COMPATIBLE, 256))
		return -EBADMSG;
	for (size_t k = 0; k < n_want; k++)
		if (strcmp((const char *)p->val[PROP_COMPATIBLE], want[k]) == 0)
			return (int)k;
	return -EPROTONOSUPPORT;
}

/* Exactly the properties of the node's version, each of its exact length
 * (-1: any length). */
struct node_spec {
	uint32_t props;
	int16_t len[N_PROPS];
};

static int check_props(const struct props *p, const struct node_spec *spec)
{
	if (p->bad || p->seen != spec->props)
		return -EBADMSG;
	for (uint32_t m = spec->props; m; m &= m - 1) {
		int id = __builtin_ctz(m);

		if (spec->len[id] >= 0 && p->len[id] != (uint32_t)spec->len[id])
			return -EBADMSG;
	}
	return 0;
}

#define BIT(id) (1u << (id))

static const struct node_spec root_spec = {
	.props = BIT(PROP_COMPATIBLE) | BIT(PROP_UPDATE_NUMBER) | BIT(PROP_NEXT_HANDLE),
	.len = { [PROP_COMPATIBLE] = -1, [PROP_UPDATE_NUMBER] = 8, [PROP_NEXT_HANDLE] = 8 },
};

static const struct node_spec flb_spec = {
	.props = BIT(PROP_COMPATIBLE) | BIT(PROP_FLB) | BIT(PROP_COUNT) | BIT(PROP_FLAGS) |
		 BIT(PROP_FD) | BIT(PROP_DATA),
	.len = { [PROP_COMPATIBLE] = -1,
		 [PROP_FLB] = -1,
		 [PROP_COUNT] = 8,
		 [PROP_FLAGS] = 4,
		 [PROP_FD] = 4,
		 [PROP_DATA] = -1 },
};

static const struct node_spec session_spec = {
	.props = BIT(PROP_COMPATIBLE) | BIT(PROP_NAME) | BIT(PROP_KIND) | BIT(PROP_STATE) |
		 BIT(PROP_FLAGS) | BIT(PROP_UID) | BIT(PROP_HANDLE),
	.len = { [PROP_COMPATIBLE] = -1,
		 [PROP_NAME] = -1,
		 [PROP_KIND] = 4,
		 [PROP_STATE] = 4,
		 [PROP_FLAGS] = 8,
		 [PROP_UID] = 4,
		 [PROP_HANDLE] = 8 },
};

static const struct node_spec session_v2_spec = {
	.props = BIT(PROP_COMPATIBLE) | BIT(PROP_NAME) | BIT(PROP_KIND) | BIT(PROP_STATE) |
		 BIT(PROP_FLAGS) | BIT(PROP_UID) | BIT(PROP_HANDLE) | BIT(PROP_HANDLERS) |
		 BIT(PROP_FILES) | BIT(PROP_FILE_DATA),
	.len = { [PROP_COMPATIBLE] = -1,
		 [PROP_NAME] = -1,
		 [PROP_KIND] = 4,
		 [PROP_STATE] = 4,
		 [PROP_FLAGS] = 8,
		 [PROP_UID] = 4,
		 [PROP_HANDLE] = 8,
		 [PROP_HANDLERS] = -1,
		 [PROP_FILES] = -1,
		 [PROP_FILE_DATA] = -1 },
};

static const struct node_spec file_v1_spec = {
	.props = BIT(PROP_COMPATIBLE) | BIT(PROP_TOKEN) | BIT(PROP_HANDLER) | BIT(PROP_FD) |
		 BIT(PROP_DATA) | BIT(PROP_FLAGS) | BIT(PROP_RETRIEVE_ERROR),
	.len = { [PROP_COMPATIBLE] = -1,
		 [PROP_TOKEN] = 8,
		 [PROP_HANDLER] = -1,
		 [PROP_FD] = 4,
		 [PROP_DATA] = -1,
		 [PROP_FLAGS] = 4,
		 [PROP_RETRIEVE_ERROR] = 4 },
};

static const struct node_spec file_v2_spec = {
	.props = BIT(PROP_COMPATIBLE) | BIT(PROP_HANDLER) | BIT(PROP_RECORD) | BIT(PROP_DATA),
	.len = { [PROP_COMPATIBLE] = -1,
		 [PROP_HANDLER] = -1,
		 [PROP_RECORD] = RECORD_SIZE,
		 [PROP_DATA] = -1 },
};

/* Reads the node's version and properties: the version first, since a node
 * of another version may differ in anything else. */
static int read_node(struct walk *w, uint32_t node, const char *const *versions, size_t n_versions,
		     const struct node_spec *const *specs, struct props *p, int *ret_child,
		     uint32_t *ret_end)
{
	int r, version;

	r = read_props(w, node, p, ret_child, ret_end);
	if (r < 0)
		return r;
	version = check_compatible(p, versions, n_versions);
	if (version < 0)
		return version;
	r = check_props(p, specs[version]);
	if (r < 0)
		return r;
	return version;
}

/*
 * After a node's last child (or its properties) comes either another child
 * or the node's end: returns the child's offset, or -1 with *ret_end just
 * past the end.
 */
static int next_child(const struct walk *w, uint32_t off, uint32_t *ret_end)
{
	for (;;) {
		struct tag t;
		int r = read_tag(w, off, &t);

		if (r < 0)
			return r;
		if (t.type == FDT_NOP) {
			off = t.next;
			continue;
		}
		if (t.type == FDT_BEGIN_NODE)
			return (int)off;
		if (t.type == FDT_END_NODE) {
			*ret_end = t.next;
			return -1;
		}
		return -EBADMSG;
	}
}

/* Skips a whole subtree (the ext node): the offset just past its end. */
static int skip_node(const struct walk *w, uint32_t off)
{
	size_t depth = 0;

	for (;;) {
		struct tag t;
		int r = read_tag(w, off, &t);

		if (r < 0)
			return r;
		if (t.type == FDT_END)
			return -EBADMSG;
		if (t.type == FDT_BEGIN_NODE)
			depth++;
		else if (t.type == FDT_END_NODE && --depth == 0)
			return (int)t.next;
		off = t.next;
	}
}

/* Node names are "<kind>@<index>", the index in decimal counting from 0 per
 * kind (no leading zeros), exactly as the encoder writes them. */
static int check_node_name(const char *name, uint32_t len, const char *kind, size_t index)
{
	char digits[24];
	size_t k = strlen(kind), n = put_decimal(digits, index);

	if ((size_t)len != k + 1 + n || memcmp(name, kind, k) != 0 || name[k] != '@' ||
	    memcmp(name + k + 1, digits, n) != 0)
		return -EBADMSG;
	return 0;
}

static bool node_name_has_prefix(const char *name, uint32_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return (size_t)len >= n && memcmp(name, prefix, n) == 0;
}

static bool errno_in_range(int err)
{
	return err <= 0 && err >= -4095;
}

static int unique_fd(struct walk *w, int fd)
{
	/* -1 is "no fd" and may repeat. */
	return fd < 0 ? 0 : fd_slots_add(&w->fds, (uint32_t)fd);
}

static uint32_t ld32(const uint8_t *p)
{
	return fdt32_ld((const fdt32_t *)p);
}

static uint64_t ld64(const uint8_t *p)
{
	return fdt64_ld((const fdt64_t *)p);
}

/* Returns the offset just past the node. */
static int walk_flb(struct walk *w, uint32_t node, const char *name, uint32_t name_len)
{
	static const char *const versions[] = { LUO_STATE_FLB_COMPATIBLE };
	static const struct node_spec *const specs[] = { &flb_spec };
	struct luo_state_flb flb;
	struct props p;
	uint32_t end = 0;
	int r, sub;

	if (w->n_flbs >= LUO_MAX_FLBS)
		return -EBADMSG;
	r = check_node_name(name, name_len, "flb", w->n_flbs);
	if (r < 0)
		return r;
	r = read_node(w, node, versions, ELEMENTSOF(versions), specs, &p, &sub, &end);
	if (r < 0)
		return r;
	if (sub >= 0 || !prop_is_string(&p, PROP_FLB, LUO_COMPATIBLE_MAX))
		return -EBADMSG;

	flb = (struct luo_state_flb){
		.compatible = (const char *)p.val[PROP_FLB],
		.count = ld64(p.val[PROP_COUNT]),
		.flags = ld32(p.val[PROP_FLAGS]),
		.fd = (int32_t)ld32(p.val[PROP_FD]),
		.data = p.len[PROP_DATA] > 0 ? p.val[PROP_DATA] : NULL,
		.data_size = p.len[PROP_DATA],
	};
	if ((flb.flags & ~LUO_STATE_FLB_FLAGS_ALL) || flb.fd < -1 ||
	    flb.data_size > LUO_HANDLER_DATA_MAX)
		return -EBADMSG;
	r = unique_add(&w->unique, UNIQUE_FLB, p.val[PROP_FLB], p.len[PROP_FLB]);
	if (r < 0)
		return r;
	r = unique_fd(w, flb.fd);
	if (r < 0)
		return r;
	w->n_flbs++;
	if (w->v && w->v->flb) {
		r = w->v->flb(&flb, w->userdata);
		if (r < 0)
			return r;
	}
	return (int)end;
}

/* The fields of a luo-file-v2 record (RECORD_SIZE bytes at rec) into f. */
int luo_state_read_file_record(const uint8_t *rec, struct luo_state_file *f)
{
	bool id_zero;

	f->token = ld64(rec + RECORD_TOKEN);
	f->id.dev = ld64(rec + RECORD_DEV);
	f->id.ino = ld64(rec + RECORD_INO);
	f->id.extra = ld64(rec + RECORD_EXTRA);
	f->fd = (int32_t)ld32(rec + RECORD_FD);
	f->flags = ld32(rec + RECORD_FLAGS);
	f->retrieve_error = (int32_t)ld32(rec + RECORD_RETRIEVE_ERROR);
	if (f->flags & ~LUO_STATE_FILE_FLAGS_ALL)
		return -EBADMSG;
	/* An identity is all of it or none (zero), and a discarded fd has none. */
	id_zero = f->id.dev == 0 && f->id.ino == 0 && f->id.extra == 0;
	f->id.by_description = f->flags & LUO_STATE_FILE_ID_BY_DESCRIPTION;
	if (id_zero && f->id.by_description)
		return -EBADMSG;
	if (!id_zero && f->fd < 0)
		return -EBADMSG;
	f->has_id = !id_zero;
	f->flags &= ~LUO_STATE_FILE_ID_BY_DESCRIPTION;
	return 0;
}

/* The rules every file obeys whatever its layout, then its callback. */
static int check_file(struct walk *w, const struct luo_state_file *f,
		      const struct luo_state_session *s)
{
	bool incoming_used;
	int r;

	if (f->data_size > LUO_HANDLER_DATA_MAX || !errno_in_range(f->retrieve_error))
		return -EBADMSG;
	/* A finished session holds no files.  Only a file that went through an
	 * update can be frozen; only a retrieved session's files can have been
	 * retrieved (or failed to be), and only a failed retrieve leaves a file
	 * without its fd. */
	if (s->state == LUO_SESSION_FINISHED)
		return -EBADMSG;
	incoming_used = s->kind == LUO_SESSION_INCOMING && s->state != LUO_SESSION_WAITING;
	if ((f->flags & LUO_STATE_FILE_FROZEN) && s->kind != LUO_SESSION_INCOMING)
		return -EBADMSG;
	if (((f->flags & LUO_STATE_FILE_RETRIEVED) || f->retrieve_error != 0) && !incoming_used)
		return -EBADMSG;
	if (f->fd < -1 || (f->fd == -1 && f->retrieve_error == 0))
		return -EBADMSG;

	r = token_set_add(&w->tokens, f->token);
	if (r < 0)
		return r;
	r = unique_fd(w, f->fd);
	if (r < 0)
		return r;
	if (w->v && w->v->file) {
		r = w->v->file(f, w->userdata);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Returns the offset just past the node. */
static int walk_file(struct walk *w, uint32_t node, size_t index, const struct luo_state_session *s)
{
	static const char *const versions[] = { LUO_STATE_FILE_COMPATIBLE,
						LUO_STATE_FILE_V1_COMPATIBLE };
	static const struct node_spec *const specs[] = { &file_v2_spec, &file_v1_spec };
	struct luo_state_file f;
	struct props p;
	struct tag t;
	uint32_t end = 0;
	int r, sub, version;

	r = read_tag(w, node, &t);
	if (r < 0)
		return r;
	r = check_node_name(t.name, t.name_len, "file", index);
	if (r < 0)
		return r;
	version = read_node(w, node, versions, ELEMENTSOF(versions), specs, &p, &sub, &end);
	if (version < 0)
		return version;
	if (sub >= 0 || !prop_is_string(&p, PROP_HANDLER, LUO_COMPATIBLE_MAX))
		return -EBADMSG;

	f = (struct luo_state_file){
		.handler = (const char *)p.val[PROP_HANDLER],
		.data = p.len[PROP_DATA] > 0 ? p.val[PROP_DATA] : NULL,
		.data_size = p.len[PROP_DATA],
	};
	if (version == 0) {
		r = luo_state_read_file_record(p.val[PROP_RECORD], &f);
		if (r < 0)
			return r;
	} else {
		f.token = ld64(p.val[PROP_TOKEN]);
		f.fd = (int32_t)ld32(p.val[PROP_FD]);
		f.flags = ld32(p.val[PROP_FLAGS]);
		f.retrieve_error = (int32_t)ld32(p.val[PROP_RETRIEVE_ERROR]);
		if (f.flags & ~LUO_STATE_FILE_V1_FLAGS_ALL)
			return -EBADMSG;
	}
	r = check_file(w, &f, s);
	if (r < 0)
		return r;
	return (int)end;
}

/*
 * The files of a luo-session-v2, from its properties p.  Laid out only as
 * the encoder lays them out, so that nothing in them goes unchecked: the
 * handlers each named once, in the order of their first file, and all used;
 * the files' data back to back in their order, filling file-data exactly.
 */
static int walk_packed_files(struct walk *w, const struct props *p,
			     const struct luo_state_session *s)
{
	const char *handlers[LUO_MAX_HANDLERS];
	const char *list = (const char *)p->val[PROP_HANDLERS];
	const uint8_t *files = p->val[PROP_FILES], *data = p->val[PROP_FILE_DATA];
	uint32_t list_len = p->len[PROP_HANDLERS], data_len = p->len[PROP_FILE_DATA];
	size_t n_handlers = 0, n_used = 0;
	uint64_t data_off = 0;
	int r;

	for (uint32_t off = 0; off < list_len;) {
		const char *h = list + off, *nul = memchr(h, '\0', list_len - off);
		size_t len;

		if (!nul)
			return -EBADMSG;
		len = (size_t)(nul - h);
		if (len == 0 || len >= LUO_COMPATIBLE_MAX || n_handlers == LUO_MAX_HANDLERS)
			return -EBADMSG;
		for (size_t k = 0; k < n_handlers; k++)
			if (strcmp(handlers[k], h) == 0)
				return -EBADMSG;
		handlers[n_handlers++] = h;
		off += (uint32_t)len + 1;
	}
	if (p->len[PROP_FILES] % PACKED_SIZE != 0)
		return -EBADMSG;

	for (uint32_t off = 0; off < p->len[PROP_FILES]; off += PACKED_SIZE) {
		const uint8_t *rec = files + off;
		uint32_t h = ld32(rec + PACKED_HANDLER), doff = ld32(rec + PACKED_DATA_OFFSET),
			 dlen = ld32(rec + PACKED_DATA_SIZE);
		struct luo_state_file f = {};

		r = luo_state_read_file_record(rec, &f);
		if (r < 0)
			return r;
		if (h >= n_handlers || h > n_used)
			return -EBADMSG;
		if (h == n_used)
			n_used++;
		if (doff != data_off || dlen > data_len - data_off)
			return -EBADMSG;
		data_off += dlen;
		f.handler = handlers[h];
		f.data = dlen > 0 ? data + doff : NULL;
		f.data_size = dlen;
		r = check_file(w, &f, s);
		if (r < 0)
			return r;
	}
	if (n_used != n_handlers || data_off != data_len)
		return -EBADMSG;
	return 0;
}

bool luo_state_fits_kind(uint32_t kind, uint32_t state)
{
	if (kind == LUO_SESSION_OUTGOING)
		return state == LUO_SESSION_OPEN;
	if (kind == LUO_SESSION_INCOMING)
		return state == LUO_SESSION_WAITING || state == LUO_SESSION_RETRIEVED ||
		       state == LUO_SESSION_FINISHED || state == LUO_SESSION_STUCK;
	return false;
}

/* Returns the offset just past the node. */
static int walk_session(struct walk *w, uint32_t node, const char *name, uint32_t name_len)
{
	static const char *const versions[] = { LUO_STATE_SESSION_COMPATIBLE,
						LUO_STATE_SESSION_V1_COMPATIBLE,
						LUO_STATE_SESSION_V3_COMPATIBLE };
	static const struct node_spec *const specs[] = { &session_v2_spec, &session_spec,
							 &session_v2_spec };
	struct luo_state_session s;
	uint32_t kind, state, end = 0;
	size_t n_files = 0;
	struct props p;
	int r, sub, version;
	bool packed;

	r = check_node_name(name, name_len, "session", w->n_sessions);
	if (r < 0)
		return r;
	version = read_node(w, node, versions, ELEMENTSOF(versions), specs, &p, &sub, &end);
	if (version < 0)
		return version;
	packed = version != 1;
	/* A luo-session-v2 or v3 carries its files in properties, never as nodes. */
	if (packed && sub >= 0)
		return -EBADMSG;
	if (p.len[PROP_NAME] < 1 || p.len[PROP_NAME] >= LUO_NAME_FIELD ||
	    memchr(p.val[PROP_NAME], '\0', p.len[PROP_NAME]))
		return -EBADMSG;
	kind = ld32(p.val[PROP_KIND]);
	state = ld32(p.val[PROP_STATE]);
	if (!luo_state_fits_kind(kind, state))
		return -EBADMSG;

	s = (struct luo_state_session){
		.name = (const char *)p.val[PROP_NAME],
		.name_len = p.len[PROP_NAME],
		.kind = kind,
		.state = state,
		.flags = ld64(p.val[PROP_FLAGS]),
		.uid = ld32(p.val[PROP_UID]),
		.handle = ld64(p.val[PROP_HANDLE]),
	};
	/* The handed-over bit is v3's, on incoming sessions only, and v3 has it. */
	if (s.flags & ~(version == 2 ? LUO_SESSION_FLAGS_ALL : LUO_SESSION_FLAGS_CREATE))
		return -EBADMSG;
	if (version == 2 &&
	    (!(s.flags & LUO_SESSION_FLAG_HANDED_OVER) || kind != LUO_SESSION_INCOMING))
		return -EBADMSG;
	/* Handles are never ahead of the counter. */
	if (s.handle > w->next_handle)
		return -EBADMSG;
	/* Names are unique per kind and uid: each uid has its own namespace. */
	r = unique_add(
		&w->unique,
		(kind == LUO_SESSION_OUTGOING ? UNIQUE_NAME_OUTGOING : UNIQUE_NAME_INCOMING) |
			((uint64_t)s.uid << 32),
		s.name, s.name_len);
	if (r < 0)
		return r;
	if (s.handle != 0) {
		r = unique_add(&w->unique, UNIQUE_HANDLE, p.val[PROP_HANDLE], 8);
		if (r < 0)
			return r;
	}
	if (w->v && w->v->session) {
		r = w->v->session(&s, w->userdata);
		if (r < 0)
			return r;
	}

	token_set_next_session(&w->tokens, (uint32_t)w->n_sessions);
	if (packed) {
		r = walk_packed_files(w, &p, &s);
		if (r < 0)
			return r;
	}
	while (sub >= 0) {
		r = walk_file(w, (uint32_t)sub, n_files++, &s);
		if (r < 0)
			return r;
		sub = next_child(w, (uint32_t)r, &end);
		if (sub < -1)
			return sub;
	}
	w->n_sessions++;
	return (int)end;
}

/* Everything but the ext node's callback, which waits for fdt_check_full(). */
static int walk_root(struct walk *w)
{
	static const char *const versions[] = { LUO_STATE_COMPATIBLE };
	static const struct node_spec *const specs[] = { &root_spec };
	struct luo_state_root root;
	struct props p;
	struct tag t;
	uint32_t end = 0;
	int r, node;

	/* The root comes first and has no name. */
	r = read_tag(w, 0, &t);
	if (r < 0)
		return r;
	if (t.type != FDT_BEGIN_NODE || t.name_len != 0)
		return -EBADMSG;
	r = read_node(w, 0, versions, ELEMENTSOF(versions), specs, &p, &node, &end);
	if (r < 0)
		return r;
	root = (struct luo_state_root){
		.update_number = ld64(p.val[PROP_UPDATE_NUMBER]),
		.next_handle = ld64(p.val[PROP_NEXT_HANDLE]),
		.size = fdt_totalsize(w->fdt),
	};
	w->next_handle = root.next_handle;
	if (w->v && w->v->root) {
		r = w->v->root(&root, w->userdata);
		if (r < 0)
			return r;
	}

	while (node >= 0) {
		r = read_tag(w, (uint32_t)node, &t);
		if (r < 0)
			return r;
		if (node_name_has_prefix(t.name, t.name_len, "flb@"))
			r = walk_flb(w, (uint32_t)node, t.name, t.name_len);
		else if (node_name_has_prefix(t.name, t.name_len, "session@"))
			r = walk_session(w, (uint32_t)node, t.name, t.name_len);
		else if (w->ext_offset < 0 && w->v && w->v->ext_node &&
			 strcmp(t.name, w->v->ext_node) == 0) {
			w->ext_offset = node;
			w->ext_name = t.name;
			r = skip_node(w, (uint32_t)node);
		} else
			r = -EBADMSG;
		if (r < 0)
			return r;
		node = next_child(w, (uint32_t)r, &end);
		if (node < -1)
			return node;
	}
	/* Nothing after the root. */
	r = read_tag(w, end, &t);
	if (r < 0)
		return r;
	return t.type == FDT_END ? 0 : -EBADMSG;
}

/*
 * fdt_check_full() costs as much as the rest of decoding together (about
 * 0.1 us per property), and the walker does not depend on it: on a large
 * blob it runs on a thread of its own while the walk goes on, and is waited
 * for before its verdict could matter, which is before the ext node's
 * callback and before the result is returned.  Its failure wins over the
 * walk's, as if it had run first.  Small blobs are checked in line, where a
 * thread would cost more than it saves.
 */
#define PARALLEL_CHECK_MIN (64u * 1024)

struct check_job {
	const void *fdt;
	size_t size;
	int r;
};

static void *check_thread(void *userdata)
{
	struct check_job *job = userdata;

	job->r = fdt_check_full(job->fdt, job->size);
	return NULL;
}

/* Starts the check, on a thread if that is worth it: true if it is running there. */
static bool check_start(struct check_job *job, pthread_t *thread)
{
	sigset_t all, old;
	bool started;

	if (job->size >= PARALLEL_CHECK_MIN) {
		/* No signal for the caller lands on this thread. */
		sigfillset(&all);
		if (pthread_sigmask(SIG_SETMASK, &all, &old) == 0) {
			started = pthread_create(thread, NULL, check_thread, job) == 0;
			(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
			if (started)
				return true;
		}
	}
	check_thread(job);
	return false;
}

static void walk_done(struct walk *w)
{
	free(w->unique.slots);
	free(w->fds.bits);
	free(w->fds.big);
	free(w->tokens.slots);
}

int luo_state_walk(const void *blob, size_t size, const struct luo_state_visitor *v, void *userdata)
{
	_cleanup_free_ void *aligned = NULL;
	struct walk w = {
		.v = v,
		.userdata = userdata,
		.ext_offset = -1,
	};
	struct check_job job = {};
	pthread_t thread;
	bool threaded;
	const uint8_t *rsv;
	int r;

	if (!blob && size > 0)
		return -EINVAL;
	if (size < sizeof(struct fdt_header) || size > LUO_STATE_MAX_SIZE)
		return -EBADMSG;
	/* libfdt wants 8-byte alignment; a blob read from a file may lack it. */
	if ((uintptr_t)blob % 8 != 0) {
		aligned = malloc(size);
		if (!aligned)
			return -ENOMEM;
		memcpy(aligned, blob, size);
		blob = aligned;
	}
	w.fdt = blob;

	/*
	 * Exactly one blob of the version fdt_create() writes, without trailing
	 * bytes.  Checked before fdt_check_full(): libfdt 1.6.1's dereferences a
	 * NULL node name on blobs older than version 16.  fdt_check_header()
	 * bounds the blocks the walker reads.
	 */
	if (fdt_magic(blob) != FDT_MAGIC || fdt_version(blob) != FDT_LAST_SUPPORTED_VERSION ||
	    fdt_last_comp_version(blob) != FDT_LAST_COMPATIBLE_VERSION ||
	    fdt_totalsize(blob) != size)
		return -EBADMSG;
	r = fdt_check_header(blob);
	if (r < 0)
		return luo_fdt_errno(r);
	/* No memory reservations: nothing here would mean anything. */
	if (fdt_off_mem_rsvmap(blob) > size - 16)
		return -EBADMSG;
	rsv = (const uint8_t *)blob + fdt_off_mem_rsvmap(blob);
	for (size_t k = 0; k < 16; k++)
		if (rsv[k] != 0)
			return -EBADMSG;
	w.st = (const uint8_t *)blob + fdt_off_dt_struct(blob);
	w.st_size = fdt_size_dt_struct(blob);
	w.strings = (const char *)blob + fdt_off_dt_strings(blob);
	w.strings_size = fdt_size_dt_strings(blob);

	job = (struct check_job){ .fdt = blob, .size = size };
	threaded = check_start(&job, &thread);
	if (job.r < 0 && !threaded)
		return luo_fdt_errno(job.r);

	r = walk_root(&w);
	walk_done(&w);
	if (threaded)
		(void)pthread_join(thread, NULL);
	if (job.r < 0)
		return luo_fdt_errno(job.r);
	if (r < 0)
		return r;
	if (w.v && w.v->ext)
		return w.v->ext(w.fdt, w.ext_offset, w.ext_name, w.userdata);
	return 0;
}

/* ---- decoding ---------------------------------------------------------- */

struct decode {
	luo_engine *e;
	unsigned flags;
	const struct luo_state_ext *ext;
	struct luo_session *session;		/* the one whose files come next */
	const struct luo_handler *last_handler; /* files of one handler come in runs */
	struct pollfd *polls;			/* the files' fds, checked open at the end */
	size_t n_polls, cap_polls;
	/* luo_state_decode_mapped(): where each file is now */
	luo_state_fd_map map;
	void *map_userdata;
	size_t session_index; /* of d->session, counting from 0 */
};

const struct luo_flb_ops *luo_state_find_flb_ops(const luo_engine *e, const char *compatible)
{
	for (size_t i = 0; i < e->n_handlers; i++) {
		const struct luo_flb_ops *ops = e->handlers[i]->flb;

		if (ops && strcmp(ops->compatible, compatible) == 0)
			return ops;
	}
	return NULL;
}

int luo_state_dup_data(const void *data, size_t size, void **ret)
{
	void *p = NULL;

	if (size > 0) {
		p = malloc(size);
		if (!p)
			return -ENOMEM;
		memcpy(p, data, size);
	}
	*ret = p;
	return 0;
}

static int fd_check_open(int fd)
{
	return fcntl(fd, F_GETFD) < 0 ? -EBADF : 0;
}

#define POLL_BATCH 1024 /* never above RLIMIT_NOFILE's usual soft limit */

/*
 * Whether every fd in p is open (0) or not (-EBADF): one poll() (timeout 0,
 * no event asked) per POLL_BATCH fds, which reports a closed one as
 * POLLNVAL, rather than one fcntl() each, which costs ten times more (1 ms
 * at 10,000 files here).
 */
int luo_fds_check_open(struct pollfd *p, size_t n)
{
	for (size_t i = 0; i < n; i += POLL_BATCH) {
		size_t k = MIN(n - i, (size_t)POLL_BATCH);

		if (poll(p + i, (nfds_t)k, 0) < 0) {
			for (size_t j = i; j < i + k; j++)
				if (fd_check_open(p[j].fd) < 0)
					return -EBADF;
			continue;
		}
		for (size_t j = i; j < i + k; j++)
			if (p[j].revents & POLLNVAL)
				return -EBADF;
	}
	return 0;
}

static int poll_add(struct decode *d, int fd)
{
	if (d->n_polls == d->cap_polls) {
		size_t cap = d->cap_polls ? d->cap_polls * 2 : 256;
		struct pollfd *p = realloc(d->polls, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		d->polls = p;
		d->cap_polls = cap;
	}
	d->polls[d->n_polls++] = (struct pollfd){ .fd = fd };
	return 0;
}

static int decode_root(const struct luo_state_root *root, void *userdata)
{
	struct decode *d = userdata;

	d->e->update_number = root->update_number;
	d->e->next_handle = root->next_handle;
	return 0;
}

static int decode_flb(const struct luo_state_flb *rec, void *userdata)
{
	struct decode *d = userdata;
	const struct luo_flb_ops *ops;
	struct luo_flb *flb;
	void *data;
	int r;

	ops = luo_state_find_flb_ops(d->e, rec->compatible);
	if (!ops)
		return -ENOPROTOOPT;
	/* Nothing an FLB holds crossed with the files: its record means nothing here. */
	if (d->map)
		return 0;
	if (!(d->flags & LUO_STATE_BORROW_FDS) && rec->fd >= 0) {
		r = fd_check_open(rec->fd);
		if (r < 0)
			return r;
	}
	flb = luo_flb_get(d->e, ops);
	if (!flb)
		return -ENOMEM;
	r = luo_state_dup_data(rec->data, rec->data_size, &data);
	if (r < 0)
		return r;
	flb->count = rec->count;
	flb->incoming = rec->flags & LUO_STATE_FLB_INCOMING;
	flb->retrieved = rec->flags & LUO_STATE_FLB_RETRIEVED;
	flb->fd = rec->fd >= 0 ? rec->fd : -EBADF;
	flb->data = data;
	flb->data_size = rec->data_size;
	return 0;
}

static int decode_session(const struct luo_state_session *rec, void *userdata)
{
	struct decode *d = userdata;
	char name[LUO_NAME_FIELD] = {};
	struct luo_session *s;
	int r;

	memcpy(name, rec->name, rec->name_len);
	r = luo_session_new(d->e, name, rec->name_len, rec->kind, rec->state, rec->flags, rec->uid,
			    &s);
	if (r < 0)
		return r == -EEXIST ? -EBADMSG : r;
	if (d->session)
		d->session_index++;
	d->session = s;
	/* The walker has found the handle unique; set_handle() checks again. */
	r = luo_session_set_handle(s, rec->handle);
	if (r < 0)
		return r == -EEXIST ? -EBADMSG : r;
	return 0;
}

/* The engine's file for a decoded record, held under fd, as the record says it is. */
static int decoded_file_new(struct decode *d, const struct luo_state_file *rec,
			    const struct luo_handler *h, int fd, struct luo_file **ret)
{
	struct luo_file *f;
	void *data;
	int r;

	r = luo_state_dup_data(rec->data, rec->data_size, &data);
	if (r < 0)
		return r;
	r = luo_file_new(d->session, rec->token, h, fd, data, rec->data_size, &f);
	if (r < 0) {
		free(data);
		return r == -EEXIST ? -EBADMSG : r;
	}
	f->frozen = rec->flags & LUO_STATE_FILE_FROZEN;
	f->retrieved = rec->flags & LUO_STATE_FILE_RETRIEVED;
	f->retrieve_error = rec->retrieve_error;
	*ret = f;
	return 0;
}

/*
 * A file that crossed a kexec: the blob's slot means nothing, map() says
 * where the file is now.  Its identity is its new fd's, and its handler
 * records it again: the record describes the file as it is here.
 */
static int decode_file_mapped(struct decode *d, const struct luo_state_file *rec,
			      const struct luo_handler *h)
{
	struct luo_file *f;
	int fd = -EBADF, r;

	/* Nothing an FLB holds crosses a kexec, so neither do its files. */
	if (h->flb)
		return 0;
	if (rec->fd >= 0) {
		r = d->map(d->session_index, rec->token, &fd, d->map_userdata);
		if (r == -ENOENT)
			return 0; /* left behind: the session goes on without it */
		if (r < 0)
			return r;
		/* Born as every fd the engine holds is. */
		if (fcntl(fd, F_SETFD, d->e->inheritable_fds ? 0 : FD_CLOEXEC) < 0)
			return -errno;
	}
	r = decoded_file_new(d, rec, h, fd, &f);
	if (r < 0)
		return r;
	if (f->hf.fd < 0)
		return 0;
	r = luo_file_identify(f);
	if (r < 0)
		return r == -EBUSY ? -EBADMSG : r;
	if (f->frozen && h->freeze)
		r = h->freeze(&f->hf);
	return r;
}

static int decode_file(const struct luo_state_file *rec, void *userdata)
{
	struct decode *d = userdata;
	bool borrow = d->flags & LUO_STATE_BORROW_FDS;
	const struct luo_handler *h = d->last_handler;
	struct luo_file *f;
	int r;

	assert(d->session);
	if (!h || strcmp(h->compatible, rec->handler) != 0) {
		h = luo_engine_find_handler(d->e, rec->handler);
		if (!h)
			return -ENOPROTOOPT;
		d->last_handler = h;
	}
	if (d->map)
		return decode_file_mapped(d, rec, h);
	/* Checked open all at once before decode_ext(); a closed one makes
	 * luo_file_identify() fail with EBADF on its own. */
	if (!borrow && rec->fd >= 0) {
		r = poll_add(d, rec->fd);
		if (r < 0)
			return r;
	}
	r = decoded_file_new(d, rec, h, rec->fd >= 0 ? rec->fd : -EBADF, &f);
	if (r < 0)
		return r;
	if (borrow) {
		/* Not indexed, but carried on should the engine be encoded again. */
		if (rec->has_id)
			f->id = rec->id;
	} else if (f->hf.fd >= 0) {
		/*
		 * The identity the previous luod computed still holds: the fd
		 * and its open file description came through execve()
		 * unchanged.  Only a blob without one (luo-file-v1) costs an
		 * fstat() and the handler's get_id() per file.
		 */
		r = rec->has_id ? luo_identity_add_known(d->e, f, &rec->id) : luo_file_identify(f);
		if (r < 0)
			return r == -EBUSY ? -EBADMSG : r;
	}
	return 0;
}

static int decode_ext(const void *fdt, int offset, const char *name, void *userdata)
{
	struct decode *d = userdata;
	int r;

	r = luo_fds_check_open(d->polls, d->n_polls);
	if (r < 0)
		return r;
	if (!d->ext || !d->ext->read)
		return 0;
	return d->ext->read(fdt, offset, d->ext->userdata);
}

static bool flb_is_blank(const struct luo_flb *flb)
{
	return flb->count == 0 && !flb->data && flb->fd < 0 && !flb->incoming && !flb->retrieved;
}

static int decode(luo_engine *e, const void *blob, size_t size, unsigned flags,
		  const struct luo_state_ext *ext, luo_state_fd_map map, void *map_userdata)
{
	_cleanup_free_ struct luo_flb *saved_flbs = NULL;
	struct decode d = {
		.e = e, .flags = flags, .ext = ext, .map = map, .map_userdata = map_userdata
	};
	const struct luo_state_visitor visitor = {
		.ext_node = ext ? ext->node : NULL,
		.root = decode_root,
		.flb = decode_flb,
		.session = decode_session,
		.file = decode_file,
		.ext = decode_ext,
	};
	uint64_t saved_update_number, saved_next_handle;
	size_t saved_n_flbs;
	bool saved_borrowed;
	int r;

	if (!e || (!blob && size > 0) || (flags & ~LUO_STATE_BORROW_FDS))
		return -EINVAL;
	if (ext && !ext->node)
		return -EINVAL;
	if (!list_empty(&e->outgoing) || !list_empty(&e->incoming) || e->n_files != 0)
		return -EBUSY;
	for (size_t k = 0; k < e->n_flbs; k++)
		if (!flb_is_blank(&e->flbs[k]))
			return -EBUSY;

	saved_flbs = malloc(sizeof(e->flbs));
	if (!saved_flbs)
		return -ENOMEM;
	memcpy(saved_flbs, e->flbs, sizeof(e->flbs));
	saved_n_flbs = e->n_flbs;
	saved_update_number = e->update_number;
	saved_next_handle = e->next_handle;
	saved_borrowed = e->borrowed_fds;

	/* While building, the fds still belong to the caller: a teardown must
	 * not close them. */
	e->borrowed_fds = true;
	r = luo_state_walk(blob, size, &visitor, &d);
	free(d.polls);
	if (r >= 0) {
		e->borrowed_fds = (flags & LUO_STATE_BORROW_FDS) ? true : saved_borrowed;
		return 0;
	}

	LIST_FOREACH_SAFE (pos, &e->incoming)
		luo_session_free(list_entry(pos, struct luo_session, order));
	LIST_FOREACH_SAFE (pos, &e->outgoing)
		luo_session_free(list_entry(pos, struct luo_session, order));
	/* The FLBs were blank before, so any data is what this decode allocated. */
	for (size_t k = 0; k < e->n_flbs; k++)
		free(e->flbs[k].data);
	memcpy(e->flbs, saved_flbs, sizeof(e->flbs));
	e->n_flbs = saved_n_flbs;
	e->update_number = saved_update_number;
	e->next_handle = saved_next_handle;
	e->borrowed_fds = saved_borrowed;
	return r;
}

int luo_state_decode(luo_engine *e, const void *blob, size_t size, unsigned flags,
		     const struct luo_state_ext *ext)
{
	return decode(e, blob, size, flags, ext, NULL, NULL);
}

int luo_state_decode_mapped(luo_engine *e, const void *blob, size_t size, luo_state_fd_map map,
			    void *userdata)
{
	if (!map)
		return -EINVAL;
	return decode(e, blob, size, 0, NULL, map, userdata);
}
