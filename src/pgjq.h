/*-------------------------------------------------------------------------
 *
 * pgjq.h
 *	  The vocabulary every pgjq source file shares: the job states, the
 *	  limits of the SQL API, and the GUCs.
 *
 * Each state and each limit is defined here once.  The C code builds its
 * SQL text from these constants (CppAsString2 turns a state's char literal
 * into the SQL literal), and the SQL side reads them through jq.limits(),
 * jq.limit() and jq.state_name() (vocabulary.c), so no number or state
 * code is repeated between C, CHECK constraints and PL/pgSQL.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/pgjq.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_H
#define PGJQ_H

#include "postgres.h"

#include "fmgr.h"

#include "compat.h"

/* the extension's schema, where its tables and its whole SQL API live */
#define PGJQ_SCHEMA				"jq"

/* the version of the SQL schema this library serves (pgjq.control) */
#ifndef PGJQ_VERSION
#error "PGJQ_VERSION must be defined by the Makefile"
#endif

/*
 * Job states: one-byte codes stored in jq.job.state (unfinished jobs) and
 * jq.job_result.state (finished ones); a dead letter is a row of
 * jq.dead_letter, which has no state column, and 'x' stands for it where a
 * code is needed.  Each state is its code and its line in PGJQ_STATES:
 * X(name, text, table, counter): the code is PGJQ_STATE_<name>; counter
 * is the slot counters.c counts the state in (a gauge for the states of
 * jq.job and for dead letters, a total for finished jobs).
 */
typedef enum PgjqStateTable
{
	PGJQ_IN_JOB,				/* jq.job: the hot table */
	PGJQ_IN_RESULT,				/* jq.job_result */
	PGJQ_IN_DEAD_LETTER			/* jq.dead_letter */
} PgjqStateTable;

#define PGJQ_STATE_READY		'r'
#define PGJQ_STATE_SCHEDULED	's'
#define PGJQ_STATE_LEASED		'l'
#define PGJQ_STATE_SUCCEEDED	'd'
#define PGJQ_STATE_CANCELLED	'c'
#define PGJQ_STATE_DEAD			'x'
#define PGJQ_STATE_EXPIRED		'e'

#define PGJQ_STATES(X) \
	X(READY,		"ready",		PGJQ_IN_JOB,			READY) \
	X(SCHEDULED,	"scheduled",	PGJQ_IN_JOB,			SCHEDULED) \
	X(LEASED,		"leased",		PGJQ_IN_JOB,			LEASED) \
	X(SUCCEEDED,	"succeeded",	PGJQ_IN_RESULT,			SUCCEEDED) \
	X(CANCELLED,	"cancelled",	PGJQ_IN_RESULT,			CANCELLED) \
	X(DEAD,			"dead",			PGJQ_IN_DEAD_LETTER,	DEAD) \
	X(EXPIRED,		"expired",		PGJQ_IN_RESULT,			EXPIRED)

/* counter slots of counters.c, in the column order of jq.counters() */
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
	PGJQ_C_EXPIRED,				/* not started by their deadline */
	PGJQ_C_NUM
} PgjqCounter;

/* a state as PGJQ_STATES describes it (vocabulary.c) */
typedef struct PgjqStateInfo
{
	char		code;
	const char *name;
	PgjqStateTable table;
	PgjqCounter counter;
} PgjqStateInfo;

extern const PgjqStateInfo *pgjq_state_info(char code);
extern PgjqCounter pgjq_state_counter(char code);

/* a state as an SQL literal, for statement text: "'r'" for READY */
#define PGJQ_SQL_STATE(name)	CppAsString2(PGJQ_STATE_##name)

/*
 * Limits of the SQL API: X(name, value, SQL name, description).
 * jq.limits() lists them and jq.limit(name) reads one, for the PL/pgSQL
 * functions; C uses PGJQ_LIMIT_<name>.
 */
#define PGJQ_LIMITS(X) \
	X(QUEUE_NAME_MAXLEN,	48,		"queue_name_maxlen",	"characters of a queue name") \
	X(PRIORITY_MIN,			-100,	"priority_min",			"lowest job priority") \
	X(PRIORITY_MAX,			100,	"priority_max",			"highest job priority") \
	X(MAX_JOBS_MAX,			10000,	"max_jobs_max",			"jobs one jq_dequeue call may lease") \
	X(LEASE_SECONDS_MAX,	86400,	"lease_seconds_max",	"seconds of one lease") \
	X(BATCH_MAX,			10000,	"batch_max",			"elements of one batch call (enqueue, ack, redrive)") \
	X(KEY_MAXLEN,			512,	"key_maxlen",			"bytes of an idempotency key") \
	X(JOB_KEY_MAXLEN,		128,	"job_key_maxlen",		"bytes of a job key (flow control)") \
	X(KEY_WEIGHT_MAX,		10000,	"key_weight_max",		"fair-share weight of a job key") \
	X(LABEL_MAXLEN,			512,	"label_maxlen",			"bytes of a batch label") \
	X(MAX_ATTEMPTS_MAX,		1000,	"max_attempts_max",		"attempts a queue may allow a job") \
	X(PAYLOAD_BYTES_MIN,	16,		"payload_bytes_min",	"lowest max_payload_bytes of a queue") \
	X(PAYLOAD_BYTES_MAX,	67108864, "payload_bytes_max",	"highest max_payload_bytes of a queue") \
	X(ERROR_MAXLEN,			8192,	"error_maxlen",			"bytes of an error message kept whole with a job") \
	X(INTERVAL_MAX_YEARS,	100,	"interval_max_years",	"years of any interval setting of a queue") \
	X(RETRY_IN_MAX_DAYS,	366,	"retry_in_max_days",	"days of jq_fail's retry_in") \
	X(PROGRESS_BYTES_MAX,	65536,	"progress_bytes_max",	"bytes of a jq_progress report") \
	X(USAGE_BYTES_MAX,		65536,	"usage_bytes_max",		"bytes of a usage report at ack or fail") \
	X(WAIT_SECONDS_MAX,		300,	"wait_seconds_max",		"seconds one call may wait (a long-poll dequeue, an await)")

#define PGJQ_LIMIT_ENUM(name, value, sqlname, description) PGJQ_LIMIT_##name = value,
enum
{
	PGJQ_LIMITS(PGJQ_LIMIT_ENUM)
};

/* process machinery */
#define PGJQ_MAX_DATABASES		64	/* databases with a running worker at once */
#define PGJQ_MAX_WAKE_QUEUES	4096	/* queues awaiting a NOTIFY at once */
#define PGJQ_MAX_COUNTERS		16384	/* (database, queue, priority) counters */
#define PGJQ_RESTART_SECONDS	5	/* a failed worker is started again after */

/* GUCs (pgjq.c) */
extern char *pgjq_databases;
extern int	pgjq_naptime;
extern int	pgjq_notify_interval;
extern int	pgjq_reclaim_batch;
extern int	pgjq_stats_interval;
extern int	pgjq_history_retention;
extern int	pgjq_purge_batch;
extern bool pgjq_use_scan_bounds;
extern bool pgjq_compact;

/* a qsort comparator for int64 */
static inline int
pgjq_cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

#endif							/* PGJQ_H */
