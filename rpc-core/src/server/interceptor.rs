//! [`Interceptor`]: sees every call before its handler runs, for authentication,
//! authorization or admission control.

use crate::context::Context;

/// Why an [`Interceptor`] refused a call; the caller receives the matching typed error
/// (`RpcError::Unauthenticated` / `RpcError::PermissionDenied`) with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The caller did not prove who it is (missing or invalid credentials).
    Unauthenticated(String),
    /// The caller is known but may not make this call.
    PermissionDenied(String),
}

/// Runs before every call's handler with the call's [`Context`] (method, metadata, peer
/// address and TLS identity); an `Err` refuses the call without running it.
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
