//! Streaming calls: [`Streaming<T>`], a stream of items that can cross the wire, and the
//! per-call flow control behind it.
//!
//! A method returning `Streaming<T>` streams its answer (server streaming); a method
//! taking one `Streaming<T>` argument streams its request (client streaming); both make it
//! bidirectional. Items travel as `STREAM_ITEM` frames interleaved with every other call
//! on the connection. Each direction of each call has a credit window ([`flow`]): a sender
//! stops when it runs out, and the receiver grants more (`WINDOW_UPDATE`) as its consumer
//! reads. So a slow consumer makes the producer wait, memory per stream stays bounded by
//! the window, and a bulk transfer can never queue more than its window ahead of a small
//! call on the same connection.
//!
//! - this module: [`Streaming<T>`] and the receiving end a consumer polls;
//! - [`flow`]: the credit of one stream in each direction ([`Inbound`], [`Outbound`]);
//! - [`send`]: [`send_items`], the loop that sends a stream within its credit;
//! - [`table`]: [`StreamTable`], a connection's streams by call id.

mod flow;
mod send;
mod table;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::time::{Instant, Sleep};

use crate::client::Method;
use crate::codec;
use crate::error::RpcError;
use crate::outbox::Outbox;
use crate::protocol::{kind, status, PayloadCodec, ResponseFrame};

use flow::Next;
pub(crate) use flow::{Flow, Inbound, Outbound, Pushed};
pub(crate) use send::{send_items, send_items_with, Sent};
pub(crate) use table::StreamTable;

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
                Poll::Ready(Some(Ok(bytes))) if remote.json => {
                    Poll::Ready(Some(remote.decode_json(&bytes)))
                }
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
        codec: PayloadCodec,
    ) -> Self {
        Streaming {
            source: Source::Remote(Remote {
                inbound,
                peer,
                id,
                method,
                json: codec == PayloadCodec::Json,
                deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
                ended: false,
            }),
        }
    }

    /// The next item of a received stream as its payload, undecoded (`None` once it has
    /// ended); a local stream has no payloads and ends at once.
    pub(crate) fn poll_payload(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, RpcError>>> {
        match &mut self.source {
            Source::Remote(remote) => match remote.poll_next(cx) {
                Poll::Ready(Some(Err(e))) => {
                    self.source = Source::Done;
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    self.source = Source::Done;
                    Poll::Ready(None)
                }
                other => other,
            },
            Source::Local(_) | Source::Done => Poll::Ready(None),
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
            // Items received in JSON by name (version 6, the sender's schema differs)
            // are not this side's bincode: forwarding their bytes would make the next
            // peer misread them, so the stream ends with a typed error instead. Decode
            // the items (`map`) to forward them.
            Source::Remote(remote) if remote.json => {
                self.source = Source::Done;
                Poll::Ready(Some(Err(RpcError::SchemaMismatch {
                    message: "a stream received in JSON by name (its sender's schema \
                              differs) cannot be forwarded undecoded: map its items to \
                              forward them"
                        .into(),
                    handler_ran: true,
                })))
            }
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
    /// Items are JSON (a call in JSON by name, version 6).
    json: bool,
}

impl Remote {
    /// An item of a call in JSON by name, read with this side's types: one that does not
    /// fit them is a [`RpcError::SchemaMismatch`].
    fn decode_json<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, RpcError> {
        crate::json::decode_translated(self.method.as_ref(), "stream item", bytes)
    }

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
            Poll::Ready(Next::Item(item, compressed, grant)) => {
                if grant > 0 {
                    let _ = self.peer.outbox().push_control(
                        kind::WINDOW_UPDATE,
                        self.id,
                        &(grant as u32).to_be_bytes(),
                    );
                }
                if !compressed {
                    return Poll::Ready(Some(Ok(item)));
                }
                match crate::compression::decompress(item, self.inbound.max_item()) {
                    Ok(item) => Poll::Ready(Some(Ok(item))),
                    Err(error) => {
                        // The peer broke the protocol: the stream ends here.
                        self.ended = true;
                        self.peer.receiver_dropped(self.id);
                        Poll::Ready(Some(Err(error)))
                    }
                }
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
            // A stream ends with an empty OK; a value there is a unary method's answer
            // to a caller that took it for a stream (a tool without the types).
            StreamEnd::Response(response) if response.status == status::OK => {
                (!response.payload.is_empty()).then(|| {
                    RpcError::Protocol(
                        "the method answered with one value, not a stream: it is unary".into(),
                    )
                })
            }
            StreamEnd::Response(response) => Some(match &self.method {
                Some(method) => {
                    crate::client::status_error(method, response.status, &response.payload)
                }
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
            // Nobody will consume what is queued: a connection waiting for room in it
            // reads on (the items are dropped with the stream).
            self.inbound.end(StreamEnd::Error(RpcError::Cancelled));
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
