#!/usr/bin/env bash
# Runs the custody benchmarks (software and PKCS#11 on the SoftHSM test token).
# Extra arguments go to criterion, e.g.  bash scripts/bench.sh -- keygen
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(bash scripts/setup-hsm.sh --env)"
exec cargo bench -p hsmls-custody "$@"
