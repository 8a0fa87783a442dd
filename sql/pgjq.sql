/*
 * pgjq install script.  Edit this file only; the Makefile copies it to the
 * versioned script pgjq--<version>.sql.  Released scripts and the frozen
 * pgjq--A--B.sql upgrade deltas are never edited.
 *
 * Layout: tables, sequences and views live in schema jq (the extension's
 * schema, created by CREATE EXTENSION from pgjq.control).  The SQL API, the
 * jq_* functions, lives in schema public, so that a worker or producer with
 * the default search_path calls jq_enqueue(...) with no schema gymnastics;
 * the jq_ prefix keeps them apart from the application's own functions.
 *
 * Every function that touches the tables is SECURITY DEFINER with
 * search_path pinned to pg_catalog, pg_temp, and all SQL inside is
 * schema-qualified.  PUBLIC gets nothing; four NOLOGIN roles carry the
 * privileges (see the GRANT section at the end).
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pgjq" to load this file. \quit

/* ------------------------------------------------------------------------
 * Roles.  Roles are cluster-wide: create the missing ones, keep existing
 * ones (another database may have made them).  DROP EXTENSION leaves them.
 * ------------------------------------------------------------------------ */
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['jq_producer', 'jq_worker', 'jq_admin', 'jq_reader']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$roles$;

/* ------------------------------------------------------------------------
 * Tables
 * ------------------------------------------------------------------------ */

-- Queues and their settings.  Read on every enqueue and dequeue (one index
-- probe by name), written only by the admin functions.
CREATE TABLE jq.queue (
    queue_id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    lease_seconds     integer NOT NULL DEFAULT 300,
    max_attempts      integer NOT NULL DEFAULT 5,
    backoff_base      interval NOT NULL DEFAULT '2 seconds',
    backoff_cap       interval NOT NULL DEFAULT '10 minutes',
    result_retention  interval NOT NULL DEFAULT '7 days',
    max_payload_bytes integer NOT NULL DEFAULT 1048576,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- backstops only: jq_create_queue/jq_alter_queue raise the friendly errors
    CONSTRAINT queue_name_check CHECK (name ~ '^[a-z][a-z0-9_]{0,47}$'),
    CONSTRAINT queue_lease_check CHECK (lease_seconds BETWEEN 1 AND 86400),
    CONSTRAINT queue_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT queue_backoff_check CHECK (backoff_base > '0' AND backoff_cap >= backoff_base),
    CONSTRAINT queue_retention_check CHECK (result_retention >= '0'),
    CONSTRAINT queue_payload_check CHECK (max_payload_bytes BETWEEN 16 AND 67108864)
);

COMMENT ON TABLE jq.queue IS 'pgjq queues and their settings; change them with jq_create_queue, jq_alter_queue and jq_drop_queue';

CREATE SEQUENCE jq.job_id_seq AS bigint;

/*
 * The hot table: only jobs that are not finished (ready, scheduled, leased).
 * A job leaves it at ack (to jq.job_result), so dequeue never walks finished
 * rows.  state is a one-byte code:
 *   'r' ready: may be dequeued now
 *   's' scheduled: run_at in the future (delayed job or retry backoff)
 *   'l' leased: a worker holds it until lease_expires_at
 * No foreign key to jq.queue: the RI check would take a KEY SHARE lock on
 * the queue row in every enqueue and serialise producers on it.
 */
CREATE TABLE jq.job (
    id               bigint NOT NULL DEFAULT pg_catalog.nextval('jq.job_id_seq'),
    queue_id         integer NOT NULL,
    state            "char" NOT NULL,
    priority         smallint NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    lease_token      bigint,
    run_at           timestamptz NOT NULL,
    enqueued_at      timestamptz NOT NULL,
    started_at       timestamptz,
    lease_expires_at timestamptz,
    payload          jsonb NOT NULL,
    CONSTRAINT job_pkey PRIMARY KEY (id),
    CONSTRAINT job_state_check CHECK (state IN ('r', 's', 'l')),
    CONSTRAINT job_lease_check CHECK ((state = 'l') = (lease_expires_at IS NOT NULL))
) WITH (fillfactor = 90);

ALTER SEQUENCE jq.job_id_seq OWNED BY jq.job.id;

COMMENT ON TABLE jq.job IS 'pgjq unfinished jobs (ready, scheduled, leased); use jq_result() or the views rather than reading it directly';

-- dequeue: the head of this index is the next job to hand out; it holds
-- ready jobs only, so leased, scheduled and finished jobs are never walked
CREATE INDEX job_ready_idx ON jq.job (queue_id, priority DESC, run_at, id)
    WHERE state = 'r';
-- promotion of scheduled jobs whose run_at has come
CREATE INDEX job_scheduled_idx ON jq.job (queue_id, run_at)
    WHERE state = 's';
-- lease reclaim: leased jobs by expiry (few rows: only jobs in flight).
-- lease_expires_at is set exactly while a job is leased; the predicate is
-- on it rather than on state so that the ack's "state = 'l'" test never
-- lures the planner into walking this index instead of the primary key.
CREATE INDEX job_leased_idx ON jq.job (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;

/*
 * Finished jobs and their results.  Written once at ack; read by
 * jq_result(); purged by result retention.
 */
CREATE TABLE jq.job_result (
    job_id      bigint NOT NULL,
    queue_id    integer NOT NULL,
    state       "char" NOT NULL,
    priority    smallint NOT NULL,
    attempts    integer NOT NULL,
    result      jsonb,
    run_at      timestamptz NOT NULL,
    enqueued_at timestamptz NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL,
    CONSTRAINT job_result_pkey PRIMARY KEY (job_id),
    CONSTRAINT job_result_state_check CHECK (state IN ('d'))
);

COMMENT ON TABLE jq.job_result IS 'pgjq finished jobs with their results, kept for the queue''s result_retention';

CREATE INDEX job_result_finished_idx ON jq.job_result (queue_id, finished_at);

-- keep queued jobs, settings and results in pg_dump output
SELECT pg_catalog.pg_extension_config_dump('jq.queue', '');
SELECT pg_catalog.pg_extension_config_dump('jq.job', '');
SELECT pg_catalog.pg_extension_config_dump('jq.job_result', '');
SELECT pg_catalog.pg_extension_config_dump('jq.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('jq.queue_queue_id_seq', '');

/* ------------------------------------------------------------------------
 * Internal helpers
 * ------------------------------------------------------------------------ */

-- Raises 42602 unless name is a valid queue name.  The same C check guards
-- the hot path, so the rule lives in one place.
CREATE FUNCTION jq.check_queue_name(name text)
RETURNS void
LANGUAGE C PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_check_queue_name_sql';

-- Text name of a state code, as jq_result() and the views show it.
CREATE FUNCTION jq.state_name(state "char", run_at timestamptz)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE state
        WHEN 'r' THEN 'ready'
        -- a scheduled job whose time has come is ready: the next dequeue
        -- promotes it
        WHEN 's' THEN CASE WHEN run_at <= now() THEN 'ready' ELSE 'scheduled' END
        WHEN 'l' THEN 'leased'
        WHEN 'd' THEN 'succeeded'
    END
$$;

-- Validates queue settings with friendly errors; used by create and alter.
CREATE FUNCTION jq.check_queue_settings(q jq.queue)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF q.lease_seconds IS NULL OR q.lease_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'lease_seconds must be between 1 and 86400'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.lease_seconds::text, 'NULL')),
                  HINT = 'Long jobs should extend their lease with jq_extend rather than take a long one.';
    END IF;
    IF q.max_attempts IS NULL OR q.max_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 1000'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.max_attempts::text, 'NULL'));
    END IF;
    IF q.backoff_base IS NULL OR q.backoff_base <= interval '0' THEN
        RAISE EXCEPTION 'backoff_base must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.backoff_base::text, 'NULL'));
    END IF;
    IF q.backoff_cap IS NULL OR q.backoff_cap < q.backoff_base THEN
        RAISE EXCEPTION 'backoff_cap must not be less than backoff_base'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got backoff_base %s and backoff_cap %s.',
                                  q.backoff_base, coalesce(q.backoff_cap::text, 'NULL'));
    END IF;
    IF q.result_retention IS NULL OR q.result_retention < interval '0' THEN
        RAISE EXCEPTION 'result_retention must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.result_retention::text, 'NULL'));
    END IF;
    IF q.max_payload_bytes IS NULL OR q.max_payload_bytes NOT BETWEEN 16 AND 67108864 THEN
        RAISE EXCEPTION 'max_payload_bytes must be between 16 and 67108864'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.max_payload_bytes::text, 'NULL'));
    END IF;
END
$$;

/* ------------------------------------------------------------------------
 * Queue management (jq_admin)
 * ------------------------------------------------------------------------ */

CREATE FUNCTION public.jq_create_queue(
    name text,
    lease_seconds integer DEFAULT 300,
    max_attempts integer DEFAULT 5,
    backoff_base interval DEFAULT '2 seconds',
    backoff_cap interval DEFAULT '10 minutes',
    result_retention interval DEFAULT '7 days',
    max_payload_bytes integer DEFAULT 1048576,
    if_not_exists boolean DEFAULT false)
RETURNS jq.queue
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q jq.queue;
BEGIN
    PERFORM jq.check_queue_name(jq_create_queue.name);

    SELECT * INTO q FROM jq.queue WHERE queue.name = jq_create_queue.name;
    IF FOUND THEN
        IF if_not_exists THEN
            RAISE NOTICE 'queue "%" already exists, skipping', jq_create_queue.name;
            RETURN q;
        END IF;
        RAISE EXCEPTION 'queue "%" already exists', jq_create_queue.name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use jq_alter_queue to change its settings, or pass if_not_exists => true.';
    END IF;

    q.name := jq_create_queue.name;
    q.lease_seconds := jq_create_queue.lease_seconds;
    q.max_attempts := jq_create_queue.max_attempts;
    q.backoff_base := jq_create_queue.backoff_base;
    q.backoff_cap := jq_create_queue.backoff_cap;
    q.result_retention := jq_create_queue.result_retention;
    q.max_payload_bytes := jq_create_queue.max_payload_bytes;
    PERFORM jq.check_queue_settings(q);

    BEGIN
        INSERT INTO jq.queue (name, lease_seconds, max_attempts, backoff_base,
                              backoff_cap, result_retention, max_payload_bytes)
        VALUES (q.name, q.lease_seconds, q.max_attempts, q.backoff_base,
                q.backoff_cap, q.result_retention, q.max_payload_bytes)
        RETURNING * INTO q;
    EXCEPTION WHEN unique_violation THEN
        -- a concurrent jq_create_queue won the race
        IF if_not_exists THEN
            SELECT * INTO q FROM jq.queue WHERE queue.name = jq_create_queue.name;
            RETURN q;
        END IF;
        RAISE EXCEPTION 'queue "%" already exists', jq_create_queue.name
            USING ERRCODE = 'duplicate_object';
    END;
    RETURN q;
END
$$;

COMMENT ON FUNCTION public.jq_create_queue IS 'create a pgjq queue with its settings';

-- NULL arguments leave a setting unchanged.
CREATE FUNCTION public.jq_alter_queue(
    name text,
    lease_seconds integer DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    backoff_base interval DEFAULT NULL,
    backoff_cap interval DEFAULT NULL,
    result_retention interval DEFAULT NULL,
    max_payload_bytes integer DEFAULT NULL)
RETURNS jq.queue
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q jq.queue;
BEGIN
    PERFORM jq.check_queue_name(jq_alter_queue.name);
    SELECT * INTO q FROM jq.queue WHERE queue.name = jq_alter_queue.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'queue "%" does not exist', jq_alter_queue.name
            USING ERRCODE = 'undefined_object',
                  HINT = format('Create it with jq_create_queue(%L).', jq_alter_queue.name);
    END IF;

    q.lease_seconds := coalesce(jq_alter_queue.lease_seconds, q.lease_seconds);
    q.max_attempts := coalesce(jq_alter_queue.max_attempts, q.max_attempts);
    q.backoff_base := coalesce(jq_alter_queue.backoff_base, q.backoff_base);
    q.backoff_cap := coalesce(jq_alter_queue.backoff_cap, q.backoff_cap);
    q.result_retention := coalesce(jq_alter_queue.result_retention, q.result_retention);
    q.max_payload_bytes := coalesce(jq_alter_queue.max_payload_bytes, q.max_payload_bytes);
    PERFORM jq.check_queue_settings(q);

    UPDATE jq.queue
       SET lease_seconds = q.lease_seconds,
           max_attempts = q.max_attempts,
           backoff_base = q.backoff_base,
           backoff_cap = q.backoff_cap,
           result_retention = q.result_retention,
           max_payload_bytes = q.max_payload_bytes
     WHERE queue_id = q.queue_id
    RETURNING * INTO q;
    RETURN q;
END
$$;

COMMENT ON FUNCTION public.jq_alter_queue IS 'change settings of a pgjq queue; NULL leaves a setting as it is';

/*
 * Drops a queue.  Refuses while it has unfinished jobs unless force; with
 * force, its jobs and results go too.  The queue row is locked first so a
 * concurrent drop or alter waits; enqueues that slip in between the check
 * and the delete are removed by the delete itself.
 */
CREATE FUNCTION public.jq_drop_queue(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer;
    live bigint;
BEGIN
    PERFORM jq.check_queue_name(jq_drop_queue.name);
    SELECT queue_id INTO qid FROM jq.queue WHERE queue.name = jq_drop_queue.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'queue "%" does not exist', jq_drop_queue.name
            USING ERRCODE = 'undefined_object';
    END IF;

    IF NOT coalesce(force, false) THEN
        SELECT count(*) INTO live FROM jq.job WHERE queue_id = qid;
        IF live > 0 THEN
            RAISE EXCEPTION 'queue "%" has unfinished jobs', jq_drop_queue.name
                USING ERRCODE = 'object_in_use',
                      DETAIL = format('%s jobs are ready, scheduled or leased.', live),
                      HINT = 'Drain the queue first, or pass force => true to drop its jobs too.';
        END IF;
    END IF;

    DELETE FROM jq.job WHERE queue_id = qid;
    DELETE FROM jq.job_result WHERE queue_id = qid;
    DELETE FROM jq.queue WHERE queue_id = qid;
END
$$;

COMMENT ON FUNCTION public.jq_drop_queue IS 'drop a pgjq queue; refuses while it has unfinished jobs unless force';

CREATE FUNCTION public.jq_list_queues()
RETURNS SETOF jq.queue
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM jq.queue ORDER BY name
$$;

COMMENT ON FUNCTION public.jq_list_queues IS 'list pgjq queues with their settings';

/* ------------------------------------------------------------------------
 * The hot path: C functions running kept SPI plans (src/)
 * ------------------------------------------------------------------------ */

CREATE FUNCTION public.jq_enqueue(
    queue text,
    payload jsonb,
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_enqueue';

COMMENT ON FUNCTION public.jq_enqueue IS 'enqueue one job in the caller''s transaction; returns its id';

CREATE FUNCTION public.jq_enqueue_batch(
    queue text,
    payloads jsonb[],
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL)
RETURNS bigint[]
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_enqueue_batch';

COMMENT ON FUNCTION public.jq_enqueue_batch IS 'enqueue many jobs in one call; returns their ids in the order of payloads';

CREATE FUNCTION public.jq_dequeue(
    queue text,
    max_jobs integer DEFAULT 1,
    lease_seconds integer DEFAULT NULL)
RETURNS TABLE (
    job_id bigint,
    lease_token bigint,
    attempt integer,
    priority integer,
    payload jsonb,
    enqueued_at timestamptz,
    lease_expires_at timestamptz)
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_dequeue';

COMMENT ON FUNCTION public.jq_dequeue IS 'lease up to max_jobs ready jobs, most urgent first';

CREATE FUNCTION public.jq_ack(
    job_id bigint,
    lease_token bigint,
    result jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_ack';

COMMENT ON FUNCTION public.jq_ack IS 'complete a leased job; false when the lease token is stale';

CREATE FUNCTION public.jq_ack_batch(
    job_ids bigint[],
    lease_tokens bigint[],
    results jsonb[] DEFAULT NULL)
RETURNS TABLE (job_id bigint, acked boolean)
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_ack_batch';

COMMENT ON FUNCTION public.jq_ack_batch IS 'complete many leased jobs in one call; one row per job, in input order';

/* ------------------------------------------------------------------------
 * Results
 * ------------------------------------------------------------------------ */

CREATE FUNCTION public.jq_result(job_id bigint)
RETURNS TABLE (
    job_id bigint,
    queue text,
    state text,
    result jsonb,
    attempts integer,
    priority integer,
    enqueued_at timestamptz,
    run_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT j.id, q.name, jq.state_name(j.state, j.run_at), NULL::jsonb,
           j.attempt, j.priority::integer, j.enqueued_at, j.run_at,
           j.started_at, NULL::timestamptz
      FROM jq.job j JOIN jq.queue q USING (queue_id)
     WHERE j.id = $1
    UNION ALL
    SELECT r.job_id, q.name, jq.state_name(r.state, NULL), r.result,
           r.attempts, r.priority::integer, r.enqueued_at, r.run_at,
           r.started_at, r.finished_at
      FROM jq.job_result r JOIN jq.queue q USING (queue_id)
     WHERE r.job_id = $1
$$;

COMMENT ON FUNCTION public.jq_result IS 'state, result, attempts and timestamps of a job; no row for an unknown id';

/* ------------------------------------------------------------------------
 * Privileges.  PUBLIC gets nothing; each role gets its own calls.
 *   jq_producer: enqueue, read results
 *   jq_worker:   dequeue, ack (and read results)
 *   jq_reader:   queue list and (later) stats views, never payloads
 *   jq_admin:    queue management, and everything the others can do
 * ------------------------------------------------------------------------ */
REVOKE ALL ON ALL TABLES IN SCHEMA jq FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA jq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA jq FROM PUBLIC;
REVOKE ALL ON FUNCTION
    public.jq_create_queue(text, integer, integer, interval, interval, interval, integer, boolean),
    public.jq_alter_queue(text, integer, integer, interval, interval, interval, integer),
    public.jq_drop_queue(text, boolean),
    public.jq_list_queues(),
    public.jq_enqueue(text, jsonb, integer, timestamptz),
    public.jq_enqueue_batch(text, jsonb[], integer, timestamptz),
    public.jq_dequeue(text, integer, integer),
    public.jq_ack(bigint, bigint, jsonb),
    public.jq_ack_batch(bigint[], bigint[], jsonb[]),
    public.jq_result(bigint)
FROM PUBLIC;

GRANT USAGE ON SCHEMA jq TO jq_producer, jq_worker, jq_admin, jq_reader;

GRANT EXECUTE ON FUNCTION
    public.jq_enqueue(text, jsonb, integer, timestamptz),
    public.jq_enqueue_batch(text, jsonb[], integer, timestamptz),
    public.jq_result(bigint)
TO jq_producer;

GRANT EXECUTE ON FUNCTION
    public.jq_dequeue(text, integer, integer),
    public.jq_ack(bigint, bigint, jsonb),
    public.jq_ack_batch(bigint[], bigint[], jsonb[]),
    public.jq_result(bigint)
TO jq_worker;

GRANT EXECUTE ON FUNCTION public.jq_list_queues() TO jq_reader;
GRANT SELECT ON jq.queue TO jq_reader;

GRANT EXECUTE ON FUNCTION
    public.jq_create_queue(text, integer, integer, interval, interval, interval, integer, boolean),
    public.jq_alter_queue(text, integer, integer, interval, interval, interval, integer),
    public.jq_drop_queue(text, boolean),
    public.jq_list_queues()
TO jq_admin;

-- jq_admin can do what the other roles can (skip memberships that another
-- database's CREATE EXTENSION already granted: roles are cluster-wide)
DO $grants$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['jq_producer', 'jq_worker', 'jq_reader']
    LOOP
        IF NOT pg_catalog.pg_has_role('jq_admin', r, 'MEMBER') THEN
            EXECUTE pg_catalog.format('GRANT %I TO jq_admin', r);
        END IF;
    END LOOP;
END
$grants$;
