//! One multiplexed client connection.
//!
//! A call encodes its request straight into the connection's [`Outbox`], registers a
//! one-shot slot under its call id, and waits on it with its deadline. One task per
//! connection ([`super::task`]) writes the queued requests in batches, decodes responses
//! and completes the matching slots, in whatever order they arrive. There is no task per
//! unary call. Dropping a call future before it completes removes its slot and queues a
//! `CANCEL` frame so the server drops the handler too.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use bytes::BytesMut;

use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::handshake::negotiate;
use super::task::run_connection;
use super::ClientConfig;
use crate::compression::{compressor, decompress};
use crate::error::RpcError;
use crate::frame_io::FrameIo;
use crate::outbox::Outbox;
use crate::protocol::{
    self, kind, status, FrameLayout, PayloadCodec, ResponseFrame, SETTINGS_VERSION,
    STREAM_ITEM_OVERHEAD,
};
use crate::stream::{
    send_items, Flow, Inbound, Outbound, Sent, StreamEnd, StreamPeer, StreamTable,
};
use crate::util::IdHasher;
use crate::{Metadata, Streaming};
use serde::de::DeserializeOwned;
use serde::Serialize;

type Reply = Result<ResponseFrame, RpcError>;

/// Whether new calls may start.
pub(super) enum State {
    Open,
    /// The server sent a graceful go-away: calls in flight finish, new ones are refused.
    /// Calls above `last_id` never reached the server.
    Draining {
        last_id: u64,
    },
    Closed(RpcError),
}

/// What waits for a call's outcome.
pub(super) enum Pending {
    /// A unary call: its answer is left here for its caller, who takes it (no channel
    /// per call: the slot lives in the map entry).
    Unary(Answer),
    /// A streamed response: its items, then its `RESPONSE`, go to the stream.
    Stream(Arc<Inbound>),
}

/// A unary call's answer slot.
pub(super) enum Answer {
    /// Not answered yet; the caller's waker, once it has waited.
    Waiting(Option<Waker>),
    /// Answered: the caller takes it.
    Ready(Reply),
}

impl Answer {
    /// Leaves `reply` for the caller; returns the waker to wake (after the lock is
    /// released). An answer already left stays.
    pub(super) fn answer(&mut self, reply: Reply) -> Option<Waker> {
        match self {
            Answer::Waiting(waker) => {
                let waker = waker.take();
                *self = Answer::Ready(reply);
                waker
            }
            Answer::Ready(_) => None,
        }
    }
}

pub(super) struct Calls {
    pub(super) pending: HashMap<u64, Pending, BuildHasherDefault<IdHasher>>,
    pub(super) state: State,
    /// The next id never used on the connection.
    next_id: u64,
    /// Ids of unary calls that were answered, for reuse (version 5, with
    /// `ClientConfig::reuse_call_ids`): the server forgot them before it answered, and no
    /// frame of theirs can follow. Reused smallest-first in effect (last freed first), so
    /// ids stay as small as the calls in flight are few, and take one byte on the wire.
    free_ids: Vec<u64>,
}

/// State shared by the handles, the connection's task and upload tasks.
pub(super) struct Shared {
    pub(super) outbox: Outbox,
    /// Streams of calls on this connection (flow control).
    pub(super) streams: StreamTable,
    calls: Mutex<Calls>,
    in_flight: Semaphore,
    pub(super) config: ClientConfig,
    pub(super) remote: String,
    /// The protocol version spoken on the connection.
    pub(super) version: u16,
    /// `true` while new calls may start; `false` once the server is draining or the
    /// connection closed (for pools that replace such connections).
    pub(super) usable: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Whether more than one unary call is in flight (others may queue a request soon).
    pub(super) fn busy(&self) -> bool {
        self.config
            .max_in_flight
            .saturating_sub(self.in_flight.available_permits())
            >= 2
    }

    /// Whether any call is in flight.
    pub(super) fn any_in_flight(&self) -> bool {
        self.in_flight.available_permits() < self.config.max_in_flight
    }

    pub(super) fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the connection: every call in flight gets `error`, every later call `later`.
    /// After a graceful go-away, calls the server never saw get `ShuttingDown` instead:
    /// they did not run, so they are safe to send elsewhere.
    fn fail_all(&self, error: RpcError, later: RpcError) {
        let pending = {
            let mut calls = self.calls();
            let unseen_above = match calls.state {
                State::Draining { last_id } => Some(last_id),
                _ => None,
            };
            if !matches!(calls.state, State::Closed(_)) {
                calls.state = State::Closed(later);
            }
            self.usable.send_replace(false);
            let error_of = |id: u64| match unseen_above {
                Some(last_id) if id > last_id => RpcError::ShuttingDown,
                _ => error.clone(),
            };
            // Unary callers find their error in their slot; streams end now.
            let mut wakers = Vec::new();
            let mut streams = Vec::new();
            calls.pending.retain(|&id, pending| match pending {
                Pending::Unary(answer) => {
                    wakers.extend(answer.answer(Err(error_of(id))));
                    true
                }
                Pending::Stream(inbound) => {
                    streams.push((Arc::clone(inbound), error_of(id)));
                    false
                }
            });
            (wakers, streams)
        };
        let (wakers, streams) = pending;
        wakers.into_iter().for_each(Waker::wake);
        for (inbound, error) in streams {
            inbound.end(StreamEnd::Error(error));
        }
        self.streams.fail_all(&error);
        self.outbox.close();
    }

    /// Ends the connection: calls in flight get `error`; later calls are refused with
    /// [`RpcError::Unavailable`] (they are never sent), saying that a connection does not
    /// come back by itself.
    pub(super) fn fail(&self, error: RpcError) {
        let later = RpcError::Unavailable {
            reason: format!(
                "{error}; a Connection never reconnects: connect again, or build the client \
                 over a BalancedChannel, which reconnects by itself"
            )
            .into(),
        };
        self.fail_all(error, later);
    }
}

/// Closes the connection when the last [`Connection`] handle is dropped. Open streams and
/// uploads hold handles too, so a connection outlives its last caller-held handle until
/// they end.
struct Owner {
    shared: Arc<Shared>,
    task: AbortHandle,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // No call can be waiting: every call holds a handle. Dropping the socket halves
        // closes the connection; a server that stopped reading cannot keep a task alive.
        self.shared
            .fail(RpcError::closed("the connection handle was dropped"));
        self.task.abort();
    }
}

/// A client connection to a server: cheap to clone, usable from many tasks at once, and
/// shared by the clients of every service on that server.
///
/// The connection closes when the last clone is dropped and the streams opened on it have
/// ended (each holds a clone).
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.shared.remote)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Runs the protocol handshake over an established stream and starts the connection's
    /// task. `remote` names the peer in errors. Transports call this (within
    /// [`with_version_fallback`](super::with_version_fallback), so that older servers
    /// are reached too); users call `traitrpc::connect`.
    pub async fn handshake<T: crate::Transport>(
        io: T,
        remote: &str,
        config: ClientConfig,
    ) -> Result<Connection, RpcError> {
        let (mut reader, mut writer) = io.split();
        let exchange = negotiate(&mut reader, &mut writer, remote, &config);
        let negotiated = tokio::time::timeout(config.connect_timeout, exchange)
            .await
            .map_err(|_| RpcError::Connect {
                addr: remote.to_string(),
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "handshake timed out",
                )),
            })??;
        let flow = if negotiated.version >= SETTINGS_VERSION {
            Flow {
                send_window: negotiated.server_settings.stream_window,
                receive_window: config.stream_window,
                overhead: STREAM_ITEM_OVERHEAD as u32,
                max_item: config.max_frame_size,
            }
        } else {
            Flow::legacy(config.max_frame_size)
        };
        let shared = Arc::new(Shared {
            outbox: Outbox::new(
                negotiated.server_max_frame,
                FrameLayout::for_version(negotiated.version),
                compressor(
                    negotiated.version,
                    config.compression,
                    negotiated.server_settings.compressions,
                ),
                config.max_write_buffer,
            )
            .knowing(negotiated.fingerprints),
            streams: StreamTable::new(flow),
            calls: Mutex::new(Calls {
                pending: HashMap::default(),
                state: State::Open,
                next_id: 1,
                free_ids: Vec::new(),
            }),
            in_flight: Semaphore::new(config.max_in_flight),
            remote: remote.to_string(),
            config,
            version: negotiated.version,
            usable: tokio::sync::watch::Sender::new(true),
        });
        let io = FrameIo::new(reader, writer, shared.config.max_frame_size);
        let task = tokio::spawn(run_connection(io, Arc::clone(&shared)));
        Ok(Connection {
            _owner: Arc::new(Owner {
                shared: Arc::clone(&shared),
                task: task.abort_handle(),
            }),
            shared,
        })
    }

    /// The payload codec of this connection, as the handshake settled it.
    pub fn codec(&self) -> crate::protocol::PayloadCodec {
        self.shared.config.codec
    }

    /// The protocol version spoken on this connection.
    pub fn protocol_version(&self) -> u16 {
        self.shared.version
    }

    /// Closes the connection now: calls in flight fail with [`RpcError::Cancelled`] (the
    /// server drops their handlers when it sees the connection close) and later calls
    /// with [`RpcError::Unavailable`].
    pub fn close(&self) {
        self.shared.fail_all(
            RpcError::Cancelled,
            RpcError::Unavailable {
                reason: "the connection was closed by this side".into(),
            },
        );
    }

    /// Whether new calls may start on it: it is open and the server has not begun a
    /// graceful shutdown.
    pub fn is_usable(&self) -> bool {
        *self.shared.usable.borrow()
    }

    /// Completes once the connection takes no new calls: the server began a graceful
    /// shutdown (its calls in flight go on) or the connection closed. Pools use it to
    /// replace the connection.
    pub async fn unusable(&self) {
        let mut usable = self.shared.usable.subscribe();
        let _ = usable.wait_for(|usable| !usable).await;
    }

    /// Whether the connection has ended; calls on it fail at once.
    pub fn is_closed(&self) -> bool {
        matches!(self.shared.calls().state, State::Closed(_))
    }

    /// The peer this connection was opened to.
    pub fn remote(&self) -> &str {
        &self.shared.remote
    }

    /// The settings the connection was opened with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// Sends `call` on this connection and waits for its response (for [`Channel`]
    /// implementations; one attempt, no retry).
    ///
    /// [`Channel`]: super::Channel
    pub async fn send(&self, call: &super::OutgoingCall<'_>) -> Result<ResponseFrame, RpcError> {
        self.call(call.method, call.metadata, call.deadline, call.encode)
            .await
    }

    /// Sends one request and waits for its response until `deadline`.
    ///
    /// `encode` appends the arguments to the frame being built, in the codec it is given
    /// (JSON by name for a method whose schema differs from the server's, version 6).
    pub(crate) async fn call<E>(
        &self,
        method: &super::Method,
        metadata: &Metadata,
        deadline: Instant,
        encode: E,
    ) -> Result<ResponseFrame, RpcError>
    where
        E: FnOnce(&mut BytesMut, PayloadCodec) -> Result<(), RpcError>,
    {
        let _permit = self.acquire(deadline).await?;
        self.writable(deadline).await?;
        let (mut guard, _, _) = self.start(
            method,
            metadata,
            deadline,
            encode,
            Pending::Unary(Answer::Waiting(None)),
            false,
        )?;
        Self::wait(&mut guard, deadline).await
    }

    /// A call whose arguments end with a stream (client streaming): sends the request,
    /// sends `upload`'s items as the server grants credit, and waits for the response.
    pub(crate) async fn call_with_upload<E, U>(
        &self,
        method: &super::Method,
        metadata: &Metadata,
        deadline: Instant,
        encode: E,
        upload: Streaming<U>,
    ) -> Result<ResponseFrame, RpcError>
    where
        E: FnOnce(&mut BytesMut, PayloadCodec) -> Result<(), RpcError>,
        U: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check_streaming()?;
        let _permit = self.acquire(deadline).await?;
        self.writable(deadline).await?;
        let (mut guard, outbound, _) = self.start(
            method,
            metadata,
            deadline,
            encode,
            Pending::Unary(Answer::Waiting(None)),
            true,
        )?;
        if let Some(outbound) = outbound {
            self.spawn_upload((guard.id, outbound), method.compress, upload);
        }
        Self::wait(&mut guard, deadline).await
    }

    /// A call whose answer is a stream (server streaming, or bidirectional with
    /// `upload`). Returns once the request is queued; the stream then yields the items.
    /// Its deadline covers the whole stream. Streams do not count toward the
    /// connection's in-flight limit (the server's limits still apply).
    pub(crate) async fn open_stream<E, U, T>(
        &self,
        method: &super::Method,
        metadata: &Metadata,
        deadline: Instant,
        encode: E,
        upload: Option<Streaming<U>>,
    ) -> Result<Streaming<T>, RpcError>
    where
        E: FnOnce(&mut BytesMut, PayloadCodec) -> Result<(), RpcError>,
        U: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check_streaming()?;
        self.writable(deadline).await?;
        let inbound = self.shared.streams.new_inbound();
        let (mut guard, outbound, codec) = self.start(
            method,
            metadata,
            deadline,
            encode,
            Pending::Stream(Arc::clone(&inbound)),
            upload.is_some(),
        )?;
        if let (Some(upload), Some(outbound)) = (upload, outbound) {
            self.spawn_upload((guard.id, outbound), method.compress, upload);
        }
        // From here the stream owns the call: dropping it cancels the call. It holds a
        // handle of the connection, so the connection lives as long as the stream does,
        // even if every other handle is dropped.
        guard.finished = true;
        Ok(Streaming::remote(
            inbound,
            Arc::new(self.clone()) as Arc<dyn StreamPeer>,
            guard.id,
            Some(*method),
            Some(deadline),
            codec,
        ))
    }

    /// Waits for a slot under the in-flight limit, within the deadline.
    async fn acquire(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, RpcError> {
        tokio::time::timeout_at(deadline, self.shared.in_flight.acquire())
            .await
            .map_err(|_| RpcError::DeadlineExceeded)?
            .map_err(|_| RpcError::closed("the connection is closed"))
    }

    /// Streaming calls need protocol version 2: on an older connection they are refused
    /// here, unsent.
    fn check_streaming(&self) -> Result<(), RpcError> {
        if self.shared.version < protocol::STREAMING_VERSION {
            return Err(RpcError::VersionMismatch {
                ours: protocol::STREAMING_VERSION,
                theirs: self.shared.version,
            });
        }
        Ok(())
    }

    /// Waits, within the deadline, until the outbox is below its high-water mark: a
    /// server that does not read its requests makes callers wait instead of this side
    /// buffering without bound.
    async fn writable(&self, deadline: Instant) -> Result<(), RpcError> {
        if self.shared.outbox.unwritten() < self.shared.config.max_write_buffer {
            return Ok(());
        }
        tokio::time::timeout_at(deadline, self.shared.outbox.writable())
            .await
            .map_err(|_| RpcError::DeadlineExceeded)
    }

    /// Registers a call under a new id (and, `with_upload`, the credit of its client
    /// stream, before the request can be answered) and queues its request.
    fn start<E>(
        &self,
        method: &super::Method,
        metadata: &Metadata,
        deadline: Instant,
        encode: E,
        pending: Pending,
        with_upload: bool,
    ) -> Result<(PendingCall<'_>, Option<Arc<Outbound>>, PayloadCodec), RpcError>
    where
        E: FnOnce(&mut BytesMut, PayloadCodec) -> Result<(), RpcError>,
    {
        let (service, method_name) = (method.service, method.name);
        if service.len() > u8::MAX as usize || method_name.len() > u8::MAX as usize {
            return Err(RpcError::Encode(
                "service and method names are limited to 255 bytes".into(),
            ));
        }
        let now = Instant::now();
        if deadline <= now {
            return Err(RpcError::DeadlineExceeded);
        }
        let flags = if method.idempotent {
            crate::protocol::flags::IDEMPOTENT
        } else {
            0
        };
        let shared = &*self.shared;
        // Only a unary call without an upload gives its id back once answered, and only
        // if the configuration asks for it (`ClientConfig::reuse_call_ids`).
        let recycle = shared.config.reuse_call_ids
            && shared.outbox.layout() == FrameLayout::Compact
            && matches!(pending, Pending::Unary(_))
            && !with_upload;
        // A budget of 0 means "no deadline" on the wire, so round up to 1 µs.
        let budget = deadline
            .saturating_duration_since(now)
            .as_micros()
            .clamp(1, u64::MAX as u128) as u64;
        // The call is registered (id, pending answer, upload credit) under the outbox's
        // lock, right before its request is queued: ids reach the wire in order, and the
        // call exists before anything can answer it.
        let mut registered = None;
        let mut outbound = None;
        let register = || {
            let mut calls = shared.calls();
            match &calls.state {
                State::Open => {}
                State::Draining { .. } => return Err(RpcError::ShuttingDown),
                State::Closed(error) => return Err(error.clone()),
            }
            let reused = if recycle { calls.free_ids.pop() } else { None };
            let id = reused.unwrap_or_else(|| {
                calls.next_id += 1;
                calls.next_id - 1
            });
            calls.pending.insert(id, pending);
            drop(calls);
            outbound = with_upload.then(|| shared.streams.add_outbound(id));
            registered = Some(id);
            Ok(id)
        };
        // A method that takes a stream is not translated (its items would need the
        // server's types): where the schemas differ, it fails before anything is sent.
        let encode = |buf: &mut BytesMut, codec: PayloadCodec| {
            if codec == PayloadCodec::Json && with_upload {
                return Err(RpcError::SchemaMismatch {
                    message: format!(
                        "`{service}.{method_name}` takes a stream, and such a method is \
                         not translated by name; the server's schema of it differs from \
                         this client's"
                    ),
                    handler_ran: false,
                });
            }
            encode(buf, codec)
        };
        let queued = shared
            .outbox
            .push_request(flags, register, budget, method, metadata, encode);
        // Registered but not queued (the request did not encode, or was too large): the
        // guard, not sent, takes the registration back.
        let guard = registered.map(|id| PendingCall {
            shared,
            id,
            sent: queued.is_ok(),
            finished: false,
            recycle,
        });
        let codec = queued?;
        let guard = guard.expect("a queued request was registered");
        Ok((guard, outbound, codec))
    }

    /// Waits for a unary response until the deadline: takes it from the call's slot
    /// once the connection's task has left it there.
    async fn wait(
        guard: &mut PendingCall<'_>,
        deadline: Instant,
    ) -> Result<ResponseFrame, RpcError> {
        let (shared, id) = (guard.shared, guard.id);
        let answer = std::future::poll_fn(|cx| {
            let mut calls = shared.calls();
            match calls.pending.get_mut(&id) {
                Some(Pending::Unary(Answer::Waiting(waker))) => {
                    match waker {
                        Some(known) if known.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
                Some(Pending::Unary(Answer::Ready(_))) => match calls.pending.remove(&id) {
                    Some(Pending::Unary(Answer::Ready(reply))) => {
                        if guard.recycle {
                            calls.free_ids.push(id);
                        }
                        Poll::Ready(reply)
                    }
                    _ => unreachable!("the entry was just seen answered"),
                },
                // Not ours any more: only the connection ending takes entries away.
                _ => Poll::Ready(Err(RpcError::closed("the connection is closed"))),
            }
        });
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(reply) => {
                guard.finished = true;
                let mut response = reply?;
                if response.compressed {
                    // Here, on the caller's task, not on the connection's.
                    let limit = shared.config.max_frame_size;
                    response.payload = decompress(std::mem::take(&mut response.payload), limit)?;
                    response.compressed = false;
                }
                Ok(response)
            }
            // The guard cancels the call on the server.
            Err(_) => Err(RpcError::DeadlineExceeded),
        }
    }

    /// Sends a call's client stream on a task of its own (it runs while the caller waits
    /// for, or reads, the answer), ending it with `STREAM_END`. It stops when the server
    /// says so, the call ends, or the connection fails.
    fn spawn_upload<U>(
        &self,
        (id, outbound): (u64, Arc<Outbound>),
        compress: Option<bool>,
        mut upload: Streaming<U>,
    ) where
        U: Serialize + DeserializeOwned + Send + 'static,
    {
        // The task holds a handle: the connection stays open while the upload runs.
        let connection = self.clone();
        tokio::spawn(async move {
            let shared = &connection.shared;
            let sent = send_items(&mut upload, &shared.outbox, (&outbound, id), compress);
            let end = match sent.await {
                Ok(Sent::All) => (status::OK, String::new()),
                Ok(Sent::Stopped) => return,
                Err(RpcError::Aborted { message }) => (status::ABORTED, message),
                Err(e) => (status::ABORTED, e.to_string()),
            };
            let message = protocol::fit_message(&end.1, shared.outbox.max_frame_size());
            let mut body = Vec::with_capacity(1 + message.len());
            body.push(end.0);
            body.extend_from_slice(message.as_bytes());
            let _ = shared.outbox.push_control(kind::STREAM_END, id, &body);
        });
    }
}

/// A received stream holds a [`Connection`] handle, so the connection stays open for it.
impl StreamPeer for Connection {
    fn outbox(&self) -> &Outbox {
        &self.shared.outbox
    }

    fn receiver_dropped(&self, id: u64) {
        let shared = &self.shared;
        let was_pending = shared.calls().pending.remove(&id).is_some();
        if was_pending {
            let _ = shared.outbox.push_control(kind::CANCEL, id, &[]);
        }
        shared
            .streams
            .finish(id, || StreamEnd::Error(RpcError::Cancelled));
    }
}

/// A call's registration in the pending map. Dropped before the response arrived (the
/// caller dropped the future or the deadline passed), it removes the slot and tells the
/// server to drop the handler.
struct PendingCall<'a> {
    shared: &'a Shared,
    id: u64,
    sent: bool,
    finished: bool,
    /// The id may be used again once the call is answered ([`Calls::free_ids`]).
    recycle: bool,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // A call answered meanwhile needs no CANCEL.
        let was_pending = !matches!(
            self.shared.calls().pending.remove(&self.id),
            None | Some(Pending::Unary(Answer::Ready(_)))
        );
        self.shared
            .streams
            .finish(self.id, || StreamEnd::Error(RpcError::Cancelled));
        if self.sent && was_pending {
            // Best effort: if the connection is closing there is nothing to cancel.
            let _ = self
                .shared
                .outbox
                .push((kind::CANCEL, 0, self.id), None, |_| {}, |_| Ok(()));
        }
    }
}
