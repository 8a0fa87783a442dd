--
-- Job keys and flow control (src/keys.c): keys on jobs, concurrency and
-- admission limits, weighted fair share, policies and jq.key_stats.  The
-- races are in test/specs/key_limits.spec; crashes and restarts in
-- test/t/021_keys_restart.pl.
--
-- No worker serves this database: the counts that flow control reads are
-- built by hand, as the worker does after a start.
SELECT jq.rebuild_counters();

-- a key travels with its job: jq_dequeue and jq_result return it
SELECT 1 FROM jq.jq_create_queue('keys');
SELECT jq.jq_enqueue('keys', '{"n": 1}', key => 'team_a') > 0 AS enqueued;
SELECT cardinality(jq.jq_enqueue_batch('keys', ARRAY['{"n": 2}', '{"n": 3}', '{"n": 4}']::jsonb[],
                                       keys => ARRAY['team_b', NULL, 'team_a']));
SELECT payload->>'n' AS n, key FROM jq.jq_dequeue('keys', 10) ORDER BY 1;
SELECT r.key, r.state FROM jq.job j, jq.jq_result(j.id) r
 WHERE j.queue_id = jq.queue_id('keys') ORDER BY j.id;
SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token, NULL)) AS acked
  FROM (SELECT id AS job_id, lease_token FROM jq.job WHERE queue_id = jq.queue_id('keys')) l;
-- the key stays with the result
SELECT r.key, r.state FROM jq.job_result j, jq.jq_result(j.job_id) r
 WHERE j.queue_id = jq.queue_id('keys') ORDER BY j.job_id;

-- without limits or fair share, keys are served in the queue's order
-- (priority, then time): as if they had none
SELECT cardinality(jq.jq_enqueue_batch('keys', ARRAY['{"n": 5}', '{"n": 6}']::jsonb[],
                                       keys => ARRAY['team_b', 'team_b']));
SELECT jq.jq_enqueue('keys', '{"n": 7}', key => 'team_a', priority => 5) > 0 AS urgent;
SELECT jq.jq_enqueue('keys', '{"n": 8}') > 0 AS keyless;
SELECT payload->>'n' AS n, key, priority FROM jq.jq_dequeue('keys', 10);

-- jq.key_stats: per key, from shared memory; key NULL is the jobs without one
SELECT key, ready, scheduled, in_flight, max_in_flight, weight, max_queued,
       delivered_total, succeeded_total, held_back, has_policy
  FROM jq.key_stats WHERE queue = 'keys' ORDER BY key NULLS FIRST;

/*
 * Concurrency limits.  A queue-wide max_in_flight (the endpoint's
 * capacity) and per-key limits: the key's policy, or the queue's
 * key_max_in_flight.  A slot frees when the lease's end commits.
 */
SELECT 1 FROM jq.jq_create_queue('endpoint', max_in_flight => 5, key_max_in_flight => 2);
SELECT 1 FROM jq.jq_set_key_policy('endpoint', 'big', max_in_flight => 3);
SELECT cardinality(jq.jq_enqueue_batch('endpoint', array_fill('{}'::jsonb, ARRAY[10]),
                                       keys => array_fill('big'::text, ARRAY[10])));
SELECT cardinality(jq.jq_enqueue_batch('endpoint', array_fill('{}'::jsonb, ARRAY[10]),
                                       keys => array_fill('small'::text, ARRAY[10])));
CREATE TEMP TABLE held AS SELECT job_id, lease_token, key FROM jq.jq_dequeue('endpoint', 10);
-- big up to its own 3, small up to the queue default of 2: 5, the queue's limit
SELECT key, count(*) FROM held GROUP BY 1 ORDER BY 1;
SELECT count(*) AS more FROM jq.jq_dequeue('endpoint', 10);
SELECT key, ready, in_flight, max_in_flight, held_back FROM jq.key_stats
 WHERE queue = 'endpoint' ORDER BY key;
SELECT in_flight, max_in_flight FROM jq.queue_stats WHERE queue = 'endpoint';

-- an ack frees its slot when it commits: not before
BEGIN;
SELECT jq.jq_ack(job_id, lease_token, NULL) FROM held WHERE key = 'small' LIMIT 1;
SELECT count(*) AS before_commit FROM jq.jq_dequeue('endpoint', 10);
COMMIT;
SELECT key FROM jq.jq_dequeue('endpoint', 10);
-- a dequeue that rolls back gives its slot back
BEGIN;
SELECT jq.jq_fail(job_id, lease_token, 'give it back', retry_in => '0') FROM held
 WHERE key = 'big' LIMIT 1;
COMMIT;
BEGIN;
SELECT key FROM jq.jq_dequeue('endpoint', 10);
ROLLBACK;
SELECT key FROM jq.jq_dequeue('endpoint', 10);
-- without the queue's limit, big stays at its own 3 and small, whose
-- default limit went too, takes the rest
SELECT 1 FROM jq.jq_alter_queue('endpoint', clear_limits => true);
SELECT key, count(*) FROM jq.jq_dequeue('endpoint', 10) GROUP BY 1 ORDER BY 1;
SELECT key, in_flight, max_in_flight FROM jq.key_stats WHERE queue = 'endpoint' ORDER BY key;

-- a job without a key follows the queue's defaults too
SELECT 1 FROM jq.jq_create_queue('plain_limit', max_in_flight => 2);
SELECT cardinality(jq.jq_enqueue_batch('plain_limit', array_fill('{}'::jsonb, ARRAY[5])));
SELECT count(*) FROM jq.jq_dequeue('plain_limit', 5);
SELECT count(*) FROM jq.jq_dequeue('plain_limit', 5);

/*
 * Admission limits: a key's ready and scheduled jobs (not leased ones)
 * against its max_queued.  The enqueue that would exceed it fails whole
 * with PJ001, in the producer's transaction.
 */
SELECT 1 FROM jq.jq_create_queue('admit', key_max_queued => 3);
SELECT 1 FROM jq.jq_set_key_policy('admit', 'vip', max_queued => 5);
SELECT cardinality(jq.jq_enqueue_batch('admit', array_fill('{}'::jsonb, ARRAY[3]),
                                       keys => array_fill('team'::text, ARRAY[3])));
SELECT jq.jq_enqueue('admit', '{}', key => 'team');
-- pgjq's own SQLSTATE, for producers to back off on
DO $$
BEGIN
    PERFORM jq.jq_enqueue('admit', '{}', key => 'team');
EXCEPTION WHEN SQLSTATE 'PJ001' THEN
    RAISE NOTICE 'PJ001, nothing enqueued';
END
$$;
-- a batch that would overfill a key fails whole, other keys' jobs too
SELECT jq.jq_enqueue_batch('admit', ARRAY['{}', '{}', '{}']::jsonb[], keys => ARRAY['other', 'vip', 'team']);
SELECT key, ready FROM jq.key_stats WHERE queue = 'admit' ORDER BY key;
SELECT cardinality(jq.jq_enqueue_batch('admit', array_fill('{}'::jsonb, ARRAY[5]),
                                       keys => array_fill('vip'::text, ARRAY[5])));
-- leased jobs do not count: a dequeue makes room
SELECT count(*) FROM jq.jq_dequeue('admit', 2);
SELECT cardinality(jq.jq_enqueue_batch('admit', array_fill('{}'::jsonb, ARRAY[2]),
                                       keys => array_fill('team'::text, ARRAY[2]))) AS after_dequeue;
-- scheduled jobs count; an idempotent resubmission adds nothing
SELECT jq.jq_enqueue('admit', '{}', key => 'later', run_at => now() + interval '1 hour',
                     idempotency_key => 'once') > 0 AS scheduled;
SELECT 1 FROM jq.jq_set_key_policy('admit', 'later', max_queued => 1);
SELECT jq.jq_enqueue('admit', '{}', key => 'later', idempotency_key => 'once') > 0 AS resubmitted;
SELECT jq.jq_enqueue('admit', '{}', key => 'later');
-- jobs without a key share the default key, with the queue's default limit
SELECT cardinality(jq.jq_enqueue_batch('admit', array_fill('{}'::jsonb, ARRAY[3])));
SELECT jq.jq_enqueue('admit', '{}');

/*
 * Weighted fair share (fair => true): keys with jobs waiting share the
 * deliveries by weight; a key alone gets them all; a key that arrives
 * behind a deep backlog gets its first job at once; priority stays
 * absolute across keys.
 */
SELECT 1 FROM jq.jq_create_queue('fair', fair => true);
SELECT 1 FROM jq.jq_set_key_policy('fair', 'heavy', weight => 3);
SELECT cardinality(jq.jq_enqueue_batch('fair', array_fill('{}'::jsonb, ARRAY[400]),
                                       keys => array_fill('light'::text, ARRAY[400])));
-- alone, light gets every delivery
SELECT key, count(*) FROM jq.jq_dequeue('fair', 20) GROUP BY 1;
SELECT cardinality(jq.jq_enqueue_batch('fair', array_fill('{}'::jsonb, ARRAY[400]),
                                       keys => array_fill('heavy'::text, ARRAY[400])));
-- heavy arrived behind 380 jobs of light: its first job comes at once
SELECT key FROM jq.jq_dequeue('fair', 1);
-- then 3 for 1, batch after batch
SELECT key, count(*) FROM jq.jq_dequeue('fair', 100) GROUP BY 1 ORDER BY 1;
SELECT key, count(*) FROM jq.jq_dequeue('fair', 100) GROUP BY 1 ORDER BY 1;
-- a third key, weight 2, backlogged too: 1 : 3 : 2
SELECT 1 FROM jq.jq_set_key_policy('fair', 'mid', weight => 2);
SELECT cardinality(jq.jq_enqueue_batch('fair', array_fill('{}'::jsonb, ARRAY[300]),
                                       keys => array_fill('mid'::text, ARRAY[300])));
SELECT key, count(*) FROM jq.jq_dequeue('fair', 120) GROUP BY 1 ORDER BY 1;
-- an urgent job of any key goes first
SELECT jq.jq_enqueue('fair', '{"urgent": true}', key => 'light', priority => 10) > 0 AS urgent;
SELECT key, priority FROM jq.jq_dequeue('fair', 1);
-- weights change at the next dequeue
SELECT 1 FROM jq.jq_set_key_policy('fair', 'heavy', weight => 1);
SELECT 1 FROM jq.jq_reset_key_policy('fair', 'mid');
SELECT key, count(*) FROM jq.jq_dequeue('fair', 90) GROUP BY 1 ORDER BY 1;
-- fair share off: back to the queue's order, oldest first
SELECT 1 FROM jq.jq_alter_queue('fair', fair => false);
SELECT key, count(*) FROM jq.jq_dequeue('fair', 30) GROUP BY 1 ORDER BY 1;

/*
 * Policies: jq.key_policy lists them (set before any job is fine);
 * jq_reset_key_policy removes one or all of a queue's.
 */
SELECT queue_id = jq.queue_id('fair') AS fair_queue, key, weight, max_in_flight, max_queued
  FROM jq.key_policy ORDER BY queue_id, key;
SELECT 1 FROM jq.jq_set_key_policy('fair', 'nobody_yet', weight => 7, max_in_flight => 1);
SELECT key, weight, max_in_flight, has_policy FROM jq.key_stats
 WHERE queue = 'fair' AND key = 'nobody_yet';
-- NULL leaves a setting as it is; clear_limits removes the key's own limits
SELECT weight, max_in_flight, max_queued
  FROM jq.jq_set_key_policy('fair', 'nobody_yet', max_queued => 9);
SELECT weight, max_in_flight, max_queued
  FROM jq.jq_set_key_policy('fair', 'nobody_yet', clear_limits => true);
SELECT jq.jq_reset_key_policy('fair', 'nobody_yet');
SELECT jq.jq_reset_key_policy('fair', 'nobody_yet');
SELECT jq.jq_reset_key_policy('fair');
SELECT count(*) AS policies_left FROM jq.key_policy WHERE queue_id = jq.queue_id('fair');

-- bad input
\set SHOW_CONTEXT never
SELECT jq.jq_enqueue('keys', '{}', key => '');
SELECT jq.jq_enqueue('keys', '{}', key => repeat('k', 129));
SELECT jq.jq_enqueue_batch('keys', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['a']);
SELECT jq.jq_enqueue_batch('keys', ARRAY['{}']::jsonb[], keys => ARRAY[['a']]);
SELECT jq.jq_enqueue_batch('keys', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['a', '']);
SELECT jq.jq_set_key_policy('keys', NULL, weight => 2);
SELECT jq.jq_set_key_policy('keys', 'a', weight => 0);
SELECT jq.jq_set_key_policy('keys', 'a', weight => 10001);
SELECT jq.jq_set_key_policy('keys', 'a', max_in_flight => -1);
SELECT jq.jq_set_key_policy('keys', 'a', max_queued => 0);
SELECT jq.jq_set_key_policy('no_such_queue', 'a');
SELECT jq.jq_reset_key_policy('no_such_queue');
SELECT jq.jq_alter_queue('keys', max_in_flight => 0);
SELECT jq.jq_alter_queue('keys', key_max_queued => -5);
UPDATE jq.queue SET fair = NULL WHERE name = 'keys';
\set SHOW_CONTEXT errors

-- dropping a queue drops its policies, and its keys leave jq.key_stats
SELECT 1 FROM jq.jq_set_key_policy('keys', 'kept?', weight => 2);
SELECT jq.jq_drop_queue('keys', force => true);
SELECT count(*) AS policies FROM jq.key_policy p
 WHERE NOT EXISTS (SELECT FROM jq.queue q WHERE q.queue_id = p.queue_id);
SELECT count(*) AS stats_rows FROM jq.key_stats WHERE queue = 'keys';
