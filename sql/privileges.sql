-- privileges: each role can do its job and no more; PUBLIC can do nothing
\set SHOW_CONTEXT never
SELECT 1 FROM jq.jq_create_queue('priv');
CREATE ROLE regress_producer LOGIN IN ROLE jq_producer;
CREATE ROLE regress_worker LOGIN IN ROLE jq_worker;
CREATE ROLE regress_reader LOGIN IN ROLE jq_reader;
CREATE ROLE regress_admin LOGIN IN ROLE jq_admin;
CREATE ROLE regress_nobody LOGIN;

-- a producer enqueues and reads results, nothing else
SET ROLE regress_producer;
SHOW search_path;
SELECT jq.jq_enqueue('priv', '{"from": "producer"}') AS pj \gset
SELECT state FROM jq.jq_result(:pj);
SELECT * FROM jq.jq_dequeue('priv');
SELECT jq.jq_ack(:pj, 1);
SELECT jq.jq_create_queue('mine');
SELECT jq.jq_fail(:pj, 1, 'no');
SELECT jq.jq_extend(:pj, 1);
SELECT jq.jq_redrive('priv');
-- a producer may cancel: it withdraws what it submitted
SELECT jq.jq_enqueue('priv', '{"from": "producer", "withdrawn": true}') AS wj \gset
SELECT jq.jq_cancel(:wj) AS cancelled;
SELECT count(*) FROM jq.job;
SELECT count(*) FROM jq.queue;
RESET ROLE;

-- a worker dequeues and acks, with the default search_path and no schema
SET ROLE regress_worker;
SELECT job_id = :pj AS got_it, lease_token AS tok FROM jq.jq_dequeue('priv') \gset
SELECT jq.jq_extend(:pj, :tok) IS NOT NULL AS extended;
SELECT jq.jq_ack(:pj, :tok, '{"done": true}') AS acked;
SELECT state, result FROM jq.jq_result(:pj);
SELECT jq.jq_enqueue('priv', '{}');
SELECT jq.jq_alter_queue('priv', max_attempts => 1);
SELECT jq.jq_drop_queue('priv', force => true);
SELECT jq.jq_cancel(:pj);
SELECT jq.jq_redrive('priv');
SELECT count(*) FROM jq.dead_letter;
SELECT payload FROM jq.job;
UPDATE jq.job SET state = 'r';
RESET ROLE;

-- a reader sees queues and their settings, never jobs or payloads
SET ROLE regress_reader;
SELECT name FROM jq.jq_list_queues() WHERE name = 'priv';
SELECT name, max_attempts FROM jq.queue WHERE name = 'priv';
SELECT payload FROM jq.job;
SELECT result FROM jq.job_result;
SELECT payload FROM jq.dead_letter;
SELECT key FROM jq.idempotency_key;
SELECT * FROM jq.jq_result(:pj);
SELECT jq.jq_enqueue('priv', '{}');
RESET ROLE;

-- an admin manages queues and can do what the others do
SET ROLE regress_admin;
SELECT name FROM jq.jq_create_queue('admin_made');
SELECT lease_seconds FROM jq.jq_alter_queue('admin_made', lease_seconds => 10);
SELECT jq.jq_enqueue('admin_made', '{}') > 0 AS enqueued;
SELECT jq.jq_fail(job_id, lease_token, 'admin fails it', permanent => true) FROM jq.jq_dequeue('admin_made');
SELECT queue, last_error FROM jq.dead_letter WHERE queue = 'admin_made';
SELECT jq.jq_redrive('admin_made') AS redriven;
SELECT jq.jq_drop_queue('admin_made', force => true);
RESET ROLE;

-- a role with no grant can do nothing at all
SET ROLE regress_nobody;
SELECT jq.jq_enqueue('priv', '{}');
SELECT * FROM jq.jq_dequeue('priv');
SELECT jq.jq_ack(1, 1);
SELECT * FROM jq.jq_ack_batch('{1}', '{1}');
SELECT * FROM jq.jq_enqueue_batch('priv', ARRAY['{}']::jsonb[]);
SELECT * FROM jq.jq_result(1);
SELECT * FROM jq.jq_list_queues();
SELECT jq.jq_create_queue('nobody');
SELECT count(*) FROM jq.queue;
SELECT count(*) FROM jq.job;
SELECT nextval('jq.job_id_seq');
SELECT jq.check_queue_name('x');
SELECT jq.jq_fail(1, 1, 'x');
SELECT jq.jq_extend(1, 1);
SELECT jq.jq_cancel(1);
SELECT jq.jq_redrive('priv');
SELECT jq.reclaim_expired_leases();
RESET ROLE;

DROP ROLE regress_producer, regress_worker, regress_reader, regress_admin, regress_nobody;
