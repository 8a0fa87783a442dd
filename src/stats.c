/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Depth counters in O(1): per queue and priority, kept in shared memory
 *	  from commit-time deltas, never from count(*) and never from a hot
 *	  counter row that every enqueue would have to update.
 *
 * Row triggers on jq.job, jq.job_result and jq.dead_letter record each
 * change as a delta in backend memory, tagged with the subtransaction that
 * made it.  At commit the deltas are added to the shared counters; a
 * rolled-back (sub)transaction's deltas are dropped.  Because every state
 * change passes through the triggers, counters stay right whatever path
 * changed the job: the C hot path, the PL/pgSQL functions, or an operator's
 * own SQL.
 *
 * Shared memory is empty after a start or a crash, and so are the
 * counters: the worker rebuilds them from the tables (pgjq_stats_rebuild)
 * while holding SHARE locks on the three tables, which wait until every
 * writer has committed and applied its deltas and keep new writers out
 * until the counts are in place.
 *
 * Locking: counter_lock (an LWLock of the "pgjq" tranche) guards the
 * counter hash and the per-database state.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/stats.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(pgjq_count_trigger);
PG_FUNCTION_INFO_V1(pgjq_counters);
PG_FUNCTION_INFO_V1(pgjq_counters_valid);
PG_FUNCTION_INFO_V1(pgjq_reset_counters);

/* counter slots */
enum
{
	C_READY,					/* gauges: jobs in a state now */
	C_SCHEDULED,
	C_LEASED,
	C_DEAD,
	C_ENQUEUED,					/* totals: events since the counters began */
	C_SUCCEEDED,
	C_FAILED,
	C_DEAD_LETTERED,
	C_CANCELLED,
	C_NUM
};

typedef struct CounterKey
{
	Oid			dboid;
	int32		queue_id;
	int16		priority;
} CounterKey;

typedef struct CounterEntry
{
	CounterKey	key;
	int64		c[C_NUM];
} CounterEntry;

/* per database: are the counters built, and may they have drifted? */
typedef struct StatsDb
{
	Oid			dboid;
	bool		valid;			/* rebuilt since the start */
	bool		stale;			/* a prepared transaction or a full hash */
	TimestampTz since;			/* when the totals started counting */
} StatsDb;

typedef struct StatsShared
{
	LWLock	   *lock;
	StatsDb		dbs[PGJQ_MAX_DATABASES];
} StatsShared;

static StatsShared *stats_shared = NULL;
static HTAB *counter_hash = NULL;

/* backend-local deltas of the current transaction */
typedef struct Delta
{
	CounterKey	key;
	SubTransactionId subid;
	int64		c[C_NUM];
} Delta;

static Delta *deltas = NULL;
static int	ndeltas = 0;
static int	maxdeltas = 0;

Size
pgjq_stats_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(StatsShared)),
					hash_estimate_size(PGJQ_MAX_COUNTERS, sizeof(CounterEntry)));
}

void
pgjq_stats_shmem_startup(LWLock *lock)
{
	bool		found;
	HASHCTL		info;

	stats_shared = ShmemInitStruct("pgjq stats", sizeof(StatsShared), &found);
	if (!found)
	{
		memset(stats_shared, 0, sizeof(StatsShared));
		stats_shared->lock = lock;
	}
	info.keysize = sizeof(CounterKey);
	info.entrysize = sizeof(CounterEntry);
	counter_hash = ShmemInitHash("pgjq counters", PGJQ_MAX_COUNTERS,
								 PGJQ_MAX_COUNTERS, &info,
								 HASH_ELEM | HASH_BLOBS);
}

/* the state slot of a database, created on demand; NULL when all taken */
static StatsDb *
stats_db(Oid dboid, bool create)
{
	StatsDb    *free_slot = NULL;

	for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
	{
		if (stats_shared->dbs[i].dboid == dboid)
			return &stats_shared->dbs[i];
		if (stats_shared->dbs[i].dboid == InvalidOid && free_slot == NULL)
			free_slot = &stats_shared->dbs[i];
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(StatsDb));
		free_slot->dboid = dboid;
	}
	return create ? free_slot : NULL;
}

/*
 * counter_entry finds or creates the counters of key; NULL, with the
 * database marked stale, when the hash is full.  Caller holds the lock
 * exclusively.
 */
static CounterEntry *
counter_entry(const CounterKey *key, StatsDb *db)
{
	bool		found;
	CounterEntry *e = hash_search(counter_hash, key, HASH_ENTER_NULL, &found);

	if (e == NULL)
	{
		if (db != NULL)
			db->stale = true;
		return NULL;
	}
	if (!found)
		memset(e->c, 0, sizeof(e->c));
	return e;
}

/*
 * add_delta records n events of counter c for (queue, priority) in the
 * current subtransaction.
 */
static void
add_delta(int32 queue_id, int16 priority, int c, int64 n)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	Delta	   *d = NULL;

	for (int i = ndeltas - 1; i >= 0; i--)
		if (deltas[i].subid == subid && deltas[i].key.queue_id == queue_id &&
			deltas[i].key.priority == priority)
		{
			d = &deltas[i];
			break;
		}
	if (d == NULL)
	{
		pgjq_register_xact_callbacks();
		if (ndeltas == maxdeltas)
		{
			maxdeltas = Max(8, maxdeltas * 2);
			if (deltas == NULL)
				deltas = MemoryContextAlloc(TopMemoryContext, sizeof(Delta) * maxdeltas);
			else
				deltas = repalloc(deltas, sizeof(Delta) * maxdeltas);
		}
		d = &deltas[ndeltas++];
		memset(d, 0, sizeof(Delta));
		d->key.dboid = MyDatabaseId;
		d->key.queue_id = queue_id;
		d->key.priority = priority;
		d->subid = subid;
	}
	d->c[c] += n;
}

static int
state_counter(char state)
{
	switch (state)
	{
		case PGJQ_STATE_READY:
			return C_READY;
		case PGJQ_STATE_SCHEDULED:
			return C_SCHEDULED;
		case PGJQ_STATE_LEASED:
			return C_LEASED;
	}
	elog(ERROR, "pgjq: unknown job state '%c'", state);
	return -1;					/* keep compiler quiet */
}

/* reads the int4 / int2 / char / bool attribute named attname of tuple */
static Datum
get_attr(HeapTuple tuple, TupleDesc desc, const char *attname, bool *isnull)
{
	int			attno = SPI_fnumber(desc, attname);

	if (attno <= 0)
		elog(ERROR, "pgjq: column \"%s\" not found", attname);
	return heap_getattr(tuple, attno, desc, isnull);
}

/*
 * check_job_row enforces the invariants of a jq.job row that would be CHECK
 * constraints, but cost less here: the executor parses a table's CHECK
 * expressions again for every statement, which the hot path would pay on
 * every enqueue.  Every INSERT and every UPDATE of state fires the trigger;
 * the one UPDATE that leaves state alone, jq_extend, only touches a leased
 * job's lease_expires_at.
 */
static void
check_job_row(HeapTuple tup, TupleDesc desc, char state)
{
	bool		no_lease;

	if (state != PGJQ_STATE_READY && state != PGJQ_STATE_SCHEDULED &&
		state != PGJQ_STATE_LEASED)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("invalid state \"%c\" for a row of jq.job", state),
				 errdetail("A job in jq.job is ready (r), scheduled (s) or leased (l).")));
	(void) get_attr(tup, desc, "lease_expires_at", &no_lease);
	if ((state == PGJQ_STATE_LEASED) == no_lease)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("a row of jq.job has lease_expires_at set if and only if it is leased"),
				 errdetail("The row has state \"%c\" and %s lease_expires_at.",
						   state, no_lease ? "no" : "a")));
}

/*
 * jq.count_trigger() is a row trigger on jq.job, jq.job_result and
 * jq.dead_letter (TG_ARGV[0] names which): BEFORE INSERT, which costs no
 * after-trigger event, and AFTER UPDATE and DELETE, which see the row
 * version the statement really changed without making the executor lock
 * the row first (a BEFORE ROW trigger on UPDATE or DELETE does, and the
 * lock of a row another transaction locked is WAL-logged).  Either way the
 * trigger runs in the (sub)transaction of the change.
 */
Datum
pgjq_count_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;
	const char *table;
	bool		isnull;

	/*
	 * BEFORE or AFTER both count right; version 0.1.0 declared every one of
	 * these triggers BEFORE, and this library must keep serving a 0.1.0
	 * schema until ALTER EXTENSION pgjq UPDATE runs.
	 */
	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "pgjq: count_trigger must be a row trigger with one argument");

	desc = RelationGetDescr(trigdata->tg_relation);
	table = trigdata->tg_trigger->tgargs[0];
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		newtup = trigdata->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		oldtup = trigdata->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		oldtup = trigdata->tg_trigtuple;
		newtup = trigdata->tg_newtuple;
	}

	/* without shared memory there is nothing to count into */
	if (stats_shared == NULL)
	{
		if (newtup != NULL && strcmp(table, "job") == 0)
			check_job_row(newtup, desc,
						  DatumGetChar(get_attr(newtup, desc, "state", &isnull)));
		return PointerGetDatum(newtup ? newtup : oldtup);
	}

	if (strcmp(table, "job") == 0)
	{
		if (oldtup != NULL)
			add_delta(DatumGetInt32(get_attr(oldtup, desc, "queue_id", &isnull)),
					  DatumGetInt16(get_attr(oldtup, desc, "priority", &isnull)),
					  state_counter(DatumGetChar(get_attr(oldtup, desc, "state", &isnull))),
					  -1);
		if (newtup != NULL)
		{
			int32		queue_id = DatumGetInt32(get_attr(newtup, desc, "queue_id", &isnull));
			int16		priority = DatumGetInt16(get_attr(newtup, desc, "priority", &isnull));
			char		state = DatumGetChar(get_attr(newtup, desc, "state", &isnull));

			check_job_row(newtup, desc, state);
			add_delta(queue_id, priority, state_counter(state), 1);
			if (oldtup == NULL)
			{
				/* a new job, unless it is a dead letter coming back */
				(void) get_attr(newtup, desc, "lease_token", &isnull);
				if (isnull)
					add_delta(queue_id, priority, C_ENQUEUED, 1);
			}
			else if (DatumGetChar(get_attr(oldtup, desc, "state", &isnull)) == PGJQ_STATE_LEASED &&
					 state != PGJQ_STATE_LEASED)
				add_delta(queue_id, priority, C_FAILED, 1);	/* retried */
		}
	}
	else if (strcmp(table, "job_result") == 0)
	{
		if (newtup != NULL && oldtup == NULL)
		{
			char		state = DatumGetChar(get_attr(newtup, desc, "state", &isnull));

			add_delta(DatumGetInt32(get_attr(newtup, desc, "queue_id", &isnull)),
					  DatumGetInt16(get_attr(newtup, desc, "priority", &isnull)),
					  state == PGJQ_STATE_CANCELLED ? C_CANCELLED : C_SUCCEEDED, 1);
		}
	}
	else if (strcmp(table, "dead_letter") == 0)
	{
		if (oldtup != NULL)
			add_delta(DatumGetInt32(get_attr(oldtup, desc, "queue_id", &isnull)),
					  DatumGetInt16(get_attr(oldtup, desc, "priority", &isnull)),
					  C_DEAD, -1);
		if (newtup != NULL)
		{
			int32		queue_id = DatumGetInt32(get_attr(newtup, desc, "queue_id", &isnull));
			int16		priority = DatumGetInt16(get_attr(newtup, desc, "priority", &isnull));

			add_delta(queue_id, priority, C_DEAD, 1);
			if (oldtup == NULL)
			{
				add_delta(queue_id, priority, C_DEAD_LETTERED, 1);
				add_delta(queue_id, priority, C_FAILED, 1);
			}
		}
	}
	else
		elog(ERROR, "pgjq: count_trigger on unknown table \"%s\"", table);

	return PointerGetDatum(newtup ? newtup : oldtup);
}

/*
 * pgjq_stats_at_commit adds the transaction's deltas to the shared
 * counters.  Runs in the commit callback, so it must not fail: a full hash
 * marks the database's counters stale for the worker to rebuild.
 */
void
pgjq_stats_at_commit(void)
{
	StatsDb    *db;

	if (ndeltas == 0 || stats_shared == NULL)
	{
		ndeltas = 0;
		return;
	}
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	db = stats_db(MyDatabaseId, true);
	for (int i = 0; i < ndeltas; i++)
	{
		CounterEntry *e = counter_entry(&deltas[i].key, db);

		if (e == NULL)
			continue;
		for (int c = 0; c < C_NUM; c++)
			e->c[c] += deltas[i].c[c];
	}
	LWLockRelease(stats_shared->lock);
	ndeltas = 0;
}

/*
 * pgjq_stats_at_abort forgets the transaction's deltas; at PREPARE they
 * are lost too (COMMIT PREPARED runs no callback), so the counters are
 * marked stale and the worker rebuilds them once no prepared transaction
 * is left.
 */
void
pgjq_stats_at_abort(bool prepared)
{
	if (prepared && ndeltas > 0 && stats_shared != NULL)
	{
		StatsDb    *db;

		LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
		db = stats_db(MyDatabaseId, true);
		if (db != NULL)
			db->stale = true;
		LWLockRelease(stats_shared->lock);
	}
	ndeltas = 0;
}

/* a subtransaction's deltas pass to its parent, or vanish with it */
void
pgjq_stats_at_subxact(bool commit, SubTransactionId mySubid,
					  SubTransactionId parentSubid)
{
	int			kept = 0;

	for (int i = 0; i < ndeltas; i++)
	{
		if (deltas[i].subid == mySubid)
		{
			if (!commit)
				continue;
			deltas[i].subid = parentSubid;
		}
		deltas[kept++] = deltas[i];
	}
	ndeltas = kept;
}

/*
 * pgjq_stats_need_rebuild tells the worker whether this database's
 * counters must be rebuilt: never built since the start, or stale.
 */
bool
pgjq_stats_need_rebuild(bool *stale)
{
	StatsDb    *db;
	bool		result;

	LWLockAcquire(stats_shared->lock, LW_SHARED);
	db = stats_db(MyDatabaseId, false);
	result = db == NULL || !db->valid || db->stale;
	*stale = db != NULL && db->stale;
	LWLockRelease(stats_shared->lock);
	return result;
}

/*
 * The rebuild query: the state counts of the tables.  The worker runs it
 * after LOCK TABLE ... IN SHARE MODE on the three tables (see the header).
 * Totals restart from what the tables still hold.
 */
#define SQL_REBUILD \
	"SELECT queue_id, priority, state::text, count(*) FROM jq.job GROUP BY 1, 2, 3" \
	" UNION ALL" \
	" SELECT queue_id, priority, 'x', count(*) FROM jq.dead_letter GROUP BY 1, 2" \
	" UNION ALL" \
	" SELECT queue_id, priority, state::text, count(*) FROM jq.job_result GROUP BY 1, 2, 3"

/*
 * pgjq_stats_rebuild replaces this database's counters with counts from
 * the tables.  The caller holds SHARE locks on jq.job, jq.job_result and
 * jq.dead_letter and is connected to SPI inside a transaction.
 */
void
pgjq_stats_rebuild(void)
{
	HASH_SEQ_STATUS status;
	CounterEntry *e;
	StatsDb    *db;

	/*
	 * Not read-only: SPI then takes a fresh snapshot, taken after the
	 * locks were granted.  The snapshot of the transaction's start would
	 * miss the writers we just waited for, whose deltas are about to be
	 * overwritten.
	 */
	if (SPI_execute(SQL_REBUILD, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgjq: counter rebuild query failed");

	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&status, counter_hash);
	while ((e = hash_seq_search(&status)) != NULL)
		if (e->key.dboid == MyDatabaseId)
			hash_search(counter_hash, &e->key, HASH_REMOVE, NULL);

	db = stats_db(MyDatabaseId, true);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		CounterKey	key;
		char	   *state = SPI_getvalue(tup, desc, 3);
		int64		n = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));

		memset(&key, 0, sizeof(key));
		key.dboid = MyDatabaseId;
		key.queue_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		key.priority = DatumGetInt16(SPI_getbinval(tup, desc, 2, &isnull));
		e = counter_entry(&key, db);
		if (e == NULL)
			continue;
		/* every job the tables know of was enqueued once */
		e->c[C_ENQUEUED] += n;
		switch (state[0])
		{
			case PGJQ_STATE_READY:
				e->c[C_READY] += n;
				break;
			case PGJQ_STATE_SCHEDULED:
				e->c[C_SCHEDULED] += n;
				break;
			case PGJQ_STATE_LEASED:
				e->c[C_LEASED] += n;
				break;
			case 'x':
				e->c[C_DEAD] += n;
				e->c[C_DEAD_LETTERED] += n;
				break;
			case PGJQ_STATE_SUCCEEDED:
				e->c[C_SUCCEEDED] += n;
				break;
			case PGJQ_STATE_CANCELLED:
				e->c[C_CANCELLED] += n;
				break;
		}
	}
	if (db != NULL)
	{
		db->valid = true;
		db->stale = false;
		db->since = GetCurrentTimestamp();
	}
	LWLockRelease(stats_shared->lock);
}

/*
 * jq.counters() returns this database's counters, one row per queue and
 * priority.  O(number of queues x priorities): no table is read.
 */
Datum
pgjq_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	CounterEntry *e;
	StatsDb    *db;
	bool		valid = false;
	TimestampTz since = 0;

	pgjq_init_materialized_srf(fcinfo);
	if (stats_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(stats_shared->lock, LW_SHARED);
	db = stats_db(MyDatabaseId, false);
	if (db != NULL)
	{
		valid = db->valid && !db->stale;
		since = db->since;
	}
	hash_seq_init(&status, counter_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		Datum		values[C_NUM + 4];
		bool		nulls[C_NUM + 4];

		if (e->key.dboid != MyDatabaseId)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(e->key.queue_id);
		values[1] = Int32GetDatum((int32) e->key.priority);
		for (int c = 0; c < C_NUM; c++)
			values[2 + c] = Int64GetDatum(e->c[c]);
		values[2 + C_NUM] = BoolGetDatum(valid);
		values[3 + C_NUM] = TimestampTzGetDatum(since);
		nulls[3 + C_NUM] = since == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(stats_shared->lock);
	return (Datum) 0;
}

/*
 * jq.counters_valid() tells whether this database's counters are built and
 * exact.
 */
Datum
pgjq_counters_valid(PG_FUNCTION_ARGS)
{
	StatsDb    *db;
	bool		valid = false;

	if (stats_shared == NULL)
		PG_RETURN_BOOL(false);
	LWLockAcquire(stats_shared->lock, LW_SHARED);
	db = stats_db(MyDatabaseId, false);
	if (db != NULL)
		valid = db->valid && !db->stale;
	LWLockRelease(stats_shared->lock);
	PG_RETURN_BOOL(valid);
}

/*
 * jq.reset_counters() forgets this database's counters and marks them for
 * a rebuild.  CREATE EXTENSION calls it: after a DROP EXTENSION the old
 * counters would otherwise live on in shared memory under queue ids that
 * the new tables hand out again.
 */
Datum
pgjq_reset_counters(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS status;
	CounterEntry *e;
	StatsDb    *db;

	if (stats_shared == NULL)
		PG_RETURN_VOID();
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&status, counter_hash);
	while ((e = hash_seq_search(&status)) != NULL)
		if (e->key.dboid == MyDatabaseId)
			hash_search(counter_hash, &e->key, HASH_REMOVE, NULL);
	db = stats_db(MyDatabaseId, false);
	if (db != NULL)
		db->valid = false;
	LWLockRelease(stats_shared->lock);
	PG_RETURN_VOID();
}
