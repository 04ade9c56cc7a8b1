#!/usr/bin/env bash
# Runs benchmarks that need the SoftHSM test token's environment: by default
# the custody benchmarks (software and PKCS#11 on the token). Arguments go to
# `cargo bench` in place of `-p hsmls-custody`, e.g.
#   bash scripts/bench.sh -p hsmls --bench state      # group state save/load
#   bash scripts/bench.sh -- keygen                   # custody, a criterion filter
#   bash scripts/bench.sh --as                        # the AS: enrolments/s on
#                                                     # SQLite and PostgreSQL, validation
#   bash scripts/bench.sh --as -- validate
#   bash scripts/bench.sh --ds                        # the DS store: appends/s on
#                                                     # SQLite and PostgreSQL, reads
#   bash scripts/bench.sh --tpm                       # MLS commit create/process and
#                                                     # messages with one member's keys in
#                                                     # software, SoftHSM, and the swtpm TPM
#                                                     # (signature key) + SoftHSM (HPKE)
#   bash scripts/bench.sh --scale                     # groups of 2 to 100,000: hsmls,
#                                                     # openmls, mls-rs, hsmls on SoftHSM
#                                                     # (scripts/scale.sh: CSV, tables, plots)
#   bash scripts/bench.sh --ds-load                   # the DS end to end: hsmls-ds serve
#                                                     # + the open-loop load generator
#                                                     # (scripts/ds-load.sh)
#   bash scripts/bench.sh --suites [crypto|custody|commit] [-- criterion args]
#                                                     # per cipher suite: hsmls-crypto's
#                                                     # operations, sign/DH per curve in
#                                                     # software and SoftHSM, and the commit
#                                                     # benchmark with the peers on
#                                                     # HSMLS_BENCH_SUITES (default
#                                                     # 0x0001,0x0003,0x0007); all three
#                                                     # without a part name
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(bash scripts/setup-hsm.sh --env)"
if [[ "${1:-}" == "--as" ]]; then
    shift
    eval "$(bash scripts/setup-postgres.sh --env)"
    export HSMLS_TEST_PG_URL
    exec cargo bench -p hsmls-as --bench enrol "$@"
fi
if [[ "${1:-}" == "--ds" ]]; then
    shift
    eval "$(bash scripts/setup-postgres.sh --env)"
    export HSMLS_TEST_PG_URL
    exec cargo bench -p hsmls-ds --bench store "$@"
fi
if [[ "${1:-}" == "--tpm" ]]; then
    shift
    eval "$(bash scripts/setup-tpm.sh --env --quiet)"
    exec cargo bench -p hsmls --bench custody_commit "$@"
fi
if [[ "${1:-}" == "--scale" ]]; then
    shift
    export SOFTHSM2_CONF HSMLS_PKCS11_CONFIG
    exec bash scripts/scale.sh "$@"
fi
if [[ "${1:-}" == "--ds-load" ]]; then
    shift
    cargo build --release -p hsmls-ds --bin hsmls-ds
    # The target directory cargo used (.cargo/config.toml or CARGO_TARGET_DIR).
    target="$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    exec bash scripts/ds-load.sh "$target/release/hsmls-ds" "$@"
fi
if [[ "${1:-}" == "--suites" ]]; then
    shift
    part=all
    if [[ $# -gt 0 && "$1" != "--" ]]; then
        part="$1"
        shift
    fi
    case "$part" in
        all | crypto | custody | commit) ;;
        *)
            echo "bench.sh --suites: unknown part '$part' (crypto, custody or commit)" >&2
            exit 2
            ;;
    esac
    if [[ "$part" == all || "$part" == crypto ]]; then
        cargo bench -p hsmls-crypto --bench suite "$@"
    fi
    if [[ "$part" == all || "$part" == custody ]]; then
        cargo bench -p hsmls-custody --bench custody "$@"
    fi
    if [[ "$part" == all || "$part" == commit ]]; then
        HSMLS_BENCH_SUITES="${HSMLS_BENCH_SUITES:-0x0001,0x0003,0x0007}" \
            cargo bench -p hsmls-peers --bench commit "$@"
    fi
    exit 0
fi
if [[ $# -eq 0 || "$1" == "--" ]]; then
    set -- -p hsmls-custody "$@"
fi
exec cargo bench "$@"
