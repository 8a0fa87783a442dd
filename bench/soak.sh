#!/usr/bin/env bash
# make soak: the bloat soak (not part of make test or make bench).
#
#   bash bench/soak.sh [JOBS]     JOBS defaults to 5,000,000 (about 30 min)
#
#  1. installs what it needs, builds and installs pgjq (as make bench does;
#     PGJQ_SOAK_SKIP_INSTALL=1 uses the pgjq already installed), builds
#     bench/bin/jqbench;
#  2. starts a throwaway cluster with the settings of make bench (durable
#     commits, autovacuum at its defaults), plus pgjq.stats_interval = 1s so
#     that the worker's purge of expired results runs every second, and
#     track_functions = all to count dequeue and ack calls;
#  3. creates one queue, "soak", with result_retention '1 minute' (so the
#     purge of jq.job_result is part of the soak; runs shorter than 6
#     minutes get a sixth of their time, at least 10 s), and pushes JOBS jobs
#     through it at a steady rate:
#       - jqbench: 2 producers, jq_enqueue_batch of 1,000 at RATE jobs/s in
#         all, and 4 workers (LISTEN, 100 per jq_dequeue, one jq_ack_batch);
#       - pgbench: 2 single-job workers (jq_dequeue of 1, then jq_ack, each
#         in its own transaction; no LISTEN: 10 ms sleep on an empty queue);
#     the workers can go faster than the producers, so the depth stays
#     bounded unless the workers slow down;
#  4. for the middle third of the expected run time (JOBS / RATE) a
#     separate session holds a REPEATABLE READ snapshot open, idle in
#     transaction, which holds back the xmin horizon: vacuum (and page
#     pruning, and index entry killing) cannot remove any tuple that died
#     after it; then it commits, and the last third shows the recovery;
#  5. samples every few seconds: jobs enqueued and processed, the enqueue,
#     ack and dequeue-call rates over the interval, the depth, the sizes of
#     jq.job, jq.job_result and each of their indexes, n_dead_tup, the
#     autovacuum count and time of both tables, and the xmin holder; after
#     the last ack it keeps sampling (up to 60 s, load stopped) until
#     autovacuum has been through jq.job since the release;
#  6. writes bench/results/SOAK.md (machine, settings, phases, sizes, the
#     autovacuum runs from the server log, the samples thinned to about 25
#     rows, and every sample as CSV), bench/results/soak.png (gnuplot), and
#     the samples as bench/results/soak.csv.tmp.
#
# Environment: PGJQ_SOAK_RATE (default 3000 jobs/s), PGJQ_SOAK_PORT (default
# 5494), PGJQ_SOAK_TIMEOUT (seconds of load; default JOBS / RATE plus a
# third of it, at least 300 s: past it the load is stopped, the results are
# written, marked incomplete, and the exit status is 1).
#
# Time: the producers' schedule is JOBS / RATE (5,000,000 at 3000/s: 28
# min); a run is that, plus the catch-up after the hold, plus at most 60 s
# of tail, plus about 10 s of setup; the timeout caps the load at 37 min.
#
# The background clients and the cluster are stopped, and the temporary
# directory removed, on exit, on failure and on Ctrl-C.
source "$(dirname "$0")/../test/bin/common.sh"

JOBS=${1:-5000000}
case "$JOBS" in
    ''|*[!0-9]*) echo "usage: $0 [JOBS]   (a whole number of jobs, default 5000000)" >&2; exit 2 ;;
esac
if [ "$JOBS" -lt 20000 ]; then
    echo "soak: JOBS must be at least 20000" >&2
    exit 2
fi
RATE=${PGJQ_SOAK_RATE:-3000}
PORT=${PGJQ_SOAK_PORT:-5494}
PRODUCERS=2
BATCH=1000
WORKERS=4
DEQUEUE=100
SINGLE_WORKERS=2
TAIL_MAX=60
DB=soak
QUEUE=soak
HOLDER_APP=pgjq_soak_xmin

# the producers' schedule fixes the expected run time; the xmin hold covers
# its middle third
EXPECTED=$(( (JOBS + RATE - 1) / RATE ))
HOLD_START=$(( EXPECTED / 3 ))
HOLD_END=$(( 2 * EXPECTED / 3 ))
# past the timeout the load is stopped: the expected time plus a third of
# it (at least 5 minutes) to catch up after the hold
CATCHUP=$(( EXPECTED / 3 ))
[ "$CATCHUP" -lt 300 ] && CATCHUP=300
TIMEOUT=${PGJQ_SOAK_TIMEOUT:-$(( EXPECTED + CATCHUP ))}
# result retention: a minute, shorter for short runs (a sixth of the
# expected time, at least 10 s) so that they purge too
RETENTION_S=$(( EXPECTED / 6 ))
[ "$RETENTION_S" -lt 10 ] && RETENTION_S=10
[ "$RETENTION_S" -gt 60 ] && RETENTION_S=60
RETENTION="$RETENTION_S seconds"
# a sample every 2-10 s: about 150 over the run
SAMPLE=$(( EXPECTED / 150 ))
[ "$SAMPLE" -lt 2 ] && SAMPLE=2
[ "$SAMPLE" -gt 10 ] && SAMPLE=10

SOAK_START=$(date +%s)
ensure_packages "${BASE_PACKAGES[@]}" libpq-dev gcc make gnuplot-nox
if [ "${PGJQ_SOAK_SKIP_INSTALL:-0}" = 1 ]; then
    log "PGJQ_SOAK_SKIP_INSTALL=1: using the pgjq installed in $("$PG_CONFIG" --pkglibdir)"
    PGJQ_BUILD="the pgjq already installed (PGJQ_SOAK_SKIP_INSTALL=1), not built from this tree"
else
    build_install
    PGJQ_BUILD="built and installed from this tree"
fi
log "building bench/bin/jqbench"
make -C "$TOP/bench" -s PG_CONFIG="$PG_CONFIG" bin/jqbench
BIN=$TOP/bench/bin/jqbench
PSQL=$PG_BIN/psql
PGBENCH=$PG_BIN/pgbench
GITREV=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$TOP" diff --quiet HEAD -- src sql 2>/dev/null || GITREV="$GITREV, with uncommitted changes in src/ or sql/"

WORK=$(mktemp -d /tmp/pgjq-soak.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg
RAWS=$WORK/samples.raw
: >"$RAWS"
LOAD_PID=
SINGLE_PID=
HOLDER_PID=
HOLDER_OPEN=0

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$HOLDER_OPEN" = 1 ]; then exec 7>&- || true; fi
    stop_pid "$HOLDER_PID"
    stop_pid "$SINGLE_PID"
    stop_pid "$LOAD_PID"
    cluster_stop "$PGDIR"
    if [ -f "$PGDIR/server.log" ]; then
        mkdir -p "$TOP/bench/results"
        cp "$PGDIR/server.log" "$TOP/bench/results/server-soak.log.tmp" || true
    fi
    rm -rf "$WORK"
    [ "$rc" -eq 0 ] || echo "soak: stopped the clients and the cluster, removed $WORK (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# the settings of make bench (bench/cluster.conf), and the soak's own (below)
SETTINGS=$(cat "$TOP/bench/cluster.conf")
SOAK_SETTINGS="pgjq.database = '$DB'
pgjq.stats_interval = '1s'          # purge of expired results every second (default 10s)
track_functions = 'all'             # calls of jq_dequeue, jq_ack, jq_ack_batch
log_autovacuum_min_duration = 0     # every autovacuum run in the server log
log_checkpoints = on
log_line_prefix = '%n [%p] '        # epoch timestamps, to place autovacuum runs"

log "starting a throwaway cluster in $PGDIR (port $PORT)"
cluster_start "$PGDIR" "$PORT"
printf '%s\n%s\n' "$SETTINGS" "$SOAK_SETTINGS" >>"$PGDIR/data/postgresql.conf"

pg() {
    "$PSQL" -h "$PGDIR" -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"
}
pg -d postgres -c "CREATE DATABASE $DB"
as_pg pg_ctl -D "$PGDIR/data" -l "$PGDIR/server.log" -w restart >/dev/null
pg -d "$DB" <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pgjq;
SELECT 1 FROM jq.jq_create_queue('$QUEUE', result_retention => '$RETENTION');
-- what the xmin holder reads: a table of its own, so that it holds no lock
-- on pgjq's tables, only the snapshot
CREATE TABLE soak_hold (x int);
INSERT INTO soak_hold VALUES (1);
VACUUM ANALYZE;
CHECKPOINT;
SQL
WORKER_STATUS=$(pg -d "$DB" -At -c "SELECT status FROM jq.jq_worker_status()")
echo "pgjq background worker: $WORKER_STATUS"
PGJQ_VERSION=$(pg -d "$DB" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pgjq'")
AV_SETTINGS=$(pg -d "$DB" -At -F ' = ' -c "SELECT name, setting || coalesce(unit, '') FROM pg_settings
    WHERE name IN ('autovacuum', 'autovacuum_naptime', 'autovacuum_vacuum_scale_factor',
                   'autovacuum_vacuum_threshold', 'autovacuum_vacuum_insert_scale_factor',
                   'autovacuum_vacuum_cost_limit', 'autovacuum_vacuum_cost_delay',
                   'autovacuum_max_workers') ORDER BY name")
CONN="host=$PGDIR port=$PORT user=postgres dbname=$DB"

# the single-job worker: dequeue one job, ack it in a second transaction;
# on an empty queue, sleep 10 ms (it has no LISTEN).  count(*) makes an
# empty dequeue a row too (\gset needs exactly one)
cat >"$WORK/single.sql" <<SQL
SELECT count(*) AS n, coalesce(min(job_id), 0) AS id, coalesce(min(lease_token), 0) AS tok FROM jq.jq_dequeue('$QUEUE', 1) \gset
\if :n > 0
SELECT jq.jq_ack(:id, :tok);
\else
\sleep 10 ms
\endif
SQL

# sample PHASE HELD: one row of raw figures, appended to $RAWS
# (server epoch, pgjq's shared counters, sizes, table and function stats)
SAMPLE_SQL="
SELECT round(extract(epoch FROM clock_timestamp())::numeric, 3),
       c.enq, c.succ, c.ready, c.sched, c.leased, c.failed,
       pg_relation_size('jq.job'), pg_relation_size('jq.job_pkey'),
       pg_relation_size('jq.job_ready_idx'), pg_relation_size('jq.job_scheduled_idx'),
       pg_relation_size('jq.job_leased_idx'),
       pg_relation_size('jq.job_result'), pg_relation_size('jq.job_result_pkey'),
       pg_relation_size('jq.job_result_finished_idx'),
       j.n_live_tup, j.n_dead_tup, coalesce(round(extract(epoch FROM j.last_autovacuum))::text, ''),
       j.autovacuum_count,
       r.n_live_tup, r.n_dead_tup, coalesce(round(extract(epoch FROM r.last_autovacuum))::text, ''),
       r.autovacuum_count,
       (SELECT count(*) FROM pg_stat_activity
         WHERE application_name = '$HOLDER_APP' AND backend_xmin IS NOT NULL),
       (SELECT coalesce(max(age(backend_xmin)), 0) FROM pg_stat_activity),
       (SELECT coalesce(sum(calls) FILTER (WHERE funcname = 'jq_dequeue'), 0) FROM pg_stat_user_functions),
       (SELECT coalesce(sum(calls) FILTER (WHERE funcname = 'jq_ack'), 0) FROM pg_stat_user_functions),
       (SELECT coalesce(sum(calls) FILTER (WHERE funcname = 'jq_ack_batch'), 0) FROM pg_stat_user_functions)
  FROM (SELECT coalesce(sum(enqueued_total), 0) AS enq, coalesce(sum(succeeded_total), 0) AS succ,
               coalesce(sum(ready), 0) AS ready, coalesce(sum(scheduled), 0) AS sched,
               coalesce(sum(leased), 0) AS leased,
               coalesce(sum(failed_total + dead_lettered_total + cancelled_total), 0) AS failed
          FROM jq.counters() WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = '$QUEUE')) c,
       pg_stat_user_tables j, pg_stat_user_tables r
 WHERE j.relid = 'jq.job'::regclass AND r.relid = 'jq.job_result'::regclass"
LAST_T=
LAST_SUCC=0
sample() {
    local phase=$1 row t enq succ ready sched leased rest rate
    row=$(pg -d "$DB" -At -F '|' -c "$SAMPLE_SQL")
    echo "$phase|$row" >>"$RAWS"
    IFS='|' read -r t enq succ ready sched leased rest <<<"$row"
    S_ENQ=$enq
    S_SUCC=$succ
    S_DEPTH=$(( ready + sched + leased ))
    IFS='|' read -r -a F <<<"$row"
    rate=$(awk -v a="$LAST_T" -v b="$t" -v x="$LAST_SUCC" -v y="$succ" \
        'BEGIN { if (a == "" || b - a <= 0) print "-"; else printf("%.0f", (y - x) / (b - a)) }')
    printf '  t=%5ss %-6s enqueued %9s processed %9s  ack %6s/s  depth %7s  jq.job %6s kB (ready_idx %6s kB, dead %8s)  job_result %7s kB  xmin held %s\n' \
        "$(awk -v a="$T0" -v b="$t" 'BEGIN { printf("%.0f", b - a) }')" "$phase" "$enq" "$succ" "$rate" \
        "$S_DEPTH" "$(( F[7] / 1024 ))" "$(( F[9] / 1024 ))" "${F[16]}" "$(( F[12] / 1024 ))" "${F[23]}"
    LAST_T=$t
    LAST_SUCC=$succ
}

# the xmin holder: psql reading from a fifo, so that this script decides
# when it commits; in between the session is idle in transaction
hold_begin() {
    mkfifo "$WORK/hold.fifo"
    "$PSQL" "$CONN application_name=$HOLDER_APP" -X -q -v ON_ERROR_STOP=1 \
        <"$WORK/hold.fifo" >"$WORK/holder.out" 2>&1 &
    HOLDER_PID=$!
    exec 7>"$WORK/hold.fifo"
    HOLDER_OPEN=1
    printf 'BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT count(*) FROM soak_hold;\n' >&7
    for _ in $(seq 1 100); do
        [ "$(pg -d "$DB" -At -c "SELECT count(*) FROM pg_stat_activity
              WHERE application_name = '$HOLDER_APP' AND backend_xmin IS NOT NULL")" = 1 ] && return 0
        sleep 0.1
    done
    echo "soak: the xmin holder did not start:" >&2
    cat "$WORK/holder.out" >&2
    exit 1
}
hold_end() {
    printf 'COMMIT;\n' >&7
    exec 7>&-
    HOLDER_OPEN=0
    wait "$HOLDER_PID" || { echo "soak: the xmin holder failed:" >&2; cat "$WORK/holder.out" >&2; exit 1; }
    HOLDER_PID=
}

now() { awk -v t="$EPOCHREALTIME" 'BEGIN { printf("%.3f", t) }'; }
elapsed() { awk -v a="$LOAD_START" -v b="$EPOCHREALTIME" 'BEGIN { printf("%d", b - a) }'; }

log "soak: $JOBS jobs at $RATE jobs/s (about ${EXPECTED} s), xmin held from ${HOLD_START} s to ${HOLD_END} s, a sample every ${SAMPLE} s"
T0=$(pg -d "$DB" -At -c "SELECT round(extract(epoch FROM clock_timestamp())::numeric, 3)")
sample start
LOAD_START=$EPOCHREALTIME
"$BIN" --conninfo "$CONN application_name=pgjq_soak_jqbench" --queue "$QUEUE" --label soak \
    --producers $PRODUCERS --batch $BATCH --rate "$RATE" --jobs "$JOBS" \
    --workers $WORKERS --dequeue $DEQUEUE --ack-batch >"$WORK/jqbench.out" 2>&1 &
LOAD_PID=$!
"$PGBENCH" -h "$PGDIR" -p "$PORT" -U postgres -n -M prepared -c $SINGLE_WORKERS -j 1 \
    -T $(( TIMEOUT + 600 )) -f "$WORK/single.sql" "$DB" >"$WORK/pgbench.out" 2>&1 &
SINGLE_PID=$!

PHASE=before
STATUS=complete
HOLD_T0=
HOLD_T1=
next=$SAMPLE
while :; do
    el=$(elapsed)
    if [ "$PHASE" = before ] && [ "$el" -ge "$HOLD_START" ]; then
        hold_begin
        HOLD_T0=$(now)
        PHASE=hold
        echo "  -- xmin holder: BEGIN ISOLATION LEVEL REPEATABLE READ, idle in transaction"
    elif [ "$PHASE" = hold ] && [ "$el" -ge "$HOLD_END" ]; then
        hold_end
        HOLD_T1=$(now)
        PHASE=after
        echo "  -- xmin holder: COMMIT"
    fi
    if [ "$el" -ge "$next" ]; then
        sample "$PHASE"
        next=$(( next + SAMPLE ))
        [ "$S_SUCC" -ge "$JOBS" ] && break
    fi
    if [ -n "$LOAD_PID" ] && ! kill -0 "$LOAD_PID" 2>/dev/null; then
        # jqbench ends by itself only if its own workers acked every job
        rc=0; wait "$LOAD_PID" || rc=$?
        LOAD_PID=
        if [ "$rc" -ne 0 ]; then
            echo "soak: jqbench (producers and batch workers) exited with $rc:" >&2
            cat "$WORK/jqbench.out" >&2
            exit 1
        fi
    fi
    if ! kill -0 "$SINGLE_PID" 2>/dev/null; then
        echo "soak: pgbench (single-job workers) ended:" >&2
        cat "$WORK/pgbench.out" >&2
        exit 1
    fi
    if [ "$el" -ge "$TIMEOUT" ]; then
        echo "soak: $S_SUCC of $JOBS jobs processed after ${el} s (timeout ${TIMEOUT} s): stopping the load" >&2
        STATUS=incomplete
        sample "$PHASE"
        break
    fi
    sleep 0.5
done
LOAD_END=$EPOCHREALTIME
[ "$PHASE" = hold ] && { hold_end; HOLD_T1=$(now); PHASE=after; echo "  -- xmin holder: COMMIT"; }
stop_pid "$SINGLE_PID"; SINGLE_PID=
stop_pid "$LOAD_PID"; LOAD_PID=
if grep -q 'aborted' "$WORK/pgbench.out"; then
    echo "soak: a pgbench client (single-job worker) aborted:" >&2
    cat "$WORK/pgbench.out" >&2
    exit 1
fi
LOAD_SECS=$(awk -v a="$LOAD_START" -v b="$LOAD_END" 'BEGIN { printf("%.0f", b - a) }')

# the tail: load stopped; until autovacuum has been through jq.job since
# the release (its count in the last sample before the release is the mark)
AV_MARK=$(awk -F'|' '$1 == "hold" { m = $20 } END { print m + 0 }' "$RAWS")
if [ "$STATUS" = complete ]; then
    log "load done in ${LOAD_SECS} s; sampling until autovacuum has vacuumed jq.job since the release (at most ${TAIL_MAX} s)"
    TAIL_START=$EPOCHREALTIME
    while :; do
        sleep "$SAMPLE"
        sample tail
        av=$(tail -n 1 "$RAWS" | awk -F'|' '{ print $20 }')
        [ "$av" -gt "$AV_MARK" ] && break
        [ "$(awk -v a="$TAIL_START" -v b="$EPOCHREALTIME" 'BEGIN { print (b - a >= '"$TAIL_MAX"') }')" = 1 ] && break
    done
fi
FINAL_CHECK=$(pg -d "$DB" -At -F ' ' -c "SELECT (SELECT count(*) FROM jq.job), (SELECT count(*) FROM jq.dead_letter)")
ELAPSED=$(( $(date +%s) - SOAK_START ))

# ------------------------------------------------------------------ report
mkdir -p "$TOP/bench/results"
CSV=$TOP/bench/results/soak.csv.tmp
# raw row: phase|epoch|enq|succ|ready|sched|leased|failed|job|job_pkey|ready_idx|sched_idx|
#          leased_idx|result|result_pkey|result_fin_idx|job_live|job_dead|job_last_av|job_avs|
#          res_live|res_dead|res_last_av|res_avs|held|xmin_age|deq_calls|ack_calls|ackb_calls
awk -F'|' -v t0="$T0" '
    BEGIN { OFS = ","
        print "t_s,phase,xmin_held,xmin_age,enqueued,processed,enqueue_rate,ack_rate,dequeue_calls_per_s," \
              "single_job_acks,ready,in_flight,depth,job_kb,job_pkey_kb,job_ready_idx_kb,job_scheduled_idx_kb," \
              "job_leased_idx_kb,job_result_kb,job_result_pkey_kb,job_result_finished_idx_kb,job_live,job_dead," \
              "job_autovacuums,job_last_autovacuum_s,job_result_live,job_result_dead,job_result_autovacuums," \
              "job_result_last_autovacuum_s" }
    function kb(b) { return sprintf("%.0f", b / 1024) }
    function rel(e) { return e == "" ? "" : sprintf("%.0f", e - t0) }
    {
        t = $2 - t0
        if (NR == 1) { er = ""; ar = ""; dr = "" }
        else {
            dt = $2 - pt
            er = sprintf("%.0f", ($3 - pe) / dt); ar = sprintf("%.0f", ($4 - ps) / dt)
            dr = sprintf("%.0f", ($27 - pd) / dt)
        }
        print sprintf("%.1f", t), $1, $25, $26, $3, $4, er, ar, dr, $28, $5, $7, $5 + $6 + $7,
              kb($9), kb($10), kb($11), kb($12), kb($13), kb($14), kb($15), kb($16),
              $17, $18, $20, rel($19), $21, $22, $24, rel($23)
        pt = $2; pe = $3; ps = $4; pd = $27
    }' "$RAWS" >"$CSV"
# column numbers in the CSV, by name
col() { head -n 1 "$CSV" | tr ',' '\n' | grep -nx "$1" | cut -d: -f1; }

HS=$(awk -v a="$T0" -v b="${HOLD_T0:-}" 'BEGIN { if (b == "") print ""; else printf("%.0f", b - a) }')
HE=$(awk -v a="$T0" -v b="${HOLD_T1:-}" 'BEGIN { if (b == "") print ""; else printf("%.0f", b - a) }')

# phase statistics of the ack rate over the sample intervals (the interval
# belongs to the phase of the sample that ends it); the last interval of the
# load, cut short by the last ack, is left out, and so is the tail
PHASES=$WORK/phases.md
{
echo "| phase | samples at t (s) | intervals | ack rate min | median | max | enqueue rate median | max depth | max jq.job n_dead_tup | max jq.job_result n_dead_tup |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for ph in before hold after; do
    awk -F, -v ph="$ph" -v car="$(col ack_rate)" -v cer="$(col enqueue_rate)" -v cd="$(col depth)" \
        -v cjd="$(col job_dead)" -v crd="$(col job_result_dead)" -v cph="$(col phase)" -v ct="$(col t_s)" '
        function isort(v, m,    i, j, x) {
            for (i = 2; i <= m; i++) {
                x = v[i] + 0
                for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]
                v[j + 1] = x
            }
        }
        NR == 1 { next }
        { ph_[NR] = $cph; t_[NR] = $ct; ar_[NR] = $car; er_[NR] = $cer; d_[NR] = $cd; jd_[NR] = $cjd; rd_[NR] = $crd; n = NR }
        END {
            # the last load sample: the last one that is not "tail"
            last = 0
            for (i = 2; i <= n; i++) if (ph_[i] != "tail") last = i
            k = 0; md = 0; mjd = 0; mrd = 0; t1 = ""; t2 = ""
            for (i = 2; i <= n; i++) {
                if (ph_[i] != ph) continue
                if (t1 == "") t1 = t_[i]
                t2 = t_[i]
                if (d_[i] > md) md = d_[i]
                if (jd_[i] > mjd) mjd = jd_[i]
                if (rd_[i] > mrd) mrd = rd_[i]
                if (i == last) continue
                k++; a[k] = ar_[i]; e[k] = er_[i]
            }
            if (t1 == "") { printf("| %s | — | 0 | | | | | | | |\n", ph); exit }
            isort(a, k); isort(e, k)
            med = (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
            emed = (k % 2) ? e[(k + 1) / 2] : (e[k / 2] + e[k / 2 + 1]) / 2
            printf("| %s | %.0f–%.0f | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |\n",
                   ph == "hold" ? "**xmin held**" : ph, t1, t2, k, a[1], med, a[k], emed, md, mjd, mrd)
        }' "$CSV"
done
} >"$PHASES"

# sizes: at the start, right before the hold, at their peak, at the end
human() { awk -v k="$1" 'BEGIN { if (k < 1024) printf("%d kB", k); else printf("%.1f MB", k / 1024) }'; }
SIZES=$WORK/sizes.md
{
echo "| relation | start | end of \"before\" (t = ${HS:-—} s) | largest before the hold | peak (at t) | end of load | end (after the tail) |"
echo "|---|---|---|---|---|---|---|"
for r in job:jq.job job_pkey:job_pkey job_ready_idx:job_ready_idx job_scheduled_idx:job_scheduled_idx \
         job_leased_idx:job_leased_idx job_result:jq.job_result job_result_pkey:job_result_pkey \
         job_result_finished_idx:job_result_finished_idx; do
    c=$(col "${r%%:*}_kb")
    read -r s b bm p pt l e <<<"$(awk -F, -v c="$c" -v cph="$(col phase)" -v ct="$(col t_s)" '
        NR == 1 { next }
        NR == 2 { s = $c }
        $cph == "before" || $cph == "start" { b = $c; if ($c + 0 > bm + 0) bm = $c }
        $cph != "tail" { l = $c }
        $c + 0 > p + 0 || p == "" { p = $c; pt = $ct }
        { e = $c }
        END { print s, b, bm + 0, p, pt, l, e }' "$CSV")"
    echo "| ${r#*:} | $(human "$s") | $(human "$b") | $(human "$bm") | $(human "$p") ($pt s) | $(human "$l") | $(human "$e") |"
done
} >"$SIZES"

# autovacuum runs of the two tables, from the server log
AVRUNS=$WORK/av.md
{
echo "| t (s) | phase | table | tuples removed | remain | dead but not yet removable | index scans | pages removed / remain |"
echo "|---|---|---|---|---|---|---|---|"
awk -v t0="$T0" -v hs="${HS:-1e18}" -v he="${HE:-1e18}" -v le="$(awk -v a="$T0" -v b="$LOAD_END" 'BEGIN { print b - a }')" '
    /automatic vacuum of table "'"$DB"'\.jq\.(job|job_result)"/ {
        t = $1 - t0; tb = $0; sub(/.*automatic vacuum of table "'"$DB"'\./, "", tb); sub(/".*/, "", tb)
        scans = $0; sub(/.*index scans: /, "", scans)
        inrun = 1; next }
    inrun && /pages: / { pr = $2; prm = $4 }
    inrun && /tuples: / {
        ph = (t < 0) ? "start" : (t < hs) ? "before" : (t < he) ? "**xmin held**" : (t <= le) ? "after" : "tail"
        printf("| %.0f | %s | %s | %s | %s | %s | %s | %s / %s |\n", t, ph, tb, $2, $4, $6, scans, pr, prm)
        inrun = 0 }' "$PGDIR/server.log"
} >"$AVRUNS"

# the samples, thinned to about 25 rows (always the first and last, and the
# first of each phase)
THIN=$WORK/thin.md
{
echo "| t (s) | phase | processed | ack/s | depth | jq.job | pkey | ready_idx | leased_idx | job n_dead | job_result | result pkey | result finished_idx | result n_dead | job autovacuums | xmin held |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
awk -F, 'NR > 1 { print }' "$CSV" | awk -F, -v n="$(( $(wc -l <"$CSV") - 1 ))" '
    function h(k) { return (k < 1024) ? sprintf("%d kB", k) : sprintf("%.1f MB", k / 1024) }
    BEGIN { step = int((n + 23) / 24); if (step < 1) step = 1 }
    { keep = (NR == 1 || NR == n || (NR - 1) % step == 0 || $2 != prev); prev = $2
      if (keep)
          printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                 $1, ($2 == "hold") ? "**hold**" : $2, $6, $8, $13, h($14), h($15), h($16), h($18), $23,
                 h($19), h($20), h($21), $27, $24, ($3 > 0) ? "yes" : "no") }'
} >"$THIN"

# the chart
PNG=$TOP/bench/results/soak.png
LOAD_T=$(awk -F, 'NR > 1 && $2 != "tail" { t = $1 } END { printf("%.1f", t) }' "$CSV")
TMAX=$(awk -F, 'NR > 1 { t = $1 } END { printf("%.0f", t + 1) }' "$CSV")
cat >"$WORK/soak.gp" <<GP
set terminal pngcairo size 1200,1100 noenhanced font ",10"
set output "$PNG"
set datafile separator ","
set key autotitle columnhead
set multiplot layout 3,1 title "pgjq bloat soak: $JOBS jobs offered at $RATE jobs/s; xmin held from ${HS:-?} s to ${HE:-?} s (shaded)"
set lmargin 12
set rmargin 30
set key outside right top
set grid
set xrange [0:$TMAX]
set xlabel "time since the start of the load (s)"
set object 1 rect from ${HS:-0},graph 0 to ${HE:-0},graph 1 back fc rgb "#ffdddd" fs solid 0.6 noborder
set arrow 1 from $LOAD_T,graph 0 to $LOAD_T,graph 1 nohead dt 3 lc rgb "#555555"
set label 1 "last ack" at $LOAD_T,graph 0.95 offset 0.5,0
set ylabel "jobs/s"
set yrange [0:*]
plot "$CSV" using 1:$(col ack_rate) with lines lw 2 title "acked/s", \
     "" using 1:$(col enqueue_rate) with lines lw 1 dt 2 title "enqueued/s"
set ylabel "pg_relation_size (MB)"
set logscale y
set yrange [0.005:*]
plot "$CSV" using 1:(\$$(col job_kb)/1024) with lines lw 2 title "jq.job", \
     "" using 1:(\$$(col job_pkey_kb)/1024) with lines title "job_pkey", \
     "" using 1:(\$$(col job_ready_idx_kb)/1024) with lines title "job_ready_idx", \
     "" using 1:(\$$(col job_scheduled_idx_kb)/1024) with lines title "job_scheduled_idx", \
     "" using 1:(\$$(col job_leased_idx_kb)/1024) with lines title "job_leased_idx", \
     "" using 1:(\$$(col job_result_kb)/1024) with lines lw 2 title "jq.job_result", \
     "" using 1:(\$$(col job_result_pkey_kb)/1024) with lines title "job_result_pkey", \
     "" using 1:(\$$(col job_result_finished_idx_kb)/1024) with lines title "job_result_finished_idx"
unset logscale y
set yrange [0:*]
set ylabel "rows"
plot "$CSV" using 1:$(col job_dead) with lines lw 2 title "jq.job n_dead_tup", \
     "" using 1:$(col job_result_dead) with lines lw 2 title "jq.job_result n_dead_tup", \
     "" using 1:$(col job_result_live) with lines dt 2 title "jq.job_result n_live_tup", \
     "" using 1:$(col depth) with lines title "queue depth"
unset multiplot
GP
gnuplot "$WORK/soak.gp"

# ------------------------------------------------------------------ results file
OUT=$TOP/bench/results/SOAK.md
commas() { echo "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta'; }
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf("%.1f GiB\n", $2 / 1048576) }' /proc/meminfo)
PGVER=$(pg -d "$DB" -At -c 'SELECT version()')
LAST_ROW=$(awk -F, -v cph="$(col phase)" 'NR > 1 && $cph != "tail" { r = $0 } END { print r }' "$CSV")
IFS=, read -r -a L <<<"$LAST_ROW"
SINGLE_ACKS=${L[$(( $(col single_job_acks) - 1 ))]}
PROCESSED=${L[$(( $(col processed) - 1 ))]}
ENQUEUED=${L[$(( $(col enqueued) - 1 ))]}
AV_JOB_LOAD=$(awk -F'|' '$1 != "tail" { n = $20 } END { print n + 0 }' "$RAWS")
JQBENCH_LOG=$(grep -v '^RESULT' "$WORK/jqbench.out" | head -n 5 || true)
{
echo "# pgjq bloat soak: $(commas "$JOBS") jobs"
echo
if [ "$JOBS" -ne 5000000 ]; then
    echo "**A short run: $(commas "$JOBS") jobs, not the 5,000,000 of \`make soak\`.** Its xmin hold lasted"
    echo "$(awk -v a="${HS:-0}" -v b="${HE:-0}" 'BEGIN { print b - a }') s, and autovacuum (naptime 60 s, the default) vacuumed jq.job $AV_JOB_LOAD time(s) during"
    echo "its ${LOAD_SECS} s of load: it shows the shape of the effect, not its size at 5,000,000."
    echo
fi
echo "Generated by \`bash bench/soak.sh $JOBS\`$([ "$JOBS" -eq 5000000 ] && echo ' (`make soak`)') on $(date -u '+%Y-%m-%d %H:%M UTC'); took ${ELAPSED} s"
echo "in all, ${LOAD_SECS} s of load. Status: **$STATUS** — $PROCESSED of $JOBS jobs processed ($ENQUEUED enqueued);"
echo "at the end jq.job held $(echo "$FINAL_CHECK" | cut -d' ' -f1) rows and jq.dead_letter $(echo "$FINAL_CHECK" | cut -d' ' -f2)."
echo "Chart: [soak.png](soak.png); every sample as CSV at the end of this file."
echo
echo "## Machine"
echo
echo "- CPU: $CPU, $(nproc) cores (nproc)"
echo "- memory: $MEM"
echo "- $PGVER"
echo "- pgjq $PGJQ_VERSION, $PGJQ_BUILD (tree at $GITREV)"
echo "- server and clients on the same machine (Unix socket); the machine is shared and noisy"
echo
echo "## Settings"
echo
echo '```'
echo "$SETTINGS"
echo "shared_preload_libraries = 'pgjq'   # pgjq.naptime, pgjq.notify_interval, pgjq.purge_batch_size: defaults"
echo "$SOAK_SETTINGS"
echo "# autovacuum: every setting at its default"
echo "$AV_SETTINGS"
echo '```'
echo
echo "## Load"
echo
echo "One queue, created with \`jq.jq_create_queue('$QUEUE', result_retention => '$RETENTION')\`, so that the"
echo "background worker's purge (every pgjq.stats_interval, 1 s here) deletes results $RETENTION old and"
echo "jq.job_result holds about $RETENTION of jobs (a minute for runs of 6 minutes and more; a sixth of"
echo "the expected time, at least 10 s, for shorter ones). Payloads are ~120-byte JSON objects."
echo
echo "- producers: \`jqbench --producers $PRODUCERS --batch $BATCH --rate $RATE --jobs $JOBS\`: jq_enqueue_batch"
echo "  of $BATCH jobs, $RATE jobs/s in all, on a fixed schedule (a producer that falls behind catches up)."
echo "- batch workers, in the same jqbench process: \`--workers $WORKERS --dequeue $DEQUEUE --ack-batch\`: LISTEN,"
echo "  jq_dequeue of up to $DEQUEUE, one jq_ack_batch."
echo "- single-job workers: \`pgbench -c $SINGLE_WORKERS -M prepared\`: jq_dequeue of 1 and jq_ack, each in its own"
echo "  transaction; no LISTEN: 10 ms sleep after an empty dequeue. They acked $SINGLE_ACKS of the jobs."
echo "- the xmin holder: from t = ${HS:-—} s to t = ${HE:-—} s (the middle third of the expected ${EXPECTED} s) a session"
echo "  ran \`BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM soak_hold;\` and stayed idle in"
echo "  transaction, then committed."
echo "- samples every ${SAMPLE} s (t = 0: the start of the load). Phases: **before** the hold, **hold**, **after** it;"
echo "  **tail**: the load stopped, sampled until autovacuum had vacuumed jq.job since the release (at most ${TAIL_MAX} s)."
echo
echo "## Ack rate by phase"
echo
echo "The rate of each sample interval (jobs acked per second; the producers offer $RATE/s). The last"
echo "interval of the load, cut short by the last ack, is left out; a rate above $RATE/s is catching up"
echo "on a backlog."
echo
cat "$PHASES"
echo
echo "## Sizes"
echo
echo "\`pg_relation_size\` of each table (main fork) and index. Nobody runs VACUUM FULL or REINDEX; the pgjq"
echo "worker's compaction (\`jq.compact\`, \`pgjq.compact = on\`) rebuilds the indexes that the hold bloated"
echo "once vacuum has emptied them; under load it closes the tail of a \`jq.job_result\` more than 60 %"
echo "free to inserts (marked full in the free space map after each vacuum) until its rows are purged and"
echo "vacuum truncates it (rows are moved off the tail only while acks are few). An index's"
echo "size under steady churn is its high-water mark between vacuums; compaction's rebuilds during the"
echo "first minutes (as the working set grows) make \"largest before the hold\" the fairer reference."
echo
echo "What compaction did (server log):"
echo
echo '```'
# each line: t (s) of the first of a run of equal messages, how many, the message
awk -v t0="$T0" '
    match($0, /pgjq: (rebuilt index|moved|closed|opened) .*/) {
        msg = substr($0, RSTART, RLENGTH)
        sub(/ to give its space back/, "", msg); sub(/ off its tail for vacuum to truncate/, "", msg)
        if (msg == last) { n++; next }
        if (n) printf("t = %4.0f s  %dx %s\n", t, n, last)
        last = msg; n = 1; t = $1 - t0
    }
    END { if (n) printf("t = %4.0f s  %dx %s\n", t, n, last) }' "$PGDIR/server.log" || true
echo '```'
echo
cat "$SIZES"
echo
echo "## Autovacuum runs (server log)"
echo
cat "$AVRUNS"
echo
echo "## Samples (thinned)"
echo
echo "Sizes are \`pg_relation_size\`; n_dead from pg_stat_user_tables; depth = ready + scheduled + leased."
echo
cat "$THIN"
echo
echo "![rate, depth and sizes over time](soak.png)"
echo
if [ -n "$JQBENCH_LOG" ]; then
    echo "jqbench said:"
    echo
    echo '```'
    echo "$JQBENCH_LOG"
    echo '```'
    echo
fi
echo "## Every sample (CSV)"
echo
echo "<details><summary>$(( $(wc -l <"$CSV") - 1 )) samples; also written to bench/results/soak.csv.tmp</summary>"
echo
echo '```csv'
cat "$CSV"
echo '```'
echo
echo "</details>"
} >"$OUT"

log "ack rate by phase"
cat "$PHASES"
echo
cat "$SIZES"
log "wrote ${OUT#$TOP/}, ${PNG#$TOP/} and ${CSV#$TOP/} (${ELAPSED} s)"
[ "$STATUS" = complete ] || exit 1
