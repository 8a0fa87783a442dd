--
-- Scan bounds (src/bounds.c): where the next dequeue of each priority
-- lane starts, past the jobs already handed out.  The races are in
-- test/specs/lane_bounds.spec and test/t/017_lane_bounds.pl; this is the
-- SQL surface: jq.scan_bounds(), the pgjq.scan_bounds setting, when the
-- bounds are trusted, and the priority rule they rely on.
--
SELECT 1 FROM jq.jq_create_queue('bounds');
SELECT cardinality(jq.jq_enqueue_batch('bounds', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[]));
SELECT jq.jq_enqueue('bounds', '{"n": 4}', priority => 10) > 0 AS urgent;

-- the view of the bounds of this queue: which job each sits on
CREATE TEMP VIEW bounds AS
SELECT b.priority,
       CASE WHEN b.id IS NULL THEN 'start'
            ELSE COALESCE((SELECT 'job ' || (j.payload->>'n') || ' (' || j.state::text || ')'
                             FROM jq.job j WHERE j.id = b.id), 'a finished job') END AS at
  FROM jq.scan_bounds() b
 WHERE b.state = 'ready' AND b.queue_id = jq.queue_id('bounds')
 ORDER BY b.priority DESC;

-- no worker serves this database; with its counters forgotten (as after a
-- start) the bounds are not trusted either, and dequeues scan whole lanes
SELECT jq.reset_counters();
SELECT jq.counters_valid();
SELECT * FROM bounds;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
SELECT * FROM bounds;

-- a rebuild installs them: every lane with ready jobs starts at its start
SELECT jq.rebuild_counters();
SELECT * FROM bounds;

-- a dequeue moves its lane's bound to the first job it took; a lane it
-- found empty is dropped
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
SELECT * FROM bounds;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
SELECT * FROM bounds;

-- with pgjq.scan_bounds off, a dequeue scans from each lane's start and
-- leaves the bounds alone (they stay right: every change still lowers them)
SET pgjq.scan_bounds = off;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
SELECT * FROM bounds;
RESET pgjq.scan_bounds;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
SELECT * FROM bounds;

-- a job enqueued with a past run_at lowers the bound when it commits
SELECT jq.jq_enqueue('bounds', '{"n": 5}', run_at => now() - interval '1 day') > 0 AS past;
SELECT * FROM bounds;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 10);

-- only superusers change the setting
SET ROLE jq_worker;
SET pgjq.scan_bounds = off;
RESET ROLE;

-- a prepared transaction that changed jobs carries notes no callback will
-- apply at COMMIT PREPARED: the bounds (and counters) are not trusted
-- until the next rebuild, which waits for it
SELECT jq.jq_enqueue('bounds', '{"n": 6}') > 0 AS enqueued;
BEGIN;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
PREPARE TRANSACTION 'bounds';
SELECT jq.counters_valid();
SELECT * FROM bounds;
SELECT jq.rebuild_counters();
ROLLBACK PREPARED 'bounds';
SELECT jq.rebuild_counters();
SELECT * FROM bounds;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);

-- the bounds keep one lane per priority: a job's priority stays in range,
-- also by direct SQL
UPDATE jq.job SET priority = 101 WHERE queue_id = jq.queue_id('bounds');
INSERT INTO jq.job (queue_id, state, priority, run_at, enqueued_at, payload)
VALUES (jq.queue_id('bounds'), 'r', -101, now(), now(), '{}');

-- the bounds of scheduled jobs (per queue) and of leases (per database):
-- promotion and reclaim start there, and move them to the first job left
CREATE TEMP VIEW other_bounds AS
SELECT b.state,
       CASE WHEN b.at = '-infinity' THEN 'start'
            WHEN b.at = f.first THEN 'at the first job'
            ELSE 'below the first job' END AS at,
       f.first IS NULL OR b.at <= f.first AS holds
  FROM jq.scan_bounds() b
  CROSS JOIN LATERAL
       (SELECT CASE b.state
                 WHEN 'scheduled' THEN (SELECT min(j.run_at) FROM jq.job j
                                         WHERE j.state = 's' AND j.queue_id = b.queue_id)
                 ELSE (SELECT min(j.lease_expires_at) FROM jq.job j) END AS first) f
 WHERE b.state = 'leased' OR (b.state = 'scheduled' AND b.queue_id = jq.queue_id('bounds'))
 ORDER BY b.state;
SELECT * FROM other_bounds;
SELECT jq.jq_enqueue('bounds', '{"n": 7}', run_at => now() + interval '1 hour') > 0 AS scheduled;
SELECT jq.jq_enqueue('bounds', '{"n": 8}', run_at => now() + interval '2 hours') > 0 AS scheduled;
SELECT * FROM other_bounds;
-- an operator brings job 7 forward: it is due, and promoted from the bound
UPDATE jq.job SET run_at = now() - interval '1 minute' WHERE payload->>'n' = '7';
SELECT jq.promote_due(jq.queue_id('bounds'), 10) AS promoted;
SELECT jq.promote_due(jq.queue_id('bounds'), 10) AS promoted;
SELECT * FROM other_bounds;
-- a lease that an operator lets expire is reclaimed from the leases' bound
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
SELECT * FROM other_bounds;
UPDATE jq.job SET lease_expires_at = now() - interval '1 minute' WHERE payload->>'n' = '7';
SELECT * FROM other_bounds;
SELECT jq.reclaim_expired_leases() AS reclaimed;
SELECT * FROM other_bounds;
-- the reclaimed job 7 is ready again at once; the next deadline, found
-- from the bounds, is the one a scan of the whole table finds
SELECT payload->>'n' AS n, state FROM jq.job WHERE queue_id = jq.queue_id('bounds') ORDER BY id;
SELECT jq.next_deadline() = (SELECT least(min(lease_expires_at), min(run_at) FILTER (WHERE state = 's'))
                               FROM jq.job) AS next_deadline_right;

-- the internal bound functions refuse what has no bound
SELECT * FROM jq.scan_bound('d', 1, NULL);
SELECT * FROM jq.scan_bound('r', NULL, 0);
SELECT * FROM jq.scan_bound('r', 1, NULL);
SELECT * FROM jq.scan_bound('r', 1, 101);
SELECT jq.advance_scan_bound('l', NULL, NULL, NULL, now(), NULL);
SELECT at, id IS NULL AS no_id FROM jq.scan_bound('s', -1, NULL);

-- dropping a queue forgets its bounds at commit, not before, and not on
-- rollback
SELECT jq.queue_id('bounds') AS bq \gset
SELECT jq.jq_enqueue('bounds', '{"n": 9}') > 0 AS enqueued;
SELECT count(*) > 0 AS has_bounds FROM jq.scan_bounds() WHERE queue_id = :bq;
BEGIN;
SELECT jq.jq_drop_queue('bounds', force => true);
SELECT count(*) > 0 AS has_bounds FROM jq.scan_bounds() WHERE queue_id = :bq;
ROLLBACK;
SELECT count(*) > 0 AS has_bounds FROM jq.scan_bounds() WHERE queue_id = :bq;
SELECT jq.jq_drop_queue('bounds', force => true);
SELECT count(*) AS bounds_left FROM jq.scan_bounds() WHERE queue_id = :bq;
DROP VIEW bounds, other_bounds;
