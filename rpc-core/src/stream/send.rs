//! [`send_items`]: sends a [`Streaming`]'s items as `STREAM_ITEM` frames, within the
//! stream's credit and the connection's write buffer.

use std::task::Poll;

use bytes::BytesMut;
use serde::Serialize;

use super::flow::Outbound;
use super::{Outgoing, Streaming};
use crate::codec;
use crate::error::RpcError;
use crate::outbox::Outbox;
use crate::protocol::kind;

/// How sending a stream ended.
pub(crate) enum Sent {
    /// Every item was sent.
    All,
    /// The receiver asked to stop, or the call ended first.
    Stopped,
}

/// Sends `source`'s items on call `id` as `STREAM_ITEM` frames, within `outbound`'s
/// credit and the outbox's high-water mark, compressed as `compress` (the call's or
/// method's choice) and the connection say. An `Err` from the source, or from encoding
/// (a panicking `Serialize` is `RpcError::HandlerPanicked`), is returned as it is.
pub(crate) async fn send_items<T: Serialize>(
    source: &mut Streaming<T>,
    outbox: &Outbox,
    (outbound, id): (&Outbound, u64),
    compress: Option<bool>,
) -> Result<Sent, RpcError> {
    send_items_with(source, outbox, (outbound, id), compress, |item, buf| {
        codec::encode_catching(item, buf)
    })
    .await
}

/// [`send_items`] with each item written by `encode` (the connection's payload codec).
pub(crate) async fn send_items_with<T, E>(
    source: &mut Streaming<T>,
    outbox: &Outbox,
    (outbound, id): (&Outbound, u64),
    compress: Option<bool>,
    encode: E,
) -> Result<Sent, RpcError>
where
    E: Fn(&T, &mut BytesMut) -> Result<(), RpcError>,
{
    loop {
        // Credit first: a producer without credit is not even asked for its next item.
        if !std::future::poll_fn(|cx| outbound.poll_ready(cx)).await {
            return Ok(Sent::Stopped);
        }
        // Then room in the connection's write buffer: items wait while the peer does not
        // read what is already queued.
        outbox.writable().await;
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
        let payload = outbox.push(
            (kind::STREAM_ITEM, 0, id),
            compress,
            |_| {},
            |buf| match &item {
                Outgoing::Value(value) => encode(value, buf),
                Outgoing::Encoded(bytes) => {
                    bytes::BufMut::put_slice(buf, bytes);
                    Ok(())
                }
            },
        )?;
        outbound.consume(payload);
    }
}
