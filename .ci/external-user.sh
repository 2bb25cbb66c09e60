#!/usr/bin/env bash
# Builds and runs crates outside the repository that depend on the framework by path, as
# users' crates would: tests/external_user (the quick start, with the `traitrpc` facade) and
# tests/external_renamed (the facade under another name, `#[service(crate = "...")]`).
# Each is copied to a temporary directory with its own Cargo.toml.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for crate in external_user external_renamed; do
    mkdir -p "$work/$crate"
    cp -r "$repo/tests/$crate/src" "$work/$crate/src"
    sed "s|@REPO@|$repo|g" "$repo/tests/$crate/Cargo.toml.in" > "$work/$crate/Cargo.toml"
    # Share one target directory so dependencies are built once.
    CARGO_TARGET_DIR="$repo/target/external-user" cargo run --quiet --manifest-path "$work/$crate/Cargo.toml"
done

# The schema snapshot test, as a user runs it (docs/EVOLUTION.md): the first run writes the
# snapshot, the second finds it unchanged, and after a breaking edit of the trait (a
# parameter's sign) it fails naming the method.
user="$work/external_user"
test_user() { (cd "$user" && CARGO_TARGET_DIR="$repo/target/external-user" cargo test --quiet 2>&1); }
# Under CI a missing snapshot is an error (it would compare nothing):
if (export CI=true; test_user >/dev/null); then
    echo "a missing snapshot passed under CI"; exit 1
fi
# Locally the first run writes it.
(unset CI; test_user >/dev/null)
test -s "$user/schema/calculator.json" || { echo "the snapshot was not written"; exit 1; }
cp "$user/schema/calculator.json" "$work/first.json"
test_user >/dev/null
(export CI=true; test_user >/dev/null)
cmp "$user/schema/calculator.json" "$work/first.json"
sed -i 's/async fn add(&self, a: i64, b: i64) -> i64;/async fn add(\&self, a: u64, b: i64) -> i64;/' "$user/src/main.rs"
sed -i 's/async fn add(&self, a: i64, b: i64) -> i64 {/async fn add(\&self, a: u64, b: i64) -> i64 {\n        let a = a as i64;/' "$user/src/main.rs"
if out=$(test_user); then
    echo "a breaking change passed the snapshot test:"; echo "$out"; exit 1
fi
echo "$out" | grep -q "add: old client -> new server: BREAKING" || { echo "$out"; exit 1; }
echo "external user crate: the schema snapshot test caught a breaking change"

