//! Streaming calls: [`Streaming<T>`], a stream of items that can cross the wire, and the
//! per-call flow control behind it.
//!
//! A method returning `Streaming<T>` streams its answer (server streaming); a method
//! taking one `Streaming<T>` argument streams its request (client streaming); both make it
//! bidirectional. Items travel as `STREAM_ITEM` frames interleaved with every other call
//! on the connection. Each direction of each call has a credit window
//! ([`INITIAL_STREAM_WINDOW`] bytes): a sender stops when it runs out, and the receiver
//! grants more (`WINDOW_UPDATE`) as its consumer reads. So a slow consumer makes the
//! producer wait, memory per stream stays bounded by the window, and a bulk transfer can
//! never queue more than its window ahead of a small call on the same connection.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::client::Method;
use crate::codec;
use crate::error::RpcError;
use crate::outbox::Outbox;
use crate::protocol::{kind, status, ResponseFrame, HEADER_LEN, INITIAL_STREAM_WINDOW};
use crate::util::IdHasher;

/// A stream of `T` that can cross the wire: the type of a streaming method's argument or
/// return value.
///
/// Build one from any stream ([`Streaming::from_stream`], [`Streaming::from_results`],
/// [`Streaming::iter`], or `collect()`); consume one with `futures::StreamExt`. A received stream
/// yields `Ok(item)`s, then ends; it yields one `Err` first if it ended with an error
/// (the producer aborted, the deadline passed, the connection was lost). Dropping a
/// received stream before its end tells the producer to stop.
pub struct Streaming<T> {
    source: Source<T>,
}

enum Source<T> {
    /// Items produced in this process.
    Local(Pin<Box<dyn Stream<Item = Result<T, RpcError>> + Send>>),
    /// Items arriving from the peer.
    Remote(Remote),
    /// Ended.
    Done,
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            Source::Local(_) => "local",
            Source::Remote(_) => "remote",
            Source::Done => "done",
        };
        f.debug_struct("Streaming").field("source", &kind).finish()
    }
}

impl<T: Send + 'static> Streaming<T> {
    /// A stream of the items `stream` yields.
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        Self::from_results(stream.map(Ok))
    }

    /// A stream of the items `stream` yields; an `Err` ends it with that error, which the
    /// receiver sees as its last item (`RpcError::Aborted` with the error's message).
    pub fn from_results<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<T, RpcError>> + Send + 'static,
    {
        Streaming {
            source: Source::Local(Box::pin(stream)),
        }
    }

    /// A stream of the items of `iter`, taken lazily as the receiver grants credit.
    pub fn iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::from_stream(futures::stream::iter(iter))
    }

    /// A stream with no items.
    pub fn empty() -> Self {
        Self::iter(std::iter::empty())
    }
}

/// `iter.collect::<Streaming<T>>()`: a stream of the collected items.
impl<T: Send + 'static> FromIterator<T> for Streaming<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Streaming::iter(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<T: DeserializeOwned + Send + 'static> Stream for Streaming<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match &mut this.source {
            Source::Done => Poll::Ready(None),
            Source::Local(stream) => match stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => Poll::Ready(Some(Ok(item))),
                Poll::Ready(Some(Err(e))) => {
                    this.source = Source::Done;
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    this.source = Source::Done;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
            Source::Remote(remote) => match remote.poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(codec::decode(&bytes))),
                Poll::Ready(Some(Err(e))) => {
                    this.source = Source::Done;
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    this.source = Source::Done;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T> Streaming<T> {
    /// A stream whose items arrive from the peer on call `id`.
    pub(crate) fn remote(
        inbound: Arc<Inbound>,
        peer: Arc<dyn StreamPeer>,
        id: u64,
        method: Option<Method>,
        deadline: Option<Instant>,
    ) -> Self {
        Streaming {
            source: Source::Remote(Remote {
                inbound,
                peer,
                id,
                method,
                deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
                ended: false,
            }),
        }
    }

    /// The next item to send: a value of this process, or the still-encoded bytes of a
    /// received stream being forwarded (no decode and re-encode).
    fn poll_outgoing(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Outgoing<T>, RpcError>>> {
        match &mut self.source {
            Source::Local(stream) => stream
                .as_mut()
                .poll_next(cx)
                .map(|next| next.map(|r| r.map(Outgoing::Value))),
            Source::Remote(remote) => remote
                .poll_next(cx)
                .map(|next| next.map(|r| r.map(Outgoing::Encoded))),
            Source::Done => Poll::Ready(None),
        }
    }
}

/// An item on its way out.
enum Outgoing<T> {
    Value(T),
    Encoded(Bytes),
}

/// The connection a received stream belongs to.
pub(crate) trait StreamPeer: Send + Sync + 'static {
    /// The connection's outbox, for `WINDOW_UPDATE`s.
    fn outbox(&self) -> &Outbox;
    /// The receiving side of call `id`'s stream was dropped before the stream ended.
    fn receiver_dropped(&self, id: u64);
    /// The largest frame this side accepts (the bound on one item).
    fn max_frame_size(&self) -> usize;
}

/// The receiving half of a stream as its consumer sees it.
struct Remote {
    inbound: Arc<Inbound>,
    peer: Arc<dyn StreamPeer>,
    id: u64,
    /// The method, on the client (for naming errors in the final `RESPONSE`).
    method: Option<Method>,
    /// The call's deadline, on the client: it covers the whole stream.
    deadline: Option<Pin<Box<Sleep>>>,
    ended: bool,
}

impl Remote {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RpcError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // The deadline covers the whole stream, even one whose items never stop coming.
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                self.ended = true;
                self.peer.receiver_dropped(self.id);
                return Poll::Ready(Some(Err(RpcError::DeadlineExceeded)));
            }
        }
        match self.inbound.poll_next(cx) {
            Poll::Ready(Next::Item(item, grant)) => {
                if grant > 0 {
                    let _ = self.peer.outbox().push_control(
                        kind::WINDOW_UPDATE,
                        self.id,
                        &(grant as u32).to_be_bytes(),
                    );
                }
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Ready(Next::End(end)) => {
                self.ended = true;
                match self.end_error(end) {
                    Some(error) => Poll::Ready(Some(Err(error))),
                    None => Poll::Ready(None),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The error a stream ended with, if it did not end normally.
    fn end_error(&self, end: StreamEnd) -> Option<RpcError> {
        match end {
            StreamEnd::Response(response) if response.status == status::OK => None,
            StreamEnd::Response(response) => Some(match &self.method {
                Some(method) => crate::client::status_error(
                    method,
                    response.status,
                    &response.payload,
                    self.peer.max_frame_size(),
                ),
                None => RpcError::Protocol("unexpected response on a stream".into()),
            }),
            StreamEnd::Status {
                status: status::OK, ..
            } => None,
            StreamEnd::Status {
                status: status::ABORTED,
                message,
            } => Some(RpcError::Aborted { message }),
            StreamEnd::Status { status, message } => Some(RpcError::Remote { status, message }),
            StreamEnd::Error(error) => Some(error),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if !self.ended {
            self.peer.receiver_dropped(self.id);
        }
    }
}

/// How a received stream ended.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// The call's `RESPONSE` (client side: it ends the server's stream).
    Response(ResponseFrame),
    /// A `STREAM_END` (server side: the client's stream ended).
    Status { status: u8, message: String },
    /// The connection failed or the call was dropped.
    Error(RpcError),
}

/// What [`Inbound::poll_next`] yields.
enum Next {
    /// An item, and how many bytes to grant back to the sender now (0: none yet).
    Item(Bytes, usize),
    End(StreamEnd),
}

/// Items received for one call's stream and not yet consumed.
pub(crate) struct Inbound {
    state: Mutex<InboundState>,
}

struct InboundState {
    items: VecDeque<Bytes>,
    /// Bytes received and not yet granted back: the sender's used credit.
    outstanding: usize,
    /// Bytes consumed and not yet granted back.
    unacked: usize,
    /// Past this many outstanding bytes the sender broke flow control.
    limit: usize,
    end: Option<StreamEnd>,
    waker: Option<Waker>,
}

impl Inbound {
    /// A stream whose items are at most `max_item` bytes.
    pub(crate) fn new(max_item: usize) -> Self {
        Inbound {
            state: Mutex::new(InboundState {
                items: VecDeque::new(),
                outstanding: 0,
                unacked: 0,
                limit: INITIAL_STREAM_WINDOW as usize + max_item,
                end: None,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboundState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an item from the sender; an error means it exceeded its credit.
    pub(crate) fn push(&self, item: Bytes) -> Result<(), RpcError> {
        let mut state = self.lock();
        if state.end.is_some() {
            return Ok(());
        }
        state.outstanding += item.len();
        if state.outstanding > state.limit {
            return Err(RpcError::Protocol(format!(
                "a stream exceeded its flow-control window ({} bytes outstanding)",
                state.outstanding
            )));
        }
        state.items.push_back(item);
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
        Ok(())
    }

    /// Ends the stream (the first end wins); queued items are still delivered.
    pub(crate) fn end(&self, end: StreamEnd) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut state = self.lock();
        if let Some(item) = state.items.pop_front() {
            state.unacked += item.len();
            let grant = if state.unacked >= INITIAL_STREAM_WINDOW as usize / 2 {
                let grant = state.unacked;
                state.outstanding -= grant;
                state.unacked = 0;
                grant
            } else {
                0
            };
            return Poll::Ready(Next::Item(item, grant));
        }
        if let Some(end) = state.end.take() {
            return Poll::Ready(Next::End(end));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The credit of one call's outgoing stream.
pub(crate) struct Outbound {
    state: Mutex<OutboundState>,
}

struct OutboundState {
    /// Bytes that may still be sent (may dip below zero by one item).
    credit: i64,
    /// The receiver no longer wants items, or the call ended.
    stopped: bool,
    waker: Option<Waker>,
}

impl Outbound {
    pub(crate) fn new() -> Self {
        Outbound {
            state: Mutex::new(OutboundState {
                credit: INITIAL_STREAM_WINDOW as i64,
                stopped: false,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboundState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(mut state: MutexGuard<'_, OutboundState>) {
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }

    /// The receiver granted `increment` more bytes.
    pub(crate) fn grant(&self, increment: u32) {
        let mut state = self.lock();
        state.credit = state.credit.saturating_add(increment as i64);
        Self::wake(state);
    }

    /// The receiver wants no more items, or the call is over.
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        Self::wake(state);
    }

    /// `Ready(true)` when an item may be sent, `Ready(false)` once stopped.
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if state.stopped {
            return Poll::Ready(false);
        }
        if state.credit > 0 {
            return Poll::Ready(true);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Registers `cx` to be woken by a stop while the source is pending.
    fn watch_stop(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.lock();
        if state.stopped {
            return true;
        }
        state.waker = Some(cx.waker().clone());
        false
    }

    fn consume(&self, bytes: usize) {
        self.lock().credit -= bytes as i64;
    }
}

/// How sending a stream ended.
pub(crate) enum Sent {
    /// Every item was sent.
    All,
    /// The receiver asked to stop, or the call ended first.
    Stopped,
}

/// Sends `source`'s items on call `id` as `STREAM_ITEM` frames, within `outbound`'s
/// credit. An `Err` from the source, or from encoding, is returned as it is.
pub(crate) async fn send_items<T: Serialize>(
    source: &mut Streaming<T>,
    outbox: &Outbox,
    outbound: &Outbound,
    id: u64,
) -> Result<Sent, RpcError> {
    loop {
        // Credit first: a producer without credit is not even asked for its next item.
        if !std::future::poll_fn(|cx| outbound.poll_ready(cx)).await {
            return Ok(Sent::Stopped);
        }
        let next = std::future::poll_fn(|cx| match source.poll_outgoing(cx) {
            Poll::Pending if outbound.watch_stop(cx) => Poll::Ready(None::<Option<_>>),
            Poll::Pending => Poll::Pending,
            Poll::Ready(item) => Poll::Ready(Some(item)),
        })
        .await;
        let item = match next {
            None => return Ok(Sent::Stopped),
            Some(None) => return Ok(Sent::All),
            Some(Some(Err(e))) => return Err(e),
            Some(Some(Ok(item))) => item,
        };
        let size = outbox.push(
            kind::STREAM_ITEM,
            0,
            id,
            |_| {},
            |buf| match &item {
                Outgoing::Value(value) => codec::encode_into(value, buf),
                Outgoing::Encoded(bytes) => {
                    bytes::BufMut::put_slice(buf, bytes);
                    Ok(())
                }
            },
        )?;
        outbound.consume(size - HEADER_LEN);
    }
}

/// The streams of one connection, by call id: received items waiting for their consumer,
/// and the credit of streams being sent.
#[derive(Default)]
pub(crate) struct StreamTable {
    entries: Mutex<HashMap<u64, StreamEntry, BuildHasherDefault<IdHasher>>>,
    /// Number of entries, read without the lock on the unary hot path.
    count: AtomicUsize,
}

#[derive(Default)]
struct StreamEntry {
    inbound: Option<Arc<Inbound>>,
    outbound: Option<Arc<Outbound>>,
}

impl StreamTable {
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
        let outbound = Arc::new(Outbound::new());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_grants_credit_back_as_items_are_consumed() {
        let inbound = Inbound::new(1024);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let item = Bytes::from(vec![0u8; 1024]);
        let window = INITIAL_STREAM_WINDOW as usize;
        for _ in 0..window / 1024 {
            inbound.push(item.clone()).unwrap();
        }
        // One more item fits (overshoot by one item), the next breaks flow control.
        inbound.push(item.clone()).unwrap();
        assert!(inbound.push(item.clone()).is_err());

        let inbound = Inbound::new(1024);
        for _ in 0..window / 1024 {
            inbound.push(item.clone()).unwrap();
        }
        let mut granted = 0;
        for _ in 0..window / 1024 {
            match inbound.poll_next(&mut cx) {
                Poll::Ready(Next::Item(_, grant)) => granted += grant,
                _ => panic!("an item is queued"),
            }
        }
        assert_eq!(granted, window, "everything consumed is granted back");
        assert!(inbound.poll_next(&mut cx).is_pending());
        inbound.end(StreamEnd::Status {
            status: status::OK,
            message: String::new(),
        });
        assert!(matches!(
            inbound.poll_next(&mut cx),
            Poll::Ready(Next::End(_))
        ));
    }

    #[test]
    fn outbound_waits_for_credit_and_stops() {
        let outbound = Outbound::new();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(outbound.poll_ready(&mut cx), Poll::Ready(true));
        outbound.consume(INITIAL_STREAM_WINDOW as usize + 10);
        assert!(outbound.poll_ready(&mut cx).is_pending());
        outbound.grant(11);
        assert_eq!(outbound.poll_ready(&mut cx), Poll::Ready(true));
        outbound.stop();
        assert_eq!(outbound.poll_ready(&mut cx), Poll::Ready(false));
    }
}
