//! etcd as the registry (feature `etcd`): servers [`register`] under
//! `{prefix}{service}/{addr}` with a lease kept alive in the background, and clients
//! follow the prefix with [`EtcdDiscovery`].
//!
//! It talks to etcd through etcd's JSON gateway ([`EtcdClient`], on hyper 1; served on the
//! client port by default since etcd 3.4), so building it needs no `protoc` and pulls in
//! no gRPC stack.
//!
//! ```no_run
//! # use traitrpc_core::service;
//! # #[service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
//! # struct Calc; impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
//! # async fn demo() -> anyhow::Result<()> {
//! use traitrpc_discovery::etcd::{self, EtcdClient, EtcdDiscovery, RegisterOptions};
//! use traitrpc_discovery::BalancedChannel;
//!
//! let etcd_client = EtcdClient::connect(["http://127.0.0.1:2379"]).await?;
//!
//! // Server: serve, then register next to it (or `etcd::serve` for both in one call).
//! let server = traitrpc_transport_tcp::serve("127.0.0.1:0", CalculatorServer::new(Calc)).await?;
//! let registration =
//!     etcd::register(&etcd_client, "calculator", server.local_addr(), RegisterOptions::new()).await?;
//! // ... on the way out: leave the set at once, then drain.
//! registration.deregister().await?;
//! server.shutdown().await;
//!
//! // Client:
//! let channel = BalancedChannel::builder(EtcdDiscovery::new(etcd_client, "calculator")).build();
//! let calc = CalculatorClient::new(channel);
//! # Ok(()) }
//! ```
//!
//! A registration is a key whose value is the [`Endpoint`] as JSON
//! (`{"addr":"10.0.0.7:7000","weight":1,"metadata":{}}`), attached to a lease of
//! [`RegisterOptions::ttl`] (default 10 s) that a background task keeps alive at a
//! third of the TTL. After a graceful [`Registration::deregister`] the lease is revoked
//! and the key is gone at once; after a crash the lease expires within the TTL and etcd
//! deletes the key. If the lease is lost anyway (etcd restarted, long partition), the
//! task registers again with a new lease.
//!
//! Discovery lists the prefix, then watches it from the revision of that list, so no
//! change between the two is missed; after a compaction, a cancelled or broken watch it
//! lists again.

mod client;
mod json;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use client::{
    EtcdClient, EtcdClientBuilder, EtcdError, KeyValue, Listing, Watch, WatchEvent, WatchUpdate,
    DEFAULT_REQUEST_TIMEOUT,
};
use tokio::task::AbortHandle;
use traitrpc_core::{Router, ServerConfig, ServerHandle};

use crate::discovery::{Discovery, Endpoints, Publisher};
use crate::endpoint::Endpoint;
use crate::policy::Backoff;

/// The key prefix under which services register unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/rpc/services/";

/// The key under which `service`'s endpoints live: `{prefix}{service}/`.
pub fn service_prefix(prefix: &str, service: &str) -> String {
    if prefix.ends_with('/') {
        format!("{prefix}{service}/")
    } else {
        format!("{prefix}/{service}/")
    }
}

/// Settings of a [`register`] call.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    prefix: String,
    ttl: Duration,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            ttl: Duration::from_secs(10),
        }
    }
}

impl RegisterOptions {
    /// The defaults: prefix [`DEFAULT_PREFIX`], TTL 10 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key prefix (default [`DEFAULT_PREFIX`]); clients must use the same one.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The lease's time to live, whole seconds, at least 1 (default 10 s): how long a
    /// crashed server stays in the set.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn ttl_secs(&self) -> i64 {
        self.ttl.as_secs().max(1) as i64
    }
}

/// A live registration: the key stays in etcd while this exists (and the process runs).
///
/// [`deregister`](Registration::deregister) removes it at once. Dropping it stops the
/// keep-alive and revokes the lease in the background if a runtime is still there; if the
/// process dies, the lease expires after its TTL.
pub struct Registration {
    key: String,
    lease: Arc<AtomicI64>,
    client: EtcdClient,
    keep_alive: AbortHandle,
    done: AtomicBool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("lease", &self.lease_id())
            .finish()
    }
}

impl Registration {
    /// The registered key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease currently holding the key.
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }

    /// Leaves the set now: stops the keep-alive and revokes the lease, which deletes the
    /// key; watchers see the deletion at once.
    pub async fn deregister(self) -> Result<(), EtcdError> {
        self.done.store(true, Ordering::SeqCst);
        self.keep_alive.abort();
        self.client.lease_revoke(self.lease_id()).await?;
        tracing::info!(key = %self.key, "deregistered from etcd");
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keep_alive.abort();
        if self.done.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let lease = self.lease_id();
            runtime.spawn(async move {
                let _ = client.lease_revoke(lease).await;
            });
        }
    }
}

/// Registers `endpoint` (an address or an [`Endpoint`] with weight and metadata) as a
/// replica of `service`, with a lease kept alive until the returned [`Registration`] is
/// deregistered or dropped. Call it next to `serve`.
pub async fn register(
    client: &EtcdClient,
    service: &str,
    endpoint: impl Into<Endpoint>,
    options: RegisterOptions,
) -> Result<Registration, EtcdError> {
    let endpoint = endpoint.into();
    let key = format!(
        "{}{}",
        service_prefix(&options.prefix, service),
        endpoint.addr
    );
    let value = serde_json::to_vec(&endpoint).expect("an endpoint serializes to JSON");
    let ttl = options.ttl_secs();
    let lease = put_with_lease(client, &key, &value, ttl).await?;
    tracing::info!(%key, lease, ttl, "registered in etcd");
    let lease = Arc::new(AtomicI64::new(lease));
    let task = tokio::spawn(keep_alive(
        client.clone(),
        key.clone(),
        value,
        ttl,
        Arc::clone(&lease),
    ));
    Ok(Registration {
        key,
        lease,
        client: client.clone(),
        keep_alive: task.abort_handle(),
        done: AtomicBool::new(false),
    })
}

async fn put_with_lease(
    client: &EtcdClient,
    key: &str,
    value: &[u8],
    ttl: i64,
) -> Result<i64, EtcdError> {
    let lease = client.lease_grant(ttl).await?;
    client.put(key.as_bytes(), value, lease).await?;
    Ok(lease)
}

/// Keeps the lease alive at a third of its TTL (one request per refresh); registers again
/// with a new lease once etcd says the lease is gone.
async fn keep_alive(
    client: EtcdClient,
    key: String,
    value: Vec<u8>,
    ttl: i64,
    lease: Arc<AtomicI64>,
) {
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut failures = 0;
    loop {
        let delay = if failures == 0 {
            period
        } else {
            backoff.delay(failures).min(period)
        };
        tokio::time::sleep(delay).await;
        let id = lease.load(Ordering::SeqCst);
        match client.lease_keep_alive(id).await {
            Ok(remaining) if remaining > 0 => failures = 0,
            Ok(_) => {
                tracing::warn!(%key, lease = id, "etcd lease expired; registering again");
                match put_with_lease(&client, &key, &value, ttl).await {
                    Ok(new) => {
                        lease.store(new, Ordering::SeqCst);
                        failures = 0;
                        tracing::info!(%key, lease = new, "registered in etcd again");
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%key, %error, "etcd registration failed");
                    }
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%key, %error, failures, "etcd keep-alive failed");
            }
        }
    }
}

/// A server registered in etcd, from [`serve`]: shutting it down deregisters first, so
/// clients stop sending before it drains.
#[derive(Debug)]
pub struct RegisteredServer {
    server: ServerHandle<SocketAddr>,
    registration: Registration,
}

impl RegisteredServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The registration.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Deregisters (clients stop picking this server as soon as they see the deletion),
    /// then shuts the server down gracefully, draining calls in flight.
    pub async fn shutdown(self) {
        if let Err(error) = self.registration.deregister().await {
            tracing::warn!(%error, "deregistration failed; the lease will expire");
        }
        self.server.shutdown().await;
    }

    /// The server handle and the registration, to shut them down separately.
    pub fn into_parts(self) -> (ServerHandle<SocketAddr>, Registration) {
        (self.server, self.registration)
    }
}

/// Why [`serve`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the address failed.
    #[error("bind failed: {0}")]
    Bind(#[from] std::io::Error),
    /// Registering in etcd failed (the server was stopped again).
    #[error("etcd registration failed: {0}")]
    Register(#[from] EtcdError),
}

/// Binds `addr`, serves `services` and registers the bound address as a replica of
/// `service`: `traitrpc_transport_tcp::serve` and [`register`] in one call. The advertised
/// address is the bound one, so bind a concrete interface address (not `0.0.0.0`), or
/// use `serve` + [`register`] with the address clients should dial.
pub async fn serve(
    addr: impl tokio::net::ToSocketAddrs,
    services: impl Into<Router>,
    client: &EtcdClient,
    service: &str,
    options: RegisterOptions,
) -> Result<RegisteredServer, ServeError> {
    let server =
        traitrpc_transport_tcp::serve_with_config(addr, services, ServerConfig::default()).await?;
    match register(client, service, server.local_addr(), options).await {
        Ok(registration) => Ok(RegisteredServer {
            server,
            registration,
        }),
        Err(error) => {
            server.abort().await;
            Err(error.into())
        }
    }
}

/// The endpoints of one service registered in etcd, followed in a background task
/// (stopped when this is dropped).
#[derive(Debug)]
pub struct EtcdDiscovery {
    publisher: Arc<Publisher>,
    task: AbortHandle,
}

impl EtcdDiscovery {
    /// Follows `service` under [`DEFAULT_PREFIX`]. Must be called inside a tokio runtime.
    pub fn new(client: EtcdClient, service: &str) -> Self {
        Self::with_prefix(client, DEFAULT_PREFIX, service)
    }

    /// Follows `service` under `prefix`.
    pub fn with_prefix(client: EtcdClient, prefix: &str, service: &str) -> Self {
        let publisher = Arc::new(Publisher::new());
        let task = tokio::spawn(follow(
            client,
            service_prefix(prefix, service),
            Arc::clone(&publisher),
        ));
        EtcdDiscovery {
            publisher,
            task: task.abort_handle(),
        }
    }
}

impl Drop for EtcdDiscovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Discovery for EtcdDiscovery {
    fn subscribe(&self) -> Endpoints {
        self.publisher.subscribe()
    }
}

/// The endpoint a key holds: JSON, or a bare address.
fn decode(key: &[u8], value: &[u8]) -> Option<(String, Endpoint)> {
    let key = String::from_utf8_lossy(key).into_owned();
    match serde_json::from_slice::<Endpoint>(value) {
        Ok(endpoint) => Some((key, endpoint)),
        Err(_) => match std::str::from_utf8(value) {
            Ok(addr) if !addr.trim().is_empty() && !addr.contains('{') => {
                Some((key, Endpoint::new(addr.trim())))
            }
            _ => {
                tracing::warn!(%key, "ignoring an etcd key that holds no endpoint");
                None
            }
        },
    }
}

/// List, then watch from the listed revision; list again whenever the watch ends.
async fn follow(client: EtcdClient, prefix: String, publisher: Arc<Publisher>) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0;
    loop {
        if failures > 0 {
            tokio::time::sleep(backoff.delay(failures)).await;
        }
        failures += 1;
        let listed = match client.get_prefix(prefix.as_bytes()).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%prefix, %error, "etcd list failed");
                continue;
            }
        };
        let mut endpoints: BTreeMap<String, Endpoint> = listed
            .kvs
            .iter()
            .filter_map(|kv| decode(&kv.key, &kv.value))
            .collect();
        publisher.publish(endpoints.values().cloned());
        tracing::debug!(%prefix, revision = listed.revision, count = endpoints.len(), "etcd listed");

        let mut watch = match client
            .watch_prefix(prefix.as_bytes(), listed.revision + 1)
            .await
        {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%prefix, %error, "etcd watch failed");
                continue;
            }
        };
        loop {
            match watch.next().await {
                Ok(Some(update)) => {
                    if update.compact_revision > 0 {
                        tracing::info!(%prefix, compacted = update.compact_revision, "etcd watch compacted; listing again");
                        failures = 0;
                        break;
                    }
                    if update.canceled {
                        tracing::info!(%prefix, reason = %update.cancel_reason, "etcd watch cancelled; listing again");
                        break;
                    }
                    failures = 0;
                    if update.events.is_empty() {
                        continue;
                    }
                    for event in update.events {
                        match event {
                            WatchEvent::Put(kv) => {
                                if let Some((key, endpoint)) = decode(&kv.key, &kv.value) {
                                    endpoints.insert(key, endpoint);
                                }
                            }
                            WatchEvent::Delete { key } => {
                                endpoints.remove(String::from_utf8_lossy(&key).as_ref());
                            }
                        }
                    }
                    publisher.publish(endpoints.values().cloned());
                }
                Ok(None) => {
                    tracing::warn!(%prefix, "etcd watch ended; listing again");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%prefix, %error, "etcd watch broke; listing again");
                    break;
                }
            }
        }
    }
}
