--
-- Deadlines: a job not started by its deadline is never handed out and
-- ends expired (jq.expire_deadlines, which the worker runs); a running job
-- is not interrupted, jq_extend warns.  The race of a deadline passing
-- between two dequeuers is in test/specs/deadlines.spec; the worker's
-- expiry in test/t/024_deadlines.pl.
--
-- No worker serves this database: counters are built by hand, and the
-- deadlines are moved into the past by UPDATE (the count trigger notes it).
SELECT jq.rebuild_counters();
SELECT 1 FROM jq.jq_create_queue('dl', backoff_base => '1 hour', backoff_cap => '1 hour');
CREATE FUNCTION pg_temp.pass_deadline(bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE jq.job SET deadline = clock_timestamp() - interval '1 millisecond' WHERE id = $1
$$;

SELECT jq.jq_enqueue('dl', '{"n": 1}', deadline => now() + interval '30 minutes') AS a \gset
SELECT jq.jq_enqueue('dl', '{"n": 2}', deadline => now() + interval '30 minutes') AS b \gset
SELECT jq.jq_enqueue('dl', '{"n": 3}') AS c \gset
SELECT deadline > now() + interval '29 minutes' AS kept FROM jq.jq_result(:a);

-- before its deadline a job goes as any other
SELECT payload->>'n' AS n FROM jq.jq_dequeue('dl', 1);
-- past it, it is never handed out: the next job goes instead
SELECT pg_temp.pass_deadline(:b);
SELECT payload->>'n' AS n FROM jq.jq_dequeue('dl', 10);
SELECT state FROM jq.jq_result(:b);
-- and the expiry ends it, once
SELECT jq.expire_deadlines() AS expired;
SELECT jq.expire_deadlines() AS expired_again;
SELECT state, last_error LIKE 'not started by its deadline 2___-__-__ %' AS reason,
       finished_at IS NOT NULL AS finished
  FROM jq.jq_result(:b);
SELECT expired_total FROM jq.queue_stats WHERE queue = 'dl';

-- a running job is not interrupted: jq_extend warns, the ack stands
SELECT pg_temp.pass_deadline(:a);
SELECT lease_token AS tok FROM jq.job WHERE id = :a \gset
\set VERBOSITY terse
SELECT jq.jq_extend(:a, :tok) IS NOT NULL AS extended;
\set VERBOSITY default
SELECT jq.expire_deadlines() AS leased_not_expired;
SELECT jq.jq_ack(:a, :tok, '{"late": true}');
SELECT state FROM jq.jq_result(:a);

-- a retry waiting out its backoff expires too, its last error kept
SELECT jq.jq_enqueue('dl', '{"n": 4}', deadline => now() + interval '30 minutes') AS d \gset
SELECT jq.jq_ack(job_id, lease_token) FROM jq.jq_dequeue('dl', 10) WHERE job_id <> :d;
SELECT lease_token AS tok FROM jq.job WHERE id = :d \gset
SELECT jq.jq_fail(:d, :tok, 'provider 503');
SELECT pg_temp.pass_deadline(:d);
SELECT jq.expire_deadlines() AS expired;
SELECT state, regexp_replace(last_error, 'deadline [^;]*;', 'deadline ...;') AS last_error
  FROM jq.jq_result(:d);

-- batches: a deadline per job; batch_progress counts the expired
SELECT jq.jq_submit_batch('dl', ARRAY['{"n": 5}', '{"n": 6}']::jsonb[],
                          deadlines => ARRAY[now() + interval '1 hour', NULL]) AS bid \gset
SELECT count(*) FILTER (WHERE deadline IS NOT NULL) AS with_deadline FROM jq.job
 WHERE id IN (SELECT job_id FROM jq.batch_job WHERE batch_id = :bid);
SELECT pg_temp.pass_deadline(job_id) FROM jq.batch_job WHERE batch_id = :bid;
SELECT jq.expire_deadlines() AS expired;
SELECT total, waiting, expired FROM jq.batch_progress WHERE batch_id = :bid;

-- keys: an expired job leaves its key's counts; an ordered key waits for
-- its first job's expiry rather than skip it
SELECT 1 FROM jq.jq_set_key_policy('dl', 'conv', ordered => true);
SELECT unnest(jq.jq_enqueue_batch('dl', ARRAY['{"n": 7}', '{"n": 8}']::jsonb[],
                                  keys => ARRAY['conv', 'conv'],
                                  deadlines => ARRAY[now() + interval '1 hour', NULL])) AS k
 LIMIT 1 \gset
SELECT pg_temp.pass_deadline(:k);
SELECT count(*) AS nothing_while_its_first_waits FROM jq.jq_dequeue('dl', 10);
SELECT jq.expire_deadlines() AS expired;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('dl', 10);
SELECT key, ready, in_flight FROM jq.key_stats WHERE queue = 'dl' AND key = 'conv';

-- bad input
\set SHOW_CONTEXT never
\set VERBOSITY terse
SELECT jq.jq_enqueue('dl', '{}', deadline => now() - interval '1 second');
\set VERBOSITY default
SELECT jq.jq_enqueue('dl', '{}', deadline => 'infinity');
SELECT jq.jq_enqueue('dl', '{}', run_at => '2030-01-01', deadline => '2029-12-31');
\set SHOW_CONTEXT errors
SELECT jq.jq_enqueue_batch('dl', ARRAY['{}', '{}']::jsonb[],
                           deadlines => ARRAY[now() + interval '1 hour', '-infinity']);
SELECT jq.jq_enqueue_batch('dl', ARRAY['{}', '{}']::jsonb[], deadlines => ARRAY[now()]);
SELECT jq.jq_enqueue_batch('dl', ARRAY['{}']::jsonb[], deadlines => ARRAY[[now()]]);
SELECT jq.jq_drop_queue('dl', force => true);
