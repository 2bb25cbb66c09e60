# Sourced by .ci/run (bash). Makes what traitrpc-discovery's tests need available:
#   - installs `etcd-server` from Debian's packages if it is missing;
#   - starts a single-node etcd on free loopback ports with a temporary data directory;
#   - exports RPC_TEST_ETCD=http://127.0.0.1:PORT for the tests;
#   - defines `stop_etcd`, which stops it and removes the data directory (the caller
#     installs it as an EXIT trap).
# Locally: `source .ci/etcd.sh; trap stop_etcd EXIT; cargo test -p traitrpc-discovery`.

_etcd_missing=()
command -v etcd >/dev/null 2>&1 || _etcd_missing+=(etcd-server)
if [ "${#_etcd_missing[@]}" -gt 0 ]; then
    _etcd_sudo=""
    [ "$(id -u)" -ne 0 ] && _etcd_sudo="sudo"
    echo "installing ${_etcd_missing[*]}"
    $_etcd_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $_etcd_sudo apt-get install -y -qq "${_etcd_missing[@]}" >/dev/null
fi

# A loopback port nothing listens on (best effort; etcd fails loudly if it is taken).
_etcd_free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

_etcd_client_port="$(_etcd_free_port)"
_etcd_peer_port="$(_etcd_free_port)"
while [ "$_etcd_peer_port" = "$_etcd_client_port" ]; do _etcd_peer_port="$(_etcd_free_port)"; done
_etcd_dir="$(mktemp -d)"
etcd --name rpc-ci --data-dir "$_etcd_dir/data" \
    --listen-client-urls "http://127.0.0.1:$_etcd_client_port" \
    --advertise-client-urls "http://127.0.0.1:$_etcd_client_port" \
    --listen-peer-urls "http://127.0.0.1:$_etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$_etcd_peer_port" \
    --initial-cluster "rpc-ci=http://127.0.0.1:$_etcd_peer_port" \
    >"$_etcd_dir/etcd.log" 2>&1 &
_etcd_pid=$!

stop_etcd() {
    if [ -n "${_etcd_pid:-}" ]; then
        kill "$_etcd_pid" 2>/dev/null || true
        wait "$_etcd_pid" 2>/dev/null || true
        _etcd_pid=""
    fi
    rm -rf "${_etcd_dir:-/nonexistent}"
}

# Wait (up to 20 s) until etcd reports itself healthy.
_etcd_healthy=""
for _ in $(seq 1 200); do
    if _etcd_reply="$( (exec 3<>"/dev/tcp/127.0.0.1/$_etcd_client_port" &&
        printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3) 2>/dev/null)" &&
        [[ "$_etcd_reply" == *'"health":"true"'* ]]; then
        _etcd_healthy=1
        break
    fi
    kill -0 "$_etcd_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$_etcd_healthy" ]; then
    echo "etcd did not start; its log:" >&2
    cat "$_etcd_dir/etcd.log" >&2 || true
    stop_etcd
    return 1 2>/dev/null || exit 1
fi
export RPC_TEST_ETCD="http://127.0.0.1:$_etcd_client_port"
echo "etcd $(etcd --version | head -1 | awk '{print $3}') listening at $RPC_TEST_ETCD"
