-- ack: complete a leased job with its lease token; stale tokens are refused
\set SHOW_CONTEXT never
SELECT 1 FROM jq.jq_create_queue('acks');
SELECT jq.jq_enqueue('acks', '{"n": 1}') AS j1 \gset
SELECT job_id, lease_token AS tok FROM jq.jq_dequeue('acks') \gset

-- a wrong token is refused and changes nothing
SELECT jq.jq_ack(:j1, :tok + 1) AS wrong_token;
SELECT jq.jq_ack(:j1, 0) AS zero_token;
SELECT state FROM jq.jq_result(:j1);

-- the right token completes the job and stores the result
SELECT jq.jq_ack(:j1, :tok, '{"score": 0.93}') AS acked;
SELECT state, result, attempts, finished_at >= started_at AS finished_after_start
  FROM jq.jq_result(:j1);
-- the job left the hot table
SELECT count(*) AS in_hot_table FROM jq.job WHERE id = :j1;

-- acking twice: false the second time, the result stays
SELECT jq.jq_ack(:j1, :tok, '{"score": 0}') AS second_ack;
SELECT result FROM jq.jq_result(:j1);

-- a stale token after the lease expired and another worker took the job
SELECT jq.jq_enqueue('acks', '{"n": 2}') AS j2 \gset
SELECT lease_token AS old_tok FROM jq.jq_dequeue('acks') \gset
UPDATE jq.job SET state = 'r', lease_expires_at = NULL WHERE id = :j2;  -- as reclaim does
SELECT lease_token AS new_tok FROM jq.jq_dequeue('acks') \gset
SELECT jq.jq_ack(:j2, :old_tok, '{"from": "late worker"}') AS late_worker;
SELECT jq.jq_ack(:j2, :new_tok, '{"from": "current worker"}') AS current_worker;
SELECT result->>'from' AS completed_by FROM jq.jq_result(:j2);

-- a job that was handed back but not yet re-leased cannot be acked either
SELECT jq.jq_enqueue('acks', '{"n": 3}') AS j3 \gset
SELECT lease_token AS tok3 FROM jq.jq_dequeue('acks') \gset
UPDATE jq.job SET state = 'r', lease_expires_at = NULL WHERE id = :j3;
SELECT jq.jq_ack(:j3, :tok3) AS ack_of_ready_job;
SELECT state FROM jq.jq_result(:j3);
SELECT lease_token AS tok3 FROM jq.jq_dequeue('acks') \gset
SELECT jq.jq_ack(:j3, :tok3) AS acked;

-- unknown job: false, not an error
SELECT jq.jq_ack(987654321, 1) AS unknown_job;
-- a NULL result is allowed
SELECT jq.jq_enqueue('acks', '{"n": 4}') AS j4 \gset
SELECT lease_token AS tok4 FROM jq.jq_dequeue('acks') \gset
SELECT jq.jq_ack(:j4, :tok4) AS acked, (SELECT result IS NULL FROM jq.jq_result(:j4)) AS null_result;

-- an ack that rolls back leaves the job leased
SELECT jq.jq_enqueue('acks', '{"n": 5}') AS j5 \gset
SELECT lease_token AS tok5 FROM jq.jq_dequeue('acks') \gset
BEGIN;
SELECT jq.jq_ack(:j5, :tok5) AS acked_in_xact;
ROLLBACK;
SELECT state FROM jq.jq_result(:j5);
SELECT jq.jq_ack(:j5, :tok5) AS acked;

-- batch ack: one row per job, in input order; each stands on its own token
SELECT cardinality(jq.jq_enqueue_batch('acks',
         (SELECT array_agg(jsonb_build_object('b', g)) FROM generate_series(1, 4) g))) AS n;
CREATE TEMP TABLE leased AS SELECT * FROM jq.jq_dequeue('acks', 4);
SELECT count(*) FROM leased;
SELECT a.acked, l.payload->>'b' AS b
  FROM jq.jq_ack_batch(
         (SELECT array_agg(job_id ORDER BY job_id DESC) FROM leased),
         (SELECT array_agg(CASE WHEN payload->>'b' = '2' THEN lease_token + 1 ELSE lease_token END
                           ORDER BY job_id DESC) FROM leased),
         (SELECT array_agg(jsonb_build_object('r', payload->'b') ORDER BY job_id DESC) FROM leased))
         WITH ORDINALITY AS a(job_id, acked, ord)
  JOIN leased l USING (job_id)
 ORDER BY a.ord;
SELECT payload->>'b' AS b, r.state, r.result
  FROM leased l, jq.jq_result(l.job_id) r ORDER BY 1;
-- the refused one can still be acked with its right token
SELECT acked FROM jq.jq_ack_batch((SELECT array_agg(job_id) FROM leased WHERE payload->>'b' = '2'),
                               (SELECT array_agg(lease_token) FROM leased WHERE payload->>'b' = '2'));
-- acking the batch again: all false
SELECT bool_or(acked) AS any_acked
  FROM jq.jq_ack_batch((SELECT array_agg(job_id) FROM leased),
                    (SELECT array_agg(lease_token) FROM leased));
-- empty batch: no rows
SELECT count(*) FROM jq.jq_ack_batch('{}', '{}');
-- results may hold NULL elements
SELECT jq.jq_enqueue('acks', '{"n": 6}') AS j6 \gset
SELECT lease_token AS tok6 FROM jq.jq_dequeue('acks') \gset
SELECT acked FROM jq.jq_ack_batch(ARRAY[:j6]::bigint[], ARRAY[:tok6]::bigint[], ARRAY[NULL]::jsonb[]);

-- jq_ack_dequeue: a worker's turn in one call
SELECT 1 FROM jq.jq_create_queue('turns', max_attempts => 2);
SELECT cardinality(jq.jq_enqueue_batch('turns', ARRAY['{"t": 1}', '{"t": 2}', '{"t": 3}', '{"t": 4}', '{"t": 5}']::jsonb[]));
-- the first turn completes nothing: it is jq_dequeue
CREATE TEMP TABLE held AS SELECT job_id, lease_token, payload FROM jq.jq_ack_dequeue('turns', 2);
SELECT payload->>'t' AS t FROM held ORDER BY job_id;
-- the next: ack job 1 with a result, fail job 2, lease the next two, in one call
CREATE TEMP TABLE next AS
SELECT job_id, lease_token, payload
  FROM jq.jq_ack_dequeue('turns', 2,
         job_ids => (SELECT array_agg(job_id ORDER BY job_id) FROM held),
         lease_tokens => (SELECT array_agg(lease_token ORDER BY job_id) FROM held),
         results => ARRAY['{"score": 1}', NULL]::jsonb[],
         errors => ARRAY[NULL, 'model timeout']);
SELECT payload->>'t' AS t FROM next ORDER BY job_id;
SELECT h.payload->>'t' AS t, r.state, r.result, r.attempts, r.last_error
  FROM held h, jq.jq_result(h.job_id) r ORDER BY h.job_id;
-- a stale token changes nothing; acks without results; the queue runs dry
SELECT count(*) AS leased
  FROM jq.jq_ack_dequeue('turns', 10,
         job_ids => (SELECT array_agg(job_id) FROM next),
         lease_tokens => (SELECT array_agg(lease_token + 1) FROM next));
SELECT count(*) AS still_leased FROM next n JOIN jq.job j ON j.id = n.job_id AND j.state = 'l';
SELECT count(*) AS leased
  FROM jq.jq_ack_dequeue('turns', 10,
         job_ids => (SELECT array_agg(job_id) FROM next),
         lease_tokens => (SELECT array_agg(lease_token) FROM next));
SELECT count(*) AS succeeded FROM next n, jq.jq_result(n.job_id) r WHERE r.state = 'succeeded';
-- bad input
SELECT * FROM jq.jq_ack_dequeue(NULL);
SELECT * FROM jq.jq_ack_dequeue('turns', 0);
SELECT * FROM jq.jq_ack_dequeue('turns', 1, job_ids => ARRAY[1]::bigint[]);
SELECT * FROM jq.jq_ack_dequeue('turns', 1, results => ARRAY['{}']::jsonb[]);
SELECT * FROM jq.jq_ack_dequeue('turns', 1, job_ids => ARRAY[1, 1]::bigint[], lease_tokens => ARRAY[1, 1]::bigint[]);
SELECT * FROM jq.jq_ack_dequeue('turns', 1, job_ids => ARRAY[1]::bigint[], lease_tokens => ARRAY[1]::bigint[],
                                errors => ARRAY['a', 'b']);
SELECT * FROM jq.jq_ack_dequeue('no_such_queue', 1);
DROP TABLE held, next;
SELECT jq.jq_drop_queue('turns', force => true);

-- The hot path writes jq.job_result's rows itself: a column pgjq does not
-- know makes an ack fail (rather than leave the column without its value);
-- a dropped column is fine.  A job's last error reaches last_error.
SELECT 1 FROM jq.jq_create_queue('cols', max_attempts => 3);
SELECT jq.jq_enqueue('cols', '{"c": 1}') AS id \gset
SELECT job_id, lease_token FROM jq.jq_dequeue('cols') \gset
SELECT jq.jq_fail(:job_id, :lease_token, 'first try failed') AS failed;
UPDATE jq.job SET run_at = now(), state = 'r' WHERE id = :id;
SELECT job_id, lease_token FROM jq.jq_dequeue('cols') \gset
ALTER TABLE jq.job_result ADD COLUMN note text DEFAULT 'x';
SELECT jq.jq_ack(:job_id, :lease_token);
ALTER TABLE jq.job_result DROP COLUMN note;
SELECT jq.jq_ack(:job_id, :lease_token);
SELECT state, attempts, last_error FROM jq.jq_result(:id);
SELECT jq.jq_drop_queue('cols', force => true);
