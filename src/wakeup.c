/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Commit-time wakeups: which queues got ready jobs, marked when the
 *	  transaction that made them ready commits, and announced by the
 *	  database's pgjq worker with one coalesced NOTIFY per queue.
 *
 * Producers never NOTIFY: NOTIFY takes a cluster-wide lock at commit and
 * serialises every notifying transaction.  Instead every transition that
 * makes jobs ready (jq_enqueue, jq.promote_due, jq.fail_leased, jq_redrive)
 * calls pgjq_wake_at_commit, which remembers the queue in backend memory,
 * tagged with the subtransaction that asked, with how many jobs.  At
 * commit a transaction callback first wakes the sessions waiting inside a
 * long-poll jq_dequeue for as many jobs (waiters.c), then marks those
 * queues in a shared hash and sets the latch of the database's worker;
 * rolled-back work, and work of rolled-back subtransactions, wakes and
 * marks nothing.  The worker collects the marks and sends the NOTIFYs:
 * at once for a quiet queue (the leading edge: a worker waiting on LISTEN
 * hears of its first job without delay), and at most one per queue per
 * pgjq.notify_interval for a busy one, whose commits come faster than
 * NOTIFY_BUSY_RATE a second (coalescing under load: every NOTIFY wakes
 * every listening session, and a NOTIFY per commit would cost a busy
 * database more than its listeners gain).
 *
 * Locking: wake_lock (an LWLock of the "pgjq" tranche) guards the shared
 * hash and its overflow flag.  Backends hold it exclusively for a few hash
 * lookups at commit; the worker holds it to collect and clear marks.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/wakeup.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include <math.h>

#include "access/xact.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "launcher.h"
#include "waiters.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(pgjq_wake_at_commit_sql);

/* a queue with committed ready jobs that its worker has not announced */
typedef struct WakeKey
{
	Oid			dboid;
	int32		queue_id;
} WakeKey;

typedef struct WakeEntry
{
	WakeKey		key;
	bool		pending;
	int32		commits;		/* marks since the worker last collected */
} WakeEntry;

/*
 * A queue is busy while its commits come faster than this many a second,
 * measured over the last NOTIFY_LOAD_WINDOW (a decaying count): its
 * NOTIFYs are then coalesced.  1,000 a second: the W4 workload (500 jobs a
 * second to idle workers) gets a NOTIFY per job, the W7 one (thousands a
 * second to idle listeners) one per pgjq.notify_interval.
 */
#define NOTIFY_BUSY_RATE	1000.0
#define NOTIFY_LOAD_WINDOW	(10 * USECS_PER_SEC / 1000) /* 10 ms */

typedef struct WakeShared
{
	bool		overflow;		/* the hash was full: wake every queue */
} WakeShared;

static LWLock *wake_lock = NULL;
static WakeShared *wake_shared = NULL;
static HTAB *wake_hash = NULL;

/* backend-local: queues to wake when the transaction commits */
typedef struct PendingWake
{
	int32		queue_id;
	SubTransactionId subid;
	int64		jobs;			/* how many became ready */
} PendingWake;

static PendingWake *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;

/* worker-local: per queue, when it was last notified and whether it is owed */
typedef struct NotifyState
{
	int32		queue_id;		/* hash key */
	TimestampTz last_notify;
	bool		owed;
	double		load;			/* commits, decaying over NOTIFY_LOAD_WINDOW */
	TimestampTz load_at;		/* when load was last brought up to date */
} NotifyState;

static HTAB *notify_state = NULL;
static bool notify_all_owed = false;

Size
pgjq_wakeup_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(WakeShared)),
					hash_estimate_size(PGJQ_MAX_WAKE_QUEUES, sizeof(WakeEntry)));
}

/*
 * pgjq_wakeup_shmem_init creates or attaches to the shared hash; called
 * under AddinShmemInitLock.  After a start or a crash it is empty: the
 * worker polls on a timeout, so nothing waits forever for a lost mark.
 */
void
pgjq_wakeup_shmem_init(LWLock *lock)
{
	bool		found;
	HASHCTL		info;

	wake_lock = lock;
	wake_shared = ShmemInitStruct("pgjq wakeups", sizeof(WakeShared), &found);
	if (!found)
		wake_shared->overflow = false;
	info.keysize = sizeof(WakeKey);
	info.entrysize = sizeof(WakeEntry);
	wake_hash = ShmemInitHash("pgjq wakeup hash", PGJQ_MAX_WAKE_QUEUES,
							  PGJQ_MAX_WAKE_QUEUES, &info,
							  HASH_ELEM | HASH_BLOBS);
}

/*
 * Commit: mark the queues and wake the worker.  Nothing here may fail
 * after the commit record is written, hence HASH_ENTER_NULL: a full hash
 * degrades to "wake every queue", never to an error.
 */
static void
mark_queues(const int32 *queue_ids, int n, int stride)
{
	bool		news = false;

	LWLockAcquire(wake_lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		WakeKey		key;
		WakeEntry  *entry;
		bool		found;

		key.dboid = MyDatabaseId;
		key.queue_id = *(const int32 *) ((const char *) queue_ids + i * stride);
		entry = hash_search(wake_hash, &key, HASH_ENTER_NULL, &found);
		if (entry == NULL)
		{
			news |= !wake_shared->overflow;
			wake_shared->overflow = true;
		}
		else
		{
			if (!found)
				entry->commits = 0;
			entry->commits++;
			if (!found || !entry->pending)
			{
				entry->pending = true;
				news = true;
			}
		}
	}
	LWLockRelease(wake_lock);

	/*
	 * Set the latch only for news: a queue already marked has woken the
	 * worker once, and waking it for every commit of a busy queue would
	 * only burn its CPU.
	 */
	if (news)
		pgjq_wake_database_worker(MyDatabaseId);
}

static void
mark_pending(void)
{
	for (int i = 0; i < npending; i++)
		pgjq_waiters_wake_queue(pending[i].queue_id, pending[i].jobs);
	mark_queues(&pending[0].queue_id, npending, sizeof(PendingWake));
}

/*
 * pgjq_wake_now marks queues for a wakeup at once, for a transaction that
 * has ended: flow control (keys.c) wakes a queue whose lease ended at
 * commit, or whose dequeue rolled back, when one of its keys may be served
 * again, and the worker one whose rate budget is back.  Each wakes one
 * waiting session, which wakes the next if it takes a full batch.  Must
 * not fail, as mark_pending.
 */
void
pgjq_wake_now(const int32 *queue_ids, int n)
{
	if (wake_hash == NULL || n == 0)
		return;
	for (int i = 0; i < n; i++)
		pgjq_waiters_wake_queue(queue_ids[i], 1);
	mark_queues(queue_ids, n, sizeof(int32));
}

static void
wakeup_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (npending > 0)
				mark_pending();
			npending = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:

			/*
			 * A prepared transaction's jobs become visible at COMMIT
			 * PREPARED, which fires no callback in any backend; workers find
			 * them by polling.
			 */
		case XACT_EVENT_PREPARE:
			npending = 0;
			break;
		default:
			break;
	}
}

/* a subtransaction's wakeups pass to its parent, or vanish with it */
static void
wakeup_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			kept = 0;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	for (int i = 0; i < npending; i++)
	{
		if (pending[i].subid == mySubid)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
				continue;
			pending[i].subid = parentSubid;
		}
		pending[kept++] = pending[i];
	}
	npending = kept;
}

/*
 * pgjq_wake_at_commit asks for the queue's waiters and listeners to be
 * woken if and when the current transaction commits, for jobs that became
 * ready.  Cheap enough for every enqueue: a scan of a handful of entries,
 * no lock, no I/O.  A no-op without shared_preload_libraries, as there is
 * no worker to wake.
 */
/*
 * pgjq_wakeup_register_callbacks registers the transaction callbacks of the
 * wakeups, once per backend.  The counters (and keys) and the scan bounds
 * call it before they register theirs: callbacks run in the reverse order
 * of registration, so the wakeups come after those have applied the
 * transaction's changes at commit.  A waiting session woken before the
 * bounds were lowered or the keys counted would scan from a stale bound,
 * find nothing, and sleep through the wakeup it was given.
 */
void
pgjq_wakeup_register_callbacks(void)
{
	static bool callbacks_registered = false;

	if (callbacks_registered)
		return;
	RegisterXactCallback(wakeup_xact_callback, NULL);
	RegisterSubXactCallback(wakeup_subxact_callback, NULL);
	callbacks_registered = true;
}

void
pgjq_wake_at_commit(int32 queue_id, int64 jobs)
{
	SubTransactionId subid = GetCurrentSubTransactionId();

	if (wake_hash == NULL)
		return;

	for (int i = 0; i < npending; i++)
		if (pending[i].queue_id == queue_id && pending[i].subid == subid)
		{
			pending[i].jobs += jobs;
			return;
		}

	pgjq_wakeup_register_callbacks();
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
	pending[npending].jobs = jobs;
	npending++;
}

/* jq.wake_at_commit(queue_id, jobs): the same, for the SQL functions */
Datum
pgjq_wake_at_commit_sql(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		pgjq_wake_at_commit(PG_GETARG_INT32(0),
							PG_NARGS() > 1 && !PG_ARGISNULL(1) ? PG_GETARG_INT32(1) : 1);
	PG_RETURN_VOID();
}

/* load_now brings a queue's load (decaying count of commits) up to now */
static double
load_now(NotifyState *ns, TimestampTz now)
{
	if (now > ns->load_at)
	{
		ns->load *= exp(-(double) (now - ns->load_at) / NOTIFY_LOAD_WINDOW);
		ns->load_at = now;
	}
	return ns->load;
}

/*
 * owe_notify records, in the worker, that the queue's listeners must hear,
 * and that commits more committed for it
 */
static void
owe_notify(int32 queue_id, int32 commits, TimestampTz now)
{
	bool		found;
	NotifyState *ns;

	if (notify_state == NULL)
	{
		HASHCTL		info;

		info.keysize = sizeof(int32);
		info.entrysize = sizeof(NotifyState);
		info.hcxt = TopMemoryContext;
		notify_state = hash_create("pgjq notify state", 64, &info,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	ns = hash_search(notify_state, &queue_id, HASH_ENTER, &found);
	if (!found)
	{
		ns->last_notify = 0;
		ns->load = 0;
		ns->load_at = now;
	}
	ns->owed = true;
	ns->load = load_now(ns, now) + commits;
}

/*
 * pgjq_wakeup_collect moves the queues of this database that committing
 * transactions marked into the worker's owed set.  The marks stay until
 * their NOTIFY goes out (pgjq_wakeup_take_due): while a queue waits for
 * its coalescing window, committing producers see it marked and leave the
 * worker's latch alone.
 */
void
pgjq_wakeup_collect(void)
{
	HASH_SEQ_STATUS status;
	WakeEntry  *entry;
	int32	   *ids;
	int32	   *commits;
	int			n = 0;
	int			max = 64;
	TimestampTz now = GetCurrentTimestamp();

	ids = palloc(sizeof(int32) * max);
	commits = palloc(sizeof(int32) * max);
	LWLockAcquire(wake_lock, LW_EXCLUSIVE);
	if (wake_shared->overflow)
		notify_all_owed = true;
	wake_shared->overflow = false;
	hash_seq_init(&status, wake_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dboid != MyDatabaseId)
			continue;
		if (n == max)
		{
			max *= 2;
			ids = repalloc(ids, sizeof(int32) * max);
			commits = repalloc(commits, sizeof(int32) * max);
		}
		ids[n] = entry->key.queue_id;
		commits[n++] = entry->commits;
		entry->commits = 0;
	}
	LWLockRelease(wake_lock);

	/* outside the lock: owe_notify may allocate */
	for (int i = 0; i < n; i++)
		owe_notify(ids[i], commits[i], now);
	pfree(ids);
	pfree(commits);
}

/*
 * clear_mark removes a queue's mark before its NOTIFY is sent: a producer
 * committing after this sets a new mark and wakes the worker again, and
 * one that committed before is covered by the NOTIFY about to go out.
 * Removing the entry keeps dropped queues from filling the hash.
 */
static void
clear_mark(int32 queue_id)
{
	WakeKey		key;

	key.dboid = MyDatabaseId;
	key.queue_id = queue_id;
	LWLockAcquire(wake_lock, LW_EXCLUSIVE);
	hash_search(wake_hash, &key, HASH_REMOVE, NULL);
	LWLockRelease(wake_lock);
}

/*
 * pgjq_wakeup_take_due returns whether NOTIFYs are due now: the queues
 * whose coalescing window allows one go into *queue_ids (palloc'd), or
 * *nqueues is -1 when every queue must be woken (the shared hash
 * overflowed).  *next_due is when the next owed NOTIFY falls due, 0 when
 * none is owed.
 */
bool
pgjq_wakeup_take_due(TimestampTz now, int32 **queue_ids, int *nqueues,
					 TimestampTz *next_due)
{
	HASH_SEQ_STATUS status;
	NotifyState *ns;
	int			n = 0;

	*next_due = 0;
	*queue_ids = NULL;
	*nqueues = 0;
	if (notify_state != NULL)
	{
		*queue_ids = palloc(sizeof(int32) * Max(1, hash_get_num_entries(notify_state)));
		hash_seq_init(&status, notify_state);
		while ((ns = hash_seq_search(&status)) != NULL)
		{
			TimestampTz due;

			if (!ns->owed && !notify_all_owed)
				continue;
			/* a quiet queue's NOTIFY goes at once, a busy one's once a window */
			if (load_now(ns, now) * USECS_PER_SEC / NOTIFY_LOAD_WINDOW > NOTIFY_BUSY_RATE)
				due = TimestampTzPlusMilliseconds(ns->last_notify, pgjq_notify_interval);
			else
				due = now;
			if (due <= now || notify_all_owed)
			{
				(*queue_ids)[n++] = ns->queue_id;
				ns->owed = false;
				ns->last_notify = now;
				clear_mark(ns->queue_id);
			}
			else if (*next_due == 0 || due < *next_due)
				*next_due = due;
		}
	}
	if (notify_all_owed)
	{
		notify_all_owed = false;
		*nqueues = -1;
		return true;
	}
	*nqueues = n;
	return n > 0;
}
