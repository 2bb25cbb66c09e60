//! Load generator for the RPC framework.
//!
//! ```text
//! loadgen bench  --mode rpc|rpc-metrics|rpc-observed|handrpc|raw|raw-batched|tarpc|tonic|grpc-tonic|grpc-gateway
//!                [--concurrency 64] [--connections 1] [--duration 3] [--warmup 1] [--payload 8]
//!                [--content fill|json|noise]     (LOADGEN_COMPRESS=lz4: both sides compress)
//!                (LOADGEN_HANDLER_AWAITS=1: the echo handler awaits once, on its own task)
//! loadgen serve  --mode rpc|rpc-metrics|rpc-observed|handrpc|raw|raw-batched|tarpc|tonic
//!                [--addr 127.0.0.1:0]
//! loadgen overhead [--rounds 5] [--duration 3] [--concurrency 64]
//! loadgen allocs [--calls 20000] [--mode rpc|rpc-seam|rpc-metrics|rpc-observed]
//! loadgen idle   [--connections 10000]
//! loadgen matrix [--duration 3] [--warmup 1] [--out FILE] [--tarpc] [--tonic]
//! loadgen soak   [--duration 60] [--warmup 5] [--clients 32] [--tls]
//! loadgen interleave [--calls 2000] [--mib 100] [--chunk 65536]
//! ```
//!
//! `bench` starts the server as a separate process (`serve`), drives it from this process
//! and prints calls/s, MiB/s, latency percentiles, and the CPU time and peak RSS of both
//! processes, and the loopback bytes per call (both directions, IP and TCP headers
//! included); its last line is a machine-readable `RESULT ...`. `matrix` runs every point
//! of `benches/README.md` for `raw`, `raw-batched` and `rpc` (and `tarpc`, `tonic` when
//! given `--tarpc`, `--tonic`), then `allocs`, `idle` and `interleave` (small-call
//! latency during a 100 MiB stream transfer, see `interleave.rs`), and prints Markdown
//! tables of ratios to `raw`. `overhead` runs `rpc`,
//! `rpc-metrics` and `rpc-observed` in alternating rounds and prints the cost of the
//! observability layers as a ratio of calls/s. `soak` churns
//! connections against one server process and checks that its descriptors and memory
//! return to their baseline (see `soak.rs`). The `tarpc` and `tonic` modes (and matrix
//! flags) are built with the cargo features of those names.

mod allocs;
#[cfg(feature = "tonic")]
mod grpc_mode;
mod handrpc;
mod interleave;
mod matrix;
mod overhead;
mod overload;
mod procstat;
mod raw;
mod rpc;
mod soak;
mod tail;
#[cfg(feature = "tarpc")]
mod tarpc_mode;
#[cfg(feature = "tonic")]
mod tonic_mode;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use hdrhistogram::Histogram;

#[global_allocator]
static ALLOCATOR: allocs::CountingAllocator = allocs::CountingAllocator;

/// What the client workers should be doing.
#[repr(u8)]
pub enum Phase {
    Warmup = 0,
    Measure = 1,
    Stop = 2,
}

/// What one client worker measured.
pub struct WorkerResult {
    pub latency_ns: Histogram<u64>,
    pub calls: u64,
    pub bytes: u64,
}

impl Default for WorkerResult {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerResult {
    pub fn new() -> Self {
        WorkerResult {
            latency_ns: Histogram::new(3).expect("histogram"),
            calls: 0,
            bytes: 0,
        }
    }

    pub fn record(&mut self, latency: Duration, payload: usize) {
        let _ = self.latency_ns.record(latency.as_nanos().max(1) as u64);
        self.calls += 1;
        // Both directions carry the payload.
        self.bytes += 2 * payload as u64;
    }

    /// After a call that started at `started`: records it if the run is being measured,
    /// and says whether the run has stopped (the caller then returns its result).
    pub fn account(&mut self, phase: &AtomicU8, started: Instant, payload: usize) -> bool {
        match phase.load(Ordering::Relaxed) {
            p if p == Phase::Measure as u8 => {
                self.record(started.elapsed(), payload);
                false
            }
            p => p == Phase::Stop as u8,
        }
    }

    fn merge(&mut self, other: WorkerResult) {
        let _ = self.latency_ns.add(other.latency_ns);
        self.calls += other.calls;
        self.bytes += other.bytes;
    }
}

/// Command-line flags: `--name value` pairs.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String]) -> Result<Flags> {
        let mut map = HashMap::new();
        let mut iter = args.iter();
        while let Some(flag) = iter.next() {
            let Some(name) = flag.strip_prefix("--") else {
                bail!("unexpected argument `{flag}`");
            };
            let value = match name {
                "tarpc" | "tonic" | "tls" | "channel" | "capacity" => "true".to_string(),
                _ => iter
                    .next()
                    .with_context(|| format!("`{flag}` needs a value"))?
                    .clone(),
            };
            map.insert(name.to_string(), value);
        }
        Ok(Flags(map))
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(name) {
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{name} {v}: {e}")),
            None => Ok(default),
        }
    }

    fn str(&self, name: &str, default: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        bail!(
            "usage: loadgen bench|serve|allocs|idle|matrix|interleave|soak|tail|overload [--flag value ...]"
        );
    };
    let flags = Flags::parse(&args[1..])?;
    match command.as_str() {
        "serve" => runtime()?.block_on(serve(
            &flags.str("mode", "rpc"),
            &flags.str("addr", "127.0.0.1:0"),
        )),
        "bench" => runtime()?.block_on(bench(&flags)),
        "allocs" => runtime()?.block_on(allocs::run(
            flags.get("calls", 20_000)?,
            &flags.str("mode", "rpc"),
        )),
        "idle" => runtime()?.block_on(idle(flags.get("connections", 10_000)?)),
        "matrix" => matrix::run(&flags),
        "overhead" => overhead::run(&flags),
        "soak" => runtime()?.block_on(soak::run(&flags)),
        "soak-serve" => runtime()?.block_on(soak::serve(&flags)),
        "interleave" => runtime()?.block_on(interleave::run(&flags)),
        "tail" => runtime()?.block_on(tail::run(&flags)),
        "overload" => runtime()?.block_on(overload::run(&flags)),
        "overload-serve" => runtime()?.block_on(overload::serve(&flags)),
        other => bail!("unknown command `{other}`"),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Serves `mode` on `addr`, prints `LISTENING <addr>`, and runs until killed.
async fn serve(mode: &str, addr: &str) -> Result<()> {
    procstat::raise_fd_limit();
    let local = match mode {
        "rpc" | "rpc-seam" | "rpc-metrics" | "rpc-observed" => {
            rpc::serve(addr, rpc::Layers::of_mode(mode).expect("an rpc mode")).await?
        }
        "handrpc" => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            tokio::spawn(handrpc::serve(listener));
            local
        }
        "raw" | "raw-batched" => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            tokio::spawn(raw::serve(listener, mode == "raw-batched"));
            local
        }
        #[cfg(feature = "tarpc")]
        "tarpc" => tarpc_mode::serve(addr).await?,
        #[cfg(feature = "tonic")]
        "tonic" => tonic_mode::serve(addr).await?,
        #[cfg(feature = "tonic")]
        "grpc-tonic" => grpc_mode::serve_tonic(addr).await?,
        #[cfg(feature = "tonic")]
        "grpc-gateway" => grpc_mode::serve_gateway(addr).await?,
        other => bail!("unknown mode `{other}` (built without the tarpc or tonic feature?)"),
    };
    println!("LISTENING {local}");
    std::future::pending::<()>().await;
    Ok(())
}

/// A server process of this binary, killed on drop.
struct ServerProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// `loadgen serve --mode MODE`.
    fn start(mode: &str) -> Result<ServerProcess> {
        Self::spawn(&["serve", "--mode", mode], None)
    }

    /// This binary with `args` (a command that prints `LISTENING <addr>`), pinned to
    /// `cpu` with `taskset` if given.
    fn spawn(args: &[&str], cpu: Option<&str>) -> Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", cpu]).arg(exe);
                taskset
            }
            None => Command::new(exe),
        };
        let mut child = command.args(args).stdout(Stdio::piped()).spawn()?;
        let stdout = BufReader::new(child.stdout.take().context("server stdout")?);
        let addr = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("LISTENING ").map(str::to_string))
            .context("the server did not report its address")?
            .parse()?;
        Ok(ServerProcess { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bench(flags: &Flags) -> Result<()> {
    let mode = flags.str("mode", "rpc");
    let concurrency: usize = flags.get("concurrency", 64)?;
    let connections: usize = flags.get("connections", 1)?;
    let duration = Duration::from_secs_f64(flags.get("duration", 3.0)?);
    let warmup = Duration::from_secs_f64(flags.get("warmup", 1.0)?);
    let payload: usize = flags.get("payload", 8)?;
    let content = rpc::Content::parse(&flags.str("content", "fill"))?;
    anyhow::ensure!(
        content == rpc::Content::Fill || mode.starts_with("rpc"),
        "--content is for the rpc modes"
    );
    anyhow::ensure!(
        concurrency >= connections && connections > 0,
        "need concurrency >= connections >= 1"
    );

    let server = ServerProcess::start(&mode)?;
    let phase = Arc::new(AtomicU8::new(Phase::Warmup as u8));
    let workers = match mode.as_str() {
        "rpc" | "rpc-seam" | "rpc-metrics" | "rpc-observed" => {
            rpc::client(
                server.addr,
                connections,
                concurrency,
                payload,
                content,
                rpc::Layers::of_mode(&mode).expect("an rpc mode"),
                Arc::clone(&phase),
            )
            .await?
        }
        "handrpc" => {
            handrpc::client(
                server.addr,
                connections,
                concurrency,
                payload,
                Arc::clone(&phase),
            )
            .await?
        }
        "raw" | "raw-batched" => {
            let mut workers = Vec::new();
            for c in 0..connections {
                let stream = tokio::net::TcpStream::connect(server.addr).await?;
                let share = concurrency / connections + usize::from(c < concurrency % connections);
                workers.push(tokio::spawn(raw::client(
                    stream,
                    share,
                    payload.max(8) - 8,
                    mode == "raw-batched",
                    Arc::clone(&phase),
                )));
            }
            workers
        }
        #[cfg(feature = "tarpc")]
        "tarpc" => {
            tarpc_mode::client(
                server.addr,
                connections,
                concurrency,
                payload,
                Arc::clone(&phase),
            )
            .await?
        }
        #[cfg(feature = "tonic")]
        "grpc-tonic" | "grpc-gateway" => {
            grpc_mode::client(server.addr, connections, concurrency, Arc::clone(&phase)).await?
        }
        #[cfg(feature = "tonic")]
        "tonic" => {
            tonic_mode::client(
                server.addr,
                connections,
                concurrency,
                payload,
                Arc::clone(&phase),
            )
            .await?
        }
        other => bail!("unknown mode `{other}`"),
    };

    tokio::time::sleep(warmup).await;
    let (client_cpu_0, server_cpu_0) = (
        procstat::own_cpu_micros(),
        procstat::cpu_micros(server.pid()),
    );
    let loopback_0 = procstat::loopback_bytes();
    let started = Instant::now();
    phase.store(Phase::Measure as u8, Ordering::SeqCst);
    tokio::time::sleep(duration).await;
    phase.store(Phase::Stop as u8, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let (client_cpu_1, server_cpu_1) = (
        procstat::own_cpu_micros(),
        procstat::cpu_micros(server.pid()),
    );
    let loopback = procstat::loopback_bytes().saturating_sub(loopback_0);
    let server_rss = procstat::status_kib(server.pid(), "VmHWM:");
    let client_rss = procstat::status_kib(std::process::id(), "VmHWM:");

    let mut total = WorkerResult::new();
    for worker in workers {
        match tokio::time::timeout(Duration::from_secs(10), worker).await {
            Ok(Ok(Ok(result))) => total.merge(result),
            Ok(Ok(Err(e))) => bail!("a worker failed: {e:#}"),
            Ok(Err(e)) => bail!("a worker panicked: {e}"),
            Err(_) => bail!("a worker did not stop"),
        }
    }
    drop(server);

    let secs = elapsed.as_secs_f64();
    let calls_per_s = total.calls as f64 / secs;
    let mib_per_s = total.bytes as f64 / secs / (1024.0 * 1024.0);
    let us = |q: f64| total.latency_ns.value_at_quantile(q) as f64 / 1000.0;
    let client_cpu = client_cpu_1.saturating_sub(client_cpu_0) as f64;
    let server_cpu = server_cpu_1.saturating_sub(server_cpu_0) as f64;
    let cpu_per_call = (client_cpu + server_cpu) / total.calls.max(1) as f64;
    println!(
        "{mode}: {concurrency} in flight on {connections} connection(s), payload {payload} B, {secs:.1} s"
    );
    // Both directions of every call, framing and IP/TCP headers included.
    let wire_per_call = loopback as f64 / total.calls.max(1) as f64;
    println!("  calls/s {calls_per_s:.0}   MiB/s {mib_per_s:.1}   wire {wire_per_call:.0} B/call");
    println!(
        "  latency µs: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        us(0.5),
        us(0.99),
        us(0.999),
        total.latency_ns.max() as f64 / 1000.0
    );
    println!(
        "  CPU: client {:.2} s, server {:.2} s, {cpu_per_call:.2} µs/call   peak RSS: client {client_rss} KiB, server {server_rss} KiB",
        client_cpu / 1e6,
        server_cpu / 1e6,
    );
    println!(
        "RESULT calls_per_s={calls_per_s:.1} mib_per_s={mib_per_s:.3} p50_us={:.2} p99_us={:.2} p999_us={:.2} max_us={:.2} cpu_us_per_call={cpu_per_call:.3} wire_bytes_per_call={wire_per_call:.1} client_cpu_s={:.3} server_cpu_s={:.3} client_rss_kib={client_rss} server_rss_kib={server_rss}",
        us(0.5),
        us(0.99),
        us(0.999),
        total.latency_ns.max() as f64 / 1000.0,
        client_cpu / 1e6,
        server_cpu / 1e6,
    );
    Ok(())
}

/// Opens `connections` idle connections to an `rpc` server process and reports how much
/// the server's resident memory grew per connection.
async fn idle(connections: usize) -> Result<()> {
    let limit = procstat::raise_fd_limit();
    anyhow::ensure!(
        limit as usize > connections + 100,
        "the open-file limit ({limit}) is too low for {connections} connections"
    );
    let server = ServerProcess::start("rpc")?;
    // One connection and call first, so one-time allocations are not counted.
    let first = rpc::EchoClient::new(traitrpc_transport_tcp::connect(server.addr).await?);
    first.echo(1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = procstat::status_kib(server.pid(), "VmRSS:");
    let mut open = Vec::with_capacity(connections);
    for _ in 0..connections {
        open.push(traitrpc_transport_tcp::connect(server.addr).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = procstat::status_kib(server.pid(), "VmRSS:");
    // Still serving.
    first.echo(2).await?;
    let per_connection = (after.saturating_sub(before)) as f64 * 1024.0 / connections as f64;
    println!(
        "{connections} idle connections: server RSS {before} KiB -> {after} KiB, {:.2} KiB per connection",
        per_connection / 1024.0
    );
    println!(
        "RESULT connections={connections} rss_before_kib={before} rss_after_kib={after} bytes_per_connection={per_connection:.0}"
    );
    drop(open);
    Ok(())
}
