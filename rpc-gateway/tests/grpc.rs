//! gRPC, gRPC-Web and Connect's binary codec on the gateway, over real loopback sockets
//! with hyper's HTTP/2 and HTTP/1.1 clients; messages built from the exported
//! descriptors with prost-reflect (the real clients' suites are `tests/clients.rs`).

#[path = "support/shop.rs"]
mod shop;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use traitrpc_core::Router;
use traitrpc_proto::prost_reflect::{DynamicMessage, MessageDescriptor};
use traitrpc_proto::ProtoCodec;

fn router() -> Router {
    Router::from(shop::OrdersServer::new(shop::Shop))
}

async fn gateway() -> traitrpc_gateway::GatewayHandle {
    traitrpc_gateway::serve("127.0.0.1:0", router(), Default::default())
        .await
        .expect("gateway binds")
}

fn codec() -> ProtoCodec {
    ProtoCodec::for_router(&router()).expect("the shop exports")
}

fn message(name: &str) -> MessageDescriptor {
    codec().pool().get_message_by_name(name).expect("exported")
}

/// `json` (proto3 JSON) as the protobuf bytes of message `name`.
fn encode(name: &str, json: Value) -> Vec<u8> {
    DynamicMessage::deserialize(message(name), json)
        .expect("valid JSON for the message")
        .encode_to_vec()
}

/// Protobuf bytes of message `name` as proto3 JSON.
fn decode(name: &str, bytes: &[u8]) -> Value {
    let message = DynamicMessage::decode(message(name), bytes).expect("a valid message");
    serde_json::to_value(&message).expect("JSON")
}

fn prefixed(flags: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The length-prefixed messages of a body, with their flags.
fn messages(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let flags = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push((flags, body[5..5 + len].to_vec()));
        body.advance(5 + len);
    }
    assert!(body.is_empty(), "a partial message at the end");
    out
}

/// What a gRPC call came back with.
struct Answer {
    headers: hyper::HeaderMap,
    messages: Vec<(u8, Vec<u8>)>,
    trailers: Option<hyper::HeaderMap>,
}

impl Answer {
    /// grpc-status: from the trailers, or the headers of a trailers-only answer.
    fn status(&self) -> String {
        let from = self.trailers.as_ref().unwrap_or(&self.headers);
        from["grpc-status"].to_str().unwrap().to_string()
    }
}

/// One gRPC call over a fresh h2c connection.
async fn grpc(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Answer {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "gRPC answers 200");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Answer {
        headers: parts.headers,
        messages: messages(&collected.to_bytes()),
        trailers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_calls_carry_64_bit_values_and_nested_types() {
    let gateway = gateway().await;
    let addr = gateway.local_addr();
    let request = encode(
        "shop.OrdersAddRequest",
        json!({"a": "9007199254740993", "b": "1"}),
    );
    let answer = grpc(
        addr,
        "/shop.Orders/add",
        "application/grpc",
        prefixed(0, &request),
        &[],
    )
    .await;
    assert_eq!(answer.headers["content-type"], "application/grpc");
    assert_eq!(answer.status(), "0");
    assert_eq!(answer.messages.len(), 1);
    let result = decode("shop.OrdersAddResponse", &answer.messages[0].1);
    assert_eq!(result, json!({"result": "9007199254740994"}));

    let order = json!({
        "id": "1", "total": "-250", "blob": "AAEC/w==",
        "status": {"Moved": {"to": "Lyon"}},
        "tags": ["a", "b"], "counts": {"pen": 2},
    });
    let request = encode("shop.OrdersPlaceRequest", json!({ "order": order }));
    let answer = grpc(
        addr,
        "/shop.Orders/place",
        "application/grpc+proto",
        prefixed(0, &request),
        &[],
    )
    .await;
    assert_eq!(answer.status(), "0");
    let placed = decode("shop.OrdersPlaceResponse", &answer.messages[0].1);
    let mut expected = order.clone();
    expected["id"] = json!("7");
    assert_eq!(placed, json!({ "result": expected }));

    // A unit variant, and fields left at their defaults (absent on the wire).
    let request = encode(
        "shop.OrdersPlaceRequest",
        json!({"order": {"total": "5", "status": {"Active": {}}}}),
    );
    let answer = grpc(
        addr,
        "/shop.Orders/place",
        "application/grpc",
        prefixed(0, &request),
        &[],
    )
    .await;
    assert_eq!(answer.status(), "0");
    let placed = decode("shop.OrdersPlaceResponse", &answer.messages[0].1);
    assert_eq!(
        placed,
        json!({"result": {"id": "7", "total": "5", "status": {"Held": "5"}}})
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_without_a_status_is_refused_not_given_a_variant() {
    let gateway = gateway().await;
    let request = encode("shop.OrdersPlaceRequest", json!({"order": {"total": "5"}}));
    let answer = grpc(
        gateway.local_addr(),
        "/shop.Orders/place",
        "application/grpc",
        prefixed(0, &request),
        &[],
    )
    .await;
    assert_eq!(answer.status(), "3", "invalid_argument");
    assert!(answer.messages.is_empty());
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_errors_deadlines_metadata_and_compression() {
    let gateway = gateway().await;
    let addr = gateway.local_addr();

    let request = encode("shop.OrdersCountRequest", json!({"to": 3}));
    let answer = grpc(
        addr,
        "/shop.Orders/count",
        "application/grpc",
        prefixed(0, &request),
        &[],
    )
    .await;
    let items: Vec<Value> = answer
        .messages
        .iter()
        .map(|(_, m)| decode("shop.OrdersCountResponse", m))
        .collect();
    assert_eq!(
        items,
        vec![
            json!({"result": "1000000000000"}),
            json!({"result": "2000000000000"}),
            json!({"result": "3000000000000"}),
        ]
    );
    assert_eq!(answer.status(), "0");

    // A stream that fails midway: its items, then the status in the trailers.
    let request = encode("shop.OrdersCountThenFailRequest", json!({"fail_after": 2}));
    let answer = grpc(
        addr,
        "/shop.Orders/count_then_fail",
        "application/grpc",
        prefixed(0, &request),
        &[],
    )
    .await;
    assert_eq!(answer.messages.len(), 2);
    assert_eq!(answer.status(), "10", "aborted");
    let trailers = answer.trailers.as_ref().expect("trailers after the items");
    assert!(trailers["grpc-message"]
        .to_str()
        .unwrap()
        .contains("on purpose"));

    // The method's own error: failed_precondition, with the error in the details.
    let request = encode(
        "shop.OrdersReserveRequest",
        json!({"item": "pen", "quantity": 11}),
    );
    let answer = grpc(
        addr,
        "/shop.Orders/reserve",
        "application/grpc",
        prefixed(0, &request),
        &[],
    )
    .await;
    assert_eq!(answer.status(), "9");
    assert!(answer.headers.contains_key("grpc-status-details-bin"));

    // grpc-timeout.
    let request = encode("shop.OrdersSleepRequest", json!({"ms": "5000"}));
    let answer = grpc(
        addr,
        "/shop.Orders/sleep",
        "application/grpc",
        prefixed(0, &request),
        &[("grpc-timeout", "200m")],
    )
    .await;
    assert_eq!(answer.status(), "4", "deadline_exceeded");

    // Metadata.
    let request = encode("shop.OrdersMetadataRequest", json!({"key": "x-shop-key"}));
    let answer = grpc(
        addr,
        "/shop.Orders/metadata",
        "application/grpc",
        prefixed(0, &request),
        &[("x-shop-key", "hello")],
    )
    .await;
    assert_eq!(
        decode("shop.OrdersMetadataResponse", &answer.messages[0].1),
        json!({"result": "hello"})
    );
    // ... and both ways: the handler's response metadata, as headers of a unary answer
    // and trailers of a stream.
    assert_eq!(answer.headers["x-shop-reply"], "reply-hello");
    let request = encode("shop.OrdersCountRequest", json!({"to": 2}));
    let answer = grpc(
        addr,
        "/shop.Orders/count",
        "application/grpc",
        prefixed(0, &request),
        &[],
    )
    .await;
    assert_eq!(answer.trailers.as_ref().unwrap()["x-shop-count"], "2");

    // gRPC with proto3's JSON as the codec.
    let answer = grpc(
        addr,
        "/shop.Orders/add",
        "application/grpc+json",
        prefixed(0, br#"{"a":"9007199254740993","b":"1"}"#),
        &[],
    )
    .await;
    assert_eq!(answer.headers["content-type"], "application/grpc+json");
    assert_eq!(answer.status(), "0");
    assert_eq!(
        &answer.messages[0].1[..],
        br#"{"result":"9007199254740994"}"#
    );

    // A gzipped request message.
    let request = encode("shop.OrdersAddRequest", json!({"a": 2, "b": 3}));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &request).unwrap();
    let answer = grpc(
        addr,
        "/shop.Orders/add",
        "application/grpc",
        prefixed(1, &gz.finish().unwrap()),
        &[("grpc-encoding", "gzip")],
    )
    .await;
    assert_eq!(answer.status(), "0");
    assert_eq!(
        decode("shop.OrdersAddResponse", &answer.messages[0].1),
        json!({"result": "5"})
    );

    // An unknown method, and a method with no protobuf form.
    let answer = grpc(
        addr,
        "/shop.Orders/nope",
        "application/grpc",
        prefixed(0, &[]),
        &[],
    )
    .await;
    assert_eq!(answer.status(), "12", "unimplemented");
    let answer = grpc(
        addr,
        "/shop.Orders/swap",
        "application/grpc",
        prefixed(0, &[]),
        &[],
    )
    .await;
    assert_eq!(answer.status(), "12");
    let why = answer.headers["grpc-message"].to_str().unwrap();
    assert!(why.contains("tuples"), "{why}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_and_connect_binary_work_over_http_1_1() {
    let gateway = gateway().await;
    let addr = gateway.local_addr();
    let post = |path: &'static str, content_type: &'static str, body: Vec<u8>| async move {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut sender, connection) = http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let request = Request::post(format!("http://{addr}{path}"))
            .header("content-type", content_type)
            .header("connect-protocol-version", "1")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, body)
    };

    let request = encode("shop.OrdersCountRequest", json!({"to": 2}));
    let (status, content_type, body) = post(
        "/shop.Orders/count",
        "application/grpc-web+proto",
        prefixed(0, &request),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/grpc-web+proto")
    );
    let frames = messages(&body);
    assert_eq!(frames.len(), 3, "two items and the trailers");
    assert_eq!(frames[2].0, 0x80);
    assert!(String::from_utf8_lossy(&frames[2].1).contains("grpc-status:0"));

    // Connect, unary, binary.
    let request = encode(
        "shop.OrdersAddRequest",
        json!({"a": "-9007199254740993", "b": "-1"}),
    );
    let (status, content_type, body) = post("/shop.Orders/add", "application/proto", request).await;
    assert_eq!((status, content_type.as_str()), (200, "application/proto"));
    assert_eq!(
        decode("shop.OrdersAddResponse", &body),
        json!({"result": "-9007199254740994"})
    );

    // Connect, unary, proto3 JSON (a Connect client says so with its header).
    let (status, _, body) = post(
        "/shop.Orders/add",
        "application/json",
        br#"{"a":"1","b":"2"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"result": "3"})
    );

    // Connect, server stream, binary.
    let request = encode("shop.OrdersCountRequest", json!({"to": 1}));
    let (status, content_type, body) = post(
        "/shop.Orders/count",
        "application/connect+proto",
        prefixed(0, &request),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/connect+proto")
    );
    let frames = messages(&body);
    assert_eq!(
        decode("shop.OrdersCountResponse", &frames[0].1),
        json!({"result": "1000000000000"})
    );
    assert_eq!(frames[1].0, 0x02);
    let end: Value = serde_json::from_slice(&frames[1].1).unwrap();
    // The handler's response metadata: Connect's trailers.
    assert_eq!(end, json!({"metadata": {"x-shop-count": ["1"]}}));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_callers_keep_serde_s_form() {
    // No Connect header: curl's JSON, bare results, numbers as numbers.
    let gateway = gateway().await;
    let addr = gateway.local_addr();
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) = http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let request = Request::post(format!("http://{addr}/shop.Orders/add"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"a": 1, "b": 2}"#)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"3");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_services_and_answers_files_as_they_are_asked() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct ReflectionRequest {
        #[prost(string, tag = "7")]
        list_services: String,
        #[prost(string, tag = "4")]
        file_containing_symbol: String,
    }
    let gateway = gateway().await;
    let addr = gateway.local_addr();
    for service in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        let mut body = prefixed(
            0,
            &ReflectionRequest {
                list_services: "*".into(),
                file_containing_symbol: String::new(),
            }
            .encode_to_vec(),
        );
        body.extend(prefixed(
            0,
            &ReflectionRequest {
                list_services: String::new(),
                file_containing_symbol: "shop.Orders".into(),
            }
            .encode_to_vec(),
        ));
        let answer = grpc(
            addr,
            &format!("/{service}/ServerReflectionInfo"),
            "application/grpc",
            body,
            &[],
        )
        .await;
        assert_eq!(answer.status(), "0");
        assert_eq!(answer.messages.len(), 2, "one answer per request");
        let listing = String::from_utf8_lossy(&answer.messages[0].1).to_string();
        assert!(listing.contains("shop.Orders"), "{listing}");
        // The file, and the well-known file it imports.
        let files = &answer.messages[1].1;
        let text = String::from_utf8_lossy(files);
        assert!(text.contains("shop.proto") && text.contains("google/protobuf/empty.proto"));
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proto_is_served_and_http2_shares_the_native_port() {
    let gateway = gateway().await;
    let addr = gateway.local_addr();
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, connection) = http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let get = |path: &str| {
        Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let response = sender
        .send_request(get("/.well-known/rrpc/proto"))
        .await
        .unwrap();
    let listing: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(listing["files"][0]["name"], "shop.proto");
    assert_eq!(listing["skipped"][0]["method"], "swap");
    sender.ready().await.unwrap();
    let response = sender
        .send_request(get("/.well-known/rrpc/proto/shop.proto"))
        .await
        .unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(text, codec().proto_files()[0].1);
    gateway.shutdown().await;

    // The native server's port: HTTP/2's preface goes to the gateway.
    let router = router();
    let server = traitrpc_core::Server::new(router.clone())
        .share_port(traitrpc_gateway::on_native_port(router, Default::default()));
    let listener = traitrpc_transport_tcp::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = server.serve(listener, addr);
    let request = encode("shop.OrdersAddRequest", json!({"a": 40, "b": 2}));
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        grpc(
            addr,
            "/shop.Orders/add",
            "application/grpc",
            prefixed(0, &request),
            &[],
        ),
    )
    .await
    .expect("answered");
    assert_eq!(
        decode("shop.OrdersAddResponse", &answer.messages[0].1),
        json!({"result": "42"})
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_negotiates_h2_with_alpn_on_the_native_port() {
    use traitrpc_transport_tcp::tls::{
        Identity, TlsClientConfig, TlsListener, TlsServerConfig, TrustRoots,
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let identity =
        Identity::from_der(vec![certificate.der().to_vec()], key.serialize_der()).unwrap();
    let router = router();
    let server = traitrpc_core::Server::new(router.clone())
        .share_port(traitrpc_gateway::on_native_port(router, Default::default()));
    let listener = TlsListener::bind("127.0.0.1:0", TlsServerConfig::new(identity).unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = server.serve(listener, addr);

    // A gRPC client's TLS: ALPN "h2" only.
    let roots = TrustRoots::from_der([certificate.der().to_vec()]).unwrap();
    let client = TlsClientConfig::new(roots).unwrap();
    let mut config = (**client.rustls_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = encode("shop.OrdersAddRequest", json!({"a": 1, "b": 2}));
    let request = Request::post(format!("https://localhost:{}/shop.Orders/add", addr.port()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(prefixed(0, &request))))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .expect("answered")
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    let frames = messages(&collected.to_bytes());
    assert_eq!(
        decode("shop.OrdersAddResponse", &frames[0].1),
        json!({"result": "3"})
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_reflection_answer_in_the_request_s_own_protocol() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct ListServices {
        #[prost(string, tag = "7")]
        list_services: String,
    }
    let gateway = gateway().await;
    let addr = gateway.local_addr();
    let post = |path: &'static str, content_type: &'static str, body: Vec<u8>| async move {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(connection);
        let request = Request::post(format!("http://{addr}{path}"))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (content_type, messages(&body))
    };
    // A Connect stream refused before it starts: its own content type, the end message.
    let (content_type, frames) = post(
        "/shop.Orders/nope",
        "application/connect+proto",
        prefixed(0, &[]),
    )
    .await;
    assert_eq!(content_type, "application/connect+proto");
    assert_eq!(frames[0].0, 0x02);
    assert!(String::from_utf8_lossy(&frames[0].1).contains("unimplemented"));

    let list = prefixed(
        0,
        &ListServices {
            list_services: "*".into(),
        }
        .encode_to_vec(),
    );
    for (content_type, end_flag) in [
        ("application/connect+proto", 0x02),
        ("application/grpc-web+proto", 0x80),
    ] {
        let (answered_as, frames) = post(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            content_type,
            list.clone(),
        )
        .await;
        assert_eq!(answered_as, content_type);
        assert_eq!(frames.len(), 2, "the listing, then the end");
        let listing = String::from_utf8_lossy(&frames[0].1).to_string();
        assert!(listing.contains("shop.Orders"), "{listing}");
        assert!(
            !listing.contains("ServerReflection"),
            "only services that resolve are listed"
        );
        assert_eq!(frames[1].0, end_flag);
    }
    gateway.shutdown().await;
}
