//! Hostile and broken input over real loopback sockets: the offending connection is
//! closed (or the call answered) with a typed reason, the server keeps serving everyone
//! else, and nothing is allocated at a size a peer claims.

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, next_frame, request, send_frame};
use common::{client, eventually, start, start_with, ProbeClient, ProbeImpl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use traitrpc_core::protocol::{
    self, kind, status, ClientHello, Frame, ServerHello, HANDSHAKE_LEN, VERSION,
};
use traitrpc_core::ServerConfig;

/// A raw connection the server accepted.
async fn handshaken(addr: std::net::SocketAddr) -> TcpStream {
    let (stream, reply) = raw::handshaken(addr).await;
    assert_eq!(reply.status, 0);
    stream
}

/// Expects a GO_AWAY with `code`, then the connection closing.
async fn expect_go_away_and_close(stream: &mut TcpStream, code: u8) {
    match next_frame(stream).await {
        Some(Frame::GoAway { code: got, .. }) => assert_eq!(got, code),
        other => panic!("expected GO_AWAY {code}, got {other:?}"),
    }
    assert!(next_frame(stream).await.is_none(), "then the server closes");
}

/// Asserts that a well-behaved client is still served.
async fn still_serving(server: &traitrpc_core::ServerHandle<std::net::SocketAddr>) {
    let probe = client(server.local_addr()).await;
    assert_eq!(probe.echo(42).await.unwrap(), 42);
}

#[tokio::test]
async fn a_handshake_trickled_byte_by_byte_is_cut_off_at_the_handshake_timeout() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().handshake_timeout(Duration::from_millis(500)),
    )
    .await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let hello = ClientHello {
        version: VERSION,
        max_frame_size: 1 << 20,
    }
    .encode();
    let started = Instant::now();
    let mut closed = false;
    for byte in hello {
        if stream.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        closed || rest.is_empty(),
        "no handshake reply to a slowloris peer"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_trickled_byte_by_byte_is_cut_off_by_the_frame_timeout() {
    let server = start_with(
        ProbeImpl::default(),
        ServerConfig::default().frame_timeout(Duration::from_millis(400)),
    )
    .await;
    let mut stream = handshaken(server.local_addr()).await;
    let body = request(1, "echo", &[7]);
    let mut framed = (body.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    let started = Instant::now();
    for byte in &framed[..framed.len() - 1] {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    expect_go_away_and_close(&mut stream, protocol::go_away::IDLE_TIMEOUT).await;
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_cut_off_mid_body_closes_only_that_connection() {
    let server = start(ProbeImpl::default()).await;
    let mut stream = handshaken(server.local_addr()).await;
    stream.write_u32(1000).await.unwrap();
    stream.write_all(&[1u8; 100]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert!(next_frame(&mut stream).await.is_none());
    assert!(eventually(|| server.connections() == 0).await);
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn zero_length_and_unknown_frames_are_protocol_errors() {
    let server = start(ProbeImpl::default()).await;
    for body in [
        &[][..],
        &[0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
        &[kind::RESPONSE, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0][..],
    ] {
        let mut stream = handshaken(server.local_addr()).await;
        send_frame(&mut stream, body).await;
        expect_go_away_and_close(&mut stream, protocol::go_away::PROTOCOL_ERROR).await;
    }
    // Random bytes in a well-formed frame.
    let mut stream = handshaken(server.local_addr()).await;
    let noise: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut noisy = vec![kind::REQUEST, 0];
    noisy.extend_from_slice(&noise);
    send_frame(&mut stream, &noisy).await;
    expect_go_away_and_close(&mut stream, protocol::go_away::PROTOCOL_ERROR).await;
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn undecodable_arguments_are_answered_not_fatal() {
    let server = start(ProbeImpl::default()).await;
    let mut stream = handshaken(server.local_addr()).await;
    // `blob(Vec<u8>)` with: a truncated varint, a 2^60 length claim, trailing garbage.
    let mut huge_claim = vec![253u8];
    huge_claim.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let cases: [&[u8]; 3] = [&[251], &huge_claim, &[1, 9, 9, 9]];
    for (i, payload) in cases.iter().enumerate() {
        let id = i as u64 + 1;
        send_frame(&mut stream, &request(id, "blob", payload)).await;
        match next_frame(&mut stream).await {
            Some(Frame::Response(r)) => {
                assert_eq!((r.id, r.status), (id, status::INVALID_ARGUMENTS))
            }
            other => panic!("expected INVALID_ARGUMENTS, got {other:?}"),
        }
    }
    // The same connection still works.
    send_frame(&mut stream, &request(9, "echo", &[5])).await;
    match next_frame(&mut stream).await {
        Some(Frame::Response(r)) => assert_eq!(
            (r.id, r.status, &r.payload[..]),
            (9, status::OK, &[5u8][..])
        ),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_ignores_responses_it_did_not_ask_for() {
    // A server that answers every request three times: once under a bogus id, then twice
    // under the right one.
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
        let settings_len = stream.read_u16().await.unwrap();
        let mut settings = vec![0u8; settings_len as usize];
        stream.read_exact(&mut settings).await.unwrap();
        loop {
            let Ok(len) = stream.read_u32().await else {
                return;
            };
            let mut body = vec![0u8; len as usize];
            stream.read_exact(&mut body).await.unwrap();
            let Ok(Frame::Request(req)) =
                Frame::decode_with(body.into(), protocol::FrameLayout::Compact)
            else {
                continue;
            };
            for id in [req.id + 1000, req.id, req.id] {
                let mut out = vec![kind::RESPONSE, 0];
                protocol::varint::put(&mut out, id);
                out.push(status::OK);
                out.extend_from_slice(&req.payload);
                stream.write_u32(out.len() as u32).await.unwrap();
                stream.write_all(&out).await.unwrap();
            }
        }
    });
    let probe = ProbeClient::new(traitrpc_transport_tcp::connect(addr).await.unwrap());
    for v in 0..20 {
        assert_eq!(probe.echo(v).await.unwrap(), v);
    }
}

#[tokio::test]
async fn a_peer_that_never_reads_its_answers_is_bounded_and_dropped() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let server = start_with(
        probe_impl,
        ServerConfig::default()
            .max_write_buffer(256 * 1024)
            .write_timeout(Duration::from_millis(500)),
    )
    .await;
    let mut stream = handshaken(server.local_addr()).await;
    // Ask for 256 KiB answers and never read them.
    let writer = tokio::spawn(async move {
        let len_arg = [0xfd, 0, 0, 4, 0, 0, 0, 0, 0]; // varint u64 262144
        for id in 1..=2000u64 {
            let body = request(id, "make_blob", &len_arg);
            let framed = [&(body.len() as u32).to_be_bytes()[..], &body].concat();
            match tokio::time::timeout(Duration::from_secs(15), stream.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => return (id, stream),
            }
        }
        (2000, stream)
    });
    // The server stops reading, then drops the connection once writes stall.
    assert!(
        eventually(|| server.connections() == 0).await || {
            tokio::time::sleep(Duration::from_secs(10)).await;
            server.connections() == 0
        },
        "the connection was dropped"
    );
    still_serving(&server).await;
    writer.abort();
    // Unbounded, the server would have read all 2000 small requests (they fit in the
    // socket buffers) and queued 2000 x 256 KiB = 500 MiB of answers.
    let made = observed
        .blobs_made
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        made < 200,
        "the server stopped reading after {made} answers"
    );
    server.shutdown().await;
}
