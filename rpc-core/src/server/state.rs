//! What a server connection shares with its handlers' tasks ([`ConnectionState`]: the
//! outbox, the running calls and who may answer them, the streams), and the counts that
//! bound a server ([`Load`] and the slots that keep it right).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::AbortHandle;

use super::admission::Admission;
use super::service::{Answered, ReplyTo};
use crate::outbox::Outbox;
use crate::protocol::kind;
use crate::stream::{StreamEnd, StreamPeer, StreamTable};
use crate::util::IdHasher;
use crate::RpcError;

/// Server-wide counts, shared by every connection of a server.
#[derive(Debug)]
pub(crate) struct Load {
    /// Connections being served (past accept, including those still in the handshake).
    pub(crate) connections: AtomicUsize,
    /// Calls running across all connections.
    pub(crate) calls: AtomicUsize,
    /// Calls shed (answered OVERLOADED by a limit) since the server started.
    pub(crate) shed: std::sync::atomic::AtomicU64,
    /// How many calls may run at once.
    pub(crate) admission: Admission,
}

impl Load {
    /// No connections or calls yet, with `admission`.
    pub(crate) fn new(admission: Admission) -> Self {
        Load {
            connections: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            shed: Default::default(),
            admission,
        }
    }
}

/// A connection's place in the server's connection count.
pub(super) struct ConnectionSlot(pub(super) Arc<Load>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// State of a connection shared with its handler tasks.
pub(crate) struct ConnectionState {
    pub(crate) outbox: Outbox,
    /// Spawned calls not yet answered, by call id.
    pub(super) running: Mutex<RunningCalls>,
    /// The instance of the call whose handler is being polled in place on the connection
    /// task (0 if none): it is "running" without an entry in `running`.
    pub(super) inline_call: AtomicU64,
    /// Calls started and not finished (answered or dropped).
    pub(super) in_flight: AtomicUsize,
    /// The most calls that may be in flight: at the limit the connection stops reading.
    pub(super) max_in_flight: usize,
    /// The server's counts.
    pub(crate) load: Arc<Load>,
    /// Streams of calls on this connection (flow control).
    pub(crate) streams: StreamTable,
    /// The protocol version the client speaks (streaming needs 2).
    pub(crate) version: u16,
    /// Cancelled when the connection has ended: stops handler tasks no one can abort by
    /// call id any more (they answered and went on).
    pub(super) ended: tokio_util::sync::CancellationToken,
    /// How the calls still running were answered when the connection stopped them
    /// ([`ConnectionState::abort_all`] with an answer): their tasks, dropped, tell their
    /// observers this instead of "unanswered".
    pub(super) interrupted: std::sync::OnceLock<Answered>,
}

impl StreamPeer for ConnectionState {
    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn receiver_dropped(&self, id: u64) {
        // The handler dropped its request stream: the client may stop sending it.
        self.streams.remove_inbound(id);
        let _ = self.outbox.push_control(kind::STOP_SENDING, id, &[]);
    }
}

/// A spawned call not yet answered.
pub(super) struct RunningCall {
    /// Which call this is: an id comes back when a client reuses it for a new call once
    /// the answer reached it (version 5), while the old call's task may still be ending.
    /// Instances are never reused on a connection, and start at 1.
    pub(super) instance: u64,
    /// Its task (`None` while it is being spawned).
    pub(super) task: Option<AbortHandle>,
}

pub(super) type RunningCalls = HashMap<u64, RunningCall, BuildHasherDefault<IdHasher>>;

impl ConnectionState {
    pub(super) fn running(&self) -> MutexGuard<'_, RunningCalls> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the right to answer call `id`, the running call `instance` of it. Whoever
    /// removes a running call (from the inline slot or the map) answers it, so a call is
    /// never answered twice (handler vs. shutdown vs. cancel), and what an ended call's
    /// task does late never touches a new call that reuses its id.
    pub(crate) fn claim(&self, id: u64, instance: u64) -> bool {
        if self
            .inline_call
            .compare_exchange(instance, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.end_streams(id);
            return true;
        }
        let claimed = match self.running().entry(id) {
            Entry::Occupied(call) if call.get().instance == instance => {
                call.remove();
                true
            }
            _ => false,
        };
        if claimed {
            self.end_streams(id);
        }
        claimed
    }

    /// Call `id` is over: its streams end (a no-op for calls without any).
    pub(super) fn end_streams(&self, id: u64) {
        self.streams
            .finish(id, || StreamEnd::Error(RpcError::Cancelled));
    }

    /// Whether another call may start (the in-flight limit is not reached).
    pub(super) fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) < self.max_in_flight
    }

    /// A call ended: frees its slot and, if the connection had stopped reading at the
    /// limit, wakes its task.
    pub(super) fn release_slot(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == self.max_in_flight {
            self.outbox.wake_task();
        }
    }

    /// Aborts every running handler; with `answer`, tells each caller `status`.
    pub(super) fn abort_all(self: &Arc<Self>, answer: Option<(u8, &str)>) {
        self.streams
            .fail_all(&RpcError::closed("the connection is closing"));
        let running = std::mem::take(&mut *self.running());
        for (id, call) in running {
            // Answered first, and the answer recorded, so that the aborted task's
            // observers hear the status the caller got.
            if let Some((code, message)) = answer {
                let answered = ReplyTo::unregistered(Arc::clone(self), id).error(code, message);
                let _ = self.interrupted.set(answered);
            }
            if let Some(task) = call.task {
                task.abort();
            }
        }
    }
}

/// A started call's place in the in-flight count, given back when it is dropped (the call
/// finished, or its task was aborted).
pub(super) struct InFlightSlot {
    pub(super) state: Arc<ConnectionState>,
    /// Whether the call also counts toward its connection's in-flight limit (it does once
    /// it got past dispatch).
    pub(super) counted: bool,
    /// When its handler started, if an adaptive limit wants its latency.
    pub(super) started: Option<tokio::time::Instant>,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let running = self.state.load.calls.fetch_sub(1, Ordering::AcqRel) - 1;
        if let Some(started) = self.started {
            let now = tokio::time::Instant::now();
            self.state.load.admission.sample(started, now, running);
        }
        if self.counted {
            self.state.release_slot();
        }
    }
}
