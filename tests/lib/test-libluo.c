/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: libluo against a real luod
 *
 * Every case starts the build's luod on a socket in its own directory and
 * drives it through the public API only: each function with its success and
 * each of its errors, returned fds checked for O_CLOEXEC, and the whole life
 * of a session (create, preserve, hand over, retrieve, finish).  The last
 * case runs libluo's ioctl path under the preload shim.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "basic/socket-util.h"
#include "basic/macro.h"
#include "harness.h"
#include "protocol/protocol.h"
#include "luo/luo.h"
#include "luod-test.h"

static void start(struct test_luod *d)
{
	char luod[512];

	test_build_path("src/daemon/luod", luod, sizeof(luod));
	if (access(luod, X_OK) < 0)
		test_skip("luod is not built (%s)", luod);
	test_luod_start(d, NULL);
}

static bool is_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	return flags >= 0 && (flags & FD_CLOEXEC);
}

static int memfd_with(const char *data)
{
	int fd = memfd_create("libluo-test", MFD_CLOEXEC);

	ASSERT_OK(fd);
	ASSERT_EQ(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	return fd;
}

static void assert_memfd_holds(int fd, const char *data)
{
	char buf[256] = { 0 };

	ASSERT_EQ(pread(fd, buf, sizeof(buf) - 1, 0), (ssize_t)strlen(data));
	ASSERT_STREQ(buf, data);
}

static int closed_fd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);

	ASSERT_OK(fd);
	close(fd);
	return fd;
}

/* Creates an outgoing session name with one memfd under token 1, hands it
 * over and returns the (now stale) fd. */
static int handed_over(int luo, const char *name, const char *data)
{
	int s, m = memfd_with(data);

	ASSERT_OK(luo_session_create(luo, name, 0, &s));
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	close(m);
	ASSERT_OK(luo_session_handover(s));
	return s;
}

/* ---- luo_connect ---- */

/* A connection counts only if luod answers on it (connect() alone completes
 * from the listen backlog). */
static void assert_served(int luo, const char *name)
{
	int s;

	ASSERT_OK(luo_session_create(luo, name, 0, &s));
	close(s);
	close(luo);
}

TEST(connect_finds_luod_by_path_env_and_runtime_dir)
{
	struct test_luod d;
	char dir[512], link[600];
	int fd;

	start(&d);
	fd = ASSERT_OK(luo_connect(d.socket));
	ASSERT_TRUE(is_cloexec(fd));
	assert_served(fd, "by-path");

	/* test_luod_start() set $LUO_SOCKET. */
	assert_served(ASSERT_OK(luo_connect(NULL)), "by-env");

	/* Without $LUO_SOCKET: $XDG_RUNTIME_DIR/luo/luod.sock. */
	snprintf(dir, sizeof(dir), "%s/rt", d.dir);
	ASSERT_OK(mkdir(dir, 0700));
	snprintf(link, sizeof(link), "%s/rt/luo", d.dir);
	ASSERT_OK(mkdir(link, 0700));
	snprintf(link, sizeof(link), "%s/rt/luo/luod.sock", d.dir);
	ASSERT_OK(symlink(d.socket, link));
	unsetenv("LUO_SOCKET");
	setenv("XDG_RUNTIME_DIR", dir, 1);
	assert_served(ASSERT_OK(luo_connect(NULL)), "by-runtime-dir");
	/* An empty $LUO_SOCKET counts as unset. */
	setenv("LUO_SOCKET", "", 1);
	assert_served(ASSERT_OK(luo_connect(NULL)), "by-empty-env");

	test_luod_stop(&d);
}

TEST(connect_reports_a_missing_luod)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[512], longpath[200];
	int s;

	snprintf(path, sizeof(path), "%s/nothing.sock", test_tmpdir());
	ASSERT_ERR(luo_connect(path), -ENOENT);

	/* A socket file nobody listens on any more. */
	snprintf(path, sizeof(path), "%s/stale.sock", test_tmpdir());
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ASSERT_OK(s);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	ASSERT_OK(bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	close(s);
	ASSERT_ERR(luo_connect(path), -ECONNREFUSED);

	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = 0;
	ASSERT_ERR(luo_connect(longpath), -ENAMETOOLONG);
	ASSERT_ERR(luo_connect(""), -EINVAL);
}

/* ---- luo_session_create ---- */

TEST(create_returns_a_cloexec_session_fd_named_as_asked)
{
	char name[LUO_SESSION_NAME_LENGTH];
	struct test_luod d;
	int luo, s;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "svc", 0, &s));
	ASSERT_TRUE(s >= 0);
	ASSERT_TRUE(is_cloexec(s));
	ASSERT_OK(luo_session_get_name(s, name));
	ASSERT_STREQ(name, "svc");
	close(s);
	close(luo);
	test_luod_stop(&d);
}

TEST(create_checks_its_arguments)
{
	char n63[64], n64[65];
	struct test_luod d;
	int luo, s = -7, f;

	memset(n63, 'a', 63);
	n63[63] = 0;
	memset(n64, 'b', 64);
	n64[64] = 0;
	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));

	ASSERT_ERR(luo_session_create(-1, "svc", 0, &s), -EBADF);
	ASSERT_ERR(luo_session_create(closed_fd(), "svc", 0, &s), -EBADF);
	ASSERT_ERR(luo_session_create(luo, NULL, 0, &s), -EINVAL);
	ASSERT_ERR(luo_session_create(luo, "", 0, &s), -EINVAL);
	ASSERT_ERR(luo_session_create(luo, n64, 0, &s), -EINVAL);
	ASSERT_ERR(luo_session_create(luo, "svc", 0, NULL), -EINVAL);
	ASSERT_ERR(luo_session_create(luo, "svc", 2, &s), -EINVAL);
	ASSERT_EQ(s, -7);
	/* A file that is neither luod nor /dev/liveupdate. */
	f = ASSERT_OK(memfd_create("x", MFD_CLOEXEC));
	ASSERT_ERR(luo_session_create(f, "svc", 0, &s), -ENOTTY);
	close(f);

	/* 63 bytes is the longest name; any non-NUL byte is allowed. */
	ASSERT_OK(luo_session_create(luo, n63, 0, &s));
	close(s);
	ASSERT_OK(luo_session_create(luo, "\x01\xff name/with:odd bytes", 0, &s));
	close(s);

	close(luo);
	test_luod_stop(&d);
}

TEST(create_of_a_taken_name_is_eexist)
{
	struct test_luod d;
	int luo, s, s2 = -7;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "svc", 0, &s));
	ASSERT_ERR(luo_session_create(luo, "svc", 0, &s2), -EEXIST);
	ASSERT_EQ(s2, -7);
	close(s);
	close(luo);
	test_luod_stop(&d);
}

TEST(closing_an_outgoing_session_aborts_it)
{
	struct test_luod d;
	int luo, s, m;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	m = memfd_with("x");
	ASSERT_OK(luo_session_create(luo, "svc", 0, &s));
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	close(s);
	/* luod sees the hang-up asynchronously: the name frees up shortly. */
	for (int i = 0; i < 200; i++) {
		int r = luo_session_create(luo, "svc", 0, &s);
		if (r != -EEXIST) {
			ASSERT_OK(r);
			break;
		}
		usleep(5000);
	}
	/* The memfd is free again: it can be preserved in the new session. */
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	ASSERT_ERR(luo_session_retrieve(luo, "svc", &m), -ENOENT);
	close(s);
	close(m);
	close(luo);
	test_luod_stop(&d);
}

/* ---- the whole life of a session ---- */

TEST(handover_then_retrieve_gives_the_same_file_back)
{
	char name[LUO_SESSION_NAME_LENGTH];
	struct test_luod d;
	int luo, old, s, m, m2;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	old = handed_over(luo, "svc", "hello, successor");

	ASSERT_OK(luo_session_retrieve(luo, "svc", &s));
	ASSERT_TRUE(is_cloexec(s));
	ASSERT_OK(luo_session_get_name(s, name));
	ASSERT_STREQ(name, "svc");
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &m));
	ASSERT_TRUE(is_cloexec(m));
	assert_memfd_holds(m, "hello, successor");
	/* A second retrieve is the same open file. */
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &m2));
	ASSERT_OK(lseek(m, 3, SEEK_SET));
	ASSERT_EQ(lseek(m2, 0, SEEK_CUR), 3);
	close(m2);

	ASSERT_OK(luo_session_finish(s));
	ASSERT_OK(luo_session_finish(s)); /* a second finish does nothing */
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &m2), -ENOENT);
	assert_memfd_holds(m, "hello, successor");

	close(m);
	close(s);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

/* The caller's fd table, filled up to a lowered RLIMIT_NOFILE: no free slot. */
struct full_table {
	struct rlimit old;
	int fds[256];
	size_t n;
};

static void fill_fd_table(struct full_table *t)
{
	struct rlimit rl;
	int probe = fcntl(0, F_DUPFD_CLOEXEC, 0);

	ASSERT_OK(probe);
	close(probe);
	if (probe >= 128)
		test_skip("fd %d is free only past 128: cannot fill the table quickly", probe);
	ASSERT_OK(getrlimit(RLIMIT_NOFILE, &t->old));
	rl = t->old;
	rl.rlim_cur = 128;
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &rl));
	t->n = 0;
	for (;;) {
		int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);

		if (fd < 0) {
			ASSERT_EQ(errno, EMFILE);
			break;
		}
		ASSERT_TRUE(t->n < ELEMENTSOF(t->fds));
		t->fds[t->n++] = fd;
	}
}

static void unfill_fd_table(struct full_table *t)
{
	close_many(t->fds, t->n);
	t->n = 0;
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &t->old));
}

/* The kernel's rule: a retrieve that cannot give the caller an fd does not
 * happen (EMFILE), and the session is still there for the next try. */
TEST(retrieve_into_a_full_fd_table_is_emfile_and_loses_nothing)
{
	struct full_table t;
	struct test_luod d;
	int luo, old, s = -EBADF, m;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	old = handed_over(luo, "kept", "still here");
	fill_fd_table(&t);
	ASSERT_ERR(luo_session_retrieve(luo, "kept", &s), -EMFILE);
	ASSERT_ERR(luo_session_retrieve(luo, "kept", &s), -EMFILE);
	unfill_fd_table(&t);
	ASSERT_OK(luo_session_retrieve(luo, "kept", &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &m));
	assert_memfd_holds(m, "still here");
	close(m);
	close(s);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

TEST(create_into_a_full_fd_table_is_emfile_and_makes_nothing)
{
	struct full_table t;
	struct test_luod d;
	int luo, s = -EBADF;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	fill_fd_table(&t);
	ASSERT_ERR(luo_session_create(luo, "never", LUO_SESSION_HANDOVER_ON_CLOSE, &s), -EMFILE);
	unfill_fd_table(&t);
	/* Nothing was made: not the name (no EEXIST), nor a session handed over. */
	ASSERT_ERR(luo_session_retrieve(luo, "never", &s), -ENOENT);
	ASSERT_OK(luo_session_create(luo, "never", 0, &s));
	close(s);
	close(luo);
	test_luod_stop(&d);
}

/* A file retrieve the caller cannot receive is no failed retrieve either. */
TEST(retrieve_fd_into_a_full_fd_table_is_emfile_and_keeps_the_file)
{
	struct full_table t;
	struct test_luod d;
	int luo, old, s, m = -EBADF;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	old = handed_over(luo, "file", "the file");
	ASSERT_OK(luo_session_retrieve(luo, "file", &s));
	fill_fd_table(&t);
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &m), -EMFILE);
	unfill_fd_table(&t);
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &m));
	assert_memfd_holds(m, "the file");
	close(m);
	ASSERT_OK(luo_session_finish(s));
	close(s);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

/* A program removes a session it no longer wants: the incoming one nobody
 * retrieved, or its handover-on-close one waiting for that name. */
TEST(drop_removes_a_session_nobody_holds)
{
	struct test_luod d;
	int luo, old, s, next, m;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_ERR(luo_session_drop(luo, "nothing"), -ENOENT);
	ASSERT_ERR(luo_session_drop(luo, ""), -EINVAL);
	ASSERT_ERR(luo_session_drop(-1, "x"), -EBADF);

	/* An incoming session waiting to be retrieved. */
	old = handed_over(luo, "unwanted", "stale state");
	ASSERT_OK(luo_session_drop(luo, "unwanted"));
	ASSERT_ERR(luo_session_retrieve(luo, "unwanted", &s), -ENOENT);
	ASSERT_ERR(luo_session_drop(luo, "unwanted"), -ENOENT);
	close(old);

	/* A retrieved, open session is its holder's to close. */
	old = handed_over(luo, "held", "held state");
	ASSERT_OK(luo_session_retrieve(luo, "held", &s));
	ASSERT_ERR(luo_session_drop(luo, "held"), -EBUSY);
	/* And so is an open outgoing session. */
	ASSERT_OK(luo_session_create(luo, "held", LUO_SESSION_HANDOVER_ON_CLOSE, &next));
	m = memfd_with("next state");
	ASSERT_OK(luo_session_preserve_fd(next, 1, m));
	close(m);
	/* Closed while "held" is still incoming: it waits for the name. */
	close(next);
	/* The incoming one goes first, and the waiting one takes its place. */
	ASSERT_OK(luo_session_finish(s));
	close(s);
	ASSERT_OK(luo_session_retrieve(luo, "held", &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &m));
	assert_memfd_holds(m, "next state");
	close(m);
	close(s);
	close(old);

	/* Dropping never takes a session from its holder: once the holder lets the
	 * incoming one go, the waiting one takes the name and is dropped in turn. */
	old = handed_over(luo, "twice", "first");
	ASSERT_OK(luo_session_retrieve(luo, "twice", &s));
	ASSERT_OK(luo_session_create(luo, "twice", LUO_SESSION_HANDOVER_ON_CLOSE, &next));
	close(next);
	ASSERT_ERR(luo_session_drop(luo, "twice"), -EBUSY); /* the retrieved one is held */
	ASSERT_OK(luo_session_finish(s));
	close(s);
	ASSERT_OK(luo_session_drop(luo, "twice")); /* the one handed over at last */
	ASSERT_ERR(luo_session_drop(luo, "twice"), -ENOENT);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

/* Names are per uid; a session's owner is the uid that made it. */
TEST(get_owner_names_the_sessions_uid)
{
	struct test_luod d;
	int luo, s, other;
	uid_t uid = 12345;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "owned", 0, &s));
	ASSERT_OK(luo_session_get_owner(s, &uid));
	ASSERT_EQ(uid, geteuid());
	ASSERT_ERR(luo_session_get_owner(s, NULL), -EINVAL);
	ASSERT_ERR(luo_session_get_owner(-1, &uid), -EBADF);
	other = ASSERT_OK(memfd_create("not-a-session", MFD_CLOEXEC));
	ASSERT_ERR(luo_session_get_owner(other, &uid), -ENOTTY);
	close(other);
	close(s);
	close(luo);
	test_luod_stop(&d);
}

TEST(handover_on_close_keeps_the_session_for_the_successor)
{
	struct test_luod d;
	int luo, s = -1, m, r = -ENOENT;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	m = memfd_with("kept");
	ASSERT_OK(luo_session_create(luo, "svc", LUO_SESSION_HANDOVER_ON_CLOSE, &s));
	ASSERT_OK(luo_session_preserve_fd(s, 9, m));
	close(m);
	close(s);
	for (int i = 0; i < 200 && r == -ENOENT; i++) {
		r = luo_session_retrieve(luo, "svc", &s);
		if (r == -ENOENT)
			usleep(5000);
	}
	ASSERT_OK(r);
	ASSERT_OK(luo_session_retrieve_fd(s, 9, &m));
	assert_memfd_holds(m, "kept");
	close(m);
	close(s);
	close(luo);
	test_luod_stop(&d);
}

/*
 * A holder of the memfd adds a seal after the handover: the successor still
 * gets the file, with its bytes and with the seals as they are now (the
 * file's, not a copy's).  Retrieval never fails because seals changed.
 */
TEST(seals_added_after_handover_keep_the_file)
{
	struct test_luod d;
	int luo, s, m, got, seals;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	m = memfd_create("sealed-later", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	ASSERT_OK(m);
	ASSERT_EQ(write(m, "kept", 4), 4);
	ASSERT_OK(luo_session_create(luo, "seals", 0, &s));
	ASSERT_OK(luo_session_preserve_fd(s, 3, m));
	ASSERT_OK(luo_session_handover(s));
	close(s);
	ASSERT_OK(fcntl(m, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK));
	ASSERT_OK(luo_session_retrieve(luo, "seals", &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 3, &got));
	assert_memfd_holds(got, "kept");
	seals = fcntl(got, F_GET_SEALS);
	ASSERT_EQ(seals & (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK),
		  F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK);
	ASSERT_OK(luo_session_finish(s));
	close(got);
	close(s);
	close(m);
	close(luo);
	test_luod_stop(&d);
}

TEST(commands_on_a_handed_over_fd_are_estale)
{
	char name[LUO_SESSION_NAME_LENGTH];
	struct test_luod d;
	int luo, old, m, fd = -7;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	old = handed_over(luo, "svc", "x");
	m = memfd_with("y");
	ASSERT_ERR(luo_session_preserve_fd(old, 2, m), -ESTALE);
	ASSERT_ERR(luo_session_retrieve_fd(old, 1, &fd), -ESTALE);
	ASSERT_ERR(luo_session_finish(old), -ESTALE);
	ASSERT_ERR(luo_session_get_name(old, name), -ESTALE);
	ASSERT_ERR(luo_session_handover(old), -ESTALE);
	ASSERT_EQ(fd, -7);
	close(m);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

/* ---- errors of the session commands ---- */

TEST(preserve_errors_are_the_kernel_ones)
{
	struct test_luod d;
	int luo, s, s2, m, m2, null, dupm;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "a", 0, &s));
	ASSERT_OK(luo_session_create(luo, "b", 0, &s2));
	m = memfd_with("1");
	m2 = memfd_with("2");

	ASSERT_OK(luo_session_preserve_fd(s, 0, m)); /* token 0 is a token */
	ASSERT_ERR(luo_session_preserve_fd(s, 0, m2), -EEXIST);
	ASSERT_OK(luo_session_preserve_fd(s2, 0, m2)); /* tokens are per session */
	ASSERT_ERR(luo_session_preserve_fd(s, 1, m), -EBUSY);
	ASSERT_ERR(luo_session_preserve_fd(s2, 1, m), -EBUSY);
	dupm = dup(m);
	ASSERT_ERR(luo_session_preserve_fd(s, 2, dupm), -EBUSY);
	close(dupm);

	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	ASSERT_OK(null);
	ASSERT_ERR(luo_session_preserve_fd(s, 3, null), -ENOENT);
	close(null);

	ASSERT_ERR(luo_session_preserve_fd(s, 4, closed_fd()), -EBADF);
	/* An O_PATH fd is no open file to the kernel either. */
	int opath = open("/proc/self/exe", O_PATH | O_CLOEXEC);
	ASSERT_OK(opath);
	ASSERT_ERR(luo_session_preserve_fd(s, 4, opath), -EBADF);
	close(opath);
	ASSERT_ERR(luo_session_preserve_fd(s, 4, -1), -EBADF);
	ASSERT_ERR(luo_session_preserve_fd(-1, 4, m), -EBADF);
	ASSERT_ERR(luo_session_preserve_fd(closed_fd(), 4, m), -EBADF);

	close(m);
	close(m2);
	close(s);
	close(s2);
	close(luo);
	test_luod_stop(&d);
}

TEST(incoming_and_outgoing_commands_refuse_the_other_kind)
{
	struct test_luod d;
	int luo, out, old, in, m, fd = -7;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "out", 0, &out));
	old = handed_over(luo, "in", "x");
	ASSERT_OK(luo_session_retrieve(luo, "in", &in));
	m = memfd_with("m");

	/* Outgoing sessions take files; incoming ones give them back. */
	ASSERT_ERR(luo_session_retrieve_fd(out, 1, &fd), -EINVAL);
	ASSERT_ERR(luo_session_finish(out), -EINVAL);
	ASSERT_ERR(luo_session_preserve_fd(in, 2, m), -EINVAL);
	ASSERT_ERR(luo_session_handover(in), -EINVAL);
	ASSERT_EQ(fd, -7);

	close(m);
	close(in);
	close(old);
	close(out);
	close(luo);
	test_luod_stop(&d);
}

TEST(retrieve_errors_are_the_kernel_ones)
{
	struct test_luod d;
	int luo, old, in, in2 = -7, fd = -7;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_ERR(luo_session_retrieve(luo, "nobody", &in), -ENOENT);
	old = handed_over(luo, "svc", "x");
	ASSERT_OK(luo_session_retrieve(luo, "svc", &in));
	ASSERT_ERR(luo_session_retrieve(luo, "svc", &in2), -EINVAL); /* retrieved once */
	ASSERT_ERR(luo_session_retrieve_fd(in, 12345, &fd), -ENOENT);
	ASSERT_EQ(in2, -7);
	ASSERT_EQ(fd, -7);

	ASSERT_ERR(luo_session_retrieve(-1, "svc", &in2), -EBADF);
	ASSERT_ERR(luo_session_retrieve(luo, "", &in2), -EINVAL);
	ASSERT_ERR(luo_session_retrieve(luo, NULL, &in2), -EINVAL);
	ASSERT_ERR(luo_session_retrieve(luo, "svc", NULL), -EINVAL);
	ASSERT_ERR(luo_session_retrieve_fd(in, 1, NULL), -EINVAL);
	ASSERT_ERR(luo_session_retrieve_fd(-1, 1, &fd), -EBADF);
	ASSERT_ERR(luo_session_finish(-1), -EBADF);
	ASSERT_ERR(luo_session_finish(closed_fd()), -EBADF);
	ASSERT_ERR(luo_session_handover(-1), -EBADF);
	ASSERT_ERR(luo_session_get_name(-1, (char[64]){ 0 }), -EBADF);
	ASSERT_ERR(luo_session_get_name(in, NULL), -EINVAL);

	/* Open fds that are no session: the kernel's answer to a foreign ioctl,
	 * and nothing is written to them. */
	int sp[2], m = memfd_with("not a session");
	char b[8];
	ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp));
	ASSERT_ERR(luo_session_finish(m), -ENOTTY);
	ASSERT_ERR(luo_session_preserve_fd(sp[0], 1, m), -ENOTTY);
	ASSERT_ERR(luo_session_retrieve_fd(sp[0], 1, &fd), -ENOTTY);
	ASSERT_ERR(luo_session_handover(sp[0]), -ENOTTY);
	ASSERT_ERR(recv(sp[1], b, sizeof(b), MSG_DONTWAIT) < 0 ? -errno : 0, -EAGAIN);
	close(sp[0]);
	close(sp[1]);
	close(m);

	/* Closing a retrieved session ends it: the name is gone. */
	close(in);
	for (int i = 0; i < 200; i++) {
		int r = luo_session_retrieve(luo, "svc", &in2);
		if (r == -ENOENT)
			break;
		ASSERT_ERR(r, -EINVAL);
		usleep(5000);
	}
	ASSERT_ERR(luo_session_retrieve(luo, "svc", &in2), -ENOENT);

	close(old);
	close(luo);
	test_luod_stop(&d);
}

TEST(handover_of_a_name_already_waiting_is_eexist)
{
	struct test_luod d;
	int luo, old, s;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	old = handed_over(luo, "svc", "x");
	ASSERT_OK(luo_session_create(luo, "svc", 0, &s)); /* separate namespaces */
	ASSERT_ERR(luo_session_handover(s), -EEXIST);
	close(s);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

/* ---- luo_fd_is_session ---- */

TEST(fd_is_session_tells_sessions_from_other_fds)
{
	struct test_luod d;
	int luo, s, dup_s, sp[2], f, m;
	char path[512];

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "svc", 0, &s));
	dup_s = dup(s);
	ASSERT_OK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp));
	snprintf(path, sizeof(path), "%s/plain", d.dir);
	f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_OK(f);
	m = memfd_with("m");

	ASSERT_EQ(luo_fd_is_session(s), 1);
	ASSERT_EQ(luo_fd_is_session(dup_s), 1);
	ASSERT_EQ(luo_fd_is_session(sp[0]), 0);
	ASSERT_EQ(luo_fd_is_session(luo), 0);
	ASSERT_EQ(luo_fd_is_session(f), 0);
	ASSERT_EQ(luo_fd_is_session(m), 0);
	ASSERT_ERR(luo_fd_is_session(closed_fd()), -EBADF);
	ASSERT_ERR(luo_fd_is_session(-1), -EBADF);

	close(m);
	close(f);
	close(sp[0]);
	close(sp[1]);
	close(dup_s);
	close(s);
	close(luo);
	test_luod_stop(&d);
}

/* ---- sharing ---- */

struct preserver {
	int session;
	uint64_t first;
	int failures;
};

static void *preserve_many(void *userdata)
{
	struct preserver *p = userdata;

	for (uint64_t t = p->first; t < p->first + 50; t++) {
		int e = eventfd(0, EFD_CLOEXEC);

		if (e < 0 || luo_session_preserve_fd(p->session, t, e) < 0)
			p->failures++;
		if (e >= 0)
			close(e);
	}
	return NULL;
}

TEST(threads_sharing_a_session_fd_each_get_their_answer)
{
	struct preserver p[4];
	pthread_t t[4];
	struct test_luod d;
	int luo, s, fd;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "svc", 0, &s));
	for (int i = 0; i < 4; i++) {
		p[i] = (struct preserver){ .session = s, .first = (uint64_t)i * 1000 };
		ASSERT_OK(-pthread_create(&t[i], NULL, preserve_many, &p[i]));
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		ASSERT_EQ(p[i].failures, 0);
	}
	ASSERT_OK(luo_session_handover(s));
	close(s);
	ASSERT_OK(luo_session_retrieve(luo, "svc", &s));
	for (int i = 0; i < 4; i++) {
		ASSERT_OK(luo_session_retrieve_fd(s, (uint64_t)i * 1000 + 49, &fd));
		close(fd);
	}
	close(s);
	close(luo);
	test_luod_stop(&d);
}

/* ---- the ioctl path, under the preload shim ---- */

/* Runs `luoctl reboot` outside the shim: the simulated kexec. */
static int luoctl_reboot(void)
{
	char luoctl[512];
	int status;
	pid_t pid;

	if (!getenv("LUO_BUILD_ROOT"))
		return -1;
	snprintf(luoctl, sizeof(luoctl), "%s/src/cli/luoctl", getenv("LUO_BUILD_ROOT"));
	if (access(luoctl, X_OK) < 0)
		return 1; /* no luoctl: the incoming half cannot be reached */
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		unsetenv("LD_PRELOAD");
		execl(luoctl, luoctl, "reboot", (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	return 0;
}

/* The body of the shim case, run in a program with the shim preloaded. */
static int run_under_shim(void)
{
	char name[LUO_SESSION_NAME_LENGTH];
	int dev, s, s2, m, fd, r;

	dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return 10;
	if (luo_session_create(dev, "k", LUO_SESSION_HANDOVER_ON_CLOSE, &s) != -EOPNOTSUPP)
		return 11;
	if (luo_session_create(dev, "k", 0, &s) < 0 || !is_cloexec(s))
		return 12;
	if (luo_session_create(dev, "k", 0, &s2) != -EEXIST)
		return 13;
	m = memfd_with("via ioctl");
	if (luo_session_preserve_fd(s, 5, m) < 0)
		return 14;
	if (luo_session_preserve_fd(s, 5, m) != -EEXIST)
		return 15;
	if (luo_session_get_name(s, name) < 0 || strcmp(name, "k") != 0)
		return 16;
	if (luo_session_handover(s) != -EOPNOTSUPP)
		return 17;
	if (luo_session_retrieve_fd(s, 5, &fd) != -EINVAL)
		return 18;
	if (luo_session_finish(s) != -EINVAL)
		return 19;
	if (luo_session_retrieve(dev, "nobody", &s2) != -ENOENT)
		return 20;
	close(m);

	/* Batches go one ioctl per file: a failure leaves the files before it
	 * preserved, since the kernel cannot take one back out. */
	int b[3] = { memfd_with("b0"), memfd_with("b1"), memfd_with("b2") };
	uint64_t bt[3] = { 6, 5, 7 };
	size_t failed = 99;

	if (luo_session_preserve_fds(s, 3, bt, b, &failed) != -EEXIST || failed != 1)
		return 28;
	if (luo_session_preserve_fd(s, 9, b[0]) != -EBUSY)
		return 29;
	bt[1] = 8;
	if (luo_session_preserve_fds(s, 2, bt + 1, b + 1, &failed) < 0)
		return 30;
	for (int i = 0; i < 3; i++)
		close(b[i]);

	/* After the (simulated) kexec, the incoming half. */
	r = luoctl_reboot();
	if (r > 0) {
		close(s);
		close(dev);
		return 0;
	}
	if (r < 0)
		return 21;
	if (luo_session_get_name(s, name) != -ESTALE)
		return 22;
	if (luo_session_retrieve(dev, "k", &s2) < 0 || !is_cloexec(s2))
		return 23;
	if (luo_session_retrieve_fd(s2, 5, &fd) < 0 || !is_cloexec(fd))
		return 24;
	char buf[32] = { 0 };
	if (pread(fd, buf, sizeof(buf) - 1, 0) != 9 || strcmp(buf, "via ioctl") != 0)
		return 25;
	uint64_t rt[4] = { 5, 6, 8, 7 };
	int rf[4];
	if (luo_session_retrieve_fds(s2, 4, rt, rf, &failed) < 0)
		return 31;
	memset(buf, 0, sizeof(buf));
	if (pread(rf[1], buf, sizeof(buf) - 1, 0) != 2 || strcmp(buf, "b0") != 0 ||
	    !is_cloexec(rf[3]))
		return 32;
	for (int i = 0; i < 4; i++)
		close(rf[i]);
	rt[2] = 99;
	failed = 0;
	if (luo_session_retrieve_fds(s2, 4, rt, rf, &failed) != -ENOENT || failed != 2)
		return 33;
	if (luo_session_finish(s2) < 0)
		return 26;
	if (luo_session_retrieve_fd(s2, 5, &m) != -ENOENT)
		return 27;
	close(fd);
	close(s2);
	close(s);
	close(dev);
	return 0;
}

TEST(ioctl_path_works_under_the_preload_shim)
{
	char shim[512], self[512];
	struct test_luod d;
	int status;
	pid_t pid;

#ifndef LUO_TEST_HOOKS
	test_skip("libluo's ioctl path is forced only in test builds (-Dfault_injection=true)");
#endif

	test_build_path("src/preload/luo-preload.so", shim, sizeof(shim));
	if (access(shim, R_OK) < 0)
		test_skip("the preload shim is not built (%s)", shim);
	start(&d);
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	ASSERT_TRUE(k > 0);
	self[k] = 0;

	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		const char *argv[] = { self, "--shim-child", NULL };

		dup2(STDERR_FILENO, STDOUT_FILENO);
		setenv("LD_PRELOAD", shim, 1);
		setenv("LUO_LIB_FORCE_IOCTL", "1", 1);
		/* A sanitizer runtime must otherwise come first in the library list. */
		setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=1", 1);
		execv(self, (char *const *)argv);
		_exit(127);
	}
	ASSERT_OK(waitpid(pid, &status, 0));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		test_fail_at(__FILE__, __LINE__, "the libluo program under the shim failed: 0x%x",
			     status);
	test_luod_stop(&d);
}

/* ---- timeouts ---- */

TEST(set_timeout_checks_its_argument)
{
	ASSERT_ERR(luo_set_timeout(-1), -EINVAL);
	ASSERT_ERR(luo_set_timeout(-30000), -EINVAL);
	ASSERT_OK(luo_set_timeout(0));
	ASSERT_OK(luo_set_timeout(1));
	ASSERT_OK(luo_set_timeout(30000));
}

/*
 * A stopped luod: every call ends with ETIMEDOUT at the configured limit
 * instead of blocking; once luod runs again, the next calls get their own
 * answers (not the late ones to the calls that timed out).
 */
TEST(calls_to_a_stopped_luod_time_out)
{
	char name[LUO_SESSION_NAME_LENGTH];
	struct test_luod d;
	int luo, s, s2 = -1, m;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "stopped", 0, &s));
	m = memfd_with("data");

	ASSERT_OK(luo_set_timeout(100));
	test_luod_pause(&d, true);
	ASSERT_ERR(luo_session_preserve_fd(s, 1, m), -ETIMEDOUT);
	ASSERT_ERR(luo_session_get_name(s, name), -ETIMEDOUT);
	ASSERT_ERR(luo_session_create(luo, "while-stopped", 0, &s2), -ETIMEDOUT);
	ASSERT_EQ(s2, -1);
	test_luod_pause(&d, false);

	/* Without a limit now: a busy machine must not fail the case. */
	ASSERT_OK(luo_set_timeout(0));
	ASSERT_OK(luo_session_get_name(s, name));
	ASSERT_STREQ(name, "stopped");
	ASSERT_OK(luo_session_create(luo, "after", 0, &s2));
	ASSERT_OK(luo_session_get_name(s2, name));
	ASSERT_STREQ(name, "after");
	/* The preserve that timed out was carried out late: the token is taken. */
	ASSERT_ERR(luo_session_preserve_fd(s, 1, m), -EEXIST);

	close(s2);
	close(m);
	close(s);
	close(luo);
	test_luod_stop(&d);
}

/* A SOCK_SEQPACKET socket that is not luod's: ENOTTY at once, never a wait. */
TEST(a_foreign_seqpacket_socket_is_enotty)
{
	char name[LUO_SESSION_NAME_LENGTH];
	int sp[2], s = -1, m;

	ASSERT_OK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp));
	m = memfd_with("m");
	/* No limit: a call that waited for an answer would hang the case. */
	ASSERT_OK(luo_set_timeout(0));
	ASSERT_ERR(luo_session_create(sp[0], "x", 0, &s), -ENOTTY);
	ASSERT_ERR(luo_session_retrieve(sp[0], "x", &s), -ENOTTY);
	ASSERT_ERR(luo_session_preserve_fd(sp[0], 1, m), -ENOTTY);
	ASSERT_ERR(luo_session_retrieve_fd(sp[0], 1, &s), -ENOTTY);
	ASSERT_ERR(luo_session_finish(sp[0]), -ENOTTY);
	ASSERT_ERR(luo_session_get_name(sp[1], name), -ENOTTY);
	ASSERT_ERR(luo_session_handover(sp[1]), -ENOTTY);
	ASSERT_EQ(luo_fd_is_session(sp[0]), 0);
	ASSERT_EQ(s, -1);
	/* Nothing was sent to the peer. */
	ASSERT_ERRNO(recv(sp[1], name, sizeof(name), MSG_DONTWAIT), EAGAIN);
	close(m);
	close(sp[0]);
	close(sp[1]);
}

/* ---- the library's interface ---- */

TEST(library_exports_only_versioned_luo_symbols)
{
	static const char *const public[] = {
		"luo_connect",
		"luo_session_create",
		"luo_session_retrieve",
		"luo_session_preserve_fd",
		"luo_session_retrieve_fd",
		"luo_session_finish",
		"luo_session_get_name",
		"luo_session_handover",
		"luo_fd_is_session",
	};
	static const char *const hidden[] = {
		"luo_wire_call", "luo_wire_request_parse", "socket_send_message", "fd_read_link",
		"check_name",
	};
	char path[512];
	void *h;

	test_build_path("src/lib/libluo.so.0", path, sizeof(path));
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		test_fail_at(__FILE__, __LINE__, "dlopen %s: %s", path, dlerror());
	for (size_t i = 0; i < sizeof(public) / sizeof(public[0]); i++)
		if (!dlvsym(h, public[i], "LUO_0.1"))
			test_fail_at(__FILE__, __LINE__, "%s@LUO_0.1 is not exported", public[i]);
	for (size_t i = 0; i < 2; i++) {
		const char *since_0_2 = i == 0 ? "luo_set_timeout" : "luo_session_drop";

		if (!dlvsym(h, since_0_2, "LUO_0.2"))
			test_fail_at(__FILE__, __LINE__, "%s@LUO_0.2 is not exported", since_0_2);
	}
	for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++)
		if (dlsym(h, hidden[i]))
			test_fail_at(__FILE__, __LINE__, "%s leaks out of libluo", hidden[i]);
	dlclose(h);
}

TEST(man_page_documents_every_public_function)
{
	char path[512], line[512], section[128];
	static char page[65536];
	size_t n, found = 0;
	FILE *f;

	test_source_path("man/libluo.3", path, sizeof(path));
	f = fopen(path, "re");
	ASSERT_TRUE(f);
	n = fread(page, 1, sizeof(page) - 1, f);
	page[n] = 0;
	fclose(f);

	test_source_path("include/luo/luo.h", path, sizeof(path));
	f = fopen(path, "re");
	ASSERT_TRUE(f);
	while (fgets(line, sizeof(line), f)) {
		char name[100];

		if (sscanf(line, "int %99[a-z_](", name) != 1 || strncmp(name, "luo_", 4) != 0)
			continue;
		found++;
		/* A description and an errno list: two sections named after it. */
		snprintf(section, sizeof(section), ".SS %s()\n", name);
		const char *first = strstr(page, section);
		if (!first || !strstr(first + 1, section))
			test_fail_at(__FILE__, __LINE__, "libluo(3) lacks the sections of %s()",
				     name);
	}
	fclose(f);
	/* The nine of LUO_0.1 and those added since. */
	ASSERT_TRUE(found >= 10);
}

/*
 * A waiter runs in a child whose "connection to luod" is one end of a
 * socketpair; the test relays each of its requests to a real connection and
 * the reply back.  So the test knows how many times the waiter asked, and can
 * change things between two tries, without sleeps: what it does after
 * relaying an -ENOENT reply happens while the waiter is waiting.
 */
struct waiter {
	pid_t pid;
	int relay; /* the test's end of the waiter's connection */
	int luod;  /* the test's connection to luod that the requests go to */
	unsigned n_requests;
};

static int64_t monotonic_msec(void)
{
	struct timespec ts;

	ASSERT_OK(clock_gettime(CLOCK_MONOTONIC, &ts));
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The waiter child: waits for name; with data, checks that the session has
 * it under token 1 and finishes it; without, expects -ETIMEDOUT. */
static _Noreturn void waiter_main(int luo, const char *name, int timeout_ms, const char *data)
{
	char buf[64] = { 0 };
	int s = -7, m, r;

	r = luo_session_retrieve_wait(luo, name, timeout_ms, &s);
	if (!data)
		_exit(r == -ETIMEDOUT && s == -7 ? 0 : 1);
	if (r < 0 || !is_cloexec(s))
		_exit(2);
	if (luo_session_retrieve_fd(s, 1, &m) < 0)
		_exit(3);
	if (pread(m, buf, sizeof(buf) - 1, 0) < 0 || strcmp(buf, data) != 0)
		_exit(4);
	if (luo_session_finish(s) < 0)
		_exit(5);
	_exit(0);
}

static void waiter_start(struct waiter *w, const struct test_luod *d, const char *name,
			 int timeout_ms, const char *data)
{
	int sp[2];

	ASSERT_OK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp));
	*w = (struct waiter){ .luod = ASSERT_OK(test_luod_connect(d)) };
	fflush(stdout);
	w->pid = ASSERT_OK(fork());
	if (w->pid == 0) {
		close(sp[1]);
		close(w->luod);
		waiter_main(sp[0], name, timeout_ms, data);
	}
	close(sp[0]);
	w->relay = sp[1];
}

/* Relays the waiter's next request and luod's reply; returns the reply's
 * result, or 1 when the waiter hung up instead of asking. */
static int relay_one(struct waiter *w)
{
	static uint8_t buf[LUO_WIRE_REPLY_MAX];
	struct iovec iov = { .iov_base = buf };
	int fds[SOCKET_MAX_FDS], result;
	size_t n_fds = 0;
	ssize_t k;

	k = socket_recv_message(w->relay, buf, sizeof(buf), fds, SOCKET_MAX_FDS, &n_fds, 0);
	if (k == 0)
		return 1;
	ASSERT_OK(k);
	w->n_requests++;
	iov.iov_len = (size_t)k;
	k = socket_send_message(w->luod, &iov, 1, fds, n_fds);
	close_many(fds, n_fds);
	ASSERT_OK(k);

	k = socket_recv_message(w->luod, buf, sizeof(buf), fds, SOCKET_MAX_FDS, &n_fds, 0);
	ASSERT_OK(k);
	ASSERT_TRUE(k >= (ssize_t)sizeof(struct luo_wire_reply));
	memcpy(&result, buf + offsetof(struct luo_wire_reply, result), sizeof(result));
	iov.iov_len = (size_t)k;
	k = socket_send_message(w->relay, &iov, 1, fds, n_fds);
	close_many(fds, n_fds);
	ASSERT_OK(k);
	return result;
}

/* Relays until the waiter hangs up; fails the case unless it exited 0. */
static void waiter_finish(struct waiter *w)
{
	int status;

	while (relay_one(w) != 1)
		;
	ASSERT_OK(waitpid(w->pid, &status, 0));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		test_fail_at(__FILE__, __LINE__, "the waiter failed: 0x%x", status);
	close(w->relay);
	close(w->luod);
}

TEST(retrieve_wait_returns_at_once_when_the_session_is_there)
{
	struct test_luod d;
	struct waiter w;
	int luo, old, s = -7;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	old = handed_over(luo, "svc", "already there");

	waiter_start(&w, &d, "svc", -1, "already there");
	ASSERT_EQ(relay_one(&w), 0);
	waiter_finish(&w);
	ASSERT_EQ(w.n_requests, 1);

	/* No wait allowed, and none needed. */
	close(old);
	old = handed_over(luo, "svc2", "x");
	ASSERT_OK(luo_session_retrieve_wait(luo, "svc2", 0, &s));
	ASSERT_TRUE(is_cloexec(s));
	close(s);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

TEST(retrieve_wait_waits_for_a_handover_during_the_wait)
{
	struct test_luod d;
	struct waiter w;
	int luo, old;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	waiter_start(&w, &d, "svc", -1, "handed over late");
	/* The waiter asked, and the session was not there yet. */
	ASSERT_ERR(relay_one(&w), -ENOENT);
	old = handed_over(luo, "svc", "handed over late");
	/* Its next try, after the hand-over, gets it. */
	ASSERT_EQ(relay_one(&w), 0);
	waiter_finish(&w);
	ASSERT_EQ(w.n_requests, 2);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

TEST(retrieve_wait_gets_the_session_of_a_predecessor_that_exits)
{
	struct test_luod d;
	struct waiter w;
	int ready[2], go[2], status, r;
	char c = 0;
	pid_t pred;

	start(&d);
	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	ASSERT_OK(pipe2(go, O_CLOEXEC));
	fflush(stdout);
	pred = ASSERT_OK(fork());
	if (pred == 0) {
		/* The predecessor: its session exists from its start, flagged so that
		 * its exit (or crash) hands it over. */
		int luo = luo_connect(NULL), s, m = memfd_with("from the predecessor");

		if (luo < 0 ||
		    luo_session_create(luo, "svc", LUO_SESSION_HANDOVER_ON_CLOSE, &s) < 0 ||
		    luo_session_preserve_fd(s, 1, m) < 0 || write(ready[1], &c, 1) != 1 ||
		    read(go[0], &c, 1) != 1)
			_exit(1);
		_exit(0);
	}
	close(ready[1]);
	close(go[0]);
	ASSERT_EQ(read(ready[0], &c, 1), 1);

	/* While the predecessor runs, its session is outgoing: not retrievable. */
	waiter_start(&w, &d, "svc", -1, "from the predecessor");
	ASSERT_ERR(relay_one(&w), -ENOENT);
	ASSERT_EQ(write(go[1], &c, 1), 1);
	ASSERT_OK(waitpid(pred, &status, 0));
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* luod takes the exit in as a hang-up, in its own time: a few more tries. */
	while ((r = relay_one(&w)) == -ENOENT)
		;
	ASSERT_EQ(r, 0);
	waiter_finish(&w);
	ASSERT_TRUE(w.n_requests >= 2);
	close(ready[0]);
	close(go[1]);
	test_luod_stop(&d);
}

TEST(retrieve_wait_times_out_not_before_its_deadline)
{
	struct test_luod d;
	int luo, s = -7, out;
	int64_t t0, t1;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	/* An outgoing session of the name is not an incoming one. */
	ASSERT_OK(luo_session_create(luo, "svc", 0, &out));

	t0 = monotonic_msec();
	ASSERT_ERR(luo_session_retrieve_wait(luo, "svc", 30, &s), -ETIMEDOUT);
	t1 = monotonic_msec();
	ASSERT_TRUE(t1 - t0 >= 30);
	ASSERT_EQ(s, -7);
	close(out);
	close(luo);
	test_luod_stop(&d);
}

TEST(retrieve_wait_with_timeout_0_tries_once)
{
	struct test_luod d;
	struct waiter w;

	start(&d);
	waiter_start(&w, &d, "nobody", 0, NULL);
	ASSERT_ERR(relay_one(&w), -ENOENT);
	waiter_finish(&w); /* -ETIMEDOUT, without asking again */
	ASSERT_EQ(w.n_requests, 1);
	test_luod_stop(&d);
}

TEST(retrieve_wait_checks_its_arguments_and_passes_other_errors_on)
{
	struct test_luod d;
	int luo, old, in, s = -7, f;

	start(&d);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_ERR(luo_session_retrieve_wait(luo, NULL, 0, &s), -EINVAL);
	ASSERT_ERR(luo_session_retrieve_wait(luo, "", 0, &s), -EINVAL);
	ASSERT_ERR(luo_session_retrieve_wait(luo, "svc", 0, NULL), -EINVAL);
	ASSERT_ERR(luo_session_retrieve_wait(luo, "svc", -2, &s), -EINVAL);
	ASSERT_ERR(luo_session_retrieve_wait(-1, "svc", 0, &s), -EBADF);
	ASSERT_ERR(luo_session_retrieve_wait(closed_fd(), "svc", 0, &s), -EBADF);
	f = ASSERT_OK(memfd_create("x", MFD_CLOEXEC));
	ASSERT_ERR(luo_session_retrieve_wait(f, "svc", -1, &s), -ENOTTY);
	close(f);

	/* Already retrieved: the kernel's EINVAL at once, however long one may wait. */
	old = handed_over(luo, "svc", "x");
	ASSERT_OK(luo_session_retrieve(luo, "svc", &in));
	ASSERT_ERR(luo_session_retrieve_wait(luo, "svc", -1, &s), -EINVAL);
	ASSERT_EQ(s, -7);
	close(in);
	close(old);
	close(luo);
	test_luod_stop(&d);
}

/* Runs this program again with mode as its argument, under the shim and on
 * libluo's ioctl path, against a fresh luod; fails the case unless it exits 0. */
static void run_shim_child(const char *mode)
{
	char shim[512], self[512];
	struct test_luod d;
	int status;
	pid_t pid;

	test_build_path("src/preload/luo-preload.so", shim, sizeof(shim));
	if (access(shim, R_OK) < 0)
		test_skip("the preload shim is not built (%s)", shim);
	start(&d);
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	ASSERT_TRUE(k > 0);
	self[k] = 0;

	fflush(stdout);
	pid = fork();
	ASSERT_OK(pid);
	if (pid == 0) {
		const char *argv[] = { self, mode, NULL };

		dup2(STDERR_FILENO, STDOUT_FILENO);
		setenv("LD_PRELOAD", shim, 1);
		setenv("LUO_LIB_FORCE_IOCTL", "1", 1);
		/* A sanitizer runtime must otherwise come first in the library list. */
		setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=1", 1);
		execv(self, (char *const *)argv);
		_exit(127);
	}
	ASSERT_OK(waitpid(pid, &status, 0));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		test_fail_at(__FILE__, __LINE__,
			     "the libluo program under the shim (%s) failed: 0x%x", mode, status);
	test_luod_stop(&d);
}

/* The body of the shim case of luo_session_retrieve_wait(): the kernel's
 * device fd, whose sessions come only with a (simulated) kexec. */
static int run_wait_under_shim(void)
{
	int dev, s = -7, s2 = -7, m, fd, r;

	dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return 10;
	if (luo_session_retrieve_wait(dev, "w", 0, &s2) != -ETIMEDOUT || s2 != -7)
		return 11;
	if (luo_session_retrieve_wait(dev, "w", 20, &s2) != -ETIMEDOUT || s2 != -7)
		return 12;
	if (luo_session_retrieve_wait(dev, NULL, 0, &s2) != -EINVAL)
		return 13;
	if (luo_session_create(dev, "w", 0, &s) < 0)
		return 14;
	m = memfd_with("waited for");
	r = luo_session_preserve_fd(s, 3, m);
	close(m);
	if (r < 0)
		return 15;
	/* An outgoing session is not yet retrievable: still a timeout. */
	if (luo_session_retrieve_wait(dev, "w", 0, &s2) != -ETIMEDOUT)
		return 16;

	r = luoctl_reboot();
	if (r > 0) {
		close(s);
		close(dev);
		return 0;
	}
	if (r < 0)
		return 17;
	if (luo_session_retrieve_wait(dev, "w", -1, &s2) < 0 || !is_cloexec(s2))
		return 18;
	if (luo_session_retrieve_fd(s2, 3, &fd) < 0)
		return 19;
	char buf[32] = { 0 };
	if (pread(fd, buf, sizeof(buf) - 1, 0) != 10 || strcmp(buf, "waited for") != 0)
		return 20;
	/* Retrieved already: the kernel's EINVAL at once, not a wait. */
	if (luo_session_retrieve_wait(dev, "w", -1, &m) != -EINVAL)
		return 21;
	if (luo_session_finish(s2) < 0)
		return 22;
	close(fd);
	close(s2);
	close(s);
	close(dev);
	return 0;
}

TEST(retrieve_wait_works_on_the_ioctl_path)
{
#ifndef LUO_TEST_HOOKS
	test_skip("libluo's ioctl path is forced only in test builds (-Dfault_injection=true)");
#endif
	run_shim_child("--shim-wait-child");
}

TEST(retrieve_wait_is_exported_in_its_own_version_node)
{
	char path[512];
	void *h;

	test_build_path("src/lib/libluo.so.0", path, sizeof(path));
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		test_fail_at(__FILE__, __LINE__, "dlopen %s: %s", path, dlerror());
	/* Added after 0.1: a program linked against 0.1 must not see it there. */
	ASSERT_TRUE(dlvsym(h, "luo_session_retrieve_wait", "LUO_0.2"));
	ASSERT_FALSE(dlvsym(h, "luo_session_retrieve_wait", "LUO_0.1"));
	dlclose(h);
}

static const struct test_case cases[] = {
	TEST_CASE(connect_finds_luod_by_path_env_and_runtime_dir),
	TEST_CASE(connect_reports_a_missing_luod),
	TEST_CASE(create_returns_a_cloexec_session_fd_named_as_asked),
	TEST_CASE(create_checks_its_arguments),
	TEST_CASE(create_of_a_taken_name_is_eexist),
	TEST_CASE(closing_an_outgoing_session_aborts_it),
	TEST_CASE(handover_then_retrieve_gives_the_same_file_back),
	TEST_CASE(retrieve_into_a_full_fd_table_is_emfile_and_loses_nothing),
	TEST_CASE(create_into_a_full_fd_table_is_emfile_and_makes_nothing),
	TEST_CASE(retrieve_fd_into_a_full_fd_table_is_emfile_and_keeps_the_file),
	TEST_CASE(drop_removes_a_session_nobody_holds),
	TEST_CASE(get_owner_names_the_sessions_uid),
	TEST_CASE(handover_on_close_keeps_the_session_for_the_successor),
	TEST_CASE(seals_added_after_handover_keep_the_file),
	TEST_CASE(commands_on_a_handed_over_fd_are_estale),
	TEST_CASE(preserve_errors_are_the_kernel_ones),
	TEST_CASE(incoming_and_outgoing_commands_refuse_the_other_kind),
	TEST_CASE(retrieve_errors_are_the_kernel_ones),
	TEST_CASE(handover_of_a_name_already_waiting_is_eexist),
	TEST_CASE(fd_is_session_tells_sessions_from_other_fds),
	TEST_CASE(threads_sharing_a_session_fd_each_get_their_answer),
	TEST_CASE(ioctl_path_works_under_the_preload_shim),
	TEST_CASE(set_timeout_checks_its_argument),
	TEST_CASE(calls_to_a_stopped_luod_time_out),
	TEST_CASE(a_foreign_seqpacket_socket_is_enotty),
	TEST_CASE(library_exports_only_versioned_luo_symbols),
	TEST_CASE(man_page_documents_every_public_function),
	TEST_CASE(retrieve_wait_returns_at_once_when_the_session_is_there),
	TEST_CASE(retrieve_wait_waits_for_a_handover_during_the_wait),
	TEST_CASE(retrieve_wait_gets_the_session_of_a_predecessor_that_exits),
	TEST_CASE(retrieve_wait_times_out_not_before_its_deadline),
	TEST_CASE(retrieve_wait_with_timeout_0_tries_once),
	TEST_CASE(retrieve_wait_checks_its_arguments_and_passes_other_errors_on),
	TEST_CASE(retrieve_wait_works_on_the_ioctl_path),
	TEST_CASE(retrieve_wait_is_exported_in_its_own_version_node),
};

int main(int argc, char **argv)
{
	/* The shim case re-runs this program under LD_PRELOAD for its body. */
	if (argc == 2 && strcmp(argv[1], "--shim-child") == 0)
		return run_under_shim();
	if (argc == 2 && strcmp(argv[1], "--shim-wait-child") == 0)
		return run_wait_under_shim();
	return test_main(cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
}
