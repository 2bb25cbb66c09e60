//! Retries: [`RetryPolicy`] (when a failed attempt is sent again), its budget (a token
//! bucket that keeps retries a fraction of calls), and [`decide`], the one place that
//! says whether an attempt is retried.
//!
//! A call is retried only if running it twice is impossible or harmless: the failure's
//! [`CallOutcome`](traitrpc_core::CallOutcome) says it never reached a handler, or the method
//! is `#[idempotent]` and did not complete; and only if the failure is transient
//! ([`RpcError::is_transient`]: another endpoint may do better), attempts are left, the
//! backoff fits before the deadline, and the budget has a token.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use traitrpc_core::RpcError;

use crate::policy::Backoff;

/// When and how often a call is sent again after a failure.
///
/// A call is only retried when that is safe and may help (see the crate
/// documentation): a transient failure after which the call never ran, or ran without
/// completing and its method is `#[idempotent]`. Every retry also needs time left before
/// the call's deadline and a token from the retry budget.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (default 3; 1 disables retries).
    pub max_attempts: u32,
    /// Delay before each retry (default 5 ms doubling to 200 ms, 50 % jitter).
    pub backoff: Backoff,
    /// Retry tokens earned per call (default 0.2: at most one retry per five calls in
    /// steady state).
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the ratio, so that a client making few calls
    /// can still retry (default 10).
    pub budget_min_per_second: u32,
    /// The most tokens the budget holds, so that a long healthy period does not buy an
    /// unbounded retry storm later (default 100).
    pub budget_max_tokens: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(200)),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            budget_max_tokens: 100,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }
}

/// The metadata key a balanced channel sets on every attempt after a call's first (a
/// retry or a hedge); its value is the attempt's number (`"2"`, `"3"`, ...). A handler
/// that makes calls of its own while serving such an attempt sends them without retries
/// or hedges (a *chain stop*, as Kitex calls it): one failure deep in a call graph is
/// then retried at one layer, not multiplied at every layer.
pub const RETRY_ATTEMPT_KEY: &str = "rpc-retry-attempt";

/// Whether the call this task is serving (if any) is itself a retry or a hedge.
pub(crate) fn serving_a_retry() -> bool {
    traitrpc_core::context::with_current(|context| {
        context.metadata().get(RETRY_ATTEMPT_KEY).is_some()
    })
    .unwrap_or(false)
}

/// `metadata` marked as attempt number `attempt` of its call.
pub(crate) fn marked(metadata: &traitrpc_core::Metadata, attempt: u32) -> traitrpc_core::Metadata {
    let mut marked = metadata.clone();
    // The key and a number always fit.
    let _ = marked.insert(RETRY_ATTEMPT_KEY, attempt.to_string());
    marked
}

/// The retry budget: a token bucket filled by calls, drained by retries.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    max_tokens: f64,
    min_per_second: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    tokens: f64,
    reserve: f64,
    refilled: Instant,
}

impl RetryBudget {
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        let min = f64::from(policy.budget_min_per_second);
        RetryBudget {
            ratio: policy.budget_ratio.max(0.0),
            max_tokens: f64::from(policy.budget_max_tokens),
            min_per_second: min,
            state: Mutex::new(BudgetState {
                tokens: 0.0,
                reserve: min,
                refilled: Instant::now(),
            }),
        }
    }

    /// A bucket that starts full, earns `ratio` tokens per call, holds at most
    /// `max_tokens`, and has no reserve beyond that (the hedging budget).
    pub(crate) fn with_ratio(ratio: f64, max_tokens: u32) -> Self {
        RetryBudget {
            ratio: ratio.max(0.0),
            max_tokens: f64::from(max_tokens),
            min_per_second: 0.0,
            state: Mutex::new(BudgetState {
                tokens: f64::from(max_tokens),
                reserve: 0.0,
                refilled: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A call started: earns `ratio` tokens.
    pub(crate) fn deposit(&self) {
        let mut state = self.state();
        state.tokens = (state.tokens + self.ratio).min(self.max_tokens);
    }

    /// Takes a token for one retry, if there is one.
    pub(crate) fn try_withdraw(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.refilled = now;
        state.reserve = (state.reserve + elapsed * self.min_per_second).min(self.min_per_second);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else if state.reserve >= 1.0 {
            state.reserve -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether an attempt that failed with `error` is sent again, and after what delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send it again after the delay.
    Retry(Duration),
    /// Give the error to the caller: why.
    GiveUp(&'static str),
}

/// The retry decision for attempt `attempt` (from 1) of a call with `deadline`.
pub(crate) fn decide(
    policy: &RetryPolicy,
    budget: &RetryBudget,
    error: &RpcError,
    idempotent: bool,
    attempt: u32,
    deadline: Instant,
) -> Decision {
    if !error.is_transient() {
        return Decision::GiveUp("the failure is not transient");
    }
    if !error.outcome().retry_is_safe(idempotent) {
        return Decision::GiveUp("the call may have run and the method is not idempotent");
    }
    if attempt >= policy.max_attempts {
        return Decision::GiveUp("attempts exhausted");
    }
    let delay = policy.backoff.delay(attempt);
    if Instant::now() + delay >= deadline {
        return Decision::GiveUp("no time left before the deadline");
    }
    if !budget.try_withdraw() {
        return Decision::GiveUp("retry budget exhausted");
    }
    Decision::Retry(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_bounds_retries_by_ratio() {
        let budget = RetryBudget::new(&RetryPolicy {
            budget_ratio: 0.1,
            budget_min_per_second: 0,
            budget_max_tokens: 1000,
            ..RetryPolicy::default()
        });
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        // 100 calls × 0.1 ≈ 10 retries (floating point may lose the last one).
        assert!((9..=10).contains(&granted), "{granted}");
    }

    #[test]
    fn budget_has_a_minimum_per_second() {
        let budget = RetryBudget::new(&RetryPolicy {
            budget_ratio: 0.0,
            budget_min_per_second: 3,
            ..RetryPolicy::default()
        });
        let granted = (0..10).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 3);
    }

    #[tokio::test]
    async fn only_safe_transient_failures_with_time_and_budget_are_retried() {
        let policy = RetryPolicy::default();
        let budget = RetryBudget::new(&policy);
        let later = Instant::now() + Duration::from_secs(10);
        let closed = RpcError::closed("lost");
        let shutting_down = RpcError::ShuttingDown;
        let interrupted = RpcError::Interrupted {
            message: "grace over".into(),
        };
        // Never ran: retried, idempotent or not.
        assert!(matches!(
            decide(&policy, &budget, &shutting_down, false, 1, later),
            Decision::Retry(_)
        ));
        // May have run: only idempotent methods.
        assert!(matches!(
            decide(&policy, &budget, &closed, false, 1, later),
            Decision::GiveUp(_)
        ));
        assert!(matches!(
            decide(&policy, &budget, &closed, true, 1, later),
            Decision::Retry(_)
        ));
        assert!(matches!(
            decide(&policy, &budget, &interrupted, false, 1, later),
            Decision::GiveUp(_)
        ));
        assert!(matches!(
            decide(&policy, &budget, &interrupted, true, 1, later),
            Decision::Retry(_)
        ));
        // Not transient: an answer from the handler, a deadline.
        let panicked = RpcError::HandlerPanicked {
            message: "boom".into(),
        };
        assert!(matches!(
            decide(&policy, &budget, &panicked, true, 1, later),
            Decision::GiveUp(_)
        ));
        assert!(matches!(
            decide(
                &policy,
                &budget,
                &RpcError::DeadlineExceeded,
                true,
                1,
                later
            ),
            Decision::GiveUp(_)
        ));
        // Attempts and time.
        assert!(matches!(
            decide(&policy, &budget, &shutting_down, true, 3, later),
            Decision::GiveUp("attempts exhausted")
        ));
        assert!(matches!(
            decide(&policy, &budget, &shutting_down, true, 1, Instant::now()),
            Decision::GiveUp("no time left before the deadline")
        ));
    }
}
