#!/usr/bin/env bash
# make bench / make bench-quick: pgjq against a plain-SQL "floor" queue.
#
#   bash bench/run.sh quick    about 2-3 minutes, small job counts
#   bash bench/run.sh full     the issue's job counts, under 20 minutes
#
#  1. installs what it needs (as make test does), builds and installs pgjq,
#     builds bench/bin/jqbench (C, libpq, pthreads);
#  2. starts a throwaway cluster with the same settings for both (below);
#  3. runs every workload (W1-W9) REPS times for pgjq and for the floor,
#     alternating, from a clean state each time (the queue dropped and
#     created again with the API, the floor table truncated, both vacuumed);
#  4. prints a markdown table (median, min-max, ratio, target) and writes it
#     with the machine's description to bench/results/RESULTS-<mode>.md.
#
# The floor is a minimal hand-written queue: one table, a partial index,
# INSERT / UPDATE ... FOR UPDATE SKIP LOCKED / DELETE (clients/c/jqclient.c).
# Its workers poll every 10 ms when the queue is empty: it has no NOTIFY,
# except in W7, where a variant sends NOTIFY inside the enqueue transaction
# (the cost pgjq avoids), clearly labelled.
#
# The cluster is stopped and removed on exit, on failure and on Ctrl-C.
source "$(dirname "$0")/../test/bin/common.sh"

MODE=${1:-quick}
case "$MODE" in
    quick|full) ;;
    *) echo "usage: $0 quick|full" >&2; exit 2 ;;
esac
REPS=${PGJQ_BENCH_REPS:-3}
# PGJQ_BENCH_ONLY="W5 W8": only these workloads (their rows in the report;
# the others say n/a).  The order stays: W8 after W5 measures it on the
# large indexes W5's churn leaves behind.
ONLY=${PGJQ_BENCH_ONLY:-}
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
PORT=${PGJQ_BENCH_PORT:-5493}
BENCH_START=$(date +%s)

if [ "$MODE" = full ]; then
    W1_JOBS=100000          # single-job transactions
    W1B_JOBS=500000         # batches of 1,000
    W2_JOBS=30000           # drain, one job per dequeue
    W3_JOBS=200000          # drain, 100 per dequeue
    W4_SECS=20
    W5_DEEP=1000000
    W5_SAMPLE=5000          # jobs timed at each depth
    W5H_CHURN=200000        # jobs processed while a snapshot is held
    W8_JOBS=10000           # per run of the worker-turn cycle
    W9_SESSIONS=40          # new sessions timed per run
    W6_BACKLOG=100000
    W7_JOBS=30000
else
    W1_JOBS=30000           # runs of a few seconds: shorter ones measured the noise
    W1B_JOBS=300000
    W2_JOBS=5000
    W3_JOBS=150000          # a run of 2 s or so: at 50,000 (0.6 s) the checkpoint before it dominated
    W4_SECS=5
    W5_DEEP=100000
    W5_SAMPLE=5000
    W5H_CHURN=100000
    W8_JOBS=6000
    W9_SESSIONS=20
    W6_BACKLOG=20000
    W7_JOBS=10000
fi
CLIENTS=8
W4_RATE=500
W6_URGENT_RATE=20

ensure_packages "${BASE_PACKAGES[@]}" libpq-dev gcc make
build_install
log "building bench/bin/jqbench"
make -C "$TOP/bench" -s PG_CONFIG="$PG_CONFIG"
BIN=$TOP/bench/bin/jqbench

WORK=$(mktemp -d /tmp/pgjq-bench.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg
RAW=$WORK/raw.txt
: >"$RAW"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    cluster_stop "$PGDIR"
    if [ -f "$PGDIR/server.log" ]; then
        mkdir -p "$TOP/bench/results"
        cp "$PGDIR/server.log" "$TOP/bench/results/server-$MODE.log.tmp" || true
    fi
    rm -rf "$WORK"
    [ "$rc" -eq 0 ] || echo "bench: stopped the cluster and removed $WORK (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# the settings of the run, the same for pgjq and the floor (bench/cluster.conf
# holds the durable, tuned ones that make soak uses too)
SETTINGS="$(cat "$TOP/bench/cluster.conf")
pgjq.database = 'bench'"
# logging only, for a look at what happened (the server log is kept as
# bench/results/server-<mode>.log.tmp): autovacuum runs, checkpoints, lock
# waits, and the plan of any statement (nested ones too) over 250 ms
LOGGING="log_autovacuum_min_duration = 0
log_checkpoints = on
log_lock_waits = on
session_preload_libraries = 'auto_explain'
auto_explain.log_min_duration = '250ms'
auto_explain.log_nested_statements = on"

log "starting a throwaway cluster in $PGDIR (port $PORT)"
cluster_start "$PGDIR" "$PORT"
printf '%s\n%s\n' "$SETTINGS" "$LOGGING" >>"$PGDIR/data/postgresql.conf"

pg() {
    as_pg psql -h "$PGDIR" -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"
}
pg -d postgres -c 'CREATE DATABASE bench'
as_pg pg_ctl -D "$PGDIR/data" -l "$PGDIR/server.log" -w restart >/dev/null
pg -d bench <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pgjq;
SELECT 1 FROM jq.jq_create_queue('bench');
-- the floor: the minimal plain-SQL queue (see clients/c/jqclient.c for its statements)
CREATE TABLE floor_job (
    id bigserial PRIMARY KEY,
    priority int NOT NULL DEFAULT 0,
    state text NOT NULL DEFAULT 'ready',
    payload jsonb,
    enqueued_at timestamptz DEFAULT now()
);
CREATE INDEX floor_job_ready_idx ON floor_job (priority DESC, id) WHERE state = 'ready';
SQL
WORKER_STATUS=$(pg -d bench -At -c "SELECT status FROM jq.jq_worker_status()")
echo "pgjq background worker: $WORKER_STATUS"
CONNINFO="host=$PGDIR port=$PORT user=postgres dbname=bench"

# reset: a clean queue for both (the pgjq queue dropped and created again
# through the API, the floor truncated), both vacuumed, then a checkpoint
reset_state() {
    pg -d bench >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT jq.jq_drop_queue('bench', force => true);
SELECT 1 FROM jq.jq_create_queue('bench');
TRUNCATE floor_job;
VACUUM ANALYZE jq.job, jq.job_result, floor_job;
CHECKPOINT;
SQL
}

# autovacuum_off / autovacuum_on: W5 runs without autovacuum on the queue
# tables (so that the dead rows of the churn are all still there)
autovacuum_off() {
    pg -d bench -c 'ALTER TABLE jq.job SET (autovacuum_enabled = off)' \
        -c 'ALTER TABLE jq.job_result SET (autovacuum_enabled = off)' \
        -c 'ALTER TABLE floor_job SET (autovacuum_enabled = off)' >/dev/null
}
autovacuum_on() {
    pg -d bench -c 'ALTER TABLE jq.job RESET (autovacuum_enabled)' \
        -c 'ALTER TABLE jq.job_result RESET (autovacuum_enabled)' \
        -c 'ALTER TABLE floor_job RESET (autovacuum_enabled)' >/dev/null
}
# hold_snapshot / release_snapshot: a session holds a REPEATABLE READ
# snapshot open (an analyst's long query), which holds back the xmin
# horizon: nothing that dies after it can be vacuumed, pruned or killed
hold_snapshot() {
    as_pg psql -h "$PGDIR" -p "$PORT" -U postgres -d bench -X -q \
        -c "SET application_name = 'bench_holder'" \
        -c 'BEGIN ISOLATION LEVEL REPEATABLE READ' \
        -c 'SELECT count(*) FROM jq.queue' -c 'SELECT pg_sleep(86400)' >/dev/null 2>&1 &
    for _ in $(seq 1 100); do
        [ "$(pg -d bench -At -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bench_holder' AND backend_xmin IS NOT NULL")" = 1 ] && return 0
        sleep 0.1
    done
    echo "bench: the snapshot holder did not start" >&2
    exit 1
}
release_snapshot() {
    pg -d bench -At -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bench_holder'" >/dev/null
    wait 2>/dev/null || true
}

# W8: a worker's turn, one job at a time, by pgbench: pgjq's fused
# jq_ack_dequeue (one transaction per job: ack the job held, lease the
# next), pgjq's jq_dequeue then jq_ack, and the floor's UPDATE ... RETURNING
# then DELETE (two transactions per job each)
cat >"$WORK/w8_fused.sql" <<'EOF'
SELECT job_id, lease_token FROM jq.jq_ack_dequeue('bench', 1, NULL, ARRAY[:job_id]::bigint[], ARRAY[:lease_token]::bigint[]) \gset
EOF
cat >"$WORK/w8_two.sql" <<'EOF'
SELECT job_id, lease_token FROM jq.jq_dequeue('bench', 1) \gset
SELECT jq.jq_ack(:job_id, :lease_token);
EOF
cat >"$WORK/w8_floor.sql" <<'EOF'
UPDATE floor_job SET state = 'leased' WHERE id = (SELECT id FROM floor_job WHERE state = 'ready' ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id \gset
DELETE FROM floor_job WHERE id = :id;
EOF
chmod 644 "$WORK"/w8_*.sql
# w8 TAG BACKEND SCRIPT WORKERS: reset, prefill W8_JOBS, time the turns
w8() {
    local tag=$1 backend=$2 script=$3 workers=$4 per tps
    reset_state
    if [ "$backend" = pgjq ]; then
        pg -d bench -c "SELECT count(*) FROM jq.jq_enqueue_batch('bench', array_fill('{\"w\": 8}'::jsonb, ARRAY[$W8_JOBS]))" >/dev/null
    else
        pg -d bench -c "INSERT INTO floor_job (payload) SELECT '{\"w\": 8}' FROM generate_series(1, $W8_JOBS)" >/dev/null
    fi
    pg -d bench -c 'VACUUM ANALYZE jq.job, floor_job' -c CHECKPOINT >/dev/null
    # every worker stops a few jobs short of the end: a turn must find a job
    per=$(( W8_JOBS / workers - 5 ))
    tps=$(as_pg pgbench -h "$PGDIR" -p "$PORT" -U postgres -n -M prepared -c "$workers" -j "$workers" \
            -t "$per" -D job_id=0 -D lease_token=0 -f "$script" bench 2>&1 |
          sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
    [ -n "$tps" ] || { echo "bench: pgbench failed: $tag $backend" >&2; exit 1; }
    echo "RESULT label=$tag backend=$backend jobs=$(( per * workers )) rate=$tps" >>"$RAW"
    printf '  %-10s %-5s rate=%s\n' "$tag" "$backend" "$tps"
}

# W9: the first call of a new session, what a short-lived or serverless
# worker pays on every connection: each of W9_SESSIONS new sessions times
# (psql's \timing, client side) its first dequeue and its first ack, or
# the floor's first UPDATE ... RETURNING and DELETE; the medians
cat >"$WORK/w9_pgjq.sql" <<'EOF'
\timing on
SELECT job_id, lease_token FROM jq.jq_dequeue('bench', 1) \gset
SELECT jq.jq_ack(:job_id, :lease_token);
EOF
cat >"$WORK/w9_floor.sql" <<'EOF'
\timing on
UPDATE floor_job SET state = 'leased' WHERE id = (SELECT id FROM floor_job WHERE state = 'ready' ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id \gset
DELETE FROM floor_job WHERE id = :id;
EOF
chmod 644 "$WORK"/w9_*.sql
# median_of: the median of the numbers on stdin, one a line
median_of() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# w9 BACKEND: reset, one job per session, time the sessions' first turns
w9() {
    local backend=$1 times take finish turn
    reset_state
    if [ "$backend" = pgjq ]; then
        pg -d bench -c "SELECT count(*) FROM jq.jq_enqueue_batch('bench', array_fill('{\"w\": 9}'::jsonb, ARRAY[$W9_SESSIONS]))" >/dev/null
    else
        pg -d bench -c "INSERT INTO floor_job (payload) SELECT '{\"w\": 9}' FROM generate_series(1, $W9_SESSIONS)" >/dev/null
    fi
    pg -d bench -c 'VACUUM ANALYZE jq.job, floor_job' -c CHECKPOINT >/dev/null
    # one line per session: the first statement's ms, then the second's
    times=$(for _ in $(seq 1 "$W9_SESSIONS"); do
                pg -d bench -At -f "$WORK/w9_$backend.sql" |
                    awk '/^Time: / { printf("%s ", $2) } END { print "" }'
            done)
    [ "$(echo "$times" | awk 'NF == 2' | wc -l)" -eq "$W9_SESSIONS" ] || {
        echo "bench: W9 $backend: a session did not time both statements" >&2
        exit 1
    }
    take=$(echo "$times" | awk '{ print $1 }' | median_of)
    finish=$(echo "$times" | awk '{ print $2 }' | median_of)
    turn=$(echo "$times" | awk '{ print $1 + $2 }' | median_of)
    echo "RESULT label=W9 backend=$backend sessions=$W9_SESSIONS first_ms=$turn take_ms=$take finish_ms=$finish" >>"$RAW"
    printf '  %-10s %-5s first_ms=%s take_ms=%s finish_ms=%s\n' W9 "$backend" "$turn" "$take" "$finish"
}

# run TAG BACKEND ARGS...: one jqbench run (no reset); appends its RESULT line
run() {
    local tag=$1 backend=$2 line
    shift 2
    line=$("$BIN" --conninfo "$CONNINFO" --backend "$backend" --label "$tag" "$@" | grep '^RESULT') || {
        echo "bench: jqbench failed: $tag $backend $*" >&2
        exit 1
    }
    echo "$line" >>"$RAW"
    printf '  %-10s %-5s %s\n' "$tag" "$backend" \
        "$(echo "$line" | tr ' ' '\n' | grep -E '^(jobs|elapsed_s|rate|pick_p50_ms|pick_p99_ms|upick_p99_ms)=' | tr '\n' ' ')"
}

# bench TAG BACKEND ARGS...: reset, then run
bench() {
    reset_state
    run "$@"
}

for rep in $(seq 1 "$REPS"); do
    # alternate which one goes first, so that a drift of the machine
    # during a rep does not always favour the same side
    if [ $((rep % 2)) -eq 1 ]; then order="pgjq floor"; else order="floor pgjq"; fi
    for b in $order; do
        log "rep $rep/$REPS, $b"
        if want W1; then
            # W1: enqueue throughput, 8 clients, no workers
            bench W1 "$b" --producers $CLIENTS --jobs $W1_JOBS
            bench W1B "$b" --producers $CLIENTS --jobs $W1B_JOBS --batch 1000
        fi
        if want W2; then
            # W2: drain, 8 workers, one job per dequeue, one ack each
            bench W2 "$b" --prefill $W2_JOBS --checkpoint --workers $CLIENTS --dequeue 1
        fi
        if want W3; then
            # W3: drain, 100 jobs per dequeue, one batch ack
            bench W3 "$b" --prefill $W3_JOBS --checkpoint --workers $CLIENTS --dequeue 100 --ack-batch
        fi
        if want W4; then
            # W4: pickup latency at a steady 500 jobs/s, 4 idle workers
            bench W4 "$b" --producers 2 --rate $W4_RATE --duration $W4_SECS --workers 4 --dequeue 10
            if [ "$b" = pgjq ]; then
                # the same, the workers long-polling instead of LISTENing:
                # jq_dequeue(wait => ...) and CALL jq.jq_wait_dequeue
                bench W4W pgjq --producers 2 --rate $W4_RATE --duration $W4_SECS --workers 4 \
                    --dequeue 10 --wait-ms 20000
                bench W4P pgjq --producers 2 --rate $W4_RATE --duration $W4_SECS --workers 4 \
                    --dequeue 10 --wait-ms 20000 --wait-procedure
            fi
        fi
        if want W5; then
            # W5: the W2 rate with the depth held at 1k (a refill producer puts
            # back 100 jobs whenever the workers took 100); at deep depth; at 1k
            # again right after the deep queue was processed (no VACUUM)
            bench W5_1K "$b" --prefill 1000 --refill --max-jobs $W5_SAMPLE --workers $CLIENTS --dequeue 1
            reset_state
            autovacuum_off
            run W5_DEEP "$b" --prefill $W5_DEEP --checkpoint --refill --max-jobs $W5_SAMPLE \
                --workers $CLIENTS --dequeue 1
            run W5_REST "$b" --drain-existing --workers $CLIENTS --dequeue 100 --ack-batch
            run W5_AFTER "$b" --prefill 1000 --refill --max-jobs $W5_SAMPLE --workers $CLIENTS --dequeue 1
            autovacuum_on
            # W5H: the same churn while a snapshot is held, then the 1k rate
            # again with the snapshot still held
            reset_state
            autovacuum_off
            hold_snapshot
            run W5H_CHURN "$b" --prefill $W5H_CHURN --drain-existing --workers $CLIENTS --dequeue 100 --ack-batch
            run W5H_AFTER "$b" --prefill 1000 --refill --max-jobs $W5_SAMPLE --workers $CLIENTS --dequeue 1
            release_snapshot
            autovacuum_on
        fi
        if want W6; then
            # W6: urgent trickle while a backlog drains
            bench W6 "$b" --prefill $W6_BACKLOG --checkpoint --urgent-rate $W6_URGENT_RATE \
                --workers $CLIENTS --dequeue 1
        fi
        if want W8; then
            # W8: a worker's turn, 1 and 8 workers
            for w in 1 8; do
                if [ "$b" = pgjq ]; then
                    w8 "W8_FUSED_$w" pgjq "$WORK/w8_fused.sql" $w
                    w8 "W8_TWO_$w" pgjq "$WORK/w8_two.sql" $w
                else
                    w8 "W8_TWO_$w" floor "$WORK/w8_floor.sql" $w
                fi
            done
        fi
        if want W9; then
            # W9: the first dequeue and ack of new sessions
            w9 "$b"
        fi
        if want W7; then
            # W7: W1 without and with 8 idle LISTEN sessions, back to back; the
            # floor variant with listeners also sends NOTIFY inside each enqueue
            # transaction (what pgjq avoids)
            bench W7_0 "$b" --producers $CLIENTS --jobs $W7_JOBS
            if [ "$b" = pgjq ]; then
                bench W7_8 pgjq --producers $CLIENTS --jobs $W7_JOBS --listeners 8
                # and with 8 sessions waiting in long polls (of another queue,
                # where no job comes: every commit looks for a waiter to wake)
                bench W7_W pgjq --producers $CLIENTS --jobs $W7_JOBS --listeners 8 --idle-waiters
            else
                bench W7_8 floor --producers $CLIENTS --jobs $W7_JOBS --listeners 8 --floor-notify
            fi
        fi
    done
done

# ------------------------------------------------------------------ report

# vals TAG BACKEND KEY: the values of KEY, one a line
vals() {
    awk -v tag="$1" -v be="$2" -v key="$3" '
        { t = ""; b = ""; v = ""
          for (i = 1; i <= NF; i++) {
              split($i, kv, "=")
              if (kv[1] == "label") t = kv[2]
              else if (kv[1] == "backend") b = kv[2]
              else if (kv[1] == key) v = kv[2]
          }
          if (t == tag && b == be && v != "") print v }' "$RAW"
}
# med TAG BACKEND KEY: the median
med() { vals "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# cell TAG BACKEND KEY: "median (min–max)"
cell() {
    vals "$@" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        f = (m >= 100) ? "%.0f" : "%.2f"
        printf(f " (" f "–" f ")\n", m, a[1], a[NR]) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf("%.2f\n", a / b) }'; }
# meets VALUE OP LIMIT: met or missed
meets() { awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { ok = (op == ">=") ? (v + 0 >= l + 0) : (v + 0 <= l + 0); print (ok ? "met" : "**missed**") }'; }

TABLE=$WORK/table.md
{
echo "| workload | pgjq median (min–max) | floor median (min–max) | pgjq/floor | target | measured | met |"
echo "|---|---|---|---|---|---|---|"
# throughput rows: target on pgjq/floor
for row in "W1|W1 enqueue, 1 job/txn, $CLIENTS clients (jobs/s)|0.85" \
           "W1B|W1 enqueue, batches of 1,000, $CLIENTS clients (jobs/s)|0.9" \
           "W2|W2 drain, 1/dequeue + ack, $CLIENTS workers (jobs/s)|1.0" \
           "W3|W3 drain, 100/dequeue + batch ack, $CLIENTS workers (jobs/s)|0.9"; do
    IFS='|' read -r tag name target <<<"$row"
    p=$(med "$tag" pgjq rate); f=$(med "$tag" floor rate); r=$(ratio "$p" "$f")
    echo "| $name | $(cell "$tag" pgjq rate) | $(cell "$tag" floor rate) | $r | pgjq/floor ≥ $target | $r | $(meets "$r" ">=" "$target") |"
done
# W4: latency
p50=$(med W4 pgjq pick_p50_ms); f50=$(med W4 floor pick_p50_ms)
p99=$(med W4 pgjq pick_p99_ms); f99=$(med W4 floor pick_p99_ms)
echo "| W4 pickup p50, $W4_RATE jobs/s, 4 idle workers (ms; floor polls every 10 ms) | $(cell W4 pgjq pick_p50_ms) | $(cell W4 floor pick_p50_ms) | $(ratio "$p50" "$f50") | — | | |"
echo "| W4 pickup p99 (ms; pgjq: workers LISTEN) | $(cell W4 pgjq pick_p99_ms) | $(cell W4 floor pick_p99_ms) | $(ratio "$p99" "$f99") | pgjq p99 ≤ 2 ms | $p99 | $(meets "$p99" "<=" 2) |"
for row in "W4W|jq_dequeue(wait => ...)" "W4P|CALL jq.jq_wait_dequeue"; do
    IFS='|' read -r tag name <<<"$row"
    w50=$(med "$tag" pgjq pick_p50_ms); w99=$(med "$tag" pgjq pick_p99_ms)
    echo "| W4 long-poll pickup p50, workers in $name (ms) | $(cell "$tag" pgjq pick_p50_ms) | | $(ratio "$w50" "$f50") | ≤ 0.3 ms | $w50 | $(meets "$w50" "<=" 0.3) |"
    echo "| W4 long-poll pickup p99, workers in $name (ms) | $(cell "$tag" pgjq pick_p99_ms) | | $(ratio "$w99" "$f99") | ≤ 1 ms | $w99 | $(meets "$w99" "<=" 1) |"
done
# W5: depth and decay, target on pgjq's own 1k rate
p1k=$(med W5_1K pgjq rate); f1k=$(med W5_1K floor rate)
echo "| W5 W2 rate at 1,000 queued (jobs/s) | $(cell W5_1K pgjq rate) | $(cell W5_1K floor rate) | $(ratio "$p1k" "$f1k") | reference | | |"
pd=$(med W5_DEEP pgjq rate); fd=$(med W5_DEEP floor rate); rd=$(ratio "$pd" "$p1k")
echo "| W5 W2 rate at $W5_DEEP queued (jobs/s) | $(cell W5_DEEP pgjq rate) | $(cell W5_DEEP floor rate) | $(ratio "$pd" "$fd") | ≥ 0.8 × pgjq 1k rate | $rd | $(meets "$rd" ">=" 0.8) |"
pa=$(med W5_AFTER pgjq rate); fa=$(med W5_AFTER floor rate); ra=$(ratio "$pa" "$p1k")
echo "| W5 W2 rate at 1,000 queued, right after $W5_DEEP were processed (jobs/s) | $(cell W5_AFTER pgjq rate) | $(cell W5_AFTER floor rate) | $(ratio "$pa" "$fa") | ≥ 0.8 × pgjq 1k rate | $ra | $(meets "$ra" ">=" 0.8) |"
ph=$(med W5H_AFTER pgjq rate); fh=$(med W5H_AFTER floor rate); rh=$(ratio "$ph" "$p1k")
echo "| W5H W2 rate at 1,000 queued, after $W5H_CHURN were processed while a snapshot is held, still held (jobs/s) | $(cell W5H_AFTER pgjq rate) | $(cell W5H_AFTER floor rate) | $(ratio "$ph" "$fh") | ≥ 0.8 × pgjq 1k rate | $rh | $(meets "$rh" ">=" 0.8) |"
echo "| W5 floor after churn / floor at 1k; held | | | | — (the floor's own decay) | $(ratio "$fa" "$f1k"); $(ratio "$fh" "$f1k") | |"
# W6: urgent pickup p99 against 2 x W4 p99
u99=$(med W6 pgjq upick_p99_ms); fu99=$(med W6 floor upick_p99_ms)
lim=$(awk -v x="$p99" 'BEGIN { printf("%.2f\n", 2 * x) }')
echo "| W6 urgent pickup p50, $W6_URGENT_RATE/s during a $W6_BACKLOG backlog drain (ms) | $(cell W6 pgjq upick_p50_ms) | $(cell W6 floor upick_p50_ms) | $(ratio "$(med W6 pgjq upick_p50_ms)" "$(med W6 floor upick_p50_ms)") | — | | |"
echo "| W6 urgent pickup p99 (ms) | $(cell W6 pgjq upick_p99_ms) | $(cell W6 floor upick_p99_ms) | $(ratio "$u99" "$fu99") | ≤ 2 × pgjq W4 p99 ($lim ms) | $u99 | $(meets "$u99" "<=" "$lim") |"
echo "| W6 backlog drain rate (jobs/s) | $(cell W6 pgjq rate) | $(cell W6 floor rate) | $(ratio "$(med W6 pgjq rate)" "$(med W6 floor rate)") | — | | |"
# W8: the fused turn against the floor's two transactions
for w in 1 8; do
    pf=$(med "W8_FUSED_$w" pgjq rate); p2=$(med "W8_TWO_$w" pgjq rate); f2=$(med "W8_TWO_$w" floor rate)
    r8=$(ratio "$pf" "$f2")
    echo "| W8 worker turn, 1 job, $w worker(s): pgjq jq_ack_dequeue, 1 txn/job; floor UPDATE then DELETE, 2 txns/job (jobs/s) | $(cell "W8_FUSED_$w" pgjq rate) | $(cell "W8_TWO_$w" floor rate) | $r8 | pgjq fused/floor ≥ 1.5 | $r8 | $(meets "$r8" ">=" 1.5) |"
    echo "| W8 the same with pgjq jq_dequeue then jq_ack, 2 txns/job, $w worker(s) (jobs/s) | $(cell "W8_TWO_$w" pgjq rate) | $(cell "W8_TWO_$w" floor rate) | $(ratio "$p2" "$f2") | — | | |"
done
# W9: the first call of a new session, target on pgjq/floor
p9=$(med W9 pgjq first_ms); f9=$(med W9 floor first_ms); r9=$(ratio "$p9" "$f9")
echo "| W9 first dequeue + first ack of a new session, $W9_SESSIONS sessions (ms; floor: first UPDATE + DELETE) | $(cell W9 pgjq first_ms) | $(cell W9 floor first_ms) | $r9 | pgjq/floor ≤ 1.0 | $r9 | $(meets "$r9" "<=" 1.0) |"
echo "| W9 of which the first dequeue (ms; floor: UPDATE) | $(cell W9 pgjq take_ms) | $(cell W9 floor take_ms) | $(ratio "$(med W9 pgjq take_ms)" "$(med W9 floor take_ms)") | — | | |"
echo "| W9 of which the first ack (ms; floor: DELETE) | $(cell W9 pgjq finish_ms) | $(cell W9 floor finish_ms) | $(ratio "$(med W9 pgjq finish_ms)" "$(med W9 floor finish_ms)") | — | | |"
# W7: notify cost, each side against its own run without listeners
p7=$(med W7_8 pgjq rate); p0=$(med W7_0 pgjq rate); r7=$(ratio "$p7" "$p0")
f7=$(med W7_8 floor rate); f0=$(med W7_0 floor rate)
echo "| W7 W1 again, no listeners (jobs/s) | $(cell W7_0 pgjq rate) | $(cell W7_0 floor rate) | $(ratio "$p0" "$f0") | — | | |"
echo "| W7 W1 with 8 idle LISTEN sessions (jobs/s; **floor: NOTIFY inside each enqueue txn**) | $(cell W7_8 pgjq rate) | $(cell W7_8 floor rate) | $(ratio "$p7" "$f7") | pgjq with/without listeners ≥ 0.95 | $r7 | $(meets "$r7" ">=" 0.95) |"
echo "| W7 floor with NOTIFY in txn / floor without | | | | — (what pgjq avoids) | $(ratio "$f7" "$f0") | |"
pw=$(med W7_W pgjq rate); rw=$(ratio "$pw" "$p0")
echo "| W7 W1 with 8 sessions waiting in jq_dequeue(wait => ...) (jobs/s) | $(cell W7_W pgjq rate) | | | pgjq with/without waiters ≥ 0.95 | $rw | $(meets "$rw" ">=" 0.95) |"
} >"$TABLE"

# WAL written per job: where the extra work goes
WALTABLE=$WORK/wal.md
{
echo "| workload | pgjq WAL bytes/job | floor WAL bytes/job | pgjq/floor |"
echo "|---|---|---|---|"
for tag in W1 W1B W2 W3 W6; do
    p=$(med "$tag" pgjq wal_per_job); f=$(med "$tag" floor wal_per_job)
    echo "| $tag | $p | $f | $(ratio "$p" "$f") |"
done
} >"$WALTABLE"

ELAPSED=$(( $(date +%s) - BENCH_START ))
log "results ($MODE, $REPS reps, ${ELAPSED}s)"
cat "$TABLE"
echo
cat "$WALTABLE"

# ------------------------------------------------------------------ results file
mkdir -p "$TOP/bench/results"
OUT=$TOP/bench/results/RESULTS-$MODE.md
# a partial run (PGJQ_BENCH_ONLY) does not replace the report of a whole one
[ -z "$ONLY" ] || OUT=$TOP/bench/results/RESULTS-$MODE-only.md.tmp
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf("%.1f GiB\n", $2 / 1048576) }' /proc/meminfo)
PGVER=$(pg -d bench -At -c 'SELECT version()')
{
echo "# pgjq benchmark: $MODE"
echo
echo "Generated by \`bash bench/run.sh $MODE\` (\`make bench$([ "$MODE" = quick ] && echo -quick)\`) on $(date -u '+%Y-%m-%d %H:%M UTC'); took ${ELAPSED} s."
echo "Each workload ran $REPS times for pgjq and for the floor (a plain-SQL queue: one table,"
echo "a partial index, \`UPDATE ... FOR UPDATE SKIP LOCKED\`, \`DELETE\`), alternating, each from a clean state."
echo
echo "## Machine"
echo
echo "- CPU: $CPU, $(nproc) cores (nproc)"
echo "- memory: $MEM"
echo "- $PGVER"
echo "- server and clients on the same machine (Unix socket); the machine is shared and noisy"
echo
echo "## Settings (both)"
echo
echo '```'
echo "$SETTINGS"
echo "shared_preload_libraries = 'pgjq'   # pgjq.notify_interval, pgjq.naptime: defaults"
echo "autovacuum = on (default)"
echo "$LOGGING"
echo '```'
echo
echo "## Results"
echo
cat "$TABLE"
echo
echo "Throughput is jobs divided by the time from the start of the threads to the last"
echo "commit (enqueue-only workloads) or the last ack. Latencies are client-clock times from the"
echo "producer seeing its enqueue commit to the worker's dequeue returning (pickup). Ratios of"
echo "latencies are lower-is-better. The floor has no wakeups: its idle workers poll every 10 ms;"
echo "pgjq's workers LISTEN on \`jq_bench\` with a 100 ms fallback poll, except in the W4 long-poll rows"
echo "(W4W, W4P), where they wait inside the dequeue (20 s waits) and no session LISTENs."
echo
echo "WAL written by the whole cluster during the timed phase (prefills excluded), per job"
echo "(median of the runs; each run starts right after a CHECKPOINT, so it includes full-page images):"
echo
cat "$WALTABLE"
echo
echo "Workload parameters ($MODE): W1 $W1_JOBS single-job transactions from $CLIENTS clients;"
echo "W1 batch $W1B_JOBS jobs in calls of 1,000; W2 $W2_JOBS queued jobs, $CLIENTS workers, 1 per dequeue;"
echo "W3 $W3_JOBS queued, 100 per dequeue, one batch ack; W4 $W4_RATE jobs/s for $W4_SECS s from 2 producers,"
echo "4 workers (up to 10 per dequeue), LISTENing, then long-polling (pgjq only); W5 $W5_SAMPLE jobs timed (W2 style) with the depth held at 1,000,"
echo "then at $W5_DEEP (a refill producer puts 100 jobs back whenever the workers took 100), then the"
echo "deep queue drained 100 at a time, then $W5_SAMPLE again at 1,000, autovacuum off on the queue tables;"
echo "W5H $W5H_CHURN queued and drained 100 at a time while another session holds a REPEATABLE READ"
echo "snapshot, then $W5_SAMPLE at 1,000 with the snapshot still held (autovacuum off);"
echo "W6 $W6_BACKLOG standard jobs queued, urgent (priority 10) ones at $W6_URGENT_RATE/s until the backlog"
echo "is drained, $CLIENTS workers; W7 $W7_JOBS single-job transactions, $CLIENTS clients, without and then with"
echo "8 idle LISTEN sessions (the floor's run with listeners sends NOTIFY in every enqueue transaction),"
echo "and (pgjq) with 8 sessions long-polling another queue instead;"
echo "W8 $W8_JOBS queued, then pgbench (-M prepared) runs 1 or 8 workers taking one job per turn:"
echo "pgjq's jq.jq_ack_dequeue (ack the job held and lease the next: one transaction), pgjq's"
echo "jq_dequeue then jq_ack, and the floor's UPDATE ... RETURNING then DELETE (two each)."
echo "Payloads are ~120-byte JSON objects."
echo
echo "## Raw RESULT lines"
echo
echo '```'
cat "$RAW"
echo '```'
} >"$OUT"
log "wrote ${OUT#$TOP/}"
