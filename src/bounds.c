/*-------------------------------------------------------------------------
 *
 * bounds.c
 *	  Where the scans of jq.job's partial indexes start, so that they skip
 *	  the dead entries of the jobs already handed out, promoted or
 *	  finished: each priority lane of jq_dequeue, the promotion of a
 *	  queue's scheduled jobs, and the reclaim of expired leases.
 *
 * Every job handed out leaves an entry behind in jq.job_ready_idx that
 * points to a row version no longer ready.  Until VACUUM removes them, a
 * scan from the start of a lane walks them all, and while any snapshot
 * older than them is held (an analyst's long query), VACUUM cannot, and
 * the scan must visit the heap for each.  After a million jobs that is
 * 90% of a dequeue's time, and it grows with the backlog it causes.  The
 * same holds for jq.job_scheduled_idx (every promoted job leaves an entry
 * with a past run_at, which each promotion and each dequeue's probe for
 * due jobs walk) and jq.job_leased_idx (every lease leaves one, and past
 * its expiry each reclaim walks it): with a snapshot held for ten minutes,
 * the background worker spent most of a core walking them.
 *
 * So this file keeps bounds: per (database, queue, priority), a key
 * (run_at, id) at or below every ready job of the lane; per (database,
 * queue), one at or below every scheduled job; per database, one at or
 * below every lease's (lease_expires_at, id), and one at or below every
 * waiting job's (deadline, id) (the scan of jq.expire_deadlines, whose
 * slot is named by the expired state).  jq_dequeue scans
 * each lane from its bound, most urgent lane first, and then moves the
 * bound up to the lane's head: the first ready job its snapshot saw from
 * the bound on, whether another transaction had it locked or not (+inf
 * when there was none: the lane is empty and later dequeues skip it).  The
 * walk is then only over the entries of jobs handed out since, by this
 * dequeue and by those still in flight.  jq.promote_due and
 * jq.reclaim_expired_leases do the same with their bounds, through
 * jq.scan_bound() and jq.advance_scan_bound().
 *
 * A bound at the head is safe as long as nothing ready appears below it
 * later, and jobs do appear at any key: a producer's transaction that
 * commits after later jobs were handed out, an enqueue with a past run_at,
 * a promoted retry, a reclaimed lease, a redriven dead letter, an
 * operator's UPDATE.  All of these go through the count trigger
 * (count_trigger.c), which notes, per lane, the least key this
 * transaction made ready (or scheduled, or leased: the same holds for the
 * other two bounds); at commit, that is a lowering of the bound.  A
 * transaction that changes ready jobs and rolls back (a dequeue, a cancel)
 * makes them ready again, and the trigger notes their least key for the
 * abort too: to other transactions they looked ready all along, but the
 * transaction's own later dequeues did not see them.  Lowerings run in the
 * transaction callbacks, after the change is visible, so a dequeue whose
 * snapshot missed the change finds the lowering afterwards.
 *
 * That leaves one race: a dequeue that started before a lowering and
 * advances after it, over a job its snapshot could not see.  Each lowering
 * stamps its lane with the database's lowering generation; a dequeue
 * remembers the generation when it starts (before its snapshot) and
 * advances only lanes that no lowering touched since.  Under a steady
 * stream of commits into the lane some advances are refused; the next
 * succeeds, and the walk stays as long as the jobs taken between them.
 * Only READ COMMITTED dequeues advance: a repeatable read snapshot may
 * predate a lowering the dequeue never saw.
 *
 * The bounds are valid from a counter rebuild (counters.c) on, which
 * holds SHARE locks on jq.job while it installs a bound of -inf wherever
 * there are jobs.  Until then (after a start or a crash, or without the
 * worker), and while a prepared transaction may hold notes no callback
 * will apply, every scan starts at the start of its index as before.
 *
 * Locking: bounds_lock (an LWLock of the "pgjq" tranche) guards everything
 * in shared memory here.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/bounds.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "bounds.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(pgjq_scan_bounds);
PG_FUNCTION_INFO_V1(pgjq_scan_bound);
PG_FUNCTION_INFO_V1(pgjq_advance_scan_bound);
PG_FUNCTION_INFO_V1(pgjq_forget_scan_bounds);

/* queues whose bounds are kept at once, over all databases */
#define PGJQ_MAX_BOUND_QUEUES	1024

/*
 * The bounds of a queue are slots of one entry: a slot per priority lane,
 * then one for its scheduled jobs.  The leases' bound is the leased slot
 * of the database's entry, queue 0 (queue ids start at 1), and so is the
 * deadlines' bound.
 */
#define SLOT_SCHEDULED			PGJQ_NUM_LANES
#define SLOT_LEASED				(PGJQ_NUM_LANES + 1)
#define SLOT_DEADLINE			(PGJQ_NUM_LANES + 2)
#define NUM_SLOTS				(PGJQ_NUM_LANES + 3)
#define LEASES_QUEUE			0
#define SLOT_FORGET				(-1)	/* a note: drop the queue's entry at commit */

#define LANE_SLOT(priority)		((int) (priority) - PGJQ_LIMIT_PRIORITY_MIN)
#define SLOT_PRIORITY(slot)		((int16) ((slot) + PGJQ_LIMIT_PRIORITY_MIN))

const PgjqBoundKey pgjq_bound_none = {DT_NOEND, PG_INT64_MAX};
const PgjqBoundKey pgjq_bound_start = {DT_NOBEGIN, PG_INT64_MIN};

typedef struct BoundsKey
{
	Oid			dboid;
	int32		queue_id;
} BoundsKey;

/*
 * A queue's bounds.  A slot whose bound is +inf has no row; a queue
 * without an entry has none in any slot.
 */
typedef struct QueueBounds
{
	BoundsKey	key;
	PgjqBoundKey bound[NUM_SLOTS];
	uint64		lowered[NUM_SLOTS]; /* generation of the last lowering */
} QueueBounds;

typedef struct BoundsDb
{
	Oid			dboid;
	bool		valid;			/* installed by a rebuild, no prepared notes */
	bool		unused;			/* the schema is too old for bounds */
	bool		overflow;		/* a queue found no entry: scan it whole */
	uint64		generation;		/* lowerings so far */
} BoundsDb;

typedef struct BoundsShared
{
	BoundsDb	dbs[PGJQ_MAX_DATABASES];
} BoundsShared;

static LWLock *bounds_lock = NULL;
static BoundsShared *bounds_shared = NULL;
static HTAB *bounds_hash = NULL;

/*
 * What this backend's transaction did to a slot, per subtransaction: the
 * least key of a row it put in the slot's state (lowered at commit) and
 * the least key of a row in that state it changed (lowered at abort).  A
 * note of slot SLOT_FORGET drops its queue's entry at commit (the queue
 * was dropped).
 */
typedef struct BoundNote
{
	int32		queue_id;
	int			slot;
	SubTransactionId subid;
	PgjqBoundKey made;
	PgjqBoundKey changed;
} BoundNote;

static BoundNote *notes = NULL;
static int	nnotes = 0;
static int	maxnotes = 0;

static inline int
key_cmp(const PgjqBoundKey *a, const PgjqBoundKey *b)
{
	if (a->at != b->at)
		return a->at < b->at ? -1 : 1;
	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return 0;
}

static inline bool
key_is_none(const PgjqBoundKey *k)
{
	return key_cmp(k, &pgjq_bound_none) == 0;
}

/*
 * slot_of finds the entry (a queue, or LEASES_QUEUE) and the slot of the
 * bound of rows in state: false for a state without one, or a priority
 * out of range.
 */
static bool
slot_of(char state, int32 queue_id, int16 priority, int32 *entry, int *slot)
{
	switch (state)
	{
		case PGJQ_STATE_READY:
			*entry = queue_id;
			*slot = LANE_SLOT(priority);
			return *slot >= 0 && *slot < PGJQ_NUM_LANES;
		case PGJQ_STATE_SCHEDULED:
			*entry = queue_id;
			*slot = SLOT_SCHEDULED;
			return true;
		case PGJQ_STATE_LEASED:
			*entry = LEASES_QUEUE;
			*slot = SLOT_LEASED;
			return true;
		case PGJQ_STATE_EXPIRED:
			*entry = LEASES_QUEUE;
			*slot = SLOT_DEADLINE;
			return true;
		default:
			return false;
	}
}

Size
pgjq_bounds_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(BoundsShared)),
					hash_estimate_size(PGJQ_MAX_BOUND_QUEUES, sizeof(QueueBounds)));
}

void
pgjq_bounds_shmem_init(LWLock *lock)
{
	bool		found;
	HASHCTL		info;

	bounds_lock = lock;
	bounds_shared = ShmemInitStruct("pgjq bounds", sizeof(BoundsShared), &found);
	if (!found)
		memset(bounds_shared, 0, sizeof(BoundsShared));
	info.keysize = sizeof(BoundsKey);
	info.entrysize = sizeof(QueueBounds);
	bounds_hash = ShmemInitHash("pgjq bound hash", PGJQ_MAX_BOUND_QUEUES,
								PGJQ_MAX_BOUND_QUEUES, &info,
								HASH_ELEM | HASH_BLOBS);
}

/* this database's slot, created on demand; NULL when all are taken */
static BoundsDb *
bounds_db(bool create)
{
	BoundsDb   *free_slot = NULL;

	for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
	{
		if (bounds_shared->dbs[i].dboid == MyDatabaseId)
			return &bounds_shared->dbs[i];
		if (bounds_shared->dbs[i].dboid == InvalidOid && free_slot == NULL)
			free_slot = &bounds_shared->dbs[i];
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(BoundsDb));
		free_slot->dboid = MyDatabaseId;
	}
	return create ? free_slot : NULL;
}

/* the entry of a queue; with create, a new one has every slot empty */
static QueueBounds *
queue_entry(BoundsDb *db, int32 queue_id, bool create)
{
	BoundsKey	hkey;
	QueueBounds *e;
	bool		found;

	memset(&hkey, 0, sizeof(hkey));
	hkey.dboid = MyDatabaseId;
	hkey.queue_id = queue_id;
	e = hash_search(bounds_hash, &hkey, create ? HASH_ENTER_NULL : HASH_FIND, &found);
	if (e == NULL && create)
		db->overflow = true;
	else if (e != NULL && !found)
		for (int i = 0; i < NUM_SLOTS; i++)
		{
			e->bound[i] = pgjq_bound_none;
			e->lowered[i] = 0;
		}
	return e;
}

/* drop_if_empty removes an entry whose slots are all empty */
static void
drop_if_empty(QueueBounds *e)
{
	for (int i = 0; i < NUM_SLOTS; i++)
		if (!key_is_none(&e->bound[i]))
			return;
	hash_search(bounds_hash, &e->key, HASH_REMOVE, NULL);
}

/*
 * lower_bound moves a slot's bound down to key (if it is not lower already) and
 * stamps the slot with a new generation.  Caller holds bounds_lock
 * exclusively.  Must not fail: it runs in transaction callbacks.
 */
static void
lower_bound(BoundsDb *db, int32 queue_id, int slot, const PgjqBoundKey *key)
{
	QueueBounds *e;

	if (db == NULL || !db->valid)
		return;
	e = queue_entry(db, queue_id, true);
	if (e == NULL)
		return;
	if (key_cmp(key, &e->bound[slot]) < 0)
		e->bound[slot] = *key;
	e->lowered[slot] = ++db->generation;
}

/*
 * advance_bound moves a slot's bound up to head, unless a lowering touched the
 * slot since generation (see the file comment).  Caller holds bounds_lock
 * exclusively.
 */
static void
advance_bound(QueueBounds *e, int slot, uint64 generation, const PgjqBoundKey *head)
{
	if (e->lowered[slot] > generation)
		return;
	if (key_cmp(head, &e->bound[slot]) > 0)
		e->bound[slot] = *head;
}

/*
 * apply_notes lowers the slots of the notes of subtransaction subid (or
 * of all, when InvalidSubTransactionId), by their made key at commit and
 * by their changed key at abort.
 */
static void
apply_notes(SubTransactionId subid, bool commit)
{
	BoundsDb   *db;

	LWLockAcquire(bounds_lock, LW_EXCLUSIVE);
	db = bounds_db(false);
	for (int i = 0; i < nnotes; i++)
	{
		const PgjqBoundKey *key = commit ? &notes[i].made : &notes[i].changed;

		if (subid != InvalidSubTransactionId && notes[i].subid != subid)
			continue;
		if (notes[i].slot == SLOT_FORGET)
		{
			QueueBounds *e;

			if (commit && db != NULL && (e = queue_entry(db, notes[i].queue_id, false)) != NULL)
				hash_search(bounds_hash, &e->key, HASH_REMOVE, NULL);
		}
		else if (!key_is_none(key))
			lower_bound(db, notes[i].queue_id, notes[i].slot, key);
	}
	LWLockRelease(bounds_lock);
}

/*
 * At PREPARE the notes would be lost (COMMIT PREPARED and ROLLBACK
 * PREPARED run no callback): the bounds stop being trusted until the
 * next rebuild, which waits for the prepared transaction to end.
 */
static void
invalidate(void)
{
	BoundsDb   *db;

	LWLockAcquire(bounds_lock, LW_EXCLUSIVE);
	db = bounds_db(false);
	if (db != NULL)
	{
		db->valid = false;
		db->unused = false;
	}
	LWLockRelease(bounds_lock);
}

static void
bounds_xact_callback(XactEvent event, void *arg)
{
	if (nnotes == 0)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			apply_notes(InvalidSubTransactionId, true);
			nnotes = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			apply_notes(InvalidSubTransactionId, false);
			nnotes = 0;
			break;
		case XACT_EVENT_PREPARE:
			invalidate();
			nnotes = 0;
			break;
		default:
			break;
	}
}

/*
 * A subtransaction's notes pass to its parent; when it aborts, the rows it
 * changed are back (and unlocked) at once, so its changed keys are
 * lowered now, and its made keys vanish with it.
 */
static void
bounds_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			kept = 0;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB && nnotes > 0)
		apply_notes(mySubid, false);
	for (int i = 0; i < nnotes; i++)
	{
		if (notes[i].subid == mySubid)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
				continue;
			notes[i].subid = parentSubid;
		}
		notes[kept++] = notes[i];
	}
	nnotes = kept;
}

/*
 * note_of finds or makes the current subtransaction's note of a slot.
 */
static BoundNote *
note_of(int32 entry, int slot)
{
	static bool callbacks_registered = false;
	SubTransactionId subid = GetCurrentSubTransactionId();
	BoundNote  *n;

	for (int i = nnotes - 1; i >= 0; i--)
		if (notes[i].subid == subid && notes[i].queue_id == entry &&
			notes[i].slot == slot)
			return &notes[i];
	if (!callbacks_registered)
	{
		pgjq_wakeup_register_callbacks();	/* to run after these: see there */
		RegisterXactCallback(bounds_xact_callback, NULL);
		RegisterSubXactCallback(bounds_subxact_callback, NULL);
		callbacks_registered = true;
	}
	if (nnotes == maxnotes)
	{
		maxnotes = Max(8, maxnotes * 2);
		if (notes == NULL)
			notes = MemoryContextAlloc(TopMemoryContext, sizeof(BoundNote) * maxnotes);
		else
			notes = repalloc(notes, sizeof(BoundNote) * maxnotes);
	}
	n = &notes[nnotes++];
	n->queue_id = entry;
	n->slot = slot;
	n->subid = subid;
	n->made = pgjq_bound_none;
	n->changed = pgjq_bound_none;
	return n;
}

/*
 * pgjq_bounds_note records, for the current subtransaction, that a row of
 * jq.job entered state (made) or was in state and is being changed, at
 * key (at, id) of the state's index: run_at for ready and scheduled jobs,
 * lease_expires_at for leased ones.  A no-op without shared memory.
 */
void
pgjq_bounds_note(char state, int32 queue_id, int16 priority, TimestampTz at,
				 int64 id, bool made)
{
	PgjqBoundKey key = {at, id};
	BoundNote  *n;
	int32		entry;
	int			slot;

	if (bounds_shared == NULL || !slot_of(state, queue_id, priority, &entry, &slot))
		return;
	n = note_of(entry, slot);
	if (made && key_cmp(&key, &n->made) < 0)
		n->made = key;
	if (!made && key_cmp(&key, &n->changed) < 0)
		n->changed = key;
}

/*
 * read_bounds copies the bounds of the entry's slots first..last into
 * start[] and returns true, or returns false when they are not trusted.
 * A slot starts no higher than the rows this transaction put there
 * itself: they are visible to it before its commit lowers any bound.
 */
static bool
read_bounds(int32 entry, int first, int last, PgjqBoundKey *start,
			uint64 *generation)
{
	BoundsDb   *db;
	QueueBounds *e;

	if (bounds_shared == NULL || !pgjq_use_scan_bounds)
		return false;
	LWLockAcquire(bounds_lock, LW_SHARED);
	db = bounds_db(false);
	if (db == NULL || !db->valid)
	{
		LWLockRelease(bounds_lock);
		return false;
	}
	e = queue_entry(db, entry, false);
	if (e == NULL && db->overflow)
	{
		LWLockRelease(bounds_lock);
		return false;
	}
	*generation = db->generation;
	for (int i = first; i <= last; i++)
		start[i - first] = e != NULL ? e->bound[i] : pgjq_bound_none;
	LWLockRelease(bounds_lock);

	for (int i = 0; i < nnotes; i++)
		if (notes[i].queue_id == entry && notes[i].slot >= first &&
			notes[i].slot <= last && notes[i].slot != SLOT_FORGET &&
			key_cmp(&notes[i].made, &start[notes[i].slot - first]) < 0)
			start[notes[i].slot - first] = notes[i].made;
	return true;
}

/*
 * pgjq_lanes_begin fills scan with the lanes of a queue that may hold
 * ready jobs, most urgent first, and where to start in each; false when
 * the bounds cannot be trusted and the dequeue must scan whole lanes.
 * Call it before the statement whose snapshot the scan uses.
 */
bool
pgjq_lanes_begin(int32 queue_id, PgjqLaneScan *scan)
{
	PgjqBoundKey start[PGJQ_NUM_LANES];

	if (!read_bounds(queue_id, 0, PGJQ_NUM_LANES - 1, start, &scan->generation))
		return false;
	scan->nlanes = 0;
	scan->may_advance = !IsolationUsesXactSnapshot();
	for (int i = PGJQ_NUM_LANES - 1; i >= 0; i--)
	{
		if (key_is_none(&start[i]))
			continue;
		scan->lane[scan->nlanes].priority = SLOT_PRIORITY(i);
		scan->lane[scan->nlanes].start = start[i];
		scan->lane[scan->nlanes].scanned = false;
		scan->lane[scan->nlanes].head = pgjq_bound_none;
		scan->nlanes++;
	}
	return true;
}

/*
 * pgjq_lanes_advance publishes what a dequeue found: each lane it scanned
 * had no ready job its snapshot could see below the lane's head, or none
 * at all.  A lane lowered since the dequeue began keeps its bound (see the
 * file comment); a queue whose bounds are all empty loses its entry.
 */
void
pgjq_lanes_advance(int32 queue_id, const PgjqLaneScan *scan)
{
	BoundsDb   *db;
	QueueBounds *e;

	if (!scan->may_advance)
		return;
	LWLockAcquire(bounds_lock, LW_EXCLUSIVE);
	db = bounds_db(false);
	e = db != NULL && db->valid ? queue_entry(db, queue_id, false) : NULL;
	if (e != NULL)
	{
		for (int l = 0; l < scan->nlanes; l++)
			if (scan->lane[l].scanned)
				advance_bound(e, LANE_SLOT(scan->lane[l].priority), scan->generation,
						&scan->lane[l].head);
		drop_if_empty(e);
	}
	LWLockRelease(bounds_lock);
}

/*
 * pgjq_bound_get reads one bound: false (and *start -inf) when bounds are
 * not trusted; +inf when there is no row in that state.  Call it before
 * the statement whose snapshot the scan uses, and pass *generation to
 * pgjq_bound_advance with the head that scan found.
 */
bool
pgjq_bound_get(char state, int32 queue_id, int16 priority,
			   PgjqBoundKey *start, uint64 *generation)
{
	int32		entry;
	int			slot;

	*start = pgjq_bound_start;
	*generation = 0;
	if (!slot_of(state, queue_id, priority, &entry, &slot))
		return false;
	if (!read_bounds(entry, slot, slot, start, generation))
	{
		*start = pgjq_bound_start;
		return false;
	}
	return true;
}

/*
 * pgjq_bound_advance moves one bound up to head, the first row in the
 * state that a scan begun at generation saw from the bound on (locked or
 * not; +inf for none).  Only in READ COMMITTED: see the file comment.
 */
void
pgjq_bound_advance(char state, int32 queue_id, int16 priority,
				   uint64 generation, const PgjqBoundKey *head)
{
	BoundsDb   *db;
	QueueBounds *e;
	int32		entry;
	int			slot;

	if (bounds_shared == NULL || IsolationUsesXactSnapshot() ||
		!slot_of(state, queue_id, priority, &entry, &slot))
		return;
	LWLockAcquire(bounds_lock, LW_EXCLUSIVE);
	db = bounds_db(false);
	e = db != NULL && db->valid ? queue_entry(db, entry, false) : NULL;
	if (e != NULL)
	{
		advance_bound(e, slot, generation, head);
		drop_if_empty(e);
	}
	LWLockRelease(bounds_lock);
}

/*
 * pgjq_bounds_need_install tells whether this database's bounds wait for a
 * counter rebuild to install them: never installed, or no longer trusted.
 */
bool
pgjq_bounds_need_install(void)
{
	BoundsDb   *db;
	bool		need;

	if (bounds_shared == NULL)
		return false;
	LWLockAcquire(bounds_lock, LW_SHARED);
	db = bounds_db(false);
	need = db == NULL || (!db->valid && !db->unused);
	LWLockRelease(bounds_lock);
	return need;
}

/* forget_all removes this database's bounds; caller locks exclusively */
static void
forget_all(void)
{
	HASH_SEQ_STATUS status;
	QueueBounds *e;

	hash_seq_init(&status, bounds_hash);
	while ((e = hash_seq_search(&status)) != NULL)
		if (e->key.dboid == MyDatabaseId)
			hash_search(bounds_hash, &e->key, HASH_REMOVE, NULL);
}

/*
 * pgjq_bounds_forget stops trusting this database's bounds until the next
 * install (jq.reset_counters: CREATE EXTENSION, ALTER EXTENSION UPDATE).
 */
void
pgjq_bounds_forget(void)
{
	BoundsDb   *db;

	if (bounds_shared == NULL)
		return;
	LWLockAcquire(bounds_lock, LW_EXCLUSIVE);
	forget_all();
	db = bounds_db(false);
	if (db != NULL)
	{
		db->valid = false;
		db->unused = false;
	}
	LWLockRelease(bounds_lock);
}

/*
 * pgjq_bounds_install starts this database's bounds afresh: where there
 * are rows in states[i] (of queue queue_ids[i], priority priorities[i]),
 * the bound is -inf; everywhere else, +inf.  The caller holds SHARE locks
 * on jq.job, so no transaction is changing it, and the list is complete.
 * n < 0 says the schema is too old for bounds: none are kept, and none are
 * awaited.
 */
void
pgjq_bounds_install(const char *states, const int32 *queue_ids,
					const int16 *priorities, int n)
{
	BoundsDb   *db;

	if (bounds_shared == NULL)
		return;
	LWLockAcquire(bounds_lock, LW_EXCLUSIVE);
	forget_all();
	db = bounds_db(true);
	if (db != NULL && n < 0)
	{
		db->valid = false;
		db->unused = true;
	}
	else if (db != NULL)
	{
		db->valid = true;
		db->unused = false;
		db->overflow = false;
		for (int i = 0; i < n; i++)
		{
			QueueBounds *e;
			int32		entry;
			int			slot;

			if (!slot_of(states[i], queue_ids[i], priorities[i], &entry, &slot))
				continue;
			e = queue_entry(db, entry, true);
			if (e != NULL)
				e->bound[slot] = pgjq_bound_start;
			/* waiting jobs may have deadlines: their scan starts afresh */
			if ((states[i] == PGJQ_STATE_READY || states[i] == PGJQ_STATE_SCHEDULED) &&
				(e = queue_entry(db, LEASES_QUEUE, true)) != NULL)
				e->bound[SLOT_DEADLINE] = pgjq_bound_start;
		}
	}
	LWLockRelease(bounds_lock);
}

/* the state of a slot, and its queue and priority, for the SQL functions */
static void
describe_slot(int32 entry, int slot, char *state, Datum *queue_id, bool *queue_null,
			  Datum *priority, bool *priority_null)
{
	*state = slot < PGJQ_NUM_LANES ? PGJQ_STATE_READY :
		slot == SLOT_SCHEDULED ? PGJQ_STATE_SCHEDULED :
		slot == SLOT_LEASED ? PGJQ_STATE_LEASED : PGJQ_STATE_EXPIRED;
	*queue_id = Int32GetDatum(entry);
	*queue_null = slot == SLOT_LEASED || slot == SLOT_DEADLINE;
	*priority = Int32GetDatum((int32) SLOT_PRIORITY(slot));
	*priority_null = slot >= PGJQ_NUM_LANES;
}

/*
 * jq.scan_bounds() shows where the next scan of each index starts, one
 * row per bound that is not +inf: state (ready: a lane of
 * jq.job_ready_idx, with its queue and priority; scheduled: a queue's part
 * of jq.job_scheduled_idx; leased: jq.job_leased_idx; expired:
 * jq.job_deadline_idx, which the expiry scans), and the key, at (run_at,
 * lease_expires_at or deadline) and id (NULL when the bound is a time
 * alone); at is -infinity for a scan from the start.  No rows while the
 * bounds are not trusted (jq.counters_valid() is false, or pgjq is not
 * preloaded).
 */
Datum
pgjq_scan_bounds(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	QueueBounds *e;
	BoundsDb   *db;

	pgjq_init_materialized_srf(fcinfo);
	if (bounds_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(bounds_lock, LW_SHARED);
	db = bounds_db(false);
	if (db != NULL && db->valid)
	{
		hash_seq_init(&status, bounds_hash);
		while ((e = hash_seq_search(&status)) != NULL)
		{
			if (e->key.dboid != MyDatabaseId)
				continue;
			for (int i = NUM_SLOTS - 1; i >= 0; i--)
			{
				Datum		values[5];
				bool		nulls[5] = {false, false, false, false, false};
				char		state;

				if (key_is_none(&e->bound[i]))
					continue;
				describe_slot(e->key.queue_id, i, &state, &values[1], &nulls[1],
							  &values[2], &nulls[2]);
				values[0] = CStringGetTextDatum(pgjq_state_info(state)->name);
				values[3] = TimestampTzGetDatum(e->bound[i].at);
				values[4] = Int64GetDatum(e->bound[i].id);
				nulls[4] = e->bound[i].id == PG_INT64_MIN;	/* a bound without one */
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			}
		}
	}
	LWLockRelease(bounds_lock);
	return (Datum) 0;
}

/* the state argument of the SQL functions below, checked */
static char
state_arg(FunctionCallInfo fcinfo, int32 *queue_id, int16 *priority)
{
	char		state;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("state must not be null")));
	state = PG_GETARG_CHAR(0);
	if (state != PGJQ_STATE_READY && state != PGJQ_STATE_SCHEDULED &&
		state != PGJQ_STATE_LEASED && state != PGJQ_STATE_EXPIRED)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("jobs in state \"%c\" have no scan bound", state),
				 errhint("Pass 'r', 's', 'l', or 'e' for the deadlines of waiting jobs.")));
	if (state != PGJQ_STATE_LEASED && state != PGJQ_STATE_EXPIRED && PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue_id must not be null for state \"%c\"", state)));
	if (state == PGJQ_STATE_READY && PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("priority must not be null for state \"%c\"", state)));
	*queue_id = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	*priority = 0;
	if (state == PGJQ_STATE_READY)
	{
		int32		p = PG_GETARG_INT32(2);

		if (p < PGJQ_LIMIT_PRIORITY_MIN || p > PGJQ_LIMIT_PRIORITY_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("priority must be between %d and %d",
							PGJQ_LIMIT_PRIORITY_MIN, PGJQ_LIMIT_PRIORITY_MAX)));
		*priority = (int16) p;
	}
	return state;
}

/*
 * jq.scan_bound(state, queue_id, priority) returns where a scan of the
 * jobs in state (of the queue, in the lane of priority for ready jobs)
 * starts: at (-infinity when the bounds are not trusted, infinity when
 * there is no such job), id, and the generation to pass to
 * jq.advance_scan_bound.  Read it in a statement before the scan's.
 */
Datum
pgjq_scan_bound(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	PgjqBoundKey start;
	uint64		generation;
	int32		queue_id;
	int16		priority;
	char		state = state_arg(fcinfo, &queue_id, &priority);

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pgjq: jq.scan_bound must return a record");
	(void) pgjq_bound_get(state, queue_id, priority, &start, &generation);
	values[0] = TimestampTzGetDatum(start.at);
	values[1] = Int64GetDatum(start.id);
	nulls[1] = key_cmp(&start, &pgjq_bound_start) == 0 || key_is_none(&start);
	values[2] = Int64GetDatum((int64) generation);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * jq.advance_scan_bound(state, queue_id, priority, generation, at, id)
 * moves a bound up to the head a scan found: the first job in state that
 * its snapshot saw from the bound on, locked or not; at NULL when it saw
 * none.  Ignored in a repeatable read transaction.
 */
Datum
pgjq_advance_scan_bound(PG_FUNCTION_ARGS)
{
	PgjqBoundKey head = pgjq_bound_none;
	int32		queue_id;
	int16		priority;
	char		state = state_arg(fcinfo, &queue_id, &priority);

	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("generation must not be null"),
				 errhint("Pass the generation jq.scan_bound returned.")));
	if (!PG_ARGISNULL(4))
	{
		head.at = PG_GETARG_TIMESTAMPTZ(4);
		head.id = PG_ARGISNULL(5) ? PG_INT64_MIN : PG_GETARG_INT64(5);
	}
	pgjq_bound_advance(state, queue_id, priority, (uint64) PG_GETARG_INT64(3), &head);
	PG_RETURN_VOID();
}

/*
 * jq.forget_scan_bounds(queue_id) drops a queue's bounds when the
 * transaction commits: jq_drop_queue calls it, so that the bounds of
 * dropped queues do not fill shared memory (a queue id is never used
 * again).  A rollback keeps them.
 */
Datum
pgjq_forget_scan_bounds(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0) && bounds_shared != NULL)
		(void) note_of(PG_GETARG_INT32(0), SLOT_FORGET);
	PG_RETURN_VOID();
}
