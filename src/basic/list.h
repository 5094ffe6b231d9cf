/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: intrusive doubly linked lists
 *
 * A list head is a pair of pointers embedded in the owner; the list keeps
 * insertion order, which the engine relies on for creation order of sessions
 * and preservation order of files.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct list_node {
	struct list_node *prev, *next;
};

struct list_head {
	struct list_node node; /* node.next is the first element, node.prev the last */
	size_t count;
};

static inline void list_init(struct list_head *h)
{
	h->node.prev = h->node.next = &h->node;
	h->count = 0;
}

static inline bool list_empty(const struct list_head *h)
{
	return h->node.next == &h->node;
}

static inline void list_append(struct list_head *h, struct list_node *n)
{
	n->prev = h->node.prev;
	n->next = &h->node;
	h->node.prev->next = n;
	h->node.prev = n;
	h->count++;
}

static inline void list_remove(struct list_head *h, struct list_node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
	h->count--;
}

#define list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define LIST_FOREACH(pos, head)                                                                    \
	for (struct list_node *pos = (head)->node.next; pos != &(head)->node; pos = pos->next)
#define LIST_FOREACH_SAFE(pos, head)                                                               \
	for (struct list_node *pos = (head)->node.next, *pos##_next = pos->next;                   \
	     pos != &(head)->node; pos = pos##_next, pos##_next = pos->next)
#define LIST_FOREACH_REVERSE(pos, head)                                                            \
	for (struct list_node *pos = (head)->node.prev; pos != &(head)->node; pos = pos->prev)
#define LIST_FOREACH_REVERSE_SAFE(pos, head)                                                       \
	for (struct list_node *pos = (head)->node.prev, *pos##_prev = pos->prev;                   \
	     pos != &(head)->node; pos = pos##_prev, pos##_prev = pos->prev)
