#!/usr/bin/env bash
# bench/ab.sh: what a change to pgjq's C code costs or buys, measured as
# one build of the library against another in the same run.
#
#   bash bench/ab.sh REV_A REV_B [PAIRS]     PAIRS defaults to 6 (about 4 minutes)
#
#  1. installs what it needs, builds and installs pgjq from this tree (its
#     SQL scripts serve both builds, so REV_A, REV_B and this tree must have
#     the same sql/ and pgjq.control: only the library is swapped), and
#     builds the library of REV_A and of REV_B from `git archive`;
#  2. starts a throwaway cluster with the settings of make bench
#     (bench/cluster.conf: durable commits);
#  3. PAIRS times, A then B in odd pairs and B then A in even ones (the
#     machine's drift falls on both): stops the cluster, installs that
#     build's pgjq.so (a new file, never written over the one a running
#     server maps), starts it, and times by pgbench with one client
#       turn:  a worker's one-job turn, jq_ack_dequeue (bench W8's), from
#              TURN_JOBS jobs enqueued beforehand;
#       batch: jq_dequeue of 100 then jq_ack_batch of them, from the same;
#       enq:   jq_enqueue of one job a transaction;
#  4. prints, per workload, each build's median (min – max) of jobs a
#     second and the median (min – max) of the pairs' B/A ratios; at the
#     end puts back the library that was installed before the swaps.
#
# Environment: PGJQ_BENCH_PORT (default 5495).
source "$(dirname "$0")/../test/bin/common.sh"

usage() { echo "usage: $0 REV_A REV_B [PAIRS]   (PAIRS: runs of each build, default 6)" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
PAIRS=${3:-6}
case "$PAIRS" in ''|*[!0-9]*|0) usage ;; esac
PORT=${PGJQ_BENCH_PORT:-5495}
TURN_JOBS=20000

declare -A REV
for side in A B; do
    [ $side = A ] && arg=$1 || arg=$2
    REV[$side]=$(git -C "$TOP" rev-parse --verify --quiet "$arg^{commit}") ||
        { echo "bench/ab.sh: not a commit: $arg" >&2; exit 2; }
    git -C "$TOP" diff --quiet "${REV[$side]}" -- sql pgjq.control ||
        { echo "bench/ab.sh: $arg has other SQL scripts than this tree; only the library is swapped, so both builds need this tree's sql/ and pgjq.control" >&2; exit 2; }
done

source "$TOP/bench/lib.sh"
LIBDIR=$("$PG_CONFIG" --pkglibdir)
# at exit: the library installed before the swaps (this tree's, or with
# PGJQ_BENCH_SKIP_INSTALL=1 whatever was there), then bench_cleanup with
# the script's exit status
restore_lib() {
    local rc=$?
    as_root rm -f "$LIBDIR/pgjq.so.ab"
    as_root install -m 755 "$WORK/installed.so" "$LIBDIR/pgjq.so"
    return "$rc"
}
bench_start ab
cp "$LIBDIR/pgjq.so" "$WORK/installed.so"
trap 'restore_lib; bench_cleanup' EXIT

for side in A B; do
    log "building the library of ${REV[$side]:0:12} ($side)"
    mkdir -p "$WORK/$side"
    git -C "$TOP" archive "${REV[$side]}" | tar -x -C "$WORK/$side"
    make -C "$WORK/$side" -s PG_CONFIG="$PG_CONFIG" pgjq.so >/dev/null
done

cat >"$WORK/turn.sql" <<'EOF'
SELECT job_id, lease_token FROM jq.jq_ack_dequeue('bench', 1, NULL, ARRAY[:job_id]::bigint[], ARRAY[:lease_token]::bigint[]) \gset
EOF
cat >"$WORK/batch.sql" <<'EOF'
SELECT '{' || string_agg(job_id::text, ',') || '}' AS ids, '{' || string_agg(lease_token::text, ',') || '}' AS tokens FROM jq.jq_dequeue('bench', 100) \gset
SELECT count(*) FROM jq.jq_ack_batch(:ids::bigint[], :tokens::bigint[]);
EOF
cat >"$WORK/enq.sql" <<'EOF'
SELECT jq.jq_enqueue('bench', '{"ab": 1}');
EOF
chmod 644 "$WORK"/*.sql

# fresh: an empty queue with n jobs, vacuumed, after a checkpoint
fresh() {
    pg -d bench -c "SELECT jq.jq_drop_queue(name, true) FROM jq.queue WHERE name = 'bench'" \
        -c "SELECT 1 FROM jq.jq_create_queue('bench')" >/dev/null
    local left=$1
    while [ "$left" -gt 0 ]; do
        pg -d bench -c "SELECT count(*) FROM jq.jq_enqueue_batch('bench', array_fill('{\"ab\": 1}'::jsonb, ARRAY[$((left < 10000 ? left : 10000))]))" >/dev/null
        left=$((left - 10000))
    done
    pg -d bench -c 'VACUUM ANALYZE jq.job, jq.job_result' -c CHECKPOINT >/dev/null
}
# rate SCRIPT TRANSACTIONS: transactions a second of one pgbench client
rate() {
    as_pg "$PGBENCH" -h "$PGDIR" -p "$PORT" -U postgres -n -M prepared -c 1 -j 1 -t "$2" \
        -D job_id=0 -D lease_token=0 -f "$1" bench 2>&1 |
        sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p'
}

RAW=$WORK/raw.txt
: >"$RAW"
for pair in $(seq 1 "$PAIRS"); do
    [ $((pair % 2)) = 1 ] && order="A B" || order="B A"
    for side in $order; do
        as_pg pg_ctl -D "$PGDIR/data" -m fast -w stop >/dev/null
        as_root cp "$WORK/$side/pgjq.so" "$LIBDIR/pgjq.so.ab"
        as_root mv "$LIBDIR/pgjq.so.ab" "$LIBDIR/pgjq.so"
        as_pg pg_ctl -D "$PGDIR/data" -l "$PGDIR/server.log" -w start >/dev/null
        fresh "$TURN_JOBS"
        turn=$(rate "$WORK/turn.sql" $((TURN_JOBS - 1000)))
        fresh "$TURN_JOBS"
        batch=$(rate "$WORK/batch.sql" $((TURN_JOBS / 100 - 10)))
        fresh 0
        enq=$(rate "$WORK/enq.sql" 5000)
        [ -n "$turn" ] && [ -n "$batch" ] && [ -n "$enq" ] ||
            { echo "bench/ab.sh: pgbench failed (pair $pair, $side); see $PGDIR/server.log" >&2; exit 1; }
        batch=$(awk -v t="$batch" 'BEGIN { printf "%.1f", t * 100 }')
        echo "$pair $side $turn $batch $enq" >>"$RAW"
        log "pair $pair $side: turn $turn, batch $batch, enq $enq jobs/s"
    done
done

echo
echo "bash bench/ab.sh $1 $2 $PAIRS: A = ${REV[A]:0:12}, B = ${REV[B]:0:12}, $PAIRS pairs, one pgbench client, durable commits"
echo "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), PostgreSQL $PG_MAJOR"
awk '
    function med(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { v[$1, $2, 1] = $3; v[$1, $2, 2] = $4; v[$1, $2, 3] = $5; if ($1 > n) n = $1 }
    END {
        split("turn (jq_ack_dequeue, 1 job);batch (jq_dequeue of 100, jq_ack_batch);enqueue (jq_enqueue, 1 job a transaction)", name, ";")
        printf "| workload | A jobs/s | B jobs/s | B/A by pair |\n|---|---|---|---|\n"
        for (w = 1; w <= 3; w++) {
            for (i = 1; i <= n; i++) { a[i] = v[i, "A", w]; b[i] = v[i, "B", w]; r[i] = b[i] / a[i] }
            lo_a = hi_a = a[1]; lo_b = hi_b = b[1]; lo_r = hi_r = r[1]
            for (i = 2; i <= n; i++) {
                if (a[i] < lo_a) lo_a = a[i]; if (a[i] > hi_a) hi_a = a[i]
                if (b[i] < lo_b) lo_b = b[i]; if (b[i] > hi_b) hi_b = b[i]
                if (r[i] < lo_r) lo_r = r[i]; if (r[i] > hi_r) hi_r = r[i]
            }
            printf "| %s | %.0f (%.0f – %.0f) | %.0f (%.0f – %.0f) | %.3f (%.3f – %.3f) |\n", name[w],
                   med(a, n), lo_a, hi_a, med(b, n), lo_b, hi_b, med(r, n), lo_r, hi_r
        }
    }' "$RAW"
