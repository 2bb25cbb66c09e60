//! The histogram the call metrics record into: lock-free, and striped so that threads
//! recording at the same time do not fight over one cache line (a busy client records
//! from every worker thread at once). Observations are integers (nanoseconds, bytes), so
//! the sum and the count are exact; a scrape adds the stripes up and encodes the
//! histogram in the unit the metric declares (seconds, bytes).
//!
//! `prometheus-client`'s own `Histogram` takes a lock per observation; under load from
//! several threads that lock was the largest part of what metrics cost (see
//! `benches/README.md`, "Observability overhead").

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

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

/// The most stripes a histogram has.
const MAX_STRIPES: usize = 8;

/// One thread's share of a histogram, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    sum: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

struct Inner {
    buckets: &'static Buckets,
    stripes: Box<[Stripe]>,
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

/// How many stripes histograms (and the metrics' handle caches) have: one per core,
/// rounded up to a power of two (a stripe is then picked with a mask), at most
/// [`MAX_STRIPES`].
pub(crate) fn stripe_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_STRIPES)
            .next_power_of_two()
            .min(MAX_STRIPES)
    })
}

/// This thread's stripe (threads take stripes in turn), below [`stripe_count`].
pub(crate) fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) & (stripe_count() - 1);
    }
    STRIPE.with(|s| *s)
}

impl StripedHistogram {
    /// An empty histogram with `buckets`.
    pub(crate) fn new(buckets: &'static Buckets) -> Self {
        assert!(buckets.bounds.len() < MAX_BUCKETS, "too many buckets");
        debug_assert!(buckets.bounds.windows(2).all(|w| w[0] < w[1]));
        StripedHistogram {
            inner: Arc::new(Inner {
                buckets,
                stripes: (0..stripe_count()).map(|_| Stripe::default()).collect(),
            }),
        }
    }

    /// Records one observation of `value` units.
    pub(crate) fn observe(&self, value: u64) {
        let inner = &*self.inner;
        let stripe = &inner.stripes[thread_stripe()];
        // The first bucket whose bound is at least `value` (`le` semantics); past the
        // last finite bound, `+Inf`.
        let bucket = inner.buckets.bounds.partition_point(|&bound| bound < value);
        stripe.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        stripe.sum.fetch_add(value, Ordering::Relaxed);
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
}
