/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: programs that never touch /dev/liveupdate are unchanged by the shim
 *
 * Each case runs an ordinary program twice, without and with luo-preload.so
 * preloaded (a luod running both times), and requires the same standard
 * output and the same exit status.  One more run checks that the shim was
 * really mapped into such a program.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include "preload-test.h"

/* Runs argv without, then with, the shim and compares stdout and exit status. */
static void same_with_and_without(const char *const *argv)
{
	static char plain[65536], shimmed[65536];
	struct test_luod d;
	char luod[512];
	int r1, r2;

	if (access(argv[0], X_OK) < 0)
		test_skip("%s is not installed", argv[0]);
	preload_need_luod(luod, sizeof(luod));
	test_luod_start(&d, NULL);
	/* A sanitized shim drags the ASan runtime into foreign programs: no leak reports from them. */
	setenv("ASAN_OPTIONS", "detect_leaks=0:verify_asan_link_order=0", 1);
	preload_setenv();
	char *with = strdup(getenv("LD_PRELOAD"));
#ifdef PRELOAD_SANITIZER_RUNTIME
	setenv("LD_PRELOAD", PRELOAD_SANITIZER_RUNTIME, 1);
#else
	unsetenv("LD_PRELOAD");
#endif
	r1 = test_run_command_output(argv, plain, sizeof(plain));
	setenv("LD_PRELOAD", with, 1);
	free(with);
	r2 = test_run_command_output(argv, shimmed, sizeof(shimmed));
	unsetenv("LD_PRELOAD");
	test_luod_stop(&d);
	ASSERT_EQ(r2, r1);
	ASSERT_STREQ(shimmed, plain);
}

TEST(ls_is_unchanged)
{
	same_with_and_without((const char *const[]){ "/bin/ls", "-la", "/etc", "/dev/null", NULL });
}

TEST(ls_failure_is_unchanged)
{
	same_with_and_without((const char *const[]){ "/bin/ls", "/no/such/path", NULL });
}

TEST(cat_is_unchanged)
{
	same_with_and_without((const char *const[]){ "/bin/cat", "/etc/os-release", NULL });
}

TEST(stat_of_other_paths_is_unchanged)
{
	same_with_and_without((const char *const[]){ "/usr/bin/stat", "-c", "%n %F %a %i",
						     "/dev/null", "/etc", "/bin/ls", NULL });
}

TEST(python_is_unchanged)
{
	same_with_and_without((const char *const[]){
		"/usr/bin/python3", "-c",
		"import os, sys, socket, fcntl, termios\n"
		"print(sorted(os.listdir('/etc'))[:5])\n"
		"print(os.stat('/dev/null').st_mode, os.access('/etc/passwd', os.R_OK))\n"
		"a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
		"try:\n"
		"    fcntl.ioctl(a, 0xBA00, b'\\0' * 72)\n"
		"except OSError as e:\n"
		"    print('ioctl', e.errno)\n"
		"print(os.path.exists('/nonexistent'))\n"
		"sys.exit(3)\n",
		NULL });
}

TEST(shell_exit_status_is_unchanged)
{
	same_with_and_without((const char *const[]){ "/bin/sh", "-c", "echo hi; exit 7", NULL });
}

TEST(shim_is_loaded_in_ordinary_programs)
{
	char out[65536];
	const char *const argv[] = { "/bin/cat", "/proc/self/maps", NULL };

	preload_setenv();
	setenv("ASAN_OPTIONS", "detect_leaks=0:verify_asan_link_order=0", 1);
	ASSERT_EQ(test_run_command_output(argv, out, sizeof(out)), 0);
	ASSERT_TRUE(strstr(out, "/luo-preload.so") != NULL);
}

TEST(shim_exports_only_interposed_functions)
{
	static const char *const interposed[] = { "open",  "openat", "__open_2", "ioctl",  "stat",
						  "fstat", "statx",  "access",	 "fstatfs" };
	static const char *const internal[] = { "preload_emulate_ioctl", "preload_wire_call",
						"uaccess_read", "luo_wire_call",
						"socket_send_message" };
	char shim[512];
	void *h;

	test_build_path("src/preload/luo-preload.so", shim, sizeof(shim));
	h = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		test_fail_at(__FILE__, __LINE__, "dlopen %s: %s", shim, dlerror());
	for (size_t i = 0; i < sizeof(interposed) / sizeof(interposed[0]); i++) {
		Dl_info info;
		void *p = dlsym(h, interposed[i]);

		ASSERT_TRUE(p);
		/* The shim's own definition, not libc's found through its dependencies. */
		ASSERT_TRUE(dladdr(p, &info) && strstr(info.dli_fname, "luo-preload.so"));
	}
	for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); i++)
		if (dlsym(h, internal[i]))
			test_fail_at(__FILE__, __LINE__, "the shim exports %s", internal[i]);
	dlclose(h);
}

TEST_MAIN(TEST_CASE(ls_is_unchanged), TEST_CASE(ls_failure_is_unchanged),
	  TEST_CASE(cat_is_unchanged), TEST_CASE(stat_of_other_paths_is_unchanged),
	  TEST_CASE(python_is_unchanged), TEST_CASE(shell_exit_status_is_unchanged),
	  TEST_CASE(shim_is_loaded_in_ordinary_programs),
	  TEST_CASE(shim_exports_only_interposed_functions))
