-- fail: a failed attempt is retried after an exponential backoff with full
-- jitter, or at retry_in; the last attempt, or a permanent failure, moves
-- the job to the dead letters with every error; jq_redrive moves dead
-- letters back.  Times are checked against the clock read just before and
-- just after each call (:t0 and :t1), never printed.
\set SHOW_CONTEXT never
SELECT 1 FROM jq.jq_create_queue('flaky', max_attempts => 3,
                              backoff_base => '1 hour', backoff_cap => '1 day');
SELECT jq.jq_enqueue('flaky', '{"n": 1}', priority => 5) AS j \gset
SELECT enqueued_at AS enq FROM jq.jq_result(:j) \gset

-- attempt 1 fails: retried later, after a backoff within [0, backoff_base]
SELECT lease_token AS tok1, attempt FROM jq.jq_dequeue('flaky') \gset
SELECT :attempt AS attempt;
SELECT clock_timestamp() AS t0 \gset
SELECT jq.jq_fail(:j, :tok1, 'first error') AS state;
SELECT clock_timestamp() AS t1 \gset
SELECT state, run_at >= :'t0' AND run_at <= :'t1'::timestamptz + interval '1 hour' AS within_backoff,
       attempts, last_error, result, finished_at
  FROM jq.jq_result(:j);
-- the job's lease is gone, its error is kept with its attempt and time
SELECT state, lease_expires_at, lease_token = :tok1 AS token_kept,
       jsonb_array_length(errors) AS errors, errors -> 0 ->> 'error' AS error,
       errors -> 0 -> 'attempt' AS attempt,
       (errors -> 0 ->> 'at')::timestamptz BETWEEN :'t0' AND :'t1' AS at_fail_time
  FROM jq.job WHERE id = :j;
-- it is not handed out before its time
SELECT count(*) AS dequeued_early FROM jq.jq_dequeue('flaky');
-- the old lease is over: failing or acking with it again changes nothing
SELECT jq.jq_fail(:j, :tok1, 'late duplicate') AS fail_again;
SELECT jq.jq_ack(:j, :tok1) AS ack_after_fail;
SELECT jsonb_array_length(errors) AS errors, state FROM jq.job WHERE id = :j;

-- attempt 2 (its time has come: moved here by hand, as the clock would)
UPDATE jq.job SET run_at = clock_timestamp(), state = 'r' WHERE id = :j;
SELECT lease_token AS tok2, attempt FROM jq.jq_dequeue('flaky') \gset
SELECT :attempt AS attempt, :tok2 > :tok1 AS token_grew;
-- a stale token (the first delivery's) is refused and changes nothing
SELECT lease_expires_at AS exp2 FROM jq.job WHERE id = :j \gset
SELECT jq.jq_fail(:j, :tok1, 'stale worker') AS stale_fail;
SELECT jq.jq_fail(:j, :tok2 + 1, 'wrong token') AS wrong_token;
SELECT state, lease_token = :tok2 AS same_lease, lease_expires_at = :'exp2' AS same_expiry,
       jsonb_array_length(errors) AS errors
  FROM jq.job WHERE id = :j;
-- retry_in overrides the backoff: run_at is the failure time + retry_in
SELECT clock_timestamp() AS t0 \gset
SELECT jq.jq_fail(:j, :tok2, 'second error', retry_in => '10 minutes') AS state;
SELECT clock_timestamp() AS t1 \gset
SELECT state, run_at BETWEEN :'t0'::timestamptz + interval '10 minutes'
                         AND :'t1'::timestamptz + interval '10 minutes' AS at_retry_in,
       attempts, last_error
  FROM jq.jq_result(:j);

-- attempt 3 is the last (max_attempts 3): its failure dead-letters the job,
-- whatever retry_in says
UPDATE jq.job SET run_at = clock_timestamp(), state = 'r' WHERE id = :j;
SELECT lease_token AS tok3, attempt FROM jq.jq_dequeue('flaky') \gset
SELECT :attempt AS attempt;
SELECT clock_timestamp() AS t0 \gset
SELECT jq.jq_fail(:j, :tok3, 'third error', retry_in => '1 second') AS state;
SELECT clock_timestamp() AS t1 \gset
-- the job left the hot table
SELECT count(*) AS in_hot_table FROM jq.job WHERE id = :j;
-- the dead letter has everything an operator needs, and all the errors
SELECT queue, queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'flaky') AS queue_id_ok,
       priority, attempts, payload, last_error, lease_token = :tok3 AS token_kept,
       enqueued_at = :'enq' AS enqueued_at_kept,
       failed_at BETWEEN :'t0' AND :'t1' AS failed_at_ok,
       jsonb_array_length(errors) AS errors
  FROM jq.dead_letter WHERE job_id = :j;
SELECT e.ord, e.err ->> 'attempt' AS attempt, e.err ->> 'error' AS error,
       (e.err ->> 'at')::timestamptz <= d.failed_at AS at_before_failure,
       (e.err ->> 'at')::timestamptz > lag((e.err ->> 'at')::timestamptz) OVER (ORDER BY e.ord)
           AS after_previous,
       (e.err ->> 'at')::timestamptz = d.failed_at AS at_failure
  FROM jq.dead_letter d, jsonb_array_elements(d.errors) WITH ORDINALITY AS e(err, ord)
 WHERE d.job_id = :j
 ORDER BY e.ord;
SELECT state, last_error, attempts, priority, result, queue,
       enqueued_at = :'enq' AS enqueued_at_kept, finished_at BETWEEN :'t0' AND :'t1' AS finished_at_ok
  FROM jq.jq_result(:j);
-- a dead job's lease is over
SELECT jq.jq_fail(:j, :tok3, 'again') AS fail_dead, jq.jq_ack(:j, :tok3) AS ack_dead;
SELECT count(*) AS dequeued FROM jq.jq_dequeue('flaky');
SELECT count(*) AS dead_letters FROM jq.dead_letter WHERE job_id = :j;

-- retry_in => '0': ready at once, and the next dequeue gets it
SELECT jq.jq_enqueue('flaky', '{"n": 2}') AS j2 \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('flaky') \gset
SELECT jq.jq_fail(:j2, :tok, 'try again now', retry_in => '0') AS state;
SELECT state, attempts, last_error FROM jq.jq_result(:j2);
SELECT job_id = :j2 AS same_job, lease_token AS tok, attempt FROM jq.jq_dequeue('flaky') \gset
SELECT :'same_job'::boolean AS same_job, :attempt AS attempt;
SELECT jq.jq_ack(:j2, :tok) AS acked;
-- a short retry_in: the job is scheduled, and dequeue promotes it when due
SELECT jq.jq_enqueue('flaky', '{"n": 2.5}') AS j25 \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('flaky') \gset
SELECT jq.jq_fail(:j25, :tok, 'try again soon', retry_in => '1 s') AS state;
SELECT count(*) AS dequeued_early FROM jq.jq_dequeue('flaky');
SELECT pg_sleep(1.2);
SELECT job_id = :j25 AS same_job, lease_token AS tok, attempt FROM jq.jq_dequeue('flaky') \gset
SELECT :'same_job'::boolean AS same_job, :attempt AS attempt;
SELECT jq.jq_ack(:j25, :tok) AS acked;

-- permanent => true: dead at once on attempt 1, with its one error
SELECT jq.jq_enqueue('flaky', '{"n": 3}') AS j3 \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('flaky') \gset
SELECT jq.jq_fail(:j3, :tok, 'bad input', permanent => true) AS state;
SELECT state, attempts, last_error FROM jq.jq_result(:j3);
SELECT attempts, payload, last_error, errors -> 0 ->> 'attempt' AS attempt,
       jsonb_array_length(errors) AS errors
  FROM jq.dead_letter WHERE job_id = :j3;

-- jq_fail after a successful ack: NULL, the job stays succeeded
SELECT jq.jq_enqueue('flaky', '{"n": 5}') AS j5 \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('flaky') \gset
SELECT jq.jq_ack(:j5, :tok, '{"ok": true}') AS acked;
SELECT jq.jq_fail(:j5, :tok, 'too late') AS fail_after_ack;
SELECT state, result, last_error FROM jq.jq_result(:j5);

-- a failure that rolls back leaves the job leased
SELECT jq.jq_enqueue('flaky', '{"n": 6}') AS j6 \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('flaky') \gset
BEGIN;
SELECT jq.jq_fail(:j6, :tok, 'rolled back', permanent => true) AS state;
ROLLBACK;
SELECT state, attempts, last_error FROM jq.jq_result(:j6);
SELECT count(*) AS dead_letters FROM jq.dead_letter WHERE job_id = :j6;

-- bad arguments
SELECT jq.jq_fail(:j6, :tok, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_fail(NULL, :tok, 'e');
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_fail(:j6, NULL, 'e');
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_fail(:j6, :tok, 'e', retry_in => '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_fail(:j6, :tok, 'e', retry_in => '1 mon -31 days');
\echo :LAST_ERROR_SQLSTATE
-- the argument checks come before the token check
SELECT jq.jq_fail(:j6, :tok + 1, NULL);
\echo :LAST_ERROR_SQLSTATE
-- none of them touched the job
SELECT state, attempts, last_error FROM jq.jq_result(:j6);
-- an unknown job: NULL, not an error
SELECT jq.jq_fail(987654321, 1, 'nobody') AS unknown_job;

-- error text: kept whole up to 8192 bytes, longer ones truncated with a mark
SELECT jq.jq_fail(:j6, :tok, repeat('x', 8192), retry_in => '0') AS state;
SELECT octet_length(errors -> -1 ->> 'error') AS kept_bytes FROM jq.job WHERE id = :j6;
SELECT lease_token AS tok FROM jq.jq_dequeue('flaky') \gset
SELECT jq.jq_fail(:j6, :tok, repeat('y', 100000), retry_in => '0') AS state;
SELECT octet_length(e) <= 8192 AS bounded, left(e, 3) AS starts, right(e, 11) AS ends
  FROM (SELECT errors -> -1 ->> 'error' AS e FROM jq.job WHERE id = :j6) s;
SELECT octet_length(last_error) <= 8192 AS bounded, right(last_error, 11) AS ends
  FROM jq.jq_result(:j6);
-- an empty error is allowed (it is not NULL); the last attempt dead-letters
SELECT lease_token AS tok FROM jq.jq_dequeue('flaky') \gset
SELECT jq.jq_fail(:j6, :tok, '') AS state;
SELECT attempts, last_error = '' AS empty_error, jsonb_array_length(errors) AS errors
  FROM jq.dead_letter WHERE job_id = :j6;
-- permanent => false (or NULL) is an ordinary failure (last in this queue:
-- its backoff may run out while the test goes on)
SELECT jq.jq_enqueue('flaky', '{"n": 4}') AS j4 \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('flaky') \gset
SELECT jq.jq_fail(:j4, :tok, 'transient', permanent => NULL) AS state;
SELECT state, attempts, last_error FROM jq.jq_result(:j4);

-- redrive: dead letters go back to ready under the same id, with fresh
-- attempts; the error history and the token's delivery count are kept
SELECT 1 FROM jq.jq_create_queue('fragile', max_attempts => 1);
SELECT 1 FROM jq.jq_create_queue('fragile_other', max_attempts => 1);
SELECT cardinality(jq.jq_enqueue_batch('fragile', ARRAY[jsonb_build_object('n', 'a'),
                                                     jsonb_build_object('n', 'b'),
                                                     jsonb_build_object('n', 'c')],
                                    priority => 7)) AS jobs;
CREATE TEMP TABLE fragile AS
SELECT payload->>'n' AS n, job_id, lease_token, NULL::text AS state
  FROM jq.jq_dequeue('fragile', 10);
UPDATE fragile SET state = jq.jq_fail(job_id, lease_token, 'failed ' || n);
SELECT n, state FROM fragile ORDER BY n;
SELECT jq.jq_enqueue('fragile_other', '{"n": "other"}') AS other \gset
SELECT lease_token AS tok FROM jq.jq_dequeue('fragile_other') \gset
SELECT jq.jq_fail(:other, :tok, 'failed other') AS state;
SELECT queue, count(*) FROM jq.dead_letter WHERE queue LIKE 'fragile%' GROUP BY 1 ORDER BY 1;
SELECT max(lease_token) AS max_tok FROM fragile \gset
SELECT job_id AS ja FROM fragile WHERE n = 'a' \gset

-- only the listed ids move; ids of another queue and unknown ids do not count
SELECT jq.jq_redrive('fragile', job_ids => ARRAY[:ja, :other, 987654321]) AS moved;
SELECT f.n, r.state, r.attempts, r.last_error, r.priority
  FROM fragile f, jq.jq_result(f.job_id) r ORDER BY f.n;
SELECT state, attempts, last_error FROM jq.jq_result(:other);
-- the job is back in the hot table, its dead letter gone
SELECT state, attempt, lease_expires_at, priority, payload, jsonb_array_length(errors) AS errors
  FROM jq.job WHERE id = :ja;
SELECT count(*) AS dead_letters FROM jq.dead_letter WHERE job_id = :ja;
-- it runs again: a larger token than any before, attempt 1, and it succeeds
SELECT job_id = :ja AS same_id, lease_token AS tok, attempt, priority, payload
  FROM jq.jq_dequeue('fragile') \gset
SELECT :'same_id'::boolean AS same_id, :attempt AS attempt, :priority AS priority, :'payload' AS payload,
       :tok > :max_tok AS token_larger_than_before, (:tok >> 32) AS deliveries;
SELECT jq.jq_ack(:ja, :tok, '{"second": "time lucky"}') AS acked;
SELECT state, result, attempts FROM jq.jq_result(:ja);

-- redrive of the whole queue: the rest of its dead letters
SELECT jq.jq_redrive('fragile') AS moved;
SELECT f.n, r.state, r.attempts FROM fragile f, jq.jq_result(f.job_id) r ORDER BY f.n;
SELECT jq.jq_redrive('fragile') AS moved_again;
-- the other queue's dead letter stayed
SELECT queue, count(*) FROM jq.dead_letter WHERE queue LIKE 'fragile%' GROUP BY 1 ORDER BY 1;
-- a redriven job that fails again is dead again with its whole history:
-- attempts count from 1 again after a redrive
SELECT job_id AS jb, lease_token AS tok FROM jq.jq_dequeue('fragile') \gset
SELECT jq.jq_fail(:jb, :tok, 'failed b again') AS state;
SELECT d.attempts, d.last_error, e.ord, e.err ->> 'attempt' AS attempt, e.err ->> 'error' AS error
  FROM jq.dead_letter d, jsonb_array_elements(d.errors) WITH ORDINALITY AS e(err, ord)
 WHERE d.job_id = :jb ORDER BY e.ord;
-- ids of jobs that are not dead do not count
SELECT jq.jq_redrive('fragile', job_ids => ARRAY[:ja]) AS moved_succeeded;
SELECT jq.jq_redrive('fragile', job_ids => '{}') AS moved_none;
SELECT jq.jq_redrive('nosuch');
\echo :LAST_ERROR_SQLSTATE
SELECT jq.jq_redrive('Bad name');
\echo :LAST_ERROR_SQLSTATE

/*
 * Backoff with full jitter, over 200 jobs: attempt k's delay is uniform in
 * [0, min(backoff_cap, backoff_base * 2^(k-1))], here [0, min(8 s, 2^(k-1) s)].
 * For each attempt every delay must lie in that range, the longest delay
 * must exceed half the bound (which is the previous attempt's bound while
 * below the cap: the delays grow), and the shortest must be under a
 * quarter of the bound (full jitter: delays start near zero).  A correct
 * implementation fails one of these checks with a chance below 10^-20
 * (nine attempts, each check at most 0.75^200).
 */
SELECT 1 FROM jq.jq_create_queue('backoff', max_attempts => 10,
                              backoff_base => '1 s', backoff_cap => '8 s');
SELECT cardinality(jq.jq_enqueue_batch('backoff',
         (SELECT array_agg(jsonb_build_object('i', g)) FROM generate_series(1, 200) g))) AS jobs;
CREATE TEMP TABLE bo (attempt integer, job_id bigint, t0 timestamptz, t1 timestamptz,
                      state text, run_at timestamptz);
-- fail_round() makes every job of the queue due (as the clock would),
-- leases them all and fails each one, noting the clock around each jq_fail;
-- returns how many it failed
CREATE FUNCTION pg_temp.fail_round() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d record;
    t0 timestamptz;
    st text;
    n integer := 0;
BEGIN
    UPDATE jq.job SET run_at = clock_timestamp(), state = 'r'
     WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'backoff');
    FOR d IN SELECT * FROM jq.jq_dequeue('backoff', 1000) LOOP
        t0 := clock_timestamp();
        st := jq.jq_fail(d.job_id, d.lease_token, format('failure %s', d.attempt));
        INSERT INTO bo VALUES (d.attempt, d.job_id, t0, clock_timestamp(), st,
                               (SELECT j.run_at FROM jq.job j WHERE j.id = d.job_id));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
SELECT k AS round, pg_temp.fail_round() AS failed FROM generate_series(1, 9) k;
SELECT attempt, count(*) AS jobs, least(interval '8 s', interval '1 s' * 2 ^ (attempt - 1)) AS bound,
       bool_and(run_at >= t0
                AND run_at - t1 <= least(interval '8 s', interval '1 s' * 2 ^ (attempt - 1)))
           AS all_within_bound,
       max(run_at - t1) > least(interval '8 s', interval '1 s' * 2 ^ (attempt - 1)) / 2
           AS max_over_half,
       min(run_at - t0) < least(interval '8 s', interval '1 s' * 2 ^ (attempt - 1)) / 4
           AS min_under_quarter,
       -- a delay of exactly zero (ready) is a legal draw, if an unlikely one
       bool_and(state IN ('scheduled', 'ready')) AS retried
  FROM bo GROUP BY attempt ORDER BY attempt;
-- every job now has nine errors, one per attempt, each at its failure time
SELECT count(*) AS jobs,
       bool_and(jsonb_array_length(j.errors) = 9) AS nine_errors,
       bool_and(NOT EXISTS (
           SELECT FROM jsonb_array_elements(j.errors) WITH ORDINALITY AS e(err, ord)
             LEFT JOIN bo b ON b.job_id = j.id AND b.attempt = e.ord
            WHERE b.job_id IS NULL
               OR (e.err ->> 'attempt')::integer <> e.ord
               OR e.err ->> 'error' <> format('failure %s', e.ord)
               OR (e.err ->> 'at')::timestamptz NOT BETWEEN b.t0 AND b.t1)) AS errors_in_order
  FROM jq.job j WHERE j.queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'backoff');
-- attempt 10 is the last: every job is dead, with all ten errors
SELECT pg_temp.fail_round() AS failed;
SELECT state, count(*) FROM bo WHERE attempt = 10 GROUP BY state;
SELECT count(*) AS dead_letters, bool_and(attempts = 10) AS ten_attempts,
       bool_and(last_error = 'failure 10') AS last_error_ok,
       bool_and(jsonb_array_length(errors) = 10) AS ten_errors,
       bool_and((SELECT array_agg((e ->> 'attempt')::integer ORDER BY o)
                   FROM jsonb_array_elements(errors) WITH ORDINALITY AS x(e, o))
                = ARRAY[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) AS attempts_1_to_10
  FROM jq.dead_letter WHERE queue = 'backoff';
SELECT count(*) AS left_in_queue FROM jq.job
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'backoff');
SELECT jq.jq_drop_queue('backoff', force => true);

-- retry_in is bounded (a year and a day), so it can never overflow a timestamp
SELECT 1 FROM jq.jq_create_queue('bounds');
SELECT jq.jq_enqueue('bounds', '{}') AS bj \gset
SELECT lease_token AS bt FROM jq.jq_dequeue('bounds') \gset
SELECT jq.jq_fail(:bj, :bt, 'e', retry_in => '367 days');
SELECT jq.jq_fail(:bj, :bt, 'e', retry_in => '178000000 years');
SELECT jq.jq_fail(:bj, :bt, 'e', retry_in => '366 days') AS max_retry_in_ok;

-- long errors are cut by bytes at a character boundary, multibyte text too
SELECT jq.jq_enqueue('bounds', '{}') AS mj \gset
SELECT lease_token AS mt FROM jq.jq_dequeue('bounds') \gset
SELECT jq.jq_fail(:mj, :mt, repeat('é', 100000)) AS failed;
SELECT octet_length(errors -> -1 ->> 'error') <= 8192 AS bounded,
       errors -> -1 ->> 'error' LIKE 'ééé%(truncated)' AS cut_cleanly
  FROM jq.job WHERE id = :mj;
SELECT jq.jq_drop_queue('bounds', force => true);
