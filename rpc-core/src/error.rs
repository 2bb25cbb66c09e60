//! Typed errors seen by callers and servers.
//!
//! [`RpcError`] is every failure the framework itself can produce. [`CallError`] is what a
//! client method declared `-> Result<T, E>` returns: the application's own `E` or an
//! [`RpcError`], flat, so call sites never see `Result<Result<..>>`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How far a call got before it failed: what decides whether sending it again could run
/// it twice.
///
/// Every [`RpcError`] has exactly one ([`RpcError::outcome`]); the table in
/// `docs/PROTOCOL.md` (section 7) gives it for each response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The call never left this process (refused locally, no connection, failed to
    /// connect or to encode).
    NotSent,
    /// The server received the call and refused it before any handler ran (shutting
    /// down, overloaded, unknown method, bad arguments, not authorized).
    NotStarted,
    /// It may or may not have run: the connection was lost, or the deadline passed,
    /// while the call was in flight.
    Unknown,
    /// The handler ran, at least in part, and did not finish normally: the server stopped
    /// it (shutdown after the grace period, its deadline) or it panicked.
    Started,
    /// The handler ran to its end; its answer is the error (an application error, a
    /// result that could not be encoded or delivered).
    Completed,
}

impl CallOutcome {
    /// Whether the call certainly ran nowhere, so it may be sent again to any server.
    pub fn never_ran(self) -> bool {
        matches!(self, CallOutcome::NotSent | CallOutcome::NotStarted)
    }

    /// Whether sending the call again cannot run it twice, or running it twice is
    /// harmless: it never ran, or the method is `idempotent` and did not complete.
    pub fn retry_is_safe(self, idempotent: bool) -> bool {
        self.never_ran() || (idempotent && self != CallOutcome::Completed)
    }
}

/// A failure of the RPC machinery (not of the application's own logic).
///
/// Cheap to clone: a connection failure is delivered to every call that was in flight on it.
/// [`RpcError::outcome`] says how far the call got.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// Establishing the connection failed (resolve, connect, or I/O during the handshake).
    /// The call was not sent.
    #[error("failed to connect to {addr}: {source}")]
    Connect {
        /// The address that was dialled.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The connection was closed or lost while the call was in flight: it may or may
    /// not have run.
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// Why the connection ended.
        reason: Arc<str>,
    },
    /// The server stopped answering: no `PONG` came back within the keepalive timeout,
    /// so the connection was closed. Calls in flight may or may not have run.
    #[error("the peer did not answer a keepalive ping within {timeout:?}")]
    KeepaliveTimeout {
        /// How long the ping went unanswered.
        timeout: Duration,
    },
    /// The call was not sent: the connection had already ended (or, on a balanced
    /// channel, no endpoint could take it). It did not run anywhere.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why no connection could take the call.
        reason: Arc<str>,
    },
    /// The call's deadline passed before a response arrived.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The call was cancelled before it completed: its connection was closed by this side
    /// ([`Connection::close`](crate::Connection::close)) while it was in flight.
    #[error("call cancelled")]
    Cancelled,
    /// The handler panicked; the connection and the server keep serving.
    #[error("handler panicked: {message}")]
    HandlerPanicked {
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The handler had started when the server stopped it before it finished (its
    /// graceful shutdown ran out of grace period). It may have had some of its effects.
    #[error("interrupted after it started: {message}")]
    Interrupted {
        /// The server's reason.
        message: String,
    },
    /// The server hosts no service of that name.
    #[error("unknown service `{service}`")]
    UnknownService {
        /// The service name that was called.
        service: String,
    },
    /// The service has no method of that name (for example an older server).
    #[error("unknown method `{service}.{method}`")]
    UnknownMethod {
        /// The service name that was called.
        service: String,
        /// The method name that was called.
        method: String,
    },
    /// The server could not decode the call's arguments as the method's parameters (the
    /// client and the server disagree on the method's signature). It did not run.
    #[error("the server could not decode the arguments: {message}")]
    InvalidArguments {
        /// The server's description.
        message: String,
    },
    /// A call in JSON by name (protocol version 6: the client's schema of the method
    /// differs from the server's) carried a value the other side's schema cannot read:
    /// the message names the method and the parameter, field or variant. When the server
    /// refused the arguments the handler did not run; when this side could not read the
    /// answer it did.
    #[error("the client's and the server's schemas differ: {message}")]
    SchemaMismatch {
        /// What could not be read, and why.
        message: String,
        /// Whether the handler ran (the answer could not be read here).
        handler_ran: bool,
    },
    /// The peer broke the protocol (bad magic, malformed frame, unexpected message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server closed the connection with a go-away code this client does not know.
    #[error("the server went away (code {code}): {message}")]
    GoAway {
        /// The go-away code.
        code: u8,
        /// The server's message.
        message: String,
    },
    /// The peer speaks a protocol version this side does not support.
    #[error("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// The version this side speaks.
        ours: u16,
        /// The version the peer announced.
        theirs: u16,
    },
    /// The client asked for a payload codec the server does not accept (a server of
    /// protocol version 3 or older accepts bincode only).
    #[error("the server does not accept the {codec:?} payload codec (protocol version {version})")]
    CodecUnsupported {
        /// The codec asked for.
        codec: crate::protocol::PayloadCodec,
        /// The version spoken with the server.
        version: u16,
    },
    /// The request (or a stream item) would exceed the peer's frame size limit; it was
    /// not sent.
    #[error("a frame of {size} bytes exceeds the peer's limit of {limit} bytes")]
    FrameTooLarge {
        /// The size of the frame body in bytes.
        size: usize,
        /// The peer's limit.
        limit: usize,
    },
    /// The handler's answer would exceed this client's frame size limit, so the server
    /// sent this error instead. The handler ran to its end.
    #[error("the response is too large: {message}")]
    ResponseTooLarge {
        /// The server's description, with the response's size and this client's limit.
        message: String,
    },
    /// Serializing the arguments failed on this side; nothing was sent.
    #[error("encode failed: {0}")]
    Encode(String),
    /// The handler's return value failed to serialize on the server. The handler ran to
    /// its end.
    #[error("the server could not encode the response: {message}")]
    ResponseEncodeFailed {
        /// The serializer's message.
        message: String,
    },
    /// Deserializing the response (or a stream item) failed on this side.
    #[error("decode failed: {0}")]
    Decode(String),
    /// A compressed payload from the peer could not be decompressed: malformed, or it
    /// announced more than this side's frame limit (a decompression bomb).
    #[error("decompression failed: {reason}")]
    Decompress {
        /// What was wrong with it.
        reason: String,
    },
    /// The server refused the call: the caller's credentials are missing or invalid.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// The server's reason.
        message: String,
    },
    /// The server refused the call: the caller may not make it.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The server's reason.
        message: String,
    },
    /// The server is at its concurrency limit and shed the call without running it.
    #[error("server overloaded: {message}")]
    Overloaded {
        /// The server's message.
        message: String,
    },
    /// The producer of a stream ended it with an error.
    #[error("stream aborted: {message}")]
    Aborted {
        /// The producer's reason.
        message: String,
    },
    /// The server is shutting down and did not start the call (it refused it, or never
    /// read it).
    #[error("server is shutting down")]
    ShuttingDown,
    /// The service ended the call without answering it (a hand-written service's bug).
    #[error("the server ended the call without an answer: {message}")]
    Internal {
        /// The server's message.
        message: String,
    },
    /// The server answered with a status this client does not know (a newer server).
    #[error("remote error (status {status}): {message}")]
    Remote {
        /// The raw status code from the wire.
        status: u8,
        /// The server's message.
        message: String,
    },
}

impl RpcError {
    /// A [`RpcError::ConnectionClosed`] with the given reason.
    pub fn closed(reason: impl Into<Arc<str>>) -> Self {
        RpcError::ConnectionClosed {
            reason: reason.into(),
        }
    }

    /// How far the call got before this error: whether it may have run.
    pub fn outcome(&self) -> CallOutcome {
        match self {
            RpcError::Connect { .. }
            | RpcError::Unavailable { .. }
            | RpcError::VersionMismatch { .. }
            | RpcError::CodecUnsupported { .. }
            | RpcError::FrameTooLarge { .. }
            | RpcError::Encode(_) => CallOutcome::NotSent,
            RpcError::UnknownService { .. }
            | RpcError::UnknownMethod { .. }
            | RpcError::InvalidArguments { .. }
            | RpcError::SchemaMismatch {
                handler_ran: false, ..
            }
            | RpcError::Unauthenticated { .. }
            | RpcError::PermissionDenied { .. }
            | RpcError::Overloaded { .. }
            | RpcError::ShuttingDown => CallOutcome::NotStarted,
            RpcError::ConnectionClosed { .. }
            | RpcError::KeepaliveTimeout { .. }
            | RpcError::DeadlineExceeded
            | RpcError::Cancelled
            | RpcError::Protocol(_)
            | RpcError::GoAway { .. }
            | RpcError::Remote { .. } => CallOutcome::Unknown,
            RpcError::HandlerPanicked { .. }
            | RpcError::Interrupted { .. }
            | RpcError::Aborted { .. } => CallOutcome::Started,
            RpcError::ResponseTooLarge { .. }
            | RpcError::ResponseEncodeFailed { .. }
            | RpcError::Decode(_)
            | RpcError::SchemaMismatch {
                handler_ran: true, ..
            }
            | RpcError::Decompress { .. }
            | RpcError::Internal { .. } => CallOutcome::Completed,
        }
    }

    /// Whether the call certainly did not reach a handler, so sending it again (to any
    /// server) cannot run it twice: `self.outcome().never_ran()`.
    pub fn is_safe_to_retry(&self) -> bool {
        self.outcome().never_ran()
    }

    /// Whether the failure is of the path rather than of the call (a connection, a
    /// server that is shutting down or overloaded): another attempt, on another server,
    /// may succeed. Whether one is *safe* is [`RpcError::outcome`]'s business.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RpcError::Connect { .. }
                | RpcError::Unavailable { .. }
                | RpcError::ConnectionClosed { .. }
                | RpcError::KeepaliveTimeout { .. }
                | RpcError::GoAway { .. }
                | RpcError::ShuttingDown
                | RpcError::Overloaded { .. }
                | RpcError::Interrupted { .. }
        )
    }
}

/// The error of a client method declared `-> Result<T, E>`: either the application's `E`,
/// returned by the handler, or a failure of the RPC machinery.
///
/// Implements [`std::error::Error`] when `E: Debug`, so `?` into `anyhow::Error` works.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError<E> {
    /// The handler returned `Err(e)`.
    Application(E),
    /// The call failed in the framework (connection, deadline, decode, ...).
    Rpc(RpcError),
}

impl<E> CallError<E> {
    /// The application's error, if that is what this is.
    pub fn application(&self) -> Option<&E> {
        match self {
            CallError::Application(e) => Some(e),
            CallError::Rpc(_) => None,
        }
    }

    /// The framework's error, if that is what this is.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            CallError::Application(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }

    /// Converts into the application's error, if that is what this is.
    pub fn into_application(self) -> Option<E> {
        match self {
            CallError::Application(e) => Some(e),
            CallError::Rpc(_) => None,
        }
    }
}

impl<E> From<RpcError> for CallError<E> {
    fn from(e: RpcError) -> Self {
        CallError::Rpc(e)
    }
}

impl<E: fmt::Debug> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Application(e) => write!(f, "application error: {e:?}"),
            CallError::Rpc(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Application(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }
}

impl PartialEq for RpcError {
    /// Errors compare by kind and message; I/O sources compare by kind.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                RpcError::Connect { addr, source },
                RpcError::Connect {
                    addr: a2,
                    source: s2,
                },
            ) => addr == a2 && source.kind() == s2.kind(),
            _ => {
                std::mem::discriminant(self) == std::mem::discriminant(other)
                    && self.to_string() == other.to_string()
            }
        }
    }
}
