-- result: a job's state, result, attempts and timestamps by id
\set SHOW_CONTEXT never
SELECT 1 FROM jq.jq_create_queue('res');
SELECT jq.jq_enqueue('res', '{"n": 1}', priority => 3) AS j \gset
SELECT job_id = :j AS same_id, queue, state, result, attempts, priority,
       enqueued_at IS NOT NULL AS has_enqueued_at, run_at IS NOT NULL AS has_run_at,
       started_at, finished_at
  FROM jq.jq_result(:j);
SELECT lease_token AS tok FROM jq.jq_dequeue('res') \gset
SELECT state, attempts, started_at >= enqueued_at AS started, finished_at FROM jq.jq_result(:j);
SELECT jq.jq_ack(:j, :tok, '{"score": 7}');
SELECT state, result, attempts, finished_at >= started_at AS finished,
       run_at = enqueued_at AS run_at_kept
  FROM jq.jq_result(:j);

-- scheduled jobs report their run_at
SELECT jq.jq_enqueue('res', '{}', run_at => '2999-01-01 00:00:00+00') AS s \gset
SELECT state, run_at FROM jq.jq_result(:s);

-- unknown ids: no row, no error
SELECT count(*) FROM jq.jq_result(-1);
SELECT count(*) FROM jq.jq_result(NULL);
