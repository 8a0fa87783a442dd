/*-------------------------------------------------------------------------
 *
 * slots.c
 *	  The shared state through which the pgjq launcher, the per-database
 *	  workers and the backends see each other: one slot per running
 *	  worker, the launcher's latch, requests to look at a database, and
 *	  databases held by DDL that needs them to itself.
 *
 * A slot is allocated by the launcher before it registers a worker (the
 * worker finds its slot by number and checks the generation), and given
 * back by the launcher once the worker has gone.  Slot states move
 * STARTING -> RUNNING -> ABSENT or EXITED -> FREE.
 *
 * Locking: launcher_lock (an LWLock of the "pgjq" tranche) guards the
 * whole LauncherShared struct.  Latches are set while holding it, so a
 * slot's latch pointer cannot go stale under the setter.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/slots.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "launcher.h"

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
 * ask_launcher asks the launcher to look at a database again (every
 * database, when the requests are full) and wakes it; caller holds the
 * lock exclusively.
 */
static void
ask_launcher(Oid dboid)
{
	if (launcher->nprobes < PGJQ_MAX_DATABASES)
		launcher->probes[launcher->nprobes++] = dboid;
	else
		launcher->rescan = true;
	if (launcher->launcher_latch != NULL)
		SetLatch(launcher->launcher_latch);
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
		ask_launcher(dboid);
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
	ask_launcher(dboid);
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
 * Launcher side.  pgjq_launcher_attach records the launcher's latch, so
 * that backends can wake it; false when another launcher runs.
 */
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

bool
pgjq_launcher_attach(void)
{
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	if (launcher->launcher_pid != 0 && launcher->launcher_pid != MyProcPid &&
		kill(launcher->launcher_pid, 0) == 0)
	{
		LWLockRelease(launcher_lock);
		return false;
	}
	launcher->launcher_pid = MyProcPid;
	launcher->launcher_latch = MyLatch;
	LWLockRelease(launcher_lock);
	before_shmem_exit(pgjq_launcher_detach, (Datum) 0);
	return true;
}

/* pgjq_request_rescan asks the launcher to probe every database again */
void
pgjq_request_rescan(void)
{
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	launcher->rescan = true;
	LWLockRelease(launcher_lock);
}

/*
 * pgjq_take_requests hands the launcher the databases to probe again
 * (palloc'd), and clears them.  With *rescan, every database is to be
 * probed again; the databases that have a slot are among *dboids then.
 */
int
pgjq_take_requests(Oid **dboids, bool *rescan)
{
	int			n = 0;

	*dboids = palloc(sizeof(Oid) * 2 * PGJQ_MAX_DATABASES);
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	*rescan = launcher->rescan;
	for (int i = 0; i < launcher->nprobes; i++)
		(*dboids)[n++] = launcher->probes[i];
	if (launcher->rescan)
		for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
			if (launcher->slots[i].state != SLOT_FREE)
				(*dboids)[n++] = launcher->slots[i].dboid;
	launcher->nprobes = 0;
	launcher->rescan = false;
	LWLockRelease(launcher_lock);
	return n;
}

/*
 * pgjq_slot_allocate takes a free slot for a worker about to be started
 * in the database; -1 when none is free.
 */
int
pgjq_slot_allocate(Oid dboid, uint32 *generation)
{
	int			slotno = -1;

	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	for (int i = 0; i < PGJQ_MAX_DATABASES && slotno < 0; i++)
		if (launcher->slots[i].state == SLOT_FREE)
			slotno = i;
	if (slotno >= 0)
	{
		WorkerSlot *slot = &launcher->slots[slotno];

		memset(slot, 0, sizeof(WorkerSlot));
		slot->dboid = dboid;
		slot->generation = *generation = ++launcher->next_generation;
		slot->state = SLOT_STARTING;
		slot->started_at = GetCurrentTimestamp();
	}
	LWLockRelease(launcher_lock);
	return slotno;
}

/* pgjq_slot_release gives back a slot whose worker could not be started */
void
pgjq_slot_release(int slotno)
{
	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	launcher->slots[slotno].state = SLOT_FREE;
	launcher->slots[slotno].dboid = InvalidOid;
	LWLockRelease(launcher_lock);
}

/*
 * pgjq_slot_reap gives the slot back when its worker has gone, and says
 * how it went: the worker found no pgjq, or it failed (or never attached:
 * stopped tells whether the postmaster reports the registered worker
 * stopped, unknown when the launcher has no handle, after its own
 * restart).  *dboid is the slot's database.
 */
PgjqSlotOutcome
pgjq_slot_reap(int slotno, PgjqStopped stopped, TimestampTz now, Oid *dboid)
{
	WorkerSlot *slot = &launcher->slots[slotno];
	PgjqSlotOutcome outcome = PGJQ_SLOT_BUSY;

	LWLockAcquire(launcher_lock, LW_EXCLUSIVE);
	*dboid = slot->dboid;
	if (slot->state == SLOT_FREE)
		outcome = PGJQ_SLOT_UNUSED;
	else if (slot->state == SLOT_ABSENT && slot->pid == 0)
		outcome = PGJQ_SLOT_ABSENT;
	else if (slot->state == SLOT_EXITED)
		outcome = PGJQ_SLOT_FAILED;
	else if (slot->state == SLOT_STARTING &&
			 (stopped == PGJQ_STOPPED_YES ||
			  (stopped == PGJQ_STOPPED_UNKNOWN &&
			   TimestampDifferenceExceeds(slot->started_at, now,
										  PGJQ_STARTING_TIMEOUT * 1000))))
		outcome = PGJQ_SLOT_FAILED;	/* failed before attaching */
	if (outcome == PGJQ_SLOT_ABSENT || outcome == PGJQ_SLOT_FAILED)
	{
		slot->state = SLOT_FREE;
		slot->dboid = InvalidOid;
	}
	LWLockRelease(launcher_lock);
	return outcome;
}

/*
 * pgjq_database_taken tells whether the launcher must leave a database
 * alone for now: a worker runs or starts there, or DDL holds it.
 */
bool
pgjq_database_taken(Oid dboid, TimestampTz now)
{
	bool		taken;

	LWLockAcquire(launcher_lock, LW_SHARED);
	taken = slot_of(dboid) != NULL || held(dboid, now);
	LWLockRelease(launcher_lock);
	return taken;
}
