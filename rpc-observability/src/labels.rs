//! The bounded label values metrics and spans use: a name per response status, and one
//! per way a client call can fail without a response.
//!
//! Every value has a fixed index in one table ([`Outcome`]), so that metrics can keep one
//! handle per value and find it without hashing a string.

use traitrpc_core::protocol::{status, ResponseFrame};
use traitrpc_core::RpcError;

/// The label of a call that ended without an answer: dropped by its caller, or stopped
/// at its deadline.
pub const CANCELLED: &str = "CANCELLED";

/// The method label of a method its service does not declare.
pub const OTHER: &str = "other";

/// Every status label value, in index order: the 16 statuses of `docs/PROTOCOL.md`
/// (section 7) by their code, then `UNKNOWN` (a code this version does not define),
/// `CANCELLED`, and the client-side failures (a failure that has a status's meaning, such
/// as a deadline, shares its entry).
const NAMES: [&str; 26] = [
    "OK",
    "APPLICATION_ERROR",
    "UNKNOWN_SERVICE",
    "UNKNOWN_METHOD",
    "INVALID_ARGUMENTS",
    "DEADLINE_EXCEEDED",
    "HANDLER_PANICKED",
    "SHUTTING_DOWN",
    "FRAME_TOO_LARGE",
    "ENCODE_FAILED",
    "INTERNAL",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "OVERLOADED",
    "ABORTED",
    "INTERRUPTED",
    // 16..
    "UNKNOWN",
    CANCELLED,
    "CONNECT_FAILED",
    "CONNECTION_CLOSED",
    "KEEPALIVE_TIMEOUT",
    "UNAVAILABLE",
    "PROTOCOL_ERROR",
    "GO_AWAY",
    "VERSION_MISMATCH",
    "OTHER",
];

/// A status label value by its index in one fixed table: what a call's outcome is
/// labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome(u8);

impl Outcome {
    /// How many values there are (indices are below this).
    pub const COUNT: usize = NAMES.len();
    /// A call that ended without an answer.
    pub const CANCELLED: Outcome = Outcome(17);

    /// The outcome of a response status.
    pub fn of_status(code: u8) -> Outcome {
        if code <= status::INTERRUPTED {
            Outcome(code)
        } else {
            Outcome(16)
        }
    }

    /// The outcome of a client-side failure.
    pub fn of_error(error: &RpcError) -> Outcome {
        Outcome(match error {
            RpcError::Connect { .. } => 18,
            RpcError::ConnectionClosed { .. } => 19,
            RpcError::KeepaliveTimeout { .. } => 20,
            RpcError::Unavailable { .. } => 21,
            RpcError::DeadlineExceeded => status::DEADLINE_EXCEEDED,
            RpcError::Cancelled => 17,
            RpcError::Protocol(_) => 22,
            RpcError::GoAway { .. } => 23,
            RpcError::VersionMismatch { .. } => 24,
            RpcError::FrameTooLarge { .. } => status::FRAME_TOO_LARGE,
            RpcError::Encode(_) => status::ENCODE_FAILED,
            RpcError::ShuttingDown => status::SHUTTING_DOWN,
            RpcError::Overloaded { .. } => status::OVERLOADED,
            _ => 25,
        })
    }

    /// The outcome of a client call: its response's status, or how it failed.
    pub fn of_call(outcome: &Result<ResponseFrame, RpcError>) -> Outcome {
        match outcome {
            Ok(frame) => Outcome::of_status(frame.status),
            Err(error) => Outcome::of_error(error),
        }
    }

    /// Its index in the table (below [`Outcome::COUNT`]).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Its label value.
    pub fn name(self) -> &'static str {
        NAMES[self.index()]
    }
}

/// The name of a response status (`docs/PROTOCOL.md`, section 7); `UNKNOWN` for a code
/// this version does not define.
pub fn status_name(code: u8) -> &'static str {
    Outcome::of_status(code).name()
}

/// The status label of a client call's outcome: the response's status, or how it failed
/// without one.
pub fn outcome_name(outcome: &Result<ResponseFrame, RpcError>) -> &'static str {
    Outcome::of_call(outcome).name()
}

/// The label of a client-side failure.
pub fn error_name(error: &RpcError) -> &'static str {
    Outcome::of_error(error).name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_follow_their_codes() {
        assert_eq!(status_name(status::OK), "OK");
        assert_eq!(status_name(status::OVERLOADED), "OVERLOADED");
        assert_eq!(status_name(status::INTERRUPTED), "INTERRUPTED");
        assert_eq!(status_name(200), "UNKNOWN");
        assert_eq!(Outcome::CANCELLED.name(), CANCELLED);
        assert_eq!(error_name(&RpcError::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(error_name(&RpcError::Cancelled), "CANCELLED");
        // Every value is distinct: one series per value.
        let mut names = NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NAMES.len());
    }
}
