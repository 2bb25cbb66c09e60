//! Beyond one server: service discovery, load balancing, reconnection, retries and
//! outlier ejection for the RPC framework, used through the same generated clients.
//!
//! ```no_run
//! use traitrpc_core::service;
//! use traitrpc_discovery::{balance, BalancedChannel, StaticDiscovery};
//!
//! #[service]
//! pub trait Calculator {
//!     #[idempotent]
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! // One server: CalculatorClient::new(traitrpc_transport_tcp::connect(addr).await?)
//! // N replicas: only the way the client is built changes.
//! let discovery = StaticDiscovery::new(["127.0.0.1:7001", "127.0.0.1:7002"]);
//! let channel = BalancedChannel::builder(discovery)
//!     .balancer(balance::PowerOfTwoChoices::new())
//!     .build();
//! let calc = CalculatorClient::new(channel);
//! assert_eq!(calc.add(1, 2).await?, 3);
//! # Ok(()) }
//! ```
//!
//! - **Discovery** ([`Discovery`]): the current endpoint set of a service plus a stream
//!   of [`Change`]s. [`StaticDiscovery`] (built in), [`dns::DnsDiscovery`] (A/AAAA or SRV,
//!   re-resolved when the TTL runs out; feature `dns`, on by default) and
//!   `etcd::EtcdDiscovery` with `etcd::register` (feature `etcd`, over etcd's JSON
//!   gateway).
//! - **Balancing** ([`balance`]): round robin, random, smooth weighted round robin, least
//!   in flight, power of two choices, consistent hashing on the call's routing key.
//! - **Resilience** ([`BalancedChannel`]): connections made and remade in the background
//!   (exponential backoff with jitter, keepalive), over any [`Connector`] (TCP, TLS, Unix
//!   sockets), retries only when safe, within the deadline and a retry budget
//!   ([`RetryPolicy`]), outlier ejection with probing ([`OutlierPolicy`]), load-aware
//!   balancing ([`load`]).
//!
//! # When a call is retried
//!
//! A failed attempt is sent again, to another endpoint when there is one, only if the
//! failure is of the path rather than of the call ([`traitrpc_core::RpcError::is_transient`]:
//! connect failures, lost or silent connections, a draining or overloaded server, a call
//! interrupted by a shutdown) **and** running the call twice is impossible or harmless
//! ([`traitrpc_core::CallOutcome::retry_is_safe`]): it never reached a handler, or the method
//! is declared `#[idempotent]` and did not complete.
//!
//! Anything else (a non-idempotent call that may have run, a deadline, any answer from a
//! handler) is returned to the caller as is. A retry also needs attempts left, time before
//! the deadline for its backoff, and a token from the retry budget. `docs/SCALING.md` in
//! the repository describes the model and every setting.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod balance;
mod channel;
mod connector;
mod discovery;
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub mod dns;
mod endpoint;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
mod health;
mod hedge;
pub mod load;
mod policy;
mod pool;
mod retry;

pub use balance::Balancer;
pub use channel::{
    BalancedChannel, Builder, ChannelStats, EndpointStatus, WeakBalancedChannel,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_OVERLOAD_PAUSE,
};
#[cfg(feature = "tls")]
pub use connector::TlsConnector;
#[cfg(unix)]
pub use connector::UnixConnector;
pub use connector::{ConnectFuture, Connector, TcpConnector, TLS_SERVER_NAME};
pub use discovery::{Discovery, Endpoints, Publisher, StaticDiscovery};
pub use endpoint::{diff, Change, Endpoint, MAX_WEIGHT};
pub use hedge::{HedgeDelay, HedgingPolicy, MIN_SAMPLES};
pub use policy::{Backoff, OutlierPolicy};
pub use pool::MAX_ENDPOINTS;
pub use retry::{RetryPolicy, RETRY_ATTEMPT_KEY};
