/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared memory of pgjq, and the commit-time wakeups of the worker.
 *
 * Producers never NOTIFY: NOTIFY takes a cluster-wide lock at commit and
 * serialises every notifying transaction.  Instead jq_enqueue remembers, in
 * backend memory, which queues received ready jobs; at commit a transaction
 * callback marks those queues in a shared hash and sets the latch of the
 * database's pgjq worker, which sends one coalesced NOTIFY per queue.
 * Rolled-back work, and work of rolled-back subtransactions, marks nothing.
 *
 * Locking: PgjqShared->lock (one LWLock of the "pgjq" tranche) guards the
 * worker slots and the wakeup hash.  Backends hold it exclusively for a few
 * hash lookups at commit; the worker holds it to collect its queues.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

/* one slot per database served (pgjq.database lists them) */
typedef struct PgjqWorkerSlot
{
	Oid			dboid;			/* InvalidOid until the worker starts */
	pid_t		pid;			/* 0 when no worker runs */
	Latch	   *latch;			/* the worker's procLatch */
} PgjqWorkerSlot;

typedef struct PgjqShared
{
	LWLock	   *lock;
	bool		wake_overflow;	/* the hash was full: wake every queue */
	PgjqWorkerSlot workers[PGJQ_MAX_DATABASES];
} PgjqShared;

/* a queue with committed ready jobs the worker has not announced yet */
typedef struct PgjqWakeKey
{
	Oid			dboid;
	int32		queue_id;
} PgjqWakeKey;

typedef struct PgjqWakeEntry
{
	PgjqWakeKey key;
	bool		pending;
} PgjqWakeEntry;

static PgjqShared *pgjq_shared = NULL;
static HTAB *pgjq_wake_hash = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * Backend-local: queues to wake when the transaction commits, each with
 * the subtransaction that asked, so a subtransaction abort drops its own.
 */
typedef struct PendingWake
{
	int32		queue_id;
	SubTransactionId subid;
} PendingWake;

static PendingWake *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;
static bool callbacks_registered = false;

static Size
pgjq_shmem_size(void)
{
	return add_size(add_size(MAXALIGN(sizeof(PgjqShared)),
							 hash_estimate_size(PGJQ_MAX_WAKE_QUEUES,
												sizeof(PgjqWakeEntry))),
					pgjq_stats_shmem_size());
}

static void
pgjq_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(pgjq_shmem_size());
	/* [0] wakeups and worker slots, [1] counters (stats.c) */
	RequestNamedLWLockTranche("pgjq", 2);
}

/*
 * pgjq_shmem_startup creates or attaches to the shared state; it runs in
 * the postmaster at start and after a crash restart, so the state begins
 * empty: the worker rebuilds what it needs.
 */
static void
pgjq_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pgjq_shared = ShmemInitStruct("pgjq", sizeof(PgjqShared), &found);
	if (!found)
	{
		memset(pgjq_shared, 0, sizeof(PgjqShared));
		pgjq_shared->lock = &(GetNamedLWLockTranche("pgjq"))->lock;
	}
	info.keysize = sizeof(PgjqWakeKey);
	info.entrysize = sizeof(PgjqWakeEntry);
	pgjq_wake_hash = ShmemInitHash("pgjq wakeups", PGJQ_MAX_WAKE_QUEUES,
								   PGJQ_MAX_WAKE_QUEUES, &info,
								   HASH_ELEM | HASH_BLOBS);
	pgjq_stats_shmem_startup(&(GetNamedLWLockTranche("pgjq"))[1].lock);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * pgjq_shmem_init installs the hooks; called from _PG_init while pgjq is
 * being preloaded.
 */
void
pgjq_shmem_init(void)
{
#if PG_VERSION_NUM >= 150000
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
	return pgjq_shared != NULL;
}

/*
 * Commit: mark the queues and wake the worker.  Nothing here may fail
 * after the commit record is written, hence HASH_ENTER_NULL: a full hash
 * degrades to "wake every queue", never to an error.
 */
static void
wake_at_commit(void)
{
	PgjqWorkerSlot *slot = NULL;
	bool		news = false;

	LWLockAcquire(pgjq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < npending; i++)
	{
		PgjqWakeKey key;
		PgjqWakeEntry *entry;
		bool		found;

		key.dboid = MyDatabaseId;
		key.queue_id = pending[i].queue_id;
		entry = hash_search(pgjq_wake_hash, &key, HASH_ENTER_NULL, &found);
		if (entry == NULL)
		{
			news = !pgjq_shared->wake_overflow;
			pgjq_shared->wake_overflow = true;
		}
		else if (!found || !entry->pending)
		{
			entry->pending = true;
			news = true;
		}
	}

	/*
	 * Set the latch only for news: a queue already marked has woken the
	 * worker once, and waking it for every commit of a busy queue would
	 * only burn its CPU.
	 */
	if (news)
	{
		for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
			if (pgjq_shared->workers[i].dboid == MyDatabaseId &&
				pgjq_shared->workers[i].pid != 0)
				slot = &pgjq_shared->workers[i];
		if (slot != NULL)
			SetLatch(slot->latch);
	}
	LWLockRelease(pgjq_shared->lock);
}

static void
pgjq_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			pgjq_stats_at_commit();
			if (npending > 0 && pgjq_shared != NULL)
				wake_at_commit();
			npending = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			pgjq_stats_at_abort(false);
			npending = 0;
			break;
		case XACT_EVENT_PREPARE:
			pgjq_stats_at_abort(true);
			/*
			 * A prepared transaction's jobs become visible at COMMIT
			 * PREPARED, which fires no callback in any backend; workers
			 * find them by polling.
			 */
			npending = 0;
			break;
		default:
			break;
	}
}

static void
pgjq_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	int			kept = 0;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	pgjq_stats_at_subxact(event == SUBXACT_EVENT_COMMIT_SUB, mySubid, parentSubid);
	for (int i = 0; i < npending; i++)
	{
		if (pending[i].subid == mySubid)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
				continue;		/* rolled back: forget it */
			pending[i].subid = parentSubid;
		}
		pending[kept++] = pending[i];
	}
	npending = kept;
}

/*
 * pgjq_register_xact_callbacks registers, once per backend, the callbacks
 * that apply wakeups and counter deltas at commit.
 */
void
pgjq_register_xact_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(pgjq_xact_callback, NULL);
	RegisterSubXactCallback(pgjq_subxact_callback, NULL);
	callbacks_registered = true;
}

/*
 * pgjq_wake_at_commit asks for the queue's listeners to be woken if and
 * when the current transaction commits.  Cheap enough for every enqueue:
 * a scan of a handful of entries, no lock, no I/O.  A no-op without
 * shared_preload_libraries, as there is no worker to wake.
 */
void
pgjq_wake_at_commit(int32 queue_id)
{
	SubTransactionId subid = GetCurrentSubTransactionId();

	if (pgjq_shared == NULL)
		return;

	for (int i = 0; i < npending; i++)
		if (pending[i].queue_id == queue_id && pending[i].subid == subid)
			return;

	pgjq_register_xact_callbacks();
	if (npending == maxpending)
	{
		maxpending = Max(8, maxpending * 2);
		if (pending == NULL)
			pending = MemoryContextAlloc(TopMemoryContext,
										 sizeof(PendingWake) * maxpending);
		else
			pending = repalloc(pending, sizeof(PendingWake) * maxpending);
	}
	pending[npending].queue_id = queue_id;
	pending[npending].subid = subid;
	npending++;
}

/*
 * Worker side.  pgjq_worker_attach claims the slot of the worker's
 * database; false when another live worker holds it.
 */
static int	my_slot = -1;

static void
pgjq_worker_detach(int code, Datum arg)
{
	LWLockAcquire(pgjq_shared->lock, LW_EXCLUSIVE);
	if (my_slot >= 0 && pgjq_shared->workers[my_slot].pid == MyProcPid)
	{
		pgjq_shared->workers[my_slot].pid = 0;
		pgjq_shared->workers[my_slot].latch = NULL;
	}
	LWLockRelease(pgjq_shared->lock);
	my_slot = -1;
}

bool
pgjq_worker_attach(Oid dboid)
{
	int			free_slot = -1;

	LWLockAcquire(pgjq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
	{
		PgjqWorkerSlot *slot = &pgjq_shared->workers[i];

		if (slot->dboid == dboid)
		{
			if (slot->pid != 0 && slot->pid != MyProcPid &&
				kill(slot->pid, 0) == 0)
			{
				LWLockRelease(pgjq_shared->lock);
				return false;
			}
			free_slot = i;
			break;
		}
		if (slot->dboid == InvalidOid && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0)
	{
		LWLockRelease(pgjq_shared->lock);
		return false;
	}
	my_slot = free_slot;
	pgjq_shared->workers[my_slot].dboid = dboid;
	pgjq_shared->workers[my_slot].pid = MyProcPid;
	pgjq_shared->workers[my_slot].latch = MyLatch;
	LWLockRelease(pgjq_shared->lock);

	before_shmem_exit(pgjq_worker_detach, (Datum) 0);
	return true;
}

/*
 * pgjq_worker_take_wakeups returns (in *queue_ids, palloc'd in the current
 * context) the queues of this database that are marked.  The marks stay
 * until pgjq_worker_clear_wakeup, called just before the NOTIFY goes out:
 * while a queue waits for its coalescing window, committing producers see
 * it marked and leave the worker's latch alone.  Returns -1 when the hash
 * overflowed: wake every queue.
 */
int
pgjq_worker_take_wakeups(int32 **queue_ids)
{
	HASH_SEQ_STATUS status;
	PgjqWakeEntry *entry;
	int			n = 0;
	int			max = 16;
	bool		overflow;

	*queue_ids = palloc(sizeof(int32) * max);
	LWLockAcquire(pgjq_shared->lock, LW_EXCLUSIVE);
	overflow = pgjq_shared->wake_overflow;
	pgjq_shared->wake_overflow = false;
	hash_seq_init(&status, pgjq_wake_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dboid != MyDatabaseId)
			continue;
		if (n == max)
		{
			max *= 2;
			*queue_ids = repalloc(*queue_ids, sizeof(int32) * max);
		}
		(*queue_ids)[n++] = entry->key.queue_id;
	}
	LWLockRelease(pgjq_shared->lock);
	return overflow ? -1 : n;
}

/*
 * pgjq_worker_clear_wakeup removes a queue's mark before its NOTIFY is
 * sent: a producer committing after this sets a new mark and wakes the
 * worker again, and one that committed before is covered by the NOTIFY
 * about to go out.  Removing the entry keeps dropped queues from filling
 * the hash.
 */
void
pgjq_worker_clear_wakeup(int32 queue_id)
{
	PgjqWakeKey key;

	key.dboid = MyDatabaseId;
	key.queue_id = queue_id;
	LWLockAcquire(pgjq_shared->lock, LW_EXCLUSIVE);
	hash_search(pgjq_wake_hash, &key, HASH_REMOVE, NULL);
	LWLockRelease(pgjq_shared->lock);
}

/*
 * pgjq_worker_pid returns the pid of the worker serving dboid, or 0.
 */
pid_t
pgjq_worker_pid(Oid dboid)
{
	pid_t		pid = 0;

	if (pgjq_shared == NULL)
		return 0;
	LWLockAcquire(pgjq_shared->lock, LW_SHARED);
	for (int i = 0; i < PGJQ_MAX_DATABASES; i++)
		if (pgjq_shared->workers[i].dboid == dboid)
			pid = pgjq_shared->workers[i].pid;
	LWLockRelease(pgjq_shared->lock);
	return pid;
}
