-- enqueue: jobs enter a queue inside the caller's transaction
-- the context of an error in a batch names the element at fault
\set SHOW_CONTEXT errors
SELECT 1 FROM jq.jq_create_queue('ads');

-- one job: the id comes back at once
SELECT jq.jq_enqueue('ads', '{"copy": "Buy now"}') > 0 AS got_id;

-- defaults: priority 0, ready at once, attempt 0, no lease
SELECT state, priority, attempts, run_at = enqueued_at AS run_now, started_at IS NULL AS not_started
  FROM jq.jq_result(currval('jq.job_id_seq'));

-- a job exists iff its transaction commits
BEGIN;
SELECT jq.jq_enqueue('ads', '{"copy": "rolled back"}') AS rb_job \gset
SELECT state FROM jq.jq_result(:rb_job);
ROLLBACK;
SELECT count(*) AS after_rollback FROM jq.jq_result(:rb_job);
SELECT count(*) AS rows_left FROM jq.job WHERE payload @> '{"copy": "rolled back"}';

-- a savepoint rolled back takes its jobs with it, the rest commit
BEGIN;
SELECT jq.jq_enqueue('ads', '{"copy": "kept"}') AS kept_job \gset
SAVEPOINT s;
SELECT jq.jq_enqueue('ads', '{"copy": "dropped"}') AS dropped_job \gset
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT (SELECT count(*) FROM jq.jq_result(:kept_job)) AS kept,
       (SELECT count(*) FROM jq.jq_result(:dropped_job)) AS dropped;

-- priority and run_at; a future run_at makes the job scheduled
SELECT jq.jq_enqueue('ads', '{"copy": "urgent"}', priority => 10) AS urgent_job \gset
SELECT state, priority FROM jq.jq_result(:urgent_job);
SELECT jq.jq_enqueue('ads', '{"copy": "later"}', run_at => '2999-01-01 00:00:00+00') AS later_job \gset
SELECT state, run_at = '2999-01-01 00:00:00+00' AS run_at_kept FROM jq.jq_result(:later_job);
SELECT jq.jq_enqueue('ads', '{"copy": "past"}', run_at => now() - interval '1 hour') AS past_job \gset
SELECT state FROM jq.jq_result(:past_job);
-- NULL priority and run_at mean the defaults
SELECT jq.jq_enqueue('ads', '{}', priority => NULL, run_at => NULL) AS j \gset
SELECT state, priority FROM jq.jq_result(:j);
-- arrays are payloads too
SELECT jq.jq_enqueue('ads', '[1, 2, 3]') AS j \gset
SELECT state FROM jq.jq_result(:j);

-- batch: ids in the order of the payloads, all in one transaction
SELECT jq.jq_enqueue_batch('ads', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[],
                        priority => 5) AS ids \gset
SELECT cardinality(:'ids'::bigint[]) AS n,
       (:'ids'::bigint[])[1] < (:'ids'::bigint[])[2]
       AND (:'ids'::bigint[])[2] < (:'ids'::bigint[])[3] AS ascending;
SELECT o AS position, j.payload->>'n' AS payload_n, j.priority
  FROM unnest(:'ids'::bigint[]) WITH ORDINALITY AS u(id, o)
  JOIN jq.job j ON j.id = u.id
 ORDER BY o;

-- a batch that fails on one element enqueues nothing; the error's context
-- names the element
SELECT count(*) AS before FROM jq.job \gset
SELECT jq.jq_enqueue_batch('ads', ARRAY['{"n": 1}', '7', '{"n": 3}']::jsonb[]);
SELECT jq.jq_enqueue_batch('ads', ARRAY['{"n": 1}', NULL]::jsonb[]);
SELECT count(*) = :before AS unchanged FROM jq.job;

-- a batch that rolls back leaves nothing
BEGIN;
SELECT cardinality(jq.jq_enqueue_batch('ads', ARRAY['{"rb": 1}', '{"rb": 2}']::jsonb[])) AS n;
ROLLBACK;
SELECT count(*) AS rows_left FROM jq.job WHERE payload ? 'rb';

-- batches of 1,000 (the bench's size) work, in order
SELECT cardinality(ids) AS n,
       ids = (SELECT array_agg(x ORDER BY x) FROM unnest(ids) x) AS in_order
  FROM jq.jq_enqueue_batch('ads',
         (SELECT array_agg(jsonb_build_object('i', g)) FROM generate_series(1, 1000) g)) AS ids;

-- the payload size limit is the jsonb size of each payload
SELECT 1 FROM jq.jq_create_queue('small', max_payload_bytes => 64);
SELECT jq.jq_enqueue('small', '{"k": "short"}') > 0 AS fits;
SELECT jq.jq_enqueue('small', jsonb_build_object('k', repeat('x', 100)));
SELECT jq.jq_enqueue_batch('small', ARRAY['{}', jsonb_build_object('k', repeat('x', 100))]);

-- Enqueues insert through the access methods while jq.job is pgjq's own;
-- a column, an INSERT trigger or a CHECK constraint added to it sends them
-- through an INSERT statement, so that what was added applies.
SELECT 1 FROM jq.jq_create_queue('own');
ALTER TABLE jq.job ADD COLUMN team text NOT NULL DEFAULT 'agency';
CREATE FUNCTION pg_temp.tag() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.payload := NEW.payload || '{"tagged": true}'; RETURN NEW; END$$;
SELECT jq.jq_enqueue('own', '{"n": 1}') AS id1 \gset
SELECT ids[1] AS id2, ids[2] AS id3
  FROM jq.jq_enqueue_batch('own', ARRAY['{"n": 2}', '{"n": 3}']::jsonb[]) AS ids \gset
SELECT team, payload FROM jq.job WHERE id IN (:id1, :id2, :id3) ORDER BY id;
-- job keys travel the statement's way too
SELECT ids[1] AS idk1, ids[2] AS idk2
  FROM jq.jq_enqueue_batch('own', ARRAY['{"k": 1}', '{"k": 2}']::jsonb[],
                           keys => ARRAY['team_a', NULL]) AS ids \gset
SELECT jq.jq_enqueue('own', '{"k": 3}', key => 'team_b') AS idk3 \gset
SELECT team, key, payload FROM jq.job WHERE id IN (:idk1, :idk2, :idk3) ORDER BY id;
CREATE TRIGGER tag BEFORE INSERT ON jq.job FOR EACH ROW EXECUTE FUNCTION pg_temp.tag();
SELECT jq.jq_enqueue('own', '{"n": 4}') AS id4 \gset
SELECT payload FROM jq.job WHERE id = :id4;
DROP TRIGGER tag ON jq.job;
ALTER TABLE jq.job DROP COLUMN team;
ALTER TABLE jq.job ADD CONSTRAINT no_secrets CHECK (NOT payload ? 'secret') NOT VALID;
\set VERBOSITY terse
SELECT jq.jq_enqueue('own', '{"secret": "x"}');
SELECT jq.jq_enqueue_batch('own', ARRAY['{"n": 5}', '{"secret": "x"}']::jsonb[]);
\set VERBOSITY default
ALTER TABLE jq.job DROP CONSTRAINT no_secrets;
-- back to pgjq's own table: a payload TOAST stores, in a batch, in order
SELECT cardinality(ids) AS n, ids[1] < ids[2] AS ascending
  FROM jq.jq_enqueue_batch('own', ARRAY['{"n": 6}',
         jsonb_build_object('big', repeat('x', 100000))]) AS ids;
SELECT length(payload->>'big') AS big_length FROM jq.job
 WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'own') AND payload ? 'big';
SELECT ready FROM jq.queue_stats WHERE queue = 'own';
SELECT jq.jq_drop_queue('own', force => true);

-- a read-only transaction (and a hot standby) changes no job
SELECT 1 FROM jq.jq_create_queue('ro');
SELECT jq.jq_enqueue('ro', '{"n": 1}') AS ro_id \gset
BEGIN READ ONLY;
SELECT jq.jq_enqueue('ro', '{"n": 2}');
ROLLBACK;
BEGIN READ ONLY;
SELECT jq.jq_enqueue_batch('ro', ARRAY['{"n": 3}']::jsonb[]);
ROLLBACK;
BEGIN READ ONLY;
SELECT job_id FROM jq.jq_dequeue('ro');
ROLLBACK;
SELECT job_id = :ro_id AS leased, lease_token FROM jq.jq_dequeue('ro') \gset
BEGIN READ ONLY;
SELECT jq.jq_ack(:ro_id, :lease_token);
ROLLBACK;
BEGIN READ ONLY;
SELECT jq.compact_result_heap(10);
ROLLBACK;
SELECT jq.jq_ack(:ro_id, :lease_token) AS acked;
SELECT jq.jq_drop_queue('ro', force => true);
