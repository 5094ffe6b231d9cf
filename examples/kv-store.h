/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the key-value store of the example server, kept entirely in one memfd
 *
 * Everything the server knows lives in a single memfd mapped MAP_SHARED, so
 * that handing the memfd to a successor (through a luo session) hands over
 * the whole database with no copy and no parsing: the successor maps the
 * same pages and serves at once, however many GiB they hold.
 *
 * Layout: a header page, then an arena allocated by bumping a pointer.  The
 * arena holds records (key and value, 8-byte aligned) and the open-addressing
 * hash table (slots of {hash, record offset}, linear probing, tombstones).
 * Only offsets are stored, never pointers, because the mapping moves when the
 * file grows (ftruncate + mremap).  A grown table is rebuilt further up the
 * arena and then published by rewriting two header fields; the old table and
 * overwritten records become garbage that is not reclaimed (the store is
 * append-only, like a log).
 *
 * Lifecycle: kv_store_create() makes a new memfd, or kv_store_open() adopts
 * one (retrieved from a session, or read from a snapshot) after checking its
 * header and bounds; kv_store_close() unmaps and closes.  Writes are ordered
 * so that a process killed at any instant leaves a store that opens: the
 * arena pointer is bumped before a record is written and a slot is published
 * only after its record is complete.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys up to 64 KiB, values up to 1 GiB: limits of the protocol, not of the layout. */
#define KV_KEY_MAX (64u * 1024)
#define KV_VALUE_MAX (1024u * 1024 * 1024)

struct kv_store {
	int fd;		    /* the memfd, owned */
	uint8_t *base;	    /* its mapping; moves when the file grows */
	uint64_t size;	    /* bytes mapped (the file size) */
	uint64_t populated; /* arena prefaulted up to here (this process only) */
};

struct kv_stats {
	uint64_t keys;
	uint64_t live_bytes; /* key and value bytes of live records */
	uint64_t used;	     /* arena bytes in use, garbage included */
	uint64_t size;	     /* file size */
	uint64_t table_slots;
	uint64_t generation; /* how many times the store was handed over */
};

/* Creates an empty store in a new memfd of initial_size bytes (rounded up). */
int kv_store_create(struct kv_store *s, uint64_t initial_size);
/*
 * Adopts fd, a memfd holding a store: checks it and maps it.  Consumes fd on
 * success only.  -EBADMSG if it does not hold a valid store.
 */
int kv_store_open(struct kv_store *s, int fd);
/* Unmaps and closes (s may be zeroed or half-initialised with fd -EBADF). */
void kv_store_close(struct kv_store *s);

/* Inserts or replaces.  -ENOMEM or the ftruncate errno if the file cannot grow. */
int kv_store_set(struct kv_store *s, const void *key, size_t klen, const void *value, size_t vlen);
/*
 * Looks key up: 0 and the value (a pointer into the mapping, valid until the
 * next change to the store), or -ENOENT.
 */
int kv_store_get(const struct kv_store *s, const void *key, size_t klen, const void **ret_value,
		 size_t *ret_vlen);
/* Removes key: 0, or -ENOENT. */
int kv_store_del(struct kv_store *s, const void *key, size_t klen);

uint64_t kv_store_count(const struct kv_store *s);
void kv_store_stats(const struct kv_store *s, struct kv_stats *ret);
/* Counts one more handover in the header (shown by STATS). */
void kv_store_bump_generation(struct kv_store *s);

/* Parses a count or size with an optional K, M or G suffix (powers of 1024). */
int kv_parse_size(const char *s, uint64_t *ret);
