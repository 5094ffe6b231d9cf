/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luoctl, the command line
 *
 * One invocation, one command: luoctl connects to luod's socket (the
 * clients' rule of src/protocol/transport.h, or --socket), sends one device
 * request (STATUS, LIST, SHOW, UPDATE, REBOOT, DUMP_STATE) through the wire
 * transport with a deadline (--timeout), prints the reply as a table or as
 * JSON, and exits with a code scripts can rely on (see luoctl(8) and enum
 * exit_code).  Every error is one line on stderr.  dump-state FILE needs no
 * luod: it decodes a saved blob with the codec.  run needs no connection
 * either: it execs a command with the preload shim and LUO_SOCKET set, so the
 * exit status is the command's.
 *
 * Options go anywhere on the command line (`luoctl show NAME --json`),
 * except after run's `--`.  JSON output is collected and printed on one
 * line, or indented with --pretty.
 *
 * The connection is opened per invocation and closed at exit; luoctl holds
 * no sessions, so it can die at any point without affecting anyone.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/socket-util.h"
#include "cli/format.h"
#include "config.h"
#include "core/state.h"
#include "protocol/protocol.h"
#include "protocol/transport.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_FAILED = 1,      /* luod replied an error, or the local operation failed */
	EXIT_USAGE = 2,	      /* bad command line */
	EXIT_UNREACHABLE = 3, /* cannot connect to luod, or it hung up / did not answer in time */
	EXIT_NOT_FOUND = 4,   /* show of a session that does not exist (for this uid) */
	EXIT_ROLLED_BACK = 5, /* update refused by the new binary, previous luod serving */
};

static const char *arg_socket;
static const char *arg_profile; /* run --profile: the shim's LUO_PRELOAD_PROFILE */
static bool arg_json, arg_pretty;
static int arg_timeout_ms = LUO_WIRE_TIMEOUT_DEFAULT_MS;
static const char *arg_exec;
static bool arg_outgoing, arg_incoming;
/* kexec */
static const char *arg_kernel, *arg_initrd, *arg_append;
static bool arg_reuse_cmdline, arg_drop_unsupported;
static int64_t arg_uid = -1; /* --uid: another uid's names (root) */
/* Where the connection went (or the last place tried), for messages and status. */
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

static const char *socket_path(void)
{
	return socket_path_buf;
}

static void usage(FILE *f)
{
	fputs("Usage: luoctl [OPTIONS] COMMAND [ARGS]   (options may also follow the command)\n"
	      "\n"
	      "Commands:\n"
	      "  status                 luod's pid, version, counters and fd capacity\n"
	      "  list                   sessions visible to the caller's uid\n"
	      "  show NAME              one session and its files\n"
	      "                         (--outgoing or --incoming picks one namespace;\n"
	      "                         --uid UID looks in another uid's names: root)\n"
	      "  drop NAME              remove a session nobody holds: an incoming one not\n"
	      "                         retrieved, or a handover-on-close one waiting for\n"
	      "                         its name (--outgoing or --incoming picks one;\n"
	      "                         --uid UID, another uid's: root)\n"
	      "  update [--exec BINARY] live update of luod, into BINARY or its own binary\n"
	      "  reboot                 simulated kexec: outgoing sessions become incoming\n"
	      "  kexec --kernel FILE [--initrd FILE] [--append CMDLINE | --reuse-cmdline]\n"
	      "        [--drop-unsupported]\n"
	      "                         a real kexec through /dev/liveupdate, the sessions\n"
	      "                         carried by the kernel (root)\n"
	      "  dump-state [FILE]      the running luod's state (root), or a saved blob\n"
	      "                         (FILE, or - for stdin)\n"
	      "  run [--socket PATH] [--profile default|proposed] -- COMMAND [ARGS...]\n"
	      "                         run COMMAND with luo-preload.so and LUO_SOCKET set;\n"
	      "                         the shim plays mainline's kernel, or with --profile\n"
	      "                         proposed the proposed session filesystem and luo's\n"
	      "                         extra handlers\n"
	      "  help                   this text\n"
	      "\n"
	      "Options:\n"
	      "  --socket PATH      luod's socket (default: $LUO_SOCKET; else a per-user luod at\n"
	      "                     $XDG_RUNTIME_DIR/luo/luod.sock if one listens; else\n"
	      "                     /run/luo/luod.sock)\n"
	      "  --timeout SECONDS  how long to wait for luod (default 30; 0: no limit)\n"
	      "  --json             machine-readable output, one line\n"
	      "  --pretty           JSON output, indented\n"
	      "  --version          print the version\n"
	      "\n"
	      "Exit codes: 0 ok, 1 failed, 2 usage, 3 luod unreachable or not answering,\n"
	      "4 not found, 5 rolled back.\n",
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

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void format_timeout(char *buf, size_t size)
{
	if (arg_timeout_ms % 1000 == 0)
		snprintf(buf, size, "%d s", arg_timeout_ms / 1000);
	else
		snprintf(buf, size, "%.3f s", arg_timeout_ms / 1000.0);
}

/* ---- talking to luod ---- */

static const char *file_type_name(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return "a regular file";
	case S_IFDIR:
		return "a directory";
	case S_IFCHR:
		return "a character device";
	case S_IFBLK:
		return "a block device";
	case S_IFIFO:
		return "a FIFO";
	case S_IFLNK:
		return "a symbolic link";
	default:
		return "not a socket";
	}
}

/* One line saying why connecting to path failed with r; other: the per-user path tried first. */
static void explain_connect_failure(const char *path, int r, const char *other)
{
	char also[PATH_MAX + 64] = "";
	struct stat st;

	if (other)
		snprintf(also, sizeof(also), "; no luod at %s either", other);
	if (r == -ECONNREFUSED && stat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		log_error("cannot connect to luod at %s: it is %s, not a socket%s", path,
			  file_type_name(st.st_mode), also);
		return;
	}
	if (r == -ECONNREFUSED) {
		log_error("cannot connect to luod at %s: %s (a socket nobody listens on: is luod "
			  "running?%s)",
			  path, strerror(-r), also);
		return;
	}
	if (r == -ENOENT || r == -ENOTDIR) {
		log_error("cannot connect to luod at %s: %s (is luod running?%s)", path,
			  strerror(-r), also);
		return;
	}
	if (r == -ETIMEDOUT) {
		char t[32];

		format_timeout(t, sizeof(t));
		log_error("cannot connect to luod at %s: it accepted no connection within %s (is "
			  "it stopped?)",
			  path, t);
		return;
	}
	if (r == -ENAMETOOLONG) {
		log_error("cannot connect to luod at %s: the path is too long for a unix socket "
			  "(at most %d bytes)",
			  path, LUO_SOCKET_PATH_MAX - 1);
		return;
	}
	log_error("cannot connect to luod at %s: %s", path, strerror(-r));
}

/* Connects, or says why not (one line); returns the fd or -errno. */
static int connect_or_explain(void)
{
	char paths[2][LUO_SOCKET_PATH_MAX];
	int n, fd;

	if (arg_socket) {
		snprintf(socket_path_buf, sizeof(socket_path_buf), "%s", arg_socket);
		fd = luo_wire_connect(arg_socket);
		if (fd < 0)
			explain_connect_failure(arg_socket, fd, NULL);
		return fd;
	}
	n = luo_wire_socket_candidates(paths);
	if (n < 0) {
		snprintf(socket_path_buf, sizeof(socket_path_buf), "%s", getenv("LUO_SOCKET"));
		explain_connect_failure(socket_path_buf, n, NULL);
		return n;
	}
	fd = luo_wire_connect_default(socket_path_buf);
	if (fd < 0)
		explain_connect_failure(socket_path_buf, fd,
					n == 2 && strcmp(paths[0], socket_path_buf) != 0 ? paths[0]
											 : NULL);
	return fd;
}

/*
 * Explains a request that failed with r (luod's error, or the transport's)
 * in one line and returns the exit code.  On luoctl's own connection EMFILE
 * means luod takes no more connections from this uid: luod cannot be reached.
 */
static int request_failed(const char *what, int r)
{
	char t[32];

	switch (r) {
	case -ETIMEDOUT:
		format_timeout(t, sizeof(t));
		log_error("%s: luod did not answer within %s (is it stopped? socket %s; "
			  "--timeout changes the limit)",
			  what, t, socket_path());
		return EXIT_UNREACHABLE;
	case -ECONNRESET:
	case -EPIPE:
		log_error("%s: luod closed the connection before replying (is luod still running? "
			  "socket %s)",
			  what, socket_path());
		return EXIT_UNREACHABLE;
	case -EMFILE:
		log_error("%s: luod refused the connection: this uid is at its connection limit, "
			  "or luod is out of fds (close other clients, or raise luod's "
			  "--max-connections)",
			  what);
		return EXIT_UNREACHABLE;
	case -EBADMSG:
		log_error("%s: luod sent a malformed reply (is luoctl the same version as luod?)",
			  what);
		return EXIT_FAILED;
	case -EPERM:
		log_error("%s: %s (only root, or the user luod runs as, may do this)", what,
			  strerror(-r));
		return EXIT_FAILED;
	default:
		log_error("%s: %s", what, strerror(-r));
		return EXIT_FAILED;
	}
}

/* The bytes of a streamed reply after its first message, kept for parsing. */
struct stream_bytes {
	uint8_t *v;
	size_t n, allocated;
	size_t first_size; /* the size of the first chunk (SHOW's session entry) */
	size_t n_chunks;
};

static int stream_collect(const void *data, size_t size, void *userdata)
{
	struct stream_bytes *b = userdata;

	if (b->n_chunks++ == 0)
		b->first_size = size;
	if (b->n + size > b->allocated) {
		size_t m = MAX(b->allocated * 2, b->n + size);
		uint8_t *p = realloc(b->v, m);

		if (!p)
			return -ENOMEM;
		b->v = p;
		b->allocated = m;
	}
	memcpy(b->v + b->n, data, size);
	b->n += size;
	return 0;
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

static void format_time(char *buf, size_t size, uint64_t realtime_usec)
{
	time_t t = (time_t)(realtime_usec / 1000000);
	struct tm tm;

	if (realtime_usec == 0 || !localtime_r(&t, &tm) ||
	    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, size, "-");
}

/* The user name of uid, or its number. */
static void format_user(char *buf, size_t size, uint32_t uid)
{
	struct passwd *pw = getpwuid((uid_t)uid);

	if (pw && pw->pw_name)
		snprintf(buf, size, "%s", pw->pw_name);
	else
		snprintf(buf, size, "%" PRIu32, uid);
}

static void json_print_time(const char *key, uint64_t realtime_usec)
{
	printf(",\"%s\":", key);
	if (realtime_usec)
		printf("%" PRIu64, realtime_usec);
	else
		printf("null");
}

/* ---- status ---- */

static int cmd_status(int n_args, char **args)
{
	_cleanup_close_ int fd = -EBADF;
	struct luo_wire_status st = { .size = sizeof(st) };
	char version[sizeof(st.version) + 1];
	int r;

	if (n_args != 0)
		return usage_error("status takes no arguments");
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	r = luo_wire_call(fd, LUO_IOCTL_STATUS, &st, sizeof(st), NULL, 0, NULL);
	if (r < 0)
		return request_failed("status", r);
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
		       st.fd_capacity, st.root_reserve, st.uid_fd_share, st.uid_fds, st.worker_pid,
		       st.n_worker_restarts, st.binary_since_usec, st.journal_size);
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

/*
 * Entries of esize bytes (luod's, possibly an older or newer layout) into
 * full structs: the fields an older luod does not send stay 0 (unknown).
 */
static void *widen_entries(const uint8_t *v, size_t n, size_t esize, size_t full)
{
	uint8_t *out = calloc(n ? n : 1, full);

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++)
		memcpy(out + i * full, v + i * esize, MIN(esize, full));
	return out;
}

static void json_print_session_fields(const struct luo_wire_session_entry *s)
{
	size_t len = name_field_length(s->name, sizeof(s->name));
	char user[64];

	printf("\"name\":");
	json_print_string(stdout, s->name, len);
	printf(",\"name_hex\":");
	json_print_hex(stdout, s->name, len);
	format_user(user, sizeof(user), s->uid);
	printf(",\"kind\":\"%s\",\"state\":\"%s\",\"uid\":%" PRIu32 ",\"user\":",
	       luo_session_kind_name(s->kind), luo_session_state_name(s->state), s->uid);
	json_print_string(stdout, (const uint8_t *)user, strlen(user));
	printf(",\"flags\":%" PRIu64 ",\"handover_on_close\":%s,\"files\":%" PRIu64
	       ",\"bytes\":%" PRIu64,
	       s->flags, (s->flags & LUO_SESSION_FLAG_HANDOVER_ON_CLOSE) ? "true" : "false",
	       s->n_files, s->bytes);
	json_print_time("created_usec", s->created_usec);
	json_print_time("handover_usec", s->handover_usec);
	printf(",\"creator_pid\":");
	if (s->creator_pid) {
		size_t n = name_field_length((const uint8_t *)s->creator_comm,
					     sizeof(s->creator_comm));

		printf("%" PRIu32 ",\"creator_comm\":", s->creator_pid);
		json_print_string(stdout, (const uint8_t *)s->creator_comm, n);
		printf(",\"created_in_update\":%" PRIu64, s->update_number);
	} else
		printf("null,\"creator_comm\":null,\"created_in_update\":null");
}

static void format_creator(char *buf, size_t size, const struct luo_wire_session_entry *s)
{
	size_t n = name_field_length((const uint8_t *)s->creator_comm, sizeof(s->creator_comm));
	_cleanup_free_ char *comm = escape_human((const uint8_t *)s->creator_comm, n);

	if (!s->creator_pid)
		snprintf(buf, size, "-");
	else
		snprintf(buf, size, "%" PRIu32 "/%s", s->creator_pid, comm ? comm : "?");
}

static int print_sessions_table(const struct luo_wire_session_entry *v, size_t n)
{
	static const char *const headers[] = { "NAME",	"KIND",	   "STATE",   "OWNER", "FILES",
					       "BYTES", "CREATED", "CREATOR", "FLAGS" };
	struct table *t = table_new(ELEMENTSOF(headers), headers);
	int r = 0;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < n && r >= 0; i++) {
		_cleanup_free_ char *name =
			escape_human(v[i].name, name_field_length(v[i].name, sizeof(v[i].name)));
		char user[64], files[24], bytes[24], created[32], creator[48];
		const char *cells[ELEMENTSOF(headers)] = {
			name,
			luo_session_kind_name(v[i].kind),
			luo_session_state_name(v[i].state),
			user,
			files,
			bytes,
			created,
			creator,
			flags_name(v[i].flags),
		};

		if (!name) {
			r = -ENOMEM;
			break;
		}
		format_user(user, sizeof(user), v[i].uid);
		snprintf(files, sizeof(files), "%" PRIu64, v[i].n_files);
		snprintf(bytes, sizeof(bytes), "%" PRIu64, v[i].bytes);
		format_time(created, sizeof(created), v[i].created_usec);
		format_creator(creator, sizeof(creator), &v[i]);
		r = table_add_row(t, cells);
	}
	if (r >= 0)
		table_print(t, stdout, (1u << 4) | (1u << 5));
	table_free(t);
	return r;
}

/*
 * Asks for a listing (LIST or SHOW) with the entry sizes this luoctl knows;
 * a luod from before they grew refuses the longer request with E2BIG and is
 * asked again with the first version's.
 */
static int call_listing(int fd, uint32_t op, void *req, uint32_t size, uint32_t v1_size,
			struct stream_bytes *b)
{
	int r = luo_wire_call_stream(fd, op, req, size, stream_collect, b);

	if (r != -E2BIG)
		return r;
	free(b->v);
	*b = (struct stream_bytes){ 0 };
	memset((uint8_t *)req + v1_size, 0, size - v1_size);
	memcpy(req, &v1_size, sizeof(v1_size));
	return luo_wire_call_stream(fd, op, req, v1_size, stream_collect, b);
}

static int cmd_list(int n_args, char **args)
{
	_cleanup_close_ int fd = -EBADF;
	struct luo_wire_list req = { .size = sizeof(req),
				     .entry_size = sizeof(struct luo_wire_session_entry) };
	_cleanup_free_ struct luo_wire_session_entry *v = NULL;
	struct stream_bytes b = { 0 };
	size_t esize, n;
	int r;

	if (n_args != 0)
		return usage_error("list takes no arguments");
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	r = call_listing(fd, LUO_IOCTL_LIST, &req, sizeof(req), LUO_WIRE_LIST_V1, &b);
	if (r < 0) {
		free(b.v);
		return request_failed("list", r);
	}
	esize = req.entry_size ? req.entry_size : LUO_WIRE_SESSION_ENTRY_V1;
	n = b.n / esize;
	if (b.n % esize != 0 || n != req.count) {
		free(b.v);
		return request_failed("list", -EBADMSG);
	}
	v = widen_entries(b.v, n, esize, sizeof(*v));
	free(b.v);
	if (!v)
		return request_failed("list", -ENOMEM);
	if (arg_json) {
		printf("{\"update_number\":");
		if (req.entry_size)
			printf("%" PRIu64, req.update_number);
		else
			printf("null");
		printf(",\"sessions\":[");
		for (size_t i = 0; i < n; i++) {
			printf(i ? ",{" : "{");
			json_print_session_fields(&v[i]);
			printf("}");
		}
		printf("]}\n");
	} else if (n == 0)
		printf("No sessions.\n");
	else if (print_sessions_table(v, n) < 0)
		return request_failed("list", -ENOMEM);
	return EXIT_OK;
}

/* ---- show ---- */

static const char *mode_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case 0:
		return "-";
	case S_IFREG:
		return "file";
	case S_IFSOCK:
		return "socket";
	case S_IFIFO:
		return "pipe";
	case S_IFCHR:
		return "chardev";
	case S_IFBLK:
		return "blockdev";
	case S_IFDIR:
		return "dir";
	default:
		return "other";
	}
}

struct shown {
	struct luo_wire_session_entry s;
	struct luo_wire_file_entry *f;
	size_t n_files;
	uint64_t update_number;
};

static int print_files_table(const struct shown *x)
{
	static const char *const headers[] = { "TOKEN", "HANDLER",   "TYPE",
					       "BYTES", "RETRIEVED", "DATA" };
	struct table *t = table_new(ELEMENTSOF(headers), headers);
	int r = 0;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < x->n_files && r >= 0; i++) {
		const struct luo_wire_file_entry *e = &x->f[i];
		_cleanup_free_ char *compat = escape_human(
			(const uint8_t *)e->compatible,
			name_field_length((const uint8_t *)e->compatible, sizeof(e->compatible)));
		char token[24], retrieved[128], data[24], bytes[24];
		const char *cells[ELEMENTSOF(headers)] = {
			token, compat, mode_name(e->file_mode), bytes, retrieved, data
		};

		if (!compat) {
			r = -ENOMEM;
			break;
		}
		snprintf(token, sizeof(token), "%" PRIu64, e->token);
		snprintf(bytes, sizeof(bytes), "%" PRIu64, e->file_size);
		if (e->retrieve_error < 0)
			snprintf(retrieved, sizeof(retrieved), "failed: %s",
				 strerror(-e->retrieve_error));
		else
			snprintf(retrieved, sizeof(retrieved), "%s", e->retrieved ? "yes" : "no");
		snprintf(data, sizeof(data), "%" PRIu64, e->data_size);
		r = table_add_row(t, cells);
	}
	if (r >= 0)
		table_print(t, stdout, (1u << 0) | (1u << 3) | (1u << 5));
	table_free(t);
	return r;
}

static void json_print_show(const struct shown *x)
{
	printf("{");
	json_print_session_fields(&x->s);
	printf(",\"file_list\":[");
	for (size_t i = 0; i < x->n_files; i++) {
		const struct luo_wire_file_entry *e = &x->f[i];

		printf("%s{\"token\":%" PRIu64 ",\"handler\":", i ? "," : "", e->token);
		json_print_string(
			stdout, (const uint8_t *)e->compatible,
			name_field_length((const uint8_t *)e->compatible, sizeof(e->compatible)));
		printf(",\"type\":\"%s\",\"mode\":%" PRIu32 ",\"bytes\":%" PRIu64,
		       mode_name(e->file_mode), e->file_mode, e->file_size);
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

/* Fetches the session name of one namespace: 1 if there, 0 if not, or -(exit code). */
static int fetch_one(int fd, const char *name, uint32_t kind, struct shown *ret)
{
	struct luo_wire_show req = { .size = sizeof(req),
				     .kind = kind,
				     .session_entry_size = sizeof(struct luo_wire_session_entry),
				     .file_entry_size = sizeof(struct luo_wire_file_entry),
				     .of_uid = arg_uid >= 0 ? (uint32_t)arg_uid : 0,
				     .of_flags = arg_uid >= 0 ? LUO_WIRE_OF_UID : 0 };
	struct stream_bytes b = { 0 };
	size_t ssize, fsize, n;
	int r;

	memcpy(req.name, name, strlen(name));
	r = call_listing(fd, LUO_IOCTL_SHOW, &req, sizeof(req), LUO_WIRE_SHOW_V1, &b);
	if (r == -ENOENT) {
		free(b.v);
		return 0;
	}
	if (r < 0) {
		free(b.v);
		return -request_failed("show", r);
	}
	ssize = req.session_entry_size ? req.session_entry_size : LUO_WIRE_SESSION_ENTRY_V1;
	fsize = req.file_entry_size ? req.file_entry_size : LUO_WIRE_FILE_ENTRY_V1;
	/* The first message after the struct is the session's entry, then the files'. */
	if (b.n_chunks < 1 || b.first_size != ssize || (b.n - ssize) % fsize != 0 ||
	    (n = (b.n - ssize) / fsize) != req.count) {
		free(b.v);
		return -request_failed("show", -EBADMSG);
	}
	memset(&ret->s, 0, sizeof(ret->s));
	memcpy(&ret->s, b.v, MIN(ssize, sizeof(ret->s)));
	ret->f = widen_entries(b.v + ssize, n, fsize, sizeof(*ret->f));
	free(b.v);
	if (!ret->f)
		return -request_failed("show", -ENOMEM);
	ret->n_files = n;
	ret->update_number = req.update_number;
	return 1;
}

static int print_shown(const struct shown *x, bool first)
{
	char user[64], created[32], handover[32], creator[48];

	if (arg_json) {
		printf(first ? "" : ",");
		json_print_show(x);
		return 0;
	}

	_cleanup_free_ char *n =
		escape_human(x->s.name, name_field_length(x->s.name, sizeof(x->s.name)));
	if (!n)
		return -ENOMEM;
	format_user(user, sizeof(user), x->s.uid);
	format_time(created, sizeof(created), x->s.created_usec);
	format_time(handover, sizeof(handover), x->s.handover_usec);
	format_creator(creator, sizeof(creator), &x->s);
	if (!first)
		printf("\n");
	printf("session:  %s\n", n);
	printf("kind:     %s\n", luo_session_kind_name(x->s.kind));
	printf("state:    %s\n", luo_session_state_name(x->s.state));
	printf("owner:    %s (uid %" PRIu32 ")\n", user, x->s.uid);
	printf("flags:    %s\n", flags_name(x->s.flags));
	printf("files:    %" PRIu64 "\n", x->s.n_files);
	printf("bytes:    %" PRIu64 "\n", x->s.bytes);
	if (x->s.creator_pid)
		printf("created:  %s by %s, live update number %" PRIu64 "\n", created, creator,
		       x->s.update_number);
	else
		printf("created:  - (before luod's last restart)\n");
	if (x->s.kind == LUO_SESSION_INCOMING)
		printf("handover: %s\n", handover);
	if (x->n_files > 0) {
		printf("\n");
		return print_files_table(x);
	}
	return 0;
}

static int cmd_show(int n_args, char **args)
{
	_cleanup_close_ int fd = -EBADF;
	struct shown shown[2] = {};
	bool outgoing = !arg_incoming, incoming = !arg_outgoing;
	const char *name;
	size_t len;
	int r, ret, found = 0;

	if (arg_outgoing && arg_incoming)
		return usage_error("show: --outgoing and --incoming exclude each other");
	if (n_args != 1)
		return usage_error("show takes exactly one session name");
	name = args[0];
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
	if (found == 0) {
		_cleanup_free_ char *n = escape_human((const uint8_t *)name, len);

		/* Scripts get an answer on stdout too (luoctl(8), OUTPUT). */
		if (arg_json)
			printf("{\"sessions\":[]}\n");
		log_error("show: no session named '%s'%s (or it belongs to another uid)",
			  n ? n : name,
			  outgoing && incoming ? ""
			  : outgoing	       ? " among outgoing sessions"
					       : " among incoming sessions");
		ret = EXIT_NOT_FOUND;
		goto out;
	}
	if (arg_json)
		printf("{\"update_number\":%" PRIu64 ",\"sessions\":[", shown[0].update_number);
	for (int i = 0; i < found; i++)
		if (print_shown(&shown[i], i == 0) < 0) {
			ret = request_failed("show", -ENOMEM);
			goto out;
		}
	if (arg_json)
		printf("]}\n");
	ret = EXIT_OK;
out:
	for (size_t i = 0; i < ELEMENTSOF(shown); i++)
		free(shown[i].f);
	return ret;
}

/* ---- drop ---- */

static int cmd_drop(int n_args, char **args)
{
	_cleanup_close_ int fd = -EBADF;
	struct luo_wire_drop req = { .size = sizeof(req),
				     .kind = LUO_DROP_ANY,
				     .of_uid = arg_uid >= 0 ? (uint32_t)arg_uid : 0,
				     .of_flags = arg_uid >= 0 ? LUO_WIRE_OF_UID : 0 };
	const char *name;
	size_t len;
	int r;

	if (arg_outgoing && arg_incoming)
		return usage_error("drop: --outgoing and --incoming exclude each other");
	if (arg_outgoing)
		req.kind = LUO_DROP_OUTGOING;
	else if (arg_incoming)
		req.kind = LUO_DROP_INCOMING;
	if (n_args != 1)
		return usage_error("drop takes exactly one session name");
	name = args[0];
	len = strlen(name);
	if (len == 0 || len >= LIVEUPDATE_SESSION_NAME_LENGTH)
		return usage_error("drop: session names have 1 to %d bytes, not %zu",
				   LIVEUPDATE_SESSION_NAME_LENGTH - 1, len);
	memcpy(req.name, name, len);
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	r = luo_wire_call(fd, LUO_IOCTL_DROP, &req, sizeof(req), NULL, 0, NULL);
	if (r == -ETIMEDOUT || r == -ECONNRESET || r == -EPIPE || r == -EBADMSG || r == -EPERM)
		return request_failed("drop", r);
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
		log_error("drop: failed: %s", strerror(-r));
		return EXIT_FAILED;
	}
	if (arg_json)
		printf("{\"result\":\"ok\"}\n");
	else
		printf("drop: session '%s' dropped\n", name);
	return EXIT_OK;
}

/* ---- update and reboot ---- */

static int cmd_update(int n_args, char **args)
{
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ struct luo_wire_update *u = calloc(1, sizeof(*u));
	char path[PATH_MAX];
	uint64_t blackout = 0, start;
	int r;

	if (!u)
		return request_failed("update", -ENOMEM);
	if (n_args != 0)
		return usage_error("update takes no arguments besides --exec BINARY");
	u->size = sizeof(*u);
	if (arg_exec) {
		/* luod runs elsewhere: a relative path means the caller's directory. */
		if (arg_exec[0] == '/')
			r = snprintf(path, sizeof(path), "%s", arg_exec);
		else {
			char cwd[PATH_MAX];

			if (!getcwd(cwd, sizeof(cwd))) {
				log_error("update: cannot resolve '%s': %m", arg_exec);
				return EXIT_FAILED;
			}
			r = snprintf(path, sizeof(path), "%s/%s", cwd, arg_exec);
		}
		if (arg_exec[0] == 0 || r < 0 || (size_t)r >= sizeof(u->exec_path))
			return usage_error("update: --exec needs a path of 1 to %d bytes",
					   LUO_UPDATE_PATH_MAX - 1);
		memcpy(u->exec_path, path, (size_t)r);
	}
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	start = now_usec();
	/* A roll-back is an error reply that still carries the measurements. */
	r = luo_wire_call_keep_error(fd, LUO_IOCTL_UPDATE, u, sizeof(*u), NULL);
	blackout = now_usec() - start;
	if (r < 0 && (!u->rolled_back || r == -ETIMEDOUT || r == -ECONNRESET || r == -EPIPE ||
		      r == -EBADMSG)) {
		if (arg_json) {
			printf("{\"result\":\"failed\",\"errno\":%d,\"error\":", -r);
			json_print_string(stdout, (const uint8_t *)strerror(-r),
					  strlen(strerror(-r)));
			printf(",\"rolled_back\":false}\n");
		}
		if (r == -ETIMEDOUT || r == -ECONNRESET || r == -EPIPE || r == -EBADMSG ||
		    r == -EMFILE)
			return request_failed("update", r);
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
		if (arg_exec)
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
			printf("update: rolled back: the new binary refused the state%s%s; the "
			       "previous luod took it back and goes on serving, nothing lost\n",
			       r < 0 ? ": " : "", r < 0 ? strerror(-r) : "");
		else
			printf("update: done, luod runs %s\n",
			       arg_exec ? path : "the binary installed at its path");
		printf("blackout:     %s (request sent to reply received, measured by luoctl)\n",
		       b);
		printf("  stop:       %s (the worker stopping, to the keeper's execve)\n", s);
		printf("  exec:       %s\n", e);
		printf("  recover:    %s (the new worker, from the journal)\n", re);
		printf("  luod total: %s\n", t);
		printf("journal:      %" PRIu64 " bytes\n", u->state_size);
		printf("rolled back:  %s\n", u->rolled_back ? "yes" : "no");
	}
	return u->rolled_back ? EXIT_ROLLED_BACK : EXIT_OK;
}

static int cmd_reboot(int n_args, char **args)
{
	_cleanup_close_ int fd = -EBADF;
	struct luo_wire_reboot rb = { .size = sizeof(rb) };
	uint64_t blackout = 0, start;
	int r;

	if (n_args != 0)
		return usage_error("reboot takes no arguments");
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	start = now_usec();
	r = luo_wire_call(fd, LUO_IOCTL_REBOOT, &rb, sizeof(rb), NULL, 0, NULL);
	blackout = now_usec() - start;
	if (r == -ETIMEDOUT || r == -ECONNRESET || r == -EPIPE || r == -EBADMSG || r == -EMFILE ||
	    r == -EPERM)
		return request_failed("reboot", r);
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

/* ---- kexec ---- */

struct refused_list {
	uint64_t n;
};

static int print_refused(const void *data, size_t size, void *userdata)
{
	struct refused_list *l = userdata;
	const struct luo_wire_kexec_file *e = data;

	for (size_t off = 0; off + sizeof(*e) <= size; off += sizeof(*e), e++) {
		char name[LIVEUPDATE_SESSION_NAME_LENGTH];

		memcpy(name, e->name, sizeof(name));
		name[sizeof(name) - 1] = 0;
		fprintf(stderr, "  session \"%s\" (uid %u), token %" PRIu64 ": %.*s (%s)\n", name,
			(unsigned)e->uid, e->token, (int)sizeof(e->kind), e->kind,
			strerror(e->error < 0 ? -e->error : EIO));
		l->n++;
	}
	return 0;
}

static int read_cmdline(char *buf, size_t size)
{
	_cleanup_close_ int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	for (ssize_t n; got < size && (n = read(fd, buf + got, size - got)) != 0; got += (size_t)n)
		if (n < 0)
			return -errno;
	if (got == size)
		return -E2BIG;
	while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == ' '))
		got--;
	buf[got] = 0;
	return 0;
}

static int cmd_kexec(int n_args, char **args)
{
	_cleanup_free_ struct luo_wire_kexec *k = calloc(1, sizeof(*k));
	_cleanup_close_ int fd = -EBADF, kernel = -EBADF, initrd = -EBADF;
	struct refused_list l = {};
	int fds[2], r;

	if (!k)
		return request_failed("kexec", -ENOMEM);
	if (n_args != 0)
		return usage_error("kexec takes no arguments besides its options");
	if (!arg_kernel || !arg_kernel[0])
		return usage_error("kexec needs --kernel FILE");
	if (arg_append && arg_reuse_cmdline)
		return usage_error("kexec takes --append CMDLINE or --reuse-cmdline, not both");
	if (arg_initrd && !arg_initrd[0])
		return usage_error("--initrd needs a file");
	k->size = sizeof(*k);
	if (arg_append) {
		if (strlen(arg_append) >= sizeof(k->cmdline))
			return usage_error("kexec: the command line has %zu bytes; at most %d fit",
					   strlen(arg_append), LUO_KEXEC_CMDLINE_MAX - 1);
		memcpy(k->cmdline, arg_append, strlen(arg_append));
	} else if (arg_reuse_cmdline) {
		r = read_cmdline(k->cmdline, sizeof(k->cmdline));
		if (r < 0) {
			log_error("kexec: cannot reuse the command line of /proc/cmdline: %s",
				  r == -E2BIG ? "longer than the kernel takes" : strerror(-r));
			return EXIT_FAILED;
		}
	}
	if (arg_drop_unsupported)
		k->flags |= LUO_KEXEC_DROP_UNSUPPORTED;
	kernel = open(arg_kernel, O_RDONLY | O_CLOEXEC);
	if (kernel < 0) {
		log_error("kexec: cannot open the kernel %s: %m", arg_kernel);
		return EXIT_FAILED;
	}
	fds[0] = kernel;
	if (arg_initrd) {
		initrd = open(arg_initrd, O_RDONLY | O_CLOEXEC);
		if (initrd < 0) {
			log_error("kexec: cannot open the initrd %s: %m", arg_initrd);
			return EXIT_FAILED;
		}
		fds[1] = initrd;
		k->flags |= LUO_KEXEC_INITRD;
	}
	fd = connect_or_explain();
	if (fd < 0)
		return EXIT_UNREACHABLE;
	fflush(stdout);
	/* On success luod does not answer: the machine reboots into the new kernel. */
	r = luo_wire_call_stream_keep_error(fd, LUO_IOCTL_KEXEC, k, sizeof(*k), fds,
					    initrd >= 0 ? 2 : 1, print_refused, &l);
	switch (r) {
	case -ENODEV:
		log_error("kexec: this kernel has no /dev/liveupdate (no Live Update "
			  "Orchestrator: liveupdate=on on its command line?); nothing changed");
		return EXIT_FAILED;
	case -EBUSY:
		log_error("kexec: busy: another process holds /dev/liveupdate, or an update of "
			  "luod is under way; nothing changed");
		return EXIT_FAILED;
	case -EOPNOTSUPP:
		if (k->n_refused > 0) {
			if (k->n_refused > l.n)
				fprintf(stderr, "  ... and %" PRIu64 " more\n", k->n_refused - l.n);
			log_error("kexec: the kernel cannot carry the %" PRIu64
				  " file(s) above (of %" PRIu64 " in %" PRIu64
				  " sessions); --drop-unsupported leaves them behind; nothing "
				  "changed",
				  k->n_refused, k->n_files, k->n_sessions);
			return EXIT_FAILED;
		}
		break;
	case -ETIMEDOUT:
	case -ECONNRESET:
	case -EPIPE:
	case -EBADMSG:
	case -EMFILE:
		return request_failed("kexec", r);
	case -EPERM:
		log_error("kexec: %s (only root may do this)", strerror(-r));
		return EXIT_FAILED;
	default:
		break;
	}
	if (r == 0)
		r = -EIO;
	log_error("kexec: failed: %s; nothing changed, every session is as before", strerror(-r));
	return EXIT_FAILED;
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

/* The running luod's state, in the memfd its reply carries. */
static int fetch_live_state(uint8_t **ret, size_t *ret_size)
{
	_cleanup_close_ int fd = -EBADF, memfd = -EBADF;
	struct luo_wire_dump_state q = { .size = sizeof(q) };
	int r;

	fd = connect_or_explain();
	if (fd < 0)
		return -EXIT_UNREACHABLE;
	r = luo_wire_call(fd, LUO_IOCTL_DUMP_STATE, &q, sizeof(q), NULL, 0, &memfd);
	if (r == -EINVAL)
		/* The command is older than this luod's: say so rather than "invalid argument". */
		return log_error("dump-state: this luod cannot dump its running state (it is "
				 "older than luoctl); dump a saved blob with dump-state FILE"),
		       -EXIT_FAILED;
	if (r < 0)
		return -request_failed("dump-state", r);
	if (memfd < 0)
		return -request_failed("dump-state", -EBADMSG);
	/* luod wrote it through the same open file: its offset is at the end. */
	if (lseek(memfd, 0, SEEK_SET) < 0)
		r = negative_errno();
	else
		r = read_all(memfd, ret, ret_size);
	if (r < 0) {
		log_error("dump-state: cannot read the state luod sent: %s", strerror(-r));
		return -EXIT_FAILED;
	}
	return 0;
}

static int cmd_dump_state(int n_args, char **args)
{
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ uint8_t *blob = NULL;
	const char *file = n_args > 0 ? args[0] : NULL;
	size_t size = 0;
	int r;

	if (n_args > 1)
		return usage_error("dump-state takes at most one FILE (or - for stdin)");
	if (!file) {
		r = fetch_live_state(&blob, &size);
		if (r < 0)
			return -r;
		file = "luod's running state";
	} else {
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
	}
	r = luo_state_dump(blob, size, stdout, arg_json);
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

static int cmd_run(int n_args, char **args)
{
	char preload[PATH_MAX], sock[PATH_MAX];
	const char *path = arg_socket, *old;
	_cleanup_free_ char *ld = NULL;
	int r;

	if (n_args < 1)
		return usage_error("run needs a command: luoctl run [--socket PATH] -- COMMAND...");
	if (arg_profile && strcmp(arg_profile, "default") != 0 &&
	    strcmp(arg_profile, "proposed") != 0)
		return usage_error("run: unknown --profile '%s' (known: default, proposed)",
				   arg_profile);
	r = find_preload(preload, sizeof(preload));
	if (r < 0) {
		log_error("run: cannot find luo-preload.so next to luoctl or in %s/luo: %s",
			  LUO_LIBDIR, strerror(-r));
		return EXIT_FAILED;
	}
	/* The command may change directory: give it an absolute socket path. */
	if (path && path[0] != '/') {
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
	/* Without --socket the shim finds luod by the clients' rule itself. */
	if (setenv("LD_PRELOAD", ld, 1) < 0 || (path && setenv("LUO_SOCKET", path, 1) < 0) ||
	    (arg_profile && setenv("LUO_PRELOAD_PROFILE", arg_profile, 1) < 0)) {
		log_error("run: cannot set the environment: %m");
		return EXIT_FAILED;
	}
	fflush(stdout);
	execvp(args[0], args);
	r = errno;
	log_error("run: cannot execute %s: %s", args[0], strerror(r));
	return r == ENOENT ? 127 : 126;
}

/* ---- main ---- */

static const struct {
	const char *name;
	int (*fn)(int n_args, char **args);
	bool json; /* has JSON output */
} commands[] = {
	{ "status", cmd_status, true }, { "list", cmd_list, true },
	{ "show", cmd_show, true },	{ "update", cmd_update, true },
	{ "reboot", cmd_reboot, true }, { "dump-state", cmd_dump_state, true },
	{ "run", cmd_run, false },	{ "drop", cmd_drop, true },
	{ "kexec", cmd_kexec, false },
};

enum {
	OPT_SOCKET = 0x100,
	OPT_JSON,
	OPT_PRETTY,
	OPT_TIMEOUT,
	OPT_VERSION,
	OPT_EXEC,
	OPT_OUTGOING,
	OPT_INCOMING,
	OPT_UID,
	OPT_PROFILE,
	OPT_KERNEL,
	OPT_INITRD,
	OPT_APPEND,
	OPT_REUSE_CMDLINE,
	OPT_DROP_UNSUPPORTED,
};

static const struct option options[] = {
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "pretty", no_argument, NULL, OPT_PRETTY },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "exec", required_argument, NULL, OPT_EXEC },
	{ "outgoing", no_argument, NULL, OPT_OUTGOING },
	{ "incoming", no_argument, NULL, OPT_INCOMING },
	{ "uid", required_argument, NULL, OPT_UID },
	{ "profile", required_argument, NULL, OPT_PROFILE },
	{ "kernel", required_argument, NULL, OPT_KERNEL },
	{ "initrd", required_argument, NULL, OPT_INITRD },
	{ "append", required_argument, NULL, OPT_APPEND },
	{ "reuse-cmdline", no_argument, NULL, OPT_REUSE_CMDLINE },
	{ "drop-unsupported", no_argument, NULL, OPT_DROP_UNSUPPORTED },
	{},
};

static int parse_timeout(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != 0 || !isfinite(v) || v < 0 || v > INT_MAX / 1000)
		return -EINVAL;
	/* Rounded up: a limit shorter than asked for would fail early. */
	v *= 1000;
	return (int)v + ((double)(int)v < v);
}

/*
 * The index of the command word in argv, skipping options and their
 * arguments, or argc if there is none.  run's own arguments after it are the
 * command's, not luoctl's, so only what comes before run is luoctl's.
 */
static int find_command(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0)
			return i + 1 < argc ? i + 1 : argc;
		if (a[0] != '-' || a[1] == 0)
			return i;
		/* An option that takes its argument in the next word. */
		for (const struct option *o = options; o->name; o++)
			if (o->has_arg == required_argument && a[1] == '-' &&
			    strcmp(a + 2, o->name) == 0) {
				i++;
				break;
			}
	}
	return argc;
}

/* Runs the command with its JSON collected, then prints it on one line or indented. */
static int run_json(int (*fn)(int, char **), int n_args, char **args)
{
	_cleanup_free_ char *buf = NULL;
	FILE *real = stdout, *mem;
	size_t size = 0;
	int r;

	mem = open_memstream(&buf, &size);
	if (!mem)
		return request_failed("output", -ENOMEM);
	/* glibc's stdout is an ordinary variable: the commands print to it as always. */
	stdout = mem;
	r = fn(n_args, args);
	stdout = real;
	if (fclose(mem) != 0)
		return request_failed("output", -ENOMEM);
	if (size > 0)
		json_reformat(stdout, buf, size, arg_pretty);
	return r;
}

int main(int argc, char **argv)
{
	const char *cmd_name;
	char **args;
	int c, cmd_index, n_args, k;
	bool is_run;

	cmd_index = find_command(argc, argv);
	is_run = cmd_index < argc && strcmp(argv[cmd_index], "run") == 0;
	/*
	 * Options anywhere: getopt permutes the words so that every option is seen
	 * and the command and its arguments are left, in order, at the end.  For
	 * run, only the words before "run" are luoctl's (and run's own --socket and --profile
	 * after it, up to "--").
	 */
	opterr = 0;
	for (;;) {
		int idx = optind;

		c = getopt_long(argc, argv, is_run ? "+h" : "h", options, NULL);
		if (c < 0) {
			/* run [--socket PATH] [--] COMMAND: go on past the word "run". */
			if (is_run && optind == cmd_index && optind < argc) {
				optind++;
				continue;
			}
			break;
		}
		switch (c) {
		case OPT_SOCKET:
			arg_socket = optarg;
			break;
		case OPT_PROFILE:
			if (!is_run)
				return usage_error("--profile is an option of run only");
			arg_profile = optarg;
			break;
		case OPT_JSON:
			arg_json = true;
			break;
		case OPT_PRETTY:
			arg_json = arg_pretty = true;
			break;
		case OPT_TIMEOUT:
			k = parse_timeout(optarg);
			if (k < 0)
				return usage_error("--timeout needs a number of seconds >= 0 "
						   "(0: no limit), not '%s'",
						   optarg);
			arg_timeout_ms = k;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case OPT_VERSION:
			printf("luoctl %s\n", LUO_VERSION);
			return EXIT_OK;
		case OPT_EXEC:
			arg_exec = optarg;
			break;
		case OPT_OUTGOING:
			arg_outgoing = true;
			break;
		case OPT_KERNEL:
			arg_kernel = optarg;
			break;
		case OPT_INITRD:
			arg_initrd = optarg;
			break;
		case OPT_APPEND:
			arg_append = optarg;
			break;
		case OPT_REUSE_CMDLINE:
			arg_reuse_cmdline = true;
			break;
		case OPT_DROP_UNSUPPORTED:
			arg_drop_unsupported = true;
			break;
		case OPT_INCOMING:
			arg_incoming = true;
			break;
		case OPT_UID: {
			char *end;
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || *optarg == '-' || v >= UINT32_MAX)
				return usage_error("--uid needs a numeric uid, not '%s'", optarg);
			arg_uid = (int64_t)v;
			break;
		}
		case ':':
			return usage_error("option %s needs an argument", argv[idx]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (arg_socket && *arg_socket == 0)
		return usage_error("--socket needs a path");
	if (optind >= argc)
		return usage_error("no command given");
	cmd_name = is_run ? "run" : argv[optind];
	args = argv + optind + (is_run ? 0 : 1);
	n_args = argc - optind - (is_run ? 0 : 1);
	if (strcmp(cmd_name, "help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
		int r;

		if (strcmp(cmd_name, commands[i].name) != 0)
			continue;
		if (arg_exec && strcmp(cmd_name, "update") != 0)
			return usage_error("--exec is an option of update only");
		if ((arg_kernel || arg_initrd || arg_append || arg_reuse_cmdline ||
		     arg_drop_unsupported) &&
		    strcmp(cmd_name, "kexec") != 0)
			return usage_error("--kernel, --initrd, --append, --reuse-cmdline and "
					   "--drop-unsupported are options of kexec only");
		if ((arg_outgoing || arg_incoming || arg_uid >= 0) &&
		    strcmp(cmd_name, "show") != 0 && strcmp(cmd_name, "drop") != 0)
			return usage_error(
				"--outgoing, --incoming and --uid are options of show and drop only");
		if (arg_json && !commands[i].json)
			return usage_error("%s has no JSON output", cmd_name);
		(void)luo_wire_set_timeout(arg_timeout_ms);
		r = arg_json ? run_json(commands[i].fn, n_args, args)
			     : commands[i].fn(n_args, args);
		if (fflush(stdout) != 0 && r == EXIT_OK) {
			log_error("cannot write the output: %m");
			return EXIT_FAILED;
		}
		return r;
	}
	return usage_error("unknown command '%s'", cmd_name);
}
