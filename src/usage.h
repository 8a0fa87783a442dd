/*-------------------------------------------------------------------------
 *
 * usage.h
 *	  The rules of job costs and usage reports.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/usage.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_USAGE_H
#define PGJQ_USAGE_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

extern void pgjq_check_cost(Numeric cost, const char *what);
extern void pgjq_check_usage(Jsonb *usage);
extern Numeric pgjq_usage_cost(Jsonb *usage);
extern double pgjq_cost_double(Datum cost);
extern int64 pgjq_interval_usecs(const Interval *interval);

#endif							/* PGJQ_USAGE_H */
