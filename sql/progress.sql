--
-- jq_progress: a running job's progress, fenced by its lease token, shown
-- by jq_result while it runs; a new attempt starts without it.
--
SELECT 1 FROM jq.jq_create_queue('prog');
SELECT jq.jq_enqueue('prog', '{"doc": 7}') > 0 AS enqueued;
SELECT job_id, lease_token FROM jq.jq_dequeue('prog') \gset

-- reported, and shown with when
SELECT jq.jq_progress(:job_id, :lease_token, '{"done": 120, "total": 400}');
SELECT state, progress,
       progress_at BETWEEN clock_timestamp() - interval '1 minute' AND clock_timestamp() AS just_now
  FROM jq.jq_result(:job_id);
-- the latest report wins
SELECT jq.jq_progress(:job_id, :lease_token, '{"done": 280, "total": 400}');
SELECT progress FROM jq.jq_result(:job_id);

-- fenced: a stale token changes nothing
SELECT jq.jq_progress(:job_id, :lease_token + 1, '{"done": 0}');
SELECT progress->>'done' AS done FROM jq.jq_result(:job_id);

-- a new attempt starts without the last one's progress
SELECT jq.jq_fail(:job_id, :lease_token, 'provider timeout', retry_in => '0');
SELECT progress->>'done' AS kept_while_ready FROM jq.jq_result(:job_id);
SELECT job_id, lease_token AS token2 FROM jq.jq_dequeue('prog') \gset
SELECT attempts, progress IS NULL AS cleared FROM jq.jq_result(:job_id);
-- the old lease cannot report on the new attempt
SELECT jq.jq_progress(:job_id, :lease_token, '{"done": 1}');

-- a cancelled job says stop
SELECT jq.jq_cancel(:job_id);
SELECT jq.jq_progress(:job_id, :token2, '{"done": 2}');

-- a finished job has its result, not its progress
SELECT jq.jq_enqueue('prog', '{"doc": 8}') > 0 AS enqueued;
SELECT job_id, lease_token FROM jq.jq_dequeue('prog') \gset
SELECT jq.jq_progress(:job_id, :lease_token, '{"done": 399, "total": 400}');
SELECT jq.jq_ack(:job_id, :lease_token, '{"score": 0.8}');
SELECT state, result, progress FROM jq.jq_result(:job_id);
SELECT jq.jq_progress(:job_id, :lease_token, '{"done": 400}');

-- bad input
\set SHOW_CONTEXT never
SELECT jq.jq_progress(NULL, 1, '{}');
SELECT jq.jq_progress(1, NULL, '{}');
SELECT jq.jq_progress(1, 1, NULL);
SELECT jq.jq_progress(1, 1, jsonb_build_object('log', repeat('x', 70000)));
\set SHOW_CONTEXT errors
SELECT jq.limit('progress_bytes_max');
SELECT jq.jq_drop_queue('prog', force => true);
