/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the test harness
 *
 * A test program lists its cases and calls test_main().  Each case runs in a
 * forked child with a timeout (LUO_TEST_TIMEOUT seconds, default 60); the
 * output is TAP.  A case fails if it returns non-zero, fails an assertion,
 * crashes, times out, or leaves more fds open than it found (the harness
 * counts /proc/self/fd before and after).  test_skip() ends a case as skipped
 * with a reason.  The program exits 0 if every case passed or skipped, 1
 * otherwise (skips are reported in the TAP plan).  Run one case by naming it as the argument.
 */
#pragma once

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
	const char *name;
	void (*fn)(void);
};

#define TEST_CASE(n)                                                                               \
	{                                                                                          \
#n, test_##n                                                                       \
	}
#define TEST(n) static void test_##n(void)

int test_main(const struct test_case *cases, size_t n, int argc, char **argv);
#define TEST_MAIN(...)                                                                             \
	int main(int argc, char **argv)                                                            \
	{                                                                                          \
		static const struct test_case cases[] = { __VA_ARGS__ };                           \
		return test_main(cases, sizeof(cases) / sizeof(cases[0]), argc, argv);             \
	}

void test_fail_at(const char *file, int line, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 3, 4)));
void test_skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void test_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Directory for this case's files (removed afterwards); created on first use. */
const char *test_tmpdir(void);
/* Whether the effective uid is 0. */
bool test_is_root(void);
/* Raises RLIMIT_NOFILE to at least n (skips the case when impossible). */
void test_need_fds(long n);

#define ASSERT_TRUE(expr)                                                                          \
	do {                                                                                       \
		if (!(expr))                                                                       \
			test_fail_at(__FILE__, __LINE__, "expected true: %s", #expr);              \
	} while (0)
#define ASSERT_FALSE(expr)                                                                         \
	do {                                                                                       \
		if ((expr))                                                                        \
			test_fail_at(__FILE__, __LINE__, "expected false: %s", #expr);             \
	} while (0)
/* expr >= 0 */
#define ASSERT_OK(expr)                                                                            \
	({                                                                                         \
		long long _r = (long long)(expr);                                                  \
		if (_r < 0)                                                                        \
			test_fail_at(__FILE__, __LINE__, "%s failed: %lld (%s)", #expr, _r,        \
				     strerror((int)-_r));                                          \
		_r;                                                                                \
	})
/* expr == -err (a negative errno) */
#define ASSERT_ERR(expr, err)                                                                      \
	do {                                                                                       \
		long long _r = (long long)(expr), _e = (long long)(err);                           \
		if (_r != _e)                                                                      \
			test_fail_at(__FILE__, __LINE__, "%s = %lld (%s), expected %lld (%s)",     \
				     #expr, _r, _r < 0 ? strerror((int)-_r) : "not an error", _e,  \
				     strerror((int)-_e));                                          \
	} while (0)
/* libc style: expr returns -1 and sets errno to err */
#define ASSERT_ERRNO(expr, err)                                                                    \
	do {                                                                                       \
		errno = 0;                                                                         \
		long long _r = (long long)(expr);                                                  \
		int _e = errno;                                                                    \
		if (_r != -1 || _e != (err))                                                       \
			test_fail_at(__FILE__, __LINE__,                                           \
				     "%s = %lld errno %d (%s), expected -1 errno %d (%s)", #expr,  \
				     _r, _e, strerror(_e), (int)(err), strerror(err));             \
	} while (0)
#define ASSERT_EQ(a, b)                                                                            \
	do {                                                                                       \
		long long _a = (long long)(a), _b = (long long)(b);                                \
		if (_a != _b)                                                                      \
			test_fail_at(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, _a,     \
				     _b);                                                          \
	} while (0)
#define ASSERT_NE(a, b)                                                                            \
	do {                                                                                       \
		long long _a = (long long)(a), _b = (long long)(b);                                \
		if (_a == _b)                                                                      \
			test_fail_at(__FILE__, __LINE__, "%s != %s: both %lld", #a, #b, _a);       \
	} while (0)
#define ASSERT_STREQ(a, b)                                                                         \
	do {                                                                                       \
		const char *_a = (a), *_b = (b);                                                   \
		if (!_a || !_b || strcmp(_a, _b) != 0)                                             \
			test_fail_at(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,     \
				     _a ? _a : "(null)", _b ? _b : "(null)");                      \
	} while (0)
#define ASSERT_MEMEQ(a, b, n)                                                                      \
	do {                                                                                       \
		if (memcmp((a), (b), (n)) != 0)                                                    \
			test_fail_at(__FILE__, __LINE__, "%s and %s differ in %zu bytes", #a, #b,  \
				     (size_t)(n));                                                 \
	} while (0)
