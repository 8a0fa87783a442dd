/*-------------------------------------------------------------------------
 *
 * count_trigger.c
 *	  jq.count_trigger(): the row trigger that turns every change of
 *	  jq.job, jq.job_result and jq.dead_letter into counter deltas
 *	  (counters.c), and checks the invariants of the rows it sees.
 *
 * Because every state change passes through it, the counters stay right
 * whatever path changed a job: the C hot path, the SQL functions, or an
 * operator's own SQL.  Which counter a state counts in, and which table it
 * belongs in, come from PGJQ_STATES (pgjq.h).
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/count_trigger.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include "counters.h"
#include "bounds.h"
#include "keys.h"
#include "waiters.h"

PG_FUNCTION_INFO_V1(pgjq_count_trigger);

/*
 * The attribute numbers the trigger reads, per counted table, found once
 * per relation instead of by name on every row.  A relcache invalidation
 * of the table (DROP EXTENSION, ALTER TABLE) forgets them.
 */
typedef struct CountedTable
{
	Oid			relid;
	AttrNumber	queue_id;
	AttrNumber	priority;
	AttrNumber	state;			/* jq.job and jq.job_result */
	AttrNumber	lease_token;	/* jq.job */
	AttrNumber	lease_expires_at;	/* jq.job */
	AttrNumber	run_at;			/* jq.job */
	AttrNumber	id;				/* jq.job */
	AttrNumber	job_id;			/* jq.job_result and jq.dead_letter */
	AttrNumber	key;			/* jq.job and jq.job_result; none before 0.4.0 */
	AttrNumber	deadline;		/* jq.job; none before 0.4.0 */
} CountedTable;

static CountedTable counted[3];

static void
counted_reset(Datum arg, Oid relid)
{
	for (size_t i = 0; i < lengthof(counted); i++)
		if (relid == InvalidOid || counted[i].relid == relid)
			counted[i].relid = InvalidOid;
}

static AttrNumber
attnum(TupleDesc desc, const char *attname)
{
	int			n = SPI_fnumber(desc, attname);

	return n > 0 ? n : InvalidAttrNumber;
}

/* counted_table returns the attribute numbers of a counted relation */
static const CountedTable *
counted_table(Relation rel, int which)
{
	static bool callback_registered = false;
	CountedTable *t = &counted[which];
	TupleDesc	desc = RelationGetDescr(rel);

	if (t->relid == RelationGetRelid(rel))
		return t;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(counted_reset, (Datum) 0);
		callback_registered = true;
	}
	t->queue_id = attnum(desc, "queue_id");
	t->priority = attnum(desc, "priority");
	t->state = attnum(desc, "state");
	t->lease_token = attnum(desc, "lease_token");
	t->lease_expires_at = attnum(desc, "lease_expires_at");
	t->run_at = attnum(desc, "run_at");
	t->id = attnum(desc, "id");
	t->job_id = attnum(desc, "job_id");
	t->key = attnum(desc, "key");
	t->deadline = attnum(desc, "deadline");
	if (t->queue_id == InvalidAttrNumber || t->priority == InvalidAttrNumber ||
		(which != PGJQ_IN_DEAD_LETTER && t->state == InvalidAttrNumber) ||
		(which == PGJQ_IN_JOB && (t->lease_token == InvalidAttrNumber ||
								  t->lease_expires_at == InvalidAttrNumber ||
								  t->run_at == InvalidAttrNumber ||
								  t->id == InvalidAttrNumber)) ||
		(which != PGJQ_IN_JOB && t->job_id == InvalidAttrNumber))
		elog(ERROR, "pgjq: table \"%s\" lacks a column the count trigger reads",
			 RelationGetRelationName(rel));
	t->relid = RelationGetRelid(rel);
	return t;
}

/*
 * check_row enforces, for a new row, the invariants that would be CHECK
 * constraints but cost less here (the executor parses a table's CHECK
 * expressions again for every statement, which the hot path would pay on
 * every enqueue): the state belongs in the table, a row of jq.job has a
 * priority in range (the dequeue bounds keep one lane per priority) and
 * lease_expires_at set if and only if it is leased.  Every INSERT and
 * every UPDATE of state or priority fires the trigger; the one UPDATE that
 * leaves both alone, jq_extend, only touches a leased job's
 * lease_expires_at.
 */
static void
check_row(HeapTuple tup, TupleDesc desc, const CountedTable *t, int which,
		  const char *relname, char state)
{
	const PgjqStateInfo *info = pgjq_state_info(state);
	bool		no_lease;
	bool		isnull;
	int16		priority;

	if (info == NULL || (int) info->table != which)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("invalid state \"%c\" for a row of jq.%s", state, relname),
				 which == PGJQ_IN_JOB ?
				 errdetail("A job in jq.job is ready (r), scheduled (s) or leased (l).") :
				 errdetail("A job in jq.job_result succeeded (d) or was cancelled (c).")));
	if (which != PGJQ_IN_JOB)
		return;
	priority = DatumGetInt16(heap_getattr(tup, t->priority, desc, &isnull));
	if (priority < PGJQ_LIMIT_PRIORITY_MIN || priority > PGJQ_LIMIT_PRIORITY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("priority %d of a row of jq.job is out of range", priority),
				 errdetail("A job's priority is between %d and %d.",
						   PGJQ_LIMIT_PRIORITY_MIN, PGJQ_LIMIT_PRIORITY_MAX)));
	(void) heap_getattr(tup, t->lease_expires_at, desc, &no_lease);
	if ((state == PGJQ_STATE_LEASED) == no_lease)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("a row of jq.job has lease_expires_at set if and only if it is leased"),
				 errdetail("The row has state \"%c\" and %s lease_expires_at.",
						   state, no_lease ? "no" : "a")));
}

/*
 * note_bound tells bounds.c that a row of jq.job entered its state (made),
 * or that it is being changed: the bound of the scans of that state's
 * index must not pass it.  The key is run_at for ready and scheduled jobs,
 * lease_expires_at for leased ones.  A ready or scheduled job with a
 * deadline is also in jq.job_deadline_idx, whose scan (the expiry's) has
 * a bound of its own, by deadline.
 */
static void
note_bound(HeapTuple tup, TupleDesc desc, const CountedTable *t, char state,
		   bool made)
{
	bool		isnull;
	AttrNumber	at = state == PGJQ_STATE_LEASED ? t->lease_expires_at : t->run_at;
	int32		queue_id = DatumGetInt32(heap_getattr(tup, t->queue_id, desc, &isnull));
	int16		priority = DatumGetInt16(heap_getattr(tup, t->priority, desc, &isnull));
	int64		id = DatumGetInt64(heap_getattr(tup, t->id, desc, &isnull));
	Datum		deadline;

	pgjq_bounds_note(state, queue_id, priority,
					 DatumGetTimestampTz(heap_getattr(tup, at, desc, &isnull)),
					 id, made);
	if (state == PGJQ_STATE_LEASED || t->deadline == InvalidAttrNumber)
		return;
	deadline = heap_getattr(tup, t->deadline, desc, &isnull);
	if (!isnull)
		pgjq_bounds_note(PGJQ_STATE_EXPIRED, queue_id, priority,
						 DatumGetTimestampTz(deadline), id, made);
}

/* row_key returns the row's job key, or NULL: none, or no such column */
static char *
row_key(HeapTuple tup, TupleDesc desc, const CountedTable *t)
{
	bool		isnull;
	Datum		d;

	if (t->key == InvalidAttrNumber)
		return NULL;
	d = heap_getattr(tup, t->key, desc, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * count_key tells keys.c about a change of a job of jq.job (its state,
 * from the old row's to the new row's; 0 where there is no row), or of a
 * success written to jq.job_result.  A job that becomes ready arrives at
 * its position.
 */
static void
count_key(int which, HeapTuple oldtup, HeapTuple newtup, TupleDesc desc,
		  const CountedTable *t)
{
	bool		isnull;
	int32		old_queue = 0;
	int32		new_queue = 0;
	char	   *old_key = NULL;
	char	   *new_key = NULL;
	char		oldstate = 0;
	char		newstate = 0;
	PgjqKeyPos	pos;

	if (which == PGJQ_IN_RESULT)
	{
		if (oldtup != NULL ||
			DatumGetChar(heap_getattr(newtup, t->state, desc, &isnull)) != PGJQ_STATE_SUCCEEDED)
			return;
		pgjq_keys_count(DatumGetInt32(heap_getattr(newtup, t->queue_id, desc, &isnull)),
						row_key(newtup, desc, t), 0, PGJQ_STATE_SUCCEEDED, NULL);
		return;
	}
	if (oldtup != NULL)
	{
		old_queue = DatumGetInt32(heap_getattr(oldtup, t->queue_id, desc, &isnull));
		old_key = row_key(oldtup, desc, t);
		oldstate = DatumGetChar(heap_getattr(oldtup, t->state, desc, &isnull));
	}
	if (newtup != NULL)
	{
		new_queue = DatumGetInt32(heap_getattr(newtup, t->queue_id, desc, &isnull));
		new_key = row_key(newtup, desc, t);
		newstate = DatumGetChar(heap_getattr(newtup, t->state, desc, &isnull));
		if (newstate == PGJQ_STATE_READY)
		{
			pos.priority = DatumGetInt16(heap_getattr(newtup, t->priority, desc, &isnull));
			pos.at = DatumGetTimestampTz(heap_getattr(newtup, t->run_at, desc, &isnull));
			pos.id = DatumGetInt64(heap_getattr(newtup, t->id, desc, &isnull));
		}
	}
	if (oldtup != NULL && newtup != NULL &&
		(old_queue != new_queue || (old_key == NULL) != (new_key == NULL) ||
		 (old_key != NULL && strcmp(old_key, new_key) != 0)))
	{
		/* moved to another queue or key by hand: leaves one, enters the other */
		pgjq_keys_count(old_queue, old_key, oldstate, 0, NULL);
		oldstate = 0;
	}
	if (newtup != NULL)
		pgjq_keys_count(new_queue, new_key, oldstate, newstate,
						newstate == PGJQ_STATE_READY ? &pos : NULL);
	else
		pgjq_keys_count(old_queue, old_key, oldstate, 0, NULL);
}

/*
 * pgjq_count_change counts one change of a row of a counted table (which
 * is PGJQ_IN_JOB, PGJQ_IN_RESULT or PGJQ_IN_DEAD_LETTER): an insert
 * (oldtup NULL), a delete (newtup NULL) or an update, after checking the
 * invariants of the new row.  The trigger below calls it for every change
 * the executor makes; the hot path (hotpath.c), which changes rows without
 * the executor, calls it directly.
 */
void
pgjq_count_change(Relation rel, int which, HeapTuple oldtup, HeapTuple newtup)
{
	TupleDesc	desc = RelationGetDescr(rel);
	const CountedTable *t = counted_table(rel, which);
	const char *relname = RelationGetRelationName(rel);
	bool		isnull;
	int32		queue_id;
	int16		priority;
	char		state = 0;

	if (newtup != NULL && which != PGJQ_IN_DEAD_LETTER)
	{
		state = DatumGetChar(heap_getattr(newtup, t->state, desc, &isnull));
		check_row(newtup, desc, t, which, relname, state);
	}
	if (which != PGJQ_IN_DEAD_LETTER)
		count_key(which, oldtup, newtup, desc, t);

	if (oldtup != NULL && which != PGJQ_IN_RESULT)
	{
		char		oldstate = which == PGJQ_IN_JOB ?
			DatumGetChar(heap_getattr(oldtup, t->state, desc, &isnull)) :
			PGJQ_STATE_DEAD;

		pgjq_counters_add(DatumGetInt32(heap_getattr(oldtup, t->queue_id, desc, &isnull)),
				  DatumGetInt16(heap_getattr(oldtup, t->priority, desc, &isnull)),
				  pgjq_state_counter(oldstate), -1);
		if (which == PGJQ_IN_JOB)
			note_bound(oldtup, desc, t, oldstate, false);
	}
	if (newtup == NULL)
		return;

	queue_id = DatumGetInt32(heap_getattr(newtup, t->queue_id, desc, &isnull));
	priority = DatumGetInt16(heap_getattr(newtup, t->priority, desc, &isnull));
	if (which == PGJQ_IN_DEAD_LETTER)
		state = PGJQ_STATE_DEAD;
	if (oldtup != NULL && which == PGJQ_IN_RESULT)
		return;					/* a result rewritten: no event */
	if (which != PGJQ_IN_JOB && oldtup == NULL)
		/* the job's final row: wake its awaiters at commit */
		pgjq_waiters_job_ended(DatumGetInt64(heap_getattr(newtup, t->job_id, desc, &isnull)));
	pgjq_counters_add(queue_id, priority, pgjq_state_counter(state), 1);
	if (which == PGJQ_IN_JOB)
		note_bound(newtup, desc, t, state, true);

	if (which == PGJQ_IN_JOB && oldtup == NULL)
	{
		/* a new job, unless it is a dead letter coming back */
		(void) heap_getattr(newtup, t->lease_token, desc, &isnull);
		if (isnull)
			pgjq_counters_add(queue_id, priority, PGJQ_C_ENQUEUED, 1);
	}
	else if (which == PGJQ_IN_JOB &&
			 DatumGetChar(heap_getattr(oldtup, t->state, desc, &isnull)) == PGJQ_STATE_LEASED &&
			 state != PGJQ_STATE_LEASED)
		pgjq_counters_add(queue_id, priority, PGJQ_C_FAILED, 1);	/* retried */
	else if (which == PGJQ_IN_DEAD_LETTER && oldtup == NULL)
	{
		pgjq_counters_add(queue_id, priority, PGJQ_C_DEAD_LETTERED, 1);
		pgjq_counters_add(queue_id, priority, PGJQ_C_FAILED, 1);
	}
}

/*
 * jq.count_trigger() is a row trigger on jq.job, jq.job_result and
 * jq.dead_letter (TG_ARGV[0] names which): BEFORE INSERT, which costs no
 * after-trigger event, and AFTER UPDATE and DELETE, which see the row
 * version the statement really changed without making the executor lock
 * the row first (a BEFORE ROW trigger on UPDATE or DELETE does, and the
 * lock of a row another transaction locked is WAL-logged).  Either way the
 * trigger runs in the (sub)transaction of the change.  BEFORE or AFTER
 * both count right: version 0.1.0 declared every one BEFORE, and this
 * library serves a 0.1.0 schema until ALTER EXTENSION pgjq UPDATE.
 */
Datum
pgjq_count_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;
	const char *relname;
	int			which;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "pgjq: count_trigger must be a row trigger with one argument");

	relname = trigdata->tg_trigger->tgargs[0];
	if (strcmp(relname, "job") == 0)
		which = PGJQ_IN_JOB;
	else if (strcmp(relname, "job_result") == 0)
		which = PGJQ_IN_RESULT;
	else if (strcmp(relname, "dead_letter") == 0)
		which = PGJQ_IN_DEAD_LETTER;
	else
		elog(ERROR, "pgjq: count_trigger on unknown table \"%s\"", relname);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		newtup = trigdata->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		oldtup = trigdata->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		oldtup = trigdata->tg_trigtuple;
		newtup = trigdata->tg_newtuple;
	}
	pgjq_count_change(trigdata->tg_relation, which, oldtup, newtup);
	return PointerGetDatum(newtup != NULL ? newtup : oldtup);
}
