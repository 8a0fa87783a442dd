-- pgTAP: the core queue's promises, as assertions
\set ON_ERROR_STOP 1
\pset tuples_only on
\pset format unaligned
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS pgjq;
BEGIN;
SELECT plan(12);

SELECT has_schema('jq');
SELECT has_table('jq', 'job', 'the hot job table');
SELECT has_table('jq', 'job_result', 'the result table');
SELECT has_function('public', 'jq_enqueue', ARRAY['text', 'jsonb', 'integer', 'timestamp with time zone', 'text', 'bigint']);
SELECT is_definer('public', 'jq_dequeue', ARRAY['text', 'integer', 'integer'], 'jq_dequeue runs as definer');

SELECT lives_ok($$SELECT jq.jq_create_queue('tap')$$, 'create a queue');
SELECT throws_ok($$SELECT jq.jq_enqueue('tap', '5')$$, '22023', NULL, 'scalar payload refused');
SELECT throws_ok($$SELECT jq.jq_enqueue('nope', '{}')$$, '42704', 'queue "nope" does not exist');

SELECT jq.jq_enqueue('tap', '{"lane": "standard"}');
SELECT jq.jq_enqueue('tap', '{"lane": "urgent"}', priority => 10);
SELECT is((SELECT payload->>'lane' FROM jq.jq_dequeue('tap')), 'urgent', 'urgent first');

CREATE TEMP TABLE l AS SELECT * FROM jq.jq_dequeue('tap');
SELECT ok(NOT jq.jq_ack((SELECT job_id FROM l), (SELECT lease_token FROM l) + 1), 'stale token refused');
SELECT ok(jq.jq_ack((SELECT job_id FROM l), (SELECT lease_token FROM l), '{"s": 1}'), 'right token accepted');
SELECT ok(NOT jq.jq_ack((SELECT job_id FROM l), (SELECT lease_token FROM l)), 'second ack refused');

SELECT * FROM finish();
ROLLBACK;
