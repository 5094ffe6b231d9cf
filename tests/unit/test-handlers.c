/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: tests of the built-in file handlers
 *
 * The handler operations are called directly on real files, the way the
 * engine calls them: on luod's own dup of the file (struct luo_handler_file),
 * with the record left in f->data between preserve and retrieve.  Each case
 * closes the program's original fd before retrieving where that matters, so
 * that what comes back can only come through the handler's file.
 */
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <libfdt.h>
#include <linux/magic.h>

#include "basic/macro.h"
#include "core/engine.h"
#include "core/handler.h"
#include "core/handlers/handlers-internal.h"
#include "core/state.h"
#include "harness.h"

static const struct luo_handler *const all_handlers[] = {
	&luo_handler_memfd,   &luo_handler_socket,  &luo_handler_pipe,
	&luo_handler_eventfd, &luo_handler_regular,
};

/* What the engine does on preserve: take its own dup and keep it in f. */
static void hf_init(struct luo_handler_file *f, int fd)
{
	*f = (struct luo_handler_file){ .fd = fcntl(fd, F_DUPFD_CLOEXEC, 3) };
	ASSERT_TRUE(f->fd >= 0);
}

static void hf_done(struct luo_handler_file *f)
{
	f->fd = safe_close(f->fd);
	free(f->data);
	f->data = NULL;
	f->data_size = 0;
}

static bool accepts(const struct luo_handler *h, int fd)
{
	struct stat st;

	ASSERT_OK(RET_NERRNO(fstat(fd, &st)));
	return h->can_preserve(h, fd, &st);
}

/* The handler the engine would pick: the first, in registration order, that accepts. */
static const struct luo_handler *pick(int fd)
{
	for (size_t i = 0; i < ELEMENTSOF(all_handlers); i++)
		if (accepts(all_handlers[i], fd))
			return all_handlers[i];
	return NULL;
}

static void get_id(const struct luo_handler *h, int fd, struct luo_file_id *ret)
{
	struct stat st;

	ASSERT_OK(RET_NERRNO(fstat(fd, &st)));
	ASSERT_OK(h->get_id(h, fd, &st, ret));
}

static bool same_id(const struct luo_file_id *a, const struct luo_file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->extra == b->extra &&
	       a->by_description == b->by_description;
}

static int make_memfd(const char *data, unsigned flags)
{
	int fd = memfd_create("test", MFD_CLOEXEC | flags);

	ASSERT_TRUE(fd >= 0);
	if (data)
		ASSERT_EQ(write(fd, data, strlen(data)), (long long)strlen(data));
	return fd;
}

static off_t position(int fd)
{
	return lseek(fd, 0, SEEK_CUR);
}

/* A listening TCP socket on 127.0.0.1 with a kernel-chosen port. */
static int make_listener(uint16_t *ret_port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ASSERT_TRUE(fd >= 0);
	ASSERT_OK(RET_NERRNO(bind(fd, (struct sockaddr *)&sa, sizeof(sa))));
	ASSERT_OK(RET_NERRNO(listen(fd, 16)));
	ASSERT_OK(RET_NERRNO(getsockname(fd, (struct sockaddr *)&sa, &len)));
	*ret_port = ntohs(sa.sin_port);
	return fd;
}

static int connect_to(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ASSERT_TRUE(fd >= 0);
	ASSERT_OK(RET_NERRNO(connect(fd, (struct sockaddr *)&sa, sizeof(sa))));
	return fd;
}

/* A linked file in tmpfs (/dev/shm), or a skip where there is none. */
static int make_linked_tmpfs_file(char *path, size_t size)
{
	struct statfs sfs;
	int fd;

	if (statfs("/dev/shm", &sfs) < 0 || (unsigned long)sfs.f_type != TMPFS_MAGIC)
		test_skip("/dev/shm is not a tmpfs");
	snprintf(path, size, "/dev/shm/luo-test-handlers-%d", (int)getpid());
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ASSERT_TRUE(fd >= 0);
	return fd;
}

/* memfd */

TEST(memfd_keeps_bytes_size_position_and_seals)
{
	struct luo_handler_file f;
	char buf[32] = { 0 };
	int fd = make_memfd("hello, live update", MFD_ALLOW_SEALING), seals;
	struct stat st;

	ASSERT_OK(RET_NERRNO(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK)));
	ASSERT_EQ(lseek(fd, 7, SEEK_SET), 7);
	ASSERT_TRUE(accepts(&luo_handler_memfd, fd));
	hf_init(&f, fd);
	ASSERT_OK(luo_handler_memfd.preserve(&f));
	ASSERT_OK(luo_handler_memfd.freeze(&f));
	/* The position drifts through the program's fd: retrieve must put it back. */
	ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
	fd = safe_close(fd);

	ASSERT_OK(luo_handler_memfd.retrieve(&f));
	ASSERT_EQ(position(f.fd), 7);
	ASSERT_OK(RET_NERRNO(fstat(f.fd, &st)));
	ASSERT_EQ(st.st_size, 18);
	seals = fcntl(f.fd, F_GET_SEALS);
	ASSERT_EQ(seals, F_SEAL_GROW | F_SEAL_SHRINK);
	ASSERT_EQ(pread(f.fd, buf, sizeof(buf), 0), 18);
	ASSERT_STREQ(buf, "hello, live update");
	ASSERT_TRUE(luo_handler_memfd.can_finish(&f));
	hf_done(&f);
}

TEST(memfd_freeze_records_the_state_at_the_update)
{
	struct luo_handler_file f;
	int fd = make_memfd("0123456789", 0);
	void *record;

	ASSERT_EQ(lseek(fd, 2, SEEK_SET), 2);
	hf_init(&f, fd);
	ASSERT_OK(luo_handler_memfd.preserve(&f));
	record = f.data;
	ASSERT_EQ(lseek(fd, 5, SEEK_SET), 5);
	ASSERT_OK(luo_handler_memfd.freeze(&f));
	/* Rewritten in place: freeze has nothing to allocate, so nothing to fail on. */
	ASSERT_TRUE(f.data == record);
	ASSERT_EQ(lseek(fd, 9, SEEK_SET), 9);
	ASSERT_OK(luo_handler_memfd.retrieve(&f));
	ASSERT_EQ(position(fd), 5);
	hf_done(&f);
	safe_close(fd);
}

/* A seal added after the handover is no reason to lose the file: the successor
 * gets it with the seals it has then. */
TEST(memfd_retrieve_keeps_seals_added_after_handover)
{
	struct luo_handler_file f;
	int fd = make_memfd("data", MFD_ALLOW_SEALING);

	hf_init(&f, fd);
	ASSERT_OK(luo_handler_memfd.preserve(&f));
	ASSERT_OK(luo_handler_memfd.freeze(&f));
	ASSERT_OK(RET_NERRNO(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)));
	ASSERT_OK(luo_handler_memfd.retrieve(&f));
	ASSERT_EQ(fcntl(fd, F_GET_SEALS) & F_SEAL_WRITE, F_SEAL_WRITE);
	hf_done(&f);
	safe_close(fd);
}

TEST(memfd_retrieve_refuses_another_file)
{
	struct luo_handler_file f;
	int fd = make_memfd("one", 0), other = make_memfd("two", 0);

	hf_init(&f, fd);
	ASSERT_OK(luo_handler_memfd.preserve(&f));
	/* As if the state blob named the wrong fd slot. */
	safe_close(f.fd);
	f.fd = fcntl(other, F_DUPFD_CLOEXEC, 3);
	ASSERT_ERR(luo_handler_memfd.retrieve(&f), -EIO);
	hf_done(&f);
	safe_close(fd);
	safe_close(other);
}

TEST(memfd_takes_unlinked_tmpfs_files)
{
	struct statfs sfs;
	int fd;

	if (statfs("/dev/shm", &sfs) < 0 || (unsigned long)sfs.f_type != TMPFS_MAGIC)
		test_skip("/dev/shm is not a tmpfs");
	fd = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		test_skip("O_TMPFILE on /dev/shm: %s", strerror(errno));
	ASSERT_TRUE(pick(fd) == &luo_handler_memfd);
	safe_close(fd);
}

TEST(memfd_refuses_hugetlb)
{
	int fd = memfd_create("huge", MFD_CLOEXEC | MFD_HUGETLB);

	if (fd < 0)
		test_skip("no hugetlb memfd: %s", strerror(errno));
	for (size_t i = 0; i < ELEMENTSOF(all_handlers); i++)
		ASSERT_FALSE(accepts(all_handlers[i], fd));
	safe_close(fd);
}

/* handler order */

TEST(order_memfd_takes_memfd_regular_takes_linked_tmpfs)
{
	char path[128];
	int memfd = make_memfd(NULL, 0), linked = make_linked_tmpfs_file(path, sizeof(path));

	ASSERT_TRUE(pick(memfd) == &luo_handler_memfd);
	ASSERT_TRUE(pick(linked) == &luo_handler_regular);
	ASSERT_FALSE(accepts(&luo_handler_memfd, linked));
	/* Disjoint whatever the order: regular refuses the memfd on its own. */
	ASSERT_FALSE(accepts(&luo_handler_regular, memfd));
	ASSERT_OK(RET_NERRNO(unlink(path)));
	/* Unlinked, the same file becomes a memfd's kind. */
	ASSERT_TRUE(pick(linked) == &luo_handler_memfd);
	safe_close(memfd);
	safe_close(linked);
}

TEST(order_each_kind_finds_its_handler)
{
	int sv[2], pfd[2], efd = eventfd(0, EFD_CLOEXEC), reg;
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/file", test_tmpdir());
	reg = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_TRUE(reg >= 0 && efd >= 0);
	ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
	ASSERT_OK(RET_NERRNO(pipe2(pfd, O_CLOEXEC)));
	ASSERT_TRUE(pick(sv[0]) == &luo_handler_socket);
	ASSERT_TRUE(pick(pfd[0]) == &luo_handler_pipe);
	ASSERT_TRUE(pick(pfd[1]) == &luo_handler_pipe);
	ASSERT_TRUE(pick(efd) == &luo_handler_eventfd);
	ASSERT_TRUE(pick(reg) == &luo_handler_regular);
	safe_close(sv[0]);
	safe_close(sv[1]);
	safe_close(pfd[0]);
	safe_close(pfd[1]);
	safe_close(efd);
	safe_close(reg);
}

/* refusals */

static void assert_no_handler(int fd, const char *what)
{
	for (size_t i = 0; i < ELEMENTSOF(all_handlers); i++)
		if (accepts(all_handlers[i], fd))
			test_fail_at(__FILE__, __LINE__, "%s accepted by %s", what,
				     all_handlers[i]->compatible);
}

TEST(refuses_dev_null_directories_o_path_and_other_anon_files)
{
	sigset_t mask;
	char path[PATH_MAX];
	int fds[8], n = 0, reg;

	snprintf(path, sizeof(path), "%s/file", test_tmpdir());
	reg = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_TRUE(reg >= 0);
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	fds[n++] = open("/dev/null", O_RDWR | O_CLOEXEC);
	fds[n++] = open(test_tmpdir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fds[n++] = open(path, O_PATH | O_CLOEXEC);
	fds[n++] = epoll_create1(EPOLL_CLOEXEC);
	fds[n++] = signalfd(-1, &mask, SFD_CLOEXEC);
	fds[n++] = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	fds[n++] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	for (int i = 0; i < n; i++)
		ASSERT_TRUE(fds[i] >= 0);
	assert_no_handler(fds[0], "/dev/null");
	assert_no_handler(fds[1], "a directory");
	assert_no_handler(fds[2], "an O_PATH fd");
	assert_no_handler(fds[3], "an epoll fd");
	assert_no_handler(fds[4], "a signalfd");
	assert_no_handler(fds[5], "a timerfd");
	assert_no_handler(fds[6], "a namespace file");
#ifdef SYS_pidfd_open
	{
		int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);

		if (pidfd >= 0) {
			assert_no_handler(pidfd, "a pidfd");
			safe_close(pidfd);
		}
	}
#endif
	for (int i = 0; i < n; i++)
		safe_close(fds[i]);
	safe_close(reg);
}

/* sockets */

TEST(socket_listening_tcp_keeps_accepting_on_its_port)
{
	struct luo_handler_file f;
	uint16_t port;
	int lfd = make_listener(&port), client, conn;
	char c = 0;

	ASSERT_TRUE(pick(lfd) == &luo_handler_socket);
	hf_init(&f, lfd);
	ASSERT_OK(luo_handler_socket.preserve(&f));
	lfd = safe_close(lfd);
	ASSERT_OK(luo_handler_socket.retrieve(&f));

	client = connect_to(port);
	conn = accept4(f.fd, NULL, NULL, SOCK_CLOEXEC);
	ASSERT_TRUE(conn >= 0);
	ASSERT_EQ(write(client, "x", 1), 1);
	ASSERT_EQ(read(conn, &c, 1), 1);
	ASSERT_EQ(c, 'x');
	safe_close(conn);
	safe_close(client);
	hf_done(&f);
}

TEST(socket_takes_any_family_and_state)
{
	int fds[8], n = 0, sv[2], dg[2];
	uint16_t port;

	ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
	ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dg)));
	fds[n++] = sv[0];
	fds[n++] = sv[1];
	fds[n++] = dg[0];
	fds[n++] = dg[1];
	fds[n++] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	fds[n++] = make_listener(&port);
	fds[n++] = connect_to(port);
	fds[n++] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	for (int i = 0; i < n; i++) {
		struct luo_handler_file f;

		ASSERT_TRUE(fds[i] >= 0);
		ASSERT_TRUE(pick(fds[i]) == &luo_handler_socket);
		hf_init(&f, fds[i]);
		ASSERT_OK(luo_handler_socket.preserve(&f));
		ASSERT_OK(luo_handler_socket.retrieve(&f));
		hf_done(&f);
		safe_close(fds[i]);
	}
}

/* Sends fd (with one byte) on sock; 0 or -errno. */
static int send_fd(int sock, int fd)
{
	char byte = 'x';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control = {};
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = &control,
		.msg_controllen = sizeof(control),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -errno : 0;
}

static int passrights(int fd)
{
	int v = -1;
	socklen_t len = sizeof(v);

	return getsockopt(fd, SOL_SOCKET, 83 /* SO_PASSRIGHTS */, &v, &len) < 0 ? -errno : v;
}

/*
 * A unix socket with a socket in flight in its receive queue could hold a
 * session's own fd: refused with ELOOP, and left exactly as it was (queue,
 * peek offset, SO_PASSRIGHTS).  Other files in flight are no such danger.
 */
TEST(socket_with_a_socket_in_flight_is_refused)
{
	struct luo_handler_file f;
	int types[] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };

	for (size_t t = 0; t < ELEMENTSOF(types); t++) {
		int sv[2], other[2], mem = memfd_create("x", MFD_CLOEXEC), off = 0;
		socklen_t len = sizeof(off);
		char buf[8];

		ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, types[t] | SOCK_CLOEXEC, 0, sv)));
		ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, other)));
		/* A memfd first, then plain bytes, then a socket: the whole queue is read. */
		ASSERT_OK(send_fd(sv[1], mem));
		ASSERT_EQ(write(sv[1], "ab", 2), 2);
		hf_init(&f, sv[0]);
		ASSERT_OK(luo_handler_socket.preserve(&f));
		ASSERT_OK(luo_handler_socket.retrieve(&f));
		hf_done(&f);
		ASSERT_OK(send_fd(sv[1], other[0]));
		hf_init(&f, sv[0]);
		ASSERT_ERR(luo_handler_socket.preserve(&f), -ELOOP);
		hf_done(&f);
		ASSERT_OK(RET_NERRNO(getsockopt(sv[0], SOL_SOCKET, SO_PEEK_OFF, &off, &len)));
		ASSERT_EQ(off, -1);
		if (passrights(sv[0]) >= 0)
			ASSERT_EQ(passrights(sv[0]), 1);
		/* Nothing was taken off the queue. */
		ASSERT_EQ(recv(sv[0], buf, 1, MSG_DONTWAIT), 1);
		ASSERT_EQ(buf[0], 'x');
		safe_close(sv[0]);
		safe_close(sv[1]);
		safe_close(other[0]);
		safe_close(other[1]);
		safe_close(mem);
	}
}

/* While preserved, a unix socket takes no fds; it is given back as it was. */
TEST(preserved_unix_socket_refuses_fds_until_it_leaves)
{
	struct luo_handler_file f;
	int sv[2], mem = memfd_create("x", MFD_CLOEXEC);

	ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
	if (passrights(sv[0]) < 0) {
		safe_close(sv[0]);
		safe_close(sv[1]);
		safe_close(mem);
		test_skip("this kernel has no SO_PASSRIGHTS (Linux 6.16)");
	}
	hf_init(&f, sv[0]);
	ASSERT_OK(luo_handler_socket.preserve(&f));
	ASSERT_EQ(passrights(sv[0]), 0);
	ASSERT_ERR(send_fd(sv[1], mem), -EPERM);
	ASSERT_OK(luo_handler_socket.retrieve(&f));
	ASSERT_EQ(passrights(sv[0]), 1);
	ASSERT_OK(send_fd(sv[1], mem));
	hf_done(&f);
	/* Dropped before it was retrieved: given back too. */
	hf_init(&f, sv[1]);
	ASSERT_OK(luo_handler_socket.preserve(&f));
	ASSERT_EQ(passrights(sv[1]), 0);
	luo_handler_socket.unpreserve(&f);
	ASSERT_EQ(passrights(sv[1]), 1);
	hf_done(&f);
	/* A listening socket is left alone: its connections would inherit it. */
	{
		int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		ASSERT_TRUE(l >= 0);
		snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "luo-test-%d", (int)getpid());
		ASSERT_OK(RET_NERRNO(bind(l, (struct sockaddr *)&sa, sizeof(sa))));
		ASSERT_OK(RET_NERRNO(listen(l, 4)));
		hf_init(&f, l);
		ASSERT_OK(luo_handler_socket.preserve(&f));
		ASSERT_EQ(passrights(l), 1);
		hf_done(&f);
		safe_close(l);
	}
	safe_close(sv[0]);
	safe_close(sv[1]);
	safe_close(mem);
}

/* A socket's record names it by its inode; what would only be checked again
 * (type and protocol of all but unix sockets, whose type the preserve needs;
 * the namespace) is left unknown rather than asked of every socket. */
TEST(socket_record_names_the_socket_by_its_inode)
{
	int fds[3] = {
		socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0),
		socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0),
		socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0),
	};

	for (int i = 0; i < 3; i++) {
		struct luo_handler_file f;
		struct stat st;
		uint64_t rec[7];

		ASSERT_TRUE(fds[i] >= 0);
		ASSERT_OK(RET_NERRNO(fstat(fds[i], &st)));
		hf_init(&f, fds[i]);
		ASSERT_OK(luo_handler_socket.preserve(&f));
		ASSERT_OK(handler_record_parse(f.data, f.data_size, 2, rec, 7));
		ASSERT_EQ(rec[0], (uint64_t)st.st_dev);
		ASSERT_EQ(rec[1], (uint64_t)st.st_ino);
		ASSERT_EQ(rec[2], (uint64_t)(i < 2 ? AF_INET : AF_UNIX));
		ASSERT_EQ(rec[3], i < 2 ? HANDLER_UNKNOWN : (uint64_t)SOCK_SEQPACKET);
		ASSERT_EQ(rec[4], HANDLER_UNKNOWN);
		ASSERT_EQ(rec[5], HANDLER_UNKNOWN);
		/* The check after a replay still finds it the same socket. */
		ASSERT_OK(luo_handler_socket.retrieve(&f));
		hf_done(&f);
		safe_close(fds[i]);
	}
}

/* socket-v1 files (an older luod's, every field recorded) are still read:
 * checked against every field, never chosen for a new socket. */
TEST(socket_v1_files_of_an_older_luod_are_read)
{
	luo_engine *e = NULL;
	int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct luo_handler_file f;
	struct stat st;
	uint64_t rec[7];

	ASSERT_TRUE(tcp >= 0 && udp >= 0);
	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_default_handlers(e));
	ASSERT_TRUE(luo_engine_find_handler(e, "socket-v1") == &luo_handler_socket_v1);
	ASSERT_TRUE(luo_handler_socket_v1.can_preserve == NULL);
	ASSERT_TRUE(pick(tcp) == &luo_handler_socket);
	ASSERT_STREQ(luo_handler_socket.compatible, "socket-v2");

	ASSERT_OK(RET_NERRNO(fstat(tcp, &st)));
	rec[0] = (uint64_t)st.st_dev;
	rec[1] = (uint64_t)st.st_ino;
	rec[2] = AF_INET;
	rec[3] = SOCK_STREAM;
	rec[4] = IPPROTO_TCP;
	rec[5] = HANDLER_UNKNOWN;
	rec[6] = HANDLER_UNKNOWN;
	hf_init(&f, tcp);
	ASSERT_OK(handler_record_store(&f.data, &f.data_size, 2, rec, 7));
	ASSERT_OK(luo_handler_socket_v1.retrieve(&f));
	/* A record that says UDP is not this socket. */
	rec[3] = SOCK_DGRAM;
	ASSERT_OK(handler_record_store(&f.data, &f.data_size, 2, rec, 7));
	ASSERT_ERR(luo_handler_socket_v1.retrieve(&f), -EIO);
	hf_done(&f);
	safe_close(tcp);
	safe_close(udp);
	luo_engine_free(e);
}

TEST(socket_retrieve_refuses_another_kind_of_socket)
{
	struct luo_handler_file f;
	int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	ASSERT_TRUE(tcp >= 0 && udp >= 0);
	hf_init(&f, tcp);
	ASSERT_OK(luo_handler_socket.preserve(&f));
	safe_close(f.fd);
	f.fd = fcntl(udp, F_DUPFD_CLOEXEC, 3);
	ASSERT_ERR(luo_handler_socket.retrieve(&f), -EIO);
	hf_done(&f);
	safe_close(tcp);
	safe_close(udp);
}

TEST(socket_handler_depends_on_the_netns_flb)
{
	ASSERT_TRUE(luo_handler_socket.flb == &luo_flb_netns);
	ASSERT_STREQ(luo_flb_netns.compatible, "netns-v1");
}

TEST(netns_flb_holds_and_checks_the_namespace)
{
	struct luo_flb flb = { .ops = &luo_flb_netns, .fd = -EBADF };
	struct stat ns, held;

	ASSERT_OK(RET_NERRNO(stat("/proc/self/ns/net", &ns)));
	ASSERT_OK(luo_flb_netns.preserve(&flb));
	ASSERT_TRUE(flb.fd >= 0);
	ASSERT_TRUE(fcntl(flb.fd, F_GETFD) & FD_CLOEXEC);
	ASSERT_OK(RET_NERRNO(fstat(flb.fd, &held)));
	ASSERT_EQ(held.st_ino, ns.st_ino);
	ASSERT_OK(luo_flb_netns.retrieve(&flb));

	/* An fd slot that is not the recorded namespace is refused. */
	safe_close(flb.fd);
	flb.fd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	ASSERT_TRUE(flb.fd >= 0);
	ASSERT_ERR(luo_flb_netns.retrieve(&flb), -EIO);

	flb.data_size--;
	ASSERT_ERR(luo_flb_netns.retrieve(&flb), -EBADMSG);
	safe_close(flb.fd);
	free(flb.data);
}

/* pipes */

TEST(pipe_keeps_buffered_bytes)
{
	struct luo_handler_file r, w;
	int pfd[2];
	char buf[16] = { 0 };

	ASSERT_OK(RET_NERRNO(pipe2(pfd, O_CLOEXEC)));
	ASSERT_EQ(write(pfd[1], "buffered", 8), 8);
	hf_init(&r, pfd[0]);
	hf_init(&w, pfd[1]);
	ASSERT_OK(luo_handler_pipe.preserve(&r));
	ASSERT_OK(luo_handler_pipe.preserve(&w));
	ASSERT_OK(luo_handler_pipe.freeze(&r));
	ASSERT_OK(luo_handler_pipe.freeze(&w));
	safe_close(pfd[0]);
	safe_close(pfd[1]);

	ASSERT_OK(luo_handler_pipe.retrieve(&r));
	ASSERT_OK(luo_handler_pipe.retrieve(&w));
	ASSERT_EQ(read(r.fd, buf, sizeof(buf)), 8);
	ASSERT_STREQ(buf, "buffered");
	ASSERT_EQ(write(w.fd, "!", 1), 1);
	ASSERT_EQ(read(r.fd, buf, 1), 1);
	ASSERT_EQ(buf[0], '!');
	hf_done(&r);
	hf_done(&w);
}

TEST(pipe_ends_differ_in_identity_dups_do_not)
{
	struct luo_file_id rid, wid, did;
	int pfd[2], dup_r;

	ASSERT_OK(RET_NERRNO(pipe2(pfd, O_CLOEXEC)));
	dup_r = fcntl(pfd[0], F_DUPFD_CLOEXEC, 3);
	get_id(&luo_handler_pipe, pfd[0], &rid);
	get_id(&luo_handler_pipe, pfd[1], &wid);
	get_id(&luo_handler_pipe, dup_r, &did);
	ASSERT_FALSE(same_id(&rid, &wid));
	ASSERT_TRUE(same_id(&rid, &did));
	ASSERT_FALSE(rid.by_description);
	safe_close(dup_r);
	safe_close(pfd[0]);
	safe_close(pfd[1]);
}

TEST(pipe_retrieve_refuses_the_other_end)
{
	struct luo_handler_file f;
	int pfd[2];

	ASSERT_OK(RET_NERRNO(pipe2(pfd, O_CLOEXEC)));
	hf_init(&f, pfd[0]);
	ASSERT_OK(luo_handler_pipe.preserve(&f));
	safe_close(f.fd);
	f.fd = fcntl(pfd[1], F_DUPFD_CLOEXEC, 3);
	ASSERT_ERR(luo_handler_pipe.retrieve(&f), -EIO);
	hf_done(&f);
	safe_close(pfd[0]);
	safe_close(pfd[1]);
}

TEST(pipe_takes_fifos)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/fifo", test_tmpdir());
	ASSERT_OK(RET_NERRNO(mkfifo(path, 0600)));
	fd = open(path, O_RDWR | O_CLOEXEC);
	ASSERT_TRUE(fd >= 0);
	ASSERT_TRUE(pick(fd) == &luo_handler_pipe);
	safe_close(fd);
}

/* eventfds */

TEST(eventfd_keeps_its_counter)
{
	struct luo_handler_file f;
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	uint64_t v = 41;

	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(write(fd, &v, sizeof(v)), 8);
	v = 1;
	ASSERT_EQ(write(fd, &v, sizeof(v)), 8);
	hf_init(&f, fd);
	ASSERT_OK(luo_handler_eventfd.preserve(&f));
	ASSERT_OK(luo_handler_eventfd.freeze(&f));
	safe_close(fd);
	ASSERT_OK(luo_handler_eventfd.retrieve(&f));
	ASSERT_EQ(read(f.fd, &v, sizeof(v)), 8);
	ASSERT_EQ(v, 42);
	hf_done(&f);
}

TEST(eventfd_identity_is_the_open_file_description)
{
	struct luo_file_id a, b;
	int e1 = eventfd(0, EFD_CLOEXEC), e2 = eventfd(0, EFD_CLOEXEC);

	ASSERT_TRUE(e1 >= 0 && e2 >= 0);
	get_id(&luo_handler_eventfd, e1, &a);
	get_id(&luo_handler_eventfd, e2, &b);
	/* Same anonymous inode for both: only kcmp, which the engine runs, tells them apart. */
	ASSERT_TRUE(a.by_description);
	ASSERT_TRUE(b.by_description);
	ASSERT_TRUE(accepts(&luo_handler_eventfd, e1));
	ASSERT_TRUE(accepts(&luo_handler_eventfd, e2));
	safe_close(e1);
	safe_close(e2);
}

TEST(eventfd_retrieve_refuses_another_semaphore_mode)
{
	struct luo_handler_file f;
	int sem = eventfd(3, EFD_CLOEXEC | EFD_SEMAPHORE), plain = eventfd(3, EFD_CLOEXEC);
	char info[512] = { 0 }, path[64];
	int ifd;
	uint64_t v;

	ASSERT_TRUE(sem >= 0 && plain >= 0);
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", sem);
	ifd = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_TRUE(ifd >= 0);
	ASSERT_TRUE(read(ifd, info, sizeof(info) - 1) > 0);
	safe_close(ifd);
	if (!strstr(info, "eventfd-semaphore"))
		test_skip("the kernel does not report eventfd-semaphore");

	hf_init(&f, sem);
	ASSERT_OK(luo_handler_eventfd.preserve(&f));
	ASSERT_OK(luo_handler_eventfd.retrieve(&f));
	ASSERT_EQ(read(f.fd, &v, sizeof(v)), 8);
	ASSERT_EQ(v, 1); /* still a semaphore */
	safe_close(f.fd);
	f.fd = fcntl(plain, F_DUPFD_CLOEXEC, 3);
	ASSERT_ERR(luo_handler_eventfd.retrieve(&f), -EIO);
	hf_done(&f);
	safe_close(sem);
	safe_close(plain);
}

/* regular files */

TEST(regular_comes_back_at_its_position)
{
	struct luo_handler_file f;
	char path[PATH_MAX], buf[8] = { 0 };
	int fd;

	snprintf(path, sizeof(path), "%s/file", test_tmpdir());
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(write(fd, "abcdefgh", 8), 8);
	ASSERT_EQ(lseek(fd, 3, SEEK_SET), 3);
	ASSERT_TRUE(pick(fd) == &luo_handler_regular);
	hf_init(&f, fd);
	ASSERT_OK(luo_handler_regular.preserve(&f));
	ASSERT_OK(luo_handler_regular.freeze(&f));
	ASSERT_EQ(lseek(fd, 0, SEEK_END), 8);
	safe_close(fd);
	ASSERT_OK(luo_handler_regular.retrieve(&f));
	ASSERT_EQ(position(f.fd), 3);
	ASSERT_EQ(read(f.fd, buf, 5), 5);
	ASSERT_STREQ(buf, "defgh");
	hf_done(&f);
}

TEST(regular_retrieve_refuses_another_file)
{
	struct luo_handler_file f;
	char p1[PATH_MAX], p2[PATH_MAX];
	int a, b;

	snprintf(p1, sizeof(p1), "%s/a", test_tmpdir());
	snprintf(p2, sizeof(p2), "%s/b", test_tmpdir());
	a = open(p1, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	b = open(p2, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_TRUE(a >= 0 && b >= 0);
	hf_init(&f, a);
	ASSERT_OK(luo_handler_regular.preserve(&f));
	safe_close(f.fd);
	f.fd = fcntl(b, F_DUPFD_CLOEXEC, 3);
	ASSERT_ERR(luo_handler_regular.retrieve(&f), -EIO);
	hf_done(&f);
	safe_close(a);
	safe_close(b);
}

/* records */

/* One healthy file per handler, for the checks every handler must pass. */
static int make_file_for(const struct luo_handler *h, int *ret_extra)
{
	int fd = -EBADF;

	*ret_extra = -EBADF;
	if (h == &luo_handler_memfd) {
		fd = make_memfd("x", 0);
	} else if (h == &luo_handler_socket) {
		int sv[2];

		ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
		fd = sv[0];
		*ret_extra = sv[1];
	} else if (h == &luo_handler_pipe) {
		int pfd[2];

		ASSERT_OK(RET_NERRNO(pipe2(pfd, O_CLOEXEC)));
		fd = pfd[0];
		*ret_extra = pfd[1];
	} else if (h == &luo_handler_eventfd) {
		fd = eventfd(0, EFD_CLOEXEC);
	} else if (h == &luo_handler_regular) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/file", test_tmpdir());
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	}
	ASSERT_TRUE(fd >= 0);
	return fd;
}

TEST(every_handler_refuses_a_corrupted_record)
{
	for (size_t i = 0; i < ELEMENTSOF(all_handlers); i++) {
		const struct luo_handler *h = all_handlers[i];
		struct luo_handler_file f;
		int extra, fd = make_file_for(h, &extra);
		uint8_t *p;

		test_diag("%s", h->compatible);
		hf_init(&f, fd);
		ASSERT_OK(h->preserve(&f));
		ASSERT_TRUE(f.data && f.data_size > 8);
		p = f.data;

		f.data_size--; /* wrong size */
		ASSERT_ERR(h->retrieve(&f), -EBADMSG);
		f.data_size++;
		p[0] ^= 0xff; /* wrong version */
		ASSERT_ERR(h->retrieve(&f), -EBADMSG);
		p[0] ^= 0xff;
		p[4] ^= 0x01; /* wrong field count */
		ASSERT_ERR(h->retrieve(&f), -EBADMSG);
		p[4] ^= 0x01;
		f.data = NULL; /* no record at all */
		ASSERT_ERR(h->retrieve(&f), -EBADMSG);
		f.data = p;
		ASSERT_OK(h->retrieve(&f));

		hf_done(&f);
		safe_close(fd);
		safe_close(extra);
	}
}

TEST(every_handler_freezes_and_finishes_a_healthy_file)
{
	for (size_t i = 0; i < ELEMENTSOF(all_handlers); i++) {
		const struct luo_handler *h = all_handlers[i];
		struct luo_handler_file f;
		int extra, fd = make_file_for(h, &extra);
		struct luo_file_id a, b;
		int dup_fd;

		test_diag("%s", h->compatible);
		ASSERT_TRUE(strlen(h->compatible) < LUO_COMPATIBLE_MAX);
		ASSERT_TRUE(accepts(h, fd));
		hf_init(&f, fd);
		/* The identity of luod's dup is the identity of the program's fd. */
		get_id(h, fd, &a);
		get_id(h, f.fd, &b);
		ASSERT_TRUE(same_id(&a, &b));
		ASSERT_OK(h->preserve(&f));
		ASSERT_TRUE(f.data_size <= LUO_HANDLER_DATA_MAX);
		if (h->freeze)
			ASSERT_OK(h->freeze(&f));
		if (h->unfreeze)
			h->unfreeze(&f);
		if (h->freeze)
			ASSERT_OK(h->freeze(&f));
		ASSERT_OK(h->retrieve(&f));
		/* The engine hands out dups after retrieve: they must be the same open file. */
		dup_fd = fcntl(f.fd, F_DUPFD_CLOEXEC, 3);
		ASSERT_TRUE(dup_fd >= 0);
		ASSERT_TRUE(h->can_finish(&f));
		if (h->finish)
			h->finish(&f);
		safe_close(dup_fd);
		hf_done(&f);
		safe_close(fd);
		safe_close(extra);
	}
}

/* Lowers RLIMIT_NOFILE so that no new fd can be opened; returns the old limit. */
static struct rlimit no_fd_to_spare(void)
{
	struct rlimit old, rl;
	int lowest = fcntl(0, F_DUPFD_CLOEXEC, 0);

	ASSERT_TRUE(lowest >= 0);
	safe_close(lowest);
	ASSERT_OK(RET_NERRNO(getrlimit(RLIMIT_NOFILE, &old)));
	rl = old;
	rl.rlim_cur = (rlim_t)lowest;
	ASSERT_OK(RET_NERRNO(setrlimit(RLIMIT_NOFILE, &rl)));
	ASSERT_ERRNO(fcntl(0, F_DUPFD_CLOEXEC, 0), EMFILE);
	return old;
}

TEST(every_handler_freezes_and_retrieves_with_no_fd_to_spare)
{
	struct luo_handler_file f[ELEMENTSOF(all_handlers)];
	int fds[ELEMENTSOF(all_handlers)], extras[ELEMENTSOF(all_handlers)];
	struct rlimit old;

	for (size_t i = 0; i < ELEMENTSOF(all_handlers); i++) {
		fds[i] = make_file_for(all_handlers[i], &extras[i]);
		hf_init(&f[i], fds[i]);
		ASSERT_OK(all_handlers[i]->preserve(&f[i]));
	}
	/* luod may sit at its fd limit when an update comes: that is no reason to fail. */
	old = no_fd_to_spare();
	for (size_t i = 0; i < ELEMENTSOF(all_handlers); i++) {
		test_diag("%s", all_handlers[i]->compatible);
		if (all_handlers[i]->freeze)
			ASSERT_OK(all_handlers[i]->freeze(&f[i]));
		ASSERT_OK(all_handlers[i]->retrieve(&f[i]));
	}
	ASSERT_OK(RET_NERRNO(setrlimit(RLIMIT_NOFILE, &old)));
	for (size_t i = 0; i < ELEMENTSOF(all_handlers); i++) {
		hf_done(&f[i]);
		safe_close(fds[i]);
		safe_close(extras[i]);
	}
}

TEST(eventfd_freeze_keeps_the_semaphore_mode)
{
	struct luo_handler_file f;
	int sem = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE), plain = eventfd(0, EFD_CLOEXEC);
	struct rlimit old;

	ASSERT_TRUE(sem >= 0 && plain >= 0);
	hf_init(&f, sem);
	ASSERT_OK(luo_handler_eventfd.preserve(&f));
	old = no_fd_to_spare();
	ASSERT_OK(luo_handler_eventfd.freeze(&f));
	ASSERT_OK(RET_NERRNO(setrlimit(RLIMIT_NOFILE, &old)));
	/* Had freeze lost the mode, a plain eventfd would now pass for this one. */
	safe_close(f.fd);
	f.fd = fcntl(plain, F_DUPFD_CLOEXEC, 3);
	if (luo_handler_eventfd.retrieve(&f) == 0)
		test_skip("the kernel does not report eventfd-semaphore");
	ASSERT_ERR(luo_handler_eventfd.retrieve(&f), -EIO);
	hf_done(&f);
	safe_close(sem);
	safe_close(plain);
}

/*
 * End to end through the engine: create a session, preserve, hand it over,
 * retrieve the session and the file, as a restarting program does.
 */

static luo_engine *engine_new(void)
{
	luo_engine *e = NULL;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_default_handlers(e));
	return e;
}

static void name_field(uint8_t field[LUO_NAME_FIELD], const char *name)
{
	memset(field, 0, LUO_NAME_FIELD);
	memcpy(field, name, strlen(name));
}

static luo_session *session_create(luo_engine *e, const char *name)
{
	uint8_t field[LUO_NAME_FIELD];
	luo_session *s = NULL;

	name_field(field, name);
	ASSERT_OK(luo_engine_create_session(e, field, 0, LUO_UID_ANY, &s));
	return s;
}

/* Hands s over and retrieves it again under its name, as the program's successor. */
static luo_session *session_handover(luo_engine *e, luo_session *s)
{
	uint8_t field[LUO_NAME_FIELD];
	luo_session *in = NULL;

	name_field(field, luo_session_name(s));
	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_OK(luo_engine_retrieve_session(e, field, LUO_UID_ANY, &in));
	return in;
}

/* Preserves fd under token, closes the caller's fd, hands over and retrieves the file. */
static int round_trip(luo_engine *e, int fd)
{
	luo_session *s = session_create(e, "round-trip"), *in;
	int out = -EBADF;

	ASSERT_OK(luo_session_preserve_fd(s, 1, fd));
	safe_close(fd);
	in = session_handover(e, s);
	ASSERT_OK(luo_session_retrieve_fd(in, 1, &out));
	ASSERT_TRUE(fcntl(out, F_GETFD) & FD_CLOEXEC);
	return out;
}

static int compatible_cb(const struct luo_file_info *fi, void *userdata)
{
	*(const char **)userdata = fi->compatible;
	return 0;
}

/* The compatible of the handler that took the only file of s. */
static const char *handler_of(const luo_session *s)
{
	const char *c = NULL;

	ASSERT_EQ(luo_session_n_files(s), 1);
	ASSERT_OK(luo_session_foreach_file(s, compatible_cb, &c));
	return c;
}

TEST(engine_memfd_comes_back_with_bytes_size_position_and_seals)
{
	luo_engine *e = engine_new();
	int fd = make_memfd("persistent state", MFD_ALLOW_SEALING), out;
	char buf[32] = { 0 };
	struct stat st;

	ASSERT_OK(RET_NERRNO(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL)));
	ASSERT_EQ(lseek(fd, 11, SEEK_SET), 11);
	out = round_trip(e, fd);
	ASSERT_EQ(position(out), 11);
	ASSERT_OK(RET_NERRNO(fstat(out, &st)));
	ASSERT_EQ(st.st_size, 16);
	ASSERT_EQ(fcntl(out, F_GET_SEALS), F_SEAL_SHRINK | F_SEAL_SEAL);
	ASSERT_EQ(pread(out, buf, sizeof(buf), 0), 16);
	ASSERT_STREQ(buf, "persistent state");
	safe_close(out);
	luo_engine_free(e);
}

TEST(engine_memfd_position_is_the_one_at_the_update)
{
	luo_engine *e = engine_new();
	luo_session *s = session_create(e, "moving"), *in;
	int fd = make_memfd("0123456789", 0), out;

	ASSERT_EQ(lseek(fd, 1, SEEK_SET), 1);
	ASSERT_OK(luo_session_preserve_fd(s, 7, fd));
	/* The program goes on using the file until it hands the session over. */
	ASSERT_EQ(lseek(fd, 6, SEEK_SET), 6);
	in = session_handover(e, s);
	ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
	safe_close(fd);
	ASSERT_OK(luo_session_retrieve_fd(in, 7, &out));
	ASSERT_EQ(position(out), 6);
	safe_close(out);
	luo_engine_free(e);
}

TEST(engine_tcp_listener_keeps_accepting_on_its_port)
{
	luo_engine *e = engine_new();
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	uint16_t port;
	int lfd = make_listener(&port), out, client, conn;
	char c = 0;

	out = round_trip(e, lfd); /* the original fd is closed before the handover */
	ASSERT_OK(RET_NERRNO(getsockname(out, (struct sockaddr *)&sa, &len)));
	ASSERT_EQ(ntohs(sa.sin_port), port);
	client = connect_to(port);
	conn = accept4(out, NULL, NULL, SOCK_CLOEXEC);
	ASSERT_TRUE(conn >= 0);
	ASSERT_EQ(write(conn, "y", 1), 1);
	ASSERT_EQ(read(client, &c, 1), 1);
	ASSERT_EQ(c, 'y');
	safe_close(conn);
	safe_close(client);
	safe_close(out);
	luo_engine_free(e);
}

TEST(engine_pipe_keeps_its_buffered_bytes)
{
	luo_engine *e = engine_new();
	int pfd[2], out;
	char buf[16] = { 0 };

	ASSERT_OK(RET_NERRNO(pipe2(pfd, O_CLOEXEC)));
	ASSERT_EQ(write(pfd[1], "in flight", 9), 9);
	safe_close(pfd[1]);
	out = round_trip(e, pfd[0]);
	ASSERT_EQ(read(out, buf, sizeof(buf)), 9);
	ASSERT_STREQ(buf, "in flight");
	safe_close(out);
	luo_engine_free(e);
}

TEST(engine_eventfd_keeps_its_counter)
{
	luo_engine *e = engine_new();
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), out;
	uint64_t v = 1234;

	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(write(fd, &v, sizeof(v)), 8);
	out = round_trip(e, fd);
	v = 0;
	ASSERT_EQ(read(out, &v, sizeof(v)), 8);
	ASSERT_EQ(v, 1234);
	safe_close(out);
	luo_engine_free(e);
}

TEST(engine_regular_file_comes_back_at_its_position)
{
	luo_engine *e = engine_new();
	char path[PATH_MAX], buf[4] = { 0 };
	int fd, out;

	snprintf(path, sizeof(path), "%s/file", test_tmpdir());
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(write(fd, "0123456789", 10), 10);
	ASSERT_EQ(lseek(fd, 4, SEEK_SET), 4);
	out = round_trip(e, fd);
	ASSERT_EQ(position(out), 4);
	ASSERT_EQ(read(out, buf, 3), 3);
	ASSERT_STREQ(buf, "456");
	safe_close(out);
	luo_engine_free(e);
}

TEST(engine_refuses_files_no_handler_takes)
{
	luo_engine *e = engine_new();
	luo_session *s = session_create(e, "refusals");
	char path[PATH_MAX];
	int devnull, dir, opath, ep, reg;

	snprintf(path, sizeof(path), "%s/file", test_tmpdir());
	reg = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	dir = open(test_tmpdir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	opath = open(path, O_PATH | O_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_TRUE(reg >= 0 && devnull >= 0 && dir >= 0 && opath >= 0 && ep >= 0);
	ASSERT_ERR(luo_session_preserve_fd(s, 1, devnull), -ENOENT);
	ASSERT_ERR(luo_session_preserve_fd(s, 2, dir), -ENOENT);
	ASSERT_ERR(luo_session_preserve_fd(s, 3, ep), -ENOENT);
	/* Spec section 3: an O_PATH fd is not an open file at all. */
	ASSERT_ERR(luo_session_preserve_fd(s, 4, opath), -EBADF);
	ASSERT_EQ(luo_session_n_files(s), 0);
	safe_close(devnull);
	safe_close(dir);
	safe_close(opath);
	safe_close(ep);
	safe_close(reg);
	luo_engine_free(e);
}

/* O_PATH through /proc of a file each handler takes: EBADF, whatever the
 * handler (the engine leaves that check to them, spec section 3). */
TEST(engine_refuses_o_path_of_every_kind_with_ebadf)
{
	luo_engine *e = engine_new();
	luo_session *s = session_create(e, "o-path");
	int files[5], sv[2], pipes[2], n = 0;
	char path[64];

	ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
	ASSERT_OK(RET_NERRNO(pipe2(pipes, O_CLOEXEC)));
	files[n++] = make_memfd("x", 0);
	files[n++] = sv[0];
	files[n++] = pipes[0];
	files[n++] = eventfd(0, EFD_CLOEXEC);
	files[n++] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	for (int i = 0; i < n; i++) {
		int p;

		ASSERT_TRUE(files[i] >= 0);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", files[i]);
		p = open(path, O_PATH | O_CLOEXEC);
		ASSERT_TRUE(p >= 0);
		ASSERT_ERR(luo_session_preserve_fd(s, (uint64_t)i, p), -EBADF);
		safe_close(p);
		/* The file itself is taken. */
		ASSERT_OK(luo_session_preserve_fd(s, (uint64_t)i, files[i]));
		safe_close(files[i]);
	}
	ASSERT_EQ(luo_session_n_files(s), (size_t)n);
	safe_close(sv[1]);
	safe_close(pipes[1]);
	luo_engine_free(e);
}

/* Spec section 6: the position a memfd has at the update is the one retrieved,
 * whatever it was at preserve and whatever the old holder does after. */
TEST(engine_memfd_comes_back_at_its_position_at_the_handover)
{
	luo_engine *e = engine_new();
	luo_session *s = session_create(e, "position"), *in = NULL;
	uint8_t field[LUO_NAME_FIELD];
	int fd = make_memfd("0123456789", 0), out;

	ASSERT_EQ(lseek(fd, 2, SEEK_SET), 2);
	ASSERT_OK(luo_session_preserve_fd(s, 1, fd));
	ASSERT_EQ(lseek(fd, 6, SEEK_SET), 6);
	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_EQ(lseek(fd, 1, SEEK_SET), 1);
	name_field(field, "position");
	ASSERT_OK(luo_engine_retrieve_session(e, field, LUO_UID_ANY, &in));
	ASSERT_OK(luo_session_retrieve_fd(in, 1, &out));
	ASSERT_EQ(position(out), 6);
	safe_close(out);
	safe_close(fd);
	luo_engine_free(e);
}

TEST(engine_order_memfd_takes_memfd_regular_takes_linked_tmpfs)
{
	luo_engine *e = engine_new();
	luo_session *a = session_create(e, "a"), *b = session_create(e, "b");
	char path[128];
	int memfd = make_memfd(NULL, 0), linked = make_linked_tmpfs_file(path, sizeof(path));

	ASSERT_OK(luo_session_preserve_fd(a, 1, memfd));
	ASSERT_STREQ(handler_of(a), "memfd-v1");
	ASSERT_OK(luo_session_preserve_fd(b, 1, linked));
	ASSERT_STREQ(handler_of(b), "regular-v1");
	ASSERT_OK(RET_NERRNO(unlink(path)));
	safe_close(memfd);
	safe_close(linked);
	luo_engine_free(e);
}

TEST(engine_two_eventfds_are_two_files_a_dup_is_busy)
{
	luo_engine *e = engine_new();
	luo_session *s = session_create(e, "eventfds");
	int e1 = eventfd(0, EFD_CLOEXEC), e2 = eventfd(0, EFD_CLOEXEC), d1;

	ASSERT_TRUE(e1 >= 0 && e2 >= 0);
	d1 = fcntl(e1, F_DUPFD_CLOEXEC, 3);
	ASSERT_OK(luo_session_preserve_fd(s, 1, e1));
	ASSERT_OK(luo_session_preserve_fd(s, 2, e2));
	ASSERT_ERR(luo_session_preserve_fd(s, 3, d1), -EBUSY);
	ASSERT_EQ(luo_session_n_files(s), 2);
	safe_close(e1);
	safe_close(e2);
	safe_close(d1);
	luo_engine_free(e);
}

TEST(engine_both_pipe_ends_are_files_a_dup_is_busy)
{
	luo_engine *e = engine_new();
	luo_session *s = session_create(e, "pipes");
	int pfd[2], dr, dw;

	ASSERT_OK(RET_NERRNO(pipe2(pfd, O_CLOEXEC)));
	dr = fcntl(pfd[0], F_DUPFD_CLOEXEC, 3);
	dw = fcntl(pfd[1], F_DUPFD_CLOEXEC, 3);
	ASSERT_OK(luo_session_preserve_fd(s, 1, pfd[0]));
	ASSERT_OK(luo_session_preserve_fd(s, 2, pfd[1]));
	ASSERT_ERR(luo_session_preserve_fd(s, 3, dr), -EBUSY);
	ASSERT_ERR(luo_session_preserve_fd(s, 4, dw), -EBUSY);
	ASSERT_EQ(luo_session_n_files(s), 2);
	safe_close(pfd[0]);
	safe_close(pfd[1]);
	safe_close(dr);
	safe_close(dw);
	luo_engine_free(e);
}

TEST(engine_sockets_share_one_netns_flb)
{
	luo_engine *e = engine_new();
	luo_session *s = session_create(e, "sockets");
	const struct luo_flb *flb;
	struct stat ns, held;
	int sv[2], udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), fd0;

	ASSERT_TRUE(udp >= 0);
	ASSERT_OK(RET_NERRNO(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)));
	ASSERT_OK(luo_session_preserve_fd(s, 1, sv[0]));
	flb = luo_engine_find_flb(e, "netns-v1");
	ASSERT_TRUE(flb != NULL);
	fd0 = flb->fd;
	ASSERT_TRUE(fd0 >= 0);
	ASSERT_OK(luo_session_preserve_fd(s, 2, sv[1]));
	ASSERT_OK(luo_session_preserve_fd(s, 3, udp));
	ASSERT_EQ(flb->count, 3);
	ASSERT_EQ(flb->fd, fd0);
	ASSERT_OK(RET_NERRNO(stat("/proc/self/ns/net", &ns)));
	ASSERT_OK(RET_NERRNO(fstat(flb->fd, &held)));
	ASSERT_EQ(held.st_ino, ns.st_ino);

	/* Closing the outgoing session aborts it: the last socket releases the namespace. */
	luo_session_release(s);
	ASSERT_EQ(flb->count, 0);
	ASSERT_TRUE(flb->fd < 0);
	ASSERT_TRUE(flb->data == NULL);
	safe_close(sv[0]);
	safe_close(sv[1]);
	safe_close(udp);
	luo_engine_free(e);
}

static unsigned netns_preserves, netns_retrieves;

static int counting_netns_preserve(struct luo_flb *flb)
{
	netns_preserves++;
	return luo_flb_netns.preserve(flb);
}

static int counting_netns_retrieve(struct luo_flb *flb)
{
	netns_retrieves++;
	return luo_flb_netns.retrieve(flb);
}

TEST(engine_netns_flb_preserved_once_retrieved_once)
{
	static const struct luo_flb_ops counting_netns = {
		.compatible = "netns-v1",
		.preserve = counting_netns_preserve,
		.retrieve = counting_netns_retrieve,
	};
	struct luo_handler counted_socket = luo_handler_socket;
	luo_engine *e = NULL;
	luo_session *s, *in;
	int fds[3], out;

	counted_socket.flb = &counting_netns;
	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_handler(e, &counted_socket));
	s = session_create(e, "counted");
	for (int i = 0; i < 3; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		ASSERT_TRUE(fds[i] >= 0);
		ASSERT_OK(luo_session_preserve_fd(s, (uint64_t)i, fds[i]));
	}
	ASSERT_EQ(netns_preserves, 1);
	ASSERT_EQ(luo_engine_find_flb(e, "netns-v1")->count, 3);
	in = session_handover(e, s);
	for (int i = 0; i < 3; i++) {
		ASSERT_OK(luo_session_retrieve_fd(in, (uint64_t)i, &out));
		safe_close(out);
		safe_close(fds[i]);
	}
	ASSERT_EQ(netns_retrieves, 1);
	ASSERT_OK(luo_session_finish(in));
	ASSERT_EQ(luo_engine_find_flb(e, "netns-v1")->count, 0);
	luo_session_release(in);
	luo_engine_free(e);
}

/*
 * Moves a session holding one memfd to the incoming side by a reboot (a
 * session of one file stays a luo-session-v1 node, with the file's record as
 * a node of its own), passes the state through a blob whose file record is
 * changed by tamper(), and decodes it into a new engine (borrowing the fds,
 * which the old engine keeps owning).
 */
static int retrieve_through_tampered_blob(void (*tamper)(uint8_t *data, int *len))
{
	luo_engine *e = engine_new(), *next = engine_new();
	luo_session *s = session_create(e, "tampered"), *in = NULL;
	uint8_t field[LUO_NAME_FIELD], data[LUO_HANDLER_DATA_MAX];
	int fd = make_memfd("x", 0), out = -EBADF, r, r2, off, len;
	const void *prop;
	void *blob = NULL, *copy;
	size_t size = 0;

	ASSERT_OK(luo_session_preserve_fd(s, 5, fd));
	safe_close(fd);
	ASSERT_OK(luo_engine_reboot(e));
	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	copy = malloc(size + 256);
	ASSERT_TRUE(copy);
	ASSERT_EQ(fdt_open_into(blob, copy, (int)size + 256), 0);
	off = fdt_path_offset(copy, "/session@0/file@0");
	ASSERT_TRUE(off >= 0);
	prop = fdt_getprop(copy, off, "data", &len);
	ASSERT_TRUE(prop && len > 0 && len <= (int)sizeof(data));
	memcpy(data, prop, (size_t)len);
	tamper(data, &len);
	ASSERT_EQ(fdt_setprop(copy, off, "data", data, len), 0);
	ASSERT_EQ(fdt_pack(copy), 0);

	ASSERT_OK(luo_state_decode(next, copy, fdt_totalsize(copy), LUO_STATE_BORROW_FDS, NULL));
	name_field(field, "tampered");
	ASSERT_OK(luo_engine_retrieve_session(next, field, LUO_UID_ANY, &in));
	r = luo_session_retrieve_fd(in, 5, &out);
	if (r < 0) {
		/* A failed first retrieve is permanent: the same errno every time. */
		r2 = luo_session_retrieve_fd(in, 5, &out);
		ASSERT_EQ(r, r2);
		ASSERT_EQ(out, -EBADF);
	}
	safe_close(out);
	free(copy);
	free(blob);
	luo_engine_free(next);
	luo_engine_free(e);
	return r;
}

static void truncate_record(uint8_t *data, int *len)
{
	(*len)--;
}

static void bump_record_version(uint8_t *data, int *len)
{
	data[0]++;
}

static void keep_record(uint8_t *data, int *len)
{
}

TEST(engine_corrupted_record_fails_retrieve_with_ebadmsg_for_good)
{
	ASSERT_OK(retrieve_through_tampered_blob(keep_record)); /* the control */
	ASSERT_ERR(retrieve_through_tampered_blob(truncate_record), -EBADMSG);
	ASSERT_ERR(retrieve_through_tampered_blob(bump_record_version), -EBADMSG);
}

struct retrieved {
	int memfd, listener, pipe_r, efd, reg;
};

/* Retrieves the files preserved by engine_records_survive_the_state_blob. */
static void retrieve_all(luo_session *in, struct retrieved *r)
{
	ASSERT_OK(luo_session_retrieve_fd(in, 1, &r->memfd));
	ASSERT_OK(luo_session_retrieve_fd(in, 2, &r->listener));
	ASSERT_OK(luo_session_retrieve_fd(in, 3, &r->pipe_r));
	ASSERT_OK(luo_session_retrieve_fd(in, 4, &r->efd));
	ASSERT_OK(luo_session_retrieve_fd(in, 5, &r->reg));
}

TEST(engine_records_survive_the_state_blob)
{
	luo_engine *e = engine_new(), *next = engine_new();
	luo_session *s = session_create(e, "blob"), *in = NULL;
	uint8_t field[LUO_NAME_FIELD];
	struct retrieved r;
	char path[PATH_MAX], c = 0;
	int memfd = make_memfd("abcdef", 0), pfd[2], efd = eventfd(9, EFD_CLOEXEC), reg, client;
	uint16_t port;
	int listener = make_listener(&port), conn;
	void *blob = NULL;
	size_t size = 0;
	uint64_t v = 0;

	snprintf(path, sizeof(path), "%s/file", test_tmpdir());
	reg = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_TRUE(reg >= 0 && efd >= 0);
	ASSERT_EQ(write(reg, "0123456789", 10), 10);
	ASSERT_EQ(lseek(reg, 8, SEEK_SET), 8);
	ASSERT_EQ(lseek(memfd, 2, SEEK_SET), 2);
	ASSERT_OK(RET_NERRNO(pipe2(pfd, O_CLOEXEC)));
	ASSERT_EQ(write(pfd[1], "p", 1), 1);
	ASSERT_OK(luo_session_preserve_fd(s, 1, memfd));
	ASSERT_OK(luo_session_preserve_fd(s, 2, listener));
	ASSERT_OK(luo_session_preserve_fd(s, 3, pfd[0]));
	ASSERT_OK(luo_session_preserve_fd(s, 4, efd));
	ASSERT_OK(luo_session_preserve_fd(s, 5, reg));
	ASSERT_OK(luo_engine_handover_session(e, s));
	ASSERT_EQ(lseek(memfd, 0, SEEK_SET), 0);
	ASSERT_EQ(lseek(reg, 0, SEEK_SET), 0);

	/*
	 * What luod's live update does: the state goes through the blob into a
	 * new engine.  The new engine borrows the fds, which the old one still
	 * owns and closes at the end.
	 */
	ASSERT_OK(luo_state_encode(e, NULL, &blob, &size));
	ASSERT_OK(luo_state_decode(next, blob, size, LUO_STATE_BORROW_FDS, NULL));
	name_field(field, "blob");
	ASSERT_OK(luo_engine_retrieve_session(next, field, LUO_UID_ANY, &in));
	retrieve_all(in, &r);

	ASSERT_EQ(position(r.memfd), 2);
	ASSERT_EQ(position(r.reg), 8);
	ASSERT_EQ(read(r.pipe_r, &c, 1), 1);
	ASSERT_EQ(c, 'p');
	ASSERT_EQ(read(r.efd, &v, sizeof(v)), 8);
	ASSERT_EQ(v, 9);
	client = connect_to(port);
	conn = accept4(r.listener, NULL, NULL, SOCK_CLOEXEC);
	ASSERT_TRUE(conn >= 0);

	safe_close(conn);
	safe_close(client);
	safe_close(r.memfd);
	safe_close(r.listener);
	safe_close(r.pipe_r);
	safe_close(r.efd);
	safe_close(r.reg);
	safe_close(memfd);
	safe_close(listener);
	safe_close(pfd[0]);
	safe_close(pfd[1]);
	safe_close(efd);
	safe_close(reg);
	free(blob);
	luo_engine_free(next);
	luo_engine_free(e);
}

TEST_MAIN(TEST_CASE(memfd_keeps_bytes_size_position_and_seals),
	  TEST_CASE(memfd_freeze_records_the_state_at_the_update),
	  TEST_CASE(memfd_retrieve_keeps_seals_added_after_handover),
	  TEST_CASE(memfd_retrieve_refuses_another_file),
	  TEST_CASE(memfd_takes_unlinked_tmpfs_files), TEST_CASE(memfd_refuses_hugetlb),
	  TEST_CASE(order_memfd_takes_memfd_regular_takes_linked_tmpfs),
	  TEST_CASE(order_each_kind_finds_its_handler),
	  TEST_CASE(refuses_dev_null_directories_o_path_and_other_anon_files),
	  TEST_CASE(socket_listening_tcp_keeps_accepting_on_its_port),
	  TEST_CASE(socket_takes_any_family_and_state),
	  TEST_CASE(socket_record_names_the_socket_by_its_inode),
	  TEST_CASE(socket_v1_files_of_an_older_luod_are_read),
	  TEST_CASE(socket_retrieve_refuses_another_kind_of_socket),
	  TEST_CASE(socket_with_a_socket_in_flight_is_refused),
	  TEST_CASE(preserved_unix_socket_refuses_fds_until_it_leaves),
	  TEST_CASE(socket_handler_depends_on_the_netns_flb),
	  TEST_CASE(netns_flb_holds_and_checks_the_namespace), TEST_CASE(pipe_keeps_buffered_bytes),
	  TEST_CASE(pipe_ends_differ_in_identity_dups_do_not),
	  TEST_CASE(pipe_retrieve_refuses_the_other_end), TEST_CASE(pipe_takes_fifos),
	  TEST_CASE(eventfd_keeps_its_counter),
	  TEST_CASE(eventfd_identity_is_the_open_file_description),
	  TEST_CASE(eventfd_retrieve_refuses_another_semaphore_mode),
	  TEST_CASE(regular_comes_back_at_its_position),
	  TEST_CASE(regular_retrieve_refuses_another_file),
	  TEST_CASE(every_handler_refuses_a_corrupted_record),
	  TEST_CASE(every_handler_freezes_and_finishes_a_healthy_file),
	  TEST_CASE(engine_memfd_comes_back_with_bytes_size_position_and_seals),
	  TEST_CASE(engine_memfd_position_is_the_one_at_the_update),
	  TEST_CASE(engine_tcp_listener_keeps_accepting_on_its_port),
	  TEST_CASE(engine_pipe_keeps_its_buffered_bytes),
	  TEST_CASE(engine_eventfd_keeps_its_counter),
	  TEST_CASE(engine_regular_file_comes_back_at_its_position),
	  TEST_CASE(engine_refuses_files_no_handler_takes),
	  TEST_CASE(engine_refuses_o_path_of_every_kind_with_ebadf),
	  TEST_CASE(engine_memfd_comes_back_at_its_position_at_the_handover),
	  TEST_CASE(engine_order_memfd_takes_memfd_regular_takes_linked_tmpfs),
	  TEST_CASE(engine_two_eventfds_are_two_files_a_dup_is_busy),
	  TEST_CASE(engine_both_pipe_ends_are_files_a_dup_is_busy),
	  TEST_CASE(engine_sockets_share_one_netns_flb),
	  TEST_CASE(engine_netns_flb_preserved_once_retrieved_once),
	  TEST_CASE(engine_corrupted_record_fails_retrieve_with_ebadmsg_for_good),
	  TEST_CASE(every_handler_freezes_and_retrieves_with_no_fd_to_spare),
	  TEST_CASE(eventfd_freeze_keeps_the_semaphore_mode),
	  TEST_CASE(engine_records_survive_the_state_blob))
