#!/usr/bin/env bash
# Gives this machine a TPM 2.0 PKCS#11 token for hsmls tests, without TPM
# hardware: a software TPM (swtpm) reached through tpm2-pkcs11.
#
#  - installs the Debian packages when missing: swtpm, swtpm-tools,
#    tpm2-tools, tpm2-abrmd (with its TCTI), libtpm2-pkcs11-1,
#    libtpm2-pkcs11-tools (tpm2_ptool) and dbus (for dbus-daemon);
#  - keeps everything in a folder of its own (by default the repository's
#    .tpm/, git-ignored): the TPM's state (state/), the tpm2-pkcs11 store
#    (store/, an SQLite file holding the token's wrapped key blobs), the
#    PIN file, logs and pid files;
#  - starts, when they are not already running for that folder:
#      swtpm       listening on 127.0.0.1 only (two free ports, kept in
#                  DIR/ports), its state in DIR/state;
#      dbus-daemon a private bus on a socket in DIR (no system bus needed);
#      tpm2-abrmd  the TPM resource manager on that bus. Without it every
#                  tpm2 command leaks transient objects until the TPM is
#                  out of object slots (seen: tpm2_ptool addtoken fails
#                  with TPM_RC_OBJECT_MEMORY against a bare swtpm);
#  - creates the tpm2-pkcs11 primary key and a token labelled as in
#    hsm-config/tpm-token.env (tpm2_ptool init / addtoken) when missing;
#  - writes DIR/user.pin (0600), DIR/pkcs11.toml (the custody config of the
#    token), DIR/pkcs11-split.toml (signature keys in the TPM, HPKE keys and
#    the state-sealing key in the token of --hpke-token FILE, by default the
#    repository's SoftHSM test token .hsm/pkcs11.toml of setup-hsm.sh) and
#    DIR/env (the variables tpm2-pkcs11 needs).
#
# Idempotent: a second run finds everything running and changes nothing.
#
#   bash scripts/setup-tpm.sh            start (or find) the TPM and the token
#   bash scripts/setup-tpm.sh --env      same, then print the exports
#   bash scripts/setup-tpm.sh --stop     stop what this script started for DIR
#   --dir DIR                            another folder (and TPM) than .tpm/
#   --quiet                              no progress lines on stderr
#   --hpke-token FILE                    the HPKE token of pkcs11-split.toml
#
# Use it from other scripts with:  eval "$(bash scripts/setup-tpm.sh --env)"
# The exports: TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI, DBUS_SESSION_BUS_ADDRESS
# (read by tpm2-pkcs11 inside the process that opens the token),
# TPM2TOOLS_TCTI (for tpm2-tools),
# HSMLS_TPM_PKCS11_CONFIG and HSMLS_TPM_SPLIT_PKCS11_CONFIG (the custody
# config files).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# shellcheck source=../hsm-config/tpm-token.env
source "$ROOT/hsm-config/tpm-token.env"
: "${HSMLS_TPM_TOKEN_LABEL:?} ${HSMLS_TPM_USER_PIN:?} ${HSMLS_TPM_SO_PIN:?}"

TPM_DIR="$ROOT/.tpm"
HPKE_TOKEN="$ROOT/.hsm/pkcs11.toml"
PRINT_ENV=0
QUIET=0
STOP=0
usage() {
    echo "usage: setup-tpm.sh [--env] [--quiet] [--stop] [--dir DIR] [--hpke-token FILE]" >&2
    exit 2
}
ORIG_ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
        --env) PRINT_ENV=1 ;;
        --quiet) QUIET=1 ;;
        --stop) STOP=1 ;;
        --dir) [[ $# -ge 2 ]] || usage; TPM_DIR="$2"; shift ;;
        --hpke-token) [[ $# -ge 2 ]] || usage; HPKE_TOKEN="$2"; shift ;;
        *) usage ;;
    esac
    shift
done

log() { [[ "$QUIET" == 1 ]] || echo "setup-tpm: $*" >&2; }
die() { echo "setup-tpm: $*" >&2; exit 1; }

mkdir -p "$TPM_DIR"
TPM_DIR="$(cd "$TPM_DIR" && pwd)"
STATE="$TPM_DIR/state"
STORE="$TPM_DIR/store"
BUS="$TPM_DIR/bus"
PIN_FILE="$TPM_DIR/user.pin"
P11_CONFIG="$TPM_DIR/pkcs11.toml"
SPLIT_CONFIG="$TPM_DIR/pkcs11-split.toml"
ENV_FILE="$TPM_DIR/env"
# A unix socket path is at most 107 bytes.
[[ ${#BUS} -lt 100 ]] || die "folder path too long for the bus socket: $TPM_DIR"

# True when the pid in file $1 is alive and its command line contains $2.
running() {
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(cat "$1" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$2"
}

stop_one() {
    local pidfile="$1" marker="$2" pid
    if running "$pidfile" "$marker"; then
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped $(basename "$pidfile" .pid) ($pid)"
    fi
    rm -f "$pidfile"
}

if [[ "$STOP" == 1 ]]; then
    # An orderly TPM2_Shutdown first, so that the next start is not an
    # unorderly one (which counts against dictionary-attack protection).
    if running "$TPM_DIR/abrmd.pid" "tpm2-abrmd"; then
        DBUS_SESSION_BUS_ADDRESS="unix:path=$BUS" TPM2TOOLS_TCTI="tabrmd:bus_type=session" \
            timeout 5 tpm2_shutdown >/dev/null 2>&1 || true
    fi
    stop_one "$TPM_DIR/abrmd.pid" "tpm2-abrmd"
    stop_one "$TPM_DIR/dbus.pid" "$TPM_DIR/dbus.conf"
    stop_one "$TPM_DIR/swtpm.pid" "$STATE"
    rm -f "$BUS"
    exit 0
fi

# 1. The packages.
PACKAGES=(swtpm swtpm-tools tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0
    libtpm2-pkcs11-1 libtpm2-pkcs11-tools dbus)
MISSING=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING+=("$p")
done
if [[ ${#MISSING[@]} -gt 0 ]]; then
    log "installing ${MISSING[*]}"
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install ${MISSING[*]}"
        SUDO=(sudo)
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${MISSING[@]}" >&2
fi
MODULE="$(dpkg -L libtpm2-pkcs11-1 2>/dev/null | grep -m1 '/pkcs11/libtpm2_pkcs11\.so$' || true)"
[[ -n "$MODULE" && -f "$MODULE" ]] ||
    MODULE="$(dpkg -L libtpm2-pkcs11-1 2>/dev/null | grep -m1 'libtpm2_pkcs11\.so' || true)"
[[ -n "$MODULE" && -f "$MODULE" ]] || die "libtpm2_pkcs11.so not found"

mkdir -p "$STATE" "$STORE"
chmod 0700 "$TPM_DIR" "$STATE" "$STORE"

# Writes stdin to $1 only when the content differs (keeps mtimes stable).
write_if_changed() {
    local target="$1" tmp
    tmp="$(mktemp "$target.XXXXXX")"
    cat >"$tmp"
    if [[ -f "$target" ]] && cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$target"
        log "wrote $target"
    fi
}

# Two free consecutive TCP ports on loopback: the TPM's command port and,
# one above it, its control port (the swtpm TCTI of tpm2-tss 3.2 takes only
# the first and assumes the second).
free_ports() {
    python3 - <<'PY'
import socket
for _ in range(100):
    a = socket.socket()
    a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 1))
    except OSError:
        continue
    print(port, port + 1)
    break
else:
    raise SystemExit("no two consecutive free ports")
PY
}

# 2. swtpm, on loopback.
if ! running "$TPM_DIR/swtpm.pid" "$STATE"; then
    # A stale resource manager would hold a connection to the old TPM.
    stop_one "$TPM_DIR/abrmd.pid" "tpm2-abrmd"
    read -r PORT CTRL_PORT < <(free_ports)
    echo "$PORT $CTRL_PORT" >"$TPM_DIR/ports"
    log "starting swtpm on 127.0.0.1:$PORT (state $STATE)"
    swtpm socket --tpm2 --tpmstate "dir=$STATE" \
        --server "type=tcp,port=$PORT,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$CTRL_PORT,bindaddr=127.0.0.1" \
        --flags not-need-init,startup-clear \
        --daemon --pid "file=$TPM_DIR/swtpm.pid" --log "file=$TPM_DIR/swtpm.log"
    for _ in $(seq 50); do
        running "$TPM_DIR/swtpm.pid" "$STATE" && break
        sleep 0.1
    done
    running "$TPM_DIR/swtpm.pid" "$STATE" || die "swtpm did not start (see $TPM_DIR/swtpm.log)"
fi
read -r PORT CTRL_PORT <"$TPM_DIR/ports"

# 3. A private D-Bus for the resource manager.
write_if_changed "$TPM_DIR/dbus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- Written by scripts/setup-tpm.sh: the private bus of this folder's tpm2-abrmd. -->
<busconfig>
  <type>session</type>
  <listen>unix:path=$BUS</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
XML
export DBUS_SESSION_BUS_ADDRESS="unix:path=$BUS"
if ! running "$TPM_DIR/dbus.pid" "$TPM_DIR/dbus.conf"; then
    stop_one "$TPM_DIR/abrmd.pid" "tpm2-abrmd"
    rm -f "$BUS"
    log "starting a private dbus-daemon on $BUS"
    dbus-daemon --config-file="$TPM_DIR/dbus.conf" --fork --print-pid >"$TPM_DIR/dbus.pid"
fi

# 4. tpm2-abrmd, the resource manager, on that bus.
TCTI="tabrmd:bus_type=session"
export TPM2TOOLS_TCTI="$TCTI" TPM2_PKCS11_TCTI="$TCTI" TPM2_PKCS11_STORE="$STORE"
# tpm2-pkcs11 1.9.0 leaves one transient object loaded per generated key
# for as long as the process's connection lasts (seen: the 28th
# C_GenerateKeyPair of a process fails with TPM_RC_OBJECT_MEMORY under the
# default of 27 per connection), so the limit is raised to abrmd's maximum.
ABRMD_LIMIT="--max-transients=100"
if running "$TPM_DIR/abrmd.pid" "tpm2-abrmd" && ! running "$TPM_DIR/abrmd.pid" "$ABRMD_LIMIT"; then
    stop_one "$TPM_DIR/abrmd.pid" "tpm2-abrmd"
fi
if ! running "$TPM_DIR/abrmd.pid" "tpm2-abrmd"; then
    ALLOW_ROOT=()
    [[ "$(id -u)" -ne 0 ]] || ALLOW_ROOT=(--allow-root)
    log "starting tpm2-abrmd"
    # --flush-all: a resource manager restarted on a running swtpm must not
    # inherit the objects and sessions of its predecessor.
    setsid tpm2-abrmd --session --flush-all "$ABRMD_LIMIT" --tcti="swtpm:host=127.0.0.1,port=$PORT" \
        "${ALLOW_ROOT[@]}" </dev/null >"$TPM_DIR/abrmd.log" 2>&1 &
    echo $! >"$TPM_DIR/abrmd.pid"
fi
ready=0
for _ in $(seq 30); do
    if timeout 5 tpm2_getcap properties-fixed >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.2
done
[[ "$ready" == 1 ]] || die "the TPM does not answer through tpm2-abrmd (see $TPM_DIR/abrmd.log)"
# A TPM in failure mode (seen once under heavy load: libtpms "Entering
# failure mode ... EntityGetAuthValue" during a C_Sign, after which
# tpm2-abrmd aborts) still answers TPM2_GetCapability but nothing else,
# until it is power-cycled. Restart swtpm and the resource manager then;
# the TPM's persistent state (the primary key) survives.
if ! timeout 10 tpm2_gettestresult 2>/dev/null | grep -q "success"; then
    [[ "${HSMLS_TPM_RESTARTED:-0}" == 0 ]] || die "the TPM stays in failure mode after a restart (see $TPM_DIR/swtpm.log)"
    log "the TPM is in failure mode: restarting swtpm and tpm2-abrmd"
    stop_one "$TPM_DIR/abrmd.pid" "tpm2-abrmd"
    stop_one "$TPM_DIR/swtpm.pid" "$STATE"
    HSMLS_TPM_RESTARTED=1 exec bash "${BASH_SOURCE[0]}" "${ORIG_ARGS[@]}"
fi
# A test TPM: dictionary-attack lockout would turn a swtpm killed without
# TPM2_Shutdown (a crashed test run) into TPM_RC_LOCKOUT for every key use
# until the recovery time has passed. Clear it, and let it recover at once.
tpm2_dictionarylockout --clear-lockout >/dev/null 2>&1 || log "could not clear the DA lockout"
tpm2_dictionarylockout --setup-parameters --max-tries=1000 --recovery-time=0 \
    --lockout-recovery-time=0 >/dev/null 2>&1 || log "could not set the DA parameters"

# 5. The tpm2-pkcs11 primary key and the token. (Outputs are read whole:
# `grep -q` on a pipe would end tpm2_ptool early and fail the pipeline.)
PRIMARIES="$(tpm2_ptool listprimaries --path "$STORE" 2>/dev/null || true)"
if ! grep -Eq '^ *id: [0-9]+$' <<<"$PRIMARIES"; then
    log "creating the tpm2-pkcs11 primary key"
    tpm2_ptool init --path "$STORE" >/dev/null
    PRIMARIES="$(tpm2_ptool listprimaries --path "$STORE")"
fi
PID="$(awk '/^ *id: [0-9]+$/ {print $NF}' <<<"$PRIMARIES" | head -n1)"
TOKENS="$(tpm2_ptool listtokens --pid="$PID" --path "$STORE" 2>/dev/null || true)"
if ! grep -Eq "^ *label: $HSMLS_TPM_TOKEN_LABEL\$" <<<"$TOKENS"; then
    log "creating token '$HSMLS_TPM_TOKEN_LABEL'"
    tpm2_ptool addtoken --pid="$PID" --label="$HSMLS_TPM_TOKEN_LABEL" \
        --sopin="$HSMLS_TPM_SO_PIN" --userpin="$HSMLS_TPM_USER_PIN" --path "$STORE" >/dev/null
fi

# 6. The PIN file, the custody config and the environment file.
(umask 077; printf '%s\n' "$HSMLS_TPM_USER_PIN" | write_if_changed "$PIN_FILE")
chmod 0600 "$PIN_FILE"
write_if_changed "$P11_CONFIG" <<TOML
# Written by scripts/setup-tpm.sh for a tpm2-pkcs11 token in swtpm. See docs/custody.md.
# tpm2-pkcs11 finds the token through TPM2_PKCS11_STORE and TPM2_PKCS11_TCTI ($ENV_FILE).
module = "$MODULE"
token_label = "$HSMLS_TPM_TOKEN_LABEL"
pin_file = "$PIN_FILE"
# One session: signing from several threads at once has put swtpm into
# failure mode (docs/custody.md, "Several threads signing at once").
pool_size = 1
TOML
write_if_changed "$SPLIT_CONFIG" <<TOML
# Written by scripts/setup-tpm.sh: signature keys in the TPM token, HPKE keys
# (and the state-sealing key: the TPM has no AES-GCM) in the token of
# hpke_token. See docs/custody.md. That file must exist when hsmls opens this
# one (scripts/setup-hsm.sh writes the default).
module = "$MODULE"
token_label = "$HSMLS_TPM_TOKEN_LABEL"
pin_file = "$PIN_FILE"
pool_size = 1
hpke_token = "$HPKE_TOKEN"
TOML
write_if_changed "$ENV_FILE" <<ENV
export TPM2_PKCS11_STORE=$(printf '%q' "$STORE")
export TPM2_PKCS11_TCTI=$(printf '%q' "$TCTI")
export TPM2TOOLS_TCTI=$(printf '%q' "$TCTI")
export DBUS_SESSION_BUS_ADDRESS=$(printf '%q' "$DBUS_SESSION_BUS_ADDRESS")
export HSMLS_TPM_PKCS11_CONFIG=$(printf '%q' "$P11_CONFIG")
export HSMLS_TPM_SPLIT_PKCS11_CONFIG=$(printf '%q' "$SPLIT_CONFIG")
ENV

if [[ "$PRINT_ENV" == 1 ]]; then
    cat "$ENV_FILE"
else
    log "ready: swtpm on 127.0.0.1:$PORT, token '$HSMLS_TPM_TOKEN_LABEL', module $MODULE"
    log "source $ENV_FILE"
fi
