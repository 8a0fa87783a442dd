/*-------------------------------------------------------------------------
 *
 * pgjq.c
 *	  Module magic, GUCs and initialisation of pgjq, SQL-native job queues.
 *
 * The SQL API works whether or not pgjq is in shared_preload_libraries.
 * Preloading adds the shared memory for commit-time wakeups and counters,
 * and the pgjq launcher, which runs a worker in every database where pgjq
 * is installed (lease reclaim, promotion of due jobs, coalesced NOTIFY,
 * statistics); jq_worker_status() tells a session which case it is in.
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
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/varlena.h"

#include "keys.h"
#include "launcher.h"
#include "shmem.h"
#include "utility.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(pgjq_worker_status);

/* GUCs: the defaults are documented in README.md */
char	   *pgjq_databases = NULL;
int			pgjq_naptime = 1000;
int			pgjq_notify_interval = 10;
int			pgjq_reclaim_batch = 1000;
int			pgjq_stats_interval = 10;
int			pgjq_history_retention = 7 * 24 * 3600;
int			pgjq_purge_batch = 1000;
bool		pgjq_use_scan_bounds = true;
bool		pgjq_compact = true;

/*
 * check_databases refuses a pgjq.database that is not a list of database
 * names, with the reason, rather than a worker that silently serves
 * nothing.
 */
static bool
check_databases(char **newval, void **extra, GucSource source)
{
	char	   *raw = pstrdup(*newval);
	List	   *names;
	ListCell   *lc;

	if (!SplitGUCList(raw, ',', &names))
	{
		GUC_check_errdetail("List syntax is invalid.");
		GUC_check_errhint("Give database names separated by commas, or an empty string for every database.");
		pfree(raw);
		return false;
	}
	foreach(lc, names)
	{
		const char *name = lfirst(lc);

		if (strlen(name) >= NAMEDATALEN)
		{
			GUC_check_errdetail("Database name \"%s\" is longer than %d bytes.",
								name, NAMEDATALEN - 1);
			list_free(names);
			pfree(raw);
			return false;
		}
	}
	list_free(names);
	pfree(raw);
	return true;
}

/*
 * _PG_init runs when a backend first loads pgjq, or in the postmaster when
 * pgjq is preloaded.  The GUCs are defined in every case, so SHOW and
 * ALTER SYSTEM know them, but pgjq.max_keys, which sizes shared memory (a
 * PGC_POSTMASTER setting can only be defined while preloading); shared
 * memory, the launcher and the DDL hook only exist with preloading.
 */
void
_PG_init(void)
{
	DefineCustomStringVariable("pgjq.database",
							   "Databases the pgjq workers may serve.",
							   "A comma-separated allow-list of database names; empty means every database where pgjq is installed.",
							   &pgjq_databases,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_databases, NULL, NULL);
	DefineCustomIntVariable("pgjq.naptime",
							"Longest sleep of a pgjq worker between passes.",
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
							"Jobs a pgjq worker reclaims or promotes per transaction.",
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
	DefineCustomBoolVariable("pgjq.scan_bounds",
							 "Starts each scan of a job index at its bound, past the jobs that left it.",
							 "Off scans dequeue lanes, due jobs and expired leases from the start of their index, as pgjq 0.3 did: slow after many jobs without VACUUM.",
							 &pgjq_use_scan_bounds,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("pgjq.compact",
							 "Lets pgjq workers give the space of bloated pgjq tables and indexes back.",
							 "Every pgjq.stats_interval the worker calls jq.compact(): it rebuilds an index of jq.job or jq.job_result grown past 1.5 times its baseline and more than half free, and closes the tail of a bloated jq.job_result to inserts (moving its rows while acks are few) so that vacuum can truncate it.",
							 &pgjq_compact,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);
	/*
	 * Sizes shared memory: only while preloading, as core allows, and
	 * before the prefix is reserved, which drops the placeholder that holds
	 * the configured value.
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("pgjq.max_keys",
								"Job keys that flow control can keep in shared memory at once.",
								"Counted over every database: keys with jobs, reservations or a policy.  Keys holding nothing are forgotten to make room; a new key that still finds none makes its enqueue fail.",
								&pgjq_max_keys,
								10000,
								100,
								1000000,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgjq");

	if (!process_shared_preload_libraries_in_progress)
		return;
	pgjq_shmem_init();
	pgjq_utility_init();
	/* pg_upgrade's server must not run queue work */
	if (!IsBinaryUpgrade)
		pgjq_launcher_register();
}

/*
 * worker_status says what serves, or why nothing serves, the queues of
 * this database: without a worker the queues work, but nobody reclaims
 * expired leases, promotes due jobs or sends wakeups.
 */
static const char *
worker_status(PgjqWorkerStatus status)
{
	if (!pgjq_shmem_available())
		return "pgjq is not in shared_preload_libraries: no lease reclaim, no promotion of due jobs, no wakeups";
	if (RecoveryInProgress())
		return "this server is a standby: the pgjq workers start after promotion";
	if (!pgjq_database_allowed(get_database_name(MyDatabaseId)))
		return "this database is not in pgjq.database: add it there and reload the configuration";
	switch (status)
	{
		case PGJQ_WORKER_RUNNING:
			return "ok";
		case PGJQ_WORKER_OLD_SCHEMA:
			return "the pgjq worker waits for ALTER EXTENSION pgjq UPDATE: the schema is older than the library";
		case PGJQ_WORKER_STARTING:
			return "the pgjq worker of this database is starting";
		case PGJQ_WORKER_EXITED:
			return "the pgjq worker of this database stopped; the launcher starts it again within seconds";
		case PGJQ_WORKER_NONE:
			break;
	}
	if (pgjq_launcher_pid() == 0)
		return "the pgjq launcher is not running: see the server log";
	return "no pgjq worker runs in this database at the moment; the launcher starts one within seconds";
}

/*
 * jq_worker_status() reports whether pgjq is preloaded and whether a
 * worker serves the current database.
 */
Datum
pgjq_worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	pid_t		pid;
	PgjqWorkerStatus status = pgjq_database_worker(MyDatabaseId, &pid);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	values[0] = BoolGetDatum(pgjq_shmem_available());
	values[1] = CStringGetTextDatum(pgjq_databases ? pgjq_databases : "");
	if (pid != 0)
		values[2] = Int32GetDatum((int32) pid);
	else
		nulls[2] = true;
	values[3] = CStringGetTextDatum(worker_status(status));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
