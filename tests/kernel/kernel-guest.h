/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: helpers of the programs that run inside a LUO kernel guest
 *
 * For the suites in tests/kernel/ that kernel/lab.sh runs in QEMU: which
 * stage runs (LAB_STAGE), the kernel's device, and a holder process that
 * keeps fds open until the kexec.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define KERNEL_DEV "/dev/liveupdate"

/*
 * Skips the case outside the harness (no LAB_STAGE: the reason names
 * run_hint, how to run the suite) or in another stage than stage; with
 * need_device, fails it when the guest has no KERNEL_DEV.
 */
void kernel_need_stage(const char *stage, const char *run_hint, bool need_device);

/* A new O_CLOEXEC fd of KERNEL_DEV, or -errno. */
int kernel_dev_open(void);

/*
 * Forks a holder that keeps keep[0..n) open until the kexec: a new session
 * (so that the harness's kill of the case's process group spares it), every
 * other fd closed (the harness waits for its result pipe to close).  Returns
 * once the holder is set up.
 */
void start_holder(const int *keep, size_t n);
