#!/usr/bin/env bash
# make bench-keys: the cost of flow control (issue 14), as ratios to the
# same run's queue without keys.
#
#   bash bench/keys.sh [REPS]     REPS defaults to 3 (about 5 minutes)
#
#  1. installs what it needs, builds and installs pgjq (PGJQ_BENCH_SKIP_INSTALL=1
#     uses the pgjq already installed);
#  2. starts a throwaway cluster with the settings of make bench
#     (bench/cluster.conf: durable commits);
#  3. for each case, REPS times: a fresh queue "bench", prefilled with jobs
#     spread round robin over KEYS keys, every key with a backlog (at least
#     3 jobs each, and more than the run takes); then pgbench, 2 clients,
#     each transaction a worker's turn in two transactions:
#       one job:   jq_dequeue('bench', 1) then jq_ack, each autocommitted
#       100 jobs:  jq_dequeue('bench', 100) then one jq_ack_batch
#     The cases:
#       plain       no keys, no limits: the queue as before flow control
#       keys        KEYS keys, fair => true, key_max_in_flight => 50 and
#                   max_in_flight => 100000 (limits set, not binding: what
#                   is measured is their bookkeeping, not waiting)
#       ordered     KEYS keys, as keys, every key ordered (key_ordered =>
#                   true): one job of each key at a time
#       rated       KEYS keys, as keys, and a rate limit on the queue that
#                   never binds (2,147,483,647 requests and 1e15 of cost a
#                   second): what taking each job's budget costs
#     one job with 1,000 keys and 100 jobs with 1,000 keys against plain
#     (the issue's targets: >= 0.8), and one job at 10, 1,000 and 10,000
#     keys (the cost must not grow with the keys that have a backlog); the
#     same two with 1,000 ordered keys;
#  4. writes bench/results/KEYS.md: per case the median jobs/s with min and
#     max, and its ratio to plain of the same size.
#
# Environment: PGJQ_BENCH_PORT (default 5493).
source "$(dirname "$0")/../test/bin/common.sh"
source "$(dirname "$0")/lib.sh"

REPS=${1:-3}
case "$REPS" in
    ''|*[!0-9]*|0) echo "usage: $0 [REPS]   (runs per case, default 3)" >&2; exit 2 ;;
esac
PORT=${PGJQ_BENCH_PORT:-5493}
CLIENTS=2
TURNS_1=3000            # per client, one-job turns
TURNS_100=150           # per client, 100-job turns

bench_start keys
pg -d bench -At -c "SELECT 1 FROM jq.jq_create_queue('warmup')" >/dev/null
# flow control waits for the worker's first count after the start
until [ "$(pg -d bench -At -c 'SELECT jq.counters_valid()')" = t ]; do sleep 0.2; done

cat >"$WORK/one.sql" <<'SQL'
SELECT job_id AS id, lease_token AS tok FROM jq.jq_dequeue('bench', 1) \gset
SELECT jq.jq_ack(:id, :tok, NULL);
SQL
cat >"$WORK/hundred.sql" <<'SQL'
SELECT quote_literal(array_agg(job_id)::text) AS ids,
       quote_literal(array_agg(lease_token)::text) AS toks FROM jq.jq_dequeue('bench', 100) \gset
SELECT count(*) FROM jq.jq_ack_batch(:ids::bigint[], :toks::bigint[]);
SQL
chmod 644 "$WORK"/*.sql

# prepare KEYS JOBS: a fresh queue, JOBS jobs round robin over KEYS keys
# (KEYS 0: no keys, no limits)
prepare() {
    local keys=$1 jobs=$2 ordered=$3 settings=''
    [ "$keys" -gt 0 ] && settings=", fair => true, key_max_in_flight => 50, max_in_flight => 100000"
    [ "$ordered" = ordered ] && settings="$settings, key_ordered => true"
    [ "$ordered" = rated ] && settings="$settings, rate_requests => 2147483647, rate_cost => 1e15, rate_period => '1 second'"
    pg -d bench -At <<SQL >/dev/null
SELECT jq.jq_drop_queue('bench', force => true) FROM jq.queue WHERE name = 'bench';
SELECT 1 FROM jq.jq_create_queue('bench'$settings);
SELECT count(*) FROM (
    SELECT jq.jq_enqueue_batch('bench', array_agg('{"k": 1}'::jsonb),
                               keys => CASE WHEN $keys > 0 THEN array_agg('client_' || (g % greatest($keys, 1))) END)
      FROM generate_series(0, $jobs - 1) g GROUP BY g / 5000) b;
SQL
    pg -d bench -c "VACUUM ANALYZE jq.job" -c "CHECKPOINT"
    # the worker counts the new jobs' keys within its naptime
    sleep 1
}

# run SCRIPT TURNS JOBS_PER_TURN: jobs/s of one pgbench run
run() {
    local script=$1 turns=$2 per=$3 out tps
    out=$(as_pg "$PGBENCH" -h "$PGDIR" -p "$PORT" -U postgres -n -c "$CLIENTS" -j "$CLIENTS" \
              -t "$turns" -f "$script" bench 2>&1) || { echo "$out" >&2; return 1; }
    tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
    awk -v t="$tps" -v p="$per" 'BEGIN { printf "%.0f", t * p }'
}

# stats of the numbers on stdin: median min max
stats() {
    sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
                                        printf "%.0f %.0f %.0f", m, a[1], a[NR] }'
}

declare -A RESULT
measure() {
    local name=$1 keys=$2 script=$3 turns=$4 per=$5 ordered=${6:-} jobs r rates=''
    jobs=$(( CLIENTS * turns * per * 12 / 10 ))
    [ "$jobs" -lt $(( keys * 3 )) ] && jobs=$(( keys * 3 ))
    for r in $(seq "$REPS"); do
        prepare "$keys" "$jobs" "$ordered"
        rates="$rates $(run "$script" "$turns" "$per")"
        log "$name run $r: $(echo "$rates" | awk '{print $NF}') jobs/s"
    done
    RESULT[$name]=$(printf '%s\n' $rates | stats)
}

T0=$(date +%s)
measure plain_1      0     "$WORK/one.sql"     "$TURNS_1"   1
measure keys1k_1     1000  "$WORK/one.sql"     "$TURNS_1"   1
measure plain_100    0     "$WORK/hundred.sql" "$TURNS_100" 100
measure keys1k_100   1000  "$WORK/hundred.sql" "$TURNS_100" 100
measure keys10_1     10    "$WORK/one.sql"     "$TURNS_1"   1
measure keys10k_1    10000 "$WORK/one.sql"     "$TURNS_1"   1
measure ordered1k_1   1000 "$WORK/one.sql"     "$TURNS_1"   1   ordered
measure ordered1k_100 1000 "$WORK/hundred.sql" "$TURNS_100" 100 ordered
measure rated1k_1     1000 "$WORK/one.sql"     "$TURNS_1"   1   rated
measure rated1k_100   1000 "$WORK/hundred.sql" "$TURNS_100" 100 rated
ELAPSED=$(( $(date +%s) - T0 ))

median() { echo "${RESULT[$1]}" | awk '{print $1}'; }
row() {
    local name=$1 label=$2 base=$3 m lo hi
    read -r m lo hi <<<"${RESULT[$name]}"
    printf '| %s | %s | %s – %s | %s |\n' "$label" "$m" "$lo" "$hi" \
        "$(awk -v a="$m" -v b="$(median "$base")" 'BEGIN { printf "%.2f", a / b }')"
}

mkdir -p "$TOP/bench/results"
{
    echo "# Flow control: the cost of keys, limits and fair share"
    echo
    echo "\`bash bench/keys.sh $REPS\` on $(date -u +%Y-%m-%d), tree $GITREV, $PGJQ_BUILD;"
    echo "$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'),"
    echo "settings of make bench (durable commits). $CLIENTS pgbench clients; each turn a jq_dequeue and"
    echo "its ack, in two transactions. Jobs/s, median of $REPS runs (min – max); the ratio is to the"
    echo "queue without keys of the same run. The keyed queues have fair => true, key_max_in_flight"
    echo "=> 50 and max_in_flight => 100000, and every key has jobs waiting; the ordered ones also"
    echo "key_ordered => true (one job of a key at a time); the rate-limited ones a queue rate limit"
    echo "that never binds (the cost of taking each job's budget). $ELAPSED s in all."
    echo
    echo "| case | jobs/s | min – max | ratio to plain |"
    echo "|---|---|---|---|"
    row plain_1    "one job, no keys (plain)" plain_1
    row keys1k_1   "one job, 1,000 keys"      plain_1
    row plain_100  "100 jobs, no keys (plain)" plain_100
    row keys1k_100 "100 jobs, 1,000 keys"     plain_100
    row keys10_1   "one job, 10 keys"         plain_1
    row keys10k_1  "one job, 10,000 keys"     plain_1
    row ordered1k_1   "one job, 1,000 ordered keys"  plain_1
    row ordered1k_100 "100 jobs, 1,000 ordered keys" plain_100
    row rated1k_1     "one job, 1,000 keys, rate limit" plain_1
    row rated1k_100   "100 jobs, 1,000 keys, rate limit" plain_100
} >"$TOP/bench/results/KEYS.md"
cat "$TOP/bench/results/KEYS.md"
