//! The write side of a connection, shared by client and server.
//!
//! Callers encode each frame directly into one shared buffer (no per-call allocation, no
//! second copy of the payload) and a single writer task per connection swaps the buffer
//! out and writes everything queued with one `write_all`: while a write is in progress,
//! new frames accumulate and go out together, so writes coalesce under load by
//! construction.

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::error::RpcError;
use crate::protocol;

/// A buffer larger than this is not kept for reuse after a write.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// Initial capacity of each of the two buffers.
const INITIAL_CAPACITY: usize = 8 * 1024;

/// Frames waiting to be written on one connection.
pub(crate) struct Outbox {
    state: Mutex<State>,
    wake_writer: Notify,
    /// The largest frame the peer accepts.
    max_frame_size: usize,
}

struct State {
    buf: BytesMut,
    /// Set once no more frames may be queued; the writer drains what is left and stops.
    closed: bool,
}

impl Outbox {
    /// An outbox for a peer that accepts frames of up to `max_frame_size` bytes.
    pub(crate) fn new(max_frame_size: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(INITIAL_CAPACITY),
                closed: false,
            }),
            wake_writer: Notify::new(),
            max_frame_size,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Frames roll back on panic (see `protocol::write_frame`), so a poisoned buffer
        // is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The largest frame the peer accepts.
    pub(crate) fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Queues one frame (see [`protocol::write_frame`]). Fails without queueing anything
    /// if the outbox is closed, the payload fails to encode, or the frame is too large.
    pub(crate) fn push<F, P>(
        &self,
        kind: u8,
        flags: u8,
        id: u64,
        fields: F,
        payload: P,
    ) -> Result<(), RpcError>
    where
        F: FnOnce(&mut BytesMut),
        P: FnOnce(&mut BytesMut) -> Result<(), RpcError>,
    {
        let mut state = self.lock();
        if state.closed {
            return Err(RpcError::closed("the connection is closing"));
        }
        let was_empty = state.buf.is_empty();
        protocol::write_frame(
            &mut state.buf,
            self.max_frame_size,
            kind,
            flags,
            id,
            fields,
            payload,
        )?;
        drop(state);
        if was_empty {
            // A non-empty buffer already has a wake-up pending.
            self.wake_writer.notify_one();
        }
        Ok(())
    }

    /// Stops accepting frames; the writer writes what is queued, then shuts the stream.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake_writer.notify_one();
    }

    /// Waits until frames are queued and swaps them into `spare` (which must be empty).
    /// Returns `false` once the outbox is closed and drained.
    async fn next_batch(&self, spare: &mut BytesMut) -> bool {
        loop {
            {
                let mut state = self.lock();
                if !state.buf.is_empty() {
                    std::mem::swap(&mut state.buf, spare);
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            self.wake_writer.notified().await;
        }
    }
}

/// Writes the outbox's frames to `io` until the outbox is closed and drained, then shuts
/// the write half down. Returns the first I/O error.
pub(crate) async fn run_writer<W>(mut io: W, outbox: &Outbox) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut batch = BytesMut::with_capacity(INITIAL_CAPACITY);
    while outbox.next_batch(&mut batch).await {
        io.write_all(&batch).await?;
        io.flush().await?;
        if batch.capacity() > KEEP_CAPACITY {
            batch = BytesMut::with_capacity(INITIAL_CAPACITY);
        } else {
            batch.clear();
        }
    }
    io.shutdown().await
}
