/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The pgjq launcher: one process per cluster that starts a pgjq worker
 *	  for each database where pgjq is installed.
 *
 * pg_extension is a per-database catalog, so the launcher, which connects
 * to no database, cannot see where pgjq is installed.  It reads
 * pg_database and starts a worker in every database that allows
 * connections (and is in pgjq.database, when that allow-list is set); a
 * worker that finds no pgjq in its database reports so and exits, and the
 * launcher leaves that database alone until pgjq is created there.  A
 * CREATE EXTENSION pgjq tells the launcher at its commit (utility.c), so
 * the worker starts within moments, and so does a CREATE DATABASE (the new
 * database may be a copy of one with pgjq); anything else, such as a
 * database restored from a backup, is found at the next scan of
 * pg_database, every PGJQ_SCAN_SECONDS.  The worker exits at DROP
 * EXTENSION, and is stopped before DROP DATABASE and the other commands
 * that need a database to themselves (utility.c).  A worker that fails is
 * started again after PGJQ_RESTART_SECONDS.  Templates are skipped: a
 * worker connected to a template would make CREATE DATABASE fail.
 *
 * The workers' slots and the requests of backends are in shared memory
 * (slots.c); what the launcher learnt of databases without a running
 * worker is its own.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "launcher.h"

PGDLLEXPORT void pgjq_launcher_main(Datum main_arg);

#define PGJQ_SCAN_SECONDS		5	/* between two reads of pg_database */

/* what the launcher learnt of databases that have no running worker */
typedef struct KnownDb
{
	Oid			dboid;			/* hash key */
	bool		absent;			/* no pgjq there: leave it alone */
	bool		wanted;			/* probe asked for since the worker started */
	TimestampTz retry_at;		/* a worker failed: not before */
} KnownDb;

static HTAB *known = NULL;
static BackgroundWorkerHandle *handles[PGJQ_MAX_DATABASES];

/*
 * pgjq_launcher_register registers the launcher, from _PG_init while pgjq
 * is preloaded.  It starts once recovery has finished, so nothing runs on
 * a standby, and everything starts after a promotion.
 */
void
pgjq_launcher_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = PGJQ_RESTART_SECONDS;
	strlcpy(worker.bgw_library_name, "pgjq", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "pgjq_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "pgjq launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "pgjq launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/*
 * pgjq_database_allowed tells whether pgjq.database lets a worker serve
 * the database: an empty list allows every one.  The list was checked
 * when it was set (pgjq.c).
 */
bool
pgjq_database_allowed(const char *dbname)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	bool		allowed = false;

	if (pgjq_databases == NULL || pgjq_databases[0] == '\0')
		return true;
	raw = pstrdup(pgjq_databases);
	if (!SplitGUCList(raw, ',', &names))
		return false;
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), dbname) == 0)
			allowed = true;
	list_free(names);
	pfree(raw);
	return allowed;
}

/*
 * Launcher side.  A database the launcher may start a worker in.
 */
typedef struct Candidate
{
	Oid			dboid;
	char		name[NAMEDATALEN];
} Candidate;

/*
 * list_databases reads pg_database, as autovacuum does, and returns the
 * databases that a worker may serve: connections allowed, no template, not
 * half-dropped, and in pgjq.database when that is set.
 */
static List *
list_databases(MemoryContext cxt)
{
	List	   *result = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;
		Candidate  *c;

		if (!db->datallowconn || db->datistemplate ||
			db->datconnlimit == DATCONNLIMIT_INVALID_DB ||
			!pgjq_database_allowed(NameStr(db->datname)))
			continue;
		old = MemoryContextSwitchTo(cxt);
		c = palloc(sizeof(Candidate));
		c->dboid = db->oid;
		strlcpy(c->name, NameStr(db->datname), NAMEDATALEN);
		result = lappend(result, c);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return result;
}

/*
 * start_worker registers a worker for a database in a free slot; false
 * when no slot or no background worker slot is free (try later).
 */
static bool
start_worker(const Candidate *c)
{
	BackgroundWorker worker;
	uint32		generation;
	int			slotno = pgjq_slot_allocate(c->dboid, &generation);

	if (slotno < 0)
	{
		ereport(LOG,
				(errmsg("pgjq launcher: no free worker slot for database \"%s\"", c->name),
				 errdetail("pgjq runs workers in at most %d databases at once.",
						   PGJQ_MAX_DATABASES)));
		return false;
	}

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts */
	strlcpy(worker.bgw_library_name, "pgjq", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "pgjq_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "pgjq worker for database %s", c->name);
	strlcpy(worker.bgw_type, "pgjq worker", BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &c->dboid, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), &generation, sizeof(uint32));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handles[slotno]))
	{
		pgjq_slot_release(slotno);
		handles[slotno] = NULL;
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("pgjq launcher: no background worker slot for database \"%s\"",
						c->name),
				 errhint("Raise max_worker_processes.")));
		return false;
	}
	return true;
}

static KnownDb *
know(Oid dboid)
{
	bool		found;
	KnownDb    *k = hash_search(known, &dboid, HASH_ENTER, &found);

	if (!found)
	{
		k->absent = false;
		k->wanted = false;
		k->retry_at = 0;
	}
	return k;
}

/*
 * reap_slots gives back the slots of workers that have gone, and learns
 * from them: a database without pgjq is left alone until pgjq is created
 * there (unless that was asked for while its worker was looking, which
 * may have been before the CREATE EXTENSION committed); one whose worker
 * failed is tried again after a pause.  Returns when the next retry is
 * due, or 0.
 */
static TimestampTz
reap_slots(TimestampTz now)
{
	TimestampTz next_retry = 0;

	for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
	{
		PgjqStopped stopped = PGJQ_STOPPED_UNKNOWN;
		PgjqSlotOutcome outcome;
		KnownDb    *k;
		Oid			dboid;
		pid_t		pid;

		if (handles[i] != NULL)
			stopped = GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED ?
				PGJQ_STOPPED_YES : PGJQ_STOPPED_NO;
		outcome = pgjq_slot_reap(i, stopped, now, &dboid);
		if (outcome != PGJQ_SLOT_ABSENT && outcome != PGJQ_SLOT_FAILED)
			continue;

		k = know(dboid);
		k->absent = outcome == PGJQ_SLOT_ABSENT && !k->wanted;
		k->retry_at = outcome == PGJQ_SLOT_ABSENT ? 0 :
			TimestampTzPlusMilliseconds(now, PGJQ_RESTART_SECONDS * 1000);
		k->wanted = false;
		if (k->retry_at != 0 && (next_retry == 0 || k->retry_at < next_retry))
			next_retry = k->retry_at;
		if (k->absent)
			elog(DEBUG1, "pgjq launcher: pgjq is not installed in database %u", dboid);
		if (handles[i] != NULL)
		{
			pfree(handles[i]);
			handles[i] = NULL;
		}
	}
	return next_retry;
}

/* want marks a database to be probed, whatever the launcher knew of it */
static void
want(Oid dboid)
{
	KnownDb    *k = know(dboid);

	k->absent = false;
	k->retry_at = 0;
	k->wanted = true;
}

/*
 * take_requests applies what backends asked for since the last pass: a
 * database where pgjq was created (or a hold ended) is probed again, or
 * every database after pgjq.database changed.
 */
static bool
take_requests(void)
{
	Oid		   *dboids;
	bool		rescan;
	int			n = pgjq_take_requests(&dboids, &rescan);

	if (rescan)
	{
		HASH_SEQ_STATUS status;
		KnownDb    *k;

		hash_seq_init(&status, known);
		while ((k = hash_seq_search(&status)) != NULL)
			want(k->dboid);
	}
	for (int i = 0; i < n; i++)
		want(dboids[i]);
	pfree(dboids);
	return rescan || n > 0;
}

/*
 * start_workers starts a worker in every candidate database that has none
 * and is not known to lack pgjq; returns when it should look again.
 */
static TimestampTz
start_workers(List *candidates, TimestampTz now)
{
	TimestampTz next = TimestampTzPlusMilliseconds(now, PGJQ_SCAN_SECONDS * 1000);
	ListCell   *lc;
	HASH_SEQ_STATUS status;
	KnownDb    *k;

	/* forget databases that are gone or no longer allowed */
	hash_seq_init(&status, known);
	while ((k = hash_seq_search(&status)) != NULL)
	{
		bool		listed = false;

		foreach(lc, candidates)
			if (((Candidate *) lfirst(lc))->dboid == k->dboid)
				listed = true;
		if (!listed)
			hash_search(known, &k->dboid, HASH_REMOVE, NULL);
	}

	foreach(lc, candidates)
	{
		Candidate  *c = lfirst(lc);

		k = hash_search(known, &c->dboid, HASH_FIND, NULL);
		if (k != NULL && k->absent)
			continue;
		if (k != NULL && k->retry_at > now)
		{
			next = Min(next, k->retry_at);
			continue;
		}
		if (pgjq_database_taken(c->dboid, now))
			continue;
		if (!start_worker(c))
		{
			k = know(c->dboid);
			k->retry_at = TimestampTzPlusMilliseconds(now, PGJQ_RESTART_SECONDS * 1000);
			next = Min(next, k->retry_at);
		}
	}
	return next;
}

/*
 * pgjq_launcher_main is the launcher's entry point.  It connects to no
 * database: it reads only the shared catalog pg_database.
 */
void
pgjq_launcher_main(Datum main_arg)
{
	MemoryContext loop_context;
	HASHCTL		info;
	TimestampTz next_scan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("pgjq launcher");

	if (!pgjq_launcher_attach())
	{
		ereport(LOG, (errmsg("pgjq launcher is already running, exiting")));
		proc_exit(0);
	}
	ereport(LOG, (errmsg("pgjq launcher started")));

	info.keysize = sizeof(Oid);
	info.entrysize = sizeof(KnownDb);
	known = hash_create("pgjq known databases", 64, &info, HASH_ELEM | HASH_BLOBS);
	loop_context = AllocSetContextCreate(TopMemoryContext, "pgjq launcher loop",
										 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz now;
		TimestampTz retry;
		long		timeout;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* pgjq.database may have changed */
			pgjq_request_rescan();
		}

		now = GetCurrentTimestamp();
		retry = reap_slots(now);
		if (retry != 0 && retry < next_scan)
			next_scan = retry;
		if (take_requests() || now >= next_scan)
			next_scan = start_workers(list_databases(loop_context), now);

		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_scan);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
