//! Per-method metric handles, found once and then looked up by name address.

use super::*;

/// Where the handles of each method's metrics are kept once found, so that recording a
/// call hashes two pointers instead of its label strings. Keyed by the addresses and
/// lengths of the `&'static` service and method names (a bounded set: the services'
/// own, and `other`). Striped like the histograms: each thread reads its own copy, so
/// threads recording at once do not contend on one lock word (the copies hold clones of
/// the same metrics).
pub(super) struct HandleCache<H> {
    stripes: Box<[CacheStripe<H>]>,
}

type MethodMap<H> = HashMap<NameKey, Arc<H>, BuildHasherDefault<NameKeyHasher>>;

#[repr(align(128))]
struct CacheStripe<H>(RwLock<MethodMap<H>>);

impl<H> Default for HandleCache<H> {
    fn default() -> Self {
        HandleCache {
            stripes: (0..stripe_count())
                .map(|_| CacheStripe(RwLock::new(HashMap::default())))
                .collect(),
        }
    }
}

/// A service and method name by address and length.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NameKey([usize; 4]);

impl std::hash::Hash for NameKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for word in self.0 {
            state.write_usize(word);
        }
    }
}

fn name_key(service: &'static str, method: &'static str) -> NameKey {
    NameKey([
        service.as_ptr() as usize,
        service.len(),
        method.as_ptr() as usize,
        method.len(),
    ])
}

impl<H> HandleCache<H> {
    /// Runs `f` with the handles of `service.method` (made by `make` the first time this
    /// thread's stripe needs them).
    pub(super) fn with<R>(
        &self,
        service: &'static str,
        method: &'static str,
        make: impl FnOnce() -> H,
        f: impl FnOnce(&H) -> R,
    ) -> R {
        self.lookup(service, method, make, |handles| f(handles))
    }

    /// The handles of `service.method`, to keep.
    pub(super) fn get(
        &self,
        service: &'static str,
        method: &'static str,
        make: impl FnOnce() -> H,
    ) -> Arc<H> {
        self.lookup(service, method, make, Arc::clone)
    }

    fn lookup<R>(
        &self,
        service: &'static str,
        method: &'static str,
        make: impl FnOnce() -> H,
        found: impl FnOnce(&Arc<H>) -> R,
    ) -> R {
        let key = name_key(service, method);
        let stripe = &self.stripes[thread_stripe()].0;
        if let Some(handles) = stripe
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return found(handles);
        }
        let mut methods = stripe.write().unwrap_or_else(PoisonError::into_inner);
        found(methods.entry(key).or_insert_with(|| Arc::new(make())))
    }
}

/// Hashes a [`NameKey`] (four words, of which the addresses differ): a multiply and a
/// rotate per word.
#[derive(Default)]
struct NameKeyHasher(u64);

impl Hasher for NameKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
