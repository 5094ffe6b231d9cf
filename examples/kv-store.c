/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the memfd-backed hash table (see kv-store.h for the layout)
 *
 * Every offset read from the file is checked before use: the file may come
 * from a process that was killed mid-write, so a bad slot reads as a missing
 * key instead of faulting.
 */
#include "kv-store.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/macro.h"

#define KV_MAGIC UINT64_C(0x3130305453564b6c) /* "lKVST001" little endian */
#define KV_VERSION 1
#define KV_HEADER_SIZE 4096
#define KV_MIN_SIZE (1u << 20)
#define KV_MIN_SLOTS 1024
/* Grow the file by doubling up to this step, then by this step, so sparse slack stays bounded. */
#define KV_GROW_STEP (UINT64_C(1) << 30)

#define KV_POPULATE_CHUNK (UINT64_C(8) << 20)

#define SLOT_EMPTY 0
#define SLOT_TOMBSTONE 1

struct kv_header {
	uint64_t magic;
	uint64_t version;
	uint64_t used; /* end of the arena; everything past it is still zero */
	uint64_t table_off;
	uint64_t table_slots; /* a power of two */
	uint64_t count;
	uint64_t tombstones;
	uint64_t live_bytes;
	uint64_t generation;
};

struct kv_slot {
	uint64_t hash;
	uint64_t off; /* SLOT_EMPTY, SLOT_TOMBSTONE, or a record's offset */
};

struct kv_record {
	uint32_t klen;
	uint32_t vlen;
	uint8_t data[]; /* key, then value */
};

static struct kv_header *header(const struct kv_store *s)
{
	return (struct kv_header *)s->base;
}

static struct kv_slot *table(const struct kv_store *s)
{
	return (struct kv_slot *)(s->base + header(s)->table_off);
}

static uint64_t align8(uint64_t n)
{
	return (n + 7) & ~UINT64_C(7);
}

/* FNV-1a with a murmur finaliser, so that the low bits used for probing are well mixed. */
static uint64_t hash_key(const void *key, size_t klen)
{
	const uint8_t *p = key;
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < klen; i++) {
		h ^= p[i];
		h *= UINT64_C(0x100000001b3);
	}
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	h ^= h >> 33;
	h *= UINT64_C(0xc4ceb9fe1a85ec53);
	h ^= h >> 33;
	return h;
}

/* The record at off, or NULL if off does not point at a whole record inside the arena. */
static const struct kv_record *record_at(const struct kv_store *s, uint64_t off)
{
	const struct kv_header *h = header(s);
	const struct kv_record *r;

	if (off < KV_HEADER_SIZE || off % 8 || off > h->used - sizeof(*r))
		return NULL;
	r = (const struct kv_record *)(s->base + off);
	if ((uint64_t)r->klen + r->vlen > h->used - off - sizeof(*r))
		return NULL;
	return r;
}

static int grow_file(struct kv_store *s, uint64_t need)
{
	uint64_t new_size = s->size + MIN(s->size, KV_GROW_STEP);
	void *p;

	if (new_size < need)
		new_size = align8(need) + KV_MIN_SIZE;
	if (ftruncate(s->fd, (off_t)new_size) < 0)
		return negative_errno();
	p = mremap(s->base, s->size, new_size, MREMAP_MAYMOVE);
	if (p == MAP_FAILED) {
		int r = negative_errno();
		/* Keep the file and the mapping the same size. */
		(void)ftruncate(s->fd, (off_t)s->size);
		return r;
	}
	s->base = p;
	s->size = new_size;
	return 0;
}

/*
 * Loading is bound by the kernel allocating and clearing tmpfs pages; one
 * madvise per chunk saves a page fault per page.  Best effort: on kernels
 * before 5.14 the pages are simply faulted in one by one as before.
 */
static void populate_ahead(struct kv_store *s, uint64_t end)
{
	uint64_t from = MAX(s->populated, end & ~(KV_POPULATE_CHUNK - 1));
	uint64_t to = MIN(s->size, (end + KV_POPULATE_CHUNK) & ~(KV_POPULATE_CHUNK - 1));

	if (to > from)
		(void)madvise(s->base + from, to - from, MADV_POPULATE_WRITE);
	s->populated = to;
}

/*
 * Reserves n bytes of arena and returns their offset.  The header's used
 * pointer moves first, so a crash leaves garbage, never an overlap.
 */
static int arena_alloc(struct kv_store *s, uint64_t n, uint64_t *ret_off)
{
	uint64_t off = header(s)->used;
	int r;

	n = align8(n);
	if (n > UINT64_MAX / 4 || off + n > s->size) {
		r = grow_file(s, off + n);
		if (r < 0)
			return r;
	}
	header(s)->used = off + n;
	*ret_off = off;
	if (off + n > s->populated)
		populate_ahead(s, off + n);
	return 0;
}

/* Finds key's slot: its index and 1 if present, or where to insert and 0. */
static int find_slot(const struct kv_store *s, uint64_t h, const void *key, size_t klen,
		     uint64_t *ret_index)
{
	const struct kv_header *hd = header(s);
	const struct kv_slot *t = table(s);
	uint64_t mask = hd->table_slots - 1, first_free = UINT64_MAX;

	for (uint64_t i = h & mask, n = 0; n < hd->table_slots; i = (i + 1) & mask, n++) {
		if (t[i].off == SLOT_EMPTY) {
			*ret_index = first_free != UINT64_MAX ? first_free : i;
			return 0;
		}
		if (t[i].off == SLOT_TOMBSTONE) {
			if (first_free == UINT64_MAX)
				first_free = i;
			continue;
		}
		if (t[i].hash != h)
			continue;
		const struct kv_record *r = record_at(s, t[i].off);
		if (r && r->klen == klen && memcmp(r->data, key, klen) == 0) {
			*ret_index = i;
			return 1;
		}
	}
	*ret_index = first_free;
	return first_free == UINT64_MAX ? -ENOSPC : 0;
}

/* Builds a table of slots entries from the live slots and publishes it. */
static int rebuild_table(struct kv_store *s, uint64_t slots)
{
	uint64_t off, old_slots = header(s)->table_slots;
	struct kv_slot *nt;
	const struct kv_slot *ot;
	int r;

	if (slots > UINT64_MAX / sizeof(struct kv_slot))
		return -ENOMEM;
	r = arena_alloc(s, slots * sizeof(struct kv_slot), &off);
	if (r < 0)
		return r;
	/* The arena past the old used pointer was never written: the new table is all empty. */
	nt = (struct kv_slot *)(s->base + off);
	ot = table(s);
	for (uint64_t i = 0; i < old_slots; i++) {
		if (ot[i].off == SLOT_EMPTY || ot[i].off == SLOT_TOMBSTONE)
			continue;
		uint64_t j = ot[i].hash & (slots - 1);
		while (nt[j].off != SLOT_EMPTY)
			j = (j + 1) & (slots - 1);
		nt[j] = ot[i];
	}
	header(s)->table_off = off;
	header(s)->table_slots = slots;
	header(s)->tombstones = 0;
	return 0;
}

/* Keeps the load (live + tombstones) under 3/4 before one more insertion. */
static int reserve_slot(struct kv_store *s)
{
	const struct kv_header *h = header(s);
	uint64_t slots = h->table_slots;

	if ((h->count + h->tombstones + 1) * 4 <= slots * 3)
		return 0;
	/* Mostly tombstones: rebuild at the same size; otherwise double. */
	if ((h->count + 1) * 2 > slots)
		slots *= 2;
	return rebuild_table(s, slots);
}

int kv_store_create(struct kv_store *s, uint64_t initial_size)
{
	_cleanup_close_ int fd = -EBADF;
	uint64_t size = MAX(align8(initial_size), (uint64_t)KV_MIN_SIZE);
	struct kv_header *h;
	void *p;
	int r;

	fd = memfd_create("kv-store", MFD_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	if (ftruncate(fd, (off_t)size) < 0)
		return negative_errno();
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return negative_errno();
	*s = (struct kv_store){ .fd = TAKE_FD(fd), .base = p, .size = size };
	h = header(s);
	h->magic = KV_MAGIC;
	h->version = KV_VERSION;
	h->used = KV_HEADER_SIZE;
	h->table_slots = 0;
	h->table_off = KV_HEADER_SIZE;
	r = rebuild_table(s, KV_MIN_SLOTS);
	if (r < 0) {
		kv_store_close(s);
		return r;
	}
	return 0;
}

static uint64_t header_used(const void *p)
{
	return ((const struct kv_header *)p)->used;
}

static bool header_valid(const struct kv_header *h, uint64_t size)
{
	if (h->magic != KV_MAGIC || h->version != KV_VERSION)
		return false;
	if (h->used < KV_HEADER_SIZE || h->used > size || h->used % 8)
		return false;
	if (h->table_slots < KV_MIN_SLOTS || (h->table_slots & (h->table_slots - 1)) ||
	    h->table_slots > size / sizeof(struct kv_slot))
		return false;
	if (h->table_off < KV_HEADER_SIZE || h->table_off % 8 ||
	    h->table_off > h->used - h->table_slots * sizeof(struct kv_slot))
		return false;
	return h->count + h->tombstones <= h->table_slots;
}

int kv_store_open(struct kv_store *s, int fd)
{
	struct stat st;
	void *p;

	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISREG(st.st_mode) || st.st_size < KV_HEADER_SIZE)
		return -EBADMSG;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return negative_errno();
	if (!header_valid(p, (uint64_t)st.st_size)) {
		munmap(p, (size_t)st.st_size);
		return -EBADMSG;
	}
	/* Whatever the predecessor wrote stays unmapped here until used: restarts stay O(1). */
	*s = (struct kv_store){
		.fd = fd, .base = p, .size = (uint64_t)st.st_size, .populated = header_used(p)
	};
	return 0;
}

void kv_store_close(struct kv_store *s)
{
	if (s->base)
		munmap(s->base, s->size);
	s->base = NULL;
	s->size = 0;
	s->fd = safe_close(s->fd);
}

int kv_store_set(struct kv_store *s, const void *key, size_t klen, const void *value, size_t vlen)
{
	uint64_t h = hash_key(key, klen), rec_off, idx;
	struct kv_record *rec;
	struct kv_slot *slot;
	int found, r;

	if (klen == 0 || klen > KV_KEY_MAX || vlen > KV_VALUE_MAX)
		return -EINVAL;
	/* Both may move the mapping: do them before taking any pointer into it. */
	r = reserve_slot(s);
	if (r < 0)
		return r;
	r = arena_alloc(s, sizeof(*rec) + klen + vlen, &rec_off);
	if (r < 0)
		return r;
	rec = (struct kv_record *)(s->base + rec_off);
	rec->klen = (uint32_t)klen;
	rec->vlen = (uint32_t)vlen;
	memcpy(rec->data, key, klen);
	if (vlen)
		memcpy(rec->data + klen, value, vlen);

	found = find_slot(s, h, key, klen, &idx);
	if (found < 0)
		return found;
	slot = &table(s)[idx];
	if (found) {
		const struct kv_record *old = record_at(s, slot->off);
		header(s)->live_bytes -= old ? old->klen + old->vlen : 0;
		slot->off = rec_off;
	} else {
		bool was_tombstone = slot->off == SLOT_TOMBSTONE;
		/* hash first: a crash in between leaves an empty or dead slot, never a wrong key. */
		slot->hash = h;
		slot->off = rec_off;
		header(s)->count++;
		if (was_tombstone)
			header(s)->tombstones--;
	}
	header(s)->live_bytes += klen + vlen;
	return 0;
}

int kv_store_get(const struct kv_store *s, const void *key, size_t klen, const void **ret_value,
		 size_t *ret_vlen)
{
	uint64_t idx;
	const struct kv_record *rec;
	int found;

	if (klen == 0 || klen > KV_KEY_MAX)
		return -ENOENT;
	found = find_slot(s, hash_key(key, klen), key, klen, &idx);
	if (found <= 0)
		return -ENOENT;
	rec = record_at(s, table(s)[idx].off);
	*ret_value = rec->data + rec->klen;
	*ret_vlen = rec->vlen;
	return 0;
}

int kv_store_del(struct kv_store *s, const void *key, size_t klen)
{
	uint64_t idx;
	struct kv_slot *slot;
	const struct kv_record *rec;
	int found;

	if (klen == 0 || klen > KV_KEY_MAX)
		return -ENOENT;
	found = find_slot(s, hash_key(key, klen), key, klen, &idx);
	if (found <= 0)
		return -ENOENT;
	slot = &table(s)[idx];
	rec = record_at(s, slot->off);
	header(s)->live_bytes -= rec->klen + rec->vlen;
	slot->off = SLOT_TOMBSTONE;
	header(s)->count--;
	header(s)->tombstones++;
	return 0;
}

uint64_t kv_store_count(const struct kv_store *s)
{
	return header(s)->count;
}

void kv_store_stats(const struct kv_store *s, struct kv_stats *ret)
{
	const struct kv_header *h = header(s);

	*ret = (struct kv_stats){
		.keys = h->count,
		.live_bytes = h->live_bytes,
		.used = h->used,
		.size = s->size,
		.table_slots = h->table_slots,
		.generation = h->generation,
	};
}

void kv_store_bump_generation(struct kv_store *s)
{
	header(s)->generation++;
}

int kv_parse_size(const char *s, uint64_t *ret)
{
	char *e;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &e, 10);
	if (errno || e == s)
		return -EINVAL;
	switch (*e) {
	case 'G':
	case 'g':
		v <<= 10;
		/* fall through */
	case 'M':
	case 'm':
		v <<= 10;
		/* fall through */
	case 'K':
	case 'k':
		v <<= 10;
		e++;
		break;
	default:
		break;
	}
	if (*e)
		return -EINVAL;
	*ret = v;
	return 0;
}
