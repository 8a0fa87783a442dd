-- pgTAP: hostile input for every function of pgjq that a role may call,
-- generated from the catalog (issue 7).
--
-- Which functions: every function of the extension (pg_depend) that one of
-- the jq_* roles may execute (has_function_privilege): the API, jq.jq_*,
-- named here without the schema, and the readers' functions, jq.counters()
-- and the like, named with it.  Their parameters
-- come from pg_proc (proargtypes, proargnames, proargmodes), so a function
-- added later is called here automatically.
--
-- What is called: for each function, a baseline call with valid arguments;
-- then, for each parameter in turn, the baseline with that one argument
-- replaced by every hostile value generated for its type (NULL, empty,
-- SQL metacharacters and quotes, unicode, 48/49/1000-character and 1 MB
-- strings (100 MB ones on a few calls), int2/int4/int8 extremes, infinite and extreme
-- timestamps, negative and huge intervals, JSON scalars, deep and big
-- JSON, empty, NULL-holding, two-dimensional, shifted, longer and
-- 10,001-element arrays, and each scalar value as an array element), plus
-- a few values per parameter (limits, fixture jobs in every state, stale
-- tokens) and a few multi-argument combinations.
--
-- What is checked for each call: the outcome that the table `rule` below
-- expects, one of
--   a SQLSTATE   the call raises an ERROR with exactly that code
--   noop         it returns its documented "nothing happened" value (false,
--                NULL, 0, no row, or no row acked) and no jq table changed
--   ok           it returns a real result; text given to it is stored
--                exactly as given (table `stored`), and a queue it creates
--                or alters still works end to end (pg_temp.probe_queue)
--   ok-nochange  ok, and no jq table changed (an idempotent resubmission)
--   any          it returns, whatever it returns
-- ("a|b": either is accepted).  Besides: an internal error (XX...) is
-- always a failure; every jq table must still exist and be readable after
-- every call; a failed call must leave the tables as they were (a
-- fingerprint of all jq.* tables before and after).  A case that the
-- generator cannot build (a parameter type without hostile values, a
-- parameter without a valid baseline value, unnamed parameters) or that
-- no rule covers is a failure, never skipped.
--
-- Each call runs in a subtransaction that is rolled back afterwards, so the
-- cases do not disturb each other; the whole file runs in one REPEATABLE
-- READ transaction that is rolled back, so the background worker's own
-- commits (history samples, purges) cannot change the fingerprint.
--
-- Expectations marked BUG below are the correct outcome of a call that
-- currently misbehaves: those tests fail until the bug is fixed.
\set ON_ERROR_STOP 1
\pset tuples_only on
\pset format unaligned
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS pgjq;
-- flow control hands out nothing until the counters are built (the worker
-- does it within a moment of CREATE EXTENSION): build them now
DO $$ BEGIN PERFORM jq.rebuild_counters(); END $$;
BEGIN ISOLATION LEVEL REPEATABLE READ;
-- the probe's alert checks raise WARNINGs, if_not_exists a NOTICE
SET LOCAL client_min_messages = error;
SET LOCAL statement_timeout = '10min';

/* ------------------------------------------------------------------------
 * Fixture: queues hq (jobs in every state), hq2 (another queue), hq_empty
 * (no jobs); job ids and the leased job's token in fx, used in the SQL
 * expressions below as {R} (ready), {S} (scheduled), {L} (leased), {T}
 * (its token), {D} (succeeded), {X} (dead letter of hq), {X2} (dead
 * letter of hq2), {B} (batch of hq), {B2} (batch of hq2), {KEY} (the
 * idempotency key of {R}).
 * ------------------------------------------------------------------------ */
CREATE TEMP TABLE fx (k text PRIMARY KEY, v text NOT NULL);

DO $fx$
DECLARE
    r record;
    id bigint;
BEGIN
    PERFORM jq.jq_create_queue('hq');
    PERFORM jq.jq_create_queue('hq2');
    PERFORM jq.jq_create_queue('hq_empty');

    -- one job at a time, so each dequeue leases exactly the job just enqueued
    id := jq.jq_enqueue('hq', '{"fixture": "dead"}');
    SELECT * INTO STRICT r FROM jq.jq_dequeue('hq');
    ASSERT r.job_id = id;
    PERFORM jq.jq_fail(r.job_id, r.lease_token, 'fixture: dead', permanent => true);
    INSERT INTO fx VALUES ('X', id);

    id := jq.jq_enqueue('hq2', '{"fixture": "dead elsewhere"}');
    SELECT * INTO STRICT r FROM jq.jq_dequeue('hq2');
    ASSERT r.job_id = id;
    PERFORM jq.jq_fail(r.job_id, r.lease_token, 'fixture: dead', permanent => true);
    INSERT INTO fx VALUES ('X2', id);

    id := jq.jq_enqueue('hq', '{"fixture": "done"}');
    SELECT * INTO STRICT r FROM jq.jq_dequeue('hq');
    ASSERT r.job_id = id;
    ASSERT jq.jq_ack(r.job_id, r.lease_token, '{"fixture": "result"}');
    INSERT INTO fx VALUES ('D', id);

    id := jq.jq_enqueue('hq', '{"fixture": "leased"}');
    SELECT * INTO STRICT r FROM jq.jq_dequeue('hq');
    ASSERT r.job_id = id;
    INSERT INTO fx VALUES ('L', id), ('T', r.lease_token);

    INSERT INTO fx VALUES ('KEY', 'fixture-key');
    INSERT INTO fx VALUES ('R', jq.jq_enqueue('hq', '{"fixture": "ready"}',
                                           idempotency_key => 'fixture-key'));
    INSERT INTO fx VALUES ('S', jq.jq_enqueue('hq', '{"fixture": "scheduled"}',
                                           run_at => now() + interval '1 day'));
    INSERT INTO fx VALUES ('B', jq.jq_create_batch('hq', 'fixture batch'));
    INSERT INTO fx VALUES ('B2', jq.jq_create_batch('hq2'));
END
$fx$;

-- fx_subst(sql) puts the fixture's values into {X}-style placeholders
CREATE FUNCTION pg_temp.fx_subst(s text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    f record;
BEGIN
    -- longest names first, so that {X2} is not read as {X} followed by 2
    FOR f IN SELECT k, v FROM fx ORDER BY length(k) DESC LOOP
        s := replace(s, '{' || f.k || '}',
                     CASE WHEN f.k = 'KEY' THEN quote_literal(f.v) ELSE f.v END);
    END LOOP;
    RETURN s;
END
$$;

/* ------------------------------------------------------------------------
 * The fingerprint of every table of schema jq: an md5 of each table's rows
 * (as text, in text order, which is deterministic whatever the primary
 * key), over the tables that exist now.  A dropped or unreadable table
 * makes the fingerprint query itself fail.
 * ------------------------------------------------------------------------ */
CREATE TEMP TABLE jq_tables AS
SELECT c.oid::regclass AS tbl, c.relname::text AS name
  FROM pg_class c
 WHERE c.relnamespace = 'jq'::regnamespace AND c.relkind IN ('r', 'p');

CREATE TEMP TABLE fp_sql AS
SELECT 'SELECT md5(' || string_agg(
           format($f$%L || (SELECT md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '')) FROM %s t)$f$,
                  name || ':', tbl),
           $s$ || '/' || $s$ ORDER BY name) || ')' AS q
  FROM jq_tables;

CREATE FUNCTION pg_temp.fingerprint() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    fp text;
BEGIN
    EXECUTE (SELECT q FROM fp_sql) INTO fp;
    RETURN fp;
END
$$;

CREATE TEMP TABLE fp_start AS SELECT pg_temp.fingerprint() AS fp;

/* ------------------------------------------------------------------------
 * Hostile values per type: SQL expressions, cast to the parameter's type
 * when used.
 * ------------------------------------------------------------------------ */
CREATE TEMP TABLE hv (typ text, label text, expr text, PRIMARY KEY (typ, label));
INSERT INTO hv VALUES
    ('text', 'null', 'NULL'),
    ('text', 'empty', $$''$$),
    ('text', 'blank', $$' '$$),
    ('text', 'trailing', $$'hq '$$),
    ('text', 'inject_drop', $$'x''; DROP TABLE jq.job; --'$$),
    ('text', 'inject_paren', $$'hq''); DELETE FROM jq.queue; --'$$),
    ('text', 'inject_dollar', $v$'$$; DROP TABLE jq.queue; $$'$v$),
    ('text', 'dquote', $$'"hq"'$$),
    ('text', 'backslash', $$E'hq\\'$$),
    ('text', 'fmt', $$'%s%I%L%% %1$s'$$),
    ('text', 'unicode', $$E'\u00f1and\u00fa_\u65e5\u672c_\U0001F642_\u202e_\u200d'$$),
    ('text', 'upper', $$'HQ'$$),
    ('text', 'ctrl', $$E'hq\n\t\r\x01'$$),
    ('text', 'len48', $$repeat('q', 48)$$),
    ('text', 'len49', $$repeat('q', 49)$$),
    ('text', 'len1000', $$repeat('q', 1000)$$),
    ('text', '1mb', $$repeat('x', 1048576)$$),
    ('text', 'unknown', $$'no_such_queue'$$),

    ('jsonb', 'null', 'NULL'),
    ('jsonb', 'num', $$'42'$$),
    ('jsonb', 'str', $$'"text"'$$),
    ('jsonb', 'jnull', $$'null'$$),
    ('jsonb', 'bool', $$'true'$$),
    ('jsonb', 'empty_arr', $$'[]'$$),
    ('jsonb', 'empty_obj', $$'{}'$$),
    ('jsonb', 'deep_arr', $$repeat('[', 5000) || repeat(']', 5000)$$),
    ('jsonb', 'deep_obj', $$repeat('{"a": ', 2000) || '1' || repeat('}', 2000)$$),
    ('jsonb', 'big', $$jsonb_build_object('big', repeat('x', 2 * 1048576))$$),
    ('jsonb', 'inject_key', $$'{"x''; DROP TABLE jq.job; --": "\"); DELETE FROM jq.queue; --"}'$$),
    ('jsonb', 'unicode_obj', $$'{"\u00fc\u65e5": "\ud83d\ude42", "\\": "\""}'$$),

    ('integer', 'null', 'NULL'),
    ('integer', 'zero', '0'),
    ('integer', 'neg1', '-1'),
    ('integer', 'one', '1'),
    ('integer', 'int2max', '32767'),
    ('integer', 'int2min', '-32768'),
    ('integer', 'int4max', '2147483647'),
    ('integer', 'int4min', '-2147483648'),

    ('bigint', 'null', 'NULL'),
    ('bigint', 'zero', '0'),
    ('bigint', 'neg1', '-1'),
    ('bigint', 'unknown', '987654321987'),
    ('bigint', 'int4max_plus', '2147483648'),
    ('bigint', 'int8max', '9223372036854775807'),
    ('bigint', 'int8min', '-9223372036854775808'),

    ('timestamp with time zone', 'null', 'NULL'),
    ('timestamp with time zone', 'infinity', $$'infinity'$$),
    ('timestamp with time zone', 'neg_infinity', $$'-infinity'$$),
    ('timestamp with time zone', 'max', $$'294276-12-31 23:59:59.999999+00'$$),
    ('timestamp with time zone', 'min', $$'4714-11-24 00:00:00+00 BC'$$),
    ('timestamp with time zone', 'epoch', $$'1970-01-01 00:00:00+00'$$),
    ('timestamp with time zone', 'future', $$now() + interval '1 hour'$$),
    ('numeric', 'null', 'NULL'),
    ('numeric', 'zero', '0'),
    ('numeric', 'tokens', '812.5'),
    ('numeric', 'neg', '-1'),
    ('numeric', 'nan', $$'NaN'$$),
    ('numeric', 'inf', $$'Infinity'$$),
    ('numeric', 'neg_inf', $$'-Infinity'$$),
    ('numeric', 'huge', $$'1e1000'$$),

    ('interval', 'null', 'NULL'),
    ('interval', 'zero', $$'0'$$),
    ('interval', 'neg_us', $$'-1 microsecond'$$),
    ('interval', 'neg_huge', $$'-178000000 years'$$),
    ('interval', 'pos_huge', $$'178000000 years'$$),
    ('interval', 'us', $$'1 microsecond'$$),
    ('interval', 'month', $$'1 mon'$$),
    ('interval', 'mixed', $$'1 mon -29 days'$$),
    ('interval', 'max_days', $$make_interval(days => 2147483647)$$),
    ('interval', 'max_time', $$'2562047788 hours'$$),

    ('boolean', 'null', 'NULL'),
    ('boolean', 'true', 'true'),
    ('boolean', 'false', 'false'),

    ('regclass', 'null', 'NULL'),
    ('regclass', 'zero', '0::oid::regclass'),
    ('regclass', 'unknown', '4294967295::oid::regclass'),
    ('regclass', 'other_schema', $$'pg_catalog.pg_class'::regclass$$),
    ('regclass', 'view', $$'jq.queue_stats'::regclass$$),
    ('regclass', 'jq_index', $$'jq.job_pkey'::regclass$$);

-- Hostile arrays, for an array of any element type that has hostile values
-- (each of those then also comes as a one-element array, "elem:<label>").
-- %E is a valid element (the parameter's seed, below), %T the element type.
CREATE TEMP TABLE hv_array (label text PRIMARY KEY, expr text);
INSERT INTO hv_array VALUES
    ('null', 'NULL'),
    ('empty', $$'{}'$$),
    ('twodim', 'ARRAY[[(%E)::%T], [(%E)::%T]]'),
    ('lbshift', $$('[0:0]=' || ARRAY[(%E)::%T]::text)$$),
    ('longer', 'ARRAY[(%E)::%T, (%E)::%T]'),
    ('n10001', 'array_fill((%E)::%T, ARRAY[10001])');

-- Values for particular parameters: limits, fixture jobs in each state,
-- stale tokens.  fn and param are regular expressions (anchored).
CREATE TEMP TABLE hv_extra (fn text, param text, label text, expr text);
INSERT INTO hv_extra VALUES
    -- 100 MB strings cost about half a second each: one per code path (the
    -- C name check, the PL/pgSQL one, the cut of a stored error text)
    ('jq_enqueue', 'queue', '100mb', $$repeat('x', 104857600)$$),
    ('jq_create_queue', 'name', '100mb', $$repeat('x', 104857600)$$),
    ('jq_fail', 'error', '100mb', $$repeat('x', 104857600)$$),
    ('jq_create_queue', 'name', 'existing', $$'hq'$$),
    ('jq_drop_queue', 'name', 'has_jobs', $$'hq'$$),
    ('jq_enqueue|jq_enqueue_batch|jq_submit_batch', 'priority', 'p100', '100'),
    ('jq_enqueue|jq_enqueue_batch|jq_submit_batch', 'priority', 'p101', '101'),
    ('jq_enqueue|jq_enqueue_batch|jq_submit_batch', 'priority', 'm100', '-100'),
    ('jq_enqueue|jq_enqueue_batch|jq_submit_batch', 'priority', 'm101', '-101'),
    ('jq_enqueue|jq_enqueue_batch', 'batch_id', 'own', '{B}'),
    ('jq_enqueue|jq_enqueue_batch', 'batch_id', 'other_queue', '{B2}'),
    ('jq_enqueue', 'idempotency_key', 'key512', $$repeat('k', 512)$$),
    ('jq_enqueue', 'idempotency_key', 'key513', $$repeat('k', 513)$$),
    ('jq_enqueue', 'idempotency_key', 'utf8_514', $$repeat(E'\u00e9', 257)$$),
    ('jq_enqueue', 'idempotency_key', 'known', '{KEY}'),
    ('jq_create_batch|jq_submit_batch', 'label', 'lbl512', $$repeat('l', 512)$$),
    ('jq_create_batch|jq_submit_batch', 'label', 'lbl513', $$repeat('l', 513)$$),
    ('jq_create_batch|jq_submit_batch', 'label', 'utf8_514', $$repeat(E'\u00e9', 257)$$),
    ('jq_dequeue|jq_wait_dequeue|jq_ack_dequeue', 'max_jobs', 'mj10000', '10000'),
    ('jq_dequeue|jq_wait_dequeue|jq_ack_dequeue', 'max_jobs', 'mj10001', '10001'),
    ('jq_dequeue|jq_wait_dequeue|jq_ack_dequeue|jq_extend|jq_create_queue|jq_alter_queue', 'lease_seconds', 'ls86400', '86400'),
    ('jq_dequeue|jq_wait_dequeue|jq_ack_dequeue|jq_extend|jq_create_queue|jq_alter_queue', 'lease_seconds', 'ls86401', '86401'),
    ('jq_dequeue|jq_wait_dequeue', 'wait', 's300', $$'300 s'$$),
    ('jq_dequeue|jq_wait_dequeue', 'wait', 's301', $$'301 s'$$),
    ('jq_await|jq_wait_result', 'timeout', 's300', $$'300 s'$$),
    ('jq_await|jq_wait_result', 'timeout', 's301', $$'301 s'$$),
    ('jq_create_queue|jq_alter_queue', 'max_attempts', 'ma1000', '1000'),
    ('jq_create_queue|jq_alter_queue', 'max_attempts', 'ma1001', '1001'),
    ('jq_create_queue|jq_alter_queue', 'max_payload_bytes', 'mp15', '15'),
    ('jq_create_queue|jq_alter_queue', 'max_payload_bytes', 'mp16', '16'),
    ('jq_create_queue|jq_alter_queue', 'max_payload_bytes', 'mp64m', '67108864'),
    ('jq_create_queue|jq_alter_queue', 'max_payload_bytes', 'mp64m1', '67108865'),
    ('jq_ack|jq_fail|jq_extend|jq_progress|jq_result|jq_await|jq_wait_result|jq_cancel', 'job_id', 'ready', '{R}'),
    ('jq_ack|jq_fail|jq_extend|jq_progress|jq_result|jq_await|jq_wait_result|jq_cancel', 'job_id', 'scheduled', '{S}'),
    ('jq_ack|jq_fail|jq_extend|jq_progress|jq_result|jq_await|jq_wait_result|jq_cancel', 'job_id', 'done', '{D}'),
    ('jq_ack|jq_fail|jq_extend|jq_progress|jq_result|jq_await|jq_wait_result|jq_cancel', 'job_id', 'dead', '{X}'),
    ('jq_result|jq_await|jq_wait_result|jq_cancel', 'job_id', 'leased', '{L}'),
    ('jq_ack|jq_fail|jq_extend|jq_progress', 'lease_token', 'tok_next', '{T} + 1'),
    ('jq_ack|jq_fail|jq_extend|jq_progress', 'lease_token', 'tok_highbit', '{T} # 4611686018427387904'),
    ('jq_ack|jq_fail|jq_extend|jq_progress', 'lease_token', 'tok_neg', '-{T}'),
    ('jq_ack_batch', 'job_ids', 'elem:ready', 'ARRAY[{R}]::bigint[]'),
    ('jq_ack_batch', 'job_ids', 'elem:done', 'ARRAY[{D}]::bigint[]'),
    ('jq_ack_batch', 'lease_tokens', 'elem:tok_next', 'ARRAY[{T} + 1]'),
    ('jq_redrive', 'job_ids', 'elem:ready', 'ARRAY[{R}]::bigint[]'),
    ('jq_redrive', 'job_ids', 'elem:other_queue', 'ARRAY[{X2}]::bigint[]'),
    ('jq_fail', 'retry_in', 'd366', $$'366 days'$$),
    ('jq_fail', 'retry_in', 'd366_us', $$'366 days 1 microsecond'$$),
    ('jq_enqueue|jq_set_key_policy|jq_reset_key_policy', 'key', 'jk128', $$repeat('k', 128)$$),
    ('jq_enqueue|jq_set_key_policy|jq_reset_key_policy', 'key', 'jk129', $$repeat('k', 129)$$),
    ('jq_enqueue|jq_set_key_policy', 'key', 'utf8_130', $$repeat(E'\u00e9', 65)$$),
    ('jq_enqueue_batch|jq_submit_batch', 'keys', 'elem:jk129', $$ARRAY[repeat('k', 129)]$$),
    ('jq_set_key_policy', 'weight', 'kw10000', '10000'),
    ('jq_set_key_policy', 'weight', 'kw10001', '10001');

-- A valid value per parameter ("seed"): the baseline of a parameter without
-- a default (an array parameter gets ARRAY[seed]), and the element of the
-- hostile arrays.  A parameter with a default gets its default as baseline.
-- First match in id order.
CREATE TEMP TABLE seed (id serial, fn text, param text, expr text);
INSERT INTO seed (fn, param, expr) VALUES
    ('jq_create_queue', 'name', $$'hq_new'$$),
    ('jq_drop_queue', 'name', $$'hq_empty'$$),
    ('jq\.limit', 'name', $$'batch_max'$$),
    ('.*', 'name|queue', $$'hq'$$),
    ('.*', 'payload|payloads|results|progress', $$'{"k": 1}'::jsonb$$),
    ('jq_cancel', 'job_id', '{R}'),
    ('jq_redrive', 'job_ids', '{X}'),
    ('.*', 'job_id|job_ids', '{L}'),
    ('.*', 'lease_token|lease_tokens', '{T}'),
    ('.*', 'error|errors', $$'boom'$$),
    ('.*', 'idempotency_keys', $$'seed-key'$$),
    ('.*', 'key|keys', $$'team_a'$$),
    ('.*', 'deadline|deadlines', $$now() + interval '1 hour'$$),
    ('.*', 'cost|costs', '5'),
    ('.*', 'usage|usages', $$'{"cost": 3}'::jsonb$$),
    ('jq\.free_space', 'rel', $$'jq.job'::regclass$$),
    ('jq_adopt_batch', 'batch_id', '(1::bigint << 44) + 5');

-- Baselines that differ from a parameter's default: a wait of 0, since the
-- whole file runs in REPEATABLE READ, where no call may wait (0A000).
CREATE TEMP TABLE base_override (fn text, param text, expr text);
INSERT INTO base_override (fn, param, expr) VALUES
    ('jq_wait_dequeue', 'wait', $$'0'$$),
    ('jq_await|jq_wait_result', 'timeout', $$'0'$$);

-- Calls of several hostile arguments at once: fn (a pattern, as in table
-- rule), label, the arguments that
-- differ from the baseline.
CREATE TEMP TABLE combo (fn text, label text, args jsonb);
INSERT INTO combo VALUES
    ('jq_create_queue', 'huge_backoff',
     $${"backoff_base": "'178000000 years'", "backoff_cap": "'178000000 years'"}$$),
    ('jq_create_queue', 'day_backoff_100_attempts',
     $${"backoff_base": "'1 day'", "backoff_cap": "'1 day'", "max_attempts": "100"}$$),
    ('jq_create_queue', 'ten_s_backoff_1000_attempts',
     $${"backoff_base": "'10 seconds'", "max_attempts": "1000"}$$),
    ('jq_create_queue', 'huge_retention',
     $${"result_retention": "'178000000 years'", "dead_letter_retention": "'178000000 years'"}$$),
    ('jq_create_queue', 'critical_below_warning',
     $${"alert_depth_warning": "10", "alert_depth_critical": "5"}$$),
    ('jq_create_queue', 'existing_if_not_exists',
     $${"name": "'hq'", "if_not_exists": "true"}$$),
    ('jq_alter_queue', 'huge_backoff',
     $${"backoff_base": "'178000000 years'", "backoff_cap": "'178000000 years'"}$$),
    ('jq_alter_queue', 'day_backoff_100_attempts',
     $${"backoff_base": "'1 day'", "backoff_cap": "'1 day'", "max_attempts": "100"}$$),
    ('jq_alter_queue', 'critical_below_warning',
     $${"alert_depth_warning": "10", "alert_depth_critical": "5"}$$),
    ('jq_drop_queue', 'force_with_jobs', $${"name": "'hq'", "force": "true"}$$),
    ('jq_ack_batch|jq_ack_dequeue', 'both_empty', $${"job_ids": "'{}'", "lease_tokens": "'{}'"}$$),
    ('jq_ack_batch|jq_ack_dequeue', 'duplicate_ids',
     $${"job_ids": "ARRAY[{L}, {L}]", "lease_tokens": "ARRAY[{T}, {T}]"}$$),
    ('jq_ack_batch|jq_ack_dequeue', 'both_10001',
     $${"job_ids": "array_fill({L}::bigint, ARRAY[10001])", "lease_tokens": "array_fill({T}::bigint, ARRAY[10001])"}$$),
    ('jq_ack_batch|jq_ack_dequeue', 'both_twodim',
     $${"job_ids": "ARRAY[[{L}]]", "lease_tokens": "ARRAY[[{T}]]"}$$),
    ('jq_ack_batch', 'both_lbshift',
     $${"job_ids": "'[5:5]={{L}}'", "lease_tokens": "'[5:5]={{T}}'"}$$),
    ('jq_ack_dequeue', 'turn', $${"job_ids": "ARRAY[{L}]", "lease_tokens": "ARRAY[{T}]"}$$),
    ('jq_ack_dequeue', 'turn_results',
     $${"job_ids": "ARRAY[{L}]", "lease_tokens": "ARRAY[{T}]", "results": "ARRAY[jsonb_build_object('k', 1)]"}$$),
    ('jq_ack_dequeue', 'turn_failed',
     $${"job_ids": "ARRAY[{L}]", "lease_tokens": "ARRAY[{T}]", "errors": "ARRAY['boom']"}$$),
    ('jq_ack_dequeue', 'turn_stale', $${"job_ids": "ARRAY[{L}]", "lease_tokens": "ARRAY[{T} + 1]"}$$),
    ('jq_ack_dequeue', 'turn_unknown', $${"job_ids": "ARRAY[0, -1]", "lease_tokens": "ARRAY[0, 0]"}$$),
    ('jq_ack_dequeue', 'tokens_longer',
     $${"job_ids": "ARRAY[{L}]", "lease_tokens": "ARRAY[{T}, {T}]"}$$),
    ('jq_ack_dequeue', 'errors_longer',
     $${"job_ids": "ARRAY[{L}]", "lease_tokens": "ARRAY[{T}]", "errors": "ARRAY['a', 'b']"}$$),
    ('jq_ack_dequeue', 'errors_null_element',
     $${"job_ids": "ARRAY[{L}]", "lease_tokens": "ARRAY[{T}]", "errors": "ARRAY[NULL]::text[]"}$$),
    ('jq_enqueue_batch', 'keys_repeated',
     $${"payloads": "ARRAY['{}', '[]']::jsonb[]", "idempotency_keys": "ARRAY['k', 'k']"}$$),
    ('jq_enqueue_batch', 'keys_known', $${"idempotency_keys": "ARRAY[{KEY}]"}$$),
    ('jq_enqueue_batch', 'keys_injected',
     $${"payloads": "ARRAY['{}', '[]']::jsonb[]", "idempotency_keys": "ARRAY['x''); DROP TABLE jq.job; --', E'\\\\']"}$$);

/* ------------------------------------------------------------------------
 * Expectations.  fn, param and val are anchored regular expressions on the
 * function's name, the parameter's name ('-' for the baseline call,
 * 'combo' for the combinations) and the value's label.  The highest prio
 * wins, then the lowest id.  BUG: the outcome that is correct but not what
 * the extension does today (see the note).
 * ------------------------------------------------------------------------ */
CREATE TEMP TABLE rule (id serial, prio int, fn text, param text, val text,
                        expect text, note text);
INSERT INTO rule (prio, fn, param, val, expect, note) VALUES
    -- baseline calls
    (1, 'jq_create_queue|jq_alter_queue|jq_drop_queue|jq_list_queues|jq_enqueue|jq_enqueue_batch|jq_dequeue|jq_wait_dequeue|jq_ack_dequeue|jq_ack|jq_ack_batch|jq_result|jq_await|jq_wait_result|jq_fail|jq_extend|jq_progress|jq_cancel|jq_redrive|jq_create_batch|jq_submit_batch|jq_worker_status',
        '-', 'baseline', 'ok', NULL),
    (1, 'jq_set_key_policy', '-', 'baseline', 'ok', NULL),
    -- jq_adopt_batch(batch_id, queue, label): this database is no shard
    -- (jq_set_shard was not run), so every positive id is its own to give
    -- and none can be adopted (sql/shard.sql adopts on a shard)
    (1, 'jq_adopt_batch', '-', 'baseline', '22023', 'not a shard: every batch id is its own'),
    (1, 'jq_adopt_batch', 'batch_id', 'null', '22004', NULL),
    (1, 'jq_adopt_batch', 'batch_id', '.*', '22023', 'not positive, or this database''s own'),
    (1, 'jq_adopt_batch', 'label', '.*', '22023', 'not a shard: the id is refused whatever the label'),
    (1, 'jq_reset_key_policy', '-', 'baseline', 'noop', 'the key has no policy: 0 removed'),
    (1, 'jq\.counters|jq\.counters_valid|jq\.scan_bounds|jq\.key_counters', '-', 'baseline', 'any',
        'the shared counters and dequeue bounds do not see this test''s uncommitted queues'),
    (1, 'jq\.limits|jq\.limit', '-', 'baseline', 'ok', NULL),
    (1, 'jq\.free_space', '-', 'baseline', 'ok', NULL),
    -- jq.free_space(rel): a table or index of schema jq
    (2, 'jq\.free_space', 'rel', 'null', 'any', 'strict: NULL for NULL'),
    (2, 'jq\.free_space', 'rel', 'other_schema|view', 'ok|noop', 'NULL: not a pgjq relation with storage'),
    (2, 'jq\.free_space', 'rel', 'zero|unknown', '42P01', NULL),
    (2, 'jq\.free_space', 'rel', 'jq_index', 'ok', NULL),
    (1, 'jq_security_check', '-', 'baseline', 'ok|noop',
        'no row where PUBLIC may not create in the schemas on the path (PostgreSQL 15''s default)'),

    -- jq.limit(name): a limit's name, never a queue's
    (3, 'jq\.limit', 'name', 'null', 'any', 'strict: NULL for NULL'),
    (2, 'jq\.limit', 'name', '.*', '42704', 'no limit has that name'),

    -- queue names, wherever they are passed
    (0, '.*', 'queue|name', 'null', '22004', NULL),
    (0, '.*', 'queue|name',
        'empty|blank|trailing|inject_\w+|dquote|backslash|fmt|unicode|upper|ctrl|len49|len1000|1mb|100mb',
        '42602', NULL),
    (0, '.*', 'queue|name', 'len48|unknown', '42704', NULL),
    (2, 'jq_create_queue', 'name', 'len48|unknown', 'ok', NULL),
    (2, 'jq_create_queue', 'name', 'existing', '42710', NULL),
    (2, 'jq_drop_queue', 'name', 'has_jobs', '55006', NULL),

    -- enqueue options
    (1, 'jq_enqueue|jq_enqueue_batch|jq_submit_batch', 'priority',
        'null|zero|neg1|one|p100|m100', 'ok', NULL),
    (1, 'jq_enqueue|jq_enqueue_batch|jq_submit_batch', 'priority',
        'int2max|int2min|int4max|int4min|p101|m101', '22023', NULL),
    (1, 'jq_enqueue|jq_enqueue_batch|jq_submit_batch', 'run_at',
        'null|max|min|epoch|future', 'ok', NULL),
    (1, 'jq_enqueue|jq_enqueue_batch|jq_submit_batch', 'run_at',
        'infinity|neg_infinity', '22023', NULL),
    -- deadlines: finite, later than run_at (now, unless given)
    (1, 'jq_enqueue', 'deadline', 'null|max|future', 'ok', NULL),
    (1, 'jq_enqueue', 'deadline', 'infinity|neg_infinity|min|epoch', '22023', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'deadlines', 'null|lbshift|elem:(null|max|future)',
        'ok', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'deadlines',
        'elem:(infinity|neg_infinity|min|epoch)', '22023', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'deadlines', 'empty|twodim|longer|n10001',
        '2202E', NULL),
    (1, 'jq_enqueue|jq_enqueue_batch', 'batch_id', 'null|own', 'ok', NULL),
    (1, 'jq_enqueue|jq_enqueue_batch', 'batch_id',
        'zero|neg1|unknown|int4max_plus|int8max|int8min', '42704', NULL),
    (1, 'jq_enqueue|jq_enqueue_batch', 'batch_id', 'other_queue', '22023', NULL),

    -- payloads
    (1, 'jq_enqueue', 'payload', 'null', '22004', NULL),
    (1, 'jq_enqueue', 'payload', 'num|str|jnull|bool', '22023', NULL),
    (1, 'jq_enqueue', 'payload', 'big', '54000', NULL),
    (1, 'jq_enqueue', 'payload',
        'empty_arr|empty_obj|deep_arr|deep_obj|inject_key|unicode_obj', 'ok', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'payloads', 'null|elem:null', '22004', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'payloads', 'empty', '22023', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'payloads', 'twodim', '2202E', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'payloads', 'n10001|elem:big', '54000', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'payloads', 'elem:(num|str|jnull|bool)', '22023', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'payloads',
        'lbshift|longer|elem:(empty_arr|empty_obj|deep_arr|deep_obj|inject_key|unicode_obj)',
        'ok', NULL),

    -- idempotency keys: 1 to 512 bytes of any text
    (1, 'jq_enqueue', 'idempotency_key', 'empty', '22023', NULL),
    (1, 'jq_enqueue', 'idempotency_key', 'len1000|1mb|key513|utf8_514', '54000', NULL),
    (1, 'jq_enqueue', 'idempotency_key', 'known', 'ok-nochange', NULL),
    (0, 'jq_enqueue', 'idempotency_key', '.*', 'ok', NULL),
    (1, 'jq_enqueue_batch', 'idempotency_keys', 'empty|twodim|longer|n10001', '2202E', NULL),
    (1, 'jq_enqueue_batch', 'idempotency_keys', 'elem:empty', '22023', NULL),
    (1, 'jq_enqueue_batch', 'idempotency_keys', 'elem:(len1000|1mb)', '54000', NULL),
    (0, 'jq_enqueue_batch', 'idempotency_keys', '.*', 'ok', NULL),

    -- job keys: 1 to 128 bytes of any text without a zero byte
    (1, 'jq_enqueue|jq_set_key_policy|jq_reset_key_policy', 'key', 'empty', '22023', NULL),
    (1, 'jq_enqueue|jq_set_key_policy|jq_reset_key_policy', 'key',
        'len1000|1mb|jk129|utf8_130', '54000', NULL),
    (0, 'jq_enqueue|jq_set_key_policy', 'key', '.*', 'ok', NULL),
    (1, 'jq_set_key_policy', 'key', 'null', '22004', 'jobs without a key follow the queue''s defaults'),
    (0, 'jq_reset_key_policy', 'key', '.*', 'noop', 'no key of hq has a policy: 0 removed'),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'keys', 'empty|twodim|longer|n10001', '2202E', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'keys', 'elem:empty', '22023', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'keys', 'elem:(len1000|1mb|jk129)', '54000', NULL),
    (0, 'jq_enqueue_batch|jq_submit_batch', 'keys', '.*', 'ok', NULL),
    -- key policies and flow-control settings: limits are positive or NULL
    (1, 'jq_set_key_policy', 'weight', 'null|one|kw10000', 'ok', NULL),
    (1, 'jq_set_key_policy', 'weight', 'zero|neg1|int2max|int2min|int4max|int4min|kw10001',
        '22023', NULL),
    (1, 'jq_set_key_policy|jq_create_queue|jq_alter_queue', 'max_in_flight|key_max_in_flight',
        'null|one|int2max|int4max', 'ok', NULL),
    (1, 'jq_set_key_policy|jq_create_queue|jq_alter_queue', 'max_in_flight|key_max_in_flight',
        'zero|neg1|int2min|int4min', '22023', NULL),
    (1, 'jq_set_key_policy|jq_create_queue|jq_alter_queue', 'max_queued|key_max_queued',
        'null|unknown|int4max_plus|int8max', 'ok', NULL),
    (1, 'jq_set_key_policy|jq_create_queue|jq_alter_queue', 'max_queued|key_max_queued',
        'zero|neg1|int8min', '22023', NULL),
    (1, 'jq_set_key_policy|jq_alter_queue', 'clear_limits', 'null|true|false', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'fair|key_ordered', 'null|true|false', 'ok',
        'NULL: the default (create) or unchanged (alter)'),
    (1, 'jq_set_key_policy', 'ordered', 'null|true|false', 'ok',
        'NULL: unchanged, or the queue''s key_ordered for a new policy'),

    -- dequeue and extend
    (1, 'jq_dequeue|jq_wait_dequeue|jq_ack_dequeue', 'max_jobs', 'null|one|mj10000', 'ok', NULL),
    (1, 'jq_dequeue|jq_wait_dequeue|jq_ack_dequeue', 'max_jobs', 'zero|neg1|int2max|int2min|int4max|int4min|mj10001', '22023', NULL),
    (1, 'jq_dequeue|jq_wait_dequeue|jq_ack_dequeue|jq_extend', 'lease_seconds', 'null|one|int2max|ls86400', 'ok', NULL),
    (1, 'jq_dequeue|jq_wait_dequeue|jq_ack_dequeue|jq_extend', 'lease_seconds', 'zero|neg1|int2min|int4max|int4min|ls86401', '22023', NULL),
    -- waits: 0 to 300 s; this file runs in REPEATABLE READ, where a positive
    -- wait is refused (its snapshot would never see what it waits for)
    (1, 'jq_dequeue|jq_wait_dequeue', 'wait', 'null|zero', 'ok', NULL),
    (1, 'jq_await|jq_wait_result', 'timeout', 'null|zero', 'ok', NULL),
    (1, 'jq_dequeue|jq_wait_dequeue', 'wait', 'us|s300', '0A000', NULL),
    (1, 'jq_await|jq_wait_result', 'timeout', 'us|s300', '0A000', NULL),
    (1, 'jq_dequeue|jq_wait_dequeue', 'wait',
        'neg_us|neg_huge|pos_huge|month|mixed|max_days|max_time|s301', '22023', NULL),
    (1, 'jq_await|jq_wait_result', 'timeout',
        'neg_us|neg_huge|pos_huge|month|mixed|max_days|max_time|s301', '22023', NULL),
    -- a procedure's output argument: its value in is ignored
    (1, 'jq_wait_dequeue', 'jobs', '.*', 'ok', NULL),
    (1, 'jq_wait_result', 'result', '.*', 'ok', NULL),
    -- awaiting a job: its jq_result row at once (no wait), nothing for an unknown one
    (1, 'jq_await|jq_wait_result', 'job_id', 'null', '22004', NULL),
    (1, 'jq_await|jq_wait_result', 'job_id', 'zero|neg1|unknown|int4max_plus|int8max|int8min',
        'noop', NULL),
    (1, 'jq_await|jq_wait_result', 'job_id', 'ready|scheduled|leased|done|dead', 'ok', NULL),

    -- a worker's turn (jq_ack_dequeue): the baseline completes nothing, so
    -- one of job_ids and lease_tokens alone, or results or errors without
    -- them, is refused; the combinations give both
    (1, 'jq_ack_dequeue', 'job_ids|lease_tokens|results|errors', 'null', 'ok', NULL),
    (0, 'jq_ack_dequeue', 'job_ids|lease_tokens', '.*', '22004', NULL),
    (0, 'jq_ack_dequeue', 'results|errors', '.*', '22023', NULL),
    (1, 'jq_ack_dequeue', 'combo',
        'turn|turn_results|turn_failed|turn_stale|turn_unknown|both_empty|errors_null_element', 'ok', NULL),
    (1, 'jq_ack_dequeue', 'combo', 'duplicate_ids', '22023', NULL),
    (1, 'jq_ack_dequeue', 'combo', 'both_10001', '54000', NULL),
    (1, 'jq_ack_dequeue', 'combo', 'both_twodim|tokens_longer|errors_longer', '2202E', NULL),

    -- job ids and lease tokens: a stale or unknown one is refused, not an error
    (1, 'jq_ack|jq_fail|jq_extend|jq_progress|jq_cancel', 'job_id', 'null', '22004', NULL),
    (1, 'jq_result', 'job_id', 'null', 'noop',
        'documented: jq.jq_result(NULL) gives no row, like an unknown id'),
    (1, 'jq_ack|jq_fail|jq_extend|jq_progress|jq_result|jq_cancel', 'job_id',
        'zero|neg1|unknown|int4max_plus|int8max|int8min', 'noop', NULL),
    (1, 'jq_ack|jq_fail|jq_extend|jq_progress', 'job_id', 'ready|scheduled|done|dead', 'noop', NULL),
    (1, 'jq_result', 'job_id', 'ready|scheduled|leased|done|dead', 'ok', NULL),
    (1, 'jq_cancel', 'job_id', 'ready|scheduled|leased', 'ok', NULL),
    (1, 'jq_cancel', 'job_id', 'done|dead', 'noop', NULL),
    (1, 'jq_ack|jq_fail|jq_extend|jq_progress', 'lease_token', 'null', '22004', NULL),
    (1, 'jq_ack|jq_fail|jq_extend|jq_progress', 'lease_token',
        'zero|neg1|unknown|int4max_plus|int8max|int8min|tok_next|tok_highbit|tok_neg', 'noop', NULL),

    -- results: any JSON, no limit documented
    (1, 'jq_ack', 'result', '.*', 'ok', NULL),
    -- rate limits: positive budgets per a period of 1 second to 1 day
    (1, 'jq_create_queue|jq_alter_queue|jq_set_key_policy', 'rate_requests',
        'null|one|int2max|int4max', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue|jq_set_key_policy', 'rate_requests',
        'zero|neg1|int2min|int4min', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue|jq_set_key_policy', 'rate_cost',
        'null|tokens', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue|jq_set_key_policy', 'rate_cost',
        'zero|neg|nan|inf|neg_inf|huge', '22023', NULL),
    (1, 'jq_alter_queue|jq_set_key_policy', 'rate_period', 'null', 'ok',
        'NULL: unchanged (alter), one minute (a new policy)'),
    (1, 'jq_create_queue', 'rate_period', 'null', 'ok', 'NULL: one minute'),
    (1, 'jq_create_queue|jq_alter_queue|jq_set_key_policy', 'rate_period',
        'zero|neg_us|neg_huge|pos_huge|us|month|max_days|max_time', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue|jq_set_key_policy', 'rate_period', 'mixed', 'ok',
        '1 mon -29 days is a day, as interval comparison counts it'),
    -- costs: finite, not negative; usage: a JSON object, its cost a cost
    (1, 'jq_enqueue', 'cost', 'null|zero|tokens|huge', 'ok', NULL),
    (1, 'jq_enqueue', 'cost', 'neg|nan|inf|neg_inf', '22023', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'costs', 'null|lbshift|elem:(null|zero|tokens|huge)',
        'ok', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'costs', 'elem:(neg|nan|inf|neg_inf)', '22023', NULL),
    (1, 'jq_enqueue_batch|jq_submit_batch', 'costs', 'empty|twodim|longer|n10001', '2202E', NULL),
    (1, 'jq_ack|jq_fail', 'usage', 'null|empty_obj|deep_obj|inject_key|unicode_obj', 'ok', NULL),
    (1, 'jq_ack|jq_fail', 'usage', 'num|str|jnull|bool|empty_arr|deep_arr', '22023', NULL),
    (1, 'jq_ack|jq_fail', 'usage', 'big', '54000', NULL),
    (1, 'jq_ack_batch', 'usages',
        'null|lbshift|elem:(null|empty_obj|deep_obj|inject_key|unicode_obj)', 'ok', NULL),
    (1, 'jq_ack_batch', 'usages', 'elem:(num|str|jnull|bool|empty_arr|deep_arr)', '22023', NULL),
    (1, 'jq_ack_batch', 'usages', 'elem:big', '54000', NULL),
    (1, 'jq_ack_batch', 'usages', 'empty|twodim|longer|n10001', '2202E', NULL),
    -- progress: any JSON up to progress_bytes_max
    (1, 'jq_progress', 'progress', 'null', '22004', NULL),
    (1, 'jq_progress', 'progress', 'big', '54000', NULL),
    (0, 'jq_progress', 'progress', '.*', 'ok', NULL),
    (1, 'jq_ack_batch', 'job_ids|lease_tokens', 'null|elem:null', '22004', NULL),
    (1, 'jq_ack_batch', 'job_ids|lease_tokens', 'empty|twodim|longer|n10001', '2202E', NULL),
    (1, 'jq_ack_batch', 'job_ids|lease_tokens', 'lbshift', 'ok', NULL),
    (0, 'jq_ack_batch', 'job_ids|lease_tokens', 'elem:.*', 'noop', NULL),
    (1, 'jq_ack_batch', 'results', 'empty|twodim|longer|n10001', '2202E', NULL),
    (0, 'jq_ack_batch', 'results', '.*', 'ok', NULL),

    -- the failure path
    (1, 'jq_fail', 'error', 'null', '22004', NULL),
    (0, 'jq_fail', 'error', '.*', 'ok', NULL),
    (1, 'jq_fail', 'retry_in', 'null|zero|us|month|mixed|d366', 'ok', NULL),
    (1, 'jq_fail', 'retry_in', 'neg_us|neg_huge|pos_huge|max_days|max_time|d366_us', '22023', NULL),
    (1, 'jq_fail', 'permanent', 'null|true|false', 'ok', NULL),
    (1, 'jq_redrive', 'job_ids', 'null|lbshift|longer', 'ok', NULL),
    (1, 'jq_redrive', 'job_ids',
        'empty|elem:(zero|neg1|unknown|int4max_plus|int8max|int8min|ready|other_queue)', 'noop', NULL),
    (1, 'jq_redrive', 'job_ids', 'elem:null', '22004', 'fixed in 0.2.0: NULL elements were ignored'),
    (1, 'jq_redrive', 'job_ids', 'twodim', '2202E', 'fixed in 0.2.0: two-dimensional arrays were flattened'),
    (1, 'jq_redrive', 'job_ids', 'n10001', '54000', 'fixed in 0.2.0: more than 10,000 ids were taken'),

    -- batches: labels up to 512 bytes
    (1, 'jq_create_batch|jq_submit_batch', 'label', 'len1000|1mb|lbl513|utf8_514', '54000', NULL),
    (0, 'jq_create_batch|jq_submit_batch', 'label', '.*', 'ok', NULL),

    -- queue settings, the same for create and alter (hq has the defaults)
    (1, 'jq_create_queue|jq_alter_queue', 'lease_seconds', 'one|int2max|ls86400', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'lease_seconds',
        'null|zero|neg1|int2min|int4max|int4min|ls86401', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'max_attempts', 'one|ma1000', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'max_attempts',
        'null|zero|neg1|int2max|int2min|int4max|int4min|ma1001', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'max_payload_bytes', 'int2max|mp16|mp64m', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'max_payload_bytes',
        'null|zero|neg1|one|int2min|int4max|int4min|mp15|mp64m1', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'backoff_base', 'us', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'backoff_base',
        'null|zero|neg_us|neg_huge|pos_huge|month|mixed|max_days|max_time', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'backoff_cap', 'month|mixed', 'ok', NULL),
    -- interval settings are bounded at 100 years (beyond, clock arithmetic overflows)
    (1, 'jq_create_queue|jq_alter_queue', 'backoff_cap',
        'null|zero|neg_us|neg_huge|us|pos_huge|max_days|max_time', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'result_retention', 'zero|us|month|mixed', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'result_retention',
        'null|neg_us|neg_huge|pos_huge|max_days|max_time', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'dead_letter_retention', 'month', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'dead_letter_retention',
        'null|zero|neg_us|neg_huge|us|mixed', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'dead_letter_retention', 'pos_huge|max_days|max_time', '22023',
        'fixed: was accepted, then jq.purge_expired failed with 22008 once the queue had a dead letter'),
    (1, 'jq_create_queue|jq_alter_queue', 'idempotency_window', 'zero|us|month|mixed', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'idempotency_window', 'null|neg_us|neg_huge', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'idempotency_window', 'pos_huge|max_days|max_time', '22023',
        'fixed: was accepted, then every resubmission of a key failed with 22008'),
    (1, 'jq_create_queue|jq_alter_queue', 'alert_depth_warning|alert_depth_critical',
        'null|unknown|int4max_plus|int8max', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'alert_depth_warning|alert_depth_critical',
        'zero|neg1|int8min', '22023', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'alert_age_warning',
        'null|us|month|mixed|pos_huge|max_days|max_time', 'ok', NULL),
    (1, 'jq_create_queue|jq_alter_queue', 'alert_age_warning', 'zero|neg_us|neg_huge', '22023', NULL),
    (1, 'jq_create_queue', 'if_not_exists', 'null|true|false', 'ok', NULL),
    -- jq_alter_queue: NULL leaves a setting as it is
    (2, 'jq_alter_queue',
        'lease_seconds|max_attempts|backoff_base|backoff_cap|result_retention|max_payload_bytes|dead_letter_retention|idempotency_window|alert_depth_warning|alert_depth_critical|alert_age_warning|clear_alerts',
        'null', 'ok', NULL),
    (1, 'jq_alter_queue', 'clear_alerts', 'true|false', 'ok', NULL),
    (1, 'jq_drop_queue', 'force', 'null|true|false', 'ok', NULL),

    -- combinations
    (1, 'jq_create_queue|jq_alter_queue', 'combo', 'huge_backoff', '22023',
        'fixed: was accepted, then jq_fail without retry_in failed with 22008'),
    (1, 'jq_create_queue|jq_alter_queue', 'combo', 'day_backoff_100_attempts', 'ok',
        'fixed: jq_fail failed with 22008 from attempt 32 (base x 2^(n-1) overflowed interval before the cap applied)'),
    (1, 'jq_create_queue', 'combo', 'ten_s_backoff_1000_attempts', 'ok',
        'fixed: as day_backoff_100_attempts, from attempt 41'),
    (1, 'jq_create_queue', 'combo', 'huge_retention', '22023',
        'fixed: was accepted, then jq.purge_expired failed with 22008 for every queue'),
    (1, 'jq_create_queue|jq_alter_queue', 'combo', 'critical_below_warning', '22023', NULL),
    (1, 'jq_create_queue', 'combo', 'existing_if_not_exists', 'ok-nochange', NULL),
    (1, 'jq_drop_queue', 'combo', 'force_with_jobs', 'ok', NULL),
    (1, 'jq_ack_batch', 'combo', 'both_empty', 'noop', NULL),
    (1, 'jq_ack_batch', 'combo', 'duplicate_ids', '22023', NULL),
    (1, 'jq_ack_batch', 'combo', 'both_10001', '54000', NULL),
    (1, 'jq_ack_batch', 'combo', 'both_twodim', '2202E', NULL),
    (1, 'jq_ack_batch', 'combo', 'both_lbshift', 'ok', NULL),
    (1, 'jq_enqueue_batch', 'combo', 'keys_repeated|keys_injected', 'ok', NULL),
    (1, 'jq_enqueue_batch', 'combo', 'keys_known', 'ok-nochange', NULL);

-- After an "ok" call, text passed in must be stored exactly as given (no
-- quoting, escaping or cutting besides the documented truncation of error
-- texts).  %V is the argument's expression, %P the parameter's name.
CREATE TEMP TABLE stored (fn text, param text, check_sql text);
INSERT INTO stored VALUES
    ('jq_create_queue', 'name', $$EXISTS (SELECT FROM jq.queue WHERE name = (%V))$$),
    ('jq_create_queue',
     'lease_seconds|max_attempts|backoff_base|backoff_cap|result_retention|max_payload_bytes|dead_letter_retention|idempotency_window|alert_depth_warning|alert_depth_critical|alert_age_warning',
     $$(SELECT q.%P FROM jq.queue q WHERE q.name = 'hq_new') IS NOT DISTINCT FROM (%V)$$),
    ('jq_alter_queue',
     'lease_seconds|max_attempts|backoff_base|backoff_cap|result_retention|max_payload_bytes|dead_letter_retention|idempotency_window|alert_depth_warning|alert_depth_critical|alert_age_warning',
     $$(%V) IS NULL OR (SELECT q.%P FROM jq.queue q WHERE q.name = 'hq') = (%V)$$),
    ('jq_enqueue', 'payload', $$(SELECT payload FROM jq.job ORDER BY id DESC LIMIT 1) = (%V)$$),
    ('jq_enqueue', 'cost',
     $$(SELECT cost FROM jq.job ORDER BY id DESC LIMIT 1) IS NOT DISTINCT FROM (%V)$$),
    ('jq_ack', 'usage',
     $$(SELECT usage FROM jq.job_result WHERE job_id = {L}) IS NOT DISTINCT FROM (%V)$$),
    ('jq_enqueue', 'deadline',
     $$(SELECT deadline FROM jq.job ORDER BY id DESC LIMIT 1) IS NOT DISTINCT FROM (%V)$$),
    ('jq_enqueue', 'key',
     $$(SELECT key FROM jq.job ORDER BY id DESC LIMIT 1) IS NOT DISTINCT FROM (%V)$$),
    ('jq_set_key_policy', 'key', $$EXISTS (SELECT FROM jq.key_policy WHERE key = (%V))$$),
    ('jq_set_key_policy', 'weight|max_in_flight|max_queued|ordered',
     $$(%V) IS NULL OR (SELECT p.%P FROM jq.key_policy p WHERE p.key = 'team_a') = (%V)$$),
    ('jq_create_queue', 'max_in_flight|key_max_in_flight|key_max_queued',
     $$(SELECT q.%P FROM jq.queue q WHERE q.name = 'hq_new') IS NOT DISTINCT FROM (%V)$$),
    ('jq_alter_queue', 'max_in_flight|key_max_in_flight|key_max_queued|fair|key_ordered',
     $$(%V) IS NULL OR (SELECT q.%P FROM jq.queue q WHERE q.name = 'hq') = (%V)$$),
    ('jq_enqueue', 'idempotency_key',
     $$(%V) IS NULL OR EXISTS (SELECT FROM jq.idempotency_key WHERE key = (%V))$$),
    ('jq_enqueue_batch|jq_submit_batch', 'payloads',
     $$NOT EXISTS (SELECT FROM unnest((%V)) p WHERE NOT EXISTS (SELECT FROM jq.job j WHERE j.payload = p))$$),
    ('jq_enqueue_batch', 'idempotency_keys',
     $$NOT EXISTS (SELECT FROM unnest((%V)) k
                    WHERE k IS NOT NULL
                      AND NOT EXISTS (SELECT FROM jq.idempotency_key i WHERE i.key = k))$$),
    ('jq_create_batch|jq_submit_batch', 'label',
     $$(SELECT label FROM jq.batch ORDER BY batch_id DESC LIMIT 1) IS NOT DISTINCT FROM (%V)$$),
    ('jq_fail', 'error',
     $$pg_temp.error_kept((SELECT errors -> -1 ->> 'error' FROM jq.job WHERE id = {L}), (%V))$$),
    ('jq_progress', 'progress',
     $$(SELECT progress FROM jq.job WHERE id = {L}) IS NOT DISTINCT FROM (%V)$$),
    ('jq_ack', 'result',
     $$(SELECT result FROM jq.job_result WHERE job_id = {L}) IS NOT DISTINCT FROM (%V)$$),
    ('jq_ack_batch', 'results',
     $$(SELECT result FROM jq.job_result WHERE job_id = {L})
           IS NOT DISTINCT FROM ((%V))[array_lower((%V), 1)]$$);

-- error_kept(stored, given): the error text is kept as given, or, over
-- 8192 bytes, cut at a character boundary to at most 8000 bytes plus a mark
CREATE FUNCTION pg_temp.error_kept(kept text, given text) RETURNS boolean
LANGUAGE sql AS $$
    SELECT CASE WHEN octet_length(given) <= 8192 THEN kept = given
                ELSE kept LIKE '% ... (truncated)'
                     AND octet_length(kept) <= 8000 + length(' ... (truncated)')
                     AND starts_with(given, left(kept, length(kept) - length(' ... (truncated)')))
           END
$$;

/*
 * probe_queue(q): after jq_create_queue or jq_alter_queue accepted a
 * setting, the queue must still work end to end, including what the
 * background worker does with it.  Returns NULL, or the step that failed.
 * The attempt counter is set directly to the queue's last-but-one attempt,
 * the most extreme backoff a job of this queue can meet.
 */
CREATE FUNCTION pg_temp.probe_queue(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    step text;
    a bigint;
    b bigint;
    j bigint[];
    t bigint[];
    want integer;
    ordered boolean;
BEGIN
    step := 'jq_enqueue with an idempotency key';
    -- payloads of 16 bytes at most, the smallest limit a queue may have
    a := jq.jq_enqueue(q, '{}', idempotency_key => 'probe-key');
    step := 'jq_enqueue resubmitting the key';
    b := jq.jq_enqueue(q, '{}', idempotency_key => 'probe-key');
    IF a IS DISTINCT FROM b THEN
        RETURN 'a resubmitted key gave another job';
    END IF;
    step := 'jq_enqueue_batch';
    -- jobs of an ordered key take no priority; they go one at a time, and
    -- not at all while a scheduled job (the fixture's) holds the key
    SELECT x.key_ordered INTO ordered FROM jq.queue x WHERE x.name = q;
    PERFORM jq.jq_enqueue_batch(q, ARRAY['{}', '[]', '{}', '[]']::jsonb[],
                             priority => CASE WHEN NOT ordered THEN 100 END);
    step := 'jq_dequeue';
    -- a concurrency limit below 4 holds the rest back, also from a second
    -- dequeue: slots free when the leases' ends commit
    SELECT CASE WHEN NOT ordered
                THEN least(4, coalesce(x.max_in_flight, 4), coalesce(x.key_max_in_flight, 4))
                WHEN EXISTS (SELECT FROM jq.job WHERE queue_id = x.queue_id AND state = 's')
                THEN 0 ELSE 1 END
      INTO want FROM jq.queue x WHERE x.name = q;
    -- a rate limit hands out what its bucket holds: at most the 4, no more
    -- than its requests (the rest of the probe needs 4 leases)
    IF (SELECT x.rate_requests IS NOT NULL OR x.rate_cost IS NOT NULL
          FROM jq.queue x WHERE x.name = q) THEN
        IF (SELECT count(*) FROM jq.jq_dequeue(q, 4))
           > (SELECT least(4, coalesce(x.rate_requests, 4)) FROM jq.queue x WHERE x.name = q) THEN
            RETURN 'jq_dequeue leased past the rate limit';
        END IF;
        RETURN NULL;
    END IF;
    IF ordered AND want > 0 THEN
        -- this file runs in REPEATABLE READ, where ordered keys are refused
        BEGIN
            PERFORM FROM jq.jq_dequeue(q, 4);
            RETURN 'jq_dequeue handed out a job of an ordered key in REPEATABLE READ';
        EXCEPTION WHEN feature_not_supported THEN
            RETURN NULL;
        END;
    END IF;
    SELECT array_agg(job_id ORDER BY job_id), array_agg(lease_token ORDER BY job_id)
      INTO j, t FROM jq.jq_dequeue(q, 4);
    IF coalesce(cardinality(j), 0) IS DISTINCT FROM want THEN
        RETURN 'jq_dequeue leased ' || coalesce(cardinality(j), 0) || ' jobs, not ' || want;
    END IF;
    IF want < 4 THEN
        IF EXISTS (SELECT FROM jq.jq_dequeue(q, 4)) THEN
            RETURN 'jq_dequeue leased past the concurrency limit of ' || want;
        END IF;
        RETURN NULL;
    END IF;
    step := 'jq_extend';
    IF jq.jq_extend(j[1], t[1]) IS NULL THEN
        RETURN 'jq_extend refused a current lease';
    END IF;
    step := 'jq_fail on the last-but-one attempt (backoff)';
    UPDATE jq.job SET attempt = greatest(
               (SELECT max_attempts - 1 FROM jq.queue WHERE name = q), 1)
     WHERE id = j[1];
    IF jq.jq_fail(j[1], t[1], 'probe') IS NULL THEN
        RETURN 'jq_fail refused a current lease';
    END IF;
    step := 'jq_ack';
    IF NOT jq.jq_ack(j[2], t[2], '{"probe": "result"}') THEN
        RETURN 'jq_ack refused a current lease';
    END IF;
    step := 'jq_fail permanent';
    IF jq.jq_fail(j[3], t[3], 'probe', permanent => true) IS DISTINCT FROM 'dead' THEN
        RETURN 'jq_fail permanent did not give dead';
    END IF;
    step := 'lease reclaim';
    UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 second'
     WHERE id = j[4];
    PERFORM jq.reclaim_expired_leases();
    step := 'jq_result';
    PERFORM FROM jq.jq_result(j[2]);
    step := 'jq.purge_expired (the worker''s retention pass)';
    PERFORM jq.purge_expired();
    step := 'jq.check_alerts (the worker''s alert pass)';
    PERFORM jq.check_alerts();
    step := 'jq.sample_stats (the worker''s history pass)';
    PERFORM jq.sample_stats();
    step := 'jq.queue_stats';
    PERFORM count(*) FROM jq.queue_stats;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN step || ': ' || SQLSTATE || ' ' || SQLERRM;
END
$$;

/* ------------------------------------------------------------------------
 * The functions and their parameters, from the catalog
 * ------------------------------------------------------------------------ */
CREATE TEMP TABLE fn AS
SELECT p.oid AS oid,
       CASE WHEN p.proname LIKE 'jq\_%' THEN p.proname::text
            ELSE n.nspname || '.' || p.proname END AS name,
       format('%I.%I', n.nspname, p.proname) AS target,
       p.proretset AS retset,
       p.prorettype::regtype AS rettype,
       p.prokind AS kind
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pgjq'
 WHERE EXISTS (SELECT FROM unnest(ARRAY['jq_producer', 'jq_worker', 'jq_reader', 'jq_admin']) r
                WHERE has_function_privilege(r, p.oid, 'EXECUTE'));

-- IN parameters: proargtypes gives their types in order; their names and
-- positions among all arguments (for the defaults) come from
-- proargnames/proargmodes
CREATE TEMP TABLE param AS
WITH a AS (
    SELECT p.oid, a.argname, a.mode, a.ord
      FROM pg_proc p
      JOIN fn ON fn.oid = p.oid
     CROSS JOIN LATERAL unnest(
           coalesce(p.proargnames, array_fill(NULL::text, ARRAY[p.pronargs])),
           coalesce(p.proargmodes::text[], array_fill('i'::text, ARRAY[p.pronargs])))
           WITH ORDINALITY AS a(argname, mode, ord)
     WHERE p.pronargs > 0
), i AS (
    SELECT oid, argname, mode, ord,
           row_number() OVER (PARTITION BY oid ORDER BY ord) - 1 AS pos
      FROM a WHERE mode IN ('i', 'b', 'v')
)
SELECT i.oid, i.pos, i.argname AS name, i.mode,
       (p.proargtypes[i.pos])::regtype AS typ,
       format_type(p.proargtypes[i.pos], NULL) AS typname,
       pg_get_function_arg_default(i.oid, i.ord::int) AS dflt
  FROM i JOIN pg_proc p ON p.oid = i.oid;

/* ------------------------------------------------------------------------
 * The cases
 * ------------------------------------------------------------------------ */
CREATE TEMP TABLE hcase (
    id serial PRIMARY KEY,
    fn text, param text, val text,
    val_expr text,          -- the hostile argument, as SQL
    val_typ text,           -- its type
    call_sql text,          -- NULL when the generator could not build it
    problem text,           -- why it could not
    expect text, rule_id int, note text,
    stored_sql text,
    probe boolean           -- probe the queue after an ok call
);

-- seed_of(fn, param): a valid value of the parameter, or NULL
CREATE FUNCTION pg_temp.seed_of(f text, p text) RETURNS text
LANGUAGE sql AS $$
    SELECT pg_temp.fx_subst(expr) FROM seed
     WHERE f ~ ('^(' || fn || ')$') AND p ~ ('^(' || param || ')$')
     ORDER BY id LIMIT 1
$$;

CREATE FUNCTION pg_temp.generate() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    p record;
    v record;
    c record;
    base jsonb;            -- parameter name -> baseline expression
    over jsonb;            -- parameter name -> the case's expression
    problems text;
    s text;
    elem_typ text;
BEGIN
    FOR f IN SELECT * FROM fn ORDER BY name LOOP
        -- the baseline: defaults, else seeds
        base := '{}';
        problems := NULL;
        FOR p IN SELECT * FROM param WHERE oid = f.oid ORDER BY pos LOOP
            IF p.name IS NULL OR p.mode = 'v' THEN
                problems := concat_ws('; ', problems,
                    format('parameter %s is unnamed or variadic: the generator calls by name', p.pos + 1));
                CONTINUE;
            END IF;
            s := coalesce((SELECT o.expr FROM base_override o
                            WHERE f.name ~ ('^(' || o.fn || ')$') AND p.name ~ ('^(' || o.param || ')$')),
                          p.dflt, pg_temp.seed_of(f.name, p.name));
            IF p.dflt IS NULL AND s IS NOT NULL AND p.typname LIKE '%[]' THEN
                s := format('ARRAY[(%s)]', s);
            END IF;
            IF s IS NULL THEN
                problems := concat_ws('; ', problems,
                    format('no valid value for parameter %s %s: add one to table seed', p.name, p.typname));
            ELSE
                base := base || jsonb_build_object(p.name, s);
            END IF;
        END LOOP;

        INSERT INTO hcase (fn, param, val, val_expr, problem)
        VALUES (f.name, '-', 'baseline', NULL, problems);

        FOR p IN SELECT * FROM param WHERE oid = f.oid ORDER BY pos LOOP
            IF p.typname LIKE '%[]' THEN
                elem_typ := format_type(p.typ::oid, NULL);
                elem_typ := left(elem_typ, -2);
                s := pg_temp.seed_of(f.name, p.name);
                IF NOT EXISTS (SELECT FROM hv WHERE typ = elem_typ) THEN
                    INSERT INTO hcase (fn, param, val, problem)
                    VALUES (f.name, p.name, '*', format('no hostile values for type %s', p.typname));
                    CONTINUE;
                END IF;
                IF s IS NULL THEN
                    INSERT INTO hcase (fn, param, val, problem)
                    VALUES (f.name, p.name, '*',
                            format('no valid element for %s %s: add one to table seed', p.name, p.typname));
                    CONTINUE;
                END IF;
                INSERT INTO hcase (fn, param, val, val_expr, val_typ, problem)
                SELECT f.name, p.name, a.label,
                       replace(replace(a.expr, '%E', s), '%T', elem_typ), p.typname, problems
                  FROM hv_array a;
                INSERT INTO hcase (fn, param, val, val_expr, val_typ, problem)
                SELECT f.name, p.name, 'elem:' || h.label,
                       format('ARRAY[(%s)::%s]', h.expr, elem_typ), p.typname, problems
                  FROM hv h WHERE h.typ = elem_typ;
            ELSIF EXISTS (SELECT FROM hv WHERE typ = p.typname) THEN
                INSERT INTO hcase (fn, param, val, val_expr, val_typ, problem)
                SELECT f.name, p.name, h.label, h.expr, p.typname, problems
                  FROM hv h WHERE h.typ = p.typname;
            ELSE
                INSERT INTO hcase (fn, param, val, problem)
                VALUES (f.name, p.name, '*', format('no hostile values for type %s', p.typname));
                CONTINUE;
            END IF;
            INSERT INTO hcase (fn, param, val, val_expr, val_typ, problem)
            SELECT f.name, p.name, x.label, pg_temp.fx_subst(x.expr), p.typname, problems
              FROM hv_extra x
             WHERE f.name ~ ('^(' || x.fn || ')$') AND p.name ~ ('^(' || x.param || ')$');
        END LOOP;

        INSERT INTO hcase (fn, param, val, val_expr, problem)
        SELECT f.name, 'combo', c2.label, pg_temp.fx_subst(c2.args::text),
               nullif(concat_ws('; ', problems,
                         (SELECT 'unknown parameter ' || string_agg(k, ', ')
                            FROM jsonb_object_keys(c2.args) k
                           WHERE NOT EXISTS (SELECT FROM param WHERE oid = f.oid AND name = k))), '')
          FROM combo c2 WHERE f.name ~ ('^(' || c2.fn || ')$');

        -- the calls: every argument by name, cast to its type
        FOR c IN SELECT * FROM hcase WHERE fn = f.name AND problem IS NULL LOOP
            IF c.param = 'combo' THEN
                over := c.val_expr::jsonb;
            ELSIF c.param = '-' THEN
                over := '{}';
            ELSE
                over := jsonb_build_object(c.param, c.val_expr);
            END IF;
            -- a procedure is CALLed, through pg_temp.call_procedure
            UPDATE hcase SET call_sql = (
                SELECT format(CASE WHEN f.kind = 'p' THEN 'pg_temp.call_procedure(%L)' ELSE '%s' END,
                              format(CASE WHEN f.kind = 'p' THEN 'CALL %s(%s)' ELSE '%s(%s)' END,
                                     f.target,
                              coalesce(string_agg(format('%I => (%s)::%s', p2.name,
                                                         coalesce(over ->> p2.name, base ->> p2.name),
                                                         p2.typname),
                                                  ', ' ORDER BY p2.pos), '')))
                  FROM param p2 WHERE p2.oid = f.oid)
             WHERE id = c.id;
        END LOOP;
    END LOOP;

    -- expectations, stored-value checks, probes
    UPDATE hcase h
       SET expect = r.expect, rule_id = r.id, note = r.note
      FROM (SELECT DISTINCT ON (h2.id) h2.id AS case_id, r2.*
              FROM hcase h2 JOIN rule r2
                ON h2.fn ~ ('^(' || r2.fn || ')$')
               AND h2.param ~ ('^(' || r2.param || ')$')
               AND h2.val ~ ('^(' || r2.val || ')$')
             ORDER BY h2.id, r2.prio DESC, r2.id) r
     WHERE h.id = r.case_id;

    UPDATE hcase h
       SET stored_sql = pg_temp.fx_subst(replace(replace(s2.check_sql, '%P', h.param),
                                                 '%V', format('(%s)::%s', h.val_expr, h.val_typ)))
      FROM stored s2
     WHERE h.fn ~ ('^(' || s2.fn || ')$') AND h.param ~ ('^(' || s2.param || ')$');

    UPDATE hcase h SET probe = f2.rettype = 'jq.queue'::regtype AND NOT f2.retset
      FROM fn f2 WHERE f2.name = h.fn;
END
$$;

SELECT pg_temp.generate() \gset

/* ------------------------------------------------------------------------
 * Running a case
 * ------------------------------------------------------------------------ */
CREATE TEMP TABLE hresult (
    id int PRIMARY KEY,
    got text,               -- SQLSTATE, 'ok' or 'noop'
    detail text,
    fp_changed boolean,
    stored_ok boolean,
    probe text,
    pass boolean,
    why text,
    ms numeric
);

-- the aggregate over the call's rows that says "nothing happened": by the
-- return type (false, 0, NULL, no row), jq_ack_batch by its rows
CREATE FUNCTION pg_temp.noop_sql(f text) RETURNS text
LANGUAGE sql AS $$
    SELECT CASE
        WHEN fn.name = 'jq_ack_batch' THEN 'NOT coalesce(bool_or(r.acked), false)'
        WHEN fn.kind = 'p' THEN $n$bool_and(r IS NULL OR r = '[]'::jsonb)$n$
        WHEN fn.retset THEN 'count(*) = 0'
        WHEN fn.rettype = 'boolean'::regtype THEN 'bool_and(r IS FALSE)'
        WHEN fn.rettype = 'integer'::regtype THEN 'bool_and(r = 0)'
        WHEN fn.rettype IN ('text'::regtype, 'timestamptz'::regtype) THEN 'bool_and(r IS NULL)'
        ELSE 'false' END
      FROM fn WHERE fn.name = f
$$;

-- call_procedure(sql): runs a CALL and returns the procedure's one output
-- argument as a row (from a function, the CALL is atomic: it cannot commit)
CREATE FUNCTION pg_temp.call_procedure(sql text) RETURNS SETOF jsonb
LANGUAGE plpgsql AS $$
DECLARE
    out jsonb;
BEGIN
    EXECUTE sql INTO out;
    RETURN NEXT out;
END
$$;

CREATE FUNCTION pg_temp.run_case(c hcase) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    fp0 text;
    fp1 text;
    n bigint;
    noop boolean;
    pq text;
    res text;
    got text;
    detail text;
    stored_ok boolean;
    probe text;
    fp_err text;
    pass boolean := false;
    why text;
    alt text;
    t0 timestamptz := clock_timestamp();
BEGIN
    IF c.call_sql IS NULL OR c.expect IS NULL THEN
        INSERT INTO hresult (id, pass, why) VALUES (c.id, false,
            coalesce(c.problem, 'no rule expects anything of this case: add one to table rule'));
        RETURN;
    END IF;

    BEGIN   -- everything in here is rolled back at the end
        fp0 := pg_temp.fingerprint();
        BEGIN
            EXECUTE format('SELECT count(*), %s, %s, left(string_agg(r::text, '' ; ''), 160) FROM %s AS r',
                           pg_temp.noop_sql(c.fn),
                           CASE WHEN c.probe THEN 'max(r.name)' ELSE 'NULL::text' END,
                           c.call_sql)
               INTO n, noop, pq, res;
            got := CASE WHEN noop THEN 'noop' ELSE 'ok' END;
            detail := format('%s row(s): %s', n, coalesce(res, 'NULL'));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS got = RETURNED_SQLSTATE, detail = MESSAGE_TEXT;
            detail := left(detail, 160);
        END;
        BEGIN
            fp1 := pg_temp.fingerprint();
        EXCEPTION WHEN OTHERS THEN
            fp_err := SQLSTATE || ' ' || SQLERRM;
        END;
        IF got = 'ok' AND c.stored_sql IS NOT NULL THEN
            BEGIN
                EXECUTE 'SELECT ' || c.stored_sql INTO stored_ok;
            EXCEPTION WHEN OTHERS THEN
                stored_ok := false;
                detail := detail || ' [stored check: ' || SQLSTATE || ' ' || SQLERRM || ']';
            END;
        END IF;
        IF got = 'ok' AND pq IS NOT NULL THEN
            probe := pg_temp.probe_queue(pq);
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'JQRB0';
    EXCEPTION WHEN SQLSTATE 'JQRB0' THEN
        NULL;
    END;

    FOREACH alt IN ARRAY string_to_array(c.expect, '|') LOOP
        pass := pass OR CASE
            WHEN got LIKE 'XX%' THEN false
            WHEN fp_err IS NOT NULL THEN false
            WHEN got NOT IN ('ok', 'noop') THEN got = alt AND fp0 = fp1
            WHEN alt = 'any' THEN true
            WHEN alt = 'ok' THEN got = 'ok' AND stored_ok IS NOT FALSE AND probe IS NULL
            WHEN alt = 'ok-nochange' THEN got = 'ok' AND stored_ok IS NOT FALSE
                                          AND probe IS NULL AND fp0 = fp1
            WHEN alt = 'noop' THEN got = 'noop' AND fp0 = fp1
            ELSE false END;
    END LOOP;
    IF NOT pass THEN
        why := nullif(concat_ws('; ',
            CASE WHEN got LIKE 'XX%' THEN 'internal error' END,
            CASE WHEN fp_err IS NOT NULL THEN 'jq tables damaged: ' || fp_err END,
            CASE WHEN fp0 IS DISTINCT FROM fp1 AND got NOT IN ('ok')
                 THEN 'the jq tables changed' END,
            CASE WHEN stored_ok IS FALSE THEN 'the value was not stored exactly as given' END,
            CASE WHEN probe IS NOT NULL THEN 'the queue no longer works: ' || probe END), '');
    END IF;
    INSERT INTO hresult VALUES (c.id, got, detail, fp0 IS DISTINCT FROM fp1, stored_ok,
                                probe, pass, why,
                                round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1));
END
$$;

SELECT count(pg_temp.run_case(c)) AS cases_run FROM hcase c \gset

/* ------------------------------------------------------------------------
 * The report: one test per function and parameter (all its values), one
 * per function's baseline and combinations, and the global checks
 * ------------------------------------------------------------------------ */
CREATE FUNCTION pg_temp.report() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    g record;
    d record;
    n_fn int := (SELECT count(*) FROM fn);
BEGIN
    FOR g IN
        SELECT h.fn, h.param, min(h.id) AS first,
               count(*) AS n, count(*) FILTER (WHERE NOT r.pass) AS bad
          FROM hcase h JOIN hresult r USING (id)
         GROUP BY h.fn, h.param
         ORDER BY h.fn, min(h.id)
    LOOP
        RETURN NEXT ok(g.bad = 0, format('%s %s: %s case%s',
            g.fn,
            CASE g.param WHEN '-' THEN 'baseline' WHEN 'combo' THEN 'combinations'
                         ELSE 'parameter ' || g.param END,
            g.n, CASE WHEN g.n > 1 THEN 's' ELSE '' END));
        FOR d IN
            SELECT h.*, r.got, r.detail, r.why
              FROM hcase h JOIN hresult r USING (id)
             WHERE h.fn = g.fn AND h.param = g.param AND NOT r.pass
             ORDER BY h.id
        LOOP
            RETURN NEXT diag(format('%s(%s => %s): got %s%s, want %s%s%s',
                d.fn, d.param, d.val, coalesce(d.got, '-'),
                CASE WHEN d.detail IS NOT NULL THEN ' (' || d.detail || ')' ELSE '' END,
                coalesce(d.expect, '-'),
                CASE WHEN d.why IS NOT NULL THEN E'\n    ' || d.why ELSE '' END,
                CASE WHEN d.note IS NOT NULL THEN E'\n    ' || d.note ELSE '' END));
            IF d.call_sql IS NOT NULL AND length(d.call_sql) < 2000 THEN
                RETURN NEXT diag('    SELECT * FROM ' || d.call_sql);
            END IF;
        END LOOP;
    END LOOP;

    RETURN NEXT ok(n_fn >= 18 AND NOT EXISTS (SELECT FROM fn WHERE name NOT IN (SELECT fn FROM hcase)),
                   format('every function from the catalog was called (%s functions)', n_fn));
    RETURN NEXT is((SELECT string_agg(format('rule %s (%s %s %s)', id, fn, param, val), ', ' ORDER BY id)
                      FROM rule WHERE id NOT IN (SELECT rule_id FROM hcase WHERE rule_id IS NOT NULL)),
                   NULL, 'every expectation rule matched some case');
    RETURN NEXT is((SELECT array_agg(name ORDER BY name) FROM jq_tables
                     WHERE to_regclass('jq.' || quote_ident(name)) IS NULL),
                   NULL, 'every jq table still exists');
    RETURN NEXT is(pg_temp.fingerprint(), (SELECT fp FROM fp_start),
                   'the jq tables hold what they held before the cases');
    RETURN NEXT is((SELECT array_agg(name ORDER BY name) FROM jq.queue),
                   ARRAY['hq', 'hq2', 'hq_empty'], 'the stored queue names are exactly the fixture''s');
    RETURN NEXT diag(format('%s functions, %s cases (%s failed), %s ms in calls; slowest: %s',
        n_fn, (SELECT count(*) FROM hresult), (SELECT count(*) FROM hresult WHERE NOT pass),
        (SELECT round(sum(ms)) FROM hresult),
        (SELECT string_agg(format('%s(%s => %s) %s ms', h.fn, h.param, h.val, r.ms), ', ')
           FROM (SELECT * FROM hresult ORDER BY ms DESC NULLS LAST LIMIT 3) r
           JOIN hcase h USING (id))));
END
$$;

SELECT plan((SELECT count(DISTINCT (fn, param))::int FROM hcase) + 5);
SELECT * FROM pg_temp.report();
SELECT * FROM finish();
ROLLBACK;
