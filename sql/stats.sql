-- stats: the shared counters equal the truth counted from the tables, after
-- every earlier test and after a mixed workload with rollbacks
\set SHOW_CONTEXT never

-- the truth, by queue and priority, and where the counters differ from it
CREATE TEMP VIEW truth AS
SELECT queue_id, priority::integer AS priority,
       count(*) FILTER (WHERE state = 'r') AS ready,
       count(*) FILTER (WHERE state = 's') AS scheduled,
       count(*) FILTER (WHERE state = 'l') AS leased,
       0::bigint AS dead
  FROM jq.job GROUP BY 1, 2
UNION ALL
SELECT queue_id, priority, 0, 0, 0, count(*) FROM jq.dead_letter GROUP BY 1, 2;

CREATE TEMP VIEW mismatch AS
SELECT coalesce(t.queue_id, c.queue_id) AS queue_id,
       coalesce(t.priority, c.priority) AS priority,
       t.ready AS true_ready, c.ready, t.scheduled AS true_scheduled, c.scheduled,
       t.leased AS true_leased, c.leased, t.dead AS true_dead, c.dead
  FROM (SELECT queue_id, priority, sum(ready) AS ready, sum(scheduled) AS scheduled,
               sum(leased) AS leased, sum(dead) AS dead
          FROM truth GROUP BY 1, 2) t
  FULL JOIN (SELECT * FROM jq.counters()
              WHERE ready <> 0 OR scheduled <> 0 OR leased <> 0 OR dead <> 0) c
    ON c.queue_id = t.queue_id AND c.priority = t.priority
 WHERE t.ready IS DISTINCT FROM c.ready OR t.scheduled IS DISTINCT FROM c.scheduled
    OR t.leased IS DISTINCT FROM c.leased OR t.dead IS DISTINCT FROM c.dead;

-- after all the earlier tests (this database's counters began empty at CREATE EXTENSION)
SELECT count(*) > 1000 AS over_1000_jobs, (SELECT count(*) FROM mismatch) AS mismatches
  FROM (SELECT id FROM jq.job UNION ALL SELECT job_id FROM jq.dead_letter) j;
SELECT * FROM mismatch;

-- a mixed workload, each step also rolled back once (a volatile call in the
-- select list runs for every row an OFFSET skips: pick rows in WHERE)
SELECT 1 FROM jq.jq_create_queue('mix', max_attempts => 2, backoff_base => '1 hour',
                              backoff_cap => '2 hours');
SELECT cardinality(jq.jq_enqueue_batch('mix',
         (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 20) g))) AS std;
SELECT cardinality(jq.jq_enqueue_batch('mix', ARRAY['{"u": 1}', '{"u": 2}']::jsonb[],
                                    priority => 10)) AS urgent;
SELECT jq.jq_enqueue('mix', '{"later": true}', run_at => '2999-01-01') > 0 AS scheduled;
BEGIN;
SELECT cardinality(jq.jq_enqueue_batch('mix', ARRAY['{}', '{}']::jsonb[])) AS rolled_back;
ROLLBACK;
BEGIN;
SELECT jq.jq_enqueue('mix', '{"kept": 1}') > 0;
SAVEPOINT a;
SELECT jq.jq_enqueue('mix', '{"dropped": 1}', priority => 5) > 0;
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
SELECT jq.jq_enqueue('mix', '{"kept": 2}', priority => 5) > 0;
RELEASE SAVEPOINT b;
COMMIT;
CREATE TEMP TABLE l AS SELECT * FROM jq.jq_dequeue('mix', 10);
BEGIN;
SELECT count(*) AS dequeued_then_rolled_back FROM jq.jq_dequeue('mix', 5);
ROLLBACK;
-- ack three, one of them rolled back first
BEGIN;
SELECT count(*) FILTER (WHERE acked) FROM jq.jq_ack_batch(
    (SELECT array_agg(job_id ORDER BY job_id) FROM (SELECT job_id FROM l ORDER BY job_id LIMIT 3) x),
    (SELECT array_agg(lease_token ORDER BY job_id) FROM (SELECT job_id, lease_token FROM l ORDER BY job_id LIMIT 3) x));
ROLLBACK;
SELECT count(*) FILTER (WHERE acked) AS acked FROM jq.jq_ack_batch(
    (SELECT array_agg(job_id ORDER BY job_id) FROM (SELECT job_id FROM l ORDER BY job_id LIMIT 3) x),
    (SELECT array_agg(lease_token ORDER BY job_id) FROM (SELECT job_id, lease_token FROM l ORDER BY job_id LIMIT 3) x));
-- fail: one retried, one permanent, one rolled back
SELECT jq.jq_fail(job_id, lease_token, 'retry me') FROM l WHERE job_id = (SELECT job_id FROM l ORDER BY job_id OFFSET 3 LIMIT 1);
SELECT jq.jq_fail(job_id, lease_token, 'bad', permanent => true) FROM l WHERE job_id = (SELECT job_id FROM l ORDER BY job_id OFFSET 4 LIMIT 1);
BEGIN;
SELECT jq.jq_fail(job_id, lease_token, 'rolled back', permanent => true) FROM l WHERE job_id = (SELECT job_id FROM l ORDER BY job_id OFFSET 5 LIMIT 1);
ROLLBACK;
-- cancel: a ready job, a leased job (then acked), one rolled back
SELECT jq.jq_cancel(max(id)) FROM jq.job WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'mix') AND state = 'r';
SELECT jq.jq_cancel(job_id) FROM l WHERE job_id = (SELECT job_id FROM l ORDER BY job_id OFFSET 6 LIMIT 1);
SELECT jq.jq_ack(job_id, lease_token) AS ack_of_cancelled FROM l WHERE job_id = (SELECT job_id FROM l ORDER BY job_id OFFSET 6 LIMIT 1);
BEGIN;
SELECT jq.jq_cancel(min(id)) FROM jq.job WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'mix') AND state = 'r';
ROLLBACK;
-- lease expiry: one expired lease reclaimed, the last-attempt one dead
UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 s'
 WHERE id IN (SELECT job_id FROM l WHERE job_id = (SELECT job_id FROM l ORDER BY job_id OFFSET 7 LIMIT 1));
SELECT jq.reclaim_expired_leases() AS reclaimed;
-- redrive, once rolled back, once for real
BEGIN;
SELECT jq.jq_redrive('mix') AS redriven_then_rolled_back;
ROLLBACK;
SELECT jq.jq_redrive('mix') AS redriven;
-- a due scheduled job promoted by dequeue
UPDATE jq.job SET run_at = clock_timestamp() - interval '1 s'
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'mix') AND state = 's'
   AND payload ? 'later';
SELECT count(*) AS promoted_and_dequeued FROM jq.jq_dequeue('mix', 1) WHERE payload ? 'later';

SELECT * FROM mismatch;

-- the totals of the mix queue
SELECT enqueued_total, succeeded_total, failed_total, dead_lettered_total, cancelled_total
  FROM jq.queue_stats WHERE queue = 'mix';

-- the view: depth by state and priority, oldest age, in flight
SELECT queue, ready, scheduled, in_flight, dead, ready_by_priority,
       oldest_ready_age IS NOT NULL AS has_age
  FROM jq.queue_stats WHERE queue = 'mix';

-- dropping a queue with force takes its counts with it
SELECT jq.jq_drop_queue('mix', force => true);
SELECT * FROM mismatch;
SELECT count(*) AS mix_counters FROM jq.counters() c
 WHERE c.queue_id NOT IN (SELECT queue_id FROM jq.queue)
   AND (ready <> 0 OR scheduled <> 0 OR leased <> 0 OR dead <> 0);

-- the invariants of jq.job that the count trigger enforces (in place of
-- CHECK constraints): a state outside r/s/l, and a lease without the
-- leased state or the leased state without a lease, are refused
SELECT (jq.jq_create_queue('inv')).name;
SELECT jq.jq_enqueue('inv', '{}') > 0 AS enqueued;
\set VERBOSITY default
INSERT INTO jq.job (queue_id, state, priority, run_at, enqueued_at, payload)
SELECT queue_id, 'x', 0, now(), now(), '{}' FROM jq.queue WHERE name = 'inv';
UPDATE jq.job SET state = 'l'
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'inv');
UPDATE jq.job SET state = 's', lease_expires_at = now()
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'inv');
\set VERBOSITY terse
SELECT count(*) AS inv_jobs, min(state) AS inv_state FROM jq.job
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'inv');
SELECT jq.jq_drop_queue('inv', force => true);
