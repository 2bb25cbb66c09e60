# Sourced by .ci/run (bash). Installs, from Debian's packages and only if missing, the
# real servers and tools the tests talk to:
#   - etcd-server: registration and discovery (traitrpc-discovery's etcd tests);
#   - prometheus: the real-Prometheus scrape test (rpc-observability/tests/prometheus.rs);
#   - curl: the HTTP gateway tests (rpc-gateway/tests/gateway.rs);
#   - openssl: the README's certificate recipe, run as written (tests/tls.rs);
#   - chromium (and a font): the browser test (examples/tests/browser.rs);
#   - openapi-spec-validator (pip): the gateway's OpenAPI document is checked with it.
# One `apt-get update`, then one `apt-get install` of whatever is missing.

_tools_missing=()
command -v etcd >/dev/null 2>&1 || _tools_missing+=(etcd-server)
command -v prometheus >/dev/null 2>&1 || _tools_missing+=(prometheus)
command -v curl >/dev/null 2>&1 || _tools_missing+=(curl)
command -v openssl >/dev/null 2>&1 || _tools_missing+=(openssl)
command -v chromium >/dev/null 2>&1 || _tools_missing+=(chromium fonts-dejavu-core)
if [ "${#_tools_missing[@]}" -gt 0 ]; then
    _tools_sudo=""
    [ "$(id -u)" -ne 0 ] && _tools_sudo="sudo"
    echo "installing ${_tools_missing[*]}"
    $_tools_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $_tools_sudo apt-get install -y -qq --no-install-recommends \
        "${_tools_missing[@]}" >/dev/null
fi

# The gateway's OpenAPI document is checked with openapi-spec-validator (PyPI).
if ! python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
    echo "installing openapi-spec-validator (pip)"
    python3 -m pip install -q openapi-spec-validator >/dev/null
fi
