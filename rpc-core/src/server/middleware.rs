//! The server's middleware seam: [`Middleware`] runs around every call, asynchronously,
//! before its arguments are decoded and after its handler answered. It sees the call's
//! [`Context`] (service, method, metadata, peer, deadline) and the request's size, may
//! refuse the call with a [`Rejection`], and learns how it was answered ([`Answered`]:
//! status, response size, stream items). Authentication, the [`Interceptor`], metrics
//! and tracing are middleware; `tower` layers apply through `traitrpc_core::server::tower`
//! (feature `tower`).
//!
//! A router without middleware runs handlers exactly as before (no allocation or wake-up
//! is added): the chain costs only those who install one.
//!
//! ```
//! use traitrpc_core::server::middleware::{self, Next};
//! use traitrpc_core::{Rejection, Router};
//! # #[traitrpc_core::service] pub trait Ping { async fn ping(&self) -> u8; }
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

use std::task::{Context as TaskContext, Poll};

use super::interceptor::{Interceptor, Rejection};
use super::service::{Answered, HandlerFuture, IncomingCall, Service};
use crate::context::Context;
use crate::protocol::WireStr;

/// What a [`Middleware`] returns: the answer of the rest of the chain, or a refusal that
/// the server sends instead (if the call has not been answered yet). Make one from any
/// future with [`MiddlewareFuture::new`] (or `.into()` from a boxed one); the chain's own
/// ends (the handler, a refusal) need no allocation.
#[must_use = "a middleware future does nothing unless polled"]
pub struct MiddlewareFuture(Repr);

enum Repr {
    /// The handler itself, at the end of the chain.
    Handler(HandlerFuture),
    /// An outcome known at once (a refusal); `None` once taken.
    Ready(Option<Result<Answered, Rejection>>),
    /// Any other future.
    Boxed(Pin<Box<dyn Future<Output = Result<Answered, Rejection>> + Send>>),
}

impl MiddlewareFuture {
    /// A middleware future running `future`.
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = Result<Answered, Rejection>> + Send + 'static,
    {
        MiddlewareFuture(Repr::Boxed(Box::pin(future)))
    }

    /// A middleware future that ends at once with `outcome` (a refusal, usually).
    pub fn ready(outcome: Result<Answered, Rejection>) -> Self {
        MiddlewareFuture(Repr::Ready(Some(outcome)))
    }

    /// The handler's future, as the end of the chain.
    fn handler(handler: HandlerFuture) -> Self {
        MiddlewareFuture(Repr::Handler(handler))
    }
}

impl From<Pin<Box<dyn Future<Output = Result<Answered, Rejection>> + Send>>> for MiddlewareFuture {
    fn from(future: Pin<Box<dyn Future<Output = Result<Answered, Rejection>> + Send>>) -> Self {
        MiddlewareFuture(Repr::Boxed(future))
    }
}

impl Future for MiddlewareFuture {
    type Output = Result<Answered, Rejection>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Repr::Handler(handler) => handler.as_mut().poll(cx).map(Ok),
            Repr::Ready(outcome) => Poll::Ready(
                outcome
                    .take()
                    .expect("a middleware future polled after it completed"),
            ),
            Repr::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for MiddlewareFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Repr::Handler(_) => "handler",
            Repr::Ready(_) => "ready",
            Repr::Boxed(_) => "boxed",
        };
        f.debug_tuple("MiddlewareFuture").field(&kind).finish()
    }
}

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
    end: End,
}

/// What the chain ends in: starts the call's handler (decoding its arguments), or says
/// why it cannot.
pub type Terminal = Box<dyn FnOnce() -> Result<HandlerFuture, Rejection> + Send>;

/// The end of a chain: a service of this crate's server (no allocation), or a
/// [`Terminal`] of another transport's.
enum End {
    Service {
        service: Arc<dyn Service>,
        method: WireStr,
        call: IncomingCall,
    },
    Terminal(Terminal),
}

impl End {
    fn start(self) -> Result<HandlerFuture, Rejection> {
        match self {
            End::Service {
                service,
                method,
                call,
            } => service
                .call(method.as_str(), call)
                .map_err(|e| e.into_rejection(service.name(), method.as_str())),
            End::Terminal(terminal) => terminal(),
        }
    }
}

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
            end: End::Terminal(terminal),
        }
    }

    /// The chain of `layers` for one call of this crate's server, ending in `service`.
    pub(crate) fn to_service(
        layers: Arc<[Arc<dyn Middleware>]>,
        context: Context,
        known_method: Option<&'static str>,
        request_bytes: usize,
        service: Arc<dyn Service>,
        call: IncomingCall,
    ) -> Next {
        let method = context.method_wire().clone();
        Next {
            context,
            known_method,
            request_bytes,
            layers,
            index: 0,
            end: End::Service {
                service,
                method,
                call,
            },
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
        match self.end.start() {
            Ok(handler) => MiddlewareFuture::handler(handler),
            Err(rejection) => MiddlewareFuture::ready(Err(rejection)),
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
        MiddlewareFuture::new((self.0)(next))
    }
}

/// An [`Interceptor`] as a middleware: its check, then the rest of the chain.
pub(crate) struct InterceptorLayer(pub(crate) Arc<dyn Interceptor>);

impl Middleware for InterceptorLayer {
    fn call(&self, next: Next) -> MiddlewareFuture {
        match self.0.intercept(next.context()) {
            Ok(()) => next.run(),
            Err(rejection) => MiddlewareFuture::ready(Err(rejection)),
        }
    }
}
