//! Server settings.

use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME_SIZE;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_in_flight_per_connection: 1024,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_call_duration: None,
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
    /// server stops reading that connection until a call finishes.
    pub fn max_in_flight_per_connection(mut self, max: usize) -> Self {
        self.max_in_flight_per_connection = max.clamp(1, MAX_IN_FLIGHT);
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
}
