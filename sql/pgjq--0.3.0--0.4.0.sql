/*
 * pgjq 0.3.0 -> 0.4.0: scan bounds (src/bounds.c).
 *
 * jq_dequeue, the promotion of due jobs and the reclaim of expired leases
 * start their index scans at bounds kept in shared memory, past the dead
 * entries of jobs that have left the state the index holds.  The count
 * trigger tells the bounds where a job entered or left a state, so it must
 * fire for an UPDATE of any column of those indexes' keys.
 *
 * New: jq.jq_ack_dequeue, a worker's turn (complete the jobs it holds,
 * lease the next ones) in one call.
 *
 * New: job keys and flow control (concurrency limits per queue and per
 * key, admission limits, weighted fair share; jq.key_stats).
 */
\echo Use "ALTER EXTENSION pgjq UPDATE TO '0.4.0'" to load this file. \quit


/*
 * Job keys and flow control (src/keys.c): a job may carry a key; queues
 * and keys get concurrency limits, admission limits and weighted fair
 * share.  Jobs with a key are in jq.job_key_ready_idx instead of
 * jq.job_ready_idx, so each ready job keeps one entry.
 */
ALTER TABLE jq.stats_history ADD COLUMN expired_total bigint NOT NULL DEFAULT 0;
ALTER TABLE jq.queue ADD COLUMN max_in_flight integer,
                     ADD COLUMN key_max_in_flight integer,
                     ADD COLUMN key_max_queued bigint,
                     ADD COLUMN fair boolean NOT NULL DEFAULT false,
                     ADD COLUMN key_ordered boolean NOT NULL DEFAULT false,
                     ADD COLUMN rate_requests integer,
                     ADD COLUMN rate_cost numeric,
                     ADD COLUMN rate_period interval NOT NULL DEFAULT '1 minute';
ALTER TABLE jq.job ADD COLUMN key text,
                   ADD COLUMN progress jsonb,
                   ADD COLUMN progress_at timestamptz,
                   ADD COLUMN deadline timestamptz,
                   ADD COLUMN cost numeric;
ALTER TABLE jq.job_result ADD COLUMN key text,
                          ADD COLUMN deadline timestamptz,
                          ADD COLUMN cost numeric,
                          ADD COLUMN usage jsonb;
COMMENT ON TABLE jq.job_result IS 'pgjq succeeded (d), cancelled (c) and expired (e) jobs with their results, kept for the queue''s result_retention';
ALTER TABLE jq.dead_letter ADD COLUMN key text;

DROP INDEX jq.job_ready_idx;
CREATE INDEX job_ready_idx ON jq.job (queue_id, priority DESC, run_at, id)
    WHERE state = 'r' AND key IS NULL;
CREATE INDEX job_deadline_idx ON jq.job (deadline)
    WHERE deadline IS NOT NULL AND state IN ('r', 's');
CREATE INDEX job_key_ready_idx ON jq.job (queue_id, pg_catalog.hashtextextended(key, 0),
                                        priority DESC, run_at, id)
    WHERE state = 'r' AND key IS NOT NULL;

DROP TRIGGER job_count ON jq.job;
CREATE TRIGGER job_count AFTER UPDATE OF queue_id, state, priority, run_at, lease_expires_at, id, key,
                            deadline OR DELETE
    ON jq.job FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('job');

CREATE TABLE jq.key_policy (
    queue_id      integer NOT NULL,
    key           text NOT NULL,
    weight        integer NOT NULL DEFAULT 1,
    max_in_flight integer,
    max_queued    bigint,
    ordered       boolean,
    rate_requests integer,
    rate_cost     numeric,
    rate_period   interval,
    version       bigint NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT key_policy_pkey PRIMARY KEY (queue_id, key)
);

COMMENT ON TABLE jq.key_policy IS 'pgjq job keys'' flow-control policies; change them with jq.jq_set_key_policy and jq.jq_reset_key_policy';

SELECT pg_catalog.pg_extension_config_dump('jq.key_policy', '');

CREATE SEQUENCE jq.key_policy_version_seq AS bigint;

CREATE FUNCTION jq.key_counters(
    OUT queue_id integer, OUT key text, OUT ready bigint, OUT scheduled bigint,
    OUT leased bigint, OUT reserved bigint, OUT queued_reserved bigint,
    OUT delivered_total bigint, OUT succeeded_total bigint, OUT weight integer,
    OUT servable boolean, OUT requests_left float8, OUT cost_left float8,
    OUT throttled_since timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_key_counters';

CREATE FUNCTION jq.install_key_policy(queue_id integer, key text, version bigint,
                                      weight integer, max_in_flight integer,
                                      max_queued bigint, ordered boolean,
                                      rate_requests integer, rate_cost numeric,
                                      rate_period interval)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_install_key_policy';

CREATE FUNCTION jq.forget_keys(queue_id integer)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_forget_keys';

-- the rule of a job key, for the policy functions: src/keys.c's, the one
-- place it is written (NULL refused here: a policy needs a key)
CREATE FUNCTION jq.check_job_key(key text)
RETURNS void
LANGUAGE C IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_check_job_key';

-- the rule of a rate limit, for queues and key policies
CREATE FUNCTION jq.check_rate(requests integer, cost numeric, period interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF requests < 1 OR cost <= 0 OR cost = 'Infinity' OR cost = 'NaN' THEN
        RAISE EXCEPTION 'rate_requests and rate_cost must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got rate_requests %s and rate_cost %s.',
                                  coalesce(requests::text, 'NULL'), coalesce(cost::text, 'NULL')),
                  HINT = 'NULL means no limit: pass clear_limits => true to remove them.';
    END IF;
    IF cost > 1e15 THEN
        RAISE EXCEPTION 'rate_cost must be at most 1e15'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', cost);
    END IF;
    IF period IS NULL OR period < interval '1 second' OR period > interval '1 day' THEN
        RAISE EXCEPTION 'rate_period must be between 1 second and 1 day'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(period::text, 'NULL'));
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
    IF q.max_in_flight < 1 OR q.key_max_in_flight < 1 OR q.key_max_queued < 1 THEN
        RAISE EXCEPTION 'max_in_flight, key_max_in_flight and key_max_queued must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got max_in_flight %s, key_max_in_flight %s and key_max_queued %s.',
                                  coalesce(q.max_in_flight::text, 'NULL'),
                                  coalesce(q.key_max_in_flight::text, 'NULL'),
                                  coalesce(q.key_max_queued::text, 'NULL')),
                  HINT = 'NULL means no limit: pass clear_limits => true to jq.jq_alter_queue to remove the limits.';
    END IF;
    IF q.fair IS NULL THEN
        RAISE EXCEPTION 'fair must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF q.key_ordered IS NULL THEN
        RAISE EXCEPTION 'key_ordered must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM jq.check_rate(q.rate_requests, q.rate_cost, q.rate_period);
    IF q.max_payload_bytes IS NULL
       OR q.max_payload_bytes NOT BETWEEN jq.limit('payload_bytes_min') AND jq.limit('payload_bytes_max') THEN
        RAISE EXCEPTION 'max_payload_bytes must be between % and %',
                jq.limit('payload_bytes_min'), jq.limit('payload_bytes_max')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(q.max_payload_bytes::text, 'NULL'));
    END IF;
END
$$;

DROP FUNCTION jq.jq_create_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean);
DROP FUNCTION jq.jq_alter_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean);
DROP FUNCTION jq.jq_submit_batch(text, jsonb[], text, integer, timestamptz);
DROP FUNCTION jq.jq_enqueue(text, jsonb, integer, timestamptz, text, bigint);
DROP FUNCTION jq.jq_enqueue_batch(text, jsonb[], integer, timestamptz, text[], bigint);
DROP FUNCTION jq.jq_dequeue(text, integer, integer);
DROP FUNCTION jq.jq_result(bigint);

CREATE FUNCTION jq.jq_create_queue(
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
    if_not_exists boolean DEFAULT false,
    max_in_flight integer DEFAULT NULL,
    key_max_in_flight integer DEFAULT NULL,
    key_max_queued bigint DEFAULT NULL,
    fair boolean DEFAULT false,
    key_ordered boolean DEFAULT false,
    rate_requests integer DEFAULT NULL,
    rate_cost numeric DEFAULT NULL,
    rate_period interval DEFAULT '1 minute')
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
                              alert_depth_warning, alert_depth_critical, alert_age_warning,
                              max_in_flight, key_max_in_flight, key_max_queued, fair,
                              key_ordered, rate_requests, rate_cost, rate_period)
        VALUES (jq_create_queue.name, jq_create_queue.lease_seconds,
                jq_create_queue.max_attempts, jq_create_queue.backoff_base,
                jq_create_queue.backoff_cap, jq_create_queue.result_retention,
                jq_create_queue.max_payload_bytes, jq_create_queue.dead_letter_retention,
                jq_create_queue.idempotency_window, jq_create_queue.alert_depth_warning,
                jq_create_queue.alert_depth_critical, jq_create_queue.alert_age_warning,
                jq_create_queue.max_in_flight, jq_create_queue.key_max_in_flight,
                jq_create_queue.key_max_queued, coalesce(jq_create_queue.fair, false),
                coalesce(jq_create_queue.key_ordered, false),
                jq_create_queue.rate_requests, jq_create_queue.rate_cost,
                coalesce(jq_create_queue.rate_period, '1 minute'))
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

CREATE FUNCTION jq.jq_alter_queue(
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
    clear_alerts boolean DEFAULT false,
    max_in_flight integer DEFAULT NULL,
    key_max_in_flight integer DEFAULT NULL,
    key_max_queued bigint DEFAULT NULL,
    fair boolean DEFAULT NULL,
    clear_limits boolean DEFAULT false,
    key_ordered boolean DEFAULT NULL,
    rate_requests integer DEFAULT NULL,
    rate_cost numeric DEFAULT NULL,
    rate_period interval DEFAULT NULL)
RETURNS jq.queue
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer := jq.queue_id(jq_alter_queue.name, lock => true);
    q jq.queue;
BEGIN
    -- thresholds and limits can only be removed explicitly (clear_alerts,
    -- clear_limits): NULL means "unchanged"; the new row is checked by
    -- jq.queue_check
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
               CASE WHEN clear_alerts THEN NULL ELSE t.alert_age_warning END),
           max_in_flight = coalesce(jq_alter_queue.max_in_flight,
               CASE WHEN clear_limits THEN NULL ELSE t.max_in_flight END),
           key_max_in_flight = coalesce(jq_alter_queue.key_max_in_flight,
               CASE WHEN clear_limits THEN NULL ELSE t.key_max_in_flight END),
           key_max_queued = coalesce(jq_alter_queue.key_max_queued,
               CASE WHEN clear_limits THEN NULL ELSE t.key_max_queued END),
           fair = coalesce(jq_alter_queue.fair, t.fair),
           key_ordered = coalesce(jq_alter_queue.key_ordered, t.key_ordered),
           rate_requests = coalesce(jq_alter_queue.rate_requests,
               CASE WHEN clear_limits THEN NULL ELSE t.rate_requests END),
           rate_cost = coalesce(jq_alter_queue.rate_cost,
               CASE WHEN clear_limits THEN NULL ELSE t.rate_cost END),
           rate_period = coalesce(jq_alter_queue.rate_period, t.rate_period)
     WHERE t.queue_id = qid
    RETURNING * INTO q;
    RETURN q;
END
$$;

COMMENT ON FUNCTION jq.jq_alter_queue IS 'change settings of a pgjq queue; NULL leaves a setting as it is';

CREATE FUNCTION jq.jq_enqueue(
    queue text,
    payload jsonb,
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    batch_id bigint DEFAULT NULL,
    key text DEFAULT NULL,
    deadline timestamptz DEFAULT NULL,
    cost numeric DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_enqueue';

COMMENT ON FUNCTION jq.jq_enqueue IS 'enqueue one job in the caller''s transaction; returns its id';

CREATE FUNCTION jq.jq_enqueue_batch(
    queue text,
    payloads jsonb[],
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    batch_id bigint DEFAULT NULL,
    keys text[] DEFAULT NULL,
    deadlines timestamptz[] DEFAULT NULL,
    costs numeric[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_enqueue_batch';

COMMENT ON FUNCTION jq.jq_enqueue_batch IS 'enqueue many jobs in one call; returns their ids in the order of payloads';

CREATE FUNCTION jq.jq_submit_batch(queue text, payloads jsonb[], label text DEFAULT NULL,
                                   priority integer DEFAULT 0,
                                   run_at timestamptz DEFAULT NULL,
                                   keys text[] DEFAULT NULL,
                                   deadlines timestamptz[] DEFAULT NULL,
                                   costs numeric[] DEFAULT NULL)
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
                                NULL, bid, jq_submit_batch.keys,
                                jq_submit_batch.deadlines, jq_submit_batch.costs);
    RETURN bid;
END
$$;

COMMENT ON FUNCTION jq.jq_submit_batch IS 'create a batch and enqueue its jobs in one call; returns the batch id';

CREATE FUNCTION jq.jq_dequeue(
    queue text,
    max_jobs integer DEFAULT 1,
    lease_seconds integer DEFAULT NULL,
    wait interval DEFAULT NULL)
RETURNS TABLE (
    job_id bigint,
    lease_token bigint,
    attempt integer,
    priority integer,
    payload jsonb,
    enqueued_at timestamptz,
    lease_expires_at timestamptz,
    key text)
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_dequeue';

COMMENT ON FUNCTION jq.jq_dequeue IS 'lease up to max_jobs ready jobs, most urgent first; with wait, wait up to that long for one';

CREATE FUNCTION jq.jq_result(job_id bigint)
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
    finished_at timestamptz,
    key text,
    progress jsonb,
    progress_at timestamptz,
    deadline timestamptz,
    cost numeric,
    usage jsonb)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT j.id, q.name, jq.state_name(j.state, j.run_at), NULL::jsonb,
           j.errors -> -1 ->> 'error',
           j.attempt, j.priority::integer, j.enqueued_at, j.run_at,
           j.started_at, NULL::timestamptz, j.key, j.progress, j.progress_at,
           j.deadline, coalesce(j.cost, 1), NULL::jsonb
      FROM jq.job j JOIN jq.queue q USING (queue_id)
     WHERE j.id = $1
    UNION ALL
    SELECT r.job_id, q.name, jq.state_name(r.state, NULL), r.result, r.last_error,
           r.attempts, r.priority::integer, r.enqueued_at, r.run_at,
           r.started_at, r.finished_at, r.key, NULL::jsonb, NULL::timestamptz,
           r.deadline, coalesce(r.cost, 1), r.usage
      FROM jq.job_result r JOIN jq.queue q USING (queue_id)
     WHERE r.job_id = $1
    UNION ALL
    SELECT d.job_id, d.queue, jq.state_name('x', NULL), NULL::jsonb, d.last_error,
           d.attempts, d.priority::integer, d.enqueued_at, d.run_at,
           NULL::timestamptz, d.failed_at, d.key, NULL::jsonb, NULL::timestamptz,
           NULL::timestamptz, NULL::numeric, NULL::jsonb
      FROM jq.dead_letter d
     WHERE d.job_id = $1
$$;

COMMENT ON FUNCTION jq.jq_result IS 'state, result, attempts, timestamps and progress of a job; no row for an unknown id';

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
                       * random())) AS retry_at,
                   coalesce(p.ordered, q.key_ordered) AS ordered
              FROM jq.job j JOIN jq.queue q USING (queue_id)
              LEFT JOIN jq.key_policy p ON p.queue_id = j.queue_id AND p.key = j.key
             WHERE j.id = ANY (fail_leased.job_ids) AND j.state = 'l'
        ), retried AS (
            UPDATE jq.job j
               SET state = CASE WHEN t.retry_at <= fail_leased.now THEN 'r' ELSE 's' END,
                   -- a job of an ordered key keeps its place in the key's
                   -- order: ready again at its enqueue time (jq.promote_due
                   -- does the same when its backoff is over)
                   run_at = CASE WHEN t.ordered AND t.retry_at <= fail_leased.now
                                 THEN j.enqueued_at ELSE t.retry_at END,
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
                                        enqueued_at, failed_at, key)
            SELECT d.id, d.queue_id, d.queue_name, d.priority, d.attempt, d.payload,
                   d.all_errors, fail_leased.error, d.lease_token, d.run_at, d.enqueued_at,
                   fail_leased.now, d.key
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
                        enqueued_at, errors, payload, key)
    SELECT job_id, queue_id, 'r', priority, 0, lease_token, clock_timestamp(),
           enqueued_at, errors, payload, key
      FROM moved;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        PERFORM jq.wake_at_commit(qid, moved);
    END IF;
    RETURN moved;
END
$$;

CREATE FUNCTION jq.scan_bounds(
    OUT state text, OUT queue_id integer, OUT priority integer,
    OUT at timestamptz, OUT id bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_scan_bounds';

CREATE FUNCTION jq.scan_bound(state "char", queue_id integer, priority integer,
                              OUT at timestamptz, OUT id bigint, OUT generation bigint)
RETURNS record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_scan_bound';

CREATE FUNCTION jq.advance_scan_bound(state "char", queue_id integer, priority integer,
                                      generation bigint, at timestamptz, id bigint)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_advance_scan_bound';

-- Drops a queue's bounds when the transaction commits (jq_drop_queue).
CREATE FUNCTION jq.forget_scan_bounds(queue_id integer)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_forget_scan_bounds';

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
    DELETE FROM jq.key_policy WHERE queue_id = qid;
    DELETE FROM jq.usage_pending WHERE queue_id = qid;
    DELETE FROM jq.usage_daily WHERE queue_id = qid;
    DELETE FROM jq.stats_history WHERE queue_id = qid;
    UPDATE jq.alert SET cleared_at = clock_timestamp()
     WHERE queue_id = qid AND cleared_at IS NULL;
    DELETE FROM jq.queue WHERE queue_id = qid;
    PERFORM jq.forget_scan_bounds(qid);
    PERFORM jq.forget_keys(qid);
END
$$;

CREATE OR REPLACE FUNCTION jq.promote_due(queue_id integer, max_jobs integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    n integer := 0;
    qids integer[];
    starts timestamptz[];
    generations bigint[];
    now timestamptz;
BEGIN
    -- each queue's scan bound, in a statement of its own: it must be read
    -- before the snapshot of the scan below (src/bounds.c); a queue whose
    -- bound is infinity has no scheduled job
    SELECT array_agg(q.queue_id), array_agg(b.at), array_agg(b.generation)
      INTO qids, starts, generations
      FROM jq.queue q CROSS JOIN LATERAL jq.scan_bound('s', q.queue_id, NULL) b
     WHERE (promote_due.queue_id IS NULL OR q.queue_id = promote_due.queue_id)
       AND b.at < 'infinity';
    IF qids IS NULL THEN
        RETURN 0;
    END IF;
    -- a variable, not clock_timestamp() in the query, so that it bounds the
    -- index scan rather than filtering every row it reads
    now := clock_timestamp();
    FOR r IN
        WITH bound AS (
            SELECT * FROM unnest(qids, starts, generations) AS u(queue_id, start, generation)
        ), promoted AS (
            -- a job of an ordered key (a retry) goes back to its place in
            -- the key's order, its enqueue time
            UPDATE jq.job j
               SET state = 'r',
                   run_at = CASE WHEN (SELECT coalesce(p.ordered, q.key_ordered)
                                         FROM jq.queue q
                                         LEFT JOIN jq.key_policy p
                                           ON p.queue_id = q.queue_id AND p.key = j.key
                                        WHERE q.queue_id = j.queue_id)
                                 THEN j.enqueued_at ELSE j.run_at END
             WHERE j.id IN (SELECT d.id FROM bound b CROSS JOIN LATERAL
                              (SELECT x.id FROM jq.job x
                                WHERE x.queue_id = b.queue_id AND x.state = 's'
                                  AND x.run_at >= b.start AND x.run_at <= now
                                ORDER BY x.run_at
                                LIMIT greatest(promote_due.max_jobs, 1)
                                  FOR UPDATE SKIP LOCKED) d)
            RETURNING j.queue_id
        ), heads AS (
            -- the first scheduled job of each queue this snapshot sees from
            -- the bound on, promoted by this statement or not
            SELECT b.queue_id, b.generation,
                   (SELECT x.run_at FROM jq.job x
                     WHERE x.queue_id = b.queue_id AND x.state = 's' AND x.run_at >= b.start
                     ORDER BY x.run_at LIMIT 1) AS head
              FROM bound b
        )
        SELECT h.queue_id, h.generation, h.head,
               (SELECT count(*)::integer FROM promoted p WHERE p.queue_id = h.queue_id) AS jobs
          FROM heads h
    LOOP
        PERFORM jq.advance_scan_bound('s', r.queue_id, NULL, r.generation, r.head, NULL);
        IF r.jobs > 0 THEN
            PERFORM jq.wake_at_commit(r.queue_id, r.jobs);
            n := n + r.jobs;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION jq.reclaim_expired_leases(max_jobs integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    bound record;
    head timestamptz;
    now timestamptz;
BEGIN
    -- jq.job before jq.job_result and jq.dead_letter (src/queue.c)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    -- the leases' scan bound, before the snapshot of the scan (src/bounds.c)
    bound := jq.scan_bound('l', NULL, NULL);
    IF bound.at = 'infinity' THEN
        RETURN 0;
    END IF;
    now := clock_timestamp();
    SELECT count(*)::integer INTO n
      FROM jq.fail_leased(
             ARRAY(SELECT j.id FROM jq.job j
                    WHERE j.lease_expires_at >= bound.at AND j.lease_expires_at < now
                    ORDER BY j.lease_expires_at
                    LIMIT greatest(max_jobs, 1)
                      FOR UPDATE SKIP LOCKED),
             'lease expired', false, now, now);
    -- the first lease still there from the bound on (those just reclaimed
    -- are gone for this transaction; if it rolls back they lower the bound)
    SELECT min(j.lease_expires_at) INTO head
      FROM jq.job j WHERE j.lease_expires_at >= bound.at;
    PERFORM jq.advance_scan_bound('l', NULL, NULL, bound.generation, head, NULL);
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION jq.next_deadline()
RETURNS timestamptz
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT LEAST(
        (SELECT min(j.lease_expires_at) FROM jq.job j
          WHERE j.lease_expires_at >= (SELECT b.at FROM jq.scan_bound('l', NULL, NULL) b)),
        (SELECT min(x.run_at) FROM jq.queue q
           CROSS JOIN LATERAL jq.scan_bound('s', q.queue_id, NULL) b
           CROSS JOIN LATERAL
            (SELECT j.run_at FROM jq.job j
              WHERE j.queue_id = q.queue_id AND j.state = 's' AND j.run_at >= b.at
              ORDER BY j.run_at LIMIT 1) x
          WHERE b.at < 'infinity'),
        (SELECT min(j.deadline) FROM jq.job j
          WHERE j.deadline >= (SELECT b.at FROM jq.scan_bound('e', NULL, NULL) b)
            AND j.state IN ('r', 's')))
$$;

-- jq.counters() gains expired_total: the view that reads it goes with it
DROP VIEW jq.queue_stats;
DROP FUNCTION jq.counters();
CREATE FUNCTION jq.counters(
    OUT queue_id integer, OUT priority integer,
    OUT ready bigint, OUT scheduled bigint, OUT leased bigint, OUT dead bigint,
    OUT enqueued_total bigint, OUT succeeded_total bigint, OUT failed_total bigint,
    OUT dead_lettered_total bigint, OUT cancelled_total bigint,
    OUT expired_total bigint,
    OUT valid boolean, OUT since timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_counters';

CREATE VIEW jq.queue_stats AS
WITH c AS MATERIALIZED (SELECT * FROM jq.counters()),
     -- where each lane's ready jobs begin: the oldest one is the first
     -- from there, past the dead entries of jobs handed out (src/bounds.c)
     b AS MATERIALIZED (SELECT * FROM jq.scan_bounds())
SELECT q.name AS queue,
       coalesce(sum(c.ready), 0)::bigint AS ready,
       coalesce(sum(c.scheduled), 0)::bigint AS scheduled,
       coalesce(sum(c.leased), 0)::bigint AS in_flight,
       coalesce(sum(c.dead), 0)::bigint AS dead,
       coalesce(jsonb_object_agg(c.priority::text, c.ready ORDER BY c.priority DESC)
                    FILTER (WHERE c.ready > 0), '{}') AS ready_by_priority,
       clock_timestamp() - least(
       (SELECT min(o.run_at)
          FROM c c2
          LEFT JOIN b ON b.state = 'ready' AND b.queue_id = c2.queue_id
                     AND b.priority = c2.priority
          CROSS JOIN LATERAL
               (SELECT j.run_at FROM jq.job j
                 WHERE j.queue_id = c2.queue_id AND j.state = 'r' AND j.key IS NULL
                   AND j.priority = c2.priority
                   AND (j.run_at, j.id) >= (coalesce(b.at, '-infinity'),
                                            coalesce(b.id, -9223372036854775808))
                 ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1) o
         WHERE c2.queue_id = q.queue_id AND c2.ready > 0),
       -- jobs with a key: the next job of each key with ready jobs
       (SELECT min(o.run_at)
          FROM jq.key_counters() k
          CROSS JOIN LATERAL
               (SELECT j.run_at FROM jq.job j
                 WHERE j.queue_id = k.queue_id AND j.state = 'r' AND j.key = k.key
                   AND pg_catalog.hashtextextended(j.key, 0) = pg_catalog.hashtextextended(k.key, 0)
                 ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1) o
         WHERE k.queue_id = q.queue_id AND k.key IS NOT NULL AND k.ready > 0))
           AS oldest_ready_age,
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
       jq.counters_valid() AS counters_valid,
       q.max_in_flight,
       coalesce(sum(c.expired_total), 0)::bigint AS expired_total
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
 GROUP BY q.queue_id, q.name, q.max_in_flight, h.sampled_at, h.enqueued_total,
          h.succeeded_total;

COMMENT ON VIEW jq.queue_stats IS 'pgjq queue depth, age and throughput, from shared counters (no count(*))';
REVOKE ALL ON jq.queue_stats FROM PUBLIC;
REVOKE ALL ON FUNCTION jq.counters() FROM PUBLIC;
GRANT SELECT ON jq.queue_stats TO jq_reader;
GRANT EXECUTE ON FUNCTION jq.counters() TO jq_reader;

/*
 * A worker's turn in one call: complete the jobs it holds (ack each, or
 * fail it when its element of errors is not NULL) and lease the next ones,
 * in one round trip and one transaction.  The first three arguments are
 * jq_dequeue's; without job_ids it is jq_dequeue.
 */
CREATE FUNCTION jq.jq_ack_dequeue(
    queue text,
    max_jobs integer DEFAULT 1,
    lease_seconds integer DEFAULT NULL,
    job_ids bigint[] DEFAULT NULL,
    lease_tokens bigint[] DEFAULT NULL,
    results jsonb[] DEFAULT NULL,
    errors text[] DEFAULT NULL)
RETURNS TABLE (
    job_id bigint,
    lease_token bigint,
    attempt integer,
    priority integer,
    payload jsonb,
    enqueued_at timestamptz,
    lease_expires_at timestamptz,
    key text)
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_ack_dequeue';

COMMENT ON FUNCTION jq.jq_ack_dequeue IS 'ack (or fail) the jobs a worker holds and lease the next ones, in one call';

REVOKE ALL ON FUNCTION jq.jq_ack_dequeue(text, integer, integer, bigint[], bigint[], jsonb[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.jq_ack_dequeue(text, integer, integer, bigint[], bigint[], jsonb[], text[]) TO jq_worker;

/*
 * Space back after a burst or a held snapshot (src/compact.c, docs/design.md
 * "Space after a held snapshot").  VACUUM frees the space of dead rows for
 * reuse but gives a btree's pages, and a table's pages short of its end,
 * back to the file system never.
 *
 * jq.compact_result_heap(max_rows) moves up to max_rows live rows of
 * jq.job_result off its last pages into the room before them, when a
 * quarter of the table can be emptied so and fewer than max_rows / 10
 * results came in since the last call, so that the next vacuum truncates
 * the file.
 */
CREATE FUNCTION jq.compact_result_heap(max_rows integer DEFAULT 10000)
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_compact_result_heap';

/*
 * jq.free_space(rel) is the fraction of a pgjq table or index that is
 * free: for a table, what its free space map records (as vacuum last left
 * it); for a btree index, what a rebuild would give back, read from its
 * pages.  NULL for other relations.
 */
CREATE FUNCTION jq.free_space(rel regclass)
RETURNS double precision
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_free_space';

/*
 * What jq.compact has seen and done, one row per table and index of jq.job
 * and jq.job_result (readable by jq_reader): baseline_bytes is the size it
 * first saw the relation at, or had when it last compacted it;
 * compacted_at and bytes_before say when it last did, and the size then.
 */
CREATE TABLE jq.compaction (
    relation       text PRIMARY KEY,
    baseline_bytes bigint NOT NULL,
    compacted_at   timestamptz,
    bytes_before   bigint
);

COMMENT ON TABLE jq.compaction IS 'pgjq: what jq.compact saw and did per table and index (sizes in bytes)';

/*
 * jq.compact(max_rows) gives space back after a burst or a held snapshot,
 * one step per call, so that each step holds its locks briefly: it
 * rebuilds one index of jq.job or jq.job_result that has grown past one
 * and a half times its baseline (and past 1 MB) and is more than half
 * free (jq.free_space:
 * while a snapshot still holds the dead entries, vacuum frees nothing and
 * a rebuild would keep them all; under steady churn an index empties and
 * fills again between vacuums, which the baseline tells apart), and
 * returns 1; or, with no such index, when jq.job_result has grown past
 * one and a half times its baseline, moves up to max_rows rows off its tail
 * (jq.compact_result_heap) and returns how many.  The rebuild holds a
 * SHARE lock on the table (writers wait) while it reads the table, which
 * vacuum has made small again by then; it waits at most 100 ms for the
 * lock and otherwise returns 0, to try again at the next call.  The
 * worker calls it every pgjq.stats_interval, until it returns 0, while
 * pgjq.compact is on.
 */
CREATE FUNCTION jq.compact(max_rows integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
AS $$
DECLARE
    r record;
    bytes bigint;
    baseline bigint;
    moved integer;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 1000000'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(max_rows::text, 'NULL'));
    END IF;
    -- jq.job's lock first, whatever comes next (the lock order)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind, 'jq.' || c.relname AS name
          FROM pg_class c
         WHERE c.oid IN ('jq.job'::regclass, 'jq.job_result'::regclass)
            OR c.oid IN (SELECT x.indexrelid FROM pg_index x
                          WHERE x.indrelid IN ('jq.job'::regclass, 'jq.job_result'::regclass))
         ORDER BY pg_relation_size(c.oid) DESC, c.relname
    LOOP
        bytes := pg_relation_size(r.rel);
        INSERT INTO jq.compaction (relation, baseline_bytes) VALUES (r.name, bytes)
            ON CONFLICT (relation) DO NOTHING;
        SELECT c.baseline_bytes INTO baseline FROM jq.compaction c WHERE c.relation = r.name;
        CONTINUE WHEN bytes <= greatest(baseline * 3 / 2, 1024 * 1024);
        IF r.relkind = 'i' AND jq.free_space(r.rel) >= 0.5 THEN
            BEGIN
                EXECUTE format('REINDEX INDEX %s', r.rel);
            EXCEPTION WHEN lock_not_available THEN
                RETURN 0;       -- busy: the next call tries again
            END;
            UPDATE jq.compaction
               SET baseline_bytes = bytes, compacted_at = clock_timestamp(), bytes_before = bytes
             WHERE relation = r.name;
            RAISE LOG 'pgjq: rebuilt index % to give its space back (% bytes before, % after)',
                r.name, bytes, pg_relation_size(r.rel);
            RETURN 1;
        ELSIF r.rel = 'jq.job_result'::regclass THEN
            moved := jq.compact_result_heap(max_rows);
            IF moved > 0 THEN
                UPDATE jq.compaction
                   SET compacted_at = clock_timestamp(), bytes_before = bytes
                 WHERE relation = r.name;
                RAISE LOG 'pgjq: moved % rows of jq.job_result off its tail for vacuum to truncate', moved;
                RETURN moved;
            END IF;
        END IF;
    END LOOP;
    RETURN 0;
END
$$;

REVOKE ALL ON FUNCTION jq.compact(integer), jq.compact_result_heap(integer),
    jq.free_space(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.free_space(regclass) TO jq_reader;
GRANT SELECT ON jq.compaction TO jq_reader;

REVOKE ALL ON FUNCTION jq.scan_bounds(), jq.scan_bound("char", integer, integer),
    jq.advance_scan_bound("char", integer, integer, bigint, timestamptz, bigint),
    jq.forget_scan_bounds(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.scan_bounds() TO jq_reader;

-- Bounds are only installed for a schema whose count trigger notes every
-- change they need: have the worker rebuild the counters now, which
-- installs them (the totals restart from the tables).
CREATE FUNCTION jq.jq_set_key_policy(
    queue text,
    key text,
    weight integer DEFAULT NULL,
    max_in_flight integer DEFAULT NULL,
    max_queued bigint DEFAULT NULL,
    clear_limits boolean DEFAULT false,
    ordered boolean DEFAULT NULL,
    rate_requests integer DEFAULT NULL,
    rate_cost numeric DEFAULT NULL,
    rate_period interval DEFAULT NULL)
RETURNS jq.key_policy
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer := jq.queue_id(jq_set_key_policy.queue);
    p jq.key_policy;
BEGIN
    PERFORM jq.check_job_key(jq_set_key_policy.key);
    IF weight NOT BETWEEN 1 AND jq.limit('key_weight_max') THEN
        RAISE EXCEPTION 'weight must be between 1 and %', jq.limit('key_weight_max')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', weight),
                  HINT = 'A key with weight 3 gets three times the deliveries of a key with weight 1 when both have jobs waiting.';
    END IF;
    IF jq_set_key_policy.max_in_flight < 1 OR jq_set_key_policy.max_queued < 1 THEN
        RAISE EXCEPTION 'max_in_flight and max_queued must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got max_in_flight %s and max_queued %s.',
                                  coalesce(jq_set_key_policy.max_in_flight::text, 'NULL'),
                                  coalesce(jq_set_key_policy.max_queued::text, 'NULL')),
                  HINT = 'NULL leaves a limit as it is; clear_limits => true removes the key''s own limits.';
    END IF;
    INSERT INTO jq.key_policy AS t (queue_id, key, weight, max_in_flight, max_queued,
                                    ordered, rate_requests, rate_cost, rate_period, version)
    VALUES (qid, jq_set_key_policy.key, coalesce(jq_set_key_policy.weight, 1),
            jq_set_key_policy.max_in_flight, jq_set_key_policy.max_queued,
            jq_set_key_policy.ordered, jq_set_key_policy.rate_requests,
            jq_set_key_policy.rate_cost, jq_set_key_policy.rate_period, nextval('jq.key_policy_version_seq'))
    ON CONFLICT ON CONSTRAINT key_policy_pkey DO UPDATE
       SET weight = coalesce(jq_set_key_policy.weight, t.weight),
           max_in_flight = coalesce(jq_set_key_policy.max_in_flight,
               CASE WHEN jq_set_key_policy.clear_limits THEN NULL ELSE t.max_in_flight END),
           max_queued = coalesce(jq_set_key_policy.max_queued,
               CASE WHEN jq_set_key_policy.clear_limits THEN NULL ELSE t.max_queued END),
           ordered = coalesce(jq_set_key_policy.ordered,
               CASE WHEN jq_set_key_policy.clear_limits THEN NULL ELSE t.ordered END),
           rate_requests = coalesce(jq_set_key_policy.rate_requests,
               CASE WHEN jq_set_key_policy.clear_limits THEN NULL ELSE t.rate_requests END),
           rate_cost = coalesce(jq_set_key_policy.rate_cost,
               CASE WHEN jq_set_key_policy.clear_limits THEN NULL ELSE t.rate_cost END),
           rate_period = coalesce(jq_set_key_policy.rate_period,
               CASE WHEN jq_set_key_policy.clear_limits THEN NULL ELSE t.rate_period END),
           version = nextval('jq.key_policy_version_seq'),
           updated_at = now()
    RETURNING * INTO p;
    PERFORM jq.check_rate(p.rate_requests, p.rate_cost, coalesce(p.rate_period, '1 minute'));
    PERFORM jq.install_key_policy(p.queue_id, p.key, p.version, p.weight,
                                  p.max_in_flight, p.max_queued, p.ordered,
                                  p.rate_requests, p.rate_cost, p.rate_period);
    RETURN p;
END
$$;

COMMENT ON FUNCTION jq.jq_set_key_policy IS 'set or change the flow-control policy of one job key of a queue';

CREATE FUNCTION jq.jq_reset_key_policy(queue text, key text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer := jq.queue_id(jq_reset_key_policy.queue);
    n integer := 0;
    r record;
BEGIN
    IF jq_reset_key_policy.key IS NOT NULL THEN
        PERFORM jq.check_job_key(jq_reset_key_policy.key);
    END IF;
    FOR r IN
        DELETE FROM jq.key_policy p
         WHERE p.queue_id = qid
           AND (jq_reset_key_policy.key IS NULL OR p.key = jq_reset_key_policy.key)
        RETURNING p.queue_id, p.key
    LOOP
        PERFORM jq.install_key_policy(r.queue_id, r.key,
                                      nextval('jq.key_policy_version_seq'), NULL, NULL, NULL,
                                      NULL, NULL, NULL, NULL);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

COMMENT ON FUNCTION jq.jq_reset_key_policy IS 'remove the flow-control policy of one job key, or of every key of a queue; returns how many';

CREATE VIEW jq.key_stats AS
WITH k AS MATERIALIZED (SELECT * FROM jq.key_counters())
SELECT q.name AS queue,
       k.key,
       k.ready,
       k.scheduled,
       k.leased + k.reserved AS in_flight,
       coalesce(p.max_in_flight, q.key_max_in_flight) AS max_in_flight,
       coalesce(p.weight, 1) AS weight,
       coalesce(p.max_queued, q.key_max_queued) AS max_queued,
       coalesce(p.ordered, q.key_ordered) AS ordered,
       p.rate_requests,
       p.rate_cost,
       coalesce(p.rate_period, '1 minute') AS rate_period,
       round(k.requests_left::numeric, 2) AS requests_left,
       round(k.cost_left::numeric, 2) AS cost_left,
       clock_timestamp() - k.throttled_since AS throttled_for,
       k.delivered_total,
       k.succeeded_total,
       -- the age of the key's next job
       CASE WHEN k.ready = 0 THEN NULL
            WHEN k.key IS NULL THEN
                (SELECT clock_timestamp() - j.run_at FROM jq.job j
                  WHERE j.queue_id = k.queue_id AND j.state = 'r' AND j.key IS NULL
                  ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1)
            ELSE
                (SELECT clock_timestamp() - j.run_at FROM jq.job j
                  WHERE j.queue_id = k.queue_id AND j.state = 'r' AND j.key = k.key
                   AND pg_catalog.hashtextextended(j.key, 0) = pg_catalog.hashtextextended(k.key, 0)
                  ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1)
       END AS oldest_ready_age,
       k.ready > 0 AND coalesce(
           k.leased + k.reserved >= coalesce(p.max_in_flight, q.key_max_in_flight)
           OR (coalesce(p.ordered, q.key_ordered) AND (k.leased + k.reserved > 0 OR k.scheduled > 0))
           OR sum(k.leased + k.reserved) OVER (PARTITION BY k.queue_id) >= q.max_in_flight
           OR k.throttled_since IS NOT NULL,
           false) AS held_back,
       p.key IS NOT NULL AS has_policy
  FROM k
  JOIN jq.queue q ON q.queue_id = k.queue_id
  LEFT JOIN jq.key_policy p ON p.queue_id = k.queue_id AND p.key = k.key
 WHERE k.ready > 0 OR k.scheduled > 0 OR k.leased > 0 OR k.reserved > 0
       OR k.delivered_total > 0 OR p.key IS NOT NULL;

COMMENT ON VIEW jq.key_stats IS 'pgjq job keys: jobs, in flight against limits, weights and totals per key, from shared memory (no count(*))';

/*
 * jq.jq_progress(job_id, lease_token, progress) records a running job's
 * progress, fenced like jq_ack: true when recorded; false when the lease
 * is no longer current or the job was cancelled (stop working on it).  An
 * in-place (HOT) update of the job's row: progress is in no index and
 * fires no trigger, so a report every second from every worker is cheap
 * (bench/progress.sh measures it against a dequeue and ack).
 */
CREATE FUNCTION jq.jq_progress(job_id bigint, lease_token bigint, progress jsonb)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jq_progress.job_id IS NULL OR jq_progress.lease_token IS NULL THEN
        RAISE EXCEPTION 'job_id and lease_token must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the job_id and lease_token columns that jq.jq_dequeue returned.';
    END IF;
    IF jq_progress.progress IS NULL THEN
        RAISE EXCEPTION 'progress must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Report a JSON value, for example {"done": 120, "total": 400}.';
    END IF;
    IF pg_column_size(jq_progress.progress) > jq.limit('progress_bytes_max') THEN
        RAISE EXCEPTION 'progress of % bytes is too large', pg_column_size(jq_progress.progress)
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('The limit is %s bytes.', jq.limit('progress_bytes_max')),
                  HINT = 'Report counts and a short status; keep outputs for the result.';
    END IF;
    UPDATE jq.job j
       SET progress = jq_progress.progress, progress_at = clock_timestamp()
     WHERE j.id = jq_progress.job_id AND j.state = 'l'
       AND j.lease_token = jq_progress.lease_token AND NOT j.cancel_requested;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION jq.jq_progress IS 'record a running job''s progress (fenced by its lease token); false when the lease is stale or the job was cancelled';

REVOKE ALL ON FUNCTION jq.jq_progress(bigint, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.jq_progress(bigint, bigint, jsonb) TO jq_worker;

REVOKE ALL ON FUNCTION
    jq.jq_create_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean, integer, integer, bigint, boolean, boolean, integer, numeric, interval),
    jq.jq_alter_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean, integer, integer, bigint, boolean, boolean, boolean, integer, numeric, interval),
    jq.jq_enqueue(text, jsonb, integer, timestamptz, text, bigint, text, timestamptz, numeric),
    jq.jq_enqueue_batch(text, jsonb[], integer, timestamptz, text[], bigint, text[], timestamptz[], numeric[]),
    jq.jq_submit_batch(text, jsonb[], text, integer, timestamptz, text[], timestamptz[], numeric[]),
    jq.jq_dequeue(text, integer, integer, interval),
    jq.jq_result(bigint),
    jq.jq_set_key_policy(text, text, integer, integer, bigint, boolean, boolean, integer, numeric, interval),
    jq.jq_reset_key_policy(text, text),
    jq.key_counters(),
    jq.install_key_policy(integer, text, bigint, integer, integer, bigint, boolean, integer, numeric, interval),
    jq.forget_keys(integer),
    jq.check_job_key(text)
FROM PUBLIC;
REVOKE ALL ON jq.key_policy, jq.key_stats, jq.key_policy_version_seq FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    jq.jq_enqueue(text, jsonb, integer, timestamptz, text, bigint, text, timestamptz, numeric),
    jq.jq_enqueue_batch(text, jsonb[], integer, timestamptz, text[], bigint, text[], timestamptz[], numeric[]),
    jq.jq_submit_batch(text, jsonb[], text, integer, timestamptz, text[], timestamptz[], numeric[]),
    jq.jq_result(bigint)
TO jq_producer;
GRANT EXECUTE ON FUNCTION jq.jq_dequeue(text, integer, integer, interval), jq.jq_result(bigint) TO jq_worker;
GRANT EXECUTE ON FUNCTION jq.key_counters() TO jq_reader;
GRANT SELECT ON jq.key_policy, jq.key_stats TO jq_reader;
GRANT EXECUTE ON FUNCTION
    jq.jq_create_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean, integer, integer, bigint, boolean, boolean, integer, numeric, interval),
    jq.jq_alter_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean, integer, integer, bigint, boolean, boolean, boolean, integer, numeric, interval),
    jq.jq_set_key_policy(text, text, integer, integer, bigint, boolean, boolean, integer, numeric, interval),
    jq.jq_reset_key_policy(text, text)
TO jq_admin;

SELECT jq.reset_counters();

-- history samples keep the expired total
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
                                  oldest_ready_age, counters_since, expired_total)
    SELECT clock_timestamp(), q.queue_id, s.queue, s.ready, s.scheduled, s.in_flight,
           s.dead, s.enqueued_total, s.succeeded_total, s.failed_total,
           s.dead_lettered_total, s.cancelled_total, s.oldest_ready_age,
           (SELECT max(c.since) FROM jq.counters() c WHERE c.queue_id = q.queue_id),
           s.expired_total
      FROM jq.queue_stats s JOIN jq.queue q ON q.name = s.queue
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM jq.stats_history WHERE sampled_at < clock_timestamp() - keep;
    RETURN n;
END
$$;

-- batch progress counts expired jobs
CREATE OR REPLACE VIEW jq.batch_progress AS
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
            THEN greatest(max(r.finished_at), max(d.failed_at)) END AS finished_at,
       count(*) FILTER (WHERE r.state = 'e') AS expired,
       coalesce(sum(coalesce(r.cost, 1)) FILTER (WHERE r.state = 'd'), 0) AS cost
  FROM jq.batch b
  JOIN jq.queue q ON q.queue_id = b.queue_id
  LEFT JOIN jq.batch_job m ON m.batch_id = b.batch_id
  LEFT JOIN jq.job j ON j.id = m.job_id
  LEFT JOIN jq.job_result r ON r.job_id = m.job_id
  LEFT JOIN jq.dead_letter d ON d.job_id = m.job_id
 GROUP BY b.batch_id, q.name, b.label, b.created_at;

-- Ends the given ready or scheduled jobs as expired (jq.expire_deadlines
-- has locked them and checked their deadline): each leaves jq.job for
-- jq.job_result, through the hot path's finish.  Returns how many.
CREATE FUNCTION jq.finish_expired(job_ids bigint[])
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_finish_expired';

/*
 * jq.expire_deadlines(max_jobs) ends the jobs not started by their
 * deadline: ready or scheduled jobs whose deadline has passed go to
 * jq.job_result as expired (jq.finish_expired), at most max_jobs of them.
 * Jobs locked by a transaction right now are skipped (SKIP LOCKED) and
 * taken next time; a leased job is never expired (it runs on).  The scan
 * starts at the deadlines' bound (src/bounds.c).  The background worker
 * calls it every pass and wakes for the next deadline; returns how many
 * jobs expired.
 */
CREATE FUNCTION jq.expire_deadlines(max_jobs integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    bound record;
    head timestamptz;
    now timestamptz;
BEGIN
    -- jq.job before jq.job_result (src/queue.c)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    -- the bound, before the snapshot of the scan (src/bounds.c)
    bound := jq.scan_bound('e', NULL, NULL);
    IF bound.at = 'infinity' THEN
        RETURN 0;
    END IF;
    now := clock_timestamp();
    n := jq.finish_expired(
             ARRAY(SELECT j.id FROM jq.job j
                    WHERE j.deadline >= bound.at AND j.deadline <= now
                      AND j.state IN ('r', 's')
                    ORDER BY j.deadline
                    LIMIT greatest(max_jobs, 1)
                      FOR UPDATE SKIP LOCKED));
    -- the first deadline still there from the bound on (those just
    -- expired are gone for this transaction)
    SELECT min(j.deadline) INTO head
      FROM jq.job j WHERE j.deadline >= bound.at AND j.state IN ('r', 's');
    PERFORM jq.advance_scan_bound('e', NULL, NULL, bound.generation, head, NULL);
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION jq.finish_expired(bigint[]), jq.expire_deadlines(integer) FROM PUBLIC;

-- jq_extend warns past a job's deadline
CREATE OR REPLACE FUNCTION jq.jq_extend(job_id bigint, lease_token bigint,
                             lease_seconds integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expires timestamptz;
    deadline timestamptz;
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
    RETURNING j.lease_expires_at, j.deadline INTO expires, deadline;
    -- a job is never interrupted by its deadline, only told
    IF deadline < clock_timestamp() THEN
        RAISE WARNING 'the job is past its deadline'
            USING DETAIL = format('Job %s had to start by %s; it started before and runs on.',
                                  jq_extend.job_id, deadline),
                  HINT = 'Finish it, or end it with jq.jq_fail(..., permanent => true) if its result is no longer wanted.';
    END IF;
    RETURN expires;     -- NULL: the job was cancelled; stop working on it
END
$$;

COMMENT ON FUNCTION jq.jq_extend IS 'extend a lease from now (heartbeat); NULL when the token is stale or the job was cancelled';

/* ------------------------------------------------------------------------
 * Usage accounting.  A worker may report what a job consumed when it acks
 * or fails it (jq_ack(..., usage => ...), jq_fail(..., usage => ...)): a
 * JSON object of numbers, say {"cost": 812, "input_tokens": 700}.  The ack
 * keeps it with the job's result; each report also goes, as one row, to
 * jq.usage_pending (insert-only, no index: a few microseconds per ack),
 * and the worker rolls those rows up into jq.usage_daily every
 * pgjq.stats_interval (jq.rollup_usage), so that jq.usage never reads
 * finished jobs.  A report's cost is its "cost" field, or else the job's
 * cost given at enqueue (default 1).
 * ------------------------------------------------------------------------ */
CREATE TABLE jq.usage_pending (
    queue_id    integer NOT NULL,
    key         text,
    job_id      bigint NOT NULL,
    reported_at timestamptz NOT NULL,
    acked       boolean NOT NULL,      -- an ack (else a failed attempt)
    cost        numeric NOT NULL,
    usage       jsonb NOT NULL
);

COMMENT ON TABLE jq.usage_pending IS 'pgjq usage reports not yet rolled up into jq.usage_daily; read jq.usage';

SELECT pg_catalog.pg_extension_config_dump('jq.usage_pending', '');

CREATE TABLE jq.usage_daily (
    queue_id integer NOT NULL,
    key      text,                     -- NULL: the jobs without a key
    day      date NOT NULL,            -- in UTC
    jobs     bigint NOT NULL,          -- acks that reported usage
    reports  bigint NOT NULL,          -- acks and failed attempts that did
    cost     numeric NOT NULL,
    usage    jsonb NOT NULL,           -- the sum of each numeric field
    CONSTRAINT usage_daily_key UNIQUE NULLS NOT DISTINCT (queue_id, key, day)
);

COMMENT ON TABLE jq.usage_daily IS 'pgjq usage per queue, key and day (UTC), rolled up from jq.usage_pending; read jq.usage';

SELECT pg_catalog.pg_extension_config_dump('jq.usage_daily', '');

-- the sum of two usage objects, field by field; fields that are not
-- numbers are left out
CREATE FUNCTION jq.usage_add(a jsonb, b jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(f.k, f.v), '{}')
      FROM (SELECT e.key AS k, sum(e.value::text::numeric) AS v
              FROM (SELECT * FROM jsonb_each(coalesce(a, '{}'))
                    UNION ALL SELECT * FROM jsonb_each(coalesce(b, '{}'))) e
             WHERE jsonb_typeof(e.value) = 'number'
             GROUP BY e.key) f
$$;

CREATE AGGREGATE jq.usage_sum(jsonb) (
    SFUNC = jq.usage_add,
    STYPE = jsonb,
    INITCOND = '{}'
);

/*
 * jq.rollup_usage() moves the pending usage reports into jq.usage_daily,
 * exactly once: the rows it deletes are the rows it adds, in one
 * transaction (a report not yet committed waits for the next rollup).
 * Returns how many reports it moved.  The worker calls it every
 * pgjq.stats_interval.
 */
CREATE FUNCTION jq.rollup_usage()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    WITH moved AS (
        DELETE FROM jq.usage_pending RETURNING *
    ), sums AS (
        SELECT m.queue_id, m.key, (m.reported_at AT TIME ZONE 'UTC')::date AS day,
               count(*) FILTER (WHERE m.acked) AS jobs, count(*) AS reports,
               sum(m.cost) AS cost, jq.usage_sum(m.usage) AS usage
          FROM moved m
         GROUP BY 1, 2, 3
    ), upserted AS (
        INSERT INTO jq.usage_daily AS d (queue_id, key, day, jobs, reports, cost, usage)
        SELECT * FROM sums
        ON CONFLICT ON CONSTRAINT usage_daily_key DO UPDATE
           SET jobs = d.jobs + excluded.jobs,
               reports = d.reports + excluded.reports,
               cost = d.cost + excluded.cost,
               usage = jq.usage_add(d.usage, excluded.usage)
        RETURNING 1
    )
    SELECT coalesce(sum(s.reports), 0)::integer INTO n
      FROM sums s, (SELECT count(*) FROM upserted) u;
    RETURN n;
END
$$;

/*
 * Usage per queue, key and day (UTC): what was rolled up, and the reports
 * not rolled up yet (seconds' worth), never the finished jobs.  jobs: acks
 * that reported usage; reports: those and the failed attempts that did;
 * cost: the reports' cost fields, or their jobs' cost; usage: the sum of
 * every numeric field reported.
 */
CREATE VIEW jq.usage AS
SELECT q.name AS queue, u.key, u.day, sum(u.jobs)::bigint AS jobs,
       sum(u.reports)::bigint AS reports, sum(u.cost) AS cost, jq.usage_sum(u.usage) AS usage
  FROM (SELECT queue_id, key, day, jobs, reports, cost, usage FROM jq.usage_daily
        UNION ALL
        SELECT p.queue_id, p.key, (p.reported_at AT TIME ZONE 'UTC')::date,
               CASE WHEN p.acked THEN 1 ELSE 0 END, 1, p.cost, p.usage
          FROM jq.usage_pending p) u
  JOIN jq.queue q ON q.queue_id = u.queue_id
 GROUP BY q.name, u.key, u.day;

COMMENT ON VIEW jq.usage IS 'pgjq usage per queue, job key and day (UTC): jobs, cost and every numeric field reported at ack or fail';

REVOKE ALL ON jq.usage_pending, jq.usage_daily, jq.usage FROM PUBLIC;
REVOKE ALL ON FUNCTION jq.usage_add(jsonb, jsonb), jq.usage_sum(jsonb), jq.rollup_usage() FROM PUBLIC;
GRANT SELECT ON jq.usage TO jq_reader;

-- usage reports at ack and fail: new parameters
-- the rule of a usage report (src/usage.c), for jq_fail
CREATE FUNCTION jq.check_usage(usage jsonb)
RETURNS void
LANGUAGE C IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_check_usage_sql';

DROP FUNCTION jq.jq_ack(bigint, bigint, jsonb);
DROP FUNCTION jq.jq_ack_batch(bigint[], bigint[], jsonb[]);
DROP FUNCTION jq.jq_fail(bigint, bigint, text, interval, boolean);
CREATE FUNCTION jq.jq_ack(
    job_id bigint,
    lease_token bigint,
    result jsonb DEFAULT NULL,
    usage jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_ack';

COMMENT ON FUNCTION jq.jq_ack IS 'complete a leased job; false when the lease token is stale';

CREATE FUNCTION jq.jq_ack_batch(
    job_ids bigint[],
    lease_tokens bigint[],
    results jsonb[] DEFAULT NULL,
    usages jsonb[] DEFAULT NULL)
RETURNS TABLE (job_id bigint, acked boolean)
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_ack_batch';

COMMENT ON FUNCTION jq.jq_ack_batch IS 'complete many leased jobs in one call; one row per job, in input order';

CREATE FUNCTION jq.jq_fail(
    job_id bigint,
    lease_token bigint,
    error text,
    retry_in interval DEFAULT NULL,
    permanent boolean DEFAULT false,
    usage jsonb DEFAULT NULL)
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

    IF jq_fail.usage IS NOT NULL THEN
        PERFORM jq.check_usage(jq_fail.usage);
    END IF;

    -- lock the job only if this lease is still its current one
    IF NOT jq.lock_lease(jq_fail.job_id, jq_fail.lease_token) THEN
        RETURN NULL;        -- stale token: refused, nothing changed
    END IF;

    -- what the failed attempt consumed counts all the same
    IF jq_fail.usage IS NOT NULL THEN
        INSERT INTO jq.usage_pending (queue_id, key, job_id, reported_at, acked, cost, usage)
        SELECT j.queue_id, j.key, j.id, now, false,
               coalesce((jq_fail.usage ->> 'cost')::numeric, j.cost, 1), jq_fail.usage
          FROM jq.job j WHERE j.id = jq_fail.job_id;
    END IF;

    SELECT f.state INTO new_state
      FROM jq.fail_leased(ARRAY[jq_fail.job_id], jq.clip_error(jq_fail.error),
                          coalesce(permanent, false), now + retry_in, now) f;
    RETURN new_state;
END
$$;

COMMENT ON FUNCTION jq.jq_fail IS 'fail a leased job: retry with backoff, or dead-letter it on its last attempt or when permanent; NULL when the token is stale';

REVOKE ALL ON FUNCTION jq.check_usage(jsonb),
    jq.jq_ack(bigint, bigint, jsonb, jsonb),
    jq.jq_ack_batch(bigint[], bigint[], jsonb[], jsonb[]),
    jq.jq_fail(bigint, bigint, text, interval, boolean, jsonb)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    jq.jq_ack(bigint, bigint, jsonb, jsonb),
    jq.jq_ack_batch(bigint[], bigint[], jsonb[], jsonb[]),
    jq.jq_fail(bigint, bigint, text, interval, boolean, jsonb)
TO jq_worker;

REVOKE ALL ON FUNCTION jq.check_rate(integer, numeric, interval) FROM PUBLIC;

/* ------------------------------------------------------------------------
 * Waiting in one call (src/longpoll.c, src/waiters.c): a long-poll
 * dequeue and an await, woken by the commits that give them what they
 * wait for.  The functions hold their statement's snapshot while they
 * wait; the procedures, CALLed outside a transaction block, commit before
 * each sleep and hold nothing.  Waits are bounded by wait_seconds_max.
 * ------------------------------------------------------------------------ */

-- SECURITY INVOKER and no SET: a procedure that commits may have neither.
-- Each look is a call of jq.jq_dequeue, with its checks and rights.
CREATE PROCEDURE jq.jq_wait_dequeue(
    queue text,
    max_jobs integer DEFAULT 1,
    lease_seconds integer DEFAULT NULL,
    wait interval DEFAULT interval '30 seconds',
    INOUT jobs jsonb DEFAULT NULL)
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgjq_wait_dequeue';

COMMENT ON PROCEDURE jq.jq_wait_dequeue IS 'jq_dequeue waiting up to wait for jobs, holding no snapshot, lock or xid while it waits; jobs is a JSON array of jq_dequeue''s rows';

CREATE FUNCTION jq.jq_await(job_id bigint, timeout interval DEFAULT interval '30 seconds')
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
    finished_at timestamptz,
    key text,
    progress jsonb,
    progress_at timestamptz,
    deadline timestamptz,
    cost numeric,
    usage jsonb)
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_await';

COMMENT ON FUNCTION jq.jq_await IS 'jq_result''s row as soon as the job has ended, or its state when timeout passes; no row for an unknown job';

CREATE PROCEDURE jq.jq_wait_result(
    job_id bigint,
    timeout interval DEFAULT interval '30 seconds',
    INOUT result jsonb DEFAULT NULL)
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgjq_wait_result';

COMMENT ON PROCEDURE jq.jq_wait_result IS 'jq_await holding no snapshot, lock or xid while it waits; result is jq_result''s row as JSON, NULL for an unknown job';

-- wakeups count jobs: as many waiting sessions as take them are woken
DROP FUNCTION jq.wake_at_commit(integer);
-- Wakes the queue's waiting sessions (as many as take jobs) and its
-- listeners when the current transaction commits; a no-op without
-- shared_preload_libraries.
CREATE FUNCTION jq.wake_at_commit(queue_id integer, jobs integer DEFAULT 1)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_wake_at_commit_sql';

REVOKE ALL ON FUNCTION jq.wake_at_commit(integer, integer), jq.jq_await(bigint, interval) FROM PUBLIC;
REVOKE ALL ON PROCEDURE jq.jq_wait_dequeue(text, integer, integer, interval, jsonb),
    jq.jq_wait_result(bigint, interval, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.jq_await(bigint, interval) TO jq_producer, jq_worker;
GRANT EXECUTE ON PROCEDURE jq.jq_wait_result(bigint, interval, jsonb) TO jq_producer, jq_worker;
GRANT EXECUTE ON PROCEDURE jq.jq_wait_dequeue(text, integer, integer, interval, jsonb) TO jq_worker;

/* ------------------------------------------------------------------------
 * Shards (docs/scale-out.md).  Behind a PL/Proxy router (proxy/) each
 * shard hands out job and batch ids from a range of its own, from
 * shard * 2^44 on, so that the router finds a job's shard from its id
 * alone (job_id >> 44) and a batch has one id on every shard.  That is
 * 2^44 ids per shard; at most 512 shards keep every id below 2^53, exact
 * where JSON numbers are doubles (JavaScript).
 * ------------------------------------------------------------------------ */

CREATE FUNCTION jq.jq_set_shard(shard integer)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo bigint;
    hi bigint;
    held_lo bigint;
    held_hi bigint;
    batch_seq regclass := pg_get_serial_sequence('jq.batch', 'batch_id')::regclass;
    job_next bigint;
    batch_next bigint;
    next_job bigint;
    next_batch bigint;
BEGIN
    IF shard IS NULL OR shard < 0 OR shard > 511 THEN
        RAISE EXCEPTION 'shard must be between 0 and 511'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(shard::text, 'NULL'));
    END IF;
    lo := greatest(shard::bigint << 44, 1);
    hi := ((shard::bigint + 1) << 44) - 1;

    -- the value each sequence gives next, read from the sequence itself
    -- (pg_sequences shows no last_value after a RESTART, which would make
    -- a second call start the range over)
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO job_next
      FROM jq.job_id_seq;
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM %s',
                   batch_seq) INTO batch_next;

    -- the jobs this database holds must be in the shard's range, where
    -- the router looks for them (the primary keys make this six probes)
    SELECT min(m.id), max(m.id) INTO held_lo, held_hi
      FROM (SELECT min(j.id) AS id FROM jq.job j UNION ALL
            SELECT max(j.id) FROM jq.job j UNION ALL
            SELECT min(r.job_id) FROM jq.job_result r UNION ALL
            SELECT max(r.job_id) FROM jq.job_result r UNION ALL
            SELECT min(d.job_id) FROM jq.dead_letter d UNION ALL
            SELECT max(d.job_id) FROM jq.dead_letter d) m;
    -- and so must the batches it made itself: those below where its
    -- sequence stands, unless that is in the range already (set by an
    -- earlier call, used or not: the batches below the range are then
    -- other shards', adopted by jq_adopt_batch)
    IF held_lo < lo OR held_hi > hi
       OR (batch_next NOT BETWEEN lo AND hi + 1
           AND EXISTS (SELECT FROM jq.batch b WHERE b.batch_id < batch_next
                                                AND b.batch_id NOT BETWEEN lo AND hi)) THEN
        RAISE EXCEPTION 'this database holds jobs or batches outside the id range of shard %', shard
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Shard %s''s ids are %s to %s; this database''s jobs have ids %s to %s, its batch ids reach %s.',
                                  shard, lo, hi, coalesce(held_lo::text, '(none)'),
                                  coalesce(held_hi::text, '(none)'), batch_next - 1),
                  HINT = 'Only shard 0 can hold the jobs of a database that ran before sharding; make new databases the other shards.';
    END IF;

    -- ids go on from where the shard's range was used up to
    next_job := greatest(lo, held_hi + 1,
                         CASE WHEN job_next BETWEEN lo AND hi THEN job_next END);
    next_batch := greatest(lo, CASE WHEN batch_next BETWEEN lo AND hi THEN batch_next END,
                           (SELECT max(b.batch_id) + 1 FROM jq.batch b
                             WHERE b.batch_id BETWEEN lo AND hi));
    EXECUTE format('ALTER SEQUENCE jq.job_id_seq MINVALUE %s MAXVALUE %s START %s RESTART %s',
                   lo, hi, lo, next_job);
    EXECUTE format('ALTER SEQUENCE %s MINVALUE %s MAXVALUE %s START %s RESTART %s',
                   batch_seq, lo, hi, lo, next_batch);
END
$$;

COMMENT ON FUNCTION jq.jq_set_shard IS 'make this database shard N behind a PL/Proxy router: its job and batch ids from N * 2^44 on';

-- A batch made on another shard (the router's jq_create_batch makes it on
-- one and adopts it on the others), so that the jobs of it that are
-- enqueued here count toward it.  Idempotent.
CREATE FUNCTION jq.jq_adopt_batch(batch_id bigint, queue text, label text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer := jq.queue_id(jq_adopt_batch.queue);
    own record;
    had integer;
BEGIN
    IF jq_adopt_batch.batch_id IS NULL THEN
        RAISE EXCEPTION 'batch_id must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- ids in this database's own range are its own to give
    SELECT s.min_value, s.max_value INTO own FROM pg_sequences s
     WHERE format('%I.%I', s.schemaname, s.sequencename)::regclass
           = pg_get_serial_sequence('jq.batch', 'batch_id')::regclass;
    IF jq_adopt_batch.batch_id < 1 THEN
        RAISE EXCEPTION 'batch id must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', jq_adopt_batch.batch_id);
    END IF;
    IF jq_adopt_batch.batch_id BETWEEN own.min_value AND own.max_value THEN
        RAISE EXCEPTION 'batch id % is in this shard''s own range', jq_adopt_batch.batch_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Adopt only batches made on another shard; run jq.jq_set_shard on every shard first.';
    END IF;
    INSERT INTO jq.batch (batch_id, queue_id, label)
    OVERRIDING SYSTEM VALUE
    VALUES (jq_adopt_batch.batch_id, qid, jq_adopt_batch.label)
    ON CONFLICT ON CONSTRAINT batch_pkey DO NOTHING;
    SELECT b.queue_id INTO had FROM jq.batch b WHERE b.batch_id = jq_adopt_batch.batch_id;
    IF had <> qid THEN
        RAISE EXCEPTION 'batch % belongs to another queue', jq_adopt_batch.batch_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

COMMENT ON FUNCTION jq.jq_adopt_batch IS 'record a batch made on another shard under the same id, so this shard''s jobs of it count toward it';

REVOKE ALL ON FUNCTION jq.jq_set_shard(integer), jq.jq_adopt_batch(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.jq_adopt_batch(bigint, text, text) TO jq_producer;
