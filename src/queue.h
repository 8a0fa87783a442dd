/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  Queues as the hot path sees them: the name rule, the per-backend
 *	  cache of their settings, and the locks that keep jobs and queues
 *	  consistent.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/queue.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_QUEUE_H
#define PGJQ_QUEUE_H

/* a queue's settings as the hot path needs them */
typedef struct PgjqQueue
{
	char		name[PGJQ_LIMIT_QUEUE_NAME_MAXLEN + 1];
	int32		queue_id;
	int32		lease_seconds;
	int32		max_payload_bytes;
	/* flow control (keys.c); 0 or false in a schema without it */
	int32		max_in_flight;	/* 0: no limit */
	int32		key_max_in_flight;
	int64		key_max_queued;
	bool		fair;
	bool		key_ordered;	/* keys without a policy are ordered */
	int32		rate_requests;	/* per rate_period; 0: no limit */
	double		rate_cost;		/* per rate_period; 0: no limit */
	int64		rate_period;	/* microseconds */
} PgjqQueue;

extern void pgjq_check_queue_name(const char *name);
extern void pgjq_lookup_queue(const char *name, PgjqQueue *queue, bool for_insert);
extern Oid	pgjq_lock_job_table(void);
extern Oid	pgjq_scheduled_index(void);
extern Oid	pgjq_result_table(void);
extern Oid	pgjq_usage_table(void);
extern bool pgjq_schema_promotes(void);
extern bool pgjq_schema_bounds(void);
extern bool pgjq_schema_keys(void);

#endif							/* PGJQ_QUEUE_H */
