//! Each configurable server limit, and what a peer that hits it sees.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{client, eventually, start_with, ProbeImpl};
use traitrpc_core::{RpcError, ServerConfig};

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_a_typed_error() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().max_connections(2),
    )
    .await;
    let first = client(server.local_addr()).await;
    let second = client(server.local_addr()).await;
    assert_eq!(
        first.echo(1).await.unwrap() + second.echo(2).await.unwrap(),
        3
    );
    let refused = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, RpcError::Overloaded { .. }),
        "{refused:?}"
    );
    assert!(refused.is_safe_to_retry());
    // The refused connection does not count; closing one makes room again.
    assert!(eventually(|| server.connections() == 2).await);
    drop(second);
    assert!(eventually(|| server.connections() == 1).await);
    let third = client(server.local_addr()).await;
    assert_eq!(third.echo(3).await.unwrap(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn calls_beyond_the_server_wide_limit_are_shed_not_queued() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start_with(probe_impl, ServerConfig::default().max_concurrent_calls(2)).await;
    let a = client(server.local_addr()).await;
    let b = client(server.local_addr()).await;
    let hanging: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|c| tokio::spawn(async move { c.hang().await }))
        .collect();
    assert!(eventually(|| observed.started.load(Ordering::SeqCst) == 2).await);
    assert_eq!(server.calls_in_flight(), 2);
    let started = Instant::now();
    let shed = b.echo(1).await.unwrap_err();
    assert!(matches!(shed, RpcError::Overloaded { .. }), "{shed:?}");
    assert!(shed.is_safe_to_retry());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    for call in hanging {
        call.abort();
    }
    assert!(eventually(|| server.calls_in_flight() == 0).await);
    assert_eq!(a.echo(5).await.unwrap(), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().idle_timeout(Some(Duration::from_millis(300))),
    )
    .await;
    let busy = client(server.local_addr()).await;
    // A call longer than the idle timeout keeps its connection.
    assert_eq!(busy.sleep_echo(800, 7).await.unwrap(), 7);
    let idle = client(server.local_addr()).await;
    assert_eq!(idle.echo(1).await.unwrap(), 1);
    let connection = idle.client().connection().unwrap().clone();
    assert!(
        eventually(|| connection.is_closed()).await,
        "closed by the server"
    );
    let error = idle.echo(2).await.unwrap_err();
    assert!(matches!(error, RpcError::Unavailable { .. }), "{error:?}");
    assert!(eventually(|| server.connections() == 0).await);
    server.shutdown().await;
}
