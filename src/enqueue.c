/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *	  jq_enqueue and jq_enqueue_batch: jobs enter a queue inside the
 *	  caller's transaction.
 *
 * A job is a row in jq.job, so it exists exactly when the enqueuing
 * transaction commits.  The rows go in through the table and index access
 * methods (pgjq_hot_insert in hotpath.c: a batch is one heap_multi_insert),
 * or with an INSERT statement when the table was extended by its owner.
 * Nothing here notifies anyone: NOTIFY would take a cluster-wide lock at
 * commit and serialise every producer.
 *
 * Idempotency keys: an enqueue with a key first claims the key in
 * jq.idempotency_key, whose primary key (queue_id, key) is the arbiter:
 * of two concurrent enqueues of one key, the second waits in the unique
 * index and then finds the first's job.  No check-then-insert race.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/enqueue.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "hotpath.h"
#include "keys.h"
#include "queue.h"
#include "statements.h"
#include "usage.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(pgjq_enqueue);
PG_FUNCTION_INFO_V1(pgjq_enqueue_batch);

/* the options shared by both forms of enqueue */
typedef struct EnqueueOptions
{
	char	   *queue_name;
	int16		priority;
	TimestampTz run_at;
	TimestampTz enqueued_at;
	char		state;
} EnqueueOptions;

/*
 * read_enqueue_options checks the queue, priority and run_at arguments,
 * which sit at the same positions in both forms.  A NULL priority or run_at
 * means the default (0, now), so a client library that always binds every
 * parameter need not know the defaults.
 */
static void
read_enqueue_options(FunctionCallInfo fcinfo, EnqueueOptions *opts)
{
	int32		priority = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue name must not be null")));
	opts->queue_name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (!PG_ARGISNULL(2))
		priority = PG_GETARG_INT32(2);
	if (priority < PGJQ_LIMIT_PRIORITY_MIN || priority > PGJQ_LIMIT_PRIORITY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("priority must be between %d and %d",
						PGJQ_LIMIT_PRIORITY_MIN, PGJQ_LIMIT_PRIORITY_MAX),
				 errdetail("Got %d.", priority),
				 errhint("Higher priorities are served first; the default is 0.")));
	opts->priority = (int16) priority;

	/* the database's clock, never the client's */
	opts->enqueued_at = GetCurrentTimestamp();
	opts->run_at = PG_ARGISNULL(3) ? opts->enqueued_at : PG_GETARG_TIMESTAMPTZ(3);
	if (TIMESTAMP_NOT_FINITE(opts->run_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run_at must be a finite timestamp")));

	opts->state = opts->run_at > opts->enqueued_at ?
		PGJQ_STATE_SCHEDULED : PGJQ_STATE_READY;
}

/*
 * set_enqueue_params fills the parameters that both enqueue plans share:
 * $1 queue_id .. $5 enqueued_at; $6 (the payload or payloads) is the
 * caller's.
 */
static void
set_enqueue_params(Datum *values, const PgjqQueue *queue,
				   const EnqueueOptions *opts)
{
	values[0] = Int32GetDatum(queue->queue_id);
	values[1] = CharGetDatum(opts->state);
	values[2] = Int16GetDatum(opts->priority);
	values[3] = TimestampTzGetDatum(opts->run_at);
	values[4] = TimestampTzGetDatum(opts->enqueued_at);
}

/*
 * The position of the array element being checked, for the error context
 * of a batch: "element 3 of payloads".
 */
typedef struct ElementContext
{
	const char *array;
	int			element;		/* 1-based; 0 while no element is checked */
} ElementContext;

static void
element_errcontext(void *arg)
{
	ElementContext *c = (ElementContext *) arg;

	if (c->element > 0)
		errcontext("element %d of %s", c->element, c->array);
}

/*
 * check_payload enforces the payload rules: not null, a JSON object or
 * array (so a worker can always add fields to it and a stray scalar is
 * caught at the door), and at most the queue's max_payload_bytes in
 * jsonb's binary form.
 */
static void
check_payload(Jsonb *payload, const PgjqQueue *queue, const char *queue_name)
{
	Size		size;

	if (payload == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Pass '{}' for a job that needs no input.")));

	if (JB_ROOT_IS_SCALAR(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must be a JSON object or array"),
				 errhint("Wrap the value in an object, for example '{\"value\": 42}'.")));

	size = VARSIZE(payload) - VARHDRSZ;
	if (size > (Size) queue->max_payload_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload of %zu bytes exceeds the limit of queue \"%s\"",
						size, queue_name),
				 errdetail("The limit is %d bytes.", queue->max_payload_bytes),
				 errhint("Store large inputs elsewhere and enqueue a reference, or raise the limit with jq.jq_alter_queue(max_payload_bytes => ...).")));
}

/*
 * check_key raises an error unless key is a usable idempotency key.
 */
static void
check_key(text *key)
{
	int			len = VARSIZE_ANY_EXHDR(key);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency key must not be empty"),
				 errhint("Pass NULL for a job without a key.")));
	if (len > PGJQ_LIMIT_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("idempotency key of %d bytes is too long", len),
				 errdetail("The limit is %d bytes.", PGJQ_LIMIT_KEY_MAXLEN),
				 errhint("Use a digest of the request, for example md5 or sha256 in hex.")));
}

/*
 * resolve_key claims an idempotency key for a new job, or finds the job
 * that holds it.  Sets *job_id and returns true when the caller must insert
 * a new job under that id, false when the key's job already exists.
 *
 * A key holds while its job is unfinished and for the queue's
 * idempotency_window after it was claimed; an expired key is handed to the
 * new job.  The loop covers a key purged between the failed claim and the
 * lookup; it cannot spin, as a purge only removes expired keys.
 */
static bool
resolve_key(const PgjqQueue *queue, text *key, TimestampTz now, int64 *job_id)
{
	Datum		values[3];
	bool		isnull;

	values[0] = Int32GetDatum(queue->queue_id);
	values[1] = PointerGetDatum(key);
	values[2] = TimestampTzGetDatum(now);

	for (int tries = 0; tries < 3; tries++)
	{
		pgjq_stmt_execute(PGJQ_STMT_KEY_CLAIM, values, NULL, SPI_OK_INSERT_RETURNING);
		if (SPI_processed == 1)
		{
			*job_id = DatumGetInt64(pgjq_stmt_value(0, KEY_JOB_ID, &isnull));
			return true;
		}

		pgjq_stmt_execute(PGJQ_STMT_KEY_LOOKUP, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 1)
		{
			*job_id = DatumGetInt64(pgjq_stmt_value(0, KEY_JOB_ID, &isnull));
			if (DatumGetBool(pgjq_stmt_value(0, KEY_LIVE, &isnull)))
				return false;

			pgjq_stmt_execute(PGJQ_STMT_KEY_REASSIGN, values, NULL,
							  SPI_OK_UPDATE_RETURNING);
			*job_id = DatumGetInt64(pgjq_stmt_value(0, KEY_JOB_ID, &isnull));
			return true;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not claim the idempotency key: it keeps changing concurrently"),
			 errhint("Retry the transaction.")));
	return false;				/* keep compiler quiet */
}

/*
 * check_batch raises an error unless batch_id names a batch of the queue.
 */
static void
check_batch(int64 batch_id, const PgjqQueue *queue, const char *queue_name)
{
	Datum		values[1];
	bool		isnull;

	values[0] = Int64GetDatum(batch_id);
	pgjq_stmt_execute(PGJQ_STMT_BATCH_LOOKUP, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("batch " INT64_FORMAT " does not exist", batch_id),
				 errhint("Create one with jq.jq_create_batch('%s').", queue_name)));
	if (DatumGetInt32(pgjq_stmt_value(0, BATCH_LOOKUP_QUEUE_ID, &isnull)) != queue->queue_id)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch " INT64_FORMAT " belongs to another queue than \"%s\"",
						batch_id, queue_name)));
}

/* add_to_batch records the jobs as members of the batch */
static void
add_to_batch(int64 batch_id, int64 *ids, int n)
{
	Datum		values[2];
	Datum	   *id_datums = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
		id_datums[i] = Int64GetDatum(ids[i]);
	values[0] = Int64GetDatum(batch_id);
	values[1] = PointerGetDatum(construct_array(id_datums, n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	pgjq_stmt_execute(PGJQ_STMT_BATCH_ADD, values, NULL, SPI_OK_INSERT);
}

/*
 * The columns given per job of a batch, one per payload: its job key, its
 * deadline and its cost, NULL where a job has none.
 */
typedef struct JobColumns
{
	Datum	   *keys;			/* NULL: no job has a key */
	bool	   *nulls;
	Datum	   *deadlines;		/* NULL: no job has a deadline */
	bool	   *deadline_nulls;
	Datum	   *costs;			/* NULL: no job has a cost (each costs 1) */
	bool	   *cost_nulls;
} JobColumns;

/*
 * check_deadline raises an error unless deadline can be a deadline of jobs
 * that run at run_at: a job that could never start is refused at the door.
 */
static void
check_deadline(TimestampTz deadline, TimestampTz run_at)
{
	if (TIMESTAMP_NOT_FINITE(deadline))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("deadline must be a finite timestamp"),
				 errhint("Pass NULL for a job without a deadline.")));
	if (deadline <= run_at)
	{
		/* timestamptz_to_str returns a static buffer: one call at a time */
		char	   *deadline_str = pstrdup(timestamptz_to_str(deadline));
		char	   *run_at_str = pstrdup(timestamptz_to_str(run_at));

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("deadline must be later than the job's run_at"),
				 errdetail("The deadline is %s and the job runs at %s.",
						   deadline_str, run_at_str),
				 errhint("A job not started by its deadline is never handed out.")));
	}
}

/* job_key_cstring returns the key of job i, or NULL */
static char *
job_key_cstring(const JobColumns *jk, int i)
{
	if (jk == NULL || jk->keys == NULL || jk->nulls[i])
		return NULL;
	return TextDatumGetCString(jk->keys[i]);
}

/* a job's key and cost, for admission */
typedef struct JobKeyCost
{
	char	   *key;			/* NULL: the default key */
	double		cost;
} JobKeyCost;

/* cmp_job_key orders jobs by key, the default key first */
static int
cmp_job_key(const void *a, const void *b)
{
	const char *x = ((const JobKeyCost *) a)->key;
	const char *y = ((const JobKeyCost *) b)->key;

	if (x == NULL || y == NULL)
		return (x != NULL) - (y != NULL);
	return strcmp(x, y);
}

/*
 * admit_jobs reserves the n jobs about to be inserted against their keys'
 * admission limits (keys.c), one reservation per distinct key, and raises
 * PJ001 for the first key they overfill, before anything is inserted; or
 * an error when a key is ordered and the jobs have a priority or run_at,
 * or when a job costs more than a whole period's budget of its queue or
 * key (it could never run).
 */
static void
admit_jobs(const PgjqQueue *queue, const EnqueueOptions *opts, const JobColumns *jk, int n)
{
	JobKeyCost *jobs;
	bool		in_order = opts->priority == 0 && opts->run_at == opts->enqueued_at;
	bool		costs = jk != NULL && jk->costs != NULL;
	double		max_cost = 1;

	/* costs are read only when given: a job without one costs 1 */
	for (int i = 0; costs && i < n; i++)
		if (!jk->cost_nulls[i])
			max_cost = Max(max_cost, pgjq_cost_double(jk->costs[i]));
	if (queue->rate_cost > 0 && max_cost > queue->rate_cost)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a job of cost %g exceeds the rate limit of queue \"%s\"",
						max_cost, queue->name),
				 errdetail("The queue's budget is %g per period: the job could never run.",
						   queue->rate_cost),
				 errhint("Split the job, or raise the queue's rate_cost.")));
	if (jk == NULL || jk->keys == NULL)
	{
		pgjq_keys_admit(queue, NULL, n, in_order, max_cost);	/* all of the default key */
		return;
	}

	jobs = palloc(sizeof(JobKeyCost) * n);
	for (int i = 0; i < n; i++)
	{
		jobs[i].key = job_key_cstring(jk, i);
		jobs[i].cost = !costs || jk->cost_nulls[i] ? 1 : pgjq_cost_double(jk->costs[i]);
	}
	qsort(jobs, n, sizeof(JobKeyCost), cmp_job_key);
	for (int i = 0; i < n;)
	{
		int			j = i + 1;
		double		key_max = jobs[i].cost;

		for (; j < n && cmp_job_key(&jobs[i], &jobs[j]) == 0; j++)
			key_max = Max(key_max, jobs[j].cost);
		pgjq_keys_admit(queue, jobs[i].key, j - i, in_order, key_max);
		i = j;
	}
	pfree(jobs);
}

/*
 * insert_jobs adds one job per payload to the queue, with the ids given in
 * ids[] (claimed by idempotency keys) or, without ids_given, drawn from
 * jq.job_id_seq in payload order and returned there.  Through the table
 * and index access methods (pgjq_hot_insert) while jq.job is pgjq's own;
 * with the INSERT statement when columns, triggers, CHECK constraints or
 * row security were added to it.  Runs inside SPI.
 */
static void
insert_jobs(const PgjqQueue *queue, const EnqueueOptions *opts,
			Datum *payloads, const JobColumns *jk, int n, int64 *ids, bool ids_given)
{
	PgjqHot    *hot = pgjq_hot_begin(pgjq_lock_job_table());
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', 'n', ' ', ' ', ' '};
	bool		keyed_schema = pgjq_schema_keys();

	admit_jobs(queue, opts, jk, n);

	if (pgjq_hot_can_insert(hot))
	{
		Oid			seq = InvalidOid;

		if (!ids_given)
		{
			seq = get_relname_relid("job_id_seq", get_namespace_oid(PGJQ_SCHEMA, false));
			if (!OidIsValid(seq))
				elog(ERROR, "pgjq: sequence jq.job_id_seq not found");
		}
		pgjq_hot_insert(hot, queue->queue_id, opts->state, opts->priority,
						opts->run_at, opts->enqueued_at, payloads,
						jk != NULL ? jk->keys : NULL, jk != NULL ? jk->nulls : NULL,
						jk != NULL ? jk->deadlines : NULL,
						jk != NULL ? jk->deadline_nulls : NULL,
						jk != NULL ? jk->costs : NULL,
						jk != NULL ? jk->cost_nulls : NULL,
						n, seq, ids);
		pgjq_hot_end(hot);
		return;
	}
	pgjq_hot_end(hot);

	set_enqueue_params(values, queue, opts);
	values[5] = PointerGetDatum(construct_array(payloads, n, JSONBOID,
												-1, false, TYPALIGN_INT));
	if (ids_given)
	{
		Datum	   *id_datums = palloc(sizeof(Datum) * n);

		for (int i = 0; i < n; i++)
			id_datums[i] = Int64GetDatum(ids[i]);
		values[6] = PointerGetDatum(construct_array(id_datums, n, INT8OID,
													sizeof(int64), FLOAT8PASSBYVAL,
													TYPALIGN_DOUBLE));
		nulls[6] = ' ';
	}
	if (keyed_schema)
	{
		Datum	   *key_datums = palloc0(sizeof(Datum) * n);
		bool	   *key_nulls = palloc(sizeof(bool) * n);
		int			dims[1] = {n};
		int			lbs[1] = {1};

		for (int i = 0; i < n; i++)
		{
			key_nulls[i] = jk == NULL || jk->keys == NULL || jk->nulls[i];
			if (!key_nulls[i])
				key_datums[i] = jk->keys[i];
		}
		values[7] = PointerGetDatum(construct_md_array(key_datums, key_nulls, 1, dims, lbs,
													   TEXTOID, -1, false, TYPALIGN_INT));
		if (jk != NULL && jk->deadlines != NULL)
			values[8] = PointerGetDatum(construct_md_array(jk->deadlines, jk->deadline_nulls,
														   1, dims, lbs, TIMESTAMPTZOID,
														   sizeof(TimestampTz), true,
														   TYPALIGN_DOUBLE));
		else
			nulls[8] = 'n';
		if (jk != NULL && jk->costs != NULL)
			values[9] = PointerGetDatum(construct_md_array(jk->costs, jk->cost_nulls,
														   1, dims, lbs, NUMERICOID, -1,
														   false, TYPALIGN_INT));
		else
			nulls[9] = 'n';
	}
	pgjq_stmt_execute(keyed_schema ? PGJQ_STMT_ENQUEUE_BATCH_KEYS : PGJQ_STMT_ENQUEUE_BATCH,
					  values, nulls, SPI_OK_INSERT_RETURNING);
	if (SPI_processed != (uint64) n)
		elog(ERROR, "pgjq: enqueue inserted " UINT64_FORMAT " rows for %d payloads",
			 SPI_processed, n);
	if (ids_given)
		return;

	/*
	 * Ids were drawn in insertion order, which is payload order; sorting
	 * makes the result independent of the order RETURNING emits rows in.
	 */
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(pgjq_stmt_value(i, ENQUEUE_ID, &isnull));
	}
	qsort(ids, n, sizeof(int64), pgjq_cmp_int64);
}

/*
 * jq.jq_enqueue(queue, payload, priority, run_at, idempotency_key, batch_id)
 * returns the
 * new job's id, or the id of the job that already holds the key.
 */
Datum
pgjq_enqueue(PG_FUNCTION_ARGS)
{
	EnqueueOptions opts;
	PgjqQueue	queue;
	Jsonb	   *payload;
	Datum		payload_datum;
	int64		job_id;
	text	   *key = NULL;
	Datum		job_key_datum = (Datum) 0;
	bool		job_key_null = true;
	Datum		deadline_datum = (Datum) 0;
	bool		deadline_null = true;
	Datum		cost_datum = (Datum) 0;
	bool		cost_null = true;
	JobColumns	jk = {0};

	read_enqueue_options(fcinfo, &opts);
	payload = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	if (!PG_ARGISNULL(4))
	{
		key = PG_GETARG_TEXT_PP(4);
		check_key(key);
	}
	/* the job key: a schema older than 0.4.0 has no such argument */
	if (PG_NARGS() > 6 && !PG_ARGISNULL(6))
	{
		text	   *k = PG_GETARG_TEXT_PP(6);

		pgjq_keys_check_key(VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k));
		job_key_datum = PointerGetDatum(k);
		job_key_null = false;
		jk.keys = &job_key_datum;
		jk.nulls = &job_key_null;
	}
	/* the deadline: 0.4.0 on */
	if (PG_NARGS() > 7 && !PG_ARGISNULL(7))
	{
		check_deadline(PG_GETARG_TIMESTAMPTZ(7), opts.run_at);
		deadline_datum = PG_GETARG_DATUM(7);
		deadline_null = false;
		jk.deadlines = &deadline_datum;
		jk.deadline_nulls = &deadline_null;
	}
	/* the cost: 0.4.0 on */
	if (PG_NARGS() > 8 && !PG_ARGISNULL(8))
	{
		pgjq_check_cost(PG_GETARG_NUMERIC(8), "cost");
		cost_datum = PG_GETARG_DATUM(8);
		cost_null = false;
		jk.costs = &cost_datum;
		jk.cost_nulls = &cost_null;
	}

	SPI_connect();
	pgjq_lookup_queue(opts.queue_name, &queue, true);
	check_payload(payload, &queue, opts.queue_name);
	if (!PG_ARGISNULL(5))
		check_batch(PG_GETARG_INT64(5), &queue, opts.queue_name);

	if (key != NULL)
	{
		if (!resolve_key(&queue, key, opts.enqueued_at, &job_id))
		{
			if (!PG_ARGISNULL(5))
				add_to_batch(PG_GETARG_INT64(5), &job_id, 1);
			SPI_finish();
			PG_RETURN_INT64(job_id);
		}
	}

	payload_datum = JsonbPGetDatum(payload);
	insert_jobs(&queue, &opts, &payload_datum, &jk, 1, &job_id, key != NULL);
	if (!PG_ARGISNULL(5))
		add_to_batch(PG_GETARG_INT64(5), &job_id, 1);
	SPI_finish();

	if (opts.state == PGJQ_STATE_READY)
		pgjq_wake_at_commit(queue.queue_id, 1);

	PG_RETURN_INT64(job_id);
}

/* a key of a batch and its position, for finding repeated keys */
typedef struct KeyRef
{
	text	   *key;
	int			pos;
} KeyRef;

static int
cmp_keyref(const void *a, const void *b)
{
	const KeyRef *x = (const KeyRef *) a;
	const KeyRef *y = (const KeyRef *) b;
	int			lx = VARSIZE_ANY_EXHDR(x->key);
	int			ly = VARSIZE_ANY_EXHDR(y->key);
	int			c = memcmp(VARDATA_ANY(x->key), VARDATA_ANY(y->key), Min(lx, ly));

	if (c == 0)
		c = (lx > ly) - (lx < ly);
	if (c == 0)
		c = (x->pos > y->pos) - (x->pos < y->pos);
	return c;
}

/*
 * enqueue_keyed_batch is jq_enqueue_batch with idempotency keys: each key
 * is resolved as jq_enqueue would, a key repeated within the batch yields
 * the job of its first occurrence, and the new jobs go in with one INSERT
 * under explicit ids.  Fills ids[] in payload order.  Runs inside SPI.
 */
static void
enqueue_keyed_batch(const PgjqQueue *queue, const EnqueueOptions *opts,
					Datum *payloads, const JobColumns *jk, int n, Datum *keys,
					bool *key_nulls, int64 *ids)
{
	JobColumns	ins_jk = {0};
	int		   *first = palloc(sizeof(int) * n);
	bool	   *fresh = palloc(sizeof(bool) * n);
	KeyRef	   *refs = palloc(sizeof(KeyRef) * n);
	int			nrefs = 0;
	int			nkeyless = 0;
	int			ninsert = 0;
	Datum	   *ins_payloads;
	int64	   *ins_ids;
	Datum		values[1];

	/* find repeated keys: sort by (key, position), runs share a first */
	for (int i = 0; i < n; i++)
	{
		first[i] = i;
		if (!key_nulls[i])
		{
			refs[nrefs].key = DatumGetTextPP(keys[i]);
			refs[nrefs].pos = i;
			nrefs++;
		}
	}
	qsort(refs, nrefs, sizeof(KeyRef), cmp_keyref);
	for (int r = 1; r < nrefs; r++)
		if (VARSIZE_ANY_EXHDR(refs[r].key) == VARSIZE_ANY_EXHDR(refs[r - 1].key) &&
			memcmp(VARDATA_ANY(refs[r].key), VARDATA_ANY(refs[r - 1].key),
				   VARSIZE_ANY_EXHDR(refs[r].key)) == 0)
			first[refs[r].pos] = first[refs[r - 1].pos];

	/*
	 * Claim each distinct key, in key order: two batches that share keys
	 * then wait for each other in the same order and cannot deadlock.
	 */
	for (int i = 0; i < n; i++)
	{
		fresh[i] = key_nulls[i];
		if (key_nulls[i])
			nkeyless++;
	}
	for (int r = 0; r < nrefs; r++)
	{
		int			i = refs[r].pos;

		if (first[i] == i)
			fresh[i] = resolve_key(queue, refs[r].key, opts->enqueued_at, &ids[i]);
	}

	/* ids for the keyless payloads, drawn in one round trip */
	if (nkeyless > 0)
	{
		int			k = 0;

		values[0] = Int32GetDatum(nkeyless);
		pgjq_stmt_execute(PGJQ_STMT_NEXT_IDS, values, NULL, SPI_OK_SELECT);
		for (int i = 0; i < n; i++)
		{
			bool		isnull;

			if (key_nulls[i])
				ids[i] = DatumGetInt64(pgjq_stmt_value(k++, NEXT_IDS_ID, &isnull));
		}
	}

	ins_payloads = palloc(sizeof(Datum) * n);
	ins_ids = palloc(sizeof(int64) * n);
	if (jk->keys != NULL)
	{
		ins_jk.keys = palloc(sizeof(Datum) * n);
		ins_jk.nulls = palloc(sizeof(bool) * n);
	}
	if (jk->deadlines != NULL)
	{
		ins_jk.deadlines = palloc(sizeof(Datum) * n);
		ins_jk.deadline_nulls = palloc(sizeof(bool) * n);
	}
	if (jk->costs != NULL)
	{
		ins_jk.costs = palloc(sizeof(Datum) * n);
		ins_jk.cost_nulls = palloc(sizeof(bool) * n);
	}
	for (int i = 0; i < n; i++)
	{
		if (first[i] != i)
			ids[i] = ids[first[i]];
		else if (fresh[i])
		{
			ins_payloads[ninsert] = payloads[i];
			ins_ids[ninsert] = ids[i];
			if (jk->keys != NULL)
			{
				ins_jk.keys[ninsert] = jk->keys[i];
				ins_jk.nulls[ninsert] = jk->nulls[i];
			}
			if (jk->deadlines != NULL)
			{
				ins_jk.deadlines[ninsert] = jk->deadlines[i];
				ins_jk.deadline_nulls[ninsert] = jk->deadline_nulls[i];
			}
			if (jk->costs != NULL)
			{
				ins_jk.costs[ninsert] = jk->costs[i];
				ins_jk.cost_nulls[ninsert] = jk->cost_nulls[i];
			}
			ninsert++;
		}
	}
	if (ninsert > 0)
		insert_jobs(queue, opts, ins_payloads, &ins_jk, ninsert, ins_ids, true);
}

/*
 * jq.jq_enqueue_batch(queue, payloads, priority, run_at, idempotency_keys)
 * enqueues one job per element of payloads with one INSERT and returns
 * their ids in the order of payloads.  Every payload and key is checked
 * before anything is inserted, so a bad element rejects the whole batch
 * with its position in the message.  With keys, an element whose key
 * already holds a job gets that job's id instead of a new job.
 */
Datum
pgjq_enqueue_batch(PG_FUNCTION_ARGS)
{
	EnqueueOptions opts;
	PgjqQueue	queue;
	ArrayType  *payloads;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	int64	   *ids;
	Datum	   *id_datums;
	Datum	   *keys = NULL;
	bool	   *key_nulls = NULL;
	JobColumns	jk = {0};
	ElementContext element = {NULL, 0};
	ErrorContextCallback errcallback;

	/* an error about one element says which */
	errcallback.callback = element_errcontext;
	errcallback.arg = &element;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	read_enqueue_options(fcinfo, &opts);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payloads must not be null")));
	payloads = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(payloads) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("payloads must be a one-dimensional array")));
	deconstruct_array(payloads, JSONBOID, -1, false, TYPALIGN_INT,
					  &elems, &elem_nulls, &nelems);
	if (nelems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payloads must not be empty")));
	if (nelems > PGJQ_LIMIT_BATCH_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a batch may hold at most %d payloads", PGJQ_LIMIT_BATCH_MAX),
				 errdetail("Got %d.", nelems),
				 errhint("Split the batch into several calls.")));

	if (!PG_ARGISNULL(4))
	{
		ArrayType  *keys_arr = PG_GETARG_ARRAYTYPE_P(4);
		int			nkeys;

		if (ARR_NDIM(keys_arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("idempotency_keys must be a one-dimensional array")));
		deconstruct_array(keys_arr, TEXTOID, -1, false, TYPALIGN_INT,
						  &keys, &key_nulls, &nkeys);
		if (nkeys != nelems)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("idempotency_keys must have as many elements as payloads"),
					 errdetail("payloads has %d elements, idempotency_keys has %d.",
							   nelems, nkeys),
					 errhint("Use NULL elements for payloads without a key.")));
		element.array = "idempotency_keys";
		for (int i = 0; i < nkeys; i++)
		{
			element.element = i + 1;
			if (!key_nulls[i])
				check_key(DatumGetTextPP(keys[i]));
		}
		element.element = 0;
	}

	/* the job keys: a schema older than 0.4.0 has no such argument */
	if (PG_NARGS() > 6 && !PG_ARGISNULL(6))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(6);
		int			njk;

		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("keys must be a one-dimensional array")));
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
						  &jk.keys, &jk.nulls, &njk);
		if (njk != nelems)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("keys must have as many elements as payloads"),
					 errdetail("payloads has %d elements, keys has %d.", nelems, njk),
					 errhint("Use NULL elements for jobs without a key.")));
		element.array = "keys";
		for (int i = 0; i < njk; i++)
		{
			element.element = i + 1;
			if (!jk.nulls[i])
			{
				text	   *k = DatumGetTextPP(jk.keys[i]);

				jk.keys[i] = PointerGetDatum(k);
				pgjq_keys_check_key(VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k));
			}
		}
		element.element = 0;
	}

	/* the deadlines: 0.4.0 on */
	if (PG_NARGS() > 7 && !PG_ARGISNULL(7))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(7);
		int			nd;

		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("deadlines must be a one-dimensional array")));
		deconstruct_array(arr, TIMESTAMPTZOID, sizeof(TimestampTz), true, TYPALIGN_DOUBLE,
						  &jk.deadlines, &jk.deadline_nulls, &nd);
		if (nd != nelems)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("deadlines must have as many elements as payloads"),
					 errdetail("payloads has %d elements, deadlines has %d.", nelems, nd),
					 errhint("Use NULL elements for jobs without a deadline.")));
		element.array = "deadlines";
		for (int i = 0; i < nd; i++)
		{
			element.element = i + 1;
			if (!jk.deadline_nulls[i])
				check_deadline(DatumGetTimestampTz(jk.deadlines[i]), opts.run_at);
		}
		element.element = 0;
	}

	/* the costs: 0.4.0 on */
	if (PG_NARGS() > 8 && !PG_ARGISNULL(8))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(8);
		int			nc;

		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("costs must be a one-dimensional array")));
		deconstruct_array(arr, NUMERICOID, -1, false, TYPALIGN_INT,
						  &jk.costs, &jk.cost_nulls, &nc);
		if (nc != nelems)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("costs must have as many elements as payloads"),
					 errdetail("payloads has %d elements, costs has %d.", nelems, nc),
					 errhint("Use NULL elements for jobs of the default cost, 1.")));
		element.array = "costs";
		for (int i = 0; i < nc; i++)
		{
			element.element = i + 1;
			if (!jk.cost_nulls[i])
				pgjq_check_cost(DatumGetNumeric(jk.costs[i]), "cost");
		}
		element.element = 0;
	}

	/* allocated before SPI_connect: SPI_finish frees SPI's own memory */
	ids = palloc(sizeof(int64) * nelems);

	SPI_connect();
	pgjq_lookup_queue(opts.queue_name, &queue, true);
	element.array = "payloads";
	for (int i = 0; i < nelems; i++)
	{
		element.element = i + 1;
		check_payload(elem_nulls[i] ? NULL : DatumGetJsonbP(elems[i]),
					  &queue, opts.queue_name);
	}
	element.element = 0;
	if (!PG_ARGISNULL(5))
		check_batch(PG_GETARG_INT64(5), &queue, opts.queue_name);

	if (keys != NULL)
		enqueue_keyed_batch(&queue, &opts, elems, &jk, nelems, keys, key_nulls, ids);
	else
		insert_jobs(&queue, &opts, elems, &jk, nelems, ids, false);
	if (!PG_ARGISNULL(5))
		add_to_batch(PG_GETARG_INT64(5), ids, nelems);
	SPI_finish();

	if (opts.state == PGJQ_STATE_READY)
		pgjq_wake_at_commit(queue.queue_id, nelems);
	error_context_stack = errcallback.previous;

	id_datums = palloc(sizeof(Datum) * nelems);
	for (int i = 0; i < nelems; i++)
		id_datums[i] = Int64GetDatum(ids[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(id_datums, nelems, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}
