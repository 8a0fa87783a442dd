/*
 * jqchaos: producers and workers for pgjq's fault suite
 * (test/t/020_chaos.pl), against a server that is being crashed,
 * restarted and has its backends terminated underneath them.
 *
 *   jqchaos --conninfo STR --queue NAME --logdir DIR
 *           [--producers N] [--workers N] [--locker 0|1] [--seed N]
 *           [--txn-per-sec R] [--lease-seconds N]
 *
 * Every thread has its own connection and appends one line per event to
 * DIR/<role>-<n>.log (tab-separated: kind, job id, lease token, actor,
 * extra), written only once the client knows what it logs.  The test
 * loads the logs into tables and checks them against pgjq's tables.
 *
 * Producers (application_name chaos_producer_<n>) enqueue in explicit
 * transactions: several jobs, sometimes a batch, a delayed job, a job with
 * an idempotency key, or one inside a savepoint that is rolled back; they
 * sleep inside the transaction (so that it can be terminated there), then
 * commit, or deliberately roll back.  They log
 * (C, R and U lines carry, as their token, the start of the server that
 * gave out the id: see Actor.server_start)
 *   C id   COMMIT succeeded: the job must exist exactly once
 *   R id   never committed (rolled back, savepoint rolled back, or an error
 *          before COMMIT was sent): the job must not exist anywhere
 *   U id   COMMIT sent but its outcome unknown (the connection died): the
 *          job may exist, at most once
 *   K id token   a resubmitted idempotency key returned id; token holds the
 *          id the key's committed job has (they must be equal)
 *   X id - - t|f|u   jq.jq_cancel(id) returned true / false / unknown
 *
 * Workers (application_name chaos_worker_<n>) dequeue with a short lease,
 * "work" a random time and ack with the result
 * {"job": id, "worker": n, "token": token}.  They log
 *   D id token - "expiry left"   a delivery (autocommit dequeue, or, with
 *          extra "txn", a dequeue inside a transaction whose COMMIT
 *          succeeded); expiry is the lease's expiry in microseconds since
 *          the epoch, left the milliseconds of it left when jq_dequeue
 *          returned (server clock)
 *   T id token            a delivery inside a transaction whose outcome
 *          is not known to have committed (it may be rolled back)
 *   A id token   jq_ack returned true (and its transaction committed)
 *   S id token   jq_ack returned false
 *   E id token   jq_ack failed with an ERROR (connection still up)
 *   L id token   jq_ack's outcome unknown (connection lost): it may have
 *          committed although the worker never learnt it
 *   F id token - state   jq_fail returned state ("null": stale token)
 *   G id token   jq_fail failed or its outcome is unknown
 *   B id token   the worker abandoned the job (its lease must expire)
 * Faults they inject themselves, and the ones that hit them, are logged as
 *   f 0 0 - kind   drop (connection closed abruptly holding leases),
 *          drop_ack (closed while its ack was in flight), abandon, slow
 *          (worked past the lease), lock_timeout, statement_timeout,
 *          conn_lost, reconnect, cancel ...
 * Half the workers run with lock_timeout = 100ms, the other half with
 * statement_timeout = 150ms; a locker thread (application_name
 * chaos_locker) takes row locks on leased jobs and short table locks, so
 * that both timeouts hit them.
 *
 * Producers and the locker stop when DIR/stop-producers exists (and
 * DIR/producers-done appears once they have); workers then stop injecting
 * faults and work until DIR/stop-workers exists.
 * On connection loss every thread reconnects (retrying while the server is
 * down) and carries on.
 */
#define _POSIX_C_SOURCE 200809L

#include "jqclient.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HELD 16
#define MAX_IDS 64

static const char *conninfo = NULL;
static const char *queue = "chaos";
static const char *logdir = NULL;
static int	nproducers = 3;
static int	nworkers = 4;
static int	use_locker = 1;
static uint64_t seed = 1;
static double txn_per_sec = 15.0;	/* per producer */
static int	lease_seconds = 2;

static char stop_producers_path[1024];
static char stop_workers_path[1024];

typedef enum { ROLE_PRODUCER, ROLE_WORKER, ROLE_LOCKER } Role;

typedef struct Actor
{
	Role		role;
	int			idx;
	uint64_t	rng;
	FILE	   *log;
	PGconn	   *conn;
	char		appname[64];
	pthread_t	thread;
	/*
	 * producers: the start of the server the connection reaches
	 * (pg_postmaster_start_time, us since the epoch), logged with each id.
	 * A sequence value that only a transaction which never committed had
	 * used can come again after a crash (its WAL was never flushed), so an
	 * id is unique only together with the server's start.
	 */
	int64_t		server_start;
	/* what it did, for the summary */
	long		events;
} Actor;

typedef struct HeldJob
{
	int64_t		id;
	int64_t		token;
} HeldJob;

/* outcome of one statement */
typedef enum
{
	RES_OK,						/* the statement succeeded */
	RES_ERR,					/* ERROR; the connection is still up */
	RES_LOST					/* the connection is gone (or FATAL): unknown */
} ResKind;

/* ---------------------------------------------------------------- utils */

static uint64_t
rnd_next(Actor *a)
{
	/* xorshift64* */
	uint64_t	x = a->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	a->rng = x;
	return x * UINT64_C(2685821657736338717);
}

/* uniform in [0, 1) */
static double
rnd(Actor *a)
{
	return (double) (rnd_next(a) >> 11) / (double) (UINT64_C(1) << 53);
}

/* uniform in [lo, hi] */
static int64_t
rnd_range(Actor *a, int64_t lo, int64_t hi)
{
	if (hi <= lo)
		return lo;
	return lo + (int64_t) (rnd_next(a) % (uint64_t) (hi - lo + 1));
}

static void
sleep_ms(int64_t ms)
{
	jqc_sleep_us(ms * 1000);
}

static int
file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static int
producers_stopped(void)
{
	return file_exists(stop_producers_path);
}

static int
workers_stopped(void)
{
	return file_exists(stop_workers_path);
}

/* one log line: kind, id, token, actor, extra */
static void
logev(Actor *a, const char *kind, int64_t id, int64_t token, const char *extra)
{
	fprintf(a->log, "%s\t%" PRId64 "\t%" PRId64 "\t%d\t%s\n",
			kind, id, token, a->idx, extra ? extra : "");
	fflush(a->log);
	a->events++;
}

static void
logfault(Actor *a, const char *kind)
{
	logev(a, "f", 0, 0, kind);
}

/* ----------------------------------------------------------- connection */

static void
drop_conn(Actor *a)
{
	if (a->conn)
		PQfinish(a->conn);
	a->conn = NULL;
}

/*
 * close the connection the way a network failure would: no Terminate
 * message, the server just sees the socket go away
 */
static void
abrupt_close(Actor *a)
{
	if (a->conn)
	{
		int			sock = PQsocket(a->conn);

		if (sock >= 0)
			shutdown(sock, SHUT_RDWR);
	}
	drop_conn(a);
}

static int
stop_requested(Actor *a)
{
	return a->role == ROLE_WORKER ? workers_stopped() : producers_stopped();
}

/* runs a setup statement; 1 when it succeeded */
static int
setup_exec(Actor *a, const char *sql)
{
	PGresult   *res = PQexec(a->conn, sql);
	int			ok = PQresultStatus(res) == PGRES_COMMAND_OK ||
		PQresultStatus(res) == PGRES_TUPLES_OK;

	PQclear(res);
	return ok;
}

/*
 * ensure_conn connects (again) if there is no usable connection, retrying
 * while the server is down or starting.  Returns 0 when asked to stop
 * before it got one.
 */
static int
ensure_conn(Actor *a)
{
	int			first = 1;

	if (a->conn && PQstatus(a->conn) == CONNECTION_OK)
		return 1;
	if (a->conn)
	{
		logfault(a, "conn_lost");
		drop_conn(a);
	}
	for (;;)
	{
		const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
		const char *vals[] = {conninfo, a->appname, "5", NULL};

		if (!first && stop_requested(a))
			return 0;
		first = 0;
		a->conn = PQconnectdbParams(keys, vals, 1);
		if (PQstatus(a->conn) == CONNECTION_OK)
		{
			int			ok = 1;

			if (a->role == ROLE_PRODUCER)
			{
				PGresult   *res = PQexec(a->conn,
										 "SELECT (extract(epoch FROM pg_postmaster_start_time())"
										 " * 1000000)::bigint");

				ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
				if (ok)
					a->server_start = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
				PQclear(res);
			}
			if (a->role == ROLE_WORKER)
			{
				/* half the workers hit lock_timeout, the others statement_timeout */
				if (a->idx % 2 == 0)
					ok = setup_exec(a, "SET lock_timeout = '100ms'");
				else
					ok = setup_exec(a, "SET statement_timeout = '150ms'");
			}
			if (ok)
			{
				logfault(a, "reconnect");
				return 1;
			}
		}
		drop_conn(a);
		sleep_ms(100);
	}
}

/*
 * classify tells what a result means for the statement's effects.  An
 * ERROR on a live connection rolled the statement back; a FATAL, or a
 * connection that is gone, leaves the outcome unknown.  Timeouts are
 * logged as the faults they are.
 */
static ResKind
classify(Actor *a, PGresult *res)
{
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	const char *sqlstate;
	const char *severity;

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return RES_OK;
	sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	severity = res ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
	if (sqlstate && strcmp(sqlstate, "55P03") == 0)
		logfault(a, "lock_timeout");
	else if (sqlstate && strcmp(sqlstate, "57014") == 0)
		logfault(a, "statement_timeout");
	if (PQstatus(a->conn) != CONNECTION_OK ||
		(severity && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0)))
	{
		/* whatever libpq thinks yet: this connection is done for */
		if (a->conn)
			logfault(a, "conn_lost");
		drop_conn(a);
		return RES_LOST;
	}
	if (!(sqlstate && (strcmp(sqlstate, "55P03") == 0 || strcmp(sqlstate, "57014") == 0 ||
					   strcmp(sqlstate, "25P02") == 0)))
	{
		/* not a fault we expect: say so, for a look at the test's log */
		fprintf(stderr, "jqchaos %s: unexpected error %s: %s", a->appname,
				sqlstate ? sqlstate : "?", res ? PQresultErrorMessage(res) : "");
	}
	return RES_ERR;
}

/* a statement whose result does not matter beyond success */
static ResKind
run(Actor *a, const char *sql)
{
	PGresult   *res = PQexec(a->conn, sql);
	ResKind		k = classify(a, res);

	PQclear(res);
	return k;
}

/* after an ERROR inside a transaction: roll it back (or lose the connection) */
static void
rollback_after_error(Actor *a)
{
	if (a->conn && PQstatus(a->conn) == CONNECTION_OK &&
		PQtransactionStatus(a->conn) != PQTRANS_IDLE)
	{
		if (run(a, "ROLLBACK") != RES_OK)
			drop_conn(a);
	}
}

static PGresult *
exec_params(Actor *a, const char *sql, int n, const char *const *params)
{
	return PQexecParams(a->conn, sql, n, NULL, params, NULL, NULL, 0);
}

/* ------------------------------------------------------------ producers */

typedef struct KeyedJob
{
	char		key[64];
	int64_t		id;
} KeyedJob;

typedef struct PendingId
{
	int64_t		id;
	int			savepoint_rolled_back;
	char		key[64];		/* a fresh idempotency key, or "" */
} PendingId;

/* one enqueue statement; appends the ids it returned; RES_* */
static ResKind
producer_enqueue(Actor *a, PendingId *ids, int *nids, KeyedJob *keyed, int nkeyed,
				 long *seq)
{
	char		payload[128];
	char		prio[8];
	const char *params[4];
	PGresult   *res;
	ResKind		k;
	double		r = rnd(a);
	static const int prios[] = {-10, 0, 0, 0, 10};

	snprintf(prio, sizeof(prio), "%d", prios[rnd_range(a, 0, 4)]);
	snprintf(payload, sizeof(payload), "{\"producer\": %d, \"seq\": %ld}", a->idx, (*seq)++);

	if (r < 0.10 && *nids + 8 <= MAX_IDS)
	{
		/* a batch of 2 to 8 */
		char		arr[1200];
		int			n = (int) rnd_range(a, 2, 8);
		size_t		len = 0;

		len += (size_t) snprintf(arr + len, sizeof(arr) - len, "{");
		for (int i = 0; i < n; i++)
			len += (size_t) snprintf(arr + len, sizeof(arr) - len,
									 "%s\"{\\\"producer\\\": %d, \\\"seq\\\": %ld, \\\"batch\\\": %d}\"",
									 i ? "," : "", a->idx, (*seq)++, i);
		snprintf(arr + len, sizeof(arr) - len, "}");
		params[0] = queue;
		params[1] = arr;
		params[2] = prio;
		res = exec_params(a, "SELECT unnest(jq.jq_enqueue_batch($1, $2::jsonb[], $3::int))",
						  3, params);
		k = classify(a, res);
		if (k == RES_OK)
			for (int i = 0; i < PQntuples(res) && *nids < MAX_IDS; i++)
			{
				memset(&ids[*nids], 0, sizeof(PendingId));
				ids[(*nids)++].id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			}
		PQclear(res);
		return k;
	}
	if (r < 0.20 && nkeyed > 0)
	{
		/* resubmit a committed job's idempotency key: same id, no new job */
		KeyedJob   *kj = &keyed[rnd_range(a, 0, nkeyed - 1)];
		int64_t		got;

		params[0] = queue;
		params[1] = payload;
		params[2] = kj->key;
		res = exec_params(a, "SELECT jq.jq_enqueue($1, $2::jsonb, idempotency_key => $3)",
						  3, params);
		k = classify(a, res);
		if (k == RES_OK)
		{
			got = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
			logev(a, "K", got, kj->id, kj->key);
		}
		PQclear(res);
		return k;
	}
	if (r < 0.30)
	{
		/* a fresh key */
		char		key[64];

		snprintf(key, sizeof(key), "p%d-%ld", a->idx, *seq);
		params[0] = queue;
		params[1] = payload;
		params[2] = prio;
		params[3] = key;
		res = exec_params(a, "SELECT jq.jq_enqueue($1, $2::jsonb, $3::int, idempotency_key => $4)",
						  4, params);
		k = classify(a, res);
		if (k == RES_OK)
		{
			memset(&ids[*nids], 0, sizeof(PendingId));
			ids[*nids].id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
			snprintf(ids[*nids].key, sizeof(ids[*nids].key), "%s", key);
			(*nids)++;
		}
		PQclear(res);
		return k;
	}
	if (r < 0.40)
	{
		/* inside a savepoint, rolled back half the time */
		int			back = rnd(a) < 0.5;
		int64_t		id;

		if ((k = run(a, "SAVEPOINT sp")) != RES_OK)
			return k;
		params[0] = queue;
		params[1] = payload;
		params[2] = prio;
		res = exec_params(a, "SELECT jq.jq_enqueue($1, $2::jsonb, $3::int)", 3, params);
		k = classify(a, res);
		if (k != RES_OK)
		{
			PQclear(res);
			return k;
		}
		id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
		memset(&ids[*nids], 0, sizeof(PendingId));
		ids[*nids].id = id;
		(*nids)++;
		if (back)
		{
			k = run(a, "ROLLBACK TO SAVEPOINT sp");
			if (k == RES_OK)
				ids[*nids - 1].savepoint_rolled_back = 1;
			return k;
		}
		return run(a, "RELEASE SAVEPOINT sp");
	}
	/* a plain job, delayed by a second one time in ten */
	params[0] = queue;
	params[1] = payload;
	params[2] = prio;
	if (rnd(a) < 0.10)
		res = exec_params(a, "SELECT jq.jq_enqueue($1, $2::jsonb, $3::int,"
						  " run_at => clock_timestamp() + interval '1 second')", 3, params);
	else
		res = exec_params(a, "SELECT jq.jq_enqueue($1, $2::jsonb, $3::int)", 3, params);
	k = classify(a, res);
	if (k == RES_OK)
	{
		memset(&ids[*nids], 0, sizeof(PendingId));
		ids[(*nids)++].id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	}
	PQclear(res);
	return k;
}

static void
log_ids(Actor *a, const PendingId *ids, int nids, const char *kind, const char *why)
{
	for (int i = 0; i < nids; i++)
		logev(a, ids[i].savepoint_rolled_back ? "R" : kind, ids[i].id, a->server_start,
			  ids[i].savepoint_rolled_back ? "savepoint" : why);
}

static void *
producer_main(void *arg)
{
	Actor	   *a = arg;
	int64_t		recent[256];
	int			nrecent = 0;
	KeyedJob	keyed[64];
	int			nkeyed = 0;
	long		seq = 0;
	int64_t		period_us = (int64_t) (1e6 / txn_per_sec);

	while (!producers_stopped())
	{
		PendingId	ids[MAX_IDS];
		int			nids = 0;
		int			steps = (int) rnd_range(a, 1, 4);
		ResKind		k = RES_OK;
		int64_t		t0 = jqc_now_us();

		if (!ensure_conn(a))
			break;
		if ((k = run(a, "BEGIN")) != RES_OK)
		{
			rollback_after_error(a);
			continue;
		}
		for (int s = 0; s < steps && k == RES_OK && nids + 8 <= MAX_IDS; s++)
			k = producer_enqueue(a, ids, &nids, keyed, nkeyed, &seq);
		if (k == RES_OK)
			sleep_ms(rnd_range(a, 2, 25));	/* a window to be terminated in */

		if (k != RES_OK)
		{
			/* COMMIT was never sent: nothing of it can have committed */
			log_ids(a, ids, nids, "R", "error");
			rollback_after_error(a);
		}
		else if (rnd(a) < 0.12)
		{
			log_ids(a, ids, nids, "R", "rollback");
			if (run(a, "ROLLBACK") != RES_OK)
				drop_conn(a);
		}
		else if (PQstatus(a->conn) != CONNECTION_OK)
			log_ids(a, ids, nids, "R", "error");
		else
		{
			PGresult   *res = PQexec(a->conn, "COMMIT");
			ResKind		ck = classify(a, res);

			if (ck == RES_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0)
			{
				log_ids(a, ids, nids, "C", "");
				for (int i = 0; i < nids; i++)
				{
					if (ids[i].savepoint_rolled_back)
						continue;
					recent[nrecent++ % 256] = ids[i].id;
					if (ids[i].key[0])
					{
						KeyedJob   *kj = &keyed[nkeyed < 64 ? nkeyed++ : rnd_range(a, 0, 63)];

						snprintf(kj->key, sizeof(kj->key), "%s", ids[i].key);
						kj->id = ids[i].id;
					}
				}
			}
			else if (ck == RES_OK)
				log_ids(a, ids, nids, "R", "aborted");	/* COMMIT said ROLLBACK */
			else
			{
				/* unknown: the server may have committed before it died */
				log_ids(a, ids, nids, "U", "commit");
				rollback_after_error(a);
			}
			PQclear(res);
		}

		/* now and then cancel a job we committed, in autocommit */
		if (nrecent > 0 && rnd(a) < 0.04 && a->conn && PQstatus(a->conn) == CONNECTION_OK)
		{
			int64_t		id = recent[rnd_range(a, 0, (nrecent < 256 ? nrecent : 256) - 1)];
			char		idbuf[24];
			const char *params[1] = {idbuf};
			PGresult   *res;
			ResKind		ck;

			snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
			res = exec_params(a, "SELECT jq.jq_cancel($1::bigint)", 1, params);
			ck = classify(a, res);
			if (ck == RES_OK)
				logev(a, "X", id, 0, PQgetvalue(res, 0, 0));
			else
				logev(a, "X", id, 0, "u");
			PQclear(res);
		}

		/* pace: txn_per_sec per producer, with jitter */
		{
			int64_t		spent = jqc_now_us() - t0;
			int64_t		want = (int64_t) (period_us * (0.5 + rnd(a)));

			if (want > spent)
				jqc_sleep_us(want - spent);
		}
	}
	drop_conn(a);
	return NULL;
}

/* -------------------------------------------------------------- workers */

/* -> id, token, lease expiry (us since the epoch), lease left on return (ms) */
static const char *SQL_DEQUEUE =
"SELECT job_id, lease_token,"
"       (extract(epoch FROM lease_expires_at) * 1000000)::bigint,"
"       (extract(epoch FROM lease_expires_at - clock_timestamp()) * 1000)::int"
"  FROM jq.jq_dequeue($1, $2::int, $3::int)";

static const char *SQL_ACK =
"SELECT jq.jq_ack($1::bigint, $2::bigint,"
"              jsonb_build_object('job', $1::bigint, 'worker', $3::int, 'token', $2::bigint))";

static const char *SQL_ACK_BATCH =
"SELECT job_id, acked"
"  FROM jq.jq_ack_batch($1::bigint[], $2::bigint[],"
"       ARRAY(SELECT jsonb_build_object('job', i, 'worker', $3::int, 'token', t)"
"               FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS u(i, t, o)"
"              ORDER BY o))";

/* jq_ack of one job, logged; returns RES_* */
static ResKind
worker_ack(Actor *a, const HeldJob *j)
{
	char		idbuf[24],
				tokbuf[24],
				wbuf[16];
	const char *params[3] = {idbuf, tokbuf, wbuf};
	PGresult   *res;
	ResKind		k;

	snprintf(idbuf, sizeof(idbuf), "%" PRId64, j->id);
	snprintf(tokbuf, sizeof(tokbuf), "%" PRId64, j->token);
	snprintf(wbuf, sizeof(wbuf), "%d", a->idx);
	res = exec_params(a, SQL_ACK, 3, params);
	k = classify(a, res);
	if (k == RES_OK)
		logev(a, strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? "A" : "S", j->id, j->token, "");
	else
		logev(a, k == RES_ERR ? "E" : "L", j->id, j->token, "");
	PQclear(res);
	return k;
}

/*
 * ack with one retry: after an ERROR at once, after a lost connection once
 * reconnected (the first ack may have committed: then the retry must say
 * false)
 */
static void
worker_ack_retry(Actor *a, const HeldJob *j)
{
	ResKind		k = worker_ack(a, j);

	if (k == RES_OK)
		return;
	if (k == RES_LOST && !ensure_conn(a))
		return;
	if (k == RES_ERR)
		sleep_ms(150);			/* a lock may be gone by then */
	(void) worker_ack(a, j);
}

/* jq_ack_batch of jobs[0..n-1], logged */
static ResKind
worker_ack_batch(Actor *a, const HeldJob *jobs, int n)
{
	char		ids[MAX_HELD * 24 + 4],
				toks[MAX_HELD * 24 + 4],
				wbuf[16];
	const char *params[3] = {ids, toks, wbuf};
	size_t		li = 0,
				lt = 0;
	PGresult   *res;
	ResKind		k;

	li += (size_t) snprintf(ids + li, sizeof(ids) - li, "{");
	lt += (size_t) snprintf(toks + lt, sizeof(toks) - lt, "{");
	for (int i = 0; i < n; i++)
	{
		li += (size_t) snprintf(ids + li, sizeof(ids) - li, "%s%" PRId64, i ? "," : "", jobs[i].id);
		lt += (size_t) snprintf(toks + lt, sizeof(toks) - lt, "%s%" PRId64, i ? "," : "", jobs[i].token);
	}
	snprintf(ids + li, sizeof(ids) - li, "}");
	snprintf(toks + lt, sizeof(toks) - lt, "}");
	snprintf(wbuf, sizeof(wbuf), "%d", a->idx);
	res = exec_params(a, SQL_ACK_BATCH, 3, params);
	k = classify(a, res);
	if (k == RES_OK)
	{
		for (int r = 0; r < PQntuples(res); r++)
		{
			int64_t		id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
			int64_t		tok = 0;

			for (int i = 0; i < n; i++)
				if (jobs[i].id == id)
					tok = jobs[i].token;
			logev(a, strcmp(PQgetvalue(res, r, 1), "t") == 0 ? "A" : "S", id, tok, "batch");
		}
	}
	else
		for (int i = 0; i < n; i++)
			logev(a, k == RES_ERR ? "E" : "L", jobs[i].id, jobs[i].token, "batch");
	PQclear(res);
	return k;
}

static void
worker_fail(Actor *a, const HeldJob *j, int permanent)
{
	char		idbuf[24],
				tokbuf[24];
	const char *params[2] = {idbuf, tokbuf};
	PGresult   *res;
	ResKind		k;

	snprintf(idbuf, sizeof(idbuf), "%" PRId64, j->id);
	snprintf(tokbuf, sizeof(tokbuf), "%" PRId64, j->token);
	if (permanent)
		res = exec_params(a, "SELECT jq.jq_fail($1::bigint, $2::bigint, 'chaos: permanent',"
						  " permanent => true)", 2, params);
	else
		res = exec_params(a, "SELECT jq.jq_fail($1::bigint, $2::bigint, 'chaos: retry',"
						  " retry_in => interval '100 milliseconds')", 2, params);
	k = classify(a, res);
	if (k == RES_OK)
		logev(a, "F", j->id, j->token,
			  PQgetisnull(res, 0, 0) ? "null" : PQgetvalue(res, 0, 0));
	else
		logev(a, "G", j->id, j->token, permanent ? "permanent" : "retry");
	PQclear(res);
}

/* dequeue into held[]; deliveries logged with kind; RES_* */
static ResKind
worker_dequeue(Actor *a, HeldJob *held, int *nheld, int k, const char *kind)
{
	char		kbuf[8],
				lbuf[8];
	const char *params[3] = {queue, kbuf, lbuf};
	PGresult   *res;
	ResKind		rk;

	snprintf(kbuf, sizeof(kbuf), "%d", k);
	snprintf(lbuf, sizeof(lbuf), "%d", lease_seconds);
	res = exec_params(a, SQL_DEQUEUE, 3, params);
	rk = classify(a, res);
	if (rk == RES_OK)
		for (int i = 0; i < PQntuples(res) && *nheld < MAX_HELD; i++)
		{
			char		extra[64];

			held[*nheld].id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			held[*nheld].token = strtoll(PQgetvalue(res, i, 1), NULL, 10);
			snprintf(extra, sizeof(extra), "%s %s", PQgetvalue(res, i, 2),
					 PQgetvalue(res, i, 3));
			logev(a, kind, held[*nheld].id, held[*nheld].token, extra);
			(*nheld)++;
		}
	PQclear(res);
	return rk;
}

/*
 * A whole delivery in one transaction: dequeue, work, ack, COMMIT.  The
 * deliveries and acks count only if COMMIT succeeds; a terminate in the
 * middle rolls everything back and the jobs are ready again at once.
 */
static void
worker_txn_round(Actor *a)
{
	HeldJob		held[MAX_HELD];
	int			nheld = 0;
	int			acked[MAX_HELD];
	PGresult   *res;
	ResKind		k;

	if (run(a, "BEGIN") != RES_OK)
	{
		rollback_after_error(a);
		return;
	}
	k = worker_dequeue(a, held, &nheld, (int) rnd_range(a, 1, 3), "T");
	for (int i = 0; i < nheld && k == RES_OK; i++)
	{
		char		idbuf[24],
					tokbuf[24],
					wbuf[16];
		const char *params[3] = {idbuf, tokbuf, wbuf};

		sleep_ms(rnd_range(a, 0, 30));
		snprintf(idbuf, sizeof(idbuf), "%" PRId64, held[i].id);
		snprintf(tokbuf, sizeof(tokbuf), "%" PRId64, held[i].token);
		snprintf(wbuf, sizeof(wbuf), "%d", a->idx);
		res = exec_params(a, SQL_ACK, 3, params);
		k = classify(a, res);
		acked[i] = k == RES_OK && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
	}
	if (k != RES_OK)
	{
		rollback_after_error(a);
		return;
	}
	res = PQexec(a->conn, "COMMIT");
	k = classify(a, res);
	if (k == RES_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0)
	{
		for (int i = 0; i < nheld; i++)
		{
			logev(a, "D", held[i].id, held[i].token, "txn");
			logev(a, acked[i] ? "A" : "S", held[i].id, held[i].token, "txn");
		}
	}
	else if (k != RES_OK)
	{
		/* may have committed */
		for (int i = 0; i < nheld; i++)
			if (acked[i])
				logev(a, "L", held[i].id, held[i].token, "txn");
		rollback_after_error(a);
	}
	PQclear(res);
}

static void *
worker_main(void *arg)
{
	Actor	   *a = arg;
	HeldJob		held[MAX_HELD];
	int			nheld = 0;

	while (!workers_stopped())
	{
		int			calm = producers_stopped();

		if (!ensure_conn(a))
			break;
		if (nheld == 0)
		{
			if (!calm && rnd(a) < 0.08)
			{
				worker_txn_round(a);
				continue;
			}
			if (worker_dequeue(a, held, &nheld, (int) rnd_range(a, 1, 4), "D") != RES_OK)
				continue;
			if (nheld == 0)
			{
				sleep_ms(rnd_range(a, 10, 40));
				continue;
			}
		}

		/* work through the held jobs; a fault may end the round early */
		while (nheld > 0 && !workers_stopped())
		{
			HeldJob		j = held[0];
			double		r = calm ? 1.0 : rnd(a);

			if (!ensure_conn(a))
				break;
			if (r < 0.015)
			{
				/* the network goes: the leases stay until they expire */
				logfault(a, "drop");
				abrupt_close(a);
				if (rnd(a) < 0.5)
				{
					/* and the worker forgets its jobs */
					for (int i = 0; i < nheld; i++)
						logev(a, "B", held[i].id, held[i].token, "drop");
					nheld = 0;
				}
				continue;		/* else reconnects and acks with its tokens */
			}
			memmove(held, held + 1, sizeof(HeldJob) * (size_t) --nheld);
			if (r < 0.027)
			{
				/* the network goes while the ack is on its way */
				char		idbuf[24],
							tokbuf[24],
							wbuf[16];
				const char *params[3] = {idbuf, tokbuf, wbuf};

				logfault(a, "drop_ack");
				snprintf(idbuf, sizeof(idbuf), "%" PRId64, j.id);
				snprintf(tokbuf, sizeof(tokbuf), "%" PRId64, j.token);
				snprintf(wbuf, sizeof(wbuf), "%d", a->idx);
				/* even if libpq reports a failure, the bytes may be out */
				if (PQsendQueryParams(a->conn, SQL_ACK, 3, NULL, params, NULL, NULL, 0) &&
					rnd(a) < 0.5)
					jqc_sleep_us(rnd_range(a, 0, 3000));
				logev(a, "L", j.id, j.token, "drop_ack");
				abrupt_close(a);
				/* reconnect and ack again: false if the first one committed */
				if (ensure_conn(a))
					worker_ack_retry(a, &j);
			}
			else if (r < 0.04)
			{
				logfault(a, "abandon");
				logev(a, "B", j.id, j.token, "abandon");
			}
			else if (r < 0.05)
			{
				/* past the lease: reclaimed, and the ack says false */
				logfault(a, "slow");
				sleep_ms(rnd_range(a, (int64_t) lease_seconds * 1000 + 200,
								   (int64_t) lease_seconds * 1000 + 1000));
				worker_ack_retry(a, &j);
			}
			else if (r < 0.07)
				worker_fail(a, &j, 1);
			else if (r < 0.10)
				worker_fail(a, &j, 0);
			else if (r < 0.25 && nheld > 0)
			{
				HeldJob		batch[MAX_HELD];
				int			n = 0;

				batch[n++] = j;
				while (nheld > 0)
				{
					batch[n++] = held[0];
					memmove(held, held + 1, sizeof(HeldJob) * (size_t) --nheld);
				}
				sleep_ms(rnd_range(a, 0, 40));
				if (worker_ack_batch(a, batch, n) == RES_LOST && ensure_conn(a))
					(void) worker_ack_batch(a, batch, n);
			}
			else
			{
				sleep_ms(rnd_range(a, 0, calm ? 10 : 40));
				worker_ack_retry(a, &j);
			}
		}
	}
	drop_conn(a);
	return NULL;
}

/* --------------------------------------------------------------- locker */

/*
 * Holds row locks on a few leased jobs, or a short EXCLUSIVE lock on the
 * job table, so that workers' acks and dequeues run into lock_timeout or
 * statement_timeout.
 */
static void *
locker_main(void *arg)
{
	Actor	   *a = arg;

	while (!producers_stopped())
	{
		sleep_ms(rnd_range(a, 200, 600));
		if (!ensure_conn(a))
			break;
		if (run(a, "BEGIN") != RES_OK)
		{
			rollback_after_error(a);
			continue;
		}
		if (rnd(a) < 0.7)
		{
			if (run(a, "SELECT count(*) FROM (SELECT id FROM jq.job WHERE state = 'l'"
					" ORDER BY random() LIMIT 4 FOR UPDATE SKIP LOCKED) s") != RES_OK)
			{
				rollback_after_error(a);
				continue;
			}
			logfault(a, "rowlock");
			sleep_ms(400);
		}
		else
		{
			if (run(a, "LOCK TABLE jq.job IN EXCLUSIVE MODE") != RES_OK)
			{
				rollback_after_error(a);
				continue;
			}
			logfault(a, "tablelock");
			sleep_ms(300);
		}
		if (run(a, "ROLLBACK") != RES_OK)
			drop_conn(a);
	}
	drop_conn(a);
	return NULL;
}

/* ----------------------------------------------------------------- main */

static void
usage(void)
{
	fprintf(stderr,
			"usage: jqchaos --conninfo STR --logdir DIR [--queue NAME] [--producers N]\n"
			"               [--workers N] [--locker 0|1] [--seed N] [--txn-per-sec R]\n"
			"               [--lease-seconds N]\n");
	exit(2);
}

static Actor *
new_actor(Role role, int idx)
{
	Actor	   *a = calloc(1, sizeof(Actor));
	char		path[1100];
	static const char *names[] = {"producer", "worker", "locker"};

	if (!a)
	{
		perror("jqchaos: calloc");
		exit(1);
	}
	a->role = role;
	a->idx = idx;
	a->rng = seed * UINT64_C(0x9E3779B97F4A7C15) + (uint64_t) role * 1000 + (uint64_t) idx + 1;
	if (a->rng == 0)
		a->rng = 1;
	for (int i = 0; i < 8; i++)
		(void) rnd_next(a);
	snprintf(a->appname, sizeof(a->appname), "chaos_%s_%d", names[role], idx);
	snprintf(path, sizeof(path), "%s/%s-%d.log", logdir, names[role], idx);
	a->log = fopen(path, "a");
	if (!a->log)
	{
		perror(path);
		exit(1);
	}
	return a;
}

int
main(int argc, char **argv)
{
	Actor	   *actors[64];
	int			nactors = 0;

	for (int i = 1; i < argc; i++)
	{
		const char *opt = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!val)
			usage();
		i++;
		if (strcmp(opt, "--conninfo") == 0)
			conninfo = val;
		else if (strcmp(opt, "--queue") == 0)
			queue = val;
		else if (strcmp(opt, "--logdir") == 0)
			logdir = val;
		else if (strcmp(opt, "--producers") == 0)
			nproducers = atoi(val);
		else if (strcmp(opt, "--workers") == 0)
			nworkers = atoi(val);
		else if (strcmp(opt, "--locker") == 0)
			use_locker = atoi(val);
		else if (strcmp(opt, "--seed") == 0)
			seed = strtoull(val, NULL, 10);
		else if (strcmp(opt, "--txn-per-sec") == 0)
			txn_per_sec = atof(val);
		else if (strcmp(opt, "--lease-seconds") == 0)
			lease_seconds = atoi(val);
		else
			usage();
	}
	if (!conninfo || !logdir || nproducers < 0 || nworkers < 1 ||
		nproducers + nworkers > 60 || txn_per_sec <= 0 || lease_seconds < 1)
		usage();

	/* a dropped connection must not kill us */
	signal(SIGPIPE, SIG_IGN);
	snprintf(stop_producers_path, sizeof(stop_producers_path), "%s/stop-producers", logdir);
	snprintf(stop_workers_path, sizeof(stop_workers_path), "%s/stop-workers", logdir);

	for (int i = 0; i < nproducers; i++)
		actors[nactors++] = new_actor(ROLE_PRODUCER, i);
	for (int i = 0; i < nworkers; i++)
		actors[nactors++] = new_actor(ROLE_WORKER, i);
	if (use_locker)
		actors[nactors++] = new_actor(ROLE_LOCKER, 0);

	for (int i = 0; i < nactors; i++)
	{
		Actor	   *a = actors[i];
		void	   *(*fn) (void *) = a->role == ROLE_PRODUCER ? producer_main :
			a->role == ROLE_WORKER ? worker_main : locker_main;

		if (pthread_create(&a->thread, NULL, fn, a) != 0)
		{
			perror("jqchaos: pthread_create");
			exit(1);
		}
	}
	/* producers and the locker first: then say so, for the drain to begin */
	for (int pass = 0; pass < 2; pass++)
	{
		for (int i = 0; i < nactors; i++)
		{
			if ((actors[i]->role == ROLE_WORKER) != (pass == 1))
				continue;
			pthread_join(actors[i]->thread, NULL);
			fclose(actors[i]->log);
			printf("%s: %ld events\n", actors[i]->appname, actors[i]->events);
		}
		if (pass == 0)
		{
			char		path[1100];
			FILE	   *f;

			snprintf(path, sizeof(path), "%s/producers-done", logdir);
			if ((f = fopen(path, "w")) == NULL)
			{
				perror(path);
				exit(1);
			}
			fclose(f);
		}
	}
	return 0;
}
