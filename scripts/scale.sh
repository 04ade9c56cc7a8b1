#!/usr/bin/env bash
# The comparative scale suite (issue 13): runs crates/peers/benches/scale.rs
# (release) once per (implementation, custody, N), one process each so that
# the peak resident size is that run's, the implementations interleaved per
# N, and writes a CSV, Markdown tables and log-log plots.
#
#   bash scripts/bench.sh --scale          # the whole matrix (SoftHSM set up)
#   bash scripts/scale.sh --report DIR     # tables and plots again from DIR/scale.csv
#
# Settings (environment):
#   SCALE_NS            group sizes              (2 100 1000 10000 50000 100000)
#   SCALE_IMPLS         implementations          (hsmls openmls mls-rs)
#   SCALE_CUSTODY_NS    sizes of the hsmls runs with SoftHSM custody (100 1000 10000)
#   SCALE_RUN_TIMEOUT   seconds a run may take before it is killed (900)
#   SCALE_OP_LIMIT_MS   a peer stops at the first N where one operation took
#                       longer than this, or its run was killed (60000)
#   SCALE_OUT           output directory          (target/scale)
#   SCALE_PLOTS         where the PNG plots go    (docs/img)
#
# Outputs: $SCALE_OUT/scale.csv (impl,custody,n,metric,value,sign,dh,
# generate,import,destroy: metric is an operation with value in ms, or
# state_bytes (the whole saved state), written_bytes (what the save after a
# processed commit wrote), peak_rss_kb, stopped), $SCALE_OUT/tables.md, and
# $SCALE_PLOTS/scale-{create,join,process}.png (gnuplot; Debian's
# gnuplot-nox is installed when missing and apt-get is usable).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NS="${SCALE_NS:-2 100 1000 10000 50000 100000}"
IMPLS="${SCALE_IMPLS:-hsmls openmls mls-rs}"
CUSTODY_NS="${SCALE_CUSTODY_NS:-100 1000 10000}"
RUN_TIMEOUT="${SCALE_RUN_TIMEOUT:-900}"
OP_LIMIT_MS="${SCALE_OP_LIMIT_MS:-60000}"
OUT="${SCALE_OUT:-target/scale}"
PLOTS="${SCALE_PLOTS:-docs/img}"

report() {
    local csv="$1/scale.csv" tables="$1/tables.md"
    awk -F, -f scripts/scale-tables.awk "$csv" >"$tables"
    echo "scale: tables in $tables" >&2
    plots "$csv"
}

plots() {
    local csv="$1"
    if ! command -v gnuplot >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            echo "scale: installing gnuplot-nox" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >/dev/null ||
                { echo "scale: could not install gnuplot-nox; no plots" >&2; return 0; }
        else
            echo "scale: no gnuplot; no plots" >&2
            return 0
        fi
    fi
    mkdir -p "$PLOTS"
    local data
    data="$(mktemp -d)"
    for op in create join update-process; do
        local name="${op#update-}" plot="" impl
        for impl in hsmls openmls mls-rs; do
            awk -F, -v impl="$impl" -v op="$op" \
                '$1 == impl && $2 == "software" && $4 == op { print $3, $5 / 1000 }' "$csv" |
                sort -n >"$data/$impl-$op.dat"
            if [ -s "$data/$impl-$op.dat" ]; then
                plot+="${plot:+, }'$data/$impl-$op.dat' using 1:2 with linespoints title '$impl'"
            fi
        done
        [ -n "$plot" ] || continue
        gnuplot <<EOF
set terminal pngcairo size 800,520 noenhanced font ",11"
set output '$PLOTS/scale-$name.png'
set logscale xy
set grid
set key top left
set xlabel 'members N'
set ylabel 'seconds'
set format y '%g'
set title '$op, suite 0x0002, one run per (implementation, N), release build'
plot $plot
EOF
        echo "scale: $PLOTS/scale-$name.png" >&2
    done
    rm -rf "$data"
}

if [[ "${1:-}" == "--report" ]]; then
    report "${2:-$OUT}"
    exit 0
fi

echo "== scale: building the scale bench (release)" >&2
bin="$(cargo build --release -p hsmls-peers --bench scale --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "scale: could not find the scale bench binary" >&2
    exit 1
fi

mkdir -p "$OUT"
csv="$OUT/scale.csv"
echo "impl,custody,n,metric,value,sign,dh,generate,import,destroy" >"$csv"
declare -A stopped

# One run: appends its lines to the CSV; returns 1 if the implementation
# should stop here (killed, failed, or an operation over the limit).
one_run() {
    local impl="$1" custody="$2" n="$3" log="$OUT/$1-$2-$3.log" rc=0
    echo "== scale: $impl ($custody) N = $n (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
    local started=$SECONDS
    timeout "$RUN_TIMEOUT" "$bin" "$n" all "--impl=$impl" "--custody=$custody" >"$log" 2>"$log.err" || rc=$?
    awk -v OFS=, '
        /^scale / {
            delete f
            for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            key = f["impl"] OFS f["custody"] OFS f["n"]
            if ("op" in f)
                print key, f["op"], f["time_ms"], f["sign"], f["dh"], f["generate"], f["import"], f["destroy"]
            if ("state_bytes" in f) print key, "state_bytes", f["state_bytes"] + f["epoch_record_bytes"]
            if ("written_bytes" in f) print key, "written_bytes", f["written_bytes"]
            if ("peak_rss" in f) { sub(/kB/, "", f["peak_rss"]); print key, "peak_rss_kb", f["peak_rss"] }
        }' "$log" >>"$csv"
    cat "$log" >&2
    echo "   ($((SECONDS - started)) s with setup)" >&2
    local reason=""
    if [ "$rc" -eq 124 ]; then
        reason="run killed after ${RUN_TIMEOUT} s"
    elif [ "$rc" -ne 0 ]; then
        reason="run failed (exit $rc, see $log.err)"
        tail -n 5 "$log.err" >&2
    else
        reason="$(awk -v limit="$OP_LIMIT_MS" '
            / op=/ { for (i = 1; i <= NF; i++) if ($i ~ /^time_ms=/) { t = substr($i, 9) + 0 }
                     for (i = 1; i <= NF; i++) if ($i ~ /^op=/) { op = substr($i, 4) }
                     if (t > limit) { printf "%s took %.1f s", op, t / 1000; exit } }' "$log")"
    fi
    if [ -n "$reason" ]; then
        echo "$impl,$custody,$n,stopped,\"$reason\"" >>"$csv"
        echo "   scale: $impl stops at N = $n: $reason" >&2
        return 1
    fi
    return 0
}

for n in $NS; do
    for impl in $IMPLS; do
        [ -z "${stopped[$impl]:-}" ] || continue
        # hsmls runs every N; a peer stops at the first N over the limit.
        if ! one_run "$impl" software "$n" && [ "$impl" != hsmls ]; then
            stopped[$impl]=1
        fi
    done
    if [[ " $IMPLS " == *" hsmls "* && " $CUSTODY_NS " == *" $n "* ]]; then
        one_run hsmls softhsm "$n" || true
    fi
done
echo "scale: CSV in $csv" >&2
report "$OUT"
