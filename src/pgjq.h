/*-------------------------------------------------------------------------
 *
 * pgjq.h
 *	  Declarations shared by the pgjq source files.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/pgjq.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_H
#define PGJQ_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "storage/lwlock.h"
#include "utils/jsonb.h"

#include "compat.h"

/* limits of the SQL API, documented in README.md */
#define PGJQ_SCHEMA				"jq"
#define PGJQ_QUEUE_NAME_MAXLEN	48
#define PGJQ_PRIORITY_MIN		(-100)
#define PGJQ_PRIORITY_MAX		100
#define PGJQ_MAX_JOBS_MAX		10000
#define PGJQ_LEASE_SECONDS_MAX	86400
#define PGJQ_BATCH_MAX			10000
#define PGJQ_KEY_MAXLEN			512

/* the background worker */
#define PGJQ_MAX_DATABASES		16	/* databases one cluster's pgjq serves */
#define PGJQ_MAX_WAKE_QUEUES	4096	/* queues awaiting a NOTIFY at once */
#define PGJQ_RESTART_SECONDS	5	/* postmaster restarts a failed worker */
#define PGJQ_MAX_COUNTERS		16384	/* (database, queue, priority) counters */

/* one-byte job state codes stored in jq.job.state and jq.job_result.state */
#define PGJQ_STATE_READY		'r'
#define PGJQ_STATE_SCHEDULED	's'
#define PGJQ_STATE_LEASED		'l'
#define PGJQ_STATE_SUCCEEDED	'd'
#define PGJQ_STATE_CANCELLED	'c'

/*
 * The kept SPI plans of the hot path.  Each is prepared once per backend
 * on first use (plans.c) and reused; the SQL text is in plans.c.
 */
typedef enum PgjqPlanId
{
	PGJQ_PLAN_QUEUE_LOOKUP,
	PGJQ_PLAN_ENQUEUE,
	PGJQ_PLAN_ENQUEUE_BATCH,
	PGJQ_PLAN_NEXT_IDS,
	PGJQ_PLAN_KEY_CLAIM,
	PGJQ_PLAN_KEY_LOOKUP,
	PGJQ_PLAN_KEY_REASSIGN,
	PGJQ_PLAN_BATCH_LOOKUP,
	PGJQ_PLAN_BATCH_ADD,
	PGJQ_PLAN_PROMOTE,
	PGJQ_PLAN_DEQUEUE,
	PGJQ_PLAN_ACK,
	PGJQ_PLAN_ACK_BATCH,
	PGJQ_NUM_PLANS
} PgjqPlanId;

/* a queue's settings as the hot path needs them */
typedef struct PgjqQueue
{
	int32		queue_id;
	int32		lease_seconds;
	int32		max_payload_bytes;
} PgjqQueue;

/* plans.c */
extern SPIPlanPtr pgjq_get_plan(PgjqPlanId id);
extern void pgjq_execute_plan(PgjqPlanId id, Datum *values, const char *nulls,
							  int expected_rc);
extern void pgjq_lookup_queue(const char *name, PgjqQueue *queue, bool for_insert);
extern void pgjq_check_queue_name(const char *name);
extern Oid	pgjq_lock_job_table(void);
extern Oid	pgjq_scheduled_index(void);
extern void pgjq_init_materialized_srf(FunctionCallInfo fcinfo);
extern int	pgjq_cmp_int64(const void *a, const void *b);

/* shmem.c */
extern void pgjq_shmem_init(void);
extern bool pgjq_shmem_available(void);
extern void pgjq_wake_at_commit(int32 queue_id);
extern bool pgjq_worker_attach(Oid dboid);
extern int	pgjq_worker_take_wakeups(int32 **queue_ids);
extern void pgjq_worker_clear_wakeup(int32 queue_id);
extern pid_t pgjq_worker_pid(Oid dboid);
extern void pgjq_register_xact_callbacks(void);

/* stats.c */
extern Size pgjq_stats_shmem_size(void);
extern void pgjq_stats_shmem_startup(LWLock *lock);
extern void pgjq_stats_at_commit(void);
extern void pgjq_stats_at_abort(bool prepared);
extern void pgjq_stats_at_subxact(bool commit, SubTransactionId mySubid,
								  SubTransactionId parentSubid);
extern bool pgjq_stats_need_rebuild(bool *stale);
extern void pgjq_stats_rebuild(void);

/* worker.c */
extern int	pgjq_naptime;
extern int	pgjq_notify_interval;
extern int	pgjq_reclaim_batch;
extern int	pgjq_stats_interval;
extern int	pgjq_history_retention;
extern int	pgjq_purge_batch;
extern void pgjq_register_workers(const char *databases);

/* enqueue.c */
extern void pgjq_check_payload(Jsonb *payload, const PgjqQueue *queue,
							   const char *queue_name, int element);

#endif							/* PGJQ_H */
