/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's kernel mode: a real kexec through /dev/liveupdate
 *
 * On a kernel with /dev/liveupdate, `luoctl kexec` (LUO_CMD_KEXEC) takes
 * luod's sessions through a real kexec (docs/kernel-mode.md):
 *
 *   1. the sessions that cross are those luo_engine_reboot() carries, decided
 *      by that function itself: luod's state is copied into a scratch engine
 *      that borrows the fds, and the scratch engine is rebooted (freezes
 *      included).  luod's own engine is not touched;
 *   2. luod opens the device (retrying while another opener holds it), and
 *      for the N-th crossing session creates the kernel session "luod-N" and
 *      preserves there every file of it, under its token.  A file no kernel
 *      handler takes fails the kexec with the list of such files, unless the
 *      caller agreed to leave them behind;
 *   3. the scratch engine's state (names, owners, flags, tokens, handler
 *      records, the live update number + 1) goes into a sealed memfd,
 *      preserved as token 0 of the kernel session "luod";
 *   4. kexec_file_load() and reboot(LINUX_REBOOT_CMD_KEXEC), holding every
 *      session fd.
 *
 * Any failure before the reboot closes the kernel sessions (the kernel
 * unpreserves their files), unloads the kernel and closes the device: luod
 * goes on as before, its journal untouched.
 *
 * In the new kernel, the first worker of a luod started afresh (not
 * --resume) opens the device, retrieves "luod", decodes the state with each
 * file taken from "luod-N" (luo_state_decode_mapped()), journals the result,
 * then finishes and closes the kernel sessions and the device.  Kernel
 * sessions of other names are not touched.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "basic/fd-util.h"
#include "basic/macro.h"
#include "core/state.h"
#include "luo/uapi.h"
#include "luod.h"
#include "protocol/protocol.h"

#ifndef KEXEC_FILE_UNLOAD
#define KEXEC_FILE_UNLOAD 0x00000001
#endif
#ifndef KEXEC_FILE_NO_INITRAMFS
#define KEXEC_FILE_NO_INITRAMFS 0x00000004
#endif
#ifndef RB_KEXEC
#define RB_KEXEC 0x45584543
#endif

#define DEVICE_RETRY_USEC (UINT64_C(100) * 1000)
#define DEVICE_RETRIES 30

/* The memfd handler's compatible: the only kind of file the kernel carries. */
#define KERNEL_FILE_KIND "memfd-v1"

const char *luod_device_path(void)
{
#ifdef LUOD_FAULT_INJECTION
	/* Test builds: another device stands in for the kernel's. */
	const char *p = getenv("LUOD_LIVEUPDATE_DEVICE");

	if (p && p[0])
		return p;
#endif
	return "/dev/liveupdate";
}

int luod_device_open(void)
{
	for (int i = 0;; i++) {
		int fd = open(luod_device_path(), O_RDWR | O_CLOEXEC | O_NOCTTY);

		if (fd >= 0)
			return fd;
		if (errno == ENOENT || errno == ENXIO || errno == ENODEV)
			return -ENODEV;
		/* One opener at a time in the whole system (systemd may hold it): wait a little. */
		if (errno != EBUSY || i == DEVICE_RETRIES) {
			int r = negative_errno();

			if (r == -EBUSY)
				log_warning("%s: another process holds it (tried for %.1f s)",
					    luod_device_path(),
					    (double)(DEVICE_RETRIES * DEVICE_RETRY_USEC) / 1e6);
			return r;
		}
		nanosleep(&(struct timespec){ .tv_nsec = DEVICE_RETRY_USEC * 1000 }, NULL);
	}
}

static int kernel_session(int dev, unsigned long op, const char *name, int *ret_fd)
{
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c) };

	/* Both structs have the same layout. */
	_Static_assert(sizeof(struct liveupdate_ioctl_create_session) ==
			       sizeof(struct liveupdate_ioctl_retrieve_session),
		       "session structs");
	snprintf((char *)c.name, sizeof(c.name), "%s", name);
	if (ioctl(dev, op, &c) < 0)
		return negative_errno();
	*ret_fd = c.fd;
	return 0;
}

/* ---- before the kexec ---- */

struct kexec_out {
	struct luod *d;
	luo_engine *next; /* the state after the reboot: borrows luod's fds */
	int dev;
	int *fds; /* kernel sessions created, and the state memfd */
	size_t n_fds;
	struct luo_wire_kexec_file *refused;
	size_t n_refused, cap_refused;
	uint64_t n_refused_total;
	uint64_t n_files, n_kernel_files;
	bool drop;
	bool kinds_only; /* the first pass: refuse by kind, before the kernel is asked */
	/* the session being filled */
	const luo_session *s;
	int session_fd;
};

static int out_keep_fd(struct kexec_out *o, int fd)
{
	int *p = realloc(o->fds, (o->n_fds + 1) * sizeof(*p));

	if (!p) {
		safe_close(fd);
		return -ENOMEM;
	}
	o->fds = p;
	o->fds[o->n_fds++] = fd;
	return 0;
}

static int out_refuse(struct kexec_out *o, const struct luo_file_info *fi, int error)
{
	struct luo_wire_kexec_file *e;

	o->n_refused_total++;
	if (o->n_refused == LUO_KEXEC_REFUSED_MAX)
		return 0;
	if (o->n_refused == o->cap_refused) {
		size_t cap = o->cap_refused ? o->cap_refused * 2 : 16;

		e = realloc(o->refused, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		o->refused = e;
		o->cap_refused = cap;
	}
	e = &o->refused[o->n_refused++];
	memset(e, 0, sizeof(*e));
	snprintf((char *)e->name, sizeof(e->name), "%s", luo_session_name(o->s));
	e->uid = luo_session_uid(o->s);
	e->error = error;
	e->token = fi->token;
	snprintf(e->kind, sizeof(e->kind), "%s", fi->compatible);
	return 0;
}

static int preserve_file(const struct luo_file_info *fi, void *userdata)
{
	struct kexec_out *o = userdata;
	struct liveupdate_session_preserve_fd p = {
		.size = sizeof(p),
		.fd = fi->fd,
		.token = fi->token,
	};
	int r;

	if (fi->fd < 0)
		return 0; /* nothing left of it (a failed retrieve): nothing to carry */
	if (o->kinds_only) {
		o->n_files++;
		/* What the kernel answers for a file no handler of its takes. */
		return strcmp(fi->compatible, KERNEL_FILE_KIND) != 0 ? out_refuse(o, fi, -ENOENT)
								     : 0;
	}
	if (strcmp(fi->compatible, KERNEL_FILE_KIND) != 0)
		return 0; /* refused in the first pass */
	if (ioctl(o->session_fd, LIVEUPDATE_SESSION_PRESERVE_FD, &p) < 0) {
		r = negative_errno();
		/* No handler, seals it cannot restore, already preserved by someone else. */
		if (r == -ENOENT || r == -EOPNOTSUPP || r == -EBUSY)
			return out_refuse(o, fi, r);
		log_warning("kexec: the kernel refused file %" PRIu64 " of session \"%s\": %s",
			    fi->token, luo_session_name(o->s), strerror(-r));
		return r;
	}
	o->n_kernel_files++;
	return 0;
}

/* Puts luod's state after the reboot into a sealed memfd, preserved in the session "luod". */
static int preserve_state(struct kexec_out *o)
{
	_cleanup_free_ void *blob = NULL;
	_cleanup_close_ int mfd = -EBADF;
	struct liveupdate_session_preserve_fd p = { .size = sizeof(p), .token = 0 };
	size_t size, done = 0;
	int sfd, r;

	r = luo_state_encode(o->next, NULL, &blob, &size);
	if (r < 0)
		return r;
	mfd = memfd_create("luod-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return negative_errno();
	while (done < size) {
		ssize_t n = write(mfd, (const uint8_t *)blob + done, size - done);

		if (n < 0)
			return negative_errno();
		done += (size_t)n;
	}
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		return negative_errno();
	r = kernel_session(o->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, LUOD_KERNEL_SESSION, &sfd);
	if (r < 0)
		return r;
	r = out_keep_fd(o, sfd);
	if (r < 0)
		return r;
	p.fd = mfd;
	if (ioctl(sfd, LIVEUPDATE_SESSION_PRESERVE_FD, &p) < 0)
		return negative_errno();
	log_info("kexec: %zu bytes of state in the kernel session \"%s\"", size,
		 LUOD_KERNEL_SESSION);
	return 0;
}

/* Builds the state after the reboot, from luod's, without touching luod's engine. */
static int next_state(struct luod *d, luo_engine **ret)
{
	_cleanup_free_ void *blob = NULL;
	luo_engine *e = NULL;
	size_t size;
	int r;

	r = luo_state_encode(d->engine, NULL, &blob, &size);
	if (r < 0)
		return r;
	r = luo_engine_new(&e);
	if (r >= 0)
		r = luo_engine_add_default_handlers(e);
	if (r >= 0)
		r = luo_state_decode(e, blob, size, LUO_STATE_BORROW_FDS, NULL);
	/* The rule of `luoctl reboot`, from the same function. */
	if (r >= 0)
		r = luo_engine_reboot(e);
	if (r < 0) {
		luo_engine_free(e);
		return r;
	}
	*ret = e;
	return 0;
}

static void reply_refused(struct luod *d, struct endpoint *ep, uint32_t tag,
			  struct luo_wire_kexec *k, uint32_t size, const struct kexec_out *o)
{
	/* Whole entries per message, within the reply's limit. */
	const size_t per = (LUO_WIRE_REPLY_MAX - sizeof(struct luo_wire_reply)) /
			   sizeof(struct luo_wire_kexec_file);

	k->n_refused = o->n_refused_total;
	endpoint_reply(d, ep, tag, -EOPNOTSUPP, LUO_WIRE_REPLY_MORE, k, MIN(size, sizeof(*k)), NULL,
		       0, -EBADF);
	for (size_t i = 0; i == 0 || i < o->n_refused; i += per) {
		size_t n = MIN(per, o->n_refused - i);

		endpoint_reply(d, ep, tag, 0, i + n < o->n_refused ? LUO_WIRE_REPLY_MORE : 0,
			       o->refused + i, n * sizeof(*o->refused), NULL, 0, -EBADF);
	}
}

static int do_kexec(struct luod *d, struct kexec_out *o, struct luo_wire_kexec *k, int kernel_fd,
		    int initrd_fd, bool *ret_loaded)
{
	size_t index = 0;
	int r;

	r = next_state(d, &o->next);
	if (r < 0) {
		log_warning("kexec refused: %s", strerror(-r));
		return r;
	}
	k->n_sessions = luo_engine_n_sessions(o->next, LUO_SESSION_INCOMING);
	/* Files of a kind the kernel has no handler for fail before it is asked anything. */
	o->kinds_only = true;
	for (const luo_session *s = luo_engine_first_session(o->next, LUO_SESSION_INCOMING); s;
	     s = luo_session_next(s)) {
		o->s = s;
		r = luo_session_foreach_file(s, preserve_file, o);
		if (r < 0)
			return r;
	}
	k->n_files = o->n_files;
	if (o->n_refused_total > 0 && !o->drop)
		return -EOPNOTSUPP;
	o->kinds_only = false;
	for (const luo_session *s = luo_engine_first_session(o->next, LUO_SESSION_INCOMING); s;
	     s = luo_session_next(s), index++) {
		char name[LUO_NAME_FIELD];

		snprintf(name, sizeof(name), LUOD_KERNEL_SESSION "-%zu", index);
		r = kernel_session(o->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, name, &o->session_fd);
		if (r < 0) {
			log_warning("kexec: cannot create the kernel session \"%s\": %s", name,
				    strerror(-r));
			return r;
		}
		r = out_keep_fd(o, o->session_fd);
		if (r < 0)
			return r;
		o->s = s;
		r = luo_session_foreach_file(s, preserve_file, o);
		if (r < 0)
			return r;
	}
	if (o->n_refused_total > 0 && !o->drop)
		return -EOPNOTSUPP;
	for (size_t i = 0; i < o->n_refused; i++)
		log_warning("kexec: leaving file %" PRIu64 " (%s) of session \"%s\" of uid %u "
			    "behind: %s",
			    o->refused[i].token, o->refused[i].kind, o->refused[i].name,
			    (unsigned)o->refused[i].uid, strerror(-o->refused[i].error));
	r = preserve_state(o);
	if (r < 0) {
		log_warning("kexec: cannot preserve luod's state: %s", strerror(-r));
		return r;
	}
	size_t len = strlen(k->cmdline);
	if (syscall(SYS_kexec_file_load, kernel_fd, initrd_fd, len + 1, k->cmdline,
		    initrd_fd < 0 ? KEXEC_FILE_NO_INITRAMFS : 0) < 0) {
		r = negative_errno();
		log_warning("kexec: kexec_file_load() failed: %s", strerror(-r));
		return r;
	}
	*ret_loaded = true;
	log_info("kexec: rebooting into the new kernel with %" PRIu64 " sessions, %" PRIu64
		 " files in the kernel (%" PRIu64 " left behind), live update number %" PRIu64,
		 k->n_sessions, o->n_kernel_files, o->n_refused_total,
		 luo_engine_update_number(o->next));
	sync();
	/* Holding every session fd: the kernel carries what is open now. */
	if (reboot(RB_KEXEC) < 0) {
		r = negative_errno();
		log_warning("kexec: reboot() failed: %s", strerror(-r));
		return r;
	}
	return 0; /* not reached: the machine is the new kernel's now */
}

void kexec_request(struct luod *d, struct endpoint *ep, uint32_t tag, struct luo_wire_kexec *k,
		   uint32_t size, int *fds, size_t n_fds)
{
	struct kexec_out o = { .d = d, .dev = -EBADF, .session_fd = -EBADF };
	bool loaded = false;
	int r;

	if (ep->uid != 0)
		r = -EPERM;
	else if ((k->flags & ~LUO_KEXEC_FLAGS_ALL) || !memchr(k->cmdline, 0, sizeof(k->cmdline)))
		r = -EINVAL;
	else if (d->check.pid > 0 || luo_journal_ext_get(d->journal, LUOD_EXT_UPDATE, 0, NULL))
		r = -EBUSY; /* an update is being prepared */
	else {
		o.drop = k->flags & LUO_KEXEC_DROP_UNSUPPORTED;
		/* Sessions whose last fd was closed before the request are gone, as in
		 * the kernel: take in their hang-ups before anything crosses. */
		while (server_reap_hangups(d, ep) > 0)
			;
		o.dev = luod_device_open();
		r = o.dev < 0 ? o.dev : 0;
		if (r == -ENODEV)
			log_warning("kexec refused: this kernel has no %s", luod_device_path());
		if (r >= 0)
			r = do_kexec(d, &o, k, fds[0], n_fds > 1 ? fds[1] : -EBADF, &loaded);
	}

	/* Still here: nothing happened.  The kernel drops the sessions as they close. */
	if (loaded && syscall(SYS_kexec_file_load, -1, -1, 0, NULL, KEXEC_FILE_UNLOAD) < 0)
		log_warning("kexec: cannot unload the new kernel: %m");
	for (size_t i = 0; i < o.n_fds; i++)
		safe_close(o.fds[i]);
	free(o.fds);
	safe_close(o.dev);
	luo_engine_free(o.next);
	luod_close_later_many(d, fds, n_fds);
	if (r == -EOPNOTSUPP && o.n_refused_total > 0)
		reply_refused(d, ep, tag, k, size, &o);
	else
		endpoint_reply(d, ep, tag, r < 0 ? r : -EIO, 0, NULL, 0, NULL, 0, -EBADF);
	free(o.refused);
}

/* ---- after the kexec ---- */

struct kexec_in {
	int dev;
	int *sessions; /* "luod-N" by N, -EBADF before its first file */
	size_t n_sessions;
	int *files; /* what the map gave, closed if the decode fails */
	size_t n_files;
	size_t n_missing;
};

static int map_file(size_t index, uint64_t token, int *ret_fd, void *userdata)
{
	struct kexec_in *in = userdata;
	struct liveupdate_session_retrieve_fd rf = { .size = sizeof(rf), .token = token };
	int r, *p;

	if (index >= in->n_sessions) {
		size_t n = index + 1;

		p = realloc(in->sessions, n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		for (size_t i = in->n_sessions; i < n; i++)
			p[i] = -EBADF;
		in->sessions = p;
		in->n_sessions = n;
	}
	if (in->sessions[index] == -EBADF) {
		char name[LUO_NAME_FIELD];

		snprintf(name, sizeof(name), LUOD_KERNEL_SESSION "-%zu", index);
		r = kernel_session(in->dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, name,
				   &in->sessions[index]);
		if (r < 0) {
			log_warning("kexec: the kernel session \"%s\" is missing: %s", name,
				    strerror(-r));
			in->sessions[index] = -ENOENT;
		}
	}
	if (in->sessions[index] < 0) {
		in->n_missing++;
		return -ENOENT;
	}
	p = realloc(in->files, (in->n_files + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	in->files = p;
	if (ioctl(in->sessions[index], LIVEUPDATE_SESSION_RETRIEVE_FD, &rf) < 0) {
		/* Left behind at the kexec (--drop-unsupported), or lost. */
		in->n_missing++;
		return -ENOENT;
	}
	in->files[in->n_files++] = rf.fd;
	*ret_fd = rf.fd;
	return 0;
}

static void finish_session(int fd, const char *name)
{
	struct liveupdate_session_finish f = { .size = sizeof(f) };

	if (fd >= 0 && ioctl(fd, LIVEUPDATE_SESSION_FINISH, &f) < 0)
		log_warning("kexec: cannot finish the kernel session \"%s\": %m", name);
	safe_close(fd);
}

static int restore(struct luod *d, struct kexec_in *in)
{
	struct liveupdate_session_retrieve_fd rf = { .size = sizeof(rf), .token = 0 };
	_cleanup_close_ int state_fd = -EBADF;
	int luod_fd = -EBADF, r;
	struct stat st;
	void *m;

	r = kernel_session(in->dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, LUOD_KERNEL_SESSION,
			   &luod_fd);
	if (r == -ENOENT)
		return 0; /* no kexec of luod's brought anything */
	if (r < 0) {
		log_warning("kexec: cannot retrieve the kernel session \"%s\": %s",
			    LUOD_KERNEL_SESSION, strerror(-r));
		return r;
	}
	if (ioctl(luod_fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &rf) < 0) {
		r = negative_errno();
		log_error("kexec: the kernel session \"%s\" holds no state: %s",
			  LUOD_KERNEL_SESSION, strerror(-r));
		finish_session(luod_fd, LUOD_KERNEL_SESSION);
		return r;
	}
	state_fd = rf.fd;
	if (fstat(state_fd, &st) < 0 || st.st_size <= 0 ||
	    (uint64_t)st.st_size > LUO_STATE_MAX_SIZE) {
		log_error("kexec: the state the kexec carried has a bad size");
		finish_session(luod_fd, LUOD_KERNEL_SESSION);
		return -EBADMSG;
	}
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, state_fd, 0);
	if (m == MAP_FAILED) {
		r = negative_errno();
		finish_session(luod_fd, LUOD_KERNEL_SESSION);
		return r;
	}
	r = luo_state_decode_mapped(d->engine, m, (size_t)st.st_size, map_file, in);
	munmap(m, (size_t)st.st_size);
	if (r < 0) {
		log_error("kexec: the state the kexec carried cannot be read: %s; its sessions are "
			  "lost",
			  strerror(-r));
		for (size_t i = 0; i < in->n_files; i++)
			safe_close(in->files[i]);
	} else {
		/* Journaled before the kernel lets go of anything. */
		journal_reset(d);
		journal_commit(d);
		fault_point(d, "kexec-restored");
		log_info("kexec: %zu sessions with %zu files arrived, live update number %" PRIu64
			 "%s",
			 luo_engine_n_sessions(d->engine, LUO_SESSION_INCOMING),
			 luo_engine_n_files(d->engine), luo_engine_update_number(d->engine),
			 in->n_missing ? "; some files were left behind" : "");
	}
	for (size_t i = 0; i < in->n_sessions; i++) {
		char name[LUO_NAME_FIELD];

		snprintf(name, sizeof(name), LUOD_KERNEL_SESSION "-%zu", i);
		finish_session(in->sessions[i], name);
	}
	finish_session(luod_fd, LUOD_KERNEL_SESSION);
	return r;
}

int kexec_restore(struct luod *d)
{
	struct kexec_in in = { .dev = -EBADF };
	int r;

	/* Only into an empty luod: the sessions the kexec carried are a whole state. */
	if (luod_n_sessions(d) != 0)
		return 0;
	in.dev = luod_device_open();
	if (in.dev == -ENODEV)
		return 0;
	if (in.dev < 0) {
		log_warning("cannot open %s: %s; what a kexec carried for luod stays in the kernel",
			    luod_device_path(), strerror(-in.dev));
		return in.dev;
	}
	r = restore(d, &in);
	free(in.sessions);
	free(in.files);
	safe_close(in.dev);
	return r;
}
