/*-------------------------------------------------------------------------
 *
 * waiters.c
 *	  Sessions that wait inside a call, woken directly by commits: a
 *	  long-poll dequeue waits for its queue to get work, an await for its
 *	  job to end.
 *
 * A waiting session holds one slot of a shared array, indexed by its
 * PGPROC number: what it waits for, and a ticket of arrival.  A commit
 * that makes jobs ready (every transition that calls pgjq_wake_at_commit,
 * and flow control's pgjq_wake_now: wakeup.c) wakes the longest-waiting
 * sessions of that queue, only as many as take the jobs between them (the
 * sum of their max_jobs), by setting their latches; one that finds nothing
 * goes back to sleep with its place in line.  A commit that ends jobs
 * (their row written to jq.job_result or jq.dead_letter: the count
 * trigger's pgjq_waiters_job_ended) wakes every session awaiting one of
 * them.  Rolled-back transactions wake no one.
 *
 * A committing backend reads a count of waiters without a lock (one per
 * bucket of queue or job ids) and does nothing more when nobody may wait
 * for what it committed: enqueues pay one atomic read.  The count is
 * raised before the waiter looks for its work with a new snapshot, and
 * read after the committing transaction became visible (XACT_EVENT_COMMIT
 * comes after ProcArrayEndTransaction), so either the waiter's snapshot
 * sees the commit or the committer sees the waiter.
 *
 * A waiter also looks again every PGJQ_WAIT_RECHECK_MS unwoken, for what
 * wakes nobody: COMMIT PREPARED fires no callback.  Without shared memory
 * (pgjq not preloaded) it polls more often instead.
 *
 * Locking: waiters_lock (an LWLock of the "pgjq" tranche) guards the
 * slots; it is held for a scan of the slots at most, and no error is
 * raised under it.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/waiters.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/xact.h"
#include "libpq/libpq.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "waiters.h"

/* what a slot waits for */
#define WAIT_NONE	0
#define WAIT_QUEUE	1
#define WAIT_JOB	2

/* a waiter polls this often when there is no shared memory to be woken by */
#define POLL_WITHOUT_SHMEM_MS	250

/* a transaction remembers this many ended jobs exactly, then by their hash */
#define ENDED_EXACT 32

typedef struct Waiter
{
	Oid			dboid;
	uint8		kind;			/* WAIT_NONE: the slot is free */
	bool		woken;			/* set by a waker, consumed by the waiter */
	int32		queue_id;		/* WAIT_QUEUE */
	int32		max_jobs;		/* WAIT_QUEUE: how many jobs it takes */
	int64		job_id;			/* WAIT_JOB */
	uint64		ticket;			/* arrival: the longest waiting go first */
} Waiter;

/*
 * Waiters are counted per bucket of queue ids, and of job ids, so that a
 * commit reads one counter for its queue (or one per bucket of the jobs it
 * ended) and takes the lock only when somebody may wait for it: sessions
 * waiting on other queues cost the enqueues of this one nothing.
 */
#define WAIT_BUCKETS 64
#define WAIT_BUCKET(id) ((uint64) (id) % WAIT_BUCKETS)

typedef struct WaitersShared
{
	pg_atomic_uint32 queue_waiters[WAIT_BUCKETS];	/* by WAIT_BUCKET(queue_id) */
	pg_atomic_uint32 job_waiters[WAIT_BUCKETS]; /* by WAIT_BUCKET(job_id) */
	uint64		next_ticket;
	int			nslots;
	Waiter		slot[FLEXIBLE_ARRAY_MEMBER];
} WaitersShared;

static LWLock *waiters_lock = NULL;
static WaitersShared *waiters = NULL;

/* this backend's wait, while it lasts */
static Waiter *my_slot = NULL;
static bool waiting = false;
static int32 armed_max_jobs = 0;	/* pgjq_wait_arm */
static TimestampTz recheck_at = 0;

/* jobs this transaction ended, to wake their awaiters at commit */
static int64 ended[ENDED_EXACT];
static int	nended = 0;
static uint64 ended_mask = 0;	/* bit WAIT_BUCKET(job_id) of every ended job */

Size
pgjq_waiters_shmem_size(void)
{
	return add_size(offsetof(WaitersShared, slot),
					mul_size(pgjq_max_backends(), sizeof(Waiter)));
}

/* pgjq_waiters_shmem_init creates or attaches; under AddinShmemInitLock */
void
pgjq_waiters_shmem_init(LWLock *lock)
{
	bool		found;

	waiters_lock = lock;
	waiters = ShmemInitStruct("pgjq waiters", pgjq_waiters_shmem_size(), &found);
	if (!found)
	{
		memset(waiters, 0, pgjq_waiters_shmem_size());
		for (int i = 0; i < WAIT_BUCKETS; i++)
		{
			pg_atomic_init_u32(&waiters->queue_waiters[i], 0);
			pg_atomic_init_u32(&waiters->job_waiters[i], 0);
		}
		waiters->nslots = pgjq_max_backends();
	}
}

/* wake sets a waiting slot's flag and its session's latch; lock held */
static void
wake(Waiter *w)
{
	w->woken = true;
	SetLatch(pgjq_proc_latch(w - waiters->slot));
}

/*
 * pgjq_waiters_wake_queue wakes the sessions waiting for the queue that
 * take the jobs that just became ready between them, the longest waiting
 * first; called when the transaction that made them ready has committed.
 * Must not fail.
 */
void
pgjq_waiters_wake_queue(int32 queue_id, int64 jobs)
{
	if (waiters == NULL || jobs <= 0)
		return;
	pg_memory_barrier();
	if (pg_atomic_read_u32(&waiters->queue_waiters[WAIT_BUCKET(queue_id)]) == 0)
		return;

	LWLockAcquire(waiters_lock, LW_EXCLUSIVE);
	while (jobs > 0)
	{
		Waiter	   *first = NULL;

		for (int i = 0; i < waiters->nslots; i++)
		{
			Waiter	   *w = &waiters->slot[i];

			if (w->kind == WAIT_QUEUE && !w->woken && w->queue_id == queue_id &&
				w->dboid == MyDatabaseId && (first == NULL || w->ticket < first->ticket))
				first = w;
		}
		if (first == NULL)
			break;
		wake(first);
		jobs -= first->max_jobs;
	}
	LWLockRelease(waiters_lock);
}

/* ended_here tells whether this transaction ended the job (or may have) */
static bool
ended_here(int64 job_id)
{
	if (nended > ENDED_EXACT)
		return (ended_mask & (UINT64CONST(1) << WAIT_BUCKET(job_id))) != 0;
	for (int i = 0; i < nended; i++)
		if (ended[i] == job_id)
			return true;
	return false;
}

static void
wake_awaiters(void)
{
	bool		any = false;

	pg_memory_barrier();
	for (int b = 0; b < WAIT_BUCKETS && !any; b++)
		any = (ended_mask & (UINT64CONST(1) << b)) != 0 &&
			pg_atomic_read_u32(&waiters->job_waiters[b]) != 0;
	if (!any)
		return;
	LWLockAcquire(waiters_lock, LW_EXCLUSIVE);
	for (int i = 0; i < waiters->nslots; i++)
	{
		Waiter	   *w = &waiters->slot[i];

		if (w->kind == WAIT_JOB && !w->woken && w->dboid == MyDatabaseId &&
			ended_here(w->job_id))
			wake(w);
	}
	LWLockRelease(waiters_lock);
}

static void
waiters_xact_callback(XactEvent event, void *arg)
{
	if (nended == 0)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		wake_awaiters();
	else if (event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT &&
			 event != XACT_EVENT_PREPARE)
		return;

	/*
	 * A prepared transaction's jobs end at COMMIT PREPARED, which calls no
	 * callback here; their awaiters see it when they look again.
	 */
	nended = 0;
	ended_mask = 0;
}

/*
 * pgjq_waiters_job_ended notes that this transaction ended the job (wrote
 * its final row), to wake its awaiters when it commits.  A subtransaction
 * that rolls back leaves its notes: they only wake an awaiter to look
 * again.  One comparison and a store per job.
 */
void
pgjq_waiters_job_ended(int64 job_id)
{
	static bool callback_registered = false;

	if (waiters == NULL)
		return;
	if (!callback_registered)
	{
		RegisterXactCallback(waiters_xact_callback, NULL);
		callback_registered = true;
	}
	if (nended < ENDED_EXACT)
		ended[nended] = job_id;
	if (nended <= ENDED_EXACT)
		nended++;
	ended_mask |= UINT64CONST(1) << WAIT_BUCKET(job_id);
}

/* take_slot fills this backend's slot and counts it; lock not held */
static void
take_slot(uint8 kind, int32 queue_id, int32 max_jobs, int64 job_id)
{
	int			procno = pgjq_my_procno();

	Assert(!waiting);
	if (waiters != NULL && (procno < 0 || procno >= waiters->nslots))
		elog(ERROR, "pgjq: process number %d has no waiter slot", procno);
	waiting = true;
	recheck_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											 waiters ? PGJQ_WAIT_RECHECK_MS : POLL_WITHOUT_SHMEM_MS);
	if (waiters == NULL)
		return;

	LWLockAcquire(waiters_lock, LW_EXCLUSIVE);
	my_slot = &waiters->slot[procno];
	my_slot->dboid = MyDatabaseId;
	my_slot->kind = kind;
	my_slot->woken = false;
	my_slot->queue_id = queue_id;
	my_slot->max_jobs = max_jobs;
	my_slot->job_id = job_id;
	my_slot->ticket = waiters->next_ticket++;
	/* a full barrier, before the caller's first snapshot */
	pg_atomic_fetch_add_u32(kind == WAIT_QUEUE ?
							&waiters->queue_waiters[WAIT_BUCKET(queue_id)] :
							&waiters->job_waiters[WAIT_BUCKET(job_id)], 1);
	LWLockRelease(waiters_lock);
}

/*
 * pgjq_wait_arm asks the next dequeue to join its queue's waiters, to take
 * up to max_jobs; the dequeue calls pgjq_wait_join once it knows the
 * queue, before its snapshot.  A caller that waits for a queue by name
 * (the procedure jq_wait_dequeue, which dequeues through SQL) arms; it ends
 * with pgjq_wait_done, which disarms.
 */
void
pgjq_wait_arm(int32 max_jobs)
{
	armed_max_jobs = max_jobs;
}

void
pgjq_wait_join(int32 queue_id)
{
	if (armed_max_jobs > 0 && !waiting)
		take_slot(WAIT_QUEUE, queue_id, armed_max_jobs, 0);
}

/*
 * pgjq_wait_for_job starts a wait of this session for the job to end.
 * Call before looking for the first time (the first look's snapshot must
 * come after), and end with pgjq_wait_done, also on error.
 */
void
pgjq_wait_for_job(int64 job_id)
{
	take_slot(WAIT_JOB, 0, 0, job_id);
}

/*
 * check_client ends a session whose client has gone, before it looks: a
 * worker killed while it waited would otherwise lease the job it is woken
 * for, and the job would wait out the lease (the lease commits before the
 * rows fail to reach the client).  As client_connection_check_interval
 * does, for every wait, at each wakeup and each look again.
 */
static void
check_client(void)
{
	if (MyProcPort != NULL && !pq_check_connection())
		ereport(FATAL,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("connection to client lost"),
				 errdetail("The session was waiting in a pgjq call.")));
}

/*
 * pgjq_wait_sleep sleeps until this session is woken, or it is time to look
 * again anyway (true: look), or until passes (false).  Cancellation and
 * termination interrupt it as any statement; the postmaster's death ends
 * the process; a session whose client has gone ends (check_client).
 */
bool
pgjq_wait_sleep(TimestampTz until)
{
	Assert(waiting);
	for (;;)
	{
		TimestampTz now;
		TimestampTz wake_at;
		long		ms;

		if (my_slot != NULL)
		{
			bool		woken;

			LWLockAcquire(waiters_lock, LW_EXCLUSIVE);
			woken = my_slot->woken;
			my_slot->woken = false;
			LWLockRelease(waiters_lock);
			if (woken)
			{
				check_client();
				return true;
			}
		}
		now = GetCurrentTimestamp();
		if (now >= until)
			return false;
		if (now >= recheck_at)
		{
			recheck_at = TimestampTzPlusMilliseconds(now, waiters ? PGJQ_WAIT_RECHECK_MS :
													 POLL_WITHOUT_SHMEM_MS);
			check_client();
			return true;
		}
		wake_at = Min(until, recheck_at);
		ms = (long) ((wake_at - now + 999) / 1000);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * pgjq_wait_done ends this session's wait.  pass_on wakes the next waiter
 * of the queue: for a waiter that leaves without taking what it may have
 * been woken for (an error), or that took a full batch (there may be more).
 * Safe to call when no wait is on, and in error cleanup.
 */
void
pgjq_wait_done(bool pass_on)
{
	int32		queue_id = 0;
	bool		for_queue;

	armed_max_jobs = 0;
	if (!waiting)
		return;
	waiting = false;
	if (my_slot == NULL)
		return;
	LWLockAcquire(waiters_lock, LW_EXCLUSIVE);
	for_queue = my_slot->kind == WAIT_QUEUE;
	if (for_queue)
	{
		queue_id = my_slot->queue_id;
		pg_atomic_fetch_sub_u32(&waiters->queue_waiters[WAIT_BUCKET(queue_id)], 1);
	}
	else
		pg_atomic_fetch_sub_u32(&waiters->job_waiters[WAIT_BUCKET(my_slot->job_id)], 1);
	my_slot->kind = WAIT_NONE;
	my_slot->dboid = InvalidOid;
	my_slot->woken = false;
	LWLockRelease(waiters_lock);
	my_slot = NULL;
	if (pass_on && for_queue)
		pgjq_waiters_wake_queue(queue_id, 1);
}
