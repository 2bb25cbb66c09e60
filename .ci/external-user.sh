#!/usr/bin/env bash
# Builds and runs tests/external_user as a crate outside the repository (copied to a
# temporary directory, depending on rpc-core and rpc-transport-tcp by path).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$repo/tests/external_user/src" "$work/src"
sed "s|@REPO@|$repo|g" "$repo/tests/external_user/Cargo.toml.in" > "$work/Cargo.toml"
# Share the repository's target directory so dependencies are not built twice.
CARGO_TARGET_DIR="$repo/target/external-user" cargo run --quiet --manifest-path "$work/Cargo.toml"
