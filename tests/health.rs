//! The built-in health service: check and watch per service and for the whole server,
//! set by the application, and NOT_SERVING when a graceful shutdown starts, told to
//! watchers before the server refuses anything.

mod common;

use futures::StreamExt;
use traitrpc_core::health::{HealthClient, ServingStatus};
use traitrpc_core::RpcError;

use common::{start, ProbeImpl};

#[tokio::test]
async fn checks_and_watches_follow_what_the_application_sets() {
    let server = start(ProbeImpl::default()).await;
    let connection = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let health = HealthClient::new(connection.clone());
    assert_eq!(
        health.check(String::new()).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health.check("Probe".into()).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health.check("Nope".into()).await.unwrap(),
        ServingStatus::ServiceUnknown
    );

    let mut watch = health.watch("Probe".into()).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap(), ServingStatus::Serving);
    server.health().set("Probe", ServingStatus::NotServing);
    assert_eq!(
        watch.next().await.unwrap().unwrap(),
        ServingStatus::NotServing
    );
    // Setting the same status again is not a change.
    server.health().set("Probe", ServingStatus::NotServing);
    server.health().set("Probe", ServingStatus::Serving);
    assert_eq!(watch.next().await.unwrap().unwrap(), ServingStatus::Serving);
    assert_eq!(
        health.check("Probe".into()).await.unwrap(),
        ServingStatus::Serving
    );
    drop(watch);
    server.shutdown().await;
}

#[tokio::test]
async fn a_graceful_shutdown_tells_watchers_not_serving_before_refusing_calls() {
    let server = start(ProbeImpl::default()).await;
    let connection = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let health = HealthClient::new(connection.clone());
    let probe = common::ProbeClient::new(connection.clone());
    let mut watch = health.watch(String::new()).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap(), ServingStatus::Serving);
    let shutdown = tokio::spawn(server.shutdown());
    // The watch says NOT_SERVING and ends; the connection still took calls until then.
    assert_eq!(
        watch.next().await.unwrap().unwrap(),
        ServingStatus::NotServing
    );
    assert!(
        watch.next().await.is_none(),
        "the watch ends with the last status"
    );
    // Shutdown goes on (the watch does not hold it up), and refuses new calls.
    tokio::time::timeout(std::time::Duration::from_secs(5), shutdown)
        .await
        .expect("the shutdown is not held up by the watch")
        .unwrap();
    let refused = probe.echo(1).await.unwrap_err();
    assert!(
        matches!(
            refused,
            RpcError::ShuttingDown | RpcError::Unavailable { .. }
        ),
        "{refused:?}"
    );
}
