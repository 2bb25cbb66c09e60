//! The server's middleware seam: [`Middleware`] runs around every call, asynchronously,
//! before its arguments are decoded and after its handler answered. It sees the call's
//! [`Context`] (service, method, metadata, peer, deadline) and the request's size, may
//! refuse the call with a [`Rejection`], and learns how it was answered ([`Answered`]:
//! status, response size, stream items). Authentication, the [`Interceptor`], metrics
//! and tracing are middleware; `tower` layers apply through `rpc_core::server::tower`
//! (feature `tower`).
//!
//! A router without middleware runs handlers exactly as before (no allocation or wake-up
//! is added): the chain costs only those who install one.
//!
//! ```
//! use rpc_core::server::middleware::{self, Next};
//! use rpc_core::{Rejection, Router};
//! # #[rpc_core::service] pub trait Ping { async fn ping(&self) -> u8; }
//! # struct P; impl Ping for P { async fn ping(&self) -> u8 { 1 } }
//!
//! // An async authentication check: look the token up somewhere slow, then go on.
//! let router = Router::from(PingServer::new(P)).layer(middleware::from_fn(|next: Next| async move {
//!     let token = next.context().metadata().get_str("token").map(str::to_string);
//!     let known = async { token.as_deref() == Some("s3cret") }.await;
//!     if !known {
//!         return Err(Rejection::Unauthenticated("unknown token".into()));
//!     }
//!     next.run().await
//! }));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::interceptor::{Interceptor, Rejection};
use super::service::{Answered, HandlerFuture};
use crate::context::Context;

/// What a [`Middleware`] returns: the answer of the rest of the chain, or a refusal that
/// the server sends instead (if the call has not been answered yet).
pub type MiddlewareFuture = Pin<Box<dyn Future<Output = Result<Answered, Rejection>> + Send>>;

/// Runs around every call of a [`Router`](super::Router)'s services.
pub trait Middleware: Send + Sync + 'static {
    /// Handles one call: usually looks at `next.context()`, then `next.run().await`, then
    /// at the answer. Not calling `run` refuses the call (return the `Err`).
    fn call(&self, next: Next) -> MiddlewareFuture;
}

/// The rest of a call's chain: the middleware after this one, then the service.
pub struct Next {
    context: Context,
    /// The method's name as its service declares it (`None`: the service has no such
    /// method), for labels that must stay a bounded set.
    known_method: Option<&'static str>,
    request_bytes: usize,
    layers: Arc<[Arc<dyn Middleware>]>,
    index: usize,
    terminal: Terminal,
}

/// What the chain ends in: starts the call's handler (decoding its arguments), or says
/// why it cannot.
pub type Terminal = Box<dyn FnOnce() -> Result<HandlerFuture, Rejection> + Send>;

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("service", &self.context.service())
            .field("method", &self.context.method())
            .field("remaining_layers", &(self.layers.len() - self.index))
            .finish()
    }
}

impl Next {
    /// The chain of `layers` for one call, ending in `terminal`. For transports that are
    /// not this crate's connections (an HTTP gateway): the server builds it itself.
    pub fn new(
        layers: Arc<[Arc<dyn Middleware>]>,
        context: Context,
        known_method: Option<&'static str>,
        request_bytes: usize,
        terminal: Terminal,
    ) -> Next {
        Next {
            context,
            known_method,
            request_bytes,
            layers,
            index: 0,
            terminal,
        }
    }

    /// The call's context: service, method, metadata, peer, deadline.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The called service's name (`&'static`: one of the server's own).
    pub fn service(&self) -> &'static str {
        self.context.service_static()
    }

    /// The method's name if the service declares it (`None` for an unknown method): a
    /// bounded set, fit for metric labels (a scanner cannot create new ones).
    pub fn known_method(&self) -> Option<&'static str> {
        self.known_method
    }

    /// Bytes of the request's payload (its encoded arguments).
    pub fn request_bytes(&self) -> usize {
        self.request_bytes
    }

    /// Runs the rest of the chain and the handler; ends with how the call was answered.
    pub fn run(self) -> MiddlewareFuture {
        if let Some(layer) = self.layers.get(self.index) {
            let layer = Arc::clone(layer);
            let next = Next {
                index: self.index + 1,
                ..self
            };
            return layer.call(next);
        }
        match (self.terminal)() {
            Ok(handler) => Box::pin(async move { Ok(handler.await) }),
            Err(rejection) => Box::pin(std::future::ready(Err(rejection))),
        }
    }
}

/// A middleware from an async closure: `from_fn(|next| async move { next.run().await })`.
pub fn from_fn<F, Fut>(f: F) -> FromFn<F>
where
    F: Fn(Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Answered, Rejection>> + Send + 'static,
{
    FromFn(f)
}

/// See [`from_fn`].
#[derive(Clone, Copy, Debug)]
pub struct FromFn<F>(F);

impl<F, Fut> Middleware for FromFn<F>
where
    F: Fn(Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Answered, Rejection>> + Send + 'static,
{
    fn call(&self, next: Next) -> MiddlewareFuture {
        Box::pin((self.0)(next))
    }
}

/// An [`Interceptor`] as a middleware: its check, then the rest of the chain.
pub(crate) struct InterceptorLayer(pub(crate) Arc<dyn Interceptor>);

impl Middleware for InterceptorLayer {
    fn call(&self, next: Next) -> MiddlewareFuture {
        match self.0.intercept(next.context()) {
            Ok(()) => next.run(),
            Err(rejection) => Box::pin(std::future::ready(Err(rejection))),
        }
    }
}
