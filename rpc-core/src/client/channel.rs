//! [`Channel`]: what a [`Client`](super::Client) sends its calls through when that is not
//! a single [`Connection`](super::Connection): a load-balanced set of endpoints with
//! reconnection and retries (the `traitrpc-discovery` crate), a test double, a proxy.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::Method;
use crate::context::Metadata;
use crate::error::RpcError;
use crate::protocol::{PayloadCodec, ResponseFrame};

/// Appends a call's encoded arguments to a frame, in the codec the connection chose for
/// the method (bincode; JSON by parameter name where the server's schema of it differs,
/// protocol version 6); callable once per attempt.
pub type EncodeArgs<'a> =
    &'a (dyn Fn(&mut BytesMut, PayloadCodec) -> Result<(), RpcError> + Send + Sync);

/// One call as a [`Channel`] receives it.
#[derive(Clone, Copy)]
pub struct OutgoingCall<'a> {
    /// The method called.
    pub method: &'a Method,
    /// Metadata to send with it.
    pub metadata: &'a Metadata,
    /// When the caller stops waiting (covers every attempt).
    pub deadline: Instant,
    /// A key for consistent-hash routing, if the caller set one.
    pub routing_key: Option<u64>,
    /// Encodes the arguments.
    pub encode: EncodeArgs<'a>,
    /// The call's own hedging choice (`None`: the channel's policy). Channels that do
    /// not hedge ignore it.
    pub hedging: Option<Hedging>,
}

/// A call's own hedging choice ([`Client::with_hedging`](super::Client::with_hedging)),
/// for channels that hedge (`traitrpc-discovery`'s balanced channel). Only methods marked
/// `#[idempotent]` are ever hedged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hedging {
    /// Never hedge this call.
    Off,
    /// Hedge after this delay, whatever the channel's policy, within its hedging budget.
    After(Duration),
}

/// The future a [`Channel`] returns.
pub type ChannelFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ResponseFrame, RpcError>> + Send + 'a>>;

/// Carries calls to one or more servers.
pub trait Channel: Send + Sync + 'static {
    /// Sends `call` (possibly several times, to several servers, if that is safe) and
    /// returns the response.
    fn call<'a>(&'a self, call: OutgoingCall<'a>) -> ChannelFuture<'a>;

    /// Timeout of calls that set none.
    fn default_timeout(&self) -> Duration;

    /// The connection to send a streaming call on. Streaming calls are never retried
    /// (their items are consumed as they are sent). The default refuses them.
    fn stream_connection<'a>(&'a self, call: &'a OutgoingCall<'a>) -> ConnectionFuture<'a> {
        let _ = call;
        Box::pin(async {
            Err(RpcError::Unavailable {
                reason: "this channel does not carry streaming calls".into(),
            })
        })
    }
}

/// The future [`Channel::stream_connection`] returns.
pub type ConnectionFuture<'a> =
    Pin<Box<dyn Future<Output = Result<super::Connection, RpcError>> + Send + 'a>>;
