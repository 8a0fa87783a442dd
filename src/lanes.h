/*-------------------------------------------------------------------------
 *
 * lanes.h
 *	  Where each priority lane's ready jobs begin: the bounds jq_dequeue
 *	  starts its index descent from, past the dead entries of jobs already
 *	  handed out.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/lanes.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_LANES_H
#define PGJQ_LANES_H

#include "storage/lwlock.h"
#include "utils/timestamp.h"

/* one lane per priority a job may have */
#define PGJQ_NUM_LANES	(PGJQ_LIMIT_PRIORITY_MAX - PGJQ_LIMIT_PRIORITY_MIN + 1)

/* a position in a lane of jq.job_ready_idx: (run_at, id) */
typedef struct PgjqLaneKey
{
	TimestampTz run_at;
	int64		id;
} PgjqLaneKey;

/*
 * One dequeue's view of a queue's lanes, most urgent first: where to start
 * in each, and what the dequeue learnt (pgjq_lanes_advance publishes it).
 */
typedef struct PgjqLaneScan
{
	int			nlanes;
	bool		may_advance;	/* READ COMMITTED: see lanes.c */
	struct
	{
		int16		priority;
		uint32		seq;		/* the lane's lowering count at the start */
		PgjqLaneKey start;		/* the scan starts here */
		bool		scanned;
		PgjqLaneKey head;		/* the first ready job seen; +inf when none */
	}			lane[PGJQ_NUM_LANES];
} PgjqLaneScan;

/* shared memory (shmem.c) */
extern Size pgjq_lanes_shmem_size(void);
extern void pgjq_lanes_shmem_init(LWLock *lock);

/* the count trigger: a row of jq.job became ready, or a ready row changed */
extern void pgjq_lanes_note(int32 queue_id, int16 priority, TimestampTz run_at,
							int64 id, bool made_ready);

/* jq_dequeue */
extern bool pgjq_lanes_begin(int32 queue_id, PgjqLaneScan *scan);
extern void pgjq_lanes_advance(int32 queue_id, const PgjqLaneScan *scan);

/* the counter rebuild (counters.c) */
extern bool pgjq_lanes_need_install(void);
extern void pgjq_lanes_forget(void);
extern void pgjq_lanes_install(int32 *queue_ids, int16 *priorities, int n);

#endif							/* PGJQ_LANES_H */
