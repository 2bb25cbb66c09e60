//! Calls over real loopback sockets: multiplexing, ordering, payload sizes, errors that
//! belong to the application, the call context, and Unix sockets.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{client, start, MathError, ProbeClient, ProbeImpl, ProbeServer};
use futures::future::join_all;
use traitrpc_core::{CallError, Metadata, RpcError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_share_one_connection() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    let calls = (0..1000u64).map(|i| {
        let probe = probe.clone();
        tokio::spawn(async move { (i, probe.echo(i * 3).await) })
    });
    for outcome in join_all(calls).await {
        let (i, result) = outcome.unwrap();
        assert_eq!(result.unwrap(), i * 3);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_call_does_not_hold_back_a_fast_one() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let probe = client(server.local_addr()).await;
    let slow = tokio::spawn({
        let probe = probe.clone();
        async move {
            let r = probe.sleep_echo(1500, 1).await;
            (r, Instant::now())
        }
    });
    // The slow call is running on the server first.
    assert!(common::eventually(|| observed.started.load(Ordering::SeqCst) == 1).await);
    assert_eq!(probe.echo(2).await.unwrap(), 2);
    let fast_done = Instant::now();
    let (slow_result, slow_done) = slow.await.unwrap();
    assert_eq!(slow_result.unwrap(), 1);
    assert!(fast_done < slow_done, "the fast call completed first");
    server.shutdown().await;
}

#[tokio::test]
async fn responses_complete_out_of_order() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let probe = client(server.local_addr()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (started, (ms, value)) in [(600u64, 0u64), (300, 1), (0, 2)].into_iter().enumerate() {
        let probe = probe.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let v = probe.sleep_echo(ms, value).await.unwrap();
            tx.send(v).unwrap();
        });
        // Each is running on the server before the next is sent.
        assert!(common::eventually(|| observed.started.load(Ordering::SeqCst) > started).await);
    }
    drop(tx);
    let mut order = Vec::new();
    while let Some(v) = rx.recv().await {
        order.push(v);
    }
    assert_eq!(order, vec![2, 1, 0], "sent 0, 1, 2; finished fastest first");
    server.shutdown().await;
}

#[tokio::test]
async fn an_eight_mib_argument_and_result_round_trip() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let back = probe.blob(data.clone()).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data);
    server.shutdown().await;
}

#[tokio::test]
async fn application_errors_come_back_flat_and_typed() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    assert_eq!(probe.divide(7, 2).await.unwrap(), 3);
    match probe.divide(1, 0).await {
        Err(CallError::Application(MathError::DivideByZero)) => {}
        other => panic!("expected the application error, got {other:?}"),
    }
    // `?` into anyhow works for fallible and infallible methods alike.
    async fn via_anyhow(probe: &ProbeClient) -> anyhow::Result<i64> {
        let a = probe.echo(1).await? as i64;
        Ok(a + probe.divide(1, 0).await?)
    }
    let error = via_anyhow(&probe).await.unwrap_err();
    assert!(error.to_string().contains("DivideByZero"), "{error}");
    server.shutdown().await;
}

#[tokio::test]
async fn handlers_see_the_call_context() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    let mut metadata = Metadata::new();
    metadata.insert("token", "s3cret").unwrap();
    let seen = probe
        .with_timeout(Duration::from_secs(5))
        .with_metadata(metadata)
        .context()
        .await
        .unwrap();
    assert!(seen.request_id > 0);
    let remaining = seen.remaining_ms.expect("every call has a deadline");
    assert!(remaining > 3000 && remaining <= 5000, "{remaining}");
    assert!(seen.peer.starts_with("127.0.0.1:"), "{}", seen.peer);
    assert_eq!(seen.token.as_deref(), Some("s3cret"));

    // Without options: no metadata, the connection's default deadline (30 s).
    let plain = probe.context().await.unwrap();
    assert_eq!(plain.token, None);
    assert!(plain.remaining_ms.unwrap() > 25_000);
    server.shutdown().await;
}

#[tokio::test]
async fn calls_made_inside_a_handler_inherit_its_deadline() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    let inner_remaining = probe
        .with_timeout(Duration::from_secs(2))
        .nested_remaining_ms(server.local_addr().to_string())
        .await
        .unwrap()
        .expect("the nested call ran");
    assert!(
        inner_remaining <= 2000,
        "the inner call kept the outer 2 s budget, not its own 600 s: {inner_remaining}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn in_memory_transport_runs_the_same_protocol() {
    let (listener, connector) = traitrpc_core::memory::listener();
    let server =
        traitrpc_core::Server::new(ProbeServer::new(ProbeImpl::default())).serve(listener, ());
    let probe = ProbeClient::new(connector.connect().await.unwrap());
    assert_eq!(probe.echo(9).await.unwrap(), 9);
    assert_eq!(probe.context().await.unwrap().peer, "memory");
    server.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn unix_domain_sockets_have_the_same_api() {
    let dir = std::env::temp_dir().join(format!("rpc-unix-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("probe.sock");
    let _ = std::fs::remove_file(&path);
    let server = traitrpc_transport_tcp::unix::serve(&path, ProbeServer::new(ProbeImpl::default()))
        .await
        .unwrap();
    assert_eq!(server.local_addr(), path);
    let probe = ProbeClient::new(traitrpc_transport_tcp::unix::connect(&path).await.unwrap());
    let calls = (0..100).map(|i| {
        let probe = probe.clone();
        async move { probe.echo(i).await }
    });
    for (i, r) in join_all(calls).await.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as u64);
    }
    assert!(probe.context().await.unwrap().peer.starts_with("unix:"));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_closed_connection_fails_later_calls_fast() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    server.abort().await;
    let connection = probe.client().connection().unwrap().clone();
    assert!(common::eventually(|| connection.is_closed()).await);
    let started = Instant::now();
    let error = probe.echo(2).await.unwrap_err();
    // Refused without being sent: certainly not run, so safe to retry elsewhere.
    assert!(matches!(error, RpcError::Unavailable { .. }), "{error:?}");
    assert!(error.is_safe_to_retry());
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn connect_to_a_closed_port_is_a_typed_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = traitrpc_transport_tcp::connect(addr).await.unwrap_err();
    assert!(matches!(error, RpcError::Connect { .. }), "{error:?}");
}

/// A channel that forwards to one connection and counts calls: the shape of a balancer.
struct CountingChannel {
    connection: traitrpc_core::Connection,
    calls: std::sync::atomic::AtomicUsize,
}

impl traitrpc_core::Channel for CountingChannel {
    fn call<'a>(
        &'a self,
        call: traitrpc_core::OutgoingCall<'a>,
    ) -> traitrpc_core::ChannelFuture<'a> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { self.connection.send(&call).await })
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

#[tokio::test]
async fn generated_clients_send_through_any_channel() {
    let server = start(ProbeImpl::default()).await;
    let channel = std::sync::Arc::new(CountingChannel {
        connection: traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
        calls: Default::default(),
    });
    let probe = ProbeClient::new(traitrpc_core::Client::from_channel(channel.clone()));
    assert_eq!(probe.echo(7).await.unwrap(), 7);
    assert!(matches!(
        probe.divide(1, 0).await,
        Err(CallError::Application(MathError::DivideByZero))
    ));
    let remaining = probe.context().await.unwrap().remaining_ms.unwrap();
    assert!(
        remaining <= 5000,
        "the channel's default timeout applies: {remaining}"
    );
    assert_eq!(channel.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    server.shutdown().await;
}
