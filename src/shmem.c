/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  pgjq's shared memory, requested and attached in one place for the
 *	  modules that own parts of it: the launcher's worker slots
 *	  (launcher.c), the wakeup marks (wakeup.c), the counters
 *	  (counters.c), the scan bounds (bounds.c), the keys (keys.c) and the
 *	  waiting sessions (waiters.c).  Each module sizes and initialises its own part and
 *	  guards it with its own LWLock of the "pgjq" tranche.
 *
 * Shared memory exists only when pgjq is in shared_preload_libraries; it
 * is created empty at every start and after every crash, and each module
 * rebuilds what it needs from there.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "counters.h"
#include "bounds.h"
#include "keys.h"
#include "launcher.h"
#include "shmem.h"
#include "waiters.h"
#include "wakeup.h"

/* the tranche's locks, one per module */
enum
{
	LOCK_LAUNCHER,
	LOCK_WAKEUP,
	LOCK_COUNTERS,
	LOCK_BOUNDS,
	LOCK_KEYS,
	LOCK_WAITERS,
	NUM_LOCKS
};

static bool attached = false;

#ifdef PGJQ_HAVE_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
pgjq_shmem_request(void)
{
	Size		size;

#ifdef PGJQ_HAVE_SHMEM_REQUEST_HOOK
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	size = pgjq_launcher_shmem_size();
	size = add_size(size, pgjq_wakeup_shmem_size());
	size = add_size(size, pgjq_counters_shmem_size());
	size = add_size(size, pgjq_bounds_shmem_size());
	size = add_size(size, pgjq_keys_shmem_size());
	size = add_size(size, pgjq_waiters_shmem_size());
	RequestAddinShmemSpace(size);
	RequestNamedLWLockTranche("pgjq", NUM_LOCKS);
}

/*
 * pgjq_shmem_startup creates or attaches to the shared state; it runs in
 * the postmaster at start and after a crash restart.
 */
static void
pgjq_shmem_startup(void)
{
	LWLockPadded *locks;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	locks = GetNamedLWLockTranche("pgjq");
	pgjq_launcher_shmem_init(&locks[LOCK_LAUNCHER].lock);
	pgjq_wakeup_shmem_init(&locks[LOCK_WAKEUP].lock);
	pgjq_counters_shmem_init(&locks[LOCK_COUNTERS].lock);
	pgjq_bounds_shmem_init(&locks[LOCK_BOUNDS].lock);
	pgjq_keys_shmem_init(&locks[LOCK_KEYS].lock);
	pgjq_waiters_shmem_init(&locks[LOCK_WAITERS].lock);
	attached = true;
	LWLockRelease(AddinShmemInitLock);
}

/*
 * pgjq_shmem_init installs the hooks; called from _PG_init while pgjq is
 * being preloaded.
 */
void
pgjq_shmem_init(void)
{
#ifdef PGJQ_HAVE_SHMEM_REQUEST_HOOK
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pgjq_shmem_request;
#else
	pgjq_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pgjq_shmem_startup;
}

/* pgjq_shmem_available tells whether pgjq was preloaded */
bool
pgjq_shmem_available(void)
{
	return attached;
}
