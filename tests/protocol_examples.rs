//! The worked examples of `docs/PROTOCOL.md`, byte for byte against a real server: a
//! client in another language is written from that document alone, so its bytes must be
//! what the implementation sends and accepts. Each single-line example is also looked up
//! in the document, so the two cannot drift apart.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use traitrpc_core::service;

#[service]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, String>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, String> {
        if b == 0 {
            Err("division by zero".into())
        } else {
            Ok(a / b)
        }
    }
}

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap()
}

/// `example` appears in the document as written.
fn documented(example: &str) {
    assert!(
        doc().contains(example),
        "docs/PROTOCOL.md no longer shows `{example}`"
    );
}

async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await.unwrap();
    buf
}

#[tokio::test]
async fn the_worked_examples_are_what_a_server_sends_and_accepts() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", CalculatorServer::new(Calc))
        .await
        .unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();

    // Section 12: hellos and settings.
    let client_hello = "52 52 50 43 00 04 00 00 01 00 00 00";
    let server_settings = "00 09 01 04 00 04 00 00 02 01 03";
    let settings = "00 06 01 04 00 04 00 00";
    documented(settings);
    documented(server_settings);
    stream.write_all(&hex(client_hello)).await.unwrap();
    assert_eq!(
        read_exact(&mut stream, 12).await,
        hex("52 52 50 43 00 04 00 00 01 00 00 00")
    );
    assert_eq!(read_exact(&mut stream, 11).await, hex(server_settings));
    stream.write_all(&hex(settings)).await.unwrap();

    // add(1, 2), call id 1, a budget of 1,000,000 µs, no metadata.
    let request = "00 00 00 25 01 00 00 00 00 00 00 00 00 01 00 00 00 00 00 0f 42 40 \
                   0a 43 61 6c 63 75 6c 61 74 6f 72 03 61 64 64 00 00 02 04";
    stream.write_all(&hex(request)).await.unwrap();
    assert_eq!(
        read_exact(&mut stream, 16).await,
        hex("00 00 00 0c 02 00 00 00 00 00 00 00 00 01 00 06"),
        "RESPONSE OK, payload 3i64 = zigzag 6"
    );

    // div(1, 0) -> Err("division by zero"), call id 2.
    let mut div = hex("00 00 00 25 01 00 00 00 00 00 00 00 00 02 00 00 00 00 00 0f 42 40 0a");
    div.extend_from_slice(b"Calculator");
    div.extend_from_slice(&hex("03"));
    div.extend_from_slice(b"div");
    div.extend_from_slice(&hex("00 00 02 00"));
    stream.write_all(&div).await.unwrap();
    let div_answer = "00 00 00 1c 02 00 00 00 00 00 00 00 00 02 01 10 64 69 76 69 73 69 6f 6e 20 62 79 20 7a 65 72 6f";
    documented(div_answer);
    assert_eq!(read_exact(&mut stream, 32).await, hex(div_answer));

    // Section 20: a PING is answered with a PONG carrying its data.
    let ping = "00 00 00 12 05 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01";
    let pong = "00 00 00 12 06 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01";
    documented(ping);
    documented(pong);
    stream.write_all(&hex(ping)).await.unwrap();
    assert_eq!(read_exact(&mut stream, 22).await, hex(pong));

    // Section 12: a version 2 client is accepted without settings.
    let mut old = TcpStream::connect(server.local_addr()).await.unwrap();
    old.write_all(&hex("52 52 50 43 00 02 00 00 01 00 00 00"))
        .await
        .unwrap();
    let v2 = "52 52 50 43 00 02 00 00 01 00 00 00";
    documented(v2);
    assert_eq!(read_exact(&mut old, 12).await, hex(v2));
    old.write_all(&hex(request)).await.unwrap();
    assert_eq!(
        read_exact(&mut old, 16).await,
        hex("00 00 00 0c 02 00 00 00 00 00 00 00 00 01 00 06")
    );

    // A version from the future is refused with the server's own version.
    let mut future = TcpStream::connect(server.local_addr()).await.unwrap();
    future
        .write_all(&hex("52 52 50 43 00 07 00 00 01 00 00 00"))
        .await
        .unwrap();
    let refusal = "52 52 50 43 00 06 01 00 01 00 00 00";
    documented(refusal);
    assert_eq!(read_exact(&mut future, 12).await, hex(refusal));
    server.shutdown().await;
}

/// Reads one frame (length prefix included) as written.
async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut frame = read_exact(stream, 4).await;
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    frame.extend(read_exact(stream, len).await);
    frame
}

/// Sends `request` and checks that the answer is `answer`; both must be in the document.
async fn exchange(stream: &mut TcpStream, request: &str, answer: &str) {
    documented(request);
    documented(answer);
    stream.write_all(&hex(request)).await.unwrap();
    assert_eq!(
        read_frame(stream).await,
        hex(answer),
        "the answer to {request}"
    );
}

#[tokio::test]
async fn the_version_5_examples_are_what_a_server_sends_and_accepts() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", CalculatorServer::new(Calc))
        .await
        .unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();

    // Section 22: hellos and settings.
    let hello = "52 52 50 43 00 05 00 00 01 00 00 00";
    let server_settings = "00 0c 01 04 00 04 00 00 02 01 03 04 01 02";
    let client_settings = "00 09 01 04 00 04 00 00 04 01 02";
    for example in [hello, server_settings, client_settings] {
        documented(example);
    }
    stream.write_all(&hex(hello)).await.unwrap();
    assert_eq!(read_exact(&mut stream, 12).await, hex(hello));
    assert_eq!(read_exact(&mut stream, 14).await, hex(server_settings));
    stream.write_all(&hex(client_settings)).await.unwrap();

    let three = "00 00 00 05 02 00 01 00 06";
    // add(1, 2): call id 1, budget 1,000 ms, binds method id 1 to Calculator.add.
    exchange(
        &mut stream,
        "00 00 00 18 01 04 01 a1 1f 01 0a 43 61 6c 63 75 6c 61 74 6f 72 03 61 64 64 00 02 04",
        three,
    )
    .await;
    // The same call again: call id 1 (answered, so free), method id 1.
    exchange(&mut stream, "00 00 00 09 01 00 01 a1 1f 01 00 02 04", three).await;
    // div(1, 0): call id 2, binds method id 2 to Calculator.div.
    exchange(
        &mut stream,
        "00 00 00 18 01 04 02 a1 1f 02 0a 43 61 6c 63 75 6c 61 74 6f 72 03 64 69 76 00 02 00",
        "00 00 00 15 02 00 02 01 10 64 69 76 69 73 69 6f 6e 20 62 79 20 7a 65 72 6f",
    )
    .await;
    // add(1, 2) with metadata token = "abc", call id 3.
    exchange(
        &mut stream,
        "00 00 00 14 01 00 03 a1 1f 01 01 05 74 6f 6b 65 6e 00 03 61 62 63 02 04",
        "00 00 00 05 02 00 03 00 06",
    )
    .await;
    // Section 23: add(1, 2) with its arguments compressed (lz4), call id 4.
    exchange(
        &mut stream,
        "00 00 00 0c 01 02 04 a1 1f 01 00 01 02 20 02 04",
        "00 00 00 05 02 00 04 00 06",
    )
    .await;
    // A PING and its PONG.
    exchange(
        &mut stream,
        "00 00 00 0b 05 00 00 00 00 00 00 00 00 00 01",
        "00 00 00 0b 06 00 00 00 00 00 00 00 00 00 01",
    )
    .await;
    // A method id that was never bound: GO_AWAY PROTOCOL_ERROR, last id 4, and close.
    exchange(
        &mut stream,
        "00 00 00 08 01 00 05 a1 1f 09 00 00",
        "00 00 00 2f 04 00 04 01 70 72 6f 74 6f 63 6f 6c 20 65 72 72 6f 72 3a 20 6d 65 74 68 6f 64 20 69 64 20 39 20 77 61 73 20 6e 65 76 65 72 20 62 6f 75 6e 64",
    )
    .await;
    server.shutdown().await;
}

/// Section 24: a version 6 handshake with the server's fingerprints, and a call in JSON
/// by name, byte for byte.
#[tokio::test]
async fn the_version_6_examples_are_what_a_server_sends_and_accepts() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", CalculatorServer::new(Calc))
        .await
        .unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let hello = "52 52 50 43 00 06 00 00 01 00 00 00";
    let settings = "00 0c 01 04 00 04 00 00 02 01 03 04 01 02";
    // One line per entry, as the document shows them.
    let entries = [
        "0a 43 61 6c 63 75 6c 61 74 6f 72 03 61 64 64 94 01 5a 48 50 27 9e 7d",
        "0a 43 61 6c 63 75 6c 61 74 6f 72 03 64 69 76 8f 4c 20 2f 20 7b fe b4",
        "14 72 70 63 2e 68 65 61 6c 74 68 2e 76 31 2e 48 65 61 6c 74 68 05 63 68 65 63 6b 6d 48 1e 8f 9a 84 2c 0c",
        "14 72 70 63 2e 68 65 61 6c 74 68 2e 76 31 2e 48 65 61 6c 74 68 05 77 61 74 63 68 5d 84 25 c0 9e 6f 9e 0d",
        "1c 72 70 63 2e 72 65 66 6c 65 63 74 69 6f 6e 2e 76 31 2e 52 65 66 6c 65 63 74 69 6f 6e 08 64 65 73 63 72 69 62 65 6a 2c f7 05 e3 e5 de 26",
        "1c 72 70 63 2e 72 65 66 6c 65 63 74 69 6f 6e 2e 76 31 2e 52 65 66 6c 65 63 74 69 6f 6e 04 6c 69 73 74 a1 a6 95 41 d0 f7 28 94",
        "1c 72 70 63 2e 72 65 66 6c 65 63 74 69 6f 6e 2e 76 31 2e 52 65 66 6c 65 63 74 69 6f 6e 06 73 63 68 65 6d 61 dd 30 77 1f 30 36 1e fd",
    ];
    for example in [hello, settings, "00 00 00 f8"].iter().chain(&entries) {
        documented(example);
    }
    stream.write_all(&hex(hello)).await.unwrap();
    assert_eq!(read_exact(&mut stream, 12).await, hex(hello));
    assert_eq!(read_exact(&mut stream, 14).await, hex(settings));
    let block: Vec<u8> = entries.iter().flat_map(|e| hex(e)).collect();
    assert_eq!(read_exact(&mut stream, 4).await, hex("00 00 00 f8"));
    assert_eq!(read_exact(&mut stream, block.len()).await, block);
    stream
        .write_all(&hex("00 09 01 04 00 04 00 00 04 01 02"))
        .await
        .unwrap();
    // add(1, 2) in JSON by name: flags NAMED | JSON, binding method id 1.
    let request = "00 00 00 23 01 0c 01 a1 1f 01 0a 43 61 6c 63 75 6c 61 74 6f 72 03 61 64 64 00 7b 22 61 22 3a 31 2c 22 62 22 3a 32 7d";
    let answer = "00 00 00 05 02 08 01 00 33";
    documented(request);
    documented(answer);
    stream.write_all(&hex(request)).await.unwrap();
    assert_eq!(read_frame(&mut stream).await, hex(answer));
    // A value this server's schema cannot read: SCHEMA_MISMATCH (16), naming it.
    let request = "00 00 00 16 01 08 02 a1 1f 01 00 7b 22 61 22 3a 31 2c 22 62 22 3a 22 78 22 7d";
    documented(request);
    stream.write_all(&hex(request)).await.unwrap();
    let refusal = read_frame(&mut stream).await;
    assert_eq!(refusal[..8], hex("00 00 00 93 02 00 02 10")[..]);
    let message = String::from_utf8_lossy(&refusal[8..]);
    assert!(
        message.starts_with("parameter `b`: invalid type: string \"x\", expected i64"),
        "{message}"
    );
    server.shutdown().await;
}

/// Section 24.2: the canonical form and fingerprint of `Calculator.add`.
#[test]
fn the_documented_fingerprint_is_the_method_s() {
    let schema = CalculatorClient::service_schema();
    let add = schema.method("add").unwrap();
    let form = traitrpc_core::schema::canonical_form(add);
    documented(&form);
    assert_eq!(add.fingerprint.to_string(), "94015a4850279e7d");
    documented("94015a4850279e7d");
}
