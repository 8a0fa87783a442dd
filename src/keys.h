/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  Job keys and flow control: per-key counts, concurrency limits,
 *	  admission limits and the fair-share scheduler, in shared memory.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/keys.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_KEYS_H
#define PGJQ_KEYS_H

#include "datatype/timestamp.h"
#include "storage/lwlock.h"

#include "queue.h"

/*
 * A position in the order jobs are handed out: priority descending, then
 * run_at, then id.  A key's head is a lower bound on the positions of its
 * ready jobs, the start of its next scan.
 */
typedef struct PgjqKeyPos
{
	int16		priority;
	TimestampTz at;
	int64		id;
} PgjqKeyPos;

/* after every job: a key's head when it has no ready job */
extern const PgjqKeyPos pgjq_key_pos_none;

/* a key chosen to serve next (pgjq_keys_pick), until pgjq_keys_picked */
typedef struct PgjqKeyTicket
{
	void	   *entry;			/* the key's shared entry */
	bool		isnull;			/* the default key of jobs without one */
	char	   *key;			/* the key, when not isnull */
	PgjqKeyPos	head;			/* where its scan starts */
	uint64		head_generation;
	uint64		vtime;			/* its virtual time before this pick */
	int32		n;				/* jobs reserved: lease up to this many */
	bool		ordered;		/* one at a time, in order: see lease.c */
	bool		rated;			/* the key or its queue has a rate limit:
								 * each job's cost is taken with
								 * pgjq_keys_take */
	uint64		head_lowered;	/* when a job of the key last became ready */
	uint64		snapshot_mark;	/* pgjq_keys_snapshot_mark before the scan's
								 * snapshot; set by the caller */
} PgjqKeyTicket;

/* a key's policy (jq.key_policy); 0 or ordered_set false: the queue's default */
typedef struct PgjqKeyPolicy
{
	int32		weight;
	int32		max_in_flight;
	int64		max_queued;
	bool		ordered_set;	/* ordered is the key's own */
	bool		ordered;
	int32		rate_requests;	/* per rate_period; 0: no rate limit */
	double		rate_cost;		/* per rate_period; 0: no rate limit */
	int64		rate_period;	/* microseconds */
} PgjqKeyPolicy;

/* shared memory (shmem.c) and the GUC that sizes it (pgjq.c) */
extern int	pgjq_max_keys;
extern Size pgjq_keys_shmem_size(void);
extern void pgjq_keys_shmem_init(LWLock *lock);

/* the count trigger (count_trigger.c): one change of a job's state */
extern void pgjq_keys_count(int32 queue_id, const char *key, char oldstate,
							char newstate, const PgjqKeyPos *pos);

/* the transaction's end, in the order counters.c calls them */
extern void pgjq_keys_at_commit(void);
extern void pgjq_keys_at_abort(void);
extern void pgjq_keys_at_subabort(SubTransactionId subid, SubTransactionId parent,
								  bool commit);

/* enqueue: admission (max_queued) */
extern void pgjq_keys_check_key(const char *key, int len);
extern void pgjq_keys_admit(const PgjqQueue *queue, const char *key, int n,
							 bool in_order, double max_cost);

/* dequeue: the scheduler */
extern bool pgjq_keys_flow_controlled(const PgjqQueue *queue);
extern uint64 pgjq_keys_snapshot_mark(const PgjqQueue *queue);
extern bool pgjq_keys_pick(const PgjqQueue *queue, PgjqKeyTicket *ticket, int32 want);
extern void pgjq_keys_picked(PgjqKeyTicket *ticket, int32 leased,
							 const PgjqKeyPos *leased_pos, const PgjqKeyPos *seen);
extern void pgjq_keys_pick_done(void);
extern bool pgjq_keys_take(PgjqKeyTicket *ticket, double cost);
extern void pgjq_keys_untake(PgjqKeyTicket *ticket, double cost);

/* rate limits: what an ack's usage report settles, and the worker's wakeups */
extern void pgjq_keys_settle(int32 queue_id, const char *key, double amount);
extern TimestampTz pgjq_keys_budget_wakes(void);

/* the counter rebuild (counters.c) */
extern void pgjq_keys_install_begin(void);
extern void pgjq_keys_install_count(int32 queue_id, const char *key, char state,
									int64 n);
extern void pgjq_keys_install_policy(int32 queue_id, const char *key, int64 version,
									 const PgjqKeyPolicy *policy);
extern void pgjq_keys_install_end(void);
extern void pgjq_keys_forget_all(void);

#endif							/* PGJQ_KEYS_H */
