//! The one loop that moves a connection's bytes, for both sides: each pass reads every
//! frame that is ready (within a budget), applies the control frames
//! ([`super::control`]), hands the rest to the side, asks the [`Watchdog`] what is due,
//! and writes what the outbox holds. What differs between client and server (which
//! frames they take, when their own bounds stop them reading, how a connection ends) is
//! the [`Side`] they plug in.
//!
//! Reading stops only for this side's own bounds ([`Side::may_read`],
//! [`Side::write_backlogged`], a stream of an older peer that holds all the items it
//! may), and such a pause is reported to the watchdog, which never charges it to the peer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::control;
use super::watchdog::{Due, Expired, Limits, Reading, Watchdog, Writing};
use crate::error::RpcError;
use crate::frame_io::{FrameIo, ReadError};
use crate::outbox::Outbox;
use crate::protocol::{kind, Frame};
use crate::stream::{Inbound, StreamTable};

/// Frames handled per poll before the task yields to others.
const FRAMES_PER_POLL: usize = 128;

/// When no timer runs, the timer is parked this far ahead.
const NO_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// What a side of the connection decides; the [`Driver`] does the rest.
pub(crate) trait Side {
    /// How the connection ended, for the side's own clean-up.
    type End;

    /// The connection's outbox.
    fn outbox(&self) -> &Outbox;
    /// The connection's streams (for the control frames).
    fn streams(&self) -> &StreamTable;
    /// The protocol version spoken.
    fn version(&self) -> u16;

    /// Called first in every poll (signals, wakers); `Err` ends the connection. By
    /// default, nothing.
    fn begin(&mut self, cx: &mut Context<'_>) -> Result<(), Self::End> {
        let _ = cx;
        Ok(())
    }
    /// Whether this side's own bounds let it read the next frame (`Ok(false)` pauses
    /// reading for this pass; the side registers what wakes it). By default, always.
    fn may_read(&mut self, now: Instant, cx: &mut Context<'_>) -> Result<bool, Self::End> {
        let _ = (now, cx);
        Ok(true)
    }
    /// Whether answers are backed up so far that this pass reads nothing
    /// (`pending_write`: bytes taken for writing and not yet written). By default, never.
    fn write_backlogged(&self, pending_write: usize) -> bool {
        let _ = pending_write;
        false
    }
    /// Handles a frame that is not a control frame. `Ok(Some(stream))`: an older peer
    /// filled `stream`, and nothing more is read until it has room.
    fn frame(
        &mut self,
        frame: Frame,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> Result<Option<Arc<Inbound>>, Self::End>;
    /// The peer broke the protocol.
    fn violation(&mut self, error: RpcError) -> Self::End;
    /// Reading failed, or the peer closed (`None`).
    fn read_ended(&mut self, error: Option<ReadError>) -> Self::End;
    /// Whether a write should wait once for other tasks' frames (see [`FrameIo`]).
    fn coalesce(&self, read_any: bool) -> bool;
    /// Writing failed.
    fn write_failed(&mut self, error: io::Error) -> Self::End;
    /// The outbox was closed and everything in it written.
    fn closed(&mut self) -> Self::End;
    /// Called after each write; `Err` ends the connection. By default, nothing.
    fn after_write(&mut self, now: Instant, cx: &mut Context<'_>) -> Result<(), Self::End> {
        let _ = (now, cx);
        Ok(())
    }
    /// Whether calls are in flight (the connection is not idle).
    fn busy(&self) -> bool;
    /// A timer ran out.
    fn expired(&mut self, expired: Expired) -> Self::End;
}

/// A connection's bytes, timers and the stream it waits on.
pub(crate) struct Driver<R, W> {
    pub(crate) io: FrameIo<R, W>,
    watchdog: Watchdog,
    /// Armed at or before the watchdog's next deadline; re-armed lazily, so activity
    /// costs a comparison, not a timer update.
    timer: Pin<Box<Sleep>>,
    /// A stream of an older peer that holds as many items as it may.
    full_stream: Option<Arc<Inbound>>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Driver<R, W> {
    /// A driver for a connection that opened at `now`.
    pub(crate) fn new(io: FrameIo<R, W>, limits: Limits, now: Instant) -> Self {
        let watchdog = Watchdog::new(limits, now);
        let first = watchdog.next_deadline().unwrap_or(now + NO_DEADLINE);
        Driver {
            io,
            watchdog,
            timer: Box::pin(tokio::time::sleep_until(first)),
            full_stream: None,
        }
    }

    /// Runs passes until the connection ends or nothing is ready.
    pub(crate) fn poll<S: Side>(&mut self, side: &mut S, cx: &mut Context<'_>) -> Poll<S::End> {
        if let Err(end) = side.begin(cx) {
            return Poll::Ready(end);
        }
        let mut fired = self.timer.as_mut().poll(cx).is_ready();
        let mut budget = FRAMES_PER_POLL;
        // One clock read per poll: deadlines of frames read together start together.
        let now = Instant::now();
        loop {
            let mut read_any = false;
            let backlogged = side.write_backlogged(self.io.pending_write());
            let mut paused = backlogged;
            while budget > 0 && !backlogged {
                match side.may_read(now, cx) {
                    Ok(true) => {}
                    Ok(false) => {
                        paused = true;
                        break;
                    }
                    Err(end) => return Poll::Ready(end),
                }
                if let Some(stream) = &self.full_stream {
                    if stream.poll_room(cx).is_pending() {
                        paused = true;
                        break;
                    }
                    self.full_stream = None;
                }
                let bytes = match self.io.poll_frame(cx) {
                    Poll::Ready(Some(Ok(bytes))) => bytes.freeze(),
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(side.read_ended(Some(error)))
                    }
                    Poll::Ready(None) => return Poll::Ready(side.read_ended(None)),
                    Poll::Pending => break,
                };
                budget -= 1;
                read_any = true;
                let frame = Frame::decode_with(bytes, side.outbox().layout()).and_then(|frame| {
                    control::apply(frame, side.streams(), side.outbox(), side.version())
                });
                match frame {
                    Ok(None) => {}
                    Ok(Some(frame)) => match side.frame(frame, now, cx) {
                        Ok(full) => self.full_stream = full.or(self.full_stream.take()),
                        Err(end) => return Poll::Ready(end),
                    },
                    Err(error) => return Poll::Ready(side.violation(error)),
                }
            }
            self.watchdog.read(
                now,
                Reading {
                    bytes_arrived: self.io.take_arrivals(),
                    frame_arrived: read_any,
                    partial_frame: self.io.read_buffered() > 0,
                    paused,
                },
            );
            match self.watchdog.due(now) {
                Due::Nothing => {}
                Due::Ping(data) => {
                    let _ = side
                        .outbox()
                        .push_control(kind::PING, 0, &data.to_be_bytes());
                }
                Due::Expired(expired) => return Poll::Ready(side.expired(expired)),
            }
            // Answers to what was just read go out at once; the side says when a write
            // should wait for the frames other tasks are about to queue.
            match self
                .io
                .poll_write(cx, side.outbox(), side.coalesce(read_any))
            {
                Poll::Ready(Err(error)) => return Poll::Ready(side.write_failed(error)),
                Poll::Ready(Ok(true)) => return Poll::Ready(side.closed()),
                Poll::Ready(Ok(false)) | Poll::Pending => {}
            }
            if let Err(end) = side.after_write(now, cx) {
                return Poll::Ready(end);
            }
            self.watchdog.wrote(
                now,
                Writing {
                    progressed: self.io.take_progress(),
                    pending: self.io.pending_write() > 0,
                    busy: side.busy(),
                },
            );
            self.arm(&mut fired, now, cx);
            if budget == 0 {
                // Let other tasks run; come back at once.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !read_any {
                return Poll::Pending;
            }
        }
    }

    /// Re-arms the timer when it fired or the watchdog's next deadline is earlier than
    /// the one armed.
    fn arm(&mut self, fired: &mut bool, now: Instant, cx: &mut Context<'_>) {
        let next = self.watchdog.next_deadline();
        let earlier = next.is_some_and(|next| next < self.timer.deadline());
        if !*fired && !earlier {
            return;
        }
        *fired = false;
        self.timer.as_mut().reset(next.unwrap_or(now + NO_DEADLINE));
        // Register the re-armed timer with the task; if its time has passed already (the
        // task was late), nothing else will wake it, so look again at once.
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The loop alone, over an in-memory pipe with a paused clock: no sockets, and every
    //! instant is the test's.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use futures::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

    use super::*;
    use crate::keepalive::Keepalive;
    use crate::protocol::FrameLayout;
    use crate::stream::Flow;

    /// A side that records the frames it is given, and stops reading once it holds
    /// `limit` of them (a bound of its own, as the server's park).
    struct Recorder {
        outbox: Outbox,
        streams: StreamTable,
        limit: Arc<AtomicUsize>,
        frames: Arc<Mutex<Vec<Frame>>>,
    }

    impl Side for Recorder {
        type End = String;
        fn outbox(&self) -> &Outbox {
            &self.outbox
        }
        fn streams(&self) -> &StreamTable {
            &self.streams
        }
        fn version(&self) -> u16 {
            crate::protocol::VERSION
        }
        fn may_read(&mut self, _: Instant, cx: &mut Context<'_>) -> Result<bool, String> {
            if self.frames.lock().unwrap().len() < self.limit.load(Ordering::SeqCst) {
                return Ok(true);
            }
            // The test wakes the task through the outbox when it reads again.
            self.outbox.register(cx.waker());
            Ok(false)
        }
        fn frame(
            &mut self,
            frame: Frame,
            _: Instant,
            _: &mut Context<'_>,
        ) -> Result<Option<Arc<Inbound>>, String> {
            self.frames.lock().unwrap().push(frame);
            Ok(None)
        }
        fn violation(&mut self, error: RpcError) -> String {
            format!("violation: {error}")
        }
        fn read_ended(&mut self, error: Option<ReadError>) -> String {
            format!("read ended: {error:?}")
        }
        fn coalesce(&self, _: bool) -> bool {
            false
        }
        fn write_failed(&mut self, error: io::Error) -> String {
            format!("write failed: {error}")
        }
        fn closed(&mut self) -> String {
            "closed".into()
        }
        fn busy(&self) -> bool {
            true
        }
        fn expired(&mut self, expired: Expired) -> String {
            format!("expired: {expired:?}")
        }
    }

    struct Harness {
        peer_read: ReadHalf<DuplexStream>,
        peer_write: WriteHalf<DuplexStream>,
        limit: Arc<AtomicUsize>,
        frames: Arc<Mutex<Vec<Frame>>>,
        wake: Arc<Outbox>,
        end: tokio::task::JoinHandle<String>,
    }

    /// Starts a driver over an in-memory pipe; the harness holds the peer's end.
    fn start(limits: Limits) -> Harness {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(ours);
        let (peer_read, peer_write) = tokio::io::split(theirs);
        let limit = Arc::new(AtomicUsize::new(usize::MAX));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let outbox = Outbox::new(1 << 20, FrameLayout::Compact, None, 1 << 20);
        // A second handle on nothing but the task's waker: the test pokes the task
        // through it after raising `limit`.
        let wake = Arc::new(Outbox::new(1 << 20, FrameLayout::Compact, None, 1 << 20));
        let mut side = Recorder {
            outbox,
            streams: StreamTable::new(Flow::legacy(1 << 20)),
            limit: Arc::clone(&limit),
            frames: Arc::clone(&frames),
        };
        let mut driver = Driver::new(FrameIo::new(read, write, 1 << 20), limits, Instant::now());
        let poke = Arc::clone(&wake);
        let end = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                poke.register(cx.waker());
                driver.poll(&mut side, cx)
            })
            .await
        });
        Harness {
            peer_read,
            peer_write,
            limit,
            frames,
            wake,
            end,
        }
    }

    /// A control frame in the compact layout: prefix, kind, flags, one-byte id, body.
    fn control_frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut frame = ((3 + body.len()) as u32).to_be_bytes().to_vec();
        frame.extend([kind, 0, 0]);
        frame.extend(body);
        frame
    }

    /// A `STREAM_ITEM` for call 1 carrying `len` bytes.
    fn stream_item(len: usize) -> Vec<u8> {
        let mut frame = ((3 + len) as u32).to_be_bytes().to_vec();
        frame.extend([kind::STREAM_ITEM, 0, 1]);
        frame.extend(std::iter::repeat_n(7u8, len));
        frame
    }

    /// The next frame the driver wrote, decoded.
    async fn next_frame(read: &mut ReadHalf<DuplexStream>) -> Frame {
        let mut prefix = [0u8; 4];
        read.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        read.read_exact(&mut body).await.unwrap();
        Frame::decode_with(body.into(), FrameLayout::Compact).unwrap()
    }

    fn keepalive(interval: u64, timeout: u64) -> Limits {
        Limits {
            keepalive: Some(Keepalive::new(
                Duration::from_secs(interval),
                Duration::from_secs(timeout),
            )),
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_pinged_then_dropped() {
        let t0 = Instant::now();
        let mut h = start(keepalive(10, 5));
        assert!(matches!(
            next_frame(&mut h.peer_read).await,
            Frame::Ping { data: 1 }
        ));
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        assert_eq!(h.end.await.unwrap(), "expired: Keepalive(5s)");
        assert_eq!(t0.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn the_core_answers_pings_and_a_pong_keeps_the_connection() {
        let t0 = Instant::now();
        let mut h = start(keepalive(10, 5));
        h.peer_write
            .write_all(&control_frame(kind::PING, &42u64.to_be_bytes()))
            .await
            .unwrap();
        assert!(matches!(
            next_frame(&mut h.peer_read).await,
            Frame::Pong { data: 42 }
        ));
        assert!(matches!(
            next_frame(&mut h.peer_read).await,
            Frame::Ping { data: 1 }
        ));
        tokio::time::sleep(Duration::from_secs(4)).await;
        h.peer_write
            .write_all(&control_frame(kind::PONG, &1u64.to_be_bytes()))
            .await
            .unwrap();
        // Heard at 14 s: the next ping comes at 24 s, not a timeout at 15 s.
        assert!(matches!(
            next_frame(&mut h.peer_read).await,
            Frame::Ping { data: 2 }
        ));
        assert_eq!(t0.elapsed(), Duration::from_secs(24));
        // Control frames never reach the side.
        assert!(h.frames.lock().unwrap().is_empty());
    }

    /// Issue 21, item 4: a frame arriving a byte a second for longer than the keepalive
    /// interval and timeout together is life, not silence.
    #[tokio::test(start_paused = true)]
    async fn a_frame_arriving_slowly_is_never_charged_as_silence() {
        let mut h = start(keepalive(10, 5));
        for byte in stream_item(60) {
            h.peer_write.write_all(&[byte]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut nothing = [0u8; 1];
        assert!(
            h.peer_read.read(&mut nothing).now_or_never().is_none(),
            "the driver pinged a peer that was sending"
        );
        assert!(matches!(
            h.frames.lock().unwrap()[..],
            [Frame::StreamItem { id: 1, .. }]
        ));
        assert!(!h.end.is_finished());
    }

    /// Issue 21, items 1 to 3: a side that stopped reading at a bound of its own, for far
    /// longer than every timer, is charged nothing: not the start of the next frame that
    /// the read reaching the bound buffered, nor the ping waiting behind it.
    #[tokio::test(start_paused = true)]
    async fn time_this_side_chose_not_to_read_is_never_charged() {
        let limits = Limits {
            frame_timeout: Some(Duration::from_secs(3)),
            ..keepalive(10, 5)
        };
        let mut h = start(limits);
        h.limit.store(1, Ordering::SeqCst);
        // One write: a whole frame, half of the next, then (after it) a ping.
        let item = stream_item(40);
        let mut bytes = item.clone();
        bytes.extend(&item[..20]);
        h.peer_write.write_all(&bytes).await.unwrap();
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!h.end.is_finished(), "{:?}", h.end.now_or_never());
        assert_eq!(h.frames.lock().unwrap().len(), 1);
        h.limit.store(usize::MAX, Ordering::SeqCst);
        h.wake.wake_task();
        h.peer_write.write_all(&item[20..]).await.unwrap();
        h.peer_write
            .write_all(&control_frame(kind::PING, &9u64.to_be_bytes()))
            .await
            .unwrap();
        assert!(matches!(
            next_frame(&mut h.peer_read).await,
            Frame::Pong { data: 9 }
        ));
        assert_eq!(h.frames.lock().unwrap().len(), 2);
        // Reading again, a frame begun and left unfinished does time out.
        h.peer_write.write_all(&item[..20]).await.unwrap();
        assert_eq!(h.end.await.unwrap(), "expired: Frame");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_on_a_version_without_pings_is_a_violation() {
        // The recorder speaks the current version; the control rules are shared, so the
        // old-version refusal is checked on `control::apply` directly.
        let outbox = Outbox::new(1 << 20, FrameLayout::Fixed, None, 1 << 20);
        let streams = StreamTable::new(Flow::legacy(1 << 20));
        let refused = control::apply(Frame::Ping { data: 1 }, &streams, &outbox, 2);
        assert!(matches!(refused, Err(RpcError::Protocol(_))));
        let passed = control::apply(Frame::Cancel { id: 3 }, &streams, &outbox, 2);
        assert!(matches!(passed, Ok(Some(Frame::Cancel { id: 3 }))));
    }
}
