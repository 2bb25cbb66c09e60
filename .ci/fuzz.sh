#!/usr/bin/env bash
# Fuzz smoke run: builds the cargo-fuzz targets in fuzz/ (on stable, via RUSTC_BOOTSTRAP)
# and runs each for a bounded time from its checked-in seed corpus. A crash fails the run
# and prints the input as hex; turn it into a regression test, fix, and add it to
# fuzz/corpus/<target>/. New corpus entries go to a scratch directory, not the repository.
#
#   FUZZ_SECONDS=30 bash .ci/fuzz.sh [target ...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-30}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

echo "== cargo fuzz build"
cargo fmt --check
cargo fuzz build

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "$scratch/$target"
    if ! cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=20 -print_final_stats=1 2>"$scratch/$target.log"; then
        grep -v '^#' "$scratch/$target.log" | tail -60
        for crash in artifacts/"$target"/*; do
            [ -f "$crash" ] || continue
            echo "-- failing input $crash ($(wc -c <"$crash") bytes):"
            od -An -tx1 -v "$crash" | head -40
        done
        echo "fuzz target $target FAILED"
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/$target.log" || true
    echo "corpus: $(ls "$scratch/$target" | wc -l) new inputs, $(ls "corpus/$target" | wc -l) seeds"
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
