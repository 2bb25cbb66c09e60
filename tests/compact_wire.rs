//! Version 5's compact frames (`docs/PROTOCOL.md`, section 22) against a real server over
//! loopback: what a call costs on the wire, method ids bound once per connection, call
//! ids reused, older clients still served, and clients that misuse method ids refused
//! without harm to anyone else.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use traitrpc_core::protocol::{self, go_away, kind, varint, Frame, FrameLayout};
use traitrpc_core::{service, ClientConfig};

#[service]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    /// The call id and names the handler saw.
    async fn seen(&self) -> (u64, String, String);
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn seen(&self) -> (u64, String, String) {
        traitrpc_core::context::with_current(|ctx| {
            (
                ctx.request_id(),
                ctx.service().to_string(),
                ctx.method().to_string(),
            )
        })
        .expect("inside a handler")
    }
}

async fn server() -> traitrpc_core::ServerHandle<SocketAddr> {
    traitrpc_transport_tcp::serve("127.0.0.1:0", CalculatorServer::new(Calc))
        .await
        .unwrap()
}

/// Bytes on the wire per sequential `add(1, 2)` (both directions), after a first call
/// on the connection, with the default 30 s timeout.
async fn bytes_per_add(config: ClientConfig) -> (u64, u16) {
    let server = server().await;
    let (proxy, counted) = common::counting_proxy(server.local_addr()).await;
    let connection = traitrpc_transport_tcp::connect_with_config(proxy, config)
        .await
        .unwrap();
    let calc = CalculatorClient::new(connection.clone());
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    let before = counted.load(Ordering::SeqCst);
    const CALLS: u64 = 1000;
    for _ in 0..CALLS {
        assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    }
    let spent = counted.load(Ordering::SeqCst) - before;
    assert_eq!(spent % CALLS, 0, "every round trip costs the same");
    server.shutdown().await;
    (spent / CALLS, connection.protocol_version())
}

#[tokio::test]
async fn add_1_2_costs_23_bytes_on_the_wire_and_57_on_version_4() {
    // 1001 calls: reused ids keep every call at id 1 (fresh ids would take 2 bytes from
    // the 128th call on).
    let (compact, version) = bytes_per_add(ClientConfig::default().reuse_call_ids(true)).await;
    assert_eq!(version, traitrpc_core::protocol::VERSION);
    // REQUEST: 4 length + kind, flags, call id, budget (3), method id, metadata count,
    // payload (2) = 14; RESPONSE: 4 + kind, flags, call id, status, payload = 9.
    assert_eq!(compact, 23, "issue target: at most 24");
    let (fixed, version) = bytes_per_add(ClientConfig::default().max_protocol_version(4)).await;
    assert_eq!(version, 4);
    assert_eq!(
        fixed, 57,
        "the names, a u64 id and a u64 budget on every call"
    );
}

#[tokio::test]
async fn sequential_calls_reuse_call_id_1_and_the_server_knows_each_bound_method() {
    let server = server().await;
    let connection = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        ClientConfig::default().reuse_call_ids(true),
    )
    .await
    .unwrap();
    let calc = CalculatorClient::new(connection);
    for _ in 0..300 {
        assert_eq!(
            calc.seen().await.unwrap(),
            (1, "Calculator".to_string(), "seen".to_string())
        );
        assert_eq!(calc.add(2, 2).await.unwrap(), 4);
    }
    // Calls in flight together have distinct ids, all small.
    let calls = (0..16).map(|_| calc.seen());
    let mut ids: Vec<u64> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|seen| seen.unwrap().0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 16);
    assert!(ids.iter().all(|&id| id <= 17), "{ids:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_first_calls_on_fresh_connections_bind_in_wire_order() {
    let server = server().await;
    for _ in 0..20 {
        let connection = traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap();
        let calc = CalculatorClient::new(connection);
        let adds = (0..20i64).map(|n| {
            let calc = calc.clone();
            async move { calc.add(n, 1).await.unwrap() == n + 1 }
        });
        let seens = (0..20).map(|_| {
            let calc = calc.clone();
            async move { calc.seen().await.unwrap().2 == "seen" }
        });
        let (adds, seens) = futures::future::join(
            futures::future::join_all(adds),
            futures::future::join_all(seens),
        )
        .await;
        assert!(adds.into_iter().chain(seens).all(|ok| ok));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn older_clients_are_served_on_their_own_version() {
    let server = server().await;
    for version in 1..=4u16 {
        let connection = traitrpc_transport_tcp::connect_with_config(
            server.local_addr(),
            ClientConfig::default().max_protocol_version(version),
        )
        .await
        .unwrap();
        assert_eq!(connection.protocol_version(), version);
        let calc = CalculatorClient::new(connection);
        for n in 0..3 {
            assert_eq!(calc.add(n, 1).await.unwrap(), n + 1);
        }
        let (id, _, method) = calc.seen().await.unwrap();
        assert_eq!(
            (id, method.as_str()),
            (4, "seen"),
            "fresh ids before version 5"
        );
    }
    server.shutdown().await;
}

/// A raw version 5 connection through its handshake.
async fn raw_v5(addr: SocketAddr) -> TcpStream {
    let (stream, hello) = common::raw::handshaken_as(addr, protocol::COMPACT_VERSION).await;
    assert_eq!((hello.status, hello.version), (0, 5));
    stream
}

/// A compact REQUEST body: call `id`, budget 5 s, method id `method_id`, the names if
/// given, no metadata, `payload`.
fn compact_request(
    id: u64,
    method_id: u64,
    names: Option<(&str, &str)>,
    payload: &[u8],
) -> Vec<u8> {
    let flags = if names.is_some() {
        protocol::flags::NAMED
    } else {
        0
    };
    let mut body = vec![kind::REQUEST, flags];
    varint::put(&mut body, id);
    varint::put(&mut body, 5_000 << 2 | 1);
    varint::put(&mut body, method_id);
    if let Some((service, method)) = names {
        body.push(service.len() as u8);
        body.extend_from_slice(service.as_bytes());
        body.push(method.len() as u8);
        body.extend_from_slice(method.as_bytes());
    }
    body.push(0);
    body.extend_from_slice(payload);
    body
}

async fn next_compact_frame(stream: &mut TcpStream) -> Option<Frame> {
    let read = async {
        let len = stream.read_u32().await.ok()? as usize;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        Some(Frame::decode_with(body.into(), FrameLayout::Compact).expect("a well-formed frame"))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the server answered or closed in time")
}

async fn expect_go_away(stream: &mut TcpStream, needle: &str) {
    match next_compact_frame(stream).await {
        Some(Frame::GoAway { code, message, .. }) => {
            assert_eq!(code, go_away::PROTOCOL_ERROR);
            assert!(message.contains(needle), "{message}");
        }
        other => panic!("expected a GO_AWAY, got {other:?}"),
    }
    assert!(next_compact_frame(stream).await.is_none(), "then it closes");
}

#[tokio::test]
async fn misused_method_ids_are_protocol_errors_that_spare_other_connections() {
    let server = server().await;
    let bystander = CalculatorClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    assert_eq!(bystander.add(1, 1).await.unwrap(), 2);

    // Binding on one connection, then using the id: answered.
    let mut raw = raw_v5(server.local_addr()).await;
    let add = [2, 4];
    common::raw::send_frame(
        &mut raw,
        &compact_request(1, 1, Some(("Calculator", "add")), &add),
    )
    .await;
    common::raw::send_frame(&mut raw, &compact_request(2, 1, None, &add)).await;
    for id in [1, 2] {
        match next_compact_frame(&mut raw).await {
            Some(Frame::Response(response)) => {
                assert_eq!((response.id, response.status), (id, protocol::status::OK));
                assert_eq!(&response.payload[..], [6]);
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }
    // Binding the same id again.
    common::raw::send_frame(
        &mut raw,
        &compact_request(3, 1, Some(("Calculator", "seen")), &[]),
    )
    .await;
    expect_go_away(&mut raw, "method id 1 is already bound").await;

    // An id bound on another connection means nothing here.
    let mut raw = raw_v5(server.local_addr()).await;
    common::raw::send_frame(&mut raw, &compact_request(1, 1, None, &add)).await;
    expect_go_away(&mut raw, "method id 1 was never bound").await;

    // An id above the limit.
    let mut raw = raw_v5(server.local_addr()).await;
    let too_high = u64::from(protocol::MAX_METHOD_IDS) + 1;
    common::raw::send_frame(
        &mut raw,
        &compact_request(1, too_high, Some(("Calculator", "add")), &add),
    )
    .await;
    expect_go_away(&mut raw, "above the limit").await;

    // Unknown names bound to an id are answered like unknown names inline, each time.
    let mut raw = raw_v5(server.local_addr()).await;
    common::raw::send_frame(
        &mut raw,
        &compact_request(1, 7, Some(("Calculator", "mul")), &add),
    )
    .await;
    common::raw::send_frame(&mut raw, &compact_request(2, 7, None, &add)).await;
    for id in [1, 2] {
        match next_compact_frame(&mut raw).await {
            Some(Frame::Response(response)) => {
                assert_eq!(
                    (response.id, response.status),
                    (id, protocol::status::UNKNOWN_METHOD)
                );
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }

    assert_eq!(
        bystander.add(2, 3).await.unwrap(),
        5,
        "the bystander is untouched"
    );
    server.shutdown().await;
}
