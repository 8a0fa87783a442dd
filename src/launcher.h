/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The pgjq launcher and the slots of the per-database workers it
 *	  starts.
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

/* shared memory (shmem.c) */
extern Size pgjq_launcher_shmem_size(void);
extern void pgjq_launcher_shmem_init(LWLock *lock);

/* the postmaster */
extern void pgjq_launcher_register(void);

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
