//! Failures: panics, a server process killed mid-call, frame limits, handshake refusals,
//! unknown services. In every case the error is typed and everything else keeps working.

mod common;

use std::time::{Duration, Instant};

use common::raw;
use common::{client, start, start_with, ProbeClient, ProbeImpl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use traitrpc_core::protocol::{self, ClientHello, ServerHello, HANDSHAKE_LEN, VERSION};
use traitrpc_core::{ClientConfig, RpcError, ServerConfig};

#[tokio::test]
async fn a_panicking_handler_fails_only_its_own_call() {
    let server = start(ProbeImpl::default()).await;
    let probe = client(server.local_addr()).await;
    let other = tokio::spawn({
        let probe = probe.clone();
        async move { probe.sleep_echo(300, 7).await }
    });
    match probe.panic("boom".into()).await {
        Err(RpcError::HandlerPanicked { message }) => assert_eq!(message, "boom"),
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    assert_eq!(other.await.unwrap().unwrap(), 7);
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    let second = client(server.local_addr()).await;
    assert_eq!(second.echo(2).await.unwrap(), 2);
    server.shutdown().await;
}

/// Not a test by itself: the server process that
/// `a_server_killed_mid_call_fails_in_flight_calls_promptly` starts and kills.
#[test]
#[ignore = "helper process, started by a_server_killed_mid_call_fails_in_flight_calls_promptly"]
fn helper_server_process() {
    if std::env::var_os("RPC_TEST_HELPER_SERVER").is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = start(ProbeImpl::default()).await;
        println!("LISTENING {}", server.local_addr());
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

#[tokio::test]
async fn a_server_killed_mid_call_fails_in_flight_calls_promptly() {
    let (mut child, addr) =
        common::spawn_helper_server("helper_server_process", "RPC_TEST_HELPER_SERVER");
    let probe = ProbeClient::new(
        traitrpc_transport_tcp::connect(addr.as_str())
            .await
            .unwrap(),
    );
    assert_eq!(probe.echo(1).await.unwrap(), 1);

    let in_flight: Vec<_> = (0..10)
        .map(|i| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.sleep_echo(30_000, i).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap();
    let killed_at = Instant::now();
    for call in in_flight {
        let error = call.await.unwrap().unwrap_err();
        assert!(
            matches!(error, RpcError::ConnectionClosed { .. }),
            "{error:?}"
        );
        // It may have run: not safe to retry blindly.
        assert!(!error.is_safe_to_retry());
    }
    let waited = killed_at.elapsed();
    assert!(waited < Duration::from_secs(1), "failed after {waited:?}");
    let _ = child.wait();
    // Later calls fail fast too, without being sent.
    assert!(matches!(
        probe.echo(2).await,
        Err(RpcError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn an_argument_over_the_servers_frame_limit_fails_locally_and_typed() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().max_frame_size(1024 * 1024),
    )
    .await;
    let probe = client(server.local_addr()).await;
    let error = probe.blob_len(vec![1; 2 * 1024 * 1024]).await.unwrap_err();
    match error {
        // The frame's real size: the 2 MiB argument (with its length prefix) plus the
        // request's header and names.
        RpcError::FrameTooLarge { size, limit } => {
            assert_eq!(limit, 1048576);
            assert!(size > 2 * 1024 * 1024, "{size}");
        }
        other => panic!("{other:?}"),
    }
    // The same connection keeps working.
    assert_eq!(probe.blob_len(vec![1; 1000]).await.unwrap(), 1000);
    server.shutdown().await;
}

#[tokio::test]
async fn a_response_over_the_clients_frame_limit_is_a_typed_error() {
    let server = start(ProbeImpl::default()).await;
    let conn = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default().max_frame_size(64 * 1024),
    )
    .await
    .unwrap();
    let probe = ProbeClient::new(conn);
    let error = probe.make_blob(1024 * 1024).await.unwrap_err();
    match &error {
        RpcError::ResponseTooLarge { message } => {
            assert!(message.contains("limit of 65536 bytes"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(error.outcome(), traitrpc_core::CallOutcome::Completed);
    assert_eq!(probe.make_blob(10).await.unwrap(), vec![7; 10]);
    server.shutdown().await;
}

/// Reads frames until a GO_AWAY arrives; returns its code.
async fn read_go_away(stream: &mut TcpStream) -> u8 {
    loop {
        match raw::next_frame(stream).await {
            Some(protocol::Frame::GoAway { code, .. }) => return code,
            Some(_) => continue,
            None => panic!("closed without a GO_AWAY"),
        }
    }
}

#[tokio::test]
async fn a_peer_sending_an_over_limit_frame_is_disconnected_and_others_keep_working() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().max_frame_size(1024 * 1024),
    )
    .await;
    let probe = client(server.local_addr()).await;
    let (mut raw, reply) = raw::handshaken(server.local_addr()).await;
    assert_eq!(reply.max_frame_size, 1024 * 1024);
    // A length prefix claiming 4 GiB - 1: refused before any body is read or allocated.
    raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_eq!(
        read_go_away(&mut raw).await,
        protocol::go_away::FRAME_TOO_LARGE
    );
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "the server closed the connection");
    assert_eq!(probe.echo(3).await.unwrap(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_is_not_this_protocol_is_refused() {
    let server = start(ProbeImpl::default()).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(read.is_ok_and(|n| n == 0) || buf.is_empty());
    let probe = client(server.local_addr()).await;
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_is_not_this_protocol_is_a_typed_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let error = traitrpc_transport_tcp::connect(addr).await.unwrap_err();
    assert!(matches!(error, RpcError::Protocol(_)), "{error:?}");
}

#[tokio::test]
async fn a_different_protocol_version_is_refused_with_a_typed_error() {
    // A client from the future talking to this server.
    let server = start(ProbeImpl::default()).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let hello = ClientHello {
        version: VERSION + 1,
        max_frame_size: 1 << 20,
    };
    stream.write_all(&hello.encode()).await.unwrap();
    let mut reply = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut reply).await.unwrap();
    let reply = ServerHello::decode(&reply).unwrap();
    assert_eq!(
        reply.status,
        protocol::handshake_status::UNSUPPORTED_VERSION
    );
    assert_eq!(reply.version, VERSION);

    // This client talking to a server from the future.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; HANDSHAKE_LEN];
        stream.read_exact(&mut hello).await.unwrap();
        let reply = ServerHello {
            version: VERSION + 1,
            status: protocol::handshake_status::UNSUPPORTED_VERSION,
            max_frame_size: 1 << 20,
        };
        stream.write_all(&reply.encode()).await.unwrap();
    });
    let error = traitrpc_transport_tcp::connect(addr).await.unwrap_err();
    assert_eq!(
        error,
        RpcError::VersionMismatch {
            ours: VERSION,
            theirs: VERSION + 1
        }
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().handshake_timeout(Duration::from_millis(200)),
    )
    .await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed by the server");
    assert!(matches!(read, Ok(0) | Err(_)));
    server.shutdown().await;
}

/// A type whose decoding panics on the server (a buggy `Deserialize` impl).
#[derive(Debug)]
pub struct Exploding;

impl serde::Serialize for Exploding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> serde::Deserialize<'de> for Exploding {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("Deserialize exploded")
    }
}

#[traitrpc_core::service]
pub trait Fragile {
    async fn take(&self, value: Exploding) -> u8;
    async fn ok(&self) -> u8;
    /// Returns a value whose `Serialize` panics.
    async fn give(&self) -> ExplodingOnTheWayOut;
    /// A stream whose second item's `Serialize` panics.
    async fn stream_give(&self) -> traitrpc_core::Streaming<ExplodingOnTheWayOut>;
}

/// Serializes fine the first time in each stream and panics after (see `stream_give`);
/// as a plain result, `give` makes one that panics at once.
#[derive(Debug, serde::Deserialize)]
pub struct ExplodingOnTheWayOut {
    panics: bool,
}

impl serde::Serialize for ExplodingOnTheWayOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.panics {
            panic!("Serialize exploded");
        }
        s.serialize_bool(false)
    }
}

struct FragileImpl;
impl Fragile for FragileImpl {
    async fn take(&self, _value: Exploding) -> u8 {
        0
    }
    async fn give(&self) -> ExplodingOnTheWayOut {
        ExplodingOnTheWayOut { panics: true }
    }
    async fn stream_give(&self) -> traitrpc_core::Streaming<ExplodingOnTheWayOut> {
        traitrpc_core::Streaming::iter([false, true].map(|panics| ExplodingOnTheWayOut { panics }))
    }
    async fn ok(&self) -> u8 {
        1
    }
}

#[tokio::test]
async fn a_panic_while_decoding_arguments_fails_only_that_call() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", FragileServer::new(FragileImpl))
        .await
        .unwrap();
    let fragile = FragileClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let started = Instant::now();
    match fragile.take(Exploding).await {
        Err(RpcError::HandlerPanicked { message }) => {
            assert!(message.contains("exploded"), "{message}")
        }
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fragile.ok().await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn an_error_answer_too_large_for_the_client_is_cut_to_fit() {
    let server = start(ProbeImpl::default()).await;
    let conn = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default().max_frame_size(64),
    )
    .await
    .unwrap();
    let long_name: &'static str = Box::leak("S".repeat(200).into_boxed_str());
    let method = traitrpc_core::Method::new(long_name, "m");
    let started = Instant::now();
    let error = traitrpc_core::Client::new(conn)
        .call::<_, u8>(&method, &())
        .await
        .unwrap_err();
    assert!(
        matches!(error, RpcError::UnknownService { .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    server.shutdown().await;
}

/// A hand-written service that ends a call without answering it.
struct Forgetful;

impl traitrpc_core::Service for Forgetful {
    fn name(&self) -> &'static str {
        "Forgetful"
    }
    fn methods(&self) -> &'static [&'static str] {
        &["forget"]
    }
    fn call(
        &self,
        method: &str,
        call: traitrpc_core::IncomingCall,
    ) -> Result<traitrpc_core::HandlerFuture, traitrpc_core::DispatchError> {
        if method != "forget" {
            return Err(traitrpc_core::DispatchError::UnknownMethod);
        }
        let reply = call.into_reply();
        Ok(Box::pin(async move {
            drop(reply);
            // Claims an answer it never sent.
            traitrpc_core::Answered::external(0, 0)
        }))
    }
}

#[tokio::test]
async fn a_service_that_never_answers_gives_a_typed_error_not_a_hang() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", Forgetful)
        .await
        .unwrap();
    let client = traitrpc_core::Client::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let method = traitrpc_core::Method::new("Forgetful", "forget");
    let started = Instant::now();
    let error = client.call::<_, ()>(&method, &()).await.unwrap_err();
    assert!(matches!(error, RpcError::Internal { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    server.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_call_id_is_a_protocol_error_naming_the_last_id_seen() {
    let server = start(ProbeImpl::default()).await;
    let (mut raw, _) = raw::handshaken(server.local_addr()).await;
    raw::send_frame(&mut raw, &raw::request(41, "hang", &[])).await;
    raw::send_frame(&mut raw, &raw::request(42, "hang", &[])).await;
    raw::send_frame(&mut raw, &raw::request(42, "hang", &[])).await;
    let (code, last_id) = loop {
        let len = raw.read_u32().await.unwrap() as usize;
        let mut body = vec![0u8; len];
        raw.read_exact(&mut body).await.unwrap();
        if body[0] == protocol::kind::GO_AWAY {
            let id = u64::from_be_bytes(body[2..10].try_into().unwrap());
            break (body[10], id);
        }
    };
    assert_eq!(code, protocol::go_away::PROTOCOL_ERROR);
    assert_eq!(last_id, 42);
    let probe = client(server.local_addr()).await;
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_panic_while_encoding_the_response_answers_handler_panicked_at_once() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", FragileServer::new(FragileImpl))
        .await
        .unwrap();
    let fragile = FragileClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    // A long deadline: the answer must come from the panic, not from waiting it out.
    let error = fragile
        .with_timeout(Duration::from_secs(60))
        .give()
        .await
        .unwrap_err();
    match &error {
        RpcError::HandlerPanicked { message } => {
            assert!(message.contains("Serialize exploded"), "{message}")
        }
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    assert_eq!(error.outcome(), traitrpc_core::CallOutcome::Started);
    // In a stream: the first item arrives, then the call ends with the panic.
    let mut items = fragile
        .with_timeout(Duration::from_secs(60))
        .stream_give()
        .await
        .unwrap();
    use futures::StreamExt;
    assert!(items.next().await.unwrap().is_ok());
    let last = items.next().await.unwrap().unwrap_err();
    assert!(matches!(last, RpcError::HandlerPanicked { .. }), "{last:?}");
    assert!(items.next().await.is_none());
    // The connection and the server are fine.
    assert_eq!(fragile.ok().await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_go_away_code_this_client_does_not_know_is_a_typed_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; HANDSHAKE_LEN];
        stream.read_exact(&mut hello).await.unwrap();
        let reply = ServerHello {
            version: VERSION,
            status: 0,
            max_frame_size: 1 << 20,
        };
        stream.write_all(&reply.encode()).await.unwrap();
        stream
            .write_all(&protocol::Settings::default().encode())
            .await
            .unwrap();
        stream
            .write_all(&protocol::Fingerprints::default().encode())
            .await
            .unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut settings = vec![0u8; len as usize];
        stream.read_exact(&mut settings).await.unwrap();
        // Wait for a request, then go away with a code from the future.
        let _ = stream.read_u32().await;
        // Version 5 layout: kind, flags, call id 0 as a varint.
        let mut body = vec![protocol::kind::GO_AWAY, 0, 0];
        body.push(99);
        body.extend_from_slice(b"moving to the moon");
        stream.write_u32(body.len() as u32).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let probe = client(addr).await;
    match probe.echo(1).await.unwrap_err() {
        RpcError::GoAway { code: 99, message } => assert_eq!(message, "moving to the moon"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_call_on_a_connection_whose_server_is_gone_says_it_never_reconnects() {
    let server = start(ProbeImpl::default()).await;
    let connection = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let probe = ProbeClient::new(connection.clone());
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    server.shutdown().await;
    connection.unusable().await;
    let error = probe.echo(2).await.expect_err("the server is gone");
    assert!(
        matches!(error, RpcError::Unavailable { .. }),
        "never sent: {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("never reconnects") && message.contains("BalancedChannel"),
        "`{message}` should say that a Connection does not come back and what to use"
    );
}
