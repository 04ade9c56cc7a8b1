#!/usr/bin/env bash
# Speed regression guard that does not need a quiet machine (issue 13):
# counts the instructions (valgrind's callgrind, `Ir`) that hsmls executes
# for a few MLS operations at a fixed group size, and compares them with
# the counts recorded in the repository.
#
#   bash scripts/callgrind-guard.sh            # print the counts
#   bash scripts/callgrind-guard.sh --check    # fail on a rise above the tolerance
#   bash scripts/callgrind-guard.sh --update   # rewrite the baseline
#
# The operations are those of crates/peers/benches/scale.rs (release
# build), run once in one process at N = CALLGRIND_GUARD_N (100): `create`
# (validate N-1 KeyPackages, one commit adding them with an UpdatePath and
# a Welcome with the tree inside, merge), `join` (from that Welcome),
# `update-create` and `update-process` (a self-update commit). Callgrind
# cuts its profile where each operation starts and ends
# (`--dump-before`), so setup is not counted; threads the operation
# spawns are. Counts move by a few parts in 10,000 between runs (the keys
# are random); CALLGRIND_GUARD_TOLERANCE (percent, default 3) is the
# allowed rise. Requires valgrind.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BASELINE="crates/peers/benches/callgrind-baseline.txt"
N="${CALLGRIND_GUARD_N:-100}"
TOLERANCE="${CALLGRIND_GUARD_TOLERANCE:-3}"
OPS=(create join update-create update-process)

mode=print
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    --update) mode=update ;;
    *)
        echo "usage: $0 [--check|--update]" >&2
        exit 2
        ;;
esac

if ! command -v valgrind >/dev/null 2>&1; then
    echo "callgrind-guard: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi

echo "== callgrind guard: building the scale bench (release)" >&2
bin="$(cargo build --release -p hsmls-peers --bench scale --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "callgrind-guard: could not find the scale bench binary" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ops_csv="$(IFS=,; echo "${OPS[*]}")"
started=$SECONDS
valgrind --tool=callgrind --dump-before='scale::measure*' \
    --callgrind-out-file="$work/cg.out" "$bin" "$N" "$ops_csv" >"$work/stdout" 2>"$work/stderr" || {
    cat "$work/stderr" >&2
    echo "callgrind-guard: the bench failed under valgrind" >&2
    exit 1
}
echo "== callgrind guard: ran in $((SECONDS - started)) s" >&2

# Part 2k is the k-th operation (part 2k-1 leads up to it).
declare -A count
for k in "${!OPS[@]}"; do
    part="$work/cg.out.$((2 * k + 2))"
    if ! grep -q "^desc: Trigger: --dump-before=scale::measurement_ended" "$part" 2>/dev/null; then
        echo "callgrind-guard: no profile part for ${OPS[$k]} ($part)" >&2
        exit 1
    fi
    count[${OPS[$k]}]="$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$part")"
done

if [ "$mode" = update ]; then
    {
        echo "# Instructions (callgrind Ir) per operation of crates/peers/benches/scale.rs"
        echo "# at N members, release build; written by scripts/callgrind-guard.sh --update,"
        echo "# checked by scripts/callgrind-guard.sh --check (scripts/test.sh)."
        echo "n $N"
        for op in "${OPS[@]}"; do
            echo "$op ${count[$op]}"
        done
    } >"$BASELINE"
    echo "callgrind-guard: wrote $BASELINE"
    cat "$BASELINE"
    exit 0
fi

if [ "$mode" = print ]; then
    for op in "${OPS[@]}"; do
        printf '%-16s %15s\n' "$op" "${count[$op]}"
    done
    exit 0
fi

if [ ! -f "$BASELINE" ]; then
    echo "callgrind-guard: no baseline ($BASELINE); run with --update" >&2
    exit 1
fi
base_n="$(awk '$1 == "n" { print $2 }' "$BASELINE")"
if [ "$base_n" != "$N" ]; then
    echo "callgrind-guard: the baseline is for N = $base_n, not $N" >&2
    exit 1
fi
failed=0
for op in "${OPS[@]}"; do
    base="$(awk -v op="$op" '$1 == op { print $2 }' "$BASELINE")"
    if [ -z "$base" ]; then
        echo "callgrind-guard: $op has no baseline; run with --update" >&2
        failed=1
        continue
    fi
    now="${count[$op]}"
    verdict="$(awk -v now="$now" -v base="$base" -v tol="$TOLERANCE" 'BEGIN {
        change = (now - base) * 100 / base
        status = change > tol ? "FAIL" : (change < -tol ? "faster (update the baseline)" : "ok")
        printf "%+.2f %% %s", change, status
    }')"
    printf '%-16s %15s  baseline %15s  %s\n' "$op" "$now" "$base" "$verdict"
    case "$verdict" in
        *FAIL*) failed=1 ;;
    esac
done
if [ "$failed" -ne 0 ]; then
    echo "callgrind-guard: instruction counts rose above ${TOLERANCE} % (N = $N)" >&2
    exit 1
fi
echo "callgrind-guard: every count within ${TOLERANCE} % of the baseline (N = $N)"
