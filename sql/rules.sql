-- rules: each rule of pgjq is defined once and holds whoever writes the
-- tables: the settings of a queue (jq.queue_check), the states of a job
-- (jq.count_trigger, from PGJQ_STATES), the limits (jq.limits), and the
-- pgjq.database list (a GUC check hook).  And jq.rebuild_counters, the
-- function the worker calls, run by hand.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SELECT 1 FROM jq.jq_create_queue('rules');

-- an operator's own UPDATE of a queue meets the same rules as jq_alter_queue
UPDATE jq.queue SET lease_seconds = 0 WHERE name = 'rules';
\echo :LAST_ERROR_SQLSTATE
UPDATE jq.queue SET name = 'Not A Name' WHERE name = 'rules';
\echo :LAST_ERROR_SQLSTATE
INSERT INTO jq.queue (name, lease_seconds, max_attempts, backoff_base, backoff_cap,
                      result_retention, max_payload_bytes, dead_letter_retention,
                      idempotency_window)
VALUES ('direct', 60, 3, '1 s', '1 min', '1 day', 8, '1 day', '1 hour');
\echo :LAST_ERROR_SQLSTATE
UPDATE jq.queue SET lease_seconds = 60 WHERE name = 'rules';
SELECT lease_seconds FROM jq.queue WHERE name = 'rules';

-- the states each table may hold
SELECT jq.jq_enqueue('rules', '{}') AS j \gset
UPDATE jq.job SET state = 'd' WHERE id = :j;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO jq.job_result (job_id, queue_id, state, priority, attempts, run_at,
                           enqueued_at, finished_at)
SELECT 0, queue_id, 'r', 0, 0, now(), now(), now() FROM jq.queue WHERE name = 'rules';
\echo :LAST_ERROR_SQLSTATE
SELECT s AS code, jq.state_name(s, NULL) AS name
  FROM unnest(ARRAY['r', 's', 'l', 'd', 'c', 'x', '?']::"char"[]) AS s;
-- a scheduled job whose time has come reads as ready
SELECT jq.state_name('s', now() - interval '1 s') AS due,
       jq.state_name('s', now() + interval '1 h') AS later;

-- the limits, from one place
SELECT name, value FROM jq.limits() ORDER BY name;
SELECT jq.limit('lease_seconds_max') AS lease_seconds_max;
SELECT jq.limit('no_such_limit');
\echo :LAST_ERROR_SQLSTATE
-- error texts: whole up to error_maxlen bytes, longer ones cut and marked
SELECT octet_length(jq.clip_error(repeat('é', 4096))) AS kept_whole,
       octet_length(jq.clip_error(repeat('é', 4097))) AS cut,
       right(jq.clip_error(repeat('é', 4097)), 16) AS mark;

-- pgjq.database: a malformed list is refused, with the reason
ALTER SYSTEM SET pgjq.database = '"unterminated';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET pgjq.database = 'ok, , also_ok';
\echo :LAST_ERROR_SQLSTATE
SELECT format('ALTER SYSTEM SET pgjq.database = %L', repeat('d', 64)) AS too_long \gset
:too_long;
\echo :LAST_ERROR_SQLSTATE

-- the counter rebuild the worker runs (no worker serves this database):
-- exact counts from the tables, and only under READ COMMITTED
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT jq.rebuild_counters();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT jq.rebuild_counters() AS rebuilt, jq.counters_valid() AS valid;
SELECT ready FROM jq.counters() c JOIN jq.queue q USING (queue_id) WHERE q.name = 'rules';
SELECT jq.jq_drop_queue('rules', force => true);
