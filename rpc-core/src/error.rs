//! Typed errors seen by callers and servers.
//!
//! [`RpcError`] is every failure the framework itself can produce. [`CallError`] is what a
//! client method declared `-> Result<T, E>` returns: the application's own `E` or an
//! [`RpcError`], flat, so call sites never see `Result<Result<..>>`.

use std::fmt;
use std::io;
use std::sync::Arc;

/// A failure of the RPC machinery (not of the application's own logic).
///
/// Cheap to clone: a connection failure is delivered to every call that was in flight on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// Establishing the connection failed (resolve, connect, or I/O during the handshake).
    #[error("failed to connect to {addr}: {source}")]
    Connect {
        /// The address that was dialled.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The connection is closed or was lost; the call's outcome on the server is unknown
    /// unless the error says it was never sent.
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// Why the connection ended.
        reason: Arc<str>,
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
    /// The peer broke the protocol (bad magic, malformed frame, unexpected message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer speaks a protocol version this side does not support.
    #[error("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// The version this side speaks.
        ours: u16,
        /// The version the peer announced.
        theirs: u16,
    },
    /// A frame exceeds the negotiated maximum frame size.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The size of the offending frame in bytes (0 when the peer did not say).
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Serializing arguments or a return value failed.
    #[error("encode failed: {0}")]
    Encode(String),
    /// Deserializing arguments or a return value failed.
    #[error("decode failed: {0}")]
    Decode(String),
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
    /// The server is shutting down and accepts no new calls.
    #[error("server is shutting down")]
    ShuttingDown,
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

    /// Whether the call certainly did not reach a handler, so sending it again (to any
    /// server) cannot run it twice: connect failures, calls refused before being sent, and
    /// calls a server refused or never saw while shutting down, calls shed by an
    /// overloaded server.
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(
            self,
            RpcError::Connect { .. }
                | RpcError::Unavailable { .. }
                | RpcError::ShuttingDown
                | RpcError::Overloaded { .. }
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
