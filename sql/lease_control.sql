-- lease_control: a worker extends its lease (jq_extend), a producer cancels
-- a job (jq_cancel), and an expired lease is reclaimed as a failed attempt
-- (jq.reclaim_expired_leases)
\set SHOW_CONTEXT never
-- jq.reclaim_expired_leases() works on every queue: so that its counts
-- below are this test's alone, jobs that earlier tests left leased are
-- kept out of its reach
UPDATE jq.job SET lease_expires_at = lease_expires_at + interval '1 day' WHERE state = 'l';
SELECT 1 FROM jq.jq_create_queue('lc', lease_seconds => 30, max_attempts => 2);

/* ---- jq_extend: a heartbeat moves the expiry to now + lease_seconds ---- */
SELECT jq.jq_enqueue('lc', '{"n": "extend"}') AS e \gset
SELECT lease_token AS tok, lease_expires_at AS exp0 FROM jq.jq_dequeue('lc', lease_seconds => 5) \gset
SELECT jq.jq_extend(:e, :tok, 600) AS exp1 \gset
SELECT :'exp1'::timestamptz - clock_timestamp() BETWEEN interval '590 s' AND interval '600 s'
           AS ten_minutes_from_now,
       :'exp1'::timestamptz > :'exp0' AS later_than_before,
       lease_expires_at = :'exp1' AS stored, state, attempt, lease_token = :tok AS same_token
  FROM jq.job WHERE id = :e;
-- NULL lease_seconds: the queue's default (30 s), again from now, so a
-- heartbeat may also shorten a lease
SELECT jq.jq_extend(:e, :tok) AS exp2 \gset
SELECT :'exp2'::timestamptz - clock_timestamp() BETWEEN interval '20 s' AND interval '30 s'
           AS thirty_seconds_from_now,
       :'exp2'::timestamptz < :'exp1' AS shorter_than_before,
       lease_expires_at = :'exp2' AS stored
  FROM jq.job WHERE id = :e;
-- the longest lease is allowed
SELECT jq.jq_extend(:e, :tok, 86400) - clock_timestamp() > interval '86390 s' AS one_day;
-- a stale token gets NULL and changes nothing
SELECT lease_expires_at AS exp3 FROM jq.job WHERE id = :e \gset
SELECT jq.jq_extend(:e, :tok + 1, 60) AS wrong_token;
SELECT jq.jq_extend(:e, 0, 60) AS zero_token;
SELECT lease_expires_at = :'exp3' AS unchanged FROM jq.job WHERE id = :e;
-- the lease still completes the job; after that, extend gets NULL
SELECT jq.jq_ack(:e, :tok) AS acked;
SELECT jq.jq_extend(:e, :tok, 60) AS after_ack;
-- unknown job: NULL, not an error
SELECT jq.jq_extend(987654321, 1) AS unknown_job;
-- a job that is not leased (waiting for its retry): NULL
SELECT jq.jq_enqueue('lc', '{"n": "retry"}') AS er \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('lc') \gset
SELECT jq.jq_fail(:er, :tok, 'flaky', retry_in => '1 hour') AS state;
SELECT jq.jq_extend(:er, :tok, 60) AS not_leased;
SELECT state, lease_expires_at FROM jq.job WHERE id = :er;
-- bad arguments
SELECT jq.jq_extend(:er, :tok, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_extend(:er, :tok, -1);
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_extend(:er, :tok, 86401);
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_extend(NULL, :tok);
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_extend(:er, NULL);
\echo :LAST_ERROR_SQLSTATE

/* ---- jq_cancel ---- */
-- a ready, a scheduled and a retry-waiting job are cancelled at once
SELECT jq.jq_enqueue('lc', '{"n": "ready"}') AS cr \gset
SELECT jq.jq_enqueue('lc', '{"n": "scheduled"}', run_at => clock_timestamp() + interval '1 hour') AS cs \gset
SELECT state FROM jq.jq_result(:cs);
SELECT jq.jq_cancel(:cr) AS cancel_ready, jq.jq_cancel(:cs) AS cancel_scheduled,
       jq.jq_cancel(:er) AS cancel_retry_waiting;
SELECT p.n, r.state, r.attempts, r.result, r.last_error, r.finished_at IS NOT NULL AS finished
  FROM (VALUES ('ready', :cr), ('scheduled', :cs), ('retry', :er)) AS p(n, id),
       jq.jq_result(p.id) r
 ORDER BY p.n;
SELECT count(*) AS in_hot_table FROM jq.job WHERE id IN (:cr, :cs, :er);
-- they are never dequeued, not even once their time would have come
SELECT count(*) AS dequeued FROM jq.jq_dequeue('lc', 10);
-- cancelling twice: false the second time
SELECT jq.jq_cancel(:cr) AS cancel_again;

-- a leased job: true, but it stays leased until its worker reports back
SELECT jq.jq_enqueue('lc', '{"n": "leased"}') AS cl \gset
SELECT lease_token AS tok, lease_expires_at AS exp FROM jq.jq_dequeue('lc') \gset
SELECT jq.jq_cancel(:cl) AS cancel_leased;
SELECT state, attempts FROM jq.jq_result(:cl);
SELECT cancel_requested, lease_token = :tok AS same_token, lease_expires_at = :'exp' AS same_expiry
  FROM jq.job WHERE id = :cl;
SELECT jq.jq_cancel(:cl) AS cancel_twice;
-- the worker's heartbeat gets NULL: stop working on it
SELECT jq.jq_extend(:cl, :tok, 60) AS extend_cancelled;
SELECT lease_expires_at = :'exp' AS same_expiry FROM jq.job WHERE id = :cl;
-- its ack returns false, and the job ends cancelled with no result
SELECT jq.jq_ack(:cl, :tok, '{"done": true}') AS acked;
SELECT state, result, attempts, last_error, finished_at IS NOT NULL AS finished FROM jq.jq_result(:cl);
SELECT count(*) AS in_hot_table FROM jq.job WHERE id = :cl;
SELECT jq.jq_cancel(:cl) AS cancel_cancelled, jq.jq_ack(:cl, :tok) AS ack_again;

-- jq_fail of a cancel-requested job: cancelled, neither retried nor dead,
-- even when permanent or on the last attempt
SELECT jq.jq_enqueue('lc', '{"n": "fail"}') AS cf \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('lc') \gset
SELECT jq.jq_cancel(:cf) AS cancel_leased;
SELECT jq.jq_fail(:cf, :tok, 'worker gave up') AS state;
SELECT state, result, attempts, last_error FROM jq.jq_result(:cf);
SELECT count(*) AS in_hot_table FROM jq.job WHERE id = :cf;
SELECT count(*) AS dead_letters FROM jq.dead_letter WHERE job_id = :cf;
SELECT jq.jq_enqueue('lc', '{"n": "fail permanent"}') AS cp \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('lc') \gset
SELECT jq.jq_cancel(:cp) AS cancel_leased;
SELECT jq.jq_fail(:cp, :tok, 'bad input', permanent => true) AS state;
SELECT jq.jq_enqueue('lc', '{"n": "fail last"}') AS cz \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('lc') \gset
SELECT jq.jq_fail(:cz, :tok, 'first', retry_in => '0') AS state;
SELECT lease_token AS tok, attempt FROM jq.jq_dequeue('lc') \gset
SELECT :attempt AS last_attempt, jq.jq_cancel(:cz) AS cancel_leased;
SELECT jq.jq_fail(:cz, :tok, 'second') AS state;
SELECT state, attempts, last_error FROM jq.jq_result(:cz);
SELECT count(*) AS dead_letters FROM jq.dead_letter WHERE job_id IN (:cp, :cz);

-- jq_ack_batch: the cancelled job's element is false, the other one acks
SELECT cardinality(jq.jq_enqueue_batch('lc', ARRAY[jsonb_build_object('n', 'batch 1'),
                                                jsonb_build_object('n', 'batch 2')])) AS jobs;
CREATE TEMP TABLE batch AS SELECT payload->>'n' AS n, job_id, lease_token FROM jq.jq_dequeue('lc', 2);
SELECT jq.jq_cancel(job_id) AS cancel_leased FROM batch WHERE n = 'batch 1';
SELECT b.n, a.acked
  FROM jq.jq_ack_batch((SELECT array_agg(job_id ORDER BY n) FROM batch),
                    (SELECT array_agg(lease_token ORDER BY n) FROM batch),
                    ARRAY['{"r": 1}', '{"r": 2}']::jsonb[]) a
  JOIN batch b USING (job_id)
 ORDER BY b.n;
SELECT b.n, r.state, r.result FROM batch b, jq.jq_result(b.job_id) r ORDER BY b.n;

-- a cancel that rolls back: the lease stands and the ack succeeds
SELECT jq.jq_enqueue('lc', '{"n": "rollback"}') AS cb \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('lc') \gset
BEGIN;
SELECT jq.jq_cancel(:cb) AS cancel_leased;
ROLLBACK;
SELECT jq.jq_ack(:cb, :tok, '{"ok": true}') AS acked;
SELECT state, result FROM jq.jq_result(:cb);

-- finished jobs cannot be cancelled: false, and they stay as they are
SELECT jq.jq_cancel(:cb) AS cancel_succeeded;
SELECT state, result FROM jq.jq_result(:cb);
SELECT jq.jq_enqueue('lc', '{"n": "dead"}') AS cd \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('lc') \gset
SELECT jq.jq_fail(:cd, :tok, 'broken', permanent => true) AS state;
SELECT jq.jq_cancel(:cd) AS cancel_dead;
SELECT state, last_error FROM jq.jq_result(:cd);
SELECT count(*) AS dead_letters FROM jq.dead_letter WHERE job_id = :cd;
SELECT jq.jq_cancel(987654321) AS cancel_unknown;
SELECT jq.jq_cancel(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS left_in_lc FROM jq.job
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'lc');

/* ---- lease expiry: jq.reclaim_expired_leases() ---- */
SELECT 1 FROM jq.jq_create_queue('expiry', lease_seconds => 30, max_attempts => 2,
                              backoff_base => '1 hour', backoff_cap => '1 hour');
SELECT jq.jq_enqueue('expiry', '{"n": "long"}') AS xl \gset
SELECT jq.jq_enqueue('expiry', '{"n": "short"}') AS xs \gset
SELECT lease_token AS tok_l, lease_expires_at AS exp_l FROM jq.jq_dequeue('expiry') \gset
-- no lease has run out: nothing to reclaim
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT lease_token AS tok_s FROM jq.jq_dequeue('expiry', lease_seconds => 1) \gset
SELECT pg_sleep(1.2);
-- the one-second lease has: the job is ready again at once (no backoff),
-- its attempt counted as failed with the error "lease expired"
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT state, attempts, last_error FROM jq.jq_result(:xs);
SELECT state, run_at <= clock_timestamp() AS due, lease_expires_at, lease_token = :tok_s AS token_kept,
       jsonb_array_length(errors) AS errors, errors -> 0 -> 'attempt' AS attempt,
       errors -> 0 ->> 'error' AS error
  FROM jq.job WHERE id = :xs;
SELECT jq.reclaim_expired_leases() AS reclaimed_again;
-- the unexpired lease is untouched
SELECT state, lease_token = :tok_l AS same_token, lease_expires_at = :'exp_l' AS same_expiry, errors
  FROM jq.job WHERE id = :xl;
-- the old token is refused everywhere, and changes nothing
SELECT jq.jq_ack(:xs, :tok_s) AS old_ack, jq.jq_extend(:xs, :tok_s, 60) AS old_extend,
       jq.jq_fail(:xs, :tok_s, 'late') AS old_fail;
SELECT state, attempt, jsonb_array_length(errors) AS errors FROM jq.job WHERE id = :xs;
-- the next delivery gets a larger token, which works
SELECT lease_token AS tok_s2, attempt FROM jq.jq_dequeue('expiry') \gset
SELECT :attempt AS attempt, :tok_s2 > :tok_s AS token_grew;
SELECT jq.jq_extend(:xs, :tok_s2, 60) IS NOT NULL AS extended;
SELECT jq.jq_ack(:xs, :tok_s, '{"by": "old"}') AS old_ack;
SELECT jq.jq_ack(:xs, :tok_s2, '{"by": "new"}') AS new_ack;
SELECT state, result, attempts, last_error FROM jq.jq_result(:xs);

-- an expired lease on the last attempt is a dead letter (leases are
-- expired by hand from here on: the clock would do the same, slower)
UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 s' WHERE id = :xl;
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT lease_token AS tok_l2, attempt FROM jq.jq_dequeue('expiry') \gset
SELECT :attempt AS last_attempt;
UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 s' WHERE id = :xl;
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT state, attempts, last_error FROM jq.jq_result(:xl);
SELECT count(*) AS in_hot_table FROM jq.job WHERE id = :xl;
SELECT queue, attempts, payload, last_error, lease_token = :tok_l2 AS token_kept,
       jsonb_path_query_array(errors, '$[*].attempt') AS attempts_failed,
       jsonb_path_query_array(errors, '$[*].error') AS errors
  FROM jq.dead_letter WHERE job_id = :xl;
SELECT jq.jq_ack(:xl, :tok_l2) AS old_ack;

-- a cancel-requested job whose lease expires ends cancelled
SELECT jq.jq_enqueue('expiry', '{"n": "cancelled"}') AS xc \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('expiry') \gset
SELECT jq.jq_cancel(:xc) AS cancel_leased;
UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 s' WHERE id = :xc;
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT state, result, attempts, last_error FROM jq.jq_result(:xc);
SELECT count(*) AS in_hot_table FROM jq.job WHERE id = :xc;
SELECT count(*) AS dead_letters FROM jq.dead_letter WHERE job_id = :xc;
SELECT jq.jq_ack(:xc, :tok) AS old_ack;

-- expired but not yet reclaimed: no other worker holds the job, so its
-- worker may still ack it or fail it, and then there is nothing to reclaim
SELECT jq.jq_enqueue('expiry', '{"n": "late ack"}') AS xa \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('expiry') \gset
UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 s' WHERE id = :xa;
SELECT jq.jq_ack(:xa, :tok, '{"late": true}') AS late_ack;
SELECT jq.jq_enqueue('expiry', '{"n": "late fail"}') AS xf \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('expiry') \gset
UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 s' WHERE id = :xf;
SELECT jq.jq_fail(:xf, :tok, 'late failure') AS state;
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT state, result, attempts, last_error FROM jq.jq_result(:xa);
SELECT state, attempts, last_error, (SELECT jsonb_array_length(errors) FROM jq.job WHERE id = :xf) AS errors
  FROM jq.jq_result(:xf);
SELECT jq.jq_cancel(:xf) AS cancel_retry_waiting;

-- max_jobs: at most that many per call, the longest expired first
SELECT cardinality(jq.jq_enqueue_batch('expiry', ARRAY[jsonb_build_object('n', 'm1'),
                                                    jsonb_build_object('n', 'm2'),
                                                    jsonb_build_object('n', 'm3')])) AS jobs;
CREATE TEMP TABLE m AS SELECT payload->>'n' AS n, job_id FROM jq.jq_dequeue('expiry', 3);
UPDATE jq.job j SET lease_expires_at = clock_timestamp() - CASE m.n WHEN 'm1' THEN interval '1 s'
                                                                   WHEN 'm2' THEN interval '3 s'
                                                                   ELSE interval '2 s' END
  FROM m WHERE j.id = m.job_id;
SELECT jq.reclaim_expired_leases(1) AS reclaimed;
SELECT m.n, r.state FROM m, jq.jq_result(m.job_id) r ORDER BY m.n;
SELECT jq.reclaim_expired_leases(1) AS reclaimed;
SELECT m.n, r.state FROM m, jq.jq_result(m.job_id) r ORDER BY m.n;
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT m.n, r.state, r.attempts, r.last_error FROM m, jq.jq_result(m.job_id) r ORDER BY m.n;
SELECT jq.jq_drop_queue('expiry', force => true);
SELECT jq.jq_drop_queue('lc', force => true);
