//! The core of the RPC framework: annotate a trait of `async fn`s with [`service`], serve
//! an implementation, and call it through the generated client over one multiplexed
//! connection.
//!
//! ```
//! use traitrpc_core::service;
//!
//! #[service]
//! pub trait Greeter {
//!     /// Says hello.
//!     async fn hello(&self, name: String) -> String;
//! }
//!
//! struct English;
//! impl Greeter for English {
//!     async fn hello(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! // The in-memory transport; `traitrpc_transport_tcp::serve`/`connect` are the same over TCP.
//! let (listener, connector) = traitrpc_core::memory::listener();
//! let server = traitrpc_core::Server::new(GreeterServer::new(English)).serve(listener, ());
//! let greeter = GreeterClient::new(connector.connect().await?);
//! assert_eq!(greeter.hello("Ada".into()).await?, "Hello, Ada!");
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! What the macro generates for a trait `Foo`, and where a call goes, is described in the
//! [`service`] documentation and in `docs/ARCHITECTURE.md`; the bytes on the wire in
//! `docs/PROTOCOL.md`.
//!
//! Modules, one concept each: [`protocol`] (handshake and frames), [`codec`] (bincode
//! payloads), [`context`] (deadline, metadata, peer), [`client`] (multiplexed connection,
//! calls, channels), [`server`] (services, router, interceptor, limits, shutdown),
//! [`transport`] (stream and listener traits, in-memory transport), [`error`], [`json`]
//! (JSON calls: the dispatcher every service has, JSON on the native protocol,
//! `JsonClient`, schemas), [`health`] and [`reflection`] (the built-in services); privately
//! `outbox` and `frame_io` (a connection's batched writes and reads), `connection_core`
//! (the rules both sides share: timers, control frames, the connection loop),
//! `keepalive` (its settings) and `stream` ([`Streaming`] and its flow control).

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod byte_buf;
pub mod client;
pub mod codec;
pub mod compression;
mod connection_core;
pub mod context;
pub mod error;
mod frame_io;
pub mod health;
pub mod json;
mod keepalive;
mod method_ids;
mod outbox;
pub mod protocol;
pub mod reflection;
pub mod schema;
pub mod server;
mod stream;
pub mod transport;
mod util;

pub use byte_buf::ByteBuf;
pub use client::{
    CallOptions, Channel, ChannelFuture, Client, ClientConfig, Connection, ConnectionFuture,
    EncodeArgs, Hedging, Method, OutgoingCall, RoutingKey,
};
pub use compression::Compression;
pub use context::{Context, Metadata, PeerAddr, PeerIdentity, ResponseMetadata};
pub use error::{CallError, CallOutcome, RpcError};
pub use keepalive::Keepalive;
pub use protocol::PayloadCodec;
/// The JSON Schema derive and types (feature `schema`), for `#[derive(JsonSchema)]` next
/// to `Serialize` on argument and result types.
#[cfg(feature = "schema")]
pub use schemars;
pub use server::{
    AdaptiveConcurrency, Answered, DispatchError, DuplicateService, HandlerFuture, IncomingCall,
    Interceptor, Middleware, Next, Rejection, ReplyTo, Router, Server, ServerConfig, ServerHandle,
    ServerStats, Service, ShutdownTrigger,
};
pub use stream::Streaming;
pub use transport::{memory, Established, Listener, SplitIo, Transport};

/// Turns a trait of `async fn`s into an RPC service.
///
/// For a trait `Foo` it generates, next to the (rewritten) trait:
///
/// - `FooClient`: a cheap, cloneable client with one `async fn` per method, returning
///   `Result<T, RpcError>`, or `Result<T, CallError<E>>` for a method declared
///   `-> Result<T, E>`. `FooClient::new(target)` builds it over a [`Connection`] or
///   anything else that converts into a [`Client`] (a balanced channel);
///   `with_timeout`, `with_metadata`, `with_routing_key` and `with_compression` return a
///   copy with per-call options.
/// - `FooServer<I>`: wraps an implementation `I: Foo` as a [`Service`] to pass to a
///   server. `FooServer::handle` dispatches a `FooRequest` in-process.
/// - `FooServer<I>` is also callable in JSON ([`Service::json`], [`json::JsonService`]):
///   arguments by parameter name, unary and server-streaming methods, with the JSON
///   Schemas of arguments and results ([`json::schema`]; exact with the `schema`
///   feature). That is what the HTTP gateway, reflection and JSON clients use.
/// - `FooRequest` / `FooResponse`: one variant per method (the method name in
///   UpperCamelCase) holding its arguments / its return value.
/// - `FooClient::SERVICE_NAME`: the service's name on the wire. A method's wire identity
///   is its service name plus its method name (see `docs/PROTOCOL.md`), so adding or
///   reordering methods never breaks older clients.
///
/// A method returning [`Streaming<T>`](Streaming) streams its answer, one taking a
/// `Streaming<T>` argument streams its request, both is bidirectional; the client method
/// then returns `Result<Streaming<T>, RpcError>`. `#[idempotent]` on a method marks it
/// safe to retry.
///
/// Arguments and return values declared `Vec<u8>` take the [`ByteBuf`] fast path (one
/// byte string instead of a sequence of `u8`s; same bytes on the wire).
///
/// Each method becomes `fn m(&self, ..) -> impl Future<Output = T> + Send` in the trait,
/// so implementations write plain `async fn` and their futures must be `Send`.
///
/// `#[service(name = "pkg.Foo")]` sets the service's wire name (default: the trait name).
///
/// `#[idempotent]` on a trait method declares that running it twice is harmless: its
/// requests carry the `IDEMPOTENT` flag, and a balanced client may retry it after a lost
/// connection (see the `traitrpc-discovery` crate).
///
/// `#[compress]` (or `#[compress(true)]`) on a trait method compresses its payloads (the
/// arguments, the answer and stream items, both ways) whenever that makes them smaller,
/// with nothing configured; `#[compress(false)]` never compresses them, whatever the
/// threshold of [`ClientConfig::compression`] / [`ServerConfig::compression`] says. A
/// call's `with_compression` overrides both for what the caller sends. It needs
/// protocol version 5 and a peer that can decompress LZ4 (or the configured algorithm);
/// otherwise payloads go as they are.
pub use traitrpc_macros::service;

/// Items the generated code refers to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::byte_buf::BytesRef;

    /// What every type in an RPC method's signature must be: serializable both ways.
    /// `#[service]` asserts it for each type, spanned at the type in the trait, so a
    /// type without serde's impls is reported there with what to do.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel in an RPC: RPC types must implement Serialize and Deserialize",
        label = "this type is sent or received by an RPC method",
        note = "add #[derive(Serialize, Deserialize)] (from serde) to `{Self}`, or use a type that has both (for an error type such as std::io::Error: your own error enum, or a String)"
    )]
    pub trait RpcType {}
    impl<T: serde::Serialize + serde::de::DeserializeOwned> RpcType for T {}

    /// Compiles only if `T` is an [`RpcType`]; `#[service]` calls it for each type.
    pub const fn assert_rpc_type<T: RpcType>() {}

    pub use crate::json::schema::{method_schemas, SchemaProbe, ViaJsonSchema, WithoutSchema};
    pub use crate::json::{json_stream, no_other_args, not_unary, take_arg, to_value};
    pub use serde;
    pub use std::boxed::Box;
    pub use std::sync::Arc;
}
