-- calling_convention: the API is called qualified, jq.jq_enqueue(...), and
-- a qualified call cannot be captured.  Where PUBLIC may create in schema
-- public (PostgreSQL 14's default, kept by every database upgraded from
-- it), an attacker's look-alike there captures an unqualified call that
-- finds it, with the caller's rights: PostgreSQL picks the best-matching
-- signature among all schemas on the search_path, whatever their order.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SELECT 1 FROM jq.jq_create_queue('cc');

-- a database as PostgreSQL 14 made it
GRANT CREATE ON SCHEMA public TO PUBLIC;

CREATE ROLE regress_attacker LOGIN;
CREATE ROLE regress_app LOGIN IN ROLE jq_producer, jq_worker;
CREATE ROLE regress_ops LOGIN IN ROLE jq_admin;

-- the check names the schema, and whose path it is on
SELECT schema, on_path_of ~ 'regress_app \(the default search_path\)' AS app_listed,
       on_path_of ~ 'regress_ops' AS ops_listed, problem, hint
  FROM jq.jq_security_check();

-- the attacker, who may only create in public, plants look-alikes of the
-- calls the README and the example workers make, and logs who ran them
SET ROLE regress_attacker;
CREATE TABLE public.loot (who text, what text);
GRANT INSERT ON public.loot TO PUBLIC;
CREATE FUNCTION public.jq_enqueue(queue text, payload text) RETURNS bigint
    LANGUAGE sql AS $$
        INSERT INTO public.loot VALUES (current_user, 'jq_enqueue ' || payload);
        SELECT -1::bigint $$;
-- psycopg sends small Python ints as int2
CREATE FUNCTION public.jq_ack(smallint, bigint, text) RETURNS boolean
    LANGUAGE sql AS $$
        INSERT INTO public.loot VALUES (current_user, 'jq_ack ' || $3);
        SELECT true $$;
CREATE FUNCTION public.jq_dequeue(text, integer)
    RETURNS TABLE (job_id bigint, lease_token bigint)
    LANGUAGE sql AS $$
        INSERT INTO public.loot VALUES (current_user, 'jq_dequeue');
        SELECT 0::bigint, 0::bigint $$;
RESET ROLE;

-- the documented calls, by the application and by an operator: not one
-- look-alike runs
SET ROLE regress_app;
SELECT jq.jq_enqueue('cc', '{"copy_id": 42}') > 0 AS enqueued;
SELECT job_id AS j, lease_token AS t FROM jq.jq_dequeue('cc', 10) \gset
PREPARE ack_as_psycopg(int2, int8) AS SELECT jq.jq_ack($1, $2, '{"score": 1}');
EXECUTE ack_as_psycopg(:j, :t);
SELECT state, result FROM jq.jq_result(:j);
RESET ROLE;
SET ROLE regress_ops;
SELECT jq.jq_enqueue('cc', '{"copy_id": 43}') > 0 AS enqueued_by_ops;
RESET ROLE;
SELECT count(*) AS look_alikes_run FROM public.loot;

-- the same calls unqualified, by a session that put jq on its path: the
-- look-alikes win, with the caller's rights (this is what the convention
-- prevents)
SET search_path = jq, public;
SET ROLE regress_ops;
SELECT jq_enqueue('cc', '{"copy_id": 44}') AS captured_id;
RESET ROLE;
SET ROLE regress_app;
EXECUTE ack_as_psycopg(:j, :t);
PREPARE ack_unqualified(int2, int8) AS SELECT jq_ack($1, $2, '{"score": 1}');
EXECUTE ack_unqualified(:j, :t);
-- with public first, the exact match there takes every worker's dequeue
SET search_path = public, jq;
SELECT job_id, lease_token FROM jq_dequeue('cc', 10);
RESET ROLE;
RESET search_path;
SELECT who, what FROM public.loot ORDER BY what;
DEALLOCATE ack_as_psycopg;
DEALLOCATE ack_unqualified;

-- CREATE EXTENSION warns in such a database
\set regress_db :DBNAME
CREATE DATABASE regress_cc_db;
\c regress_cc_db
GRANT CREATE ON SCHEMA public TO PUBLIC;
SET client_min_messages = warning;
-- (terse: the detail names the roles, among them the one running the test)
\set VERBOSITY terse
CREATE EXTENSION pgjq;
\c :regress_db
DROP DATABASE regress_cc_db;

-- back to PostgreSQL 15's default: nothing to report
DROP TABLE public.loot;
DROP FUNCTION public.jq_enqueue(text, text), public.jq_ack(smallint, bigint, text),
              public.jq_dequeue(text, integer);
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT count(*) AS problems FROM jq.jq_security_check();
DROP ROLE regress_attacker, regress_app, regress_ops;
