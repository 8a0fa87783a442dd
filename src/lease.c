/*-------------------------------------------------------------------------
 *
 * lease.c
 *	  jq_dequeue, jq_ack and jq_ack_batch: workers lease jobs and complete
 *	  them.
 *
 * A lease is the pair (job id, lease token).  jq_dequeue hands out jobs
 * with FOR UPDATE SKIP LOCKED, so concurrent workers never block on or
 * receive the same job, and gives each delivery a fresh token.  Completing
 * a job requires the token of its current lease: a worker whose lease
 * expired and whose job went to another worker gets false, and changes
 * nothing (fencing).
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/lease.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "storage/ipc.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "bounds.h"
#include "hotpath.h"
#include "keys.h"
#include "longpoll.h"
#include "queue.h"
#include "statements.h"
#include "usage.h"
#include "waiters.h"

PG_FUNCTION_INFO_V1(pgjq_dequeue);
PG_FUNCTION_INFO_V1(pgjq_ack);
PG_FUNCTION_INFO_V1(pgjq_ack_batch);
PG_FUNCTION_INFO_V1(pgjq_ack_dequeue);
PG_FUNCTION_INFO_V1(pgjq_lock_lease);
PG_FUNCTION_INFO_V1(pgjq_finish_cancelled);
PG_FUNCTION_INFO_V1(pgjq_finish_expired);

/* put_lease is the sink of pgjq_hot_lease: a row of the function's result */
static void
put_lease(void *arg, Datum *values, bool *nulls)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) arg;

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * dequeue_lanes leases up to max_jobs jobs lane by lane, each lane from
 * its bound (bounds.c), most urgent lane first, and publishes each scanned
 * lane's head as its new bound.  Returns false, having leased nothing,
 * when the bounds cannot be trusted.
 */
static bool
dequeue_lanes(FunctionCallInfo fcinfo, PgjqHot *hot, int32 queue_id,
			  int32 max_jobs, TimestampTz now, int32 lease_seconds)
{
	PgjqLaneScan *scan = palloc(sizeof(PgjqLaneScan));
	int32		taken = 0;

	/* before the scans' snapshots: see bounds.c */
	if (!pgjq_lanes_begin(queue_id, scan))
		return false;
	for (int l = 0; l < scan->nlanes && taken < max_jobs; l++)
	{
		taken += pgjq_hot_lease(hot, queue_id, scan->lane[l].priority,
								&scan->lane[l].start, max_jobs - taken, now,
								lease_seconds, put_lease, fcinfo->resultinfo,
								&scan->lane[l].head);
		scan->lane[l].scanned = true;
	}
	pgjq_lanes_advance(queue_id, scan);
	return true;
}

/* re-picks one dequeue may make for keys whose heads were behind */
#define MAX_MISSES 1000

/*
 * fair_quantum: how many consecutive jobs of one key a fair dequeue takes
 * per turn, given how many it has left to hand out.  One for a dequeue of
 * a few jobs, so that fair share is exact at the grain of one job; up to
 * FAIR_QUANTUM_MAX for a large one, so that it descends the key index once
 * per few jobs rather than once per job (each descent also checks every
 * entry left on the key's leaf page).  The turn's virtual time counts every
 * job taken, so over a few dequeues the shares hold all the same.
 */
#define FAIR_QUANTUM_MAX 4

static int32
fair_quantum(int32 left)
{
	return Max(1, Min(FAIR_QUANTUM_MAX, left / 16));
}

/*
 * dequeue_keys leases up to max_jobs jobs of a queue under flow control,
 * one at a time, each from the key the scheduler picks (keys.c): the key
 * and the queue have a slot for it reserved, and it is the key's turn.
 *
 * An ordered key hands out its first ready job or nothing: its scan stops
 * at a job it cannot lease rather than skip it.  Its first job may be one
 * that became ready after this dequeue's snapshot was taken (a lease
 * reclaimed, a retry promoted: they free the key too), which the snapshot
 * would not see as ready while it saw the next one; so when a job of the
 * key became ready after the snapshot's mark, the scans go on with a new
 * snapshot.  A transaction snapshot (REPEATABLE READ) cannot be renewed,
 * and may be older than any mark: ordered keys are refused there.
 */
static void
dequeue_keys(FunctionCallInfo fcinfo, PgjqHot *hot, const PgjqQueue *queue,
			 int32 max_jobs, TimestampTz now, int32 lease_seconds)
{
	int32		taken = 0;
	int			misses = 0;
	PgjqKeyTicket ticket;
	uint64		mark;

	/* before the snapshot: see pgjq_keys_snapshot_mark */
	mark = pgjq_keys_snapshot_mark(queue);
	pgjq_hot_keys_begin(hot);
	while (taken < max_jobs && misses < MAX_MISSES &&
		   pgjq_keys_pick(queue, &ticket, fair_quantum(max_jobs - taken)))
	{
		PgjqKeyPos	seen = pgjq_key_pos_none;
		PgjqKeyPos	leased = pgjq_key_pos_none;
		int32		n;

		if (ticket.ordered && IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("jobs of ordered keys cannot be dequeued in a REPEATABLE READ or SERIALIZABLE transaction"),
					 errdetail("Queue \"%s\" has an ordered key whose next job may have become ready after the transaction's snapshot was taken.",
							   queue->name),
					 errhint("Dequeue in a READ COMMITTED transaction.")));
		if (ticket.ordered && ticket.head_lowered > mark)
		{
			mark = pgjq_keys_snapshot_mark(queue);
			pgjq_hot_keys_end(hot);
			pgjq_hot_keys_begin(hot);
		}
		ticket.snapshot_mark = mark;
		n = pgjq_hot_lease_key(hot, queue->queue_id, ticket.key, &ticket.head,
							   ticket.n, &ticket, now, lease_seconds,
							   put_lease, fcinfo->resultinfo, &seen, &leased);
		pgjq_keys_picked(&ticket, n, &leased, &seen);
		if (n > 0)
			taken += n;
		else
			misses++;
	}
	pgjq_hot_keys_end(hot);
	pgjq_keys_pick_done();
}

/*
 * due_scheduled_job tells whether the queue has a scheduled job whose
 * run_at has come, by one probe of jq.job_scheduled_idx through the index
 * access method: far cheaper than running the promotion statement, which
 * nearly every dequeue would run for nothing (the background worker
 * promotes due jobs on time; this catches what it has not yet done).  It
 * was 5-7% of a one-job dequeue and ack.  The probe reads with the latest
 * snapshot; an entry whose row is no longer scheduled is not visible
 * through it (changing state is never a HOT update: state is in the
 * index's predicate).  It starts at the queue's scan bound (bounds.c),
 * past the entries of jobs promoted before, and a queue whose bound says
 * it has no scheduled job is not probed at all.
 */
static bool
due_scheduled_job(Oid job_relid, int32 queue_id, TimestampTz now)
{
	Relation	heap;
	Relation	index;
	Snapshot	snapshot;
	ScanKeyData keys[3];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	PgjqBoundKey start;
	uint64		generation;
	bool		found;

	(void) pgjq_bound_get(PGJQ_STATE_SCHEDULED, queue_id, 0, &start, &generation);
	if (start.at > now)
		return false;			/* none scheduled, or none due yet */

	heap = table_open(job_relid, NoLock);	/* locked by the caller */
	index = index_open(pgjq_scheduled_index(), AccessShareLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(queue_id));
	ScanKeyInit(&keys[1], 2, BTGreaterEqualStrategyNumber, F_TIMESTAMPTZ_GE,
				TimestampTzGetDatum(start.at));
	ScanKeyInit(&keys[2], 2, BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
				TimestampTzGetDatum(now));
	scan = index_beginscan(heap, index, snapshot, 3, 0);
	index_rescan(scan, keys, 3, NULL, 0);
	slot = table_slot_create(heap, NULL);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	UnregisterSnapshot(snapshot);
	index_close(index, NoLock);
	table_close(heap, NoLock);
	return found;
}

/*
 * pgjq_dequeue_args reads and checks the queue and max_jobs arguments of
 * jq_dequeue, jq_ack_dequeue and the procedure jq_wait_dequeue (at argument
 * numbers queue_arg and queue_arg + 1).
 */
char *
pgjq_dequeue_args(FunctionCallInfo fcinfo, int queue_arg, int32 *max_jobs)
{
	if (PG_ARGISNULL(queue_arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue name must not be null")));

	*max_jobs = PG_ARGISNULL(queue_arg + 1) ? 1 : PG_GETARG_INT32(queue_arg + 1);
	if (*max_jobs < 1 || *max_jobs > PGJQ_LIMIT_MAX_JOBS_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_jobs must be between 1 and %d", PGJQ_LIMIT_MAX_JOBS_MAX),
				 errdetail("Got %d.", *max_jobs)));
	return text_to_cstring(PG_GETARG_TEXT_PP(queue_arg));
}

/*
 * lease_jobs leases up to max_jobs ready jobs of the queue into the
 * function's result, for leases of lease_seconds (the queue's when
 * lease_arg, the argument that gives it, is NULL), and ends hot: the
 * caller's (jq_ack_dequeue, which finished jobs through it first) or, when
 * NULL, its own.  Returns how many it leased.  A session about to wait for
 * the queue (pgjq_wait_arm) joins its waiters here, before the snapshots.
 */
static int64
lease_jobs(FunctionCallInfo fcinfo, PgjqHot *hot, const char *queue_name,
		   int32 max_jobs, int lease_arg)
{
	PgjqQueue	queue;
	int32		lease_seconds;
	TimestampTz now;
	Oid			job_relid;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		before = tuplestore_tuple_count(rsinfo->setResult);

	pgjq_lookup_queue(queue_name, &queue, false);
	pgjq_wait_join(queue.queue_id);

	lease_seconds = PG_ARGISNULL(lease_arg) ? queue.lease_seconds : PG_GETARG_INT32(lease_arg);
	if (lease_seconds < 1 || lease_seconds > PGJQ_LIMIT_LEASE_SECONDS_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease_seconds must be between 1 and %d",
						PGJQ_LIMIT_LEASE_SECONDS_MAX),
				 errdetail("Got %d.", lease_seconds),
				 errhint("Pass NULL for the queue's default lease of %d seconds; extend a long job's lease as it runs.",
						 queue.lease_seconds)));

	/*
	 * Take the lock on jq.job before reading the clock the dequeue's
	 * limits and deadlines go by: a dequeue that waits for a lock (behind
	 * the counter rebuild's SHARE lock after a start, or DDL) must not judge
	 * them by a time before the wait.  Each lease reads the clock again once
	 * its row is taken (lease_row in src/hotpath.c).
	 */
	job_relid = pgjq_lock_job_table();
	now = GetCurrentTimestamp();

	/*
	 * Due scheduled jobs that the worker has not promoted yet are made
	 * ready by jq.promote_due, the one place that promotes, so this
	 * dequeue can take them.
	 */
	if (pgjq_schema_promotes() && due_scheduled_job(job_relid, queue.queue_id, now))
	{
		Datum		values[2];
		bool		isnull;

		values[0] = Int32GetDatum(queue.queue_id);
		values[1] = Int32GetDatum(pgjq_reclaim_batch);
		SPI_connect();
		(void) pgjq_stmt_call(PGJQ_STMT_PROMOTE_DUE, values, NULL, &isnull);
		SPI_finish();
	}

	if (hot == NULL)
		hot = pgjq_hot_begin(job_relid);
	if (pgjq_schema_keys() && pgjq_keys_flow_controlled(&queue))
		dequeue_keys(fcinfo, hot, &queue, max_jobs, now, lease_seconds);
	else if (!dequeue_lanes(fcinfo, hot, queue.queue_id, max_jobs, now, lease_seconds))
		(void) pgjq_hot_lease(hot, queue.queue_id, 0, NULL, max_jobs, now,
							  lease_seconds, put_lease, fcinfo->resultinfo, NULL);
	pgjq_hot_end(hot);
	return tuplestore_tuple_count(rsinfo->setResult) - before;
}

/* a look of a waiting jq_dequeue */
typedef struct DequeueLook
{
	FunctionCallInfo fcinfo;
	const char *queue_name;
	int32		max_jobs;
	int64		taken;
} DequeueLook;

static bool
look_for_jobs(void *arg)
{
	DequeueLook *l = (DequeueLook *) arg;

	l->taken = lease_jobs(l->fcinfo, NULL, l->queue_name, l->max_jobs, 2);
	return l->taken > 0;
}

/*
 * jq.jq_dequeue(queue, max_jobs, lease_seconds, wait) leases up to
 * max_jobs ready jobs of the queue, most urgent first (priority
 * descending, then run_at, then id), and returns one row per job.  The
 * lease runs from the clock once the call holds its table lock (not the
 * start of the caller's transaction or statement); all jobs of one call
 * share that start.
 *
 * With a wait, a call that finds no job waits for one, up to wait, among
 * the queue's waiters (waiters.c), and looks again each time it is woken;
 * each look in a subtransaction that releases its locks when it found
 * nothing (longpoll.c says what a waiting function still holds).
 */
Datum
pgjq_dequeue(PG_FUNCTION_ARGS)
{
	int32		max_jobs;
	char	   *queue_name = pgjq_dequeue_args(fcinfo, 0, &max_jobs);
	int64		wait = pgjq_wait_usecs(fcinfo, 3, "wait");
	TimestampTz until;
	DequeueLook look;

	pgjq_init_materialized_srf(fcinfo);
	if (wait == 0)
	{
		(void) lease_jobs(fcinfo, NULL, queue_name, max_jobs, 2);
		return (Datum) 0;
	}

	pgjq_wait_check_isolation("jq_dequeue");
	until = GetCurrentTimestamp() + wait;
	look.fcinfo = fcinfo;
	look.queue_name = queue_name;
	look.max_jobs = max_jobs;
	look.taken = 0;
	pgjq_wait_arm(max_jobs);
	PG_ENSURE_ERROR_CLEANUP(pgjq_wait_cleanup, (Datum) 0);
	{
		while (!pgjq_look_releasing_locks(look_for_jobs, &look) &&
			   pgjq_wait_sleep(until))
			;
	}
	PG_END_ENSURE_ERROR_CLEANUP(pgjq_wait_cleanup, (Datum) 0);
	pgjq_wait_done(look.taken >= max_jobs);
	return (Datum) 0;
}


/*
 * jq.jq_ack(job_id, lease_token, result, usage) completes a leased job: the
 * job leaves the hot table and its result is stored, with the usage the
 * worker reports (src/usage.c), in one statement.
 * Returns true when this lease completed the job, false (changing nothing)
 * when the token is stale or the job is not leased: already acked, taken
 * by another worker after the lease expired, or unknown.  A job cancelled
 * while leased also gets false: it ends as cancelled and the result is
 * dropped.  An ack that
 * arrives after the lease expired but before the job was reclaimed still
 * succeeds: no other worker holds the job, and the work is done.
 */
Datum
pgjq_ack(PG_FUNCTION_ARGS)
{
	int64		token;
	PgjqHot    *hot;
	PgjqFinished done;
	bool		usage_isnull;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job_id and lease_token must not be null"),
				 errhint("Pass the job_id and lease_token columns that jq_dequeue returned.")));
	token = PG_GETARG_INT64(1);
	/* the usage report: 0.4.0 on */
	usage_isnull = PG_NARGS() < 4 || PG_ARGISNULL(3);
	if (!usage_isnull)
		pgjq_check_usage(PG_GETARG_JSONB_P(3));

	hot = pgjq_hot_begin(pgjq_lock_job_table());
	done = pgjq_hot_finish(hot, PG_GETARG_INT64(0), &token, PGJQ_STATE_SUCCEEDED,
						   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
						   PG_ARGISNULL(2),
						   usage_isnull ? (Datum) 0 : PG_GETARG_DATUM(3), usage_isnull);
	pgjq_hot_end(hot);
	PG_RETURN_BOOL(done == PGJQ_FINISHED_SUCCEEDED);
}

/*
 * check_ack_array deconstructs one array argument of jq_ack_batch or
 * jq_ack_dequeue (bigint, jsonb or text elements) and checks its shape;
 * returns the element count.
 */
static int
check_ack_array(ArrayType *arr, const char *argname, Oid elemtype,
				bool nulls_allowed, Datum **elems_out)
{
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", argname)));
	if (elemtype == INT8OID)
		deconstruct_array(arr, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &elems, &elem_nulls, &n);
	else
		deconstruct_array(arr, elemtype, -1, false, TYPALIGN_INT,
						  &elems, &elem_nulls, &n);
	if (!nulls_allowed)
		for (int i = 0; i < n; i++)
			if (elem_nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("%s must not contain nulls", argname),
						 errdetail("Element %d is null.", i + 1)));
	if (elems_out)
		*elems_out = elems;
	return n;
}

/*
 * check_completions checks the arrays that complete a batch of leases
 * (jq_ack_batch, jq_ack_dequeue): job ids and their tokens, one-
 * dimensional, as long as each other, without nulls or a job twice, at
 * most PGJQ_LIMIT_BATCH_MAX; results and errors, when given, as long as
 * them.  Returns the count.
 */
static int
check_completions(ArrayType *ids_arr, ArrayType *tokens_arr,
				  ArrayType *results_arr, ArrayType *errors_arr,
				  ArrayType *usages_arr)
{
	int			nids;
	int			ntokens;
	Datum	   *id_elems;

	nids = check_ack_array(ids_arr, "job_ids", INT8OID, false, &id_elems);
	ntokens = check_ack_array(tokens_arr, "lease_tokens", INT8OID, false, NULL);
	if (nids != ntokens)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("job_ids and lease_tokens must have the same length"),
				 errdetail("job_ids has %d elements, lease_tokens has %d.",
						   nids, ntokens)));
	if (nids > PGJQ_LIMIT_BATCH_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a batch may hold at most %d jobs", PGJQ_LIMIT_BATCH_MAX),
				 errdetail("Got %d.", nids)));
	if (results_arr != NULL)
	{
		int			nresults = check_ack_array(results_arr, "results", JSONBOID, true, NULL);

		if (nresults != nids)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("results must have as many elements as job_ids"),
					 errdetail("job_ids has %d elements, results has %d.",
							   nids, nresults),
					 errhint("Pass NULL for results to store no results, or NULL elements for single jobs.")));
	}
	if (usages_arr != NULL)
	{
		Datum	   *usages;
		int			nusages = check_ack_array(usages_arr, "usages", JSONBOID, true, &usages);
		bool	   *usage_nulls;
		int			count;

		if (nusages != nids)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("usages must have as many elements as job_ids"),
					 errdetail("job_ids has %d elements, usages has %d.",
							   nids, nusages),
					 errhint("Use NULL elements for the jobs that report no usage.")));
		deconstruct_array(usages_arr, JSONBOID, -1, false, TYPALIGN_INT,
						  &usages, &usage_nulls, &count);
		for (int i = 0; i < count; i++)
			if (!usage_nulls[i])
				pgjq_check_usage(DatumGetJsonbP(usages[i]));
	}
	if (errors_arr != NULL)
	{
		int			nerrors = check_ack_array(errors_arr, "errors", TEXTOID, true, NULL);

		if (nerrors != nids)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("errors must have as many elements as job_ids"),
					 errdetail("job_ids has %d elements, errors has %d.",
							   nids, nerrors),
					 errhint("Pass NULL for errors to ack every job, or NULL elements for the jobs that succeeded.")));
	}

	/* refuse duplicate ids: sort a copy and compare neighbours */
	if (nids > 1)
	{
		int64	   *sorted = palloc(sizeof(int64) * nids);

		for (int i = 0; i < nids; i++)
			sorted[i] = DatumGetInt64(id_elems[i]);
		qsort(sorted, nids, sizeof(int64), pgjq_cmp_int64);
		for (int i = 1; i < nids; i++)
			if (sorted[i] == sorted[i - 1])
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job id " INT64_FORMAT " appears more than once in job_ids",
								sorted[i])));
		pfree(sorted);
	}
	return nids;
}

/*
 * ack_completions acks the n jobs of a batch (checked by
 * check_completions) that have no error, in input order, each on its own
 * lease as jq_ack would; with rsinfo, it returns a (job_id, acked) row per
 * element.
 */
static void
ack_completions(PgjqHot *hot, int n, ArrayType *ids_arr, ArrayType *tokens_arr,
				ArrayType *results_arr, ArrayType *errors_arr,
				ArrayType *usages_arr, ReturnSetInfo *rsinfo)
{
	Datum	   *ids;
	Datum	   *tokens;
	Datum	   *results = NULL;
	bool	   *result_nulls = NULL;
	Datum	   *usages = NULL;
	bool	   *usage_nulls = NULL;
	bool	   *error_nulls = NULL;
	Datum	   *errors;
	int			count;

	deconstruct_array(ids_arr, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &ids, NULL, &count);
	deconstruct_array(tokens_arr, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &tokens, NULL, &count);
	if (results_arr != NULL)
		deconstruct_array(results_arr, JSONBOID, -1, false, TYPALIGN_INT,
						  &results, &result_nulls, &count);
	if (errors_arr != NULL)
		deconstruct_array(errors_arr, TEXTOID, -1, false, TYPALIGN_INT,
						  &errors, &error_nulls, &count);
	if (usages_arr != NULL)
		deconstruct_array(usages_arr, JSONBOID, -1, false, TYPALIGN_INT,
						  &usages, &usage_nulls, &count);

	pgjq_hot_batch_begin(hot);
	for (int i = 0; i < n; i++)
	{
		int64		token = DatumGetInt64(tokens[i]);
		PgjqFinished done;
		Datum		values[2];
		bool		nulls[2] = {false, false};

		if (error_nulls != NULL && !error_nulls[i])
			continue;			/* failed by COMPLETE_FAILS */
		done = pgjq_hot_finish(hot, DatumGetInt64(ids[i]), &token, PGJQ_STATE_SUCCEEDED,
							   results ? results[i] : (Datum) 0,
							   results == NULL || result_nulls[i],
							   usages ? usages[i] : (Datum) 0,
							   usages == NULL || usage_nulls[i]);
		if (rsinfo == NULL)
			continue;
		values[0] = ids[i];
		values[1] = BoolGetDatum(done == PGJQ_FINISHED_SUCCEEDED);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	pgjq_hot_batch_end(hot);
}

/*
 * jq.jq_ack_batch(job_ids, lease_tokens, results) acks many jobs in one
 * call.  Returns one (job_id, acked) row per element, in input order;
 * each element succeeds or fails on its own token, as jq_ack would.  A job
 * id may appear only once, so that "acked" is unambiguous.
 */
Datum
pgjq_ack_batch(PG_FUNCTION_ARGS)
{
	ArrayType  *ids_arr;
	ArrayType  *tokens_arr;
	ArrayType  *results_arr;
	ArrayType  *usages_arr;
	PgjqHot    *hot;
	int			n;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job_ids and lease_tokens must not be null")));
	ids_arr = PG_GETARG_ARRAYTYPE_P(0);
	tokens_arr = PG_GETARG_ARRAYTYPE_P(1);
	results_arr = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
	/* the usage reports: 0.4.0 on */
	usages_arr = PG_NARGS() < 4 || PG_ARGISNULL(3) ? NULL : PG_GETARG_ARRAYTYPE_P(3);
	n = check_completions(ids_arr, tokens_arr, results_arr, NULL, usages_arr);

	pgjq_init_materialized_srf(fcinfo);
	hot = pgjq_hot_begin(pgjq_lock_job_table());
	ack_completions(hot, n, ids_arr, tokens_arr, results_arr, NULL, usages_arr,
					(ReturnSetInfo *) fcinfo->resultinfo);
	pgjq_hot_end(hot);
	return (Datum) 0;
}

/*
 * jq.jq_ack_dequeue(queue, max_jobs, lease_seconds, job_ids, lease_tokens,
 * results, errors) is a worker's loop in one call: it completes the jobs the
 * worker holds, then leases the next ones, in one round trip and in the
 * caller's transaction, so a worker commits once per turn instead of twice.
 * Each job of job_ids is acked with its element of results, or failed as
 * jq_fail would (a retry with backoff, or a dead letter on its last
 * attempt) when its element of errors is not NULL; a job whose token is
 * stale is left alone, as jq_ack_batch and jq_fail leave it (their results
 * say so; this call does not).  job_ids NULL completes nothing: the first
 * turn of a loop.  Returns the new leases, as jq_dequeue.
 */
Datum
pgjq_ack_dequeue(PG_FUNCTION_ARGS)
{
	int32		max_jobs;
	char	   *queue_name = pgjq_dequeue_args(fcinfo, 0, &max_jobs);
	ArrayType  *ids_arr = NULL;
	ArrayType  *tokens_arr = NULL;
	ArrayType  *results_arr = NULL;
	ArrayType  *errors_arr = NULL;
	int			n = 0;
	PgjqHot    *hot;

	if (PG_ARGISNULL(3) != PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job_ids and lease_tokens must both be null or both be given")));
	if (!PG_ARGISNULL(3))
	{
		ids_arr = PG_GETARG_ARRAYTYPE_P(3);
		tokens_arr = PG_GETARG_ARRAYTYPE_P(4);
		results_arr = PG_ARGISNULL(5) ? NULL : PG_GETARG_ARRAYTYPE_P(5);
		errors_arr = PG_ARGISNULL(6) ? NULL : PG_GETARG_ARRAYTYPE_P(6);
		n = check_completions(ids_arr, tokens_arr, results_arr, errors_arr, NULL);
	}
	else if (!PG_ARGISNULL(5) || !PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("results and errors need job_ids and lease_tokens")));

	pgjq_init_materialized_srf(fcinfo);
	hot = pgjq_hot_begin(pgjq_lock_job_table());
	if (n > 0)
	{
		ack_completions(hot, n, ids_arr, tokens_arr, results_arr, errors_arr, NULL, NULL);
		if (errors_arr != NULL)
		{
			/* the failures, by jq.jq_fail, the one failure transition */
			Datum		values[4];
			char		nulls[4] = {' ', ' ', 'n', ' '};
			bool		isnull;

			values[0] = PointerGetDatum(ids_arr);
			values[1] = PointerGetDatum(tokens_arr);
			values[3] = PointerGetDatum(errors_arr);
			SPI_connect();
			(void) pgjq_stmt_call(PGJQ_STMT_COMPLETE_FAILS, values, nulls, &isnull);
			SPI_finish();
		}
	}
	(void) lease_jobs(fcinfo, hot, queue_name, max_jobs, 2);
	return (Datum) 0;
}

/*
 * jq.lock_lease(job_id, lease_token) locks the job for the rest of the
 * transaction and returns true when the lease is current, false (locking
 * nothing) when the token is stale or the job is not leased.  jq_fail and
 * jq_extend call it, so that every completion, failure and extension of a
 * lease is fenced by the one predicate in statements.c.
 */
Datum
pgjq_lock_lease(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	bool		current;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	SPI_connect();
	pgjq_lock_job_table();		/* before the other tables: see queue.c */
	pgjq_stmt_execute(PGJQ_STMT_LOCK_LEASE, values, NULL, SPI_OK_SELECT);
	current = SPI_processed == 1;
	SPI_finish();
	PG_RETURN_BOOL(current);
}

/*
 * finish_locked ends the jobs of the array argument as end_state, for
 * jq.finish_cancelled and jq.finish_expired; returns how many it ended.
 */
static int32
finish_locked(FunctionCallInfo fcinfo, char end_state)
{
	ArrayType  *ids_arr;
	Datum	   *ids;
	bool	   *id_nulls;
	int			n;
	int32		finished = 0;
	PgjqHot    *hot;

	if (PG_ARGISNULL(0))
		return 0;
	ids_arr = PG_GETARG_ARRAYTYPE_P(0);
	deconstruct_array(ids_arr, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &ids, &id_nulls, &n);
	hot = pgjq_hot_begin(pgjq_lock_job_table());
	for (int i = 0; i < n; i++)
		if (!id_nulls[i] &&
			pgjq_hot_finish(hot, DatumGetInt64(ids[i]), NULL, end_state, (Datum) 0,
							true, (Datum) 0, true) != PGJQ_FINISHED_NONE)
			finished++;
	pgjq_hot_end(hot);
	return finished;
}

/*
 * jq.finish_cancelled(job_ids) ends jobs as cancelled: they leave jq.job
 * for jq.job_result.  The caller has locked them and decided they are
 * cancelled (jq_cancel, and jq.fail_leased for a job whose cancel was
 * requested while leased).  Returns how many were finished.
 */
Datum
pgjq_finish_cancelled(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(finish_locked(fcinfo, PGJQ_STATE_CANCELLED));
}

/*
 * jq.finish_expired(job_ids) ends jobs as expired: jq.expire_deadlines has
 * locked them and found them waiting past their deadline.  Their rows in
 * jq.job_result say so in last_error.  Returns how many were ended.
 */
Datum
pgjq_finish_expired(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(finish_locked(fcinfo, PGJQ_STATE_EXPIRED));
}
