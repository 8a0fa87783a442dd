#!/usr/bin/env bash
# make bench-progress: what a jq_progress report costs, against the ack it
# sits beside in a worker's loop (issue 15: "cheap enough to call every
# second from every worker"), and what a usage report adds to an ack.
#
#   bash bench/progress.sh [REPS]     REPS defaults to 3 (about a minute)
#
#  1. installs what it needs, builds and installs pgjq (PGJQ_BENCH_SKIP_INSTALL=1
#     uses the pgjq already installed);
#  2. starts a throwaway cluster with the settings of make bench
#     (bench/cluster.conf: durable commits);
#  3. REPS times each, 2 pgbench clients, with per-statement latencies (-r):
#       ack:       a worker's one-job turn, jq_dequeue('bench', 1) then
#                  jq_ack, each autocommitted, from a prefilled queue: the
#                  ack statement's latency
#       ack_usage: the same with a usage report on the ack
#       progress:  jq_progress on one of 1,000 leased jobs, at random,
#                  each autocommitted: its calls a second and latency
#  4. writes bench/results/PROGRESS.md: medians (min – max) and the ratio
#     of a report's latency to an ack's.
#
# Environment: PGJQ_BENCH_PORT (default 5494).
source "$(dirname "$0")/../test/bin/common.sh"
source "$(dirname "$0")/lib.sh"

REPS=${1:-3}
case "$REPS" in
    ''|*[!0-9]*|0) echo "usage: $0 [REPS]   (runs per case, default 3)" >&2; exit 2 ;;
esac
PORT=${PGJQ_BENCH_PORT:-5494}
CLIENTS=2
TURNS=3000              # per client and run

bench_start progress

cat >"$WORK/ack.sql" <<'SQL'
SELECT job_id AS id, lease_token AS tok FROM jq.jq_dequeue('bench', 1) \gset
SELECT jq.jq_ack(:id, :tok, NULL);
SQL
cat >"$WORK/ack_usage.sql" <<'SQL'
SELECT job_id AS id, lease_token AS tok FROM jq.jq_dequeue('bench', 1) \gset
SELECT jq.jq_ack(:id, :tok, NULL, '{"cost": 812, "input_tokens": 700, "output_tokens": 112}');
SQL
cat >"$WORK/progress.sql" <<'SQL'
\set n random(1, 1000)
SELECT jq.jq_progress(l.id, l.tok, jsonb_build_object('done', :n, 'total', 1000))
  FROM leases l WHERE l.n = :n;
SQL
chmod 644 "$WORK"/*.sql

# a fresh queue: for ack, jobs enough for the run; for progress, 1,000
# jobs leased for an hour, their tokens in a table
prepare() {
    local what=$1
    pg -d bench -At <<SQL >/dev/null
SELECT jq.jq_drop_queue('bench', force => true) FROM jq.queue WHERE name = 'bench';
SELECT 1 FROM jq.jq_create_queue('bench');
DROP TABLE IF EXISTS leases;
SELECT count(*) FROM (
    SELECT jq.jq_enqueue_batch('bench', array_agg('{"doc": 1}'::jsonb))
      FROM generate_series(1, CASE WHEN '$what' = 'progress' THEN 1000 ELSE $CLIENTS * $TURNS * 12 / 10 END) g
     GROUP BY g / 5000) b;
CREATE TABLE leases AS
SELECT row_number() OVER () AS n, job_id AS id, lease_token AS tok
  FROM jq.jq_dequeue('bench', CASE WHEN '$what' = 'progress' THEN 1000 ELSE 1 END, 3600)
 WHERE '$what' = 'progress';
ALTER TABLE leases ADD PRIMARY KEY (n);
SQL
    pg -d bench -c "VACUUM ANALYZE" -c "CHECKPOINT"
}

# run SCRIPT: "tps latency_ms_of_the_last_statement"
run() {
    local script=$1 out tps lat
    out=$(as_pg "$PGBENCH" -h "$PGDIR" -p "$PORT" -U postgres -n -r -c "$CLIENTS" -j "$CLIENTS" \
              -t "$TURNS" -f "$script" bench 2>&1) || { echo "$out" >&2; return 1; }
    tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
    lat=$(printf '%s\n' "$out" | awk '/SELECT jq\.jq_(ack|progress)/ { print $1 }' | tail -1)
    printf '%.0f %s\n' "$tps" "$lat"
}

stats() {
    sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
                                        printf "%s %s %s", m, a[1], a[NR] }'
}

declare -A TPS LAT
T0=$(date +%s)
for what in ack ack_usage progress; do
    tps_all='' lat_all=''
    for r in $(seq "$REPS"); do
        prepare "$what"
        read -r t l <<<"$(run "$WORK/$what.sql")"
        log "$what run $r: $t tps, $l ms per call"
        tps_all="$tps_all $t" lat_all="$lat_all $l"
    done
    TPS[$what]=$(printf '%s\n' $tps_all | stats)
    LAT[$what]=$(printf '%s\n' $lat_all | stats)
done
ELAPSED=$(( $(date +%s) - T0 ))

med() { echo "$1" | awk '{print $1}'; }
range() { echo "$1" | awk '{print $2 " – " $3}'; }
mkdir -p "$TOP/bench/results"
{
    echo "# The cost of a progress report"
    echo
    echo "\`bash bench/progress.sh $REPS\` on $(date -u +%Y-%m-%d), tree $GITREV, $PGJQ_BUILD;"
    echo "$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'),"
    echo "settings of make bench (durable commits). $CLIENTS pgbench clients, $TURNS transactions each;"
    echo "median of $REPS runs (min – max). ack: a worker's one-job turn (jq_dequeue, then jq_ack, each"
    echo "autocommitted), the ack statement's latency; progress: jq_progress on one of 1,000 leased"
    echo "jobs at random, autocommitted. $ELAPSED s in all."
    echo
    echo "| case | transactions/s | min – max | ms per call | min – max |"
    echo "|---|---|---|---|---|"
    echo "| worker turn (dequeue + ack), the ack | $(med "${TPS[ack]}") | $(range "${TPS[ack]}") | $(med "${LAT[ack]}") | $(range "${LAT[ack]}") |"
    echo "| worker turn, the ack with a usage report | $(med "${TPS[ack_usage]}") | $(range "${TPS[ack_usage]}") | $(med "${LAT[ack_usage]}") | $(range "${LAT[ack_usage]}") |"
    echo "| progress report | $(med "${TPS[progress]}") | $(range "${TPS[progress]}") | $(med "${LAT[progress]}") | $(range "${LAT[progress]}") |"
    echo
    echo "A progress report costs $(awk -v p="$(med "${LAT[progress]}")" -v a="$(med "${LAT[ack]}")" 'BEGIN { printf "%.2f", p / a }') of an ack's latency; an ack with a usage report $(awk -v p="$(med "${LAT[ack_usage]}")" -v a="$(med "${LAT[ack]}")" 'BEGIN { printf "%.2f", p / a }') (medians)."
} >"$TOP/bench/results/PROGRESS.md"
cat "$TOP/bench/results/PROGRESS.md"
