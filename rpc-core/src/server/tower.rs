//! `tower` layers as server middleware (feature `tower`): timeouts, concurrency limits,
//! rate limits, load shedding — any `tower::Layer` — apply to every call of a router.
//!
//! ```
//! # #[traitrpc_core::service] pub trait Ping { async fn ping(&self) -> u8; }
//! # struct P; impl Ping for P { async fn ping(&self) -> u8 { 1 } }
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! let layers = ServiceBuilder::new()
//!     .load_shed()
//!     .concurrency_limit(64)
//!     .timeout(Duration::from_secs(2));
//! let router = traitrpc_core::Router::from(PingServer::new(P))
//!     .layer(traitrpc_core::server::tower::from_tower(layers));
//! ```
//!
//! The layers wrap [`Inner`], a `tower::Service<Next>` that runs the rest of the chain.
//! Their errors become refusals: a timeout's `Elapsed` answers DEADLINE_EXCEEDED, a load
//! shedder's `Overloaded` answers OVERLOADED (the call did not run: safe to retry), a
//! refusal from further in ([`Rejected`]) its own status, anything else INTERNAL. One
//! instance of the layered service serves every call (behind an async lock held only
//! while it is made ready), so stateful layers such as `rate_limit` limit the router as
//! a whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::interceptor::Rejection;
use super::middleware::{Middleware, MiddlewareFuture, Next};
use super::service::Answered;
use crate::protocol::status;

/// A boxed error, as tower layers produce them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The rest of a call's chain as a `tower::Service`: what tower layers wrap.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inner;

/// A refusal from further in the chain, as an error tower layers can carry.
#[derive(Debug)]
pub struct Rejected(pub Rejection);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused (status {}): {}",
            self.0.code(),
            self.0.message()
        )
    }
}

impl std::error::Error for Rejected {}

impl tower::Service<Next> for Inner {
    type Response = Answered;
    type Error = Rejected;
    type Future = Pin<Box<dyn Future<Output = Result<Answered, Rejected>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Rejected>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, next: Next) -> Self::Future {
        let run = next.run();
        Box::pin(async move { run.await.map_err(Rejected) })
    }
}

/// The middleware [`from_tower`] makes.
pub struct TowerMiddleware<S> {
    service: Arc<tokio::sync::Mutex<S>>,
}

impl<S> std::fmt::Debug for TowerMiddleware<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerMiddleware").finish_non_exhaustive()
    }
}

/// `layer` (a `tower::Layer`, or a `ServiceBuilder`) as a middleware for
/// [`Router::layer`](super::Router::layer).
pub fn from_tower<L>(layer: L) -> TowerMiddleware<L::Service>
where
    L: tower::Layer<Inner>,
{
    TowerMiddleware {
        service: Arc::new(tokio::sync::Mutex::new(layer.layer(Inner))),
    }
}

impl<S> Middleware for TowerMiddleware<S>
where
    S: tower::Service<Next, Response = Answered> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, next: Next) -> MiddlewareFuture {
        let service = Arc::clone(&self.service);
        MiddlewareFuture::new(async move {
            let call = {
                let mut service = service.lock().await;
                std::future::poll_fn(|cx| service.poll_ready(cx))
                    .await
                    .map_err(|e| refusal(e.into()))?;
                service.call(next)
            };
            call.await.map_err(|e| refusal(e.into()))
        })
    }
}

/// The refusal a tower error means.
fn refusal(error: BoxError) -> Rejection {
    let error = match error.downcast::<Rejected>() {
        Ok(rejected) => return rejected.0,
        Err(error) => error,
    };
    if error.is::<tower::timeout::error::Elapsed>() {
        return Rejection::status(
            status::DEADLINE_EXCEEDED,
            "the call timed out on the server",
        );
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return Rejection::status(
            status::OVERLOADED,
            "the server is shedding load; the call did not run",
        );
    }
    Rejection::status(status::INTERNAL, error.to_string())
}
