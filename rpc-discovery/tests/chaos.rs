//! Chaos: three replica processes behind one balanced client, under load, while one is
//! repeatedly SIGKILLed and restarted, another gracefully restarted, and the third
//! black-holed (a loopback proxy in front of it stops forwarding, without closing).
//!
//! Beside them, a fourth replica is busy, not dead (issue 21): it runs at most 4 calls at
//! a time, serves calls longer than the keepalive's interval and timeout together to 8
//! callers, and sends large answers over a slow link (a proxy that passes 400 KiB/s), to
//! its own balanced channel with the same keepalive. That channel must see no error at
//! all, eject nothing, retry nothing, and no call may start twice on that replica.
//!
//! Each replica logs the id of every call its handlers start. At the end:
//! - no non-idempotent call id started twice, anywhere, and every one that succeeded
//!   started exactly once;
//! - every call ended (succeeded, or failed with a typed error) within its deadline plus
//!   a margin: none hung;
//! - the client's heap and file descriptors are back to their baseline.
//!
//! Bounded: `CHAOS_SECONDS` (default 15) of chaos. `docs/SCALING.md` records a run.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{ReplicaClient, ServerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use traitrpc_core::{ClientConfig, Keepalive, RpcError};
use traitrpc_discovery::{balance, BalancedChannel, Endpoint, OutlierPolicy, StaticDiscovery};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range:
/// replicas are restarted on their port, and an ephemeral port could meanwhile be taken
/// as the source port of some outgoing connection.
fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_start: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = 10_000u64.min(ephemeral_start / 2);
    let span = ephemeral_start.saturating_sub(low).max(1);
    let seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = low + (seed.wrapping_add(n.wrapping_mul(7919)) % span);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap().port();
        }
    }
    panic!("no free port below the ephemeral range");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A loopback TCP proxy that can black-hole: while black-holed, it reads and drops
/// everything in both directions and closes nothing; connections that lived through a
/// black hole (or were opened in one) stay dead after it heals, as on a real network.
struct Proxy {
    addr: SocketAddr,
    black_holed: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let black_holed = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let (flag, list) = (Arc::clone(&black_holed), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let dead = Arc::new(AtomicBool::new(flag.load(Ordering::SeqCst)));
                list.lock().unwrap().push(Arc::clone(&dead));
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    // The client closing ends both directions (and frees the sockets); the
                    // server closing does too, unless the path is dead.
                    tokio::select! {
                        _ = pump(cr, sw, Arc::clone(&dead), false) => {}
                        _ = pump(sr, cw, dead, true) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            black_holed,
            connections,
        }
    }

    fn black_hole(&self) {
        self.black_holed.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().iter() {
            connection.store(true, Ordering::SeqCst);
        }
    }

    fn heal(&self) {
        self.black_holed.store(false, Ordering::SeqCst);
    }
}

/// Copies bytes until `from` closes, dropping them once `dead`. With `hide_close`, a
/// dead path does not pass the close on either: the client learns of it only by its own
/// timeouts.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dead: Arc<AtomicBool>,
    hide_close: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) if hide_close && dead.load(Ordering::SeqCst) => {
                return std::future::pending().await;
            }
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if dead.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy whose answers (server to client) pass at `per_tick` bytes every 20 ms: a slow
/// link. Requests pass at once.
async fn slow_link(target: SocketAddr, per_tick: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let upstream = tokio::io::copy(&mut cr, &mut sw);
                let downstream = async {
                    let mut buf = vec![0u8; per_tick];
                    let mut tick = tokio::time::interval(Duration::from_millis(20));
                    loop {
                        tick.tick().await;
                        match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = upstream => {}
                    _ = downstream => {}
                }
            });
        }
    });
    addr
}

/// Calls to the busy replica: long non-idempotent calls and large answers, alternating,
/// with a deadline far beyond the link's pace. Any error is counted.
async fn busy_load(
    client: ReplicaClient,
    ids: Arc<AtomicU64>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let client = client.with_timeout(Duration::from_secs(30));
    while !stop.load(Ordering::SeqCst) {
        let id = ids.fetch_add(1, Ordering::SeqCst);
        let outcome = if id % 2 == 0 {
            client.record_id(id, 800).await.map(|_| ())
        } else {
            client.bulk(id, 256 * 1024).await.map(|answer| {
                assert_eq!(answer.len(), "r4".len() + 256 * 1024);
            })
        };
        match outcome {
            Ok(()) => {
                tally.works_ok.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => {
                *tally
                    .errors
                    .lock()
                    .unwrap()
                    .entry(kind(&error))
                    .or_insert(0) += 1;
            }
        }
    }
}

/// Every `start METHOD ID` line of a replica's log, counted by method and id.
fn starts_in(log: &std::path::Path, starts: &mut HashMap<(String, u64), usize>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some("start"), Some(method), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        *starts
            .entry((method.to_string(), id.parse().unwrap()))
            .or_insert(0) += 1;
    }
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    records_ok: AtomicUsize,
    works_ok: AtomicUsize,
    hung: AtomicUsize,
    errors: Mutex<HashMap<String, usize>>,
    /// Ids of non-idempotent calls that succeeded.
    recorded: Mutex<Vec<u64>>,
}

fn kind(error: &RpcError) -> String {
    let debug = format!("{error:?}");
    debug
        .split([' ', '{', '('])
        .next()
        .unwrap_or("?")
        .to_string()
}

const DEADLINE: Duration = Duration::from_millis(1500);

async fn load(
    client: ReplicaClient,
    ids: Arc<AtomicU64>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let client = client.with_timeout(DEADLINE);
    while !stop.load(Ordering::SeqCst) {
        let id = ids.fetch_add(1, Ordering::SeqCst);
        // Mostly quick calls; one in 50 outlasts a graceful restart's 300 ms grace period,
        // so some are interrupted after they started.
        let ms = if id % 50 < 2 { 600 } else { id % 4 };
        let idempotent = id % 2 == 0;
        let started = Instant::now();
        let call = async {
            if idempotent {
                client.work_id(id, ms).await
            } else {
                client.record_id(id, ms).await
            }
        };
        // Far past the deadline: that call hung.
        match tokio::time::timeout(DEADLINE + Duration::from_secs(3), call).await {
            Err(_) => {
                tally.hung.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(_)) if idempotent => {
                tally.works_ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(_)) => {
                tally.records_ok.fetch_add(1, Ordering::SeqCst);
                tally.recorded.lock().unwrap().push(id);
            }
            Ok(Err(error)) => {
                assert!(
                    started.elapsed() < DEADLINE + Duration::from_secs(2),
                    "a call failed long after its deadline: {error:?} after {:?}",
                    started.elapsed()
                );
                *tally
                    .errors
                    .lock()
                    .unwrap()
                    .entry(kind(&error))
                    .or_insert(0) += 1;
            }
        }
    }
}

fn spawn_replica(name: &str, port: u16, log: &std::path::Path) -> ServerProcess {
    spawn_replica_with(name, port, log, &[])
}

fn spawn_replica_with(
    name: &str,
    port: u16,
    log: &std::path::Path,
    extra: &[&str],
) -> ServerProcess {
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--log".to_string(),
        log.display().to_string(),
        "--grace-ms".to_string(),
        "300".to_string(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    ServerProcess::spawn_with(name, &args, false)
}

/// Ends the test process, saying what the test was doing, if it runs far past its
/// budget: a hang (in the library or the test) becomes a diagnosis, not a stalled CI run.
/// Runs on a plain thread, so it fires even if the runtime's workers are stuck.
fn watchdog(limit: Duration, phase: Arc<Mutex<String>>, tally: Arc<Tally>) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            if finished.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Straight to the process's stderr: the test harness captures `eprintln!` and
        // would drop it on exit.
        let report = format!(
            "chaos: WATCHDOG: still running after {limit:?}, in phase {:?}; so far {} idempotent and {} non-idempotent calls succeeded, {} hung, errors {:?}\n",
            phase.lock().unwrap(),
            tally.works_ok.load(Ordering::SeqCst),
            tally.records_ok.load(Ordering::SeqCst),
            tally.hung.load(Ordering::SeqCst),
            tally.errors.lock().unwrap(),
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
        std::process::exit(101);
    });
    done
}

fn set_phase(phase: &Mutex<String>, now: impl Into<String>) {
    *phase.lock().unwrap() = now.into();
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_their_promises_while_replicas_die_restart_and_go_silent() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let dir = std::env::temp_dir().join(format!("rpc-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let logs: Vec<_> = (1..=3).map(|i| dir.join(format!("r{i}.log"))).collect();
    let mut replicas = Vec::new();
    for i in 0..3 {
        let (name, port, log) = (format!("r{}", i + 1), ports[i], logs[i].clone());
        replicas.push(blocking(move || spawn_replica(&name, port, &log)).await);
    }
    let proxy = Proxy::start(replicas[2].addr).await;
    let addrs = [replicas[0].addr, replicas[1].addr, proxy.addr];
    let busy_log = dir.join("r4.log");
    let busy_replica = {
        let (port, log) = (free_port(), busy_log.clone());
        blocking(move || spawn_replica_with("r4", port, &log, &["--max-in-flight", "4"])).await
    };
    let busy_addr = slow_link(busy_replica.addr, 8 * 1024).await;
    let busy_tally = Arc::new(Tally::default());

    let fds_before = open_fds();
    let heap_before = LIVE.load(Ordering::SeqCst);
    let tally = Arc::new(Tally::default());
    let phase = Arc::new(Mutex::new("starting".to_string()));
    let finished = watchdog(
        Duration::from_secs(seconds + 120),
        Arc::clone(&phase),
        Arc::clone(&tally),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(AtomicU64::new(1));
    let mut figures = Vec::new();
    {
        // Both channels: keepalive 200 ms / 300 ms, ejection after 3 failures.
        let keepalive = Some(Keepalive::new(
            Duration::from_millis(200),
            Duration::from_millis(300),
        ));
        let outlier = OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_millis(500),
            max_ejection: Duration::from_secs(2),
        };
        let channel = BalancedChannel::builder(StaticDiscovery::new(addrs.map(Endpoint::from)))
            .balancer(balance::PowerOfTwoChoices::new())
            .client_config(
                ClientConfig::default()
                    .connect_timeout(Duration::from_millis(500))
                    .keepalive(keepalive),
            )
            .outlier(outlier.clone())
            .build();
        let client = ReplicaClient::new(channel.clone());
        let busy_channel = BalancedChannel::builder(StaticDiscovery::new([busy_addr]))
            .client_config(ClientConfig::default().keepalive(keepalive))
            .outlier(outlier)
            .build();
        let busy_workers: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(busy_load(
                    ReplicaClient::new(busy_channel.clone()),
                    Arc::clone(&ids),
                    Arc::clone(&busy_tally),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        let workers: Vec<_> = (0..24)
            .map(|_| {
                tokio::spawn(load(
                    client.clone(),
                    Arc::clone(&ids),
                    Arc::clone(&tally),
                    Arc::clone(&stop),
                ))
            })
            .collect();

        let (mut kills, mut restarts, mut black_holes) = (0, 0, 0);
        let mut eject_times = Vec::new();
        let started = Instant::now();
        let mut round = 0;
        while started.elapsed() < Duration::from_secs(seconds) {
            tokio::time::sleep(Duration::from_millis(700)).await;
            match round % 3 {
                0 => {
                    set_phase(&phase, format!("round {round}: SIGKILL and restart r1"));
                    // SIGKILL r1, then bring it back on its port.
                    let mut victim = replicas.remove(0);
                    blocking(move || victim.kill()).await;
                    kills += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let log = logs[0].clone();
                    let replica = blocking(move || spawn_replica("r1", ports[0], &log)).await;
                    replicas.insert(0, replica);
                }
                1 => {
                    set_phase(&phase, format!("round {round}: graceful restart of r2"));
                    // Graceful restart of r2: drain (300 ms grace), exit, start again.
                    let mut leaving = replicas.remove(1);
                    blocking(move || {
                        leaving.stop();
                        leaving.wait();
                    })
                    .await;
                    let log = logs[1].clone();
                    let replica = blocking(move || spawn_replica("r2", ports[1], &log)).await;
                    replicas.insert(1, replica);
                    restarts += 1;
                }
                _ => {
                    set_phase(&phase, format!("round {round}: black hole in front of r3"));
                    // Black-hole r3 for 1.5 s: how long until the client routes around it?
                    proxy.black_hole();
                    black_holes += 1;
                    let from = Instant::now();
                    let hole = proxy.addr.to_string();
                    let gone = support::within(Duration::from_millis(1500), || {
                        channel
                            .endpoints()
                            .iter()
                            .any(|e| e.endpoint.addr == hole && (!e.connected || e.ejected))
                    })
                    .await;
                    if gone.is_some() {
                        eject_times.push(from.elapsed());
                    }
                    let left = Duration::from_millis(1500).saturating_sub(from.elapsed());
                    tokio::time::sleep(left).await;
                    proxy.heal();
                }
            }
            round += 1;
        }
        set_phase(&phase, "stopping the load");
        stop.store(true, Ordering::SeqCst);
        for worker in workers.into_iter().chain(busy_workers) {
            worker.await.unwrap();
        }
        let calls = ids.load(Ordering::SeqCst) - 1;
        let busy_stats = busy_channel.stats();
        figures.push(format!(
            "busy replica over a slow link: {} calls answered, errors {:?}, {} ejections, {} retries",
            busy_tally.works_ok.load(Ordering::SeqCst),
            busy_tally.errors.lock().unwrap(),
            busy_stats.ejections,
            busy_stats.retries
        ));
        assert!(
            busy_tally.errors.lock().unwrap().is_empty(),
            "the busy replica's calls all succeeded: {:?}",
            busy_tally.errors.lock().unwrap()
        );
        assert_eq!(
            (busy_stats.ejections, busy_stats.retries),
            (0, 0),
            "a busy replica is neither ejected nor retried around"
        );
        assert!(
            busy_tally.works_ok.load(Ordering::SeqCst) >= 16,
            "the busy replica served calls throughout"
        );
        drop(busy_channel);
        figures.push(format!(
            "{seconds} s of chaos: {calls} calls from 24 workers (and 8 on the busy replica); {kills} SIGKILLs, {restarts} graceful restarts, {black_holes} black holes"
        ));
        eject_times.sort();
        figures.push(format!(
            "black hole routed around after: {:?} (keepalive 200 ms + 300 ms)",
            eject_times
        ));
        drop(client);
        drop(channel);
    }

    set_phase(
        &phase,
        "checking the replicas' logs and the client's baseline",
    );
    // Every handler start, from the replicas' own logs.
    let mut starts: HashMap<(String, u64), usize> = HashMap::new();
    for log in &logs {
        starts_in(log, &mut starts);
    }
    // On the busy replica nothing was retried, so nothing at all started twice.
    let mut busy_starts = HashMap::new();
    starts_in(&busy_log, &mut busy_starts);
    let busy_twice: Vec<_> = busy_starts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        busy_twice.is_empty(),
        "calls started twice on the busy replica: {busy_twice:?}"
    );
    drop(busy_replica);
    let twice: Vec<_> = starts
        .iter()
        .filter(|((method, _), n)| method == "record" && **n > 1)
        .collect();
    let works_retried = starts
        .iter()
        .filter(|((method, _), n)| method == "work" && **n > 1)
        .count();
    let errors = tally.errors.lock().unwrap().clone();
    figures.push(format!(
        "succeeded: {} idempotent, {} non-idempotent; failed by kind: {errors:?}; hung: {}",
        tally.works_ok.load(Ordering::SeqCst),
        tally.records_ok.load(Ordering::SeqCst),
        tally.hung.load(Ordering::SeqCst)
    ));
    figures.push(format!(
        "idempotent calls that ran more than once (allowed): {works_retried}; non-idempotent: {}",
        twice.len()
    ));
    assert!(
        twice.is_empty(),
        "non-idempotent calls started twice: {twice:?}"
    );
    for id in tally.recorded.lock().unwrap().iter() {
        assert_eq!(
            starts.get(&("record".to_string(), *id)),
            Some(&1),
            "a call that succeeded started exactly once"
        );
    }
    assert_eq!(tally.hung.load(Ordering::SeqCst), 0, "no call hung");
    assert!(
        tally.works_ok.load(Ordering::SeqCst) > 100,
        "calls flowed throughout"
    );

    // The channel, its connections and tasks are gone: the client is back to baseline
    // (what the test itself collected is freed first).
    drop(std::mem::take(&mut *tally.recorded.lock().unwrap()));
    drop(starts);
    let fds_back = support::within(Duration::from_secs(5), || open_fds() <= fds_before).await;
    let heap_after = LIVE.load(Ordering::SeqCst);
    figures.push(format!(
        "client file descriptors {fds_before} before, {} after; heap {} KiB before, {} KiB after",
        open_fds(),
        heap_before / 1024,
        heap_after / 1024
    ));
    for line in &figures {
        eprintln!("chaos: {line}");
    }
    assert!(fds_back.is_some(), "file descriptors back to baseline");
    assert!(
        heap_after < heap_before + 1024 * 1024,
        "heap back to baseline (within 1 MiB)"
    );
    drop(replicas);
    let _ = std::fs::remove_dir_all(&dir);
    finished.store(true, Ordering::SeqCst);
}
