//! Load balancers: given the endpoints that can take a call right now, pick one.
//!
//! | balancer | picks |
//! |---|---|
//! | [`RoundRobin`] (default) | each endpoint in turn |
//! | [`Random`] | uniformly at random |
//! | [`WeightedRoundRobin`] | in proportion to [`Endpoint::weight`], smoothly interleaved (nginx's smooth WRR) |
//! | [`LeastInFlight`] | the endpoint with the lowest load (default: fewest calls in flight from this channel) |
//! | [`PowerOfTwoChoices`] | the less loaded of two endpoints chosen at random |
//! | [`ConsistentHash`] | by the call's routing key on a hash ring with virtual nodes |
//!
//! The load-aware balancers take a [`LoadSignal`]: [`InFlight`] by default, or
//! [`PeakEwma`] (calls in flight weighted by each endpoint's latency average).
//! Candidates read their load from atomics when a balancer looks at them, so a pick costs
//! what the balancer touches, not a scan of the pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::endpoint::Endpoint;
#[cfg(doc)]
use crate::load::PeakEwma;
use crate::load::{EndpointLoad, InFlight, LoadSignal};
use crate::policy::random_below;

/// The most points a [`ConsistentHash`] ring holds in all: with more endpoints or
/// larger weights, every endpoint's share of points is scaled down (keeping at least one
/// each), so registry data cannot make a client build a huge ring.
pub const MAX_RING_POINTS: usize = 100_000;

/// An endpoint that can take a call now, as a [`Balancer`] sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    endpoint: Arc<Endpoint>,
    load: Arc<EndpointLoad>,
}

impl Candidate {
    /// `endpoint` with its `load`.
    pub fn new(endpoint: Arc<Endpoint>, load: Arc<EndpointLoad>) -> Self {
        Candidate { endpoint, load }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Its load as this channel sees it now.
    pub fn load(&self) -> &EndpointLoad {
        &self.load
    }

    /// Calls this channel has in flight on it.
    pub fn in_flight(&self) -> usize {
        self.load.in_flight()
    }
}

/// Chooses the endpoint for one call.
pub trait Balancer: Send + Sync + 'static {
    /// Picks one of `candidates` (never empty; the endpoints that are connected, healthy
    /// and, on a retry, not yet tried by this call) for a call with routing key `key`,
    /// and returns its index.
    fn pick(&self, candidates: &[Candidate], key: Option<u64>) -> usize;

    /// Told the whole endpoint set (healthy or not) whenever discovery changes it.
    fn update(&self, endpoints: &[Endpoint]) {
        let _ = endpoints;
    }

    /// A short name for logs.
    fn name(&self) -> &'static str;
}

/// Each candidate in turn: over any run of `k × n` calls to a stable set of `n` healthy
/// endpoints, each gets exactly `k`.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round-robin balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}

/// A uniformly random candidate.
#[derive(Debug, Default)]
pub struct Random;

impl Random {
    /// A random balancer.
    pub fn new() -> Self {
        Random
    }
}

impl Balancer for Random {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> usize {
        random_below(candidates.len())
    }

    fn name(&self) -> &'static str {
        "random"
    }
}

/// Smooth weighted round robin (as in nginx): every pick adds each candidate's weight to
/// its running score, takes the highest score and subtracts the total weight from it.
/// Over `W` picks (`W` the sum of the weights) each endpoint is picked exactly its weight
/// times, and the picks of a heavy endpoint are spread out instead of bunched.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    scores: Mutex<HashMap<String, i64>>,
}

impl WeightedRoundRobin {
    /// A smooth weighted round-robin balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> usize {
        let mut scores = self.scores.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0i64;
        let mut best = 0;
        let mut best_score = i64::MIN;
        for (i, c) in candidates.iter().enumerate() {
            let weight = i64::from(c.endpoint().effective_weight());
            total += weight;
            let score = match scores.get_mut(c.endpoint().addr.as_str()) {
                Some(score) => score,
                None => scores.entry(c.endpoint().addr.clone()).or_insert(0),
            };
            *score += weight;
            if *score > best_score {
                best_score = *score;
                best = i;
            }
        }
        if let Some(score) = scores.get_mut(candidates[best].endpoint().addr.as_str()) {
            *score -= total;
        }
        best
    }

    fn update(&self, endpoints: &[Endpoint]) {
        let mut scores = self.scores.lock().unwrap_or_else(PoisonError::into_inner);
        scores.retain(|addr, _| endpoints.iter().any(|e| &e.addr == addr));
    }

    fn name(&self) -> &'static str {
        "weighted_round_robin"
    }
}

/// The candidate with the lowest load ([`InFlight`] unless built
/// [`with_load`](LeastInFlight::with_load)); ties are broken in turn, so an idle set is
/// used round robin. It looks at every candidate on each pick.
pub struct LeastInFlight {
    next: AtomicUsize,
    signal: Box<dyn LoadSignal>,
}

impl std::fmt::Debug for LeastInFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeastInFlight")
            .field("signal", &self.signal.name())
            .finish()
    }
}

impl Default for LeastInFlight {
    fn default() -> Self {
        Self::with_load(InFlight)
    }
}

impl LeastInFlight {
    /// A least-in-flight balancer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The least loaded candidate by `signal` (for example [`PeakEwma`]).
    pub fn with_load(signal: impl LoadSignal) -> Self {
        LeastInFlight {
            next: AtomicUsize::new(0),
            signal: Box::new(signal),
        }
    }
}

impl Balancer for LeastInFlight {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> usize {
        let n = candidates.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut best_load = f64::INFINITY;
        for k in 0..n {
            let i = (start + k) % n;
            let load = self.signal.load(candidates[i].load());
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        best
    }

    fn name(&self) -> &'static str {
        "least_in_flight"
    }
}

/// Power of two choices: two distinct candidates at random, the less loaded wins
/// ([`InFlight`] unless built [`with_load`](PowerOfTwoChoices::with_load)). Almost as good
/// as [`LeastInFlight`] at avoiding a slow endpoint, without sending every caller to the
/// same one at once, and it reads the load of two candidates only.
pub struct PowerOfTwoChoices {
    signal: Box<dyn LoadSignal>,
}

impl std::fmt::Debug for PowerOfTwoChoices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerOfTwoChoices")
            .field("signal", &self.signal.name())
            .finish()
    }
}

impl Default for PowerOfTwoChoices {
    fn default() -> Self {
        Self::with_load(InFlight)
    }
}

impl PowerOfTwoChoices {
    /// A power-of-two-choices balancer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Weighs the two candidates by `signal` (for example [`PeakEwma`]).
    pub fn with_load(signal: impl LoadSignal) -> Self {
        PowerOfTwoChoices {
            signal: Box::new(signal),
        }
    }
}

impl Balancer for PowerOfTwoChoices {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> usize {
        let n = candidates.len();
        if n == 1 {
            return 0;
        }
        let a = random_below(n);
        let b = (a + 1 + random_below(n - 1)) % n;
        if self.signal.load(candidates[b].load()) < self.signal.load(candidates[a].load()) {
            b
        } else {
            a
        }
    }

    fn name(&self) -> &'static str {
        "p2c"
    }
}

/// Consistent hashing on the call's routing key (`client.with_routing_key(k)`): each
/// endpoint owns `virtual_nodes × weight` points on a 64-bit ring and a key goes to the
/// owner of the first point at or after its hash. Calls with the same key reach the same
/// endpoint while the set is stable; adding an endpoint to a set of `n` moves about
/// `1/(n+1)` of the keys, all of them to the new endpoint. A key whose endpoint cannot
/// take the call (unhealthy, or already tried by a retry) goes to the next endpoint on
/// the ring. Calls without a key are spread round robin.
#[derive(Debug)]
pub struct ConsistentHash {
    virtual_nodes: u32,
    /// The ring of the last update, replaced whole: a pick reads one ring and the
    /// addresses its points index, never a new ring against old addresses.
    ring: RwLock<Arc<Ring>>,
    fallback: RoundRobin,
}

/// One update's ring: sorted points, each naming an index into `addrs`.
#[derive(Debug, Default)]
struct Ring {
    points: Vec<(u64, usize)>,
    addrs: Vec<String>,
}

impl Ring {
    /// The addresses in ring order from the first point at or after `key`'s hash, each
    /// once.
    fn owners(&self, key: u64) -> impl Iterator<Item = &str> {
        let start = self.points.partition_point(|&(point, _)| point < mix(key));
        let mut seen = vec![false; self.addrs.len()];
        (0..self.points.len()).filter_map(move |k| {
            let owner = self.points[(start + k) % self.points.len()].1;
            (!std::mem::replace(&mut seen[owner], true)).then(|| self.addrs[owner].as_str())
        })
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsistentHash {
    /// A ring with 160 virtual nodes per unit of weight.
    pub fn new() -> Self {
        Self::with_virtual_nodes(160)
    }

    /// A ring with `virtual_nodes` points per unit of weight (more points, more even
    /// spread, slower updates).
    pub fn with_virtual_nodes(virtual_nodes: u32) -> Self {
        ConsistentHash {
            virtual_nodes: virtual_nodes.max(1),
            ring: RwLock::new(Arc::default()),
            fallback: RoundRobin::new(),
        }
    }

    /// The address the ring maps `key` to when every endpoint is available, or `None`
    /// for an empty ring.
    pub fn owner(&self, key: u64) -> Option<String> {
        self.ring().owners(key).next().map(str::to_owned)
    }

    /// The ring of the last update.
    fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Balancer for ConsistentHash {
    fn pick(&self, candidates: &[Candidate], key: Option<u64>) -> usize {
        let Some(key) = key else {
            return self.fallback.pick(candidates, None);
        };
        let ring = self.ring();
        for owner in ring.owners(key) {
            if let Some(i) = candidates.iter().position(|c| c.endpoint().addr == owner) {
                return i;
            }
        }
        // Candidates the ring does not know yet (no update so far).
        (mix(key) % candidates.len() as u64) as usize
    }

    fn update(&self, endpoints: &[Endpoint]) {
        let addrs: Vec<String> = endpoints.iter().map(|e| e.addr.clone()).collect();
        let wanted: Vec<u64> = endpoints
            .iter()
            .map(|e| u64::from(self.virtual_nodes) * u64::from(e.effective_weight()))
            .collect();
        // Scale everyone down alike when the ring would be too large.
        let total: u64 = wanted.iter().sum();
        let scale = (MAX_RING_POINTS as f64 / total.max(1) as f64).min(1.0);
        let mut points = Vec::with_capacity(total.min(MAX_RING_POINTS as u64) as usize);
        for (index, (e, &want)) in endpoints.iter().zip(&wanted).enumerate() {
            let count = ((want as f64 * scale) as u32).max(1);
            for v in 0..count {
                points.push((point_hash(&e.addr, v), index));
            }
        }
        points.sort_unstable();
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Ring { points, addrs });
    }

    fn name(&self) -> &'static str {
        "consistent_hash"
    }
}

/// The ring point `v` of the endpoint at `addr`: FNV-1a over the address and `v`, then a
/// finalizer, so that the points are stable across processes and builds.
fn point_hash(addr: &str, v: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in addr.bytes().chain(v.to_le_bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// The splitmix64 finalizer: spreads nearby keys over the ring.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint::new(format!("10.0.0.{i}:7000")))
            .collect()
    }

    fn candidates(endpoints: &[Endpoint], load: &[usize]) -> Vec<Candidate> {
        endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let endpoint_load = EndpointLoad::new();
                for _ in 0..load.get(i).copied().unwrap_or(0) {
                    endpoint_load.start();
                }
                Candidate::new(Arc::new(endpoint.clone()), Arc::new(endpoint_load))
            })
            .collect()
    }

    fn counts(b: &dyn Balancer, c: &[Candidate], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; c.len()];
        for k in 0..picks {
            counts[b.pick(c, Some(k as u64))] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_exactly_fair() {
        let e = endpoints(3);
        let c = candidates(&e, &[]);
        let b = RoundRobin::new();
        assert_eq!(counts(&b, &c, 3000), vec![1000, 1000, 1000]);
        // Any window of n consecutive picks hits every endpoint once.
        let window: Vec<usize> = (0..3).map(|_| b.pick(&c, None)).collect();
        let mut sorted = window.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2], "{window:?}");
    }

    #[test]
    fn smooth_weighted_round_robin_matches_weights_within_2_percent() {
        let e = vec![
            Endpoint::new("a:1").with_weight(5),
            Endpoint::new("b:1").with_weight(3),
            Endpoint::new("c:1").with_weight(2),
        ];
        let c = candidates(&e, &[]);
        let b = WeightedRoundRobin::new();
        let got = counts(&b, &c, 10_000);
        for (count, expected) in got.iter().zip([5000.0, 3000.0, 2000.0]) {
            let error = (*count as f64 - expected).abs() / expected;
            assert!(error <= 0.02, "{got:?}");
        }
        // Smooth: the heavy endpoint never gets more than 2 picks in a row here.
        let seq: Vec<usize> = (0..10).map(|_| b.pick(&c, None)).collect();
        assert!(
            seq.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
            "{seq:?}"
        );
    }

    #[test]
    fn random_spreads_evenly() {
        let e = endpoints(4);
        let c = candidates(&e, &[]);
        let got = counts(&Random::new(), &c, 40_000);
        assert!(got.iter().all(|&n| (9_000..11_000).contains(&n)), "{got:?}");
    }

    #[test]
    fn least_in_flight_prefers_the_least_loaded() {
        let e = endpoints(3);
        let c = candidates(&e, &[5, 1, 7]);
        let b = LeastInFlight::new();
        assert!((0..100).all(|_| b.pick(&c, None) == 1));
        // Ties rotate.
        let idle = candidates(&e, &[0, 0, 0]);
        assert_eq!(counts(&b, &idle, 300), vec![100, 100, 100]);
    }

    #[test]
    fn p2c_avoids_the_loaded_endpoint() {
        let e = endpoints(3);
        let c = candidates(&e, &[50, 0, 0]);
        let got = counts(&PowerOfTwoChoices::new(), &c, 3000);
        // The loaded endpoint only wins when drawn twice, which P2C never does.
        assert_eq!(got[0], 0, "{got:?}");
        assert!(got[1] > 1000 && got[2] > 1000, "{got:?}");
    }

    #[test]
    fn consistent_hash_is_stable_and_moves_about_one_nth() {
        let keys = 10_000u64;
        let before = endpoints(4);
        let ring = ConsistentHash::new();
        ring.update(&before);
        let c = candidates(&before, &[]);
        let owner_before: Vec<&str> = (0..keys)
            .map(|k| c[ring.pick(&c, Some(k))].endpoint().addr.as_str())
            .collect();
        // Stable: the same key always maps to the same endpoint.
        for k in 0..keys {
            assert_eq!(
                c[ring.pick(&c, Some(k))].endpoint().addr,
                owner_before[k as usize]
            );
        }
        // Spread: each of 4 endpoints owns 25 % ± 7 %.
        for e in &before {
            let owned = owner_before.iter().filter(|a| **a == e.addr).count() as f64;
            assert!((owned / keys as f64 - 0.25).abs() < 0.07, "{owned}");
        }

        let after = endpoints(5);
        ring.update(&after);
        let c2 = candidates(&after, &[]);
        let mut moved = 0;
        for k in 0..keys {
            let now = c2[ring.pick(&c2, Some(k))].endpoint().addr.as_str();
            if now != owner_before[k as usize] {
                moved += 1;
                assert_eq!(now, after[4].addr, "keys only move to the new endpoint");
            }
        }
        let fraction = moved as f64 / keys as f64;
        // Ideal: 1/5 = 20 %.
        assert!((0.13..0.27).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn consistent_hash_skips_unavailable_owner() {
        let all = endpoints(3);
        let ring = ConsistentHash::new();
        ring.update(&all);
        let owner = ring.owner(42).unwrap();
        let rest: Vec<Endpoint> = all.iter().filter(|e| e.addr != owner).cloned().collect();
        let c = candidates(&rest, &[]);
        let first = ring.pick(&c, Some(42));
        // Deterministic fallback to the next owner on the ring.
        assert!((0..10).all(|_| ring.pick(&c, Some(42)) == first));
    }

    #[test]
    fn consistent_hash_picks_while_the_set_churns_never_mix_two_updates() {
        // Discovery alternating between 1 and 64 endpoints while calls pick: a pick
        // reads one update's ring and addresses. With the ring and the addresses under
        // two locks, a pick between the two writes indexed a 64-endpoint ring into a
        // 1-endpoint list (index out of bounds) or routed by a stale list.
        let (one, many) = (endpoints(1), endpoints(64));
        let c = candidates(&many, &[]);
        let ring = ConsistentHash::new();
        ring.update(&many);
        // The owner of each key on a ring of all 64, before any churn.
        let owner_of: Vec<String> = (0..1024).map(|k| ring.owner(k).unwrap()).collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 0..500 {
                    ring.update(if round % 2 == 0 { &one } else { &many });
                }
                done.store(true, Ordering::Release);
            });
            let mut key = 0u64;
            while !done.load(Ordering::Acquire) {
                key = (key + 1) % 1024;
                let picked = c[ring.pick(&c, Some(key))].endpoint().addr.as_str();
                // Whatever update the pick saw, it routed by that update's owner.
                assert!(
                    picked == one[0].addr || picked == owner_of[key as usize],
                    "key {key} went to {picked}"
                );
            }
        });
    }

    #[test]
    fn hostile_weights_cannot_blow_up_the_ring_or_the_scores() {
        // A registry claiming absurd weights for many endpoints.
        let hostile: Vec<Endpoint> = (0..1000)
            .map(|i| {
                Endpoint::new(format!("10.1.{}.{}:7000", i / 256, i % 256)).with_weight(u32::MAX)
            })
            .collect();
        let ring = ConsistentHash::new();
        ring.update(&hostile);
        let points = ring.ring().points.len();
        assert!(
            points <= MAX_RING_POINTS + hostile.len(),
            "{points} ring points"
        );
        // Still spread over everyone, and smooth WRR still works without overflow.
        let c = candidates(&hostile, &[]);
        assert!(ring.pick(&c, Some(7)) < c.len());
        let wrr = WeightedRoundRobin::new();
        let got = counts(&wrr, &c[..3], 3000);
        assert_eq!(
            got,
            vec![1000, 1000, 1000],
            "equal (clamped) weights share equally"
        );
    }

    #[test]
    fn p2c_with_peak_ewma_avoids_the_slow_endpoint() {
        use crate::load::PeakEwma;
        use std::time::Duration;
        let e = endpoints(3);
        let c = candidates(&e, &[]);
        c[0].load().observe(Duration::from_millis(200));
        c[1].load().observe(Duration::from_millis(2));
        c[2].load().observe(Duration::from_millis(2));
        let got = counts(&PowerOfTwoChoices::with_load(PeakEwma::default()), &c, 3000);
        assert_eq!(got[0], 0, "{got:?}");
    }
}
