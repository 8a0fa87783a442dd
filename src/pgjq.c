/*-------------------------------------------------------------------------
 *
 * pgjq.c
 *	  Module magic, GUCs and initialisation of pgjq, SQL-native job queues.
 *
 * The SQL API works whether or not pgjq is in shared_preload_libraries.
 * Preloading adds the shared memory for commit-time wakeups and one
 * background worker per database in pgjq.database (lease reclaim,
 * promotion of due jobs, coalesced NOTIFY); jq_worker_status() tells which
 * case a session is in.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/pgjq.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/xlog.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(pgjq_worker_status);

static char *pgjq_databases = NULL;

/*
 * _PG_init runs when a backend first loads pgjq, or in the postmaster when
 * pgjq is preloaded.  The reloadable GUCs are defined in every case, so
 * SHOW and ALTER SYSTEM know them; shared memory and the workers only
 * exist with preloading.
 */
void
_PG_init(void)
{
	/*
	 * A PGC_POSTMASTER variable can only be defined while preloading; a
	 * backend that loads pgjq later would be terminated for trying.
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("pgjq.database",
								   "Databases whose queues the pgjq background worker serves.",
								   "A comma-separated list of database names; one worker per database.",
								   &pgjq_databases,
								   "postgres",
								   PGC_POSTMASTER,
								   GUC_SUPERUSER_ONLY,
								   NULL, NULL, NULL);
	DefineCustomIntVariable("pgjq.naptime",
							"Longest sleep of the pgjq worker between passes.",
							"Bounds how late an expired lease is reclaimed or a due job promoted.",
							&pgjq_naptime,
							1000, 10, 60000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pgjq.notify_interval",
							"Shortest time between two NOTIFYs of one queue.",
							"Wakeups arriving within this window are coalesced into one NOTIFY.",
							&pgjq_notify_interval,
							10, 0, 10000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pgjq.reclaim_batch",
							"Jobs the pgjq worker reclaims or promotes per transaction.",
							NULL,
							&pgjq_reclaim_batch,
							1000, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pgjq.stats_interval",
							"Time between two samples of queue depth into jq.stats_history.",
							"Alerts and the purge of expired results run at the same pace.",
							&pgjq_stats_interval,
							10, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pgjq.history_retention",
							"How long depth samples stay in jq.stats_history.",
							NULL,
							&pgjq_history_retention,
							7 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pgjq.purge_batch_size",
							"Rows of each kind the purge of expired results deletes per transaction.",
							NULL,
							&pgjq_purge_batch,
							1000, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgjq");

	if (!process_shared_preload_libraries_in_progress)
		return;
	pgjq_shmem_init();
	/* pg_upgrade's server must not run queue work */
	if (!IsBinaryUpgrade)
		pgjq_register_workers(pgjq_databases);
}

/*
 * jq_worker_status() reports whether pgjq is preloaded and whether a
 * worker serves the current database: without them the queue works, but
 * nobody reclaims expired leases, promotes due jobs or sends wakeups.
 */
Datum
pgjq_worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	pid_t		pid = pgjq_worker_pid(MyDatabaseId);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	values[0] = BoolGetDatum(pgjq_shmem_available());
	values[1] = CStringGetTextDatum(pgjq_databases ? pgjq_databases : "");
	if (pid != 0)
		values[2] = Int32GetDatum((int32) pid);
	else
		nulls[2] = true;
	if (!pgjq_shmem_available())
		values[3] = CStringGetTextDatum("pgjq is not in shared_preload_libraries: no lease reclaim, no promotion of due jobs, no wakeups");
	else if (pid == 0 && RecoveryInProgress())
		values[3] = CStringGetTextDatum("this server is a standby: the pgjq worker starts after promotion");
	else if (pid == 0)
		values[3] = CStringGetTextDatum("no pgjq worker serves this database: add it to pgjq.database and restart");
	else
		values[3] = CStringGetTextDatum("ok");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
