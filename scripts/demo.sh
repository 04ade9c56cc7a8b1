#!/usr/bin/env bash
# The hsmls demo: RFC 9750's scenario, every party a separate process on
# loopback, driven through the `hsmls` command line.
#
#  - an Authentication Service (root, issuing and log keys in its own
#    SoftHSM token; SQLite) and a Delivery Service (SQLite), both over TLS;
#  - alice, bob and charlie, each with their OWN SoftHSM token (as each
#    device has its own HSM or TPM), enrol with one-time tokens and
#    publish KeyPackages;
#  - alice creates a group and adds bob and charlie; they exchange
#    messages; bob updates his keys; bob is killed and restarted and
#    carries on; charlie is offline for two commits and catches up; alice
#    removes charlie, who can no longer read what follows; the operator
#    revokes bob's certificate and alice removes him.
#
# After every commit the members' safety numbers (epoch authenticators)
# are compared. It ends with PASS (exit 0) or FAIL (exit 1), and leaves no
# process, token or file behind (the demo folder is deleted on exit).
#
#   bash scripts/demo.sh              SQLite
#   bash scripts/demo.sh --postgres   the AS and the DS on PostgreSQL
#                                     (scripts/setup-postgres.sh)
#   bash scripts/demo.sh --keep       keep the demo folder (for a look)
#   bash scripts/demo.sh --suite 0x0001   every client on that MLS cipher
#                                     suite (0x0001, 0x0002 default, 0x0003,
#                                     0x0005, 0x0007)
#   HSMLS_BIN=/path/to/hsmls          use that binary instead of building
#
# The old single-process demos are `hsmls demo` (custody-demo, group-demo).
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

POSTGRES=0
KEEP=0
SUITE=0x0002
USAGE="usage: demo.sh [--postgres] [--keep] [--suite 0x0001|0x0002|0x0003|0x0005|0x0007]"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --postgres) POSTGRES=1 ;;
        --keep) KEEP=1 ;;
        --suite) SUITE="${2:-}"; shift ;;
        --suite=*) SUITE="${1#--suite=}" ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
case "$SUITE" in
    0x0001|0x0003) HPKE_KEYS="token-else-software" ;;
    0x0002|0x0005|0x0007) HPKE_KEYS="token" ;;
    *) echo "$USAGE" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- setup
if [[ -n "${HSMLS_BIN:-}" ]]; then
    BIN="$HSMLS_BIN"
else
    echo "building hsmls (cargo build -p hsmls-cli) ..." >&2
    cargo build -q -p hsmls-cli
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/hsmls"
fi
[[ -x "$BIN" ]] || { echo "demo: no hsmls binary at $BIN" >&2; exit 1; }

START=$SECONDS
DEMO="$(mktemp -d "${TMPDIR:-/tmp}/hsmls-demo.XXXXXX")"
PIDS=()
PG_DBS=()
CHECKS=0

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each a moment to stop, then make sure.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for db in "${PG_DBS[@]}"; do
        pg_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    if ps -eo args 2>/dev/null | grep -F -- "$DEMO" | grep -qv grep; then
        echo "demo: WARNING: processes of $DEMO are still running" >&2
        status=1
    fi
    if [[ "$KEEP" == 1 ]]; then
        echo "demo folder kept: $DEMO" >&2
    else
        rm -rf "$DEMO"
        echo "cleaned up: no hsmls process left; the demo folder (tokens, keys, state) deleted"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
# Failures are counted in a file: some checks run in subshells.
fail() { say "   FAIL: $*" >&2; echo "$*" >>"$DEMO/failures"; }
pass() { CHECKS=$((CHECKS + 1)); say "   ok: $*"; }
# A command that fails unexpectedly ends the demo, saying which.
trap 'say "   FAIL: line $LINENO: \"$BASH_COMMAND\" exited $?"' ERR
check() { # check DESCRIPTION COMMAND...
    local what="$1"; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# A free TCP port on loopback (nothing answers on it).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# Waits up to $2 seconds for the file $1 to contain the text $3.
wait_for() {
    local file="$1" secs="$2" text="$3" i
    for i in $(seq $((secs * 10))); do
        grep -qF -- "$text" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

pg_admin() {
    local psql
    psql="$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | head -1)"
    [[ -n "$psql" ]] || psql="$(command -v psql)"
    PGPASSWORD=postgres "$psql" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

# A database of its own (dropped on exit), owned by the test role; its
# URL in PG_URL (not echoed: PG_DBS must grow in this shell).
pg_database() {
    local name="hsmls_demo_$1_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    pg_admin -c "CREATE DATABASE $name OWNER hsmls" >/dev/null
    PG_DBS+=("$name")
    PG_URL="postgres://hsmls:hsmls@127.0.0.1:$PG_PORT/$name"
}

# The operator's commands (the AS's token).
operator() {
    SOFTHSM2_CONF="$DEMO/as/hsm/softhsm2.conf" "$BIN" as --as-config "$DEMO/as/as.toml" "$@"
}

# A user's command: the device's own token and client configuration.
user() {
    local who="$1"; shift
    SOFTHSM2_CONF="$DEMO/$who/hsm/softhsm2.conf" "$BIN" --config "$DEMO/$who/client.toml" "$@"
}
# The same in the background; BG_PID is the hsmls process itself.
user_bg() {
    local who="$1"; shift
    SOFTHSM2_CONF="$DEMO/$who/hsm/softhsm2.conf" "$BIN" --config "$DEMO/$who/client.toml" "$@" &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

identity() { echo "im:$1@hsmls.demo"; }

say "hsmls demo: RFC 9750's architecture as separate processes on 127.0.0.1"
say "demo folder: $DEMO (deleted at the end)"

# ---------------------------------------------------------------- the AS
step "the Authentication Service: its root, issuing and log keys in its own SoftHSM token"
bash scripts/setup-hsm.sh --quiet --dir "$DEMO/as/hsm" --token demo-as
AS_PORT=$(free_port)
AS_DB=sqlite
DS_DB="sqlite:$DEMO/ds/ds.db"
if [[ "$POSTGRES" == 1 ]]; then
    eval "$(bash scripts/setup-postgres.sh --env)"
    PG_PORT="${HSMLS_TEST_PG_URL##*:}"; PG_PORT="${PG_PORT%%/*}"
    pg_database as; AS_DB="$PG_URL"
    pg_database ds; DS_DB="$PG_URL"
    say "   storage: PostgreSQL on 127.0.0.1:$PG_PORT (a database each for the AS and the DS)"
fi
cat >"$DEMO/as/as.toml" <<EOF
pkcs11_config = "hsm/pkcs11.toml"
listen = "127.0.0.1:$AS_PORT"
public_url = "https://127.0.0.1:$AS_PORT"
tls_names = ["127.0.0.1"]
state_dir = "state"
database = "$AS_DB"
leaf_lifetime_days = 7
EOF
operator init >"$DEMO/as/init.log"
say "   $(grep '^root key' "$DEMO/as/init.log")"
mkdir -p "$DEMO/ds"
operator tls issue 127.0.0.1 --out "$DEMO/ds/tls" >/dev/null
say "   the DS's TLS certificate issued by the AS's CA (clients trust the AS root for both)"
SOFTHSM2_CONF="$DEMO/as/hsm/softhsm2.conf" "$BIN" as --as-config "$DEMO/as/as.toml" serve \
    2>"$DEMO/as/serve.log" &
PIDS+=($!)
wait_for "$DEMO/as/serve.log" 30 "listening" || { cat "$DEMO/as/serve.log"; say "the AS did not start"; exit 1; }
say "   AS listening on https://127.0.0.1:$AS_PORT ($( [[ $POSTGRES == 1 ]] && echo PostgreSQL || echo SQLite))"

# ---------------------------------------------------------------- the DS
step "the Delivery Service (TLS, X.509 credentials checked against the AS root and CRL)"
DS_PORT=$(free_port)
cat >"$DEMO/ds/ds.toml" <<EOF
listen = "127.0.0.1:$DS_PORT"
tls_cert = "tls.pem"
tls_key = "tls.key"
key_file = "ds.key"
database = "$DS_DB"
ds_identity = "127.0.0.1"

[credentials]
as_root = "../as/state/root.pem"
as_url = "https://127.0.0.1:$AS_PORT"
EOF
start_ds() {
    "$BIN" ds --ds-config "$DEMO/ds/ds.toml" serve >"$DEMO/ds/serve.log" 2>&1 &
    DS_PID=$!
    PIDS+=("$DS_PID")
    wait_for "$DEMO/ds/serve.log" 30 "listening on" || { cat "$DEMO/ds/serve.log"; say "the DS did not start"; exit 1; }
}
start_ds
say "   DS listening on https://127.0.0.1:$DS_PORT"

# ---------------------------------------------------------------- clients
step "alice, bob and charlie: a SoftHSM token each, enrolment with one-time tokens"
say "   cipher suite $SUITE"
if [[ "$HPKE_KEYS" != token ]]; then
    say "   HPKE keys (X25519) in software, sealed under each token's AES key: SoftHSM has no"
    say "   X25519 key agreement (no CKM_EC_MONTGOMERY_KEY_PAIR_GEN), so pkcs11.toml says"
    say "   hpke_keys = \"token-else-software\"; the Ed25519 signature keys stay in the token"
fi
for who in alice bob charlie; do
    bash scripts/setup-hsm.sh --quiet --dir "$DEMO/$who/hsm" --token "demo-$who"
    if [[ "$HPKE_KEYS" != token ]]; then
        echo "hpke_keys = \"$HPKE_KEYS\"" >>"$DEMO/$who/hsm/pkcs11.toml"
    fi
    cat >"$DEMO/$who/client.toml" <<EOF
identity = "$(identity "$who")"
state_path = "state.sqlite"
cipher_suite = $SUITE

[custody]
kind = "pkcs11"
config = "hsm/pkcs11.toml"

[authentication_service]
url = "https://127.0.0.1:$AS_PORT"
root_certificate = "../as/state/root.pem"
log_public_key = "../as/state/log.pub"

[delivery_service]
url = "https://127.0.0.1:$DS_PORT"
root_certificate = "../as/state/root.pem"

[key_packages]
batch_size = 3
low_water_mark = 1

[schedule]
self_update_interval_secs = 0
EOF
    token="$(operator token issue "$(identity "$who")")"
    user "$who" enrol --token "$token" >"$DEMO/$who/enrol.log" 2>"$DEMO/$who/enrol.err" \
        || { cat "$DEMO/$who/enrol.err"; say "$who could not enrol"; exit 1; }
    serial="$(user "$who" status | sed -n 's/^serial: //p')"
    say "   $who: token demo-$who, certificate $serial, KeyPackages published"
done

# The safety numbers of the members named, compared.
agree() {
    local first="" who n
    local line=""
    for who in "$@"; do
        n="$(user "$who" safety-number "$G")"
        line="$line $who"
        if [[ -z "$first" ]]; then first="$n"
        elif [[ "$n" != "$first" ]]; then fail "$who's safety number differs: $n vs $first"; return; fi
    done
    pass "$(echo "$line" | sed 's/^ //; s/ /, /g') agree: ${first}"
}
# receive WHO: what WHO's receive prints (also kept in WHO/received.log).
receive() {
    local who="$1" out
    if out="$(user "$who" receive 2>>"$DEMO/$who/receive.err")"; then
        printf '%s\n' "$out" | tee -a "$DEMO/$who/received.log"
    else
        fail "$who's receive failed: $(tail -2 "$DEMO/$who/receive.err" | tr '\n' ' ')"
    fi
}
has() { grep -qF -- "$2" <<<"$1"; }

# ---------------------------------------------------------------- group
step "alice creates a group and adds bob and charlie"
G="$(user alice group create)"
say "   group $G (assisted: the DS follows its commits)"
user alice group add "$G" "$(identity bob)" "$(identity charlie)" | sed 's/^/   alice: /'
out="$(receive bob)"; check "bob joined" has "$out" "joined at epoch 1"
out="$(receive charlie)"; check "charlie joined" has "$out" "joined at epoch 1"
agree alice bob charlie

step "they exchange messages"
user alice send "$G" "hello bob and charlie" >/dev/null
user bob send "$G" "hi from bob" >/dev/null
out="$(receive bob)"; check "bob reads alice" has "$out" "im:alice@hsmls.demo: hello bob and charlie"
out="$(receive charlie)"
check "charlie reads alice" has "$out" "im:alice@hsmls.demo: hello bob and charlie"
check "charlie reads bob" has "$out" "im:bob@hsmls.demo: hi from bob"
out="$(receive alice)"; check "alice reads bob" has "$out" "im:bob@hsmls.demo: hi from bob"

step "bob updates his keys (post-compromise security)"
user bob group update "$G" | sed 's/^/   bob: /'
receive alice >/dev/null; receive charlie >/dev/null
agree alice bob charlie

step "bob follows the push, is killed (kill -9), restarted, and carries on"
user_bg bob receive --follow >"$DEMO/bob/follow.log" 2>"$DEMO/bob/follow.err"
BOB_PID=$BG_PID
wait_for "$DEMO/bob/follow.err" 20 "following" || fail "bob's follower did not start"
user alice send "$G" "bob, are you there?" >/dev/null
if wait_for "$DEMO/bob/follow.log" 20 "bob, are you there?"; then pass "bob's push delivered alice's message"; else fail "bob's push did not deliver"; fi
kill -9 "$BOB_PID"; wait "$BOB_PID" 2>/dev/null || true
say "   bob's process killed"
user alice send "$G" "sent while bob was down" >/dev/null
out="$(receive bob)"; check "bob, restarted, reads what came while he was down" has "$out" "sent while bob was down"
user bob send "$G" "bob is back" >/dev/null
out="$(receive alice)"; check "alice reads bob again" has "$out" "bob is back"
agree alice bob charlie

step "charlie goes offline for two commits, then catches up"
user alice group update "$G" | sed 's/^/   alice: /'
receive bob >/dev/null
agree alice bob
user bob group update "$G" | sed 's/^/   bob: /'
receive alice >/dev/null
agree alice bob
user alice send "$G" "while charlie was away" >/dev/null
out="$(receive charlie)"
check "charlie caught up with two commits" has "$out" "updated its keys"
check "charlie reads the message of the new epoch" has "$out" "while charlie was away"
agree alice bob charlie

step "alice removes charlie, who can no longer read the group"
user alice group remove "$G" "$(identity charlie)" | sed 's/^/   alice: /'
out="$(receive charlie)"; check "charlie is told he was removed" has "$out" "you were removed from the group by im:alice@hsmls.demo"
user alice send "$G" "charlie cannot read this" >/dev/null
out="$(receive charlie)"
check "charlie's receive gets nothing readable" test -z "$out"
if user charlie send "$G" "still here?" >/dev/null 2>"$DEMO/charlie/send.err"; then
    fail "charlie could still send"
else
    pass "charlie's send is refused: $(head -1 "$DEMO/charlie/send.err" | sed 's/^hsmls: //')"
fi
out="$(receive bob)"; check "bob reads it" has "$out" "charlie cannot read this"
agree alice bob

step "the operator revokes bob's certificate; alice's client removes him"
serial="$(user bob status | sed -n 's/^serial: //p')"
operator revoke "$serial" | sed 's/^/   operator: /'
out="$(receive alice)"
check "alice's client removed bob (his credential is revoked)" has "$out" "im:bob@hsmls.demo was removed by im:alice@hsmls.demo"
members="$(user alice group members "$G")"
check "alice is the only member left" test "$(echo "$members" | wc -l)" -eq 1
out="$(receive bob)"
check "bob is told he was removed" has "$out" "you were removed from the group"

# ---------------------------------------------------------------- end
ELAPSED=$((SECONDS - START))
step "result"
FAILED=0
[[ -f "$DEMO/failures" ]] && FAILED=$(wc -l <"$DEMO/failures")
if [[ "$FAILED" == 0 ]]; then
    say "PASS: $CHECKS checks in ${ELAPSED} s"
    exit 0
else
    say "FAIL: $FAILED of $((CHECKS + FAILED)) checks failed"
    exit 1
fi
