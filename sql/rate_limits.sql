--
-- Rate limits (src/keys.c): token buckets of requests and cost per period,
-- per queue and per key; a throttled key blocks no other; a job's cost is
-- taken as it is leased, given back by a rollback, settled by its ack's
-- usage report; a job that could never fit is refused at enqueue.  The
-- race of concurrent dequeuers is in test/specs/rate_limits.spec; the
-- measured window under load in test/t/025_rate_limits.pl.
--
-- A bucket fills from empty since the counts began (src/keys.c): after
-- the rebuild below, a wait of one period (2 s here) gives every bucket a
-- full budget.
SELECT jq.rebuild_counters();
SELECT pg_sleep(2.1);

-- requests: 5 per 2 seconds, not one more
SELECT name FROM jq.jq_create_queue('rl', rate_requests => 5, rate_period => '2 seconds');
SELECT count(jq.jq_enqueue('rl', '{}')) FROM generate_series(1, 30);
SELECT count(*) AS first_period FROM jq.jq_dequeue('rl', 100);
SELECT count(*) AS right_after FROM jq.jq_dequeue('rl', 100);
SELECT pg_sleep(1);
SELECT count(*) BETWEEN 2 AND 4 AS half_a_budget_half_a_period_later FROM jq.jq_dequeue('rl', 100);
-- a rolled-back dequeue gives its budget back
SELECT pg_sleep(2.05);
BEGIN;
SELECT count(*) AS taken FROM jq.jq_dequeue('rl', 100);
ROLLBACK;
SELECT count(*) AS again FROM jq.jq_dequeue('rl', 100);

-- cost: 100 per 2 seconds; jobs of 30 go three at a time
SELECT name FROM jq.jq_create_queue('rc', rate_cost => 100, rate_period => '2 seconds');
SELECT count(jq.jq_enqueue('rc', '{}', cost => 30)) FROM generate_series(1, 10);
SELECT count(*) AS cost_30_each FROM jq.jq_dequeue('rc', 100);
-- their acks report a cost of 0: the 90 taken come back, three more go
SELECT count(jq.jq_ack(id, lease_token, NULL, '{"cost": 0}'))
  FROM jq.job WHERE queue_id = jq.queue_id('rc') AND state = 'l';
SELECT count(*) AS after_settling FROM jq.jq_dequeue('rc', 100);
-- a report above the estimate takes the difference: the bucket owes it
SELECT count(jq.jq_ack(id, lease_token, NULL, '{"cost": 60}'))
  FROM jq.job WHERE queue_id = jq.queue_id('rc') AND state = 'l';
SELECT count(*) AS in_debt FROM jq.jq_dequeue('rc', 100);

-- per key: a throttled key holds back no other key
SELECT name FROM jq.jq_create_queue('rk', fair => true);
SELECT rate_requests, rate_period FROM jq.jq_set_key_policy('rk', 'slow', rate_requests => 2,
                                                          rate_period => '2 seconds');
SELECT count(jq.jq_enqueue('rk', '{}', key => k))
  FROM generate_series(1, 10), unnest(ARRAY['slow', 'fast']) k;
SELECT key, count(*) FROM jq.jq_dequeue('rk', 100) GROUP BY key ORDER BY key;
SELECT key, rate_requests, requests_left, throttled_for IS NOT NULL AS throttled, held_back
  FROM jq.key_stats WHERE queue = 'rk' ORDER BY key;

-- a job that could never fit its budget is refused, whole batch and all
SELECT 1 FROM jq.jq_set_key_policy('rk', 'tokens', rate_cost => 1000);
\set SHOW_CONTEXT never
SELECT jq.jq_enqueue('rk', '{}', key => 'tokens', cost => 1001);
SELECT jq.jq_enqueue_batch('rk', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['tokens', 'tokens'],
                           costs => ARRAY[5, 5000]);
SELECT jq.jq_enqueue('rc', '{}', cost => 101);
-- bad settings
SELECT jq.jq_alter_queue('rl', rate_requests => 0);
SELECT jq.jq_alter_queue('rl', rate_cost => -1);
SELECT jq.jq_alter_queue('rl', rate_period => '0.5 seconds');
SELECT jq.jq_alter_queue('rl', rate_period => '2 days');
SELECT jq.jq_set_key_policy('rk', 'slow', rate_cost => 'NaN');
\set SHOW_CONTEXT errors
-- clear_limits removes them
SELECT rate_requests, rate_cost FROM jq.jq_alter_queue('rl', clear_limits => true);
SELECT jq.jq_drop_queue(q, force => true) FROM unnest(ARRAY['rl', 'rc', 'rk']) q;
