/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the shim's conformance suite on a real LUO kernel
 *
 * tests/preload/conformance.c is an ordinary kernel-uAPI program whose
 * cases are wrapped by PRELOAD_TEST(), which runs each body under
 * luo-preload.so against a luod.  Compiled for the kernel harness with
 * -Dpreload_case=kernel_preload_case, every case lands here instead and its
 * body talks to the kernel's own /dev/liveupdate: no luod, no shim (a case
 * fails if the shim is loaded).  The same source, the same checks.
 *
 * Cases that check mainline or the proposed session filesystem by
 * profile_proposed() are told which one this kernel is (its fstatfs() magic).
 * Where the kernel and the shim differ, the case is listed below with the
 * reason: either a rule of the shim that mainline does not have (by design),
 * or a divergence of the shim (or of the check) that is to be fixed there.
 * Its body is still run, in a child, and must fail (the case is then
 * reported as a skip naming the difference); a listed case that passes
 * fails, so the list cannot go stale silently.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "preload-test.h"

struct difference {
	const char *name;
	const char *why;
	/* A divergence to fix in the shim or the check, not a rule by design. */
	bool to_fix;
	/* Only on kernels with the proposed session filesystem (checked as the proposed profile). */
	bool with_session_fs;
};

/*
 * After the shim's default profile was made to match mainline, what is left
 * is what cannot be the same.  On a kernel with the session filesystem the
 * cases are checked as the shim's proposed profile, which also has luo's
 * extra handlers; the kernel patch series adds none.
 */
static const struct difference differences[] = {
	{ "no_luod_means_no_device",
	  "the kernel's device exists whether or not luod runs: a rule of the shim only", false,
	  false },
	{ "preserve_handler_set",
	  "the proposed profile adds luo's handlers (pipes, sockets, eventfds, regular files); "
	  "the patched kernel keeps mainline's memfd handler only",
	  false, true },
};

/* Whether this kernel has the proposed session filesystem (its magic). */
static bool kernel_has_session_fs(void)
{
	static int cached = -1;
	struct statfs sf;
	int dev, s, r;

	if (cached >= 0)
		return cached;
	dev = dev_open();
	if (dev < 0)
		test_fail_at(__FILE__, __LINE__, "open %s: %s", DEV, strerror(-dev));
	r = create_session(dev, "kernel-case-probe", &s);
	if (r < 0)
		test_fail_at(__FILE__, __LINE__, "probe session: %s", strerror(-r));
	cached = fstatfs(s, &sf) == 0 && sf.f_type == LUO_SESSION_MAGIC;
	close(s);
	close(dev);
	return cached;
}

static const struct difference *find_difference(const char *name)
{
	for (size_t i = 0; i < sizeof(differences) / sizeof(differences[0]); i++) {
		const struct difference *d = &differences[i];

		if (strcmp(d->name, name) != 0)
			continue;
		if (d->with_session_fs && !kernel_has_session_fs())
			return NULL;
		return d;
	}
	return NULL;
}

/* preload-test.h declares it: -Dpreload_case=kernel_preload_case. */
void kernel_preload_case(const char *name, void (*body)(void))
{
	const struct difference *d;
	struct stat st;
	int status;
	pid_t pid;

	if (!getenv("LAB_STAGE"))
		test_skip("runs inside a LUO kernel guest only "
			  "(kernel/lab.sh run tests/kernel/conformance)");
	if (stat(DEV, &st) < 0 || !S_ISCHR(st.st_mode))
		test_fail_at(__FILE__, __LINE__, "no character device %s", DEV);
	if (preload_loaded())
		test_fail_at(__FILE__, __LINE__,
			     "luo-preload.so is loaded: this run is for the kernel");

	/* The checks that depend on the kernel read the profile they expect from here. */
	if (kernel_has_session_fs())
		setenv("LUO_PRELOAD_PROFILE", "proposed", 1);
	else
		unsetenv("LUO_PRELOAD_PROFILE");
	d = find_difference(name);
	if (!d) {
		body();
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		test_fail_at(__FILE__, __LINE__, "fork: %m");
	if (pid == 0) {
		/* The body's diagnostics say how the kernel differs. */
		body();
		fflush(stdout);
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		test_fail_at(
			__FILE__, __LINE__,
			"%s is listed as a kernel difference (%s) but passes: drop it from the "
			"list in %s",
			name, d->why, __FILE__);
	test_skip("%s: %s",
		  d->to_fix ? "the shim differs from this kernel (to fix)"
			    : "differs on this kernel",
		  d->why);
}
