//! Settings of a [`BalancedChannel`](crate::BalancedChannel): [`Backoff`] (exponential
//! with jitter, for reconnects and retries) and [`OutlierPolicy`] (when failing endpoints
//! are ejected; the state machine is in `health`), and the channel's random numbers. The
//! retry policy and budget are in `retry`.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff with jitter: attempt `n` (from 1) waits
/// `min(max, initial × multiplier^(n-1))`, then scaled by a random factor in
/// `[1 - jitter, 1]` so that many clients do not retry in lockstep.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth per attempt (at least 1).
    pub multiplier: f64,
    /// The fraction of each delay that is randomised, between 0 (none) and 1 (full
    /// jitter).
    pub jitter: f64,
}

impl Backoff {
    /// A backoff from `initial` to `max`, doubling, with 50 % jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            multiplier: 2.0,
            jitter: 0.5,
        }
    }

    /// The delay before attempt `attempt` (1 = the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * random_f64();
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

/// Outlier ejection (circuit breaking) per endpoint: after `consecutive_failures`
/// failures in a row an endpoint is taken out of rotation for an ejection period (the
/// base, doubled on each ejection in a row, up to the max). When the period ends, one
/// call at a time is let through as a probe: a success returns the endpoint to
/// rotation, a failure ejects it again for longer.
///
/// Failures are transport failures (connect errors, lost or silent connections),
/// missed deadlines (a black-holed or stuck endpoint), `OVERLOADED` answers, handler
/// panics and `INTERNAL` answers. Application errors and refusals during a graceful
/// shutdown are not failures.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPolicy {
    /// Failures in a row that eject an endpoint (default 5; 0 disables ejection).
    pub consecutive_failures: u32,
    /// The first ejection period (default 1 s).
    pub base_ejection: Duration,
    /// The longest ejection period (default 30 s).
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
        }
    }
}

impl OutlierPolicy {
    /// The ejection period for the `n`th ejection in a row (from 1).
    pub(crate) fn ejection(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        self.base_ejection
            .saturating_mul(factor)
            .min(self.max_ejection)
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        hasher.finish() | 1
    });
}

/// A fast, non-cryptographic random number (xorshift64*, seeded per thread).
pub(crate) fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A random number in `[0, 1)`.
pub(crate) fn random_f64() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A random index below `n` (`n` > 0).
pub(crate) fn random_below(n: usize) -> usize {
    ((random_u64() as u128 * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(5) && d1 <= Duration::from_millis(10));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(20) && d3 <= Duration::from_millis(40));
            let d10 = b.delay(10);
            assert!(d10 >= Duration::from_millis(50) && d10 <= Duration::from_millis(100));
        }
        let exact = Backoff {
            jitter: 0.0,
            ..b.clone()
        };
        assert_eq!(exact.delay(2), Duration::from_millis(20));
    }

    #[test]
    fn ejection_doubles_up_to_the_max() {
        let p = OutlierPolicy::default();
        assert_eq!(p.ejection(1), Duration::from_secs(1));
        assert_eq!(p.ejection(3), Duration::from_secs(4));
        assert_eq!(p.ejection(30), Duration::from_secs(30));
    }

    #[test]
    fn random_below_stays_in_range() {
        for n in 1..50 {
            assert!(random_below(n) < n);
        }
    }
}
