/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * DOC: the journal: luod's state in shared memory, always current
 *
 * luod's worker keeps its state in private memory, which dies with it.  The
 * journal is what its successor recovers from: a memfd (in the fd table the
 * worker shares with the keeper), mapped MAP_SHARED, holding a snapshot of
 * the state (the state codec's blob, state.h) and an append-only log of the
 * changes made since.  Recovery is: decode the snapshot, apply the log, adopt
 * the fds the result names.
 *
 * Layout of the memfd (native byte order: a journal never leaves its
 * machine; the snapshot inside it is the codec's big-endian blob):
 *
 *   [0, 4096)            struct luo_journal_header, then the owner's area
 *   [snapshot_offset, +snapshot_size)      the snapshot blob (may be empty)
 *   [log_offset, log_offset + log_end)     committed records, back to back
 *   [.., capacity)       free; a record written there is staged, not committed
 *
 * Each record is a struct luo_jrec header and a payload, padded to 8 bytes;
 * seq counts up by one from snapshot_seq + 1; crc is CRC-32C over the header
 * (crc 0) and the payload.  Records become part of the journal only when
 * log_end moves past them (one release-store: luo_journal_commit()), so the
 * records of one request are committed together or not at all.  A reader
 * trusts nothing: every size, seq and checksum is checked, and a record that
 * fails inside the committed part makes the journal -EBADMSG.
 *
 * What the records say (payloads in journal.c):
 *   ROOT          update number and handle counter
 *   SESSION       a session's header, keyed by (kind, uid, name): created or changed
 *   SESSION_DEL   a session gone, with its files
 *   FILE          a file of a session, keyed by token: added or changed (the
 *                 codec's file record, its handler and its data)
 *   FILES         many files of one session, each as a FILE record says it:
 *                 the session's key once, its handlers' names once, then per
 *                 file the codec's record and the data (a batch, a handover)
 *   FILE_DEL      a file gone
 *   FLB           an FLB instance's whole state
 *   EXT, EXT_DEL  the daemon's own entries: (type, key) -> bytes, a small
 *                 table the journal keeps for it (connections, session
 *                 sockets, requests in flight, replies not yet sent); the
 *                 snapshot carries the table as the codec's ext node.
 *   CLEAR         every session gone (with its files): the first record of
 *                 luo_journal_note_all(), which then writes the whole state.
 *
 * The writer: luo_journal_attach() makes an engine report to a journal;
 * the daemon then calls luo_journal_note_*() for what each engine call
 * changed, luo_journal_ext_put()/del() for its own entries, and
 * luo_journal_commit() before its reply leaves.  What each call changed
 * (note_engine() after every one of them: handles, FLBs):
 *
 *   create, retrieve       note_session(s, false)
 *   preserve_fd            note_file(s, token)
 *   retrieve_fd            note_file(s, token), whether it failed or not
 *   a batch of either      note_files(s, tokens, n)
 *   finish                 note_file_gone() for each token s had, then
 *                          note_session(s, false): a finished session's
 *                          record must find it without files
 *   handover (and a release that hands over)
 *                          note_session_gone(OUTGOING, name), then
 *                          note_session(s, true): frozen files, new data
 *                          (as FILES records)
 *   release                note_session_gone(kind, name) if the session is
 *                          gone (aborted, finished), else note_session()
 *   reboot                 note_all()
 *
 * A record names a session by kind and name and a new one goes last in its
 * list, as the engine puts it: records staged in the order of the calls
 * replay into the engine's order.  Commit after every request, a failed one
 * too: a failed preserve_fd releases the dup it made, whose close waits for
 * a commit like any other.  Compaction writes a new
 * journal (snapshot of the state at some seq, empty log) into a new memfd,
 * typically in a forked child, and luo_journal_switch() then copies the
 * records the snapshot lacks and puts the new memfd in place.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "state.h"

#define LUO_JOURNAL_MAGIC "LUOJRNL1"
#define LUO_JOURNAL_VERSION 1
#define LUO_JOURNAL_HEADER_SIZE 4096
/* Bytes of the header page the journal's owner (luod's keeper) may use. */
#define LUO_JOURNAL_OWNER_AREA 2048
#define LUO_JOURNAL_EXT_NODE_COMPATIBLE "luod-journal-ext-v1"
#define LUO_JOURNAL_EXT_MAX (128 * 1024) /* bytes of one ext entry */

enum luo_jrec_type {
	LUO_JREC_ROOT = 1,
	LUO_JREC_SESSION = 2,
	LUO_JREC_SESSION_DEL = 3,
	LUO_JREC_FILE = 4,
	LUO_JREC_FILE_DEL = 5,
	LUO_JREC_FLB = 6,
	LUO_JREC_EXT = 7,
	LUO_JREC_EXT_DEL = 8,
	LUO_JREC_CLEAR = 9,
	LUO_JREC_FILES = 10,
	_LUO_JREC_MAX,
};

struct luo_journal_header {
	char magic[8];
	uint32_t version;
	uint32_t header_size;
	uint64_t capacity;	  /* size of the memfd */
	uint64_t generation;	  /* +1 at each compaction */
	uint64_t snapshot_offset; /* header_size */
	uint64_t snapshot_size;	  /* 0: the empty state */
	uint64_t snapshot_seq;	  /* the last change the snapshot holds */
	uint32_t snapshot_crc;
	uint32_t reserved;
	uint64_t log_offset;
	uint64_t log_end; /* committed bytes of log, release-stored */
	uint8_t pad[1024 - 80];
	uint8_t owner[LUO_JOURNAL_OWNER_AREA];
};

struct luo_jrec {
	uint32_t type;
	uint32_t size; /* header and payload, a multiple of 8 */
	uint64_t seq;
	uint32_t crc;
	uint32_t reserved;
};

typedef struct luo_journal luo_journal;

/* A new, empty journal (no snapshot, no records) in a new memfd of capacity
 * bytes (sparse: pages cost memory only once written). */
int luo_journal_create(size_t capacity, int *ret_fd);
/* Maps the journal in fd (not consumed) for reading and writing.  The
 * header is checked; the records are not (recovery does that). */
int luo_journal_open(int fd, luo_journal **ret);
void luo_journal_close(luo_journal *j);
int luo_journal_fd(const luo_journal *j);
struct luo_journal_header *luo_journal_header(luo_journal *j);
/* The owner's area of the header page (LUO_JOURNAL_OWNER_AREA bytes). */
void *luo_journal_owner_area(luo_journal *j);
/* Bytes of committed log, and of the snapshot. */
uint64_t luo_journal_log_size(const luo_journal *j);
uint64_t luo_journal_snapshot_size(const luo_journal *j);
/* seq of the last committed record (snapshot_seq if none). */
uint64_t luo_journal_seq(const luo_journal *j);

/* ---- writing ---- */

/*
 * The engine reports to j from now on: fds it closes while j is attached
 * (luo_file_free, FLB release) are closed only at the next commit, after
 * the records that stop naming them (a successor must never find an fd the
 * journal names closed, or reused).  Also remembers the root and FLB state
 * to write them only when they change.  j may be NULL to detach; one
 * journal serves one engine.  luo_engine_free() detaches (the fds it
 * releases wait for j's next commit or close), and so does
 * luo_journal_close() (what it still defers, it closes).
 */
void luo_journal_attach(luo_journal *j, luo_engine *e);

/* What one engine call changed.  Each stages records; 0 or -errno
 * (-ENOSPC: the log is full: compact).  note_file() of a token the session
 * does not hold writes nothing. */
int luo_journal_note_session(luo_journal *j, const luo_session *s, bool with_files);
int luo_journal_note_session_gone(luo_journal *j, enum luo_session_kind kind, uint32_t uid,
				  const char *name);
int luo_journal_note_file(luo_journal *j, const luo_session *s, uint64_t token);
/*
 * note_file() of n tokens of s at once, in FILES records: the same change in
 * less than half the bytes.  With retrieved (what changed the files was their
 * first retrieve), a file whose handler keeps its fd at retrieve, and so its
 * record, is written without its data.
 */
int luo_journal_note_files(luo_journal *j, const luo_session *s, const uint64_t *tokens, size_t n,
			   bool retrieved);
int luo_journal_note_file_gone(luo_journal *j, const luo_session *s, uint64_t token);
/* The root and every FLB, written only if changed since last noted. */
int luo_journal_note_engine(luo_journal *j);
/* Everything: a CLEAR record, then every session with its files, the root and
 * every FLB, so that the journal says the engine's whole state whatever it
 * said before (after a reboot, which drops and moves sessions wholesale). */
int luo_journal_note_all(luo_journal *j);
/* Closes fd at the next commit (the daemon's fds the journal names). */
void luo_journal_close_later(luo_journal *j, int fd);

/* The daemon's own entries. */
int luo_journal_ext_put(luo_journal *j, uint32_t type, uint64_t key, const void *data, size_t size);
int luo_journal_ext_del(luo_journal *j, uint32_t type, uint64_t key);
/* The entry (type, key), or NULL; *ret_size gets its size. */
const void *luo_journal_ext_get(const luo_journal *j, uint32_t type, uint64_t key,
				size_t *ret_size);
/* Calls fn for each entry of type (any order); stops at fn's first non-zero. */
int luo_journal_ext_foreach(const luo_journal *j, uint32_t type,
			    int (*fn)(uint64_t key, const void *data, size_t size, void *userdata),
			    void *userdata);

/* Makes everything staged part of the journal, then closes the fds whose
 * close was deferred.  Cannot fail. */
void luo_journal_commit(luo_journal *j);
/* Bytes staged and not committed (0 between requests). */
size_t luo_journal_staged(const luo_journal *j);

/*
 * Compaction.  luo_journal_write_snapshot() writes, into the empty memfd
 * new_fd, a journal whose snapshot is the engine's state and the ext table
 * as they are now, at seq (luo_journal_seq() when called); made to run in a
 * forked child, it touches nothing of j but reads.  luo_journal_switch()
 * then appends to the new journal the records committed after that seq,
 * moves it onto j's fd number (dup3: a successor finds the old or the new
 * one, whole) and maps it; new_fd is consumed.  0 or -errno (j unchanged):
 * -EBUSY with records staged, -ESTALE for a snapshot older than j's.
 */
int luo_journal_write_snapshot(const luo_journal *j, int new_fd, uint64_t seq);
int luo_journal_switch(luo_journal *j, int new_fd);
/*
 * Compaction now, in this process, of the state as it is, staged changes
 * included: the way out when a note returns -ENOSPC in the middle of a
 * request, whose records can then be neither committed (they are partial)
 * nor switched past.  The new journal's snapshot holds everything the
 * request changed so far, noted or not, and the staged records are
 * dropped: note nothing more of that request's engine changes (a record
 * of a session the snapshot no longer has would make the journal
 * unreadable), then commit.  Costs one encode of the whole state.  0 or
 * -errno (j unchanged).
 */
int luo_journal_compact(luo_journal *j);

/* ---- reading ---- */

/* Do not adopt the fds: nothing is checked open, indexed or ever closed
 * (a checker, a dump, the fuzzer). */
#define LUO_JOURNAL_BORROW_FDS (1u << 0)

struct luo_journal_stats {
	uint64_t snapshot_size;
	uint64_t n_records;
	uint64_t log_size;
	uint64_t seq;
};

/*
 * Rebuilds e (no sessions, handlers registered) and j's ext table from the
 * journal j maps: the snapshot, then every committed record.  Unless
 * LUO_JOURNAL_BORROW_FDS, the engine then adopts every fd the state names,
 * each of which must be open and named once (-EBADF, -EBADMSG).  On
 * failure e is emptied without closing an fd.  -EBADMSG for a damaged
 * journal, -EPROTONOSUPPORT for a version this binary does not read,
 * -ENOPROTOOPT for a handler it lacks.
 */
int luo_journal_recover(luo_journal *j, luo_engine *e, unsigned flags,
			struct luo_journal_stats *ret_stats);

/*
 * The same over a journal held in memory (mem, size bytes: a copy, or the
 * fuzzer's input); e as above.  Entries of the ext table go to ext_put.
 */
int luo_journal_recover_mem(const void *mem, size_t size, luo_engine *e, unsigned flags,
			    int (*ext_put)(uint32_t type, uint64_t key, const void *data,
					   size_t size, void *userdata),
			    void *userdata, struct luo_journal_stats *ret_stats);

/* For tests and tools: CRC-32C as the records use it. */
uint32_t luo_crc32c(uint32_t crc, const void *data, size_t size);
