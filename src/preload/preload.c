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
 * errno is left untouched on every success path; on failure it is what the
 * kernel would set.
 */
/* The interposed names must be the plain ones, neither redirected to *64 nor fortified. */
#undef _FILE_OFFSET_BITS
#undef _FORTIFY_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
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

static enum preload_fd_kind classify_fd(int fd)
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

	if (_IOC_TYPE(request) != LIVEUPDATE_IOCTL_TYPE)
		return CALL_REAL(ioctl, fd, request, arg);
	saved = errno;
	kind = classify_fd(fd);
	errno = saved;
	if (kind == PRELOAD_FD_OTHER)
		return CALL_REAL(ioctl, fd, request, arg);
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

/* After a successful fstat of a fd: a device fd looks like the node it was opened from. */
static void fixup_fd_stat(struct stat *st)
{
	if (S_ISSOCK(st->st_mode) && device_known((uint64_t)st->st_ino))
		fake_device_stat(st);
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

#define STAT_FD_BODY(name, st, ...)                                                                \
	do {                                                                                       \
		int _ret = CALL_REAL(name, __VA_ARGS__);                                           \
		if (_ret == 0)                                                                     \
			fixup_fd_stat((struct stat *)(st));                                        \
		return _ret;                                                                       \
	} while (0)

/* fstatat() and friends: the device path, or a fd with AT_EMPTY_PATH, or pass through. */
#define STATAT_BODY(name, path, st, flags, ...)                                                    \
	do {                                                                                       \
		int _ret;                                                                          \
		if (stat_path(path, (struct stat *)(st), &_ret))                                   \
			return _ret;                                                               \
		_ret = CALL_REAL(name, __VA_ARGS__);                                               \
		if (_ret == 0 && empty_path(path, flags))                                          \
			fixup_fd_stat((struct stat *)(st));                                        \
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
	STAT_FD_BODY(fstat, st, fd, st);
}

_public_ int fstat64(int fd, struct stat64 *st)
{
	STAT_FD_BODY(fstat64, st, fd, st);
}

_public_ int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
	STATAT_BODY(fstatat, path, st, flags, dirfd, path, st, flags);
}

_public_ int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
	STATAT_BODY(fstatat64, path, st, flags, dirfd, path, st, flags);
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
	STAT_FD_BODY(__fxstat, st, ver, fd, st);
}

_public_ int __fxstat64(int ver, int fd, struct stat64 *st)
{
	STAT_FD_BODY(__fxstat64, st, ver, fd, st);
}

_public_ int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
	STATAT_BODY(__fxstatat, path, st, flags, ver, dirfd, path, st, flags);
}

_public_ int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
	STATAT_BODY(__fxstatat64, path, st, flags, ver, dirfd, path, st, flags);
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
	    device_known(stx->stx_ino) && preload_real_fstat(dirfd, &st) == 0) {
		fake_device_stat(&st);
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

/* ---- statfs: session fds report the proposed LUO_SESSION_MAGIC ---- */

static bool is_session_fd(int fd)
{
	int saved = errno;
	bool r = classify_fd(fd) == PRELOAD_FD_SESSION;

	errno = saved;
	return r;
}

_public_ int fstatfs(int fd, struct statfs *buf)
{
	int r = CALL_REAL(fstatfs, fd, buf);

	if (r == 0 && is_session_fd(fd))
		buf->f_type = LUO_SESSION_MAGIC;
	return r;
}

_public_ int fstatfs64(int fd, struct statfs64 *buf)
{
	int r = CALL_REAL(fstatfs64, fd, buf);

	if (r == 0 && is_session_fd(fd))
		buf->f_type = LUO_SESSION_MAGIC;
	return r;
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
