//! Helpers shared by the integration tests: in-process replicas, replica processes, and
//! the etcd gate.
#![allow(dead_code)]

#[path = "../../src/bin/discovery-test-server/service.rs"]
pub mod service;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use service::{ReplicaClient, ReplicaImpl, ReplicaServer};
use traitrpc_core::ServerHandle;

/// An in-process replica on an ephemeral loopback port.
pub async fn start(replica: ReplicaImpl) -> ServerHandle<SocketAddr> {
    traitrpc_transport_tcp::serve("127.0.0.1:0", ReplicaServer::new(replica))
        .await
        .expect("bind loopback")
}

/// The etcd endpoint for tests: `RPC_TEST_ETCD`, else `http://127.0.0.1:2379`. The tests
/// that call this are `#[ignore]`d unless asked for, so when asked for and no etcd
/// answers, they fail with the reason: a test never passes without having run.
pub fn etcd_endpoint(test: &str) -> String {
    let endpoint = std::env::var("RPC_TEST_ETCD")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let address = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // An etcd may answer its health check late, or say "false" for a moment, on a loaded
    // machine (a whole workspace's tests, another test compacting it): it gets a while
    // to say "true" before the test fails.
    let give_up = Instant::now() + ETCD_HEALTH_PATIENCE;
    loop {
        if etcd_healthy(&address) {
            return endpoint;
        }
        if Instant::now() >= give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{test}: no healthy etcd at {endpoint} within {ETCD_HEALTH_PATIENCE:?}; \
         `source .ci/etcd.sh` starts one (or set RPC_TEST_ETCD=http://HOST:PORT)"
    );
}

/// How long a test waits for etcd to report itself healthy.
const ETCD_HEALTH_PATIENCE: Duration = Duration::from_secs(20);

/// Whether an etcd at `address` (`host:port`) reports itself healthy.
pub fn etcd_healthy(address: &str) -> bool {
    use std::io::Read;
    use std::net::ToSocketAddrs;
    let Some(addr) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.contains("\"health\":\"true\"")
}

/// A service name no other test run uses.
pub fn unique_service(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A `discovery-test-server` process, killed when dropped.
pub struct ServerProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts a replica named `name`; with `etcd` = (endpoint, service, ttl seconds) it
    /// registers itself. Returns once it listens (and is registered).
    pub fn spawn(name: &str, etcd: Option<(&str, &str, u64)>) -> ServerProcess {
        let mut args: Vec<String> = Vec::new();
        if let Some((endpoint, service, ttl)) = etcd {
            for a in [
                "--etcd",
                endpoint,
                "--service",
                service,
                "--ttl",
                &ttl.to_string(),
            ] {
                args.push(a.to_string());
            }
        }
        let registered = etcd.is_some();
        Self::spawn_with(name, &args, registered)
    }

    /// Starts a replica named `name` with more command-line `args` (see the binary's
    /// usage); waits for `registered` too if `registered`.
    pub fn spawn_with(name: &str, args: &[String], registered: bool) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_discovery-test-server"));
        command.args(["--name", name]).args(args);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn discovery-test-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut process = ServerProcess {
            name: name.to_string(),
            addr: "0.0.0.0:0".parse().unwrap(),
            child,
            stdin,
            lines,
        };
        let listening = process.expect_line("listening ");
        process.addr = listening["listening ".len()..].parse().unwrap();
        if registered {
            process.expect_line("registered");
        }
        process
    }

    /// Waits (up to 20 s) for an output line starting with `prefix`.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => panic!("{}: no line starting with {prefix:?}", self.name),
            }
        }
    }

    /// SIGKILL: no deregistration, no draining.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }

    /// Asks for a graceful shutdown (deregister, drain) without waiting for it.
    pub fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
    }

    /// Waits for the process to exit after [`stop`](Self::stop). Bounded: a process that
    /// has not exited 20 s after saying `stopped` is a failure (and is killed), not a hang.
    pub fn wait(&mut self) {
        self.expect_line("stopped");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{}: said `stopped` but had not exited 20 s later",
            self.name
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for `condition`, polling every 10 ms; returns how long it took.
pub async fn within(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition().then(|| start.elapsed())
}

/// An etcd of the test's own (the `etcd` binary, as installed by `.ci/etcd.sh`), on free
/// loopback ports with a temporary data directory; killed and removed when dropped.
pub struct PrivateEtcd {
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateEtcd {
    pub fn start() -> PrivateEtcd {
        let free = || loop {
            let port = 20_000 + (std::process::id() as u16 % 97) * 100 + rand_u16() % 10_000;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        };
        let client_port = free();
        let mut peer_port = free();
        while peer_port == client_port {
            peer_port = free();
        }
        let dir =
            std::env::temp_dir().join(format!("rpc-etcd-{}-{client_port}", std::process::id()));
        let mut etcd = PrivateEtcd {
            endpoint: format!("http://127.0.0.1:{client_port}"),
            client_port,
            peer_port,
            dir,
            child: None,
        };
        etcd.run();
        etcd
    }

    fn run(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "private", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("private={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run etcd (installed by .ci/etcd.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("private etcd did not start");
    }

    fn healthy(&self) -> bool {
        etcd_healthy(&format!("127.0.0.1:{}", self.client_port))
    }

    /// SIGKILL, keeping the data directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u16
}
