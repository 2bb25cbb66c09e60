//! One multiplexed client connection.
//!
//! A call encodes its request straight into the connection's [`Outbox`], registers a
//! one-shot slot under its call id, and waits on it with its deadline. One task per
//! connection writes the queued requests in batches, decodes responses and completes the
//! matching slots, in whatever order they arrive. There is no task per unary call.
//! Dropping a call future before it completes removes
//! its slot and queues a `CANCEL` frame so the server drops the handler too.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{BufMut, BytesMut};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::ClientConfig;
use crate::error::RpcError;
use crate::frame_io::FrameIo;
use crate::outbox::Outbox;
use crate::protocol::{
    self, go_away, handshake_status, kind, status, ClientHello, Frame, ResponseFrame, ServerHello,
    HANDSHAKE_LEN, VERSION,
};
use crate::stream::{send_items, Inbound, Outbound, Sent, StreamEnd, StreamPeer, StreamTable};
use crate::util::IdHasher;
use crate::{Metadata, Streaming};
use serde::de::DeserializeOwned;
use serde::Serialize;

type Reply = Result<ResponseFrame, RpcError>;

/// Whether new calls may start.
enum State {
    Open,
    /// The server sent a graceful go-away: calls in flight finish, new ones are refused.
    /// Calls above `last_id` never reached the server.
    Draining {
        last_id: u64,
    },
    Closed(RpcError),
}

/// What waits for a call's outcome.
enum Pending {
    /// A unary response.
    Unary(oneshot::Sender<Reply>),
    /// A streamed response: its items, then its `RESPONSE`, go to the stream.
    Stream(Arc<Inbound>),
}

impl Pending {
    fn fail(self, error: RpcError) {
        match self {
            Pending::Unary(slot) => {
                let _ = slot.send(Err(error));
            }
            Pending::Stream(inbound) => inbound.end(StreamEnd::Error(error)),
        }
    }
}

struct Calls {
    pending: HashMap<u64, Pending, BuildHasherDefault<IdHasher>>,
    state: State,
}

/// State shared by the handles, the connection's task and upload tasks.
struct Shared {
    outbox: Outbox,
    /// Streams of calls on this connection (flow control).
    streams: StreamTable,
    calls: Mutex<Calls>,
    next_id: AtomicU64,
    in_flight: Semaphore,
    config: ClientConfig,
    remote: String,
}

impl Shared {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the connection: every call in flight gets `error`, every later call `later`.
    /// After a graceful go-away, calls the server never saw get `ShuttingDown` instead:
    /// they did not run, so they are safe to send elsewhere.
    fn fail_all(&self, error: RpcError, later: RpcError) {
        let (pending, unseen_above) = {
            let mut calls = self.calls();
            let unseen_above = match calls.state {
                State::Draining { last_id } => Some(last_id),
                _ => None,
            };
            if !matches!(calls.state, State::Closed(_)) {
                calls.state = State::Closed(later);
            }
            (std::mem::take(&mut calls.pending), unseen_above)
        };
        for (id, pending) in pending {
            let error = match unseen_above {
                Some(last_id) if id > last_id => RpcError::ShuttingDown,
                _ => error.clone(),
            };
            pending.fail(error);
        }
        self.streams.fail_all(&error);
        self.outbox.close();
    }

    /// Ends the connection: calls in flight get `error`; later calls are refused with
    /// [`RpcError::Unavailable`] (they are never sent).
    fn fail(&self, error: RpcError) {
        let later = RpcError::Unavailable {
            reason: error.to_string().into(),
        };
        self.fail_all(error, later);
    }
}

/// Closes the connection when the last [`Connection`] handle is dropped.
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
/// The connection closes when the last clone is dropped.
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
    /// task. `remote` names the peer in errors. Transports call this;
    /// users call `rpc_transport_tcp::connect`.
    pub async fn handshake<T: crate::Transport>(
        io: T,
        remote: &str,
        config: ClientConfig,
    ) -> Result<Connection, RpcError> {
        let (mut reader, mut writer) = io.split();
        let io_error = |source: std::io::Error| RpcError::Connect {
            addr: remote.to_string(),
            source: Arc::new(source),
        };
        let exchange = async {
            let hello = ClientHello {
                version: VERSION,
                max_frame_size: config.max_frame_size as u32,
            };
            writer.write_all(&hello.encode()).await.map_err(io_error)?;
            let mut reply = [0u8; HANDSHAKE_LEN];
            reader.read_exact(&mut reply).await.map_err(io_error)?;
            ServerHello::decode(&reply)
        };
        let reply = tokio::time::timeout(config.connect_timeout, exchange)
            .await
            .map_err(|_| {
                io_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "handshake timed out",
                ))
            })??;
        if reply.status == handshake_status::UNSUPPORTED_VERSION || reply.version != VERSION {
            return Err(RpcError::VersionMismatch {
                ours: VERSION,
                theirs: reply.version,
            });
        }
        if reply.status == handshake_status::TOO_MANY_CONNECTIONS {
            return Err(RpcError::Overloaded {
                message: format!("{remote} is at its connection limit"),
            });
        }
        if reply.status != handshake_status::ACCEPTED {
            return Err(RpcError::Protocol(format!(
                "the server refused the handshake with status {}",
                reply.status
            )));
        }

        let shared = Arc::new(Shared {
            // A server announcing less than a header's worth is treated as announcing 64.
            outbox: Outbox::new((reply.max_frame_size as usize).max(64)),
            streams: StreamTable::default(),
            calls: Mutex::new(Calls {
                pending: HashMap::default(),
                state: State::Open,
            }),
            next_id: AtomicU64::new(1),
            in_flight: Semaphore::new(config.max_in_flight),
            remote: remote.to_string(),
            config,
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
    /// `encode` appends the bincode-encoded arguments to the frame being built.
    pub(crate) async fn call<E>(
        &self,
        method: &super::Method,
        metadata: &Metadata,
        deadline: Instant,
        encode: E,
    ) -> Result<ResponseFrame, RpcError>
    where
        E: FnOnce(&mut BytesMut) -> Result<(), RpcError>,
    {
        let _permit = self.acquire(deadline).await?;
        let (slot, response) = oneshot::channel();
        let (mut guard, _) = self.start(
            method,
            metadata,
            deadline,
            encode,
            Pending::Unary(slot),
            false,
        )?;
        Self::wait(&mut guard, deadline, response).await
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
        E: FnOnce(&mut BytesMut) -> Result<(), RpcError>,
        U: Serialize + DeserializeOwned + Send + 'static,
    {
        let _permit = self.acquire(deadline).await?;
        let (slot, response) = oneshot::channel();
        let (mut guard, outbound) = self.start(
            method,
            metadata,
            deadline,
            encode,
            Pending::Unary(slot),
            true,
        )?;
        if let Some(outbound) = outbound {
            self.spawn_upload(guard.id, outbound, upload);
        }
        Self::wait(&mut guard, deadline, response).await
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
        E: FnOnce(&mut BytesMut) -> Result<(), RpcError>,
        U: Serialize + DeserializeOwned + Send + 'static,
    {
        let inbound = Arc::new(Inbound::new(self.shared.config.max_frame_size));
        let (mut guard, outbound) = self.start(
            method,
            metadata,
            deadline,
            encode,
            Pending::Stream(Arc::clone(&inbound)),
            upload.is_some(),
        )?;
        if let (Some(upload), Some(outbound)) = (upload, outbound) {
            self.spawn_upload(guard.id, outbound, upload);
        }
        // From here the stream owns the call: dropping it cancels the call.
        guard.finished = true;
        Ok(Streaming::remote(
            inbound,
            Arc::clone(&self.shared) as Arc<dyn StreamPeer>,
            guard.id,
            Some(*method),
            Some(deadline),
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
    ) -> Result<(PendingCall<'_>, Option<Arc<Outbound>>), RpcError>
    where
        E: FnOnce(&mut BytesMut) -> Result<(), RpcError>,
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
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut calls = shared.calls();
            match &calls.state {
                State::Open => {}
                State::Draining { .. } => return Err(RpcError::ShuttingDown),
                State::Closed(error) => return Err(error.clone()),
            }
            calls.pending.insert(id, pending);
        }
        let mut guard = PendingCall {
            shared,
            id,
            sent: false,
            finished: false,
        };
        let outbound = with_upload.then(|| shared.streams.add_outbound(id));

        // A budget of 0 means "no deadline" on the wire, so round up to 1 µs.
        let budget = deadline
            .saturating_duration_since(now)
            .as_micros()
            .clamp(1, u64::MAX as u128) as u64;
        shared.outbox.push(
            kind::REQUEST,
            flags,
            id,
            |buf| {
                buf.put_u64(budget);
                protocol::put_short_str(buf, service);
                protocol::put_short_str(buf, method_name);
                metadata.write_to(buf);
            },
            encode,
        )?;
        guard.sent = true;
        Ok((guard, outbound))
    }

    /// Waits for a unary response until the deadline.
    async fn wait(
        guard: &mut PendingCall<'_>,
        deadline: Instant,
        response: oneshot::Receiver<Reply>,
    ) -> Result<ResponseFrame, RpcError> {
        match tokio::time::timeout_at(deadline, response).await {
            Ok(reply) => {
                guard.finished = true;
                reply.unwrap_or_else(|_| Err(RpcError::closed("the connection is closed")))
            }
            // The guard cancels the call on the server.
            Err(_) => Err(RpcError::DeadlineExceeded),
        }
    }

    /// Sends a call's client stream on a task of its own (it runs while the caller waits
    /// for, or reads, the answer), ending it with `STREAM_END`. It stops when the server
    /// says so, the call ends, or the connection fails.
    fn spawn_upload<U>(&self, id: u64, outbound: Arc<Outbound>, mut upload: Streaming<U>)
    where
        U: Serialize + DeserializeOwned + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let end = match send_items(&mut upload, &shared.outbox, &outbound, id).await {
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

impl StreamPeer for Shared {
    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn receiver_dropped(&self, id: u64) {
        let was_pending = self.calls().pending.remove(&id).is_some();
        if was_pending {
            let _ = self.outbox.push_control(kind::CANCEL, id, &[]);
        }
        self.streams
            .finish(id, || StreamEnd::Error(RpcError::Cancelled));
    }

    fn max_frame_size(&self) -> usize {
        self.config.max_frame_size
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
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let was_pending = self.shared.calls().pending.remove(&self.id).is_some();
        self.shared
            .streams
            .finish(self.id, || StreamEnd::Error(RpcError::Cancelled));
        if self.sent && was_pending {
            // Best effort: if the connection is closing there is nothing to cancel.
            let _ = self
                .shared
                .outbox
                .push(kind::CANCEL, 0, self.id, |_| {}, |_| Ok(()));
        }
    }
}

/// Frames handled per poll before the task yields to others.
const FRAMES_PER_POLL: usize = 128;

/// The connection's task: writes queued requests and completes calls as responses
/// arrive, until the connection ends.
async fn run_connection<R, W>(mut io: FrameIo<R, W>, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let error = std::future::poll_fn(|cx| poll_connection(&mut io, &shared, cx)).await;
    tracing::debug!(remote = %shared.remote, %error, "client connection ended");
    shared.fail(error);
}

fn poll_connection<R, W>(
    io: &mut FrameIo<R, W>,
    shared: &Shared,
    cx: &mut Context<'_>,
) -> Poll<RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut budget = FRAMES_PER_POLL;
    loop {
        match io.poll_write(cx, &shared.outbox) {
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
        while budget > 0 {
            let frame = match io.poll_frame(cx) {
                Poll::Ready(Some(Ok(bytes))) => bytes.freeze(),
                Poll::Ready(Some(Err(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Poll::Ready(RpcError::FrameTooLarge {
                        size: 0,
                        limit: shared.config.max_frame_size,
                    })
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(RpcError::closed(format!("read failed: {e}")))
                }
                Poll::Ready(None) => {
                    return Poll::Ready(RpcError::closed("the server closed the connection"))
                }
                Poll::Pending => break,
            };
            budget -= 1;
            read_any = true;
            if let Err(error) = handle_frame(shared, frame) {
                return Poll::Ready(error);
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

/// Applies one frame from the server; `Err` ends the connection.
fn handle_frame(shared: &Shared, frame: bytes::Bytes) -> Result<(), RpcError> {
    match Frame::decode(frame)? {
        Frame::Response(response) => {
            // A response to a call that is no longer waiting (cancelled, timed out) or
            // that was never made is dropped.
            let id = response.id;
            let pending = shared.calls().pending.remove(&id);
            match pending {
                Some(Pending::Unary(slot)) => {
                    let _ = slot.send(Ok(response));
                }
                Some(Pending::Stream(inbound)) => inbound.end(StreamEnd::Response(response)),
                None => {}
            }
            // The call is over: stop sending its client stream, if any.
            shared
                .streams
                .finish(id, || StreamEnd::Error(RpcError::Cancelled));
            Ok(())
        }
        Frame::StreamItem { id, payload } => {
            let inbound = match shared.calls().pending.get(&id) {
                Some(Pending::Stream(inbound)) => Some(Arc::clone(inbound)),
                _ => None,
            };
            match inbound {
                Some(inbound) => inbound.push(payload),
                // The stream was dropped (its CANCEL is on its way): discard.
                None => Ok(()),
            }
        }
        Frame::WindowUpdate { id, increment } => {
            shared.streams.grant(id, increment);
            Ok(())
        }
        Frame::StopSending { id } => {
            shared.streams.stop_sending(id);
            Ok(())
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
                Ok(())
            }
            go_away::FRAME_TOO_LARGE => Err(RpcError::FrameTooLarge {
                size: 0,
                limit: shared.outbox.max_frame_size(),
            }),
            _ => Err(RpcError::Protocol(format!("the server closed: {message}"))),
        },
        other => Err(RpcError::Protocol(format!(
            "unexpected frame from the server: {other:?}"
        ))),
    }
}
