/*-------------------------------------------------------------------------
 *
 * usage.c
 *	  The rules of what a job costs: the cost estimate given at enqueue,
 *	  and the usage a worker reports at ack or fail.
 *
 * Rate limits (keys.c) are budgets of requests and cost per period; the
 * period reaches C as an interval, counted here in microseconds.
 *
 * A usage report is a JSON object, say {"cost": 812, "input_tokens": 700,
 * "output_tokens": 112}.  Its numeric fields are summed per queue, key and
 * day (jq.usage); its "cost" field, when present, is what the job really
 * cost, in the unit of the costs given at enqueue (tokens, say), and
 * replaces the job's estimate.  The rules are written once, here: the ack
 * (hotpath.c) applies them in C, jq_fail through jq.check_usage.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/usage.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "usage.h"

PG_FUNCTION_INFO_V1(pgjq_check_usage_sql);

/*
 * pgjq_check_cost raises an error unless cost can be a job's cost: a
 * finite number, not negative.  what names it in the message.
 */
void
pgjq_check_cost(Numeric cost, const char *what)
{
	if (numeric_is_nan(cost) || numeric_is_inf(cost))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite number", what)));
	if (DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(cost),
										 NumericGetDatum(int64_to_numeric(0)))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what),
				 errdetail("Got %s.", numeric_normalize(cost)),
				 errhint("A cost is what the job consumes in your unit, tokens say; 0 for a free job.")));
}

/*
 * pgjq_cost_double returns a cost (a numeric, checked by pgjq_check_cost)
 * as a double for the rate limits' buckets: a cost beyond 1e300 (a
 * numeric may be far larger than a double) counts as 1e300, more than any
 * budget (jq.check_rate caps them at 1e15).
 */
double
pgjq_cost_double(Datum cost)
{
	static Datum limit = (Datum) 0;

	if (limit == (Datum) 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		limit = DirectFunctionCall3(numeric_in, CStringGetDatum("1e300"),
									ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		MemoryContextSwitchTo(old);
	}
	if (DatumGetBool(DirectFunctionCall2(numeric_gt, cost, limit)))
		return 1e300;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, cost));
}

/* cost_field returns the "cost" field of a usage report, or NULL */
static JsonbValue *
cost_field(Jsonb *usage)
{
	JsonbValue	key;

	if (!JB_ROOT_IS_OBJECT(usage))
		return NULL;
	key.type = jbvString;
	key.val.string.val = "cost";
	key.val.string.len = strlen("cost");
	return findJsonbValueFromContainer(&usage->root, JB_FOBJECT, &key);
}

/*
 * pgjq_usage_cost returns the "cost" of a usage report, or NULL when it
 * has none (pgjq_check_usage has made sure it is a number)
 */
Numeric
pgjq_usage_cost(Jsonb *usage)
{
	JsonbValue *v = cost_field(usage);

	return v != NULL && v->type == jbvNumeric ? v->val.numeric : NULL;
}

/*
 * pgjq_check_usage raises an error unless usage is a usage report: a JSON
 * object of at most usage_bytes_max bytes whose "cost", if any, is a cost.
 */
void
pgjq_check_usage(Jsonb *usage)
{
	Size		size = VARSIZE(usage) - VARHDRSZ;
	JsonbValue *v;

	if (!JB_ROOT_IS_OBJECT(usage))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("usage must be a JSON object"),
				 errhint("Report numbers by name, for example {\"cost\": 812, \"input_tokens\": 700}.")));
	if (size > PGJQ_LIMIT_USAGE_BYTES_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("usage of %zu bytes is too large", size),
				 errdetail("The limit is %d bytes.", PGJQ_LIMIT_USAGE_BYTES_MAX)));
	v = cost_field(usage);
	if (v == NULL)
		return;
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the \"cost\" field of usage must be a number")));
	pgjq_check_cost(v->val.numeric, "the \"cost\" field of usage");
}

/*
 * pgjq_interval_usecs returns an interval's length in microseconds, a
 * month counted as 30 days (a rate period is at most a day: jq.check_rate)
 */
int64
pgjq_interval_usecs(const Interval *interval)
{
	return interval->time + (int64) interval->day * USECS_PER_DAY +
		(int64) interval->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/* jq.check_usage(usage) applies pgjq_check_usage, for jq_fail */
Datum
pgjq_check_usage_sql(PG_FUNCTION_ARGS)
{
	pgjq_check_usage(PG_GETARG_JSONB_P(0));
	PG_RETURN_VOID();
}
