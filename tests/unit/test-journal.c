/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: tests of the journal (src/core/journal.c)
 *
 * An engine with the built-in handlers and real files (memfds with data,
 * eventfds, pipes, sockets with the netns FLB) is attached to a journal and
 * driven through every engine call; after each one the test notes what
 * changed the way luod does (the recipe is in journal.h) and commits.  After
 * every commit the journal is recovered, both from a second mapping of the
 * memfd and from a copy in memory, into a fresh borrowing engine, and the
 * oracle is the state codec: the recovered engine must encode to exactly the
 * bytes of the live one.  A final recovery adopts the fds for real, after
 * the live engine has let go of them as a dead worker would, and the fd
 * leak check of the harness then proves that the recovered engine owns
 * exactly the fds the live one held.
 *
 * Then the failure paths: staged records are invisible, a damaged record or
 * header is refused with the engine left empty and no fd closed, an fd named
 * closed or twice is refused by the adoption; and the writer's rules: the
 * ext table, deferred closes, compaction by snapshot and switch.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "core/journal.h"
#include "core/state.h"
#include "test-util.h"

#define CAPACITY (1u << 20)

/* ---- helpers ------------------------------------------------------------- */

static luo_engine *default_engine(void)
{
	luo_engine *e = NULL;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_default_handlers(e));
	return e;
}

/* What a successor is built as: the same handlers as the live engine. */
static luo_engine *(*new_engine)(void) = default_engine;

/* A live engine attached to its journal, as luod's worker has them. */
struct jt {
	luo_engine *e;
	luo_journal *j;
	int fd;
};

static void jt_init(struct jt *t)
{
	ASSERT_OK(luo_journal_create(CAPACITY, &t->fd));
	ASSERT_TRUE(t->fd >= 3);
	ASSERT_OK(luo_journal_open(t->fd, &t->j));
	t->e = default_engine();
	luo_journal_attach(t->j, t->e);
}

/* The journal first: it closes what it still defers; then the engine. */
static _unused_ void jt_done(struct jt *t)
{
	luo_journal_close(t->j);
	luo_engine_free(t->e);
	close(t->fd);
}

static void *encode(const luo_engine *e, size_t *ret_size)
{
	void *blob = NULL;

	ASSERT_OK(luo_state_encode(e, NULL, &blob, ret_size));
	return blob;
}

/* The oracle: both engines encode to the same bytes. */
static void assert_same_state(const luo_engine *live, const void *blob, size_t size,
			      const luo_engine *recovered)
{
	size_t size2;
	void *blob2 = encode(recovered, &size2);

	if (size != size2 || memcmp(blob, blob2, size) != 0) {
		fprintf(stderr, "--- live engine:\n");
		luo_state_dump(blob, size, stderr, false);
		fprintf(stderr, "--- recovered engine:\n");
		luo_state_dump(blob2, size2, stderr, false);
		test_fail_at(__FILE__, __LINE__, "recovered state differs (%zu and %zu bytes)",
			     size, size2);
	}
	(void)live;
	free(blob2);
}

/* The ext types the tests use. */
#define EXT_TYPES 4

static int count_entry(uint64_t key, const void *data, size_t size, void *userdata)
{
	(*(size_t *)userdata)++;
	return 0;
}

static size_t ext_count(const luo_journal *j)
{
	size_t n = 0;

	for (uint32_t type = 0; type < EXT_TYPES; type++)
		ASSERT_OK(luo_journal_ext_foreach(j, type, count_entry, &n));
	return n;
}

struct ext_check {
	const luo_journal *want;
	uint32_t type;
	size_t n;
};

static int check_entry_in(uint64_t key, const void *data, size_t size, void *userdata)
{
	struct ext_check *c = userdata;
	size_t want_size = SIZE_MAX;
	const void *want = luo_journal_ext_get(c->want, c->type, key, &want_size);

	ASSERT_TRUE(want != NULL);
	ASSERT_EQ(want_size, size);
	if (size)
		ASSERT_MEMEQ(want, data, size);
	c->n++;
	return 0;
}

/* The ext table of got is that of want, entry for entry. */
static void assert_same_ext(const luo_journal *want, const luo_journal *got)
{
	struct ext_check c = { want };

	for (c.type = 0; c.type < EXT_TYPES; c.type++)
		ASSERT_OK(luo_journal_ext_foreach(got, c.type, check_entry_in, &c));
	ASSERT_EQ(c.n, ext_count(want));
}

static int check_mem_entry(uint32_t type, uint64_t key, const void *data, size_t size,
			   void *userdata)
{
	struct ext_check *c = userdata;

	c->type = type;
	return check_entry_in(key, data, size, c);
}

/* The whole memfd, as a copy in memory. */
static void *journal_copy(int fd, size_t *ret_size)
{
	struct stat st;
	void *p;

	ASSERT_OK(fstat(fd, &st));
	p = malloc((size_t)st.st_size);
	ASSERT_TRUE(p != NULL);
	ASSERT_EQ(pread(fd, p, (size_t)st.st_size, 0), st.st_size);
	*ret_size = (size_t)st.st_size;
	return p;
}

/*
 * Recovers what fd holds into fresh borrowing engines, from a second mapping
 * and from a copy, and checks both against the live engine and its ext table.
 */
static void check_recovers(const struct jt *t)
{
	struct luo_journal_stats st = {};
	struct ext_check c = { t->j };
	luo_journal *j2 = NULL;
	luo_engine *e2 = new_engine();
	size_t size, mem_size;
	void *blob = encode(t->e, &size), *mem;

	ASSERT_OK(luo_journal_open(t->fd, &j2));
	ASSERT_OK(luo_journal_recover(j2, e2, LUO_JOURNAL_BORROW_FDS, &st));
	ASSERT_EQ(st.seq, luo_journal_seq(t->j));
	ASSERT_EQ(luo_journal_seq(j2), luo_journal_seq(t->j));
	ASSERT_EQ(st.log_size, luo_journal_log_size(t->j));
	ASSERT_EQ(st.snapshot_size, luo_journal_snapshot_size(t->j));
	assert_same_state(t->e, blob, size, e2);
	assert_same_ext(t->j, j2);
	luo_engine_free(e2);
	luo_journal_close(j2);

	mem = journal_copy(t->fd, &mem_size);
	e2 = new_engine();
	ASSERT_OK(luo_journal_recover_mem(mem, mem_size, e2, LUO_JOURNAL_BORROW_FDS,
					  check_mem_entry, &c, &st));
	ASSERT_EQ(st.seq, luo_journal_seq(t->j));
	ASSERT_EQ(c.n, ext_count(t->j));
	assert_same_state(t->e, blob, size, e2);
	luo_engine_free(e2);
	free(mem);
	free(blob);
}

/* Commits what the last call staged and checks that recovery sees it all. */
static void commit(struct jt *t)
{
	ASSERT_OK(luo_journal_note_engine(t->j));
	luo_journal_commit(t->j);
	ASSERT_EQ(luo_journal_staged(t->j), 0);
	check_recovers(t);
}

/*
 * The end of the worker: the live engine lets go of its fds without closing
 * them (they stay in the keeper's table), a successor recovers from the
 * journal and adopts them.  Returns the successor, which owns every fd the
 * live engine held: freeing it closes them, and the harness fails the case
 * if any is left open.
 */
static luo_engine *crash_and_recover(struct jt *t, luo_journal **ret_j)
{
	struct luo_journal_stats st = {};
	size_t size;
	void *blob = encode(t->e, &size);
	luo_engine *e2 = default_engine();
	luo_journal *j2 = NULL;

	ASSERT_EQ(luo_journal_staged(t->j), 0);
	luo_journal_close(t->j);
	t->j = NULL;
	t->e->borrowed_fds = true;
	luo_engine_free(t->e);
	t->e = NULL;

	ASSERT_OK(luo_journal_open(t->fd, &j2));
	ASSERT_OK(luo_journal_recover(j2, e2, 0, &st));
	ASSERT_FALSE(e2->borrowed_fds);
	assert_same_state(NULL, blob, size, e2);
	free(blob);
	*ret_j = j2;
	return e2;
}

static uint8_t field_buf[LUO_NAME_FIELD];

static luo_session *create(struct jt *t, const char *name, uint64_t flags, uint32_t uid)
{
	luo_session *s = NULL;

	ASSERT_OK(luo_engine_create_session(t->e, test_name(field_buf, name), flags, uid, &s));
	ASSERT_OK(luo_journal_note_session(t->j, s, false));
	commit(t);
	return s;
}

static void preserve(struct jt *t, luo_session *s, uint64_t token, int fd)
{
	ASSERT_OK(luo_session_preserve_fd(s, token, fd));
	ASSERT_OK(luo_journal_note_file(t->j, s, token));
	commit(t);
}

/* A handover moves the session between namespaces: gone from one, new in the other. */
static void handover(struct jt *t, luo_session *s)
{
	char name[LUO_NAME_FIELD];

	snprintf(name, sizeof(name), "%s", luo_session_name(s));
	ASSERT_OK(luo_engine_handover_session(t->e, s));
	ASSERT_OK(luo_journal_note_session_gone(t->j, LUO_SESSION_OUTGOING, luo_session_uid(s),
						name));
	ASSERT_OK(luo_journal_note_session(t->j, s, true));
	commit(t);
}

static luo_session *retrieve(struct jt *t, const char *name, uint32_t uid)
{
	luo_session *s = NULL;

	ASSERT_OK(luo_engine_retrieve_session(t->e, test_name(field_buf, name), uid, &s));
	ASSERT_OK(luo_journal_note_session(t->j, s, false));
	commit(t);
	return s;
}

/* retrieve_fd: 0 and the fd, or the error; the file's record either way. */
static int retrieve_fd(struct jt *t, luo_session *s, uint64_t token, int *ret_fd)
{
	int r = luo_session_retrieve_fd(s, token, ret_fd);

	ASSERT_OK(luo_journal_note_file(t->j, s, token));
	commit(t);
	return r;
}

struct tokens {
	uint64_t token[64];
	int fd[64];
	size_t n;
};

static int collect_file(const struct luo_file_info *fi, void *userdata)
{
	struct tokens *k = userdata;

	ASSERT_TRUE(k->n < 64);
	k->token[k->n] = fi->token;
	k->fd[k->n++] = fi->fd;
	return 0;
}

static struct tokens files_of(const luo_session *s)
{
	struct tokens k = {};

	ASSERT_OK(luo_session_foreach_file(s, collect_file, &k));
	return k;
}

/* Finish drops every file first: their records go before the session's. */
static void finish(struct jt *t, luo_session *s)
{
	struct tokens k = files_of(s);

	ASSERT_OK(luo_session_finish(s));
	for (size_t i = 0; i < k.n; i++)
		ASSERT_OK(luo_journal_note_file_gone(t->j, s, k.token[i]));
	ASSERT_OK(luo_journal_note_session(t->j, s, false));
	commit(t);
}

/* Release: whatever became of the session, its record says so. */
static void release(struct jt *t, luo_session *s)
{
	enum luo_session_kind kind = luo_session_kind(s);
	char name[LUO_NAME_FIELD];
	luo_session *now;

	uint32_t uid = luo_session_uid(s);

	snprintf(name, sizeof(name), "%s", luo_session_name(s));
	luo_session_release(s);
	now = luo_engine_find_session(t->e, kind, name);
	if (now)
		ASSERT_OK(luo_journal_note_session(t->j, now, false));
	else
		ASSERT_OK(luo_journal_note_session_gone(t->j, kind, uid, name));
	if (kind == LUO_SESSION_OUTGOING && !now) {
		/* Handed over on close: now incoming, frozen. */
		now = luo_engine_find_session(t->e, LUO_SESSION_INCOMING, name);
		if (now && luo_session_state(now) == LUO_SESSION_WAITING && !now->handle)
			ASSERT_OK(luo_journal_note_session(t->j, now, true));
	}
	commit(t);
}

static void reboot(struct jt *t)
{
	ASSERT_OK(luo_engine_reboot(t->e));
	ASSERT_OK(luo_journal_note_all(t->j));
	commit(t);
}

static int memfd_with(const char *text, unsigned flags)
{
	int fd = memfd_create("journal-test", MFD_CLOEXEC | flags);

	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	return fd;
}

static int pipe_with(const char *text)
{
	int p[2];

	ASSERT_OK(pipe2(p, O_CLOEXEC));
	ASSERT_EQ(write(p[1], text, strlen(text)), (ssize_t)strlen(text));
	close(p[1]);
	return p[0];
}

static void socket_pair(int sv[2])
{
	ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
}

/* Preserves fd under token and closes the caller's copy. */
static void preserve_close(struct jt *t, luo_session *s, uint64_t token, int fd)
{
	preserve(t, s, token, fd);
	close(fd);
}

static void assert_contents(int fd, const char *text)
{
	char buf[64] = {};

	ASSERT_EQ(pread(fd, buf, sizeof(buf) - 1, 0), (ssize_t)strlen(text));
	ASSERT_STREQ(buf, text);
}

/* ---- every engine call, recovered after each ------------------------------ */

TEST(every_call_recovers)
{
	struct jt t;
	luo_session *s, *beta, *gamma;
	luo_journal *j2;
	luo_engine *e2;
	int sv[2], sealed, fd;
	char buf[16] = {};

	jt_init(&t);
	check_recovers(&t); /* the empty journal */

	s = create(&t, "alpha", 0, 1000);
	preserve_close(&t, s, 1, memfd_with("alpha's bytes", 0));
	preserve_close(&t, s, 2, eventfd(7, EFD_CLOEXEC));
	preserve_close(&t, s, 3, pipe_with("in the pipe"));
	socket_pair(sv);
	preserve_close(&t, s, 4, sv[0]);
	close(sv[1]);
	ASSERT_TRUE(luo_engine_find_flb(t.e, "netns-v1") != NULL);

	/* Handed over when its fd closes. */
	beta = create(&t, "beta", LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 1001);
	preserve_close(&t, beta, 7, memfd_with("beta's bytes", 0));
	release(&t, beta);
	ASSERT_TRUE(luo_engine_find_session(t.e, LUO_SESSION_INCOMING, "beta") != NULL);

	/* Aborted when its fd closes: its files unpreserved. */
	gamma = create(&t, "gamma", 0, 1000);
	preserve_close(&t, gamma, 1, memfd_with("gamma", 0));
	preserve_close(&t, gamma, 2, eventfd(0, EFD_CLOEXEC));
	release(&t, gamma);
	ASSERT_TRUE(luo_engine_find_session(t.e, LUO_SESSION_OUTGOING, "gamma") == NULL);

	/* A sealable memfd sealed behind luod's back after its handover. */
	s = create(&t, "delta", 0, 1000);
	sealed = memfd_with("sealed", MFD_ALLOW_SEALING);
	preserve(&t, s, 1, sealed);
	preserve_close(&t, s, 2, eventfd(1, EFD_CLOEXEC));
	handover(&t, s);

	s = luo_engine_find_session(t.e, LUO_SESSION_OUTGOING, "alpha");
	handover(&t, s);
	s = retrieve(&t, "alpha", 1000);
	fd = -EBADF;
	ASSERT_OK(retrieve_fd(&t, s, 1, &fd));
	assert_contents(fd, "alpha's bytes");
	close(fd);
	ASSERT_OK(retrieve_fd(&t, s, 3, &fd));
	ASSERT_EQ(read(fd, buf, sizeof(buf) - 1), 11);
	ASSERT_STREQ(buf, "in the pipe");
	close(fd);
	ASSERT_OK(retrieve_fd(&t, s, 4, &fd)); /* the netns FLB retrieves */
	close(fd);
	ASSERT_TRUE(luo_engine_find_flb(t.e, "netns-v1")->retrieved);

	/* The seal added after the handover comes along; the file is retrieved. */
	s = retrieve(&t, "delta", 1000);
	ASSERT_OK(fcntl(sealed, F_ADD_SEALS, F_SEAL_GROW));
	close(sealed);
	ASSERT_OK(retrieve_fd(&t, s, 1, &fd));
	ASSERT_EQ(fcntl(fd, F_GET_SEALS) & F_SEAL_GROW, F_SEAL_GROW);
	close(fd);

	/* Finish, then the release that frees the name. */
	s = luo_engine_find_session(t.e, LUO_SESSION_INCOMING, "alpha");
	finish(&t, s);
	release(&t, s);
	/* Implicit finish of a retrieved session by its release. */
	release(&t, luo_engine_find_session(t.e, LUO_SESSION_INCOMING, "delta"));

	/* Sockets again, then a reboot: beta is dropped, the outgoing ones move in. */
	s = create(&t, "epsilon", 0, 0);
	socket_pair(sv);
	preserve_close(&t, s, 80, sv[0]);
	preserve_close(&t, s, 81, memfd_with("epsilon", 0));
	s = create(&t, "beta", 0, 1002); /* the outgoing namespace is separate */
	preserve_close(&t, s, 1, sv[1]);
	reboot(&t);
	ASSERT_EQ(luo_engine_update_number(t.e), 1);
	s = retrieve(&t, "beta", 1002);
	ASSERT_OK(retrieve_fd(&t, s, 1, &fd));
	close(fd);

	e2 = crash_and_recover(&t, &j2);
	/* The successor serves: epsilon's memfd is the same file. */
	s = luo_engine_find_session(e2, LUO_SESSION_INCOMING, "epsilon");
	ASSERT_OK(luo_engine_retrieve_session(e2, test_name(field_buf, "epsilon"), 0, &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 81, &fd));
	assert_contents(fd, "epsilon");
	close(fd);
	luo_journal_close(j2);
	luo_engine_free(e2);
	close(t.fd);
}

/* A session left stuck by a refused implicit finish, and its FLB. */
TEST(stuck_session_recovers)
{
	struct jt t;
	luo_session *s;
	luo_journal *j2;
	luo_engine *e2;
	int p[2];

	ASSERT_OK(luo_journal_create(CAPACITY, &t.fd));
	ASSERT_OK(luo_journal_open(t.fd, &t.j));
	new_engine = test_flb_engine;
	t.e = new_engine();
	luo_journal_attach(t.j, t.e);
	s = create(&t, "stuck", 0, 1000);
	ASSERT_OK(pipe2(p, O_CLOEXEC));
	preserve_close(&t, s, 40, p[0]);
	close(p[1]);
	ASSERT_OK(pipe2(p, O_CLOEXEC));
	preserve_close(&t, s, 41, p[0]);
	close(p[1]);
	handover(&t, s);
	s = retrieve(&t, "stuck", 1000);
	/* A failed retrieve is kept for good, and so is its record. */
	{
		int fd;

		test_inject.retrieve = (struct test_fail){ true, 41, -EIO };
		ASSERT_ERR(retrieve_fd(&t, s, 41, &fd), -EIO);
		test_inject.retrieve.on = false;
		ASSERT_ERR(retrieve_fd(&t, s, 41, &fd), -EIO);
	}
	test_inject.can_finish = (struct test_fail){ true, 40, 1 };
	release(&t, s);
	ASSERT_EQ(luo_session_state(s), LUO_SESSION_STUCK);

	/* The successor needs the same handlers. */
	{
		size_t size;
		void *blob = encode(t.e, &size);

		luo_journal_close(t.j);
		t.e->borrowed_fds = true;
		luo_engine_free(t.e);
		e2 = test_flb_engine();
		ASSERT_OK(luo_journal_open(t.fd, &j2));
		ASSERT_OK(luo_journal_recover(j2, e2, 0, NULL));
		assert_same_state(NULL, blob, size, e2);
		free(blob);
	}
	/* A default engine lacks the handler. */
	{
		luo_engine *e3 = default_engine();

		ASSERT_ERR(luo_journal_recover(j2, e3, LUO_JOURNAL_BORROW_FDS, NULL), -ENOPROTOOPT);
		luo_engine_free(e3);
	}
	luo_journal_close(j2);
	luo_engine_free(e2);
	close(t.fd);
}

/* ---- what recovery must not see or must refuse --------------------------- */

static bool all_open(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!fd_is_open(fds[i]))
			return false;
	return true;
}

static void assert_engine_empty(const luo_engine *e)
{
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), 0);
	ASSERT_EQ(luo_engine_n_files(e), 0);
	ASSERT_EQ(e->handles.count, 0);
	ASSERT_TRUE(e->identity_root == NULL);
	ASSERT_EQ(e->update_number, 0);
	ASSERT_EQ(e->next_handle, 0);
	ASSERT_FALSE(e->borrowed_fds);
	for (size_t i = 0; i < e->n_flbs; i++) {
		ASSERT_EQ(e->flbs[i].count, 0);
		ASSERT_TRUE(e->flbs[i].fd < 0);
	}
}

/* A small live state: two sessions, four files, the netns FLB. */
static void small_state(struct jt *t, struct tokens *ret_held)
{
	luo_session *s;
	int sv[2];

	jt_init(t);
	s = create(t, "one", 0, 1000);
	preserve_close(t, s, 1, memfd_with("one", 0));
	socket_pair(sv);
	preserve_close(t, s, 2, sv[0]);
	close(sv[1]);
	handover(t, s);
	s = create(t, "two", LUO_SESSION_FLAG_HANDOVER_ON_CLOSE, 1000);
	preserve_close(t, s, 1, eventfd(0, EFD_CLOEXEC));
	preserve_close(t, s, 2, pipe_with("two"));
	ASSERT_OK(luo_journal_ext_put(t->j, 1, 42, "conn", 4));
	commit(t);
	*ret_held = files_of(luo_engine_find_session(t->e, LUO_SESSION_INCOMING, "one"));
	{
		struct tokens more = files_of(s);

		for (size_t i = 0; i < more.n; i++)
			ret_held->fd[ret_held->n++] = more.fd[i];
	}
	ret_held->fd[ret_held->n++] = luo_engine_find_flb(t->e, "netns-v1")->fd;
}

TEST(staged_records_are_not_seen)
{
	struct jt t;
	struct tokens held;
	luo_session *s;
	luo_journal *j2;
	luo_engine *e2 = default_engine();
	size_t size;
	void *after;
	struct luo_journal_stats st;

	small_state(&t, &held);
	s = luo_engine_find_session(t.e, LUO_SESSION_OUTGOING, "two");
	preserve_close(&t, s, 3, memfd_with("three", 0));
	after = encode(t.e, &size);

	/* A request's records, staged and never committed. */
	ASSERT_OK(luo_engine_create_session(t.e, test_name(field_buf, "staged"), 0, 7, &s));
	ASSERT_OK(luo_journal_note_session(t.j, s, false));
	ASSERT_OK(luo_journal_note_engine(t.j));
	ASSERT_OK(luo_journal_ext_put(t.j, 2, 1, "in flight", 9));
	ASSERT_TRUE(luo_journal_staged(t.j) > 0);

	ASSERT_OK(luo_journal_open(t.fd, &j2));
	ASSERT_OK(luo_journal_recover(j2, e2, LUO_JOURNAL_BORROW_FDS, &st));
	ASSERT_EQ(st.seq, luo_journal_seq(t.j));
	assert_same_state(NULL, after, size, e2);
	ASSERT_TRUE(luo_journal_ext_get(j2, 2, 1, NULL) == NULL);
	ASSERT_TRUE(luo_journal_ext_get(t.j, 2, 1, NULL) != NULL);
	luo_engine_free(e2);
	luo_journal_close(j2);

	/* Committed, they are. */
	luo_journal_commit(t.j);
	check_recovers(&t);
	free(after);
	jt_done(&t);
}

/* The nth (from 0) committed record of type in j's memfd, or NULL. */
static struct luo_jrec *find_record(luo_journal *j, uint32_t type, unsigned nth)
{
	struct luo_journal_header *h = luo_journal_header(j);
	uint8_t *log = (uint8_t *)h + h->log_offset;

	for (uint64_t pos = 0; pos < h->log_end;) {
		struct luo_jrec *rec = (struct luo_jrec *)(log + pos);

		ASSERT_TRUE(rec->size >= sizeof(*rec));
		if (rec->type == type && nth-- == 0)
			return rec;
		pos += rec->size;
	}
	return NULL;
}

static void reseal(struct luo_jrec *rec)
{
	rec->crc = 0;
	rec->crc = luo_crc32c(0, rec, rec->size);
}

/*
 * A damaged copy of the journal is refused with errno err by every reader:
 * open, recover into a borrowing engine, recover adopting the fds.  Each
 * engine is left empty, and every fd of held is still open.
 */
static void assert_refused(const struct jt *t, const void *mem, size_t size, int open_err, int err,
			   const struct tokens *held)
{
	luo_engine *e = default_engine();
	luo_journal *j = NULL;
	int fd;

	ASSERT_ERR(luo_journal_recover_mem(mem, size, e, LUO_JOURNAL_BORROW_FDS, NULL, NULL, NULL),
		   err);
	assert_engine_empty(e);
	ASSERT_ERR(luo_journal_recover_mem(mem, size, e, 0, NULL, NULL, NULL), err);
	assert_engine_empty(e);
	ASSERT_TRUE(all_open(held->fd, held->n));
	luo_engine_free(e);

	/* The same bytes in a memfd of their own, through open(). */
	fd = memfd_create("damaged", MFD_CLOEXEC);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(pwrite(fd, mem, size, 0), (ssize_t)size);
	if (open_err) {
		ASSERT_ERR(luo_journal_open(fd, &j), open_err);
	} else {
		e = default_engine();
		ASSERT_OK(luo_journal_open(fd, &j));
		ASSERT_OK(luo_journal_ext_put(j, 3, 3, "x", 1));
		ASSERT_ERR(luo_journal_recover(j, e, 0, NULL), err);
		assert_engine_empty(e);
		/* A failed recovery leaves no ext entry behind either. */
		ASSERT_EQ(ext_count(j), 0);
		luo_journal_close(j);
		luo_engine_free(e);
	}
	close(fd);
	ASSERT_TRUE(all_open(held->fd, held->n));
	(void)t;
}

TEST(damaged_records_are_refused)
{
	struct jt t;
	struct tokens held;
	struct luo_jrec *rec;
	struct luo_journal_header *h;
	uint8_t *mem, *p;
	size_t size;
	uint64_t end;

	small_state(&t, &held);
	h = luo_journal_header(t.j);
	mem = journal_copy(t.fd, &size);
	rec = find_record(t.j, LUO_JREC_FILE, 2);
	ASSERT_TRUE(rec != NULL);
	p = mem + ((uint8_t *)rec - (uint8_t *)h);

	/* A flipped bit in a payload, then in a header. */
	p[rec->size - 9] ^= 0x04;
	assert_refused(&t, mem, size, -EBADMSG, -EBADMSG, &held);
	p[rec->size - 9] ^= 0x04;
	p[4] ^= 0x01;
	assert_refused(&t, mem, size, -EBADMSG, -EBADMSG, &held);
	p[4] ^= 0x01;
	/* A record out of sequence, its checksum right. */
	((struct luo_jrec *)p)->seq += 1;
	reseal((struct luo_jrec *)p);
	assert_refused(&t, mem, size, -EBADMSG, -EBADMSG, &held);
	((struct luo_jrec *)p)->seq -= 1;
	reseal((struct luo_jrec *)p);
	/* An unknown record type, its checksum right: refused at replay. */
	((struct luo_jrec *)p)->type = 99;
	reseal((struct luo_jrec *)p);
	assert_refused(&t, mem, size, 0, -EBADMSG, &held);
	((struct luo_jrec *)p)->type = LUO_JREC_FILE;
	reseal((struct luo_jrec *)p);

	/* Torn: the committed end inside a record, and past the capacity. */
	end = ((struct luo_journal_header *)mem)->log_end;
	((struct luo_journal_header *)mem)->log_end =
		(uint64_t)((uint8_t *)rec - (uint8_t *)h - h->log_offset) + 16;
	assert_refused(&t, mem, size, -EBADMSG, -EBADMSG, &held);
	((struct luo_journal_header *)mem)->log_end = end - 4;
	assert_refused(&t, mem, size, -EBADMSG, -EBADMSG, &held);
	((struct luo_journal_header *)mem)->log_end = h->capacity;
	assert_refused(&t, mem, size, -EBADMSG, -EBADMSG, &held);
	((struct luo_journal_header *)mem)->log_end = end;

	/* The undamaged copy still recovers. */
	{
		luo_engine *e = default_engine();

		ASSERT_OK(luo_journal_recover_mem(mem, size, e, LUO_JOURNAL_BORROW_FDS, NULL, NULL,
						  NULL));
		ASSERT_EQ(luo_engine_n_files(e), 4);
		luo_engine_free(e);
	}
	free(mem);
	jt_done(&t);
}

TEST(bad_header_is_refused)
{
	struct jt t;
	struct tokens held;
	struct luo_journal_header *m;
	size_t size;

	small_state(&t, &held);
	m = journal_copy(t.fd, &size);
	m->magic[0] ^= 0x20;
	assert_refused(&t, m, size, -EBADMSG, -EBADMSG, &held);
	m->magic[0] ^= 0x20;
	m->version = LUO_JOURNAL_VERSION + 1;
	assert_refused(&t, m, size, -EPROTONOSUPPORT, -EPROTONOSUPPORT, &held);
	m->version = LUO_JOURNAL_VERSION;
	m->capacity = size + 4096;
	assert_refused(&t, m, size, -EBADMSG, -EBADMSG, &held);
	m->capacity = size;
	m->header_size = 8192;
	assert_refused(&t, m, size, -EBADMSG, -EBADMSG, &held);
	m->header_size = LUO_JOURNAL_HEADER_SIZE;
	/* Shorter than a header. */
	assert_refused(&t, m, 100, -EBADMSG, -EBADMSG, &held);
	/* A snapshot whose checksum fails. */
	m->snapshot_size = 64;
	m->log_offset = LUO_JOURNAL_HEADER_SIZE + 64;
	m->log_end = 0;
	assert_refused(&t, m, size, 0, -EBADMSG, &held);
	free(m);
	jt_done(&t);
}

/* ---- adopting the fds ------------------------------------------------------ */

TEST(adopt_refuses_closed_fd)
{
	struct jt t;
	struct tokens held;
	luo_engine *e2 = default_engine();
	luo_journal *j2;
	luo_session *s;
	int victim;

	small_state(&t, &held);
	/* The dead worker's engine lets go of its fds; one of them is gone. */
	s = luo_engine_find_session(t.e, LUO_SESSION_OUTGOING, "two");
	victim = files_of(s).fd[1];
	luo_journal_close(t.j);
	t.j = NULL;
	t.e->borrowed_fds = true;
	close(victim);
	ASSERT_OK(luo_journal_open(t.fd, &j2));
	ASSERT_ERR(luo_journal_recover(j2, e2, 0, NULL), -EBADF);
	assert_engine_empty(e2);
	ASSERT_EQ(ext_count(j2), 0);
	for (size_t i = 0; i < held.n; i++)
		ASSERT_TRUE(held.fd[i] == victim || fd_is_open(held.fd[i]));

	/* Borrowing, nothing is looked at: it recovers. */
	ASSERT_OK(luo_journal_recover(j2, e2, LUO_JOURNAL_BORROW_FDS, NULL));
	ASSERT_EQ(luo_engine_n_files(e2), 4);
	luo_engine_free(e2);
	luo_journal_close(j2);
	for (size_t i = 0; i < held.n; i++)
		if (held.fd[i] != victim)
			close(held.fd[i]);
	luo_engine_free(t.e);
	close(t.fd);
}

TEST(adopt_refuses_fd_named_twice)
{
	struct jt t;
	struct tokens held;
	luo_engine *e2 = default_engine();
	luo_journal *j2;
	struct luo_jrec *a, *b;
	uint8_t *ra, *rb;
	int fd;

	small_state(&t, &held);
	/* Two FILE records of "two" (the last two: the handover of "one" wrote
	 * its files as one FILES record): the second given the first's fd slot.
	 * The record sits after kind, data_size, name and handler; its fd at
	 * byte 32, big-endian. */
	ASSERT_TRUE(find_record(t.j, LUO_JREC_FILES, 0) && !find_record(t.j, LUO_JREC_FILES, 1));
	a = find_record(t.j, LUO_JREC_FILE, 2);
	b = find_record(t.j, LUO_JREC_FILE, 3);
	ASSERT_TRUE(a && b && !find_record(t.j, LUO_JREC_FILE, 4));
	ra = (uint8_t *)(a + 1) + 8 + LUO_NAME_FIELD + 48;
	rb = (uint8_t *)(b + 1) + 8 + LUO_NAME_FIELD + 48;
	fd = (ra[32] << 24) | (ra[33] << 16) | (ra[34] << 8) | ra[35];
	ASSERT_EQ(fd, files_of(luo_engine_find_session(t.e, LUO_SESSION_OUTGOING, "two")).fd[0]);
	memcpy(rb + 32, ra + 32, 4);
	reseal(b);

	luo_journal_close(t.j);
	t.j = NULL;
	t.e->borrowed_fds = true;
	ASSERT_OK(luo_journal_open(t.fd, &j2));
	ASSERT_ERR(luo_journal_recover(j2, e2, 0, NULL), -EBADMSG);
	assert_engine_empty(e2);
	ASSERT_TRUE(all_open(held.fd, held.n));
	luo_engine_free(e2);
	luo_journal_close(j2);
	for (size_t i = 0; i < held.n; i++)
		close(held.fd[i]);
	luo_engine_free(t.e);
	close(t.fd);
}

TEST(recover_needs_an_empty_engine)
{
	struct jt t;
	struct tokens held;
	luo_journal *j2;

	small_state(&t, &held);
	ASSERT_OK(luo_journal_open(t.fd, &j2));
	ASSERT_ERR(luo_journal_recover(j2, t.e, LUO_JOURNAL_BORROW_FDS, NULL), -EBUSY);
	ASSERT_ERR(luo_journal_recover(j2, t.e, 1u << 5, NULL), -EINVAL);
	luo_journal_close(j2);
	check_recovers(&t);
	jt_done(&t);
}

/* ---- the ext table -------------------------------------------------------- */

static int stop_at_two(uint64_t key, const void *data, size_t size, void *userdata)
{
	(*(unsigned *)userdata)++;
	return *(unsigned *)userdata == 2 ? 7 : 0;
}

static int delete_each(uint64_t key, const void *data, size_t size, void *userdata)
{
	ASSERT_OK(luo_journal_ext_del(userdata, 2, key));
	return 0;
}

TEST(ext_table_survives_records)
{
	static uint8_t big[LUO_JOURNAL_EXT_MAX];
	struct jt t;
	size_t size = 0;
	unsigned calls = 0;
	const char *got;

	jt_init(&t);
	ASSERT_OK(luo_journal_ext_put(t.j, 1, 1, "first", 5));
	ASSERT_OK(luo_journal_ext_put(t.j, 1, 2, "", 0));
	ASSERT_OK(luo_journal_ext_put(t.j, 2, 1, "other type, same key", 20));
	commit(&t);
	got = luo_journal_ext_get(t.j, 1, 1, &size);
	ASSERT_EQ(size, 5);
	ASSERT_MEMEQ(got, "first", 5);
	ASSERT_TRUE(luo_journal_ext_get(t.j, 1, 2, &size) != NULL);
	ASSERT_EQ(size, 0);
	ASSERT_TRUE(luo_journal_ext_get(t.j, 3, 1, NULL) == NULL);

	/* Replaced in place, and by another size. */
	ASSERT_OK(luo_journal_ext_put(t.j, 1, 1, "FIRST", 5));
	commit(&t);
	ASSERT_OK(luo_journal_ext_put(t.j, 1, 1, "longer now", 10));
	commit(&t);
	got = luo_journal_ext_get(t.j, 1, 1, &size);
	ASSERT_EQ(size, 10);
	ASSERT_MEMEQ(got, "longer now", 10);

	/* The largest entry; one byte more is refused with nothing staged. */
	memset(big, 0xa5, sizeof(big));
	ASSERT_OK(luo_journal_ext_put(t.j, 3, UINT64_MAX, big, sizeof(big)));
	commit(&t);
	ASSERT_ERR(luo_journal_ext_put(t.j, 3, 0, big, sizeof(big) + 1), -EINVAL);
	ASSERT_ERR(luo_journal_ext_put(t.j, 3, 0, NULL, 1), -EINVAL);
	ASSERT_EQ(luo_journal_staged(t.j), 0);

	/* Deleted; deleting what is not there stages nothing. */
	ASSERT_OK(luo_journal_ext_del(t.j, 1, 2));
	commit(&t);
	ASSERT_TRUE(luo_journal_ext_get(t.j, 1, 2, NULL) == NULL);
	ASSERT_OK(luo_journal_ext_del(t.j, 1, 2));
	ASSERT_EQ(luo_journal_staged(t.j), 0);

	/* foreach: one type only, stops at the first non-zero, may delete. */
	for (uint64_t k = 10; k < 20; k++)
		ASSERT_OK(luo_journal_ext_put(t.j, 2, k, &k, sizeof(k)));
	commit(&t);
	ASSERT_EQ(luo_journal_ext_foreach(t.j, 2, stop_at_two, &calls), 7);
	ASSERT_EQ(calls, 2);
	ASSERT_OK(luo_journal_ext_foreach(t.j, 2, delete_each, t.j));
	commit(&t);
	calls = 0;
	ASSERT_OK(luo_journal_ext_foreach(t.j, 2, stop_at_two, &calls));
	ASSERT_EQ(calls, 0);
	ASSERT_EQ(ext_count(t.j), 2);
	jt_done(&t);
}

/* A full log refuses a change whole: the table keeps what the journal says. */
TEST(full_log_loses_nothing)
{
	static uint8_t chunk[1000];
	struct jt t;
	size_t size = 0;
	int r = 0;

	ASSERT_OK(luo_journal_create(2 * LUO_JOURNAL_HEADER_SIZE, &t.fd));
	ASSERT_OK(luo_journal_open(t.fd, &t.j));
	t.e = default_engine();
	luo_journal_attach(t.j, t.e);
	ASSERT_OK(luo_journal_ext_put(t.j, 1, 1, "old", 3));
	commit(&t);
	for (uint64_t k = 2; r == 0; k++) {
		r = luo_journal_ext_put(t.j, 1, k, chunk, sizeof(chunk));
		if (r == 0)
			luo_journal_commit(t.j);
	}
	ASSERT_ERR(r, -ENOSPC);
	ASSERT_ERR(luo_journal_ext_put(t.j, 1, 1, chunk, sizeof(chunk)), -ENOSPC);
	ASSERT_MEMEQ(luo_journal_ext_get(t.j, 1, 1, &size), "old", 3);
	ASSERT_EQ(size, 3);
	for (int i = 0; i < 200 && luo_journal_ext_put(t.j, 2, 0, NULL, 0) == 0; i++)
		luo_journal_commit(t.j);
	ASSERT_ERR(luo_journal_ext_del(t.j, 1, 1), -ENOSPC);
	ASSERT_TRUE(luo_journal_ext_get(t.j, 1, 1, NULL) != NULL);
	ASSERT_EQ(luo_journal_staged(t.j), 0);
	check_recovers(&t);
	jt_done(&t);
}

/* ---- deferred closes -------------------------------------------------------- */

TEST(released_fds_close_at_commit)
{
	struct jt t;
	struct tokens k;
	luo_session *s;
	int sv[2], flb_fd;

	jt_init(&t);
	s = create(&t, "aborted", 0, 1000);
	preserve_close(&t, s, 1, memfd_with("x", 0));
	socket_pair(sv);
	preserve_close(&t, s, 2, sv[0]);
	close(sv[1]);
	k = files_of(s);
	flb_fd = luo_engine_find_flb(t.e, "netns-v1")->fd;
	if (flb_fd >= 0)
		k.fd[k.n++] = flb_fd;

	uint32_t uid = luo_session_uid(s);

	luo_session_release(s);
	ASSERT_TRUE(luo_engine_find_flb(t.e, "netns-v1")->fd < 0);
	ASSERT_TRUE(all_open(k.fd, k.n));
	ASSERT_OK(luo_journal_note_session_gone(t.j, LUO_SESSION_OUTGOING, uid, "aborted"));
	ASSERT_OK(luo_journal_note_engine(t.j));
	ASSERT_TRUE(all_open(k.fd, k.n));
	luo_journal_commit(t.j);
	for (size_t i = 0; i < k.n; i++)
		ASSERT_FALSE(fd_is_open(k.fd[i]));
	check_recovers(&t);

	/* Freed with a journal attached, the engine's fds wait for the journal. */
	s = create(&t, "left", 0, 1000);
	preserve_close(&t, s, 1, memfd_with("y", 0));
	k = files_of(s);
	luo_engine_free(t.e);
	ASSERT_TRUE(all_open(k.fd, k.n));
	luo_journal_close(t.j);
	ASSERT_FALSE(fd_is_open(k.fd[0]));
	close(t.fd);

	/* Without a journal they close at once. */
	t.e = default_engine();
	ASSERT_OK(luo_engine_create_session(t.e, test_name(field_buf, "none"), 0, 0, &s));
	k.fd[0] = memfd_with("z", 0);
	ASSERT_OK(luo_session_preserve_fd(s, 1, k.fd[0]));
	close(k.fd[0]);
	k = files_of(s);
	luo_session_release(s);
	ASSERT_FALSE(fd_is_open(k.fd[0]));
	luo_engine_free(t.e);
}

/* ---- compaction -------------------------------------------------------------- */

/* The snapshot written where luod writes it: in a forked child. */
static void snapshot_in_child(const struct jt *t, int new_fd, uint64_t seq)
{
	pid_t pid = fork();
	int status;

	ASSERT_TRUE(pid >= 0);
	if (pid == 0)
		_exit(luo_journal_write_snapshot(t->j, new_fd, seq) < 0 ? 1 : 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(compaction_keeps_everything)
{
	struct jt t;
	struct tokens held;
	luo_session *s;
	luo_journal *j2;
	luo_engine *e2;
	uint64_t seq, log_before;
	int new_fd, fd;

	small_state(&t, &held);
	ASSERT_OK(luo_journal_ext_put(t.j, 1, 7, "before the snapshot", 19));
	ASSERT_OK(luo_journal_ext_put(t.j, 2, 7, "deleted after it", 16));
	commit(&t);
	memcpy(luo_journal_owner_area(t.j), "keeper's", 8);
	seq = luo_journal_seq(t.j);
	log_before = luo_journal_log_size(t.j);
	new_fd = memfd_create("journal-compacted", MFD_CLOEXEC);
	ASSERT_TRUE(new_fd >= 0);
	snapshot_in_child(&t, new_fd, seq);

	/* The worker goes on while the child writes: these come after seq. */
	s = luo_engine_find_session(t.e, LUO_SESSION_OUTGOING, "two");
	preserve_close(&t, s, 3, memfd_with("after the snapshot", 0));
	ASSERT_OK(luo_journal_ext_del(t.j, 2, 7));
	ASSERT_OK(luo_journal_ext_put(t.j, 3, 8, "after", 5));
	commit(&t);
	s = retrieve(&t, "one", 1000);
	ASSERT_OK(retrieve_fd(&t, s, 1, &fd));
	close(fd);

	/* Staged records hold the switch off. */
	ASSERT_OK(luo_journal_ext_put(t.j, 3, 9, "staged", 6));
	fd = memfd_create("journal-refused", MFD_CLOEXEC);
	ASSERT_ERR(luo_journal_switch(t.j, fd), -EBUSY);
	ASSERT_FALSE(fd_is_open(fd));
	luo_journal_commit(t.j);

	ASSERT_OK(luo_journal_switch(t.j, new_fd));
	ASSERT_FALSE(fd_is_open(new_fd) && new_fd != t.fd);
	ASSERT_EQ(luo_journal_fd(t.j), t.fd);
	ASSERT_EQ(luo_journal_header(t.j)->generation, 1);
	ASSERT_EQ(luo_journal_header(t.j)->snapshot_seq, seq);
	ASSERT_TRUE(luo_journal_snapshot_size(t.j) > 0);
	ASSERT_TRUE(luo_journal_log_size(t.j) < log_before);
	ASSERT_MEMEQ(luo_journal_owner_area(t.j), "keeper's", 8);
	check_recovers(&t);

	/* Writing goes on in the new journal; a second compaction in place. */
	s = luo_engine_find_session(t.e, LUO_SESSION_INCOMING, "one");
	finish(&t, s);
	release(&t, s);
	new_fd = memfd_create("journal-compacted-2", MFD_CLOEXEC);
	ASSERT_OK(luo_journal_write_snapshot(t.j, new_fd, luo_journal_seq(t.j)));
	ASSERT_OK(luo_journal_switch(t.j, new_fd));
	ASSERT_EQ(luo_journal_header(t.j)->generation, 2);
	ASSERT_EQ(luo_journal_log_size(t.j), 0);
	check_recovers(&t);
	ASSERT_OK(luo_journal_ext_put(t.j, 1, 7, "after the second", 16));
	commit(&t);

	/* A snapshot ahead of what is committed is refused. */
	new_fd = memfd_create("journal-ahead", MFD_CLOEXEC);
	ASSERT_OK(luo_journal_write_snapshot(t.j, new_fd, luo_journal_seq(t.j) + 1));
	ASSERT_ERR(luo_journal_switch(t.j, new_fd), -EBADMSG);
	check_recovers(&t);

	e2 = crash_and_recover(&t, &j2);
	ASSERT_EQ(ext_count(j2), 4);
	luo_journal_close(j2);
	luo_engine_free(e2);
	close(t.fd);
}

/* A log that fills in the middle of a request: compacted at once, nothing lost. */
TEST(full_log_mid_request_compacts)
{
	struct jt t;
	luo_session *s;
	uint64_t token;
	int r = 0, fd;

	ASSERT_OK(luo_journal_create(2 * LUO_JOURNAL_HEADER_SIZE, &t.fd));
	ASSERT_OK(luo_journal_open(t.fd, &t.j));
	t.e = default_engine();
	luo_journal_attach(t.j, t.e);
	s = create(&t, "filling", 0, 1000);
	ASSERT_OK(luo_journal_ext_put(t.j, 1, 1, "conn", 4));
	commit(&t);
	for (token = 1; r == 0; token++) {
		fd = memfd_with("x", 0);
		ASSERT_OK(luo_session_preserve_fd(s, token, fd));
		close(fd);
		ASSERT_OK(luo_journal_ext_put(t.j, 2, token, "request", 7));
		r = luo_journal_note_file(t.j, s, token);
		if (r == 0)
			r = luo_journal_note_engine(t.j);
		if (r == 0) {
			ASSERT_OK(luo_journal_ext_del(t.j, 2, token));
			luo_journal_commit(t.j);
		}
	}
	ASSERT_ERR(r, -ENOSPC);
	ASSERT_TRUE(luo_journal_staged(t.j) > 0);
	/* A switch would drop what is staged: refused; compaction takes it all. */
	fd = memfd_create("journal-refused", MFD_CLOEXEC);
	ASSERT_OK(luo_journal_write_snapshot(t.j, fd, luo_journal_seq(t.j)));
	ASSERT_ERR(luo_journal_switch(t.j, fd), -EBUSY);
	ASSERT_OK(luo_journal_compact(t.j));
	ASSERT_EQ(luo_journal_staged(t.j), 0);
	ASSERT_EQ(luo_journal_log_size(t.j), 0);
	ASSERT_TRUE(luo_journal_ext_get(t.j, 2, token - 1, NULL) != NULL);
	/* The rest of the request: its ext changes, then the commit. */
	ASSERT_OK(luo_journal_ext_del(t.j, 2, token - 1));
	luo_journal_commit(t.j);
	check_recovers(&t);
	ASSERT_EQ(luo_session_n_files(s), token - 1);

	/* And on: the next request has room. */
	preserve_close(&t, s, token, memfd_with("y", 0));
	jt_done(&t);
}

/* A snapshot older than the journal's own is refused: records would be missing. */
TEST(stale_snapshot_is_refused)
{
	struct jt t;
	struct tokens held;
	int old_fd;

	small_state(&t, &held);
	old_fd = memfd_create("journal-old", MFD_CLOEXEC);
	ASSERT_OK(luo_journal_write_snapshot(t.j, old_fd, luo_journal_seq(t.j)));
	preserve_close(&t, luo_engine_find_session(t.e, LUO_SESSION_OUTGOING, "two"), 3,
		       memfd_with("three", 0));
	ASSERT_OK(luo_journal_compact(t.j));
	check_recovers(&t);
	ASSERT_ERR(luo_journal_switch(t.j, old_fd), -ESTALE);
	ASSERT_FALSE(fd_is_open(old_fd));
	check_recovers(&t);
	jt_done(&t);
}

/* Records each fine on its own, ending in a state the codec refuses. */
TEST(replay_ends_in_a_state_the_codec_carries)
{
	struct jt t;
	luo_session *s;
	luo_engine *e2 = default_engine();
	luo_journal *j2;
	int fd;

	jt_init(&t);
	s = create(&t, "back", 0, 1000);
	preserve_close(&t, s, 1, eventfd(0, EFD_CLOEXEC));
	handover(&t, s);
	s = retrieve(&t, "back", 1000);
	ASSERT_OK(retrieve_fd(&t, s, 1, &fd));
	close(fd);
	/* A record saying the retrieved session waits again, its file retrieved. */
	s->state = LUO_SESSION_WAITING;
	ASSERT_OK(luo_journal_note_session(t.j, s, false));
	luo_journal_commit(t.j);
	s->state = LUO_SESSION_RETRIEVED;

	ASSERT_OK(luo_journal_open(t.fd, &j2));
	ASSERT_ERR(luo_journal_recover(j2, e2, LUO_JOURNAL_BORROW_FDS, NULL), -EBADMSG);
	assert_engine_empty(e2);
	luo_journal_close(j2);
	luo_engine_free(e2);
	jt_done(&t);
}

/* ---- many files in one record (a batch, a handover) ----------------------- */

#define BATCH_FILES 300 /* more than one FILES record holds */

static size_t count_records(luo_journal *j, uint32_t type)
{
	size_t n = 0;

	while (find_record(j, type, (unsigned)n))
		n++;
	return n;
}

TEST(a_batch_is_journaled_as_files_records_and_recovers)
{
	static uint64_t tokens[BATCH_FILES + 1];
	struct jt t;
	luo_session *s, *in;
	luo_journal *j2;
	luo_engine *e2;
	size_t files_before;
	int fd;

	jt_init(&t);
	s = create(&t, "batch", 0, 1000);
	for (size_t i = 0; i < BATCH_FILES; i++) {
		int sv[2];

		tokens[i] = 1000 + i;
		/* Three handlers in one record: a memfd, a socket, a pipe. */
		if (i % 3 == 0) {
			fd = memfd_with("batch", 0);
		} else if (i % 3 == 1) {
			socket_pair(sv);
			close(sv[1]);
			fd = sv[0];
		} else
			fd = pipe_with("batch");
		ASSERT_OK(luo_session_preserve_fd(s, tokens[i], fd));
		close(fd);
	}
	/* A token the session does not have is no change. */
	tokens[BATCH_FILES] = 7;
	files_before = count_records(t.j, LUO_JREC_FILE);
	ASSERT_OK(luo_journal_note_files(t.j, s, tokens, BATCH_FILES + 1, false));
	commit(&t);
	ASSERT_EQ(count_records(t.j, LUO_JREC_FILES), 2u);
	ASSERT_EQ(count_records(t.j, LUO_JREC_FILE), files_before);

	/* Handed over: the frozen files, with their new records, in FILES again. */
	handover(&t, s);
	ASSERT_EQ(count_records(t.j, LUO_JREC_FILES), 4u);
	in = retrieve(&t, "batch", 1000);
	for (size_t i = 0; i < 10; i++) {
		ASSERT_OK(luo_session_retrieve_fd(in, tokens[i], &fd));
		close(fd);
	}
	ASSERT_OK(luo_journal_note_files(t.j, in, tokens, 10, true));
	commit(&t);
	ASSERT_EQ(count_records(t.j, LUO_JREC_FILES), 5u);

	/* Every file here is the one the engine checked at preserve... */
	LIST_FOREACH (i, &in->files)
		ASSERT_TRUE(list_entry(i, struct luo_file, order)->hf.held_since_preserve);
	/* A successor adopts every fd and finds the retrieved ones retrieved, and
	 * (its fds named by a journal) checks each again at its first retrieve. */
	e2 = crash_and_recover(&t, &j2);
	in = luo_engine_find_session(e2, LUO_SESSION_INCOMING, "batch");
	ASSERT_TRUE(in != NULL);
	ASSERT_EQ(luo_session_n_files(in), (size_t)BATCH_FILES);
	for (size_t i = 0; i < BATCH_FILES; i++) {
		bool retrieved = true;

		ASSERT_OK(luo_session_file_check(in, tokens[i], &retrieved));
		ASSERT_EQ(retrieved, i < 10);
	}
	LIST_FOREACH (i, &in->files)
		ASSERT_FALSE(list_entry(i, struct luo_file, order)->hf.held_since_preserve);
	luo_journal_close(j2);
	luo_engine_free(e2);
	close(t.fd);
}

/* A new journal whose session name holds n memfds, preserved as one batch. */
static luo_session *batch_of_memfds(struct jt *t, const char *name, const uint64_t *tokens,
				    size_t n)
{
	luo_session *s;

	jt_init(t);
	s = create(t, name, 0, 1000);
	for (size_t i = 0; i < n; i++) {
		int fd = memfd_with(name, 0);

		ASSERT_OK(luo_session_preserve_fd(s, tokens[i], fd));
		close(fd);
	}
	ASSERT_OK(luo_journal_note_files(t->j, s, tokens, n, false));
	commit(t);
	return s;
}

TEST(damaged_files_records_are_refused)
{
	uint64_t tokens[3] = { 1, 2, 3 };
	struct jt t;
	struct tokens held;
	struct luo_journal_header *h;
	struct luo_jrec *rec;
	luo_session *s;
	uint8_t *mem, *p;
	size_t size;
	uint32_t v;

	s = batch_of_memfds(&t, "files", tokens, 3);
	held = files_of(s);
	h = luo_journal_header(t.j);
	rec = find_record(t.j, LUO_JREC_FILES, 0);
	ASSERT_TRUE(rec != NULL);
	mem = journal_copy(t.fd, &size);
	p = mem + ((uint8_t *)(rec + 1) - (uint8_t *)h);

	/* { kind, uid, name[64], n_files, n_handlers }, one handler name, then
	 * the entries { handler, 0[3], data_size, record[44], 0 }. */
	const size_t n_files = 8 + LUO_NAME_FIELD, n_handlers = n_files + 4;
	const size_t entry = n_handlers + 4 + 48;
	const struct {
		size_t at;
		uint32_t value;
	} damage[] = {
		{ n_files, 0 },		/* no files */
		{ n_files, 4 },		/* more files than the record holds */
		{ n_files, 257 },	/* more than any record may */
		{ n_handlers, 0 },	/* no handler */
		{ n_handlers, 17 },	/* too many */
		{ entry, 1 },		/* the first file's handler is not there */
		{ entry + 4, 4097 },	/* data larger than any record */
		{ entry + 4, 1 << 20 }, /* past the record's end */
		{ entry, 0x200 },	/* an unknown flag */
		{ entry, 0x100 },	/* data kept, and data given */
		{ entry, 0x10000 },	/* a reserved byte */
	};

	for (size_t k = 0; k < ELEMENTSOF(damage); k++) {
		uint8_t *copy = malloc(size);
		struct luo_jrec *c;

		ASSERT_TRUE(copy != NULL);
		memcpy(copy, mem, size);
		c = (struct luo_jrec *)(copy + ((uint8_t *)rec - (uint8_t *)h));
		v = damage[k].value;
		memcpy(copy + (p - mem) + damage[k].at, &v, sizeof(v));
		reseal(c);
		assert_refused(&t, copy, size, 0, -EBADMSG, &held);
		free(copy);
	}
	free(mem);
	jt_done(&t);
}

/* A FILES entry that keeps its data names a file the replay has: one that
 * is not there is refused, and one that is keeps its data. */
TEST(files_entries_that_keep_their_data_need_their_file)
{
	uint64_t tokens[2] = { 1, 2 };
	struct jt t;
	struct tokens held;
	luo_session *s;
	uint8_t *mem;
	size_t size;

	/* Known to the journal with their data, then again without it. */
	s = batch_of_memfds(&t, "kept", tokens, 2);
	ASSERT_OK(luo_journal_note_files(t.j, s, tokens, 2, true));
	commit(&t);
	ASSERT_TRUE(find_record(t.j, LUO_JREC_FILES, 1)->size <
		    find_record(t.j, LUO_JREC_FILES, 0)->size);
	held = files_of(s);

	/* The same record for a file the journal never had: refused. */
	{
		uint64_t three = 3;
		int fd = memfd_with("x", 0);

		ASSERT_OK(luo_session_preserve_fd(s, three, fd));
		close(fd);
		ASSERT_OK(luo_journal_note_files(t.j, s, &three, 1, true));
	}
	luo_journal_commit(t.j);
	mem = journal_copy(t.fd, &size);
	held = files_of(s);
	assert_refused(&t, mem, size, 0, -EBADMSG, &held);
	free(mem);
	jt_done(&t);
}

TEST_MAIN(TEST_CASE(every_call_recovers), TEST_CASE(stuck_session_recovers),
	  TEST_CASE(staged_records_are_not_seen), TEST_CASE(damaged_records_are_refused),
	  TEST_CASE(bad_header_is_refused), TEST_CASE(adopt_refuses_closed_fd),
	  TEST_CASE(adopt_refuses_fd_named_twice), TEST_CASE(recover_needs_an_empty_engine),
	  TEST_CASE(ext_table_survives_records), TEST_CASE(full_log_loses_nothing),
	  TEST_CASE(released_fds_close_at_commit), TEST_CASE(compaction_keeps_everything),
	  TEST_CASE(replay_ends_in_a_state_the_codec_carries),
	  TEST_CASE(full_log_mid_request_compacts), TEST_CASE(stale_snapshot_is_refused),
	  TEST_CASE(a_batch_is_journaled_as_files_records_and_recovers),
	  TEST_CASE(damaged_files_records_are_refused),
	  TEST_CASE(files_entries_that_keep_their_data_need_their_file))
