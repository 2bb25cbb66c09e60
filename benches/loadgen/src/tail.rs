//! `loadgen tail`: the tail at scale, and what hedging does to it (issue 23).
//!
//! Ten replicas (in this process, each on its own loopback port) answer a lookup at once,
//! except that each call stalls for `--stall-ms` (100) with probability `--stall` (0.01),
//! drawn at random. A client sends `--fanouts` (2,000) fan-outs one after another, each
//! `--width` (100) calls at once over a balanced channel to all ten, and waits for the
//! last answer. It prints the distribution of fan-out latencies, and the extra calls that
//! hedging sent, with `--hedge off`, `--hedge pNN` (a percentile of recent attempts, as
//! `HedgingPolicy::at_percentile`) or `--hedge MS` (a fixed delay); `--burst N` sets the
//! policy's `max_burst` (default 10).
//!
//! ```text
//! loadgen tail --hedge off
//! loadgen tail --hedge p95
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use traitrpc_core::ServerHandle;
use traitrpc_discovery::{balance, BalancedChannel, HedgingPolicy, StaticDiscovery};

use crate::Flags;

#[traitrpc_core::service]
pub trait Lookup {
    /// The value stored under `key` (here: `key + 1`), possibly slowly.
    #[idempotent]
    async fn get(&self, key: u64) -> u64;
}

/// A replica that stalls a fraction of its calls.
struct Replica {
    /// Stall probability in parts per million.
    stall_ppm: u64,
    stall: Duration,
    /// State of a xorshift generator: which calls stall is random, not periodic.
    random: AtomicU64,
    stalled: Arc<AtomicU64>,
}

impl Replica {
    fn next_random(&self) -> u64 {
        let mut x = self.random.load(Ordering::Relaxed);
        loop {
            let mut next = x;
            next ^= next << 13;
            next ^= next >> 7;
            next ^= next << 17;
            match self
                .random
                .compare_exchange_weak(x, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(now) => x = now,
            }
        }
    }
}

impl Lookup for Replica {
    async fn get(&self, key: u64) -> u64 {
        if self.next_random() % 1_000_000 < self.stall_ppm {
            self.stalled.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.stall).await;
        }
        key + 1
    }
}

fn policy(hedge: &str) -> Result<Option<HedgingPolicy>> {
    Ok(match hedge {
        "off" => None,
        p if p.starts_with('p') => {
            let percentile: f64 = p[1..].parse()?;
            Some(HedgingPolicy::at_percentile(percentile / 100.0))
        }
        ms => match ms.parse::<u64>() {
            Ok(ms) => Some(HedgingPolicy::after(Duration::from_millis(ms))),
            Err(_) => bail!("--hedge off|pNN|MS, not `{ms}`"),
        },
    })
}

pub async fn run(flags: &Flags) -> Result<()> {
    let replicas: usize = flags.get("replicas", 10)?;
    let width: usize = flags.get("width", 100)?;
    let fanouts: usize = flags.get("fanouts", 2000)?;
    let warmup: usize = flags.get("warmup", 200)?;
    let stall: f64 = flags.get("stall", 0.01)?;
    let stall_ms: u64 = flags.get("stall-ms", 100)?;
    let hedge = flags.str("hedge", "off");
    let burst: Option<u32> = flags.0.get("burst").map(|b| b.parse()).transpose()?;
    let policy = policy(&hedge)?.map(|policy| HedgingPolicy {
        max_burst: burst.unwrap_or(policy.max_burst),
        ..policy
    });

    let stalled = Arc::new(AtomicU64::new(0));
    let mut servers: Vec<ServerHandle<std::net::SocketAddr>> = Vec::new();
    for seed in 0..replicas {
        let replica = Replica {
            stall_ppm: (stall * 1e6) as u64,
            stall: Duration::from_millis(stall_ms),
            random: AtomicU64::new(0x9e37_79b9_7f4a_7c15 ^ ((seed as u64 + 1) * 0x2545_f491)),
            stalled: Arc::clone(&stalled),
        };
        servers
            .push(traitrpc_transport_tcp::serve("127.0.0.1:0", LookupServer::new(replica)).await?);
    }
    let mut builder = BalancedChannel::builder(StaticDiscovery::new(
        servers.iter().map(|server| server.local_addr()),
    ))
    .balancer(balance::RoundRobin::new());
    if let Some(policy) = policy {
        builder = builder.hedging(policy);
    }
    let channel = builder.build();
    let client = LookupClient::new(channel.clone()).with_timeout(Duration::from_secs(10));

    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut calls = 0u64;
    let stats_before = |channel: &BalancedChannel| channel.stats();
    let mut before = stats_before(&channel);
    let mut stalled_before = 0;
    for fanout in 0..warmup + fanouts {
        if fanout == warmup {
            before = stats_before(&channel);
            stalled_before = stalled.load(Ordering::Relaxed);
        }
        let started = Instant::now();
        let answers = futures::future::join_all((0..width as u64).map(|key| {
            let client = client.clone();
            async move { client.get(key).await }
        }))
        .await;
        for (key, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer?, key as u64 + 1);
        }
        if fanout >= warmup {
            latencies.record(started.elapsed().as_micros() as u64)?;
            calls += width as u64;
        }
    }
    let after = channel.stats();
    let hedges = after.hedges - before.hedges;
    let won = after.hedges_won - before.hedges_won;
    let refused = after.hedge_budget_exhausted - before.hedge_budget_exhausted;
    let stalls = stalled.load(Ordering::Relaxed) - stalled_before;
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "RESULT hedge={hedge} burst={} fanouts={fanouts} width={width} replicas={replicas} calls={calls} stalled_calls={stalls} \
         p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} \
         hedges={hedges} hedges_won={won} hedges_refused={refused} extra_calls_pct={:.2}",
        policy.map_or(0, |policy| policy.max_burst),
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.9)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.value_at_quantile(0.999)),
        ms(latencies.max()),
        100.0 * hedges as f64 / calls as f64,
    );
    drop(client);
    drop(channel);
    for server in servers {
        server.shutdown().await;
    }
    Ok(())
}
