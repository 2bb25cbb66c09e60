//! Metrics on both sides, their labels (bounded), and the admin endpoint serving them.

#[path = "support.rs"]
mod support;

use std::time::Duration;

use futures::StreamExt;
use support::{http_get, ShopClient, ShopImpl, ShopServer};
use traitrpc_core::{Client, Router, RpcError};
use traitrpc_observability::admin::{self, Admin};
use traitrpc_observability::metrics::Metrics;

/// The value of the sample `name{labels}` in an OpenMetrics text, if present (labels in
/// the order they are encoded).
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn calls_are_counted_and_timed_on_both_sides_with_bounded_labels() {
    let metrics = Metrics::new();
    let router = Router::from(ShopServer::new(ShopImpl)).observe(metrics.server_observer());
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    metrics.observe_server(server.stats());
    let connection = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let shop = ShopClient::from_client(
        Client::new(connection.clone()).observe(metrics.client_observer("shop")),
    );
    for _ in 0..3 {
        assert_eq!(shop.price("tea".into()).await.unwrap(), 30);
    }
    assert!(shop.buy("tea".into(), 0).await.is_err());
    let items: Vec<_> = shop.catalogue(5).await.unwrap().collect().await;
    assert_eq!(items.len(), 5);
    // A call that ends at its deadline on the client is cancelled on the server.
    let error = shop
        .with_timeout(Duration::from_millis(20))
        .slow(5_000)
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded));
    // A scanner trying 50 method names: one `other` series, not 50.
    let raw = Client::new(connection.clone());
    for i in 0..50 {
        let name: &'static str = Box::leak(format!("probe{i}").into_boxed_str());
        let method = traitrpc_core::Method::new("Shop", name);
        assert!(raw.call::<_, u8>(&method, &()).await.is_err());
    }

    // Let the timed-out call's server side finish being recorded: its deadline passes on
    // the server too (DEADLINE_EXCEEDED), unless the client's CANCEL stops it first
    // (CANCELLED, no answer).
    let ended = |text: &str| {
        ["DEADLINE_EXCEEDED", "CANCELLED"].iter().any(|status| {
            text.contains(&format!(
                "rpc_server_call_duration_seconds_count{{service=\"Shop\",method=\"slow\",status=\"{status}\"}} 1"
            ))
        })
    };
    let text = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let text = metrics.encode();
            if ended(&text) {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slow call's end is recorded");
    assert_eq!(
        sample(
            &text,
            "rpc_server_call_started_total{service=\"Shop\",method=\"price\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "rpc_server_call_duration_seconds_count{service=\"Shop\",method=\"price\",status=\"OK\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "rpc_server_call_duration_seconds_count{service=\"Shop\",method=\"buy\",status=\"APPLICATION_ERROR\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "rpc_server_call_started_total{service=\"Shop\",method=\"other\"}"
        ),
        Some(50.0)
    );
    assert_eq!(
        text.matches("rpc_server_call_started_total{").count(),
        5,
        "price, buy, catalogue, slow, other: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "rpc_server_stream_items_total{service=\"Shop\",method=\"catalogue\",direction=\"sent\"}"
        ),
        Some(5.0)
    );
    // Received size of `price("tea")`: 4 bytes, in the 16-byte bucket.
    assert_eq!(
        sample(
            &text,
            "rpc_server_call_rcvd_message_size_bytes_bucket{le=\"16.0\",service=\"Shop\",method=\"price\",status=\"OK\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "rpc_client_call_duration_seconds_count{service=\"Shop\",method=\"price\",target=\"shop\",status=\"OK\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "rpc_client_call_duration_seconds_count{service=\"Shop\",method=\"slow\",target=\"shop\",status=\"DEADLINE_EXCEEDED\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "rpc_server_connections"), Some(1.0));
    server.shutdown().await;
}

#[tokio::test]
async fn shed_calls_and_balanced_channels_are_reported() {
    use traitrpc_discovery::{BalancedChannel, RetryPolicy, StaticDiscovery};
    let metrics = Metrics::new();
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        ShopServer::new(ShopImpl),
        traitrpc_core::ServerConfig::default().max_concurrent_calls(1),
    )
    .await
    .unwrap();
    metrics.observe_server(server.stats());
    // A dead endpoint and the server, attempts recorded per attempt.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let channel = BalancedChannel::builder(StaticDiscovery::new([server.local_addr(), dead]))
        .attempt_layer(metrics.attempt_layer("shop"))
        .retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .build();
    metrics.observe_channel(&channel, "shop");
    let shop = ShopClient::new(channel.clone());
    let slow = {
        let shop = shop.clone();
        tokio::spawn(async move { shop.slow(500).await })
    };
    // Once the slow call holds the only slot, the next call is shed.
    let shed = loop {
        match shop.price("x".into()).await {
            Err(e @ RpcError::Overloaded { .. }) => break e,
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    assert!(shed.outcome().never_ran());
    slow.await.unwrap().unwrap();
    let text = metrics.encode();
    assert!(
        sample(&text, "rpc_server_calls_shed_total").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "rpc_server_concurrency_limit"),
        Some(1.0),
        "the fixed limit: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "rpc_client_endpoints{target=\"shop\",state=\"ready\"}"
        ),
        Some(1.0)
    );
    // The dead endpoint is between attempts (backoff), in one (connecting, briefly), or,
    // after enough failed connects, ejected: one of these, whichever the scrape caught.
    let state = |state: &str| {
        sample(
            &text,
            &format!("rpc_client_endpoints{{target=\"shop\",state=\"{state}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        state("backoff") + state("connecting") + state("ejected"),
        1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "rpc_client_attempt_started_total{service=\"Shop\",method=\"slow\",target=\"shop\"}"
        ) == Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "rpc_client_attempt_duration_seconds_count{service=\"Shop\",method=\"price\",target=\"shop\",status=\"OVERLOADED\"}"
        )
        .unwrap()
            >= 1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_admin_endpoint_serves_metrics_liveness_and_readiness() {
    let metrics = Metrics::new();
    let router = Router::from(ShopServer::new(ShopImpl)).observe(metrics.server_observer());
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    let admin = admin::serve(
        "127.0.0.1:0",
        Admin::new()
            .metrics(metrics.clone())
            .health(server.health()),
    )
    .await
    .unwrap();
    let shop = ShopClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    assert_eq!(shop.price("ab".into()).await.unwrap(), 20);

    let (status, body) = http_get(admin.local_addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("rpc_server_call_started_total{service=\"Shop\",method=\"price\"} 1"),
        "{body}"
    );
    assert!(body.contains("# EOF"));
    assert_eq!(http_get(admin.local_addr(), "/healthz").await.0, 200);
    assert_eq!(http_get(admin.local_addr(), "/readyz").await.0, 200);
    assert_eq!(http_get(admin.local_addr(), "/nope").await.0, 404);
    // Readiness follows the health service; a shutdown turns it 503 first.
    server
        .health()
        .set("", traitrpc_core::health::ServingStatus::NotServing);
    assert_eq!(http_get(admin.local_addr(), "/readyz").await.0, 503);
    server
        .health()
        .set("", traitrpc_core::health::ServingStatus::Serving);
    let health = server.health();
    server.shutdown().await;
    assert_eq!(
        health.status(""),
        traitrpc_core::health::ServingStatus::NotServing
    );
    assert_eq!(http_get(admin.local_addr(), "/readyz").await.0, 503);
    admin.shutdown().await;
}

#[tokio::test]
async fn observing_a_channel_does_not_keep_it_or_its_connections_alive() {
    // The collector used to hold a clone of the channel: dropped by its users, the
    // channel kept its pool and its connections to every endpoint for as long as the
    // metrics lived.
    use traitrpc_discovery::BalancedChannel;
    let metrics = Metrics::new();
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", ShopServer::new(ShopImpl))
        .await
        .unwrap();
    let channel = BalancedChannel::from_static([server.local_addr()]);
    metrics.observe_channel(&channel, "shop");
    let shop = ShopClient::new(channel.clone());
    assert!(shop.price("x".into()).await.is_ok());
    assert_eq!(server.connections(), 1);
    drop(shop);
    drop(channel);
    let mut closed = false;
    for _ in 0..500 {
        if server.connections() == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the channel's connection outlived it");
    // The scrape reports no endpoints for it any more.
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            "rpc_client_endpoints{target=\"shop\",state=\"ready\"}"
        ),
        Some(0.0),
        "{text}"
    );
    server.shutdown().await;
}
