//! gRPC unary echo with real protobuf messages, against two servers driven by the same
//! tonic client: tonic 0.14 (`grpc-tonic`) and traitrpc's gateway serving a `#[service]`
//! trait through the exported `.proto` (`grpc-gateway`: HTTP/2, the protobuf transcoder,
//! the JSON dispatcher).
//!
//! The messages are the gateway's export of `trait Echo { async fn echo(&self, value: u64)
//! -> u64; }` as `loadgen.Echo`: request `EchoEchoRequest { uint64 value = 160670; }` ([`PbEchoRequest`] here)
//! (the number `traitrpc_proto::field_number("value")` gives), response
//! `EchoEchoResponse { uint64 result = 1; }` ([`PbEchoResponse`]); tonic serves the same messages at the same
//! path, so the client cannot tell the servers apart.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::WorkerResult;

/// The method's path, as both servers serve it.
const ECHO: &str = "/loadgen.Echo/echo";

/// The request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbEchoRequest {
    /// The value to echo.
    #[prost(uint64, tag = "160670")]
    pub value: u64,
}

/// The response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbEchoResponse {
    /// The echoed value.
    #[prost(uint64, tag = "1")]
    pub result: u64,
}

/// The echo as a `#[service]` trait, for the gateway.
#[traitrpc_core::service(name = "loadgen.Echo")]
pub trait Echo {
    /// `value`.
    async fn echo(&self, value: u64) -> u64;
}

struct Echoer;

impl Echo for Echoer {
    async fn echo(&self, value: u64) -> u64 {
        value
    }
}

/// A tonic codec for prost messages: encodes `E`, decodes `D`.
pub struct ProstCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for ProstCodec<E, D> {
    fn default() -> Self {
        ProstCodec(PhantomData)
    }
}

impl<E, D> Codec for ProstCodec<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self::default()
    }

    fn decoder(&mut self) -> Self {
        Self::default()
    }
}

impl<E: prost::Message, D> Encoder for ProstCodec<E, D> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<E, D: prost::Message + Default> Decoder for ProstCodec<E, D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

struct EchoMethod;

impl UnaryService<PbEchoRequest> for EchoMethod {
    type Response = PbEchoResponse;
    type Future = BoxFuture<Response<PbEchoResponse>, Status>;

    fn call(&mut self, request: Request<PbEchoRequest>) -> Self::Future {
        let value = request.into_inner().value;
        Box::pin(async move { Ok(Response::new(PbEchoResponse { result: value })) })
    }
}

/// tonic's side: `loadgen.Echo/echo` with the protobuf messages, as `tonic-build` would
/// generate it.
#[derive(Clone)]
struct TonicEcho;

impl NamedService for TonicEcho {
    const NAME: &'static str = "loadgen.Echo";
}

impl Service<http::Request<Body>> for TonicEcho {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            ECHO => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<PbEchoResponse, PbEchoRequest>::default());
                Ok(grpc.unary(EchoMethod, request).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// Serves tonic's echo on `addr`.
pub async fn serve_tonic(addr: &str) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = Server::builder().tcp_nodelay(true).add_service(TonicEcho);
    tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            eprintln!("tonic server: {e}");
        }
    });
    Ok(local)
}

/// Serves the `Echo` trait through traitrpc's gateway on `addr`.
pub async fn serve_gateway(addr: &str) -> Result<SocketAddr> {
    let router = traitrpc_core::Router::from(EchoServer::new(Echoer));
    let config = traitrpc_gateway::GatewayConfig::default().max_in_flight(100_000);
    let gateway = traitrpc_gateway::serve(addr, router, config).await?;
    let local = gateway.local_addr();
    // Runs until the process is killed.
    std::mem::forget(gateway);
    Ok(local)
}

/// Opens `connections` tonic channels and runs `concurrency` echo loops across them.
pub async fn client(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    phase: Arc<AtomicU8>,
) -> Result<Vec<tokio::task::JoinHandle<Result<WorkerResult>>>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let mut clients = Vec::new();
    for _ in 0..connections {
        let channel: Channel = endpoint.connect().await?;
        clients.push(tonic::client::Grpc::new(channel));
    }
    Ok((0..concurrency)
        .map(|i| {
            let mut grpc = clients[i % clients.len()].clone();
            let phase = Arc::clone(&phase);
            tokio::spawn(async move {
                let mut result = WorkerResult::new();
                let mut value = 1u64 << 60;
                loop {
                    let started = Instant::now();
                    grpc.ready().await?;
                    let response = grpc
                        .unary(
                            Request::new(PbEchoRequest { value: value + 1 }),
                            http::uri::PathAndQuery::from_static(ECHO),
                            ProstCodec::<PbEchoRequest, PbEchoResponse>::default(),
                        )
                        .await?;
                    let echoed = response.into_inner().result;
                    anyhow::ensure!(echoed == value + 1, "echo of {} was {echoed}", value + 1);
                    value = echoed;
                    if result.account(&phase, started, 8) {
                        return Ok(result);
                    }
                }
            })
        })
        .collect())
}
