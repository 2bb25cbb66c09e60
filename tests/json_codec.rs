//! JSON payloads on the native protocol (version 4, `docs/PROTOCOL.md` section 21): the
//! documented bytes against the real server, `JsonClient` end to end, reflection in both
//! codecs, and compatibility with older clients and servers.

mod common;

use std::time::Duration;

use common::raw::{next_frame, send_frame};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use traitrpc_core::json::{JsonClient, MethodKind};
use traitrpc_core::protocol::{self, Frame, PayloadCodec, HANDSHAKE_LEN};
use traitrpc_core::reflection::ReflectionClient;
use traitrpc_core::{service, CallError, ClientConfig, Metadata, RpcError, Streaming};

/// A point, described exactly in reflection (it derives `JsonSchema`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Point {
    x: i32,
    y: i32,
}

#[service]
pub trait Calculator {
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String>;
    async fn repeat(&self, value: u32, times: u32) -> Streaming<u32>;
    async fn shift(&self, p: Point, by: Option<i32>) -> Point;
    async fn header(&self, key: String) -> Option<String>;
    async fn sum(&self, items: Streaming<u32>) -> u32;
}

struct Calc;

impl Calculator for Calc {
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
    async fn repeat(&self, value: u32, times: u32) -> Streaming<u32> {
        Streaming::iter(std::iter::repeat_n(value, times as usize))
    }
    async fn shift(&self, p: Point, by: Option<i32>) -> Point {
        let by = by.unwrap_or(1);
        Point {
            x: p.x + by,
            y: p.y + by,
        }
    }
    async fn header(&self, key: String) -> Option<String> {
        let context = traitrpc_core::context::current()?;
        context.metadata().get_str(&key).map(str::to_owned)
    }
    async fn sum(&self, mut items: Streaming<u32>) -> u32 {
        let mut total = 0;
        while let Some(Ok(item)) = items.next().await {
            total += item;
        }
        total
    }
}

async fn server() -> traitrpc_core::ServerHandle<std::net::SocketAddr> {
    traitrpc_transport_tcp::serve("127.0.0.1:0", CalculatorServer::new(Calc))
        .await
        .unwrap()
}

async fn json_client(addr: std::net::SocketAddr) -> JsonClient {
    let config = ClientConfig::default().codec(PayloadCodec::Json);
    let connection = traitrpc_transport_tcp::connect_with_config(addr, config)
        .await
        .unwrap();
    assert_eq!(connection.protocol_version(), protocol::VERSION);
    JsonClient::new(connection).unwrap()
}

/// Parses the hex dumps of PROTOCOL.md (`00 0a ...`).
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[tokio::test]
async fn the_documented_bytes_are_what_the_server_speaks() {
    let server = server().await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream
        .write_all(&hex("52 52 50 43 00 04 00 00 01 00 00 00"))
        .await
        .unwrap();
    let mut reply = [0u8; HANDSHAKE_LEN + 11];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(
        reply.to_vec(),
        hex("52 52 50 43 00 04 00 00 01 00 00 00  00 09 01 04 00 04 00 00 02 01 03"),
        "server hello and settings, section 21"
    );
    stream
        .write_all(&hex("00 09 01 04 00 04 00 00 03 01 01"))
        .await
        .unwrap();
    let request = hex(
        "00 00 00 30 01 00 00 00 00 00 00 00 00 01 00 00 00 00 00 0f 42 40
         0a 43 61 6c 63 75 6c 61 74 6f 72 03 61 64 64 00 00
         7b 22 61 22 3a 31 2c 22 62 22 3a 32 7d",
    );
    stream.write_all(&request).await.unwrap();
    let mut response = [0u8; 16];
    stream.read_exact(&mut response).await.unwrap();
    assert_eq!(
        response.to_vec(),
        hex("00 00 00 0c 02 00 00 00 00 00 00 00 00 01 00 33")
    );

    // divide(1, 0), call id 2: the application error as JSON.
    let mut divide = vec![protocol::kind::REQUEST, 0];
    divide.extend_from_slice(&2u64.to_be_bytes());
    divide.extend_from_slice(&1_000_000u64.to_be_bytes());
    divide.extend_from_slice(b"\x0aCalculator\x06divide\x00\x00[1,0]");
    send_frame(&mut stream, &divide).await;
    let mut answer = vec![0u8; 33];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(
        answer,
        hex("00 00 00 1d 02 00 00 00 00 00 00 00 00 02 01 22 64 69 76 69 73 69 6f 6e 20 62 79 20 7a 65 72 6f 22")
    );

    // A stream of one item 7, call id 4: the item, then the end (empty payload).
    let mut repeat = vec![protocol::kind::REQUEST, 0];
    repeat.extend_from_slice(&4u64.to_be_bytes());
    repeat.extend_from_slice(&1_000_000u64.to_be_bytes());
    repeat.extend_from_slice(b"\x0aCalculator\x06repeat\x00\x00{\"value\":7,\"times\":1}");
    send_frame(&mut stream, &repeat).await;
    let mut frames = vec![0u8; 30];
    stream.read_exact(&mut frames).await.unwrap();
    assert_eq!(
        frames,
        hex("00 00 00 0b 10 00 00 00 00 00 00 00 00 04 37
             00 00 00 0b 02 00 00 00 00 00 00 00 00 04 00")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn json_calls_by_name_reach_the_same_implementation() {
    let server = server().await;
    let calls = json_client(server.local_addr()).await;
    assert_eq!(
        calls
            .call("Calculator", "add", &json!({"a": 1, "b": 2}))
            .await
            .unwrap(),
        json!(3)
    );
    assert_eq!(
        calls
            .call("Calculator", "add", &json!([40, 2]))
            .await
            .unwrap(),
        json!(42),
        "arguments in parameter order"
    );
    assert_eq!(
        calls
            .call("Calculator", "shift", &json!({"p": {"x": 1, "y": 2}}))
            .await
            .unwrap(),
        json!({"x": 2, "y": 3}),
        "structs by field name, a missing Option is None"
    );
    match calls
        .call("Calculator", "divide", &json!({"a": 1, "b": 0}))
        .await
    {
        Err(CallError::Application(error)) => assert_eq!(error, json!("division by zero")),
        other => panic!("expected the method's error, got {other:?}"),
    }
    match calls
        .call("Calculator", "add", &json!({"a": "one", "b": 2}))
        .await
    {
        Err(CallError::Rpc(RpcError::InvalidArguments { message })) => {
            assert!(message.contains("`a`"), "{message}")
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
    match calls.call("Calculator", "add", &json!({"a": 1})).await {
        Err(CallError::Rpc(RpcError::InvalidArguments { message })) => {
            assert!(message.contains("missing parameter `b`"), "{message}")
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
    match calls.call("Calculator", "add", &json!([1])).await {
        Err(CallError::Rpc(RpcError::InvalidArguments { message })) => {
            assert!(message.contains("takes 2 arguments"), "{message}")
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
    match calls.call("Calculator", "sum", &json!({})).await {
        Err(CallError::Rpc(RpcError::InvalidArguments { message })) => {
            assert!(message.contains("takes a stream"), "{message}")
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
    assert!(matches!(
        calls.call("Calculator", "nope", &json!({})).await,
        Err(CallError::Rpc(RpcError::UnknownMethod { .. }))
    ));
    assert!(matches!(
        calls.call("Nope", "add", &json!({})).await,
        Err(CallError::Rpc(RpcError::UnknownService { .. }))
    ));
    let mut metadata = Metadata::new();
    metadata.insert("x-user", "ann").unwrap();
    assert_eq!(
        calls
            .with_metadata(metadata)
            .call("Calculator", "header", &json!({"key": "x-user"}))
            .await
            .unwrap(),
        json!("ann")
    );
    // A server stream, past several windows of credit.
    let items: Vec<_> = calls
        .server_stream(
            "Calculator",
            "repeat",
            &json!({"value": 9, "times": 50_000}),
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 50_000);
    assert!(items.iter().all(|i| matches!(i, Ok(v) if *v == json!(9))));
    // A unary method taken for a stream says so instead of ending empty.
    let mistaken: Vec<_> = calls
        .server_stream("Calculator", "add", &json!([1, 2]))
        .await
        .unwrap()
        .collect()
        .await;
    match &mistaken[..] {
        [Err(RpcError::Protocol(message))] => assert!(message.contains("unary"), "{message}"),
        other => panic!("expected one error, got {other:?}"),
    }
    // The typed client still works on its own (bincode) connection to the same port.
    let typed = CalculatorClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    assert_eq!(typed.add(1, 2).await.unwrap(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn reflection_describes_services_in_both_codecs() {
    let server = server().await;
    let reflection = ReflectionClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let services = reflection.list().await.unwrap();
    let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Calculator",
            "rpc.health.v1.Health",
            "rpc.reflection.v1.Reflection"
        ]
    );
    let calculator = reflection
        .describe("Calculator".into())
        .await
        .unwrap()
        .expect("hosted");
    let shift = calculator
        .methods
        .iter()
        .find(|m| m.name == "shift")
        .unwrap();
    assert_eq!(shift.params, ["p", "by"]);
    assert_eq!(shift.kind, MethodKind::Unary);
    let arguments = shift.arguments.value();
    assert_eq!(
        arguments["required"],
        json!(["p"]),
        "an Option may be left out"
    );
    assert_eq!(arguments["properties"]["p"]["title"], "Point");
    assert_eq!(
        arguments["properties"]["p"]["properties"]["x"]["type"],
        "integer"
    );
    assert_eq!(arguments["additionalProperties"], false);
    let divide = calculator
        .methods
        .iter()
        .find(|m| m.name == "divide")
        .unwrap();
    assert_eq!(divide.error.as_ref().unwrap().value()["type"], "string");
    let repeat = calculator
        .methods
        .iter()
        .find(|m| m.name == "repeat")
        .unwrap();
    assert_eq!(repeat.kind, MethodKind::ServerStream);
    assert_eq!(repeat.result.value()["type"], "integer", "each item");

    // In JSON, a schema is an object, not a string to parse again.
    let calls = json_client(server.local_addr()).await;
    let described = calls
        .call(
            "rpc.reflection.v1.Reflection",
            "describe",
            &json!({"service": "Calculator"}),
        )
        .await
        .unwrap();
    let add = &described["methods"][0];
    assert_eq!(add["name"], "add");
    assert_eq!(add["kind"], "unary");
    assert_eq!(add["idempotent"], true);
    assert_eq!(add["arguments"]["properties"]["a"]["type"], "integer");
    server.shutdown().await;
}

#[tokio::test]
async fn older_clients_keep_bincode_and_json_needs_version_4() {
    let server = server().await;
    // A version 3 client (the previous release) gets no CODECS and speaks bincode.
    let (mut stream, hello) = common::raw::handshaken_as(server.local_addr(), 3).await;
    assert_eq!((hello.status, hello.version), (0, 3));
    let mut add = vec![protocol::kind::REQUEST, 0];
    add.extend_from_slice(&1u64.to_be_bytes());
    add.extend_from_slice(&1_000_000u64.to_be_bytes());
    add.extend_from_slice(b"\x0aCalculator\x03add\x00\x00\x02\x04");
    send_frame(&mut stream, &add).await;
    match next_frame(&mut stream).await {
        Some(Frame::Response(response)) => {
            assert_eq!((response.status, &response.payload[..]), (0, &[6u8][..]))
        }
        other => panic!("expected a response, got {other:?}"),
    }
    // The typed client pinned to version 3 still works.
    let pinned = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default().max_protocol_version(3),
    )
    .await
    .unwrap();
    assert_eq!(pinned.protocol_version(), 3);
    assert_eq!(CalculatorClient::new(pinned).add(2, 3).await.unwrap(), 5);
    // JSON cannot be had on version 3: a typed error, nothing sent.
    let refused = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default()
            .max_protocol_version(3)
            .codec(PayloadCodec::Json),
    )
    .await;
    assert!(matches!(
        refused,
        Err(RpcError::CodecUnsupported {
            codec: PayloadCodec::Json,
            version: 3
        })
    ));
    server.shutdown().await;
}

/// A server of the previous release: refuses version 4 (answering with its own 3),
/// accepts 3 with settings that have no CODECS, and answers nothing else.
async fn version_3_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut hello = [0u8; HANDSHAKE_LEN];
                if stream.read_exact(&mut hello).await.is_err() {
                    return;
                }
                let version = u16::from_be_bytes([hello[4], hello[5]]);
                let status = if version == 3 { 0 } else { 1 };
                let mut reply = hex("52 52 50 43 00 03 00 00 01 00 00 00");
                reply[6] = status;
                if status == 0 {
                    reply.extend_from_slice(&hex("00 06 01 04 00 04 00 00"));
                }
                let _ = stream.write_all(&reply).await;
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn against_a_version_3_server_bincode_falls_back_and_json_is_refused() {
    let addr = version_3_server().await;
    let connection = traitrpc_transport_tcp::connect(addr).await.unwrap();
    assert_eq!(
        connection.protocol_version(),
        3,
        "fell back to the server's version"
    );
    let json = traitrpc_transport_tcp::connect_with_config(
        addr,
        ClientConfig::default().codec(PayloadCodec::Json),
    )
    .await;
    assert!(
        matches!(
            json,
            Err(RpcError::CodecUnsupported {
                codec: PayloadCodec::Json,
                version: 3
            })
        ),
        "{json:?}"
    );
    assert!(matches!(
        JsonClient::new(connection),
        Err(RpcError::CodecUnsupported { .. })
    ));
}
