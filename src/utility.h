/*-------------------------------------------------------------------------
 *
 * utility.h
 *	  The ProcessUtility hook that keeps the workers in step with DDL.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/utility.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_UTILITY_H
#define PGJQ_UTILITY_H

extern void pgjq_utility_init(void);

#endif							/* PGJQ_UTILITY_H */
