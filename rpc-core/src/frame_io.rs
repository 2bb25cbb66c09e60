//! The byte side of a connection, driven by the connection's one task: frames in through
//! tokio-util's `LengthDelimitedCodec`, the [`Outbox`] out with non-blocking batched
//! writes. Reading and writing in the same task means the answers to a batch of frames
//! read together are written together, with no hop to another task.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::outbox::Outbox;

/// A write batch larger than this is not kept for reuse.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// Initial capacity of the read buffer (it grows to fit larger frames).
const READ_CAPACITY: usize = 4 * 1024;

/// Reads frames and writes an outbox's batches on one stream.
pub(crate) struct FrameIo<R, W> {
    frames: FramedRead<R, LengthDelimitedCodec>,
    writer: W,
    /// Bytes taken from the outbox and not yet fully written.
    batch: BytesMut,
    /// Whether bytes were written since the last flush.
    unflushed: bool,
    /// Whether bytes were written since [`FrameIo::take_progress`] last asked.
    progressed: bool,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> FrameIo<R, W> {
    /// Frames of up to `max_frame_size` bytes are read from `reader`.
    pub(crate) fn new(reader: R, writer: W, max_frame_size: usize) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(max_frame_size)
            .new_codec();
        FrameIo {
            frames: FramedRead::with_capacity(reader, codec, READ_CAPACITY),
            writer,
            batch: BytesMut::new(),
            unflushed: false,
            progressed: false,
        }
    }

    /// The next frame body. An `InvalidData` error means a frame over the size limit.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<BytesMut>>> {
        Pin::new(&mut self.frames).poll_next(cx)
    }

    /// Writes everything queued in `outbox` without blocking. Ready once nothing is left
    /// to write (the outbox's waker is registered, so new frames wake the task); `Ok(true)`
    /// then means the outbox is closed and drained.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        outbox: &Outbox,
    ) -> Poll<io::Result<bool>> {
        loop {
            if self.batch.is_empty() {
                if self.batch.capacity() > KEEP_CAPACITY {
                    self.batch = BytesMut::new();
                }
                outbox.register(cx.waker());
                let (any, closed) = outbox.take(&mut self.batch);
                if !any {
                    if self.unflushed {
                        ready!(Pin::new(&mut self.writer).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Ready(Ok(closed));
                }
            }
            let written = ready!(Pin::new(&mut self.writer).poll_write(cx, &self.batch))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.batch.advance(written);
            self.unflushed = true;
            self.progressed = true;
            if self.batch.is_empty() {
                self.batch.clear();
            }
        }
    }

    /// Bytes of an incomplete frame received so far (non-zero: a frame is arriving).
    pub(crate) fn read_buffered(&self) -> usize {
        self.frames.read_buffer().len()
    }

    /// Bytes taken from the outbox and not yet written (non-zero: the peer is not
    /// reading as fast as answers are produced).
    pub(crate) fn pending_write(&self) -> usize {
        self.batch.len()
    }

    /// Whether any bytes were written since the last call.
    pub(crate) fn take_progress(&mut self) -> bool {
        std::mem::take(&mut self.progressed)
    }

    /// Writes what is left in `outbox` (which the caller has closed), then shuts the
    /// write direction down.
    pub(crate) async fn finish(&mut self, outbox: &Outbox) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write(cx, outbox)).await?;
        self.writer.shutdown().await
    }
}
