//! A test service whose handlers report what happened to them (started, finished,
//! dropped), shared by the integration tests.
#![allow(dead_code)]

pub mod raw;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use traitrpc_core::{service, ServerConfig, ServerHandle};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    DivideByZero,
}

/// What a handler saw of its call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenContext {
    pub request_id: u64,
    pub remaining_ms: Option<u64>,
    pub peer: String,
    pub token: Option<String>,
}

#[service]
pub trait Probe {
    async fn echo(&self, value: u64) -> u64;
    /// Sleeps `ms` milliseconds, then returns `value`.
    async fn sleep_echo(&self, ms: u64, value: u64) -> u64;
    async fn blob(&self, data: Vec<u8>) -> Vec<u8>;
    async fn blob_len(&self, data: Vec<u8>) -> u64;
    /// Returns a blob of `len` bytes.
    async fn make_blob(&self, len: u64) -> Vec<u8>;
    async fn panic(&self, message: String) -> u64;
    /// Never returns; counts its start and its drop.
    async fn hang(&self);
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn context(&self) -> SeenContext;
    /// Calls `echo` on `target` from inside this handler and reports the remaining budget
    /// the inner call saw.
    async fn nested_remaining_ms(&self, target: String) -> Option<u64>;
}

/// Counters the handlers update.
#[derive(Default)]
pub struct Observed {
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    pub dropped: AtomicUsize,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
    /// Blobs made by `make_blob`.
    pub blobs_made: AtomicUsize,
    pub drop_signal: Notify,
}

#[derive(Clone, Default)]
pub struct ProbeImpl {
    pub observed: Arc<Observed>,
}

/// Counts a handler as running until it is dropped or finishes.
struct Tracker {
    observed: Arc<Observed>,
    finished: bool,
}

impl Tracker {
    fn start(observed: &Arc<Observed>) -> Self {
        observed.started.fetch_add(1, Ordering::SeqCst);
        let now = observed.running.fetch_add(1, Ordering::SeqCst) + 1;
        observed.max_running.fetch_max(now, Ordering::SeqCst);
        Tracker {
            observed: Arc::clone(observed),
            finished: false,
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.observed.running.fetch_sub(1, Ordering::SeqCst);
        if self.finished {
            self.observed.finished.fetch_add(1, Ordering::SeqCst);
        } else {
            self.observed.dropped.fetch_add(1, Ordering::SeqCst);
            self.observed.drop_signal.notify_waiters();
        }
    }
}

impl Probe for ProbeImpl {
    async fn echo(&self, value: u64) -> u64 {
        value
    }

    async fn sleep_echo(&self, ms: u64, value: u64) -> u64 {
        let mut tracker = Tracker::start(&self.observed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        tracker.finished = true;
        value
    }

    async fn blob(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn blob_len(&self, data: Vec<u8>) -> u64 {
        data.len() as u64
    }

    async fn make_blob(&self, len: u64) -> Vec<u8> {
        self.observed.blobs_made.fetch_add(1, Ordering::SeqCst);
        vec![7; len as usize]
    }

    async fn panic(&self, message: String) -> u64 {
        panic!("{message}")
    }

    async fn hang(&self) {
        let _tracker = Tracker::start(&self.observed);
        std::future::pending::<()>().await
    }

    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }

    async fn context(&self) -> SeenContext {
        let ctx = traitrpc_core::context::current().expect("handlers run inside their context");
        SeenContext {
            request_id: ctx.request_id(),
            remaining_ms: ctx.remaining().map(|d| d.as_millis() as u64),
            peer: ctx.peer().to_string(),
            token: ctx.metadata().get_str("token").map(str::to_string),
        }
    }

    async fn nested_remaining_ms(&self, target: String) -> Option<u64> {
        let conn = traitrpc_transport_tcp::connect(target.as_str())
            .await
            .ok()?;
        let inner = ProbeClient::new(conn);
        // A generous own timeout: the inherited deadline must win.
        inner
            .with_timeout(Duration::from_secs(600))
            .context()
            .await
            .ok()?
            .remaining_ms
    }
}

/// A TCP server for `ProbeImpl` on an ephemeral loopback port.
pub async fn start(probe: ProbeImpl) -> ServerHandle<SocketAddr> {
    start_with(probe, ServerConfig::default()).await
}

/// A TCP server for `ProbeImpl` with `config`.
pub async fn start_with(probe: ProbeImpl, config: ServerConfig) -> ServerHandle<SocketAddr> {
    traitrpc_transport_tcp::serve_with_config("127.0.0.1:0", ProbeServer::new(probe), config)
        .await
        .expect("bind loopback")
}

/// A client connected to `addr`.
pub async fn client(addr: SocketAddr) -> ProbeClient {
    ProbeClient::new(
        traitrpc_transport_tcp::connect(addr)
            .await
            .expect("connect"),
    )
}

/// Waits up to 5 s for `condition`, polling.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Runs this test binary's ignored test `helper` in a child process with `env_var` set;
/// the helper serves and prints `LISTENING <addr>`. Returns the child and that address.
pub fn spawn_helper_server(helper: &str, env_var: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", helper, "--ignored", "--nocapture"])
        .env(env_var, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("LISTENING ").map(str::to_string))
        .expect("the helper server reports its address");
    (child, addr)
}

/// A TCP proxy in front of `target` that counts the bytes it forwards (both directions
/// together). Bytes are counted before they are forwarded, so once a caller has its
/// answer, the count includes the whole round trip.
pub async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = Arc::clone(&counted);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::TcpStream::connect(target).await.unwrap();
            let (a_read, a_write) = client.into_split();
            let (b_read, b_write) = upstream.into_split();
            counted_pipe(a_read, b_write, Arc::clone(&total));
            counted_pipe(b_read, a_write, Arc::clone(&total));
        }
    });
    (addr, counted)
}

fn counted_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    total: Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total.fetch_add(n as u64, Ordering::SeqCst);
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
}
