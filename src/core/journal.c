/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the journal (see journal.h for the layout and the rules)
 *
 * Record payloads (after struct luo_jrec, native byte order, names as the
 * kernel's 64-byte field; the file record is the state codec's, big-endian):
 *
 *   ROOT         { u64 update_number; u64 next_handle; }
 *   SESSION      { u32 kind; u32 state; u32 uid; u32 0; u64 flags; u64 handle;
 *                  u8 name[64]; }
 *   SESSION_DEL  { u32 kind; u32 0; u8 name[64]; }
 *   FILE         { u32 kind; u32 data_size; u8 name[64]; char handler[48];
 *                  u8 record[44]; u32 0; } data[data_size]
 *   FILES        { u32 kind; u32 uid; u8 name[64]; u32 n_files; u32 n_handlers; }
 *                char handler[n_handlers][48]
 *                n_files x { u8 handler; u8 flags; u8 0[2]; u32 data_size;
 *                            u8 record[44]; u32 0; } data[data_size], zero-padded
 *                to 8; flags JFILES_KEEP_DATA: no data follows, the file (which
 *                must be there) keeps the data it has (a first retrieve by a
 *                handler that keeps its fd, which keeps its record too)
 *   FILE_DEL     { u32 kind; u32 0; u8 name[64]; u64 token; }
 *   FLB          { char compatible[48]; u64 count; u32 flags; s32 fd;
 *                  u32 data_size; u32 0; } data[data_size]
 *   EXT          { u32 type; u32 size; u64 key; } data[size]
 *   EXT_DEL      { u32 type; u32 0; u64 key; }
 *   CLEAR        {}
 *
 * Replay runs on a borrowing engine: the fds named along the way may have
 * been closed and their numbers reused by later changes, so nothing is
 * looked at until the end, when luo_engine_adopt_fds() checks and takes the
 * fds of the final state.  The rule that makes that sound is on the writing
 * side: an fd is created before the commit that names it and closed only
 * after the commit that stops naming it (luo_engine_close_held()).
 *
 * The ext table travels in the snapshot as the codec's ext node "luod":
 * { compatible = "luod-journal-ext-v1"; entries = [ {u32 type; u32 size;
 * u64 key; data, zero-padded to 8} ... ]; } (big-endian like the codec).
 */
#include <errno.h>
#include <fcntl.h>
#include <libfdt.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/hashmap.h"
#include "basic/macro.h"
#include "core/engine-internal.h"
#include "core/journal.h"
#include "core/state.h"

#define JREC_ALIGN 8
#define COMPAT_FIELD 48

struct jroot {
	uint64_t update_number;
	uint64_t next_handle;
};

struct jsession {
	uint32_t kind, state, uid, reserved;
	uint64_t flags, handle;
	uint8_t name[LUO_NAME_FIELD];
};

/* Sessions are named by (kind, uid, name): each uid has its own namespace. */
struct jsession_del {
	uint32_t kind, uid;
	uint8_t name[LUO_NAME_FIELD];
};

struct jfile {
	uint32_t kind, data_size;
	uint8_t name[LUO_NAME_FIELD];
	char handler[COMPAT_FIELD];
	uint8_t record[LUO_STATE_FILE_RECORD_SIZE];
	uint32_t uid;
};

struct jfiles {
	uint32_t kind, uid;
	uint8_t name[LUO_NAME_FIELD];
	uint32_t n_files, n_handlers;
};

struct jfiles_entry {
	uint8_t handler;
	uint8_t flags;
	uint8_t reserved[2];
	uint32_t data_size;
	uint8_t record[LUO_STATE_FILE_RECORD_SIZE];
	uint32_t reserved2;
};

/* Files per FILES record: a record stays well inside the log's free room. */
#define JFILES_MAX 256
#define JFILES_MAX_HANDLERS 16
#define JFILES_KEEP_DATA 0x1

struct jfile_del {
	uint32_t kind, uid;
	uint8_t name[LUO_NAME_FIELD];
	uint64_t token;
};

struct jflb {
	char compatible[COMPAT_FIELD];
	uint64_t count;
	uint32_t flags;
	int32_t fd;
	uint32_t data_size, reserved;
};

struct jext {
	uint32_t type, size;
	uint64_t key;
};

struct ext_entry {
	struct hash_node node;
	uint32_t type;
	uint64_t key;
	size_t size;
	uint8_t data[];
};

struct flb_shadow {
	bool known;
	uint64_t count;
	uint32_t flags;
	int fd;
	size_t data_size;
	uint64_t data_hash;
};

struct luo_journal {
	int fd;
	uint8_t *map;
	size_t map_size;
	struct luo_journal_header *hdr;
	uint64_t staged_end; /* log bytes written, committed or not */
	uint64_t seq;	     /* of the last record written */
	uint64_t committed_seq;
	struct hashmap ext;
	luo_engine *engine;
	int *deferred; /* fds to close at the next commit */
	size_t n_deferred, cap_deferred;
	bool root_known;
	struct jroot root;
	struct flb_shadow flbs[LUO_MAX_FLBS];
};

/* ---- CRC-32C ---- */

static uint32_t crc_table[256];

static void crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t n)
{
	if (!crc_table[1])
		crc_table_init();
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							    size_t n)
{
	uint64_t c = crc;

	for (; n >= 8; n -= 8, p += 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	crc = (uint32_t)c;
	for (; n > 0; n--)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc;
}
#endif

uint32_t luo_crc32c(uint32_t crc, const void *data, size_t size)
{
	crc = ~crc;
#if defined(__x86_64__)
	static int hw = -1;

	if (hw < 0)
		hw = __builtin_cpu_supports("sse4.2");
	if (hw)
		return ~crc32c_hw(crc, data, size);
#endif
	return ~crc32c_sw(crc, data, size);
}

static uint32_t record_crc(const struct luo_jrec *h, const void *payload, size_t len)
{
	struct luo_jrec copy = *h;

	copy.crc = 0;
	return luo_crc32c(luo_crc32c(0, &copy, sizeof(copy)), payload, len);
}

/* ---- the ext table ---- */

struct ext_key {
	uint32_t type;
	uint64_t key;
};

static uint64_t ext_hash(uint32_t type, uint64_t key)
{
	return hash_u64(key * 31 + type);
}

static bool ext_eq(const struct hash_node *n, const void *k)
{
	const struct ext_entry *e = container_of(n, struct ext_entry, node);
	const struct ext_key *key = k;

	return e->type == key->type && e->key == key->key;
}

static struct ext_entry *ext_find(const struct hashmap *m, uint32_t type, uint64_t key)
{
	struct ext_key k = { type, key };
	struct hash_node *n = hashmap_find(m, ext_hash(type, key), ext_eq, &k);

	return n ? container_of(n, struct ext_entry, node) : NULL;
}

static int ext_table_put(struct hashmap *m, uint32_t type, uint64_t key, const void *data,
			 size_t size)
{
	struct ext_entry *old = ext_find(m, type, key), *e;

	if (size > LUO_JOURNAL_EXT_MAX || (size > 0 && !data))
		return -EINVAL;
	if (old && old->size == size) {
		if (size)
			memcpy(old->data, data, size);
		return 0;
	}
	e = malloc(sizeof(*e) + size);
	if (!e)
		return -ENOMEM;
	e->type = type;
	e->key = key;
	e->size = size;
	if (size)
		memcpy(e->data, data, size);
	if (old) {
		hashmap_remove(m, &old->node);
		free(old);
	}
	if (hashmap_insert(m, &e->node, ext_hash(type, key)) < 0) {
		free(e);
		return -ENOMEM;
	}
	return 0;
}

static void ext_table_del(struct hashmap *m, uint32_t type, uint64_t key)
{
	struct ext_entry *e = ext_find(m, type, key);

	if (e) {
		hashmap_remove(m, &e->node);
		free(e);
	}
}

static void ext_table_clear(struct hashmap *m)
{
	for (size_t b = 0; b < m->n_buckets; b++)
		for (struct hash_node *n = m->buckets[b], *next; n; n = next) {
			next = n->next;
			free(container_of(n, struct ext_entry, node));
		}
	hashmap_done(m);
	hashmap_init(m);
}

/* ---- opening ---- */

static size_t align_up(size_t n, size_t a)
{
	return (n + a - 1) & ~(a - 1);
}

int luo_journal_create(size_t capacity, int *ret_fd)
{
	struct luo_journal_header h = { .version = LUO_JOURNAL_VERSION };
	_cleanup_close_ int fd = -EBADF;

	if (!ret_fd || capacity < 2 * LUO_JOURNAL_HEADER_SIZE)
		return -EINVAL;
	capacity = align_up(capacity, LUO_JOURNAL_HEADER_SIZE);
	/* Inheritable: the keeper's execve() of a new luod keeps it. */
	fd = memfd_create("luod-journal", 0);
	if (fd < 0)
		return negative_errno();
	if (ftruncate(fd, (off_t)capacity) < 0)
		return negative_errno();
	memcpy(h.magic, LUO_JOURNAL_MAGIC, sizeof(h.magic));
	h.header_size = LUO_JOURNAL_HEADER_SIZE;
	h.capacity = capacity;
	h.snapshot_offset = LUO_JOURNAL_HEADER_SIZE;
	h.log_offset = LUO_JOURNAL_HEADER_SIZE;
	if (pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return -EIO;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Checks a header against the size of what holds it. */
static int header_check(const struct luo_journal_header *h, size_t size)
{
	if (size < sizeof(*h) || memcmp(h->magic, LUO_JOURNAL_MAGIC, sizeof(h->magic)) != 0)
		return -EBADMSG;
	if (h->version != LUO_JOURNAL_VERSION)
		return -EPROTONOSUPPORT;
	if (h->header_size != LUO_JOURNAL_HEADER_SIZE || h->capacity > size ||
	    h->snapshot_offset != h->header_size || h->snapshot_size > h->capacity ||
	    h->log_offset < h->snapshot_offset + h->snapshot_size || h->log_offset > h->capacity ||
	    h->log_offset % JREC_ALIGN || h->log_end > h->capacity - h->log_offset ||
	    h->log_end % JREC_ALIGN)
		return -EBADMSG;
	return 0;
}

struct record_iter {
	const uint8_t *log;
	uint64_t end, pos, seq;
};

/* The next committed record, checked: 1 and *ret, 0 at the end, or -EBADMSG. */
static int record_next(struct record_iter *it, const struct luo_jrec **ret)
{
	const struct luo_jrec *h;

	if (it->pos == it->end)
		return 0;
	if (it->end - it->pos < sizeof(*h))
		return -EBADMSG;
	h = (const struct luo_jrec *)(it->log + it->pos);
	if (h->size < sizeof(*h) || h->size % JREC_ALIGN || h->size > it->end - it->pos ||
	    h->seq != it->seq + 1 || h->reserved != 0)
		return -EBADMSG;
	if (record_crc(h, h + 1, h->size - sizeof(*h)) != h->crc)
		return -EBADMSG;
	it->pos += h->size;
	it->seq = h->seq;
	*ret = h;
	return 1;
}

static int map_journal(int fd, uint8_t **ret_map, size_t *ret_size)
{
	struct stat st;
	void *m;

	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (st.st_size < LUO_JOURNAL_HEADER_SIZE)
		return -EBADMSG;
	m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return negative_errno();
	*ret_map = m;
	*ret_size = (size_t)st.st_size;
	return 0;
}

/* Walks the committed records of a mapped journal to find the last seq. */
static int scan_seq(const struct luo_journal_header *h, const uint8_t *base, uint64_t *ret_seq)
{
	struct record_iter it = { base + h->log_offset,
				  __atomic_load_n(&h->log_end, __ATOMIC_ACQUIRE), 0,
				  h->snapshot_seq };
	const struct luo_jrec *rec;
	int r;

	while ((r = record_next(&it, &rec)) > 0)
		;
	if (r < 0)
		return r;
	*ret_seq = it.seq;
	return 0;
}

int luo_journal_open(int fd, luo_journal **ret)
{
	luo_journal *j;
	int r;

	if (fd < 0 || !ret)
		return -EINVAL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->fd = fd;
	hashmap_init(&j->ext);
	r = map_journal(fd, &j->map, &j->map_size);
	if (r < 0) {
		free(j);
		return r;
	}
	j->hdr = (struct luo_journal_header *)j->map;
	r = header_check(j->hdr, j->map_size);
	if (r >= 0)
		r = scan_seq(j->hdr, j->map, &j->seq);
	if (r < 0) {
		munmap(j->map, j->map_size);
		free(j);
		return r;
	}
	j->committed_seq = j->seq;
	j->staged_end = j->hdr->log_end;
	*ret = j;
	return 0;
}

void luo_journal_close(luo_journal *j)
{
	if (!j)
		return;
	if (j->engine)
		luo_journal_attach(NULL, j->engine);
	for (size_t i = 0; i < j->n_deferred; i++)
		safe_close(j->deferred[i]);
	free(j->deferred);
	ext_table_clear(&j->ext);
	hashmap_done(&j->ext);
	munmap(j->map, j->map_size);
	free(j);
}

int luo_journal_fd(const luo_journal *j)
{
	return j->fd;
}

struct luo_journal_header *luo_journal_header(luo_journal *j)
{
	return j->hdr;
}

void *luo_journal_owner_area(luo_journal *j)
{
	return j->hdr->owner;
}

uint64_t luo_journal_log_size(const luo_journal *j)
{
	return j->hdr->log_end;
}

uint64_t luo_journal_snapshot_size(const luo_journal *j)
{
	return j->hdr->snapshot_size;
}

uint64_t luo_journal_seq(const luo_journal *j)
{
	return j->committed_seq;
}

/* ---- writing ---- */

void luo_journal_attach(luo_journal *j, luo_engine *e)
{
	if (!e)
		return;
	if (e->journal && e->journal != j)
		e->journal->engine = NULL;
	e->journal = j;
	if (!j)
		return;
	/* One engine per journal: the one it served before stops reporting. */
	if (j->engine && j->engine != e)
		j->engine->journal = NULL;
	j->engine = e;
	j->root_known = false;
	memset(j->flbs, 0, sizeof(j->flbs));
}

void luo_engine_close_held(struct luo_engine *e, int fd)
{
	if (e->journal)
		luo_journal_close_later(e->journal, fd);
	else
		safe_close(fd);
}

void luo_journal_close_later(luo_journal *j, int fd)
{
	if (fd < 0)
		return;
	{
		if (j->n_deferred == j->cap_deferred) {
			size_t cap = j->cap_deferred ? j->cap_deferred * 2 : 64;
			int *p = realloc(j->deferred, cap * sizeof(int));

			/* Without room the fd stays open until reconciled away:
			 * never closed while the journal may still name it. */
			if (!p)
				return;
			j->deferred = p;
			j->cap_deferred = cap;
		}
		j->deferred[j->n_deferred++] = fd;
	}
}

/*
 * Room for a record of a payload of len bytes past the staged end: where its
 * payload goes, for the caller to fill and stage_end() to seal, or NULL when
 * the log is full.
 */
static uint8_t *stage_begin(luo_journal *j, size_t len)
{
	size_t size = align_up(sizeof(struct luo_jrec) + len, JREC_ALIGN);

	if (size > UINT32_MAX || j->staged_end + size > j->hdr->capacity - j->hdr->log_offset)
		return NULL;
	return j->map + j->hdr->log_offset + j->staged_end + sizeof(struct luo_jrec);
}

/* Pads, checksums and stages the record stage_begin() made room for. */
static void stage_end(luo_journal *j, uint32_t type, size_t len)
{
	struct luo_jrec h = { .type = type };
	size_t size = align_up(sizeof(h) + len, JREC_ALIGN);
	uint8_t *p = j->map + j->hdr->log_offset + j->staged_end;

	h.size = (uint32_t)size;
	h.seq = j->seq + 1;
	memset(p + sizeof(h) + len, 0, size - sizeof(h) - len);
	h.crc = record_crc(&h, p + sizeof(h), size - sizeof(h));
	memcpy(p, &h, sizeof(h));
	j->staged_end += size;
	j->seq++;
}

static int stage(luo_journal *j, uint32_t type, const void *a, size_t alen, const void *b,
		 size_t blen)
{
	uint8_t *p = stage_begin(j, alen + blen);

	if (!p)
		return -ENOSPC;
	if (alen)
		memcpy(p, a, alen);
	if (blen)
		memcpy(p + alen, b, blen);
	stage_end(j, type, alen + blen);
	return 0;
}

void luo_journal_commit(luo_journal *j)
{
	if (j->staged_end != j->hdr->log_end)
		__atomic_store_n(&j->hdr->log_end, j->staged_end, __ATOMIC_RELEASE);
	j->committed_seq = j->seq;
	for (size_t i = 0; i < j->n_deferred; i++)
		safe_close(j->deferred[i]);
	j->n_deferred = 0;
}

size_t luo_journal_staged(const luo_journal *j)
{
	return j->staged_end - j->hdr->log_end;
}

static void name_field(uint8_t field[LUO_NAME_FIELD], const char *name)
{
	size_t n = strnlen(name, LUO_NAME_FIELD - 1);

	memset(field, 0, LUO_NAME_FIELD);
	memcpy(field, name, n);
}

int luo_journal_note_file(luo_journal *j, const luo_session *s, uint64_t token)
{
	const struct luo_file *f = luo_file_lookup(s, token);
	struct jfile rec = {};

	if (!f)
		return 0; /* never was: nothing changed */
	rec.kind = s->kind;
	rec.uid = s->uid;
	rec.data_size = (uint32_t)f->hf.data_size;
	name_field(rec.name, s->name);
	memcpy(rec.handler, f->handler->compatible,
	       strnlen(f->handler->compatible, COMPAT_FIELD - 1));
	luo_state_fill_file_record(rec.record, s->engine, f);
	return stage(j, LUO_JREC_FILE, &rec, sizeof(rec), f->hf.data, f->hf.data_size);
}

/* Whether a FILES entry of f may leave its data out (see JFILES_KEEP_DATA). */
static bool keeps_data(const struct luo_file *f, bool retrieved)
{
	return retrieved && f->handler->retrieve_keeps_fd;
}

/* One FILES record of the files in[0, n) (all of s, none NULL). */
static int note_files_record(luo_journal *j, const luo_session *s, const struct luo_file *const *in,
			     size_t n, bool retrieved)
{
	const struct luo_handler *handlers[JFILES_MAX_HANDLERS];
	struct jfiles hdr = { .kind = s->kind, .uid = s->uid, .n_files = (uint32_t)n };
	size_t size = 0, off;
	uint8_t idx[JFILES_MAX], *out;

	for (size_t i = 0; i < n; i++) {
		uint32_t k;

		for (k = 0; k < hdr.n_handlers && handlers[k] != in[i]->handler; k++)
			;
		if (k == hdr.n_handlers) {
			if (k == JFILES_MAX_HANDLERS)
				return -E2BIG;
			handlers[hdr.n_handlers++] = in[i]->handler;
		}
		idx[i] = (uint8_t)k;
		size += sizeof(struct jfiles_entry);
		if (!keeps_data(in[i], retrieved))
			size += align_up(in[i]->hf.data_size, JREC_ALIGN);
	}
	size += sizeof(hdr) + (size_t)hdr.n_handlers * COMPAT_FIELD;
	/* Written where it goes, in the log. */
	out = stage_begin(j, size);
	if (!out)
		return -ENOSPC;
	memset(out, 0, size);
	name_field(hdr.name, s->name);
	memcpy(out, &hdr, sizeof(hdr));
	off = sizeof(hdr);
	for (uint32_t k = 0; k < hdr.n_handlers; k++, off += COMPAT_FIELD)
		memcpy(out + off, handlers[k]->compatible,
		       strnlen(handlers[k]->compatible, COMPAT_FIELD - 1));
	for (size_t i = 0; i < n; i++) {
		const struct luo_file *f = in[i];
		struct jfiles_entry e = { .handler = idx[i] };

		if (keeps_data(f, retrieved))
			e.flags = JFILES_KEEP_DATA;
		else
			e.data_size = (uint32_t)f->hf.data_size;
		luo_state_fill_file_record(e.record, s->engine, f);
		memcpy(out + off, &e, sizeof(e));
		off += sizeof(e);
		if (e.data_size)
			memcpy(out + off, f->hf.data, e.data_size);
		off += align_up(e.data_size, JREC_ALIGN);
	}
	stage_end(j, LUO_JREC_FILES, size);
	return 0;
}

/* Files gathered into FILES records of at most JFILES_MAX, as they come. */
struct files_chunk {
	const struct luo_file *f[JFILES_MAX];
	size_t n;
	bool retrieved;
};

static int chunk_add(luo_journal *j, const luo_session *s, struct files_chunk *c,
		     const struct luo_file *f)
{
	int r = 0;

	c->f[c->n++] = f;
	if (c->n == JFILES_MAX) {
		r = note_files_record(j, s, c->f, c->n, c->retrieved);
		c->n = 0;
	}
	return r;
}

static int chunk_flush(luo_journal *j, const luo_session *s, struct files_chunk *c)
{
	return c->n ? note_files_record(j, s, c->f, c->n, c->retrieved) : 0;
}

int luo_journal_note_files(luo_journal *j, const luo_session *s, const uint64_t *tokens, size_t n,
			   bool retrieved)
{
	struct files_chunk c = { .retrieved = retrieved };

	for (size_t i = 0; i < n; i++) {
		const struct luo_file *f = luo_file_lookup(s, tokens[i]);
		int r;

		if (!f)
			continue; /* never was: nothing changed */
		r = chunk_add(j, s, &c, f);
		if (r < 0)
			return r;
	}
	return chunk_flush(j, s, &c);
}

int luo_journal_note_file_gone(luo_journal *j, const luo_session *s, uint64_t token)
{
	struct jfile_del rec = { .kind = s->kind, .uid = s->uid, .token = token };

	name_field(rec.name, s->name);
	return stage(j, LUO_JREC_FILE_DEL, &rec, sizeof(rec), NULL, 0);
}

int luo_journal_note_session(luo_journal *j, const luo_session *s, bool with_files)
{
	struct jsession rec = {
		.kind = s->kind,
		.state = s->state,
		.uid = s->uid,
		.flags = s->flags,
		.handle = s->handle,
	};
	int r;

	name_field(rec.name, s->name);
	r = stage(j, LUO_JREC_SESSION, &rec, sizeof(rec), NULL, 0);
	if (r < 0 || !with_files)
		return r;
	{
		struct files_chunk c = {};

		LIST_FOREACH (i, &s->files) {
			r = chunk_add(j, s, &c, list_entry(i, struct luo_file, order));
			if (r < 0)
				return r;
		}
		return chunk_flush(j, s, &c);
	}
}

int luo_journal_note_session_gone(luo_journal *j, enum luo_session_kind kind, uint32_t uid,
				  const char *name)
{
	struct jsession_del rec = { .kind = kind, .uid = uid };

	name_field(rec.name, name);
	return stage(j, LUO_JREC_SESSION_DEL, &rec, sizeof(rec), NULL, 0);
}

static uint32_t flb_flags(const struct luo_flb *flb)
{
	return (flb->incoming ? LUO_STATE_FLB_INCOMING : 0) |
	       (flb->retrieved ? LUO_STATE_FLB_RETRIEVED : 0);
}

static int note_engine(luo_journal *j, bool force)
{
	const struct luo_engine *e = j->engine;
	struct jroot root;
	int r;

	if (!e)
		return -EINVAL;
	root = (struct jroot){ e->update_number, e->next_handle };
	if (force || !j->root_known || memcmp(&root, &j->root, sizeof(root)) != 0) {
		r = stage(j, LUO_JREC_ROOT, &root, sizeof(root), NULL, 0);
		if (r < 0)
			return r;
		j->root = root;
		j->root_known = true;
	}
	for (size_t i = 0; i < e->n_flbs; i++) {
		const struct luo_flb *flb = &e->flbs[i];
		struct flb_shadow now = {
			.known = true,
			.count = flb->count,
			.flags = flb_flags(flb),
			.fd = flb->fd >= 0 ? flb->fd : -1,
			.data_size = flb->data_size,
			.data_hash = flb->data_size ? hash_bytes(flb->data, flb->data_size) : 0,
		};
		struct jflb rec = {};

		if (!force && memcmp(&now, &j->flbs[i], sizeof(now)) == 0)
			continue;
		memcpy(rec.compatible, flb->ops->compatible,
		       strnlen(flb->ops->compatible, COMPAT_FIELD - 1));
		rec.count = now.count;
		rec.flags = now.flags;
		rec.fd = now.fd;
		rec.data_size = (uint32_t)now.data_size;
		r = stage(j, LUO_JREC_FLB, &rec, sizeof(rec), flb->data, flb->data_size);
		if (r < 0)
			return r;
		j->flbs[i] = now;
	}
	return 0;
}

int luo_journal_note_engine(luo_journal *j)
{
	return note_engine(j, false);
}

int luo_journal_note_all(luo_journal *j)
{
	const struct luo_engine *e = j->engine;
	int r;

	if (!e)
		return -EINVAL;
	/* The sessions a reboot dropped or moved have no record of their own. */
	r = stage(j, LUO_JREC_CLEAR, NULL, 0, NULL, 0);
	if (r >= 0)
		r = note_engine(j, true);

	for (int kind = LUO_SESSION_OUTGOING; r >= 0 && kind <= LUO_SESSION_INCOMING; kind++)
		LIST_FOREACH (i, kind == LUO_SESSION_OUTGOING ? &e->outgoing : &e->incoming) {
			r = luo_journal_note_session(j, list_entry(i, struct luo_session, order),
						     true);
			if (r < 0)
				break;
		}
	return r;
}

/*
 * The record first, then the table: a full log (-ENOSPC) must leave the
 * table as the journal has it, the old entry included; a table that cannot
 * grow takes its record back, which is only staged.
 */
int luo_journal_ext_put(luo_journal *j, uint32_t type, uint64_t key, const void *data, size_t size)
{
	struct jext rec = { .type = type, .size = (uint32_t)size, .key = key };
	uint64_t end = j->staged_end, seq = j->seq;
	int r;

	if (size > LUO_JOURNAL_EXT_MAX || (size > 0 && !data))
		return -EINVAL;
	r = stage(j, LUO_JREC_EXT, &rec, sizeof(rec), data, size);
	if (r < 0)
		return r;
	r = ext_table_put(&j->ext, type, key, data, size);
	if (r < 0) {
		j->staged_end = end;
		j->seq = seq;
	}
	return r;
}

int luo_journal_ext_del(luo_journal *j, uint32_t type, uint64_t key)
{
	struct jext rec = { .type = type, .key = key };
	int r;

	if (!ext_find(&j->ext, type, key))
		return 0;
	r = stage(j, LUO_JREC_EXT_DEL, &rec, sizeof(rec), NULL, 0);
	if (r < 0)
		return r;
	ext_table_del(&j->ext, type, key);
	return 0;
}

const void *luo_journal_ext_get(const luo_journal *j, uint32_t type, uint64_t key, size_t *ret_size)
{
	const struct ext_entry *e = ext_find(&j->ext, type, key);

	if (!e)
		return NULL;
	if (ret_size)
		*ret_size = e->size;
	return e->data;
}

int luo_journal_ext_foreach(const luo_journal *j, uint32_t type,
			    int (*fn)(uint64_t key, const void *data, size_t size, void *userdata),
			    void *userdata)
{
	for (size_t b = 0; b < j->ext.n_buckets; b++)
		for (struct hash_node *n = j->ext.buckets[b], *next; n; n = next) {
			const struct ext_entry *e = container_of(n, struct ext_entry, node);
			int r;

			next = n->next; /* fn may delete this entry */
			if (e->type != type)
				continue;
			r = fn(e->key, e->data, e->size, userdata);
			if (r != 0)
				return r;
		}
	return 0;
}

/* ---- the ext node of the snapshot ---- */

static size_t ext_entries_size(const struct hashmap *m)
{
	size_t n = 0;

	for (size_t b = 0; b < m->n_buckets; b++)
		for (struct hash_node *h = m->buckets[b]; h; h = h->next)
			n += sizeof(struct jext) +
			     align_up(container_of(h, struct ext_entry, node)->size, JREC_ALIGN);
	return n;
}

static int ext_node_write(void *fdt, void *userdata)
{
	const luo_journal *j = userdata;
	size_t size = ext_entries_size(&j->ext);
	uint8_t *buf, *p;
	int r;

	r = fdt_property_string(fdt, "compatible", LUO_JOURNAL_EXT_NODE_COMPATIBLE);
	if (r < 0)
		return luo_fdt_errno(r);
	r = fdt_property_placeholder(fdt, "entries", (int)size, (void **)&buf);
	if (r < 0)
		return luo_fdt_errno(r);
	p = buf;
	/* Sorted would be nicer to read; bucket order is what a decode rebuilds. */
	for (size_t b = 0; b < j->ext.n_buckets; b++)
		for (struct hash_node *h = j->ext.buckets[b]; h; h = h->next) {
			const struct ext_entry *e = container_of(h, struct ext_entry, node);
			size_t pad = align_up(e->size, JREC_ALIGN);

			fdt32_st(p, e->type);
			fdt32_st(p + 4, (uint32_t)e->size);
			fdt64_st(p + 8, e->key);
			memcpy(p + 16, e->data, e->size);
			memset(p + 16 + e->size, 0, pad - e->size);
			p += 16 + pad;
		}
	return 0;
}

struct ext_reader {
	int (*put)(uint32_t type, uint64_t key, const void *data, size_t size, void *userdata);
	void *userdata;
};

static int ext_node_read(const void *fdt, int offset, void *userdata)
{
	const struct ext_reader *x = userdata;
	const uint8_t *p, *end;
	const char *compat;
	int len;

	if (offset < 0)
		return 0;
	compat = fdt_getprop(fdt, offset, "compatible", &len);
	if (!compat || len != (int)sizeof(LUO_JOURNAL_EXT_NODE_COMPATIBLE) ||
	    memcmp(compat, LUO_JOURNAL_EXT_NODE_COMPATIBLE, (size_t)len) != 0)
		return compat ? -EPROTONOSUPPORT : -EBADMSG;
	p = fdt_getprop(fdt, offset, "entries", &len);
	if (!p || len < 0)
		return -EBADMSG;
	for (end = p + len; p < end;) {
		uint32_t type, size;
		uint64_t key;
		int r;

		if (end - p < 16)
			return -EBADMSG;
		type = fdt32_ld((const fdt32_t *)p);
		size = fdt32_ld((const fdt32_t *)(p + 4));
		key = fdt64_ld((const fdt64_t *)(p + 8));
		if (size > LUO_JOURNAL_EXT_MAX ||
		    align_up(size, JREC_ALIGN) > (size_t)(end - p - 16))
			return -EBADMSG;
		r = x->put(type, key, p + 16, size, x->userdata);
		if (r < 0)
			return r;
		p += 16 + align_up(size, JREC_ALIGN);
	}
	return 0;
}

/* ---- compaction ---- */

int luo_journal_write_snapshot(const luo_journal *j, int new_fd, uint64_t seq)
{
	const struct luo_journal_header *old = j->hdr;
	struct luo_journal_header h = {};
	struct luo_state_ext ext = {
		.node = LUO_STATE_EXT_NODE,
		.write = ext_node_write,
		.userdata = (void *)j,
	};
	void *blob = NULL;
	size_t size = 0, capacity;
	int r;

	if (!j->engine)
		return -EINVAL;
	r = luo_state_encode(j->engine, &ext, &blob, &size);
	if (r < 0)
		return r;
	memcpy(h.magic, LUO_JOURNAL_MAGIC, sizeof(h.magic));
	h.version = LUO_JOURNAL_VERSION;
	h.header_size = LUO_JOURNAL_HEADER_SIZE;
	h.generation = old->generation + 1;
	h.snapshot_offset = LUO_JOURNAL_HEADER_SIZE;
	h.snapshot_size = size;
	h.snapshot_seq = seq;
	h.snapshot_crc = luo_crc32c(0, blob, size);
	h.log_offset = align_up(LUO_JOURNAL_HEADER_SIZE + size, LUO_JOURNAL_HEADER_SIZE);
	/* At least the old capacity's room for the log, whatever the snapshot takes. */
	capacity = h.log_offset + MAX(old->capacity - old->log_offset, (uint64_t)16 << 20);
	h.capacity = capacity;
	r = 0;
	if (ftruncate(new_fd, (off_t)capacity) < 0 ||
	    pwrite(new_fd, blob, size, LUO_JOURNAL_HEADER_SIZE) != (ssize_t)size ||
	    pwrite(new_fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		r = errno ? negative_errno() : -EIO;
	free(blob);
	return r;
}

/*
 * Puts the journal in new_fd in j's place.  covers_staged: the snapshot was
 * written from the state as it is now, staged changes included (at j->seq),
 * so the staged records are dropped rather than refused.
 */
static int journal_switch(luo_journal *j, int new_fd, bool covers_staged)
{
	struct luo_journal_header *nh;
	struct record_iter it;
	const struct luo_jrec *rec;
	uint8_t *map;
	size_t map_size;
	int r;

	if (luo_journal_staged(j) != 0 && !covers_staged) {
		safe_close(new_fd);
		return -EBUSY;
	}
	r = map_journal(new_fd, &map, &map_size);
	if (r < 0) {
		safe_close(new_fd);
		return r;
	}
	nh = (struct luo_journal_header *)map;
	r = header_check(nh, map_size);
	if (r < 0 || nh->log_end != 0 ||
	    nh->snapshot_seq > (covers_staged ? j->seq : j->committed_seq))
		goto fail;
	/* Older than the snapshot j has: the records between are in neither. */
	if (nh->snapshot_seq < j->hdr->snapshot_seq) {
		r = -ESTALE;
		goto fail;
	}
	/* The records the snapshot lacks: those after its seq. */
	it = (struct record_iter){ j->map + j->hdr->log_offset, j->hdr->log_end, 0,
				   j->hdr->snapshot_seq };
	while ((r = record_next(&it, &rec)) > 0) {
		if (rec->seq <= nh->snapshot_seq)
			continue;
		if (nh->log_end + rec->size > nh->capacity - nh->log_offset) {
			r = -ENOSPC;
			goto fail;
		}
		memcpy(map + nh->log_offset + nh->log_end, rec, rec->size);
		nh->log_end += rec->size;
	}
	if (r < 0)
		goto fail;
	memcpy(nh->owner, j->hdr->owner, sizeof(nh->owner));
	/* The new journal replaces the old at its fd number: whole, or not at all. */
	if (dup3(new_fd, j->fd, 0) < 0) {
		r = negative_errno();
		goto fail;
	}
	safe_close(new_fd);
	munmap(j->map, j->map_size);
	j->map = map;
	j->map_size = map_size;
	j->hdr = nh;
	j->staged_end = nh->log_end;
	if (covers_staged)
		j->committed_seq = j->seq;
	return 0;
fail:
	munmap(map, map_size);
	safe_close(new_fd);
	return r < 0 ? r : -EBADMSG;
}

int luo_journal_switch(luo_journal *j, int new_fd)
{
	return journal_switch(j, new_fd, false);
}

int luo_journal_compact(luo_journal *j)
{
	int fd, r;

	fd = memfd_create("luod-journal", 0);
	if (fd < 0)
		return negative_errno();
	r = luo_journal_write_snapshot(j, fd, j->seq);
	if (r < 0) {
		safe_close(fd);
		return r;
	}
	return journal_switch(j, fd, true);
}

/* ---- replay ---- */

static int parse_name(const uint8_t field[LUO_NAME_FIELD], size_t *ret_len)
{
	int n = luo_name_parse(field);

	if (n < 0)
		return -EBADMSG;
	*ret_len = (size_t)n;
	return 0;
}

static struct luo_session *find_session(luo_engine *e, uint32_t kind, uint32_t uid,
					const uint8_t field[LUO_NAME_FIELD], int *ret)
{
	size_t len;

	*ret = kind > LUO_SESSION_INCOMING ? -EBADMSG : parse_name(field, &len);
	if (*ret < 0)
		return NULL;
	return luo_session_lookup(e, kind, uid, (const char *)field, len);
}

static bool compat_ok(const char *field)
{
	return memchr(field, 0, COMPAT_FIELD) != NULL && field[0] != 0;
}

static int apply_session(luo_engine *e, const struct jsession *rec)
{
	struct luo_session *s;
	size_t len;
	int r;

	if (!luo_state_fits_kind(rec->kind, rec->state) || (rec->flags & ~LUO_SESSION_FLAGS_ALL) ||
	    rec->reserved || parse_name(rec->name, &len) < 0)
		return -EBADMSG;
	s = luo_session_lookup(e, rec->kind, rec->uid, (const char *)rec->name, len);
	if (!s) {
		r = luo_session_new(e, (const char *)rec->name, len, rec->kind, rec->state,
				    rec->flags, rec->uid, &s);
		if (r < 0)
			return r == -EEXIST ? -EBADMSG : r;
	}
	if (rec->state == LUO_SESSION_FINISHED && !list_empty(&s->files))
		return -EBADMSG;
	s->state = rec->state;
	s->flags = rec->flags;
	r = luo_session_set_handle(s, rec->handle);
	return r == -EEXIST ? -EBADMSG : r;
}

static int apply_file(luo_engine *e, const struct jfile *rec, const void *data, size_t data_len)
{
	struct luo_state_file sf;
	const struct luo_handler *h;
	struct luo_session *s;
	struct luo_file *f;
	void *copy;
	bool used;
	int r;

	if (rec->data_size > LUO_HANDLER_DATA_MAX || rec->data_size > data_len ||
	    !compat_ok(rec->handler))
		return -EBADMSG;
	s = find_session(e, rec->kind, rec->uid, rec->name, &r);
	if (!s)
		return r < 0 ? r : -EBADMSG;
	if (luo_state_read_file_record(rec->record, &sf) < 0 || sf.retrieve_error > 0 ||
	    sf.retrieve_error < -4095 || sf.fd < -1 || (sf.fd == -1 && sf.retrieve_error == 0))
		return -EBADMSG;
	used = s->kind == LUO_SESSION_INCOMING && s->state != LUO_SESSION_WAITING;
	if (s->state == LUO_SESSION_FINISHED ||
	    ((sf.flags & LUO_STATE_FILE_FROZEN) && s->kind != LUO_SESSION_INCOMING) ||
	    (((sf.flags & LUO_STATE_FILE_RETRIEVED) || sf.retrieve_error) && !used))
		return -EBADMSG;
	h = luo_engine_find_handler(e, rec->handler);
	if (!h)
		return -ENOPROTOOPT;
	r = luo_state_dup_data(data, rec->data_size, &copy);
	if (r < 0)
		return r;
	f = luo_file_lookup(s, sf.token);
	if (f) {
		if (f->handler != h) {
			free(copy);
			return -EBADMSG;
		}
		free(f->hf.data);
		f->hf.data = copy;
		f->hf.data_size = rec->data_size;
		f->hf.fd = sf.fd >= 0 ? sf.fd : -EBADF;
	} else {
		r = luo_file_new(s, sf.token, h, sf.fd >= 0 ? sf.fd : -EBADF, copy, rec->data_size,
				 &f);
		if (r < 0) {
			free(copy);
			return r == -EEXIST ? -EBADMSG : r;
		}
	}
	f->frozen = sf.flags & LUO_STATE_FILE_FROZEN;
	f->retrieved = sf.flags & LUO_STATE_FILE_RETRIEVED;
	f->retrieve_error = sf.retrieve_error;
	f->id = sf.has_id ? sf.id : (struct luo_file_id){};
	return 0;
}

static int apply_flb(luo_engine *e, const struct jflb *rec, const void *data, size_t data_len)
{
	const struct luo_flb_ops *ops;
	struct luo_flb *flb;
	void *copy;
	int r;

	if (!compat_ok(rec->compatible) || rec->reserved || rec->data_size > LUO_HANDLER_DATA_MAX ||
	    rec->data_size > data_len || (rec->flags & ~LUO_STATE_FLB_FLAGS_ALL) || rec->fd < -1)
		return -EBADMSG;
	ops = luo_state_find_flb_ops(e, rec->compatible);
	if (!ops)
		return -ENOPROTOOPT;
	flb = luo_flb_get(e, ops);
	if (!flb)
		return -ENOMEM;
	r = luo_state_dup_data(data, rec->data_size, &copy);
	if (r < 0)
		return r;
	free(flb->data);
	flb->data = copy;
	flb->data_size = rec->data_size;
	flb->count = rec->count;
	flb->incoming = rec->flags & LUO_STATE_FLB_INCOMING;
	flb->retrieved = rec->flags & LUO_STATE_FLB_RETRIEVED;
	flb->fd = rec->fd >= 0 ? rec->fd : -EBADF;
	return 0;
}

/* The file a FILES entry that keeps its data names, or NULL. */
static const struct luo_file *kept_file(luo_engine *e, const struct jfile *one)
{
	struct luo_state_file sf;
	struct luo_session *s;
	int r;

	s = find_session(e, one->kind, one->uid, one->name, &r);
	if (!s || luo_state_read_file_record(one->record, &sf) < 0)
		return NULL;
	return luo_file_lookup(s, sf.token);
}

/* A FILES record: each entry applied as the FILE record it stands for. */
static int apply_files(luo_engine *e, const uint8_t *p, size_t len)
{
	const char *handlers;
	struct jfiles hdr;
	struct jfile one;
	size_t off;
	int r;

	if (len < sizeof(hdr))
		return -EBADMSG;
	memcpy(&hdr, p, sizeof(hdr));
	if (hdr.n_files == 0 || hdr.n_files > JFILES_MAX || hdr.n_handlers == 0 ||
	    hdr.n_handlers > JFILES_MAX_HANDLERS ||
	    len - sizeof(hdr) < (size_t)hdr.n_handlers * COMPAT_FIELD)
		return -EBADMSG;
	handlers = (const char *)p + sizeof(hdr);
	off = sizeof(hdr) + (size_t)hdr.n_handlers * COMPAT_FIELD;
	one = (struct jfile){ .kind = hdr.kind, .uid = hdr.uid };
	memcpy(one.name, hdr.name, sizeof(one.name));
	for (uint32_t i = 0; i < hdr.n_files; i++) {
		struct jfiles_entry ent;
		const void *data;
		size_t padded;

		if (len - off < sizeof(ent))
			return -EBADMSG;
		memcpy(&ent, p + off, sizeof(ent));
		off += sizeof(ent);
		padded = align_up(ent.data_size, JREC_ALIGN);
		if (ent.handler >= hdr.n_handlers || ent.data_size > LUO_HANDLER_DATA_MAX ||
		    len - off < padded || (ent.flags & ~JFILES_KEEP_DATA) || ent.reserved[0] ||
		    ent.reserved[1] || ent.reserved2 ||
		    ((ent.flags & JFILES_KEEP_DATA) && ent.data_size))
			return -EBADMSG;
		memcpy(one.handler, handlers + (size_t)ent.handler * COMPAT_FIELD, COMPAT_FIELD);
		memcpy(one.record, ent.record, sizeof(one.record));
		one.data_size = ent.data_size;
		data = p + off;
		if (ent.flags & JFILES_KEEP_DATA) {
			/* The file's own data, which apply_file() copies before it
			 * frees the old. */
			const struct luo_file *f = kept_file(e, &one);

			if (!f)
				return -EBADMSG;
			data = f->hf.data;
			one.data_size = (uint32_t)f->hf.data_size;
		}
		r = apply_file(e, &one, data, one.data_size);
		if (r < 0)
			return r;
		off += padded;
	}
	return off == len || len - off < JREC_ALIGN ? 0 : -EBADMSG;
}

static void engine_reset(luo_engine *e);

struct replay {
	luo_engine *e;
	int (*ext_put)(uint32_t type, uint64_t key, const void *data, size_t size, void *userdata);
	int (*ext_del)(uint32_t type, uint64_t key, void *userdata);
	void *userdata;
};

#define PAYLOAD_AS(rec, type)                                                                      \
	(rec->size - sizeof(*rec) >= sizeof(type) ? (const type *)(rec + 1) : NULL)

static int apply_record(const struct replay *rp, const struct luo_jrec *rec)
{
	size_t len = rec->size - sizeof(*rec);
	luo_engine *e = rp->e;
	int r;

	switch (rec->type) {
	case LUO_JREC_ROOT: {
		const struct jroot *p = PAYLOAD_AS(rec, struct jroot);

		if (!p || p->next_handle < e->next_handle)
			return -EBADMSG;
		e->update_number = p->update_number;
		e->next_handle = p->next_handle;
		return 0;
	}
	case LUO_JREC_SESSION: {
		const struct jsession *p = PAYLOAD_AS(rec, struct jsession);

		return p ? apply_session(e, p) : -EBADMSG;
	}
	case LUO_JREC_SESSION_DEL: {
		const struct jsession_del *p = PAYLOAD_AS(rec, struct jsession_del);
		struct luo_session *s;

		if (!p)
			return -EBADMSG;
		s = find_session(e, p->kind, p->uid, p->name, &r);
		if (!s)
			return r < 0 ? r : -EBADMSG;
		luo_session_free(s);
		return 0;
	}
	case LUO_JREC_FILE: {
		const struct jfile *p = PAYLOAD_AS(rec, struct jfile);

		return p ? apply_file(e, p, p + 1, len - sizeof(*p)) : -EBADMSG;
	}
	case LUO_JREC_FILES:
		return apply_files(e, (const uint8_t *)(rec + 1), len);
	case LUO_JREC_FILE_DEL: {
		const struct jfile_del *p = PAYLOAD_AS(rec, struct jfile_del);
		struct luo_session *s;
		struct luo_file *f;

		if (!p)
			return -EBADMSG;
		s = find_session(e, p->kind, p->uid, p->name, &r);
		if (!s)
			return r < 0 ? r : -EBADMSG;
		f = luo_file_lookup(s, p->token);
		if (!f)
			return -EBADMSG;
		luo_file_free(f, false);
		return 0;
	}
	case LUO_JREC_FLB: {
		const struct jflb *p = PAYLOAD_AS(rec, struct jflb);

		return p ? apply_flb(e, p, p + 1, len - sizeof(*p)) : -EBADMSG;
	}
	case LUO_JREC_EXT: {
		const struct jext *p = PAYLOAD_AS(rec, struct jext);

		if (!p || p->size > LUO_JOURNAL_EXT_MAX || p->size > len - sizeof(*p))
			return -EBADMSG;
		return rp->ext_put(p->type, p->key, p + 1, p->size, rp->userdata);
	}
	case LUO_JREC_EXT_DEL: {
		const struct jext *p = PAYLOAD_AS(rec, struct jext);

		if (!p || p->size)
			return -EBADMSG;
		return rp->ext_del ? rp->ext_del(p->type, p->key, rp->userdata) : 0;
	}
	case LUO_JREC_CLEAR:
		if (len != 0)
			return -EBADMSG;
		/* The replay borrows: freeing the sessions closes nothing. */
		LIST_FOREACH_SAFE (pos, &e->incoming)
			luo_session_free(list_entry(pos, struct luo_session, order));
		LIST_FOREACH_SAFE (pos, &e->outgoing)
			luo_session_free(list_entry(pos, struct luo_session, order));
		return 0;
	default:
		return -EBADMSG;
	}
}

/*
 * The rules the codec checks per file hold for each record as it is applied,
 * but a later SESSION record may change the session's state under files
 * recorded before it (a retrieved session back to waiting, with retrieved
 * files).  The state the replay ends in must be one the codec carries:
 * compaction writes it as a snapshot, which the next recovery decodes.
 */
static int check_replayed(const luo_engine *e)
{
	LIST_FOREACH (i, &e->incoming) {
		const struct luo_session *s = list_entry(i, struct luo_session, order);
		bool used = s->state != LUO_SESSION_WAITING;

		if (s->state == LUO_SESSION_FINISHED && !list_empty(&s->files))
			return -EBADMSG;
		LIST_FOREACH (k, &s->files) {
			const struct luo_file *f = list_entry(k, struct luo_file, order);

			if ((f->retrieved || f->retrieve_error) && !used)
				return -EBADMSG;
		}
	}
	return 0;
}

/* Empties an engine a replay filled, closing nothing. */
static void engine_reset(luo_engine *e)
{
	e->borrowed_fds = true;
	LIST_FOREACH_SAFE (pos, &e->incoming)
		luo_session_free(list_entry(pos, struct luo_session, order));
	LIST_FOREACH_SAFE (pos, &e->outgoing)
		luo_session_free(list_entry(pos, struct luo_session, order));
	for (size_t k = 0; k < e->n_flbs; k++)
		luo_flb_release(&e->flbs[k], false);
	e->n_flbs = 0;
	e->update_number = 0;
	e->next_handle = 0;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

int luo_engine_adopt_fds(struct luo_engine *e)
{
	struct pollfd *p;
	int *fds;
	size_t n = 0, cap = e->n_files + e->n_flbs;
	int r = 0;

	fds = malloc(MAX(cap, (size_t)1) * sizeof(int));
	p = malloc(MAX(cap, (size_t)1) * sizeof(*p));
	if (!fds || !p) {
		r = -ENOMEM;
		goto out;
	}
	for (int kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING; kind++)
		LIST_FOREACH (i, kind == LUO_SESSION_OUTGOING ? &e->outgoing : &e->incoming) {
			struct luo_session *s = list_entry(i, struct luo_session, order);

			LIST_FOREACH (k, &s->files) {
				struct luo_file *f = list_entry(k, struct luo_file, order);

				if (f->hf.fd >= 0 && n < cap)
					fds[n++] = f->hf.fd;
			}
		}
	for (size_t k = 0; k < e->n_flbs; k++)
		if (e->flbs[k].fd >= 0 && n < cap)
			fds[n++] = e->flbs[k].fd;
	qsort(fds, n, sizeof(int), cmp_int);
	for (size_t i = 0; i < n; i++) {
		if (fds[i] < 3 || (i > 0 && fds[i] == fds[i - 1])) {
			r = -EBADMSG;
			goto out;
		}
		p[i] = (struct pollfd){ .fd = fds[i] };
	}
	r = luo_fds_check_open(p, n);
	if (r < 0)
		goto out;
	for (int kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING && r >= 0; kind++)
		LIST_FOREACH (i, kind == LUO_SESSION_OUTGOING ? &e->outgoing : &e->incoming) {
			struct luo_session *s = list_entry(i, struct luo_session, order);

			LIST_FOREACH (k, &s->files) {
				struct luo_file *f = list_entry(k, struct luo_file, order);
				struct luo_file_id id = f->id;

				if (f->hf.fd < 0)
					continue;
				r = (id.dev || id.ino || id.extra)
					    ? luo_identity_add_known(e, f, &id)
					    : luo_file_identify(f);
				if (r < 0)
					break;
			}
			if (r < 0)
				break;
		}
	if (r < 0) {
		luo_identity_destroy(e);
		if (r == -EBUSY)
			r = -EBADMSG;
		goto out;
	}
	e->borrowed_fds = false;
out:
	free(fds);
	free(p);
	return r;
}

static int table_put(uint32_t type, uint64_t key, const void *data, size_t size, void *userdata)
{
	return ext_table_put(userdata, type, key, data, size);
}

static int table_del(uint32_t type, uint64_t key, void *userdata)
{
	ext_table_del(userdata, type, key);
	return 0;
}

static int recover(const uint8_t *mem, size_t size, luo_engine *e, unsigned flags,
		   const struct replay *rp, struct luo_journal_stats *ret_stats)
{
	const struct luo_journal_header *h = (const void *)mem;
	struct ext_reader xr = { rp->ext_put, rp->userdata };
	struct luo_state_ext ext = {
		.node = LUO_STATE_EXT_NODE,
		.read = ext_node_read,
		.userdata = &xr,
	};
	struct luo_journal_stats stats = {};
	struct record_iter it;
	const struct luo_jrec *rec;
	bool borrowed;
	int r;

	if (!e || (flags & ~LUO_JOURNAL_BORROW_FDS))
		return -EINVAL;
	if (!list_empty(&e->outgoing) || !list_empty(&e->incoming) || e->n_files != 0)
		return -EBUSY;
	r = header_check(h, size);
	if (r < 0)
		return r;
	borrowed = e->borrowed_fds;
	if (h->snapshot_size > 0) {
		const uint8_t *blob = mem + h->snapshot_offset;

		if (luo_crc32c(0, blob, h->snapshot_size) != h->snapshot_crc)
			return -EBADMSG;
		r = luo_state_decode(e, blob, h->snapshot_size, LUO_STATE_BORROW_FDS, &ext);
		if (r < 0)
			return r;
	}
	e->borrowed_fds = true;
	it = (struct record_iter){ mem + h->log_offset,
				   __atomic_load_n(&h->log_end, __ATOMIC_ACQUIRE), 0,
				   h->snapshot_seq };
	while ((r = record_next(&it, &rec)) > 0) {
		r = apply_record(rp, rec);
		if (r < 0)
			break;
		stats.n_records++;
	}
	if (r >= 0)
		r = check_replayed(e);
	if (r >= 0 && !(flags & LUO_JOURNAL_BORROW_FDS))
		r = luo_engine_adopt_fds(e);
	if (r < 0) {
		engine_reset(e);
		e->borrowed_fds = borrowed;
		return r;
	}
	if (flags & LUO_JOURNAL_BORROW_FDS)
		e->borrowed_fds = true;
	stats.snapshot_size = h->snapshot_size;
	stats.log_size = it.end;
	stats.seq = it.seq;
	if (ret_stats)
		*ret_stats = stats;
	return 0;
}

int luo_journal_recover(luo_journal *j, luo_engine *e, unsigned flags,
			struct luo_journal_stats *ret_stats)
{
	struct replay rp = { e, table_put, table_del, &j->ext };
	struct luo_journal_stats stats;
	int r;

	ext_table_clear(&j->ext);
	r = recover(j->map, j->map_size, e, flags, &rp, &stats);
	if (r < 0) {
		ext_table_clear(&j->ext);
		return r;
	}
	j->seq = j->committed_seq = stats.seq;
	j->staged_end = j->hdr->log_end;
	if (ret_stats)
		*ret_stats = stats;
	return 0;
}

struct mem_ext {
	struct hashmap table;
	int (*put)(uint32_t type, uint64_t key, const void *data, size_t size, void *userdata);
	void *userdata;
};

static int mem_ext_emit(struct mem_ext *x)
{
	for (size_t b = 0; b < x->table.n_buckets; b++)
		for (struct hash_node *n = x->table.buckets[b]; n; n = n->next) {
			const struct ext_entry *e = container_of(n, struct ext_entry, node);
			int r = x->put(e->type, e->key, e->data, e->size, x->userdata);

			if (r < 0)
				return r;
		}
	return 0;
}

int luo_journal_recover_mem(const void *mem, size_t size, luo_engine *e, unsigned flags,
			    int (*ext_put)(uint32_t type, uint64_t key, const void *data,
					   size_t size, void *userdata),
			    void *userdata, struct luo_journal_stats *ret_stats)
{
	struct mem_ext x = { .put = ext_put, .userdata = userdata };
	struct replay rp = { e, table_put, table_del, &x.table };
	bool borrowed;
	int r;

	if (!mem || !e)
		return -EINVAL;
	borrowed = e->borrowed_fds;
	hashmap_init(&x.table);
	r = recover(mem, size, e, flags, &rp, ret_stats);
	if (r >= 0 && ext_put) {
		r = mem_ext_emit(&x);
		if (r < 0) {
			engine_reset(e);
			e->borrowed_fds = borrowed;
		}
	}
	ext_table_clear(&x.table);
	hashmap_done(&x.table);
	return r;
}
