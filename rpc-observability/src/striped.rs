//! The histogram and the counter the call metrics record into: one stripe per thread
//! that records (with the `thread_local` crate), on cache lines of its own. A stripe has
//! one writer, its thread, so recording is plain loads and stores: no lock, no locked
//! instruction, no cache line moving between cores. Observations are integers
//! (nanoseconds, bytes), so the sum and the count are exact; a scrape adds the stripes up
//! and encodes the histogram in the unit the metric declares (seconds, bytes).
//!
//! `prometheus-client`'s own `Histogram` takes a lock per observation, and its `Counter`
//! is one atomic that every thread's increments move between cores; under load from
//! several threads these were the largest part of what metrics cost (see
//! `benches/README.md`, "Observability overhead").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use thread_local::ThreadLocal;

/// Upper bounds of the finite buckets of one histogram, in observation units, and the
/// factor from those units to the exported unit.
#[derive(Debug)]
pub(crate) struct Buckets {
    /// Finite upper bounds, ascending (at most [`MAX_BUCKETS`] - 1).
    pub bounds: &'static [u64],
    /// Exported value of one observation unit (1e-9 for nanoseconds as seconds).
    pub scale: f64,
}

/// Buckets a stripe has room for, the `+Inf` bucket included.
const MAX_BUCKETS: usize = 20;

/// One thread's share of a histogram, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    sum: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

struct Inner {
    buckets: &'static Buckets,
    /// For each octave of values (`64 - leading_zeros`: 0 for 0, k for
    /// `2^(k-1) ..= 2^k - 1`), the bucket of its smallest value: where the search for a
    /// value's bucket starts. With bounds at least twice apart (these metrics' are), at
    /// most one more bound is compared.
    first_in_octave: [u8; 65],
    stripes: ThreadLocal<Stripe>,
}

impl Inner {
    /// The first bucket whose bound is at least `value` (`le` semantics); past the last
    /// finite bound, `+Inf`.
    fn bucket_of(&self, value: u64) -> usize {
        let bounds = self.buckets.bounds;
        let mut bucket = usize::from(self.first_in_octave[(64 - value.leading_zeros()) as usize]);
        while bucket < bounds.len() && bounds[bucket] < value {
            bucket += 1;
        }
        bucket
    }
}

/// [`Inner::first_in_octave`] for `bounds`.
fn octaves(bounds: &[u64]) -> [u8; 65] {
    std::array::from_fn(|octave| {
        let smallest = if octave == 0 { 0 } else { 1u64 << (octave - 1) };
        bounds.partition_point(|&bound| bound < smallest) as u8
    })
}

/// Adds `n` to a cell only the calling thread writes (its own stripe): a load and a
/// store, without the locked read-modify-write that `fetch_add` costs. Readers (a scrape)
/// see the value before or after, never a torn one.
fn add(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// A histogram of integer observations. Cheap to clone; clones share it.
#[derive(Clone)]
pub(crate) struct StripedHistogram {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StripedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripedHistogram")
            .field("buckets", &self.inner.buckets.bounds.len())
            .finish_non_exhaustive()
    }
}

impl StripedHistogram {
    /// An empty histogram with `buckets`.
    pub(crate) fn new(buckets: &'static Buckets) -> Self {
        assert!(buckets.bounds.len() < MAX_BUCKETS, "too many buckets");
        debug_assert!(buckets.bounds.windows(2).all(|w| w[0] < w[1]));
        StripedHistogram {
            inner: Arc::new(Inner {
                buckets,
                first_in_octave: octaves(buckets.bounds),
                stripes: ThreadLocal::new(),
            }),
        }
    }

    /// Records one observation of `value` units.
    pub(crate) fn observe(&self, value: u64) {
        let inner = &*self.inner;
        let stripe = inner.stripes.get_or_default();
        let bucket = inner.bucket_of(value);
        add(&stripe.buckets[bucket], 1);
        add(&stripe.sum, value);
    }

    /// The count, the sum (exported unit) and the per-bucket counts (not cumulative).
    fn snapshot(&self) -> (u64, f64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let bounds = inner.buckets.bounds;
        let mut buckets: Vec<(f64, u64)> = bounds
            .iter()
            .map(|&b| (b as f64 * inner.buckets.scale, 0))
            .chain(std::iter::once((f64::INFINITY, 0)))
            .collect();
        let mut sum = 0u64;
        for stripe in inner.stripes.iter() {
            for (total, bucket) in buckets.iter_mut().zip(&stripe.buckets) {
                total.1 += bucket.load(Ordering::Relaxed);
            }
            sum = sum.wrapping_add(stripe.sum.load(Ordering::Relaxed));
        }
        // The count is the buckets' total, so it always agrees with `+Inf` as the format
        // requires, even while other threads record.
        let count = buckets.iter().map(|b| b.1).sum();
        (count, sum as f64 * inner.buckets.scale, buckets)
    }
}

impl TypedMetric for StripedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for StripedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (count, sum, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A counter whose increments land on the calling thread's stripe. Cheap to clone;
/// clones share it.
#[derive(Clone, Default)]
pub(crate) struct StripedCounter {
    stripes: Arc<ThreadLocal<CounterStripe>>,
}

/// One thread's share of a counter, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct CounterStripe(AtomicU64);

impl std::fmt::Debug for StripedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StripedCounter").field(&self.get()).finish()
    }
}

impl StripedCounter {
    /// Adds one.
    pub(crate) fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub(crate) fn inc_by(&self, n: u64) {
        add(&self.stripes.get_or_default().0, n);
    }

    /// The total.
    pub(crate) fn get(&self) -> u64 {
        self.stripes.iter().fold(0u64, |total, s| {
            total.wrapping_add(s.0.load(Ordering::Relaxed))
        })
    }
}

impl TypedMetric for StripedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for StripedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SIZES: Buckets = Buckets {
        bounds: &[0, 16, 64],
        scale: 1.0,
    };

    #[test]
    fn observations_land_in_the_first_bucket_at_least_as_large() {
        let h = StripedHistogram::new(&SIZES);
        for v in [0, 1, 16, 17, 64, 65, 1000] {
            h.observe(v);
        }
        let (count, sum, buckets) = h.snapshot();
        assert_eq!(count, 7);
        assert_eq!(sum, 1163.0);
        let counts: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        assert_eq!(counts, [1, 2, 2, 2]);
        assert_eq!(buckets[3].0, f64::INFINITY);
    }

    #[test]
    fn threads_recording_at_once_lose_nothing() {
        let h = StripedHistogram::new(&SIZES);
        std::thread::scope(|s| {
            for t in 0..4 {
                let h = h.clone();
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe((i + t) % 100);
                    }
                });
            }
        });
        let (count, _, buckets) = h.snapshot();
        assert_eq!(count, 40_000);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 40_000);
    }

    #[test]
    fn the_octave_shortcut_finds_the_bucket_a_search_finds() {
        static DURATIONS: Buckets = Buckets {
            bounds: &[
                50_000,
                100_000,
                250_000,
                500_000,
                1_000_000,
                2_500_000,
                10_000_000_000,
            ],
            scale: 1e-9,
        };
        static CLOSE: Buckets = Buckets {
            bounds: &[3, 4, 5, 6, 7, 100, 101],
            scale: 1.0,
        };
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for buckets in [&SIZES, &DURATIONS, &CLOSE] {
            let h = StripedHistogram::new(buckets);
            let mut values: Vec<u64> = vec![0, 1, 2, u64::MAX, u64::MAX - 1];
            for &b in buckets.bounds {
                values.extend([b.saturating_sub(1), b, b.saturating_add(1)]);
            }
            for _ in 0..10_000 {
                // xorshift, over every magnitude
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                values.push(x >> (x % 64));
            }
            for v in values {
                let searched = buckets.bounds.partition_point(|&bound| bound < v);
                assert_eq!(h.inner.bucket_of(v), searched, "value {v}");
            }
        }
    }

    #[test]
    fn counters_add_up_across_threads() {
        let c = StripedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let c = c.clone();
                s.spawn(move || {
                    for _ in 0..10_000 {
                        c.inc();
                    }
                    c.inc_by(5);
                });
            }
        });
        assert_eq!(c.get(), 40_020);
    }
}
