-- dequeue: leases, priority order, run_at, lease expiry
\set SHOW_CONTEXT never
SELECT 1 FROM jq.jq_create_queue('work', lease_seconds => 60);

-- a standard batch first, then one urgent job: the urgent job comes first
SELECT cardinality(jq.jq_enqueue_batch('work',
         (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 5) g))) AS standard;
SELECT jq.jq_enqueue('work', '{"n": "urgent"}', priority => 10) AS urgent \gset
SELECT jq.jq_enqueue('work', '{"n": "low"}', priority => -5) AS low \gset

SELECT payload->>'n' AS n, priority, attempt, lease_token IS NOT NULL AS has_token
  FROM jq.jq_dequeue('work', max_jobs => 3);

-- the lease starts at clock_timestamp(), not at the start of the transaction,
-- and lasts lease_seconds (the queue's default when NULL)
BEGIN;
SELECT pg_sleep(0.2);
SELECT payload->>'n' AS n,
       lease_expires_at - clock_timestamp() BETWEEN interval '59 s' AND interval '60 s' AS sixty_seconds,
       lease_expires_at - now() > interval '60.1 s' AS from_clock_not_xact_start
  FROM jq.jq_dequeue('work');
COMMIT;
SELECT payload->>'n' AS n,
       lease_expires_at - clock_timestamp() BETWEEN interval '4 s' AND interval '5 s' AS five_seconds
  FROM jq.jq_dequeue('work', lease_seconds => 5);

-- leased jobs are not handed out again; the rest come in order, low last
SELECT payload->>'n' AS n, priority FROM jq.jq_dequeue('work', max_jobs => 10);
SELECT count(*) AS nothing_left FROM jq.jq_dequeue('work', 10);

-- the state of leased jobs
SELECT state, attempts, started_at IS NOT NULL AS started FROM jq.jq_result(:urgent);

-- run_at: a scheduled job is not handed out before its time
SELECT jq.jq_enqueue('work', '{"n": "later"}', run_at => clock_timestamp() + interval '1 hour') AS later \gset
SELECT count(*) AS before_run_at FROM jq.jq_dequeue('work');
SELECT state FROM jq.jq_result(:later);
-- ... and is once its time has come (moved here by hand, as the clock would)
UPDATE jq.job SET run_at = clock_timestamp() - interval '1 s' WHERE id = :later;
SELECT state FROM jq.jq_result(:later);
SELECT payload->>'n' AS n FROM jq.jq_dequeue('work');
SELECT state FROM jq.jq_result(:later);

-- a due scheduled job takes its place by priority among ready jobs
SELECT jq.jq_enqueue('work', '{"n": "due-urgent"}', priority => 9,
                  run_at => clock_timestamp() + interval '1 hour') AS due_urgent \gset
SELECT jq.jq_enqueue('work', '{"n": "ready-standard"}') AS ready_std \gset
UPDATE jq.job SET run_at = clock_timestamp() - interval '1 s' WHERE id = :due_urgent;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('work', 2);

-- within a priority, earlier run_at first, then lower id
SELECT jq.jq_enqueue('work', '{"n": "b"}', run_at => clock_timestamp() - interval '1 minute') AS b \gset
SELECT jq.jq_enqueue('work', '{"n": "a"}', run_at => clock_timestamp() - interval '2 minutes') AS a \gset
SELECT jq.jq_enqueue('work', '{"n": "c"}') AS c \gset
SELECT jq.jq_enqueue('work', '{"n": "d"}') AS d \gset
SELECT payload->>'n' AS n FROM jq.jq_dequeue('work', 4);

-- a dequeue that rolls back releases its jobs untouched
SELECT jq.jq_enqueue('work', '{"n": "rb"}') AS rb \gset
BEGIN;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('work');
ROLLBACK;
SELECT state, attempts FROM jq.jq_result(:rb);

-- other queues are not touched
SELECT 1 FROM jq.jq_create_queue('other');
SELECT count(*) AS other_empty FROM jq.jq_dequeue('other', 10);
SELECT payload->>'n' AS n FROM jq.jq_dequeue('work', 10);

-- lease tokens grow with each delivery of the same job, and differ between jobs
SELECT jq.jq_enqueue('work', '{"n": "redeliver"}') AS r \gset
SELECT lease_token AS t1 FROM jq.jq_dequeue('work') \gset
-- expire the lease and hand the job back as lease reclaim will
UPDATE jq.job SET state = 'r', lease_expires_at = NULL WHERE id = :r;
SELECT lease_token AS t2, attempt FROM jq.jq_dequeue('work') \gset
SELECT :t2 > :t1 AS token_grew, :attempt AS attempt, (:t2 >> 32) AS deliveries;

-- a scheduled job that falls due is promoted by the dequeue itself (here in
-- the same transaction, where the background worker cannot see it), and a
-- dequeue with nothing due promotes nothing
SELECT 1 FROM jq.jq_create_queue('due');
SELECT jq.jq_enqueue('due', '{"later": 1}', run_at => now() + interval '1 hour') > 0 AS scheduled;
BEGIN;
SELECT count(*) AS nothing_due FROM jq.jq_dequeue('due', 5);
UPDATE jq.job SET run_at = now() - interval '1 second'
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'due');
SELECT payload FROM jq.jq_dequeue('due', 5);
ROLLBACK;
SELECT state FROM jq.job WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'due');
SELECT jq.jq_drop_queue('due', force => true);
