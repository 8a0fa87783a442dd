--
-- Costs and usage accounting: a job's cost estimate at enqueue; the usage a
-- worker reports at ack or fail, kept with the result and summed per
-- queue, key and day in jq.usage (reports not rolled up yet included),
-- rolled up exactly once by jq.rollup_usage; a batch's cost so far.
--
SELECT jq.rebuild_counters();
SELECT 1 FROM jq.jq_create_queue('us');
SELECT jq.jq_enqueue('us', '{"copy": 1}', key => 'acme', cost => 900) AS a \gset
SELECT jq.jq_enqueue('us', '{"copy": 2}', key => 'acme') AS b \gset
SELECT cardinality(jq.jq_enqueue_batch('us', ARRAY['{"copy": 3}', '{"copy": 4}']::jsonb[],
                                       keys => ARRAY['globex', NULL], costs => ARRAY[50, NULL]));
SELECT cost FROM jq.jq_result(:a);
SELECT cost FROM jq.jq_result(:b);

CREATE FUNCTION pg_temp.tok(bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT lease_token FROM jq.job WHERE id = $1
$$;
SELECT count(*) FROM jq.jq_dequeue('us', 10);

-- an ack's report: kept with the result; its cost field settles the cost
SELECT jq.jq_ack(:a, pg_temp.tok(:a), '{"score": 0.9}',
                 usage => '{"cost": 812, "input_tokens": 700, "output_tokens": 112, "model": "m1"}');
SELECT state, cost, usage FROM jq.jq_result(:a);
-- without a cost field, the job's estimate (1 by default) is its cost
SELECT jq.jq_ack(:b, pg_temp.tok(:b), NULL, usage => '{"input_tokens": 10}');
SELECT cost, usage FROM jq.jq_result(:b);
-- a failed attempt's report counts too (a report, not a job)
SELECT id AS c FROM jq.job WHERE key = 'globex' \gset
SELECT jq.jq_fail(:c, pg_temp.tok(:c), 'timeout', retry_in => '0',
                  usage => '{"cost": 40, "input_tokens": 40}');
-- an ack without a report records nothing
SELECT jq.jq_ack(id, lease_token) FROM jq.job WHERE queue_id = jq.queue_id('us') AND key IS NULL;

-- per queue, key and day, before the rollup (from the pending reports) ...
SELECT queue, key, day = (now() AT TIME ZONE 'UTC')::date AS today, jobs, reports, cost, usage
  FROM jq.usage WHERE queue = 'us' ORDER BY key;
-- ... and after it: the same, moved once
SELECT jq.rollup_usage() AS moved;
SELECT jq.rollup_usage() AS moved_again;
SELECT count(*) AS pending FROM jq.usage_pending;
SELECT queue, key, jobs, reports, cost, usage FROM jq.usage WHERE queue = 'us' ORDER BY key;
-- later reports add to the day's row
SELECT jq.jq_ack(job_id, lease_token, NULL, '{"cost": 60, "input_tokens": 50}')
  FROM jq.jq_dequeue('us', 10) WHERE key = 'globex';
SELECT jq.rollup_usage() AS moved;
SELECT key, jobs, reports, cost, usage FROM jq.usage WHERE queue = 'us' AND key = 'globex';

-- a batch's cost so far: its succeeded jobs' costs, reported or estimated
SELECT 1 FROM jq.jq_create_queue('us_batch');
SELECT jq.jq_submit_batch('us_batch', ARRAY['{}', '{}', '{}']::jsonb[], costs => ARRAY[5, 7, 11]) AS bid \gset
SELECT array_agg(job_id ORDER BY job_id) AS ids, array_agg(lease_token ORDER BY job_id) AS toks
  FROM jq.jq_dequeue('us_batch', 2) \gset
SELECT acked FROM jq.jq_ack_batch(:'ids', :'toks', NULL,
                                  usages => ARRAY['{"cost": 6}', NULL]::jsonb[]);
SELECT total, succeeded, cost FROM jq.batch_progress WHERE batch_id = :bid;
SELECT jq.jq_drop_queue('us_batch', force => true);

-- bad input
\set SHOW_CONTEXT never
SELECT jq.jq_enqueue('us', '{}', cost => -1);
SELECT jq.jq_enqueue('us', '{}', cost => 'NaN');
SELECT jq.jq_enqueue('us', '{}', cost => 'Infinity');
SELECT jq.jq_enqueue_batch('us', ARRAY['{}', '{}']::jsonb[], costs => ARRAY[1]);
SELECT jq.jq_enqueue_batch('us', ARRAY['{}', '{}']::jsonb[], costs => ARRAY[1, -2]);
SELECT id AS d FROM jq.job WHERE queue_id = jq.queue_id('us') AND state = 'r' LIMIT 1 \gset
SELECT job_id, lease_token FROM jq.jq_dequeue('us', 1) \gset
SELECT jq.jq_ack(:job_id, :lease_token, NULL, '[1, 2]');
SELECT jq.jq_ack(:job_id, :lease_token, NULL, '{"cost": "812"}');
SELECT jq.jq_ack(:job_id, :lease_token, NULL, '{"cost": -5}');
SELECT jq.jq_ack(:job_id, :lease_token, NULL, jsonb_build_object('log', repeat('x', 70000)));
SELECT jq.jq_fail(:job_id, :lease_token, 'x', usage => '"tokens"');
SELECT jq.jq_ack_batch(ARRAY[:job_id], ARRAY[:lease_token], NULL, usages => ARRAY['{}', '{}']::jsonb[]);
\set SHOW_CONTEXT errors
-- nothing of them happened
SELECT state FROM jq.jq_result(:job_id);
SELECT count(*) AS pending FROM jq.usage_pending;
SELECT jq.limit('usage_bytes_max');
SELECT jq.jq_drop_queue('us', force => true);
-- a dropped queue's usage goes with it
SELECT count(*) AS orphans FROM jq.usage_daily d
 WHERE NOT EXISTS (SELECT FROM jq.queue q WHERE q.queue_id = d.queue_id);
