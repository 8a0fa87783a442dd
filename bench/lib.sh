# bench/lib.sh: the start that bench/keys.sh and bench/progress.sh share.
# Source it after test/bin/common.sh, with PORT set; bench_start NAME then
# installs what it needs, builds and installs pgjq (unless
# PGJQ_BENCH_SKIP_INSTALL=1), starts a throwaway cluster with the settings
# of make bench (bench/cluster.conf: durable commits) and a database
# "bench" with pgjq, and removes it all at exit.  It sets PSQL, PGBENCH,
# GITREV, PGJQ_BUILD, WORK and PGDIR, and defines pg (psql on the cluster).

bench_start() {
    local name=$1
    ensure_packages "${BASE_PACKAGES[@]}" postgresql-contrib
    if [ "${PGJQ_BENCH_SKIP_INSTALL:-0}" = 1 ]; then
        PGJQ_BUILD="the pgjq already installed (PGJQ_BENCH_SKIP_INSTALL=1)"
    else
        build_install
        PGJQ_BUILD="built and installed from this tree"
    fi
    PSQL=$PG_BIN/psql
    PGBENCH=$PG_BIN/pgbench
    GITREV=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$TOP" diff --quiet HEAD -- src sql 2>/dev/null || GITREV="$GITREV, with uncommitted changes in src/ or sql/"

    WORK=$(mktemp -d "/tmp/pgjq-$name.XXXXXX")
    chmod 755 "$WORK"
    PGDIR=$WORK/pg
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    log "starting a throwaway cluster in $PGDIR (port $PORT)"
    cluster_start "$PGDIR" "$PORT"
    { cat "$TOP/bench/cluster.conf"; echo "pgjq.database = 'bench'"; } >>"$PGDIR/data/postgresql.conf"
    pg -d postgres -c "CREATE DATABASE bench"
    as_pg pg_ctl -D "$PGDIR/data" -l "$PGDIR/server.log" -w restart >/dev/null
    pg -d bench -c "SET client_min_messages = warning; CREATE EXTENSION pgjq"
}

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    cluster_stop "$PGDIR"
    rm -rf "$WORK"
    exit "$rc"
}

pg() {
    "$PSQL" -h "$PGDIR" -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"
}
