/*
 * jqclient.c: see jqclient.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "jqclient.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

const char *jqc_progname = "jqbench";

int64_t
jqc_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
jqc_sleep_us(int64_t us)
{
	struct timespec ts;

	if (us <= 0)
		return;
	ts.tv_sec = us / 1000000;
	ts.tv_nsec = (us % 1000000) * 1000;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void
die_res(jqc_client *c, PGresult *res, const char *what)
{
	fprintf(stderr, "%s: %s failed: %s", jqc_progname, what,
			res ? PQresultErrorMessage(res) : PQerrorMessage(c->conn));
	if (res)
		PQclear(res);
	exit(1);
}

static void
check(jqc_client *c, PGresult *res, const char *what)
{
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		die_res(c, res, what);
}

static void
prepare(jqc_client *c, const char *name, const char *sql, int nparams)
{
	PGresult   *res = PQprepare(c->conn, name, sql, nparams, NULL);

	check(c, res, name);
	PQclear(res);
}

void
jqc_exec(jqc_client *c, const char *sql)
{
	PGresult   *res = PQexec(c->conn, sql);

	check(c, res, sql);
	PQclear(res);
}

/* checks the queue name, fills in c and connects; no statements prepared */
static void
open_conn(jqc_client *c, const char *conninfo, jqc_backend backend,
		  const char *queue, int floor_notify)
{
	memset(c, 0, sizeof(*c));
	c->backend = backend;
	c->floor_notify = floor_notify;
	snprintf(c->queue, sizeof(c->queue), "%s", queue);
	/* queue names are [a-z][a-z0-9_]*: safe to put in SQL text as they are */
	for (const char *p = queue; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
		{
			fprintf(stderr, "%s: bad queue name \"%s\"\n", jqc_progname, queue);
			exit(2);
		}
	if (backend == JQC_PGJQ)
		snprintf(c->channel, sizeof(c->channel), "jq_%s", queue);
	else
		snprintf(c->channel, sizeof(c->channel), "floor_job");

	c->conn = PQconnectdb(conninfo);
	if (PQstatus(c->conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s: connection failed: %s", jqc_progname,
				PQerrorMessage(c->conn));
		exit(1);
	}
}

void
jqc_connect(jqc_client *c, const char *conninfo, jqc_backend backend,
			const char *queue, int floor_notify)
{
	char		sql[1024];

	open_conn(c, conninfo, backend, queue, floor_notify);
	if (backend == JQC_PGJQ)
	{
		snprintf(sql, sizeof(sql),
				 "SELECT jq.jq_enqueue('%s', $1::jsonb, $2::int)", queue);
		prepare(c, "enq", sql, 2);
		snprintf(sql, sizeof(sql),
				 "SELECT unnest(jq.jq_enqueue_batch('%s', $1::jsonb[], $2::int))", queue);
		prepare(c, "enqb", sql, 2);
		snprintf(sql, sizeof(sql),
				 "SELECT job_id, lease_token, payload FROM jq.jq_dequeue('%s', $1::int)", queue);
		prepare(c, "deq", sql, 1);
		snprintf(sql, sizeof(sql),
				 "SELECT job_id, lease_token FROM jq.jq_dequeue('%s', $1::int, NULL, "
				 "wait => $2::interval)", queue);
		prepare(c, "deqw", sql, 2);
		snprintf(sql, sizeof(sql),
				 "CALL jq.jq_wait_dequeue('%s', $1::int, NULL, $2::interval, NULL)", queue);
		prepare(c, "deqp", sql, 2);
		prepare(c, "ack", "SELECT jq.jq_ack($1::bigint, $2::bigint)", 2);
		prepare(c, "ackb",
				"SELECT count(*) FILTER (WHERE acked) "
				"FROM jq.jq_ack_batch($1::bigint[], $2::bigint[])", 2);
	}
	else
	{
		if (floor_notify)
		{
			/* NOTIFY in the producer's transaction: what pgjq avoids */
			prepare(c, "enq",
					"WITH ins AS (INSERT INTO floor_job (priority, payload) "
					"VALUES ($2::int, $1::jsonb) RETURNING id), "
					"n AS (SELECT pg_notify('floor_job', '')) "
					"SELECT ins.id FROM ins, n", 2);
			prepare(c, "enqb",
					"WITH ins AS (INSERT INTO floor_job (priority, payload) "
					"SELECT $2::int, p FROM unnest($1::jsonb[]) AS p RETURNING id), "
					"n AS (SELECT pg_notify('floor_job', '')) "
					"SELECT ins.id FROM ins, n", 2);
		}
		else
		{
			prepare(c, "enq",
					"INSERT INTO floor_job (priority, payload) "
					"VALUES ($2::int, $1::jsonb) RETURNING id", 2);
			prepare(c, "enqb",
					"INSERT INTO floor_job (priority, payload) "
					"SELECT $2::int, p FROM unnest($1::jsonb[]) AS p RETURNING id", 2);
		}
		prepare(c, "deq",
				"UPDATE floor_job SET state = 'leased' WHERE id IN ("
				"SELECT id FROM floor_job WHERE state = 'ready' "
				"ORDER BY priority DESC, id LIMIT $1::int FOR UPDATE SKIP LOCKED) "
				"RETURNING id, 0::bigint, payload", 1);
		prepare(c, "ack", "DELETE FROM floor_job WHERE id = $1::bigint", 1);
		prepare(c, "ackb", "DELETE FROM floor_job WHERE id = ANY ($1::bigint[])", 1);
	}
}

void
jqc_connect_plain(jqc_client *c, const char *conninfo, const char *queue)
{
	open_conn(c, conninfo, JQC_PGJQ, queue, 0);
}

void
jqc_close(jqc_client *c)
{
	if (c->conn)
		PQfinish(c->conn);
	c->conn = NULL;
}

void
jqc_listen(jqc_client *c)
{
	char		sql[128];

	snprintf(sql, sizeof(sql), "LISTEN %s", c->channel);
	jqc_exec(c, sql);
}

static int
drain_notifies(jqc_client *c)
{
	PGnotify   *n;
	int			got = 0;

	while ((n = PQnotifies(c->conn)) != NULL)
	{
		got++;
		PQfreemem(n);
	}
	return got;
}

int
jqc_wait_notify(jqc_client *c, int timeout_ms)
{
	return jqc_wait_notify_fd(c, timeout_ms, -1);
}

int
jqc_wait_notify_fd(jqc_client *c, int timeout_ms, int wake_fd)
{
	int			sock = PQsocket(c->conn);
	int			got;
	fd_set		rfds;
	struct timeval tv;
	int			r;

	if (!PQconsumeInput(c->conn))
		die_res(c, NULL, "PQconsumeInput");
	got = drain_notifies(c);
	if (got > 0)
		return got;

	FD_ZERO(&rfds);
	FD_SET(sock, &rfds);
	if (wake_fd >= 0)
		FD_SET(wake_fd, &rfds);
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	r = select((wake_fd > sock ? wake_fd : sock) + 1, &rfds, NULL, NULL, &tv);
	if (r < 0)
	{
		if (errno == EINTR)
			return 0;
		fprintf(stderr, "%s: select: %s\n", jqc_progname, strerror(errno));
		exit(1);
	}
	if (r > 0 && FD_ISSET(sock, &rfds))
	{
		if (!PQconsumeInput(c->conn))
			die_res(c, NULL, "PQconsumeInput");
		got = drain_notifies(c);
	}
	return got;
}

int64_t
jqc_enqueue(jqc_client *c, const char *payload, int priority)
{
	char		prio[16];
	const char *params[2];
	PGresult   *res;
	int64_t		id;

	snprintf(prio, sizeof(prio), "%d", priority);
	params[0] = payload;
	params[1] = prio;
	res = PQexecPrepared(c->conn, "enq", 2, params, NULL, NULL, 0);
	check(c, res, "enqueue");
	if (PQntuples(res) != 1)
		die_res(c, res, "enqueue (no id)");
	id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return id;
}

/* appends s to the growing buffer */
static void
buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n + 1 > *cap)
	{
		size_t		ncap = *cap ? *cap : 4096;

		while (*len + n + 1 > ncap)
			ncap *= 2;
		*buf = realloc(*buf, ncap);
		if (!*buf)
		{
			fprintf(stderr, "%s: realloc: %s\n", jqc_progname, strerror(errno));
			exit(1);
		}
		*cap = ncap;
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/* array literal {"elem","elem"} with " and \ escaped */
static void
array_literal(const char *const *elems, int n, char **buf, size_t *cap)
{
	size_t		len = 0;

	buf_append(buf, &len, cap, "{", 1);
	for (int i = 0; i < n; i++)
	{
		const char *p = elems[i];

		if (i > 0)
			buf_append(buf, &len, cap, ",", 1);
		buf_append(buf, &len, cap, "\"", 1);
		for (; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				buf_append(buf, &len, cap, "\\", 1);
			buf_append(buf, &len, cap, p, 1);
		}
		buf_append(buf, &len, cap, "\"", 1);
	}
	buf_append(buf, &len, cap, "}", 1);
}

int
jqc_enqueue_batch(jqc_client *c, const char *const *payloads, int n,
				  int priority, int64_t *ids, char **arraybuf, size_t *arraycap)
{
	char		prio[16];
	const char *params[2];
	PGresult   *res;
	int			rows;

	array_literal(payloads, n, arraybuf, arraycap);
	snprintf(prio, sizeof(prio), "%d", priority);
	params[0] = *arraybuf;
	params[1] = prio;
	res = PQexecPrepared(c->conn, "enqb", 2, params, NULL, NULL, 0);
	check(c, res, "enqueue batch");
	rows = PQntuples(res);
	for (int i = 0; i < rows && i < n; i++)
		ids[i] = strtoll(PQgetvalue(res, i, 0), NULL, 10);
	PQclear(res);
	return rows < n ? rows : n;
}

int
jqc_dequeue(jqc_client *c, int k, jqc_job *jobs)
{
	char		kbuf[16];
	const char *params[1];
	PGresult   *res;
	int			rows;

	snprintf(kbuf, sizeof(kbuf), "%d", k);
	params[0] = kbuf;
	res = PQexecPrepared(c->conn, "deq", 1, params, NULL, NULL, 0);
	check(c, res, "dequeue");
	rows = PQntuples(res);
	if (rows > k)
		rows = k;
	for (int i = 0; i < rows; i++)
	{
		jobs[i].id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		jobs[i].token = strtoll(PQgetvalue(res, i, 1), NULL, 10);
	}
	PQclear(res);
	return rows;
}

/* json_int64 reads the integer after "key": in text, from *pos on */
static int
json_int64(const char **pos, const char *key, int64_t *value)
{
	const char *p = strstr(*pos, key);

	if (p == NULL)
		return 0;
	p += strlen(key);
	while (*p == ' ' || *p == ':')
		p++;
	*value = strtoll(p, (char **) pos, 10);
	return 1;
}

int
jqc_dequeue_wait(jqc_client *c, int k, int wait_ms, int procedure, jqc_job *jobs)
{
	char		kbuf[16],
				wbuf[32];
	const char *params[2];
	PGresult   *res;
	int			rows = 0;

	snprintf(kbuf, sizeof(kbuf), "%d", k);
	snprintf(wbuf, sizeof(wbuf), "%d ms", wait_ms);
	params[0] = kbuf;
	params[1] = wbuf;
	res = PQexecPrepared(c->conn, procedure ? "deqp" : "deqw", 2, params, NULL, NULL, 0);
	check(c, res, "dequeue with a wait");
	if (procedure)
	{
		/* one row, one column: a JSON array of jq_dequeue's rows */
		const char *pos = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";

		while (rows < k && json_int64(&pos, "\"job_id\"", &jobs[rows].id) &&
			   json_int64(&pos, "\"lease_token\"", &jobs[rows].token))
			rows++;
	}
	else
	{
		rows = PQntuples(res) < k ? PQntuples(res) : k;
		for (int i = 0; i < rows; i++)
		{
			jobs[i].id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			jobs[i].token = strtoll(PQgetvalue(res, i, 1), NULL, 10);
		}
	}
	PQclear(res);
	return rows;
}

int
jqc_ack(jqc_client *c, const jqc_job *job)
{
	char		idbuf[24],
				tokbuf[24];
	const char *params[2];
	PGresult   *res;
	int			ok;

	snprintf(idbuf, sizeof(idbuf), "%" PRId64, job->id);
	snprintf(tokbuf, sizeof(tokbuf), "%" PRId64, job->token);
	params[0] = idbuf;
	params[1] = tokbuf;
	if (c->backend == JQC_PGJQ)
	{
		res = PQexecPrepared(c->conn, "ack", 2, params, NULL, NULL, 0);
		check(c, res, "ack");
		ok = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	}
	else
	{
		res = PQexecPrepared(c->conn, "ack", 1, params, NULL, NULL, 0);
		check(c, res, "ack");
		ok = strcmp(PQcmdTuples(res), "1") == 0;
	}
	PQclear(res);
	return ok;
}

int
jqc_ack_batch(jqc_client *c, const jqc_job *jobs, int n)
{
	size_t		len = 0,
				cap = 0,
				tlen = 0,
				tcap = 0;
	char	   *ids = NULL,
			   *toks = NULL;
	char		num[24];
	const char *params[2];
	PGresult   *res;
	int			acked;

	buf_append(&ids, &len, &cap, "{", 1);
	buf_append(&toks, &tlen, &tcap, "{", 1);
	for (int i = 0; i < n; i++)
	{
		int			l;

		if (i > 0)
		{
			buf_append(&ids, &len, &cap, ",", 1);
			buf_append(&toks, &tlen, &tcap, ",", 1);
		}
		l = snprintf(num, sizeof(num), "%" PRId64, jobs[i].id);
		buf_append(&ids, &len, &cap, num, (size_t) l);
		l = snprintf(num, sizeof(num), "%" PRId64, jobs[i].token);
		buf_append(&toks, &tlen, &tcap, num, (size_t) l);
	}
	buf_append(&ids, &len, &cap, "}", 1);
	buf_append(&toks, &tlen, &tcap, "}", 1);
	params[0] = ids;
	params[1] = toks;
	if (c->backend == JQC_PGJQ)
	{
		res = PQexecPrepared(c->conn, "ackb", 2, params, NULL, NULL, 0);
		check(c, res, "ack batch");
		acked = atoi(PQgetvalue(res, 0, 0));
	}
	else
	{
		res = PQexecPrepared(c->conn, "ackb", 1, params, NULL, NULL, 0);
		check(c, res, "ack batch");
		acked = atoi(PQcmdTuples(res));
	}
	PQclear(res);
	free(ids);
	free(toks);
	return acked;
}
