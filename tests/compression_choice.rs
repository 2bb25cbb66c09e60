//! Choosing what to compress (version 5, `docs/PROTOCOL.md` section 23): a method
//! declared `#[compress]` compresses its payloads both ways with nothing configured, one
//! declared `#[compress(false)]` never does, whatever the threshold, and a call's
//! `with_compression` overrides both for what the caller sends. Counted in bytes through
//! a proxy over loopback; each call moves one large text one way, so a count well under
//! the text's length means it was compressed.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use traitrpc_core::json::JsonClient;
use traitrpc_core::protocol::PayloadCodec;
use traitrpc_core::{service, ClientConfig, Compression, ServerConfig, Streaming};

#[service]
pub trait Reports {
    /// The large text; declared compressed.
    #[compress]
    async fn report(&self) -> String;
    /// The large text; no declaration.
    async fn plain_report(&self) -> String;
    /// The length of a text; declared never compressed.
    #[compress(false)]
    async fn store(&self, text: String) -> u64;
    /// The length of a text; no declaration.
    async fn submit(&self, text: String) -> u64;
    /// The total length of the texts uploaded; declared compressed.
    #[compress]
    async fn upload(&self, texts: Streaming<String>) -> u64;
    /// `count` copies of the large text; declared compressed.
    #[compress(true)]
    async fn feed(&self, count: u32) -> Streaming<String>;
}

struct Impl;

impl Reports for Impl {
    async fn report(&self) -> String {
        text()
    }
    async fn plain_report(&self) -> String {
        text()
    }
    async fn store(&self, text: String) -> u64 {
        text.len() as u64
    }
    async fn submit(&self, text: String) -> u64 {
        text.len() as u64
    }
    async fn upload(&self, mut texts: Streaming<String>) -> u64 {
        let mut total = 0;
        while let Some(Ok(text)) = texts.next().await {
            total += text.len() as u64;
        }
        total
    }
    async fn feed(&self, count: u32) -> Streaming<String> {
        Streaming::iter((0..count).map(|_| text()))
    }
}

/// About 64 KiB of JSON-like text: LZ4 makes it several times smaller.
fn text() -> String {
    (0..700)
        .map(|n| format!(r#"{{"id":{n},"name":"item {n}","tags":["a","b"]}},"#))
        .collect()
}

fn len() -> u64 {
    text().len() as u64
}

/// Both sides at a threshold of 1 KiB.
fn lz4() -> (Compression, usize) {
    (Compression::Lz4, 1024)
}

/// A server (configured to compress above 1 KiB if `compresses`) behind a counting
/// proxy, and a client of it with `config`.
async fn setup(
    compresses: bool,
    config: ClientConfig,
) -> (
    traitrpc_core::ServerHandle<SocketAddr>,
    ReportsClient,
    Arc<AtomicU64>,
) {
    let mut server_config = ServerConfig::default();
    if compresses {
        server_config = server_config.compression(lz4().0, lz4().1);
    }
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        ReportsServer::new(Impl),
        server_config,
    )
    .await
    .unwrap();
    let (proxy, counted) = common::counting_proxy(server.local_addr()).await;
    let connection = traitrpc_transport_tcp::connect_with_config(proxy, config)
        .await
        .unwrap();
    (server, ReportsClient::new(connection), counted)
}

/// The bytes through the proxy while `call` runs (it has its answer when it returns).
async fn bytes_of<F: Future>(counted: &AtomicU64, call: F) -> (u64, F::Output) {
    let before = counted.load(Ordering::SeqCst);
    let output = call.await;
    (counted.load(Ordering::SeqCst) - before, output)
}

/// Whether one text crossed compressed (at most half its size) or as it is.
fn compressed(bytes: u64) -> bool {
    assert!(bytes > 0);
    if bytes < len() / 2 {
        true
    } else {
        assert!(bytes > len(), "{bytes} bytes: neither compressed nor whole");
        false
    }
}

#[tokio::test]
async fn declared_methods_compress_both_ways_with_nothing_configured() {
    let (server, reports, counted) = setup(false, ClientConfig::default()).await;
    let (bytes, answer) = bytes_of(&counted, reports.report()).await;
    assert_eq!(answer.unwrap(), text());
    assert!(compressed(bytes), "a #[compress] answer: {bytes} bytes");
    let (bytes, answer) = bytes_of(&counted, reports.plain_report()).await;
    assert_eq!(answer.unwrap(), text());
    assert!(!compressed(bytes), "an undeclared answer: {bytes} bytes");
    let (bytes, answer) = bytes_of(&counted, reports.submit(text())).await;
    assert_eq!(answer.unwrap(), len());
    assert!(!compressed(bytes), "undeclared arguments: {bytes} bytes");

    // Stream items follow their method too, in both directions.
    let texts = Streaming::iter(std::iter::repeat_n(text(), 8));
    let (bytes, answer) = bytes_of(&counted, reports.upload(texts)).await;
    assert_eq!(answer.unwrap(), 8 * len());
    assert!(bytes < 8 * len() / 2, "uploaded items: {bytes} bytes");
    let (bytes, items) = bytes_of(&counted, async {
        let mut stream = reports.feed(8).await.unwrap();
        let mut items = 0;
        while let Some(item) = stream.next().await {
            assert_eq!(item.unwrap(), text());
            items += 1;
        }
        items
    })
    .await;
    assert_eq!(items, 8);
    assert!(bytes < 8 * len() / 2, "streamed items: {bytes} bytes");
    server.shutdown().await;
}

#[tokio::test]
async fn compress_false_keeps_a_method_s_payloads_whole_above_the_threshold() {
    let config = ClientConfig::default().compression(lz4().0, lz4().1);
    let (server, reports, counted) = setup(true, config).await;
    let (bytes, answer) = bytes_of(&counted, reports.store(text())).await;
    assert_eq!(answer.unwrap(), len());
    assert!(
        !compressed(bytes),
        "#[compress(false)] arguments: {bytes} bytes"
    );
    let (bytes, answer) = bytes_of(&counted, reports.submit(text())).await;
    assert_eq!(answer.unwrap(), len());
    assert!(
        compressed(bytes),
        "arguments over the threshold: {bytes} bytes"
    );
    let (bytes, answer) = bytes_of(&counted, reports.plain_report()).await;
    assert_eq!(answer.unwrap(), text());
    assert!(
        compressed(bytes),
        "an answer over the threshold: {bytes} bytes"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_s_choice_overrides_its_method_and_the_threshold() {
    // Nothing configured: a call can still ask.
    let (server, reports, counted) = setup(false, ClientConfig::default()).await;
    let (bytes, answer) = bytes_of(&counted, reports.with_compression(true).submit(text())).await;
    assert_eq!(answer.unwrap(), len());
    assert!(compressed(bytes), "asked for: {bytes} bytes");
    // ... even against its method's `#[compress(false)]`.
    let (bytes, answer) = bytes_of(&counted, reports.with_compression(true).store(text())).await;
    assert_eq!(answer.unwrap(), len());
    assert!(
        compressed(bytes),
        "asked for, declared false: {bytes} bytes"
    );
    server.shutdown().await;

    // Configured: a call can refuse.
    let config = ClientConfig::default().compression(lz4().0, lz4().1);
    let (server, reports, counted) = setup(true, config).await;
    let (bytes, answer) = bytes_of(&counted, reports.with_compression(false).submit(text())).await;
    assert_eq!(answer.unwrap(), len());
    assert!(!compressed(bytes), "refused: {bytes} bytes");
    // The caller chooses what it sends; the answer follows the server's settings.
    let (bytes, answer) = bytes_of(&counted, reports.with_compression(false).plain_report()).await;
    assert_eq!(answer.unwrap(), text());
    assert!(compressed(bytes), "the server's answer: {bytes} bytes");
    assert_eq!(reports.client().options().compression(), None);
    assert_eq!(
        reports
            .with_compression(false)
            .client()
            .options()
            .compression(),
        Some(false)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_version_4_connection_sends_declared_methods_as_they_are() {
    let config = ClientConfig::default().max_protocol_version(4);
    let (server, reports, counted) = setup(true, config).await;
    let (bytes, answer) = bytes_of(&counted, reports.report()).await;
    assert_eq!(answer.unwrap(), text());
    assert!(!compressed(bytes), "version 4: {bytes} bytes");
    let (bytes, answer) = bytes_of(&counted, reports.with_compression(true).submit(text())).await;
    assert_eq!(answer.unwrap(), len());
    assert!(!compressed(bytes), "version 4, asked for: {bytes} bytes");
    server.shutdown().await;
}

#[tokio::test]
async fn json_callers_get_a_declared_method_s_answer_compressed() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", ReportsServer::new(Impl))
        .await
        .unwrap();
    let (proxy, counted) = common::counting_proxy(server.local_addr()).await;
    let config = ClientConfig::default().codec(PayloadCodec::Json);
    let connection = traitrpc_transport_tcp::connect_with_config(proxy, config)
        .await
        .unwrap();
    let json = JsonClient::new(connection).unwrap();
    let empty = serde_json::json!({});
    // JSON escapes the text's quotes: a little longer than `len()`.
    let (bytes, answer) = bytes_of(&counted, json.call("Reports", "report", &empty)).await;
    assert_eq!(answer.unwrap(), serde_json::Value::String(text()));
    assert!(
        compressed(bytes),
        "a #[compress] answer in JSON: {bytes} bytes"
    );
    let (bytes, answer) = bytes_of(&counted, json.call("Reports", "plain_report", &empty)).await;
    assert_eq!(answer.unwrap(), serde_json::Value::String(text()));
    assert!(
        !compressed(bytes),
        "an undeclared answer in JSON: {bytes} bytes"
    );
    server.shutdown().await;
}
