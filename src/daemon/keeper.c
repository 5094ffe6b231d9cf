/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the keeper: the process that keeps luod's fd table alive
 *
 * luod is two processes sharing one file descriptor table
 * (clone(CLONE_FILES), without CLONE_VM): the keeper, whose pid is luod's
 * (pid file, service manager, `luoctl status`), and its worker, which does
 * everything else (worker.c).  Every fd luod holds (the listening socket,
 * connections, session sockets, preserved files, the journal) is in the
 * shared table, so while the keeper lives none of them closes, whatever
 * happens to the worker.  The keeper reads no peer input and allocates
 * nothing per request: it waits.
 *
 *   worker exits 0 (it got SIGTERM)          -> luod ends
 *   worker exits LUOD_WORKER_EXIT_UPDATE     -> execve() the binary named in the
 *                                               journal's owner area, table intact
 *   worker exits LUOD_WORKER_EXIT_RECOVERY,  -> after an update: fexecve() the
 *   or dies before it serves, after update      previous binary (rollback)
 *   worker dies any other way               -> a new worker, at once; more than
 *                                               LUOD_STORM_DEATHS deaths within
 *                                               LUOD_STORM_WINDOW_USEC: give up
 *                                               (LUOD_EXIT_WORKER_FAILED)
 *
 * SIGTERM or SIGINT to the keeper is passed on to the worker, which drops
 * the sessions (logging each) and exits 0.  The keeper is a child
 * subreaper, so that whatever a dead worker had started (an update's
 * checker, a compaction) is reaped here.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "luod.h"

extern char **environ;

/* Maps the owner area of the journal in fd (the current one: compaction moves
 * a new journal onto the same fd number, so it is mapped anew each time). */
static struct keeper_area *area_map(int journal_fd)
{
	void *m = mmap(NULL, LUO_JOURNAL_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		       journal_fd, 0);

	if (m == MAP_FAILED)
		return NULL;
	return (struct keeper_area *)((struct luo_journal_header *)m)->owner;
}

static void area_unmap(struct keeper_area *ka)
{
	if (ka)
		munmap((uint8_t *)ka - offsetof(struct luo_journal_header, owner),
		       LUO_JOURNAL_HEADER_SIZE);
}

int keeper_area_init(int journal_fd, const char *binary)
{
	struct keeper_area *ka = area_map(journal_fd);

	if (!ka)
		return negative_errno();
	memset(ka, 0, sizeof(*ka));
	ka->magic = LUOD_KEEPER_MAGIC;
	ka->started_usec = ka->binary_since_usec = now_usec(CLOCK_REALTIME);
	snprintf(ka->binary, sizeof(ka->binary), "%s", binary);
	area_unmap(ka);
	return 0;
}

static pid_t spawn_worker(struct luod *d)
{
	pid_t pid;

	fflush(NULL);
	/* fork() with the fd table shared instead of copied. */
	pid = (pid_t)syscall(SYS_clone, CLONE_FILES | SIGCHLD, NULL, NULL, NULL, NULL);
	if (pid != 0)
		return pid < 0 ? -errno : pid;
	_exit(worker_main(d));
}

static void close_keeper_fd(struct luod *d, int *fd)
{
	for (size_t i = 0; i < d->n_keeper_fds; i++)
		if (d->keeper_fds[i] == *fd)
			d->keeper_fds[i] = -1;
	*fd = safe_close(*fd);
}

static void add_keeper_fd(struct luod *d, int fd)
{
	for (size_t i = 0; i < d->n_keeper_fds; i++)
		if (d->keeper_fds[i] < 0) {
			d->keeper_fds[i] = fd;
			return;
		}
	if (d->n_keeper_fds < ELEMENTSOF(d->keeper_fds))
		d->keeper_fds[d->n_keeper_fds++] = fd;
}

/* Builds the argument list of the next image: internal options first. */
static char **exec_args(struct luod *d, const char *argv0, int previous_exe_fd, int rolled_back)
{
	size_t n = 0, max = (size_t)d->n_args + 8;
	char **a = calloc(max, sizeof(char *));

	if (!a)
		return NULL;
	a[n++] = strdup(argv0);
	if (asprintf(&a[n++], "--resume=%d", d->journal_fd) < 0 ||
	    asprintf(&a[n++], "--listen-fd=%d", d->listen_ep.fd) < 0)
		goto fail;
	if (previous_exe_fd >= 0 && asprintf(&a[n++], "--previous-exe=%d", previous_exe_fd) < 0)
		goto fail;
	if (rolled_back && asprintf(&a[n++], "--rolled-back=%d", rolled_back) < 0)
		goto fail;
	for (int i = 0; i < d->n_args; i++)
		a[n++] = strdup(d->args[i]);
	for (size_t i = 0; i < n; i++)
		if (!a[i])
			goto fail;
	return a;
fail:
	for (size_t i = 0; i < max; i++)
		free(a[i]);
	free(a);
	return NULL;
}

static void free_args(char **a)
{
	for (size_t i = 0; a && a[i]; i++)
		free(a[i]);
	free(a);
}

/* Replaces the keeper's image; returns only on failure, with -errno. */
static int keeper_exec(struct luod *d, const char *binary, int exe_fd, int previous_exe_fd,
		       int rolled_back)
{
	char **args = exec_args(d, binary, previous_exe_fd, rolled_back);
	struct keeper_area *ka;
	int r;

	if (!args)
		return -ENOMEM;
	ka = area_map(d->journal_fd);
	if (ka) {
		ka->t_exec_usec = now_usec(CLOCK_MONOTONIC);
		area_unmap(ka);
	}
	/* The fds luod keeps are inheritable from birth; the keeper's own
	 * (signalfd, readiness pipe) are close-on-exec. */
	if (exe_fd >= 0)
		fexecve(exe_fd, args, environ);
	else
		execve(binary, args, environ);
	r = -errno;
	free_args(args);
	return r;
}

struct keeper_state {
	int signal_fd;
	int ready_r, ready_w;
	pid_t worker;
	bool worker_ready;
	uint64_t deaths[LUOD_STORM_DEATHS];
	size_t n_deaths;
	bool after_update; /* this image came from an update: it may roll back */
	int previous_exe_fd;
	dev_t previous_dev; /* the file previous_exe_fd was at start */
	ino_t previous_ino;
};

static int new_ready_pipe(struct luod *d, struct keeper_state *k)
{
	int p[2];

	if (k->ready_w >= 0)
		close_keeper_fd(d, &k->ready_w);
	if (k->ready_r >= 0)
		close_keeper_fd(d, &k->ready_r);
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return negative_errno();
	k->ready_r = p[0];
	k->ready_w = p[1];
	add_keeper_fd(d, p[0]);
	add_keeper_fd(d, p[1]);
	d->ready_fd = p[1];
	return 0;
}

/* A death counts toward the storm limit; true if the limit is reached. */
static bool storm(struct keeper_state *k)
{
	uint64_t now = now_usec(CLOCK_MONOTONIC);

	if (k->n_deaths == LUOD_STORM_DEATHS) {
		memmove(k->deaths, k->deaths + 1, (LUOD_STORM_DEATHS - 1) * sizeof(uint64_t));
		k->n_deaths--;
	}
	k->deaths[k->n_deaths++] = now;
	return k->n_deaths == LUOD_STORM_DEATHS && now - k->deaths[0] < LUOD_STORM_WINDOW_USEC;
}

static void describe_status(int status, char *buf, size_t size)
{
	if (WIFSIGNALED(status))
		snprintf(buf, size, "killed by signal %d (%s)%s", WTERMSIG(status),
			 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
	else
		snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
}

/* Whether previous_exe_fd is still the previous binary's (the new image's
 * worker closes it once it has recovered, and the number may be reused). */
static bool previous_held(const struct keeper_state *k)
{
	struct stat st;

	return k->previous_exe_fd >= 0 && fstat(k->previous_exe_fd, &st) == 0 &&
	       st.st_dev == k->previous_dev && st.st_ino == k->previous_ino;
}

/* The updated binary recovered: no rollback from now on; the fd is the
 * worker's to close (it did, or its successor's fd number reuse is not ours). */
static void forget_previous(struct luod *d, struct keeper_state *k)
{
	for (size_t i = 0; i < d->n_keeper_fds; i++)
		if (d->keeper_fds[i] == k->previous_exe_fd)
			d->keeper_fds[i] = -1;
	k->previous_exe_fd = -1;
	d->previous_exe_fd = -EBADF;
	k->after_update = false;
}

/* Rolls back to the previous binary after a failed update; returns only if it
 * cannot (then the failure is logged and the current binary goes on). */
static void roll_back(struct luod *d, struct keeper_state *k, int error)
{
	struct keeper_area *ka = area_map(d->journal_fd);
	char previous[512] = "";
	int r;

	if (ka) {
		ka->rolled_back = error;
		snprintf(previous, sizeof(previous), "%s", ka->update_binary);
		area_unmap(ka);
	}
	/* The new image's worker closes the fd once it has recovered: a number
	 * that is not the previous binary any more is nothing to execute. */
	if (!previous_held(k)) {
		log_error("the updated binary's worker died (%s), and the previous binary is "
			  "no longer held: starting another worker of the updated binary",
			  strerror(error));
		return;
	}
	log_error("the updated binary cannot recover the journal (%s): rolling back",
		  strerror(error));
#ifdef LUOD_FAULT_INJECTION
	/* Injected faults belong to the image they were given to. */
	unsetenv("LUOD_FAULT");
#endif
	r = keeper_exec(d, d->self_path, k->previous_exe_fd, -1, error);
	log_error("cannot roll back: %s", strerror(-r));
}

/* The worker ended with status: what the keeper does next. 0: start another. */
static int worker_ended(struct luod *d, struct keeper_state *k, int status, int *ret_code)
{
	char how[128];
	struct keeper_area *ka;
	bool was_ready = k->worker_ready;

	k->worker = 0;
	k->worker_ready = false;
	describe_status(status, how, sizeof(how));
	/* It died after it recovered (and closed the previous binary's fd) but
	 * before the keeper read that it serves: an ordinary death. */
	if (k->after_update && !previous_held(k)) {
		forget_previous(d, k);
		was_ready = true;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == LUOD_WORKER_EXIT_SHUTDOWN) {
		*ret_code = LUOD_EXIT_OK;
		return 1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == LUOD_WORKER_EXIT_UPDATE) {
		char binary[512];
		int exe_fd, r;

		ka = area_map(d->journal_fd);
		if (!ka) {
			log_error("cannot map the journal: %m");
			*ret_code = LUOD_EXIT_FAILURE;
			return 1;
		}
		memcpy(binary, ka->update_binary, sizeof(binary));
		binary[sizeof(binary) - 1] = 0;
		area_unmap(ka);
		/* The running image, for a rollback: inheritable, named in the next image's
		 * arguments. */
		exe_fd = open("/proc/self/exe", O_RDONLY);
		log_info("live update: executing %s", binary);
		r = keeper_exec(d, binary, -1, exe_fd, 0);
		safe_close(exe_fd);
		log_error("live update to %s failed: %s", binary, strerror(-r));
		ka = area_map(d->journal_fd);
		if (ka) {
			ka->update_error = r;
			area_unmap(ka);
		}
		return 0; /* the next worker replies the error */
	}
	if (k->after_update && !was_ready) {
		int error = WIFEXITED(status) && WEXITSTATUS(status) == LUOD_WORKER_EXIT_RECOVERY
				    ? EPROTONOSUPPORT
				    : EIO;

		log_error("worker %s before it served", how);
		if (error == EPROTONOSUPPORT || storm(k))
			roll_back(d, k, error);
		/* Not a refusal but a death: it counts like any other worker's. */
		ka = error == EIO ? area_map(d->journal_fd) : NULL;
		if (ka) {
			ka->n_worker_restarts++;
			area_unmap(ka);
		}
		return 0;
	}
	ka = area_map(d->journal_fd);
	if (ka) {
		ka->n_worker_restarts++;
		area_unmap(ka);
	}
	if (storm(k)) {
		log_error("worker %s; it died %d times within %" PRIu64
			  " s: giving up (every session is lost)",
			  how, LUOD_STORM_DEATHS, LUOD_STORM_WINDOW_USEC / 1000000);
		*ret_code = LUOD_EXIT_WORKER_FAILED;
		return 1;
	}
	log_warning("worker %s: starting a new one, which recovers from the journal", how);
	return 0;
}

static void forward_signal(struct keeper_state *k, int sig)
{
	if (k->worker > 0)
		(void)kill(k->worker, sig);
}

int keeper_run(struct luod *d, int previous_exe_fd, void (*on_ready)(struct luod *d))
{
	struct keeper_state k = {
		.signal_fd = -1,
		.ready_r = -1,
		.ready_w = -1,
		.after_update = previous_exe_fd >= 0,
		.previous_exe_fd = previous_exe_fd,
	};
	bool shutting_down = false;
	sigset_t mask;
	int code = LUOD_EXIT_FAILURE, r;

	(void)prctl(PR_SET_NAME, "luod");
	(void)prctl(PR_SET_CHILD_SUBREAPER, 1);
	/* The OOM killer must take the worker, which can be replaced, never the
	 * keeper, whose death loses everything (lowering needs privilege: as root). */
	luod_set_oom_score_adj("-1000");
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	(void)sigprocmask(SIG_BLOCK, &mask, NULL);
	k.signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (k.signal_fd < 0) {
		log_error("signalfd: %m");
		return LUOD_EXIT_FAILURE;
	}
	add_keeper_fd(d, k.signal_fd);
	add_keeper_fd(d, d->listen_ep.fd);
	add_keeper_fd(d, d->journal_fd);
	if (previous_exe_fd >= 0) {
		struct stat st;

		add_keeper_fd(d, previous_exe_fd);
		if (fstat(previous_exe_fd, &st) == 0) {
			k.previous_dev = st.st_dev;
			k.previous_ino = st.st_ino;
		}
	}
	/* The worker of an updated binary closes it once it has recovered. */
	d->previous_exe_fd = previous_exe_fd;

	for (;;) {
		struct pollfd p[2];

		if (k.worker == 0 && !shutting_down) {
			r = new_ready_pipe(d, &k);
			if (r >= 0) {
				d->keeper_pid = getpid();
				r = spawn_worker(d);
			}
			if (r < 0) {
				log_error("cannot start a worker: %s", strerror(-r));
				code = LUOD_EXIT_FAILURE;
				break;
			}
			k.worker = r;
		}
		p[0] = (struct pollfd){ .fd = k.signal_fd, .events = POLLIN };
		p[1] = (struct pollfd){ .fd = k.worker_ready ? -1 : k.ready_r, .events = POLLIN };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %m");
			break;
		}
		if (p[1].revents & POLLIN) {
			char c;

			if (read(k.ready_r, &c, 1) == 1 && !k.worker_ready) {
				k.worker_ready = true;
				/* The updated binary recovered, and its worker closed
				 * the previous binary's fd before it said so (so that the
				 * update's requester, answered then, finds luod's fds as
				 * they will stay): no rollback from now on. */
				if (k.previous_exe_fd >= 0)
					forget_previous(d, &k);
				if (on_ready)
					on_ready(d);
			}
		}
		if (!(p[0].revents & POLLIN))
			continue;
		struct signalfd_siginfo si;
		bool ended = false;

		while (read(k.signal_fd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
				log_info("received signal %u: shutting down", si.ssi_signo);
				shutting_down = true;
				forward_signal(&k, SIGTERM);
			}
		}
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);

			if (pid <= 0)
				break;
			if (pid != k.worker)
				continue; /* a dead worker's checker or compaction */
			if (shutting_down) {
				k.worker = 0;
				code = LUOD_EXIT_OK;
				ended = true;
				break;
			}
			if (worker_ended(d, &k, status, &code) > 0) {
				ended = true;
				break;
			}
		}
		if (ended)
			break;
	}
	if (k.worker > 0) {
		(void)kill(k.worker, SIGKILL);
		(void)waitpid(k.worker, NULL, 0);
	}
	close_keeper_fd(d, &k.signal_fd);
	if (k.ready_r >= 0)
		close_keeper_fd(d, &k.ready_r);
	if (k.ready_w >= 0)
		close_keeper_fd(d, &k.ready_w);
	if (k.previous_exe_fd >= 0)
		close_keeper_fd(d, &k.previous_exe_fd);
	return code;
}
