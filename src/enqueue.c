/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *	  jq_enqueue and jq_enqueue_batch: jobs enter a queue inside the
 *	  caller's transaction.
 *
 * A job is a row in jq.job, so it exists exactly when the enqueuing
 * transaction commits.  Nothing here notifies anyone: NOTIFY would take a
 * cluster-wide lock at commit and serialise every producer.
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

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(pgjq_enqueue);
PG_FUNCTION_INFO_V1(pgjq_enqueue_batch);
PG_FUNCTION_INFO_V1(pgjq_check_queue_name_sql);
PG_FUNCTION_INFO_V1(pgjq_wake_at_commit_sql);

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
	if (priority < PGJQ_PRIORITY_MIN || priority > PGJQ_PRIORITY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("priority must be between %d and %d",
						PGJQ_PRIORITY_MIN, PGJQ_PRIORITY_MAX),
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
 * pgjq_check_payload enforces the payload rules: not null, a JSON object
 * or array (so a worker can always add fields to it and a stray scalar is
 * caught at the door), and at most the queue's max_payload_bytes in
 * jsonb's binary form.  element is the 1-based position in a batch, or 0.
 */
void
pgjq_check_payload(Jsonb *payload, const PgjqQueue *queue,
				   const char *queue_name, int element)
{
	char		where[64] = "";
	Size		size;

	if (element > 0)
		snprintf(where, sizeof(where), " (element %d of payloads)", element);

	if (payload == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null%s", where),
				 errhint("Pass '{}' for a job that needs no input.")));

	if (JB_ROOT_IS_SCALAR(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must be a JSON object or array%s", where),
				 errhint("Wrap the value in an object, for example '{\"value\": 42}'.")));

	size = VARSIZE(payload) - VARHDRSZ;
	if (size > (Size) queue->max_payload_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload of %zu bytes exceeds the limit of queue \"%s\"%s",
						size, queue_name, where),
				 errdetail("The limit is %d bytes.", queue->max_payload_bytes),
				 errhint("Store large inputs elsewhere and enqueue a reference, or raise the limit with jq_alter_queue(max_payload_bytes => ...).")));
}

/*
 * check_key raises an error unless key is a usable idempotency key.
 */
static void
check_key(text *key, int element)
{
	int			len = VARSIZE_ANY_EXHDR(key);
	char		where[64] = "";

	if (element > 0)
		snprintf(where, sizeof(where), " (element %d of idempotency_keys)", element);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency key must not be empty%s", where),
				 errhint("Pass NULL for a job without a key.")));
	if (len > PGJQ_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("idempotency key of %d bytes is too long%s", len, where),
				 errdetail("The limit is %d bytes.", PGJQ_KEY_MAXLEN),
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
		pgjq_execute_plan(PGJQ_PLAN_KEY_CLAIM, values, NULL, SPI_OK_INSERT_RETURNING);
		if (SPI_processed == 1)
		{
			*job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
			return true;
		}

		pgjq_execute_plan(PGJQ_PLAN_KEY_LOOKUP, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 1)
		{
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;

			*job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			if (DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull)))
				return false;

			pgjq_execute_plan(PGJQ_PLAN_KEY_REASSIGN, values, NULL,
							  SPI_OK_UPDATE_RETURNING);
			*job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
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
	pgjq_execute_plan(PGJQ_PLAN_BATCH_LOOKUP, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("batch " INT64_FORMAT " does not exist", batch_id),
				 errhint("Create one with jq_create_batch('%s').", queue_name)));
	if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									1, &isnull)) != queue->queue_id)
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
	pgjq_execute_plan(PGJQ_PLAN_BATCH_ADD, values, NULL, SPI_OK_INSERT);
}

/*
 * jq_enqueue(queue, payload, priority, run_at, idempotency_key, batch_id)
 * returns the
 * new job's id, or the id of the job that already holds the key.
 */
Datum
pgjq_enqueue(PG_FUNCTION_ARGS)
{
	EnqueueOptions opts;
	PgjqQueue	queue;
	Jsonb	   *payload;
	Datum		values[7];
	bool		isnull;
	int64		job_id;

	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', 'n'};
	text	   *key = NULL;

	read_enqueue_options(fcinfo, &opts);
	payload = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	if (!PG_ARGISNULL(4))
	{
		key = PG_GETARG_TEXT_PP(4);
		check_key(key, 0);
	}

	SPI_connect();
	pgjq_lookup_queue(opts.queue_name, &queue, true);
	pgjq_check_payload(payload, &queue, opts.queue_name, 0);
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
		values[6] = Int64GetDatum(job_id);
		nulls[6] = ' ';
	}

	set_enqueue_params(values, &queue, &opts);
	values[5] = JsonbPGetDatum(payload);
	pgjq_execute_plan(PGJQ_PLAN_ENQUEUE, values, nulls, SPI_OK_INSERT_RETURNING);
	if (SPI_processed != 1)
		elog(ERROR, "pgjq: enqueue inserted " UINT64_FORMAT " rows", SPI_processed);
	job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	if (!PG_ARGISNULL(5))
		add_to_batch(PG_GETARG_INT64(5), &job_id, 1);
	SPI_finish();

	if (opts.state == PGJQ_STATE_READY)
		pgjq_wake_at_commit(queue.queue_id);

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
					Datum *payloads, int n, Datum *keys, bool *key_nulls,
					int64 *ids)
{
	int		   *first = palloc(sizeof(int) * n);
	bool	   *fresh = palloc(sizeof(bool) * n);
	KeyRef	   *refs = palloc(sizeof(KeyRef) * n);
	int			nrefs = 0;
	int			nkeyless = 0;
	int			ninsert = 0;
	Datum	   *ins_payloads;
	Datum	   *ins_ids;
	Datum		values[7];

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
		pgjq_execute_plan(PGJQ_PLAN_NEXT_IDS, values, NULL, SPI_OK_SELECT);
		for (int i = 0; i < n; i++)
		{
			bool		isnull;

			if (key_nulls[i])
				ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k++],
													 SPI_tuptable->tupdesc, 1, &isnull));
		}
	}

	ins_payloads = palloc(sizeof(Datum) * n);
	ins_ids = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		if (first[i] != i)
			ids[i] = ids[first[i]];
		else if (fresh[i])
		{
			ins_payloads[ninsert] = payloads[i];
			ins_ids[ninsert] = Int64GetDatum(ids[i]);
			ninsert++;
		}
	}
	if (ninsert == 0)
		return;

	set_enqueue_params(values, queue, opts);
	values[5] = PointerGetDatum(construct_array(ins_payloads, ninsert, JSONBOID,
												-1, false, TYPALIGN_INT));
	values[6] = PointerGetDatum(construct_array(ins_ids, ninsert, INT8OID,
												sizeof(int64), FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	pgjq_execute_plan(PGJQ_PLAN_ENQUEUE_BATCH, values, NULL, SPI_OK_INSERT_RETURNING);
	if (SPI_processed != (uint64) ninsert)
		elog(ERROR, "pgjq: keyed batch enqueue inserted " UINT64_FORMAT " rows for %d jobs",
			 SPI_processed, ninsert);
}

/*
 * jq_enqueue_batch(queue, payloads, priority, run_at, idempotency_keys)
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
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', 'n'};
	Datum	   *keys = NULL;
	bool	   *key_nulls = NULL;

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
	if (nelems > PGJQ_BATCH_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a batch may hold at most %d payloads", PGJQ_BATCH_MAX),
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
		for (int i = 0; i < nkeys; i++)
			if (!key_nulls[i])
				check_key(DatumGetTextPP(keys[i]), i + 1);
	}

	/* allocated before SPI_connect: SPI_finish frees SPI's own memory */
	ids = palloc(sizeof(int64) * nelems);

	SPI_connect();
	pgjq_lookup_queue(opts.queue_name, &queue, true);
	for (int i = 0; i < nelems; i++)
		pgjq_check_payload(elem_nulls[i] ? NULL : DatumGetJsonbP(elems[i]),
						   &queue, opts.queue_name, i + 1);
	if (!PG_ARGISNULL(5))
		check_batch(PG_GETARG_INT64(5), &queue, opts.queue_name);

	if (keys != NULL)
		enqueue_keyed_batch(&queue, &opts, elems, nelems, keys, key_nulls, ids);
	else
	{
		set_enqueue_params(values, &queue, &opts);
		values[5] = PointerGetDatum(payloads);
		pgjq_execute_plan(PGJQ_PLAN_ENQUEUE_BATCH, values, nulls,
						  SPI_OK_INSERT_RETURNING);
		if (SPI_processed != (uint64) nelems)
			elog(ERROR, "pgjq: batch enqueue inserted " UINT64_FORMAT " rows for %d payloads",
				 SPI_processed, nelems);

		/*
		 * Ids were drawn in insertion order, which is payload order;
		 * sorting makes the result independent of the order RETURNING
		 * emits rows in.
		 */
		for (int i = 0; i < nelems; i++)
		{
			bool		isnull;

			ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												 SPI_tuptable->tupdesc, 1, &isnull));
		}
		qsort(ids, nelems, sizeof(int64), pgjq_cmp_int64);
	}
	if (!PG_ARGISNULL(5))
		add_to_batch(PG_GETARG_INT64(5), ids, nelems);
	SPI_finish();

	if (opts.state == PGJQ_STATE_READY)
		pgjq_wake_at_commit(queue.queue_id);

	id_datums = palloc(sizeof(Datum) * nelems);
	for (int i = 0; i < nelems; i++)
		id_datums[i] = Int64GetDatum(ids[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(id_datums, nelems, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * jq.check_queue_name(name) is the SQL face of pgjq_check_queue_name, for
 * the queue management functions written in PL/pgSQL.
 */
Datum
pgjq_check_queue_name_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue name must not be null")));
	pgjq_check_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/*
 * jq.wake_at_commit(queue_id) lets the PL/pgSQL functions that make jobs
 * ready (jq_redrive, jq_fail without backoff) wake the queue's listeners
 * at commit, as jq_enqueue does.
 */
Datum
pgjq_wake_at_commit_sql(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		pgjq_wake_at_commit(PG_GETARG_INT32(0));
	PG_RETURN_VOID();
}
