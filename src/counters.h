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

#include "storage/lwlock.h"

/* counter slots, in the column order of jq.counters() */
typedef enum PgjqCounter
{
	PGJQ_C_READY,				/* gauges: jobs in a state now */
	PGJQ_C_SCHEDULED,
	PGJQ_C_LEASED,
	PGJQ_C_DEAD,
	PGJQ_C_ENQUEUED,			/* totals: events since the counters began */
	PGJQ_C_SUCCEEDED,
	PGJQ_C_FAILED,
	PGJQ_C_DEAD_LETTERED,
	PGJQ_C_CANCELLED,
	PGJQ_C_NUM
} PgjqCounter;

/* what the counters need to know of a state (PGJQ_STATES) */
typedef struct PgjqStateInfo
{
	char		code;
	PgjqStateTable table;
	PgjqCounter counter;
} PgjqStateInfo;

/* shared memory (shmem.c) */
extern Size pgjq_counters_shmem_size(void);
extern void pgjq_counters_shmem_init(LWLock *lock);

/* the count trigger (count_trigger.c) */
extern const PgjqStateInfo *pgjq_state_info(char code);
extern int	pgjq_state_counter(char code);
extern void pgjq_counters_add(int32 queue_id, int16 priority, int counter, int64 n);

/* the worker */
extern bool pgjq_counters_need_rebuild(void);

#endif							/* PGJQ_COUNTERS_H */
