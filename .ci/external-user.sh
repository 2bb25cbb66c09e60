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
