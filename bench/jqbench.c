/*
 * jqbench: producers and workers against pgjq or a plain-SQL "floor" queue.
 *
 * N producer threads and M worker threads, each with its own connection
 * (plus optional idle LISTEN sessions).  Producers enqueue single jobs or
 * batches, optionally at a fixed rate, and record the enqueue commit time
 * of every job id.  Workers run the real worker loop: dequeue up to K jobs;
 * if none, wait for a notification (select() on the socket, with a fallback
 * poll); simulate the work; ack each job or the whole batch; they record
 * pickup and ack times.  A run may have several rounds: each round prefills
 * the queue (untimed) and then runs the threads.
 *
 * At the end one line "RESULT key=value ..." reports jobs, elapsed time,
 * throughput, WAL bytes per job (the whole cluster's WAL during the timed
 * phases, prefills excluded) and latency percentiles (enqueue commit -> pickup, enqueue
 * commit -> ack), for all jobs and for urgent ones (priority > 0).  Jobs
 * that were prefilled have no enqueue time and count only in throughput.
 *
 * Times are CLOCK_REALTIME microseconds of this machine; the server runs on
 * the same machine.
 */
#define _POSIX_C_SOURCE 200809L

#include "jqclient.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define URGENT_PRIORITY 10
#define MAX_K 10000

typedef struct
{
	const char *conninfo;
	jqc_backend backend;
	const char *queue;
	const char *label;
	int			producers;
	long		jobs;
	int			batch;
	double		rate;
	double		duration;
	double		urgent_frac;
	double		urgent_rate;
	int			payload_bytes;
	int			workers;
	int			dequeue_k;
	int			work_us;
	int			ack_batch;
	int			poll_ms;
	int			wait_ms;		/* > 0: long-poll dequeues instead of LISTEN */
	int			wait_procedure; /* ... through CALL jq_wait_dequeue */
	int			floor_poll_ms;
	int			floor_notify;
	int			listeners;
	int			idle_waiters;	/* the listeners long-poll an idle queue instead */
	long		prefill;
	int			rounds;
	long		max_jobs;
	int			drain_existing;
	int			checkpoint;
	int			refill;
} options;

static options opt = {
	.conninfo = "",
	.backend = JQC_PGJQ,
	.queue = "bench",
	.label = "run",
	.batch = 1,
	.payload_bytes = 100,
	.dequeue_k = 1,
	.poll_ms = 100,
	.floor_poll_ms = 10,
	.rounds = 1,
};

/* per-round shared state */
static volatile long processed;		/* jobs acked this round */
static volatile long produced;		/* jobs enqueued this round */
static volatile int producers_done;
static volatile int stop_listeners;
static int64_t round_start;
static pthread_barrier_t barrier;

typedef struct
{
	int64_t		id;
	int64_t		t;
	int			prio;
} enq_rec;

typedef struct
{
	int64_t		id;
	int64_t		t_pick;
	int64_t		t_ack;
} work_rec;

typedef struct
{
	int			idx;
	int			urgent;			/* the urgent trickle producer */
	int			refill;			/* the producer that holds the depth */
	jqc_client	c;
	enq_rec    *recs;
	size_t		nrecs,
				caprecs;
	work_rec   *wrecs;
	size_t		nwrecs,
				capwrecs;
	int64_t		last_event;
	long		empty_deq;
	long		ack_false;
	long		notifies;
	long		dequeues;
	unsigned int seed;
	char	   *arraybuf;
	size_t		arraycap;
} thread_state;

static long
atomic_add(volatile long *p, long v)
{
	return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
}

static long
atomic_get(volatile long *p)
{
	return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p && n)
	{
		perror("jqbench: realloc");
		exit(1);
	}
	return p;
}

static void
add_enq(thread_state *ts, int64_t id, int64_t t, int prio)
{
	if (ts->nrecs == ts->caprecs)
	{
		ts->caprecs = ts->caprecs ? ts->caprecs * 2 : 4096;
		ts->recs = xrealloc(ts->recs, ts->caprecs * sizeof(enq_rec));
	}
	ts->recs[ts->nrecs].id = id;
	ts->recs[ts->nrecs].t = t;
	ts->recs[ts->nrecs].prio = prio;
	ts->nrecs++;
}

static void
add_work(thread_state *ts, int64_t id, int64_t tp, int64_t ta)
{
	if (ts->nwrecs == ts->capwrecs)
	{
		ts->capwrecs = ts->capwrecs ? ts->capwrecs * 2 : 4096;
		ts->wrecs = xrealloc(ts->wrecs, ts->capwrecs * sizeof(work_rec));
	}
	ts->wrecs[ts->nwrecs].id = id;
	ts->wrecs[ts->nwrecs].t_pick = tp;
	ts->wrecs[ts->nwrecs].t_ack = ta;
	ts->nwrecs++;
}

static char *pad;

static void
make_payload(char *buf, size_t size, long n)
{
	snprintf(buf, size, "{\"n\": %ld, \"pad\": \"%s\"}", n, pad);
}

/* ---------------------------------------------------------------- producers */

static long
producer_quota(int idx)
{
	long		total = opt.jobs;

	if (opt.rate > 0 && opt.duration > 0)
		total = (long) (opt.rate * opt.duration);
	return total / opt.producers + (idx < total % opt.producers ? 1 : 0);
}

static void *
producer_main(void *arg)
{
	thread_state *ts = arg;
	int			b = ts->urgent ? 1 : opt.batch;
	long		quota = ts->urgent ? -1 : producer_quota(ts->idx);
	double		rate = ts->urgent ? opt.urgent_rate :
		(opt.rate > 0 ? opt.rate / opt.producers : 0);
	int64_t		interval = rate > 0 ? (int64_t) (1e6 * b / rate) : 0;
	int64_t		offset = interval > 0 && opt.producers > 0 && !ts->urgent ?
		interval * ts->idx / opt.producers : 0;
	size_t		psize = (size_t) opt.payload_bytes + 64;
	char	  **payloads = xrealloc(NULL, (size_t) b * sizeof(char *));
	int64_t    *ids = xrealloc(NULL, (size_t) b * sizeof(int64_t));
	long		done = 0;
	long		i = 0;

	for (int j = 0; j < b; j++)
		payloads[j] = xrealloc(NULL, psize);

	pthread_barrier_wait(&barrier);
	for (;;)
	{
		int			n,
					prio;
		int64_t		t;

		if (quota >= 0 && done >= quota)
			break;
		if (ts->urgent && atomic_get(&processed) >= opt.prefill)
			break;				/* the backlog is drained */
		if (interval > 0)
		{
			int64_t		target = round_start + offset + i * interval;
			int64_t		now = jqc_now_us();

			if (target > now)
				jqc_sleep_us(target - now);
		}
		i++;
		n = b;
		if (quota >= 0 && quota - done < n)
			n = (int) (quota - done);
		prio = ts->urgent ? URGENT_PRIORITY :
			(opt.urgent_frac > 0 &&
			 (double) rand_r(&ts->seed) / RAND_MAX < opt.urgent_frac) ? URGENT_PRIORITY : 0;
		for (int j = 0; j < n; j++)
			make_payload(payloads[j], psize, done + j);
		if (n == 1 && opt.batch == 1)
		{
			ids[0] = jqc_enqueue(&ts->c, payloads[0], prio);
			t = jqc_now_us();
		}
		else
		{
			int			got = jqc_enqueue_batch(&ts->c, (const char *const *) payloads, n,
												prio, ids, &ts->arraybuf, &ts->arraycap);

			t = jqc_now_us();
			if (got != n)
			{
				fprintf(stderr, "jqbench: batch returned %d ids for %d jobs\n", got, n);
				exit(1);
			}
		}
		for (int j = 0; j < n; j++)
			add_enq(ts, ids[j], t, prio);
		ts->last_event = t;
		done += n;
		atomic_add(&produced, n);
	}
	for (int j = 0; j < b; j++)
		free(payloads[j]);
	free(payloads);
	free(ids);
	return NULL;
}

/*
 * The refill producer holds the queue's depth at about the prefill: a batch
 * of REFILL_BATCH jobs whenever the workers have taken as many as it has
 * put back, until the workers are done (--max-jobs).
 */
#define REFILL_BATCH 100

static void *
refill_main(void *arg)
{
	thread_state *ts = arg;
	size_t		psize = (size_t) opt.payload_bytes + 64;
	char	   *payloads[REFILL_BATCH];
	int64_t		ids[REFILL_BATCH];
	long		done = 0;

	for (int j = 0; j < REFILL_BATCH; j++)
		payloads[j] = xrealloc(NULL, psize);
	pthread_barrier_wait(&barrier);
	while (atomic_get(&processed) < opt.max_jobs)
	{
		int64_t		t;

		if (done > atomic_get(&processed))
		{
			jqc_sleep_us(500);
			continue;
		}
		for (int j = 0; j < REFILL_BATCH; j++)
			make_payload(payloads[j], psize, done + j);
		if (jqc_enqueue_batch(&ts->c, (const char *const *) payloads, REFILL_BATCH, 0,
							  ids, &ts->arraybuf, &ts->arraycap) != REFILL_BATCH)
		{
			fprintf(stderr, "jqbench: refill batch came back short\n");
			exit(1);
		}
		t = jqc_now_us();
		for (int j = 0; j < REFILL_BATCH; j++)
			add_enq(ts, ids[j], t, 0);
		done += REFILL_BATCH;
		atomic_add(&produced, REFILL_BATCH);
	}
	for (int j = 0; j < REFILL_BATCH; j++)
		free(payloads[j]);
	return NULL;
}

/* ------------------------------------------------------------------ workers */

static int
workers_finished(void)
{
	long		p = atomic_get(&processed);

	if (opt.max_jobs > 0 && p >= opt.max_jobs)
		return 1;
	/* --drain-existing: until the first empty dequeue (see worker_main) */
	if (!opt.drain_existing && __atomic_load_n(&producers_done, __ATOMIC_SEQ_CST) &&
		p >= opt.prefill + atomic_get(&produced))
		return 1;
	return 0;
}

static void *
worker_main(void *arg)
{
	thread_state *ts = arg;
	jqc_job    *jobs = xrealloc(NULL, (size_t) opt.dequeue_k * sizeof(jqc_job));
	int64_t    *picks = xrealloc(NULL, (size_t) opt.dequeue_k * sizeof(int64_t));
	int			use_listen = opt.backend == JQC_PGJQ || opt.floor_notify;

	pthread_barrier_wait(&barrier);
	while (!workers_finished())
	{
		int			n = opt.wait_ms > 0 ?
			jqc_dequeue_wait(&ts->c, opt.dequeue_k, opt.wait_ms, opt.wait_procedure, jobs) :
			jqc_dequeue(&ts->c, opt.dequeue_k, jobs);
		int64_t		t_pick = jqc_now_us();

		ts->dequeues++;
		if (n == 0)
		{
			ts->empty_deq++;
			if (opt.drain_existing && __atomic_load_n(&producers_done, __ATOMIC_SEQ_CST))
				break;
			if (opt.wait_ms > 0)
				continue;		/* the wait was the dequeue's */
			if (use_listen)
				ts->notifies += jqc_wait_notify(&ts->c, opt.poll_ms);
			else
				jqc_sleep_us((int64_t) opt.floor_poll_ms * 1000);
			continue;
		}
		if (opt.ack_batch)
		{
			int			acked;
			int64_t		t_ack;

			if (opt.work_us > 0)
				jqc_sleep_us((int64_t) opt.work_us * n);
			acked = jqc_ack_batch(&ts->c, jobs, n);
			t_ack = jqc_now_us();
			ts->ack_false += n - acked;
			for (int j = 0; j < n; j++)
				add_work(ts, jobs[j].id, t_pick, t_ack);
			ts->last_event = t_ack;
		}
		else
		{
			for (int j = 0; j < n; j++)
				picks[j] = t_pick;
			for (int j = 0; j < n; j++)
			{
				int64_t		t_ack;

				if (opt.work_us > 0)
					jqc_sleep_us(opt.work_us);
				if (!jqc_ack(&ts->c, &jobs[j]))
					ts->ack_false++;
				t_ack = jqc_now_us();
				add_work(ts, jobs[j].id, picks[j], t_ack);
				ts->last_event = t_ack;
			}
		}
		atomic_add(&processed, n);
	}
	free(jobs);
	free(picks);
	return NULL;
}

/* ---------------------------------------------------------------- listeners */

static void *
listener_main(void *arg)
{
	thread_state *ts = arg;

	jqc_job		job;

	pthread_barrier_wait(&barrier);
	while (!__atomic_load_n(&stop_listeners, __ATOMIC_SEQ_CST))
	{
		if (opt.idle_waiters)
			(void) jqc_dequeue_wait(&ts->c, 1, 1000, 0, &job);	/* never gets one */
		else
			ts->notifies += jqc_wait_notify(&ts->c, 100);
	}
	return NULL;
}

/* ------------------------------------------------------------------ prefill */

static void
prefill(jqc_client *c, long n)
{
	int			chunk = 10000;
	size_t		psize = (size_t) opt.payload_bytes + 64;
	char	  **payloads = xrealloc(NULL, (size_t) chunk * sizeof(char *));
	int64_t    *ids = xrealloc(NULL, (size_t) chunk * sizeof(int64_t));
	char	   *arraybuf = NULL;
	size_t		arraycap = 0;

	for (int j = 0; j < chunk; j++)
		payloads[j] = xrealloc(NULL, psize);
	for (long done = 0; done < n;)
	{
		int			k = n - done < chunk ? (int) (n - done) : chunk;

		for (int j = 0; j < k; j++)
			make_payload(payloads[j], psize, done + j);
		if (jqc_enqueue_batch(c, (const char *const *) payloads, k, 0, ids,
							  &arraybuf, &arraycap) != k)
		{
			fprintf(stderr, "jqbench: prefill batch came back short\n");
			exit(1);
		}
		done += k;
	}
	for (int j = 0; j < chunk; j++)
		free(payloads[j]);
	free(payloads);
	free(ids);
	free(arraybuf);
}

/* bytes of WAL written so far in the cluster (its current insert position) */
static double
wal_position(jqc_client *c)
{
	PGresult   *res = PQexec(c->conn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn");
	double		v;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		fprintf(stderr, "jqbench: pg_current_wal_lsn: %s", PQresultErrorMessage(res));
		exit(1);
	}
	v = atof(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

/* ------------------------------------------------------------------ results */

static int
cmp_i64(const void *a, const void *b)
{
	int64_t		x = *(const int64_t *) a,
				y = *(const int64_t *) b;

	return x < y ? -1 : x > y;
}

static int
cmp_enq(const void *a, const void *b)
{
	return cmp_i64(&((const enq_rec *) a)->id, &((const enq_rec *) b)->id);
}

static int
cmp_work(const void *a, const void *b)
{
	return cmp_i64(&((const work_rec *) a)->id, &((const work_rec *) b)->id);
}

static double
pct_ms(int64_t *v, size_t n, double q)
{
	size_t		i;

	if (n == 0)
		return -1;
	i = (size_t) ceil(q * (double) n);
	if (i < 1)
		i = 1;
	if (i > n)
		i = n;
	return v[i - 1] / 1000.0;
}

static void
print_pcts(const char *name, int64_t *v, size_t n)
{
	qsort(v, n, sizeof(int64_t), cmp_i64);
	printf(" %s_n=%zu %s_p50_ms=%.3f %s_p90_ms=%.3f %s_p99_ms=%.3f %s_max_ms=%.3f",
		   name, n, name, pct_ms(v, n, 0.50), name, pct_ms(v, n, 0.90),
		   name, pct_ms(v, n, 0.99), name, pct_ms(v, n, 1.0));
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: jqbench [options]\n"
			"  --conninfo S        libpq connection string\n"
			"  --backend pgjq|floor\n"
			"  --queue NAME        pgjq queue (default bench)\n"
			"  --label S           echoed in the RESULT line\n"
			"  --producers N       producer threads\n"
			"  --jobs N            jobs the producers enqueue in all\n"
			"  --batch B           jobs per enqueue call (1: jq_enqueue)\n"
			"  --rate R            jobs/s over all producers (0: as fast as possible)\n"
			"  --duration S        with --rate: enqueue rate*S jobs\n"
			"  --urgent-frac F     share of producer jobs with priority %d\n"
			"  --urgent-rate R     an extra producer: priority %d jobs at R/s until\n"
			"                      the prefilled backlog is processed\n"
			"  --payload-bytes S   padding in each payload\n"
			"  --workers M         worker threads\n"
			"  --dequeue K         jobs per dequeue\n"
			"  --work-us U         simulated work per job\n"
			"  --ack-batch         one batch ack per dequeue (else one ack per job)\n"
			"  --poll-ms T         LISTEN workers: fallback poll (default 100)\n"
			"  --wait-ms T         pgjq workers: long-poll dequeues waiting up to T ms\n"
			"                      (jq_dequeue's wait), not LISTEN\n"
			"  --wait-procedure    ... through CALL jq.jq_wait_dequeue\n"
			"  --floor-poll-ms T   floor workers without NOTIFY: poll (default 10)\n"
			"  --floor-notify      floor: NOTIFY in the enqueue; workers LISTEN\n"
			"  --listeners L       idle LISTEN sessions\n"
			"  --idle-waiters      the idle sessions long-poll queue <queue>_idle instead\n"
			"                      (jq_dequeue's wait), where no job ever comes\n"
			"  --prefill N         jobs enqueued (untimed) before each round\n"
			"  --rounds R          rounds (default 1)\n"
			"  --max-jobs N        workers stop after N jobs a round\n"
			"  --drain-existing    workers stop at the first empty dequeue\n"
			"  --checkpoint        CHECKPOINT after each prefill\n"
			"  --refill            with --max-jobs: an extra producer holds the depth\n"
			"                      at about --prefill (batches of %d)\n",
			URGENT_PRIORITY, URGENT_PRIORITY, REFILL_BATCH);
	exit(2);
}

int
main(int argc, char **argv)
{
	static struct option longopts[] = {
		{"conninfo", required_argument, NULL, 'c'},
		{"backend", required_argument, NULL, 'b'},
		{"queue", required_argument, NULL, 'q'},
		{"label", required_argument, NULL, 'L'},
		{"producers", required_argument, NULL, 'p'},
		{"jobs", required_argument, NULL, 'n'},
		{"batch", required_argument, NULL, 'B'},
		{"rate", required_argument, NULL, 'r'},
		{"duration", required_argument, NULL, 'd'},
		{"urgent-frac", required_argument, NULL, 'u'},
		{"urgent-rate", required_argument, NULL, 'U'},
		{"payload-bytes", required_argument, NULL, 's'},
		{"workers", required_argument, NULL, 'w'},
		{"dequeue", required_argument, NULL, 'k'},
		{"work-us", required_argument, NULL, 'W'},
		{"ack-batch", no_argument, NULL, 'A'},
		{"poll-ms", required_argument, NULL, 'P'},
		{"wait-ms", required_argument, NULL, 'T'},
		{"wait-procedure", no_argument, NULL, 'Q'},
		{"floor-poll-ms", required_argument, NULL, 'F'},
		{"floor-notify", no_argument, NULL, 'N'},
		{"listeners", required_argument, NULL, 'l'},
		{"idle-waiters", no_argument, NULL, 'i'},
		{"prefill", required_argument, NULL, 'f'},
		{"rounds", required_argument, NULL, 'R'},
		{"max-jobs", required_argument, NULL, 'm'},
		{"drain-existing", no_argument, NULL, 'D'},
		{"checkpoint", no_argument, NULL, 'C'},
		{"refill", no_argument, NULL, 'I'},
		{NULL, 0, NULL, 0}
	};
	int			ch;
	int			nthreads;
	thread_state *ts;
	pthread_t  *th;
	jqc_client	admin;
	double		elapsed = 0;
	double		wal_bytes = 0;
	long		total_processed = 0,
				total_produced = 0,
				empty = 0,
				ackf = 0,
				notif = 0,
				deqs = 0,
				listener_notifies = 0;
	int			n_extra;
	char		idle_queue[64];
	char		sql[256];

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (ch)
		{
			case 'c': opt.conninfo = optarg; break;
			case 'b':
				if (strcmp(optarg, "pgjq") == 0)
					opt.backend = JQC_PGJQ;
				else if (strcmp(optarg, "floor") == 0)
					opt.backend = JQC_FLOOR;
				else
					usage();
				break;
			case 'q': opt.queue = optarg; break;
			case 'L': opt.label = optarg; break;
			case 'p': opt.producers = atoi(optarg); break;
			case 'n': opt.jobs = atol(optarg); break;
			case 'B': opt.batch = atoi(optarg); break;
			case 'r': opt.rate = atof(optarg); break;
			case 'd': opt.duration = atof(optarg); break;
			case 'u': opt.urgent_frac = atof(optarg); break;
			case 'U': opt.urgent_rate = atof(optarg); break;
			case 's': opt.payload_bytes = atoi(optarg); break;
			case 'w': opt.workers = atoi(optarg); break;
			case 'k': opt.dequeue_k = atoi(optarg); break;
			case 'W': opt.work_us = atoi(optarg); break;
			case 'A': opt.ack_batch = 1; break;
			case 'P': opt.poll_ms = atoi(optarg); break;
			case 'T': opt.wait_ms = atoi(optarg); break;
			case 'Q': opt.wait_procedure = 1; break;
			case 'F': opt.floor_poll_ms = atoi(optarg); break;
			case 'N': opt.floor_notify = 1; break;
			case 'l': opt.listeners = atoi(optarg); break;
			case 'i': opt.idle_waiters = 1; break;
			case 'f': opt.prefill = atol(optarg); break;
			case 'R': opt.rounds = atoi(optarg); break;
			case 'm': opt.max_jobs = atol(optarg); break;
			case 'D': opt.drain_existing = 1; break;
			case 'C': opt.checkpoint = 1; break;
			case 'I': opt.refill = 1; break;
			default: usage();
		}
	}
	if (opt.batch < 1 || opt.batch > MAX_K || opt.dequeue_k < 1 || opt.dequeue_k > MAX_K ||
		opt.producers < 0 || opt.workers < 0 || opt.listeners < 0 || opt.rounds < 1 ||
		opt.payload_bytes < 0 || (opt.refill && (opt.max_jobs <= 0 || opt.workers <= 0)) ||
		(opt.producers > 0 && opt.jobs <= 0 &&
								  !(opt.rate > 0 && opt.duration > 0)))
		usage();
	/* the extra producers (urgent trickle, refill) come after the others */
	n_extra = (opt.urgent_rate > 0 && opt.workers > 0) + opt.refill;

	pad = xrealloc(NULL, (size_t) opt.payload_bytes + 1);
	memset(pad, 'x', (size_t) opt.payload_bytes);
	pad[opt.payload_bytes] = '\0';

	nthreads = opt.producers + n_extra + opt.workers + opt.listeners;
	ts = calloc((size_t) nthreads + 1, sizeof(thread_state));
	th = calloc((size_t) nthreads + 1, sizeof(pthread_t));
	if (!ts || !th)
	{
		perror("jqbench: calloc");
		return 1;
	}
	jqc_connect(&admin, opt.conninfo, opt.backend, opt.queue, 0);
	if (opt.idle_waiters && opt.listeners > 0)
	{
		if (opt.backend != JQC_PGJQ || strlen(opt.queue) > 40)
			usage();
		snprintf(idle_queue, sizeof(idle_queue), "%s_idle", opt.queue);
		snprintf(sql, sizeof(sql),
				 "SET client_min_messages = warning; "
				 "SELECT 1 FROM jq.jq_create_queue('%s', if_not_exists => true)", idle_queue);
		jqc_exec(&admin, sql);
	}
	for (int i = 0; i < nthreads; i++)
	{
		int			is_producer = i < opt.producers + n_extra;
		int			is_listener = i >= opt.producers + n_extra + opt.workers;

		ts[i].idx = i;
		ts[i].urgent = opt.urgent_rate > 0 && opt.workers > 0 && i == opt.producers;
		ts[i].refill = opt.refill && i == opt.producers + n_extra - 1;
		ts[i].seed = 12345u + (unsigned) i;
		jqc_connect(&ts[i].c, opt.conninfo, opt.backend,
					is_listener && opt.idle_waiters ? idle_queue : opt.queue,
					opt.floor_notify && is_producer);
		if (is_listener && opt.idle_waiters)
			continue;			/* they wait in the dequeue */
		if (i >= opt.producers + n_extra && !(opt.wait_ms > 0 && opt.backend == JQC_PGJQ &&
											  !is_listener) &&
			(opt.backend == JQC_PGJQ || opt.floor_notify || is_listener))
			jqc_listen(&ts[i].c);
	}

	for (int r = 0; r < opt.rounds; r++)
	{
		int64_t		end = 0;
		double		wal_start;

		if (opt.prefill > 0)
		{
			prefill(&admin, opt.prefill);
			if (opt.checkpoint)
				jqc_exec(&admin, "CHECKPOINT");
		}
		wal_start = wal_position(&admin);
		processed = 0;
		produced = 0;
		producers_done = 0;
		stop_listeners = 0;
		pthread_barrier_init(&barrier, NULL, (unsigned) nthreads + 1);
		for (int i = 0; i < nthreads; i++)
		{
			void	   *(*fn) (void *);

			ts[i].last_event = 0;
			if (ts[i].refill)
				fn = refill_main;
			else if (i < opt.producers + n_extra)
				fn = producer_main;
			else if (i < opt.producers + n_extra + opt.workers)
				fn = worker_main;
			else
				fn = listener_main;
			if (pthread_create(&th[i], NULL, fn, &ts[i]) != 0)
			{
				perror("jqbench: pthread_create");
				return 1;
			}
		}
		/* set before the barrier, which publishes it to the threads */
		round_start = jqc_now_us();
		pthread_barrier_wait(&barrier);
		for (int i = 0; i < opt.producers + n_extra; i++)
			pthread_join(th[i], NULL);
		__atomic_store_n(&producers_done, 1, __ATOMIC_SEQ_CST);
		for (int i = opt.producers + n_extra; i < opt.producers + n_extra + opt.workers; i++)
			pthread_join(th[i], NULL);
		__atomic_store_n(&stop_listeners, 1, __ATOMIC_SEQ_CST);
		for (int i = opt.producers + n_extra + opt.workers; i < nthreads; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&barrier);
		wal_bytes += wal_position(&admin) - wal_start;
		for (int i = 0; i < nthreads; i++)
			if (ts[i].last_event > end)
				end = ts[i].last_event;
		if (end > round_start)
			elapsed += (end - round_start) / 1e6;
		total_processed += processed;
		total_produced += produced;
	}

	/* latencies: join enqueue and work records on job id */
	{
		size_t		ne = 0,
					nw = 0,
					np = 0,
					nu = 0;
		enq_rec    *e;
		work_rec   *w;
		int64_t    *pick,
				   *ack,
				   *upick,
				   *uack;
		long		early = 0;

		for (int i = 0; i < nthreads; i++)
		{
			ne += ts[i].nrecs;
			nw += ts[i].nwrecs;
			empty += ts[i].empty_deq;
			ackf += ts[i].ack_false;
			deqs += ts[i].dequeues;
			if (i >= opt.producers + n_extra + opt.workers)
				listener_notifies += ts[i].notifies;
			else
				notif += ts[i].notifies;
		}
		e = xrealloc(NULL, (ne + 1) * sizeof(enq_rec));
		w = xrealloc(NULL, (nw + 1) * sizeof(work_rec));
		ne = nw = 0;
		for (int i = 0; i < nthreads; i++)
		{
			if (ts[i].nrecs)
				memcpy(e + ne, ts[i].recs, ts[i].nrecs * sizeof(enq_rec));
			ne += ts[i].nrecs;
			if (ts[i].nwrecs)
				memcpy(w + nw, ts[i].wrecs, ts[i].nwrecs * sizeof(work_rec));
			nw += ts[i].nwrecs;
		}
		qsort(e, ne, sizeof(enq_rec), cmp_enq);
		qsort(w, nw, sizeof(work_rec), cmp_work);
		pick = xrealloc(NULL, (nw + 1) * sizeof(int64_t));
		ack = xrealloc(NULL, (nw + 1) * sizeof(int64_t));
		upick = xrealloc(NULL, (nw + 1) * sizeof(int64_t));
		uack = xrealloc(NULL, (nw + 1) * sizeof(int64_t));
		for (size_t i = 0, j = 0; i < nw && j < ne;)
		{
			if (w[i].id < e[j].id)
				i++;
			else if (w[i].id > e[j].id)
				j++;
			else
			{
				int64_t		lp = w[i].t_pick - e[j].t;
				int64_t		la = w[i].t_ack - e[j].t;

				/*
				 * A poller can lease a job before its producer has seen
				 * the commit return: count it as zero.
				 */
				if (lp < 0)
				{
					early++;
					lp = 0;
				}
				if (la < 0)
					la = 0;
				pick[np] = lp;
				ack[np] = la;
				np++;
				if (e[j].prio > 0)
				{
					upick[nu] = lp;
					uack[nu] = la;
					nu++;
				}
				i++;
				j++;
			}
		}

		{
			long		jobs = opt.workers > 0 ? total_processed : total_produced;

			printf("RESULT label=%s backend=%s jobs=%ld enqueued=%ld processed=%ld "
				   "elapsed_s=%.3f rate=%.1f wal_per_job=%.0f",
				   opt.label, opt.backend == JQC_PGJQ ? "pgjq" : "floor",
				   jobs, total_produced, total_processed, elapsed,
				   elapsed > 0 ? jobs / elapsed : 0.0,
				   jobs > 0 ? wal_bytes / jobs : 0.0);
		}
		print_pcts("pick", pick, np);
		print_pcts("ack", ack, np);
		print_pcts("upick", upick, nu);
		print_pcts("uack", uack, nu);
		printf(" early=%ld dequeues=%ld empty_dequeues=%ld ack_false=%ld "
			   "worker_notifies=%ld listener_notifies=%ld\n",
			   early, deqs, empty, ackf, notif, listener_notifies);
		fflush(stdout);
	}

	for (int i = 0; i < nthreads; i++)
		jqc_close(&ts[i].c);
	jqc_close(&admin);
	return ackf > 0 ? 3 : 0;
}
