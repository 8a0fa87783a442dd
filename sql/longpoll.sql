--
-- Waiting in one call: jq_dequeue(wait => ...), jq_await, and the
-- procedures jq_wait_dequeue and jq_wait_result.  Wakeups by other
-- sessions' commits are in the isolation spec long_poll; what a wait holds
-- (snapshot, locks), cancellation and shutdown are in TAP 026.
--
SELECT 1 FROM jq.jq_create_queue('lp');

-- a wait with a job there returns it at once
SELECT jq.jq_enqueue('lp', '{"n": 1}') > 0 AS enqueued;
SELECT count(*) AS got, clock_timestamp() - statement_timestamp() < interval '5 s' AS at_once
  FROM jq.jq_dequeue('lp', 10, NULL, wait => '20 s');

-- with none, it waits the whole wait and returns no row
SELECT count(*) AS got, clock_timestamp() - statement_timestamp() >= interval '0.2 s' AS waited
  FROM jq.jq_dequeue('lp', 10, NULL, wait => '0.25 s');
-- wait => 0 (or NULL) does not wait
SELECT count(*) AS got, clock_timestamp() - statement_timestamp() < interval '0.2 s' AS at_once
  FROM jq.jq_dequeue('lp', 10, NULL, wait => '0');

-- a waiting dequeue within a transaction block leases as any dequeue
BEGIN;
SELECT jq.jq_enqueue('lp', '{"n": 2}') > 0 AS enqueued;
SELECT payload FROM jq.jq_dequeue('lp', 10, NULL, wait => '1 s');
ROLLBACK;

-- the procedure: jobs as a JSON array of jq_dequeue's rows, [] when none
SELECT jq.jq_enqueue('lp', '{"n": 3}') AS job3 \gset
CALL jq.jq_wait_dequeue('lp', 10, 60, '0.25 s', NULL) \gset
SELECT jsonb_array_length(:'jobs') AS jobs,
       (:'jobs'::jsonb -> 0 ->> 'job_id')::bigint = :job3 AS same_job,
       :'jobs'::jsonb -> 0 -> 'payload' AS payload,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(:'jobs'::jsonb -> 0) k) AS columns;
CALL jq.jq_wait_dequeue('lp', 10, NULL, '0.25 s', NULL);
-- and it runs in a transaction block too (then holding what a function holds)
BEGIN;
CALL jq.jq_wait_dequeue('lp', 1, NULL, '0.1 s', NULL);
COMMIT;
-- the job it leased is acked with the token it returned
SELECT jq.jq_ack(:job3, (:'jobs'::jsonb -> 0 ->> 'lease_token')::bigint) AS acked;

-- jq_await: at once for a job that has ended, whichever way
SELECT state, result, clock_timestamp() - statement_timestamp() < interval '5 s' AS at_once
  FROM jq.jq_await(:job3, '20 s');
SELECT jq.jq_enqueue('lp', '{"n": 4}') AS job4 \gset
SELECT jq.jq_cancel(:job4);
SELECT state FROM jq.jq_await(:job4, '20 s');
SELECT 1 FROM jq.jq_create_queue('lp_dead', max_attempts => 1);
SELECT jq.jq_enqueue('lp_dead', '{"n": 5}') AS job5 \gset
SELECT job_id, lease_token FROM jq.jq_dequeue('lp_dead') \gset
SELECT jq.jq_fail(:job_id, :lease_token, 'model refused the prompt');
SELECT state, last_error FROM jq.jq_await(:job5, '20 s');
SELECT jq.jq_enqueue('lp', '{"n": 6}', deadline => clock_timestamp() + interval '50 ms') AS job6 \gset
SELECT pg_sleep(0.1);
SELECT jq.expire_deadlines(100) >= 1 AS expired;
SELECT state FROM jq.jq_await(:job6, '20 s');

-- an unknown job: no row, at once
SELECT count(*) AS rows, clock_timestamp() - statement_timestamp() < interval '5 s' AS at_once
  FROM jq.jq_await(-1, '20 s');

-- a job that does not end in time: its state when the timeout passes
SELECT jq.jq_enqueue('lp', '{"n": 7}') AS job7 \gset
SELECT state, clock_timestamp() - statement_timestamp() >= interval '0.2 s' AS waited
  FROM jq.jq_await(:job7, '0.25 s');

-- the procedure: the row as JSON, NULL for an unknown job
CALL jq.jq_wait_result(:job4, '20 s', NULL) \gset
SELECT :'result'::jsonb ->> 'state' AS state, :'result'::jsonb ->> 'job_id' = :'job4' AS same_job;
CALL jq.jq_wait_result(-1, '0.1 s', NULL);
CALL jq.jq_wait_result(:job7, '0.1 s', NULL) \gset
SELECT :'result'::jsonb ->> 'state' AS state;

-- bad input
SELECT * FROM jq.jq_dequeue('lp', 1, NULL, wait => '301 s');
SELECT * FROM jq.jq_dequeue('lp', 1, NULL, wait => '-1 s');
SELECT * FROM jq.jq_dequeue('lp', 1, NULL, wait => '1 mon');
SELECT * FROM jq.jq_dequeue(NULL, 1, NULL, wait => '1 s');
SELECT * FROM jq.jq_dequeue('no_such_queue', 1, NULL, wait => '1 s');
SELECT * FROM jq.jq_await(NULL, '1 s');
SELECT * FROM jq.jq_await(:job7, '1 day');
CALL jq.jq_wait_dequeue(NULL, 1, NULL, '1 s', NULL);
CALL jq.jq_wait_dequeue('lp', 0, NULL, '1 s', NULL);
CALL jq.jq_wait_dequeue('lp', 1, NULL, '6 min', NULL);
CALL jq.jq_wait_result(NULL, '1 s', NULL);
CALL jq.jq_wait_result(:job7, '-1 s', NULL);
-- a snapshot that cannot change cannot wait
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM jq.jq_dequeue('lp_dead', 1, NULL, wait => '1 s');
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM jq.jq_await(:job7, '1 s');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
CALL jq.jq_wait_dequeue('lp_dead', 1, NULL, '1 s', NULL);
ROLLBACK;
-- ... but a call that does not wait may run there
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT state FROM jq.jq_await(:job7, '0');
ROLLBACK;

SELECT jq.jq_drop_queue('lp', force => true);
SELECT jq.jq_drop_queue('lp_dead', force => true);
