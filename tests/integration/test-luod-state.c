/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: luod's own node in the state blob, as `luod --check-state` judges it
 *
 * The state a luod hands to its next image carries a "luod" node beside the
 * engine's: the listening socket, connections, session sockets, queued
 * replies and the pending reply.  Each case builds a blob with the engine's
 * encoder and a hand-written node, puts it in a memfd and asks the real luod
 * whether it accepts it: a well-formed node is accepted, and every kind of
 * damage is refused (never guessed around), with the errno as exit code.
 */
#include <fcntl.h>
#include <libfdt.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/state.h"
#include "harness.h"
#include "luod-test.h"
#include "protocol/protocol.h"

struct node {
	bool omit; /* no luod node at all */
	const char *compatible;
	bool no_listen;
	uint32_t listen_fd;
	const uint8_t *conns; /* 16-byte records */
	size_t conns_len;
	const uint8_t *sessions; /* 24-byte records */
	size_t sessions_len;
	const uint8_t *pending;
	size_t pending_len;
	const uint8_t *queued;
	size_t queued_len;
	bool unknown_prop;
	bool subnode;
};

static int write_node(void *fdt, void *userdata)
{
	const struct node *n = userdata;
	int r = 0;

	r = r
		    ?: fdt_property_string(fdt, "compatible",
					   n->compatible ? n->compatible : "luod-daemon-v1");
	if (!n->no_listen)
		r = r ?: fdt_property_u32(fdt, "listen-fd", n->listen_fd);
	r = r ?: fdt_property_string(fdt, "socket-path", "/run/luo/luod.sock");
	r = r ?: fdt_property_u64(fdt, "started-usec", 1);
	r = r ?: fdt_property_u64(fdt, "live-updates", 0);
	r = r ?: fdt_property(fdt, "connections", n->conns, (int)n->conns_len);
	r = r ?: fdt_property(fdt, "sessions", n->sessions, (int)n->sessions_len);
	if (n->pending)
		r = r ?: fdt_property(fdt, "pending", n->pending, (int)n->pending_len);
	if (n->queued)
		r = r ?: fdt_property(fdt, "queued", n->queued, (int)n->queued_len);
	if (n->unknown_prop)
		r = r ?: fdt_property_u32(fdt, "from-the-future", 1);
	if (n->subnode) {
		r = r ?: fdt_begin_node(fdt, "child");
		r = r ?: fdt_end_node(fdt);
	}
	return r < 0 ? luo_fdt_errno(r) : 0;
}

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

/* Runs luod --check-state on the blob; returns its exit code, 0 only with the confirmation. */
static int check(const struct node *n)
{
	struct luo_state_ext ext = { .node = "luod", .write = write_node, .userdata = (void *)n };
	char luod[512], fdstr[16], out[128] = { 0 };
	luo_engine *e = NULL;
	void *blob = NULL;
	size_t size;
	int fd, code;

	ASSERT_OK(luo_engine_new(&e));
	ASSERT_OK(luo_engine_add_default_handlers(e));
	ASSERT_OK(luo_state_encode(e, n->omit ? NULL : &ext, &blob, &size));
	luo_engine_free(e);
	fd = memfd_create("state", 0); /* inherited by luod on purpose */
	ASSERT_OK(fd);
	ASSERT_EQ(write(fd, blob, size), (ssize_t)size);
	free(blob);
	snprintf(fdstr, sizeof(fdstr), "%d", fd);
	test_build_path("src/daemon/luod", luod, sizeof(luod));
	code = test_run_command_output((const char *const[]){ luod, "--check-state", fdstr, NULL },
				       out, sizeof(out));
	close(fd);
	if (code == 0 && strncmp(out, "luod-state-ok", 13) != 0)
		return -1;
	return code;
}

static uint8_t conn_rec[16], session_rec[24], pending_rec[48];

static struct node good(void)
{
	put32(conn_rec, 4);	 /* fd */
	put32(conn_rec + 4, 0);	 /* uid */
	put32(conn_rec + 8, 42); /* pid */
	put32(conn_rec + 12, 1); /* device holder */
	put32(session_rec, 5);
	put32(session_rec + 4, 0);
	put64(session_rec + 8, 0); /* stale */
	put64(session_rec + 16, 1234);
	memset(pending_rec, 0, sizeof(pending_rec));
	put32(pending_rec, 4);
	put32(pending_rec + 4, LUO_IOCTL_UPDATE);
	return (struct node){
		.listen_fd = 3,
		.conns = conn_rec,
		.conns_len = sizeof(conn_rec),
		.sessions = session_rec,
		.sessions_len = sizeof(session_rec),
		.pending = pending_rec,
		.pending_len = sizeof(pending_rec),
	};
}

TEST(well_formed_node_is_accepted)
{
	struct node n = good();
	uint8_t q[16 + 20];

	ASSERT_EQ(check(&n), 0);
	/* With a queued reply (header only) for the connection. */
	memset(q, 0, sizeof(q));
	put32(q, 4);
	put32(q + 4, UINT32_MAX);
	put32(q + 8, 16);
	n.queued = q;
	n.queued_len = 32;
	ASSERT_EQ(check(&n), 0);
}

TEST(missing_node_is_refused)
{
	struct node n = good();

	n.omit = true;
	ASSERT_EQ(check(&n), EBADMSG);
}

TEST(unknown_version_is_eprotonosupport)
{
	struct node n = good();

	n.compatible = "luod-daemon-v2";
	ASSERT_EQ(check(&n), EPROTONOSUPPORT);
}

TEST(unknown_property_or_subnode_is_refused)
{
	struct node n = good();

	n.unknown_prop = true;
	ASSERT_EQ(check(&n), EBADMSG);
	n = good();
	n.subnode = true;
	ASSERT_EQ(check(&n), EBADMSG);
	n = good();
	n.no_listen = true;
	ASSERT_EQ(check(&n), EBADMSG);
}

TEST(records_of_the_wrong_size_are_refused)
{
	struct node n = good();

	n.conns_len = 15;
	ASSERT_EQ(check(&n), EBADMSG);
	n = good();
	n.sessions_len = 23;
	ASSERT_EQ(check(&n), EBADMSG);
	n = good();
	n.pending_len = 40;
	ASSERT_EQ(check(&n), EBADMSG);
}

TEST(bad_fds_are_refused)
{
	struct node n = good();

	n.listen_fd = 2; /* stdio is never luod's to pass on */
	ASSERT_EQ(check(&n), EBADMSG);
	n = good();
	n.listen_fd = 5; /* the same fd as a session socket */
	ASSERT_EQ(check(&n), EBADMSG);
	n = good();
	put32(conn_rec + 12, 2); /* unknown connection flag */
	ASSERT_EQ(check(&n), EBADMSG);
}

TEST(pending_reply_must_name_a_connection)
{
	struct node n = good();

	put32(pending_rec, 9);
	ASSERT_EQ(check(&n), EBADMSG);
	n = good();
	put32(pending_rec + 4, 0x1234); /* neither UPDATE nor REBOOT */
	ASSERT_EQ(check(&n), EBADMSG);
}

TEST(live_handle_unknown_to_the_engine_is_refused)
{
	struct node n = good();

	put64(session_rec + 8, 77);
	ASSERT_EQ(check(&n), EBADMSG);
}

TEST(damaged_queued_replies_are_refused)
{
	struct node n = good();
	uint8_t q[16 + 20];

	memset(q, 0, sizeof(q));
	put32(q, 4);
	put32(q + 4, UINT32_MAX);
	put32(q + 8, 16);
	n.queued = q;
	n.queued_len = 20; /* cut inside the message */
	ASSERT_EQ(check(&n), EBADMSG);
	n.queued_len = 32;
	put32(q + 8, 8); /* shorter than a reply header */
	ASSERT_EQ(check(&n), EBADMSG);
	put32(q + 8, 16);
	put32(q, 6); /* no such endpoint */
	ASSERT_EQ(check(&n), EBADMSG);
	put32(q, 4);
	put32(q + 4, 5); /* its fd is a session socket's too */
	ASSERT_EQ(check(&n), EBADMSG);
}

TEST_MAIN(TEST_CASE(well_formed_node_is_accepted), TEST_CASE(missing_node_is_refused),
	  TEST_CASE(unknown_version_is_eprotonosupport),
	  TEST_CASE(unknown_property_or_subnode_is_refused),
	  TEST_CASE(records_of_the_wrong_size_are_refused), TEST_CASE(bad_fds_are_refused),
	  TEST_CASE(pending_reply_must_name_a_connection),
	  TEST_CASE(live_handle_unknown_to_the_engine_is_refused),
	  TEST_CASE(damaged_queued_replies_are_refused))
