//! Hedged first attempts of idempotent calls ([`crate::HedgingPolicy`]): the part of
//! [`Inner::call`](super::Inner) that sends more attempts while the first is slow.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use traitrpc_core::protocol::{status, ResponseFrame};
use traitrpc_core::{Connection, OutgoingCall, RpcError};

use super::Inner;
use crate::hedge::Hedger;
use crate::pool::Member;

impl Inner {
    /// The first attempt of an idempotent call, hedged: while no attempt has answered,
    /// every hedging delay (up to the policy's `max_hedges` times, each within the
    /// budget) sends one more attempt to a member not used yet. The first useful answer
    /// wins (the other attempts are dropped, which cancels them); a failure or refusal
    /// waits for the attempts still running. Returns the outcome and the member that
    /// gave it; when every attempt failed, the first one's outcome, with the hedges'
    /// members added to `tried`.
    pub(super) async fn hedged(
        &self,
        hedger: &Hedger,
        member: Arc<Member>,
        probe: bool,
        connection: Connection,
        call: &OutgoingCall<'_>,
        tried: &mut Vec<Arc<Member>>,
    ) -> (Result<ResponseFrame, RpcError>, Arc<Member>) {
        let first = self.attempt(&member, probe, &connection, call);
        tokio::pin!(first);
        let Some(delay) = hedger.delay() else {
            return (first.await, Arc::clone(&member));
        };
        let mut used = vec![Arc::clone(&member)];
        let mut hedges = futures::stream::FuturesUnordered::new();
        let mut next_hedge = Some(Instant::now() + delay).filter(|at| *at < call.deadline);
        let mut first_failed = None;
        let mut sent = 0;
        loop {
            tokio::select! {
                biased;
                outcome = &mut first, if first_failed.is_none() => {
                    if useful(&outcome) || hedges.is_empty() {
                        return (outcome, Arc::clone(&member));
                    }
                    first_failed = Some(outcome);
                    next_hedge = None;
                }
                Some((outcome, other)) = hedges.next(), if !hedges.is_empty() => {
                    if useful(&outcome) {
                        self.counters.hedges_won.fetch_add(1, Ordering::Relaxed);
                        return (outcome, other);
                    }
                    tried.push(other);
                    if first_failed.is_some() && hedges.is_empty() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(next_hedge.unwrap_or(call.deadline)), if next_hedge.is_some() => {
                    next_hedge = None;
                    if let Some((other, other_probe, other_connection)) = self.hedge_target(hedger, call, &used) {
                        used.push(Arc::clone(&other));
                        sent += 1;
                        self.counters.hedges.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            service = call.method.service, method = call.method.name,
                            slow = %member.addr, hedge = %other.addr, "hedging call"
                        );
                        // A hedge is marked like a retry (attempt 2, 3, ...).
                        let metadata = crate::retry::marked(call.metadata, sent + 1);
                        hedges.push(async move {
                            let call = OutgoingCall { metadata: &metadata, ..*call };
                            let outcome = self.attempt(&other, other_probe, &other_connection, &call).await;
                            (outcome, other)
                        });
                        let at = Instant::now() + delay;
                        if sent < hedger.max_hedges() && at < call.deadline {
                            next_hedge = Some(at);
                        }
                    }
                }
            }
        }
        let outcome = first_failed.expect("the loop ends once every attempt failed");
        (outcome, Arc::clone(&member))
    }

    /// The member a hedge goes to: one not `used` by the call yet, routable now (a hedge
    /// does not wait for connections), within the hedging budget.
    fn hedge_target(
        &self,
        hedger: &Hedger,
        call: &OutgoingCall<'_>,
        used: &[Arc<Member>],
    ) -> Option<(Arc<Member>, bool, Connection)> {
        let (chosen, probe, connection) = self.choose(call, used).now_or_never()?.ok()?;
        if used.iter().any(|member| Arc::ptr_eq(member, &chosen)) {
            if probe {
                self.pool.probe_abandoned(&chosen);
            }
            return None;
        }
        if !hedger.try_hedge() {
            if probe {
                self.pool.probe_abandoned(&chosen);
            }
            self.counters
                .hedge_budget_exhausted
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some((chosen, probe, connection))
    }
}

/// Whether an attempt's outcome is the call's answer: an answer of the method (success
/// or its error), not a refusal or failure that another endpoint might not give.
fn useful(outcome: &Result<ResponseFrame, RpcError>) -> bool {
    matches!(outcome, Ok(frame) if !matches!(
        frame.status,
        status::SHUTTING_DOWN | status::OVERLOADED | status::INTERRUPTED
    ))
}

#[cfg(test)]
mod tests {
    //! The hedging rules with a paused clock, over in-memory connections: every instant
    //! below is exact.

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;
    use traitrpc_core::{memory, ClientConfig, Server};

    use crate::balance::{Balancer, Candidate};
    use crate::{
        BalancedChannel, ConnectFuture, Connector, Endpoint, HedgingPolicy, StaticDiscovery,
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
        let (channel, finished) =
            replicas(&[("a-slow", 10_000), ("b-fast", 5)], after_50ms()).await;
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
}
