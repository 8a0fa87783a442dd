-- idempotency: a resubmission with the same key returns the existing job
-- the context of an error in a batch names the element at fault
\set SHOW_CONTEXT errors
SELECT 1 FROM jq.jq_create_queue('idem', idempotency_window => '1 hour');
SELECT 1 FROM jq.jq_create_queue('idem_other');

-- the same key twice: one job, the same id
SELECT jq.jq_enqueue('idem', '{"copy": "v1"}', idempotency_key => 'req-1') AS first \gset
SELECT jq.jq_enqueue('idem', '{"copy": "v1 again"}', idempotency_key => 'req-1') = :first AS same_id;
SELECT count(*) AS jobs FROM jq.job WHERE payload->>'copy' LIKE 'v1%';
-- the first payload stands
SELECT payload->>'copy' AS copy FROM jq.job WHERE id = :first;

-- keys are per queue
SELECT jq.jq_enqueue('idem_other', '{"copy": "v1"}', idempotency_key => 'req-1') <> :first AS other_queue_new_job;

-- without a key, every enqueue is a new job
SELECT jq.jq_enqueue('idem', '{"copy": "no key"}') <> jq.jq_enqueue('idem', '{"copy": "no key"}') AS distinct_jobs;

-- the key holds while the job is leased and after it succeeded, within the window
SELECT job_id = :first AS got_first, lease_token AS tok FROM jq.jq_dequeue('idem') \gset
SELECT jq.jq_enqueue('idem', '{}', idempotency_key => 'req-1') = :first AS same_while_leased;
SELECT jq.jq_ack(:first, :tok, '{"score": 1}');
SELECT jq.jq_enqueue('idem', '{}', idempotency_key => 'req-1') = :first AS same_after_success;
SELECT state, result FROM jq.jq_result(:first);

-- past the window, a finished job's key is handed to a new job
UPDATE jq.idempotency_key SET created_at = created_at - interval '2 hours' WHERE key = 'req-1'
   AND queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'idem');
SELECT jq.jq_enqueue('idem', '{"copy": "v2"}', idempotency_key => 'req-1') AS second \gset
SELECT :second <> :first AS new_job, state FROM jq.jq_result(:second);
SELECT jq.jq_enqueue('idem', '{}', idempotency_key => 'req-1') = :second AS key_now_names_second;

-- past the window, an unfinished job still holds its key
UPDATE jq.idempotency_key SET created_at = created_at - interval '2 hours' WHERE key = 'req-1'
   AND queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'idem');
SELECT jq.jq_enqueue('idem', '{}', idempotency_key => 'req-1') = :second AS unfinished_holds;

-- a rolled-back enqueue frees its key
BEGIN;
SELECT jq.jq_enqueue('idem', '{"copy": "rb"}', idempotency_key => 'req-rb') AS rb \gset
ROLLBACK;
SELECT count(*) AS key_rows FROM jq.idempotency_key WHERE key = 'req-rb';
SELECT jq.jq_enqueue('idem', '{"copy": "rb2"}', idempotency_key => 'req-rb') <> :rb AS fresh_job;

-- batches honour keys: known keys give their job, repeated keys within the
-- batch give one job, NULL keys are plain jobs; ids come in payload order
SELECT jq.jq_enqueue_batch('idem',
         ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}', '{"b": 4}', '{"b": 5}']::jsonb[],
         idempotency_keys => ARRAY['req-rb', NULL, 'b-new', 'b-new', NULL]) AS ids \gset
SELECT (:'ids'::bigint[])[1] = jq.jq_enqueue('idem', '{}', idempotency_key => 'req-rb') AS known_key,
       (:'ids'::bigint[])[3] = (:'ids'::bigint[])[4] AS repeated_key_one_job,
       (:'ids'::bigint[])[2] <> (:'ids'::bigint[])[5] AS null_keys_distinct,
       cardinality(:'ids'::bigint[]) AS n;
SELECT u.o, j.payload->>'b' AS b
  FROM unnest(:'ids'::bigint[]) WITH ORDINALITY AS u(id, o) JOIN jq.job j ON j.id = u.id
 ORDER BY u.o;
-- a batch whose keys all exist creates nothing
SELECT count(*) AS before FROM jq.job \gset
SELECT cardinality(jq.jq_enqueue_batch('idem', ARRAY['{}', '{}']::jsonb[],
                                    idempotency_keys => ARRAY['b-new', 'req-rb'])) AS n;
SELECT count(*) - :before AS created FROM jq.job;

-- a dead job holds its key within the window; redrive keeps the id
SELECT 1 FROM jq.jq_create_queue('idem_dead', max_attempts => 1);
SELECT jq.jq_enqueue('idem_dead', '{}', idempotency_key => 'd-1') AS d \gset
SELECT jq.jq_fail(job_id, lease_token, 'bad input', permanent => true) FROM jq.jq_dequeue('idem_dead');
SELECT jq.jq_enqueue('idem_dead', '{}', idempotency_key => 'd-1') = :d AS dead_holds_key;

-- key rules
SELECT jq.jq_enqueue('idem', '{}', idempotency_key => '');
SELECT jq.jq_enqueue('idem', '{}', idempotency_key => repeat('k', 513));
SELECT jq.jq_enqueue('idem', '{}', idempotency_key => repeat('k', 512)) > 0 AS max_length_ok;
SELECT jq.jq_enqueue('idem', '{}', idempotency_key => 'quote''s; DROP TABLE jq.job; --') > 0 AS any_text_ok;
SELECT jq.jq_enqueue_batch('idem', ARRAY['{}', '{}']::jsonb[], idempotency_keys => ARRAY['x']);
SELECT jq.jq_enqueue_batch('idem', ARRAY['{}']::jsonb[], idempotency_keys => ARRAY['']);
SELECT jq.jq_enqueue_batch('idem', ARRAY['{}']::jsonb[], idempotency_keys => ARRAY[['x']]);
SELECT 1 FROM jq.jq_alter_queue('idem', idempotency_window => '-1 s');
