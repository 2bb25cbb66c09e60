//! Graceful shutdown and abort.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{client, start, start_with, ProbeImpl};
use traitrpc_core::{CallOutcome, RpcError, ServerConfig};

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

    let trigger = server.trigger();
    let shutdown = tokio::spawn(server.shutdown());
    // New calls on the existing connection are refused with a typed error once the
    // client has seen the server's GO_AWAY (until then they still reach the server,
    // which refuses them the same way)...
    let mut refused = None;
    for _ in 0..10_000 {
        match probe.echo(1).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("new calls are refused once shutdown began");
    assert_eq!(refused, RpcError::ShuttingDown);
    assert_eq!(refused.outcome(), CallOutcome::NotStarted);
    assert!(trigger.is_stopping());
    // ...new connections are not accepted...
    assert!(traitrpc_transport_tcp::connect(addr).await.is_err());
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
async fn calls_still_running_after_the_grace_period_are_interrupted_not_retryable() {
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
    // It had started: not "shutting down" (never ran, safe anywhere) but interrupted.
    let error = stuck.await.unwrap().unwrap_err();
    assert!(matches!(error, RpcError::Interrupted { .. }), "{error:?}");
    assert_eq!(error.outcome(), CallOutcome::Started);
    assert!(!error.is_safe_to_retry());
    assert!(error.outcome().retry_is_safe(true) && !error.outcome().retry_is_safe(false));
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
    // The server has accepted it (it counts connections from accept on).
    assert!(common::eventually(|| server.connections() == 1).await);
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
    server.shutdown().await;
    // The call that ran is interrupted; the one the server never read did not run.
    let mut outcomes: Vec<CallOutcome> = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap().unwrap_err().outcome());
    }
    outcomes.sort_by_key(|o| *o as u8);
    assert_eq!(outcomes, [CallOutcome::NotStarted, CallOutcome::Started]);
}

#[tokio::test]
async fn a_trigger_stops_the_server_from_anywhere_and_stopped_waits_for_the_end() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = server.shutdown_on(async move {
        let _ = rx.await;
    });
    let trigger = server.trigger();
    assert!(!trigger.is_stopping());
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.stopped())
        .await
        .expect("the signal stops the server");
    assert!(trigger.is_stopping());
    // A second stop from another clone waits for the same end and returns.
    tokio::time::timeout(Duration::from_secs(5), trigger.shutdown())
        .await
        .unwrap();
    assert!(probe.echo(2).await.is_err());
}
