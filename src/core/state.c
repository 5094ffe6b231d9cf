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
 * count from 0 per kind of node and are checked on the way in, so that a blob
 * that decodes re-encodes to itself.  An fd "slot" is the descriptor number
 * in the process that holds the state (luod keeps its fds across execve()).
 *
 * Lifecycle: luo_state_encode() walks a live engine and builds the blob with
 * libfdt's sequential-write API, growing the buffer and starting over when it
 * runs out of room.  luo_state_decode() first lets luo_state_walk() check
 * every node as it is reached (version strings, property names and exact
 * lengths, value ranges, cross-field consistency), builds the engine with the
 * engine's own constructors node by node, and after the last session checks
 * what needs the whole blob (fd slots, handles, names and tokens unique).
 * Any failure tears down everything built so far without closing an fd
 * named in the blob: until decode succeeds, those fds are the caller's.
 */
#include <assert.h>
#include <fcntl.h>
#include <libfdt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static int encode_node_name(char *buf, size_t size, const char *kind, size_t index)
{
	int n = snprintf(buf, size, "%s@%zu", kind, index);

	return n > 0 && (size_t)n < size ? 0 : -EINVAL;
}

static int encode_flb(void *fdt, size_t index, const struct luo_flb *flb)
{
	char node[32];
	uint32_t flags = 0;

	if (flb->incoming)
		flags |= LUO_STATE_FLB_INCOMING;
	if (flb->retrieved)
		flags |= LUO_STATE_FLB_RETRIEVED;

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

static int encode_into(const luo_engine *e, const struct luo_state_ext *ext, void *buf, size_t size)
{
	size_t i = 0;
	int r;

	FDT_TRY(fdt_create(buf, (int)size));
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

struct name_ref {
	const char *name;
	uint32_t len;
	uint32_t kind;
};

struct walk {
	const void *fdt;
	const struct luo_state_visitor *v;
	void *userdata;
	uint64_t next_handle;
	int ext_offset;
	const char *ext_name;
	size_t n_flbs, n_sessions;
	const char *flb_compat[LUO_MAX_FLBS];
	/* Gathered for the whole-blob uniqueness checks. */
	int *fds;
	size_t n_fds, cap_fds;
	uint64_t *handles;
	size_t n_handles, cap_handles;
	struct name_ref *names;
	size_t n_names, cap_names;
	uint64_t *tokens; /* of the current session */
	size_t cap_tokens;
};

static void walk_done(struct walk *w)
{
	free(w->fds);
	free(w->handles);
	free(w->names);
	free(w->tokens);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t n;
	void *q;

	if (need <= *cap)
		return 0;
	n = MAX(*cap * 2, (size_t)64);
	while (n < need)
		n *= 2;
	q = realloc(*p, n * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

static int walk_add_fd(struct walk *w, int fd)
{
	int r;

	if (fd < 0)
		return 0;
	r = grow((void **)&w->fds, &w->cap_fds, w->n_fds + 1, sizeof(int));
	if (r < 0)
		return r;
	w->fds[w->n_fds++] = fd;
	return 0;
}

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
 * Reads the properties of node into vals (indexed like specs): unknown or
 * repeated names, missing ones and wrong fixed lengths are -EBADMSG.
 */
static int read_props(const void *fdt, int node, const struct prop_spec *specs, size_t n,
		      struct prop_val *vals)
{
	uint32_t seen = 0;
	int off;

	fdt_for_each_property_offset(off, fdt, node)
	{
		const char *name = NULL;
		const void *p;
		size_t k;
		int len;

		p = fdt_getprop_by_offset(fdt, off, &name, &len);
		if (!p || !name || len < 0)
			return -EBADMSG;
		for (k = 0; k < n; k++)
			if (strcmp(name, specs[k].name) == 0)
				break;
		if (k == n || (seen & (1u << k)))
			return -EBADMSG;
		if (specs[k].len >= 0 && len != specs[k].len)
			return -EBADMSG;
		seen |= 1u << k;
		vals[k] = (struct prop_val){ p, len };
	}
	if (off != -FDT_ERR_NOTFOUND)
		return luo_fdt_errno(off);
	return seen == (1u << n) - 1 ? 0 : -EBADMSG;
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

static int check_node_name(const void *fdt, int node, const char *kind, size_t index)
{
	char want[32];
	const char *name;
	int len;

	if (encode_node_name(want, sizeof(want), kind, index) < 0)
		return -EBADMSG;
	name = fdt_get_name(fdt, node, &len);
	if (!name || len < 0 || (size_t)len != strlen(want) || memcmp(name, want, len) != 0)
		return -EBADMSG;
	return 0;
}

static bool node_name_has_prefix(const char *name, int len, const char *prefix)
{
	size_t n = strlen(prefix);

	return (size_t)len >= n && memcmp(name, prefix, n) == 0;
}

/* No subnodes where none are defined. */
static int check_leaf(const void *fdt, int node)
{
	int sub = fdt_first_subnode(fdt, node);

	if (sub >= 0)
		return -EBADMSG;
	return sub == -FDT_ERR_NOTFOUND ? 0 : luo_fdt_errno(sub);
}

static bool errno_in_range(int err)
{
	return err <= 0 && err >= -4095;
}

static int walk_flb(struct walk *w, int node)
{
	static const struct prop_spec specs[] = {
		{ "compatible", -1 }, { "flb", -1 }, { "count", 8 },
		{ "flags", 4 },	      { "fd", 4 },   { "data", -1 },
	};
	struct prop_val v[ELEMENTSOF(specs)];
	struct luo_state_flb flb;
	int r;

	if (w->n_flbs >= LUO_MAX_FLBS)
		return -EBADMSG;
	r = check_node_name(w->fdt, node, "flb", w->n_flbs);
	if (r < 0)
		return r;
	r = read_props(w->fdt, node, specs, ELEMENTSOF(specs), v);
	if (r < 0)
		return r;
	r = check_compatible(&v[0], LUO_STATE_FLB_COMPATIBLE);
	if (r < 0)
		return r;
	r = check_leaf(w->fdt, node);
	if (r < 0)
		return r;
	if (!prop_is_string(&v[1], LUO_COMPATIBLE_MAX))
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
	for (size_t k = 0; k < w->n_flbs; k++)
		if (strcmp(w->flb_compat[k], flb.compatible) == 0)
			return -EBADMSG;
	w->flb_compat[w->n_flbs++] = flb.compatible;
	r = walk_add_fd(w, flb.fd);
	if (r < 0)
		return r;
	return w->v && w->v->flb ? w->v->flb(&flb, w->userdata) : 0;
}

static int walk_file(struct walk *w, int node, size_t index, const struct luo_state_session *s)
{
	static const struct prop_spec specs[] = {
		{ "compatible", -1 }, { "token", 8 }, { "handler", -1 },       { "fd", 4 },
		{ "data", -1 },	      { "flags", 4 }, { "retrieve-error", 4 },
	};
	struct prop_val v[ELEMENTSOF(specs)];
	struct luo_state_file f;
	bool incoming_used;
	int r;

	r = check_node_name(w->fdt, node, "file", index);
	if (r < 0)
		return r;
	r = read_props(w->fdt, node, specs, ELEMENTSOF(specs), v);
	if (r < 0)
		return r;
	r = check_compatible(&v[0], LUO_STATE_FILE_COMPATIBLE);
	if (r < 0)
		return r;
	r = check_leaf(w->fdt, node);
	if (r < 0)
		return r;
	if (!prop_is_string(&v[2], LUO_COMPATIBLE_MAX))
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
	/* Only a file that went through an update can be frozen; only a
	 * retrieved session's files can have been retrieved (or failed to be),
	 * and only a failed retrieve leaves a file without its fd. */
	incoming_used = s->kind == LUO_SESSION_INCOMING && s->state != LUO_SESSION_WAITING;
	if ((f.flags & LUO_STATE_FILE_FROZEN) && s->kind != LUO_SESSION_INCOMING)
		return -EBADMSG;
	if (((f.flags & LUO_STATE_FILE_RETRIEVED) || f.retrieve_error != 0) && !incoming_used)
		return -EBADMSG;
	if (f.fd < -1 || (f.fd == -1 && f.retrieve_error == 0))
		return -EBADMSG;

	r = grow((void **)&w->tokens, &w->cap_tokens, index + 1, sizeof(uint64_t));
	if (r < 0)
		return r;
	w->tokens[index] = f.token;
	r = walk_add_fd(w, f.fd);
	if (r < 0)
		return r;
	return w->v && w->v->file ? w->v->file(&f, w->userdata) : 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return x < y ? -1 : x > y;
}

static int cmp_name(const void *a, const void *b)
{
	const struct name_ref *x = a, *y = b;
	int c;

	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	c = memcmp(x->name, y->name, x->len);
	return c;
}

static bool has_adjacent_equal(const void *base, size_t n, size_t elem,
			       int (*cmp)(const void *, const void *))
{
	const char *p = base;

	for (size_t i = 1; i < n; i++)
		if (cmp(p + (i - 1) * elem, p + i * elem) == 0)
			return true;
	return false;
}

/* Sorts and looks for a repeat: O(n log n) without any per-entry allocation. */
static bool has_duplicates(void *base, size_t n, size_t elem,
			   int (*cmp)(const void *, const void *))
{
	if (n < 2)
		return false;
	qsort(base, n, elem, cmp);
	return has_adjacent_equal(base, n, elem, cmp);
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

static int walk_session(struct walk *w, int node)
{
	static const struct prop_spec specs[] = {
		{ "compatible", -1 }, { "name", -1 }, { "kind", 4 },   { "state", 4 },
		{ "flags", 8 },	      { "uid", 4 },   { "handle", 8 },
	};
	struct prop_val v[ELEMENTSOF(specs)];
	struct luo_state_session s;
	uint32_t kind, state;
	size_t n_files = 0;
	int r, sub;

	r = check_node_name(w->fdt, node, "session", w->n_sessions);
	if (r < 0)
		return r;
	r = read_props(w->fdt, node, specs, ELEMENTSOF(specs), v);
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

	fdt_for_each_subnode(sub, w->fdt, node) n_files++;
	if (sub != -FDT_ERR_NOTFOUND)
		return luo_fdt_errno(sub);

	s = (struct luo_state_session){
		.name = v[1].p,
		.name_len = (size_t)v[1].len,
		.kind = kind,
		.state = state,
		.flags = fdt64_ld(v[4].p),
		.uid = fdt32_ld(v[5].p),
		.handle = fdt64_ld(v[6].p),
		.n_files = n_files,
	};
	if (s.flags & ~LUO_SESSION_FLAGS_ALL)
		return -EBADMSG;
	/* A finished session holds no files; handles are never ahead of the counter. */
	if (s.state == LUO_SESSION_FINISHED && n_files > 0)
		return -EBADMSG;
	if (s.handle > w->next_handle)
		return -EBADMSG;
	if (s.handle != 0) {
		r = grow((void **)&w->handles, &w->cap_handles, w->n_handles + 1, sizeof(uint64_t));
		if (r < 0)
			return r;
		w->handles[w->n_handles++] = s.handle;
	}
	r = grow((void **)&w->names, &w->cap_names, w->n_names + 1, sizeof(struct name_ref));
	if (r < 0)
		return r;
	w->names[w->n_names++] = (struct name_ref){ s.name, (uint32_t)s.name_len, kind };
	w->n_sessions++;

	if (w->v && w->v->session) {
		r = w->v->session(&s, w->userdata);
		if (r < 0)
			return r;
	}

	n_files = 0;
	fdt_for_each_subnode(sub, w->fdt, node)
	{
		r = walk_file(w, sub, n_files++, &s);
		if (r < 0)
			return r;
	}
	if (sub != -FDT_ERR_NOTFOUND)
		return luo_fdt_errno(sub);
	if (has_duplicates(w->tokens, n_files, sizeof(uint64_t), cmp_u64))
		return -EBADMSG;
	return 0;
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
	int r, node;

	/* The version first: a blob of another version may differ in anything else. */
	const void *compat = fdt_getprop(w->fdt, 0, "compatible", &r);
	if (!compat)
		return r == -FDT_ERR_NOTFOUND ? -EBADMSG : luo_fdt_errno(r);
	r = check_compatible(&(struct prop_val){ compat, r }, LUO_STATE_COMPATIBLE);
	if (r < 0)
		return r;

	r = read_props(w->fdt, 0, specs, ELEMENTSOF(specs), v);
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

	fdt_for_each_subnode(node, w->fdt, 0)
	{
		const char *name;
		int len;

		name = fdt_get_name(w->fdt, node, &len);
		if (!name || len < 0)
			return -EBADMSG;
		if (node_name_has_prefix(name, len, "flb@"))
			r = walk_flb(w, node);
		else if (node_name_has_prefix(name, len, "session@"))
			r = walk_session(w, node);
		else if (w->ext_offset < 0 && w->v && w->v->ext_node &&
			 strcmp(name, w->v->ext_node) == 0) {
			w->ext_offset = node;
			w->ext_name = name;
			r = 0;
		} else
			r = -EBADMSG;
		if (r < 0)
			return r;
	}
	if (node != -FDT_ERR_NOTFOUND)
		return luo_fdt_errno(node);

	if (has_duplicates(w->fds, w->n_fds, sizeof(int), cmp_int) ||
	    has_duplicates(w->handles, w->n_handles, sizeof(uint64_t), cmp_u64) ||
	    has_duplicates(w->names, w->n_names, sizeof(struct name_ref), cmp_name))
		return -EBADMSG;

	if (w->v && w->v->ext)
		return w->v->ext(w->fdt, w->ext_offset, w->ext_offset >= 0 ? w->ext_name : NULL,
				 w->userdata);
	return 0;
}

int luo_state_walk(const void *blob, size_t size, const struct luo_state_visitor *v, void *userdata)
{
	_cleanup_free_ void *aligned = NULL;
	struct walk w = {
		.v = v,
		.userdata = userdata,
		.ext_offset = -1,
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

	r = fdt_check_full(blob, size);
	if (r < 0)
		return luo_fdt_errno(r);
	/* Exactly one blob, as written: no trailing bytes, no memory reservations,
	 * the version fdt_create() writes. */
	if (fdt_totalsize(blob) != size || fdt_num_mem_rsv(blob) != 0 ||
	    fdt_version(blob) != FDT_LAST_SUPPORTED_VERSION)
		return -EBADMSG;

	r = walk_root(&w);
	walk_done(&w);
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
