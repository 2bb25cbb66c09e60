//! Memory that a peer makes this side hold is bounded, and given back: a connection that
//! once carried a 15 MiB answer does not keep 15 MiB of buffers, and a server that stops
//! reading cannot make its client queue requests without bound.
//!
//! This test binary counts the bytes allocated and not yet freed by the whole process
//! (client and server run in it); the tests take one lock each, so they do not count
//! each other's allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{start, ProbeClient, ProbeImpl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traitrpc_core::ClientConfig;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn buffers_grown_for_a_large_answer_are_given_back() {
    let _serial = SERIAL.lock().await;
    let server = start(ProbeImpl::default()).await;
    let probe = common::client(server.local_addr()).await;
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    let before = LIVE.load(Ordering::SeqCst);
    let blob = probe.make_blob(15 * MIB as u64).await.unwrap();
    assert_eq!(blob.len(), 15 * MIB);
    drop(blob);
    // A few small calls afterwards: the connection is in use, its buffers not idle.
    for i in 0..10 {
        assert_eq!(probe.echo(i).await.unwrap(), i);
    }
    let after = LIVE.load(Ordering::SeqCst);
    // Before: the server's write buffer and the client's read buffer each kept the
    // 15 MiB they grew to, 30 MiB in all.
    assert!(
        after < before + 2 * MIB,
        "live heap grew by {} KiB after a 15 MiB answer had passed",
        (after.saturating_sub(before)) / 1024
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_stops_reading_cannot_make_its_client_buffer_without_bound() {
    let _serial = SERIAL.lock().await;
    // A server that completes the handshake and then never reads.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; traitrpc_core::protocol::HANDSHAKE_LEN];
        stream.read_exact(&mut hello).await.unwrap();
        let reply = traitrpc_core::protocol::ServerHello {
            version: traitrpc_core::protocol::VERSION,
            status: 0,
            max_frame_size: 32 * MIB as u32,
        };
        stream.write_all(&reply.encode()).await.unwrap();
        stream
            .write_all(&traitrpc_core::protocol::Settings::default().encode())
            .await
            .unwrap();
        stream
            .write_all(&traitrpc_core::protocol::Fingerprints::default().encode())
            .await
            .unwrap();
        let mut settings = [0u8; 8];
        stream.read_exact(&mut settings).await.unwrap();
        std::future::pending::<()>().await;
    });
    let connection = traitrpc_transport_tcp::connect_with_config(
        addr,
        ClientConfig::default().max_write_buffer(4 * MIB),
    )
    .await
    .unwrap();
    let probe = ProbeClient::new(connection).with_timeout(Duration::from_millis(1500));
    let baseline = LIVE.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    // 200 calls of 1 MiB each, all at once: 200 MiB if every request were queued.
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.blob_len(vec![0; MIB]).await })
        })
        .collect();
    let mut deadline_exceeded = 0;
    for call in calls {
        if let Err(traitrpc_core::RpcError::DeadlineExceeded) = call.await.unwrap() {
            deadline_exceeded += 1;
        }
    }
    assert_eq!(deadline_exceeded, 200, "nobody answers");
    let peak = PEAK.load(Ordering::SeqCst) - baseline;
    // The callers' own 1 MiB arguments (200 MiB) exist either way, so they are not what is
    // measured: what is bounded is the queue, 4 MiB plus one frame plus the socket
    // buffers, on top of the arguments.
    assert!(
        peak < 200 * MIB + 64 * MIB,
        "peak {} MiB over the baseline",
        peak / MIB
    );
}
