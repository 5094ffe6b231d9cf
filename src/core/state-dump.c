/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: a state blob described for a person, or as JSON for a script
 *
 * luoctl dump-state reads a blob (typically the sealed memfd luod passes to
 * its successor) and calls luo_state_dump().  The blob is checked exactly as
 * luo_state_decode() checks it, minus what needs a live engine (registered
 * handlers, open fds), through the same walker; a bad blob gives the same
 * errno and prints nothing.  luod's own node (LUO_STATE_EXT_NODE) is shown
 * with its property names and sizes only: its layout belongs to the daemon.
 *
 * Lifecycle: the walk prints into in-memory streams (FLBs and sessions apart,
 * so that JSON groups them whatever order the blob has); only when the whole
 * blob has been found valid is the text written to the caller's FILE.
 * Session names and handler strings may hold any byte: the text form escapes
 * them C-style, JSON passes valid UTF-8 through, escapes the rest as \u00XX
 * and adds the exact bytes in hex.
 */
#include <inttypes.h>
#include <libfdt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "basic/macro.h"
#include "core/state.h"

/* The parts of the output, in the order they are written. */
enum { PART_HEAD, PART_FLBS, PART_SESSIONS, PART_EXT, N_PARTS };

struct dump {
	bool json;
	struct {
		FILE *f;
		char *buf;
		size_t len;
	} part[N_PARTS];
	size_t n_flbs, n_sessions, n_files; /* n_files: in the current session */
	uint64_t update_number, next_handle, size;
};

static void put_hex(FILE *f, const void *data, size_t size)
{
	const uint8_t *p = data;

	for (size_t i = 0; i < size; i++)
		fprintf(f, "%02x", p[i]);
}

/* C-style, inside double quotes: printable ASCII as is, anything else \xNN. */
static void put_text_string(FILE *f, const char *s, size_t len)
{
	fputc('"', f);
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)s[i];

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c >= 0x20 && c < 0x7f)
			fputc(c, f);
		else
			fprintf(f, "\\x%02x", c);
	}
	fputc('"', f);
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_valid_len(const uint8_t *p, size_t n)
{
	uint32_t cp, min;
	size_t len;

	if (p[0] < 0x80)
		return 1;
	if ((p[0] & 0xe0) == 0xc0) {
		len = 2, cp = p[0] & 0x1f, min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		len = 3, cp = p[0] & 0x0f, min = 0x800;
	} else if ((p[0] & 0xf8) == 0xf0) {
		len = 4, cp = p[0] & 0x07, min = 0x10000;
	} else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	/* No overlong forms, no surrogates, nothing past U+10FFFF. */
	if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

static void put_json_string(FILE *f, const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;

	fputc('"', f);
	for (size_t i = 0; i < len;) {
		size_t k = utf8_valid_len(p + i, len - i);

		if (p[i] == '"' || p[i] == '\\')
			fprintf(f, "\\%c", p[i]);
		else if (k == 1 && p[i] >= 0x20 && p[i] != 0x7f)
			fputc(p[i], f);
		else if (k > 1)
			fwrite(p + i, 1, k, f);
		else
			fprintf(f, "\\u%04x", p[i]);
		i += k > 1 ? k : 1;
	}
	fputc('"', f);
}

static void put_json_hex(FILE *f, const void *data, size_t size)
{
	fputc('"', f);
	put_hex(f, data, size);
	fputc('"', f);
}

static void put_data_text(FILE *f, const void *data, size_t size)
{
	fprintf(f, "data %zu bytes", size);
	if (size > 0) {
		fputs(": ", f);
		put_hex(f, data, size);
	}
}

static const char *bool_json(bool b)
{
	return b ? "true" : "false";
}

static int dump_root(const struct luo_state_root *r, void *userdata)
{
	struct dump *d = userdata;

	d->update_number = r->update_number;
	d->next_handle = r->next_handle;
	d->size = r->size;
	return 0;
}

static int dump_flb(const struct luo_state_flb *flb, void *userdata)
{
	struct dump *d = userdata;
	FILE *f = d->part[PART_FLBS].f;
	bool incoming = flb->flags & LUO_STATE_FLB_INCOMING;
	bool retrieved = flb->flags & LUO_STATE_FLB_RETRIEVED;

	if (d->json) {
		fprintf(f, "%s\n    { \"flb\": ", d->n_flbs ? "," : "");
		put_json_string(f, flb->compatible, strlen(flb->compatible));
		fprintf(f,
			", \"count\": %" PRIu64 ", \"incoming\": %s, \"retrieved\": %s, "
			"\"fd\": %d, \"data_size\": %zu, \"data\": ",
			flb->count, bool_json(incoming), bool_json(retrieved), flb->fd,
			flb->data_size);
		put_json_hex(f, flb->data, flb->data_size);
		fputs(" }", f);
	} else {
		fprintf(f, "  flb %zu: ", d->n_flbs);
		put_text_string(f, flb->compatible, strlen(flb->compatible));
		fprintf(f, ", count %" PRIu64 ", flags %s%s%s, fd %d, ", flb->count,
			incoming ? "incoming" : "", incoming && retrieved ? "," : "",
			retrieved ? "retrieved" : (incoming ? "" : "none"), flb->fd);
		put_data_text(f, flb->data, flb->data_size);
		fputc('\n', f);
	}
	d->n_flbs++;
	return 0;
}

/* Closes the JSON object of the session before, if any. */
static void json_end_session(struct dump *d)
{
	if (d->n_sessions > 0)
		fprintf(d->part[PART_SESSIONS].f, "%s] }", d->n_files ? "\n      " : "");
}

static int dump_session(const struct luo_state_session *s, void *userdata)
{
	struct dump *d = userdata;
	FILE *f = d->part[PART_SESSIONS].f;
	bool hoc = s->flags & LUO_SESSION_FLAG_HANDOVER_ON_CLOSE;

	if (d->json) {
		json_end_session(d);
		fprintf(f, "%s\n    { \"name\": ", d->n_sessions ? "," : "");
		put_json_string(f, s->name, s->name_len);
		fputs(", \"name_hex\": ", f);
		put_json_hex(f, s->name, s->name_len);
		fprintf(f,
			", \"kind\": \"%s\", \"state\": \"%s\", \"uid\": %" PRIu32
			", \"flags\": %" PRIu64 ", \"handover_on_close\": %s, \"handle\": %" PRIu64
			", \"files\": [",
			luo_session_kind_name(s->kind), luo_session_state_name(s->state), s->uid,
			s->flags, bool_json(hoc), s->handle);
	} else {
		fprintf(f, "  session %zu: ", d->n_sessions);
		put_text_string(f, s->name, s->name_len);
		fprintf(f, " %s %s, uid %" PRIu32 ", flags 0x%" PRIx64 "%s, handle %" PRIu64 "\n",
			luo_session_kind_name(s->kind), luo_session_state_name(s->state), s->uid,
			s->flags, hoc ? " (handover-on-close)" : "", s->handle);
	}
	d->n_sessions++;
	d->n_files = 0;
	return 0;
}

static int dump_file(const struct luo_state_file *fl, void *userdata)
{
	struct dump *d = userdata;
	FILE *f = d->part[PART_SESSIONS].f;
	bool frozen = fl->flags & LUO_STATE_FILE_FROZEN;
	bool retrieved = fl->flags & LUO_STATE_FILE_RETRIEVED;

	if (d->json) {
		fprintf(f, "%s\n        { \"token\": %" PRIu64 ", \"handler\": ",
			d->n_files ? "," : "", fl->token);
		put_json_string(f, fl->handler, strlen(fl->handler));
		fprintf(f,
			", \"fd\": %d, \"frozen\": %s, \"retrieved\": %s, \"retrieve_error\": %d, "
			"\"data_size\": %zu, \"data\": ",
			fl->fd, bool_json(frozen), bool_json(retrieved), fl->retrieve_error,
			fl->data_size);
		put_json_hex(f, fl->data, fl->data_size);
		if (fl->has_id)
			fprintf(f,
				", \"id\": { \"dev\": %" PRIu64 ", \"ino\": %" PRIu64
				", \"extra\": %" PRIu64 ", \"by_description\": %s } }",
				fl->id.dev, fl->id.ino, fl->id.extra,
				bool_json(fl->id.by_description));
		else
			fputs(", \"id\": null }", f);
	} else {
		fprintf(f, "    file %zu: token %" PRIu64 " (0x%" PRIx64 "), handler ", d->n_files,
			fl->token, fl->token);
		put_text_string(f, fl->handler, strlen(fl->handler));
		fprintf(f, ", fd %d", fl->fd);
		if (frozen)
			fputs(", frozen", f);
		if (retrieved)
			fputs(", retrieved", f);
		if (fl->retrieve_error)
			fprintf(f, ", retrieve error %d (%s)", fl->retrieve_error,
				strerror(-fl->retrieve_error));
		if (fl->has_id)
			fprintf(f, ", id %" PRIu64 ":%" PRIu64 ":%" PRIu64 "%s", fl->id.dev,
				fl->id.ino, fl->id.extra,
				fl->id.by_description ? " by description" : "");
		fputs(", ", f);
		put_data_text(f, fl->data, fl->data_size);
		fputc('\n', f);
	}
	d->n_files++;
	return 0;
}

static int dump_ext(const void *fdt, int offset, const char *name, void *userdata)
{
	struct dump *d = userdata;
	FILE *f = d->part[PART_EXT].f;
	size_t n_props = 0, n_nodes = 0;
	int off;

	if (offset < 0)
		return 0;
	if (d->json) {
		fputs(",\n  \"ext\": { \"node\": ", f);
		put_json_string(f, name, strlen(name));
		fputs(", \"properties\": [", f);
	} else {
		fputs("ext node ", f);
		put_text_string(f, name, strlen(name));
		fputc('\n', f);
	}
	fdt_for_each_property_offset(off, fdt, offset)
	{
		const char *pname = NULL;
		int len;

		if (!fdt_getprop_by_offset(fdt, off, &pname, &len) || !pname || len < 0)
			return -EBADMSG;
		if (d->json) {
			fprintf(f, "%s{ \"name\": ", n_props ? ", " : "");
			put_json_string(f, pname, strlen(pname));
			fprintf(f, ", \"size\": %d }", len);
		} else {
			fputs("  property ", f);
			put_text_string(f, pname, strlen(pname));
			fprintf(f, ", %d bytes\n", len);
		}
		n_props++;
	}
	if (off != -FDT_ERR_NOTFOUND)
		return luo_fdt_errno(off);
	fdt_for_each_subnode(off, fdt, offset) n_nodes++;
	if (off != -FDT_ERR_NOTFOUND)
		return luo_fdt_errno(off);
	if (d->json)
		fprintf(f, "], \"subnodes\": %zu }", n_nodes);
	else
		fprintf(f, "  %zu subnode%s\n", n_nodes, n_nodes == 1 ? "" : "s");
	return 0;
}

static void dump_close(struct dump *d)
{
	for (size_t k = 0; k < N_PARTS; k++) {
		if (d->part[k].f)
			fclose(d->part[k].f);
		free(d->part[k].buf);
	}
}

static int dump_open(struct dump *d)
{
	for (size_t k = 0; k < N_PARTS; k++) {
		d->part[k].f = open_memstream(&d->part[k].buf, &d->part[k].len);
		if (!d->part[k].f)
			return -ENOMEM;
	}
	return 0;
}

/* Flushes every part, so that its buffer and length are final, and writes it to f. */
static int dump_write(struct dump *d, FILE *f)
{
	for (size_t k = 0; k < N_PARTS; k++)
		if (fflush(d->part[k].f) != 0 || ferror(d->part[k].f))
			return -ENOMEM;
	for (size_t k = 0; k < N_PARTS; k++)
		if (fwrite(d->part[k].buf, 1, d->part[k].len, f) != d->part[k].len)
			return -EIO;
	return 0;
}

int luo_state_dump(const void *blob, size_t size, FILE *f, bool json)
{
	struct dump d = { .json = json };
	const struct luo_state_visitor visitor = {
		.ext_node = LUO_STATE_EXT_NODE,
		.root = dump_root,
		.flb = dump_flb,
		.session = dump_session,
		.file = dump_file,
		.ext = dump_ext,
	};
	int r;

	if (!f)
		return -EINVAL;
	r = dump_open(&d);
	if (r < 0)
		goto out;
	r = luo_state_walk(blob, size, &visitor, &d);
	if (r < 0)
		goto out;

	if (json) {
		json_end_session(&d);
		fprintf(d.part[PART_HEAD].f,
			"{\n  \"compatible\": \"%s\",\n  \"size\": %" PRIu64
			",\n  \"update_number\": %" PRIu64 ",\n  \"next_handle\": %" PRIu64
			",\n  \"flbs\": [",
			LUO_STATE_COMPATIBLE, d.size, d.update_number, d.next_handle);
		fprintf(d.part[PART_FLBS].f, "%s],\n  \"sessions\": [", d.n_flbs ? "\n  " : "");
		fprintf(d.part[PART_SESSIONS].f, "%s]", d.n_sessions ? "\n  " : "");
		fputs("\n}\n", d.part[PART_EXT].f);
	} else {
		fprintf(d.part[PART_HEAD].f,
			"state %s, %" PRIu64 " bytes\nupdate number %" PRIu64
			"\nnext handle %" PRIu64 "\n%zu flb%s\n",
			LUO_STATE_COMPATIBLE, d.size, d.update_number, d.next_handle, d.n_flbs,
			d.n_flbs == 1 ? "" : "s");
		fprintf(d.part[PART_FLBS].f, "%zu session%s\n", d.n_sessions,
			d.n_sessions == 1 ? "" : "s");
	}
	r = dump_write(&d, f);
out:
	dump_close(&d);
	return r;
}
