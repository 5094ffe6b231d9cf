/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: what the benchmark programs share
 *
 * See bench-util.h.  The luod started here lives in a temporary directory
 * under $TMPDIR (or /tmp) that bench_luod_stop() removes; a benchmark that
 * dies leaves it behind, never a running luod, because luod's parent is the
 * benchmark and the benchmark kills it on every path it controls.
 */
#include "bench-util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <luo/luo.h>

#include "basic/macro.h"
#include "config.h"
#include "protocol/protocol.h"

int bench_luod_log_fd = -1;

size_t bench_parse_sizes(char *list, size_t *sizes, size_t max)
{
	char *save = NULL;
	size_t n = 0;

	for (char *tok = strtok_r(list, ",", &save); tok && n < max;
	     tok = strtok_r(NULL, ",", &save))
		sizes[n++] = strtoul(tok, NULL, 10);
	return n;
}

uint64_t bench_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * UINT64_C(1000000000) + (uint64_t)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double bench_quantile(double *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	/* Nearest rank: the smallest value with at least p of the samples at or below it. */
	i = (size_t)ceil(p * (double)n);
	if (i > 0)
		i--;
	if (i >= n)
		i = n - 1;
	return v[i];
}

double bench_mean(const double *v, size_t n)
{
	double s = 0;

	if (n == 0)
		return NAN;
	for (size_t i = 0; i < n; i++)
		s += v[i];
	return s / (double)n;
}

double bench_slope(const double *x, const double *y, size_t n, double *ret_intercept,
		   double *ret_r2)
{
	double mx = bench_mean(x, n), my = bench_mean(y, n), sxx = 0, sxy = 0, syy = 0, b;

	for (size_t i = 0; i < n; i++) {
		sxx += (x[i] - mx) * (x[i] - mx);
		sxy += (x[i] - mx) * (y[i] - my);
		syy += (y[i] - my) * (y[i] - my);
	}
	b = sxx > 0 ? sxy / sxx : NAN;
	if (ret_intercept)
		*ret_intercept = my - b * mx;
	if (ret_r2)
		*ret_r2 = sxx > 0 && syy > 0 ? (sxy * sxy) / (sxx * syy) : NAN;
	return b;
}

long bench_raise_fd_limit(long want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return negative_errno();
	if (rl.rlim_cur >= (rlim_t)want)
		return (long)rl.rlim_cur;
	if (rl.rlim_max < (rlim_t)want) {
		struct rlimit more = { .rlim_cur = (rlim_t)want, .rlim_max = (rlim_t)want };

		/* Only with CAP_SYS_RESOURCE, and never past fs.nr_open: fall back quietly. */
		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			return want;
	}
	rl.rlim_cur = MIN(rl.rlim_max, (rlim_t)want);
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return negative_errno();
	return (long)rl.rlim_cur;
}

const char *bench_default_luod(void)
{
	static char path[512];
	const char *e = getenv("LUO_BENCH_LUOD");

	if (e && *e)
		return e;
	snprintf(path, sizeof(path), "%s/src/daemon/luod", LUO_BUILD_ROOT);
	return path;
}

int bench_luod_connect(const struct bench_luod *d)
{
	return luo_connect(d->socket);
}

static int luod_start(struct bench_luod *d, const char *luod_path, const char *const *extra);

int bench_luod_start(struct bench_luod *d, const char *luod_path, const char *const *extra)
{
	int r = luod_start(d, luod_path, extra);

	/* Nothing left behind on failure: no luod, no directory. */
	if (r < 0 && d->dir[0] && strchr(d->dir, '/'))
		(void)bench_luod_stop(d);
	return r;
}

static int luod_start(struct bench_luod *d, const char *luod_path, const char *const *extra)
{
	const char *tmp = getenv("TMPDIR");
	const char *argv[32];
	size_t n = 0;

	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "%s/luo-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(d->dir)) {
		d->dir[0] = 0;
		return negative_errno();
	}
	snprintf(d->socket, sizeof(d->socket), "%s/luod.sock", d->dir);
	snprintf(d->path, sizeof(d->path), "%s", luod_path);

	argv[n++] = d->path;
	argv[n++] = "--foreground";
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	for (size_t i = 0; extra && extra[i] && n < ELEMENTSOF(argv) - 1; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;

	fflush(NULL);
	d->pid = fork();
	if (d->pid < 0)
		return negative_errno();
	if (d->pid == 0) {
		/* stdout is the JSON result: luod's words go to stderr (or the log fd). */
		if (bench_luod_log_fd >= 0)
			dup2(bench_luod_log_fd, STDERR_FILENO);
		dup2(STDERR_FILENO, STDOUT_FILENO);
		execv(d->path, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 2000; i++) {
		_cleanup_close_ int fd = luo_connect(d->socket);
		int status;

		if (fd >= 0) {
			struct ucred cred;
			socklen_t len = sizeof(cred);

			if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
				return negative_errno();
			if (cred.pid != d->pid)
				return -EADDRINUSE;
			return 0;
		}
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->pid = 0;
			return -ECHILD;
		}
		usleep(2000);
	}
	return -ETIMEDOUT;
}

int bench_luod_stop(struct bench_luod *d)
{
	int status = 0;

	if (d->pid > 0) {
		kill(d->pid, SIGTERM);
		for (int i = 0; i < 5000; i++) {
			if (waitpid(d->pid, &status, WNOHANG) == d->pid)
				break;
			if (i == 4999) {
				kill(d->pid, SIGKILL);
				waitpid(d->pid, &status, 0);
			}
			usleep(2000);
		}
		d->pid = 0;
	}
	unlink(d->socket);
	rmdir(d->dir);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int bench_proc_memory(pid_t pid, uint64_t *ret_rss, uint64_t *ret_pss)
{
	char path[64], line[256];
	uint64_t rss = 0, pss = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return negative_errno();
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %" SCNu64 " kB", &rss) == 1)
			break;
	fclose(f);

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "re");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "Pss: %" SCNu64 " kB", &pss) == 1)
				break;
		fclose(f);
	}
	*ret_rss = rss * 1024;
	*ret_pss = pss * 1024;
	return 0;
}

int bench_luod_status(int conn, struct bench_luod_status *ret)
{
	struct luo_wire_status st = { .size = sizeof(st) };
	int r = luo_wire_call(conn, LUO_IOCTL_STATUS, &st, sizeof(st), NULL, 0, NULL);

	if (r < 0)
		return r;
	*ret = (struct bench_luod_status){
		.pid = (pid_t)st.pid,
		.worker_pid = (pid_t)st.worker_pid,
		.n_files = st.n_files,
		.n_worker_restarts = st.n_worker_restarts,
		.n_live_updates = st.n_live_updates,
		.journal_size = st.journal_size,
	};
	return 0;
}

/* Sums Rss and Pss of pid's mappings of the journal memfd (to count it once). */
static void journal_mapped(pid_t pid, uint64_t *rss, uint64_t *pss)
{
	char path[64], line[512];
	bool in = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		uint64_t kb;

		/* A mapping's header starts with its address; its fields with a capital. */
		if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f'))
			in = strstr(line, "memfd:luod-journal") != NULL;
		else if (in && sscanf(line, "Rss: %" SCNu64 " kB", &kb) == 1)
			*rss += kb * 1024;
		else if (in && sscanf(line, "Pss: %" SCNu64 " kB", &kb) == 1)
			*pss += kb * 1024;
	}
	fclose(f);
}

/* The journal memfds the worker holds (a compaction may hold a second one). */
static void journal_files(pid_t pid, uint64_t *allocated, uint64_t *size)
{
	char path[64];
	ino_t seen[8];
	size_t n_seen = 0;
	struct dirent *de;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((de = readdir(dir))) {
		char link[600], target[256];
		struct stat st;
		ssize_t n;
		bool dup = false;

		if (de->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (!strstr(target, "memfd:luod-journal") || stat(link, &st) < 0)
			continue;
		for (size_t i = 0; i < n_seen; i++)
			dup |= seen[i] == st.st_ino;
		if (dup || n_seen == ELEMENTSOF(seen))
			continue;
		seen[n_seen++] = st.st_ino;
		*allocated += (uint64_t)st.st_blocks * 512;
		*size += (uint64_t)st.st_size;
	}
	closedir(dir);
}

int bench_luod_memory(pid_t keeper, pid_t worker, struct bench_luod_memory *ret)
{
	uint64_t krss = 0, kpss = 0, wrss = 0, wpss = 0, mrss = 0, mpss = 0;
	struct bench_luod_memory m = {};
	int r;

	r = bench_proc_memory(keeper, &krss, &kpss);
	if (r >= 0 && worker > 0)
		r = bench_proc_memory(worker, &wrss, &wpss);
	if (r < 0)
		return r;
	journal_mapped(keeper, &mrss, &mpss);
	if (worker > 0) {
		journal_mapped(worker, &mrss, &mpss);
		journal_files(worker, &m.journal, &m.journal_size);
	}
	m.keeper_pss = kpss;
	m.worker_pss = wpss;
	m.rss = krss + wrss - MIN(mrss, krss + wrss);
	m.pss = kpss + wpss - MIN(mpss, kpss + wpss);
	*ret = m;
	return 0;
}

int bench_bare_exec(const char *luod_path, int repeat, double *ret_median_us)
{
	_cleanup_free_ double *v = calloc(repeat, sizeof(double));

	if (!v)
		return -ENOMEM;
	for (int i = 0; i < repeat; i++) {
		uint64_t t0 = bench_now_ns();
		int status;
		pid_t pid = fork();

		if (pid < 0)
			return negative_errno();
		if (pid == 0) {
			int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

			if (null >= 0)
				dup2(null, STDOUT_FILENO);
			execl(luod_path, luod_path, "--version", (char *)NULL);
			_exit(127);
		}
		if (waitpid(pid, &status, 0) < 0)
			return negative_errno();
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			return -EPROTO;
		v[i] = (double)(bench_now_ns() - t0) / 1e3;
	}
	*ret_median_us = bench_quantile(v, repeat, 0.5);
	return 0;
}

/* ---- JSON on stdout ---- */

static bool json_first[8];
static int json_depth;

static void json_sep(void)
{
	if (!json_first[json_depth])
		putchar(',');
	json_first[json_depth] = false;
}

static void json_key(const char *key)
{
	json_sep();
	printf("\"%s\":", key);
}

static void json_push(char open)
{
	putchar(open);
	if (json_depth + 1 < (int)ELEMENTSOF(json_first))
		json_depth++;
	json_first[json_depth] = true;
}

void bench_json_begin(const char *benchmark)
{
	json_depth = 0;
	json_first[0] = true;
	json_push('{');
	bench_json_str("benchmark", benchmark);
}

void bench_json_num(const char *key, double v)
{
	json_key(key);
	if (isfinite(v))
		printf("%.6g", v);
	else
		fputs("null", stdout);
}

void bench_json_int(const char *key, int64_t v)
{
	json_key(key);
	printf("%" PRId64, v);
}

void bench_json_str(const char *key, const char *v)
{
	json_key(key);
	putchar('"');
	for (const char *p = v; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			printf("\\u%04x", (unsigned char)*p);
		else
			putchar(*p);
	}
	putchar('"');
}

void bench_json_bool(const char *key, bool v)
{
	json_key(key);
	fputs(v ? "true" : "false", stdout);
}

void bench_json_array_begin(const char *key)
{
	json_key(key);
	json_push('[');
}

void bench_json_array_end(void)
{
	json_depth--;
	putchar(']');
}

void bench_json_object_begin(void)
{
	json_sep();
	json_push('{');
}

void bench_json_object_end(void)
{
	json_depth--;
	putchar('}');
}

void bench_json_end(void)
{
	json_depth--;
	puts("}");
	fflush(stdout);
}

void bench_log(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", program_invocation_short_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int bench_bare_sample(struct bench_bare *b, const char *luod_path, int n)
{
	for (int i = 0; i < n && b->n < sizeof(b->samples) / sizeof(b->samples[0]); i++) {
		int r = bench_bare_exec(luod_path, 1, &b->samples[b->n]);

		if (r < 0)
			return r;
		b->n++;
	}
	return 0;
}
