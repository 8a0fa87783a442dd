/*-------------------------------------------------------------------------
 *
 * longpoll.h
 *	  Waiting calls: the helpers jq_dequeue's wait shares with jq_await
 *	  and the waiting procedures (longpoll.c).
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/longpoll.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGJQ_LONGPOLL_H
#define PGJQ_LONGPOLL_H

#include "fmgr.h"

/* one look for what a session waits for: true when it found it */
typedef bool (*PgjqLook) (void *arg);

/* lease.c: the checks of jq_dequeue's queue and max_jobs, shared */
extern char *pgjq_dequeue_args(FunctionCallInfo fcinfo, int queue_arg, int32 *max_jobs);

extern int64 pgjq_wait_usecs(FunctionCallInfo fcinfo, int argno, const char *argname);
extern void pgjq_wait_check_isolation(const char *what);
extern bool pgjq_look_releasing_locks(PgjqLook look, void *arg);
extern void pgjq_wait_cleanup(int code, Datum arg);

#endif							/* PGJQ_LONGPOLL_H */
