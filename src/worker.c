/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The pgjq worker of one database: it runs the cold transitions on
 *	  time and sends the coalesced wakeups.
 *
 * The launcher (launcher.c) starts one worker per database where pgjq is
 * installed.  The worker runs no SQL of its own: each step calls the SQL
 * function that owns a transition, the same one the regression tests call
 * (statements.c names them):
 *   1. jq.rebuild_counters, when the counters are not valid;
 *   2. jq.reclaim_expired_leases, in batches, until a batch comes back short;
 *   3. jq.promote_due, for every queue;
 *   4. jq.notify_queues, for queues that got ready jobs, at most once per
 *      queue per pgjq.notify_interval (wakeup.c);
 *   5. every pgjq.stats_interval, jq.sample_stats, jq.check_alerts and
 *      jq.purge_expired.
 * Each step is a short transaction of its own, so the worker never holds
 * back the xmin horizon of the job table.  Between passes it sleeps on its
 * latch until the next deadline: pgjq.naptime, the next lease expiry or
 * scheduled job (jq.next_deadline), or a NOTIFY that falls due.
 * Committing transactions set the latch (wakeup.c).
 *
 * Each step first checks the extension, and holds a lock on it so that a
 * DROP EXTENSION waits for the step.  When pgjq is gone the worker exits
 * and the launcher leaves the database alone; when the schema is of
 * another version than this library (between installing a new package and
 * ALTER EXTENSION pgjq UPDATE) it waits, as the functions it calls may not
 * exist yet.
 *
 * An ERROR ends the process; the postmaster logs it and the launcher
 * starts a new worker after PGJQ_RESTART_SECONDS.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "keys.h"
#include "launcher.h"
#include "statements.h"
#include "wakeup.h"

PGDLLEXPORT void pgjq_worker_main(Datum main_arg);

/* reset every loop; the steps return to it after their transactions */
static MemoryContext loop_context = NULL;

/* the database's name, for log lines and the error context */
static char *dbname = NULL;

/* whether the last look found a schema of another version */
static bool old_schema = false;

/* whether the worker has logged its start (it exits quietly before) */
static bool started = false;

typedef enum ExtensionState
{
	EXT_ABSENT,
	EXT_OTHER_VERSION,
	EXT_CURRENT
} ExtensionState;

/*
 * extension_state looks pgjq up in this database, inside the caller's
 * transaction, and locks it against a concurrent DROP EXTENSION until the
 * transaction ends.
 */
static ExtensionState
extension_state(void)
{
	Oid			extoid = get_extension_oid("pgjq", true);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	ExtensionState state = EXT_ABSENT;

	if (!OidIsValid(extoid))
		return EXT_ABSENT;
	LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessShareLock);

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		version = heap_getattr(tup, Anum_pg_extension_extversion,
										   RelationGetDescr(rel), &isnull);
		bool		current = !isnull &&
			strcmp(TextDatumGetCString(version), PGJQ_VERSION) == 0;

		if (!current && !old_schema)
			ereport(LOG,
					(errmsg("pgjq worker for database \"%s\" waits for ALTER EXTENSION pgjq UPDATE",
							dbname),
					 errdetail("The schema is version %s, the library version %s.",
							   isnull ? "?" : TextDatumGetCString(version), PGJQ_VERSION)));
		state = current ? EXT_CURRENT : EXT_OTHER_VERSION;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return state;
}

static void
end_step(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgjq_process_completed_notifies();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	/* CommitTransactionCommand leaves us in TopMemoryContext */
	MemoryContextSwitchTo(loop_context);
}

/*
 * begin_step and end_step bracket one short transaction of a pass, the
 * way core's worker_spi does.  begin_step returns false, having closed the
 * transaction, when the schema is not this library's; it ends the worker
 * when pgjq is gone from the database.
 */
static bool
begin_step(const char *what)
{
	ExtensionState state;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, what);

	state = extension_state();
	if (state == EXT_CURRENT)
	{
		if (old_schema)
			pgjq_worker_set_state(false, false);
		old_schema = false;
		return true;
	}

	end_step();
	if (state == EXT_ABSENT)
	{
		pgjq_worker_set_state(true, false);
		ereport(started ? LOG : DEBUG1,
				(errmsg("pgjq worker for database \"%s\" exiting: pgjq is not installed there",
						dbname)));
		proc_exit(0);
	}
	if (!old_schema)
		pgjq_worker_set_state(false, true);
	old_schema = true;
	return false;
}

/* call runs one step that calls a function taking one int4 and returns it */
static int64
call(PgjqStmtId id, const char *what, int32 arg, bool *ran)
{
	Datum		values[1];
	bool		isnull;
	Datum		result;

	*ran = begin_step(what);
	if (!*ran)
		return 0;
	values[0] = Int32GetDatum(arg);
	result = pgjq_stmt_call(id, values, NULL, &isnull);
	end_step();
	return isnull ? 0 : DatumGetInt32(result);
}

/*
 * maintain runs the transitions that are due: the counters, expired
 * leases, jobs past their deadline, due scheduled jobs.  Returns when the next lease expires or the
 * next scheduled job falls due, 0 when there is neither.
 */
static TimestampTz
maintain(void)
{
	bool		ran;
	int64		n;
	TimestampTz due = 0;

	/*
	 * Counters that are not valid (after a start, a crash, CREATE
	 * EXTENSION) are rebuilt at once; the rebuild gives up quickly when
	 * writers hold the tables, and the next pass tries again.
	 */
	if (pgjq_counters_need_rebuild())
	{
		Datum		values[1];
		bool		isnull;

		if (!begin_step("pgjq: rebuild counters"))
			return 0;
		values[0] = Int32GetDatum(2000);
		if (DatumGetBool(pgjq_stmt_call(PGJQ_STMT_REBUILD_COUNTERS, values, NULL, &isnull)))
			elog(DEBUG1, "pgjq: counters rebuilt");
		end_step();
	}

	do
	{
		n = call(PGJQ_STMT_RECLAIM, "pgjq: reclaim expired leases",
				 pgjq_reclaim_batch, &ran);
		if (n > 0)
			elog(DEBUG1, "pgjq: reclaimed " INT64_FORMAT " expired leases", n);
		CHECK_FOR_INTERRUPTS();
	} while (ran && n >= pgjq_reclaim_batch);

	/* jobs not started by their deadline end expired */
	do
	{
		n = call(PGJQ_STMT_EXPIRE, "pgjq: expire jobs past their deadline",
				 pgjq_reclaim_batch, &ran);
		if (n > 0)
			elog(DEBUG1, "pgjq: expired " INT64_FORMAT " jobs past their deadline", n);
		CHECK_FOR_INTERRUPTS();
	} while (ran && n >= pgjq_reclaim_batch);

	if (begin_step("pgjq: promote due jobs"))
	{
		Datum		values[2];
		char		nulls[2] = {'n', ' '};
		bool		isnull;

		values[1] = Int32GetDatum(pgjq_reclaim_batch);
		(void) pgjq_stmt_call(PGJQ_STMT_PROMOTE_DUE, values, nulls, &isnull);
		end_step();
	}

	if (begin_step("pgjq: next deadline"))
	{
		bool		isnull;
		Datum		d = pgjq_stmt_call(PGJQ_STMT_NEXT_DEADLINE, NULL, NULL, &isnull);
		TimestampTz budget;

		if (!isnull)
			due = DatumGetTimestampTz(d);

		/*
		 * Rate limits: wake the workers of queues whose budget is back, and
		 * look again when the next one comes back (src/keys.c)
		 */
		budget = pgjq_keys_budget_wakes();
		if (budget != 0 && (due == 0 || budget < due))
			due = budget;
		end_step();
	}
	return due;
}

/*
 * notify sends the NOTIFYs that the coalescing window allows, in one
 * transaction, and returns when the next owed one falls due (0: none).
 */
static TimestampTz
notify(void)
{
	int32	   *ids;
	int			n;
	TimestampTz next_due;

	pgjq_wakeup_collect();
	if (pgjq_wakeup_take_due(GetCurrentTimestamp(), &ids, &n, &next_due) &&
		begin_step("pgjq: notify"))
	{
		Datum		values[1];
		char		nulls[1] = {' '};
		Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
		bool		isnull;

		/*
		 * A notification is a hint, lost with a crash anyway: its commit
		 * need not wait for the WAL flush (170 us here), which would delay
		 * every wakeup by that much.
		 */
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
		for (int i = 0; i < n; i++)
			elems[i] = Int32GetDatum(ids[i]);
		if (n < 0)
			nulls[0] = 'n';		/* every queue */
		else
			values[0] = PointerGetDatum(construct_array(elems, n, INT4OID, sizeof(int32),
														true, TYPALIGN_INT));
		(void) pgjq_stmt_call(PGJQ_STMT_NOTIFY_QUEUES, values, nulls, &isnull);
		end_step();
	}
	return next_due;
}

/*
 * periodic samples the counters into jq.stats_history, raises and clears
 * alerts, purges expired results, dead letters and keys, in batches of
 * pgjq.purge_batch_size, and gives bloated space back (jq.compact).
 */
static void
periodic(void)
{
	bool		ran;
	int			rounds = 0;

	if (begin_step("pgjq: sample statistics and check alerts"))
	{
		Datum		values[1];
		bool		isnull;

		values[0] = Int32GetDatum(pgjq_history_retention);
		(void) pgjq_stmt_call(PGJQ_STMT_SAMPLE_STATS, values, NULL, &isnull);
		(void) pgjq_stmt_call(PGJQ_STMT_CHECK_ALERTS, NULL, NULL, &isnull);
		end_step();
	}
	if (begin_step("pgjq: roll up usage"))
	{
		bool		isnull;

		(void) pgjq_stmt_call(PGJQ_STMT_ROLLUP_USAGE, NULL, NULL, &isnull);
		end_step();
	}
	while (call(PGJQ_STMT_PURGE_EXPIRED, "pgjq: purge expired results",
				pgjq_purge_batch, &ran) > 0 && ++rounds < 100)
		CHECK_FOR_INTERRUPTS();

	/*
	 * Space back after a burst or a held snapshot: one index rebuild or one
	 * batch of moved result rows per transaction, so that each holds its
	 * locks briefly.
	 */
	rounds = 0;
	while (pgjq_compact &&
		   call(PGJQ_STMT_COMPACT, "pgjq: compact", pgjq_purge_batch * 10, &ran) > 0 &&
		   ++rounds < 20)
		CHECK_FOR_INTERRUPTS();
}

/* worker_errcontext names the worker and its database in every error */
static void
worker_errcontext(void *arg)
{
	errcontext("pgjq worker for database \"%s\"", dbname ? dbname : "?");
}

/*
 * pgjq_worker_main is the worker's entry point: main_arg is its slot,
 * bgw_extra holds the database's OID and the slot's generation.
 */
void
pgjq_worker_main(Datum main_arg)
{
	Oid			dboid;
	uint32		generation;
	ErrorContextCallback errcallback;
	TimestampTz next_maintenance = 0;
	TimestampTz next_periodic = 0;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	memcpy(&generation, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(uint32));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("pgjq worker");
	/* the worker runs as superuser: resolve names in pg_catalog only */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	if (!pgjq_worker_attach(DatumGetInt32(main_arg), generation))
		proc_exit(0);

	loop_context = AllocSetContextCreate(TopMemoryContext, "pgjq worker loop",
										 ALLOCSET_DEFAULT_SIZES);
	StartTransactionCommand();
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();
	MemoryContextSwitchTo(loop_context);

	errcallback.callback = worker_errcontext;
	errcallback.arg = NULL;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	/* a worker in a database without pgjq exits here, quietly */
	if (begin_step("pgjq: check the extension"))
		end_step();
	ereport(LOG,
			(errmsg("pgjq worker started for database \"%s\"", dbname)));
	started = true;

	for (;;)
	{
		TimestampTz wake_at;
		TimestampTz notify_due;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			next_maintenance = 0;	/* intervals may have changed */
			if (!pgjq_database_allowed(dbname))
			{
				ereport(LOG,
						(errmsg("pgjq worker for database \"%s\" exiting: the database is no longer in pgjq.database",
								dbname)));
				proc_exit(0);
			}
		}
		if (pgjq_worker_recheck())
			next_maintenance = 0;	/* the extension changed: look now */

		/*
		 * A latch set by committing producers costs only the NOTIFY, sent
		 * before any table work that is due: the table work waits for its
		 * own deadline, and a listener must not wait for it.
		 */
		notify_due = notify();
		if (GetCurrentTimestamp() >= next_maintenance)
		{
			TimestampTz due = maintain();

			next_maintenance = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   pgjq_naptime);

			/*
			 * A deadline already past means rows the pass had to skip
			 * (locked by a worker acking or extending, or by a prepared
			 * transaction) or a lease that expired a moment ago: look again
			 * soon, but never spin.
			 */
			if (due != 0 && due <= GetCurrentTimestamp())
				due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  Min(pgjq_naptime, 100));
			if (due != 0 && due < next_maintenance)
				next_maintenance = due;
		}
		/* and what the table work made ready (promoted, reclaimed) */
		notify_due = notify();
		if (GetCurrentTimestamp() >= next_periodic)
		{
			periodic();
			next_periodic = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														pgjq_stats_interval * 1000);
		}

		MemoryContextSwitchTo(loop_context);
		wake_at = Min(next_maintenance, next_periodic);
		if (notify_due != 0)
			wake_at = Min(wake_at, notify_due);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
															 wake_at), 1),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
