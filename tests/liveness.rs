//! Liveness (protocol version 3): keepalive pings on both sides, a black-holed peer
//! detected and its calls failed with a typed error, older peers left alone, and a client
//! that falls back to an older server's version.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{raw, start_with, ProbeClient, ProbeImpl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use traitrpc_core::protocol::{
    self, kind, ClientHello, Frame, ServerHello, Settings, HANDSHAKE_LEN,
};
use traitrpc_core::{CallOutcome, ClientConfig, Keepalive, RpcError, ServerConfig};

fn short_keepalive() -> Option<Keepalive> {
    Some(Keepalive::new(
        Duration::from_millis(100),
        Duration::from_millis(200),
    ))
}

/// A server that completes the version 3 handshake, then reads and drops everything and
/// never writes again: a process that hung, or a path that black-holes one direction.
async fn black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; HANDSHAKE_LEN];
                stream.read_exact(&mut hello).await.unwrap();
                let reply = ServerHello {
                    version: protocol::VERSION,
                    status: 0,
                    max_frame_size: 1 << 20,
                };
                stream.write_all(&reply.encode()).await.unwrap();
                stream
                    .write_all(&Settings::default().encode())
                    .await
                    .unwrap();
                stream
                    .write_all(&protocol::Fingerprints::default().encode())
                    .await
                    .unwrap();
                let mut sink = vec![0u8; 64 * 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_black_holed_server_fails_calls_with_a_keepalive_timeout_not_at_their_deadline() {
    let addr = black_hole().await;
    let connection = traitrpc_transport_tcp::connect_with_config(
        addr,
        ClientConfig::default().keepalive(short_keepalive()),
    )
    .await
    .unwrap();
    let probe = ProbeClient::new(connection.clone());
    // A generous deadline: what ends the call must be the keepalive.
    let error = probe
        .with_timeout(Duration::from_secs(60))
        .echo(1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RpcError::KeepaliveTimeout { timeout } if timeout == Duration::from_millis(200)),
        "{error:?}"
    );
    // It may have run: not retried unless idempotent.
    assert_eq!(error.outcome(), CallOutcome::Unknown);
    assert!(error.is_transient());
    assert!(connection.is_closed());
    let later = probe.echo(2).await.unwrap_err();
    assert!(matches!(later, RpcError::Unavailable { .. }), "{later:?}");
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped_by_the_server() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().keepalive(short_keepalive()),
    )
    .await;
    let (mut silent, _) = raw::handshaken(server.local_addr()).await;
    // The server pings, gets nothing back, and closes.
    let mut pinged = false;
    while let Some(frame) = raw::next_frame(&mut silent).await {
        if matches!(frame, Frame::Ping { .. }) {
            pinged = true;
        }
    }
    assert!(pinged, "the server pinged before it gave up");
    assert!(common::eventually(|| server.connections() == 0).await);
    // Everyone else is served.
    let probe = common::client(server.local_addr()).await;
    assert_eq!(probe.echo(3).await.unwrap(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_that_answer_pings_stay_open() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().keepalive(short_keepalive()),
    )
    .await;
    let connection = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default().keepalive(short_keepalive()),
    )
    .await
    .unwrap();
    let probe = ProbeClient::new(connection.clone());
    assert_eq!(probe.echo(1).await.unwrap(), 1);
    // Several keepalive periods of silence from the application.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!connection.is_closed());
    assert_eq!(probe.echo(2).await.unwrap(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_raw_peer_answering_pings_by_hand_stays_open_and_older_clients_are_not_pinged() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().keepalive(short_keepalive()),
    )
    .await;
    // A version 3 peer that answers each PING with its PONG.
    let (mut stream, _) = raw::handshaken(server.local_addr()).await;
    for _ in 0..3 {
        match raw::next_frame(&mut stream).await {
            Some(Frame::Ping { data }) => {
                let mut pong = vec![kind::PONG, 0];
                pong.extend_from_slice(&0u64.to_be_bytes());
                pong.extend_from_slice(&data.to_be_bytes());
                raw::send_frame(&mut stream, &pong).await;
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    raw::send_frame(&mut stream, &raw::request(7, "echo", &[5])).await;
    let answer = loop {
        match raw::next_frame(&mut stream).await {
            Some(Frame::Response(r)) => break r,
            Some(Frame::Ping { .. }) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((answer.id, &answer.payload[..]), (7, &[5u8][..]));

    // A version 2 peer knows no PING: it is never sent one, and silence is not fatal.
    let (mut old, reply) = raw::handshaken_as(server.local_addr(), 2).await;
    assert_eq!(reply.version, 2);
    let quiet = tokio::time::timeout(Duration::from_millis(600), raw_read_any(&mut old)).await;
    assert!(
        quiet.is_err(),
        "nothing is sent to an idle version 2 client"
    );
    raw::send_frame(&mut old, &raw::request(8, "echo", &[6])).await;
    match raw::next_frame(&mut old).await {
        Some(Frame::Response(r)) => assert_eq!((r.id, &r.payload[..]), (8, &[6u8][..])),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

/// Reads one byte (whatever the server sends first).
async fn raw_read_any(stream: &mut TcpStream) -> std::io::Result<u8> {
    stream.read_u8().await
}

/// A server of protocol version 2 (unary only), as a previous release of this crate:
/// it refuses version 3 with its own version, and echoes `Probe.echo` calls.
async fn old_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; HANDSHAKE_LEN];
                if stream.read_exact(&mut hello).await.is_err() {
                    return;
                }
                let hello = ClientHello::decode(&hello).unwrap();
                let accepted = hello.version <= 2;
                let reply = ServerHello {
                    version: if accepted { hello.version } else { 2 },
                    status: if accepted { 0 } else { 1 },
                    max_frame_size: 1 << 20,
                };
                stream.write_all(&reply.encode()).await.unwrap();
                if !accepted {
                    return;
                }
                while let Ok(len) = stream.read_u32().await {
                    let mut body = vec![0u8; len as usize];
                    stream.read_exact(&mut body).await.unwrap();
                    if let Ok(Frame::Request(request)) = Frame::decode(body.into()) {
                        let mut out = vec![kind::RESPONSE, 0];
                        out.extend_from_slice(&request.id.to_be_bytes());
                        out.push(protocol::status::OK);
                        out.extend_from_slice(&request.payload);
                        stream.write_u32(out.len() as u32).await.unwrap();
                        stream.write_all(&out).await.unwrap();
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_client_falls_back_to_an_older_servers_version() {
    let addr = old_server().await;
    let connection = traitrpc_transport_tcp::connect(addr).await.unwrap();
    assert_eq!(connection.protocol_version(), 2);
    let probe = ProbeClient::new(connection);
    assert_eq!(probe.echo(42).await.unwrap(), 42);
    // A single handshake (no fallback) is refused with a typed error instead.
    let pinned = traitrpc_core::Connection::handshake(
        TcpStream::connect(addr).await.unwrap(),
        "old",
        ClientConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            pinned,
            RpcError::VersionMismatch {
                ours: protocol::VERSION,
                theirs: 2
            }
        ),
        "{pinned:?}"
    );
}
