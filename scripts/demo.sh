#!/usr/bin/env bash
# The hsmls demo, on the SoftHSM test token:
#  1. custody: generates a P-256 signature key inside the token, signs,
#     verifies in software, prints the key's PKCS#11 URI; then an HPKE key
#     whose in-token ECDH is checked against a software DH;
#  2. MLS group (RFC 9420, suite 0x0002): alice, bob and carol, each with
#     their own PKCS#11 session and keys in the token: KeyPackages, Welcome,
#     application messages, a self-update, a remove; every member's epoch
#     and epoch_authenticator after each step (the demo fails if they
#     disagree); used init keys destroyed; the demo's keys removed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(bash scripts/setup-hsm.sh --env)"
export SOFTHSM2_CONF HSMLS_PKCS11_CONFIG
exec cargo run -q -p hsmls-cli -- demo
