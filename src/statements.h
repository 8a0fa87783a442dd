/*-------------------------------------------------------------------------
 *
 * statements.h
 *	  The catalogue of every SQL statement pgjq's C code runs, and the
 *	  names of their result columns.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/statements.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_STATEMENTS_H
#define PGJQ_STATEMENTS_H

#include "executor/spi.h"

typedef enum PgjqStmtId
{
	/* the hot path: enqueue.c, lease.c, queue.c */
	PGJQ_STMT_ENQUEUE_BATCH,
	PGJQ_STMT_ENQUEUE_BATCH_KEYS,
	PGJQ_STMT_NEXT_IDS,
	PGJQ_STMT_KEY_CLAIM,
	PGJQ_STMT_KEY_LOOKUP,
	PGJQ_STMT_KEY_REASSIGN,
	PGJQ_STMT_BATCH_LOOKUP,
	PGJQ_STMT_BATCH_ADD,
	PGJQ_STMT_COMPLETE_FAILS,
	PGJQ_STMT_LOCK_LEASE,
	/* the counters: counters.c */
	PGJQ_STMT_PREPARED_XACTS,
	PGJQ_STMT_LOCK_FOR_REBUILD,
	PGJQ_STMT_COUNT_JOBS,
	PGJQ_STMT_COUNT_JOBS_KEYS,
	PGJQ_STMT_KEY_POLICIES,
	/* calls of the SQL functions that own the cold transitions */
	PGJQ_STMT_PROMOTE_DUE,
	PGJQ_STMT_RECLAIM,
	PGJQ_STMT_EXPIRE,
	PGJQ_STMT_REBUILD_COUNTERS,
	PGJQ_STMT_NEXT_DEADLINE,
	PGJQ_STMT_NOTIFY_QUEUES,
	PGJQ_STMT_SAMPLE_STATS,
	PGJQ_STMT_CHECK_ALERTS,
	PGJQ_STMT_ROLLUP_USAGE,
	PGJQ_STMT_PURGE_EXPIRED,
	PGJQ_STMT_COMPACT,
	PGJQ_NUM_STMTS
} PgjqStmtId;

/*
 * Result columns, numbered from 1 as SPI_getbinval wants them.  The
 * catalogue names each statement's columns, and the first prepare checks
 * them against the statement's real result, so these cannot drift.
 */
enum
{
	ENQUEUE_ID = 1
};
enum
{
	NEXT_IDS_ID = 1
};
enum
{
	KEY_JOB_ID = 1, KEY_LIVE		/* KEY_CLAIM and KEY_REASSIGN: job_id only */
};
enum
{
	BATCH_LOOKUP_QUEUE_ID = 1
};
enum
{
	LOCK_LEASE_QUEUE_ID = 1
};
enum
{
	COUNT_JOBS_QUEUE_ID = 1, COUNT_JOBS_PRIORITY, COUNT_JOBS_STATE, COUNT_JOBS_JOBS,
	COUNT_JOBS_KEY				/* COUNT_JOBS_KEYS only */
};
enum
{
	KEY_POLICIES_QUEUE_ID = 1, KEY_POLICIES_KEY, KEY_POLICIES_VERSION,
	KEY_POLICIES_WEIGHT, KEY_POLICIES_MAX_IN_FLIGHT, KEY_POLICIES_MAX_QUEUED,
	KEY_POLICIES_ORDERED,
	KEY_POLICIES_RATE_REQUESTS, KEY_POLICIES_RATE_COST, KEY_POLICIES_RATE_PERIOD
};
enum
{
	CALL_RESULT = 1				/* the value of a statement that calls a function */
};

extern SPIPlanPtr pgjq_stmt_plan(PgjqStmtId id);
extern void pgjq_stmt_execute(PgjqStmtId id, Datum *values, const char *nulls,
							  int expected_rc);
extern void pgjq_stmt_execute_latest(PgjqStmtId id, Datum *values,
									 const char *nulls);
extern Datum pgjq_stmt_value(uint64 row, int column, bool *isnull);
extern Datum pgjq_stmt_call(PgjqStmtId id, Datum *values, const char *nulls,
							bool *isnull);

#endif							/* PGJQ_STATEMENTS_H */
