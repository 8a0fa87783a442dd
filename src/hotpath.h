/*-------------------------------------------------------------------------
 *
 * hotpath.h
 *	  Leasing and finishing jobs through the table and index access
 *	  methods, without the executor (hotpath.c).
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/hotpath.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_HOTPATH_H
#define PGJQ_HOTPATH_H

#include "access/tupdesc.h"
#include "utils/timestamp.h"

#include "bounds.h"
#include "keys.h"

/* the tables and indexes one call works on; see pgjq_hot_begin */
typedef struct PgjqHot PgjqHot;

/* what pgjq_hot_finish did */
typedef enum PgjqFinished
{
	PGJQ_FINISHED_NONE,			/* nothing: no such job, or not this lease */
	PGJQ_FINISHED_SUCCEEDED,
	PGJQ_FINISHED_CANCELLED,
	PGJQ_FINISHED_EXPIRED
} PgjqFinished;

/* where pgjq_hot_lease puts each job it leases */
typedef void (*PgjqLeaseSink) (void *arg, Datum *values, bool *nulls);

extern PgjqHot *pgjq_hot_begin(Oid job_relid);
extern void pgjq_hot_end(PgjqHot *hot);

extern int32 pgjq_hot_lease(PgjqHot *hot, int32 queue_id, int16 priority,
							const PgjqBoundKey *start, int32 max_jobs,
							TimestampTz now, int32 lease_seconds,
							PgjqLeaseSink sink, void *sink_arg,
							PgjqBoundKey *head);
extern void pgjq_hot_keys_begin(PgjqHot *hot);
extern void pgjq_hot_keys_end(PgjqHot *hot);
extern int32 pgjq_hot_lease_key(PgjqHot *hot, int32 queue_id, const char *key,
								const PgjqKeyPos *from, int32 max_jobs,
								PgjqKeyTicket *ticket, TimestampTz now,
								int32 lease_seconds,
								PgjqLeaseSink sink, void *sink_arg,
								PgjqKeyPos *seen, PgjqKeyPos *leased);
extern void pgjq_hot_batch_begin(PgjqHot *hot);
extern void pgjq_hot_batch_end(PgjqHot *hot);
extern PgjqFinished pgjq_hot_finish(PgjqHot *hot, int64 job_id,
									const int64 *lease_token, char end_state,
									Datum result, bool result_isnull,
									Datum usage, bool usage_isnull);

extern bool pgjq_hot_can_insert(PgjqHot *hot);
extern void pgjq_hot_insert(PgjqHot *hot, int32 queue_id, char state,
							int16 priority, TimestampTz run_at,
							TimestampTz enqueued_at, const Datum *payloads,
							const Datum *keys, const bool *key_nulls,
							const Datum *deadlines, const bool *deadline_nulls,
							const Datum *costs, const bool *cost_nulls,
							int n, Oid seq, int64 *ids);

/* the columns of a lease, as jq_dequeue returns them */
#define PGJQ_LEASE_COLUMNS 8

#endif							/* PGJQ_HOTPATH_H */
