/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: choosing the shim's profile
 *
 * luoctl run --profile sets LUO_PRELOAD_PROFILE for its command and refuses
 * an unknown name before running anything; a program started with an unknown
 * LUO_PRELOAD_PROFILE cannot open the device (EINVAL), so that a misspelt
 * profile never tests the wrong kernel.  What each profile does is checked by
 * conformance.c, which the suite runs once per profile.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "preload-test.h"

static void need_luoctl(char *buf, size_t size)
{
	test_build_path("src/cli/luoctl", buf, size);
	if (access(buf, X_OK) < 0)
		test_skip("luoctl is not built (%s)", buf);
}

TEST(luoctl_run_profile_sets_the_environment)
{
	char luoctl[512], out[256];

	need_luoctl(luoctl, sizeof(luoctl));
	ASSERT_EQ(
		test_run_command_output(
			(const char *const[]){ luoctl, "run", "--profile=proposed", "--", "/bin/sh",
					       "-c", "echo \"$LUO_PRELOAD_PROFILE\"", NULL },
			out, sizeof(out)),
		0);
	ASSERT_STREQ(out, "proposed\n");
	ASSERT_EQ(test_run_command_output((const char *const[]){ luoctl, "run", "--profile",
								 "default", "--", "/bin/sh", "-c",
								 "echo \"$LUO_PRELOAD_PROFILE\"",
								 NULL },
					  out, sizeof(out)),
		  0);
	ASSERT_STREQ(out, "default\n");
}

TEST(luoctl_run_refuses_an_unknown_profile)
{
	char luoctl[512], out[256];

	need_luoctl(luoctl, sizeof(luoctl));
	/* A usage error (2), and the command is not run. */
	ASSERT_EQ(
		test_run_command_output((const char *const[]){ luoctl, "run", "--profile=mainline",
							       "--", "/bin/echo", "ran", NULL },
					out, sizeof(out)),
		2);
	ASSERT_STREQ(out, "");
	/* --profile belongs to run. */
	ASSERT_EQ(test_run_command_output(
			  (const char *const[]){ luoctl, "--profile=proposed", "status", NULL },
			  out, sizeof(out)),
		  2);
}

static void body_unknown_profile(void)
{
	struct stat st;

	/* The device is there, but this shim will not play an unknown kernel. */
	ASSERT_OK(sys(stat(DEV, &st)));
	ASSERT_ERRNO(open(DEV, O_RDWR | O_CLOEXEC), EINVAL);
	ASSERT_ERRNO(open(DEV, O_RDWR | O_CLOEXEC), EINVAL);
}

TEST(unknown_profile_refuses_the_device)
{
	setenv("LUO_PRELOAD_PROFILE", "proposd", 1);
	preload_case("unknown_profile_refuses_the_device", body_unknown_profile);
}

TEST_MAIN(TEST_CASE(luoctl_run_profile_sets_the_environment),
	  TEST_CASE(luoctl_run_refuses_an_unknown_profile),
	  TEST_CASE(unknown_profile_refuses_the_device))
