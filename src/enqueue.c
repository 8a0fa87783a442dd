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
 * jq_enqueue(queue, payload, priority, run_at) returns the new job's id.
 */
Datum
pgjq_enqueue(PG_FUNCTION_ARGS)
{
	EnqueueOptions opts;
	PgjqQueue	queue;
	Jsonb	   *payload;
	Datum		values[6];
	bool		isnull;
	int64		job_id;

	read_enqueue_options(fcinfo, &opts);
	payload = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);

	SPI_connect();
	pgjq_lookup_queue(opts.queue_name, &queue);
	pgjq_check_payload(payload, &queue, opts.queue_name, 0);

	set_enqueue_params(values, &queue, &opts);
	values[5] = JsonbPGetDatum(payload);
	pgjq_execute_plan(PGJQ_PLAN_ENQUEUE, values, NULL, SPI_OK_INSERT_RETURNING);
	if (SPI_processed != 1)
		elog(ERROR, "pgjq: enqueue inserted " UINT64_FORMAT " rows", SPI_processed);
	job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	PG_RETURN_INT64(job_id);
}

/*
 * jq_enqueue_batch(queue, payloads, priority, run_at) enqueues one job per
 * element of payloads with one INSERT and returns their ids in the order
 * of payloads.  Every payload is checked before anything is inserted, so a
 * bad element rejects the whole batch with its position in the message.
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
	Datum		values[6];

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

	/* allocated before SPI_connect: SPI_finish frees SPI's own memory */
	ids = palloc(sizeof(int64) * nelems);

	SPI_connect();
	pgjq_lookup_queue(opts.queue_name, &queue);
	for (int i = 0; i < nelems; i++)
		pgjq_check_payload(elem_nulls[i] ? NULL : DatumGetJsonbP(elems[i]),
						   &queue, opts.queue_name, i + 1);

	set_enqueue_params(values, &queue, &opts);
	values[5] = PointerGetDatum(payloads);
	pgjq_execute_plan(PGJQ_PLAN_ENQUEUE_BATCH, values, NULL,
					  SPI_OK_INSERT_RETURNING);
	if (SPI_processed != (uint64) nelems)
		elog(ERROR, "pgjq: batch enqueue inserted " UINT64_FORMAT " rows for %d payloads",
			 SPI_processed, nelems);

	/*
	 * Ids were drawn in insertion order, which is payload order; sorting
	 * makes the result independent of the order RETURNING emits rows in.
	 */
	for (int i = 0; i < nelems; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	qsort(ids, nelems, sizeof(int64), pgjq_cmp_int64);

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
