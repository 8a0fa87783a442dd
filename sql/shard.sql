--
-- Shards behind a PL/Proxy router (proxy/, docs/scale-out.md): each shard
-- hands out job and batch ids from shard * 2^44 on (jq_set_shard), and
-- records the batches made on other shards under their ids
-- (jq_adopt_batch).  The router itself is tested with three clusters in
-- TAP 029.  Sequence changes are transactional: every case that changes
-- them is rolled back, so the tests after this one see shard 0 as before.
--
SELECT 1 FROM jq.jq_create_queue('sh');
SELECT 1 FROM jq.jq_create_queue('sh_other');

-- bad shard numbers
SELECT jq.jq_set_shard(-1);
SELECT jq.jq_set_shard(512);
SELECT jq.jq_set_shard(NULL);

-- this database holds jobs from before: it can be shard 0 and no other
SELECT jq.jq_enqueue('sh', '{}') < (1::bigint << 44) AS below_shard_1;
\set VERBOSITY terse
SELECT jq.jq_set_shard(1);
\set VERBOSITY default
BEGIN;
SELECT jq.jq_set_shard(0);
SELECT min_value, max_value FROM pg_sequences
 WHERE schemaname = 'jq' AND sequencename IN ('job_id_seq', 'batch_batch_id_seq');
SELECT jq.jq_enqueue('sh', '{}') < (1::bigint << 44) AS still_below;
-- again: harmless, ids go on
SELECT jq.jq_set_shard(0);
SELECT jq.jq_enqueue('sh', '{}') < (1::bigint << 44) AS still_below;
ROLLBACK;

-- an empty database becomes shard 3: ids from 3 * 2^44 on
BEGIN;
SET LOCAL client_min_messages = warning;
TRUNCATE jq.job, jq.job_result, jq.dead_letter, jq.batch, jq.batch_job,
         jq.idempotency_key;
SELECT jq.jq_set_shard(3);
SELECT jq.jq_enqueue('sh', '{}') = 3 * (1::bigint << 44) AS first_id,
       jq.jq_enqueue('sh', '{}') = 3 * (1::bigint << 44) + 1 AS second_id,
       jq.jq_create_batch('sh') = 3 * (1::bigint << 44) AS first_batch;
SELECT jq.jq_set_shard(3);
SELECT jq.jq_enqueue('sh', '{}') = 3 * (1::bigint << 44) + 2 AS goes_on;
-- and again, with nothing handed out since the last call: ids still go on
SELECT jq.jq_set_shard(3);
SELECT jq.jq_set_shard(3);
SELECT jq.jq_enqueue('sh', '{}') = 3 * (1::bigint << 44) + 3 AS job_goes_on,
       jq.jq_create_batch('sh') = 3 * (1::bigint << 44) + 1 AS batch_goes_on;
-- its ids name it: id >> 44
SELECT DISTINCT id >> 44 AS shard FROM jq.job;
-- it cannot become another shard while it holds them
SAVEPOINT s;
SELECT jq.jq_set_shard(4);
ROLLBACK TO s;

-- a batch made on shard 1, adopted here: its jobs here count toward it
SELECT jq.jq_adopt_batch((1::bigint << 44) + 7, 'sh', 'launch');
SELECT jq.jq_adopt_batch((1::bigint << 44) + 7, 'sh', 'launch');  -- again: nothing changes
SELECT jq.jq_enqueue('sh', '{}', batch_id => (1::bigint << 44) + 7) >> 44 AS job_shard;
SELECT batch_id >> 44 AS batch_shard, queue, label, total, waiting
  FROM jq.batch_progress WHERE batch_id = (1::bigint << 44) + 7;
-- the same id for another queue, an id of this shard's own, no id, a
-- negative one, no queue
SAVEPOINT s;
SELECT jq.jq_adopt_batch((1::bigint << 44) + 7, 'sh_other');
ROLLBACK TO s;
SELECT jq.jq_adopt_batch(3 * (1::bigint << 44) + 99, 'sh');
ROLLBACK TO s;
SELECT jq.jq_adopt_batch(NULL, 'sh');
ROLLBACK TO s;
SELECT jq.jq_adopt_batch(-1, 'sh');
ROLLBACK TO s;
SELECT jq.jq_adopt_batch(5, 'no_such_queue');
ROLLBACK TO s;
ROLLBACK;

-- shard 2 that has made no batch of its own, only adopted those of shards
-- 0 and 1: set again (pgjq_proxy run again), it keeps its range
BEGIN;
SET LOCAL client_min_messages = warning;
TRUNCATE jq.job, jq.job_result, jq.dead_letter, jq.batch, jq.batch_job,
         jq.idempotency_key;
SELECT jq.jq_set_shard(2);
SELECT jq.jq_adopt_batch(5, 'sh'), jq.jq_adopt_batch((1::bigint << 44) + 5, 'sh');
SELECT jq.jq_set_shard(2);
SELECT jq.jq_create_batch('sh') = 2 * (1::bigint << 44) AS first_batch,
       jq.jq_enqueue('sh', '{}') = 2 * (1::bigint << 44) AS first_id;
ROLLBACK;

-- but a database that made a batch before sharding cannot become shard 2
BEGIN;
SET LOCAL client_min_messages = warning;
TRUNCATE jq.job, jq.job_result, jq.dead_letter, jq.batch, jq.batch_job,
         jq.idempotency_key;
SELECT jq.jq_create_batch('sh') < (1::bigint << 44) AS made_before;
\set VERBOSITY terse
-- (terse: the detail names the batch id, which the tests before set)
SELECT jq.jq_set_shard(2);
\set VERBOSITY default
ROLLBACK;

-- back to the shard this database was: ids below 2^44
SELECT jq.jq_enqueue('sh', '{}') < (1::bigint << 44) AS below_shard_1;
SELECT jq.jq_drop_queue('sh', force => true);
SELECT jq.jq_drop_queue('sh_other', force => true);
