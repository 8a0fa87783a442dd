/*
 * jqclient.h: a small libpq client for pgjq and for the plain-SQL "floor"
 * queue the benchmark compares it with.  One jqc_client per connection
 * (libpq connections must not be shared between threads).
 *
 * Both back ends expose the same operations through prepared statements
 * with the same parameters:
 *   enqueue       ($1 payload jsonb, $2 priority)        -> id
 *   enqueue batch ($1 payloads jsonb[], $2 priority)     -> one id per row
 *   dequeue       ($1 max jobs)                          -> id, token, payload
 *   ack           ($1 id, $2 token)
 *   ack batch     ($1 ids bigint[], $2 tokens bigint[])
 * For the floor the token is always 0 and ignored.
 */
#ifndef JQCLIENT_H
#define JQCLIENT_H

#include <stdint.h>
#include <libpq-fe.h>

typedef enum { JQC_PGJQ, JQC_FLOOR } jqc_backend;

typedef struct jqc_client
{
	PGconn	   *conn;
	jqc_backend backend;
	char		queue[64];		/* pgjq queue name */
	char		channel[80];	/* LISTEN channel */
	int			floor_notify;	/* floor: NOTIFY inside the enqueue statement */
} jqc_client;

typedef struct jqc_job
{
	int64_t		id;
	int64_t		token;
} jqc_job;

/* microseconds, CLOCK_REALTIME (the server runs on the same machine) */
int64_t		jqc_now_us(void);
void		jqc_sleep_us(int64_t us);

/* the program name that starts the error messages (default "jqbench") */
extern const char *jqc_progname;

/* connect and prepare the statements; exits the process on error */
void		jqc_connect(jqc_client *c, const char *conninfo, jqc_backend backend,
						const char *queue, int floor_notify);

/*
 * connect to pgjq's queue (for jqc_listen and jqc_wait_notify) without
 * preparing the statements above, for a client that prepares its own
 * (docs/workers/c); exits the process on error
 */
void		jqc_connect_plain(jqc_client *c, const char *conninfo, const char *queue);

void		jqc_close(jqc_client *c);

/* plain statement without results; exits on error */
void		jqc_exec(jqc_client *c, const char *sql);

/* LISTEN on the client's channel */
void		jqc_listen(jqc_client *c);

/*
 * Waits up to timeout_ms for a notification on the connection; returns the
 * number of notifications consumed (0 on timeout).  Notifications already
 * buffered by libpq count, so a wakeup that arrived during the last
 * dequeue is not lost.
 */
int			jqc_wait_notify(jqc_client *c, int timeout_ms);

/*
 * The same, and also returns (with the notifications consumed, often 0) as
 * soon as wake_fd is readable, without reading it: the read end of a
 * self-pipe that a signal handler writes to, so that a signal arriving just
 * before the wait still ends it.  wake_fd < 0: none.
 */
int			jqc_wait_notify_fd(jqc_client *c, int timeout_ms, int wake_fd);

/* one job in its own transaction; returns its id */
int64_t		jqc_enqueue(jqc_client *c, const char *payload, int priority);

/*
 * n payloads in one statement (one transaction); writes the n ids to ids
 * and returns how many came back.  arraybuf is scratch space the caller
 * owns (grown as needed).
 */
int			jqc_enqueue_batch(jqc_client *c, const char *const *payloads, int n,
							  int priority, int64_t *ids, char **arraybuf,
							  size_t *arraycap);

/* lease up to k jobs; writes them to jobs, returns how many */
int			jqc_dequeue(jqc_client *c, int k, jqc_job *jobs);

/*
 * the same, waiting up to wait_ms for jobs when there are none: with
 * jq_dequeue's wait (procedure 0) or CALL jq_wait_dequeue (procedure 1)
 */
int			jqc_dequeue_wait(jqc_client *c, int k, int wait_ms, int procedure,
							 jqc_job *jobs);

/* ack one job in its own transaction; returns 1 when acked */
int			jqc_ack(jqc_client *c, const jqc_job *job);

/* ack n jobs in one statement; returns how many were acked */
int			jqc_ack_batch(jqc_client *c, const jqc_job *jobs, int n);

#endif
