"""grpcio and connectrpc (Connect's Python client), unmodified, against the gateway.

Run by `../run.sh python` in the venv it installs from requirements.txt:

    SHOP_URL=http://127.0.0.1:8080 PROTO_DIR=/dir/with/shop.proto python test_clients.py

The client code is generated from the exported .proto into a temporary directory with
`python -m grpc_tools.protoc` (grpcio-tools' own protoc): `--python_out`,
`--grpc_python_out`, and `--connectrpc_out` (protoc-gen-connectrpc, with
`protobuf=google` so both clients share Google's protobuf messages).

Clients: grpcio (gRPC over HTTP/2 cleartext; grpcio-status reads the error details,
grpcio-reflection's descriptor database reads the schema by reflection) and connectrpc with each protocol it speaks
(Connect binary and JSON, gRPC, gRPC-Web). One line per case (`ok   grpcio add 64-bit`,
`FAIL ...`), then `N passed, N failed`; exit status 1 if any case failed.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from urllib.parse import urlparse

SHOP_URL = os.environ.get("SHOP_URL")
PROTO_DIR = os.environ.get("PROTO_DIR")
if not SHOP_URL or not PROTO_DIR:
    sys.exit("SHOP_URL and PROTO_DIR must be set")
ONLY = os.environ.get("ONLY", "")


def generate(out: Path) -> None:
    pkg = out / "shopgen"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    plugin = Path(sys.executable).parent / "protoc-gen-connectrpc"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={pkg}",
        f"--grpc_python_out={pkg}",
        f"--plugin=protoc-gen-connectrpc={plugin}",
        f"--connectrpc_out={pkg}",
        "--connectrpc_opt=protobuf=google",
        str(Path(PROTO_DIR) / "shop.proto"),
    ]
    subprocess.run(cmd, check=True)


gen_dir = Path(tempfile.mkdtemp(prefix="traitrpc-pyclients-"))
atexit.register(shutil.rmtree, gen_dir, ignore_errors=True)
generate(gen_dir)
sys.path.insert(0, str(gen_dir))
# One module for the messages: grpc's stub imports `shop_pb2` at the top level, Connect's
# imports it relative to its package.
pb = importlib.import_module("shopgen.shop_pb2")
sys.modules["shop_pb2"] = pb
pb_grpc = importlib.import_module("shopgen.shop_pb2_grpc")
pb_connect = importlib.import_module("shopgen.shop_connect")

import grpc  # noqa: E402
from google.protobuf import wrappers_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from connectrpc.client import ResponseMetadata  # noqa: E402
from connectrpc.code import Code  # noqa: E402
from connectrpc.compat import google_protobuf_json_codec  # noqa: E402
from connectrpc.compression.gzip import GzipCompression  # noqa: E402
from connectrpc.errors import ConnectError  # noqa: E402
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType  # noqa: E402
from connectrpc.protocol import ProtocolType  # noqa: E402
from pyqwest import HTTPVersion, SyncClient, SyncHTTPTransport  # noqa: E402


class Failure(Exception):
    pass


def eq(actual, expected, what):
    if actual != expected:
        raise Failure(f"{what}: got {actual!r}, want {expected!r}")


def check(cond, what):
    if not cond:
        raise Failure(what)


def sample_order():
    return pb.Order(
        id=0,
        total=-1234,
        note="fragile",
        blob=bytes([0, 1, 2, 254, 255]),
        status=pb.Status(Moved=pb.Status.MovedFields(to="Berlin")),
        tags=["a", "b c", "ü"],
        counts={"apple": 3, "pear": 0, "": 9},
    )


def active_order():
    order = pb.Order(id=3, total=-500, blob=b"")
    order.status.Active.SetInParent()
    return order


def expect_place(sent, got):
    want = pb.Order()
    want.CopyFrom(sent)
    want.id = 7
    if sent.status.WhichOneof("variant") == "Active":
        want.status.Held = abs(sent.total)
    eq(got, want, "place")


def reserve_detail_json(detail_bytes: bytes):
    return json.loads(wrappers_pb2.StringValue.FromString(detail_bytes).value)


# ---------------------------------------------------------------------------------------
# grpcio: gRPC over HTTP/2 cleartext (prior knowledge).

target = urlparse(SHOP_URL).netloc
channel = grpc.insecure_channel(target)
stub = pb_grpc.OrdersStub(channel)


def grpc_error(f) -> grpc.RpcError:
    try:
        got = f()
    except grpc.RpcError as e:
        return e
    raise Failure(f"expected an error, got {got!r}")


def describe_grpc(e: grpc.RpcError) -> str:
    return f"{e.code()} {e.details()!r} trailing={e.trailing_metadata()!r}"


def grpcio_add():
    eq(stub.add(pb.OrdersAddRequest(a=9007199254740993, b=1)).result, 9007199254740994, "add")
    eq(stub.add(pb.OrdersAddRequest(a=-(2**63) + 1, b=-1)).result, -(2**63), "add(min)")
    eq(stub.add(pb.OrdersAddRequest()).result, 0, "add(0, 0)")


def grpcio_place():
    for sent in (sample_order(), active_order()):
        expect_place(sent, stub.place(pb.OrdersPlaceRequest(order=sent)).result)


def grpcio_reserve():
    eq(stub.reserve(pb.OrdersReserveRequest(item="apple", quantity=3)).result, 3, "reserve(3)")
    e = grpc_error(lambda: stub.reserve(pb.OrdersReserveRequest(item="apple", quantity=11)))
    eq(e.code(), grpc.StatusCode.FAILED_PRECONDITION, f"code ({describe_grpc(e)})")
    status = rpc_status.from_call(e)
    check(status is not None, f"no grpc-status-details-bin ({describe_grpc(e)})")
    eq(status.code, grpc.StatusCode.FAILED_PRECONDITION.value[0], "google.rpc.Status code")
    eq(len(status.details), 1, f"details {status.details!r}")
    detail = status.details[0]
    eq(detail.type_url, "type.googleapis.com/google.protobuf.StringValue", "detail type")
    eq(reserve_detail_json(detail.value), {"item": "apple", "available": 10}, "detail")


def grpcio_count():
    got = [r.result for r in stub.count(pb.OrdersCountRequest(to=4))]
    eq(got, [n * 10**12 for n in range(1, 5)], "count(4)")
    eq(list(stub.count(pb.OrdersCountRequest(to=0))), [], "count(0)")


def grpcio_count_then_fail():
    got = []
    e = grpc_error(lambda: [got.append(r.result) for r in stub.count_then_fail(pb.OrdersCountThenFailRequest(fail_after=3))])
    eq(got, [1, 2, 3], "items before the failure")
    eq(e.code(), grpc.StatusCode.ABORTED, f"code ({describe_grpc(e)})")
    check("failed on purpose" in (e.details() or ""), f"message {e.details()!r}")


def grpcio_deadline():
    eq(stub.sleep(pb.OrdersSleepRequest(ms=10), timeout=5).result, 10, "sleep(10)")
    start = time.monotonic()
    e = grpc_error(lambda: stub.sleep(pb.OrdersSleepRequest(ms=5000), timeout=0.3))
    took = time.monotonic() - start
    eq(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, f"code ({describe_grpc(e)})")
    check(took < 3, f"took {took:.2f} s")


def describe_grpc_meta(call) -> str:
    return f"initial={call.initial_metadata()!r} trailing={call.trailing_metadata()!r}"


def grpcio_metadata():
    """Request metadata in (x-shop-key), response metadata out: x-shop-reply as initial
    metadata (a response header)."""
    r, call = stub.metadata.with_call(pb.OrdersMetadataRequest(key="x-shop-key"), metadata=[("x-shop-key", "hello")])
    check(r.HasField("result"), "result unset")
    eq(r.result, "hello", "metadata")
    eq(dict(call.initial_metadata()).get("x-shop-reply"), "reply-hello", f"x-shop-reply ({describe_grpc_meta(call)})")
    r, call = stub.metadata.with_call(pb.OrdersMetadataRequest(key="x-absent"))
    check(not r.HasField("result"), f"result set: {r.result!r}")
    eq(dict(call.initial_metadata()).get("x-shop-reply"), "reply-none", f"x-shop-reply, absent key ({describe_grpc_meta(call)})")


def grpcio_metadata_stream():
    """count's x-shop-count arrives as trailing metadata, after the items."""
    for to in (3, 0):
        call = stub.count(pb.OrdersCountRequest(to=to))
        eq(len(list(call)), to, f"count({to}) items")
        eq(dict(call.trailing_metadata()).get("x-shop-count"), str(to), f"x-shop-count of count({to}) ({describe_grpc_meta(call)})")


def grpcio_unknown():
    nope = channel.unary_unary(
        "/shop.Orders/nope",
        request_serializer=pb.OrdersAddRequest.SerializeToString,
        response_deserializer=pb.OrdersAddResponse.FromString,
    )
    e = grpc_error(lambda: nope(pb.OrdersAddRequest(a=1, b=2), timeout=5))
    eq(e.code(), grpc.StatusCode.UNIMPLEMENTED, f"code ({describe_grpc(e)})")
    nope_stream = channel.unary_stream(
        "/shop.Orders/nope_stream",
        request_serializer=pb.OrdersCountRequest.SerializeToString,
        response_deserializer=pb.OrdersCountResponse.FromString,
    )
    e = grpc_error(lambda: list(nope_stream(pb.OrdersCountRequest(to=1), timeout=5)))
    eq(e.code(), grpc.StatusCode.UNIMPLEMENTED, f"stream code ({describe_grpc(e)})")


def grpcio_compression():
    order = sample_order()
    order.note = "x" * 5000
    order.tags.extend(f"tag {i}" for i in range(200))
    r = stub.place(pb.OrdersPlaceRequest(order=order), compression=grpc.Compression.Gzip)
    expect_place(order, r.result)
    got = [r.result for r in stub.count(pb.OrdersCountRequest(to=2), compression=grpc.Compression.Gzip)]
    eq(got, [10**12, 2 * 10**12], "count(2), gzipped")
    # A channel that compresses every call.
    with grpc.insecure_channel(target, compression=grpc.Compression.Gzip) as gz:
        eq(pb_grpc.OrdersStub(gz).add(pb.OrdersAddRequest(a=2**40, b=2**40)).result, 2**41, "add, gzip channel")


def grpcio_reflection():
    """grpcio-reflection's descriptor database (grpc.reflection.v1alpha) builds the schema."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    db = ProtoReflectionDescriptorDatabase(channel)
    services = list(db.get_services())
    check("shop.Orders" in services, f"services {services}")
    pool = DescriptorPool(db)
    svc = pool.FindServiceByName("shop.Orders")
    eq(
        [m.name for m in svc.methods],
        ["add", "place", "reserve", "count", "count_then_fail", "sleep", "metadata"],
        "methods",
    )
    check(svc.methods_by_name["count"].server_streaming, "count is a server stream")
    order = pool.FindMessageTypeByName("shop.Order")
    eq(sorted(f.name for f in order.fields), sorted(pb.Order.DESCRIPTOR.fields_by_name), "shop.Order's fields")


def grpcio_reflection_listed_services_resolve():
    """Every service list_services names can be resolved (what `buf curl --list-methods`
    and grpcurl's `list` do)."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    db = ProtoReflectionDescriptorDatabase(channel)
    pool = DescriptorPool(db)
    for name in db.get_services():
        try:
            pool.FindServiceByName(name)
        except KeyError as e:
            raise Failure(f"list_services names {name}, which does not resolve: {e}") from None


def grpcio_reflection_v1():
    """grpc.reflection.v1 (the same messages as v1alpha, under another service name)."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2 as r

    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=r.ServerReflectionRequest.SerializeToString,
        response_deserializer=r.ServerReflectionResponse.FromString,
    )
    requests = [
        r.ServerReflectionRequest(list_services=""),
        r.ServerReflectionRequest(file_containing_symbol="shop.Orders"),
        r.ServerReflectionRequest(file_containing_symbol="shop.NoSuchThing"),
    ]
    listed, found, missing = info(iter(requests), timeout=10)
    check("shop.Orders" in [s.name for s in listed.list_services_response.service], f"list: {listed}")
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in found.file_descriptor_response.file_descriptor_proto]
    eq(sorted(f.name for f in files), ["google/protobuf/empty.proto", "shop.proto"], "files")
    eq(missing.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0], f"unknown symbol: {missing}")


# ---------------------------------------------------------------------------------------
# connectrpc: Connect (binary, JSON), gRPC and gRPC-Web.


class SpyTransport:
    """A pyqwest transport that records each request's method, URL and headers."""

    def __init__(self, inner):
        self.inner = inner
        self.sent = []

    def execute_sync(self, request):
        self.sent.append((request.method, request.url, dict(request.headers.items())))
        return self.inner.execute_sync(request)


HTTP1 = SyncHTTPTransport(http_version=HTTPVersion.HTTP1)
HTTP2 = SyncHTTPTransport(http_version=HTTPVersion.HTTP2)

CONNECT_FLAVOURS = {
    "connect-proto": dict(protocol=ProtocolType.CONNECT, http=HTTP1),
    "connect-json": dict(protocol=ProtocolType.CONNECT, http=HTTP1, codec=google_protobuf_json_codec()),
    "connect-proto-h2": dict(protocol=ProtocolType.CONNECT, http=HTTP2),
    "grpc": dict(protocol=ProtocolType.GRPC, http=HTTP2),
    "grpc-web": dict(protocol=ProtocolType.GRPC_WEB, http=HTTP1),
}


def connect_client(flavour: str, spy: SpyTransport | None = None, **kw):
    f = dict(CONNECT_FLAVOURS[flavour])
    http = f.pop("http")
    # No request compression unless asked for (the client gzips by default).
    kw.setdefault("send_compression", None)
    return pb_connect.OrdersClientSync(
        SHOP_URL, http_client=SyncClient(spy or http), **f, **kw
    )


def connect_error(f) -> ConnectError:
    try:
        got = f()
    except ConnectError as e:
        return e
    raise Failure(f"expected an error, got {got!r}")


def describe_connect(e: ConnectError) -> str:
    return f"{e.code} {e.message!r} details={[d.type_name for d in e.details]}"


def cx_add(flavour):
    c = connect_client(flavour)
    eq(c.add(pb.OrdersAddRequest(a=9007199254740993, b=1)).result, 9007199254740994, "add")
    eq(c.add(pb.OrdersAddRequest(a=-(2**63) + 1, b=-1)).result, -(2**63), "add(min)")
    eq(c.add(pb.OrdersAddRequest()).result, 0, "add(0, 0)")


def cx_place(flavour):
    c = connect_client(flavour)
    for sent in (sample_order(), active_order()):
        expect_place(sent, c.place(pb.OrdersPlaceRequest(order=sent)).result)


def cx_reserve(flavour):
    c = connect_client(flavour)
    eq(c.reserve(pb.OrdersReserveRequest(item="apple", quantity=3)).result, 3, "reserve(3)")
    e = connect_error(lambda: c.reserve(pb.OrdersReserveRequest(item="apple", quantity=11)))
    eq(e.code, Code.FAILED_PRECONDITION, f"code ({describe_connect(e)})")
    eq([d.type_name for d in e.details], ["google.protobuf.StringValue"], "detail types")
    eq(reserve_detail_json(e.details[0].message_bytes), {"item": "apple", "available": 10}, "detail")


def cx_get(flavour):
    if not flavour.startswith("connect"):
        return "skip"
    spy = SpyTransport(CONNECT_FLAVOURS[flavour]["http"])
    c = connect_client(flavour, spy)
    eq(c.add(pb.OrdersAddRequest(a=9007199254740993, b=2), use_get=True).result, 9007199254740995, "GET add")
    r = c.metadata(pb.OrdersMetadataRequest(key="x-shop-key"), headers={"x-shop-key": "by get"}, use_get=True)
    eq(r.result, "by get", "GET metadata")
    eq([m for m, _, _ in spy.sent], ["GET", "GET"], "HTTP methods")
    check("/shop.Orders/add?" in spy.sent[0][1], f"URL {spy.sent[0][1]}")


def cx_count(flavour):
    c = connect_client(flavour)
    eq([r.result for r in c.count(pb.OrdersCountRequest(to=4))], [n * 10**12 for n in range(1, 5)], "count(4)")
    eq(list(c.count(pb.OrdersCountRequest(to=0))), [], "count(0)")


def cx_count_then_fail(flavour):
    c = connect_client(flavour)
    got = []

    def run():
        for r in c.count_then_fail(pb.OrdersCountThenFailRequest(fail_after=3)):
            got.append(r.result)

    e = connect_error(run)
    eq(got, [1, 2, 3], "items before the failure")
    eq(e.code, Code.ABORTED, f"code ({describe_connect(e)})")
    check("failed on purpose" in e.message, f"message {e.message!r}")


def cx_deadline(flavour):
    c = connect_client(flavour)
    eq(c.sleep(pb.OrdersSleepRequest(ms=10), timeout_ms=5000).result, 10, "sleep(10)")
    start = time.monotonic()
    e = connect_error(lambda: c.sleep(pb.OrdersSleepRequest(ms=5000), timeout_ms=300))
    took = time.monotonic() - start
    eq(e.code, Code.DEADLINE_EXCEEDED, f"code ({describe_connect(e)})")
    check(took < 3, f"took {took:.2f} s")


def describe_cx_meta(meta: ResponseMetadata) -> str:
    return f"headers={dict(meta.headers.allitems())!r} trailers={dict(meta.trailers.allitems())!r}"


def cx_metadata(flavour):
    c = connect_client(flavour)
    with ResponseMetadata() as meta:
        r = c.metadata(pb.OrdersMetadataRequest(key="x-shop-key"), headers={"x-shop-key": "hello"})
    eq(r.result, "hello", "metadata")
    eq(meta.headers.get("x-shop-reply"), "reply-hello", f"x-shop-reply ({describe_cx_meta(meta)})")
    with ResponseMetadata() as meta:
        r = c.metadata(pb.OrdersMetadataRequest(key="x-absent"))
    check(not r.HasField("result"), f"result set: {r.result!r}")
    eq(meta.headers.get("x-shop-reply"), "reply-none", f"x-shop-reply, absent key ({describe_cx_meta(meta)})")
    if flavour.startswith("connect"):
        with ResponseMetadata() as meta:
            r = c.metadata(pb.OrdersMetadataRequest(key="x-shop-key"), headers={"x-shop-key": "by get"}, use_get=True)
        eq(r.result, "by get", "GET metadata")
        eq(meta.headers.get("x-shop-reply"), "reply-by get", f"x-shop-reply of a GET ({describe_cx_meta(meta)})")


def cx_metadata_stream(flavour):
    c = connect_client(flavour)
    for to in (3, 0):
        with ResponseMetadata() as meta:
            got = list(c.count(pb.OrdersCountRequest(to=to)))
        eq(len(got), to, f"count({to}) items")
        eq(meta.trailers.get("x-shop-count"), str(to), f"x-shop-count of count({to}) ({describe_cx_meta(meta)})")


def cx_unknown(flavour):
    c = connect_client(flavour)
    nope = MethodInfo(
        name="nope",
        service_name="shop.Orders",
        input=pb.OrdersAddRequest,
        output=pb.OrdersAddResponse,
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.UNARY,
    )
    e = connect_error(lambda: c.execute_unary(request=pb.OrdersAddRequest(a=1, b=2), method=nope))
    eq(e.code, Code.UNIMPLEMENTED, f"code ({describe_connect(e)})")
    nope_stream = MethodInfo(
        name="nope_stream",
        service_name="shop.Orders",
        input=pb.OrdersCountRequest,
        output=pb.OrdersCountResponse,
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.SERVER_STREAM,
    )
    e = connect_error(lambda: list(c.execute_server_stream(request=pb.OrdersCountRequest(to=1), method=nope_stream)))
    eq(e.code, Code.UNIMPLEMENTED, f"stream code ({describe_connect(e)})")


def cx_compression(flavour):
    spy = SpyTransport(CONNECT_FLAVOURS[flavour]["http"])
    # The client's default: gzip requests.
    c = pb_connect.OrdersClientSync(
        SHOP_URL,
        http_client=SyncClient(spy),
        **{k: v for k, v in CONNECT_FLAVOURS[flavour].items() if k != "http"},
    )
    order = sample_order()
    order.note = "x" * 5000
    order.tags.extend(f"tag {i}" for i in range(200))
    expect_place(order, c.place(pb.OrdersPlaceRequest(order=order)).result)
    eq([r.result for r in c.count(pb.OrdersCountRequest(to=2))], [10**12, 2 * 10**12], "count(2)")
    headers = {k.lower(): v for k, v in spy.sent[0][2].items()}
    stream_headers = {k.lower(): v for k, v in spy.sent[1][2].items()}
    if flavour.startswith("connect"):
        eq(headers.get("content-encoding"), "gzip", f"unary request headers {headers}")
        eq(stream_headers.get("connect-content-encoding"), "gzip", f"stream request headers {stream_headers}")
        # A GET carries its gzipped message in the query (compression=gzip).
        r = c.add(pb.OrdersAddRequest(a=9007199254740993, b=3), use_get=True)
        eq(r.result, 9007199254740996, "GET add, gzip")
        method, url, _ = spy.sent[2]
        check(method == "GET" and "compression=gzip" in url, f"GET request {method} {url}")
    else:
        eq(headers.get("grpc-encoding"), "gzip", f"request headers {headers}")


CASES = [
    ("add 64-bit", grpcio_add, cx_add),
    ("place round trip", grpcio_place, cx_place),
    ("reserve error detail", grpcio_reserve, cx_reserve),
    ("GET", None, cx_get),
    ("count stream", grpcio_count, cx_count),
    ("count_then_fail", grpcio_count_then_fail, cx_count_then_fail),
    ("deadline", grpcio_deadline, cx_deadline),
    ("metadata both ways", grpcio_metadata, cx_metadata),
    ("metadata both ways stream", grpcio_metadata_stream, cx_metadata_stream),
    ("unknown method", grpcio_unknown, cx_unknown),
    ("compression", grpcio_compression, cx_compression),
    ("reflection v1alpha", grpcio_reflection, None),
    ("reflection v1", grpcio_reflection_v1, None),
    ("reflection listed services resolve", grpcio_reflection_listed_services_resolve, None),
]


def main() -> int:
    passed = failed = 0

    def run(label, f):
        nonlocal passed, failed
        if ONLY and ONLY not in label:
            return
        try:
            if f() == "skip":
                return
            passed += 1
            print(f"ok   {label}", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {label}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {label}: {type(e).__name__}: {e}", flush=True)
            if os.environ.get("VERBOSE"):
                traceback.print_exc()

    for name, g, _ in CASES:
        if g:
            run(f"grpcio {name}", g)
    for flavour in CONNECT_FLAVOURS:
        for name, _, cx in CASES:
            if cx:
                run(f"connectrpc-{flavour} {name}", lambda: cx(flavour))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
