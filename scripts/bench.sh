#!/usr/bin/env bash
# Runs the custody benchmarks (software and PKCS#11 on the SoftHSM test token),
# or with --as the Authentication Service's (enrolments per second on SQLite
# and PostgreSQL, credential validation).
# Extra arguments go to criterion, e.g.  bash scripts/bench.sh -- keygen
#                                        bash scripts/bench.sh --as -- validate
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
exec cargo bench -p hsmls-custody "$@"
