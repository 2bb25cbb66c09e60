//! Streaming calls through a balanced channel: each goes to one chosen replica, whole.

use futures::StreamExt;
use traitrpc_core::{service, RpcError, Streaming};
use traitrpc_discovery::BalancedChannel;

#[service]
pub trait Feed {
    /// `n` items tagged with the replica's name.
    async fn items(&self, n: u32) -> Streaming<String>;
    /// The number of items sent.
    async fn count(&self, items: Streaming<u32>) -> u32;
}

struct Replica(&'static str);

impl Feed for Replica {
    async fn items(&self, n: u32) -> Streaming<String> {
        let name = self.0;
        Streaming::iter((0..n).map(move |i| format!("{name}:{i}")))
    }

    async fn count(&self, mut items: Streaming<u32>) -> u32 {
        let mut n = 0;
        while let Some(Ok(_)) = items.next().await {
            n += 1;
        }
        n
    }
}

#[tokio::test]
async fn streams_go_to_one_replica_each() {
    let a = traitrpc_transport_tcp::serve("127.0.0.1:0", FeedServer::new(Replica("a")))
        .await
        .unwrap();
    let b = traitrpc_transport_tcp::serve("127.0.0.1:0", FeedServer::new(Replica("b")))
        .await
        .unwrap();
    let channel = BalancedChannel::from_static([a.local_addr(), b.local_addr()]);
    let feed = FeedClient::new(channel);
    let mut replicas = std::collections::HashSet::new();
    for _ in 0..4 {
        let items: Vec<String> = feed
            .items(50)
            .await
            .unwrap()
            .map(|item| item.unwrap())
            .collect()
            .await;
        assert_eq!(items.len(), 50);
        let replica = items[0].split(':').next().unwrap().to_string();
        assert!(
            items.iter().all(|i| i.starts_with(&replica)),
            "one replica per stream"
        );
        replicas.insert(replica);
    }
    assert_eq!(
        replicas.len(),
        2,
        "round robin spreads streams: {replicas:?}"
    );
    assert_eq!(feed.count(Streaming::iter(0..1000)).await.unwrap(), 1000);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_stream_with_no_replica_fails_fast() {
    let feed = FeedClient::new(BalancedChannel::from_static(
        Vec::<std::net::SocketAddr>::new(),
    ));
    let error = feed.items(1).await.unwrap_err();
    assert!(matches!(error, RpcError::Unavailable { .. }), "{error:?}");
}

#[tokio::test]
async fn an_open_stream_finishes_when_its_replica_leaves_the_set_or_drains() {
    use traitrpc_discovery::StaticDiscovery;
    let a = traitrpc_transport_tcp::serve("127.0.0.1:0", FeedServer::new(Replica("a")))
        .await
        .unwrap();
    let b = traitrpc_transport_tcp::serve("127.0.0.1:0", FeedServer::new(Replica("b")))
        .await
        .unwrap();
    let discovery = StaticDiscovery::new([a.local_addr()]);
    let channel = BalancedChannel::builder(discovery.clone()).build();
    let feed = FeedClient::new(channel.clone());
    // Larger than a window, so most of it is still to come when a leaves the set.
    let mut stream = feed.items(200_000).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with("a:"));
    discovery.set([b.local_addr()]);
    // New calls go to b once the channel has applied the change...
    let mut moved = false;
    for _ in 0..500 {
        let items: Vec<String> = feed
            .items(1)
            .await
            .unwrap()
            .map(|i| i.unwrap())
            .collect()
            .await;
        if items[0].starts_with("b:") {
            moved = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(moved, "new calls go to the endpoint that stays");
    // ...and the stream on a delivers everything.
    let mut received = 1;
    while let Some(item) = stream.next().await {
        assert!(item.unwrap().starts_with("a:"));
        received += 1;
    }
    assert_eq!(received, 200_000);

    // Draining: b shuts down gracefully while a stream from it is open; the stream
    // completes and the shutdown waits for it.
    let mut stream = feed.items(200_000).await.unwrap();
    assert!(stream.next().await.unwrap().unwrap().starts_with("b:"));
    let shutdown = tokio::spawn(b.shutdown());
    let mut received = 1;
    while let Some(item) = stream.next().await {
        item.unwrap();
        received += 1;
    }
    assert_eq!(received, 200_000);
    shutdown.await.unwrap();
    a.shutdown().await;
}
