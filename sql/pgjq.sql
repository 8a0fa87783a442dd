/*
 * pgjq install script.  Edit this file only; the Makefile copies it to the
 * versioned script pgjq--<version>.sql.  Released scripts and the frozen
 * pgjq--A--B.sql upgrade deltas are never edited.
 *
 * Everything lives in schema jq, the extension's schema (pgjq.control):
 * the tables, the views, and the SQL API.  The API is the functions named
 * jq_* (jq.jq_enqueue, jq.jq_dequeue, jq.jq_ack, ...); every other
 * function in jq is internal and granted to nobody.
 *
 * The calling convention is schema-qualified: jq.jq_enqueue(...), never a
 * bare jq_enqueue(...).  PostgreSQL picks among the functions of every
 * schema on the caller's search_path the one whose argument types match
 * best, whatever the order of the schemas, so a look-alike with a closer
 * signature in a schema where others may create (public, in databases
 * created before PostgreSQL 15) captures an unqualified call, with the
 * caller's rights.  A qualified call only looks in jq, where nobody but
 * the extension's owner creates anything.  jq.jq_security_check() and a
 * WARNING at CREATE EXTENSION point at schemas where PUBLIC may create.
 *
 * Every function that touches the tables is SECURITY DEFINER with
 * search_path pinned to pg_catalog, pg_temp, and all SQL inside is
 * schema-qualified.  PUBLIC gets nothing; four NOLOGIN roles carry the
 * privileges (see the GRANT section at the end).
 *
 * Sections, by concern: roles; tables; the vocabulary (states, limits,
 * names); queues; wakeups; enqueue and batches; leases; the failure path
 * and the other cold transitions; results; counters, statistics, alerts and
 * retention; the background worker; the security check; privileges.
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
 * Tables, each registered with pg_extension_config_dump so that pg_dump
 * keeps its rows.  Job states are one-byte codes (src/pgjq.h PGJQ_STATES,
 * named by jq.state_name()):
 *   jq.job         'r' ready, 's' scheduled, 'l' leased
 *   jq.job_result  'd' succeeded, 'c' cancelled
 *   jq.dead_letter dead ('x' where a code is needed)
 * Row invariants are checked by triggers (jq.queue_check, jq.count_trigger)
 * rather than CHECK constraints, so that each rule is written once.
 * ------------------------------------------------------------------------ */

-- Queues and their settings, written only by the queue functions below.
-- The defaults of the settings are those of jq_create_queue.
CREATE TABLE jq.queue (
    queue_id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    lease_seconds     integer NOT NULL,
    max_attempts      integer NOT NULL,
    backoff_base      interval NOT NULL,
    backoff_cap       interval NOT NULL,
    result_retention  interval NOT NULL,
    max_payload_bytes integer NOT NULL,
    dead_letter_retention interval NOT NULL,
    idempotency_window interval NOT NULL,
    -- alert thresholds on ready depth and oldest-ready age; NULL: no alert
    alert_depth_warning  bigint,
    alert_depth_critical bigint,
    alert_age_warning    interval,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- flow control (src/keys.c): jobs in flight at once in the queue and,
    -- by default, per job key; ready and scheduled jobs a key may hold;
    -- weighted fair share among keys; by default, each key's jobs one at
    -- a time in enqueue order.  NULL: no limit
    max_in_flight     integer,
    key_max_in_flight integer,
    key_max_queued    bigint,
    fair              boolean NOT NULL DEFAULT false,
    key_ordered       boolean NOT NULL DEFAULT false,
    -- rate limits of the whole queue (src/keys.c): requests and cost per
    -- rate_period, as token buckets; NULL: no limit
    rate_requests     integer,
    rate_cost         numeric,
    rate_period       interval NOT NULL DEFAULT '1 minute'
);

COMMENT ON TABLE jq.queue IS 'pgjq queues and their settings; change them with jq.jq_create_queue, jq.jq_alter_queue and jq.jq_drop_queue';

SELECT pg_catalog.pg_extension_config_dump('jq.queue', '');
SELECT pg_catalog.pg_extension_config_dump('jq.queue_queue_id_seq', '');

CREATE SEQUENCE jq.job_id_seq AS bigint;

/*
 * The hot table: only jobs that are not finished (ready, scheduled, leased).
 * A job leaves it when it finishes (to jq.job_result or jq.dead_letter), so
 * dequeue never walks finished rows.  No foreign key to jq.queue: the RI
 * check would take a KEY SHARE lock on the queue row in every enqueue and
 * serialise producers on it.
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
    -- the job's key (a client team, a tenant, an endpoint): flow control
    -- counts, limits and shares by it (src/keys.c); NULL: no key
    key              text,
    -- the running attempt's last jq_progress report, and when; a new
    -- lease clears them
    progress         jsonb,
    progress_at      timestamptz,
    -- not started by then, the job is never handed out: it ends expired
    -- (jq.expire_deadlines); NULL: no deadline
    deadline         timestamptz,
    -- what the job is expected to cost (tokens, say), for usage and rate
    -- limits; NULL: 1
    cost             numeric,
    CONSTRAINT job_pkey PRIMARY KEY (id)
    -- Two invariants are checked by jq.count_trigger (src/counters.c)
    -- rather than by CHECK constraints, which the executor parses anew for
    -- every statement (5% of the CPU of an enqueue):
    --   state is one of jq.job's states
    --   (state = 'l') = (lease_expires_at IS NOT NULL)
) WITH (fillfactor = 90);

ALTER SEQUENCE jq.job_id_seq OWNED BY jq.job.id;

COMMENT ON TABLE jq.job IS 'pgjq unfinished jobs (ready, scheduled, leased); use jq.jq_result() or the views rather than reading it directly';

-- dequeue: the head of this index is the next job to hand out; it holds
-- ready jobs only, so leased, scheduled and finished jobs are never walked.
-- Jobs without a key; those with one are in job_key_ready_idx, so that
-- each ready job has one entry (an enqueue costs what it did) and each key's
-- jobs are together, for flow control to take a key's next job in one probe.
-- By the key's 64-bit hash, not the key: only equality matters, the scan
-- checks the key itself on the row, and with fixed-width columns only a
-- descent compares integers (a text key cost a linguistic comparison and
-- the uncached offsets of every column after it: a third of a 100-job
-- dequeue over 1,000 keys)
CREATE INDEX job_ready_idx ON jq.job (queue_id, priority DESC, run_at, id)
    WHERE state = 'r' AND key IS NULL;
CREATE INDEX job_key_ready_idx ON jq.job (queue_id, pg_catalog.hashtextextended(key, 0),
                                        priority DESC, run_at, id)
    WHERE state = 'r' AND key IS NOT NULL;
-- promotion of scheduled jobs whose run_at has come
CREATE INDEX job_scheduled_idx ON jq.job (queue_id, run_at)
    WHERE state = 's';
-- lease reclaim: leased jobs by expiry (few rows: only jobs in flight).
-- lease_expires_at is set exactly while a job is leased; the predicate is
-- on it rather than on state so that the ack's "state = 'l'" test never
-- lures the planner into walking this index instead of the primary key.
CREATE INDEX job_leased_idx ON jq.job (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
-- expiry: waiting jobs by deadline (a lease takes its job out)
CREATE INDEX job_deadline_idx ON jq.job (deadline)
    WHERE deadline IS NOT NULL AND state IN ('r', 's');

SELECT pg_catalog.pg_extension_config_dump('jq.job', '');
SELECT pg_catalog.pg_extension_config_dump('jq.job_id_seq', '');

/*
 * Finished jobs and their results.  Written once when a job finishes (one
 * statement, src/statements.c SQL_INSERT_FINISHED); read by jq_result();
 * purged by result retention.
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
    key         text,
    deadline    timestamptz,
    cost        numeric,                -- the usage's cost, else the job's (NULL: 1)
    usage       jsonb,                  -- what the ack reported
    CONSTRAINT job_result_pkey PRIMARY KEY (job_id)
);

COMMENT ON TABLE jq.job_result IS 'pgjq succeeded (d), cancelled (c) and expired (e) jobs with their results, kept for the queue''s result_retention';

CREATE INDEX job_result_finished_idx ON jq.job_result (queue_id, finished_at);

SELECT pg_catalog.pg_extension_config_dump('jq.job_result', '');

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
    key         text,
    CONSTRAINT dead_letter_pkey PRIMARY KEY (job_id)
);

COMMENT ON TABLE jq.dead_letter IS 'pgjq dead letters: jobs out of attempts or failed permanently, with every error; jq.jq_redrive puts them back';

CREATE INDEX dead_letter_queue_idx ON jq.dead_letter (queue_id, failed_at);

SELECT pg_catalog.pg_extension_config_dump('jq.dead_letter', '');

/*
 * Flow-control policies of job keys (src/keys.c), set with
 * jq.jq_set_key_policy and removed with jq.jq_reset_key_policy.  A key
 * without a row follows its queue's defaults (jq.queue key_max_in_flight,
 * key_max_queued, key_ordered; weight 1), and so does a NULL column.  version grows with every change of a row, so
 * that shared memory installs each key's changes in commit order.
 */
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

COMMENT ON TABLE jq.idempotency_key IS 'pgjq idempotency keys: a resubmission with the same key returns the same job';

SELECT pg_catalog.pg_extension_config_dump('jq.idempotency_key', '');

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

SELECT pg_catalog.pg_extension_config_dump('jq.batch', '');
SELECT pg_catalog.pg_extension_config_dump('jq.batch_batch_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('jq.batch_job', '');

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
    expired_total       bigint NOT NULL DEFAULT 0,
    CONSTRAINT stats_history_pkey PRIMARY KEY (queue_id, sampled_at)
);

CREATE INDEX stats_history_sampled_idx ON jq.stats_history (sampled_at);

COMMENT ON TABLE jq.stats_history IS 'pgjq depth samples per queue, for charting depth over time';

SELECT pg_catalog.pg_extension_config_dump('jq.stats_history', '');

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

SELECT pg_catalog.pg_extension_config_dump('jq.alert', '');
SELECT pg_catalog.pg_extension_config_dump('jq.alert_alert_id_seq', '');

/* ------------------------------------------------------------------------
 * The vocabulary: states, limits and the queue-name rule are defined once,
 * in C (src/pgjq.h); these functions give them to the SQL below.
 * ------------------------------------------------------------------------ */

-- Every limit of the API: name, value, description.
CREATE FUNCTION jq.limits(OUT name text, OUT value bigint, OUT description text)
RETURNS SETOF record
LANGUAGE C IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_limits';

COMMENT ON FUNCTION jq.limits IS 'the limits of the pgjq API (queue names, priorities, batch sizes, lease lengths, ...)';

-- One limit by name; immutable, so that plans fold it to a constant.
CREATE FUNCTION jq.limit(name text)
RETURNS bigint
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_limit';

COMMENT ON FUNCTION jq.limit IS 'one limit of the pgjq API by name; see jq.limits()';

-- Text name of a state code, as jq_result() and the views show it; a
-- scheduled job whose time has come shows as ready.
CREATE FUNCTION jq.state_name(state "char", run_at timestamptz)
RETURNS text
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_state_name';

-- Raises 42602 unless name is a valid queue name (src/queue.c has the rule).
CREATE FUNCTION jq.check_queue_name(name text)
RETURNS void
LANGUAGE C PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_check_queue_name_sql';

-- The error text kept with a job: whole up to jq.limit('error_maxlen')
-- bytes, longer ones cut at a character boundary and marked.
CREATE FUNCTION jq.clip_error(message text)
RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgjq_clip_error';

-- Raises 22023 when an interval setting exceeds jq.limit('interval_max_years').
CREATE FUNCTION jq.check_interval_bound(setting text, value interval)
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

/* ------------------------------------------------------------------------
 * Queues
 * ------------------------------------------------------------------------ */

/*
 * The rules of a queue's settings, with friendly errors.  jq.queue_check,
 * a trigger on jq.queue, applies them to every row written, whoever writes
 * it: jq_create_queue, jq_alter_queue or an operator's own SQL.
 */
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

CREATE FUNCTION jq.check_queue_settings(q jq.queue)
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

-- Each backend caches the queues' settings (src/queue.c); any change of
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

/*
 * jq.queue_id(name, lock) resolves a queue name for the SQL functions,
 * with the hot path's errors (src/queue.c pgjq_lookup_queue): 42602 for an
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
                  HINT = format('Create it with jq.jq_create_queue(%L).', queue_id.name);
    END IF;
    RETURN qid;
END
$$;

-- The defaults of every queue setting are the defaults of this function.
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

-- NULL arguments leave a setting unchanged.
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

/*
 * Drops a queue.  Refuses while it has unfinished jobs unless force; with
 * force, its jobs and results go too.  The queue row is locked first so a
 * concurrent drop or alter waits, and the queue's lock keeps enqueues out.
 */
CREATE FUNCTION jq.jq_drop_queue(name text, force boolean DEFAULT false)
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

COMMENT ON FUNCTION jq.jq_drop_queue IS 'drop a pgjq queue; refuses while it has unfinished jobs unless force';

CREATE FUNCTION jq.jq_list_queues()
RETURNS SETOF jq.queue
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM jq.queue ORDER BY name
$$;

COMMENT ON FUNCTION jq.jq_list_queues IS 'list pgjq queues with their settings';

/* ------------------------------------------------------------------------
 * Wakeups (src/wakeup.c).  Every transition that makes jobs ready marks
 * its queue when the transaction commits; the worker sends one coalesced
 * NOTIFY jq_<queue> per queue.  Producers never NOTIFY.
 * ------------------------------------------------------------------------ */

-- Wakes the queue's waiting sessions (as many as take jobs) and its
-- listeners when the current transaction commits; a no-op without
-- shared_preload_libraries.
CREATE FUNCTION jq.wake_at_commit(queue_id integer, jobs integer DEFAULT 1)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_wake_at_commit_sql';

-- NOTIFY jq_<queue> for the queues given (all when NULL); the worker
-- calls it.  Returns how many queues were notified.
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

/* ------------------------------------------------------------------------
 * Enqueue and batches.  Enqueue is C running kept SPI plans
 * (src/enqueue.c, src/statements.c).
 * ------------------------------------------------------------------------ */

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

CREATE FUNCTION jq.jq_create_batch(queue text, label text DEFAULT NULL)
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

-- one call: a new batch with all its jobs; returns the batch id
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

/* ------------------------------------------------------------------------
 * Leases: dequeue and ack are C running kept SPI plans (src/lease.c).
 * The fence (which lease is current) and the finishing of a job are
 * statements of src/statements.c, which jq_fail, jq_extend and jq_cancel
 * reach through jq.lock_lease and jq.finish_cancelled.
 * ------------------------------------------------------------------------ */

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

-- Locks the job and returns true when (job_id, lease_token) is its
-- current lease; false, locking nothing, when the token is stale.
CREATE FUNCTION jq.lock_lease(job_id bigint, lease_token bigint)
RETURNS boolean
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_lock_lease';

-- Finishes jobs the caller has locked as cancelled (to jq.job_result).
CREATE FUNCTION jq.finish_cancelled(job_ids bigint[])
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_finish_cancelled';

/*
 * Scan bounds (src/bounds.c): where the scans of jq.job's partial indexes
 * start, past the entries of jobs that have left the state the index
 * holds.  jq_dequeue keeps the ready lanes' bounds in C; jq.promote_due
 * and jq.reclaim_expired_leases keep those of scheduled jobs and leases
 * through these two: read the bound (and its generation) in one
 * statement, scan from it in the next, then advance it to the head the
 * scan found.  Internal: no pgjq role may call them.
 */
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

/* ------------------------------------------------------------------------
 * The cold transitions, each in one function that the worker and the
 * tests both call: promotion of due jobs, failure of an attempt (and lease
 * reclaim, which is the failure of an expired attempt), extension,
 * cancellation and redrive.  Every transition that makes jobs ready wakes
 * their queue at commit.
 * ------------------------------------------------------------------------ */

/*
 * jq.promote_due(queue_id, max_jobs) makes the scheduled jobs whose run_at
 * has come ready: of one queue, or of every queue when queue_id is NULL,
 * at most max_jobs per queue.  SKIP LOCKED: concurrent callers share the
 * work instead of waiting for each other.  The worker calls it every
 * pass; jq_dequeue calls it for its queue when a due job is waiting.
 * Returns how many jobs it promoted.
 */
CREATE FUNCTION jq.promote_due(queue_id integer, max_jobs integer)
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

/*
 * jq.fail_leased(job_ids, error, permanent, retry_at, now) is the one state
 * transition of a failed attempt, shared by jq_fail and lease reclaim.  The
 * caller has locked the jobs and checked they are leased by the attempt
 * that failed.  For each job:
 *   - a cancel was requested  -> cancelled (jq.finish_cancelled), never retried;
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

/*
 * jq.reclaim_expired_leases(max_jobs) fails the attempts whose lease has
 * expired ("lease expired"): each goes back to ready at once, or to the
 * dead letters if it was the last attempt, or to cancelled if a cancel was
 * requested.  Jobs locked by a worker acking or failing them right now are
 * skipped (SKIP LOCKED) and picked up next time.  Returns how many moved.
 * The background worker calls this in batches of pgjq.reclaim_batch.
 */
CREATE FUNCTION jq.reclaim_expired_leases(max_jobs integer DEFAULT 1000)
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

-- Ends the given ready or scheduled jobs as expired (jq.expire_deadlines
-- has locked them and checked their deadline): each leaves jq.job for
-- jq.job_result, through the hot path's finish.  Returns how many.
CREATE FUNCTION jq.finish_expired(job_ids bigint[])
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_finish_expired';

CREATE FUNCTION jq.jq_extend(job_id bigint, lease_token bigint,
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

CREATE FUNCTION jq.jq_cancel(job_id bigint)
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

CREATE FUNCTION jq.jq_redrive(queue text, job_ids bigint[] DEFAULT NULL)
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

COMMENT ON FUNCTION jq.jq_redrive IS 'move dead letters of a queue (all, or those in job_ids) back to ready with fresh attempts; returns how many moved';

-- When the worker must look next: the earliest lease expiry, scheduled
-- run_at or deadline of a waiting job, NULL when there is none.
CREATE FUNCTION jq.next_deadline()
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

/* ------------------------------------------------------------------------
 * Results
 * ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------
 * Counters, statistics, alerts and retention.  src/counters.c keeps the
 * counters; the worker samples them, checks alerts and purges.
 * ------------------------------------------------------------------------ */

-- Records each change of the three tables as a counter delta, applied to
-- shared memory at commit, and checks the invariants of a new row; on
-- jq.job it also tells the scan bounds (src/bounds.c) where a job entered
-- or left a state, so UPDATE fires it for every column of the keys of the
-- ready, scheduled and leased indexes.
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
CREATE TRIGGER job_count AFTER UPDATE OF queue_id, state, priority, run_at, lease_expires_at, id, key,
                            deadline OR DELETE
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
    OUT expired_total bigint,
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

-- Where the next scan of each job index starts (src/bounds.c): one row per
-- bound that may have jobs past it: ready (a dequeue lane: queue and
-- priority), scheduled (a queue's promotion) and leased (the reclaim);
-- at -infinity and id NULL for a scan from the start.  No rows while the
-- counters are not valid: scans then start at the start of their index.
CREATE FUNCTION jq.scan_bounds(
    OUT state text, OUT queue_id integer, OUT priority integer,
    OUT at timestamptz, OUT id bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_scan_bounds';

-- Forgets this database's counters (left over from a dropped pgjq, say)
-- and has the worker rebuild them.
CREATE FUNCTION jq.reset_counters()
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_reset_counters';

SELECT jq.reset_counters();

/*
 * jq.lock_for_rebuild(timeout_ms) takes SHARE locks on the counted tables
 * for a counter rebuild: they wait until every writer has finished, and
 * hold new writers off until the rebuild commits.  Gives up, returning
 * false, after timeout_ms, so a long open transaction cannot stall
 * producers behind the worker for long.
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

-- Recounts this database's counters from the tables (src/counters.c);
-- false when it could not now (locks not granted within timeout_ms, or a
-- prepared transaction pending).  The worker calls it whenever the
-- counters are not valid.
CREATE FUNCTION jq.rebuild_counters(timeout_ms integer DEFAULT 2000)
RETURNS boolean
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_rebuild_counters';

-- each key as shared memory has it (internal: jq.key_stats shows it;
-- src/keys.c)
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

/*
 * jq.queue_stats: per queue, depth by state and by priority, age of the
 * oldest ready job, in-flight count and throughput over the last minute.
 * Reads shared counters, one index probe per (queue, priority) that has
 * ready jobs, and one history row per queue: never count(*).
 */
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

/* ------------------------------------------------------------------------
 * Job keys and flow control (src/keys.c).  Shared memory keeps each key's
 * counts and reservations; jq.key_policy holds the policies, which reach
 * shared memory when the transaction that set them commits.
 * ------------------------------------------------------------------------ */

CREATE SEQUENCE jq.key_policy_version_seq AS bigint;

-- installs a key's policy (weight NULL: removes it) when the transaction commits
CREATE FUNCTION jq.install_key_policy(queue_id integer, key text, version bigint,
                                      weight integer, max_in_flight integer,
                                      max_queued bigint, ordered boolean,
                                      rate_requests integer, rate_cost numeric,
                                      rate_period interval)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_install_key_policy';

-- forgets a dropped queue's keys when the transaction commits
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

-- the rule of a usage report (src/usage.c), for jq_fail
CREATE FUNCTION jq.check_usage(usage jsonb)
RETURNS void
LANGUAGE C IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_check_usage_sql';

/*
 * Sets or changes one key's policy; NULL leaves a setting as it is (a new
 * policy starts at weight 1, without limits of its own).  A key needs no
 * jobs to get a policy: set it before the traffic comes.
 */
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

/*
 * Removes the policy of one key (it follows the queue's defaults again),
 * or with key NULL of every key of the queue; returns how many were removed.
 */
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

/*
 * Each job key of each queue with its jobs, limits and totals, from shared
 * memory and the policies: no scan of jq.job (the next job's age is one
 * index probe per key).  key NULL is the queue's jobs without a key.
 * held_back: the key has jobs ready but gets none now, being at its own
 * limit (key_max_in_flight) or its queue at the queue's (max_in_flight).
 */
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

COMMENT ON VIEW jq.batch_progress IS 'pgjq progress per batch: total, waiting, in flight, succeeded, dead, percent complete';

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

-- every error of every dead letter, one row each
CREATE VIEW jq.dead_letter_errors AS
SELECT d.job_id, d.queue, (e.err ->> 'attempt')::integer AS attempt,
       e.err ->> 'error' AS error, (e.err ->> 'at')::timestamptz AS failed_at
  FROM jq.dead_letter d
 CROSS JOIN LATERAL jsonb_array_elements(d.errors) AS e(err);

COMMENT ON VIEW jq.dead_letter_errors IS 'pgjq dead letters, one row per error (no payloads)';

/* ------------------------------------------------------------------------
 * The background worker (src/launcher.c, src/worker.c)
 * ------------------------------------------------------------------------ */

CREATE FUNCTION jq.jq_worker_status(
    OUT preloaded boolean,
    OUT databases text,
    OUT worker_pid integer,
    OUT status text)
RETURNS record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_worker_status';

COMMENT ON FUNCTION jq.jq_worker_status IS 'whether pgjq is preloaded and a worker serves this database (lease reclaim, promotion, wakeups)';

/* ------------------------------------------------------------------------
 * The security check: schemas where PUBLIC may create, on the search_path
 * of the roles that call pgjq.  A look-alike created there captures every
 * unqualified call of the API (see the header); qualified calls are safe.
 * ------------------------------------------------------------------------ */

/*
 * One row per such schema, with the roles and settings that put it on a
 * path: this session's search_path, the settings of ALTER DATABASE and
 * ALTER ROLE (for the members of the jq_* roles), and PostgreSQL's default
 * ("$user", public).
 */
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

/* ------------------------------------------------------------------------
 * Privileges.  PUBLIC gets nothing; each role gets its own calls.
 *   jq_producer: enqueue, batches, read results, cancel
 *   jq_worker:   dequeue, ack, fail, extend, progress (and read results)
 *   jq_reader:   queue list, statistics views, limits, checks; never payloads
 *   jq_admin:    queue management and redrive, and what the others can do
 * ------------------------------------------------------------------------ */
REVOKE ALL ON ALL TABLES IN SCHEMA jq FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA jq FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA jq FROM PUBLIC;

GRANT USAGE ON SCHEMA jq TO jq_producer, jq_worker, jq_admin, jq_reader;

GRANT EXECUTE ON FUNCTION
    jq.jq_enqueue(text, jsonb, integer, timestamptz, text, bigint, text, timestamptz, numeric),
    jq.jq_enqueue_batch(text, jsonb[], integer, timestamptz, text[], bigint, text[], timestamptz[], numeric[]),
    jq.jq_create_batch(text, text),
    jq.jq_submit_batch(text, jsonb[], text, integer, timestamptz, text[], timestamptz[], numeric[]),
    jq.jq_result(bigint),
    jq.jq_await(bigint, interval),
    jq.jq_cancel(bigint),
    jq.jq_adopt_batch(bigint, text, text)
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
    jq.jq_result(bigint),
    jq.jq_await(bigint, interval)
TO jq_worker;

GRANT EXECUTE ON FUNCTION jq.jq_list_queues(), jq.jq_worker_status(),
                          jq.jq_security_check(), jq.limits(), jq.limit(text)
TO jq_reader;
GRANT SELECT ON jq.queue, jq.queue_stats, jq.stats_history, jq.alert, jq.batch,
                 jq.batch_progress, jq.dead_letter_errors, jq.compaction,
                 jq.key_policy, jq.key_stats, jq.usage TO jq_reader;
GRANT EXECUTE ON FUNCTION jq.counters(), jq.counters_valid(), jq.scan_bounds(),
    jq.key_counters(), jq.free_space(regclass) TO jq_reader;
-- dead letters hold payloads: operators (jq_admin) read them, readers do not
GRANT SELECT ON jq.dead_letter TO jq_admin;

GRANT EXECUTE ON FUNCTION
    jq.jq_create_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean, integer, integer, bigint, boolean, boolean, integer, numeric, interval),
    jq.jq_alter_queue(text, integer, integer, interval, interval, interval, integer, interval, interval, bigint, bigint, interval, boolean, integer, integer, bigint, boolean, boolean, boolean, integer, numeric, interval),
    jq.jq_drop_queue(text, boolean),
    jq.jq_set_key_policy(text, text, integer, integer, bigint, boolean, boolean, integer, numeric, interval),
    jq.jq_reset_key_policy(text, text),
    jq.jq_redrive(text, bigint[])
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
