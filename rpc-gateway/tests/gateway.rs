//! The HTTP gateway over real loopback sockets, called by curl (a real HTTP client in
//! another process) and by hand-written requests for hostile input: the same router
//! answers native and HTTP callers, errors are Connect's, limits hold, and the gateway
//! stays up for the next caller.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traitrpc_core::server::middleware;
use traitrpc_core::{Next, Rejection, Router};
use traitrpc_gateway::GatewayConfig;

#[traitrpc_core::service]
pub trait Calc {
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String>;
    /// The caller's `authorization` metadata.
    async fn whoami(&self) -> Option<String>;
    async fn slow(&self, ms: u64) -> u64;
    async fn count(&self, n: u32) -> traitrpc_core::Streaming<u32>;
    /// `n` items, then an error.
    async fn failing(&self, n: u32) -> traitrpc_core::Streaming<u32>;
    async fn boom(&self) -> u8;
}

#[derive(Clone, Default)]
struct CalcImpl {
    slow_started: Arc<AtomicUsize>,
}

impl Calc for CalcImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String> {
        if b == 0 {
            Err("division by zero".into())
        } else {
            Ok(a / b)
        }
    }
    async fn whoami(&self) -> Option<String> {
        traitrpc_core::context::current()
            .and_then(|c| c.metadata().get_str("authorization").map(str::to_string))
    }
    async fn slow(&self, ms: u64) -> u64 {
        self.slow_started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn count(&self, n: u32) -> traitrpc_core::Streaming<u32> {
        traitrpc_core::Streaming::iter(0..n)
    }
    async fn failing(&self, n: u32) -> traitrpc_core::Streaming<u32> {
        let items = (0..n)
            .map(Ok)
            .chain(std::iter::once(Err(traitrpc_core::RpcError::Aborted {
                message: "ran out".into(),
            })));
        traitrpc_core::Streaming::from_results(futures::stream::iter(items))
    }
    async fn boom(&self) -> u8 {
        panic!("the handler exploded")
    }
}

/// A middleware refusing calls that carry `x-block`: HTTP callers pass through it too.
fn blocker() -> impl traitrpc_core::Middleware {
    middleware::from_fn(|next: Next| async move {
        if next.context().metadata().get_str("x-block").is_some() {
            return Err(Rejection::PermissionDenied("blocked by middleware".into()));
        }
        next.run().await
    })
}

fn router(calc: CalcImpl) -> Router {
    Router::from(CalcServer::new(calc)).layer(blocker())
}

/// A gateway on a free loopback port serving a fresh calculator with `config`.
async fn serve_calc(config: GatewayConfig) -> traitrpc_gateway::GatewayHandle {
    traitrpc_gateway::serve("127.0.0.1:0", router(CalcImpl::default()), config)
        .await
        .unwrap()
}

/// Fails the test, with what to install, where curl is missing (a test never passes
/// without having run).
fn require_curl() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "these tests need curl (apt-get install curl)"
    );
}

/// Runs curl with `args` against `url`; returns the HTTP status and the body as JSON.
fn curl(url: &str, args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let (body, code) = text.rsplit_once('\n').expect("the status line");
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?} is not JSON: {e}"))
    };
    (code.parse().expect("a status"), value)
}

/// Validates `document` with the `openapi-spec-validator` Python package (installed by
/// `.ci/tools.sh`; the test that calls this is ignored unless asked for).
fn validate_openapi(document: &Value) {
    let path = std::env::temp_dir().join(format!("traitrpc-openapi-{}.json", std::process::id()));
    std::fs::write(&path, document.to_string()).unwrap();
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "the OpenAPI document does not validate (or the validator is missing: \
         pip install openapi-spec-validator):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs openapi-spec-validator: `source .ci/tools.sh` (or pip install openapi-spec-validator), then --include-ignored"]
async fn the_openapi_document_passes_a_real_validator() {
    require_curl();
    let gateway = serve_calc(GatewayConfig::default()).await;
    let url = format!("http://{}/openapi.json", gateway.local_addr());
    let (status, openapi) = tokio::task::spawn_blocking(move || curl(&url, &[]))
        .await
        .unwrap();
    assert_eq!(status, 200);
    validate_openapi(&openapi);
    gateway.shutdown().await;
}

fn post(url: &str, body: &str, headers: &[&str]) -> (u16, Value) {
    let mut args = vec!["-H", "Content-Type: application/json", "-d", body];
    for h in headers {
        args.extend(["-H", h]);
    }
    curl(url, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_calls_the_same_router_the_native_protocol_serves() {
    require_curl();
    let router = router(CalcImpl::default());
    let native = traitrpc_transport_tcp::serve("127.0.0.1:0", router.clone())
        .await
        .unwrap();
    let gateway = traitrpc_gateway::serve("127.0.0.1:0", router, GatewayConfig::default())
        .await
        .unwrap();
    let base = format!("http://{}", gateway.local_addr());

    let (status, body) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || post(&format!("{base}/Calc/add"), r#"{"a": 1, "b": 2}"#, &[])
    })
    .await
    .unwrap();
    assert_eq!((status, body), (200, json!(3)));
    // The native protocol, on the same router.
    let client = CalcClient::new(
        traitrpc_transport_tcp::connect(native.local_addr())
            .await
            .unwrap(),
    );
    assert_eq!(client.add(1, 2).await.unwrap(), 3);

    let checks = tokio::task::spawn_blocking(move || {
        let url = |m: &str| format!("{base}/Calc/{m}");
        // GET for an idempotent method, with Connect's query parameters.
        assert_eq!(
            curl(
                &format!(
                    "{}?encoding=json&message=%7B%22a%22%3A40%2C%22b%22%3A2%7D",
                    url("add")
                ),
                &[]
            ),
            (200, json!(42))
        );
        let (status, body) = curl(&format!("{}?message=%7B%7D", url("divide")), &[]);
        assert_eq!(
            (status, body["code"].clone()),
            (501, json!("unimplemented"))
        );
        // A method's own error: failed_precondition, the error in `error`.
        let (status, body) = post(&url("divide"), r#"{"a": 1, "b": 0}"#, &[]);
        assert_eq!(status, 400);
        assert_eq!(body["code"], "failed_precondition");
        assert_eq!(body["error"], "division by zero");
        // Metadata from headers, for handlers and middleware.
        assert_eq!(
            post(&url("whoami"), "", &["Authorization: Bearer abc"]),
            (200, json!("Bearer abc"))
        );
        let (status, body) = post(&url("whoami"), "{}", &["X-Block: yes"]);
        assert_eq!(
            (status, body["code"].clone()),
            (403, json!("permission_denied"))
        );
        // Bad input: typed errors naming what is wrong.
        for (body, expect) in [
            (r#"{"a": 1"#, "not valid JSON"),
            (r#"{"a": "one", "b": 2}"#, "`a`"),
            (r#"{"a": 1}"#, "missing parameter `b`"),
            (r#"{"a": 1, "b": 2, "c": 3}"#, "`c`"),
            (r#"[1]"#, "takes 2 arguments"),
            (r#""text""#, "object"),
        ] {
            let (status, answer) = post(&url("add"), body, &[]);
            assert_eq!(status, 400, "{body}: {answer}");
            assert_eq!(answer["code"], "invalid_argument");
            assert!(
                answer["message"].as_str().unwrap().contains(expect),
                "{body}: {answer}"
            );
        }
        assert_eq!(
            post(&url("add"), "[40, 2]", &[]),
            (200, json!(42)),
            "arguments in parameter order"
        );
        let (status, body) = post(&url("nope"), "{}", &[]);
        assert_eq!(
            (status, body["code"].clone()),
            (501, json!("unimplemented"))
        );
        let (status, _) = post(&format!("{base}/Nope/add"), "{}", &[]);
        assert_eq!(status, 501);
        let (status, body) = post(&url("count"), r#"{"n": 3}"#, &[]);
        assert_eq!(
            (status, body["code"].clone()),
            (501, json!("unimplemented"))
        );
        // Reflection and the OpenAPI document describe what is served.
        let (status, listing) = curl(&format!("{base}/.well-known/rrpc/services"), &[]);
        assert_eq!(status, 200);
        let calc = &listing["services"][0];
        assert_eq!(calc["name"], "Calc");
        let add = calc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "add")
            .unwrap();
        assert_eq!(add["params"], json!(["a", "b"]));
        assert_eq!(add["idempotent"], json!(true));
        let (status, openapi) = curl(&format!("{base}/openapi.json"), &[]);
        assert_eq!(status, 200);
        assert_eq!(openapi["openapi"], "3.1.0");
        assert!(
            openapi["paths"]["/Calc/add"]["get"].is_object(),
            "idempotent: GET too"
        );
        assert!(openapi["paths"]["/Calc/divide"]["get"].is_null());
        assert!(openapi["paths"]["/Calc/divide"]["post"].is_object());
        assert!(
            openapi["paths"]["/Calc/count"]["post"]["requestBody"]["content"]
                ["application/connect+json"]
                .is_object(),
            "server streams are served in Connect's streaming protocol"
        );
        // A panicking handler fails its call, and the gateway answers the next one.
        let (status, body) = post(&url("boom"), "{}", &[]);
        assert_eq!((status, body["code"].clone()), (500, json!("internal")));
        assert!(body["message"].as_str().unwrap().contains("exploded"));
        assert_eq!(post(&url("add"), r#"{"a":2,"b":2}"#, &[]), (200, json!(4)));
        let (status, _) = curl(&url("add"), &["-H", "Content-Type: text/plain", "-d", "x"]);
        assert_eq!(status, 415);
        // The deadline from Connect-Timeout-Ms.
        let (status, body) = post(
            &url("slow"),
            r#"{"ms": 5000}"#,
            &["Connect-Timeout-Ms: 100"],
        );
        assert_eq!(
            (status, body["code"].clone()),
            (504, json!("deadline_exceeded"))
        );
        let (status, _) = post(
            &url("add"),
            r#"{"a":1,"b":1}"#,
            &["Connect-Timeout-Ms: soon"],
        );
        assert_eq!(status, 400);
    });
    checks.await.unwrap();
    gateway.shutdown().await;
    native.shutdown().await;
}

/// Sends `request` as raw bytes and returns the status code of the answer.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_meet_limits_and_the_gateway_stays_up() {
    let calc = CalcImpl::default();
    let config = GatewayConfig::default()
        .max_body(1024)
        .max_in_flight(1)
        .body_timeout(Duration::from_millis(300))
        .allow_origin("http://app.example");
    let gateway = traitrpc_gateway::serve("127.0.0.1:0", router(calc.clone()), config)
        .await
        .unwrap();
    let addr = gateway.local_addr();
    let post = |body: &str| {
        format!(
            "POST /Calc/add HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    // Too large: refused before it is read whole.
    let huge = format!(
        "{{\"a\": 1, \"b\": 2, \"pad\": \"{}\"}}",
        "x".repeat(10_000)
    );
    let (code, text) = raw(addr, post(&huge).as_bytes()).await;
    assert_eq!(code, 429, "{text}");
    assert!(text.contains("resource_exhausted"));
    // Nested deeper than the JSON parser's limit: an error, not a crash.
    let deep = "[".repeat(900);
    let (code, text) = raw(addr, post(&deep).as_bytes()).await;
    assert_eq!(code, 400, "{text}");
    // A body that never arrives: refused after the body timeout.
    let (code, text) = raw(
        addr,
        b"POST /Calc/add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await;
    assert_eq!(code, 504, "{text}");
    // CORS: a preflight from an allowed origin, and the header on answers.
    let (code, text) = raw(
        addr,
        b"OPTIONS /Calc/add HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: http://app.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
    )
    .await;
    assert_eq!(code, 204, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("access-control-allow-origin: http://app.example"));
    assert!(lower.contains("access-control-allow-headers: content-type"));
    // gRPC-Web in a browser reads a refused call's status from the headers.
    assert!(lower.contains("access-control-expose-headers: grpc-status, grpc-message"));
    let (_, text) = raw(
        addr,
        b"POST /Calc/add HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":1,\"b\":2}",
    )
    .await;
    assert!(!text
        .to_ascii_lowercase()
        .contains("access-control-allow-origin"));

    // The in-flight limit: with one slow call running, the next is refused (it did not
    // run) and the one after it, once the slow call is done, runs.
    let slow_request = "{\"ms\": 3000}".to_string();
    let slow = tokio::spawn(async move {
        let request = format!(
            "POST /Calc/slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{slow_request}",
            slow_request.len()
        );
        raw(addr, request.as_bytes()).await
    });
    while calc.slow_started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let (code, text) = raw(addr, post("{\"a\":1,\"b\":2}").as_bytes()).await;
    assert_eq!(code, 429, "{text}");
    assert_eq!(slow.await.unwrap().0, 200);
    let (code, text) = raw(addr, post("{\"a\":1,\"b\":2}").as_bytes()).await;
    assert_eq!(code, 200, "the gateway still answers: {text}");
    assert!(text.ends_with('3'), "{text}");
    gateway.shutdown().await;
}

/// Reads until the gateway closes the connection (at most 10 s): the bytes it sent.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .ok()
        .map(|_| reply)
}

#[tokio::test]
async fn slow_and_surplus_connections_are_dropped_and_shutdown_is_bounded() {
    // A client that never finishes its headers is dropped after the header timeout.
    let gateway =
        serve_calc(GatewayConfig::default().header_timeout(Duration::from_millis(200))).await;
    let mut slow = tokio::net::TcpStream::connect(gateway.local_addr())
        .await
        .unwrap();
    slow.write_all(b"POST /Calc/add HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert!(
        until_closed(&mut slow).await.is_some(),
        "a client stuck in its headers is not held"
    );
    gateway.shutdown().await;

    // Beyond the connection limit, a connection is closed unanswered; and shutdown
    // returns although two clients are stuck in their requests.
    let gateway = serve_calc(
        GatewayConfig::default()
            .max_connections(2)
            .header_timeout(Duration::from_secs(60))
            .shutdown_grace(Duration::from_millis(200)),
    )
    .await;
    let addr = gateway.local_addr();
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /Calc/add HTTP/1.1\r\nHo").await.unwrap();
        stuck.push(s);
    }
    // Both are being served once a third connection is refused: retry until then
    // (accepting is asynchronous).
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = b"POST /Calc/add HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":1,\"b\":2}";
            if third.write_all(request).await.is_err() {
                break;
            }
            match until_closed(&mut third).await {
                Some(reply) if reply.is_empty() => break,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "a third connection is closed unanswered");
    tokio::time::timeout(Duration::from_secs(10), gateway.shutdown())
        .await
        .expect("shutdown is bounded by its grace period");
    drop(stuck);
}

/// A Connect envelope: flags, a big-endian length, the message.
fn envelope(flags: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Calls a server stream with curl in Connect's streaming protocol: the HTTP status and
/// the envelopes of the answer (flags, JSON).
fn curl_stream(url: &str, args: &str, headers: &[&str]) -> (u16, Vec<(u8, Value)>) {
    let body = std::env::temp_dir().join(format!(
        "traitrpc-stream-{}-{}.bin",
        std::process::id(),
        url.len() + args.len()
    ));
    std::fs::write(&body, envelope(0, args.as_bytes())).unwrap();
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "20",
        "-o",
        "-",
        "-w",
        "%{http_code}",
        "-H",
        "Content-Type: application/connect+json",
        "--data-binary",
    ]);
    command.arg(format!("@{}", body.display()));
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(url).output().expect("run curl");
    let _ = std::fs::remove_file(&body);
    let (mut data, status) = out.stdout.split_at(out.stdout.len() - 3);
    let status: u16 = std::str::from_utf8(status).unwrap().parse().unwrap();
    let mut envelopes = Vec::new();
    while !data.is_empty() {
        let flags = data[0];
        let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
        let message = serde_json::from_slice(&data[5..5 + len]).unwrap();
        envelopes.push((flags, message));
        data = &data[5 + len..];
    }
    (status, envelopes)
}

#[tokio::test]
async fn server_streams_arrive_as_connect_envelopes() {
    require_curl();
    let gateway = serve_calc(GatewayConfig::default()).await;
    let base = format!("http://{}", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        let url = |m: &str| format!("{base}/Calc/{m}");
        // Items, then an end-of-stream message without an error.
        let (status, envelopes) = curl_stream(&url("count"), r#"{"n": 3}"#, &[]);
        assert_eq!(status, 200);
        assert_eq!(
            envelopes,
            [(0, json!(0)), (0, json!(1)), (0, json!(2)), (2, json!({}))]
        );
        // Many items: the stream goes on past the gateway's queue.
        let (_, envelopes) = curl_stream(&url("count"), r#"{"n": 20000}"#, &[]);
        assert_eq!(envelopes.len(), 20_001);
        assert_eq!(envelopes[19_999], (0, json!(19_999)));
        // A stream that fails midway ends with the error.
        let (status, envelopes) = curl_stream(&url("failing"), r#"{"n": 2}"#, &[]);
        assert_eq!(status, 200);
        assert_eq!(envelopes.len(), 3);
        let (flags, end) = &envelopes[2];
        assert_eq!(*flags, 2);
        assert_eq!(end["error"]["code"], "aborted");
        assert!(end["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ran out"));
        // Errors before the first item come in the end message too.
        for (method, args, headers, code) in [
            ("count", r#"{"n": "three"}"#, &[][..], "invalid_argument"),
            ("add", r#"{"a": 1, "b": 2}"#, &[][..], "unimplemented"),
            (
                "count",
                r#"{"n": 1}"#,
                &["X-Block: yes"][..],
                "permission_denied",
            ),
        ] {
            let (status, envelopes) = curl_stream(&url(method), args, headers);
            assert_eq!(status, 200, "{method}");
            assert_eq!(envelopes.len(), 1, "{method}: {envelopes:?}");
            assert_eq!(envelopes[0].1["error"]["code"], code, "{method}");
        }
        // A body that is not one envelope is refused before the call, as a stream
        // answers: 200, the error in the end message.
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "20",
                "-H",
                "Content-Type: application/connect+json",
            ])
            .args(["-d", r#"{"n": 1}"#, "-w", "%{http_code}"])
            .arg(url("count"))
            .output()
            .expect("run curl");
        let (body, status) = out.stdout.split_at(out.stdout.len() - 3);
        assert_eq!(status, b"200");
        assert_eq!(body[0], 0x02, "one end message: {body:?}");
        let end: Value = serde_json::from_slice(&body[5..]).unwrap();
        assert_eq!(end["error"]["code"], "invalid_argument");
    })
    .await
    .unwrap();
    gateway.shutdown().await;
}

#[tokio::test]
async fn one_port_serves_native_clients_curl_and_streams() {
    require_curl();
    let router = router(CalcImpl::default());
    let server = traitrpc_core::Server::new(router.clone()).share_port(
        traitrpc_gateway::on_native_port(router, GatewayConfig::default()),
    );
    let listener = traitrpc_transport_tcp::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server.serve(listener, addr);

    let native = CalcClient::new(traitrpc_transport_tcp::connect(addr).await.unwrap());
    assert_eq!(native.add(1, 2).await.unwrap(), 3);
    let base = format!("http://{addr}");
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            post(&format!("{base}/Calc/add"), r#"{"a": 2, "b": 3}"#, &[]),
            (200, json!(5))
        );
        let (status, envelopes) = curl_stream(&format!("{base}/Calc/count"), r#"{"n": 2}"#, &[]);
        assert_eq!(status, 200);
        assert_eq!(envelopes, [(0, json!(0)), (0, json!(1)), (2, json!({}))]);
        let (status, body) = post(&format!("{base}/Calc/whoami"), "{}", &["X-Block: yes"]);
        assert_eq!(
            (status, body["code"].clone()),
            (403, json!("permission_denied")),
            "the router's middleware applies on the shared port too"
        );
    })
    .await
    .unwrap();
    // Neither protocol: closed without an answer, and both still served afterwards.
    let mut stranger = tokio::net::TcpStream::connect(addr).await.unwrap();
    stranger
        .write_all(b"SSH-2.0-OpenSSH_9.2\r\n")
        .await
        .unwrap();
    assert_eq!(until_closed(&mut stranger).await, Some(Vec::new()));
    assert_eq!(native.add(2, 2).await.unwrap(), 4);
    let (status, _) = raw(
        addr,
        b"POST /Calc/add HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":1,\"b\":1}",
    )
    .await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

/// An ended call as an observer saw it: method, status, stream items sent.
type Ended = (&'static str, Option<u8>, u64);

/// Counts the calls observers are told of, by status.
#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<Vec<Ended>>>);

impl traitrpc_core::server::observer::ServerObserver for Seen {
    fn call_started(&self, _call: &traitrpc_core::server::observer::ObservedCall) {}
    fn call_ended(
        &self,
        call: &traitrpc_core::server::observer::ObservedCall,
        answered: &traitrpc_core::Answered,
        _elapsed: Duration,
    ) {
        self.0.lock().unwrap().push((
            call.known_method().unwrap_or("?"),
            answered.status(),
            answered.items_sent(),
        ));
    }
}

#[tokio::test]
async fn observers_see_gateway_calls_as_native_ones() {
    let seen = Seen::default();
    let router = router(CalcImpl::default()).observe(seen.clone());
    let gateway = traitrpc_gateway::serve("127.0.0.1:0", router, GatewayConfig::default())
        .await
        .unwrap();
    let addr = gateway.local_addr();
    let post = |path: &str, body: &str, headers: &str| {
        format!(
            "POST {path} HTTP/1.0\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(
        raw(addr, post("/Calc/add", r#"{"a":1,"b":2}"#, "").as_bytes())
            .await
            .0,
        200
    );
    assert_eq!(
        raw(
            addr,
            post("/Calc/divide", r#"{"a":1,"b":0}"#, "").as_bytes()
        )
        .await
        .0,
        400
    );
    assert_eq!(
        raw(addr, post("/Calc/add", "{}", "X-Block: yes\r\n").as_bytes())
            .await
            .0,
        403
    );
    assert_eq!(
        raw(addr, post("/Calc/nope", "{}", "").as_bytes()).await.0,
        501
    );
    assert_eq!(
        raw(addr, post("/Calc/add", r#"{"a":"x"}"#, "").as_bytes())
            .await
            .0,
        400
    );
    let mut stream = b"POST /Calc/count HTTP/1.0\r\nContent-Type: application/connect+json\r\nContent-Length: 12\r\n\r\n".to_vec();
    stream.extend_from_slice(&envelope(0, br#"{"n":3}"#));
    assert_eq!(raw(addr, &stream).await.0, 200);
    gateway.shutdown().await;
    let mut seen = seen.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "?",
                Some(traitrpc_core::protocol::status::UNKNOWN_METHOD),
                0
            ),
            ("add", Some(traitrpc_core::protocol::status::OK), 0),
            (
                "add",
                Some(traitrpc_core::protocol::status::INVALID_ARGUMENTS),
                0
            ),
            (
                "add",
                Some(traitrpc_core::protocol::status::PERMISSION_DENIED),
                0
            ),
            ("count", Some(traitrpc_core::protocol::status::OK), 3),
            (
                "divide",
                Some(traitrpc_core::protocol::status::APPLICATION_ERROR),
                0
            ),
        ]
    );
}
