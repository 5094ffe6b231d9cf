/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's entry point
 *
 * Three ways in:
 *   - a fresh start: options, socket path resolution, the check that no other
 *     luod serves the path, daemonizing (unless --foreground or a service
 *     manager passed the socket: the parent exits 0 only once a worker
 *     serves, printing the path or the daemon's error), the log target, the
 *     listening socket (the one passed by the service manager, else bound)
 *     and an empty
 *     journal, then the keeper (keeper.c), which starts the worker
 *     (worker.c); readiness (log line, the path on stdout, pid file, READY=1
 *     to $NOTIFY_SOCKET) once the first worker serves;
 *   - `--resume FD --listen-fd FD` (internal): the keeper of a previous luod
 *     executed this image for a live update, with the journal in FD and the
 *     whole fd table intact: the keeper goes on, and its new worker recovers;
 *   - `--check-journal FD` (internal): replay a journal without adopting its
 *     fds and say whether this binary reads it (exit 0 and "luod-state-ok"),
 *     so that an update to a binary that would refuse is never started.
 * SIGTERM and SIGINT end luod: the worker drops and logs every session, the
 * socket (unless the service manager made it) and the pid file are removed,
 * exit code 0.
 */
#include <fcntl.h>
#include <getopt.h>
#include <linux/close_range.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "config.h"
#include "log.h"
#include "luod.h"
#include "protocol/protocol.h"

struct options {
	bool foreground;
	const char *socket;
	const char *pid_file;
	int check_journal_fd;
	int resume_fd;
	int listen_fd;
	int previous_exe_fd;
	int rolled_back;
	const char *log_target; /* as given, NULL for the default */
	bool daemonized;
	bool socket_activated; /* the socket came from the service manager: not ours to unlink */
};

enum {
	ARG_SOCKET = 0x100,
	ARG_PID_FILE,
	ARG_MAX_SESSIONS,
	ARG_MAX_FILES,
	ARG_MAX_CONNECTIONS,
	ARG_ROOT_RESERVE,
	ARG_USER_SHARE,
	ARG_QUEUE_BUDGET,
	ARG_VERSION,
	ARG_CHECK_JOURNAL,
	ARG_RESUME,
	ARG_LISTEN_FD,
	ARG_PREVIOUS_EXE,
	ARG_ROLLED_BACK,
	ARG_LOG_TARGET,
	ARG_SOCKET_ACTIVATED,
};

static void help(void)
{
	printf("Usage: luod [OPTIONS]\n"
	       "Holds Live Update Orchestrator sessions for local programs.\n\n"
	       "  -f --foreground          do not daemonize\n"
	       "     --socket PATH         listen on PATH (default: $LUO_SOCKET,\n"
	       "                           $XDG_RUNTIME_DIR/luo/luod.sock, /run/luo/luod.sock)\n"
	       "     --pid-file PATH       write the pid to PATH once listening\n"
	       "     --max-sessions N      sessions per uid (default %" PRIu64 " for root, %" PRIu64
	       " for others)\n"
	       "     --max-files N         preserved files per uid (default %" PRIu64
	       " for root, %" PRIu64 " for others)\n"
	       "     --max-connections N   connections per uid (default %" PRIu64 ")\n"
	       "     --root-reserve N      fds of luod's capacity only root may use\n"
	       "                           (default %d%% of the capacity)\n"
	       "     --queue-budget BYTES  replies luod queues for slow readers before it\n"
	       "                           refuses listings (default 256 MiB; each non-root\n"
	       "                           uid a quarter, all of them three quarters)\n"
	       "     --user-share PERCENT  the most one non-root uid may hold, in percent of\n"
	       "                           the capacity less root's reserve (default %d)\n"
	       "     --log-target TARGET   auto, stderr, syslog, journal or journal:PATH\n"
	       "                           (default auto: the journal under systemd, syslog\n"
	       "                           when daemonized, else stderr)\n"
	       "  -v --verbose             log debug messages\n"
	       "  -h --help                show this help\n"
	       "     --version             show the version\n",
	       LUOD_ROOT_MAX_SESSIONS, LUOD_USER_MAX_SESSIONS, LUOD_ROOT_MAX_FILES,
	       LUOD_USER_MAX_FILES, LUOD_MAX_CONNECTIONS, LUOD_ROOT_RESERVE_PERCENT,
	       LUOD_USER_SHARE_PERCENT);
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_fd(const char *s, int *ret)
{
	uint64_t v;

	if (parse_u64(s, &v) < 0 || v > INT_MAX)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

/* Returns 0 to go on, or an exit code + 1. */
static int parse_args(struct luod *d, struct options *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "socket", required_argument, NULL, ARG_SOCKET },
		{ "pid-file", required_argument, NULL, ARG_PID_FILE },
		{ "max-sessions", required_argument, NULL, ARG_MAX_SESSIONS },
		{ "max-files", required_argument, NULL, ARG_MAX_FILES },
		{ "max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS },
		{ "root-reserve", required_argument, NULL, ARG_ROOT_RESERVE },
		{ "user-share", required_argument, NULL, ARG_USER_SHARE },
		{ "queue-budget", required_argument, NULL, ARG_QUEUE_BUDGET },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, ARG_VERSION },
		{ "check-journal", required_argument, NULL, ARG_CHECK_JOURNAL },
		{ "resume", required_argument, NULL, ARG_RESUME },
		{ "listen-fd", required_argument, NULL, ARG_LISTEN_FD },
		{ "previous-exe", required_argument, NULL, ARG_PREVIOUS_EXE },
		{ "rolled-back", required_argument, NULL, ARG_ROLLED_BACK },
		{ "log-target", required_argument, NULL, ARG_LOG_TARGET },
		{ "socket-activated", no_argument, NULL, ARG_SOCKET_ACTIVATED },
		{},
	};
	int c;

	d->self_path = argv[0];

	while ((c = getopt_long(argc, argv, "fvh", longopts, NULL)) >= 0) {
		uint64_t v = 0;

		switch (c) {
		case 'f':
			o->foreground = true;
			break;
		case ARG_SOCKET:
			o->socket = optarg;
			break;
		case ARG_PID_FILE:
			o->pid_file = optarg;
			break;
		case ARG_MAX_SESSIONS:
		case ARG_MAX_FILES:
		case ARG_MAX_CONNECTIONS:
			if (parse_u64(optarg, &v) < 0 || v == 0) {
				fprintf(stderr, "luod: %s needs a positive number\n",
					argv[optind - 1]);
				return LUOD_EXIT_USAGE + 1;
			}
			if (c == ARG_MAX_SESSIONS)
				d->limits.max_sessions = v;
			else if (c == ARG_MAX_FILES)
				d->limits.max_files = v;
			else
				d->limits.max_connections = v;
			break;
		case ARG_ROOT_RESERVE:
			if (parse_u64(optarg, &v) < 0) {
				fprintf(stderr, "luod: --root-reserve needs a number of fds\n");
				return LUOD_EXIT_USAGE + 1;
			}
			/* 0 is a reserve of none: stored as what can never be the default. */
			d->limits.root_reserve = v ? v : UINT64_MAX;
			break;
		case ARG_QUEUE_BUDGET:
			if (parse_u64(optarg, &v) < 0 || v < 4096) {
				fprintf(stderr, "luod: --queue-budget needs a number of bytes, at "
						"least 4096\n");
				return LUOD_EXIT_USAGE + 1;
			}
			d->limits.queue_budget = v;
			break;
		case ARG_USER_SHARE:
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 100) {
				fprintf(stderr,
					"luod: --user-share needs a percentage from 1 to 100\n");
				return LUOD_EXIT_USAGE + 1;
			}
			d->limits.user_share = v;
			break;
		case 'v':
			log_verbose = true;
			break;
		case 'h':
			help();
			return LUOD_EXIT_OK + 1;
		case ARG_VERSION:
			printf("luod %s\n", LUO_VERSION);
			return LUOD_EXIT_OK + 1;
		case ARG_CHECK_JOURNAL:
		case ARG_RESUME:
		case ARG_LISTEN_FD:
		case ARG_PREVIOUS_EXE: {
			int fd;

			if (parse_fd(optarg, &fd) < 0) {
				fprintf(stderr, "luod: bad fd '%s'\n", optarg);
				return LUOD_EXIT_USAGE + 1;
			}
			if (c == ARG_CHECK_JOURNAL)
				o->check_journal_fd = fd;
			else if (c == ARG_RESUME)
				o->resume_fd = fd;
			else if (c == ARG_LISTEN_FD)
				o->listen_fd = fd;
			else
				o->previous_exe_fd = fd;
			break;
		}
		case ARG_ROLLED_BACK:
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 4095) {
				fprintf(stderr, "luod: bad errno '%s'\n", optarg);
				return LUOD_EXIT_USAGE + 1;
			}
			o->rolled_back = (int)v;
			break;
		case ARG_LOG_TARGET:
			if (log_parse_target(optarg) < 0) {
				fprintf(stderr,
					"luod: bad log target '%s' (auto, stderr, syslog, journal, "
					"journal:/PATH)\n",
					optarg);
				return LUOD_EXIT_USAGE + 1;
			}
			o->log_target = optarg;
			break;
		case ARG_SOCKET_ACTIVATED:
			o->socket_activated = true;
			break;
		default:
			fprintf(stderr, "Try 'luod --help'.\n");
			return LUOD_EXIT_USAGE + 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "luod: unexpected argument '%s'\n", argv[optind]);
		return LUOD_EXIT_USAGE + 1;
	}
	return 0;
}

static int add_arg(struct luod *d, const char *fmt, ...) _printf_(2, 3);
static int add_arg(struct luod *d, const char *fmt, ...)
{
	va_list ap;
	char *a;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&a, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	d->args[d->n_args++] = a;
	return 0;
}

/*
 * The arguments the next image gets after the internal ones: the options in
 * one canonical form, with the socket and pid file as the absolute paths this
 * luod resolved, so that neither the environment nor the working directory
 * of a later re-exec can change them.
 */
static int build_restart_args(struct luod *d, const struct options *o)
{
	int r = 0;

	d->args = calloc(16, sizeof(char *));
	if (!d->args)
		return -ENOMEM;
	if (o->foreground)
		r = r ?: add_arg(d, "--foreground");
	if (log_verbose)
		r = r ?: add_arg(d, "--verbose");
	/* Restoring, the path is the one the previous image passed on. */
	if (d->socket_path[0] || o->socket)
		r = r ?: add_arg(d, "--socket=%s", d->socket_path[0] ? d->socket_path : o->socket);
	if (o->pid_file)
		r = r ?: add_arg(d, "--pid-file=%s", o->pid_file);
	if (d->limits.max_sessions)
		r = r ?: add_arg(d, "--max-sessions=%" PRIu64, d->limits.max_sessions);
	if (d->limits.max_files)
		r = r ?: add_arg(d, "--max-files=%" PRIu64, d->limits.max_files);
	if (d->limits.max_connections)
		r = r ?: add_arg(d, "--max-connections=%" PRIu64, d->limits.max_connections);
	if (d->limits.root_reserve)
		r = r
			    ?: add_arg(d, "--root-reserve=%" PRIu64,
				       d->limits.root_reserve == UINT64_MAX
					       ? 0
					       : d->limits.root_reserve);
	if (d->limits.user_share)
		r = r ?: add_arg(d, "--user-share=%" PRIu64, d->limits.user_share);
	if (d->limits.queue_budget)
		r = r ?: add_arg(d, "--queue-budget=%" PRIu64, d->limits.queue_budget);
	/* Only what the next image cannot find out by itself: it neither daemonizes
	 * nor gets the service manager's variables. */
	if (o->log_target || o->daemonized)
		r = r ?: add_arg(d, "--log-target=%s", log_target_spec());
	if (o->socket_activated)
		r = r ?: add_arg(d, "--socket-activated");
	return r;
}

static void free_args(struct luod *d)
{
	for (int i = 0; i < d->n_args; i++)
		free(d->args[i]);
	free(d->args);
	d->args = NULL;
	d->n_args = 0;
}

/* Before option parsing: is this image restoring a previous one's fds? */
static bool inherits_state(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--resume") == 0 || strncmp(argv[i], "--resume=", 9) == 0 ||
		    strcmp(argv[i], "--check-journal") == 0 ||
		    strncmp(argv[i], "--check-journal=", 16) == 0)
			return true;
	return false;
}

/* A daemon changes to / and a live update may come much later: paths must not
 * depend on the directory luod was started in. */
static int make_absolute(const char *path, char *buf, size_t size)
{
	char cwd[PATH_MAX];
	int n;

	if (path[0] == '/')
		n = snprintf(buf, size, "%s", path);
	else if (!getcwd(cwd, sizeof(cwd)))
		return negative_errno();
	else
		n = snprintf(buf, size, "%s/%s", cwd, path);
	if (n <= 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

static int resolve_socket_path(const struct options *o, char *buf, size_t size)
{
	char tmp[PATH_MAX];
	int n;

	if (o->socket) {
		n = snprintf(tmp, sizeof(tmp), "%s", o->socket);
		if (n <= 0 || (size_t)n >= sizeof(tmp))
			return -ENAMETOOLONG;
	} else if (luo_wire_socket_path(tmp, sizeof(tmp)) < 0)
		return -ENAMETOOLONG;
	return make_absolute(tmp, buf, size);
}

static void notify_ready(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	int fd;

	if (!path || !*path)
		return;
	len = strlen(path);
	if (len >= sizeof(sa.sun_path) || (path[0] != '/' && path[0] != '@'))
		return;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0; /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, "READY=1", 7, MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   offsetof(struct sockaddr_un, sun_path) + len) < 0)
		log_warning("could not notify %s: %m", path);
	safe_close(fd);
}

static int write_pid_file(const char *path)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return negative_errno();
	if (write(fd, buf, n) != n)
		return -EIO;
	return 0;
}

/*
 * Forks; the parent waits for the child's readiness byte and exits with it,
 * after showing the text that follows it (the socket path, or why the child
 * could not start): the daemon itself never writes to the terminal it was
 * started from, its stdio is /dev/null from the start (but for stderr when
 * --log-target=stderr asks for it).
 */
static int daemonize(bool keep_stderr, int *ret_ready_fd)
{
	int pipefd[2], null;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return negative_errno();
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		int r = negative_errno();

		safe_close(pipefd[0]);
		safe_close(pipefd[1]);
		return r;
	}
	if (pid > 0) {
		unsigned char code = LUOD_EXIT_FAILURE;
		char text[PATH_MAX + 512];
		size_t got = 0;
		ssize_t n;

		safe_close(pipefd[1]);
		if (read(pipefd[0], &code, 1) != 1)
			code = LUOD_EXIT_FAILURE;
		while (got < sizeof(text) - 1 &&
		       (n = read(pipefd[0], text + got, sizeof(text) - 1 - got)) > 0)
			got += n;
		text[got] = 0;
		if (code == LUOD_EXIT_OK)
			printf("%s\n", text);
		else
			fprintf(stderr, "luod: %s\n",
				got ? text : "the daemon ended before it was ready");
		fflush(NULL);
		_exit(code);
	}
	safe_close(pipefd[0]);
	if (setsid() < 0)
		return negative_errno();
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		return negative_errno();
	for (int fd = STDIN_FILENO; fd <= (keep_stderr ? STDOUT_FILENO : STDERR_FILENO); fd++)
		if (dup2(null, fd) < 0)
			return negative_errno();
	safe_close(null);
	*ret_ready_fd = pipefd[1];
	return 0;
}

/* The daemon's code for its parent, then the path it serves or the last error. */
static void report_ready(int *ready_fd, unsigned char code, const char *socket_path)
{
	char buf[PATH_MAX + 512];
	int n;

	if (*ready_fd < 0)
		return;
	n = snprintf(buf, sizeof(buf), "%c%s", code,
		     code == LUOD_EXIT_OK ? socket_path : log_last_error());
	if (n > 0)
		(void)!write(*ready_fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
	*ready_fd = safe_close(*ready_fd);
}

/* A service manager that hands luod its socket supervises it: luod stays its child. */
static bool socket_passed_to_us(void)
{
	const char *e = getenv("LISTEN_PID");
	char *end;
	long pid;

	if (!e || !getenv("LISTEN_FDS"))
		return false;
	errno = 0;
	pid = strtol(e, &end, 10);
	return !errno && !*end && pid == getpid();
}

static int ready_fd = -EBADF;
static const char *pid_file_path;
static bool daemonized, socket_activated;

/* The first worker serves: tell whoever waits. */
static void on_ready_first(struct luod *d)
{
	int r;

	log_info("listening on %s%s (fd limit %ld: room for %" PRIu64
		 " connections, sessions and preserved files; %" PRIu64
		 " of them for root alone, at most %" PRIu64 " for any other uid)",
		 d->socket_path,
		 socket_activated ? ", the socket passed by the service manager (LISTEN_FDS)" : "",
		 d->fd_limit, d->fd_capacity, capacity_root_reserve(d), capacity_uid_share(d, 1));
	/* A daemon's parent prints it (report_ready()). */
	if (!daemonized) {
		printf("%s\n", d->socket_path);
		fflush(stdout);
	}
	if (pid_file_path && (r = write_pid_file(pid_file_path)) < 0)
		log_warning("cannot write %s: %s", pid_file_path, strerror(-r));
	notify_ready();
	if (daemonized && chdir("/") < 0)
		log_warning("chdir /: %m");
	report_ready(&ready_fd, LUOD_EXIT_OK, d->socket_path);
}

static void on_ready_resumed(struct luod *d)
{
	notify_ready();
}

int main(int argc, char **argv)
{
	struct options o = {
		.check_journal_fd = -1, .resume_fd = -1, .listen_fd = -1, .previous_exe_fd = -1
	};
	struct luod d;
	char pid_file[PATH_MAX], self[PATH_MAX];
	int r, code;
	uint64_t t_main = now_usec(CLOCK_MONOTONIC);
	long limit;
	ssize_t n;

	/* Whatever a fresh luod inherited beyond stdio is not its to pass on: not to
	 * the checker it runs, not to its next image. */
	if (!inherits_state(argc, argv))
		(void)syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);

	luod_block_signals(NULL);
	r = luod_init(&d);
	if (r < 0) {
		log_error("cannot set up: %s", strerror(-r));
		code = LUOD_EXIT_FAILURE;
		goto out;
	}
	d.t_main_usec = t_main;
	if (argc > 0) {
		d.argv_area = argv[0];
		d.argv_area_size = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
	}
#ifdef LUOD_FAULT_INJECTION
	d.fault = getenv("LUOD_FAULT");
#endif
	r = parse_args(&d, &o, argc, argv);
	if (r > 0) {
		code = r - 1;
		goto out;
	}

	if (o.check_journal_fd >= 0) {
		r = liveupdate_check_journal(o.check_journal_fd);
		if (r < 0) {
			log_error("journal refused: %s", strerror(-r));
			code = -r < 126 ? -r : LUOD_EXIT_FAILURE;
			goto out;
		}
		printf("luod-state-ok %s\n", LUO_VERSION);
		code = LUOD_EXIT_OK;
		goto out;
	}

	/* Every preserved file costs luod an fd. */
	limit = fd_raise_limit();
	if (limit < 0) {
		struct rlimit rl;

		log_warning("cannot raise RLIMIT_NOFILE: %s", strerror((int)-limit));
		limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : 0;
	}
	/* A luod that could never hold a session must not look as if it served:
	 * refuse to start (a restoring image has the limit its state was made
	 * under, and refusing would lose the state). */
	if (o.resume_fd < 0 && limit < LUOD_MIN_FDS) {
		log_error("RLIMIT_NOFILE is %ld: luod needs %d fds for itself and one per "
			  "connection, session and preserved file, so at least %d; raise the "
			  "hard limit (ulimit -Hn, LimitNOFILE=)",
			  limit, LUOD_OWN_FDS, LUOD_MIN_FDS);
		code = LUOD_EXIT_FAILURE;
		goto out;
	}
	d.fd_capacity = limit > LUOD_OWN_FDS ? (uint64_t)(limit - LUOD_OWN_FDS) : 1;
	d.fd_limit = limit;

	if (o.pid_file) {
		r = make_absolute(o.pid_file, pid_file, sizeof(pid_file));
		if (r < 0) {
			log_error("bad pid file path: %s", strerror(-r));
			code = LUOD_EXIT_USAGE;
			goto out;
		}
		o.pid_file = pid_file;
		pid_file_path = pid_file;
	}
	r = resolve_socket_path(&o, d.socket_path, sizeof(d.socket_path));
	if (r < 0) {
		log_error("bad socket path: %s", strerror(-r));
		code = LUOD_EXIT_USAGE;
		goto out;
	}

	if (o.resume_fd >= 0) {
		/* An update: the keeper of the previous image executed this one. */
		if (o.listen_fd < 0) {
			log_error("--resume needs --listen-fd");
			code = LUOD_EXIT_USAGE;
			goto out;
		}
		d.journal_fd = o.resume_fd;
		d.rolled_back = o.rolled_back != 0;
		d.listen_ep.fd = o.listen_fd;
		log_open(false);
		r = build_restart_args(&d, &o);
		if (r < 0) {
			log_error("cannot set up: %s", strerror(-r));
			code = LUOD_EXIT_FAILURE;
			goto out;
		}
		code = keeper_run(&d, o.previous_exe_fd, on_ready_resumed);
	} else {
		bool passed = socket_passed_to_us();

		if (!o.foreground && !passed) {
			r = daemonize(o.log_target && strcmp(o.log_target, "stderr") == 0,
				      &ready_fd);
			if (r < 0) {
				log_error("cannot daemonize: %s", strerror(-r));
				code = LUOD_EXIT_FAILURE;
				goto out;
			}
			o.daemonized = daemonized = true;
		}
		log_open(o.daemonized);
		r = server_listen(&d);
		if (r == -EADDRINUSE) {
			log_error("another luod already serves %s", d.socket_path);
			code = LUOD_EXIT_RUNNING;
			goto out;
		}
		if (r < 0) {
			/* A passed socket that does not fit was explained already. */
			if (!passed)
				log_error("cannot listen on %s: %s", d.socket_path, strerror(-r));
			code = LUOD_EXIT_FAILURE;
			goto out;
		}
		if (r > 0)
			o.socket_activated = true;
		if (r > 0 && o.socket && strcmp(o.socket, d.socket_path) != 0)
			log_warning(
				"serving %s, the socket the service manager passed, not --socket %s",
				d.socket_path, o.socket);
		socket_activated = o.socket_activated;
		/* The binary installed at luod's path: what `luoctl update` runs by default. */
		n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		self[n > 0 ? n : 0] = 0;
		r = luo_journal_create((size_t)1 << 30, &d.journal_fd);
		if (r >= 0)
			r = keeper_area_init(d.journal_fd, self);
		if (r >= 0)
			r = build_restart_args(&d, &o);
		if (r < 0) {
			log_error("cannot set up: %s", strerror(-r));
			(void)unlink(d.socket_path);
			code = LUOD_EXIT_FAILURE;
			goto out;
		}
		/* The daemonizing parent's pipe is the keeper's until the first worker serves. */
		if (ready_fd >= 0)
			d.keeper_fds[d.n_keeper_fds++] = ready_fd;
		d.kexec_restore = true;
		code = keeper_run(&d, -1, on_ready_first);
	}
	/* A socket from the service manager stays: it listens on it for the next start. */
	if (!socket_activated && !o.socket_activated)
		(void)unlink(d.socket_path);
	if (o.pid_file)
		(void)unlink(o.pid_file);
out:
	/* A daemonizing parent learns how the start went. */
	report_ready(&ready_fd, (unsigned char)code, d.socket_path);
	free_args(&d);
	d.journal_fd = safe_close(d.journal_fd);
	luod_done(&d);
	return code;
}
