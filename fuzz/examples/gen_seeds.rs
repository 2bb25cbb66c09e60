//! Writes the seed corpus (`fuzz/corpus/<target>/`) from real encodings:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds` from the repository
//! root. The seeds are checked in; rerun this after a protocol change.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use bytes::BytesMut;
use serde::Serialize;
use traitrpc_core::codec::encode_into;
use traitrpc_core::protocol::{
    go_away, handshake_status, kind, status, ClientHello, ServerHello, MIN_VERSION, VERSION,
};
use traitrpc_core::ByteBuf;
use traitrpc_fuzz::{client_hello, request_body, FuzzError, Inner, Record, Shape, MAX_FRAME};

fn enc<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_into(value, &mut buf).unwrap();
    buf.to_vec()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn response(id: u64, code: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind::RESPONSE, 0];
    body.extend_from_slice(&id.to_be_bytes());
    body.push(code);
    body.extend_from_slice(payload);
    body
}

fn control(kind_byte: u8, id: u64, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![kind_byte, 0];
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(rest);
    body
}

fn sample_record() -> Record {
    Record {
        key: (7, -3),
        inner: Inner {
            id: 1,
            name: "Ada".into(),
            tags: vec!["x".into(), "yz".into()],
            score: Some(1.5),
        },
        children: vec![Inner {
            id: 2,
            name: String::new(),
            tags: Vec::new(),
            score: None,
        }],
        attributes: HashMap::from([("k".to_string(), vec![1, 2, 3])]),
        blob: ByteBuf::from(vec![0xAB; 5]),
        flag: true,
    }
}

/// One valid argument payload per method of `Fuzzed`.
fn argument_payloads() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("unit", Vec::new()),
        ("add", enc(&(1i64, -2i64))),
        ("text", enc(&("héllo".to_string(), 300u32))),
        ("bytes", enc(&(vec![1u8, 2, 3, 250],))),
        ("record", enc(&(sample_record(),))),
        (
            "many",
            enc(&(
                vec![sample_record().inner],
                HashMap::from([("i".to_string(), vec![1u16, 65535])]),
                Some((true, 'é', -0.25f64)),
            )),
        ),
        (
            "shape",
            enc(&(
                Shape::Label("l".into(), 'z'),
                (
                    2u8,
                    -170141183460469231731687303715884105728i128,
                    vec![Some("s".to_string()), None],
                ),
            )),
        ),
    ]
}

/// Return values of each method, and application errors.
fn return_payloads() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        enc(&-1i64),
        enc(&"answer".to_string()),
        enc(&u64::MAX),
        enc(&sample_record()),
        enc(&3usize),
        enc(&Shape::Rect { w: 2, h: 300 }),
        enc(&FuzzError::Refused("no".into())),
        enc(&FuzzError::Code(-7)),
        enc(&ByteBuf::from(vec![1, 2, 3])),
        // A string claiming 1 GiB.
        {
            let mut huge = vec![253u8];
            huge.extend_from_slice(&(1u64 << 30).to_le_bytes());
            huge
        },
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dirs = [
        "frame_decoder",
        "handshake",
        "server_decode",
        "client_decode",
    ];
    for dir in dirs {
        let dir = root.join(dir);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
    }
    let requests: Vec<Vec<u8>> = argument_payloads()
        .into_iter()
        .enumerate()
        .map(|(i, (method, payload))| {
            request_body(i as u64 + 1, 1_000_000, "Fuzzed", method, &payload)
        })
        .collect();
    let mut with_metadata = request_body(9, 0, "Fuzzed", "add", &enc(&(1i64, 2i64)));
    // Replace the empty metadata (the 2 bytes before the payload) with two entries.
    let payload_len = enc(&(1i64, 2i64)).len();
    let at = with_metadata.len() - payload_len - 2;
    with_metadata.splice(
        at..at + 2,
        [
            0, 2, 5, b't', b'o', b'k', b'e', b'n', 0, 3, b'a', b'b', b'c', 1, b'k', 0, 0,
        ],
    );

    // frame_decoder: streams of framed bodies of every kind, and edge cases.
    let fd = root.join("frame_decoder");
    for (i, body) in requests.iter().enumerate() {
        write(&fd, &format!("request-{i}"), &framed(body));
    }
    write(&fd, "request-metadata", &framed(&with_metadata));
    write(
        &fd,
        "response-ok",
        &framed(&response(1, status::OK, &enc(&3i64))),
    );
    write(&fd, "cancel", &framed(&control(kind::CANCEL, 2, &[])));
    write(
        &fd,
        "go-away",
        &framed(&control(
            kind::GO_AWAY,
            5,
            &[go_away::SHUTTING_DOWN, b'b', b'y', b'e'],
        )),
    );
    let mut stream = Vec::new();
    for body in &requests {
        stream.extend(framed(body));
    }
    write(&fd, "stream", &stream);
    let mut stream_frames = Vec::new();
    stream_frames.extend(framed(&control(kind::STREAM_ITEM, 1, &enc(&5u64))));
    stream_frames.extend(framed(&control(kind::STREAM_END, 1, &[status::OK])));
    stream_frames.extend(framed(&control(
        kind::WINDOW_UPDATE,
        1,
        &65536u32.to_be_bytes(),
    )));
    stream_frames.extend(framed(&control(kind::STOP_SENDING, 1, &[])));
    write(&fd, "stream-frames", &stream_frames);
    // Version 3 keepalive frames.
    let mut pings = framed(&control(kind::PING, 0, &7u64.to_be_bytes()));
    pings.extend(framed(&control(kind::PONG, 0, &7u64.to_be_bytes())));
    write(&fd, "ping-pong", &pings);
    write(&fd, "zero-length", &framed(&[]));
    write(&fd, "over-limit", &u32::MAX.to_be_bytes());
    write(&fd, "truncated", &framed(&requests[1])[..20]);

    // handshake: hellos of every kind, then traffic.
    let hs = root.join("handshake");
    let hello = client_hello();
    write(&hs, "hello", &hello);
    let mut hello_then_calls = hello.to_vec();
    hello_then_calls.extend(stream.iter());
    write(&hs, "hello-then-calls", &hello_then_calls);
    let mut hello_then_garbage = hello.to_vec();
    hello_then_garbage.extend(framed(&[0x7f; 12]));
    write(&hs, "hello-then-garbage", &hello_then_garbage);
    let mut v1_then_calls = ClientHello {
        version: MIN_VERSION,
        max_frame_size: 1 << 16,
    }
    .encode()
    .to_vec();
    v1_then_calls.extend(stream.iter());
    write(&hs, "version-1-then-calls", &v1_then_calls);
    let mut hello_then_streams = hello.to_vec();
    hello_then_streams.extend(stream_frames.iter());
    write(&hs, "hello-then-stream-frames", &hello_then_streams);
    let mut hello_then_pings = hello.to_vec();
    hello_then_pings.extend(pings.iter());
    hello_then_pings.extend(stream.iter());
    write(&hs, "hello-then-pings-and-calls", &hello_then_pings);
    let mut v2_then_calls = ClientHello {
        version: 2,
        max_frame_size: 1 << 16,
    }
    .encode()
    .to_vec();
    v2_then_calls.extend(stream.iter());
    write(&hs, "version-2-then-calls", &v2_then_calls);
    // A version 3 hello with odd settings: an unknown entry, a large window.
    let mut odd_settings = ClientHello {
        version: VERSION,
        max_frame_size: 1 << 16,
    }
    .encode()
    .to_vec();
    odd_settings.extend_from_slice(&[0, 11, 0x7f, 3, 1, 2, 3, 0x01, 4, 0, 0x10, 0, 0]);
    odd_settings.extend(stream.iter());
    write(&hs, "odd-settings-then-calls", &odd_settings);
    write(
        &hs,
        "future-version",
        &ClientHello {
            version: VERSION + 1,
            max_frame_size: 1 << 20,
        }
        .encode(),
    );
    write(
        &hs,
        "tiny-frame-limit",
        &ClientHello {
            version: VERSION,
            max_frame_size: 1,
        }
        .encode(),
    );
    write(
        &hs,
        "server-hello",
        &ServerHello {
            version: VERSION,
            status: handshake_status::ACCEPTED,
            max_frame_size: MAX_FRAME as u32,
        }
        .encode(),
    );
    write(&hs, "http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    write(
        &hs,
        "tls-client-hello",
        &[
            0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03, 0x00,
        ],
    );

    // server_decode: request bodies (no length prefix), valid and not.
    let sd = root.join("server_decode");
    for (i, body) in requests.iter().enumerate() {
        write(&sd, &format!("request-{i}"), body);
    }
    write(&sd, "request-metadata", &with_metadata);
    write(
        &sd,
        "unknown-service",
        &request_body(1, 0, "Nope", "add", &[]),
    );
    write(
        &sd,
        "unknown-method",
        &request_body(1, 0, "Fuzzed", "mul", &[]),
    );
    write(
        &sd,
        "wrong-types",
        &request_body(1, 0, "Fuzzed", "text", &enc(&(1i64, 2i64))),
    );
    let mut gib = vec![253u8];
    gib.extend_from_slice(&(1u64 << 30).to_le_bytes());
    write(
        &sd,
        "gigabyte-string",
        &request_body(1, 0, "Fuzzed", "text", &gib),
    );
    write(&sd, "unknown-kind", &control(0x7f, 1, &[]));

    // client_decode: responses to calls 1..=7 (one per method, in order), then extras.
    let cd = root.join("client_decode");
    let returns = [
        (1u64, status::OK, Vec::new()),
        (2, status::OK, enc(&3i64)),
        (3, status::OK, enc(&"s3".to_string())),
        (4, status::OK, enc(&4u64)),
        (5, status::OK, enc(&sample_record())),
        (6, status::OK, enc(&0usize)),
        (7, status::APPLICATION_ERROR, enc(&FuzzError::Code(1))),
    ];
    let mut all = Vec::new();
    for (id, code, payload) in &returns {
        all.extend(framed(&response(*id, *code, payload)));
    }
    write(&cd, "all-answered", &all);
    let mut odd = Vec::new();
    odd.extend(framed(&response(99, status::OK, &enc(&1i64)))); // never sent
    odd.extend(framed(&response(2, status::OK, &enc(&5i64))));
    odd.extend(framed(&response(2, status::OK, &enc(&6i64)))); // duplicate
    odd.extend(framed(&response(3, status::INVALID_ARGUMENTS, b"bad")));
    odd.extend(framed(&response(4, 200, b"from the future")));
    odd.extend(framed(&control(kind::PING, 0, &9u64.to_be_bytes()))); // answered with a PONG
    odd.extend(framed(&response(
        1,
        status::INTERRUPTED,
        b"grace period over",
    )));
    odd.extend(framed(&response(5, status::OK, &gib)));
    odd.extend(framed(&control(kind::STREAM_ITEM, 6, &enc(&1u64)))); // not a streaming call
    odd.extend(framed(&control(
        kind::WINDOW_UPDATE,
        6,
        &1u32.to_be_bytes(),
    )));
    odd.extend(framed(&control(
        kind::GO_AWAY,
        5,
        &[go_away::SHUTTING_DOWN],
    )));
    write(&cd, "odd-answers", &odd);
    write(&cd, "request-from-server", &framed(&requests[0]));
    for (i, payload) in return_payloads().iter().enumerate() {
        write(&cd, &format!("return-{i}"), payload);
    }
    println!("seed corpus written to {}", root.display());
}
