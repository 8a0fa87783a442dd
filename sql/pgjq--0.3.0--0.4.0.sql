/*
 * pgjq 0.3.0 -> 0.4.0: scan bounds (src/bounds.c).
 *
 * jq_dequeue, the promotion of due jobs and the reclaim of expired leases
 * start their index scans at bounds kept in shared memory, past the dead
 * entries of jobs that have left the state the index holds.  The count
 * trigger tells the bounds where a job entered or left a state, so it must
 * fire for an UPDATE of any column of those indexes' keys.
 *
 * New: jq.jq_ack_dequeue, a worker's turn (complete the jobs it holds,
 * lease the next ones) in one call.
 */
\echo Use "ALTER EXTENSION pgjq UPDATE TO '0.4.0'" to load this file. \quit

DROP TRIGGER job_count ON jq.job;
CREATE TRIGGER job_count AFTER UPDATE OF queue_id, state, priority, run_at, lease_expires_at, id OR DELETE
    ON jq.job FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('job');

CREATE FUNCTION jq.scan_bounds(
    OUT state text, OUT queue_id integer, OUT priority integer,
    OUT at timestamptz, OUT id bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_scan_bounds';

CREATE FUNCTION jq.scan_bound(state "char", queue_id integer, priority integer,
                              OUT at timestamptz, OUT id bigint, OUT generation bigint)
RETURNS record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_scan_bound';

CREATE FUNCTION jq.advance_scan_bound(state "char", queue_id integer, priority integer,
                                      generation bigint, at timestamptz, id bigint)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_advance_scan_bound';

-- Drops a queue's bounds when the transaction commits (jq_drop_queue).
CREATE FUNCTION jq.forget_scan_bounds(queue_id integer)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_forget_scan_bounds';

CREATE OR REPLACE FUNCTION jq.jq_drop_queue(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qid integer;
    live bigint;
BEGIN
    qid := jq.queue_id(jq_drop_queue.name, lock => true);
    -- wait for the transactions adding jobs to the queue, keep new ones out
    PERFORM jq.lock_queue(qid);

    IF NOT coalesce(force, false) THEN
        SELECT count(*) INTO live FROM jq.job WHERE queue_id = qid;
        IF live > 0 THEN
            RAISE EXCEPTION 'queue "%" has unfinished jobs', jq_drop_queue.name
                USING ERRCODE = 'object_in_use',
                      DETAIL = format('Unfinished jobs (ready, scheduled or leased): %s.', live),
                      HINT = 'Drain the queue first, or pass force => true to drop its jobs too.';
        END IF;
    END IF;

    DELETE FROM jq.job WHERE queue_id = qid;
    DELETE FROM jq.job_result WHERE queue_id = qid;
    DELETE FROM jq.dead_letter WHERE queue_id = qid;
    DELETE FROM jq.idempotency_key WHERE queue_id = qid;
    DELETE FROM jq.stats_history WHERE queue_id = qid;
    UPDATE jq.alert SET cleared_at = clock_timestamp()
     WHERE queue_id = qid AND cleared_at IS NULL;
    DELETE FROM jq.queue WHERE queue_id = qid;
    PERFORM jq.forget_scan_bounds(qid);
END
$$;

CREATE OR REPLACE FUNCTION jq.promote_due(queue_id integer, max_jobs integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    n integer := 0;
    qids integer[];
    starts timestamptz[];
    generations bigint[];
    now timestamptz;
BEGIN
    -- each queue's scan bound, in a statement of its own: it must be read
    -- before the snapshot of the scan below (src/bounds.c); a queue whose
    -- bound is infinity has no scheduled job
    SELECT array_agg(q.queue_id), array_agg(b.at), array_agg(b.generation)
      INTO qids, starts, generations
      FROM jq.queue q CROSS JOIN LATERAL jq.scan_bound('s', q.queue_id, NULL) b
     WHERE (promote_due.queue_id IS NULL OR q.queue_id = promote_due.queue_id)
       AND b.at < 'infinity';
    IF qids IS NULL THEN
        RETURN 0;
    END IF;
    -- a variable, not clock_timestamp() in the query, so that it bounds the
    -- index scan rather than filtering every row it reads
    now := clock_timestamp();
    FOR r IN
        WITH bound AS (
            SELECT * FROM unnest(qids, starts, generations) AS u(queue_id, start, generation)
        ), promoted AS (
            UPDATE jq.job j SET state = 'r'
             WHERE j.id IN (SELECT d.id FROM bound b CROSS JOIN LATERAL
                              (SELECT x.id FROM jq.job x
                                WHERE x.queue_id = b.queue_id AND x.state = 's'
                                  AND x.run_at >= b.start AND x.run_at <= now
                                ORDER BY x.run_at
                                LIMIT greatest(promote_due.max_jobs, 1)
                                  FOR UPDATE SKIP LOCKED) d)
            RETURNING j.queue_id
        ), heads AS (
            -- the first scheduled job of each queue this snapshot sees from
            -- the bound on, promoted by this statement or not
            SELECT b.queue_id, b.generation,
                   (SELECT x.run_at FROM jq.job x
                     WHERE x.queue_id = b.queue_id AND x.state = 's' AND x.run_at >= b.start
                     ORDER BY x.run_at LIMIT 1) AS head
              FROM bound b
        )
        SELECT h.queue_id, h.generation, h.head,
               (SELECT count(*)::integer FROM promoted p WHERE p.queue_id = h.queue_id) AS jobs
          FROM heads h
    LOOP
        PERFORM jq.advance_scan_bound('s', r.queue_id, NULL, r.generation, r.head, NULL);
        IF r.jobs > 0 THEN
            PERFORM jq.wake_at_commit(r.queue_id);
            n := n + r.jobs;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION jq.reclaim_expired_leases(max_jobs integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    bound record;
    head timestamptz;
    now timestamptz;
BEGIN
    -- jq.job before jq.job_result and jq.dead_letter (src/queue.c)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    -- the leases' scan bound, before the snapshot of the scan (src/bounds.c)
    bound := jq.scan_bound('l', NULL, NULL);
    IF bound.at = 'infinity' THEN
        RETURN 0;
    END IF;
    now := clock_timestamp();
    SELECT count(*)::integer INTO n
      FROM jq.fail_leased(
             ARRAY(SELECT j.id FROM jq.job j
                    WHERE j.lease_expires_at >= bound.at AND j.lease_expires_at < now
                    ORDER BY j.lease_expires_at
                    LIMIT greatest(max_jobs, 1)
                      FOR UPDATE SKIP LOCKED),
             'lease expired', false, now, now);
    -- the first lease still there from the bound on (those just reclaimed
    -- are gone for this transaction; if it rolls back they lower the bound)
    SELECT min(j.lease_expires_at) INTO head
      FROM jq.job j WHERE j.lease_expires_at >= bound.at;
    PERFORM jq.advance_scan_bound('l', NULL, NULL, bound.generation, head, NULL);
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION jq.next_deadline()
RETURNS timestamptz
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT LEAST(
        (SELECT min(j.lease_expires_at) FROM jq.job j
          WHERE j.lease_expires_at >= (SELECT b.at FROM jq.scan_bound('l', NULL, NULL) b)),
        (SELECT min(x.run_at) FROM jq.queue q
           CROSS JOIN LATERAL jq.scan_bound('s', q.queue_id, NULL) b
           CROSS JOIN LATERAL
            (SELECT j.run_at FROM jq.job j
              WHERE j.queue_id = q.queue_id AND j.state = 's' AND j.run_at >= b.at
              ORDER BY j.run_at LIMIT 1) x
          WHERE b.at < 'infinity'))
$$;

CREATE OR REPLACE VIEW jq.queue_stats AS
WITH c AS MATERIALIZED (SELECT * FROM jq.counters()),
     -- where each lane's ready jobs begin: the oldest one is the first
     -- from there, past the dead entries of jobs handed out (src/bounds.c)
     b AS MATERIALIZED (SELECT * FROM jq.scan_bounds())
SELECT q.name AS queue,
       coalesce(sum(c.ready), 0)::bigint AS ready,
       coalesce(sum(c.scheduled), 0)::bigint AS scheduled,
       coalesce(sum(c.leased), 0)::bigint AS in_flight,
       coalesce(sum(c.dead), 0)::bigint AS dead,
       coalesce(jsonb_object_agg(c.priority::text, c.ready ORDER BY c.priority DESC)
                    FILTER (WHERE c.ready > 0), '{}') AS ready_by_priority,
       (SELECT clock_timestamp() - min(o.run_at)
          FROM c c2
          LEFT JOIN b ON b.state = 'ready' AND b.queue_id = c2.queue_id
                     AND b.priority = c2.priority
          CROSS JOIN LATERAL
               (SELECT j.run_at FROM jq.job j
                 WHERE j.queue_id = c2.queue_id AND j.state = 'r'
                   AND j.priority = c2.priority
                   AND (j.run_at, j.id) >= (coalesce(b.at, '-infinity'),
                                            coalesce(b.id, -9223372036854775808))
                 ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1) o
         WHERE c2.queue_id = q.queue_id AND c2.ready > 0) AS oldest_ready_age,
       coalesce(sum(c.enqueued_total), 0)::bigint AS enqueued_total,
       coalesce(sum(c.succeeded_total), 0)::bigint AS succeeded_total,
       coalesce(sum(c.failed_total), 0)::bigint AS failed_total,
       coalesce(sum(c.dead_lettered_total), 0)::bigint AS dead_lettered_total,
       coalesce(sum(c.cancelled_total), 0)::bigint AS cancelled_total,
       round((coalesce(sum(c.enqueued_total), 0) - h.enqueued_total)
             / greatest(extract(epoch FROM clock_timestamp() - h.sampled_at), 1) * 60, 1)
           AS enqueued_per_min,
       round((coalesce(sum(c.succeeded_total), 0) - h.succeeded_total)
             / greatest(extract(epoch FROM clock_timestamp() - h.sampled_at), 1) * 60, 1)
           AS succeeded_per_min,
       jq.counters_valid() AS counters_valid
  FROM jq.queue q
  LEFT JOIN c ON c.queue_id = q.queue_id
  LEFT JOIN LATERAL
       (SELECT s.sampled_at, s.enqueued_total, s.succeeded_total
          FROM jq.stats_history s
         WHERE s.queue_id = q.queue_id
           AND s.sampled_at >= clock_timestamp() - interval '90 seconds'
           AND s.counters_since IS NOT DISTINCT FROM
               (SELECT max(c3.since) FROM c c3 WHERE c3.queue_id = q.queue_id)
         ORDER BY s.sampled_at
         LIMIT 1) h ON true
 GROUP BY q.queue_id, q.name, h.sampled_at, h.enqueued_total, h.succeeded_total;

/*
 * A worker's turn in one call: complete the jobs it holds (ack each, or
 * fail it when its element of errors is not NULL) and lease the next ones,
 * in one round trip and one transaction.  The first three arguments are
 * jq_dequeue's; without job_ids it is jq_dequeue.
 */
CREATE FUNCTION jq.jq_ack_dequeue(
    queue text,
    max_jobs integer DEFAULT 1,
    lease_seconds integer DEFAULT NULL,
    job_ids bigint[] DEFAULT NULL,
    lease_tokens bigint[] DEFAULT NULL,
    results jsonb[] DEFAULT NULL,
    errors text[] DEFAULT NULL)
RETURNS TABLE (
    job_id bigint,
    lease_token bigint,
    attempt integer,
    priority integer,
    payload jsonb,
    enqueued_at timestamptz,
    lease_expires_at timestamptz)
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_ack_dequeue';

COMMENT ON FUNCTION jq.jq_ack_dequeue IS 'ack (or fail) the jobs a worker holds and lease the next ones, in one call';

REVOKE ALL ON FUNCTION jq.jq_ack_dequeue(text, integer, integer, bigint[], bigint[], jsonb[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.jq_ack_dequeue(text, integer, integer, bigint[], bigint[], jsonb[], text[]) TO jq_worker;

/*
 * Space back after a burst or a held snapshot (src/compact.c, docs/design.md
 * "Space after a held snapshot").  VACUUM frees the space of dead rows for
 * reuse but gives a btree's pages, and a table's pages short of its end,
 * back to the file system never.
 *
 * jq.compact_result_heap(max_rows) moves up to max_rows live rows of
 * jq.job_result off its last pages into the room before them, when a
 * quarter of the table can be emptied so and fewer than max_rows / 10
 * results came in since the last call, so that the next vacuum truncates
 * the file.
 */
CREATE FUNCTION jq.compact_result_heap(max_rows integer DEFAULT 10000)
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_compact_result_heap';

/*
 * jq.free_space(rel) is the fraction of a pgjq table or index that is
 * free: for a table, what its free space map records (as vacuum last left
 * it); for a btree index, what a rebuild would give back, read from its
 * pages.  NULL for other relations.
 */
CREATE FUNCTION jq.free_space(rel regclass)
RETURNS double precision
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_free_space';

/*
 * What jq.compact has seen and done, one row per table and index of jq.job
 * and jq.job_result (readable by jq_reader): baseline_bytes is the size it
 * first saw the relation at, or had when it last compacted it;
 * compacted_at and bytes_before say when it last did, and the size then.
 */
CREATE TABLE jq.compaction (
    relation       text PRIMARY KEY,
    baseline_bytes bigint NOT NULL,
    compacted_at   timestamptz,
    bytes_before   bigint
);

COMMENT ON TABLE jq.compaction IS 'pgjq: what jq.compact saw and did per table and index (sizes in bytes)';

/*
 * jq.compact(max_rows) gives space back after a burst or a held snapshot,
 * one step per call, so that each step holds its locks briefly: it
 * rebuilds one index of jq.job or jq.job_result that has grown past one
 * and a half times its baseline (and past 1 MB) and is more than half
 * free (jq.free_space:
 * while a snapshot still holds the dead entries, vacuum frees nothing and
 * a rebuild would keep them all; under steady churn an index empties and
 * fills again between vacuums, which the baseline tells apart), and
 * returns 1; or, with no such index, when jq.job_result has grown past
 * one and a half times its baseline, moves up to max_rows rows off its tail
 * (jq.compact_result_heap) and returns how many.  The rebuild holds a
 * SHARE lock on the table (writers wait) while it reads the table, which
 * vacuum has made small again by then; it waits at most 100 ms for the
 * lock and otherwise returns 0, to try again at the next call.  The
 * worker calls it every pgjq.stats_interval, until it returns 0, while
 * pgjq.compact is on.
 */
CREATE FUNCTION jq.compact(max_rows integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
AS $$
DECLARE
    r record;
    bytes bigint;
    baseline bigint;
    moved integer;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 1000000'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(max_rows::text, 'NULL'));
    END IF;
    -- jq.job's lock first, whatever comes next (the lock order)
    LOCK TABLE jq.job IN ROW EXCLUSIVE MODE;
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind, 'jq.' || c.relname AS name
          FROM pg_class c
         WHERE c.oid IN ('jq.job'::regclass, 'jq.job_result'::regclass)
            OR c.oid IN (SELECT x.indexrelid FROM pg_index x
                          WHERE x.indrelid IN ('jq.job'::regclass, 'jq.job_result'::regclass))
         ORDER BY pg_relation_size(c.oid) DESC, c.relname
    LOOP
        bytes := pg_relation_size(r.rel);
        INSERT INTO jq.compaction (relation, baseline_bytes) VALUES (r.name, bytes)
            ON CONFLICT (relation) DO NOTHING;
        SELECT c.baseline_bytes INTO baseline FROM jq.compaction c WHERE c.relation = r.name;
        CONTINUE WHEN bytes <= greatest(baseline * 3 / 2, 1024 * 1024);
        IF r.relkind = 'i' AND jq.free_space(r.rel) >= 0.5 THEN
            BEGIN
                EXECUTE format('REINDEX INDEX %s', r.rel);
            EXCEPTION WHEN lock_not_available THEN
                RETURN 0;       -- busy: the next call tries again
            END;
            UPDATE jq.compaction
               SET baseline_bytes = bytes, compacted_at = clock_timestamp(), bytes_before = bytes
             WHERE relation = r.name;
            RAISE LOG 'pgjq: rebuilt index % to give its space back (% bytes before, % after)',
                r.name, bytes, pg_relation_size(r.rel);
            RETURN 1;
        ELSIF r.rel = 'jq.job_result'::regclass THEN
            moved := jq.compact_result_heap(max_rows);
            IF moved > 0 THEN
                UPDATE jq.compaction
                   SET compacted_at = clock_timestamp(), bytes_before = bytes
                 WHERE relation = r.name;
                RAISE LOG 'pgjq: moved % rows of jq.job_result off its tail for vacuum to truncate', moved;
                RETURN moved;
            END IF;
        END IF;
    END LOOP;
    RETURN 0;
END
$$;

REVOKE ALL ON FUNCTION jq.compact(integer), jq.compact_result_heap(integer),
    jq.free_space(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.free_space(regclass) TO jq_reader;
GRANT SELECT ON jq.compaction TO jq_reader;

REVOKE ALL ON FUNCTION jq.scan_bounds(), jq.scan_bound("char", integer, integer),
    jq.advance_scan_bound("char", integer, integer, bigint, timestamptz, bigint),
    jq.forget_scan_bounds(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.scan_bounds() TO jq_reader;

-- Bounds are only installed for a schema whose count trigger notes every
-- change they need: have the worker rebuild the counters now, which
-- installs them (the totals restart from the tables).
SELECT jq.reset_counters();
