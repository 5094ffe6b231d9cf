/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: File-Lifecycle-Bound state
 *
 * One struct luo_flb per ops per engine, created on demand by the first file
 * of a handler that depends on it and kept in the engine's fixed table (files
 * point into it).  Its count is the number of dependent files that are
 * preserved or not yet finished, whichever side of an update they are on:
 *
 *   0 -> 1 by preserve_fd:               ops->preserve
 *   1 -> 0 by abort or reboot drop:      ops->unpreserve, then release
 *   first dependent retrieve after an update (incoming set): ops->retrieve
 *   1 -> 0 by finish:                    ops->finish, then release
 *
 * Release closes the FLB's fd and frees its data, so the ops never have to.
 * The state codec reads and writes these structs directly, so everything the
 * counting needs lives in them.
 */
#include <errno.h>
#include <stdlib.h>

#include "basic/macro.h"
#include "engine-internal.h"

struct luo_flb *luo_flb_get(struct luo_engine *e, const struct luo_flb_ops *ops)
{
	struct luo_flb *flb;

	for (size_t i = 0; i < e->n_flbs; i++)
		if (e->flbs[i].ops == ops)
			return &e->flbs[i];
	if (e->n_flbs >= LUO_MAX_FLBS)
		return NULL;
	flb = &e->flbs[e->n_flbs++];
	*flb = (struct luo_flb){ .ops = ops, .fd = -EBADF, .engine = e };
	return flb;
}

void luo_flb_release(struct luo_flb *flb, bool close_fd)
{
	if (close_fd && flb->engine)
		luo_engine_close_held(flb->engine, flb->fd);
	else if (close_fd)
		safe_close(flb->fd);
	flb->fd = -EBADF;
	free(flb->data);
	flb->data = NULL;
	flb->data_size = 0;
	flb->incoming = false;
	flb->retrieved = false;
}

int luo_flb_file_preserve(struct luo_flb *flb)
{
	if (flb->count == 0 && flb->ops->preserve) {
		int r = flb->ops->preserve(flb);

		if (r < 0) {
			/* Whatever the ops left behind belongs to no file. */
			luo_flb_release(flb, true);
			return r;
		}
	}
	flb->count++;
	return 0;
}

/* One dependent file gone; the last one's going runs last() and releases the FLB. */
static void flb_put(struct luo_flb *flb, void (*last)(struct luo_flb *flb))
{
	if (flb->count == 0)
		return;
	if (--flb->count > 0)
		return;
	if (last)
		last(flb);
	/* An engine that borrows its fds (a copy of another's state) closes none. */
	luo_flb_release(flb, !flb->engine || !flb->engine->borrowed_fds);
}

void luo_flb_file_unpreserve(struct luo_flb *flb)
{
	flb_put(flb, flb->ops->unpreserve);
}

int luo_flb_file_retrieve(struct luo_flb *flb)
{
	int r;

	if (!flb->incoming || flb->retrieved)
		return 0;
	if (flb->ops->retrieve) {
		r = flb->ops->retrieve(flb);
		if (r < 0)
			return r;
	}
	flb->incoming = false;
	flb->retrieved = true;
	return 0;
}

void luo_flb_file_finish(struct luo_flb *flb)
{
	flb_put(flb, flb->ops->finish);
}
