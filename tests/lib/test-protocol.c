/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: tests of the wire protocol
 *
 * The server-side checks, table-driven, one row per step and errno of the
 * kernel's rules; then the client call against a fake luod on a socketpair
 * (a thread that answers as the test tells it): copy-back, fds, error
 * replies, replies for other threads and for dead askers, hostile replies
 * whose fds must be closed, streams, and oversized requests; the deadline on
 * every wait and the stale replies of timed-out calls.  Last, finding luod:
 * the clients' rule, decided against two real luods.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "basic/macro.h"
#include "basic/socket-util.h"
#include "harness.h"
#include "luod-test.h"
#include "protocol/protocol.h"

/* ---- building request messages ---- */

struct msg {
	uint8_t bytes[LUO_WIRE_REQUEST_MAX + 64];
	size_t len;
};

/* A request whose payload is the struct of `size` bytes (size field = size_field). */
static void build(struct msg *m, uint32_t op, uint32_t tag, uint32_t payload_len,
		  uint32_t size_field)
{
	struct luo_wire_request h = { .op = op, .tag = tag };

	memset(m, 0, sizeof(*m));
	memcpy(m->bytes, &h, sizeof(h));
	if (payload_len >= sizeof(uint32_t))
		memcpy(m->bytes + sizeof(h), &size_field, sizeof(size_field));
	else
		memcpy(m->bytes + sizeof(h), &size_field, payload_len);
	m->len = sizeof(h) + payload_len;
}

static void build_sized(struct msg *m, uint32_t op, uint32_t size)
{
	build(m, op, 42, size, size);
}

/* ---- the command table ---- */

TEST(command_table_has_the_kernel_sizes)
{
	static const struct {
		enum luo_wire_target t;
		uint32_t nr, min, full;
		uint8_t fds, reply_fds;
	} rows[] = {
		{ LUO_WIRE_DEVICE, 0x00, 72, 80, 0, 1 },
		{ LUO_WIRE_DEVICE, 0x01, 72, 72, 0, 1 },
		{ LUO_WIRE_SESSION, 0x40, 16, 16, 1, 0 },
		{ LUO_WIRE_SESSION, 0x41, 16, 16, 0, 1 },
		{ LUO_WIRE_SESSION, 0x42, 8, 8, 0, 0 },
		{ LUO_WIRE_SESSION, 0x43, 72, 72, 0, 0 },
		{ LUO_WIRE_SESSION, 0x44, 8, 8, 0, 0 },
		{ LUO_WIRE_DEVICE, 0x86, 16, 16, 1, 0 },
		{ LUO_WIRE_SESSION, 0x46, 24, 2040, 252, 0 },
		{ LUO_WIRE_SESSION, 0x47, 24, 2040, 0, 252 },
		{ LUO_WIRE_DEVICE, 0x87, 72, 80, 0, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		const struct luo_wire_command *c = luo_wire_command_find(rows[i].t, rows[i].nr);

		ASSERT_TRUE(c);
		ASSERT_EQ(c->nr, rows[i].nr);
		ASSERT_EQ(c->target, rows[i].t);
		ASSERT_EQ(c->min_size, rows[i].min);
		ASSERT_EQ(c->full_size, rows[i].full);
		ASSERT_EQ(c->n_fds, rows[i].fds);
		ASSERT_EQ(c->reply_fds, rows[i].reply_fds);
		ASSERT_TRUE(c->name && *c->name);
	}
	for (uint32_t nr = 0x80; nr <= 0x87; nr++)
		ASSERT_TRUE(luo_wire_command_find(LUO_WIRE_DEVICE, nr));
}

TEST(command_table_keeps_device_and_session_commands_apart)
{
	for (uint32_t nr = 0; nr < 256; nr++) {
		const struct luo_wire_command *d = luo_wire_command_find(LUO_WIRE_DEVICE, nr);
		const struct luo_wire_command *s = luo_wire_command_find(LUO_WIRE_SESSION, nr);

		ASSERT_FALSE(d && s);
		if (d)
			ASSERT_TRUE(nr <= 0x01 || (nr >= 0x80 && nr <= 0x89));
		if (s)
			ASSERT_TRUE(nr >= 0x40 && nr <= 0x47);
	}
}

/* ---- steps 1-3: luo_wire_request_parse ---- */

TEST(parse_refuses_a_message_shorter_than_the_header)
{
	struct luo_wire_parsed p;
	uint8_t b[8] = { 0 };

	for (size_t len = 0; len < sizeof(struct luo_wire_request); len++)
		ASSERT_ERR(luo_wire_request_parse(LUO_WIRE_DEVICE, b, len, &p), -EBADMSG);
	ASSERT_EQ(luo_wire_request_tag(b, 7), 0);
}

TEST(parse_applies_the_kernel_checks_in_order)
{
	static const struct {
		const char *what;
		enum luo_wire_target t;
		uint32_t op, payload_len, size_field;
		int err;
	} rows[] = {
		/* 1: the nr must belong to the socket's kind (EINVAL), looked at first */
		{ "session nr on device", LUO_WIRE_DEVICE, LIVEUPDATE_SESSION_FINISH, 8, 8,
		  -EINVAL },
		{ "device nr on session", LUO_WIRE_SESSION, LIVEUPDATE_IOCTL_CREATE_SESSION, 72, 72,
		  -EINVAL },
		{ "unknown device nr", LUO_WIRE_DEVICE, _IO(0xBA, 0x02), 8, 8, -EINVAL },
		{ "unknown session nr", LUO_WIRE_SESSION, _IO(0xBA, 0x48), 8, 8, -EINVAL },
		{ "extension nr on session", LUO_WIRE_SESSION, LUO_IOCTL_STATUS, 120, 120,
		  -EINVAL },
		{ "session handover on device", LUO_WIRE_DEVICE, LUO_SESSION_HANDOVER, 8, 8,
		  -EINVAL },
		{ "unknown nr beats a bad type byte", LUO_WIRE_DEVICE, _IO(0xBB, 0x02), 8, 8,
		  -EINVAL },
		{ "unknown nr beats a missing payload", LUO_WIRE_SESSION, _IO(0xBA, 0x50), 0, 0,
		  -EINVAL },
		/* 2: the word must be exactly _IO(0xBA, nr) (ENOTTY) */
		{ "other type byte", LUO_WIRE_DEVICE, _IO(0xBB, 0x00), 72, 72, -ENOTTY },
		{ "size bits", LUO_WIRE_SESSION, _IOW(0xBA, 0x42, struct liveupdate_session_finish),
		  8, 8, -ENOTTY },
		{ "direction bits", LUO_WIRE_SESSION, _IOR(0xBA, 0x43, uint32_t), 72, 72, -ENOTTY },
		{ "read-write bits", LUO_WIRE_DEVICE, _IOWR(0xBA, 0x01, uint64_t), 72, 72,
		  -ENOTTY },
		{ "bad word beats a missing payload", LUO_WIRE_SESSION, _IO(0x00, 0x42), 0, 0,
		  -ENOTTY },
		/* 3: the payload must carry `size` bytes, at least 4 (EFAULT) */
		{ "no payload", LUO_WIRE_SESSION, LIVEUPDATE_SESSION_FINISH, 0, 0, -EFAULT },
		{ "3-byte payload", LUO_WIRE_SESSION, LIVEUPDATE_SESSION_FINISH, 3, 3, -EFAULT },
		{ "size larger than payload", LUO_WIRE_SESSION, LIVEUPDATE_SESSION_FINISH, 8, 16,
		  -EFAULT },
		{ "size smaller than payload", LUO_WIRE_DEVICE, LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
		  72, 64, -EFAULT },
		{ "huge size", LUO_WIRE_SESSION, LIVEUPDATE_SESSION_GET_NAME, 72, UINT32_MAX,
		  -EFAULT },
		/* accepted by 1-3 (size rules come later, in check_struct) */
		{ "finish", LUO_WIRE_SESSION, LIVEUPDATE_SESSION_FINISH, 8, 8, 0 },
		{ "short size passes parse", LUO_WIRE_SESSION, LIVEUPDATE_SESSION_FINISH, 4, 4, 0 },
		{ "create", LUO_WIRE_DEVICE, LIVEUPDATE_IOCTL_CREATE_SESSION, 72, 72, 0 },
		{ "create with flags", LUO_WIRE_DEVICE, LIVEUPDATE_IOCTL_CREATE_SESSION, 80, 80,
		  0 },
		{ "is-session", LUO_WIRE_DEVICE, LUO_IOCTL_IS_SESSION, 16, 16, 0 },
		{ "handover", LUO_WIRE_SESSION, LUO_SESSION_HANDOVER, 8, 8, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		struct luo_wire_parsed p, untouched;
		struct msg m;
		int r;

		test_diag("%s", rows[i].what);
		build(&m, rows[i].op, 1234, rows[i].payload_len, rows[i].size_field);
		memset(&p, 0xAA, sizeof(p));
		untouched = p;
		r = luo_wire_request_parse(rows[i].t, m.bytes, m.len, &p);
		ASSERT_ERR(r, rows[i].err);
		ASSERT_EQ(luo_wire_request_tag(m.bytes, m.len), 1234);
		if (r < 0) {
			ASSERT_MEMEQ(&p, &untouched, sizeof(p));
			continue;
		}
		ASSERT_EQ(p.op, rows[i].op);
		ASSERT_EQ(p.tag, 1234);
		ASSERT_EQ(p.size, rows[i].size_field);
		ASSERT_TRUE(p.payload == m.bytes + sizeof(struct luo_wire_request));
		ASSERT_EQ(p.cmd->nr, rows[i].op & 0xff);
	}
}

TEST(parse_never_reads_past_the_message)
{
	/* A message at the very end of a page-sized heap block: ASan catches any
	 * read past len. */
	for (size_t len = 0; len <= 80 + 8; len++) {
		uint8_t *b = malloc(len ? len : 1);
		struct luo_wire_parsed p;
		struct luo_wire_request h = { .op = LIVEUPDATE_IOCTL_CREATE_SESSION, .tag = 1 };
		uint32_t size = (uint32_t)(len > 8 ? len - 8 : 0);

		ASSERT_TRUE(b);
		memset(b, 0, len);
		memcpy(b, &h, MIN(len, sizeof(h)));
		if (len >= 12)
			memcpy(b + 8, &size, 4);
		(void)luo_wire_request_parse(LUO_WIRE_DEVICE, b, len, &p);
		(void)luo_wire_request_tag(b, len);
		free(b);
	}
}

/* ---- steps 5-6: luo_wire_request_check_struct ---- */

TEST(check_struct_applies_size_and_e2big_rules)
{
	static const struct {
		const char *what;
		uint32_t op;
		enum luo_wire_target t;
		uint32_t size;
		int nonzero_at; /* -1: all zero past the size field */
		int err;
	} rows[] = {
		{ "create below the kernel struct", LIVEUPDATE_IOCTL_CREATE_SESSION,
		  LUO_WIRE_DEVICE, 71, -1, -EINVAL },
		{ "create of the kernel size", LIVEUPDATE_IOCTL_CREATE_SESSION, LUO_WIRE_DEVICE, 72,
		  -1, 0 },
		{ "create with luod's flags", LIVEUPDATE_IOCTL_CREATE_SESSION, LUO_WIRE_DEVICE, 80,
		  72, 0 },
		{ "create longer, zeros past", LIVEUPDATE_IOCTL_CREATE_SESSION, LUO_WIRE_DEVICE,
		  200, -1, 0 },
		{ "create longer, byte past luod's struct", LIVEUPDATE_IOCTL_CREATE_SESSION,
		  LUO_WIRE_DEVICE, 200, 80, -E2BIG },
		{ "create longer, last byte", LIVEUPDATE_IOCTL_CREATE_SESSION, LUO_WIRE_DEVICE, 200,
		  199, -E2BIG },
		{ "retrieve with a byte past 72", LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
		  LUO_WIRE_DEVICE, 80, 72, -E2BIG },
		{ "retrieve of 4 bytes", LIVEUPDATE_IOCTL_RETRIEVE_SESSION, LUO_WIRE_DEVICE, 4, -1,
		  -EINVAL },
		{ "preserve short", LIVEUPDATE_SESSION_PRESERVE_FD, LUO_WIRE_SESSION, 12, -1,
		  -EINVAL },
		{ "preserve exact", LIVEUPDATE_SESSION_PRESERVE_FD, LUO_WIRE_SESSION, 16, 8, 0 },
		{ "preserve with zeros past", LIVEUPDATE_SESSION_PRESERVE_FD, LUO_WIRE_SESSION, 24,
		  -1, 0 },
		{ "preserve with a byte past", LIVEUPDATE_SESSION_PRESERVE_FD, LUO_WIRE_SESSION, 24,
		  16, -E2BIG },
		{ "finish short", LIVEUPDATE_SESSION_FINISH, LUO_WIRE_SESSION, 4, -1, -EINVAL },
		{ "finish exact", LIVEUPDATE_SESSION_FINISH, LUO_WIRE_SESSION, 8, -1, 0 },
		{ "finish with a byte past", LIVEUPDATE_SESSION_FINISH, LUO_WIRE_SESSION, 9, 8,
		  -E2BIG },
		{ "get-name short", LIVEUPDATE_SESSION_GET_NAME, LUO_WIRE_SESSION, 71, -1,
		  -EINVAL },
		{ "retrieve-fd 4096-byte request", LIVEUPDATE_SESSION_RETRIEVE_FD, LUO_WIRE_SESSION,
		  LUO_WIRE_REQUEST_MAX - 8, -1, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		uint8_t out[1024], before[1024];
		struct luo_wire_parsed p;
		struct msg m;

		test_diag("%s", rows[i].what);
		build_sized(&m, rows[i].op, rows[i].size);
		if (rows[i].nonzero_at >= 0)
			m.bytes[8 + rows[i].nonzero_at] = 0x5a;
		ASSERT_OK(luo_wire_request_parse(rows[i].t, m.bytes, m.len, &p));
		memset(out, 0xEE, sizeof(out));
		memcpy(before, out, sizeof(out));
		ASSERT_ERR(luo_wire_request_check_struct(&p, out), rows[i].err);
		if (rows[i].err < 0) {
			ASSERT_MEMEQ(out, before, sizeof(out));
			continue;
		}
		uint32_t n = MIN(rows[i].size, p.cmd->full_size);
		ASSERT_MEMEQ(out, m.bytes + 8, n);
		for (uint32_t k = n; k < p.cmd->full_size; k++)
			ASSERT_EQ(out[k], 0);
		ASSERT_EQ(out[p.cmd->full_size], 0xEE); /* not one byte more */
		ASSERT_EQ(luo_wire_reply_size(&p), n);
	}
}

TEST(check_struct_keeps_the_client_size_field_and_flags)
{
	struct luo_wire_create_session c = { .size = sizeof(c), .flags = 1 };
	struct luo_wire_create_session out;
	struct luo_wire_parsed p;
	struct msg m;

	memcpy(c.name, "svc", 3);
	build(&m, LIVEUPDATE_IOCTL_CREATE_SESSION, 7, sizeof(c), sizeof(c));
	memcpy(m.bytes + 8, &c, sizeof(c));
	ASSERT_OK(luo_wire_request_parse(LUO_WIRE_DEVICE, m.bytes, m.len, &p));
	ASSERT_OK(luo_wire_request_check_struct(&p, &out));
	ASSERT_EQ(out.size, 80);
	ASSERT_EQ(out.flags, 1);
	ASSERT_STREQ((char *)out.name, "svc");
}

/* ---- step 7: fds ---- */

TEST(check_fds_wants_exactly_the_command_fds)
{
	static const struct {
		uint32_t op;
		enum luo_wire_target t;
		uint32_t size;
		size_t n_fds;
		int err;
	} rows[] = {
		{ LIVEUPDATE_SESSION_PRESERVE_FD, LUO_WIRE_SESSION, 16, 0, -EBADF },
		{ LIVEUPDATE_SESSION_PRESERVE_FD, LUO_WIRE_SESSION, 16, 1, 0 },
		{ LIVEUPDATE_SESSION_PRESERVE_FD, LUO_WIRE_SESSION, 16, 2, -EINVAL },
		{ LIVEUPDATE_SESSION_FINISH, LUO_WIRE_SESSION, 8, 0, 0 },
		{ LIVEUPDATE_SESSION_FINISH, LUO_WIRE_SESSION, 8, 1, -EINVAL },
		{ LIVEUPDATE_SESSION_RETRIEVE_FD, LUO_WIRE_SESSION, 16, 1, -EINVAL },
		{ LIVEUPDATE_IOCTL_CREATE_SESSION, LUO_WIRE_DEVICE, 72, 3, -EINVAL },
		{ LUO_IOCTL_IS_SESSION, LUO_WIRE_DEVICE, 16, 0, -EBADF },
		{ LUO_IOCTL_IS_SESSION, LUO_WIRE_DEVICE, 16, 1, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		struct luo_wire_parsed p;
		struct msg m;

		build_sized(&m, rows[i].op, rows[i].size);
		ASSERT_OK(luo_wire_request_parse(rows[i].t, m.bytes, m.len, &p));
		ASSERT_ERR(luo_wire_request_check_fds(&p, rows[i].n_fds), rows[i].err);
	}
}

/* KEXEC: the kernel's fd, and the initrd's when its flag says one comes. */
TEST(check_fds_of_kexec_follow_its_initrd_flag)
{
	static const struct {
		uint32_t flags;
		size_t n_fds;
		int err;
	} rows[] = {
		{ 0, 0, -EBADF },
		{ 0, 1, 0 },
		{ 0, 2, -EINVAL },
		{ LUO_KEXEC_INITRD, 1, -EBADF },
		{ LUO_KEXEC_INITRD, 2, 0 },
		{ LUO_KEXEC_INITRD | LUO_KEXEC_DROP_UNSUPPORTED, 3, -EINVAL },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		struct luo_wire_parsed p;
		struct msg m;
		uint32_t size = sizeof(struct luo_wire_kexec);

		build_sized(&m, LUO_IOCTL_KEXEC, size);
		memcpy(m.bytes + sizeof(struct luo_wire_request) +
			       offsetof(struct luo_wire_kexec, flags),
		       &rows[i].flags, sizeof(rows[i].flags));
		ASSERT_OK(luo_wire_request_parse(LUO_WIRE_DEVICE, m.bytes, m.len, &p));
		ASSERT_ERR(luo_wire_request_check_fds(&p, rows[i].n_fds), rows[i].err);
	}
}

/* The batch commands: a size that follows the count, and as many fds as it says. */
TEST(check_batch_wants_the_counts_size_and_fds)
{
	static const struct {
		uint32_t op, flags, count, size;
		uint64_t batch;
		size_t n_fds;
		int err;
	} rows[] = {
		{ LUO_SESSION_PRESERVE_FDS, 3, 1, 32, 9, 1, 0 },
		{ LUO_SESSION_PRESERVE_FDS, 1, 252, 24 + 8 * 252, 9, 252, 0 },
		{ LUO_SESSION_PRESERVE_FDS, 0, 2, 40, 9, 1, -EBADF },
		{ LUO_SESSION_PRESERVE_FDS, 0, 2, 40, 9, 3, -EINVAL },
		{ LUO_SESSION_PRESERVE_FDS, 0, 2, 32, 9, 2, -EINVAL }, /* size of 1 token */
		{ LUO_SESSION_PRESERVE_FDS, 0, 0, 24, 9, 0, -EINVAL }, /* empty */
		{ LUO_SESSION_PRESERVE_FDS, 0, 253, 24 + 8 * 253, 9, 0, -EINVAL },
		{ LUO_SESSION_PRESERVE_FDS, 8, 1, 32, 9, 1, -EINVAL }, /* unknown flag */
		{ LUO_SESSION_PRESERVE_FDS, 3, 1, 32, 0, 1, -EINVAL }, /* no batch id */
		{ LUO_SESSION_PRESERVE_FDS, 4, 0, 24, 9, 0, 0 },       /* ABORT */
		{ LUO_SESSION_PRESERVE_FDS, 4, 1, 32, 9, 1, -EINVAL }, /* ABORT with a file */
		{ LUO_SESSION_PRESERVE_FDS, 5, 0, 24, 9, 0, -EINVAL }, /* ABORT | BEGIN */
		{ LUO_SESSION_RETRIEVE_FDS, 0, 4, 56, 0, 0, 0 },
		{ LUO_SESSION_RETRIEVE_FDS, 0, 4, 56, 0, 1, -EINVAL },
		{ LUO_SESSION_RETRIEVE_FDS, 1, 4, 56, 0, 0, -EINVAL },
		{ LUO_SESSION_RETRIEVE_FDS, 0, 4, 56, 3, 0, -EINVAL },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		struct luo_wire_fds w = {
			.size = rows[i].size,
			.flags = rows[i].flags,
			.count = rows[i].count,
			.batch = rows[i].batch,
		};
		struct luo_wire_request h = { .op = rows[i].op, .tag = 1 };
		uint8_t buf[sizeof(h) + sizeof(w) + 8];
		struct luo_wire_fds got;
		struct luo_wire_parsed p;

		memcpy(buf, &h, sizeof(h));
		memcpy(buf + sizeof(h), &w, MIN(sizeof(w), (size_t)rows[i].size));
		memset(buf + sizeof(h) + MIN(sizeof(w), (size_t)rows[i].size), 0,
		       rows[i].size > sizeof(w) ? rows[i].size - sizeof(w) : 0);
		ASSERT_OK(luo_wire_request_parse(LUO_WIRE_SESSION, buf, sizeof(h) + rows[i].size,
						 &p));
		/* Zeros past the struct (253 tokens of 0) pass, as for any command. */
		ASSERT_OK(luo_wire_request_check_struct(&p, &got));
		ASSERT_ERR(luo_wire_request_check_batch(&p, &got, rows[i].n_fds), rows[i].err);
	}
}

/* ---- a fake luod on a socketpair ---- */

struct fake {
	int sock;
	/* what to answer */
	int result;
	uint32_t reply_flags;
	const void *reply;
	size_t reply_size;
	int n_reply_fds;
	bool parse; /* run the server-side checks and reply with their error */
	enum luo_wire_target target;
	/* what came */
	uint32_t op, tag;
	size_t len, n_fds;
	uint8_t got[LUO_WIRE_REQUEST_MAX];
	int fd_inode_ok;
};

static void *fake_serve_one(void *userdata)
{
	struct fake *f = userdata;
	int fds[SOCKET_MAX_FDS], reply_fds[4];
	ssize_t n;

	n = socket_recv_message(f->sock, f->got, sizeof(f->got), fds, SOCKET_MAX_FDS, &f->n_fds, 0);
	if (n < 8)
		return NULL;
	f->len = (size_t)n;
	f->op = ((struct luo_wire_request *)f->got)->op;
	f->tag = luo_wire_request_tag(f->got, f->len);
	close_many(fds, f->n_fds);
	usleep(20000); /* let the client wait for its reply, as it would for luod */

	if (f->parse) {
		struct luo_wire_parsed p;
		uint8_t s[1024];
		int r = luo_wire_request_parse(f->target, f->got, f->len, &p);
		if (r >= 0)
			r = luo_wire_request_check_struct(&p, s);
		if (r >= 0)
			r = luo_wire_request_check_fds(&p, f->n_fds);
		if (r < 0)
			(void)luo_wire_reply_send(f->sock, f->tag, r, 0, NULL, 0, NULL, 0);
		else
			(void)luo_wire_reply_send(f->sock, f->tag, 0, 0, s, luo_wire_reply_size(&p),
						  NULL, 0);
		return NULL;
	}
	for (int i = 0; i < f->n_reply_fds; i++)
		reply_fds[i] = eventfd(0, EFD_CLOEXEC);
	(void)luo_wire_reply_send(f->sock, f->tag, f->result, f->reply_flags, f->reply,
				  f->reply_size, reply_fds, f->n_reply_fds);
	close_many(reply_fds, f->n_reply_fds);
	return NULL;
}

static void fake_pair(int sv[2])
{
	ASSERT_OK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
}

TEST(call_round_trip_copies_back_and_passes_the_fd)
{
	struct liveupdate_session_retrieve_fd reply = { .size = 16, .fd = -1, .token = 99 };
	struct liveupdate_session_retrieve_fd a = { .size = 16, .token = 7 };
	struct fake f = { .reply = &reply, .reply_size = sizeof(reply), .n_reply_fds = 1 };
	int sv[2], fd = -1;
	pthread_t t;

	fake_pair(sv);
	f.sock = sv[1];
	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_OK(
		luo_wire_call(sv[0], LIVEUPDATE_SESSION_RETRIEVE_FD, &a, sizeof(a), NULL, 0, &fd));
	pthread_join(t, NULL);
	ASSERT_EQ(f.op, LIVEUPDATE_SESSION_RETRIEVE_FD);
	ASSERT_EQ(f.tag, (uint32_t)gettid());
	ASSERT_EQ(f.len, 8 + 16);
	ASSERT_EQ(f.n_fds, 0);
	ASSERT_EQ(a.token, 99);
	ASSERT_TRUE(fd >= 0);
	ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	close(sv[0]);
	close(sv[1]);
}

TEST(call_copies_back_at_most_arg_size)
{
	uint8_t reply[72], a[16];
	struct fake f = { .reply = reply, .reply_size = sizeof(reply) };
	int sv[2];
	pthread_t t;

	memset(reply, 0x77, sizeof(reply));
	memset(a, 0, sizeof(a));
	a[0] = 16;
	fake_pair(sv);
	f.sock = sv[1];
	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_OK(luo_wire_call(sv[0], LIVEUPDATE_SESSION_FINISH, a, 8, NULL, 0, NULL));
	pthread_join(t, NULL);
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(a[i], 0x77);
	for (int i = 8; i < 16; i++)
		ASSERT_EQ(a[i], 0);
	close(sv[0]);
	close(sv[1]);
}

TEST(call_returns_the_server_error_and_writes_nothing)
{
	struct liveupdate_session_retrieve_fd a = { .size = 16, .token = 7 };
	struct fake f = { .result = -ENOENT };
	int sv[2], fd = 12345;
	pthread_t t;

	fake_pair(sv);
	f.sock = sv[1];
	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_ERR(
		luo_wire_call(sv[0], LIVEUPDATE_SESSION_RETRIEVE_FD, &a, sizeof(a), NULL, 0, &fd),
		-ENOENT);
	pthread_join(t, NULL);
	ASSERT_EQ(fd, 12345);
	ASSERT_EQ(a.token, 7);
	close(sv[0]);
	close(sv[1]);
}

TEST(call_sends_its_fds_and_server_checks_reach_the_client)
{
	struct liveupdate_session_preserve_fd a = { .size = 16, .fd = -1, .token = 1 };
	struct fake f = { .parse = true, .target = LUO_WIRE_SESSION };
	int sv[2], efd = eventfd(0, EFD_CLOEXEC), two[2];
	pthread_t t;

	ASSERT_OK(efd);
	fake_pair(sv);
	f.sock = sv[1];

	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_OK(
		luo_wire_call(sv[0], LIVEUPDATE_SESSION_PRESERVE_FD, &a, sizeof(a), &efd, 1, NULL));
	pthread_join(t, NULL);
	ASSERT_EQ(f.n_fds, 1);

	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_ERR(
		luo_wire_call(sv[0], LIVEUPDATE_SESSION_PRESERVE_FD, &a, sizeof(a), NULL, 0, NULL),
		-EBADF);
	pthread_join(t, NULL);

	two[0] = two[1] = efd;
	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_ERR(
		luo_wire_call(sv[0], LIVEUPDATE_SESSION_PRESERVE_FD, &a, sizeof(a), two, 2, NULL),
		-EINVAL);
	pthread_join(t, NULL);

	a.size = 12;
	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_ERR(luo_wire_call(sv[0], LIVEUPDATE_SESSION_PRESERVE_FD, &a, 12, &efd, 1, NULL),
		   -EINVAL);
	pthread_join(t, NULL);

	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_ERR(luo_wire_call(sv[0], _IO(0xBA, 0x01), &a, 12, NULL, 0, NULL), -EINVAL);
	pthread_join(t, NULL);

	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_ERR(luo_wire_call(sv[0], _IOW(0xBA, 0x42, int), &a, 12, NULL, 0, NULL), -ENOTTY);
	pthread_join(t, NULL);

	close(efd);
	close(sv[0]);
	close(sv[1]);
}

TEST(call_with_a_closed_fd_fails_with_ebadf_and_sends_nothing)
{
	struct liveupdate_session_preserve_fd a = { .size = 16, .fd = -1, .token = 1 };
	int sv[2], closed;
	uint8_t b[64];

	fake_pair(sv);
	closed = eventfd(0, EFD_CLOEXEC);
	close(closed);
	ASSERT_ERR(luo_wire_call(sv[0], LIVEUPDATE_SESSION_PRESERVE_FD, &a, sizeof(a), &closed, 1,
				 NULL),
		   -EBADF);
	ASSERT_ERR(recv(sv[1], b, sizeof(b), MSG_DONTWAIT) < 0 ? -errno : 0, -EAGAIN);
	close(sv[0]);
	close(sv[1]);
}

TEST(call_works_on_a_non_blocking_socket)
{
	struct liveupdate_session_retrieve_fd reply = { .size = 16, .fd = -1, .token = 5 };
	struct liveupdate_session_retrieve_fd a = { .size = 16, .token = 1 };
	struct fake f = { .reply = &reply, .reply_size = sizeof(reply) };
	int sv[2];
	pthread_t t;

	fake_pair(sv);
	ASSERT_OK(fcntl(sv[0], F_SETFL, O_NONBLOCK));
	f.sock = sv[1];
	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	/* The fake answers only after a pause, so the first peek finds nothing. */
	ASSERT_OK(
		luo_wire_call(sv[0], LIVEUPDATE_SESSION_RETRIEVE_FD, &a, sizeof(a), NULL, 0, NULL));
	pthread_join(t, NULL);
	ASSERT_EQ(a.token, 5);
	close(sv[0]);
	close(sv[1]);
}

/* ---- hostile or broken replies: no fd may leak (the harness counts them) ---- */

static void send_raw_reply(int sock, const void *bytes, size_t len, int n_fds)
{
	struct iovec iov = { .iov_base = (void *)bytes, .iov_len = len };
	int fds[4];

	for (int i = 0; i < n_fds; i++)
		fds[i] = eventfd(0, EFD_CLOEXEC);
	ASSERT_OK(socket_send_message(sock, &iov, 1, fds, n_fds));
	close_many(fds, n_fds);
}

static int call_finish(int sock)
{
	struct liveupdate_session_finish a = { .size = 8 };

	return luo_wire_call(sock, LIVEUPDATE_SESSION_FINISH, &a, sizeof(a), NULL, 0, NULL);
}

TEST(call_closes_fds_of_malformed_replies)
{
	static const struct {
		const char *what;
		int32_t result;
		uint32_t size_field;
		size_t payload;
		int n_fds;
	} rows[] = {
		{ "error reply with an fd", -EIO, 0, 0, 1 },
		{ "two fds", 0, 0, 0, 2 },
		{ "size field larger than payload", 0, 100, 8, 1 },
		{ "size field smaller than payload", 0, 2, 8, 1 },
		{ "positive result", 5, 0, 0, 1 },
		{ "result below -4095", -5000, 0, 0, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		uint8_t b[64] = { 0 };
		struct luo_wire_reply h = { .result = rows[i].result,
					    .tag = luo_wire_tag_after(0),
					    .size = rows[i].size_field };
		int sv[2];

		test_diag("%s", rows[i].what);
		fake_pair(sv);
		memcpy(b, &h, sizeof(h));
		send_raw_reply(sv[1], b, sizeof(h) + rows[i].payload, rows[i].n_fds);
		ASSERT_ERR(call_finish(sv[0]), -EBADMSG);
		close(sv[0]);
		close(sv[1]);
	}
}

TEST(call_with_an_unwanted_reply_fd_closes_it)
{
	struct fake f = { .n_reply_fds = 1 };
	int sv[2];
	pthread_t t;

	fake_pair(sv);
	f.sock = sv[1];
	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_OK(call_finish(sv[0])); /* ret_fd NULL: the fd must not stay open */
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
}

TEST(call_reports_a_gone_server)
{
	int sv[2];

	/* Gone before the request: the send fails. */
	fake_pair(sv);
	close(sv[1]);
	ASSERT_ERR(call_finish(sv[0]), -EPIPE);
	close(sv[0]);

	/* Gone before the reply: the wait ends instead of hanging. */

	fake_pair(sv);
	ASSERT_OK(shutdown(sv[1], SHUT_WR));
	ASSERT_ERR(call_finish(sv[0]), -ECONNRESET);
	close(sv[0]);
	close(sv[1]);
}

TEST(call_skips_junk_and_replies_of_dead_askers)
{
	struct luo_wire_reply h = { 0 };
	uint8_t junk[3] = { 1, 2, 3 };
	int sv[2], status;
	pid_t dead;

	/* A thread id that surely names nobody now: a reaped child's. */
	dead = fork();
	ASSERT_OK(dead);
	if (dead == 0)
		_exit(0);
	ASSERT_OK(waitpid(dead, &status, 0));

	fake_pair(sv);
	send_raw_reply(sv[1], junk, sizeof(junk), 1);
	send_raw_reply(sv[1], junk, 0, 0);
	h.tag = (uint32_t)dead;
	send_raw_reply(sv[1], &h, sizeof(h), 1);
	h.tag = 0;
	send_raw_reply(sv[1], &h, sizeof(h), 1);
	h.tag = (uint32_t)gettid();
	send_raw_reply(sv[1], &h, sizeof(h), 0);
	ASSERT_OK(call_finish(sv[0]));
	close(sv[0]);
	close(sv[1]);
}

/* ---- two threads sharing one socket ---- */

struct racer {
	int sock;
	uint64_t token; /* in: sent; out: what came back */
	int r;
	uint32_t tid;
};

static void *racer_run(void *userdata)
{
	struct racer *x = userdata;
	struct liveupdate_session_retrieve_fd a = { .size = 16, .token = x->token };

	x->tid = (uint32_t)gettid();
	x->r = luo_wire_call(x->sock, LIVEUPDATE_SESSION_RETRIEVE_FD, &a, sizeof(a), NULL, 0, NULL);
	x->token = a.token;
	return NULL;
}

TEST(call_gives_each_thread_its_own_reply)
{
	for (int round = 0; round < 20; round++) {
		struct racer x[2];
		uint8_t req[2][64];
		size_t len[2];
		pthread_t t[2];
		int sv[2];

		fake_pair(sv);
		for (int i = 0; i < 2; i++) {
			x[i] = (struct racer){ .sock = sv[0], .token = 1000 + i };
			ASSERT_OK(-pthread_create(&t[i], NULL, racer_run, &x[i]));
		}
		for (int i = 0; i < 2; i++) {
			ssize_t n = socket_recv_message(sv[1], req[i], sizeof(req[i]), NULL, 0,
							NULL, 0);
			ASSERT_EQ(n, 24);
			len[i] = (size_t)n;
		}
		/* Answer in reverse order of arrival, each with its asker's token + 1,
		 * so that a thread taking the other's reply sees the wrong token. */
		for (int i = 1; i >= 0; i--) {
			struct luo_wire_parsed p;
			struct liveupdate_session_retrieve_fd s;

			ASSERT_OK(luo_wire_request_parse(LUO_WIRE_SESSION, req[i], len[i], &p));
			ASSERT_OK(luo_wire_request_check_struct(&p, &s));
			s.token += 1;
			ASSERT_OK(luo_wire_reply_send(sv[1], p.tag, 0, 0, &s, sizeof(s), NULL, 0));
		}
		for (int i = 0; i < 2; i++) {
			pthread_join(t[i], NULL);
			ASSERT_OK(x[i].r);
			ASSERT_EQ(x[i].token, 1000 + i + 1);
		}
		close(sv[0]);
		close(sv[1]);
	}
}

TEST(call_shared_with_a_forked_process_takes_only_its_reply)
{
	int sv[2], status;
	uint8_t req[2][64];
	pid_t child;

	fake_pair(sv);
	child = fork();
	ASSERT_OK(child);
	if (child == 0) {
		struct racer x = { .sock = sv[0], .token = 500 };
		racer_run(&x);
		_exit(x.r == 0 && x.token == 501 ? 0 : 1);
	}
	struct racer me = { .sock = sv[0], .token = 700 };
	pthread_t t;
	ASSERT_OK(-pthread_create(&t, NULL, racer_run, &me));
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(socket_recv_message(sv[1], req[i], sizeof(req[i]), NULL, 0, NULL, 0), 24);
	for (int i = 1; i >= 0; i--) {
		struct liveupdate_session_retrieve_fd s;
		memcpy(&s, req[i] + 8, sizeof(s));
		s.token += 1;
		ASSERT_OK(luo_wire_reply_send(sv[1], luo_wire_request_tag(req[i], 24), 0, 0, &s,
					      sizeof(s), NULL, 0));
	}
	pthread_join(t, NULL);
	ASSERT_OK(me.r);
	ASSERT_EQ(me.token, 701);
	ASSERT_OK(waitpid(child, &status, 0));
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(sv[0]);
	close(sv[1]);
}

/* ---- streams ---- */

struct collected {
	size_t calls, bytes;
	int fail_at;
};

static int collect(const void *data, size_t size, void *userdata)
{
	struct collected *c = userdata;

	c->calls++;
	c->bytes += size;
	if (c->fail_at > 0 && (int)c->calls == c->fail_at)
		return -ECANCELED;
	return 0;
}

static void send_stream(int sock, uint32_t tag, int chunks)
{
	struct luo_wire_list l = { .size = sizeof(l), .count = (uint64_t)chunks * 2 };
	struct luo_wire_session_entry e[2];

	memset(e, 0, sizeof(e));
	ASSERT_OK(luo_wire_reply_send(sock, tag, 0, LUO_WIRE_REPLY_MORE, &l, sizeof(l), NULL, 0));
	for (int i = 0; i < chunks; i++)
		ASSERT_OK(luo_wire_reply_send(sock, tag, 0,
					      i + 1 < chunks ? LUO_WIRE_REPLY_MORE : 0, e,
					      sizeof(e), NULL, 0));
}

TEST(call_stream_delivers_every_chunk)
{
	struct luo_wire_list l = { .size = sizeof(l) };
	struct collected c = { 0 };
	int sv[2];

	fake_pair(sv);
	send_stream(sv[1], (uint32_t)gettid(), 3);
	ASSERT_OK(luo_wire_call_stream(sv[0], LUO_IOCTL_LIST, &l, sizeof(l), collect, &c));
	ASSERT_EQ(l.count, 6);
	ASSERT_EQ(c.calls, 3);
	ASSERT_EQ(c.bytes, 3 * 2 * sizeof(struct luo_wire_session_entry));
	close(sv[0]);
	close(sv[1]);
}

TEST(call_stream_drains_after_a_callback_error)
{
	struct luo_wire_list l = { .size = sizeof(l) };
	struct collected c = { .fail_at = 1 };
	int sv[2];

	fake_pair(sv);
	send_stream(sv[1], luo_wire_tag_after(0), 3);
	/* A plain reply after the stream must be the next call's. */
	ASSERT_OK(luo_wire_reply_send(sv[1], luo_wire_tag_after(1), -EEXIST, 0, NULL, 0, NULL, 0));
	ASSERT_ERR(luo_wire_call_stream(sv[0], LUO_IOCTL_LIST, &l, sizeof(l), collect, &c),
		   -ECANCELED);
	ASSERT_EQ(c.calls, 1);
	ASSERT_ERR(call_finish(sv[0]), -EEXIST);
	close(sv[0]);
	close(sv[1]);
}

TEST(call_on_a_stream_drains_it)
{
	int sv[2];

	fake_pair(sv);
	send_stream(sv[1], luo_wire_tag_after(0), 2);
	ASSERT_OK(luo_wire_reply_send(sv[1], luo_wire_tag_after(1), -ENOENT, 0, NULL, 0, NULL, 0));
	ASSERT_OK(call_finish(sv[0]));
	ASSERT_ERR(call_finish(sv[0]), -ENOENT);
	close(sv[0]);
	close(sv[1]);
}

/* ---- oversized requests ---- */

TEST(call_trims_a_long_request_of_zeros_to_the_full_struct)
{
	static uint8_t big[8192];
	struct fake f = { .parse = true, .target = LUO_WIRE_SESSION };
	uint32_t size = sizeof(big);
	int sv[2];
	pthread_t t;

	memcpy(big, &size, sizeof(size));
	fake_pair(sv);
	f.sock = sv[1];
	ASSERT_OK(-pthread_create(&t, NULL, fake_serve_one, &f));
	ASSERT_OK(luo_wire_call(sv[0], LIVEUPDATE_SESSION_FINISH, big, sizeof(big), NULL, 0, NULL));
	pthread_join(t, NULL);
	ASSERT_EQ(f.len, 8 + 8);

	big[5000] = 1;
	ASSERT_ERR(luo_wire_call(sv[0], LIVEUPDATE_SESSION_FINISH, big, sizeof(big), NULL, 0, NULL),
		   -E2BIG);
	ASSERT_ERR(luo_wire_call(sv[0], _IO(0xBA, 0x77), big, sizeof(big), NULL, 0, NULL),
		   -EMSGSIZE);
	close(sv[0]);
	close(sv[1]);
}

TEST(reply_send_refuses_oversized_payloads)
{
	static uint8_t big[LUO_WIRE_REPLY_MAX];
	int sv[2];

	fake_pair(sv);
	ASSERT_ERR(luo_wire_reply_send(sv[1], 1, 0, 0, big, sizeof(big), NULL, 0), -EMSGSIZE);
	ASSERT_ERR(luo_wire_reply_send(-1, 1, 0, 0, NULL, 0, NULL, 0), -EBADF);
	ASSERT_ERR(luo_wire_call(-1, LIVEUPDATE_SESSION_FINISH, big, 8, NULL, 0, NULL), -EBADF);
	ASSERT_ERR(luo_wire_call(sv[0], LIVEUPDATE_SESSION_FINISH, NULL, 8, NULL, 0, NULL),
		   -EINVAL);
	close(sv[0]);
	close(sv[1]);
}

/* luod's socket: $LUO_SOCKET, else $XDG_RUNTIME_DIR/luo/luod.sock, else /run/luo/luod.sock. */
TEST(socket_path_follows_luods_rule)
{
	char buf[108], big[200];

	setenv("LUO_SOCKET", "/tmp/x.sock", 1);
	setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
	ASSERT_OK(luo_wire_socket_path(buf, sizeof(buf)));
	ASSERT_STREQ(buf, "/tmp/x.sock");
	setenv("LUO_SOCKET", "", 1); /* empty counts as unset */
	ASSERT_OK(luo_wire_socket_path(buf, sizeof(buf)));
	ASSERT_STREQ(buf, "/run/user/1000/luo/luod.sock");
	unsetenv("LUO_SOCKET");
	unsetenv("XDG_RUNTIME_DIR");
	ASSERT_OK(luo_wire_socket_path(buf, sizeof(buf)));
	ASSERT_STREQ(buf, LUO_SOCKET_DEFAULT);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	setenv("LUO_SOCKET", big, 1);
	ASSERT_ERR(luo_wire_socket_path(buf, sizeof(buf)), -ENAMETOOLONG);
}

/* ---- deadlines ---- */

TEST(set_timeout_refuses_a_negative_value)
{
	ASSERT_EQ(luo_wire_get_timeout(), LUO_WIRE_TIMEOUT_DEFAULT_MS);
	ASSERT_ERR(luo_wire_set_timeout(-1), -EINVAL);
	ASSERT_EQ(luo_wire_get_timeout(), LUO_WIRE_TIMEOUT_DEFAULT_MS);
	ASSERT_OK(luo_wire_set_timeout(0));
	ASSERT_EQ(luo_wire_get_timeout(), 0);
	ASSERT_OK(luo_wire_set_timeout(1234));
	ASSERT_EQ(luo_wire_get_timeout(), 1234);
}

/* A peer that never answers (a stopped luod): -ETIMEDOUT, and the reply that
 * comes late is not taken for the answer to the next call of the thread. */
TEST(call_times_out_and_drops_the_late_reply)
{
	struct liveupdate_session_get_name g = { .size = sizeof(g) },
					   answer = { .size = sizeof(g) };
	uint8_t req[64];
	uint32_t late_tag;
	int sv[2];
	ssize_t n;

	fake_pair(sv);
	ASSERT_OK(luo_wire_set_timeout(50));
	ASSERT_ERR(call_finish(sv[0]), -ETIMEDOUT);
	n = socket_recv_message(sv[1], req, sizeof(req), NULL, 0, NULL, MSG_DONTWAIT);
	ASSERT_EQ(n, 16);
	late_tag = luo_wire_request_tag(req, (size_t)n);
	ASSERT_EQ(late_tag, (uint32_t)gettid());
	/* The late answer to the finish, then the answer to the next call, whose tag
	 * carries the thread's next generation. */
	ASSERT_OK(luo_wire_reply_send(sv[1], late_tag, -EEXIST, 0, NULL, 0, NULL, 0));
	memcpy(answer.name, "right", 5);
	ASSERT_OK(luo_wire_reply_send(sv[1], (uint32_t)gettid() | (UINT32_C(1) << 22), 0, 0,
				      &answer, sizeof(answer), NULL, 0));
	ASSERT_OK(luo_wire_set_timeout(0));
	ASSERT_OK(luo_wire_call(sv[0], LIVEUPDATE_SESSION_GET_NAME, &g, sizeof(g), NULL, 0, NULL));
	ASSERT_STREQ((char *)g.name, "right");
	n = socket_recv_message(sv[1], req, sizeof(req), NULL, 0, NULL, MSG_DONTWAIT);
	ASSERT_EQ(luo_wire_request_tag(req, (size_t)n), (uint32_t)gettid() | (UINT32_C(1) << 22));
	close(sv[0]);
	close(sv[1]);
}

/* A peer whose receive queue is full (a stopped luod with many requests
 * queued): the send waits at most the timeout too. */
TEST(call_times_out_when_the_socket_stays_full)
{
	uint8_t filler[512] = { 0 };
	struct iovec iov = { .iov_base = filler, .iov_len = sizeof(filler) };
	int sv[2];

	fake_pair(sv);
	while (socket_send_message_flags(sv[0], &iov, 1, NULL, 0, MSG_DONTWAIT) >= 0)
		;
	ASSERT_OK(luo_wire_set_timeout(50));
	ASSERT_ERR(call_finish(sv[0]), -ETIMEDOUT);
	close(sv[0]);
	close(sv[1]);
}

TEST(stream_call_times_out_in_the_middle_of_a_stream)
{
	struct luo_wire_list l = { .size = sizeof(l), .count = 3 };
	struct collected c = { 0 };
	uint8_t req[64];
	int sv[2];
	ssize_t n;

	fake_pair(sv);
	/* The first message of the reply comes, the rest never does. */
	ASSERT_OK(luo_wire_reply_send(sv[1], (uint32_t)gettid(), 0, LUO_WIRE_REPLY_MORE, &l,
				      sizeof(l), NULL, 0));
	ASSERT_OK(luo_wire_set_timeout(50));
	ASSERT_ERR(luo_wire_call_stream(sv[0], LUO_IOCTL_LIST, &l, sizeof(l), collect, &c),
		   -ETIMEDOUT);
	ASSERT_EQ(c.calls, 0);
	n = socket_recv_message(sv[1], req, sizeof(req), NULL, 0, NULL, MSG_DONTWAIT);
	ASSERT_EQ(n, 8 + (ssize_t)sizeof(l));
	close(sv[0]);
	close(sv[1]);
}

/* ---- finding luod ---- */

TEST(socket_candidates_follow_the_clients_rule)
{
	char paths[2][LUO_SOCKET_PATH_MAX], big[200];

	/* $LUO_SOCKET alone, however many others are set. */
	setenv("LUO_SOCKET", "/tmp/x.sock", 1);
	setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
	ASSERT_EQ(luo_wire_socket_candidates(paths), 1);
	ASSERT_STREQ(paths[0], "/tmp/x.sock");
	/* The per-user luod first, then the system's. */
	setenv("LUO_SOCKET", "", 1);
	ASSERT_EQ(luo_wire_socket_candidates(paths), 2);
	ASSERT_STREQ(paths[0], "/run/user/1000/luo/luod.sock");
	ASSERT_STREQ(paths[1], LUO_SOCKET_DEFAULT);
	unsetenv("LUO_SOCKET");
	unsetenv("XDG_RUNTIME_DIR");
	ASSERT_EQ(luo_wire_socket_candidates(paths), 1);
	ASSERT_STREQ(paths[0], LUO_SOCKET_DEFAULT);
	/* A runtime dir no socket path fits in: only the system's. */
	memset(big, 'a', sizeof(big) - 1);
	big[0] = '/';
	big[sizeof(big) - 1] = 0;
	setenv("XDG_RUNTIME_DIR", big, 1);
	ASSERT_EQ(luo_wire_socket_candidates(paths), 1);
	ASSERT_STREQ(paths[0], LUO_SOCKET_DEFAULT);
	setenv("LUO_SOCKET", big, 1);
	ASSERT_ERR(luo_wire_socket_candidates(paths), -ENAMETOOLONG);
}

static pid_t peer_pid(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	ASSERT_OK(getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len));
	return cred.pid;
}

/* Starts a luod and moves its socket to path (luod keeps serving the inode). */
static void start_at(struct test_luod *d, const char *path)
{
	char luod[512];

	test_build_path("src/daemon/luod", luod, sizeof(luod));
	if (access(luod, X_OK) < 0)
		test_skip("luod is not built (%s)", luod);
	test_luod_start(d, NULL);
	ASSERT_OK(rename(d->socket, path));
	snprintf(d->socket, sizeof(d->socket), "%s", path);
}

/* The clients' rule with two real luods: the per-user one while it listens,
 * else the system one; a path nobody serves is passed over. */
TEST(connect_first_falls_back_to_the_system_luod)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct test_luod user, system;
	char upath[256], spath[256];
	const char *paths[2] = { upath, spath };
	size_t i = 99;
	int fd, s;

	snprintf(upath, sizeof(upath), "%s/user.sock", test_tmpdir());
	snprintf(spath, sizeof(spath), "%s/system.sock", test_tmpdir());
	start_at(&system, spath);
	start_at(&user, upath);

	fd = ASSERT_OK(luo_wire_connect_first(paths, 2, &i));
	ASSERT_EQ(i, 0);
	ASSERT_EQ(peer_pid(fd), user.pid);
	close(fd);

	/* The per-user luod stops (its socket goes with it). */
	test_luod_stop(&user);
	(void)unlink(upath);
	fd = ASSERT_OK(luo_wire_connect_first(paths, 2, &i));
	ASSERT_EQ(i, 1);
	ASSERT_EQ(peer_pid(fd), system.pid);
	close(fd);

	/* A stale socket file, nobody listening. */
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	ASSERT_OK(s);
	memcpy(sa.sun_path, upath, strlen(upath) + 1);
	ASSERT_OK(bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	close(s);
	fd = ASSERT_OK(luo_wire_connect_first(paths, 2, &i));
	ASSERT_EQ(i, 1);
	close(fd);
	ASSERT_OK(unlink(upath));

	/* Not a socket at all. */
	s = open(upath, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_OK(s);
	close(s);
	fd = ASSERT_OK(luo_wire_connect_first(paths, 2, &i));
	ASSERT_EQ(i, 1);
	close(fd);

	/* Nobody anywhere: the last path's error. */
	test_luod_stop(&system);
	(void)unlink(spath);
	ASSERT_ERR(luo_wire_connect_first(paths, 2, &i), -ENOENT);
}

/* luo_wire_connect_default() is that rule on the candidates: with
 * $XDG_RUNTIME_DIR/luo/luod.sock served, it connects there. */
TEST(connect_default_finds_the_per_user_luod)
{
	char dir[256], path[LUO_SOCKET_PATH_MAX], got[LUO_SOCKET_PATH_MAX];
	struct test_luod user;
	int fd;

	snprintf(dir, sizeof(dir), "%s/rt", test_tmpdir());
	ASSERT_OK(mkdir(dir, 0700));
	snprintf(path, sizeof(path), "%s/rt/luo", test_tmpdir());
	ASSERT_OK(mkdir(path, 0700));
	snprintf(path, sizeof(path), "%s/rt/luo/luod.sock", test_tmpdir());
	start_at(&user, path);
	unsetenv("LUO_SOCKET");
	setenv("XDG_RUNTIME_DIR", dir, 1);
	fd = ASSERT_OK(luo_wire_connect_default(got));
	ASSERT_STREQ(got, path);
	ASSERT_EQ(peer_pid(fd), user.pid);
	close(fd);
	/* $LUO_SOCKET set: only that, even where nobody listens. */
	snprintf(path, sizeof(path), "%s/nothing.sock", test_tmpdir());
	setenv("LUO_SOCKET", path, 1);
	ASSERT_ERR(luo_wire_connect_default(got), -ENOENT);
	ASSERT_STREQ(got, path);
	test_luod_stop(&user);
}

TEST(connect_reports_what_is_at_the_path)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/none.sock", test_tmpdir());
	ASSERT_ERR(luo_wire_connect(path), -ENOENT);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_OK(fd);
	close(fd);
	ASSERT_ERR(luo_wire_connect(path), -ECONNREFUSED);
	ASSERT_ERR(luo_wire_connect(""), -EINVAL);
	memset(path, 'x', sizeof(path) - 1);
	path[sizeof(path) - 1] = 0;
	ASSERT_ERR(luo_wire_connect(path), -ENAMETOOLONG);
}

/* ---- the request size limit, against a real luod ---- */

/* Sends a CREATE_SESSION of exactly len bytes (size field matching, zeros past
 * the struct) and returns luod's result; a session fd that came is closed. */
static int raw_create(int conn, size_t len, const char *name)
{
	static uint8_t msg[LUO_WIRE_REQUEST_MAX + 64];
	struct luo_wire_request h = { .op = LIVEUPDATE_IOCTL_CREATE_SESSION, .tag = 7 };
	uint32_t size = (uint32_t)(len - sizeof(h));
	struct iovec iov = { .iov_base = msg, .iov_len = len };
	uint8_t reply[LUO_WIRE_REPLY_MAX];
	struct luo_wire_reply r;
	int fds[SOCKET_MAX_FDS];
	size_t n_fds = 0;
	ssize_t n;

	memset(msg, 0, sizeof(msg));
	memcpy(msg, &h, sizeof(h));
	memcpy(msg + sizeof(h), &size, sizeof(size));
	memcpy(msg + sizeof(h) + 8, name, strlen(name));
	ASSERT_EQ(socket_send_message(conn, &iov, 1, NULL, 0), (ssize_t)len);
	n = socket_recv_message(conn, reply, sizeof(reply), fds, SOCKET_MAX_FDS, &n_fds, 0);
	ASSERT_TRUE(n >= (ssize_t)sizeof(r));
	close_many(fds, n_fds);
	memcpy(&r, reply, sizeof(r));
	ASSERT_EQ(r.tag, 7);
	return r.result;
}

/* LUO_WIRE_REQUEST_MAX is the whole message: 4,096 bytes pass, 4,097 get
 * EFAULT (the payload cannot be what its size field says). */
TEST(luod_takes_requests_up_to_exactly_the_maximum)
{
	struct test_luod d;
	char luod[512];
	int conn;

	test_build_path("src/daemon/luod", luod, sizeof(luod));
	if (access(luod, X_OK) < 0)
		test_skip("luod is not built (%s)", luod);
	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	ASSERT_OK(conn);
	ASSERT_EQ(raw_create(conn, LUO_WIRE_REQUEST_MAX, "max"), 0);
	ASSERT_ERR(raw_create(conn, LUO_WIRE_REQUEST_MAX + 1, "max-plus-1"), -EFAULT);
	ASSERT_ERR(raw_create(conn, LUO_WIRE_REQUEST_MAX + 2, "max-plus-2"), -EFAULT);
	ASSERT_ERR(raw_create(conn, LUO_WIRE_REQUEST_MAX + 64, "max-plus-64"), -EFAULT);
	/* The connection still serves. */
	ASSERT_EQ(raw_create(conn, 80, "after"), 0);
	close(conn);
	test_luod_stop(&d);
}

/* ---- listings stay readable for clients of the first version ---- */

struct chunks {
	size_t n, sizes[8];
};

static int note_chunk(const void *data, size_t size, void *userdata)
{
	struct chunks *c = userdata;

	if (c->n < ELEMENTSOF(c->sizes))
		c->sizes[c->n] = size;
	c->n++;
	return 0;
}

/*
 * A LIST or SHOW request of the first version's size gets entries of the
 * first version's sizes; one that names the current sizes gets those; an
 * entry size no version had is EINVAL.
 */
TEST(listings_keep_the_entry_size_the_client_knows)
{
	struct luo_wire_list l = { .size = LUO_WIRE_LIST_V1 };
	struct luo_wire_show sh = { .size = LUO_WIRE_SHOW_V1, .kind = 0 };
	struct test_luod d;
	struct chunks c = { 0 };
	char luod[512];
	int conn, s, m;

	test_build_path("src/daemon/luod", luod, sizeof(luod));
	if (access(luod, X_OK) < 0)
		test_skip("luod is not built (%s)", luod);
	test_luod_start(&d, NULL);
	conn = test_luod_connect(&d);
	ASSERT_OK(conn);
	struct luo_wire_create_session cr = { .size = sizeof(cr), .fd = -1 };
	memcpy(cr.name, "v1", 2);
	ASSERT_OK(
		luo_wire_call(conn, LIVEUPDATE_IOCTL_CREATE_SESSION, &cr, sizeof(cr), NULL, 0, &s));
	m = eventfd(0, EFD_CLOEXEC);
	ASSERT_OK(m);
	struct liveupdate_session_preserve_fd p = { .size = sizeof(p), .fd = -1, .token = 1 };
	ASSERT_OK(luo_wire_call(s, LIVEUPDATE_SESSION_PRESERVE_FD, &p, sizeof(p), &m, 1, NULL));
	close(m);

	ASSERT_OK(luo_wire_call_stream(conn, LUO_IOCTL_LIST, &l, LUO_WIRE_LIST_V1, note_chunk, &c));
	ASSERT_EQ(l.count, 1);
	ASSERT_EQ(c.n, 1);
	ASSERT_EQ(c.sizes[0], LUO_WIRE_SESSION_ENTRY_V1);

	memcpy(sh.name, "v1", 2);
	c = (struct chunks){ 0 };
	ASSERT_OK(
		luo_wire_call_stream(conn, LUO_IOCTL_SHOW, &sh, LUO_WIRE_SHOW_V1, note_chunk, &c));
	ASSERT_EQ(c.n, 2);
	ASSERT_EQ(c.sizes[0], LUO_WIRE_SESSION_ENTRY_V1);
	ASSERT_EQ(c.sizes[1], LUO_WIRE_FILE_ENTRY_V1);

	/* The current sizes, reported back. */
	l = (struct luo_wire_list){ .size = sizeof(l),
				    .entry_size = sizeof(struct luo_wire_session_entry) };
	c = (struct chunks){ 0 };
	ASSERT_OK(luo_wire_call_stream(conn, LUO_IOCTL_LIST, &l, sizeof(l), note_chunk, &c));
	ASSERT_EQ(l.entry_size, LUO_WIRE_SESSION_ENTRY_V2);
	ASSERT_EQ(c.sizes[0], LUO_WIRE_SESSION_ENTRY_V2);
	/* A newer client's larger entry: luod's own size. */
	l = (struct luo_wire_list){ .size = sizeof(l), .entry_size = 4000 };
	c = (struct chunks){ 0 };
	ASSERT_OK(luo_wire_call_stream(conn, LUO_IOCTL_LIST, &l, sizeof(l), note_chunk, &c));
	ASSERT_EQ(l.entry_size, LUO_WIRE_SESSION_ENTRY_V2);
	ASSERT_EQ(c.sizes[0], LUO_WIRE_SESSION_ENTRY_V2);
	l = (struct luo_wire_list){ .size = sizeof(l), .entry_size = 10 };
	ASSERT_ERR(luo_wire_call_stream(conn, LUO_IOCTL_LIST, &l, sizeof(l), note_chunk, &c),
		   -EINVAL);

	/* DUMP_STATE hands over a sealed memfd. */
	struct luo_wire_dump_state q = { .size = sizeof(q) };
	int memfd = -1;
	ASSERT_OK(luo_wire_call(conn, LUO_IOCTL_DUMP_STATE, &q, sizeof(q), NULL, 0, &memfd));
	ASSERT_TRUE(memfd >= 0);
	ASSERT_TRUE(q.state_size > 0);
	ASSERT_EQ(lseek(memfd, 0, SEEK_END), (off_t)q.state_size);
	ASSERT_ERRNO(write(memfd, "x", 1), EPERM);
	close(memfd);

	close(s);
	close(conn);
	test_luod_stop(&d);
}

TEST_MAIN(TEST_CASE(socket_path_follows_luods_rule), TEST_CASE(command_table_has_the_kernel_sizes),
	  TEST_CASE(command_table_keeps_device_and_session_commands_apart),
	  TEST_CASE(parse_refuses_a_message_shorter_than_the_header),
	  TEST_CASE(parse_applies_the_kernel_checks_in_order),
	  TEST_CASE(parse_never_reads_past_the_message),
	  TEST_CASE(check_struct_applies_size_and_e2big_rules),
	  TEST_CASE(check_struct_keeps_the_client_size_field_and_flags),
	  TEST_CASE(check_fds_wants_exactly_the_command_fds),
	  TEST_CASE(check_fds_of_kexec_follow_its_initrd_flag),
	  TEST_CASE(check_batch_wants_the_counts_size_and_fds),
	  TEST_CASE(call_round_trip_copies_back_and_passes_the_fd),
	  TEST_CASE(call_copies_back_at_most_arg_size),
	  TEST_CASE(call_returns_the_server_error_and_writes_nothing),
	  TEST_CASE(call_sends_its_fds_and_server_checks_reach_the_client),
	  TEST_CASE(call_with_a_closed_fd_fails_with_ebadf_and_sends_nothing),
	  TEST_CASE(call_works_on_a_non_blocking_socket),
	  TEST_CASE(call_closes_fds_of_malformed_replies),
	  TEST_CASE(call_with_an_unwanted_reply_fd_closes_it),
	  TEST_CASE(call_reports_a_gone_server),
	  TEST_CASE(call_skips_junk_and_replies_of_dead_askers),
	  TEST_CASE(call_gives_each_thread_its_own_reply),
	  TEST_CASE(call_shared_with_a_forked_process_takes_only_its_reply),
	  TEST_CASE(call_stream_delivers_every_chunk),
	  TEST_CASE(call_stream_drains_after_a_callback_error),
	  TEST_CASE(call_on_a_stream_drains_it),
	  TEST_CASE(call_trims_a_long_request_of_zeros_to_the_full_struct),
	  TEST_CASE(reply_send_refuses_oversized_payloads),
	  TEST_CASE(set_timeout_refuses_a_negative_value),
	  TEST_CASE(call_times_out_and_drops_the_late_reply),
	  TEST_CASE(call_times_out_when_the_socket_stays_full),
	  TEST_CASE(stream_call_times_out_in_the_middle_of_a_stream),
	  TEST_CASE(socket_candidates_follow_the_clients_rule),
	  TEST_CASE(connect_first_falls_back_to_the_system_luod),
	  TEST_CASE(connect_default_finds_the_per_user_luod),
	  TEST_CASE(connect_reports_what_is_at_the_path),
	  TEST_CASE(luod_takes_requests_up_to_exactly_the_maximum),
	  TEST_CASE(listings_keep_the_entry_size_the_client_knows))
