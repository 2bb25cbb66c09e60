#!/usr/bin/env bash
# Runs every instrument of benches/README.md in one session and writes one Markdown report:
# the load generator's matrix (raw, raw-batched, rpc and optionally tarpc and tonic;
# allocations per round trip; idle-connection memory; small-call latency during a 100 MiB
# stream transfer) and the criterion micro-benchmarks. Run from anywhere; about 3 minutes
# once built.
#
#   bash benches/run.sh [--tarpc] [--tonic] [--stdout] [--out FILE]
#
#   --tarpc   also build and measure tarpc 0.38 (loadgen's `tarpc` feature)
#   --tonic   also build and measure tonic 0.14 (loadgen's `tonic` feature)
#   --stdout  print the report instead of writing it
#   --out     write the report to FILE (default: benches/RESULTS.md)
#
# Builds land in $CARGO_TARGET_DIR (default: target). Building is done first and is not
# part of the measured time; the matrix and the micro-benchmarks run back to back, so
# their figures are comparable.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
tarpc=0
tonic=0
out="$root/benches/RESULTS.md"
stdout=0
while [ $# -gt 0 ]; do
    case "$1" in
        --tarpc) tarpc=1 ;;
        --tonic) tonic=1 ;;
        --stdout) stdout=1 ;;
        --out) out="$2"; shift ;;
        *) echo "usage: bash benches/run.sh [--tarpc] [--tonic] [--stdout] [--out FILE]" >&2; exit 2 ;;
    esac
    shift
done
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac

feature_list=()
matrix_flags=()
if [ "$tarpc" = 1 ]; then
    feature_list+=(tarpc)
    matrix_flags+=(--tarpc)
fi
if [ "$tonic" = 1 ]; then
    feature_list+=(tonic)
    matrix_flags+=(--tonic)
fi
features=()
if [ ${#feature_list[@]} -gt 0 ]; then
    features=(--features "$(IFS=,; echo "${feature_list[*]}")")
fi

echo "== building (release: loadgen, criterion benches)" >&2
cargo build --release -p traitrpc-loadgen "${features[@]}" >&2
cargo bench -p traitrpc-workspace --bench codec --bench call --no-run >&2
loadgen="$target_dir/release/loadgen"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== loadgen matrix (about 2 minutes)" >&2
"$loadgen" matrix "${matrix_flags[@]}" --out "$work/matrix.md" >&2

echo "== criterion micro-benchmarks (about 1 minute)" >&2
cargo bench -p traitrpc-workspace --bench codec --bench call -- --output-format bencher \
    2>/dev/null | tee "$work/criterion.txt" >&2

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - started ))

# `test NAME ... bench: 1,234 ns/iter (+/- 56)` -> a Markdown row; 1 MiB rows get a rate.
criterion_table() {
    echo "| benchmark | median | ± | throughput |"
    echo "|---|---|---|---|"
    awk '/^test .* bench:/ {
        name = $2; ns = $5; dev = $8
        gsub(",", "", ns); gsub(",", "", dev); gsub(/\)/, "", dev)
        if (ns >= 100000) { t = sprintf("%.1f µs", ns / 1000); d = sprintf("%.1f µs", dev / 1000) }
        else if (ns >= 10000) { t = sprintf("%.2f µs", ns / 1000); d = sprintf("%.2f µs", dev / 1000) }
        else { t = sprintf("%d ns", ns); d = sprintf("%d ns", dev) }
        rate = ""
        if (name ~ /^1MiB\//) rate = sprintf("%.0f MiB/s", 1e9 / ns)
        printf "| `%s` | %s | %s | %s |\n", name, t, d, rate
    }' "$work/criterion.txt"
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- Cargo.toml Cargo.lock traitrpc-core traitrpc-macros traitrpc-transport-tcp benches 2>/dev/null; then
    commit="$commit (with uncommitted changes)"
fi

report() {
    echo "Run of \`bash benches/run.sh${matrix_flags[*]:+ ${matrix_flags[*]}}\` at $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit; ${elapsed} s for the matrix and the micro-benchmarks. Load average (1/5/15 min) before: ${load_before}, after: ${load_after}."
    echo
    echo "### Load generator"
    echo
    cat "$work/matrix.md"
    echo
    echo "### Micro-benchmarks (criterion, median of 30 samples)"
    echo
    criterion_table
}

if [ "$stdout" = 1 ]; then
    report
else
    report > "$out"
    echo "== wrote $out (${elapsed} s)" >&2
fi
