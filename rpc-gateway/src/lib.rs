//! HTTP for traitrpc services: JSON for curl and browsers, the
//! [Connect protocol](https://connectrpc.com/docs/protocol) (JSON and binary), gRPC and
//! gRPC-Web (HTTP/2, h2c or TLS with ALPN, and HTTP/1.1), with gRPC server reflection;
//! unary calls and server streams, served from the same [`Router`] as the native
//! protocol, on a port of its own ([`serve`]) or on the native server's port
//! ([`on_native_port`]). Protobuf clients are generated from the `.proto` the trait
//! exports (`traitrpc-proto`, served at [`describe::PROTO_PATH`]). Every service
//! `#[service]` generates is callable:
//!
//! ```text
//! curl -H 'Content-Type: application/json' -d '{"a": 1, "b": 2}' \
//!     http://127.0.0.1:8080/Calculator/add
//! 3
//! ```
//!
//! - `POST /{Service}/{method}`, `Content-Type: application/json`, the arguments as a JSON
//!   object keyed by parameter name; the answer is `200` with the result as JSON. proto3's
//!   JSON spellings are read too (64-bit integers as strings, bytes as base64), and a
//!   body may be gzipped (`Content-Encoding: gzip`).
//! - `GET /{Service}/{method}?encoding=json&message={percent-encoded JSON}` for
//!   `#[idempotent]` methods (cacheable, as Connect's GET).
//! - Errors are Connect's error JSON (`{"code": "invalid_argument", "message": ...}`) with
//!   the HTTP status Connect specifies; a method's own error (`Err(e)` of a method
//!   returning `Result`) is `failed_precondition` with `e` as the body's `error` field.
//! - `Connect-Timeout-Ms` is the call's deadline (capped by
//!   [`GatewayConfig::max_timeout`]); other request headers are call metadata, so the
//!   router's middleware (authentication, tracing) sees HTTP calls as it sees native
//!   ones.
//! - Limits: connections, the time to receive headers and body, request body size,
//!   calls in flight (beyond it: `resource_exhausted`, the call did not run). CORS for
//!   browsers when configured.
//!
//! - `GET /.well-known/rrpc/services` lists the services and methods (parameter names,
//!   kind, idempotence); `GET /openapi.json` is an OpenAPI 3.1 document of the paths
//!   ([`describe`]), so other languages can generate clients with their usual tools.
//!
//! - Server-streaming methods: `POST` with `Content-Type: application/connect+json` and
//!   the arguments in one Connect envelope; the answer is a body of envelopes, one per
//!   item, then an end-of-stream message carrying the error of a stream that failed.
//!   Methods that take a stream answer `unimplemented`.
//! - Protobuf: `application/proto` and `application/connect+proto` (Connect's binary
//!   codec), `application/grpc` and `application/grpc-web` (gRPC, with `grpc-timeout`,
//!   trailers and status details), and `grpc.reflection.v1` / `v1alpha`. A caller that
//!   sends `Connect-Protocol-Version` gets proto3's JSON of the exported messages.
//!
//! `docs/HTTP.md` in the repository has the whole mapping.
//!
//! ```no_run
//! # #[traitrpc_core::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
//! # struct Calc; impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
//! # async fn demo() -> std::io::Result<()> {
//! let router = traitrpc_core::Router::from(CalculatorServer::new(Calc));
//! let gateway = traitrpc_gateway::serve("127.0.0.1:8080", router, Default::default()).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod call;
mod codec;
pub mod connect;
pub mod describe;
mod encoding;
mod grpc;
mod http;
mod reflection;
mod stream;
mod write_timeout;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use traitrpc_core::Router;

/// The gateway's limits and options.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    max_body: usize,
    max_in_flight: usize,
    default_timeout: Duration,
    max_timeout: Duration,
    body_timeout: Duration,
    header_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    shutdown_grace: Duration,
    cors_origins: Vec<String>,
    assets: Vec<Asset>,
}

/// A file the gateway serves as it is on `GET` ([`GatewayConfig::asset`]).
#[derive(Debug, Clone)]
pub(crate) struct Asset {
    pub path: String,
    pub content_type: String,
    pub body: bytes::Bytes,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body: 4 * 1024 * 1024,
            max_in_flight: 1024,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
            cors_origins: Vec::new(),
            assets: Vec::new(),
        }
    }
}

impl GatewayConfig {
    /// The largest request body (default 4 MiB, the native protocol's default frame
    /// size); a larger one is refused with `resource_exhausted` before it is read whole.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Calls running at once (default 1024); beyond, calls are refused with
    /// `resource_exhausted` without running.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls.max(1);
        self
    }

    /// The deadline of a call without `Connect-Timeout-Ms` (default 30 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The longest deadline a caller may ask for (default 300 s).
    pub fn max_timeout(mut self, timeout: Duration) -> Self {
        self.max_timeout = timeout;
        self
    }

    /// How long a request body may take to arrive (default 10 s): a slow sender is
    /// refused, not waited for.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// How long a request's headers may take to arrive, on a new connection or between
    /// requests of a kept-alive one (default 10 s): a slow or silent client is dropped.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// How long an answer may wait for the client to take any of its bytes (default
    /// 30 s, as the native server's `write_timeout`); then the connection is closed. A
    /// client that sends requests and never reads the answers does not hold its
    /// connection (and a connection slot) forever.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Connections open at once (default 10 000); beyond, new ones are closed at once.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// How long [`GatewayHandle::shutdown`] waits for requests in progress (default
    /// 10 s) before it closes their connections.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Serves `body` as it is, with `content_type`, on `GET path` (for example a page
    /// that calls the services from the browser, from the same origin: no CORS needed).
    /// Assets are looked up before service paths.
    pub fn asset(
        mut self,
        path: impl Into<String>,
        content_type: impl Into<String>,
        body: impl Into<bytes::Bytes>,
    ) -> Self {
        self.assets.push(Asset {
            path: path.into(),
            content_type: content_type.into(),
            body: body.into(),
        });
        self
    }

    /// Lets pages from `origin` (for example `https://app.example.com`, or `*` for any)
    /// call the gateway from a browser (CORS).
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.cors_origins.push(origin.into());
        self
    }
}

/// What every connection of a gateway shares.
pub(crate) struct Shared {
    pub router: Router,
    pub config: GatewayConfig,
    pub in_flight: Arc<Semaphore>,
    pub connections: Arc<Semaphore>,
    pub next_id: AtomicU64,
    /// The protobuf form of the router's methods (gRPC, Connect's binary codec, the
    /// exported `.proto`); `None` if the export failed to load (logged).
    pub proto: Option<traitrpc_proto::ProtoCodec>,
}

/// A running gateway; [`GatewayHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct GatewayHandle {
    local_addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl GatewayHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets the requests in progress finish (up to
    /// [`GatewayConfig::shutdown_grace`], then their connections are closed), and returns
    /// when every connection is gone.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Shared {
    fn new(router: Router, config: GatewayConfig) -> Arc<Shared> {
        let proto = match traitrpc_proto::ProtoCodec::for_router(&router) {
            Ok(codec) => Some(codec),
            Err(error) => {
                tracing::warn!(%error, "no protobuf form for this router: gRPC and Connect's binary codec are off");
                None
            }
        };
        Arc::new(Shared {
            proto,
            router,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config,
            next_id: AtomicU64::new(1),
        })
    }
}

/// The gateway as a protocol a native [`Server`](traitrpc_core::Server) shares its port with:
/// `Server::new(router.clone()).share_port(traitrpc_gateway::on_native_port(router, config))`.
/// The server hands it every connection that opens with an HTTP request line (the native
/// hello opens with `RRPC`), so one address serves native clients, curl and browsers; the
/// server's graceful shutdown lets requests in progress finish within
/// [`GatewayConfig::shutdown_grace`] (and the server's own grace period).
pub fn on_native_port(router: Router, config: GatewayConfig) -> NativePort {
    NativePort {
        shared: Shared::new(router, config),
    }
}

/// HTTP on a native server's port: see [`on_native_port`].
pub struct NativePort {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NativePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativePort").finish_non_exhaustive()
    }
}

/// HTTP/1.1 request lines begin with one of these, and HTTP/2 connections with its
/// preface (`PRI * HTTP/2.0`).
const HTTP_METHODS: [&[u8]; 8] = [
    b"PRI ",
    b"GET ",
    b"POST ",
    b"OPTIONS ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
];

impl traitrpc_core::server::foreign::ForeignProtocol for NativePort {
    fn recognizes(&self, prefix: &[u8]) -> bool {
        HTTP_METHODS.iter().any(|method| prefix.starts_with(method))
    }

    fn serve(
        &self,
        connection: traitrpc_core::server::foreign::ForeignConnection,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            // The gateway's own connection limit applies too.
            let Ok(_slot) = Arc::clone(&shared.connections).try_acquire_owned() else {
                return;
            };
            let (peer, identity) = (connection.peer().clone(), connection.identity().cloned());
            let stop = connection.shutdown();
            let io = hyper_util::rt::TokioIo::new(connection.into_io());
            http::serve_connection(io, peer, identity, shared, stop).await;
        })
    }
}

/// Binds `addr` and serves `router`'s services over HTTP there (HTTP/1.1, and HTTP/2 for
/// connections that open with its preface), on the current tokio runtime. The router may be a clone of the one the native server serves (clones share
/// the services and their middleware).
pub async fn serve(
    addr: impl ToSocketAddrs,
    router: Router,
    config: GatewayConfig,
) -> std::io::Result<GatewayHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let shared = Shared::new(router, config);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(http::accept_loop(
        listener,
        shared,
        stop.clone(),
        tasks.clone(),
    ));
    Ok(GatewayHandle {
        local_addr,
        stop,
        tasks,
    })
}
