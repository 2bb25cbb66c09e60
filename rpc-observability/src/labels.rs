//! The bounded label values metrics and spans use: a name per response status, and one
//! per way a client call can fail without a response.

use rpc_core::protocol::{status, ResponseFrame};
use rpc_core::RpcError;

/// The name of a response status (`docs/PROTOCOL.md`, section 7); `UNKNOWN` for a code
/// this version does not define.
pub fn status_name(code: u8) -> &'static str {
    match code {
        status::OK => "OK",
        status::APPLICATION_ERROR => "APPLICATION_ERROR",
        status::UNKNOWN_SERVICE => "UNKNOWN_SERVICE",
        status::UNKNOWN_METHOD => "UNKNOWN_METHOD",
        status::INVALID_ARGUMENTS => "INVALID_ARGUMENTS",
        status::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        status::HANDLER_PANICKED => "HANDLER_PANICKED",
        status::SHUTTING_DOWN => "SHUTTING_DOWN",
        status::FRAME_TOO_LARGE => "FRAME_TOO_LARGE",
        status::ENCODE_FAILED => "ENCODE_FAILED",
        status::INTERNAL => "INTERNAL",
        status::UNAUTHENTICATED => "UNAUTHENTICATED",
        status::PERMISSION_DENIED => "PERMISSION_DENIED",
        status::OVERLOADED => "OVERLOADED",
        status::ABORTED => "ABORTED",
        status::INTERRUPTED => "INTERRUPTED",
        _ => "UNKNOWN",
    }
}

/// The status label of a client call's outcome: the response's status, or how it failed
/// without one.
pub fn outcome_name(outcome: &Result<ResponseFrame, RpcError>) -> &'static str {
    match outcome {
        Ok(frame) => status_name(frame.status),
        Err(error) => error_name(error),
    }
}

/// The label of a client-side failure.
pub fn error_name(error: &RpcError) -> &'static str {
    match error {
        RpcError::Connect { .. } => "CONNECT_FAILED",
        RpcError::ConnectionClosed { .. } => "CONNECTION_CLOSED",
        RpcError::KeepaliveTimeout { .. } => "KEEPALIVE_TIMEOUT",
        RpcError::Unavailable { .. } => "UNAVAILABLE",
        RpcError::DeadlineExceeded => "DEADLINE_EXCEEDED",
        RpcError::Cancelled => "CANCELLED",
        RpcError::Protocol(_) => "PROTOCOL_ERROR",
        RpcError::GoAway { .. } => "GO_AWAY",
        RpcError::VersionMismatch { .. } => "VERSION_MISMATCH",
        RpcError::FrameTooLarge { .. } => "FRAME_TOO_LARGE",
        RpcError::Encode(_) => "ENCODE_FAILED",
        RpcError::ShuttingDown => "SHUTTING_DOWN",
        RpcError::Overloaded { .. } => "OVERLOADED",
        _ => "OTHER",
    }
}

/// The label of a call that ended without an answer: dropped by its caller, or stopped
/// at its deadline.
pub const CANCELLED: &str = "CANCELLED";

/// The method label of a method its service does not declare.
pub const OTHER: &str = "other";
