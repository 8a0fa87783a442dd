/*-------------------------------------------------------------------------
 *
 * longpoll.c
 *	  Waiting for work or for a result in one call: jq_dequeue's wait
 *	  (lease.c, with the helpers here), jq_await, and the procedures
 *	  jq_wait_dequeue and jq_wait_result that wait outside any snapshot.
 *
 * A session waits in a slot of waiters.c and is woken by the commit that
 * gives it what it waits for; it then looks again, and sleeps again with
 * its place in line when another session was quicker.
 *
 * What a wait holds.  A function runs inside its statement, and the
 * statement's snapshot holds back the database's xmin horizon (vacuum)
 * for as long as it waits: the functions jq_dequeue(wait => ...) and
 * jq_await cannot avoid that.  They do release their table locks between
 * looks (each look runs in a subtransaction, rolled back when it found
 * nothing and wrote nothing), so that a counter rebuild's SHARE lock, or
 * vacuum's truncation, is not held off by a fleet of waiting workers.  The
 * procedures jq_wait_dequeue and jq_wait_result, CALLed outside a
 * transaction block, commit after each look and sleep with no snapshot, no
 * lock and no transaction id: they hold back nothing.  Inside a
 * transaction block a procedure cannot commit and waits as the functions
 * do.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/longpoll.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "nodes/parsenodes.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "longpoll.h"
#include "waiters.h"

PG_FUNCTION_INFO_V1(pgjq_wait_dequeue);
PG_FUNCTION_INFO_V1(pgjq_await);
PG_FUNCTION_INFO_V1(pgjq_wait_result);

/*
 * pgjq_wait_usecs reads and checks a wait or timeout argument: NULL is no
 * wait; otherwise between 0 and wait_seconds_max.
 */
int64
pgjq_wait_usecs(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	Interval   *wait;
	double		seconds;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return 0;
	wait = PG_GETARG_INTERVAL_P(argno);
	seconds = wait->time / (double) USECS_PER_SEC +
		(double) wait->day * SECS_PER_DAY +
		(double) wait->month * DAYS_PER_MONTH * SECS_PER_DAY;
	if (!(seconds >= 0 && seconds <= PGJQ_LIMIT_WAIT_SECONDS_MAX))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 0 and %d seconds", argname,
						PGJQ_LIMIT_WAIT_SECONDS_MAX),
				 errdetail("Got %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(wait)))),
				 errhint("A wait returns as soon as there is something to return; call again when it times out.")));
	return (int64) (seconds * USECS_PER_SEC);
}

/*
 * pgjq_wait_check_isolation refuses to wait where the snapshot cannot
 * change: a REPEATABLE READ or SERIALIZABLE transaction would never see
 * what it waits for.
 */
void
pgjq_wait_check_isolation(const char *what)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s cannot wait in a REPEATABLE READ or SERIALIZABLE transaction", what),
				 errdetail("The transaction's snapshot would not see what it waits for."),
				 errhint("Wait in a READ COMMITTED transaction, or outside a transaction block.")));
}

/*
 * pgjq_look_releasing_locks runs one look in a subtransaction: one that
 * found nothing and wrote nothing is rolled back, which releases the locks
 * it took; otherwise it is kept.  Allocations stay in the caller's memory
 * context.  An error rolls the subtransaction back before it goes on up,
 * as PL/pgSQL's exception blocks do: the caller's transaction then aborts
 * as if the look had run in it.
 */
bool
pgjq_look_releasing_locks(PgjqLook look, void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		found = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		found = look(arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ReThrowError(edata);
	}
	PG_END_TRY();
	if (!found && !TransactionIdIsValid(GetCurrentTransactionIdIfAny()))
		RollbackAndReleaseCurrentSubTransaction();
	else
		ReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return found;
}

/* pgjq_wait_cleanup ends a wait that an error or exit interrupts */
void
pgjq_wait_cleanup(int code, Datum arg)
{
	pgjq_wait_done(true);
}

/* nonatomic tells whether a procedure may commit: CALLed outside a block */
static bool
nonatomic(FunctionCallInfo fcinfo)
{
	return fcinfo->context != NULL && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
}

/* procedure_result returns a procedure's one output argument as its row */
static Datum
procedure_result(FunctionCallInfo fcinfo, Datum value, bool isnull)
{
	TupleDesc	tupdesc;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE ||
		tupdesc->natts != 1)
		elog(ERROR, "pgjq: a waiting procedure must have one output argument");
	tupdesc = BlessTupleDesc(tupdesc);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, &value, &isnull));
}

/*
 * A procedure's look: one statement through SPI, with a new snapshot,
 * that returns one row: the value to return, and what says whether it is
 * what the caller waits for (jobs: how many were leased; a result: the
 * job's state).  The value is copied out of SPI when it is.
 */
typedef struct SpiLook
{
	const char *sql;
	SPIPlanPtr *plan;			/* where the statement's kept plan goes */
	int			nargs;
	Oid		   *argtypes;
	Datum	   *args;
	Datum		value;
	bool		isnull;
	int64		count;			/* jobs leased */
} SpiLook;

/*
 * The plans of the looks, prepared once per session: a look may run many
 * times a second (plan cache invalidation replans them when needed).
 */
static SPIPlanPtr dequeue_plan = NULL;
static SPIPlanPtr dequeue_lease_plan = NULL;
static SPIPlanPtr result_plan = NULL;
static SPIPlanPtr await_plan = NULL;

/* kept_plan prepares sql into *plan and keeps it, the first time */
static SPIPlanPtr
kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "pgjq: could not prepare \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "pgjq: could not keep the plan of \"%s\"", sql);
		*plan = p;
	}
	return *plan;
}

/* spi_row runs the look's statement and returns its row */
static HeapTuple
spi_row(SpiLook *l)
{
	if (SPI_execute_plan(kept_plan(l->plan, l->sql, l->nargs, l->argtypes), l->args,
						 NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "pgjq: a waiting look returned no row");
	return SPI_tuptable->vals[0];
}

static void
keep_value(SpiLook *l, HeapTuple row)
{
	Datum		value = SPI_getbinval(row, SPI_tuptable->tupdesc, 1, &l->isnull);

	l->value = l->isnull ? (Datum) 0 : SPI_datumTransfer(value, false, -1);
}

/* look_for_jobs: found when jq_dequeue leased jobs */
static bool
look_for_jobs(void *arg)
{
	SpiLook    *l = (SpiLook *) arg;
	HeapTuple	row = spi_row(l);
	bool		isnull;

	l->count = DatumGetInt64(SPI_getbinval(row, SPI_tuptable->tupdesc, 2, &isnull));
	if (l->count == 0)
		return false;
	keep_value(l, row);
	return true;
}

static bool ended_state(const char *name);

/* look_for_end: found when the job has ended, or is unknown */
static bool
look_for_end(void *arg)
{
	SpiLook    *l = (SpiLook *) arg;
	HeapTuple	row = spi_row(l);
	char	   *state = SPI_getvalue(row, SPI_tuptable->tupdesc, 2);

	keep_value(l, row);
	return state == NULL || ended_state(state);
}

/*
 * wait_by_spi looks, and until the look finds what it waits for or until
 * passes, sleeps and looks again: committing before each sleep when it
 * may, in a subtransaction of each look when it may not.  Returns whether
 * it found it.
 */
static bool
wait_by_spi(FunctionCallInfo fcinfo, PgjqLook look, SpiLook *l, TimestampTz until,
			bool wait)
{
	bool		may_commit = nonatomic(fcinfo);
	bool		found;

	SPI_connect_ext(may_commit ? SPI_OPT_NONATOMIC : 0);
	for (;;)
	{
		found = may_commit || !wait ? look(l) : pgjq_look_releasing_locks(look, l);
		if (found || !wait)
			break;
		if (may_commit)
			pgjq_spi_commit();	/* no snapshot, lock or xid while asleep */
		if (!pgjq_wait_sleep(until))
			break;
	}
	SPI_finish();
	return found;
}

/*
 * CALL jq.jq_wait_dequeue(queue, max_jobs, lease_seconds, wait, jobs):
 * jq_dequeue's long poll as a procedure that holds nothing while it
 * waits.  jobs comes back as a JSON array of jq_dequeue's rows, empty
 * when the wait ended with none.  Each look is a call of jq.jq_dequeue
 * (with its checks and rights), which joins this session to the queue's
 * waiters the first time, before its snapshot.
 */
Datum
pgjq_wait_dequeue(PG_FUNCTION_ARGS)
{
	int64		wait = pgjq_wait_usecs(fcinfo, 3, "wait");
	Oid			argtypes[3] = {TEXTOID, INT4OID, INT4OID};
	Datum		args[3];
	SpiLook		look;
	bool		found;
	int32		max_jobs;

	/* jq_dequeue's checks, here without its statement as the error's context */
	(void) pgjq_dequeue_args(fcinfo, 0, &max_jobs);
	if (wait > 0)
		pgjq_wait_check_isolation("jq_wait_dequeue");

	args[0] = PointerGetDatum(PG_GETARG_TEXT_PP(0));
	args[1] = Int32GetDatum(max_jobs);
	args[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	look.sql = PG_ARGISNULL(2) ?
		"SELECT pg_catalog.jsonb_agg(d), pg_catalog.count(*) FROM jq.jq_dequeue($1, $2) d" :
		"SELECT pg_catalog.jsonb_agg(d), pg_catalog.count(*) FROM jq.jq_dequeue($1, $2, $3) d";
	look.plan = PG_ARGISNULL(2) ? &dequeue_plan : &dequeue_lease_plan;
	look.nargs = PG_ARGISNULL(2) ? 2 : 3;
	look.argtypes = argtypes;
	look.args = args;
	look.count = 0;

	if (wait > 0)
		pgjq_wait_arm(max_jobs);
	PG_ENSURE_ERROR_CLEANUP(pgjq_wait_cleanup, (Datum) 0);
	{
		found = wait_by_spi(fcinfo, look_for_jobs, &look,
							GetCurrentTimestamp() + wait, wait > 0);
	}
	PG_END_ENSURE_ERROR_CLEANUP(pgjq_wait_cleanup, (Datum) 0);
	pgjq_wait_done(look.count >= max_jobs);

	if (!found)
		look.value = DirectFunctionCall1(jsonb_in, CStringGetDatum("[]"));
	return procedure_result(fcinfo, look.value, false);
}

/* ended_state tells whether a state (by name) is one a job ends in */
static bool
ended_state(const char *name)
{
#define PGJQ_ENDED_STATE(c, n, table, counter) \
	if ((table) != PGJQ_IN_JOB && strcmp(name, (n)) == 0) \
		return true;
	PGJQ_STATES(PGJQ_ENDED_STATE)
#undef PGJQ_ENDED_STATE
	return false;
}

/*
 * A look of jq_await: jq.jq_result's row, through SPI with a new
 * snapshot.  Found when there is no row (an unknown job never ends) or
 * the job has ended.
 */
typedef struct ResultLook
{
	int64		job_id;
	MemoryContext cxt;
	HeapTuple	row;			/* in cxt; NULL: no such job */
	TupleDesc	desc;
} ResultLook;

static bool
look_for_result(void *arg)
{
	ResultLook *l = (ResultLook *) arg;
	Oid			argtype = INT8OID;
	Datum		job_id = Int64GetDatum(l->job_id);
	bool		ended = true;

	SPI_connect();
	if (SPI_execute_plan(kept_plan(&await_plan, "SELECT * FROM jq.jq_result($1)", 1, &argtype),
						 &job_id, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "pgjq: could not read the result of job " INT64_FORMAT, l->job_id);
	if (l->row != NULL)
		heap_freetuple(l->row);
	l->row = NULL;
	if (SPI_processed == 1)
	{
		MemoryContext old = MemoryContextSwitchTo(l->cxt);
		char	   *state;

		l->row = heap_copytuple(SPI_tuptable->vals[0]);
		if (l->desc == NULL)
			l->desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
		MemoryContextSwitchTo(old);
		state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
							 SPI_fnumber(SPI_tuptable->tupdesc, "state"));
		ended = state != NULL && ended_state(state);
	}
	SPI_finish();
	return ended;
}

/*
 * jq.jq_await(job_id, timeout) returns jq_result's row as soon as the job
 * has ended (succeeded, dead, cancelled, expired), or when timeout passes
 * with the job's state then; no row for an unknown job, at once.  Woken
 * by the commit that ends the job.
 */
Datum
pgjq_await(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		timeout;
	TimestampTz until;
	ResultLook	look;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job_id must not be null")));
	timeout = pgjq_wait_usecs(fcinfo, 1, "timeout");
	pgjq_init_materialized_srf(fcinfo);
	if (timeout > 0)
		pgjq_wait_check_isolation("jq_await");
	until = GetCurrentTimestamp() + timeout;

	look.job_id = PG_GETARG_INT64(0);
	look.cxt = CurrentMemoryContext;
	look.row = NULL;
	look.desc = NULL;
	if (timeout > 0)
		pgjq_wait_for_job(look.job_id);
	PG_ENSURE_ERROR_CLEANUP(pgjq_wait_cleanup, (Datum) 0);
	{
		while (!pgjq_look_releasing_locks(look_for_result, &look) &&
			   timeout > 0 && pgjq_wait_sleep(until))
			;
	}
	PG_END_ENSURE_ERROR_CLEANUP(pgjq_wait_cleanup, (Datum) 0);
	pgjq_wait_done(false);

	if (look.row != NULL)
		tuplestore_puttuple(rsinfo->setResult, look.row);
	return (Datum) 0;
}

/*
 * CALL jq.jq_wait_result(job_id, timeout, result): jq_await as a procedure
 * that holds nothing while it waits; result is jq_result's row as JSON,
 * NULL for an unknown job.
 */
Datum
pgjq_wait_result(PG_FUNCTION_ARGS)
{
	int64		timeout = pgjq_wait_usecs(fcinfo, 1, "timeout");
	Oid			argtype = INT8OID;
	Datum		job_id;
	SpiLook		look;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job_id must not be null")));
	if (timeout > 0)
		pgjq_wait_check_isolation("jq_wait_result");
	job_id = PG_GETARG_DATUM(0);

	/* one row: NULLs for an unknown job */
	look.sql = "SELECT pg_catalog.to_jsonb(r), r.state "
		"FROM (SELECT) one LEFT JOIN jq.jq_result($1) r ON true";
	look.plan = &result_plan;
	look.nargs = 1;
	look.argtypes = &argtype;
	look.args = &job_id;
	look.isnull = true;

	if (timeout > 0)
		pgjq_wait_for_job(DatumGetInt64(job_id));
	PG_ENSURE_ERROR_CLEANUP(pgjq_wait_cleanup, (Datum) 0);
	{
		(void) wait_by_spi(fcinfo, look_for_end, &look,
						   GetCurrentTimestamp() + timeout, timeout > 0);
	}
	PG_END_ENSURE_ERROR_CLEANUP(pgjq_wait_cleanup, (Datum) 0);
	pgjq_wait_done(false);

	return procedure_result(fcinfo, look.value, look.isnull);
}
