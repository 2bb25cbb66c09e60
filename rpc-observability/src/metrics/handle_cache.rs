//! Per-method metric handles, found once and then looked up by name address.

use super::*;

/// Where the handles of each method's metrics are kept once found, so that recording a
/// call hashes two pointers instead of its label strings. Keyed by the addresses and
/// lengths of the `&'static` service and method names (a bounded set: the services'
/// own, and `other`).
///
/// Read-mostly: a lookup is one atomic load of the current map and a probe of it, with
/// no lock and no write to shared memory, so threads recording at once do not contend.
/// Adding a method (once per method) copies the map and publishes the copy; every map
/// published is kept until the cache is dropped, since a reader may still be probing an
/// older one.
pub(super) struct HandleCache<H> {
    /// The latest map; never null, always one of `published`.
    current: AtomicPtr<MethodMap<H>>,
    /// Every map ever published (from `Box::into_raw`, freed on drop), oldest first; the
    /// lock also serialises writers. Raw pointers, not boxes: a box asserts unique
    /// access whenever it moves (the vector growing), which readers' shared references
    /// into the map must not meet.
    published: Mutex<Vec<*mut MethodMap<H>>>,
}

type MethodMap<H> = HashMap<NameKey, Arc<H>, BuildHasherDefault<NameKeyHasher>>;

// SAFETY: the maps behind the pointers are owned by the cache and only read after they
// are published (writers hold the lock and write only maps not yet published); sending or
// sharing the cache sends or shares `Arc<H>`s, as a `HashMap<_, Arc<H>>` would.
unsafe impl<H: Send + Sync> Send for HandleCache<H> {}
// SAFETY: as above.
unsafe impl<H: Send + Sync> Sync for HandleCache<H> {}

impl<H> Default for HandleCache<H> {
    fn default() -> Self {
        let first = Box::into_raw(Box::new(MethodMap::default()));
        HandleCache {
            current: AtomicPtr::new(first),
            published: Mutex::new(vec![first]),
        }
    }
}

impl<H> Drop for HandleCache<H> {
    fn drop(&mut self) {
        let published = self
            .published
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for map in published.drain(..) {
            // SAFETY: each came from `Box::into_raw` once, and no reader is left (`&mut self`).
            drop(unsafe { Box::from_raw(map) });
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
    /// Runs `f` with the handles of `service.method` (made by `make` the first time).
    pub(super) fn with<R>(
        &self,
        service: &'static str,
        method: &'static str,
        make: impl FnOnce() -> H,
        f: impl FnOnce(&H) -> R,
    ) -> R {
        f(self.lookup(service, method, make))
    }

    /// The handles of `service.method`, to keep.
    pub(super) fn get(
        &self,
        service: &'static str,
        method: &'static str,
        make: impl FnOnce() -> H,
    ) -> Arc<H> {
        Arc::clone(self.lookup(service, method, make))
    }

    fn lookup(
        &self,
        service: &'static str,
        method: &'static str,
        make: impl FnOnce() -> H,
    ) -> &Arc<H> {
        let key = name_key(service, method);
        // SAFETY: `current` always points into a map owned by `published`, which keeps
        // every map until `self` is dropped, and a published map is never written again;
        // the reference lives no longer than `&self`.
        let map = unsafe { &*self.current.load(Ordering::Acquire) };
        if let Some(handles) = map.get(&key) {
            return handles;
        }
        self.insert(key, make)
    }

    /// Publishes a copy of the current map with `key` added (unless another thread
    /// added it meanwhile), and returns its entry.
    #[cold]
    fn insert(&self, key: NameKey, make: impl FnOnce() -> H) -> &Arc<H> {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let latest = *published
            .last()
            .expect("the first map is published at creation");
        // SAFETY: published maps are kept until `self` is dropped and never written
        // again; the reference lives no longer than `&self`.
        let latest: &MethodMap<H> = unsafe { &*latest };
        if latest.contains_key(&key) {
            return &latest[&key];
        }
        let mut next = latest.clone();
        next.insert(key, Arc::new(make()));
        let next = Box::into_raw(Box::new(next));
        published.push(next);
        self.current.store(next, Ordering::Release);
        // SAFETY: as above; `next` is published now and not written again.
        let map: &MethodMap<H> = unsafe { &*next };
        &map[&key]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    // Statics, not consts: the cache keys names by address, and each use of a const may
    // be a copy of its own.
    static SERVICE: &str = "Svc";
    static METHODS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

    #[test]
    fn each_method_is_made_once_and_found_by_every_thread() {
        let cache: HandleCache<usize> = HandleCache::default();
        let made = AtomicUsize::new(0);
        let found: Vec<Vec<usize>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let (cache, made) = (&cache, &made);
                    s.spawn(move || {
                        (0..600)
                            .map(|i| {
                                let method = METHODS[(i + t) % METHODS.len()];
                                *cache.get(SERVICE, method, || {
                                    made.fetch_add(1, Ordering::SeqCst);
                                    METHODS.iter().position(|m| *m == method).unwrap()
                                })
                            })
                            .collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(made.load(Ordering::SeqCst), METHODS.len(), "made once each");
        for (t, values) in found.iter().enumerate() {
            for (i, value) in values.iter().enumerate() {
                assert_eq!(METHODS[*value], METHODS[(i + t) % METHODS.len()]);
            }
        }
        // The same handles, by address, wherever they are found (keyed by the names'
        // addresses: the same `&'static str`s, as a service's method table gives).
        let first = cache.get(SERVICE, METHODS[0], || unreachable!());
        assert!(Arc::ptr_eq(
            &first,
            &cache.get(SERVICE, METHODS[0], || unreachable!())
        ));
    }
}
