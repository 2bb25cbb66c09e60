//! Client settings.

use std::time::Duration;

use crate::compression::Compression;
use crate::keepalive::Keepalive;
use crate::protocol::{
    PayloadCodec, DEFAULT_MAX_FRAME_SIZE, INITIAL_STREAM_WINDOW, MIN_VERSION, VERSION,
};

/// Settings of a client connection. Build with [`ClientConfig::default`] and the setters.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) default_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) stream_window: u32,
    pub(crate) max_write_buffer: usize,
    pub(crate) protocol_version: u16,
    pub(crate) codec: PayloadCodec,
    pub(crate) compression: Option<(Compression, usize)>,
    pub(crate) reuse_call_ids: bool,
}

/// The calls a client keeps in flight on one connection by default.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            default_timeout: Duration::from_secs(30),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            connect_timeout: Duration::from_secs(10),
            keepalive: Some(Keepalive::new(
                Duration::from_secs(30),
                Duration::from_secs(20),
            )),
            stream_window: INITIAL_STREAM_WINDOW,
            max_write_buffer: 4 * 1024 * 1024,
            protocol_version: VERSION,
            codec: PayloadCodec::Bincode,
            compression: None,
            reuse_call_ids: false,
        }
    }
}

impl ClientConfig {
    /// Deadline of a call that sets none itself (default 30 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Calls in flight at once on the connection; further calls wait for a slot (default
    /// 1024).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Largest frame accepted from the server, in bytes (default 16 MiB). Frames sent are
    /// bounded by the server's own limit, learned in the handshake.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes.clamp(64, u32::MAX as usize);
        self
    }

    /// Time allowed to connect and complete the handshake (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The connect-and-handshake time limit.
    pub fn connect_timeout_value(&self) -> Duration {
        self.connect_timeout
    }

    /// Liveness checks (default: a `PING` after 30 s without a frame from the server,
    /// the connection closed if nothing arrives 20 s after it; its calls then fail with
    /// `RpcError::KeepaliveTimeout`). `None` turns them off. Needs a server of protocol
    /// version 3; with older servers there are none.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// The credit this client grants the server for each stream it receives, in bytes
    /// (default 256 KiB; at least 1 KiB): how far a server stream may run ahead of its
    /// consumer. Older servers (protocol version 2) always get 256 KiB.
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.stream_window = bytes.max(1024);
        self
    }

    /// Bytes of requests and stream items queued and not yet written to the socket
    /// above which new calls and stream items wait (within their deadline) for the
    /// server to read (default 4 MiB). The queue may exceed it by one frame.
    pub fn max_write_buffer(mut self, bytes: usize) -> Self {
        self.max_write_buffer = bytes.max(1);
        self
    }

    /// The newest protocol version to announce (default: this crate's,
    /// `protocol::VERSION`). Connecting to an older server falls back to its version by
    /// itself; set this to pin an older version, for example to test compatibility.
    pub fn max_protocol_version(mut self, version: u16) -> Self {
        self.protocol_version = version.clamp(MIN_VERSION, VERSION);
        self
    }

    /// The payload codec of the connection (default bincode, what generated clients
    /// speak). [`PayloadCodec::Json`] is for callers without compiled-in types
    /// ([`crate::json::JsonClient`]); it needs a server of protocol version 4, and
    /// connecting to an older one fails with `RpcError::CodecUnsupported`.
    pub fn codec(mut self, codec: PayloadCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Gives a new unary call the id of an answered one (version 5; default off), so
    /// that ids stay as small as the calls in flight are few: one byte each way on the
    /// wire, where fresh ids take two after 127 calls on a connection and three after
    /// 16383. The price is in graceful shutdown: a server's `GO_AWAY` names the highest
    /// id it received, which no longer tells a reused id it did not see from one it did,
    /// so a non-idempotent call caught on the wire fails `ConnectionClosed` (it may have
    /// run) instead of being refused `ShuttingDown` (safe to send elsewhere). Never runs a
    /// call twice either way; turn it on only where servers are not drained under load.
    pub fn reuse_call_ids(mut self, reuse: bool) -> Self {
        self.reuse_call_ids = reuse;
        self
    }

    /// Compresses payloads of at least `threshold` bytes with `algorithm` (default: no
    /// compression; 1 KiB is a good threshold), on version 5 connections, and only when
    /// that makes them smaller. A peer that cannot decompress `algorithm` gets LZ4 (if it
    /// can take that). A method's `#[compress]` / `#[compress(false)]` and a call's
    /// [`crate::Client::with_compression`] override the threshold (without this setting,
    /// they compress with LZ4; with `threshold` `usize::MAX`, `algorithm` serves only
    /// them). Receiving compressed payloads needs no setting: every algorithm this build
    /// has is accepted.
    pub fn compression(mut self, algorithm: Compression, threshold: usize) -> Self {
        self.compression = Some((algorithm, threshold));
        self
    }
}
