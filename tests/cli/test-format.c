/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl's escaping and tables, byte by byte
 *
 * Session names may hold any byte but NUL.  For people every byte outside
 * printable ASCII becomes \xNN (and '\' doubles), so nothing reaches a
 * terminal as a control sequence and columns stay aligned; for JSON the
 * output must be valid JSON whatever the bytes, valid UTF-8 passing through.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli/format.h"
#include "harness.h"

static char *escaped(const char *s)
{
	char *r = escape_human((const uint8_t *)s, strlen(s));

	ASSERT_TRUE(r != NULL);
	return r;
}

static char *json(const char *s, size_t n)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	ASSERT_TRUE(f != NULL);
	json_print_string(f, (const uint8_t *)s, n);
	fclose(f);
	return buf;
}

#define ASSERT_ESCAPED(in, out)                                                                    \
	do {                                                                                       \
		char *_e = escaped(in);                                                            \
		ASSERT_STREQ(_e, out);                                                             \
		free(_e);                                                                          \
	} while (0)

#define ASSERT_JSON(in, n, out)                                                                    \
	do {                                                                                       \
		char *_j = json(in, n);                                                            \
		ASSERT_STREQ(_j, out);                                                             \
		free(_j);                                                                          \
	} while (0)

TEST(human_escape_keeps_printable_text_only)
{
	ASSERT_ESCAPED("plain-name_1.2", "plain-name_1.2");
	ASSERT_ESCAPED("a b", "a\\x20b");
	ASSERT_ESCAPED("\t\n\r\x1b[31m", "\\x09\\x0a\\x0d\\x1b[31m");
	ASSERT_ESCAPED("back\\slash", "back\\\\slash");
	ASSERT_ESCAPED("\x7f\x80\xff", "\\x7f\\x80\\xff");
	/* Valid UTF-8 text is shown as text, invalid bytes are escaped. */
	ASSERT_ESCAPED("caf\xc3\xa9", "caf\xc3\xa9");
	ASSERT_ESCAPED("\xe2\x82\xac\xf0\x9f\x98\x80", "\xe2\x82\xac\xf0\x9f\x98\x80");
	ASSERT_ESCAPED("caf\xc3", "caf\\xc3");
	ASSERT_ESCAPED("\xc0\xaf", "\\xc0\\xaf");
	/* ... but not C1 controls or bidirectional overrides, which act on a terminal. */
	ASSERT_ESCAPED("\xc2\x9b"
		       "1m",
		       "\\xc2\\x9b"
		       "1m");
	ASSERT_ESCAPED("a\xe2\x80\xae"
		       "b",
		       "a\\xe2\\x80\\xae"
		       "b");
	ASSERT_ESCAPED("a\xe2\x81\xa6"
		       "b",
		       "a\\xe2\\x81\\xa6"
		       "b");
	ASSERT_ESCAPED("\xc2\xa0", "\xc2\xa0");
	ASSERT_ESCAPED("", "");
}

TEST(display_width_counts_characters)
{
	ASSERT_EQ(display_width(""), 0);
	ASSERT_EQ(display_width("abc"), 3);
	ASSERT_EQ(display_width("caf\xc3\xa9"), 4);
	ASSERT_EQ(display_width("\xf0\x9f\x98\x80!"), 2);
}

static char *reformat(const char *in, bool pretty)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	ASSERT_TRUE(f != NULL);
	json_reformat(f, in, strlen(in), pretty);
	fclose(f);
	return buf;
}

TEST(json_reformat_changes_only_whitespace)
{
	static const char in[] = "{ \"a b\": [1, 2,\n {\"c\" : \"x, {y}: \\\" z\"}],\n"
				 "  \"e\": {}, \"f\": [ ] }";
	char *c = reformat(in, false), *p = reformat(in, true);

	ASSERT_STREQ(c, "{\"a b\":[1,2,{\"c\":\"x, {y}: \\\" z\"}],\"e\":{},\"f\":[]}\n");
	ASSERT_STREQ(p, "{\n  \"a b\": [\n    1,\n    2,\n    {\n      \"c\": \"x, {y}: \\\" "
			"z\"\n    }\n  ],\n  \"e\": {},\n  \"f\": []\n}\n");
	free(c);
	free(p);
}

TEST(json_string_is_valid_for_any_bytes)
{
	ASSERT_JSON("plain", 5, "\"plain\"");
	ASSERT_JSON("q\"b\\", 4, "\"q\\\"b\\\\\"");
	ASSERT_JSON("\n\t\x01\x7f", 4, "\"\\u000a\\u0009\\u0001\\u007f\"");
	/* Valid UTF-8 of each length passes through. */
	ASSERT_JSON("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
		    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
	/* Bytes that are no UTF-8: stray continuation, truncated, overlong, surrogate, > U+10FFFF. */
	ASSERT_JSON("\x80", 1, "\"\\u0080\"");
	ASSERT_JSON("\xe2\x82", 2, "\"\\u00e2\\u0082\"");
	ASSERT_JSON("\xc0\xaf", 2, "\"\\u00c0\\u00af\"");
	ASSERT_JSON("\xed\xa0\x80", 3, "\"\\u00ed\\u00a0\\u0080\"");
	ASSERT_JSON("\xf4\x90\x80\x80", 4, "\"\\u00f4\\u0090\\u0080\\u0080\"");
	ASSERT_JSON("\xff", 1, "\"\\u00ff\"");
}

TEST(json_hex_is_exact)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	json_print_hex(f, (const uint8_t *)"\x00\xff a", 4);
	fclose(f);
	ASSERT_STREQ(buf, "\"00ff2061\"");
	free(buf);
}

TEST(name_field_length_stops_at_nul_or_field_end)
{
	uint8_t field[8] = "abc";

	ASSERT_EQ(name_field_length(field, sizeof(field)), 3);
	memset(field, 'x', sizeof(field));
	ASSERT_EQ(name_field_length(field, sizeof(field)), 8);
}

TEST(table_aligns_columns)
{
	static const char *const headers[] = { "NAME", "N" };
	struct table *t = table_new(2, headers);
	char *buf = NULL;
	size_t size = 0;
	FILE *f;

	ASSERT_TRUE(t != NULL);
	ASSERT_OK(table_add_row(t, (const char *const[]){ "a-long-name", "7" }));
	ASSERT_OK(table_add_row(t, (const char *const[]){ "b", "1234" }));
	f = open_memstream(&buf, &size);
	table_print(t, f, 1u << 1);
	fclose(f);
	table_free(t);
	ASSERT_STREQ(buf, "NAME            N\n"
			  "a-long-name     7\n"
			  "b            1234\n");
	free(buf);
}

TEST_MAIN(TEST_CASE(human_escape_keeps_printable_text_only),
	  TEST_CASE(display_width_counts_characters),
	  TEST_CASE(json_reformat_changes_only_whitespace),
	  TEST_CASE(json_string_is_valid_for_any_bytes), TEST_CASE(json_hex_is_exact),
	  TEST_CASE(name_field_length_stops_at_nul_or_field_end), TEST_CASE(table_aligns_columns))
