#!/usr/bin/env bash
# make demo: a short end-to-end run of pgjq, from a fresh Debian machine.
#
#  1. installs what it needs, builds and installs pgjq (as make test does);
#  2. starts a throwaway cluster in a temporary directory;
#  3. a producer enqueues 40 "ad copy scoring" jobs: 35 standard ones in one
#     jq_enqueue_batch call, then 5 urgent ones, each in its own transaction,
#     and shows that a rolled-back enqueue leaves no job;
#  4. two workers drain the queue at the same time (jq_dequeue, score the
#     copy in SQL, jq_ack with the score as the job's result); the second
#     joins once the first has its first batch (see worker() below);
#  5. prints every job's result from jq_result, checks that the urgent jobs
#     went first, and that every job was done exactly once (exit 1 if not).
#
# The cluster is stopped and the directory removed on exit, on failure and
# on Ctrl-C alike.
source "$(dirname "$0")/common.sh"

START=$(date +%s%N)
PORT=${PGJQ_DEMO_PORT:-5492}
# jobs a worker leases per jq_dequeue call; as many as there are urgent jobs,
# so the first call takes exactly the urgent ones (checked in section 5)
MAX_JOBS=5
WORK_MS_PER_JOB=20  # pretend scoring takes this long, so both workers get work

ensure_packages "${BASE_PACKAGES[@]}"
build_install

WORK=$(mktemp -d /tmp/pgjq-demo.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg
WORKER_PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${WORKER_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    cluster_stop "$PGDIR"
    rm -rf "$WORK"
    [ "$rc" -eq 0 ] || echo "demo: stopped the cluster and removed $WORK (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pg [psql args]: psql as the postgres user against the demo cluster
pg() {
    as_pg psql -h "$PGDIR" -p "$PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

log "starting a throwaway cluster in $PGDIR (port $PORT)"
cluster_start "$PGDIR" "$PORT"

# ---------------------------------------------------------------------------
log "1. create the extension and the queue"
pg -At <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pgjq;
SELECT format('  queue %s: lease %s s, max %s attempts', name, lease_seconds, max_attempts)
  FROM jq_create_queue('scoring', lease_seconds => 30);
-- the producer's own bookkeeping: the ids it got back (not part of pgjq)
CREATE TABLE demo_enqueued (job_id bigint PRIMARY KEY, lane text NOT NULL, copy text NOT NULL);
SQL

# ---------------------------------------------------------------------------
log "2. producer: enqueue 40 ad copies"

URGENT_COPY=(
    "Flash sale ends at midnight: order your espresso machine now"
    "Winter boots back in stock today. Shop before they are gone"
    "Miracle serum with guaranteed results overnight, buy now"
    "Limited drop of 200 signed vinyl records. Get yours"
    "Our new stroller folds in one second flat."
)

{
cat <<'SQL'
\echo '  35 standard jobs (priority 0), one jq_enqueue_batch call, one transaction:'
BEGIN;
-- 7 products x 5 pitches: deterministic standard ad copy
CREATE TEMP TABLE standard_copy AS
SELECT row_number() OVER (ORDER BY p.n, t.n) AS n, format(t.pitch, p.product) AS copy
  FROM unnest(ARRAY['trail shoe', 'coffee grinder', 'desk lamp', 'yoga mat',
                    'backpack', 'rain jacket', 'water bottle'])
       WITH ORDINALITY AS p(product, n),
       unnest(ARRAY['Meet the new %s. Shop now!',
                    'The %s everyone talks about, guaranteed lowest price. Buy today',
                    'A %s that is lighter, stronger and yours.',
                    'Free shipping on every %s this week. Order today',
                    'This %s is a miracle that cures bad mornings'])
       WITH ORDINALITY AS t(pitch, n);
-- t0, the call and t1 are evaluated in this order, so t1 - t0 is the call
SELECT ids, t0, t1
  FROM (SELECT clock_timestamp() AS t0,
               jq_enqueue_batch('scoring',
                   (SELECT array_agg(jsonb_build_object('copy', copy) ORDER BY n)
                      FROM standard_copy)) AS ids,
               clock_timestamp() AS t1
        OFFSET 0) e \gset
-- ids come back in the order of the payloads
INSERT INTO demo_enqueued
SELECT i.id, 'standard', c.copy
  FROM unnest(:'ids'::bigint[]) WITH ORDINALITY AS i(id, n) JOIN standard_copy c USING (n);
COMMIT;
SELECT format('    job ids %s..%s (%s jobs) in %s ms',
              (:'ids'::bigint[])[1], (:'ids'::bigint[])[cardinality(:'ids'::bigint[])],
              cardinality(:'ids'::bigint[]),
              round(extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz) * 1000, 3));
\echo '  5 urgent jobs (priority 10), enqueued after the batch, one transaction each:'
SQL
for copy in "${URGENT_COPY[@]}"; do
    cat <<SQL
BEGIN;
SELECT id, t0, t1
  FROM (SELECT clock_timestamp() AS t0,
               jq_enqueue('scoring', jsonb_build_object('copy', \$ad\$$copy\$ad\$), priority => 10) AS id,
               clock_timestamp() AS t1
        OFFSET 0) e \gset
INSERT INTO demo_enqueued VALUES (:id, 'urgent', \$ad\$$copy\$ad\$);
COMMIT;
SELECT format('    job %s in %s ms: %s', :id,
              round(extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz) * 1000, 3),
              \$ad\$$copy\$ad\$);
SQL
done
cat <<'SQL'
\echo '  an enqueue whose transaction rolls back:'
BEGIN;
SELECT jq_enqueue('scoring', '{"copy": "A draft the editor threw away"}') AS id \gset
INSERT INTO demo_enqueued VALUES (:id, 'draft', 'A draft the editor threw away');
SELECT format('    job %s enqueued, state inside the transaction: %s', :id,
              (SELECT state FROM jq_result(:id)));
ROLLBACK;
SELECT format('    after ROLLBACK: jq_result(%s) returns %s rows, so there is no such job',
              :id, (SELECT count(*) FROM jq_result(:id)));
SQL
} | pg -At

# ---------------------------------------------------------------------------
log "3. two workers drain the queue (jq_dequeue max_jobs => $MAX_JOBS, score, jq_ack)"

# One round of a worker, three transactions: lease up to MAX_JOBS jobs, do
# the work (a short sleep standing in for real scoring), then score each
# copy in SQL and ack it with the score as its result.  Prints one
# "job_id|acked" line per job; nothing when the queue is empty.
WORKER_ROUND_SQL=$(cat <<'SQL'
SELECT coalesce(jsonb_agg(d), '[]') AS batch, count(*) AS got, count(*) > 0 AS has_jobs
  FROM (SELECT job_id, lease_token, payload
          FROM jq_dequeue('scoring', max_jobs => :max_jobs)) d \gset
\if :has_jobs
SELECT pg_sleep(:got * :work_ms / 1000.0) \g /dev/null
SELECT j.job_id,
       jq_ack(j.job_id, j.lease_token,
              result => jsonb_build_object('score', s.score, 'worker', :'worker',
                                           'notes', s.notes))
  FROM jsonb_to_recordset(:'batch') AS j(job_id bigint, lease_token bigint, payload jsonb),
       LATERAL (SELECT j.payload->>'copy' AS copy) c,
       LATERAL (
           -- a cheap, deterministic score out of 100
           SELECT greatest(0, least(100,
                      50
                      + CASE WHEN length(c.copy) BETWEEN 20 AND 60 THEN 20 ELSE -10 END
                      + CASE WHEN c.copy ~* '\m(shop|buy|order|get)\M' THEN 30 ELSE 0 END
                      - 40 * cardinality(b.banned))) AS score,
                  concat_ws(', ',
                      CASE WHEN length(c.copy) > 60 THEN 'long' WHEN length(c.copy) < 20 THEN 'short' END,
                      CASE WHEN c.copy !~* '\m(shop|buy|order|get)\M' THEN 'no CTA' END,
                      CASE WHEN cardinality(b.banned) > 0
                           THEN array_to_string(b.banned, '+') END) AS notes
             FROM (SELECT ARRAY(SELECT w FROM unnest(ARRAY['guaranteed', 'miracle', 'cures']) w
                                 WHERE c.copy ~* ('\m' || w || '\M')) AS banned) b
       ) s;
\endif
SQL
)

# worker NAME [AFTER]: rounds until jq_dequeue returns no rows; logs the
# "job_id|acked" lines to $WORK/NAME.log.  With AFTER (the first worker's
# name), the worker comes online once AFTER has done its first round (or is
# gone).  Two first calls at the same instant would split the urgent jobs
# between them, each topped up with standard ones, and started_at could not
# tell who went first; this way the first pick is one call, and from then
# on both workers pull at the same time.
worker() {
    local name=$1 after=${2:-} round=0 out ids
    if [ -n "$after" ]; then
        while [ ! -e "$WORK/$after.round1" ] && kill -0 "${WORKER_PIDS[0]}" 2>/dev/null; do
            sleep 0.02
        done
    fi
    while :; do
        round=$((round + 1))
        out=$(pg -At -v worker="$name" -v max_jobs=$MAX_JOBS -v work_ms=$WORK_MS_PER_JOB \
                 <<<"$WORKER_ROUND_SQL")
        [ "$round" -eq 1 ] && : >"$WORK/$name.round1"
        if [ -z "$out" ]; then
            printf '  %s: round %d, jq_dequeue returned no rows: nothing left to lease, stopping\n' "$name" "$round"
            return 0
        fi
        printf '%s\n' "$out" >>"$WORK/$name.log"
        ids=$(printf '%s\n' "$out" | cut -d'|' -f1 | paste -sd' ' -)
        printf '  %s: round %d, leased, scored and acked jobs %s\n' "$name" "$round" "$ids"
    done
}

echo "  w1 starts; w2 comes online once w1 has its first batch, then both pull at once"
worker w1 & WORKER_PIDS+=($!)
worker w2 w1 & WORKER_PIDS+=($!)
workers_ok=1
for p in "${WORKER_PIDS[@]}"; do
    wait "$p" || workers_ok=0
done
WORKER_PIDS=()
[ "$workers_ok" -eq 1 ] || { echo "demo: a worker failed" >&2; exit 1; }

# ---------------------------------------------------------------------------
log "4. results, read back with jq_result(job_id), in the order the jobs started"
pg <<'SQL' | sed '/^$/d'
\pset footer off
SELECT e.job_id AS job, r.priority AS prio, r.result->>'worker' AS worker,
       to_char(extract(epoch FROM r.started_at - min(r.started_at) OVER ()), 'FM0.000')
           AS "started +s",
       (r.result->>'score')::int AS score,
       CASE WHEN length(e.copy) > 40 THEN left(e.copy, 37) || '...' ELSE e.copy END AS "ad copy",
       r.result->>'notes' AS "why not 100"
  FROM demo_enqueued e, LATERAL jq_result(e.job_id) r
 ORDER BY r.started_at, e.job_id;
SQL

log "5. did the 5 urgent jobs start before the 35 standard ones? (started_at from jq_result)"
urgent_first=$(pg -At <<'SQL'
SELECT format('  last urgent job started    %s', to_char(max(r.started_at) FILTER (WHERE r.priority = 10), 'HH24:MI:SS.US')),
       format('  first standard job started %s', to_char(min(r.started_at) FILTER (WHERE r.priority = 0), 'HH24:MI:SS.US')),
       max(r.started_at) FILTER (WHERE r.priority = 10)
         < min(r.started_at) FILTER (WHERE r.priority = 0)
  FROM demo_enqueued e, LATERAL jq_result(e.job_id) r
SQL
)
IFS='|' read -r last_urgent first_standard urgent_ok <<<"$urgent_first"
printf '%s\n%s\n' "$last_urgent" "$first_standard"
if [ "$urgent_ok" = t ]; then
    echo "  yes: enqueued last, started first"
else
    echo "  NO: a standard job started before an urgent one" >&2
fi

# ---------------------------------------------------------------------------
log "6. check: every committed job done exactly once"
counts=$(pg -At <<'SQL'
SELECT count(*),
       count(*) FILTER (WHERE r.state = 'succeeded'),
       count(*) FILTER (WHERE r.state IS DISTINCT FROM 'succeeded'),
       count(*) FILTER (WHERE r.attempts > 1)
  FROM demo_enqueued e LEFT JOIN LATERAL jq_result(e.job_id) r ON true
SQL
)
IFS='|' read -r enqueued succeeded lost redelivered <<<"$counts"
cat "$WORK"/w1.log "$WORK"/w2.log 2>/dev/null >"$WORK/acks.log" || true
acked=$(grep -c '|t$' "$WORK/acks.log" || true)
refused=$(grep -c '|f$' "$WORK/acks.log" || true)
twice=$(cut -d'|' -f1 "$WORK/acks.log" | sort | uniq -d | wc -l)
printf '  %-36s %3d\n' "jobs enqueued (committed)" "$enqueued" \
    "jobs succeeded (jq_result)" "$succeeded" \
    "acks accepted by jq_ack" "$acked" \
    "acks refused (stale lease)" "$refused" \
    "jobs delivered twice (attempts > 1)" "$redelivered" \
    "jobs lost" "$lost" \
    "jobs done twice" "$twice"

ELAPSED=$(( ($(date +%s%N) - START) / 1000000 ))
echo
if [ "$urgent_ok" = t ] && [ "$enqueued" -eq 40 ] && [ "$succeeded" -eq "$enqueued" ] &&
   [ "$acked" -eq "$enqueued" ] &&
   [ "$refused" -eq 0 ] && [ "$redelivered" -eq 0 ] && [ "$lost" -eq 0 ] && [ "$twice" -eq 0 ]; then
    printf 'demo OK: %d jobs enqueued, %d done, 0 lost, 0 done twice (%d.%01d s in all)\n' \
        "$enqueued" "$succeeded" $((ELAPSED / 1000)) $((ELAPSED % 1000 / 100))
else
    echo "demo FAILED: see the checks above" >&2
    exit 1
fi
