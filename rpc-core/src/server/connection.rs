//! One server-side connection: after the handshake ([`super::handshake`]), one task
//! running the shared connection loop ([`crate::connection_core::driver`]) with the
//! server's side plugged in: it starts calls ([`super::dispatch`]), parks requests at
//! the in-flight limit, and follows the server's shutdown signals; the core applies the
//! control frames and runs every timer.
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
use std::task::Context as TaskContext;
use std::time::Duration;

use bytes::BufMut;
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
use crate::connection_core::driver::{Driver, Side};
use crate::connection_core::watchdog::{Expired, Limits};
use crate::context::{ConnectionInfo, PeerAddr};
use crate::error::RpcError;
use crate::frame_io::{FrameIo, ReadError};
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
    let limits = Limits {
        keepalive: config
            .keepalive
            .filter(|_| opened.version >= SETTINGS_VERSION),
        frame_timeout: Some(config.frame_timeout),
        write_timeout: Some(config.write_timeout),
        idle_timeout: config.idle_timeout,
    };
    let mut driver = Driver::new(
        FrameIo::new(opened.reader, opened.writer, config.max_frame_size),
        limits,
        now,
    );
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
        batch_ends: BatchEnds::default(),
        graceful: Box::pin(signals.graceful.clone().cancelled_owned()),
        hard: Box::pin(signals.hard.clone().cancelled_owned()),
        kill: Box::pin(signals.kill.clone().cancelled_owned()),
    };
    let end = std::future::poll_fn(|cx| driver.poll(&mut connection, cx)).await;
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
        _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, driver.io.finish(&state.outbox)) => {}
        _ = signals.kill.cancelled() => {}
    }
}

/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

type Cancelled = Pin<Box<WaitForCancellationFutureOwned>>;
/// The server's side of a connection after the handshake: what it does with the frames
/// the [`Driver`] reads, and when its own bounds stop it reading.
pub(super) struct ServerConnection {
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
    /// Observed calls answered in the current batch, ended after its write.
    pub(super) batch_ends: BatchEnds,
    pub(super) graceful: Cancelled,
    pub(super) hard: Cancelled,
    pub(super) kill: Cancelled,
}

impl Side for ServerConnection {
    type End = End;

    fn outbox(&self) -> &Outbox {
        &self.state.outbox
    }

    fn streams(&self) -> &StreamTable {
        &self.state.streams
    }

    fn version(&self) -> u16 {
        self.state.version
    }

    fn begin(&mut self, cx: &mut TaskContext<'_>) -> Result<(), End> {
        if self.kill.as_mut().poll(cx).is_ready() {
            return Err(End::Killed);
        }
        if self.hard.as_mut().poll(cx).is_ready() {
            return Err(End::Hard);
        }
        // Answers queued while this task runs (the inline handlers') are written before
        // it returns: they need not wake it.
        self.state.outbox.unregister();
        if !self.draining && self.graceful.as_mut().poll(cx).is_ready() {
            self.draining = true;
            self.go_away(go_away::SHUTTING_DOWN, "the server is shutting down");
        }
        Ok(())
    }

    /// At the in-flight limit the connection goes on reading (control frames must be
    /// seen) and parks the requests it reads; parked requests start, oldest first, as
    /// calls end (a call's release wakes this task through the outbox's waker). Only a
    /// full park stops reading, unless streams are open: they need the connection read
    /// (their items and credit arrive on it), so it goes on and what cannot be parked
    /// is shed.
    fn may_read(&mut self, now: Instant, cx: &mut TaskContext<'_>) -> Result<bool, End> {
        loop {
            self.start_parked(now, cx)?;
            if !(self.parked.is_full() && self.state.streams.is_empty()) {
                return Ok(true);
            }
            self.state.outbox.register(cx.waker());
            if !self.state.has_room() {
                return Ok(false);
            }
        }
    }

    /// A peer that does not read its answers: above the write buffer bound, its requests
    /// are not read.
    fn write_backlogged(&self, pending_write: usize) -> bool {
        pending_write > 0 && self.state.outbox.unwritten() > self.config.max_write_buffer
    }

    fn frame(
        &mut self,
        frame: Frame,
        now: Instant,
        cx: &mut TaskContext<'_>,
    ) -> Result<Option<Arc<Inbound>>, End> {
        self.handle(frame, now, cx)
    }

    fn violation(&mut self, error: RpcError) -> End {
        tracing::debug!(peer = %self.info.peer(), %error, "protocol error");
        self.go_away(go_away::PROTOCOL_ERROR, &error.to_string());
        End::Gone
    }

    fn read_ended(&mut self, error: Option<ReadError>) -> End {
        if let Some(ReadError::TooLarge { size, limit }) = error {
            self.go_away(
                go_away::FRAME_TOO_LARGE,
                &format!("a frame of {size} bytes exceeds the server's limit of {limit} bytes"),
            );
        }
        End::Gone
    }

    /// Answers to what was just read go out at once; one that woke this task from a
    /// handler's own task waits for the other running handlers' answers once.
    fn coalesce(&self, read_any: bool) -> bool {
        !read_any && self.state.in_flight.load(Ordering::Acquire) >= 2
    }

    fn write_failed(&mut self, error: std::io::Error) -> End {
        self.batch_ends.end_all();
        tracing::debug!(peer = %self.info.peer(), %error, "server write failed");
        End::Gone
    }

    fn closed(&mut self) -> End {
        End::Gone
    }

    fn after_write(&mut self, now: Instant, cx: &mut TaskContext<'_>) -> Result<(), End> {
        self.batch_ends.end_all();
        if self.draining {
            // Parked requests are refused SHUTTING_DOWN (they never ran).
            self.start_parked(now, cx)?;
            if self.state.running().is_empty() {
                return Err(End::Drained);
            }
        }
        Ok(())
    }

    fn busy(&self) -> bool {
        self.state.in_flight.load(Ordering::Acquire) > 0
    }

    fn expired(&mut self, expired: Expired) -> End {
        let peer = self.info.peer();
        match expired {
            Expired::Write => {
                tracing::debug!(%peer, "peer stopped reading: dropping the connection");
                End::Gone
            }
            Expired::Frame => {
                tracing::debug!(%peer, "a frame took too long to arrive");
                self.go_away(go_away::IDLE_TIMEOUT, "a frame took too long to arrive");
                End::Gone
            }
            Expired::Keepalive(_) => {
                tracing::debug!(%peer, "client did not answer a ping: dropping the connection");
                End::Gone
            }
            Expired::Idle => {
                tracing::debug!(%peer, "idle timeout: closing the connection");
                self.go_away(go_away::IDLE_TIMEOUT, "the connection was idle too long");
                End::Drained
            }
        }
    }
}

impl ServerConnection {
    /// Handles a frame that is not a control frame; `Ok(Some(stream))`: an older client
    /// filled `stream`.
    fn handle(
        &mut self,
        frame: Frame,
        now: Instant,
        cx: &mut TaskContext<'_>,
    ) -> Result<Option<Arc<Inbound>>, End> {
        match frame {
            Frame::Request(mut request) => {
                if let Err(e) = self.methods.resolve(&mut request) {
                    self.go_away(go_away::PROTOCOL_ERROR, &e.to_string());
                    return Err(End::Gone);
                }
                // At the limit, or behind requests already waiting: park it (beyond the
                // park, only reachable while streams keep the connection read, `start`
                // sheds it).
                if (!self.parked.is_empty() || !self.state.has_room()) && !self.parked.is_full() {
                    self.parked.push(request, now);
                    return Ok(None);
                }
                self.start(request, now, cx)?;
            }
            Frame::Cancel { id } => {
                let call = self.state.running().remove(&id);
                if let Some(task) = call.and_then(|call| call.task) {
                    task.abort();
                }
                self.state.end_streams(id);
            }
            Frame::StreamItem {
                id,
                payload,
                compressed,
            } => {
                // Items for a stream nobody reads any more are dropped.
                if let Some(inbound) = self.state.streams.inbound(id) {
                    match inbound.push(payload, compressed) {
                        Ok(Pushed::Queued) => {}
                        // An older client filled the stream: read no more until its
                        // consumer makes room.
                        Ok(Pushed::Full) => return Ok(Some(inbound)),
                        Err(e) => {
                            self.go_away(go_away::PROTOCOL_ERROR, &e.to_string());
                            return Err(End::Gone);
                        }
                    }
                }
            }
            Frame::StreamEnd {
                id,
                status,
                message,
            } => {
                if let Some(inbound) = self.state.streams.inbound(id) {
                    inbound.end(StreamEnd::Status { status, message });
                }
            }
            Frame::GoAway { .. } => return Err(End::Gone),
            Frame::Response(_) => {
                self.go_away(go_away::PROTOCOL_ERROR, "a client may not send responses");
                return Err(End::Gone);
            }
            other => {
                let message = format!("unexpected frame from a client: {other:?}");
                self.go_away(go_away::PROTOCOL_ERROR, &message);
                return Err(End::Gone);
            }
        }
        Ok(None)
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
