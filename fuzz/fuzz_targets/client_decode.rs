//! Client-side decoding: arbitrary bytes as return values and application errors
//! (`codec::decode` of a generated service's return types), and as the frames a scripted
//! server sends a real client (in-memory transport) that has one call of each method in
//! flight: responses with any status and payload, for ids it did or did not send,
//! duplicates, go-aways, garbage. Every call must end (with a value or a typed error)
//! once the server closes, without a panic or a hang.
#![no_main]

use std::collections::HashMap;

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use traitrpc_core::protocol::{
    handshake_status, Frame, FrameLayout, ServerHello, COMPACT_VERSION, HANDSHAKE_LEN,
};
use traitrpc_core::{ByteBuf, ClientConfig, Listener};
use traitrpc_fuzz::{
    decode_returns, runtime, split_frames, touch, FuzzedClient, Inner, Record, Shape, MAX_FRAME,
    PATIENCE,
};

/// Calls the client has in flight (one per method).
const CALLS: usize = 7;

fuzz_target!(|data: &[u8]| {
    decode_returns(data);
    let (frames, _) = split_frames(data, MAX_FRAME);
    for body in frames {
        if let Ok(frame) = Frame::decode(body) {
            touch(&frame);
            if let Frame::Response(response) = frame {
                decode_returns(&response.payload);
            }
        }
    }
    // The same script against a client of the fixed layout and one of the compact one.
    for version in [COMPACT_VERSION - 1, COMPACT_VERSION] {
        for body in split_frames(data, MAX_FRAME).0 {
            if let Ok(frame) = Frame::decode_with(body, FrameLayout::for_version(version)) {
                touch(&frame);
            }
        }
        runtime().block_on(against_scripted_server(data, version));
    }
});

async fn against_scripted_server(script: &[u8], version: u16) {
    let (mut listener, connector) = traitrpc_core::memory::listener();
    let server = async move {
        let (stream, _) = listener.accept().await.expect("a connection");
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = reader;
        let mut hello = [0u8; HANDSHAKE_LEN];
        reader.read_exact(&mut hello).await.expect("a client hello");
        let reply = ServerHello {
            version,
            status: handshake_status::ACCEPTED,
            max_frame_size: MAX_FRAME as u32,
        };
        writer.write_all(&reply.encode()).await.expect("hello sent");
        writer
            .write_all(&traitrpc_core::protocol::Settings::default().encode())
            .await
            .expect("settings sent");
        if version >= traitrpc_core::protocol::SCHEMA_VERSION {
            writer
                .write_all(&traitrpc_core::protocol::Fingerprints::default().encode())
                .await
                .expect("fingerprints sent");
        }
        let settings = reader.read_u16().await.expect("the client's settings") as usize;
        let mut block = vec![0u8; settings];
        reader
            .read_exact(&mut block)
            .await
            .expect("the whole block");
        // Wait until every request has arrived, so the script's answers find them.
        let mut requests = FramedRead::new(reader, LengthDelimitedCodec::new());
        for _ in 0..CALLS {
            let body = requests
                .next()
                .await
                .expect("a request")
                .expect("a well-formed request");
            assert!(matches!(
                Frame::decode_with(body.freeze(), FrameLayout::for_version(version)),
                Ok(Frame::Request(_))
            ));
        }
        // The client may close first (for example on a malformed frame).
        let _ = writer.write_all(script).await;
        let _ = writer.shutdown().await;
        // Keep reading until the client is gone (CANCELs may arrive).
        while let Some(Ok(_)) = requests.next().await {}
    };
    let client = async move {
        let conn = connector
            .connect_with_config(
                ClientConfig::default()
                    .max_frame_size(MAX_FRAME)
                    .max_protocol_version(version),
            )
            .await
            .expect("handshake with the scripted server");
        let client = FuzzedClient::new(conn);
        let record = Record {
            key: (1, -1),
            inner: Inner {
                id: 1,
                name: "n".into(),
                tags: vec!["t".into()],
                score: Some(0.5),
            },
            children: Vec::new(),
            attributes: HashMap::new(),
            blob: ByteBuf::from(vec![1, 2, 3]),
            flag: true,
        };
        // Ids 1..=7 in this order: `join!` polls its futures in order.
        let outcomes = tokio::join!(
            client.unit(),
            client.add(1, 2),
            client.text("s".into(), 3),
            client.bytes(vec![9; 4]),
            client.record(record),
            client.many(Vec::new(), HashMap::new(), None),
            client.shape(Shape::Point, (0, 0, Vec::new())),
        );
        // Each ends with a value or a typed error; formatting reads every part.
        let _ = format!("{outcomes:?}");
    };
    tokio::time::timeout(PATIENCE, async { tokio::join!(server, client) })
        .await
        .expect("every call ends once the server closes");
    traitrpc_fuzz::settle().await;
}
