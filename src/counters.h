/*-------------------------------------------------------------------------
 *
 * counters.h
 *	  Queue depth and totals in O(1), from commit-time deltas.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/counters.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_COUNTERS_H
#define PGJQ_COUNTERS_H

#include "access/htup.h"
#include "storage/lwlock.h"
#include "utils/relcache.h"

/* shared memory (shmem.c) */
extern Size pgjq_counters_shmem_size(void);
extern void pgjq_counters_shmem_init(LWLock *lock);

/* the count trigger (count_trigger.c) */
extern void pgjq_counters_add(int32 queue_id, int16 priority, int counter, int64 n);
extern void pgjq_count_change(Relation rel, int which, HeapTuple oldtup,
							  HeapTuple newtup);

/* the transaction callbacks, which keys.c shares; validity */
extern void pgjq_counters_register_callbacks(void);
extern void pgjq_counters_mark_stale(void);
extern bool pgjq_counters_are_valid(void);
extern TimestampTz pgjq_counters_since(void);

/* the worker */
extern bool pgjq_counters_need_rebuild(void);
extern int64 pgjq_counters_results_total(void);

#endif							/* PGJQ_COUNTERS_H */
