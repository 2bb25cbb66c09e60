//! TCP and Unix domain socket transport: [`serve`] binds and starts a server in one call,
//! [`connect`] opens a multiplexed client connection. `TCP_NODELAY` is set on both ends.
//! The [`tls`] module (cargo feature `tls`, on by default) does the same over TLS and
//! mutual TLS.
//!
//! ```no_run
//! # use traitrpc_core::service;
//! # #[service] pub trait Ping { async fn ping(&self) -> u8; }
//! # struct P; impl Ping for P { async fn ping(&self) -> u8 { 1 } }
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! let server = traitrpc_transport_tcp::serve("127.0.0.1:0", PingServer::new(P)).await?;
//! let client = PingClient::new(traitrpc_transport_tcp::connect(server.local_addr()).await?);
//! assert_eq!(client.ping().await?, 1);
//! server.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpStream, ToSocketAddrs};
use traitrpc_core::client::with_version_fallback;
use traitrpc_core::{
    ClientConfig, Connection, Established, Listener, PeerAddr, Router, RpcError, Server,
    ServerConfig, ServerHandle,
};

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
#[cfg(unix)]
pub mod unix;

/// Binds `addr` and serves `services` (one generated `{Trait}Server`, or a
/// [`Router`] of several) with default settings. Returns once the
/// socket is bound; the server runs on the current tokio runtime until the returned
/// handle's `shutdown` (dropping the handle leaves it running).
pub async fn serve(
    addr: impl ToSocketAddrs,
    services: impl Into<Router>,
) -> io::Result<ServerHandle<SocketAddr>> {
    serve_with_config(addr, services, ServerConfig::default()).await
}

/// [`serve`] with explicit settings.
pub async fn serve_with_config(
    addr: impl ToSocketAddrs,
    services: impl Into<Router>,
    config: ServerConfig,
) -> io::Result<ServerHandle<SocketAddr>> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    Ok(Server::with_config(services, config).serve(listener, local_addr))
}

/// Connects to a server at `addr` with default settings.
pub async fn connect(addr: impl ToSocketAddrs) -> Result<Connection, RpcError> {
    connect_with_config(addr, ClientConfig::default()).await
}

/// Connects to a server at `addr`: resolves it, tries each address in turn, and runs the
/// handshake, all within the configured connect timeout.
///
/// A server that answers with TLS (a [`tls`] server) fails the connect at once with
/// [`RpcError::Protocol`] saying so.
pub async fn connect_with_config(
    addr: impl ToSocketAddrs,
    config: ClientConfig,
) -> Result<Connection, RpcError> {
    let timeout = config.connect_timeout_value();
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host(addr)).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Err(connect_error("(unresolved)", e)),
            Err(_) => {
                return Err(connect_error(
                    "(unresolved)",
                    io::Error::new(io::ErrorKind::TimedOut, "resolving timed out"),
                ))
            }
        };
    let attempt = with_version_fallback(config, |config| async {
        let (stream, addr) = connect_tcp(&addrs[..]).await?;
        let first = Arc::new(FirstBytes::default());
        let io = Sniffing {
            stream,
            first: Arc::clone(&first),
        };
        match Connection::handshake(io, &addr.to_string(), config).await {
            Err(_) if first.look_like_tls() => Err(RpcError::Protocol(format!(
                "the server at {addr} answered with TLS: it requires a TLS connection \
                 (traitrpc_transport_tcp::tls::connect)"
            ))),
            outcome => outcome,
        }
    });
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(connect_error(
                "(timed out)",
                io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            ))
        })
}

/// Resolves `addr`, connects to the first address that accepts, and sets `TCP_NODELAY`
/// and TCP keepalive ([`configure`]).
pub(crate) async fn connect_tcp(
    addr: impl ToSocketAddrs,
) -> Result<(TcpStream, SocketAddr), RpcError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| connect_error("(unresolved)", e))?
        .collect();
    let mut last_error = None;
    for candidate in addrs {
        match TcpStream::connect(candidate).await {
            // Connecting to a local port nobody listens on can, rarely, connect the
            // socket to itself (TCP simultaneous open, when the kernel picks that port as
            // the source): it would read its own hello as the server's, and hold the
            // port the server is about to bind again. Refused like a closed port.
            Ok(stream) if stream.local_addr().ok() == Some(candidate) => {
                last_error = Some(connect_error(
                    candidate,
                    io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "the socket connected to itself: nothing listens there",
                    ),
                ));
            }
            Ok(stream) => {
                configure(&stream).map_err(|e| connect_error(candidate, e))?;
                return Ok((stream, candidate));
            }
            Err(e) => last_error = Some(connect_error(candidate, e)),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        connect_error(
            "(unresolved)",
            io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing"),
        )
    }))
}

/// TCP keepalive: the kernel probes a connection idle for this long...
pub const TCP_KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// ...every this long...
pub const TCP_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// ...and drops it after this many unanswered probes (about 90 s after the peer vanished;
/// the protocol's own keepalive usually notices sooner).
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// Sets `TCP_NODELAY` (calls are small and latency-bound) and TCP keepalive (so a peer
/// that vanished without a FIN, and an older peer without protocol pings, are noticed)
/// on a connected socket, client or server side.
pub fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd"
    ))]
    let keepalive = keepalive.with_retries(TCP_KEEPALIVE_RETRIES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

pub(crate) fn connect_error(addr: impl ToString, source: io::Error) -> RpcError {
    RpcError::Connect {
        addr: addr.to_string(),
        source: Arc::new(source),
    }
}

/// The first bytes a server sent on a plaintext connection, kept to explain a failed
/// handshake.
#[derive(Default)]
struct FirstBytes(Mutex<Vec<u8>>);

/// Bytes enough to recognise a TLS record header: content type, version.
const SNIFF_LEN: usize = 3;

impl FirstBytes {
    /// Records bytes read; true once enough were seen.
    fn record(&self, bytes: &[u8]) -> bool {
        let mut first = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let take = bytes.len().min(SNIFF_LEN - first.len());
        first.extend_from_slice(&bytes[..take]);
        first.len() >= SNIFF_LEN
    }

    /// Whether the server opened with a TLS record (an alert or a handshake message)
    /// instead of this protocol's handshake.
    fn look_like_tls(&self) -> bool {
        let first = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(first[..], [0x15 | 0x16, 0x03, 0x00..=0x04])
    }
}

/// A plaintext TCP connection that notes the first bytes the server sends.
struct Sniffing {
    stream: TcpStream,
    first: Arc<FirstBytes>,
}

impl traitrpc_core::Transport for Sniffing {
    type Reader = SniffingReader;
    type Writer = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Reader, Self::Writer) {
        let (reader, writer) = self.stream.into_split();
        (
            SniffingReader {
                inner: reader,
                first: Some(self.first),
            },
            writer,
        )
    }
}

/// The read half of [`Sniffing`]: once the first bytes are noted it only forwards.
struct SniffingReader {
    inner: tokio::net::tcp::OwnedReadHalf,
    first: Option<Arc<FirstBytes>>,
}

impl AsyncRead for SniffingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(first) = &this.first else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        if first.record(&buf.filled()[before..]) {
            this.first = None;
        }
        Poll::Ready(result)
    }
}

/// A TCP listener for [`Server::serve`](traitrpc_core::Server::serve) that sets `TCP_NODELAY`
/// and TCP keepalive ([`configure`]) on every accepted connection.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
}

impl TcpListener {
    /// Binds `addr`.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(TcpListener {
            inner: tokio::net::TcpListener::bind(addr).await?,
        })
    }

    /// Wraps a bound tokio listener.
    pub fn from_tokio(inner: tokio::net::TcpListener) -> Self {
        TcpListener { inner }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Listener for TcpListener {
    type Accepted = TcpStream;
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, PeerAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        // A peer that reset at once makes this fail; that is its connection's problem,
        // not an accept error that would pause the accept loop for everyone.
        if let Err(e) = configure(&stream) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY or keepalive");
        }
        Ok((stream, PeerAddr::Tcp(peer)))
    }

    fn establish(
        &self,
        stream: TcpStream,
    ) -> impl std::future::Future<Output = io::Result<Established<TcpStream>>> + Send + 'static
    {
        std::future::ready(Ok(Established::plain(stream)))
    }
}
