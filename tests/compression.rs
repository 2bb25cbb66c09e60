//! Payload compression (version 5, `docs/PROTOCOL.md` section 23) over loopback:
//! negotiated in the handshake, applied above a threshold and only when it shrinks the
//! payload, on calls and on streams both ways; a decompression bomb is a typed error
//! that harms nobody else.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use traitrpc_core::protocol::{
    self, kind, status, varint, Frame, FrameLayout, ServerHello, Settings,
};
use traitrpc_core::{
    service, ByteBuf, ClientConfig, Compression, RpcError, ServerConfig, Streaming,
};

#[service]
pub trait Documents {
    async fn echo(&self, text: String) -> String;
    async fn blob(&self, data: ByteBuf) -> ByteBuf;
    /// `count` copies of `text`, as a stream.
    async fn repeat(&self, text: String, count: u32) -> Streaming<String>;
    /// The total length of the texts received.
    async fn total(&self, texts: Streaming<String>) -> u64;
}

struct Docs;

impl Documents for Docs {
    async fn echo(&self, text: String) -> String {
        text
    }
    async fn blob(&self, data: ByteBuf) -> ByteBuf {
        data
    }
    async fn repeat(&self, text: String, count: u32) -> Streaming<String> {
        Streaming::iter((0..count).map(move |_| text.clone()))
    }
    async fn total(&self, mut texts: Streaming<String>) -> u64 {
        let mut total = 0;
        while let Some(Ok(text)) = texts.next().await {
            total += text.len() as u64;
        }
        total
    }
}

/// About 64 KiB of JSON-like text.
fn json_text() -> String {
    (0..700)
        .map(|n| {
            format!(
                r#"{{"id":{n},"name":"item {n}","price":{},"tags":["a","b"]}},"#,
                n % 17
            )
        })
        .collect()
}

/// 64 KiB that does not compress.
fn noise() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn lz4() -> (Compression, usize) {
    (Compression::Lz4, 1024)
}

async fn server(compress: bool) -> traitrpc_core::ServerHandle<SocketAddr> {
    let mut config = ServerConfig::default();
    if compress {
        config = config.compression(lz4().0, lz4().1);
    }
    traitrpc_transport_tcp::serve_with_config("127.0.0.1:0", DocumentsServer::new(Docs), config)
        .await
        .unwrap()
}

/// Bytes on the wire for one `echo` of the JSON text and one `blob` of noise.
async fn wire_bytes(server_compresses: bool, client: ClientConfig) -> (u64, u64) {
    let server = server(server_compresses).await;
    let (proxy, counted) = common::counting_proxy(server.local_addr()).await;
    let connection = traitrpc_transport_tcp::connect_with_config(proxy, client)
        .await
        .unwrap();
    let docs = DocumentsClient::new(connection);
    let text = json_text();
    let before = counted.load(Ordering::SeqCst);
    assert_eq!(docs.echo(text.clone()).await.unwrap(), text);
    let for_text = counted.load(Ordering::SeqCst) - before;
    let noise = noise();
    assert_eq!(
        docs.blob(ByteBuf::from(noise.clone()))
            .await
            .unwrap()
            .as_ref(),
        &noise[..]
    );
    let for_noise = counted.load(Ordering::SeqCst) - before - for_text;
    server.shutdown().await;
    (for_text, for_noise)
}

#[tokio::test]
async fn compressible_payloads_shrink_both_ways_and_incompressible_ones_go_as_they_are() {
    let text_len = json_text().len() as u64;
    let noise_len = noise().len() as u64;
    let (plain_text, plain_noise) = wire_bytes(false, ClientConfig::default()).await;
    assert!(plain_text > 2 * text_len, "{plain_text}");
    assert!(plain_noise > 2 * noise_len, "{plain_noise}");

    let compressing = ClientConfig::default().compression(lz4().0, lz4().1);
    let (text, noise_bytes) = wire_bytes(true, compressing.clone()).await;
    assert!(
        text < plain_text / 4,
        "{text} bytes compressed, {plain_text} plain"
    );
    // Sent uncompressed: not a byte more than without compression.
    assert_eq!(noise_bytes, plain_noise);

    // Only the client compresses: the request shrinks, the answer does not.
    let (text, _) = wire_bytes(false, compressing.clone()).await;
    assert!(text < text_len + text_len / 2 && text > text_len, "{text}");
    // A version 4 connection never compresses.
    let (text, _) = wire_bytes(true, compressing.max_protocol_version(4)).await;
    assert!(text > 2 * text_len, "{text}");
}

#[tokio::test]
async fn streams_compress_their_items_both_ways() {
    let server = server(true).await;
    let (proxy, counted) = common::counting_proxy(server.local_addr()).await;
    let config = ClientConfig::default().compression(lz4().0, lz4().1);
    let docs = DocumentsClient::new(
        traitrpc_transport_tcp::connect_with_config(proxy, config)
            .await
            .unwrap(),
    );
    let text = json_text();
    // 40 items of 64 KiB: more than the 256 KiB window uncompressed, so credit is used
    // and granted back.
    let before = counted.load(Ordering::SeqCst);
    let mut items = docs.repeat(text.clone(), 40).await.unwrap();
    let mut received = 0;
    while let Some(item) = items.next().await {
        assert_eq!(item.unwrap(), text);
        received += 1;
    }
    assert_eq!(received, 40);
    let down = counted.load(Ordering::SeqCst) - before;
    assert!(down < 40 * text.len() as u64 / 4, "{down}");

    let before = counted.load(Ordering::SeqCst);
    let texts = Streaming::iter(std::iter::repeat_n(text.clone(), 40));
    assert_eq!(docs.total(texts).await.unwrap(), 40 * text.len() as u64);
    let up = counted.load(Ordering::SeqCst) - before;
    assert!(up < 40 * text.len() as u64 / 4, "{up}");
    server.shutdown().await;
}

/// A version 5 REQUEST body for `service.blob`, naming the method inline, with a compact
/// budget and no metadata.
fn v5_request(id: u64, flags: u8, service: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind::REQUEST, flags | protocol::flags::NAMED];
    varint::put(&mut body, id);
    varint::put(&mut body, 5_000 << 2 | 1);
    body.push(0);
    body.push(service.len() as u8);
    body.extend_from_slice(service.as_bytes());
    body.push(4);
    body.extend_from_slice(b"blob");
    body.push(0);
    body.extend_from_slice(payload);
    body
}

/// A compressed payload of `size` zero bytes: [algorithm, varint size, lz4 block].
fn zeros_compressed(size: usize) -> Vec<u8> {
    let mut payload = vec![Compression::Lz4.id()];
    varint::put(&mut payload, size as u64);
    payload.extend_from_slice(&lz4_flex::block::compress(&vec![0u8; size]));
    payload
}

#[tokio::test]
async fn a_request_that_would_decompress_past_the_limit_is_refused_and_the_connection_lives() {
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        DocumentsServer::new(Docs),
        ServerConfig::default().max_frame_size(1 << 20),
    )
    .await
    .unwrap();
    let (mut raw, hello) = common::raw::handshaken_as(server.local_addr(), 5).await;
    assert_eq!(hello.version, 5);
    let request = |id: u64, flags: u8, payload: &[u8]| v5_request(id, flags, "Documents", payload);
    // 64 MiB of zeros in about 256 KiB, to a server that accepts 1 MiB.
    let bomb = zeros_compressed(64 << 20);
    assert!(bomb.len() < 1 << 20);
    common::raw::send_frame(&mut raw, &request(1, protocol::flags::COMPRESSED, &bomb)).await;
    match next_frame(&mut raw).await {
        Some(Frame::Response(response)) => {
            assert_eq!(
                (response.id, response.status),
                (1, status::INVALID_ARGUMENTS)
            );
            let message = String::from_utf8_lossy(&response.payload);
            assert!(message.contains("over the limit"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same connection still serves: a blob of 1000 zeros, compressed.
    let mut blob = vec![Compression::Lz4.id()];
    let mut args = bytes::BytesMut::new();
    traitrpc_core::codec::encode_into(&(ByteBuf::from(vec![0u8; 1000]),), &mut args).unwrap();
    varint::put(&mut blob, args.len() as u64);
    blob.extend_from_slice(&lz4_flex::block::compress(&args));
    common::raw::send_frame(&mut raw, &request(2, protocol::flags::COMPRESSED, &blob)).await;
    match next_frame(&mut raw).await {
        Some(Frame::Response(response)) => {
            assert_eq!((response.id, response.status), (2, status::OK));
            assert_eq!(&response.payload[..], &args[..], "sent back uncompressed");
        }
        other => panic!("expected an answer, got {other:?}"),
    }
    server.shutdown().await;
}

async fn next_frame(stream: &mut TcpStream) -> Option<Frame> {
    let read = async {
        let len = stream.read_u32().await.ok()? as usize;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        Some(Frame::decode_with(body.into(), FrameLayout::Compact).unwrap())
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the server answered or closed in time")
}

#[tokio::test]
async fn a_response_bomb_fails_its_call_with_a_typed_error() {
    // A version 5 server that answers every request with 64 MiB of compressed zeros.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; protocol::HANDSHAKE_LEN];
        stream.read_exact(&mut hello).await.unwrap();
        let reply = ServerHello {
            version: 5,
            status: 0,
            max_frame_size: 1 << 20,
        };
        stream.write_all(&reply.encode()).await.unwrap();
        let settings = Settings {
            compressions: Some(Compression::supported()),
            ..Settings::default()
        };
        stream.write_all(&settings.encode()).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut block = vec![0u8; len as usize];
        stream.read_exact(&mut block).await.unwrap();
        let bomb = zeros_compressed(64 << 20);
        loop {
            let Ok(len) = stream.read_u32().await else {
                return;
            };
            let mut body = vec![0u8; len as usize];
            stream.read_exact(&mut body).await.unwrap();
            let Ok(Frame::Request(request)) = Frame::decode_with(body.into(), FrameLayout::Compact)
            else {
                continue;
            };
            let mut out = vec![kind::RESPONSE, protocol::flags::COMPRESSED];
            varint::put(&mut out, request.id);
            out.push(status::OK);
            out.extend_from_slice(&bomb);
            stream.write_u32(out.len() as u32).await.unwrap();
            stream.write_all(&out).await.unwrap();
        }
    });
    let connection = traitrpc_transport_tcp::connect_with_config(
        addr,
        ClientConfig::default()
            .max_frame_size(16 << 20)
            .max_protocol_version(5),
    )
    .await
    .unwrap();
    let docs = DocumentsClient::new(connection.clone());
    let error = docs.echo("hello".into()).await.unwrap_err();
    assert!(
        matches!(&error, RpcError::Decompress { reason } if reason.contains("over the limit")),
        "{error}"
    );
    assert!(!connection.is_closed(), "only the call failed");
    let again = docs.echo("again".into()).await.unwrap_err();
    assert!(matches!(again, RpcError::Decompress { .. }), "{again}");
}

#[tokio::test]
async fn a_compressed_request_is_refused_for_what_costs_nothing_before_it_is_decompressed() {
    // A request for a service the server does not have, whose compressed arguments would
    // not even decompress: the refusal that costs nothing (UNKNOWN_SERVICE) comes first,
    // as it does for draining and load shedding; nothing is decompressed for it.
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", DocumentsServer::new(Docs))
        .await
        .unwrap();
    let (mut raw, hello) = common::raw::handshaken_as(server.local_addr(), 5).await;
    assert_eq!(hello.version, 5);
    let mut garbage = vec![Compression::Lz4.id()];
    varint::put(&mut garbage, 100);
    garbage.extend_from_slice(b"not lz4 at all");
    let body = v5_request(1, protocol::flags::COMPRESSED, "Nowhere", &garbage);
    common::raw::send_frame(&mut raw, &body).await;
    match next_frame(&mut raw).await {
        Some(Frame::Response(response)) => {
            assert_eq!((response.id, response.status), (1, status::UNKNOWN_SERVICE))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.shutdown().await;
}
