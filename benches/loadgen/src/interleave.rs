//! Head-of-line blocking: the latency of small unary calls on one connection, alone and
//! while a large server-stream transfer runs on the same connection.
//!
//! ```text
//! loadgen interleave [--calls 2000] [--mib 100] [--chunk 65536]
//! ```
//!
//! Against an `rpc` server process, over one connection, in rounds: a `--mib` MiB
//! `download` (a server stream of `--chunk`-byte items) alone, for the transfer's own
//! rate; the same download consumed by a concurrent task while sequential `echo(u64)`
//! calls (1 in flight) run back to back on the same connection, counting only the calls
//! that ended while the transfer was in progress; then as many calls alone. Rounds repeat
//! until `--calls` calls were measured during transfers (at most 20 rounds), so load from
//! other processes falls on both sides alike. Prints p50/p99/p99.9/max of the calls alone
//! and during the transfers, their ratios, the transfer's MiB/s alone and with the calls,
//! and a `RESULT ...` line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;

use crate::rpc::EchoClient;
use crate::{Flags, ServerProcess};

/// Downloads at most this many transfers while collecting the calls.
const MAX_TRANSFERS: usize = 20;

pub async fn run(flags: &Flags) -> Result<()> {
    let calls: usize = flags.get("calls", 2_000)?;
    let mib: u64 = flags.get("mib", 100)?;
    let chunk: u32 = flags.get("chunk", 64 * 1024)?;
    ensure!(calls > 0 && mib > 0 && chunk > 0, "need positive flags");
    let total = mib * 1024 * 1024;

    let server = ServerProcess::start("rpc")?;
    let client = EchoClient::new(traitrpc_transport_tcp::connect(server.addr).await?);

    // Warm-up: the connection, both runtimes, the allocator.
    for i in 0..500 {
        client.echo(i).await?;
    }
    download(&client, total / 10, chunk, None).await?;

    // Rounds, so that load from other processes falls on both sides alike: a transfer
    // alone, a transfer with small calls running during it, then as many calls alone.
    let mut alone = histogram();
    let mut during = histogram();
    let (mut transfers, mut alone_secs, mut during_secs) = (0u64, 0.0, 0.0);
    let mut value = 0u64;
    while (during.len() as usize) < calls && (transfers as usize) < MAX_TRANSFERS {
        alone_secs += download(&client, total, chunk, None).await?.as_secs_f64();

        let running = Arc::new(AtomicBool::new(false));
        let transfer = tokio::spawn({
            let client = client.clone();
            let running = Arc::clone(&running);
            async move { download(&client, total, chunk, Some(&*running)).await }
        });
        // From the first item on, the transfer is in progress.
        while !running.load(Ordering::Acquire) && !transfer.is_finished() {
            tokio::task::yield_now().await;
        }
        let mut measured = 0;
        while running.load(Ordering::Acquire) && (during.len() as usize) < calls {
            value += 1;
            let started = Instant::now();
            let v = client.echo(value).await?;
            let latency = started.elapsed();
            ensure!(v == value, "wrong echo");
            // Only calls that ended before the transfer did.
            if running.load(Ordering::Acquire) {
                let _ = during.record(nanos(latency));
                measured += 1;
            }
        }
        during_secs += transfer.await??.as_secs_f64();
        transfers += 1;

        for _ in 0..measured.max(1) {
            value += 1;
            let started = Instant::now();
            let v = client.echo(value).await?;
            let _ = alone.record(nanos(started.elapsed()));
            ensure!(v == value, "wrong echo");
        }
    }
    ensure!(
        !during.is_empty(),
        "no small call completed during a transfer"
    );
    drop(server);

    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let max = |h: &Histogram<u64>| h.max() as f64 / 1000.0;
    let alone_mib_s = (transfers * mib) as f64 / alone_secs;
    let during_mib_s = (transfers * mib) as f64 / during_secs;
    let p50_ratio = us(&during, 0.5) / us(&alone, 0.5);
    let p99_ratio = us(&during, 0.99) / us(&alone, 0.99);
    println!("small calls: echo u64, 1 in flight, 1 connection; transfer: {mib} MiB server stream in {chunk}-byte items on the same connection");
    for (name, h) in [("alone", &alone), ("during transfer", &during)] {
        println!(
            "  {name:<16} {:>5} calls  latency µs: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            h.len(),
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999),
            max(h)
        );
    }
    println!("  ratio during/alone: p50 {p50_ratio:.2}x  p99 {p99_ratio:.2}x");
    println!(
        "  transfer: alone {alone_mib_s:.0} MiB/s, with the small calls {during_mib_s:.0} MiB/s ({transfers} transfer(s))"
    );
    println!(
        "RESULT alone_calls={} alone_p50_us={:.2} alone_p99_us={:.2} alone_p999_us={:.2} alone_max_us={:.2} during_calls={} during_p50_us={:.2} during_p99_us={:.2} during_p999_us={:.2} during_max_us={:.2} p50_ratio={p50_ratio:.3} p99_ratio={p99_ratio:.3} transfer_alone_mib_per_s={alone_mib_s:.1} transfer_mib_per_s={during_mib_s:.1} transfers={transfers} transfer_mib={mib} chunk_bytes={chunk}",
        alone.len(),
        us(&alone, 0.5),
        us(&alone, 0.99),
        us(&alone, 0.999),
        max(&alone),
        during.len(),
        us(&during, 0.5),
        us(&during, 0.99),
        us(&during, 0.999),
        max(&during),
    );
    Ok(())
}

/// Downloads `total` bytes; sets `running` from the first item until the last. Returns
/// the time from the call to the last item.
async fn download(
    client: &EchoClient,
    total: u64,
    chunk: u32,
    running: Option<&AtomicBool>,
) -> Result<Duration> {
    let started = Instant::now();
    let mut stream = client.download(total, chunk).await?;
    let mut received = 0u64;
    while let Some(item) = stream.next().await {
        received += item?.len() as u64;
        if let Some(running) = running {
            running.store(true, Ordering::Release);
        }
    }
    let elapsed = started.elapsed();
    if let Some(running) = running {
        running.store(false, Ordering::Release);
    }
    ensure!(received == total, "received {received} of {total} bytes");
    Ok(elapsed)
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("histogram")
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().max(1) as u64
}
