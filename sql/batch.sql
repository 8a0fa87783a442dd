-- batch: groups of jobs submitted together, and their progress
-- the context of an error in a batch names the element at fault
\set SHOW_CONTEXT errors
SELECT 1 FROM jq.jq_create_queue('audience', max_attempts => 1);

-- one call: a batch of 10 chunks; returns the batch id
SELECT jq.jq_submit_batch('audience',
         (SELECT array_agg(jsonb_build_object('chunk', g)) FROM generate_series(1, 10) g),
         label => 'propensity run 2026-11') AS b1 \gset
SELECT queue, label, total, waiting, in_flight, succeeded, dead, percent_complete, finished_at
  FROM jq.batch_progress WHERE batch_id = :b1;

-- or create a batch and enqueue into it, one by one or in batches
SELECT jq.jq_create_batch('audience', 'hand-made') AS b2 \gset
SELECT jq.jq_enqueue('audience', '{"chunk": "a"}', batch_id => :b2) > 0 AS one;
SELECT cardinality(jq.jq_enqueue_batch('audience', ARRAY['{"chunk": "b"}', '{"chunk": "c"}']::jsonb[],
                                    batch_id => :b2)) AS two;
-- a resubmission with an idempotency key counts once
SELECT jq.jq_enqueue('audience', '{"chunk": "d"}', idempotency_key => 'd', batch_id => :b2) AS d \gset
SELECT jq.jq_enqueue('audience', '{"chunk": "d"}', idempotency_key => 'd', batch_id => :b2) = :d AS same;
SELECT label, total FROM jq.batch_progress WHERE batch_id = :b2;

-- work the first batch: 6 succeed, 2 die, 1 cancelled, 1 left in flight
CREATE TEMP TABLE l AS SELECT * FROM jq.jq_dequeue('audience', 9);
SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token)) AS acked
  FROM l WHERE payload->>'chunk' IN ('1', '2', '3', '4', '5', '6');
SELECT count(*) FROM l, jq.jq_fail(job_id, lease_token, 'bad chunk') f
 WHERE payload->>'chunk' IN ('7', '8');
SELECT jq.jq_cancel(job_id) FROM l WHERE payload->>'chunk' = '9';
SELECT total, waiting, in_flight, succeeded, dead, cancelled, percent_complete,
       finished_at IS NULL AS unfinished
  FROM jq.batch_progress WHERE batch_id = :b1;
-- the in-flight job is the cancelled one; the last waiting job finishes it
SELECT jq.jq_ack(job_id, lease_token) FROM l WHERE payload->>'chunk' = '9';
SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token)) AS acked
  FROM jq.jq_dequeue('audience', 10) WHERE payload->>'chunk' = '10';
SELECT total, waiting, in_flight, succeeded, dead, cancelled, percent_complete,
       finished_at IS NOT NULL AS finished
  FROM jq.batch_progress WHERE batch_id = :b1;

-- the errors of the dead letters, one row each
SELECT queue, attempt, error FROM jq.dead_letter_errors WHERE queue = 'audience';

-- bad input
SELECT jq.jq_enqueue('audience', '{}', batch_id => 987654);
SELECT 1 FROM jq.jq_create_queue('other_audience');
SELECT jq.jq_enqueue('other_audience', '{}', batch_id => :b1);
SELECT jq.jq_enqueue_batch('other_audience', ARRAY['{}']::jsonb[], batch_id => :b1);
SELECT jq.jq_create_batch('nosuch');
SELECT jq.jq_create_batch('audience', repeat('x', 600));
SELECT jq.jq_submit_batch('audience', ARRAY['7']::jsonb[]);
-- nothing was left behind by the failed calls
SELECT count(*) AS batches FROM jq.batch;
