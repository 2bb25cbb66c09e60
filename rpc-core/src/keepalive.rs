//! Liveness of a connection (protocol version 3): when nothing has arrived from the peer
//! for [`Keepalive::interval`], send a `PING`; when nothing arrives within
//! [`Keepalive::timeout`] after it, the peer is considered gone (a crashed host, a
//! black-holed network path, a process that stopped reading) and the connection is
//! closed, failing its calls with a typed error instead of leaving them to their
//! deadlines.
//!
//! Any bytes count as a sign of life (part of a frame too), and so does time the
//! connection chose not to read, so a busy connection never pings. The rules are
//! applied by the connection core's watchdog ([`crate::connection_core::watchdog`]).

use std::time::Duration;

/// Keepalive settings of a connection: ping after `interval` of silence from the peer,
/// give up `timeout` after the ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence from the peer after which a `PING` is sent.
    pub interval: Duration,
    /// How long the `PING` may go unanswered (no frame at all arriving) before the
    /// connection is closed.
    pub timeout: Duration,
}

impl Keepalive {
    /// Ping after `interval` of silence, close `timeout` after an unanswered ping.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            interval: interval.max(Duration::from_millis(1)),
            timeout: timeout.max(Duration::from_millis(1)),
        }
    }
}
