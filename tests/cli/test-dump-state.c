/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl dump-state
 *
 * A state blob is made the way luod makes one (luo_state_encode of an engine
 * holding sessions and files), or taken from the fuzz corpus, and luoctl
 * decodes it for a person and as JSON.  This program links the engine, not
 * libluo: the two share function names for different objects.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cli-test.h"
#include "core/engine.h"
#include "core/state.h"
#include "harness.h"
#include "luod-test.h"

static struct cli_out o;

/* Writes a blob encoded by a test engine: one outgoing session with a memfd
 * and an eventfd, and one incoming session (a handed-over one) with a memfd. */
static void write_state_blob(const char *path)
{
	luo_engine *e = NULL;
	luo_session *s = NULL, *h = NULL;
	uint8_t name[LUO_NAME_FIELD] = "dumped session", name2[LUO_NAME_FIELD] = "handed over";
	void *blob = NULL;
	size_t size = 0;
	int m, ev, fd;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_default_handlers(e));
	ASSERT_OK(luo_engine_create_session(e, name, 0, 1000, &s));
	m = cli_memfd_with_pattern(100, 3);
	ASSERT_OK(m);
	ASSERT_OK(luo_session_preserve_fd(s, 99, m));
	close(m);
	ev = eventfd(5, EFD_CLOEXEC);
	ASSERT_OK(ev);
	ASSERT_OK(luo_session_preserve_fd(s, 12345678901ULL, ev));
	close(ev);
	ASSERT_OK(luo_engine_create_session(e, name2, 0, 1000, &h));
	m = cli_memfd_with_pattern(10, 4);
	ASSERT_OK(m);
	ASSERT_OK(luo_session_preserve_fd(h, 1, m));
	close(m);
	ASSERT_OK(luo_engine_handover_session(e, h));

	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ASSERT_OK(fd);
	ASSERT_EQ(write(fd, blob, size), (ssize_t)size);
	close(fd);
	free(blob);
	luo_engine_free(e);
}

TEST(dump_state_describes_sessions_and_files)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/state.dtb", test_tmpdir());
	write_state_blob(path);
	LUOCTL(&o, "dump-state", path);
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "dumped session") != NULL);
	ASSERT_TRUE(strstr(o.out, "handed over") != NULL);
	ASSERT_TRUE(strstr(o.out, "12345678901") != NULL);
	ASSERT_TRUE(strstr(o.out, "99") != NULL);
}

TEST(dump_state_json_is_valid)
{
	char path[300];

	cli_need_jq();
	snprintf(path, sizeof(path), "%s/state.dtb", test_tmpdir());
	write_state_blob(path);
	LUOCTL(&o, "--json", "dump-state", path);
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".");
	ASSERT_TRUE(strstr(o.out, "dumped session") != NULL);
	ASSERT_TRUE(strstr(o.out, "12345678901") != NULL);
	/* And from stdin, with --json after the command. */
	char cmd[1024], luoctl[512];
	test_build_path("src/cli/luoctl", luoctl, sizeof(luoctl));
	snprintf(cmd, sizeof(cmd), "'%s' dump-state --json - < '%s' | jq -e . >/dev/null", luoctl,
		 path);
	ASSERT_EQ(test_run_command((const char *const[]){ "/bin/sh", "-c", cmd, NULL }), 0);
}

TEST(dump_state_of_corpus_seeds_never_crashes)
{
	char dir[512], path[1024];
	DIR *d;
	int n = 0, good = 0;

	test_source_path("tests/fuzz/corpus/fuzz-state", dir, sizeof(dir));
	d = opendir(dir);
	if (!d)
		test_skip("no corpus at %s yet", dir);
	for (struct dirent *de; (de = readdir(d));) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		LUOCTL(&o, "dump-state", path);
		/* A seed is a valid blob (0) or a refused one (1); never a crash. */
		ASSERT_TRUE(o.status == 0 || o.status == 1);
		if (o.status == 1)
			ASSERT_TRUE(strstr(o.err, "not a state blob") != NULL);
		good += o.status == 0;
		n++;
	}
	closedir(d);
	test_diag("%d seeds, %d decoded", n, good);
	if (n == 0)
		test_skip("the corpus at %s is empty", dir);
}

TEST(dump_state_refuses_bad_input_with_1)
{
	char path[300];
	int fd;

	snprintf(path, sizeof(path), "%s/garbage", test_tmpdir());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ASSERT_OK(fd);
	ASSERT_EQ(write(fd, "\xd0\x0d\xfe\xed not a tree", 15), 15);
	close(fd);
	LUOCTL(&o, "dump-state", path);
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, path) != NULL);
	ASSERT_TRUE(strstr(o.err, "not a state blob") != NULL);

	/* A valid blob cut short. */
	snprintf(path, sizeof(path), "%s/state.dtb", test_tmpdir());
	write_state_blob(path);
	ASSERT_OK(truncate(path, 64));
	LUOCTL(&o, "dump-state", path);
	ASSERT_EQ(o.status, 1);

	snprintf(path, sizeof(path), "%s/missing", test_tmpdir());
	LUOCTL(&o, "dump-state", path);
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, strerror(ENOENT)) != NULL);
}

TEST_MAIN(TEST_CASE(dump_state_describes_sessions_and_files), TEST_CASE(dump_state_json_is_valid),
	  TEST_CASE(dump_state_of_corpus_seeds_never_crashes),
	  TEST_CASE(dump_state_refuses_bad_input_with_1))
