//! What a balanced client promises under failure: a call that started is never run a
//! second time unless its method is idempotent; connecting does not depend on a call's
//! deadline; a silent (black-holed) replica leaves rotation; every transport works.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{start, within, ReplicaClient, ReplicaImpl, ReplicaServer};
use traitrpc_core::{CallOutcome, ClientConfig, Keepalive, RpcError, ServerConfig};
use traitrpc_discovery::{BalancedChannel, OutlierPolicy, StaticDiscovery};

async fn start_with_grace(
    replica: ReplicaImpl,
    grace: Duration,
) -> traitrpc_core::ServerHandle<std::net::SocketAddr> {
    traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        ReplicaServer::new(replica),
        ServerConfig::default().shutdown_grace(grace),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_call_interrupted_by_a_shutdown_runs_again_only_if_idempotent() {
    let a = ReplicaImpl {
        delay: Duration::from_secs(30),
        ..ReplicaImpl::new("a")
    };
    let (a_records, a_calls) = (a.records.clone(), a.calls.clone());
    let a = start_with_grace(a, Duration::from_millis(100)).await;
    let b = ReplicaImpl::new("b");
    let (b_records, b_calls) = (b.records.clone(), b.calls.clone());
    let b = start(b).await;
    let discovery = StaticDiscovery::new([a.local_addr()]);
    let channel = BalancedChannel::builder(discovery.clone()).build();
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(20));

    // Both calls are running on a; then b joins and a shuts down past its grace period.
    let record = tokio::spawn({
        let client = client.clone();
        async move { client.record(30_000).await }
    });
    let work = tokio::spawn({
        let client = client.clone();
        async move { client.work(0).await }
    });
    assert!(
        within(Duration::from_secs(5), || a_records.load(Ordering::SeqCst)
            == 1
            && a_calls.load(Ordering::SeqCst) == 2)
        .await
        .is_some()
    );
    discovery.set([a.local_addr(), b.local_addr()]);
    a.shutdown().await;

    // Not idempotent: interrupted after it started, so not sent again.
    let error = record.await.unwrap().unwrap_err();
    assert!(matches!(error, RpcError::Interrupted { .. }), "{error:?}");
    assert_eq!(error.outcome(), CallOutcome::Started);
    assert_eq!(b_records.load(Ordering::SeqCst), 0, "it never ran on b");
    // Idempotent: run again on b, which answers.
    assert_eq!(work.await.unwrap().unwrap(), "b");
    assert_eq!(a_records.load(Ordering::SeqCst), 1);
    assert!(b_calls.load(Ordering::SeqCst) >= 1);
    b.shutdown().await;
}

#[tokio::test]
async fn connecting_is_not_bounded_by_a_calls_deadline() {
    let replica = start(ReplicaImpl::new("r")).await;
    let channel = BalancedChannel::from_static([replica.local_addr()]);
    let client = ReplicaClient::new(channel.clone());
    // A deadline too short for anything: the call fails, the connection is made anyway.
    let error = client
        .with_timeout(Duration::from_micros(1))
        .whoami()
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded), "{error:?}");
    assert!(
        within(Duration::from_secs(5), || channel.endpoints()[0].connected)
            .await
            .is_some()
    );
    assert_eq!(client.whoami().await.unwrap(), "r");
    replica.shutdown().await;
}

#[tokio::test]
async fn nothing_reachable_fails_at_once_instead_of_at_the_deadline() {
    // Ports bound and released: nothing listens there.
    let dead: Vec<std::net::SocketAddr> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let channel = BalancedChannel::from_static(dead);
    let client = ReplicaClient::new(channel.clone());
    assert!(within(Duration::from_secs(5), || channel
        .endpoints()
        .iter()
        .all(|e| e.reconnecting))
    .await
    .is_some());
    let error = client
        .with_timeout(Duration::from_secs(60))
        .whoami()
        .await
        .unwrap_err();
    match &error {
        RpcError::Unavailable { reason } => assert!(reason.contains("reachable"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(error.outcome().never_ran());
}

/// A server that completes the handshake and then never answers: a hung process, or a
/// path that black-holes its answers.
async fn black_hole() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use traitrpc_core::protocol::{Fingerprints, ServerHello, Settings, HANDSHAKE_LEN, VERSION};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; HANDSHAKE_LEN];
                if stream.read_exact(&mut hello).await.is_err() {
                    return;
                }
                let reply = ServerHello {
                    version: VERSION,
                    status: 0,
                    max_frame_size: 1 << 20,
                };
                let _ = stream.write_all(&reply.encode()).await;
                let _ = stream.write_all(&Settings::default().encode()).await;
                let _ = stream.write_all(&Fingerprints::default().encode()).await;
                let mut sink = vec![0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_black_holed_replica_leaves_rotation_and_idempotent_calls_go_on() {
    let hole = black_hole().await;
    let live = start(ReplicaImpl::new("live")).await;
    let channel = BalancedChannel::builder(StaticDiscovery::new([hole, live.local_addr()]))
        .client_config(
            ClientConfig::default()
                .connect_timeout(Duration::from_secs(1))
                .keepalive(Some(Keepalive::new(
                    Duration::from_millis(100),
                    Duration::from_millis(200),
                ))),
        )
        .outlier(OutlierPolicy {
            consecutive_failures: 2,
            ..OutlierPolicy::default()
        })
        .build();
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(10));
    // Idempotent calls: those sent into the hole fail by keepalive and are retried.
    for _ in 0..20 {
        assert_eq!(client.whoami().await.unwrap(), "live");
    }
    // The hole is out of rotation: no connection, or ejected.
    let hole_status = channel
        .endpoints()
        .into_iter()
        .find(|e| e.endpoint.addr == hole.to_string())
        .unwrap();
    assert!(
        !hole_status.connected || hole_status.ejected,
        "{hole_status:?}"
    );
    // A non-idempotent call in the hole is not retried, and fails with a typed error
    // well before its deadline (the keepalive), if it is sent there at all.
    for _ in 0..4 {
        match client.record(0).await {
            Ok(name) => assert_eq!(name, "live"),
            Err(error) => assert!(
                matches!(
                    error,
                    RpcError::KeepaliveTimeout { .. } | RpcError::DeadlineExceeded
                ),
                "{error:?}"
            ),
        }
    }
    live.shutdown().await;
}

#[tokio::test]
async fn a_balanced_channel_reaches_replicas_over_unix_sockets() {
    let dir = std::env::temp_dir().join(format!("rpc-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut servers = Vec::new();
    let mut paths = Vec::new();
    for name in ["u1", "u2"] {
        let path = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&path);
        servers.push(
            traitrpc_transport_tcp::unix::serve(&path, ReplicaServer::new(ReplicaImpl::new(name)))
                .await
                .unwrap(),
        );
        paths.push(format!("unix:{}", path.display()));
    }
    let channel = BalancedChannel::builder(StaticDiscovery::new(paths))
        .connector(traitrpc_discovery::UnixConnector)
        .build();
    let client = ReplicaClient::new(channel);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(client.whoami().await.unwrap());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    for server in servers {
        server.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_replica_whose_health_says_not_serving_leaves_rotation_without_failing_calls() {
    use traitrpc_core::health::ServingStatus;
    let a = start(ReplicaImpl::new("a")).await;
    let b = start(ReplicaImpl::new("b")).await;
    let channel = BalancedChannel::builder(StaticDiscovery::new([a.local_addr(), b.local_addr()]))
        .health_checks(true)
        .build();
    let client = ReplicaClient::new(channel.clone());
    assert!(within(Duration::from_secs(5), || channel
        .endpoints()
        .iter()
        .all(|e| e.connected))
    .await
    .is_some());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(client.record(0).await.unwrap());
    }
    assert_eq!(seen.len(), 2);

    // a says NOT_SERVING: calls (non-idempotent ones too) go to b, none fails.
    a.health().set("", ServingStatus::NotServing);
    let a_addr = a.local_addr().to_string();
    assert!(within(Duration::from_secs(5), || {
        channel
            .endpoints()
            .iter()
            .any(|e| e.endpoint.addr == a_addr && !e.serving)
    })
    .await
    .is_some());
    for _ in 0..20 {
        assert_eq!(client.record(0).await.unwrap(), "b");
    }
    // And back.
    a.health().set("", ServingStatus::Serving);
    assert!(within(Duration::from_secs(5), || channel
        .endpoints()
        .iter()
        .all(|e| e.serving))
    .await
    .is_some());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(client.record(0).await.unwrap());
    }
    assert_eq!(seen.len(), 2);
    a.shutdown().await;
    b.shutdown().await;
}

/// A loopback TCP proxy whose connections can be cut (both sockets closed at once, as
/// when a peer's process dies or a middlebox drops the flow).
struct CuttingProxy {
    addr: std::net::SocketAddr,
    flows: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttingProxy {
    async fn start(target: std::net::SocketAddr) -> CuttingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flows = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = std::sync::Arc::clone(&flows);
        tokio::spawn(async move {
            while let Ok((mut downstream, _)) = listener.accept().await {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let flow = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
                });
                registry.lock().unwrap().push(flow.abort_handle());
            }
        });
        CuttingProxy { addr, flows }
    }

    /// Closes every connection through the proxy; later ones pass again.
    fn cut(&self) {
        for flow in self.flows.lock().unwrap().drain(..) {
            flow.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_as_the_only_connection_drops_waits_for_the_reconnect() {
    // The connection dies (no GO_AWAY) and a call arrives before the endpoint's own task
    // has seen it: the endpoint is about to reconnect, so an idempotent call waits for
    // that and succeeds. It used to fail at once with "no endpoint is reachable", since
    // the endpoint looked neither connected nor connecting for that moment.
    let replica = start(ReplicaImpl::new("r")).await;
    let proxy = CuttingProxy::start(replica.local_addr()).await;
    let channel = BalancedChannel::from_static([proxy.addr]);
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(20));
    let connected = |channel: &BalancedChannel| channel.endpoints().iter().all(|e| e.connected);
    for round in 0..100 {
        assert!(
            within(Duration::from_secs(10), || connected(&channel))
                .await
                .is_some(),
            "round {round}: never reconnected"
        );
        proxy.cut();
        if round % 2 == 1 {
            // Call in the moment the client has seen the connection end (unless it has
            // already reconnected by the time this task looks: then there is no such
            // moment to catch this round).
            let looking = std::time::Instant::now();
            while connected(&channel) && looking.elapsed() < Duration::from_secs(1) {
                tokio::task::yield_now().await;
            }
        }
        match client.whoami().await {
            Ok(name) => assert_eq!(name, "r"),
            Err(error) => panic!("round {round}: {error:?}"),
        }
    }
    replica.shutdown().await;
}

#[tokio::test]
async fn a_retry_that_finds_no_endpoint_is_not_counted_as_sent() {
    // The only replica refuses the call OVERLOADED (safe to retry) and, in the same
    // moment, discovery drops it: the retry is decided but finds nothing to go to. The
    // channel's retries counter counts attempts sent again, so it stays at 0.
    use traitrpc_core::protocol::status;
    use traitrpc_core::server::middleware;
    use traitrpc_core::{Next, Rejection, Router};
    let discovery = StaticDiscovery::new(Vec::<String>::new());
    let dropping = discovery.clone();
    let router = Router::from(ReplicaServer::new(ReplicaImpl::new("r"))).layer(
        middleware::from_fn(move |_next: Next| {
            dropping.set(Vec::<String>::new());
            async move { Err(Rejection::status(status::OVERLOADED, "busy")) }
        }),
    );
    let replica = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    discovery.set([replica.local_addr().to_string()]);
    let channel = BalancedChannel::builder(discovery).build();
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(10));
    let error = client
        .whoami()
        .await
        .expect_err("refused, then nowhere to go");
    assert!(
        matches!(
            error,
            RpcError::Unavailable { .. } | RpcError::Overloaded { .. }
        ),
        "{error:?}"
    );
    assert_eq!(channel.stats().retries, 0, "no attempt was sent again");
    replica.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_that_hangs_up_after_the_handshake_is_reconnected_with_backoff() {
    // A server that accepts the handshake and closes at once: the channel used to
    // reconnect immediately, forever, as fast as loopback allows. A connection lost that
    // soon now counts as a failed attempt, and reconnects back off.
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use traitrpc_core::protocol::{
        ClientHello, Fingerprints, ServerHello, Settings, HANDSHAKE_LEN, SCHEMA_VERSION,
    };
    use traitrpc_discovery::Backoff;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counting.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut hello = [0u8; HANDSHAKE_LEN];
                if stream.read_exact(&mut hello).await.is_err() {
                    return;
                }
                let version = ClientHello::decode(&hello).map(|h| h.version).unwrap_or(3);
                let reply = ServerHello {
                    version,
                    status: 0,
                    max_frame_size: 1 << 20,
                };
                let _ = stream.write_all(&reply.encode()).await;
                let _ = stream.write_all(&Settings::default().encode()).await;
                if version >= SCHEMA_VERSION {
                    let _ = stream.write_all(&Fingerprints::default().encode()).await;
                }
                let mut settings = [0u8; 64];
                let _ = stream.read(&mut settings).await;
                // Hang up.
            });
        }
    });
    let channel = BalancedChannel::builder(StaticDiscovery::new([addr]))
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ))
        .build();
    assert!(
        within(Duration::from_secs(10), || accepted.load(Ordering::SeqCst)
            >= 1)
        .await
        .is_some(),
        "the channel connects"
    );
    // Watch for a second from then: with the backoff (at least 50 ms, doubling) a
    // handful of connections; without it, thousands.
    let first = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let count = accepted.load(Ordering::SeqCst) - first;
    assert!(count <= 12, "{count} connections in a second");
    drop(channel);
}

#[tokio::test]
async fn a_single_endpoint_that_sent_go_away_makes_calls_wait_not_fail_as_unreachable() {
    // The server ends idle connections with GO_AWAY (and keeps serving new ones). The
    // channel reconnects after a short pause; a call made during that pause used to
    // fail at once with "no endpoint is reachable" (the pause looked like a failed
    // endpoint's backoff). It waits for the reconnect now.
    let replica = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        ReplicaServer::new(ReplicaImpl::new("r")),
        ServerConfig::default().idle_timeout(Some(Duration::from_millis(100))),
    )
    .await
    .unwrap();
    let channel = BalancedChannel::from_static([replica.local_addr()]);
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(10));
    for round in 0..5 {
        assert_eq!(client.whoami().await.unwrap(), "r", "round {round}");
        // The connection goes idle and is ended with GO_AWAY: call in the moment the
        // channel has seen it end.
        assert!(
            within(Duration::from_secs(10), || channel
                .endpoints()
                .iter()
                .all(|e| !e.connected))
            .await
            .is_some(),
            "round {round}: the idle connection ended"
        );
        match client.whoami().await {
            Ok(name) => assert_eq!(name, "r"),
            Err(error) => panic!("round {round}: {error:?}"),
        }
    }
    replica.shutdown().await;
}
