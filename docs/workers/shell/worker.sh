#!/usr/bin/env bash
# pgjq example worker in bash + psql: scores ad copy.
#
#   PGHOST=... PGPORT=... PGUSER=... PGDATABASE=... \
#       bash worker.sh scoring --batch 10 --lease-seconds 60
#
# Connects with the standard libpq environment variables, leases jobs with
# jq_dequeue, scores the payload's "copy" string (rules in ../README.md),
# extends the leases while the (simulated) work runs long, acks with the
# score, and fails malformed payloads permanently.  Exits on SIGTERM/SIGINT,
# or after --exit-when-idle seconds without a job.
#
# It POLLS: every psql call here is a new session, and a session that
# LISTENs only hears a notification when it runs its next command, so a
# one-shot psql cannot wait for jq_<queue>.  When the queue is empty it
# sleeps --poll-seconds (default 1) and dequeues again.  Use the Python or
# Node worker where pickup latency matters.
set -uo pipefail

LANG_NAME=shell

# --- the scoring rules: keep them the same in all three workers ------------

BANNED=(guaranteed miracle cure winner)
CALLS_TO_ACTION=(buy shop order book)

# score_copy COPY: sets SCORE and REASONS (a JSON array)
score_copy() {
    local copy=$1 length words w cta= score=50
    local -a reasons=()
    length=${#copy}     # characters, under the UTF-8 locale set below
    # words: runs of [a-z0-9] after lowercasing ASCII letters (tr works on
    # bytes, so the bytes of other characters separate words)
    words=" $(printf '%s' "$copy" | LC_ALL=C tr 'A-Z' 'a-z' | LC_ALL=C tr -cs 'a-z0-9' ' ') "
    if [ "$length" -lt 20 ]; then
        score=$((score - 20)); reasons+=(too_short)
    elif [ "$length" -gt 150 ]; then
        score=$((score - 10)); reasons+=(too_long)
    else
        score=$((score + 10)); reasons+=(good_length)
    fi
    for w in "${BANNED[@]}"; do
        if [[ $words == *" $w "* ]]; then
            score=$((score - 25)); reasons+=("banned:$w")
        fi
    done
    for w in "${CALLS_TO_ACTION[@]}"; do
        if [[ $words == *" $w "* ]]; then cta=$w; break; fi
    done
    if [ -n "$cta" ]; then
        score=$((score + 20)); reasons+=("call_to_action:$cta")
    else
        score=$((score - 10)); reasons+=(no_call_to_action)
    fi
    [ "$score" -lt 0 ] && score=0
    [ "$score" -gt 100 ] && score=100
    SCORE=$score
    # the reasons are plain [a-z_:] words: no JSON escaping needed
    REASONS="[$(printf '"%s",' "${reasons[@]}")"
    REASONS="${REASONS%,}]"
}

# --- the worker -------------------------------------------------------------

export LC_ALL=C.UTF-8 PGCLIENTENCODING=UTF8 PGAPPNAME=pgjq-worker-shell

log() { printf '[%s] %s\n' "$LANG_NAME" "$*" >&2; }

usage() {
    log "$1"
    echo "usage: worker.sh QUEUE [--batch N] [--lease-seconds N] [--work-ms N]" \
         "[--poll-seconds S] [--exit-when-idle S]" >&2
    exit 2
}

QUEUE=${JQ_QUEUE:-}
BATCH=${JQ_BATCH:-10}
LEASE=${JQ_LEASE_SECONDS:-60}
WORK_MS=${JQ_WORK_MS:-0}
POLL=${JQ_POLL_SECONDS:-1}
EXIT_WHEN_IDLE=${JQ_EXIT_WHEN_IDLE:-0}
while [ $# -gt 0 ]; do
    case $1 in
        --batch) BATCH=${2-}; shift ;;
        --lease-seconds) LEASE=${2-}; shift ;;
        --work-ms) WORK_MS=${2-}; shift ;;
        --poll-seconds) POLL=${2-}; shift ;;
        --exit-when-idle) EXIT_WHEN_IDLE=${2-}; shift ;;
        --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
        -h|--help) usage "pgjq example worker: scores ad copy" ;;
        -*) usage "unknown option $1" ;;
        *) QUEUE=$1 ;;
    esac
    shift
done
[[ $QUEUE =~ ^[a-z][a-z0-9_]{0,47}$ ]] ||
    usage "a queue name is required: a lowercase letter, then [a-z0-9_], at most 48"
for v in BATCH LEASE WORK_MS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || usage "${v,,} must be a whole number"
done
[ "$BATCH" -ge 1 ] && [ "$LEASE" -ge 1 ] || usage "--batch and --lease-seconds must be positive"
[[ $POLL =~ ^[0-9]+(\.[0-9]+)?$ && $EXIT_WHEN_IDLE =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
    usage "--poll-seconds and --exit-when-idle take seconds, e.g. 1 or 0.5"

# sql [VAR=VALUE | -psql-option]... <<SQL: one psql session.  Variables are
# interpolated by psql as :name (a literal as is) or :'name' (quoted), so
# values are never pasted into SQL by the shell.  On failure the error text
# is logged, and left in ERR_FILE and LAST_ERROR (when not in a subshell).
ERR_FILE=$(mktemp "${TMPDIR:-/tmp}/pgjq-worker.XXXXXX")
BATCH_FILE=$(mktemp "${TMPDIR:-/tmp}/pgjq-worker.XXXXXX")
trap 'rm -f "$ERR_FILE" "$BATCH_FILE"' EXIT
LAST_ERROR=
sql() {
    local -a args=()
    while [ $# -gt 0 ]; do
        case $1 in -*) args+=("$1") ;; *) args+=(-v "$1") ;; esac
        shift
    done
    if psql -X -q -A -t -v ON_ERROR_STOP=1 "${args[@]}" 2>"$ERR_FILE"; then
        return 0
    fi
    LAST_ERROR=$(head -c 2000 "$ERR_FILE")
    [ -n "$LAST_ERROR" ] || LAST_ERROR="psql failed"
    log "$LAST_ERROR"
    return 1
}

now_ms() { local t=${EPOCHREALTIME/./}; echo $((10#$t / 1000)); }
ms_of() { awk -v s="$1" 'BEGIN { printf "%d", s * 1000 }'; }   # seconds -> ms

STOPPING=0
trap 'log "got a signal, stopping after the current job"; STOPPING=1' TERM INT

ACKED=0 FAILED=0 EXTENDED=0 LOST=0

# fail ID TOKEN ERROR [PERMANENT [RETRY_IN]]
fail() {
    local state
    state=$(sql id="$1" token="$2" err="$3" permanent="${4:-false}" retry="${5:-}" <<'SQL'
SELECT jq.jq_fail(:id, :token, :'err', retry_in => NULLIF(:'retry', '')::interval,
               permanent => :permanent)
SQL
    ) || return 1
    FAILED=$((FAILED + 1))
    log "job $1 failed ($3): now ${state:-not ours any more}"
}

# the leases of the current batch: job id -> token, and when last renewed
declare -A HELD_TOKEN=() HELD_AT=()

extend_if_due() {
    local id expires started
    for id in "${!HELD_TOKEN[@]}"; do
        [ $(( $(now_ms) - HELD_AT[$id] )) -gt $((LEASE * 1000 / 3)) ] || continue
        started=$(now_ms)
        expires=$(sql id="$id" token="${HELD_TOKEN[$id]}" lease="$LEASE" <<'SQL'
SELECT jq.jq_extend(:id, :token, :lease)
SQL
        ) || return 1
        if [ -z "$expires" ]; then
            LOST=$((LOST + 1))
            log "job $id: lease lost or job cancelled, dropping it"
            unset "HELD_TOKEN[$id]" "HELD_AT[$id]"
        else
            EXTENDED=$((EXTENDED + 1))
            HELD_AT[$id]=$started
            log "job $id: lease extended to $expires"
        fi
    done
}

# simulated work: sleeps WORK_MS in slices, extending the leases as it goes
simulate_work() {
    local end=$(( $(now_ms) + WORK_MS )) left
    while :; do
        extend_if_due || return 1
        left=$(( end - $(now_ms) ))
        [ "$left" -gt 0 ] || break
        [ "$left" -gt 50 ] && left=50
        sleep "$(printf '0.%03d' "$left")"
    done
}

# process_job ID TOKEN ATTEMPT COPY_TYPE COPY
process_job() {
    local id=$1 token=$2 attempt=$3 type=$4 copy=$5 ok
    if [ "$type" != string ]; then
        fail "$id" "$token" 'payload has no "copy" string' true
        return
    fi
    simulate_work || return 1
    [ -n "${HELD_TOKEN[$id]+x}" ] || return 0     # its lease was lost
    score_copy "$copy"
    ok=$(sql id="$id" token="$token" \
            result="{\"score\": $SCORE, \"reasons\": $REASONS, \"worker\": \"$LANG_NAME\"}" <<'SQL'
SELECT jq.jq_ack(:id, :token, :'result'::jsonb)
SQL
    ) || return 1
    if [ "$ok" = t ]; then
        ACKED=$((ACKED + 1))
        log "job $id (attempt $attempt) scored $SCORE"
    else
        LOST=$((LOST + 1))
        log "job $id: ack refused, the lease was lost; result dropped"
    fi
}

# work_batch FILE: the jobs, as NUL-separated fields (psql -z -0)
work_batch() {
    local file=$1 leased_at=$2 id token attempt type copy err
    local -a ids=() tokens=() attempts=() types=() copies=()
    HELD_TOKEN=() HELD_AT=()
    while IFS= read -r -d '' id && IFS= read -r -d '' token &&
          IFS= read -r -d '' attempt && IFS= read -r -d '' type &&
          IFS= read -r -d '' copy; do
        ids+=("$id") tokens+=("$token") attempts+=("$attempt")
        types+=("$type") copies+=("$copy")
        HELD_TOKEN[$id]=$token
        HELD_AT[$id]=$leased_at
    done <"$file"
    local i
    for i in "${!ids[@]}"; do
        id=${ids[$i]} token=${tokens[$i]}
        [ -n "${HELD_TOKEN[$id]+x}" ] || continue
        if [ "$STOPPING" -eq 1 ]; then
            # give back what we have not started: ready again at once
            for id in "${!HELD_TOKEN[@]}"; do
                fail "$id" "${HELD_TOKEN[$id]}" 'worker shutting down' false 0
            done
            HELD_TOKEN=() HELD_AT=()
            return
        fi
        : >"$ERR_FILE"
        if ! process_job "$id" "$token" "${attempts[$i]}" "${types[$i]}" "${copies[$i]}"; then
            # anything unexpected: a retryable failure with the error text
            # (sql ran in a $(...) subshell: its error is in ERR_FILE)
            err=$(head -c 2000 "$ERR_FILE")
            fail "$id" "$token" "worker.sh: ${err:-unknown error}" ||
                { log "cannot reach the database, exiting"; exit 1; }
        fi
        unset "HELD_TOKEN[$id]" "HELD_AT[$id]"
    done
}

log "polling queue $QUEUE every $POLL s (batch $BATCH, lease $LEASE s)"
idle_since=$(now_ms)
while [ "$STOPPING" -eq 0 ]; do
    leased_at=$(now_ms)
    if ! sql queue="$QUEUE" n="$BATCH" lease="$LEASE" -z -0 >"$BATCH_FILE" <<'SQL'
SELECT job_id, lease_token, attempt, coalesce(jsonb_typeof(payload -> 'copy'), 'none'),
       coalesce(payload ->> 'copy', '')
  FROM jq.jq_dequeue(:'queue', :n, :lease)
SQL
    then
        log "jq_dequeue failed, exiting"
        exit 1
    fi
    if [ -s "$BATCH_FILE" ]; then
        work_batch "$BATCH_FILE" "$leased_at"
        idle_since=$(now_ms)
        continue
    fi
    idle=$(( $(now_ms) - idle_since ))
    wait_ms=$(ms_of "$POLL")
    if [ "$(ms_of "$EXIT_WHEN_IDLE")" -gt 0 ]; then
        left=$(( $(ms_of "$EXIT_WHEN_IDLE") - idle ))
        if [ "$left" -le 0 ]; then
            log "idle for $((idle / 1000)) s, exiting"
            break
        fi
        [ "$left" -lt "$wait_ms" ] && wait_ms=$left
    fi
    # sleep in the background, so that a signal ends the wait at once
    sleep "$((wait_ms / 1000)).$(printf '%03d' $((wait_ms % 1000)))" </dev/null >/dev/null 2>&1 &
    sleep_pid=$!
    wait "$sleep_pid" || kill "$sleep_pid" 2>/dev/null
done
log "done: $ACKED acked, $FAILED failed, $EXTENDED lease extensions, $LOST leases lost"
