/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl update, luod's own live update, under load
 *
 * luod holds thousands of files (3,000 eventfds over 30 sessions, each with
 * its own counter value) while several client processes loop on requests
 * (create, preserve, get_name, handover, retrieve, finish) on connections
 * opened before the update.  `luoctl update` re-executes luod in the middle
 * of that stream: every request must be answered, every session and file
 * must come through intact (checked by handing each session over and
 * reading every counter back), the clients' connections must be the same
 * sockets and keep working, and luod must be the same process.
 *
 * Then updates that must roll back with nothing lost: to a file that cannot
 * be executed, to a program that exits at once, and to binaries that refuse
 * the state (see tests/cli/luod-refuse.c).
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli-test.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-test.h"

#define N_SESSIONS 30
#define FILES_PER_SESSION 100
#define N_CLIENTS 4

static struct cli_out o;

static uint64_t counter_of(int session, int file)
{
	return (uint64_t)session * 1000 + (uint64_t)file + 1;
}

struct big_state {
	int luo;
	int s[N_SESSIONS];
};

/* Creates the 30 sessions of 100 eventfds each; luod keeps the only copy of each eventfd. */
static void big_state_create(struct big_state *b)
{
	char name[32];

	b->luo = ASSERT_OK(luo_connect(NULL));
	for (int i = 0; i < N_SESSIONS; i++) {
		snprintf(name, sizeof(name), "big-%02d", i);
		ASSERT_OK(luo_session_create(b->luo, name, 0, &b->s[i]));
		for (int f = 0; f < FILES_PER_SESSION; f++) {
			int e = ASSERT_OK(eventfd((unsigned)counter_of(i, f), EFD_CLOEXEC));
			ASSERT_OK(luo_session_preserve_fd(b->s[i], (uint64_t)f, e));
			close(e);
		}
	}
}

/* Hands every session over and reads every counter back. */
static void big_state_verify_and_close(struct big_state *b)
{
	char name[32], got[LUO_SESSION_NAME_LENGTH];

	for (int i = 0; i < N_SESSIONS; i++) {
		int s;

		snprintf(name, sizeof(name), "big-%02d", i);
		ASSERT_OK(luo_session_get_name(b->s[i], got));
		ASSERT_STREQ(got, name);
		ASSERT_OK(luo_session_handover(b->s[i]));
		close(b->s[i]);
		ASSERT_OK(luo_session_retrieve(b->luo, name, &s));
		for (int f = 0; f < FILES_PER_SESSION; f++) {
			uint64_t v = 0;
			int e;

			ASSERT_OK(luo_session_retrieve_fd(s, (uint64_t)f, &e));
			ASSERT_EQ(read(e, &v, sizeof(v)), (ssize_t)sizeof(v));
			if (v != counter_of(i, f))
				test_fail_at(__FILE__, __LINE__,
					     "session %s file %d: counter %llu, not %llu", name, f,
					     (unsigned long long)v,
					     (unsigned long long)counter_of(i, f));
			close(e);
		}
		ASSERT_OK(luo_session_finish(s));
		close(s);
	}
	close(b->luo);
}

struct client_args {
	int id;
	struct cli_sync started;
	int stop_fd; /* readable when the client should stop */
	int result_fd;
};

static bool should_stop(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 0) > 0;
}

/* One client: a stream of requests on one connection opened before the update. */
static int busy_client(void *arg)
{
	struct client_args *a = arg;
	struct stat before, after;
	char name[64], got[LUO_SESSION_NAME_LENGTH];
	uint64_t n_requests = 0;
	int luo, conn_fd;

	luo = ASSERT_OK(luo_connect(NULL));
	conn_fd = luo;
	ASSERT_OK(fstat(luo, &before));
	for (uint64_t round = 0;; round++) {
		int s, in, m, r;

		snprintf(name, sizeof(name), "client-%d-%llu", a->id, (unsigned long long)round);
		ASSERT_OK(luo_session_create(luo, name, 0, &s));
		m = ASSERT_OK(cli_memfd_with_pattern(64, (uint32_t)round));
		ASSERT_OK(luo_session_preserve_fd(s, round, m));
		close(m);
		ASSERT_OK(luo_session_get_name(s, got));
		ASSERT_STREQ(got, name);
		ASSERT_OK(luo_session_handover(s));
		close(s);
		ASSERT_OK(luo_session_retrieve(luo, name, &in));
		ASSERT_OK(luo_session_get_name(in, got));
		ASSERT_STREQ(got, name);
		ASSERT_OK(luo_session_retrieve_fd(in, round, &m));
		ASSERT_TRUE(cli_fd_has_pattern(m, 64, (uint32_t)round));
		close(m);
		ASSERT_OK(luo_session_finish(in));
		close(in);
		n_requests += 8;
		if (round == 0)
			cli_sync_post(&a->started);
		r = should_stop(a->stop_fd);
		if (r)
			break;
	}
	/* The same connection, never closed or replaced, still working. */
	ASSERT_EQ(luo, conn_fd);
	ASSERT_OK(fstat(luo, &after));
	ASSERT_EQ(before.st_ino, after.st_ino);
	ASSERT_EQ(before.st_dev, after.st_dev);
	int s;
	snprintf(name, sizeof(name), "client-%d-final", a->id);
	ASSERT_OK(luo_session_create(luo, name, 0, &s));
	close(s);
	ASSERT_EQ(write(a->result_fd, &n_requests, sizeof(n_requests)),
		  (ssize_t)sizeof(n_requests));
	close(luo);
	return 0;
}

TEST(update_under_load_keeps_every_request_session_file_and_connection)
{
	struct test_luod d;
	struct big_state b;
	struct client_args c[N_CLIENTS];
	pid_t pids[N_CLIENTS];
	int stop[2], results[2];
	uint64_t total = 0;

	test_need_fds(N_SESSIONS * FILES_PER_SESSION + 1024);
	cli_need_jq();
	test_luod_start(&d, NULL);
	big_state_create(&b);
	ASSERT_OK(pipe2(stop, O_CLOEXEC));
	ASSERT_OK(pipe2(results, O_CLOEXEC));
	for (int i = 0; i < N_CLIENTS; i++) {
		c[i] = (struct client_args){ .id = i, .stop_fd = stop[0], .result_fd = results[1] };
		cli_sync_init(&c[i].started);
		pids[i] = cli_spawn(busy_client, &c[i]);
	}
	for (int i = 0; i < N_CLIENTS; i++)
		ASSERT_TRUE(cli_sync_wait(&c[i].started, 10000));

	LUOCTL(&o, "update");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "update: done") != NULL);
	ASSERT_TRUE(strstr(o.out, "blackout:") != NULL);
	ASSERT_TRUE(strstr(o.out, "rolled back:  no") != NULL);
	/* The journal holds the clients' sessions. */
	ASSERT_TRUE(strstr(o.out, "journal:      ") != NULL);
	ASSERT_TRUE(strstr(o.out, "journal:      0 bytes") == NULL);
	test_diag("%s", o.out);

	/* Let the clients go on a little on the new image, then stop them. */
	usleep(200000);
	LUOCTL(&o, "--json", "update");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".result == \"ok\" and .rolled_back == false and .blackout_usec > 0 and "
			 ".blackout_usec >= .luod_total_usec and .state_size > 0");
	usleep(100000);
	ASSERT_EQ(write(stop[1], "x", 1), 1);
	for (int i = 0; i < N_CLIENTS; i++) {
		uint64_t n = 0;

		ASSERT_EQ(cli_wait(pids[i]), 0);
		ASSERT_EQ(read(results[0], &n, sizeof(n)), (ssize_t)sizeof(n));
		total += n;
		cli_sync_close(&c[i].started);
	}
	test_diag("%llu client requests, all answered", (unsigned long long)total);

	/* luod is the same process, re-executed twice, with every file. */
	ASSERT_EQ(cli_server_pid(d.socket), d.pid);
	LUOCTL(&o, "--json", "status");
	ASSERT_JQ(o.out, ".live_updates == 2 and .update_number == 0");
	ASSERT_JQ(o.out, ".outgoing_sessions == 30 and .files == 3000");
	LUOCTL(&o, "--json", "show", "big-17");
	ASSERT_JQ(o.out, ".sessions[0].files == 100 and .sessions[0].state == \"open\"");
	big_state_verify_and_close(&b);

	close(stop[0]);
	close(stop[1]);
	close(results[0]);
	close(results[1]);
	test_luod_stop(&d);
}

/* What every refused update must leave: luod serving on, the same process, the
 * same number of live updates, every session and file exactly as before. */
static void assert_nothing_lost(struct test_luod *d, struct big_state *b, int live_updates)
{
	char expr[160];

	ASSERT_EQ(cli_server_pid(d->socket), d->pid);
	LUOCTL(&o, "--json", "status");
	ASSERT_EQ(o.status, 0);
	snprintf(expr, sizeof(expr),
		 ".outgoing_sessions == 30 and .files == 3000 and .live_updates == %d",
		 live_updates);
	ASSERT_JQ(o.out, expr);
	big_state_verify_and_close(b);
}

static void write_file(const char *path, const char *content, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	ASSERT_OK(fd);
	ASSERT_EQ(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	ASSERT_OK(chmod(path, mode));
}

/* Starts luod with the big state and runs `luoctl update --exec binary`. */
static void update_to(struct test_luod *d, struct big_state *b, const char *binary)
{
	test_need_fds(N_SESSIONS * FILES_PER_SESSION + 1024);
	cli_need_jq();
	test_luod_start(d, NULL);
	big_state_create(b);
	LUOCTL(&o, "update", "--exec", binary);
}

/* An update to binary that must fail before the blackout: exit 1, nothing lost. */
static void assert_update_aborted(const char *binary)
{
	struct test_luod d;
	struct big_state b;

	update_to(&d, &b, binary);
	ASSERT_EQ(o.status, 1);
	assert_nothing_lost(&d, &b, 0);
	test_luod_stop(&d);
}

TEST(update_to_non_executable_file_is_aborted_with_nothing_lost)
{
	struct test_luod d;
	struct big_state b;
	char path[300];

	snprintf(path, sizeof(path), "%s/not-executable", test_tmpdir());
	write_file(path, "#!/bin/sh\nexit 0\n", 0644);
	update_to(&d, &b, path);
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, "update: failed") != NULL);
	ASSERT_TRUE(strstr(o.err, "goes on serving") != NULL);
	assert_nothing_lost(&d, &b, 0);
	test_luod_stop(&d);
}

TEST(update_to_program_that_exits_1_is_aborted_with_nothing_lost)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/exits-1", test_tmpdir());
	write_file(path, "#!/bin/sh\nexit 1\n", 0755);
	assert_update_aborted(path);
}

TEST(update_to_program_that_claims_success_is_aborted)
{
	/* /bin/true exits 0 but never confirms that it understood the state. */
	assert_update_aborted("/bin/true");
}

TEST(update_to_missing_binary_is_aborted_with_nothing_lost)
{
	assert_update_aborted("/nonexistent/luod");
}

TEST(update_to_binary_refusing_at_check_is_aborted_with_nothing_lost)
{
	char path[512];

	test_build_path("tests/cli/luod-refuse-check", path, sizeof(path));
	assert_update_aborted(path);
}

TEST(update_to_binary_refusing_at_restore_rolls_back_with_nothing_lost)
{
	struct test_luod d;
	struct big_state b;
	char path[512];

	test_build_path("tests/cli/luod-refuse-restore", path, sizeof(path));
	update_to(&d, &b, path);
	/* Refused inside the blackout: handed back to the previous binary by fexecve(). */
	ASSERT_EQ(o.status, 5);
	ASSERT_TRUE(strstr(o.out, "rolled back:  yes") != NULL);
	ASSERT_TRUE(strstr(o.out, "nothing lost") != NULL);
	assert_nothing_lost(&d, &b, 0);

	/* The JSON says so too (here with a path relative to luoctl's directory, which
	 * luod, elsewhere, can only find if luoctl resolves it), and luod still updates
	 * normally afterwards. */
	big_state_create(&b);
	char dir[512];
	test_build_path("tests/cli", dir, sizeof(dir));
	ASSERT_OK(chdir(dir));
	LUOCTL(&o, "--json", "update", "--exec", "./luod-refuse-restore");
	ASSERT_EQ(o.status, 5);
	ASSERT_JQ(o.out, ".result == \"rolled_back\" and .rolled_back == true and .errno > 0");
	ASSERT_JQ(o.out, ".binary | startswith(\"/\") and endswith(\"/luod-refuse-restore\")");
	LUOCTL(&o, "update");
	ASSERT_EQ(o.status, 0);
	assert_nothing_lost(&d, &b, 1);
	test_luod_stop(&d);
}

TEST(update_rejected_by_own_binary_rolls_back_then_succeeds)
{
	struct test_luod d;
	struct big_state b;

	test_need_fds(N_SESSIONS * FILES_PER_SESSION + 1024);
	cli_need_jq();
	/* A test build's fault injection: the binary the first update starts
	 * refuses the journal, once. */
	setenv("LUOD_FAULT", "update-recover-refuse:1:refuse", 1);
	test_luod_start(&d, NULL);
	unsetenv("LUOD_FAULT");
	big_state_create(&b);
	LUOCTL(&o, "update");
	ASSERT_EQ(o.status, 5);
	/* The previous binary took the state back and dropped the switch. */
	LUOCTL(&o, "update");
	ASSERT_EQ(o.status, 0);
	assert_nothing_lost(&d, &b, 1);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(update_under_load_keeps_every_request_session_file_and_connection),
	  TEST_CASE(update_to_non_executable_file_is_aborted_with_nothing_lost),
	  TEST_CASE(update_to_program_that_exits_1_is_aborted_with_nothing_lost),
	  TEST_CASE(update_to_program_that_claims_success_is_aborted),
	  TEST_CASE(update_to_missing_binary_is_aborted_with_nothing_lost),
	  TEST_CASE(update_to_binary_refusing_at_check_is_aborted_with_nothing_lost),
	  TEST_CASE(update_to_binary_refusing_at_restore_rolls_back_with_nothing_lost),
	  TEST_CASE(update_rejected_by_own_binary_rolls_back_then_succeeds))
