/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: kv-server, a key-value server that keeps its data and its clients across restarts
 *
 * The database lives in a memfd (kv-store.c).  The server speaks a line
 * protocol on a TCP port and, optionally, minimal HTTP/1.1 on a second one.
 * It shows how a program uses luo:
 *
 * Start: luo_session_retrieve(name).  If a session is waiting, every file
 * comes back by token (the memfd, the listening sockets, the connections that
 * were open and a memfd describing their buffered bytes), the session is
 * finished and closed, and the server carries on with the same data on the
 * same sockets: nothing is bound, nothing is loaded.  Otherwise it creates an
 * empty store and binds its ports.
 *
 * Then it creates its next session with LUO_SESSION_HANDOVER_ON_CLOSE and
 * preserves the memfd and the listening sockets in it at once, so that even
 * a SIGKILL leaves the data and the ports to the successor (luod hands the
 * session over when the dead process's fd closes).  The files retrieved from
 * the previous session can be preserved again only because that session was
 * finished first (a retrieved, unfinished file is EBUSY).
 *
 * SIGTERM (or SIGINT): every open connection is preserved under its own
 * token, all of them in one luo_session_preserve_fds() (252 sockets per
 * message), with its parser's state (unread input, unsent output) in a small
 * metadata memfd; the session is handed over and the process exits 0.  The
 * successor takes them back in one luo_session_retrieve_fds().  Clients see a pause:
 * their connections stay open and new ones wait in the listening socket's
 * backlog, which never closes.
 *
 * --no-luo runs the same server without luo (a plain stop and start), and
 * --snapshot FILE adds the usual alternative, writing the store to a file on
 * exit and reading it back on start; the benchmarks compare the three.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <luo/luo.h>

#include "basic/macro.h"
#include "kv-store.h"

/* Tokens in the session; connections take TOKEN_CONN_BASE and up. */
enum {
	TOKEN_STORE = 1,
	TOKEN_LISTEN = 2,
	TOKEN_HTTP = 3,
	TOKEN_CONNS = 4,
	TOKEN_CONN_BASE = 1000,
};

#define CONN_MAX 16384
#define LINE_MAX_BYTES (64u * 1024)
#define HTTP_HEADER_MAX (16u * 1024)
/* Stop parsing a connection's input while this much output waits for the peer. */
#define OUT_HIGH_WATER (8u << 20)
#define READ_CHUNK (256u * 1024)
/* Connections a successor takes back per luo_session_retrieve_fds() call
 * (two messages), answering each chunk's before it takes the next. */
#define RESTORE_CHUNK 504

#define CONNS_MAGIC UINT64_C(0x31736e6e6f43564b) /* "KVConns1" */

enum conn_kind { CONN_LINE = 0, CONN_HTTP = 1 };

struct conn {
	struct conn *prev, *next;
	int fd;
	enum conn_kind kind;
	bool close_after_flush; /* QUIT, "Connection: close", or the peer shut its side */
	uint32_t events; /* what epoll watches for it */
	char *in;
	size_t in_len, in_cap;
	char *out;
	size_t out_off, out_len, out_cap;
	uint64_t token;
};

/* The connection metadata memfd: this header, then per connection a record and its bytes. */
struct conns_header {
	uint64_t magic;
	uint64_t n;
};

struct conn_record {
	uint64_t token;
	uint32_t kind;
	uint32_t close_after_flush;
	uint64_t in_len;
	uint64_t out_len;
};

struct options {
	const char *bind_addr;
	int port;
	int http_port; /* -1: no HTTP */
	const char *session;
	const char *luo_socket;
	uint64_t capacity;
	bool use_luo;
	bool keep_connections;
	const char *snapshot;
	const char *ready_file;
	double wait_seconds;
};

struct server {
	struct options opt;
	struct kv_store store;
	char *rbuf; /* READ_CHUNK bytes: every connection's input lands here first */
	int epfd, sigfd, listen_fd, http_fd, session_fd;
	struct conn *conns;
	size_t n_conns;
	uint64_t requests;
	bool restored;
	size_t conns_restored;
};

/* epoll tags other than connection pointers */
#define TAG_LISTEN 1
#define TAG_HTTP 2
#define TAG_SIGNAL 3

static struct timespec start_time;

static double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void log_msg(const char *fmt, ...) _printf_(1, 2);
static void log_msg(const char *fmt, ...)
{
	va_list ap;

	fputs("kv-server: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- connections ---- */

static int epoll_tag(struct server *srv, int op, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = { .events = events, .data.u64 = tag };

	return RET_NERRNO(epoll_ctl(srv->epfd, op, fd, &ev));
}

static struct conn *conn_add(struct server *srv, int fd, enum conn_kind kind)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = fd;
	c->kind = kind;
	c->events = EPOLLIN;
	if (epoll_tag(srv, EPOLL_CTL_ADD, fd, EPOLLIN, (uint64_t)(uintptr_t)c) < 0) {
		free(c);
		return NULL;
	}
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->n_conns++;
	return c;
}

static void conn_free(struct server *srv, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->n_conns--;
	safe_close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

/*
 * A connection's buffers start small: most hold a line or nothing at all,
 * since input is read into the server's one read buffer and parsed there
 * (only a partial request is kept), and output only waits in them when the
 * peer is slow.  Thousands of idle connections so cost a few hundred bytes
 * each, and a successor that takes them over touches no fresh page each.
 */
#define BUF_MIN 256

static int buf_reserve(char **buf, size_t *cap, size_t need)
{
	size_t n = *cap ? *cap : BUF_MIN;
	char *p;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*buf, n);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = n;
	return 0;
}

static int out_append(struct conn *c, const void *data, size_t n)
{
	if (n == 0)
		return 0;
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (buf_reserve(&c->out, &c->out_cap, c->out_len + n) < 0)
		return -ENOMEM;
	memcpy(c->out + c->out_len, data, n);
	c->out_len += n;
	return 0;
}

static int out_printf(struct conn *c, const char *fmt, ...) _printf_(2, 3);
static int out_printf(struct conn *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	return out_append(c, buf, MIN((size_t)n, sizeof(buf) - 1));
}

static size_t out_pending(const struct conn *c)
{
	return c->out_len - c->out_off;
}

/* ---- the line protocol ---- */

static const char *next_word(const char **p, const char *end, size_t *ret_len)
{
	const char *s = *p, *e;

	while (s < end && *s == ' ')
		s++;
	e = s;
	while (e < end && *e != ' ')
		e++;
	*p = e;
	*ret_len = (size_t)(e - s);
	return s;
}

static bool word_is(const char *w, size_t n, const char *lit)
{
	return n == strlen(lit) && strncasecmp(w, lit, n) == 0;
}

static int reply_get(struct server *srv, struct conn *c, const char *key, size_t klen)
{
	const void *v;
	size_t vlen;

	if (kv_store_get(&srv->store, key, klen, &v, &vlen) < 0)
		return out_printf(c, "NOTFOUND\n");
	if (out_printf(c, "VALUE %zu\n", vlen) < 0 || out_append(c, v, vlen) < 0)
		return -ENOMEM;
	return out_append(c, "\n", 1);
}

static int reply_set(struct server *srv, struct conn *c, const char *key, size_t klen,
		     const char *val, size_t vlen)
{
	int r = kv_store_set(&srv->store, key, klen, val, vlen);

	if (r < 0)
		return out_printf(c, "ERR %s\n", strerror(-r));
	return out_printf(c, "OK\n");
}

static int reply_stats(struct server *srv, struct conn *c)
{
	struct kv_stats st;

	kv_store_stats(&srv->store, &st);
	return out_printf(c,
			  "STATS keys=%" PRIu64 " bytes=%" PRIu64 " used=%" PRIu64 " size=%" PRIu64
			  " slots=%" PRIu64 " generation=%" PRIu64
			  " connections=%zu requests=%" PRIu64 "\n",
			  st.keys, st.live_bytes, st.used, st.size, st.table_slots, st.generation,
			  srv->n_conns, srv->requests);
}

/*
 * Handles one request at in[0..avail): returns the bytes it used, 0 if the
 * request is not complete yet, or -errno to drop the connection.
 */
static ssize_t line_request(struct server *srv, struct conn *c, const char *in, size_t avail)
{
	const char *nl = memchr(in, '\n', MIN(avail, (size_t)LINE_MAX_BYTES + 1));
	const char *p = in, *end, *cmd, *key;
	size_t cmdlen, klen, used;
	int r;

	if (!nl) {
		if (avail > LINE_MAX_BYTES) {
			out_printf(c, "ERR line too long\n");
			c->close_after_flush = true;
			return (ssize_t)avail;
		}
		return 0;
	}
	used = (size_t)(nl - in) + 1;
	end = nl;
	if (end > in && end[-1] == '\r')
		end--;
	cmd = next_word(&p, end, &cmdlen);
	if (cmdlen == 0)
		return (ssize_t)used; /* empty line: ignore */
	srv->requests++;

	if (word_is(cmd, cmdlen, "PUT")) {
		char num[24];
		size_t nlen;
		const char *n;
		char *e;
		unsigned long long vlen;

		key = next_word(&p, end, &klen);
		n = next_word(&p, end, &nlen);
		if (klen == 0 || nlen == 0 || nlen >= sizeof(num)) {
			r = out_printf(c, "ERR usage: PUT key length, then length bytes\n");
			return r < 0 ? r : (ssize_t)used;
		}
		memcpy(num, n, nlen);
		num[nlen] = 0;
		errno = 0;
		vlen = strtoull(num, &e, 10);
		if (*e || errno || vlen > KV_VALUE_MAX) {
			/* The body's length is unknown or absurd: the stream cannot be resynchronised. */
			out_printf(c, "ERR bad length\n");
			c->close_after_flush = true;
			return (ssize_t)avail;
		}
		if (avail - used < vlen) {
			srv->requests--; /* counted again when complete */
			return 0;
		}
		r = reply_set(srv, c, key, klen, in + used, (size_t)vlen);
		return r < 0 ? r : (ssize_t)(used + vlen);
	}

	if (word_is(cmd, cmdlen, "GET") || word_is(cmd, cmdlen, "DEL")) {
		key = next_word(&p, end, &klen);
		if (klen == 0)
			r = out_printf(c, "ERR usage: %.3s key\n", cmd);
		else if (word_is(cmd, cmdlen, "GET"))
			r = reply_get(srv, c, key, klen);
		else
			r = out_printf(c, kv_store_del(&srv->store, key, klen) < 0 ? "NOTFOUND\n"
										   : "OK\n");
	} else if (word_is(cmd, cmdlen, "SET")) {
		key = next_word(&p, end, &klen);
		/* The value is the rest of the line after one space, spaces included. */
		if (klen == 0 || p >= end)
			r = out_printf(c, "ERR usage: SET key value\n");
		else
			r = reply_set(srv, c, key, klen, p + 1, (size_t)(end - p - 1));
	} else if (word_is(cmd, cmdlen, "COUNT")) {
		r = out_printf(c, "COUNT %" PRIu64 "\n", kv_store_count(&srv->store));
	} else if (word_is(cmd, cmdlen, "STATS")) {
		r = reply_stats(srv, c);
	} else if (word_is(cmd, cmdlen, "PING")) {
		r = out_printf(c, "PONG\n");
	} else if (word_is(cmd, cmdlen, "GEN")) {
		/* Which server answers: the store's generation grows at each restart. */
		struct kv_stats st;

		kv_store_stats(&srv->store, &st);
		r = out_printf(c, "GEN %" PRIu64 "\n", st.generation);
	} else if (word_is(cmd, cmdlen, "QUIT")) {
		r = out_printf(c, "BYE\n");
		c->close_after_flush = true;
	} else {
		r = out_printf(c, "ERR unknown command\n");
	}
	return r < 0 ? r : (ssize_t)used;
}

/* ---- HTTP/1.1 ---- */

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes %XX and '+' from src[0..n) into dst (at least n bytes); returns the length. */
static size_t url_decode(char *dst, const char *src, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (src[i] == '%' && i + 2 < n + 0 && hexval(src[i + 1]) >= 0 &&
		    hexval(src[i + 2]) >= 0) {
			dst[o++] = (char)(hexval(src[i + 1]) * 16 + hexval(src[i + 2]));
			i += 2;
		} else {
			dst[o++] = src[i] == '+' ? ' ' : src[i];
		}
	}
	return o;
}

static int http_reply(struct conn *c, int status, const char *reason, const void *body, size_t len)
{
	if (out_printf(
		    c,
		    "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
		    status, reason, len, c->close_after_flush ? "Connection: close\r\n" : "") < 0)
		return -ENOMEM;
	return len ? out_append(c, body, len) : 0;
}

/* Finds header name (case-insensitive) in the header block; returns its value or NULL. */
static const char *http_header(const char *hdr, const char *end, const char *name, size_t *ret_len)
{
	size_t nlen = strlen(name);

	for (const char *l = hdr; l < end;) {
		const char *eol = memchr(l, '\n', (size_t)(end - l));
		const char *le = eol ? eol : end;

		if ((size_t)(le - l) > nlen && l[nlen] == ':' && strncasecmp(l, name, nlen) == 0) {
			const char *v = l + nlen + 1;
			while (v < le && (*v == ' ' || *v == '\t'))
				v++;
			const char *ve = le;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
				ve--;
			*ret_len = (size_t)(ve - v);
			return v;
		}
		l = le + 1;
	}
	return NULL;
}

static ssize_t http_request(struct server *srv, struct conn *c, const char *in, size_t avail)
{
	const char *hend, *p = in, *line_end, *method, *target, *version, *v, *q;
	size_t mlen, tlen, verlen, vlen, used, body = 0, plen;
	bool keep_alive;
	int r;

	if (!in || avail == 0)
		return 0;
	hend = memmem(in, MIN(avail, (size_t)HTTP_HEADER_MAX), "\r\n\r\n", 4);

	if (!hend) {
		if (avail >= HTTP_HEADER_MAX) {
			c->close_after_flush = true;
			http_reply(c, 431, "Request Header Fields Too Large", NULL, 0);
			return (ssize_t)avail;
		}
		return 0;
	}
	used = (size_t)(hend - in) + 4;
	line_end = memchr(in, '\r', (size_t)(hend - in) + 1);
	method = next_word(&p, line_end, &mlen);
	target = next_word(&p, line_end, &tlen);
	version = next_word(&p, line_end, &verlen);

	v = http_header(line_end + 2, hend + 2, "Content-Length", &vlen);
	if (v) {
		char num[24];
		char *e;

		if (vlen == 0 || vlen >= sizeof(num)) {
			c->close_after_flush = true;
			http_reply(c, 400, "Bad Request", NULL, 0);
			return (ssize_t)avail;
		}
		memcpy(num, v, vlen);
		num[vlen] = 0;
		body = strtoul(num, &e, 10);
		if (*e || body > LINE_MAX_BYTES) {
			c->close_after_flush = true;
			http_reply(c, 413, "Payload Too Large", NULL, 0);
			return (ssize_t)avail;
		}
		if (avail - used < body)
			return 0;
		used += body; /* no endpoint takes a body: skip it */
	}
	srv->requests++;

	keep_alive = word_is(version, verlen, "HTTP/1.1");
	v = http_header(line_end + 2, hend + 2, "Connection", &vlen);
	if (v && word_is(v, vlen, "close"))
		keep_alive = false;
	else if (v && word_is(v, vlen, "keep-alive"))
		keep_alive = true;
	if (!keep_alive)
		c->close_after_flush = true;

	if (!word_is(method, mlen, "GET")) {
		r = http_reply(c, 405, "Method Not Allowed", NULL, 0);
		return r < 0 ? r : (ssize_t)used;
	}
	q = memchr(target, '?', tlen);
	plen = q ? (size_t)(q - target) : tlen;
	if (plen == 5 && memcmp(target, "/ping", 5) == 0) {
		r = http_reply(c, 200, "OK", "PONG\n", 5);
	} else if (plen == 6 && memcmp(target, "/count", 6) == 0) {
		char num[32];
		int n = snprintf(num, sizeof(num), "%" PRIu64 "\n", kv_store_count(&srv->store));
		r = http_reply(c, 200, "OK", num, (size_t)n);
	} else if (plen == 4 && memcmp(target, "/get", 4) == 0 && q) {
		/* The first key= parameter of the query. */
		const char *qs = q + 1, *qe = target + tlen, *k = NULL;
		size_t klen = 0;

		for (const char *s = qs; s < qe;) {
			const char *amp = memchr(s, '&', (size_t)(qe - s));
			const char *pe = amp ? amp : qe;
			if ((size_t)(pe - s) > 4 && memcmp(s, "key=", 4) == 0) {
				k = s + 4;
				klen = (size_t)(pe - k);
				break;
			}
			s = pe + 1;
		}
		if (!k) {
			r = http_reply(c, 400, "Bad Request", "missing key\n", 12);
		} else {
			char key[HTTP_HEADER_MAX];
			const void *val;
			size_t dl = url_decode(key, k, klen), len;

			if (kv_store_get(&srv->store, key, dl, &val, &len) < 0)
				r = http_reply(c, 404, "Not Found", "not found\n", 10);
			else
				r = http_reply(c, 200, "OK", val, len);
		}
	} else {
		r = http_reply(c, 404, "Not Found", "not found\n", 10);
	}
	return r < 0 ? r : (ssize_t)used;
}

/* ---- connection I/O ---- */

static void conn_update_events(struct server *srv, struct conn *c)
{
	bool want_out = out_pending(c) > 0;
	/* Backpressure: read no more while the peer is not taking its replies. */
	bool want_in = !c->close_after_flush && out_pending(c) < OUT_HIGH_WATER;
	uint32_t ev = (want_in ? EPOLLIN : 0) | (want_out ? EPOLLOUT : 0);

	/* Most requests change nothing here: no system call for them. */
	if (ev == c->events)
		return;
	if (epoll_tag(srv, EPOLL_CTL_MOD, c->fd, ev, (uint64_t)(uintptr_t)c) >= 0)
		c->events = ev;
}

/* Answers the whole requests at the start of buf; returns the bytes used or -errno. */
static ssize_t conn_process_bytes(struct server *srv, struct conn *c, const char *buf, size_t len)
{
	size_t pos = 0;

	while (pos < len && !c->close_after_flush && out_pending(c) < OUT_HIGH_WATER) {
		ssize_t n = c->kind == CONN_LINE ? line_request(srv, c, buf + pos, len - pos)
						 : http_request(srv, c, buf + pos, len - pos);
		if (n < 0)
			return n;
		if (n == 0)
			break;
		pos += (size_t)n;
	}
	return (ssize_t)pos;
}

static int conn_process(struct server *srv, struct conn *c)
{
	ssize_t pos;

	if (c->in_len == 0)
		return 0;
	pos = conn_process_bytes(srv, c, c->in, c->in_len);
	if (pos < 0)
		return (int)pos;
	if (pos) {
		memmove(c->in, c->in + pos, c->in_len - (size_t)pos);
		c->in_len -= (size_t)pos;
	}
	return 0;
}

/* Writes what it can; returns 1 when the connection is done, 0, or -errno. */
static int conn_flush(struct server *srv, struct conn *c)
{
	while (out_pending(c) > 0) {
		ssize_t n = send(c->fd, c->out + c->out_off, out_pending(c), MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			return negative_errno();
		}
		c->out_off += (size_t)n;
	}
	if (out_pending(c) == 0 && c->close_after_flush)
		return 1;
	return 0;
}

static void conn_handle(struct server *srv, struct conn *c, uint32_t events)
{
	int r;

	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (size_t got = 0; got < 4 * READ_CHUNK;) {
			bool shared = c->in_len == 0;
			char *dst = srv->rbuf;
			size_t room = READ_CHUNK;
			ssize_t n;

			/*
			 * Nothing pending: into the server's read buffer, parsed there.
			 * A partial request: onto it, in room that grows with what the
			 * connection sends, up to READ_CHUNK at a time for large values.
			 */
			if (!shared) {
				size_t chunk =
					MIN((size_t)READ_CHUNK, MAX((size_t)4096, c->in_cap));

				if (buf_reserve(&c->in, &c->in_cap, c->in_len + chunk) < 0)
					goto drop;
				dst = c->in + c->in_len;
				room = c->in_cap - c->in_len;
			}
			n = recv(c->fd, dst, room, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				break;
			if (n < 0)
				goto drop;
			if (n == 0) {
				/* Answer what was asked, then close. */
				r = conn_process(srv, c);
				if (r < 0)
					goto drop;
				c->close_after_flush = true;
				break;
			}
			got += (size_t)n;
			if (shared) {
				ssize_t used = conn_process_bytes(srv, c, srv->rbuf, (size_t)n);

				if (used < 0)
					goto drop;
				/* What is left (a partial request, or input parked by
				 * backpressure) waits in the connection's own buffer. */
				if (used < n) {
					if (buf_reserve(&c->in, &c->in_cap, (size_t)(n - used)) < 0)
						goto drop;
					memcpy(c->in, srv->rbuf + used, (size_t)(n - used));
					c->in_len = (size_t)(n - used);
				}
				continue;
			}
			c->in_len += (size_t)n;
		}
		/* Big buffers that are empty again go back to the allocator. */
		if (c->in_len == 0 && c->in_cap > 4 * READ_CHUNK) {
			free(c->in);
			c->in = NULL;
			c->in_cap = 0;
		}
	}
	r = conn_process(srv, c);
	if (r < 0)
		goto drop;
	r = conn_flush(srv, c);
	if (r != 0)
		goto drop;
	/* Input parked by backpressure is parsed once the output drains. */
	if (c->in_len && out_pending(c) < OUT_HIGH_WATER && !c->close_after_flush) {
		r = conn_process(srv, c);
		if (r < 0)
			goto drop;
		r = conn_flush(srv, c);
		if (r != 0)
			goto drop;
	}
	conn_update_events(srv, c);
	return;
drop:
	conn_free(srv, c);
}

static void accept_all(struct server *srv, int lfd, enum conn_kind kind)
{
	for (;;) {
		int one = 1;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_msg("accept: %m");
			return;
		}
		if (srv->n_conns >= CONN_MAX) {
			close(fd);
			continue;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (!conn_add(srv, fd, kind))
			close(fd);
	}
}

/* ---- sockets and start-up ---- */

static int listen_tcp(const char *addr, int port, int *ret_fd)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	_cleanup_close_ int fd = -EBADF;
	int one = 1;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	/* Lets a plain (--no-luo) restart bind while old connections sit in TIME_WAIT. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return negative_errno();
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return negative_errno();
	if (listen(fd, 4096) < 0)
		return negative_errno();
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static int socket_port(int fd)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);

	if (fd < 0)
		return -1;
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -1;
	return ntohs(sa.sin_port);
}

static int bind_ports(struct server *srv)
{
	int r;

	if (srv->listen_fd < 0) {
		r = listen_tcp(srv->opt.bind_addr, srv->opt.port, &srv->listen_fd);
		if (r < 0)
			return r;
	}
	if (srv->http_fd < 0 && srv->opt.http_port >= 0) {
		r = listen_tcp(srv->opt.bind_addr, srv->opt.http_port, &srv->http_fd);
		if (r < 0)
			return r;
	}
	return 0;
}

static int load_snapshot(struct server *srv)
{
	_cleanup_close_ int file = -EBADF, fd = -EBADF;
	struct stat st;
	uint8_t *p;
	uint64_t got = 0;
	int r;

	file = open(srv->opt.snapshot, O_RDONLY | O_CLOEXEC);
	if (file < 0)
		return errno == ENOENT ? 0 : negative_errno();
	if (fstat(file, &st) < 0)
		return negative_errno();
	fd = memfd_create("kv-store", MFD_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	if (ftruncate(fd, st.st_size) < 0)
		return negative_errno();
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return negative_errno();
	while (got < (uint64_t)st.st_size) {
		ssize_t n = read(file, p + got, (size_t)MIN((uint64_t)st.st_size - got, 1u << 30));
		if (n <= 0) {
			r = n < 0 ? negative_errno() : -EBADMSG;
			munmap(p, (size_t)st.st_size);
			return r;
		}
		got += (uint64_t)n;
	}
	munmap(p, (size_t)st.st_size);
	r = kv_store_open(&srv->store, fd);
	if (r < 0)
		return r;
	TAKE_FD(fd);
	return 1;
}

static int save_snapshot(struct server *srv)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -EBADF;
	struct kv_stats st;
	uint64_t done = 0;

	kv_store_stats(&srv->store, &st);
	if (asprintf(&tmp, "%s.tmp", srv->opt.snapshot) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return negative_errno();
	/* Only the used part of the arena: the rest of the file is zero. */
	while (done < st.used) {
		ssize_t n =
			write(fd, srv->store.base + done, (size_t)MIN(st.used - done, 1u << 30));
		if (n < 0)
			return negative_errno();
		done += (uint64_t)n;
	}
	if (fsync(fd) < 0)
		return negative_errno();
	if (rename(tmp, srv->opt.snapshot) < 0)
		return negative_errno();
	return 0;
}

static void close_fds(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

/* Where one connection's record and bytes are in the metadata memfd. */
struct conn_saved {
	struct conn_record rec;
	const uint8_t *bytes; /* in_len bytes of input, then out_len of output */
};

/*
 * Rebuilds the connections described by the metadata memfd, every socket in
 * one luo_session_retrieve_fds() (a few messages for thousands of them);
 * consumes nothing.  Each connection comes back with its parser's state: the
 * part of a request that had arrived, and the reply not yet sent.
 */
static int restore_connections(struct server *srv, int session_fd, int meta_fd)
{
	_cleanup_free_ struct conn_saved *saved = NULL;
	_cleanup_free_ uint64_t *tokens = NULL;
	_cleanup_free_ int *fds = NULL;
	const uint8_t *p, *end, *cur;
	const struct conns_header *h;
	struct timespec t0;
	double retrieve_ms = 0;
	struct stat st;
	size_t n = 0, failed;
	int r = 0;

	if (fstat(meta_fd, &st) < 0)
		return negative_errno();
	if ((size_t)st.st_size < sizeof(*h))
		return -EBADMSG;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, meta_fd, 0);
	if (p == MAP_FAILED)
		return negative_errno();
	end = p + st.st_size;
	h = (const struct conns_header *)p;
	if (h->magic != CONNS_MAGIC || h->n > CONN_MAX) {
		r = -EBADMSG;
		goto out;
	}
	saved = calloc(h->n ? h->n : 1, sizeof(*saved));
	tokens = calloc(h->n ? h->n : 1, sizeof(*tokens));
	fds = calloc(h->n ? h->n : 1, sizeof(*fds));
	if (!saved || !tokens || !fds) {
		r = -ENOMEM;
		goto out;
	}
	cur = p + sizeof(*h);
	for (uint64_t i = 0; i < h->n; i++) {
		struct conn_record rec;

		if ((size_t)(end - cur) < sizeof(rec)) {
			r = -EBADMSG;
			goto out;
		}
		memcpy(&rec, cur, sizeof(rec));
		cur += sizeof(rec);
		if (rec.in_len > (uint64_t)(end - cur) ||
		    rec.out_len > (uint64_t)(end - cur) - rec.in_len || rec.kind > CONN_HTTP) {
			r = -EBADMSG;
			goto out;
		}
		saved[n] = (struct conn_saved){ .rec = rec, .bytes = cur };
		tokens[n++] = rec.token;
		cur += rec.in_len + rec.out_len;
	}
	/*
	 * A chunk at a time, each chunk's connections answered before the next
	 * is taken: the first clients hear from the successor after one chunk,
	 * not after all of them.  Each call is all or nothing: when one socket
	 * cannot come back (it is gone from the session), none of its chunk did;
	 * leave that one behind (its client reconnects) and take the others
	 * again.
	 */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t first = 0; first < n;) {
		size_t k = MIN(n - first, (size_t)RESTORE_CHUNK);
		struct timespec t1;

		clock_gettime(CLOCK_MONOTONIC, &t1);
		failed = k;
		r = luo_session_retrieve_fds(session_fd, k, tokens + first, fds + first, &failed);
		retrieve_ms += ms_since(&t1);
		if (r < 0 && failed < k) {
			size_t at = first + failed;

			log_msg("connection %" PRIu64 " not restored: %s", tokens[at],
				strerror(-r));
			memmove(saved + at, saved + at + 1, (n - at - 1) * sizeof(*saved));
			memmove(tokens + at, tokens + at + 1, (n - at - 1) * sizeof(*tokens));
			n--;
			continue;
		}
		if (r < 0)
			goto out;
		for (size_t i = first; i < first + k; i++) {
			const struct conn_record *rec = &saved[i].rec;
			struct conn *c;

			/* The same open file as before: still O_NONBLOCK, as it was accepted. */
			c = conn_add(srv, fds[i], rec->kind);
			if (!c) {
				close_fds(fds + i, first + k - i);
				r = -ENOMEM;
				goto out;
			}
			c->close_after_flush = rec->close_after_flush;
			if (buf_reserve(&c->in, &c->in_cap, rec->in_len) < 0 ||
			    out_append(c, saved[i].bytes + rec->in_len, rec->out_len) < 0) {
				close_fds(fds + i + 1, first + k - i - 1);
				r = -ENOMEM;
				goto out;
			}
			if (rec->in_len)
				memcpy(c->in, saved[i].bytes, rec->in_len);
			c->in_len = rec->in_len;
			srv->conns_restored++;
			/* What it had asked, buffered here or still in the socket. */
			conn_handle(srv, c, EPOLLIN);
		}
		first += k;
	}
	log_msg("restored %zu connections in %.2f ms (retrieve %.2f ms)", n, ms_since(&t0),
		retrieve_ms);
out:
	munmap((void *)p, (size_t)st.st_size);
	return r;
}

/* Takes everything out of the waiting session, finishes it and closes it. */
static int restore_session(struct server *srv, int old)
{
	int fd, r;

	r = luo_session_retrieve_fd(old, TOKEN_STORE, &fd);
	if (r < 0) {
		log_msg("session has no store: %s", strerror(-r));
		return r;
	}
	r = kv_store_open(&srv->store, fd);
	if (r < 0) {
		close(fd);
		log_msg("the store in the session is not usable: %s", strerror(-r));
		return r;
	}
	/* A new generation before the first answer: the connections restored
	 * below are answered as they come back. */
	kv_store_bump_generation(&srv->store);
	r = luo_session_retrieve_fd(old, TOKEN_LISTEN, &srv->listen_fd);
	if (r < 0)
		/* The data is what matters: keep it and bind the port afresh below. */
		log_msg("session has no listening socket (%s): binding port %d", strerror(-r),
			srv->opt.port);
	r = luo_session_retrieve_fd(old, TOKEN_HTTP, &srv->http_fd);
	if (r < 0 && r != -ENOENT)
		log_msg("session's HTTP socket not usable (%s)", strerror(-r));
	r = luo_session_retrieve_fd(old, TOKEN_CONNS, &fd);
	if (r >= 0) {
		/* Absent after a crash: then only the connections are lost, not the data. */
		r = restore_connections(srv, old, fd);
		close(fd);
		if (r < 0)
			log_msg("connections not restored: %s", strerror(-r));
	}
	/* Finishing releases the files so that they can be preserved into the new session. */
	r = luo_session_finish(old);
	if (r < 0) {
		log_msg("luo_session_finish: %s", strerror(-r));
		return r;
	}
	if (srv->listen_fd >= 0)
		(void)fcntl(srv->listen_fd, F_SETFL, fcntl(srv->listen_fd, F_GETFL) | O_NONBLOCK);
	if (srv->http_fd >= 0)
		(void)fcntl(srv->http_fd, F_SETFL, fcntl(srv->http_fd, F_GETFL) | O_NONBLOCK);
	srv->restored = true;
	return 0;
}

static int start_with_luo(struct server *srv)
{
	_cleanup_close_ int luo = -EBADF;
	struct timespec t0;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	luo = luo_connect(srv->opt.luo_socket);
	if (luo < 0) {
		log_msg("cannot reach luod: %s", strerror(-luo));
		return luo;
	}
	for (;;) {
		_cleanup_close_ int old = -EBADF;

		r = luo_session_retrieve(luo, srv->opt.session, &old);
		if (r >= 0) {
			r = restore_session(srv, old);
			if (r < 0)
				return r;
			break;
		}
		if (r != -ENOENT) {
			log_msg("luo_session_retrieve(%s): %s", srv->opt.session, strerror(-r));
			return r;
		}
		r = bind_ports(srv);
		if (r == -EADDRINUSE && ms_since(&t0) < srv->opt.wait_seconds * 1e3) {
			srv->listen_fd = safe_close(srv->listen_fd);
			srv->http_fd = safe_close(srv->http_fd);
			/*
			 * A predecessor that was killed still owns the port through its
			 * session until luod has handed it over: wait for the session.
			 */
			usleep(1000);
			continue;
		}
		if (r < 0) {
			log_msg("cannot listen on %s port %d: %s", srv->opt.bind_addr,
				r == -EADDRINUSE && srv->listen_fd >= 0 ? srv->opt.http_port
									: srv->opt.port,
				strerror(-r));
			return r;
		}
		r = kv_store_create(&srv->store, srv->opt.capacity);
		if (r < 0) {
			log_msg("cannot create the store: %s", strerror(-r));
			return r;
		}
		break;
	}
	/* A restored server that now also wants HTTP (or lost a socket) binds it fresh. */
	r = bind_ports(srv);
	if (r < 0) {
		log_msg("cannot listen: %s", strerror(-r));
		return r;
	}

	r = luo_session_create(luo, srv->opt.session, LUO_SESSION_HANDOVER_ON_CLOSE,
			       &srv->session_fd);
	if (r < 0) {
		log_msg("luo_session_create(%s): %s%s", srv->opt.session, strerror(-r),
			r == -EEXIST ? " (another kv-server runs with this session name)" : "");
		return r;
	}
	/* Preserved now, not at exit, so that a crash still leaves them to the successor. */
	r = luo_session_preserve_fd(srv->session_fd, TOKEN_STORE, srv->store.fd);
	if (r >= 0)
		r = luo_session_preserve_fd(srv->session_fd, TOKEN_LISTEN, srv->listen_fd);
	if (r >= 0 && srv->http_fd >= 0)
		r = luo_session_preserve_fd(srv->session_fd, TOKEN_HTTP, srv->http_fd);
	if (r < 0) {
		log_msg("luo_session_preserve_fd: %s", strerror(-r));
		return r;
	}
	return 0;
}

static int start_plain(struct server *srv)
{
	int r;

	r = bind_ports(srv);
	if (r < 0) {
		log_msg("cannot listen: %s", strerror(-r));
		return r;
	}
	if (srv->opt.snapshot) {
		r = load_snapshot(srv);
		if (r < 0) {
			log_msg("cannot load snapshot %s: %s", srv->opt.snapshot, strerror(-r));
			return r;
		}
		srv->restored = r > 0;
		if (r > 0)
			kv_store_bump_generation(&srv->store);
	}
	if (!srv->restored) {
		r = kv_store_create(&srv->store, srv->opt.capacity);
		if (r < 0) {
			log_msg("cannot create the store: %s", strerror(-r));
			return r;
		}
	}
	return 0;
}

/* ---- shutdown ---- */

static int write_all(int fd, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
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

/*
 * Preserves the open connections and a memfd with their buffered bytes, then
 * hands the session over.  A connection that cannot be preserved is simply
 * closed: its client reconnects, nothing else is lost.
 */
static int handover(struct server *srv)
{
	_cleanup_free_ struct conn **cs = NULL;
	_cleanup_free_ uint64_t *tokens = NULL;
	_cleanup_close_ int meta = -EBADF;
	struct conns_header h = { .magic = CONNS_MAGIC };
	_cleanup_free_ int *fds = NULL;
	uint64_t token = TOKEN_CONN_BASE;
	struct timespec t0;
	size_t n = 0, failed;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (srv->opt.keep_connections) {
		cs = calloc(srv->n_conns + 1, sizeof(*cs));
		tokens = calloc(srv->n_conns + 1, sizeof(*tokens));
		fds = calloc(srv->n_conns + 1, sizeof(*fds));
		if (!cs || !tokens || !fds)
			return -ENOMEM;
		for (struct conn *c = srv->conns; c; c = c->next) {
			c->token = token++;
			cs[n] = c;
			tokens[n] = c->token;
			fds[n++] = c->fd;
		}
		/*
		 * Every connection in one call: a few messages for thousands of
		 * sockets.  All or nothing: if one cannot be kept, none was; leave
		 * that one behind (its client reconnects) and keep the others.
		 */
		for (;;) {
			failed = n;
			r = luo_session_preserve_fds(srv->session_fd, n, tokens, fds, &failed);
			if (r >= 0 || r == -ESTALE || failed >= n)
				break;
			log_msg("connection not kept: %s", strerror(-r));
			cs[failed]->token = 0;
			memmove(cs + failed, cs + failed + 1, (n - failed - 1) * sizeof(*cs));
			memmove(tokens + failed, tokens + failed + 1,
				(n - failed - 1) * sizeof(*tokens));
			memmove(fds + failed, fds + failed + 1, (n - failed - 1) * sizeof(*fds));
			n--;
		}
		if (r < 0) {
			if (r != -ESTALE)
				log_msg("connections not kept: %s", strerror(-r));
			n = 0;
		}
		h.n = n;
		meta = memfd_create("kv-conns", MFD_CLOEXEC);
		if (meta < 0)
			return negative_errno();
		/*
		 * Each kept connection's parser state: buffered input and pending
		 * output, gathered first and written at once (a write per record
		 * costs 15,000 system calls in the blackout of a busy server).
		 */
		size_t size = sizeof(h), off = 0;
		_cleanup_free_ uint8_t *buf = NULL;

		for (size_t i = 0; i < n; i++)
			size += sizeof(struct conn_record) + cs[i]->in_len + out_pending(cs[i]);
		buf = malloc(size);
		if (!buf)
			return -ENOMEM;
		memcpy(buf, &h, sizeof(h));
		off = sizeof(h);
		for (size_t i = 0; i < n; i++) {
			struct conn *c = cs[i];
			struct conn_record rec = {
				.token = c->token,
				.kind = c->kind,
				.close_after_flush = c->close_after_flush,
				.in_len = c->in_len,
				.out_len = out_pending(c),
			};

			memcpy(buf + off, &rec, sizeof(rec));
			off += sizeof(rec);
			if (c->in_len)
				memcpy(buf + off, c->in, c->in_len);
			off += c->in_len;
			if (rec.out_len)
				memcpy(buf + off, c->out + c->out_off, rec.out_len);
			off += rec.out_len;
		}
		r = write_all(meta, buf, size);
		if (r >= 0)
			r = luo_session_preserve_fd(srv->session_fd, TOKEN_CONNS, meta);
		if (r < 0 && r != -ESTALE)
			log_msg("connection state not kept: %s", strerror(-r));
	}
	r = luo_session_handover(srv->session_fd);
	if (r == -ESTALE) {
		/*
		 * A (simulated) reboot already carried the session into the next
		 * generation with what was preserved at start: the successor gets
		 * the data and the ports, only the open connections are lost.
		 */
		log_msg("session %s was carried over by a reboot; open connections are not kept",
			srv->opt.session);
		return 0;
	}
	if (r < 0) {
		log_msg("luo_session_handover: %s", strerror(-r));
		return r;
	}
	log_msg("handed over session %s with %" PRIu64 " keys and %" PRIu64
		" connections in %.2f ms",
		srv->opt.session, kv_store_count(&srv->store), h.n, ms_since(&t0));
	return 0;
}

static void server_free(struct server *srv)
{
	while (srv->conns)
		conn_free(srv, srv->conns);
	kv_store_close(&srv->store);
	srv->listen_fd = safe_close(srv->listen_fd);
	srv->http_fd = safe_close(srv->http_fd);
	srv->session_fd = safe_close(srv->session_fd);
	srv->sigfd = safe_close(srv->sigfd);
	srv->epfd = safe_close(srv->epfd);
	free(srv->rbuf);
	srv->rbuf = NULL;
}

/* ---- main ---- */

static int write_ready_file(struct server *srv, double startup_ms)
{
	_cleanup_free_ char *tmp = NULL;
	struct timespec now;
	struct kv_stats st;
	FILE *f;

	clock_gettime(CLOCK_REALTIME, &now);
	if (asprintf(&tmp, "%s.tmp", srv->opt.ready_file) < 0)
		return -ENOMEM;
	f = fopen(tmp, "we");
	if (!f)
		return negative_errno();
	kv_store_stats(&srv->store, &st);
	/* pid port http_port keys how ready_at_realtime_ns startup_ms generation connections */
	fprintf(f, "%d %d %d %" PRIu64 " %s %lld %.3f %" PRIu64 " %zu\n", (int)getpid(),
		socket_port(srv->listen_fd), socket_port(srv->http_fd), st.keys,
		srv->restored ? "restored" : "fresh",
		(long long)now.tv_sec * 1000000000LL + now.tv_nsec, startup_ms, st.generation,
		srv->conns_restored);
	if (fclose(f) != 0)
		return negative_errno();
	return RET_NERRNO(rename(tmp, srv->opt.ready_file));
}

static void usage(FILE *f)
{
	fputs("Usage: kv-server [OPTIONS]\n"
	      "A key-value server whose data, sockets and connections survive restarts through luo.\n\n"
	      "  --port N           line protocol port (default 7000; 0 picks one)\n"
	      "  --http-port N      also serve HTTP/1.1 on port N (/ping, /get?key=K, /count)\n"
	      "  --bind ADDR        IPv4 address to listen on (default 127.0.0.1)\n"
	      "  --session NAME     luo session name (default kv)\n"
	      "  --socket PATH      luod's socket (default $LUO_SOCKET or luod's default)\n"
	      "  --capacity SIZE    initial store size, e.g. 64M or 9G (it grows as needed)\n"
	      "  --wait SECONDS     how long to wait for a killed predecessor's session (default 5)\n"
	      "  --no-connections   do not keep open connections across a restart\n"
	      "  --no-luo           run without luo: a restart starts empty\n"
	      "  --snapshot FILE    with --no-luo: load FILE at start, write it at SIGTERM\n"
	      "  --ready-file FILE  write \"pid port http_port keys fresh|restored ready_ns startup_ms\"\n"
	      "                     to FILE when ready\n\n"
	      "Line protocol: SET key value | PUT key length<LF>bytes | GET key | DEL key | COUNT |\n"
	      "STATS | PING | QUIT.  SIGTERM hands everything over to the next kv-server.\n",
	      f);
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum {
		OPT_PORT = 256,
		OPT_HTTP_PORT,
		OPT_BIND,
		OPT_SESSION,
		OPT_SOCKET,
		OPT_CAPACITY,
		OPT_WAIT,
		OPT_NO_CONNECTIONS,
		OPT_NO_LUO,
		OPT_SNAPSHOT,
		OPT_READY_FILE,
	};
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "port", required_argument, NULL, OPT_PORT },
		{ "http-port", required_argument, NULL, OPT_HTTP_PORT },
		{ "bind", required_argument, NULL, OPT_BIND },
		{ "session", required_argument, NULL, OPT_SESSION },
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "capacity", required_argument, NULL, OPT_CAPACITY },
		{ "wait", required_argument, NULL, OPT_WAIT },
		{ "no-connections", no_argument, NULL, OPT_NO_CONNECTIONS },
		{ "no-luo", no_argument, NULL, OPT_NO_LUO },
		{ "snapshot", required_argument, NULL, OPT_SNAPSHOT },
		{ "ready-file", required_argument, NULL, OPT_READY_FILE },
		{}
	};
	int ch;

	*o = (struct options){
		.bind_addr = "127.0.0.1",
		.port = 7000,
		.http_port = -1,
		.session = "kv",
		.capacity = 64u << 20,
		.use_luo = true,
		.keep_connections = true,
		.wait_seconds = 5,
	};
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		switch (ch) {
		case 'h':
			usage(stdout);
			exit(0);
		case OPT_PORT:
		case OPT_HTTP_PORT: {
			char *e;
			long v = strtol(optarg, &e, 10);
			if (*e || v < 0 || v > 65535) {
				fprintf(stderr, "kv-server: bad port %s\n", optarg);
				return -EINVAL;
			}
			*(ch == OPT_PORT ? &o->port : &o->http_port) = (int)v;
			break;
		}
		case OPT_BIND:
			o->bind_addr = optarg;
			break;
		case OPT_SESSION:
			if (strlen(optarg) == 0 || strlen(optarg) >= LUO_SESSION_NAME_LENGTH) {
				fprintf(stderr, "kv-server: a session name has 1 to 63 bytes\n");
				return -EINVAL;
			}
			o->session = optarg;
			break;
		case OPT_SOCKET:
			o->luo_socket = optarg;
			break;
		case OPT_CAPACITY:
			if (kv_parse_size(optarg, &o->capacity) < 0) {
				fprintf(stderr, "kv-server: bad size %s\n", optarg);
				return -EINVAL;
			}
			break;
		case OPT_WAIT:
			o->wait_seconds = atof(optarg);
			break;
		case OPT_NO_CONNECTIONS:
			o->keep_connections = false;
			break;
		case OPT_NO_LUO:
			o->use_luo = false;
			break;
		case OPT_SNAPSHOT:
			o->snapshot = optarg;
			break;
		case OPT_READY_FILE:
			o->ready_file = optarg;
			break;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return -EINVAL;
	}
	if (o->snapshot && o->use_luo) {
		fprintf(stderr, "kv-server: --snapshot goes with --no-luo\n");
		return -EINVAL;
	}
	return 0;
}

static int serve(struct server *srv)
{
	struct epoll_event evs[256];

	for (;;) {
		int n = epoll_wait(srv->epfd, evs, (int)ELEMENTSOF(evs), -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		/*
		 * A signal first: epoll reports ready files in the order they became
		 * ready, so with thousands of busy connections the signalfd would
		 * wait behind every one of them (a whole round of answers, hundreds
		 * of milliseconds) before the restart could begin.
		 */
		if (n == (int)ELEMENTSOF(evs)) {
			struct signalfd_siginfo si;

			if (read(srv->sigfd, &si, sizeof(si)) == sizeof(si))
				return (int)si.ssi_signo;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;

			if (tag == TAG_SIGNAL) {
				struct signalfd_siginfo si;
				if (read(srv->sigfd, &si, sizeof(si)) == sizeof(si))
					return (int)si.ssi_signo;
			} else if (tag == TAG_LISTEN) {
				accept_all(srv, srv->listen_fd, CONN_LINE);
			} else if (tag == TAG_HTTP) {
				accept_all(srv, srv->http_fd, CONN_HTTP);
			} else {
				/*
				 * A connection freed earlier in this batch cannot appear later
				 * in it: each fd has one entry and conn_free() closes it first.
				 */
				conn_handle(srv, (struct conn *)(uintptr_t)tag, evs[i].events);
			}
		}
	}
}

int main(int argc, char **argv)
{
	struct server srv = {
		.epfd = -EBADF,
		.sigfd = -EBADF,
		.listen_fd = -EBADF,
		.http_fd = -EBADF,
		.session_fd = -EBADF,
		.store = { .fd = -EBADF },
	};
	sigset_t mask;
	const char *how;
	double startup_ms;
	int r, sig;

	clock_gettime(CLOCK_MONOTONIC, &start_time);
	if (parse_args(argc, argv, &srv.opt) < 0)
		return 2;

	/* Signals arrive through the event loop, so a handover never interrupts a request. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	srv.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	srv.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv.sigfd < 0 || srv.epfd < 0) {
		r = negative_errno(); /* before log_msg() can change errno */
		log_msg("signalfd/epoll: %s", strerror(-r));
		goto out;
	}
	srv.rbuf = malloc(READ_CHUNK);
	if (!srv.rbuf) {
		r = -ENOMEM;
		log_msg("out of memory");
		goto out;
	}

	r = srv.opt.use_luo ? start_with_luo(&srv) : start_plain(&srv);
	if (r < 0)
		goto out;

	r = epoll_tag(&srv, EPOLL_CTL_ADD, srv.sigfd, EPOLLIN, TAG_SIGNAL);
	if (r >= 0)
		r = epoll_tag(&srv, EPOLL_CTL_ADD, srv.listen_fd, EPOLLIN, TAG_LISTEN);
	if (r >= 0 && srv.http_fd >= 0)
		r = epoll_tag(&srv, EPOLL_CTL_ADD, srv.http_fd, EPOLLIN, TAG_HTTP);
	if (r < 0) {
		log_msg("epoll_ctl: %s", strerror(-r));
		goto out;
	}

	startup_ms = ms_since(&start_time);
	how = !srv.restored	? "fresh"
	      : srv.opt.use_luo ? "restored from session"
				: "restored from snapshot";
	if (srv.opt.ready_file) {
		r = write_ready_file(&srv, startup_ms);
		if (r < 0)
			log_msg("cannot write %s: %s", srv.opt.ready_file, strerror(-r));
	}
	if (srv.http_fd >= 0)
		printf("kv-server: ready on port %d (http %d), %" PRIu64
		       " keys, %s, %.2f ms from start\n",
		       socket_port(srv.listen_fd), socket_port(srv.http_fd),
		       kv_store_count(&srv.store), how, startup_ms);
	else
		printf("kv-server: ready on port %d, %" PRIu64 " keys, %s, %.2f ms from start\n",
		       socket_port(srv.listen_fd), kv_store_count(&srv.store), how, startup_ms);
	fflush(stdout);

	sig = serve(&srv);
	if (sig < 0) {
		r = sig;
		log_msg("event loop: %s", strerror(-r));
		goto out;
	}
	r = 0;
	if (srv.opt.use_luo)
		r = handover(&srv);
	else if (srv.opt.snapshot) {
		r = save_snapshot(&srv);
		if (r < 0)
			log_msg("cannot write snapshot %s: %s", srv.opt.snapshot, strerror(-r));
	}
out:
	server_free(&srv);
	return r < 0 ? 1 : 0;
}
