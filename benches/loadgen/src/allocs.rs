//! Allocations per unary round trip, client and server together, counted by a global
//! allocator while sequential calls run in this process over loopback TCP.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Result;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting allocations (and reallocations) while enabled.
pub struct CountingAllocator;

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `calls` sequential echo calls of `mode` (`rpc`, `rpc-seam`, `rpc-metrics`,
/// `rpc-observed`) after a warm-up and prints allocations per call.
///
/// Run under `valgrind --tool=callgrind` with two call counts, it also gives the
/// instructions per round trip (the difference of the totals over the difference of the
/// counts): a figure that other load on the machine does not move.
pub async fn run(calls: u64, mode: &str) -> Result<()> {
    let layers = crate::rpc::Layers::of_mode(mode)
        .ok_or_else(|| anyhow::anyhow!("allocs: unknown mode `{mode}`"))?;
    let server = crate::rpc::start_server("127.0.0.1:0", layers).await?;
    let metrics = traitrpc_observability::metrics::Metrics::new();
    let client = crate::rpc::echo_client(
        traitrpc_transport_tcp::connect(server.local_addr()).await?,
        layers,
        &metrics,
    );
    for i in 0..1000 {
        client.echo(i).await?;
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for i in 0..calls {
        let v = client.echo(i).await?;
        anyhow::ensure!(v == i, "wrong echo");
    }
    COUNTING.store(false, Ordering::SeqCst);
    let per_call = ALLOCATIONS.load(Ordering::SeqCst) as f64 / calls as f64;
    println!(
        "{mode}: {calls} sequential echo calls: {per_call:.2} allocations per round trip (client + server)"
    );
    println!("RESULT allocations_per_call={per_call:.3}");
    server.shutdown().await;
    Ok(())
}
