//! RPC for Rust from a plain trait: annotate a trait of `async fn`s with [`service`],
//! serve an implementation with one call, and call it through the generated client over
//! one multiplexed connection.
//!
//! ```
//! #[traitrpc::service]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let server = traitrpc::serve("127.0.0.1:0", CalculatorServer::new(Calc)).await?;
//! let calc = CalculatorClient::new(traitrpc::connect(server.local_addr()).await?);
//! assert_eq!(calc.add(1, 2).await?, 3);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! This crate is the one dependency a user needs: it re-exports the core (`traitrpc-core`:
//! protocol, client, server, streams), the transports (`traitrpc-transport-tcp`) and, behind
//! features, discovery and balancing (`traitrpc-discovery`).
//!
//! | feature | gives |
//! |---|---|
//! | `tcp` (default) | [`serve`], [`connect`], [`tcp`], [`unix`] |
//! | `tls` | `tls`: TLS and mutual TLS with rustls |
//! | `discovery` | `discovery`, `BalancedChannel`: several replicas behind one client (static lists, balancing, retries, ejection) |
//! | `dns` | `discovery::dns`: DNS A/AAAA and SRV discovery |
//! | `etcd` | `discovery::etcd`: registration and discovery in etcd |
//! | `gateway` | `gateway`: HTTP for curl, browsers, gRPC and Connect clients in any language (JSON, Connect, gRPC, gRPC-Web, reflection), from the same router; `proto`: the `.proto` exported from a trait |
//! | `schema` | JSON Schemas of arguments and results in reflection and the gateway's OpenAPI document, for types deriving `schemars::JsonSchema` (re-exported as `schemars`) |
//! | `observability` | `observability`: Prometheus metrics, tracing with W3C trace context, the admin endpoint |

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Turns a trait of `async fn`s into an RPC service: see [`traitrpc_core::service`] for what it
/// generates. The generated code names this crate as `::traitrpc`; if you renamed the
/// dependency, say so: `#[service(crate = "my_name")]`.
#[doc(inline)]
pub use traitrpc_macros::service_for_facade as service;

pub use traitrpc_core::{
    client, codec, context, error, health, json, memory, protocol, reflection, schema, server,
    transport, ByteBuf, CallError, CallOptions, Channel, ChannelFuture, Client, ClientConfig,
    Connection, ConnectionFuture, Context, DispatchError, EncodeArgs, Established, HandlerFuture,
    IncomingCall, Interceptor, Listener, Metadata, Method, OutgoingCall, PeerAddr, PeerIdentity,
    Rejection, ReplyTo, Router, RoutingKey, RpcError, Server, ServerConfig, ServerHandle, Service,
    SplitIo, Streaming, Transport,
};
pub use traitrpc_core::{
    AdaptiveConcurrency, Answered, CallOutcome, DuplicateService, Hedging, Keepalive, Middleware,
    Next, PayloadCodec, ServerStats, ShutdownTrigger,
};

/// Items the generated code refers to. Not a public API.
#[doc(hidden)]
pub use traitrpc_core::__private;

#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub use traitrpc_transport_tcp::{connect, connect_with_config, serve, serve_with_config};

/// TCP: listeners, connectors, and [`serve`]/[`connect`] with settings.
#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub mod tcp {
    pub use traitrpc_transport_tcp::{
        connect, connect_with_config, serve, serve_with_config, TcpListener,
    };
}

#[cfg(all(feature = "tcp", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "tcp", unix))))]
pub use traitrpc_transport_tcp::unix;

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use traitrpc_transport_tcp::tls;

#[cfg(feature = "discovery")]
#[cfg_attr(docsrs, doc(cfg(feature = "discovery")))]
pub use traitrpc_discovery as discovery;

#[cfg(feature = "discovery")]
#[cfg_attr(docsrs, doc(cfg(feature = "discovery")))]
pub use traitrpc_discovery::BalancedChannel;

#[cfg(feature = "observability")]
#[cfg_attr(docsrs, doc(cfg(feature = "observability")))]
pub use traitrpc_observability as observability;

#[cfg(feature = "schema")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema")))]
pub use traitrpc_core::schemars;

#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub use traitrpc_gateway as gateway;
#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub use traitrpc_proto as proto;
