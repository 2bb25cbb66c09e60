//! A busy replica is not a dead one (issue 21): a balanced channel over a replica at its
//! in-flight limit, serving calls many keepalive periods long, sees no keepalive failure,
//! ejects nothing, retries nothing, and runs no call twice. Before, the replica stopped
//! reading at its limit, the channel's PINGs went unanswered, and the channel failed the
//! calls in flight (retrying the idempotent ones elsewhere) and ejected the replica.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{ReplicaClient, ReplicaImpl, ReplicaServer};
use traitrpc_core::{ClientConfig, Keepalive, ServerConfig};
use traitrpc_discovery::{BalancedChannel, StaticDiscovery};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_at_its_in_flight_limit_is_busy_not_dead() {
    let replica = ReplicaImpl::new("busy");
    let records = replica.records.clone();
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        ReplicaServer::new(replica),
        ServerConfig::default().max_in_flight_per_connection(2),
    )
    .await
    .unwrap();
    // The channel pings after 200 ms of silence and gives up 200 ms later; each call
    // takes 1 s, and six wait for one of the two slots.
    let channel = BalancedChannel::builder(StaticDiscovery::new([server.local_addr()]))
        .client_config(ClientConfig::default().keepalive(Some(Keepalive::new(
            Duration::from_millis(200),
            Duration::from_millis(200),
        ))))
        .build();
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(30));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.record(1000).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), "busy", "call {i}");
    }
    assert_eq!(
        records.load(Ordering::SeqCst),
        8,
        "each call ran exactly once"
    );
    let stats = channel.stats();
    assert_eq!((stats.ejections, stats.retries), (0, 0), "{stats:?}");
    server.shutdown().await;
}
