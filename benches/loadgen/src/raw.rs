//! The ceiling: a pipelined echo over `LengthDelimitedCodec` with no RPC framework. Each
//! frame is an 8-byte id plus the payload; no serde, no task per call.
//!
//! Two variants: `raw` writes each frame with `SinkExt::send` (a write and a flush per
//! frame: the straightforward echo), `raw-batched` flushes only when no further frame is
//! ready to read (hand-tuned write coalescing: the lowest cost any framework could reach).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::{Phase, WorkerResult};

/// Length-delimited frames up to 64 MiB (the hand-written RPC's too).
pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(64 * 1024 * 1024)
        .new_codec()
}

/// Serves the raw echo on `listener` until the process is killed.
pub async fn serve(listener: TcpListener, batched: bool) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            let mut reader = FramedRead::new(r, codec());
            let mut writer = FramedWrite::new(w, codec());
            let mut next = reader.next().await;
            while let Some(Ok(frame)) = next {
                if writer.feed(frame.freeze()).await.is_err() {
                    return;
                }
                // Flush once no further frame is already waiting (batched), or every time.
                next = match ready_now(&mut reader, batched) {
                    Some(frame) => frame,
                    None => {
                        if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
                            return;
                        }
                        reader.next().await
                    }
                };
            }
        });
    }
}

/// Keeps `in_flight` frames of `payload` bytes in flight on one connection.
pub async fn client(
    stream: TcpStream,
    in_flight: usize,
    payload: usize,
    batched: bool,
    phase: Arc<AtomicU8>,
) -> Result<WorkerResult> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut reader = FramedRead::new(r, codec());
    let mut writer = FramedWrite::new(w, codec());
    let body = vec![0x5au8; payload];
    let frame = |id: u64| {
        let mut f = BytesMut::with_capacity(8 + payload);
        f.put_u64(id);
        f.put_slice(&body);
        f.freeze()
    };
    let mut sent_at = Vec::with_capacity(in_flight);
    for slot in 0..in_flight {
        sent_at.push(Instant::now());
        writer.feed(frame(slot as u64)).await?;
    }
    SinkExt::<Bytes>::flush(&mut writer).await?;
    let mut result = WorkerResult::new();
    let mut next = reader.next().await;
    loop {
        let Some(Ok(response)) = next else { break };
        let slot = u64::from_be_bytes(response[..8].try_into()?) as usize;
        let now = Instant::now();
        let current = phase.load(Ordering::Relaxed);
        if current == Phase::Measure as u8 {
            result.record(now - sent_at[slot], payload);
        } else if current == Phase::Stop as u8 {
            break;
        }
        sent_at[slot] = now;
        writer.feed(frame(slot as u64)).await?;
        // Batched: flush only when no further response is already waiting.
        next = match ready_now(&mut reader, batched) {
            Some(frame) => frame,
            None => {
                SinkExt::<Bytes>::flush(&mut writer).await?;
                reader.next().await
            }
        };
    }
    Ok(result)
}

/// The next frame if it is already buffered, when batching; `None` means "flush first".
/// Never polls when not batching, so no frame is taken and dropped.
pub(crate) fn ready_now<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FramedRead<R, LengthDelimitedCodec>,
    batched: bool,
) -> Option<Option<std::io::Result<BytesMut>>> {
    if batched {
        reader.next().now_or_never()
    } else {
        None
    }
}
