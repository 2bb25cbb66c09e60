//! Server settings.

use std::time::Duration;

use super::admission::{AdaptiveConcurrency, Admission};
use crate::compression::Compression;
use crate::keepalive::Keepalive;
use crate::protocol::{DEFAULT_MAX_FRAME_SIZE, INITIAL_STREAM_WINDOW};

/// The largest in-flight limit accepted (larger values are clamped).
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// Settings of a server. Build with [`ServerConfig::default`] and the setters.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) max_frame_size: usize,
    pub(crate) max_in_flight_per_connection: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_call_duration: Option<Duration>,
    pub(crate) max_connections: usize,
    pub(crate) max_concurrent_calls: usize,
    pub(crate) adaptive_concurrency: Option<AdaptiveConcurrency>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) frame_timeout: Duration,
    pub(crate) max_write_buffer: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) stream_window: u32,
    pub(crate) shutdown_delay: Duration,
    pub(crate) compression: Option<(Compression, usize)>,
    pub(crate) announce_fingerprints: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_in_flight_per_connection: 1024,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_call_duration: None,
            max_connections: 16 * 1024,
            max_concurrent_calls: 64 * 1024,
            adaptive_concurrency: None,
            idle_timeout: None,
            frame_timeout: Duration::from_secs(30),
            max_write_buffer: 4 * 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            keepalive: Some(Keepalive::new(
                Duration::from_secs(60),
                Duration::from_secs(20),
            )),
            stream_window: INITIAL_STREAM_WINDOW,
            shutdown_delay: Duration::ZERO,
            compression: None,
            announce_fingerprints: true,
        }
    }
}

impl ServerConfig {
    /// Largest frame accepted from a client, in bytes (default 16 MiB). A client that
    /// sends a larger one is disconnected; clients of this crate learn the limit in the
    /// handshake and fail such calls locally with `RpcError::FrameTooLarge`.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes.clamp(64, u32::MAX as usize);
        self
    }

    /// Calls one connection may have running at once (default 1024). When reached, the
    /// server goes on reading that connection and parks further requests (as many again,
    /// at least 1024, within `max_write_buffer` bytes of payload), starting them as calls
    /// finish; only a full park stops reading.
    pub fn max_in_flight_per_connection(mut self, max: usize) -> Self {
        self.max_in_flight_per_connection = max.clamp(1, MAX_IN_FLIGHT);
        self
    }

    /// Whether the handshake of a version 6 connection tells the client the fingerprint
    /// of every method (default `true`; `docs/PROTOCOL.md` section 24). Without it the
    /// block is empty: clients cannot tell a method whose schema differs from theirs and
    /// send every call in bincode, as before version 6 (`docs/EVOLUTION.md`). The block
    /// names the methods to anyone who completes the handshake, before any interceptor
    /// runs; mutual TLS limits that to authenticated clients.
    pub fn announce_fingerprints(mut self, announce: bool) -> Self {
        self.announce_fingerprints = announce;
        self
    }

    /// Time a new connection has to complete the handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Time [`ServerHandle::shutdown`](crate::ServerHandle::shutdown) lets calls in flight
    /// finish before they are dropped (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Longest a call may run on this server (default: no limit beyond the caller's own
    /// deadline). Applies to calls whose caller sent no deadline, and caps those that did.
    pub fn max_call_duration(mut self, limit: Option<Duration>) -> Self {
        self.max_call_duration = limit;
        self
    }

    /// Connections open at once (default 16,384). A connection beyond it is refused in the
    /// handshake; the client sees `RpcError::Overloaded`.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Calls running at once across all connections (default 65,536). A call beyond it
    /// is not run; the caller gets `RpcError::Overloaded` at once (safe to retry
    /// elsewhere) instead of waiting in an unbounded queue.
    pub fn max_concurrent_calls(mut self, max: usize) -> Self {
        self.max_concurrent_calls = max.max(1);
        self
    }

    /// Lets the server find its concurrency limit from the latency of the calls it runs
    /// (default off: the fixed `max_concurrent_calls`). Calls beyond the limit, and calls
    /// whose remaining deadline is shorter than the server's latency without load, are
    /// refused at once with `RpcError::Overloaded` (they never ran: safe to retry
    /// elsewhere), before their arguments are decoded. `max_concurrent_calls` still caps
    /// the limit. See [`AdaptiveConcurrency`] and docs/SCALING.md.
    pub fn adaptive_concurrency(mut self, settings: AdaptiveConcurrency) -> Self {
        self.adaptive_concurrency = Some(settings);
        self
    }

    /// The admission a server with these settings starts with at `now`.
    pub(crate) fn admission(&self, now: tokio::time::Instant) -> Admission {
        match self.adaptive_concurrency {
            Some(settings) => Admission::adaptive(settings, self.max_concurrent_calls, now),
            None => Admission::fixed(self.max_concurrent_calls),
        }
    }

    /// How long a connection may go without a complete frame while no call is running
    /// before the server closes it with GO_AWAY IDLE_TIMEOUT (default: never, because a
    /// plain `Connection` does not reconnect by itself; balanced channels do).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a frame may take to arrive once its first byte has (default 30 s): a
    /// peer trickling a frame byte by byte (slowloris) is disconnected.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// Bytes of answers queued for one connection above which the server stops reading
    /// its requests until the peer reads (default 4 MiB). Answers of calls already
    /// running are still queued, so the buffer is bounded by this plus those answers.
    pub fn max_write_buffer(mut self, bytes: usize) -> Self {
        self.max_write_buffer = bytes.max(1);
        self
    }

    /// How long queued answers may wait without the peer reading any of them before the
    /// server drops the connection (default 30 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Liveness checks of clients (default: a `PING` after 60 s without a frame from the
    /// client, the connection dropped, with its handlers, if nothing arrives 20 s after
    /// it). Frees what a vanished client (a crashed host, a broken network path) holds.
    /// `None` turns them off. Clients of protocol version 2 and older are not pinged.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// The credit this server grants a client for each stream it receives, in bytes
    /// (default 256 KiB; at least 1 KiB): how far a client stream may run ahead of the
    /// handler reading it. Clients of protocol version 2 always get 256 KiB.
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.stream_window = bytes.max(1024);
        self
    }

    /// How long a graceful shutdown keeps serving after it turned the health service
    /// NOT_SERVING, before it starts draining (default none): time for balancers that
    /// probe health (a Kubernetes readiness probe on `/readyz`) to stop sending first.
    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = delay;
        self
    }

    /// Compresses answers and stream items of at least `threshold` bytes with `algorithm`
    /// (default: no compression; 1 KiB is a good threshold), on version 5 connections, and
    /// only when that makes them smaller. A client that cannot decompress `algorithm` gets
    /// LZ4 (if it can take that). A method's `#[compress]` / `#[compress(false)]`
    /// ([`crate::ReplyTo::with_compression`]) overrides the threshold (without this
    /// setting, it compresses with LZ4). Receiving compressed payloads needs no setting:
    /// every algorithm this build has is accepted.
    pub fn compression(mut self, algorithm: Compression, threshold: usize) -> Self {
        self.compression = Some((algorithm, threshold));
        self
    }
}
