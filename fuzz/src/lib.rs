//! What the fuzz targets share: a generated service with typical argument and return
//! types, one in-memory server that lives for the whole fuzzing run, and the checks that
//! turn "did not panic" into "behaved".
//!
//! Every harness runs on one current-thread runtime, so a run is deterministic enough to
//! replay a crash from its input alone.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};
use traitrpc_core::codec;
use traitrpc_core::memory::Connector;
use traitrpc_core::protocol::{
    self, handshake_status, ClientHello, Frame, ServerHello, Settings, HANDSHAKE_LEN, MIN_VERSION,
    SETTINGS_VERSION, VERSION,
};
use traitrpc_core::{service, ByteBuf, Metadata, Server, ServerConfig};

/// Largest frame the harness servers and clients accept (kept small so the fuzzer's
/// inputs reach the limit).
pub const MAX_FRAME: usize = 64 * 1024;

/// How long a server or client may take to answer or close before the harness calls it
/// a hang.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A nested record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inner {
    /// An integer.
    pub id: u32,
    /// A string.
    pub name: String,
    /// A sequence of strings.
    pub tags: Vec<String>,
    /// An optional float.
    pub score: Option<f64>,
}

/// A record with nested structs, maps, tuples and byte strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// A tuple.
    pub key: (u64, i16),
    /// A nested struct.
    pub inner: Inner,
    /// A sequence of structs.
    pub children: Vec<Inner>,
    /// A map.
    pub attributes: HashMap<String, Vec<u8>>,
    /// A byte string.
    pub blob: ByteBuf,
    /// A boolean.
    pub flag: bool,
}

/// An enum with unit, tuple and struct variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// A unit variant.
    Point,
    /// A tuple variant.
    Circle(f32),
    /// A struct variant.
    Rect {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
    /// A tuple variant with a string.
    Label(String, char),
}

/// An application error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FuzzError {
    /// With a message.
    Refused(String),
    /// With a code.
    Code(i32),
}

/// The service every server-side harness talks to. Each handler is total (no panics,
/// no unbounded work), so any failure the harness sees comes from the framework.
#[service]
pub trait Fuzzed {
    /// No arguments, no value.
    async fn unit(&self);
    /// Two integers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// A string and an integer.
    async fn text(&self, s: String, n: u32) -> String;
    /// A byte string (the `ByteBuf` fast path).
    async fn bytes(&self, data: Vec<u8>) -> u64;
    /// A nested struct, echoed.
    async fn record(&self, r: Record) -> Record;
    /// Sequences, a map and an optional tuple.
    async fn many(
        &self,
        items: Vec<Inner>,
        index: HashMap<String, Vec<u16>>,
        extra: Option<(bool, char, f64)>,
    ) -> usize;
    /// An enum and a tuple; fallible.
    async fn shape(&self, s: Shape, t: (u8, i128, Vec<Option<String>>))
        -> Result<Shape, FuzzError>;
}

/// The implementation.
pub struct FuzzedImpl;

impl Fuzzed for FuzzedImpl {
    async fn unit(&self) {}
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    async fn text(&self, s: String, n: u32) -> String {
        format!("{s}{n}")
    }
    async fn bytes(&self, data: Vec<u8>) -> u64 {
        data.len() as u64
    }
    async fn record(&self, r: Record) -> Record {
        r
    }
    async fn many(
        &self,
        items: Vec<Inner>,
        index: HashMap<String, Vec<u16>>,
        _extra: Option<(bool, char, f64)>,
    ) -> usize {
        items.len() + index.len()
    }
    async fn shape(
        &self,
        s: Shape,
        t: (u8, i128, Vec<Option<String>>),
    ) -> Result<Shape, FuzzError> {
        if t.0.is_multiple_of(2) {
            Ok(s)
        } else {
            Err(FuzzError::Code(t.0 as i32))
        }
    }
}

/// The methods of `Fuzzed`, in declaration order.
pub const METHODS: [&str; 7] = ["unit", "add", "text", "bytes", "record", "many", "shape"];

/// Decodes `payload` as the arguments of `method` the way the generated server does
/// (`IncomingCall::decode_args`, which is `codec::decode` of the argument tuple). `None`
/// for an unknown method.
pub fn decode_args(method: &str, payload: &[u8]) -> Option<bool> {
    type ManyArgs = (
        Vec<Inner>,
        HashMap<String, Vec<u16>>,
        Option<(bool, char, f64)>,
    );
    let ok = match method {
        "unit" => codec::decode::<()>(payload).is_ok(),
        "add" => codec::decode::<(i64, i64)>(payload).is_ok(),
        "text" => codec::decode::<(String, u32)>(payload).is_ok(),
        // The macro decodes a `Vec<u8>` argument as a byte string: the same bytes as a
        // sequence of u8s, which the plain decode must agree with.
        "bytes" => {
            let fast = codec::decode::<(ByteBuf,)>(payload);
            let plain = codec::decode::<(Vec<u8>,)>(payload);
            assert_eq!(
                fast.as_ref().ok().map(|b| b.0.to_vec()),
                plain.as_ref().ok().map(|v| v.0.clone()),
                "ByteBuf and Vec<u8> disagree on {payload:02x?}"
            );
            plain.is_ok()
        }
        "record" => codec::decode::<(Record,)>(payload).is_ok(),
        "many" => codec::decode::<ManyArgs>(payload).is_ok(),
        "shape" => codec::decode::<(Shape, (u8, i128, Vec<Option<String>>))>(payload).is_ok(),
        _ => return None,
    };
    Some(ok)
}

/// Decodes `payload` as each method's return value, as the generated client does
/// (`Client::call` / `call_fallible` decode `OK` and `APPLICATION_ERROR` payloads with
/// `codec::decode`).
pub fn decode_returns(payload: &[u8]) {
    let _ = codec::decode::<()>(payload);
    let _ = codec::decode::<i64>(payload);
    let _ = codec::decode::<String>(payload);
    let _ = codec::decode::<u64>(payload);
    let _ = codec::decode::<Record>(payload);
    let _ = codec::decode::<usize>(payload);
    let _ = codec::decode::<Shape>(payload);
    let _ = codec::decode::<FuzzError>(payload);
    let fast = codec::decode::<ByteBuf>(payload);
    let plain = codec::decode::<Vec<u8>>(payload);
    assert_eq!(
        fast.ok().map(|b| b.to_vec()),
        plain.ok(),
        "ByteBuf and Vec<u8> disagree on {payload:02x?}"
    );
}

/// Reads every part of a decoded frame the way the client and server do, so lazily
/// checked parts (metadata, names) are exercised too.
pub fn touch(frame: &Frame) {
    match frame {
        Frame::Request(request) => {
            let _ = request.service.as_str().len() + request.method.as_str().len();
            let metadata: &Metadata = &request.metadata;
            assert_eq!(metadata.iter().count(), metadata.len());
            for (key, _value) in metadata.iter() {
                assert!(metadata.get(key).is_some());
            }
            let _ = metadata.get_str("authorization");
            let _ = format!("{frame:?}");
        }
        Frame::Response(response) => {
            let _ = String::from_utf8_lossy(&response.payload);
        }
        Frame::GoAway { message, .. } | Frame::StreamEnd { message, .. } => {
            let _ = message.len();
        }
        Frame::StreamItem { payload, .. } => {
            let _ = payload.len();
        }
        _ => {}
    }
}

/// Splits `bytes` into frames with the same codec the connections use; `Err` once the
/// stream is malformed (a length over `max`).
pub fn split_frames(bytes: &[u8], max: usize) -> (Vec<Bytes>, Result<(), ()>) {
    let mut codec = LengthDelimitedCodec::builder()
        .max_frame_length(max)
        .new_codec();
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => frames.push(frame.freeze()),
            Ok(None) => return (frames, Ok(())),
            Err(_) => return (frames, Err(())),
        }
    }
}

/// The runtime every harness runs on.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// The connector of the one server, started on first use, that lives for the whole run:
/// every input is thrown at the same server, which must keep serving.
pub async fn server() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    if let Some(connector) = CONNECTOR.get() {
        return connector;
    }
    let (listener, connector) = traitrpc_core::memory::listener();
    let config = ServerConfig::default()
        .max_frame_size(MAX_FRAME)
        .handshake_timeout(Duration::from_secs(1));
    // Never shut down: it serves until the process exits.
    static HANDLE: OnceLock<traitrpc_core::ServerHandle<()>> = OnceLock::new();
    HANDLE.get_or_init(|| {
        Server::with_config(FuzzedServer::new(FuzzedImpl), config).serve(listener, ())
    });
    CONNECTOR.get_or_init(|| connector)
}

/// Asserts that the long-lived server still serves a well-behaved client on a new
/// connection.
pub async fn assert_server_serves() {
    let connector = server().await;
    let client = FuzzedClient::new(
        connector
            .connect()
            .await
            .expect("the server accepts a new connection"),
    );
    let sum = tokio::time::timeout(PATIENCE, client.add(40, 2))
        .await
        .expect("the server answers in time")
        .expect("the server answers a valid call");
    assert_eq!(sum, 42);
    drop(client);
    settle().await;
}

/// Lets the runtime finish what the iteration left behind (connection tasks winding
/// down after a close), so nothing of one input is still alive when the next starts or
/// when the process exits (LeakSanitizer checks then).
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// What the server sent on one raw connection before it closed.
#[derive(Debug)]
pub struct ServerOutput {
    /// Its handshake reply, if it sent one.
    pub hello: Option<ServerHello>,
    /// Every frame after it, decoded.
    pub frames: Vec<Frame>,
}

/// Reads the server's output on a raw connection until it closes, checking that it is
/// well formed: a 12-byte server hello, then frames that a client can decode and may
/// receive (responses, go-aways). Panics on a hang or on anything malformed.
pub async fn read_server_output(stream: &mut tokio::io::DuplexStream) -> ServerOutput {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("the server closes a connection it is done with")
        .expect("reading a memory pipe");
    parse_server_output(&out)
}

/// Checks and decodes what a server wrote.
pub fn parse_server_output(out: &[u8]) -> ServerOutput {
    if out.is_empty() {
        return ServerOutput {
            hello: None,
            frames: Vec::new(),
        };
    }
    assert!(out.len() >= HANDSHAKE_LEN, "short server hello: {out:02x?}");
    let hello_bytes: [u8; HANDSHAKE_LEN] = out[..HANDSHAKE_LEN].try_into().unwrap();
    let hello = ServerHello::decode(&hello_bytes).expect("the server hello has the magic");
    assert!(
        (MIN_VERSION..=VERSION).contains(&hello.version),
        "the server answered version {}",
        hello.version
    );
    let mut rest = &out[HANDSHAKE_LEN..];
    if hello.status != handshake_status::ACCEPTED {
        assert!(rest.is_empty(), "data after a refused handshake");
    }
    if hello.status == handshake_status::ACCEPTED && hello.version >= SETTINGS_VERSION {
        // Version 3: the server's settings block follows its hello.
        assert!(rest.len() >= 2, "no settings block after a version 3 hello");
        let len = rest.get_u16() as usize;
        assert!(len <= rest.len(), "truncated settings block");
        Settings::decode(&rest[..len]).expect("the server's settings are well formed");
        rest = &rest[len..];
        if hello.version >= protocol::SCHEMA_VERSION {
            // Version 6: the server's method fingerprints follow its settings.
            assert!(
                rest.len() >= 4,
                "no fingerprint block after a version 6 settings block"
            );
            let len = rest.get_u32() as usize;
            assert!(len <= rest.len(), "truncated fingerprint block");
            protocol::Fingerprints::decode(&rest[..len])
                .expect("the server's fingerprints are well formed");
            rest = &rest[len..];
        }
    }
    let mut frames = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "truncated length prefix");
        let len = rest.get_u32() as usize;
        assert!(len <= MAX_FRAME && len <= rest.len(), "truncated frame");
        let layout = protocol::FrameLayout::for_version(hello.version);
        let frame = Frame::decode_with(Bytes::copy_from_slice(&rest[..len]), layout)
            .expect("the server only writes well-formed frames");
        assert!(
            server_may_send(&frame, hello.version),
            "a server sent {frame:?} on a version {} connection",
            hello.version
        );
        rest = &rest[len..];
        frames.push(frame);
    }
    ServerOutput {
        hello: Some(hello),
        frames,
    }
}

/// Whether a server may send `frame` on a connection of protocol `version`: responses
/// and go-aways; from version 2 also stream items, window updates and stop-sending for
/// streaming calls; from version 3 pings and pongs. Never requests, cancels or the
/// client's stream end.
pub fn server_may_send(frame: &Frame, version: u16) -> bool {
    match frame {
        Frame::Response(_) | Frame::GoAway { .. } => true,
        Frame::StreamItem { .. } | Frame::WindowUpdate { .. } | Frame::StopSending { .. } => {
            version >= protocol::STREAMING_VERSION
        }
        Frame::Ping { .. } | Frame::Pong { .. } => version >= SETTINGS_VERSION,
        _ => false,
    }
}

/// Opens a raw connection to the long-lived server.
pub async fn raw_connection() -> tokio::io::DuplexStream {
    server()
        .await
        .connect_raw()
        .expect("the memory listener is alive")
}

/// What this harness's client sends before its frames: its hello (the newest version,
/// so compact frames) and its settings block (sent at once: the server reads it after
/// its reply).
pub fn client_hello() -> Vec<u8> {
    let mut out = ClientHello {
        version: VERSION,
        max_frame_size: MAX_FRAME as u32,
    }
    .encode()
    .to_vec();
    out.extend_from_slice(&Settings::default().encode());
    out
}

/// [`client_hello`] choosing JSON payloads (protocol version 4, `docs/PROTOCOL.md`
/// section 21).
pub fn json_client_hello() -> Vec<u8> {
    let mut out = ClientHello {
        version: protocol::CODEC_VERSION,
        max_frame_size: MAX_FRAME as u32,
    }
    .encode()
    .to_vec();
    let settings = Settings {
        codec: Some(traitrpc_core::protocol::PayloadCodec::Json),
        ..Settings::default()
    };
    out.extend_from_slice(&settings.encode());
    out
}

/// Sends `bytes` on a new raw connection to the long-lived server and half-closes,
/// while reading everything the server sends until it closes.
pub async fn exchange(bytes: &[u8]) -> ServerOutput {
    let stream = raw_connection().await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let send = async {
        // A server that closed first makes this fail; that is its right.
        let _ = writer.write_all(bytes).await;
        let _ = writer.shutdown().await;
    };
    let receive = async {
        let mut out = Vec::new();
        tokio::time::timeout(PATIENCE, reader.read_to_end(&mut out))
            .await
            .expect("the server closes a connection it is done with")
            .expect("reading a memory pipe");
        out
    };
    let ((), out) = tokio::join!(send, receive);
    parse_server_output(&out)
}

/// Sends a client hello and one frame `body` on a new raw connection to the long-lived
/// server, and returns the server's hello and its first answer: the RESPONSE to call `id`
/// or a GO_AWAY. Panics if neither comes.
pub async fn call_raw(body: &[u8], id: u64) -> (ServerHello, Frame) {
    call_raw_after(client_hello(), body, id).await
}

/// [`call_raw`] on a connection opened with `hello` (its hello and settings).
pub async fn call_raw_after(hello: Vec<u8>, body: &[u8], id: u64) -> (ServerHello, Frame) {
    let mut stream = raw_connection().await;
    let mut wire = hello;
    wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
    wire.extend_from_slice(body);
    stream.write_all(&wire).await.expect("the server reads");
    let answer = async {
        let mut hello = [0u8; HANDSHAKE_LEN];
        stream.read_exact(&mut hello).await.expect("a server hello");
        let hello = ServerHello::decode(&hello).expect("the server hello has the magic");
        assert_eq!(hello.status, handshake_status::ACCEPTED);
        let settings = stream.read_u16().await.expect("a settings block") as usize;
        let mut block = vec![0u8; settings];
        stream
            .read_exact(&mut block)
            .await
            .expect("the whole block");
        Settings::decode(&block).expect("well-formed settings");
        if hello.version >= protocol::SCHEMA_VERSION {
            let len = stream.read_u32().await.expect("a fingerprint block") as usize;
            let mut block = vec![0u8; len];
            stream
                .read_exact(&mut block)
                .await
                .expect("the whole block");
            protocol::Fingerprints::decode(&block).expect("well-formed fingerprints");
        }
        let len = stream.read_u32().await.expect("an answer before close") as usize;
        assert!(len <= MAX_FRAME, "a frame over the client's limit");
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.expect("a whole frame");
        let layout = protocol::FrameLayout::for_version(hello.version);
        let frame = Frame::decode_with(body.into(), layout)
            .expect("the server only writes well-formed frames");
        match &frame {
            Frame::Response(r) if r.id == id => (hello, frame),
            Frame::GoAway { .. } => (hello, frame),
            other => panic!("unexpected frame from the server: {other:?}"),
        }
    };
    tokio::time::timeout(PATIENCE, answer)
        .await
        .expect("the server answers every request or says why it will not")
}

/// A REQUEST frame body.
pub fn request_body(id: u64, budget: u64, service: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![protocol::kind::REQUEST, 0];
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&budget.to_be_bytes());
    body.push(service.len() as u8);
    body.extend_from_slice(service.as_bytes());
    body.push(method.len() as u8);
    body.extend_from_slice(method.as_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(payload);
    body
}
