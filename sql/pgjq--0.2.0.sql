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
    dead_letter_retention interval NOT NULL DEFAULT '30 days',
    idempotency_window interval NOT NULL DEFAULT '24 hours',
    -- alert thresholds on ready depth and oldest-ready age; NULL: no alert
    alert_depth_warning  bigint,
    alert_depth_critical bigint,
    alert_age_warning    interval,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- backstops only: jq_create_queue/jq_alter_queue raise the friendly errors
    CONSTRAINT queue_name_check CHECK (name ~ '^[a-z][a-z0-9_]{0,47}$'),
    CONSTRAINT queue_lease_check CHECK (lease_seconds BETWEEN 1 AND 86400),
    CONSTRAINT queue_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT queue_backoff_check CHECK (backoff_base > '0' AND backoff_cap >= backoff_base),
    CONSTRAINT queue_retention_check CHECK (result_retention >= '0'
                                            AND dead_letter_retention >= result_retention),
    CONSTRAINT queue_idempotency_check CHECK (idempotency_window >= '0'),
    CONSTRAINT queue_payload_check CHECK (max_payload_bytes BETWEEN 16 AND 67108864)
);

COMMENT ON TABLE jq.queue IS 'pgjq queues and their settings; change them with jq_create_queue, jq_alter_queue and jq_drop_queue';

-- Each backend caches the queues' settings (src/plans.c); any change of
-- jq.queue empties every backend's cache when it commits.
CREATE FUNCTION jq.queue_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgjq_queue_changed';

CREATE TRIGGER queue_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON jq.queue FOR EACH STATEMENT EXECUTE FUNCTION jq.queue_changed();

-- The queue's lock in exclusive mode, to the end of the transaction: waits
-- for the transactions that are adding jobs to the queue (they hold it in
-- share mode) and keeps new ones out.  Used by jq_drop_queue.
CREATE FUNCTION jq.lock_queue(queue_id integer)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'pgjq_lock_queue';

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
    -- set by jq_cancel on a leased job: its ack returns false, it is not retried
    cancel_requested boolean NOT NULL DEFAULT false,
    -- every failure: [{"attempt": n, "error": "...", "at": "..."}, ...]
    errors           jsonb,
    payload          jsonb NOT NULL,
    CONSTRAINT job_pkey PRIMARY KEY (id)
    -- Two invariants are checked by jq.count_trigger (src/stats.c) rather
    -- than by CHECK constraints, which the executor parses anew for every
    -- statement (5% of the CPU of an enqueue):
    --   state IN ('r', 's', 'l')
    --   (state = 'l') = (lease_expires_at IS NOT NULL)
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
    last_error  text,
    run_at      timestamptz NOT NULL,
    enqueued_at timestamptz NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL,
    CONSTRAINT job_result_pkey PRIMARY KEY (job_id),
    CONSTRAINT job_result_state_check CHECK (state IN ('d', 'c'))
);

COMMENT ON TABLE jq.job_result IS 'pgjq succeeded (d) and cancelled (c) jobs with their results, kept for the queue''s result_retention';

CREATE INDEX job_result_finished_idx ON jq.job_result (queue_id, finished_at);

/*
 * Dead letters: jobs that failed their last attempt, failed permanently, or
 * whose lease expired on the last attempt.  Plain SQL reads them; the
 * queue name is stored so that analysts need no join.
 * jq_redrive moves them back to jq.job under the same id, and lease_token
 * is kept so that the job's tokens keep growing across a redrive.
 */
CREATE TABLE jq.dead_letter (
    job_id      bigint NOT NULL,
    queue_id    integer NOT NULL,
    queue       text NOT NULL,
    priority    smallint NOT NULL,
    attempts    integer NOT NULL,
    payload     jsonb NOT NULL,
    errors      jsonb NOT NULL,
    last_error  text,
    lease_token bigint,
    run_at      timestamptz NOT NULL,
    enqueued_at timestamptz NOT NULL,
    failed_at   timestamptz NOT NULL,
    CONSTRAINT dead_letter_pkey PRIMARY KEY (job_id)
);

COMMENT ON TABLE jq.dead_letter IS 'pgjq dead letters: jobs out of attempts or failed permanently, with every error; jq_redrive puts them back';

CREATE INDEX dead_letter_queue_idx ON jq.dead_letter (queue_id, failed_at);

/*
 * Idempotency keys: (queue, key) -> job.  The primary key makes two
 * concurrent enqueues of one key meet in the unique index, so exactly one
 * job is created.  A key keeps pointing at its job while the job is
 * unfinished, and for the queue's idempotency_window after enqueue.
 */
CREATE TABLE jq.idempotency_key (
    queue_id   integer NOT NULL,
    key        text NOT NULL,
    job_id     bigint NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT idempotency_key_pkey PRIMARY KEY (queue_id, key)
);

/*
 * Batches: a group of jobs submitted together (500 chunks of one audience
 * scoring run, say), so progress can be read per group.  Membership is
 * its own table, written only for jobs enqueued into a batch, so jobs
 * without one cost nothing and the finish paths need not know.
 */
CREATE TABLE jq.batch (
    batch_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id   integer NOT NULL,
    label      text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE jq.batch_job (
    batch_id bigint NOT NULL,
    job_id   bigint NOT NULL,
    CONSTRAINT batch_job_pkey PRIMARY KEY (batch_id, job_id)
);

COMMENT ON TABLE jq.batch IS 'pgjq batches: groups of jobs submitted together; see jq.batch_progress';

COMMENT ON TABLE jq.idempotency_key IS 'pgjq idempotency keys: a resubmission with the same key returns the same job';

-- keep queued jobs, settings and results in pg_dump output
SELECT pg_catalog.pg_extension_config_dump('jq.queue', '');
SELECT pg_catalog.pg_extension_config_dump('jq.job', '');
SELECT pg_catalog.pg_extension_config_dump('jq.job_result', '');
SELECT pg_catalog.pg_extension_config_dump('jq.dead_letter', '');
SELECT pg_catalog.pg_extension_config_dump('jq.idempotency_key', '');
SELECT pg_catalog.pg_extension_config_dump('jq.batch', '');
SELECT pg_catalog.pg_extension_config_dump('jq.batch_batch_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('jq.batch_job', '');
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

-- Wakes the queue's listeners when the current transaction commits (see
-- src/shmem.c); a no-op without shared_preload_libraries.
CREATE FUNCTION jq.wake_at_commit(queue_id integer)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_wake_at_commit_sql';

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
        WHEN 'c' THEN 'cancelled'
        WHEN 'x' THEN 'dead'
    END
$$;

-- Raises 22023 when an interval setting exceeds 100 years.
CREATE FUNCTION jq.check_interval_bound(setting text, value interval)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value > interval '100 years' THEN
        RAISE EXCEPTION '% must be at most 100 years', setting
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', value);
    END IF;
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
    IF q.dead_letter_retention IS NULL OR q.dead_letter_retention < q.result_retention THEN
        RAISE EXCEPTION 'dead_letter_retention must not be less than result_retention'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got result_retention %s and dead_letter_retention %s.',
                                  q.result_retention, coalesce(q.dead_letter_retention::text, 'NULL')),
                  HINT = 'Dead letters are kept at least as long as results, so failures can be examined after successes are gone.';
    END IF;
    IF q.idempotency_window IS NULL OR q.idempotency_window < interval '0' THEN
        RAISE EXCEPTION 'idempotency_window must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.idempotency_window::text, 'NULL'));
    END IF;
    -- at most 100 years, so that the clock plus or minus any of them stays a
    -- valid timestamp (retention, idempotency and retry times are computed
    -- that way) instead of failing later, in the worker or in jq_fail
    PERFORM jq.check_interval_bound(v.setting, v.value)
       FROM (VALUES ('backoff_base', q.backoff_base), ('backoff_cap', q.backoff_cap),
                    ('result_retention', q.result_retention),
                    ('dead_letter_retention', q.dead_letter_retention),
                    ('idempotency_window', q.idempotency_window)) AS v(setting, value);
    IF q.alert_depth_warning < 1 OR q.alert_depth_critical < 1
       OR q.alert_depth_critical < q.alert_depth_warning THEN
        RAISE EXCEPTION 'alert depths must be positive, and critical not below warning'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got warning %s and critical %s.',
                                  coalesce(q.alert_depth_warning::text, 'NULL'),
                                  coalesce(q.alert_depth_critical::text, 'NULL'));
    END IF;
    IF q.alert_age_warning <= interval '0' THEN
        RAISE EXCEPTION 'alert_age_warning must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', q.alert_age_warning);
    END IF;
    IF q.max_payload_bytes IS NULL OR q.max_payload_bytes NOT BETWEEN 16 AND 67108864 THEN
        RAISE EXCEPTION 'max_payload_bytes must be between 16 and 67108864'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.max_payload_bytes::text, 'NULL'));
    END IF;
END
$$;

/*
 * jq.queue_id(name, lock) resolves a queue name for the PL/pgSQL API, with
 * the hot path's errors (src/plans.c pgjq_lookup_queue): 42602 for an
 * invalid name, 42704 with a hint for an unknown queue.  With lock, the
 * queue row is locked FOR UPDATE until the transaction ends, so alter and
 * drop do not race each other.
 */
CREATE FUNCTION jq.queue_id(name text, lock boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer;
BEGIN
    PERFORM jq.check_queue_name(queue_id.name);
    IF lock THEN
        SELECT q.queue_id INTO qid FROM jq.queue q WHERE q.name = queue_id.name FOR UPDATE;
    ELSE
        SELECT q.queue_id INTO qid FROM jq.queue q WHERE q.name = queue_id.name;
    END IF;
    IF qid IS NULL THEN
        RAISE EXCEPTION 'queue "%" does not exist', queue_id.name
            USING ERRCODE = 'undefined_object',
                  HINT = format('Create it with jq_create_queue(%L).', queue_id.name);
    END IF;
    RETURN qid;
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
    dead_letter_retention interval DEFAULT '30 days',
    idempotency_window interval DEFAULT '24 hours',
    alert_depth_warning bigint DEFAULT NULL,
    alert_depth_critical bigint DEFAULT NULL,
    alert_age_warning interval DEFAULT NULL,
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
    q.dead_letter_retention := jq_create_queue.dead_letter_retention;
    q.idempotency_window := jq_create_queue.idempotency_window;
    q.alert_depth_warning := jq_create_queue.alert_depth_warning;
    q.alert_depth_critical := jq_create_queue.alert_depth_critical;
    q.alert_age_warning := jq_create_queue.alert_age_warning;
    PERFORM jq.check_queue_settings(q);

    BEGIN
        INSERT INTO jq.queue (name, lease_seconds, max_attempts, backoff_base,
                              backoff_cap, result_retention, max_payload_bytes,
                              dead_letter_retention, idempotency_window,
                              alert_depth_warning, alert_depth_critical, alert_age_warning)
        VALUES (q.name, q.lease_seconds, q.max_attempts, q.backoff_base,
                q.backoff_cap, q.result_retention, q.max_payload_bytes,
                q.dead_letter_retention, q.idempotency_window,
                q.alert_depth_warning, q.alert_depth_critical, q.alert_age_warning)
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
    max_payload_bytes integer DEFAULT NULL,
    dead_letter_retention interval DEFAULT NULL,
    idempotency_window interval DEFAULT NULL,
    alert_depth_warning bigint DEFAULT NULL,
    alert_depth_critical bigint DEFAULT NULL,
    alert_age_warning interval DEFAULT NULL,
    clear_alerts boolean DEFAULT false)
RETURNS jq.queue
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q jq.queue;
BEGIN
    SELECT * INTO q FROM jq.queue
     WHERE queue_id = jq.queue_id(jq_alter_queue.name, lock => true);

    q.lease_seconds := coalesce(jq_alter_queue.lease_seconds, q.lease_seconds);
    q.max_attempts := coalesce(jq_alter_queue.max_attempts, q.max_attempts);
    q.backoff_base := coalesce(jq_alter_queue.backoff_base, q.backoff_base);
    q.backoff_cap := coalesce(jq_alter_queue.backoff_cap, q.backoff_cap);
    q.result_retention := coalesce(jq_alter_queue.result_retention, q.result_retention);
    q.max_payload_bytes := coalesce(jq_alter_queue.max_payload_bytes, q.max_payload_bytes);
    q.dead_letter_retention := coalesce(jq_alter_queue.dead_letter_retention, q.dead_letter_retention);
    q.idempotency_window := coalesce(jq_alter_queue.idempotency_window, q.idempotency_window);
    IF clear_alerts THEN
        -- thresholds can only be removed explicitly, NULL means "unchanged"
        q.alert_depth_warning := NULL;
        q.alert_depth_critical := NULL;
        q.alert_age_warning := NULL;
    END IF;
    q.alert_depth_warning := coalesce(jq_alter_queue.alert_depth_warning, q.alert_depth_warning);
    q.alert_depth_critical := coalesce(jq_alter_queue.alert_depth_critical, q.alert_depth_critical);
    q.alert_age_warning := coalesce(jq_alter_queue.alert_age_warning, q.alert_age_warning);
    PERFORM jq.check_queue_settings(q);

    UPDATE jq.queue
       SET lease_seconds = q.lease_seconds,
           max_attempts = q.max_attempts,
           backoff_base = q.backoff_base,
           backoff_cap = q.backoff_cap,
           result_retention = q.result_retention,
           max_payload_bytes = q.max_payload_bytes,
           dead_letter_retention = q.dead_letter_retention,
           idempotency_window = q.idempotency_window,
           alert_depth_warning = q.alert_depth_warning,
           alert_depth_critical = q.alert_depth_critical,
           alert_age_warning = q.alert_age_warning
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
    qid := jq.queue_id(jq_drop_queue.name, lock => true);
    -- wait for the transactions adding jobs to the queue, keep new ones out
    PERFORM jq.lock_queue(qid);

    IF NOT coalesce(force, false) THEN
        SELECT count(*) INTO live FROM jq.job WHERE queue_id = qid;
        IF live > 0 THEN
            RAISE EXCEPTION 'queue "%" has unfinished jobs', jq_drop_queue.name
                USING ERRCODE = 'object_in_use',
                      DETAIL = format('Unfinished jobs (ready, scheduled or leased): %s.', live),
                      HINT = 'Drain the queue first, or pass force => true to drop its jobs too.';
        END IF;
    END IF;

    DELETE FROM jq.job WHERE queue_id = qid;
    DELETE FROM jq.job_result WHERE queue_id = qid;
    DELETE FROM jq.dead_letter WHERE queue_id = qid;
    DELETE FROM jq.idempotency_key WHERE queue_id = qid;
    DELETE FROM jq.stats_history WHERE queue_id = qid;
    UPDATE jq.alert SET cleared_at = clock_timestamp()
     WHERE queue_id = qid AND cleared_at IS NULL;
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
    run_at timestamptz DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    batch_id bigint DEFAULT NULL)
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
    run_at timestamptz DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    batch_id bigint DEFAULT NULL)
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
    last_error text,
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
           j.errors -> -1 ->> 'error',
           j.attempt, j.priority::integer, j.enqueued_at, j.run_at,
           j.started_at, NULL::timestamptz
      FROM jq.job j JOIN jq.queue q USING (queue_id)
     WHERE j.id = $1
    UNION ALL
    SELECT r.job_id, q.name, jq.state_name(r.state, NULL), r.result, r.last_error,
           r.attempts, r.priority::integer, r.enqueued_at, r.run_at,
           r.started_at, r.finished_at
      FROM jq.job_result r JOIN jq.queue q USING (queue_id)
     WHERE r.job_id = $1
    UNION ALL
    SELECT d.job_id, d.queue, 'dead', NULL::jsonb, d.last_error,
           d.attempts, d.priority::integer, d.enqueued_at, d.run_at,
           NULL::timestamptz, d.failed_at
      FROM jq.dead_letter d
     WHERE d.job_id = $1
$$;

COMMENT ON FUNCTION public.jq_result IS 'state, result, attempts and timestamps of a job; no row for an unknown id';

/* ------------------------------------------------------------------------
 * The failure path: failed attempts, retries, dead letters, leases
 * ------------------------------------------------------------------------ */

/*
 * jq.fail_leased(job_ids, error, permanent, retry_at, now) is the one state
 * transition of a failed attempt, shared by jq_fail and lease reclaim.  The
 * caller has locked the jobs (FOR UPDATE) and checked they are leased by the
 * attempt that failed.  For each job:
 *   - a cancel was requested  -> cancelled (jq.job_result), never retried;
 *   - permanent, or it was the last attempt -> dead (jq.dead_letter);
 *   - otherwise -> back to the queue at retry_at: when retry_at is NULL,
 *     exponential backoff with full jitter, a uniform delay in
 *     [0, min(backoff_cap, backoff_base * 2^(attempt-1))).
 * Every error is appended to the job's errors with its attempt and time.
 * Returns each job's new state.
 */
CREATE FUNCTION jq.fail_leased(job_ids bigint[], error text, permanent boolean,
                               retry_at timestamptz, now timestamptz)
RETURNS TABLE (job_id bigint, state text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH target AS (
        SELECT j.id, j.attempt, j.cancel_requested, q.max_attempts, q.name,
               jsonb_build_array(jsonb_build_object(
                   'attempt', j.attempt, 'error', $2, 'at', $5)) AS err,
               CASE WHEN j.cancel_requested THEN 'c'
                    WHEN $3 OR j.attempt >= q.max_attempts THEN 'x'
                    ELSE 's' END AS outcome,
               -- in seconds, as doubles: base x 2^(n-1) as an interval
               -- overflows long before the cap applies (1 day x 2^31)
               coalesce($4, $5 + pg_catalog.make_interval(secs =>
                   least(extract(epoch FROM q.backoff_cap)::float8,
                         extract(epoch FROM q.backoff_base)::float8
                         * power(2, least(greatest(j.attempt - 1, 0), 40)))
                   * random())) AS retry_at
          FROM jq.job j JOIN jq.queue q USING (queue_id)
         WHERE j.id = ANY ($1) AND j.state = 'l'
    ), retried AS (
        UPDATE jq.job j
           SET state = CASE WHEN t.retry_at <= $5 THEN 'r' ELSE 's' END,
               run_at = t.retry_at,
               lease_expires_at = NULL,
               errors = coalesce(j.errors, '[]') || t.err
          FROM target t
         WHERE j.id = t.id AND t.outcome = 's'
        RETURNING j.id, j.state, j.run_at
    ), removed AS (
        DELETE FROM jq.job j USING target t
         WHERE j.id = t.id AND t.outcome IN ('x', 'c')
        RETURNING j.*, t.outcome, t.name AS queue_name,
                  coalesce(j.errors, '[]') || t.err AS all_errors
    ), dead AS (
        INSERT INTO jq.dead_letter (job_id, queue_id, queue, priority, attempts, payload,
                                    errors, last_error, lease_token, run_at,
                                    enqueued_at, failed_at)
        SELECT id, queue_id, queue_name, priority, attempt, payload, all_errors, $2,
               lease_token, run_at, enqueued_at, $5
          FROM removed WHERE outcome = 'x'
        RETURNING job_id
    ), cancelled AS (
        INSERT INTO jq.job_result (job_id, queue_id, state, priority, attempts, result,
                                   last_error, run_at, enqueued_at, started_at, finished_at)
        SELECT id, queue_id, 'c', priority, attempt, NULL, $2, run_at, enqueued_at,
               started_at, $5
          FROM removed WHERE outcome = 'c'
        RETURNING job_id
    )
    SELECT id, jq.state_name(state, run_at) FROM retried
    UNION ALL SELECT job_id, 'dead' FROM dead
    UNION ALL SELECT job_id, 'cancelled' FROM cancelled
$$;

CREATE FUNCTION public.jq_fail(
    job_id bigint,
    lease_token bigint,
    error text,
    retry_in interval DEFAULT NULL,
    permanent boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now timestamptz := clock_timestamp();
    new_state text;
    msg text := jq_fail.error;
    n integer := 8000;
BEGIN
    -- jq.job before jq.job_result and jq.dead_letter, as every API function
    -- (no deadlock with the counter rebuild: src/plans.c pgjq_lock_job_table)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    IF jq_fail.job_id IS NULL OR jq_fail.lease_token IS NULL THEN
        RAISE EXCEPTION 'job_id and lease_token must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the job_id and lease_token columns that jq_dequeue returned.';
    END IF;
    IF jq_fail.error IS NULL THEN
        RAISE EXCEPTION 'error must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Say why the attempt failed, for example the exception''s message; it is kept with the job.';
    END IF;
    IF retry_in IS NOT NULL AND (retry_in < interval '0' OR retry_in > interval '366 days') THEN
        RAISE EXCEPTION 'retry_in must be between 0 and 366 days'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', retry_in);
    END IF;

    -- keep errors bounded: a stack trace is welcome, a core dump is not.
    -- Cut at a character boundary to at most 8000 bytes.
    IF octet_length(msg) > 8192 THEN
        WHILE octet_length(left(msg, n)) > 8000 LOOP
            n := n * 3 / 4;
        END LOOP;
        msg := left(msg, n) || ' ... (truncated)';
    END IF;

    -- lock the job only if this lease is still its current one
    PERFORM FROM jq.job j
      WHERE j.id = jq_fail.job_id AND j.lease_token = jq_fail.lease_token AND j.state = 'l'
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;        -- stale token: refused, nothing changed
    END IF;

    SELECT f.state INTO new_state
      FROM jq.fail_leased(ARRAY[jq_fail.job_id], msg,
                          coalesce(permanent, false),
                          now + retry_in, now) f;
    IF new_state = 'ready' THEN
        PERFORM jq.wake_at_commit(j.queue_id) FROM jq.job j WHERE j.id = jq_fail.job_id;
    END IF;
    RETURN new_state;
END
$$;

COMMENT ON FUNCTION public.jq_fail IS 'fail a leased job: retry with backoff, or dead-letter it on its last attempt or when permanent; NULL when the token is stale';

/*
 * jq.reclaim_expired_leases(max_jobs) fails the attempts whose lease has
 * expired ("lease expired"): each goes back to ready at once, or to the
 * dead letters if it was the last attempt, or to cancelled if a cancel was
 * requested.  Jobs locked by a worker acking or failing them right now are
 * skipped (SKIP LOCKED) and picked up next time.  Returns how many moved.
 * The background worker calls this in small batches.
 */
CREATE FUNCTION jq.reclaim_expired_leases(max_jobs integer DEFAULT 1000)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*)::integer
      FROM jq.fail_leased(
             ARRAY(SELECT j.id FROM jq.job j
                    WHERE j.lease_expires_at < clock_timestamp()
                    ORDER BY j.lease_expires_at
                    LIMIT greatest($1, 1)
                      FOR UPDATE SKIP LOCKED),
             'lease expired', false, clock_timestamp(), clock_timestamp())
$$;

CREATE FUNCTION public.jq_extend(job_id bigint, lease_token bigint,
                                 lease_seconds integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expires timestamptz;
BEGIN
    IF jq_extend.job_id IS NULL OR jq_extend.lease_token IS NULL THEN
        RAISE EXCEPTION 'job_id and lease_token must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jq_extend.lease_seconds IS NOT NULL AND jq_extend.lease_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'lease_seconds must be between 1 and 86400'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', jq_extend.lease_seconds);
    END IF;

    UPDATE jq.job j
       SET lease_expires_at = clock_timestamp()
               + make_interval(secs => coalesce(jq_extend.lease_seconds, q.lease_seconds))
      FROM jq.queue q
     WHERE j.id = jq_extend.job_id AND j.lease_token = jq_extend.lease_token
       AND j.state = 'l' AND NOT j.cancel_requested AND q.queue_id = j.queue_id
    RETURNING j.lease_expires_at INTO expires;
    RETURN expires;     -- NULL: the lease is lost or the job was cancelled; stop working on it
END
$$;

COMMENT ON FUNCTION public.jq_extend IS 'extend a lease from now (heartbeat); NULL when the token is stale or the job was cancelled';

CREATE FUNCTION public.jq_cancel(job_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- jq.job before jq.job_result and jq.dead_letter, as every API function
    -- (no deadlock with the counter rebuild: src/plans.c pgjq_lock_job_table)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    IF jq_cancel.job_id IS NULL THEN
        RAISE EXCEPTION 'job_id must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- a ready or scheduled job is cancelled at once
    WITH gone AS (
        DELETE FROM jq.job j
         WHERE j.id = jq_cancel.job_id AND j.state IN ('r', 's')
        RETURNING j.*
    )
    INSERT INTO jq.job_result (job_id, queue_id, state, priority, attempts, result,
                               last_error, run_at, enqueued_at, started_at, finished_at)
    SELECT id, queue_id, 'c', priority, attempt, NULL, errors -> -1 ->> 'error',
           run_at, enqueued_at, started_at, clock_timestamp()
      FROM gone;
    IF FOUND THEN
        RETURN true;
    END IF;

    -- a leased one is marked: its ack returns false, it is never retried
    UPDATE jq.job j SET cancel_requested = true
     WHERE j.id = jq_cancel.job_id AND j.state = 'l' AND NOT j.cancel_requested;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION public.jq_cancel IS 'cancel a job: at once when ready or scheduled, at its ack or failure when leased; false when nothing changed';

CREATE FUNCTION public.jq_redrive(queue text, job_ids bigint[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer;
    moved integer;
BEGIN
    qid := jq.queue_id(jq_redrive.queue);
    -- jq.job before jq.job_result and jq.dead_letter, as every API function
    -- (no deadlock with the counter rebuild: src/plans.c pgjq_lock_job_table)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    IF array_ndims(job_ids) > 1 THEN
        RAISE EXCEPTION 'job_ids must be a one-dimensional array'
            USING ERRCODE = 'array_subscript_error';
    END IF;
    IF array_position(job_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'job_ids must not contain nulls'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = format('Element %s is null.', array_position(job_ids, NULL));
    END IF;
    IF cardinality(job_ids) > 10000 THEN
        RAISE EXCEPTION 'a batch may hold at most 10000 jobs'
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('Got %s.', cardinality(job_ids)),
                  HINT = 'Pass NULL to redrive every dead letter of the queue, or redrive in batches.';
    END IF;

    -- back to ready under the same id, with fresh attempts; the error
    -- history and the lease token's delivery count are kept
    WITH moved AS (
        DELETE FROM jq.dead_letter d
         WHERE d.queue_id = qid
           AND (jq_redrive.job_ids IS NULL OR d.job_id = ANY (jq_redrive.job_ids))
        RETURNING d.*
    )
    INSERT INTO jq.job (id, queue_id, state, priority, attempt, lease_token, run_at,
                        enqueued_at, errors, payload)
    SELECT job_id, queue_id, 'r', priority, 0, lease_token, clock_timestamp(),
           enqueued_at, errors, payload
      FROM moved;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        PERFORM jq.wake_at_commit(qid);
    END IF;
    RETURN moved;
END
$$;

COMMENT ON FUNCTION public.jq_redrive IS 'move dead letters of a queue (all, or those in job_ids) back to ready with fresh attempts; returns how many moved';

/* ------------------------------------------------------------------------
 * Statistics, history, alerts and retention (the background worker's
 * periodic work; src/stats.c keeps the counters)
 * ------------------------------------------------------------------------ */

-- Records each change of the three tables as a counter delta, applied to
-- shared memory at commit (src/stats.c).
CREATE FUNCTION jq.count_trigger()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgjq_count_trigger';

-- INSERT: BEFORE, which costs no after-trigger event.  UPDATE and DELETE:
-- AFTER, because a BEFORE ROW trigger on them makes the executor lock the
-- row first, and locking a row that an earlier transaction locked (every
-- ack deletes a job its dequeue locked) writes a WAL record, often a full
-- page image: a third of the WAL of a batch drain.
CREATE TRIGGER job_count_insert BEFORE INSERT
    ON jq.job FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('job');
CREATE TRIGGER job_count AFTER UPDATE OF queue_id, state, priority OR DELETE
    ON jq.job FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('job');
CREATE TRIGGER job_result_count BEFORE INSERT
    ON jq.job_result FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('job_result');
CREATE TRIGGER dead_letter_count_insert BEFORE INSERT
    ON jq.dead_letter FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('dead_letter');
CREATE TRIGGER dead_letter_count AFTER DELETE
    ON jq.dead_letter FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('dead_letter');

-- The shared counters of this database, one row per queue and priority.
CREATE FUNCTION jq.counters(
    OUT queue_id integer, OUT priority integer,
    OUT ready bigint, OUT scheduled bigint, OUT leased bigint, OUT dead bigint,
    OUT enqueued_total bigint, OUT succeeded_total bigint, OUT failed_total bigint,
    OUT dead_lettered_total bigint, OUT cancelled_total bigint,
    OUT valid boolean, OUT since timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_counters';

-- Whether this database's counters are built and exact: false after a
-- start, a crash or CREATE EXTENSION until the worker has rebuilt them,
-- and without shared_preload_libraries.  (Not derived from the rows of
-- jq.counters(): before a rebuild there are none.)
CREATE FUNCTION jq.counters_valid()
RETURNS boolean
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_counters_valid';

-- Forgets this database's counters (left over from a dropped pgjq, say)
-- and has the worker rebuild them.
CREATE FUNCTION jq.reset_counters()
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_reset_counters';

SELECT jq.reset_counters();

/*
 * Depth samples, one row per queue every pgjq.stats_interval, written by
 * the worker and pruned after pgjq.history_retention.
 */
CREATE TABLE jq.stats_history (
    sampled_at          timestamptz NOT NULL,
    queue_id            integer NOT NULL,
    queue               text NOT NULL,
    ready               bigint NOT NULL,
    scheduled           bigint NOT NULL,
    leased              bigint NOT NULL,
    dead                bigint NOT NULL,
    enqueued_total      bigint NOT NULL,
    succeeded_total     bigint NOT NULL,
    failed_total        bigint NOT NULL,
    dead_lettered_total bigint NOT NULL,
    cancelled_total     bigint NOT NULL,
    oldest_ready_age    interval,
    counters_since      timestamptz,
    CONSTRAINT stats_history_pkey PRIMARY KEY (queue_id, sampled_at)
);

CREATE INDEX stats_history_sampled_idx ON jq.stats_history (sampled_at);

COMMENT ON TABLE jq.stats_history IS 'pgjq depth samples per queue, for charting depth over time';

/*
 * Alerts: a row per crossing of a queue's thresholds, cleared when the
 * queue is back under them.  At most one open alert per queue and kind.
 */
CREATE TABLE jq.alert (
    alert_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id   integer NOT NULL,
    queue      text NOT NULL,
    kind       text NOT NULL,
    level      text NOT NULL,
    value      text NOT NULL,
    threshold  text NOT NULL,
    raised_at  timestamptz NOT NULL,
    cleared_at timestamptz,
    CONSTRAINT alert_kind_check CHECK (kind IN ('depth', 'age')),
    CONSTRAINT alert_level_check CHECK (level IN ('warning', 'critical'))
);

CREATE UNIQUE INDEX alert_open_idx ON jq.alert (queue_id, kind, level)
    WHERE cleared_at IS NULL;

COMMENT ON TABLE jq.alert IS 'pgjq alerts: queue depth or oldest-ready age over its thresholds';

SELECT pg_catalog.pg_extension_config_dump('jq.stats_history', '');
SELECT pg_catalog.pg_extension_config_dump('jq.alert', '');
SELECT pg_catalog.pg_extension_config_dump('jq.alert_alert_id_seq', '');

/*
 * jq.queue_stats: per queue, depth by state and by priority, age of the
 * oldest ready job, in-flight count and throughput over the last minute.
 * Reads shared counters, one index probe per (queue, priority) that has
 * ready jobs, and one history row per queue: never count(*).
 */
CREATE VIEW jq.queue_stats AS
WITH c AS MATERIALIZED (SELECT * FROM jq.counters())
SELECT q.name AS queue,
       coalesce(sum(c.ready), 0)::bigint AS ready,
       coalesce(sum(c.scheduled), 0)::bigint AS scheduled,
       coalesce(sum(c.leased), 0)::bigint AS in_flight,
       coalesce(sum(c.dead), 0)::bigint AS dead,
       coalesce(jsonb_object_agg(c.priority::text, c.ready ORDER BY c.priority DESC)
                    FILTER (WHERE c.ready > 0), '{}') AS ready_by_priority,
       (SELECT clock_timestamp() - min(o.run_at)
          FROM c c2 CROSS JOIN LATERAL
               (SELECT j.run_at FROM jq.job j
                 WHERE j.queue_id = c2.queue_id AND j.state = 'r'
                   AND j.priority = c2.priority
                 ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1) o
         WHERE c2.queue_id = q.queue_id AND c2.ready > 0) AS oldest_ready_age,
       coalesce(sum(c.enqueued_total), 0)::bigint AS enqueued_total,
       coalesce(sum(c.succeeded_total), 0)::bigint AS succeeded_total,
       coalesce(sum(c.failed_total), 0)::bigint AS failed_total,
       coalesce(sum(c.dead_lettered_total), 0)::bigint AS dead_lettered_total,
       coalesce(sum(c.cancelled_total), 0)::bigint AS cancelled_total,
       round((coalesce(sum(c.enqueued_total), 0) - h.enqueued_total)
             / greatest(extract(epoch FROM clock_timestamp() - h.sampled_at), 1) * 60, 1)
           AS enqueued_per_min,
       round((coalesce(sum(c.succeeded_total), 0) - h.succeeded_total)
             / greatest(extract(epoch FROM clock_timestamp() - h.sampled_at), 1) * 60, 1)
           AS succeeded_per_min,
       jq.counters_valid() AS counters_valid
  FROM jq.queue q
  LEFT JOIN c ON c.queue_id = q.queue_id
  LEFT JOIN LATERAL
       (SELECT s.sampled_at, s.enqueued_total, s.succeeded_total
          FROM jq.stats_history s
         WHERE s.queue_id = q.queue_id
           AND s.sampled_at >= clock_timestamp() - interval '90 seconds'
           AND s.counters_since IS NOT DISTINCT FROM
               (SELECT max(c3.since) FROM c c3 WHERE c3.queue_id = q.queue_id)
         ORDER BY s.sampled_at
         LIMIT 1) h ON true
 GROUP BY q.queue_id, q.name, h.sampled_at, h.enqueued_total, h.succeeded_total;

COMMENT ON VIEW jq.queue_stats IS 'pgjq queue depth, age and throughput, from shared counters (no count(*))';

/*
 * jq.lock_for_rebuild(timeout_ms) takes SHARE locks on the counted tables
 * for a counter rebuild (src/stats.c): they wait until every writer has
 * finished, and hold new writers off until the rebuild commits.  Gives up,
 * returning false, after timeout_ms, so a long open transaction cannot
 * stall producers behind the worker for long.
 */
CREATE FUNCTION jq.lock_for_rebuild(timeout_ms integer)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- give up before the deadlock detector would cancel a client: every
    -- API function locks jq.job first, so no cycle should form, but an
    -- operator's own transaction may lock these tables in another order
    PERFORM set_config('lock_timeout',
        least(timeout_ms, greatest(10, (SELECT setting::integer / 2 FROM pg_settings
                                         WHERE name = 'deadlock_timeout')))::text, true);
    LOCK TABLE jq.job, jq.job_result, jq.dead_letter IN SHARE MODE;
    PERFORM set_config('lock_timeout', '0', true);
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$;

/*
 * jq.sample_stats() writes one history row per queue and prunes rows
 * older than keep; called by the worker every pgjq.stats_interval.
 */
CREATE FUNCTION jq.sample_stats(keep interval DEFAULT '7 days')
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO jq.stats_history (sampled_at, queue_id, queue, ready, scheduled, leased,
                                  dead, enqueued_total, succeeded_total, failed_total,
                                  dead_lettered_total, cancelled_total,
                                  oldest_ready_age, counters_since)
    SELECT clock_timestamp(), q.queue_id, s.queue, s.ready, s.scheduled, s.in_flight,
           s.dead, s.enqueued_total, s.succeeded_total, s.failed_total,
           s.dead_lettered_total, s.cancelled_total, s.oldest_ready_age,
           (SELECT max(c.since) FROM jq.counters() c WHERE c.queue_id = q.queue_id)
      FROM jq.queue_stats s JOIN jq.queue q ON q.name = s.queue
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM jq.stats_history WHERE sampled_at < clock_timestamp() - keep;
    RETURN n;
END
$$;

/*
 * jq.check_alerts() compares every queue with its thresholds: a crossing
 * opens an alert (logged as a WARNING once, announced on channel
 * jq_alerts), a return under the threshold clears it (announced too).
 * Returns how many alerts it opened or cleared.
 */
CREATE FUNCTION jq.check_alerts()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    a record;
    changed integer := 0;
BEGIN
    FOR r IN
        SELECT q.queue_id, q.name, x.kind, x.level, x.value, x.threshold, x.over
          FROM jq.queue q JOIN jq.queue_stats s ON s.queue = q.name
         CROSS JOIN LATERAL (VALUES
             ('depth', 'warning', s.ready::text, q.alert_depth_warning::text,
              s.ready >= q.alert_depth_warning),
             ('depth', 'critical', s.ready::text, q.alert_depth_critical::text,
              s.ready >= q.alert_depth_critical),
             ('age', 'warning', date_trunc('second', coalesce(s.oldest_ready_age, '0'))::text,
              q.alert_age_warning::text,
              coalesce(s.oldest_ready_age, '0') >= q.alert_age_warning)
         ) AS x(kind, level, value, threshold, over)
         ORDER BY q.name, x.kind, x.level DESC
    LOOP
        SELECT * INTO a FROM jq.alert
         WHERE queue_id = r.queue_id AND kind = r.kind AND level = r.level
           AND cleared_at IS NULL;
        IF coalesce(r.over, false) AND NOT FOUND THEN
            INSERT INTO jq.alert (queue_id, queue, kind, level, value, threshold, raised_at)
            VALUES (r.queue_id, r.name, r.kind, r.level, r.value, r.threshold, clock_timestamp());
            RAISE WARNING 'pgjq: queue "%" % % alert: % reached the threshold %',
                r.name, r.kind, r.level, r.value, r.threshold;
            PERFORM pg_notify('jq_alerts', json_build_object(
                'queue', r.name, 'kind', r.kind, 'level', r.level, 'state', 'raised',
                'value', r.value, 'threshold', r.threshold)::text);
            changed := changed + 1;
        ELSIF NOT coalesce(r.over, false) AND FOUND THEN
            UPDATE jq.alert SET cleared_at = clock_timestamp() WHERE alert_id = a.alert_id;
            PERFORM pg_notify('jq_alerts', json_build_object(
                'queue', r.name, 'kind', r.kind, 'level', r.level, 'state', 'cleared',
                'value', r.value, 'threshold', r.threshold)::text);
            changed := changed + 1;
        END IF;
    END LOOP;
    RETURN changed;
END
$$;

/*
 * jq.purge_expired(batch) deletes, at most batch rows of each kind per
 * call, results past their queue's result_retention, dead letters past
 * dead_letter_retention, and idempotency keys past idempotency_window whose
 * job is finished.  Small batches keep locks short; the worker calls it
 * until it returns 0.
 */
CREATE FUNCTION jq.purge_expired(batch integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q record;
    n integer;
    total integer := 0;
BEGIN
    FOR q IN SELECT queue_id, result_retention, dead_letter_retention, idempotency_window
               FROM jq.queue
    LOOP
        DELETE FROM jq.job_result r
         WHERE r.ctid = ANY (ARRAY(
               SELECT x.ctid FROM jq.job_result x
                WHERE x.queue_id = q.queue_id
                  AND x.finished_at < clock_timestamp() - q.result_retention
                ORDER BY x.finished_at LIMIT batch
                  FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;

        DELETE FROM jq.dead_letter d
         WHERE d.ctid = ANY (ARRAY(
               SELECT x.ctid FROM jq.dead_letter x
                WHERE x.queue_id = q.queue_id
                  AND x.failed_at < clock_timestamp() - q.dead_letter_retention
                ORDER BY x.failed_at LIMIT batch
                  FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;

        DELETE FROM jq.idempotency_key k
         WHERE k.ctid = ANY (ARRAY(
               SELECT x.ctid FROM jq.idempotency_key x
                WHERE x.queue_id = q.queue_id
                  AND x.created_at < clock_timestamp() - q.idempotency_window
                  AND NOT EXISTS (SELECT FROM jq.job j WHERE j.id = x.job_id)
                LIMIT batch
                  FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;

/* ------------------------------------------------------------------------
 * Batches and the analysts' views
 * ------------------------------------------------------------------------ */

CREATE FUNCTION public.jq_create_batch(queue text, label text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer;
    bid bigint;
BEGIN
    qid := jq.queue_id(jq_create_batch.queue);
    IF octet_length(label) > 512 THEN
        RAISE EXCEPTION 'batch label of % bytes is too long', octet_length(label)
            USING ERRCODE = 'program_limit_exceeded', DETAIL = 'The limit is 512 bytes.';
    END IF;
    INSERT INTO jq.batch (queue_id, label) VALUES (qid, jq_create_batch.label)
    RETURNING batch_id INTO bid;
    RETURN bid;
END
$$;

COMMENT ON FUNCTION public.jq_create_batch IS 'create a batch in a queue; pass its id to jq_enqueue or jq_enqueue_batch';

-- one call: a new batch with all its jobs; returns the batch id
CREATE FUNCTION public.jq_submit_batch(queue text, payloads jsonb[], label text DEFAULT NULL,
                                       priority integer DEFAULT 0,
                                       run_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bid bigint := public.jq_create_batch(jq_submit_batch.queue, jq_submit_batch.label);
BEGIN
    PERFORM public.jq_enqueue_batch(jq_submit_batch.queue, jq_submit_batch.payloads,
                                    jq_submit_batch.priority, jq_submit_batch.run_at,
                                    NULL, bid);
    RETURN bid;
END
$$;

COMMENT ON FUNCTION public.jq_submit_batch IS 'create a batch and enqueue its jobs in one call; returns the batch id';

/*
 * Progress per batch: one primary-key probe per member in each table, so
 * its cost follows the batch's size, not the queue's depth.  Members whose
 * results passed their retention count as purged.
 */
CREATE VIEW jq.batch_progress AS
SELECT b.batch_id, q.name AS queue, b.label, b.created_at,
       count(m.job_id) AS total,
       count(*) FILTER (WHERE j.state IN ('r', 's')) AS waiting,
       count(*) FILTER (WHERE j.state = 'l') AS in_flight,
       count(*) FILTER (WHERE j.errors IS NOT NULL) AS retrying,
       count(*) FILTER (WHERE r.state = 'd') AS succeeded,
       count(*) FILTER (WHERE d.job_id IS NOT NULL) AS dead,
       count(*) FILTER (WHERE r.state = 'c') AS cancelled,
       count(*) FILTER (WHERE m.job_id IS NOT NULL AND j.id IS NULL AND r.job_id IS NULL
                          AND d.job_id IS NULL) AS purged,
       round(100.0 * count(*) FILTER (WHERE j.id IS NULL AND m.job_id IS NOT NULL)
             / greatest(count(m.job_id), 1), 1) AS percent_complete,
       CASE WHEN count(j.id) = 0 AND count(m.job_id) > 0
            THEN greatest(max(r.finished_at), max(d.failed_at)) END AS finished_at
  FROM jq.batch b
  JOIN jq.queue q ON q.queue_id = b.queue_id
  LEFT JOIN jq.batch_job m ON m.batch_id = b.batch_id
  LEFT JOIN jq.job j ON j.id = m.job_id
  LEFT JOIN jq.job_result r ON r.job_id = m.job_id
  LEFT JOIN jq.dead_letter d ON d.job_id = m.job_id
 GROUP BY b.batch_id, q.name, b.label, b.created_at;

COMMENT ON VIEW jq.batch_progress IS 'pgjq progress per batch: total, waiting, in flight, succeeded, dead, percent complete';

-- every error of every dead letter, one row each
CREATE VIEW jq.dead_letter_errors AS
SELECT d.job_id, d.queue, (e.err ->> 'attempt')::integer AS attempt,
       e.err ->> 'error' AS error, (e.err ->> 'at')::timestamptz AS failed_at
  FROM jq.dead_letter d
 CROSS JOIN LATERAL jsonb_array_elements(d.errors) AS e(err);

COMMENT ON VIEW jq.dead_letter_errors IS 'pgjq dead letters, one row per error (no payloads)';

/* ------------------------------------------------------------------------
 * The background worker
 * ------------------------------------------------------------------------ */

CREATE FUNCTION public.jq_worker_status(
    OUT preloaded boolean,
    OUT databases text,
    OUT worker_pid integer,
    OUT status text)
RETURNS record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_worker_status';

COMMENT ON FUNCTION public.jq_worker_status IS 'whether pgjq is preloaded and a worker serves this database (lease reclaim, promotion, wakeups)';

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
    public.jq_create_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean),
    public.jq_alter_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean),
    public.jq_drop_queue(text, boolean),
    public.jq_list_queues(),
    public.jq_enqueue(text, jsonb, integer, timestamptz, text, bigint),
    public.jq_enqueue_batch(text, jsonb[], integer, timestamptz, text[], bigint),
    public.jq_dequeue(text, integer, integer),
    public.jq_ack(bigint, bigint, jsonb),
    public.jq_ack_batch(bigint[], bigint[], jsonb[]),
    public.jq_result(bigint),
    public.jq_fail(bigint, bigint, text, interval, boolean),
    public.jq_extend(bigint, bigint, integer),
    public.jq_cancel(bigint),
    public.jq_redrive(text, bigint[]),
    public.jq_worker_status(),
    public.jq_create_batch(text, text),
    public.jq_submit_batch(text, jsonb[], text, integer, timestamptz)
FROM PUBLIC;

GRANT USAGE ON SCHEMA jq TO jq_producer, jq_worker, jq_admin, jq_reader;

GRANT EXECUTE ON FUNCTION
    public.jq_enqueue(text, jsonb, integer, timestamptz, text, bigint),
    public.jq_enqueue_batch(text, jsonb[], integer, timestamptz, text[], bigint),
    public.jq_create_batch(text, text),
    public.jq_submit_batch(text, jsonb[], text, integer, timestamptz),
    public.jq_result(bigint),
    public.jq_cancel(bigint)
TO jq_producer;

GRANT EXECUTE ON FUNCTION
    public.jq_dequeue(text, integer, integer),
    public.jq_ack(bigint, bigint, jsonb),
    public.jq_ack_batch(bigint[], bigint[], jsonb[]),
    public.jq_fail(bigint, bigint, text, interval, boolean),
    public.jq_extend(bigint, bigint, integer),
    public.jq_result(bigint)
TO jq_worker;

GRANT EXECUTE ON FUNCTION public.jq_list_queues(), public.jq_worker_status() TO jq_reader;
GRANT SELECT ON jq.queue, jq.queue_stats, jq.stats_history, jq.alert, jq.batch,
                 jq.batch_progress, jq.dead_letter_errors TO jq_reader;
GRANT EXECUTE ON FUNCTION jq.counters(), jq.counters_valid() TO jq_reader;
-- dead letters hold payloads: operators (jq_admin) read them, readers do not
GRANT SELECT ON jq.dead_letter TO jq_admin;

GRANT EXECUTE ON FUNCTION
    public.jq_create_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean),
    public.jq_alter_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean),
    public.jq_drop_queue(text, boolean),
    public.jq_list_queues(),
    public.jq_redrive(text, bigint[])
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
