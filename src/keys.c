/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Job keys and flow control: each key's counts, its concurrency and
 *	  admission limits, and the scheduler that chooses which key's job a
 *	  dequeue hands out, all in shared memory and O(log keys) per job.
 *
 * A job may carry a key (a client team, a tenant, a model endpoint); jobs
 * without one share the queue's default key.  For every (queue, key) this
 * file keeps, from the same commit-time deltas as the counters
 * (counters.c calls it from its transaction callbacks), the key's ready,
 * scheduled and leased jobs, and the jobs that open transactions are
 * leasing or enqueuing (reservations).  From these:
 *
 * - Concurrency limits.  A dequeue reserves a slot of the key and of the
 *   queue before it leases, under key_lock, so concurrent dequeuers never
 *   hand out more than max_in_flight: in flight is leased (committed) plus
 *   reserved.  The reservation ends when the dequeue's transaction ends:
 *   at commit its lease is counted as leased in the same locked step, at
 *   abort the slot is free again.  An ack, fail, cancel or reclaimed lease
 *   frees its slot when it commits (its delta).
 * - Admission limits.  An enqueue reserves its jobs against the key's
 *   max_queued (ready + scheduled + reserved) before it inserts, and fails
 *   whole when they do not fit.
 * - Rate limits.  A queue, and a key with a policy, may have a budget of
 *   requests and of cost per period, kept as token buckets (Bucket).  A
 *   key without budget for its next job is throttled: it leaves the heap
 *   for the queue's heap of throttled keys, ordered by when its budget
 *   is back, so it blocks no other key; the pick brings back the keys
 *   whose time has come.  Each job's cost is taken as it is leased
 *   (pgjq_keys_take), given back if its dequeue rolls back, and settled at
 *   the commit of its ack by the cost its usage report gives.
 * - Ordered keys.  An ordered key (SQS FIFO's message groups) may be
 *   served only when nothing of it is in flight or scheduled: one job at a
 *   time, and a job that failed and waits out its backoff holds the key.
 *   Its jobs take no priority or run_at of their own (pgjq_keys_admit), so
 *   its order (priority, run_at, id) is enqueue order, and a retry returns
 *   to its place in it (jq.fail_leased and jq.promote_due make it ready at
 *   its enqueue time).  Its scan takes the key's first ready job or none
 *   (lease.c), from a snapshot that sees every job of the key that became
 *   ready before the pick.
 * - The scheduler.  A queue's keys that may be served (a ready job not
 *   being leased, a free slot) are in a pairing heap, ordered by their
 *   head's priority first (an urgent job is never behind a standard one),
 *   then, with fair share, by virtual time (start-time fair queueing: each
 *   delivery advances the key's virtual time by 1/weight; a key that
 *   becomes active starts at the queue's virtual clock, so it is served at
 *   once and then gets its weighted share), or without fair share by its
 *   head's (run_at, id), which is the order of a queue without keys.
 *   Picking is O(1), re-placing the key O(log keys).
 * - Heads.  A key's head is a lower bound on the positions (priority,
 *   run_at, id) of its ready jobs, where its next scan starts (past the
 *   entries of jobs already handed out, as bounds.c does for the lanes of
 *   jobs without a key).  Jobs that become ready lower it at commit, a
 *   rolled-back lease lowers it to the job it had taken, and a scan raises
 *   it to the first ready job it saw, unless the head was lowered
 *   meanwhile (its generation changed).
 *
 * Shared memory is empty after a start or a crash: the counter rebuild
 * (counters.c) counts the keys' jobs from the tables and loads the
 * policies, and until then a dequeue under flow control hands out
 * nothing, so a limit can never be exceeded by forgotten leases.
 *
 * Locking: key_lock guards both hashes and the heaps.  counter_lock is
 * never taken while key_lock is held.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/keys.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include <math.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/pairingheap.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "commands/dbcommands.h"

#include "counters.h"
#include "keys.h"
#include "launcher.h"
#include "usage.h"
#include "wakeup.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(pgjq_key_counters);
PG_FUNCTION_INFO_V1(pgjq_install_key_policy);
PG_FUNCTION_INFO_V1(pgjq_forget_keys);
PG_FUNCTION_INFO_V1(pgjq_check_job_key);

/* the admission error: pgjq's own SQLSTATE, so producers can back off */
#define ERRCODE_PGJQ_KEY_QUEUE_FULL	MAKE_SQLSTATE('P','J','0','0','1')

/* virtual time of one delivery at weight 1 */
#define VTIME_UNIT		((uint64) 1 << 32)

/* entries kept free for the default keys of queues, which commits create */
#define KEYS_RESERVE	64

int			pgjq_max_keys = 10000;

/*
 * A token bucket of a rate limit: requests and cost per period, refilled
 * continuously, holding at most one period's budget.  Over any interval T
 * it hands out at most budget x T / period plus one period's budget.  A
 * bucket is counted as if it had been filling from empty since the counts
 * of its database began (after a start, a crash or a rebuild): what was
 * handed out before a crash is forgotten with shared memory, and a bucket
 * that started full could then hand out a second budget within the same
 * period; one made later (a new queue, a new policy) starts full.  cost
 * may go below zero when an ack reports more than the job's estimate.
 */
typedef struct Bucket
{
	double		max_requests;	/* per period; 0: no limit */
	double		max_cost;		/* per period; 0: no limit */
	int64		period;			/* microseconds */
	double		requests;		/* tokens now */
	double		cost;
	TimestampTz at;				/* when they were counted */
} Bucket;

typedef struct QueueTag
{
	Oid			dboid;
	int32		queue_id;
} QueueTag;

/* a queue's flow-control state */
typedef struct QueueEntry
{
	QueueTag	tag;
	pairingheap heap;			/* its keys that may be served now */
	int64		leased;			/* jobs leased, committed */
	int64		reserved;		/* leases of open transactions */
	int64		keyed_jobs;		/* unfinished jobs that have a key */
	uint64		vclock;			/* virtual time of the last delivery */
	uint64		head_seq;		/* counts the lowerings of its keys' heads */
	/* the queue's settings, as the last dequeue or enqueue read them */
	bool		fair;
	int32		max_in_flight;	/* 0: no limit */
	int32		key_max_in_flight;
	int64		key_max_queued;
	bool		key_ordered;
	/* the queue's rate limit, and its keys waiting for their budget */
	Bucket		bucket;
	pairingheap throttled;		/* by ready_at */
	TimestampTz ready_at;		/* when its own bucket has budget again */
	TimestampTz throttled_since;	/* 0: not throttled */
	bool		woken;			/* its waiters were woken for ready_at */
} QueueEntry;

typedef struct KeyTag
{
	Oid			dboid;
	int32		queue_id;
	bool		isnull;			/* the default key */
	char		key[PGJQ_LIMIT_JOB_KEY_MAXLEN + 1];
} KeyTag;

typedef struct KeyEntry
{
	KeyTag		tag;
	pairingheap_node node;
	bool		in_heap;
	int32		set_aside;		/* dequeues that hold it out of the heap */
	QueueEntry *queue;
	int64		ready;
	int64		scheduled;
	int64		leased;
	int64		reserved;		/* leases of open transactions */
	int64		queued_reserved;	/* enqueues of open transactions */
	int64		delivered;		/* totals since the counters began */
	int64		succeeded;
	PgjqKeyPos	head;
	uint64		head_generation;
	uint64		head_lowered;	/* the queue's head_seq at its last lowering */
	uint64		vtime;
	/* the policy (jq.key_policy), or none: the queue's defaults */
	int64		policy_version;
	bool		has_policy;
	PgjqKeyPolicy policy;		/* 0 or !ordered_set: the queue's default */
	/* its rate limit; while throttled, in its queue's throttled heap */
	Bucket		bucket;
	pairingheap_node tnode;
	bool		in_throttled;
	TimestampTz ready_at;
	TimestampTz throttled_since;
	bool		woken;
} KeyEntry;

static LWLock *key_lock = NULL;
static HTAB *key_hash = NULL;
static HTAB *queue_hash = NULL;

/* positions before every job, and after every job */
static const PgjqKeyPos pos_first = {PGJQ_LIMIT_PRIORITY_MAX, DT_NOBEGIN, PG_INT64_MIN};
const PgjqKeyPos pgjq_key_pos_none = {PGJQ_LIMIT_PRIORITY_MIN - 1, DT_NOEND, PG_INT64_MAX};

#define pos_none pgjq_key_pos_none

/*
 * Backend-local state of the current transaction: count deltas, the
 * reservations it holds, and policy changes to install at commit.
 */
typedef struct KeyDelta
{
	KeyTag		tag;
	uint32		hash;			/* of the key, to compare before the key */
	SubTransactionId subid;
	int64		ready;
	int64		scheduled;
	int64		leased;
	int64		delivered;
	int64		succeeded;
	bool		arrived;		/* jobs became ready: the first of them */
	PgjqKeyPos	arrival;
	double		settle;			/* cost to give back (or take): usage reports */
} KeyDelta;

typedef struct Reservation
{
	KeyEntry   *entry;
	SubTransactionId subid;
	bool		lease;			/* a lease (else an enqueue) */
	int64		n;
	bool		taken;			/* a lease: a job was leased, at taken_pos */
	PgjqKeyPos	taken_pos;
	double		requests_taken; /* from the buckets: given back at abort */
	double		cost_taken;
} Reservation;

typedef struct PolicyChange
{
	KeyTag		tag;
	SubTransactionId subid;
	bool		forget_queue;	/* jq_drop_queue: forget the queue's keys */
	int64		version;
	bool		has_policy;
	PgjqKeyPolicy policy;
} PolicyChange;

static KeyDelta *deltas = NULL;
static int	ndeltas = 0;
static int	maxdeltas = 0;
static int	last_delta = -1;
static List *reservations = NIL;	/* of Reservation, in TopTransactionContext */
static List *policy_changes = NIL;	/* of PolicyChange, same */
static List *set_aside = NIL;	/* keys the running dequeue took out of a heap */

/* queues to wake after the lock: a slot freed where jobs wait (bounded) */
#define MAX_WAKES 32
static int32 wakes[MAX_WAKES];
static int	nwakes = 0;

Size
pgjq_keys_shmem_size(void)
{
	return add_size(hash_estimate_size(pgjq_max_keys + KEYS_RESERVE, sizeof(KeyEntry)),
					hash_estimate_size(PGJQ_MAX_WAKE_QUEUES, sizeof(QueueEntry)));
}

void
pgjq_keys_shmem_init(LWLock *lock)
{
	HASHCTL		info;

	key_lock = lock;
	info.keysize = sizeof(KeyTag);
	info.entrysize = sizeof(KeyEntry);
	key_hash = ShmemInitHash("pgjq key hash", pgjq_max_keys + KEYS_RESERVE,
							 pgjq_max_keys + KEYS_RESERVE, &info,
							 HASH_ELEM | HASH_BLOBS);
	info.keysize = sizeof(QueueTag);
	info.entrysize = sizeof(QueueEntry);
	queue_hash = ShmemInitHash("pgjq key queue hash", PGJQ_MAX_WAKE_QUEUES,
							   PGJQ_MAX_WAKE_QUEUES, &info, HASH_ELEM | HASH_BLOBS);
}

/*
 * head_moved records that a key's head was lowered (jobs became ready), or
 * set anew: scans that began before must not raise it past those jobs.  A
 * scan checks two things (pgjq_keys_picked): the generation, for changes
 * since its pick, and head_lowered against the queue's head_seq read
 * before its snapshot was taken, for jobs its snapshot may not see.
 */
static void
head_moved(struct KeyEntry *e);

/* ----------------------------------------------------------------------
 * Token buckets
 * ---------------------------------------------------------------------- */

static bool
bucket_limited(const Bucket *b)
{
	return b->max_requests > 0 || b->max_cost > 0;
}

static void bucket_refill(Bucket *b, TimestampTz now);

/*
 * bucket_set sets a bucket's limit; a new limit starts from empty at the
 * start of its database's counts (see Bucket)
 */
static void
bucket_set(Bucket *b, double max_requests, double max_cost, int64 period)
{
	bool		was = bucket_limited(b);

	b->max_requests = Max(max_requests, 0);
	b->max_cost = Max(max_cost, 0);
	b->period = Max(period, 1);
	if (!was && bucket_limited(b))
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz since = pgjq_counters_since();

		b->requests = 0;
		b->cost = 0;
		b->at = since != 0 && since < now ? since : now;
		bucket_refill(b, now);
	}
	b->requests = Min(b->requests, b->max_requests);
	b->cost = Min(b->cost, b->max_cost);
}

/* bucket_tokens counts a bucket's tokens as of now, without changing it */
static void
bucket_tokens(const Bucket *b, TimestampTz now, double *requests, double *cost)
{
	double		share = now > b->at ? (double) (now - b->at) / (double) b->period : 0;

	*requests = Min(b->max_requests, b->requests + share * b->max_requests);
	*cost = Min(b->max_cost, b->cost + share * b->max_cost);
}

static void
bucket_refill(Bucket *b, TimestampTz now)
{
	if (!bucket_limited(b) || now <= b->at)
		return;
	bucket_tokens(b, now, &b->requests, &b->cost);
	b->at = now;
}

/*
 * bucket_fits: a job of cost may go now.  A job that costs more than a
 * whole period's budget (enqueued before the limit was lowered) waits for
 * a full bucket rather than forever.
 */
static bool
bucket_fits(const Bucket *b, double cost)
{
	if (b->max_requests > 0 && b->requests < 1)
		return false;
	if (b->max_cost > 0 && b->cost < Min(cost, b->max_cost))
		return false;
	return true;
}

/* bucket_ready_at: when a job of cost will fit (refilled bucket) */
static TimestampTz
bucket_ready_at(const Bucket *b, double cost)
{
	double		wait = 0;

	if (b->max_requests > 0 && b->requests < 1)
		wait = (1 - b->requests) / b->max_requests;
	if (b->max_cost > 0 && b->cost < Min(cost, b->max_cost))
		wait = Max(wait, (Min(cost, b->max_cost) - b->cost) / b->max_cost);
	return b->at + (int64) ceil(wait * (double) b->period);
}

/*
 * bucket_add gives tokens back (or takes more: negative): never more than
 * a period's budget, and never owing more than one
 */
static void
bucket_add(Bucket *b, double requests, double cost)
{
	if (b->max_requests > 0)
		b->requests = Max(-b->max_requests, Min(b->max_requests, b->requests + requests));
	if (b->max_cost > 0)
		b->cost = Max(-b->max_cost, Min(b->max_cost, b->cost + cost));
}

/* ----------------------------------------------------------------------
 * Positions, the heap's order, and which keys may be served
 * ---------------------------------------------------------------------- */

/* pos_cmp orders positions as jobs are handed out: < 0 when a goes first */
static int
pos_cmp(const PgjqKeyPos *a, const PgjqKeyPos *b)
{
	if (a->priority != b->priority)
		return a->priority > b->priority ? -1 : 1;
	if (a->at != b->at)
		return a->at < b->at ? -1 : 1;
	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return 0;
}

/*
 * key_order is the heap's comparator: the heap is a max-heap, so > 0
 * means a is served before b.  Priority is absolute; then virtual time
 * (fair share) or the head's position.
 */
static int
key_order(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	const KeyEntry *x = pairingheap_const_container(KeyEntry, node, a);
	const KeyEntry *y = pairingheap_const_container(KeyEntry, node, b);
	const QueueEntry *q = (const QueueEntry *) arg;

	if (x->head.priority != y->head.priority)
		return x->head.priority > y->head.priority ? 1 : -1;
	if (q->fair && x->vtime != y->vtime)
		return x->vtime < y->vtime ? 1 : -1;
	return -pos_cmp(&x->head, &y->head);
}

/*
 * queue_heap returns the queue's heap with the comparator of this
 * process's address space (the heap lives in shared memory; a function
 * pointer stored there by another process need not be valid here)
 */
static pairingheap *
queue_heap(QueueEntry *q)
{
	q->heap.ph_compare = key_order;
	q->heap.ph_arg = q;
	return &q->heap;
}

static void
heap_add(QueueEntry *q, KeyEntry *e)
{
	pairingheap_add(queue_heap(q), &e->node);
	e->in_heap = true;
}

static void
heap_remove(QueueEntry *q, KeyEntry *e)
{
	pairingheap_remove(queue_heap(q), &e->node);
	e->in_heap = false;
}

/* the throttled heap's order: the key whose budget is back first on top */
static int
throttled_order(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	const KeyEntry *x = pairingheap_const_container(KeyEntry, tnode, a);
	const KeyEntry *y = pairingheap_const_container(KeyEntry, tnode, b);

	if (x->ready_at != y->ready_at)
		return x->ready_at < y->ready_at ? 1 : -1;
	return 0;
}

static pairingheap *
throttled_heap(QueueEntry *q)
{
	q->throttled.ph_compare = throttled_order;
	q->throttled.ph_arg = NULL;
	return &q->throttled;
}

/*
 * throttle takes a key out of the schedule until ready_at, when its budget
 * will cover its next job.  Caller holds key_lock.
 */
static void
throttle(KeyEntry *e, TimestampTz ready_at, TimestampTz now)
{
	QueueEntry *q = e->queue;

	if (e->in_heap)
		heap_remove(q, e);
	if (e->in_throttled)
		pairingheap_remove(throttled_heap(q), &e->tnode);
	e->ready_at = ready_at;
	pairingheap_add(throttled_heap(q), &e->tnode);
	e->in_throttled = true;
	if (e->throttled_since == 0)
		e->throttled_since = now;
	e->woken = false;
}

/*
 * throttle_queue: the queue's own bucket cannot cover a job of cost; it
 * hands out nothing until it can.  Caller holds key_lock.
 */
static void
throttle_queue(QueueEntry *q, double cost, TimestampTz now)
{
	q->ready_at = bucket_ready_at(&q->bucket, cost);
	if (q->throttled_since == 0)
		q->throttled_since = now;
	q->woken = false;
}

static void place(KeyEntry *e);

/* release_throttled puts back the keys whose budget is back; caller locks */
static void
release_throttled(QueueEntry *q, TimestampTz now)
{
	while (!pairingheap_is_empty(&q->throttled))
	{
		KeyEntry   *e = pairingheap_container(KeyEntry, tnode,
											  pairingheap_first(throttled_heap(q)));

		if (e->ready_at > now)
			break;
		(void) pairingheap_remove_first(throttled_heap(q));
		e->in_throttled = false;
		place(e);
	}
}

static void
head_moved(KeyEntry *e)
{
	e->head_generation++;
	e->head_lowered = ++e->queue->head_seq;
}

/* the key's concurrency limit in force; 0: none */
static int32
key_limit(const KeyEntry *e)
{
	if (e->has_policy && e->policy.max_in_flight > 0)
		return e->policy.max_in_flight;
	return e->queue->key_max_in_flight;
}

/* is the key ordered: its policy says, or else its queue's key_ordered */
static bool
is_ordered(const KeyEntry *e)
{
	if (e->has_policy && e->policy.ordered_set)
		return e->policy.ordered;
	return e->queue->key_ordered;
}

/*
 * slot_free: the key may have one more job in flight.  An ordered key has
 * none in flight and none scheduled, the retry of a failed job that holds
 * its place; own_scheduled is the change of this transaction to its
 * scheduled jobs, not counted yet (own_ready_key: a retry it promoted).
 * In flight counts this transaction's leases by their reservations.
 */
static bool
slot_free_with(const KeyEntry *e, int64 own_scheduled)
{
	int64		in_flight = e->leased + e->reserved;
	int32		limit;

	if (is_ordered(e))
		return in_flight == 0 && e->scheduled + own_scheduled <= 0;
	limit = key_limit(e);
	return limit <= 0 || in_flight < limit;
}

#define slot_free(e) slot_free_with(e, 0)

/* may the key be served: a ready job nobody is leasing, and a free slot */
static bool
servable(const KeyEntry *e)
{
	return e->ready > e->reserved && slot_free(e);
}

/*
 * place puts the key in its queue's heap, or takes it out, as servable()
 * says, and at its current place.  A key that enters starts no earlier
 * than the queue's virtual clock: idle time earns no credit.
 */
static void
place(KeyEntry *e)
{
	QueueEntry *q = e->queue;

	if (e->in_throttled)
		return;					/* release_throttled places it */
	if (e->in_heap)
		heap_remove(q, e);
	if (!servable(e))
		return;
	if (e->vtime < q->vclock)
		e->vtime = q->vclock;
	heap_add(q, e);
}

/* ----------------------------------------------------------------------
 * Entries
 * ---------------------------------------------------------------------- */

static void
make_tag(KeyTag *tag, int32 queue_id, const char *key)
{
	memset(tag, 0, sizeof(KeyTag));
	tag->dboid = MyDatabaseId;
	tag->queue_id = queue_id;
	tag->isnull = key == NULL;
	if (key != NULL)
		strlcpy(tag->key, key, sizeof(tag->key));
}

/* the queue's entry, created on demand; NULL when the hash is full */
static QueueEntry *
queue_entry(Oid dboid, int32 queue_id, bool create)
{
	QueueTag	tag;
	QueueEntry *q;
	bool		found;

	memset(&tag, 0, sizeof(tag));
	tag.dboid = dboid;
	tag.queue_id = queue_id;
	q = hash_search(queue_hash, &tag, create ? HASH_ENTER_NULL : HASH_FIND, &found);
	if (q != NULL && !found)
	{
		memset((char *) q + sizeof(QueueTag), 0, sizeof(QueueEntry) - sizeof(QueueTag));
		q->heap.ph_root = NULL;
		q->throttled.ph_root = NULL;
	}
	return q;
}

/*
 * idle: the key holds nothing (no job, no reservation, no policy) and no
 * backend points at it (a reservation, or a dequeue that set it aside,
 * keeps its address in backend memory), so its entry may go.
 */
static bool
idle(const KeyEntry *e)
{
	return e->ready == 0 && e->scheduled == 0 && e->leased == 0 &&
		e->reserved == 0 && e->queued_reserved == 0 && !e->has_policy &&
		!e->in_heap && !e->in_throttled && e->set_aside == 0;
}

/*
 * forget_idle removes keys that are idle to make room; they come back, at
 * zero totals, with their next job.  Returns how many went.
 */
static int
forget_idle(void)
{
	HASH_SEQ_STATUS status;
	KeyEntry   *e;
	int			n = 0;

	hash_seq_init(&status, key_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (idle(e))
		{
			hash_search(key_hash, &e->tag, HASH_REMOVE, NULL);
			n++;
		}
	}
	return n;
}

/*
 * key_entry finds or creates the entry of a key.  A new key is refused
 * (NULL) when it would take one of the last KEYS_RESERVE entries, unless
 * it is a default key (commits create those and must not fail), and
 * always when the hash is full.  Caller holds key_lock exclusively.
 */
static KeyEntry *
key_entry(const KeyTag *tag, bool create)
{
	KeyEntry   *e;
	QueueEntry *q;
	bool		found;

	e = hash_search(key_hash, tag, HASH_FIND, NULL);
	if (e != NULL || !create)
		return e;
	q = queue_entry(tag->dboid, tag->queue_id, true);
	if (q == NULL)
		return NULL;
	if (hash_get_num_entries(key_hash) >= pgjq_max_keys &&
		forget_idle() == 0 && !tag->isnull)
		return NULL;
	e = hash_search(key_hash, tag, HASH_ENTER_NULL, &found);
	if (e == NULL)
		return NULL;
	if (!found)
	{
		memset((char *) e + sizeof(KeyTag), 0, sizeof(KeyEntry) - sizeof(KeyTag));
		e->queue = q;
		e->head = pos_none;
		e->policy.weight = 1;
	}
	return e;
}

/* the error for a key that finds no room in shared memory */
static void
no_room(const char *key)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("too many job keys in shared memory for key \"%s\"", key),
			 errdetail("pgjq.max_keys is %d; keys without jobs, reservations or a policy are forgotten to make room, and none was left.",
					   pgjq_max_keys),
			 errhint("Raise pgjq.max_keys (takes a restart), or use fewer distinct keys.")));
}

/* ----------------------------------------------------------------------
 * Counting: deltas from the count trigger, applied at commit
 * ---------------------------------------------------------------------- */

/*
 * pgjq_keys_count records one change of a job of the queue with key (NULL:
 * the default key): it left oldstate and entered newstate (0: none), and
 * pos is its position when it became ready.  The succeeded state counts
 * the key's successes.
 */
void
pgjq_keys_count(int32 queue_id, const char *key, char oldstate, char newstate,
				const PgjqKeyPos *pos)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	uint32		hash = key == NULL ? 0 : hash_bytes((const unsigned char *) key, strlen(key));
	KeyDelta   *d = NULL;

	if (key_hash == NULL)
		return;

	/*
	 * The delta of this key: the last one used, usually (a batch of one
	 * key), or found by its hash (a dequeue over many keys).
	 */
#define DELTA_IS(x) ((x)->subid == subid && (x)->hash == hash && \
					 (x)->tag.queue_id == queue_id && (x)->tag.isnull == (key == NULL) && \
					 (key == NULL || strcmp((x)->tag.key, key) == 0))
	if (last_delta >= 0 && last_delta < ndeltas && DELTA_IS(&deltas[last_delta]))
		d = &deltas[last_delta];
	for (int i = ndeltas - 1; d == NULL && i >= 0; i--)
		if (DELTA_IS(&deltas[i]))
		{
			d = &deltas[i];
			last_delta = i;
		}
#undef DELTA_IS
	if (d == NULL)
	{
		pgjq_counters_register_callbacks();
		if (ndeltas == maxdeltas)
		{
			maxdeltas = Max(8, maxdeltas * 2);
			if (deltas == NULL)
				deltas = MemoryContextAlloc(TopMemoryContext, sizeof(KeyDelta) * maxdeltas);
			else
				deltas = repalloc(deltas, sizeof(KeyDelta) * maxdeltas);
		}
		last_delta = ndeltas;
		d = &deltas[ndeltas++];
		memset(d, 0, sizeof(KeyDelta));
		make_tag(&d->tag, queue_id, key);
		d->hash = hash;
		d->subid = subid;
	}

	switch (oldstate)
	{
		case PGJQ_STATE_READY:
			d->ready--;
			break;
		case PGJQ_STATE_SCHEDULED:
			d->scheduled--;
			break;
		case PGJQ_STATE_LEASED:
			d->leased--;
			break;
	}
	switch (newstate)
	{
		case PGJQ_STATE_READY:
			d->ready++;
			if (pos != NULL && (!d->arrived || pos_cmp(pos, &d->arrival) < 0))
			{
				d->arrival = *pos;
				d->arrived = true;
			}
			break;
		case PGJQ_STATE_SCHEDULED:
			d->scheduled++;
			break;
		case PGJQ_STATE_LEASED:
			d->leased++;
			if (oldstate == PGJQ_STATE_READY)
				d->delivered++;
			break;
		case PGJQ_STATE_SUCCEEDED:
			d->succeeded++;
			break;
	}
}

/*
 * pgjq_keys_settle records that a job of the key (NULL: the default key)
 * cost amount less than was taken from the buckets for it (more, when
 * negative): at commit, the key's and the queue's cost buckets get it.
 */
void
pgjq_keys_settle(int32 queue_id, const char *key, double amount)
{
	if (key_hash == NULL || amount == 0)
		return;
	pgjq_keys_count(queue_id, key, 0, 0, NULL);
	deltas[last_delta].settle += amount;
}

/* reservation_list_append keeps a reservation to the transaction's end */
static Reservation *
add_reservation(KeyEntry *e, bool lease, int64 n)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	Reservation *r = palloc0(sizeof(Reservation));

	r->entry = e;
	r->subid = GetCurrentSubTransactionId();
	r->lease = lease;
	r->n = n;
	reservations = lappend(reservations, r);
	MemoryContextSwitchTo(old);
	return r;
}

/*
 * note_slot_freed: a slot of the key's queue freed (a lease ended, a
 * reservation rolled back); if the queue has a concurrency limit and a key
 * that may be served, its waiting workers are woken after the lock (a
 * queue without limits never waits for a slot).  Caller holds key_lock.
 */
static void
note_slot_freed(KeyEntry *e)
{
	QueueEntry *q = e->queue;

	if ((q->max_in_flight <= 0 && key_limit(e) <= 0 && !is_ordered(e)) ||
		pairingheap_is_empty(&q->heap))
		return;
	for (int i = 0; i < nwakes; i++)
		if (wakes[i] == q->tag.queue_id)
			return;
	if (nwakes < MAX_WAKES)
		wakes[nwakes++] = q->tag.queue_id;
}

/* wake the queues noted, once key_lock is released */
static void
wake_noted(void)
{
	pgjq_wake_now(wakes, nwakes);
	nwakes = 0;
}

/*
 * end_reservation gives a reservation back; a lease taken by a
 * transaction that rolled back returns its job to the ready ones, so the
 * key's head must not be past it.  Caller holds key_lock.
 */
static void
end_reservation(Reservation *r, bool committed)
{
	KeyEntry   *e = r->entry;

	if (r->lease)
	{
		e->reserved -= r->n;
		e->queue->reserved -= r->n;
		if (!committed && (r->requests_taken > 0 || r->cost_taken > 0))
		{
			bucket_add(&e->bucket, r->requests_taken, r->cost_taken);
			bucket_add(&e->queue->bucket, r->requests_taken, r->cost_taken);
		}
		if (!committed && r->taken && pos_cmp(&r->taken_pos, &e->head) < 0)
		{
			e->head = r->taken_pos;
			head_moved(e);
		}
	}
	else
		e->queued_reserved -= r->n;
	place(e);
	if (r->lease && !committed)
		note_slot_freed(e);
}

/* put the keys a dequeue set aside back in their heaps; caller locks */
static void
restore_set_aside(void)
{
	ListCell   *lc;

	foreach(lc, set_aside)
	{
		KeyEntry   *e = (KeyEntry *) lfirst(lc);

		e->set_aside--;
		place(e);
	}
	list_free(set_aside);
	set_aside = NIL;
}

/* apply_policy installs a committed policy change; caller locks */
static void
apply_policy(const PolicyChange *p, bool *full)
{
	KeyEntry   *e;

	if (p->forget_queue)
	{
		HASH_SEQ_STATUS status;
		QueueEntry *q;
		bool		kept = false;

		/*
		 * The queue's jobs were deleted with it: its keys are idle, but for
		 * one a backend still points at (forgotten later, as any idle key),
		 * and the policies, which the drop deleted from the table.
		 */
		hash_seq_init(&status, key_hash);
		while ((e = hash_seq_search(&status)) != NULL)
		{
			if (e->tag.dboid != p->tag.dboid || e->tag.queue_id != p->tag.queue_id)
				continue;
			e->has_policy = false;
			if (idle(e))
				hash_search(key_hash, &e->tag, HASH_REMOVE, NULL);
			else
				kept = true;
		}
		q = queue_entry(p->tag.dboid, p->tag.queue_id, false);
		if (q != NULL && !kept)
			hash_search(queue_hash, &q->tag, HASH_REMOVE, NULL);
		return;
	}
	e = key_entry(&p->tag, true);
	if (e == NULL)
	{
		*full = true;
		return;
	}
	if (p->version <= e->policy_version)
		return;					/* a later change was installed first */
	e->policy_version = p->version;
	e->has_policy = p->has_policy;
	if (p->has_policy)
		e->policy = p->policy;
	else
	{
		memset(&e->policy, 0, sizeof(e->policy));
		e->policy.weight = 1;
	}
	bucket_set(&e->bucket, e->policy.rate_requests, e->policy.rate_cost,
			   e->policy.rate_period);
	place(e);
}

/*
 * pgjq_keys_at_commit adds the transaction's deltas to the keys, ends its
 * reservations (in the same locked step: a lease that committed is
 * counted as leased as its reservation ends, so in flight never dips) and
 * installs its policy changes.  Runs in the commit callback after the
 * counters, and must not fail: a key without room marks the counters
 * stale, for the worker to rebuild.
 */
void
pgjq_keys_at_commit(void)
{
	bool		full = false;
	ListCell   *lc;

	if (key_hash == NULL ||
		(ndeltas == 0 && reservations == NIL && policy_changes == NIL && set_aside == NIL))
		return;

	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	for (int i = 0; i < ndeltas; i++)
	{
		KeyDelta   *d = &deltas[i];
		KeyEntry   *e = key_entry(&d->tag, true);

		if (e == NULL)
		{
			full = true;
			continue;
		}
		e->ready += d->ready;
		e->scheduled += d->scheduled;
		e->leased += d->leased;
		e->delivered += d->delivered;
		e->succeeded += d->succeeded;
		e->queue->leased += d->leased;
		if (d->settle != 0)
		{
			bucket_add(&e->bucket, 0, d->settle);
			bucket_add(&e->queue->bucket, 0, d->settle);
		}
		if (!d->tag.isnull)
			e->queue->keyed_jobs += d->ready + d->scheduled + d->leased;
		if (d->arrived || d->ready > 0)
		{
			if (d->arrived && pos_cmp(&d->arrival, &e->head) < 0)
				e->head = d->arrival;
			head_moved(e);
		}
		if (e->ready == 0 && e->reserved == 0)
		{
			e->head = pos_none;
			head_moved(e);
		}
		place(e);
		if (d->leased < 0)
			note_slot_freed(e);
	}
	foreach(lc, reservations)
		end_reservation((Reservation *) lfirst(lc), true);
	foreach(lc, policy_changes)
		apply_policy((PolicyChange *) lfirst(lc), &full);
	restore_set_aside();
	LWLockRelease(key_lock);
	wake_noted();

	ndeltas = 0;
	last_delta = -1;
	reservations = NIL;			/* freed with TopTransactionContext */
	policy_changes = NIL;
	if (full)
		pgjq_counters_mark_stale();
}

/* pgjq_keys_at_abort ends the transaction's reservations, counting nothing */
void
pgjq_keys_at_abort(void)
{
	ListCell   *lc;

	ndeltas = 0;
	last_delta = -1;
	policy_changes = NIL;
	if (key_hash == NULL || (reservations == NIL && set_aside == NIL))
	{
		reservations = NIL;
		return;
	}
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	foreach(lc, reservations)
		end_reservation((Reservation *) lfirst(lc), false);
	restore_set_aside();
	LWLockRelease(key_lock);
	wake_noted();
	reservations = NIL;
}

/*
 * pgjq_keys_at_subabort: at the end of a subtransaction, its deltas,
 * reservations and policy changes pass to its parent (commit) or vanish
 * with it, its reservations given back at once.
 */
void
pgjq_keys_at_subabort(SubTransactionId subid, SubTransactionId parent, bool commit)
{
	int			kept = 0;
	List	   *ended = NIL;
	ListCell   *lc;

	for (int i = 0; i < ndeltas; i++)
	{
		if (deltas[i].subid == subid)
		{
			if (!commit)
				continue;
			deltas[i].subid = parent;
		}
		deltas[kept++] = deltas[i];
	}
	ndeltas = kept;
	last_delta = -1;

	foreach(lc, policy_changes)
	{
		PolicyChange *p = (PolicyChange *) lfirst(lc);

		if (p->subid == subid)
		{
			if (commit)
				p->subid = parent;
			else
				policy_changes = foreach_delete_current(policy_changes, lc);
		}
	}
	foreach(lc, reservations)
	{
		Reservation *r = (Reservation *) lfirst(lc);

		if (r->subid != subid)
			continue;
		if (commit)
			r->subid = parent;
		else
		{
			ended = lappend(ended, r);
			reservations = foreach_delete_current(reservations, lc);
		}
	}
	if (ended != NIL)
	{
		LWLockAcquire(key_lock, LW_EXCLUSIVE);
		foreach(lc, ended)
			end_reservation((Reservation *) lfirst(lc), false);
		LWLockRelease(key_lock);
		wake_noted();
		list_free(ended);
	}
}

/* ----------------------------------------------------------------------
 * Enqueue: admission
 * ---------------------------------------------------------------------- */

/*
 * pgjq_keys_check_key raises an error unless key (of len bytes) is a
 * usable job key: not empty, at most PGJQ_LIMIT_JOB_KEY_MAXLEN bytes.
 */
void
pgjq_keys_check_key(const char *key, int len)
{
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job key must not be empty"),
				 errhint("Pass NULL for a job without a key.")));
	if (len > PGJQ_LIMIT_JOB_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("job key of %d bytes is too long", len),
				 errdetail("The limit is %d bytes.", PGJQ_LIMIT_JOB_KEY_MAXLEN),
				 errhint("A key names a client, a tenant or an endpoint; use a short name or id.")));
	if (memchr(key, '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job key must not contain a zero byte")));
}

/* sync_queue records the queue's settings where the heap reads them */
static void
sync_queue(QueueEntry *q, const PgjqQueue *queue)
{
	bool		replace = q->fair != queue->fair ||
		q->key_max_in_flight != queue->key_max_in_flight ||
		q->key_ordered != queue->key_ordered;

	q->max_in_flight = queue->max_in_flight;
	q->key_max_queued = queue->key_max_queued;
	bucket_set(&q->bucket, queue->rate_requests, queue->rate_cost, queue->rate_period);
	if (!replace)
		return;
	q->fair = queue->fair;
	q->key_max_in_flight = queue->key_max_in_flight;
	q->key_ordered = queue->key_ordered;

	/* the order or the limits changed: place every key of the queue again */
	{
		HASH_SEQ_STATUS status;
		KeyEntry   *e;

		q->heap.ph_root = NULL;
		hash_seq_init(&status, key_hash);
		while ((e = hash_seq_search(&status)) != NULL)
			if (e->queue == q)
			{
				e->in_heap = false;
				place(e);
			}
	}
}

/* the error for jobs with a priority or a run_at of an ordered key */
static void
not_in_order(const PgjqQueue *queue, const char *key)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 key == NULL ?
			 errmsg("jobs without a key in queue \"%s\" are ordered and take no priority or run_at",
					queue->name) :
			 errmsg("key \"%s\" of queue \"%s\" is ordered and its jobs take no priority or run_at",
					key, queue->name),
			 errdetail("An ordered key hands out its jobs one at a time in enqueue order."),
			 errhint("Enqueue without priority and run_at, or set ordered => false in the key's policy.")));
}

/*
 * pgjq_keys_admit reserves n new jobs of the key (NULL: the default key)
 * against its max_queued, the key's policy or else the queue's
 * key_max_queued, and raises PJ001 when they do not fit: nothing of the
 * enqueue has happened yet, and nothing will.  The reservation holds until
 * the transaction ends, so concurrent producers never overfill the key;
 * at commit the jobs are counted instead.  A keyed enqueue always
 * reserves, which keeps its key's entry until its jobs are counted.
 * in_order says the jobs have the default priority and run at once; jobs
 * of an ordered key must (their order is then the order of enqueue).
 * max_cost is the largest cost among them: one that a whole period's
 * budget of the key could not cover is refused.
 */
void
pgjq_keys_admit(const PgjqQueue *queue, const char *key, int n, bool in_order,
				double max_cost)
{
	KeyTag		tag;
	KeyEntry   *e;
	int64		limit;
	int64		queued;

	if (key_hash == NULL)
	{
		if (key != NULL || queue->key_max_queued > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("job keys and admission limits need pgjq in shared_preload_libraries")));
		return;
	}
	if (key == NULL && queue->key_ordered && !in_order)
		not_in_order(queue, NULL);	/* no policy for the default key */
	if (key == NULL && queue->key_max_queued <= 0)
		return;

	make_tag(&tag, queue->queue_id, key);
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	e = key_entry(&tag, true);
	if (e == NULL)
	{
		LWLockRelease(key_lock);
		no_room(key);
	}
	sync_queue(e->queue, queue);
	if (!in_order && is_ordered(e))
	{
		LWLockRelease(key_lock);
		not_in_order(queue, key);
	}
	if (e->bucket.max_cost > 0 && max_cost > e->bucket.max_cost)
	{
		double		budget = e->bucket.max_cost;

		LWLockRelease(key_lock);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a job of cost %g exceeds the rate limit of key \"%s\" of queue \"%s\"",
						max_cost, key, queue->name),
				 errdetail("The key's budget is %g per period: the job could never run.", budget),
				 errhint("Split the job, or raise the key's rate_cost.")));
	}
	limit = e->has_policy && e->policy.max_queued > 0 ?
		e->policy.max_queued : queue->key_max_queued;
	queued = e->ready + e->scheduled + e->queued_reserved;
	if (limit > 0 && queued + n > limit)
	{
		LWLockRelease(key_lock);
		ereport(ERROR,
				(errcode(ERRCODE_PGJQ_KEY_QUEUE_FULL),
				 key == NULL ?
				 errmsg("jobs without a key in queue \"%s\" are at their limit of " INT64_FORMAT " queued jobs",
						queue->name, limit) :
				 errmsg("key \"%s\" of queue \"%s\" is at its limit of " INT64_FORMAT " queued jobs",
						key, queue->name, limit),
				 errdetail("It holds " INT64_FORMAT " ready or scheduled jobs (with those being enqueued); this enqueue adds %d.",
						   queued, n),
				 errhint("Retry later, when workers have taken some of its jobs.")));
	}
	e->queued_reserved += n;
	pgjq_counters_register_callbacks();
	(void) add_reservation(e, false, n);
	LWLockRelease(key_lock);
}

/* ----------------------------------------------------------------------
 * Dequeue: the scheduler
 * ---------------------------------------------------------------------- */

/*
 * pgjq_keys_snapshot_mark returns the queue's count of head lowerings, to
 * be read before a dequeue takes the snapshot its scans use: a key whose
 * head was lowered after it may have jobs that snapshot does not see, and
 * its head is not raised by that dequeue (pgjq_keys_picked).
 */
uint64
pgjq_keys_snapshot_mark(const PgjqQueue *queue)
{
	QueueEntry *q;
	uint64		mark = 0;

	if (key_hash == NULL)
		return 0;
	LWLockAcquire(key_lock, LW_SHARED);
	q = queue_entry(MyDatabaseId, queue->queue_id, false);
	if (q != NULL)
		mark = q->head_seq;
	LWLockRelease(key_lock);
	return mark;
}

/*
 * pgjq_keys_flow_controlled tells whether a dequeue from the queue must go
 * through the scheduler: when it has a concurrency limit, or jobs with a
 * key (which are not in jq.job_ready_idx).  Otherwise it is a plain queue,
 * served from its lanes as before keys existed.
 */
bool
pgjq_keys_flow_controlled(const PgjqQueue *queue)
{
	QueueEntry *q;
	bool		keyed;

	if (queue->max_in_flight > 0 || queue->key_max_in_flight > 0 || queue->key_ordered ||
		queue->rate_requests > 0 || queue->rate_cost > 0)
		return true;
	if (key_hash == NULL)
		return false;
	LWLockAcquire(key_lock, LW_SHARED);
	q = queue_entry(MyDatabaseId, queue->queue_id, false);
	keyed = q != NULL && q->keyed_jobs > 0;
	LWLockRelease(key_lock);
	return keyed;
}

/*
 * own_ready_key returns a key of the queue to which this transaction added
 * ready jobs that it has not leased yet, with a free slot; NULL when there
 * is none.  Shared memory counts them only at commit, so without this a
 * transaction could not dequeue the jobs it enqueued itself (or promoted:
 * a retry of an ordered key frees the key as it becomes ready).  Keys the
 * running dequeue set aside are passed over.  Caller holds key_lock.
 */
static KeyEntry *
own_ready_key(QueueEntry *q)
{
	for (int i = 0; i < ndeltas; i++)
	{
		KeyEntry   *e;
		int64		ready = 0;
		int64		scheduled = 0;
		PgjqKeyPos	first = pos_none;

		if (deltas[i].tag.dboid != q->tag.dboid ||
			deltas[i].tag.queue_id != q->tag.queue_id)
			continue;
		for (int k = 0; k < ndeltas; k++)
			if (memcmp(&deltas[k].tag, &deltas[i].tag, sizeof(KeyTag)) == 0)
			{
				ready += deltas[k].ready;
				scheduled += deltas[k].scheduled;
				if (deltas[k].arrived && pos_cmp(&deltas[k].arrival, &first) < 0)
					first = deltas[k].arrival;
			}
		if (ready <= 0)
			continue;
		e = key_entry(&deltas[i].tag, true);
		if (e == NULL || list_member_ptr(set_aside, e))
			continue;
		if (!slot_free_with(e, scheduled) || e->in_throttled)
			continue;
		if (pos_cmp(&first, &e->head) < 0)
		{
			e->head = first;
			head_moved(e);
		}
		return e;
	}
	return NULL;
}

/*
 * pgjq_keys_pick chooses the key whose jobs the dequeue hands out next and
 * reserves slots of it and of the queue for up to want of them (fewer when
 * its ready jobs or the free slots are fewer; one without fair share,
 * which keeps the queue's order); false when none may be served (nothing
 * ready, every key at its limit, the queue at its limit, or the counts not
 * rebuilt yet after a start).  The caller leases up to ticket->n
 * consecutive jobs of the key from ticket->head and reports with
 * pgjq_keys_picked.
 */
bool
pgjq_keys_pick(const PgjqQueue *queue, PgjqKeyTicket *ticket, int32 want)
{
	TimestampTz now;
	int64		n;
	int32		limit;
	QueueEntry *q;
	KeyEntry   *e;

	if (key_hash == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("flow control needs pgjq in shared_preload_libraries"),
				 errdetail("Queue \"%s\" has a concurrency limit or jobs with a key.",
						   queue->name)));
	if (!pgjq_counters_are_valid())
	{
		pid_t		pid;

		/*
		 * Until the worker has counted the keys' jobs (seconds after a
		 * start), nothing is handed out: leases from before the start
		 * would not be counted against the limits.  Without a worker
		 * that will count them, say so rather than return nothing forever.
		 */
		if (pgjq_database_worker(MyDatabaseId, &pid) == PGJQ_WORKER_NONE &&
			!pgjq_database_allowed(get_database_name(MyDatabaseId)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("flow control of queue \"%s\" needs the pgjq worker of this database",
							queue->name),
					 errdetail("The worker counts each key's jobs after a start; this database is not in pgjq.database."),
					 errhint("Add the database to pgjq.database and reload the configuration.")));
		return false;
	}

	now = GetCurrentTimestamp();
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	q = queue_entry(MyDatabaseId, queue->queue_id, true);
	if (q == NULL)
	{
		LWLockRelease(key_lock);
		return false;
	}
	sync_queue(q, queue);
	if (q->max_in_flight > 0 && q->leased + q->reserved >= q->max_in_flight)
	{
		LWLockRelease(key_lock);
		return false;
	}
	/* the queue's budget, then the keys whose budget is back */
	bucket_refill(&q->bucket, now);
	if (!bucket_fits(&q->bucket, 0))
	{
		throttle_queue(q, 0, now);
		LWLockRelease(key_lock);
		return false;
	}
	release_throttled(q, now);
	for (;;)
	{
		if (!pairingheap_is_empty(&q->heap))
			e = pairingheap_container(KeyEntry, node, pairingheap_first(queue_heap(q)));
		else if ((e = own_ready_key(q)) == NULL)
		{
			LWLockRelease(key_lock);
			return false;
		}
		bucket_refill(&e->bucket, now);
		if (bucket_fits(&e->bucket, 0))
			break;
		throttle(e, bucket_ready_at(&e->bucket, 0), now);
	}

	ticket->entry = e;
	ticket->isnull = e->tag.isnull;
	ticket->key = e->tag.isnull ? NULL : pstrdup(e->tag.key);
	ticket->head = pos_cmp(&e->head, &pos_none) == 0 ? pos_first : e->head;
	ticket->head_generation = e->head_generation;
	ticket->vtime = e->vtime;
	ticket->ordered = is_ordered(e);
	ticket->head_lowered = e->head_lowered;
	ticket->rated = bucket_limited(&e->bucket) || bucket_limited(&q->bucket);

	/* how many: what it has ready and not being leased, and free slots */
	n = q->fair && !ticket->ordered ? Max(want, 1) : 1;
	n = Min(n, Max(e->ready - e->reserved, 1));
	limit = key_limit(e);
	if (limit > 0)
		n = Min(n, Max(limit - e->leased - e->reserved, 1));
	if (q->max_in_flight > 0)
		n = Min(n, Max(q->max_in_flight - q->leased - q->reserved, 1));
	ticket->n = (int32) n;

	/* the delivery: the slots, and the key's turn for n jobs */
	e->reserved += n;
	q->reserved += n;
	if (e->vtime > q->vclock)
		q->vclock = e->vtime;
	e->vtime += (uint64) n * VTIME_UNIT / (uint64) Max(e->policy.weight, 1);
	place(e);
	pgjq_counters_register_callbacks();
	(void) add_reservation(e, true, n);
	LWLockRelease(key_lock);
	return true;
}

/*
 * pgjq_keys_picked reports what became of a pick: leased of its ticket->n
 * jobs were leased, the first at leased_pos (their reservation holds to
 * the transaction's end); the slots and the part of the key's turn not
 * used are given back.  seen is where the key's ready jobs now begin as
 * the scan saw them (pos_none when it saw none), which becomes the key's
 * head unless the head was lowered meanwhile.  A key whose scan leased
 * nothing although its counts promise jobs (held by transactions that are
 * not dequeues, or counted before they are visible) is set aside until
 * the dequeue ends, so that the next pick tries another key.
 */
void
pgjq_keys_picked(PgjqKeyTicket *ticket, int32 leased, const PgjqKeyPos *leased_pos,
				 const PgjqKeyPos *seen)
{
	KeyEntry   *e = (KeyEntry *) ticket->entry;
	Reservation *r = (Reservation *) llast(reservations);
	int32		unused = ticket->n - leased;

	Assert(r->entry == e && r->lease);
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	if (ticket->head_generation == e->head_generation &&
		e->head_lowered <= ticket->snapshot_mark &&
		pos_cmp(seen, &e->head) > 0)
		e->head = *seen;
	if (leased > 0)
	{
		r->taken = true;
		r->taken_pos = *leased_pos;
		r->n = leased;
		e->reserved -= unused;
		e->queue->reserved -= unused;
		e->vtime = ticket->vtime + (uint64) leased * VTIME_UNIT / (uint64) Max(e->policy.weight, 1);
		place(e);
		if (unused > 0)
			note_slot_freed(e);
	}
	else
	{
		e->reserved -= ticket->n;
		e->queue->reserved -= ticket->n;
		e->vtime = ticket->vtime;
		reservations = list_delete_last(reservations);
		pfree(r);
		if (pos_cmp(seen, &ticket->head) != 0 && pos_cmp(seen, &pos_none) != 0)
			place(e);			/* its head moved: pick again, in order */
		else
		{
			/*
			 * Its counts promise a ready job its scan did not see from its
			 * head on.  Most often the job is being leased, or counted
			 * before it is visible; but should the head be wrong, starting
			 * over costs one scan of the key: it is a lower bound again.
			 */
			if (pos_cmp(seen, &pos_none) == 0)
			{
				e->head = pos_first;
				head_moved(e);
			}
			if (e->in_heap)
				heap_remove(e->queue, e);
			{
				MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

				set_aside = lappend(set_aside, e);
				e->set_aside++;
				MemoryContextSwitchTo(old);
			}
		}
	}
	LWLockRelease(key_lock);
	wake_noted();
}

/* charged: what a job of cost takes: a job dearer than a whole budget takes it all */
static double
charged(const KeyEntry *e, double cost)
{
	if (e->bucket.max_cost > 0)
		cost = Min(cost, e->bucket.max_cost);
	if (e->queue->bucket.max_cost > 0)
		cost = Min(cost, e->queue->bucket.max_cost);
	return cost;
}

/*
 * pgjq_keys_take takes the budget of one job of cost from the picked key's
 * and its queue's buckets, as the job is about to be leased; false when
 * either has too little, and then the key (or the queue) is throttled
 * until it will have enough, and the caller leases no more of the key (its
 * next job waits for its turn, so the key's order holds).  The budget is
 * given back if the dequeue rolls back.
 */
bool
pgjq_keys_take(PgjqKeyTicket *ticket, double cost)
{
	KeyEntry   *e = (KeyEntry *) ticket->entry;
	QueueEntry *q = e->queue;
	Reservation *r = (Reservation *) llast(reservations);
	TimestampTz now = GetCurrentTimestamp();
	bool		ok = false;

	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	bucket_refill(&e->bucket, now);
	bucket_refill(&q->bucket, now);
	if (!bucket_fits(&e->bucket, cost))
		throttle(e, bucket_ready_at(&e->bucket, cost), now);
	else if (!bucket_fits(&q->bucket, cost))
		throttle_queue(q, cost, now);
	else
	{
		cost = charged(e, cost);
		bucket_add(&e->bucket, -1, -cost);
		bucket_add(&q->bucket, -1, -cost);
		r->requests_taken += 1;
		r->cost_taken += cost;
		e->throttled_since = 0;
		q->throttled_since = 0;
		ok = true;
	}
	LWLockRelease(key_lock);
	return ok;
}

/* pgjq_keys_untake gives back what pgjq_keys_take took for a job not leased */
void
pgjq_keys_untake(PgjqKeyTicket *ticket, double cost)
{
	KeyEntry   *e = (KeyEntry *) ticket->entry;
	Reservation *r = (Reservation *) llast(reservations);

	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	cost = charged(e, cost);
	bucket_add(&e->bucket, 1, cost);
	bucket_add(&e->queue->bucket, 1, cost);
	r->requests_taken -= 1;
	r->cost_taken -= cost;
	LWLockRelease(key_lock);
}

/*
 * pgjq_keys_budget_wakes wakes the workers of this database's queues whose
 * budget is back (a throttled queue, or a throttled key first in its
 * queue's line), once per throttling, and returns when the next budget
 * comes back (0: none is awaited).  The background worker calls it every
 * pass and sleeps no longer than that: workers waiting for a budget are
 * woken when it returns, not by polling.
 */
TimestampTz
pgjq_keys_budget_wakes(void)
{
	HASH_SEQ_STATUS status;
	QueueEntry *q;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = 0;

	if (key_hash == NULL)
		return 0;
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, queue_hash);
	while ((q = hash_seq_search(&status)) != NULL)
	{
		TimestampTz at = 0;
		bool	   *woken = NULL;

		if (q->tag.dboid != MyDatabaseId)
			continue;
		if (q->throttled_since != 0 && !q->woken)
		{
			at = q->ready_at;
			woken = &q->woken;
		}
		else if (!pairingheap_is_empty(&q->throttled))
		{
			KeyEntry   *e = pairingheap_container(KeyEntry, tnode,
												  pairingheap_first(throttled_heap(q)));

			if (!e->woken && e->ready > 0)
			{
				at = e->ready_at;
				woken = &e->woken;
			}
		}
		if (woken == NULL)
			continue;
		if (at <= now)
		{
			*woken = true;
			if (nwakes < MAX_WAKES)
				wakes[nwakes++] = q->tag.queue_id;
		}
		else if (next == 0 || at < next)
			next = at;
	}
	LWLockRelease(key_lock);
	wake_noted();
	return next;
}

/* pgjq_keys_pick_done ends a dequeue: keys it set aside may be served again */
void
pgjq_keys_pick_done(void)
{
	if (set_aside == NIL)
		return;
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	restore_set_aside();
	LWLockRelease(key_lock);
}

/* ----------------------------------------------------------------------
 * The rebuild (counters.c), under the counter rebuild's table locks
 * ---------------------------------------------------------------------- */

/* pgjq_keys_forget_all forgets this database's keys and queues */
void
pgjq_keys_forget_all(void)
{
	HASH_SEQ_STATUS status;
	KeyEntry   *e;
	QueueEntry *q;

	if (key_hash == NULL)
		return;
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, key_hash);
	while ((e = hash_seq_search(&status)) != NULL)
		if (e->tag.dboid == MyDatabaseId)
			hash_search(key_hash, &e->tag, HASH_REMOVE, NULL);
	hash_seq_init(&status, queue_hash);
	while ((q = hash_seq_search(&status)) != NULL)
		if (q->tag.dboid == MyDatabaseId)
			hash_search(queue_hash, &q->tag, HASH_REMOVE, NULL);
	LWLockRelease(key_lock);
}

/*
 * The rebuild: pgjq_keys_install_begin forgets the database's keys (no
 * transaction holds a reservation: the rebuild's SHARE locks waited for
 * every writer), each pgjq_keys_install_count and _policy adds what the
 * tables say, and pgjq_keys_install_end places every key.  Keys with jobs
 * start with their head unknown, before every job.
 */
void
pgjq_keys_install_begin(void)
{
	pgjq_keys_forget_all();
}

void
pgjq_keys_install_count(int32 queue_id, const char *key, char state, int64 n)
{
	KeyTag		tag;
	KeyEntry   *e;

	if (key_hash == NULL)
		return;
	make_tag(&tag, queue_id, key);
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	e = key_entry(&tag, true);
	if (e != NULL)
	{
		switch (state)
		{
			case PGJQ_STATE_READY:
				e->ready += n;
				e->head = pos_first;
				break;
			case PGJQ_STATE_SCHEDULED:
				e->scheduled += n;
				break;
			case PGJQ_STATE_LEASED:
				e->leased += n;
				e->delivered += n;
				e->queue->leased += n;
				break;
			case PGJQ_STATE_SUCCEEDED:
				e->succeeded += n;
				e->delivered += n;
				break;
		}
		if (key != NULL && (state == PGJQ_STATE_READY || state == PGJQ_STATE_SCHEDULED ||
							state == PGJQ_STATE_LEASED))
			e->queue->keyed_jobs += n;
	}
	LWLockRelease(key_lock);
}

void
pgjq_keys_install_policy(int32 queue_id, const char *key, int64 version,
						 const PgjqKeyPolicy *policy)
{
	PolicyChange p;
	bool		full = false;

	if (key_hash == NULL)
		return;
	memset(&p, 0, sizeof(p));
	make_tag(&p.tag, queue_id, key);
	p.version = version;
	p.has_policy = true;
	p.policy = *policy;
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	apply_policy(&p, &full);
	LWLockRelease(key_lock);
}

void
pgjq_keys_install_end(void)
{
	HASH_SEQ_STATUS status;
	KeyEntry   *e;

	if (key_hash == NULL)
		return;
	LWLockAcquire(key_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, key_hash);
	while ((e = hash_seq_search(&status)) != NULL)
		if (e->tag.dboid == MyDatabaseId)
			place(e);
	LWLockRelease(key_lock);
}

/* ----------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------- */

/*
 * jq.install_key_policy(queue_id, key, version, weight, max_in_flight,
 * max_queued, ordered) installs a key's policy in shared memory when the calling
 * transaction commits; with weight NULL, removes it.  jq_set_key_policy
 * and jq_reset_key_policy call it after writing jq.key_policy.  The key's
 * entry is made now, so that a full table fails the call, not the commit.
 */
Datum
pgjq_install_key_policy(PG_FUNCTION_ARGS)
{
	PolicyChange *p;
	MemoryContext old;
	char	   *key;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		elog(ERROR, "pgjq: install_key_policy needs a queue, a key and a version");
	if (key_hash == NULL)
		PG_RETURN_VOID();		/* nothing to install into */
	key = text_to_cstring(PG_GETARG_TEXT_PP(1));

	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc0(sizeof(PolicyChange));
	make_tag(&p->tag, PG_GETARG_INT32(0), key);
	p->subid = GetCurrentSubTransactionId();
	p->version = PG_GETARG_INT64(2);
	p->has_policy = !PG_ARGISNULL(3);
	p->policy.weight = PG_ARGISNULL(3) ? 1 : PG_GETARG_INT32(3);
	p->policy.max_in_flight = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
	p->policy.max_queued = PG_ARGISNULL(5) ? 0 : PG_GETARG_INT64(5);
	p->policy.ordered_set = !PG_ARGISNULL(6);
	p->policy.ordered = !PG_ARGISNULL(6) && PG_GETARG_BOOL(6);
	p->policy.rate_requests = PG_NARGS() > 7 && !PG_ARGISNULL(7) ? PG_GETARG_INT32(7) : 0;
	p->policy.rate_cost = PG_NARGS() > 8 && !PG_ARGISNULL(8) ?
		pgjq_cost_double(PG_GETARG_DATUM(8)) : 0;
	p->policy.rate_period = PG_NARGS() > 9 && !PG_ARGISNULL(9) ?
		pgjq_interval_usecs(PG_GETARG_INTERVAL_P(9)) : USECS_PER_MINUTE;
	policy_changes = lappend(policy_changes, p);
	MemoryContextSwitchTo(old);

	if (p->has_policy)
	{
		KeyEntry   *e;

		LWLockAcquire(key_lock, LW_EXCLUSIVE);
		e = key_entry(&p->tag, true);
		LWLockRelease(key_lock);
		if (e == NULL)
			no_room(key);
	}
	pgjq_counters_register_callbacks();
	PG_RETURN_VOID();
}

/*
 * jq.check_job_key(key) applies pgjq_keys_check_key for the policy
 * functions, which also refuse a NULL key: the jobs without one follow
 * their queue's settings.
 */
Datum
pgjq_check_job_key(PG_FUNCTION_ARGS)
{
	text	   *key;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("key must not be null"),
				 errhint("Jobs without a key follow the queue's defaults: set them with jq.jq_alter_queue(key_max_in_flight => ..., key_max_queued => ...).")));
	key = PG_GETARG_TEXT_PP(0);
	pgjq_keys_check_key(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	PG_RETURN_VOID();
}

/*
 * jq.forget_keys(queue_id) forgets a dropped queue's keys when the calling
 * transaction commits (jq_drop_queue).
 */
Datum
pgjq_forget_keys(PG_FUNCTION_ARGS)
{
	PolicyChange *p;
	MemoryContext old;

	if (key_hash == NULL || PG_ARGISNULL(0))
		PG_RETURN_VOID();
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc0(sizeof(PolicyChange));
	make_tag(&p->tag, PG_GETARG_INT32(0), NULL);
	p->subid = GetCurrentSubTransactionId();
	p->forget_queue = true;
	policy_changes = lappend(policy_changes, p);
	MemoryContextSwitchTo(old);
	pgjq_counters_register_callbacks();
	PG_RETURN_VOID();
}

/*
 * jq.key_counters() returns this database's keys as shared memory has
 * them: one row per key with jobs, reservations or a policy.  O(keys): no
 * table is read.  jq.key_stats adds names and the policies in force.
 */
/*
 * key_counters_on_standby puts into the function's result what a hot
 * standby can know of the keys: the jobs of each key in each state,
 * counted from jq.job (exact for the calling statement's snapshot; the
 * keys in shared memory are the primary's), nothing reserved, and no
 * totals, weight, budget or schedule (NULL).  As counters.c does for the
 * queues.
 */
static void
key_counters_on_standby(ReturnSetInfo *rsinfo)
{
	SPI_connect();
	if (SPI_execute("SELECT queue_id, key,"
					"       pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) " PGJQ_SQL_STATE(READY) "),"
					"       pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) " PGJQ_SQL_STATE(SCHEDULED) "),"
					"       pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) " PGJQ_SQL_STATE(LEASED) ")"
					"  FROM jq.job GROUP BY queue_id, key", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgjq: could not count the jobs of the keys on the standby");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		values[14];
		bool		nulls[14];

		for (int c = 0; c < 14; c++)
			nulls[c] = true;
		for (int c = 0; c < 5; c++)
			values[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1,
									  &nulls[c]);
		values[5] = values[6] = Int64GetDatum(0);	/* nothing reserved here */
		nulls[5] = nulls[6] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
}

Datum
pgjq_key_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	KeyEntry   *e;

	pgjq_init_materialized_srf(fcinfo);
	if (RecoveryInProgress())
	{
		key_counters_on_standby(rsinfo);
		return (Datum) 0;
	}
	if (key_hash == NULL)
		return (Datum) 0;

	LWLockAcquire(key_lock, LW_SHARED);
	hash_seq_init(&status, key_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		Datum		values[14];
		bool		nulls[14] = {false};
		double		requests;
		double		cost;

		if (e->tag.dboid != MyDatabaseId)
			continue;
		values[0] = Int32GetDatum(e->tag.queue_id);
		nulls[1] = e->tag.isnull;
		if (!e->tag.isnull)
			values[1] = CStringGetTextDatum(e->tag.key);
		values[2] = Int64GetDatum(e->ready);
		values[3] = Int64GetDatum(e->scheduled);
		values[4] = Int64GetDatum(e->leased);
		values[5] = Int64GetDatum(e->reserved);
		values[6] = Int64GetDatum(e->queued_reserved);
		values[7] = Int64GetDatum(e->delivered);
		values[8] = Int64GetDatum(e->succeeded);
		values[9] = Int32GetDatum(e->policy.weight);
		values[10] = BoolGetDatum(e->in_heap);
		bucket_tokens(&e->bucket, GetCurrentTimestamp(), &requests, &cost);
		values[11] = Float8GetDatum(requests);
		nulls[11] = e->bucket.max_requests <= 0;
		values[12] = Float8GetDatum(cost);
		nulls[12] = e->bucket.max_cost <= 0;
		values[13] = TimestampTzGetDatum(e->throttled_since);
		nulls[13] = !e->in_throttled || e->throttled_since == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(key_lock);
	return (Datum) 0;
}
