/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: writes the seed corpus of fuzz-journal
 *
 * Real journals written by the writer API: an engine with the built-in
 * handlers and real files (memfds, pipes, eventfds, sockets with their netns
 * FLB) attached to a journal, taken through create, preserve, handover,
 * retrieve, a failed retrieve, finish, release and reboot with each change
 * noted and committed as luod does, the ext table filled and emptied, and
 * compacted (a snapshot and the records after it).  Each journal is written
 * into the directory given as the only argument, cut to the bytes it uses
 * (its capacity set to them), together with broken variants: torn, cut
 * short, flipped bits in the header, the snapshot and a record, another
 * magic and version, a record out of sequence with a right checksum, and
 * staged records past the committed end.  Not part of the build; run it by
 * hand after a format change, from a build directory:
 *
 *   cc -D_GNU_SOURCE -I.. -I../include -I../src -I. ../tests/fuzz/gen-journal-corpus.c \
 *      src/core/libcore.a src/basic/libbasic.a -lfdt -o gen-journal-corpus
 *   ./gen-journal-corpus ../tests/fuzz/corpus/fuzz-journal
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/engine-internal.h"
#include "core/journal.h"

static const char *outdir;

static void die(const char *what, int r)
{
	fprintf(stderr, "gen-journal-corpus: %s: %s\n", what, strerror(r < 0 ? -r : r));
	exit(1);
}

#define CHECK(expr)                                                                                \
	do {                                                                                       \
		int _r = (expr);                                                                   \
		if (_r < 0)                                                                        \
			die(#expr, _r);                                                            \
	} while (0)

static void write_file(const char *name, const void *blob, size_t size)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	f = fopen(path, "we");
	if (!f || fwrite(blob, 1, size, f) != size || fclose(f) != 0)
		die(path, errno);
}

struct jt {
	luo_engine *e;
	luo_journal *j;
	int fd;
};

static void jt_init(struct jt *t)
{
	CHECK(luo_journal_create(1 << 20, &t->fd));
	CHECK(luo_journal_open(t->fd, &t->j));
	CHECK(luo_engine_new(&t->e));
	CHECK(luo_engine_add_default_handlers(t->e));
	luo_journal_attach(t->j, t->e);
}

static void jt_done(struct jt *t)
{
	luo_journal_close(t->j);
	luo_engine_free(t->e);
	close(t->fd);
}

static void commit(struct jt *t)
{
	CHECK(luo_journal_note_engine(t->j));
	luo_journal_commit(t->j);
}

/*
 * The journal's used bytes (header, snapshot, committed log, and extra
 * bytes past it), with the capacity cut down to them.
 */
static uint8_t *take(const struct jt *t, size_t extra, size_t *ret_size)
{
	struct luo_journal_header *h = luo_journal_header(t->j);
	size_t size = h->log_offset + h->log_end + extra;
	uint8_t *p = malloc(size);

	if (!p)
		die("malloc", ENOMEM);
	memcpy(p, h, size);
	((struct luo_journal_header *)p)->capacity = size;
	*ret_size = size;
	return p;
}

static void emit(const char *name, const struct jt *t)
{
	size_t size;
	uint8_t *p = take(t, 0, &size);

	write_file(name, p, size);
	free(p);
}

static const uint8_t *field(const char *name)
{
	static uint8_t f[LUO_NAME_FIELD];

	memset(f, 0, sizeof(f));
	memcpy(f, name, strnlen(name, LUO_NAME_FIELD - 1));
	return f;
}

static luo_session *create(struct jt *t, const char *name, uint64_t flags, uint32_t uid)
{
	luo_session *s = NULL;

	CHECK(luo_engine_create_session(t->e, field(name), flags, uid, &s));
	CHECK(luo_journal_note_session(t->j, s, false));
	commit(t);
	return s;
}

static void preserve(struct jt *t, luo_session *s, uint64_t token, int fd)
{
	if (fd < 0)
		die("fd", errno);
	CHECK(luo_session_preserve_fd(s, token, fd));
	CHECK(luo_journal_note_file(t->j, s, token));
	commit(t);
	close(fd);
}

static void handover(struct jt *t, luo_session *s)
{
	char name[LUO_NAME_FIELD];

	snprintf(name, sizeof(name), "%s", luo_session_name(s));
	CHECK(luo_engine_handover_session(t->e, s));
	CHECK(luo_journal_note_session_gone(t->j, LUO_SESSION_OUTGOING, luo_session_uid(s), name));
	CHECK(luo_journal_note_session(t->j, s, true));
	commit(t);
}

static int held_fd_of_token_1(const struct luo_file_info *fi, void *userdata)
{
	if (fi->token == 1)
		*(int *)userdata = fi->fd;
	return 0;
}

static luo_session *retrieve(struct jt *t, const char *name)
{
	luo_session *s = NULL;

	CHECK(luo_engine_retrieve_session(t->e, field(name), LUO_UID_ANY, &s));
	CHECK(luo_journal_note_session(t->j, s, false));
	commit(t);
	return s;
}

static int retrieve_fd(struct jt *t, luo_session *s, uint64_t token)
{
	int fd = -EBADF, r = luo_session_retrieve_fd(s, token, &fd);

	if (fd >= 0)
		close(fd);
	CHECK(luo_journal_note_file(t->j, s, token));
	commit(t);
	return r;
}

static int tokens_of(const struct luo_file_info *fi, void *userdata)
{
	uint64_t *k = userdata;

	if (k[0] < 15)
		k[++k[0]] = fi->token;
	return 0;
}

static void finish(struct jt *t, luo_session *s)
{
	uint64_t k[16] = {};

	CHECK(luo_session_foreach_file(s, tokens_of, k));
	CHECK(luo_session_finish(s));
	for (uint64_t i = 1; i <= k[0]; i++)
		CHECK(luo_journal_note_file_gone(t->j, s, k[i]));
	CHECK(luo_journal_note_session(t->j, s, false));
	commit(t);
}

static void release_gone(struct jt *t, luo_session *s)
{
	enum luo_session_kind kind = luo_session_kind(s);
	char name[LUO_NAME_FIELD];

	uint32_t uid = luo_session_uid(s);

	snprintf(name, sizeof(name), "%s", luo_session_name(s));
	luo_session_release(s);
	CHECK(luo_journal_note_session_gone(t->j, kind, uid, name));
	commit(t);
}

static int memfd_with(const char *text, unsigned flags)
{
	int fd = memfd_create("seed", MFD_CLOEXEC | flags);

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

static int a_socket(void)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair", errno);
	close(sv[1]);
	return sv[0];
}

/* The nth committed record of the journal copy p, or NULL. */
static struct luo_jrec *record_at(uint8_t *p, unsigned nth)
{
	struct luo_journal_header *h = (struct luo_journal_header *)p;

	for (uint64_t pos = 0; pos < h->log_end;) {
		struct luo_jrec *rec = (struct luo_jrec *)(p + h->log_offset + pos);

		if (nth-- == 0)
			return rec;
		pos += rec->size;
	}
	return NULL;
}

/* Broken variants of the journal t holds, named prefix-*. */
static void emit_broken(const char *prefix, const struct jt *t)
{
	struct luo_journal_header *h;
	struct luo_jrec *rec;
	char name[256];
	size_t size;
	uint8_t *p = take(t, 0, &size);

	h = (struct luo_journal_header *)p;
#define OUT(suffix, len)                                                                           \
	do {                                                                                       \
		snprintf(name, sizeof(name), "%s-%s", prefix, suffix);                             \
		write_file(name, p, len);                                                          \
	} while (0)
	OUT("cut-short", size - 7);
	h->magic[7] = '2';
	OUT("bad-magic", size);
	h->magic[7] = '1';
	h->version = 2;
	OUT("bad-version", size);
	h->version = LUO_JOURNAL_VERSION;
	h->log_offset += 4;
	OUT("bad-log-offset", size);
	h->log_offset -= 4;
	h->log_end -= 8;
	OUT("torn", size);
	h->log_end += 8;
	if (h->snapshot_size) {
		p[h->snapshot_offset + h->snapshot_size / 2] ^= 0x08;
		OUT("bit-flip-snapshot", size);
		p[h->snapshot_offset + h->snapshot_size / 2] ^= 0x08;
	}
	rec = record_at(p, 1);
	if (rec) {
		((uint8_t *)rec)[rec->size - 1] ^= 0x40;
		OUT("bit-flip-record", size);
		((uint8_t *)rec)[rec->size - 1] ^= 0x40;
		rec->seq += 2;
		rec->crc = 0;
		rec->crc = luo_crc32c(0, rec, rec->size);
		OUT("record-out-of-sequence", size);
	}
#undef OUT
	free(p);
}

int main(int argc, char **argv)
{
	struct jt t;
	luo_session *s;
	int sealed;
	size_t size;
	uint8_t *p;

	if (argc != 2) {
		fprintf(stderr, "usage: gen-journal-corpus DIR\n");
		return 2;
	}
	outdir = argv[1];

	jt_init(&t);
	emit("valid-empty", &t);
	jt_done(&t);

	/* Sessions and files of every built-in kind, the netns FLB. */
	jt_init(&t);
	s = create(&t, "kv-server", 0, 1000);
	preserve(&t, s, 1, memfd_with("the data", 0));
	preserve(&t, s, 2, a_pipe());
	preserve(&t, s, 3, eventfd(3, EFD_CLOEXEC));
	preserve(&t, s, 4, a_socket());
	s = create(&t, "hoc", LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 0);
	preserve(&t, s, 80, a_socket());
	emit("valid-sessions-files", &t);
	emit_broken("sessions-files", &t);

	/* Every step of a session's life after an update. */
	handover(&t, luo_engine_find_session(t.e, LUO_SESSION_OUTGOING, "kv-server"));
	s = retrieve(&t, "kv-server");
	retrieve_fd(&t, s, 1);
	retrieve_fd(&t, s, 4);
	s = create(&t, "failing", 0, 1000);
	sealed = memfd_with("sealed", MFD_ALLOW_SEALING);
	CHECK(luo_session_preserve_fd(s, 1, sealed));
	CHECK(luo_journal_note_file(t.j, s, 1));
	commit(&t);
	handover(&t, s);
	s = retrieve(&t, "failing");
	close(sealed);
	/* Another file behind the engine's fd: the handler's check fails (EIO). */
	{
		int held = -EBADF, other = memfd_with("another file", 0);

		(void)luo_session_foreach_file(s, held_fd_of_token_1, &held);
		if (held < 0 || dup2(other, held) < 0)
			die("swapping the held file", EBADF);
		close(other);
	}
	if (retrieve_fd(&t, s, 1) != -EIO)
		die("failed retrieve", EINVAL);
	emit("valid-failed-retrieve", &t);
	s = luo_engine_find_session(t.e, LUO_SESSION_INCOMING, "kv-server");
	finish(&t, s);
	emit("valid-finished", &t);
	release_gone(&t, s);
	s = create(&t, "aborted", 0, 1000);
	preserve(&t, s, 1, memfd_with("gone soon", 0));
	release_gone(&t, s);
	emit("valid-every-step", &t);

	/* A reboot: the whole state noted again. */
	s = create(&t, "failing", 0, 1000); /* outgoing: another namespace */
	preserve(&t, s, 9, eventfd(0, EFD_CLOEXEC));
	CHECK(luo_engine_reboot(t.e));
	CHECK(luo_journal_note_all(t.j));
	commit(&t);
	emit("valid-after-reboot", &t);

	/* The ext table: entries put, replaced, deleted, of every size. */
	CHECK(luo_journal_ext_put(t.j, 1, 1, "connection", 10));
	CHECK(luo_journal_ext_put(t.j, 1, 2, "", 0));
	CHECK(luo_journal_ext_put(t.j, 2, UINT64_MAX, "request in flight", 17));
	commit(&t);
	CHECK(luo_journal_ext_put(t.j, 1, 1, "connection, longer", 18));
	CHECK(luo_journal_ext_del(t.j, 1, 2));
	commit(&t);
	emit("valid-ext", &t);

	/* Staged records past the committed end are not part of it. */
	s = create(&t, "staged", 0, 1000);
	CHECK(luo_journal_ext_put(t.j, 3, 3, "staged", 6));
	p = take(&t, luo_journal_staged(t.j), &size);
	write_file("valid-with-staged", p, size);
	free(p);
	luo_journal_commit(t.j);

	/* Compaction: a snapshot (with the ext node), then records after it. */
	{
		int new_fd = memfd_create("compacted", MFD_CLOEXEC);

		if (new_fd < 0)
			die("memfd", errno);
		CHECK(luo_journal_write_snapshot(t.j, new_fd, luo_journal_seq(t.j)));
		CHECK(luo_journal_switch(t.j, new_fd));
	}
	emit("valid-snapshot-only", &t);
	emit_broken("snapshot-only", &t);
	preserve(&t, s, 5, memfd_with("after the snapshot", 0));
	CHECK(luo_journal_ext_put(t.j, 1, 7, "after", 5));
	CHECK(luo_journal_ext_del(t.j, 2, UINT64_MAX));
	commit(&t);
	release_gone(&t, s);
	emit("valid-snapshot-and-records", &t);
	emit_broken("snapshot-and-records", &t);
	jt_done(&t);
	return 0;
}
