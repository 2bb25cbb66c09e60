//! The client's middleware seam: [`ClientMiddleware`] runs around every unary call a
//! [`Client`](super::Client) makes (`Client::layer`) — and, installed on a balanced
//! channel, around every attempt of one, so retries are visible — and may add metadata
//! to every call, streaming ones included (credentials, trace context). Tracing and the
//! per-attempt metrics are client middleware; per-call metrics use the cheaper
//! [`observer`](super::observer).
//!
//! A client without layers sends exactly as before.

use std::sync::Arc;

use super::channel::{Channel, ChannelFuture, OutgoingCall};
use super::connection::Connection;
use super::Method;
use crate::context::Metadata;

/// Runs around calls on the client side.
pub trait ClientMiddleware: Send + Sync + 'static {
    /// Adds to or changes the metadata of a call before it is sent (every call, unary or
    /// streaming). The default adds nothing.
    fn decorate(&self, method: &Method, metadata: &mut Metadata) {
        let _ = (method, metadata);
    }

    /// Sends one call (or attempt): usually `next.run(call)`, with something before and
    /// after. The default only passes it on.
    fn call<'a>(&'a self, call: OutgoingCall<'a>, next: ClientNext<'a>) -> ChannelFuture<'a> {
        next.run(call)
    }
}

/// Where the chain ends: one connection, or a channel.
#[derive(Clone, Copy)]
pub enum Destination<'a> {
    /// Sent on this connection (one attempt).
    Connection(&'a Connection),
    /// Sent through this channel (which may make several attempts).
    Channel(&'a dyn Channel),
}

/// The rest of a client call's chain: the layers after this one, then the destination.
#[derive(Clone, Copy)]
pub struct ClientNext<'a> {
    layers: &'a [Arc<dyn ClientMiddleware>],
    destination: Destination<'a>,
}

impl std::fmt::Debug for ClientNext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNext")
            .field("remaining_layers", &self.layers.len())
            .finish()
    }
}

impl<'a> ClientNext<'a> {
    /// The chain of `layers` ending in `destination` (for channels that run their own
    /// per-attempt layers).
    pub fn new(layers: &'a [Arc<dyn ClientMiddleware>], destination: Destination<'a>) -> Self {
        ClientNext {
            layers,
            destination,
        }
    }

    /// Sends `call` through the rest of the chain.
    pub fn run(self, call: OutgoingCall<'a>) -> ChannelFuture<'a> {
        match self.layers.split_first() {
            Some((layer, rest)) => layer.call(
                call,
                ClientNext {
                    layers: rest,
                    destination: self.destination,
                },
            ),
            None => match self.destination {
                Destination::Connection(connection) => {
                    Box::pin(async move { connection.send(&call).await })
                }
                Destination::Channel(channel) => channel.call(call),
            },
        }
    }
}

/// The metadata a call carries once every layer decorated it.
pub(crate) fn decorated(
    layers: &[Arc<dyn ClientMiddleware>],
    method: &Method,
    metadata: &Metadata,
) -> Metadata {
    let mut metadata = metadata.clone();
    for layer in layers {
        layer.decorate(method, &mut metadata);
    }
    metadata
}
