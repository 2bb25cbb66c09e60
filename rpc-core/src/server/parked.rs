//! Requests read while a connection is at its in-flight limit, waiting for a slot.
//!
//! At the limit the connection goes on reading, so the control frames behind the requests
//! (PING, PONG, CANCEL, WINDOW_UPDATE, ...) are seen and a busy client is never judged
//! dead; it stops *starting* calls instead, and parks what it reads here, oldest first.
//! Only when this is full does it stop reading, and that pause is its own choice, which
//! no timer charges to the peer.

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::protocol::RequestFrame;

/// Parked requests, with the time each arrived (its deadline runs from then), bounded by
/// count and by payload bytes.
pub(super) struct Parked {
    requests: VecDeque<(RequestFrame, Instant)>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Parked {
    /// At most `max_count` requests and `max_bytes` of payload (one request is always
    /// taken, whatever its size).
    pub(super) fn new(max_count: usize, max_bytes: usize) -> Self {
        Parked {
            requests: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Whether no other request may be parked: the connection stops reading (or, while
    /// streams need it read, refuses what it reads).
    pub(super) fn is_full(&self) -> bool {
        self.requests.len() >= self.max_count
            || (!self.requests.is_empty() && self.bytes >= self.max_bytes)
    }

    /// Parks `request`, which arrived at `arrived`.
    pub(super) fn push(&mut self, request: RequestFrame, arrived: Instant) {
        self.bytes += request.payload.len();
        self.requests.push_back((request, arrived));
    }

    /// The oldest parked request.
    pub(super) fn pop(&mut self) -> Option<(RequestFrame, Instant)> {
        let (request, arrived) = self.requests.pop_front()?;
        self.bytes -= request.payload.len();
        Some((request, arrived))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Metadata;
    use crate::protocol::{Binding, WireStr};
    use bytes::Bytes;

    fn request(id: u64, payload: usize) -> RequestFrame {
        RequestFrame {
            id,
            flags: 0,
            budget_micros: 0,
            service: WireStr::from_static("S"),
            method: WireStr::from_static("m"),
            binding: Binding::Inline,
            compressed: false,
            metadata: Metadata::new(),
            payload: Bytes::from(vec![0; payload]),
        }
    }

    #[test]
    fn parked_requests_leave_oldest_first_and_the_bounds_hold() {
        let now = Instant::now();
        let mut parked = Parked::new(3, 100);
        assert!(parked.is_empty() && !parked.is_full());
        parked.push(request(1, 10), now);
        parked.push(request(2, 10), now);
        assert!(!parked.is_full());
        parked.push(request(3, 10), now);
        assert!(parked.is_full(), "by count");
        assert_eq!(parked.pop().unwrap().0.id, 1);
        assert!(!parked.is_full());
        // By bytes: one large request fills it, but is always taken.
        let mut parked = Parked::new(10, 100);
        parked.push(request(4, 500), now);
        assert!(parked.is_full(), "by bytes");
        assert_eq!(parked.pop().unwrap().0.id, 4);
        assert!(parked.is_empty() && !parked.is_full());
    }
}
