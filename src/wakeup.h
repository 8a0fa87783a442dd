/*-------------------------------------------------------------------------
 *
 * wakeup.h
 *	  Commit-time wakeups: producers mark queues, which wakes the sessions
 *	  waiting for them (waiters.c), and the worker announces them with
 *	  coalesced NOTIFYs.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/wakeup.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_WAKEUP_H
#define PGJQ_WAKEUP_H

#include "datatype/timestamp.h"
#include "storage/lwlock.h"

/* shared memory (shmem.c) */
extern Size pgjq_wakeup_shmem_size(void);
extern void pgjq_wakeup_shmem_init(LWLock *lock);

/* backends */
extern void pgjq_wakeup_register_callbacks(void);
extern void pgjq_wake_at_commit(int32 queue_id, int64 jobs);
extern void pgjq_wake_now(const int32 *queue_ids, int n);

/* the worker */
extern void pgjq_wakeup_collect(void);
extern bool pgjq_wakeup_take_due(TimestampTz now, int32 **queue_ids, int *nqueues,
								 TimestampTz *next_due);

#endif							/* PGJQ_WAKEUP_H */
