/*-------------------------------------------------------------------------
 *
 * vocabulary.c
 *	  The states and limits of pgjq, from the tables of pgjq.h: for the C
 *	  code (pgjq_state_info), and for the SQL side (jq.state_name,
 *	  jq.limits, jq.limit), so that PL/pgSQL, views and documentation never
 *	  repeat a number or a state code.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/vocabulary.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/xact.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(pgjq_limits);
PG_FUNCTION_INFO_V1(pgjq_limit);
PG_FUNCTION_INFO_V1(pgjq_state_name);
PG_FUNCTION_INFO_V1(pgjq_clip_error);

typedef struct LimitDef
{
	const char *name;
	int64		value;
	const char *description;
} LimitDef;

#define LIMIT_DEF(name, value, sqlname, description) {sqlname, value, description},
static const LimitDef limits[] = {PGJQ_LIMITS(LIMIT_DEF)};

#define STATE_INFO(name, text, table, counter) \
	{PGJQ_STATE_##name, text, table, PGJQ_C_##counter},
static const PgjqStateInfo states[] = {PGJQ_STATES(STATE_INFO)};

/*
 * An error message longer than PGJQ_LIMIT_ERROR_MAXLEN bytes is cut to
 * this many, at a character boundary, and marked.
 */
#define ERROR_CLIPLEN	8000
#define ERROR_CLIPMARK	" ... (truncated)"

/* pgjq_state_info describes a state code; NULL for a code that is none */
const PgjqStateInfo *
pgjq_state_info(char code)
{
	for (size_t i = 0; i < lengthof(states); i++)
		if (states[i].code == code)
			return &states[i];
	return NULL;
}

/*
 * pgjq_state_counter is the counter slot of a state that a stored row
 * holds; a code that is no state is a corrupt row, not a user error.
 */
PgjqCounter
pgjq_state_counter(char code)
{
	const PgjqStateInfo *info = pgjq_state_info(code);

	if (info == NULL)
		elog(ERROR, "pgjq: unknown job state '%c'", code);
	return info->counter;
}

/* jq.limits() lists every limit: name, value, description */
Datum
pgjq_limits(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	pgjq_init_materialized_srf(fcinfo);
	for (size_t i = 0; i < lengthof(limits); i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(limits[i].name);
		values[1] = Int64GetDatum(limits[i].value);
		values[2] = CStringGetTextDatum(limits[i].description);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* jq.limit(name) returns one limit; immutable, so plans fold it */
Datum
pgjq_limit(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	for (size_t i = 0; i < lengthof(limits); i++)
		if (strcmp(limits[i].name, name) == 0)
			PG_RETURN_INT64(limits[i].value);
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("pgjq has no limit named \"%s\"", name),
			 errhint("SELECT name FROM jq.limits() lists them.")));
	PG_RETURN_NULL();			/* keep compiler quiet */
}

/*
 * jq.state_name(state, run_at) is the name of a state code as jq_result
 * and the views show it.  A scheduled job whose run_at has come shows as
 * ready: the next dequeue or the worker promotes it.
 */
Datum
pgjq_state_name(PG_FUNCTION_ARGS)
{
	char		code;
	const PgjqStateInfo *info;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	code = PG_GETARG_CHAR(0);
	if (code == PGJQ_STATE_SCHEDULED && !PG_ARGISNULL(1) &&
		PG_GETARG_TIMESTAMPTZ(1) <= GetCurrentTransactionStartTimestamp())
		code = PGJQ_STATE_READY;
	info = pgjq_state_info(code);
	if (info == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(info->name));
}

/*
 * jq.clip_error(message) bounds the error text kept with a job: a stack
 * trace is welcome, a core dump is not.  Messages up to
 * PGJQ_LIMIT_ERROR_MAXLEN bytes are kept whole; longer ones are cut at a
 * character boundary to ERROR_CLIPLEN bytes and marked.
 */
Datum
pgjq_clip_error(PG_FUNCTION_ARGS)
{
	text	   *message = PG_GETARG_TEXT_PP(0);
	int			len = VARSIZE_ANY_EXHDR(message);
	int			cut;
	StringInfoData buf;

	if (len <= PGJQ_LIMIT_ERROR_MAXLEN)
		PG_RETURN_TEXT_P(message);
	cut = pg_mbcliplen(VARDATA_ANY(message), len, ERROR_CLIPLEN);
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, VARDATA_ANY(message), cut);
	appendStringInfoString(&buf, ERROR_CLIPMARK);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
