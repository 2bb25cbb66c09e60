//! Client settings.

use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME_SIZE;

/// Settings of a client connection. Build with [`ClientConfig::default`] and the setters.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) default_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            default_timeout: Duration::from_secs(30),
            max_in_flight: 1024,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            connect_timeout: Duration::from_secs(10),
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
}
