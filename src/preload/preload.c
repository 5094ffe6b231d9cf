/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luo-preload.so, /dev/liveupdate on any kernel
 *
 * LD_PRELOADed into a program written for the kernel's LUO uAPI, the shim
 * makes open("/dev/liveupdate") return a connection to luod that has claimed
 * luod's exclusive device slot, makes the path and that fd look like a
 * character device to stat() and access(), and turns the LUO ioctls on the
 * device fd and on session fds into requests to luod (emulate.c).  Every
 * other call goes straight to libc, found lazily with dlsym(RTLD_NEXT).
 *
 * Lifecycle: there is no constructor; each entry point resolves its libc
 * function on first use.  A device fd lives until the program closes it (luod
 * sees the hang-up and frees the slot).  Which sockets are device fds and
 * which are session fds is kept by socket inode, not by fd number, so dup(),
 * fork(), close() and fd reuse need no interposition: a new socket has a new
 * inode.  Session fds the shim did not hand out itself (inherited over exec,
 * passed with SCM_RIGHTS, made by libluo) are recognised by asking luod once
 * (LUO_CMD_IS_SESSION), and the answer is cached by inode; so is a device fd
 * inherited over exec (a connection whose peer is luod but no session).
 *
 * Profiles ($LUO_PRELOAD_PROFILE): by default the shim is mainline's kernel
 * wherever a program can look (link text, fstat(), fstatfs(), read/write/
 * lseek/mmap/poll and foreign ioctls on device and session fds, mainline's
 * handler set, a preserved memfd's frozen size); "proposed" is the kernel
 * with the proposed session filesystem and luo's extra handlers.  The hot
 * calls (read, write, poll, ...) only look at the fd once the process has met
 * a device or session fd; until then they cost one relaxed atomic load.
 *
 * errno is left untouched on every success path; on failure it is what the
 * kernel would set.
 */
/* The interposed names must be the plain ones, neither redirected to *64 nor fortified. */
#undef _FILE_OFFSET_BITS
#undef _FORTIFY_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "basic/macro.h"
#include "preload-internal.h"
#include "protocol/protocol.h"

/* Entry points glibc exports but no longer (or only when fortifying) declares. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
int __xstat(int ver, const char *path, struct stat *st);
int __xstat64(int ver, const char *path, struct stat64 *st);
int __lxstat(int ver, const char *path, struct stat *st);
int __lxstat64(int ver, const char *path, struct stat64 *st);
int __fxstat(int ver, int fd, struct stat *st);
int __fxstat64(int ver, int fd, struct stat64 *st);
int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags);
int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags);

/* ---- lazy libc resolution ---- */

#define REAL(ret, name, ...)                                                                       \
	static ret (*real_##name(void))(__VA_ARGS__)                                               \
	{                                                                                          \
		static void *_Atomic cached;                                                       \
		void *p = atomic_load_explicit(&cached, memory_order_acquire);                     \
		if (!p) {                                                                          \
			p = dlsym(RTLD_NEXT, #name);                                               \
			atomic_store_explicit(&cached, p, memory_order_release);                   \
		}                                                                                  \
		return (ret(*)(__VA_ARGS__))p;                                                     \
	}

REAL(int, open, const char *, int, ...)
REAL(int, open64, const char *, int, ...)
REAL(int, openat, int, const char *, int, ...)
REAL(int, openat64, int, const char *, int, ...)
REAL(int, __open_2, const char *, int)
REAL(int, __open64_2, const char *, int)
REAL(int, __openat_2, int, const char *, int)
REAL(int, __openat64_2, int, const char *, int)
REAL(int, ioctl, int, unsigned long, ...)
REAL(int, stat, const char *, struct stat *)
REAL(int, stat64, const char *, struct stat64 *)
REAL(int, lstat, const char *, struct stat *)
REAL(int, lstat64, const char *, struct stat64 *)
REAL(int, fstat, int, struct stat *)
REAL(int, fstat64, int, struct stat64 *)
REAL(int, fstatat, int, const char *, struct stat *, int)
REAL(int, fstatat64, int, const char *, struct stat64 *, int)
REAL(int, __xstat, int, const char *, struct stat *)
REAL(int, __xstat64, int, const char *, struct stat64 *)
REAL(int, __lxstat, int, const char *, struct stat *)
REAL(int, __lxstat64, int, const char *, struct stat64 *)
REAL(int, __fxstat, int, int, struct stat *)
REAL(int, __fxstat64, int, int, struct stat64 *)
REAL(int, __fxstatat, int, int, const char *, struct stat *, int)
REAL(int, __fxstatat64, int, int, const char *, struct stat64 *, int)
REAL(int, statx, int, const char *, int, unsigned int, struct statx *)
REAL(int, access, const char *, int)
REAL(int, faccessat, int, const char *, int, int)
REAL(int, eaccess, const char *, int)
REAL(int, euidaccess, const char *, int)
REAL(int, statfs, const char *, struct statfs *)
REAL(int, statfs64, const char *, struct statfs64 *)
REAL(int, fstatfs, int, struct statfs *)
REAL(int, fstatfs64, int, struct statfs64 *)
REAL(ssize_t, read, int, void *, size_t)
REAL(ssize_t, write, int, const void *, size_t)
REAL(ssize_t, readv, int, const struct iovec *, int)
REAL(ssize_t, writev, int, const struct iovec *, int)
REAL(ssize_t, pread, int, void *, size_t, off_t)
REAL(ssize_t, pread64, int, void *, size_t, off64_t)
REAL(ssize_t, pwrite, int, const void *, size_t, off_t)
REAL(ssize_t, pwrite64, int, const void *, size_t, off64_t)
REAL(off_t, lseek, int, off_t, int)
REAL(off64_t, lseek64, int, off64_t, int)
REAL(void *, mmap, void *, size_t, int, int, int, off_t)
REAL(void *, mmap64, void *, size_t, int, int, int, off64_t)
REAL(int, poll, struct pollfd *, nfds_t, int)
REAL(int, ppoll, struct pollfd *, nfds_t, const struct timespec *, const sigset_t *)
REAL(int, ftruncate, int, off_t)
REAL(int, ftruncate64, int, off64_t)
REAL(int, fallocate, int, int, off_t, off_t)
REAL(int, fallocate64, int, int, off64_t, off64_t)
REAL(ssize_t, readlink, const char *, char *, size_t)
REAL(ssize_t, readlinkat, int, const char *, char *, size_t)
REAL(int, dup, int)
REAL(int, dup2, int, int)
REAL(int, dup3, int, int, int)

/* Fails like libc when a symbol is missing from this libc (old or non-glibc). */
#define CALL_REAL(name, ...)                                                                       \
	({                                                                                         \
		__typeof__(real_##name()) _f = real_##name();                                      \
		_f ? _f(__VA_ARGS__) : (errno = ENOSYS, -1);                                       \
	})

static int fail(int r)
{
	errno = -r;
	return -1;
}

int preload_real_fstat(int fd, struct stat *st)
{
	return CALL_REAL(fstat, fd, st);
}

/* ---- the profile ---- */

enum preload_profile preload_profile(void)
{
	static _Atomic int cached = -1;
	int p = atomic_load_explicit(&cached, memory_order_relaxed);
	const char *v;

	if (p >= 0)
		return (enum preload_profile)p;
	v = getenv(LUO_PRELOAD_PROFILE_ENV);
	if (!v || !*v || strcmp(v, "default") == 0)
		p = PRELOAD_PROFILE_DEFAULT;
	else if (strcmp(v, "proposed") == 0)
		p = PRELOAD_PROFILE_PROPOSED;
	else
		p = PRELOAD_PROFILE_INVALID;
	int expected = -1;
	if (atomic_compare_exchange_strong(&cached, &expected, p) && p == PRELOAD_PROFILE_INVALID) {
		int saved = errno;

		/* Once per process: every open of the device then fails with EINVAL. */
		fprintf(stderr,
			"luo-preload: unknown %s=\"%s\" (known: default, proposed): "
			"/dev/liveupdate is not available\n",
			LUO_PRELOAD_PROFILE_ENV, v);
		errno = saved;
	}
	return (enum preload_profile)atomic_load(&cached);
}

static bool proposed(void)
{
	return preload_profile() == PRELOAD_PROFILE_PROPOSED;
}

/*
 * Whether this process has met a device or session fd yet (opened, handed
 * out, or recognised).  Until then poll() costs one relaxed load more than
 * libc's.
 */
static _Atomic bool luo_seen;

static bool luo_active(void)
{
	return atomic_load_explicit(&luo_seen, memory_order_relaxed);
}

/*
 * The fd numbers that ever held a device or session fd in this process
 * (LUO_FD), or a file this process preserved (PRESERVED_FD): one bit each,
 * never cleared.  read(), write() and the other hot calls look at a fd only
 * when its number is marked; a stale mark just costs a check.  Numbers past
 * the bitmap are always checked once the process has met a LUO fd.
 */
#define FD_MARKS 65536
enum { LUO_FD, PRESERVED_FD };
static _Atomic uint64_t fd_marks[2][FD_MARKS / 64];

static void fd_mark(int which, int fd)
{
	if (fd >= 0 && fd < FD_MARKS)
		atomic_fetch_or_explicit(&fd_marks[which][fd / 64], 1ull << (fd % 64),
					 memory_order_relaxed);
}

static bool fd_marked(int which, int fd)
{
	if (fd < 0)
		return false;
	if (fd >= FD_MARKS)
		return luo_active();
	return atomic_load_explicit(&fd_marks[which][fd / 64], memory_order_relaxed) &
	       (1ull << (fd % 64));
}

/* ---- which sockets are ours ---- */

/*
 * Device fds: a ring of the socket inodes of the device connections this
 * process opened.  Only one device fd can be open per luod, so the newest
 * entries are the live ones; the ring only needs to outlast closed ones.
 */
#define DEVICE_RING 64
static _Atomic uint64_t device_inodes[DEVICE_RING];
static _Atomic unsigned device_next;

/*
 * Verdicts on other sockets, by inode: open addressing over a fixed array,
 * entry = ino << 2 | verdict.  When it is full, answers are just not cached.
 */
#define VERDICT_SLOTS (1u << 16)
#define VERDICT_PROBES 64
#define VERDICT_SESSION 1u
#define VERDICT_OTHER 2u
#define VERDICT_DEVICE 3u
static _Atomic uint64_t verdicts[VERDICT_SLOTS];

static enum preload_fd_kind verdict_kind(unsigned v)
{
	return v == VERDICT_SESSION  ? PRELOAD_FD_SESSION
	       : v == VERDICT_DEVICE ? PRELOAD_FD_DEVICE
				     : PRELOAD_FD_OTHER;
}

static unsigned kind_verdict(enum preload_fd_kind kind)
{
	return kind == PRELOAD_FD_SESSION  ? VERDICT_SESSION
	       : kind == PRELOAD_FD_DEVICE ? VERDICT_DEVICE
					   : VERDICT_OTHER;
}

static void device_remember(uint64_t ino)
{
	unsigned i = atomic_fetch_add(&device_next, 1) % DEVICE_RING;

	atomic_store(&device_inodes[i], ino);
	atomic_store(&luo_seen, true);
}

static bool device_in_ring(uint64_t ino)
{
	for (unsigned i = 0; i < DEVICE_RING; i++)
		if (atomic_load_explicit(&device_inodes[i], memory_order_relaxed) == ino)
			return true;
	return false;
}

static unsigned verdict_lookup(uint64_t ino);

static bool device_known(uint64_t ino)
{
	return device_in_ring(ino) || verdict_lookup(ino) == VERDICT_DEVICE;
}

static size_t verdict_slot(uint64_t ino)
{
	uint64_t h = ino * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 48) & (VERDICT_SLOTS - 1);
}

static unsigned verdict_lookup(uint64_t ino)
{
	size_t s = verdict_slot(ino);

	for (unsigned i = 0; i < VERDICT_PROBES; i++) {
		uint64_t e = atomic_load_explicit(&verdicts[(s + i) & (VERDICT_SLOTS - 1)],
						  memory_order_acquire);
		if (e == 0)
			return 0;
		if (e >> 2 == ino)
			return (unsigned)(e & 3);
	}
	return 0;
}

static void verdict_store(uint64_t ino, unsigned verdict)
{
	size_t s = verdict_slot(ino);
	uint64_t entry = ino << 2 | verdict;

	if (verdict != VERDICT_OTHER)
		atomic_store(&luo_seen, true);
	for (unsigned i = 0; i < VERDICT_PROBES; i++) {
		_Atomic uint64_t *slot = &verdicts[(s + i) & (VERDICT_SLOTS - 1)];
		uint64_t e = atomic_load(slot);

		if (e == 0 && atomic_compare_exchange_strong(slot, &e, entry))
			return;
		if (e >> 2 == ino) {
			atomic_store(slot, entry);
			return;
		}
	}
}

void preload_remember_session(int fd)
{
	struct stat st;

	if (preload_real_fstat(fd, &st) == 0)
		verdict_store((uint64_t)st.st_ino, VERDICT_SESSION);
	fd_mark(LUO_FD, fd);
}

/*
 * Asks luod what fd is: PRELOAD_FD_SESSION for one of its session sockets,
 * PRELOAD_FD_DEVICE for a connection to luod (a device fd this process did
 * not open itself, inherited over execve() as the kernel's device fd would
 * be), PRELOAD_FD_OTHER for anything else, or -errno when luod is unreachable.
 */
static int ask_luod(int fd)
{
	struct luo_wire_is_session q = { .size = sizeof(q) };
	_cleanup_close_ int conn = -EBADF;
	struct ucred luod, peer;
	socklen_t len;
	bool is_session;
	int r;

	conn = preload_connect(NULL);
	if (conn < 0)
		return conn;
	r = preload_wire_call(conn, LUO_IOCTL_IS_SESSION, &q, sizeof(q), fd, NULL);
	if (r == -EIO)
		return r;
	/* luod found the socket among its sessions: nothing else can pass for one.
	 * (Its peer is the worker that made it, not luod's main pid.) */
	if (r >= 0 && q.is_session)
		return PRELOAD_FD_SESSION;
	len = sizeof(luod);
	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &luod, &len) < 0)
		return negative_errno();
	len = sizeof(peer);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0 || peer.pid != luod.pid)
		return PRELOAD_FD_OTHER;
	/* A connection's peer is luod's main pid (the listening socket's); a luod
	 * without IS_SESSION: take its sockets for sessions. */
	is_session = r < 0;
	return is_session ? PRELOAD_FD_SESSION : PRELOAD_FD_DEVICE;
}

static enum preload_fd_kind classify_socket(int fd);

/* What fd is; a device or session fd gets its number marked for the hot calls. */
static enum preload_fd_kind classify_fd(int fd)
{
	enum preload_fd_kind k = classify_socket(fd);

	if (k != PRELOAD_FD_OTHER)
		fd_mark(LUO_FD, fd);
	return k;
}

static enum preload_fd_kind classify_socket(int fd)
{
	struct stat st;
	int type, domain, r;
	socklen_t len;
	unsigned v;

	if (preload_real_fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return PRELOAD_FD_OTHER;
	if (device_in_ring((uint64_t)st.st_ino))
		return PRELOAD_FD_DEVICE;
	/* A cached VERDICT_DEVICE is an inherited device fd. */
	v = verdict_lookup((uint64_t)st.st_ino);
	if (v)
		return verdict_kind(v);

	len = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET)
		r = PRELOAD_FD_OTHER;
	else if (len = sizeof(domain),
		 getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
		r = PRELOAD_FD_OTHER;
	else
		r = ask_luod(fd);
	if (r < 0)
		return PRELOAD_FD_OTHER; /* luod unreachable: do not cache, it may come back */
	verdict_store((uint64_t)st.st_ino, kind_verdict(r));
	return r;
}

/* classify_fd() with errno kept. */
static enum preload_fd_kind fd_kind(int fd)
{
	int saved = errno;
	enum preload_fd_kind k = classify_fd(fd);

	errno = saved;
	return k;
}

static bool is_session_fd(int fd)
{
	return fd_kind(fd) == PRELOAD_FD_SESSION;
}

/* For the hot calls: PRELOAD_FD_OTHER at the cost of a bit test for an unmarked fd number. */
static enum preload_fd_kind hot_kind(int fd)
{
	return fd_marked(LUO_FD, fd) ? fd_kind(fd) : PRELOAD_FD_OTHER;
}

/* ---- the device node ---- */

static bool is_device_path(const char *path)
{
	return path && strcmp(path, LUO_DEVICE_PATH) == 0;
}

/* Whether luod answers on its socket: the device "exists" exactly then (spec 1: ENOENT). */
static bool device_present(struct stat *ret_socket_st)
{
	char path[LUO_SOCKET_PATH_MAX];
	int fd, saved = errno;

	fd = preload_connect(path);
	if (fd >= 0 && ret_socket_st)
		(void)CALL_REAL(stat, path, ret_socket_st);
	safe_close(fd);
	errno = saved;
	return fd >= 0;
}

static int device_open(int flags)
{
	struct luo_wire_simple q = { .size = sizeof(q) };
	_cleanup_close_ int fd = -EBADF;
	struct stat st;
	int r;

	if (preload_profile() == PRELOAD_PROFILE_INVALID)
		return -EINVAL;
	fd = preload_connect(NULL);
	if (fd < 0)
		return -ENOENT;
	/* What open() says of an existing character device. */
	if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL))
		return -EEXIST;
	if (flags & O_DIRECTORY)
		return -ENOTDIR;
	r = preload_wire_call(fd, LUO_IOCTL_DEVICE_OPEN, &q, sizeof(q), -EBADF, NULL);
	if (r == -EIO)
		return -ENOENT; /* luod went away between connect and reply */
	if (r < 0)
		return r;
	if (preload_real_fstat(fd, &st) < 0)
		return negative_errno();
	device_remember((uint64_t)st.st_ino);
	fd_mark(LUO_FD, fd);
	/* Born CLOEXEC; the device fd keeps it only if the caller asked, as open() would. */
	if (!(flags & O_CLOEXEC) && fcntl(fd, F_SETFD, 0) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

static int open_result(int r)
{
	return r < 0 ? fail(r) : r;
}

static int device_open_keep_errno(int flags)
{
	int saved = errno, r = device_open(flags);

	if (r >= 0)
		errno = saved;
	return open_result(r);
}

static mode_t va_mode(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

/* open() and friends: the device path, or pass through with the mode if flags need one. */
#define OPEN_BODY(name, path, flags, ...)                                                          \
	do {                                                                                       \
		va_list _ap;                                                                       \
		mode_t _mode;                                                                      \
		if (is_device_path(path))                                                          \
			return device_open_keep_errno(flags);                                      \
		va_start(_ap, flags);                                                              \
		_mode = va_mode(flags, _ap);                                                       \
		va_end(_ap);                                                                       \
		return CALL_REAL(name, __VA_ARGS__, _mode);                                        \
	} while (0)

_public_ int open(const char *path, int flags, ...)
{
	OPEN_BODY(open, path, flags, path, flags);
}

_public_ int open64(const char *path, int flags, ...)
{
	OPEN_BODY(open64, path, flags, path, flags);
}

_public_ int openat(int dirfd, const char *path, int flags, ...)
{
	OPEN_BODY(openat, path, flags, dirfd, path, flags);
}

_public_ int openat64(int dirfd, const char *path, int flags, ...)
{
	OPEN_BODY(openat64, path, flags, dirfd, path, flags);
}

_public_ int __open_2(const char *path, int flags)
{
	if (is_device_path(path))
		return device_open_keep_errno(flags);
	return CALL_REAL(__open_2, path, flags);
}

_public_ int __open64_2(const char *path, int flags)
{
	if (is_device_path(path))
		return device_open_keep_errno(flags);
	return CALL_REAL(__open64_2, path, flags);
}

_public_ int __openat_2(int dirfd, const char *path, int flags)
{
	if (is_device_path(path))
		return device_open_keep_errno(flags);
	return CALL_REAL(__openat_2, dirfd, path, flags);
}

_public_ int __openat64_2(int dirfd, const char *path, int flags)
{
	if (is_device_path(path))
		return device_open_keep_errno(flags);
	return CALL_REAL(__openat64_2, dirfd, path, flags);
}

/* ---- ioctl ---- */

_public_ int ioctl(int fd, unsigned long request, ...)
{
	enum preload_fd_kind kind;
	va_list ap;
	void *arg;
	int saved, r;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);

	if (_IOC_TYPE(request) != LIVEUPDATE_IOCTL_TYPE) {
		/* The VFS answers these itself for any file, as it does for the socket. */
		if (request == FIOCLEX || request == FIONCLEX || request == FIONBIO ||
		    request == FIOASYNC)
			return CALL_REAL(ioctl, fd, request, arg);
		kind = hot_kind(fd);
		if (kind == PRELOAD_FD_OTHER)
			return CALL_REAL(ioctl, fd, request, arg);
		/* FIOQSIZE is for directories, links and real regular files only. */
		if (request == FIOQSIZE)
			return fail(-ENOTTY);
		/* Anything else reaches LUO's handler, which judges it by its nr. */
		saved = errno;
	} else {
		saved = errno;
		kind = classify_fd(fd);
		errno = saved;
		if (kind == PRELOAD_FD_OTHER)
			return CALL_REAL(ioctl, fd, request, arg);
	}
	/* The kernel sees only the low 32 bits of the command word. */
	r = preload_emulate_ioctl(fd, kind, (unsigned int)request, arg);
	if (r < 0)
		return fail(r);
	errno = saved;
	return 0;
}

/* ---- stat and access ---- */

/*
 * The stat64 entry points share the code: on the 64-bit ABIs the shim is built
 * for, struct stat64 is struct stat.
 */
_Static_assert(sizeof(struct stat) == sizeof(struct stat64) &&
		       offsetof(struct stat, st_rdev) == offsetof(struct stat64, st_rdev),
	       "struct stat64 differs from struct stat");

/* The device node as devtmpfs would show it: a 0600 character device owned by the caller. */
#define LUO_DEVICE_RDEV makedev(10, 0x4c)
#define LUO_DEVICE_INO 0x4c554fULL

/* st_dev of /dev, so that the fake node sits on the real devtmpfs. */
static dev_t dev_fs_dev(void)
{
	struct stat d;
	int saved = errno;

	if (CALL_REAL(stat, "/dev", &d) < 0)
		d.st_dev = 0;
	errno = saved;
	return d.st_dev;
}

static void fake_device_stat(struct stat *st)
{
	st->st_dev = dev_fs_dev();
	st->st_ino = LUO_DEVICE_INO;
	st->st_mode = S_IFCHR | 0600;
	st->st_nlink = 1;
	st->st_uid = geteuid();
	st->st_gid = getegid();
	st->st_rdev = LUO_DEVICE_RDEV;
	st->st_size = 0;
	st->st_blksize = 4096;
	st->st_blocks = 0;
}

/* stat of the path: the node with luod's socket's times; -ENOENT when luod is not there. */
static int stat_device_path(struct stat *st)
{
	struct stat sock;

	memset(&sock, 0, sizeof(sock));
	if (!device_present(&sock))
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->st_atim = sock.st_atim;
	st->st_mtim = sock.st_mtim;
	st->st_ctim = sock.st_ctim;
	fake_device_stat(st);
	return 0;
}

/*
 * A session fd as fstat() sees it.  Mainline: the anonymous inode that every
 * session shares with every eventfd, so an eventfd's own fstat() is the
 * answer.  Proposed: one inode per session (the socket's st_dev and st_ino,
 * which two fds share exactly when they are the same session), mode 0600
 * with no file type bits, as the patched kernel's session inodes
 * (docs/kernel-patches.md).
 */
static void session_stat(struct stat *st)
{
	int saved = errno, e;

	if (proposed()) {
		st->st_mode = 0600;
		st->st_nlink = 1;
		st->st_size = 0;
		st->st_blocks = 0;
		st->st_rdev = 0;
		return;
	}
	e = eventfd(0, EFD_CLOEXEC);
	if (e >= 0) {
		struct stat anon;

		if (preload_real_fstat(e, &anon) == 0)
			*st = anon;
		close(e);
	}
	errno = saved;
}

/* After a successful fstat of fd: a device fd looks like the node it was opened
 * from, a session fd like the kernel's session file. */
static void fixup_fd_stat(int fd, struct stat *st)
{
	if (!S_ISSOCK(st->st_mode))
		return;
	if (device_known((uint64_t)st->st_ino))
		fake_device_stat(st);
	else if (is_session_fd(fd))
		session_stat(st);
}

/* The libc result is returned as is when the path is not the device. */
static int stat_path(const char *path, struct stat *st, int *ret)
{
	int saved = errno, r;

	if (!is_device_path(path))
		return 0;
	r = stat_device_path(st);
	if (r < 0)
		*ret = fail(r);
	else {
		errno = saved;
		*ret = 0;
	}
	return 1;
}

/* Not declared nonnull: since Linux 6.11 fstatat(fd, NULL, st, AT_EMPTY_PATH) is valid. */
static bool empty_path(const char *path, int flags)
{
	return (flags & AT_EMPTY_PATH) && (!path || !*path);
}

#define STAT_PATH_BODY(name, path, st, ...)                                                        \
	do {                                                                                       \
		int _ret;                                                                          \
		if (stat_path(path, (struct stat *)(st), &_ret))                                   \
			return _ret;                                                               \
		return CALL_REAL(name, __VA_ARGS__);                                               \
	} while (0)

#define STAT_FD_BODY(name, fd, st, ...)                                                            \
	do {                                                                                       \
		int _ret = CALL_REAL(name, __VA_ARGS__);                                           \
		if (_ret == 0)                                                                     \
			fixup_fd_stat(fd, (struct stat *)(st));                                    \
		return _ret;                                                                       \
	} while (0)

/* fstatat() and friends: the device path, or a fd with AT_EMPTY_PATH, or pass through. */
#define STATAT_BODY(name, dirfd, path, st, flags, ...)                                             \
	do {                                                                                       \
		int _ret;                                                                          \
		if (stat_path(path, (struct stat *)(st), &_ret))                                   \
			return _ret;                                                               \
		_ret = CALL_REAL(name, __VA_ARGS__);                                               \
		if (_ret == 0 && empty_path(path, flags))                                          \
			fixup_fd_stat(dirfd, (struct stat *)(st));                                 \
		return _ret;                                                                       \
	} while (0)

_public_ int stat(const char *path, struct stat *st)
{
	STAT_PATH_BODY(stat, path, st, path, st);
}

_public_ int stat64(const char *path, struct stat64 *st)
{
	STAT_PATH_BODY(stat64, path, st, path, st);
}

/* The node is not a symlink, so lstat sees the same. */
_public_ int lstat(const char *path, struct stat *st)
{
	STAT_PATH_BODY(lstat, path, st, path, st);
}

_public_ int lstat64(const char *path, struct stat64 *st)
{
	STAT_PATH_BODY(lstat64, path, st, path, st);
}

_public_ int fstat(int fd, struct stat *st)
{
	STAT_FD_BODY(fstat, fd, st, fd, st);
}

_public_ int fstat64(int fd, struct stat64 *st)
{
	STAT_FD_BODY(fstat64, fd, st, fd, st);
}

_public_ int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
	STATAT_BODY(fstatat, dirfd, path, st, flags, dirfd, path, st, flags);
}

_public_ int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
	STATAT_BODY(fstatat64, dirfd, path, st, flags, dirfd, path, st, flags);
}

/* The pre-2.33 glibc entry points, still called by binaries built against older glibc. */
_public_ int __xstat(int ver, const char *path, struct stat *st)
{
	STAT_PATH_BODY(__xstat, path, st, ver, path, st);
}

_public_ int __xstat64(int ver, const char *path, struct stat64 *st)
{
	STAT_PATH_BODY(__xstat64, path, st, ver, path, st);
}

_public_ int __lxstat(int ver, const char *path, struct stat *st)
{
	STAT_PATH_BODY(__lxstat, path, st, ver, path, st);
}

_public_ int __lxstat64(int ver, const char *path, struct stat64 *st)
{
	STAT_PATH_BODY(__lxstat64, path, st, ver, path, st);
}

_public_ int __fxstat(int ver, int fd, struct stat *st)
{
	STAT_FD_BODY(__fxstat, fd, st, ver, fd, st);
}

_public_ int __fxstat64(int ver, int fd, struct stat64 *st)
{
	STAT_FD_BODY(__fxstat64, fd, st, ver, fd, st);
}

_public_ int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
	STATAT_BODY(__fxstatat, dirfd, path, st, flags, ver, dirfd, path, st, flags);
}

_public_ int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
	STATAT_BODY(__fxstatat64, dirfd, path, st, flags, ver, dirfd, path, st, flags);
}

static void fill_statx(struct statx *stx, const struct stat *st)
{
	memset(stx, 0, sizeof(*stx));
	stx->stx_mask = STATX_BASIC_STATS;
	stx->stx_blksize = (uint32_t)st->st_blksize;
	stx->stx_nlink = (uint32_t)st->st_nlink;
	stx->stx_uid = st->st_uid;
	stx->stx_gid = st->st_gid;
	stx->stx_mode = (uint16_t)st->st_mode;
	stx->stx_ino = st->st_ino;
	stx->stx_size = (uint64_t)st->st_size;
	stx->stx_blocks = (uint64_t)st->st_blocks;
	stx->stx_atime.tv_sec = st->st_atim.tv_sec;
	stx->stx_atime.tv_nsec = (uint32_t)st->st_atim.tv_nsec;
	stx->stx_mtime.tv_sec = st->st_mtim.tv_sec;
	stx->stx_mtime.tv_nsec = (uint32_t)st->st_mtim.tv_nsec;
	stx->stx_ctime.tv_sec = st->st_ctim.tv_sec;
	stx->stx_ctime.tv_nsec = (uint32_t)st->st_ctim.tv_nsec;
	stx->stx_rdev_major = major(st->st_rdev);
	stx->stx_rdev_minor = minor(st->st_rdev);
	stx->stx_dev_major = major(st->st_dev);
	stx->stx_dev_minor = minor(st->st_dev);
}

_public_ int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *stx)
{
	struct stat st;
	int saved = errno, r;

	if (is_device_path(path)) {
		r = stat_device_path(&st);
		if (r < 0)
			return fail(r);
		fill_statx(stx, &st);
		errno = saved;
		return 0;
	}
	r = CALL_REAL(statx, dirfd, path, flags, mask, stx);
	if (r == 0 && empty_path(path, flags) && S_ISSOCK(stx->stx_mode) &&
	    preload_real_fstat(dirfd, &st) == 0) {
		fixup_fd_stat(dirfd, &st);
		if (!S_ISSOCK(st.st_mode))
			fill_statx(stx, &st);
	}
	errno = r == 0 ? saved : errno;
	return r;
}

/* access() semantics for a 0600 node owned by the caller: read and write yes, execute no. */
static int device_access(int mode)
{
	int saved = errno;

	if (!device_present(NULL))
		return fail(-ENOENT);
	if (mode & X_OK)
		return fail(-EACCES);
	errno = saved;
	return 0;
}

_public_ int access(const char *path, int mode)
{
	if (is_device_path(path))
		return device_access(mode);
	return CALL_REAL(access, path, mode);
}

_public_ int faccessat(int dirfd, const char *path, int mode, int flags)
{
	if (is_device_path(path))
		return device_access(mode);
	return CALL_REAL(faccessat, dirfd, path, mode, flags);
}

_public_ int eaccess(const char *path, int mode)
{
	if (is_device_path(path))
		return device_access(mode);
	return CALL_REAL(eaccess, path, mode);
}

_public_ int euidaccess(const char *path, int mode)
{
	if (is_device_path(path))
		return device_access(mode);
	return CALL_REAL(euidaccess, path, mode);
}

/* ---- statfs ---- */

/*
 * A session fd's filesystem: mainline's anonymous inode filesystem (an
 * eventfd's, 0x09041934), or the proposed LUO_SESSION_MAGIC.  A device fd
 * sits on /dev's filesystem.
 */
#define FSTATFS_BODY(name, path_name, fd, buf)                                                     \
	do {                                                                                       \
		int _r = CALL_REAL(name, fd, buf);                                                 \
		int _saved = errno;                                                                \
		if (_r < 0)                                                                        \
			return _r;                                                                 \
		switch (fd_kind(fd)) {                                                             \
		case PRELOAD_FD_SESSION:                                                           \
			if (proposed()) {                                                          \
				(buf)->f_type = LUO_SESSION_MAGIC;                                 \
			} else {                                                                   \
				int _e = eventfd(0, EFD_CLOEXEC);                                  \
				if (_e >= 0) {                                                     \
					(void)CALL_REAL(name, _e, buf);                            \
					close(_e);                                                 \
				}                                                                  \
			}                                                                          \
			break;                                                                     \
		case PRELOAD_FD_DEVICE:                                                            \
			(void)CALL_REAL(path_name, "/dev", buf);                                   \
			break;                                                                     \
		default:                                                                           \
			break;                                                                     \
		}                                                                                  \
		errno = _saved;                                                                    \
		return 0;                                                                          \
	} while (0)

_public_ int fstatfs(int fd, struct statfs *buf)
{
	FSTATFS_BODY(fstatfs, statfs, fd, buf);
}

_public_ int fstatfs64(int fd, struct statfs64 *buf)
{
	FSTATFS_BODY(fstatfs64, statfs64, fd, buf);
}

/* The node lives on /dev's filesystem. */
_public_ int statfs(const char *path, struct statfs *buf)
{
	if (is_device_path(path)) {
		if (!device_present(NULL))
			return fail(-ENOENT);
		path = "/dev";
	}
	return CALL_REAL(statfs, path, buf);
}

_public_ int statfs64(const char *path, struct statfs64 *buf)
{
	if (is_device_path(path)) {
		if (!device_present(NULL))
			return fail(-ENOENT);
		path = "/dev";
	}
	return CALL_REAL(statfs64, path, buf);
}

/* ---- /proc/self/fd link text ---- */

/* The fd number a /proc/self/fd/N style path names, or -1. */
static int proc_fd_number(const char *path)
{
	static const char *const prefixes[] = { "/proc/self/fd/", "/proc/thread-self/fd/",
						"/dev/fd/" };
	const char *p = NULL;
	long n = 0;

	for (size_t i = 0; i < ELEMENTSOF(prefixes) && !p; i++)
		if (strncmp(path, prefixes[i], strlen(prefixes[i])) == 0)
			p = path + strlen(prefixes[i]);
	if (!p && strncmp(path, "/proc/", 6) == 0) {
		char *end;
		long pid = strtol(path + 6, &end, 10);

		if (end != path + 6 && pid == getpid() && strncmp(end, "/fd/", 4) == 0)
			p = end + 4;
	}
	if (!p || !*p)
		return -1;
	for (; *p; p++) {
		if (*p < '0' || *p > '9' || n > 1 << 24)
			return -1;
		n = n * 10 + (*p - '0');
	}
	return (int)n;
}

/*
 * The kernel's link text for a device or session fd: "/dev/liveupdate";
 * mainline's anonymous inode "anon_inode:[luo_session] NAME"; the proposed
 * filesystem's dentry "luo_session:[NAME]".  0 with the text, or -1 when the
 * libc answer stands.
 */
static int luo_link_text(int fd, char *buf, size_t size)
{
	struct liveupdate_session_get_name g = { .size = sizeof(g) };
	enum preload_fd_kind kind = fd_kind(fd);
	int saved = errno, r;

	if (kind == PRELOAD_FD_DEVICE) {
		snprintf(buf, size, "%s", LUO_DEVICE_PATH);
		return 0;
	}
	if (kind != PRELOAD_FD_SESSION)
		return -1;
	r = preload_wire_call(fd, LIVEUPDATE_SESSION_GET_NAME, &g, sizeof(g), -EBADF, NULL);
	errno = saved;
	if (r < 0)
		return -1;
	g.name[sizeof(g.name) - 1] = 0;
	snprintf(buf, size, proposed() ? "luo_session:[%s]" : "anon_inode:[luo_session] %s",
		 (const char *)g.name);
	return 0;
}

static ssize_t readlink_common(const char *path, char *buf, size_t size, bool *handled)
{
	char text[128];
	int fd = proc_fd_number(path);
	size_t n;

	*handled = false;
	if (fd < 0 || luo_link_text(fd, text, sizeof(text)) < 0)
		return 0;
	*handled = true;
	/* readlink(): no NUL, at most size bytes. */
	n = MIN(strlen(text), size);
	memcpy(buf, text, n);
	return (ssize_t)n;
}

_public_ ssize_t readlink(const char *path, char *buf, size_t size)
{
	bool handled;
	ssize_t n = readlink_common(path, buf, size, &handled);

	return handled ? n : CALL_REAL(readlink, path, buf, size);
}

_public_ ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size)
{
	bool handled = false;
	ssize_t n = 0;

	if (path[0] == '/')
		n = readlink_common(path, buf, size, &handled);
	return handled ? n : CALL_REAL(readlinkat, dirfd, path, buf, size);
}

/* ---- read, write, lseek, mmap, poll on device and session fds ---- */

/*
 * Neither the device nor a session file has read, write, llseek, mmap or
 * poll operations: read() and write() fail with EINVAL (no FMODE_CAN_READ or
 * _WRITE), lseek() with ESPIPE, mmap() with ENODEV, and poll() sees the
 * default mask (readable and writable at once).  pread()/pwrite() fail with
 * ESPIPE on a session (an anonymous file has no FMODE_PREAD) and with EINVAL
 * on the device (a character device has).  Both profiles: the proposed
 * filesystem keeps the session's file operations.
 */
static int luo_rw_error(enum preload_fd_kind kind, bool positioned)
{
	return positioned && kind == PRELOAD_FD_SESSION ? -ESPIPE : -EINVAL;
}

/* ---- preserved memfds: the size is frozen while preserved ---- */

/*
 * Mainline's memfd handler freezes the file's mapping at preserve
 * (shmem_freeze()): until the session is closed (aborted) or the kexec, a
 * size change (ftruncate() to another size, a write past the end, any
 * fallocate()) fails with EPERM.  luod holds the file instead, so the shim
 * refuses those calls itself for the files this process (or its parent
 * before fork()) preserved, as long as the session's socket exists.
 */
#define FROZEN_SLOTS 1024
static _Atomic uint64_t frozen_ino[FROZEN_SLOTS];
static _Atomic uint64_t frozen_dev[FROZEN_SLOTS];
static _Atomic uint64_t frozen_session[FROZEN_SLOTS];
static _Atomic unsigned frozen_count;

/* Whether an AF_UNIX socket with this inode still exists (/proc/net/unix). */
static bool unix_socket_alive(uint64_t ino)
{
	char buf[4096 + 256];
	size_t have = 0;
	bool found = false, first = true;
	int fd, saved = errno;

	fd = CALL_REAL(open, "/proc/net/unix", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		errno = saved;
		return true; /* cannot tell: keep the rule */
	}
	for (;;) {
		ssize_t k = CALL_REAL(read, fd, buf + have, sizeof(buf) - 1 - have);
		char *line, *nl;

		if (k <= 0)
			break;
		have += (size_t)k;
		buf[have] = 0;
		line = buf;
		while ((nl = strchr(line, '\n'))) {
			unsigned long long f_ino = 0;

			*nl = 0;
			/* Num RefCount Protocol Flags Type St Inode [Path] */
			if (!first && sscanf(line, "%*s %*s %*s %*s %*s %*s %llu", &f_ino) == 1 &&
			    f_ino == ino)
				found = true;
			first = false;
			line = nl + 1;
		}
		have = (size_t)(buf + have - line);
		memmove(buf, line, have);
		if (found || have >= sizeof(buf) - 1)
			break;
	}
	close(fd);
	errno = saved;
	return found;
}

bool preload_mainline_can_preserve(int fd)
{
	struct statfs sf;
	struct stat st;
	int saved = errno, flags;
	bool r;

	flags = fcntl(fd, F_GETFL);
	/* An O_PATH fd is luod's EBADF, as the kernel's. */
	if (flags >= 0 && (flags & O_PATH)) {
		errno = saved;
		return true;
	}
	r = preload_real_fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 0 &&
	    CALL_REAL(fstatfs, fd, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
	errno = saved;
	return r;
}

bool preload_kernel_can_preserve(int fd)
{
	if (fd_kind(fd) != PRELOAD_FD_OTHER)
		return false;
	return proposed() || preload_mainline_can_preserve(fd);
}

void preload_remember_preserved(int fd, int session_fd)
{
	struct stat st, ss;

	if (preload_real_fstat(fd, &st) < 0 || preload_real_fstat(session_fd, &ss) < 0)
		return;
	fd_mark(PRESERVED_FD, fd);
	for (unsigned i = 0; i < FROZEN_SLOTS; i++) {
		uint64_t e = 0;

		if (atomic_load(&frozen_ino[i]) != 0)
			continue;
		/* Claim the slot with a placeholder, fill it, then publish the inode. */
		if (!atomic_compare_exchange_strong(&frozen_ino[i], &e, UINT64_MAX))
			continue;
		atomic_store(&frozen_dev[i], (uint64_t)st.st_dev);
		atomic_store(&frozen_session[i], (uint64_t)ss.st_ino);
		atomic_store(&frozen_ino[i], (uint64_t)st.st_ino);
		atomic_fetch_add(&frozen_count, 1);
		return;
	}
}

/* Whether fd is a preserved file whose size is frozen; its size goes to *ret_size. */
static bool frozen_file(int fd, off_t *ret_size)
{
	struct stat st;
	int saved = errno;
	bool r = false;

	if (atomic_load_explicit(&frozen_count, memory_order_relaxed) == 0)
		return false;
	if (preload_real_fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		errno = saved;
		return false;
	}
	for (unsigned i = 0; i < FROZEN_SLOTS && !r; i++) {
		if (atomic_load(&frozen_ino[i]) != (uint64_t)st.st_ino ||
		    atomic_load(&frozen_dev[i]) != (uint64_t)st.st_dev)
			continue;
		if (unix_socket_alive(atomic_load(&frozen_session[i]))) {
			r = true;
			break;
		}
		/* The session was closed: the file was unpreserved with it. */
		uint64_t e = (uint64_t)st.st_ino;
		if (atomic_compare_exchange_strong(&frozen_ino[i], &e, 0))
			atomic_fetch_sub(&frozen_count, 1);
	}
	*ret_size = st.st_size;
	errno = saved;
	return r;
}

/* How many of n bytes a write at pos may put into a frozen file of this size: -EPERM past the end. */
/*
 * How many of n bytes a write at pos puts into a frozen file of this size.
 * The kernel writes page by page (the first piece up to pos's page end) and
 * refuses, EPERM, the first piece that would end past the end of the file:
 * what came before it is written and counted, so a write that reaches past
 * the end from inside the last page is refused entirely.
 */
static ssize_t frozen_write_len(off_t size, off_t pos, size_t n)
{
	off_t page = (off_t)sysconf(_SC_PAGESIZE), first_end, end;

	if (n == 0 || pos + (off_t)n <= size)
		return (ssize_t)n;
	first_end = MIN(pos + (off_t)n, (pos / page + 1) * page);
	if (first_end > size)
		return -EPERM;
	/* Whole pieces up to the last page boundary inside the file. */
	end = first_end + (size - first_end) / page * page;
	return (ssize_t)(end - pos);
}

#define NOT_FROZEN (-EAGAIN - 1000)

/* A write to a frozen file as shmem does it, or NOT_FROZEN when fd is not one. */
static ssize_t frozen_write(int fd, const void *buf, size_t n, bool positioned, off_t pos)
{
	off_t size;
	ssize_t k;

	if (!fd_marked(PRESERVED_FD, fd) || !frozen_file(fd, &size))
		return NOT_FROZEN;
	if (!positioned) {
		int fl = fcntl(fd, F_GETFL);

		pos = fl >= 0 && (fl & O_APPEND) ? size : CALL_REAL(lseek, fd, 0, SEEK_CUR);
		if (pos < 0)
			return negative_errno();
	}
	k = frozen_write_len(size, pos, n);
	if (k <= 0)
		return k;
	return positioned ? CALL_REAL(pwrite, fd, buf, (size_t)k, pos)
			  : CALL_REAL(write, fd, buf, (size_t)k);
}

_public_ ssize_t read(int fd, void *buf, size_t n)
{
	enum preload_fd_kind kind = hot_kind(fd);

	if (kind != PRELOAD_FD_OTHER)
		return fail(luo_rw_error(kind, false));
	return CALL_REAL(read, fd, buf, n);
}

_public_ ssize_t readv(int fd, const struct iovec *iov, int n)
{
	enum preload_fd_kind kind = hot_kind(fd);

	if (kind != PRELOAD_FD_OTHER)
		return fail(luo_rw_error(kind, false));
	return CALL_REAL(readv, fd, iov, n);
}

_public_ ssize_t pread(int fd, void *buf, size_t n, off_t pos)
{
	enum preload_fd_kind kind = hot_kind(fd);

	if (kind != PRELOAD_FD_OTHER)
		return fail(luo_rw_error(kind, true));
	return CALL_REAL(pread, fd, buf, n, pos);
}

_public_ ssize_t pread64(int fd, void *buf, size_t n, off64_t pos)
{
	enum preload_fd_kind kind = hot_kind(fd);

	if (kind != PRELOAD_FD_OTHER)
		return fail(luo_rw_error(kind, true));
	return CALL_REAL(pread64, fd, buf, n, pos);
}

_public_ ssize_t write(int fd, const void *buf, size_t n)
{
	enum preload_fd_kind kind = hot_kind(fd);
	ssize_t k;

	if (kind != PRELOAD_FD_OTHER)
		return fail(luo_rw_error(kind, false));
	k = frozen_write(fd, buf, n, false, 0);
	if (k != NOT_FROZEN)
		return k < 0 ? fail((int)k) : k;
	return CALL_REAL(write, fd, buf, n);
}

_public_ ssize_t writev(int fd, const struct iovec *iov, int n)
{
	enum preload_fd_kind kind = hot_kind(fd);

	if (kind != PRELOAD_FD_OTHER)
		return fail(luo_rw_error(kind, false));
	return CALL_REAL(writev, fd, iov, n);
}

_public_ ssize_t pwrite(int fd, const void *buf, size_t n, off_t pos)
{
	enum preload_fd_kind kind = hot_kind(fd);
	ssize_t k;

	if (kind != PRELOAD_FD_OTHER)
		return fail(luo_rw_error(kind, true));
	k = frozen_write(fd, buf, n, true, pos);
	if (k != NOT_FROZEN)
		return k < 0 ? fail((int)k) : k;
	return CALL_REAL(pwrite, fd, buf, n, pos);
}

_public_ ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t pos)
{
	enum preload_fd_kind kind = hot_kind(fd);
	ssize_t k;

	if (kind != PRELOAD_FD_OTHER)
		return fail(luo_rw_error(kind, true));
	k = frozen_write(fd, buf, n, true, pos);
	if (k != NOT_FROZEN)
		return k < 0 ? fail((int)k) : k;
	return CALL_REAL(pwrite64, fd, buf, n, pos);
}

_public_ off_t lseek(int fd, off_t off, int whence)
{
	if (hot_kind(fd) != PRELOAD_FD_OTHER)
		return fail(-ESPIPE);
	return CALL_REAL(lseek, fd, off, whence);
}

_public_ off64_t lseek64(int fd, off64_t off, int whence)
{
	if (hot_kind(fd) != PRELOAD_FD_OTHER)
		return fail(-ESPIPE);
	return CALL_REAL(lseek64, fd, off, whence);
}

/* mmap() of a file without an mmap operation: ENODEV, after the generic checks. */
static bool mmap_luo(size_t len, int flags, int fd, void **ret)
{
	if ((flags & MAP_ANONYMOUS) || hot_kind(fd) == PRELOAD_FD_OTHER)
		return false;
	errno = len == 0 ? EINVAL : ENODEV;
	*ret = MAP_FAILED;
	return true;
}

_public_ void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *r;

	if (mmap_luo(len, flags, fd, &r))
		return r;
	return real_mmap() ? real_mmap()(addr, len, prot, flags, fd, off)
			   : (errno = ENOSYS, MAP_FAILED);
}

_public_ void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
	void *r;

	if (mmap_luo(len, flags, fd, &r))
		return r;
	return real_mmap64() ? real_mmap64()(addr, len, prot, flags, fd, off)
			     : (errno = ENOSYS, MAP_FAILED);
}

/*
 * poll() and ppoll(): device and session fds are ready at once with the
 * default mask; the other fds are polled by libc, without waiting if a LUO fd
 * is ready.  LUO fds are hidden from libc by making their fd negative
 * (-fd - 2, which poll() ignores) for the call.  A poll asking for POLLRDHUP
 * (luo's own transport, in the shim or in libluo, never a kernel program on
 * a session fd) goes to the socket untouched.
 */
#define POLL_DEFAULT_MASK (POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM)

static int poll_hide(struct pollfd *fds, nfds_t n, int *ret_ready)
{
	int hidden = 0, ready = 0;

	for (nfds_t i = 0; i < n; i++)
		if (fds[i].fd < -1)
			return -1; /* the caller's own negative fds: cannot hide ours */
	for (nfds_t i = 0; i < n; i++) {
		if (fds[i].fd < 0 || (fds[i].events & POLLRDHUP) ||
		    hot_kind(fds[i].fd) == PRELOAD_FD_OTHER)
			continue;
		fds[i].fd = -fds[i].fd - 2;
		hidden++;
		if (fds[i].events & POLL_DEFAULT_MASK)
			ready++;
	}
	*ret_ready = ready;
	return hidden;
}

static int poll_unhide(struct pollfd *fds, nfds_t n, int r)
{
	int ready = 0, saved = errno;

	for (nfds_t i = 0; i < n; i++) {
		if (fds[i].fd >= -1)
			continue;
		fds[i].fd = -fds[i].fd - 2;
		fds[i].revents = (short)(fds[i].events & POLL_DEFAULT_MASK);
		if (fds[i].revents)
			ready++;
	}
	if (r < 0 && ready == 0) {
		errno = saved;
		return r;
	}
	errno = saved;
	return (r < 0 ? 0 : r) + ready;
}

_public_ int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	int ready, r;

	if (!luo_active() || poll_hide(fds, n, &ready) <= 0)
		return CALL_REAL(poll, fds, n, timeout);
	r = CALL_REAL(poll, fds, n, ready ? 0 : timeout);
	return poll_unhide(fds, n, r);
}

_public_ int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
		   const sigset_t *mask)
{
	static const struct timespec zero = { 0, 0 };
	int ready, r;

	if (!luo_active() || poll_hide(fds, n, &ready) <= 0)
		return CALL_REAL(ppoll, fds, n, timeout, mask);
	r = CALL_REAL(ppoll, fds, n, ready ? &zero : timeout, mask);
	return poll_unhide(fds, n, r);
}

/* ---- ftruncate and fallocate of a preserved memfd ---- */

static int frozen_resize(int fd, off_t len)
{
	off_t size;

	if (!luo_active() || !frozen_file(fd, &size))
		return 0;
	return len != size ? -EPERM : 0;
}

_public_ int ftruncate(int fd, off_t len)
{
	int r = frozen_resize(fd, len);

	return r < 0 ? fail(r) : CALL_REAL(ftruncate, fd, len);
}

_public_ int ftruncate64(int fd, off64_t len)
{
	int r = frozen_resize(fd, len);

	return r < 0 ? fail(r) : CALL_REAL(ftruncate64, fd, len);
}

/* shmem: modes beyond KEEP_SIZE and PUNCH_HOLE are EOPNOTSUPP first; then a frozen file is EPERM. */
static int frozen_fallocate(int fd, int mode)
{
	off_t size;

	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
		return 0;
	if (!luo_active() || !frozen_file(fd, &size))
		return 0;
	return -EPERM;
}

_public_ int fallocate(int fd, int mode, off_t off, off_t len)
{
	int r = frozen_fallocate(fd, mode);

	return r < 0 ? fail(r) : CALL_REAL(fallocate, fd, mode, off, len);
}

_public_ int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	int r = frozen_fallocate(fd, mode);

	return r < 0 ? fail(r) : CALL_REAL(fallocate64, fd, mode, off, len);
}

/* ---- dup: a copy of a marked fd number is marked too ---- */

static int dup_marks(int oldfd, int newfd)
{
	if (newfd < 0)
		return newfd;
	for (int which = LUO_FD; which <= PRESERVED_FD; which++)
		if (fd_marked(which, oldfd))
			fd_mark(which, newfd);
	return newfd;
}

_public_ int dup(int fd)
{
	return dup_marks(fd, CALL_REAL(dup, fd));
}

_public_ int dup2(int fd, int fd2)
{
	return dup_marks(fd, CALL_REAL(dup2, fd, fd2));
}

_public_ int dup3(int fd, int fd2, int flags)
{
	return dup_marks(fd, CALL_REAL(dup3, fd, fd2, flags));
}
