//! Micro-benchmarks of the bytes of a call: encoding and decoding a request and a response
//! envelope, and the byte-buffer fast path against a plain `Vec<u8>` for 1 MiB.
//!
//! `cargo bench --bench codec` (see `benches/README.md`).
//!
//! Decoding goes through the public API (`protocol::Frame::decode`, then `codec::decode`
//! of the payload). Encoding a frame has no public entry point in `traitrpc-core` (the
//! connection's outbox writes frames in place), so the envelope is written here exactly as
//! `docs/PROTOCOL.md` (sections 3-5) specifies and as the outbox does it: length prefix,
//! header, kind-specific fields, then the bincode payload straight into the same reused
//! buffer with `codec::encode_into`, and the length patched in at the end.

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use traitrpc_core::protocol::{kind, status, Frame, LENGTH_PREFIX_LEN};
use traitrpc_core::{codec, ByteBuf};

/// Metadata entries: key, value.
type Entries<'a> = [(&'a str, &'a [u8])];

/// A request: `Calculator.add(a, b)` with a 30 s budget and optional metadata entries.
fn encode_request(buf: &mut BytesMut, id: u64, metadata: &Entries, args: &(i64, i64)) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_u8(kind::REQUEST);
    buf.put_u8(0);
    buf.put_u64(id);
    buf.put_u64(30_000_000);
    for name in ["Calculator", "add"] {
        buf.put_u8(name.len() as u8);
        buf.put_slice(name.as_bytes());
    }
    buf.put_u16(metadata.len() as u16);
    for (key, value) in metadata {
        buf.put_u8(key.len() as u8);
        buf.put_slice(key.as_bytes());
        buf.put_u16(value.len() as u16);
        buf.put_slice(value);
    }
    codec::encode_into(args, buf).expect("encode");
    patch_length(buf, start);
}

/// A response: status OK and the bincode of `value`.
fn encode_response<T: serde::Serialize>(buf: &mut BytesMut, id: u64, value: &T) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_u8(kind::RESPONSE);
    buf.put_u8(0);
    buf.put_u64(id);
    buf.put_u8(status::OK);
    codec::encode_into(value, buf).expect("encode");
    patch_length(buf, start);
}

fn patch_length(buf: &mut BytesMut, start: usize) {
    let len = (buf.len() - start - LENGTH_PREFIX_LEN) as u32;
    buf[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
}

/// The body of the one frame in `buf` (length prefix removed), as the reader hands it over.
fn body(buf: BytesMut) -> Bytes {
    buf.freeze().slice(LENGTH_PREFIX_LEN..)
}

fn envelopes(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    let token: &[u8] = b"Bearer 0123456789abcdef0123456789abcdef";
    let with_token = [("authorization", token)];
    let cases: [(&str, &Entries); 2] = [("no-metadata", &[]), ("1-metadata", &with_token)];
    for (name, metadata) in &cases {
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function(BenchmarkId::new("request-encode", name), |b| {
            b.iter(|| {
                buf.clear();
                encode_request(&mut buf, black_box(7), metadata, black_box(&(1, 2)));
                black_box(buf.len())
            })
        });
        let mut one = BytesMut::new();
        encode_request(&mut one, 7, metadata, &(1, 2));
        let frame = body(one);
        group.bench_function(BenchmarkId::new("request-decode", name), |b| {
            b.iter(|| {
                let Ok(Frame::Request(request)) = Frame::decode(black_box(frame.clone())) else {
                    panic!("not a request")
                };
                let args: (i64, i64) = codec::decode(&request.payload).expect("decode");
                black_box((request.id, request.method.as_str().len(), args))
            })
        });
    }

    let mut buf = BytesMut::with_capacity(4096);
    group.bench_function("response-encode/i64", |b| {
        b.iter(|| {
            buf.clear();
            encode_response(&mut buf, black_box(7), black_box(&3i64));
            black_box(buf.len())
        })
    });
    let mut one = BytesMut::new();
    encode_response(&mut one, 7, &3i64);
    let frame = body(one);
    group.bench_function("response-decode/i64", |b| {
        b.iter(|| {
            let Ok(Frame::Response(response)) = Frame::decode(black_box(frame.clone())) else {
                panic!("not a response")
            };
            let value: i64 = codec::decode(&response.payload).expect("decode");
            black_box((response.id, response.status, value))
        })
    });
    group.finish();
}

/// 1 MiB as `ByteBuf` (one byte string) and as `Vec<u8>` (serde: one `u8` at a time).
fn byte_buffers(c: &mut Criterion) {
    const MIB: usize = 1024 * 1024;
    let mut group = c.benchmark_group("1MiB");
    group.throughput(Throughput::Bytes(MIB as u64));
    let vec: Vec<u8> = (0..MIB).map(|i| i as u8).collect();
    let bytebuf = ByteBuf::from(vec.clone());
    let mut buf = BytesMut::with_capacity(2 * MIB);

    group.bench_function("encode/ByteBuf", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_into(black_box(&bytebuf), &mut buf).expect("encode");
            black_box(buf.len())
        })
    });
    group.bench_function("encode/Vec<u8>", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_into(black_box(&vec), &mut buf).expect("encode");
            black_box(buf.len())
        })
    });

    buf.clear();
    codec::encode_into(&bytebuf, &mut buf).expect("encode");
    let encoded = buf.clone().freeze();
    group.bench_function("decode/ByteBuf", |b| {
        b.iter(|| black_box(codec::decode::<ByteBuf>(black_box(&encoded)).expect("decode")))
    });
    group.bench_function("decode/Vec<u8>", |b| {
        b.iter(|| black_box(codec::decode::<Vec<u8>>(black_box(&encoded)).expect("decode")))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = envelopes, byte_buffers
}
criterion_main!(benches);
