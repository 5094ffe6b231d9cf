/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: fuzz target for the state decoder
 *
 * Each input is decoded as a state blob into a fresh engine with the
 * built-in handlers, borrowing the fds it names (nothing is checked, adopted
 * or closed, so any number is harmless).  An input that decodes must
 * re-encode to a blob that decodes again and re-encodes to the very same
 * bytes; one that fails must leave the engine empty.  The dump of the input
 * must agree with the decoder: it succeeds where decode succeeds and fails
 * with the same errno, except where only decode can tell (a handler or FLB
 * this binary lacks).  Any disagreement abort()s, which libFuzzer and the
 * corpus replay both report.
 *
 * luod's ext node is accepted (its body is not looked at) so that blobs
 * written by the daemon are valid inputs.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine-internal.h"
#include "core/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int ext_write_nothing(void *fdt, void *userdata)
{
	return 0;
}

static int ext_read_anything(const void *fdt, int offset, void *userdata)
{
	return 0;
}

static const struct luo_state_ext ext = {
	.node = LUO_STATE_EXT_NODE,
	.write = ext_write_nothing,
	.read = ext_read_anything,
};

static luo_engine *new_engine(void)
{
	luo_engine *e = NULL;

	if (luo_engine_new(&e) < 0 || luo_engine_add_default_handlers(e) < 0)
		abort();
	return e;
}

static bool engine_is_empty(const luo_engine *e)
{
	return luo_engine_n_sessions(e, LUO_SESSION_OUTGOING) == 0 &&
	       luo_engine_n_sessions(e, LUO_SESSION_INCOMING) == 0 && luo_engine_n_files(e) == 0 &&
	       e->handles.count == 0 && !e->borrowed_fds && e->update_number == 0 &&
	       e->next_handle == 0;
}

/* encode(decode(blob)) must be a fixed point from the first re-encode on. */
static void check_round_trip(const luo_engine *e)
{
	void *first = NULL, *second = NULL;
	size_t first_size, second_size;
	luo_engine *again = new_engine();

	if (luo_state_encode(e, &ext, &first, &first_size) < 0)
		abort();
	if (luo_state_decode(again, first, first_size, LUO_STATE_BORROW_FDS, &ext) < 0)
		abort();
	if (luo_state_encode(again, &ext, &second, &second_size) < 0)
		abort();
	if (first_size != second_size || memcmp(first, second, first_size) != 0)
		abort();
	free(first);
	free(second);
	luo_engine_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	luo_engine *e = new_engine();
	int r, text, json;

	if (!devnull) {
		devnull = fopen("/dev/null", "we");
		if (!devnull)
			abort();
	}

	r = luo_state_decode(e, data, size, LUO_STATE_BORROW_FDS, &ext);
	if (r >= 0)
		check_round_trip(e);
	else if (!engine_is_empty(e))
		abort();
	luo_engine_free(e);

	text = luo_state_dump(data, size, devnull, false);
	json = luo_state_dump(data, size, devnull, true);
	if (text != json)
		abort();
	if (r >= 0 && text < 0)
		abort();
	if (r < 0 && r != -ENOPROTOOPT && text != r)
		abort();
	return 0;
}
