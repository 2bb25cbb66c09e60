//! DNS discovery: SRV records (targets, ports and weights) or the A/AAAA records of a
//! host name with a fixed port, re-resolved when the answer's TTL runs out.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use traitrpc_discovery::{dns::DnsDiscovery, BalancedChannel, balance};
//!
//! // _calc._tcp.example.com. SRV 0 5 7000 a.example.com. (and more)
//! let discovery = DnsDiscovery::srv("_calc._tcp.example.com.").build()?;
//! let channel = BalancedChannel::builder(discovery)
//!     .balancer(balance::WeightedRoundRobin::new())
//!     .build();
//! # Ok(()) }
//! ```
//!
//! Built on `hickory-resolver` (re-exported as [`hickory_resolver`]), with the system's
//! resolver configuration unless [`DnsBuilder::nameserver`] names a server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use hickory_resolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::discovery::{Discovery, Endpoints, Publisher};
use crate::endpoint::Endpoint;
use crate::policy::Backoff;

/// What to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsTarget {
    /// An SRV name such as `_calc._tcp.example.com.`: one endpoint per address of each
    /// target of the lowest priority, with the record's port and weight.
    Srv(String),
    /// A host name: one endpoint per A/AAAA address, all on `port`, weight 1.
    Host {
        /// The name to resolve.
        name: String,
        /// The port of every endpoint.
        port: u16,
    },
}

/// Settings of a [`DnsDiscovery`].
#[derive(Debug, Clone)]
pub struct DnsBuilder {
    target: DnsTarget,
    nameservers: Vec<SocketAddr>,
    options: ResolverOpts,
    min_refresh: Duration,
    max_refresh: Duration,
    error_backoff: Backoff,
}

impl DnsBuilder {
    /// Asks only `server` (UDP, falling back to TCP) instead of the system's resolvers.
    /// May be given several times.
    pub fn nameserver(mut self, server: SocketAddr) -> Self {
        self.nameservers.push(server);
        self
    }

    /// Resolver options (timeouts, attempts, ...; default `ResolverOpts::default()` with
    /// `ip_strategy` set to `Ipv4AndIpv6`, so that both A and AAAA records are used).
    pub fn resolver_options(mut self, options: ResolverOpts) -> Self {
        self.options = options;
        self
    }

    /// Shortest time between two resolutions, whatever the TTL (default 1 s).
    pub fn min_refresh(mut self, interval: Duration) -> Self {
        self.min_refresh = interval;
        self
    }

    /// Longest time between two resolutions, whatever the TTL (default 5 min).
    pub fn max_refresh(mut self, interval: Duration) -> Self {
        self.max_refresh = interval;
        self
    }

    /// Delay before resolving again after a failure (default 1 s doubling to 30 s); the
    /// last good set stays in use meanwhile.
    pub fn error_backoff(mut self, backoff: Backoff) -> Self {
        self.error_backoff = backoff;
        self
    }

    /// Starts resolving in the background (inside a tokio runtime). Fails only if the
    /// system's resolver configuration cannot be read.
    pub fn build(self) -> Result<DnsDiscovery, ResolveError> {
        let mut builder = if self.nameservers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let mut group = NameServerConfigGroup::new();
            for server in &self.nameservers {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[server.ip()],
                    server.port(),
                    true,
                ));
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                TokioConnectionProvider::default(),
            )
        };
        *builder.options_mut() = self.options.clone();
        let resolver = builder.build();
        let publisher = Arc::new(Publisher::new());
        let task = tokio::spawn(run(resolver, self, Arc::clone(&publisher)));
        Ok(DnsDiscovery {
            publisher,
            task: task.abort_handle(),
        })
    }
}

/// Endpoints from DNS, kept current in a background task (stopped when this is dropped).
#[derive(Debug)]
pub struct DnsDiscovery {
    publisher: Arc<Publisher>,
    task: AbortHandle,
}

impl DnsDiscovery {
    /// Discovery from the SRV records of `name` (for example `_calc._tcp.example.com.`).
    pub fn srv(name: impl Into<String>) -> DnsBuilder {
        Self::builder(DnsTarget::Srv(name.into()))
    }

    /// Discovery from the A and AAAA records of `name`, every address on `port`.
    pub fn host(name: impl Into<String>, port: u16) -> DnsBuilder {
        Self::builder(DnsTarget::Host {
            name: name.into(),
            port,
        })
    }

    /// A builder for `target` with the default settings.
    pub fn builder(target: DnsTarget) -> DnsBuilder {
        DnsBuilder {
            target,
            nameservers: Vec::new(),
            options: {
                let mut options = ResolverOpts::default();
                options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                options
            },
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(300),
            error_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }
}

impl Drop for DnsDiscovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Discovery for DnsDiscovery {
    fn subscribe(&self) -> Endpoints {
        self.publisher.subscribe()
    }
}

async fn run(resolver: TokioResolver, settings: DnsBuilder, publisher: Arc<Publisher>) {
    let mut failures = 0;
    loop {
        // Each round asks again: the resolver's cache would answer until the TTL anyway.
        resolver.clear_cache();
        let wait = match resolve(&resolver, &settings.target).await {
            Ok((endpoints, valid_until)) => {
                failures = 0;
                let count = endpoints.len();
                if publisher.publish(endpoints) {
                    tracing::debug!(target = ?settings.target, count, "DNS endpoints changed");
                }
                valid_until.saturating_duration_since(Instant::now()).clamp(
                    settings.min_refresh,
                    settings.max_refresh.max(settings.min_refresh),
                )
            }
            Err(error) if error.is_no_records_found() || error.is_nx_domain() => {
                failures = 0;
                publisher.publish([]);
                settings.min_refresh
            }
            Err(error) => {
                failures += 1;
                let delay = settings.error_backoff.delay(failures);
                tracing::warn!(target = ?settings.target, %error, retry_in = ?delay, "DNS resolution failed");
                delay
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One resolution: the endpoints and when the shortest-lived record expires.
async fn resolve(
    resolver: &TokioResolver,
    target: &DnsTarget,
) -> Result<(Vec<Endpoint>, Instant), ResolveError> {
    match target {
        DnsTarget::Host { name, port } => {
            let ips = resolver.lookup_ip(name.as_str()).await?;
            let endpoints = ips
                .iter()
                .map(|ip| Endpoint::from(SocketAddr::new(ip, *port)))
                .collect();
            Ok((endpoints, ips.valid_until().into()))
        }
        DnsTarget::Srv(name) => {
            let srv = resolver.srv_lookup(name.as_str()).await?;
            let mut valid_until: Instant = srv.as_lookup().valid_until().into();
            let Some(priority) = srv.iter().map(|r| r.priority()).min() else {
                return Ok((Vec::new(), valid_until));
            };
            let mut endpoints = Vec::new();
            for record in srv.iter().filter(|r| r.priority() == priority) {
                let target = record.target();
                // "." means the service is decidedly not available at this name.
                if target.is_root() {
                    continue;
                }
                let ips = match resolver.lookup_ip(target.clone()).await {
                    Ok(ips) => ips,
                    Err(error) if error.is_no_records_found() || error.is_nx_domain() => continue,
                    Err(error) => return Err(error),
                };
                valid_until = valid_until.min(ips.valid_until().into());
                for ip in ips.iter() {
                    endpoints.push(
                        Endpoint::from(SocketAddr::new(ip, record.port()))
                            .with_weight(u32::from(record.weight()))
                            .with_metadata("dns.target", target.to_utf8())
                            .with_metadata("dns.priority", priority.to_string()),
                    );
                }
            }
            Ok((endpoints, valid_until))
        }
    }
}
