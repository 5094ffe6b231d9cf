/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's live update and reboot
 *
 * luod replaces its own process image without dropping anything: every fd
 * it holds (preserved files, session sockets, client connections, the
 * listening socket) stays open across execve(), and its whole state goes to
 * the new image in a sealed memfd.
 *
 * UPDATE, in the old luod:
 *   1. check, outside the blackout, for another binary than luod's own: the
 *      state is encoded into a sealed memfd and `BINARY --check-state FD`
 *      runs in a child, which decodes it without adopting fds and must exit
 *      0 and print "luod-state-ok".  luod goes on serving meanwhile (the
 *      child's pidfd is in the event loop; a second UPDATE or a REBOOT gets
 *      EBUSY).  If it cannot run, refuses or times out, the reply is the
 *      error and nothing changes.
 *   2. blackout: replies still queued are flushed (or dropped); the state,
 *      with the "luod" node below and the pending reply, is encoded into a
 *      new sealed memfd; FD_CLOEXEC is cleared on every fd to keep
 *      (set_keep_fds(), the one place that does it); execve(BINARY
 *      --restore FD --previous-exe FD2 ARGS...), FD2 being an O_RDONLY fd of
 *      the running binary.  If encoding or execve() fails, CLOEXEC is set
 *      again, the error is replied and luod goes on serving.
 * in the new luod (liveupdate_restore):
 *   3. decode, adopting the fds; on success set CLOEXEC on every fd again and
 *      reply to the pending UPDATE with the measured times.  If it refuses
 *      the state, it fexecve()s FD2 with the same memfd and `--rolled-back
 *      ERRNO`: the previous binary restores and replies the error with
 *      rolled_back = 1.
 * REBOOT is luo_engine_reboot() (a freeze error is replied, nothing
 * changes) followed by the same re-exec into luod's own binary.
 *
 * The "luod" node (compatible "luod-daemon-v1"), big-endian arrays:
 *   listen-fd = <u32>; socket-path = "..."; started-usec = <u64>;
 *   live-updates = <u64>;
 *   connections = [ {fd u32, uid u32, pid u32, flags u32 (1: device holder)} ... ];
 *   sessions = [ {fd u32, uid u32, handle u64 (0: stale), client inode u64} ... ];
 *   pending = {conn-fd u32, op u32, tag u32, size u32, t-request u64,
 *              t-serialize u64, reserved u64, state-size u64};   (optional)
 * The time of execve() itself cannot be in a blob written before it: it goes
 * on the command line (--exec-usec).
 *   update-exec = "...";                                         (optional)
 *   queued = [ {endpoint fd u32, fd u32 (~0: none), length u32, 0 u32,
 *               bytes, zero padding to 4} ... ];                   (optional)
 * The queued replies are those a slow reader had not taken yet: they go out
 * after the update, in order, so that no reply is ever lost.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <libfdt.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "basic/socket-util.h"
#include "core/state.h"
#include "luod.h"
#include "protocol/protocol.h"

#define LUOD_EXT_NODE "luod"
#define LUOD_EXT_COMPATIBLE "luod-daemon-v1"
#define CHECK_OK_TOKEN "luod-state-ok"
#define CHECK_TIMEOUT_USEC (UINT64_C(10) * 1000000)

#define CONN_RECORD 16
#define SESSION_RECORD 24
#define PENDING_RECORD 48
#define CONN_DEVICE_HOLDER 1u

extern char **environ;

/* ---- the "luod" node ---- */

struct ext_write_ctx {
	struct luod *d;
	const struct pending_reply *pending;
	const char *exec_path;
};

#define FDT_CHECK(expr)                                                                            \
	do {                                                                                       \
		int _r_ = (expr);                                                                  \
		if (_r_ < 0)                                                                       \
			return luo_fdt_errno(_r_);                                                 \
	} while (0)

static void put32(uint8_t *p, uint32_t v)
{
	fdt32_t x = cpu_to_fdt32(v);
	memcpy(p, &x, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	fdt64_t x = cpu_to_fdt64(v);
	memcpy(p, &x, 8);
}

static uint32_t get32(const uint8_t *p)
{
	fdt32_t x;
	memcpy(&x, p, 4);
	return fdt32_to_cpu(x);
}

static uint64_t get64(const uint8_t *p)
{
	fdt64_t x;
	memcpy(&x, p, 8);
	return fdt64_to_cpu(x);
}

#define QUEUED_HEADER 16
#define PAD4(n) (((n) + 3) & ~(size_t)3)

static size_t queued_size(const struct list_head *eps)
{
	size_t size = 0;

	LIST_FOREACH (n, eps) {
		const struct endpoint *ep = list_entry(n, struct endpoint, node);
		for (const struct outmsg *m = ep->out_head; m; m = m->next)
			size += QUEUED_HEADER + PAD4(m->len);
	}
	return size;
}

static uint8_t *put_queued(uint8_t *p, const struct list_head *eps)
{
	LIST_FOREACH (n, eps) {
		const struct endpoint *ep = list_entry(n, struct endpoint, node);
		for (const struct outmsg *m = ep->out_head; m; m = m->next) {
			put32(p, (uint32_t)ep->fd);
			put32(p + 4, m->fd >= 0 ? (uint32_t)m->fd : UINT32_MAX);
			put32(p + 8, (uint32_t)m->len);
			put32(p + 12, 0);
			memcpy(p + QUEUED_HEADER, m->data, m->len);
			memset(p + QUEUED_HEADER + m->len, 0, PAD4(m->len) - m->len);
			p += QUEUED_HEADER + PAD4(m->len);
		}
	}
	return p;
}

/* Replies slow readers have not taken yet, so that the next image sends them. */
static int write_queued(void *fdt, struct luod *d)
{
	size_t size = queued_size(&d->conns) + queued_size(&d->sessions);
	uint8_t *p;

	if (size == 0)
		return 0;
	if (size > INT32_MAX)
		return -E2BIG;
	FDT_CHECK(fdt_property_placeholder(fdt, "queued", (int)size, (void **)&p));
	p = put_queued(p, &d->conns);
	(void)put_queued(p, &d->sessions);
	return 0;
}

static int ext_write(void *fdt, void *userdata)
{
	struct ext_write_ctx *x = userdata;
	struct luod *d = x->d;
	uint8_t *p;
	size_t i;
	int err;

	FDT_CHECK(fdt_property_string(fdt, "compatible", LUOD_EXT_COMPATIBLE));
	FDT_CHECK(fdt_property_u32(fdt, "listen-fd", (uint32_t)d->listen_ep.fd));
	FDT_CHECK(fdt_property_string(fdt, "socket-path", d->socket_path));
	FDT_CHECK(fdt_property_u64(fdt, "started-usec", d->started_usec));
	FDT_CHECK(fdt_property_u64(fdt, "live-updates", d->n_live_updates));

	FDT_CHECK(fdt_property_placeholder(fdt, "connections", (int)(d->conns.count * CONN_RECORD),
					   (void **)&p));
	i = 0;
	LIST_FOREACH (n, &d->conns) {
		struct endpoint *ep = list_entry(n, struct endpoint, node);
		uint8_t *r = p + i++ * CONN_RECORD;

		put32(r, (uint32_t)ep->fd);
		put32(r + 4, ep->uid);
		put32(r + 8, (uint32_t)ep->pid);
		put32(r + 12, ep->device_holder ? CONN_DEVICE_HOLDER : 0);
	}
	FDT_CHECK(fdt_property_placeholder(fdt, "sessions",
					   (int)(d->sessions.count * SESSION_RECORD), (void **)&p));
	i = 0;
	LIST_FOREACH (n, &d->sessions) {
		struct endpoint *ep = list_entry(n, struct endpoint, node);
		uint8_t *r = p + i++ * SESSION_RECORD;
		bool live = ep->handle && luo_engine_session_by_handle(d->engine, ep->handle);

		put32(r, (uint32_t)ep->fd);
		put32(r + 4, ep->uid);
		put64(r + 8, live ? ep->handle : 0);
		put64(r + 16, ep->ino);
	}
	err = write_queued(fdt, d);
	if (err < 0)
		return err;
	if (x->pending && x->pending->active) {
		const struct pending_reply *pr = x->pending;

		FDT_CHECK(fdt_property_placeholder(fdt, "pending", PENDING_RECORD, (void **)&p));
		put32(p, (uint32_t)pr->conn_fd);
		put32(p + 4, pr->op);
		put32(p + 8, pr->tag);
		put32(p + 12, pr->size);
		put64(p + 16, pr->t_request_usec);
		put64(p + 24, pr->t_serialize_usec);
		put64(p + 32, 0); /* reserved */
		put64(p + 40, pr->state_size);
		if (x->exec_path)
			FDT_CHECK(fdt_property_string(fdt, "update-exec", x->exec_path));
	}
	return 0;
}

struct ext_read_ctx {
	bool borrowed; /* --check-state: the fds are not ours to look at */
	bool found;
	int listen_fd;
	char socket_path[108];
	uint64_t started_usec, live_updates;
	uint8_t *conns, *sessions; /* copies: the blob is unmapped before they are used */
	size_t n_conns, n_sessions;
	struct pending_reply pending;
	char exec_path[LUO_UPDATE_PATH_MAX];
	uint8_t *queued; /* checked records, see write_queued() */
	size_t queued_size, n_queued;
};

static void ext_read_ctx_done(struct ext_read_ctx *x)
{
	free(x->conns);
	free(x->sessions);
	free(x->queued);
	x->conns = x->sessions = x->queued = NULL;
}

static int ext_check_fds(const struct ext_read_ctx *x);

static int ext_read(const void *fdt, int offset, void *userdata)
{
	struct ext_read_ctx *x = userdata;
	int prop, len;
	bool have_listen = false, have_path = false, have_compat = false;

	if (offset < 0)
		return -EBADMSG; /* a luod state always has the node */
	if (fdt_first_subnode(fdt, offset) >= 0)
		return -EBADMSG;

	fdt_for_each_property_offset(prop, fdt, offset)
	{
		const char *name;
		const uint8_t *v = fdt_getprop_by_offset(fdt, prop, &name, &len);

		if (!v || len < 0)
			return -EBADMSG;
		if (strcmp(name, "compatible") == 0) {
			if ((size_t)len != sizeof(LUOD_EXT_COMPATIBLE) ||
			    memcmp(v, LUOD_EXT_COMPATIBLE, len) != 0)
				return -EPROTONOSUPPORT;
			have_compat = true;
		} else if (strcmp(name, "listen-fd") == 0) {
			if (len != 4)
				return -EBADMSG;
			x->listen_fd = (int)get32(v);
			have_listen = true;
		} else if (strcmp(name, "socket-path") == 0) {
			if (len < 2 || (size_t)len > sizeof(x->socket_path) || v[len - 1] != 0 ||
			    strlen((const char *)v) != (size_t)len - 1)
				return -EBADMSG;
			memcpy(x->socket_path, v, len);
			have_path = true;
		} else if (strcmp(name, "started-usec") == 0 || strcmp(name, "live-updates") == 0) {
			if (len != 8)
				return -EBADMSG;
			*(name[0] == 's' ? &x->started_usec : &x->live_updates) = get64(v);
		} else if (strcmp(name, "connections") == 0 || strcmp(name, "sessions") == 0) {
			bool conns = name[0] == 'c';
			size_t rec = conns ? CONN_RECORD : SESSION_RECORD;
			uint8_t **dst = conns ? &x->conns : &x->sessions;

			if (len % rec != 0 || *dst)
				return -EBADMSG;
			*dst = malloc(len ? len : 1);
			if (!*dst)
				return -ENOMEM;
			memcpy(*dst, v, len);
			*(conns ? &x->n_conns : &x->n_sessions) = len / rec;
		} else if (strcmp(name, "pending") == 0) {
			if (len != PENDING_RECORD)
				return -EBADMSG;
			x->pending.active = true;
			x->pending.conn_fd = (int)get32(v);
			x->pending.op = get32(v + 4);
			x->pending.tag = get32(v + 8);
			x->pending.size = get32(v + 12);
			x->pending.t_request_usec = get64(v + 16);
			x->pending.t_serialize_usec = get64(v + 24);
			x->pending.state_size = get64(v + 40);
			if (x->pending.op != (uint32_t)LUO_IOCTL_UPDATE &&
			    x->pending.op != (uint32_t)LUO_IOCTL_REBOOT)
				return -EBADMSG;
		} else if (strcmp(name, "queued") == 0) {
			if (x->queued || len == 0)
				return -EBADMSG;
			/* Whole records, each a reply luod could have sent. */
			for (size_t off = 0; off < (size_t)len;) {
				uint32_t mlen;

				if ((size_t)len - off < QUEUED_HEADER)
					return -EBADMSG;
				mlen = get32(v + off + 8);
				if (mlen < sizeof(struct luo_wire_reply) ||
				    mlen > LUO_WIRE_REPLY_MAX || get32(v + off + 12) != 0 ||
				    (size_t)len - off - QUEUED_HEADER < PAD4(mlen))
					return -EBADMSG;
				off += QUEUED_HEADER + PAD4(mlen);
				x->n_queued++;
			}
			x->queued = malloc(len);
			if (!x->queued)
				return -ENOMEM;
			memcpy(x->queued, v, len);
			x->queued_size = len;
		} else if (strcmp(name, "update-exec") == 0) {
			if (len < 1 || (size_t)len > sizeof(x->exec_path) || v[len - 1] != 0)
				return -EBADMSG;
			memcpy(x->exec_path, v, len);
		} else
			return -EBADMSG; /* refuse what this version does not understand */
	}
	if (!have_compat || !have_listen || !have_path || !x->conns || !x->sessions)
		return -EBADMSG;
	/* Checked here, inside the decode, so that a refusal leaves every fd alone. */
	int r = ext_check_fds(x);
	if (r < 0)
		return r;
	x->found = true;
	return 0;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/*
 * The fds the node names: distinct (a duplicate would be closed twice),
 * >= 3, open unless borrowed; the pending reply's connection among them.
 */
static int ext_check_fds(const struct ext_read_ctx *x)
{
	size_t n_eps = 1 + x->n_conns + x->n_sessions, n = n_eps + x->n_queued;
	_cleanup_free_ int *fds = malloc(n * sizeof(int));
	_cleanup_free_ int *eps = NULL;
	bool pending_found = !x->pending.active;

	if (!fds)
		return -ENOMEM;
	fds[0] = x->listen_fd;
	for (size_t i = 0; i < x->n_conns; i++) {
		fds[1 + i] = (int)get32(x->conns + i * CONN_RECORD);
		if (get32(x->conns + i * CONN_RECORD + 12) & ~CONN_DEVICE_HOLDER)
			return -EBADMSG;
		if (x->pending.active && fds[1 + i] == x->pending.conn_fd)
			pending_found = true;
	}
	for (size_t i = 0; i < x->n_sessions; i++)
		fds[1 + x->n_conns + i] = (int)get32(x->sessions + i * SESSION_RECORD);
	if (!pending_found)
		return -EBADMSG;
	/* Each queued reply belongs to a connection or session socket of the node. */
	eps = malloc(n_eps * sizeof(int));
	if (!eps)
		return -ENOMEM;
	memcpy(eps, fds, n_eps * sizeof(int));
	qsort(eps + 1, n_eps - 1, sizeof(int), cmp_int);
	size_t n_fds = n_eps;
	for (size_t off = 0; off < x->queued_size;) {
		int ep = (int)get32(x->queued + off), fd = (int)get32(x->queued + off + 4);

		if (!bsearch(&ep, eps + 1, n_eps - 1, sizeof(int), cmp_int))
			return -EBADMSG;
		if (fd != -1)
			fds[n_fds++] = fd;
		off += QUEUED_HEADER + PAD4(get32(x->queued + off + 8));
	}
	n = n_fds;
	for (size_t i = 0; i < n; i++) {
		if (fds[i] < 3)
			return -EBADMSG;
		if (!x->borrowed && !fd_is_open(fds[i]))
			return -EBADF;
	}
	qsort(fds, n, sizeof(int), cmp_int);
	for (size_t i = 1; i < n; i++)
		if (fds[i] == fds[i - 1])
			return -EBADMSG;
	return 0;
}

/* Every live handle the node names must be one the engine knows. */
static int ext_check_handles(const luo_engine *e, const struct ext_read_ctx *x)
{
	for (size_t i = 0; i < x->n_sessions; i++) {
		uint64_t handle = get64(x->sessions + i * SESSION_RECORD + 8);

		if (handle && !luo_engine_session_by_handle(e, handle))
			return -EBADMSG;
	}
	return 0;
}

/* ---- keeping fds across execve() ---- */

struct keep_ctx {
	bool cloexec;
	int r;
};

static void keep_fd(struct keep_ctx *k, int fd)
{
	if (fd < 0)
		return;
	/* FD_CLOEXEC is the only fd flag: one fcntl per fd. */
	if (fcntl(fd, F_SETFD, k->cloexec ? FD_CLOEXEC : 0) < 0 && k->r == 0)
		k->r = negative_errno();
}

static void keep_queued(struct keep_ctx *k, const struct endpoint *ep)
{
	for (const struct outmsg *m = ep->out_head; m; m = m->next)
		keep_fd(k, m->fd);
}

static void keep_flb_fd(int fd, void *userdata)
{
	keep_fd(userdata, fd);
}

/*
 * The one place that clears (keep = true) or restores FD_CLOEXEC on the fds
 * luod hands to its next image that are not inheritable from birth: the fds
 * queued with replies, the FLBs' fds, and the extra fds (the state memfd,
 * the previous binary).  Everything else luod keeps (the listening socket,
 * connections, session sockets, every held file) is born inheritable, so an
 * update costs no system call per file or per session.
 */
static int set_keep_fds(struct luod *d, bool keep, const int *extra, size_t n_extra)
{
	struct keep_ctx k = { .cloexec = !keep };

	LIST_FOREACH (n, &d->conns)
		keep_queued(&k, list_entry(n, struct endpoint, node));
	LIST_FOREACH (n, &d->sessions)
		keep_queued(&k, list_entry(n, struct endpoint, node));
	luo_engine_foreach_flb_fd(d->engine, keep_flb_fd, &k);
	for (size_t i = 0; i < n_extra; i++)
		keep_fd(&k, extra[i]);
	return k.r;
}

/* ---- the state memfd ---- */

static int state_memfd(struct luod *d, const struct pending_reply *pending, const char *exec_path,
		       size_t *ret_size)
{
	struct ext_write_ctx x = { .d = d, .pending = pending, .exec_path = exec_path };
	struct luo_state_ext ext = {
		.node = LUOD_EXT_NODE,
		.write = ext_write,
		.userdata = &x,
	};
	_cleanup_free_ void *blob = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t size, done = 0;
	int r;

	r = luo_state_encode(d->engine, &ext, &blob, &size);
	if (r < 0)
		return r;
	fd = memfd_create("luod-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return negative_errno();
	while (done < size) {
		ssize_t n = write(fd, (uint8_t *)blob + done, size - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		done += n;
	}
	/* Sealed: neither image can change what the other reads. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		return negative_errno();
	*ret_size = size;
	return TAKE_FD(fd);
}

/* ---- step 1: the check ---- */

/*
 * Reads what the checker prints and waits for it to exit, within
 * CHECK_TIMEOUT_USEC.  Only for kernels without pidfds (before Linux 5.3),
 * which give no fd to wait on: it looks again every millisecond.
 */
static int wait_check(pid_t pid, int out_fd, char *out, size_t size, int *ret_status)
{
	uint64_t deadline = now_usec(CLOCK_MONOTONIC) + CHECK_TIMEOUT_USEC;
	size_t got = 0;
	bool eof = false;

	for (;;) {
		struct pollfd p = { .fd = eof ? -1 : out_fd, .events = POLLIN };
		uint64_t now = now_usec(CLOCK_MONOTONIC);
		pid_t w;

		if (now >= deadline) {
			kill(pid, SIGKILL);
			(void)waitpid(pid, ret_status, 0);
			return -ETIMEDOUT;
		}
		if (poll(&p, 1, 1) < 0 && errno != EINTR)
			return negative_errno();
		if (p.revents) {
			ssize_t n = read(out_fd, out + got, size - 1 - got);
			if (n > 0)
				got += n;
			else if (n == 0 || errno != EAGAIN)
				eof = true;
			if (got == size - 1)
				eof = true; /* enough to judge; the rest does not matter */
		}
		w = waitpid(pid, ret_status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return negative_errno();
	}
	/* Whatever it printed before exiting is in the pipe. */
	for (ssize_t n;
	     !eof && got < size - 1 && (n = read(out_fd, out + got, size - 1 - got)) > 0;)
		got += n;
	out[got] = 0;
	return 0;
}

/* Starts `binary --check-state memfd` with its stdout on a pipe; *ret_out is the read end. */
static int spawn_check(const char *binary, int memfd, pid_t *ret_pid, int *ret_out)
{
	_cleanup_close_ int out_r = -EBADF, out_w = -EBADF;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	char fdstr[16];
	char *argv[] = { (char *)binary, "--check-state", fdstr, NULL };
	sigset_t none, def;
	int pipefd[2], r;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		return negative_errno();
	out_r = pipefd[0];
	out_w = pipefd[1];
	snprintf(fdstr, sizeof(fdstr), "%d", 3);

	/* posix_spawn() (vfork-like) rather than fork(): a luod holding millions of
	 * files has a large address space that fork() would copy for nothing. */
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	sigemptyset(&def);
	sigaddset(&def, SIGPIPE);
	sigaddset(&def, SIGHUP);
	posix_spawnattr_setsigdefault(&attr, &def);
	/* The checker gets the state as fd 3 and nothing else luod holds (which
	 * is inheritable, for luod's own next image). */
	posix_spawn_file_actions_adddup2(&fa, out_w, STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, memfd, 3);
	posix_spawn_file_actions_addclosefrom_np(&fa, 4);
	r = -posix_spawn(&pid, binary, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r < 0) {
		log_warning("cannot run %s: %s", binary, strerror(-r));
		return -ENOEXEC;
	}
	*ret_pid = pid;
	*ret_out = TAKE_FD(out_r);
	return 0;
}

/* The verdict of a checker that exited with status after printing out. */
static int judge_check(const char *binary, int status, const char *out)
{
	if (!WIFEXITED(status)) {
		log_warning("%s --check-state died of signal %d", binary, WTERMSIG(status));
		return -ENOEXEC;
	}
	int code = WEXITSTATUS(status);
	if (code == 0) {
		/* An exit code alone proves little (/bin/true): it must say so. */
		if (strncmp(out, CHECK_OK_TOKEN, strlen(CHECK_OK_TOKEN)) != 0) {
			log_warning("%s --check-state did not confirm the state", binary);
			return -ENOEXEC;
		}
		return 0;
	}
	log_warning("%s --check-state refused the state (exit code %d)", binary, code);
	/* Our own checker exits with the errno; generic failures and exec errors say ENOEXEC. */
	if (code <= 2 || code >= 126)
		return -ENOEXEC;
	return -code;
}

static void update_blackout(struct luod *d, struct endpoint *ep, const char *binary,
			    struct pending_reply *pr);

/*
 * Starts the check of another binary and returns at once: luod goes on
 * serving while the checker decodes the state, and liveupdate_check_done()
 * takes over when it exits (its pidfd becomes readable) or its time is up.
 * Returns 1 if the check is under way, 0 if it already passed (no pidfds:
 * it ran synchronously), -errno if it failed.
 */
static int start_check(struct luod *d, struct endpoint *ep, const char *binary,
		       const struct pending_reply *pr)
{
	_cleanup_close_ int memfd = -EBADF, out = -EBADF, pidfd = -EBADF;
	size_t state_size;
	pid_t pid;
	int r;

	r = state_memfd(d, NULL, NULL, &state_size);
	if (r < 0)
		return r;
	memfd = r;
	r = spawn_check(binary, memfd, &pid, &out);
	if (r < 0)
		return r;
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		/* Too old a kernel to watch the child from the event loop. */
		char buf[64] = { 0 };
		int status = 0;

		r = wait_check(pid, out, buf, sizeof(buf), &status);
		return r < 0 ? r : judge_check(binary, status, buf);
	}
	r = epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, pidfd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &d->check.ep });
	if (r < 0) {
		r = negative_errno();
		kill(pid, SIGKILL);
		(void)waitpid(pid, NULL, 0);
		return r;
	}
	d->check.pid = pid;
	d->check.ep.fd = TAKE_FD(pidfd);
	d->check.out_fd = TAKE_FD(out);
	d->check.requester = ep;
	d->check.pr = *pr;
	d->check.deadline_usec = now_usec(CLOCK_MONOTONIC) + CHECK_TIMEOUT_USEC;
	snprintf(d->check.binary, sizeof(d->check.binary), "%s", binary);
	log_info("checking whether %s accepts the state", binary);
	return 1;
}

int liveupdate_check_timeout_ms(const struct luod *d)
{
	uint64_t now;

	if (d->check.pid <= 0)
		return -1;
	now = now_usec(CLOCK_MONOTONIC);
	return now >= d->check.deadline_usec ? 0
					     : (int)((d->check.deadline_usec - now + 999) / 1000);
}

/* Ends the check (killing a checker that is still running) and forgets it. */
static int check_end(struct luod *d, char *out, size_t size, int *ret_status)
{
	struct update_check *c = &d->check;
	pid_t w = waitpid(c->pid, ret_status, WNOHANG);
	size_t got = 0;
	int r = 0;

	if (w == 0) {
		kill(c->pid, SIGKILL);
		(void)waitpid(c->pid, ret_status, 0);
		r = -ETIMEDOUT;
	} else if (w < 0)
		r = negative_errno();
	/* What it printed before exiting is in the pipe. */
	for (ssize_t n; got < size - 1 && (n = read(c->out_fd, out + got, size - 1 - got)) > 0;)
		got += (size_t)n;
	out[got] = 0;
	(void)epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, c->ep.fd, NULL);
	c->ep.fd = safe_close(c->ep.fd);
	c->out_fd = safe_close(c->out_fd);
	c->pid = 0;
	return r;
}

void liveupdate_check_done(struct luod *d)
{
	struct update_check *c = &d->check;
	struct endpoint *ep = c->requester;
	char out[64];
	int status = 0, r;

	if (c->pid <= 0)
		return;
	/* Neither exited nor late: a wake-up for nothing (epoll's timeout rounds). */
	siginfo_t si = { 0 };
	if (waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0 &&
	    now_usec(CLOCK_MONOTONIC) < c->deadline_usec)
		return;
	r = check_end(d, out, sizeof(out), &status);
	if (r == -ETIMEDOUT)
		log_warning("%s --check-state timed out", c->binary);
	if (r == 0)
		r = judge_check(c->binary, status, out);
	c->requester = NULL;
	if (!ep) {
		log_info("update to %s abandoned: its requester hung up", c->binary);
		return;
	}
	if (r < 0) {
		log_warning("update to %s refused: %s", c->binary, strerror(-r));
		endpoint_reply(d, ep, c->pr.tag, r, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	update_blackout(d, ep, c->binary, &c->pr);
}

void liveupdate_check_cancel(struct luod *d)
{
	char out[8];
	int status;

	if (d->check.pid > 0) {
		d->check.deadline_usec = 0;
		(void)check_end(d, out, sizeof(out), &status);
	}
	d->check.requester = NULL;
}

/* ---- step 2: the blackout ---- */

static void build_args(struct luod *d, const char *binary, int memfd, int exe_fd,
		       int rollback_error, uint64_t t_exec, char **argv, char bufs[4][24])
{
	size_t n = 0;

	argv[n++] = (char *)binary;
	snprintf(bufs[0], 16, "%d", memfd);
	argv[n++] = "--restore";
	argv[n++] = bufs[0];
	if (exe_fd >= 0) {
		snprintf(bufs[1], 16, "%d", exe_fd);
		argv[n++] = "--previous-exe";
		argv[n++] = bufs[1];
	}
	if (rollback_error) {
		snprintf(bufs[2], 16, "%d", rollback_error);
		argv[n++] = "--rolled-back";
		argv[n++] = bufs[2];
	}
	snprintf(bufs[3], 24, "%" PRIu64, t_exec);
	argv[n++] = "--exec-usec";
	argv[n++] = bufs[3];
	for (int i = 0; i < d->n_args; i++)
		argv[n++] = d->args[i];
	argv[n] = NULL;
}

/* Re-execs into binary with the whole state; returns only on failure, with -errno. */
static int reexec(struct luod *d, const char *binary, const char *exec_path,
		  struct pending_reply *pending)
{
	_cleanup_close_ int memfd = -EBADF, exe_fd = -EBADF;
	_cleanup_free_ char **argv = NULL;
	char bufs[4][24];
	uint64_t t_start = now_usec(CLOCK_MONOTONIC);
	size_t size;
	int r;

	/* Send what the sockets take now; the rest goes over in the state. */
	LIST_FOREACH (n, &d->conns) {
		struct endpoint *ep = list_entry(n, struct endpoint, node);
		if (ep->out_head)
			endpoint_flush(d, ep);
	}
	LIST_FOREACH (n, &d->sessions) {
		struct endpoint *ep = list_entry(n, struct endpoint, node);
		if (ep->out_head)
			endpoint_flush(d, ep);
	}

	exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (exe_fd < 0)
		return negative_errno();
	pending->t_serialize_usec = t_start;
	r = state_memfd(d, pending, exec_path, &size);
	if (r < 0)
		return r;
	memfd = r;

	argv = calloc(d->n_args + 16, sizeof(char *));
	if (!argv)
		return -ENOMEM;
	uint64_t t_encoded = now_usec(CLOCK_MONOTONIC);
	int extra[] = { memfd, exe_fd };
	r = set_keep_fds(d, true, extra, ELEMENTSOF(extra));
	log_debug("blackout: encoding %" PRIu64 " us, keeping fds %" PRIu64 " us",
		  t_encoded - t_start, now_usec(CLOCK_MONOTONIC) - t_encoded);
	if (r >= 0) {
		build_args(d, binary, memfd, exe_fd, 0, now_usec(CLOCK_MONOTONIC), argv, bufs);
		log_info("re-executing %s (%zu bytes of state)", binary, size);
		execve(binary, argv, environ);
		r = negative_errno();
		log_error("execve %s: %m", binary);
	}
	(void)set_keep_fds(d, false, extra, ELEMENTSOF(extra));
	return r;
}

/* 2: the blackout.  Returns only if the update failed, after replying the error. */
static void update_blackout(struct luod *d, struct endpoint *ep, const char *binary,
			    struct pending_reply *pr)
{
	int r = reexec(d, binary, binary, pr);

	log_warning("update to %s aborted: %s", binary, strerror(-r));
	endpoint_reply(d, ep, pr->tag, r, 0, NULL, 0, NULL, 0, -EBADF);
}

static void reply_update(struct luod *d, struct endpoint *ep, const struct pending_reply *pr,
			 int result, const char *exec_path, uint64_t serialize_usec,
			 uint64_t exec_usec, uint64_t restore_usec, bool rolled_back)
{
	struct luo_wire_update u = {
		.size = pr->size,
		.serialize_usec = serialize_usec,
		.exec_usec = exec_usec,
		.restore_usec = restore_usec,
		.total_usec = now_usec(CLOCK_MONOTONIC) - pr->t_request_usec,
		.state_size = pr->state_size,
		.rolled_back = rolled_back,
	};

	if (exec_path)
		snprintf(u.exec_path, sizeof(u.exec_path), "%s", exec_path);
	/* Even the error of a rollback carries the struct: the client learns what happened. */
	endpoint_reply(d, ep, pr->tag, result, 0, &u, MIN(pr->size, (uint32_t)sizeof(u)), NULL, 0,
		       -EBADF);
}

static void reply_reboot(struct luod *d, struct endpoint *ep, const struct pending_reply *pr)
{
	struct luo_wire_reboot rb = {
		.size = pr->size,
		.update_number = luo_engine_update_number(d->engine),
		.total_usec = now_usec(CLOCK_MONOTONIC) - pr->t_request_usec,
	};

	endpoint_reply(d, ep, pr->tag, 0, 0, &rb, MIN(pr->size, (uint32_t)sizeof(rb)), NULL, 0,
		       -EBADF);
}

void liveupdate_request(struct luod *d, struct endpoint *ep, uint32_t op, uint32_t tag,
			const void *req, uint32_t size, uint64_t t_request)
{
	struct pending_reply pr = {
		.active = true,
		.conn_fd = ep->fd,
		.op = op,
		.tag = tag,
		.size = size,
		.t_request_usec = t_request,
	};
	int r;

	if (op == (uint32_t)LUO_IOCTL_REBOOT) {
		const struct luo_wire_reboot *rb = req;

		if (rb->reserved != 0) {
			endpoint_reply(d, ep, tag, -EINVAL, 0, NULL, 0, NULL, 0, -EBADF);
			return;
		}
		if (d->check.pid > 0) {
			/* An update is being prepared: one at a time. */
			endpoint_reply(d, ep, tag, -EBUSY, 0, NULL, 0, NULL, 0, -EBADF);
			return;
		}
		/* Sessions whose last fd was closed before the request are gone, as in
		 * the kernel: take in their hang-ups before handing anything over. */
		while (server_reap_hangups(d, ep) > 0)
			;
		r = luo_engine_reboot(d->engine);
		if (r < 0) {
			log_warning("reboot refused: %s", strerror(-r));
			endpoint_reply(d, ep, tag, r, 0, NULL, 0, NULL, 0, -EBADF);
			return;
		}
		(void)uid_usage_recount(d);
		log_info("reboot: live update number %" PRIu64,
			 luo_engine_update_number(d->engine));
		r = reexec(d, "/proc/self/exe", NULL, &pr);
		/* The reboot happened in the engine either way; only the re-exec failed. */
		log_warning("reboot done without re-exec: %s", strerror(-r));
		reply_reboot(d, ep, &pr);
		return;
	}

	const struct luo_wire_update *u = req;
	char binary[LUO_UPDATE_PATH_MAX];

	if (u->flags != 0 || !memchr(u->exec_path, 0, sizeof(u->exec_path))) {
		endpoint_reply(d, ep, tag, -EINVAL, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	snprintf(binary, sizeof(binary), "%s", u->exec_path[0] ? u->exec_path : "/proc/self/exe");

	if (d->check.pid > 0) {
		/* One update at a time. */
		endpoint_reply(d, ep, tag, -EBUSY, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	/* 1: does the target accept this state?  luod's own image does by
	 * construction (/proc/self/exe is the running inode, even if the file was
	 * replaced on disk), so only another binary is asked, and luod goes on
	 * serving while it answers. */
	r = 0;
	if (u->exec_path[0]) {
		r = start_check(d, ep, binary, &pr);
		if (r > 0)
			return;
	}
	if (r < 0) {
		log_warning("update to %s refused: %s", binary, strerror(-r));
		endpoint_reply(d, ep, tag, r, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	update_blackout(d, ep, binary, &pr);
}

/* ---- step 3: the new image ---- */

static int map_state(int memfd, void **ret_blob, size_t *ret_size)
{
	struct stat st;
	void *p;

	if (fstat(memfd, &st) < 0)
		return negative_errno();
	if (st.st_size <= 0 || (uint64_t)st.st_size > LUO_STATE_MAX_SIZE)
		return -EBADMSG;
	/* Populated at once: one call instead of a page fault per page of the blob. */
	p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, memfd, 0);
	if (p == MAP_FAILED)
		return negative_errno();
	*ret_blob = p;
	*ret_size = st.st_size;
	return 0;
}

int liveupdate_check_state(int memfd)
{
	struct ext_read_ctx x = { .listen_fd = -1, .borrowed = true };
	struct luo_state_ext ext = { .node = LUOD_EXT_NODE, .read = ext_read, .userdata = &x };
	luo_engine *e = NULL;
	void *blob;
	size_t size;
	int r;

	r = map_state(memfd, &blob, &size);
	if (r < 0)
		return r;
	r = luo_engine_new(&e);
	if (r >= 0)
		r = luo_engine_add_default_handlers(e);
	if (r >= 0)
		r = luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, &ext);
	if (r >= 0 && !x.found)
		r = -EBADMSG;
	if (r >= 0)
		r = ext_check_handles(e, &x);
	ext_read_ctx_done(&x);
	luo_engine_free(e);
	munmap(blob, size);
	return r;
}

struct fd_endpoint {
	int fd;
	struct endpoint *ep;
};

static int cmp_fd_endpoint(const void *a, const void *b)
{
	return cmp_int(&((const struct fd_endpoint *)a)->fd, &((const struct fd_endpoint *)b)->fd);
}

/* Puts the replies the previous image had queued back, in their order. */
static int adopt_queued(struct luod *d, const struct ext_read_ctx *x)
{
	size_t n = d->conns.count + d->sessions.count, i = 0;
	_cleanup_free_ struct fd_endpoint *map = malloc(MAX(n, (size_t)1) * sizeof(*map));

	if (!map)
		return -ENOMEM;
	LIST_FOREACH (pos, &d->conns)
		map[i++] = (struct fd_endpoint){ list_entry(pos, struct endpoint, node)->fd,
						 list_entry(pos, struct endpoint, node) };
	LIST_FOREACH (pos, &d->sessions)
		map[i++] = (struct fd_endpoint){ list_entry(pos, struct endpoint, node)->fd,
						 list_entry(pos, struct endpoint, node) };
	qsort(map, n, sizeof(*map), cmp_fd_endpoint);
	for (size_t off = 0; off < x->queued_size;) {
		struct fd_endpoint key = { .fd = (int)get32(x->queued + off) };
		struct fd_endpoint *found = bsearch(&key, map, n, sizeof(*map), cmp_fd_endpoint);
		uint32_t len = get32(x->queued + off + 8);
		struct outmsg *m = malloc(sizeof(*m) + len);

		if (!found || !m) {
			free(m);
			return found ? -ENOMEM : -EBADMSG;
		}
		m->next = NULL;
		m->fd = (int)get32(x->queued + off + 4);
		m->len = len;
		memcpy(m->data, x->queued + off + QUEUED_HEADER, len);
		if (found->ep->out_tail)
			found->ep->out_tail->next = m;
		else
			found->ep->out_head = m;
		found->ep->out_tail = m;
		found->ep->out_bytes += len;
		d->queued_bytes += len;
		off += QUEUED_HEADER + PAD4(len);
	}
	return 0;
}

static int adopt(struct luod *d, struct ext_read_ctx *x)
{
	d->listen_ep.fd = x->listen_fd;
	snprintf(d->socket_path, sizeof(d->socket_path), "%s", x->socket_path);
	d->started_usec = x->started_usec;
	d->n_live_updates = x->live_updates;
	for (size_t i = 0; i < x->n_conns; i++) {
		const uint8_t *r = x->conns + i * CONN_RECORD;
		struct endpoint *ep = conn_add(d, (int)get32(r), get32(r + 4), (pid_t)get32(r + 8));

		if (!ep)
			return -ENOMEM;
		if (get32(r + 12) & CONN_DEVICE_HOLDER) {
			ep->device_holder = true;
			d->device_holder = ep;
		}
	}
	for (size_t i = 0; i < x->n_sessions; i++) {
		const uint8_t *r = x->sessions + i * SESSION_RECORD;

		uint64_t handle = get64(r + 8);

		/* The check ran on this very state; should a handle not resolve anyway, the
		 * safe reading is a stale fd (ESTALE), never someone else's session. */
		if (handle && !luo_engine_session_by_handle(d->engine, handle))
			handle = 0;
		if (!session_ep_add(d, (int)get32(r), handle, get64(r + 16), get32(r + 4)))
			return -ENOMEM;
	}
	if (x->n_queued) {
		int r = adopt_queued(d, x);
		if (r < 0)
			return r;
		log_debug("%zu replies still to send", x->n_queued);
	}
	return uid_usage_recount(d);
}

static _noreturn_ void roll_back(struct luod *d, int memfd, int error)
{
	_cleanup_free_ char **argv = calloc(d->n_args + 16, sizeof(char *));
	char bufs[4][24];

	log_error("refusing the state (%s): handing it back to the previous binary",
		  strerror(-error));
	if (d->previous_exe_fd < 0 || !argv) {
		log_error("no previous binary to hand the state back to");
		exit(LUOD_EXIT_FAILURE);
	}
	build_args(d, d->self_path, memfd, -EBADF, -error, now_usec(CLOCK_MONOTONIC), argv, bufs);
	/* The test hook must not make the previous binary refuse too. */
	unsetenv("LUOD_TEST_REJECT_RESTORE");
	(void)fcntl(d->previous_exe_fd, F_SETFD, FD_CLOEXEC);
	fexecve(d->previous_exe_fd, argv, environ);
	log_error("fexecve of the previous binary: %m");
	exit(LUOD_EXIT_FAILURE);
}

int liveupdate_restore(struct luod *d, int memfd, int rollback_error)
{
	struct ext_read_ctx x = { .listen_fd = -1 };
	struct luo_state_ext ext = { .node = LUOD_EXT_NODE, .read = ext_read, .userdata = &x };
	uint64_t t_restore = now_usec(CLOCK_MONOTONIC);
	void *blob = NULL;
	size_t size = 0;
	int r;

	r = map_state(memfd, &blob, &size);
	if (r >= 0 && !rollback_error && getenv("LUOD_TEST_REJECT_RESTORE"))
		r = -EPROTONOSUPPORT; /* testing aid: act as a binary that refuses the state */
	if (r >= 0)
		r = luo_state_decode(d->engine, blob, size, 0, &ext);
	if (r >= 0 && !x.found)
		r = -EBADMSG;
	if (blob)
		munmap(blob, size);
	log_debug("restore: decoding %" PRIu64 " us", now_usec(CLOCK_MONOTONIC) - t_restore);
	if (r < 0) {
		ext_read_ctx_done(&x);
		if (rollback_error) {
			log_error("the previous binary cannot take the state back either: %s",
				  strerror(-r));
			return r;
		}
		roll_back(d, memfd, r);
	}

	/* The blob cannot hold its own size: the memfd tells it. */
	x.pending.state_size = size;
	r = adopt(d, &x);
	ext_read_ctx_done(&x);
	if (r < 0)
		return r;
	/* What was made inheritable only for the exec is close-on-exec again (the
	 * caller closes memfd). */
	(void)set_keep_fds(d, false, NULL, 0);
	d->previous_exe_fd = safe_close(d->previous_exe_fd);
	if (!rollback_error)
		d->n_live_updates++;
	d->pending = x.pending;
	if (x.pending.active) {
		uint64_t now = now_usec(CLOCK_MONOTONIC);
		struct endpoint *ep = NULL;

		LIST_FOREACH (n, &d->conns) {
			struct endpoint *c = list_entry(n, struct endpoint, node);
			if (c->fd == x.pending.conn_fd)
				ep = c;
		}
		/* serialize: blackout start to execve(); exec: execve() to main(). */
		uint64_t t_exec = d->t_exec_usec ? d->t_exec_usec : d->t_main_usec;
		uint64_t serialize = t_exec - MIN(t_exec, x.pending.t_serialize_usec);
		uint64_t exec = d->t_main_usec - MIN(d->t_main_usec, t_exec);

		if (ep && x.pending.op == (uint32_t)LUO_IOCTL_REBOOT)
			reply_reboot(d, ep, &d->pending);
		else if (ep)
			reply_update(d, ep, &d->pending, rollback_error ? -rollback_error : 0,
				     x.exec_path[0] ? x.exec_path : NULL, serialize, exec,
				     now - t_restore, rollback_error != 0);
		d->pending.active = false;
	}
	log_info("%s: %zu sessions, %zu files, %zu connections (live update %" PRIu64 ")",
		 rollback_error ? "rolled back" : "restored", luod_n_sessions(d),
		 luo_engine_n_files(d->engine), d->conns.count, d->n_live_updates);
	return 0;
}
