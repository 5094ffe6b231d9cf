/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl's output formatting
 *
 * Session names may hold any byte but NUL, so every name printed goes
 * through one of two escapers: one for people (tables: printable ASCII and
 * valid UTF-8 text as they are, everything else as \xNN, so that columns stay
 * aligned and nothing reaches the terminal as a control sequence) and one
 * for JSON (always valid JSON).  A table collects its cells first and prints
 * them with columns aligned by characters when done; it lives for one
 * listing.  JSON output is produced as it comes and reformatted once, on one
 * line or indented (json_reformat()).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Escapes n bytes of s for a person into a malloc'ed string; NULL on ENOMEM.
 * Valid UTF-8 text passes as it is (but not C1 controls or bidirectional
 * overrides); spaces, control bytes and invalid bytes become \xNN, '\' "\\". */
char *escape_human(const uint8_t *s, size_t n);
/* Columns s takes on a terminal (one per character). */
size_t display_width(const char *s);
/* Writes the JSON text s (n bytes, valid JSON) to f on one line, or indented
 * by two spaces per level when pretty, followed by a newline.  Only the
 * whitespace between tokens changes. */
void json_reformat(FILE *f, const char *s, size_t n, bool pretty);
/* Prints n bytes of s as a JSON string (quotes included).  Valid UTF-8 passes
 * through; control characters, '"' and '\' are escaped; a byte that is not
 * part of valid UTF-8 is written as \u00XX (use the _hex field for the exact
 * bytes). */
void json_print_string(FILE *f, const uint8_t *s, size_t n);
/* Prints n bytes of s as lowercase hex, quoted, for JSON. */
void json_print_hex(FILE *f, const uint8_t *s, size_t n);
/* Length of a NUL-padded name field of size bytes. */
size_t name_field_length(const uint8_t *field, size_t size);

struct table;
/* A table with n_columns columns and these headers; NULL on ENOMEM. */
struct table *table_new(size_t n_columns, const char *const *headers);
/* Adds one row of n_columns cells (copied); 0 or -ENOMEM. */
int table_add_row(struct table *t, const char *const *cells);
/* Prints the header and rows, columns separated by two spaces and left-aligned,
 * except those whose bit is set in right_aligned. */
void table_print(const struct table *t, FILE *f, uint64_t right_aligned);
void table_free(struct table *t);
