-- search_path: look-alike functions and operators in a schema first on the
-- caller's search_path are never used by the SECURITY DEFINER API
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SELECT 1 FROM jq.jq_create_queue('trap');
CREATE ROLE regress_trapper LOGIN IN ROLE jq_producer, jq_worker;
CREATE SCHEMA trap AUTHORIZATION regress_trapper;
SET ROLE regress_trapper;

-- the trapper's log of every look-alike that ran
CREATE TABLE trap.hits (what text);
CREATE FUNCTION trap.hit(what text) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO trap.hits VALUES (what) RETURNING true $$;

-- look-alikes of what the API's SQL uses: comparisons, casts, builtins
CREATE FUNCTION trap.eq8(bigint, bigint) RETURNS boolean LANGUAGE sql
    AS $$ SELECT trap.hit('= bigint') AND $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR trap.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = trap.eq8);
CREATE FUNCTION trap.eq4(integer, integer) RETURNS boolean LANGUAGE sql
    AS $$ SELECT trap.hit('= integer') AND $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR trap.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = trap.eq4);
CREATE FUNCTION trap.eqt(text, text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT trap.hit('= text') AND $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR trap.= (LEFTARG = text, RIGHTARG = text, FUNCTION = trap.eqt);
CREATE FUNCTION trap.clock_timestamp() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT CASE WHEN trap.hit('clock_timestamp') THEN pg_catalog.clock_timestamp() END $$;
CREATE FUNCTION trap.now() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT CASE WHEN trap.hit('now') THEN pg_catalog.now() END $$;
CREATE FUNCTION trap.random() RETURNS double precision LANGUAGE sql
    AS $$ SELECT CASE WHEN trap.hit('random') THEN 0.5 END $$;
CREATE FUNCTION trap.format(text, text) RETURNS text LANGUAGE sql
    AS $$ SELECT CASE WHEN trap.hit('format') THEN 'x' END $$;
-- an exact-type match beats the variadic builtin jq.fail_leased calls
CREATE FUNCTION trap.jsonb_build_object(text, integer, text, text, text, timestamptz)
    RETURNS jsonb LANGUAGE sql
    AS $$ SELECT CASE WHEN trap.hit('jsonb_build_object') THEN '{}'::jsonb END $$;
CREATE FUNCTION trap.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql
    AS $$ SELECT x FROM pg_catalog.unnest($1) x WHERE trap.hit('unnest') $$;

-- the trap comes first, even before pg_catalog
SET search_path = trap, pg_catalog, public;
SELECT 1 OPERATOR(pg_catalog.=) 1 AS sanity, (SELECT count(*) FROM trap.hits) AS hits_so_far;
SELECT 1::bigint = 1::bigint AS trap_works_for_the_caller;
DELETE FROM trap.hits;

-- the whole life of a job through the API
SELECT jq.jq_enqueue('trap', '{"n": 1}') > 0 AS enqueued;
SELECT cardinality(jq.jq_enqueue_batch('trap', ARRAY['{"n": 2}', '{"n": 3}']::jsonb[],
                                           idempotency_keys => ARRAY['a', 'b'])) AS batch;
SELECT jq.jq_enqueue('trap', '{"n": 4}', idempotency_key => 'a') > 0 AS keyed;
-- (the test's own statements avoid "=": for the caller it is the trap's)
SELECT job_id AS j1, lease_token AS t1 FROM jq.jq_dequeue('trap', 1) \gset
SELECT job_id AS j2, lease_token AS t2 FROM jq.jq_dequeue('trap', 1) \gset
SELECT job_id AS j3, lease_token AS t3 FROM jq.jq_dequeue('trap', 1) \gset
SELECT jq.jq_extend(:j1, :t1) IS NOT NULL AS extended;
SELECT jq.jq_ack(:j1, :t1, '{"ok": true}') AS acked;
SELECT jq.jq_fail(:j2, :t2, 'no') AS failed;
SELECT acked FROM jq.jq_ack_batch(ARRAY[:j3]::bigint[], ARRAY[:t3]::bigint[]);
SELECT state FROM jq.jq_result(:j1);
SELECT jq.jq_cancel(:j2) AS cancelled;
SELECT count(*) AS left_over FROM jq.jq_dequeue('trap', 10);

-- not one look-alike ran inside the API
RESET search_path;
SELECT count(*) AS look_alikes_used, string_agg(DISTINCT what, ', ') AS which FROM trap.hits;
RESET ROLE;
DROP SCHEMA trap CASCADE;
DROP ROLE regress_trapper;
