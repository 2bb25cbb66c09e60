//! `loadgen overload`: goodput under overload, with and without adaptive admission
//! (issue 23).
//!
//! The server process (`loadgen overload-serve`) stands for a service in front of a
//! backend of fixed capacity: each `query` waits for one of `--permits` (4) slots and
//! holds it `--work-us` (1,000) µs, so its capacity is about permits / work. The client
//! is an **open loop**: calls leave at a fixed rate (`--rate` per second) whatever
//! happened to the earlier ones, as traffic from many independent users does (a closed
//! loop would slow down with the server and hide the overload). Each call has a
//! `--deadline-ms` (100) deadline. Goodput is the calls answered OK within their
//! deadline, per second.
//!
//! ```text
//! loadgen overload --capacity            # closed loop, 64 callers: the capacity
//! loadgen overload --rate 7000 --admission off
//! loadgen overload --rate 7000 --admission adaptive
//! loadgen overload --rate 7000 --admission adaptive --channel   # hedging and retries on
//! ```
//!
//! `--channel` sends through a balanced channel with the default retry policy and
//! hedging at the 95th percentile, and reports the attempts the server received per
//! call made: the retry and hedging budgets must keep it bounded under overload.
//! `--server-cpu N` pins the server process to CPU N (with `taskset`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use traitrpc_core::{AdaptiveConcurrency, ClientConfig, RpcError, ServerConfig, ServerStats};
use traitrpc_discovery::{BalancedChannel, HedgingPolicy, StaticDiscovery};

use crate::{Flags, ServerProcess};

#[traitrpc_core::service]
pub trait Backend {
    /// Waits for a backend slot, holds it for the work time, returns `key + 1`.
    #[idempotent]
    async fn query(&self, key: u64) -> u64;
    /// Queries started and calls shed since the server started.
    async fn stats(&self) -> (u64, u64);
}

struct BackendImpl {
    slots: Semaphore,
    work: Duration,
    started: AtomicU64,
    server: Arc<OnceLock<ServerStats>>,
}

impl Backend for BackendImpl {
    async fn query(&self, key: u64) -> u64 {
        self.started.fetch_add(1, Ordering::Relaxed);
        let _slot = self.slots.acquire().await.expect("never closed");
        tokio::time::sleep(self.work).await;
        key + 1
    }

    async fn stats(&self) -> (u64, u64) {
        let shed = self.server.get().map_or(0, ServerStats::calls_shed);
        (self.started.load(Ordering::Relaxed), shed)
    }
}

/// `loadgen overload-serve`: serves the backend, prints `LISTENING <addr>`, runs until
/// killed.
pub async fn serve(flags: &Flags) -> Result<()> {
    let mut config = ServerConfig::default();
    match flags.str("admission", "off").as_str() {
        "off" => {}
        "adaptive" => config = config.adaptive_concurrency(AdaptiveConcurrency::default()),
        other => bail!("--admission off|adaptive, not `{other}`"),
    }
    let stats = Arc::new(OnceLock::new());
    let backend = BackendImpl {
        slots: Semaphore::new(flags.get("permits", 4)?),
        work: Duration::from_micros(flags.get("work-us", 1000)?),
        started: AtomicU64::new(0),
        server: Arc::clone(&stats),
    };
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        BackendServer::new(backend),
        config,
    )
    .await?;
    let _ = stats.set(server.stats());
    println!("LISTENING {}", server.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}

/// `loadgen overload-serve` with the flags that shape the server.
fn start_server(flags: &Flags) -> Result<ServerProcess> {
    let mut args = vec!["overload-serve".to_string()];
    for name in ["admission", "permits", "work-us"] {
        if let Some(value) = flags.0.get(name) {
            args.extend([format!("--{name}"), value.clone()]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::spawn(&args, flags.0.get("server-cpu").map(String::as_str))
}

/// What the calls of one run came to.
#[derive(Default)]
struct Tally {
    ok_in_time: AtomicU64,
    ok_late: AtomicU64,
    overloaded: AtomicU64,
    deadline: AtomicU64,
    other: AtomicU64,
}

async fn clients(flags: &Flags, addr: SocketAddr) -> Result<Vec<BackendClient>> {
    let connections: usize = flags.get("connections", 4)?;
    let config = ClientConfig::default().max_in_flight(1 << 16);
    if flags.0.contains_key("channel") {
        let channel = BalancedChannel::builder(StaticDiscovery::new([addr]))
            .client_config(config)
            .hedging(HedgingPolicy::at_percentile(0.95))
            .build();
        return Ok(vec![BackendClient::new(channel)]);
    }
    let mut clients = Vec::new();
    for _ in 0..connections {
        let connection = traitrpc_transport_tcp::connect_with_config(addr, config.clone()).await?;
        clients.push(BackendClient::new(connection));
    }
    Ok(clients)
}

pub async fn run(flags: &Flags) -> Result<()> {
    let seconds: f64 = flags.get("seconds", 5.0)?;
    let warmup: f64 = flags.get("warmup", 2.0)?;
    let deadline = Duration::from_millis(flags.get("deadline-ms", 100)?);
    let server = start_server(flags)?;
    let clients = clients(flags, server.addr).await?;
    if flags.0.contains_key("capacity") {
        return capacity(&clients, seconds).await;
    }
    let rate: f64 = flags.get("rate", 1000.0)?;
    let tally = Arc::new(Tally::default());
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    // Warm up (the adaptive limit finds itself), then measure.
    open_loop(&clients, rate, warmup, deadline, None, None).await;
    let (started_before, shed_before) = clients[0].stats().await.unwrap_or((0, 0));
    let calls = open_loop(
        &clients,
        rate,
        seconds,
        deadline,
        Some(Arc::clone(&tally)),
        Some(Arc::clone(&latencies)),
    )
    .await;
    // Let the calls in flight end before asking for the server's counts.
    tokio::time::sleep(deadline * 3).await;
    let (started_after, shed_after) = clients[0].stats().await.unwrap_or((0, 0));
    let latencies = latencies.lock().unwrap();
    let ms = |us: u64| us as f64 / 1000.0;
    let received = (started_after - started_before) + (shed_after - shed_before);
    println!(
        "RESULT admission={} channel={} rate={rate:.0} calls={calls} goodput_per_s={:.0} ok_late={} overloaded={} deadline_exceeded={} other={} \
         ok_p50_ms={:.2} ok_p99_ms={:.2} ok_max_ms={:.2} server_started={} server_shed={} attempts_per_call={:.3}",
        flags.str("admission", "off"),
        flags.0.contains_key("channel"),
        tally.ok_in_time.load(Ordering::Relaxed) as f64 / seconds,
        tally.ok_late.load(Ordering::Relaxed),
        tally.overloaded.load(Ordering::Relaxed),
        tally.deadline.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.max()),
        started_after - started_before,
        shed_after - shed_before,
        received as f64 / calls.max(1) as f64,
    );
    Ok(())
}

/// Sends calls at `rate` per second for `seconds`, each on its own task, whatever became
/// of the earlier ones; counts outcomes into `tally` and OK latencies into `latencies`.
/// Returns the calls sent.
async fn open_loop(
    clients: &[BackendClient],
    rate: f64,
    seconds: f64,
    deadline: Duration,
    tally: Option<Arc<Tally>>,
    latencies: Option<Arc<Mutex<Histogram<u64>>>>,
) -> u64 {
    let start = tokio::time::Instant::now();
    let total = (rate * seconds) as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        // The n-th call leaves at n / rate: a late tick sends the calls it owes at once.
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
        let client = clients[n as usize % clients.len()]
            .clone()
            .with_timeout(deadline);
        let (tally, latencies) = (tally.clone(), latencies.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = client.query(n).await;
            let took = sent.elapsed();
            let Some(tally) = tally else { return };
            let counter = match &outcome {
                Ok(_) if took <= deadline => {
                    if let Some(latencies) = latencies {
                        let _ = latencies.lock().unwrap().record(took.as_micros() as u64);
                    }
                    &tally.ok_in_time
                }
                Ok(_) => &tally.ok_late,
                Err(RpcError::Overloaded { .. }) => &tally.overloaded,
                Err(RpcError::DeadlineExceeded) => &tally.deadline,
                Err(_) => &tally.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    total
}

/// Closed loop, 64 callers, no deadline pressure: the calls per second the server
/// sustains.
async fn capacity(clients: &[BackendClient], seconds: f64) -> Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..64u64 {
        let client = clients[caller as usize % clients.len()].clone();
        let done = Arc::clone(&done);
        tasks.spawn(async move {
            while Instant::now() < until {
                if client.query(caller).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "RESULT capacity_per_s={:.0}",
        done.load(Ordering::Relaxed) as f64 / seconds
    );
    Ok(())
}
