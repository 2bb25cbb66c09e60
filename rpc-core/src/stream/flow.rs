//! The credit of one stream: [`Inbound`] (items received and not yet consumed, and the
//! credit to grant back) and [`Outbound`] (the credit left to send), sized by a
//! connection's [`Flow`].
//!
//! From protocol version 3 every item costs its whole frame: its payload plus
//! [`STREAM_ITEM_OVERHEAD`] bytes of length prefix and header, on both sides. So an item
//! with no payload (every `Streaming<()>` item) still uses credit, and what a receiver
//! queues is bounded by the window whatever the sender sends. On older connections the
//! credit counts payload bytes, as those versions specify; the receiver still measures its
//! queue with the framing, and a sender that overfills it breaks flow control.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::StreamEnd;
use crate::error::RpcError;
use crate::protocol::{INITIAL_STREAM_WINDOW, STREAM_ITEM_OVERHEAD};

/// How one connection counts stream credit (fixed at its handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flow {
    /// Credit each stream this side sends starts with: the window the peer announced.
    pub(crate) send_window: u32,
    /// The window of each stream this side receives: what it announced.
    pub(crate) receive_window: u32,
    /// Bytes charged per item on top of its payload: [`STREAM_ITEM_OVERHEAD`] from
    /// version 3, 0 before.
    pub(crate) overhead: u32,
    /// The largest item this side accepts (its maximum frame size).
    pub(crate) max_item: usize,
}

impl Flow {
    /// Version 1 and 2: fixed windows, payload bytes only.
    pub(crate) fn legacy(max_item: usize) -> Self {
        Flow {
            send_window: INITIAL_STREAM_WINDOW,
            receive_window: INITIAL_STREAM_WINDOW,
            overhead: 0,
            max_item,
        }
    }

    /// The credit an item of `payload` bytes uses.
    fn cost(&self, payload: usize) -> usize {
        payload + self.overhead as usize
    }

    /// The most a receiver holds for one stream: its window plus one maximal item (a
    /// sender may start an item with a single byte of credit left), each item counted
    /// with its framing.
    fn queue_limit(&self) -> usize {
        self.receive_window as usize + self.max_item + STREAM_ITEM_OVERHEAD
    }

    /// The most items a receiver queues for one stream: what a window holds when each
    /// item costs its framing, plus the one a sender may start past its credit. Each
    /// queued item holds memory beyond its payload (its entry, the frame it came in),
    /// so the count is bounded on its own, for every version.
    fn item_limit(&self) -> usize {
        self.receive_window as usize / STREAM_ITEM_OVERHEAD + 1
    }
}

/// What [`Inbound::push`] did with an item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; there is room for more.
    Queued,
    /// Queued, and the stream holds as many items as it may: the connection stops
    /// reading until [`Inbound::poll_room`] is ready. Only from peers of version 1 or 2,
    /// whose credit does not count items, so that it cannot tell them to stop.
    Full,
}

/// What [`Inbound::poll_next`] yields.
pub(super) enum Next {
    /// An item, and how many bytes to grant back to the sender now (0: none yet).
    Item(Bytes, bool, usize),
    End(StreamEnd),
}

/// Items received for one call's stream and not yet consumed.
pub(crate) struct Inbound {
    flow: Flow,
    state: Mutex<InboundState>,
    /// Items received so far (for observers).
    received: AtomicU64,
}

struct InboundState {
    /// Each item as it arrived, and whether it is compressed (decompressed only when
    /// consumed, so the window bounds what is held).
    items: VecDeque<(Bytes, bool)>,
    /// Credit the sender used and has not had back.
    outstanding: usize,
    /// Credit of consumed items not yet granted back.
    unacked: usize,
    /// Memory the queued items hold, each counted with its framing.
    queued: usize,
    end: Option<StreamEnd>,
    waker: Option<Waker>,
    /// The connection's task, waiting for room after [`Pushed::Full`].
    room_waker: Option<Waker>,
}

impl Inbound {
    /// A stream received under `flow`.
    pub(crate) fn new(flow: Flow) -> Self {
        Inbound {
            flow,
            received: AtomicU64::new(0),
            state: Mutex::new(InboundState {
                items: VecDeque::new(),
                outstanding: 0,
                unacked: 0,
                queued: 0,
                end: None,
                waker: None,
                room_waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboundState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an item from the sender; an error means it went past its credit (or, from
    /// an older peer, filled the queue with framing).
    pub(crate) fn push(&self, item: Bytes, compressed: bool) -> Result<Pushed, RpcError> {
        let mut state = self.lock();
        if state.end.is_some() {
            return Ok(Pushed::Queued);
        }
        state.outstanding += self.flow.cost(item.len());
        state.queued += item.len() + STREAM_ITEM_OVERHEAD;
        let window = self.flow.receive_window as usize;
        // A peer whose credit counts items (version 3 on) never queues more than the item
        // limit; an older one is stopped by not reading it ([`Pushed::Full`]), and only
        // a peer that overfills its queue even so breaks flow control.
        let items_over = if self.flow.overhead > 0 {
            state.items.len() >= self.flow.item_limit()
        } else {
            state.items.len() > self.flow.item_limit()
        };
        if state.outstanding > window + self.flow.cost(self.flow.max_item)
            || state.queued > self.flow.queue_limit()
            || items_over
        {
            return Err(RpcError::Protocol(format!(
                "a stream exceeded its flow-control window ({} bytes of credit used, {} \
                 bytes and {} items queued, window {window})",
                state.outstanding,
                state.queued,
                state.items.len()
            )));
        }
        state.items.push_back((item, compressed));
        // Only an older peer is stopped by not reading it; a newer one is bound by credit.
        let full = self.flow.overhead == 0 && state.items.len() >= self.flow.item_limit();
        self.received.fetch_add(1, Ordering::Relaxed);
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
        Ok(if full { Pushed::Full } else { Pushed::Queued })
    }

    /// Ready once the stream has room for another item (or has ended): the connection
    /// that stopped reading after [`Pushed::Full`] reads again.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.end.is_some() || state.items.len() < self.flow.item_limit() {
            return Poll::Ready(());
        }
        state.room_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The largest item this side accepts (its own frame limit): what a compressed item
    /// may decompress to.
    pub(crate) fn max_item(&self) -> usize {
        self.flow.max_item
    }

    /// Items received so far.
    pub(crate) fn items_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Ends the stream (the first end wins); queued items are still delivered.
    pub(crate) fn end(&self, end: StreamEnd) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        let room = state.room_waker.take();
        let waker = state.waker.take();
        drop(state);
        for waker in [room, waker].into_iter().flatten() {
            waker.wake();
        }
    }

    pub(super) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut state = self.lock();
        if let Some((item, compressed)) = state.items.pop_front() {
            // The connection waiting for room reads again (it was told Full at the limit,
            // so one item out is room).
            if let Some(waker) = state.room_waker.take() {
                waker.wake();
            }
            state.queued -= item.len() + STREAM_ITEM_OVERHEAD;
            state.unacked += self.flow.cost(item.len());
            let grant = if state.unacked >= self.flow.receive_window as usize / 2 {
                let grant = state.unacked;
                state.outstanding -= grant;
                state.unacked = 0;
                grant
            } else {
                0
            };
            return Poll::Ready(Next::Item(item, compressed, grant));
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
    overhead: u32,
    state: Mutex<OutboundState>,
    /// Items sent so far (for observers).
    sent: AtomicU64,
}

struct OutboundState {
    /// Bytes that may still be sent (may dip below zero by one item).
    credit: i64,
    /// The receiver no longer wants items, or the call ended.
    stopped: bool,
    waker: Option<Waker>,
}

impl Outbound {
    /// A stream sent under `flow`.
    pub(crate) fn new(flow: Flow) -> Self {
        Outbound {
            overhead: flow.overhead,
            sent: AtomicU64::new(0),
            state: Mutex::new(OutboundState {
                credit: i64::from(flow.send_window),
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
    pub(super) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<bool> {
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
    pub(super) fn watch_stop(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.lock();
        if state.stopped {
            return true;
        }
        state.waker = Some(cx.waker().clone());
        false
    }

    /// An item of `payload` bytes was sent.
    pub(super) fn consume(&self, payload: usize) {
        let cost = payload + self.overhead as usize;
        self.lock().credit -= cost as i64;
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Items sent so far.
    pub(crate) fn items_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::status;

    fn current(max_item: usize) -> Flow {
        Flow {
            send_window: INITIAL_STREAM_WINDOW,
            receive_window: INITIAL_STREAM_WINDOW,
            overhead: STREAM_ITEM_OVERHEAD as u32,
            max_item,
        }
    }

    #[test]
    fn inbound_grants_credit_back_as_items_are_consumed() {
        let flow = current(1024);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let item = Bytes::from(vec![0u8; 1024 - STREAM_ITEM_OVERHEAD]);
        let window = INITIAL_STREAM_WINDOW as usize;
        let inbound = Inbound::new(flow);
        for _ in 0..window / 1024 {
            inbound.push(item.clone(), false).unwrap();
        }
        // One more item fits (overshoot by one item), the next breaks flow control.
        inbound.push(item.clone(), false).unwrap();
        assert!(inbound.push(item.clone(), false).is_err());

        let inbound = Inbound::new(flow);
        for _ in 0..window / 1024 {
            inbound.push(item.clone(), false).unwrap();
        }
        let mut granted = 0;
        for _ in 0..window / 1024 {
            match inbound.poll_next(&mut cx) {
                Poll::Ready(Next::Item(_, _, grant)) => granted += grant,
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
    fn an_older_peers_stream_fills_at_the_item_limit_and_has_room_once_one_is_consumed() {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let flow = Flow::legacy(16 << 20);
        let legacy = Inbound::new(flow);
        for _ in 1..flow.item_limit() {
            assert_eq!(legacy.push(Bytes::new(), false).unwrap(), Pushed::Queued);
        }
        // The limit: told Full (the connection stops reading), no room until one is read.
        assert_eq!(legacy.push(Bytes::new(), false).unwrap(), Pushed::Full);
        assert!(legacy.poll_room(&mut cx).is_pending());
        assert!(matches!(
            legacy.poll_next(&mut cx),
            Poll::Ready(Next::Item(..))
        ));
        assert!(legacy.poll_room(&mut cx).is_ready());
        // A peer that keeps sending while unread breaks flow control.
        assert_eq!(legacy.push(Bytes::new(), false).unwrap(), Pushed::Full);
        assert_eq!(legacy.push(Bytes::new(), false).unwrap(), Pushed::Full);
        assert!(legacy.push(Bytes::new(), false).is_err());
        // A version 3 peer is never told Full: its credit bounds it.
        let current = Inbound::new(current(16 << 20));
        assert!((0..flow.item_limit())
            .all(|_| current.push(Bytes::new(), false).unwrap() == Pushed::Queued));
        assert!(current.push(Bytes::new(), false).is_err());
    }

    #[test]
    fn empty_items_use_credit_and_cannot_queue_without_bound() {
        // Version 3: an empty item costs its framing, so a sender runs out of credit.
        let outbound = Outbound::new(current(1024));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut sent = 0;
        while outbound.poll_ready(&mut cx) == Poll::Ready(true) {
            outbound.consume(0);
            sent += 1;
        }
        let per_window = INITIAL_STREAM_WINDOW as usize / STREAM_ITEM_OVERHEAD;
        assert!(sent <= per_window + 1, "{sent} empty items in one window");

        // A receiver takes no more than that, whatever the sender claims.
        let inbound = Inbound::new(current(1024));
        let accepted = (0..10 * per_window)
            .take_while(|_| inbound.push(Bytes::new(), false).is_ok())
            .count();
        assert!(accepted <= per_window + 1024, "{accepted}");

        // An older peer counts payload only: the receiver still bounds its queue.
        let legacy = Inbound::new(Flow::legacy(1024));
        let accepted = (0..10_000_000)
            .take_while(|_| legacy.push(Bytes::new(), false).is_ok())
            .count();
        let limit = (INITIAL_STREAM_WINDOW as usize + 1024) / STREAM_ITEM_OVERHEAD + 1;
        assert!(
            accepted <= limit,
            "{accepted} empty items from a version 2 peer"
        );
    }

    #[test]
    fn outbound_waits_for_credit_and_stops() {
        let outbound = Outbound::new(Flow::legacy(1024));
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
