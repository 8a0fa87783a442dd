# Shared by make test and make demo (sourced, not run): install what is
# missing, build and install pgjq, start and stop throwaway clusters.
#
# Everything that needs root (apt-get, make install) runs as the invoking
# user, who must be root or have sudo; everything that starts PostgreSQL
# runs as the postgres user, since initdb refuses to run as root.

set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
[ -x "$PG_CONFIG" ] || PG_CONFIG=/usr/bin/pg_config
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

log() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# runs a command as the postgres user (or as yourself when not root)
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- env PATH="$PG_BIN:$PATH" "$@"
    else
        env PATH="$PG_BIN:$PATH" "$@"
    fi
}

# ensure_packages PKG... installs the Debian packages that are missing
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

BASE_PACKAGES=(make gcc libc6-dev libkrb5-dev postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR
               postgresql-client-$PG_MAJOR)

# build_install compiles pgjq with warnings as errors and installs it
build_install() {
    log "building and installing pgjq"
    make -C "$TOP" -s PG_CONFIG="$PG_CONFIG" WERROR=-Werror
    as_root make -C "$TOP" -s PG_CONFIG="$PG_CONFIG" WERROR=-Werror install
}

# cluster_start DIR PORT: a throwaway cluster in DIR, preloading pgjq,
# listening on a Unix socket in DIR only
cluster_start() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_pg initdb -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1
    cat "$TOP/test/pgjq.conf" >>"$dir/data/postgresql.conf"
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
CONF
    as_pg pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

cluster_stop() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] &&
        as_pg pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
