#!/usr/bin/env bash
# make test: every test suite of pgjq, from a fresh Debian machine.
#
#  1. installs the Debian packages it needs (PostgreSQL 15 server and dev
#     files, pgTAP, the Perl modules of the TAP tests);
#  2. builds pgjq with -Werror and installs it;
#  3. as the postgres user, in a scratch copy of the tree, runs
#     pg_regress (sql/, expected/), the isolation specs (test/specs) and the
#     TAP tests (test/t), each on throwaway clusters that preload pgjq;
#  4. runs the pgTAP files (test/pgtap) with pg_prove on a throwaway cluster;
#  5. removes everything it started and prints "N passed, N failed".
#
# Nothing persists: no cluster is left running and the installed system
# cluster (if any) is not touched.
source "$(dirname "$0")/common.sh"

ensure_packages "${BASE_PACKAGES[@]}" postgresql-$PG_MAJOR-pgtap \
    libtap-parser-sourcehandler-pgtap-perl libipc-run-perl perl \
    prometheus-postgres-exporter python3-psycopg nodejs pgbouncer postgresql-$PG_MAJOR-plproxy
# the example workers' runtimes (above, and npm: NodeSource's nodejs bundles
# npm and conflicts with Debian's npm package, so install it only if missing)
command -v npm >/dev/null 2>&1 || ensure_packages npm
build_install

WORK=$(mktemp -d /tmp/pgjq-test.XXXXXX)
cleanup() {
    cluster_stop "$WORK/pgtap"
    # keep logs of a failed run for a look, unless on CI
    if [ "${failed:-1}" -eq 0 ] || [ -n "${CI:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# a scratch copy that the postgres user owns, so it can write results
tar -C "$TOP" --exclude=.git --exclude=results --exclude='tmp_check*' -cf - . |
    tar -C "$WORK" -xf - --one-top-level=tree
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORK"
chmod 755 "$WORK"

passed=0
failed=0
declare -a failures=()

# count_results SUITE LOG: pg_regress style lines "test x ... ok|FAILED"
count_regress() {
    local suite=$1 logfile=$2 ok bad
    ok=$(grep -Ec '^(ok|test) .*\.\.\. ok|^ok [0-9]+ ' "$logfile" || true)
    bad=$(grep -Ec '\.\.\. FAILED|^not ok [0-9]+ ' "$logfile" || true)
    passed=$((passed + ok)); failed=$((failed + bad))
    [ "$bad" -eq 0 ] || failures+=("$suite")
}

run_suite() {
    local suite=$1; shift
    log "$suite"
    set +e
    as_pg "$@" 2>&1 | tee "$WORK/$suite.log"
    local rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}

cd "$WORK/tree"
MAKE_ARGS=(PG_CONFIG="$PG_CONFIG" -s)

if ! run_suite regress make "${MAKE_ARGS[@]}" installcheck \
        ISOLATION= TAP_TESTS=; then
    [ -f regression.diffs ] && cat regression.diffs
    failures+=("regress (make)")
fi
count_regress regress "$WORK/regress.log"

if ! run_suite isolation make "${MAKE_ARGS[@]}" installcheck REGRESS= TAP_TESTS=; then
    [ -f output_iso/regression.diffs ] && cat output_iso/regression.diffs
    failures+=("isolation (make)")
fi
count_regress isolation "$WORK/isolation.log"

# the Node example worker's dependencies, for test/t/010_worker_examples.pl
log "npm ci in docs/workers/node"
if (cd docs/workers/node && npm ci --no-audit --no-fund); then
    [ "$(id -u)" -eq 0 ] && chown -R postgres: docs/workers/node
else
    failures+=("npm ci")
fi

if ! run_suite tap make "${MAKE_ARGS[@]}" installcheck REGRESS= ISOLATION= \
        PROVE_FLAGS=--verbose; then
    for f in tmp_check/log/regress_log_*; do
        [ -f "$f" ] && { echo "--- $f"; tail -50 "$f"; }
    done
    failures+=("tap (prove)")
fi
# prove --verbose prints each test file's "ok N"/"not ok N" lines
count_regress tap "$WORK/tap.log"

log "pgTAP"
cluster_start "$WORK/pgtap" 5491
set +e
as_pg pg_prove -h "$WORK/pgtap" -p 5491 -U postgres -d postgres --verbose \
    "$WORK"/tree/test/pgtap/*.sql 2>&1 | tee "$WORK/pgtap.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || failures+=("pgtap (pg_prove)")
count_regress pgtap "$WORK/pgtap.log"

echo
if [ ${#failures[@]} -gt 0 ]; then
    echo "FAILED suites: ${failures[*]}"
    [ "$failed" -gt 0 ] || failed=1
fi
echo "pgjq: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
