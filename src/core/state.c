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
 *       session@<i> { compatible = "luo-session-v1"; name = [1..63 bytes];
 *                 kind = <u32>; state = <u32>; flags = <u64>; uid = <u32>;
 *                 handle = <u64>;
 *                 file@<j> { compatible = "luo-file-v1"; token = <u64>;
 *                            handler = "<handler compatible>"; fd = <s32>;
 *                            data = [bytes]; flags = <u32: frozen, retrieved>;
 *                            retrieve-error = <s32>; };
 *       };
 *       <ext node, written by the daemon through struct luo_state_ext>
 *   };
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
 * unknown flags; data at most LUO_HANDLER_DATA_MAX bytes; every handler and
 * FLB known to the engine (else -ENOPROTOOPT).
 *
 * Lifecycle: luo_state_encode() walks a live engine and builds the blob with
 * libfdt's sequential-write API, growing the buffer and starting over when it
 * runs out of room.  luo_state_decode() lets luo_state_walk() check each node
 * as it is reached, uniqueness included, and builds the engine from it with
 * the engine's own constructors, node by node, in a single pass.  Any failure
 * tears down everything built so far without closing an fd named in the
 * blob: until decode succeeds, those fds are the caller's.
 */
#include <assert.h>
#include <fcntl.h>
#include <libfdt.h>
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

/* ---- encoding ---------------------------------------------------------- */

/* Each libfdt call checked on its own; its code becomes -errno here. */
#define FDT_TRY(expr)                                                                              \
	do {                                                                                       \
		int _r_ = (expr);                                                                  \
		if (_r_ < 0)                                                                       \
			return luo_fdt_errno(_r_);                                                 \
	} while (0)

/* "<kind>@<index>" in decimal: by hand, as snprintf() showed in profiles. */
static int encode_node_name(char *buf, size_t size, const char *kind, size_t index)
{
	char digits[24];
	size_t k = strlen(kind), n = 0;

	do {
		digits[sizeof(digits) - 1 - n++] = (char)('0' + index % 10);
		index /= 10;
	} while (index > 0);
	if (k + 1 + n + 1 > size)
		return -EINVAL;
	memcpy(buf, kind, k);
	buf[k] = '@';
	memcpy(buf + k + 1, digits + sizeof(digits) - n, n);
	buf[k + 1 + n] = '\0';
	return 0;
}

static int encode_flb(void *fdt, size_t index, const struct luo_flb *flb)
{
	char node[32];
	uint32_t flags = 0;

	if (flb->incoming)
		flags |= LUO_STATE_FLB_INCOMING;
	if (flb->retrieved)
		flags |= LUO_STATE_FLB_RETRIEVED;
	/* Refuse here what the next binary would refuse to read. */
	if (flb->data_size > LUO_HANDLER_DATA_MAX)
		return -EOVERFLOW;

	FDT_TRY(encode_node_name(node, sizeof(node), "flb", index));
	FDT_TRY(fdt_begin_node(fdt, node));
	FDT_TRY(fdt_property_string(fdt, "compatible", LUO_STATE_FLB_COMPATIBLE));
	FDT_TRY(fdt_property_string(fdt, "flb", flb->ops->compatible));
	FDT_TRY(fdt_property_u64(fdt, "count", flb->count));
	FDT_TRY(fdt_property_u32(fdt, "flags", flags));
	FDT_TRY(fdt_property_u32(fdt, "fd", (uint32_t)(flb->fd >= 0 ? flb->fd : -1)));
	FDT_TRY(fdt_property(fdt, "data", flb->data, (int)flb->data_size));
	FDT_TRY(fdt_end_node(fdt));
	return 0;
}

static int encode_file(void *fdt, size_t index, const struct luo_file *f)
{
	char node[32];
	uint32_t flags = 0;

	if (f->frozen)
		flags |= LUO_STATE_FILE_FROZEN;
	if (f->retrieved)
		flags |= LUO_STATE_FILE_RETRIEVED;
	if (f->hf.data_size > LUO_HANDLER_DATA_MAX)
		return -EOVERFLOW;

	FDT_TRY(encode_node_name(node, sizeof(node), "file", index));
	FDT_TRY(fdt_begin_node(fdt, node));
	FDT_TRY(fdt_property_string(fdt, "compatible", LUO_STATE_FILE_COMPATIBLE));
	FDT_TRY(fdt_property_u64(fdt, "token", f->hf.token));
	FDT_TRY(fdt_property_string(fdt, "handler", f->handler->compatible));
	FDT_TRY(fdt_property_u32(fdt, "fd", (uint32_t)(f->hf.fd >= 0 ? f->hf.fd : -1)));
	FDT_TRY(fdt_property(fdt, "data", f->hf.data, (int)f->hf.data_size));
	FDT_TRY(fdt_property_u32(fdt, "flags", flags));
	FDT_TRY(fdt_property_u32(fdt, "retrieve-error", (uint32_t)f->retrieve_error));
	FDT_TRY(fdt_end_node(fdt));
	return 0;
}

static int encode_session(void *fdt, size_t index, const struct luo_session *s)
{
	char node[32];
	size_t j = 0;
	int r;

	FDT_TRY(encode_node_name(node, sizeof(node), "session", index));
	FDT_TRY(fdt_begin_node(fdt, node));
	FDT_TRY(fdt_property_string(fdt, "compatible", LUO_STATE_SESSION_COMPATIBLE));
	FDT_TRY(fdt_property(fdt, "name", s->name, (int)s->name_len));
	FDT_TRY(fdt_property_u32(fdt, "kind", (uint32_t)s->kind));
	FDT_TRY(fdt_property_u32(fdt, "state", (uint32_t)s->state));
	FDT_TRY(fdt_property_u64(fdt, "flags", s->flags));
	FDT_TRY(fdt_property_u32(fdt, "uid", s->uid));
	FDT_TRY(fdt_property_u64(fdt, "handle", s->handle));
	LIST_FOREACH (pos, &s->files) {
		r = encode_file(fdt, j++, list_entry(pos, struct luo_file, order));
		if (r < 0)
			return r;
	}
	FDT_TRY(fdt_end_node(fdt));
	return 0;
}

static size_t tag_align(size_t n)
{
	return (n + FDT_TAGSIZE - 1) & ~(FDT_TAGSIZE - 1);
}

struct name_slot {
	uint64_t hash; /* 0: empty */
	uint32_t off, len;
};

/*
 * libfdt 1.6.1 looks a property name up by comparing at every byte of the
 * strings block, for every property it writes: that was most of the time of
 * encoding.  Names are therefore appended without the lookup
 * (FDT_CREATE_FLAG_NO_NAME_DEDUP) and shared here in one pass over the
 * finished structure block, which this file has just written and trusts.
 * The strings block becomes each distinct name once, in order of first use.
 */
static int dedup_names(void *fdt)
{
	char *base = fdt;
	char *strings = base + fdt_off_dt_strings(fdt);
	char *p = base + fdt_off_dt_struct(fdt), *end = p + fdt_size_dt_struct(fdt);
	_cleanup_free_ struct name_slot *slots = NULL;
	_cleanup_free_ char *table = NULL;
	size_t n_slots = 64, count = 0, table_size = 0;

	/* The new block is never larger than the old one. */
	table = malloc(fdt_size_dt_strings(fdt) + 1);
	slots = calloc(n_slots, sizeof(*slots));
	if (!table || !slots)
		return -ENOMEM;

	while (p < end) {
		uint32_t tag = fdt32_ld((const fdt32_t *)p);
		const char *name;
		uint32_t len, name_len;
		uint64_t h;
		size_t i;

		p += FDT_TAGSIZE;
		if (tag == FDT_BEGIN_NODE) {
			p += tag_align(strlen(p) + 1);
			continue;
		}
		if (tag != FDT_PROP)
			continue;
		len = fdt32_ld((const fdt32_t *)p);
		name = strings + fdt32_ld((const fdt32_t *)(p + 4));
		name_len = (uint32_t)strlen(name);
		h = hash_bytes(name, name_len) | 1;
		for (i = h & (n_slots - 1); slots[i].hash; i = (i + 1) & (n_slots - 1))
			if (slots[i].hash == h && slots[i].len == name_len &&
			    memcmp(table + slots[i].off, name, name_len) == 0)
				break;
		if (!slots[i].hash) {
			if ((count + 1) * 2 > n_slots) {
				/* Only an ext node with many names gets here. */
				size_t n = n_slots * 2;
				struct name_slot *bigger = calloc(n, sizeof(*bigger));

				if (!bigger)
					return -ENOMEM;
				for (size_t k = 0; k < n_slots; k++) {
					size_t j;

					if (!slots[k].hash)
						continue;
					for (j = slots[k].hash & (n - 1); bigger[j].hash;
					     j = (j + 1) & (n - 1))
						;
					bigger[j] = slots[k];
				}
				free(slots);
				slots = bigger;
				n_slots = n;
				for (i = h & (n_slots - 1); slots[i].hash;
				     i = (i + 1) & (n_slots - 1))
					;
			}
			slots[i] = (struct name_slot){ h, (uint32_t)table_size, name_len };
			memcpy(table + table_size, name, name_len + 1);
			table_size += name_len + 1;
			count++;
		}
		fdt32_st(p + 4, slots[i].off);
		p += 2 * FDT_TAGSIZE + tag_align(len);
	}
	memcpy(strings, table, table_size);
	fdt_set_size_dt_strings(fdt, (uint32_t)table_size);
	fdt_set_totalsize(fdt, fdt_off_dt_strings(fdt) + (uint32_t)table_size);
	return 0;
}

static int encode_into(const luo_engine *e, const struct luo_state_ext *ext, void *buf, size_t size)
{
	size_t i = 0;
	int r;

	FDT_TRY(fdt_create_with_flags(buf, (int)size, FDT_CREATE_FLAG_NO_NAME_DEDUP));
	FDT_TRY(fdt_finish_reservemap(buf));
	FDT_TRY(fdt_begin_node(buf, ""));
	FDT_TRY(fdt_property_string(buf, "compatible", LUO_STATE_COMPATIBLE));
	FDT_TRY(fdt_property_u64(buf, "update-number", e->update_number));
	FDT_TRY(fdt_property_u64(buf, "next-handle", e->next_handle));
	for (size_t k = 0; k < e->n_flbs; k++) {
		r = encode_flb(buf, k, &e->flbs[k]);
		if (r < 0)
			return r;
	}
	LIST_FOREACH (pos, &e->outgoing) {
		r = encode_session(buf, i++, list_entry(pos, struct luo_session, order));
		if (r < 0)
			return r;
	}
	LIST_FOREACH (pos, &e->incoming) {
		r = encode_session(buf, i++, list_entry(pos, struct luo_session, order));
		if (r < 0)
			return r;
	}
	if (ext) {
		FDT_TRY(fdt_begin_node(buf, ext->node));
		r = ext->write(buf, ext->userdata);
		if (r < 0)
			return r;
		FDT_TRY(fdt_end_node(buf));
	}
	FDT_TRY(fdt_end_node(buf));
	FDT_TRY(fdt_finish(buf));
	r = dedup_names(buf);
	if (r < 0)
		return r;
	FDT_TRY(fdt_pack(buf));
	return 0;
}

/* A first guess large enough for most engines, so that a big state is
 * rarely built twice. */
static size_t encode_estimate(const luo_engine *e)
{
	size_t n_sessions = e->outgoing.count + e->incoming.count;
	size_t est = 4096 + n_sessions * 320 + e->n_files * 256;

	for (size_t k = 0; k < e->n_flbs; k++)
		est += 256 + e->flbs[k].data_size;
	return MIN(est, (size_t)LUO_STATE_MAX_SIZE);
}

int luo_state_encode(const luo_engine *e, const struct luo_state_ext *ext, void **ret_blob,
		     size_t *ret_size)
{
	size_t size;

	if (!e || !ret_blob || !ret_size)
		return -EINVAL;
	if (ext && (!ext->node || !ext->write || !ext->node[0] || strchr(ext->node, '@') ||
		    strchr(ext->node, '/')))
		return -EINVAL;

	size = encode_estimate(e);
	for (;;) {
		_cleanup_free_ void *buf = malloc(size);
		void *shrunk;
		int r;

		if (!buf)
			return -ENOMEM;
		r = encode_into(e, ext, buf, size);
		if (r == -ENOSPC) {
			if (size >= LUO_STATE_MAX_SIZE)
				return -E2BIG;
			size = MIN(size * 2, (size_t)LUO_STATE_MAX_SIZE);
			continue;
		}
		if (r < 0)
			return r;

		size = fdt_totalsize(buf);
		shrunk = realloc(buf, size);
		if (shrunk)
			buf = shrunk;
		*ret_blob = TAKE_PTR(buf);
		*ret_size = size;
		return 0;
	}
}

/* ---- walking and checking ---------------------------------------------- */

/*
 * The uniqueness rules (fd slots across the blob, handles, names per
 * namespace, tokens per session) are checked as each node is reached, in one
 * open-addressing set of byte strings told apart by a tag, so that a
 * duplicate is reported at the node that repeats, by decode and dump alike,
 * before the engine ever sees it.
 */
enum {
	UNIQUE_FD,
	UNIQUE_HANDLE,
	UNIQUE_NAME_OUTGOING,
	UNIQUE_NAME_INCOMING,
	UNIQUE_FLB,
	UNIQUE_TOKEN, /* + the session's index */
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

static int unique_reserve(struct unique_set *set, size_t n)
{
	size_t slots = 256;

	while (slots < 2 * n)
		slots *= 2;
	set->slots = calloc(slots, sizeof(*set->slots));
	if (!set->slots)
		return -ENOMEM;
	set->n_slots = slots;
	return 0;
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
		size_t n = set->n_slots ? set->n_slots * 2 : 256;
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

struct walk {
	const void *fdt;
	const struct luo_state_visitor *v;
	void *userdata;
	uint64_t next_handle;
	size_t n_flbs, n_sessions;
	struct unique_set unique;
};

/* The properties a node may have; each must appear exactly once. */
struct prop_spec {
	const char *name;
	int len; /* exact length, or -1 for variable */
};

struct prop_val {
	const void *p;
	int len;
};

/*
 * Reads the properties of the node at offset node into vals (indexed like
 * specs): unknown or repeated names, missing ones and wrong fixed lengths
 * are -EBADMSG.  Tags are read one by one so that each is visited once:
 * *ret_next is the offset of the first subnode, or -1 when the node has
 * none, in which case *ret_end is the offset just past its end.
 */
static int read_props(const void *fdt, int node, const struct prop_spec *specs, size_t n,
		      struct prop_val *vals, int *ret_next, int *ret_end)
{
	uint32_t seen = 0;
	size_t n_seen = 0;
	int off, next;

	if (fdt_next_tag(fdt, node, &next) != FDT_BEGIN_NODE)
		return -EBADMSG;
	for (off = next;; off = next) {
		const struct fdt_property *prop;
		const char *name = NULL;
		const void *p;
		uint32_t tag;
		size_t k;
		int len;

		tag = fdt_next_tag(fdt, off, &next);
		if (tag == FDT_NOP)
			continue;
		if (tag == FDT_BEGIN_NODE || tag == FDT_END_NODE) {
			*ret_next = tag == FDT_BEGIN_NODE ? off : -1;
			*ret_end = tag == FDT_END_NODE ? next : -1;
			break;
		}
		if (tag != FDT_PROP || next < 0)
			return -EBADMSG;
		/* fdt_next_tag() has just bounds-checked the whole property, so
		 * read its header here rather than have libfdt walk it again. */
		prop = fdt_offset_ptr(fdt, off, sizeof(*prop));
		if (!prop || fdt32_ld(&prop->len) > (uint32_t)(next - off))
			return -EBADMSG;
		len = (int)fdt32_ld(&prop->len);
		p = prop->data;
		name = fdt_get_string(fdt, (int)fdt32_ld(&prop->nameoff), NULL);
		if (!name)
			return -EBADMSG;
		/* Written in spec order, so the next unseen one is the likely match. */
		k = n_seen < n && strcmp(name, specs[n_seen].name) == 0 ? n_seen : 0;
		if (k != n_seen)
			for (k = 0; k < n; k++)
				if (strcmp(name, specs[k].name) == 0)
					break;
		if (k == n || (seen & (1u << k)))
			return -EBADMSG;
		if (specs[k].len >= 0 && len != specs[k].len)
			return -EBADMSG;
		seen |= 1u << k;
		n_seen++;
		vals[k] = (struct prop_val){ p, len };
	}
	return seen == (1u << n) - 1 ? 0 : -EBADMSG;
}

/*
 * After a node's last child (or its properties) comes either another child
 * or the node's end: returns the child's offset, or -1 with *ret_end just
 * past the end.
 */
static int next_child(const void *fdt, int off, int *ret_end)
{
	for (;;) {
		int next;
		uint32_t tag = fdt_next_tag(fdt, off, &next);

		if (tag == FDT_NOP) {
			off = next;
			continue;
		}
		if (tag == FDT_BEGIN_NODE)
			return off;
		if (tag == FDT_END_NODE && next >= 0) {
			*ret_end = next;
			return -1;
		}
		return -EBADMSG;
	}
}

/* Skips a whole subtree (the ext node): the offset just past its end. */
static int skip_node(const void *fdt, int node)
{
	int depth = 0, off = node;

	for (;;) {
		int next;
		uint32_t tag = fdt_next_tag(fdt, off, &next);

		if (next < 0 || tag == FDT_END)
			return -EBADMSG;
		if (tag == FDT_BEGIN_NODE)
			depth++;
		else if (tag == FDT_END_NODE && --depth == 0)
			return next;
		off = next;
	}
}

/* A NUL-terminated string of 1..max-1 bytes without an inner NUL. */
static bool prop_is_string(const struct prop_val *v, size_t max)
{
	const char *s = v->p;

	return v->len >= 2 && (size_t)v->len <= max && s[v->len - 1] == '\0' &&
	       strlen(s) == (size_t)v->len - 1;
}

/* The compatible property: a malformed one is a bad blob, another version is
 * a blob this binary does not speak. */
static int check_compatible(const struct prop_val *v, const char *want)
{
	if (!prop_is_string(v, 256))
		return -EBADMSG;
	return strcmp(v->p, want) == 0 ? 0 : -EPROTONOSUPPORT;
}

/* Node names are "<kind>@<index>", the index in decimal counting from 0 per
 * kind (no leading zeros), exactly as the encoder writes them. */
static int check_node_name(const char *name, int len, const char *kind, size_t index)
{
	char digits[24];
	size_t k = strlen(kind), n = 0;

	do {
		digits[sizeof(digits) - 1 - n++] = (char)('0' + index % 10);
		index /= 10;
	} while (index > 0);
	if ((size_t)len != k + 1 + n || memcmp(name, kind, k) != 0 || name[k] != '@' ||
	    memcmp(name + k + 1, digits + sizeof(digits) - n, n) != 0)
		return -EBADMSG;
	return 0;
}

static bool node_name_has_prefix(const char *name, int len, const char *prefix)
{
	size_t n = strlen(prefix);

	return (size_t)len >= n && memcmp(name, prefix, n) == 0;
}

static bool errno_in_range(int err)
{
	return err <= 0 && err >= -4095;
}

static int unique_fd(struct walk *w, const struct prop_val *v, int fd)
{
	/* -1 is "no fd" and may repeat. */
	return fd < 0 ? 0 : unique_add(&w->unique, UNIQUE_FD, v->p, (size_t)v->len);
}

/* Returns the offset just past the node. */
static int walk_flb(struct walk *w, int node, const char *name, int name_len)
{
	static const struct prop_spec specs[] = {
		{ "compatible", -1 }, { "flb", -1 }, { "count", 8 },
		{ "flags", 4 },	      { "fd", 4 },   { "data", -1 },
	};
	struct prop_val v[ELEMENTSOF(specs)];
	struct luo_state_flb flb;
	int r, sub, end;

	if (w->n_flbs >= LUO_MAX_FLBS)
		return -EBADMSG;
	r = check_node_name(name, name_len, "flb", w->n_flbs);
	if (r < 0)
		return r;
	r = read_props(w->fdt, node, specs, ELEMENTSOF(specs), v, &sub, &end);
	if (r < 0)
		return r;
	r = check_compatible(&v[0], LUO_STATE_FLB_COMPATIBLE);
	if (r < 0)
		return r;
	if (sub >= 0 || !prop_is_string(&v[1], LUO_COMPATIBLE_MAX))
		return -EBADMSG;

	flb = (struct luo_state_flb){
		.compatible = v[1].p,
		.count = fdt64_ld(v[2].p),
		.flags = fdt32_ld(v[3].p),
		.fd = (int32_t)fdt32_ld(v[4].p),
		.data = v[5].len > 0 ? v[5].p : NULL,
		.data_size = (size_t)v[5].len,
	};
	if ((flb.flags & ~LUO_STATE_FLB_FLAGS_ALL) || flb.fd < -1 ||
	    flb.data_size > LUO_HANDLER_DATA_MAX)
		return -EBADMSG;
	r = unique_add(&w->unique, UNIQUE_FLB, v[1].p, (size_t)v[1].len);
	if (r < 0)
		return r;
	r = unique_fd(w, &v[4], flb.fd);
	if (r < 0)
		return r;
	w->n_flbs++;
	if (w->v && w->v->flb) {
		r = w->v->flb(&flb, w->userdata);
		if (r < 0)
			return r;
	}
	return end;
}

/* Returns the offset just past the node. */
static int walk_file(struct walk *w, int node, size_t index, const struct luo_state_session *s)
{
	static const struct prop_spec specs[] = {
		{ "compatible", -1 }, { "token", 8 }, { "handler", -1 },       { "fd", 4 },
		{ "data", -1 },	      { "flags", 4 }, { "retrieve-error", 4 },
	};
	struct prop_val v[ELEMENTSOF(specs)];
	struct luo_state_file f;
	bool incoming_used;
	const char *name;
	int r, sub, end, len;

	name = fdt_get_name(w->fdt, node, &len);
	if (!name)
		return -EBADMSG;
	r = check_node_name(name, len, "file", index);
	if (r < 0)
		return r;
	r = read_props(w->fdt, node, specs, ELEMENTSOF(specs), v, &sub, &end);
	if (r < 0)
		return r;
	r = check_compatible(&v[0], LUO_STATE_FILE_COMPATIBLE);
	if (r < 0)
		return r;
	if (sub >= 0 || !prop_is_string(&v[2], LUO_COMPATIBLE_MAX))
		return -EBADMSG;

	f = (struct luo_state_file){
		.token = fdt64_ld(v[1].p),
		.handler = v[2].p,
		.fd = (int32_t)fdt32_ld(v[3].p),
		.data = v[4].len > 0 ? v[4].p : NULL,
		.data_size = (size_t)v[4].len,
		.flags = fdt32_ld(v[5].p),
		.retrieve_error = (int32_t)fdt32_ld(v[6].p),
	};
	if ((f.flags & ~LUO_STATE_FILE_FLAGS_ALL) || f.data_size > LUO_HANDLER_DATA_MAX ||
	    !errno_in_range(f.retrieve_error))
		return -EBADMSG;
	/* A finished session holds no files.  Only a file that went through an
	 * update can be frozen; only a retrieved session's files can have been
	 * retrieved (or failed to be), and only a failed retrieve leaves a file
	 * without its fd. */
	if (s->state == LUO_SESSION_FINISHED)
		return -EBADMSG;
	incoming_used = s->kind == LUO_SESSION_INCOMING && s->state != LUO_SESSION_WAITING;
	if ((f.flags & LUO_STATE_FILE_FROZEN) && s->kind != LUO_SESSION_INCOMING)
		return -EBADMSG;
	if (((f.flags & LUO_STATE_FILE_RETRIEVED) || f.retrieve_error != 0) && !incoming_used)
		return -EBADMSG;
	if (f.fd < -1 || (f.fd == -1 && f.retrieve_error == 0))
		return -EBADMSG;

	r = unique_add(&w->unique, UNIQUE_TOKEN + w->n_sessions, v[1].p, 8);
	if (r < 0)
		return r;
	r = unique_fd(w, &v[3], f.fd);
	if (r < 0)
		return r;
	if (w->v && w->v->file) {
		r = w->v->file(&f, w->userdata);
		if (r < 0)
			return r;
	}
	return end;
}

static bool state_fits_kind(uint32_t kind, uint32_t state)
{
	if (kind == LUO_SESSION_OUTGOING)
		return state == LUO_SESSION_OPEN;
	if (kind == LUO_SESSION_INCOMING)
		return state == LUO_SESSION_WAITING || state == LUO_SESSION_RETRIEVED ||
		       state == LUO_SESSION_FINISHED || state == LUO_SESSION_STUCK;
	return false;
}

/* Returns the offset just past the node. */
static int walk_session(struct walk *w, int node, const char *name, int name_len)
{
	static const struct prop_spec specs[] = {
		{ "compatible", -1 }, { "name", -1 }, { "kind", 4 },   { "state", 4 },
		{ "flags", 8 },	      { "uid", 4 },   { "handle", 8 },
	};
	struct prop_val v[ELEMENTSOF(specs)];
	struct luo_state_session s;
	uint32_t kind, state;
	size_t n_files = 0;
	int r, sub, end;

	r = check_node_name(name, name_len, "session", w->n_sessions);
	if (r < 0)
		return r;
	r = read_props(w->fdt, node, specs, ELEMENTSOF(specs), v, &sub, &end);
	if (r < 0)
		return r;
	r = check_compatible(&v[0], LUO_STATE_SESSION_COMPATIBLE);
	if (r < 0)
		return r;
	if (v[1].len < 1 || v[1].len >= LUO_NAME_FIELD || memchr(v[1].p, '\0', v[1].len))
		return -EBADMSG;
	kind = fdt32_ld(v[2].p);
	state = fdt32_ld(v[3].p);
	if (!state_fits_kind(kind, state))
		return -EBADMSG;

	s = (struct luo_state_session){
		.name = v[1].p,
		.name_len = (size_t)v[1].len,
		.kind = kind,
		.state = state,
		.flags = fdt64_ld(v[4].p),
		.uid = fdt32_ld(v[5].p),
		.handle = fdt64_ld(v[6].p),
	};
	if (s.flags & ~LUO_SESSION_FLAGS_ALL)
		return -EBADMSG;
	/* Handles are never ahead of the counter. */
	if (s.handle > w->next_handle)
		return -EBADMSG;
	r = unique_add(&w->unique,
		       kind == LUO_SESSION_OUTGOING ? UNIQUE_NAME_OUTGOING : UNIQUE_NAME_INCOMING,
		       s.name, s.name_len);
	if (r < 0)
		return r;
	if (s.handle != 0) {
		r = unique_add(&w->unique, UNIQUE_HANDLE, v[6].p, 8);
		if (r < 0)
			return r;
	}
	if (w->v && w->v->session) {
		r = w->v->session(&s, w->userdata);
		if (r < 0)
			return r;
	}

	while (sub >= 0) {
		r = walk_file(w, sub, n_files++, &s);
		if (r < 0)
			return r;
		sub = next_child(w->fdt, r, &end);
		if (sub < -1)
			return sub;
	}
	w->n_sessions++;
	return end;
}

static int walk_root(struct walk *w)
{
	static const struct prop_spec specs[] = {
		{ "compatible", -1 },
		{ "update-number", 8 },
		{ "next-handle", 8 },
	};
	struct prop_val v[ELEMENTSOF(specs)];
	struct luo_state_root root;
	const char *ext_name = NULL;
	int r, node, end, ext_offset = -1;
	const void *compat;

	/* The version first: a blob of another version may differ in anything else. */
	compat = fdt_getprop(w->fdt, 0, "compatible", &r);
	if (!compat)
		return r == -FDT_ERR_NOTFOUND ? -EBADMSG : luo_fdt_errno(r);
	r = check_compatible(&(struct prop_val){ compat, r }, LUO_STATE_COMPATIBLE);
	if (r < 0)
		return r;

	r = read_props(w->fdt, 0, specs, ELEMENTSOF(specs), v, &node, &end);
	if (r < 0)
		return r;
	root = (struct luo_state_root){
		.update_number = fdt64_ld(v[1].p),
		.next_handle = fdt64_ld(v[2].p),
		.size = fdt_totalsize(w->fdt),
	};
	w->next_handle = root.next_handle;
	if (w->v && w->v->root) {
		r = w->v->root(&root, w->userdata);
		if (r < 0)
			return r;
	}

	while (node >= 0) {
		const char *name;
		int len;

		name = fdt_get_name(w->fdt, node, &len);
		if (!name || len < 0)
			return -EBADMSG;
		if (node_name_has_prefix(name, len, "flb@"))
			r = walk_flb(w, node, name, len);
		else if (node_name_has_prefix(name, len, "session@"))
			r = walk_session(w, node, name, len);
		else if (ext_offset < 0 && w->v && w->v->ext_node &&
			 strcmp(name, w->v->ext_node) == 0) {
			ext_offset = node;
			ext_name = name;
			r = skip_node(w->fdt, node);
		} else
			r = -EBADMSG;
		if (r < 0)
			return r;
		node = next_child(w->fdt, r, &end);
		if (node < -1)
			return node;
	}
	/* Nothing after the root. */
	if (fdt_next_tag(w->fdt, end, &r) != FDT_END)
		return -EBADMSG;

	if (w->v && w->v->ext)
		return w->v->ext(w->fdt, ext_offset, ext_name, w->userdata);
	return 0;
}

int luo_state_walk(const void *blob, size_t size, const struct luo_state_visitor *v, void *userdata)
{
	_cleanup_free_ void *aligned = NULL;
	struct walk w = {
		.v = v,
		.userdata = userdata,
	};
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
	 * NULL node name on blobs older than version 16.
	 */
	if (fdt_magic(blob) != FDT_MAGIC || fdt_version(blob) != FDT_LAST_SUPPORTED_VERSION ||
	    fdt_last_comp_version(blob) != FDT_LAST_COMPATIBLE_VERSION ||
	    fdt_totalsize(blob) != size)
		return -EBADMSG;
	r = fdt_check_full(blob, size);
	if (r < 0)
		return luo_fdt_errno(r);
	/* No memory reservations: nothing here would mean anything. */
	if (fdt_num_mem_rsv(blob) != 0)
		return -EBADMSG;

	/* A node adds at most two entries and takes well over 64 bytes: sized
	 * once, the set rarely rehashes. */
	r = unique_reserve(&w.unique, MIN(size / 64, (size_t)1 << 18));
	if (r < 0)
		return r;
	r = walk_root(&w);
	free(w.unique.slots);
	return r;
}

/* ---- decoding ---------------------------------------------------------- */

struct decode {
	luo_engine *e;
	unsigned flags;
	const struct luo_state_ext *ext;
	struct luo_session *session; /* the one whose files come next */
};

static const struct luo_flb_ops *find_flb_ops(const luo_engine *e, const char *compatible)
{
	for (size_t i = 0; i < e->n_handlers; i++) {
		const struct luo_flb_ops *ops = e->handlers[i]->flb;

		if (ops && strcmp(ops->compatible, compatible) == 0)
			return ops;
	}
	return NULL;
}

static int dup_data(const void *data, size_t size, void **ret)
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

	ops = find_flb_ops(d->e, rec->compatible);
	if (!ops)
		return -ENOPROTOOPT;
	if (!(d->flags & LUO_STATE_BORROW_FDS) && rec->fd >= 0) {
		r = fd_check_open(rec->fd);
		if (r < 0)
			return r;
	}
	flb = luo_flb_get(d->e, ops);
	if (!flb)
		return -ENOMEM;
	r = dup_data(rec->data, rec->data_size, &data);
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
	d->session = s;
	if (rec->handle != 0) {
		/* Checked here, not only after the walk, so that the index never
		 * sees a handle twice. */
		if (luo_engine_session_by_handle(d->e, rec->handle))
			return -EBADMSG;
		r = luo_session_set_handle(s, rec->handle);
		if (r < 0)
			return r == -EEXIST ? -EBADMSG : r;
	}
	return 0;
}

static int decode_file(const struct luo_state_file *rec, void *userdata)
{
	struct decode *d = userdata;
	bool borrow = d->flags & LUO_STATE_BORROW_FDS;
	const struct luo_handler *h;
	struct luo_file *f;
	void *data;
	int r;

	assert(d->session);
	h = luo_engine_find_handler(d->e, rec->handler);
	if (!h)
		return -ENOPROTOOPT;
	if (!borrow && rec->fd >= 0) {
		r = fd_check_open(rec->fd);
		if (r < 0)
			return r;
	}
	r = dup_data(rec->data, rec->data_size, &data);
	if (r < 0)
		return r;
	r = luo_file_new(d->session, rec->token, h, rec->fd >= 0 ? rec->fd : -EBADF, data,
			 rec->data_size, &f);
	if (r < 0) {
		free(data);
		return r == -EEXIST ? -EBADMSG : r;
	}
	f->frozen = rec->flags & LUO_STATE_FILE_FROZEN;
	f->retrieved = rec->flags & LUO_STATE_FILE_RETRIEVED;
	f->retrieve_error = rec->retrieve_error;
	if (h->flb && !f->flb) {
		f->flb = luo_flb_get(d->e, h->flb);
		if (!f->flb)
			return -ENOMEM;
	}
	if (!borrow && f->hf.fd >= 0) {
		r = luo_file_identify(f);
		if (r < 0)
			return r == -EBUSY ? -EBADMSG : r;
	}
	return 0;
}

static int decode_ext(const void *fdt, int offset, const char *name, void *userdata)
{
	struct decode *d = userdata;

	if (!d->ext || !d->ext->read)
		return 0;
	return d->ext->read(fdt, offset, d->ext->userdata);
}

static bool flb_is_blank(const struct luo_flb *flb)
{
	return flb->count == 0 && !flb->data && flb->fd < 0 && !flb->incoming && !flb->retrieved;
}

int luo_state_decode(luo_engine *e, const void *blob, size_t size, unsigned flags,
		     const struct luo_state_ext *ext)
{
	_cleanup_free_ struct luo_flb *saved_flbs = NULL;
	struct decode d = { .e = e, .flags = flags, .ext = ext };
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
