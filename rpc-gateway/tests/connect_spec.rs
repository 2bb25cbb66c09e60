//! Connect's protocol as its clients speak it (issue 20, first part): proto3's JSON
//! (64-bit integers as strings, bytes as base64) next to serde's,
//! gzip request bodies and stream envelopes, GET with `base64=1` and `compression=gzip`,
//! `unimplemented` for what is not served (an unknown method, an unknown encoding), a
//! method's own error as a Connect error detail, a stream refused before it starts
//! answered as Connect streams answer (200, the error in the end message), and early
//! refusals that read the body first, so a client still writing it gets the answer
//! instead of a reset connection. Real calls over loopback, by curl or raw HTTP/1.1.

use std::io::Write;
use std::process::Command;

use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traitrpc_core::{service, Streaming};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Level {
    Low,
    High,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob {
    pub id: u64,
    pub data: Vec<u8>,
    pub level: Level,
}

#[service]
pub trait Store {
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn put(&self, blob: Blob) -> String;
    async fn count(&self, to: u64) -> Streaming<u64>;
    async fn take(&self, n: u32) -> Result<u32, String>;
}

struct S;

impl Store for S {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    async fn put(&self, blob: Blob) -> String {
        format!("{} {:?} {:?}", blob.id, blob.data, blob.level)
    }
    async fn count(&self, to: u64) -> Streaming<u64> {
        Streaming::iter(0..to)
    }
    async fn take(&self, n: u32) -> Result<u32, String> {
        if n > 10 {
            Err(format!("only 10 left, not {n}"))
        } else {
            Ok(10 - n)
        }
    }
}

async fn gateway() -> traitrpc_gateway::GatewayHandle {
    traitrpc_gateway::serve(
        "127.0.0.1:0",
        StoreServer::new(S).into(),
        Default::default(),
    )
    .await
    .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// curl with `args`, the body (if any) from a file; the status and the body.
async fn curl(url: String, args: Vec<String>, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let file = std::env::temp_dir().join(format!(
            "traitrpc-connect-spec-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let mut command = Command::new("curl");
        command.args(["-s", "--max-time", "20", "-w", "\n%{http_code}"]);
        command.args(&args);
        if let Some(body) = &body {
            std::fs::write(&file, body).unwrap();
            command
                .arg("--data-binary")
                .arg(format!("@{}", file.display()));
        }
        let out = command
            .arg(&url)
            .output()
            .expect("curl runs (install curl)");
        let _ = std::fs::remove_file(&file);
        let split = out
            .stdout
            .iter()
            .rposition(|b| *b == b'\n')
            .expect("status line");
        let status = std::str::from_utf8(&out.stdout[split + 1..])
            .unwrap()
            .parse()
            .unwrap();
        (status, out.stdout[..split].to_vec())
    })
    .await
    .unwrap()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn json_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-H".to_string(),
        "Content-Type: application/json".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto3_json_and_serde_json_are_both_read() {
    let gateway = gateway().await;
    let base = format!("http://{}/Store", gateway.local_addr());
    // 64-bit integers as strings, as proto3's JSON writes them; and as numbers.
    let (status, body) = curl(
        format!("{base}/add"),
        json_args(&[]),
        Some(br#"{"a":"9007199254740993","b":"-1"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (status, body_json(&body)),
        (200, json!(9007199254740992i64))
    );
    let (status, body) = curl(
        format!("{base}/add"),
        json_args(&[]),
        Some(br#"{"a":1,"b":2}"#.to_vec()),
    )
    .await;
    assert_eq!((status, body_json(&body)), (200, json!(3)));
    // Nested: a u64 as a string, bytes as base64.
    let (status, body) = curl(
        format!("{base}/put"),
        json_args(&[]),
        Some(br#"{"blob":{"id":"18446744073709551615","data":"AQID","level":"High"}}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (status, body_json(&body)),
        (200, json!("18446744073709551615 [1, 2, 3] High"))
    );
    // What fits neither spelling is refused, naming it.
    let (status, body) = curl(
        format!("{base}/add"),
        json_args(&[]),
        Some(br#"{"a":"one","b":2}"#.to_vec()),
    )
    .await;
    let body = body_json(&body);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("`a`"), "{body}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_envelopes_and_gets_are_read_and_other_encodings_named() {
    let gateway = gateway().await;
    let base = format!("http://{}/Store", gateway.local_addr());
    let (status, body) = curl(
        format!("{base}/add"),
        json_args(&["-H", "Content-Encoding: gzip"]),
        Some(gzip(br#"{"a":40,"b":2}"#)),
    )
    .await;
    assert_eq!((status, body_json(&body)), (200, json!(42)));
    // An encoding the gateway does not read: unimplemented, naming what it reads.
    let (status, body) = curl(
        format!("{base}/add"),
        json_args(&["-H", "Content-Encoding: br"]),
        Some(br#"{"a":40,"b":2}"#.to_vec()),
    )
    .await;
    let body = body_json(&body);
    assert_eq!(
        (status, body["code"].as_str()),
        (501, Some("unimplemented")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("gzip, identity"),
        "{body}"
    );
    // A server stream whose request envelope is gzipped (flag 0x01).
    let message = gzip(br#"{"to":3}"#);
    let mut envelope = vec![1u8];
    envelope.extend_from_slice(&(message.len() as u32).to_be_bytes());
    envelope.extend_from_slice(&message);
    let (status, body) = curl(
        format!("{base}/count"),
        vec![
            "-H".into(),
            "Content-Type: application/connect+json".into(),
            "-H".into(),
            "Connect-Content-Encoding: gzip".into(),
        ],
        Some(envelope),
    )
    .await;
    assert_eq!(status, 200);
    let mut items = Vec::new();
    let mut rest = &body[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        if rest[0] & 0x02 == 0 {
            items.push(body_json(&rest[5..5 + len]));
        } else {
            assert_eq!(body_json(&rest[5..5 + len]), json!({}), "a clean end");
        }
        rest = &rest[5 + len..];
    }
    assert_eq!(items, [json!(0), json!(1), json!(2)]);
    // GET with base64=1 (URL-safe, unpadded), and with compression=gzip too.
    let url_safe = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let (status, body) = curl(
        format!(
            "{base}/add?encoding=json&base64=1&message={}",
            url_safe(br#"{"a":"5","b":6}"#)
        ),
        vec![],
        None,
    )
    .await;
    assert_eq!((status, body_json(&body)), (200, json!(11)));
    let (status, body) = curl(
        format!(
            "{base}/add?encoding=json&base64=1&compression=gzip&message={}",
            url_safe(&gzip(br#"{"a":1,"b":1}"#))
        ),
        vec![],
        None,
    )
    .await;
    assert_eq!((status, body_json(&body)), (200, json!(2)));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_or_service_is_unimplemented() {
    let gateway = gateway().await;
    for path in ["Store/nope", "Nope/add"] {
        let (status, body) = curl(
            format!("http://{}/{path}", gateway.local_addr()),
            json_args(&[]),
            Some(b"{}".to_vec()),
        )
        .await;
        let body = body_json(&body);
        assert_eq!(
            (status, body["code"].as_str()),
            (501, Some("unimplemented")),
            "{path}: {body}"
        );
    }
    gateway.shutdown().await;
}

/// A refusal sent before the body is read, then the connection closed, resets the
/// connection under a client still writing: it sees a broken pipe, not the answer. Each
/// early refusal reads the body first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_reach_a_client_still_writing_its_body() {
    // A body larger than the sockets' buffers hold, within the gateway's body limit.
    let gateway = traitrpc_gateway::serve(
        "127.0.0.1:0",
        StoreServer::new(S).into(),
        traitrpc_gateway::GatewayConfig::default().max_body(64 << 20),
    )
    .await
    .unwrap();
    let addr = gateway.local_addr();
    let body = vec![b' '; 24 << 20];
    for (headers, want) in [
        ("Content-Type: text/plain\r\n", "415"),
        (
            "Content-Type: application/json\r\nContent-Encoding: br\r\n",
            "501",
        ),
        (
            "Content-Type: application/json\r\nConnect-Timeout-Ms: soon\r\n",
            "400",
        ),
    ] {
        for round in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /Store/add HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
                body.len()
            );
            let (mut reader, mut writer) = stream.split();
            let write = async {
                writer.write_all(head.as_bytes()).await?;
                writer.write_all(&body).await
            };
            let mut answer = Vec::new();
            let (written, read) = tokio::join!(write, reader.read_to_end(&mut answer));
            written.unwrap_or_else(|e| {
                panic!("{headers:?} round {round}: writing the body failed: {e}")
            });
            read.unwrap_or_else(|e| {
                panic!("{headers:?} round {round}: reading the answer failed: {e}")
            });
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {want}")),
                "{headers:?}: {answer}"
            );
        }
    }
    gateway.shutdown().await;
}

/// The envelopes of a Connect stream answer: the items, and the end message.
fn envelopes(body: &[u8]) -> (Vec<Value>, Value) {
    let mut items = Vec::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let message = body_json(&rest[5..5 + len]);
        if rest[0] & 0x02 != 0 {
            return (items, message);
        }
        items.push(message);
        rest = &rest[5 + len..];
    }
    panic!("no end message in {:?}", String::from_utf8_lossy(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_s_own_error_is_a_connect_error_detail() {
    use base64::Engine;
    let gateway = gateway().await;
    let (status, body) = curl(
        format!("http://{}/Store/take", gateway.local_addr()),
        json_args(&[]),
        Some(br#"{"n":11}"#.to_vec()),
    )
    .await;
    let body = body_json(&body);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("failed_precondition")),
        "{body}"
    );
    let detail = &body["details"][0];
    assert_eq!(detail["type"], "google.protobuf.StringValue", "{body}");
    assert_eq!(detail["debug"], json!("only 10 left, not 11"));
    // The value is the StringValue's protobuf bytes: field 1, the error's JSON text.
    let value = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(detail["value"].as_str().unwrap())
        .unwrap();
    let text = br#""only 10 left, not 11""#;
    assert_eq!(value[..2], [0x0a, text.len() as u8]);
    assert_eq!(&value[2..], text);
    // curl users keep the error as JSON.
    assert_eq!(body["error"], json!("only 10 left, not 11"));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refused_before_it_starts_answers_200_with_the_error_in_its_end() {
    let gateway = gateway().await;
    let url = format!("http://{}/Store/count", gateway.local_addr());
    let stream_args = |extra: &[&str]| {
        let mut args = vec![
            "-H".to_string(),
            "Content-Type: application/connect+json".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    for (args, body, code) in [
        (
            stream_args(&[]),
            b"not an envelope".to_vec(),
            "invalid_argument",
        ),
        (
            stream_args(&["-H", "Connect-Content-Encoding: br"]),
            vec![0, 0, 0, 0, 2, b'{', b'}'],
            "unimplemented",
        ),
        (
            stream_args(&["-H", "Connect-Timeout-Ms: soon"]),
            vec![0, 0, 0, 0, 2, b'{', b'}'],
            "invalid_argument",
        ),
    ] {
        let (status, answer) = curl(url.clone(), args, Some(body)).await;
        let (items, end) = envelopes(&answer);
        assert_eq!((status, items.len()), (200, 0), "{end}");
        assert_eq!(end["error"]["code"], code, "{end}");
    }
    gateway.shutdown().await;
}
