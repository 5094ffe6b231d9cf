/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: writes the seed corpus of fuzz-state
 *
 * Builds engines with the built-in handlers and real files (memfds, pipes,
 * eventfds, sockets with their netns FLB) through the engine's own commands,
 * takes them through handover, retrieval, finish and reboot, and writes each
 * encoded state into the directory given as the only argument, together with
 * a few broken variants (truncated, another version, an unknown handler, a
 * duplicate token, a flipped bit, a duplicate identity, a packed session's
 * records cut short, a handler index or a data offset out of range).  Not part of the build; run it by hand
 * after a format change, from a build directory:
 *
 *   cc -D_GNU_SOURCE -I.. -I../include -I../src -I. ../tests/fuzz/gen-state-corpus.c \
 *      src/core/libcore.a src/basic/libbasic.a -lfdt -o gen-state-corpus
 *   ./gen-state-corpus ../tests/fuzz/corpus/fuzz-state
 */
#include <errno.h>
#include <fcntl.h>
#include <libfdt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/engine-internal.h"
#include "core/state.h"

static const char *outdir;

static void die(const char *what, int r)
{
	fprintf(stderr, "gen-state-corpus: %s: %s\n", what, strerror(r < 0 ? -r : r));
	exit(1);
}

#define CHECK(expr)                                                                                \
	do {                                                                                       \
		int _r = (expr);                                                                   \
		if (_r < 0)                                                                        \
			die(#expr, _r);                                                            \
	} while (0)

static int ext_write(void *fdt, void *userdata)
{
	int r = fdt_property_u32(fdt, "connections", 2);

	if (r >= 0)
		r = fdt_property_string(fdt, "socket", "/run/luo/luod.sock");
	if (r >= 0)
		r = fdt_begin_node(fdt, "connection@0");
	if (r >= 0)
		r = fdt_property_u32(fdt, "fd", 3);
	if (r >= 0)
		r = fdt_end_node(fdt);
	return r < 0 ? luo_fdt_errno(r) : 0;
}

static const struct luo_state_ext luod_ext = { LUO_STATE_EXT_NODE, ext_write, NULL, NULL };

static void write_file(const char *name, const void *blob, size_t size)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	f = fopen(path, "we");
	if (!f || fwrite(blob, 1, size, f) != size || fclose(f) != 0)
		die(path, errno);
}

static void *encode(const luo_engine *e, const struct luo_state_ext *ext, size_t *size)
{
	void *blob = NULL;

	CHECK(luo_state_encode(e, ext, &blob, size));
	return blob;
}

static void emit(const char *name, const luo_engine *e, const struct luo_state_ext *ext)
{
	size_t size;
	void *blob = encode(e, ext, &size);

	write_file(name, blob, size);
	free(blob);
}

static luo_engine *engine(void)
{
	luo_engine *e = NULL;

	CHECK(luo_engine_new(&e));
	CHECK(luo_engine_add_default_handlers(e));
	return e;
}

static luo_session *create(luo_engine *e, const char *name, uint64_t flags, uint32_t uid)
{
	uint8_t field[LUO_NAME_FIELD] = { 0 };
	luo_session *s = NULL;

	memcpy(field, name, strnlen(name, LUO_NAME_FIELD - 1));
	CHECK(luo_engine_create_session(e, field, flags, uid, &s));
	return s;
}

static luo_session *retrieve(luo_engine *e, const char *name)
{
	uint8_t field[LUO_NAME_FIELD] = { 0 };
	luo_session *s = NULL;

	memcpy(field, name, strnlen(name, LUO_NAME_FIELD - 1));
	CHECK(luo_engine_retrieve_session(e, field, LUO_UID_ANY, &s));
	return s;
}

static void preserve(luo_session *s, uint64_t token, int fd)
{
	CHECK(luo_session_preserve_fd(s, token, fd));
	close(fd);
}

static int memfd_with(const char *text)
{
	int fd = memfd_create("seed", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || write(fd, text, strlen(text)) < 0)
		die("memfd", errno);
	return fd;
}

static int a_pipe(void)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe", errno);
	if (write(p[1], "buffered", 8) < 0)
		die("pipe write", errno);
	close(p[1]);
	return p[0];
}

static int an_eventfd(void)
{
	int fd = eventfd(3, EFD_CLOEXEC);

	if (fd < 0)
		die("eventfd", errno);
	return fd;
}

static int a_listener(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0)
		die("socket", errno);
	return fd;
}

static void retrieve_fd(luo_session *s, uint64_t token)
{
	int fd = -EBADF;

	CHECK(luo_session_retrieve_fd(s, token, &fd));
	close(fd);
}

/* The first packed session's files array in blob, writable in place. */
static uint8_t *packed_files(void *blob, int *len)
{
	int node;

	fdt_for_each_subnode(node, blob, 0)
	{
		uint8_t *p = fdt_getprop_w(blob, node, "files", len);

		if (p)
			return p;
	}
	die("files", ENOENT);
	return NULL;
}

/* Replaces the first occurrence of from by to (same length) in blob. */
static void patch(void *blob, size_t size, const char *from, const char *to)
{
	size_t n = strlen(from);
	uint8_t *p = memmem(blob, size, from, n);

	if (!p || strlen(to) != n)
		die("patch", EINVAL);
	memcpy(p, to, n);
}

int main(int argc, char **argv)
{
	luo_engine *e;
	luo_session *s;
	size_t size;
	uint8_t *blob;
	char name[LUO_NAME_FIELD];

	if (argc != 2) {
		fprintf(stderr, "usage: gen-state-corpus DIR\n");
		return 2;
	}
	outdir = argv[1];

	e = engine();
	emit("valid-empty", e, NULL);
	emit("valid-empty-with-luod-node", e, &luod_ext);
	luo_engine_free(e);

	/* One outgoing session with one file of each kind but sockets. */
	e = engine();
	s = create(e, "kv-server", 0, 1000);
	preserve(s, 1, memfd_with("the data"));
	preserve(s, 2, a_pipe());
	preserve(s, 3, an_eventfd());
	emit("valid-one-session", e, &luod_ext);
	luo_engine_free(e);

	/* Sockets bring the netns FLB. */
	e = engine();
	s = create(e, "listener", LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 0);
	preserve(s, 80, a_listener());
	preserve(s, 443, a_listener());
	s = create(e, "other", 0, 0);
	preserve(s, 80, a_listener());
	emit("valid-sockets-flb", e, &luod_ext);
	luo_engine_free(e);

	/* Every state: open, waiting, retrieved (some files), finished, stuck. */
	e = engine();
	s = create(e, "waiting", 0, 1000);
	preserve(s, 1, memfd_with("waiting"));
	CHECK(luo_engine_handover_session(e, s));
	s = create(e, "retrieved", 0, 1000);
	preserve(s, 1, memfd_with("retrieved"));
	preserve(s, 2, an_eventfd());
	preserve(s, 3, a_listener());
	CHECK(luo_engine_handover_session(e, s));
	s = retrieve(e, "retrieved");
	retrieve_fd(s, 1);
	retrieve_fd(s, 3);
	s = create(e, "finished", 0, 1000);
	preserve(s, 9, an_eventfd());
	CHECK(luo_engine_handover_session(e, s));
	s = retrieve(e, "finished");
	CHECK(luo_session_finish(s));
	s = create(e, "stuck", 0, 1000);
	preserve(s, 4, a_pipe());
	CHECK(luo_engine_handover_session(e, s));
	s = retrieve(e, "stuck");
	/* What a refused implicit finish leaves behind. */
	s->state = LUO_SESSION_STUCK;
	CHECK(luo_session_set_handle(s, 0));
	s = create(e, "waiting", 0, 1000); /* outgoing: another namespace */
	preserve(s, 5, memfd_with("again"));
	emit("valid-every-state", e, &luod_ext);

	/* A reboot: update number 1, outgoing moved in, incoming dropped (the
	 * waiting one, handed over, replaced by the outgoing one of its name). */
	CHECK(luo_engine_reboot(e));
	emit("valid-after-reboot", e, &luod_ext);
	luo_engine_free(e);

	/* A failed retrieve that lost its fd. */
	e = engine();
	s = create(e, "failed", 0, 1000);
	preserve(s, 1, an_eventfd());
	preserve(s, 2, an_eventfd());
	CHECK(luo_engine_handover_session(e, s));
	s = retrieve(e, "failed");
	{
		struct luo_file *f = luo_file_lookup(s, 2);

		luo_identity_remove(e, f);
		close(f->hf.fd);
		f->hf.fd = -EBADF;
		f->retrieve_error = -EIO;
	}
	emit("valid-failed-retrieve", e, NULL);
	luo_engine_free(e);

	/* Names at the limits and of any byte; many sessions. */
	e = engine();
	memset(name, 'n', LUO_NAME_FIELD - 1);
	name[LUO_NAME_FIELD - 1] = '\0';
	s = create(e, name, 0, 1);
	preserve(s, UINT64_MAX, an_eventfd());
	preserve(s, 0, an_eventfd());
	create(e, "\x01\"\\\xff\xc3\xa9 \t", 0, 2);
	create(e, "x", 0, 3);
	for (int i = 0; i < 40; i++) {
		char n[16];

		snprintf(n, sizeof(n), "s%d", i);
		s = create(e, n, 0, (uint32_t)i);
		preserve(s, (uint64_t)i, an_eventfd());
		if (i % 3 == 0)
			CHECK(luo_engine_handover_session(e, s));
	}
	emit("valid-many-sessions", e, NULL);
	luo_engine_free(e);

	/* Broken variants of a small valid blob: a packed session of two
	 * files, and one of a single file which keeps its file node. */
	e = engine();
	s = create(e, "kv-server", 0, 1000);
	preserve(s, 1, memfd_with("the data"));
	preserve(s, 2, an_eventfd());
	s = create(e, "single", 0, 1000);
	preserve(s, 7, memfd_with("alone"));
	s = luo_engine_find_session(e, LUO_SESSION_OUTGOING, "kv-server");
	blob = encode(e, NULL, &size);
	write_file("bad-truncated", blob, size - 7);
	patch(blob, size, "luod-v1", "luod-v2");
	write_file("bad-root-version", blob, size);
	patch(blob, size, "luod-v2", "luod-v1");
	patch(blob, size, "memfd-v1", "memfx-v1");
	write_file("bad-unknown-handler", blob, size);
	patch(blob, size, "memfx-v1", "memfd-v1");
	patch(blob, size, "luo-session-v2", "luo-session-v9");
	write_file("bad-session-version", blob, size);
	patch(blob, size, "luo-session-v9", "luo-session-v2");
	patch(blob, size, "luo-file-v2", "luo-file-v3");
	write_file("bad-file-version", blob, size);
	patch(blob, size, "luo-file-v3", "luo-file-v2");
	blob[size / 2] ^= 0x10;
	write_file("bad-bit-flip", blob, size);
	blob[size / 2] ^= 0x10;
	{
		int len;
		uint8_t *files = packed_files(blob, &len), *copy = malloc(size);

		if (!copy)
			die("malloc", ENOMEM);
		/* The second record's handler past the list, then its data offset
		 * off the end of the first file's. */
		fdt32_st(files + 56 + 44, 5);
		write_file("bad-packed-handler-index", blob, size);
		fdt32_st(files + 56 + 44, 1);
		fdt32_st(files + 56 + 48, fdt32_ld((const fdt32_t *)(files + 56 + 48)) + 1);
		write_file("bad-packed-data-range", blob, size);
		fdt32_st(files + 56 + 48, fdt32_ld((const fdt32_t *)(files + 56 + 48)) - 1);
		/* The array one word short of whole records. */
		{
			int node = fdt_path_offset(blob, "/session@0");

			if (node < 0 || fdt_open_into(blob, copy, (int)size) < 0 ||
			    fdt_setprop(copy, node, "files", files, len - 4) < 0 ||
			    fdt_pack(copy) < 0)
				die("truncate files", EINVAL);
			write_file("bad-packed-truncated-records", copy, fdt_totalsize(copy));
		}
		free(copy);
	}
	free(blob);
	/* Two files with one token: the second token patched to the first. */
	{
		uint8_t two[8] = { 0, 0, 0, 0, 0, 0, 0, 2 }, one[8] = { 0, 0, 0, 0, 0, 0, 0, 1 };
		uint8_t *p;

		blob = encode(e, NULL, &size);
		p = memmem(blob, size, two, sizeof(two));
		if (!p)
			die("token", ENOENT);
		memcpy(p, one, sizeof(one));
		write_file("bad-duplicate-token", blob, size);
		free(blob);
	}
	/* The second file's record given the first one's identity, and the
	 * first one's flagged by description with none. */
	{
		const struct luo_file *f1 = luo_file_lookup(s, 1), *f2 = luo_file_lookup(s, 2);
		uint8_t id1[24], id2[24], *p;

		blob = encode(e, NULL, &size);
		fdt64_st(id1, f1->id.dev), fdt64_st(id1 + 8, f1->id.ino),
			fdt64_st(id1 + 16, f1->id.extra);
		fdt64_st(id2, f2->id.dev), fdt64_st(id2 + 8, f2->id.ino),
			fdt64_st(id2 + 16, f2->id.extra);
		p = memmem(blob, size, id2, sizeof(id2));
		if (!p)
			die("identity", ENOENT);
		memcpy(p, id1, sizeof(id1));
		write_file("bad-when-owned-duplicate-identity", blob, size);
		free(blob);
	}
	luo_engine_free(e);

	/* Many files in a few sessions, as luod holds them: a blob large enough
	 * for the decoder to check it on a second thread. */
	e = engine();
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "bulk-%d", i);
		s = create(e, name, 0, 1000);
		for (uint64_t t = 1; t <= 200; t++)
			preserve(s, t, memfd_create("bulk", MFD_CLOEXEC));
	}
	emit("valid-large", e, &luod_ext);
	luo_engine_free(e);
	return 0;
}
