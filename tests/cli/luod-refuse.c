/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: stand-ins for a new luod binary that refuses the state
 *
 * `luoctl update --exec` runs the target twice: first `BINARY --check-journal
 * FD` in a child (must print luod-state-ok and exit 0), then, in the
 * blackout, `BINARY --resume FD --listen-fd FD2 ...` as luod's keeper, whose
 * worker recovers from the journal.  Built twice from this file:
 *
 *   luod-refuse-check    refuses at --check-journal (exit 1, as a binary that
 *                        does not understand the journal would); the update
 *                        must be aborted before the blackout.
 *   luod-refuse-restore  passes the check (it is the real luod there) but at
 *                        --resume runs the real luod with the fault
 *                        injection point "update-recover-refuse" set once (a test
 *                        build's luod), so that its worker refuses the
 *                        journal inside the blackout and the keeper rolls
 *                        back to the previous binary with fexecve().
 *
 * The real luod is $LUO_BUILD_ROOT/src/daemon/luod; the environment reaches
 * here from the test through luod.  Nothing is corrupted: every fd and the
 * journal pass through untouched.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *root = getenv("LUO_BUILD_ROOT");
	char luod[4096];
	bool check = argc > 1 && strcmp(argv[1], "--check-journal") == 0;

	if (!root) {
		fprintf(stderr, "luod-refuse: LUO_BUILD_ROOT is not set\n");
		return 1;
	}
	snprintf(luod, sizeof(luod), "%s/src/daemon/luod", root);
#ifdef REFUSE_AT_CHECK
	if (check) {
		fprintf(stderr, "luod-refuse-check: refusing the state\n");
		return 1;
	}
#else
	if (!check && setenv("LUOD_FAULT", "update-recover-refuse:1000:refuse", 1) < 0)
		return 1;
#endif
	argv[0] = luod;
	execv(luod, argv);
	perror("luod-refuse: execv");
	return 127;
}
