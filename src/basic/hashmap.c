/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "hashmap.h"

#include <errno.h>
#include <stdlib.h>

uint64_t hash_u64(uint64_t v)
{
	v ^= v >> 33;
	v *= UINT64_C(0xff51afd7ed558ccd);
	v ^= v >> 33;
	v *= UINT64_C(0xc4ceb9fe1a85ec53);
	v ^= v >> 33;
	return v;
}

uint64_t hash_bytes(const void *p, size_t n)
{
	const unsigned char *c = p;
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= UINT64_C(0x100000001b3);
	}
	return hash_u64(h);
}

void hashmap_init(struct hashmap *m)
{
	m->buckets = NULL;
	m->n_buckets = 0;
	m->count = 0;
}

void hashmap_done(struct hashmap *m)
{
	free(m->buckets);
	hashmap_init(m);
}

static int hashmap_resize(struct hashmap *m, size_t n_buckets)
{
	struct hash_node **b = calloc(n_buckets, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_buckets; i++) {
		struct hash_node *n = m->buckets[i];

		while (n) {
			struct hash_node *next = n->next;
			size_t idx = n->hash & (n_buckets - 1);

			n->next = b[idx];
			b[idx] = n;
			n = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->n_buckets = n_buckets;
	return 0;
}

int hashmap_reserve(struct hashmap *m, size_t n)
{
	size_t want = m->n_buckets ? m->n_buckets : 16;

	while (want < n)
		want *= 2;
	if (want == m->n_buckets)
		return 0;
	return hashmap_resize(m, want);
}

int hashmap_insert(struct hashmap *m, struct hash_node *n, uint64_t hash)
{
	if (m->count + 1 > m->n_buckets) {
		int r = hashmap_resize(m, m->n_buckets ? m->n_buckets * 2 : 16);

		if (r < 0)
			return r;
	}
	size_t idx = hash & (m->n_buckets - 1);

	n->hash = hash;
	n->next = m->buckets[idx];
	m->buckets[idx] = n;
	m->count++;
	return 0;
}

struct hash_node *hashmap_find(const struct hashmap *m, uint64_t hash, hash_eq_fn eq,
			       const void *key)
{
	if (m->n_buckets == 0)
		return NULL;
	for (struct hash_node *n = m->buckets[hash & (m->n_buckets - 1)]; n; n = n->next)
		if (n->hash == hash && eq(n, key))
			return n;
	return NULL;
}

void hashmap_remove(struct hashmap *m, struct hash_node *n)
{
	struct hash_node **pp = &m->buckets[n->hash & (m->n_buckets - 1)];

	while (*pp != n)
		pp = &(*pp)->next;
	*pp = n->next;
	n->next = NULL;
	m->count--;
}
