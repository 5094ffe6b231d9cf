/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "basic/hashmap.h"
#include "harness.h"

struct item {
	struct hash_node node;
	uint64_t key;
};

static bool item_eq(const struct hash_node *n, const void *key)
{
	return ((const struct item *)n)->key == *(const uint64_t *)key;
}

TEST(insert_find_remove)
{
	struct hashmap m;
	enum { N = 10000 };
	struct item *items = calloc(N, sizeof(*items));

	ASSERT_TRUE(items);
	hashmap_init(&m);
	for (uint64_t i = 0; i < N; i++) {
		items[i].key = i * 7;
		ASSERT_OK(hashmap_insert(&m, &items[i].node, hash_u64(items[i].key)));
	}
	ASSERT_EQ(m.count, N);
	for (uint64_t i = 0; i < N; i++) {
		uint64_t k = i * 7;
		ASSERT_TRUE(hashmap_find(&m, hash_u64(k), item_eq, &k) == &items[i].node);
		k = i * 7 + 1;
		ASSERT_TRUE(hashmap_find(&m, hash_u64(k), item_eq, &k) == NULL);
	}
	for (uint64_t i = 0; i < N; i += 2)
		hashmap_remove(&m, &items[i].node);
	ASSERT_EQ(m.count, N / 2);
	for (uint64_t i = 0; i < N; i++) {
		uint64_t k = i * 7;
		bool found = hashmap_find(&m, hash_u64(k), item_eq, &k) != NULL;
		ASSERT_EQ(found, i % 2 == 1);
	}
	hashmap_done(&m);
	free(items);
}

TEST(hash_bytes_differs)
{
	ASSERT_NE(hash_bytes("a", 1), hash_bytes("b", 1));
	ASSERT_EQ(hash_bytes("abc", 3), hash_bytes("abc", 3));
}

TEST_MAIN(TEST_CASE(insert_find_remove), TEST_CASE(hash_bytes_differs))
