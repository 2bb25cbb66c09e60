//! The floor a framework with this API can reach: a hand-written pipelined RPC, the mode
//! `handrpc`. Its client has the generated client's shape (independent caller tasks,
//! each awaiting its own call), built the way one would write it by hand: a writer task
//! fed by a channel, a reader task, a map of pending oneshots, frames `[id u64][method
//! u8][body]` over `LengthDelimitedCodec`, no serde, no deadlines, no cancellation. Its
//! server reads frames, answers each in place (`[id][body]`) and flushes when no further
//! frame is ready.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::raw::{self, codec};
use crate::WorkerResult;

/// The one method: echo.
const ECHO: u8 = 1;

/// Serves the hand-written RPC on `listener` until the process is killed.
pub async fn serve(listener: TcpListener) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            let mut reader = FramedRead::new(r, codec());
            let mut writer = FramedWrite::new(w, codec());
            let mut next = reader.next().await;
            while let Some(Ok(mut frame)) = next {
                if frame.len() < 9 {
                    return;
                }
                let id = frame.get_u64();
                let method = frame.get_u8();
                if method != ECHO {
                    return;
                }
                let mut answer = BytesMut::with_capacity(8 + frame.len());
                answer.put_u64(id);
                answer.put_slice(&frame);
                if writer.feed(answer.freeze()).await.is_err() {
                    return;
                }
                next = match raw::ready_now(&mut reader, true) {
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

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

/// One connection of the hand-written client.
#[derive(Clone)]
struct HandClient {
    outbox: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl HandClient {
    async fn connect(addr: SocketAddr) -> Result<HandClient> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let (outbox, mut queued) = mpsc::unbounded_channel::<Bytes>();
        let pending: Pending = Arc::default();
        // The writer: feeds what is queued, flushes when the queue is empty.
        tokio::spawn(async move {
            let mut writer = FramedWrite::new(w, codec());
            while let Some(frame) = queued.recv().await {
                if writer.feed(frame).await.is_err() {
                    return;
                }
                while let Ok(frame) = queued.try_recv() {
                    if writer.feed(frame).await.is_err() {
                        return;
                    }
                }
                if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
                    return;
                }
            }
        });
        // The reader: completes each call's oneshot.
        let answers = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut reader = FramedRead::new(r, codec());
            while let Some(Ok(mut frame)) = reader.next().await {
                if frame.len() < 8 {
                    return;
                }
                let id = frame.get_u64();
                let waiting = answers.lock().unwrap().remove(&id);
                if let Some(waiting) = waiting {
                    let _ = waiting.send(frame.freeze());
                }
            }
        });
        Ok(HandClient {
            outbox,
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// One call: echo `body`, answered with the body.
    async fn echo(&self, body: &[u8]) -> Result<Bytes> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, answer);
        let mut frame = BytesMut::with_capacity(9 + body.len());
        frame.put_u64(id);
        frame.put_u8(ECHO);
        frame.put_slice(body);
        self.outbox
            .send(frame.freeze())
            .map_err(|_| anyhow::anyhow!("connection closed"))?;
        Ok(answered.await?)
    }
}

/// Opens `connections` connections and runs `concurrency` callers spread across them.
pub async fn client(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    payload: usize,
    phase: Arc<AtomicU8>,
) -> Result<Vec<tokio::task::JoinHandle<Result<WorkerResult>>>> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(HandClient::connect(addr).await?);
    }
    Ok((0..concurrency)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let phase = Arc::clone(&phase);
            tokio::spawn(async move {
                let mut result = WorkerResult::new();
                let body = vec![0x5au8; payload];
                loop {
                    let started = Instant::now();
                    let back = client.echo(&body).await?;
                    anyhow::ensure!(back.len() == payload, "short echo");
                    if result.account(&phase, started, payload) {
                        return Ok(result);
                    }
                }
            })
        })
        .collect())
}
