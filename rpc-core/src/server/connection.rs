//! One server-side connection: after the handshake ([`super::handshake`]), one task
//! that reads frames, starts calls ([`super::dispatch`]), and writes answers in batches,
//! with the connection's timeouts, keepalive and shutdown signals.
//!
//! A call's handler future is polled once right where its request is read: a handler that
//! completes at once (most do) answers without a task, a timer or a wake-up. Only a
//! handler still pending after that first poll is spawned onto its own task, with its
//! deadline. Either way the answer goes through the connection's outbox, which this task
//! writes once it has handled every frame that was ready.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use super::foreign::SharedPort;
use super::handshake;
use super::observer::BatchEnds;
use super::parked::Parked;
use super::service::Router;
use super::state::{ConnectionSlot, ConnectionState, Load};
use super::ServerConfig;
use crate::compression::compressor;
use crate::context::{ConnectionInfo, PeerAddr};
use crate::frame_io::{FrameIo, ReadError};
use crate::keepalive::{Due, KeepaliveTimer};
use crate::method_ids::BoundMethods;
use crate::outbox::Outbox;
use crate::protocol::{
    go_away, kind, status, Frame, FrameLayout, PayloadCodec, SETTINGS_VERSION, STREAM_ITEM_OVERHEAD,
};
use crate::stream::{Flow, Inbound, Pushed, StreamEnd, StreamTable};
use crate::transport::{Established, Transport};

/// The signals a server sends its connections.
#[derive(Clone)]
pub(crate) struct Signals {
    /// Stop taking new calls, finish those in flight.
    pub(crate) graceful: CancellationToken,
    /// Drop the calls still in flight (answering them `INTERRUPTED`) and close.
    pub(crate) hard: CancellationToken,
    /// Drop the connection at once, answering nothing (as if the process died).
    pub(crate) kill: CancellationToken,
}

/// How the read loop ended.
pub(super) enum End {
    /// The client closed or the stream failed: nobody is left to answer.
    Gone,
    /// Graceful shutdown finished draining.
    Drained,
    /// Grace period over: drop what is still running.
    Hard,
    /// Killed: drop everything, write nothing more.
    Killed,
}

/// What every connection of a server shares: its services, settings, counts, signals and
/// tasks, and the protocol its port is shared with.
#[derive(Clone)]
pub(crate) struct ServerParts {
    pub(crate) router: Arc<Router>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) load: Arc<Load>,
    pub(crate) signals: Signals,
    pub(crate) tasks: TaskTracker,
    pub(crate) shared_port: SharedPort,
    /// The fingerprint block sent to clients of version 6 (section 24), made once.
    pub(crate) fingerprints: Arc<[u8]>,
}

/// Establishes one accepted connection, then serves it until it closes or the server
/// stops.
pub(crate) async fn serve_connection<T: Transport>(
    establishing: impl Future<Output = std::io::Result<Established<T>>>,
    peer: PeerAddr,
    parts: ServerParts,
) {
    let ServerParts {
        router,
        config,
        load,
        signals,
        tasks,
        shared_port,
        fingerprints,
    } = parts;
    let _slot = ConnectionSlot(Arc::clone(&load));
    let over_limit = load.connections.fetch_add(1, Ordering::AcqRel) >= config.max_connections;
    let opening = handshake::open(
        establishing,
        &peer,
        &config,
        over_limit,
        &signals,
        shared_port.0.as_ref(),
        &fingerprints,
    )
    .await;
    let opened = match opening {
        None => return,
        Some(handshake::Opening::Native(opened)) => opened,
        Some(handshake::Opening::Foreign(connection)) => {
            let protocol = shared_port
                .0
                .expect("only a shared port hands connections over");
            // Told of a graceful shutdown through the connection; dropped at its end.
            tokio::select! {
                _ = protocol.serve(connection) => {}
                _ = signals.hard.cancelled() => {}
                _ = signals.kill.cancelled() => {}
            }
            return;
        }
    };
    // A JSON connection is served through every service's JSON dispatcher.
    let router = match opened.codec {
        PayloadCodec::Bincode => router,
        PayloadCodec::Json => Arc::new(crate::json::native::json_view(&router)),
    };
    let flow = if opened.version >= SETTINGS_VERSION {
        Flow {
            send_window: opened.client_settings.stream_window,
            receive_window: config.stream_window,
            overhead: STREAM_ITEM_OVERHEAD as u32,
            max_item: config.max_frame_size,
        }
    } else {
        Flow::legacy(config.max_frame_size)
    };
    let state = Arc::new(ConnectionState {
        // Answers do not wait on the outbox (what bounds them is the in-flight limit and
        // `max_write_buffer`, above which the connection is not read); its mark holds
        // stream items back.
        outbox: Outbox::new(
            opened.client_max_frame,
            FrameLayout::for_version(opened.version),
            compressor(
                opened.version,
                config.compression,
                opened.client_settings.compressions,
            ),
            config.max_write_buffer,
        ),
        running: Mutex::new(HashMap::default()),
        inline_call: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: config.max_in_flight_per_connection,
        load,
        streams: StreamTable::new(flow),
        version: opened.version,
        ended: CancellationToken::new(),
        interrupted: std::sync::OnceLock::new(),
    });
    let _ended = state.ended.clone().drop_guard();
    let now = Instant::now();
    let first_check = now
        + config
            .idle_timeout
            .unwrap_or(HOUSEKEEPING_FALLBACK)
            .min(HOUSEKEEPING_FALLBACK);
    let keepalive = config
        .keepalive
        .filter(|_| opened.version >= SETTINGS_VERSION)
        .map(|settings| KeepaliveTimer::new(settings, now));
    // At the in-flight limit, requests wait to start: as many as the limit again, and at
    // least as many as a client with default settings keeps in flight (so it never
    // fills the park and never meets a server that does not read its PINGs), within the
    // write buffer's bound in payload bytes.
    let parked = Parked::new(
        config
            .max_in_flight_per_connection
            .max(crate::client::DEFAULT_MAX_IN_FLIGHT),
        config.max_write_buffer,
    );
    let mut connection = ServerConnection {
        io: FrameIo::new(opened.reader, opened.writer, config.max_frame_size),
        tasks,
        state: Arc::clone(&state),
        router,
        config,
        info: Arc::new(ConnectionInfo::new(peer, opened.identity)),
        draining: false,
        last_id: 0,
        last_instance: 0,
        methods: BoundMethods::default(),
        parked,
        full_stream: None,
        last_frame_at: now,
        partial_since: None,
        last_write_at: now,
        housekeeping: Box::pin(tokio::time::sleep_until(first_check)),
        keepalive,
        batch_ends: BatchEnds::default(),
        graceful: Box::pin(signals.graceful.clone().cancelled_owned()),
        hard: Box::pin(signals.hard.clone().cancelled_owned()),
        kill: Box::pin(signals.kill.clone().cancelled_owned()),
    };
    let end = std::future::poll_fn(|cx| connection.poll(cx)).await;
    // Calls answered in the last pass end now, not after the closing flush.
    connection.batch_ends.end_all();

    match end {
        End::Gone => state.abort_all(None),
        End::Drained => {}
        // These calls had started: they are answered INTERRUPTED (not SHUTTING_DOWN, which
        // says a call never ran and may be retried anywhere).
        End::Hard => state.abort_all(Some((
            status::INTERRUPTED,
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
pub(super) struct ServerConnection<R, W> {
    pub(super) io: FrameIo<R, W>,
    /// The server's tasks: spawned handlers join them, so shutdown waits for them too.
    pub(super) tasks: TaskTracker,
    pub(super) state: Arc<ConnectionState>,
    pub(super) router: Arc<Router>,
    pub(super) config: Arc<ServerConfig>,
    pub(super) info: Arc<ConnectionInfo>,
    pub(super) draining: bool,
    /// The highest call id received, announced in `GO_AWAY`.
    pub(super) last_id: u64,
    /// The instance number of the last call registered ([`super::state::RunningCall`]).
    pub(super) last_instance: u64,
    /// The method ids the client bound (version 5).
    pub(super) methods: BoundMethods,
    /// Requests read at the in-flight limit, waiting for a slot.
    pub(super) parked: Parked,
    /// A stream of an older client that holds as many items as it may: the connection
    /// reads no more until it has room.
    pub(super) full_stream: Option<Arc<Inbound>>,
    /// When the last complete frame arrived (for the idle timeout).
    pub(super) last_frame_at: Instant,
    /// Since when part of a frame has been waiting for the rest (for the frame timeout).
    pub(super) partial_since: Option<Instant>,
    /// When queued answers last made progress or none were queued (for the write timeout).
    pub(super) last_write_at: Instant,
    /// Fires at the earliest time the idle or write timeout could expire; re-armed lazily,
    /// so activity costs a timestamp, not a timer update.
    pub(super) housekeeping: Pin<Box<tokio::time::Sleep>>,
    /// Pings a silent client (version 3), and drops it if it does not answer.
    pub(super) keepalive: Option<KeepaliveTimer>,
    /// Observed calls answered in the current batch, ended after its write.
    pub(super) batch_ends: BatchEnds,
    pub(super) graceful: Cancelled,
    pub(super) hard: Cancelled,
    pub(super) kill: Cancelled,
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
        // Answers queued while this task runs (the inline handlers') are written before
        // it returns: they need not wake it.
        self.state.outbox.unregister();
        if !self.draining && self.graceful.as_mut().poll(cx).is_ready() {
            self.draining = true;
            self.go_away(go_away::SHUTTING_DOWN, "the server is shutting down");
        }
        if self.housekeeping.as_mut().poll(cx).is_ready() {
            if let Some(end) = self.housekeeping(cx) {
                return Poll::Ready(end);
            }
        }
        // A timed-out ping is judged after one read pass: after a stall of this task
        // (a loaded machine), the answer may be waiting in the socket already.
        let mut timed_out = false;
        if let Some(keepalive) = &mut self.keepalive {
            match keepalive.poll(cx) {
                Due::Nothing => {}
                Due::Ping(data) => {
                    let _ = self
                        .state
                        .outbox
                        .push_control(kind::PING, 0, &data.to_be_bytes());
                }
                Due::TimedOut => timed_out = true,
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
                && self.state.outbox.unwritten() > self.config.max_write_buffer;
            // Whether this pass stopped reading by its own choice (a bound of this side),
            // which no timer may charge to the peer.
            let mut paused = over_write_buffer;
            while budget > 0 && !over_write_buffer {
                // Backpressure: at the in-flight limit the connection goes on reading
                // (control frames must be seen) and parks the requests it reads; parked
                // requests start, oldest first, as calls end (a call's release wakes this
                // task through the outbox's waker). Only a full park stops reading, unless
                // streams are open: they need the connection read (their items and
                // credit arrive on it), so it goes on and what cannot be parked is shed.
                if let Err(end) = self.start_parked(now, cx) {
                    return Poll::Ready(end);
                }
                if let Some(stream) = &self.full_stream {
                    if stream.poll_room(cx).is_pending() {
                        paused = true;
                        break;
                    }
                    self.full_stream = None;
                }
                if self.parked.is_full() && self.state.streams.is_empty() {
                    self.state.outbox.register(cx.waker());
                    if self.state.has_room() {
                        continue;
                    }
                    paused = true;
                    break;
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
                    Poll::Ready(Some(Err(ReadError::TooLarge { size, limit }))) => {
                        self.go_away(
                            go_away::FRAME_TOO_LARGE,
                            &format!(
                                "a frame of {size} bytes exceeds the server's limit of {limit} bytes"
                            ),
                        );
                        return Poll::Ready(End::Gone);
                    }
                    Poll::Ready(Some(Err(ReadError::Io(_)))) => return Poll::Ready(End::Gone),
                    Poll::Ready(None) => return Poll::Ready(End::Gone),
                    Poll::Pending => break,
                }
            }
            // Any bytes are a sign of life (a frame still arriving too), and so is time
            // this side chose not to read: the peer's answers may be waiting unread.
            let heard = self.io.take_arrivals() || paused;
            if heard {
                if let Some(keepalive) = &mut self.keepalive {
                    keepalive.heard(now);
                }
            }
            if std::mem::take(&mut timed_out) && !heard {
                tracing::debug!(peer = %self.info.peer(), "client did not answer a ping: dropping the connection");
                return Poll::Ready(End::Gone);
            }
            // Answers to what was just read go out at once; one that woke this task from a
            // handler's own task waits for the other running handlers' answers once.
            let coalesce = !read_any && self.state.in_flight.load(Ordering::Acquire) >= 2;
            let written = self.io.poll_write(cx, &self.state.outbox, coalesce);
            self.batch_ends.end_all();
            if let Poll::Ready(Err(e)) = written {
                tracing::debug!(peer = %self.info.peer(), error = %e, "server write failed");
                return Poll::Ready(End::Gone);
            }
            // A frame begun and not finished: the frame timeout runs from now (not while
            // this side is not reading: the rest may be waiting in the socket).
            if self.io.read_buffered() == 0 || paused {
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
            if self.draining {
                // Parked requests are refused SHUTTING_DOWN (they never ran).
                if let Err(end) = self.start_parked(now, cx) {
                    return Poll::Ready(end);
                }
                if self.state.running().is_empty() {
                    return Poll::Ready(End::Drained);
                }
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
        let decoded = Frame::decode_with(frame, self.state.outbox.layout());
        match decoded {
            Ok(Frame::Request(mut request)) => {
                if let Err(e) = self.methods.resolve(&mut request) {
                    self.go_away(go_away::PROTOCOL_ERROR, &e.to_string());
                    return Err(End::Gone);
                }
                // At the limit, or behind requests already waiting: park it (beyond the
                // park, only reachable while streams keep the connection read, `start`
                // sheds it).
                if (!self.parked.is_empty() || !self.state.has_room()) && !self.parked.is_full() {
                    self.parked.push(request, now);
                    return Ok(());
                }
                self.start(request, now, cx)
            }
            Ok(Frame::Cancel { id }) => {
                let call = self.state.running().remove(&id);
                if let Some(task) = call.and_then(|call| call.task) {
                    task.abort();
                }
                self.state.end_streams(id);
                Ok(())
            }
            Ok(Frame::StreamItem {
                id,
                payload,
                compressed,
            }) => {
                // Items for a stream nobody reads any more are dropped.
                if let Some(inbound) = self.state.streams.inbound(id) {
                    match inbound.push(payload, compressed) {
                        Ok(Pushed::Queued) => {}
                        // An older client filled the stream: read no more until its
                        // consumer makes room.
                        Ok(Pushed::Full) => self.full_stream = Some(inbound),
                        Err(e) => {
                            self.go_away(go_away::PROTOCOL_ERROR, &e.to_string());
                            return Err(End::Gone);
                        }
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
            Ok(Frame::Ping { data }) if self.state.version >= SETTINGS_VERSION => {
                let _ = self
                    .state
                    .outbox
                    .push_control(kind::PONG, 0, &data.to_be_bytes());
                Ok(())
            }
            // Any frame is a sign of life; the read loop stamps it.
            Ok(Frame::Pong { .. }) if self.state.version >= SETTINGS_VERSION => Ok(()),
            Ok(Frame::Ping { .. } | Frame::Pong { .. }) => {
                self.go_away(
                    go_away::PROTOCOL_ERROR,
                    "PING and PONG need protocol version 3",
                );
                Err(End::Gone)
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

    /// Starts parked requests, oldest first, while there are slots (while draining, all
    /// of them: `start` refuses them SHUTTING_DOWN).
    fn start_parked(&mut self, now: Instant, cx: &mut TaskContext<'_>) -> Result<(), End> {
        while !self.parked.is_empty() && (self.draining || self.state.has_room()) {
            let (request, arrived) = self.parked.pop().expect("not empty");
            // A request that waited past the batch's clock starts with its own.
            self.start(request, arrived.min(now), cx)?;
        }
        Ok(())
    }

    /// Queues a `GO_AWAY` naming the highest call id received so far: calls above it were
    /// never seen by this server.
    pub(super) fn go_away(&self, code: u8, message: &str) {
        let message = crate::protocol::fit_message(message, self.state.outbox.max_frame_size());
        let _ = self.state.outbox.push(
            (kind::GO_AWAY, 0, self.last_id),
            None,
            |buf| buf.put_u8(code),
            |buf| {
                buf.put_slice(message.as_bytes());
                Ok(())
            },
        );
    }
}
