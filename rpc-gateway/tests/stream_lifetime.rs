//! A server stream over HTTP lives exactly as long as its caller's request: a caller that
//! goes away ends the call (its handler and its in-flight permit) at once, even when the
//! stream is quiet, and the gateway's shutdown returns only once its streams have ended.
//! A caller that stays but never reads is dropped at the write timeout.
//! Hand-written HTTP/1.1 over loopback, so the test decides when the caller leaves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use traitrpc_core::{Router, Streaming};
use traitrpc_gateway::{GatewayConfig, GatewayHandle};

#[traitrpc_core::service]
pub trait Quiet {
    /// One item, then nothing until the caller leaves.
    async fn quiet(&self) -> Streaming<u32>;
    /// Items as fast as they are taken, without end.
    async fn flood(&self) -> Streaming<u32>;
    async fn ping(&self) -> u32;
}

/// Set and notified when a `quiet` stream is dropped (its call has ended).
#[derive(Clone, Default)]
struct Ended {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

struct EndsOnDrop(Ended);

impl Drop for EndsOnDrop {
    fn drop(&mut self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
        self.0.notify.notify_one();
    }
}

#[derive(Clone)]
struct QuietImpl(Ended);

impl Quiet for QuietImpl {
    async fn quiet(&self) -> Streaming<u32> {
        let guard = EndsOnDrop(self.0.clone());
        let items = futures::stream::iter([1u32])
            .chain(futures::stream::pending())
            .map(move |item| {
                let _held = &guard;
                item
            });
        Streaming::from_stream(items)
    }

    async fn flood(&self) -> Streaming<u32> {
        Streaming::iter(0..)
    }

    async fn ping(&self) -> u32 {
        7
    }
}

async fn gateway(ended: &Ended) -> GatewayHandle {
    let router = Router::from(QuietServer::new(QuietImpl(ended.clone())));
    let config = GatewayConfig::default()
        .max_in_flight(1)
        .default_timeout(Duration::from_secs(300))
        .shutdown_grace(Duration::from_millis(200));
    traitrpc_gateway::serve("127.0.0.1:0", router, config)
        .await
        .unwrap()
}

/// Opens a connection and asks for the server stream `method` (no arguments).
async fn start_stream(gateway: &GatewayHandle, method: &str) -> TcpStream {
    let mut socket = TcpStream::connect(gateway.local_addr()).await.unwrap();
    // One Connect envelope: flags 0, length 2, `{}`.
    let body = b"\x00\x00\x00\x00\x02{}";
    let head = format!(
        "POST /Quiet/{method} HTTP/1.1\r\nHost: test\r\nContent-Type: application/connect+json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    socket
}

/// Opens the quiet stream and reads until its first item has arrived.
async fn open_quiet_stream(gateway: &GatewayHandle) -> TcpStream {
    let mut socket = start_stream(gateway, "quiet").await;
    let first_item = b"\x00\x00\x00\x00\x011";
    let mut seen = Vec::new();
    while !seen.windows(first_item.len()).any(|w| w == first_item) {
        let mut chunk = [0u8; 1024];
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the gateway closed before the first item: {seen:?}");
        seen.extend_from_slice(&chunk[..n]);
    }
    socket
}

/// Status line of a unary call to `ping` (empty if the gateway closed the connection
/// unanswered, as it does beyond its connection limit).
async fn ping_status(gateway: &GatewayHandle) -> String {
    let Ok(mut socket) = TcpStream::connect(gateway.local_addr()).await else {
        return String::new();
    };
    let request = b"POST /Quiet/ping HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    if socket.write_all(request).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_caller_that_leaves_a_quiet_stream_ends_its_call_and_frees_its_permit() {
    let ended = Ended::default();
    let gateway = gateway(&ended).await;
    let socket = open_quiet_stream(&gateway).await;
    // The one in-flight permit is the stream's while it runs.
    assert!(ping_status(&gateway).await.contains("429"));
    let notified = ended.notify.notified();
    drop(socket);
    // Bounded so that a regression fails instead of hanging (the call's deadline is 300 s).
    tokio::time::timeout(Duration::from_secs(20), notified)
        .await
        .expect("the stream's call ended when its caller left");
    assert!(
        ping_status(&gateway).await.contains("200"),
        "the permit is free"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn shutdown_returns_only_after_the_streams_have_ended() {
    let ended = Ended::default();
    let gateway = gateway(&ended).await;
    let _socket = open_quiet_stream(&gateway).await;
    assert!(!ended.flag.load(Ordering::SeqCst));
    // The caller stays; the grace period (200 ms) runs out and the connection is closed.
    gateway.shutdown().await;
    assert!(
        ended.flag.load(Ordering::SeqCst),
        "shutdown returned while a stream's handler was still running"
    );
}

#[tokio::test]
async fn a_caller_that_never_reads_is_dropped_at_the_write_timeout() {
    // One connection slot; a caller asks for an endless stream and reads nothing. The
    // gateway used to hold its connection (and the slot) for as long as the caller
    // stayed; it closes it once its writes have stalled for the write timeout.
    let router = Router::from(QuietServer::new(QuietImpl(Ended::default())));
    let config = GatewayConfig::default()
        .max_connections(1)
        .write_timeout(Duration::from_millis(300));
    let gateway = traitrpc_gateway::serve("127.0.0.1:0", router, config)
        .await
        .unwrap();
    let reader_that_never_reads = start_stream(&gateway, "flood").await;
    // The slot frees once the stalled connection is closed: a new caller gets through.
    let mut answered = String::new();
    for _ in 0..200 {
        answered = ping_status(&gateway).await;
        if answered.contains("200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answered.contains("200"),
        "the stalled caller still holds the slot: {answered:?}"
    );
    drop(reader_that_never_reads);
    gateway.shutdown().await;
}
