//! Prometheus metrics (with `prometheus-client`, the OpenMetrics crate), named after the
//! OpenTelemetry RPC metric conventions of gRFC A66 in Prometheus spelling. One
//! [`Metrics`] holds a registry; its observers and layers record into it:
//!
//! - [`Metrics::server_observer`] records `rpc_server_call_started_total`,
//!   `rpc_server_call_duration_seconds`, `rpc_server_call_rcvd_message_size_bytes`,
//!   `rpc_server_call_sent_message_size_bytes`, `rpc_server_stream_items_total`;
//! - [`Metrics::client_observer`] (of calls) and [`Metrics::attempt_layer`] (around the
//!   attempts of a balanced channel) record `rpc_client_call_duration_seconds`,
//!   `rpc_client_attempt_started_total`, `rpc_client_attempt_duration_seconds`,
//!   `rpc_client_attempt_sent_message_size_bytes`,
//!   `rpc_client_attempt_rcvd_message_size_bytes`;
//! - [`Metrics::observe_server`] reports `rpc_server_connections`, `rpc_server_calls_in_flight`,
//!   `rpc_server_calls_shed_total`, `rpc_server_concurrency_limit`;
//! - `Metrics::observe_channel` (feature `discovery`) reports `rpc_client_endpoints` by state,
//!   `rpc_client_endpoint_ejections_total`, `rpc_client_retries_total`,
//!   `rpc_client_retry_budget_exhausted_total`.
//!
//! Labels come from bounded sets only: `service` and `method` as the server's services
//! declare them (an unknown method is `other`), `status` from a fixed list
//! ([`crate::labels`]), `target` as the application names its channels. So a scanner
//! sending random method names cannot create series. `docs/OBSERVABILITY.md` lists every
//! metric with its type, unit and labels.
//!
//! Calls are recorded by observers (`traitrpc_core::server::observer`, `Client::observe`),
//! which cost no allocation per call, into lock-free striped histograms; the attempt
//! layer is a middleware, since it must wrap each attempt a channel makes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use traitrpc_core::client::observer::ObservedClientCall;
use traitrpc_core::client::{ClientMiddleware, ClientNext, ClientObserver};
use traitrpc_core::server::observer::{ObservedCall, ServerObserver};
use traitrpc_core::{Answered, ChannelFuture, Method, OutgoingCall, ServerStats};

mod client;
mod handle_cache;
mod server;

pub use client::{AttemptMetrics, ClientMetrics};
pub use server::ServerMetrics;

use crate::labels::{Outcome, OTHER};
use crate::striped::{Buckets, StripedCounter, StripedHistogram};
use handle_cache::HandleCache;
use server::ServerMethod;

/// Latency buckets: 50 µs to 10 s, about three per decade (in nanoseconds, exported as
/// seconds).
static DURATION_BUCKETS: Buckets = Buckets {
    bounds: &[
        50_000,
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        10_000_000_000,
    ],
    scale: 1e-9,
};

/// Message size buckets in bytes: 0 to 64 MiB, powers of four.
static SIZE_BUCKETS: Buckets = Buckets {
    bounds: &[
        0, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304, 16_777_216,
        67_108_864,
    ],
    scale: 1.0,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    service: &'static str,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemLabels {
    service: &'static str,
    method: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    service: &'static str,
    method: &'static str,
    target: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientStatusLabels {
    service: &'static str,
    method: &'static str,
    target: Arc<str>,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointStateLabels {
    target: Arc<str>,
    state: &'static str,
}

type Histogram = StripedHistogram;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    StripedHistogram::new(&DURATION_BUCKETS)
}

fn size_histogram() -> Histogram {
    StripedHistogram::new(&SIZE_BUCKETS)
}

#[derive(Clone)]
struct ServerFamilies {
    started: Family<MethodLabels, StripedCounter>,
    duration: HistogramFamily<StatusLabels>,
    received: HistogramFamily<StatusLabels>,
    sent: HistogramFamily<StatusLabels>,
    items: Family<ItemLabels, StripedCounter>,
    connections: Gauge,
    in_flight: Gauge,
    shed: Counter,
    limit: Gauge,
}

#[derive(Clone)]
struct ClientFamilies {
    call_duration: HistogramFamily<ClientStatusLabels>,
    attempt_started: Family<ClientLabels, StripedCounter>,
    attempt_duration: HistogramFamily<ClientStatusLabels>,
    attempt_sent: HistogramFamily<ClientStatusLabels>,
    attempt_received: HistogramFamily<ClientStatusLabels>,
    endpoints: Family<EndpointStateLabels, Gauge>,
    ejections: Family<TargetLabels, Counter>,
    retries: Family<TargetLabels, Counter>,
    budget_exhausted: Family<TargetLabels, Counter>,
}

/// Reads a live count into its metric; `false` once what it reads is gone (it is then
/// dropped).
type Refresher = Box<dyn Fn() -> bool + Send + Sync>;

struct Inner {
    registry: Mutex<Registry>,
    server: ServerFamilies,
    client: ClientFamilies,
    /// The handles of each method the server layers have seen.
    server_methods: HandleCache<ServerMethod>,
    /// Read live counts (server stats, channel stats) into their metrics at each scrape.
    refreshers: Mutex<Vec<Refresher>>,
}

/// A set of RPC metrics in one Prometheus registry. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every RPC metric, registered in a new registry.
    pub fn new() -> Self {
        Self::with_registry(Registry::default())
    }

    /// Every RPC metric, registered in `registry` (which may hold the application's
    /// own metrics too; [`Metrics::encode`] writes them all).
    pub fn with_registry(mut registry: Registry) -> Self {
        let server = ServerFamilies {
            started: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            received: Family::new_with_constructor(size_histogram),
            sent: Family::new_with_constructor(size_histogram),
            items: Family::default(),
            connections: Gauge::default(),
            in_flight: Gauge::default(),
            shed: Counter::default(),
            limit: Gauge::default(),
        };
        let client = ClientFamilies {
            call_duration: Family::new_with_constructor(duration_histogram),
            attempt_started: Family::default(),
            attempt_duration: Family::new_with_constructor(duration_histogram),
            attempt_sent: Family::new_with_constructor(size_histogram),
            attempt_received: Family::new_with_constructor(size_histogram),
            endpoints: Family::default(),
            ejections: Family::default(),
            retries: Family::default(),
            budget_exhausted: Family::default(),
        };
        let r = &mut registry;
        r.register(
            "rpc_server_call_started",
            "Calls the server started (after admission: shed calls are not counted here)",
            server.started.clone(),
        );
        r.register_with_unit(
            "rpc_server_call_duration",
            "Time from reading a call to answering it",
            Unit::Seconds,
            server.duration.clone(),
        );
        r.register_with_unit(
            "rpc_server_call_rcvd_message_size",
            "Size of a call's encoded arguments",
            Unit::Bytes,
            server.received.clone(),
        );
        r.register_with_unit(
            "rpc_server_call_sent_message_size",
            "Size of a call's answer frame",
            Unit::Bytes,
            server.sent.clone(),
        );
        r.register(
            "rpc_server_stream_items",
            "Stream items the server sent or received",
            server.items.clone(),
        );
        r.register(
            "rpc_server_connections",
            "Connections open (including those in their handshake)",
            server.connections.clone(),
        );
        r.register(
            "rpc_server_calls_in_flight",
            "Calls running on the server",
            server.in_flight.clone(),
        );
        r.register(
            "rpc_server_calls_shed",
            "Calls answered OVERLOADED by a limit, without running",
            server.shed.clone(),
        );
        r.register(
            "rpc_server_concurrency_limit",
            "Calls the server lets run at once (fixed, or where its adaptive limit stands)",
            server.limit.clone(),
        );
        r.register_with_unit(
            "rpc_client_call_duration",
            "Time a client call took, all attempts included",
            Unit::Seconds,
            client.call_duration.clone(),
        );
        r.register(
            "rpc_client_attempt_started",
            "Attempts a client sent (a retried call counts each)",
            client.attempt_started.clone(),
        );
        r.register_with_unit(
            "rpc_client_attempt_duration",
            "Time one attempt took",
            Unit::Seconds,
            client.attempt_duration.clone(),
        );
        r.register_with_unit(
            "rpc_client_attempt_sent_message_size",
            "Size of an attempt's encoded arguments",
            Unit::Bytes,
            client.attempt_sent.clone(),
        );
        r.register_with_unit(
            "rpc_client_attempt_rcvd_message_size",
            "Size of an attempt's answer payload",
            Unit::Bytes,
            client.attempt_received.clone(),
        );
        r.register(
            "rpc_client_endpoints",
            "Endpoints of a balanced channel by state",
            client.endpoints.clone(),
        );
        r.register(
            "rpc_client_endpoint_ejections",
            "Times an endpoint of a balanced channel was ejected",
            client.ejections.clone(),
        );
        r.register(
            "rpc_client_retries",
            "Attempts a balanced channel sent again",
            client.retries.clone(),
        );
        r.register(
            "rpc_client_retry_budget_exhausted",
            "Retries a balanced channel refused because its budget was empty",
            client.budget_exhausted.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                server,
                client,
                server_methods: HandleCache::default(),
                refreshers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `f` with the registry, to register the application's own metrics next to
    /// these.
    pub fn with_registry_mut<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self
            .inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Every metric in the OpenMetrics text format (what `/metrics` serves).
    pub fn encode(&self) -> String {
        self.inner
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|refresh| refresh());
        let mut out = String::new();
        let registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The server observer that records every call's start, duration, sizes and stream
    /// items: `router.observe(metrics.server_observer())`.
    pub fn server_observer(&self) -> ServerMetrics {
        ServerMetrics::new(Arc::clone(&self.inner))
    }

    /// The client observer that records each call's duration, all attempts included,
    /// under `target` (a name for what the client calls, for example the service's
    /// name): `Client::new(conn).observe(metrics.client_observer("calc"))`.
    pub fn client_observer(&self, target: &str) -> ClientMetrics {
        ClientMetrics::new(self.inner.client.clone(), target)
    }

    /// The middleware that records each attempt (start, duration, sizes) under
    /// `target`: for a balanced channel's `attempt_layer`, so retries are visible.
    pub fn attempt_layer(&self, target: &str) -> AttemptMetrics {
        AttemptMetrics(self.client_observer(target))
    }

    /// Reports `stats`' live counts (connections, calls in flight, calls shed, the
    /// concurrency limit) at each scrape.
    pub fn observe_server(&self, stats: ServerStats) {
        let (connections, in_flight, shed, limit) = (
            self.inner.server.connections.clone(),
            self.inner.server.in_flight.clone(),
            self.inner.server.shed.clone(),
            self.inner.server.limit.clone(),
        );
        let reported = AtomicU64::new(0);
        self.refresh(move || {
            connections.set(stats.connections() as i64);
            in_flight.set(stats.calls_in_flight() as i64);
            limit.set(stats.concurrency_limit() as i64);
            let now = stats.calls_shed();
            let before = reported.swap(now, Ordering::Relaxed);
            shed.inc_by(now.saturating_sub(before));
            true
        });
    }

    /// Reports a balanced channel's endpoints by state (`ready`, `connecting`,
    /// `backoff`, `ejected`, `not_serving`), ejections, retries and exhausted retry
    /// budget, under `target`, at each scrape. It does not keep the channel alive: once
    /// its users drop it (and its connections close), its endpoint gauges read 0.
    #[cfg(feature = "discovery")]
    pub fn observe_channel(&self, channel: &traitrpc_discovery::BalancedChannel, target: &str) {
        let channel = channel.downgrade();
        let target: Arc<str> = target.into();
        let families = Arc::clone(&self.inner);
        // Its counters exist from now on, at 0 until they count (and after the channel
        // is gone, at what they reached).
        let labels = TargetLabels {
            target: Arc::clone(&target),
        };
        let client = &families.client;
        client.ejections.get_or_create(&labels).inc_by(0);
        client.retries.get_or_create(&labels).inc_by(0);
        client.budget_exhausted.get_or_create(&labels).inc_by(0);
        let reported = Mutex::new(traitrpc_discovery::ChannelStats::default());
        self.refresh(move || {
            let client = &families.client;
            let channel = channel.upgrade();
            let mut counts = [0i64; 5];
            for endpoint in channel.iter().flat_map(|channel| channel.endpoints()) {
                let state = if endpoint.ejected {
                    3
                } else if !endpoint.serving {
                    4
                } else if endpoint.connected {
                    0
                } else if endpoint.reconnecting {
                    2
                } else {
                    1
                };
                counts[state] += 1;
            }
            for (state, count) in ["ready", "connecting", "backoff", "ejected", "not_serving"]
                .into_iter()
                .zip(counts)
            {
                client
                    .endpoints
                    .get_or_create(&EndpointStateLabels {
                        target: Arc::clone(&target),
                        state,
                    })
                    .set(count);
            }
            let Some(channel) = channel else {
                return false;
            };
            let now = channel.stats();
            let mut before = reported.lock().unwrap_or_else(PoisonError::into_inner);
            let labels = TargetLabels {
                target: Arc::clone(&target),
            };
            client
                .ejections
                .get_or_create(&labels)
                .inc_by(now.ejections.saturating_sub(before.ejections));
            client
                .retries
                .get_or_create(&labels)
                .inc_by(now.retries.saturating_sub(before.retries));
            client.budget_exhausted.get_or_create(&labels).inc_by(
                now.retry_budget_exhausted
                    .saturating_sub(before.retry_budget_exhausted),
            );
            *before = now;
            true
        });
    }

    fn refresh(&self, f: impl Fn() -> bool + Send + Sync + 'static) {
        self.inner
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(f));
    }
}

/// A duration in whole nanoseconds (saturating: 584 years).
pub(crate) fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
