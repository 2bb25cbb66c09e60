//! Admission over real loopback sockets (issue 23): calls beyond the concurrency limit,
//! fixed or adaptive, are refused OVERLOADED before their arguments are decoded (counted
//! by the argument type's own `Deserialize`), and with an adaptive limit a call whose
//! deadline is closer than the server's latency without load is refused the same way
//! instead of run too late.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::{mpsc, Semaphore};
use traitrpc_core::{AdaptiveConcurrency, RpcError, ServerConfig};

/// Argument decodings: of values below 1000 (the first test's) and from 1000 on (the
/// second's), so that the tests, running at once, count only their own.
static DECODED: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

fn decoded(test: usize) -> usize {
    DECODED[test].load(Ordering::SeqCst)
}

/// An argument that counts its decodings.
#[derive(Serialize)]
struct Counted(u64);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        DECODED[usize::from(value >= 1000)].fetch_add(1, Ordering::SeqCst);
        Ok(Counted(value))
    }
}

#[traitrpc_core::service]
trait Gate {
    /// Tells the test it started, then waits for a permit.
    async fn hold(&self, arg: Counted) -> u64;
    /// Sleeps `ms` milliseconds.
    async fn work(&self, arg: Counted, ms: u64) -> u64;
}

#[derive(Clone)]
struct GateImpl {
    started: mpsc::UnboundedSender<()>,
    permits: Arc<Semaphore>,
}

impl Gate for GateImpl {
    async fn hold(&self, arg: Counted) -> u64 {
        let _ = self.started.send(());
        let _permit = self.permits.acquire().await.unwrap();
        arg.0
    }

    async fn work(&self, arg: Counted, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        arg.0
    }
}

async fn serve(
    config: ServerConfig,
) -> (
    traitrpc_core::ServerHandle<std::net::SocketAddr>,
    GateClient,
    mpsc::UnboundedReceiver<()>,
    Arc<Semaphore>,
) {
    let (started, started_rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let gate = GateImpl {
        started,
        permits: Arc::clone(&permits),
    };
    let server =
        traitrpc_transport_tcp::serve_with_config("127.0.0.1:0", GateServer::new(gate), config)
            .await
            .unwrap();
    let client = GateClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    )
    .with_timeout(Duration::from_secs(30));
    (server, client, started_rx, permits)
}

/// Both kinds of limit refuse a call beyond it before decoding its arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_limit_are_refused_before_their_arguments_are_decoded() {
    let two = AdaptiveConcurrency {
        initial_limit: 2,
        min_limit: 2,
        max_limit: 2,
        ..AdaptiveConcurrency::default()
    };
    let configs = [
        ("fixed", ServerConfig::default().max_concurrent_calls(2)),
        (
            "adaptive",
            ServerConfig::default().adaptive_concurrency(two),
        ),
    ];
    for (name, config) in configs {
        let (server, client, mut started, permits) = serve(config).await;
        assert_eq!(server.concurrency_limit(), 2, "{name}");
        let holders: Vec<_> = (0..2)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.hold(Counted(i)).await })
            })
            .collect();
        started.recv().await.unwrap();
        started.recv().await.unwrap();
        let before = decoded(0);
        for i in 0..10 {
            let refused = client.hold(Counted(i)).await.unwrap_err();
            assert!(
                matches!(refused, RpcError::Overloaded { .. }),
                "{name}: {refused:?}"
            );
            assert!(refused.is_safe_to_retry());
        }
        assert_eq!(decoded(0), before, "{name}: nothing decoded");
        assert_eq!(server.calls_shed(), 10, "{name}");
        permits.add_permits(2);
        for holder in holders {
            holder.await.unwrap().unwrap();
        }
        server.shutdown().await;
    }
}

/// Once the adaptive limit has measured the server's latency without load (50 ms here),
/// a call with 10 ms left is refused at once; one with time enough runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_finish_before_its_deadline_is_refused_not_run() {
    let settings = AdaptiveConcurrency {
        window_calls: 4,
        min_window: Duration::from_millis(1),
        ..AdaptiveConcurrency::default()
    };
    let (server, client, _started, _permits) =
        serve(ServerConfig::default().adaptive_concurrency(settings)).await;
    // The first window probes at the floor (4 calls at once): four 50 ms calls measure
    // the baseline.
    let probe: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.work(Counted(1000 + i), 50).await })
        })
        .collect();
    for call in probe {
        call.await.unwrap().unwrap();
    }
    let before = decoded(1);
    let hurried = client
        .clone()
        .with_timeout(Duration::from_millis(10))
        .work(Counted(1007), 50)
        .await
        .unwrap_err();
    assert!(
        matches!(hurried, RpcError::Overloaded { .. }),
        "{hurried:?}"
    );
    assert_eq!(decoded(1), before, "refused before decoding");
    assert_eq!(client.work(Counted(1008), 50).await.unwrap(), 1008);
    server.shutdown().await;
}
