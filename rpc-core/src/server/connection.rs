//! One server-side connection: handshake, then a loop that reads frames, starts a task per
//! request, and cancels handlers on request; answers go out through the shared outbox.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::BufMut;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::service::{DispatchError, HandlerFuture, IncomingCall, ReplyTo, Router};
use super::ServerConfig;
use crate::context::{self, ConnectionInfo, Context, PeerAddr};
use crate::outbox::{self, Outbox};
use crate::protocol::{
    go_away, handshake_status, kind, status, ClientHello, Frame, RequestFrame, ServerHello,
    HANDSHAKE_LEN, VERSION,
};
use crate::transport::Transport;
use crate::util::IdHasher;

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

/// State of a connection shared with its handler tasks.
pub(crate) struct ConnectionState {
    pub(crate) outbox: Outbox,
    /// Handlers running, by call id.
    running: Mutex<HashMap<u64, AbortHandle, BuildHasherDefault<IdHasher>>>,
}

impl ConnectionState {
    fn running(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle, BuildHasherDefault<IdHasher>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the right to answer call `id`. Whoever removes a running call from the map
    /// answers it, so a call is never answered twice (handler vs. shutdown vs. cancel).
    pub(crate) fn claim(&self, id: u64) -> bool {
        self.running().remove(&id).is_some()
    }

    /// Aborts every running handler; with `answer`, tells each caller `status`.
    fn abort_all(self: &Arc<Self>, answer: Option<(u8, &str)>) {
        let running = std::mem::take(&mut *self.running());
        for (id, handler) in running {
            handler.abort();
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

/// Serves one accepted stream until it closes or the server stops.
pub(crate) async fn serve_connection<T: Transport>(
    io: T,
    peer: PeerAddr,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    signals: Signals,
) {
    let (mut reader, mut writer) = io.split();

    // Handshake.
    let mut hello = [0u8; HANDSHAKE_LEN];
    let read = tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, reader.read_exact(&mut hello)) => r,
        _ = signals.graceful.cancelled() => return,
        _ = signals.kill.cancelled() => return,
    };
    let hello = match read {
        Ok(Ok(_)) => match ClientHello::decode(&hello) {
            Ok(hello) => hello,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "refused connection");
                return;
            }
        },
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed during the handshake");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            return;
        }
    };
    let accepted = hello.version == VERSION;
    let reply = ServerHello {
        version: VERSION,
        status: if accepted {
            handshake_status::ACCEPTED
        } else {
            handshake_status::UNSUPPORTED_VERSION
        },
        max_frame_size: config.max_frame_size as u32,
    };
    if writer.write_all(&reply.encode()).await.is_err() || !accepted {
        tracing::debug!(%peer, version = hello.version, "refused connection");
        let _ = writer.shutdown().await;
        return;
    }

    let state = Arc::new(ConnectionState {
        outbox: Outbox::new((hello.max_frame_size as usize).max(64)),
        running: Mutex::new(HashMap::default()),
    });
    let writer_state = Arc::clone(&state);
    let writer_task = tokio::spawn(async move {
        if let Err(e) = outbox::run_writer(writer, &writer_state.outbox).await {
            tracing::debug!(error = %e, "server write failed");
            writer_state.outbox.close();
        }
    });

    let frames = FramedRead::new(
        reader,
        LengthDelimitedCodec::builder()
            .max_frame_length(config.max_frame_size)
            .new_codec(),
    );
    let connection = Arc::new(ConnectionInfo::new(peer));
    let mut reader = ReadLoop {
        frames,
        state: Arc::clone(&state),
        router,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight_per_connection)),
        config,
        connection,
        draining: false,
        last_id: 0,
    };
    let end = reader.run(&signals).await;

    match end {
        End::Gone => state.abort_all(None),
        End::Drained => {}
        End::Hard => state.abort_all(Some((
            status::SHUTTING_DOWN,
            "the server shut down before the call finished",
        ))),
        End::Killed => {
            state.abort_all(None);
            writer_task.abort();
            return;
        }
    }
    state.outbox.close();
    // Let the writer flush what is queued, but never wait long on a peer that stopped
    // reading, nor past the server's own kill.
    let abort_writer = writer_task.abort_handle();
    tokio::select! {
        _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer_task) => {}
        _ = signals.kill.cancelled() => {}
    }
    abort_writer.abort();
}

/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

struct ReadLoop<R> {
    frames: FramedRead<R, LengthDelimitedCodec>,
    state: Arc<ConnectionState>,
    router: Arc<Router>,
    in_flight: Arc<Semaphore>,
    config: Arc<ServerConfig>,
    connection: Arc<ConnectionInfo>,
    draining: bool,
    /// The highest call id received, announced in `GO_AWAY`.
    last_id: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> ReadLoop<R> {
    async fn run(&mut self, signals: &Signals) -> End {
        let all_permits = self.config.max_in_flight_per_connection as u32; // clamped in config
        loop {
            let frame = tokio::select! {
                biased;
                _ = signals.kill.cancelled() => return End::Killed,
                _ = signals.hard.cancelled() => return End::Hard,
                _ = signals.graceful.cancelled(), if !self.draining => {
                    self.draining = true;
                    self.go_away(go_away::SHUTTING_DOWN, "the server is shutting down");
                    continue;
                }
                // Draining and nothing running any more.
                _ = self.in_flight.acquire_many(all_permits), if self.draining => return End::Drained,
                frame = self.frames.next() => frame,
            };
            let frame = match frame {
                Some(Ok(bytes)) => bytes.freeze(),
                Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    self.go_away(
                        go_away::FRAME_TOO_LARGE,
                        &format!(
                            "frame exceeds the server's limit of {} bytes",
                            self.config.max_frame_size
                        ),
                    );
                    return End::Gone;
                }
                Some(Err(_)) | None => return End::Gone,
            };
            match Frame::decode(frame) {
                Ok(Frame::Request(request)) => {
                    if let Err(end) = self.start(request, signals).await {
                        return end;
                    }
                }
                Ok(Frame::Cancel { id }) => {
                    let handler = self.state.running().remove(&id);
                    if let Some(handler) = handler {
                        handler.abort();
                    }
                }
                Ok(Frame::GoAway { .. }) => return End::Gone,
                Ok(Frame::Response(_)) => {
                    self.go_away(go_away::PROTOCOL_ERROR, "a client may not send responses");
                    return End::Gone;
                }
                Err(e) => {
                    tracing::debug!(peer = %self.connection.peer(), error = %e, "protocol error");
                    self.go_away(go_away::PROTOCOL_ERROR, &e.to_string());
                    return End::Gone;
                }
            }
        }
    }

    /// Queues a `GO_AWAY` naming the highest call id received so far: calls above it were
    /// never seen by this server.
    fn go_away(&self, code: u8, message: &str) {
        let message = fit_message(message, self.state.outbox.max_frame_size());
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

    /// Starts one request. `Err` ends the connection the way it says.
    async fn start(&mut self, request: RequestFrame, signals: &Signals) -> Result<(), End> {
        let id = request.id;
        self.last_id = self.last_id.max(id);
        if self.draining {
            ReplyTo::unregistered(Arc::clone(&self.state), id)
                .error(status::SHUTTING_DOWN, "the server is shutting down");
            return Ok(());
        }
        if self.state.running().contains_key(&id) {
            self.go_away(
                go_away::PROTOCOL_ERROR,
                &format!("call id {id} is already in flight"),
            );
            return Err(End::Gone);
        }
        // Backpressure: at the limit, stop reading this connection until a call ends.
        let permit: OwnedSemaphorePermit = tokio::select! {
            permit = Arc::clone(&self.in_flight).acquire_owned() => permit.map_err(|_| End::Gone)?,
            _ = signals.hard.cancelled() => {
                ReplyTo::unregistered(Arc::clone(&self.state), id)
                    .error(status::SHUTTING_DOWN, "the server is shutting down");
                return Err(End::Hard);
            }
            _ = signals.kill.cancelled() => return Err(End::Killed),
        };
        let unregistered = || ReplyTo::unregistered(Arc::clone(&self.state), id);
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
        let deadline = budget.and_then(|b| Instant::now().checked_add(b));
        let context = Context::new(
            id,
            deadline,
            service.name(),
            request.method.clone(),
            request.flags,
            request.metadata,
            Arc::clone(&self.connection),
        );
        // Decoding arguments runs user `Deserialize` code on the read loop: a panic there
        // must fail the call, not the connection.
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
            service.call(
                request.method.as_str(),
                IncomingCall::new(
                    request.payload,
                    ReplyTo::registered(Arc::clone(&self.state), id),
                ),
            )
        }));
        let handler = match dispatched {
            Ok(Ok(handler)) => handler,
            Err(panic) => {
                unregistered().error(status::HANDLER_PANICKED, &panic_message(&*panic));
                return Ok(());
            }
            Ok(Err(DispatchError::UnknownMethod)) => {
                unregistered().error(
                    status::UNKNOWN_METHOD,
                    &format!("`{}` has no method `{}`", service.name(), request.method),
                );
                return Ok(());
            }
            Ok(Err(DispatchError::InvalidArguments(message))) => {
                unregistered().error(status::INVALID_ARGUMENTS, &message);
                return Ok(());
            }
        };
        // Register under the lock so the handler cannot answer (and unregister) first.
        let mut running = self.state.running();
        let task = tokio::spawn(context::scope(
            context,
            run_handler(handler, deadline, Arc::clone(&self.state), id, permit),
        ));
        running.insert(id, task.abort_handle());
        Ok(())
    }
}

/// Runs one handler to completion, its deadline, or a panic, and answers the latter two.
async fn run_handler(
    handler: HandlerFuture,
    deadline: Option<Instant>,
    state: Arc<ConnectionState>,
    id: u64,
    permit: OwnedSemaphorePermit,
) {
    let guarded = AssertUnwindSafe(handler).catch_unwind();
    let outcome = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, guarded).await.ok(),
        None => Some(guarded.await),
    };
    let reply = ReplyTo::registered(state, id);
    match outcome {
        // Answered by the handler, unless it ended without answering (a hand-written
        // service can): then the call is still registered and gets an error.
        Some(Ok(())) => reply.error(
            status::INTERNAL,
            "the service finished the call without answering",
        ),
        Some(Err(panic)) => {
            let message = panic_message(&*panic);
            tracing::warn!(id, %message, "handler panicked");
            reply.error(status::HANDLER_PANICKED, &message);
        }
        None => reply.error(
            status::DEADLINE_EXCEEDED,
            "the call's deadline passed before the handler finished",
        ),
    }
    drop(permit);
}

/// The text of a panic payload (`panic!` with a literal or a format string).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}

/// `message`, cut at a character boundary so that an error frame carrying it fits in
/// `max_frame_size` (the header, a status byte, then the message).
pub(crate) fn fit_message(message: &str, max_frame_size: usize) -> &str {
    let room = max_frame_size.saturating_sub(crate::protocol::HEADER_LEN + 1);
    if message.len() <= room {
        return message;
    }
    let mut end = room;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}
