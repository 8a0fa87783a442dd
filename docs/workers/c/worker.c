/*
 * worker.c: pgjq example worker in C (libpq): scores ad copy.
 *
 *     make -C docs/workers/c
 *     PGHOST=... PGPORT=... PGUSER=... PGDATABASE=... \
 *         docs/workers/c/worker scoring --batch 10 --lease-seconds 60
 *
 * Connects with the standard libpq environment variables, LISTENs on
 * jq_<queue>, leases jobs with jq_dequeue, scores the payload's "copy"
 * string (rules in ../README.md), extends the leases while the (simulated)
 * work runs long, acks with the score, and fails malformed payloads
 * permanently.  Exits on SIGTERM/SIGINT, or after --exit-when-idle seconds
 * without a job.  It is the loop of ../python/worker.py, step for step, so
 * that the four example workers behave (and log) alike.
 *
 * The connection, LISTEN and the wait for a notification come from the
 * C client library, clients/c/jqclient.c.  The statements are this
 * worker's own, prepared once and run with parameters: no job data ever
 * goes into SQL text.  The one name that does is the queue's, in LISTEN
 * (which takes no parameters), and it is checked against
 * [a-z][a-z0-9_]{0,47} first.
 */
#define _POSIX_C_SOURCE 200809L

#include "jqclient.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LANG "c"				/* "worker" in the results, the log prefix */

#if defined(__GNUC__)
#define printf_like(f, a) __attribute__((format(printf, f, a)))
#else
#define printf_like(f, a)
#endif

static void log_line(const char *fmt,...) printf_like(1, 2);


/* --- the scoring rules: keep them the same in all four workers ----------- */

typedef struct Rule
{
	const char *word;
	const char *reason;
} Rule;

/* in the order the reasons are listed */
static const Rule banned[] = {
	{"guaranteed", "banned:guaranteed"},
	{"miracle", "banned:miracle"},
	{"cure", "banned:cure"},
	{"winner", "banned:winner"},
};
static const Rule calls_to_action[] = {
	{"buy", "call_to_action:buy"},
	{"shop", "call_to_action:shop"},
	{"order", "call_to_action:order"},
	{"book", "call_to_action:book"},
};

#define NBANNED (int) (sizeof(banned) / sizeof(banned[0]))
#define NCTA (int) (sizeof(calls_to_action) / sizeof(calls_to_action[0]))

/* one length reason, every banned word, one call-to-action reason */
#define MAX_REASONS (1 + NBANNED + 1)

typedef struct Score
{
	int			score;
	int			nreasons;
	const char *reasons[MAX_REASONS];
} Score;

/*
 * Word characters are ASCII letters and digits only.  Not isalnum() and
 * tolower(): they follow the locale, and the rules must not (a byte of a
 * UTF-8 sequence, e.g. of "é", is >= 0x80 and separates words, as the
 * rules say non-ASCII letters do).
 */
static inline bool
is_word_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9');
}

static inline unsigned char
ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* does the run of word bytes [p, p + len) spell word, ignoring ASCII case? */
static bool
word_is(const unsigned char *p, size_t len, const char *word)
{
	if (strlen(word) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (ascii_lower(p[i]) != (unsigned char) word[i])
			return false;
	return true;
}

/*
 * Scores one piece of ad copy, UTF-8 (the connection asks for
 * client_encoding UTF8, so the server sends it so whatever the database's
 * encoding).
 */
static void
score_copy(const char *copy, Score *s)
{
	const unsigned char *p = (const unsigned char *) copy;
	size_t		length = 0;
	bool		has_banned[NBANNED] = {false};
	int			cta = -1;		/* index of the first call to action present */

	/*
	 * length in code points: count every byte that does not continue a
	 * UTF-8 sequence (10xxxxxx), so "é" (2 bytes) and an emoji (4) count 1
	 */
	for (const unsigned char *q = p; *q; q++)
		if ((*q & 0xC0) != 0x80)
			length++;

	/* the words: maximal runs of word bytes */
	while (*p)
	{
		const unsigned char *start;

		if (!is_word_byte(*p))
		{
			p++;
			continue;
		}
		start = p;
		while (is_word_byte(*p))
			p++;
		for (int i = 0; i < NBANNED; i++)
			if (word_is(start, p - start, banned[i].word))
				has_banned[i] = true;
		for (int i = 0; i < NCTA; i++)
			if (word_is(start, p - start, calls_to_action[i].word) &&
				(cta < 0 || i < cta))
				cta = i;
	}

	s->score = 50;
	s->nreasons = 0;
	if (length < 20)
	{
		s->score -= 20;
		s->reasons[s->nreasons++] = "too_short";
	}
	else if (length > 150)
	{
		s->score -= 10;
		s->reasons[s->nreasons++] = "too_long";
	}
	else
	{
		s->score += 10;
		s->reasons[s->nreasons++] = "good_length";
	}
	for (int i = 0; i < NBANNED; i++)
		if (has_banned[i])
		{
			s->score -= 25;
			s->reasons[s->nreasons++] = banned[i].reason;
		}
	if (cta >= 0)
	{
		s->score += 20;
		s->reasons[s->nreasons++] = calls_to_action[cta].reason;
	}
	else
	{
		s->score -= 10;
		s->reasons[s->nreasons++] = "no_call_to_action";
	}
	if (s->score < 0)
		s->score = 0;
	if (s->score > 100)
		s->score = 100;
}

/*
 * The result as JSON text, for jq_ack's jsonb parameter.  Built here rather
 * than with a JSON library: every piece is a number or one of the fixed
 * [a-z_:] reasons above, so nothing needs escaping.
 */
static void
format_result(const Score *s, char *buf, size_t size)
{
	size_t		n;

	n = (size_t) snprintf(buf, size, "{\"score\": %d, \"reasons\": [", s->score);
	for (int i = 0; i < s->nreasons && n < size; i++)
		n += (size_t) snprintf(buf + n, size - n, "%s\"%s\"",
							   i > 0 ? ", " : "", s->reasons[i]);
	if (n < size)
		snprintf(buf + n, size - n, "], \"worker\": \"%s\"}", LANG);
}


/* --- options ---------------------------------------------------------------- */

typedef struct Options
{
	const char *queue;
	int			batch;
	int			lease_seconds;
	int			work_ms;
	double		poll_seconds;
	double		exit_when_idle;
} Options;

static void
usage(int status, const char *msg)
{
	/* --help is an answer (stdout), a bad option an error (stderr) */
	FILE	   *out = status == 0 ? stdout : stderr;

	if (msg)
		fprintf(out, "[" LANG "] %s\n", msg);
	fprintf(out,
			"usage: worker QUEUE [--batch N] [--lease-seconds N] [--work-ms N] "
			"[--poll-seconds S] [--exit-when-idle S]\n"
			"  (or JQ_QUEUE, JQ_BATCH, JQ_LEASE_SECONDS, JQ_WORK_MS, "
			"JQ_POLL_SECONDS, JQ_EXIT_WHEN_IDLE; libpq's PG* variables "
			"for the connection)\n");
	exit(status);
}

static bool
parse_int(const char *s, int *out)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < INT_MIN || v > INT_MAX)
		return false;
	*out = (int) v;
	return true;
}

static bool
parse_seconds(const char *s, double *out)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0)
		return false;
	*out = v;
	return true;
}

/*
 * Sets the option called name ("--batch", or "JQ_BATCH" for the
 * environment) to value; false if name is not an option.
 */
static bool
set_option(Options *o, const char *name, const char *value)
{
	static const struct
	{
		const char *flag;
		const char *env;
	}			names[] = {
		{"--batch", "JQ_BATCH"},
		{"--lease-seconds", "JQ_LEASE_SECONDS"},
		{"--work-ms", "JQ_WORK_MS"},
		{"--poll-seconds", "JQ_POLL_SECONDS"},
		{"--exit-when-idle", "JQ_EXIT_WHEN_IDLE"},
	};
	int			which = -1;
	bool		ok = false;
	char		msg[200];

	for (int i = 0; i < (int) (sizeof(names) / sizeof(names[0])); i++)
		if (strcmp(name, names[i].flag) == 0 || strcmp(name, names[i].env) == 0)
			which = i;
	if (which < 0)
		return false;
	if (value == NULL)
	{
		snprintf(msg, sizeof(msg), "%s needs a value", name);
		usage(2, msg);
	}
	switch (which)
	{
		case 0:
			ok = parse_int(value, &o->batch);
			break;
		case 1:
			ok = parse_int(value, &o->lease_seconds);
			break;
		case 2:
			ok = parse_int(value, &o->work_ms);
			break;
		case 3:
			ok = parse_seconds(value, &o->poll_seconds);
			break;
		case 4:
			ok = parse_seconds(value, &o->exit_when_idle);
			break;
	}
	if (!ok)
	{
		snprintf(msg, sizeof(msg), "%s: \"%s\" is not %s", name, value,
				 which <= 2 ? "a whole number" : "a number of seconds, e.g. 1 or 0.5");
		usage(2, msg);
	}
	return true;
}

/* [a-z][a-z0-9_]{0,47}: what jq_create_queue accepts, and safe in LISTEN */
static bool
valid_queue_name(const char *s)
{
	size_t		len = strlen(s);

	if (len < 1 || len > 48 || !(s[0] >= 'a' && s[0] <= 'z'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
			  s[i] == '_'))
			return false;
	return true;
}

static void
parse_options(int argc, char **argv, Options *o)
{
	static const char *const env_names[] = {
		"JQ_BATCH", "JQ_LEASE_SECONDS", "JQ_WORK_MS", "JQ_POLL_SECONDS",
		"JQ_EXIT_WHEN_IDLE",
	};
	const char *q;

	o->batch = 10;
	o->lease_seconds = 60;
	o->work_ms = 0;
	o->poll_seconds = 10;
	o->exit_when_idle = 0;
	q = getenv("JQ_QUEUE");
	o->queue = (q && *q) ? q : NULL;

	/* the environment first, so that the command line wins; "" is unset */
	for (int i = 0; i < (int) (sizeof(env_names) / sizeof(env_names[0])); i++)
	{
		const char *v = getenv(env_names[i]);

		if (v && *v)
			set_option(o, env_names[i], v);
	}

	for (int i = 1; i < argc; i++)
	{
		const char *arg = argv[i];

		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
			usage(0, "pgjq example worker: scores ad copy");
		if (strncmp(arg, "--", 2) == 0)
		{
			char		name[64];
			const char *eq = strchr(arg, '=');
			const char *value;
			char		msg[100];

			/* --name=value or --name value */
			if (eq)
			{
				snprintf(name, sizeof(name), "%.*s", (int) (eq - arg), arg);
				value = eq + 1;
			}
			else
			{
				snprintf(name, sizeof(name), "%s", arg);
				value = i + 1 < argc ? argv[++i] : NULL;
			}
			if (!set_option(o, name, value))
			{
				snprintf(msg, sizeof(msg), "unknown option %.60s", name);
				usage(2, msg);
			}
		}
		else if (arg[0] == '-')
		{
			char		msg[100];

			snprintf(msg, sizeof(msg), "unknown option %.60s", arg);
			usage(2, msg);
		}
		else
			o->queue = arg;
	}

	if (o->queue == NULL || !valid_queue_name(o->queue))
		usage(2, "a queue name is required: a lowercase letter, then [a-z0-9_], at most 48");
	/* the bounds jq_dequeue and jq_extend enforce, reported before connecting */
	if (o->batch < 1 || o->batch > 10000 ||
		o->lease_seconds < 1 || o->lease_seconds > 86400 || o->work_ms < 0)
		usage(2, "--batch must be 1..10000, --lease-seconds 1..86400, --work-ms not negative");
}


/* --- signals ------------------------------------------------------------------ */

static volatile sig_atomic_t stop_signal = 0;

/*
 * A self-pipe: the handler writes a byte, and the wait for a notification
 * watches the read end too.  A flag alone would leave a race: a signal that
 * lands between the check of the flag and select() would not end the wait,
 * and the worker would sleep a whole --poll-seconds before stopping.
 */
static int	wake_pipe[2] = {-1, -1};

static void
handle_stop(int signo)
{
	/* fixed text and write(2): stdio is not async-signal-safe */
	static const char term_msg[] = "[" LANG "] got SIGTERM, stopping after the current job\n";
	static const char int_msg[] = "[" LANG "] got SIGINT, stopping after the current job\n";
	int			save_errno = errno;
	ssize_t		rc;

	stop_signal = signo;
	rc = write(wake_pipe[1], "x", 1);	/* a full pipe is awake already */
	if (signo == SIGTERM)
		rc = write(STDERR_FILENO, term_msg, sizeof(term_msg) - 1);
	else
		rc = write(STDERR_FILENO, int_msg, sizeof(int_msg) - 1);
	(void) rc;
	errno = save_errno;
}

static void
setup_signals(void)
{
	struct sigaction sa;

	if (pipe(wake_pipe) != 0)
	{
		fprintf(stderr, "[" LANG "] pipe: %s\n", strerror(errno));
		exit(1);
	}
	for (int i = 0; i < 2; i++)
	{
		/* non-blocking: the handler must never block, nor the drain */
		fcntl(wake_pipe[i], F_SETFL, fcntl(wake_pipe[i], F_GETFL) | O_NONBLOCK);
		fcntl(wake_pipe[i], F_SETFD, FD_CLOEXEC);
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handle_stop;
	sigemptyset(&sa.sa_mask);
	/* restart what can be restarted: select() returns EINTR regardless */
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

static void
drain_wake_pipe(void)
{
	char		buf[64];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/* true once a stop signal came */
static inline bool
stopping(void)
{
	return stop_signal != 0;
}


/* --- the worker ------------------------------------------------------------- */

static void
log_line(const char *fmt,...)
{
	char		buf[2048];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* one write per line, so that lines of several workers do not mix */
	fprintf(stderr, "[" LANG "] %s\n", buf);
}

/*
 * Microseconds on the monotonic clock.  jqc_now_us() reads CLOCK_REALTIME,
 * which the benchmark needs to compare with the server's timestamps; lease
 * deadlines need a clock that NTP cannot step.
 */
static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct Job
{
	/* text as the server sent it, passed back as parameters as is */
	const char *id;
	const char *token;
	const char *attempt;
	const char *copy;			/* NULL: the payload has no "copy" string */
	bool		held;			/* ours until acked, failed or lost */
	int64_t		renewed_us;		/* lease granted or last extended, mono_us() */
} Job;

typedef struct Worker
{
	Options		opt;
	jqc_client	client;
	char		batch_text[16]; /* the options, as statement parameters */
	char		lease_text[16];
	Job		   *jobs;			/* the batch in hand: opt.batch slots */
	int			njobs;
	long		acked;
	long		failed;
	long		extended;
	long		lost;
} Worker;

/*
 * The statements.  jq_dequeue's caller gets the payload's "copy" string
 * from the server rather than the payload: then this worker needs no JSON
 * parser.  payload -> 'copy' is NULL for an array payload or a missing key,
 * and jsonb_typeof() tells a string from a number, null, object or array:
 * the same "is it a string" test as the other workers make.
 */
static const struct
{
	const char *name;
	const char *sql;
	int			nparams;
}			statements[] = {
	{"jq_dequeue",
		"SELECT job_id, lease_token, attempt,"
		"       CASE WHEN jsonb_typeof(payload -> 'copy') = 'string'"
		"            THEN payload ->> 'copy' END"
		"  FROM jq.jq_dequeue($1::text, $2::integer, $3::integer)", 3},
	{"jq_ack", "SELECT jq.jq_ack($1::bigint, $2::bigint, $3::jsonb)", 3},
	{"jq_fail",
		"SELECT jq.jq_fail($1::bigint, $2::bigint, $3::text,"
		"               retry_in => $4::interval, permanent => $5::boolean)", 5},
	{"jq_extend", "SELECT jq.jq_extend($1::bigint, $2::bigint, $3::integer)", 3},
};

/* the server's message for a failed statement, on one line */
static void
error_text(PGconn *conn, PGresult *res, char *buf, size_t size)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	size_t		len;

	snprintf(buf, size, "%s", msg ? msg : PQerrorMessage(conn));
	len = strlen(buf);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	if (len == 0)
		snprintf(buf, size, "unknown error");
}

static void
prepare_statements(Worker *w)
{
	for (int i = 0; i < (int) (sizeof(statements) / sizeof(statements[0])); i++)
	{
		PGresult   *res = PQprepare(w->client.conn, statements[i].name,
									statements[i].sql, statements[i].nparams, NULL);

		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			char		err[512];

			error_text(w->client.conn, res, err, sizeof(err));
			log_line("cannot prepare %s: %s", statements[i].name, err);
			exit(1);
		}
		PQclear(res);
	}
}

/*
 * Runs a prepared statement (autocommit: each its own transaction).  When
 * the server reports an error and the session is fine, returns NULL with
 * the message in err: for the job in hand that is a retryable failure.  A
 * lost connection ends the worker (exit 1): there is nobody to report to,
 * and pgjq's background worker puts the leased jobs back when their leases
 * expire.
 */
static PGresult *
exec_stmt(Worker *w, const char *name, int nparams, const char *const *params,
		  char *err, size_t errsize)
{
	PGconn	   *conn = w->client.conn;
	PGresult   *res = PQexecPrepared(conn, name, nparams, params, NULL, NULL, 0);

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		return res;
	error_text(conn, res, err, errsize);
	PQclear(res);
	if (PQstatus(conn) == CONNECTION_BAD)
	{
		log_line("connection lost (%s), exiting", err);
		exit(1);
	}
	return NULL;
}

/* jq_fail; retry_in NULL: the queue's backoff decides */
static void
fail_job(Worker *w, Job *job, const char *error, bool permanent,
		 const char *retry_in)
{
	const char *params[5] = {job->id, job->token, error, retry_in,
	permanent ? "true" : "false"};
	char		err[512];
	PGresult   *res = exec_stmt(w, "jq_fail", 5, params, err, sizeof(err));

	if (res == NULL)
	{
		/* not even the failure can be recorded: leave it to the lease expiry */
		log_line("job %s: jq_fail failed (%s), exiting", job->id, err);
		exit(1);
	}
	w->failed++;
	log_line("job %s failed (%s): now %s", job->id, error,
			 PQgetisnull(res, 0, 0) ? "not ours any more" : PQgetvalue(res, 0, 0));
	PQclear(res);
	job->held = false;
}

/*
 * Extends the lease of every held job of the batch once more than a third
 * of it has passed since it was granted or last extended: jobs later in the
 * batch are ours too while we work on an earlier one.  A NULL from
 * jq_extend means the lease is lost or the job was cancelled: drop the job.
 * Returns false, with the error in err, when a jq_extend failed.
 */
static bool
extend_if_due(Worker *w, char *err, size_t errsize)
{
	int64_t		third_us = (int64_t) w->opt.lease_seconds * 1000000 / 3;

	for (int i = 0; i < w->njobs; i++)
	{
		Job		   *job = &w->jobs[i];
		const char *params[3] = {job->id, job->token, w->lease_text};
		int64_t		started;
		PGresult   *res;

		if (!job->held || mono_us() - job->renewed_us <= third_us)
			continue;
		/* the new lease runs from before the call, to be on the safe side */
		started = mono_us();
		res = exec_stmt(w, "jq_extend", 3, params, err, errsize);
		if (res == NULL)
			return false;
		if (PQgetisnull(res, 0, 0))
		{
			w->lost++;
			log_line("job %s: lease lost or job cancelled, dropping it", job->id);
			job->held = false;
		}
		else
		{
			w->extended++;
			job->renewed_us = started;
			log_line("job %s: lease extended to %s", job->id, PQgetvalue(res, 0, 0));
		}
		PQclear(res);
	}
	return true;
}

/* sleeps --work-ms in slices, extending the held leases as it goes */
static bool
simulate_work(Worker *w, char *err, size_t errsize)
{
	int64_t		end = mono_us() + (int64_t) w->opt.work_ms * 1000;

	for (;;)
	{
		int64_t		left;

		if (!extend_if_due(w, err, errsize))
			return false;
		left = end - mono_us();
		if (left <= 0)
			return true;
		jqc_sleep_us(left < 50000 ? left : 50000);
	}
}

/* works through one batch from jq_dequeue, one job at a time */
static void
work_batch(Worker *w, PGresult *batch, int64_t leased_at)
{
	w->njobs = PQntuples(batch);
	if (w->njobs > w->opt.batch)	/* never: jq_dequeue honours max_jobs */
		w->njobs = w->opt.batch;
	for (int i = 0; i < w->njobs; i++)
	{
		Job		   *job = &w->jobs[i];

		job->id = PQgetvalue(batch, i, 0);
		job->token = PQgetvalue(batch, i, 1);
		job->attempt = PQgetvalue(batch, i, 2);
		job->copy = PQgetisnull(batch, i, 3) ? NULL : PQgetvalue(batch, i, 3);
		job->held = true;
		job->renewed_us = leased_at;
	}

	for (int i = 0; i < w->njobs; i++)
	{
		Job		   *job = &w->jobs[i];
		char		err[512];
		char		error[600];
		char		result[512];
		const char *params[3];
		Score		s;
		PGresult   *res;

		if (!job->held)
			continue;			/* its lease was lost while we worked on another */
		if (stopping())
		{
			/*
			 * give back what we have not started: ready again at once (it
			 * counts as an attempt, as an expired lease would)
			 */
			for (int j = i; j < w->njobs; j++)
				if (w->jobs[j].held)
					fail_job(w, &w->jobs[j], "worker shutting down", false, "0");
			break;
		}
		if (job->copy == NULL)
		{
			/* malformed: no retry will fix it, so a dead letter at once */
			fail_job(w, job, "payload has no \"copy\" string", true, NULL);
			continue;
		}
		if (!simulate_work(w, err, sizeof(err)))
		{
			/* anything unexpected: a retryable failure with the error text */
			snprintf(error, sizeof(error), "worker.c: %s", err);
			fail_job(w, job, error, false, NULL);
			continue;
		}
		if (!job->held)
			continue;

		score_copy(job->copy, &s);
		format_result(&s, result, sizeof(result));
		params[0] = job->id;
		params[1] = job->token;
		params[2] = result;
		res = exec_stmt(w, "jq_ack", 3, params, err, sizeof(err));
		if (res == NULL)
		{
			snprintf(error, sizeof(error), "worker.c: %s", err);
			fail_job(w, job, error, false, NULL);
			continue;
		}
		if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
		{
			w->acked++;
			log_line("job %s (attempt %s) scored %d", job->id, job->attempt, s.score);
		}
		else
		{
			w->lost++;
			log_line("job %s: ack refused, the lease was lost; result dropped", job->id);
		}
		PQclear(res);
		job->held = false;
	}
	w->njobs = 0;				/* the batch's strings die with its PGresult */
}

/* drops the notifications libpq has read; returns how many there were */
static int
take_notifies(Worker *w)
{
	PGnotify   *n;
	int			got = 0;

	while ((n = PQnotifies(w->client.conn)) != NULL)
	{
		got++;
		PQfreemem(n);
	}
	return got;
}

/*
 * Seconds (an option) to microseconds, at most INT_MAX ms (24 days): the
 * longest wait jqc_wait_notify_fd() takes, and a bound that keeps the
 * conversion of a huge double defined.
 */
static int64_t
seconds_to_us(double s)
{
	const double max_us = (double) INT_MAX * 1000;

	return (int64_t) (s * 1e6 < max_us ? s * 1e6 : max_us);
}

static void
run(Worker *w)
{
	const char *params[3] = {w->opt.queue, w->batch_text, w->lease_text};
	int64_t		idle_since = mono_us();

	while (!stopping())
	{
		int64_t		leased_at;
		int64_t		idle;
		int64_t		timeout_us;
		PGresult   *res;
		char		err[512];

		/* a wakeup that came before this dequeue is answered by it */
		take_notifies(w);
		leased_at = mono_us();
		res = exec_stmt(w, "jq_dequeue", 3, params, err, sizeof(err));
		if (res == NULL)
		{
			log_line("jq_dequeue failed (%s), exiting", err);
			exit(1);
		}
		if (PQntuples(res) > 0)
		{
			work_batch(w, res, leased_at);
			PQclear(res);
			idle_since = mono_us();
			continue;
		}
		PQclear(res);

		/* a wakeup that came in during the dequeue: look again at once */
		if (!PQconsumeInput(w->client.conn))
		{
			log_line("connection lost (%s), exiting", PQerrorMessage(w->client.conn));
			exit(1);
		}
		if (take_notifies(w) > 0)
			continue;

		idle = mono_us() - idle_since;
		timeout_us = seconds_to_us(w->opt.poll_seconds);
		if (w->opt.exit_when_idle > 0)
		{
			int64_t		limit_us = seconds_to_us(w->opt.exit_when_idle);

			if (idle >= limit_us)
			{
				log_line("idle for %.1f s, exiting", idle / 1e6);
				break;
			}
			if (limit_us - idle < timeout_us)
				timeout_us = limit_us - idle;
		}
		/* whole milliseconds, rounded up: waking early would only spin */
		jqc_wait_notify_fd(&w->client,
						   (int) (timeout_us / 1000 + (timeout_us % 1000 != 0)),
						   wake_pipe[0]);
		drain_wake_pipe();
	}
	log_line("done: %ld acked, %ld failed, %ld lease extensions, %ld leases lost",
			 w->acked, w->failed, w->extended, w->lost);
	jqc_close(&w->client);
}

int
main(int argc, char **argv)
{
	Worker		w;

	memset(&w, 0, sizeof(w));
	parse_options(argc, argv, &w.opt);
	snprintf(w.batch_text, sizeof(w.batch_text), "%d", w.opt.batch);
	snprintf(w.lease_text, sizeof(w.lease_text), "%d", w.opt.lease_seconds);
	w.jobs = calloc(w.opt.batch, sizeof(Job));
	if (w.jobs == NULL)
	{
		fprintf(stderr, "[" LANG "] out of memory\n");
		return 1;
	}

	/* before connecting: a SIGTERM from now on is a clean stop */
	setup_signals();

	/* jqclient's own messages (connection failure, lost connection) */
	jqc_progname = "[" LANG "] error";

	/*
	 * libpq reads PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ...; the
	 * copy must come as UTF-8 for score_copy() to count characters
	 */
	jqc_connect_plain(&w.client,
					  "application_name=pgjq-worker-" LANG " client_encoding=UTF8",
					  w.opt.queue);
	jqc_listen(&w.client);
	prepare_statements(&w);
	log_line("listening on %s (batch %d, lease %d s)",
			 w.client.channel, w.opt.batch, w.opt.lease_seconds);

	run(&w);
	free(w.jobs);
	return 0;
}
