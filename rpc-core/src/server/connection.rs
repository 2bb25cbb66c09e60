//! One server-side connection: the handshake, then one task that reads frames, starts
//! calls, and writes answers in batches.
//!
//! A call's handler future is polled once right where its request is read: a handler that
//! completes at once (most do) answers without a task, a timer or a wake-up. Only a
//! handler still pending after that first poll is spawned onto its own task, with its
//! deadline. Either way the answer goes through the connection's outbox, which this task
//! writes once it has handled every frame that was ready.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use super::interceptor::Rejection;
use super::service::{DispatchError, HandlerFuture, IncomingCall, ReplyTo, Router};
use super::ServerConfig;
use crate::context::{self, ConnectionInfo, Context, PeerAddr};
use crate::frame_io::FrameIo;
use crate::outbox::Outbox;
use crate::protocol::{
    go_away, handshake_status, kind, status, ClientHello, Frame, RequestFrame, ServerHello,
    HANDSHAKE_LEN, MIN_VERSION, VERSION,
};
use crate::stream::{StreamEnd, StreamPeer, StreamTable};
use crate::transport::{Established, Transport};
use crate::util::IdHasher;
use crate::RpcError;

/// The signals a server sends its connections.
#[derive(Clone)]
pub(crate) struct Signals {
    /// Stop taking new calls, finish those in flight.
    pub(crate) graceful: CancellationToken,
    /// Drop the calls still in flight (answering them `SHUTTING_DOWN`) and close.
    pub(crate) hard: CancellationToken,
    /// Drop the connection at once, answering nothing (as if the process died).
    pub(crate) kill: CancellationToken,
}

/// Server-wide counts, shared by every connection of a server.
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// Connections being served (past accept, including those still in the handshake).
    pub(crate) connections: AtomicUsize,
    /// Calls running across all connections.
    pub(crate) calls: AtomicUsize,
}

/// A connection's place in the server's connection count.
struct ConnectionSlot(Arc<Load>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// State of a connection shared with its handler tasks.
pub(crate) struct ConnectionState {
    pub(crate) outbox: Outbox,
    /// Spawned calls not yet answered, by call id, with their task (or `None` while it is
    /// being spawned).
    running: Mutex<RunningCalls>,
    /// The id of the call whose handler is being polled in place on the connection task
    /// (0 if none): it is "running" without an entry in `running`.
    inline_call: AtomicU64,
    /// Calls started and not finished (answered or dropped).
    in_flight: AtomicUsize,
    /// The most calls that may be in flight: at the limit the connection stops reading.
    max_in_flight: usize,
    /// The server's counts.
    pub(crate) load: Arc<Load>,
    /// Streams of calls on this connection (flow control).
    pub(crate) streams: StreamTable,
    /// The protocol version the client speaks (streaming needs 2).
    pub(crate) version: u16,
    /// The largest frame this server accepts (the bound on one received stream item).
    max_frame_size: usize,
}

impl StreamPeer for ConnectionState {
    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn receiver_dropped(&self, id: u64) {
        // The handler dropped its request stream: the client may stop sending it.
        self.streams.remove_inbound(id);
        let _ = self.outbox.push_control(kind::STOP_SENDING, id, &[]);
    }

    fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }
}

type RunningCalls = HashMap<u64, Option<AbortHandle>, BuildHasherDefault<IdHasher>>;

impl ConnectionState {
    fn running(&self) -> MutexGuard<'_, RunningCalls> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the right to answer call `id`. Whoever removes a running call (from the
    /// inline slot or the map) answers it, so a call is never answered twice (handler vs.
    /// shutdown vs. cancel).
    pub(crate) fn claim(&self, id: u64) -> bool {
        if id != 0
            && self
                .inline_call
                .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.end_streams(id);
            return true;
        }
        let claimed = self.running().remove(&id).is_some();
        if claimed {
            self.end_streams(id);
        }
        claimed
    }

    /// Call `id` is over: its streams end (a no-op for calls without any).
    fn end_streams(&self, id: u64) {
        self.streams
            .finish(id, || StreamEnd::Error(RpcError::Cancelled));
    }

    /// Whether another call may start (the in-flight limit is not reached).
    fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) < self.max_in_flight
    }

    /// A call ended: frees its slot and, if the connection had stopped reading at the
    /// limit, wakes its task.
    fn release_slot(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == self.max_in_flight {
            self.outbox.wake_task();
        }
    }

    /// Aborts every running handler; with `answer`, tells each caller `status`.
    fn abort_all(self: &Arc<Self>, answer: Option<(u8, &str)>) {
        self.streams
            .fail_all(&RpcError::closed("the connection is closing"));
        let running = std::mem::take(&mut *self.running());
        for (id, handler) in running {
            if let Some(handler) = handler {
                handler.abort();
            }
            if let Some((code, message)) = answer {
                ReplyTo::unregistered(Arc::clone(self), id).error(code, message);
            }
        }
    }
}

/// How the read loop ended.
enum End {
    /// The client closed or the stream failed: nobody is left to answer.
    Gone,
    /// Graceful shutdown finished draining.
    Drained,
    /// Grace period over: drop what is still running.
    Hard,
    /// Killed: drop everything, write nothing more.
    Killed,
}

/// Establishes one accepted connection, then serves it until it closes or the server
/// stops.
pub(crate) async fn serve_connection<T: Transport>(
    establishing: impl Future<Output = std::io::Result<Established<T>>>,
    peer: PeerAddr,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    load: Arc<Load>,
    signals: Signals,
    tasks: TaskTracker,
) {
    let _slot = ConnectionSlot(Arc::clone(&load));
    let over_limit = load.connections.fetch_add(1, Ordering::AcqRel) >= config.max_connections;
    // The transport's own handshake (TLS) and ours share the handshake timeout.
    let opening = async {
        let established = establishing.await?;
        let (mut reader, writer) = established.io.split();
        let mut hello = [0u8; HANDSHAKE_LEN];
        reader.read_exact(&mut hello).await?;
        Ok::<_, std::io::Error>((reader, writer, established.identity, hello))
    };
    let read = tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, opening) => r,
        _ = signals.graceful.cancelled() => return,
        _ = signals.kill.cancelled() => return,
    };
    let (reader, mut writer, identity, hello) = match read {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed during the handshake");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            return;
        }
    };
    let hello = match ClientHello::decode(&hello) {
        Ok(hello) => hello,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "refused connection");
            return;
        }
    };
    let supported = (MIN_VERSION..=VERSION).contains(&hello.version);
    let status = if !supported {
        handshake_status::UNSUPPORTED_VERSION
    } else if over_limit {
        handshake_status::TOO_MANY_CONNECTIONS
    } else {
        handshake_status::ACCEPTED
    };
    let reply = ServerHello {
        // The version spoken on this connection: the client's, when supported.
        version: if supported { hello.version } else { VERSION },
        status,
        max_frame_size: config.max_frame_size as u32,
    };
    let written =
        tokio::time::timeout(config.handshake_timeout, writer.write_all(&reply.encode())).await;
    if !matches!(written, Ok(Ok(()))) || status != handshake_status::ACCEPTED {
        tracing::debug!(%peer, version = hello.version, status, "refused connection");
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
        return;
    }

    let state = Arc::new(ConnectionState {
        outbox: Outbox::new((hello.max_frame_size as usize).max(64)),
        running: Mutex::new(HashMap::default()),
        inline_call: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: config.max_in_flight_per_connection,
        load,
        streams: StreamTable::default(),
        version: hello.version,
        max_frame_size: config.max_frame_size,
    });
    let now = Instant::now();
    let first_check = now
        + config
            .idle_timeout
            .unwrap_or(HOUSEKEEPING_FALLBACK)
            .min(HOUSEKEEPING_FALLBACK);
    let mut connection = ServerConnection {
        io: FrameIo::new(reader, writer, config.max_frame_size),
        tasks,
        state: Arc::clone(&state),
        router,
        config,
        info: Arc::new(ConnectionInfo::new(peer, identity)),
        draining: false,
        last_id: 0,
        last_frame_at: now,
        partial_since: None,
        last_write_at: now,
        housekeeping: Box::pin(tokio::time::sleep_until(first_check)),
        graceful: Box::pin(signals.graceful.clone().cancelled_owned()),
        hard: Box::pin(signals.hard.clone().cancelled_owned()),
        kill: Box::pin(signals.kill.clone().cancelled_owned()),
    };
    let end = std::future::poll_fn(|cx| connection.poll(cx)).await;

    match end {
        End::Gone => state.abort_all(None),
        End::Drained => {}
        End::Hard => state.abort_all(Some((
            status::SHUTTING_DOWN,
            "the server shut down before the call finished",
        ))),
        End::Killed => {
            state.abort_all(None);
            return;
        }
    }
    state.outbox.close();
    // Write what is queued, but never wait long on a peer that stopped reading, nor past
    // the server's own kill.
    tokio::select! {
        _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, connection.io.finish(&state.outbox)) => {}
        _ = signals.kill.cancelled() => {}
    }
}

/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest the housekeeping timer sleeps when no timeout could expire sooner.
const HOUSEKEEPING_FALLBACK: Duration = Duration::from_secs(60);

/// Frames handled per poll before the task yields to others.
const FRAMES_PER_POLL: usize = 128;

type Cancelled = Pin<Box<WaitForCancellationFutureOwned>>;

/// The state of the connection's task after the handshake.
struct ServerConnection<R, W> {
    io: FrameIo<R, W>,
    /// The server's tasks: spawned handlers join them, so shutdown waits for them too.
    tasks: TaskTracker,
    state: Arc<ConnectionState>,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    info: Arc<ConnectionInfo>,
    draining: bool,
    /// The highest call id received, announced in `GO_AWAY`.
    last_id: u64,
    /// When the last complete frame arrived (for the idle timeout).
    last_frame_at: Instant,
    /// Since when part of a frame has been waiting for the rest (for the frame timeout).
    partial_since: Option<Instant>,
    /// When queued answers last made progress or none were queued (for the write timeout).
    last_write_at: Instant,
    /// Fires at the earliest time the idle or write timeout could expire; re-armed lazily,
    /// so activity costs a timestamp, not a timer update.
    housekeeping: Pin<Box<tokio::time::Sleep>>,
    graceful: Cancelled,
    hard: Cancelled,
    kill: Cancelled,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> ServerConnection<R, W> {
    /// Reads and handles every frame that is ready, writes every answer that is queued,
    /// and returns `Pending` until the connection ends.
    fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<End> {
        if self.kill.as_mut().poll(cx).is_ready() {
            return Poll::Ready(End::Killed);
        }
        if self.hard.as_mut().poll(cx).is_ready() {
            return Poll::Ready(End::Hard);
        }
        if !self.draining && self.graceful.as_mut().poll(cx).is_ready() {
            self.draining = true;
            self.go_away(go_away::SHUTTING_DOWN, "the server is shutting down");
        }
        if self.housekeeping.as_mut().poll(cx).is_ready() {
            if let Some(end) = self.housekeeping(cx) {
                return Poll::Ready(end);
            }
        }
        let mut budget = FRAMES_PER_POLL;
        // One clock read per batch: deadlines of frames read together start together.
        let now = Instant::now();
        loop {
            let mut read_any = false;
            // Backpressure on a peer that does not read its answers: above the write
            // buffer bound, stop reading its requests.
            let over_write_buffer = self.io.pending_write() > 0
                && self.io.pending_write() + self.state.outbox.queued()
                    > self.config.max_write_buffer;
            while budget > 0 && !over_write_buffer {
                // Backpressure: at the in-flight limit, stop reading until a call ends
                // (its release wakes this task through the outbox's waker).
                // While streams are open they need this connection read (their items and
                // credit arrive on it), so it goes on and new calls are shed instead.
                if !self.state.has_room() && self.state.streams.is_empty() {
                    self.state.outbox.register(cx.waker());
                    if !self.state.has_room() {
                        break;
                    }
                }
                match self.io.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        budget -= 1;
                        read_any = true;
                        self.last_frame_at = now;
                        if let Err(end) = self.handle(frame.freeze(), now, cx) {
                            return Poll::Ready(end);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            self.go_away(
                                go_away::FRAME_TOO_LARGE,
                                &format!(
                                    "frame exceeds the server's limit of {} bytes",
                                    self.config.max_frame_size
                                ),
                            );
                        }
                        return Poll::Ready(End::Gone);
                    }
                    Poll::Ready(None) => return Poll::Ready(End::Gone),
                    Poll::Pending => break,
                }
            }
            if let Poll::Ready(Err(e)) = self.io.poll_write(cx, &self.state.outbox) {
                tracing::debug!(peer = %self.info.peer(), error = %e, "server write failed");
                return Poll::Ready(End::Gone);
            }
            // A frame begun and not finished: the frame timeout runs from now.
            if self.io.read_buffered() == 0 {
                self.partial_since = None;
            } else if self.partial_since.is_none() {
                self.partial_since = Some(now);
                let frame_deadline = now + self.config.frame_timeout;
                if self.housekeeping.deadline() > frame_deadline {
                    self.housekeeping.as_mut().reset(frame_deadline);
                    let _ = self.housekeeping.as_mut().poll(cx);
                }
            }
            if self.io.take_progress() || self.io.pending_write() == 0 {
                self.last_write_at = now;
            } else {
                // Answers are stuck: make sure the timer looks again by the write timeout.
                let stall_deadline = self.last_write_at + self.config.write_timeout;
                if self.housekeeping.deadline() > stall_deadline {
                    self.housekeeping.as_mut().reset(stall_deadline);
                    let _ = self.housekeeping.as_mut().poll(cx);
                }
            }
            if self.draining && self.state.running().is_empty() {
                return Poll::Ready(End::Drained);
            }
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

    /// The idle and write timeouts: ends the connection if one expired, else re-arms the
    /// timer for the earliest time one could.
    fn housekeeping(&mut self, cx: &mut TaskContext<'_>) -> Option<End> {
        let now = Instant::now();
        let writing = self.io.pending_write() > 0;
        if writing && now.duration_since(self.last_write_at) >= self.config.write_timeout {
            tracing::debug!(peer = %self.info.peer(), "peer stopped reading: dropping the connection");
            return Some(End::Gone);
        }
        if let Some(since) = self.partial_since {
            if now.duration_since(since) >= self.config.frame_timeout {
                tracing::debug!(peer = %self.info.peer(), "a frame took too long to arrive");
                self.go_away(go_away::IDLE_TIMEOUT, "a frame took too long to arrive");
                return Some(End::Gone);
            }
        }
        let idle = self.state.in_flight.load(Ordering::Acquire) == 0 && !writing;
        if let Some(idle_timeout) = self.config.idle_timeout {
            if idle && now.duration_since(self.last_frame_at) >= idle_timeout {
                tracing::debug!(peer = %self.info.peer(), "idle timeout: closing the connection");
                self.go_away(go_away::IDLE_TIMEOUT, "the connection was idle too long");
                return Some(End::Drained);
            }
        }
        // Idle: when the idle period would end; busy: look again one period from now.
        let mut next = now + HOUSEKEEPING_FALLBACK;
        if let Some(idle_timeout) = self.config.idle_timeout {
            let base = if idle { self.last_frame_at } else { now };
            next = next.min(base + idle_timeout);
        }
        if writing {
            next = next.min(self.last_write_at + self.config.write_timeout);
        }
        if let Some(since) = self.partial_since {
            next = next.min(since + self.config.frame_timeout);
        }
        self.housekeeping
            .as_mut()
            .reset(next.max(now + Duration::from_millis(1)));
        // Register the re-armed timer with this task.
        let _ = self.housekeeping.as_mut().poll(cx);
        None
    }

    fn handle(&mut self, frame: Bytes, now: Instant, cx: &mut TaskContext<'_>) -> Result<(), End> {
        match Frame::decode(frame) {
            Ok(Frame::Request(request)) => self.start(request, now, cx),
            Ok(Frame::Cancel { id }) => {
                let handler = self.state.running().remove(&id);
                if let Some(Some(handler)) = handler {
                    handler.abort();
                }
                self.state.end_streams(id);
                Ok(())
            }
            Ok(Frame::StreamItem { id, payload }) => {
                // Items for a stream nobody reads any more are dropped.
                if let Some(inbound) = self.state.streams.inbound(id) {
                    if let Err(e) = inbound.push(payload) {
                        self.go_away(go_away::PROTOCOL_ERROR, &e.to_string());
                        return Err(End::Gone);
                    }
                }
                Ok(())
            }
            Ok(Frame::StreamEnd {
                id,
                status,
                message,
            }) => {
                if let Some(inbound) = self.state.streams.inbound(id) {
                    inbound.end(StreamEnd::Status { status, message });
                }
                Ok(())
            }
            Ok(Frame::WindowUpdate { id, increment }) => {
                self.state.streams.grant(id, increment);
                Ok(())
            }
            Ok(Frame::StopSending { id }) => {
                self.state.streams.stop_sending(id);
                Ok(())
            }
            Ok(Frame::GoAway { .. }) => Err(End::Gone),
            Ok(Frame::Response(_)) => {
                self.go_away(go_away::PROTOCOL_ERROR, "a client may not send responses");
                Err(End::Gone)
            }
            Err(e) => {
                tracing::debug!(peer = %self.info.peer(), error = %e, "protocol error");
                self.go_away(go_away::PROTOCOL_ERROR, &e.to_string());
                Err(End::Gone)
            }
        }
    }

    /// Queues a `GO_AWAY` naming the highest call id received so far: calls above it were
    /// never seen by this server.
    fn go_away(&self, code: u8, message: &str) {
        let message = crate::protocol::fit_message(message, self.state.outbox.max_frame_size());
        let _ = self.state.outbox.push(
            kind::GO_AWAY,
            0,
            self.last_id,
            |buf| {
                buf.put_u8(code);
                buf.put_slice(message.as_bytes());
            },
            |_| Ok(()),
        );
    }

    /// Starts one request: dispatches it, polls its handler once, and spawns the handler
    /// if it is not done yet. `Err` ends the connection the way it says.
    fn start(
        &mut self,
        request: RequestFrame,
        now: Instant,
        cx: &mut TaskContext<'_>,
    ) -> Result<(), End> {
        let id = request.id;
        self.last_id = self.last_id.max(id);
        let unregistered = || ReplyTo::unregistered(Arc::clone(&self.state), id);
        if self.draining {
            unregistered().error(status::SHUTTING_DOWN, "the server is shutting down");
            return Ok(());
        }
        if self.state.running().contains_key(&id) {
            self.go_away(
                go_away::PROTOCOL_ERROR,
                &format!("call id {id} is already in flight"),
            );
            return Err(End::Gone);
        }
        // Load shedding, before any work is spent on the call: beyond the server-wide
        // limit, or beyond this connection's limit (reached while the connection is still
        // read because streams need their items and credit), the call is refused, not
        // queued. It did not run, so the caller may retry it elsewhere.
        if !self.state.has_room() {
            unregistered().error(
                status::OVERLOADED,
                "the connection is at its in-flight limit; the call did not run",
            );
            return Ok(());
        }
        if self.state.load.calls.fetch_add(1, Ordering::AcqRel) >= self.config.max_concurrent_calls
        {
            self.state.load.calls.fetch_sub(1, Ordering::AcqRel);
            unregistered().error(
                status::OVERLOADED,
                "the server is at its concurrency limit; the call did not run",
            );
            return Ok(());
        }
        let mut slot = InFlightSlot {
            state: Arc::clone(&self.state),
            counted: false,
        };
        let Some(service) = self.router.get(request.service.as_str()) else {
            unregistered().error(
                status::UNKNOWN_SERVICE,
                &format!("no service named `{}`", request.service),
            );
            return Ok(());
        };
        // The caller's budget, capped by the server's own limit (0 = the caller set none).
        let budget = match request.budget_micros {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        };
        let budget = match (budget, self.config.max_call_duration) {
            (Some(b), Some(max)) => Some(b.min(max)),
            (b, max) => b.or(max),
        };
        let deadline = budget.and_then(|b| now.checked_add(b));
        let context = Context::new(
            id,
            deadline,
            service.name(),
            request.method.clone(),
            request.flags,
            request.metadata,
            Arc::clone(&self.info),
        );
        // The interceptor and argument decoding run user code: a panic there must fail
        // the call, not the connection.
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some(interceptor) = self.router.interceptor() {
                interceptor.intercept(&context).map_err(Refused::Rejected)?;
            }
            service
                .call(
                    request.method.as_str(),
                    IncomingCall::new(
                        request.payload,
                        ReplyTo::registered(Arc::clone(&self.state), id),
                    ),
                )
                .map_err(Refused::Dispatch)
        }));
        let mut handler = match dispatched {
            Ok(Ok(handler)) => handler,
            Ok(Err(Refused::Rejected(Rejection::Unauthenticated(message)))) => {
                unregistered().error(status::UNAUTHENTICATED, &message);
                return Ok(());
            }
            Ok(Err(Refused::Rejected(Rejection::PermissionDenied(message)))) => {
                unregistered().error(status::PERMISSION_DENIED, &message);
                return Ok(());
            }
            Err(panic) => {
                unregistered().error(status::HANDLER_PANICKED, &panic_message(&*panic));
                return Ok(());
            }
            Ok(Err(Refused::Dispatch(DispatchError::UnknownMethod))) => {
                unregistered().error(
                    status::UNKNOWN_METHOD,
                    &format!("`{}` has no method `{}`", service.name(), request.method),
                );
                return Ok(());
            }
            Ok(Err(Refused::Dispatch(DispatchError::InvalidArguments(message)))) => {
                unregistered().error(status::INVALID_ARGUMENTS, &message);
                return Ok(());
            }
        };

        // Poll once here: a handler that is ready at once needs no task, no map entry and
        // no timer. While it is polled it is registered in the inline slot (id 0, which
        // the slot cannot hold, goes to the map).
        if id == 0 {
            self.state.running().insert(id, None);
        } else {
            self.state.inline_call.store(id, Ordering::Release);
        }
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.counted = true;
        let (first_poll, pending_context) = context::sync_scope(context, || {
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(cx)));
            // Only a handler that goes on needs its context again.
            let context = matches!(polled, Ok(Poll::Pending))
                .then(context::current)
                .flatten();
            (polled, context)
        });
        match (first_poll, pending_context) {
            (Ok(Poll::Pending), Some(context)) => {
                // Move the call from the inline slot to the map, under the map's lock so
                // that nobody can claim it before its task is recorded. If the handler
                // already answered, it runs on unregistered.
                let mut running = self.state.running();
                let unanswered = if id == 0 {
                    running.contains_key(&0)
                } else {
                    self.state
                        .inline_call
                        .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                };
                let task = self.tasks.spawn(context::scope(
                    context,
                    run_handler(handler, deadline, Arc::clone(&self.state), id, slot),
                ));
                if unanswered {
                    running.insert(id, Some(task.abort_handle()));
                }
            }
            (Ok(Poll::Ready(())), _) => finished(&self.state, id),
            // Unreachable: the context is current while the handler is polled.
            (Ok(Poll::Pending), None) => finished(&self.state, id),
            (Err(panic), _) => panicked(&self.state, id, &*panic),
        }
        Ok(())
    }
}

/// A started call's place in the in-flight count, given back when it is dropped (the call
/// finished, or its task was aborted).
struct InFlightSlot {
    state: Arc<ConnectionState>,
    /// Whether the call also counts toward its connection's in-flight limit (it does once
    /// it got past dispatch).
    counted: bool,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.state.load.calls.fetch_sub(1, Ordering::AcqRel);
        if self.counted {
            self.state.release_slot();
        }
    }
}

/// Why a call did not get as far as a handler.
enum Refused {
    Rejected(Rejection),
    Dispatch(DispatchError),
}

/// After a handler completed: it answered, unless a hand-written service forgot to.
fn finished(state: &Arc<ConnectionState>, id: u64) {
    ReplyTo::registered(Arc::clone(state), id).error(
        status::INTERNAL,
        "the service finished the call without answering",
    );
}

/// After a handler panicked: answers its call, if it is still unanswered.
fn panicked(state: &Arc<ConnectionState>, id: u64, panic: &(dyn std::any::Any + Send)) {
    let message = panic_message(panic);
    tracing::warn!(id, %message, "handler panicked");
    ReplyTo::registered(Arc::clone(state), id).error(status::HANDLER_PANICKED, &message);
}

/// Runs one handler to completion, its deadline, or a panic, and answers the latter two.
async fn run_handler(
    handler: HandlerFuture,
    deadline: Option<Instant>,
    state: Arc<ConnectionState>,
    id: u64,
    slot: InFlightSlot,
) {
    let guarded = AssertUnwindSafe(handler).catch_unwind();
    let outcome = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, guarded).await.ok(),
        None => Some(guarded.await),
    };
    match outcome {
        Some(Ok(())) => finished(&state, id),
        Some(Err(panic)) => panicked(&state, id, &*panic),
        None => ReplyTo::registered(state, id).error(
            status::DEADLINE_EXCEEDED,
            "the call's deadline passed before the handler finished",
        ),
    }
    drop(slot);
}

/// The text of a panic payload (`panic!` with a literal or a format string).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}
