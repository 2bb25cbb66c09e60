//! Soak: many clients connect, call, disconnect abruptly and reconnect against one server
//! process for a bounded time; afterwards the server's open file descriptors must be back
//! at their baseline and its resident memory within a margin of the value after warm-up.
//!
//! ```text
//! loadgen soak [--duration 60] [--warmup 5] [--clients 32] [--tls]
//!              [--rss-margin-pct 10] [--rss-margin-kib 4096]
//! ```
//!
//! Each client loops over a random mix of behaviours: polite connections (calls, then a
//! clean close), connections dropped with calls in flight (slow handlers, large
//! payloads), raw sockets reset (`SO_LINGER` 0) half-way through a frame or the
//! handshake, connections that never speak (cut off by the handshake timeout), and
//! connections closed right after connecting. `--tls` runs the same against a TLS server
//! (certificates generated at startup). Prints the figures and a `RESULT` line; exits
//! non-zero if descriptors leaked, memory grew past the margin, or the server stopped
//! answering.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use traitrpc_core::{ByteBuf, ServerConfig};
use traitrpc_transport_tcp::tls::{Identity, TlsClientConfig, TlsServerConfig, TrustRoots};

use crate::procstat;
use crate::Flags;

#[traitrpc_core::service]
pub trait Soak {
    /// Returns `value`.
    async fn echo(&self, value: u64) -> u64;
    /// Sleeps `ms` milliseconds, then returns `value`.
    async fn sleep_echo(&self, ms: u64, value: u64) -> u64;
    /// Returns the length of `data`.
    async fn blob_len(&self, data: ByteBuf) -> u64;
}

/// The soak server's implementation.
pub struct SoakImpl;

impl Soak for SoakImpl {
    async fn echo(&self, value: u64) -> u64 {
        value
    }
    async fn sleep_echo(&self, ms: u64, value: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        value
    }
    async fn blob_len(&self, data: ByteBuf) -> u64 {
        data.len() as u64
    }
}

/// The handshake timeout of the soak server: silent connections are cut off after it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// `loadgen soak-serve [--tls-dir DIR]`: the server process. Prints `LISTENING <addr>`.
pub async fn serve(flags: &Flags) -> Result<()> {
    procstat::raise_fd_limit();
    let config = ServerConfig::default().handshake_timeout(HANDSHAKE_TIMEOUT);
    let services = SoakServer::new(SoakImpl);
    let server = match flags.0.get("tls-dir") {
        Some(dir) => {
            let dir = Path::new(dir);
            let tls = TlsServerConfig::new(Identity::from_pem_files(
                dir.join("server.crt"),
                dir.join("server.key"),
            )?)?;
            traitrpc_transport_tcp::tls::serve_with_config("127.0.0.1:0", services, tls, config)
                .await?
        }
        None => traitrpc_transport_tcp::serve_with_config("127.0.0.1:0", services, config).await?,
    };
    println!("LISTENING {}", server.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}

/// The server process, killed on drop.
struct Child {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Child {
    fn start(tls_dir: Option<&Path>) -> Result<Child> {
        use std::io::{BufRead, BufReader};
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg("soak-serve");
        if let Some(dir) = tls_dir {
            command.arg("--tls-dir").arg(dir);
        }
        let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
        let stdout = BufReader::new(child.stdout.take().context("server stdout")?);
        let addr = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("LISTENING ").map(str::to_string))
            .context("the server did not report its address")?
            .parse()?;
        Ok(Child { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// How clients reach the server.
#[derive(Clone)]
enum Dial {
    Plain(SocketAddr),
    Tls(SocketAddr, TlsClientConfig),
}

impl Dial {
    fn addr(&self) -> SocketAddr {
        match self {
            Dial::Plain(addr) | Dial::Tls(addr, _) => *addr,
        }
    }

    async fn connect(&self) -> Result<SoakClient> {
        let conn = match self {
            Dial::Plain(addr) => traitrpc_transport_tcp::connect(*addr).await?,
            Dial::Tls(addr, tls) => {
                traitrpc_transport_tcp::tls::connect(*addr, "localhost", tls.clone()).await?
            }
        };
        Ok(SoakClient::new(conn))
    }
}

/// What the clients did.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    calls: AtomicU64,
    abrupt: AtomicU64,
    raw_resets: AtomicU64,
    silent: AtomicU64,
    errors: AtomicU64,
}

/// A small deterministic generator (xorshift), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Closes a socket with a reset instead of a FIN.
fn reset(stream: TcpStream) {
    // Deprecated because a non-zero linger blocks on drop; a zero linger resets at once.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// One client: behaviours in a loop until `stop`.
async fn client_loop(id: u64, dial: Dial, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    while !stop.load(Ordering::Relaxed) {
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let outcome: Result<()> = match rng.below(10) {
            // Polite: a few calls, some concurrent, then a clean close.
            0..=2 => {
                async {
                    let client = dial.connect().await?;
                    for i in 0..rng.below(20) + 1 {
                        anyhow::ensure!(client.echo(i).await? == i, "wrong echo");
                    }
                    let calls = (0..8).map(|i| client.echo(i));
                    futures::future::try_join_all(calls).await?;
                    counters.calls.fetch_add(28, Ordering::Relaxed);
                    Ok(())
                }
                .await
            }
            // Dropped with slow calls in flight: the server must drop their handlers.
            3..=4 => {
                async {
                    let client = dial.connect().await?;
                    let calls: Vec<_> = (0..10)
                        .map(|i| {
                            let client = client.clone();
                            tokio::spawn(async move { client.sleep_echo(50 + i * 50, i).await })
                        })
                        .collect();
                    tokio::time::sleep(Duration::from_millis(rng.below(100))).await;
                    for call in calls {
                        call.abort();
                    }
                    drop(client);
                    counters.abrupt.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                .await
            }
            // Dropped while a large argument is being sent or handled.
            5 => {
                async {
                    let client = dial.connect().await?;
                    let len = 64 * 1024 + rng.below(512 * 1024) as usize;
                    let call =
                        tokio::spawn(async move { client.blob_len(vec![7u8; len].into()).await });
                    tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
                    call.abort();
                    counters.abrupt.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                .await
            }
            // A raw socket reset half-way: through the handshake, or through a frame.
            6..=7 => {
                async {
                    let mut stream = TcpStream::connect(dial.addr()).await?;
                    let hello = traitrpc_core::protocol::ClientHello {
                        version: traitrpc_core::protocol::VERSION,
                        max_frame_size: 1 << 20,
                    }
                    .encode();
                    // Writes may fail: a TLS server hangs up on these plaintext bytes.
                    if rng.below(2) == 0 {
                        let _ = stream.write_all(&hello[..rng.below(12) as usize]).await;
                    } else {
                        let _ = stream.write_all(&hello).await;
                        // A frame announcing 1000 bytes, of which a few arrive.
                        let _ = stream.write_all(&1000u32.to_be_bytes()).await;
                        let _ = stream.write_all(&[1u8; 37]).await;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
                    reset(stream);
                    counters.raw_resets.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                .await
            }
            // Never speaks: the server cuts it off at the handshake timeout (or it leaves).
            8 => {
                async {
                    let stream = TcpStream::connect(dial.addr()).await?;
                    let wait = HANDSHAKE_TIMEOUT.as_millis() as u64 + 200;
                    tokio::time::sleep(Duration::from_millis(rng.below(wait))).await;
                    drop(stream);
                    counters.silent.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                .await
            }
            // Connects and closes at once.
            _ => {
                async {
                    drop(TcpStream::connect(dial.addr()).await?);
                    Ok(())
                }
                .await
            }
        };
        if let Err(e) = outcome {
            // A refused or failed connection is counted; the check at the end decides.
            if counters.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("client {id}: {e:#}");
            }
        }
    }
}

/// Runs clients against the server for `duration`.
async fn churn(dial: &Dial, clients: u64, duration: Duration, counters: &Arc<Counters>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                dial.clone(),
                Arc::clone(&stop),
                Arc::clone(counters),
            ))
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
}

/// Waits until the server's descriptor count is back to `baseline` (or `limit` passes);
/// returns the last count.
async fn settle_fds(pid: u32, baseline: usize, limit: Duration) -> usize {
    let started = Instant::now();
    loop {
        let fds = open_fds(pid);
        if fds <= baseline || started.elapsed() > limit {
            return fds;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a CA, and a server certificate and key for "localhost" signed by it, into a
/// fresh temporary directory; returns it and the client configuration trusting the CA.
fn make_certificates() -> Result<(PathBuf, TlsClientConfig)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "soak CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &ca)?;
    let dir = std::env::temp_dir().join(format!("rpc-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("server.crt"), cert.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    let client = TlsClientConfig::new(TrustRoots::from_pem(ca.pem().as_bytes())?)?;
    Ok((dir, client))
}

/// `loadgen soak`.
pub async fn run(flags: &Flags) -> Result<()> {
    let duration = Duration::from_secs_f64(flags.get("duration", 60.0)?);
    let warmup = Duration::from_secs_f64(flags.get("warmup", 5.0)?);
    let clients: u64 = flags.get("clients", 32)?;
    let tls = flags.0.contains_key("tls");
    let margin_pct: f64 = flags.get("rss-margin-pct", 10.0)?;
    let margin_kib: u64 = flags.get("rss-margin-kib", 4096)?;
    procstat::raise_fd_limit();

    let certificates = if tls {
        Some(make_certificates()?)
    } else {
        None
    };
    let mut server = Child::start(certificates.as_ref().map(|(dir, _)| dir.as_path()))?;
    if let Some((dir, _)) = &certificates {
        // The server has read them.
        let _ = std::fs::remove_dir_all(dir);
    }
    let pid = server.pid();
    let dial = match certificates {
        Some((_, client)) => Dial::Tls(server.addr, client),
        None => Dial::Plain(server.addr),
    };
    let fds_at_start = open_fds(pid);
    let kind = if tls { "TLS" } else { "TCP" };
    println!(
        "soak ({kind}): {clients} clients, warm-up {:.0} s, then {:.0} s; server pid {pid}, {fds_at_start} fds at start",
        warmup.as_secs_f64(),
        duration.as_secs_f64()
    );

    // Warm up with the same churn, then let it settle: the reference point.
    let warm_counters = Arc::new(Counters::default());
    churn(&dial, clients, warmup, &warm_counters).await;
    let fds_baseline = settle_fds(pid, fds_at_start, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_warm = procstat::status_kib(pid, "VmRSS:");
    println!("after warm-up: {fds_baseline} fds, RSS {rss_warm} KiB");

    // The soak itself, sampling the server as it goes.
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let sampler = {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(10));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                println!(
                    "  {:>4.0} s: {} fds, RSS {} KiB, {} connections, {} calls",
                    started.elapsed().as_secs_f64(),
                    open_fds(pid),
                    procstat::status_kib(pid, "VmRSS:"),
                    counters.connections.load(Ordering::Relaxed),
                    counters.calls.load(Ordering::Relaxed)
                );
            }
        })
    };
    churn(&dial, clients, duration, &counters).await;
    let elapsed = started.elapsed();
    sampler.abort();
    let peak_rss = procstat::status_kib(pid, "VmHWM:");

    // Afterwards: descriptors back to the baseline, memory back near the warm value.
    let fds_end = settle_fds(pid, fds_baseline, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_end = procstat::status_kib(pid, "VmRSS:");
    let alive = server.alive();
    let answers = match dial.connect().await {
        Ok(client) => client.echo(7).await.map(|v| v == 7).unwrap_or(false),
        Err(_) => false,
    };

    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let allowed_rss = rss_warm + margin_kib.max((rss_warm as f64 * margin_pct / 100.0) as u64);
    let growth = rss_end as i64 - rss_warm as i64;
    println!(
        "soak done in {:.1} s: {} connections ({:.0}/s), {} calls, {} dropped with calls in flight, {} raw resets, {} silent, {} client errors",
        elapsed.as_secs_f64(),
        load(&counters.connections),
        load(&counters.connections) as f64 / elapsed.as_secs_f64(),
        load(&counters.calls),
        load(&counters.abrupt),
        load(&counters.raw_resets),
        load(&counters.silent),
        load(&counters.errors),
    );
    println!("server fds: start {fds_at_start}, after warm-up {fds_baseline}, end {fds_end}");
    println!(
        "server RSS: after warm-up {rss_warm} KiB, end {rss_end} KiB ({growth:+} KiB; allowed up to {allowed_rss} KiB), peak {peak_rss} KiB"
    );
    println!(
        "RESULT transport={kind} seconds={:.1} clients={clients} connections={} calls={} abrupt={} raw_resets={} silent={} errors={} fds_baseline={fds_baseline} fds_end={fds_end} rss_warm_kib={rss_warm} rss_end_kib={rss_end} rss_peak_kib={peak_rss}",
        elapsed.as_secs_f64(),
        load(&counters.connections),
        load(&counters.calls),
        load(&counters.abrupt),
        load(&counters.raw_resets),
        load(&counters.silent),
        load(&counters.errors),
    );

    let mut failures = Vec::new();
    if !alive {
        failures.push("the server process died".to_string());
    }
    if !answers {
        failures.push("the server no longer answers a call".to_string());
    }
    if fds_end > fds_baseline {
        failures.push(format!(
            "{} file descriptors leaked ({fds_end} open, baseline {fds_baseline})",
            fds_end - fds_baseline
        ));
    }
    if rss_end > allowed_rss {
        failures.push(format!(
            "RSS grew from {rss_warm} KiB to {rss_end} KiB (allowed {allowed_rss} KiB)"
        ));
    }
    if load(&counters.calls) == 0 {
        failures.push("no call succeeded".to_string());
    }
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    println!("soak passed");
    Ok(())
}
