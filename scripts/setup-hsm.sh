#!/usr/bin/env bash
# Gives this machine a working PKCS#11 test token (SoftHSM2) for hsmls.
#
#  - installs the Debian package softhsm2 when softhsm2-util is missing;
#  - keeps the token store inside the repository (.hsm/tokens, git-ignored);
#  - writes .hsm/softhsm2.conf from hsm-config/softhsm2.conf.in;
#  - initialises the token labelled as in hsm-config/token.env;
#  - writes .hsm/user.pin (mode 0600) and .hsm/pkcs11.toml, the config file
#    that the custody crate reads (HSMLS_PKCS11_CONFIG).
#
# Idempotent: a second run changes nothing. The token-resident AES key that
# wraps HPKE keys is created lazily by the custody backend on first use.
#
# Use it from other scripts with:  source <(bash scripts/setup-hsm.sh --env)
# or simply run it and export the two variables it prints.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HSM_DIR="$ROOT/.hsm"
TOKEN_DIR="$HSM_DIR/tokens"
CONF="$HSM_DIR/softhsm2.conf"
PIN_FILE="$HSM_DIR/user.pin"
P11_CONFIG="$HSM_DIR/pkcs11.toml"

# shellcheck source=../hsm-config/token.env
source "$ROOT/hsm-config/token.env"
: "${HSMLS_TOKEN_LABEL:?} ${HSMLS_USER_PIN:?} ${HSMLS_SO_PIN:?}"

log() { echo "setup-hsm: $*" >&2; }

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
        command -v sudo >/dev/null 2>&1 || { log "need root or sudo to install softhsm2"; exit 1; }
        SUDO=(sudo)
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends softhsm2 >&2
fi

MODULE=/usr/lib/softhsm/libsofthsm2.so
if [[ ! -f "$MODULE" ]]; then
    MODULE="$(dpkg -L softhsm2 libsofthsm2 2>/dev/null | grep -m1 '/libsofthsm2\.so$' || true)"
fi
[[ -n "$MODULE" && -f "$MODULE" ]] || { log "libsofthsm2.so not found"; exit 1; }

# 2. Token store and softhsm2.conf.
mkdir -p "$TOKEN_DIR"
chmod 0700 "$HSM_DIR" "$TOKEN_DIR"
sed -e "s|@TOKENDIR@|$TOKEN_DIR|g" "$ROOT/hsm-config/softhsm2.conf.in" | write_if_changed "$CONF"
export SOFTHSM2_CONF="$CONF"

# 3. The token.
if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$HSMLS_TOKEN_LABEL[[:space:]]*$"; then
    :
else
    log "initialising token '$HSMLS_TOKEN_LABEL'"
    softhsm2-util --init-token --free --label "$HSMLS_TOKEN_LABEL" \
        --so-pin "$HSMLS_SO_PIN" --pin "$HSMLS_USER_PIN" >/dev/null
fi

# 4. The PIN file and the custody config.
(umask 077; printf '%s\n' "$HSMLS_USER_PIN" | write_if_changed "$PIN_FILE")
chmod 0600 "$PIN_FILE"
write_if_changed "$P11_CONFIG" <<TOML
# Written by scripts/setup-hsm.sh for the SoftHSM test token. See hsm-config/pkcs11.example.toml.
module = "$MODULE"
token_label = "$HSMLS_TOKEN_LABEL"
pin_file = "$PIN_FILE"
pool_size = 4
TOML

if [[ "${1:-}" == "--env" ]]; then
    printf 'export SOFTHSM2_CONF=%q\nexport HSMLS_PKCS11_CONFIG=%q\n' "$CONF" "$P11_CONFIG"
else
    log "ready: $(softhsm2-util --version) module $MODULE"
    log "export SOFTHSM2_CONF=$CONF HSMLS_PKCS11_CONFIG=$P11_CONFIG"
fi
