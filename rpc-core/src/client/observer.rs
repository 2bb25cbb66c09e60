//! Client call observers: told, synchronously, how each unary call of a
//! [`Client`](super::Client) ended, without taking part in it. The cheap way to record
//! client metrics: no future is boxed and nothing is allocated per call (see
//! [`crate::server::observer`] for the server's). Install one with
//! [`Client::observe`](super::Client::observe).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Method;
use crate::error::RpcError;
use crate::protocol::ResponseFrame;

/// Watches the unary calls of a client.
pub trait ClientObserver: Send + Sync + 'static {
    /// A call ended: answered, failed, or dropped by its caller. Runs on the caller's
    /// task: it must be quick and must not block.
    fn call_ended(&self, call: &ObservedClientCall<'_>);
}

/// How a client call ended, as an observer learns it.
#[derive(Debug, Clone, Copy)]
pub struct ObservedClientCall<'a> {
    method: &'a Method,
    outcome: Option<&'a Result<ResponseFrame, RpcError>>,
    request_bytes: usize,
    elapsed: Duration,
}

impl<'a> ObservedClientCall<'a> {
    /// The method called.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The response (whatever its status) or the failure; `None` if the caller dropped
    /// the call before it ended.
    pub fn outcome(&self) -> Option<&'a Result<ResponseFrame, RpcError>> {
        self.outcome
    }

    /// Bytes of the encoded arguments (0 if the call failed before they were encoded).
    pub fn request_bytes(&self) -> usize {
        self.request_bytes
    }

    /// Time from the call's start to its end, all attempts included.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// The observers of a client, shared by its clones.
pub(crate) type ClientObservers = Arc<[Arc<dyn ClientObserver>]>;

/// One observed call: ended once, by [`ClientWatch::end`] or, if the caller drops the
/// call first, as dropped.
pub(crate) struct ClientWatch<'a> {
    observers: &'a ClientObservers,
    method: &'a Method,
    started: Instant,
    /// Set as the arguments are encoded.
    pub(crate) request_bytes: AtomicUsize,
    ended: bool,
}

impl<'a> ClientWatch<'a> {
    /// Watches a call of `method` that started at `started`.
    pub(crate) fn start(
        observers: &'a ClientObservers,
        method: &'a Method,
        started: Instant,
    ) -> Self {
        ClientWatch {
            observers,
            method,
            started,
            request_bytes: AtomicUsize::new(0),
            ended: false,
        }
    }

    pub(crate) fn end(mut self, outcome: &Result<ResponseFrame, RpcError>) {
        self.notify(Some(outcome));
    }

    fn notify(&mut self, outcome: Option<&Result<ResponseFrame, RpcError>>) {
        self.ended = true;
        let call = ObservedClientCall {
            method: self.method,
            outcome,
            request_bytes: self.request_bytes.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
        };
        for observer in self.observers.iter() {
            observer.call_ended(&call);
        }
    }
}

impl Drop for ClientWatch<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.notify(None);
        }
    }
}
