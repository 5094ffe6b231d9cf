/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: registration of the built-in handlers
 *
 * The engine tries handlers in registration order and the first whose
 * can_preserve accepts a file wins (spec section 5).  The order here is the
 * one luod always uses: memfd before regular (an unlinked tmpfs file is a
 * memfd's kind; regular refuses it anyway), then sockets, pipes and eventfds,
 * whose predicates are disjoint.  Last, socket-v1, which takes no new file:
 * it reads the sockets of an older luod's state.
 */
#include <errno.h>

#include "basic/macro.h"
#include "core/engine.h"
#include "core/handler.h"

int luo_engine_add_default_handlers(luo_engine *e)
{
	static const struct luo_handler *const handlers[] = {
		&luo_handler_memfd,   &luo_handler_socket,  &luo_handler_pipe,
		&luo_handler_eventfd, &luo_handler_regular, &luo_handler_socket_v1,
	};

	if (!e)
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(handlers); i++) {
		int r = luo_engine_add_handler(e, handlers[i]);

		if (r < 0)
			return r;
	}
	return 0;
}
