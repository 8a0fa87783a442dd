/*
 * pgjq 0.1.0 -> 0.2.0
 *
 * - jq.job loses its two CHECK constraints: the count trigger checks the
 *   same invariants in C (the executor parsed the CHECKs for every
 *   statement: 5% of an enqueue).
 * - The count triggers on UPDATE and DELETE become AFTER triggers (a
 *   BEFORE ROW trigger made every ack WAL-log a row lock).
 * - Queue settings are cached per backend: a statement trigger on jq.queue
 *   invalidates the caches; enqueues take a share lock on their queue and
 *   jq_drop_queue an exclusive one (jq.lock_queue), so a drop can no longer
 *   orphan the jobs of a concurrent enqueue.
 * - Interval settings of a queue are bounded at 100 years, and the retry
 *   delay is computed without overflowing (jq.fail_leased).
 * - The API functions that write jq.job and jq.job_result or
 *   jq.dead_letter lock jq.job first, and the counter rebuild gives up
 *   before the deadlock detector would cancel a client: an ack could
 *   deadlock with the rebuild (it locked jq.job_result first).
 * - jq.queue_stats.counters_valid comes from jq.counters_valid(): it said
 *   true while no counters were built yet (after a start, before the
 *   worker's rebuild), with every depth at 0.
 * - jq_redrive refuses NULL elements, more than one dimension and more
 *   than 10,000 ids in job_ids.
 *
 * The library of 0.2.0 still serves a 0.1.0 schema until this script runs.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pgjq UPDATE TO '0.2.0'" to load this file. \quit

ALTER TABLE jq.job DROP CONSTRAINT job_state_check, DROP CONSTRAINT job_lease_check;

DROP TRIGGER job_count ON jq.job;
DROP TRIGGER dead_letter_count ON jq.dead_letter;
CREATE TRIGGER job_count_insert BEFORE INSERT
    ON jq.job FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('job');
CREATE TRIGGER job_count AFTER UPDATE OF queue_id, state, priority OR DELETE
    ON jq.job FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('job');
CREATE TRIGGER dead_letter_count_insert BEFORE INSERT
    ON jq.dead_letter FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('dead_letter');
CREATE TRIGGER dead_letter_count AFTER DELETE
    ON jq.dead_letter FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('dead_letter');

CREATE FUNCTION jq.queue_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgjq_queue_changed';

CREATE TRIGGER queue_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON jq.queue FOR EACH STATEMENT EXECUTE FUNCTION jq.queue_changed();

CREATE FUNCTION jq.lock_queue(queue_id integer)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'pgjq_lock_queue';

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

REVOKE ALL ON FUNCTION jq.queue_changed(), jq.lock_queue(integer),
    jq.check_interval_bound(text, interval) FROM PUBLIC;

CREATE OR REPLACE FUNCTION jq.check_queue_settings(q jq.queue)
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

CREATE OR REPLACE FUNCTION public.jq_drop_queue(name text, force boolean DEFAULT false)
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

CREATE OR REPLACE FUNCTION jq.fail_leased(job_ids bigint[], error text, permanent boolean,
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

CREATE OR REPLACE FUNCTION public.jq_redrive(queue text, job_ids bigint[] DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION public.jq_fail(
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

CREATE OR REPLACE FUNCTION public.jq_cancel(job_id bigint)
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

CREATE FUNCTION jq.counters_valid()
RETURNS boolean
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_counters_valid';
REVOKE ALL ON FUNCTION jq.counters_valid() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.counters_valid() TO jq_reader;

CREATE OR REPLACE VIEW jq.queue_stats AS
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

