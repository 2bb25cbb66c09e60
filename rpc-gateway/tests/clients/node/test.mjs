// Connect's own Node clients (@connectrpc/connect-node, unmodified) against the gateway,
// with code protoc-gen-es generated from the .proto the gateway exports. Run by
// `../run.sh node` (which copies this file beside node_modules/ and gen/):
//
//   SHOP_URL=http://127.0.0.1:8080 node test.mjs
//
// Every case runs on every transport: Connect JSON and binary (HTTP/1.1, and binary over
// HTTP/2 cleartext), gRPC (h2c, prior knowledge) and gRPC-Web (binary, HTTP/1.1). One line
// per case (`ok   connect-json add 64-bit`, `FAIL ...`), then `N passed, N failed`; the
// exit status is 1 if any case failed.

import * as http from "node:http";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import { StringValueSchema } from "@bufbuild/protobuf/wkt";
import { Orders, OrdersAddRequestSchema } from "./gen/shop_pb.js";

const baseUrl = process.env.SHOP_URL;
if (!baseUrl) {
  console.error("SHOP_URL is not set (e.g. http://127.0.0.1:8080)");
  process.exit(2);
}
// Only cases whose name contains this run (e.g. ONLY=grpc-web), for trying by hand.
const only = process.env.ONLY ?? "";

/** An HTTP/1.1 agent that records each request's method, path and headers. */
class SpyAgent extends http.Agent {
  constructor() {
    super({ keepAlive: true });
    this.sent = [];
  }
  addRequest(req, options) {
    this.sent.push({
      method: req.method,
      path: req.path,
      contentEncoding: req.getHeader("content-encoding"),
      connectContentEncoding: req.getHeader("connect-content-encoding"),
      grpcEncoding: req.getHeader("grpc-encoding"),
    });
    return super.addRequest(req, options);
  }
}

/** An interceptor that records the request headers of each call (HTTP/2 transports). */
function headerSpy() {
  const seen = [];
  const interceptor = (next) => async (req) => {
    const res = await next(req);
    seen.push(Object.fromEntries(req.header.entries()));
    return res;
  };
  return { seen, interceptor };
}

/** The transports, each built fresh with `extra` options (compression, GET). */
const transports = {
  "connect-json": (extra) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, ...extra }),
  "connect-proto": (extra) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, ...extra }),
  "connect-proto-h2": (extra) =>
    createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, ...extra }),
  grpc: (extra) => createGrpcTransport({ baseUrl, httpVersion: "2", ...extra }),
  "grpc-web": (extra) =>
    createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, ...extra }),
};
const isHttp1 = (name) => name !== "grpc" && name !== "connect-proto-h2";

function assert(cond, message) {
  if (!cond) throw new Error(message);
}
function eq(actual, expected, what) {
  const a = stringify(actual);
  const e = stringify(expected);
  assert(a === e, `${what}: got ${a}, want ${e}`);
}
/** JSON with bigints and bytes spelled out and object keys sorted. */
function stringify(v) {
  return JSON.stringify(v, (_k, x) => {
    if (typeof x === "bigint") return `${x}n`;
    if (x instanceof Uint8Array) return `bytes[${Array.from(x)}]`;
    if (x && typeof x === "object" && !Array.isArray(x)) {
      return Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]]));
    }
    return x;
  });
}
/** Runs `f` and returns the ConnectError it throws (fails if it does not throw one). */
async function rejects(f) {
  try {
    const got = await f();
    throw new Error(`expected an error, got ${stringify(got)}`);
  } catch (e) {
    if (e instanceof ConnectError) return e;
    throw e;
  }
}
function describeError(e) {
  if (e instanceof ConnectError) {
    const md = [...e.metadata.entries()].map(([k, v]) => `${k}: ${v}`).join("; ");
    return `ConnectError code=${Code[e.code]} message=${JSON.stringify(e.rawMessage)} metadata={${md}}`;
  }
  return e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : String(e);
}

/** The response's headers and trailers, for failure messages. */
function describeMeta(header, trailer) {
  const list = (h) => (h ? [...h.entries()].map(([k, v]) => `${k}: ${v}`).join("; ") : "none");
  return `headers {${list(header)}} trailers {${list(trailer)}}`;
}

const sampleOrder = () => ({
  id: 0n,
  total: -1234n,
  note: "fragile",
  blob: new Uint8Array([0, 1, 2, 254, 255]),
  status: { variant: { case: "Moved", value: { to: "Berlin" } } },
  tags: ["a", "b c", "ü"],
  counts: { apple: 3, pear: 0, "": 9 },
});
/** The order as plain data, to compare (messages carry `$typeName`). */
function plainOrder(o) {
  const status = o.status?.variant;
  return {
    id: o.id,
    total: o.total,
    note: o.note,
    blob: o.blob,
    status: status
      ? { case: status.case, value: typeof status.value === "object" ? { ...status.value, $typeName: undefined } : status.value }
      : undefined,
    tags: o.tags,
    counts: Object.fromEntries(Object.entries(o.counts).sort()),
  };
}

/** The cases, each run on each transport: `name -> async (transportName) => void`. */
const cases = {
  "add 64-bit": async (t) => {
    const client = createClient(Orders, transports[t]({}));
    const r = await client.add({ a: 9007199254740993n, b: 1n });
    eq(r.result, 9007199254740994n, "add(2^53+1, 1)");
    const m = await client.add({ a: -9223372036854775807n, b: -1n });
    eq(m.result, -9223372036854775808n, "add(i64::MIN+1, -1)");
    const z = await client.add({ a: 0n, b: 0n });
    eq(z.result, 0n, "add(0, 0) (an empty message back)");
  },
  "place round trip": async (t) => {
    const client = createClient(Orders, transports[t]({}));
    const sent = sampleOrder();
    const r = await client.place({ order: sent });
    eq(plainOrder(r.result), plainOrder({ ...sent, id: 7n }), "place(Moved)");
    const active = {
      id: 3n,
      total: -500n,
      blob: new Uint8Array(),
      status: { variant: { case: "Active", value: {} } },
      tags: [],
      counts: {},
    };
    const r2 = await client.place({ order: active });
    eq(
      plainOrder(r2.result),
      plainOrder({ ...active, id: 7n, note: undefined, status: { variant: { case: "Held", value: 500n } } }),
      "place(Active) -> Held(500)",
    );
  },
  "reserve error detail": async (t) => {
    const client = createClient(Orders, transports[t]({}));
    const ok = await client.reserve({ item: "apple", quantity: 3 });
    eq(ok.result, 3, "reserve(apple, 3)");
    const e = await rejects(() => client.reserve({ item: "apple", quantity: 11 }));
    eq(Code[e.code], "FailedPrecondition", `code (${describeError(e)})`);
    const details = e.findDetails(StringValueSchema);
    eq(details.length, 1, `StringValue details (${describeError(e)}, raw details ${stringify(e.details)})`);
    eq(JSON.parse(details[0].value), { item: "apple", available: 10 }, "the detail's JSON");
  },
  "GET": async (t) => {
    if (!t.startsWith("connect")) return "skip"; // GET is Connect's alone
    const spy = isHttp1(t) ? new SpyAgent() : null;
    const headers = headerSpy();
    const client = createClient(
      Orders,
      transports[t]({
        useHttpGet: true,
        interceptors: [headers.interceptor],
        ...(spy ? { nodeOptions: { agent: spy } } : {}),
      }),
    );
    const r = await client.add({ a: 9007199254740993n, b: 2n });
    eq(r.result, 9007199254740995n, "GET add");
    const m = await client.metadata({ key: "x-shop-key" }, { headers: { "x-shop-key": "by get" } });
    eq(m.result, "by get", "GET metadata");
    if (spy) {
      eq(spy.sent.map((x) => x.method), ["GET", "GET"], "HTTP methods sent");
      assert(spy.sent[0].path.includes("/shop.Orders/add?"), `path ${spy.sent[0].path}`);
    }
    // A method that is not idempotent is still POSTed by the client.
    await client.place({ order: sampleOrder() });
    if (spy) eq(spy.sent[2].method, "POST", "place's HTTP method");
  },
  "count stream": async (t) => {
    const client = createClient(Orders, transports[t]({}));
    const got = [];
    for await (const item of client.count({ to: 4 })) got.push(item.result);
    eq(got, [1000000000000n, 2000000000000n, 3000000000000n, 4000000000000n], "count(4)");
    const none = [];
    for await (const item of client.count({ to: 0 })) none.push(item.result);
    eq(none, [], "count(0)");
  },
  "count_then_fail": async (t) => {
    const client = createClient(Orders, transports[t]({}));
    const got = [];
    const e = await rejects(async () => {
      for await (const item of client.count_then_fail({ failAfter: 3 })) got.push(item.result);
    });
    eq(got, [1, 2, 3], "items before the failure");
    eq(Code[e.code], "Aborted", `code (${describeError(e)})`);
    assert(e.rawMessage.includes("failed on purpose"), `message ${JSON.stringify(e.rawMessage)}`);
  },
  "deadline": async (t) => {
    const headers = headerSpy();
    const client = createClient(Orders, transports[t]({ interceptors: [headers.interceptor] }));
    const quick = await client.sleep({ ms: 10n }, { timeoutMs: 5000 });
    eq(quick.result, 10n, "sleep(10) within 5 s");
    const sent = headers.seen[0];
    assert(
      sent["connect-timeout-ms"] || sent["grpc-timeout"],
      `no timeout header sent: ${stringify(sent)}`,
    );
    const start = Date.now();
    const e = await rejects(() => client.sleep({ ms: 5000n }, { timeoutMs: 300 }));
    const took = Date.now() - start;
    eq(Code[e.code], "DeadlineExceeded", `code (${describeError(e)})`);
    assert(took < 3000, `took ${took} ms`);
    // The same deadline with no timer in the client: only the header, so the answer is
    // the server's own.
    const header = t.startsWith("connect") ? { "connect-timeout-ms": "300" } : { "grpc-timeout": "300m" };
    const start2 = Date.now();
    const e2 = await rejects(() => client.sleep({ ms: 5000n }, { headers: header }));
    const took2 = Date.now() - start2;
    eq(Code[e2.code], "DeadlineExceeded", `code from the server (${describeError(e2)})`);
    assert(took2 < 3000, `the server answered after ${took2} ms`);
  },
  // Request metadata in (the x-shop-key header, read back by `metadata`), response metadata
  // out: `metadata` sets x-shop-reply (a response header: Connect's HTTP header, gRPC's and
  // gRPC-Web's initial metadata).
  "metadata both ways": async (t) => {
    const client = createClient(Orders, transports[t]({}));
    let header, trailer;
    const r = await client.metadata(
      { key: "x-shop-key" },
      { headers: { "x-shop-key": "hello" }, onHeader: (h) => (header = h), onTrailer: (h) => (trailer = h) },
    );
    eq(r.result, "hello", "metadata(x-shop-key)");
    eq(header?.get("x-shop-reply"), "reply-hello", `x-shop-reply response header (${describeMeta(header, trailer)})`);
    header = trailer = undefined;
    const none = await client.metadata(
      { key: "x-absent" },
      { onHeader: (h) => (header = h), onTrailer: (h) => (trailer = h) },
    );
    eq(none.result, undefined, "metadata(x-absent) (unset optional)");
    eq(header?.get("x-shop-reply"), "reply-none", `x-shop-reply for an absent key (${describeMeta(header, trailer)})`);
    if (t.startsWith("connect")) {
      // The same over a Connect GET.
      header = trailer = undefined;
      const get = createClient(Orders, transports[t]({ useHttpGet: true }));
      const g = await get.metadata(
        { key: "x-shop-key" },
        { headers: { "x-shop-key": "by get" }, onHeader: (h) => (header = h), onTrailer: (h) => (trailer = h) },
      );
      eq(g.result, "by get", "GET metadata(x-shop-key)");
      eq(header?.get("x-shop-reply"), "reply-by get", `x-shop-reply of a GET (${describeMeta(header, trailer)})`);
    }
  },
  // `count` sets x-shop-count, which reaches the client as a trailer: Connect's end-of-stream
  // metadata, a gRPC HTTP/2 trailer, a line of gRPC-Web's trailers message.
  "metadata both ways stream": async (t) => {
    const client = createClient(Orders, transports[t]({}));
    let header, trailer;
    const got = [];
    for await (const item of client.count(
      { to: 3 },
      { onHeader: (h) => (header = h), onTrailer: (h) => (trailer = h) },
    )) {
      got.push(item.result);
    }
    eq(got.length, 3, "count(3) items");
    eq(trailer?.get("x-shop-count"), "3", `x-shop-count trailer of count(3) (${describeMeta(header, trailer)})`);
    // No items: the metadata still arrives (gRPC may answer trailers-only).
    header = trailer = undefined;
    for await (const _ of client.count({ to: 0 }, { onHeader: (h) => (header = h), onTrailer: (h) => (trailer = h) }));
    eq(trailer?.get("x-shop-count"), "0", `x-shop-count trailer of count(0) (${describeMeta(header, trailer)})`);
  },
  "unknown method": async (t) => {
    const transport = transports[t]({});
    // A method the service does not have: `add`'s descriptor under another name.
    const nope = { ...Orders.method.add, name: "nope", localName: "nope" };
    const e = await rejects(() =>
      transport.unary(nope, undefined, undefined, undefined, create(OrdersAddRequestSchema, { a: 1n, b: 2n })),
    );
    eq(Code[e.code], "Unimplemented", `code (${describeError(e)})`);
    // A server stream with a name the service does not have.
    const nopeStream = { ...Orders.method.count, name: "nope_stream", localName: "nopeStream" };
    const client = createClient({ ...Orders, methods: [nopeStream], method: { nopeStream } }, transport);
    const e2 = await rejects(async () => {
      for await (const _ of client.nopeStream({ to: 1 }));
    });
    eq(Code[e2.code], "Unimplemented", `stream code (${describeError(e2)})`);
  },
  "compression": async (t) => {
    const spy = isHttp1(t) ? new SpyAgent() : null;
    const headers = headerSpy();
    const client = createClient(
      Orders,
      transports[t]({
        sendCompression: compressionGzip,
        acceptCompression: [compressionGzip],
        compressMinBytes: 0,
        interceptors: [headers.interceptor],
        ...(spy ? { nodeOptions: { agent: spy } } : {}),
      }),
    );
    const order = { ...sampleOrder(), note: "x".repeat(5000), tags: Array.from({ length: 200 }, (_, i) => `tag ${i}`) };
    const r = await client.place({ order });
    eq(plainOrder(r.result), plainOrder({ ...order, id: 7n }), "place, gzipped");
    const got = [];
    for await (const item of client.count({ to: 2 })) got.push(item.result);
    eq(got, [1000000000000n, 2000000000000n], "count(2), gzipped request");
    // The request really was compressed.
    if (spy) {
      const [unary, stream] = spy.sent;
      if (t.startsWith("connect")) {
        eq(unary.contentEncoding, "gzip", "Content-Encoding of the unary request");
        eq(stream.connectContentEncoding, "gzip", "Connect-Content-Encoding of the stream request");
      } else {
        eq(unary.grpcEncoding, "gzip", "Grpc-Encoding of the unary request");
      }
    } else {
      const h = headers.seen[0];
      assert(
        h["grpc-encoding"] === "gzip" || h["content-encoding"] === "gzip",
        `no gzip request header: ${stringify(h)}`,
      );
    }
    if (t.startsWith("connect")) {
      // A GET carries its gzipped message in the query (compression=gzip).
      const getSpy = isHttp1(t) ? new SpyAgent() : null;
      const getClient = createClient(
        Orders,
        transports[t]({
          useHttpGet: true,
          sendCompression: compressionGzip,
          compressMinBytes: 0,
          ...(getSpy ? { nodeOptions: { agent: getSpy } } : {}),
        }),
      );
      const r = await getClient.add({ a: 9007199254740993n, b: 3n });
      eq(r.result, 9007199254740996n, "GET add, gzip");
      if (getSpy) {
        const [get] = getSpy.sent;
        assert(get.method === "GET" && get.path.includes("compression=gzip"), `GET request ${stringify(get)}`);
      }
    }
  },
};

let passed = 0;
let failed = 0;
let skipped = 0;
for (const t of Object.keys(transports)) {
  for (const [name, run] of Object.entries(cases)) {
    const label = `${t} ${name}`;
    if (only && !label.includes(only)) continue;
    try {
      const outcome = await Promise.race([
        run(t),
        new Promise((_, reject) => setTimeout(() => reject(new Error("case timed out after 20 s")), 20000).unref()),
      ]);
      if (outcome === "skip") {
        skipped++;
        continue;
      }
      passed++;
      console.log(`ok   ${label}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${label}: ${e instanceof ConnectError ? describeError(e) : e.message ?? e}`);
      if (process.env.VERBOSE) console.log(e);
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
