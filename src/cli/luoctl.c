/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl, the command line
 *
 * One invocation, one command: luoctl connects to luod's socket, sends one
 * device request (STATUS, LIST, SHOW, UPDATE, REBOOT), reads the reply (or the
 * stream of replies for listings), prints it as a table or as JSON, and exits
 * with a code scripts can rely on (see luoctl(8) and enum exit_code).
 * dump-state needs no luod at all: it decodes a state blob with the codec.
 * run needs no connection either: it execs a command with the preload shim
 * and LUO_SOCKET set, so the exit status is the command's.
 *
 * The connection is opened per invocation and closed at exit; luoctl holds
 * no sessions, so it can die at any point without affecting anyone.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/socket-util.h"
#include "cli/format.h"
#include "config.h"
#include "core/state.h"
#include "protocol/protocol.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_FAILED = 1,      /* luod replied an error, or the local operation failed */
	EXIT_USAGE = 2,	      /* bad command line */
	EXIT_UNREACHABLE = 3, /* cannot connect to luod, or it hung up / did not answer */
	EXIT_NOT_FOUND = 4,   /* show of a session that does not exist (for this uid) */
	EXIT_ROLLED_BACK = 5, /* update refused by the new binary, previous luod serving */
};

/* How long luoctl waits for a reply.  Updates of very large states take a
 * while; this only guards against a luod that is stuck for good. */
#define REPLY_TIMEOUT_MS (300 * 1000)

static const char *arg_socket;
static bool arg_json;
static char socket_path_buf[PATH_MAX];

static _printf_(1, 2) void log_error(const char *fmt, ...)
{
	va_list ap;

	fputs("luoctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* luod's rule, in the same order: --socket, $LUO_SOCKET, $XDG_RUNTIME_DIR, /run. */
static const char *socket_path(void)
{
	if (arg_socket)
		return arg_socket;
	/* Too long for a socket address: connecting will say so. */
	if (luo_wire_socket_path(socket_path_buf, sizeof(socket_path_buf)) < 0)
		return getenv("LUO_SOCKET") && *getenv("LUO_SOCKET") ? getenv("LUO_SOCKET")
								     : socket_path_buf;
	return socket_path_buf;
}

static void usage(FILE *f)
{
	fputs("Usage: luoctl [--socket PATH] [--json] COMMAND [ARGS]\n"
	      "\n"
	      "Commands:\n"
	      "  status                 luod's pid, version, counters and fd capacity\n"
	      "  list                   sessions visible to the caller's uid\n"
	      "  show NAME              one session and its files\n"
	      "                         (--outgoing or --incoming picks one namespace)\n"
	      "  drop NAME              remove a session nobody holds: an incoming one not\n"
	      "                         retrieved, or a handover-on-close one waiting for\n"
	      "                         its name (--outgoing or --incoming picks one)\n"
	      "  update [--exec BINARY] live update of luod, into BINARY or its own binary\n"
	      "  reboot                 simulated kexec: outgoing sessions become incoming\n"
	      "  dump-state FILE        decode a luod state blob (FILE or - for stdin)\n"
	      "  run [--socket PATH] -- COMMAND [ARGS...]\n"
	      "                         run COMMAND with luo-preload.so and LUO_SOCKET set\n"
	      "  help                   this text\n"
	      "\n"
	      "Options:\n"
	      "  --socket PATH  luod's socket (default: $LUO_SOCKET, $XDG_RUNTIME_DIR/luo/luod.sock,\n"
	      "                 /run/luo/luod.sock)\n"
	      "  --json         machine-readable output\n"
	      "  --version      print the version\n"
	      "\n"
	      "Exit codes: 0 ok, 1 failed, 2 usage, 3 luod unreachable, 4 not found, 5 rolled back.\n",
	      f);
}

static int usage_error(const char *fmt, ...) _printf_(1, 2);
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("luoctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'luoctl help'.\n", stderr);
	return EXIT_USAGE;
}

/* For commands without arguments: accepts --json after the command too. */
static int parse_no_args(int argc, char **argv, const char *name)
{
	static const struct option options[] = { { "json", no_argument, NULL, 'j' }, {} };
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+", options, NULL)) >= 0) {
		if (c != 'j')
			return usage_error("%s: bad option", name);
		arg_json = true;
	}
	if (optind != argc)
		return usage_error("%s takes no arguments", name);
	return 0;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- talking to luod ---- */

static int connect_luod(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -EBADF;
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

/* Connects, or says why not; returns the fd or -errno (message printed). */
static int connect_or_explain(void)
{
	const char *path = socket_path();
	int fd = connect_luod(path);

	if (fd < 0)
		log_error("cannot connect to luod: %s (is luod running? (socket %s))",
			  strerror(-fd), path);
	return fd;
}

static uint32_t request_tag(void)
{
	return (uint32_t)syscall(SYS_gettid);
}

static int send_request(int fd, uint32_t nr, const void *req, size_t size)
{
	struct luo_wire_request h = {
		.op = _IO(LIVEUPDATE_IOCTL_TYPE, nr),
		.tag = request_tag(),
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)req, .iov_len = size },
	};
	ssize_t n = socket_send_message(fd, iov, 2, NULL, 0);

	if (n == -EPIPE || n == -ECONNRESET) {
		/* luod may have refused the connection before hanging up: say why. */
		int k = luo_wire_refusal(fd);
		if (k < 0)
			return k;
	}
	if (n < 0)
		return (int)n;
	return 0;
}

/*
 * Receives one reply message into buf (LUO_WIRE_REPLY_MAX bytes).  Returns
 * the payload length and the header in *ret_hdr; -ECONNRESET if luod hung
 * up, -ETIMEDOUT if it did not answer, -EBADMSG for a malformed reply.
 */
static int recv_reply(int fd, uint8_t *buf, struct luo_wire_reply *ret_hdr)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int fds[SOCKET_MAX_FDS];
	size_t n_fds = 0;
	ssize_t n;
	int r;

	do
		r = poll(&p, 1, REPLY_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return negative_errno();
	if (r == 0)
		return -ETIMEDOUT;
	/* luoctl's requests carry no fds and their replies none: any that come are closed. */
	n = socket_recv_message(fd, buf, LUO_WIRE_REPLY_MAX, fds, SOCKET_MAX_FDS, &n_fds, 0);
	close_many(fds, n_fds);
	if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
		int k = luo_wire_refusal(fd);
		return k < 0 ? k : -ECONNRESET;
	}
	if (n < 0)
		return (int)n;
	if ((size_t)n < sizeof(struct luo_wire_reply))
		return -EBADMSG;
	memcpy(ret_hdr, buf, sizeof(*ret_hdr));
	if (ret_hdr->tag == 0 && (ret_hdr->flags & LUO_WIRE_REPLY_REFUSED))
		return ret_hdr->result < 0 && ret_hdr->result >= -4095 ? ret_hdr->result
								       : -ECONNREFUSED;
	if (ret_hdr->size != (size_t)n - sizeof(*ret_hdr) || ret_hdr->tag != request_tag())
		return -EBADMSG;
	if (ret_hdr->result > 0 || ret_hdr->result < -4095)
		return -EBADMSG;
	return (int)ret_hdr->size;
}

/* Explains a transport failure and returns the exit code for it. */
static int transport_failure(const char *what, int r)
{
	if (r == -EBADMSG) {
		log_error("%s: luod sent a malformed reply (is luoctl the same version as luod?)",
			  what);
		return EXIT_FAILED;
	}
	if (r == -EMFILE)
		log_error("%s: luod refused the connection: this uid is at its connection limit "
			  "(socket %s)",
			  what, socket_path());
	else if (r == -ETIMEDOUT)
		log_error("%s: luod did not answer within %d s (socket %s)", what,
			  REPLY_TIMEOUT_MS / 1000, socket_path());
	else if (r == -ECONNRESET || r == -EPIPE) /* EPIPE: it hung up before the request */
		log_error("%s: luod closed the connection before replying (is luod still running, "
			  "and this uid below its connection limit? (socket %s))",
			  what, socket_path());
	else
		log_error("%s: talking to luod failed: %s (socket %s)", what, strerror(-r),
			  socket_path());
	return EXIT_UNREACHABLE;
}

/*
 * Explains luod's error reply to a request and returns the exit code.  On
 * luoctl's own connection EMFILE means luod takes no more connections from
 * this uid (or has no fd left): luod cannot be reached for this request.
 */
static int refused(const char *what, int r)
{
	if (r == -EMFILE) {
		log_error("%s: luod serves no more connections for this uid: %s (close other "
			  "clients, or raise luod's --max-connections)",
			  what, strerror(-r));
		return EXIT_UNREACHABLE;
	}
	log_error("%s: luod refused: %s", what, strerror(-r));
	return EXIT_FAILED;
}

/*
 * One request with a single reply.  reply gets min(reply_size, payload)
 * bytes of the reply's payload.  Returns luod's result (0 or -errno) or, on a
 * transport failure, a positive exit code with the message printed.
 */
static int call(int fd, const char *what, uint32_t nr, const void *req, size_t req_size,
		void *reply, size_t reply_size, uint64_t *ret_elapsed_usec)
{
	_cleanup_free_ uint8_t *buf = malloc(LUO_WIRE_REPLY_MAX);
	struct luo_wire_reply h;
	uint64_t start;
	int r;

	if (!buf) {
		log_error("%s: %s", what, strerror(ENOMEM));
		return EXIT_FAILED;
	}
	start = now_usec();
	r = send_request(fd, nr, req, req_size);
	if (r < 0)
		return transport_failure(what, r);
	r = recv_reply(fd, buf, &h);
	if (r < 0)
		return transport_failure(what, r);
	if (ret_elapsed_usec)
		*ret_elapsed_usec = now_usec() - start;
	if (h.flags & LUO_WIRE_REPLY_MORE)
		return transport_failure(what, -EBADMSG);
	/* Even an error reply may carry the struct (an update that rolled back does). */
	memcpy(reply, buf + sizeof(h), MIN(reply_size, (size_t)r));
	return h.result;
}

/*
 * A streaming listing (protocol.h): the first reply carries the command struct
 * copied back (cmd_size bytes, into cmd), the next head_size bytes are a fixed
 * head (into head; SHOW's session entry, in the second message), and the rest,
 * in messages flagged LUO_WIRE_REPLY_MORE on all but the last, are whole
 * entries, each passed to cb.  Returns luod's result (0 or -errno) or a
 * positive exit code with the message printed.
 */
static int call_stream(int fd, const char *what, uint32_t nr, const void *req, size_t req_size,
		       void *cmd, size_t cmd_size, void *head, size_t head_size, size_t entry_size,
		       int (*cb)(const void *entry, void *userdata), void *userdata)
{
	_cleanup_free_ uint8_t *buf = malloc(LUO_WIRE_REPLY_MAX);
	struct luo_wire_reply h;
	bool got_cmd = false, got_head = head_size == 0;
	int r;

	if (!buf) {
		log_error("%s: %s", what, strerror(ENOMEM));
		return EXIT_FAILED;
	}
	r = send_request(fd, nr, req, req_size);
	if (r < 0)
		return transport_failure(what, r);
	for (;;) {
		size_t off = sizeof(h), len;

		r = recv_reply(fd, buf, &h);
		if (r < 0)
			return transport_failure(what, r);
		if (h.result < 0)
			return h.result;
		len = (size_t)r;
		if (!got_cmd) {
			if (len < cmd_size)
				return transport_failure(what, -EBADMSG);
			memcpy(cmd, buf + off, cmd_size);
			off += cmd_size;
			len -= cmd_size;
			got_cmd = true;
		}
		if (!got_head && len > 0) {
			if (len < head_size)
				return transport_failure(what, -EBADMSG);
			memcpy(head, buf + off, head_size);
			off += head_size;
			len -= head_size;
			got_head = true;
		}
		if (len % entry_size != 0 || (len > 0 && !got_head))
			return transport_failure(what, -EBADMSG);
		for (size_t i = 0; i < len / entry_size; i++) {
			r = cb(buf + off + i * entry_size, userdata);
			if (r != 0)
				return r;
		}
		if (!(h.flags & LUO_WIRE_REPLY_MORE))
			return got_head ? 0 : transport_failure(what, -EBADMSG);
	}
}

/* ---- names of things ---- */

static const char *flags_name(uint64_t flags)
{
	if (flags == 0)
		return "-";
	if (flags == LUO_SESSION_FLAG_HANDOVER_ON_CLOSE)
		return "handover-on-close";
	return "unknown";
}

static void format_duration(char *buf, size_t size, uint64_t usec)
{
	if (usec < 1000)
		snprintf(buf, size, "%" PRIu64 " us", usec);
	else if (usec < 10 * 1000 * 1000)
		snprintf(buf, size, "%.3f ms", (double)usec / 1000.0);
	else
		snprintf(buf, size, "%.3f s", (double)usec / 1e6);
}

/* ---- status ---- */

static int cmd_status(int argc, char **argv)
{
	_cleanup_close_ int fd = -EBADF;
	struct luo_wire_status st = { .size = sizeof(st) };
	char version[sizeof(st.version) + 1];
	int r;

	r = parse_no_args(argc, argv, "status");
	if (r != 0)
		return r;
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	r = call(fd, "status", LUO_CMD_STATUS, &st, sizeof(st), &st, sizeof(st), NULL);
	if (r > 0)
		return r;
	if (r < 0)
		return refused("status", r);
	memcpy(version, st.version, sizeof(st.version));
	version[sizeof(st.version)] = 0;

	if (arg_json) {
		printf("{\"socket\":");
		json_print_string(stdout, (const uint8_t *)socket_path(), strlen(socket_path()));
		printf(",\"pid\":%" PRIu64 ",\"version\":", st.pid);
		json_print_string(stdout, (const uint8_t *)version, strlen(version));
		printf(",\"update_number\":%" PRIu64 ",\"live_updates\":%" PRIu64
		       ",\"outgoing_sessions\":%" PRIu64 ",\"incoming_sessions\":%" PRIu64
		       ",\"files\":%" PRIu64 ",\"connections\":%" PRIu64 ",\"fd_limit\":%" PRIu64
		       ",\"fds_in_use\":%" PRIu64 ",\"started_usec\":%" PRIu64
		       ",\"fd_capacity\":%" PRIu64 ",\"root_reserve\":%" PRIu64
		       ",\"uid_fd_share\":%" PRIu64 ",\"uid_fds\":%" PRIu64
		       ",\"worker_pid\":%" PRIu64 ",\"worker_restarts\":%" PRIu64
		       ",\"binary_since_usec\":%" PRIu64 ",\"journal_size\":%" PRIu64
		       ",\"binary\":",
		       st.update_number, st.n_live_updates, st.n_outgoing, st.n_incoming,
		       st.n_files, st.n_connections, st.fd_limit, st.fds_in_use, st.started_usec,
		       st.fd_capacity, st.root_reserve, st.uid_fd_share, st.uid_fds,
		       st.worker_pid, st.n_worker_restarts, st.binary_since_usec, st.journal_size);
		json_print_string(stdout, (const uint8_t *)st.binary,
				  strnlen(st.binary, sizeof(st.binary)));
		printf("}\n");
		return EXIT_OK;
	}

	_cleanup_free_ char *v = escape_human((const uint8_t *)version, strlen(version));
	char since[64] = "unknown";
	time_t t = (time_t)(st.started_usec / 1000000);
	struct tm tm;

	if (st.started_usec && localtime_r(&t, &tm))
		strftime(since, sizeof(since), "%Y-%m-%d %H:%M:%S %Z", &tm);
	printf("socket:         %s\n", socket_path());
	char bsince[64] = "unknown";
	time_t bt = (time_t)(st.binary_since_usec / 1000000);
	_cleanup_free_ char *bin =
		escape_human((const uint8_t *)st.binary, strnlen(st.binary, sizeof(st.binary)));

	if (st.binary_since_usec && localtime_r(&bt, &tm))
		strftime(bsince, sizeof(bsince), "%Y-%m-%d %H:%M:%S %Z", &tm);
	printf("luod:           pid %" PRIu64 " (worker %" PRIu64 "), version %s\n", st.pid,
	       st.worker_pid, v ? v : "?");
	printf("running since:  %s\n", since);
	printf("binary:         %s (since %s)\n", bin && *bin ? bin : "?", bsince);
	printf("live updates:   %" PRIu64 " (binary replaced without losing anything)\n",
	       st.n_live_updates);
	printf("worker restarts: %" PRIu64 " (workers that died and were replaced)\n",
	       st.n_worker_restarts);
	printf("journal:        %" PRIu64 " bytes\n", st.journal_size);
	printf("update number:  %" PRIu64 " (reboots)\n", st.update_number);
	printf("sessions:       %" PRIu64 " outgoing, %" PRIu64 " incoming\n", st.n_outgoing,
	       st.n_incoming);
	printf("files:          %" PRIu64 "\n", st.n_files);
	printf("connections:    %" PRIu64 "\n", st.n_connections);
	printf("fds:            %" PRIu64 " in use of %" PRIu64 " (about %" PRIu64
	       " more files fit)\n",
	       st.fds_in_use, st.fd_limit,
	       st.fd_limit > st.fds_in_use ? st.fd_limit - st.fds_in_use : 0);
	printf("capacity:       %" PRIu64 " sessions, files and connections (%" PRIu64
	       " of them for root alone)\n",
	       st.fd_capacity, st.root_reserve);
	printf("this uid:       %" PRIu64 " held of at most %" PRIu64 "\n", st.uid_fds,
	       st.uid_fd_share);
	return EXIT_OK;
}

/* ---- list ---- */

/* Entries of a streamed listing, collected in order; elem_size is set by the caller. */
struct collected {
	void *v;
	size_t n, allocated, elem_size;
	const char *what; /* the command, for messages */
};

static int collect_entry(const void *entry, void *userdata)
{
	struct collected *l = userdata;

	if (l->n == l->allocated) {
		size_t m = l->allocated ? l->allocated * 2 : 64;
		void *p = reallocarray(l->v, m, l->elem_size);

		if (!p) {
			log_error("%s: %s", l->what, strerror(ENOMEM));
			return EXIT_FAILED;
		}
		l->v = p;
		l->allocated = m;
	}
	memcpy((uint8_t *)l->v + l->n++ * l->elem_size, entry, l->elem_size);
	return 0;
}

static void json_print_session_fields(const struct luo_wire_session_entry *s)
{
	size_t len = name_field_length(s->name, sizeof(s->name));

	printf("\"name\":");
	json_print_string(stdout, s->name, len);
	printf(",\"name_hex\":");
	json_print_hex(stdout, s->name, len);
	printf(",\"kind\":\"%s\",\"state\":\"%s\",\"uid\":%" PRIu32 ",\"flags\":%" PRIu64
	       ",\"handover_on_close\":%s,\"files\":%" PRIu64,
	       luo_session_kind_name(s->kind), luo_session_state_name(s->state), s->uid, s->flags,
	       (s->flags & LUO_SESSION_FLAG_HANDOVER_ON_CLOSE) ? "true" : "false", s->n_files);
}

static int print_sessions_table(const struct luo_wire_session_entry *v, size_t n)
{
	static const char *const headers[] = { "NAME", "KIND", "STATE", "UID", "FILES", "FLAGS" };
	struct table *t = table_new(ELEMENTSOF(headers), headers);
	int r = 0;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < n && r >= 0; i++) {
		_cleanup_free_ char *name =
			escape_human(v[i].name, name_field_length(v[i].name, sizeof(v[i].name)));
		char uid[16], files[24];
		const char *cells[ELEMENTSOF(headers)] = {
			name,
			luo_session_kind_name(v[i].kind),
			luo_session_state_name(v[i].state),
			uid,
			files,
			flags_name(v[i].flags),
		};

		if (!name) {
			r = -ENOMEM;
			break;
		}
		snprintf(uid, sizeof(uid), "%" PRIu32, v[i].uid);
		snprintf(files, sizeof(files), "%" PRIu64, v[i].n_files);
		r = table_add_row(t, cells);
	}
	if (r >= 0)
		table_print(t, stdout, (1u << 3) | (1u << 4));
	table_free(t);
	return r;
}

static int cmd_list(int argc, char **argv)
{
	_cleanup_close_ int fd = -EBADF;
	struct luo_wire_list req = { .size = sizeof(req) }, out;
	struct collected l = { .elem_size = sizeof(struct luo_wire_session_entry), .what = "list" };
	int r;

	r = parse_no_args(argc, argv, "list");
	if (r != 0)
		return r;
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	r = call_stream(fd, "list", LUO_CMD_LIST, &req, sizeof(req), &out, sizeof(out), NULL, 0,
			sizeof(struct luo_wire_session_entry), collect_entry, &l);
	if (r > 0)
		goto out;
	if (r < 0) {
		r = refused("list", r);
		goto out;
	}
	if (arg_json) {
		printf("{\"sessions\":[");
		for (size_t i = 0; i < l.n; i++) {
			printf(i ? ",{" : "{");
			json_print_session_fields(&((struct luo_wire_session_entry *)l.v)[i]);
			printf("}");
		}
		printf("]}\n");
	} else if (l.n == 0)
		printf("No sessions.\n");
	else if (print_sessions_table((struct luo_wire_session_entry *)l.v, l.n) < 0) {
		log_error("list: %s", strerror(ENOMEM));
		r = EXIT_FAILED;
		goto out;
	}
	r = EXIT_OK;
out:
	free(l.v);
	return r;
}

/* ---- show ---- */

static int print_files_table(const struct collected *f)
{
	static const char *const headers[] = { "TOKEN", "HANDLER", "RETRIEVED", "DATA" };
	struct table *t = table_new(ELEMENTSOF(headers), headers);
	int r = 0;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < f->n && r >= 0; i++) {
		const struct luo_wire_file_entry *e =
			&((const struct luo_wire_file_entry *)f->v)[i];
		_cleanup_free_ char *compat = escape_human(
			(const uint8_t *)e->compatible,
			name_field_length((const uint8_t *)e->compatible, sizeof(e->compatible)));
		char token[24], retrieved[128], data[24];
		const char *cells[ELEMENTSOF(headers)] = { token, compat, retrieved, data };

		if (!compat) {
			r = -ENOMEM;
			break;
		}
		snprintf(token, sizeof(token), "%" PRIu64, e->token);
		if (e->retrieve_error < 0)
			snprintf(retrieved, sizeof(retrieved), "failed: %s",
				 strerror(-e->retrieve_error));
		else
			snprintf(retrieved, sizeof(retrieved), "%s", e->retrieved ? "yes" : "no");
		snprintf(data, sizeof(data), "%" PRIu64, e->data_size);
		r = table_add_row(t, cells);
	}
	if (r >= 0)
		table_print(t, stdout, (1u << 0) | (1u << 3));
	table_free(t);
	return r;
}

static void json_print_show(const struct luo_wire_session_entry *s, const struct collected *f)
{
	printf("{");
	json_print_session_fields(s);
	printf(",\"file_list\":[");
	for (size_t i = 0; i < f->n; i++) {
		const struct luo_wire_file_entry *e =
			&((const struct luo_wire_file_entry *)f->v)[i];

		printf("%s{\"token\":%" PRIu64 ",\"handler\":", i ? "," : "", e->token);
		json_print_string(
			stdout, (const uint8_t *)e->compatible,
			name_field_length((const uint8_t *)e->compatible, sizeof(e->compatible)));
		printf(",\"retrieved\":%s,\"retrieve_errno\":%d,\"retrieve_error\":",
		       e->retrieved ? "true" : "false", -e->retrieve_error);
		if (e->retrieve_error < 0) {
			const char *m = strerror(-e->retrieve_error);
			json_print_string(stdout, (const uint8_t *)m, strlen(m));
		} else
			printf("null");
		printf(",\"data_size\":%" PRIu64 "}", e->data_size);
	}
	printf("]}");
}

struct shown {
	struct luo_wire_session_entry s;
	struct collected f;
};

/* Fetches the session name of one namespace: 1 if there, 0 if not, or -(exit code). */
static int fetch_one(int fd, const char *name, uint32_t kind, struct shown *ret)
{
	struct luo_wire_show req = { .size = sizeof(req), .kind = kind }, out;
	int r;

	memcpy(req.name, name, strlen(name));
	ret->f = (struct collected){ .elem_size = sizeof(struct luo_wire_file_entry),
				     .what = "show" };
	r = call_stream(fd, "show", LUO_CMD_SHOW, &req, sizeof(req), &out, sizeof(out), &ret->s,
			sizeof(ret->s), sizeof(struct luo_wire_file_entry), collect_entry, &ret->f);
	if (r > 0)
		return -r;
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return -refused("show", r);
	return 1;
}

static int print_shown(const struct shown *x, bool first)
{
	if (arg_json) {
		printf(first ? "" : ",");
		json_print_show(&x->s, &x->f);
		return 0;
	}

	_cleanup_free_ char *n =
		escape_human(x->s.name, name_field_length(x->s.name, sizeof(x->s.name)));
	if (!n)
		return -ENOMEM;
	if (!first)
		printf("\n");
	printf("session:  %s\n", n);
	printf("kind:     %s\n", luo_session_kind_name(x->s.kind));
	printf("state:    %s\n", luo_session_state_name(x->s.state));
	printf("uid:      %" PRIu32 "\n", x->s.uid);
	printf("flags:    %s\n", flags_name(x->s.flags));
	printf("files:    %" PRIu64 "\n", x->s.n_files);
	if (x->f.n > 0) {
		printf("\n");
		return print_files_table(&x->f);
	}
	return 0;
}

static int cmd_show(int argc, char **argv)
{
	static const struct option options[] = { { "outgoing", no_argument, NULL, 'o' },
						 { "incoming", no_argument, NULL, 'i' },
						 { "json", no_argument, NULL, 'j' },
						 {} };
	_cleanup_close_ int fd = -EBADF;
	struct shown shown[2] = {};
	bool outgoing = true, incoming = true;
	const char *name;
	size_t len;
	int c, r, ret, found = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+", options, NULL)) >= 0) {
		switch (c) {
		case 'o':
			incoming = false;
			break;
		case 'i':
			outgoing = false;
			break;
		case 'j':
			arg_json = true;
			break;
		default:
			return usage_error("show: bad option");
		}
	}
	if (!outgoing && !incoming)
		return usage_error("show: --outgoing and --incoming exclude each other");
	if (argc - optind != 1)
		return usage_error("show takes exactly one session name");
	name = argv[optind];
	len = strlen(name);
	if (len == 0 || len >= LIVEUPDATE_SESSION_NAME_LENGTH)
		return usage_error("show: session names have 1 to %d bytes, not %zu",
				   LIVEUPDATE_SESSION_NAME_LENGTH - 1, len);
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	/* Everything is fetched before anything is printed: a failure halfway
	 * leaves no half-written output. */
	for (uint32_t kind = LUO_SESSION_OUTGOING; kind <= LUO_SESSION_INCOMING; kind++) {
		if ((kind == LUO_SESSION_OUTGOING && !outgoing) ||
		    (kind == LUO_SESSION_INCOMING && !incoming))
			continue;
		r = fetch_one(fd, name, kind, &shown[found]);
		if (r < 0) {
			ret = -r;
			goto out;
		}
		found += r;
	}
	if (arg_json)
		printf("{\"sessions\":[");
	for (int i = 0; i < found; i++)
		if (print_shown(&shown[i], i == 0) < 0) {
			log_error("show: %s", strerror(ENOMEM));
			ret = EXIT_FAILED;
			goto out;
		}
	if (arg_json)
		printf("]}\n");
	if (found == 0) {
		_cleanup_free_ char *n = escape_human((const uint8_t *)name, len);
		log_error("show: no session named '%s'%s (or it belongs to another uid)",
			  n ? n : name,
			  outgoing && incoming ? ""
			  : outgoing	       ? " among outgoing sessions"
					       : " among incoming sessions");
		ret = EXIT_NOT_FOUND;
		goto out;
	}
	ret = EXIT_OK;
out:
	for (size_t i = 0; i < ELEMENTSOF(shown); i++)
		free(shown[i].f.v);
	return ret;
}

/* ---- drop ---- */

static int cmd_drop(int argc, char **argv)
{
	static const struct option options[] = { { "outgoing", no_argument, NULL, 'o' },
						 { "incoming", no_argument, NULL, 'i' },
						 { "json", no_argument, NULL, 'j' },
						 {} };
	_cleanup_close_ int fd = -EBADF;
	struct luo_wire_drop req = { .size = sizeof(req), .kind = LUO_DROP_ANY };
	const char *name;
	size_t len;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+", options, NULL)) >= 0) {
		switch (c) {
		case 'o':
		case 'i':
			if (req.kind != LUO_DROP_ANY)
				return usage_error(
					"drop: --outgoing and --incoming exclude each other");
			req.kind = c == 'o' ? LUO_DROP_OUTGOING : LUO_DROP_INCOMING;
			break;
		case 'j':
			arg_json = true;
			break;
		default:
			return usage_error("drop: bad option");
		}
	}
	if (argc - optind != 1)
		return usage_error("drop takes exactly one session name");
	name = argv[optind];
	len = strlen(name);
	if (len == 0 || len >= LIVEUPDATE_SESSION_NAME_LENGTH)
		return usage_error("drop: session names have 1 to %d bytes, not %zu",
				   LIVEUPDATE_SESSION_NAME_LENGTH - 1, len);
	memcpy(req.name, name, len);
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	r = call(fd, "drop", LUO_CMD_DROP, &req, sizeof(req), &req, sizeof(req), NULL);
	if (r > 0)
		return r;
	if (r < 0) {
		_cleanup_free_ char *n = escape_human((const uint8_t *)name, len);

		if (r == -ENOENT) {
			log_error("drop: no session named '%s' to drop%s (or it belongs to another "
				  "uid)",
				  n ? n : name,
				  req.kind == LUO_DROP_OUTGOING	  ? " among outgoing sessions"
				  : req.kind == LUO_DROP_INCOMING ? " among incoming sessions"
								  : "");
			return EXIT_NOT_FOUND;
		}
		if (r == -EBUSY) {
			log_error("drop: session '%s' is held open by a program: nothing dropped "
				  "(its holder closes it)",
				  n ? n : name);
			return EXIT_FAILED;
		}
		return refused("drop", r);
	}
	if (arg_json)
		printf("{\"result\":\"ok\"}\n");
	else
		printf("drop: session '%s' dropped\n", name);
	return EXIT_OK;
}

/* ---- update and reboot ---- */

static int cmd_update(int argc, char **argv)
{
	static const struct option options[] = { { "exec", required_argument, NULL, 'e' },
						 { "json", no_argument, NULL, 'j' },
						 {} };
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ struct luo_wire_update *u = calloc(1, sizeof(*u));
	const char *exec = NULL;
	char path[PATH_MAX];
	uint64_t blackout = 0;
	int c, r;

	if (!u) {
		log_error("update: %s", strerror(ENOMEM));
		return EXIT_FAILED;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "+", options, NULL)) >= 0) {
		switch (c) {
		case 'e':
			exec = optarg;
			break;
		case 'j':
			arg_json = true;
			break;
		default:
			return usage_error("update: bad option");
		}
	}
	if (optind != argc)
		return usage_error("update takes no arguments besides --exec BINARY");
	u->size = sizeof(*u);
	if (exec) {
		/* luod runs elsewhere: a relative path means the caller's directory. */
		if (exec[0] == '/')
			r = snprintf(path, sizeof(path), "%s", exec);
		else {
			char cwd[PATH_MAX];

			if (!getcwd(cwd, sizeof(cwd))) {
				log_error("update: cannot resolve '%s': %m", exec);
				return EXIT_FAILED;
			}
			r = snprintf(path, sizeof(path), "%s/%s", cwd, exec);
		}
		if (exec[0] == 0 || r < 0 || (size_t)r >= sizeof(u->exec_path))
			return usage_error("update: --exec needs a path of 1 to %d bytes",
					   LUO_UPDATE_PATH_MAX - 1);
		memcpy(u->exec_path, path, (size_t)r);
	}
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	r = call(fd, "update", LUO_CMD_UPDATE, u, sizeof(*u), u, sizeof(*u), &blackout);
	if (r > 0)
		return r;
	if (r < 0 && !u->rolled_back) {
		if (arg_json) {
			printf("{\"result\":\"failed\",\"errno\":%d,\"error\":", -r);
			json_print_string(stdout, (const uint8_t *)strerror(-r),
					  strlen(strerror(-r)));
			printf(",\"rolled_back\":false}\n");
		}
		log_error("update: failed: %s; the update was aborted and luod goes on serving "
			  "with its current binary and state",
			  strerror(-r));
		return EXIT_FAILED;
	}
	if (arg_json) {
		printf("{\"result\":\"%s\",\"errno\":%d,\"rolled_back\":%s,\"blackout_usec\":%" PRIu64
		       ",\"serialize_usec\":%" PRIu64 ",\"exec_usec\":%" PRIu64
		       ",\"restore_usec\":%" PRIu64 ",\"luod_total_usec\":%" PRIu64
		       ",\"state_size\":%" PRIu64 ",\"binary\":",
		       u->rolled_back ? "rolled_back" : "ok", -r, u->rolled_back ? "true" : "false",
		       blackout, u->serialize_usec, u->exec_usec, u->restore_usec, u->total_usec,
		       u->state_size);
		if (exec)
			json_print_string(stdout, (const uint8_t *)path, strlen(path));
		else
			printf("null");
		printf("}\n");
	} else {
		char b[32], s[32], e[32], re[32], t[32];

		format_duration(b, sizeof(b), blackout);
		format_duration(s, sizeof(s), u->serialize_usec);
		format_duration(e, sizeof(e), u->exec_usec);
		format_duration(re, sizeof(re), u->restore_usec);
		format_duration(t, sizeof(t), u->total_usec);
		if (u->rolled_back)
			printf("update: rolled back: the new binary refused the state; the previous "
			       "luod took it back and goes on serving, nothing lost\n");
		else
			printf("update: done, luod runs %s\n",
			       exec ? path : "its own binary again");
		printf("blackout:     %s (request sent to reply received, measured by luoctl)\n",
		       b);
		printf("  serialize:  %s\n", s);
		printf("  exec:       %s\n", e);
		printf("  restore:    %s\n", re);
		printf("  luod total: %s\n", t);
		printf("state size:   %" PRIu64 " bytes\n", u->state_size);
		printf("rolled back:  %s\n", u->rolled_back ? "yes" : "no");
	}
	if (u->rolled_back) {
		if (r < 0)
			log_error("update: rolled back: %s", strerror(-r));
		return EXIT_ROLLED_BACK;
	}
	return EXIT_OK;
}

static int cmd_reboot(int argc, char **argv)
{
	_cleanup_close_ int fd = -EBADF;
	struct luo_wire_reboot rb = { .size = sizeof(rb) };
	uint64_t blackout = 0;
	int r;

	r = parse_no_args(argc, argv, "reboot");
	if (r != 0)
		return r;
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	r = call(fd, "reboot", LUO_CMD_REBOOT, &rb, sizeof(rb), &rb, sizeof(rb), &blackout);
	if (r > 0)
		return r;
	if (r < 0) {
		log_error("reboot: failed: %s; nothing changed, every session is as before",
			  strerror(-r));
		return EXIT_FAILED;
	}
	if (arg_json)
		printf("{\"result\":\"ok\",\"update_number\":%" PRIu64 ",\"blackout_usec\":%" PRIu64
		       ",\"luod_total_usec\":%" PRIu64 "}\n",
		       rb.update_number, blackout, rb.total_usec);
	else {
		char b[32], t[32];

		format_duration(b, sizeof(b), blackout);
		format_duration(t, sizeof(t), rb.total_usec);
		printf("reboot: done, live update number is now %" PRIu64 "\n", rb.update_number);
		printf("blackout:     %s (request sent to reply received, measured by luoctl)\n",
		       b);
		printf("  luod total: %s\n", t);
	}
	return EXIT_OK;
}

/* ---- dump-state ---- */

static int read_all(int fd, uint8_t **ret, size_t *ret_size)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t size = 0, allocated = 0;

	for (;;) {
		ssize_t n;

		if (size == allocated) {
			if (allocated >= LUO_STATE_MAX_SIZE)
				return -EFBIG;
			size_t m = allocated ? allocated * 2 : 65536;
			uint8_t *p = realloc(buf, m);

			if (!p)
				return -ENOMEM;
			buf = p;
			allocated = m;
		}
		n = read(fd, buf + size, allocated - size);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		if (n == 0)
			break;
		size += (size_t)n;
	}
	*ret = TAKE_PTR(buf);
	*ret_size = size;
	return 0;
}

static int parse_file_arg(int argc, char **argv, const char **ret_file)
{
	static const struct option options[] = { { "json", no_argument, NULL, 'j' }, {} };
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+", options, NULL)) >= 0) {
		if (c != 'j')
			return usage_error("dump-state: bad option");
		arg_json = true;
	}
	if (argc - optind != 1)
		return usage_error("dump-state takes exactly one FILE (or - for stdin)");
	*ret_file = argv[optind];
	return 0;
}

static int cmd_dump_state(int argc, char **argv)
{
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ uint8_t *blob = NULL;
	const char *file = NULL;
	size_t size = 0;
	int r;

	r = parse_file_arg(argc, argv, &file);
	if (r != 0)
		return r;
	if (strcmp(file, "-") == 0)
		r = read_all(STDIN_FILENO, &blob, &size);
	else {
		fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (fd < 0) {
			log_error("dump-state: cannot open %s: %m", file);
			return EXIT_FAILED;
		}
		r = read_all(fd, &blob, &size);
	}
	if (r < 0) {
		log_error("dump-state: cannot read %s: %s", file, strerror(-r));
		return EXIT_FAILED;
	}
	r = luo_state_dump(blob, size, stdout, arg_json);
	fflush(stdout);
	if (r < 0) {
		log_error("dump-state: %s is not a state blob this luoctl can read: %s", file,
			  strerror(-r));
		return EXIT_FAILED;
	}
	return EXIT_OK;
}

/* ---- run ---- */

/* luo-preload.so next to our own binary: the build tree's or the installed one. */
static int find_preload(char *buf, size_t size)
{
	char self[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n < 0)
		return negative_errno();
	self[n] = 0;
	slash = strrchr(self, '/');
	if (!slash)
		return -ENOENT;
	*slash = 0;
	/* Build tree: <build>/src/cli/luoctl and <build>/src/preload/luo-preload.so. */
	n = snprintf(buf, size, "%s/../preload/luo-preload.so", self);
	if (n > 0 && (size_t)n < size && access(buf, R_OK) == 0)
		return 0;
	/* Installed: bindir/luoctl and libdir/luo/luo-preload.so. */
	n = snprintf(buf, size, "%s/luo/luo-preload.so", LUO_LIBDIR);
	if (n > 0 && (size_t)n < size && access(buf, R_OK) == 0)
		return 0;
	return -ENOENT;
}

static int cmd_run(int argc, char **argv)
{
	static const struct option options[] = { { "socket", required_argument, NULL, 's' }, {} };
	char preload[PATH_MAX], sock[PATH_MAX];
	const char *path, *old;
	_cleanup_free_ char *ld = NULL;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+", options, NULL)) >= 0) {
		switch (c) {
		case 's':
			arg_socket = optarg;
			break;
		default:
			return usage_error("run: bad option");
		}
	}
	if (optind >= argc)
		return usage_error("run needs a command: luoctl run [--socket PATH] -- COMMAND...");
	r = find_preload(preload, sizeof(preload));
	if (r < 0) {
		log_error("run: cannot find luo-preload.so next to luoctl or in %s/luo: %s",
			  LUO_LIBDIR, strerror(-r));
		return EXIT_FAILED;
	}
	path = socket_path();
	/* The command may change directory: give it an absolute socket path. */
	if (path[0] != '/') {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd))) {
			log_error("run: cannot resolve socket path %s: %m", path);
			return EXIT_FAILED;
		}
		r = snprintf(sock, sizeof(sock), "%s/%s", cwd, path);
		if (r < 0 || (size_t)r >= sizeof(sock))
			return usage_error("run: socket path too long");
		path = sock;
	}
	old = getenv("LD_PRELOAD");
#ifdef LUOCTL_ASAN_RUNTIME
	r = asprintf(&ld, "%s %s%s%s", LUOCTL_ASAN_RUNTIME, preload, old && *old ? " " : "",
		     old ? old : "");
#else
	r = asprintf(&ld, "%s%s%s", preload, old && *old ? " " : "", old ? old : "");
#endif
	if (r < 0) {
		ld = NULL;
		log_error("run: %s", strerror(ENOMEM));
		return EXIT_FAILED;
	}
	if (setenv("LD_PRELOAD", ld, 1) < 0 || setenv("LUO_SOCKET", path, 1) < 0) {
		log_error("run: cannot set the environment: %m");
		return EXIT_FAILED;
	}
	fflush(stdout);
	execvp(argv[optind], argv + optind);
	r = errno;
	log_error("run: cannot execute %s: %s", argv[optind], strerror(r));
	return r == ENOENT ? 127 : 126;
}

/* ---- main ---- */

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "status", cmd_status }, { "list", cmd_list },	    { "show", cmd_show },
	{ "update", cmd_update }, { "reboot", cmd_reboot }, { "dump-state", cmd_dump_state },
	{ "run", cmd_run },	  { "drop", cmd_drop },
};

int main(int argc, char **argv)
{
	static const struct option options[] = { { "socket", required_argument, NULL, 's' },
						 { "json", no_argument, NULL, 'j' },
						 { "help", no_argument, NULL, 'h' },
						 { "version", no_argument, NULL, 'V' },
						 {} };
	int c;

	/* '+': options stop at the command, whose own options follow it. */
	while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0) {
		switch (c) {
		case 's':
			arg_socket = optarg;
			break;
		case 'j':
			arg_json = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("luoctl %s\n", LUO_VERSION);
			return EXIT_OK;
		default:
			fputs("Try 'luoctl help'.\n", stderr);
			return EXIT_USAGE;
		}
	}
	if (arg_socket && *arg_socket == 0)
		return usage_error("--socket needs a path");
	if (optind >= argc)
		return usage_error("no command given");
	if (strcmp(argv[optind], "help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (strcmp(argv[optind], commands[i].name) == 0) {
			int r = commands[i].fn(argc - optind, argv + optind);

			if (fflush(stdout) != 0 && r == EXIT_OK) {
				log_error("cannot write the output: %m");
				return EXIT_FAILED;
			}
			return r;
		}
	return usage_error("unknown command '%s'", argv[optind]);
}
