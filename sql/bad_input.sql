-- bad_input: every bad argument gets an ERROR with its SQLSTATE and leaves
-- nothing behind
\set SHOW_CONTEXT never
SELECT 1 FROM jq.jq_create_queue('bad', max_payload_bytes => 100);
SELECT jq.jq_enqueue('bad', '{"keep": 1}') AS kept \gset
SELECT count(*) AS jobs_before FROM jq.job \gset

-- try(call) runs one call and reports its SQLSTATE, message, detail and hint
-- (context: the error's own context, such as the element of a batch at
-- fault, without the lines of try itself and of the API's PL/pgSQL)
CREATE FUNCTION pg_temp.try(call text, OUT code text, OUT message text,
                            OUT detail text, OUT hint text, OUT context text)
LANGUAGE plpgsql AS $$
DECLARE
    line text;
    frames text;
BEGIN
    EXECUTE call;
    code := '00000';
    message := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT,
                            frames = PG_EXCEPTION_CONTEXT;
    -- the innermost lines, before the first frame of a function
    FOREACH line IN ARRAY string_to_array(frames, E'\n') LOOP
        EXIT WHEN line ~ '^(PL/pgSQL |SQL statement |SQL function )';
        context := concat_ws(E'\n', context, line);
    END LOOP;
END
$$;

\x on
SELECT call, t.*
  FROM (VALUES
        -- unknown queue, with a hint to create it
        (1, 'SELECT jq.jq_enqueue(''nosuch'', ''{}'')'),
        (2, 'SELECT * FROM jq.jq_dequeue(''nosuch'')'),
        (3, 'SELECT jq.jq_enqueue_batch(''nosuch'', ARRAY[''{}'']::jsonb[])'),
        -- invalid and NULL queue names
        (4, 'SELECT jq.jq_enqueue(''Bad'', ''{}'')'),
        (5, 'SELECT jq.jq_enqueue(''bad queue'', ''{}'')'),
        (6, 'SELECT jq.jq_enqueue(''bad''''; DROP TABLE jq.job; --'', ''{}'')'),
        (7, 'SELECT jq.jq_enqueue('''', ''{}'')'),
        (8, 'SELECT jq.jq_enqueue(NULL, ''{}'')'),
        (9, 'SELECT * FROM jq.jq_dequeue(NULL)'),
        (10, 'SELECT * FROM jq.jq_dequeue(repeat(''q'', 1000))'),
        -- payloads: NULL, scalars, too large
        (11, 'SELECT jq.jq_enqueue(''bad'', NULL)'),
        (12, 'SELECT jq.jq_enqueue(''bad'', ''42'')'),
        (13, 'SELECT jq.jq_enqueue(''bad'', ''"text"'')'),
        (14, 'SELECT jq.jq_enqueue(''bad'', ''null'')'),
        (15, 'SELECT jq.jq_enqueue(''bad'', ''true'')'),
        (16, 'SELECT jq.jq_enqueue(''bad'', jsonb_build_object(''big'', repeat(''x'', 200)))'),
        (17, 'SELECT jq.jq_enqueue_batch(''bad'', NULL)'),
        (18, 'SELECT jq.jq_enqueue_batch(''bad'', ''{}'')'),
        (19, 'SELECT jq.jq_enqueue_batch(''bad'', ARRAY[''{}'', ''1'']::jsonb[])'),
        (20, 'SELECT jq.jq_enqueue_batch(''bad'', ARRAY[[''{}''], [''{}'']]::jsonb[])'),
        (21, 'SELECT jq.jq_enqueue_batch(''bad'', (SELECT array_agg(''{}''::jsonb) FROM generate_series(1, 10001)))'),
        -- priority out of range
        (22, 'SELECT jq.jq_enqueue(''bad'', ''{}'', priority => 101)'),
        (23, 'SELECT jq.jq_enqueue(''bad'', ''{}'', priority => -101)'),
        (24, 'SELECT jq.jq_enqueue(''bad'', ''{}'', priority => 2147483647)'),
        -- run_at not finite
        (25, 'SELECT jq.jq_enqueue(''bad'', ''{}'', run_at => ''infinity'')'),
        (26, 'SELECT jq.jq_enqueue(''bad'', ''{}'', run_at => ''-infinity'')'),
        -- max_jobs and lease out of range
        (27, 'SELECT * FROM jq.jq_dequeue(''bad'', max_jobs => 0)'),
        (28, 'SELECT * FROM jq.jq_dequeue(''bad'', max_jobs => -1)'),
        (29, 'SELECT * FROM jq.jq_dequeue(''bad'', max_jobs => 10001)'),
        (30, 'SELECT * FROM jq.jq_dequeue(''bad'', lease_seconds => 0)'),
        (31, 'SELECT * FROM jq.jq_dequeue(''bad'', lease_seconds => -5)'),
        (32, 'SELECT * FROM jq.jq_dequeue(''bad'', lease_seconds => 86401)'),
        -- ack: NULLs, mismatched and bad arrays
        (33, 'SELECT jq.jq_ack(NULL, 1)'),
        (34, 'SELECT jq.jq_ack(1, NULL)'),
        (35, 'SELECT * FROM jq.jq_ack_batch(NULL, ''{1}'')'),
        (36, 'SELECT * FROM jq.jq_ack_batch(''{1,2}'', ''{1}'')'),
        (37, 'SELECT * FROM jq.jq_ack_batch(''{1,NULL}'', ''{1,2}'')'),
        (38, 'SELECT * FROM jq.jq_ack_batch(''{1,2}'', ''{1,NULL}'')'),
        (39, 'SELECT * FROM jq.jq_ack_batch(''{1,1}'', ''{1,2}'')'),
        (40, 'SELECT * FROM jq.jq_ack_batch(''{1,2}'', ''{1,2}'', ARRAY[''{}'']::jsonb[])'),
        (41, 'SELECT * FROM jq.jq_ack_batch(''{{1},{2}}'', ''{{1},{2}}'')'),
        (42, 'SELECT * FROM jq.jq_ack_batch((SELECT array_agg(g) FROM generate_series(1, 10001) g), (SELECT array_agg(g) FROM generate_series(1, 10001) g))'),
        -- queue management: names and settings
        (43, 'SELECT jq.jq_create_queue(repeat(''q'', 49))'),
        (44, 'SELECT jq.jq_create_queue(''bad'')'),
        (45, 'SELECT jq.jq_create_queue(''x'', lease_seconds => -1)'),
        (46, 'SELECT jq.jq_alter_queue(''nosuch'', lease_seconds => 10)'),
        (47, 'SELECT jq.jq_alter_queue(''bad'', max_payload_bytes => 0)'),
        (48, 'SELECT jq.jq_drop_queue(''nosuch'')'),
        (49, 'SELECT jq.jq_drop_queue(''bad'')'),
        (50, 'SELECT jq.jq_drop_queue(NULL)'),
        -- the failure path (more in fail.sql and lease_control.sql)
        (51, 'SELECT jq.jq_fail(NULL, 1, ''x'')'),
        (52, 'SELECT jq.jq_fail(1, 1, NULL)'),
        (53, 'SELECT jq.jq_fail(1, 1, ''x'', retry_in => ''-1 s'')'),
        (54, 'SELECT jq.jq_extend(1, NULL)'),
        (55, 'SELECT jq.jq_extend(1, 1, 0)'),
        (56, 'SELECT jq.jq_cancel(NULL)'),
        (57, 'SELECT jq.jq_redrive(''nosuch'')'),
        (58, 'SELECT jq.jq_redrive(''Bad Name'')'),
        (59, 'SELECT jq.jq_redrive(NULL)'),
        (60, 'SELECT jq.jq_enqueue(''bad'', ''{}'', idempotency_key => '''')'),
        (61, 'SELECT jq.jq_enqueue(''bad'', ''{}'', idempotency_key => repeat(''k'', 10000))'),
        (62, 'SELECT jq.jq_create_queue(''x'', dead_letter_retention => ''1 day'')')
       ) AS v(n, call), LATERAL pg_temp.try(call) AS t
 ORDER BY n;
\x off


-- nothing changed: the one job is still there, ready, untouched
SELECT count(*) = :jobs_before AS same_count FROM jq.job;
SELECT state, attempts FROM jq.jq_result(:kept);

-- documented non-errors: unknown ids give NULL, false or 0
SELECT jq.jq_fail(987654, 1, 'x') AS fail_unknown, jq.jq_extend(987654, 1) AS extend_unknown,
       jq.jq_cancel(987654) AS cancel_unknown, jq.jq_redrive('bad', ARRAY[987654]) AS redrive_unknown;

-- a job id is never handed out twice: ids of failed enqueues are simply skipped
SELECT jq.jq_enqueue('bad', '{}') > :kept AS next_id_larger;
