#!/usr/bin/env bash
# Gives this machine a private PostgreSQL server for the hsmls tests.
#
#  - installs Debian's postgresql package when initdb is missing;
#  - creates a cluster in the repository (.pg/data, git-ignored), owned by
#    the postgres user (initdb refuses to run as root);
#  - starts it listening on 127.0.0.1 only, on port $HSMLS_PG_PORT (55432
#    unless set), with its socket in .pg/;
#  - creates the role and database "hsmls" (password "hsmls", a throwaway
#    test credential) that the tests use; each test then creates its own
#    schema and drops it.
#
# Idempotent: a second run finds the cluster running and changes nothing.
#   bash scripts/setup-postgres.sh          set up and start
#   bash scripts/setup-postgres.sh --env    same, then print HSMLS_TEST_PG_URL=…
#   bash scripts/setup-postgres.sh --stop   stop the server
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_DIR="$ROOT/.pg"
# The server runs as the postgres user, which must be able to reach the
# data directory: when the repository lies under a folder it cannot enter
# (e.g. /root), the cluster goes to a folder of the temporary directory
# named after the repository instead.
if [[ "$(id -u)" -eq 0 ]] && id postgres >/dev/null 2>&1 \
    && ! runuser -u postgres -- test -x "$ROOT"; then
    PG_DIR="${TMPDIR:-/tmp}/hsmls-pg-$(echo "$ROOT" | sha256sum | cut -c1-12)"
fi
DATA="$PG_DIR/data"
PORT="${HSMLS_PG_PORT:-55432}"
URL="postgres://hsmls:hsmls@127.0.0.1:$PORT/hsmls"

log() { echo "setup-postgres: $*" >&2; }

as_postgres() {
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        sudo -u postgres "$@"
    fi
}

find_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/$1" ]] && { echo "$dir/$1"; return; }
    done
    command -v "$1" || true
}

psql_admin() {
    PGPASSWORD=postgres "$PSQL" -X -q -t -A -h 127.0.0.1 -p "$PORT" -U postgres "$@"
}

if [[ "${1:-}" == "--stop" ]]; then
    PG_CTL="$(find_bin pg_ctl)"
    if [[ -n "$PG_CTL" && -f "$DATA/postmaster.pid" ]]; then
        as_postgres "$PG_CTL" -D "$DATA" -m fast -w stop >&2
    fi
    exit 0
fi

# 1. The package.
if [[ -z "$(find_bin initdb)" ]]; then
    log "installing postgresql"
    SUDO=()
    [[ "$(id -u)" -ne 0 ]] && SUDO=(sudo)
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
fi
INITDB="$(find_bin initdb)"
PG_CTL="$(find_bin pg_ctl)"
PSQL="$(find_bin psql)"

# 2. The cluster, owned by postgres.
mkdir -p "$PG_DIR"
chown postgres: "$PG_DIR"
chmod 700 "$PG_DIR"
if [[ ! -f "$DATA/PG_VERSION" ]]; then
    log "initdb $DATA"
    rm -rf "$DATA"
    PWFILE="$PG_DIR/pwfile"
    echo postgres >"$PWFILE"
    chown postgres: "$PWFILE"
    as_postgres "$INITDB" -D "$DATA" -A scram-sha-256 --username=postgres \
        --pwfile="$PWFILE" -E UTF8 --locale=C >&2
    rm -f "$PWFILE"
fi

# 3. Running on 127.0.0.1:$PORT. A server of another checkout of hsmls
# already answering there (same script, same test credentials) is used
# as it is.
if ! as_postgres "$PG_CTL" -D "$DATA" status >/dev/null 2>&1 \
    && ! psql_admin -d postgres -c "SELECT 1" >/dev/null 2>&1; then
    log "starting on 127.0.0.1:$PORT"
    as_postgres "$PG_CTL" -D "$DATA" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PG_DIR -c fsync=on" start >&2
fi

# 4. The test role and database.
if [[ "$(psql_admin -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'hsmls'")" != 1 ]]; then
    log "creating role and database hsmls"
    psql_admin -d postgres -c "CREATE ROLE hsmls LOGIN PASSWORD 'hsmls'" >&2
fi
if [[ "$(psql_admin -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'hsmls'")" != 1 ]]; then
    psql_admin -d postgres -c "CREATE DATABASE hsmls OWNER hsmls" >&2
fi

if [[ "${1:-}" == "--env" ]]; then
    echo "HSMLS_TEST_PG_URL=$URL"
fi
