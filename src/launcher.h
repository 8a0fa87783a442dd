/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The pgjq launcher (launcher.c) and the shared slots of the
 *	  per-database workers it starts (slots.c).
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/launcher.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_LAUNCHER_H
#define PGJQ_LAUNCHER_H

#include "datatype/timestamp.h"
#include "storage/lwlock.h"

/* what jq_worker_status() reports of a database's worker */
typedef enum PgjqWorkerStatus
{
	PGJQ_WORKER_NONE,			/* no worker runs, none is starting */
	PGJQ_WORKER_STARTING,		/* the launcher started one */
	PGJQ_WORKER_RUNNING,		/* it runs and serves the queues */
	PGJQ_WORKER_OLD_SCHEMA,		/* it runs, waiting for ALTER EXTENSION UPDATE */
	PGJQ_WORKER_EXITED			/* it stopped; the launcher starts it again */
} PgjqWorkerStatus;

/* what the launcher learns when it reaps a worker's slot */
typedef enum PgjqSlotOutcome
{
	PGJQ_SLOT_UNUSED,			/* the slot is free */
	PGJQ_SLOT_BUSY,				/* its worker starts or runs */
	PGJQ_SLOT_ABSENT,			/* its worker found no pgjq; slot freed */
	PGJQ_SLOT_FAILED			/* its worker failed or was stopped; slot freed */
} PgjqSlotOutcome;

/* whether the postmaster reports a registered worker stopped */
typedef enum PgjqStopped
{
	PGJQ_STOPPED_NO,
	PGJQ_STOPPED_YES,
	PGJQ_STOPPED_UNKNOWN		/* no handle: registered by an earlier launcher */
} PgjqStopped;

/* shared memory (shmem.c) */
extern Size pgjq_launcher_shmem_size(void);
extern void pgjq_launcher_shmem_init(LWLock *lock);

/* the postmaster */
extern void pgjq_launcher_register(void);

/* the launcher (launcher.c) and its side of the slots (slots.c) */
extern bool pgjq_launcher_attach(void);
extern void pgjq_request_rescan(void);
extern int	pgjq_take_requests(Oid **dboids, bool *rescan);
extern int	pgjq_slot_allocate(Oid dboid, uint32 *generation);
extern void pgjq_slot_release(int slotno);
extern PgjqSlotOutcome pgjq_slot_reap(int slotno, PgjqStopped stopped,
									  TimestampTz now, Oid *dboid);
extern bool pgjq_database_taken(Oid dboid, TimestampTz now);

/* backends */
extern void pgjq_wake_database_worker(Oid dboid);
extern void pgjq_extension_changed(Oid dboid);
extern PgjqWorkerStatus pgjq_database_worker(Oid dboid, pid_t *pid);
extern pid_t pgjq_launcher_pid(void);
extern bool pgjq_database_allowed(const char *dbname);
extern pid_t pgjq_hold_database(Oid dboid, int seconds);
extern void pgjq_release_database(Oid dboid);

/* the per-database worker (worker.c) */
extern bool pgjq_worker_attach(int slotno, uint32 generation);
extern void pgjq_worker_set_state(bool absent, bool old_schema);
extern bool pgjq_worker_recheck(void);

#endif							/* PGJQ_LAUNCHER_H */
