//! tonic 0.14 (gRPC over HTTP/2, `TCP_NODELAY` on both ends as for the other modes), driven
//! exactly like the `rpc` mode: one task per call kept in flight, one `Channel` (an HTTP/2
//! connection) per `--connections`, cloned by the tasks that share it.
//!
//! No protobuf and no build script: the service is written by hand the way `tonic-build`
//! generates one (a `tower` service routing on the path to `tonic::server::Grpc::unary`
//! with a `UnaryService` per method, served as a `NamedService`), and the messages go
//! through [`RawCodec`]: a `u64` as 8 little-endian bytes, a payload as its raw bytes.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::{Buf, BufMut, Bytes};
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::WorkerResult;

/// The gRPC service name (`package.Service`).
const SERVICE: &str = "loadgen.Echo";
/// The path of the `u64` echo.
const ECHO: &str = "/loadgen.Echo/Echo";
/// The path of the bytes echo.
const ECHO_BYTES: &str = "/loadgen.Echo/EchoBytes";

/// A message [`RawCodec`] can carry.
pub trait RawMessage: Send + Sync + Sized + 'static {
    /// Appends the message's bytes.
    fn put(self, dst: &mut EncodeBuf<'_>);
    /// Reads a message from exactly the bytes of one gRPC message.
    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl RawMessage for u64 {
    fn put(self, dst: &mut EncodeBuf<'_>) {
        dst.put_u64_le(self);
    }

    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        if src.remaining() != 8 {
            return Err(Status::invalid_argument("a u64 is 8 bytes"));
        }
        Ok(src.get_u64_le())
    }
}

impl RawMessage for Bytes {
    fn put(self, dst: &mut EncodeBuf<'_>) {
        dst.put_slice(&self);
    }

    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        // Splits the received buffer: no copy.
        Ok(src.copy_to_bytes(src.remaining()))
    }
}

/// A `tonic` codec whose request and response are both `T`, encoded as [`RawMessage`] says.
pub struct RawCodec<T>(PhantomData<fn() -> T>);

impl<T> Default for RawCodec<T> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<T: RawMessage> Codec for RawCodec<T> {
    type Encode = T;
    type Decode = T;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self::default()
    }

    fn decoder(&mut self) -> Self {
        Self::default()
    }
}

impl<T: RawMessage> Encoder for RawCodec<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.put(dst);
        Ok(())
    }
}

impl<T: RawMessage> Decoder for RawCodec<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::take(src).map(Some)
    }
}

/// One echo method as a `UnaryService`: answers the request's message.
struct EchoMethod;

impl<T: RawMessage> UnaryService<T> for EchoMethod {
    type Response = T;
    type Future = BoxFuture<Response<T>, Status>;

    fn call(&mut self, request: Request<T>) -> Self::Future {
        Box::pin(async move { Ok(Response::new(request.into_inner())) })
    }
}

/// Handles one unary call of `T` with a server `Grpc` whose message limits allow any size.
async fn unary<T: RawMessage>(request: http::Request<Body>) -> http::Response<Body> {
    Grpc::new(RawCodec::<T>::default())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
        .unary(EchoMethod, request)
        .await
}

/// The echo server: routes `/loadgen.Echo/Echo` and `/loadgen.Echo/EchoBytes`, answers
/// `UNIMPLEMENTED` to any other path (as a generated server does).
#[derive(Clone)]
pub struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            ECHO => Box::pin(async move { Ok(unary::<u64>(request).await) }),
            ECHO_BYTES => Box::pin(async move { Ok(unary::<Bytes>(request).await) }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// Serves the tonic echo on `addr`; returns the bound address.
pub async fn serve(addr: &str) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // `Server::tcp_nodelay` applies to listeners tonic binds itself; this one is ours (to
    // learn its port), so the incoming stream sets it too.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = Server::builder().tcp_nodelay(true).add_service(EchoServer);
    tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            eprintln!("tonic server: {e}");
        }
    });
    Ok(local)
}

/// Opens `connections` tonic channels and runs `concurrency` call loops across them.
pub async fn client(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    payload: usize,
    phase: Arc<AtomicU8>,
) -> Result<Vec<tokio::task::JoinHandle<Result<WorkerResult>>>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let mut clients = Vec::new();
    for _ in 0..connections {
        // Each `connect` opens a connection of its own.
        let channel: Channel = endpoint.connect().await?;
        clients.push(
            tonic::client::Grpc::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        );
    }
    Ok((0..concurrency)
        .map(|i| {
            let mut grpc = clients[i % clients.len()].clone();
            let phase = Arc::clone(&phase);
            tokio::spawn(async move {
                let mut result = WorkerResult::new();
                let data = Bytes::from(vec![0x5au8; payload]);
                let mut value = 0u64;
                loop {
                    let started = Instant::now();
                    grpc.ready().await?;
                    if payload <= 8 {
                        let response = grpc
                            .unary(
                                Request::new(value + 1),
                                http::uri::PathAndQuery::from_static(ECHO),
                                RawCodec::<u64>::default(),
                            )
                            .await?;
                        value = response.into_inner();
                    } else {
                        let response = grpc
                            .unary(
                                Request::new(data.clone()),
                                http::uri::PathAndQuery::from_static(ECHO_BYTES),
                                RawCodec::<Bytes>::default(),
                            )
                            .await?;
                        anyhow::ensure!(response.get_ref().len() == payload, "short echo");
                    }
                    if result.account(&phase, started, payload) {
                        return Ok(result);
                    }
                }
            })
        })
        .collect())
}
