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

# A loopback port nothing listens on, below the kernel's ephemeral range so that no
# outgoing connection holds it either (best effort: the start below retries on a clash).
_etcd_free_port() {
    local port low
    low="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    [ "$low" -gt 12000 ] || low=32768
    while :; do
        port=$((10000 + RANDOM % (low - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

stop_etcd() {
    if [ -n "${_etcd_pid:-}" ]; then
        kill "$_etcd_pid" 2>/dev/null || true
        wait "$_etcd_pid" 2>/dev/null || true
        _etcd_pid=""
    fi
    rm -rf "${_etcd_dir:-/nonexistent}"
}

# Starts etcd on two fresh ports and waits (up to 20 s) until it reports itself healthy.
# Returns 1 if it exited or never became healthy (its log stays in $_etcd_dir/etcd.log).
_etcd_start() {
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
    local reply
    for _ in $(seq 1 200); do
        if reply="$( (exec 3<>"/dev/tcp/127.0.0.1/$_etcd_client_port" &&
            printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3) 2>/dev/null)" &&
            [[ "$reply" == *'"health":"true"'* ]]; then
            return 0
        fi
        kill -0 "$_etcd_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# A port can be taken between the check and etcd's bind: try a few fresh pairs.
_etcd_healthy=""
for _etcd_attempt in 1 2 3 4 5; do
    if _etcd_start; then
        _etcd_healthy=1
        break
    fi
    echo "etcd did not start (attempt $_etcd_attempt); its log:" >&2
    tail -5 "$_etcd_dir/etcd.log" >&2 || true
    stop_etcd
done
if [ -z "$_etcd_healthy" ]; then
    echo "etcd did not start after 5 attempts" >&2
    return 1 2>/dev/null || exit 1
fi
export RPC_TEST_ETCD="http://127.0.0.1:$_etcd_client_port"
echo "etcd $(etcd --version | head -1 | awk '{print $3}') listening at $RPC_TEST_ETCD"
