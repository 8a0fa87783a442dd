/*-------------------------------------------------------------------------
 *
 * hotpath.c
 *	  The two row changes of a worker's turn, made through the table and
 *	  index access methods without the executor: leasing ready jobs
 *	  (jq_dequeue, jq_ack_dequeue) and finishing leased ones (jq_ack,
 *	  jq_ack_batch, jq_ack_dequeue, and jq_cancel's cancelled jobs).
 *
 * Why not SQL: a one-job turn through prepared SQL statements spent more
 * time starting and ending executor plans (a CTE, a LockRows, a
 * ModifyTable, the INSERT ... SELECT of the finished row) than reading and
 * writing the rows, and the first call of a session paid the parse
 * analysis and planning of those statements (80% of a first dequeue).
 * Here a lease is one index descent, one heap update and its index
 * entries; a finish is a primary key probe, one heap delete, one heap
 * insert and its index entries.
 *
 * What the executor did that this file does itself, so that a lease or a
 * finish behaves exactly as the statements it replaces (FOR UPDATE SKIP
 * LOCKED, then UPDATE; DELETE ... RETURNING into INSERT):
 *
 * - Row locks.  A lease updates the row without waiting (an update that
 *   finds the row locked or being changed reports it); a row another
 *   transaction holds is skipped, as SKIP LOCKED skips it.  One that was
 *   changed since the snapshot is locked in its newest version (without
 *   waiting) and taken only if that version is still a ready job of the
 *   lane: the executor's EvalPlanQual recheck.  In REPEATABLE READ and
 *   SERIALIZABLE such a row raises the serialization failure the executor
 *   raises.  A finish waits for a row lock, as DELETE does, and rechecks
 *   the lease on the newest version.
 * - Index entries: every index of the table gets the new row's entry
 *   (ExecInsertIndexTuples, which evaluates the partial indexes'
 *   predicates and checks uniqueness), and an update hints to each index
 *   whether its key changed, as the executor's UPDATE does.
 * - Triggers: the only triggers of jq.job and jq.job_result are pgjq's
 *   count triggers; this file calls what they run (pgjq_count_change)
 *   instead.  Triggers that someone adds to these tables do not fire for
 *   the hot path (README, "Tables").
 * - Snapshots: each scan takes a new snapshot after a command counter
 *   increment, as each SPI statement did, so it sees what this
 *   transaction did before (the acks of jq_ack_dequeue, a promotion).
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/hotpath.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "counters.h"
#include "hotpath.h"
#include "queue.h"
#include "usage.h"

/* the columns of jq.job, by name (their numbers come from the catalog) */
typedef enum JobColumn
{
	JOB_ID,
	JOB_QUEUE_ID,
	JOB_STATE,
	JOB_PRIORITY,
	JOB_ATTEMPT,
	JOB_LEASE_TOKEN,
	JOB_RUN_AT,
	JOB_ENQUEUED_AT,
	JOB_STARTED_AT,
	JOB_LEASE_EXPIRES_AT,
	JOB_CANCEL_REQUESTED,
	JOB_ERRORS,
	JOB_PAYLOAD,
	JOB_KEY,					/* 0.4.0 on: absent from older schemas */
	JOB_PROGRESS,
	JOB_PROGRESS_AT,
	JOB_DEADLINE,
	JOB_COST,
	JOB_NUM_COLUMNS
} JobColumn;

/* the first of the columns an older schema lacks */
#define JOB_FIRST_OPTIONAL	JOB_KEY

static const char *const job_column_names[JOB_NUM_COLUMNS] = {
	"id", "queue_id", "state", "priority", "attempt", "lease_token", "run_at",
	"enqueued_at", "started_at", "lease_expires_at", "cancel_requested",
	"errors", "payload", "key", "progress", "progress_at", "deadline", "cost"
};

/* the columns of jq.job_result */
typedef enum ResultColumn
{
	RES_JOB_ID,
	RES_QUEUE_ID,
	RES_STATE,
	RES_PRIORITY,
	RES_ATTEMPTS,
	RES_RESULT,
	RES_LAST_ERROR,
	RES_RUN_AT,
	RES_ENQUEUED_AT,
	RES_STARTED_AT,
	RES_FINISHED_AT,
	RES_KEY,					/* 0.4.0 on: absent from older schemas */
	RES_DEADLINE,
	RES_COST,
	RES_USAGE,
	RES_NUM_COLUMNS
} ResultColumn;

#define RES_FIRST_OPTIONAL	RES_KEY

static const char *const result_column_names[RES_NUM_COLUMNS] = {
	"job_id", "queue_id", "state", "priority", "attempts", "result",
	"last_error", "run_at", "enqueued_at", "started_at", "finished_at", "key",
	"deadline", "cost", "usage"
};

/* the columns of jq.usage_pending (0.4.0 on) */
typedef enum UsageColumn
{
	USAGE_QUEUE_ID,
	USAGE_KEY,
	USAGE_JOB_ID,
	USAGE_REPORTED_AT,
	USAGE_ACKED,
	USAGE_COST,
	USAGE_USAGE,
	USAGE_NUM_COLUMNS
} UsageColumn;

static const char *const usage_column_names[USAGE_NUM_COLUMNS] = {
	"queue_id", "key", "job_id", "reported_at", "acked", "cost", "usage"
};

/*
 * A table's column numbers (0-based, for slot arrays), found once per
 * relation and forgotten on a relcache invalidation of it.
 */
typedef struct Layout
{
	Oid			relid;
	int			col[JOB_NUM_COLUMNS];	/* JOB_NUM_COLUMNS >= RES_NUM_COLUMNS;
										 * -1: an optional column the table
										 * lacks */
	int			live;			/* the table's columns, dropped ones left out */
	int			known;			/* of them, the ones named here */
} Layout;

static Layout job_layout;
static Layout result_layout;
static Layout usage_layout;

/* one table the hot path writes: the relation, its indexes, its slots */
typedef struct HotTable
{
	Relation	rel;
	ResultRelInfo *rri;
	const Layout *layout;
	TupleTableSlot *slot;		/* a row read, or a row to insert */
	TupleTableSlot *locked;		/* the newest version of a row, locked */
	TupleTableSlot *next;		/* the new version of an updated row */
} HotTable;

struct PgjqHot
{
	EState	   *estate;
	HotTable	job;
	Relation	ready_idx;		/* jq.job_ready_idx */
	Relation	key_ready_idx;	/* jq.job_key_ready_idx, 0.4.0 on */
	Relation	pkey_idx;		/* jq.job_pkey */
	HotTable	result;			/* opened by the first finish */
	bool		result_open;
	HotTable	usage;			/* jq.usage_pending, by the first usage report */
	bool		usage_open;

	/* a batch of finishes (pgjq_hot_batch_begin): one snapshot, one scan */
	Snapshot	batch_snapshot;
	CommandId	batch_cid;
	IndexScanDesc batch_scan;

	/*
	 * The leases of one dequeue under flow control (pgjq_hot_keys_begin):
	 * one snapshot, and a scan per index and kind (a lane from a head, or
	 * the lanes below) that each key's lease rescans.
	 */
	Snapshot	keys_snapshot;
	CommandId	keys_cid;
	IndexScanDesc keys_scan[2][2];	/* [keyed][below] */
	ScanKeyData *keys_row[2];	/* the row comparison of each lane scan */
};

static void
layout_reset(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == job_layout.relid)
		job_layout.relid = InvalidOid;
	if (relid == InvalidOid || relid == result_layout.relid)
		result_layout.relid = InvalidOid;
	if (relid == InvalidOid || relid == usage_layout.relid)
		usage_layout.relid = InvalidOid;
}

/*
 * layout_of finds the columns of rel by name; those from first_optional
 * on may be missing, in a schema older than 0.4.0.  With complete, every column of
 * the table must be one of them: the hot path forms whole rows of
 * jq.job_result, and a column it does not know would get no value (nor
 * its default).
 */
static const Layout *
layout_of(Relation rel, Layout *layout, const char *const *names, int n,
		  int first_optional, bool complete)
{
	int			known = 0;

	static bool callback_registered = false;
	TupleDesc	desc = RelationGetDescr(rel);
	int			live = 0;

	if (layout->relid == RelationGetRelid(rel))
		return layout;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(layout_reset, (Datum) 0);
		callback_registered = true;
	}
	for (int c = 0; c < n; c++)
		layout->col[c] = -1;
	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (att->attisdropped)
			continue;
		live++;
		for (int c = 0; c < n; c++)
			if (strcmp(NameStr(att->attname), names[c]) == 0)
				layout->col[c] = a;
	}
	for (int c = 0; c < n; c++)
	{
		if (layout->col[c] >= 0)
			known++;
		else if (c < first_optional)
			elog(ERROR, "pgjq: table \"%s\" has no column \"%s\"",
				 RelationGetRelationName(rel), names[c]);
	}
	layout->live = live;
	layout->known = known;
	if (complete && live != known)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table jq.%s has columns that pgjq does not know",
						RelationGetRelationName(rel)),
				 errhint("Drop the columns added to it; pgjq writes its rows itself.")));
	layout->relid = RelationGetRelid(rel);
	return layout;
}

static void
hot_table_open(HotTable *t, Oid relid, EState *estate, Layout *layout,
			   const char *const *names, int ncolumns, int first_optional,
			   bool complete)
{
	t->rel = table_open(relid, NoLock);	/* the caller locked it */
	t->layout = layout_of(t->rel, layout, names, ncolumns, first_optional, complete);
	t->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(t->rri, t->rel, 0, NULL, 0);
	ExecOpenIndices(t->rri, false);
	t->slot = table_slot_create(t->rel, &estate->es_tupleTable);
	t->locked = table_slot_create(t->rel, &estate->es_tupleTable);
	t->next = table_slot_create(t->rel, &estate->es_tupleTable);
}

static void
hot_table_close(HotTable *t)
{
	ExecCloseIndices(t->rri);
	table_close(t->rel, NoLock);
}

/*
 * pgjq_hot_begin opens jq.job, which the caller has locked
 * (pgjq_lock_job_table), and its indexes for a call's leases and
 * finishes; pgjq_hot_end closes them.
 */
PgjqHot *
pgjq_hot_begin(Oid job_relid)
{
	PgjqHot    *hot;
	Bitmapset  *leased_columns = NULL;

	/*
	 * The executor refuses an INSERT, UPDATE or DELETE in a read-only
	 * transaction (and on a hot standby, where every transaction is); the
	 * access methods do not check.
	 */
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot change pgjq jobs in a read-only transaction")));

	hot = palloc0(sizeof(PgjqHot));
	hot->estate = CreateExecutorState();
	hot_table_open(&hot->job, job_relid, hot->estate, &job_layout,
				   job_column_names, JOB_NUM_COLUMNS, JOB_FIRST_OPTIONAL, false);

	/* the columns a lease changes, as attribute numbers */
	for (int c = JOB_STATE; c <= JOB_LEASE_EXPIRES_AT; c++)
		if (c != JOB_PRIORITY && c != JOB_RUN_AT && c != JOB_ENQUEUED_AT)
			leased_columns = bms_add_member(leased_columns,
											hot->job.layout->col[c] + 1);

	for (int i = 0; i < hot->job.rri->ri_NumIndices; i++)
	{
		Relation	idx = hot->job.rri->ri_IndexRelationDescs[i];
		IndexInfo  *info = hot->job.rri->ri_IndexRelationInfo[i];
		bool		unchanged = true;

		if (idx->rd_index->indisprimary)
			hot->pkey_idx = idx;
		else if (strcmp(RelationGetRelationName(idx), "job_ready_idx") == 0)
			hot->ready_idx = idx;
		else if (strcmp(RelationGetRelationName(idx), "job_key_ready_idx") == 0)
			hot->key_ready_idx = idx;

		/*
		 * The hint the executor's UPDATE gives an index whose key columns
		 * the update leaves alone (index_unchanged_by_update): its new
		 * entry duplicates the old one's key, and the index may delete
		 * old duplicates bottom-up instead of splitting a page.  The
		 * lease is the only update here.
		 */
		for (int k = 0; k < info->ii_NumIndexKeyAttrs; k++)
			if (info->ii_IndexAttrNumbers[k] == 0 ||
				bms_is_member(info->ii_IndexAttrNumbers[k], leased_columns))
				unchanged = false;
		info->ii_CheckedUnchanged = true;
		info->ii_IndexUnchanged = unchanged;
	}
	if (hot->pkey_idx == NULL || hot->ready_idx == NULL)
		elog(ERROR, "pgjq: jq.job lacks its primary key or jq.job_ready_idx");
	return hot;
}

void
pgjq_hot_end(PgjqHot *hot)
{
	hot_table_close(&hot->job);
	if (hot->result_open)
		hot_table_close(&hot->result);
	if (hot->usage_open)
		hot_table_close(&hot->usage);
	ExecResetTupleTable(hot->estate->es_tupleTable, false);
	FreeExecutorState(hot->estate);
	pfree(hot);
}

/*
 * new_snapshot makes what this transaction did so far visible and returns
 * a registered snapshot for the next scan (in READ COMMITTED a new one,
 * as each SQL statement gets), with the command id of the changes to come.
 */
static Snapshot
new_snapshot(CommandId *cid)
{
	CommandCounterIncrement();
	*cid = GetCurrentCommandId(true);
	return RegisterSnapshot(GetTransactionSnapshot());
}

/* the error the executor raises in REPEATABLE READ for a row changed since */
static void
serialization_failure(TM_Result result)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not serialize access due to concurrent %s",
					result == TM_Deleted ? "delete" : "update")));
}

#define COL(t, c)		((t)->layout->col[c])
#define VALUE(t, s, c)	((s)->tts_values[COL(t, c)])
#define ISNULL(t, s, c) ((s)->tts_isnull[COL(t, c)])

/* has_key tells whether a row's job key is key (NULL: has none) */
static bool
has_key(HotTable *t, TupleTableSlot *slot, const char *key)
{
	text	   *k;

	if (COL(t, JOB_KEY) < 0 || ISNULL(t, slot, JOB_KEY))
		return key == NULL;
	if (key == NULL)
		return false;
	k = DatumGetTextPP(VALUE(t, slot, JOB_KEY));
	return VARSIZE_ANY_EXHDR(k) == strlen(key) &&
		memcmp(VARDATA_ANY(k), key, VARSIZE_ANY_EXHDR(k)) == 0;
}

/*
 * is_lane_job tells whether a row (all its attributes in the slot) is a
 * ready job of the queue and key (NULL: without a key), in the lane of
 * priority from start on when start is not NULL: the dequeue's WHERE,
 * rechecked on a row's newest version.
 */
static bool
is_lane_job(PgjqHot *hot, TupleTableSlot *slot, int32 queue_id, const char *key,
			int16 priority, const PgjqBoundKey *start)
{
	HotTable   *t = &hot->job;
	TimestampTz run_at;
	int64		id;

	if (DatumGetChar(VALUE(t, slot, JOB_STATE)) != PGJQ_STATE_READY ||
		DatumGetInt32(VALUE(t, slot, JOB_QUEUE_ID)) != queue_id ||
		!has_key(t, slot, key))
		return false;
	if (start == NULL)
		return true;
	run_at = DatumGetTimestampTz(VALUE(t, slot, JOB_RUN_AT));
	id = DatumGetInt64(VALUE(t, slot, JOB_ID));
	return DatumGetInt16(VALUE(t, slot, JOB_PRIORITY)) == priority &&
		(run_at > start->at || (run_at == start->at && id >= start->id));
}

/* job_cost: what the row's job is expected to cost (1 without a cost) */
static double
job_cost(HotTable *t, TupleTableSlot *slot)
{
	if (COL(t, JOB_COST) < 0 || ISNULL(t, slot, JOB_COST))
		return 1;
	return pgjq_cost_double(VALUE(t, slot, JOB_COST));
}

/* past_deadline: the row's job has a deadline, and it has come */
static inline bool
past_deadline(HotTable *t, TupleTableSlot *slot, TimestampTz now)
{
	return COL(t, JOB_DEADLINE) >= 0 && !ISNULL(t, slot, JOB_DEADLINE) &&
		DatumGetTimestampTz(VALUE(t, slot, JOB_DEADLINE)) <= now;
}

/*
 * lease_row leases the job of a row a lane scan saw, into hot->job.next;
 * false when another transaction holds it or it is no longer a ready job
 * of the lane.
 *
 * The lease token's high 32 bits count the deliveries of the job, so a
 * job's tokens only grow; the low 31 bits are random, so a token is never
 * valid for another job by accident.
 */
static bool
lease_row(PgjqHot *hot, TupleTableSlot *seen, Snapshot snapshot, CommandId cid,
		  int32 queue_id, const char *key, int16 priority,
		  const PgjqBoundKey *start, TimestampTz now, int32 lease_seconds)
{
	HotTable   *t = &hot->job;
	TupleTableSlot *row = seen;
	TupleTableSlot *next = t->next;
	bool		locked = false;
	int			natts = RelationGetDescr(t->rel)->natts;

	for (;;)
	{
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		PgjqUpdateIndexes update_indexes;
		TM_Result	result;
		int64		token;
		TimestampTz start_at;

		/*
		 * The lease starts now, not at the caller's clock: the version of
		 * the row taken here became ready by a commit before this scan's
		 * snapshot (or before the lock below), and the reclaim that freed
		 * it read its clock before that commit, past the last lease's
		 * expiry.  The caller's clock, read before the snapshot, could be
		 * earlier still (a process descheduled between the two), and date
		 * this lease from before the last one ended.  Never before the
		 * caller's clock, though, should the system clock step back: the
		 * call judged its limits and deadlines by that one.
		 */
		start_at = Max(now, GetCurrentTimestamp());
		slot_getallattrs(row);
		if (past_deadline(t, row, start_at))
			return false;		/* never started: jq.expire_deadlines ends it */
		ExecClearTuple(next);
		memcpy(next->tts_values, row->tts_values, sizeof(Datum) * natts);
		memcpy(next->tts_isnull, row->tts_isnull, sizeof(bool) * natts);
		token = ISNULL(t, row, JOB_LEASE_TOKEN) ? 0 :
			DatumGetInt64(VALUE(t, row, JOB_LEASE_TOKEN));
		VALUE(t, next, JOB_STATE) = CharGetDatum(PGJQ_STATE_LEASED);
		VALUE(t, next, JOB_ATTEMPT) =
			Int32GetDatum(DatumGetInt32(VALUE(t, row, JOB_ATTEMPT)) + 1);
		VALUE(t, next, JOB_LEASE_TOKEN) =
			Int64GetDatum((((token >> 32) + 1) << 32) | pgjq_random31());
		ISNULL(t, next, JOB_LEASE_TOKEN) = false;
		VALUE(t, next, JOB_STARTED_AT) = TimestampTzGetDatum(start_at);
		ISNULL(t, next, JOB_STARTED_AT) = false;
		VALUE(t, next, JOB_LEASE_EXPIRES_AT) =
			TimestampTzGetDatum(start_at + (int64) lease_seconds * USECS_PER_SEC);
		ISNULL(t, next, JOB_LEASE_EXPIRES_AT) = false;
		/* a new attempt: the last one's progress is not its own */
		if (COL(t, JOB_PROGRESS) >= 0)
			ISNULL(t, next, JOB_PROGRESS) = ISNULL(t, next, JOB_PROGRESS_AT) = true;
		ExecStoreVirtualTuple(next);

		/* without waiting, unless this transaction holds the row's lock */
		result = table_tuple_update(t->rel, &row->tts_tid, next, cid, snapshot,
									InvalidSnapshot, locked, &tmfd, &lockmode,
									&update_indexes);
		if (result == TM_Ok)
		{
			bool		should_free_old;
			bool		should_free_new;
			HeapTuple	oldtup = ExecFetchSlotHeapTuple(row, false, &should_free_old);
			HeapTuple	newtup;

			if (pgjq_update_needs_indexes(update_indexes))
				(void) pgjq_insert_index_tuples(t->rri, next, hot->estate, true,
												update_indexes);
			newtup = ExecFetchSlotHeapTuple(next, false, &should_free_new);
			pgjq_count_change(t->rel, PGJQ_IN_JOB, oldtup, newtup);
			if (should_free_old)
				heap_freetuple(oldtup);
			if (should_free_new)
				heap_freetuple(newtup);
			ResetPerTupleExprContext(hot->estate);
			return true;
		}
		if (locked)
			elog(ERROR, "pgjq: could not lease a job this transaction has locked (status %d)",
				 (int) result);
		switch (result)
		{
			case TM_SelfModified:
				return false;	/* changed by this very command: not a candidate */
			case TM_Updated:
			case TM_Deleted:
				if (IsolationUsesXactSnapshot())
					serialization_failure(result);
				if (result == TM_Deleted)
					return false;
				break;			/* lock its newest version below */
			case TM_BeingModified:

				/*
				 * Another transaction that is still running locks or
				 * changes the row: SKIP LOCKED skips it, and so do we,
				 * without asking for its lock (which would only say so
				 * again: a second visit to the page, and most rows a
				 * dequeue passes among busy workers are such rows).  A lock
				 * this transaction holds, or a lock shared by several
				 * (a MultiXact), is tried below.
				 */
				if (TransactionIdIsNormal(tmfd.xmax) &&
					!TransactionIdIsCurrentTransactionId(tmfd.xmax) &&
					!(row->tts_ops == &TTSOpsBufferHeapTuple &&
					  (((BufferHeapTupleTableSlot *) row)->base.tuple->t_data->t_infomask &
					   HEAP_XMAX_IS_MULTI)))
					return false;
				break;			/* try its lock below */
			default:
				elog(ERROR, "pgjq: unexpected status %d updating a job", (int) result);
		}

		/*
		 * The row was locked or changed: lock its newest version without
		 * waiting (a transaction holds it: skip it), and take it if that is
		 * still a ready job of the lane.  A lock this transaction already
		 * holds is granted at once.
		 */
		result = table_tuple_lock(t->rel, &row->tts_tid, snapshot, t->locked, cid,
								  LockTupleExclusive, LockWaitSkip,
								  IsolationUsesXactSnapshot() ? 0 :
								  TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		switch (result)
		{
			case TM_Ok:
				break;
			case TM_WouldBlock:
			case TM_SelfModified:
				return false;
			case TM_Updated:
			case TM_Deleted:
				if (IsolationUsesXactSnapshot())
					serialization_failure(result);
				return false;
			default:
				elog(ERROR, "pgjq: unexpected status %d locking a job", (int) result);
		}
		row = t->locked;
		slot_getallattrs(row);
		if (!is_lane_job(hot, row, queue_id, key, priority, start))
			return false;		/* the lock stays, as after a failed recheck */
		locked = true;
	}
}

/* put_lease hands the lease just made (hot->job.next) to sink */
static void
put_lease(PgjqHot *hot, PgjqLeaseSink sink, void *sink_arg)
{
	HotTable   *t = &hot->job;
	TupleTableSlot *next = t->next;
	Datum		values[PGJQ_LEASE_COLUMNS];
	bool		nulls[PGJQ_LEASE_COLUMNS] = {false};

	values[0] = VALUE(t, next, JOB_ID);
	values[1] = VALUE(t, next, JOB_LEASE_TOKEN);
	values[2] = VALUE(t, next, JOB_ATTEMPT);
	values[3] = Int32GetDatum((int32) DatumGetInt16(VALUE(t, next, JOB_PRIORITY)));
	values[4] = VALUE(t, next, JOB_PAYLOAD);
	values[5] = VALUE(t, next, JOB_ENQUEUED_AT);
	values[6] = VALUE(t, next, JOB_LEASE_EXPIRES_AT);
	nulls[7] = COL(t, JOB_KEY) < 0 || ISNULL(t, next, JOB_KEY);
	values[7] = nulls[7] ? (Datum) 0 : VALUE(t, next, JOB_KEY);
	sink(sink_arg, values, nulls);
}

/*
 * pgjq_hot_lease leases up to max_jobs ready jobs of the queue, in the
 * order of jq.job_ready_idx, and hands each to sink as jq_dequeue's
 * columns.  With start, it scans one lane (the priority) from its bound
 * start on, and sets *head to the first ready job its snapshot saw there,
 * locked or not (bounds.c), leaving it when there is none; without, it
 * scans every lane of the queue from the first.  Returns how many it
 * leased.
 */
int32
pgjq_hot_lease(PgjqHot *hot, int32 queue_id, int16 priority,
			   const PgjqBoundKey *start, int32 max_jobs, TimestampTz now,
			   int32 lease_seconds, PgjqLeaseSink sink, void *sink_arg,
			   PgjqBoundKey *head)
{
	HotTable   *t = &hot->job;
	ScanKeyData keys[3];
	ScanKeyData row_keys[2];
	int			nkeys = 1;
	Snapshot	snapshot;
	CommandId	cid;
	IndexScanDesc scan;
	int32		taken = 0;
	bool		first = true;

	/* jq.job_ready_idx is on (queue_id, priority DESC, run_at, id) */
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(queue_id));
	if (start != NULL)
	{
		ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT2EQ,
					Int16GetDatum(priority));

		/*
		 * (run_at, id) >= (start->at, start->id) as a row comparison, so
		 * that the descent lands on the bound itself even among the many
		 * jobs of a batch that share one run_at.  Row members compare with
		 * the btree support function, as the executor builds them.
		 */
		ScanKeyEntryInitialize(&row_keys[0], SK_ROW_MEMBER, 3,
							   BTGreaterEqualStrategyNumber, TIMESTAMPTZOID,
							   InvalidOid, F_TIMESTAMP_CMP,
							   TimestampTzGetDatum(start->at));
		ScanKeyEntryInitialize(&row_keys[1], SK_ROW_MEMBER | SK_ROW_END, 4,
							   BTGreaterEqualStrategyNumber, INT8OID,
							   InvalidOid, F_BTINT8CMP,
							   Int64GetDatum(start->id));
		ScanKeyEntryInitialize(&keys[2], SK_ROW_HEADER, 3,
							   BTGreaterEqualStrategyNumber, InvalidOid,
							   InvalidOid, InvalidOid, PointerGetDatum(row_keys));
		nkeys = 3;
	}

	snapshot = new_snapshot(&cid);
	scan = index_beginscan(t->rel, hot->ready_idx, snapshot, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	while (taken < max_jobs &&
		   index_getnext_slot(scan, ForwardScanDirection, t->slot))
	{
		CHECK_FOR_INTERRUPTS();
		slot_getallattrs(t->slot);
		if (first && head != NULL)
		{
			head->at = DatumGetTimestampTz(VALUE(t, t->slot, JOB_RUN_AT));
			head->id = DatumGetInt64(VALUE(t, t->slot, JOB_ID));
		}
		first = false;

		/* an entry's visible row is a ready job (state is in the predicate) */
		if (!is_lane_job(hot, t->slot, queue_id, NULL, priority, start))
			continue;
		if (lease_row(hot, t->slot, snapshot, cid, queue_id, NULL, priority, start,
					  now, lease_seconds))
		{
			put_lease(hot, sink, sink_arg);
			taken++;
		}
	}
	index_endscan(scan);
	ExecClearTuple(t->slot);
	ExecClearTuple(t->locked);
	ExecClearTuple(t->next);
	UnregisterSnapshot(snapshot);
	return taken;
}

/* row_pos is the position of a row of jq.job in the order of hand-out */
static void
row_pos(HotTable *t, TupleTableSlot *slot, PgjqKeyPos *pos)
{
	pos->priority = DatumGetInt16(VALUE(t, slot, JOB_PRIORITY));
	pos->at = DatumGetTimestampTz(VALUE(t, slot, JOB_RUN_AT));
	pos->id = DatumGetInt64(VALUE(t, slot, JOB_ID));
}

/*
 * pgjq_hot_keys_begin and pgjq_hot_keys_end bracket the leases of one
 * dequeue under flow control (pgjq_hot_lease_key): they share one snapshot,
 * as the leases of one lane scan do, and the index scans are begun once and
 * rescanned for each key.  A snapshot per lease and a scan begun and ended
 * per lease were most of the cost of a 100-job dequeue over many keys.
 */
void
pgjq_hot_keys_begin(PgjqHot *hot)
{
	Assert(hot->keys_snapshot == NULL);
	hot->keys_snapshot = new_snapshot(&hot->keys_cid);
}

void
pgjq_hot_keys_end(PgjqHot *hot)
{
	for (int k = 0; k < 2; k++)
		for (int b = 0; b < 2; b++)
			if (hot->keys_scan[k][b] != NULL)
			{
				index_endscan(hot->keys_scan[k][b]);
				hot->keys_scan[k][b] = NULL;
			}
	UnregisterSnapshot(hot->keys_snapshot);
	hot->keys_snapshot = NULL;
}

/*
 * pgjq_key_hash is the key's hash as jq.job_key_ready_idx indexes it:
 * hashtextextended(key, 0) in the database's collation (deterministic, so
 * a hash of the bytes).  Keys that share a hash share the index's range;
 * the scans check each row's key.
 */
static Datum
pgjq_key_hash(const char *key)
{
	return DirectFunctionCall2Coll(hashtextextended, DEFAULT_COLLATION_OID,
								   CStringGetTextDatum(key), Int64GetDatum(0));
}

/*
 * key_scan (re)starts a scan of the ready jobs of one key (NULL: the jobs
 * without a key, in jq.job_ready_idx; otherwise jq.job_key_ready_idx,
 * whose columns are the same after the key's hash): with from, the lane
 * of from's priority from from's (run_at, id) on; without, the lanes below
 * priority below.
 */
static IndexScanDesc
key_scan(PgjqHot *hot, int32 queue_id, const char *key,
		 const PgjqKeyPos *from, int16 below)
{
	HotTable   *t = &hot->job;
	Relation	index = key != NULL ? hot->key_ready_idx : hot->ready_idx;
	AttrNumber	a = key != NULL ? 2 : 1;	/* the key's column, or before */
	ScanKeyData keys[4];
	ScanKeyData *row_keys;
	int			nkeys = 0;
	IndexScanDesc *scan = &hot->keys_scan[key != NULL][from == NULL];

	if (index == NULL)
		elog(ERROR, "pgjq: jq.job lacks jq.job_key_ready_idx");

	/* the scan keeps pointing at the row comparison's members */
	if (hot->keys_row[key != NULL] == NULL)
		hot->keys_row[key != NULL] = palloc(sizeof(ScanKeyData) * 2);
	row_keys = hot->keys_row[key != NULL];
	ScanKeyInit(&keys[nkeys++], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(queue_id));
	if (key != NULL)
		ScanKeyInit(&keys[nkeys++], 2, BTEqualStrategyNumber, F_INT8EQ,
					pgjq_key_hash(key));
	if (from != NULL)
	{
		ScanKeyInit(&keys[nkeys++], a + 1, BTEqualStrategyNumber, F_INT2EQ,
					Int16GetDatum(from->priority));
		/* (run_at, id) >= from's, as pgjq_hot_lease does with a bound */
		ScanKeyEntryInitialize(&row_keys[0], SK_ROW_MEMBER, a + 2,
							   BTGreaterEqualStrategyNumber, TIMESTAMPTZOID,
							   InvalidOid, F_TIMESTAMP_CMP,
							   TimestampTzGetDatum(from->at));
		ScanKeyEntryInitialize(&row_keys[1], SK_ROW_MEMBER | SK_ROW_END, a + 3,
							   BTGreaterEqualStrategyNumber, INT8OID,
							   InvalidOid, F_BTINT8CMP,
							   Int64GetDatum(from->id));
		ScanKeyEntryInitialize(&keys[nkeys++], SK_ROW_HEADER, a + 2,
							   BTGreaterEqualStrategyNumber, InvalidOid,
							   InvalidOid, InvalidOid, PointerGetDatum(row_keys));
	}
	else
		ScanKeyInit(&keys[nkeys++], a + 1, BTLessStrategyNumber, F_INT2LT,
					Int16GetDatum(below));
	if (*scan == NULL)
		*scan = index_beginscan(t->rel, index, hot->keys_snapshot, nkeys, 0);
	index_rescan(*scan, keys, nkeys, NULL, 0);
	return *scan;
}

/*
 * pgjq_hot_lease_key leases up to max_jobs ready jobs of one key of the
 * queue (key NULL: the jobs without a key) for the scheduler (keys.c): the
 * first ones from the key's head from on, in the lane of from's priority,
 * which is the place the scheduler gave the key.  Sets *seen to the first
 * ready job the scan saw, locked or not, which is the key's head now; when
 * the lane holds none, looks at the lanes below without leasing (the key's
 * place in the schedule is lower: the caller picks again), and sets *seen
 * to the first job there or leaves it.  Returns how many it leased, the
 * first at *leased, each handed to sink.  With in_order (an ordered key),
 * the first job of the key the scan meets is leased or none is: a job it
 * cannot lease now (another transaction holds it) is not skipped.  Between
 * pgjq_hot_keys_begin and _end.
 *
 * When every job the scan saw up to the last it leased is one it leased,
 * *seen is the position right after that one: the next scan of the key
 * starts past them (in this dequeue's snapshot the leased rows' old
 * versions are still there).
 */
int32
pgjq_hot_lease_key(PgjqHot *hot, int32 queue_id, const char *key,
				   const PgjqKeyPos *from, int32 max_jobs, PgjqKeyTicket *ticket,
				   TimestampTz now, int32 lease_seconds, PgjqLeaseSink sink,
				   void *sink_arg, PgjqKeyPos *seen, PgjqKeyPos *leased)
{
	bool		in_order = ticket->ordered;
	HotTable   *t = &hot->job;
	PgjqBoundKey start = {from->at, from->id};
	IndexScanDesc scan;
	int			visited = 0;
	int32		taken = 0;
	bool		unbroken = true;	/* every row seen so far was leased */
	PgjqKeyPos	last = {0};

	Assert(hot->keys_snapshot != NULL);
	scan = key_scan(hot, queue_id, key, from, 0);
	while (taken < max_jobs && index_getnext_slot(scan, ForwardScanDirection, t->slot))
	{
		double		cost = 0;

		CHECK_FOR_INTERRUPTS();
		slot_getallattrs(t->slot);
		if (visited++ == 0)
			row_pos(t, t->slot, seen);
		if (!is_lane_job(hot, t->slot, queue_id, key, from->priority, &start))
		{
			unbroken = false;	/* another key's job with the same hash */
			continue;
		}
		/* a rate limit: the job's cost first, or no more of the key now */
		if (ticket->rated)
		{
			cost = job_cost(t, t->slot);
			if (!pgjq_keys_take(ticket, cost))
			{
				unbroken = false;
				break;
			}
		}
		if (lease_row(hot, t->slot, hot->keys_snapshot, hot->keys_cid, queue_id, key,
					  from->priority, &start, now, lease_seconds))
		{
			row_pos(t, t->next, &last);
			if (taken++ == 0)
				*leased = last;
			put_lease(hot, sink, sink_arg);
		}
		else
		{
			if (ticket->rated)
				pgjq_keys_untake(ticket, cost);
			unbroken = false;
			if (in_order)
				break;
		}
	}
	if (taken > 0 && unbroken)
	{
		*seen = last;
		if (seen->id < PG_INT64_MAX)
			seen->id++;			/* past the jobs it leased */
	}

	if (visited == 0 && from->priority > PGJQ_LIMIT_PRIORITY_MIN)
	{
		/* none in the lane: where are the key's jobs now? */
		scan = key_scan(hot, queue_id, key, NULL, from->priority);
		if (index_getnext_slot(scan, ForwardScanDirection, t->slot))
		{
			slot_getallattrs(t->slot);
			row_pos(t, t->slot, seen);
		}
	}
	ExecClearTuple(t->slot);
	ExecClearTuple(t->locked);
	ExecClearTuple(t->next);
	return taken;
}

/*
 * last_error returns errors -> -1 ->> 'error': the message of a job's
 * last failure, or NULL.
 */
static Datum
last_error(Datum errors, bool *isnull)
{
	Jsonb	   *jb = DatumGetJsonbP(errors);
	JsonbValue *last;
	JsonbValue	key;
	JsonbValue *msg;
	uint32		n;

	*isnull = true;
	if (!JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
		return (Datum) 0;
	n = JB_ROOT_COUNT(jb);
	if (n == 0)
		return (Datum) 0;
	last = getIthJsonbValueFromContainer(&jb->root, n - 1);
	if (last == NULL || last->type != jbvBinary ||
		!JsonContainerIsObject(last->val.binary.data))
		return (Datum) 0;
	key.type = jbvString;
	key.val.string.val = "error";
	key.val.string.len = strlen("error");
	msg = findJsonbValueFromContainer(last->val.binary.data, JB_FOBJECT, &key);
	if (msg == NULL || msg->type == jbvNull)
		return (Datum) 0;
	*isnull = false;
	if (msg->type == jbvString)
		return PointerGetDatum(cstring_to_text_with_len(msg->val.string.val,
														msg->val.string.len));
	return PointerGetDatum(cstring_to_text(JsonbToCString(NULL,
														  &JsonbValueToJsonb(msg)->root,
														  0)));
}

/*
 * lease_is_current is the fence: the row is a leased job whose lease
 * token is token.  Every completion of a lease checks it here (the
 * statements that fail or extend a lease check the same predicate in
 * SQL: SQL_LEASE_IS_CURRENT in statements.c).
 */
static bool
lease_is_current(HotTable *t, TupleTableSlot *row, int64 token)
{
	return DatumGetChar(VALUE(t, row, JOB_STATE)) == PGJQ_STATE_LEASED &&
		!ISNULL(t, row, JOB_LEASE_TOKEN) &&
		DatumGetInt64(VALUE(t, row, JOB_LEASE_TOKEN)) == token;
}

/*
 * write_usage writes a usage report of the job (its row in the slot) into
 * jq.usage_pending: acked (else a failed attempt), at cost.
 */
static void
write_usage(PgjqHot *hot, TupleTableSlot *job, bool acked, Datum cost, Datum usage,
			CommandId cid)
{
	HotTable   *j = &hot->job;
	HotTable   *u = &hot->usage;
	TupleTableSlot *slot;

	if (!hot->usage_open)
	{
		/* after jq.job_result's lock: see the lock order in queue.c */
		hot_table_open(&hot->usage, pgjq_usage_table(), hot->estate, &usage_layout,
					   usage_column_names, USAGE_NUM_COLUMNS, USAGE_NUM_COLUMNS, true);
		hot->usage_open = true;
	}
	slot = u->slot;
	ExecClearTuple(slot);
	memset(slot->tts_isnull, false, sizeof(bool) * RelationGetDescr(u->rel)->natts);
	VALUE(u, slot, USAGE_QUEUE_ID) = VALUE(j, job, JOB_QUEUE_ID);
	VALUE(u, slot, USAGE_KEY) = VALUE(j, job, JOB_KEY);
	ISNULL(u, slot, USAGE_KEY) = ISNULL(j, job, JOB_KEY);
	VALUE(u, slot, USAGE_JOB_ID) = VALUE(j, job, JOB_ID);
	VALUE(u, slot, USAGE_REPORTED_AT) = TimestampTzGetDatum(GetCurrentTimestamp());
	VALUE(u, slot, USAGE_ACKED) = BoolGetDatum(acked);
	VALUE(u, slot, USAGE_COST) = cost;
	VALUE(u, slot, USAGE_USAGE) = usage;
	ExecStoreVirtualTuple(slot);
	table_tuple_insert(u->rel, slot, cid, 0, NULL);
	ResetPerTupleExprContext(hot->estate);
}

/*
 * write_finished writes the row of a finished job (the job's row in the
 * slot) into jq.job_result; a job that succeeded with a usage report also
 * has the report written to jq.usage_pending.  The result row's cost is
 * what the job cost: the report's cost field, or else the job's estimate
 * (NULL, as in jq.job, when it has none: 1).
 */
static void
write_finished(PgjqHot *hot, TupleTableSlot *job, char state, Datum result,
			   bool result_isnull, Datum usage, bool usage_isnull, CommandId cid)
{
	HotTable   *j = &hot->job;
	HotTable   *r = &hot->result;
	TupleTableSlot *slot = r->slot;
	bool		should_free;
	HeapTuple	tup;

	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * RelationGetDescr(r->rel)->natts);
#define COPY(rc, jc) \
	(VALUE(r, slot, rc) = VALUE(j, job, jc), ISNULL(r, slot, rc) = ISNULL(j, job, jc))
	COPY(RES_JOB_ID, JOB_ID);
	COPY(RES_QUEUE_ID, JOB_QUEUE_ID);
	COPY(RES_PRIORITY, JOB_PRIORITY);
	COPY(RES_ATTEMPTS, JOB_ATTEMPT);
	COPY(RES_RUN_AT, JOB_RUN_AT);
	COPY(RES_ENQUEUED_AT, JOB_ENQUEUED_AT);
	COPY(RES_STARTED_AT, JOB_STARTED_AT);
	if (COL(r, RES_KEY) >= 0 && COL(j, JOB_KEY) >= 0)
		COPY(RES_KEY, JOB_KEY);
	if (COL(r, RES_DEADLINE) >= 0 && COL(j, JOB_DEADLINE) >= 0)
		COPY(RES_DEADLINE, JOB_DEADLINE);
#undef COPY
	VALUE(r, slot, RES_STATE) = CharGetDatum(state);
	ISNULL(r, slot, RES_STATE) = false;
	VALUE(r, slot, RES_RESULT) = result;
	ISNULL(r, slot, RES_RESULT) = result_isnull;
	if (!ISNULL(j, job, JOB_ERRORS))
		VALUE(r, slot, RES_LAST_ERROR) =
			last_error(VALUE(j, job, JOB_ERRORS), &ISNULL(r, slot, RES_LAST_ERROR));
	if (state == PGJQ_STATE_EXPIRED)
	{
		/* the reason, and the last attempt's error if it was retried */
		char	   *reason = psprintf("not started by its deadline %s",
									  timestamptz_to_str(DatumGetTimestampTz(VALUE(j, job, JOB_DEADLINE))));

		if (!ISNULL(r, slot, RES_LAST_ERROR))
			reason = psprintf("%s; last error: %s", reason,
							  TextDatumGetCString(VALUE(r, slot, RES_LAST_ERROR)));
		VALUE(r, slot, RES_LAST_ERROR) = CStringGetTextDatum(reason);
		ISNULL(r, slot, RES_LAST_ERROR) = false;
	}
	VALUE(r, slot, RES_FINISHED_AT) = TimestampTzGetDatum(GetCurrentTimestamp());
	ISNULL(r, slot, RES_FINISHED_AT) = false;
	if (COL(r, RES_COST) >= 0 && COL(j, JOB_COST) >= 0)
	{
		Numeric		reported = usage_isnull ? NULL :
			pgjq_usage_cost(DatumGetJsonbP(usage));

		/* NULL: 1, as in jq.job */
		VALUE(r, slot, RES_COST) = reported != NULL ? NumericGetDatum(reported) :
			VALUE(j, job, JOB_COST);
		ISNULL(r, slot, RES_COST) = reported == NULL && ISNULL(j, job, JOB_COST);
		/* the rate limits took the estimate: the report settles the difference */
		if (reported != NULL)
			pgjq_keys_settle(DatumGetInt32(VALUE(j, job, JOB_QUEUE_ID)),
							 ISNULL(j, job, JOB_KEY) ? NULL :
							 TextDatumGetCString(VALUE(j, job, JOB_KEY)),
							 job_cost(j, job) -
							 pgjq_cost_double(NumericGetDatum(reported)));
		VALUE(r, slot, RES_USAGE) = usage;
		ISNULL(r, slot, RES_USAGE) = usage_isnull;
	}
	ExecStoreVirtualTuple(slot);

	table_tuple_insert(r->rel, slot, cid, 0, NULL);
	(void) pgjq_insert_new_index_tuples(r->rri, slot, hot->estate);
	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
	pgjq_count_change(r->rel, PGJQ_IN_RESULT, NULL, tup);
	if (should_free)
		heap_freetuple(tup);
	if (!usage_isnull && COL(r, RES_COST) >= 0)
		write_usage(hot, job, true,
					ISNULL(r, slot, RES_COST) ? NumericGetDatum(int64_to_numeric(1)) :
					VALUE(r, slot, RES_COST), usage, cid);
	ResetPerTupleExprContext(hot->estate);
}

/*
 * pgjq_hot_finish finishes job job_id: it leaves jq.job and its row in
 * jq.job_result is written.  With lease_token, only while that lease is
 * current; the job succeeds with result, or ends cancelled (its result
 * dropped) when its cancel was requested while it was leased.  Without,
 * the caller has locked the job and decided that it ends, and end_state
 * says how: cancelled (jq_cancel) or expired (jq.expire_deadlines).
 * usage, the worker's usage report, is kept when the job succeeds.
 * Returns what it did.
 */
PgjqFinished
pgjq_hot_finish(PgjqHot *hot, int64 job_id, const int64 *lease_token,
				char end_state, Datum result, bool result_isnull,
				Datum usage, bool usage_isnull)
{
	HotTable   *t = &hot->job;
	TupleTableSlot *row = t->slot;
	ScanKeyData key;
	Snapshot	snapshot;
	CommandId	cid;
	IndexScanDesc scan;
	bool		found;
	bool		should_free;
	HeapTuple	oldtup;
	char		state;

	if (!hot->result_open)
	{
		/* after jq.job's lock: see the lock order in queue.c */
		hot_table_open(&hot->result, pgjq_result_table(), hot->estate,
					   &result_layout, result_column_names, RES_NUM_COLUMNS,
					   RES_FIRST_OPTIONAL, true);
		hot->result_open = true;
	}

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(job_id));
	if (hot->batch_snapshot != NULL)
	{
		snapshot = hot->batch_snapshot;
		cid = hot->batch_cid;
		scan = hot->batch_scan;
	}
	else
	{
		snapshot = new_snapshot(&cid);
		scan = index_beginscan(t->rel, hot->pkey_idx, snapshot, 1, 0);
	}
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, row);
	if (hot->batch_snapshot == NULL)
		index_endscan(scan);

	while (found)
	{
		TM_FailureData tmfd;
		TM_Result	res;

		slot_getallattrs(row);
		if (lease_token != NULL && !lease_is_current(t, row, *lease_token))
		{
			found = false;
			break;
		}
		res = table_tuple_delete(t->rel, &row->tts_tid, cid, snapshot,
								 InvalidSnapshot, true, &tmfd, false);
		if (res == TM_Ok)
			break;
		if (res == TM_SelfModified)
		{
			found = false;		/* this command changed it already */
			break;
		}
		if (res != TM_Updated && res != TM_Deleted)
			elog(ERROR, "pgjq: unexpected status %d finishing a job", (int) res);
		if (IsolationUsesXactSnapshot())
			serialization_failure(res);
		if (res == TM_Deleted)
		{
			found = false;
			break;
		}

		/* changed meanwhile: lock its newest version, and check it again */
		res = table_tuple_lock(t->rel, &row->tts_tid, snapshot, t->locked, cid,
							   LockTupleExclusive, LockWaitBlock,
							   TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (res != TM_Ok)
		{
			if (res != TM_Deleted && res != TM_SelfModified)
				elog(ERROR, "pgjq: unexpected status %d locking a job", (int) res);
			found = false;
			break;
		}
		row = t->locked;
	}
	if (hot->batch_snapshot == NULL)
		UnregisterSnapshot(snapshot);
	if (!found)
	{
		ExecClearTuple(t->slot);
		ExecClearTuple(t->locked);
		return PGJQ_FINISHED_NONE;
	}

	oldtup = ExecFetchSlotHeapTuple(row, false, &should_free);
	pgjq_count_change(t->rel, PGJQ_IN_JOB, oldtup, NULL);
	if (should_free)
		heap_freetuple(oldtup);

	if (lease_token != NULL)
		state = DatumGetBool(VALUE(t, row, JOB_CANCEL_REQUESTED)) ?
			PGJQ_STATE_CANCELLED : PGJQ_STATE_SUCCEEDED;
	else
		state = end_state;
	write_finished(hot, row, state, result,
				   state != PGJQ_STATE_SUCCEEDED || result_isnull,
				   usage, state != PGJQ_STATE_SUCCEEDED || usage_isnull, cid);
	ExecClearTuple(t->slot);
	ExecClearTuple(t->locked);
	return state == PGJQ_STATE_SUCCEEDED ? PGJQ_FINISHED_SUCCEEDED :
		state == PGJQ_STATE_CANCELLED ? PGJQ_FINISHED_CANCELLED : PGJQ_FINISHED_EXPIRED;
}

/*
 * pgjq_hot_batch_begin and pgjq_hot_batch_end bracket the finishes of one
 * call's batch (jq_ack_batch, jq_ack_dequeue): they share one snapshot and
 * one primary key scan, as the one statement that acked a batch did.  The
 * caller has checked that no job appears twice.
 */
void
pgjq_hot_batch_begin(PgjqHot *hot)
{
	Assert(hot->batch_snapshot == NULL);
	hot->batch_snapshot = new_snapshot(&hot->batch_cid);
	hot->batch_scan = index_beginscan(hot->job.rel, hot->pkey_idx,
									  hot->batch_snapshot, 1, 0);
}

void
pgjq_hot_batch_end(PgjqHot *hot)
{
	index_endscan(hot->batch_scan);
	UnregisterSnapshot(hot->batch_snapshot);
	hot->batch_scan = NULL;
	hot->batch_snapshot = NULL;
}

/*
 * pgjq_hot_can_insert tells whether pgjq_hot_insert may add rows to jq.job:
 * only while it is pgjq's own table, with pgjq's columns and nothing that
 * the executor would have run for an INSERT (a trigger of another's, a
 * CHECK constraint, row security).  Otherwise the enqueue functions insert
 * with an INSERT statement, and what was added to the table applies.
 */
bool
pgjq_hot_can_insert(PgjqHot *hot)
{
	Relation	rel = hot->job.rel;
	TupleConstr *constr = RelationGetDescr(rel)->constr;

	if (hot->job.layout->live != hot->job.layout->known || rel->rd_rel->relrowsecurity ||
		(constr != NULL && constr->num_check > 0))
		return false;
	if (rel->trigdesc != NULL)
	{
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
		{
			Trigger    *trig = &rel->trigdesc->triggers[i];

			if (TRIGGER_FOR_INSERT(trig->tgtype) &&
				strcmp(trig->tgname, "job_count_insert") != 0)
				return false;
		}
	}
	return true;
}

/*
 * pgjq_hot_insert adds n jobs of one queue, lane and run_at to jq.job, one
 * per payload, as the INSERT of jq_enqueue_batch did: their rows with one
 * heap_multi_insert (one WAL record per page rather than per row), then
 * each row's index entries and its count (the count trigger's body).  With
 * a valid seq each id is drawn from it, in payload order; otherwise ids[]
 * holds them (claimed by idempotency keys).  keys, when not NULL, holds
 * each job's key (NULL where key_nulls says), deadlines its deadline and
 * costs its cost.
 * The caller has checked pgjq_hot_can_insert, every payload, key and
 * deadline.
 */
void
pgjq_hot_insert(PgjqHot *hot, int32 queue_id, char state, int16 priority,
				TimestampTz run_at, TimestampTz enqueued_at,
				const Datum *payloads, const Datum *keys, const bool *key_nulls,
				const Datum *deadlines, const bool *deadline_nulls,
				const Datum *costs, const bool *cost_nulls,
				int n, Oid seq, int64 *ids)
{
	HotTable   *t = &hot->job;
	int			natts = RelationGetDescr(t->rel)->natts;
	TupleTableSlot **slots = palloc(sizeof(TupleTableSlot *) * n);
	CommandId	cid = GetCurrentCommandId(true);

	for (int i = 0; i < n; i++)
	{
		TupleTableSlot *slot = table_slot_create(t->rel, NULL);

		ExecClearTuple(slot);
		memset(slot->tts_isnull, true, sizeof(bool) * natts);
		if (OidIsValid(seq))
			ids[i] = nextval_internal(seq, false);
#define SET(c, v) (VALUE(t, slot, c) = (v), ISNULL(t, slot, c) = false)
		SET(JOB_ID, Int64GetDatum(ids[i]));
		SET(JOB_QUEUE_ID, Int32GetDatum(queue_id));
		SET(JOB_STATE, CharGetDatum(state));
		SET(JOB_PRIORITY, Int16GetDatum(priority));
		SET(JOB_ATTEMPT, Int32GetDatum(0));
		SET(JOB_RUN_AT, TimestampTzGetDatum(run_at));
		SET(JOB_ENQUEUED_AT, TimestampTzGetDatum(enqueued_at));
		SET(JOB_CANCEL_REQUESTED, BoolGetDatum(false));
		SET(JOB_PAYLOAD, payloads[i]);
		if (keys != NULL && !key_nulls[i])
		{
			if (COL(t, JOB_KEY) < 0)
				elog(ERROR, "pgjq: jq.job has no column \"key\"");
			SET(JOB_KEY, keys[i]);
		}
		if (deadlines != NULL && !deadline_nulls[i])
		{
			if (COL(t, JOB_DEADLINE) < 0)
				elog(ERROR, "pgjq: jq.job has no column \"deadline\"");
			SET(JOB_DEADLINE, deadlines[i]);
		}
		if (costs != NULL && !cost_nulls[i])
		{
			if (COL(t, JOB_COST) < 0)
				elog(ERROR, "pgjq: jq.job has no column \"cost\"");
			SET(JOB_COST, costs[i]);
		}
#undef SET
		ExecStoreVirtualTuple(slot);
		slots[i] = slot;
	}

	table_multi_insert(t->rel, slots, n, cid, 0, NULL);

	for (int i = 0; i < n; i++)
	{
		bool		should_free;
		HeapTuple	tup;

		(void) pgjq_insert_new_index_tuples(t->rri, slots[i], hot->estate);
		tup = ExecFetchSlotHeapTuple(slots[i], false, &should_free);
		pgjq_count_change(t->rel, PGJQ_IN_JOB, NULL, tup);
		if (should_free)
			heap_freetuple(tup);
		ResetPerTupleExprContext(hot->estate);
		ExecDropSingleTupleTableSlot(slots[i]);
	}
	pfree(slots);
}
