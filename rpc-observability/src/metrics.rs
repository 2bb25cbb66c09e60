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
//!   `rpc_server_calls_shed_total`;
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
//! Calls are recorded by observers (`rpc_core::server::observer`, `Client::observe`),
//! which cost no allocation per call, into lock-free striped histograms; the attempt
//! layer is a middleware, since it must wrap each attempt a channel makes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use rpc_core::client::observer::ObservedClientCall;
use rpc_core::client::{ClientMiddleware, ClientNext, ClientObserver};
use rpc_core::server::observer::{ObservedCall, ServerObserver};
use rpc_core::{Answered, ChannelFuture, Method, OutgoingCall, ServerStats};

use crate::histogram::{stripe_count, thread_stripe, Buckets, StripedHistogram};
use crate::labels::{Outcome, OTHER};

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
    started: Family<MethodLabels, Counter>,
    duration: HistogramFamily<StatusLabels>,
    received: HistogramFamily<StatusLabels>,
    sent: HistogramFamily<StatusLabels>,
    items: Family<ItemLabels, Counter>,
    connections: Gauge,
    in_flight: Gauge,
    shed: Counter,
}

#[derive(Clone)]
struct ClientFamilies {
    call_duration: HistogramFamily<ClientStatusLabels>,
    attempt_started: Family<ClientLabels, Counter>,
    attempt_duration: HistogramFamily<ClientStatusLabels>,
    attempt_sent: HistogramFamily<ClientStatusLabels>,
    attempt_received: HistogramFamily<ClientStatusLabels>,
    endpoints: Family<EndpointStateLabels, Gauge>,
    ejections: Family<TargetLabels, Counter>,
    retries: Family<TargetLabels, Counter>,
    budget_exhausted: Family<TargetLabels, Counter>,
}

type Refresher = Box<dyn Fn() + Send + Sync>;

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
        for refresh in self
            .inner
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            refresh();
        }
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
        ServerMetrics {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The client observer that records each call's duration, all attempts included,
    /// under `target` (a name for what the client calls, for example the service's
    /// name): `Client::new(conn).observe(metrics.client_observer("calc"))`.
    pub fn client_observer(&self, target: &str) -> ClientMetrics {
        ClientMetrics {
            families: self.inner.client.clone(),
            target: target.into(),
            methods: Arc::default(),
        }
    }

    /// The middleware that records each attempt (start, duration, sizes) under
    /// `target`: for a balanced channel's `attempt_layer`, so retries are visible.
    pub fn attempt_layer(&self, target: &str) -> AttemptMetrics {
        AttemptMetrics(self.client_observer(target))
    }

    /// Reports `stats`' live counts (connections, calls in flight, calls shed) at each
    /// scrape.
    pub fn observe_server(&self, stats: ServerStats) {
        let (connections, in_flight, shed) = (
            self.inner.server.connections.clone(),
            self.inner.server.in_flight.clone(),
            self.inner.server.shed.clone(),
        );
        let reported = AtomicU64::new(0);
        self.refresh(move || {
            connections.set(stats.connections() as i64);
            in_flight.set(stats.calls_in_flight() as i64);
            let now = stats.calls_shed();
            let before = reported.swap(now, Ordering::Relaxed);
            shed.inc_by(now.saturating_sub(before));
        });
    }

    /// Reports a balanced channel's endpoints by state (`ready`, `connecting`,
    /// `backoff`, `ejected`, `not_serving`), ejections, retries and exhausted retry
    /// budget, under `target`, at each scrape.
    #[cfg(feature = "discovery")]
    pub fn observe_channel(&self, channel: &rpc_discovery::BalancedChannel, target: &str) {
        let channel = channel.clone();
        let target: Arc<str> = target.into();
        let families = Arc::clone(&self.inner);
        let reported = Mutex::new(rpc_discovery::ChannelStats::default());
        self.refresh(move || {
            let client = &families.client;
            let mut counts = [0i64; 5];
            for endpoint in channel.endpoints() {
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
        });
    }

    fn refresh(&self, f: impl Fn() + Send + Sync + 'static) {
        self.inner
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(f));
    }
}

/// Where the handles of each method's metrics are kept once found, so that recording a
/// call hashes two pointers instead of its label strings. Keyed by the addresses and
/// lengths of the `&'static` service and method names (a bounded set: the services'
/// own, and `other`). Striped like the histograms: each thread reads its own copy, so
/// threads recording at once do not contend on one lock word (the copies hold clones of
/// the same metrics).
struct HandleCache<H> {
    stripes: Box<[CacheStripe<H>]>,
}

type MethodMap<H> = HashMap<NameKey, Arc<H>, BuildHasherDefault<NameKeyHasher>>;

#[repr(align(128))]
struct CacheStripe<H>(RwLock<MethodMap<H>>);

impl<H> Default for HandleCache<H> {
    fn default() -> Self {
        HandleCache {
            stripes: (0..stripe_count())
                .map(|_| CacheStripe(RwLock::new(HashMap::default())))
                .collect(),
        }
    }
}

/// A service and method name by address and length.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NameKey([usize; 4]);

impl std::hash::Hash for NameKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for word in self.0 {
            state.write_usize(word);
        }
    }
}

fn name_key(service: &'static str, method: &'static str) -> NameKey {
    NameKey([
        service.as_ptr() as usize,
        service.len(),
        method.as_ptr() as usize,
        method.len(),
    ])
}

impl<H> HandleCache<H> {
    /// Runs `f` with the handles of `service.method` (made by `make` the first time this
    /// thread's stripe needs them).
    fn with<R>(
        &self,
        service: &'static str,
        method: &'static str,
        make: impl FnOnce() -> H,
        f: impl FnOnce(&H) -> R,
    ) -> R {
        self.lookup(service, method, make, |handles| f(handles))
    }

    /// The handles of `service.method`, to keep.
    fn get(&self, service: &'static str, method: &'static str, make: impl FnOnce() -> H) -> Arc<H> {
        self.lookup(service, method, make, Arc::clone)
    }

    fn lookup<R>(
        &self,
        service: &'static str,
        method: &'static str,
        make: impl FnOnce() -> H,
        found: impl FnOnce(&Arc<H>) -> R,
    ) -> R {
        let key = name_key(service, method);
        let stripe = &self.stripes[thread_stripe()].0;
        if let Some(handles) = stripe
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return found(handles);
        }
        let mut methods = stripe.write().unwrap_or_else(PoisonError::into_inner);
        found(methods.entry(key).or_insert_with(|| Arc::new(make())))
    }
}

/// Hashes a [`NameKey`] (four words, of which the addresses differ): a multiply and a
/// rotate per word.
#[derive(Default)]
struct NameKeyHasher(u64);

impl Hasher for NameKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One server method's metrics.
struct ServerMethod {
    service: &'static str,
    method: &'static str,
    families: ServerFamilies,
    started: Counter,
    by_outcome: [OnceLock<ServerOutcome>; Outcome::COUNT],
    items_sent: OnceLock<Counter>,
    items_received: OnceLock<Counter>,
}

/// One server method's histograms for one outcome.
struct ServerOutcome {
    duration: Histogram,
    received: Histogram,
    sent: Histogram,
}

impl ServerMethod {
    fn new(families: &ServerFamilies, service: &'static str, method: &'static str) -> Self {
        ServerMethod {
            service,
            method,
            started: families
                .started
                .get_or_create(&MethodLabels { service, method })
                .clone(),
            families: families.clone(),
            by_outcome: std::array::from_fn(|_| OnceLock::new()),
            items_sent: OnceLock::new(),
            items_received: OnceLock::new(),
        }
    }

    fn outcome(&self, outcome: Outcome) -> &ServerOutcome {
        self.by_outcome[outcome.index()].get_or_init(|| {
            let labels = StatusLabels {
                service: self.service,
                method: self.method,
                status: outcome.name(),
            };
            ServerOutcome {
                duration: self.families.duration.get_or_create(&labels).clone(),
                received: self.families.received.get_or_create(&labels).clone(),
                sent: self.families.sent.get_or_create(&labels).clone(),
            }
        })
    }

    fn items(&self, direction: &'static str) -> &Counter {
        let cell = if direction == "sent" {
            &self.items_sent
        } else {
            &self.items_received
        };
        cell.get_or_init(|| {
            self.families
                .items
                .get_or_create(&ItemLabels {
                    service: self.service,
                    method: self.method,
                    direction,
                })
                .clone()
        })
    }
}

/// The server observer of [`Metrics::server_observer`].
#[derive(Clone)]
pub struct ServerMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

impl ServerMetrics {
    fn with_method<R>(&self, call: &ObservedCall, f: impl FnOnce(&ServerMethod) -> R) -> R {
        let (service, method) = (call.service(), call.known_method().unwrap_or(OTHER));
        self.inner.server_methods.with(
            service,
            method,
            || ServerMethod::new(&self.inner.server, service, method),
            f,
        )
    }
}

impl ServerObserver for ServerMetrics {
    fn call_started(&self, call: &ObservedCall) {
        self.with_method(call, |method| method.started.inc());
    }

    fn call_ended(&self, call: &ObservedCall, answered: &Answered, elapsed: Duration) {
        let outcome = answered
            .status()
            .map_or(Outcome::CANCELLED, Outcome::of_status);
        self.with_method(call, |method| {
            let histograms = method.outcome(outcome);
            histograms.duration.observe(nanos(elapsed));
            histograms.received.observe(call.request_bytes() as u64);
            histograms.sent.observe(answered.response_bytes() as u64);
            if answered.items_sent() > 0 {
                method.items("sent").inc_by(answered.items_sent());
            }
            if answered.items_received() > 0 {
                method.items("received").inc_by(answered.items_received());
            }
        });
    }
}

/// One client method's metrics under one target.
struct ClientMethod {
    labels: ClientLabels,
    families: ClientFamilies,
    attempt_started: Counter,
    by_outcome: [OnceLock<ClientOutcome>; Outcome::COUNT],
}

/// One client method's histograms for one outcome.
struct ClientOutcome {
    duration: Histogram,
    /// Attempt layers only: the sizes.
    sizes: Option<(Histogram, Histogram)>,
}

impl ClientMethod {
    fn new(families: &ClientFamilies, labels: ClientLabels) -> Self {
        ClientMethod {
            attempt_started: families.attempt_started.get_or_create(&labels).clone(),
            labels,
            families: families.clone(),
            by_outcome: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn outcome(&self, outcome: Outcome, attempts: bool) -> &ClientOutcome {
        self.by_outcome[outcome.index()].get_or_init(|| {
            let labels = ClientStatusLabels {
                service: self.labels.service,
                method: self.labels.method,
                target: Arc::clone(&self.labels.target),
                status: outcome.name(),
            };
            let f = &self.families;
            if attempts {
                ClientOutcome {
                    duration: f.attempt_duration.get_or_create(&labels).clone(),
                    sizes: Some((
                        f.attempt_sent.get_or_create(&labels).clone(),
                        f.attempt_received.get_or_create(&labels).clone(),
                    )),
                }
            } else {
                ClientOutcome {
                    duration: f.call_duration.get_or_create(&labels).clone(),
                    sizes: None,
                }
            }
        })
    }
}

/// The client observer of [`Metrics::client_observer`].
#[derive(Clone)]
pub struct ClientMetrics {
    families: ClientFamilies,
    target: Arc<str>,
    methods: Arc<HandleCache<ClientMethod>>,
}

impl std::fmt::Debug for ClientMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMetrics")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ClientMetrics {
    fn make(&self, method: &Method) -> impl FnOnce() -> ClientMethod + '_ {
        let (service, name) = (method.service, method.name);
        move || {
            let labels = ClientLabels {
                service,
                method: name,
                target: Arc::clone(&self.target),
            };
            ClientMethod::new(&self.families, labels)
        }
    }

    fn method(&self, method: &Method) -> Arc<ClientMethod> {
        self.methods
            .get(method.service, method.name, self.make(method))
    }
}

impl ClientObserver for ClientMetrics {
    fn call_ended(&self, call: &ObservedClientCall<'_>) {
        let outcome = call.outcome().map_or(Outcome::CANCELLED, Outcome::of_call);
        let method = call.method();
        self.methods
            .with(method.service, method.name, self.make(method), |handles| {
                handles
                    .outcome(outcome, false)
                    .duration
                    .observe(nanos(call.elapsed()))
            });
    }
}

/// The attempt middleware of [`Metrics::attempt_layer`].
#[derive(Clone, Debug)]
pub struct AttemptMetrics(ClientMetrics);

impl ClientMiddleware for AttemptMetrics {
    fn call<'a>(&'a self, call: OutgoingCall<'a>, next: ClientNext<'a>) -> ChannelFuture<'a> {
        let handles = self.0.method(call.method);
        handles.attempt_started.inc();
        let started = Instant::now();
        Box::pin(async move {
            // The arguments' size, measured as they are encoded into the frame.
            let sent = std::sync::atomic::AtomicUsize::new(0);
            let encode = |buf: &mut rpc_core::client::BytesMut| {
                let before = buf.len();
                let encoded = (call.encode)(buf);
                sent.store(buf.len() - before, Ordering::Relaxed);
                encoded
            };
            let measured = OutgoingCall {
                encode: &encode,
                ..call
            };
            let outcome = next.run(measured).await;
            let histograms = handles.outcome(Outcome::of_call(&outcome), true);
            histograms.duration.observe(nanos(started.elapsed()));
            if let Some((sent_sizes, received_sizes)) = &histograms.sizes {
                sent_sizes.observe(sent.load(Ordering::Relaxed) as u64);
                let received = outcome.as_ref().map_or(0, |frame| frame.payload.len());
                received_sizes.observe(received as u64);
            }
            outcome
        })
    }
}

/// A duration in whole nanoseconds (saturating: 584 years).
fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
