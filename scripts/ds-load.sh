#!/usr/bin/env bash
# End-to-end load of the Delivery Service on loopback: `hsmls-ds serve`
# (release build, TLS, basic credentials) on SQLite and on PostgreSQL,
# driven by the open-loop load generator (`hsmls-ds load`): a blind group
# of real DS clients, messages sent at their intended times, latencies
# from those times (hdrhistogram), every member pushed to over wss.
#
#   bash scripts/bench.sh --ds-load                 # the whole matrix
#   DS_LOAD_STORES=sqlite DS_LOAD_RUNS="10:5000 1000:100" bash scripts/bench.sh --ds-load
#
# DS_LOAD_RUNS is a list of MEMBERS:RATE (messages/s), by default
# DS_LOAD_RUNS_SQLITE or DS_LOAD_RUNS_POSTGRES; each run sends for
# DS_LOAD_SECONDS seconds (default 5) from DS_LOAD_SENDERS members (on
# their push connections, or with DS_LOAD_SEND_OVER=http one POST each) and
# waits up to 20 s for the last deliveries (an overloaded run takes
# longer: its senders wait for their answers).
# Prints one report line per run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$1"
STORES="${DS_LOAD_STORES:-sqlite postgres}"
RUNS_SQLITE="${DS_LOAD_RUNS:-${DS_LOAD_RUNS_SQLITE:-10:2000 10:5000 10:10000 10:20000 10:25000 1000:100 1000:200 1000:300}}"
RUNS_POSTGRES="${DS_LOAD_RUNS:-${DS_LOAD_RUNS_POSTGRES:-10:250 10:500 10:1000 1000:25 1000:50 1000:100}}"
SECONDS_PER_RUN="${DS_LOAD_SECONDS:-5}"
SENDERS="${DS_LOAD_SENDERS:-8}"
# ws: messages sent on the senders' push connections; http: one POST each.
SEND_OVER="${DS_LOAD_SEND_OVER:-ws}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/hsmls-ds-load.XXXXXX")"
SERVER=""
PGDB=""
cleanup() {
    [[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    if [[ -n "$PGDB" ]]; then
        PGPASSWORD=postgres psql -X -q -h 127.0.0.1 -p "${HSMLS_PG_PORT:-55432}" -U postgres \
            -c "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" postgres >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A root and a server certificate for 127.0.0.1 (P-256).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=hsmls-ds-load-root -keyout "$WORK/root.key" -out "$WORK/root.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    > "$WORK/ext"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/root.pem" -CAkey "$WORK/root.key" \
    -CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/leaf.pem" 2>/dev/null
cat "$WORK/leaf.pem" "$WORK/root.pem" > "$WORK/tls.pem"

start_server() { # store-args...
    local out="$WORK/server.out"
    "$BIN" serve --listen 127.0.0.1:0 "$@" --key-file "$WORK/ds.key" \
        --tls-cert "$WORK/tls.pem" --tls-key "$WORK/tls.key" --basic-credentials \
        --rate 1000000 --ds-identity localhost >"$out" 2>"$WORK/server.err" &
    SERVER=$!
    for _ in $(seq 100); do
        if grep -q '^listening on ' "$out"; then
            ADDR="$(sed -n 's/^listening on //p' "$out")"
            return
        fi
        sleep 0.1
    done
    cat "$WORK/server.err" >&2
    exit 1
}

# utime + stime of a process, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

stop_server() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=""
}

echo "== $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for store in $STORES; do
    case "$store" in
        sqlite)
            RUNS="$RUNS_SQLITE"
            rm -f "$WORK"/ds.sqlite*
            start_server --sqlite "$WORK/ds.sqlite"
            ;;
        postgres)
            RUNS="$RUNS_POSTGRES"
            eval "$(bash scripts/setup-postgres.sh --env)"
            PGDB="hsmls_ds_load_$$"
            PGPASSWORD=postgres psql -X -q -h 127.0.0.1 -p "${HSMLS_PG_PORT:-55432}" -U postgres \
                -c "CREATE DATABASE $PGDB OWNER hsmls" postgres >/dev/null
            start_server --postgres "${HSMLS_TEST_PG_URL%/*}/$PGDB"
            ;;
        *) echo "unknown store $store" >&2; exit 1 ;;
    esac
    for run in $RUNS; do
        members="${run%%:*}"
        rate="${run##*:}"
        printf '%-8s members %-5s rate %-6s ' "$store" "$members" "$rate"
        before="$(cpu_ticks "$SERVER")"
        load_start="$(date +%s%N)"
        "$BIN" load --url "https://$ADDR" --tls-roots "$WORK/root.pem" \
            --members "$members" --rate "$rate" --duration "$SECONDS_PER_RUN" \
            --senders "$SENDERS" --send-over "$SEND_OVER" --drain 20 &
        load_pid=$!
        load_ticks=0
        while kill -0 "$load_pid" 2>/dev/null; do
            load_ticks="$(cpu_ticks "$load_pid" 2>/dev/null || echo "$load_ticks")"
            sleep 0.2
        done
        wait "$load_pid"
        # The server's CPU time over the run (set-up included): a figure
        # that other processes on the machine do not inflate, unlike the
        # rates and latencies.
        after="$(cpu_ticks "$SERVER")"
        tck="$(getconf CLK_TCK)"
        echo "         server CPU $(( (after - before) * 1000 / tck )) ms," \
            "load generator CPU $(( load_ticks * 1000 / tck )) ms (to 0.2 s before its end)," \
            "wall $(( ($(date +%s%N) - load_start) / 1000000 )) ms"
    done
    stop_server
done
