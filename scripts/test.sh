#!/usr/bin/env bash
# Runs every check of the project: SoftHSM token, TPM and PostgreSQL setup,
# formatting, clippy, the documentation (warnings denied),
# and the whole test suite (the PKCS#11 tests use the SoftHSM token).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

eval "$(bash scripts/setup-hsm.sh --env)"
export SOFTHSM2_CONF HSMLS_PKCS11_CONFIG
# The TPM 2.0 tests: a software TPM (swtpm on 127.0.0.1) with a tpm2-pkcs11
# token, behind tpm2-abrmd on a private bus (scripts/setup-tpm.sh; its split
# configuration points HPKE keys at the SoftHSM token above). They fail,
# never skip, without it; the script fails here if the TPM cannot start.
eval "$(bash scripts/setup-tpm.sh --env --quiet)"
export TPM2_PKCS11_STORE TPM2_PKCS11_TCTI TPM2TOOLS_TCTI DBUS_SESSION_BUS_ADDRESS \
    HSMLS_TPM_PKCS11_CONFIG HSMLS_TPM_SPLIT_PKCS11_CONFIG
# The AS storage tests also run on PostgreSQL: a private server on
# 127.0.0.1 (scripts/setup-postgres.sh). They fail, never skip, without it.
eval "$(bash scripts/setup-postgres.sh --env)"
export HSMLS_TEST_PG_URL
# The official MLS test vectors are vendored in crates/test-vectors/vectors
# and found by the tests themselves (HSMLS_TEST_VECTORS stays an optional
# override, not set here).

# rustfmt and clippy, only if missing.
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# hsmls as an application builds it: without the test-utils feature, which
# the workspace build turns on (interop, peers and the tests use it).
cargo clippy -p hsmls --lib -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
# The documentation an application reads (hsmls without test-utils).
RUSTDOCFLAGS="-D warnings" cargo doc -p hsmls --no-deps
bash scripts/callgrind-guard.sh --check
echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run: the sum over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
