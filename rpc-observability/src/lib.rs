//! Observability for traitrpc services, built on the seams of `traitrpc-core` (observers:
//! `Router::observe`, `Client::observe`; middleware: `Router::layer`, `Client::layer` and
//! a balanced channel's `attempt_layer`), at no cost to services that do not install it:
//!
//! - [`metrics`] (feature `metrics`): Prometheus metrics named after the OpenTelemetry RPC
//!   conventions (gRFC A66), labelled by bounded sets only;
//! - [`tracing_layers`]: a `tracing` span per call on both sides, with W3C trace context
//!   ([`trace_context`]) carried in call metadata so one trace spans a chain of services;
//! - [`admin`] (feature `admin`): one call starts an HTTP listener serving `/metrics`,
//!   `/healthz` and `/readyz` (from the server's health service).
//!
//! ```no_run
//! # #[traitrpc_core::service] pub trait Ping { async fn ping(&self) -> u8; }
//! # struct P; impl Ping for P { async fn ping(&self) -> u8 { 1 } }
//! # async fn demo() -> anyhow::Result<()> {
//! use traitrpc_observability::{admin, metrics::Metrics, tracing_layers::ServerTracing};
//!
//! let metrics = Metrics::new();
//! let router = traitrpc_core::Router::from(PingServer::new(P))
//!     .layer(ServerTracing)
//!     .observe(metrics.server_observer());
//! let server = traitrpc_transport_tcp::serve("127.0.0.1:7000", router).await?;
//! metrics.observe_server(server.stats());
//! let admin = admin::serve("127.0.0.1:9000", admin::Admin::new()
//!     .metrics(metrics.clone())
//!     .health(server.health())).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
pub mod labels;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(feature = "metrics")]
mod striped;
pub mod trace_context;
pub mod tracing_layers;
