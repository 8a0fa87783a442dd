-- install: CREATE EXTENSION lays out schema jq (tables, views and the jq_*
-- API) and the four roles
CREATE EXTENSION pgjq;

SELECT extname, extversion, extrelocatable, n.nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'pgjq';

-- tables, sequences and views live in jq
SELECT c.relname, c.relkind
  FROM pg_class c
 WHERE c.relnamespace = 'jq'::regnamespace AND c.relkind IN ('r', 'v', 'S')
 ORDER BY 1;

-- the API lives in jq and is called qualified (jq.jq_enqueue); nothing of
-- pgjq is in public
SELECT p.proname, p.prosecdef AS security_definer, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'jq'::regnamespace AND p.proname LIKE 'jq\_%'
 ORDER BY 1;
SELECT count(*) AS pgjq_objects_in_public
  FROM pg_depend d
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgjq')
   AND d.deptype = 'e'
   AND pg_describe_object(d.classid, d.objid, 0) ~ '\mpublic\.';

-- every SQL, PL/pgSQL and C function of the API pins its search_path
SELECT p.oid::regprocedure AS function_without_pinned_search_path
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgjq')
   -- C functions that run no SQL: nothing to resolve, and the row trigger
   -- and the functions called per row must stay cheap (a SET clause costs a
   -- GUC save and restore per call)
   AND p.proname NOT IN ('check_queue_name', 'count_trigger', 'queue_changed', 'lock_queue',
                         'limit', 'state_name', 'clip_error')
   -- an aggregate has no settings of its own: its state function pins them
   AND p.prokind <> 'a'
   -- a procedure that commits may have no SET clause (nor SECURITY DEFINER):
   -- below, it must be neither, and its statements name every object
   AND p.prokind <> 'p'
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false);

-- the waiting procedures run with the caller's rights and no settings
SELECT p.oid::regprocedure AS procedure, p.prosecdef, p.proconfig
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgjq')
   AND p.prokind = 'p'
 ORDER BY 1::text;

-- the roles exist and cannot log in
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'jq\_%' ORDER BY 1;

-- PUBLIC may execute none of the functions, nor read any table
SELECT p.oid::regprocedure AS public_can_execute
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgjq')
   AND EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE');
SELECT c.oid::regclass AS public_can_access
  FROM pg_class c
 WHERE c.relnamespace = 'jq'::regnamespace
   AND EXISTS (SELECT FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                WHERE a.grantee = 0);

-- the worker is loaded through shared_preload_libraries in these tests
SHOW shared_preload_libraries;
