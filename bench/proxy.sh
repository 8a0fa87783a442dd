#!/usr/bin/env bash
# make bench-proxy: pgjq through the PL/Proxy router (proxy/, issue 17)
# over 1 and over 3 shards, against the same calls made on a shard
# directly (the floor), and against a bare PL/Proxy function (what PL/Proxy
# alone costs, without the router's routing and error handling).
#
#   bash bench/proxy.sh [REPS]     REPS defaults to 3 (about 4 minutes)
#
#  1. installs what it needs (PL/Proxy too), builds and installs pgjq
#     (PGJQ_BENCH_SKIP_INSTALL=1 uses the pgjq already installed);
#  2. starts four throwaway clusters on this machine with the settings of
#     make bench (durable commits): shards 0, 1 and 2, and a router with
#     two router databases made by proxy/pgjq_proxy, router1 over shard 0
#     and router3 over the three;
#  3. REPS times each, CLIENTS pgbench clients, TURNS transactions each,
#     every call autocommitted:
#       enqueue: jq_enqueue of a job with one of 14 keys at random;
#       turn:    a worker's one-job turn, jq_dequeue then jq_ack, from a
#                queue filled beforehand (on every shard);
#     each on shard 0 directly (the floor), through router1, through
#     router3, and (enqueue only) through a bare PL/Proxy function that
#     runs jq_enqueue on shard 0 (RUN ON 0);
#  4. writes bench/results/PROXY.md: medians (min – max) of calls a
#     second and ms per call, each against the floor, the router's cost
#     per call, and how router3 spread the jobs over the shards.
#
# On this 2-core machine the three shards share the two cores with the
# router and the clients, so three shards cannot be faster than one here:
# the figures show the router's cost, not scale-out.
#
# Environment: PGJQ_BENCH_PORT (default 5490: the shards take it and the
# next two, the router the one after).
source "$(dirname "$0")/../test/bin/common.sh"

REPS=${1:-3}
case "$REPS" in
    ''|*[!0-9]*|0) echo "usage: $0 [REPS]   (runs per case, default 3)" >&2; exit 2 ;;
esac
PORT=${PGJQ_BENCH_PORT:-5490}
CLIENTS=4
TURNS=1500              # per client and run

ensure_packages "${BASE_PACKAGES[@]}" postgresql-contrib postgresql-$PG_MAJOR-plproxy
if [ "${PGJQ_BENCH_SKIP_INSTALL:-0}" = 1 ]; then
    PGJQ_BUILD="the pgjq already installed (PGJQ_BENCH_SKIP_INSTALL=1)"
else
    build_install
    PGJQ_BUILD="built and installed from this tree"
fi
PSQL=$PG_BIN/psql
PGBENCH=$PG_BIN/pgbench
GITREV=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$TOP" diff --quiet HEAD -- src sql proxy 2>/dev/null ||
    GITREV="$GITREV, with uncommitted changes in src/, sql/ or proxy/"

WORK=$(mktemp -d /tmp/pgjq-proxy.XXXXXX)
chmod 755 "$WORK"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for d in "$WORK"/shard0 "$WORK"/shard1 "$WORK"/shard2 "$WORK"/router; do
        cluster_stop "$d"
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# each cluster: make bench's settings, but a quarter of its shared_buffers
start() {
    local dir=$1 port=$2
    cluster_start "$dir" "$port"
    { sed 's/^shared_buffers = .*/shared_buffers = 256MB/' "$TOP/bench/cluster.conf"
      echo "pgjq.database = 'postgres'"; } >>"$dir/data/postgresql.conf"
    as_pg pg_ctl -D "$dir/data" -l "$dir/server.log" -w restart >/dev/null
}
on() {
    local dir=$1 port=$2
    shift 2
    "$PSQL" -h "$dir" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"
}
shard_dir() { echo "$WORK/shard$1"; }
shard_port() { echo $((PORT + $1)); }
RDIR=$WORK/router
RPORT=$((PORT + 3))

log "starting shards 0-2 and a router (ports $PORT-$RPORT) in $WORK"
for i in 0 1 2; do
    start "$(shard_dir $i)" "$(shard_port $i)"
    on "$(shard_dir $i)" "$(shard_port $i)" -d postgres \
        -c "SET client_min_messages = warning" -c "CREATE EXTENSION pgjq"
done
cluster_start "$RDIR" "$RPORT"
sed 's/^shared_buffers = .*/shared_buffers = 256MB/' "$TOP/bench/cluster.conf" >>"$RDIR/data/postgresql.conf"
as_pg pg_ctl -D "$RDIR/data" -l "$RDIR/server.log" -w restart >/dev/null
on "$RDIR" "$RPORT" -d postgres -c "CREATE DATABASE router1" -c "CREATE DATABASE router3"
conninfo() { echo "host=$(shard_dir $1) port=$(shard_port $1) dbname=postgres"; }
as_pg "$TOP/proxy/pgjq_proxy" "host=$RDIR port=$RPORT dbname=router1" "$(conninfo 0)" >/dev/null
as_pg "$TOP/proxy/pgjq_proxy" "host=$RDIR port=$RPORT dbname=router3" \
    "$(conninfo 0)" "$(conninfo 1)" "$(conninfo 2)" >/dev/null
# the bare PL/Proxy function: jq_enqueue on shard 0, nothing else
on "$RDIR" "$RPORT" -d router1 <<'SQL'
CREATE FUNCTION public.bare_enqueue(queue text, payload jsonb, key text)
RETURNS bigint
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjq_shards';
    RUN ON 0;
    SELECT jq.jq_enqueue(queue, payload, 0, NULL, NULL, NULL, key) AS bare_enqueue;
$$;
SQL

cat >"$WORK/enqueue.sql" <<'SQL'
\set k random(1, 14)
SELECT jq.jq_enqueue('bench', '{"doc": 1}', key => 'team' || :k);
SQL
cat >"$WORK/bare.sql" <<'SQL'
\set k random(1, 14)
SELECT public.bare_enqueue('bench', '{"doc": 1}', 'team' || :k);
SQL
cat >"$WORK/turn.sql" <<'SQL'
SELECT job_id AS id, lease_token AS tok FROM jq.jq_dequeue('bench', 1) \gset
SELECT jq.jq_ack(:id, :tok, NULL);
SQL
chmod 644 "$WORK"/*.sql

# a fresh queue 'bench' on every shard (through router3); for a turn,
# enough jobs on every shard for the whole run
prepare() {
    local what=$1
    on "$RDIR" "$RPORT" -d router3 -At >/dev/null <<'SQL'
SELECT jq.jq_drop_queue('bench', force => true) FROM jq.jq_list_queues() WHERE name = 'bench';
SELECT 1 FROM jq.jq_create_queue('bench');
SQL
    for i in 0 1 2; do
        if [ "$what" = turn ]; then
            on "$(shard_dir $i)" "$(shard_port $i)" -d postgres -At >/dev/null <<SQL
SELECT count(*) FROM (
    SELECT jq.jq_enqueue_batch('bench', array_agg('{"doc": 1}'::jsonb))
      FROM generate_series(1, $CLIENTS * $TURNS * 12 / 10) g
     GROUP BY g / 5000) b;
SQL
        fi
        on "$(shard_dir $i)" "$(shard_port $i)" -d postgres -c "VACUUM ANALYZE" -c "CHECKPOINT"
    done
}

# run SCRIPT DIR PORT DB: "tps ms_per_call" (ms: the sum of the script's
# statements' latencies: for a turn, the dequeue and the ack)
run() {
    local script=$1 dir=$2 port=$3 db=$4 out tps lat
    out=$(as_pg "$PGBENCH" -h "$dir" -p "$port" -U postgres -n -r -c "$CLIENTS" -j "$CLIENTS" \
              -t "$TURNS" -f "$script" "$db" 2>&1) || { echo "$out" >&2; return 1; }
    tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
    lat=$(printf '%s\n' "$out" | awk '/SELECT / && $1 ~ /^[0-9.]+$/ { s += $1 } END { printf "%.3f", s }')
    printf '%.0f %s\n' "$tps" "$lat"
}

stats() {
    sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
                                        printf "%s %s %s", m, a[1], a[NR] }'
}

CASES="enqueue:direct enqueue:bare enqueue:router1 enqueue:router3 turn:direct turn:router1 turn:router3"
declare -A TPS LAT
declare -A SPREAD
T0=$(date +%s)
for c in $CASES; do
    what=${c%%:*} via=${c##*:}
    tps_all='' lat_all=''
    for r in $(seq "$REPS"); do
        prepare "$what"
        case $via in
            direct)  read -r t l <<<"$(run "$WORK/$what.sql" "$(shard_dir 0)" "$(shard_port 0)" postgres)" ;;
            bare)    read -r t l <<<"$(run "$WORK/bare.sql" "$RDIR" "$RPORT" router1)" ;;
            router*) read -r t l <<<"$(run "$WORK/$what.sql" "$RDIR" "$RPORT" "$via")" ;;
        esac
        [ -n "$t" ] && [ -n "$l" ] || die "$what $via run $r failed"
        log "$what $via run $r: $t calls/s, $l ms per call"
        tps_all="$tps_all $t" lat_all="$lat_all $l"
        if [ "$c" = enqueue:router3 ] || [ "$c" = turn:router3 ]; then
            SPREAD[$c]=$(for i in 0 1 2; do
                on "$(shard_dir $i)" "$(shard_port $i)" -d postgres -At -c \
                    "SELECT CASE WHEN '$what' = 'enqueue' THEN enqueued_total ELSE succeeded_total END
                       FROM jq.queue_stats WHERE queue = 'bench'"
            done | paste -sd/)
        fi
    done
    TPS[$c]=$(printf '%s\n' $tps_all | stats)
    LAT[$c]=$(printf '%s\n' $lat_all | stats)
done
ELAPSED=$(( $(date +%s) - T0 ))

med() { echo "$1" | awk '{print $1}'; }
range() { echo "$1" | awk '{print $2 " – " $3}'; }
ratio() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN { printf "%.2f", a / b }'; }
diffms() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN { printf "%.3f", a - b }'; }
label() {
    case $1 in
        enqueue:direct) echo "enqueue, on shard 0 directly (the floor)" ;;
        enqueue:bare) echo "enqueue, bare PL/Proxy function (RUN ON 0)" ;;
        enqueue:router1) echo "enqueue, router over 1 shard" ;;
        enqueue:router3) echo "enqueue, router over 3 shards" ;;
        turn:direct) echo "worker turn, on shard 0 directly (the floor)" ;;
        turn:router1) echo "worker turn, router over 1 shard" ;;
        turn:router3) echo "worker turn, router over 3 shards" ;;
    esac
}
mkdir -p "$TOP/bench/results"
{
    echo "# pgjq through the PL/Proxy router"
    echo
    echo "\`bash bench/proxy.sh $REPS\` on $(date -u +%Y-%m-%d), tree $GITREV, $PGJQ_BUILD;"
    echo "$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'),"
    echo "PL/Proxy $(dpkg-query -W -f '${Version}' postgresql-$PG_MAJOR-plproxy 2>/dev/null)."
    echo "Four clusters on this machine (shards 0-2 and the router; make bench's settings, durable"
    echo "commits, shared_buffers 256MB each), $CLIENTS pgbench clients, $TURNS transactions each, every"
    echo "call autocommitted; median of $REPS runs (min – max). ms per call: pgbench's statement"
    echo "latency (a turn: the dequeue's and the ack's). $ELAPSED s in all."
    echo
    echo "| case | calls/s | min – max | of the floor | ms per call | min – max |"
    echo "|---|---|---|---|---|---|"
    for c in $CASES; do
        floor=${c%%:*}:direct
        echo "| $(label "$c") | $(med "${TPS[$c]}") | $(range "${TPS[$c]}") | $(ratio "${TPS[$c]}" "${TPS[$floor]}") | $(med "${LAT[$c]}") | $(range "${LAT[$c]}") |"
    done
    echo
    echo "The router's cost per call (medians, router over 1 shard less the floor): enqueue"
    echo "$(diffms "${LAT[enqueue:router1]}" "${LAT[enqueue:direct]}") ms, of which PL/Proxy alone"
    echo "$(diffms "${LAT[enqueue:bare]}" "${LAT[enqueue:direct]}") ms; worker turn (two calls)"
    echo "$(diffms "${LAT[turn:router1]}" "${LAT[turn:direct]}") ms."
    echo
    echo "Router over 3 shards, jobs per shard (0/1/2) in its last run: enqueued"
    echo "${SPREAD[enqueue:router3]}, acked ${SPREAD[turn:router3]}."
} >"$TOP/bench/results/PROXY.md"
cat "$TOP/bench/results/PROXY.md"
