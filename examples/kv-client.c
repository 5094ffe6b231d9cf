/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: kv-client, the load generator and checker for kv-server
 *
 *   load    N keys of S bytes, pipelined (binary PUTs, batches of up to 4 MiB)
 *   verify  reads every key back and compares every byte; exit 1 on any loss
 *   hammer  requests in a loop over persistent connections, one thread each,
 *           reconnecting and retrying on failure, until --duration, --requests
 *           or SIGINT/SIGTERM; prints requests, failures, retries and latency
 *   cmd     sends one command line and prints the reply
 *
 * Values are derived from (seed, key index), so verification needs nothing
 * but the same options: a random block per seed, with the key's index mixed
 * into its first and last eight bytes so that a value under the wrong key
 * or a truncated one is caught.
 *
 * A hammer request "fails" when it gets a wrong answer or gets no answer for
 * --retry-for seconds despite reconnecting; a "retry" is a reconnection that
 * then succeeded.  Across kv-server restarts through luo both stay zero: the
 * connections are handed over and new ones wait in the backlog.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "kv-store.h"

#include "basic/macro.h"

#define READ_BUF (1u << 20)
#define BATCH_BYTES (4u << 20)
#define BATCH_MAX 1024

struct options {
	const char *host;
	int port;
	uint64_t keys;
	uint64_t size;
	uint64_t seed;
	const char *prefix;
	int conns;
	double duration;
	uint64_t requests;
	unsigned write_every;
	double retry_for;
	bool quiet;
};

static struct options opt = {
	.host = "127.0.0.1",
	.port = 7000,
	.keys = 1000,
	.size = 100,
	.seed = 1,
	.prefix = "key:",
	.conns = 4,
	.write_every = 10,
	.retry_for = 10,
};

static volatile sig_atomic_t stop_requested;

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- values ---- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	x ^= x >> 31;
	return x;
}

static uint8_t *value_block; /* opt.size random bytes for opt.seed */

static int value_block_init(void)
{
	uint64_t x = mix64(opt.seed + 0x1234);

	value_block = malloc(opt.size ? opt.size : 1);
	if (!value_block)
		return -ENOMEM;
	for (uint64_t i = 0; i < opt.size; i++) {
		if (i % 8 == 0)
			x = mix64(x + i);
		value_block[i] = (uint8_t)(x >> (8 * (i % 8)));
	}
	return 0;
}

static void make_value(uint64_t index, uint8_t *dst)
{
	uint64_t stamp = mix64(index ^ (opt.seed << 32));

	memcpy(dst, value_block, opt.size);
	for (unsigned k = 0; k < 8 && k < opt.size; k++)
		dst[k] ^= (uint8_t)(stamp >> (8 * k));
	if (opt.size >= 16)
		for (unsigned k = 0; k < 8; k++)
			dst[opt.size - 8 + k] ^= (uint8_t)(stamp >> (8 * k));
}

static int make_key(char *buf, size_t size, uint64_t index)
{
	return snprintf(buf, size, "%s%" PRIu64, opt.prefix, index);
}

/* ---- a buffered connection ---- */

struct link {
	int fd;
	char *buf;
	size_t start, end;
};

static void link_close(struct link *l)
{
	l->fd = safe_close(l->fd);
	l->start = l->end = 0;
}

static int link_connect(struct link *l, double timeout_s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port) };
	double deadline = now_s() + timeout_s;
	struct timeval tv = { .tv_sec = 5 };
	int one = 1;

	if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1)
		return -EINVAL;
	link_close(l);
	if (!l->buf) {
		l->buf = malloc(READ_BUF);
		if (!l->buf)
			return -ENOMEM;
	}
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

		if (fd < 0)
			return negative_errno();
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			/* A server that neither answers nor closes counts as a failure, not a hang. */
			(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
			l->fd = fd;
			return 0;
		}
		r = negative_errno();
		close(fd);
		if (now_s() >= deadline || stop_requested)
			return r;
		usleep(10 * 1000);
	}
}

static int link_send(struct link *l, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(l->fd, p, n, MSG_NOSIGNAL);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		p = (const char *)p + k;
		n -= (size_t)k;
	}
	return 0;
}

static int link_fill(struct link *l)
{
	ssize_t k;

	if (l->start == l->end)
		l->start = l->end = 0;
	if (l->end == READ_BUF) {
		memmove(l->buf, l->buf + l->start, l->end - l->start);
		l->end -= l->start;
		l->start = 0;
	}
	do
		k = recv(l->fd, l->buf + l->end, READ_BUF - l->end, 0);
	while (k < 0 && errno == EINTR && !stop_requested);
	if (k < 0)
		return errno == EAGAIN ? -ETIMEDOUT : negative_errno();
	if (k == 0)
		return -ECONNRESET;
	l->end += (size_t)k;
	return 0;
}

/* One reply line without its newline, NUL-terminated, valid until the next read. */
static int link_read_line(struct link *l, char **ret)
{
	for (;;) {
		char *nl = memchr(l->buf + l->start, '\n', l->end - l->start);
		int r;

		if (nl) {
			*nl = 0;
			*ret = l->buf + l->start;
			l->start = (size_t)(nl - l->buf) + 1;
			return 0;
		}
		if (l->start == 0 && l->end == READ_BUF)
			return -EMSGSIZE;
		r = link_fill(l);
		if (r < 0)
			return r;
	}
}

static int link_read_exact(struct link *l, void *dst, size_t n)
{
	while (n > 0) {
		size_t have = l->end - l->start;
		int r;

		if (have == 0) {
			r = link_fill(l);
			if (r < 0)
				return r;
			continue;
		}
		have = MIN(have, n);
		memcpy(dst, l->buf + l->start, have);
		l->start += have;
		dst = (char *)dst + have;
		n -= have;
	}
	return 0;
}

/*
 * Reads a GET reply: 1 with the value in *val (grown as needed), 0 for
 * NOTFOUND, -EPROTO for anything else, or a connection error.
 */
static int read_get_reply(struct link *l, uint8_t **val, size_t *cap, size_t *ret_len)
{
	char *line, *e, nl;
	unsigned long long n;
	int r;

	r = link_read_line(l, &line);
	if (r < 0)
		return r;
	if (strcmp(line, "NOTFOUND") == 0)
		return 0;
	if (strncmp(line, "VALUE ", 6) != 0)
		return -EPROTO;
	n = strtoull(line + 6, &e, 10);
	if (*e)
		return -EPROTO;
	if (n + 1 > *cap) {
		uint8_t *p = realloc(*val, n + 1);
		if (!p)
			return -ENOMEM;
		*val = p;
		*cap = n + 1;
	}
	r = link_read_exact(l, *val, n);
	if (r < 0)
		return r;
	r = link_read_exact(l, &nl, 1);
	if (r < 0)
		return r;
	if (nl != '\n')
		return -EPROTO;
	*ret_len = n;
	return 1;
}

/* ---- load and verify ---- */

struct loader {
	struct link *link;
	int error; /* set by the sender on failure */
};

/* Sends every PUT in batches while the main thread reads the replies: a full pipe both ways. */
static void *load_sender(void *arg)
{
	struct loader *ld = arg;
	size_t per = opt.size + 300, cap = MAX((size_t)BATCH_BYTES, per);
	uint8_t *batch = malloc(cap);

	if (!batch) {
		ld->error = -ENOMEM;
		shutdown(ld->link->fd, SHUT_RDWR);
		return NULL;
	}
	for (uint64_t i = 0; i < opt.keys && !stop_requested;) {
		size_t len = 0;
		int r;

		while (i < opt.keys && len + per <= cap) {
			char key[256];
			make_key(key, sizeof(key), i);
			len += (size_t)snprintf((char *)batch + len, 300, "PUT %s %" PRIu64 "\n",
						key, opt.size);
			make_value(i, batch + len);
			len += opt.size;
			i++;
		}
		r = link_send(ld->link, batch, len);
		if (r < 0) {
			ld->error = r;
			break;
		}
	}
	free(batch);
	return NULL;
}

static int cmd_load(void)
{
	struct link l = { .fd = -EBADF };
	struct loader ld = { .link = &l };
	pthread_t sender;
	double t0 = now_s(), dt;
	uint64_t acked = 0;
	int r;

	r = link_connect(&l, 5);
	if (r < 0) {
		fprintf(stderr, "kv-client: connect to %s:%d: %s\n", opt.host, opt.port,
			strerror(-r));
		goto out;
	}
	if (pthread_create(&sender, NULL, load_sender, &ld) != 0) {
		r = -EAGAIN;
		goto out;
	}
	for (; acked < opt.keys; acked++) {
		char *line;
		r = link_read_line(&l, &line);
		if (r >= 0 && strcmp(line, "OK") != 0) {
			fprintf(stderr, "kv-client: load: server said \"%s\"\n", line);
			r = -EPROTO;
		}
		if (r < 0)
			break;
	}
	if (r < 0) {
		/* Unblock the sender if it waits on a full socket. */
		shutdown(l.fd, SHUT_RDWR);
	}
	pthread_join(sender, NULL);
	if (r >= 0 && ld.error < 0)
		r = ld.error;
	if (r < 0) {
		fprintf(stderr, "kv-client: load: %s after %" PRIu64 " keys\n", strerror(-r),
			acked);
		goto out;
	}
	dt = now_s() - t0;
	if (!opt.quiet)
		printf("kv-client: loaded %" PRIu64 " keys of %" PRIu64
		       " bytes (%.1f MiB) in %.2f s, %.0f MiB/s\n",
		       opt.keys, opt.size, (double)(opt.keys * opt.size) / 1048576.0, dt,
		       (double)(opt.keys * opt.size) / 1048576.0 / (dt > 0 ? dt : 1e-9));
out:
	link_close(&l);
	free(l.buf);
	return r;
}

static int cmd_verify(void)
{
	_cleanup_free_ uint8_t *expect = NULL, *got = NULL;
	_cleanup_free_ char *batch = NULL;
	struct link l = { .fd = -EBADF };
	uint64_t missing = 0, wrong = 0;
	size_t got_cap = 0, cap = BATCH_MAX * 300;
	double t0 = now_s();
	int r;

	expect = malloc(opt.size ? opt.size : 1);
	batch = malloc(cap);
	if (!expect || !batch)
		return -ENOMEM;
	r = link_connect(&l, 5);
	if (r < 0) {
		fprintf(stderr, "kv-client: connect to %s:%d: %s\n", opt.host, opt.port,
			strerror(-r));
		goto out;
	}
	for (uint64_t i = 0; i < opt.keys && !stop_requested;) {
		uint64_t first = i;
		size_t len = 0, n = 0;
		/* Keep the replies of one batch around 4 MiB. */
		size_t max_n =
			MAX((size_t)1, MIN((size_t)BATCH_MAX, BATCH_BYTES / (opt.size + 16)));

		while (i < opt.keys && n < max_n) {
			char key[256];
			make_key(key, sizeof(key), i);
			len += (size_t)snprintf(batch + len, cap - len, "GET %s\n", key);
			n++;
			i++;
		}
		r = link_send(&l, batch, len);
		for (size_t k = 0; r >= 0 && k < n; k++) {
			size_t vlen = 0;
			r = read_get_reply(&l, &got, &got_cap, &vlen);
			if (r == 0) {
				if (missing++ < 5)
					fprintf(stderr, "kv-client: key %s%" PRIu64 " is missing\n",
						opt.prefix, first + k);
			} else if (r > 0) {
				make_value(first + k, expect);
				if (vlen != opt.size || memcmp(got, expect, vlen) != 0) {
					if (wrong++ < 5)
						fprintf(stderr,
							"kv-client: key %s%" PRIu64
							" has a wrong value (%zu bytes)\n",
							opt.prefix, first + k, vlen);
				}
			}
		}
		if (r < 0) {
			fprintf(stderr, "kv-client: verify: %s\n", strerror(-r));
			goto out;
		}
	}
	if (!opt.quiet || missing || wrong)
		printf("kv-client: verified %" PRIu64 " keys of %" PRIu64
		       " bytes in %.2f s: %" PRIu64 " missing, %" PRIu64 " wrong\n",
		       opt.keys, opt.size, now_s() - t0, missing, wrong);
	r = missing || wrong ? -EBADMSG : 0;
out:
	link_close(&l);
	free(l.buf);
	return r;
}

/* ---- hammer ---- */

struct worker {
	pthread_t thread;
	int id;
	uint64_t requests, failures, retries, wrong, writes, writes_lost;
	double *lat; /* milliseconds */
	size_t n_lat, cap_lat;
	double max_lat;
};

static atomic_uint_fast64_t total_requests;
static double hammer_deadline;

static void record_latency(struct worker *w, double ms)
{
	if (ms > w->max_lat)
		w->max_lat = ms;
	if (w->n_lat == w->cap_lat) {
		size_t n = w->cap_lat ? w->cap_lat * 2 : 65536;
		double *p = n < (64u << 20) ? realloc(w->lat, n * sizeof(*p)) : NULL;
		if (!p)
			return;
		w->lat = p;
		w->cap_lat = n;
	}
	w->lat[w->n_lat++] = ms;
}

/*
 * One request with retries: sends line, checks the reply with expect (NULL:
 * "OK" is expected).  Returns 0 on success, 1 for a wrong answer, -errno if
 * no answer came within --retry-for seconds.
 */
static int hammer_request(struct worker *w, struct link *l, const char *line, size_t len,
			  const uint8_t *expect, uint8_t **val, size_t *cap)
{
	double t0 = now_s();
	int r;

	for (;;) {
		size_t vlen = 0;

		if (l->fd < 0)
			r = link_connect(l, MAX(0.0, t0 + opt.retry_for - now_s()));
		else
			r = 0;
		if (r >= 0)
			r = link_send(l, line, len);
		if (r >= 0) {
			if (expect) {
				r = read_get_reply(l, val, cap, &vlen);
				if (r >= 0) {
					record_latency(w, (now_s() - t0) * 1e3);
					return r == 1 && vlen == opt.size &&
							       memcmp(*val, expect, vlen) == 0
						       ? 0
						       : 1;
				}
			} else {
				char *reply;
				r = link_read_line(l, &reply);
				if (r >= 0) {
					record_latency(w, (now_s() - t0) * 1e3);
					return strcmp(reply, "OK") == 0 ? 0 : 1;
				}
			}
		}
		if (r == -EPROTO)
			return 1;
		/* The connection broke: reconnect and send the request again. */
		link_close(l);
		if (now_s() - t0 >= opt.retry_for || stop_requested)
			return r;
		w->retries++;
	}
}

static void *hammer_thread(void *arg)
{
	struct worker *w = arg;
	struct link l = { .fd = -EBADF };
	_cleanup_free_ uint8_t *expect = malloc(opt.size ? opt.size : 1);
	uint8_t *val = NULL;
	size_t cap = 0;
	uint64_t x = mix64((uint64_t)w->id + 77);
	char line[512];

	if (!expect)
		return NULL;
	while (!stop_requested && (opt.duration <= 0 || now_s() < hammer_deadline) &&
	       (opt.requests == 0 || atomic_fetch_add(&total_requests, 1) < opt.requests)) {
		bool write =
			opt.write_every && (w->requests % opt.write_every) == opt.write_every - 1;
		int len, r;

		if (write) {
			/* Each write is a new key whose presence is checked at the end. */
			len = snprintf(line, sizeof(line),
				       "SET hammer:%d:%" PRIu64 " v%" PRIu64 "\n", w->id, w->writes,
				       w->writes);
			r = hammer_request(w, &l, line, (size_t)len, NULL, &val, &cap);
			if (r == 0)
				w->writes++;
		} else {
			char key[256];
			uint64_t k;

			x = mix64(x);
			k = opt.keys ? x % opt.keys : 0;
			make_key(key, sizeof(key), k);
			make_value(k, expect);
			len = snprintf(line, sizeof(line), "GET %s\n", key);
			r = hammer_request(w, &l, line, (size_t)len, expect, &val, &cap);
		}
		if (r < 0 && stop_requested)
			break; /* abandoned at the stop, not failed */
		w->requests++;
		if (r != 0) {
			w->failures++;
			if (r > 0)
				w->wrong++;
			if (w->failures <= 3)
				fprintf(stderr, "kv-client: request \"%.*s\" failed: %s\n",
					(int)strcspn(line, "\n"), line,
					r > 0 ? "wrong answer" : strerror(-r));
		}
	}
	/* Every write acknowledged during the run must still be there. */
	for (uint64_t i = 0; i < w->writes; i++) {
		char *reply;
		int len = snprintf(line, sizeof(line), "GET hammer:%d:%" PRIu64 "\n", w->id, i);
		char want[64];
		int wl = snprintf(want, sizeof(want), "v%" PRIu64, i);
		size_t vlen = 0;
		int r;

		if (l.fd < 0 && link_connect(&l, opt.retry_for) < 0) {
			w->writes_lost += w->writes - i;
			break;
		}
		r = link_send(&l, line, (size_t)len);
		if (r >= 0)
			r = read_get_reply(&l, &val, &cap, &vlen);
		if (r < 0) {
			link_close(&l);
			i--; /* once more on a new connection */
			if (now_s() > hammer_deadline + 60)
				break;
			continue;
		}
		if (r == 0 || vlen != (size_t)wl || memcmp(val, want, vlen) != 0)
			w->writes_lost++;
		(void)reply;
	}
	free(val);
	link_close(&l);
	free(l.buf);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void on_stop(int sig)
{
	stop_requested = 1;
}

static int cmd_hammer(void)
{
	_cleanup_free_ struct worker *w = calloc((size_t)opt.conns, sizeof(*w));
	uint64_t requests = 0, failures = 0, retries = 0, wrong = 0, writes = 0, lost = 0;
	double max_lat = 0, t0 = now_s(), dt;
	_cleanup_free_ double *all = NULL;
	size_t n_all = 0;
	int n_threads = 0;

	if (!w)
		return -ENOMEM;
	hammer_deadline = t0 + opt.duration;
	for (; n_threads < opt.conns; n_threads++) {
		w[n_threads].id = n_threads;
		if (pthread_create(&w[n_threads].thread, NULL, hammer_thread, &w[n_threads]) != 0) {
			/* Running threads use w: stop and join them before it is freed. */
			stop_requested = 1;
			break;
		}
	}
	for (int i = 0; i < n_threads; i++) {
		pthread_join(w[i].thread, NULL);
		requests += w[i].requests;
		failures += w[i].failures;
		retries += w[i].retries;
		wrong += w[i].wrong;
		writes += w[i].writes;
		lost += w[i].writes_lost;
		max_lat = MAX(max_lat, w[i].max_lat);
		n_all += w[i].n_lat;
	}
	if (n_threads < opt.conns) {
		for (int i = 0; i < n_threads; i++)
			free(w[i].lat);
		return -EAGAIN;
	}
	dt = now_s() - t0;
	all = malloc(MAX(n_all, (size_t)1) * sizeof(double));
	n_all = 0;
	for (int i = 0; i < opt.conns; i++) {
		if (all)
			memcpy(all + n_all, w[i].lat, w[i].n_lat * sizeof(double));
		n_all += all ? w[i].n_lat : 0;
		free(w[i].lat);
	}
	if (all && n_all)
		qsort(all, n_all, sizeof(double), cmp_double);
	printf("kv-client hammer: %" PRIu64 " requests in %.1f s over %d connections, %" PRIu64
	       " failures, %" PRIu64 " retries, %" PRIu64 " wrong answers\n",
	       requests, dt, opt.conns, failures, retries, wrong);
	printf("kv-client hammer: latency p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
	       n_all ? all[n_all / 2] : 0.0, n_all ? all[(size_t)((double)n_all * 0.99)] : 0.0,
	       max_lat);
	printf("kv-client hammer: %" PRIu64 " writes acknowledged, %" PRIu64 " of them lost\n",
	       writes, lost);
	return failures || lost ? -EBADMSG : 0;
}

/* ---- one command ---- */

static int cmd_line(int argc, char **argv)
{
	struct link l = { .fd = -EBADF };
	char line[4096];
	size_t len = 0;
	char *reply;
	int r;

	for (int i = 0; i < argc; i++)
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s", i ? " " : "",
					argv[i]);
	if (len + 2 > sizeof(line))
		return -E2BIG;
	line[len++] = '\n';
	r = link_connect(&l, opt.retry_for);
	if (r >= 0)
		r = link_send(&l, line, len);
	if (r >= 0)
		r = link_read_line(&l, &reply);
	if (r >= 0) {
		unsigned long long n;
		printf("%s\n", reply);
		if (sscanf(reply, "VALUE %llu", &n) == 1) {
			/* Print the value itself too (as text). */
			char *v = malloc(n + 1);
			r = v ? link_read_exact(&l, v, n + 1) : -ENOMEM;
			if (r >= 0)
				fwrite(v, 1, n + 1, stdout);
			free(v);
		}
	}
	if (r < 0)
		fprintf(stderr, "kv-client: %s\n", strerror(-r));
	link_close(&l);
	free(l.buf);
	return r;
}

static void usage(FILE *f)
{
	fputs("Usage: kv-client [OPTIONS] load|verify|hammer|cmd [COMMAND...]\n\n"
	      "  --host ADDR       server address (default 127.0.0.1)\n"
	      "  --port N          server port (default 7000)\n"
	      "  --keys N          number of keys (default 1000; K, M suffixes)\n"
	      "  --size S          bytes per value (default 100; K, M suffixes)\n"
	      "  --seed N          value seed (default 1)\n"
	      "  --prefix P        key prefix (default \"key:\")\n"
	      "  --conns N         hammer: connections, one thread each (default 4)\n"
	      "  --duration S      hammer: run S seconds (default: until SIGINT/SIGTERM)\n"
	      "  --requests N      hammer: stop after N requests\n"
	      "  --write-every K   hammer: every K-th request writes a new key (0: none; default 10)\n"
	      "  --retry-for S     give up on a request after S seconds of retries (default 10)\n"
	      "  --quiet           print only problems and the hammer summary\n\n"
	      "Exit status: 0 all good, 1 data missing or wrong or requests failed, 2 usage.\n",
	      f);
}

static int parse_options(int argc, char **argv)
{
	enum {
		OPT_HOST = 256,
		OPT_PORT,
		OPT_KEYS,
		OPT_SIZE,
		OPT_SEED,
		OPT_PREFIX,
		OPT_CONNS,
		OPT_DURATION,
		OPT_REQUESTS,
		OPT_WRITE_EVERY,
		OPT_RETRY_FOR,
		OPT_QUIET,
	};
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "host", required_argument, NULL, OPT_HOST },
		{ "port", required_argument, NULL, OPT_PORT },
		{ "keys", required_argument, NULL, OPT_KEYS },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "prefix", required_argument, NULL, OPT_PREFIX },
		{ "conns", required_argument, NULL, OPT_CONNS },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "requests", required_argument, NULL, OPT_REQUESTS },
		{ "write-every", required_argument, NULL, OPT_WRITE_EVERY },
		{ "retry-for", required_argument, NULL, OPT_RETRY_FOR },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{}
	};
	uint64_t v;
	int ch;

	while ((ch = getopt_long(argc, argv, "+h", longopts, NULL)) >= 0) {
		bool bad = false;

		switch (ch) {
		case 'h':
			usage(stdout);
			return -ECANCELED;
		case OPT_HOST:
			opt.host = optarg;
			break;
		case OPT_PORT:
			bad = kv_parse_size(optarg, &v) < 0 || v > 65535;
			opt.port = (int)v;
			break;
		case OPT_KEYS:
			bad = kv_parse_size(optarg, &opt.keys) < 0;
			break;
		case OPT_SIZE:
			bad = kv_parse_size(optarg, &opt.size) < 0 || opt.size > (1u << 30);
			break;
		case OPT_SEED:
			bad = kv_parse_size(optarg, &opt.seed) < 0;
			break;
		case OPT_PREFIX:
			opt.prefix = optarg;
			bad = strlen(optarg) > 200 || strchr(optarg, ' ');
			break;
		case OPT_CONNS:
			bad = kv_parse_size(optarg, &v) < 0 || v < 1 || v > 1024;
			opt.conns = (int)v;
			break;
		case OPT_DURATION:
			opt.duration = atof(optarg);
			break;
		case OPT_REQUESTS:
			bad = kv_parse_size(optarg, &opt.requests) < 0;
			break;
		case OPT_WRITE_EVERY:
			bad = kv_parse_size(optarg, &v) < 0 || v > 1000000;
			opt.write_every = (unsigned)v;
			break;
		case OPT_RETRY_FOR:
			opt.retry_for = atof(optarg);
			break;
		case OPT_QUIET:
			opt.quiet = true;
			break;
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (bad) {
			fprintf(stderr, "kv-client: bad value \"%s\"\n", optarg);
			return -EINVAL;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_stop };
	const char *mode;
	int r;

	/*
	 * Options may come before and after the mode; "+" stops at the first word
	 * so that "cmd SET k -1" passes -1 through to the server.
	 */
	r = parse_options(argc, argv);
	if (r < 0)
		return r == -ECANCELED ? 0 : 2;
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	mode = argv[optind++];
	if (strcmp(mode, "cmd") != 0) {
		r = parse_options(argc, argv);
		if (r < 0)
			return r == -ECANCELED ? 0 : 2;
		if (optind < argc) {
			usage(stderr);
			return 2;
		}
	}

	/* No SA_RESTART: a blocked recv() returns and the loops see the flag. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (value_block_init() < 0)
		return 1;

	if (strcmp(mode, "load") == 0)
		r = cmd_load();
	else if (strcmp(mode, "verify") == 0)
		r = cmd_verify();
	else if (strcmp(mode, "hammer") == 0)
		r = cmd_hammer();
	else if (strcmp(mode, "cmd") == 0 && optind < argc)
		r = cmd_line(argc - optind, argv + optind);
	else {
		usage(stderr);
		free(value_block);
		return 2;
	}
	free(value_block);
	return r < 0 ? 1 : 0;
}
