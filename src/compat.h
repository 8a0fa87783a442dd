/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Version shims, so that one source tree builds against PostgreSQL 14
 *	  to 17.  Every #if PG_VERSION_NUM in pgjq lives here.
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

#endif							/* PGJQ_COMPAT_H */
