--
-- Dequeue bounds (src/lanes.c): where the next dequeue of each priority
-- lane starts, past the jobs already handed out.  The races are in
-- test/specs/lane_bounds.spec and test/t/017_lane_bounds.pl; this is the
-- SQL surface: jq.lane_bounds(), the pgjq.lane_bounds setting, when the
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
  FROM jq.lane_bounds() b
 WHERE b.queue_id = jq.queue_id('bounds')
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

-- with pgjq.lane_bounds off, a dequeue scans from each lane's start and
-- leaves the bounds alone (they stay right: every change still lowers them)
SET pgjq.lane_bounds = off;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
SELECT * FROM bounds;
RESET pgjq.lane_bounds;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 1);
SELECT * FROM bounds;

-- a job enqueued with a past run_at lowers the bound when it commits
SELECT jq.jq_enqueue('bounds', '{"n": 5}', run_at => now() - interval '1 day') > 0 AS past;
SELECT * FROM bounds;
SELECT payload->>'n' AS n FROM jq.jq_dequeue('bounds', 10);

-- only superusers change the setting
SET ROLE jq_worker;
SET pgjq.lane_bounds = off;
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

SELECT jq.jq_drop_queue('bounds', force => true);
DROP VIEW bounds;
