#!/usr/bin/env bash
# The hsmls custody demo: generates a P-256 signature key inside the SoftHSM
# token, signs, verifies in software, prints the key's PKCS#11 URI; then an
# HPKE key whose in-token ECDH is checked against a software DH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(bash scripts/setup-hsm.sh --env)"
export SOFTHSM2_CONF HSMLS_PKCS11_CONFIG
exec cargo run -q -p hsmls-cli -- demo
