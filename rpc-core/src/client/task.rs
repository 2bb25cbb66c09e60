//! A client connection's one task: the shared connection loop
//! ([`crate::connection_core::driver`]) with the client's side plugged in. Responses
//! complete calls, stream items feed streams, a `GO_AWAY` drains or ends the connection;
//! the core answers pings, sends its own and runs the keepalive. When the connection
//! ends, every call still waiting fails with the reason.

use std::sync::Arc;
use std::task::Context;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::connection::{Pending, Shared, State};
use crate::connection_core::driver::{Driver, Side};
use crate::connection_core::watchdog::{Expired, Limits};
use crate::error::RpcError;
use crate::frame_io::{FrameIo, ReadError};
use crate::outbox::Outbox;
use crate::protocol::{go_away, Frame, SETTINGS_VERSION};
use crate::stream::{Inbound, Pushed, StreamEnd, StreamTable};

/// Runs the connection until it ends, then fails what is left.
pub(super) async fn run_connection<R, W>(io: FrameIo<R, W>, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = Limits {
        keepalive: shared
            .config
            .keepalive
            .filter(|_| shared.version >= SETTINGS_VERSION),
        ..Limits::default()
    };
    let mut driver = Driver::new(io, limits, Instant::now());
    let mut side = ClientSide { shared: &shared };
    let error = std::future::poll_fn(|cx| driver.poll(&mut side, cx)).await;
    tracing::debug!(remote = %shared.remote, %error, "client connection ended");
    shared.fail(error);
}

/// The client's side of a connection: responses complete calls, items feed streams.
struct ClientSide<'a> {
    shared: &'a Shared,
}

impl Side for ClientSide<'_> {
    type End = RpcError;

    fn outbox(&self) -> &Outbox {
        &self.shared.outbox
    }

    fn streams(&self) -> &StreamTable {
        &self.shared.streams
    }

    fn version(&self) -> u16 {
        self.shared.version
    }

    // A client reads whenever it can (the default `may_read`): calls in flight are
    // bounded before they are sent.

    fn frame(
        &mut self,
        frame: Frame,
        _: Instant,
        _: &mut Context<'_>,
    ) -> Result<Option<Arc<Inbound>>, RpcError> {
        handle_frame(self.shared, frame)
    }

    fn violation(&mut self, error: RpcError) -> RpcError {
        error
    }

    fn read_ended(&mut self, error: Option<ReadError>) -> RpcError {
        match error {
            Some(ReadError::TooLarge { size, limit }) => RpcError::closed(format!(
                "the server sent a frame of {size} bytes, over this client's limit of {limit} bytes"
            )),
            Some(ReadError::Io(e)) => RpcError::closed(format!("read failed: {e}")),
            None => RpcError::closed("the server closed the connection"),
        }
    }

    /// Other callers are about to queue requests: let theirs go out with these.
    fn coalesce(&self, _: bool) -> bool {
        self.shared.busy()
    }

    fn write_failed(&mut self, error: std::io::Error) -> RpcError {
        RpcError::closed(format!("write failed: {error}"))
    }

    fn closed(&mut self) -> RpcError {
        RpcError::closed("the connection was closed")
    }

    fn busy(&self) -> bool {
        self.shared.any_in_flight()
    }

    fn expired(&mut self, expired: Expired) -> RpcError {
        match expired {
            Expired::Keepalive(timeout) => RpcError::KeepaliveTimeout { timeout },
            // The client runs no other timer.
            other => RpcError::closed(format!("connection timer expired: {other:?}")),
        }
    }
}

/// Applies one frame from the server; `Err` ends the connection, `Ok(Some(stream))` says
/// that an older server filled `stream` (the task reads no more until it has room).
fn handle_frame(shared: &Shared, frame: Frame) -> Result<Option<Arc<Inbound>>, RpcError> {
    match frame {
        Frame::Response(response) => {
            // A response to a call that is no longer waiting (cancelled, timed out) or
            // that was never made is dropped.
            let id = response.id;
            let mut calls = shared.calls();
            match calls.pending.get_mut(&id) {
                Some(Pending::Unary(answer)) => {
                    // Left for the caller, who takes it when woken.
                    let waker = answer.answer(Ok(response));
                    drop(calls);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                Some(Pending::Stream(_)) => {
                    let Some(Pending::Stream(inbound)) = calls.pending.remove(&id) else {
                        unreachable!("the entry was just seen streaming")
                    };
                    drop(calls);
                    inbound.end(StreamEnd::Response(response));
                }
                None => drop(calls),
            }
            // The call is over: stop sending its client stream, if any.
            shared
                .streams
                .finish(id, || StreamEnd::Error(RpcError::Cancelled));
            Ok(None)
        }
        Frame::StreamItem {
            id,
            payload,
            compressed,
        } => {
            let inbound = match shared.calls().pending.get(&id) {
                Some(Pending::Stream(inbound)) => Some(Arc::clone(inbound)),
                _ => None,
            };
            match inbound {
                Some(inbound) => match inbound.push(payload, compressed)? {
                    Pushed::Queued => Ok(None),
                    Pushed::Full => Ok(Some(inbound)),
                },
                // The stream was dropped (its CANCEL is on its way): discard.
                None => Ok(None),
            }
        }
        Frame::GoAway {
            code,
            message,
            last_id,
        } => match code {
            go_away::SHUTTING_DOWN | go_away::IDLE_TIMEOUT => {
                let mut calls = shared.calls();
                if matches!(calls.state, State::Open) {
                    calls.state = State::Draining { last_id };
                }
                shared.usable.send_replace(false);
                Ok(None)
            }
            go_away::PROTOCOL_ERROR => Err(RpcError::Protocol(format!(
                "the server closed the connection: {message}"
            ))),
            go_away::FRAME_TOO_LARGE => Err(RpcError::Protocol(format!(
                "the server says this client sent an oversized frame: {message}"
            ))),
            code => Err(RpcError::GoAway { code, message }),
        },
        other => Err(RpcError::Protocol(format!(
            "unexpected frame from the server: {other:?}"
        ))),
    }
}
