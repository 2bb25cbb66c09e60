//! The load signal balancers weigh endpoints by: [`EndpointLoad`] counts an endpoint's
//! calls in flight from this channel and keeps an exponentially weighted moving average
//! (EWMA) of their latency, in atomics (no lock per call); a [`LoadSignal`] turns them
//! into one number, lower is better.
//!
//! | signal | load |
//! |---|---|
//! | [`InFlight`] (default) | calls in flight |
//! | [`PeakEwma`] | (calls in flight + 1) × average latency: a slow endpoint and a busy one both look loaded |

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Weight of a new sample in the latency average (the rest is the old average).
const EWMA_WEIGHT: f64 = 0.2;

/// One endpoint's load as this channel sees it.
#[derive(Debug, Default)]
pub struct EndpointLoad {
    in_flight: AtomicUsize,
    /// The latency average in nanoseconds (`f64` bits); 0 until the first sample.
    ewma_nanos: AtomicU64,
}

impl EndpointLoad {
    /// No calls yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls this channel has in flight on the endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The average latency of its answered calls, if any was answered yet.
    pub fn latency(&self) -> Option<Duration> {
        let nanos = f64::from_bits(self.ewma_nanos.load(Ordering::Relaxed));
        (nanos > 0.0).then(|| Duration::from_nanos(nanos as u64))
    }

    /// A call started on the endpoint.
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended (answered or not).
    pub fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A call was answered after `latency`: folds it into the average.
    pub fn observe(&self, latency: Duration) {
        let sample = latency.as_nanos() as f64;
        let _ = self
            .ewma_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let old = f64::from_bits(bits);
                let new = if old == 0.0 {
                    sample
                } else {
                    old + EWMA_WEIGHT * (sample - old)
                };
                Some(new.max(1.0).to_bits())
            });
    }
}

/// Turns an endpoint's [`EndpointLoad`] into one number; lower is better.
pub trait LoadSignal: Send + Sync + 'static {
    /// The endpoint's load now.
    fn load(&self, load: &EndpointLoad) -> f64;
    /// A short name for logs.
    fn name(&self) -> &'static str;
}

/// Calls in flight.
#[derive(Debug, Default, Clone, Copy)]
pub struct InFlight;

impl LoadSignal for InFlight {
    fn load(&self, load: &EndpointLoad) -> f64 {
        load.in_flight() as f64
    }

    fn name(&self) -> &'static str {
        "in_flight"
    }
}

/// (Calls in flight + 1) × average latency, in seconds; an endpoint without a latency
/// yet counts with `default_latency`, so new endpoints get traffic.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    /// The latency assumed for an endpoint that has answered nothing yet.
    pub default_latency: Duration,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            default_latency: Duration::from_millis(1),
        }
    }
}

impl LoadSignal for PeakEwma {
    fn load(&self, load: &EndpointLoad) -> f64 {
        let latency = load.latency().unwrap_or(self.default_latency);
        (load.in_flight() as f64 + 1.0) * latency.as_secs_f64()
    }

    fn name(&self) -> &'static str {
        "peak_ewma"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_latency_and_weighs_in_flight() {
        let load = EndpointLoad::new();
        assert_eq!(load.latency(), None);
        load.observe(Duration::from_millis(10));
        assert_eq!(load.latency(), Some(Duration::from_millis(10)));
        for _ in 0..50 {
            load.observe(Duration::from_millis(100));
        }
        let average = load.latency().unwrap();
        assert!(average > Duration::from_millis(99), "{average:?}");
        let fast = EndpointLoad::new();
        fast.observe(Duration::from_millis(1));
        assert!(PeakEwma::default().load(&fast) < PeakEwma::default().load(&load));
        load.start();
        load.start();
        assert_eq!(InFlight.load(&load), 2.0);
        load.end();
        assert_eq!(load.in_flight(), 1);
    }
}
