/*
 * pgjq_proxy: a PL/Proxy router over N pgjq shards (docs/scale-out.md).
 *
 * Run by proxy/pgjq_proxy in the router database, which has PL/Proxy and
 * not pgjq.  It gives the router pgjq's API under the same names and
 * signatures (schema jq), so producers and workers point their connection
 * at the router and change nothing else, and keeps its own machinery in
 * schema pgjq_proxy.  The shards are the partitions p0 .. pN-1 of the
 * SQL/MED server pgjq_shards, with modular_mapping, so PL/Proxy's
 * partition number is the shard number (RUN ON k runs on shard k % N).
 *
 * Routing:
 *   - a job with a key goes to the shard of hash(queue, key): a key's jobs
 *     stay on one shard, so its ordering, limits and fair share hold
 *     exactly as on one server;
 *   - a job without a key but with an idempotency key goes to the shard of
 *     hash(queue, idempotency key), so a resubmission finds the first job;
 *   - any other job goes to a random shard (one that answers);
 *   - a job's later calls (ack, fail, extend, progress, cancel, result,
 *     await) go to the shard its id names: each shard hands out ids from
 *     shard * 2^44 on (jq.jq_set_shard), so the shard is job_id >> 44;
 *   - dequeue takes from the first shard with work, starting at a random
 *     one, so workers spread over the shards;
 *   - a batch has one id on every shard (made on one, adopted by the
 *     others), its jobs routed as above;
 *   - queue management runs on every shard; the views sum the shards.
 *
 * Every call through the router commits on its shard when it returns:
 * PL/Proxy runs each remote query in its own transaction, so a router
 * transaction that rolls back does not take back an enqueue or an ack.
 * Producers that need the enqueue in their own transaction write to the
 * shard directly (its jq.jq_enqueue, with the same routing).
 *
 * Everything here is SECURITY INVOKER: PL/Proxy connects to the shards as
 * the calling user (the user mapping names no user), and the shards check
 * the roles jq_producer, jq_worker, jq_reader and jq_admin as they do for
 * direct callers.
 */

CREATE SCHEMA IF NOT EXISTS pgjq_proxy;
CREATE SCHEMA IF NOT EXISTS jq;

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['jq_producer', 'jq_worker', 'jq_admin', 'jq_reader']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$roles$;

/* ------------------------------------------------------------------------
 * Routing
 * ------------------------------------------------------------------------ */

-- the number of shards: the partitions of server pgjq_shards.  PL/pgSQL,
-- so that the catalog query's plan is kept for the session (a SQL
-- function would plan it at every call: 0.14 ms), and without SET (which
-- costs a GUC save and restore per call), everything schema-qualified.
CREATE OR REPLACE FUNCTION pgjq_proxy.shard_count()
RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN (SELECT pg_catalog.count(*)::integer
              FROM pg_catalog.pg_foreign_server s, pg_catalog.unnest(s.srvoptions) o
             WHERE s.srvname OPERATOR(pg_catalog.=) 'pgjq_shards'
               AND o OPERATOR(pg_catalog.~) '^p[0-9]+=');
END
$$;

-- The routing functions below are SQL expressions without SET, so that
-- they are inlined into the calls that use them.  Everything in them is
-- schema-qualified.

-- the shard of a job or batch id.  Ids no shard of this router gave
-- (negative, NULL, beyond the last shard) go to shard 0, which answers
-- them as it answers any unknown id (no row, false, or its error).
CREATE OR REPLACE FUNCTION pgjq_proxy.id_shard(id bigint)
RETURNS integer
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN id OPERATOR(pg_catalog.>=) (1::bigint OPERATOR(pg_catalog.<<) 44)
                     AND (id OPERATOR(pg_catalog.>>) 44) OPERATOR(pg_catalog.<) pgjq_proxy.shard_count()
                THEN (id OPERATOR(pg_catalog.>>) 44)::integer ELSE 0 END
$$;

-- the shard of a job key (or, for a job without one, of its idempotency
-- key); NULL when neither is given.  Queue names hold no newline (jq's
-- rule), so (queue, key) pairs do not collide.
CREATE OR REPLACE FUNCTION pgjq_proxy.key_shard(queue text, key text, idempotency_key text)
RETURNS integer
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN key IS NOT NULL OR idempotency_key IS NOT NULL THEN
        ((pg_catalog.hashtextextended(queue OPERATOR(pg_catalog.||) E'\n' OPERATOR(pg_catalog.||)
              CASE WHEN key IS NOT NULL THEN 'k' OPERATOR(pg_catalog.||) key
                   ELSE 'i' OPERATOR(pg_catalog.||) idempotency_key END, 0)
          OPERATOR(pg_catalog.&) 2147483647)
         OPERATOR(pg_catalog.%) pgjq_proxy.shard_count())::integer
    END
$$;

-- the elements of arr at the positions pos, in that order; NULL for a
-- NULL arr (a batch call's optional arrays), so each shard's part of a
-- batch call keeps the call's form
CREATE OR REPLACE FUNCTION pgjq_proxy.pick(arr anyarray, pos integer[])
RETURNS anyarray
LANGUAGE sql IMMUTABLE STRICT
AS $$
    SELECT ARRAY(SELECT arr[p.i] FROM pg_catalog.unnest(pos) WITH ORDINALITY p(i, o) ORDER BY p.o)
$$;

-- true when PL/Proxy could not connect to a shard (it reports that as
-- XX000 with libpq's message from the connection's start): the call never
-- reached it, so a job without a key may go to another shard instead.
-- Not for a connection lost later, when the call may have committed.
CREATE OR REPLACE FUNCTION pgjq_proxy.unreachable(message text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT message !~ 'REMOTE ERROR'
           AND message ~ 'PQconnectStart|PQconnectPoll|could not connect'
$$;

-- true when PL/Proxy lost a shard or could not reach it (XX000 with
-- libpq's words), as opposed to an error the shard raised
CREATE OR REPLACE FUNCTION pgjq_proxy.lost(state text, message text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT message !~ 'REMOTE ERROR'
           AND (state LIKE '08%' OR message ~ 'PQconnect|could not connect|connection to server|server closed the connection|no connection|lost connection|could not send|terminating connection')
$$;

-- Called in an exception handler: raises connection_failure (08006)
-- naming the shard when the error is PL/Proxy losing or not reaching it
-- (XX000 with libpq's words), so that callers see which shard is down and
-- not an internal error; returns otherwise, for the handler to re-raise.
CREATE OR REPLACE FUNCTION pgjq_proxy.check_reached(shard integer, state text, message text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pgjq_proxy.lost(state, message) THEN
        RAISE EXCEPTION '%', CASE WHEN shard IS NULL THEN 'a shard of the pgjq router cannot be reached'
                                  ELSE format('shard %s of the pgjq router cannot be reached', shard) END
            USING ERRCODE = 'connection_failure',
                  DETAIL = message,
                  HINT = 'Calls for the jobs and keys of that shard fail until it is back; the other shards go on working.';
    END IF;
END
$$;

-- the shards' limit on waits (jq.limit('wait_seconds_max'), the same on
-- every shard of one version), asked of shard 0 once per session
CREATE OR REPLACE FUNCTION pgjq_proxy.wait_limit()
RETURNS bigint
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON 0;
    SELECT jq.limit('wait_seconds_max') AS wait_limit;
$$;

-- The router waits a second at a time, each a shard's wait, so the
-- shards never see the whole wait: it checks it as they would, with
-- their error.  Waits of up to a second are within any limit.
CREATE OR REPLACE FUNCTION pgjq_proxy.check_wait(argname text, wait interval)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim bigint;
BEGIN
    IF wait IS NULL OR (wait >= interval '0' AND wait <= interval '1 second') THEN
        RETURN;
    END IF;
    lim := nullif(current_setting('pgjq_proxy.wait_seconds_max', true), '')::bigint;
    IF lim IS NULL THEN
        lim := pgjq_proxy.wait_limit();
        PERFORM set_config('pgjq_proxy.wait_seconds_max', lim::text, false);
    END IF;
    IF NOT (extract(epoch FROM wait) BETWEEN 0 AND lim) THEN
        RAISE EXCEPTION '% must be between 0 and % seconds', argname, lim
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', wait),
                  HINT = 'A wait returns as soon as there is something to return; call again when it times out.';
    END IF;
END
$$;

/* ------------------------------------------------------------------------
 * One call on one shard.  PL/Proxy functions: RUN ON shard runs the
 * SELECT on partition shard (modular_mapping: shard % N).
 * ------------------------------------------------------------------------ */

CREATE OR REPLACE FUNCTION pgjq_proxy.enqueue(
    shard integer, queue text, payload jsonb, priority integer, run_at timestamptz,
    idempotency_key text, batch_id bigint, key text, deadline timestamptz, cost numeric)
RETURNS bigint
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_enqueue(queue, payload, priority, run_at, idempotency_key, batch_id,
                         key, deadline, cost) AS enqueue;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.enqueue_batch(
    shard integer, queue text, payloads jsonb[], priority integer, run_at timestamptz,
    idempotency_keys text[], batch_id bigint, keys text[], deadlines timestamptz[],
    costs numeric[])
RETURNS bigint[]
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_enqueue_batch(queue, payloads, priority, run_at, idempotency_keys,
                               batch_id, keys, deadlines, costs) AS enqueue_batch;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.create_batch(shard integer, queue text, label text)
RETURNS bigint
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_create_batch(queue, label) AS create_batch;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.adopt_batch(shard integer, batch_id bigint, queue text,
                                                  label text)
RETURNS integer
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT 1 AS adopt_batch FROM jq.jq_adopt_batch(batch_id, queue, label);
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.dequeue(
    shard integer, queue text, max_jobs integer, lease_seconds integer, wait interval)
RETURNS TABLE (job_id bigint, lease_token bigint, attempt integer, priority integer,
               payload jsonb, enqueued_at timestamptz, lease_expires_at timestamptz,
               key text)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT * FROM jq.jq_dequeue(queue, max_jobs, lease_seconds, wait);
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.ack_dequeue(
    shard integer, queue text, max_jobs integer, lease_seconds integer, job_ids bigint[],
    lease_tokens bigint[], results jsonb[], errors text[])
RETURNS TABLE (job_id bigint, lease_token bigint, attempt integer, priority integer,
               payload jsonb, enqueued_at timestamptz, lease_expires_at timestamptz,
               key text)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT * FROM jq.jq_ack_dequeue(queue, max_jobs, lease_seconds, job_ids, lease_tokens,
                                    results, errors);
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.ack_batch(
    shard integer, job_ids bigint[], lease_tokens bigint[], results jsonb[], usages jsonb[])
RETURNS TABLE (job_id bigint, acked boolean)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT * FROM jq.jq_ack_batch(job_ids, lease_tokens, results, usages);
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.redrive(shard integer, queue text, job_ids bigint[])
RETURNS integer
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_redrive(queue, job_ids) AS redrive;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.reset_key_policy(shard integer, queue text, key text)
RETURNS integer
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_reset_key_policy(queue, key) AS reset_key_policy;
$$;

-- the router's copies of the row types jq_create_queue and
-- jq_set_key_policy return
DO $types$
BEGIN
    IF to_regtype('jq.queue') IS NULL THEN
        CREATE TYPE jq.queue AS (
            queue_id integer, name text, lease_seconds integer, max_attempts integer,
            backoff_base interval, backoff_cap interval, result_retention interval,
            max_payload_bytes integer, dead_letter_retention interval,
            idempotency_window interval, alert_depth_warning bigint,
            alert_depth_critical bigint, alert_age_warning interval,
            created_at timestamptz, max_in_flight integer, key_max_in_flight integer,
            key_max_queued bigint, fair boolean, key_ordered boolean,
            rate_requests integer, rate_cost numeric, rate_period interval);
    END IF;
    IF to_regtype('jq.key_policy') IS NULL THEN
        CREATE TYPE jq.key_policy AS (
            queue_id integer, key text, weight integer, max_in_flight integer,
            max_queued bigint, ordered boolean, rate_requests integer, rate_cost numeric,
            rate_period interval, version bigint, updated_at timestamptz);
    END IF;
END
$types$;

-- queue management runs on every shard (RUN ON ALL, one row each)
CREATE OR REPLACE FUNCTION pgjq_proxy.create_queue(
    name text, lease_seconds integer, max_attempts integer, backoff_base interval,
    backoff_cap interval, result_retention interval, max_payload_bytes integer,
    dead_letter_retention interval, idempotency_window interval,
    alert_depth_warning bigint, alert_depth_critical bigint, alert_age_warning interval,
    if_not_exists boolean, max_in_flight integer, key_max_in_flight integer,
    key_max_queued bigint, fair boolean, key_ordered boolean, rate_requests integer,
    rate_cost numeric, rate_period interval)
RETURNS SETOF jq.queue
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON ALL;
    SELECT * FROM jq.jq_create_queue(name, lease_seconds, max_attempts, backoff_base,
        backoff_cap, result_retention, max_payload_bytes, dead_letter_retention,
        idempotency_window, alert_depth_warning, alert_depth_critical, alert_age_warning,
        if_not_exists, max_in_flight, key_max_in_flight, key_max_queued, fair, key_ordered,
        rate_requests, rate_cost, rate_period);
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.alter_queue(
    name text, lease_seconds integer, max_attempts integer, backoff_base interval,
    backoff_cap interval, result_retention interval, max_payload_bytes integer,
    dead_letter_retention interval, idempotency_window interval,
    alert_depth_warning bigint, alert_depth_critical bigint, alert_age_warning interval,
    clear_alerts boolean, max_in_flight integer, key_max_in_flight integer,
    key_max_queued bigint, fair boolean, clear_limits boolean, key_ordered boolean,
    rate_requests integer, rate_cost numeric, rate_period interval)
RETURNS SETOF jq.queue
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON ALL;
    SELECT * FROM jq.jq_alter_queue(name, lease_seconds, max_attempts, backoff_base,
        backoff_cap, result_retention, max_payload_bytes, dead_letter_retention,
        idempotency_window, alert_depth_warning, alert_depth_critical, alert_age_warning,
        clear_alerts, max_in_flight, key_max_in_flight, key_max_queued, fair, clear_limits,
        key_ordered, rate_requests, rate_cost, rate_period);
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.drop_queue(name text, force boolean)
RETURNS SETOF integer
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON ALL;
    SELECT 1 AS drop_queue FROM jq.jq_drop_queue(name, force);
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.list_queues()
RETURNS SETOF jq.queue
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON 0;
    SELECT * FROM jq.jq_list_queues();
$$;

/* ------------------------------------------------------------------------
 * What each shard says, with its number (the low end of its job ids'
 * range, jq.jq_set_shard): the views below sum these.  A shard that
 * cannot be reached is left out with a WARNING (jq.queue_stats counts the
 * shards that answered), so the others' figures stay readable.
 * ------------------------------------------------------------------------ */

CREATE OR REPLACE FUNCTION pgjq_proxy.queue_stats_on(part integer)
RETURNS TABLE (shard integer, queue text, ready bigint, scheduled bigint, in_flight bigint,
               dead bigint, ready_by_priority jsonb, oldest_ready_age interval,
               enqueued_total bigint, succeeded_total bigint, failed_total bigint,
               dead_lettered_total bigint, cancelled_total bigint, enqueued_per_min numeric,
               succeeded_per_min numeric, counters_valid boolean, max_in_flight integer,
               expired_total bigint)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON part;
    SELECT (SELECT (s.min_value >> 44)::integer FROM pg_catalog.pg_sequences s
             WHERE s.schemaname = 'jq' AND s.sequencename = 'job_id_seq') AS shard, q.*
      FROM jq.queue_stats q;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.shard_queue_stats()
RETURNS TABLE (shard integer, queue text, ready bigint, scheduled bigint, in_flight bigint,
               dead bigint, ready_by_priority jsonb, oldest_ready_age interval,
               enqueued_total bigint, succeeded_total bigint, failed_total bigint,
               dead_lettered_total bigint, cancelled_total bigint, enqueued_per_min numeric,
               succeeded_per_min numeric, counters_valid boolean, max_in_flight integer,
               expired_total bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
BEGIN
    FOR s IN 0 .. pgjq_proxy.shard_count() - 1 LOOP
        BEGIN
            RETURN QUERY SELECT * FROM pgjq_proxy.queue_stats_on(s);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            IF NOT pgjq_proxy.lost(err_state, err_message) THEN
                RAISE;
            END IF;
            RAISE WARNING 'shard % of the pgjq router cannot be reached: its rows are left out', s
                USING DETAIL = err_message;
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.key_stats_on(part integer)
RETURNS TABLE (shard integer, queue text, key text, ready bigint, scheduled bigint,
               in_flight bigint, max_in_flight integer, weight integer, max_queued bigint,
               ordered boolean, rate_requests integer, rate_cost numeric,
               rate_period interval, requests_left numeric, cost_left numeric,
               throttled_for interval, delivered_total bigint, succeeded_total bigint,
               oldest_ready_age interval, held_back boolean, has_policy boolean)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON part;
    SELECT (SELECT (s.min_value >> 44)::integer FROM pg_catalog.pg_sequences s
             WHERE s.schemaname = 'jq' AND s.sequencename = 'job_id_seq') AS shard, k.*
      FROM jq.key_stats k;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.shard_key_stats()
RETURNS TABLE (shard integer, queue text, key text, ready bigint, scheduled bigint,
               in_flight bigint, max_in_flight integer, weight integer, max_queued bigint,
               ordered boolean, rate_requests integer, rate_cost numeric,
               rate_period interval, requests_left numeric, cost_left numeric,
               throttled_for interval, delivered_total bigint, succeeded_total bigint,
               oldest_ready_age interval, held_back boolean, has_policy boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
BEGIN
    FOR s IN 0 .. pgjq_proxy.shard_count() - 1 LOOP
        BEGIN
            RETURN QUERY SELECT * FROM pgjq_proxy.key_stats_on(s);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            IF NOT pgjq_proxy.lost(err_state, err_message) THEN
                RAISE;
            END IF;
            RAISE WARNING 'shard % of the pgjq router cannot be reached: its rows are left out', s
                USING DETAIL = err_message;
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.batch_progress_on(part integer)
RETURNS TABLE (shard integer, batch_id bigint, queue text, label text,
               created_at timestamptz, total bigint, waiting bigint, in_flight bigint,
               retrying bigint, succeeded bigint, dead bigint, cancelled bigint,
               purged bigint, percent_complete numeric, finished_at timestamptz,
               expired bigint, cost numeric)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON part;
    SELECT (SELECT (s.min_value >> 44)::integer FROM pg_catalog.pg_sequences s
             WHERE s.schemaname = 'jq' AND s.sequencename = 'job_id_seq') AS shard, b.*
      FROM jq.batch_progress b;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.shard_batch_progress()
RETURNS TABLE (shard integer, batch_id bigint, queue text, label text,
               created_at timestamptz, total bigint, waiting bigint, in_flight bigint,
               retrying bigint, succeeded bigint, dead bigint, cancelled bigint,
               purged bigint, percent_complete numeric, finished_at timestamptz,
               expired bigint, cost numeric)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
BEGIN
    FOR s IN 0 .. pgjq_proxy.shard_count() - 1 LOOP
        BEGIN
            RETURN QUERY SELECT * FROM pgjq_proxy.batch_progress_on(s);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            IF NOT pgjq_proxy.lost(err_state, err_message) THEN
                RAISE;
            END IF;
            RAISE WARNING 'shard % of the pgjq router cannot be reached: its rows are left out', s
                USING DETAIL = err_message;
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.usage_on(part integer)
RETURNS TABLE (shard integer, queue text, key text, day date, jobs bigint, reports bigint,
               cost numeric, usage jsonb)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON part;
    SELECT (SELECT (s.min_value >> 44)::integer FROM pg_catalog.pg_sequences s
             WHERE s.schemaname = 'jq' AND s.sequencename = 'job_id_seq') AS shard, u.*
      FROM jq.usage u;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.shard_usage()
RETURNS TABLE (shard integer, queue text, key text, day date, jobs bigint, reports bigint,
               cost numeric, usage jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
BEGIN
    FOR s IN 0 .. pgjq_proxy.shard_count() - 1 LOOP
        BEGIN
            RETURN QUERY SELECT * FROM pgjq_proxy.usage_on(s);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            IF NOT pgjq_proxy.lost(err_state, err_message) THEN
                RAISE;
            END IF;
            RAISE WARNING 'shard % of the pgjq router cannot be reached: its rows are left out', s
                USING DETAIL = err_message;
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.worker_status_on(part integer)
RETURNS TABLE (shard integer, preloaded boolean, databases text, worker_pid integer,
               status text)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON part;
    SELECT (SELECT (s.min_value >> 44)::integer FROM pg_catalog.pg_sequences s
             WHERE s.schemaname = 'jq' AND s.sequencename = 'job_id_seq') AS shard, w.*
      FROM jq.jq_worker_status() w;
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.shard_worker_status()
RETURNS TABLE (shard integer, preloaded boolean, databases text, worker_pid integer,
               status text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
BEGIN
    FOR s IN 0 .. pgjq_proxy.shard_count() - 1 LOOP
        BEGIN
            RETURN QUERY SELECT * FROM pgjq_proxy.worker_status_on(s);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            IF NOT pgjq_proxy.lost(err_state, err_message) THEN
                RAISE;
            END IF;
            RETURN QUERY SELECT s, NULL::boolean, NULL::text, NULL::integer,
                                'unreachable: ' || err_message;
        END;
    END LOOP;
END
$$;

/* ------------------------------------------------------------------------
 * The API, as on a shard.  Calls about one job go straight to its shard
 * (PL/Proxy functions with the shard's signature); the others route.
 * ------------------------------------------------------------------------ */

-- Enqueue: the shard of the job's key or idempotency key; a job with
-- neither goes to a random shard, or to the next one when that one cannot
-- be reached (the call never got there, so nothing is enqueued twice).
CREATE OR REPLACE FUNCTION jq.jq_enqueue(
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
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := pgjq_proxy.key_shard(queue, key, idempotency_key);
    n integer;
    err_state text;
    err_message text;
BEGIN
    IF shard IS NOT NULL THEN
        BEGIN
            RETURN pgjq_proxy.enqueue(shard, queue, payload, priority, run_at, idempotency_key,
                                      batch_id, key, deadline, cost);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
            RAISE;
        END;
    END IF;
    n := pgjq_proxy.shard_count();
    shard := floor(random() * n)::integer;
    FOR i IN 1 .. n LOOP
        BEGIN
            RETURN pgjq_proxy.enqueue(shard, queue, payload, priority, run_at, NULL,
                                      batch_id, NULL, deadline, cost);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            IF i = n OR NOT pgjq_proxy.unreachable(err_message) THEN
                PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
                RAISE;
            END IF;
        END;
        shard := (shard + 1) % n;
    END LOOP;
END
$$;

-- Enqueue many: each job to its shard (as jq_enqueue), one call per shard;
-- the ids in the order of payloads.  Arguments a shard would refuse go
-- whole to shard 0, which gives its error.
CREATE OR REPLACE FUNCTION jq.jq_enqueue_batch(
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
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
    len integer := cardinality(payloads);
    spread integer := floor(random() * pgjq_proxy.shard_count())::integer;
    shards integer[];
    pos integer[];
    ids bigint[];
    got bigint[];
    s integer;
BEGIN
    IF payloads IS NULL OR len = 0 OR array_ndims(payloads) <> 1
       OR (idempotency_keys IS NOT NULL AND (cardinality(idempotency_keys) <> len
                                             OR array_ndims(idempotency_keys) <> 1))
       OR (keys IS NOT NULL AND (cardinality(keys) <> len OR array_ndims(keys) <> 1))
       OR (deadlines IS NOT NULL AND (cardinality(deadlines) <> len
                                      OR array_ndims(deadlines) <> 1))
       OR (costs IS NOT NULL AND (cardinality(costs) <> len OR array_ndims(costs) <> 1))
       OR array_lower(payloads, 1) <> 1 THEN
        s := 0;
        RETURN pgjq_proxy.enqueue_batch(0, queue, payloads, priority, run_at,
                                        idempotency_keys, batch_id, keys, deadlines, costs);
    END IF;
    -- jobs without a key or idempotency key: one random shard for the call
    SELECT array_agg(coalesce(pgjq_proxy.key_shard(queue, keys[i], idempotency_keys[i]),
                              spread) ORDER BY i)
      INTO shards
      FROM generate_series(1, len) i;
    ids := array_fill(NULL::bigint, ARRAY[len]);
    FOR s IN SELECT DISTINCT x FROM unnest(shards) x ORDER BY x LOOP
        SELECT array_agg(i ORDER BY i) INTO pos
          FROM generate_series(1, len) i WHERE shards[i] = s;
        got := pgjq_proxy.enqueue_batch(
            s, queue,
            pgjq_proxy.pick(payloads, pos),
            priority, run_at,
            pgjq_proxy.pick(idempotency_keys, pos),
            batch_id,
            pgjq_proxy.pick(keys, pos),
            pgjq_proxy.pick(deadlines, pos),
            pgjq_proxy.pick(costs, pos));
        FOR k IN 1 .. cardinality(pos) LOOP
            ids[pos[k]] := got[k];
        END LOOP;
    END LOOP;
    RETURN ids;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(s, err_state, err_message);
    RAISE;
END
$$;

-- A batch: made on a random shard (its id names that shard) and adopted
-- under the same id by the others, so its jobs may go to any shard and
-- jq.batch_progress sums them
CREATE OR REPLACE FUNCTION jq.jq_create_batch(queue text, label text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
    n integer := pgjq_proxy.shard_count();
    home integer := floor(random() * n)::integer;
    bid bigint := pgjq_proxy.create_batch(home, queue, label);
BEGIN
    FOR s IN 0 .. n - 1 LOOP
        IF s <> home THEN
            PERFORM pgjq_proxy.adopt_batch(s, bid, queue, label);
        END IF;
    END LOOP;
    RETURN bid;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(NULL, err_state, err_message);
    RAISE;
END
$$;

CREATE OR REPLACE FUNCTION jq.jq_submit_batch(queue text, payloads jsonb[], label text DEFAULT NULL,
                                              priority integer DEFAULT 0,
                                              run_at timestamptz DEFAULT NULL,
                                              keys text[] DEFAULT NULL,
                                              deadlines timestamptz[] DEFAULT NULL,
                                              costs numeric[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bid bigint := jq.jq_create_batch(queue, label);
BEGIN
    PERFORM jq.jq_enqueue_batch(queue, payloads, priority, run_at, NULL, bid, keys,
                                deadlines, costs);
    RETURN bid;
END
$$;

-- Dequeue: from the first shard with work, starting at a random one; a
-- shard that cannot be reached is passed over.  With wait, when no shard
-- has work, it waits on one shard at a time, a second at most each (the
-- shard's own long poll: woken at the commit that brings work there),
-- then looks at all of them again, until wait has passed.
CREATE OR REPLACE FUNCTION jq.jq_dequeue(
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
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := pgjq_proxy.shard_count();
    first integer := floor(random() * n)::integer;
    s integer;
    until timestamptz;
    unreached integer;
    got bigint;
    err_state text;
    err_message text;
BEGIN
    PERFORM pgjq_proxy.check_wait('wait', wait);
    IF wait IS NOT NULL AND wait > interval '0' THEN
        until := clock_timestamp() + wait;
    END IF;
    LOOP
        unreached := 0;
        FOR i IN 0 .. n - 1 LOOP
            s := (first + i) % n;
            got := 0;
            BEGIN
                RETURN QUERY SELECT * FROM pgjq_proxy.dequeue(s, jq_dequeue.queue,
                                   jq_dequeue.max_jobs, jq_dequeue.lease_seconds, NULL);
                GET DIAGNOSTICS got = ROW_COUNT;
            EXCEPTION WHEN OTHERS THEN
                -- a shard lost mid-call may have leased jobs that never
                -- came back: they return when their leases expire
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
                IF NOT pgjq_proxy.lost(err_state, err_message) THEN
                    RAISE;
                END IF;
                unreached := unreached + 1;
                IF unreached = n THEN
                    RAISE EXCEPTION 'no shard of the pgjq router can be reached'
                        USING ERRCODE = 'connection_failure', DETAIL = err_message;
                END IF;
            END;
            IF got > 0 THEN
                RETURN;
            END IF;
        END LOOP;
        EXIT WHEN until IS NULL OR clock_timestamp() >= until;
        got := 0;
        BEGIN
            RETURN QUERY SELECT * FROM pgjq_proxy.dequeue(first, jq_dequeue.queue,
                               jq_dequeue.max_jobs, jq_dequeue.lease_seconds,
                               least(until - clock_timestamp(), interval '1 second'));
            GET DIAGNOSTICS got = ROW_COUNT;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            IF NOT pgjq_proxy.lost(err_state, err_message) THEN
                RAISE;
            END IF;
        END;
        IF got > 0 THEN
            RETURN;
        END IF;
        first := (first + 1) % n;
    END LOOP;
END
$$;

-- As on a shard, jobs as a JSON array of jq_dequeue's rows.  The router
-- holds no jobs, so its snapshot held while it waits keeps nothing from
-- vacuum; on the shards each wait is its own query of a second at most.
CREATE OR REPLACE PROCEDURE jq.jq_wait_dequeue(
    queue text,
    max_jobs integer DEFAULT 1,
    lease_seconds integer DEFAULT NULL,
    wait interval DEFAULT interval '30 seconds',
    INOUT jobs jsonb DEFAULT NULL)
LANGUAGE sql
AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(d)), '[]')
      FROM jq.jq_dequeue(queue, max_jobs, lease_seconds, wait) d
$$;

-- The calls about one job run on the shard its id names.
CREATE OR REPLACE FUNCTION pgjq_proxy.ack(shard integer, job_id bigint, lease_token bigint,
                                          result jsonb, usage jsonb)
RETURNS boolean
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_ack(job_id, lease_token, result, usage) AS ack;
$$;

CREATE OR REPLACE FUNCTION jq.jq_ack(job_id bigint, lease_token bigint,
                                     result jsonb DEFAULT NULL, usage jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := pgjq_proxy.id_shard(job_id);
    err_state text;
    err_message text;
BEGIN
    RETURN pgjq_proxy.ack(shard, job_id, lease_token, result, usage);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
    RAISE;
END
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.fail(shard integer, job_id bigint, lease_token bigint,
                                           error text, retry_in interval, permanent boolean,
                                           usage jsonb)
RETURNS text
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_fail(job_id, lease_token, error, retry_in, permanent, usage) AS fail;
$$;

CREATE OR REPLACE FUNCTION jq.jq_fail(job_id bigint, lease_token bigint, error text,
                                      retry_in interval DEFAULT NULL,
                                      permanent boolean DEFAULT false,
                                      usage jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := pgjq_proxy.id_shard(job_id);
    err_state text;
    err_message text;
BEGIN
    RETURN pgjq_proxy.fail(shard, job_id, lease_token, error, retry_in, permanent, usage);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
    RAISE;
END
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.extend(shard integer, job_id bigint, lease_token bigint,
                                             lease_seconds integer)
RETURNS timestamptz
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_extend(job_id, lease_token, lease_seconds) AS extend;
$$;

CREATE OR REPLACE FUNCTION jq.jq_extend(job_id bigint, lease_token bigint,
                                        lease_seconds integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := pgjq_proxy.id_shard(job_id);
    err_state text;
    err_message text;
BEGIN
    RETURN pgjq_proxy.extend(shard, job_id, lease_token, lease_seconds);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
    RAISE;
END
$$;

-- (report, not progress: PL/Proxy would take the result's name for the
-- argument)
CREATE OR REPLACE FUNCTION pgjq_proxy.progress(shard integer, job_id bigint, lease_token bigint,
                                               report jsonb)
RETURNS boolean
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_progress(job_id, lease_token, report) AS progress;
$$;

CREATE OR REPLACE FUNCTION jq.jq_progress(job_id bigint, lease_token bigint, progress jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := pgjq_proxy.id_shard(job_id);
    err_state text;
    err_message text;
BEGIN
    RETURN pgjq_proxy.progress(shard, job_id, lease_token, progress);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
    RAISE;
END
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.cancel(shard integer, job_id bigint)
RETURNS boolean
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT jq.jq_cancel(job_id) AS cancel;
$$;

CREATE OR REPLACE FUNCTION jq.jq_cancel(job_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := pgjq_proxy.id_shard(job_id);
    err_state text;
    err_message text;
BEGIN
    RETURN pgjq_proxy.cancel(shard, job_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
    RAISE;
END
$$;

-- jq_result's row (a plpgsql function cannot return a column named as
-- its argument, job_id, so the router's jq_result and jq_await return
-- this type: the same columns)
DO $type$
BEGIN
    IF to_regtype('pgjq_proxy.result') IS NULL THEN
        CREATE TYPE pgjq_proxy.result AS (job_id bigint, queue text, state text, result jsonb, last_error text,
            attempts integer, priority integer, enqueued_at timestamptz,
            run_at timestamptz, started_at timestamptz, finished_at timestamptz,
            key text, progress jsonb, progress_at timestamptz, deadline timestamptz,
            cost numeric, usage jsonb);
    END IF;
END
$type$;

CREATE OR REPLACE FUNCTION pgjq_proxy.await(shard integer, job_id bigint, timeout interval)
RETURNS TABLE (job_id bigint, queue text, state text, result jsonb, last_error text,
               attempts integer, priority integer, enqueued_at timestamptz,
               run_at timestamptz, started_at timestamptz, finished_at timestamptz,
               key text, progress jsonb, progress_at timestamptz, deadline timestamptz,
               cost numeric, usage jsonb)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT * FROM jq.jq_await(job_id, timeout);
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.result(shard integer, job_id bigint)
RETURNS TABLE (job_id bigint, queue text, state text, result jsonb, last_error text,
               attempts integer, priority integer, enqueued_at timestamptz,
               run_at timestamptz, started_at timestamptz, finished_at timestamptz,
               key text, progress jsonb, progress_at timestamptz, deadline timestamptz,
               cost numeric, usage jsonb)
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT * FROM jq.jq_result(job_id);
$$;

CREATE OR REPLACE FUNCTION jq.jq_result(job_id bigint)
RETURNS SETOF pgjq_proxy.result
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := pgjq_proxy.id_shard(jq_result.job_id);
    err_state text;
    err_message text;
BEGIN
    RETURN QUERY SELECT * FROM pgjq_proxy.result(shard, jq_result.job_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
    RAISE;
END
$$;

CREATE OR REPLACE FUNCTION jq.jq_await(job_id bigint, timeout interval DEFAULT interval '30 seconds')
RETURNS SETOF pgjq_proxy.result
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := pgjq_proxy.id_shard(jq_await.job_id);
    err_state text;
    err_message text;
BEGIN
    RETURN QUERY SELECT * FROM pgjq_proxy.await(shard, jq_await.job_id, jq_await.timeout);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
    RAISE;
END
$$;

-- jq_await a second at a time: on the shard, each wait is its own query
-- and holds a snapshot for a second at most; result is jq_result's row
-- as JSON, NULL for an unknown job
CREATE OR REPLACE PROCEDURE jq.jq_wait_result(
    job_id bigint,
    timeout interval DEFAULT interval '30 seconds',
    INOUT result jsonb DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    until timestamptz := clock_timestamp() + coalesce(timeout, interval '0');
    ended boolean;
BEGIN
    PERFORM pgjq_proxy.check_wait('timeout', timeout);
    LOOP
        SELECT to_jsonb(a), a.state NOT IN ('ready', 'scheduled', 'leased')
          INTO result, ended
          FROM jq.jq_await(job_id, greatest(least(until - clock_timestamp(),
                                                  interval '1 second'), interval '0')) a;
        EXIT WHEN result IS NULL OR ended OR clock_timestamp() >= until;
    END LOOP;
END
$$;

-- Ack many: each job's ack on its shard, one call per shard; one row per
-- job in input order
CREATE OR REPLACE FUNCTION jq.jq_ack_batch(
    job_ids bigint[],
    lease_tokens bigint[],
    results jsonb[] DEFAULT NULL,
    usages jsonb[] DEFAULT NULL)
RETURNS TABLE (job_id bigint, acked boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
    len integer := cardinality(job_ids);
    shards integer[];
    pos integer[];
    done boolean[];
    r record;
    s integer;
BEGIN
    SELECT array_agg(pgjq_proxy.id_shard(x) ORDER BY o) INTO shards
      FROM unnest(job_ids) WITH ORDINALITY u(x, o);
    IF len IS NULL OR len = 0 OR array_ndims(job_ids) <> 1 OR array_lower(job_ids, 1) <> 1
       OR lease_tokens IS NULL OR cardinality(lease_tokens) <> len
       OR (results IS NOT NULL AND cardinality(results) <> len)
       OR (usages IS NOT NULL AND cardinality(usages) <> len)
       OR (SELECT count(DISTINCT x) FROM unnest(shards) x) = 1 THEN
        s := coalesce(shards[1], 0);
        RETURN QUERY SELECT * FROM pgjq_proxy.ack_batch(s, job_ids,
                                                        lease_tokens, results, usages);
        RETURN;
    END IF;
    done := array_fill(NULL::boolean, ARRAY[len]);
    FOR s IN SELECT DISTINCT x FROM unnest(shards) x ORDER BY x LOOP
        SELECT array_agg(i ORDER BY i) INTO pos
          FROM generate_series(1, len) i WHERE shards[i] = s;
        FOR r IN
            SELECT a.acked, o
              FROM pgjq_proxy.ack_batch(s,
                       pgjq_proxy.pick(job_ids, pos),
                       pgjq_proxy.pick(lease_tokens, pos),
                       pgjq_proxy.pick(results, pos),
                       pgjq_proxy.pick(usages, pos))
                   WITH ORDINALITY a(job_id, acked, o)
        LOOP
            done[pos[r.o]] := r.acked;
        END LOOP;
    END LOOP;
    RETURN QUERY SELECT job_ids[i], done[i] FROM generate_series(1, len) i ORDER BY i;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(s, err_state, err_message);
    RAISE;
END
$$;

-- A worker's turn: the jobs it holds finished on their shards, the next
-- ones leased from the shard of the first of them (where its last
-- dequeue found work), or from any shard when that one has none
CREATE OR REPLACE FUNCTION jq.jq_ack_dequeue(
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
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
    len integer := coalesce(cardinality(job_ids), 0);
    home integer := pgjq_proxy.id_shard(job_ids[1]);
    ok integer[];
BEGIN
    IF len > 0 AND array_ndims(job_ids) = 1 AND array_lower(job_ids, 1) = 1
       AND lease_tokens IS NOT NULL AND cardinality(lease_tokens) = len
       AND (results IS NULL OR cardinality(results) = len)
       AND (errors IS NULL OR cardinality(errors) = len)
       AND EXISTS (SELECT FROM unnest(job_ids) x WHERE pgjq_proxy.id_shard(x) <> home) THEN
        -- the jobs of the other shards: acked or failed there first
        FOR i IN 1 .. len LOOP
            CONTINUE WHEN pgjq_proxy.id_shard(job_ids[i]) = home;
            IF errors[i] IS NULL THEN
                PERFORM jq.jq_ack(job_ids[i], lease_tokens[i], results[i]);
            ELSE
                PERFORM jq.jq_fail(job_ids[i], lease_tokens[i], errors[i]);
            END IF;
        END LOOP;
        SELECT array_agg(i ORDER BY i) INTO ok
          FROM generate_series(1, len) i WHERE pgjq_proxy.id_shard(job_ids[i]) = home;
        job_ids := pgjq_proxy.pick(job_ids, ok);
        lease_tokens := pgjq_proxy.pick(lease_tokens, ok);
        results := pgjq_proxy.pick(results, ok);
        errors := pgjq_proxy.pick(errors, ok);
    END IF;
    RETURN QUERY SELECT * FROM pgjq_proxy.ack_dequeue(home, queue, max_jobs, lease_seconds,
                                                      job_ids, lease_tokens, results, errors);
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM jq.jq_dequeue(queue, max_jobs, lease_seconds);
    END IF;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(home, err_state, err_message);
    RAISE;
END
$$;

/* ------------------------------------------------------------------------
 * Queues and key policies: on every shard (a key's policy on its shard)
 * ------------------------------------------------------------------------ */

-- returns shard 0's row (queue ids may differ between shards)
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
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q jq.queue;
    err_state text;
    err_message text;
BEGIN
    SELECT * INTO q FROM pgjq_proxy.create_queue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                          $13, $14, $15, $16, $17, $18, $19, $20, $21)
     LIMIT 1;
    RETURN q;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(NULL, err_state, err_message);
    RAISE;
END
$$;

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
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q jq.queue;
    err_state text;
    err_message text;
BEGIN
    SELECT * INTO q FROM pgjq_proxy.alter_queue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                         $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
     LIMIT 1;
    RETURN q;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(NULL, err_state, err_message);
    RAISE;
END
$$;

CREATE OR REPLACE FUNCTION jq.jq_drop_queue(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
BEGIN
    PERFORM FROM pgjq_proxy.drop_queue(name, force);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(NULL, err_state, err_message);
    RAISE;
END
$$;

CREATE OR REPLACE FUNCTION jq.jq_list_queues()
RETURNS SETOF jq.queue
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM pgjq_proxy.list_queues()
$$;

CREATE OR REPLACE FUNCTION pgjq_proxy.set_key_policy(
    shard integer, queue text, key text, weight integer, max_in_flight integer,
    max_queued bigint, clear_limits boolean, ordered boolean, rate_requests integer,
    rate_cost numeric, rate_period interval)
RETURNS jq.key_policy
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON shard;
    SELECT * FROM jq.jq_set_key_policy(queue, key, weight, max_in_flight, max_queued,
                                       clear_limits, ordered, rate_requests, rate_cost,
                                       rate_period);
$$;

-- a key's policy lives on the key's shard, where its jobs are
CREATE OR REPLACE FUNCTION jq.jq_set_key_policy(
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
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := coalesce(pgjq_proxy.key_shard(queue, key, NULL), 0);
    p jq.key_policy;
    err_state text;
    err_message text;
BEGIN
    SELECT * INTO p FROM pgjq_proxy.set_key_policy(shard, queue, key, weight, max_in_flight,
                                                   max_queued, clear_limits, ordered,
                                                   rate_requests, rate_cost, rate_period);
    RETURN p;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(shard, err_state, err_message);
    RAISE;
END
$$;

-- one key's policy on its shard; with key NULL, every key's on every shard
CREATE OR REPLACE FUNCTION jq.jq_reset_key_policy(queue text, key text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
    removed integer := 0;
BEGIN
    IF key IS NOT NULL THEN
        RETURN pgjq_proxy.reset_key_policy(pgjq_proxy.key_shard(queue, key, NULL), queue, key);
    END IF;
    FOR s IN 0 .. pgjq_proxy.shard_count() - 1 LOOP
        removed := removed + pgjq_proxy.reset_key_policy(s, queue, NULL);
    END LOOP;
    RETURN removed;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(NULL, err_state, err_message);
    RAISE;
END
$$;

-- dead letters back on their shards: the given ones on theirs, or all of
-- the queue's on every shard
CREATE OR REPLACE FUNCTION jq.jq_redrive(queue text, job_ids bigint[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err_state text;
    err_message text;
    moved integer := 0;
    s integer;
BEGIN
    IF job_ids IS NULL OR cardinality(job_ids) = 0 OR array_ndims(job_ids) <> 1 THEN
        FOR s IN 0 .. pgjq_proxy.shard_count() - 1 LOOP
            moved := moved + pgjq_proxy.redrive(s, queue, job_ids);
        END LOOP;
        RETURN moved;
    END IF;
    FOR s IN SELECT DISTINCT pgjq_proxy.id_shard(x) FROM unnest(job_ids) x ORDER BY 1 LOOP
        moved := moved + pgjq_proxy.redrive(
            s, queue, ARRAY(SELECT x FROM unnest(job_ids) x WHERE pgjq_proxy.id_shard(x) = s));
    END LOOP;
    RETURN moved;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    PERFORM pgjq_proxy.check_reached(s, err_state, err_message);
    RAISE;
END
$$;

/* ------------------------------------------------------------------------
 * The views, summed over the shards
 * ------------------------------------------------------------------------ */

CREATE OR REPLACE VIEW jq.queue_stats AS
WITH st AS MATERIALIZED (SELECT * FROM pgjq_proxy.shard_queue_stats()),
     -- each priority's ready jobs, summed over the shards
     p AS (SELECT st.queue, e.key AS priority, sum(e.value::bigint) AS ready
             FROM st, jsonb_each_text(st.ready_by_priority) e
            GROUP BY st.queue, e.key)
SELECT s.queue,
       sum(s.ready)::bigint AS ready,
       sum(s.scheduled)::bigint AS scheduled,
       sum(s.in_flight)::bigint AS in_flight,
       sum(s.dead)::bigint AS dead,
       coalesce((SELECT jsonb_object_agg(p.priority, p.ready ORDER BY p.priority::integer DESC)
                   FROM p WHERE p.queue = s.queue), '{}') AS ready_by_priority,
       max(s.oldest_ready_age) AS oldest_ready_age,
       sum(s.enqueued_total)::bigint AS enqueued_total,
       sum(s.succeeded_total)::bigint AS succeeded_total,
       sum(s.failed_total)::bigint AS failed_total,
       sum(s.dead_lettered_total)::bigint AS dead_lettered_total,
       sum(s.cancelled_total)::bigint AS cancelled_total,
       sum(s.enqueued_per_min) AS enqueued_per_min,
       sum(s.succeeded_per_min) AS succeeded_per_min,
       bool_and(s.counters_valid) AS counters_valid,
       sum(s.max_in_flight)::integer AS max_in_flight,
       sum(s.expired_total)::bigint AS expired_total,
       count(*)::integer AS shards
  FROM st s
 GROUP BY s.queue;

-- a key lives on one shard, so its row is that shard's; the jobs without
-- a key (key NULL) are on every shard, and their counts are summed
CREATE OR REPLACE VIEW jq.key_stats AS
SELECT k.queue, k.key, sum(k.ready)::bigint AS ready, sum(k.scheduled)::bigint AS scheduled,
       sum(k.in_flight)::bigint AS in_flight, sum(k.max_in_flight)::integer AS max_in_flight,
       min(k.weight) AS weight, sum(k.max_queued)::bigint AS max_queued,
       bool_or(k.ordered) AS ordered, sum(k.rate_requests)::integer AS rate_requests,
       sum(k.rate_cost) AS rate_cost, min(k.rate_period) AS rate_period,
       sum(k.requests_left) AS requests_left, sum(k.cost_left) AS cost_left,
       max(k.throttled_for) AS throttled_for, sum(k.delivered_total)::bigint AS delivered_total,
       sum(k.succeeded_total)::bigint AS succeeded_total,
       max(k.oldest_ready_age) AS oldest_ready_age, bool_or(k.held_back) AS held_back,
       bool_or(k.has_policy) AS has_policy,
       CASE WHEN count(*) = 1 THEN min(k.shard) END AS shard
  FROM pgjq_proxy.shard_key_stats() k
 GROUP BY k.queue, k.key;

CREATE OR REPLACE VIEW jq.batch_progress AS
SELECT b.batch_id, min(b.queue) AS queue, min(b.label) AS label, min(b.created_at) AS created_at,
       sum(b.total)::bigint AS total, sum(b.waiting)::bigint AS waiting,
       sum(b.in_flight)::bigint AS in_flight, sum(b.retrying)::bigint AS retrying,
       sum(b.succeeded)::bigint AS succeeded, sum(b.dead)::bigint AS dead,
       sum(b.cancelled)::bigint AS cancelled, sum(b.purged)::bigint AS purged,
       round(100.0 * (sum(b.total) - sum(b.waiting) - sum(b.in_flight))
             / greatest(sum(b.total), 1), 1) AS percent_complete,
       CASE WHEN sum(b.total) > 0 AND sum(b.waiting) + sum(b.in_flight) = 0
            THEN max(b.finished_at) END AS finished_at,
       sum(b.expired)::bigint AS expired, sum(b.cost) AS cost
  FROM pgjq_proxy.shard_batch_progress() b
 GROUP BY b.batch_id;

CREATE OR REPLACE VIEW jq.usage AS
WITH su AS MATERIALIZED (SELECT * FROM pgjq_proxy.shard_usage()),
     -- each numeric usage field, summed over the shards
     f AS (SELECT su.queue, su.key, su.day, e.key AS field, sum(e.value::numeric) AS total
             FROM su, jsonb_each_text(su.usage) e
            GROUP BY su.queue, su.key, su.day, e.key)
SELECT u.queue, u.key, u.day, sum(u.jobs)::bigint AS jobs, sum(u.reports)::bigint AS reports,
       sum(u.cost) AS cost,
       coalesce((SELECT jsonb_object_agg(f.field, f.total) FROM f
                  WHERE f.queue = u.queue AND f.key IS NOT DISTINCT FROM u.key
                    AND f.day = u.day), '{}') AS usage
  FROM su u
 GROUP BY u.queue, u.key, u.day;

CREATE OR REPLACE VIEW jq.worker_status AS
SELECT * FROM pgjq_proxy.shard_worker_status();

/* ------------------------------------------------------------------------
 * Privileges: as on a shard (which checks them again)
 * ------------------------------------------------------------------------ */

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgjq_proxy FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA jq FROM PUBLIC;
GRANT USAGE ON SCHEMA jq, pgjq_proxy TO jq_producer, jq_worker, jq_admin, jq_reader;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgjq_proxy TO jq_producer, jq_worker, jq_admin, jq_reader;
GRANT EXECUTE ON FUNCTION
    jq.jq_enqueue(text, jsonb, integer, timestamptz, text, bigint, text, timestamptz, numeric),
    jq.jq_enqueue_batch(text, jsonb[], integer, timestamptz, text[], bigint, text[], timestamptz[], numeric[]),
    jq.jq_create_batch(text, text),
    jq.jq_submit_batch(text, jsonb[], text, integer, timestamptz, text[], timestamptz[], numeric[]),
    jq.jq_result(bigint), jq.jq_await(bigint, interval), jq.jq_cancel(bigint)
TO jq_producer;
GRANT EXECUTE ON PROCEDURE jq.jq_wait_result(bigint, interval, jsonb) TO jq_producer, jq_worker;
GRANT EXECUTE ON PROCEDURE jq.jq_wait_dequeue(text, integer, integer, interval, jsonb) TO jq_worker;
GRANT EXECUTE ON FUNCTION
    jq.jq_dequeue(text, integer, integer, interval),
    jq.jq_ack(bigint, bigint, jsonb, jsonb),
    jq.jq_ack_batch(bigint[], bigint[], jsonb[], jsonb[]),
    jq.jq_ack_dequeue(text, integer, integer, bigint[], bigint[], jsonb[], text[]),
    jq.jq_fail(bigint, bigint, text, interval, boolean, jsonb),
    jq.jq_extend(bigint, bigint, integer),
    jq.jq_progress(bigint, bigint, jsonb),
    jq.jq_result(bigint), jq.jq_await(bigint, interval)
TO jq_worker;
GRANT EXECUTE ON FUNCTION jq.jq_list_queues() TO jq_reader;
GRANT SELECT ON jq.queue_stats, jq.key_stats, jq.batch_progress, jq.usage, jq.worker_status
TO jq_reader;
GRANT EXECUTE ON FUNCTION
    jq.jq_create_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean, integer, integer, bigint, boolean, boolean, integer, numeric, interval),
    jq.jq_alter_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean, integer, integer, bigint, boolean, boolean, boolean, integer, numeric, interval),
    jq.jq_drop_queue(text, boolean),
    jq.jq_set_key_policy(text, text, integer, integer, bigint, boolean, boolean, integer, numeric, interval),
    jq.jq_reset_key_policy(text, text),
    jq.jq_redrive(text, bigint[])
TO jq_admin;
