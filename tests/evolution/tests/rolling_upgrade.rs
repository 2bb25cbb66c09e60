//! A rolling upgrade under load: a balanced channel over two replicas of `shop.Orders`,
//! upgraded in place one after the other from v1 to v2 while clients of both versions
//! call methods whose schemas differ (fields reordered, a variant inserted, an integer's
//! sign changed). No call returns a wrong value; each reaches replicas of both versions
//! (each call goes in the form its replica needs: bincode or JSON by name). Both clients
//! share one channel, so each connection carries calls of both versions of the trait:
//! the choice between bincode and JSON is made per client schema, not per method name
//! (a v1 client binding `total` first must not make the v2 client's `total` bincode).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use traitrpc_core::ServerHandle;
use traitrpc_discovery::{BalancedChannel, StaticDiscovery};
use traitrpc_evolution_tests::{v1, v2};

/// What one client saw: calls answered, and which versions answered them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Progress {
    calls: u64,
    from_v1: u64,
    from_v2: u64,
}

async fn serve_v1(addr: SocketAddr) -> ServerHandle<SocketAddr> {
    traitrpc_transport_tcp::serve(addr, v1::OrdersServer::new(v1::Shop))
        .await
        .unwrap()
}

async fn serve_v2(addr: SocketAddr) -> ServerHandle<SocketAddr> {
    traitrpc_transport_tcp::serve(addr, v2::OrdersServer::new(v2::Shop))
        .await
        .unwrap()
}

/// Calls through a v1 client until told to stop; every answer must keep its meaning
/// (errors are allowed while a replica restarts: they are typed, never a wrong value).
async fn old_client(
    client: v1::OrdersClient,
    progress: watch::Sender<Progress>,
    stop: watch::Receiver<bool>,
) {
    let mut seen = Progress::default();
    while !*stop.borrow() {
        if let Ok(pair) = client.reorder_fields(v1::Pair { a: 1, b: 2 }).await {
            assert_eq!(pair, v1::Pair { a: 1, b: 2 });
        }
        if let Ok(status) = client.insert_variant(v1::Status::Suspended).await {
            assert_eq!(status, "Suspended");
        }
        if let Ok(total) = client.total(2, 3).await {
            assert_eq!(total, 5);
        }
        // The replica's version: v1 answers 1, v2 answers 2.
        match client.add_error_variant(false).await {
            Ok(1) => seen.from_v1 += 1,
            Ok(2) => seen.from_v2 += 1,
            Ok(other) => panic!("no version answers {other}"),
            Err(_) => {}
        }
        seen.calls += 1;
        progress.send_replace(seen);
    }
}

/// The same through a v2 client.
async fn new_client(
    client: v2::OrdersClient,
    progress: watch::Sender<Progress>,
    stop: watch::Receiver<bool>,
) {
    let mut seen = Progress::default();
    while !*stop.borrow() {
        if let Ok(pair) = client.reorder_fields(v2::Pair { b: 2, a: 1 }).await {
            assert_eq!(pair, v2::Pair { b: 2, a: 1 });
        }
        if let Ok(status) = client.insert_variant(v2::Inserted::Suspended).await {
            assert_eq!(status, "Suspended");
        }
        if let Ok(total) = client.total(-2, 7).await {
            assert_eq!(total, 5);
        }
        match client.add_error_variant(false).await {
            Ok(1) => seen.from_v1 += 1,
            Ok(2) => seen.from_v2 += 1,
            Ok(other) => panic!("no version answers {other}"),
            Err(_) => {}
        }
        seen.calls += 1;
        progress.send_replace(seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_upgraded_in_place_never_returns_a_wrong_value() {
    let mut a = serve_v1("127.0.0.1:0".parse().unwrap()).await;
    let mut b = serve_v1("127.0.0.1:0".parse().unwrap()).await;
    let (addr_a, addr_b) = (a.local_addr(), b.local_addr());
    let channel = BalancedChannel::builder(StaticDiscovery::new([addr_a, addr_b])).build();
    let timeout = Duration::from_secs(20);
    let (stop_tx, stop) = watch::channel(false);
    let (old_tx, mut old) = watch::channel(Progress::default());
    let (new_tx, mut new) = watch::channel(Progress::default());
    let old_task = tokio::spawn(old_client(
        v1::OrdersClient::new(channel.clone()).with_timeout(timeout),
        old_tx,
        stop.clone(),
    ));
    let new_task = tokio::spawn(new_client(
        v2::OrdersClient::new(channel.clone()).with_timeout(timeout),
        new_tx,
        stop,
    ));
    let wait = Duration::from_secs(60);
    let reached = |rx: &mut watch::Receiver<Progress>, what: fn(&Progress) -> bool| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(wait, rx.wait_for(what))
                .await
                .expect("the clients make progress")
                .expect("the client runs")
                .to_owned()
        }
    };

    // All v1: both clients are served (the v2 client in JSON by name).
    reached(&mut old, |p| p.from_v1 >= 10).await;
    reached(&mut new, |p| p.from_v1 >= 10).await;

    // Upgrade b in place: a mixed fleet. Both clients reach both versions.
    b.shutdown().await;
    b = serve_v2(addr_b).await;
    reached(&mut old, |p| p.from_v2 >= 10).await;
    reached(&mut new, |p| p.from_v2 >= 10).await;

    // Upgrade a: all v2, and the calls go on.
    a.shutdown().await;
    a = serve_v2(addr_a).await;
    reached(&mut old, |p| p.from_v2 >= 40).await;
    reached(&mut new, |p| p.from_v2 >= 40).await;

    stop_tx.send_replace(true);
    old_task
        .await
        .expect("no wrong value reached the v1 client");
    new_task
        .await
        .expect("no wrong value reached the v2 client");
    a.shutdown().await;
    b.shutdown().await;
}
