//! The service the discovery tests call: every answer names the replica that gave it.
//! Shared by the test server binary and the integration tests (`#[path]` include).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[traitrpc_core::service]
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
    /// Logs `start record <id>` (see `ReplicaImpl::log`), sleeps `ms` milliseconds,
    /// returns the replica's name. Not idempotent: a call id must start at most once.
    async fn record_id(&self, id: u64, ms: u64) -> String;
    /// Logs `start work <id>`, sleeps `ms` milliseconds, returns the replica's name.
    #[idempotent]
    async fn work_id(&self, id: u64, ms: u64) -> String;
    /// Logs `start bulk <id>`, returns the replica's name followed by `len` bytes of
    /// padding: a large answer.
    #[idempotent]
    async fn bulk(&self, id: u64, len: u32) -> String;
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
    /// Where `record_id` and `work_id` log the ids they start: one line per call,
    /// written before the handler does anything else (a process killed later keeps it).
    pub log: Option<Arc<std::sync::Mutex<std::fs::File>>>,
}

impl ReplicaImpl {
    pub fn new(name: &str) -> Self {
        ReplicaImpl {
            name: name.to_string(),
            ..Default::default()
        }
    }
}

impl ReplicaImpl {
    fn log_start(&self, method: &str, id: u64) {
        if let Some(log) = &self.log {
            use std::io::Write;
            let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
            // One write per line, unbuffered: it is in the kernel before the call goes on.
            let _ = file.write_all(format!("start {method} {id} {}\n", self.name).as_bytes());
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

    async fn record_id(&self, id: u64, ms: u64) -> String {
        self.log_start("record", id);
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.name.clone()
    }

    async fn work_id(&self, id: u64, ms: u64) -> String {
        self.log_start("work", id);
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms) + self.delay).await;
        self.name.clone()
    }

    async fn bulk(&self, id: u64, len: u32) -> String {
        self.log_start("bulk", id);
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut answer = self.name.clone();
        answer.extend(std::iter::repeat_n('.', len as usize));
        answer
    }
}
