//! A stream received in JSON by name (its sender's schema differs) and returned as is by
//! a handler (a proxy) must not reach the next peer as if it were bincode: the items'
//! JSON bytes would be misread (`{"seq":0,...}` read as bincode is `seq: 123`). The
//! forwarded stream ends with a typed error instead; mapping its items forwards them.

use futures::StreamExt;
use traitrpc_core::{service, RpcError, Streaming};

mod old {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Item {
        pub seq: u32,
    }

    #[service(name = "Feed")]
    pub trait Feed {
        async fn watch(&self, n: u32) -> Streaming<Item>;
        async fn watch_mapped(&self, n: u32) -> Streaming<Item>;
    }
}

mod new {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Item {
        pub seq: u32,
        #[serde(default)]
        pub tag: String,
    }

    #[service(name = "Feed")]
    pub trait Feed {
        async fn watch(&self, n: u32) -> Streaming<Item>;
        async fn watch_mapped(&self, n: u32) -> Streaming<Item>;
    }

    pub struct Source;

    impl Feed for Source {
        async fn watch(&self, n: u32) -> Streaming<Item> {
            Streaming::iter((0..n).map(|seq| Item {
                seq,
                tag: "new".into(),
            }))
        }
        async fn watch_mapped(&self, n: u32) -> Streaming<Item> {
            self.watch(n).await
        }
    }
}

/// An old-schema proxy in front of a new-schema source.
struct Proxy(old::FeedClient);

impl old::Feed for Proxy {
    async fn watch(&self, n: u32) -> Streaming<old::Item> {
        match self.0.watch(n).await {
            Ok(stream) => stream,
            Err(e) => Streaming::from_results(futures::stream::iter([Err(e)])),
        }
    }
    async fn watch_mapped(&self, n: u32) -> Streaming<old::Item> {
        match self.0.watch_mapped(n).await {
            Ok(stream) => Streaming::from_results(stream),
            Err(e) => Streaming::from_results(futures::stream::iter([Err(e)])),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translated_stream_is_not_forwarded_as_bincode() {
    let source = traitrpc_transport_tcp::serve("127.0.0.1:0", new::FeedServer::new(new::Source))
        .await
        .unwrap();
    let upstream = old::FeedClient::new(
        traitrpc_transport_tcp::connect(source.local_addr())
            .await
            .unwrap(),
    );
    let proxy = traitrpc_transport_tcp::serve("127.0.0.1:0", old::FeedServer::new(Proxy(upstream)))
        .await
        .unwrap();
    let client = old::FeedClient::new(
        traitrpc_transport_tcp::connect(proxy.local_addr())
            .await
            .unwrap(),
    );
    // Forwarded undecoded: a typed error, never a misread item.
    let items: Vec<Result<old::Item, RpcError>> = client.watch(2).await.unwrap().collect().await;
    assert!(
        items.iter().all(|i| !matches!(i, Ok(item) if item.seq > 1)),
        "{items:?}"
    );
    let error = items
        .iter()
        .find_map(|i| i.as_ref().err())
        .expect("a typed error");
    assert!(error.to_string().contains("forwarded"), "{error}");
    // Decoded and re-encoded (the items mapped through this side's type): they arrive.
    let items: Vec<old::Item> = client
        .watch_mapped(2)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    assert_eq!(items, [old::Item { seq: 0 }, old::Item { seq: 1 }]);
    proxy.shutdown().await;
    source.shutdown().await;
}
