/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>

/*
 * Forks a holder that keeps keep[0..n) open until the kexec: a new session
 * (so that the harness's kill of the case's process group spares it), every
 * other fd closed (the harness waits for its result pipe to close).  Returns
 * once the holder is set up.
 */
void start_holder(const int *keep, size_t n);
