/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's live update and reboot
 *
 * A live update is a recovery into another binary.  The journal is always
 * current, so nothing is serialized in the blackout:
 *
 *   1. outside the blackout, the target binary (the one given, or the one now
 *      installed at luod's path: an upgraded package) is asked whether it
 *      reads the journal: `BINARY --check-journal 3` runs in a child with the
 *      journal as fd 3, replays it without adopting fds, and must exit 0 and
 *      print "luod-state-ok".  luod goes on serving meanwhile (the child's
 *      pidfd is in the event loop; a second UPDATE or a REBOOT gets EBUSY).
 *      The update is an entry in the journal (LUOD_EXT_UPDATE) from the
 *      request on: a worker that dies during the check leaves it to its
 *      successor, which checks again.
 *   2. the worker stops at a clean point (between requests, everything
 *      committed): the entry says "exec", the binary goes in the keeper's
 *      area, and the worker exits LUOD_WORKER_EXIT_UPDATE.  The keeper
 *      execve()s the binary with the fd table intact (keeper.c).
 *   3. the new image's worker recovers from the journal like any worker,
 *      finds the entry and replies (liveupdate_resume()).  If it cannot
 *      recover, the keeper fexecve()s the previous binary, whose worker
 *      recovers and replies the error with rolled_back = 1.
 *
 * REBOOT is luo_engine_reboot() (a freeze error is replied, nothing
 * changes), written to the journal as a CLEAR and the whole new state; luod
 * goes on in the same process: every session fd of the previous generation
 * answers ESTALE from then on.
 */
#include <fcntl.h>
#include <inttypes.h>
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
#include "core/journal.h"
#include "luod.h"
#include "protocol/protocol.h"

#define CHECK_OK_TOKEN "luod-state-ok"
#define CHECK_TIMEOUT_USEC (UINT64_C(10) * 1000000)

extern char **environ;

/* ---- step 1: the check ---- */

/* The update's entry is gone: no update is under way. */
static void update_forget(struct luod *d)
{
	if (d->journal)
		journal_check(d, luo_journal_ext_del(d->journal, LUOD_EXT_UPDATE, 0));
}

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

/* Starts `binary --check-journal 3` with its stdout on a pipe; *ret_out is the read end. */
static int spawn_check(const char *binary, int memfd, pid_t *ret_pid, int *ret_out)
{
	_cleanup_close_ int out_r = -EBADF, out_w = -EBADF;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	char fdstr[16];
	char *argv[] = { (char *)binary, "--check-journal", fdstr, NULL };
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
	/* The checker gets the journal as fd 3 and nothing else luod holds (which
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
		log_warning("%s --check-journal died of signal %d", binary, WTERMSIG(status));
		return -ENOEXEC;
	}
	int code = WEXITSTATUS(status);
	if (code == 0) {
		/* An exit code alone proves little (/bin/true): it must say so. */
		if (strncmp(out, CHECK_OK_TOKEN, strlen(CHECK_OK_TOKEN)) != 0) {
			log_warning("%s --check-journal did not confirm the state", binary);
			return -ENOEXEC;
		}
		return 0;
	}
	log_warning("%s --check-journal refused the state (exit code %d)", binary, code);
	/* Our own checker exits with the errno; generic failures and exec errors say ENOEXEC. */
	if (code <= 2 || code >= 126)
		return -ENOEXEC;
	return -code;
}

static void update_stop(struct luod *d);

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
	_cleanup_close_ int out = -EBADF, pidfd = -EBADF;
	pid_t pid;
	int r;

	r = spawn_check(binary, d->journal_fd, &pid, &out);
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
	log_info("checking whether %s accepts the journal", binary);
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
		log_warning("%s --check-journal timed out", c->binary);
	if (r == 0)
		r = judge_check(c->binary, status, out);
	c->requester = NULL;
	if (!ep) {
		log_info("update to %s abandoned: its requester hung up", c->binary);
		update_forget(d);
		return;
	}
	if (r < 0) {
		log_warning("update to %s refused: %s", c->binary, strerror(-r));
		update_forget(d);
		endpoint_reply(d, ep, c->pr.tag, r, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	update_stop(d);
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

/* ---- step 2: the worker stops ---- */

static void keep_fd(int fd, void *userdata)
{
	(void)fd_set_cloexec(fd, false);
}

/*
 * Everything is committed (the event loop runs this between requests): mark
 * the update "exec", name the binary for the keeper and stop.  The fds the
 * journal names that are not inheritable from birth (FLB resources, fds
 * queued with replies) are made so for the keeper's execve().
 */
static void update_stop_now(struct luod *d);

/*
 * The check passed: compact first (in a child, luod serving meanwhile), so
 * that the new image replays only what comes after the snapshot, then stop.
 */
static void update_stop(struct luod *d)
{
	d->update_compactions = 0;
	if (d->compact_pid > 0 || compact_start(d, true) > 0) {
		d->update_after_compaction = true;
		return;
	}
	update_stop_now(d);
}

void liveupdate_compacted(struct luod *d)
{
	if (!d->update_after_compaction)
		return;
	d->update_after_compaction = false;
	/*
	 * The log has grown while the child wrote the snapshot: compact again,
	 * but not forever.  Under a steady load every compaction ends with a
	 * fresh log as long as the last one, and an update that waited for an
	 * empty log would never come; what is left is replayed in the blackout.
	 */
	if (++d->update_compactions < LUOD_UPDATE_COMPACTIONS && compact_start(d, true) > 0) {
		d->update_after_compaction = true;
		return;
	}
	update_stop_now(d);
}

static void update_stop_now(struct luod *d)
{
	struct ext_update u;
	const void *cur;
	size_t size;
	struct keeper_area *ka = luod_keeper_area(d);

	cur = luo_journal_ext_get(d->journal, LUOD_EXT_UPDATE, 0, &size);
	if (!cur || size != sizeof(u) || !ka)
		return;
	memcpy(&u, cur, sizeof(u));
	u.state = UPDATE_EXEC;
	journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_UPDATE, 0, &u, sizeof(u)));
	luo_engine_foreach_flb_fd(d->engine, keep_fd, NULL);
	LIST_FOREACH (i, &d->conns)
		for (struct outmsg *m = list_entry(i, struct endpoint, node)->out_head; m;
		     m = m->next)
			for (size_t k = 0; k < m->n_fds; k++)
				keep_fd(m->fds[k], NULL);
	LIST_FOREACH (i, &d->sessions)
		for (struct outmsg *m = list_entry(i, struct endpoint, node)->out_head; m;
		     m = m->next)
			for (size_t k = 0; k < m->n_fds; k++)
				keep_fd(m->fds[k], NULL);
	batch_foreach_fd(d, keep_fd, NULL);
	fault_point(d, "update-stop");
	snprintf(ka->update_binary, sizeof(ka->update_binary), "%s", u.binary);
	ka->update_error = 0;
	ka->rolled_back = 0;
	ka->t_stop_usec = now_usec(CLOCK_MONOTONIC);
	journal_commit(d);
	fault_point(d, "update-committed");
	log_info("live update: stopping the worker for %s", u.binary);
	d->update_exec = true;
	d->quit = true;
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
	struct keeper_area *ka = luod_keeper_area(d);
	int r;

	if (op == (uint32_t)LUO_IOCTL_REBOOT) {
		const struct luo_wire_reboot *rb = req;

		if (rb->reserved != 0) {
			endpoint_reply(d, ep, tag, -EINVAL, 0, NULL, 0, NULL, 0, -EBADF);
			return;
		}
		if (d->check.pid > 0 || luo_journal_ext_get(d->journal, LUOD_EXT_UPDATE, 0, NULL)) {
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
		journal_reset(d);
		batch_drop_stale(d);
		(void)uid_usage_recount(d);
		log_info("reboot: live update number %" PRIu64,
			 luo_engine_update_number(d->engine));
		reply_reboot(d, ep, &pr);
		return;
	}

	const struct luo_wire_update *u = req;
	struct ext_update e = {
		.state = UPDATE_CHECKING,
		.conn_fd = ep->fd,
		.tag = tag,
		.size = size,
		.t_request_usec = t_request,
	};

	if (u->flags != 0 || !memchr(u->exec_path, 0, sizeof(u->exec_path))) {
		endpoint_reply(d, ep, tag, -EINVAL, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	if (d->check.pid > 0 || luo_journal_ext_get(d->journal, LUOD_EXT_UPDATE, 0, NULL)) {
		/* One update at a time. */
		endpoint_reply(d, ep, tag, -EBUSY, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	/* Without a binary: the one installed at luod's path now (an upgraded
	 * package), not the image that runs. */
	snprintf(e.binary, sizeof(e.binary), "%s",
		 u->exec_path[0] ? u->exec_path : (ka ? ka->binary : ""));
	if (!e.binary[0]) {
		endpoint_reply(d, ep, tag, -ENOEXEC, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_UPDATE, 0, &e, sizeof(e)));
	/* 1: does the target read this journal?  luod goes on serving while it answers. */
	r = start_check(d, ep, e.binary, &pr);
	fault_point(d, "update-checking");
	if (r > 0)
		return;
	if (r < 0) {
		log_warning("update to %s refused: %s", e.binary, strerror(-r));
		update_forget(d);
		endpoint_reply(d, ep, tag, r, 0, NULL, 0, NULL, 0, -EBADF);
		return;
	}
	/* Checked synchronously (no pidfds): stop once this request is committed. */
	d->update_now = true;
}

void liveupdate_stop_if_due(struct luod *d)
{
	if (d->update_now) {
		d->update_now = false;
		update_stop(d);
	}
}

/* ---- step 3: the new image (or the same, after a crash) ---- */

int liveupdate_resume(struct luod *d, uint64_t t_start)
{
	struct keeper_area *ka = luod_keeper_area(d);
	struct ext_update u;
	const void *cur;
	struct endpoint *ep = NULL;
	size_t size;

	cur = luo_journal_ext_get(d->journal, LUOD_EXT_UPDATE, 0, &size);
	if (!cur)
		return 0;
	if (size != sizeof(u) || !ka) {
		update_forget(d);
		return 0;
	}
	memcpy(&u, cur, sizeof(u));
	u.binary[sizeof(u.binary) - 1] = 0;
	LIST_FOREACH (i, &d->conns)
		if (list_entry(i, struct endpoint, node)->fd == u.conn_fd)
			ep = list_entry(i, struct endpoint, node);
	struct pending_reply pr = {
		.active = true,
		.conn_fd = u.conn_fd,
		.op = LUO_IOCTL_UPDATE,
		.tag = u.tag,
		.size = u.size,
		.t_request_usec = u.t_request_usec,
		.state_size =
			luo_journal_snapshot_size(d->journal) + luo_journal_log_size(d->journal),
	};
	if (u.state == UPDATE_CHECKING) {
		/* The worker that was checking died: check again, for the same requester. */
		int r = ep ? start_check(d, ep, u.binary, &pr) : -ECONNRESET;

		if (r > 0)
			return 0;
		update_forget(d);
		if (r == 0) {
			journal_check(d, luo_journal_ext_put(d->journal, LUOD_EXT_UPDATE, 0, &u,
							     sizeof(u)));
			d->update_now = true;
		} else if (ep)
			endpoint_reply(d, ep, u.tag, r, 0, NULL, 0, NULL, 0, -EBADF);
		return 0;
	}

	/* The worker stopped for the update: this is the image after it. */
	uint64_t t_exec = ka->t_exec_usec ? ka->t_exec_usec : ka->t_stop_usec;
	uint64_t stop = t_exec - MIN(t_exec, ka->t_stop_usec);
	uint64_t exec = d->t_main_usec - MIN(d->t_main_usec, t_exec);
	uint64_t restore = d->t_recovered_usec - MIN(d->t_recovered_usec, t_start);
	int result = ka->update_error ? ka->update_error : -ka->rolled_back;
	bool rolled_back = ka->rolled_back != 0;

	if (result == 0) {
		ka->n_live_updates++;
		snprintf(ka->binary, sizeof(ka->binary), "%s", u.binary);
		ka->binary_since_usec = now_usec(CLOCK_REALTIME);
		log_info("live update to %s done: %zu sessions, %zu files, %zu connections",
			 u.binary, luod_n_sessions(d), luo_engine_n_files(d->engine),
			 d->conns.count);
	} else
		log_warning("live update to %s failed: %s%s", u.binary, strerror(-result),
			    rolled_back ? " (rolled back)" : "");
	ka->update_error = 0;
	ka->rolled_back = 0;
	ka->t_exec_usec = 0;
	memset(ka->update_binary, 0, sizeof(ka->update_binary));
	update_forget(d);
	if (ep)
		reply_update(d, ep, &pr, result, u.binary, stop, exec, restore, rolled_back);
	return 0;
}

int liveupdate_check_journal(int fd)
{
	struct stat st;
	luo_engine *e = NULL;
	void *m;
	int r;

	if (fstat(fd, &st) < 0)
		return negative_errno();
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return negative_errno();
	r = luo_engine_new(&e);
	if (r >= 0)
		r = luo_engine_add_default_handlers(e);
	if (r >= 0)
		r = luo_journal_recover_mem(m, (size_t)st.st_size, e, LUO_JOURNAL_BORROW_FDS, NULL,
					    NULL, NULL);
	luo_engine_free(e);
	munmap(m, (size_t)st.st_size);
	return r;
}
