/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl's commands, output and exit codes
 *
 * Each case starts a real luod (tests/luod-test.h) where it needs one, makes
 * sessions with libluo as an ordinary client would, and runs the build's
 * luoctl as a separate process, checking its tables, its JSON (with jq) and
 * the exit codes luoctl(8) documents: 0 ok, 1 failed, 2 usage, 3 luod
 * unreachable, 4 not found; options anywhere on the line, one error message
 * per error, the timeout on a stopped luod, and dump-state of a running luod.
 */
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli-test.h"
#include "harness.h"
#include "luo/luo.h"
#include "luod-test.h"

static struct cli_out o;

static int create_session(int luo, const char *name, uint64_t flags)
{
	int s = -1;

	ASSERT_OK(luo_session_create(luo, name, flags, &s));
	return s;
}

TEST(bad_usage_exits_2)
{
	const char *const *cases[] = {
		(const char *const[]){ NULL },
		(const char *const[]){ "frobnicate", NULL },
		(const char *const[]){ "--no-such-option", "status", NULL },
		(const char *const[]){ "show", NULL },
		(const char *const[]){ "show", "a", "b", NULL },
		(const char *const[]){
			"show", "0123456789012345678901234567890123456789012345678901234567890123",
			NULL },
		(const char *const[]){ "show", "", NULL },
		(const char *const[]){ "show", "--incoming", "--outgoing", "x", NULL },
		(const char *const[]){ "status", "extra", NULL },
		(const char *const[]){ "list", "extra", NULL },
		(const char *const[]){ "update", "extra", NULL },
		(const char *const[]){ "update", "--exec", NULL },
		(const char *const[]){ "reboot", "now", NULL },
		(const char *const[]){ "dump-state", "a", "b", NULL },
		(const char *const[]){ "--timeout", "-1", "status", NULL },
		(const char *const[]){ "status", "--timeout", "soon", NULL },
		(const char *const[]){ "status", "--timeout", NULL },
		(const char *const[]){ "list", "--exec", "/bin/true", NULL },
		(const char *const[]){ "status", "--incoming", NULL },
		(const char *const[]){ "run", "--json", "--", "/bin/true", NULL },
		(const char *const[]){ "run", NULL },
		(const char *const[]){ "--socket", "", "status", NULL },
	};

	/* Usage errors are found before luoctl tries to connect: no luod here. */
	setenv("LUO_SOCKET", "/nonexistent/luod.sock", 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cli_luoctl(&o, cases[i]);
		ASSERT_EQ(o.status, 2);
		ASSERT_TRUE(strstr(o.err, "luoctl help") != NULL);
		ASSERT_STREQ(o.out, "");
	}
}

TEST(help_and_version_exit_0)
{
	LUOCTL(&o, "help");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "dump-state") != NULL);
	LUOCTL(&o, "--help");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "Exit codes") != NULL);
	LUOCTL(&o, "--version");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strncmp(o.out, "luoctl ", 7) == 0);
}

TEST(no_luod_exits_3_and_says_where)
{
	char sock[300];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	/* Nothing at the path. */
	snprintf(sock, sizeof(sock), "%s/none.sock", test_tmpdir());
	const char *const *cmds[] = {
		(const char *const[]){ "--socket", sock, "status", NULL },
		(const char *const[]){ "--socket", sock, "list", NULL },
		(const char *const[]){ "--socket", sock, "show", "x", NULL },
		(const char *const[]){ "--socket", sock, "update", NULL },
		(const char *const[]){ "--socket", sock, "reboot", NULL },
		(const char *const[]){ "--socket", sock, "--json", "status", NULL },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		cli_luoctl(&o, cmds[i]);
		ASSERT_EQ(o.status, 3);
		ASSERT_TRUE(strstr(o.err, "is luod running?") != NULL);
		ASSERT_TRUE(strstr(o.err, sock) != NULL);
		ASSERT_TRUE(strstr(o.err, strerror(ENOENT)) != NULL);
	}

	/* A socket nobody listens on any more (a dead luod's): connection refused. */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ASSERT_OK(fd);
	strcpy(sa.sun_path, sock);
	ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	close(fd);
	setenv("LUO_SOCKET", sock, 1);
	LUOCTL(&o, "status");
	ASSERT_EQ(o.status, 3);
	ASSERT_TRUE(strstr(o.err, strerror(ECONNREFUSED)) != NULL);
}

TEST(status_reports_luod)
{
	struct test_luod d;
	char expr[128];

	cli_need_jq();
	test_luod_start(&d, NULL);
	LUOCTL(&o, "status");
	ASSERT_EQ(o.status, 0);
	snprintf(expr, sizeof(expr), "luod:           pid %d (worker ", (int)d.pid);
	ASSERT_TRUE(strstr(o.out, expr) != NULL);
	ASSERT_TRUE(strstr(o.out, "update number:  0") != NULL);
	ASSERT_TRUE(strstr(o.out, d.socket) != NULL);

	LUOCTL(&o, "--json", "status");
	ASSERT_EQ(o.status, 0);
	snprintf(expr, sizeof(expr), ".pid == %d and .update_number == 0", (int)d.pid);
	ASSERT_JQ(o.out, expr);
	ASSERT_JQ(o.out, ".fd_limit > 0 and .outgoing_sessions == 0 and (.version | length > 0)");
	/* --json is accepted after the command too. */
	LUOCTL(&o, "status", "--json");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, expr);
	test_luod_stop(&d);
}

/* Names with bytes a table could not show as they are. */
static const char *const odd_names[] = {
	"plain", "with space", "tab\there", "back\\slash", "\xff\xfe", "new\nline", "caf\xc3\xa9",
};
static const char *const odd_escaped[] = {
	"plain",      "with\\x20space", "tab\\x09here", "back\\\\slash",
	"\\xff\\xfe", "new\\x0aline",	"caf\xc3\xa9",
};
static const char *const odd_hex[] = {
	"706c61696e", "77697468207370616365", "7461620968657265", "6261636b5c736c617368",
	"fffe",	      "6e65770a6c696e65",     "636166c3a9",
};

TEST(list_prints_aligned_escaped_table)
{
	struct test_luod d;
	int luo, s[7];
	size_t kind_col = 0;
	char *line, *save = NULL;
	int n_lines = 0;

	test_luod_start(&d, NULL);
	LUOCTL(&o, "list");
	ASSERT_EQ(o.status, 0);
	ASSERT_STREQ(o.out, "No sessions.\n");

	luo = ASSERT_OK(luo_connect(NULL));
	for (size_t i = 0; i < 7; i++)
		s[i] = create_session(luo, odd_names[i],
				      i == 0 ? LUO_SESSION_HANDOVER_ON_CLOSE : 0);
	int efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_OK(luo_session_preserve_fd(s[0], 42, efd));
	close(efd);

	LUOCTL(&o, "list");
	ASSERT_EQ(o.status, 0);
	for (size_t i = 0; i < 7; i++)
		ASSERT_TRUE(strstr(o.out, odd_escaped[i]) != NULL);
	ASSERT_TRUE(strstr(o.out, "handover-on-close") != NULL);
	/* Every line has the KIND column at the same column (UTF-8 text counts one
	 * column per character), and no raw control byte. */
	for (const unsigned char *p = (const unsigned char *)o.out; *p; p++)
		ASSERT_TRUE(*p == '\n' || (*p >= 0x20 && *p != 0x7f));
	for (line = strtok_r(o.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *k = strstr(line, n_lines == 0 ? "KIND" : "outgoing");
		size_t col = 0;

		ASSERT_TRUE(k != NULL);
		for (const char *p = line; p < k; p++)
			col += ((unsigned char)*p & 0xc0) != 0x80;
		if (n_lines == 0)
			kind_col = col;
		ASSERT_EQ(col, kind_col);
		n_lines++;
	}
	ASSERT_EQ(n_lines, 8);

	for (size_t i = 0; i < 7; i++)
		close(s[i]);
	close(luo);
	test_luod_stop(&d);
}

TEST(list_json_is_valid_and_exact)
{
	struct test_luod d;
	int luo, s[7];
	char expr[256];

	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	for (size_t i = 0; i < 7; i++)
		s[i] = create_session(luo, odd_names[i], 0);
	int m = cli_memfd_with_pattern(1000, 1);
	ASSERT_OK(m);
	ASSERT_OK(luo_session_preserve_fd(s[2], 0, m));
	close(m);

	LUOCTL(&o, "--json", "list");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".sessions | length == 7");
	for (size_t i = 0; i < 7; i++) {
		snprintf(expr, sizeof(expr),
			 "[.sessions[] | select(.name_hex == \"%s\")] | length == 1 and "
			 ".[0].kind == \"outgoing\" and .[0].state == \"open\" and .[0].uid == %u",
			 odd_hex[i], (unsigned)getuid());
		ASSERT_JQ(o.out, expr);
	}
	/* Valid UTF-8 and escaped control characters come through as they are. */
	ASSERT_JQ(o.out, "any(.sessions[]; .name == \"caf\\u00e9\")");
	ASSERT_JQ(o.out, "any(.sessions[]; .name == \"new\\nline\")");
	ASSERT_JQ(o.out, ".sessions[] | select(.name == \"tab\\there\") | .files == 1");

	for (size_t i = 0; i < 7; i++)
		close(s[i]);
	close(luo);
	test_luod_stop(&d);
}

TEST(show_prints_session_and_files)
{
	struct test_luod d;
	int luo, s, m, e;

	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	s = create_session(luo, "db state", 0);
	m = cli_memfd_with_pattern(4096, 7);
	ASSERT_OK(m);
	e = eventfd(3, EFD_CLOEXEC);
	ASSERT_OK(e);
	ASSERT_OK(luo_session_preserve_fd(s, 7, m));
	ASSERT_OK(luo_session_preserve_fd(s, 18446744073709551615ULL, e));
	close(m);
	close(e);

	LUOCTL(&o, "show", "db state");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "session:  db\\x20state") != NULL);
	ASSERT_TRUE(strstr(o.out, "kind:     outgoing") != NULL);
	ASSERT_TRUE(strstr(o.out, "files:    2") != NULL);
	ASSERT_TRUE(strstr(o.out, "TOKEN") != NULL);
	ASSERT_TRUE(strstr(o.out, "18446744073709551615") != NULL);
	ASSERT_TRUE(strstr(o.out, "memfd") != NULL);

	LUOCTL(&o, "--json", "show", "db state");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".sessions | length == 1");
	ASSERT_JQ(o.out, ".sessions[0].name == \"db state\" and .sessions[0].files == 2");
	ASSERT_JQ(o.out, "[.sessions[0].file_list[].token] == [7, 18446744073709551615]");
	ASSERT_JQ(o.out, ".sessions[0].file_list | all(.retrieved == false)");

	/* --incoming restricts to the other namespace, where it is not. */
	LUOCTL(&o, "show", "--incoming", "db state");
	ASSERT_EQ(o.status, 4);
	LUOCTL(&o, "show", "--outgoing", "db state");
	ASSERT_EQ(o.status, 0);

	close(s);
	close(luo);
	test_luod_stop(&d);
}

TEST(list_and_show_read_streams_of_many_messages)
{
	struct test_luod d;
	enum { N = 2000 };
	static int s[N];
	int luo, e;
	char name[32];

	test_need_fds(N + 1024);
	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	/* Far more entries than fit in one reply message (LUO_WIRE_REPLY_MAX). */
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "many-%04d", i);
		ASSERT_OK(luo_session_create(luo, name, 0, &s[i]));
	}
	for (int i = 0; i < N; i++) {
		e = ASSERT_OK(eventfd(0, EFD_CLOEXEC));
		ASSERT_OK(luo_session_preserve_fd(s[0], (uint64_t)i * 3, e));
		close(e);
	}
	LUOCTL(&o, "--json", "list");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(
		o.out,
		"[.sessions[].name] == [range(2000) | \"many-\" + (. + 10000 | tostring | .[1:])]");
	LUOCTL(&o, "list");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "many-1999  outgoing") != NULL);
	LUOCTL(&o, "--json", "show", "many-0000");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".sessions[0].files == 2000 and "
			 "[.sessions[0].file_list[].token] == [range(2000) | . * 3]");
	for (int i = 0; i < N; i++)
		close(s[i]);
	close(luo);
	test_luod_stop(&d);
}

TEST(show_covers_both_namespaces_unless_told)
{
	struct test_luod d;
	int luo, out, s, e;

	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	/* "twin" incoming (handed over, one file) and "twin" outgoing (no files). */
	ASSERT_OK(luo_session_create(luo, "twin", 0, &s));
	e = ASSERT_OK(eventfd(0, EFD_CLOEXEC));
	ASSERT_OK(luo_session_preserve_fd(s, 5, e));
	close(e);
	ASSERT_OK(luo_session_handover(s));
	close(s);
	ASSERT_OK(luo_session_create(luo, "twin", 0, &out));

	LUOCTL(&o, "show", "twin");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "kind:     outgoing") != NULL);
	ASSERT_TRUE(strstr(o.out, "kind:     incoming") != NULL);
	ASSERT_TRUE(strstr(o.out, "kind:     outgoing") < strstr(o.out, "kind:     incoming"));
	LUOCTL(&o, "--json", "show", "twin");
	ASSERT_JQ(o.out,
		  "[.sessions[] | [.kind, .files]] == [[\"outgoing\", 0], [\"incoming\", 1]]");
	LUOCTL(&o, "show", "--json", "--incoming", "twin");
	ASSERT_JQ(o.out, "[.sessions[] | [.kind, .state]] == [[\"incoming\", \"waiting\"]]");
	close(out);
	close(luo);
	test_luod_stop(&d);
}

TEST(show_unknown_session_exits_4)
{
	struct test_luod d;
	int luo, s;

	test_luod_start(&d, NULL);
	LUOCTL(&o, "show", "nobody");
	ASSERT_EQ(o.status, 4);
	ASSERT_TRUE(strstr(o.err, "no session named 'nobody'") != NULL);
	ASSERT_STREQ(o.out, "");

	/* A session that existed and was aborted by closing its fd is gone too. */
	luo = ASSERT_OK(luo_connect(NULL));
	s = create_session(luo, "short-lived", 0);
	LUOCTL(&o, "show", "short-lived");
	ASSERT_EQ(o.status, 0);
	close(s);
	/* luod sees the hang-up asynchronously: give it a moment. */
	for (int i = 0; i < 200; i++) {
		LUOCTL(&o, "show", "short-lived");
		if (o.status == 4)
			break;
		usleep(10000);
	}
	ASSERT_EQ(o.status, 4);
	close(luo);
	test_luod_stop(&d);
}

TEST(run_execs_the_command_with_the_shim)
{
	char preload[512], sock[300], out[8192];
	int status;

	test_build_path("src/preload/luo-preload.so", preload, sizeof(preload));
	if (access(preload, R_OK) < 0)
		test_skip("luo-preload.so is not built");
	snprintf(sock, sizeof(sock), "%s/some.sock", test_tmpdir());
	char luoctl[512];
	test_build_path("src/cli/luoctl", luoctl, sizeof(luoctl));
	/* A sanitized build's shim brings the ASan runtime into /bin/sh: not its leaks. */
	setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
	/* The exit status is the command's own; the environment points at the shim and socket. */
	status = test_run_command_output(
		(const char *const[]){ luoctl, "run", "--socket", sock, "--", "/bin/sh", "-c",
				       "echo \"$LD_PRELOAD|$LUO_SOCKET\"; exit 7", NULL },
		out, sizeof(out));
	ASSERT_EQ(status, 7);
	ASSERT_TRUE(strstr(out, "luo-preload.so|") != NULL);
	ASSERT_TRUE(strstr(out, sock) != NULL);
	status = test_run_command(
		(const char *const[]){ luoctl, "run", "--", "/nonexistent", NULL });
	ASSERT_EQ(status, 127);
}

TEST(run_points_a_kernel_uapi_program_at_luod)
{
	char preload[512], client[512], luoctl[512];
	struct test_luod d;
	int status;

	test_build_path("src/preload/luo-preload.so", preload, sizeof(preload));
	if (access(preload, R_OK) < 0)
		test_skip("luo-preload.so is not built");
	test_build_path("tests/cli/uapi-client", client, sizeof(client));
	test_build_path("src/cli/luoctl", luoctl, sizeof(luoctl));
	test_luod_start(&d, NULL);
	/* Nothing else tells the program where luod is: luoctl run does. */
	unsetenv("LUO_SOCKET");
	setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
	status = test_run_command((const char *const[]){ luoctl, "run", "--socket", d.socket, "--",
							 client, "made by ioctl", luoctl, "show",
							 "--outgoing", "made by ioctl", NULL });
	ASSERT_EQ(status, 0);
	/* The global --socket works for run too. */
	status = test_run_command((const char *const[]){ luoctl, "--socket", d.socket, "run", "--",
							 client, "again", luoctl, "show", "again",
							 NULL });
	ASSERT_EQ(status, 0);
	/* And the session was the program's: gone with it. */
	setenv("LUO_SOCKET", d.socket, 1);
	for (int i = 0; i < 500; i++) {
		LUOCTL(&o, "show", "made by ioctl");
		if (o.status == 4)
			break;
		usleep(10000);
	}
	ASSERT_EQ(o.status, 4);
	test_luod_stop(&d);
}

/* ---- options, errors, timeouts ---- */

/* A line count of s (its '\n's). */
static int lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

TEST(options_go_anywhere)
{
	struct test_luod d;
	static char first[sizeof(o.out)];
	int luo, s;

	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	s = create_session(luo, "anywhere", 0);

	LUOCTL(&o, "--json", "show", "anywhere");
	ASSERT_EQ(o.status, 0);
	memcpy(first, o.out, sizeof(first));
	LUOCTL(&o, "show", "anywhere", "--json");
	ASSERT_EQ(o.status, 0);
	ASSERT_STREQ(o.out, first);
	LUOCTL(&o, "show", "--json", "anywhere", "--outgoing");
	ASSERT_EQ(o.status, 0);
	ASSERT_STREQ(o.out, first);
	LUOCTL(&o, "list", "--json");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".sessions[0].name == \"anywhere\"");
	/* --socket after the command, with $LUO_SOCKET pointing nowhere. */
	setenv("LUO_SOCKET", "/nonexistent/luod.sock", 1);
	LUOCTL(&o, "status", "--socket", d.socket, "--json");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".outgoing_sessions == 1");
	LUOCTL(&o, "status", "--socket=/nonexistent/x.sock");
	ASSERT_EQ(o.status, 3);
	setenv("LUO_SOCKET", d.socket, 1);

	close(s);
	close(luo);
	test_luod_stop(&d);
}

TEST(json_is_one_line_unless_pretty)
{
	struct test_luod d;
	int luo, s;

	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	s = create_session(luo, "one line", 0);
	const char *const *cmds[] = {
		(const char *const[]){ "--json", "status", NULL },
		(const char *const[]){ "--json", "list", NULL },
		(const char *const[]){ "--json", "show", "one line", NULL },
		(const char *const[]){ "--json", "dump-state", NULL },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		cli_luoctl(&o, cmds[i]);
		ASSERT_EQ(o.status, 0);
		ASSERT_EQ(lines(o.out), 1);
		ASSERT_JQ(o.out, ".");
	}
	LUOCTL(&o, "list", "--pretty");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(lines(o.out) > 5);
	ASSERT_TRUE(strstr(o.out, "\n  \"sessions\": [\n") != NULL);
	ASSERT_JQ(o.out, ".sessions[0].name == \"one line\"");
	close(s);
	close(luo);
	test_luod_stop(&d);
}

TEST(each_error_is_one_line)
{
	struct test_luod d;
	char sock[300];

	snprintf(sock, sizeof(sock), "%s/none.sock", test_tmpdir());
	const char *const *cmds[] = {
		(const char *const[]){ "--socket", sock, "status", NULL },
		(const char *const[]){ "--socket", sock, "--json", "list", NULL },
		(const char *const[]){ "show", "nobody", NULL },
		(const char *const[]){ "--json", "show", "nobody", NULL },
		(const char *const[]){ "dump-state", "/nonexistent/blob", NULL },
		(const char *const[]){ "reboot", "--timeout", "1", "extra", NULL },
	};
	test_luod_start(&d, NULL);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		cli_luoctl(&o, cmds[i]);
		ASSERT_NE(o.status, 0);
		/* A usage error adds its hint line, nothing else does. */
		ASSERT_EQ(lines(o.err), o.status == 2 ? 2 : 1);
		ASSERT_TRUE(strncmp(o.err, "luoctl: ", 8) == 0);
		ASSERT_TRUE(strstr(o.err + 1, "luoctl: ") == NULL);
		ASSERT_TRUE(strstr(o.err, "error") == NULL);
	}
	test_luod_stop(&d);
}

TEST(socket_problems_are_explained)
{
	char path[300];
	int fd;

	/* A regular file. */
	snprintf(path, sizeof(path), "%s/file", test_tmpdir());
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_OK(fd);
	close(fd);
	LUOCTL(&o, "--socket", path, "status");
	ASSERT_EQ(o.status, 3);
	ASSERT_TRUE(strstr(o.err, "is a regular file, not a socket") != NULL);
	ASSERT_TRUE(strstr(o.err, path) != NULL);
	/* A directory. */
	LUOCTL(&o, "--socket", test_tmpdir(), "status");
	ASSERT_EQ(o.status, 3);
	ASSERT_TRUE(strstr(o.err, "is a directory, not a socket") != NULL);
	/* Nothing there. */
	snprintf(path, sizeof(path), "%s/none/luod.sock", test_tmpdir());
	LUOCTL(&o, "--socket", path, "status");
	ASSERT_EQ(o.status, 3);
	ASSERT_TRUE(strstr(o.err, strerror(ENOENT)) != NULL);
	ASSERT_TRUE(strstr(o.err, "is luod running?") != NULL);
	/* Too long for a socket address. */
	char longpath[200];
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = 0;
	LUOCTL(&o, "--socket", longpath, "status");
	ASSERT_EQ(o.status, 3);
	ASSERT_TRUE(strstr(o.err, "too long") != NULL);
}

/* Without $LUO_SOCKET, the per-user luod at $XDG_RUNTIME_DIR/luo/luod.sock. */
TEST(finds_the_per_user_luod)
{
	char dir[300], path[300];
	struct test_luod d;

	cli_need_jq();
	test_luod_start(&d, NULL);
	snprintf(dir, sizeof(dir), "%s/rt", test_tmpdir());
	ASSERT_OK(mkdir(dir, 0700));
	snprintf(path, sizeof(path), "%s/rt/luo", test_tmpdir());
	ASSERT_OK(mkdir(path, 0700));
	snprintf(path, sizeof(path), "%s/rt/luo/luod.sock", test_tmpdir());
	ASSERT_OK(symlink(d.socket, path));
	unsetenv("LUO_SOCKET");
	setenv("XDG_RUNTIME_DIR", dir, 1);
	LUOCTL(&o, "--json", "status");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, path) != NULL);
	setenv("LUO_SOCKET", d.socket, 1);
	test_luod_stop(&d);
}

/* A stopped luod: luoctl gives up after --timeout with exit 3, and says so. */
TEST(a_stopped_luod_times_out)
{
	struct test_luod d;

	test_luod_start(&d, NULL);
	test_luod_pause(&d, true);
	LUOCTL(&o, "--timeout", "0.2", "status");
	ASSERT_EQ(o.status, 3);
	ASSERT_TRUE(strstr(o.err, "did not answer within 0.200 s") != NULL);
	ASSERT_TRUE(strstr(o.err, "--timeout") != NULL);
	ASSERT_EQ(lines(o.err), 1);
	LUOCTL(&o, "list", "--timeout", "1");
	ASSERT_EQ(o.status, 3);
	ASSERT_TRUE(strstr(o.err, "did not answer within 1 s") != NULL);
	test_luod_pause(&d, false);
	LUOCTL(&o, "--timeout", "0", "status");
	ASSERT_EQ(o.status, 0);
	test_luod_stop(&d);
}

/* What operators need: bytes held, owner, creator, times, update number. */
TEST(list_and_show_tell_bytes_owner_creator_and_times)
{
	struct passwd *pw = getpwuid(getuid());
	struct test_luod d;
	char expr[512];
	int luo, s, h, m, m2, m3;

	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	s = create_session(luo, "sized", 0);
	m = cli_memfd_with_pattern(5000, 3);
	ASSERT_OK(m);
	m2 = cli_memfd_with_pattern(123, 4);
	ASSERT_OK(m2);
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	ASSERT_OK(luo_session_preserve_fd(s, 2, m2));
	h = create_session(luo, "gone over", 0);
	m3 = cli_memfd_with_pattern(123, 5);
	ASSERT_OK(m3);
	ASSERT_OK(luo_session_preserve_fd(h, 1, m3));
	close(m3);
	ASSERT_OK(luo_session_handover(h));
	close(h);

	LUOCTL(&o, "--json", "list");
	ASSERT_EQ(o.status, 0);
	ASSERT_JQ(o.out, ".update_number == 0");
	snprintf(expr, sizeof(expr),
		 ".sessions[] | select(.name == \"sized\") | .bytes == 5123 and .user == \"%s\" "
		 "and .creator_pid == %d and .creator_comm == \"test-luoctl\" and "
		 ".created_usec > 0 and .handover_usec == null and .created_in_update == 0",
		 pw ? pw->pw_name : "?", (int)getpid());
	ASSERT_JQ(o.out, expr);
	ASSERT_JQ(o.out,
		  ".sessions[] | select(.name == \"gone over\") | "
		  ".kind == \"incoming\" and .bytes == 123 and .handover_usec >= .created_usec");

	LUOCTL(&o, "--json", "show", "sized");
	ASSERT_JQ(o.out, "[.sessions[0].file_list[] | [.token, .bytes, .type]] == "
			 "[[1, 5000, \"file\"], [2, 123, \"file\"]]");
	LUOCTL(&o, "show", "sized");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "bytes:    5123") != NULL);
	snprintf(expr, sizeof(expr), "by %d/test-luoctl, live update number 0", (int)getpid());
	ASSERT_TRUE(strstr(o.out, expr) != NULL);
	snprintf(expr, sizeof(expr), "owner:    %s (uid %u)", pw ? pw->pw_name : "?",
		 (unsigned)getuid());
	ASSERT_TRUE(strstr(o.out, expr) != NULL);
	LUOCTL(&o, "show", "gone over");
	ASSERT_TRUE(strstr(o.out, "handover: 2") != NULL);
	/* Handed over by the close of a handover-on-close session: luod takes the
	 * close in before it answers the retrieve of the name. */
	h = create_session(luo, "on close", LUO_SESSION_HANDOVER_ON_CLOSE);
	close(h);
	ASSERT_OK(luo_session_retrieve(luo, "on close", &h));
	LUOCTL(&o, "--json", "show", "on close");
	snprintf(expr, sizeof(expr),
		 ".sessions[0] | .kind == \"incoming\" and .state == \"retrieved\" and "
		 ".handover_usec >= .created_usec and .creator_pid == %d",
		 (int)getpid());
	ASSERT_JQ(o.out, expr);
	close(h);
	LUOCTL(&o, "list");
	ASSERT_TRUE(strstr(o.out, "BYTES") != NULL);
	ASSERT_TRUE(strstr(o.out, " 5123  ") != NULL);

	close(m);
	close(m2);
	close(s);
	close(luo);
	test_luod_stop(&d);
}

/* dump-state without a file: the running luod's state, as its live update encodes it. */
TEST(dump_state_of_the_running_luod)
{
	struct test_luod d;
	int luo, s, m;

	cli_need_jq();
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	s = create_session(luo, "live dump", 0);
	m = cli_memfd_with_pattern(100, 9);
	ASSERT_OK(m);
	ASSERT_OK(luo_session_preserve_fd(s, 4242, m));
	close(m);

	LUOCTL(&o, "dump-state");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(strstr(o.out, "live dump") != NULL);
	ASSERT_TRUE(strstr(o.out, "4242") != NULL);
	LUOCTL(&o, "dump-state", "--json");
	ASSERT_EQ(o.status, 0);
	ASSERT_EQ(lines(o.out), 1);
	ASSERT_JQ(o.out, "[.. | .name? | select(. == \"live dump\")] | length == 1");
	LUOCTL(&o, "dump-state", "--pretty");
	ASSERT_EQ(o.status, 0);
	ASSERT_TRUE(lines(o.out) > 3);
	ASSERT_JQ(o.out, ".");
	close(s);
	close(luo);
	test_luod_stop(&d);
}

TEST(drop_removes_what_nobody_holds_and_says_why_not_otherwise)
{
	struct test_luod d;
	int luo, s, held, next, m;

	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(NULL));
	LUOCTL(&o, "drop");
	ASSERT_EQ(o.status, 2);
	LUOCTL(&o, "drop", "--outgoing", "--incoming", "x");
	ASSERT_EQ(o.status, 2);
	LUOCTL(&o, "drop", "nothing");
	ASSERT_EQ(o.status, 4);
	ASSERT_TRUE(strstr(o.err, "no session named 'nothing'") != NULL);

	/* An incoming session nobody retrieved. */
	ASSERT_OK(luo_session_create(luo, "stale", 0, &s));
	ASSERT_OK(luo_session_handover(s));
	close(s);
	LUOCTL(&o, "drop", "stale");
	ASSERT_EQ(o.status, 0);
	ASSERT_STREQ(o.out, "drop: session 'stale' dropped\n");
	LUOCTL(&o, "show", "stale");
	ASSERT_EQ(o.status, 4);

	/* A retrieved one is held: refused, nothing changes. */
	ASSERT_OK(luo_session_create(luo, "gen", 0, &s));
	ASSERT_OK(luo_session_handover(s));
	close(s);
	ASSERT_OK(luo_session_retrieve(luo, "gen", &held));
	LUOCTL(&o, "drop", "gen");
	ASSERT_EQ(o.status, 1);
	ASSERT_TRUE(strstr(o.err, "held open") != NULL);

	/* A handover-on-close session closed while "gen" is still incoming waits
	 * for the name; --outgoing drops it instead of the incoming one. */
	ASSERT_OK(luo_session_create(luo, "gen", LUO_SESSION_HANDOVER_ON_CLOSE, &next));
	m = ASSERT_OK(cli_memfd_with_pattern(64, 7));
	ASSERT_OK(luo_session_preserve_fd(next, 1, m));
	close(m);
	close(next);
	LUOCTL(&o, "--json", "drop", "--outgoing", "gen");
	ASSERT_EQ(o.status, 0);
	ASSERT_STREQ(o.out, "{\"result\":\"ok\"}\n");
	LUOCTL(&o, "drop", "--outgoing", "gen");
	ASSERT_EQ(o.status, 4);
	/* The incoming one was untouched; once it is gone, nothing takes its place. */
	ASSERT_OK(luo_session_finish(held));
	close(held);
	ASSERT_ERR(luo_session_retrieve(luo, "gen", &s), -ENOENT);
	close(luo);
	test_luod_stop(&d);
}

/* Under the shim, a program whose fd table is full gets the kernel's EMFILE and
 * loses nothing (uapi-emfile checks each call). */
TEST(run_full_fd_table_is_emfile_and_loses_nothing)
{
	char preload[512], client[512], luoctl[512];
	struct test_luod d;
	int luo, s, m, status;

	test_build_path("src/preload/luo-preload.so", preload, sizeof(preload));
	if (access(preload, R_OK) < 0)
		test_skip("luo-preload.so is not built");
	test_build_path("tests/cli/uapi-emfile", client, sizeof(client));
	test_build_path("src/cli/luoctl", luoctl, sizeof(luoctl));
	test_luod_start(&d, NULL);
	luo = ASSERT_OK(luo_connect(d.socket));
	ASSERT_OK(luo_session_create(luo, "emfile", 0, &s));
	m = ASSERT_OK(cli_memfd_with_pattern(0, 0));
	ASSERT_EQ(write(m, "full table", 10), 10);
	ASSERT_OK(luo_session_preserve_fd(s, 1, m));
	close(m);
	ASSERT_OK(luo_session_handover(s));
	close(s);
	setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
	status = test_run_command((const char *const[]){ luoctl, "run", "--socket", d.socket, "--",
							 client, "emfile", "full table", NULL });
	ASSERT_EQ(status, 0);
	close(luo);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(bad_usage_exits_2), TEST_CASE(help_and_version_exit_0),
	  TEST_CASE(no_luod_exits_3_and_says_where), TEST_CASE(status_reports_luod),
	  TEST_CASE(list_prints_aligned_escaped_table), TEST_CASE(list_json_is_valid_and_exact),
	  TEST_CASE(show_prints_session_and_files),
	  TEST_CASE(list_and_show_read_streams_of_many_messages),
	  TEST_CASE(show_covers_both_namespaces_unless_told),
	  TEST_CASE(show_unknown_session_exits_4), TEST_CASE(run_execs_the_command_with_the_shim),
	  TEST_CASE(run_points_a_kernel_uapi_program_at_luod), TEST_CASE(options_go_anywhere),
	  TEST_CASE(json_is_one_line_unless_pretty), TEST_CASE(each_error_is_one_line),
	  TEST_CASE(socket_problems_are_explained), TEST_CASE(finds_the_per_user_luod),
	  TEST_CASE(a_stopped_luod_times_out),
	  TEST_CASE(list_and_show_tell_bytes_owner_creator_and_times),
	  TEST_CASE(dump_state_of_the_running_luod),
	  TEST_CASE(run_full_fd_table_is_emfile_and_loses_nothing),
	  TEST_CASE(drop_removes_what_nobody_holds_and_says_why_not_otherwise))
