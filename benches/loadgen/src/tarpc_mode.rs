//! tarpc 0.38 (bincode over length-delimited TCP, `TCP_NODELAY` on both ends as for the
//! other modes), driven exactly like the `rpc` mode: one task per call kept in flight.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{Future, StreamExt};
use tarpc::server::Channel;
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context, server};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::WorkerResult;

#[tarpc::service]
pub trait TarpcEcho {
    async fn echo(value: u64) -> u64;
    async fn echo_bytes(data: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct EchoImpl;

impl TarpcEcho for EchoImpl {
    async fn echo(self, _: context::Context, value: u64) -> u64 {
        value
    }

    async fn echo_bytes(self, _: context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(usize::MAX)
        .new_codec()
}

async fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// Serves the tarpc echo on `addr`; returns the bound address.
pub async fn serve(addr: &str) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let transport =
                tarpc::serde_transport::new(Framed::new(stream, codec()), Bincode::default());
            let channel = server::BaseChannel::with_defaults(transport);
            tokio::spawn(channel.execute(EchoImpl.serve()).for_each(spawn));
        }
    });
    Ok(local)
}

/// Opens `connections` tarpc clients and runs `concurrency` call loops across them.
pub async fn client(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    payload: usize,
    phase: Arc<AtomicU8>,
) -> Result<Vec<tokio::task::JoinHandle<Result<WorkerResult>>>> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let transport =
            tarpc::serde_transport::new(Framed::new(stream, codec()), Bincode::default());
        clients.push(TarpcEchoClient::new(client::Config::default(), transport).spawn());
    }
    Ok((0..concurrency)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let phase = Arc::clone(&phase);
            tokio::spawn(async move {
                let mut result = WorkerResult::new();
                let data = vec![0x5au8; payload];
                loop {
                    let mut ctx = context::current();
                    ctx.deadline = Instant::now() + Duration::from_secs(30);
                    let started = Instant::now();
                    if payload <= 8 {
                        client.echo(ctx, 1).await?;
                    } else {
                        client.echo_bytes(ctx, data.clone()).await?;
                    }
                    if result.account(&phase, started, payload) {
                        return Ok(result);
                    }
                }
            })
        })
        .collect())
}
