/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl's output formatting
 *
 * See format.h.  Nothing here talks to luod; everything is pure string work
 * so that it can be tested with odd names alone.
 */
#include "format.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "basic/macro.h"

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_sequence_length(const uint8_t *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/*
 * Whether the code point of the valid sequence at s (len bytes) is one a
 * person can see as itself: not a C1 control (U+0080..U+009F, which
 * terminals obey), nor a bidirectional override or isolate (U+202A..U+202E,
 * U+2066..U+2069, which reorder what follows on the line).
 */
static bool utf8_printable(const uint8_t *s, size_t len)
{
	if (len == 2 && s[0] == 0xc2 && s[1] < 0xa0)
		return false;
	if (len == 3 && s[0] == 0xe2 && s[1] == 0x80 && s[2] >= 0xaa && s[2] <= 0xae)
		return false;
	if (len == 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9)
		return false;
	return true;
}

char *escape_human(const uint8_t *s, size_t n)
{
	/* The worst case is four bytes ("\xNN") per input byte. */
	char *out = malloc(n * 4 + 1), *p = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t len = c >= 0x80 ? utf8_sequence_length(s + i, n - i) : 1;

		if (len > 1 && utf8_printable(s + i, len)) {
			/* Valid UTF-8 text is shown as text. */
			memcpy(p, s + i, len);
			p += len;
			i += len;
			continue;
		}
		if (c == '\\') {
			*p++ = '\\';
			*p++ = '\\';
		} else if (c > 0x20 && c < 0x7f) {
			*p++ = (char)c;
		} else {
			static const char hex[] = "0123456789abcdef";
			*p++ = '\\';
			*p++ = 'x';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
		i++;
	}
	*p = 0;
	return out;
}

size_t display_width(const char *s)
{
	size_t w = 0;

	/* One column per character: every byte but UTF-8 continuation bytes. */
	for (; *s; s++)
		w += ((uint8_t)*s & 0xc0) != 0x80;
	return w;
}

void json_print_string(FILE *f, const uint8_t *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t len = utf8_sequence_length(s + i, n - i);

		if (len == 0) {
			fprintf(f, "\\u%04x", c);
			i++;
			continue;
		}
		if (len > 1) {
			fwrite(s + i, 1, len, f);
			i += len;
			continue;
		}
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
		i++;
	}
	fputc('"', f);
}

void json_print_hex(FILE *f, const uint8_t *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", s[i]);
	fputc('"', f);
}

size_t name_field_length(const uint8_t *field, size_t size)
{
	const uint8_t *nul = memchr(field, 0, size);

	return nul ? (size_t)(nul - field) : size;
}

struct table {
	size_t n_columns;
	size_t n_rows; /* the header included */
	size_t allocated;
	char **cells; /* n_rows * n_columns */
};

struct table *table_new(size_t n_columns, const char *const *headers)
{
	struct table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->n_columns = n_columns;
	if (table_add_row(t, headers) < 0) {
		table_free(t);
		return NULL;
	}
	return t;
}

int table_add_row(struct table *t, const char *const *cells)
{
	if (t->n_rows == t->allocated) {
		size_t m = t->allocated ? t->allocated * 2 : 16;
		char **c = reallocarray(t->cells, m * t->n_columns, sizeof(char *));

		if (!c)
			return -ENOMEM;
		t->cells = c;
		t->allocated = m;
	}
	char **row = t->cells + t->n_rows * t->n_columns;
	for (size_t i = 0; i < t->n_columns; i++) {
		row[i] = strdup(cells[i] ? cells[i] : "");
		if (!row[i]) {
			for (size_t j = 0; j < i; j++)
				free(row[j]);
			return -ENOMEM;
		}
	}
	t->n_rows++;
	return 0;
}

void table_print(const struct table *t, FILE *f, uint64_t right_aligned)
{
	_cleanup_free_ size_t *width = calloc(t->n_columns, sizeof(size_t));

	if (!width)
		return;
	for (size_t r = 0; r < t->n_rows; r++)
		for (size_t c = 0; c < t->n_columns; c++)
			width[c] = MAX(width[c], display_width(t->cells[r * t->n_columns + c]));
	for (size_t r = 0; r < t->n_rows; r++) {
		for (size_t c = 0; c < t->n_columns; c++) {
			const char *cell = t->cells[r * t->n_columns + c];
			bool last = c + 1 == t->n_columns;
			bool right = c < 64 && (right_aligned & (UINT64_C(1) << c));

			size_t pad = width[c] - display_width(cell);

			if (c > 0)
				fputs("  ", f);
			/* Padded by columns, not bytes: a name may hold UTF-8 text. */
			if (right)
				fprintf(f, "%*s%s", (int)pad, "", cell);
			else if (last)
				fputs(cell, f); /* no trailing blanks */
			else
				fprintf(f, "%s%*s", cell, (int)pad, "");
		}
		fputc('\n', f);
	}
}

void table_free(struct table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

void json_reformat(FILE *f, const char *s, size_t n, bool pretty)
{
	bool in_string = false, escaped = false;
	int depth = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (in_string) {
			fputc(c, f);
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
			continue;
		}
		switch (c) {
		case ' ':
		case '\t':
		case '\n':
		case '\r':
			break;
		case '"':
			in_string = true;
			fputc(c, f);
			break;
		case '{':
		case '[': {
			/* An empty object or array stays on its line. */
			size_t j = i + 1;

			while (j < n && strchr(" \t\n\r", s[j]) && s[j])
				j++;
			if (j < n && (s[j] == '}' || s[j] == ']')) {
				fputc(c, f);
				fputc(s[j], f);
				i = j;
				break;
			}
			fputc(c, f);
			depth++;
			if (pretty)
				fprintf(f, "\n%*s", depth * 2, "");
			break;
		}
		case '}':
		case ']':
			depth--;
			if (pretty)
				fprintf(f, "\n%*s", MAX(depth, 0) * 2, "");
			fputc(c, f);
			break;
		case ',':
			fputc(c, f);
			if (pretty)
				fprintf(f, "\n%*s", MAX(depth, 0) * 2, "");
			break;
		case ':':
			fputs(pretty ? ": " : ":", f);
			break;
		default:
			fputc(c, f);
			break;
		}
	}
	fputc('\n', f);
}
