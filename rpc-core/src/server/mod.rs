//! The server side: a [`Server`] accepts connections from a [`Listener`] and serves the
//! [`Service`]s of its [`Router`]; the [`ServerHandle`] it returns shuts it down.

mod admission;
mod config;
mod connection;
mod dispatch;
pub mod foreign;
mod handshake;
mod interceptor;
pub mod middleware;
pub mod observer;
mod parked;
mod service;
mod state;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admission::AdaptiveConcurrency;
pub use config::ServerConfig;
pub use interceptor::{Interceptor, Rejection};
pub use middleware::{Middleware, Next};
pub use service::{
    Answered, DispatchError, DuplicateService, HandlerFuture, IncomingCall, ReplyTo, Router,
    Service,
};

use crate::health::{self, HealthReporter, HealthServer, ServingStatus};
use crate::reflection;
use crate::transport::Listener;
use connection::Signals;
use state::Load;

/// A server: services plus settings, ready to serve a listener. It also hosts the health
/// ([`crate::health`]) and reflection ([`crate::reflection`]) services, each unless its
/// router has one of that name already.
#[derive(Debug, Clone)]
pub struct Server {
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    health: HealthReporter,
    shared_port: foreign::SharedPort,
}

impl Server {
    /// A server for `services` (one service, or a [`Router`] of several) with default
    /// settings.
    pub fn new(services: impl Into<Router>) -> Self {
        Self::with_config(services, ServerConfig::default())
    }

    /// A server for `services` with `config`.
    pub fn with_config(services: impl Into<Router>, config: ServerConfig) -> Self {
        let mut router = services.into();
        let health = HealthReporter::new();
        for name in router.service_names() {
            health.set(name, ServingStatus::Serving);
        }
        if router.get(health::SERVICE_NAME).is_none() {
            router = router
                .add_service(HealthServer::new(health.clone()))
                .expect("the router has no health service");
            health.set(health::SERVICE_NAME, ServingStatus::Serving);
        }
        if router.get(reflection::SERVICE_NAME).is_none() {
            let catalog = reflection::Catalog::of(&router);
            router = router
                .add_service(reflection::ReflectionServer::new(catalog))
                .expect("the router has no reflection service");
            health.set(reflection::SERVICE_NAME, ServingStatus::Serving);
        }
        Server {
            router: Arc::new(router),
            config: Arc::new(config),
            health,
            shared_port: foreign::SharedPort::default(),
        }
    }

    /// Serves `protocol` on this server's port too: a connection that does not open with
    /// this protocol's hello, and that `protocol` recognises, is handed to it
    /// ([`foreign`]). For example HTTP/JSON with `traitrpc_gateway::on_native_port`, so one
    /// port serves native clients, curl and browsers.
    pub fn share_port(mut self, protocol: impl foreign::ForeignProtocol) -> Self {
        self.shared_port = foreign::SharedPort(Some(Arc::new(protocol)));
        self
    }

    /// Its router, with the health and reflection services it added: give this one to
    /// an HTTP gateway (`traitrpc_gateway::serve`, `traitrpc_gateway::on_native_port`) so HTTP
    /// callers reach those too.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The fingerprint block of its methods (`docs/PROTOCOL.md` section 24), traced now
    /// if not yet; empty if the configuration says not to announce them.
    fn fingerprints(&self) -> Arc<[u8]> {
        if !self.config.announce_fingerprints {
            return crate::protocol::Fingerprints::default().encode().into();
        }
        let schemas = self
            .router
            .service_names()
            .filter_map(|name| self.router.get(name)?.schema());
        crate::protocol::Fingerprints::of(schemas).encode().into()
    }

    /// The statuses its health service reports.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Spawns the accept loop on the current tokio runtime and returns at once.
    /// `local_addr` is what [`ServerHandle::local_addr`] reports.
    pub fn serve<L: Listener, A>(self, mut listener: L, local_addr: A) -> ServerHandle<A> {
        let signals = Signals {
            graceful: CancellationToken::new(),
            hard: CancellationToken::new(),
            kill: CancellationToken::new(),
        };
        let tracker = TaskTracker::new();
        let load = Arc::new(Load::new(
            self.config.admission(tokio::time::Instant::now()),
        ));
        let accept_signals = signals.clone();
        let connections = tracker.clone();
        let parts = connection::ServerParts {
            router: Arc::clone(&self.router),
            config: Arc::clone(&self.config),
            load: Arc::clone(&load),
            signals: signals.clone(),
            tasks: tracker.clone(),
            shared_port: self.shared_port.clone(),
            fingerprints: self.fingerprints(),
        };
        let grace = self.config.shutdown_grace;
        let delay = self.config.shutdown_delay;
        let health = self.health.clone();
        tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_signals.graceful.cancelled() => break,
                    _ = accept_signals.kill.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((accepted, peer)) => {
                        connections.spawn(connection::serve_connection(
                            listener.establish(accepted),
                            peer,
                            parts.clone(),
                        ));
                    }
                    Err(e) => {
                        // Usually transient (a reset before accept, out of descriptors):
                        // back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        ServerHandle {
            local_addr,
            trigger: ShutdownTrigger {
                signals,
                tracker,
                grace,
                delay,
                health,
            },
            load,
        }
    }
}

/// A running server. Dropping the handle leaves the server running; call
/// [`shutdown`](ServerHandle::shutdown) or [`abort`](ServerHandle::abort) to stop it, or
/// hand a [`ShutdownTrigger`] (from [`trigger`](ServerHandle::trigger)) to whatever
/// decides when to stop.
#[must_use = "dropping a ServerHandle leaves the server running, with no way left to shut it \
              down gracefully: keep it (or its trigger()) and call shutdown()"]
pub struct ServerHandle<A> {
    local_addr: A,
    trigger: ShutdownTrigger,
    load: Arc<Load>,
}

impl<A: fmt::Debug> fmt::Debug for ServerHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("tasks", &self.trigger.tracker.len())
            .finish()
    }
}

impl<A> ServerHandle<A> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> A
    where
        A: Clone,
    {
        self.local_addr.clone()
    }

    /// Connections being served now (including those in their handshake).
    pub fn connections(&self) -> usize {
        self.load
            .connections
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Calls running now, across all connections.
    pub fn calls_in_flight(&self) -> usize {
        self.load.calls.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Calls shed (answered OVERLOADED by a limit, without running) since the start.
    pub fn calls_shed(&self) -> u64 {
        self.load.shed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Calls that may run at once now (see [`ServerStats::concurrency_limit`]).
    pub fn concurrency_limit(&self) -> usize {
        self.load.admission.limit()
    }

    /// The server's counts now, for metrics.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            load: Arc::clone(&self.load),
        }
    }

    /// The statuses its health service reports (set them as the application sees fit).
    pub fn health(&self) -> HealthReporter {
        self.trigger.health.clone()
    }

    /// A cloneable trigger that stops this server from anywhere (a signal handler, an
    /// admin endpoint, a test).
    pub fn trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Shuts the server down gracefully when `signal` completes (for example
    /// `tokio::signal::ctrl_c()`), on a task of its own; await
    /// [`stopped`](ServerHandle::stopped) to wait for the end.
    pub fn shutdown_on<F>(self, signal: F) -> Self
    where
        F: Future + Send + 'static,
    {
        let trigger = self.trigger();
        tokio::spawn(async move {
            signal.await;
            trigger.shutdown().await;
        });
        self
    }

    /// Completes once the server has stopped (after a shutdown or abort from anywhere)
    /// and every connection and handler task is gone.
    pub async fn stopped(&self) {
        self.trigger.stopped().await
    }

    /// Graceful shutdown with the configured grace period (default 30 s): turns every
    /// service NOT_SERVING in the health service (watchers are told first, and the server
    /// goes on serving for `ServerConfig::shutdown_delay`), then stops accepting, tells
    /// clients to send no new calls, lets calls in flight finish, and closes. Calls still running when the grace period ends are dropped and answered
    /// `INTERRUPTED` (`RpcError::Interrupted`: they had started, so they are not retried
    /// unless idempotent).
    pub async fn shutdown(self) {
        self.trigger.shutdown().await
    }

    /// [`shutdown`](ServerHandle::shutdown) with an explicit grace period.
    pub async fn shutdown_with_grace(self, grace: Duration) {
        self.trigger.shutdown_with_grace(grace).await
    }

    /// Stops at once, as if the process died: connections are dropped without an answer
    /// to the calls in flight.
    pub async fn abort(self) {
        self.trigger.abort().await
    }
}

/// A live view of a server's counts (cheap to clone; reads atomics).
#[derive(Clone, Debug)]
pub struct ServerStats {
    load: Arc<Load>,
}

impl ServerStats {
    /// Connections being served (including those in their handshake).
    pub fn connections(&self) -> usize {
        self.load
            .connections
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Calls running, across all connections.
    pub fn calls_in_flight(&self) -> usize {
        self.load.calls.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Calls shed (answered OVERLOADED by a limit, without running) since the start.
    pub fn calls_shed(&self) -> u64 {
        self.load.shed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Calls that may run at once now: `max_concurrent_calls`, or where the adaptive
    /// limit stands ([`ServerConfig::adaptive_concurrency`]).
    pub fn concurrency_limit(&self) -> usize {
        self.load.admission.limit()
    }
}

/// Stops a server from anywhere: cheap to clone, each clone stops the same server. The
/// first stop wins; later ones wait for the same end.
#[derive(Clone)]
pub struct ShutdownTrigger {
    signals: Signals,
    tracker: TaskTracker,
    grace: Duration,
    delay: Duration,
    health: HealthReporter,
}

impl fmt::Debug for ShutdownTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownTrigger")
            .field("stopping", &self.signals.graceful.is_cancelled())
            .finish()
    }
}

impl ShutdownTrigger {
    /// Graceful shutdown with the server's configured grace period; see
    /// [`ServerHandle::shutdown`].
    pub async fn shutdown(&self) {
        self.shutdown_with_grace(self.grace).await
    }

    /// Graceful shutdown with an explicit grace period.
    pub async fn shutdown_with_grace(&self, grace: Duration) {
        if !self.signals.graceful.is_cancelled() {
            // Health first: watchers (balancers) hear NOT_SERVING before the GO_AWAY.
            self.health.shutting_down();
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            // Each watch ends once it has sent its last status.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.health.watchers_gone()).await;
        }
        self.signals.graceful.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            self.signals.hard.cancel();
            if tokio::time::timeout(Duration::from_secs(1), self.tracker.wait())
                .await
                .is_err()
            {
                self.signals.kill.cancel();
                self.tracker.wait().await;
            }
        }
    }

    /// Stops at once; see [`ServerHandle::abort`].
    pub async fn abort(&self) {
        self.signals.kill.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Whether a shutdown or abort has begun.
    pub fn is_stopping(&self) -> bool {
        self.signals.graceful.is_cancelled() || self.signals.kill.is_cancelled()
    }

    /// Completes once the server has stopped and its tasks are gone.
    pub async fn stopped(&self) {
        // The tracker can only finish once closed, which a shutdown or abort does.
        tokio::select! {
            _ = self.signals.graceful.cancelled() => {}
            _ = self.signals.kill.cancelled() => {}
        }
        self.tracker.wait().await
    }
}
