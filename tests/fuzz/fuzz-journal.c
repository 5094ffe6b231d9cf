/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: fuzz target for the journal reader
 *
 * Each input is a whole journal (header page, snapshot, log), recovered
 * with luo_journal_recover_mem() into a fresh engine with the built-in
 * handlers, borrowing the fds it names (nothing is checked, adopted or
 * closed, so any number is harmless); the ext entries go to a callback that
 * reads every byte of them.  A recovery that fails must leave the engine
 * empty.  One that succeeds must give an engine the state codec can carry:
 * its encoding decodes again and re-encodes to the very same bytes, since
 * that is what compaction writes and the next recovery reads.  Only a state
 * whose fds a real recovery would refuse (named twice, or below 3) is
 * spared that check.  Any disagreement abort()s, which libFuzzer and the
 * corpus replay both report.
 *
 * Every record carries a checksum and a sequence number, so nearly every
 * mutation of a record stops at them.  To reach the replay of the records
 * behind them, each input is then recovered a second time from a copy
 * whose checksums (snapshot and records) and sequence numbers are made
 * right again.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine-internal.h"
#include "core/journal.h"
#include "core/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

static int ext_put(uint32_t type, uint64_t key, const void *data, size_t size, void *userdata)
{
	const uint8_t *p = data;
	uint8_t sum = 0;

	if (size > LUO_JOURNAL_EXT_MAX || (size > 0 && !data))
		abort();
	for (size_t i = 0; i < size; i++)
		sum += p[i];
	*(uint8_t *)userdata += sum;
	return 0;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* Whether luo_engine_adopt_fds() could take these fds, were they open. */
static bool fds_adoptable(const luo_engine *e)
{
	size_t n = 0, cap = e->n_files + e->n_flbs + 1;
	int *fds = malloc(cap * sizeof(int));
	bool ok = true;

	if (!fds)
		abort();
	for (luo_session *s = luo_engine_first_session(e, LUO_SESSION_OUTGOING); s;
	     s = luo_session_next(s))
		LIST_FOREACH (i, &s->files)
			if (n < cap && list_entry(i, struct luo_file, order)->hf.fd >= 0)
				fds[n++] = list_entry(i, struct luo_file, order)->hf.fd;
	for (luo_session *s = luo_engine_first_session(e, LUO_SESSION_INCOMING); s;
	     s = luo_session_next(s))
		LIST_FOREACH (i, &s->files)
			if (n < cap && list_entry(i, struct luo_file, order)->hf.fd >= 0)
				fds[n++] = list_entry(i, struct luo_file, order)->hf.fd;
	for (size_t k = 0; k < e->n_flbs; k++)
		if (n < cap && e->flbs[k].fd >= 0)
			fds[n++] = e->flbs[k].fd;
	qsort(fds, n, sizeof(int), cmp_int);
	for (size_t i = 0; i < n && ok; i++)
		ok = fds[i] >= 3 && (i == 0 || fds[i] != fds[i - 1]);
	free(fds);
	return ok;
}

/* encode(recovered) decodes, and re-encodes to the same bytes. */
static void check_round_trip(const luo_engine *e)
{
	void *first = NULL, *second = NULL;
	size_t first_size, second_size;
	luo_engine *again = new_engine();

	if (luo_state_encode(e, NULL, &first, &first_size) < 0)
		abort();
	if (luo_state_decode(again, first, first_size, LUO_STATE_BORROW_FDS, NULL) < 0)
		abort();
	if (luo_state_encode(again, NULL, &second, &second_size) < 0)
		abort();
	if (first_size != second_size || memcmp(first, second, first_size) != 0)
		abort();
	free(first);
	free(second);
	luo_engine_free(again);
}

static void recover_and_check(const uint8_t *data, size_t size)
{
	struct luo_journal_stats st = {};
	luo_engine *e = new_engine();
	uint8_t sum = 0;
	int r;

	r = luo_journal_recover_mem(data, size, e, LUO_JOURNAL_BORROW_FDS, ext_put, &sum, &st);
	if (r >= 0) {
		if (!e->borrowed_fds || st.log_size > size || st.snapshot_size > size)
			abort();
		if (fds_adoptable(e))
			check_round_trip(e);
	} else if (!engine_is_empty(e)) {
		abort();
	}
	luo_engine_free(e);
}

/* Rewrites the checksums and sequence numbers of what looks like a journal. */
static bool reseal(uint8_t *p, size_t size)
{
	struct luo_journal_header *h = (struct luo_journal_header *)p;
	uint64_t seq, pos;

	if (size < sizeof(*h) || h->snapshot_offset > size ||
	    h->snapshot_size > size - h->snapshot_offset || h->log_offset > size ||
	    h->log_offset % 8 || h->log_end > size - h->log_offset)
		return false;
	h->snapshot_crc = luo_crc32c(0, p + h->snapshot_offset, h->snapshot_size);
	seq = h->snapshot_seq;
	for (pos = 0; h->log_end - pos >= sizeof(struct luo_jrec);) {
		struct luo_jrec *rec = (struct luo_jrec *)(p + h->log_offset + pos);

		if (rec->size < sizeof(*rec) || rec->size % 8 || rec->size > h->log_end - pos)
			break;
		rec->seq = ++seq;
		rec->crc = 0;
		rec->crc = luo_crc32c(0, rec, rec->size);
		pos += rec->size;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	recover_and_check(data, size);
	copy = malloc(size ? size : 1);
	if (!copy)
		abort();
	memcpy(copy, data, size);
	if (reseal(copy, size))
		recover_and_check(copy, size);
	free(copy);
	return 0;
}
