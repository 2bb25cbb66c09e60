//! The control frames both sides handle alike: flow control (`WINDOW_UPDATE`,
//! `STOP_SENDING`) and liveness (`PING`, `PONG`). They are applied as soon as they are
//! read, whatever the connection's limits: a side at its limit stops *starting* work,
//! never reading these.

use crate::error::RpcError;
use crate::outbox::Outbox;
use crate::protocol::{kind, Frame, SETTINGS_VERSION};
use crate::stream::StreamTable;

/// Applies `frame` if it is a control frame (`Ok(None)`), or hands it back for the side
/// to handle. A `PING` or `PONG` on a protocol version without them is a violation.
pub(crate) fn apply(
    frame: Frame,
    streams: &StreamTable,
    outbox: &Outbox,
    version: u16,
) -> Result<Option<Frame>, RpcError> {
    match frame {
        Frame::WindowUpdate { id, increment } => streams.grant(id, increment),
        Frame::StopSending { id } => streams.stop_sending(id),
        Frame::Ping { .. } | Frame::Pong { .. } if version < SETTINGS_VERSION => {
            return Err(RpcError::Protocol(
                "PING and PONG need protocol version 3".into(),
            ))
        }
        // The answer goes out with the pass's other frames (an error only means the
        // connection is closing).
        Frame::Ping { data } => {
            let _ = outbox.push_control(kind::PONG, 0, &data.to_be_bytes());
        }
        // Any bytes are signs of life; the watchdog has counted them already.
        Frame::Pong { .. } => {}
        other => return Ok(Some(other)),
    }
    Ok(None)
}
