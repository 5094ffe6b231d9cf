/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: what the benchmark programs share
 *
 * Each benchmark program starts its own luod (the build's, or --luod PATH)
 * on a socket in a private temporary directory, measures, stops it, and
 * prints exactly one JSON object on stdout for bench/run to collect; its
 * progress goes to stderr.  This module holds the clock, the statistics, the
 * luod process, the file-limit raise and a tiny JSON writer, so that each
 * program holds only its measurement.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/*
 * Parses a comma-separated list of sizes (the -f option) into sizes, at most
 * max of them; returns how many.  sizes is overwritten from the start.
 */
size_t bench_parse_sizes(char *list, size_t *sizes, size_t max);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* Sorts v in place; the p-quantile (0..1, nearest rank) of n values. */
double bench_quantile(double *v, size_t n, double p);
double bench_mean(const double *v, size_t n);

/* Least squares fit of y = a + b x; returns b, stores a and r^2 when non-NULL. */
double bench_slope(const double *x, const double *y, size_t n, double *ret_intercept,
		   double *ret_r2);

/*
 * Raises RLIMIT_NOFILE (soft and, when allowed, hard) to at least want and
 * returns the soft limit now in force (which may be lower), or -errno.
 * Children (luod) inherit it.
 */
long bench_raise_fd_limit(long want);

struct bench_luod {
	pid_t pid;
	char dir[128];
	char socket[192];
	char path[512]; /* the binary */
};

/*
 * Starts luod in the foreground on a socket in a fresh temporary directory,
 * with the extra NULL-terminated arguments, and waits until it accepts
 * connections from this pid's luod.  luod's output goes to stderr.
 */
int bench_luod_start(struct bench_luod *d, const char *luod_path, const char *const *extra);
/* SIGTERM, reap, remove the directory.  Returns luod's exit status or -errno. */
int bench_luod_stop(struct bench_luod *d);
/* A new connection to d's socket through libluo. */
int bench_luod_connect(const struct bench_luod *d);

/* Resident and proportional set size of pid in bytes (VmRSS, smaps_rollup Pss). */
int bench_proc_memory(pid_t pid, uint64_t *ret_rss, uint64_t *ret_pss);

/*
 * If >= 0, luod's stderr (its log) goes to this fd instead of the
 * benchmark's stderr, so that a benchmark can read what luod measured.
 */
extern int bench_luod_log_fd;

/* luod's STATUS (struct luo_wire_status's fields a benchmark uses). */
struct bench_luod_status {
	pid_t pid, worker_pid;
	uint64_t n_files, n_worker_restarts, n_live_updates, journal_size;
};
int bench_luod_status(int conn, struct bench_luod_status *ret);

/*
 * All of luod's memory: keeper and worker together, and the journal memfd.
 * rss and pss are the two processes' VmRSS and Pss summed, without their
 * mappings of the journal; journal is the memfd's allocated bytes (its pages
 * count once, whether mapped or not); journal_size is its length.
 */
struct bench_luod_memory {
	uint64_t rss, pss, journal, journal_size;
	uint64_t keeper_pss, worker_pss;
};
int bench_luod_memory(pid_t keeper, pid_t worker, struct bench_luod_memory *ret);

/*
 * fork + execve(luod --version) + exit + reap, repeat times: what any
 * re-exec of luod costs before it carries any state.  The median in us.
 */
int bench_bare_exec(const char *luod_path, int repeat, double *ret_median_us);

/* Bare exec samples gathered between measurements, so that a comparison is
 * made under the same load (a shared machine). */
struct bench_bare {
	double samples[1024];
	size_t n;
};
/* Adds n samples (up to the array's size); 0 or -errno. */
int bench_bare_sample(struct bench_bare *b, const char *luod_path, int n);

/*
 * The JSON object on stdout.  Keys are plain identifiers; values are written
 * as they are given.  bench_json_begin() opens it, bench_json_end() closes it.
 */
void bench_json_begin(const char *benchmark);
void bench_json_num(const char *key, double v);
void bench_json_int(const char *key, int64_t v);
void bench_json_str(const char *key, const char *v);
void bench_json_bool(const char *key, bool v);
/* Opens a nested array of objects, or an object inside it, and closes them. */
void bench_json_array_begin(const char *key);
void bench_json_array_end(void);
void bench_json_object_begin(void);
void bench_json_object_end(void);
void bench_json_end(void);

/* Progress on stderr, prefixed with the program's name. */
void bench_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The luod binary: --luod's value, $LUO_BENCH_LUOD, or the build's. */
const char *bench_default_luod(void);
