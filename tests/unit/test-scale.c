/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine at scale: 100,000 sessions holding 200,000 eventfds, created,
 * preserved, handed over, encoded, decoded into a fresh engine (taking over
 * the same fds, as luod does across its re-exec), then retrieved, finished
 * and released.  The times of each phase are printed, never asserted; what is
 * asserted is that every session and file arrives intact.  The sanitizer
 * build runs a tenth of the sizes.
 *
 * Every file costs the engine one fd, which needs RLIMIT_NOFILE raised past
 * most hard limits; without the privilege to raise it the full case skips,
 * and a second case runs the same sessions with as many files as the hard
 * limit allows, so that the path is exercised everywhere.
 *
 * The test handler identifies every eventfd by open file description alone,
 * which puts them all in one identity group ordered by kcmp(): the slow path
 * of the index.  A third case runs luod's own handlers instead, whose eventfd
 * handler names each eventfd by its kernel id (the fast path), up to the fd
 * limit too.
 */
#include <sys/resource.h>
#include <time.h>

#include "core/state.h"
#include "test-util.h"

#if defined(__SANITIZE_ADDRESS__)
/* Small enough that its fds fit under a 20,000 hard limit too. */
#define N_SESSIONS 7500
#else
#define N_SESSIONS 100000
#endif
#define N_FILES (2 * N_SESSIONS)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void phase(const char *what, double *t)
{
	double n = now();

	test_diag("%-34s %8.3f s", what, n - *t);
	*t = n;
}

static const uint8_t *session_name(uint8_t field[LUO_NAME_FIELD], size_t i)
{
	memset(field, 0, LUO_NAME_FIELD);
	snprintf((char *)field, LUO_NAME_FIELD, "scale-session-%zu", i);
	return field;
}

static luo_engine *scale_engine(bool builtin)
{
	luo_engine *e = NULL;

	ASSERT_OK(luo_engine_new(&e));
	if (builtin)
		ASSERT_OK(luo_engine_add_default_handlers(e));
	else
		ASSERT_OK(luo_engine_add_handler(e, &test_handler));
	return e;
}

/*
 * n_sessions sessions and n_files eventfds, file j in session j % n_sessions
 * under token j / n_sessions, each eventfd's counter its session's index.
 */
static void run_scale(size_t n_sessions, size_t n_files, bool builtin)
{
	luo_session **sessions = calloc(n_sessions, sizeof(*sessions));
	uint8_t field[LUO_NAME_FIELD];
	luo_engine *e = scale_engine(builtin), *d = NULL;
	void *blob = NULL;
	size_t size = 0, retrieved = 0;
	double start = now(), t = start;

	ASSERT_TRUE(sessions);
	test_diag("%zu sessions, %zu eventfd files, %s", n_sessions, n_files,
		  builtin ? "luod's handlers" : "the test handler");

	for (size_t i = 0; i < n_sessions; i++)
		ASSERT_OK(luo_engine_create_session(e, session_name(field, i), 0, 1000,
						    &sessions[i]));
	phase("create sessions", &t);

	for (size_t j = 0; j < n_files; j++) {
		size_t i = j % n_sessions;
		int fd = eventfd((unsigned)i, EFD_CLOEXEC | EFD_NONBLOCK);

		ASSERT_TRUE(fd >= 0);
		ASSERT_OK(luo_session_preserve_fd(sessions[i], j / n_sessions, fd));
		close(fd);
	}
	ASSERT_EQ(luo_engine_n_files(e), n_files);
	phase("preserve files", &t);

	for (size_t i = 0; i < n_sessions; i++)
		ASSERT_OK(luo_engine_handover_session(e, sessions[i]));
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), n_sessions);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_OUTGOING), 0);
	phase("hand over sessions", &t);

	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	phase("encode", &t);
	test_diag("state blob: %zu bytes", size);

	d = scale_engine(builtin);
	ASSERT_OK(luo_state_decode(d, blob, size, 0, NULL));
	phase("decode", &t);
	ASSERT_EQ(luo_engine_n_files(d), n_files);
	ASSERT_EQ(luo_engine_n_sessions(d, LUO_SESSION_INCOMING), n_sessions);
	free(blob);

	/* The decoded engine owns the fds now: the old one lets go without closing. */
	e->borrowed_fds = true;
	luo_engine_free(e);
	phase("free the old engine", &t);

	for (size_t i = 0; i < n_sessions; i++) {
		luo_session *s = NULL;
		size_t n = luo_engine_n_files(d);

		ASSERT_OK(luo_engine_retrieve_session(d, session_name(field, i), 1000, &s));
		ASSERT_EQ(luo_session_n_files(s),
			  n_files / n_sessions + (i < n_files % n_sessions));
		for (uint64_t k = 0; k < luo_session_n_files(s); k++) {
			uint64_t v = 0;
			int fd = -EBADF;

			ASSERT_OK(luo_session_retrieve_fd(s, k, &fd));
			/* Spot-check that each file is still the one preserved. */
			if (i % 997 == 0) {
				ASSERT_EQ(read(fd, &v, sizeof(v)), i ? (ssize_t)sizeof(v) : -1);
				ASSERT_EQ(v, i);
			}
			close(fd);
			retrieved++;
		}
		ASSERT_OK(luo_session_finish(s));
		luo_session_release(s);
		ASSERT_EQ(luo_engine_n_files(d),
			  n - (n_files / n_sessions + (i < n_files % n_sessions)));
	}
	phase("retrieve, finish, release", &t);
	ASSERT_EQ(retrieved, n_files);
	ASSERT_EQ(luo_engine_n_files(d), 0);
	ASSERT_EQ(luo_engine_n_sessions(d, LUO_SESSION_INCOMING), 0);

	luo_engine_free(d);
	free(sessions);
	phase("free", &t);
	test_diag("%-34s %8.3f s", "total", now() - start);
}

TEST(scale_sessions_files_handover_encode_decode_retrieve)
{
	/* The engine's dup of each file, and headroom for the fds in flight. */
	test_need_fds(N_FILES + 4096);
	run_scale(N_SESSIONS, N_FILES, false);
}

/*
 * The full size where fds are short: 100,000 sessions and 200,000 files whose
 * fd slots are numbers only (the engine borrows them and never touches them),
 * handed over by a reboot, encoded and decoded.  Everything but the per-file
 * system calls of the real preserve is exercised at full scale.
 */
TEST(scale_full_size_with_borrowed_fd_slots)
{
	const size_t n_sessions = N_SESSIONS, n_files = N_FILES;
	luo_engine *e = test_engine(), *d = NULL;
	double start = now(), t = start;
	void *blob = NULL, *blob2 = NULL;
	size_t size, size2;

	e->borrowed_fds = true;
	for (size_t i = 0; i < n_sessions; i++) {
		uint8_t name[LUO_NAME_FIELD] = { 0 };
		luo_session *s;

		snprintf((char *)name, sizeof(name), "session-%zu", i);
		ASSERT_OK(luo_engine_create_session(e, name, 0, 1000, &s));
		for (size_t j = 0; j < n_files / n_sessions; j++) {
			struct luo_file *f;
			struct luo_file_id id = { .dev = 1, .ino = 1 + i * 2 + j };

			ASSERT_OK(luo_file_new(s, j, &test_handler, (int)(1000 + i * 2 + j), NULL,
					       0, &f));
			ASSERT_OK(luo_identity_add_known(e, f, &id));
		}
	}
	phase("create sessions, index files", &t);
	ASSERT_EQ(luo_engine_n_files(e), n_files);
	ASSERT_OK(luo_engine_reboot(e));
	phase("reboot: freeze, hand over all", &t);
	ASSERT_EQ(luo_engine_n_sessions(e, LUO_SESSION_INCOMING), n_sessions);
	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	phase("encode", &t);
	test_diag("state: %zu bytes", size);
	ASSERT_OK(luo_engine_new(&d));
	ASSERT_OK(luo_engine_add_handler(d, &test_handler));
	ASSERT_OK(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, NULL));
	phase("decode", &t);
	ASSERT_EQ(luo_engine_n_sessions(d, LUO_SESSION_INCOMING), n_sessions);
	ASSERT_EQ(luo_engine_n_files(d), n_files);
	ASSERT_EQ(luo_engine_update_number(d), 1);
	ASSERT_OK(luo_state_encode(d, NULL, &blob2, &size2));
	ASSERT_EQ(size2, size);
	ASSERT_MEMEQ(blob2, blob, size);
	phase("encode again: identical", &t);
	luo_engine_free(d);
	luo_engine_free(e);
	free(blob);
	free(blob2);
	test_diag("%-34s %8.3f s", "total", now() - start);
}

/* As many files as the hard fd limit allows, with headroom; skips if too few. */
static size_t files_up_to_fd_limit(void)
{
	struct rlimit rl;
	long n_files;

	ASSERT_OK(getrlimit(RLIMIT_NOFILE, &rl));
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)N_FILES + 4096)
		rl.rlim_max = (rlim_t)N_FILES + 4096;
	test_need_fds((long)rl.rlim_max);
	n_files = (long)rl.rlim_max - 4096;
	if (n_files < 1000)
		test_skip("RLIMIT_NOFILE hard limit %ld leaves too few fds", (long)rl.rlim_max);
	return (size_t)n_files;
}

TEST(scale_sessions_with_files_up_to_fd_limit)
{
	run_scale(N_SESSIONS, files_up_to_fd_limit(), false);
}

TEST(scale_builtin_handlers_with_files_up_to_fd_limit)
{
	run_scale(N_SESSIONS, files_up_to_fd_limit(), true);
}

/*
 * What the state decoder gains by indexing each file under the identity the
 * old engine recorded (luo_identity_add_known) instead of computing it again
 * (luo_file_identify: fstat and, for an eventfd, a /proc read).  Both index
 * the decoded files of one engine (decoded borrowing the fds, so neither has
 * indexed them yet); afterwards every dup of a file must be busy.
 */
TEST(scale_decoded_files_indexed_under_known_ids_are_busy)
{
	size_t n_files = files_up_to_fd_limit() / 2, i = 0;
	luo_engine *e = scale_engine(true), *d = scale_engine(true);
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = NULL, *in, *out = NULL;
	struct luo_file_id *ids = calloc(n_files, sizeof(*ids));
	void *blob = NULL;
	size_t size = 0;
	double t;

	ASSERT_TRUE(ids);
	ASSERT_OK(luo_engine_create_session(e, session_name(field, 0), 0, 1000, &s));
	for (size_t j = 0; j < n_files; j++) {
		int fd = eventfd(0, EFD_CLOEXEC);

		ASSERT_TRUE(fd >= 0);
		ASSERT_OK(luo_session_preserve_fd(s, j, fd));
		close(fd);
	}
	LIST_FOREACH (n, &s->files)
		ids[i++] = list_entry(n, struct luo_file, order)->id;
	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	ASSERT_OK(luo_state_decode(d, blob, size, LUO_STATE_BORROW_FDS, NULL));
	free(blob);
	ASSERT_TRUE(d->identity_root == NULL);
	in = luo_engine_find_session(d, LUO_SESSION_INCOMING, "scale-session-0");
	ASSERT_TRUE(in);

	t = now();
	LIST_FOREACH (n, &in->files)
		ASSERT_OK(luo_file_identify(list_entry(n, struct luo_file, order)));
	test_diag("%-34s %8.3f us/file", "index by luo_file_identify",
		  (now() - t) * 1e6 / (double)n_files);
	LIST_FOREACH (n, &in->files)
		luo_identity_remove(d, list_entry(n, struct luo_file, order));
	ASSERT_TRUE(d->identity_root == NULL);

	i = 0;
	t = now();
	LIST_FOREACH (n, &in->files)
		ASSERT_OK(luo_identity_add_known(d, list_entry(n, struct luo_file, order),
						 &ids[i++]));
	test_diag("%-34s %8.3f us/file", "index by luo_identity_add_known",
		  (now() - t) * 1e6 / (double)n_files);

	/* A known id indexes the file as its own identity would: a dup is busy. */
	ASSERT_OK(luo_engine_create_session(d, session_name(field, 1), 0, 1000, &out));
	i = 0;
	LIST_FOREACH (n, &in->files) {
		struct luo_file *f = list_entry(n, struct luo_file, order);
		int fd = fcntl(f->hf.fd, F_DUPFD_CLOEXEC, 3);

		ASSERT_TRUE(fd >= 0);
		ASSERT_ERR(luo_session_preserve_fd(out, i++, fd), -EBUSY);
		close(fd);
		if (i == 64)
			break;
	}
	/* Indexing a file again under its own id replaces its entry: still busy. */
	{
		struct luo_file *a = list_entry(in->files.node.next, struct luo_file, order);
		int fd = fcntl(a->hf.fd, F_DUPFD_CLOEXEC, 3);

		ASSERT_OK(luo_identity_add_known(d, a, &a->id));
		ASSERT_ERR(luo_session_preserve_fd(out, n_files, fd), -EBUSY);
		close(fd);
	}
	luo_engine_free(d);
	luo_engine_free(e);
	free(ids);
}

TEST_MAIN(TEST_CASE(scale_sessions_files_handover_encode_decode_retrieve),
	  TEST_CASE(scale_full_size_with_borrowed_fd_slots),
	  TEST_CASE(scale_sessions_with_files_up_to_fd_limit),
	  TEST_CASE(scale_builtin_handlers_with_files_up_to_fd_limit),
	  TEST_CASE(scale_decoded_files_indexed_under_known_ids_are_busy))
