#!/usr/bin/env bash
# Gives this machine a working PKCS#11 test token (SoftHSM2) for hsmls.
#
#  - installs the Debian package softhsm2 when softhsm2-util is missing;
#  - keeps the token store in a folder of its own (by default the
#    repository's .hsm/, git-ignored): DIR/tokens;
#  - writes DIR/softhsm2.conf from hsm-config/softhsm2.conf.in;
#  - initialises the token labelled as in hsm-config/token.env (or --token);
#  - writes DIR/user.pin (mode 0600) and DIR/pkcs11.toml, the config file
#    that the custody crate reads (HSMLS_PKCS11_CONFIG).
#
# Idempotent: a second run changes nothing. The token-resident AES keys
# (HPKE wrapping, state sealing) are created lazily by the custody backend
# on first use.
#
#   bash scripts/setup-hsm.sh                     the repository's test token (.hsm/)
#   bash scripts/setup-hsm.sh --env               same, then print the two exports
#   bash scripts/setup-hsm.sh --dir D --token L   a token labelled L in its own store D
#                                                 (one per device: the demo gives alice,
#                                                 bob, charlie and the AS one each, since
#                                                 SoftHSM is not safe for several
#                                                 processes writing one token)
#   --quiet                                       no progress lines on stderr
#
# Use it from other scripts with:  eval "$(bash scripts/setup-hsm.sh --env)"
# (the exports are SOFTHSM2_CONF and HSMLS_PKCS11_CONFIG of that token).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# shellcheck source=../hsm-config/token.env
source "$ROOT/hsm-config/token.env"
: "${HSMLS_TOKEN_LABEL:?} ${HSMLS_USER_PIN:?} ${HSMLS_SO_PIN:?}"

HSM_DIR="$ROOT/.hsm"
LABEL="$HSMLS_TOKEN_LABEL"
PRINT_ENV=0
QUIET=0
usage() {
    echo "usage: setup-hsm.sh [--env] [--quiet] [--dir DIR] [--token LABEL]" >&2
    exit 2
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --env) PRINT_ENV=1 ;;
        --quiet) QUIET=1 ;;
        --dir) [[ $# -ge 2 ]] || usage; HSM_DIR="$2"; shift ;;
        --token) [[ $# -ge 2 ]] || usage; LABEL="$2"; shift ;;
        *) usage ;;
    esac
    shift
done
# A label is at most 32 bytes (CK_TOKEN_INFO.label); keep it to a safe set.
[[ "$LABEL" =~ ^[A-Za-z0-9._-]{1,32}$ ]] || { echo "setup-hsm: bad token label '$LABEL'" >&2; exit 2; }
mkdir -p "$HSM_DIR"
HSM_DIR="$(cd "$HSM_DIR" && pwd)"
TOKEN_DIR="$HSM_DIR/tokens"
CONF="$HSM_DIR/softhsm2.conf"
PIN_FILE="$HSM_DIR/user.pin"
P11_CONFIG="$HSM_DIR/pkcs11.toml"

log() { [[ "$QUIET" == 1 ]] || echo "setup-hsm: $*" >&2; }
die() { echo "setup-hsm: $*" >&2; exit 1; }

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

# 1. The softhsm2 package.
if ! command -v softhsm2-util >/dev/null 2>&1; then
    log "installing softhsm2"
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install softhsm2"
        SUDO=(sudo)
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends softhsm2 >&2
fi

MODULE=/usr/lib/softhsm/libsofthsm2.so
if [[ ! -f "$MODULE" ]]; then
    MODULE="$(dpkg -L softhsm2 libsofthsm2 2>/dev/null | grep -m1 '/libsofthsm2\.so$' || true)"
fi
[[ -n "$MODULE" && -f "$MODULE" ]] || die "libsofthsm2.so not found"

# 2. Token store and softhsm2.conf.
mkdir -p "$TOKEN_DIR"
chmod 0700 "$HSM_DIR" "$TOKEN_DIR"
sed -e "s|@TOKENDIR@|$TOKEN_DIR|g" "$ROOT/hsm-config/softhsm2.conf.in" | write_if_changed "$CONF"
export SOFTHSM2_CONF="$CONF"

# 3. The token.
if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$LABEL[[:space:]]*$"; then
    :
else
    log "initialising token '$LABEL' in $TOKEN_DIR"
    softhsm2-util --init-token --free --label "$LABEL" \
        --so-pin "$HSMLS_SO_PIN" --pin "$HSMLS_USER_PIN" >/dev/null
fi

# 4. The PIN file and the custody config.
(umask 077; printf '%s\n' "$HSMLS_USER_PIN" | write_if_changed "$PIN_FILE")
chmod 0600 "$PIN_FILE"
write_if_changed "$P11_CONFIG" <<TOML
# Written by scripts/setup-hsm.sh for a SoftHSM test token. See hsm-config/pkcs11.example.toml.
# SoftHSM finds this token's store through SOFTHSM2_CONF=$CONF
module = "$MODULE"
token_label = "$LABEL"
pin_file = "$PIN_FILE"
pool_size = 4
TOML

if [[ "$PRINT_ENV" == 1 ]]; then
    printf 'export SOFTHSM2_CONF=%q\nexport HSMLS_PKCS11_CONFIG=%q\n' "$CONF" "$P11_CONFIG"
else
    log "ready: $(softhsm2-util --version) module $MODULE token '$LABEL'"
    log "export SOFTHSM2_CONF=$CONF HSMLS_PKCS11_CONFIG=$P11_CONFIG"
fi
