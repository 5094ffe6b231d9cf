/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: many clients, live updates under load, a reboot: an exact ledger
 *
 * N client processes, each on its own connection, run rounds as a service
 * restarting over and over would: retrieve the session the previous round
 * handed over, check its file, finish it; create the next one, preserve a
 * memfd naming the client and the round, hand it over (half the clients by
 * closing a handover-on-close session, which the next round retrieves at
 * once: the close rule under load).  Meanwhile luod is live updated every
 * LUOD_LOAD_UPDATE_MS.  When the time is up each client finishes its round
 * and opens one last session, which it holds open for the reboot.  What luod
 * holds must then be exactly what the clients were told it holds: per
 * client, the last session it handed over (taken and checked), and after
 * the reboot (the simulated kexec) the one it held open, now incoming, with
 * its one file and the right bytes; nothing else.  Any request a client did
 * not expect to fail fails the case.
 *
 * In the suite: 100 clients for 6 s (LUOD_LOAD_CLIENTS, LUOD_LOAD_SECONDS
 * change it); bench/run runs it at 1,000 clients for 30 s.  It prints one
 * line "# load: ..." with what it did, and with LUOD_LOAD_JSON=PATH writes it
 * as JSON too.  Nothing about time is asserted.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "luo/luo.h"
#include "harness.h"
#include "luod-client.h"

#define MAX_CLIENTS 4096

struct shared {
	atomic_int stop;
	atomic_int failed;
	atomic_int holding; /* clients holding their last session open */
	atomic_int rebooted;
	/* Rounds each client completed: its session of round rounds-1 is handed over. */
	atomic_long rounds[MAX_CLIENTS];
	atomic_long requests[MAX_CLIENTS];
	char why[256];
};

static long env_long(const char *name, long def, long min, long max)
{
	const char *e = getenv(name);
	char *end;
	long v;

	if (!e || !*e)
		return def;
	v = strtol(e, &end, 10);
	if (*end || v < min || v > max)
		test_fail_at(__FILE__, __LINE__, "%s=%s: not a number in [%ld, %ld]", name, e, min,
			     max);
	return v;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void session_name(char *buf, size_t size, int id, long round)
{
	snprintf(buf, size, "load-%d-%ld", id, round);
}

static void file_text(char *buf, size_t size, int id, long round)
{
	snprintf(buf, size, "client %d round %ld", id, round);
}

/* The session a client holds open at the reboot; round -1 names it. */
static void last_name(char *buf, size_t size, int id)
{
	snprintf(buf, size, "load-%d-last", id);
}

static _Noreturn void client_fail(struct shared *sh, int id, const char *what, int r)
{
	if (atomic_fetch_add(&sh->failed, 1) == 0)
		snprintf(sh->why, sizeof(sh->why), "client %d: %s: %s", id, what, strerror(-r));
	_exit(1);
}

/* Retrieves, checks and finishes the session of the client's round (-1: its last). */
static int take_round(int conn, int id, long round, atomic_long *requests)
{
	char name[64], text[64];
	int s, f, r;

	if (round < 0)
		last_name(name, sizeof(name), id);
	else
		session_name(name, sizeof(name), id, round);
	file_text(text, sizeof(text), id, round);
	r = cl_retrieve(conn, name, &s);
	(*requests)++;
	if (r < 0)
		return r;
	r = cl_retrieve_fd(s, 1, &f);
	(*requests)++;
	if (r >= 0) {
		r = cl_memfd_has(f, text) ? 0 : -EILSEQ;
		close(f);
	}
	if (r >= 0) {
		r = cl_finish(s);
		(*requests)++;
	}
	close(s);
	return r;
}

static _Noreturn void client_main(const struct test_luod *d, struct shared *sh, int id)
{
	uint64_t flags = (id % 2) ? LUO_SESSION_HANDOVER_ON_CLOSE : 0;
	atomic_long *requests = &sh->requests[id];
	int conn = test_luod_connect(d), r;

	if (conn < 0)
		client_fail(sh, id, "connect", conn);
	for (long round = 0; !atomic_load(&sh->stop); round++) {
		char name[64], text[64];
		int s, m;

		if (round > 0) {
			r = take_round(conn, id, round - 1, requests);
			if (r < 0)
				client_fail(sh, id, "taking the previous round's session", r);
		}
		session_name(name, sizeof(name), id, round);
		file_text(text, sizeof(text), id, round);
		r = cl_create(conn, name, flags, &s);
		(*requests)++;
		if (r < 0)
			client_fail(sh, id, "create", r);
		m = cl_memfd(text);
		if (m < 0)
			client_fail(sh, id, "memfd", m);
		r = cl_preserve(s, 1, m);
		(*requests)++;
		close(m);
		if (r < 0)
			client_fail(sh, id, "preserve", r);
		if (!flags) {
			r = cl_handover(s);
			(*requests)++;
			if (r < 0)
				client_fail(sh, id, "handover", r);
		}
		close(s);
		atomic_store(&sh->rounds[id], round + 1);
	}
	/* One session held open across the reboot, as a running program's is. */
	{
		char name[64], text[64];
		int s, m;

		last_name(name, sizeof(name), id);
		file_text(text, sizeof(text), id, -1);
		r = cl_create(conn, name, 0, &s);
		if (r < 0)
			client_fail(sh, id, "create of the last session", r);
		m = cl_memfd(text);
		if (m < 0)
			client_fail(sh, id, "memfd", m);
		r = cl_preserve(s, 1, m);
		close(m);
		if (r < 0)
			client_fail(sh, id, "preserve in the last session", r);
		atomic_fetch_add(&sh->holding, 1);
		while (!atomic_load(&sh->rebooted))
			usleep(10000);
		close(s);
	}
	close(conn);
	_exit(0);
}

/* Waits until every client holds its last session; fails if one died. */
static void wait_holding(struct shared *sh, const pid_t *pids, long n)
{
	while (atomic_load(&sh->holding) < n) {
		for (long i = 0; i < n; i++) {
			int status;

			if (waitpid(pids[i], &status, WNOHANG) == pids[i])
				test_fail_at(__FILE__, __LINE__, "%s",
					     sh->why[0] ? sh->why : "a client died");
		}
		usleep(10000);
	}
}

/*
 * A live update to the build's luod, answered within a minute: under load the
 * state check shares the CPUs with every client, and may take its 10 s.
 */
static int update(int conn, const char *luod, uint64_t *ret_ms)
{
	struct luo_wire_update u;
	uint64_t t0 = now_ms();
	int r = cl_update_wait(conn, luod, &u, 60000);

	*ret_ms = now_ms() - t0;
	return r;
}

TEST(many_clients_updates_and_a_reboot_keep_an_exact_ledger)
{
	long n_clients = env_long("LUOD_LOAD_CLIENTS", 100, 1, MAX_CLIENTS);
	long seconds = env_long("LUOD_LOAD_SECONDS", 6, 1, 3600);
	long update_ms = env_long("LUOD_LOAD_UPDATE_MS", 2000, 100, 3600000);
	const char *json = getenv("LUOD_LOAD_JSON");
	struct luo_wire_status st;
	struct luo_wire_reboot rb;
	struct test_luod d;
	struct shared *sh;
	char luod[512];
	long updates = 0, rounds = 0, requests = 0, update_ms_max = 0;
	uint64_t t0, t_end, next_update;
	pid_t *pids;
	int conn;

	/* luod holds a connection, up to two sessions and two files per client. */
	test_need_fds(n_clients * 6 + 1024);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(sh != MAP_FAILED);
	pids = calloc((size_t)n_clients, sizeof(*pids));
	ASSERT_TRUE(pids != NULL);
	test_build_path("src/daemon/luod", luod, sizeof(luod));
	test_luod_start(&d, (const char *const[]){ "--max-connections", "8192", NULL });
	conn = test_luod_connect(&d);
	ASSERT_OK(conn);

	for (long i = 0; i < n_clients; i++) {
		pids[i] = fork();
		ASSERT_OK(pids[i]);
		if (pids[i] == 0)
			client_main(&d, sh, (int)i);
	}
	t0 = now_ms();
	t_end = t0 + (uint64_t)seconds * 1000;
	next_update = t0 + (uint64_t)update_ms;
	while (now_ms() < t_end && !atomic_load(&sh->failed)) {
		uint64_t t = now_ms();

		if (t >= next_update) {
			uint64_t ms = 0;
			int r = update(conn, luod, &ms);

			if (r < 0)
				test_fail_at(__FILE__, __LINE__, "update %ld: %s", updates + 1,
					     strerror(-r));
			updates++;
			update_ms_max = MAX(update_ms_max, (long)ms);
			next_update = now_ms() + (uint64_t)update_ms;
			continue;
		}
		usleep((useconds_t)(MIN(next_update, t_end) - t) * 1000);
	}
	atomic_store(&sh->stop, 1);
	test_diag("load: %ld live updates done; clients finishing their rounds", updates);
	wait_holding(sh, pids, n_clients);
	test_diag("load: every client holds its last session; checking the ledger");

	/* Before the reboot: each client's last handed-over round, and its held session. */
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.n_outgoing, (uint64_t)n_clients);
	ASSERT_EQ(st.n_incoming, (uint64_t)n_clients);
	ASSERT_EQ(st.n_files, 2 * (uint64_t)n_clients);
	for (long i = 0; i < n_clients; i++) {
		long last = atomic_load(&sh->rounds[i]);
		atomic_long k = 0;
		int r;

		ASSERT_TRUE(last > 0);
		r = take_round(conn, (int)i, last - 1, &k);
		if (r < 0)
			test_fail_at(__FILE__, __LINE__, "client %ld's round %ld: %s", i, last - 1,
				     strerror(-r));
		rounds += last;
		requests += atomic_load(&sh->requests[i]);
	}

	/* The reboot: the sessions held open, and nothing else. */
	test_diag("load: ledger of handed-over sessions exact; rebooting");
	ASSERT_OK(cl_reboot(conn, &rb));
	atomic_store(&sh->rebooted, 1);
	for (long i = 0; i < n_clients; i++) {
		int status;

		ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			test_fail_at(__FILE__, __LINE__, "%s",
				     sh->why[0] ? sh->why : "a client died");
	}
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.n_outgoing, 0);
	ASSERT_EQ(st.n_incoming, (uint64_t)n_clients);
	ASSERT_EQ(st.n_files, (uint64_t)n_clients);
	for (long i = 0; i < n_clients; i++) {
		atomic_long k = 0;
		int r = take_round(conn, (int)i, -1, &k);

		if (r < 0)
			test_fail_at(__FILE__, __LINE__,
				     "client %ld's held session after the reboot: %s", i,
				     strerror(-r));
	}
	ASSERT_OK(cl_status(conn, &st));
	ASSERT_EQ(st.n_outgoing + st.n_incoming + st.n_files, 0);
	ASSERT_TRUE(updates >= 1);

	test_diag("load: %ld clients, %ld s, %ld live updates (the longest answered in %ld ms), "
		  "%ld rounds, %ld requests, 1 reboot: ledger exact",
		  n_clients, seconds, updates, update_ms_max, rounds, requests);
	if (json) {
		FILE *f = fopen(json, "we");

		ASSERT_TRUE(f != NULL);
		fprintf(f,
			"{\"clients\": %ld, \"seconds\": %ld, \"update_ms\": %ld, \"updates\": %ld, "
			"\"rounds\": %ld, \"requests\": %ld, \"reboots\": 1, "
			"\"requests_per_second\": %.0f, \"update_answer_ms_max\": %ld, "
			"\"ledger_exact\": true}\n",
			n_clients, seconds, update_ms, updates, rounds, requests,
			(double)requests / (double)seconds, update_ms_max);
		fclose(f);
	}
	close(conn);
	test_luod_stop(&d);
	free(pids);
	munmap(sh, sizeof(*sh));
}

TEST_MAIN(TEST_CASE(many_clients_updates_and_a_reboot_keep_an_exact_ledger))
