/*-------------------------------------------------------------------------
 *
 * counters.c
 *	  Depth counters in O(1): per queue and priority, kept in shared memory
 *	  from commit-time deltas, never from count(*) and never from a hot
 *	  counter row that every enqueue would have to update.
 *
 * Row triggers on jq.job, jq.job_result and jq.dead_letter
 * (count_trigger.c) record each change as a delta in backend memory,
 * tagged with the subtransaction that made it.  At commit the deltas are added to the shared counters; a
 * rolled-back (sub)transaction's deltas are dropped.  Because every state
 * change passes through the triggers, counters stay right whatever path
 * changed the job: the C hot path, the SQL functions, or an operator's own
 * SQL.  Which counter a state counts in comes from PGJQ_STATES (pgjq.h).
 *
 * Shared memory is empty after a start or a crash, and so are the
 * counters: jq.rebuild_counters(), which the worker calls, recounts them
 * from the tables while holding SHARE locks on the three tables, which
 * wait until every writer has committed and applied its deltas and keep
 * new writers out until the counts are in place.
 *
 * Locking: counter_lock (an LWLock of the "pgjq" tranche) guards the
 * counter hash and the per-database state.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/counters.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "wakeup.h"
#include "bounds.h"
#include "keys.h"
#include "queue.h"
#include "statements.h"

PG_FUNCTION_INFO_V1(pgjq_counters);
PG_FUNCTION_INFO_V1(pgjq_counters_valid);
PG_FUNCTION_INFO_V1(pgjq_reset_counters);
PG_FUNCTION_INFO_V1(pgjq_rebuild_counters);

typedef struct CounterKey
{
	Oid			dboid;
	int32		queue_id;
	int16		priority;
} CounterKey;

typedef struct CounterEntry
{
	CounterKey	key;
	int64		c[PGJQ_C_NUM];
} CounterEntry;

/* per database: are the counters built, and may they have drifted? */
typedef struct CountersDb
{
	Oid			dboid;
	bool		valid;			/* rebuilt since the start */
	bool		stale;			/* a prepared transaction or a full hash */
	TimestampTz since;			/* when the totals started counting */
} CountersDb;

typedef struct CountersShared
{
	CountersDb	dbs[PGJQ_MAX_DATABASES];
} CountersShared;

static LWLock *counter_lock = NULL;
static CountersShared *counters_shared = NULL;
static HTAB *counter_hash = NULL;

/* backend-local deltas of the current transaction */
typedef struct Delta
{
	CounterKey	key;
	SubTransactionId subid;
	int64		c[PGJQ_C_NUM];
} Delta;

static Delta *deltas = NULL;
static int	ndeltas = 0;
static int	maxdeltas = 0;

Size
pgjq_counters_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(CountersShared)),
					hash_estimate_size(PGJQ_MAX_COUNTERS, sizeof(CounterEntry)));
}

void
pgjq_counters_shmem_init(LWLock *lock)
{
	bool		found;
	HASHCTL		info;

	counter_lock = lock;
	counters_shared = ShmemInitStruct("pgjq counters", sizeof(CountersShared), &found);
	if (!found)
		memset(counters_shared, 0, sizeof(CountersShared));
	info.keysize = sizeof(CounterKey);
	info.entrysize = sizeof(CounterEntry);
	counter_hash = ShmemInitHash("pgjq counter hash", PGJQ_MAX_COUNTERS,
								 PGJQ_MAX_COUNTERS, &info,
								 HASH_ELEM | HASH_BLOBS);
}

/* the state slot of a database, created on demand; NULL when all taken */
static CountersDb *
counters_db(Oid dboid, bool create)
{
	CountersDb *free_slot = NULL;

	for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
	{
		if (counters_shared->dbs[i].dboid == dboid)
			return &counters_shared->dbs[i];
		if (counters_shared->dbs[i].dboid == InvalidOid && free_slot == NULL)
			free_slot = &counters_shared->dbs[i];
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(CountersDb));
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
counter_entry(const CounterKey *key, CountersDb *db)
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
 * At commit the transaction's deltas are added to the shared counters.
 * This runs in the commit callback, so it must not fail: a full hash
 * marks the database's counters stale for the worker to rebuild.
 */
static void
apply_deltas(void)
{
	CountersDb *db;

	LWLockAcquire(counter_lock, LW_EXCLUSIVE);
	db = counters_db(MyDatabaseId, true);
	for (int i = 0; i < ndeltas; i++)
	{
		CounterEntry *e = counter_entry(&deltas[i].key, db);

		if (e == NULL)
			continue;
		for (int c = 0; c < PGJQ_C_NUM; c++)
			e->c[c] += deltas[i].c[c];
	}
	LWLockRelease(counter_lock);
}

/*
 * At PREPARE the deltas are lost (COMMIT PREPARED runs no callback), so
 * the counters are marked stale, and the worker rebuilds them once no
 * prepared transaction is left.
 */
void
pgjq_counters_mark_stale(void)
{
	CountersDb *db;

	LWLockAcquire(counter_lock, LW_EXCLUSIVE);
	db = counters_db(MyDatabaseId, true);
	if (db != NULL)
		db->stale = true;
	LWLockRelease(counter_lock);
}

/*
 * The keys' deltas and reservations (keys.c) end here too, after the
 * counters: one callback, so that their order is fixed.
 */
static void
counters_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (ndeltas > 0)
				apply_deltas();
			ndeltas = 0;
			pgjq_keys_at_commit();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			ndeltas = 0;
			pgjq_keys_at_abort();
			break;
		case XACT_EVENT_PREPARE:
			if (ndeltas > 0)
				pgjq_counters_mark_stale();
			ndeltas = 0;

			/*
			 * The keys' deltas are lost with the counters' (a rebuild
			 * follows); their reservations end now, as the prepared
			 * transaction's leases are counted by that rebuild.
			 */
			pgjq_keys_at_abort();
			break;
		default:
			break;
	}
}

/* a subtransaction's deltas pass to its parent, or vanish with it */
static void
counters_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	int			kept = 0;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	pgjq_keys_at_subabort(mySubid, parentSubid, event == SUBXACT_EVENT_COMMIT_SUB);
	for (int i = 0; i < ndeltas; i++)
	{
		if (deltas[i].subid == mySubid)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
				continue;
			deltas[i].subid = parentSubid;
		}
		deltas[kept++] = deltas[i];
	}
	ndeltas = kept;
}

/*
 * pgjq_counters_register_callbacks registers the transaction callbacks of
 * the counters and the keys, once per backend.
 */
void
pgjq_counters_register_callbacks(void)
{
	static bool callbacks_registered = false;

	if (callbacks_registered)
		return;
	pgjq_wakeup_register_callbacks();	/* to run after these: see there */
	RegisterXactCallback(counters_xact_callback, NULL);
	RegisterSubXactCallback(counters_subxact_callback, NULL);
	callbacks_registered = true;
}

/*
 * pgjq_counters_add records n events of counter c for (queue, priority)
 * in the current subtransaction; they reach the shared counters when the
 * transaction commits.  A no-op without shared memory.
 */
void
pgjq_counters_add(int32 queue_id, int16 priority, int c, int64 n)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	Delta	   *d = NULL;

	if (counters_shared == NULL)
		return;
	for (int i = ndeltas - 1; i >= 0; i--)
		if (deltas[i].subid == subid && deltas[i].key.queue_id == queue_id &&
			deltas[i].key.priority == priority)
		{
			d = &deltas[i];
			break;
		}
	if (d == NULL)
	{
		pgjq_counters_register_callbacks();
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

/* forget_counters removes this database's counters; caller locks */
static void
forget_counters(void)
{
	HASH_SEQ_STATUS status;
	CounterEntry *e;

	hash_seq_init(&status, counter_hash);
	while ((e = hash_seq_search(&status)) != NULL)
		if (e->key.dboid == MyDatabaseId)
			hash_search(counter_hash, &e->key, HASH_REMOVE, NULL);
}

/*
 * pgjq_counters_need_rebuild tells the worker whether this database's
 * counters must be rebuilt: never built since the start, or stale.
 */
bool
pgjq_counters_need_rebuild(void)
{
	CountersDb *db;
	bool		result;

	LWLockAcquire(counter_lock, LW_SHARED);
	db = counters_db(MyDatabaseId, false);
	result = db == NULL || !db->valid || db->stale;
	LWLockRelease(counter_lock);
	return result || pgjq_bounds_need_install();
}

/*
 * install_counts replaces this database's counters with the counts of
 * PGJQ_STMT_COUNT_JOBS, the last SPI result.  Totals restart from what the
 * tables still hold: every job they know of was enqueued once.
 */
static void
install_counts(void)
{
	CounterEntry *e;
	CountersDb *db;

	LWLockAcquire(counter_lock, LW_EXCLUSIVE);
	forget_counters();
	db = counters_db(MyDatabaseId, true);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		CounterKey	key;
		const PgjqStateInfo *info;
		int64		n = DatumGetInt64(pgjq_stmt_value(i, COUNT_JOBS_JOBS, &isnull));

		memset(&key, 0, sizeof(key));
		key.dboid = MyDatabaseId;
		key.queue_id = DatumGetInt32(pgjq_stmt_value(i, COUNT_JOBS_QUEUE_ID, &isnull));
		key.priority = DatumGetInt16(pgjq_stmt_value(i, COUNT_JOBS_PRIORITY, &isnull));
		info = pgjq_state_info(DatumGetChar(pgjq_stmt_value(i, COUNT_JOBS_STATE, &isnull)));
		e = counter_entry(&key, db);
		if (e == NULL || info == NULL)
			continue;
		e->c[PGJQ_C_ENQUEUED] += n;
		e->c[info->counter] += n;
		if (info->table == PGJQ_IN_DEAD_LETTER)
			e->c[PGJQ_C_DEAD_LETTERED] += n;
	}
	if (db != NULL)
	{
		db->valid = true;
		db->stale = false;
		db->since = GetCurrentTimestamp();
	}
	LWLockRelease(counter_lock);

	/*
	 * The scan bounds start afresh wherever there are jobs (bounds.c
	 * ignores the finished states).  Not with a schema older than the
	 * library's, whose count trigger misses some changes the bounds need
	 * (its scans start at the start of their index).
	 */
	if (!pgjq_schema_bounds())
		pgjq_bounds_install(NULL, NULL, NULL, -1);
	else
	{
		char	   *states = palloc(SPI_processed + 1);
		int32	   *queue_ids = palloc(sizeof(int32) * (SPI_processed + 1));
		int16	   *priorities = palloc(sizeof(int16) * (SPI_processed + 1));

		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			states[i] = DatumGetChar(pgjq_stmt_value(i, COUNT_JOBS_STATE, &isnull));
			queue_ids[i] = DatumGetInt32(pgjq_stmt_value(i, COUNT_JOBS_QUEUE_ID, &isnull));
			priorities[i] = DatumGetInt16(pgjq_stmt_value(i, COUNT_JOBS_PRIORITY, &isnull));
		}
		pgjq_bounds_install(states, queue_ids, priorities, (int) SPI_processed);
	}
}

/*
 * install_keys replaces this database's keys (keys.c) with the counts of
 * PGJQ_STMT_COUNT_JOBS_KEYS, the last SPI result, and the policies of
 * jq.key_policy; with a schema without keys, every job is of the default
 * key (from PGJQ_STMT_COUNT_JOBS).
 */
static void
install_keys(bool keys)
{
	pgjq_keys_install_begin();
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		bool		key_null = true;
		Datum		key = keys ? pgjq_stmt_value(i, COUNT_JOBS_KEY, &key_null) : (Datum) 0;
		int32		queue_id = DatumGetInt32(pgjq_stmt_value(i, COUNT_JOBS_QUEUE_ID, &isnull));
		char		state = DatumGetChar(pgjq_stmt_value(i, COUNT_JOBS_STATE, &isnull));
		int64		n = DatumGetInt64(pgjq_stmt_value(i, COUNT_JOBS_JOBS, &isnull));

		pgjq_keys_install_count(queue_id, key_null ? NULL : TextDatumGetCString(key),
								state, n);
	}
	if (keys)
	{
		pgjq_stmt_execute(PGJQ_STMT_KEY_POLICIES, NULL, NULL, SPI_OK_SELECT);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			bool		mif_null;
			bool		mq_null;
			bool		ordered_null;
			Datum		mif = pgjq_stmt_value(i, KEY_POLICIES_MAX_IN_FLIGHT, &mif_null);
			Datum		mq = pgjq_stmt_value(i, KEY_POLICIES_MAX_QUEUED, &mq_null);
			Datum		ordered = pgjq_stmt_value(i, KEY_POLICIES_ORDERED, &ordered_null);
			int32		queue_id = DatumGetInt32(pgjq_stmt_value(i, KEY_POLICIES_QUEUE_ID, &isnull));
			char	   *key = TextDatumGetCString(pgjq_stmt_value(i, KEY_POLICIES_KEY, &isnull));
			int64		version = DatumGetInt64(pgjq_stmt_value(i, KEY_POLICIES_VERSION, &isnull));
			PgjqKeyPolicy policy;
			Datum		d;
			bool		null;

			policy.weight = DatumGetInt32(pgjq_stmt_value(i, KEY_POLICIES_WEIGHT, &isnull));
			policy.max_in_flight = mif_null ? 0 : DatumGetInt32(mif);
			policy.max_queued = mq_null ? 0 : DatumGetInt64(mq);
			policy.ordered_set = !ordered_null;
			policy.ordered = !ordered_null && DatumGetBool(ordered);
			d = pgjq_stmt_value(i, KEY_POLICIES_RATE_REQUESTS, &null);
			policy.rate_requests = null ? 0 : DatumGetInt32(d);
			d = pgjq_stmt_value(i, KEY_POLICIES_RATE_COST, &null);
			policy.rate_cost = null ? 0 : DatumGetFloat8(d);
			policy.rate_period = DatumGetInt64(pgjq_stmt_value(i, KEY_POLICIES_RATE_PERIOD, &null));
			pgjq_keys_install_policy(queue_id, key, version, &policy);
		}
	}
	pgjq_keys_install_end();
}

/*
 * jq.rebuild_counters(timeout_ms) recounts this database's counters from
 * the tables and returns true, or returns false without a rebuild: when
 * pgjq is not preloaded, when the locks were not granted within
 * timeout_ms (writers hold the tables; try again later), or when stale
 * counters cannot be made exact yet because a prepared transaction is
 * pending.  The worker calls it whenever the counters are not valid.
 */
Datum
pgjq_rebuild_counters(PG_FUNCTION_ARGS)
{
	Datum		values[1];
	bool		stale = false;
	bool		isnull;
	bool		rebuilt = false;

	if (counters_shared == NULL)
		PG_RETURN_BOOL(false);

	/*
	 * The count must see every writer the locks waited for, so it needs a
	 * snapshot taken after they were granted: a fresh one per statement.
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("counters can only be rebuilt in a READ COMMITTED transaction")));

	LWLockAcquire(counter_lock, LW_SHARED);
	{
		CountersDb *db = counters_db(MyDatabaseId, false);

		stale = db != NULL && db->stale;
	}
	LWLockRelease(counter_lock);

	SPI_connect();
	if (stale &&
		DatumGetInt64(pgjq_stmt_call(PGJQ_STMT_PREPARED_XACTS, NULL, NULL, &isnull)) > 0)
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	values[0] = Int32GetDatum(PG_ARGISNULL(0) ? 2000 : PG_GETARG_INT32(0));
	if (DatumGetBool(pgjq_stmt_call(PGJQ_STMT_LOCK_FOR_REBUILD, values, NULL, &isnull)))
	{
		bool		keys = pgjq_schema_keys();

		/* not read-only: SPI takes a fresh snapshot, after the locks */
		pgjq_stmt_execute(keys ? PGJQ_STMT_COUNT_JOBS_KEYS : PGJQ_STMT_COUNT_JOBS,
						  NULL, NULL, SPI_OK_SELECT);
		install_counts();
		install_keys(keys);
		rebuilt = true;
	}
	SPI_finish();
	PG_RETURN_BOOL(rebuilt);
}

/*
 * counters_on_standby puts into the function's result what a hot standby
 * can know of the counters: the shared counters are the primary's (a
 * standby's backends commit nothing, and replay runs no trigger), so the
 * jobs in each state are counted from the tables, exact for the calling
 * statement's snapshot, and the totals since the counters began are NULL.
 * Its cost is a scan of jq.job and jq.dead_letter: analysts' reads on a
 * replica, never the primary's hot path.
 */
static void
counters_on_standby(ReturnSetInfo *rsinfo)
{
	SPI_connect();
	if (SPI_execute("SELECT queue_id, priority::pg_catalog.int4,"
					"       pg_catalog.sum(ready)::pg_catalog.int8,"
					"       pg_catalog.sum(scheduled)::pg_catalog.int8,"
					"       pg_catalog.sum(leased)::pg_catalog.int8,"
					"       pg_catalog.sum(dead)::pg_catalog.int8"
					"  FROM (SELECT queue_id, priority,"
					"               pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) " PGJQ_SQL_STATE(READY) ") AS ready,"
					"               pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) " PGJQ_SQL_STATE(SCHEDULED) ") AS scheduled,"
					"               pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) " PGJQ_SQL_STATE(LEASED) ") AS leased,"
					"               0 AS dead"
					"          FROM jq.job GROUP BY queue_id, priority"
					"        UNION ALL"
					"        SELECT queue_id, priority, 0, 0, 0, pg_catalog.count(*)"
					"          FROM jq.dead_letter GROUP BY queue_id, priority) c"
					" GROUP BY queue_id, priority", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgjq: could not count the jobs on the standby");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		values[PGJQ_C_NUM + 4];
		bool		nulls[PGJQ_C_NUM + 4];

		for (int c = 0; c < PGJQ_C_NUM + 4; c++)
			nulls[c] = true;
		for (int c = 0; c < 6; c++)
			values[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1,
									  &nulls[c]);
		values[2 + PGJQ_C_NUM] = BoolGetDatum(false);
		nulls[2 + PGJQ_C_NUM] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
}

/*
 * jq.counters() returns this database's counters, one row per queue and
 * priority.  O(number of queues x priorities): no table is read, except
 * on a hot standby (counters_on_standby).
 */
Datum
pgjq_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	CounterEntry *e;
	CountersDb *db;
	bool		valid = false;
	TimestampTz since = 0;

	pgjq_init_materialized_srf(fcinfo);
	if (RecoveryInProgress())
	{
		counters_on_standby(rsinfo);
		return (Datum) 0;
	}
	if (counters_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(counter_lock, LW_SHARED);
	db = counters_db(MyDatabaseId, false);
	if (db != NULL)
	{
		valid = db->valid && !db->stale;
		since = db->since;
	}
	hash_seq_init(&status, counter_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		Datum		values[PGJQ_C_NUM + 4];
		bool		nulls[PGJQ_C_NUM + 4];

		if (e->key.dboid != MyDatabaseId)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(e->key.queue_id);
		values[1] = Int32GetDatum((int32) e->key.priority);
		for (int c = 0; c < PGJQ_C_NUM; c++)
			values[2 + c] = Int64GetDatum(e->c[c]);
		values[2 + PGJQ_C_NUM] = BoolGetDatum(valid);
		values[3 + PGJQ_C_NUM] = TimestampTzGetDatum(since);
		nulls[3 + PGJQ_C_NUM] = since == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(counter_lock);
	return (Datum) 0;
}

/*
 * pgjq_counters_results_total returns how many results this database's
 * queues have stored since the counters began (jobs succeeded and
 * cancelled), exact at the last commit; -1 without shared memory (pgjq not
 * in shared_preload_libraries).  Compaction reads the rate of acks from
 * it: the statistics system lags by a second or more, and a session that
 * acks inside one long procedure reports nothing until it ends.
 */
int64
pgjq_counters_results_total(void)
{
	HASH_SEQ_STATUS status;
	CounterEntry *e;
	int64		total = 0;

	if (counters_shared == NULL)
		return -1;
	LWLockAcquire(counter_lock, LW_SHARED);
	hash_seq_init(&status, counter_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->key.dboid == MyDatabaseId)
			total += e->c[PGJQ_C_SUCCEEDED] + e->c[PGJQ_C_CANCELLED] + e->c[PGJQ_C_EXPIRED];
	}
	LWLockRelease(counter_lock);
	return total;
}

/* pgjq_counters_since: when this database's counts began (0: not yet) */
TimestampTz
pgjq_counters_since(void)
{
	CountersDb *db;
	TimestampTz since = 0;

	if (counters_shared == NULL)
		return 0;
	LWLockAcquire(counter_lock, LW_SHARED);
	db = counters_db(MyDatabaseId, false);
	if (db != NULL && db->valid)
		since = db->since;
	LWLockRelease(counter_lock);
	return since;
}

/* pgjq_counters_are_valid: are this database's counters built and exact? */
bool
pgjq_counters_are_valid(void)
{
	CountersDb *db;
	bool		valid = false;

	if (counters_shared == NULL)
		return false;
	LWLockAcquire(counter_lock, LW_SHARED);
	db = counters_db(MyDatabaseId, false);
	if (db != NULL)
		valid = db->valid && !db->stale;
	LWLockRelease(counter_lock);
	return valid;
}

/*
 * jq.counters_valid() tells whether this database's counters are built and
 * exact.
 */
Datum
pgjq_counters_valid(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(pgjq_counters_are_valid());
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
	CountersDb *db;

	if (counters_shared == NULL)
		PG_RETURN_VOID();
	pgjq_bounds_forget();
	pgjq_keys_forget_all();
	LWLockAcquire(counter_lock, LW_EXCLUSIVE);
	forget_counters();
	db = counters_db(MyDatabaseId, false);
	if (db != NULL)
		db->valid = false;
	LWLockRelease(counter_lock);
	PG_RETURN_VOID();
}
