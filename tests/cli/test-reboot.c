/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl reboot, the simulated kexec
 *
 * Before the reboot the machine holds: an outgoing session whose owner (a
 * live process) keeps it open, one whose fds were all closed, an incoming
 * session nobody retrieved and one that was retrieved and is still held.
 * After `luoctl reboot`: only the first survives, now incoming and
 * retrievable with its data by a new process; every old session fd gives
 * ESTALE; the live update number is one higher; luod is the same process.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli-test.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-test.h"

#define DATA_SIZE 65536

static struct cli_out o;

struct holder_args {
	struct cli_sync ready, go, done;
};

/* Stage 1 of a program: keeps "kept" open across the reboot, then checks
 * that its old fd is stale, and that closing it changes nothing. */
static int holder(void *arg)
{
	struct holder_args *a = arg;
	char name[LUO_SESSION_NAME_LENGTH];
	int luo, s, m, fd;

	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "kept", 0, &s));
	m = ASSERT_OK(cli_memfd_with_pattern(DATA_SIZE, 77));
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	cli_sync_post(&a->ready);
	ASSERT_TRUE(cli_sync_wait(&a->go, 30000));

	/* Every command on a session fd of the previous generation. */
	ASSERT_ERR(luo_session_preserve_fd(s, 2, m), -ESTALE);
	ASSERT_ERR(luo_session_retrieve_fd(s, 1, &fd), -ESTALE);
	ASSERT_ERR(luo_session_get_name(s, name), -ESTALE);
	ASSERT_ERR(luo_session_finish(s), -ESTALE);
	ASSERT_ERR(luo_session_handover(s), -ESTALE);
	/* The connection itself is a new generation's like any other. */
	ASSERT_OK(luo_session_create(luo, "kept", 0, &fd));
	close(fd);
	close(s);
	cli_sync_post(&a->done);
	return 0;
}

/* Stage 2: a new process finds "kept" incoming, with its data. */
static int stage2(void *arg)
{
	int luo, s, m, s2;

	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_retrieve(luo, "kept", &s));
	ASSERT_OK(luo_session_retrieve_fd(s, 1, &m));
	ASSERT_TRUE(cli_fd_has_pattern(m, DATA_SIZE, 77));
	ASSERT_ERR(luo_session_retrieve(luo, "closed", &s2), -ENOENT);
	ASSERT_ERR(luo_session_retrieve(luo, "held incoming", &s2), -ENOENT);
	ASSERT_OK(luo_session_finish(s));
	return 0;
}

static void make_incoming(int luo, const char *name)
{
	int s, e;

	ASSERT_OK(luo_session_create(luo, name, 0, &s));
	e = ASSERT_OK(eventfd(1, EFD_CLOEXEC));
	ASSERT_OK(luo_session_preserve_fd(s, 1, e));
	close(e);
	ASSERT_OK(luo_session_handover(s));
	close(s);
}

TEST(reboot_has_kexec_semantics)
{
	struct test_luod d;
	struct holder_args a;
	int luo, closed, held, pid_before;
	pid_t holder_pid;

	cli_need_jq();
	test_luod_start(&d, NULL);
	cli_sync_init(&a.ready);
	cli_sync_init(&a.go);
	cli_sync_init(&a.done);
	holder_pid = cli_spawn(holder, &a);
	ASSERT_TRUE(cli_sync_wait(&a.ready, 10000));

	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "closed", 0, &closed));
	close(closed);
	make_incoming(luo, "never retrieved");
	make_incoming(luo, "held incoming");
	ASSERT_OK(luo_session_retrieve(luo, "held incoming", &held));

	LUOCTL(&o, "--json", "status");
	ASSERT_JQ(o.out, ".update_number == 0");
	pid_before = cli_server_pid(d.socket);
	ASSERT_EQ(pid_before, d.pid);

	LUOCTL(&o, "reboot");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "live update number is now 1") != NULL);
	ASSERT_TRUE(strstr(o.out, "blackout:") != NULL);

	/* luod re-executed itself: same process, next generation. */
	ASSERT_EQ(cli_server_pid(d.socket), d.pid);
	LUOCTL(&o, "--json", "status");
	ASSERT_JQ(o.out, ".update_number == 1 and .outgoing_sessions == 0 and "
			 ".incoming_sessions == 2");
	/* Handed over and not retrieved in this generation: it crossed too (a
	 * service stopped before the reboot); the retrieved one did not. */
	LUOCTL(&o, "--json", "list");
	ASSERT_JQ(o.out, "[.sessions[] | [.name, .kind, .state, .files]] == "
			 "[[\"never retrieved\", \"incoming\", \"waiting\", 1], "
			 "[\"kept\", \"incoming\", \"waiting\", 1]]");

	/* The retrieved incoming session held across the reboot is stale. */
	char name[LUO_SESSION_NAME_LENGTH];
	ASSERT_ERR(luo_session_get_name(held, name), -ESTALE);
	close(held);

	cli_sync_post(&a.go);
	ASSERT_TRUE(cli_sync_wait(&a.done, 10000));
	ASSERT_EQ(cli_wait(holder_pid), 0);
	ASSERT_EQ(cli_wait(cli_spawn(stage2, NULL)), 0);

	/* A second reboot drops "kept" (it is incoming now), however it was used,
	 * and "never retrieved", which arrived with the first one. */
	LUOCTL(&o, "--json", "reboot");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".result == \"ok\" and .update_number == 2 and .blackout_usec > 0");
	LUOCTL(&o, "--json", "list");
	ASSERT_JQ(o.out, ".sessions == []");
	LUOCTL(&o, "--json", "status");
	ASSERT_JQ(o.out, ".update_number == 2 and .files == 0");

	close(luo);
	cli_sync_close(&a.ready);
	cli_sync_close(&a.go);
	cli_sync_close(&a.done);
	test_luod_stop(&d);
}

/* A program that dies before the reboot leaves nothing for stage 2. */
static int dying_holder(void *arg)
{
	struct holder_args *a = arg;
	int luo, s, m;

	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(luo_session_create(luo, "dies", 0, &s));
	m = ASSERT_OK(cli_memfd_with_pattern(100, 1));
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	cli_sync_post(&a->ready);
	for (;;)
		pause();
}

TEST(reboot_after_holder_died_leaves_nothing)
{
	struct test_luod d;
	struct holder_args a;
	int luo, s;
	pid_t pid;

	test_luod_start(&d, NULL);
	cli_sync_init(&a.ready);
	pid = cli_spawn(dying_holder, &a);
	ASSERT_TRUE(cli_sync_wait(&a.ready, 10000));
	ASSERT_OK(kill(pid, SIGKILL));
	ASSERT_EQ(cli_wait(pid), 128 + SIGKILL);
	/* Wait until luod has seen the hang-up, so the reboot cannot race it. */
	for (int i = 0; i < 500; i++) {
		LUOCTL(&o, "show", "dies");
		if (o.status == 4)
			break;
		usleep(10000);
	}
	ASSERT_EQ(o.status, 4);
	LUOCTL(&o, "reboot");
	ASSERT_EQ(o.status, 0);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_ERR(luo_session_retrieve(luo, "dies", &s), -ENOENT);
	close(luo);
	cli_sync_close(&a.ready);
	test_luod_stop(&d);
}

TEST(reboot_keeps_client_connections)
{
	struct test_luod d;
	struct stat before, after;
	int luo, s;

	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	ASSERT_OK(fstat(luo, &before));
	LUOCTL(&o, "reboot");
	ASSERT_EQ(o.status, 0);
	LUOCTL(&o, "reboot");
	ASSERT_EQ(o.status, 0);
	/* The same connection, still served after two re-execs. */
	ASSERT_OK(fstat(luo, &after));
	ASSERT_EQ(before.st_ino, after.st_ino);
	ASSERT_OK(luo_session_create(luo, "after two reboots", 0, &s));
	close(s);
	close(luo);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(reboot_has_kexec_semantics), TEST_CASE(reboot_after_holder_died_leaves_nothing),
	  TEST_CASE(reboot_keeps_client_connections))
