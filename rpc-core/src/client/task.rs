//! A client connection's one task: writes what the outbox holds, reads every frame that
//! is ready, completes calls and feeds streams, answers pings and sends its own
//! ([`crate::keepalive`]), until the connection ends. Then every call still waiting
//! fails with the reason.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::connection::{Pending, Shared, State};
use crate::error::RpcError;
use crate::frame_io::{FrameIo, ReadError};
use crate::keepalive::{Due, KeepaliveTimer};
use crate::protocol::{go_away, kind, Frame, SETTINGS_VERSION};
use crate::stream::{Inbound, Pushed, StreamEnd};

/// Frames handled per poll before the task yields to others.
const FRAMES_PER_POLL: usize = 128;

/// Runs the connection until it ends, then fails what is left.
pub(super) async fn run_connection<R, W>(io: FrameIo<R, W>, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let keepalive = shared
        .config
        .keepalive
        .filter(|_| shared.version >= SETTINGS_VERSION)
        .map(|settings| KeepaliveTimer::new(settings, Instant::now()));
    let mut task = Task {
        io,
        shared: &shared,
        keepalive,
        full_stream: None,
    };
    let error = std::future::poll_fn(|cx| task.poll(cx)).await;
    tracing::debug!(remote = %shared.remote, %error, "client connection ended");
    shared.fail(error);
}

struct Task<'a, R, W> {
    io: FrameIo<R, W>,
    shared: &'a Shared,
    keepalive: Option<KeepaliveTimer>,
    /// A stream of an older server that holds as many items as it may: the task reads no
    /// more until it has room.
    full_stream: Option<Arc<Inbound>>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Task<'_, R, W> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<RpcError> {
        let shared = self.shared;
        // A timed-out ping is judged after one read pass: after a stall of this task
        // (a loaded machine), the answer may be waiting in the socket already.
        let mut timed_out = None;
        if let Some(keepalive) = &mut self.keepalive {
            match keepalive.poll(cx) {
                Due::Nothing => {}
                Due::Ping(data) => {
                    let _ = shared
                        .outbox
                        .push_control(kind::PING, 0, &data.to_be_bytes());
                }
                Due::TimedOut => timed_out = Some(keepalive.timeout()),
            }
        }
        let mut budget = FRAMES_PER_POLL;
        loop {
            // Other callers are about to queue requests: let theirs go out with these.
            match self.io.poll_write(cx, &shared.outbox, shared.busy()) {
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(RpcError::closed(format!("write failed: {e}")))
                }
                // Closed by this side and everything written.
                Poll::Ready(Ok(true)) => {
                    return Poll::Ready(RpcError::closed("the connection was closed"))
                }
                Poll::Ready(Ok(false)) | Poll::Pending => {}
            }
            let mut read_any = false;
            // Not reading by this side's choice: no timer may charge it to the server.
            let mut paused = false;
            while budget > 0 {
                if let Some(stream) = &self.full_stream {
                    if stream.poll_room(cx).is_pending() {
                        paused = true;
                        break;
                    }
                    self.full_stream = None;
                }
                let frame = match self.io.poll_frame(cx) {
                    Poll::Ready(Some(Ok(bytes))) => bytes.freeze(),
                    Poll::Ready(Some(Err(ReadError::TooLarge { size, limit }))) => {
                        return Poll::Ready(RpcError::closed(format!(
                            "the server sent a frame of {size} bytes, over this client's \
                             limit of {limit} bytes"
                        )))
                    }
                    Poll::Ready(Some(Err(ReadError::Io(e)))) => {
                        return Poll::Ready(RpcError::closed(format!("read failed: {e}")))
                    }
                    Poll::Ready(None) => {
                        return Poll::Ready(RpcError::closed("the server closed the connection"))
                    }
                    Poll::Pending => break,
                };
                budget -= 1;
                read_any = true;
                match handle_frame(shared, frame) {
                    Ok(full) => self.full_stream = full.or(self.full_stream.take()),
                    Err(error) => return Poll::Ready(error),
                }
            }
            // Any bytes are a sign of life, a frame still arriving too: a large answer
            // coming in over a slow path is not silence.
            let heard = self.io.take_arrivals() || paused;
            if heard {
                if let Some(keepalive) = &mut self.keepalive {
                    keepalive.heard(Instant::now());
                }
            }
            if let Some(timeout) = timed_out.take() {
                if !heard {
                    return Poll::Ready(RpcError::KeepaliveTimeout { timeout });
                }
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !read_any {
                return Poll::Pending;
            }
        }
    }
}

/// Applies one frame from the server; `Err` ends the connection, `Ok(Some(stream))` says
/// that an older server filled `stream` (the task reads no more until it has room).
fn handle_frame(shared: &Shared, frame: Bytes) -> Result<Option<Arc<Inbound>>, RpcError> {
    match Frame::decode_with(frame, shared.outbox.layout())? {
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
        Frame::WindowUpdate { id, increment } => {
            shared.streams.grant(id, increment);
            Ok(None)
        }
        Frame::StopSending { id } => {
            shared.streams.stop_sending(id);
            Ok(None)
        }
        Frame::Ping { data } if shared.version >= SETTINGS_VERSION => {
            let _ = shared
                .outbox
                .push_control(kind::PONG, 0, &data.to_be_bytes());
            Ok(None)
        }
        // Any frame is a sign of life; the task stamps it.
        Frame::Pong { .. } if shared.version >= SETTINGS_VERSION => Ok(None),
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
