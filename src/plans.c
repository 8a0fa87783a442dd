/*-------------------------------------------------------------------------
 *
 * plans.c
 *	  The SPI plan cache of the hot path, queue lookup and name checks.
 *
 * Every statement of the hot path is prepared once per backend, kept with
 * SPI_keepplan and reused, so enqueue, dequeue and ack cost an executor run
 * and no parse or plan.  The plans are generic: they never depend on the
 * parameter values, and that keeps the planner from probing the ends of
 * the job indexes (get_actual_variable_range), which is slow exactly when
 * a queue has just churned through many jobs and left dead index entries.
 *
 * The SQL functions that reach these plans run SECURITY DEFINER with
 * search_path = pg_catalog, pg_temp, so the first prepare resolves every
 * name and operator there; the plan cache keeps that search_path and uses
 * it again when a plan is rebuilt after an invalidation.  All names are
 * schema-qualified besides.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/plans.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "storage/lockdefs.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/*
 * Acks move a job from jq.job to jq.job_result.  "done" is the DELETE's
 * RETURNING list below plus a result column; a cancel requested while the
 * job was leased turns the ack into a cancellation.
 */
#define PGJQ_FINISHED_COLUMNS \
	"id, queue_id, priority, attempt, run_at, enqueued_at, started_at," \
	" cancel_requested, errors"
#define PGJQ_FINISHED_COLUMNS_J \
	"j.id, j.queue_id, j.priority, j.attempt, j.run_at, j.enqueued_at," \
	" j.started_at, j.cancel_requested, j.errors"
#define PGJQ_INSERT_FINISHED \
	" INSERT INTO jq.job_result (job_id, queue_id, state, priority, attempts," \
	"                            result, last_error, run_at, enqueued_at," \
	"                            started_at, finished_at)" \
	" SELECT id, queue_id," \
	"        CASE WHEN cancel_requested THEN 'c' ELSE 'd' END::\"char\"," \
	"        priority, attempt," \
	"        CASE WHEN cancel_requested THEN NULL ELSE result END," \
	"        errors -> -1 ->> 'error', run_at, enqueued_at, started_at," \
	"        pg_catalog.clock_timestamp()" \
	"   FROM done"

typedef struct PgjqPlanDef
{
	const char *sql;
	int			nargs;
	Oid			argtypes[7];
} PgjqPlanDef;

/*
 * The statements, indexed by PgjqPlanId.  Result columns are read by
 * position; the comments name them.
 */
PG_FUNCTION_INFO_V1(pgjq_queue_changed);
PG_FUNCTION_INFO_V1(pgjq_lock_queue);

static const PgjqPlanDef plan_defs[PGJQ_NUM_PLANS] = {
	[PGJQ_PLAN_QUEUE_LOOKUP] = {
		/* -> queue_id, lease_seconds, max_payload_bytes */
		"SELECT queue_id, lease_seconds, max_payload_bytes"
		"  FROM jq.queue WHERE name = $1",
		1, {TEXTOID}
	},
	[PGJQ_PLAN_ENQUEUE] = {
		/* -> id; $7 is the id an idempotency key claimed, or NULL */
		"INSERT INTO jq.job (id, queue_id, state, priority, run_at, enqueued_at, payload)"
		" VALUES (COALESCE($7, pg_catalog.nextval('jq.job_id_seq')),"
		"         $1, $2, $3, $4, $5, $6)"
		" RETURNING id",
		7, {INT4OID, CHAROID, INT2OID, TIMESTAMPTZOID, TIMESTAMPTZOID, JSONBOID, INT8OID}
	},
	[PGJQ_PLAN_ENQUEUE_BATCH] = {
		/*
		 * -> id, one row per payload.  $7 holds explicit ids (keyed
		 * batches) or is NULL; then ids come from the sequence in the order
		 * the rows are inserted, which is the ORDER BY below, so ascending
		 * ids follow the order of the payloads.
		 */
		"INSERT INTO jq.job (id, queue_id, state, priority, run_at, enqueued_at, payload)"
		" SELECT COALESCE(u.i, pg_catalog.nextval('jq.job_id_seq')),"
		"        $1, $2, $3, $4, $5, u.p"
		"   FROM ROWS FROM (pg_catalog.unnest($6), pg_catalog.unnest($7))"
		"        WITH ORDINALITY AS u(p, i, n)"
		"  ORDER BY u.n"
		" RETURNING id",
		7, {INT4OID, CHAROID, INT2OID, TIMESTAMPTZOID, TIMESTAMPTZOID, JSONBARRAYOID,
		INT8ARRAYOID}
	},
	[PGJQ_PLAN_NEXT_IDS] = {
		/* -> $1 fresh job ids, ascending */
		"SELECT pg_catalog.nextval('jq.job_id_seq')"
		"  FROM pg_catalog.generate_series(1, $1)",
		1, {INT4OID}
	},
	[PGJQ_PLAN_KEY_CLAIM] = {
		/*
		 * -> job_id when the key was free and is now ours.  A concurrent
		 * enqueue of the same key waits here, in the unique index, until
		 * the first commits or aborts.
		 */
		"INSERT INTO jq.idempotency_key (queue_id, key, job_id, created_at)"
		" VALUES ($1, $2, pg_catalog.nextval('jq.job_id_seq'), $3)"
		" ON CONFLICT (queue_id, key) DO NOTHING"
		" RETURNING job_id",
		3, {INT4OID, TEXTOID, TIMESTAMPTZOID}
	},
	[PGJQ_PLAN_KEY_LOOKUP] = {
		/*
		 * -> job_id, live: the key's job, and whether the key still holds
		 * (its job is unfinished, or it is within idempotency_window).
		 * Locks the key row, so that two resubmissions of an expired key
		 * cannot both create a job.
		 */
		"SELECT k.job_id,"
		"       k.created_at + q.idempotency_window > $3"
		"       OR EXISTS (SELECT FROM jq.job j WHERE j.id = k.job_id)"
		"  FROM jq.idempotency_key k JOIN jq.queue q ON q.queue_id = k.queue_id"
		" WHERE k.queue_id = $1 AND k.key = $2"
		"   FOR UPDATE OF k",
		3, {INT4OID, TEXTOID, TIMESTAMPTZOID}
	},
	[PGJQ_PLAN_KEY_REASSIGN] = {
		/* -> job_id: an expired key, locked by KEY_LOOKUP, now names a new job */
		"UPDATE jq.idempotency_key"
		"   SET job_id = pg_catalog.nextval('jq.job_id_seq'), created_at = $3"
		" WHERE queue_id = $1 AND key = $2"
		" RETURNING job_id",
		3, {INT4OID, TEXTOID, TIMESTAMPTZOID}
	},
	[PGJQ_PLAN_BATCH_LOOKUP] = {
		/* -> queue_id of the batch */
		"SELECT queue_id FROM jq.batch WHERE batch_id = $1",
		1, {INT8OID}
	},
	[PGJQ_PLAN_BATCH_ADD] = {
		/* a resubmitted (idempotent) job may already be a member */
		"INSERT INTO jq.batch_job (batch_id, job_id)"
		" SELECT $1, u.id FROM pg_catalog.unnest($2) AS u(id)"
		" ON CONFLICT DO NOTHING",
		2, {INT8OID, INT8ARRAYOID}
	},
	[PGJQ_PLAN_PROMOTE] = {
		/*
		 * Scheduled jobs of the queue whose run_at has come become ready.
		 * When none is due this is one probe of an index that holds only
		 * scheduled jobs.  SKIP LOCKED: concurrent dequeuers share the work
		 * instead of waiting for each other.
		 */
		"UPDATE jq.job SET state = 'r'"
		" WHERE id IN (SELECT id FROM jq.job"
		"               WHERE queue_id = $1 AND state = 's'"
		"                 AND run_at <= $2"
		"               ORDER BY run_at"
		"               LIMIT 1000"
		"               FOR UPDATE SKIP LOCKED)",
		2, {INT4OID, TIMESTAMPTZOID}
	},
	[PGJQ_PLAN_DEQUEUE] = {
		/*
		 * -> job_id, lease_token, attempt, priority, payload, enqueued_at,
		 * lease_expires_at, most urgent first.
		 *
		 * The lease token's high 32 bits count the deliveries of the job, so
		 * a job's tokens only grow; the low 32 bits are random, so a token
		 * is never valid for another job by accident.  $4 is the clock at
		 * the call, so every job of one call shares started_at and the
		 * order of started_at never contradicts the order of delivery.
		 */
		"WITH cand AS ("
		"    SELECT id FROM jq.job"
		"     WHERE queue_id = $1 AND state = 'r'"
		"     ORDER BY priority DESC, run_at, id"
		"     LIMIT $2"
		"     FOR UPDATE SKIP LOCKED"
		"), leased AS ("
		"    UPDATE jq.job j"
		"       SET state = 'l',"
		"           attempt = j.attempt + 1,"
		"           lease_token = ((((COALESCE(j.lease_token, 0) >> 32) + 1) << 32)"
		"                          | (pg_catalog.random() * 2147483647)::bigint),"
		"           started_at = $4,"
		"           lease_expires_at = $4 + pg_catalog.make_interval(secs => $3)"
		"     WHERE j.id = ANY (ARRAY(SELECT id FROM cand))"
		"    RETURNING j.id, j.lease_token, j.attempt, j.priority, j.payload,"
		"              j.enqueued_at, j.lease_expires_at, j.run_at"
		")"
		" SELECT id, lease_token, attempt, priority::integer, payload,"
		"        enqueued_at, lease_expires_at"
		"   FROM leased"
		"  ORDER BY priority DESC, run_at, id",
		4, {INT4OID, INT4OID, FLOAT8OID, TIMESTAMPTZOID}
	},
	[PGJQ_PLAN_ACK] = {
		/*
		 * -> acked, one row when the lease was current.  A job whose cancel
		 * was requested while leased ends as cancelled, its result dropped,
		 * and the ack reports false.
		 */
		"WITH done AS ("
		"    DELETE FROM jq.job"
		"     WHERE id = $1 AND lease_token = $2 AND state = 'l'"
		"    RETURNING " PGJQ_FINISHED_COLUMNS ", $3::jsonb AS result"
		")"
		PGJQ_INSERT_FINISHED
		" RETURNING state = 'd'",
		3, {INT8OID, INT8OID, JSONBOID}
	},
	[PGJQ_PLAN_ACK_BATCH] = {
		/*
		 * -> job_id, acked, one row per input element in input order.  The
		 * join is written so that the plan probes the primary key once per
		 * input row; an extra "j.id = ANY ($1)" made the planner fetch the
		 * jobs by a bitmap scan and then compare every job with every input
		 * row (100 x 100 for a batch of 100: half the statement's time).
		 */
		"WITH input AS MATERIALIZED ("
		"    SELECT u.id, u.token, u.result, u.ord"
		"      FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
		"                      pg_catalog.unnest($3)) WITH ORDINALITY AS u(id, token, result, ord)"
		"), done AS ("
		"    DELETE FROM jq.job j USING input i"
		"     WHERE j.id = i.id AND j.lease_token = i.token AND j.state = 'l'"
		"    RETURNING " PGJQ_FINISHED_COLUMNS_J ", i.result"
		"), ins AS ("
		PGJQ_INSERT_FINISHED
		"    RETURNING job_id, state"
		")"
		" SELECT i.id, COALESCE(ins.state = 'd', false)"
		"   FROM input i LEFT JOIN ins ON ins.job_id = i.id"
		"  ORDER BY i.ord",
		3, {INT8ARRAYOID, INT8ARRAYOID, JSONBARRAYOID}
	},
};

static SPIPlanPtr plans[PGJQ_NUM_PLANS];

/*
 * pgjq_get_plan returns the kept plan for id, preparing it on first use.
 * The caller must be connected to SPI.
 */
SPIPlanPtr
pgjq_get_plan(PgjqPlanId id)
{
	const PgjqPlanDef *def;
	SPIPlanPtr	plan;

	Assert(id >= 0 && id < PGJQ_NUM_PLANS);
	if (plans[id] != NULL)
		return plans[id];

	def = &plan_defs[id];
	plan = SPI_prepare_cursor(def->sql, def->nargs, (Oid *) def->argtypes,
							  CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "pgjq: SPI_prepare failed for plan %d: %s",
			 (int) id, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "pgjq: SPI_keepplan failed for plan %d", (int) id);
	plans[id] = plan;
	return plan;
}

/*
 * pgjq_execute_plan runs a kept plan and checks its SPI return code; any
 * other code is a bug, not a user error, hence elog.
 */
void
pgjq_execute_plan(PgjqPlanId id, Datum *values, const char *nulls,
				  int expected_rc)
{
	int			rc;

	rc = SPI_execute_plan(pgjq_get_plan(id), values, nulls, false, 0);
	if (rc != expected_rc)
		elog(ERROR, "pgjq: plan %d returned %s, expected %s", (int) id,
			 SPI_result_code_string(rc), SPI_result_code_string(expected_rc));
}

/*
 * pgjq_check_queue_name raises 42602 unless name is a valid queue name:
 * a lowercase letter, then lowercase letters, digits or underscores, at
 * most PGJQ_QUEUE_NAME_MAXLEN bytes.  The rule keeps "jq_" || name a valid
 * unquoted identifier and a NOTIFY channel name that fits in NAMEDATALEN.
 */
void
pgjq_check_queue_name(const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len >= 1 && name[0] >= 'a' && name[0] <= 'z';

	/* no need to echo a name of a thousand characters back */
	if (len > PGJQ_QUEUE_NAME_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("queue name is too long"),
				 errdetail("A queue name has at most %d characters; this one has %zu.",
						   PGJQ_QUEUE_NAME_MAXLEN, len)));

	for (size_t i = 1; ok && i < len; i++)
	{
		char		c = name[i];

		ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
	}

	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid queue name \"%s\"", name),
				 errdetail("A queue name starts with a lowercase letter and has only lowercase letters, digits and underscores, at most %d characters.",
						   PGJQ_QUEUE_NAME_MAXLEN)));
}

/*
 * The queue cache: each backend keeps the settings of the queues it used,
 * by name, so that the hot path does not read jq.queue on every call (an
 * SPI execution that was 7% of an enqueue's CPU).
 *
 * Every change of jq.queue fires jq.queue_changed(), a statement trigger
 * that sends a relcache invalidation of jq.queue; at commit every backend
 * receives it and its callback below empties the cache.  Lookups accept
 * pending invalidations first, so jq_alter_queue takes effect in every
 * backend at its next call, even inside an open transaction.  A rolled
 * back change is undone in the changing backend's cache too, as core
 * replays a transaction's own invalidations locally when it aborts.
 */
typedef struct QueueCacheEntry
{
	char		name[PGJQ_QUEUE_NAME_MAXLEN + 1];	/* hash key */
	PgjqQueue	queue;
} QueueCacheEntry;

static HTAB *queue_cache = NULL;
static Oid	queue_relid = InvalidOid;	/* jq.queue, found on first use */
static uint64 queue_cache_generation = 0;	/* bumped by every reset */

/*
 * A schema of version 0.1.0 (the library is new, ALTER EXTENSION UPDATE
 * has not run yet) has neither the invalidating trigger nor jq.lock_queue:
 * then nothing is cached and nothing is locked, as in 0.1.0.  Known from
 * the existence of jq.queue_changed(); creating it invalidates jq.queue,
 * so the answer is looked up again after the update.
 */
static bool queue_cache_usable = false;

/* jq.job_scheduled_idx, for jq_dequeue's probe (pgjq_scheduled_index) */
static Oid	scheduled_idx_oid = InvalidOid;

static void
queue_cache_reset(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == scheduled_idx_oid)
		scheduled_idx_oid = InvalidOid;
	if (relid != InvalidOid && relid != queue_relid)
		return;
	if (queue_cache != NULL)
	{
		hash_destroy(queue_cache);
		queue_cache = NULL;
	}
	/* jq.queue itself may be gone: DROP EXTENSION invalidates it too */
	queue_relid = InvalidOid;
	queue_cache_generation++;
}

static void
queue_cache_init(void)
{
	static bool callback_registered = false;
	HASHCTL		info;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(queue_cache_reset, (Datum) 0);
		callback_registered = true;
	}
	if (queue_relid == InvalidOid)
	{
		Oid			argtypes[1];

		queue_relid = get_relname_relid("queue",
										get_namespace_oid(PGJQ_SCHEMA, false));
		queue_cache_usable =
			OidIsValid(LookupFuncName(list_make2(makeString(PGJQ_SCHEMA),
												 makeString("queue_changed")),
									  0, argtypes, true));
	}
	if (queue_cache == NULL)
	{
		info.keysize = PGJQ_QUEUE_NAME_MAXLEN + 1;
		info.entrysize = sizeof(QueueCacheEntry);
		info.hcxt = TopMemoryContext;
		queue_cache = hash_create("pgjq queue cache", 16, &info,
								  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
}

/*
 * read_queue reads a queue's settings from jq.queue with the latest
 * snapshot, not the transaction's: settings, and whether the queue still
 * exists, are what was last committed, also in a repeatable read
 * transaction (a queue dropped after it began is gone).
 */
static bool
read_queue(const char *name, PgjqQueue *queue)
{
	Datum		values[1];
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;
	int			rc;

	values[0] = CStringGetTextDatum(name);
	rc = SPI_execute_snapshot(pgjq_get_plan(PGJQ_PLAN_QUEUE_LOOKUP), values, NULL,
							  GetLatestSnapshot(), InvalidSnapshot, true, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pgjq: queue lookup failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	queue->queue_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	queue->lease_seconds = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	queue->max_payload_bytes = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	return true;
}

/*
 * pgjq_lookup_queue fills *queue with the settings of the named queue, or
 * raises 42704 with a hint to create it.  The caller must be connected to
 * SPI.
 *
 * With for_insert, the caller is about to add jobs to the queue: it also
 * takes the queue's lock in share mode until the end of the transaction.
 * jq_drop_queue takes it in exclusive mode, so a queue cannot be dropped
 * between the lookup and the commit of the jobs (they would be orphans
 * that no worker ever sees); an enqueue that waited for a drop finds the
 * queue gone.  The lock is an object lock on (jq.queue, queue_id), shown
 * in pg_locks with classid = 'jq.queue'::regclass.
 */
void
pgjq_lookup_queue(const char *name, PgjqQueue *queue, bool for_insert)
{
	pgjq_check_queue_name(name);

	/* see queue changes committed since this backend last looked */
	AcceptInvalidationMessages();

	for (;;)
	{
		QueueCacheEntry *entry;
		bool		found;
		uint64		generation;

		queue_cache_init();
		entry = hash_search(queue_cache, name, HASH_FIND, &found);
		if (found)
			*queue = entry->queue;
		else
		{
			if (!read_queue(name, queue))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("queue \"%s\" does not exist", name),
						 errhint("Create it with jq_create_queue('%s').", name)));
			/* read_queue may have processed invalidations: init again */
			queue_cache_init();
			if (queue_cache_usable)
			{
				entry = hash_search(queue_cache, name, HASH_ENTER, &found);
				entry->queue = *queue;
			}
		}

		if (!for_insert || !queue_cache_usable)
			return;

		/*
		 * Locking accepts invalidations; when the cache was reset meanwhile
		 * (the queue was changed or dropped while we waited), look again.
		 */
		generation = queue_cache_generation;
		LockDatabaseObject(queue_relid, queue->queue_id, 0, AccessShareLock);
		if (generation == queue_cache_generation)
			return;
	}
}

/*
 * pgjq_lock_job_table takes ROW EXCLUSIVE on jq.job.  Every API function
 * that writes jq.job, jq.job_result or jq.dead_letter takes it first, so
 * that it never waits for jq.job while holding one of the others: the
 * counter rebuild takes SHARE locks on the three tables in that order, and
 * a writer that had jq.job_result already (an ack's plan locks its INSERT
 * target first) and then waited for jq.job would deadlock with it.
 */
Oid
pgjq_lock_job_table(void)
{
	return RangeVarGetRelid(makeRangeVar(PGJQ_SCHEMA, "job", -1), RowExclusiveLock, false);
}

/*
 * pgjq_scheduled_index returns the OID of jq.job_scheduled_idx, looked up
 * once and forgotten when the relcache drops the index.  The caller holds
 * a lock on jq.job, so the index cannot go away meanwhile.
 */
Oid
pgjq_scheduled_index(void)
{
	queue_cache_init();			/* registers the invalidation callback */
	if (scheduled_idx_oid == InvalidOid)
		scheduled_idx_oid = get_relname_relid("job_scheduled_idx",
											  get_namespace_oid(PGJQ_SCHEMA, false));
	if (scheduled_idx_oid == InvalidOid)
		elog(ERROR, "pgjq: index jq.job_scheduled_idx not found");
	return scheduled_idx_oid;
}

/*
 * jq.queue_changed() is an AFTER ... FOR EACH STATEMENT trigger on
 * jq.queue: it makes every backend drop its queue cache when the change
 * commits (and this backend at once, for the rest of its transaction).
 */
Datum
pgjq_queue_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		elog(ERROR, "pgjq: queue_changed must be an AFTER STATEMENT trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * jq.lock_queue(queue_id) takes the queue's lock in exclusive mode until
 * the end of the transaction: it waits for every transaction that is
 * adding jobs to the queue, and keeps new ones out (see
 * pgjq_lookup_queue).  jq_drop_queue calls it.
 */
Datum
pgjq_lock_queue(PG_FUNCTION_ARGS)
{
	queue_cache_init();
	LockDatabaseObject(queue_relid, PG_GETARG_INT32(0), 0, AccessExclusiveLock);
	PG_RETURN_VOID();
}

/*
 * pgjq_init_materialized_srf sets fcinfo up to return a set in a
 * tuplestore, like core's InitMaterializedSRF (called SetSingleFuncCall in
 * 15 and missing in 14), so one code path serves every version.  The
 * tuplestore lives in the per-query context: tuplestore_putvalues copies
 * into it, so values may come straight from SPI memory.
 */
void
pgjq_init_materialized_srf(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcontext;
	TupleDesc	tupdesc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("materialize mode required, but it is not allowed in this context")));

	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(false, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(oldcontext);
}

/* pgjq_cmp_int64 is a qsort comparator for int64 */
int
pgjq_cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}
