//! Micro-benchmarks of a call through the generated code: the dispatch of a `#[service]`
//! trait in-process (`{Trait}Server::handle`), and a full round trip through the protocol
//! over the in-memory transport (generated client, connection task, server connection
//! task, `Service::call`, answer), one call at a time.
//!
//! `cargo bench --bench call` (see `benches/README.md`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::FutureExt;
use traitrpc_core::{service, ByteBuf};

#[service]
pub trait Bench {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Returns `data`.
    async fn echo_bytes(&self, data: ByteBuf) -> ByteBuf;
}

struct BenchImpl;

impl Bench for BenchImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn echo_bytes(&self, data: ByteBuf) -> ByteBuf {
        data
    }
}

/// `BenchServer::handle`: matching the request enum and running the handler, no bytes.
fn dispatch(c: &mut Criterion) {
    let server = BenchServer::new(BenchImpl);
    c.bench_function("dispatch/handle-add", |b| {
        b.iter(|| {
            let request = BenchRequest::Add {
                a: black_box(1),
                b: black_box(2),
            };
            // The handler never waits: the future is ready on its first poll.
            match server.handle(request).now_or_never() {
                Some(BenchResponse::Add(sum)) => black_box(sum),
                _ => unreachable!(),
            }
        })
    });
}

/// Generated client -> in-memory pipe -> server -> back, one call in flight, on a
/// current-thread runtime (so no cross-thread wake-up is measured) and on a two-worker
/// multi-threaded one (the default shape of an application: the caller, here the bench
/// thread inside `block_on`, and the connection tasks on the workers wake each other).
fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory-round-trip");
    for flavor in ["current-thread", "multi-thread"] {
        let runtime = match flavor {
            "current-thread" => tokio::runtime::Builder::new_current_thread(),
            _ => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(2);
                builder
            }
        }
        .enable_all()
        .build()
        .expect("runtime");
        let (server, client) = runtime.block_on(async {
            let (listener, connector) = traitrpc_core::memory::listener();
            let server =
                traitrpc_core::Server::new(BenchServer::new(BenchImpl)).serve(listener, ());
            let client = BenchClient::new(connector.connect().await.expect("connect"));
            (server, client)
        });

        // Each iteration is one whole call, run to completion by `block_on`.
        group.bench_function(BenchmarkId::new("add", flavor), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let sum = client.add(black_box(1), black_box(2)).await.expect("call");
                    black_box(sum)
                })
            })
        });
        let data = ByteBuf::from(vec![0x5a; 4096]);
        group.bench_function(BenchmarkId::new("echo-4KiB", flavor), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let back = client.echo_bytes(data.clone()).await.expect("call");
                    black_box(back.len())
                })
            })
        });
        runtime.block_on(server.shutdown());
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = dispatch, round_trip
}
criterion_main!(benches);
