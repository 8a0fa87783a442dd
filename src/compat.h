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

/*
 * The hot path's row changes (hotpath.c).  From 16 on, an update reports
 * which indexes need new entries (none, summarizing ones only, all) where
 * 14 and 15 say all or none, and ExecInsertIndexTuples takes whether to
 * insert into the summarizing ones only: pgjq_insert_index_tuples inserts
 * an updated row's entries as the update requires, and
 * pgjq_insert_new_index_tuples a new row's.
 */
#if PG_VERSION_NUM >= 160000
#define pgjq_update_needs_indexes(u) ((u) != TU_None)
#define pgjq_insert_index_tuples(rri, slot, estate, update, u) \
	ExecInsertIndexTuples((rri), (slot), (estate), (update), false, NULL, NIL, \
						  (u) == TU_Summarizing)
#define pgjq_insert_new_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
typedef TU_UpdateIndexes PgjqUpdateIndexes;
#else
#define pgjq_insert_new_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#define pgjq_update_needs_indexes(u) (u)
#define pgjq_insert_index_tuples(rri, slot, estate, update, u) \
	ExecInsertIndexTuples((rri), (slot), (estate), (update), false, NULL, NIL)
typedef bool PgjqUpdateIndexes;
#endif

/* 31 random bits: pg_prng from 15 on, random() (seeded per backend) on 14 */
#if PG_VERSION_NUM >= 150000
#include "common/pg_prng.h"
#define pgjq_random31() ((int64) (pg_prng_uint32(&pg_global_prng_state) >> 1))
#else
#define pgjq_random31() ((int64) random())
#endif

/*
 * Waiting sessions (waiters.c): one slot per backend, found by its PGPROC
 * number (MyProcNumber from 17).  Before 15, shared memory is requested
 * before MaxBackends is computed: the same sum, written out.
 */
#include "storage/proc.h"
#if PG_VERSION_NUM >= 170000
#define pgjq_my_procno() MyProcNumber
#define pgjq_proc_latch(procno) (&GetPGProcByNumber(procno)->procLatch)
#else
#define pgjq_my_procno() (MyProc->pgprocno)
#define pgjq_proc_latch(procno) (&ProcGlobal->allProcs[(procno)].procLatch)
#endif
#if PG_VERSION_NUM >= 150000
#define pgjq_max_backends() MaxBackends
#else
#include "postmaster/autovacuum.h"
#include "replication/walsender.h"
#define pgjq_max_backends() \
	(MaxConnections + autovacuum_max_workers + 1 + max_worker_processes + max_wal_senders)
#endif

/* SPI_commit starts the next transaction itself from 15 on */
#if PG_VERSION_NUM >= 150000
#define pgjq_spi_commit() SPI_commit()
#else
#define pgjq_spi_commit() (SPI_commit(), SPI_start_transaction())
#endif

#endif							/* PGJQ_COMPAT_H */
