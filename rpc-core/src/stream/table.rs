//! [`StreamTable`]: the streams of one connection, by call id.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::flow::{Flow, Inbound, Outbound};
use super::StreamEnd;
use crate::error::RpcError;
use crate::util::IdHasher;

/// The streams of one connection, by call id: received items waiting for their consumer,
/// and the credit of streams being sent.
pub(crate) struct StreamTable {
    entries: Mutex<HashMap<u64, StreamEntry, BuildHasherDefault<IdHasher>>>,
    /// Number of entries, read without the lock on the unary hot path.
    count: AtomicUsize,
    /// How the connection counts credit.
    flow: Flow,
}

#[derive(Default)]
struct StreamEntry {
    inbound: Option<Arc<Inbound>>,
    outbound: Option<Arc<Outbound>>,
}

impl StreamTable {
    /// The streams of a connection whose credit is counted as `flow` says.
    pub(crate) fn new(flow: Flow) -> Self {
        StreamTable {
            entries: Mutex::new(HashMap::default()),
            count: AtomicUsize::new(0),
            flow,
        }
    }

    /// A new receiving stream (registered with [`StreamTable::add_inbound`]).
    pub(crate) fn new_inbound(&self) -> Arc<Inbound> {
        Arc::new(Inbound::new(self.flow))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, StreamEntry, BuildHasherDefault<IdHasher>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_entry<R>(&self, id: u64, f: impl FnOnce(&mut StreamEntry) -> R) -> R {
        let mut entries = self.lock();
        let entry = entries.entry(id).or_default();
        let r = f(entry);
        self.count.store(entries.len(), Ordering::Release);
        r
    }

    /// Whether no stream is open on the connection.
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Registers a stream to receive on call `id`.
    pub(crate) fn add_inbound(&self, id: u64, inbound: Arc<Inbound>) {
        self.with_entry(id, |e| e.inbound = Some(inbound));
    }

    /// Registers a stream to send on call `id` and returns its credit.
    pub(crate) fn add_outbound(&self, id: u64) -> Arc<Outbound> {
        let outbound = Arc::new(Outbound::new(self.flow));
        self.with_entry(id, |e| e.outbound = Some(Arc::clone(&outbound)));
        outbound
    }

    /// The receiving stream of call `id`, if it is still wanted.
    pub(crate) fn inbound(&self, id: u64) -> Option<Arc<Inbound>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(&id).and_then(|e| e.inbound.clone())
    }

    /// Forgets the receiving stream of call `id` (its consumer is gone).
    pub(crate) fn remove_inbound(&self, id: u64) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&id) {
            entry.inbound = None;
            if entry.outbound.is_none() {
                entries.remove(&id);
            }
        }
        self.count.store(entries.len(), Ordering::Release);
    }

    /// Credit granted for call `id`'s outgoing stream.
    pub(crate) fn grant(&self, id: u64, increment: u32) {
        if let Some(outbound) = self.outbound(id) {
            outbound.grant(increment);
        }
    }

    /// The receiver of call `id`'s outgoing stream wants no more items.
    pub(crate) fn stop_sending(&self, id: u64) {
        if let Some(outbound) = self.outbound(id) {
            outbound.stop();
        }
    }

    fn outbound(&self, id: u64) -> Option<Arc<Outbound>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(&id).and_then(|e| e.outbound.clone())
    }

    /// Call `id` is over: ends its received stream with `end` (if still open), stops its
    /// sent stream, and forgets both.
    pub(crate) fn finish(&self, id: u64, end: impl FnOnce() -> StreamEnd) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let entry = {
            let mut entries = self.lock();
            let entry = entries.remove(&id);
            self.count.store(entries.len(), Ordering::Release);
            entry
        };
        if let Some(entry) = entry {
            if let Some(inbound) = entry.inbound {
                inbound.end(end());
            }
            if let Some(outbound) = entry.outbound {
                outbound.stop();
            }
        }
    }

    /// The connection ended: every stream ends with `error`.
    pub(crate) fn fail_all(&self, error: &RpcError) {
        let entries = {
            let mut entries = self.lock();
            self.count.store(0, Ordering::Release);
            std::mem::take(&mut *entries)
        };
        for (_, entry) in entries {
            if let Some(inbound) = entry.inbound {
                inbound.end(StreamEnd::Error(error.clone()));
            }
            if let Some(outbound) = entry.outbound {
                outbound.stop();
            }
        }
    }
}
