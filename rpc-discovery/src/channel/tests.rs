//! The channel's rules with a paused clock, over in-memory connections: every instant
//! below is exact. Hedging, and the pause after an OVERLOADED answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use traitrpc_core::{memory, ClientConfig, Hedging, RpcError, Server, ServerConfig};

use crate::balance::{Balancer, Candidate};
use crate::{
    BalancedChannel, ConnectFuture, Connector, Endpoint, HedgingPolicy, RetryPolicy,
    StaticDiscovery, DEFAULT_OVERLOAD_PAUSE,
};

/// Picks the candidate whose address sorts first: attempts go to the replicas in the
/// order of their names.
struct InOrder;

impl Balancer for InOrder {
    fn pick(&self, candidates: &[Candidate], _: Option<u64>) -> usize {
        (0..candidates.len())
            .min_by_key(|&i| candidates[i].endpoint().addr.clone())
            .expect("never empty")
    }
    fn name(&self) -> &'static str {
        "in_order"
    }
}

#[traitrpc_core::service]
trait Named {
    #[idempotent]
    async fn name(&self) -> String;
    async fn name_once(&self) -> String;
}

/// Answers its name after `delay`; counts handlers that finished.
#[derive(Clone)]
struct Replica {
    name: &'static str,
    delay: Duration,
    finished: Arc<AtomicUsize>,
}

impl Named for Replica {
    async fn name(&self) -> String {
        tokio::time::sleep(self.delay).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        self.name.to_string()
    }
    async fn name_once(&self) -> String {
        self.name().await
    }
}

/// Endpoint addresses mapped to in-memory listeners.
struct Memory(HashMap<String, memory::Connector>);

impl Connector for Memory {
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        config: &'a ClientConfig,
    ) -> ConnectFuture<'a> {
        let connector = self.0[&endpoint.addr].clone();
        Box::pin(async move { connector.connect_with_config(config.clone()).await })
    }
    fn name(&self) -> &'static str {
        "memory"
    }
}

/// A channel over replicas that answer after the given delays, tried in the order of
/// their names; the replicas' finished-handler counters.
async fn replicas(
    delays: &[(&'static str, u64)],
    policy: HedgingPolicy,
) -> (BalancedChannel, Vec<Arc<AtomicUsize>>) {
    let mut connectors = HashMap::new();
    let mut finished = Vec::new();
    for (name, delay) in delays {
        let (listener, connector) = memory::listener();
        let replica = Replica {
            name,
            delay: Duration::from_millis(*delay),
            finished: Arc::default(),
        };
        finished.push(Arc::clone(&replica.finished));
        // Runs as long as the test's runtime.
        std::mem::forget(Server::new(NamedServer::new(replica)).serve(listener, ()));
        connectors.insert(name.to_string(), connector);
    }
    let channel = BalancedChannel::builder(StaticDiscovery::new(
        delays
            .iter()
            .map(|(name, _)| Endpoint::from(name.to_string())),
    ))
    .connector(Memory(connectors))
    .balancer(InOrder)
    .hedging(policy)
    .build();
    // Every endpoint connected before the first call, so that the order holds.
    let all = delays.len();
    while channel.endpoints().iter().filter(|e| e.connected).count() < all {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (channel, finished)
}

fn after_50ms() -> HedgingPolicy {
    HedgingPolicy::after(Duration::from_millis(50)).max_extra_ratio(1.0)
}

#[tokio::test(start_paused = true)]
async fn a_hedge_leaves_after_the_delay_and_its_answer_wins() {
    let (channel, finished) = replicas(&[("a-slow", 10_000), ("b-fast", 5)], after_50ms()).await;
    let client = NamedClient::new(channel.clone());
    let start = Instant::now();
    assert_eq!(client.name().await.unwrap(), "b-fast");
    assert_eq!(start.elapsed(), Duration::from_millis(55));
    // The slow attempt was cancelled: its handler never finishes.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(finished[0].load(Ordering::SeqCst), 0);
    let stats = channel.stats();
    assert_eq!((stats.hedges, stats.hedges_won), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_that_answers_before_the_delay_is_not_hedged() {
    let (channel, _) = replicas(&[("a-quick", 40), ("b-other", 5)], after_50ms()).await;
    let client = NamedClient::new(channel.clone());
    assert_eq!(client.name().await.unwrap(), "a-quick");
    assert_eq!(channel.stats().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn hedges_follow_one_delay_apart_up_to_the_policy_limit() {
    let delays = [("a", 10_000), ("b", 10_000), ("c", 30), ("d", 1)];
    // Two hedges for one call: a budget of two per call.
    let (channel, _) = replicas(&delays, after_50ms().max_extra_ratio(2.0)).await;
    let client = NamedClient::new(channel.clone());
    let start = Instant::now();
    // Hedges at 50 ms (b) and 100 ms (c); c answers 30 ms later. d is never tried:
    // two hedges at most.
    assert_eq!(client.name().await.unwrap(), "c");
    assert_eq!(start.elapsed(), Duration::from_millis(130));
    assert_eq!(channel.stats().hedges, 2);
}

#[tokio::test(start_paused = true)]
async fn a_method_that_is_not_idempotent_waits_for_its_one_attempt() {
    let (channel, finished) = replicas(&[("a-slow", 1_000), ("b-fast", 5)], after_50ms()).await;
    let client = NamedClient::new(channel.clone());
    let start = Instant::now();
    assert_eq!(client.name_once().await.unwrap(), "a-slow");
    assert_eq!(start.elapsed(), Duration::from_millis(1_000));
    assert_eq!(channel.stats().hedges, 0);
    assert_eq!(
        finished[1].load(Ordering::SeqCst),
        0,
        "nothing ran on b-fast"
    );
}

/// An endpoint that answered OVERLOADED gets no new calls for the pause while another
/// endpoint can take them; then it gets them again.
#[tokio::test(start_paused = true)]
async fn an_endpoint_that_sheds_gets_no_new_calls_for_the_pause() {
    // "a-busy" runs one call at a time and holds a 10 s one; "b-calm" answers at once.
    let (busy_listener, busy_connector) = memory::listener();
    let busy = Replica {
        name: "a-busy",
        delay: Duration::from_secs(10),
        finished: Arc::default(),
    };
    let busy_server = Server::with_config(
        NamedServer::new(busy),
        ServerConfig::default().max_concurrent_calls(1),
    )
    .serve(busy_listener, ());
    let holder = NamedClient::new(busy_connector.connect().await.unwrap());
    tokio::spawn(async move { holder.name().await });
    while busy_server.calls_in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    let (calm_listener, calm_connector) = memory::listener();
    let calm = Replica {
        name: "b-calm",
        delay: Duration::ZERO,
        finished: Arc::default(),
    };
    std::mem::forget(Server::new(NamedServer::new(calm)).serve(calm_listener, ()));
    let connectors = HashMap::from([
        ("a-busy".to_string(), busy_connector),
        ("b-calm".to_string(), calm_connector),
    ]);
    let channel = BalancedChannel::builder(StaticDiscovery::new([
        Endpoint::from("a-busy".to_string()),
        Endpoint::from("b-calm".to_string()),
    ]))
    .connector(Memory(connectors))
    .balancer(InOrder)
    .retry(RetryPolicy::never())
    .build();
    while channel.endpoints().iter().filter(|e| e.connected).count() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let client = NamedClient::new(channel.clone());
    let refused = client.name_once().await.unwrap_err();
    assert!(
        matches!(refused, RpcError::Overloaded { .. }),
        "{refused:?}"
    );
    // For the pause, the calm endpoint takes the calls.
    for _ in 0..5 {
        assert_eq!(client.name_once().await.unwrap(), "b-calm");
    }
    tokio::time::advance(DEFAULT_OVERLOAD_PAUSE).await;
    let refused = client.name_once().await.unwrap_err();
    assert!(
        matches!(refused, RpcError::Overloaded { .. }),
        "{refused:?}"
    );
    assert_eq!(busy_server.calls_shed(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_may_ask_for_hedging_on_a_channel_without_a_policy() {
    let delays = [("a-slow", 10_000), ("b-fast", 5)];
    let mut connectors = HashMap::new();
    for (name, delay) in delays {
        let (listener, connector) = memory::listener();
        let replica = Replica {
            name,
            delay: Duration::from_millis(delay),
            finished: Arc::default(),
        };
        std::mem::forget(Server::new(NamedServer::new(replica)).serve(listener, ()));
        connectors.insert(name.to_string(), connector);
    }
    let channel = BalancedChannel::builder(StaticDiscovery::new(
        delays.map(|(name, _)| Endpoint::from(name.to_string())),
    ))
    .connector(Memory(connectors))
    .balancer(InOrder)
    .build();
    while channel.endpoints().iter().filter(|e| e.connected).count() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let client = NamedClient::new(channel.clone());
    let start = Instant::now();
    let hedged = client.with_hedging(Hedging::After(Duration::from_millis(20)));
    assert_eq!(hedged.name().await.unwrap(), "b-fast");
    assert_eq!(start.elapsed(), Duration::from_millis(25));
    assert_eq!(channel.stats().hedges, 1);
    // Without asking, no hedge: the slow replica answers.
    let start = Instant::now();
    assert_eq!(client.name().await.unwrap(), "a-slow");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(channel.stats().hedges, 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_may_turn_hedging_off() {
    let (channel, _) = replicas(&[("a-slow", 1_000), ("b-fast", 5)], after_50ms()).await;
    let client = NamedClient::new(channel.clone()).with_hedging(Hedging::Off);
    assert_eq!(client.name().await.unwrap(), "a-slow");
    assert_eq!(channel.stats().hedges, 0);
}
