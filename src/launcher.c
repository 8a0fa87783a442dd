/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The pgjq launcher: one process per cluster that starts a pgjq worker
 *	  for each database where pgjq is installed, and the shared slots
 *	  through which launcher, workers and backends see each other.
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
 * The slots: one per running worker, allocated by the launcher before it
 * registers the worker (the worker finds its slot by number and checks
 * the generation), and given back by the launcher once the worker has
 * gone.  Slot states move STARTING -> RUNNING -> ABSENT or EXITED -> FREE.
 *
 * Locking: launcher_lock (an LWLock of the "pgjq" tranche) guards the
 * whole LauncherShared struct.  Latches are set while holding it, so a
 * slot's latch pointer cannot go stale under the setter.
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
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "launcher.h"

PGDLLEXPORT void pgjq_launcher_main(Datum main_arg);

#define PGJQ_SCAN_SECONDS		5	/* between two reads of pg_database */
#define PGJQ_STARTING_TIMEOUT	60	/* a worker that never attached */
#define PGJQ_MAX_HOLDS			8	/* databases under DROP/ALTER DATABASE */

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_STARTING,				/* registered by the launcher, not attached */
	SLOT_RUNNING,				/* attached: pid and latch are set */
	SLOT_ABSENT,				/* the worker found no pgjq and exits */
	SLOT_EXITED					/* the worker has gone for another reason */
} SlotState;

typedef struct WorkerSlot
{
	Oid			dboid;
	uint32		generation;		/* tells a slot's successive workers apart */
	SlotState	state;
	pid_t		pid;			/* 0 unless RUNNING */
	Latch	   *latch;
	bool		recheck;		/* the extension changed: look at once */
	bool		old_schema;		/* waiting for ALTER EXTENSION UPDATE */
	TimestampTz started_at;
} WorkerSlot;

typedef struct HeldDatabase
{
	Oid			dboid;
	TimestampTz until;
} HeldDatabase;

typedef struct LauncherShared
{
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		rescan;			/* probe every database again */
	int			nprobes;
	Oid			probes[PGJQ_MAX_DATABASES];	/* databases to probe again */
	uint32		next_generation;
	HeldDatabase holds[PGJQ_MAX_HOLDS];
	WorkerSlot	slots[PGJQ_MAX_DATABASES];
} LauncherShared;

static LWLock *launcher_lock = NULL;
static LauncherShared *launcher = NULL;

/* the worker's own slot */
static int	my_slot = -1;

/* launcher-local: what it learnt of databases that have no running worker */
typedef struct KnownDb
{
	Oid			dboid;			/* hash key */
	bool		absent;			/* no pgjq there: leave it alone */
	bool		wanted;			/* probe asked for since the worker started */
	TimestampTz retry_at;		/* a worker failed: not before */
} KnownDb;

static HTAB *known = NULL;
static BackgroundWorkerHandle *handles[PGJQ_MAX_DATABASES];

Size
pgjq_launcher_shmem_size(void)
{
	return MAXALIGN(sizeof(LauncherShared));
}

void
pgjq_launcher_shmem_init(LWLock *lock)
{
	bool		found;

	launcher_lock = lock;
	launcher = ShmemInitStruct("pgjq launcher", sizeof(LauncherShared), &found);
	if (!found)
		memset(launcher, 0, sizeof(LauncherShared));
}

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

/* the running slot of a database, or NULL; caller holds the lock */
static WorkerSlot *
slot_of(Oid dboid)
{
	for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
		if (launcher->slots[i].state != SLOT_FREE && launcher->slots[i].dboid == dboid)
			return &launcher->slots[i];
	return NULL;
}

/* whether a database is held (DROP DATABASE and the like); caller locks */
static bool
held(Oid dboid, TimestampTz now)
{
	for (int i = 0; i < PGJQ_MAX_HOLDS; i++)
		if (launcher->holds[i].dboid == dboid && launcher->holds[i].until > now)
			return true;
	return false;
}

/*
 * pgjq_wake_database_worker sets the latch of the database's worker, if
 * one runs; committing producers call it (wakeup.c).
 */
void
pgjq_wake_database_worker(Oid dboid)
{
	WorkerSlot *slot;

	if (launcher == NULL)
		return;
	LWLockAcquire(launcher_lock, LW_SHARED);
	slot = slot_of(dboid);
	if (slot != NULL && slot->state == SLOT_RUNNING && slot->latch != NULL)
		SetLatch(slot->latch);
	LWLockRelease(launcher_lock);
}

/*
 * pgjq_extension_changed tells, after the commit of a CREATE, ALTER or
 * DROP EXTENSION pgjq, the database's worker to look at once, or the
 * launcher to start one.  Runs in a commit callback: must not fail.
 */
void
pgjq_extension_changed(Oid dboid)
{
	WorkerSlot *slot;

	if (launcher == NULL)
		return;
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	slot = slot_of(dboid);
	if (slot != NULL && slot->state == SLOT_RUNNING)
	{
		slot->recheck = true;
		if (slot->latch != NULL)
			SetLatch(slot->latch);
	}
	else
	{
		if (launcher->nprobes < PGJQ_MAX_DATABASES)
			launcher->probes[launcher->nprobes++] = dboid;
		else
			launcher->rescan = true;
		if (launcher->launcher_latch != NULL)
			SetLatch(launcher->launcher_latch);
	}
	LWLockRelease(launcher_lock);
}

/* pgjq_database_worker reports on a database's worker, for jq_worker_status */
PgjqWorkerStatus
pgjq_database_worker(Oid dboid, pid_t *pid)
{
	WorkerSlot *slot;
	PgjqWorkerStatus status = PGJQ_WORKER_NONE;

	*pid = 0;
	if (launcher == NULL)
		return status;
	LWLockAcquire(launcher_lock, LW_SHARED);
	slot = slot_of(dboid);
	if (slot != NULL)
	{
		*pid = slot->pid;
		if (slot->state == SLOT_STARTING)
			status = PGJQ_WORKER_STARTING;
		else if (slot->state == SLOT_RUNNING)
			status = slot->old_schema ? PGJQ_WORKER_OLD_SCHEMA : PGJQ_WORKER_RUNNING;
		else if (slot->state == SLOT_EXITED)
			status = PGJQ_WORKER_EXITED;
	}
	LWLockRelease(launcher_lock);
	return status;
}

/* pgjq_launcher_pid returns the launcher's pid, 0 when it does not run */
pid_t
pgjq_launcher_pid(void)
{
	pid_t		pid;

	if (launcher == NULL)
		return 0;
	LWLockAcquire(launcher_lock, LW_SHARED);
	pid = launcher->launcher_pid;
	LWLockRelease(launcher_lock);
	return pid;
}

/*
 * pgjq_hold_database keeps the launcher from starting a worker in the
 * database for the next seconds and returns the pid of the worker that
 * runs there now (0 when none), for the caller to stop (utility.c).
 */
pid_t
pgjq_hold_database(Oid dboid, int seconds)
{
	TimestampTz now = GetCurrentTimestamp();
	HeldDatabase *hold = NULL;
	WorkerSlot *slot;
	pid_t		pid = 0;

	if (launcher == NULL)
		return 0;
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	for (int i = 0; i < PGJQ_MAX_HOLDS; i++)
	{
		HeldDatabase *h = &launcher->holds[i];

		if (h->dboid == dboid || h->until <= now)
		{
			/* the database's own hold, or a free or expired one */
			if (hold == NULL || h->dboid == dboid)
				hold = h;
		}
	}
	if (hold != NULL)
	{
		hold->dboid = dboid;
		hold->until = TimestampTzPlusMilliseconds(now, seconds * 1000);
	}
	slot = slot_of(dboid);
	if (slot != NULL && slot->state == SLOT_RUNNING)
		pid = slot->pid;
	LWLockRelease(launcher_lock);
	return pid;
}

/* pgjq_release_database ends a hold and lets the launcher look again */
void
pgjq_release_database(Oid dboid)
{
	if (launcher == NULL)
		return;
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	for (int i = 0; i < PGJQ_MAX_HOLDS; i++)
		if (launcher->holds[i].dboid == dboid)
			launcher->holds[i].until = 0;
	if (launcher->nprobes < PGJQ_MAX_DATABASES)
		launcher->probes[launcher->nprobes++] = dboid;
	if (launcher->launcher_latch != NULL)
		SetLatch(launcher->launcher_latch);
	LWLockRelease(launcher_lock);
}

/*
 * Worker side.  pgjq_worker_detach gives the slot's process fields back
 * at exit; the launcher frees the slot itself.
 */
static void
pgjq_worker_detach(int code, Datum arg)
{
	WorkerSlot *slot = &launcher->slots[my_slot];

	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	if (slot->pid == MyProcPid)
	{
		slot->pid = 0;
		slot->latch = NULL;
		if (slot->state != SLOT_ABSENT)
			slot->state = SLOT_EXITED;
	}
	LWLockRelease(launcher_lock);
}

/*
 * pgjq_worker_attach claims the slot the launcher gave the worker; false
 * when the slot is no longer this worker's, or the database is held: the
 * worker then exits at once.
 */
bool
pgjq_worker_attach(int slotno, uint32 generation)
{
	WorkerSlot *slot;

	if (slotno < 0 || slotno >= PGJQ_MAX_DATABASES)
		return false;
	slot = &launcher->slots[slotno];
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	if (slot->state != SLOT_STARTING || slot->dboid != MyDatabaseId ||
		slot->generation != generation)
	{
		LWLockRelease(launcher_lock);
		return false;
	}
	if (held(MyDatabaseId, GetCurrentTimestamp()))
	{
		slot->state = SLOT_EXITED;
		LWLockRelease(launcher_lock);
		return false;
	}
	slot->state = SLOT_RUNNING;
	slot->pid = MyProcPid;
	slot->latch = MyLatch;
	slot->recheck = false;
	slot->old_schema = false;
	my_slot = slotno;
	LWLockRelease(launcher_lock);

	before_shmem_exit(pgjq_worker_detach, (Datum) 0);
	return true;
}

/*
 * pgjq_worker_set_state records what the worker found: no pgjq in its
 * database (it exits next), or a schema of another version.
 */
void
pgjq_worker_set_state(bool absent, bool old_schema)
{
	WorkerSlot *slot = &launcher->slots[my_slot];

	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	if (absent)
		slot->state = SLOT_ABSENT;
	slot->old_schema = old_schema;
	LWLockRelease(launcher_lock);
}

/* pgjq_worker_recheck tells, once, that the extension changed */
bool
pgjq_worker_recheck(void)
{
	WorkerSlot *slot = &launcher->slots[my_slot];
	bool		recheck;

	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	recheck = slot->recheck;
	slot->recheck = false;
	LWLockRelease(launcher_lock);
	return recheck;
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
	int			slotno = -1;
	uint32		generation;

	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	for (int i = 0; i < PGJQ_MAX_DATABASES && slotno < 0; i++)
		if (launcher->slots[i].state == SLOT_FREE)
			slotno = i;
	if (slotno < 0)
	{
		LWLockRelease(launcher_lock);
		ereport(LOG,
				(errmsg("pgjq launcher: no free worker slot for database \"%s\"", c->name),
				 errdetail("pgjq runs workers in at most %d databases at once.",
						   PGJQ_MAX_DATABASES)));
		return false;
	}
	generation = ++launcher->next_generation;
	memset(&launcher->slots[slotno], 0, sizeof(WorkerSlot));
	launcher->slots[slotno].dboid = c->dboid;
	launcher->slots[slotno].generation = generation;
	launcher->slots[slotno].state = SLOT_STARTING;
	launcher->slots[slotno].started_at = GetCurrentTimestamp();
	LWLockRelease(launcher_lock);

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
		LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
		launcher->slots[slotno].state = SLOT_FREE;
		LWLockRelease(launcher_lock);
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
		WorkerSlot *slot = &launcher->slots[i];
		pid_t		pid;
		bool		gone = false;
		bool		absent = false;

		LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
		if (slot->state == SLOT_ABSENT && slot->pid == 0)
			gone = absent = true;
		else if (slot->state == SLOT_EXITED)
			gone = true;
		else if (slot->state == SLOT_STARTING)
		{
			/* a worker that failed before attaching (its database dropped) */
			if (handles[i] != NULL)
				gone = GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED;
			else
				gone = TimestampDifferenceExceeds(slot->started_at, now,
												  PGJQ_STARTING_TIMEOUT * 1000);
		}
		if (gone)
		{
			KnownDb    *k = know(slot->dboid);

			k->absent = absent && !k->wanted;
			k->retry_at = absent ? 0 :
				TimestampTzPlusMilliseconds(now, PGJQ_RESTART_SECONDS * 1000);
			k->wanted = false;
			if (k->retry_at != 0 && (next_retry == 0 || k->retry_at < next_retry))
				next_retry = k->retry_at;
			if (k->absent)
				elog(DEBUG1, "pgjq launcher: pgjq is not installed in database %u",
					 slot->dboid);
			slot->state = SLOT_FREE;
			slot->dboid = InvalidOid;
		}
		LWLockRelease(launcher_lock);
		if (gone && handles[i] != NULL)
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
	bool		any;

	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	any = launcher->rescan || launcher->nprobes > 0;
	if (launcher->rescan)
	{
		HASH_SEQ_STATUS status;
		KnownDb    *k;

		hash_seq_init(&status, known);
		while ((k = hash_seq_search(&status)) != NULL)
			want(k->dboid);
		for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
			if (launcher->slots[i].state != SLOT_FREE)
				want(launcher->slots[i].dboid);
	}
	for (int i = 0; i < launcher->nprobes; i++)
		want(launcher->probes[i]);
	launcher->nprobes = 0;
	launcher->rescan = false;
	LWLockRelease(launcher_lock);
	return any;
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
		bool		skip;

		k = hash_search(known, &c->dboid, HASH_FIND, NULL);
		if (k != NULL && k->absent)
			continue;
		if (k != NULL && k->retry_at > now)
		{
			next = Min(next, k->retry_at);
			continue;
		}
		LWLockAcquire(launcher_lock, LW_SHARED);
		skip = slot_of(c->dboid) != NULL || held(c->dboid, now);
		LWLockRelease(launcher_lock);
		if (skip)
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

static void
pgjq_launcher_detach(int code, Datum arg)
{
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	if (launcher->launcher_pid == MyProcPid)
	{
		launcher->launcher_pid = 0;
		launcher->launcher_latch = NULL;
	}
	LWLockRelease(launcher_lock);
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

	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	if (launcher->launcher_pid != 0 && launcher->launcher_pid != MyProcPid &&
		kill(launcher->launcher_pid, 0) == 0)
	{
		LWLockRelease(launcher_lock);
		ereport(LOG, (errmsg("pgjq launcher is already running, exiting")));
		proc_exit(0);
	}
	launcher->launcher_pid = MyProcPid;
	launcher->launcher_latch = MyLatch;
	LWLockRelease(launcher_lock);
	before_shmem_exit(pgjq_launcher_detach, (Datum) 0);
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
			LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
			launcher->rescan = true;
			LWLockRelease(launcher_lock);
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
