//! Backpressure is not liveness (issue 21): a server at its in-flight limit goes on
//! reading control frames, so neither side judges a busy peer dead; a frame read behind
//! the limit does not start the frame timeout; and bytes of a frame still arriving count
//! as signs of life, so a large answer over a slow path does not time its call out.
//!
//! Real loopback sockets; the keepalive timers are short so that, without the fix, each
//! test fails within a fraction of the time its calls take, and long enough (a few
//! hundred milliseconds) that a loaded machine's scheduling stalls do not trip them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::{raw, start_with, ProbeClient, ProbeImpl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use traitrpc_core::protocol::{status, Frame};
use traitrpc_core::{codec, ClientConfig, Keepalive, ServerConfig};

/// Ping after 200 ms of silence, give up 200 ms later.
fn eager_keepalive() -> Option<Keepalive> {
    Some(Keepalive::new(
        Duration::from_millis(200),
        Duration::from_millis(200),
    ))
}

/// Four calls of about 8 keepalive periods each on a connection with two slots: two run,
/// two wait. The server must go on reading the client's PINGs and PONGs meanwhile.
async fn four_long_calls_on_two_slots(server_keepalive: Option<Keepalive>) {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default()
            .max_in_flight_per_connection(2)
            .keepalive(server_keepalive),
    )
    .await;
    let connection = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default().keepalive(eager_keepalive()),
    )
    .await
    .unwrap();
    let probe = ProbeClient::new(connection);
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.sleep_echo(1500, i).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64, "call {i}");
    }
    assert_eq!(
        probe.echo(9).await.unwrap(),
        9,
        "the connection is still up"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_at_its_in_flight_limit_does_not_drop_a_live_client() {
    // Both sides ping: the server used to leave the client's PONG unread and drop it.
    four_long_calls_on_two_slots(eager_keepalive()).await;
}

#[tokio::test]
async fn a_client_does_not_judge_a_server_at_its_in_flight_limit_dead() {
    // Only the client pings: the server used to leave its PING unread, and the client
    // failed every call with KeepaliveTimeout.
    four_long_calls_on_two_slots(None).await;
}

fn encoded<T: serde::Serialize>(args: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode_into(args, &mut buf).unwrap();
    buf.to_vec()
}

#[tokio::test]
async fn a_frame_read_behind_the_limit_does_not_start_the_frame_timeout() {
    // One slot and a 100 ms frame timeout; the client sends a slow call and a quick one
    // in one write. The second frame is read with the first: it is complete, and waits
    // for the slot; nothing is trickling.
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default()
            .max_in_flight_per_connection(1)
            .frame_timeout(Duration::from_millis(100)),
    )
    .await;
    let (mut stream, hello) = raw::handshaken(server.local_addr()).await;
    assert_eq!(hello.status, 0);
    let mut both = Vec::new();
    for body in [
        raw::request(1, "sleep_echo", &encoded(&(500u64, 1u64))),
        raw::request(2, "echo", &encoded(&(2u64,))),
    ] {
        both.extend_from_slice(&(body.len() as u32).to_be_bytes());
        both.extend_from_slice(&body);
    }
    stream.write_all(&both).await.unwrap();
    let mut answered = Vec::new();
    while answered.len() < 2 {
        match raw::next_frame(&mut stream).await {
            Some(Frame::Response(response)) => {
                assert_eq!(response.status, status::OK, "call {}", response.id);
                answered.push(response.id);
            }
            Some(Frame::Ping { .. }) => {}
            other => panic!("expected the two answers, got {other:?}"),
        }
    }
    assert_eq!(
        answered,
        vec![1, 2],
        "in order: the second waited for the slot"
    );
    server.shutdown().await;
}

/// A proxy that passes the client's bytes at once and the server's at `rate` bytes per
/// 20 ms: a slow path for answers.
async fn slow_downstream_proxy(target: SocketAddr, rate: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            tokio::spawn(async move {
                let mut chunk = vec![0u8; rate];
                loop {
                    let n = match server_read.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if client_write.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_large_answer_arriving_steadily_over_a_slow_path_is_not_silence() {
    // 512 KiB at 8 KiB per 20 ms: about 1.3 s for one frame, over three times the
    // client's keepalive interval plus timeout. Its bytes arrive all along.
    let server = start_with(ProbeImpl::default(), ServerConfig::default()).await;
    let proxy = slow_downstream_proxy(server.local_addr(), 8 * 1024).await;
    let connection = traitrpc_transport_tcp::connect_with_config(
        proxy,
        ClientConfig::default().keepalive(eager_keepalive()),
    )
    .await
    .unwrap();
    let probe = ProbeClient::new(connection);
    let blob = probe.make_blob(512 * 1024).await.unwrap();
    assert_eq!(blob.len(), 512 * 1024);
    server.shutdown().await;
}
