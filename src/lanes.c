/*-------------------------------------------------------------------------
 *
 * lanes.c
 *	  Where each priority lane's ready jobs begin, so that jq_dequeue
 *	  starts its index descent there instead of walking the dead entries of
 *	  the jobs already handed out.
 *
 * Every job handed out leaves an entry behind in jq.job_ready_idx that
 * points to a row version no longer ready.  Until VACUUM removes them, a
 * scan from the start of a lane walks them all, and while any snapshot
 * older than them is held (an analyst's long query), VACUUM cannot, and
 * the scan must visit the heap for each.  After a million jobs that is
 * 90% of a dequeue's time, and it grows with the backlog it causes.
 *
 * So this file keeps, per (database, queue, priority), a bound: a key
 * (run_at, id) at or below every ready job of the lane.  jq_dequeue scans
 * each lane from its bound, most urgent lane first, and then advances the
 * bound to the first job it took (or to +inf when it found none: the lane
 * is empty and later dequeues skip it).  The walk is then only over the
 * entries of jobs handed out since the last advance.
 *
 * The bound is only safe if nothing ready can appear below it, and jobs do
 * appear at any key: an enqueue with a past run_at, a promoted retry, a
 * reclaimed lease, a redriven dead letter, a rolled-back dequeue or
 * cancel.  All of these go through the count trigger (count_trigger.c),
 * which notes, per lane, the least key this transaction made ready and
 * the least key of a ready row it changed.  At commit the first is a
 * lowering of the bound; at abort (or rollback to a savepoint), the
 * second.  Either runs in the transaction callback, after the change is
 * visible (or the row lock gone), so a dequeue whose snapshot missed the
 * change finds the lowering afterwards.
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
 * What no trigger sees is a ready row locked and released without a
 * change: SELECT ... FOR UPDATE by its owner or a superuser (no pgjq role
 * may lock jq.job).  A dequeue skips it (SKIP LOCKED) and may advance past
 * it; pgjq_lanes_forget, which every counter rebuild runs, starts every
 * lane from the beginning again.
 *
 * The bounds are valid from a counter rebuild (counters.c) on, which
 * holds SHARE locks on jq.job while it installs a bound of -inf in every
 * lane that has ready jobs.  Until then (after a start or a crash, or
 * without the worker), and while a prepared transaction may hold notes no
 * callback will apply, jq_dequeue scans whole lanes as before.
 *
 * Locking: lanes_lock (an LWLock of the "pgjq" tranche) guards everything
 * in shared memory here.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/lanes.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/xact.h"
#include "funcapi.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "lanes.h"

PG_FUNCTION_INFO_V1(pgjq_lane_bounds);

/* queues whose lanes are kept at once, over all databases */
#define PGJQ_MAX_LANE_QUEUES	1024

#define LANE_INDEX(priority)	((int) (priority) - PGJQ_LIMIT_PRIORITY_MIN)
#define LANE_PRIORITY(index)	((int16) ((index) + PGJQ_LIMIT_PRIORITY_MIN))

typedef struct LanesKey
{
	Oid			dboid;
	int32		queue_id;
} LanesKey;

/*
 * A queue's lanes.  A lane whose bound is +inf has no ready job; a queue
 * without an entry has none in any lane.
 */
typedef struct QueueLanes
{
	LanesKey	key;
	PgjqLaneKey bound[PGJQ_NUM_LANES];
	uint64		lowered[PGJQ_NUM_LANES];	/* generation of the last lowering */
} QueueLanes;

typedef struct LanesDb
{
	Oid			dboid;
	bool		valid;			/* installed by a rebuild, no prepared notes */
	bool		unused;			/* the schema is too old for bounds */
	bool		overflow;		/* a queue found no entry: scan it whole */
	uint64		generation;		/* lowerings so far */
} LanesDb;

typedef struct LanesShared
{
	LanesDb		dbs[PGJQ_MAX_DATABASES];
} LanesShared;

static LWLock *lanes_lock = NULL;
static LanesShared *lanes_shared = NULL;
static HTAB *lanes_hash = NULL;

static const PgjqLaneKey lane_none = {DT_NOEND, PG_INT64_MAX};
static const PgjqLaneKey lane_start = {DT_NOBEGIN, PG_INT64_MIN};

/*
 * What this backend's transaction did to a lane, per subtransaction: the
 * least key it made ready (lowered at commit) and the least key of a
 * ready row it changed (lowered at abort).
 */
typedef struct LaneNote
{
	int32		queue_id;
	int16		priority;
	SubTransactionId subid;
	PgjqLaneKey made_ready;
	PgjqLaneKey changed;
} LaneNote;

static LaneNote *notes = NULL;
static int	nnotes = 0;
static int	maxnotes = 0;

static inline int
key_cmp(const PgjqLaneKey *a, const PgjqLaneKey *b)
{
	if (a->run_at != b->run_at)
		return a->run_at < b->run_at ? -1 : 1;
	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return 0;
}

static inline bool
key_is_none(const PgjqLaneKey *k)
{
	return key_cmp(k, &lane_none) == 0;
}

Size
pgjq_lanes_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(LanesShared)),
					hash_estimate_size(PGJQ_MAX_LANE_QUEUES, sizeof(QueueLanes)));
}

void
pgjq_lanes_shmem_init(LWLock *lock)
{
	bool		found;
	HASHCTL		info;

	lanes_lock = lock;
	lanes_shared = ShmemInitStruct("pgjq lanes", sizeof(LanesShared), &found);
	if (!found)
		memset(lanes_shared, 0, sizeof(LanesShared));
	info.keysize = sizeof(LanesKey);
	info.entrysize = sizeof(QueueLanes);
	lanes_hash = ShmemInitHash("pgjq lane hash", PGJQ_MAX_LANE_QUEUES,
							   PGJQ_MAX_LANE_QUEUES, &info,
							   HASH_ELEM | HASH_BLOBS);
}

/* this database's slot, created on demand; NULL when all are taken */
static LanesDb *
lanes_db(bool create)
{
	LanesDb    *free_slot = NULL;

	for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
	{
		if (lanes_shared->dbs[i].dboid == MyDatabaseId)
			return &lanes_shared->dbs[i];
		if (lanes_shared->dbs[i].dboid == InvalidOid && free_slot == NULL)
			free_slot = &lanes_shared->dbs[i];
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(LanesDb));
		free_slot->dboid = MyDatabaseId;
	}
	return create ? free_slot : NULL;
}

/* a new entry: every lane empty */
static void
init_entry(QueueLanes *e)
{
	for (int i = 0; i < PGJQ_NUM_LANES; i++)
	{
		e->bound[i] = lane_none;
		e->lowered[i] = 0;
	}
}

/*
 * lower moves a lane's bound down to key (if it is not lower already) and
 * stamps the lane with a new generation.  Caller holds lanes_lock
 * exclusively.  Must not fail: it runs in transaction callbacks.
 */
static void
lower(LanesDb *db, int32 queue_id, int16 priority, const PgjqLaneKey *key)
{
	LanesKey	hkey;
	QueueLanes *e;
	bool		found;
	int			i = LANE_INDEX(priority);

	if (db == NULL || !db->valid || i < 0 || i >= PGJQ_NUM_LANES)
		return;
	memset(&hkey, 0, sizeof(hkey));
	hkey.dboid = MyDatabaseId;
	hkey.queue_id = queue_id;
	e = hash_search(lanes_hash, &hkey, HASH_ENTER_NULL, &found);
	if (e == NULL)
	{
		db->overflow = true;
		return;
	}
	if (!found)
		init_entry(e);
	if (key_cmp(key, &e->bound[i]) < 0)
		e->bound[i] = *key;
	e->lowered[i] = ++db->generation;
}

/*
 * apply_notes lowers the lanes of the notes of subtransaction subid (or
 * of all, when InvalidSubTransactionId), by their made_ready key at
 * commit and by their changed key at abort.
 */
static void
apply_notes(SubTransactionId subid, bool commit)
{
	LanesDb    *db;

	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	db = lanes_db(false);
	for (int i = 0; i < nnotes; i++)
	{
		const PgjqLaneKey *key = commit ? &notes[i].made_ready : &notes[i].changed;

		if (subid != InvalidSubTransactionId && notes[i].subid != subid)
			continue;
		if (!key_is_none(key))
			lower(db, notes[i].queue_id, notes[i].priority, key);
	}
	LWLockRelease(lanes_lock);
}

/*
 * At PREPARE the notes would be lost (COMMIT PREPARED and ROLLBACK
 * PREPARED run no callback): the bounds stop being trusted until the
 * next rebuild, which waits for the prepared transaction to end.
 */
static void
invalidate(void)
{
	LanesDb    *db;

	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	db = lanes_db(false);
	if (db != NULL)
	{
		db->valid = false;
		db->unused = false;
	}
	LWLockRelease(lanes_lock);
}

static void
lanes_xact_callback(XactEvent event, void *arg)
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
 * changed are ready again (and unlocked) at once, so its changed keys are
 * lowered now, and its made-ready keys vanish with it.
 */
static void
lanes_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
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
 * pgjq_lanes_note records, for the current subtransaction, that a row of
 * jq.job at (queue, priority, run_at, id) became ready (made_ready) or was
 * ready and is being changed.  A no-op without shared memory.
 */
void
pgjq_lanes_note(int32 queue_id, int16 priority, TimestampTz run_at, int64 id,
				bool made_ready)
{
	static bool callbacks_registered = false;
	SubTransactionId subid = GetCurrentSubTransactionId();
	PgjqLaneKey key = {run_at, id};
	LaneNote   *n = NULL;

	if (lanes_shared == NULL)
		return;
	for (int i = nnotes - 1; i >= 0; i--)
		if (notes[i].subid == subid && notes[i].queue_id == queue_id &&
			notes[i].priority == priority)
		{
			n = &notes[i];
			break;
		}
	if (n == NULL)
	{
		if (!callbacks_registered)
		{
			RegisterXactCallback(lanes_xact_callback, NULL);
			RegisterSubXactCallback(lanes_subxact_callback, NULL);
			callbacks_registered = true;
		}
		if (nnotes == maxnotes)
		{
			maxnotes = Max(8, maxnotes * 2);
			if (notes == NULL)
				notes = MemoryContextAlloc(TopMemoryContext, sizeof(LaneNote) * maxnotes);
			else
				notes = repalloc(notes, sizeof(LaneNote) * maxnotes);
		}
		n = &notes[nnotes++];
		n->queue_id = queue_id;
		n->priority = priority;
		n->subid = subid;
		n->made_ready = lane_none;
		n->changed = lane_none;
	}
	if (made_ready && key_cmp(&key, &n->made_ready) < 0)
		n->made_ready = key;
	if (!made_ready && key_cmp(&key, &n->changed) < 0)
		n->changed = key;
}

/*
 * pgjq_lanes_begin fills scan with the lanes of a queue that may hold
 * ready jobs, most urgent first, and where to start in each; false when
 * the bounds cannot be trusted and the dequeue must scan whole lanes.
 * Jobs this transaction made ready itself count too: they are visible to
 * it before its commit lowers any bound.  Call it before the statement
 * whose snapshot the scan uses.
 */
bool
pgjq_lanes_begin(int32 queue_id, PgjqLaneScan *scan)
{
	PgjqLaneKey start[PGJQ_NUM_LANES];
	uint64		generation;
	LanesDb    *db;
	QueueLanes *e;
	LanesKey	hkey;

	if (lanes_shared == NULL || !pgjq_use_lane_bounds)
		return false;
	memset(&hkey, 0, sizeof(hkey));
	hkey.dboid = MyDatabaseId;
	hkey.queue_id = queue_id;

	LWLockAcquire(lanes_lock, LW_SHARED);
	db = lanes_db(false);
	if (db == NULL || !db->valid)
	{
		LWLockRelease(lanes_lock);
		return false;
	}
	e = hash_search(lanes_hash, &hkey, HASH_FIND, NULL);
	if (e == NULL && db->overflow)
	{
		LWLockRelease(lanes_lock);
		return false;
	}
	generation = db->generation;
	for (int i = 0; i < PGJQ_NUM_LANES; i++)
		start[i] = e != NULL ? e->bound[i] : lane_none;
	LWLockRelease(lanes_lock);

	for (int i = 0; i < nnotes; i++)
	{
		int			lane = LANE_INDEX(notes[i].priority);

		if (notes[i].queue_id == queue_id && lane >= 0 && lane < PGJQ_NUM_LANES &&
			key_cmp(&notes[i].made_ready, &start[lane]) < 0)
			start[lane] = notes[i].made_ready;
	}

	scan->nlanes = 0;
	scan->may_advance = !IsolationUsesXactSnapshot();
	for (int i = PGJQ_NUM_LANES - 1; i >= 0; i--)
	{
		if (key_is_none(&start[i]))
			continue;
		scan->lane[scan->nlanes].priority = LANE_PRIORITY(i);
		scan->lane[scan->nlanes].seq = generation;
		scan->lane[scan->nlanes].start = start[i];
		scan->lane[scan->nlanes].scanned = false;
		scan->lane[scan->nlanes].head = lane_none;
		scan->nlanes++;
	}
	return true;
}

/*
 * pgjq_lanes_advance publishes what a dequeue found: each lane it scanned
 * had no ready job it could see below the first job it took, or none at
 * all.  A lane lowered since the dequeue began keeps its bound (see the
 * file comment); a queue whose lanes are all empty loses its entry.
 */
void
pgjq_lanes_advance(int32 queue_id, const PgjqLaneScan *scan)
{
	LanesDb    *db;
	QueueLanes *e;
	LanesKey	hkey;
	bool		empty = true;

	if (!scan->may_advance)
		return;
	memset(&hkey, 0, sizeof(hkey));
	hkey.dboid = MyDatabaseId;
	hkey.queue_id = queue_id;

	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	db = lanes_db(false);
	e = db != NULL && db->valid ?
		hash_search(lanes_hash, &hkey, HASH_FIND, NULL) : NULL;
	if (e == NULL)
	{
		LWLockRelease(lanes_lock);
		return;
	}
	for (int l = 0; l < scan->nlanes; l++)
	{
		int			i = LANE_INDEX(scan->lane[l].priority);

		if (!scan->lane[l].scanned || e->lowered[i] > scan->lane[l].seq)
			continue;
		if (key_cmp(&scan->lane[l].head, &e->bound[i]) > 0)
			e->bound[i] = scan->lane[l].head;
	}
	for (int i = 0; i < PGJQ_NUM_LANES && empty; i++)
		empty = key_is_none(&e->bound[i]);
	if (empty)
		hash_search(lanes_hash, &hkey, HASH_REMOVE, NULL);
	LWLockRelease(lanes_lock);
}

/*
 * pgjq_lanes_need_install tells whether this database's bounds wait for a
 * counter rebuild to install them: never installed, or no longer trusted.
 */
bool
pgjq_lanes_need_install(void)
{
	LanesDb    *db;
	bool		need;

	if (lanes_shared == NULL)
		return false;
	LWLockAcquire(lanes_lock, LW_SHARED);
	db = lanes_db(false);
	need = db == NULL || (!db->valid && !db->unused);
	LWLockRelease(lanes_lock);
	return need;
}

/* forget_all removes this database's lanes; caller locks exclusively */
static void
forget_all(void)
{
	HASH_SEQ_STATUS status;
	QueueLanes *e;

	hash_seq_init(&status, lanes_hash);
	while ((e = hash_seq_search(&status)) != NULL)
		if (e->key.dboid == MyDatabaseId)
			hash_search(lanes_hash, &e->key, HASH_REMOVE, NULL);
}

/*
 * pgjq_lanes_forget stops trusting this database's bounds until the next
 * install (jq.reset_counters: CREATE EXTENSION).
 */
void
pgjq_lanes_forget(void)
{
	LanesDb    *db;

	if (lanes_shared == NULL)
		return;
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	forget_all();
	db = lanes_db(false);
	if (db != NULL)
	{
		db->valid = false;
		db->unused = false;
	}
	LWLockRelease(lanes_lock);
}

/*
 * pgjq_lanes_install starts this database's bounds afresh: the lanes
 * (queue_ids[i], priorities[i]) have ready jobs and start at -inf, every
 * other lane is empty.  The caller holds SHARE locks on jq.job, so no
 * transaction is changing it, and the list is complete.  n < 0 says the
 * schema is too old for bounds: none are kept, and none are awaited.
 */
void
pgjq_lanes_install(int32 *queue_ids, int16 *priorities, int n)
{
	LanesDb    *db;

	if (lanes_shared == NULL)
		return;
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	forget_all();
	db = lanes_db(true);
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
			int			lane = LANE_INDEX(priorities[i]);
			LanesKey	hkey;
			QueueLanes *e;
			bool		found;

			if (lane < 0 || lane >= PGJQ_NUM_LANES)
				continue;
			memset(&hkey, 0, sizeof(hkey));
			hkey.dboid = MyDatabaseId;
			hkey.queue_id = queue_ids[i];
			e = hash_search(lanes_hash, &hkey, HASH_ENTER_NULL, &found);
			if (e == NULL)
			{
				db->overflow = true;
				continue;
			}
			if (!found)
				init_entry(e);
			e->bound[lane] = lane_start;
		}
	}
	LWLockRelease(lanes_lock);
}

/*
 * jq.lane_bounds() shows where the next dequeue of each lane that may hold
 * ready jobs starts: one row per (queue, priority), in the order dequeues
 * take lanes.  run_at is -infinity (and id NULL) for a lane scanned from
 * its start.  No rows while the bounds are not trusted
 * (jq.counters_valid() is false, or pgjq is not preloaded).
 */
Datum
pgjq_lane_bounds(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	QueueLanes *e;
	LanesDb    *db;

	pgjq_init_materialized_srf(fcinfo);
	if (lanes_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(lanes_lock, LW_SHARED);
	db = lanes_db(false);
	if (db != NULL && db->valid)
	{
		hash_seq_init(&status, lanes_hash);
		while ((e = hash_seq_search(&status)) != NULL)
		{
			if (e->key.dboid != MyDatabaseId)
				continue;
			for (int i = PGJQ_NUM_LANES - 1; i >= 0; i--)
			{
				Datum		values[4];
				bool		nulls[4] = {false, false, false, false};

				if (key_is_none(&e->bound[i]))
					continue;
				values[0] = Int32GetDatum(e->key.queue_id);
				values[1] = Int32GetDatum((int32) LANE_PRIORITY(i));
				values[2] = TimestampTzGetDatum(e->bound[i].run_at);
				values[3] = Int64GetDatum(e->bound[i].id);
				nulls[3] = key_cmp(&e->bound[i], &lane_start) == 0;
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			}
		}
	}
	LWLockRelease(lanes_lock);
	return (Datum) 0;
}
