//! The byte side of a connection, driven by the connection's one task: frames in through
//! tokio-util's `LengthDelimitedCodec` (behind a check that names an oversized frame's
//! size), the [`Outbox`] out with non-blocking batched writes. Reading and writing in the
//! same task means the answers to a batch of frames read together are written together,
//! with no hop to another task.
//!
//! Buffers grown for a large frame are released once it has passed, in both directions,
//! so a connection that once carried a 15 MiB answer does not keep 15 MiB.
//!
//! Writes are coalesced: when other tasks are about to queue frames too (callers woken by
//! the answers just read, handlers running on their own tasks), the first write after a
//! wake-up waits, once, until this worker thread has run every other task that is ready
//! (`tokio::task::yield_now`'s deferred wake), so that their frames leave in the same
//! write. Without it, each caller's request woke the task and went out alone: at 64 calls
//! in flight, about 2 requests per `send` and 0.4x the calls/s of a hand-written RPC
//! (benches/README.md, "Write coalescing").

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};

use crate::outbox::Outbox;
use crate::protocol::LENGTH_PREFIX_LEN;

/// A buffer whose allocation grew past this is released instead of kept for reuse.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// Initial capacity of the read buffer (it grows to fit larger frames).
const READ_CAPACITY: usize = 4 * 1024;

/// Why reading a frame failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer announced a frame over this side's limit (the body was not read).
    TooLarge {
        /// The announced body length.
        size: usize,
        /// This side's limit.
        limit: usize,
    },
    /// The stream failed.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        ReadError::Io(error)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge { size, limit } => write!(
                f,
                "the peer sent a frame of {size} bytes, over this side's limit of {limit} bytes"
            ),
            ReadError::Io(error) => write!(f, "read failed: {error}"),
        }
    }
}

/// `LengthDelimitedCodec` with defaults, which first checks the length prefix against
/// the limit itself so that the error can say how large the frame was.
struct FrameCodec {
    inner: LengthDelimitedCodec,
    limit: usize,
    /// The inner codec took a frame's length prefix and waits for its body, so the
    /// buffer does not start with a prefix.
    in_body: bool,
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = ReadError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, ReadError> {
        if !self.in_body {
            if let Some(prefix) = src.get(..LENGTH_PREFIX_LEN) {
                let size =
                    u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
                if size > self.limit {
                    return Err(ReadError::TooLarge {
                        size,
                        limit: self.limit,
                    });
                }
            }
        }
        let before = src.len();
        let frame = self.inner.decode(src)?;
        // A frame taken: the next bytes are a prefix. None after the inner codec consumed
        // a prefix: the next bytes are its body.
        self.in_body = frame.is_none() && (self.in_body || src.len() < before);
        Ok(frame)
    }
}

/// A reader that notes whether any bytes arrived since it was last asked: liveness
/// counts the bytes of a frame still arriving, not only complete frames.
struct NoteArrivals<R> {
    inner: R,
    arrived: bool,
}

impl<R: AsyncRead + Unpin> AsyncRead for NoteArrivals<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.arrived = true;
        }
        read
    }
}

/// Reads frames and writes an outbox's batches on one stream.
pub(crate) struct FrameIo<R, W> {
    frames: FramedRead<NoteArrivals<R>, FrameCodec>,
    writer: W,
    /// Bytes taken from the outbox and not yet fully written.
    batch: BytesMut,
    /// The capacity `batch` had when it was taken (advancing shrinks what `capacity`
    /// reports, not the allocation).
    batch_allocation: usize,
    /// A frame larger than [`KEEP_CAPACITY`] was read: release the read buffer once it
    /// is empty.
    shrink_read_buffer: bool,
    /// Whether bytes were written since the last flush.
    unflushed: bool,
    /// Whether bytes were written since [`FrameIo::take_progress`] last asked.
    progressed: bool,
    /// The last write was held back for others' frames (it goes out at the next call).
    held: bool,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> FrameIo<R, W> {
    /// Frames of up to `max_frame_size` bytes are read from `reader`.
    pub(crate) fn new(reader: R, writer: W, max_frame_size: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .max_frame_length(max_frame_size)
            .new_codec();
        let codec = FrameCodec {
            inner,
            limit: max_frame_size,
            in_body: false,
        };
        FrameIo {
            frames: FramedRead::with_capacity(
                NoteArrivals {
                    inner: reader,
                    arrived: false,
                },
                codec,
                READ_CAPACITY,
            ),
            writer,
            batch: BytesMut::new(),
            batch_allocation: 0,
            shrink_read_buffer: false,
            unflushed: false,
            progressed: false,
            held: false,
        }
    }

    /// The next frame body.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BytesMut, ReadError>>> {
        if self.shrink_read_buffer && self.frames.read_buffer().is_empty() {
            *self.frames.read_buffer_mut() = BytesMut::with_capacity(READ_CAPACITY);
            self.shrink_read_buffer = false;
        }
        let next = Pin::new(&mut self.frames).poll_next(cx);
        if let Poll::Ready(Some(Ok(frame))) = &next {
            if frame.len() > KEEP_CAPACITY {
                self.shrink_read_buffer = true;
            }
        }
        next
    }

    /// Writes everything queued in `outbox` without blocking, telling the outbox what was
    /// written. Ready once nothing is left to write (the outbox's waker is registered, so
    /// new frames wake the task); `Ok(true)` then means the outbox is closed and drained.
    ///
    /// With `coalesce` (other tasks are likely to queue frames soon), a write that would
    /// start a new batch is held back once: the task is woken again when its worker thread
    /// has run the other ready tasks, and the next call writes (see the module docs).
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        outbox: &Outbox,
        coalesce: bool,
    ) -> Poll<io::Result<bool>> {
        if std::mem::take(&mut self.held) {
            // Held once already: write now.
        } else if coalesce && self.batch.is_empty() && outbox.unwritten() > 0 {
            self.held = true;
            outbox.register(cx.waker());
            // Registers a wake-up for when the worker has run every other ready task
            // (at once outside a tokio runtime).
            let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
            return Poll::Pending;
        }
        loop {
            if self.batch.is_empty() {
                if self.batch_allocation > KEEP_CAPACITY {
                    self.batch = BytesMut::new();
                }
                outbox.register(cx.waker());
                let (any, closed) = outbox.take(&mut self.batch);
                if !any {
                    self.batch_allocation = self.batch.capacity();
                    if self.unflushed {
                        ready!(Pin::new(&mut self.writer).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Ready(Ok(closed));
                }
                self.batch_allocation = self.batch.capacity();
            }
            let written = ready!(Pin::new(&mut self.writer).poll_write(cx, &self.batch))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.batch.advance(written);
            outbox.written(written);
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

    /// Whether any bytes arrived from the peer since the last call (part of a frame
    /// counts): the peer is alive, whatever it is sending.
    pub(crate) fn take_arrivals(&mut self) -> bool {
        std::mem::take(&mut self.frames.get_mut().arrived)
    }

    /// Writes what is left in `outbox` (which the caller has closed), then shuts the
    /// write direction down.
    pub(crate) async fn finish(&mut self, outbox: &Outbox) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write(cx, outbox, false)).await?;
        self.writer.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records the size of every write it is given.
    #[derive(Clone, Default)]
    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<usize>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Queues one frame, then lets three other ready tasks queue one each while the
    /// writer writes what it has: the sizes of the writes it made.
    async fn writes_with_three_more_ready(coalesce: bool) -> Vec<usize> {
        let outbox = std::sync::Arc::new(Outbox::new(
            1 << 20,
            crate::protocol::FrameLayout::Compact,
            None,
            1 << 20,
        ));
        let recorder = Recorder::default();
        let mut io = FrameIo::new(tokio::io::empty(), recorder.clone(), 1 << 20);
        outbox
            .push_control(crate::protocol::kind::PING, 0, &[0; 8])
            .unwrap();
        let others: Vec<_> = (1..=3)
            .map(|i| {
                let outbox = std::sync::Arc::clone(&outbox);
                tokio::spawn(async move {
                    outbox
                        .push_control(crate::protocol::kind::PING, i, &[0; 8])
                        .unwrap();
                })
            })
            .collect();
        std::future::poll_fn(|cx| io.poll_write(cx, &outbox, coalesce))
            .await
            .unwrap();
        for other in others {
            other.await.unwrap();
        }
        std::future::poll_fn(|cx| io.poll_write(cx, &outbox, false))
            .await
            .unwrap();
        let writes = recorder.0.lock().unwrap().clone();
        assert_eq!(writes.iter().sum::<usize>(), 4 * writes_of_one_ping());
        writes
    }

    fn writes_of_one_ping() -> usize {
        // Length prefix, kind, flags, a one-byte varint id, 8 bytes of data.
        4 + 1 + 1 + 1 + 8
    }

    #[tokio::test]
    async fn a_coalescing_write_waits_for_the_other_ready_tasks_frames() {
        assert_eq!(
            writes_with_three_more_ready(true).await,
            [4 * writes_of_one_ping()]
        );
        // Without, the first frame leaves alone.
        assert_eq!(
            writes_with_three_more_ready(false).await[0],
            writes_of_one_ping()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_coalescing_write_waits_on_a_multi_thread_runtime_too() {
        // The spawned tasks may also run on the other worker; all that is promised is
        // that the held write goes out, with everything queued by then.
        let writes = writes_with_three_more_ready(true).await;
        assert!(!writes.is_empty() && writes.len() <= 2, "{writes:?}");
    }

    #[tokio::test]
    async fn frames_split_across_reads_decode() {
        let (client, server) = tokio::io::duplex(64);
        let (_client_read, mut client_write) = tokio::io::split(client);
        let (server_read, server_write) = tokio::io::split(server);
        let mut io = FrameIo::new(server_read, server_write, 1000);
        // A 600-byte body whose bytes would read as an oversized length prefix, sent in
        // pieces smaller than the pipe.
        let body = vec![0xffu8; 600];
        let writer = tokio::spawn(async move {
            client_write.write_all(&600u32.to_be_bytes()).await.unwrap();
            for chunk in body.chunks(50) {
                client_write.write_all(chunk).await.unwrap();
            }
            client_write
        });
        let frame = std::future::poll_fn(|cx| io.poll_frame(cx)).await;
        assert_eq!(frame.unwrap().unwrap().len(), 600);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_named_by_its_size() {
        let (client, server) = tokio::io::duplex(1024);
        let (_client_read, mut client_write) = tokio::io::split(client);
        let (server_read, server_write) = tokio::io::split(server);
        let mut io = FrameIo::new(server_read, server_write, 100);
        client_write
            .write_all(&[0, 0, 1, 0, 1, 2, 3])
            .await
            .unwrap();
        let next = std::future::poll_fn(|cx| io.poll_frame(cx)).await;
        match next {
            Some(Err(ReadError::TooLarge { size, limit })) => {
                assert_eq!((size, limit), (256, 100));
            }
            other => panic!("{other:?}"),
        }
    }
}
