//! The pool of endpoints behind a [`BalancedChannel`](crate::BalancedChannel): it follows
//! a [`Discovery`](crate::Discovery), keeps one [`Member`] per endpoint with a background
//! task that connects, reconnects with backoff and replaces a connection once the server
//! drains it, tracks each endpoint's health (`health`) and load (`load`), and publishes
//! the endpoints a call can go to now as an immutable [`Routable`] snapshot.
//!
//! Calls never connect and never scan the pool under locks: they read the snapshot (one
//! reference count), let the balancer pick from it, and take the chosen member's
//! connection. Connecting is not bounded by any call's deadline; a call waits for a
//! connection only while one is being made, and fails at once when every endpoint is
//! unreachable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use traitrpc_core::{ClientConfig, Connection, RpcError};

use crate::balance::Candidate;
use crate::connector::Connector;
use crate::endpoint::{Change, Endpoint};
use crate::health::{Health, Transition, Verdict};
use crate::load::EndpointLoad;
use crate::policy::{Backoff, OutlierPolicy};

/// The most endpoints a pool takes from discovery; beyond it the rest are ignored (with
/// a warning), so bad registry data cannot make a client open connections without bound.
pub const MAX_ENDPOINTS: usize = 10_000;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a member's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// A connection attempt is under way (or about to be).
    Connecting,
    /// Connected and usable.
    Ready,
    /// The last attempt failed; the next one waits until then.
    Backoff(Instant),
    /// Its connection ended, and it reconnects at this time: the server is draining,
    /// or the connection ended right after it was made. It answered the handshake, so
    /// calls wait for it rather than fail as unreachable.
    Reconnecting(Instant),
}

impl Link {
    /// Whether the member may come up soon, so that calls wait for it: it is connecting,
    /// reconnecting after a pause (its server answered it a moment ago), or `Ready` (if
    /// its connection just ended, its task is about to change the link, and wakes
    /// waiting calls when it does). Only a member whose connection attempts fail is not.
    fn may_come_up(self) -> bool {
        matches!(self, Link::Connecting | Link::Ready | Link::Reconnecting(_))
    }
}

/// One endpoint of the pool.
pub(crate) struct Member {
    pub(crate) addr: String,
    info: RwLock<Arc<Endpoint>>,
    pub(crate) load: Arc<EndpointLoad>,
    state: Mutex<MemberState>,
    health: Mutex<Health>,
    /// What its server's health service says (`true` unless it said NOT_SERVING), when
    /// the pool watches it.
    serving: AtomicBool,
    /// Signalled when the member is ejected or restored (its task re-arms its timer).
    health_changed: Notify,
    /// Attempts it answered successfully, ever: a connection that carried none and was
    /// lost at once counts as a failed attempt ([`STABLE_CONNECTION`]).
    successes: AtomicU64,
    /// Until when it gets no new calls while others can take them, because it answered
    /// OVERLOADED: nanoseconds after [`epoch`], 0 for never.
    shedding_until: AtomicU64,
    task: Mutex<Option<AbortHandle>>,
}

/// The instant shedding pauses are counted from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

struct MemberState {
    link: Link,
    connection: Option<Connection>,
    /// Why the last connection attempt failed, for the error a call gets.
    last_error: Option<RpcError>,
}

impl Member {
    fn new(endpoint: Endpoint) -> Self {
        Member {
            addr: endpoint.addr.clone(),
            info: RwLock::new(Arc::new(endpoint)),
            load: Arc::new(EndpointLoad::new()),
            state: Mutex::new(MemberState {
                link: Link::Connecting,
                connection: None,
                last_error: None,
            }),
            health: Mutex::new(Health::default()),
            serving: AtomicBool::new(true),
            health_changed: Notify::new(),
            successes: AtomicU64::new(0),
            shedding_until: AtomicU64::new(0),
            task: Mutex::new(None),
        }
    }

    pub(crate) fn info(&self) -> Arc<Endpoint> {
        Arc::clone(&self.info.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn link(&self) -> Link {
        lock(&self.state).link
    }

    /// Its usable connection, if it has one.
    pub(crate) fn connection(&self) -> Option<Connection> {
        let state = lock(&self.state);
        state.connection.as_ref().filter(|c| c.is_usable()).cloned()
    }

    pub(crate) fn is_ejected(&self) -> bool {
        lock(&self.health).is_ejected()
    }

    /// Admits a call picked for it: `Some(probe)` or `None` (see `Health::admit`).
    pub(crate) fn admit(&self, now: Instant, forced: bool) -> Option<bool> {
        lock(&self.health).admit(now, forced)
    }

    /// It answered OVERLOADED: it gets no new calls until `until` while other endpoints
    /// can take them.
    pub(crate) fn shed_until(&self, until: Instant) {
        let nanos = until.saturating_duration_since(epoch()).as_nanos() as u64;
        self.shedding_until
            .fetch_max(nanos.max(1), Ordering::Relaxed);
    }

    /// Whether it is in a pause for having answered OVERLOADED.
    pub(crate) fn is_shedding(&self, now: Instant) -> bool {
        let until = self.shedding_until.load(Ordering::Relaxed);
        until != 0 && (now.saturating_duration_since(epoch()).as_nanos() as u64) < until
    }

    /// Whether its server's health service says it is serving (always, unless watched).
    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    fn routable(&self, now: Instant) -> bool {
        self.is_serving() && self.connection().is_some() && {
            let health = lock(&self.health);
            health.ejected_until().is_none_or(|until| until <= now)
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// The endpoints a call can go to now, in two parallel lists (the balancer sees the
/// candidates; the channel uses the member at the same index).
#[derive(Clone, Default)]
pub(crate) struct Routable {
    pub(crate) candidates: Arc<[Candidate]>,
    pub(crate) members: Arc<[Arc<Member>]>,
}

/// What the pool was built with.
pub(crate) struct PoolSettings {
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) client_config: ClientConfig,
    pub(crate) reconnect: Backoff,
    pub(crate) outlier: OutlierPolicy,
    /// Watch each server's health service and route only to SERVING ones.
    pub(crate) health_checks: bool,
}

/// The endpoints of one channel.
pub(crate) struct Pool {
    settings: PoolSettings,
    members: RwLock<Arc<Vec<Arc<Member>>>>,
    routable: RwLock<Routable>,
    /// `None` until discovery resolved the set; then counts the changes to the pool
    /// (set, connections, health), so waiting calls look again.
    changes: watch::Sender<Option<u64>>,
    /// Ejections so far.
    ejections: std::sync::atomic::AtomicU64,
}

impl Pool {
    pub(crate) fn new(settings: PoolSettings) -> Arc<Pool> {
        Arc::new(Pool {
            settings,
            members: RwLock::new(Arc::new(Vec::new())),
            routable: RwLock::new(Routable::default()),
            changes: watch::Sender::new(None),
            ejections: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Every member (for status reports).
    pub(crate) fn members(&self) -> Arc<Vec<Arc<Member>>> {
        Arc::clone(&self.members.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The endpoints a call can go to now.
    pub(crate) fn routable(&self) -> Routable {
        self.routable
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A subscription to the pool's changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes
            .send_modify(|g| *g = Some(g.map_or(0, |n| n + 1)));
    }

    /// Rebuilds the routable snapshot from the members, then wakes waiting calls.
    fn republish(&self) {
        let now = Instant::now();
        let members = self.members();
        let routable: Vec<Arc<Member>> = members
            .iter()
            .filter(|m| m.routable(now))
            .cloned()
            .collect();
        let candidates: Vec<Candidate> = routable
            .iter()
            .map(|m| Candidate::new(m.info(), Arc::clone(&m.load)))
            .collect();
        *self
            .routable
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Routable {
            candidates: candidates.into(),
            members: routable.into(),
        };
        self.changed();
    }

    /// Installs a new endpoint set from discovery: members of endpoints that stay keep
    /// their connection and health; new ones start connecting; removed ones stop (calls
    /// and streams on their connection finish, since they hold it).
    pub(crate) fn apply(self: &Arc<Self>, set: &[Endpoint], changes: &[Change]) {
        let set = if set.len() > MAX_ENDPOINTS {
            tracing::warn!(
                endpoints = set.len(),
                kept = MAX_ENDPOINTS,
                "discovery reports more endpoints than a channel takes; ignoring the rest"
            );
            &set[..MAX_ENDPOINTS]
        } else {
            set
        };
        let old = self.members();
        let mut by_addr: HashMap<&str, &Arc<Member>> =
            old.iter().map(|m| (m.addr.as_str(), m)).collect();
        let mut started = Vec::new();
        let new: Vec<Arc<Member>> = set
            .iter()
            .map(|e| match by_addr.remove(e.addr.as_str()) {
                Some(member) => {
                    *member.info.write().unwrap_or_else(PoisonError::into_inner) =
                        Arc::new(e.clone());
                    Arc::clone(member)
                }
                None => {
                    let member = Arc::new(Member::new(e.clone()));
                    started.push(Arc::clone(&member));
                    member
                }
            })
            .collect();
        *self.members.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        for member in started {
            let task = tokio::spawn(maintain(Arc::downgrade(self), Arc::clone(&member)));
            *lock(&member.task) = Some(task.abort_handle());
        }
        // Removed members stop their task as their last reference goes; stop it now.
        for member in by_addr.into_values() {
            if let Some(task) = lock(&member.task).take() {
                task.abort();
            }
        }
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
        self.republish();
    }

    /// A probe of `member` ended without a verdict (dropped, or a stream that is not
    /// judged): the next call may probe, and calls waiting for the slot look again.
    pub(crate) fn probe_abandoned(&self, member: &Member) {
        lock(&member.health).probe_abandoned();
        self.changed();
    }

    /// Records how an attempt on `member` went; ejects or restores it as the health says.
    pub(crate) fn record(&self, member: &Member, verdict: Verdict, probe: bool) {
        if verdict == Verdict::Success {
            member.successes.fetch_add(1, Ordering::Relaxed);
        }
        let transition =
            lock(&member.health).record(&self.settings.outlier, verdict, probe, Instant::now());
        match transition {
            // A probe that settled nothing frees the probe slot: calls waiting for it
            // may pick the member again.
            Transition::None if probe => self.changed(),
            Transition::None => {}
            Transition::Ejected(until) => {
                self.ejections.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    endpoint = %member.addr, probe,
                    period = ?until.saturating_duration_since(Instant::now()),
                    "endpoint ejected"
                );
                member.health_changed.notify_one();
                self.republish();
            }
            Transition::Restored => {
                tracing::info!(endpoint = %member.addr, probe, "endpoint restored");
                member.health_changed.notify_one();
                self.republish();
            }
        }
    }

    /// Ejections so far.
    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Why nothing can be reached: the last connection error of any member.
    pub(crate) fn unreachable_reason(&self) -> String {
        let members = self.members();
        let last = members
            .iter()
            .find_map(|m| lock(&m.state).last_error.clone());
        match last {
            Some(error) => format!("no endpoint is reachable (last error: {error})"),
            None => "no endpoint is reachable".into(),
        }
    }

    /// Whether any member may become routable without waiting out a backoff (see
    /// `Link::may_come_up`): a call may wait for it. Only when every member's last
    /// attempt failed (all in backoff) is nothing worth waiting for.
    pub(crate) fn any_may_come_up(&self) -> bool {
        self.members().iter().any(|m| m.link().may_come_up())
    }

    /// Members with a usable connection, ejected or not (for when all are ejected).
    pub(crate) fn connected(&self) -> Vec<Arc<Member>> {
        self.members()
            .iter()
            .filter(|m| m.connection().is_some())
            .cloned()
            .collect()
    }
}

/// A member's task: connect, hold the connection until the server drains it or it is
/// lost, reconnect (at once after a working connection, with backoff after a failed
/// attempt), and wake the pool when an ejection period ends. Stops when the member
/// leaves the pool (its task is aborted) or the pool is gone.
/// How long a connection must have lived for its loss to reconnect at once; one lost
/// sooner, having answered no call, counts as a failed attempt and backs off.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);

async fn maintain(pool: std::sync::Weak<Pool>, member: Arc<Member>) {
    let mut failures = 0u32;
    loop {
        let Some(strong) = pool.upgrade() else {
            return;
        };
        let settings = &strong.settings;
        {
            let mut state = lock(&member.state);
            state.link = Link::Connecting;
        }
        strong.changed();
        let endpoint = member.info();
        let timeout = settings.client_config.connect_timeout_value();
        let attempt = settings
            .connector
            .connect(&endpoint, &settings.client_config);
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Connect {
                addr: member.addr.clone(),
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting took longer than {timeout:?}"),
                )),
            }),
        };
        match result {
            Ok(connection) => {
                let connected_at = Instant::now();
                let successes_before = member.successes.load(Ordering::Relaxed);
                {
                    let mut state = lock(&member.state);
                    state.link = Link::Ready;
                    state.connection = Some(connection.clone());
                    state.last_error = None;
                }
                member.serving.store(true, Ordering::Release);
                let health_checks = settings.health_checks;
                tracing::info!(endpoint = %member.addr, connector = settings.connector.name(), "connected");
                strong.republish();
                drop(strong);
                let drained = hold(&pool, &member, &connection, health_checks).await;
                let Some(strong) = pool.upgrade() else {
                    return;
                };
                // The link changes with the connection, under one lock: a call that
                // looks between the two must not see a member that is neither connected
                // nor connecting (it would fail at once as unreachable).
                // A connection that ended soon after it was made without answering a call
                // (a server that takes the handshake and hangs up, or crashes at once)
                // counts as a failed attempt: reconnecting at once would loop as fast as
                // the network allows. One that lived, or served, resets the count and
                // reconnects at once.
                let short_lived = connected_at.elapsed() < STABLE_CONNECTION
                    && member.successes.load(Ordering::Relaxed) == successes_before;
                failures = if short_lived {
                    failures.saturating_add(1)
                } else {
                    0
                };
                let delay = if drained {
                    Some(strong.settings.reconnect.delay(1))
                } else if short_lived {
                    Some(strong.settings.reconnect.delay(failures))
                } else {
                    None
                };
                {
                    let mut state = lock(&member.state);
                    state.connection = None;
                    state.link = match delay {
                        Some(delay) => Link::Reconnecting(Instant::now() + delay),
                        None => Link::Connecting,
                    };
                }
                strong.republish();
                if let Some(delay) = delay {
                    if drained {
                        // The server is shutting down: it refuses new connections for a
                        // while, so do not hammer it.
                        tracing::debug!(endpoint = %member.addr, "server is draining; connection replaced");
                        failures = 1;
                    } else {
                        tracing::info!(
                            endpoint = %member.addr, failures, retry_in = ?delay,
                            "connection lost right after it was made; reconnecting after a backoff"
                        );
                    }
                    drop(strong);
                    tokio::time::sleep(delay).await;
                } else {
                    tracing::info!(endpoint = %member.addr, "connection lost; reconnecting");
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = settings.reconnect.delay(failures);
                tracing::info!(
                    endpoint = %member.addr, %error, failures, retry_in = ?delay,
                    "connect failed"
                );
                {
                    let mut state = lock(&member.state);
                    state.link = Link::Backoff(Instant::now() + delay);
                    state.last_error = Some(error);
                }
                // Unreachable counts against its health like a failed call.
                strong.record(&member, Verdict::Failure, false);
                strong.changed();
                drop(strong);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Holds a working connection until it becomes unusable; meanwhile republishes the
/// pool when the member's ejection period ends (it goes back on probation), and, with
/// `health_checks`, follows its server's health. Returns whether the connection was
/// drained by its server (rather than lost).
async fn hold(
    pool: &std::sync::Weak<Pool>,
    member: &Member,
    connection: &Connection,
    health_checks: bool,
) -> bool {
    let health = async {
        if health_checks {
            follow_health(pool, member, connection).await;
        }
        std::future::pending::<()>().await
    };
    tokio::pin!(health);
    loop {
        let until = lock(&member.health).ejected_until();
        let wake = until.filter(|&u| u > Instant::now());
        tokio::select! {
            _ = connection.unusable() => return !connection.is_closed(),
            _ = sleep_until_or_forever(wake) => {
                let Some(pool) = pool.upgrade() else { return false };
                pool.republish();
            }
            _ = member.health_changed.notified() => {}
            _ = &mut health => {}
        }
    }
}

/// Watches the server's health service (`""`, the whole server) on `connection`: the
/// member leaves rotation while it says NOT_SERVING, without failing a call. A server
/// without the service counts as serving. Returns when there is nothing more to follow.
async fn follow_health(pool: &std::sync::Weak<Pool>, member: &Member, connection: &Connection) {
    use futures::StreamExt;
    use traitrpc_core::health::{HealthClient, ServingStatus};
    // A watch lasts as long as the connection; the deadline only bounds one watch.
    let client = HealthClient::new(connection.clone()).with_timeout(Duration::from_secs(3600));
    loop {
        let mut statuses = match client.watch(String::new()).await {
            Ok(statuses) => statuses,
            Err(_) => return,
        };
        loop {
            let serving = match statuses.next().await {
                Some(Ok(status)) => status != ServingStatus::NotServing,
                // A server without a health service: serving.
                Some(Err(RpcError::UnknownService { .. } | RpcError::UnknownMethod { .. })) => {
                    return
                }
                // The watch's own deadline: watch again.
                Some(Err(RpcError::DeadlineExceeded)) => break,
                // The server is going away (the watch ended after its last status).
                Some(Err(_)) | None => return,
            };
            if member.serving.swap(serving, Ordering::AcqRel) != serving {
                tracing::info!(endpoint = %member.addr, serving, "endpoint health changed");
                let Some(pool) = pool.upgrade() else { return };
                pool.republish();
            }
        }
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that looks at the pool after a connection ended but before the member's
    /// task has reacted must wait for the reconnect, not fail as unreachable.
    #[test]
    fn a_member_whose_connection_just_ended_may_still_come_up() {
        assert!(Link::Connecting.may_come_up());
        assert!(Link::Ready.may_come_up());
        assert!(!Link::Backoff(Instant::now()).may_come_up());
        // A server that drained it, or a connection that ended at once: it reconnects
        // after a pause, and calls wait for it.
        assert!(Link::Reconnecting(Instant::now()).may_come_up());
    }
}
