#!/usr/bin/env bash
# Runs one suite of real protobuf clients against a running gateway serving the test shop
# (rpc-gateway/tests/support/shop.rs):
#
#   SHOP_URL=http://127.0.0.1:8080 PROTO_DIR=DIR bash rpc-gateway/tests/clients/run.sh SUITE
#
# SUITE is one of
#   node    Connect's Node clients (@connectrpc/connect-node: Connect JSON and binary,
#           gRPC, gRPC-Web), code from protoc-gen-es through `buf generate` (node/)
#   python  grpcio and connectrpc, code from grpcio-tools' protoc (python/)
#   buf     `buf curl`, with the schema and with server reflection (buf-curl.sh)
# PROTO_DIR holds the exported shop.proto (the `shop` example's --proto DIR writes it).
#
# Dependencies come from npm and PyPI only, pinned (node/package-lock.json,
# python/requirements.txt), and are installed on first use into a cache outside the
# source tree: target/clients/ (or $TRAITRPC_CLIENTS_DIR): node/node_modules and a Python
# venv. Later runs reuse it and need no network. `.ci/clients.sh` installs the same ahead.
# `install` as SUITE only installs (what .ci/clients.sh calls).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cache="${TRAITRPC_CLIENTS_DIR:-$root/target/clients}"
suite="${1:-}"

die() {
    echo "run.sh: $*" >&2
    exit 2
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is not installed ($2)"
}

# Installs run under a lock: the Rust tests run the suites in parallel.
with_lock() {
    mkdir -p "$cache"
    exec 9>"$cache/.install.lock"
    flock 9
    "$@"
    flock -u 9
}

install_node() {
    need node "Node.js 20 or newer"
    need npm "npm, with Node.js"
    local dir="$cache/node"
    if [ -x "$dir/node_modules/.bin/buf" ] && cmp -s "$here/node/package-lock.json" "$dir/.installed-lock"; then
        return
    fi
    echo "run.sh: installing the npm packages (node/package-lock.json) into $dir" >&2
    mkdir -p "$dir"
    cp "$here/node/package.json" "$here/node/package-lock.json" "$dir/"
    # --ignore-scripts: buf's postinstall only swaps its launcher for the binary; the
    # launcher runs the binary from its platform package as well.
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
    "$dir/node_modules/.bin/buf" --version >/dev/null
    cp "$here/node/package-lock.json" "$dir/.installed-lock"
}

install_python() {
    need python3 "Python 3.11 or newer, with venv"
    local venv="$cache/venv"
    if [ -x "$venv/bin/python" ] && cmp -s "$here/python/requirements.txt" "$venv/.installed-requirements"; then
        return
    fi
    echo "run.sh: installing the PyPI packages (python/requirements.txt) into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/python/requirements.txt" >&2
    cp "$here/python/requirements.txt" "$venv/.installed-requirements"
}

case "$suite" in
install)
    with_lock install_node
    with_lock install_python
    exit 0
    ;;
node | python | buf) ;;
*) die "usage: run.sh node|python|buf|install (with SHOP_URL and PROTO_DIR set)" ;;
esac

: "${SHOP_URL:?SHOP_URL must be set (e.g. http://127.0.0.1:8080)}"
: "${PROTO_DIR:?PROTO_DIR must be set (the directory holding shop.proto)}"
[ -f "$PROTO_DIR/shop.proto" ] || die "no shop.proto in $PROTO_DIR"
PROTO_DIR="$(cd "$PROTO_DIR" && pwd)"
export SHOP_URL PROTO_DIR
export BUF_CACHE_DIR="$cache/buf-cache"

case "$suite" in
node)
    with_lock install_node
    # A directory of this run's own beside node_modules/ (Node resolves packages from the
    # importing file's ancestors): the test, buf.gen.yaml and the generated code.
    work="$(mktemp -d "$cache/node/run.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    cp "$here/node/test.mjs" "$here/node/buf.gen.yaml" "$work/"
    (cd "$work" && PATH="$cache/node/node_modules/.bin:$PATH" buf generate --template buf.gen.yaml "$PROTO_DIR")
    [ -f "$work/gen/shop_pb.js" ] || die "buf generate wrote no gen/shop_pb.js"
    cd "$work"
    node test.mjs
    ;;
python)
    with_lock install_python
    "$cache/venv/bin/python" "$here/python/test_clients.py"
    ;;
buf)
    with_lock install_node
    BUF="$cache/node/node_modules/.bin/buf" bash "$here/buf-curl.sh"
    ;;
esac
