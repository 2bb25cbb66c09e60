//! Deadlines, cancellation and backpressure over real loopback sockets.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{client, eventually, start, start_with, ProbeImpl};
use futures::future::join_all;
use traitrpc_core::{ClientConfig, RpcError, ServerConfig};

#[tokio::test]
async fn a_deadline_ends_the_call_on_both_sides() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let probe = client(server.local_addr()).await;

    let started = Instant::now();
    let error = probe
        .with_timeout(Duration::from_millis(200))
        .hang()
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error, RpcError::DeadlineExceeded);
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(
        waited < Duration::from_secs(2),
        "returned on time: {waited:?}"
    );
    // The server dropped the handler too.
    assert!(eventually(|| observed.dropped.load(Ordering::SeqCst) == 1).await);
    assert_eq!(observed.running.load(Ordering::SeqCst), 0);
    // The connection is still good.
    assert_eq!(probe.echo(5).await.unwrap(), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_enforces_the_deadline_it_received() {
    // A raw client that sends a 100 ms budget and then does not time out itself would
    // still get DEADLINE_EXCEEDED from the server; with our client the server drops the
    // handler at the same moment the client gives up, so check the handler side alone:
    // a 100 ms budget on a 10 s sleep drops the handler within a second.
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let probe = client(server.local_addr()).await;
    let result = probe
        .with_timeout(Duration::from_millis(100))
        .sleep_echo(10_000, 1)
        .await;
    assert_eq!(result.unwrap_err(), RpcError::DeadlineExceeded);
    assert!(eventually(|| observed.dropped.load(Ordering::SeqCst) == 1).await);
    assert_eq!(observed.finished.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_a_call_cancels_the_handler_on_the_server() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let probe = client(server.local_addr()).await;

    let call = tokio::spawn({
        let probe = probe.clone();
        async move { probe.hang().await }
    });
    assert!(eventually(|| observed.started.load(Ordering::SeqCst) == 1).await);
    let dropped = observed.drop_signal.notified();
    call.abort();
    tokio::time::timeout(Duration::from_secs(5), dropped)
        .await
        .expect("the handler observed its cancellation");
    assert_eq!(observed.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_bounds_calls_in_flight_per_connection() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start_with(
        probe_impl,
        ServerConfig::default().max_in_flight_per_connection(3),
    )
    .await;
    let probe = client(server.local_addr()).await;
    let calls = (0..20).map(|i| {
        let probe = probe.clone();
        async move { probe.sleep_echo(30, i).await }
    });
    for (i, r) in join_all(calls).await.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as u64);
    }
    assert_eq!(observed.finished.load(Ordering::SeqCst), 20);
    assert!(observed.max_running.load(Ordering::SeqCst) <= 3);
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_bounds_calls_in_flight_per_connection() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let conn = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default().max_in_flight(2),
    )
    .await
    .unwrap();
    let probe = common::ProbeClient::new(conn);
    let calls = (0..10).map(|i| {
        let probe = probe.clone();
        async move { probe.sleep_echo(30, i).await }
    });
    for (i, r) in join_all(calls).await.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as u64);
    }
    assert!(observed.max_running.load(Ordering::SeqCst) <= 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_waiting_for_a_slot_still_honours_its_deadline() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let conn = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default().max_in_flight(1),
    )
    .await
    .unwrap();
    let probe = common::ProbeClient::new(conn);
    let blocker = tokio::spawn({
        let probe = probe.clone();
        async move { probe.sleep_echo(2000, 0).await }
    });
    // The blocker holds the only slot.
    assert!(common::eventually(|| observed.started.load(Ordering::SeqCst) == 1).await);
    let started = Instant::now();
    let error = probe
        .with_timeout(Duration::from_millis(100))
        .echo(1)
        .await
        .unwrap_err();
    assert_eq!(error, RpcError::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(blocker.await.unwrap().unwrap(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_huge_timeout_means_no_practical_limit() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    let v = probe.with_timeout(Duration::MAX).echo(4).await.unwrap();
    assert_eq!(v, 4);
    server.shutdown().await;
}

#[tokio::test]
async fn an_already_expired_deadline_fails_without_reaching_the_server() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let probe = client(server.local_addr()).await;
    let error = probe
        .with_timeout(Duration::ZERO)
        .sleep_echo(10, 1)
        .await
        .unwrap_err();
    assert_eq!(error, RpcError::DeadlineExceeded);
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    assert_eq!(observed.started.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn the_servers_max_call_duration_caps_the_callers_deadline() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start_with(
        probe_impl,
        ServerConfig::default().max_call_duration(Some(Duration::from_millis(100))),
    )
    .await;
    let probe = client(server.local_addr()).await;
    let started = Instant::now();
    let error = probe
        .with_timeout(Duration::from_secs(20))
        .hang()
        .await
        .unwrap_err();
    assert_eq!(error, RpcError::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(eventually(|| observed.dropped.load(Ordering::SeqCst) == 1).await);
    server.shutdown().await;
}

#[tokio::test]
async fn closing_a_connection_cancels_its_calls_in_flight() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let probe = client(server.local_addr()).await;
    let call = tokio::spawn({
        let probe = probe.clone();
        async move { probe.hang().await }
    });
    assert!(eventually(|| observed.started.load(Ordering::SeqCst) == 1).await);
    probe.client().connection().unwrap().close();
    assert_eq!(call.await.unwrap().unwrap_err(), RpcError::Cancelled);
    assert!(matches!(
        probe.echo(1).await.unwrap_err(),
        RpcError::Unavailable { .. }
    ));
    // The server noticed the connection close and dropped the handler.
    assert!(eventually(|| observed.dropped.load(Ordering::SeqCst) == 1).await);
    server.shutdown().await;
}
