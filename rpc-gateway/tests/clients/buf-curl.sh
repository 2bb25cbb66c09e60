#!/usr/bin/env bash
# `buf curl` (the npm package @bufbuild/buf, unmodified) against the gateway: each protocol
# (Connect, gRPC, gRPC-Web), once with the exported .proto as its schema and once with the
# schema from the server's reflection (grpc.reflection.v1, then v1alpha), plus
# --list-services/--list-methods through reflection.
#
#   BUF=path/to/buf SHOP_URL=http://127.0.0.1:8080 PROTO_DIR=DIR bash buf-curl.sh
#
# ../run.sh buf sets BUF. One line per case (`ok   grpc schema add 64-bit`, `FAIL ...` with
# buf's output), then `N passed, N failed`; exit status 1 if any case failed.
set -uo pipefail

: "${SHOP_URL:?SHOP_URL must be set (e.g. http://127.0.0.1:8080)}"
: "${PROTO_DIR:?PROTO_DIR must be set (the directory holding shop.proto)}"
BUF="${BUF:-buf}"
ONLY="${ONLY:-}"
# buf keeps a cache (modules, well-known types); keep it out of $HOME when asked.
export BUF_CACHE_DIR="${BUF_CACHE_DIR:-${TMPDIR:-/tmp}/traitrpc-buf-cache}"

passed=0
failed=0
out=""
rc=0

# call ARGS...: runs `buf curl ARGS...`, keeping its output (stdout and stderr) in $out and
# a compact form (no whitespace) in $flat, its exit status in $rc.
call() {
    out="$("$BUF" curl "$@" 2>&1)"
    rc=$?
    flat="$(printf '%s' "$out" | tr -d ' \n\t')"
}

# expect LABEL WANT_RC(0|nonzero) SUBSTRING...: checks the last call.
expect() {
    local label="$1" want_rc="$2"
    shift 2
    local why=""
    if [ "$want_rc" = 0 ] && [ "$rc" -ne 0 ]; then
        why="exit status $rc"
    elif [ "$want_rc" = nonzero ] && [ "$rc" -eq 0 ]; then
        why="exit status 0, expected an error"
    fi
    local s
    for s in "$@"; do
        if [ -z "$why" ] && [[ "$flat" != *"$s"* ]]; then
            why="no $s in the output"
        fi
    done
    if [ -z "$why" ]; then
        passed=$((passed + 1))
        echo "ok   $label"
    else
        failed=$((failed + 1))
        echo "FAIL $label: $why; buf curl printed:"
        printf '%s\n' "$out" | head -40 | sed 's/^/    /'
    fi
}

# meta: the response metadata of the last call (run with -v), one line each,
# lowercased and without spaces: `header:NAME:VALUE` for a response header, `trailer:NAME:VALUE`
# for a trailer (an HTTP/2 trailer, or one from Connect's end-of-stream message or
# gRPC-Web's trailers message, which buf marks `[*]`). buf prints, per request N, the status
# line `< (#N) HTTP/...`, the headers, a bare `< (#N)`, and after the body another bare
# `< (#N)` and the trailers.
meta() {
    printf '%s\n' "$out" | awk '
        match($0, /^buf: < \(#[0-9]+\)/) {
            n = substr($0, 8, RLENGTH - 7)
            rest = substr($0, RLENGTH + 1)
            sub(/^ /, "", rest)
            if (rest ~ /^HTTP\//) { state[n] = "header"; next }
            if (rest == "") { if (state[n] == "header") state[n] = "trailer"; next }
            sub(/^\[\*\] /, "", rest)
            print state[n] ":" rest
        }' | tr -d ' \t' | tr 'A-Z' 'a-z'
}

# expect_meta LABEL LINE...: checks the last call (run with -v) succeeded and its response
# metadata (see meta) has each LINE.
expect_meta() {
    local label="$1"
    shift
    local why="" m s
    m="$(meta)"
    [ "$rc" -ne 0 ] && why="exit status $rc"
    for s in "$@"; do
        if [ -z "$why" ] && ! grep -qxF -- "$s" <<<"$m"; then
            why="no $s in the response metadata ($(tr '\n' ' ' <<<"$m"))"
        fi
    done
    if [ -z "$why" ]; then
        passed=$((passed + 1))
        echo "ok   $label"
    else
        failed=$((failed + 1))
        echo "FAIL $label: $why; buf curl printed:"
        printf '%s\n' "$out" | grep -v '^buf: [{}] ' | head -60 | sed 's/^/    /'
    fi
}

selected() { [ -z "$ONLY" ] || [[ "$1" == *"$ONLY"* ]]; }

ORDER='{"order": {"id": "0", "total": "-1234", "note": "fragile", "blob": "AAEC/v8=",
  "status": {"Moved": {"to": "Berlin"}}, "tags": ["a", "b"], "counts": {"apple": 3, "pear": 0}}}'
ACTIVE='{"order": {"id": "3", "total": "-500", "status": {"Active": {}}}}'

for protocol in connect grpc grpcweb; do
    for mode in schema reflection; do
        label="$protocol $mode"
        args=(--protocol "$protocol")
        if [ "$mode" = schema ]; then
            args+=(--schema "$PROTO_DIR/shop.proto")
        fi
        # gRPC needs HTTP/2 (h2c, prior knowledge); buf implies it for reflection too.
        [ "$protocol" = grpc ] && args+=(--http2-prior-knowledge)
        u="$SHOP_URL/shop.Orders"

        if selected "$label add 64-bit"; then
            call "${args[@]}" -d '{"a": "9007199254740993", "b": "1"}' "$u/add"
            expect "$label add 64-bit" 0 '{"result":"9007199254740994"}'
        fi
        if selected "$label place round trip"; then
            call "${args[@]}" -d "$ORDER" "$u/place"
            expect "$label place round trip (Moved)" 0 '"id":"7"' '"total":"-1234"' '"note":"fragile"' \
                '"blob":"AAEC/v8="' '"status":{"Moved":{"to":"Berlin"}}' '"tags":["a","b"]' '"apple":3' '"pear":0'
            call "${args[@]}" -d "$ACTIVE" "$u/place"
            expect "$label place round trip (Active -> Held)" 0 '"id":"7"' '"status":{"Held":"500"}'
        fi
        if selected "$label reserve error detail"; then
            call "${args[@]}" -d '{"item": "apple", "quantity": 11}' "$u/reserve"
            expect "$label reserve error detail" nonzero '"code":"failed_precondition"' \
                '"type":"google.protobuf.StringValue"' 'available' '10' 'apple'
        fi
        if selected "$label count stream"; then
            call "${args[@]}" -d '{"to": 3}' "$u/count"
            expect "$label count stream" 0 \
                '{"result":"1000000000000"}{"result":"2000000000000"}{"result":"3000000000000"}'
        fi
        if selected "$label count_then_fail"; then
            call "${args[@]}" -d '{"fail_after": 2}' "$u/count_then_fail"
            expect "$label count_then_fail" nonzero '{"result":1}{"result":2}' '"code":"aborted"'
        fi
        if selected "$label deadline"; then
            # buf's --timeout is the call's deadline, sent as Connect-Timeout-Ms / Grpc-Timeout.
            call "${args[@]}" --timeout 300ms -d '{"ms": "5000"}' "$u/sleep"
            expect "$label deadline" nonzero '"code":"deadline_exceeded"'
        fi
        # Request metadata in (x-shop-key), response metadata out: metadata's x-shop-reply
        # is a response header (Connect's HTTP header, gRPC's and gRPC-Web's initial
        # metadata); count's x-shop-count a trailer (Connect's end-of-stream metadata, an
        # HTTP/2 trailer, a line of gRPC-Web's trailers message).
        if selected "$label metadata both ways"; then
            call "${args[@]}" -v -H 'x-shop-key: hello' -d '{"key": "x-shop-key"}' "$u/metadata"
            expect "$label metadata both ways (request)" 0 '{"result":"hello"}'
            expect_meta "$label metadata both ways (response header)" 'header:x-shop-reply:reply-hello'
        fi
        if selected "$label metadata both ways stream"; then
            call "${args[@]}" -v -d '{"to": 3}' "$u/count"
            expect_meta "$label metadata both ways stream" 'trailer:x-shop-count:3'
        fi
    done
done

# Listing through reflection, with each protocol and each reflection version.
for protocol in connect grpc grpcweb; do
    for reflect in grpc-v1 grpc-v1alpha; do
        label="$protocol reflection $reflect"
        args=(--protocol "$protocol" --reflect-protocol "$reflect")
        if selected "$label list-services"; then
            call "${args[@]}" --list-services "$SHOP_URL"
            expect "$label list-services" 0 'shop.Orders'
        fi
        if selected "$label list-methods"; then
            call "${args[@]}" --list-methods "$SHOP_URL"
            expect "$label list-methods" 0 'shop.Orders/add' 'shop.Orders/count_then_fail' 'shop.Orders/metadata'
        fi
    done
done
# The schema's own listing (no server involved): the .proto buf reads is valid.
if selected "schema list-methods"; then
    call --schema "$PROTO_DIR/shop.proto" --list-methods
    expect "schema list-methods" 0 'shop.Orders/add' 'shop.Orders/sleep'
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
