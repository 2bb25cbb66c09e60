//! What the schemas cost: the heap a service's schema holds once traced, the time to
//! trace it, and the bytes of the fingerprint block a version 6 server adds to its
//! handshake. Run with `--nocapture` for the figures (benches/README.md records them);
//! the bounds below only catch a tracer gone wrong (a schema of megabytes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use traitrpc_core::health::HealthClient;
use traitrpc_core::protocol::Fingerprints;
use traitrpc_core::reflection::ReflectionClient;
use traitrpc_evolution_tests::v2;

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_schema_costs_kilobytes_once_per_process() {
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let orders = v2::OrdersClient::service_schema();
    let took = started.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - before;
    let methods = orders.methods.len();
    let block = Fingerprints::of([
        orders,
        HealthClient::service_schema(),
        ReflectionClient::service_schema(),
    ])
    .encode()
    .len();
    println!(
        "shop.Orders v2: {methods} methods, schema held {held} bytes ({} per method), \
         traced in {took:?}; fingerprint block with health and reflection: {block} bytes",
        held / methods as isize
    );
    assert!(held > 0 && held < 1 << 20, "{held} bytes");
    assert!(block < 4096, "{block} bytes");
}
