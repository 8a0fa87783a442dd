-- jq.compact, jq.compact_result_heap and jq.free_space (src/compact.c):
-- the SQL surface.  TAP test 018_compact covers what they do to a table
-- that a held snapshot bloated.
SET client_min_messages = warning;
-- a fresh database has nothing to give back
SELECT jq.compact() AS steps;
SELECT jq.compact_result_heap() AS moved;
-- jq.compact has seen every table and index of jq.job and jq.job_result
SELECT relation, baseline_bytes >= 0 AS measured, compacted_at
  FROM jq.compaction ORDER BY relation;
-- free space: a fraction for pgjq's tables and indexes, NULL elsewhere
SELECT jq.free_space('jq.job') BETWEEN 0 AND 1 AS table_fraction,
       jq.free_space('jq.job_pkey') BETWEEN 0 AND 1 AS index_fraction,
       jq.free_space('pg_catalog.pg_class') IS NULL AS other_schema,
       jq.free_space('jq.queue_stats') IS NULL AS a_view,
       jq.free_space(NULL) IS NULL AS null_in;
-- bad input
SELECT jq.free_space(0::oid::regclass);
SELECT jq.compact(0);
SELECT jq.compact(NULL);
SELECT jq.compact_result_heap(0);
SELECT jq.compact_result_heap(1000001);
SELECT jq.compact_result_heap(NULL);
-- readers see what compaction did, and may measure; only the owner compacts
SET ROLE jq_reader;
SELECT count(*) > 0 AS readable FROM jq.compaction;
SELECT jq.free_space('jq.job_result') BETWEEN 0 AND 1 AS reader_measures;
SELECT jq.compact();
RESET ROLE;
