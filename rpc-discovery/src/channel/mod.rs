//! [`BalancedChannel`]: a [`Channel`] over a discovered set of endpoints. It glues three
//! parts that each do one thing: the `pool` (discovery, connections made in the
//! background, health), a [`Balancer`] over the endpoints that can take a call now, and
//! the `retry` rules.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::AbortHandle;
use tokio::time::Instant;
use traitrpc_core::client::{ClientMiddleware, ClientNext, Destination};
use traitrpc_core::protocol::{status, ResponseFrame};
use traitrpc_core::{
    Channel, ChannelFuture, ClientConfig, Connection, ConnectionFuture, Keepalive, OutgoingCall,
    RpcError,
};

use crate::balance::{Balancer, RoundRobin};
use crate::connector::{Connector, TcpConnector};
use crate::discovery::{Discovery, Endpoints, StaticDiscovery};
use crate::endpoint::Endpoint;
use crate::health::Verdict;
use crate::hedge::{Hedger, HedgingPolicy};

mod hedged;
#[cfg(test)]
mod tests;
use crate::policy::{Backoff, OutlierPolicy};
use crate::pool::{Link, Member, Pool, PoolSettings, Routable};
use crate::retry::{self, decide, Decision, RetryBudget, RetryPolicy};

/// A [`Channel`] that spreads calls over the endpoints a [`Discovery`] reports.
///
/// Build it with [`BalancedChannel::builder`] (or [`BalancedChannel::from_static`]) and
/// hand it to any generated client: `CalculatorClient::new(channel.clone())`. The trait
/// and the call sites are the same as with a single connection. Cheap to clone; all
/// clones share the endpoints, connections and retry budget.
///
/// It connects to every endpoint in the background (one connection each, through its
/// [`Connector`]: TCP, TLS or Unix sockets), reconnects with exponential backoff, and
/// replaces a connection whose server drains it. Per call it picks an endpoint with its
/// [`Balancer`] among those connected and healthy, sends the call, and retries on another
/// endpoint only when that cannot run it twice (see the crate documentation). Endpoints
/// that keep failing, or missing deadlines, are ejected for a while and probed before
/// they return ([`OutlierPolicy`]). Endpoint changes from discovery apply at once; calls
/// and streams in flight on a removed or draining endpoint finish normally.
///
/// `tracing` events: `endpoint added` / `removed` / `updated`, `connected`,
/// `connect failed`, `retrying call`, `endpoint ejected`, `endpoint restored` (info),
/// `endpoint chosen` (debug), `retry budget exhausted` (warn).
#[derive(Clone)]
pub struct BalancedChannel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BalancedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedChannel")
            .field("balancer", &self.inner.balancer.name())
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

/// Settings for a [`BalancedChannel`]; see each method for its default.
pub struct Builder {
    discovery: Arc<dyn Discovery>,
    balancer: Arc<dyn Balancer>,
    connector: Arc<dyn Connector>,
    client_config: ClientConfig,
    default_timeout: Duration,
    retry: RetryPolicy,
    outlier: OutlierPolicy,
    reconnect: Backoff,
    health_checks: bool,
    attempt_layers: Vec<Arc<dyn ClientMiddleware>>,
    hedging: Option<HedgingPolicy>,
    overload_pause: Duration,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("balancer", &self.balancer.name())
            .field("connector", &self.connector.name())
            .field("client_config", &self.client_config)
            .field("default_timeout", &self.default_timeout)
            .field("retry", &self.retry)
            .field("hedging", &self.hedging)
            .field("overload_pause", &self.overload_pause)
            .field("outlier", &self.outlier)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

/// The connect timeout of a balanced channel's connections unless
/// [`Builder::client_config`] says otherwise: short, because another endpoint can take
/// the call.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an endpoint that answered OVERLOADED gets no new calls while others can take
/// them, unless [`Builder::overload_pause`] says otherwise.
pub const DEFAULT_OVERLOAD_PAUSE: Duration = Duration::from_millis(100);

/// The keepalive of a balanced channel's connections unless [`Builder::client_config`]
/// says otherwise: a silent endpoint (crashed host, black-holed path) is noticed within
/// about 10 s and leaves rotation.
pub const DEFAULT_KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(5),
    timeout: Duration::from_secs(5),
};

impl Builder {
    /// The balancer (default [`RoundRobin`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Arc::new(balancer);
        self
    }

    /// How endpoints are reached (default [`TcpConnector`]; also `TlsConnector`,
    /// `UnixConnector`, or your own).
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    /// Settings of each endpoint's connection (default `ClientConfig::default()` with a
    /// connect timeout of 2 s, [`DEFAULT_CONNECT_TIMEOUT`], and a keepalive of 5 s / 5 s,
    /// [`DEFAULT_KEEPALIVE`]). Its default timeout is not used: see
    /// [`Builder::default_timeout`].
    pub fn client_config(mut self, config: ClientConfig) -> Self {
        self.client_config = config;
        self
    }

    /// Deadline of calls that set no timeout, covering all their attempts (default 30 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// When calls are retried (default [`RetryPolicy::default`]: 3 attempts, 5–200 ms
    /// backoff, budget of 20 % of calls + 10 per second).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// When endpoints are ejected (default [`OutlierPolicy::default`]: after 5 failures
    /// in a row, for 1 s doubling up to 30 s).
    pub fn outlier(mut self, policy: OutlierPolicy) -> Self {
        self.outlier = policy;
        self
    }

    /// Delay between connection attempts to an endpoint that could not be reached
    /// (default 50 ms doubling up to 5 s, 50 % jitter). The first reconnect after a
    /// connection is lost is immediate; the backoff applies once an attempt fails.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Runs `middleware` around every attempt (first added, outermost), on the endpoint's
    /// connection: a call retried twice passes three times. (Around the whole call, with
    /// its retries, use `traitrpc_core::Client::layer`.)
    pub fn attempt_layer(mut self, middleware: impl ClientMiddleware) -> Self {
        self.attempt_layers.push(Arc::new(middleware));
        self
    }

    /// Follows each server's health service (`rpc.health.v1.Health`, watched on its
    /// connection) and routes only to servers that say SERVING (default off). A server
    /// that says NOT_SERVING — for example because its graceful shutdown began — leaves
    /// rotation at once, without failing a call; servers without the service count as
    /// serving.
    pub fn health_checks(mut self, enabled: bool) -> Self {
        self.health_checks = enabled;
        self
    }

    /// Hedges the first attempt of `#[idempotent]` calls (default off): when it has not
    /// answered after the policy's delay, a second attempt goes to another endpoint, the
    /// first useful answer wins and the other is cancelled. Calls of other methods are
    /// never hedged. See [`HedgingPolicy`] and docs/SCALING.md.
    pub fn hedging(mut self, policy: HedgingPolicy) -> Self {
        self.hedging = Some(policy);
        self
    }

    /// How long an endpoint that answered OVERLOADED gets no new calls while other
    /// endpoints can take them (default 100 ms, [`DEFAULT_OVERLOAD_PAUSE`]; zero: never
    /// paused). A server that sheds is at its limit: calls sent elsewhere meanwhile let
    /// it drain instead of being refused there. When every endpoint is paused, all are
    /// used.
    pub fn overload_pause(mut self, pause: Duration) -> Self {
        self.overload_pause = pause;
        self
    }

    /// Builds the channel and starts following the discovery and connecting. Must be
    /// called inside a tokio runtime (it spawns the pool's tasks).
    pub fn build(self) -> BalancedChannel {
        let subscription = self.discovery.subscribe();
        let pool = Pool::new(PoolSettings {
            connector: self.connector,
            client_config: self.client_config,
            reconnect: self.reconnect,
            outlier: self.outlier,
            health_checks: self.health_checks,
        });
        let inner = Arc::new(Inner {
            budget: RetryBudget::new(&self.retry),
            balancer: self.balancer,
            default_timeout: self.default_timeout,
            retry: self.retry,
            pool,
            attempt_layers: self.attempt_layers.into(),
            hedger: self.hedging.map_or_else(Hedger::disabled, Hedger::new),
            overload_pause: self.overload_pause,
            counters: Counters::default(),
            updates: Mutex::new(None),
            _discovery: self.discovery,
        });
        let task = tokio::spawn(follow(Arc::downgrade(&inner), subscription));
        *inner.updates.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        BalancedChannel { inner }
    }
}

/// What the channel knows about one endpoint right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint as discovery reports it.
    pub endpoint: Endpoint,
    /// Calls this channel has in flight on it.
    pub in_flight: usize,
    /// Whether a usable connection to it is open.
    pub connected: bool,
    /// Whether it is ejected (or waiting for a probe to succeed).
    pub ejected: bool,
    /// Whether connecting failed and the next attempt waits for a backoff.
    pub reconnecting: bool,
    /// The average latency of its answered calls, if any.
    pub latency: Option<Duration>,
    /// Whether its health service says it is serving (always true without
    /// [`Builder::health_checks`]).
    pub serving: bool,
}

/// A [`BalancedChannel`] that does not keep it alive: for what watches a channel (a
/// metrics collector) and should let it go, with its connections, when its users drop it.
#[derive(Clone, Debug)]
pub struct WeakBalancedChannel {
    inner: std::sync::Weak<Inner>,
}

impl WeakBalancedChannel {
    /// The channel, if anyone still holds it.
    pub fn upgrade(&self) -> Option<BalancedChannel> {
        self.inner.upgrade().map(|inner| BalancedChannel { inner })
    }
}

impl BalancedChannel {
    /// A handle that does not keep the channel (and its connections) alive.
    pub fn downgrade(&self) -> WeakBalancedChannel {
        WeakBalancedChannel {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// A builder over `discovery` with the default settings.
    pub fn builder(discovery: impl Discovery) -> Builder {
        Builder {
            discovery: Arc::new(discovery),
            balancer: Arc::new(RoundRobin::new()),
            connector: Arc::new(TcpConnector),
            client_config: ClientConfig::default()
                .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
                .keepalive(Some(DEFAULT_KEEPALIVE)),
            default_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            outlier: OutlierPolicy::default(),
            reconnect: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            health_checks: false,
            attempt_layers: Vec::new(),
            hedging: None,
            overload_pause: DEFAULT_OVERLOAD_PAUSE,
        }
    }

    /// A channel with default settings over a fixed list of addresses (a
    /// [`StaticDiscovery`]). Must be called inside a tokio runtime.
    pub fn from_static<E: Into<Endpoint>>(endpoints: impl IntoIterator<Item = E>) -> Self {
        Self::builder(StaticDiscovery::new(endpoints)).build()
    }

    /// The endpoints as the channel sees them now (empty until discovery has answered).
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.inner
            .pool
            .members()
            .iter()
            .map(|m| EndpointStatus {
                endpoint: (*m.info()).clone(),
                in_flight: m.load.in_flight(),
                connected: m.connection().is_some(),
                ejected: m.is_ejected(),
                reconnecting: matches!(m.link(), Link::Backoff(_) | Link::Reconnecting(_)),
                latency: m.load.latency(),
                serving: m.is_serving(),
            })
            .collect()
    }

    /// Waits until discovery has resolved the endpoint set at least once.
    pub async fn ready(&self) {
        let mut changes = self.inner.pool.subscribe();
        let _ = changes.wait_for(Option::is_some).await;
    }

    /// The balancer's name.
    pub fn balancer_name(&self) -> &'static str {
        self.inner.balancer.name()
    }

    /// The channel's counts since it was built, for metrics.
    pub fn stats(&self) -> ChannelStats {
        ChannelStats {
            retries: self.inner.counters.retries.load(Ordering::Relaxed),
            retry_budget_exhausted: self.inner.counters.budget_exhausted.load(Ordering::Relaxed),
            ejections: self.inner.pool.ejections(),
            hedges: self.inner.counters.hedges.load(Ordering::Relaxed),
            hedges_won: self.inner.counters.hedges_won.load(Ordering::Relaxed),
            hedge_budget_exhausted: self
                .inner
                .counters
                .hedge_budget_exhausted
                .load(Ordering::Relaxed),
        }
    }
}

/// What a [`BalancedChannel`] counted since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelStats {
    /// Attempts sent again after a failure.
    pub retries: u64,
    /// Retries refused because the retry budget was empty.
    pub retry_budget_exhausted: u64,
    /// Times an endpoint was ejected.
    pub ejections: u64,
    /// Hedges sent (second attempts of idempotent calls whose first was slow).
    pub hedges: u64,
    /// Calls whose hedge gave the answer.
    pub hedges_won: u64,
    /// Hedges not sent because the hedging budget was empty.
    pub hedge_budget_exhausted: u64,
}

#[derive(Default)]
struct Counters {
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    hedges: AtomicU64,
    hedges_won: AtomicU64,
    hedge_budget_exhausted: AtomicU64,
}

impl Channel for BalancedChannel {
    fn call<'a>(&'a self, call: OutgoingCall<'a>) -> ChannelFuture<'a> {
        Box::pin(self.inner.call(call))
    }

    fn default_timeout(&self) -> Duration {
        self.inner.default_timeout
    }

    /// Streaming calls go to one endpoint chosen like any call's, and are not retried
    /// (their items are consumed as they are sent). The stream holds its connection, so
    /// it finishes even if its endpoint leaves the set or drains.
    fn stream_connection<'a>(&'a self, call: &'a OutgoingCall<'a>) -> ConnectionFuture<'a> {
        Box::pin(async move {
            let (member, probe, connection) = self.inner.choose(call, &[]).await?;
            if probe {
                // The stream's outcome is not judged; let the next call probe.
                self.inner.pool.probe_abandoned(&member);
            }
            Ok(connection)
        })
    }
}

impl From<BalancedChannel> for traitrpc_core::Client {
    fn from(channel: BalancedChannel) -> Self {
        traitrpc_core::Client::from_channel(Arc::new(channel))
    }
}

struct Inner {
    balancer: Arc<dyn Balancer>,
    default_timeout: Duration,
    retry: RetryPolicy,
    budget: RetryBudget,
    pool: Arc<Pool>,
    /// Middleware around each attempt.
    attempt_layers: Arc<[Arc<dyn ClientMiddleware>]>,
    /// Hedging of idempotent calls: the channel's policy (or none), its budget.
    hedger: Hedger,
    /// How long an endpoint that answered OVERLOADED gets no new calls.
    overload_pause: Duration,
    counters: Counters,
    updates: Mutex<Option<AbortHandle>>,
    /// Kept alive as long as the channel.
    _discovery: Arc<dyn Discovery>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .updates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        // Stop connecting: members' tasks end with the pool's last reference, but
        // tasks hold only weak ones; abort them now.
        self.pool.apply(&[], &[]);
    }
}

/// Applies the discovery's changes to the pool until either is gone.
async fn follow(channel: Weak<Inner>, mut endpoints: Endpoints) {
    while let Some(changes) = endpoints.changed().await {
        let Some(inner) = channel.upgrade() else {
            return;
        };
        let set = endpoints.current().unwrap_or_else(|| Arc::from([]));
        inner.balancer.update(&set);
        inner.pool.apply(&set, &changes);
    }
    tracing::debug!("discovery stopped; the endpoint set stays as it is");
}

fn unavailable(reason: impl Into<Arc<str>>) -> RpcError {
    RpcError::Unavailable {
        reason: reason.into(),
    }
}

impl Inner {
    async fn call(&self, call: OutgoingCall<'_>) -> Result<ResponseFrame, RpcError> {
        self.budget.deposit();
        // Serving a call that is itself a retry or a hedge: this call is neither.
        let chain_stop = retry::serving_a_retry();
        // How long the first attempt may take before a hedge leaves, if it is hedged:
        // idempotent methods only, and not while serving a retry.
        let hedge_delay = if call.method.idempotent && !chain_stop {
            self.hedger.delay_for(call.hedging)
        } else {
            None
        };
        if hedge_delay.is_some() {
            self.hedger.deposit();
        }
        let mut tried: Vec<Arc<Member>> = Vec::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (member, probe, connection) = self.choose(&call, &tried).await?;
            let retry_metadata;
            let call = if attempt > 1 {
                // Counted when it is sent: a retry whose choice found nothing never was.
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                retry_metadata = retry::marked(call.metadata, attempt);
                OutgoingCall {
                    metadata: &retry_metadata,
                    ..call
                }
            } else {
                call
            };
            let (outcome, member) = match hedge_delay {
                // Only a call's first attempt is hedged; retries follow their own rules.
                Some(delay) if attempt == 1 => {
                    self.hedged(delay, member, probe, connection, &call, &mut tried)
                        .await
                }
                _ => (
                    self.attempt(&member, probe, &connection, &call).await,
                    member,
                ),
            };
            // A refusal that certainly did not run the call (or an interruption) comes
            // back as a frame; keep it to return as is if the call is not retried.
            let (error, frame) = match outcome {
                Ok(frame) => match frame.status {
                    status::SHUTTING_DOWN | status::OVERLOADED | status::INTERRUPTED => (
                        RpcError::from_status(call.method, frame.status, &frame.payload),
                        Some(frame),
                    ),
                    _ => return Ok(frame),
                },
                Err(error) => (error, None),
            };
            let give_up = |error: RpcError, frame: Option<ResponseFrame>| match frame {
                Some(frame) => Ok(frame),
                None => Err(error),
            };
            let decision = if chain_stop {
                Decision::GiveUp("the call being served is itself a retry (chain stop)")
            } else {
                decide(
                    &self.retry,
                    &self.budget,
                    &error,
                    call.method.idempotent,
                    attempt,
                    call.deadline,
                )
            };
            match decision {
                Decision::GiveUp(why) => {
                    if why == "retry budget exhausted" {
                        self.counters
                            .budget_exhausted
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            service = call.method.service, method = call.method.name,
                            endpoint = %member.addr, %error, "retry budget exhausted; not retried"
                        );
                    } else {
                        tracing::debug!(
                            service = call.method.service, method = call.method.name,
                            endpoint = %member.addr, %error, attempts = attempt,
                            "not retried: {why}"
                        );
                    }
                    return give_up(error, frame);
                }
                Decision::Retry(delay) => {
                    tracing::info!(
                        service = call.method.service, method = call.method.name,
                        endpoint = %member.addr, %error, attempt = attempt + 1, ?delay,
                        "retrying call"
                    );
                    tried.push(member);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Picks the member for the next attempt: a routable one this call has not tried if
    /// there is one. Waits for discovery's first answer, and while connections are being
    /// made, until the call's deadline; fails at once when nothing can be reached.
    async fn choose(
        &self,
        call: &OutgoingCall<'_>,
        tried: &[Arc<Member>],
    ) -> Result<(Arc<Member>, bool, Connection), RpcError> {
        let mut changes = self.pool.subscribe();
        loop {
            if changes.borrow_and_update().is_none() {
                match tokio::time::timeout_at(call.deadline, changes.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return Err(unavailable("the channel is closed")),
                    Err(_) => return Err(RpcError::DeadlineExceeded),
                }
            }
            let now = Instant::now();
            if now >= call.deadline {
                return Err(RpcError::DeadlineExceeded);
            }
            let routable = self.pool.routable();
            let mut forced = false;
            let routable = if routable.members.is_empty() {
                // Every connected endpoint is ejected: ignore ejection rather than fail
                // everything.
                let connected = self.pool.connected();
                forced = !connected.is_empty();
                snapshot_of(&connected)
            } else {
                routable
            };
            if routable.members.is_empty() {
                if self.pool.members().is_empty() {
                    return Err(unavailable("discovery reports no endpoints"));
                }
                if !self.pool.any_may_come_up() {
                    return Err(unavailable(self.pool.unreachable_reason()));
                }
                // Connections are being made: wait for the pool to change.
                match tokio::time::timeout_at(call.deadline, changes.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return Err(unavailable("the channel is closed")),
                    Err(_) => return Err(RpcError::DeadlineExceeded),
                }
            }
            // On a retry, prefer endpoints not tried yet (a small copy, off the first
            // attempt's path).
            let pool = if tried.is_empty() {
                routable
            } else {
                let untried: Vec<Arc<Member>> = routable
                    .members
                    .iter()
                    .filter(|m| !tried.iter().any(|t| Arc::ptr_eq(t, m)))
                    .cloned()
                    .collect();
                if untried.is_empty() {
                    routable
                } else {
                    snapshot_of(&untried)
                }
            };
            let pool = without_shedding(pool, now);
            if let Some((member, probe)) = self.admit_one(pool, call, now, forced) {
                if let Some(connection) = member.connection() {
                    return Ok((member, probe, connection));
                }
                // Its connection ended after the snapshot was taken, and its task has
                // not republished yet: it will (reconnecting, or leaving the snapshot),
                // so wait for that rather than spend an attempt of the call on it.
                if probe {
                    self.pool.probe_abandoned(&member);
                }
            }
            // Every candidate is on probation with its probe out, or the chosen one has
            // just lost its connection: wait until the pool changes.
            match tokio::time::timeout_at(call.deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(unavailable("the channel is closed")),
                Err(_) => return Err(RpcError::DeadlineExceeded),
            }
        }
    }

    /// Lets the balancer pick among `pool`, and admits the pick; a member that cannot
    /// take the call after all (on probation, its probe out) is set aside and the
    /// balancer picks among the rest. `None` once every member was set aside. Each
    /// round removes one member, so this ends without waiting: a balancer that keeps
    /// preferring the member with the probe out (it is the least loaded) cannot make a
    /// caller spin.
    fn admit_one(
        &self,
        mut pool: Routable,
        call: &OutgoingCall<'_>,
        now: Instant,
        forced: bool,
    ) -> Option<(Arc<Member>, bool)> {
        while !pool.members.is_empty() {
            let index = self
                .balancer
                .pick(&pool.candidates, call.routing_key)
                .min(pool.members.len() - 1);
            let chosen = Arc::clone(&pool.members[index]);
            if let Some(probe) = chosen.admit(now, forced) {
                tracing::debug!(
                    service = call.method.service, method = call.method.name,
                    endpoint = %chosen.addr, balancer = self.balancer.name(), probe,
                    "endpoint chosen"
                );
                return Some((chosen, probe));
            }
            let rest: Vec<Arc<Member>> = pool
                .members
                .iter()
                .filter(|m| !Arc::ptr_eq(m, &chosen))
                .cloned()
                .collect();
            pool = snapshot_of(&rest);
        }
        None
    }

    /// One attempt on one member.
    async fn attempt(
        &self,
        member: &Arc<Member>,
        probe: bool,
        connection: &Connection,
        call: &OutgoingCall<'_>,
    ) -> Result<ResponseFrame, RpcError> {
        let mut guard = AttemptGuard::new(&self.pool, member, probe);
        let started = Instant::now();
        let result = if self.attempt_layers.is_empty() {
            connection.send(call).await
        } else {
            ClientNext::new(&self.attempt_layers, Destination::Connection(connection))
                .run(*call)
                .await
        };
        let verdict = verdict(&result);
        let overloaded = match &result {
            Ok(frame) => frame.status == status::OVERLOADED,
            Err(error) => matches!(error, RpcError::Overloaded { .. }),
        };
        if overloaded && !self.overload_pause.is_zero() {
            member.shed_until(Instant::now() + self.overload_pause);
        }
        if verdict == Verdict::Success {
            let elapsed = started.elapsed();
            member.load.observe(elapsed);
            self.hedger.record(elapsed);
        }
        self.pool.record(member, verdict, probe);
        guard.recorded = true;
        result
    }
}

/// How an attempt's result counts for the endpoint's health.
fn verdict(result: &Result<ResponseFrame, RpcError>) -> Verdict {
    match result {
        Ok(frame) => match frame.status {
            status::OVERLOADED | status::HANDLER_PANICKED | status::INTERNAL => Verdict::Failure,
            status::SHUTTING_DOWN | status::INTERRUPTED => Verdict::Neutral,
            _ => Verdict::Success,
        },
        Err(RpcError::ShuttingDown) => Verdict::Neutral,
        // A missed deadline is the mark of a stuck or black-holed endpoint.
        Err(
            RpcError::Connect { .. }
            | RpcError::ConnectionClosed { .. }
            | RpcError::KeepaliveTimeout { .. }
            | RpcError::Unavailable { .. }
            | RpcError::Protocol(_)
            | RpcError::GoAway { .. }
            | RpcError::Overloaded { .. }
            | RpcError::DeadlineExceeded,
        ) => Verdict::Failure,
        Err(_) => Verdict::Neutral,
    }
}

/// `pool` without the members pausing after an OVERLOADED answer, unless that leaves
/// none (a fleet that sheds everywhere is used as it is).
fn without_shedding(pool: Routable, now: Instant) -> Routable {
    if !pool.members.iter().any(|m| m.is_shedding(now)) {
        return pool;
    }
    let calm: Vec<Arc<Member>> = pool
        .members
        .iter()
        .filter(|m| !m.is_shedding(now))
        .cloned()
        .collect();
    if calm.is_empty() {
        pool
    } else {
        snapshot_of(&calm)
    }
}

/// A routable snapshot of `members` (for retries and forced picks).
fn snapshot_of(members: &[Arc<Member>]) -> Routable {
    Routable {
        candidates: members
            .iter()
            .map(|m| crate::balance::Candidate::new(m.info(), Arc::clone(&m.load)))
            .collect(),
        members: members.iter().cloned().collect(),
    }
}

/// Counts an attempt in flight on its endpoint, and gives a probe slot back if the
/// attempt is dropped before its outcome is known.
struct AttemptGuard<'a> {
    pool: &'a Pool,
    member: &'a Member,
    probe: bool,
    recorded: bool,
}

impl<'a> AttemptGuard<'a> {
    fn new(pool: &'a Pool, member: &'a Member, probe: bool) -> Self {
        member.load.start();
        AttemptGuard {
            pool,
            member,
            probe,
            recorded: false,
        }
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.member.load.end();
        if self.probe && !self.recorded {
            self.pool.probe_abandoned(self.member);
        }
    }
}
