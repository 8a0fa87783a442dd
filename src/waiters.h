/*-------------------------------------------------------------------------
 *
 * waiters.h
 *	  Sessions waiting inside a call for work (a long-poll jq_dequeue) or
 *	  for a job to end (jq_await), woken directly by the commits that
 *	  give them what they wait for (waiters.c).
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/waiters.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_WAITERS_H
#define PGJQ_WAITERS_H

#include "datatype/timestamp.h"
#include "storage/lwlock.h"

/* how often a waiter looks again unwoken: for what wakes no one */
#define PGJQ_WAIT_RECHECK_MS	5000

/* shared memory (shmem.c) */
extern Size pgjq_waiters_shmem_size(void);
extern void pgjq_waiters_shmem_init(LWLock *lock);

/* committing backends and the worker */
extern void pgjq_waiters_wake_queue(int32 queue_id, int64 jobs);
extern void pgjq_waiters_job_ended(int64 job_id);

/* a waiting session: begin, sleep until woken (repeatedly), end */
extern void pgjq_wait_arm(int32 max_jobs);
extern void pgjq_wait_join(int32 queue_id);
extern void pgjq_wait_for_job(int64 job_id);
extern bool pgjq_wait_sleep(TimestampTz until);
extern void pgjq_wait_done(bool pass_on);

#endif							/* PGJQ_WAITERS_H */
