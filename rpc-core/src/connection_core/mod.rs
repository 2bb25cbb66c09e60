//! The connection core both sides share: the rules of a live connection, written once.
//!
//! - [`watchdog`]: every timer (keepalive, frame, write and idle timeouts) as plain
//!   state with time as an input, tested without sockets or a runtime;
//! - [`control`]: the control frames (`PING`, `PONG`, `WINDOW_UPDATE`, `STOP_SENDING`),
//!   applied as soon as they are read, whatever the connection's limits;
//! - [`driver`]: the one read-judge-write loop around them; the client
//!   ([`crate::client`]) and the server ([`crate::server`]) plug in what they do with
//!   the other frames and when their own bounds stop them reading.
//!
//! Stream credit and the per-stream item and byte bounds live in [`crate::stream`],
//! which both sides share too.

pub(crate) mod control;
pub(crate) mod driver;
pub(crate) mod watchdog;
