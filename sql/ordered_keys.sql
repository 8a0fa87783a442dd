--
-- Ordered keys (src/keys.c): a key's jobs one at a time, in enqueue order;
-- a retry holds the key's place, a dead job releases it.  The races are in
-- test/specs/ordered_keys.spec.
--
-- No worker serves this database: the counts that flow control reads are
-- built by hand, as the worker does after a start.
SELECT jq.rebuild_counters();

SELECT 1 FROM jq.jq_create_queue('ord', max_attempts => 4);
SELECT key, ordered, weight FROM jq.jq_set_key_policy('ord', 'conv_a', ordered => true);
SELECT cardinality(jq.jq_enqueue_batch('ord',
         ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5) g),
         keys => array_fill('conv_a'::text, ARRAY[5])));
SELECT cardinality(jq.jq_enqueue_batch('ord',
         ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 3) g),
         keys => array_fill('free'::text, ARRAY[3])));

-- one job of the ordered key in flight, its first; the other key's all
SELECT payload->>'n' AS n, key FROM jq.jq_dequeue('ord', 10) ORDER BY key, 1;
SELECT key, ready, in_flight, ordered, held_back FROM jq.key_stats
 WHERE queue = 'ord' ORDER BY key;
SELECT count(*) AS none FROM jq.jq_dequeue('ord', 10);

-- helpers: the ordered key's job in flight, and ending it
CREATE FUNCTION pg_temp.leased(k text) RETURNS TABLE (id bigint, token bigint, n text, attempt int)
LANGUAGE sql AS $$
    SELECT id, lease_token, payload->>'n', attempt FROM jq.job
     WHERE queue_id = jq.queue_id('ord') AND key = k AND state = 'l'
$$;
CREATE FUNCTION pg_temp.next(k text) RETURNS text
LANGUAGE sql AS $$
    SELECT string_agg(format('%s (attempt %s)', payload->>'n', attempt), ', ')
      FROM jq.jq_dequeue('ord', 10) WHERE key = k
$$;

-- an ack frees the key for its next job, in order
SELECT jq.jq_ack(id, token) FROM pg_temp.leased('conv_a');
SELECT pg_temp.next('conv_a');

-- a failure retried at once is handed out again before the later jobs
SELECT jq.jq_fail(id, token, 'provider timeout', retry_in => '0') FROM pg_temp.leased('conv_a');
SELECT state, run_at = enqueued_at AS in_its_place FROM jq.job
 WHERE key = 'conv_a' AND payload->>'n' = '2';
SELECT pg_temp.next('conv_a');

-- a retry waiting out its backoff holds the key: nothing of it goes
SELECT jq.jq_fail(id, token, 'rate limited', retry_in => '1 hour') FROM pg_temp.leased('conv_a');
SELECT key, ready, scheduled, in_flight, held_back FROM jq.key_stats WHERE key = 'conv_a';
SELECT pg_temp.next('conv_a') AS nothing_while_it_waits;
-- its backoff over, it is promoted back to its place and goes first
UPDATE jq.job SET run_at = clock_timestamp() - interval '1 second'
 WHERE key = 'conv_a' AND state = 's';
SELECT pg_temp.next('conv_a');

-- an expired lease is reclaimed to its place too
UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 second'
 WHERE key = 'conv_a' AND state = 'l';
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT payload->>'n' AS n, state, attempt, run_at = enqueued_at AS in_its_place
  FROM jq.job WHERE key = 'conv_a' ORDER BY id;

-- its fourth attempt is its last: dead, it releases the key for the next job
SELECT pg_temp.next('conv_a');
SELECT jq.jq_fail(id, token, 'still failing') FROM pg_temp.leased('conv_a');
SELECT pg_temp.next('conv_a');
SELECT jq.jq_fail(id, token, 'bad input', permanent => true) FROM pg_temp.leased('conv_a');
SELECT pg_temp.next('conv_a');

SELECT jq.jq_ack(id, token) FROM pg_temp.leased('conv_a');
-- a transaction's snapshot may be older than the key's next job: refused
BEGIN ISOLATION LEVEL REPEATABLE READ;
\set SHOW_CONTEXT never
SELECT count(*) FROM jq.jq_dequeue('ord', 10);
\set SHOW_CONTEXT errors
ROLLBACK;
-- a rolled-back dequeue gives the job back, and it is still next
BEGIN;
SELECT pg_temp.next('conv_a');
ROLLBACK;
SELECT pg_temp.next('conv_a');
SELECT jq.jq_ack(id, token) FROM pg_temp.leased('conv_a');
SELECT count(*) AS conv_a_left FROM jq.job WHERE key = 'conv_a';

-- jobs of an ordered key take no priority or run_at of their own
\set SHOW_CONTEXT never
SELECT jq.jq_enqueue('ord', '{}', key => 'conv_a', priority => 5);
SELECT jq.jq_enqueue('ord', '{}', key => 'conv_a', run_at => now() + interval '1 minute');
SELECT jq.jq_enqueue_batch('ord', ARRAY['{}', '{}']::jsonb[], priority => -1,
                           keys => ARRAY['free', 'conv_a']);
\set SHOW_CONTEXT errors
SELECT count(*) AS nothing_enqueued FROM jq.job WHERE queue_id = jq.queue_id('ord') AND state <> 'l';

-- the queue's default: every key ordered, and the jobs without a key too;
-- a key's own policy says otherwise
SELECT jq.jq_ack(id, token) FROM pg_temp.leased('free');
SELECT key_ordered FROM jq.jq_alter_queue('ord', key_ordered => true);
SELECT key, ordered FROM jq.jq_set_key_policy('ord', 'free', ordered => false);
SELECT cardinality(jq.jq_enqueue_batch('ord',
         ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 9) g),
         keys => ARRAY['x', 'x', 'x', 'free', 'free', 'free', NULL, NULL, NULL]));
SELECT payload->>'n' AS n, key FROM jq.jq_dequeue('ord', 10) ORDER BY key, 1;
SELECT key, ordered, held_back FROM jq.key_stats WHERE queue = 'ord' ORDER BY key;
\set SHOW_CONTEXT never
SELECT jq.jq_enqueue('ord', '{}', priority => 1);
\set SHOW_CONTEXT errors
-- clear_limits gives the key back to the queue's default
SELECT key, ordered FROM jq.jq_set_key_policy('ord', 'free', clear_limits => true);
SELECT key, ordered FROM jq.key_stats WHERE key = 'free';
SELECT jq.jq_drop_queue('ord', force => true);

-- enqueue order across producers' transactions, and fair share among
-- ordered keys: each gets its turn, one job at a time
SELECT 1 FROM jq.jq_create_queue('ord2', fair => true, key_ordered => true);
SELECT cardinality(jq.jq_enqueue_batch('ord2',
         ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 10) g),
         keys => ARRAY(SELECT 'k' || (g % 3) FROM generate_series(1, 10) g)));
SELECT cardinality(jq.jq_enqueue_batch('ord2',
         ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(11, 20) g),
         keys => ARRAY(SELECT 'k' || (g % 3) FROM generate_series(11, 20) g)));
CREATE TEMP TABLE delivered (round int, key text, n int);
DO $$
DECLARE
    round int := 0;
    n int;
BEGIN
    LOOP
        round := round + 1;
        INSERT INTO delivered
        SELECT round, d.key, (d.payload->>'n')::int FROM jq.jq_dequeue('ord2', 10) d;
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM jq.jq_ack(j.id, j.lease_token)
           FROM jq.job j WHERE j.queue_id = jq.queue_id('ord2') AND j.state = 'l';
        COMMIT;     -- slots free when the acks commit
        EXIT WHEN n = 0 OR round > 30;
    END LOOP;
END
$$;
-- three keys, one job each per dequeue
SELECT round, count(*) AS jobs, count(DISTINCT key) AS keys
  FROM delivered GROUP BY round ORDER BY round;
-- each key's jobs in enqueue order
SELECT key, string_agg(n::text, ' ' ORDER BY round) AS order_delivered,
       array_agg(n ORDER BY round) = array_agg(n ORDER BY n) AS in_order
  FROM delivered GROUP BY key ORDER BY key;
SELECT jq.jq_drop_queue('ord2', force => true);
