/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "luod-client.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/socket-util.h"
#include "harness.h"

static void set_name(uint8_t field[64], const char *name)
{
	memset(field, 0, 64);
	memcpy(field, name, MIN(strlen(name), (size_t)64));
}

int cl_create(int conn, const char *name, uint64_t flags, int *ret_fd)
{
	struct luo_wire_create_session c = { .size = sizeof(c), .fd = -1, .flags = flags };

	set_name(c.name, name);
	return luo_wire_call(conn, LIVEUPDATE_IOCTL_CREATE_SESSION, &c, sizeof(c), NULL, 0, ret_fd);
}

int cl_retrieve(int conn, const char *name, int *ret_fd)
{
	struct liveupdate_ioctl_retrieve_session c = { .size = sizeof(c), .fd = -1 };

	set_name(c.name, name);
	return luo_wire_call(conn, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &c, sizeof(c), NULL, 0,
			     ret_fd);
}

int cl_preserve(int session, uint64_t token, int fd)
{
	struct liveupdate_session_preserve_fd c = { .size = sizeof(c), .fd = -1, .token = token };

	return luo_wire_call_session(session, LIVEUPDATE_SESSION_PRESERVE_FD, &c, sizeof(c), &fd, 1,
				     NULL);
}

int cl_retrieve_fd(int session, uint64_t token, int *ret_fd)
{
	struct liveupdate_session_retrieve_fd c = { .size = sizeof(c), .fd = -1, .token = token };

	return luo_wire_call_session(session, LIVEUPDATE_SESSION_RETRIEVE_FD, &c, sizeof(c), NULL,
				     0, ret_fd);
}

int cl_finish(int session)
{
	struct liveupdate_session_finish c = { .size = sizeof(c) };

	return luo_wire_call_session(session, LIVEUPDATE_SESSION_FINISH, &c, sizeof(c), NULL, 0,
				     NULL);
}

int cl_get_name(int session, char ret_name[64])
{
	struct liveupdate_session_get_name c = { .size = sizeof(c) };
	int r = luo_wire_call_session(session, LIVEUPDATE_SESSION_GET_NAME, &c, sizeof(c), NULL, 0,
				      NULL);

	if (r >= 0)
		memcpy(ret_name, c.name, 64);
	return r;
}

int cl_handover(int session)
{
	struct luo_wire_simple c = { .size = sizeof(c) };

	return luo_wire_call_session(session, LUO_SESSION_HANDOVER, &c, sizeof(c), NULL, 0, NULL);
}

int cl_device_open(int conn)
{
	struct luo_wire_simple c = { .size = sizeof(c) };

	return luo_wire_call(conn, LUO_IOCTL_DEVICE_OPEN, &c, sizeof(c), NULL, 0, NULL);
}

int cl_status(int conn, struct luo_wire_status *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->size = sizeof(*ret);
	return luo_wire_call(conn, LUO_IOCTL_STATUS, ret, sizeof(*ret), NULL, 0, NULL);
}

int cl_is_session(int conn, int fd)
{
	struct luo_wire_is_session c = { .size = sizeof(c) };
	int r = luo_wire_call(conn, LUO_IOCTL_IS_SESSION, &c, sizeof(c), &fd, 1, NULL);

	return r < 0 ? r : (int)c.is_session;
}

struct counter {
	size_t record;
	int n;
};

static int count_chunk(const void *data, size_t size, void *userdata)
{
	struct counter *c = userdata;

	if (size % c->record != 0)
		return -EBADMSG;
	c->n += (int)(size / c->record);
	return 0;
}

int cl_list_count(int conn)
{
	struct luo_wire_list c = { .size = sizeof(c),
				   .entry_size = sizeof(struct luo_wire_session_entry) };
	struct counter k = { .record = sizeof(struct luo_wire_session_entry) };
	int r = luo_wire_call_stream(conn, LUO_IOCTL_LIST, &c, sizeof(c), count_chunk, &k);

	if (r < 0)
		return r;
	if ((uint64_t)k.n != c.count)
		return -EBADMSG;
	return k.n;
}

struct show_counter {
	int messages;
	int files;
};

static int show_chunk(const void *data, size_t size, void *userdata)
{
	struct show_counter *c = userdata;

	/* The first message after the struct is the session entry. */
	if (c->messages++ == 0)
		return size == sizeof(struct luo_wire_session_entry) ? 0 : -EBADMSG;
	if (size % sizeof(struct luo_wire_file_entry) != 0)
		return -EBADMSG;
	c->files += (int)(size / sizeof(struct luo_wire_file_entry));
	return 0;
}

int cl_show_files(int conn, uint32_t kind, const char *name)
{
	struct luo_wire_show c = { .size = sizeof(c),
				   .kind = kind,
				   .session_entry_size = sizeof(struct luo_wire_session_entry),
				   .file_entry_size = sizeof(struct luo_wire_file_entry) };
	struct show_counter k = { 0 };
	int r;

	set_name(c.name, name);
	r = luo_wire_call_stream(conn, LUO_IOCTL_SHOW, &c, sizeof(c), show_chunk, &k);
	if (r < 0)
		return r;
	if (k.messages < 1 || (uint64_t)k.files != c.count)
		return -EBADMSG;
	return k.files;
}

int cl_update_wait(int conn, const char *exec_path, struct luo_wire_update *ret, int timeout_ms)
{
	struct {
		struct luo_wire_request h;
		struct luo_wire_update u;
	} req = { .h = { .op = LUO_IOCTL_UPDATE, .tag = 1 }, .u = { .size = sizeof(req.u) } };
	struct pollfd p = { .fd = conn, .events = POLLIN };
	int32_t result;
	int r;

	if (exec_path)
		snprintf(req.u.exec_path, sizeof(req.u.exec_path), "%s", exec_path);
	r = raw_send(conn, &req, sizeof(req), NULL, 0);
	if (r < 0)
		return r;
	r = poll(&p, 1, timeout_ms);
	if (r <= 0)
		return r < 0 ? -errno : -ETIMEDOUT;
	/* Raw: an update that rolled back replies an error that still carries the struct. */
	r = raw_recv(conn, &result, ret, sizeof(*ret));
	if (r < 0)
		return r;
	return result;
}

int cl_update(int conn, const char *exec_path, struct luo_wire_update *ret)
{
	return cl_update_wait(conn, exec_path, ret, 5000);
}

int cl_reboot(int conn, struct luo_wire_reboot *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->size = sizeof(*ret);
	return luo_wire_call(conn, LUO_IOCTL_REBOOT, ret, sizeof(*ret), NULL, 0, NULL);
}

int cl_memfd(const char *text)
{
	int fd = memfd_create("luod-test", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

int cl_memfd_has(int fd, const char *text)
{
	char buf[256];
	ssize_t n = pread(fd, buf, sizeof(buf), 0);

	return n == (ssize_t)strlen(text) && memcmp(buf, text, n) == 0;
}

int raw_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 253)];
	} control;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (n_fds > 253)
		return -EINVAL;
	if (n_fds) {
		memset(&control, 0, sizeof(control));
		mh.msg_control = &control;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int raw_recv(int sock, int32_t *ret_result, void *payload, size_t size)
{
	uint8_t buf[LUO_WIRE_REPLY_MAX];
	struct luo_wire_reply h;
	struct pollfd p = { .fd = sock, .events = POLLIN };
	int fds[SOCKET_MAX_FDS];
	size_t n_fds = 0;
	ssize_t n;

	if (poll(&p, 1, 5000) <= 0)
		return -ETIMEDOUT;
	n = socket_recv_message(sock, buf, sizeof(buf), fds, SOCKET_MAX_FDS, &n_fds, 0);
	if (n < 0)
		return (int)n;
	close_many(fds, n_fds);
	if (n == 0)
		return -ECONNRESET;
	if ((size_t)n < sizeof(h))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	if (h.size != (size_t)n - sizeof(h))
		return -EBADMSG;
	*ret_result = h.result;
	if (payload)
		memcpy(payload, buf + sizeof(h), MIN((size_t)h.size, size));
	return (int)h.size;
}

/* Reads the fd link targets of pid into a malloc'ed array of n strings. */
static char **fd_targets(pid_t pid, size_t *ret_n)
{
	char path[64];
	char **v = NULL;
	size_t n = 0, cap = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return NULL;
	for (struct dirent *de; (de = readdir(dir));) {
		char link[384], target[256];
		ssize_t k;

		if (de->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
		k = readlink(link, target, sizeof(target) - 1);
		if (k < 0)
			continue;
		target[k] = 0;
		if (n == cap) {
			char **nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(char *));
			if (!nv)
				break;
			v = nv;
		}
		v[n++] = strdup(target);
	}
	closedir(dir);
	*ret_n = n;
	return v;
}

static void free_targets(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int proc_fd_count(pid_t pid)
{
	size_t n_luod = 0, n_self = 0;
	char **luod = fd_targets(pid, &n_luod), **self = fd_targets(getpid(), &n_self);
	int n = 0;

	if (!luod) {
		free_targets(self, n_self);
		return -ENOENT;
	}
	/* What luod shares with this test process (the output pipes, whatever the test's
	 * runner let it inherit) is not luod's own: its first re-exec may drop it. */
	for (size_t i = 0; i < n_luod; i++) {
		bool shared = false;

		for (size_t j = 0; j < n_self && !shared; j++)
			shared = luod[i] && self[j] && strcmp(luod[i], self[j]) == 0;
		n += !shared;
	}
	free_targets(luod, n_luod);
	free_targets(self, n_self);
	return n;
}

/*
 * luod's fd count with every close made so far taken in: a STATUS round trip
 * on a fresh connection first (luod takes in every pending hang-up before it
 * answers STATUS), then the count less that connection.  Load cannot make it
 * early or late.  -errno if luod does not answer.
 */
static int settled_fd_count(const struct test_luod *d)
{
	struct luo_wire_status st;
	int conn = test_luod_connect(d), n, r;

	if (conn < 0)
		return conn;
	r = cl_status(conn, &st);
	n = r < 0 ? r : proc_fd_count(d->pid) - 1;
	close(conn);
	return n;
}

int stable_fd_count(const struct test_luod *d)
{
	int last = -1;

	/* Two counts that agree: a compaction child's two fds come and go. */
	for (int i = 0; i < 200; i++) {
		int n = settled_fd_count(d);
		if (n == last)
			return n;
		last = n;
		usleep(10000);
	}
	return last;
}

int wait_fd_count(const struct test_luod *d, int n)
{
	int k = -1;

	for (int i = 0; i < 500; i++) {
		k = settled_fd_count(d);
		if (k == n)
			return k;
		usleep(10000);
	}
	return k;
}

void assert_luod_serves(const struct test_luod *d)
{
	int conn = test_luod_connect(d), fd = -EBADF;

	ASSERT_OK(conn);
	ASSERT_OK(cl_create(conn, "still-serving", 0, &fd));
	ASSERT_OK(fd);
	close(fd);
	close(conn);
}
