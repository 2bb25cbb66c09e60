//! Hedged calls over real loopback sockets (issue 23): a slow replica and a fast one
//! behind a balanced channel. The first attempt of an idempotent call that lands on the
//! slow replica is hedged to the fast one, which answers; a call of a method that is not
//! idempotent is never hedged; an empty budget sends no hedge.
//!
//! The assertions are on answers and counts, not on time: the slow replica takes 2 s, so
//! an answer from it means the call was not hedged.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{ReplicaClient, ReplicaImpl};
use traitrpc_discovery::{BalancedChannel, HedgingPolicy, StaticDiscovery};

const SLOW: Duration = Duration::from_secs(2);

async fn slow_and_fast() -> (
    ReplicaImpl,
    ReplicaImpl,
    Vec<traitrpc_core::ServerHandle<std::net::SocketAddr>>,
) {
    let slow = ReplicaImpl {
        delay: SLOW,
        ..ReplicaImpl::new("slow")
    };
    let fast = ReplicaImpl::new("fast");
    let servers = vec![
        support::start(slow.clone()).await,
        support::start(fast.clone()).await,
    ];
    (slow, fast, servers)
}

/// A channel over `servers`, once it is connected to all of them (round robin then
/// alternates between them from the first call).
async fn channel(
    servers: &[traitrpc_core::ServerHandle<std::net::SocketAddr>],
    policy: HedgingPolicy,
) -> BalancedChannel {
    let channel = BalancedChannel::builder(StaticDiscovery::new(
        servers.iter().map(|server| server.local_addr()),
    ))
    .hedging(policy)
    .build();
    let connected = support::within(Duration::from_secs(10), || {
        let endpoints = channel.endpoints();
        endpoints.len() == servers.len() && endpoints.iter().all(|e| e.connected)
    })
    .await;
    assert!(connected.is_some(), "every endpoint connected");
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_attempt_of_an_idempotent_call_is_answered_by_its_hedge() {
    let (slow, _fast, servers) = slow_and_fast().await;
    // A delay the fast replica answers within even on a loaded machine.
    let channel = channel(
        &servers,
        HedgingPolicy::after(Duration::from_millis(300)).max_extra_ratio(1.0),
    )
    .await;
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(30));
    for call in 0..10 {
        assert_eq!(client.work(0).await.unwrap(), "fast", "call {call}");
    }
    let stats = channel.stats();
    // Round robin sent some first attempts to the slow replica; each was hedged, and
    // each hedge gave the answer.
    assert!(stats.hedges >= 1, "{stats:?}");
    assert_eq!(stats.hedges, stats.hedges_won, "{stats:?}");
    assert_eq!(
        slow.calls.load(Ordering::SeqCst) as u64,
        stats.hedges,
        "every first attempt the slow replica got was hedged"
    );
    assert_eq!(stats.retries, 0);
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_is_not_idempotent_is_never_hedged() {
    let (slow, fast, servers) = slow_and_fast().await;
    let channel = channel(
        &servers,
        HedgingPolicy::after(Duration::from_millis(1)).max_extra_ratio(1.0),
    )
    .await;
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(30));
    // Each call outlasts the hedging delay on either replica.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.record(100).await.unwrap() })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let ran = slow.records.load(Ordering::SeqCst) + fast.records.load(Ordering::SeqCst);
    assert_eq!(ran, 6, "each call ran exactly once");
    let stats = channel.stats();
    assert_eq!(
        (stats.hedges, stats.hedge_budget_exhausted),
        (0, 0),
        "{stats:?}"
    );
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_budget_sends_no_hedge() {
    let (_slow, _fast, servers) = slow_and_fast().await;
    let none = HedgingPolicy {
        max_burst: 0,
        ..HedgingPolicy::after(Duration::from_millis(50)).max_extra_ratio(0.0)
    };
    let channel = channel(&servers, none).await;
    let client = ReplicaClient::new(channel.clone()).with_timeout(Duration::from_secs(30));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.work(0).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    assert!(answers.iter().any(|a| a == "slow"), "{answers:?}");
    let stats = channel.stats();
    assert_eq!(stats.hedges, 0, "{stats:?}");
    assert!(stats.hedge_budget_exhausted >= 1, "{stats:?}");
    for server in servers {
        server.shutdown().await;
    }
}
