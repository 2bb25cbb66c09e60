//! The write side of a connection, shared by client and server.
//!
//! Callers encode each frame directly into one shared buffer (no per-call allocation, no
//! second copy of the payload). The connection's task swaps the buffer out and writes
//! everything queued at once ([`crate::frame_io::FrameIo`]): frames queued while a write
//! is in progress, or while the task handles the frames it just read, go out together,
//! so writes coalesce under load by construction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use futures::task::AtomicWaker;
use tokio::sync::Notify;

use crate::compression::Compressor;
use crate::context::Metadata;
use crate::error::RpcError;
use crate::method_ids::MethodIds;
use crate::protocol::{self, kind, Fingerprints, FrameLayout, Naming, PayloadCodec};

/// Initial capacity of the buffer once a first frame is queued.
const INITIAL_CAPACITY: usize = 8 * 1024;

/// Frames waiting to be written on one connection.
///
/// It counts the bytes queued and not yet written to the socket (`unwritten`, whether
/// still here or taken by the writer). Senders that can wait (calls, stream items) wait
/// in [`Outbox::writable`] while that is at the high-water mark, so a peer that stops
/// reading cannot make this side buffer without bound; control frames and answers do not
/// wait (what bounds them is listed in `docs/SECURITY.md`).
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The connection task, woken when frames are queued into an empty outbox.
    writer: AtomicWaker,
    /// How frames are written: layout, the peer's frame limit, compression.
    framing: protocol::Framing,
    /// Bytes queued and not yet written to the socket.
    unwritten: AtomicUsize,
    /// At or above this many unwritten bytes, [`Outbox::writable`] waits.
    high_water: usize,
    /// Woken when `unwritten` falls below the mark, or the outbox closes.
    space: Notify,
}

struct State {
    buf: BytesMut,
    /// Set once no more frames may be queued; the writer drains what is left and stops.
    closed: bool,
    /// A client's method ids (version 5), bound in the order requests are queued.
    methods: MethodIds,
}

impl Outbox {
    /// An outbox for a peer that accepts frames of up to `max_frame_size` bytes laid out
    /// as `layout`, whose waiting senders wait at `high_water` unwritten bytes; payloads
    /// are compressed with `compressor`, if any.
    pub(crate) fn new(
        max_frame_size: usize,
        layout: FrameLayout,
        compressor: Option<Compressor>,
        high_water: usize,
    ) -> Self {
        Outbox {
            state: Mutex::new(State {
                // Allocated on first use, so idle connections hold no write buffer.
                buf: BytesMut::new(),
                closed: false,
                methods: MethodIds::default(),
            }),
            writer: AtomicWaker::new(),
            framing: protocol::Framing {
                layout,
                max_frame_size,
                compressor,
                compress: None,
            },
            unwritten: AtomicUsize::new(0),
            high_water: high_water.max(1),
            space: Notify::new(),
        }
    }

    /// Bytes queued and not yet written to the socket.
    pub(crate) fn unwritten(&self) -> usize {
        self.unwritten.load(Ordering::Acquire)
    }

    /// Waits until the unwritten bytes are below the high-water mark (or the outbox is
    /// closed, when pushing fails at once). Ready at once in the common case.
    pub(crate) async fn writable(&self) {
        loop {
            if self.unwritten() < self.high_water {
                return;
            }
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.unwritten() < self.high_water || self.lock().closed {
                return;
            }
            notified.await;
        }
    }

    /// The writer wrote `bytes` to the socket.
    pub(crate) fn written(&self, bytes: usize) {
        let before = self.unwritten.fetch_sub(bytes, Ordering::AcqRel);
        if before >= self.high_water && before - bytes < self.high_water {
            self.space.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Frames roll back on panic (see `protocol::write_frame`), so a poisoned buffer
        // is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The largest frame the peer accepts.
    pub(crate) fn max_frame_size(&self) -> usize {
        self.framing.max_frame_size
    }

    /// How the connection's frames are laid out.
    pub(crate) fn layout(&self) -> FrameLayout {
        self.framing.layout
    }

    /// Queues one frame (see [`protocol::write_frame`]) and returns the size of its
    /// payload (what `payload` wrote). A value's payload is compressed if the connection
    /// compresses and `compress` (the call's or method's choice; `None`: the threshold
    /// decides) asks for it. Fails without queueing anything if the outbox is closed, the
    /// payload fails to encode, or the frame is too large.
    pub(crate) fn push<F, P>(
        &self,
        (kind, flags, id): (u8, u8, u64),
        compress: Option<bool>,
        fields: F,
        payload: P,
    ) -> Result<usize, RpcError>
    where
        F: FnOnce(&mut BytesMut),
        P: FnOnce(&mut BytesMut) -> Result<(), RpcError>,
    {
        let framing = protocol::Framing {
            compress,
            ..self.framing
        };
        self.queue(|buf, _| protocol::write_frame(buf, framing, kind, flags, id, fields, payload))
    }

    /// Queues a client's `REQUEST` for `method` with a budget of `budget_micros`: on
    /// version 5 it names the method by the id the connection bound to it, or binds one,
    /// in the order the requests are written. The arguments are compressed as the
    /// method (with its call's choice) says, see [`Outbox::push`].
    ///
    /// `register` gives the call its id under the outbox's lock, so call ids reach the
    /// wire in the order they were given (a GO_AWAY's last id then tells exactly which
    /// calls the server never read); its error queues nothing.
    pub(crate) fn push_request<R, P>(
        &self,
        flags: u8,
        register: R,
        budget_micros: u64,
        method: &crate::Method,
        metadata: &Metadata,
        payload: P,
    ) -> Result<PayloadCodec, RpcError>
    where
        R: FnOnce() -> Result<u64, RpcError>,
        P: FnOnce(&mut BytesMut, PayloadCodec) -> Result<(), RpcError>,
    {
        let (service, method_name) = (method.service, method.name);
        let framing = protocol::Framing {
            compress: method.compress,
            ..self.framing
        };
        let layout = framing.layout;
        // The registration runs once: under the lock before the frame, or, on a closed
        // outbox, for the error it gives (the connection's own reason, not a generic one).
        let register = std::cell::Cell::new(Some(register));
        let register_once = || register.take().expect("registered once")();
        let closed = || match register_once() {
            Err(error) => error,
            Ok(_) => RpcError::closed("the connection is closing"),
        };
        let mut codec = PayloadCodec::Bincode;
        self.queue_or(
            |buf, methods| {
                let id = register_once()?;
                let (naming, json) = match layout {
                    FrameLayout::Fixed => (Naming::Inline(service, method_name), false),
                    FrameLayout::Compact => methods.name(service, method_name, method.schema),
                };
                if json {
                    codec = PayloadCodec::Json;
                }
                let fields = |buf: &mut BytesMut| {
                    protocol::put_request_fields(buf, layout, budget_micros, naming, metadata)
                };
                let flags =
                    flags | naming.flags(layout) | if json { protocol::flags::JSON } else { 0 };
                let payload = |buf: &mut BytesMut| payload(buf, codec);
                let size =
                    protocol::write_frame(buf, framing, kind::REQUEST, flags, id, fields, payload)?;
                methods.queued(naming, json, method.schema);
                Ok(size)
            },
            closed,
        )?;
        Ok(codec)
    }

    /// This outbox, for a client whose server announced `fingerprints` (version 6): its
    /// requests of methods whose schemas differ go in JSON by name.
    pub(crate) fn knowing(self, fingerprints: Option<Arc<Fingerprints>>) -> Self {
        self.lock().methods = MethodIds::knowing(fingerprints);
        self
    }

    /// Runs `write` on the buffer under the lock, counts what it appended and wakes the
    /// writer if the outbox was empty.
    fn queue<W>(&self, write: W) -> Result<usize, RpcError>
    where
        W: FnOnce(&mut BytesMut, &mut MethodIds) -> Result<usize, RpcError>,
    {
        self.queue_or(write, || RpcError::closed("the connection is closing"))
    }

    /// [`Outbox::queue`], with the error `closed` gives once the outbox is closed.
    fn queue_or<W, C>(&self, write: W, closed: C) -> Result<usize, RpcError>
    where
        W: FnOnce(&mut BytesMut, &mut MethodIds) -> Result<usize, RpcError>,
        C: FnOnce() -> RpcError,
    {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            return Err(closed());
        }
        let was_empty = state.buf.is_empty();
        if state.buf.capacity() == 0 {
            state.buf.reserve(INITIAL_CAPACITY);
        }
        let before = state.buf.len();
        let State { buf, methods, .. } = &mut *state;
        let payload = write(buf, methods)?;
        let size = state.buf.len() - before;
        self.unwritten.fetch_add(size, Ordering::AcqRel);
        drop(state);
        if was_empty {
            // A non-empty outbox already has a wake-up pending.
            self.writer.wake();
        }
        Ok(payload)
    }

    /// Queues a frame that is only a header plus `body` (control frames: CANCEL,
    /// WINDOW_UPDATE, STOP_SENDING, STREAM_END). Errors mean the connection is closing.
    pub(crate) fn push_control(&self, kind: u8, id: u64, body: &[u8]) -> Result<(), RpcError> {
        self.push(
            (kind, 0, id),
            None,
            |buf| bytes::BufMut::put_slice(buf, body),
            |_| Ok(()),
        )
        .map(|_| ())
    }

    /// Wakes the connection's task (registered through [`Outbox::register`]).
    pub(crate) fn wake_task(&self) {
        self.writer.wake();
    }

    /// Stops accepting frames; what is queued is still written.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.writer.wake();
        self.space.notify_waiters();
    }

    /// The connection's task is running and writes what is queued before it waits again
    /// (its next [`Outbox::register`] comes before its next [`Outbox::take`]): frames
    /// queued meanwhile, such as the answers of handlers it polls itself, need not wake
    /// it. A task woken while it runs is polled once more, and the scheduler wakes another
    /// worker thread to look for work.
    pub(crate) fn unregister(&self) {
        drop(self.writer.take());
    }

    /// Registers the task to wake when frames are queued. Call before [`Outbox::take`]
    /// so that no frame queued in between goes unnoticed.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.writer.register(waker);
    }

    /// Swaps the queued frames into `spare` (which must be empty). Returns whether there
    /// were any, and whether the outbox is closed.
    pub(crate) fn take(&self, spare: &mut BytesMut) -> (bool, bool) {
        let mut state = self.lock();
        let any = !state.buf.is_empty();
        if any {
            std::mem::swap(&mut state.buf, spare);
        }
        (any, state.closed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ping(outbox: &Outbox) {
        outbox.push_control(kind::PING, 0, &[0; 8]).unwrap();
    }

    #[test]
    fn frames_queued_while_the_writer_runs_do_not_wake_it() {
        let outbox = Outbox::new(1 << 20, FrameLayout::Compact, None, 1 << 20);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut spare = BytesMut::new();

        // Registered and empty: the first frame wakes the writer.
        outbox.register(&waker);
        ping(&outbox);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(outbox.take(&mut spare), (true, false));
        spare.clear();

        // The writer runs (it unregistered): what it queues itself wakes nobody, and it
        // takes the frames when it registers again before it waits.
        outbox.unregister();
        ping(&outbox);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        outbox.register(&waker);
        assert_eq!(outbox.take(&mut spare), (true, false));
        spare.clear();

        // Waiting again: the next frame wakes it.
        ping(&outbox);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }
}
