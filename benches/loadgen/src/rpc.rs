//! This framework: an `Echo` service over one or more multiplexed connections, one task
//! per call kept in flight (the way an application would drive it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rpc_core::{ByteBuf, Streaming};

use crate::{Phase, WorkerResult};

#[rpc_core::service]
pub trait Echo {
    /// Returns `value`.
    async fn echo(&self, value: u64) -> u64;
    /// Returns `data`.
    async fn echo_bytes(&self, data: ByteBuf) -> ByteBuf;
    /// Streams `total` bytes in items of `chunk` bytes (the last one may be shorter): the
    /// bulk transfer of `loadgen interleave`.
    async fn download(&self, total: u64, chunk: u32) -> Streaming<ByteBuf>;
}

/// The echo implementation.
pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, value: u64) -> u64 {
        value
    }

    async fn echo_bytes(&self, data: ByteBuf) -> ByteBuf {
        data
    }

    async fn download(&self, total: u64, chunk: u32) -> Streaming<ByteBuf> {
        let chunk = u64::from(chunk.max(1));
        let items = (0..total.div_ceil(chunk)).map(move |i| {
            let len = chunk.min(total - i * chunk) as usize;
            ByteBuf::from(vec![0xa5u8; len])
        });
        Streaming::iter(items)
    }
}

/// Serves `Echo` on `addr`; returns the bound address.
pub async fn serve(addr: &str) -> Result<SocketAddr> {
    let server = rpc_transport_tcp::serve(addr, EchoServer::new(EchoImpl)).await?;
    Ok(server.local_addr())
}

/// Opens `connections` connections and runs `concurrency` call loops spread across them.
pub async fn client(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    payload: usize,
    phase: Arc<AtomicU8>,
) -> Result<Vec<tokio::task::JoinHandle<Result<WorkerResult>>>> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(EchoClient::new(rpc_transport_tcp::connect(addr).await?));
    }
    Ok((0..concurrency)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let phase = Arc::clone(&phase);
            tokio::spawn(call_loop(client, payload, phase))
        })
        .collect())
}

async fn call_loop(
    client: EchoClient,
    payload: usize,
    phase: Arc<AtomicU8>,
) -> Result<WorkerResult> {
    let mut result = WorkerResult::new();
    let data = ByteBuf::from(vec![0x5au8; payload]);
    let mut value = 0u64;
    loop {
        let started = Instant::now();
        if payload <= 8 {
            value = client.echo(value + 1).await?;
        } else {
            let back = client.echo_bytes(data.clone()).await?;
            anyhow::ensure!(back.len() == payload, "short echo");
        }
        match phase.load(Ordering::Relaxed) {
            p if p == Phase::Measure as u8 => result.record(started.elapsed(), payload),
            p if p == Phase::Stop as u8 => return Ok(result),
            _ => {}
        }
    }
}
