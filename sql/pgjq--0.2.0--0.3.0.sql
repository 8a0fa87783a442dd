/*
 * pgjq 0.2.0 -> 0.3.0
 *
 * - The SQL API moves from schema public to schema jq, and is called
 *   qualified: jq.jq_enqueue(...).  A look-alike function in a schema where
 *   others may create (public, in databases created before PostgreSQL 15)
 *   captured unqualified calls.  Callers must change their calls; see
 *   CHANGELOG.md.
 * - One owner per transition: promotion (jq.promote_due), the fence
 *   (jq.lock_lease) and the finishing of cancelled jobs (jq.finish_cancelled)
 *   get one definition each, which the worker, the hot path and the SQL
 *   functions share.
 * - The rules of a queue's settings move from CHECK constraints to the
 *   trigger jq.queue_check, their defaults to jq_create_queue, and the job
 *   result's state rule to jq.count_trigger; limits come from jq.limits().
 * - New: jq.jq_security_check(), jq.limits(), jq.limit(), jq.rebuild_counters().
 *
 * Queued, leased, finished and dead jobs are kept as they are: no table's
 * rows change.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pgjq UPDATE TO '0.3.0'" to load this file. \quit

/* The API moves to schema jq, keeping its privileges. */
ALTER FUNCTION public.jq_create_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean) SET SCHEMA jq;
ALTER FUNCTION public.jq_alter_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean) SET SCHEMA jq;
ALTER FUNCTION public.jq_drop_queue(text, boolean) SET SCHEMA jq;
ALTER FUNCTION public.jq_list_queues() SET SCHEMA jq;
ALTER FUNCTION public.jq_enqueue(text, jsonb, integer, timestamptz, text, bigint) SET SCHEMA jq;
ALTER FUNCTION public.jq_enqueue_batch(text, jsonb[], integer, timestamptz, text[], bigint) SET SCHEMA jq;
ALTER FUNCTION public.jq_dequeue(text, integer, integer) SET SCHEMA jq;
ALTER FUNCTION public.jq_ack(bigint, bigint, jsonb) SET SCHEMA jq;
ALTER FUNCTION public.jq_ack_batch(bigint[], bigint[], jsonb[]) SET SCHEMA jq;
ALTER FUNCTION public.jq_result(bigint) SET SCHEMA jq;
ALTER FUNCTION public.jq_fail(bigint, bigint, text, interval, boolean) SET SCHEMA jq;
ALTER FUNCTION public.jq_extend(bigint, bigint, integer) SET SCHEMA jq;
ALTER FUNCTION public.jq_cancel(bigint) SET SCHEMA jq;
ALTER FUNCTION public.jq_redrive(text, bigint[]) SET SCHEMA jq;
ALTER FUNCTION public.jq_worker_status() SET SCHEMA jq;
ALTER FUNCTION public.jq_create_batch(text, text) SET SCHEMA jq;
ALTER FUNCTION public.jq_submit_batch(text, jsonb[], text, integer, timestamptz) SET SCHEMA jq;

/*
 * The rules of a queue's settings are checked by jq.queue_check (below),
 * their defaults are jq_create_queue's, and the states of a result are
 * checked by jq.count_trigger.
 */
ALTER TABLE jq.queue
    DROP CONSTRAINT queue_name_check,
    DROP CONSTRAINT queue_lease_check,
    DROP CONSTRAINT queue_attempts_check,
    DROP CONSTRAINT queue_backoff_check,
    DROP CONSTRAINT queue_retention_check,
    DROP CONSTRAINT queue_idempotency_check,
    DROP CONSTRAINT queue_payload_check,
    ALTER COLUMN lease_seconds DROP DEFAULT,
    ALTER COLUMN max_attempts DROP DEFAULT,
    ALTER COLUMN backoff_base DROP DEFAULT,
    ALTER COLUMN backoff_cap DROP DEFAULT,
    ALTER COLUMN result_retention DROP DEFAULT,
    ALTER COLUMN max_payload_bytes DROP DEFAULT,
    ALTER COLUMN dead_letter_retention DROP DEFAULT,
    ALTER COLUMN idempotency_window DROP DEFAULT;
ALTER TABLE jq.job_result DROP CONSTRAINT job_result_state_check;

/* Functions, new and changed, and comments, as in a fresh install. */

COMMENT ON TABLE jq.queue IS 'pgjq queues and their settings; change them with jq.jq_create_queue, jq.jq_alter_queue and jq.jq_drop_queue';

COMMENT ON TABLE jq.job IS 'pgjq unfinished jobs (ready, scheduled, leased); use jq.jq_result() or the views rather than reading it directly';

COMMENT ON TABLE jq.job_result IS 'pgjq succeeded (d) and cancelled (c) jobs with their results, kept for the queue''s result_retention';

COMMENT ON TABLE jq.dead_letter IS 'pgjq dead letters: jobs out of attempts or failed permanently, with every error; jq.jq_redrive puts them back';

COMMENT ON TABLE jq.idempotency_key IS 'pgjq idempotency keys: a resubmission with the same key returns the same job';

COMMENT ON TABLE jq.batch IS 'pgjq batches: groups of jobs submitted together; see jq.batch_progress';

COMMENT ON TABLE jq.stats_history IS 'pgjq depth samples per queue, for charting depth over time';

COMMENT ON TABLE jq.alert IS 'pgjq alerts: queue depth or oldest-ready age over its thresholds';

CREATE FUNCTION jq.limits(OUT name text, OUT value bigint, OUT description text)
RETURNS SETOF record
LANGUAGE C IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_limits';

COMMENT ON FUNCTION jq.limits IS 'the limits of the pgjq API (queue names, priorities, batch sizes, lease lengths, ...)';

CREATE FUNCTION jq.limit(name text)
RETURNS bigint
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_limit';

COMMENT ON FUNCTION jq.limit IS 'one limit of the pgjq API by name; see jq.limits()';

CREATE OR REPLACE FUNCTION jq.state_name(state "char", run_at timestamptz)
RETURNS text
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_state_name';

CREATE OR REPLACE FUNCTION jq.check_queue_name(name text)
RETURNS void
LANGUAGE C PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_check_queue_name_sql';

CREATE FUNCTION jq.clip_error(message text)
RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_clip_error';

CREATE OR REPLACE FUNCTION jq.check_interval_bound(setting text, value interval)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value > make_interval(years => jq.limit('interval_max_years')::integer) THEN
        RAISE EXCEPTION '% must be at most % years', setting, jq.limit('interval_max_years')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', value);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION jq.check_queue_settings(q jq.queue)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM jq.check_queue_name(q.name);
    IF q.lease_seconds IS NULL OR q.lease_seconds NOT BETWEEN 1 AND jq.limit('lease_seconds_max') THEN
        RAISE EXCEPTION 'lease_seconds must be between 1 and %', jq.limit('lease_seconds_max')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.lease_seconds::text, 'NULL')),
                  HINT = 'Long jobs should extend their lease with jq.jq_extend rather than take a long one.';
    END IF;
    IF q.max_attempts IS NULL OR q.max_attempts NOT BETWEEN 1 AND jq.limit('max_attempts_max') THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and %', jq.limit('max_attempts_max')
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
    -- bounded, so that the clock plus or minus any of them stays a valid
    -- timestamp (retention, idempotency and retry times are computed that
    -- way) instead of failing later, in the worker or in jq_fail
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
    IF q.max_payload_bytes IS NULL
       OR q.max_payload_bytes NOT BETWEEN jq.limit('payload_bytes_min') AND jq.limit('payload_bytes_max') THEN
        RAISE EXCEPTION 'max_payload_bytes must be between % and %',
                jq.limit('payload_bytes_min'), jq.limit('payload_bytes_max')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.max_payload_bytes::text, 'NULL'));
    END IF;
END
$$;

CREATE FUNCTION jq.queue_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM jq.check_queue_settings(NEW);
    RETURN NEW;
END
$$;

CREATE TRIGGER queue_check BEFORE INSERT OR UPDATE
    ON jq.queue FOR EACH ROW EXECUTE FUNCTION jq.queue_check();

CREATE OR REPLACE FUNCTION jq.queue_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgjq_queue_changed';

CREATE OR REPLACE FUNCTION jq.lock_queue(queue_id integer)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'pgjq_lock_queue';

CREATE OR REPLACE FUNCTION jq.queue_id(name text, lock boolean DEFAULT false)
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
                  HINT = format('Create it with jq.jq_create_queue(%L).', queue_id.name);
    END IF;
    RETURN qid;
END
$$;

CREATE OR REPLACE FUNCTION jq.jq_create_queue(
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
    IF NOT FOUND THEN
        -- jq.queue_check checks the settings; when a concurrent call
        -- creates the queue first, the insert is a no-op
        INSERT INTO jq.queue (name, lease_seconds, max_attempts, backoff_base,
                              backoff_cap, result_retention, max_payload_bytes,
                              dead_letter_retention, idempotency_window,
                              alert_depth_warning, alert_depth_critical, alert_age_warning)
        VALUES (jq_create_queue.name, jq_create_queue.lease_seconds,
                jq_create_queue.max_attempts, jq_create_queue.backoff_base,
                jq_create_queue.backoff_cap, jq_create_queue.result_retention,
                jq_create_queue.max_payload_bytes, jq_create_queue.dead_letter_retention,
                jq_create_queue.idempotency_window, jq_create_queue.alert_depth_warning,
                jq_create_queue.alert_depth_critical, jq_create_queue.alert_age_warning)
        ON CONFLICT ON CONSTRAINT queue_name_key DO NOTHING
        RETURNING * INTO q;
        IF FOUND THEN
            RETURN q;
        END IF;
        SELECT * INTO q FROM jq.queue WHERE queue.name = jq_create_queue.name;
    END IF;
    IF if_not_exists THEN
        RAISE NOTICE 'queue "%" already exists, skipping', jq_create_queue.name;
        RETURN q;
    END IF;
    RAISE EXCEPTION 'queue "%" already exists', jq_create_queue.name
        USING ERRCODE = 'duplicate_object',
              HINT = 'Use jq.jq_alter_queue to change its settings, or pass if_not_exists => true.';
END
$$;

COMMENT ON FUNCTION jq.jq_create_queue IS 'create a pgjq queue with its settings';

CREATE OR REPLACE FUNCTION jq.jq_alter_queue(
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
    qid integer := jq.queue_id(jq_alter_queue.name, lock => true);
    q jq.queue;
BEGIN
    -- thresholds can only be removed explicitly (clear_alerts): NULL
    -- means "unchanged"; the new row is checked by jq.queue_check
    UPDATE jq.queue AS t
       SET lease_seconds = coalesce(jq_alter_queue.lease_seconds, t.lease_seconds),
           max_attempts = coalesce(jq_alter_queue.max_attempts, t.max_attempts),
           backoff_base = coalesce(jq_alter_queue.backoff_base, t.backoff_base),
           backoff_cap = coalesce(jq_alter_queue.backoff_cap, t.backoff_cap),
           result_retention = coalesce(jq_alter_queue.result_retention, t.result_retention),
           max_payload_bytes = coalesce(jq_alter_queue.max_payload_bytes, t.max_payload_bytes),
           dead_letter_retention = coalesce(jq_alter_queue.dead_letter_retention,
                                            t.dead_letter_retention),
           idempotency_window = coalesce(jq_alter_queue.idempotency_window, t.idempotency_window),
           alert_depth_warning = coalesce(jq_alter_queue.alert_depth_warning,
               CASE WHEN clear_alerts THEN NULL ELSE t.alert_depth_warning END),
           alert_depth_critical = coalesce(jq_alter_queue.alert_depth_critical,
               CASE WHEN clear_alerts THEN NULL ELSE t.alert_depth_critical END),
           alert_age_warning = coalesce(jq_alter_queue.alert_age_warning,
               CASE WHEN clear_alerts THEN NULL ELSE t.alert_age_warning END)
     WHERE t.queue_id = qid
    RETURNING * INTO q;
    RETURN q;
END
$$;

COMMENT ON FUNCTION jq.jq_alter_queue IS 'change settings of a pgjq queue; NULL leaves a setting as it is';

CREATE OR REPLACE FUNCTION jq.jq_drop_queue(name text, force boolean DEFAULT false)
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

COMMENT ON FUNCTION jq.jq_drop_queue IS 'drop a pgjq queue; refuses while it has unfinished jobs unless force';

CREATE OR REPLACE FUNCTION jq.jq_list_queues()
RETURNS SETOF jq.queue
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM jq.queue ORDER BY name
$$;

COMMENT ON FUNCTION jq.jq_list_queues IS 'list pgjq queues with their settings';

CREATE OR REPLACE FUNCTION jq.wake_at_commit(queue_id integer)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_wake_at_commit_sql';

CREATE FUNCTION jq.notify_queues(queue_ids integer[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    PERFORM pg_notify('jq_' || q.name, '')
       FROM jq.queue q
      WHERE queue_ids IS NULL OR q.queue_id = ANY (queue_ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION jq.jq_enqueue(
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

COMMENT ON FUNCTION jq.jq_enqueue IS 'enqueue one job in the caller''s transaction; returns its id';

CREATE OR REPLACE FUNCTION jq.jq_enqueue_batch(
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

COMMENT ON FUNCTION jq.jq_enqueue_batch IS 'enqueue many jobs in one call; returns their ids in the order of payloads';

CREATE OR REPLACE FUNCTION jq.jq_create_batch(queue text, label text DEFAULT NULL)
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
    IF octet_length(label) > jq.limit('label_maxlen') THEN
        RAISE EXCEPTION 'batch label of % bytes is too long', octet_length(label)
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('The limit is %s bytes.', jq.limit('label_maxlen'));
    END IF;
    INSERT INTO jq.batch (queue_id, label) VALUES (qid, jq_create_batch.label)
    RETURNING batch_id INTO bid;
    RETURN bid;
END
$$;

COMMENT ON FUNCTION jq.jq_create_batch IS 'create a batch in a queue; pass its id to jq.jq_enqueue or jq.jq_enqueue_batch';

CREATE OR REPLACE FUNCTION jq.jq_submit_batch(queue text, payloads jsonb[], label text DEFAULT NULL,
                                   priority integer DEFAULT 0,
                                   run_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bid bigint := jq.jq_create_batch(jq_submit_batch.queue, jq_submit_batch.label);
BEGIN
    PERFORM jq.jq_enqueue_batch(jq_submit_batch.queue, jq_submit_batch.payloads,
                                jq_submit_batch.priority, jq_submit_batch.run_at,
                                NULL, bid);
    RETURN bid;
END
$$;

COMMENT ON FUNCTION jq.jq_submit_batch IS 'create a batch and enqueue its jobs in one call; returns the batch id';

CREATE OR REPLACE FUNCTION jq.jq_dequeue(
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

COMMENT ON FUNCTION jq.jq_dequeue IS 'lease up to max_jobs ready jobs, most urgent first';

CREATE OR REPLACE FUNCTION jq.jq_ack(
    job_id bigint,
    lease_token bigint,
    result jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_ack';

COMMENT ON FUNCTION jq.jq_ack IS 'complete a leased job; false when the lease token is stale';

CREATE OR REPLACE FUNCTION jq.jq_ack_batch(
    job_ids bigint[],
    lease_tokens bigint[],
    results jsonb[] DEFAULT NULL)
RETURNS TABLE (job_id bigint, acked boolean)
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_ack_batch';

COMMENT ON FUNCTION jq.jq_ack_batch IS 'complete many leased jobs in one call; one row per job, in input order';

CREATE FUNCTION jq.lock_lease(job_id bigint, lease_token bigint)
RETURNS boolean
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_lock_lease';

CREATE FUNCTION jq.finish_cancelled(job_ids bigint[])
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_finish_cancelled';

CREATE FUNCTION jq.promote_due(queue_id integer, max_jobs integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        WITH promoted AS (
            UPDATE jq.job j SET state = 'r'
             WHERE j.id IN (SELECT d.id FROM jq.queue q CROSS JOIN LATERAL
                              (SELECT x.id FROM jq.job x
                                WHERE x.queue_id = q.queue_id AND x.state = 's'
                                  AND x.run_at <= clock_timestamp()
                                ORDER BY x.run_at
                                LIMIT greatest(promote_due.max_jobs, 1)
                                  FOR UPDATE SKIP LOCKED) d
                             WHERE promote_due.queue_id IS NULL
                                OR q.queue_id = promote_due.queue_id)
            RETURNING j.queue_id
        )
        SELECT p.queue_id, count(*)::integer AS jobs FROM promoted p GROUP BY p.queue_id
    LOOP
        PERFORM jq.wake_at_commit(r.queue_id);
        n := n + r.jobs;
    END LOOP;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION jq.fail_leased(job_ids bigint[], error text, permanent boolean,
                               retry_at timestamptz, now timestamptz)
RETURNS TABLE (job_id bigint, state text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    cancelled bigint[] := '{}';
BEGIN
    FOR r IN
        WITH target AS (
            SELECT j.id, j.attempt, q.name,
                   jsonb_build_array(jsonb_build_object(
                       'attempt', j.attempt, 'error', fail_leased.error,
                       'at', fail_leased.now)) AS err,
                   CASE WHEN j.cancel_requested THEN 'c'
                        WHEN fail_leased.permanent OR j.attempt >= q.max_attempts THEN 'x'
                        ELSE 's' END AS outcome,
                   -- in seconds, as doubles: base x 2^(n-1) as an interval
                   -- overflows long before the cap applies (1 day x 2^31)
                   coalesce(fail_leased.retry_at, fail_leased.now + make_interval(secs =>
                       least(extract(epoch FROM q.backoff_cap)::float8,
                             extract(epoch FROM q.backoff_base)::float8
                             * power(2, least(greatest(j.attempt - 1, 0), 40)))
                       * random())) AS retry_at
              FROM jq.job j JOIN jq.queue q USING (queue_id)
             WHERE j.id = ANY (fail_leased.job_ids) AND j.state = 'l'
        ), retried AS (
            UPDATE jq.job j
               SET state = CASE WHEN t.retry_at <= fail_leased.now THEN 'r' ELSE 's' END,
                   run_at = t.retry_at,
                   lease_expires_at = NULL,
                   errors = coalesce(j.errors, '[]') || t.err
              FROM target t
             WHERE j.id = t.id AND t.outcome = 's'
            RETURNING j.id, j.queue_id, j.state, j.run_at
        ), removed AS (
            DELETE FROM jq.job j USING target t
             WHERE j.id = t.id AND t.outcome = 'x'
            RETURNING j.*, t.name AS queue_name, coalesce(j.errors, '[]') || t.err AS all_errors
        ), dead AS (
            INSERT INTO jq.dead_letter (job_id, queue_id, queue, priority, attempts, payload,
                                        errors, last_error, lease_token, run_at,
                                        enqueued_at, failed_at)
            SELECT d.id, d.queue_id, d.queue_name, d.priority, d.attempt, d.payload,
                   d.all_errors, fail_leased.error, d.lease_token, d.run_at, d.enqueued_at,
                   fail_leased.now
              FROM removed d
            RETURNING dead_letter.job_id
        ), noted AS (
            -- a cancelled job keeps its last error for its result row
            UPDATE jq.job j SET errors = coalesce(j.errors, '[]') || t.err
              FROM target t
             WHERE j.id = t.id AND t.outcome = 'c'
            RETURNING j.id
        )
        SELECT x.id, 's' AS outcome, x.queue_id, x.state, x.run_at FROM retried x
        UNION ALL SELECT x.job_id, 'x', NULL, NULL, NULL FROM dead x
        UNION ALL SELECT x.id, 'c', NULL, NULL, NULL FROM noted x
    LOOP
        IF r.outcome = 'c' THEN
            cancelled := cancelled || r.id;
            CONTINUE;
        END IF;
        job_id := r.id;
        state := CASE WHEN r.outcome = 'x' THEN 'dead' ELSE jq.state_name(r.state, r.run_at) END;
        RETURN NEXT;
        IF r.state = 'r' THEN
            PERFORM jq.wake_at_commit(r.queue_id);
        END IF;
    END LOOP;

    IF cardinality(cancelled) > 0 THEN
        PERFORM jq.finish_cancelled(cancelled);
        RETURN QUERY SELECT c.id, 'cancelled'::text FROM unnest(cancelled) AS c(id);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION jq.jq_fail(
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
BEGIN
    IF jq_fail.job_id IS NULL OR jq_fail.lease_token IS NULL THEN
        RAISE EXCEPTION 'job_id and lease_token must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the job_id and lease_token columns that jq.jq_dequeue returned.';
    END IF;
    IF jq_fail.error IS NULL THEN
        RAISE EXCEPTION 'error must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Say why the attempt failed, for example the exception''s message; it is kept with the job.';
    END IF;
    IF retry_in < interval '0'
       OR retry_in > make_interval(days => jq.limit('retry_in_max_days')::integer) THEN
        RAISE EXCEPTION 'retry_in must be between 0 and % days', jq.limit('retry_in_max_days')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', retry_in);
    END IF;

    -- lock the job only if this lease is still its current one
    IF NOT jq.lock_lease(jq_fail.job_id, jq_fail.lease_token) THEN
        RETURN NULL;        -- stale token: refused, nothing changed
    END IF;

    SELECT f.state INTO new_state
      FROM jq.fail_leased(ARRAY[jq_fail.job_id], jq.clip_error(jq_fail.error),
                          coalesce(permanent, false), now + retry_in, now) f;
    RETURN new_state;
END
$$;

COMMENT ON FUNCTION jq.jq_fail IS 'fail a leased job: retry with backoff, or dead-letter it on its last attempt or when permanent; NULL when the token is stale';

CREATE OR REPLACE FUNCTION jq.reclaim_expired_leases(max_jobs integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    -- jq.job before jq.job_result and jq.dead_letter (src/queue.c)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    SELECT count(*)::integer INTO n
      FROM jq.fail_leased(
             ARRAY(SELECT j.id FROM jq.job j
                    WHERE j.lease_expires_at < clock_timestamp()
                    ORDER BY j.lease_expires_at
                    LIMIT greatest(max_jobs, 1)
                      FOR UPDATE SKIP LOCKED),
             'lease expired', false, clock_timestamp(), clock_timestamp());
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION jq.jq_extend(job_id bigint, lease_token bigint,
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
    IF jq_extend.lease_seconds NOT BETWEEN 1 AND jq.limit('lease_seconds_max') THEN
        RAISE EXCEPTION 'lease_seconds must be between 1 and %', jq.limit('lease_seconds_max')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', jq_extend.lease_seconds);
    END IF;

    IF NOT jq.lock_lease(jq_extend.job_id, jq_extend.lease_token) THEN
        RETURN NULL;        -- the lease is lost: stop working on the job
    END IF;
    UPDATE jq.job j
       SET lease_expires_at = clock_timestamp()
               + make_interval(secs => coalesce(jq_extend.lease_seconds, q.lease_seconds))
      FROM jq.queue q
     WHERE j.id = jq_extend.job_id AND NOT j.cancel_requested AND q.queue_id = j.queue_id
    RETURNING j.lease_expires_at INTO expires;
    RETURN expires;     -- NULL: the job was cancelled; stop working on it
END
$$;

COMMENT ON FUNCTION jq.jq_extend IS 'extend a lease from now (heartbeat); NULL when the token is stale or the job was cancelled';

CREATE OR REPLACE FUNCTION jq.jq_cancel(job_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jq_cancel.job_id IS NULL THEN
        RAISE EXCEPTION 'job_id must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- jq.job before jq.job_result and jq.dead_letter (src/queue.c)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;

    -- a ready or scheduled job is cancelled at once
    PERFORM FROM jq.job j
      WHERE j.id = jq_cancel.job_id AND j.state IN ('r', 's')
        FOR UPDATE;
    IF FOUND THEN
        PERFORM jq.finish_cancelled(ARRAY[jq_cancel.job_id]);
        RETURN true;
    END IF;

    -- a leased one is marked: its ack returns false, it is never retried
    UPDATE jq.job j SET cancel_requested = true
     WHERE j.id = jq_cancel.job_id AND j.state = 'l' AND NOT j.cancel_requested;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION jq.jq_cancel IS 'cancel a job: at once when ready or scheduled, at its ack or failure when leased; false when nothing changed';

CREATE OR REPLACE FUNCTION jq.jq_redrive(queue text, job_ids bigint[] DEFAULT NULL)
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
    -- jq.job before jq.job_result and jq.dead_letter (src/queue.c)
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
    IF cardinality(job_ids) > jq.limit('batch_max') THEN
        RAISE EXCEPTION 'a batch may hold at most % jobs', jq.limit('batch_max')
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

COMMENT ON FUNCTION jq.jq_redrive IS 'move dead letters of a queue (all, or those in job_ids) back to ready with fresh attempts; returns how many moved';

CREATE FUNCTION jq.next_deadline()
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT LEAST(
        (SELECT min(j.lease_expires_at) FROM jq.job j WHERE j.lease_expires_at IS NOT NULL),
        (SELECT min(x.run_at) FROM jq.queue q CROSS JOIN LATERAL
            (SELECT j.run_at FROM jq.job j WHERE j.queue_id = q.queue_id AND j.state = 's'
              ORDER BY j.run_at LIMIT 1) x))
$$;

CREATE OR REPLACE FUNCTION jq.jq_result(job_id bigint)
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
    SELECT d.job_id, d.queue, jq.state_name('x', NULL), NULL::jsonb, d.last_error,
           d.attempts, d.priority::integer, d.enqueued_at, d.run_at,
           NULL::timestamptz, d.failed_at
      FROM jq.dead_letter d
     WHERE d.job_id = $1
$$;

COMMENT ON FUNCTION jq.jq_result IS 'state, result, attempts and timestamps of a job; no row for an unknown id';

CREATE OR REPLACE FUNCTION jq.count_trigger()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgjq_count_trigger';

CREATE OR REPLACE FUNCTION jq.counters(
    OUT queue_id integer, OUT priority integer,
    OUT ready bigint, OUT scheduled bigint, OUT leased bigint, OUT dead bigint,
    OUT enqueued_total bigint, OUT succeeded_total bigint, OUT failed_total bigint,
    OUT dead_lettered_total bigint, OUT cancelled_total bigint,
    OUT valid boolean, OUT since timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_counters';

CREATE OR REPLACE FUNCTION jq.counters_valid()
RETURNS boolean
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_counters_valid';

CREATE OR REPLACE FUNCTION jq.reset_counters()
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_reset_counters';

CREATE OR REPLACE FUNCTION jq.lock_for_rebuild(timeout_ms integer)
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

CREATE FUNCTION jq.rebuild_counters(timeout_ms integer DEFAULT 2000)
RETURNS boolean
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_rebuild_counters';

COMMENT ON VIEW jq.queue_stats IS 'pgjq queue depth, age and throughput, from shared counters (no count(*))';

CREATE OR REPLACE FUNCTION jq.sample_stats(keep interval DEFAULT '7 days')
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

CREATE OR REPLACE FUNCTION jq.check_alerts()
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

CREATE OR REPLACE FUNCTION jq.purge_expired(batch integer DEFAULT 1000)
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

COMMENT ON VIEW jq.batch_progress IS 'pgjq progress per batch: total, waiting, in flight, succeeded, dead, percent complete';

COMMENT ON VIEW jq.dead_letter_errors IS 'pgjq dead letters, one row per error (no payloads)';

CREATE OR REPLACE FUNCTION jq.jq_worker_status(
    OUT preloaded boolean,
    OUT databases text,
    OUT worker_pid integer,
    OUT status text)
RETURNS record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_worker_status';

COMMENT ON FUNCTION jq.jq_worker_status IS 'whether pgjq is preloaded and a worker serves this database (lease reclaim, promotion, wakeups)';

CREATE FUNCTION jq.jq_security_check()
RETURNS TABLE (schema name, on_path_of text, problem text, hint text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH callers AS (
        SELECT r.oid, r.rolname
          FROM pg_roles r
         WHERE r.rolname = current_user
            OR (r.rolcanlogin
                AND (pg_has_role(r.oid, 'jq_producer', 'MEMBER')
                     OR pg_has_role(r.oid, 'jq_worker', 'MEMBER')
                     OR pg_has_role(r.oid, 'jq_admin', 'MEMBER')
                     OR pg_has_role(r.oid, 'jq_reader', 'MEMBER')))
    ), paths AS (
        SELECT c.rolname, 'this session' AS source, current_setting('search_path') AS path
          FROM callers c WHERE c.rolname = current_user
        UNION ALL
        SELECT c.rolname,
               CASE WHEN s.setrole = 0 THEN 'ALTER DATABASE ... SET search_path'
                    ELSE 'ALTER ROLE ... SET search_path' END,
               substr(cfg, length('search_path=') + 1)
          FROM pg_db_role_setting s
         CROSS JOIN LATERAL unnest(s.setconfig) AS cfg
          JOIN callers c ON s.setrole IN (0, c.oid)
         WHERE s.setdatabase IN (0, (SELECT d.oid FROM pg_database d
                                      WHERE d.datname = current_database()))
           AND cfg LIKE 'search_path=%'
        UNION ALL
        SELECT c.rolname, 'the default search_path', st.boot_val
          FROM callers c, pg_settings st WHERE st.name = 'search_path'
    ), schemas AS (
        SELECT p.rolname, p.source,
               CASE WHEN btrim(e) IN ('"$user"', '$user') THEN p.rolname::text
                    ELSE btrim(btrim(e), '"') END AS nspname
          FROM paths p CROSS JOIN LATERAL unnest(string_to_array(p.path, ',')) AS e
    )
    SELECT n.nspname,
           string_agg(DISTINCT format('%I (%s)', s.rolname, s.source), ', '),
           format('PUBLIC may create objects in schema %I, which is on the search_path of pgjq''s callers: a look-alike function created there captures unqualified calls of the pgjq API',
                  n.nspname),
           format('Call pgjq qualified, as jq.jq_enqueue(...), and run REVOKE CREATE ON SCHEMA %I FROM PUBLIC.',
                  n.nspname)
      FROM schemas s
      JOIN pg_namespace n ON n.nspname = s.nspname
     WHERE EXISTS (SELECT FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                    WHERE a.grantee = 0 AND a.privilege_type = 'CREATE')
     GROUP BY n.nspname
     ORDER BY n.nspname
$$;

COMMENT ON FUNCTION jq.jq_security_check IS 'schemas where PUBLIC may create objects that are on the search_path of pgjq''s callers';


/* Privileges of the new functions, as in a fresh install. */
REVOKE ALL ON FUNCTION
    jq.limits(), jq.limit(text), jq.clip_error(text), jq.queue_check(),
    jq.notify_queues(integer[]), jq.lock_lease(bigint, bigint),
    jq.finish_cancelled(bigint[]), jq.promote_due(integer, integer),
    jq.next_deadline(), jq.rebuild_counters(integer), jq.jq_security_check()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.jq_security_check(), jq.limits(), jq.limit(text) TO jq_reader;
-- jq_admin reaches it as a member of jq_reader, as in a fresh install
REVOKE EXECUTE ON FUNCTION jq.jq_list_queues() FROM jq_admin;

/* Warn about schemas where PUBLIC may create, as CREATE EXTENSION does. */
DO $check$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM jq.jq_security_check() LOOP
        RAISE WARNING 'pgjq: %', r.problem
            USING DETAIL = format('On the search_path of: %s.', r.on_path_of),
                  HINT = r.hint;
    END LOOP;
END
$check$;
