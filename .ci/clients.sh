#!/usr/bin/env bash
# Installs the real protobuf clients the gateway's client tests run
# (rpc-gateway/tests/clients.rs, through rpc-gateway/tests/clients/run.sh): the pinned npm
# packages (Connect's Node clients, protoc-gen-es, buf) and a Python venv (grpcio,
# grpcio-tools, connectrpc), into target/clients/ (or $TRAITRPC_CLIENTS_DIR). From npm and
# PyPI only; nothing is done when what is installed matches the pins. Needs Node.js 20+
# with npm and Python 3.11+ with venv (both on the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash rpc-gateway/tests/clients/run.sh install
echo "clients: npm and PyPI packages ready in ${TRAITRPC_CLIENTS_DIR:-target/clients} ($((SECONDS - start)) s)"
