//! Hedged calls ([`HedgingPolicy`]): when the first attempt of an idempotent call has
//! not answered after a delay, another attempt goes to another endpoint (and after each
//! further delay one more, up to `max_hedges`); the first useful answer wins and the
//! other attempts are cancelled (their `CANCEL` frames stop the handlers). Against the tail of slow replicas, in the spirit of Dean and Barroso's "The
//! Tail at Scale", gRPC's hedging policy (gRFC A6) and Kitex's backup requests.
//!
//! Only methods marked `#[idempotent]` are ever hedged: a hedge may run a call twice.
//! Hedges are bounded by their own budget (a token bucket filled by calls), so hedging
//! cannot multiply the load on a fleet that is slow because it is overloaded.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use traitrpc_core::Hedging;

use crate::retry::RetryBudget;

/// When a hedge is sent, and how many may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgingPolicy {
    /// How long the first attempt may take before the hedge is sent.
    pub delay: HedgeDelay,
    /// Hedges allowed per call made through the channel (0.05: at most 5 % extra
    /// attempts over time).
    pub max_extra_ratio: f64,
    /// At most this many hedges saved up in quiet times may be sent in a burst (the
    /// budget starts with this many).
    pub max_burst: u32,
    /// Hedges per call at most, each one delay after the one before, while no attempt
    /// has answered (2: three attempts in all, as gRPC's `maxAttempts: 3`).
    pub max_hedges: u32,
}

/// How long the first attempt may take before its hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// A fixed delay.
    Fixed(Duration),
    /// The given quantile (0.95: the 95th percentile) of the channel's recent successful
    /// attempts, but at least `floor`. No hedge is sent until the channel has seen
    /// [`MIN_SAMPLES`] successful attempts.
    Percentile {
        /// The quantile, between 0 and 1.
        quantile: f64,
        /// The shortest delay used.
        floor: Duration,
    },
}

/// Successful attempts a channel must have seen before a percentile delay is trusted.
pub const MIN_SAMPLES: u64 = 100;

impl HedgingPolicy {
    /// Hedge after a fixed `delay`, at most 5 % extra attempts.
    pub fn after(delay: Duration) -> Self {
        HedgingPolicy {
            delay: HedgeDelay::Fixed(delay),
            max_extra_ratio: 0.05,
            max_burst: 10,
            max_hedges: 2,
        }
    }

    /// Hedge once the first attempt has taken longer than the `quantile` of recent
    /// attempts (0.95 is the usual choice: at most about 5 % of calls are hedged, and the
    /// budget caps it there), at least 1 ms, at most 5 % extra attempts.
    pub fn at_percentile(quantile: f64) -> Self {
        HedgingPolicy {
            delay: HedgeDelay::Percentile {
                quantile: quantile.clamp(0.0, 1.0),
                floor: Duration::from_millis(1),
            },
            max_extra_ratio: 0.05,
            max_burst: 10,
            max_hedges: 2,
        }
    }

    /// The same policy with at most `ratio` extra attempts per call (0.05: 5 %).
    pub fn max_extra_ratio(mut self, ratio: f64) -> Self {
        self.max_extra_ratio = ratio.max(0.0);
        self
    }
}

/// A channel's hedging state: its policy, budget and the latencies it has seen.
#[derive(Debug)]
pub(crate) struct Hedger {
    /// Whether calls that make no choice of their own are hedged.
    enabled: bool,
    policy: HedgingPolicy,
    budget: RetryBudget,
    latencies: Mutex<Latencies>,
}

impl Hedger {
    pub(crate) fn new(policy: HedgingPolicy) -> Self {
        Hedger {
            enabled: true,
            policy,
            budget: RetryBudget::with_ratio(policy.max_extra_ratio, policy.max_burst),
            latencies: Mutex::new(Latencies::default()),
        }
    }

    /// A channel without a policy: only calls that ask for it ([`Hedging::After`]) are
    /// hedged, within the default budget.
    pub(crate) fn disabled() -> Self {
        Hedger {
            enabled: false,
            ..Hedger::new(HedgingPolicy::after(Duration::ZERO))
        }
    }

    /// How long a call that made `choice` waits before its first hedge, if it is hedged.
    pub(crate) fn delay_for(&self, choice: Option<Hedging>) -> Option<Duration> {
        match choice {
            Some(Hedging::Off) => None,
            Some(Hedging::After(delay)) => Some(delay),
            None if self.enabled => self.delay(),
            None => None,
        }
    }

    /// A call started: it earns its share of a hedge.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// A successful attempt took `latency`.
    pub(crate) fn record(&self, latency: Duration) {
        if matches!(self.policy.delay, HedgeDelay::Percentile { .. }) {
            self.latencies().record(latency);
        }
    }

    /// How long to wait before hedging, or `None` while a percentile is not known yet.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.policy.delay {
            HedgeDelay::Fixed(delay) => Some(delay),
            HedgeDelay::Percentile { quantile, floor } => self
                .latencies()
                .quantile(quantile)
                .map(|delay| delay.max(floor)),
        }
    }

    /// Hedges per call at most.
    pub(crate) fn max_hedges(&self) -> u32 {
        self.policy.max_hedges
    }

    /// Takes a token for one hedge, if the budget has one.
    pub(crate) fn try_hedge(&self) -> bool {
        self.budget.try_withdraw()
    }

    fn latencies(&self) -> std::sync::MutexGuard<'_, Latencies> {
        self.latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Buckets per doubling of latency: each bucket is about 19 % wide.
const BUCKETS_PER_OCTAVE: f64 = 4.0;
/// Buckets from 1 µs up to about 70 minutes.
const BUCKETS: usize = 128;
/// Samples per window; the quantile is read over the current and the previous window,
/// so it follows a change of the fleet's latency within two windows.
const WINDOW: u64 = 1000;

/// Recent latencies, in two rotating windows of log-scale buckets.
#[derive(Debug)]
struct Latencies {
    windows: [[u64; BUCKETS]; 2],
    counts: [u64; 2],
    current: usize,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            windows: [[0; BUCKETS]; 2],
            counts: [0; 2],
            current: 0,
        }
    }
}

impl Latencies {
    fn bucket(latency: Duration) -> usize {
        let micros = latency.as_micros().max(1) as f64;
        ((micros.log2() * BUCKETS_PER_OCTAVE) as usize).min(BUCKETS - 1)
    }

    /// The upper bound of `bucket`.
    fn upper_bound(bucket: usize) -> Duration {
        Duration::from_secs_f64(2f64.powf((bucket + 1) as f64 / BUCKETS_PER_OCTAVE) / 1e6)
    }

    fn record(&mut self, latency: Duration) {
        if self.counts[self.current] >= WINDOW {
            self.current ^= 1;
            self.windows[self.current] = [0; BUCKETS];
            self.counts[self.current] = 0;
        }
        self.windows[self.current][Self::bucket(latency)] += 1;
        self.counts[self.current] += 1;
    }

    /// The `quantile` of the recorded latencies (rounded up to its bucket's bound), once
    /// there are enough of them.
    fn quantile(&self, quantile: f64) -> Option<Duration> {
        let total = self.counts[0] + self.counts[1];
        if total < MIN_SAMPLES {
            return None;
        }
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for bucket in 0..BUCKETS {
            seen += self.windows[0][bucket] + self.windows[1][bucket];
            if seen >= rank {
                return Some(Self::upper_bound(bucket));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_percentile_delay_waits_for_enough_samples_then_follows_them() {
        let hedger = Hedger::new(HedgingPolicy::at_percentile(0.95));
        for _ in 0..MIN_SAMPLES - 1 {
            hedger.record(ms(2));
        }
        assert_eq!(hedger.delay(), None, "not enough samples yet");
        // 95 fast and 5 slow: the 95th percentile is in the fast bucket.
        hedger.record(ms(2));
        let delay = hedger.delay().unwrap();
        assert!(delay >= ms(2) && delay < ms(3), "{delay:?}");
        for _ in 0..10 {
            hedger.record(ms(100));
        }
        let delay = hedger.delay().unwrap();
        assert!(delay >= ms(100) && delay < ms(120), "{delay:?}");
    }

    #[test]
    fn the_percentile_follows_the_fleet_within_two_windows() {
        let hedger = Hedger::new(HedgingPolicy::at_percentile(0.5));
        for _ in 0..WINDOW {
            hedger.record(ms(50));
        }
        assert!(hedger.delay().unwrap() >= ms(50));
        for _ in 0..2 * WINDOW {
            hedger.record(ms(1));
        }
        assert!(hedger.delay().unwrap() < ms(2));
    }

    #[test]
    fn the_floor_bounds_a_percentile_delay() {
        let policy = HedgingPolicy {
            delay: HedgeDelay::Percentile {
                quantile: 0.9,
                floor: ms(10),
            },
            ..HedgingPolicy::after(ms(0))
        };
        let hedger = Hedger::new(policy);
        for _ in 0..MIN_SAMPLES {
            hedger.record(Duration::from_micros(50));
        }
        assert_eq!(hedger.delay(), Some(ms(10)));
    }

    #[test]
    fn the_budget_allows_the_ratio_of_extra_attempts_and_no_more() {
        let hedger = Hedger::new(HedgingPolicy::after(ms(1)).max_extra_ratio(0.05));
        let mut hedges = 0;
        for _ in 0..10_000 {
            hedger.deposit();
            if hedger.try_hedge() {
                hedges += 1;
            }
        }
        // Every call wanted a hedge; 5 % of them got one, plus the burst it started with.
        assert!((505..=510).contains(&hedges), "{hedges}");
        let none = Hedger::new(HedgingPolicy {
            max_burst: 0,
            ..HedgingPolicy::after(ms(1)).max_extra_ratio(0.0)
        });
        none.deposit();
        assert!(!none.try_hedge());
    }
}
