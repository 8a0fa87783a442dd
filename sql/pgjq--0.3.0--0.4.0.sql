/*
 * pgjq 0.3.0 -> 0.4.0: dequeue bounds (src/lanes.c).
 *
 * The count trigger now also tells the dequeue bounds where a job became
 * ready, so it must fire for an UPDATE of any column of the ready index's
 * key; jq.lane_bounds() shows the bounds.
 */
\echo Use "ALTER EXTENSION pgjq UPDATE TO '0.4.0'" to load this file. \quit

DROP TRIGGER job_count ON jq.job;
CREATE TRIGGER job_count AFTER UPDATE OF queue_id, state, priority, run_at, id OR DELETE
    ON jq.job FOR EACH ROW EXECUTE FUNCTION jq.count_trigger('job');

CREATE FUNCTION jq.lane_bounds(
    OUT queue_id integer, OUT priority integer, OUT run_at timestamptz, OUT id bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgjq_lane_bounds';

REVOKE ALL ON FUNCTION jq.lane_bounds() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jq.lane_bounds() TO jq_reader;

-- Bounds are only installed for a schema whose count trigger notes every
-- change they need: have the worker rebuild the counters now, which
-- installs them (the totals restart from the tables).
SELECT jq.reset_counters();
