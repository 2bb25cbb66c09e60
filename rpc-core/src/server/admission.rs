//! Admission: how many calls a server runs at once. A fixed limit
//! (`ServerConfig::max_concurrent_calls`), or an adaptive one ([`AdaptiveConcurrency`])
//! that finds itself from the latency of the calls it runs, in the spirit of Netflix's
//! concurrency-limits (gradient) and Envoy's adaptive concurrency filter.
//!
//! The adaptive limit learns the server's latency without load by measuring it: at start,
//! and again every `probe_interval`, it holds the limit at `min_limit` for one window
//! and takes that window's average latency (of calls that started during it) as the
//! baseline; between probes a faster window lowers the baseline. So a server that starts
//! under overload still learns what an unloaded call costs, and one whose calls became
//! slower for good is followed at the next probe. Each window it compares the window's
//! average with that baseline: while
//! calls take no longer than `tolerance` times the baseline, the limit grows by its
//! square root (if it was being used); when they take longer, it shrinks in proportion,
//! down to half per window. Calls beyond the limit are refused at once with OVERLOADED
//! (they never ran: safe to retry elsewhere), before their arguments are decoded. So is
//! a call whose remaining deadline is shorter than the baseline: it could not finish in
//! time (deadline-aware shedding).
//!
//! [`Limiter`] is plain state with time as an input; the server feeds it the latency of
//! every call that ran.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Settings of the adaptive concurrency limit ([`ServerConfig::adaptive_concurrency`]).
///
/// [`ServerConfig::adaptive_concurrency`]: super::ServerConfig::adaptive_concurrency
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConcurrency {
    /// The limit at start.
    pub initial_limit: usize,
    /// The limit never goes below this.
    pub min_limit: usize,
    /// The limit never goes above this (nor above `max_concurrent_calls`).
    pub max_limit: usize,
    /// Latency up to this multiple of the no-load latency does not lower the limit.
    pub tolerance: f64,
    /// Calls measured per window (the limit changes at most once per window).
    pub window_calls: usize,
    /// Shortest window.
    pub min_window: Duration,
    /// How often the no-load latency is measured again (a window at `min_limit`).
    pub probe_interval: Duration,
}

impl Default for AdaptiveConcurrency {
    /// Start at 64 calls, between 4 and 65,536, tolerate twice the no-load latency,
    /// windows of at least 50 calls and 20 ms, measure the no-load latency every 30 s.
    fn default() -> Self {
        AdaptiveConcurrency {
            initial_limit: 64,
            min_limit: 4,
            max_limit: 64 * 1024,
            tolerance: 2.0,
            window_calls: 50,
            min_window: Duration::from_millis(20),
            probe_interval: Duration::from_secs(30),
        }
    }
}

/// Weight of a window's new limit against the old one.
const SMOOTHING: f64 = 0.2;

/// The server's admission: the current limit (read on every call) and, if adaptive, the
/// state that moves it.
#[derive(Debug)]
pub(crate) struct Admission {
    limit: AtomicUsize,
    /// The limiter's no-load latency in nanoseconds (0 until measured), read on every
    /// call without the limiter's lock.
    baseline_nanos: AtomicU64,
    adaptive: Option<Mutex<Limiter>>,
}

impl Admission {
    /// A fixed limit of `max` calls.
    pub(crate) fn fixed(max: usize) -> Self {
        Admission {
            limit: AtomicUsize::new(max),
            baseline_nanos: AtomicU64::new(0),
            adaptive: None,
        }
    }

    /// An adaptive limit, never above `max`.
    pub(crate) fn adaptive(settings: AdaptiveConcurrency, max: usize, now: Instant) -> Self {
        let limiter = Limiter::new(
            AdaptiveConcurrency {
                max_limit: settings.max_limit.min(max),
                ..settings
            },
            now,
        );
        Admission {
            limit: AtomicUsize::new(limiter.limit()),
            baseline_nanos: AtomicU64::new(0),
            adaptive: Some(Mutex::new(limiter)),
        }
    }

    /// The calls that may run at once now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether the limit adapts (and wants each call's latency).
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// The latency without load, once measured (adaptive only).
    pub(crate) fn baseline(&self) -> Option<Duration> {
        match self.baseline_nanos.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// A call that ran from `started` ended at `now`, leaving `in_flight` calls running.
    pub(crate) fn sample(&self, started: Instant, now: Instant, in_flight: usize) {
        if let Some(mut limiter) = self.limiter() {
            if let Some(limit) = limiter.sample(started, now, in_flight) {
                self.limit.store(limit, Ordering::Relaxed);
                let nanos = limiter.baseline.map_or(0, |b| b.as_nanos() as u64);
                self.baseline_nanos.store(nanos.max(1), Ordering::Relaxed);
            }
        }
    }

    fn limiter(&self) -> Option<std::sync::MutexGuard<'_, Limiter>> {
        self.adaptive
            .as_ref()
            .map(|limiter| limiter.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The adaptive limit's state.
#[derive(Debug)]
pub(crate) struct Limiter {
    settings: AdaptiveConcurrency,
    limit: f64,
    /// The no-load latency, once a probe measured it.
    baseline: Option<Duration>,
    /// The limit to return to when the current probe ends, while one runs.
    probing: Option<f64>,
    next_probe: Instant,
    window_start: Instant,
    window_sum: Duration,
    window_calls: usize,
    /// The most calls running at once during the window.
    window_peak: usize,
}

impl Limiter {
    pub(crate) fn new(settings: AdaptiveConcurrency, now: Instant) -> Self {
        let min = settings.min_limit.max(1);
        let max = settings.max_limit.max(min);
        let settings = AdaptiveConcurrency {
            min_limit: min,
            max_limit: max,
            tolerance: settings.tolerance.max(1.0),
            window_calls: settings.window_calls.max(1),
            ..settings
        };
        Limiter {
            // The first window is a probe.
            limit: min as f64,
            probing: Some(settings.initial_limit.clamp(min, max) as f64),
            next_probe: now + settings.probe_interval,
            settings,
            baseline: None,
            window_start: now,
            window_sum: Duration::ZERO,
            window_calls: 0,
            window_peak: 0,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Records one call that ran from `started` to `now`; returns the new limit when a
    /// window ended.
    pub(crate) fn sample(
        &mut self,
        started: Instant,
        now: Instant,
        in_flight: usize,
    ) -> Option<usize> {
        // A probe measures only calls that started under it.
        if self.probing.is_some() && started < self.window_start {
            return None;
        }
        self.window_sum += now.saturating_duration_since(started);
        self.window_calls += 1;
        self.window_peak = self.window_peak.max(in_flight + 1);
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.window_calls < self.settings.window_calls || elapsed < self.settings.min_window {
            return None;
        }
        let average = self.window_sum / self.window_calls as u32;
        self.window_start = now;
        self.window_sum = Duration::ZERO;
        self.window_calls = 0;
        let peak = std::mem::take(&mut self.window_peak);
        if let Some(limit) = self.probing.take() {
            self.baseline = Some(average);
            self.limit = limit;
            self.next_probe = now + self.settings.probe_interval;
            return Some(self.limit());
        }
        let baseline = self.baseline.map_or(average, |b| b.min(average));
        self.baseline = Some(baseline);
        let gradient = (self.settings.tolerance * baseline.as_secs_f64()
            / average.as_secs_f64().max(1e-9))
        .clamp(0.5, 1.0);
        // Grow only a limit that was used: an idle server learns nothing about its
        // capacity.
        let headroom = if gradient >= 1.0 && (peak as f64) < self.limit / 2.0 {
            0.0
        } else {
            self.limit.sqrt()
        };
        let target = self.limit * gradient + headroom;
        self.limit = (self.limit * (1.0 - SMOOTHING) + target * SMOOTHING).clamp(
            self.settings.min_limit as f64,
            self.settings.max_limit as f64,
        );
        if now >= self.next_probe {
            self.probing = Some(self.limit);
            self.limit = self.settings.min_limit as f64;
        }
        Some(self.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `windows` windows of 50 calls of `latency`, 20 ms apart, with `in_flight`
    /// calls running; the limit after each.
    fn run(
        limiter: &mut Limiter,
        t: &mut Instant,
        windows: usize,
        latency: Duration,
        in_flight: usize,
    ) -> Vec<usize> {
        let mut limits = Vec::new();
        for _ in 0..windows {
            *t += ms(20);
            let mut last = None;
            for _ in 0..50 {
                last = limiter.sample(*t - latency, *t, in_flight).or(last);
            }
            limits.push(last.expect("each run of 50 calls ends a window"));
        }
        limits
    }

    #[test]
    fn a_busy_server_at_its_no_load_latency_raises_its_limit() {
        let mut t = Instant::now();
        let mut limiter = Limiter::new(AdaptiveConcurrency::default(), t);
        let limits = run(&mut limiter, &mut t, 20, ms(2), 60);
        assert!(limits.windows(2).all(|w| w[1] >= w[0]), "{limits:?}");
        assert!(*limits.last().unwrap() > 64, "{limits:?}");
    }

    #[test]
    fn an_idle_server_keeps_its_limit() {
        let mut t = Instant::now();
        let mut limiter = Limiter::new(AdaptiveConcurrency::default(), t);
        let limits = run(&mut limiter, &mut t, 20, ms(2), 3);
        assert!(limits.iter().all(|&l| l == 64), "{limits:?}");
    }

    #[test]
    fn latency_past_the_tolerance_lowers_the_limit_and_recovery_raises_it() {
        let mut t = Instant::now();
        let mut limiter = Limiter::new(AdaptiveConcurrency::default(), t);
        run(&mut limiter, &mut t, 5, ms(2), 60);
        assert_eq!(limiter.baseline, Some(ms(2)));
        // Queueing: ten times the no-load latency. The limit falls toward its floor.
        let falling = run(&mut limiter, &mut t, 40, ms(20), 60);
        assert!(falling.windows(2).all(|w| w[1] <= w[0]), "{falling:?}");
        assert!((4..10).contains(falling.last().unwrap()), "{falling:?}");
        // Latency within the tolerance (1.5x): the limit climbs again.
        let rising = run(&mut limiter, &mut t, 40, ms(3), 1000);
        assert!(*rising.last().unwrap() > 20, "{rising:?}");
    }

    #[test]
    fn the_limit_stays_within_its_bounds() {
        let settings = AdaptiveConcurrency {
            min_limit: 10,
            max_limit: 100,
            ..AdaptiveConcurrency::default()
        };
        let mut t = Instant::now();
        let mut limiter = Limiter::new(settings, t);
        let up = run(&mut limiter, &mut t, 200, ms(1), 1000);
        assert_eq!(*up.last().unwrap(), 100);
        let down = run(&mut limiter, &mut t, 200, ms(100), 1000);
        assert_eq!(*down.last().unwrap(), 10);
    }

    #[test]
    fn a_window_needs_its_calls_and_its_time() {
        let t = Instant::now();
        let mut limiter = Limiter::new(AdaptiveConcurrency::default(), t);
        for _ in 0..1000 {
            assert_eq!(limiter.sample(t + ms(18), t + ms(19), 60), None);
        }
        assert!(limiter.sample(t + ms(19), t + ms(20), 60).is_some());
    }

    #[test]
    fn the_no_load_latency_is_measured_at_the_floor_at_start_and_every_probe_interval() {
        let mut t = Instant::now();
        let mut limiter = Limiter::new(AdaptiveConcurrency::default(), t);
        // The first window runs at the floor and measures the baseline.
        assert_eq!(limiter.limit(), 4);
        assert_eq!(run(&mut limiter, &mut t, 1, ms(5), 3), [64]);
        assert_eq!(limiter.baseline, Some(ms(5)));
        // Faster windows lower it between probes.
        run(&mut limiter, &mut t, 10, ms(4), 60);
        assert_eq!(limiter.baseline, Some(ms(4)));
        // 30 s on, the window that ends at the interval starts a probe: the floor for one
        // window, whose calls (not those already running) set the baseline, slower or not.
        let before = limiter.limit();
        t += Duration::from_secs(30);
        assert_eq!(run(&mut limiter, &mut t, 1, ms(4), 60), [4]);
        let stale = t - ms(30);
        for _ in 0..100 {
            assert_eq!(
                limiter.sample(stale, t + ms(25), 60),
                None,
                "started before the probe"
            );
        }
        let after = run(&mut limiter, &mut t, 1, ms(9), 3);
        assert!(after[0] >= before, "{after:?} after {before}");
        assert_eq!(limiter.baseline, Some(ms(9)));
    }

    #[test]
    fn the_admission_limit_follows_the_limiter() {
        let t = Instant::now();
        let admission = Admission::adaptive(AdaptiveConcurrency::default(), 32, t);
        assert_eq!(admission.limit(), 4, "the first window probes at the floor");
        assert_eq!(admission.baseline(), None);
        for _ in 0..50 {
            admission.sample(t + ms(18), t + ms(20), 3);
        }
        assert_eq!(admission.baseline(), Some(ms(2)));
        assert_eq!(admission.limit(), 32, "capped by max_concurrent_calls");
        let fixed = Admission::fixed(7);
        assert_eq!((fixed.limit(), fixed.is_adaptive()), (7, false));
    }
}
