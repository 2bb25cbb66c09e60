//! Graceful shutdown and abort.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{client, start, start_with, ProbeImpl};
use rpc_core::{RpcError, ServerConfig};

#[tokio::test]
async fn graceful_shutdown_drains_calls_in_flight_and_refuses_new_ones() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start(probe_impl).await;
    let addr = server.local_addr();
    let probe = client(addr).await;
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.sleep_echo(400, i).await })
        })
        .collect();
    assert!(common::eventually(|| observed.started.load(Ordering::SeqCst) == 5).await);

    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New calls on the existing connection are refused with a typed error...
    assert_eq!(probe.echo(1).await.unwrap_err(), RpcError::ShuttingDown);
    // ...new connections are not accepted...
    assert!(rpc_transport_tcp::connect(addr).await.is_err());
    // ...and the calls in flight complete normally.
    for (i, call) in in_flight.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finishes once drained")
        .unwrap();
    assert_eq!(observed.finished.load(Ordering::SeqCst), 5);
    assert_eq!(observed.dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn calls_still_running_after_the_grace_period_are_answered_shutting_down() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start_with(
        probe_impl,
        ServerConfig::default().shutdown_grace(Duration::from_millis(200)),
    )
    .await;
    let probe = client(server.local_addr()).await;
    let stuck = tokio::spawn({
        let probe = probe.clone();
        async move { probe.hang().await }
    });
    assert!(common::eventually(|| observed.started.load(Ordering::SeqCst) == 1).await);
    let started = Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(stuck.await.unwrap().unwrap_err(), RpcError::ShuttingDown);
    assert_eq!(observed.dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_idle_server_shuts_down_at_once() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    let started = Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(probe.echo(2).await.is_err());
}

#[tokio::test]
async fn abort_does_not_wait_for_connections_stuck_in_the_handshake() {
    let server = start(ProbeImpl::default()).await;
    let _silent = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.abort().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_hard_stop_answers_calls_waiting_for_an_in_flight_slot() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start_with(
        probe_impl,
        ServerConfig::default()
            .max_in_flight_per_connection(1)
            .shutdown_grace(Duration::from_millis(200)),
    )
    .await;
    let probe = client(server.local_addr()).await;
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.hang().await })
        })
        .collect();
    assert!(common::eventually(|| observed.started.load(Ordering::SeqCst) == 1).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap_err(), RpcError::ShuttingDown);
    }
}
