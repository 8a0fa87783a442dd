-- periodic: the worker's periodic work, called directly (this database has
-- no worker): depth samples, alerts raised and cleared, retention purge
\set SHOW_CONTEXT never
SELECT preloaded, worker_pid, status FROM jq.jq_worker_status();

SELECT 1 FROM jq.jq_create_queue('watch', alert_depth_warning => 3, alert_depth_critical => 5,
                              alert_age_warning => '1 hour');
SELECT alert_depth_warning, alert_depth_critical, alert_age_warning
  FROM jq.jq_list_queues() WHERE name = 'watch';

-- below the thresholds: nothing
SELECT cardinality(jq.jq_enqueue_batch('watch', ARRAY['{}', '{}']::jsonb[])) AS n;
SELECT jq.check_alerts() AS changed;

-- depth 3 reaches the warning: one alert, logged once, not repeated
SELECT jq.jq_enqueue('watch', '{}') > 0;
SELECT jq.check_alerts() AS changed;
SELECT jq.check_alerts() AS changed_again;
SELECT queue, kind, level, value, threshold, cleared_at IS NULL AS open
  FROM jq.alert WHERE queue = 'watch' ORDER BY alert_id;

-- depth 5: critical too
SELECT cardinality(jq.jq_enqueue_batch('watch', ARRAY['{}', '{}']::jsonb[])) AS n;
SELECT jq.check_alerts() AS changed;
SELECT kind, level, value, cleared_at IS NULL AS open
  FROM jq.alert WHERE queue = 'watch' ORDER BY alert_id;

-- the oldest ready job older than an hour: an age alert
UPDATE jq.job SET run_at = clock_timestamp() - interval '2 hours'
 WHERE id = (SELECT min(id) FROM jq.job WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'watch'));
SELECT jq.check_alerts() AS changed;
SELECT kind, level, cleared_at IS NULL AS open
  FROM jq.alert WHERE queue = 'watch' ORDER BY alert_id;

-- drained: every alert clears
SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token)) AS acked FROM jq.jq_dequeue('watch', 10);
SELECT jq.check_alerts() AS changed;
SELECT kind, level, cleared_at IS NOT NULL AS cleared
  FROM jq.alert WHERE queue = 'watch' ORDER BY alert_id;

-- bad thresholds
SELECT jq.jq_alter_queue('watch', alert_depth_warning => 10);
SELECT jq.jq_alter_queue('watch', alert_depth_warning => 0, alert_depth_critical => 0);
SELECT jq.jq_alter_queue('watch', alert_age_warning => '0');
-- thresholds are removed explicitly
SELECT alert_depth_warning, alert_depth_critical, alert_age_warning
  FROM jq.jq_alter_queue('watch', clear_alerts => true);

-- depth samples: one row per queue
SELECT jq.sample_stats() > 0 AS sampled;
SELECT queue, ready, succeeded_total
  FROM jq.stats_history WHERE queue = 'watch';
-- samples older than the retention are pruned
UPDATE jq.stats_history SET sampled_at = sampled_at - interval '8 days' WHERE queue = 'watch';
SELECT jq.sample_stats(interval '7 days') > 0 AS sampled;
SELECT count(*) AS watch_samples FROM jq.stats_history WHERE queue = 'watch';

-- retention: results, dead letters and finished jobs' keys past their time go
SELECT 1 FROM jq.jq_create_queue('old', result_retention => '1 day',
                              dead_letter_retention => '2 days', idempotency_window => '1 hour');
SELECT cardinality(jq.jq_enqueue_batch('old', ARRAY['{}', '{}', '{}']::jsonb[],
                                    idempotency_keys => ARRAY['a', 'b', 'c'])) AS n;
SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token)) AS acked
  FROM jq.jq_dequeue('old', 2);
SELECT jq.jq_fail(job_id, lease_token, 'bad', permanent => true) FROM jq.jq_dequeue('old', 1);
SELECT jq.purge_expired() AS purged_nothing_yet;
-- age everything
UPDATE jq.job_result SET finished_at = finished_at - interval '25 hours'
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'old');
UPDATE jq.dead_letter SET failed_at = failed_at - interval '25 hours' WHERE queue = 'old';
UPDATE jq.idempotency_key SET created_at = created_at - interval '2 hours'
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'old');
-- results past 1 day go, the dead letter (2 days) stays, finished jobs' keys go
SELECT jq.purge_expired() AS purged;
SELECT (SELECT count(*) FROM jq.job_result WHERE queue_id = q.queue_id) AS results,
       (SELECT count(*) FROM jq.dead_letter WHERE queue_id = q.queue_id) AS dead,
       (SELECT count(*) FROM jq.idempotency_key WHERE queue_id = q.queue_id) AS keys
  FROM jq.queue q WHERE name = 'old';
UPDATE jq.dead_letter SET failed_at = failed_at - interval '1 day' WHERE queue = 'old';
SELECT jq.purge_expired(batch => 1) AS purged;
SELECT count(*) AS dead FROM jq.dead_letter WHERE queue = 'old';
-- small batches: purge returns at most batch rows of each kind per queue
SELECT cardinality(jq.jq_enqueue_batch('old', ARRAY['{}', '{}', '{}']::jsonb[])) AS n;
SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token)) AS acked FROM jq.jq_dequeue('old', 3);
UPDATE jq.job_result SET finished_at = finished_at - interval '25 hours'
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'old');
SELECT jq.purge_expired(batch => 2) AS first, jq.purge_expired(batch => 2) AS second,
       jq.purge_expired(batch => 2) AS third;
