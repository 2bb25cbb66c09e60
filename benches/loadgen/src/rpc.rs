//! This framework: an `Echo` service over one or more multiplexed connections, one task
//! per call kept in flight (the way an application would drive it).
//!
//! Three modes of it: `rpc` (no layer), `rpc-metrics` (Prometheus metrics on both sides,
//! as `traitrpc-observability` installs them) and `rpc-observed` (metrics, tracing spans and
//! trace context on both sides, with no tracing subscriber, as a service runs when its
//! spans are off).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use traitrpc_core::server::middleware::{self, Next};
use traitrpc_core::{ByteBuf, Client, Connection, Router, ServerHandle, Streaming};
use traitrpc_observability::metrics::Metrics;
use traitrpc_observability::tracing_layers::{ClientTracing, ServerTracing};

use crate::WorkerResult;

#[traitrpc_core::service]
pub trait Echo {
    /// Returns `value`.
    async fn echo(&self, value: u64) -> u64;
    /// Returns `data`.
    async fn echo_bytes(&self, data: ByteBuf) -> ByteBuf;
    /// Streams `total` bytes in items of `chunk` bytes (the last one may be shorter): the
    /// bulk transfer of `loadgen interleave`.
    async fn download(&self, total: u64, chunk: u32) -> Streaming<ByteBuf>;
}

/// The echo implementation.
pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, value: u64) -> u64 {
        if handlers_await() {
            tokio::task::yield_now().await;
        }
        value
    }

    async fn echo_bytes(&self, data: ByteBuf) -> ByteBuf {
        data
    }

    async fn download(&self, total: u64, chunk: u32) -> Streaming<ByteBuf> {
        let chunk = u64::from(chunk.max(1));
        let items = (0..total.div_ceil(chunk)).map(move |i| {
            let len = chunk.min(total - i * chunk) as usize;
            ByteBuf::from(vec![0xa5u8; len])
        });
        Streaming::iter(items)
    }
}

/// Whether the echo handler awaits once before it answers (`LOADGEN_HANDLER_AWAITS=1`,
/// inherited by the server process): a handler that waits on something, as most real
/// ones do, runs on a task of its own and answers from there, instead of answering
/// within the connection task's first poll.
fn handlers_await() -> bool {
    static AWAITS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AWAITS.get_or_init(|| std::env::var("LOADGEN_HANDLER_AWAITS").is_ok_and(|v| v == "1"))
}

/// Which layers a mode installs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    /// No layer: the bare framework.
    None,
    /// A layer on both sides that only passes calls on: what the seams cost.
    PassThrough,
    /// Metrics on both sides.
    Metrics,
    /// Metrics and tracing (with trace context) on both sides.
    Observed,
}

impl Layers {
    /// The layers of mode `mode` (`rpc`, `rpc-metrics`, `rpc-observed`), if it is one.
    pub fn of_mode(mode: &str) -> Option<Layers> {
        match mode {
            "rpc" => Some(Layers::None),
            "rpc-seam" => Some(Layers::PassThrough),
            "rpc-metrics" => Some(Layers::Metrics),
            "rpc-observed" => Some(Layers::Observed),
            _ => None,
        }
    }
}

/// Serves `Echo` on `addr` with `layers`; returns the bound address.
pub async fn serve(addr: &str, layers: Layers) -> Result<SocketAddr> {
    // Dropping the handle leaves the server running (until the process is killed).
    Ok(start_server(addr, layers).await?.local_addr())
}

/// Starts an `Echo` server on `addr` with `layers`.
pub async fn start_server(addr: &str, layers: Layers) -> Result<ServerHandle<SocketAddr>> {
    let mut router = Router::from(EchoServer::new(EchoImpl));
    if layers == Layers::PassThrough {
        router = router.layer(middleware::from_fn(|next: Next| next.run()));
    }
    if layers == Layers::Observed {
        router = router.layer(ServerTracing);
    }
    let metrics = Metrics::new();
    if matches!(layers, Layers::Metrics | Layers::Observed) {
        router = router.observe(metrics.server_observer());
    }
    let mut config = traitrpc_core::ServerConfig::default();
    if let Some((algorithm, threshold)) = compression() {
        config = config.compression(algorithm, threshold);
    }
    let server = traitrpc_transport_tcp::serve_with_config(addr, router, config).await?;
    if matches!(layers, Layers::Metrics | Layers::Observed) {
        metrics.observe_server(server.stats());
    }
    Ok(server)
}

/// The compression both sides use: `LOADGEN_COMPRESS=lz4` (or `zstd` with the `zstd`
/// feature of traitrpc-core), payloads of 1 KiB and more; unset, none. An environment variable
/// so that the server process inherits it.
pub fn compression() -> Option<(traitrpc_core::Compression, usize)> {
    match std::env::var("LOADGEN_COMPRESS").ok()?.as_str() {
        "" | "none" => None,
        "lz4" => Some((traitrpc_core::Compression::Lz4, 1024)),
        other => panic!("LOADGEN_COMPRESS={other}: this build compresses with lz4 only"),
    }
}

/// What an `echo_bytes` payload holds (`--content`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// One byte repeated (the default: what the figures before compression used).
    Fill,
    /// JSON-like text: compresses about 5x with lz4.
    Json,
    /// Pseudo-random bytes: does not compress.
    Noise,
}

impl Content {
    /// `fill`, `json` or `noise`.
    pub fn parse(name: &str) -> Result<Content> {
        Ok(match name {
            "fill" => Content::Fill,
            "json" => Content::Json,
            "noise" => Content::Noise,
            other => anyhow::bail!("unknown --content `{other}` (fill, json, noise)"),
        })
    }

    /// `len` bytes of this content.
    pub fn bytes(self, len: usize) -> Vec<u8> {
        match self {
            Content::Fill => vec![0x5a; len],
            Content::Json => {
                let mut out = Vec::with_capacity(len + 64);
                let mut n = 0u64;
                while out.len() < len {
                    let item = format!(
                        r#"{{"id":{n},"name":"item {n}","price":{},"tags":["a","b"]}},"#,
                        n % 17
                    );
                    out.extend_from_slice(item.as_bytes());
                    n += 1;
                }
                out.truncate(len);
                out
            }
            Content::Noise => {
                let mut state = 0x9e37_79b9_7f4a_7c15u64;
                (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect()
            }
        }
    }
}

/// An `Echo` client on `connection` with `layers` (recording into `metrics`).
pub fn echo_client(connection: Connection, layers: Layers, metrics: &Metrics) -> EchoClient {
    let mut client = Client::new(connection);
    if layers == Layers::PassThrough {
        client = client.layer(PassOn);
    }
    if matches!(layers, Layers::Metrics | Layers::Observed) {
        client = client.observe(metrics.client_observer("echo"));
    }
    if layers == Layers::Observed {
        client = client.layer(ClientTracing);
    }
    EchoClient::from_client(client)
}

/// A client layer that only passes calls on.
struct PassOn;

impl traitrpc_core::client::ClientMiddleware for PassOn {}

/// Opens `connections` connections and runs `concurrency` call loops spread across them.
pub async fn client(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    payload: usize,
    content: Content,
    layers: Layers,
    phase: Arc<AtomicU8>,
) -> Result<Vec<tokio::task::JoinHandle<Result<WorkerResult>>>> {
    let metrics = Metrics::new();
    let mut clients = Vec::new();
    let mut config = traitrpc_core::ClientConfig::default();
    if let Some((algorithm, threshold)) = compression() {
        config = config.compression(algorithm, threshold);
    }
    for _ in 0..connections {
        let connection = traitrpc_transport_tcp::connect_with_config(addr, config.clone()).await?;
        clients.push(echo_client(connection, layers, &metrics));
    }
    Ok((0..concurrency)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let phase = Arc::clone(&phase);
            tokio::spawn(call_loop(client, payload, content, phase))
        })
        .collect())
}

async fn call_loop(
    client: EchoClient,
    payload: usize,
    content: Content,
    phase: Arc<AtomicU8>,
) -> Result<WorkerResult> {
    let mut result = WorkerResult::new();
    // The echo comes back as the next call's argument: a caller that owns its payload
    // passes it without a copy, as the hand-written client passes a slice.
    let mut data = ByteBuf::from(content.bytes(payload));
    let mut value = 0u64;
    loop {
        let started = Instant::now();
        if payload <= 8 {
            value = client.echo(value + 1).await?;
        } else {
            data = client.echo_bytes(data).await?;
            anyhow::ensure!(data.len() == payload, "short echo");
        }
        if result.account(&phase, started, payload) {
            return Ok(result);
        }
    }
}
