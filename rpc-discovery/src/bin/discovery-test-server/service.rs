//! The service the discovery tests call: every answer names the replica that gave it.
//! Shared by the test server binary and the integration tests (`#[path]` include).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[rpc_core::service]
pub trait Replica {
    /// The replica's name.
    #[idempotent]
    async fn whoami(&self) -> String;
    /// Sleeps `ms` milliseconds (plus the replica's own delay), then returns its name.
    #[idempotent]
    async fn work(&self, ms: u64) -> String;
    /// Sleeps `ms` milliseconds, counts the call as done, returns the replica's name. Not
    /// idempotent: it must never run twice for one call.
    async fn record(&self, ms: u64) -> String;
}

/// A replica named `name`.
#[derive(Clone, Default)]
pub struct ReplicaImpl {
    pub name: String,
    /// Added to every `work` call.
    pub delay: Duration,
    /// While set, `whoami` panics (the endpoint "fails").
    pub broken: Arc<AtomicBool>,
    /// Calls that reached a handler.
    pub calls: Arc<AtomicUsize>,
    /// `record` calls started.
    pub records: Arc<AtomicUsize>,
}

impl ReplicaImpl {
    pub fn new(name: &str) -> Self {
        ReplicaImpl {
            name: name.to_string(),
            ..Default::default()
        }
    }
}

impl Replica for ReplicaImpl {
    async fn whoami(&self) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            panic!("replica {} is broken", self.name);
        }
        self.name.clone()
    }

    async fn work(&self, ms: u64) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms) + self.delay).await;
        self.name.clone()
    }

    async fn record(&self, ms: u64) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.records.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.name.clone()
    }
}
