//! Hedged first attempts of idempotent calls ([`crate::HedgingPolicy`]): the part of
//! [`Inner::call`](super::Inner) that sends more attempts while the first is slow.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use traitrpc_core::protocol::{status, ResponseFrame};
use traitrpc_core::{Connection, OutgoingCall, RpcError};

use super::Inner;
use crate::pool::Member;

impl Inner {
    /// The first attempt of an idempotent call, hedged: while no attempt has answered,
    /// every `delay` (up to the policy's `max_hedges` times, each within the
    /// budget) sends one more attempt to a member not used yet. The first useful answer
    /// wins (the other attempts are dropped, which cancels them); a failure or refusal
    /// waits for the attempts still running. Returns the outcome and the member that
    /// gave it; when every attempt failed, the first one's outcome, with the hedges'
    /// members added to `tried`.
    pub(super) async fn hedged(
        &self,
        delay: Duration,
        member: Arc<Member>,
        probe: bool,
        connection: Connection,
        call: &OutgoingCall<'_>,
        tried: &mut Vec<Arc<Member>>,
    ) -> (Result<ResponseFrame, RpcError>, Arc<Member>) {
        let first = self.attempt(&member, probe, &connection, call);
        tokio::pin!(first);
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
                    if let Some((other, other_probe, other_connection)) = self.hedge_target(call, &used) {
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
                        if sent < self.hedger.max_hedges() && at < call.deadline {
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
        if !self.hedger.try_hedge() {
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
