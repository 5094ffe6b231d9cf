/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the identity index behind EBUSY
 *
 * Every file the engine holds (preserved, or incoming and not yet finished)
 * is indexed by its struct luo_file_id, in one of two ways:
 *
 *  - identities by inode (by_description unset: memfds, sockets, pipes,
 *    regular files) are whole in (dev, ino, extra), and per uid: two uids
 *    may each preserve the same inode (neither can block the other, nor
 *    learn that the other did), unless it is the very same open file
 *    description, handed from one to the other (kcmp).  The file itself
 *    sits in a hash table hashed by (dev, ino, extra): O(1), no allocation,
 *    no system call but for another uid's file of the same inode.
 *
 *  - identities by open file description are a (dev, ino, extra) group, one
 *    per key in a second hash table, holding its files in a balanced tree
 *    (glibc's tsearch()) ordered by the kernel's order of the open file
 *    descriptions behind luod's own fds, as kcmp(KCMP_FILE) reports it.  A
 *    handler that can name the description (the eventfd handler puts the
 *    kernel's eventfd-id in extra) makes every group a single file, found
 *    without a kcmp(); without such a name (every eventfd in one group, say)
 *    a lookup costs O(log n) comparisons, each at most one kcmp().
 *
 * The index itself (struct identity_index) is allocated with its first file
 * and freed with its last, so e->identity_root is NULL exactly when nothing
 * is indexed.  f->id_node is NULL when f is not indexed, its group when it is
 * indexed by description, and &f->id_hash when by inode.
 *
 * Files enter when preserved (or decoded) and leave before their fd is
 * closed: the description order needs the fd open.  luo_identity_destroy()
 * (from luo_engine_free()) drops the index in one go and leaves the root
 * NULL, after which removal only forgets.
 */
#include <errno.h>
#include <linux/kcmp.h>
#include <search.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "basic/macro.h"
#include "engine-internal.h"

struct identity_index {
	struct hashmap by_inode; /* struct luo_file, through id_hash */
	struct hashmap groups;	 /* struct identity_group, through node */
	size_t count;		 /* files indexed */
};

struct identity_group {
	struct hash_node node;
	struct luo_file_id key; /* dev, ino, extra; by_description set */
	void *tree;		/* tsearch() tree of struct luo_file * */
	size_t count;
};

/*
 * kcmp() needs our pid, and getpid() is a system call of its own: it is read
 * at most once per index operation, and only if a comparison needs it (not
 * cached for good, which a fork would invalidate).
 */
static pid_t identity_pid;

static int cmp_description(int fd1, int fd2)
{
	long r;

	if (fd1 == fd2)
		return 0;
	if (identity_pid == 0)
		identity_pid = getpid();
	r = syscall(SYS_kcmp, identity_pid, identity_pid, KCMP_FILE, fd1, fd2);
	switch (r) {
	case 0:
		return 0;
	case 1:
		return -1;
	case 2:
		return 1;
	default:
		/*
		 * No order from the kernel (kcmp unavailable): fall back to the
		 * fd numbers, which still keeps the tree consistent because
		 * luod's fds are stable while indexed; only dups go unnoticed.
		 */
		return fd1 < fd2 ? -1 : 1;
	}
}

/* Within a group every key is equal: only the descriptions differ. */
static int group_cmp(const void *a, const void *b)
{
	const struct luo_file *fa = a, *fb = b;

	if (fa == fb)
		return 0;
	return cmp_description(fa->hf.fd, fb->hf.fd);
}

static uint64_t id_hash(const struct luo_file_id *id)
{
	return hash_u64(hash_u64(hash_u64(id->dev) ^ id->ino) ^ id->extra);
}

static bool id_key_eq(const struct luo_file_id *a, const struct luo_file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->extra == b->extra;
}

struct inode_key {
	const struct luo_file_id *id;
	uint32_t uid;
	int fd;
};

/* An indexed file that the one in key would repeat: the same inode for the
 * same uid, or for another uid the very same open file description. */
static bool by_inode_conflict(const struct hash_node *n, const void *key)
{
	const struct luo_file *o = container_of(n, struct luo_file, id_hash);
	const struct inode_key *k = key;

	if (!id_key_eq(&o->id, k->id))
		return false;
	if (o->session->uid == k->uid)
		return true;
	return k->fd >= 0 && o->hf.fd >= 0 && luo_fd_same_description(k->fd, o->hf.fd);
}

static bool group_eq(const struct hash_node *n, const void *key)
{
	return id_key_eq(&container_of(n, struct identity_group, node)->key, key);
}

static struct identity_group *group_find(const struct identity_index *x,
					 const struct luo_file_id *id, uint64_t hash)
{
	struct hash_node *n = hashmap_find(&x->groups, hash, group_eq, id);

	return n ? container_of(n, struct identity_group, node) : NULL;
}

/* Frees the index itself; its groups are gone or freed by the caller. */
static void index_free(struct luo_engine *e)
{
	struct identity_index *x = e->identity_root;

	hashmap_done(&x->by_inode);
	hashmap_done(&x->groups);
	free(x);
	e->identity_root = NULL;
}

static void index_put(struct luo_engine *e)
{
	struct identity_index *x = e->identity_root;

	if (x->count == 0)
		index_free(e);
}

static int add_by_description(struct identity_index *x, struct luo_file *f)
{
	uint64_t hash = id_hash(&f->id);
	struct identity_group *g = group_find(x, &f->id, hash);
	void *node;
	int r;

	if (!g) {
		g = calloc(1, sizeof(*g));
		if (!g)
			return -ENOMEM;
		g->key = f->id;
		r = hashmap_insert(&x->groups, &g->node, hash);
		if (r < 0) {
			free(g);
			return r;
		}
	}
	node = tsearch(f, &g->tree, group_cmp);
	if (!node || *(struct luo_file **)node != f) {
		if (g->count == 0) {
			hashmap_remove(&x->groups, &g->node);
			free(g);
		}
		return node ? -EBUSY : -ENOMEM;
	}
	g->count++;
	f->id_node = g;
	return 0;
}

static int add_by_inode(struct identity_index *x, struct luo_file *f)
{
	struct inode_key k = { &f->id, f->session->uid, f->hf.fd };
	uint64_t hash = id_hash(&f->id);
	int r;

	if (hashmap_find(&x->by_inode, hash, by_inode_conflict, &k))
		return -EBUSY;
	r = hashmap_insert(&x->by_inode, &f->id_hash, hash);
	if (r < 0)
		return r;
	f->id_node = &f->id_hash;
	return 0;
}

int luo_identity_add(struct luo_engine *e, struct luo_file *f)
{
	struct identity_index *x = e->identity_root;
	int r;

	if (f->id_node)
		return 0;
	if (!x) {
		x = calloc(1, sizeof(*x));
		if (!x)
			return -ENOMEM;
		e->identity_root = x;
	}
	identity_pid = 0;
	r = f->id.by_description ? add_by_description(x, f) : add_by_inode(x, f);
	if (r >= 0)
		x->count++;
	index_put(e);
	return r;
}

int luo_identity_add_known(struct luo_engine *e, struct luo_file *f, const struct luo_file_id *id)
{
	luo_identity_remove(e, f);
	f->id = *id;
	return luo_identity_add(e, f);
}

void luo_identity_remove(struct luo_engine *e, struct luo_file *f)
{
	struct identity_index *x = e->identity_root;

	if (!f->id_node)
		return;
	if (x) {
		if (f->id_node == &f->id_hash)
			hashmap_remove(&x->by_inode, &f->id_hash);
		else {
			struct identity_group *g = f->id_node;

			identity_pid = 0;
			tdelete(f, &g->tree, group_cmp);
			if (--g->count == 0) {
				hashmap_remove(&x->groups, &g->node);
				free(g);
			}
		}
		x->count--;
		index_put(e);
	}
	f->id_node = NULL;
}

static void identity_node_keep(void *node)
{
	/* The nodes point at files, which are freed with their sessions. */
	(void)node;
}

void luo_identity_destroy(struct luo_engine *e)
{
	struct identity_index *x = e->identity_root;

	if (!x)
		return;
	for (size_t i = 0; i < x->groups.n_buckets; i++)
		for (struct hash_node *n = x->groups.buckets[i], *next; n; n = next) {
			struct identity_group *g = container_of(n, struct identity_group, node);

			next = n->next;
			tdestroy(g->tree, identity_node_keep);
			free(g);
		}
	index_free(e);
}

bool luo_fd_same_description(int fd1, int fd2)
{
	pid_t pid = getpid();

	return syscall(SYS_kcmp, pid, pid, KCMP_FILE, fd1, fd2) == 0;
}
