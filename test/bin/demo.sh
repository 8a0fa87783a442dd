#!/usr/bin/env bash
# make demo: the launch-day replay, from a fresh Debian machine.
#
#  1. installs what it needs (PostgreSQL 15, python3-psycopg, gnuplot-nox),
#     builds and installs pgjq (as make test does);
#  2. starts a throwaway cluster in a temporary directory that preloads
#     pgjq, with pgjq.database = 'launchday' and pgjq.stats_interval = '1s'
#     (history samples and alerts at the replay's speed);
#  3. runs docs/demo/launch_day.py: 18,000 ad-copy scoring requests of a
#     4-hour launch day, replayed in about 2 minutes (time compressed x120)
#     by producer and worker threads, with a live line, a final report, a
#     check that no job was lost or done twice (exit 1 if one was), and a
#     depth chart written to bench/results/launch_day.png.
#
# The cluster is stopped and the directory removed on exit, on failure and
# on Ctrl-C alike.  PGJQ_DEMO_PORT picks the port (default 5492);
# PGJQ_DEMO_CHART the chart's path.
source "$(dirname "$0")/common.sh"

START=$(date +%s)
PORT=${PGJQ_DEMO_PORT:-5492}
DB=launchday
CHART=${PGJQ_DEMO_CHART:-$TOP/bench/results/launch_day.png}

ensure_packages "${BASE_PACKAGES[@]}" python3-psycopg gnuplot-nox
build_install

WORK=$(mktemp -d /tmp/pgjq-demo.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    cluster_stop "$PGDIR"
    rm -rf "$WORK"
    [ "$rc" -eq 0 ] || echo "demo: stopped the cluster and removed $WORK (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting a throwaway cluster in $PGDIR (port $PORT, database $DB)"
cluster_start "$PGDIR" "$PORT"
as_pg createdb -h "$PGDIR" -p "$PORT" -U postgres "$DB"
cat >>"$PGDIR/data/postgresql.conf" <<CONF
pgjq.database = '$DB'
pgjq.stats_interval = '1s'
CONF
# both settings take effect on a reload: the launcher starts the worker of
# the demo's database within moments, no restart needed
as_pg pg_ctl -D "$PGDIR/data" reload >/dev/null

log "launch day: 18,000 scoring requests, 09:00 to 13:00, replayed at x120"
# as the invoking user, so that it can write the chart into the source tree;
# the cluster trusts local connections
PGHOST=$PGDIR PGPORT=$PORT PGUSER=postgres PGDATABASE=$DB PYTHONIOENCODING=utf-8 \
    /usr/bin/python3 "$TOP/docs/demo/launch_day.py" --chart "$CHART"

echo "demo OK ($(( $(date +%s) - START )) s in all)"
