/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: access control by uid, and the per-uid limits
 *
 * luod serves every local user on one socket and isolates them by uid
 * (SO_PEERCRED): a second uid can neither see (list, show) nor take
 * (retrieve: ENOENT) the first uid's sessions, and may not update or reboot
 * luod (EPERM).  Run as root, the test plays the second uid with a child that
 * drops to 65534 (nobody); otherwise those cases skip.  The limits, set small
 * on luod's command line, give ENOSPC for sessions and files and EMFILE for
 * connections, and free up again when the holder lets go.
 */
#include <fcntl.h>
#include <grp.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli-test.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-test.h"

#define NOBODY 65534

static struct cli_out o;

static void drop_privileges(void)
{
	ASSERT_OK(setgroups(0, NULL));
	ASSERT_OK(setresgid(NOBODY, NOBODY, NOBODY));
	ASSERT_OK(setresuid(NOBODY, NOBODY, NOBODY));
	ASSERT_EQ(geteuid(), NOBODY);
}

struct other_args {
	struct cli_sync created, go;
};

/* The second uid: sees nothing of root's, takes nothing, may not update. */
static int other_uid(void *arg)
{
	struct other_args *a = arg;
	char name[LUO_SESSION_NAME_LENGTH];
	int luo, s, mine;

	drop_privileges();
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_ERR(luo_session_retrieve(luo, "root incoming", &s), -ENOENT);
	ASSERT_ERR(luo_session_retrieve(luo, "root secret", &s), -ENOENT);

	LUOCTL(&o, "list");
	ASSERT_EQ(o.status, 0);
	ASSERT_STREQ(o.out, "No sessions.\n");
	LUOCTL(&o, "--json", "list");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".sessions == []");
	LUOCTL(&o, "show", "root secret");
	ASSERT_EQ(o.status, 4);
	LUOCTL(&o, "show", "root incoming");
	ASSERT_EQ(o.status, 4);
	/* Nor drop them: they do not exist for it. */
	LUOCTL(&o, "drop", "root incoming");
	ASSERT_EQ(o.status, 4);
	ASSERT_ERR(luo_session_drop(luo, "root incoming"), -ENOENT);
	LUOCTL(&o, "--json", "status");
	ASSERT_EQ(o.status, 0);

	LUOCTL(&o, "update");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, strerror(EPERM)) != NULL);
	LUOCTL(&o, "reboot");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, strerror(EPERM)) != NULL);
	/* The running state names every uid's sessions: root's (or luod's owner's) only. */
	LUOCTL(&o, "dump-state");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, strerror(EPERM)) != NULL);
	ASSERT_STREQ(o.out, "");

	/* Its own sessions work as usual, and are the only ones it sees. */
	ASSERT_OK(luo_session_create(luo, "nobody's", 0, &mine));
	ASSERT_OK(luo_session_get_name(mine, name));
	ASSERT_STREQ(name, "nobody's");
	LUOCTL(&o, "--json", "list");
	ASSERT_JQ(o.out, "[.sessions[] | [.name, .uid]] == [[\"nobody's\", 65534]]");
	cli_sync_post(&a->created);
	ASSERT_TRUE(cli_sync_wait(&a->go, 10000));
	close(mine);
	/* One left for root to drop. */
	ASSERT_OK(luo_session_create(luo, "nobody's kept", 0, &mine));
	ASSERT_OK(luo_session_handover(mine));
	close(mine);
	close(luo);
	return 0;
}

TEST(other_uid_cannot_see_take_update_or_reboot)
{
	struct test_luod d;
	struct other_args a;
	int luo, secret, incoming, e;
	pid_t pid;

	if (!test_is_root())
		test_skip("needs root to run a client as a second uid");
	cli_need_jq();
	test_luod_start(&d, NULL);
	/* The case's directory holds the socket and luoctl's output files. */
	ASSERT_OK(chmod(test_tmpdir(), 0777));
	ASSERT_OK(chmod(d.socket, 0666));

	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "root secret", 0, &secret));
	e = ASSERT_OK(eventfd(0, EFD_CLOEXEC));
	ASSERT_OK(luo_session_preserve_fd(secret, 1, e));
	close(e);
	ASSERT_OK(luo_session_create(luo, "root incoming", 0, &incoming));
	ASSERT_OK(luo_session_handover(incoming));
	close(incoming);

	cli_sync_init(&a.created);
	cli_sync_init(&a.go);
	pid = cli_spawn(other_uid, &a);
	ASSERT_TRUE(cli_sync_wait(&a.created, 20000));
	/* Root sees everyone's, each with its owner. */
	LUOCTL(&o, "--json", "list");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, "any(.sessions[]; .name == \"root secret\" and .uid == 0)");
	ASSERT_JQ(o.out, "any(.sessions[]; .name == \"nobody's\" and .uid == 65534)");
	ASSERT_JQ(o.out, "any(.sessions[]; .name == \"root incoming\" and .uid == 0)");
	/* With the owners' names, for people. */
	ASSERT_JQ(o.out, "any(.sessions[]; .name == \"root secret\" and .user == \"root\")");
	LUOCTL(&o, "list");
	ASSERT_TRUE(strstr(o.out, "OWNER") != NULL);
	ASSERT_TRUE(strstr(o.out, "  root  ") != NULL);
	cli_sync_post(&a.go);
	ASSERT_EQ(cli_wait(pid), 0);
	/* Names are per uid: root reaches another uid's session only explicitly. */
	LUOCTL(&o, "drop", "--incoming", "nobody's kept");
	ASSERT_EQ(o.status, 4);
	LUOCTL(&o, "show", "--uid", "65534", "nobody's kept");
	ASSERT_EQ(o.status, 0);
	/* Root may drop any uid's session that nobody holds. */
	LUOCTL(&o, "drop", "--incoming", "--uid", "65534", "nobody's kept");
	ASSERT_EQ(o.status, 0);
	LUOCTL(&o, "show", "--uid", "65534", "nobody's kept");
	ASSERT_EQ(o.status, 4);

	/* Nothing of root's was touched. */
	ASSERT_OK(luo_session_retrieve(luo, "root incoming", &incoming));
	close(incoming);
	LUOCTL(&o, "--json", "show", "--outgoing", "root secret");
	ASSERT_JQ(o.out, ".sessions[0].uid == 0 and .sessions[0].files == 1");
	close(secret);
	close(luo);
	cli_sync_close(&a.created);
	cli_sync_close(&a.go);
	test_luod_stop(&d);
}

static const char *const small_limits[] = {
	"--max-sessions", "3", "--max-files", "5", "--max-connections", "4", NULL,
};

TEST(session_limit_gives_enospc)
{
	struct test_luod d;
	int luo, s[4];

	test_luod_start(&d, small_limits);
	luo = ASSERT_OK(luo_connect(NULL));
	for (int i = 0; i < 3; i++) {
		char name[16];
		snprintf(name, sizeof(name), "s%d", i);
		ASSERT_OK(luo_session_create(luo, name, 0, &s[i]));
	}
	ASSERT_ERR(luo_session_create(luo, "one too many", 0, &s[3]), -ENOSPC);
	/* An incoming session counts as well: it still costs luod. */
	ASSERT_OK(luo_session_handover(s[0]));
	ASSERT_ERR(luo_session_create(luo, "one too many", 0, &s[3]), -ENOSPC);
	/* Letting go frees the slot. */
	close(s[1]);
	for (int i = 0; i < 500; i++) {
		int r = luo_session_create(luo, "one too many", 0, &s[3]);
		if (r == 0)
			break;
		ASSERT_ERR(r, -ENOSPC);
		usleep(10000);
		s[3] = -1;
	}
	ASSERT_TRUE(s[3] >= 0);
	close(s[0]);
	close(s[2]);
	close(s[3]);
	close(luo);
	test_luod_stop(&d);
}

TEST(file_limit_gives_enospc)
{
	struct test_luod d;
	int luo, a, b, e;

	test_luod_start(&d, small_limits);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "a", 0, &a));
	ASSERT_OK(luo_session_create(luo, "b", 0, &b));
	/* The limit is per uid, across sessions. */
	for (int i = 0; i < 5; i++) {
		e = ASSERT_OK(eventfd(0, EFD_CLOEXEC));
		ASSERT_OK(luo_session_preserve_fd(i < 3 ? a : b, (uint64_t)i, e));
		close(e);
	}
	e = ASSERT_OK(eventfd(0, EFD_CLOEXEC));
	ASSERT_ERR(luo_session_preserve_fd(b, 99, e), -ENOSPC);
	ASSERT_ERR(luo_session_preserve_fd(a, 99, e), -ENOSPC);
	/* Aborting a session returns its files' share. */
	close(a);
	int r = -ENOSPC;
	for (int i = 0; i < 500 && r == -ENOSPC; i++) {
		r = luo_session_preserve_fd(b, 99, e);
		if (r == -ENOSPC)
			usleep(10000);
	}
	ASSERT_OK(r);
	close(e);
	close(b);
	close(luo);
	test_luod_stop(&d);
}

TEST(connection_limit_gives_emfile)
{
	struct test_luod d;
	int c[5], s;

	test_luod_start(&d, small_limits);
	for (int i = 0; i < 4; i++) {
		c[i] = ASSERT_OK(luo_connect(NULL));
		/* A request makes sure luod has accepted this one before the next. */
		ASSERT_OK(luo_session_create(c[i],
					     i == 0   ? "c0"
					     : i == 1 ? "c1"
					     : i == 2 ? "c2"
						      : "c3",
					     0, &s));
		close(s);
	}
	c[4] = luo_connect(NULL);
	int r = c[4];
	if (c[4] >= 0) {
		r = luo_session_create(c[4], "c4", 0, &s);
		close(c[4]);
	}
	/* luoctl is a client like any other: luod cannot be reached for it (exit 3). */
	LUOCTL(&o, "status");
	ASSERT_EQ(o.status, 3);
	ASSERT_TRUE(strstr(o.err, "connection limit") != NULL);
	/* Closing one makes room again. */
	close(c[0]);
	for (int i = 0; i < 500; i++) {
		LUOCTL(&o, "status");
		if (o.status == 0)
			break;
		usleep(10000);
	}
	ASSERT_EQ(o.status, 0);
	for (int i = 1; i < 4; i++)
		close(c[i]);
	test_luod_stop(&d);
	ASSERT_ERR(r, -EMFILE);
}

TEST_MAIN(TEST_CASE(other_uid_cannot_see_take_update_or_reboot),
	  TEST_CASE(session_limit_gives_enospc), TEST_CASE(file_limit_gives_enospc),
	  TEST_CASE(connection_limit_gives_emfile))
