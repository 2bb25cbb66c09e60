//! [`Interceptor`]: sees every call before its handler runs, for authentication,
//! authorization or admission control.

use crate::context::Context;
use crate::protocol::status;

/// Why an [`Interceptor`] or a middleware refused a call; the caller receives the
/// matching typed error (`RpcError::Unauthenticated`, `RpcError::PermissionDenied`, or
/// the error of the status) with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The caller did not prove who it is (missing or invalid credentials).
    Unauthenticated(String),
    /// The caller is known but may not make this call.
    PermissionDenied(String),
    /// Any other framework status ([`crate::protocol::status`]): `OVERLOADED` from a
    /// load shedder, `DEADLINE_EXCEEDED` from a timeout, ... (`OK` and
    /// `APPLICATION_ERROR` are answered `INTERNAL`: they carry values).
    Status {
        /// The status code.
        code: u8,
        /// A message for the caller.
        message: String,
    },
}

impl Rejection {
    /// The status the caller is answered with.
    pub fn code(&self) -> u8 {
        match self {
            Rejection::Unauthenticated(_) => status::UNAUTHENTICATED,
            Rejection::PermissionDenied(_) => status::PERMISSION_DENIED,
            Rejection::Status { code, .. } => *code,
        }
    }

    /// The message the caller gets.
    pub fn message(&self) -> &str {
        match self {
            Rejection::Unauthenticated(m) | Rejection::PermissionDenied(m) => m,
            Rejection::Status { message, .. } => message,
        }
    }

    /// A refusal with `code` and `message`.
    pub fn status(code: u8, message: impl Into<String>) -> Self {
        Rejection::Status {
            code,
            message: message.into(),
        }
    }
}

/// Runs before every call's handler with the call's [`Context`] (method, metadata, peer
/// address and TLS identity); an `Err` refuses the call without running it. It is the
/// synchronous case of a [`Middleware`](super::middleware::Middleware), and runs as one.
///
/// It runs on the connection's task, so it must not block; a closure works:
/// `Router::new().add_service(s)?.with_interceptor(|ctx: &Context| ...)`.
pub trait Interceptor: Send + Sync + 'static {
    /// Admits or refuses one call.
    fn intercept(&self, context: &Context) -> Result<(), Rejection>;
}

impl<F> Interceptor for F
where
    F: Fn(&Context) -> Result<(), Rejection> + Send + Sync + 'static,
{
    fn intercept(&self, context: &Context) -> Result<(), Rejection> {
        self(context)
    }
}
