/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Version shims, so that one source tree builds against PostgreSQL 14
 *	  to 17.  Every #if PG_VERSION_NUM in pgjq lives here; the other files
 *	  test the PGJQ_HAVE_* macros defined below, or call the shims.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_COMPAT_H
#define PGJQ_COMPAT_H

#include "catalog/pg_database.h"
#include "funcapi.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/tuplestore.h"

#if PG_VERSION_NUM < 140000
#error "pgjq requires PostgreSQL 14 or later"
#endif

/* MarkGUCPrefixReserved appeared in 15; 14 has the older name */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/* varatt.h was split out of postgres.h in 16 */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * shmem_request_hook appeared in 15; on 14 shared memory is requested
 * straight from _PG_init.
 */
#if PG_VERSION_NUM >= 150000
#define PGJQ_HAVE_SHMEM_REQUEST_HOOK 1
#endif

/*
 * Before 15, a background worker's NOTIFYs are sent only when it calls
 * ProcessCompletedNotifies after committing; 15 sends them at commit.
 */
#if PG_VERSION_NUM < 150000
#define pgjq_process_completed_notifies() ProcessCompletedNotifies()
#else
#define pgjq_process_completed_notifies() ((void) 0)
#endif

/* ownership checks of a database: one function per class from 16 on */
#if PG_VERSION_NUM >= 160000
#define pgjq_database_ownercheck(dboid) \
	object_ownercheck(DatabaseRelationId, (dboid), GetUserId())
#else
#define pgjq_database_ownercheck(dboid) pg_database_ownercheck((dboid), GetUserId())
#endif

/*
 * pgjq_init_materialized_srf sets fcinfo up to return a set in a
 * tuplestore in the per-query context: core's InitMaterializedSRF (16),
 * called SetSingleFuncCall in 15, written out for 14.
 */
#if PG_VERSION_NUM >= 160000
#define pgjq_init_materialized_srf(fcinfo) InitMaterializedSRF(fcinfo, 0)
#elif PG_VERSION_NUM >= 150000
#define pgjq_init_materialized_srf(fcinfo) SetSingleFuncCall(fcinfo, 0)
#else
static inline void
pgjq_init_materialized_srf(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcontext;
	TupleDesc	tupdesc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("materialize mode required, but it is not allowed in this context")));

	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(false, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(oldcontext);
}
#endif

#endif							/* PGJQ_COMPAT_H */
