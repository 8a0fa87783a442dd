/*-------------------------------------------------------------------------
 *
 * statements.c
 *	  The catalogue of every SQL statement pgjq's C code runs: its text,
 *	  its parameter types and the names of its result columns, and one
 *	  checked way to prepare and run each.
 *
 * Each statement is prepared once per backend on first use, kept with
 * SPI_keepplan and reused, so the hot path costs an executor run and no
 * parse or plan.  The plans are generic: they never depend on the
 * parameter values, and that keeps the planner from probing the ends of
 * the job indexes (get_actual_variable_range), which is slow exactly when
 * a queue has just churned through many jobs and left dead index entries.
 *
 * The C functions that run these statements are called through SQL
 * functions declared with search_path = pg_catalog, pg_temp, so the first
 * prepare resolves every unqualified operator and function there; the plan
 * cache keeps that search_path and uses it again when a plan is rebuilt.
 * Every pgjq object is schema-qualified besides.
 *
 * Job states in the text come from pgjq.h (PGJQ_SQL_STATE).  The lease
 * and the finish of a job, the worker's turn, are not here: hotpath.c
 * makes them without the executor.  The cold transitions (promotion,
 * reclaim, failure, purge) are SQL functions of their own; the statements
 * that call them are here, so the worker and the hot path run no SQL text
 * of their own.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/statements.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "catalog/pg_type.h"
#include "utils/guc.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"

#include "statements.h"

/*
 * The fence: a lease is current when the job is leased and the token is
 * the one its dequeue handed out.  The functions that fail or extend a
 * lease check it through this predicate (LOCK_LEASE); the hot path's
 * finish checks the same in C (lease_is_current in hotpath.c).  j is a
 * table alias with its dot, or "".
 */
#define SQL_LEASE_IS_CURRENT(j, id, token) \
	" " j "id = " id " AND " j "lease_token = " token \
	" AND " j "state = " PGJQ_SQL_STATE(LEASED)

#define MAX_ARGS 10
#define MAX_COLUMNS 11

typedef struct PgjqStmt
{
	const char *sql;
	int			nargs;
	Oid			argtypes[MAX_ARGS];
	const char *columns[MAX_COLUMNS];	/* result columns, NULL-terminated */
	bool		index_scans;	/* planned without sequential or bitmap scans */
} PgjqStmt;

static const PgjqStmt catalogue[PGJQ_NUM_STMTS] = {
	[PGJQ_STMT_ENQUEUE_BATCH] = {
		/*
		 * One row per payload.  $7 holds explicit ids (keyed batches) or is
		 * NULL; then ids come from the sequence in the order the rows are
		 * inserted, which is the ORDER BY below, so ascending ids follow
		 * the order of the payloads.
		 */
		"INSERT INTO jq.job (id, queue_id, state, priority, run_at, enqueued_at, payload)"
		" SELECT COALESCE(u.i, pg_catalog.nextval('jq.job_id_seq')),"
		"        $1, $2, $3, $4, $5, u.p"
		"   FROM ROWS FROM (pg_catalog.unnest($6), pg_catalog.unnest($7))"
		"        WITH ORDINALITY AS u(p, i, n)"
		"  ORDER BY u.n"
		" RETURNING id",
		7, {INT4OID, CHAROID, INT2OID, TIMESTAMPTZOID, TIMESTAMPTZOID, JSONBARRAYOID,
		INT8ARRAYOID},
		{"id"}
	},
	[PGJQ_STMT_ENQUEUE_BATCH_KEYS] = {
		/*
		 * ENQUEUE_BATCH with each job's key in $8, deadline in $9 and
		 * cost in $10 ($9, $10 NULL: none), a 0.4.0 schema
		 */
		"INSERT INTO jq.job (id, queue_id, state, priority, run_at, enqueued_at, payload, key,"
		"                    deadline, cost)"
		" SELECT COALESCE(u.i, pg_catalog.nextval('jq.job_id_seq')),"
		"        $1, $2, $3, $4, $5, u.p, u.k, u.d, u.c"
		"   FROM ROWS FROM (pg_catalog.unnest($6), pg_catalog.unnest($7),"
		"                   pg_catalog.unnest($8), pg_catalog.unnest($9),"
		"                   pg_catalog.unnest($10))"
		"        WITH ORDINALITY AS u(p, i, k, d, c, n)"
		"  ORDER BY u.n"
		" RETURNING id",
		10, {INT4OID, CHAROID, INT2OID, TIMESTAMPTZOID, TIMESTAMPTZOID, JSONBARRAYOID,
		INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, NUMERICARRAYOID},
		{"id"}
	},
	[PGJQ_STMT_NEXT_IDS] = {
		/* $1 fresh job ids, ascending */
		"SELECT pg_catalog.nextval('jq.job_id_seq') AS id"
		"  FROM pg_catalog.generate_series(1, $1)",
		1, {INT4OID},
		{"id"}
	},
	[PGJQ_STMT_KEY_CLAIM] = {
		/*
		 * A row when the key was free and is now ours.  A concurrent
		 * enqueue of the same key waits here, in the unique index, until
		 * the first commits or aborts.
		 */
		"INSERT INTO jq.idempotency_key (queue_id, key, job_id, created_at)"
		" VALUES ($1, $2, pg_catalog.nextval('jq.job_id_seq'), $3)"
		" ON CONFLICT (queue_id, key) DO NOTHING"
		" RETURNING job_id",
		3, {INT4OID, TEXTOID, TIMESTAMPTZOID},
		{"job_id"}
	},
	[PGJQ_STMT_KEY_LOOKUP] = {
		/*
		 * The key's job, and whether the key still holds (its job is
		 * unfinished, or it is within idempotency_window).  Locks the key
		 * row, so that two resubmissions of an expired key cannot both
		 * create a job.
		 */
		"SELECT k.job_id,"
		"       k.created_at + q.idempotency_window > $3"
		"       OR EXISTS (SELECT FROM jq.job j WHERE j.id = k.job_id) AS live"
		"  FROM jq.idempotency_key k JOIN jq.queue q ON q.queue_id = k.queue_id"
		" WHERE k.queue_id = $1 AND k.key = $2"
		"   FOR UPDATE OF k",
		3, {INT4OID, TEXTOID, TIMESTAMPTZOID},
		{"job_id", "live"}
	},
	[PGJQ_STMT_KEY_REASSIGN] = {
		/* an expired key, locked by KEY_LOOKUP, now names a new job */
		"UPDATE jq.idempotency_key"
		"   SET job_id = pg_catalog.nextval('jq.job_id_seq'), created_at = $3"
		" WHERE queue_id = $1 AND key = $2"
		" RETURNING job_id",
		3, {INT4OID, TEXTOID, TIMESTAMPTZOID},
		{"job_id"}
	},
	[PGJQ_STMT_BATCH_LOOKUP] = {
		"SELECT queue_id FROM jq.batch WHERE batch_id = $1",
		1, {INT8OID},
		{"queue_id"}
	},
	[PGJQ_STMT_BATCH_ADD] = {
		/* a resubmitted (idempotent) job may already be a member */
		"INSERT INTO jq.batch_job (batch_id, job_id)"
		" SELECT $1, u.id FROM pg_catalog.unnest($2) AS u(id)"
		" ON CONFLICT DO NOTHING",
		2, {INT8OID, INT8ARRAYOID},
		{NULL}
	},
	[PGJQ_STMT_COMPLETE_FAILS] = {
		/*
		 * jq_ack_dequeue's failures: the elements with an error, each by
		 * jq.jq_fail, the one failure transition: $1 job ids, $2 lease
		 * tokens, $4 errors ($3 unused)
		 */
		"SELECT count(jq.jq_fail(u.id, u.token, u.error)) AS result"
		"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
		"                  pg_catalog.unnest($4)) AS u(id, token, error)"
		" WHERE u.error IS NOT NULL",
		4, {INT8ARRAYOID, INT8ARRAYOID, JSONBARRAYOID, TEXTARRAYOID},
		{"result"}, true
	},
	[PGJQ_STMT_LOCK_LEASE] = {
		/* a row, locked, when the lease is current (jq_fail, jq_extend) */
		"SELECT queue_id FROM jq.job"
		" WHERE" SQL_LEASE_IS_CURRENT("", "$1", "$2")
		"   FOR UPDATE",
		2, {INT8OID, INT8OID},
		{"queue_id"}, true
	},
	[PGJQ_STMT_PREPARED_XACTS] = {
		"SELECT count(*) AS prepared FROM pg_catalog.pg_prepared_xacts"
		" WHERE database = pg_catalog.current_database()",
		0, {},
		{"prepared"}
	},
	[PGJQ_STMT_LOCK_FOR_REBUILD] = {
		"SELECT jq.lock_for_rebuild($1) AS locked",
		1, {INT4OID},
		{"locked"}
	},
	[PGJQ_STMT_COUNT_JOBS] = {
		/*
		 * The jobs of every state, from the tables; the counter rebuild
		 * runs it under SHARE locks on the three tables.
		 */
		"SELECT queue_id, priority, state, count(*) AS jobs FROM jq.job GROUP BY 1, 2, 3"
		" UNION ALL"
		" SELECT queue_id, priority, " PGJQ_SQL_STATE(DEAD) "::\"char\", count(*)"
		"   FROM jq.dead_letter GROUP BY 1, 2"
		" UNION ALL"
		" SELECT queue_id, priority, state, count(*) FROM jq.job_result GROUP BY 1, 2, 3",
		0, {},
		{"queue_id", "priority", "state", "jobs"}
	},
	[PGJQ_STMT_COUNT_JOBS_KEYS] = {
		/* COUNT_JOBS by key as well (a schema with keys) */
		"SELECT queue_id, priority, state, count(*) AS jobs, key FROM jq.job GROUP BY 1, 2, 3, 5"
		" UNION ALL"
		" SELECT queue_id, priority, " PGJQ_SQL_STATE(DEAD) "::\"char\", count(*), key"
		"   FROM jq.dead_letter GROUP BY 1, 2, 5"
		" UNION ALL"
		" SELECT queue_id, priority, state, count(*), key FROM jq.job_result GROUP BY 1, 2, 3, 5",
		0, {},
		{"queue_id", "priority", "state", "jobs", "key"}
	},
	[PGJQ_STMT_KEY_POLICIES] = {
		/* the keys' policies, for the rebuild */
		"SELECT queue_id, key, version, weight, max_in_flight, max_queued, ordered,"
		"       rate_requests, rate_cost::float8 AS rate_cost,"
		"       (extract(epoch FROM coalesce(rate_period, '1 minute')) * 1000000)::bigint"
		"         AS rate_period"
		"  FROM jq.key_policy",
		0, {},
		{"queue_id", "key", "version", "weight", "max_in_flight", "max_queued", "ordered",
		"rate_requests", "rate_cost", "rate_period"}
	},
	[PGJQ_STMT_PROMOTE_DUE] = {
		/* $1 a queue, or NULL for every queue */
		"SELECT jq.promote_due($1, $2) AS result",
		2, {INT4OID, INT4OID},
		{"result"}, true
	},
	[PGJQ_STMT_RECLAIM] = {
		"SELECT jq.reclaim_expired_leases($1) AS result",
		1, {INT4OID},
		{"result"}, true
	},
	[PGJQ_STMT_EXPIRE] = {
		/* a 0.4.0 schema */
		"SELECT jq.expire_deadlines($1) AS result",
		1, {INT4OID},
		{"result"}, true
	},
	[PGJQ_STMT_REBUILD_COUNTERS] = {
		"SELECT jq.rebuild_counters($1) AS result",
		1, {INT4OID},
		{"result"}
	},
	[PGJQ_STMT_NEXT_DEADLINE] = {
		"SELECT jq.next_deadline() AS result",
		0, {},
		{"result"}, true
	},
	[PGJQ_STMT_NOTIFY_QUEUES] = {
		/* $1 queue ids, or NULL for every queue */
		"SELECT jq.notify_queues($1) AS result",
		1, {INT4ARRAYOID},
		{"result"}
	},
	[PGJQ_STMT_SAMPLE_STATS] = {
		"SELECT jq.sample_stats(pg_catalog.make_interval(secs => $1)) AS result",
		1, {INT4OID},
		{"result"}
	},
	[PGJQ_STMT_ROLLUP_USAGE] = {
		"SELECT jq.rollup_usage() AS result",
		0, {},
		{"result"}
	},
	[PGJQ_STMT_CHECK_ALERTS] = {
		"SELECT jq.check_alerts() AS result",
		0, {},
		{"result"}
	},
	[PGJQ_STMT_PURGE_EXPIRED] = {
		"SELECT jq.purge_expired($1) AS result",
		1, {INT4OID},
		{"result"}
	},
	[PGJQ_STMT_COMPACT] = {
		"SELECT jq.compact($1) AS result",
		1, {INT4OID},
		{"result"}
	},
};

static SPIPlanPtr plans[PGJQ_NUM_STMTS];

/*
 * check_columns makes sure a freshly prepared statement returns the
 * columns the catalogue names, in that order, so the C code that reads
 * them by the names in statements.h reads what it thinks it reads.
 */
static void
check_columns(PgjqStmtId id, SPIPlanPtr plan)
{
	const PgjqStmt *stmt = &catalogue[id];
	List	   *sources = SPI_plan_get_plan_sources(plan);
	TupleDesc	desc;
	int			ncolumns = 0;

	while (ncolumns < MAX_COLUMNS && stmt->columns[ncolumns] != NULL)
		ncolumns++;
	if (list_length(sources) != 1)
		elog(ERROR, "pgjq: statement %d is not a single statement", (int) id);
	desc = ((CachedPlanSource *) linitial(sources))->resultDesc;
	if ((desc == NULL ? 0 : desc->natts) != ncolumns)
		elog(ERROR, "pgjq: statement %d returns %d columns, the catalogue names %d",
			 (int) id, desc == NULL ? 0 : desc->natts, ncolumns);
	for (int i = 0; i < ncolumns; i++)
		if (strcmp(NameStr(TupleDescAttr(desc, i)->attname), stmt->columns[i]) != 0)
			elog(ERROR, "pgjq: column %d of statement %d is \"%s\", the catalogue says \"%s\"",
				 i + 1, (int) id, NameStr(TupleDescAttr(desc, i)->attname),
				 stmt->columns[i]);
}

/*
 * pgjq_stmt_plan returns the kept plan of a statement, preparing it on
 * first use.  The caller must be connected to SPI.
 */
SPIPlanPtr
pgjq_stmt_plan(PgjqStmtId id)
{
	const PgjqStmt *stmt;
	SPIPlanPtr	plan;

	Assert(id >= 0 && id < PGJQ_NUM_STMTS);
	if (plans[id] != NULL)
		return plans[id];

	stmt = &catalogue[id];
	plan = SPI_prepare_cursor(stmt->sql, stmt->nargs, (Oid *) stmt->argtypes,
							  CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "pgjq: SPI_prepare failed for statement %d: %s",
			 (int) id, SPI_result_code_string(SPI_result));
	check_columns(id, plan);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "pgjq: SPI_keepplan failed for statement %d", (int) id);
	plans[id] = plan;
	return plan;
}

/*
 * pgjq_stmt_execute runs a statement and checks its SPI return code; any
 * other code is a bug, not a user error, hence elog.
 */
void
pgjq_stmt_execute(PgjqStmtId id, Datum *values, const char *nulls,
				  int expected_rc)
{
	int			rc;

	if (catalogue[id].index_scans)
	{
		/*
		 * The hot statements read a few rows through the job indexes.  After
		 * a burst the indexes are large (VACUUM does not shrink them) while
		 * the table is small, and a generic plan then prefers to read the
		 * whole table and sort it: four times slower for every dequeue,
		 * measured, and a scan whose cost grows with the table again.  Any
		 * planning that this execution does (the first, or again after an
		 * invalidation: ANALYZE, DDL) is done without those paths.
		 */
		int			save_nestlevel = NewGUCNestLevel();

		(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		rc = SPI_execute_plan(pgjq_stmt_plan(id), values, nulls, false, 0);
		AtEOXact_GUC(true, save_nestlevel);
	}
	else
		rc = SPI_execute_plan(pgjq_stmt_plan(id), values, nulls, false, 0);
	if (rc != expected_rc)
		elog(ERROR, "pgjq: statement %d returned %s, expected %s", (int) id,
			 SPI_result_code_string(rc), SPI_result_code_string(expected_rc));
}

/*
 * pgjq_stmt_execute_latest runs a read-only statement with the latest
 * snapshot instead of the transaction's: what was last committed, also
 * in a repeatable read transaction.
 */
void
pgjq_stmt_execute_latest(PgjqStmtId id, Datum *values, const char *nulls)
{
	int			rc;

	rc = SPI_execute_snapshot(pgjq_stmt_plan(id), values, nulls,
							  GetLatestSnapshot(), InvalidSnapshot, true, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pgjq: statement %d returned %s", (int) id,
			 SPI_result_code_string(rc));
}

/* pgjq_stmt_value reads a column of a row of the last statement's result */
Datum
pgjq_stmt_value(uint64 row, int column, bool *isnull)
{
	Assert(row < SPI_processed);
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 column, isnull);
}

/*
 * pgjq_stmt_call runs a statement that calls one SQL function and returns
 * that function's value.
 */
Datum
pgjq_stmt_call(PgjqStmtId id, Datum *values, const char *nulls, bool *isnull)
{
	pgjq_stmt_execute(id, values, nulls, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "pgjq: statement %d returned " UINT64_FORMAT " rows",
			 (int) id, SPI_processed);
	return pgjq_stmt_value(0, CALL_RESULT, isnull);
}
