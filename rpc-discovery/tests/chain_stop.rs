//! Chain stop (issue 23): a balanced channel marks every attempt after a call's first
//! with `RETRY_ATTEMPT_KEY`, and a handler serving such an attempt sends its own calls
//! without retries, so one overloaded backend is not retried at every layer of a call
//! graph. Over real loopback sockets; the assertions count the backend's refusals.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::service::Replica;
use support::{ReplicaClient, ReplicaImpl, ReplicaServer};
use traitrpc_core::{Metadata, ServerConfig, ServerHandle};
use traitrpc_discovery::balance::{Balancer, Candidate};
use traitrpc_discovery::{BalancedChannel, StaticDiscovery, RETRY_ATTEMPT_KEY};

/// A frontend whose one method calls the backend through a balanced channel.
#[traitrpc_core::service]
trait Frontend {
    /// Asks the backend who it is; the backend's answer or error, as text.
    async fn relay(&self) -> String;
}

struct FrontendImpl {
    backend: ReplicaClient,
}

impl Frontend for FrontendImpl {
    async fn relay(&self) -> String {
        match self.backend.whoami().await {
            Ok(name) => name,
            Err(error) => format!("{error:?}"),
        }
    }
}

/// A backend that refuses everything: its only slot is held by a long call.
async fn shedding_backend() -> (
    ServerHandle<std::net::SocketAddr>,
    tokio::task::JoinHandle<()>,
) {
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        ReplicaServer::new(ReplicaImpl::new("shedding")),
        ServerConfig::default().max_concurrent_calls(1),
    )
    .await
    .unwrap();
    let holder = ReplicaClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    )
    .with_timeout(Duration::from_secs(60));
    let held = tokio::spawn(async move {
        let _ = holder.record(60_000).await;
    });
    while server.calls_in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    (server, held)
}

fn retried() -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert(RETRY_ATTEMPT_KEY, "2").unwrap();
    metadata
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_served_for_a_retry_is_not_retried_again() {
    let (backend, held) = shedding_backend().await;
    let channel = BalancedChannel::from_static([backend.local_addr()]);
    let frontend = traitrpc_transport_tcp::serve(
        "127.0.0.1:0",
        FrontendServer::new(FrontendImpl {
            backend: ReplicaClient::new(channel),
        }),
    )
    .await
    .unwrap();
    let client = FrontendClient::new(
        traitrpc_transport_tcp::connect(frontend.local_addr())
            .await
            .unwrap(),
    );

    // A first attempt: the frontend's channel tries the backend three times (the
    // default policy), each refused.
    let answer = client.relay().await.unwrap();
    assert!(answer.starts_with("Overloaded"), "{answer}");
    assert_eq!(backend.calls_shed(), 3);
    // The same call marked as a retry from upstream: the frontend's channel tries once.
    let answer = client
        .clone()
        .with_metadata(retried())
        .relay()
        .await
        .unwrap();
    assert!(answer.starts_with("Overloaded"), "{answer}");
    assert_eq!(backend.calls_shed(), 4);

    held.abort();
    frontend.shutdown().await;
    backend.shutdown().await;
}

/// Picks the candidate at `first`, when it is one, else the first candidate.
struct Prefer(String);

impl Balancer for Prefer {
    fn pick(&self, candidates: &[Candidate], _: Option<u64>) -> usize {
        candidates
            .iter()
            .position(|candidate| candidate.endpoint().addr == self.0)
            .unwrap_or(0)
    }
    fn name(&self) -> &'static str {
        "prefer"
    }
}

/// A replica that notes the retry mark of each `whoami` it serves.
#[derive(Clone, Default)]
struct MarkRecorder(Arc<Mutex<Vec<Option<String>>>>);

impl Replica for MarkRecorder {
    async fn whoami(&self) -> String {
        let mark = traitrpc_core::context::with_current(|context| {
            context
                .metadata()
                .get_str(RETRY_ATTEMPT_KEY)
                .map(str::to_string)
        })
        .flatten();
        self.0.lock().unwrap().push(mark);
        "recorder".into()
    }
    async fn work(&self, _: u64) -> String {
        "recorder".into()
    }
    async fn record(&self, _: u64) -> String {
        "recorder".into()
    }
    async fn record_id(&self, _: u64, _: u64) -> String {
        "recorder".into()
    }
    async fn work_id(&self, _: u64, _: u64) -> String {
        "recorder".into()
    }
    async fn bulk(&self, _: u64, _: u32) -> String {
        "recorder".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_carries_its_attempt_number() {
    let (shedding, held) = shedding_backend().await;
    let recorder = MarkRecorder::default();
    let marks = Arc::clone(&recorder.0);
    let recording = traitrpc_transport_tcp::serve("127.0.0.1:0", ReplicaServer::new(recorder))
        .await
        .unwrap();
    let channel = BalancedChannel::builder(StaticDiscovery::new([
        shedding.local_addr(),
        recording.local_addr(),
    ]))
    .balancer(Prefer(shedding.local_addr().to_string()))
    .build();
    // Both connected, so that the first attempt goes to the shedding backend.
    let connected = support::within(Duration::from_secs(10), || {
        let endpoints = channel.endpoints();
        endpoints.len() == 2 && endpoints.iter().all(|e| e.connected)
    })
    .await;
    assert!(connected.is_some(), "both endpoints connected");
    let client = ReplicaClient::new(channel);
    // First to the shedding backend, then the retry to the recorder, marked "2".
    assert_eq!(client.whoami().await.unwrap(), "recorder");
    assert_eq!(*marks.lock().unwrap(), [Some("2".to_string())]);
    held.abort();
    recording.shutdown().await;
    shedding.shutdown().await;
}
