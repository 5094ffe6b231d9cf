/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod survives its own worker's death
 *
 * Real client processes drive a scripted workload against a real luod
 * (create; preserve a memfd of known bytes, a socket and an eventfd; hand
 * over, by the command or at close; retrieve; retrieve every file and check
 * it; finish; close) while the worker dies: SIGKILLed by the test, or at a
 * named fault point of a test build ($LUOD_FAULT, worker.c), by SIGKILL,
 * SIGSEGV or abort().  After each death the checks are the same:
 *
 *   - every call of every client returned, with its own answer: the clients
 *     speak the raw protocol with a tag of their own per call, so that a lost
 *     reply is a timeout (a failure) and an answer meant for another call is
 *     seen; a reply sent again by a successor (its first sending was not yet
 *     recorded when the worker died) is the previous call's and is counted,
 *     as a client library discards it;
 *   - every acknowledged effect is there: each client retrieves the session
 *     of its previous round and compares every byte, the socket's peer and
 *     the eventfd's counter; at the end the test retrieves each client's last
 *     session the same way;
 *   - nothing unacknowledged half-exists: luod's counts of sessions and files
 *     are exactly what the acknowledged calls made;
 *   - luod's fd table matches its state: its entries in /proc (the keeper's
 *     and the worker's are one table) less what STATUS counts (stdio, luod's
 *     own fds, connections, session sockets, files) are as many as for the
 *     fresh luod (the journal and the keeper's fds);
 *   - `luoctl update` still works, and everything is still there after it.
 *
 * Fault points are given a skip count that makes them fire in the middle of
 * the workload; the points a worker passes only as it starts
 * (worker-start, recover-*) fire in the worker that replaces one the test
 * killed.  Nothing waits on time: the test waits for conditions (a new worker
 * answering STATUS, the clients' progress), each wait bounded.  The one
 * delay, the random kills' pseudo-random pause, decides where in a round a
 * kill lands, not whether the test passes.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "basic/socket-util.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-client.h"

/* A reply later than this is lost: a failure (luod answers in microseconds). */
#define REPLY_TIMEOUT_MS 20000
#define DATA_SIZE 3000
#define MAX_CLIENTS 8

/* ---- a raw client that sees every reply ---- */

static uint32_t tag_seq;
static unsigned n_duplicates;

/*
 * Sends op with arg (size bytes) and fd_in (if >= 0) on sock with a tag of
 * its own, and waits for the reply with that tag: its result (the payload is
 * copied back into arg, error or not; its fd into *ret_fd or closed).  A
 * reply to an earlier call on the socket is a duplicate: counted and dropped.
 * Anything else (no reply in time, a tag never asked) is an error.
 */
static int rcall(int sock, uint32_t op, void *arg, uint32_t size, int fd_in, int *ret_fd)
{
	static uint8_t buf[LUO_WIRE_REPLY_MAX];
	struct luo_wire_request h = { .op = op, .tag = ++tag_seq };
	uint8_t msg[sizeof(h) + LUO_WIRE_REQUEST_MAX];
	int r;

	if (ret_fd)
		*ret_fd = -EBADF;
	if (size > LUO_WIRE_REQUEST_MAX)
		return -EINVAL;
	memcpy(msg, &h, sizeof(h));
	memcpy(msg + sizeof(h), arg, size);
	r = raw_send(sock, msg, sizeof(h) + size, fd_in >= 0 ? &fd_in : NULL, fd_in >= 0 ? 1 : 0);
	if (r < 0)
		return r;
	for (;;) {
		struct pollfd p = { .fd = sock, .events = POLLIN };
		struct luo_wire_reply rep;
		int fds[4];
		size_t n_fds = 0;
		ssize_t n;

		r = poll(&p, 1, REPLY_TIMEOUT_MS);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -ETIMEDOUT;
		n = socket_recv_message(sock, buf, sizeof(buf), fds, ELEMENTSOF(fds), &n_fds,
					MSG_DONTWAIT);
		if (n == -EAGAIN)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0) {
			close_many(fds, n_fds);
			return -ECONNRESET;
		}
		if ((size_t)n < sizeof(rep)) {
			close_many(fds, n_fds);
			return -EBADMSG;
		}
		memcpy(&rep, buf, sizeof(rep));
		if (rep.tag != h.tag) {
			close_many(fds, n_fds);
			if (rep.tag != 0 && rep.tag < h.tag) {
				n_duplicates++;
				continue;
			}
			return -EPROTO;
		}
		memcpy(arg, buf + sizeof(rep), MIN((size_t)size, (size_t)n - sizeof(rep)));
		if (ret_fd && n_fds > 0) {
			*ret_fd = fds[0];
			close_many(fds + 1, n_fds - 1);
		} else
			close_many(fds, n_fds);
		return rep.result;
	}
}

static void set_name(uint8_t field[64], const char *name)
{
	memset(field, 0, 64);
	memcpy(field, name, MIN(strlen(name), (size_t)63));
}

static int r_create(int conn, const char *name, bool hoc, int *ret_fd)
{
	struct luo_wire_create_session c = { .size = sizeof(c),
					     .fd = -1,
					     .flags = hoc ? LUO_SESSION_HANDOVER_ON_CLOSE : 0 };

	set_name(c.name, name);
	return rcall(conn, LIVEUPDATE_IOCTL_CREATE_SESSION, &c, sizeof(c), -1, ret_fd);
}

static int r_retrieve(int conn, const char *name, int *ret_fd)
{
	struct liveupdate_ioctl_retrieve_session c = { .size = sizeof(c), .fd = -1 };

	set_name(c.name, name);
	return rcall(conn, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &c, sizeof(c), -1, ret_fd);
}

static int r_preserve(int s, uint64_t token, int fd)
{
	struct liveupdate_session_preserve_fd c = { .size = sizeof(c), .fd = -1, .token = token };

	return rcall(s, LIVEUPDATE_SESSION_PRESERVE_FD, &c, sizeof(c), fd, NULL);
}

static int r_retrieve_fd(int s, uint64_t token, int *ret_fd)
{
	struct liveupdate_session_retrieve_fd c = { .size = sizeof(c), .fd = -1, .token = token };

	return rcall(s, LIVEUPDATE_SESSION_RETRIEVE_FD, &c, sizeof(c), -1, ret_fd);
}

static int r_finish(int s)
{
	struct liveupdate_session_finish c = { .size = sizeof(c) };

	return rcall(s, LIVEUPDATE_SESSION_FINISH, &c, sizeof(c), -1, NULL);
}

static int r_handover(int s)
{
	struct luo_wire_simple c = { .size = sizeof(c) };

	return rcall(s, LUO_SESSION_HANDOVER, &c, sizeof(c), -1, NULL);
}

static int r_status(int conn, struct luo_wire_status *st)
{
	memset(st, 0, sizeof(*st));
	st->size = sizeof(*st);
	return rcall(conn, LUO_IOCTL_STATUS, st, sizeof(*st), -1, NULL);
}

static int r_update(int conn, struct luo_wire_update *u)
{
	memset(u, 0, sizeof(*u));
	u->size = sizeof(*u);
	return rcall(conn, LUO_IOCTL_UPDATE, u, sizeof(*u), -1, NULL);
}

/* ---- files of known contents ---- */

static void pattern(char *buf, size_t n, int id, int k)
{
	uint32_t x = (uint32_t)id * 7919u + (uint32_t)k * 104729u + 1u;

	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (char)('a' + (x >> 16) % 26);
	}
}

static int make_memfd(int id, int k)
{
	char buf[DATA_SIZE];
	int fd = memfd_create("crash-data", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	pattern(buf, sizeof(buf), id, k);
	if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

static bool memfd_ok(int fd, int id, int k)
{
	char want[DATA_SIZE], got[DATA_SIZE + 1];

	pattern(want, sizeof(want), id, k);
	return pread(fd, got, sizeof(got), 0) == (ssize_t)DATA_SIZE &&
	       memcmp(want, got, DATA_SIZE) == 0;
}

static void session_name(char *buf, size_t size, int id, int k)
{
	snprintf(buf, size, "c%d-%d", id, k);
}

/* ---- the workload ---- */

struct shared {
	volatile int stop;		     /* clients end after their current round */
	volatile int rounds[MAX_CLIENTS];    /* rounds each client completed */
	volatile unsigned dups[MAX_CLIENTS]; /* duplicate replies each one saw */
	volatile int failed[MAX_CLIENTS];    /* a client's check failed (it said why) */
	volatile int update_done;	     /* the updater got its one reply */
	volatile int update_result;	     /* ... and what it said */
	volatile uint64_t restarts_seen;     /* the flooder's last STATUS */
};

static struct shared *shared_new(void)
{
	void *m = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	ASSERT_TRUE(m != MAP_FAILED);
	memset(m, 0, sizeof(struct shared));
	return m;
}

static int total_rounds(const struct shared *sh, int n)
{
	int t = 0;

	for (int i = 0; i < n; i++)
		t += sh->rounds[i];
	return t;
}

#define CHECK(expr)                                                                                \
	do {                                                                                       \
		long long _r = (long long)(expr);                                                  \
		if (_r < 0) {                                                                      \
			fprintf(stderr, "client %d round %d: %s = %lld (%s)\n", id, k, #expr, _r,  \
				strerror((int)-_r));                                               \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)
#define CHECK_TRUE(expr)                                                                           \
	do {                                                                                       \
		if (!(expr)) {                                                                     \
			fprintf(stderr, "client %d round %d: expected %s\n", id, k, #expr);        \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

/*
 * Retrieves session (id, k) on conn and checks all three files: the memfd's
 * bytes, the socket (its peer, if the caller still has it, gets a byte), the
 * eventfd's counter (k + 1); then finishes and closes it.
 */
static int check_session(int conn, int id, int k, int peer)
{
	char name[64], c = 0;
	uint64_t v = 0;
	struct stat st;
	int s = -EBADF, f = -EBADF;

	session_name(name, sizeof(name), id, k);
	CHECK(r_retrieve(conn, name, &s));
	CHECK(s);
	CHECK(r_retrieve_fd(s, 1, &f));
	CHECK_TRUE(f >= 0 && memfd_ok(f, id, k));
	close(f);
	CHECK(r_retrieve_fd(s, 2, &f));
	CHECK_TRUE(f >= 0 && fstat(f, &st) == 0 && S_ISSOCK(st.st_mode));
	if (peer >= 0) {
		CHECK_TRUE(write(f, "x", 1) == 1);
		CHECK_TRUE(read(peer, &c, 1) == 1 && c == 'x');
	}
	close(f);
	CHECK(r_retrieve_fd(s, 3, &f));
	CHECK_TRUE(f >= 0 && read(f, &v, sizeof(v)) == sizeof(v) && v == (uint64_t)k + 1);
	close(f);
	CHECK(r_finish(s));
	close(s);
	return 0;
}

/*
 * One client's life: rounds until sh->stop (at most max_rounds).  Round k
 * creates session (id, k), handover-on-close if k is odd, preserves a memfd,
 * a socket and an eventfd, hands it over (by the command, or by closing it),
 * then retrieves and checks the session of round k - 1.  Its last session
 * stays incoming for the test to check.  Returns 0 if every call returned 0.
 */
static int client_main(const struct test_luod *d, struct shared *sh, int id, int max_rounds)
{
	int conn = -EBADF, prev_peer = -EBADF, k = 0;

	for (k = 0; k < max_rounds && !sh->stop; k++) {
		char name[64];
		int s = -EBADF, m, sp[2], e;
		bool hoc = k % 2 == 1;

		if (conn < 0 || k % 3 == 2) {
			safe_close(conn);
			conn = test_luod_connect(d);
			CHECK(conn);
		}
		session_name(name, sizeof(name), id, k);
		CHECK(r_create(conn, name, hoc, &s));
		CHECK(s);
		m = make_memfd(id, k);
		CHECK(m);
		CHECK(r_preserve(s, 1, m));
		close(m);
		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp));
		CHECK(r_preserve(s, 2, sp[0]));
		close(sp[0]);
		e = eventfd((unsigned)k + 1, EFD_CLOEXEC);
		CHECK(e);
		CHECK(r_preserve(s, 3, e));
		close(e);
		if (!hoc)
			CHECK(r_handover(s));
		close(s);
		if (k > 0) {
			if (check_session(conn, id, k - 1, prev_peer))
				return 1;
			close(prev_peer);
		}
		prev_peer = sp[1];
		if (k % 4 == 3) {
			struct luo_wire_status st;
			CHECK(r_status(conn, &st));
		}
		sh->dups[id] = n_duplicates;
		sh->rounds[id] = k + 1;
	}
	safe_close(prev_peer);
	safe_close(conn);
	return 0;
}

#undef CHECK
#undef CHECK_TRUE

static pid_t fork_client(const struct test_luod *d, struct shared *sh, int id, int max_rounds)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		int r = client_main(d, sh, id, max_rounds);

		if (r)
			sh->failed[id] = 1;
		_exit(r);
	}
	return pid;
}

static void wait_client(pid_t pid)
{
	int status;

	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		test_fail_at(__FILE__, __LINE__, "client %d ended with status 0x%x", (int)pid,
			     status);
}

/* ---- luod ---- */

static void start_luod(struct test_luod *d, const char *fault, const char *log_path)
{
	struct rlimit no_core = { 0, 0 };
	int saved = -EBADF, log = -EBADF;

#ifndef LUO_TEST_FAULT_INJECTION
	if (fault)
		test_skip(
			"luod is built without fault injection (meson setup -Dfault_injection=true)");
#endif
	/* abort() in the worker must not write a core for every case. */
	(void)setrlimit(RLIMIT_CORE, &no_core);
	if (fault)
		ASSERT_OK(setenv("LUOD_FAULT", fault, 1));
	if (log_path) {
		/* luod logs to the stderr it is started with: a file the test reads. */
		log = ASSERT_OK(open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
		saved = ASSERT_OK(fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3));
		ASSERT_OK(dup2(log, STDERR_FILENO));
	}
	test_luod_start(d, (const char *const[]){ "--log-target=stderr", NULL });
	if (log_path) {
		ASSERT_OK(dup2(saved, STDERR_FILENO));
		close(saved);
		close(log);
	}
	unsetenv("LUOD_FAULT");
}

static void read_proc(pid_t pid, const char *file, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		test_fail_at(__FILE__, __LINE__, "open %s: %m", path);
	n = read(fd, buf, size - 1);
	close(fd);
	ASSERT_TRUE(n >= 0);
	buf[n] = 0;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
}

static pid_t parent_of(pid_t pid)
{
	char buf[512], *p;

	read_proc(pid, "stat", buf, sizeof(buf));
	p = strrchr(buf, ')');
	ASSERT_TRUE(p != NULL);
	return (pid_t)atoi(p + 4); /* ") S PPID" */
}

/* Both processes carry their names; the worker is the keeper's own child. */
static void assert_names(const struct test_luod *d, pid_t worker)
{
	char comm[64];

	read_proc(d->pid, "comm", comm, sizeof(comm));
	ASSERT_STREQ(comm, "luod");
	read_proc(worker, "comm", comm, sizeof(comm));
	ASSERT_STREQ(comm, "luod: worker");
	ASSERT_EQ(parent_of(worker), d->pid);
}

/*
 * Waits until a worker other than old answers STATUS on a new connection
 * (the calls wait for it: a request sent to a dead worker is served by its
 * successor).  Returns the new worker's pid.
 */
static pid_t wait_new_worker(const struct test_luod *d, pid_t old, struct luo_wire_status *st)
{
	for (int i = 0; i < 2000; i++) {
		int conn = test_luod_connect(d);

		ASSERT_OK(conn);
		ASSERT_OK(r_status(conn, st));
		close(conn);
		if ((pid_t)st->worker_pid != old) {
			ASSERT_EQ(st->pid, d->pid);
			return (pid_t)st->worker_pid;
		}
		usleep(1000); /* the kill has not landed yet */
	}
	test_fail_at(__FILE__, __LINE__, "worker %d was not replaced", (int)old);
}

static void kill_worker(const struct test_luod *d, pid_t w)
{
	ASSERT_TRUE(w > 0);
	ASSERT_OK(kill(w, SIGKILL));
}

/* Kills the worker that runs now (the keeper's child: a pid no other process can have). */
static void kill_current_worker(const struct test_luod *d)
{
	pid_t w = test_luod_worker_now(d);

	/* Between a worker's death and its successor's start, for a moment, none runs. */
	for (int i = 0; i < 5000 && w == 0; i++) {
		usleep(1000);
		w = test_luod_worker_now(d);
	}
	kill_worker(d, w);
}

static int count_fds(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((de = readdir(dir)))
		n += de->d_name[0] != '.';
	closedir(dir);
	return n;
}

/*
 * The fds luod holds beyond what STATUS counts (the journal, the keeper's
 * signalfd and readiness pipe): a constant of the process pair.  Counted
 * right after a STATUS on conn (which takes in every close made before it),
 * again until two agree (a compaction child's pidfd and memfd come and go).
 */
static int fd_overhead(const struct test_luod *d, int conn)
{
	int last = INT32_MIN;

	for (int i = 0; i < 200; i++) {
		struct luo_wire_status st;
		int n;

		ASSERT_OK(r_status(conn, &st));
		/* The keeper's table is the worker's (CLONE_FILES), and it outlives the
		 * worker that answered (which a fault may kill before the reply left). */
		n = count_fds(d->pid);
		ASSERT_OK(n);
		n -= (int)st.fds_in_use;
		if (n == last)
			return n;
		last = n;
		usleep(2000);
	}
	return last;
}

static void assert_fd_overhead(const struct test_luod *d, int conn, int want)
{
	int got = INT32_MIN;

	/* A compaction may be under way: its two fds are gone when it is. */
	for (int i = 0; i < 500 && got != want; i++) {
		if (i)
			usleep(2000);
		got = fd_overhead(d, conn);
	}
	ASSERT_EQ(got, want);
}

static int run_luoctl(const char *cmd, char *out, size_t size)
{
	char luoctl[512];

	test_build_path("src/cli/luoctl", luoctl, sizeof(luoctl));
	if (out)
		return test_run_command_output((const char *const[]){ luoctl, "--json", cmd, NULL },
					       out, size);
	return test_run_command((const char *const[]){ luoctl, cmd, NULL });
}

/* The number after "key": in a line of JSON. */
static long long json_number(const char *json, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(json, k);
	if (!p)
		test_fail_at(__FILE__, __LINE__, "no %s in %s", key, json);
	return atoll(p + strlen(k));
}

static bool file_contains(const char *path, const char *text)
{
	static char buf[1 << 20];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = 0;
	return strstr(buf, text) != NULL;
}

/* ---- the ledger ---- */

/*
 * What the clients acknowledged is all there and nothing else: each one's
 * last session incoming with its three files, no outgoing session left.
 */
static void assert_counts(int conn, int n_clients)
{
	struct luo_wire_status st;

	ASSERT_OK(r_status(conn, &st));
	ASSERT_EQ(st.n_outgoing, 0);
	ASSERT_EQ(st.n_incoming, n_clients);
	ASSERT_EQ(st.n_files, 3 * n_clients);
}

static void check_ledger(int conn, const struct shared *sh, int n_clients)
{
	for (int id = 0; id < n_clients; id++) {
		ASSERT_TRUE(sh->rounds[id] > 0);
		if (check_session(conn, id, sh->rounds[id] - 1, -EBADF) != 0)
			test_fail_at(__FILE__, __LINE__, "client %d's last session is not whole",
				     id);
	}
	assert_counts(conn, 0);
}

/* ---- every fault point ---- */

enum trigger {
	TRIGGER_NONE,
	TRIGGER_KILL,	/* the test SIGKILLs the worker mid-workload */
	TRIGGER_UPDATE, /* a client asks for an update mid-workload */
	TRIGGER_FLOOD,	/* a client fills the journal's log until it is compacted */
};

#define N_CLIENTS 3
#define N_ROUNDS 6

/* Asks for an update once the clients are halfway; records its one reply. */
static int updater_main(const struct test_luod *d, struct shared *sh)
{
	struct luo_wire_update u;
	struct luo_wire_status st;
	int conn, r;

	for (int i = 0; i < 20000 && total_rounds(sh, N_CLIENTS) < N_CLIENTS * N_ROUNDS / 2; i++)
		usleep(1000);
	conn = test_luod_connect(d);
	if (conn < 0)
		return 1;
	r = r_update(conn, &u);
	if (r == -ETIMEDOUT || r == -EPROTO || r == -ECONNRESET) {
		fprintf(stderr, "update: %s\n", strerror(-r));
		return 1;
	}
	sh->update_result = r;
	sh->update_done = 1;
	/* The next call on the connection gets its own answer. */
	r = r_status(conn, &st);
	close(conn);
	return r < 0;
}

/* Sends big requests (each recorded whole in the journal) until a worker died. */
static int flooder_main(const struct test_luod *d, struct shared *sh)
{
	static uint8_t big[LUO_WIRE_REQUEST_MAX - sizeof(struct luo_wire_request)];
	int conn = test_luod_connect(d);

	if (conn < 0)
		return 1;
	for (int i = 0; i < 20000 && sh->restarts_seen == 0; i++) {
		struct luo_wire_status *st = (struct luo_wire_status *)big;
		int r;

		memset(big, 0, sizeof(big));
		st->size = sizeof(big);
		r = rcall(conn, LUO_IOCTL_STATUS, big, sizeof(big), -1, NULL);
		if (r < 0) {
			fprintf(stderr, "flood: %s\n", strerror(-r));
			return 1;
		}
		sh->restarts_seen = st->n_worker_restarts;
	}
	close(conn);
	return sh->restarts_seen == 0;
}

static void run_fault_case(const char *fault, enum trigger trigger, int want_restarts)
{
	struct shared *sh = shared_new();
	struct luo_wire_status st;
	struct test_luod d;
	pid_t clients[N_CLIENTS], helper = 0, first_worker;
	int conn, overhead;

	start_luod(&d, fault, NULL);
	conn = ASSERT_OK(test_luod_connect(&d));
	overhead = fd_overhead(&d, conn);
	first_worker = test_luod_worker_now(&d);
	ASSERT_OK(r_status(conn, &st));
	ASSERT_EQ(st.n_worker_restarts, 0);

	for (int i = 0; i < N_CLIENTS; i++)
		clients[i] = fork_client(&d, sh, i, N_ROUNDS);
	if (trigger == TRIGGER_UPDATE || trigger == TRIGGER_FLOOD) {
		fflush(stdout);
		helper = fork();
		ASSERT_OK(helper);
		if (helper == 0)
			_exit(trigger == TRIGGER_UPDATE ? updater_main(&d, sh)
							: flooder_main(&d, sh));
	}
	if (trigger == TRIGGER_KILL) {
		for (int i = 0; i < 20000 && total_rounds(sh, N_CLIENTS) < N_CLIENTS * 2; i++)
			usleep(1000);
		ASSERT_TRUE(total_rounds(sh, N_CLIENTS) >= N_CLIENTS * 2);
		kill_current_worker(&d);
	}
	for (int i = 0; i < N_CLIENTS; i++)
		wait_client(clients[i]);
	if (helper)
		wait_client(helper);
	for (int i = 0; i < N_CLIENTS; i++) {
		ASSERT_EQ(sh->rounds[i], N_ROUNDS);
		if (sh->dups[i])
			test_diag("client %d was sent %u replies twice", i, sh->dups[i]);
	}

	/* The fault fired, and the worker was replaced as often as it died. */
	ASSERT_OK(r_status(conn, &st));
	if (want_restarts >= 0)
		ASSERT_EQ(st.n_worker_restarts, want_restarts);
	ASSERT_NE(test_luod_worker_now(&d), first_worker);
	assert_names(&d, test_luod_worker_now(&d));
	if (trigger == TRIGGER_UPDATE) {
		/* One answer, and it tells the truth: done, or nothing changed. */
		ASSERT_TRUE(sh->update_done);
		ASSERT_EQ(st.n_live_updates, sh->update_result == 0 ? 1 : 0);
		if (sh->update_result != 0)
			test_diag("the update answered %s", strerror(-sh->update_result));
	}
	assert_counts(conn, N_CLIENTS);
	assert_fd_overhead(&d, conn, overhead);

	/* Live update still works, and takes everything along. */
	uint64_t updates = st.n_live_updates;
	ASSERT_EQ(run_luoctl("update", NULL, 0), 0);
	ASSERT_OK(r_status(conn, &st));
	ASSERT_EQ(st.n_live_updates, updates + 1);
	assert_names(&d, test_luod_worker_now(&d));
	assert_counts(conn, N_CLIENTS);
	assert_fd_overhead(&d, conn, overhead);
	check_ledger(conn, sh, N_CLIENTS);
	close(conn);
	munmap(sh, sizeof(*sh));
	test_luod_stop(&d);
}

/* ---- 1. a user's kill -9 ---- */

TEST(kill_9_of_the_worker_loses_nothing)
{
	static const char text[] = "state that must outlive a kill -9";
	struct luo_wire_status st;
	struct test_luod d;
	char json[4096];
	pid_t w1, w2;
	int conn, s, m, f;

	start_luod(&d, NULL, NULL);
	conn = ASSERT_OK(test_luod_connect(&d));
	ASSERT_OK(r_create(conn, "precious", true, &s));
	m = ASSERT_OK(cl_memfd(text));
	ASSERT_OK(r_preserve(s, 1, m));
	close(m);
	close(s); /* handed over at close */
	ASSERT_OK(r_status(conn, &st));
	ASSERT_EQ(st.n_incoming, 1);
	w1 = (pid_t)st.worker_pid;
	ASSERT_EQ(w1, test_luod_worker_now(&d));
	assert_names(&d, w1);

	kill_worker(&d, w1);
	/* Asked at once: the new worker answers. */
	ASSERT_OK(r_retrieve(conn, "precious", &s));
	ASSERT_OK(r_retrieve_fd(s, 1, &f));
	ASSERT_TRUE(cl_memfd_has(f, text));
	close(f);

	w2 = wait_new_worker(&d, w1, &st);
	ASSERT_EQ(run_luoctl("status", json, sizeof(json)), 0);
	ASSERT_EQ(json_number(json, "pid"), d.pid);
	ASSERT_EQ(json_number(json, "worker_pid"), w2);
	ASSERT_EQ(json_number(json, "worker_restarts"), 1);
	ASSERT_EQ(test_luod_worker_now(&d), w2);
	assert_names(&d, w2);

	/* Names and parentage hold across a live update too. */
	ASSERT_EQ(run_luoctl("update", NULL, 0), 0);
	ASSERT_EQ(run_luoctl("status", json, sizeof(json)), 0);
	ASSERT_EQ(json_number(json, "pid"), d.pid);
	ASSERT_EQ(json_number(json, "live_updates"), 1);
	ASSERT_EQ(json_number(json, "worker_restarts"), 1);
	assert_names(&d, (pid_t)json_number(json, "worker_pid"));
	ASSERT_OK(r_finish(s));
	close(s);
	close(conn);
	test_luod_stop(&d);
}

/* ---- 2. every fault point ---- */

#define FAULT_TEST(name, fault, trigger, restarts)                                                 \
	TEST(name)                                                                                 \
	{                                                                                          \
		run_fault_case(fault, trigger, restarts);                                          \
	}

/* Points a worker passes as it starts: in the successor of a worker the test killed. */
FAULT_TEST(fault_worker_start, "worker-start@1", TRIGGER_KILL, 2)
FAULT_TEST(fault_recover_replayed, "recover-replayed@1", TRIGGER_KILL, 2)
FAULT_TEST(fault_recover_armed, "recover-armed@1", TRIGGER_KILL, 2)
FAULT_TEST(fault_recover_armed_segv, "recover-armed@1:1:segv", TRIGGER_KILL, 2)
/* The request path and the journal's commit, halfway through the workload. */
FAULT_TEST(fault_request_recorded, "request-recorded@60", TRIGGER_NONE, 1)
FAULT_TEST(fault_request_handled, "request-handled@60", TRIGGER_NONE, 1)
FAULT_TEST(fault_request_handled_segv, "request-handled@60:1:segv", TRIGGER_NONE, 1)
FAULT_TEST(fault_request_taken, "request-taken@60", TRIGGER_NONE, 1)
FAULT_TEST(fault_request_committed, "request-committed@60", TRIGGER_NONE, 1)
FAULT_TEST(fault_commit_before, "commit-before@60", TRIGGER_NONE, 1)
FAULT_TEST(fault_commit_before_abort, "commit-before@60:1:abort", TRIGGER_NONE, 1)
FAULT_TEST(fault_commit_after, "commit-after@80", TRIGGER_NONE, 1)
/* Several points in one run: each fires once, in turn. */
FAULT_TEST(fault_request_path_twice, "request-handled@40,commit-after@120", TRIGGER_NONE, 2)
/* Compaction's switch to the new journal (the log is filled by big requests). */
FAULT_TEST(fault_compact_switch, "compact-switch", TRIGGER_FLOOD, 1)
/* 5. The update path, and the new binary's first worker. */
FAULT_TEST(fault_update_checking, "update-checking", TRIGGER_UPDATE, 1)
FAULT_TEST(fault_update_stop, "update-stop", TRIGGER_UPDATE, 1)
FAULT_TEST(fault_update_stop_abort, "update-stop:1:abort", TRIGGER_UPDATE, 1)
FAULT_TEST(fault_update_committed, "update-committed", TRIGGER_UPDATE, 1)
FAULT_TEST(fault_update_new_worker_start, "worker-start@1", TRIGGER_UPDATE, 1)

/* ---- 3. random kills ---- */

#define RANDOM_CLIENTS 4
/* Below the keeper's storm limit (LUOD_STORM_DEATHS within its window): each
 * seed's luod is killed this often, three seeds make a dozen kills. */
#define RANDOM_KILLS 4

/*
 * Waits until each client has completed more rounds than before[i] (at least
 * one with before NULL).  A wait for progress, not a time limit: a stuck client
 * fails the case only after a minute.
 */
static void wait_each_client_past(const struct shared *sh, const int *before)
{
	for (int id = 0; id < RANDOM_CLIENTS; id++) {
		int want = before ? before[id] + 1 : 1;

		for (int i = 0; i < 300000 && sh->rounds[id] < want && !sh->failed[id]; i++)
			usleep(200);
		/* A client that failed says why on stderr; waiting for it is pointless. */
		if (sh->failed[id])
			test_fail_at(__FILE__, __LINE__, "client %d failed in round %d", id,
				     sh->rounds[id]);
		if (sh->rounds[id] < want)
			test_fail_at(__FILE__, __LINE__, "client %d made no progress in a minute",
				     id);
	}
}

static void random_kills(unsigned seed)
{
	struct shared *sh = shared_new();
	struct luo_wire_status st;
	struct test_luod d;
	pid_t clients[RANDOM_CLIENTS], w;
	int conn, overhead;

	start_luod(&d, NULL, NULL);
	conn = ASSERT_OK(test_luod_connect(&d));
	overhead = fd_overhead(&d, conn);
	w = test_luod_worker_now(&d);
	for (int i = 0; i < RANDOM_CLIENTS; i++)
		clients[i] = fork_client(&d, sh, i, 10000);
	/* Every client under way first: on a busy machine one may not have run yet. */
	wait_each_client_past(sh, NULL);
	for (int kill_no = 0; kill_no < RANDOM_KILLS; kill_no++) {
		/* The moment: after a pseudo-random number (1..8) of rounds of any client. */
		int target = total_rounds(sh, RANDOM_CLIENTS) + 1 + (int)(rand_r(&seed) % 8);

		for (int i = 0; i < 300000 && total_rounds(sh, RANDOM_CLIENTS) < target; i++)
			usleep(200);
		ASSERT_TRUE(total_rounds(sh, RANDOM_CLIENTS) >= target);
		/* ... and a pseudo-random delay within a round, so that kills land anywhere
		 * in it (what the test checks does not depend on where). */
		usleep(rand_r(&seed) % 2000);
		kill_worker(&d, w);
		w = wait_new_worker(&d, w, &st);
	}
	/* One more round each after the last kill, then stop. */
	{
		int before[RANDOM_CLIENTS];

		for (int i = 0; i < RANDOM_CLIENTS; i++)
			before[i] = sh->rounds[i];
		wait_each_client_past(sh, before);
	}
	sh->stop = 1;
	for (int i = 0; i < RANDOM_CLIENTS; i++)
		wait_client(clients[i]);
	for (int i = 0; i < RANDOM_CLIENTS; i++)
		if (sh->dups[i])
			test_diag("client %d was sent %u replies twice", i, sh->dups[i]);
	ASSERT_OK(r_status(conn, &st));
	ASSERT_EQ(st.n_worker_restarts, RANDOM_KILLS);
	assert_counts(conn, RANDOM_CLIENTS);
	assert_fd_overhead(&d, conn, overhead);
	ASSERT_EQ(run_luoctl("update", NULL, 0), 0);
	assert_fd_overhead(&d, conn, overhead);
	check_ledger(conn, sh, RANDOM_CLIENTS);
	close(conn);
	munmap(sh, sizeof(*sh));
	test_luod_stop(&d);
}

TEST(random_kills_seed_1)
{
	random_kills(1);
}

TEST(random_kills_seed_2)
{
	random_kills(0x5eed);
}

TEST(random_kills_seed_3)
{
	random_kills(20261207);
}

/* ---- 4. a request that kills two workers ---- */

TEST(request_that_kills_two_workers_is_answered_eio)
{
	static const char text[] = "preserved on the second try";
	struct luo_wire_status st;
	struct test_luod d;
	int conn, s, m, f, r;

	/* Requests 0 (STATUS) and 1 (CREATE) pass; 2 (PRESERVE) dies, and again when
	 * the next worker runs it. */
	start_luod(&d, "request-handled@2:2", NULL);
	conn = ASSERT_OK(test_luod_connect(&d));
	ASSERT_OK(r_status(conn, &st));
	ASSERT_OK(r_create(conn, "eio", false, &s));
	m = ASSERT_OK(cl_memfd(text));
	ASSERT_ERR(r_preserve(s, 1, m), -EIO);
	/* Dropped, and consistently: the file is not half there.  The retry is new. */
	ASSERT_OK(r_status(conn, &st));
	ASSERT_EQ(st.n_worker_restarts, 2);
	ASSERT_EQ(st.n_files, 0);
	r = r_preserve(s, 1, m);
	ASSERT_TRUE(r == 0 || r == -EEXIST);
	ASSERT_ERR(r_preserve(s, 1, m), -EEXIST);
	close(m);
	ASSERT_OK(r_handover(s));
	close(s);
	ASSERT_OK(r_retrieve(conn, "eio", &s));
	ASSERT_OK(r_retrieve_fd(s, 1, &f));
	ASSERT_TRUE(cl_memfd_has(f, text));
	close(f);
	ASSERT_OK(r_finish(s));
	close(s);
	assert_luod_serves(&d);
	close(conn);
	test_luod_stop(&d);
}

/* ---- 5. kills during recovery, and of the new worker after an update's exec ---- */

/* The test kills the worker; its successor dies as it recovers (it passes
 * recover-armed only in the worker after it). */
TEST(kills_during_recovery_in_a_row)
{
	run_fault_case("recover-replayed@1,recover-armed@1", TRIGGER_KILL, 3);
}

/* An update whose exec'd worker the test kills as soon as it serves. */
TEST(kill_of_the_new_worker_right_after_an_update)
{
	struct luo_wire_status st;
	struct luo_wire_update u;
	struct test_luod d;
	int conn, s, m, f;
	pid_t w1, w2;

	start_luod(&d, NULL, NULL);
	conn = ASSERT_OK(test_luod_connect(&d));
	ASSERT_OK(r_create(conn, "across", false, &s));
	m = ASSERT_OK(cl_memfd("across an update and a kill"));
	ASSERT_OK(r_preserve(s, 1, m));
	close(m);
	ASSERT_OK(r_status(conn, &st));
	w1 = (pid_t)st.worker_pid;
	ASSERT_OK(r_update(conn, &u));
	/* The reply came from the new image's worker. */
	w2 = test_luod_worker_now(&d);
	ASSERT_NE(w2, w1);
	kill_worker(&d, w2);
	wait_new_worker(&d, w2, &st);
	ASSERT_EQ(st.n_live_updates, 1);
	ASSERT_EQ(st.n_worker_restarts, 1);
	ASSERT_EQ(st.n_outgoing, 1);
	ASSERT_OK(r_handover(s));
	close(s);
	ASSERT_OK(r_retrieve(conn, "across", &s));
	ASSERT_OK(r_retrieve_fd(s, 1, &f));
	ASSERT_TRUE(cl_memfd_has(f, "across an update and a kill"));
	close(f);
	ASSERT_OK(r_finish(s));
	close(s);
	ASSERT_EQ(run_luoctl("update", NULL, 0), 0);
	close(conn);
	test_luod_stop(&d);
}

/* ---- 6. a restart storm ---- */

TEST(restart_storm_makes_the_keeper_give_up)
{
	char log[512];
	struct test_luod d;
	int status = 0;
	pid_t w = 0;

	snprintf(log, sizeof(log), "%s/luod.log", test_tmpdir());
	/* The first worker serves (so that the start is seen whatever the machine's
	 * speed); once the test kills it, every worker after it dies as it starts. */
	start_luod(&d, "worker-start@1:1000", log);
	assert_luod_serves(&d);
	kill_current_worker(&d);
	for (int i = 0; i < 20000; i++) {
		w = waitpid(d.pid, &status, WNOHANG);
		if (w == d.pid)
			break;
		usleep(1000);
	}
	ASSERT_EQ(w, d.pid);
	d.pid = 0;
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 4); /* LUOD_EXIT_WORKER_FAILED */
	ASSERT_TRUE(file_contains(log, "giving up"));
}

/* ---- 7. SIGTERM ---- */

TEST(sigterm_drops_and_logs_every_session)
{
	char log[512], line[256];
	struct test_luod d;
	int conn, s1, s2, s3, m;

	snprintf(log, sizeof(log), "%s/luod.log", test_tmpdir());
	start_luod(&d, NULL, log);
	conn = ASSERT_OK(test_luod_connect(&d));
	ASSERT_OK(r_create(conn, "held-open", false, &s1));
	for (int i = 1; i <= 2; i++) {
		m = ASSERT_OK(make_memfd(0, i));
		ASSERT_OK(r_preserve(s1, (uint64_t)i, m));
		close(m);
	}
	ASSERT_OK(r_create(conn, "waiting", false, &s2));
	m = ASSERT_OK(make_memfd(1, 1));
	ASSERT_OK(r_preserve(s2, 1, m));
	close(m);
	ASSERT_OK(r_handover(s2));
	close(s2);
	/* A worker death first: the sessions it drops are the recovered ones. */
	kill_current_worker(&d);
	ASSERT_OK(r_create(conn, "after-kill", false, &s3));
	close(conn);
	test_luod_stop(&d); /* exit 0 */
	/* luod's ends of the sessions are gone with it. */
	{
		struct pollfd p = { .fd = s1, .events = POLLRDHUP };
		ASSERT_EQ(poll(&p, 1, 0), 1);
		ASSERT_TRUE(p.revents & (POLLRDHUP | POLLHUP));
	}
	snprintf(
		line, sizeof(line),
		"warning: shutdown: dropping outgoing session \"held-open\" of uid %u with 2 files",
		(unsigned)getuid());
	ASSERT_TRUE(file_contains(log, line));
	snprintf(line, sizeof(line),
		 "warning: shutdown: dropping incoming session \"waiting\" of uid %u with 1 files",
		 (unsigned)getuid());
	ASSERT_TRUE(file_contains(log, line));
	snprintf(
		line, sizeof(line),
		"warning: shutdown: dropping outgoing session \"after-kill\" of uid %u with 0 files",
		(unsigned)getuid());
	ASSERT_TRUE(file_contains(log, line));
	close(s1);
	close(s3);
}

/* ---- 8. the recursion triggers of the hang-ups, with a worker kill ---- */

/*
 * A child creates handover-on-close sessions name-0 and name-1 (each with a
 * memfd) and exits while luod is stopped, so that both closes come in one
 * batch; the stopped worker is killed meanwhile, so that its successor takes
 * the batch in, as it recovers.
 */
static void batch_close_while_worker_dies(const struct test_luod *d, const char *prefix)
{
	int status, p[2], q[2];
	char byte;
	pid_t pid, w;

	ASSERT_OK(pipe2(p, O_CLOEXEC));
	ASSERT_OK(pipe2(q, O_CLOEXEC));
	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		int c = test_luod_connect(d);

		if (c < 0)
			_exit(1);
		for (int i = 0; i < 2; i++) {
			char name[64];
			int s, m;

			snprintf(name, sizeof(name), "%s-%d", prefix, i);
			m = make_memfd(7, i);
			if (m < 0 || r_create(c, name, true, &s) < 0 || r_preserve(s, 7, m) < 0)
				_exit(2);
			close(m);
		}
		close(q[1]);
		(void)!write(p[1], "r", 1);
		(void)!read(q[0], &byte, 1);
		_exit(0);
	}
	close(p[1]);
	close(q[0]);
	ASSERT_EQ(read(p[0], &byte, 1), 1);
	close(p[0]);
	w = test_luod_worker_now(d);
	test_luod_pause(d, true);
	close(q[1]);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	kill_worker(d, w);
	ASSERT_OK(kill(d->pid, SIGCONT));
}

TEST(batched_waiting_handovers_across_worker_kills)
{
	struct luo_wire_status st;
	struct test_luod d;
	int conn, fds[2];
	pid_t w = 0;

	start_luod(&d, NULL, NULL);
	conn = ASSERT_OK(test_luod_connect(&d));
	/* Two incoming sessions, retrieved and held. */
	for (int i = 0; i < 2; i++) {
		char name[64];
		int s;

		snprintf(name, sizeof(name), "pair-%d", i);
		ASSERT_OK(r_create(conn, name, false, &s));
		ASSERT_OK(r_handover(s));
		close(s);
		ASSERT_OK(r_retrieve(conn, name, &fds[i]));
	}
	w = test_luod_worker_now(&d);
	batch_close_while_worker_dies(&d, "pair");
	w = wait_new_worker(&d, w, &st);
	/* Both wait for their names, still outgoing; then their waiting survives a kill. */
	ASSERT_EQ(st.n_outgoing, 2);
	ASSERT_EQ(st.n_incoming, 2);
	kill_worker(&d, w);
	w = wait_new_worker(&d, w, &st);
	ASSERT_EQ(st.n_outgoing, 2);
	ASSERT_EQ(st.n_worker_restarts, 2);
	/* The retrieved ones finish and close: the waiting ones go over in their place. */
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(r_finish(fds[i]));
		close(fds[i]);
	}
	for (int i = 0; i < 2; i++) {
		char name[64];
		int s, f;

		snprintf(name, sizeof(name), "pair-%d", i);
		ASSERT_OK(r_retrieve(conn, name, &s));
		ASSERT_OK(r_retrieve_fd(s, 7, &f));
		ASSERT_TRUE(memfd_ok(f, 7, i));
		close(f);
		ASSERT_OK(r_finish(s));
		close(s);
	}
	ASSERT_OK(r_status(conn, &st));
	ASSERT_EQ(st.n_outgoing, 0);
	ASSERT_EQ(st.n_incoming, 0);
	ASSERT_EQ(run_luoctl("update", NULL, 0), 0);
	close(conn);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(kill_9_of_the_worker_loses_nothing), TEST_CASE(fault_worker_start),
	  TEST_CASE(fault_recover_replayed), TEST_CASE(fault_recover_armed),
	  TEST_CASE(fault_recover_armed_segv), TEST_CASE(fault_request_recorded),
	  TEST_CASE(fault_request_handled), TEST_CASE(fault_request_handled_segv),
	  TEST_CASE(fault_request_taken), TEST_CASE(fault_request_committed),
	  TEST_CASE(fault_commit_before), TEST_CASE(fault_commit_before_abort),
	  TEST_CASE(fault_commit_after), TEST_CASE(fault_request_path_twice),
	  TEST_CASE(fault_compact_switch), TEST_CASE(fault_update_checking),
	  TEST_CASE(fault_update_stop), TEST_CASE(fault_update_stop_abort),
	  TEST_CASE(fault_update_committed), TEST_CASE(fault_update_new_worker_start),
	  TEST_CASE(random_kills_seed_1), TEST_CASE(random_kills_seed_2),
	  TEST_CASE(random_kills_seed_3), TEST_CASE(request_that_kills_two_workers_is_answered_eio),
	  TEST_CASE(kills_during_recovery_in_a_row),
	  TEST_CASE(kill_of_the_new_worker_right_after_an_update),
	  TEST_CASE(restart_storm_makes_the_keeper_give_up),
	  TEST_CASE(sigterm_drops_and_logs_every_session),
	  TEST_CASE(batched_waiting_handovers_across_worker_kills))
