//! Call observers: told, synchronously, when each call starts and how it ended, without
//! taking part in it. What metrics need, at a fraction of a middleware's cost: no future
//! is boxed and nothing is allocated per call (a middleware wraps every call in a boxed
//! future, which at high call rates is most of what a metrics layer would cost; gRPC
//! separates its stats handlers from its interceptors for the same reason).
//!
//! Install one with [`Router::observe`](super::Router::observe). An observer sees every
//! call the router admits, refusals of its middleware included, and ends each exactly
//! once: with the answer's status, or with none if the call ended unanswered (cancelled
//! by its caller, its connection closed, its task stopped).
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::time::Duration;
//! use traitrpc_core::server::observer::{ObservedCall, ServerObserver};
//! use traitrpc_core::{Answered, Router};
//! # #[traitrpc_core::service] pub trait Ping { async fn ping(&self) -> u8; }
//! # struct P; impl Ping for P { async fn ping(&self) -> u8 { 1 } }
//!
//! #[derive(Default)]
//! struct Failures(AtomicU64);
//!
//! impl ServerObserver for Failures {
//!     fn call_ended(&self, _call: &ObservedCall, answered: &Answered, _elapsed: Duration) {
//!         if answered.status() != Some(traitrpc_core::protocol::status::OK) {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! let router = Router::from(PingServer::new(P)).observe(Failures::default());
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::service::Answered;

/// Watches the calls of a [`Router`](super::Router). Both methods run on the connection's
/// task or the call's own: they must be quick and must not block.
pub trait ServerObserver: Send + Sync + 'static {
    /// A call was admitted and is about to run (before its arguments are decoded and
    /// before any middleware). The default does nothing.
    fn call_started(&self, call: &ObservedCall) {
        let _ = call;
    }

    /// The call ended, `elapsed` after it was read: `answered` says how (its status is
    /// `None` if it ended without an answer).
    fn call_ended(&self, call: &ObservedCall, answered: &Answered, elapsed: Duration);
}

/// What an observer learns of a call.
#[derive(Debug, Clone, Copy)]
pub struct ObservedCall {
    id: u64,
    service: &'static str,
    known_method: Option<&'static str>,
    request_bytes: usize,
}

impl ObservedCall {
    /// The call's id on its connection.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The called service's name.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The method's name if the service declares it (`None` for an unknown method): a
    /// bounded set, fit for metric labels.
    pub fn known_method(&self) -> Option<&'static str> {
        self.known_method
    }

    /// Bytes of the request's payload (its encoded arguments).
    pub fn request_bytes(&self) -> usize {
        self.request_bytes
    }
}

/// The observers of a router, as its connections share them.
pub(crate) type Observers = Arc<[Arc<dyn ServerObserver>]>;

/// One observed call: started when made, ended once, by [`CallWatch::end`] or, if the
/// call is dropped before, with no answer. Native connections make them; other
/// transports of a router's calls (the HTTP gateway) start them with
/// [`Router::watch_call`](super::Router::watch_call), so observers see every call.
pub struct CallWatch {
    observers: Observers,
    call: ObservedCall,
    read_at: Instant,
    ended: bool,
}

impl CallWatch {
    /// Tells `observers` that `call` starts (it was read at `read_at`).
    pub(crate) fn start(
        observers: &Observers,
        id: u64,
        service: &'static str,
        known_method: Option<&'static str>,
        request_bytes: usize,
        read_at: Instant,
    ) -> CallWatch {
        let call = ObservedCall {
            id,
            service,
            known_method,
            request_bytes,
        };
        for observer in observers.iter() {
            observer.call_started(&call);
        }
        CallWatch {
            observers: Arc::clone(observers),
            call,
            read_at,
            ended: false,
        }
    }

    /// Tells the observers how the call ended.
    pub fn end(mut self, answered: &Answered) {
        self.notify(answered, Instant::now());
    }

    /// Tells the observers how the call ended, at `now`.
    pub(crate) fn end_at(mut self, answered: &Answered, now: Instant) {
        self.notify(answered, now);
    }

    fn notify(&mut self, answered: &Answered, now: Instant) {
        self.ended = true;
        let elapsed = now.saturating_duration_since(self.read_at);
        for observer in self.observers.iter() {
            observer.call_ended(&self.call, answered, elapsed);
        }
    }
}

/// Calls a connection answered in its current batch, whose answers leave with the
/// batch's write: they end together, when the write has been handed to the socket, on
/// one clock read (not one per call). Dropped unended (the connection ending), each ends
/// at once.
#[derive(Default)]
pub(crate) struct BatchEnds(Vec<(CallWatch, Answered)>);

impl BatchEnds {
    /// `watch`'s call was answered with `answered`; it ends with the batch.
    pub(crate) fn push(&mut self, watch: CallWatch, answered: Answered) {
        self.0.push((watch, answered));
    }

    /// Ends every call of the batch now.
    pub(crate) fn end_all(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let now = Instant::now();
        for (watch, answered) in self.0.drain(..) {
            watch.end_at(&answered, now);
        }
    }
}

impl Drop for BatchEnds {
    fn drop(&mut self) {
        self.end_all();
    }
}

impl std::fmt::Debug for CallWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallWatch")
            .field("id", &self.call.id)
            .field("service", &self.call.service)
            .finish_non_exhaustive()
    }
}

impl Drop for CallWatch {
    fn drop(&mut self) {
        if !self.ended {
            self.notify(&Answered::unanswered(), Instant::now());
        }
    }
}
