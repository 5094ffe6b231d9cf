/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: tests of the example server's memfd store
 *
 * The store must find every key after the table and the file grew, after it
 * is reopened from its fd (as a successor does with the fd it retrieves),
 * and must refuse a file that does not hold a store instead of faulting.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "examples/kv-store.h"
#include "harness.h"

static void key_of(char *buf, size_t size, unsigned i)
{
	snprintf(buf, size, "key-%u", i);
}

static void check_value(const struct kv_store *s, const char *key, const char *want)
{
	const void *v;
	size_t n;

	ASSERT_OK(kv_store_get(s, key, strlen(key), &v, &n));
	ASSERT_EQ(n, strlen(want));
	ASSERT_MEMEQ(v, want, n);
}

TEST(set_then_get_returns_the_value)
{
	struct kv_store s;

	ASSERT_OK(kv_store_create(&s, 0));
	ASSERT_OK(kv_store_set(&s, "a", 1, "hello", 5));
	check_value(&s, "a", "hello");
	ASSERT_OK(kv_store_set(&s, "empty", 5, "", 0));
	check_value(&s, "empty", "");
	ASSERT_EQ(kv_store_count(&s), 2);
	kv_store_close(&s);
}

TEST(get_of_a_missing_key_is_enoent)
{
	struct kv_store s;
	const void *v;
	size_t n;

	ASSERT_OK(kv_store_create(&s, 0));
	ASSERT_ERR(kv_store_get(&s, "nope", 4, &v, &n), -ENOENT);
	ASSERT_ERR(kv_store_del(&s, "nope", 4), -ENOENT);
	kv_store_close(&s);
}

TEST(set_of_an_existing_key_replaces_it_and_keeps_the_count)
{
	struct kv_store s;
	struct kv_stats st;

	ASSERT_OK(kv_store_create(&s, 0));
	ASSERT_OK(kv_store_set(&s, "k", 1, "one", 3));
	ASSERT_OK(kv_store_set(&s, "k", 1, "three", 5));
	check_value(&s, "k", "three");
	ASSERT_EQ(kv_store_count(&s), 1);
	kv_store_stats(&s, &st);
	ASSERT_EQ(st.live_bytes, 1 + 5);
	kv_store_close(&s);
}

TEST(del_removes_only_that_key)
{
	struct kv_store s;
	const void *v;
	size_t n;

	ASSERT_OK(kv_store_create(&s, 0));
	ASSERT_OK(kv_store_set(&s, "x", 1, "1", 1));
	ASSERT_OK(kv_store_set(&s, "y", 1, "2", 1));
	ASSERT_OK(kv_store_del(&s, "x", 1));
	ASSERT_ERR(kv_store_get(&s, "x", 1, &v, &n), -ENOENT);
	check_value(&s, "y", "2");
	ASSERT_EQ(kv_store_count(&s), 1);
	kv_store_close(&s);
}

TEST(empty_or_oversized_keys_are_einval)
{
	struct kv_store s;
	char *big = calloc(1, KV_KEY_MAX + 1);

	ASSERT_TRUE(big);
	ASSERT_OK(kv_store_create(&s, 0));
	ASSERT_ERR(kv_store_set(&s, "", 0, "v", 1), -EINVAL);
	memset(big, 'k', KV_KEY_MAX + 1);
	ASSERT_ERR(kv_store_set(&s, big, KV_KEY_MAX + 1, "v", 1), -EINVAL);
	ASSERT_OK(kv_store_set(&s, big, KV_KEY_MAX, "v", 1));
	free(big);
	kv_store_close(&s);
}

TEST(many_keys_grow_the_table_and_the_file_and_all_stay_found)
{
	struct kv_store s;
	struct kv_stats st;
	char key[32], val[64];
	const unsigned n = 200000;

	ASSERT_OK(kv_store_create(&s, 0));
	kv_store_stats(&s, &st);
	uint64_t size0 = st.size, slots0 = st.table_slots;
	for (unsigned i = 0; i < n; i++) {
		key_of(key, sizeof(key), i);
		snprintf(val, sizeof(val), "value-%u-%u", i, i * 7);
		ASSERT_OK(kv_store_set(&s, key, strlen(key), val, strlen(val)));
	}
	kv_store_stats(&s, &st);
	ASSERT_TRUE(st.size > size0);
	ASSERT_TRUE(st.table_slots > slots0);
	ASSERT_EQ(st.keys, n);
	for (unsigned i = 0; i < n; i++) {
		key_of(key, sizeof(key), i);
		snprintf(val, sizeof(val), "value-%u-%u", i, i * 7);
		check_value(&s, key, val);
	}
	kv_store_close(&s);
}

TEST(a_value_larger_than_the_file_grows_it)
{
	struct kv_store s;
	size_t n = 8u << 20;
	char *v = malloc(n);
	const void *got;
	size_t len;

	ASSERT_TRUE(v);
	for (size_t i = 0; i < n; i++)
		v[i] = (char)(i * 31 + 7);
	ASSERT_OK(kv_store_create(&s, 0));
	ASSERT_OK(kv_store_set(&s, "big", 3, v, n));
	ASSERT_OK(kv_store_get(&s, "big", 3, &got, &len));
	ASSERT_EQ(len, n);
	ASSERT_MEMEQ(got, v, n);
	free(v);
	kv_store_close(&s);
}

TEST(reopening_the_memfd_finds_every_key)
{
	struct kv_store s, t;
	char key[32];
	int fd;

	ASSERT_OK(kv_store_create(&s, 0));
	for (unsigned i = 0; i < 5000; i++) {
		key_of(key, sizeof(key), i);
		ASSERT_OK(kv_store_set(&s, key, strlen(key), key, strlen(key)));
	}
	ASSERT_OK(kv_store_del(&s, "key-17", 6));
	/* What a successor does with the fd it retrieved. */
	fd = ASSERT_OK(fcntl(s.fd, F_DUPFD_CLOEXEC, 3));
	kv_store_close(&s);
	ASSERT_OK(kv_store_open(&t, fd));
	ASSERT_EQ(kv_store_count(&t), 4999);
	for (unsigned i = 0; i < 5000; i++) {
		const void *v;
		size_t n;

		key_of(key, sizeof(key), i);
		if (i == 17) {
			ASSERT_ERR(kv_store_get(&t, key, strlen(key), &v, &n), -ENOENT);
			continue;
		}
		check_value(&t, key, key);
	}
	/* And it goes on growing after the reopen. */
	for (unsigned i = 5000; i < 50000; i++) {
		key_of(key, sizeof(key), i);
		ASSERT_OK(kv_store_set(&t, key, strlen(key), key, strlen(key)));
	}
	check_value(&t, "key-49999", "key-49999");
	kv_store_close(&t);
}

TEST(delete_churn_reuses_the_table_instead_of_growing_it)
{
	struct kv_store s;
	struct kv_stats st;
	char key[32];

	ASSERT_OK(kv_store_create(&s, 0));
	for (unsigned round = 0; round < 50; round++) {
		for (unsigned i = 0; i < 500; i++) {
			key_of(key, sizeof(key), round * 1000 + i);
			ASSERT_OK(kv_store_set(&s, key, strlen(key), "v", 1));
		}
		for (unsigned i = 0; i < 500; i++) {
			key_of(key, sizeof(key), round * 1000 + i);
			ASSERT_OK(kv_store_del(&s, key, strlen(key)));
		}
	}
	kv_store_stats(&s, &st);
	ASSERT_EQ(st.keys, 0);
	/* 25,000 keys passed through, never more than 500 at once. */
	ASSERT_TRUE(st.table_slots <= 2048);
	kv_store_close(&s);
}

TEST(the_generation_counts_handovers)
{
	struct kv_store s;
	struct kv_stats st;

	ASSERT_OK(kv_store_create(&s, 0));
	kv_store_bump_generation(&s);
	kv_store_bump_generation(&s);
	kv_store_stats(&s, &st);
	ASSERT_EQ(st.generation, 2);
	kv_store_close(&s);
}

static int memfd_with(const void *data, size_t n, size_t size)
{
	int fd = memfd_create("t", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0 || (n && pwrite(fd, data, n, 0) != (ssize_t)n)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

TEST(open_refuses_a_file_that_is_not_a_store)
{
	struct kv_store s;
	int fd;

	/* Zeros: no magic. */
	fd = ASSERT_OK(memfd_with(NULL, 0, 1 << 20));
	ASSERT_ERR(kv_store_open(&s, fd), -EBADMSG);
	close(fd);
	/* Too small for a header. */
	fd = ASSERT_OK(memfd_with("x", 1, 100));
	ASSERT_ERR(kv_store_open(&s, fd), -EBADMSG);
	close(fd);
}

TEST(open_refuses_a_store_whose_table_points_outside_the_file)
{
	struct kv_store s, t;
	uint64_t bad = UINT64_C(1) << 40;
	int fd;

	ASSERT_OK(kv_store_create(&s, 0));
	fd = ASSERT_OK(fcntl(s.fd, F_DUPFD_CLOEXEC, 3));
	/* table_off is the fourth header word. */
	ASSERT_EQ(pwrite(fd, &bad, sizeof(bad), 3 * sizeof(uint64_t)), sizeof(bad));
	kv_store_close(&s);
	ASSERT_ERR(kv_store_open(&t, fd), -EBADMSG);
	close(fd);
}

TEST_MAIN(TEST_CASE(set_then_get_returns_the_value), TEST_CASE(get_of_a_missing_key_is_enoent),
	  TEST_CASE(set_of_an_existing_key_replaces_it_and_keeps_the_count),
	  TEST_CASE(del_removes_only_that_key), TEST_CASE(empty_or_oversized_keys_are_einval),
	  TEST_CASE(many_keys_grow_the_table_and_the_file_and_all_stay_found),
	  TEST_CASE(a_value_larger_than_the_file_grows_it),
	  TEST_CASE(reopening_the_memfd_finds_every_key),
	  TEST_CASE(delete_churn_reuses_the_table_instead_of_growing_it),
	  TEST_CASE(the_generation_counts_handovers),
	  TEST_CASE(open_refuses_a_file_that_is_not_a_store),
	  TEST_CASE(open_refuses_a_store_whose_table_points_outside_the_file))
