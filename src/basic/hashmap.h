/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: intrusive chained hash table
 *
 * Owners embed a struct hash_node and compute the hash themselves; lookups
 * pass the hash and an equality callback with a key.  No allocation per
 * entry, so a million sessions cost one bucket array.  The table doubles when
 * the load passes 1 and never shrinks below its initial size.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hash_node {
	struct hash_node *next;
	uint64_t hash;
};

struct hashmap {
	struct hash_node **buckets;
	size_t n_buckets; /* power of two, or 0 before the first insert */
	size_t count;
};

typedef bool (*hash_eq_fn)(const struct hash_node *node, const void *key);

/* Hashing helpers (FNV-1a mixed through a 64-bit finalizer). */
uint64_t hash_bytes(const void *p, size_t n);
uint64_t hash_u64(uint64_t v);

void hashmap_init(struct hashmap *m);
/* Frees the bucket array; the nodes belong to their owners. */
void hashmap_done(struct hashmap *m);
/* Returns 0 or -ENOMEM.  The caller guarantees the key is not present. */
int hashmap_insert(struct hashmap *m, struct hash_node *n, uint64_t hash);
struct hash_node *hashmap_find(const struct hashmap *m, uint64_t hash, hash_eq_fn eq,
			       const void *key);
void hashmap_remove(struct hashmap *m, struct hash_node *n);
/* Makes room for at least n entries without rehashing; 0 or -ENOMEM. */
int hashmap_reserve(struct hashmap *m, size_t n);
