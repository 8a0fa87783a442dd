/*-------------------------------------------------------------------------
 *
 * bounds.h
 *	  Where the scans of jq.job's partial indexes start: past the dead
 *	  entries of jobs that have left the state the index holds.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/bounds.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_BOUNDS_H
#define PGJQ_BOUNDS_H

#include "storage/lwlock.h"
#include "utils/timestamp.h"

/* one lane per priority a job may have */
#define PGJQ_NUM_LANES	(PGJQ_LIMIT_PRIORITY_MAX - PGJQ_LIMIT_PRIORITY_MIN + 1)

/*
 * A position in one of the indexes: (run_at, id) in a lane of
 * jq.job_ready_idx or in jq.job_scheduled_idx, (lease_expires_at, id) in
 * jq.job_leased_idx.
 */
typedef struct PgjqBoundKey
{
	TimestampTz at;
	int64		id;
} PgjqBoundKey;

extern const PgjqBoundKey pgjq_bound_none;	/* +inf: no row */
extern const PgjqBoundKey pgjq_bound_start; /* -inf: from the start */

/*
 * One dequeue's view of a queue's lanes, most urgent first: where to start
 * in each, and what the dequeue learnt (pgjq_lanes_advance publishes it).
 */
typedef struct PgjqLaneScan
{
	int			nlanes;
	bool		may_advance;	/* READ COMMITTED: see bounds.c */
	uint64		generation;		/* lowerings when the scan began */
	struct
	{
		int16		priority;
		PgjqBoundKey start;		/* the scan starts here */
		bool		scanned;
		PgjqBoundKey head;		/* the first ready job seen; +inf when none */
	}			lane[PGJQ_NUM_LANES];
} PgjqLaneScan;

/* shared memory (shmem.c) */
extern Size pgjq_bounds_shmem_size(void);
extern void pgjq_bounds_shmem_init(LWLock *lock);

/*
 * The count trigger: a row of jq.job entered state (made) or left it, at
 * key (at, id) in the index of that state
 */
extern void pgjq_bounds_note(char state, int32 queue_id, int16 priority,
							 TimestampTz at, int64 id, bool made);

/* jq_dequeue: the ready lanes of a queue */
extern bool pgjq_lanes_begin(int32 queue_id, PgjqLaneScan *scan);
extern void pgjq_lanes_advance(int32 queue_id, const PgjqLaneScan *scan);

/* any one bound: a ready lane, a queue's scheduled jobs, the leases */
extern bool pgjq_bound_get(char state, int32 queue_id, int16 priority,
						   PgjqBoundKey *start, uint64 *generation);
extern void pgjq_bound_advance(char state, int32 queue_id, int16 priority,
							   uint64 generation, const PgjqBoundKey *head);

/* the counter rebuild (counters.c) */
extern bool pgjq_bounds_need_install(void);
extern void pgjq_bounds_forget(void);
extern void pgjq_bounds_install(const char *states, const int32 *queue_ids,
								const int16 *priorities, int n);

#endif							/* PGJQ_BOUNDS_H */
