//! [`BalancedChannel`]: a [`Channel`] over a discovered set of endpoints, with lazy
//! connections, reconnection with backoff, load balancing, safe retries and outlier
//! ejection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use rpc_core::protocol::{status, ResponseFrame};
use rpc_core::{
    Channel, ChannelFuture, ClientConfig, Connection, ConnectionFuture, OutgoingCall, RpcError,
};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::balance::{Balancer, Candidate, RoundRobin};
use crate::discovery::{Discovery, Endpoints, StaticDiscovery};
use crate::endpoint::{Change, Endpoint};
use crate::policy::{Backoff, OutlierPolicy, RetryBudget, RetryPolicy};

/// A [`Channel`] that spreads calls over the endpoints a [`Discovery`] reports.
///
/// Build it with [`BalancedChannel::builder`] (or [`BalancedChannel::from_static`]) and
/// hand it to any generated client: `CalculatorClient::new(channel.clone())`. The trait
/// and the call sites are the same as with a single connection. Cheap to clone; all
/// clones share the endpoints, connections and retry budget.
///
/// Per call it picks an endpoint with its [`Balancer`], connects to it if needed (one
/// connection per endpoint, opened on first use and reopened with exponential backoff
/// after it is lost), sends the call, and retries on another endpoint when that is safe
/// (see [`RetryPolicy`]). Endpoints that keep failing are ejected for a while and probed
/// before they return ([`OutlierPolicy`]). Endpoint changes from discovery apply at once;
/// calls in flight on a removed endpoint finish normally.
///
/// `tracing` events: `endpoint chosen` (debug), `endpoint added` / `removed` / `updated`,
/// `connected`, `connect failed`, `retrying call`, `endpoint ejected`, `endpoint restored`
/// (info), `retry budget exhausted` (warn).
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
    client_config: ClientConfig,
    default_timeout: Duration,
    retry: RetryPolicy,
    outlier: OutlierPolicy,
    reconnect: Backoff,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("balancer", &self.balancer.name())
            .field("client_config", &self.client_config)
            .field("default_timeout", &self.default_timeout)
            .field("retry", &self.retry)
            .field("outlier", &self.outlier)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

/// The connect timeout of a balanced channel's connections unless
/// [`Builder::client_config`] says otherwise: short, because another endpoint can take
/// the call.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Builder {
    /// The balancer (default [`RoundRobin`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Arc::new(balancer);
        self
    }

    /// Settings of each endpoint's connection (default `ClientConfig::default()` with a
    /// connect timeout of 2 s, [`DEFAULT_CONNECT_TIMEOUT`]). Its default timeout is not
    /// used: see [`Builder::default_timeout`].
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

    /// Builds the channel and starts following the discovery. Must be called inside a
    /// tokio runtime (it spawns the task that applies endpoint changes).
    pub fn build(self) -> BalancedChannel {
        let subscription = self.discovery.subscribe();
        let (generation, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            budget: RetryBudget::new(&self.retry),
            balancer: self.balancer,
            client_config: self.client_config,
            default_timeout: self.default_timeout,
            retry: self.retry,
            outlier: self.outlier,
            reconnect: self.reconnect,
            endpoints: RwLock::new(Arc::new(Vec::new())),
            generation,
            updates: Mutex::new(None),
            _discovery: self.discovery,
        });
        let task = tokio::spawn(follow(Arc::downgrade(&inner), subscription));
        *lock(&inner.updates) = Some(task.abort_handle());
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
    /// Whether a connection to it is open.
    pub connected: bool,
    /// Whether it is ejected (or waiting for a probe to succeed).
    pub ejected: bool,
    /// Whether connecting failed and the next attempt waits for a backoff.
    pub reconnecting: bool,
}

impl BalancedChannel {
    /// A builder over `discovery` with the default settings.
    pub fn builder(discovery: impl Discovery) -> Builder {
        Builder {
            discovery: Arc::new(discovery),
            balancer: Arc::new(RoundRobin::new()),
            client_config: ClientConfig::default().connect_timeout(DEFAULT_CONNECT_TIMEOUT),
            default_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            outlier: OutlierPolicy::default(),
            reconnect: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
        }
    }

    /// A channel with default settings over a fixed list of addresses (a
    /// [`StaticDiscovery`]). Must be called inside a tokio runtime.
    pub fn from_static<E: Into<Endpoint>>(endpoints: impl IntoIterator<Item = E>) -> Self {
        Self::builder(StaticDiscovery::new(endpoints)).build()
    }

    /// The endpoints as the channel sees them now (empty until discovery has answered).
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        self.inner
            .snapshot()
            .iter()
            .map(|e| {
                let slot = lock(&e.slot);
                let health = lock(&e.health);
                EndpointStatus {
                    endpoint: (*e.info()).clone(),
                    in_flight: e.in_flight.load(Ordering::Relaxed),
                    connected: slot.conn.as_ref().is_some_and(|c| !c.is_closed()),
                    ejected: health.ejected_until.is_some(),
                    reconnecting: slot.retry_at.is_some_and(|t| t > now),
                }
            })
            .collect()
    }

    /// Waits until discovery has resolved the endpoint set at least once.
    pub async fn ready(&self) {
        let mut generation = self.inner.generation.subscribe();
        let _ = generation.wait_for(Option::is_some).await;
    }

    /// The balancer's name.
    pub fn balancer_name(&self) -> &'static str {
        self.inner.balancer.name()
    }
}

impl Channel for BalancedChannel {
    fn call<'a>(&'a self, call: OutgoingCall<'a>) -> ChannelFuture<'a> {
        Box::pin(self.inner.call(call))
    }

    fn default_timeout(&self) -> Duration {
        self.inner.default_timeout
    }

    /// Streaming calls go to one endpoint chosen like any call's, and are not retried
    /// (their items are consumed as they are sent). Connect failures count toward
    /// ejection.
    fn stream_connection<'a>(&'a self, call: &'a OutgoingCall<'a>) -> ConnectionFuture<'a> {
        Box::pin(async move {
            let (endpoint, probe) = self.inner.choose(call, &[]).await?;
            let mut guard = AttemptGuard::new(&endpoint, probe);
            let result = endpoint.connection(&self.inner, call.deadline).await;
            let verdict = match result {
                Ok(_) => Verdict::Neutral,
                Err(_) => Verdict::Failure,
            };
            endpoint.record(&self.inner.outlier, verdict, probe);
            guard.recorded = true;
            result
        })
    }
}

impl From<BalancedChannel> for rpc_core::Client {
    fn from(channel: BalancedChannel) -> Self {
        rpc_core::Client::from_channel(Arc::new(channel))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Inner {
    balancer: Arc<dyn Balancer>,
    client_config: ClientConfig,
    default_timeout: Duration,
    retry: RetryPolicy,
    outlier: OutlierPolicy,
    reconnect: Backoff,
    budget: RetryBudget,
    endpoints: RwLock<Arc<Vec<Arc<EndpointState>>>>,
    /// `None` until discovery resolved the set; then counts the changes applied.
    generation: watch::Sender<Option<u64>>,
    updates: Mutex<Option<AbortHandle>>,
    /// Kept alive as long as the channel.
    _discovery: Arc<dyn Discovery>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.updates).take() {
            task.abort();
        }
    }
}

/// Applies the discovery's changes to the channel until either is gone.
async fn follow(channel: Weak<Inner>, mut endpoints: Endpoints) {
    while let Some(changes) = endpoints.changed().await {
        let Some(inner) = channel.upgrade() else {
            return;
        };
        let set = endpoints.current().unwrap_or_else(|| Arc::from([]));
        inner.apply(&set, &changes);
    }
    tracing::debug!("discovery stopped; the endpoint set stays as it is");
}

/// How an attempt went, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Neutral,
}

impl Inner {
    fn snapshot(&self) -> Arc<Vec<Arc<EndpointState>>> {
        Arc::clone(
            &self
                .endpoints
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Installs a new endpoint set, keeping the state (connection, health) of endpoints
    /// that stay.
    fn apply(&self, set: &[Endpoint], changes: &[Change]) {
        let old = self.snapshot();
        let mut by_addr: HashMap<&str, &Arc<EndpointState>> =
            old.iter().map(|e| (e.addr.as_str(), e)).collect();
        let new: Vec<Arc<EndpointState>> = set
            .iter()
            .map(|e| match by_addr.remove(e.addr.as_str()) {
                Some(state) => {
                    state.set_info(e.clone());
                    Arc::clone(state)
                }
                None => Arc::new(EndpointState::new(e.clone())),
            })
            .collect();
        self.balancer.update(set);
        *self
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        for change in changes {
            match change {
                Change::Added(e) => {
                    tracing::info!(endpoint = %e.addr, weight = e.weight, "endpoint added")
                }
                Change::Removed(e) => tracing::info!(endpoint = %e.addr, "endpoint removed"),
                Change::Updated { new, .. } => {
                    tracing::info!(endpoint = %new.addr, weight = new.weight, "endpoint updated")
                }
            }
        }
        self.generation
            .send_modify(|g| *g = Some(g.map_or(0, |n| n + 1)));
    }

    async fn call(&self, call: OutgoingCall<'_>) -> Result<ResponseFrame, RpcError> {
        self.budget.deposit();
        let mut tried: Vec<Arc<EndpointState>> = Vec::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (endpoint, probe) = self.choose(&call, &tried).await?;
            let outcome = self.attempt(&endpoint, probe, &call).await;
            // A refusal that certainly did not run the call comes back as a frame; keep
            // it to return as is if the call cannot be retried.
            let (error, frame) = match outcome {
                Ok(frame) => match frame.status {
                    status::SHUTTING_DOWN => (RpcError::ShuttingDown, Some(frame)),
                    status::OVERLOADED => (
                        RpcError::Overloaded {
                            message: String::from_utf8_lossy(&frame.payload).into_owned(),
                        },
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
            let safe = error.is_safe_to_retry()
                || (call.method.idempotent && matches!(error, RpcError::ConnectionClosed { .. }));
            if !safe {
                tracing::debug!(
                    service = call.method.service, method = call.method.name,
                    endpoint = %endpoint.addr, %error,
                    "not retried: the call may have run and the method is not idempotent"
                );
                return give_up(error, frame);
            }
            if attempt >= self.retry.max_attempts {
                tracing::debug!(
                    service = call.method.service, method = call.method.name,
                    endpoint = %endpoint.addr, %error, attempts = attempt,
                    "not retried: attempts exhausted"
                );
                return give_up(error, frame);
            }
            let delay = self.retry.backoff.delay(attempt);
            if Instant::now() + delay >= call.deadline {
                return give_up(error, frame);
            }
            if !self.budget.try_withdraw() {
                tracing::warn!(
                    service = call.method.service, method = call.method.name,
                    endpoint = %endpoint.addr, %error,
                    "retry budget exhausted; not retried"
                );
                return give_up(error, frame);
            }
            tracing::info!(
                service = call.method.service, method = call.method.name,
                endpoint = %endpoint.addr, %error, attempt = attempt + 1, ?delay,
                "retrying call"
            );
            tried.push(endpoint);
            tokio::time::sleep(delay).await;
        }
    }

    /// Picks the endpoint for the next attempt: a healthy one this call has not tried if
    /// there is one. Waits for discovery's first answer, and for a reconnect backoff to end
    /// when every endpoint is in one, until the call's deadline.
    async fn choose(
        &self,
        call: &OutgoingCall<'_>,
        tried: &[Arc<EndpointState>],
    ) -> Result<(Arc<EndpointState>, bool), RpcError> {
        let mut generation = self.generation.subscribe();
        loop {
            if generation.borrow_and_update().is_none() {
                match tokio::time::timeout_at(call.deadline, generation.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return Err(unavailable("the channel is closed")),
                    Err(_) => return Err(RpcError::DeadlineExceeded),
                }
            }
            let snapshot = self.snapshot();
            if snapshot.is_empty() {
                return Err(unavailable("discovery reports no endpoints"));
            }
            let now = Instant::now();
            if now >= call.deadline {
                return Err(RpcError::DeadlineExceeded);
            }
            let untried = |e: &&Arc<EndpointState>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
            let healthy: Vec<&Arc<EndpointState>> =
                snapshot.iter().filter(|e| e.available(now)).collect();
            let mut pool: Vec<&Arc<EndpointState>> =
                healthy.iter().copied().filter(untried).collect();
            if pool.is_empty() {
                pool = healthy;
            }
            // Every endpoint is ejected: ignore ejection rather than fail everything.
            let forced = pool.is_empty();
            if forced {
                pool = snapshot.iter().filter(|e| !e.backing_off(now)).collect();
            }
            if pool.is_empty() {
                // Every endpoint is between two connection attempts.
                let wake = snapshot
                    .iter()
                    .filter_map(|e| lock(&e.slot).retry_at)
                    .min()
                    .unwrap_or(now + Duration::from_millis(10));
                if wake >= call.deadline {
                    return Err(unavailable("no endpoint is reachable"));
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = generation.changed() => {}
                }
                continue;
            }
            let infos: Vec<Arc<Endpoint>> = pool.iter().map(|e| e.info()).collect();
            let candidates: Vec<Candidate<'_>> = pool
                .iter()
                .zip(&infos)
                .map(|(e, info)| Candidate {
                    endpoint: info,
                    in_flight: e.in_flight.load(Ordering::Relaxed),
                })
                .collect();
            let index = self
                .balancer
                .pick(&candidates, call.routing_key)
                .min(pool.len() - 1);
            let chosen = Arc::clone(pool[index]);
            let Some(probe) = chosen.admit(now, forced) else {
                // Another call took the probe slot meanwhile: pick again.
                continue;
            };
            tracing::debug!(
                service = call.method.service, method = call.method.name,
                endpoint = %chosen.addr, balancer = self.balancer.name(), probe,
                "endpoint chosen"
            );
            return Ok((chosen, probe));
        }
    }

    /// One attempt on one endpoint.
    async fn attempt(
        &self,
        endpoint: &Arc<EndpointState>,
        probe: bool,
        call: &OutgoingCall<'_>,
    ) -> Result<ResponseFrame, RpcError> {
        let mut guard = AttemptGuard::new(endpoint, probe);
        let result = match endpoint.connection(self, call.deadline).await {
            Ok(connection) => connection.send(call).await,
            Err(error) => Err(error),
        };
        let verdict = match &result {
            Ok(frame) => match frame.status {
                status::OVERLOADED | status::HANDLER_PANICKED | status::INTERNAL => {
                    Verdict::Failure
                }
                status::SHUTTING_DOWN => {
                    endpoint.draining(self);
                    Verdict::Neutral
                }
                _ => Verdict::Success,
            },
            Err(RpcError::ShuttingDown) => {
                endpoint.draining(self);
                Verdict::Neutral
            }
            Err(
                RpcError::Connect { .. }
                | RpcError::ConnectionClosed { .. }
                | RpcError::Unavailable { .. }
                | RpcError::Protocol(_)
                | RpcError::Overloaded { .. },
            ) => Verdict::Failure,
            Err(_) => Verdict::Neutral,
        };
        endpoint.record(&self.outlier, verdict, probe);
        guard.recorded = true;
        result
    }
}

fn unavailable(reason: &str) -> RpcError {
    RpcError::Unavailable {
        reason: reason.into(),
    }
}

/// Counts an attempt in flight on its endpoint, and gives a probe slot back if the
/// attempt is dropped before its outcome is known.
struct AttemptGuard<'a> {
    endpoint: &'a EndpointState,
    probe: bool,
    recorded: bool,
}

impl<'a> AttemptGuard<'a> {
    fn new(endpoint: &'a EndpointState, probe: bool) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        AttemptGuard {
            endpoint,
            probe,
            recorded: false,
        }
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe && !self.recorded {
            lock(&self.endpoint.health).probing = false;
        }
    }
}

/// One endpoint: its current description, its connection and its health.
struct EndpointState {
    addr: String,
    info: RwLock<Arc<Endpoint>>,
    in_flight: AtomicUsize,
    slot: Mutex<Slot>,
    /// Held while connecting, so that one attempt connects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    /// Connection attempts that failed in a row.
    failures: u32,
    /// No new attempt before this.
    retry_at: Option<Instant>,
}

#[derive(Default)]
struct Health {
    /// Failures in a row.
    failures: u32,
    /// Ejections in a row (reset by a success).
    ejections: u32,
    /// Set while ejected; once past, the endpoint is on probation until a probe succeeds.
    ejected_until: Option<Instant>,
    /// A probe is in flight.
    probing: bool,
}

impl EndpointState {
    fn new(endpoint: Endpoint) -> Self {
        EndpointState {
            addr: endpoint.addr.clone(),
            info: RwLock::new(Arc::new(endpoint)),
            in_flight: AtomicUsize::new(0),
            slot: Mutex::new(Slot::default()),
            connecting: tokio::sync::Mutex::new(()),
            health: Mutex::new(Health::default()),
        }
    }

    fn info(&self) -> Arc<Endpoint> {
        Arc::clone(&self.info.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set_info(&self, endpoint: Endpoint) {
        *self.info.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(endpoint);
    }

    fn backing_off(&self, now: Instant) -> bool {
        lock(&self.slot).retry_at.is_some_and(|t| t > now)
    }

    /// Can take a call now: not waiting to reconnect, not ejected, not on probation with
    /// a probe already in flight.
    fn available(&self, now: Instant) -> bool {
        if self.backing_off(now) {
            return false;
        }
        let health = lock(&self.health);
        match health.ejected_until {
            None => true,
            Some(until) => until <= now && !health.probing,
        }
    }

    /// Admits a call chosen for this endpoint. `Some(true)` if it is the probe of an
    /// endpoint on probation, `None` if the endpoint cannot take it after all.
    fn admit(&self, now: Instant, forced: bool) -> Option<bool> {
        let mut health = lock(&self.health);
        match health.ejected_until {
            None => Some(false),
            Some(_) if forced => Some(false),
            Some(until) if until > now || health.probing => None,
            Some(_) => {
                health.probing = true;
                Some(true)
            }
        }
    }

    /// Updates the health after an attempt: ejects after too many failures in a row,
    /// restores after a successful probe.
    fn record(&self, policy: &OutlierPolicy, verdict: Verdict, probe: bool) {
        let mut health = lock(&self.health);
        if probe {
            health.probing = false;
        }
        match verdict {
            Verdict::Success => {
                if health.ejected_until.is_some() {
                    tracing::info!(endpoint = %self.addr, probe, "endpoint restored");
                }
                *health = Health::default();
            }
            Verdict::Failure => {
                let now = Instant::now();
                match health.ejected_until {
                    // A failed probe: out again, for longer.
                    Some(_) if probe => self.eject(&mut health, policy, now, "probe failed"),
                    // Already out: failures of calls sent before the ejection.
                    Some(_) => {}
                    None => {
                        health.failures += 1;
                        if policy.consecutive_failures > 0
                            && health.failures >= policy.consecutive_failures
                        {
                            self.eject(&mut health, policy, now, "consecutive failures");
                        }
                    }
                }
            }
            Verdict::Neutral => {}
        }
    }

    fn eject(&self, health: &mut Health, policy: &OutlierPolicy, now: Instant, why: &str) {
        health.ejections += 1;
        let period = policy.ejection(health.ejections);
        health.ejected_until = Some(now + period);
        health.failures = 0;
        tracing::info!(
            endpoint = %self.addr, reason = why, ?period, ejections = health.ejections,
            "endpoint ejected"
        );
    }

    /// The server is shutting down: forget its connection and wait a backoff before
    /// connecting again.
    fn draining(&self, inner: &Inner) {
        let mut slot = lock(&self.slot);
        if slot.conn.take().is_some() {
            slot.failures = slot.failures.max(1);
            slot.retry_at = Some(Instant::now() + inner.reconnect.delay(slot.failures));
            tracing::debug!(endpoint = %self.addr, "server is shutting down; connection dropped");
        }
    }

    fn cached(&self) -> Option<Connection> {
        lock(&self.slot)
            .conn
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// The endpoint's open connection, connecting first if there is none.
    async fn connection(&self, inner: &Inner, deadline: Instant) -> Result<Connection, RpcError> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let _connecting = tokio::time::timeout_at(deadline, self.connecting.lock())
            .await
            .map_err(|_| RpcError::DeadlineExceeded)?;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        {
            let mut slot = lock(&self.slot);
            if let Some(at) = slot.retry_at.filter(|&t| t > Instant::now()) {
                return Err(RpcError::Unavailable {
                    reason: format!(
                        "{} is unreachable; next connection attempt in {:?}",
                        self.addr,
                        at - Instant::now()
                    )
                    .into(),
                });
            }
            if slot.conn.take().is_some() {
                tracing::info!(endpoint = %self.addr, "connection lost; reconnecting");
            }
        }
        let connect =
            rpc_transport_tcp::connect_with_config(self.addr.as_str(), inner.client_config.clone());
        let result = tokio::time::timeout_at(deadline, connect)
            .await
            .map_err(|_| RpcError::DeadlineExceeded)?;
        let mut slot = lock(&self.slot);
        match result {
            Ok(conn) => {
                slot.conn = Some(conn.clone());
                slot.failures = 0;
                slot.retry_at = None;
                tracing::info!(endpoint = %self.addr, "connected");
                Ok(conn)
            }
            Err(error) => {
                slot.failures += 1;
                let delay = inner.reconnect.delay(slot.failures);
                slot.retry_at = Some(Instant::now() + delay);
                tracing::info!(
                    endpoint = %self.addr, %error, failures = slot.failures, retry_in = ?delay,
                    "connect failed"
                );
                Err(error)
            }
        }
    }
}
