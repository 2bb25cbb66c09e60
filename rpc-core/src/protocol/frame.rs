//! Frames after the handshake: their layout on each version, decoding (zero-copy) and
//! encoding (in place, into a connection's write buffer).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{flags, kind, status, varint, COMPACT_VERSION, HEADER_LEN, LENGTH_PREFIX_LEN};
use crate::compression::Compressor;
use crate::context::Metadata;
use crate::error::RpcError;

/// How a connection lays out frame headers and request fields; the handshake's version
/// decides it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FrameLayout {
    /// Versions 1 to 4: a 10-byte header (`u64` call id), a `u64` budget in microseconds,
    /// the service and method names on every request, a `u16` metadata count.
    #[default]
    Fixed,
    /// Version 5 (section 22 of `docs/PROTOCOL.md`): varint call id, a compact budget,
    /// method ids bound on the connection, a varint metadata count.
    Compact,
}

impl FrameLayout {
    /// The layout of a connection of protocol `version`.
    pub fn for_version(version: u16) -> Self {
        if version >= COMPACT_VERSION {
            FrameLayout::Compact
        } else {
            FrameLayout::Fixed
        }
    }

    /// The length of a header carrying call `id`.
    pub fn header_len(self, id: u64) -> usize {
        match self {
            FrameLayout::Fixed => HEADER_LEN,
            FrameLayout::Compact => 2 + varint::len(id),
        }
    }

    /// The shortest header.
    fn min_header_len(self) -> usize {
        match self {
            FrameLayout::Fixed => HEADER_LEN,
            FrameLayout::Compact => 3,
        }
    }
}

/// The most method ids a client may bind on one version 5 connection (ids `1..=MAX`);
/// beyond them it names methods inline. It bounds what a server keeps per connection.
pub const MAX_METHOD_IDS: u32 = 1024;

/// What a version 5 request says about the connection's method ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The names are in the request and bind nothing (every request before version 5).
    Inline,
    /// The names are in the request and bind this id to them for later requests.
    Define(u32),
    /// Only the id: the names are those an earlier request bound to it. A decoded
    /// request of this kind has empty names until the connection fills them in.
    Use(u32),
}

/// How a request being sent names its method.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Naming<'a> {
    /// By its names, binding nothing.
    Inline(&'a str, &'a str),
    /// By its names, binding the id (version 5).
    Define(u32, &'a str, &'a str),
    /// By an id bound earlier on the connection (version 5).
    Use(u32),
}

/// A request's budget in a version 5 frame: a varint of `amount << 2 | unit`, the unit
/// `0` microseconds, `1` milliseconds, `2` seconds. The sender rounds up (a budget is
/// never shortened); the reference client uses microseconds under 100 ms, milliseconds
/// under 100 s, seconds above (so rounding adds less than 1%). `0` (in any unit) is "no
/// deadline".
pub(crate) mod budget {
    const MICROS: u64 = 0;
    const MILLIS: u64 = 1;
    const SECONDS: u64 = 2;

    /// The compact form of a budget of `micros` microseconds.
    pub(crate) fn encode(micros: u64) -> u64 {
        if micros < 100_000 {
            micros << 2 | MICROS
        } else if micros < 100_000_000 {
            micros.div_ceil(1_000) << 2 | MILLIS
        } else {
            micros.div_ceil(1_000_000) << 2 | SECONDS
        }
    }

    /// Microseconds from the compact form (saturating); `None` for the reserved unit.
    pub(crate) fn decode(value: u64) -> Option<u64> {
        let amount = value >> 2;
        match value & 3 {
            MICROS => Some(amount),
            MILLIS => Some(amount.saturating_mul(1_000)),
            SECONDS => Some(amount.saturating_mul(1_000_000)),
            _ => None,
        }
    }
}

/// A decoded frame body.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A call.
    Request(RequestFrame),
    /// The outcome of a call.
    Response(ResponseFrame),
    /// The client gave up on call `id`.
    Cancel {
        /// The id of the cancelled call.
        id: u64,
    },
    /// One item of call `id`'s stream.
    StreamItem {
        /// The call the stream belongs to.
        id: u64,
        /// The bincode-encoded item.
        payload: Bytes,
        /// Whether `payload` is compressed (version 5).
        compressed: bool,
    },
    /// The client's stream of call `id` ended.
    StreamEnd {
        /// The call the stream belongs to.
        id: u64,
        /// [`status::OK`], or [`status::ABORTED`] with a message.
        status: u8,
        /// The message of an error status.
        message: String,
    },
    /// The receiver of call `id`'s stream grants `increment` more bytes.
    WindowUpdate {
        /// The call the stream belongs to.
        id: u64,
        /// Bytes granted.
        increment: u32,
    },
    /// The receiver of call `id`'s stream wants no more items.
    StopSending {
        /// The call the stream belongs to.
        id: u64,
    },
    /// A keepalive probe: answer with a `PONG` carrying `data`.
    Ping {
        /// Opaque, echoed in the `PONG`.
        data: u64,
    },
    /// The answer to a `PING`.
    Pong {
        /// The `PING`'s data.
        data: u64,
    },
    /// The sender stops: see [`go_away`](super::go_away).
    GoAway {
        /// One of [`go_away`](super::go_away).
        code: u8,
        /// The highest call id the server had received: calls above it never reached it.
        last_id: u64,
        /// A human-readable reason.
        message: String,
    },
}

/// A call as it arrives at the server. Strings and payload are zero-copy views of the frame.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    /// The call id, unique among the calls in flight on the connection.
    pub id: u64,
    /// See [`flags`].
    pub flags: u8,
    /// The remaining time budget in microseconds; 0 means no deadline.
    pub budget_micros: u64,
    /// The service name (UTF-8, checked).
    pub service: WireStr,
    /// The method name (UTF-8, checked).
    pub method: WireStr,
    /// Whether the names were in the frame, and the method id it binds or uses
    /// (version 5).
    pub binding: Binding,
    /// Whether `payload` is compressed (version 5, [`flags::COMPRESSED`]): the
    /// reference server decompresses it before dispatch.
    pub compressed: bool,
    /// Key/value metadata set by the caller.
    pub metadata: Metadata,
    /// The bincode-encoded arguments.
    pub payload: Bytes,
}

/// A response as it arrives at the client.
#[derive(Debug, Clone)]
pub struct ResponseFrame {
    /// The id of the call this answers.
    pub id: u64,
    /// One of [`status`].
    pub status: u8,
    /// A bincode payload for `OK`/`APPLICATION_ERROR`, a UTF-8 message otherwise.
    pub payload: Bytes,
    /// Whether `payload` is compressed (version 5, [`flags::COMPRESSED`]): the
    /// reference client decompresses it before anyone else sees it.
    pub compressed: bool,
    /// Whether `payload` is JSON (version 6, [`flags::JSON`]): the answer to a call in
    /// JSON by name.
    pub json: bool,
}

/// A UTF-8 string that is a zero-copy slice of a received frame.
#[derive(Clone, PartialEq, Eq)]
pub struct WireStr(Bytes);

impl WireStr {
    fn new(bytes: Bytes) -> Result<Self, RpcError> {
        std::str::from_utf8(&bytes)
            .map_err(|_| RpcError::Protocol("name is not valid UTF-8".into()))?;
        Ok(WireStr(bytes))
    }

    /// A name known at compile time.
    pub(crate) fn from_static(name: &'static str) -> Self {
        WireStr(Bytes::from_static(name.as_bytes()))
    }

    /// The same string in storage of its own, so that keeping it does not keep the
    /// frame it was received in.
    pub(crate) fn detached(&self) -> Self {
        WireStr(Bytes::copy_from_slice(&self.0))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: `WireStr::new` is the only constructor and checked that the bytes are
        // UTF-8; `Bytes` is immutable, so they still are.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::fmt::Debug for WireStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for WireStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn truncated(what: &str) -> RpcError {
    RpcError::Protocol(format!("truncated {what} frame"))
}

impl Frame {
    /// Decodes one frame body (length prefix already removed) of a connection of
    /// version 1 to 4. Never panics; never allocates more than the body's own size.
    pub fn decode(body: Bytes) -> Result<Frame, RpcError> {
        Frame::decode_with(body, FrameLayout::Fixed)
    }

    /// Decodes one frame body laid out as `layout`. Never panics; never allocates more
    /// than the body's own size. A version 5 request that uses a method id has empty
    /// names ([`Binding::Use`]): the connection knows them.
    pub fn decode_with(mut body: Bytes, layout: FrameLayout) -> Result<Frame, RpcError> {
        if body.len() < layout.min_header_len() {
            return Err(RpcError::Protocol(format!(
                "frame of {} bytes is shorter than the {}-byte header",
                body.len(),
                layout.min_header_len()
            )));
        }
        let kind = body.get_u8();
        let flags = body.get_u8();
        let id = match layout {
            FrameLayout::Fixed => body.get_u64(),
            FrameLayout::Compact => varint::take(&mut body, "call id")?,
        };
        match kind {
            kind::REQUEST => decode_request(body, layout, flags, id).map(Frame::Request),
            kind::RESPONSE => {
                if body.is_empty() {
                    return Err(truncated("response"));
                }
                let status = body.get_u8();
                Ok(Frame::Response(ResponseFrame {
                    id,
                    status,
                    payload: body,
                    compressed: compressed(layout, flags),
                    json: layout == FrameLayout::Compact && flags & flags::JSON != 0,
                }))
            }
            kind::CANCEL => Ok(Frame::Cancel { id }),
            kind::STREAM_ITEM => Ok(Frame::StreamItem {
                id,
                payload: body,
                compressed: compressed(layout, flags),
            }),
            kind::STREAM_END => {
                if body.is_empty() {
                    return Err(truncated("stream-end"));
                }
                let status = body.get_u8();
                Ok(Frame::StreamEnd {
                    id,
                    status,
                    message: String::from_utf8_lossy(&body).into_owned(),
                })
            }
            kind::WINDOW_UPDATE => {
                if body.len() < 4 {
                    return Err(truncated("window-update"));
                }
                Ok(Frame::WindowUpdate {
                    id,
                    increment: body.get_u32(),
                })
            }
            kind::STOP_SENDING => Ok(Frame::StopSending { id }),
            kind::PING | kind::PONG => {
                if body.len() < 8 {
                    return Err(truncated("ping"));
                }
                let data = body.get_u64();
                Ok(if kind == kind::PING {
                    Frame::Ping { data }
                } else {
                    Frame::Pong { data }
                })
            }
            kind::GO_AWAY => {
                if body.is_empty() {
                    return Err(truncated("go-away"));
                }
                let code = body.get_u8();
                Ok(Frame::GoAway {
                    code,
                    last_id: id,
                    message: String::from_utf8_lossy(&body).into_owned(),
                })
            }
            other => Err(RpcError::Protocol(format!(
                "unknown message kind 0x{other:02x}"
            ))),
        }
    }
}

/// Whether a frame's payload is compressed: the flag means it from version 5 on.
fn compressed(layout: FrameLayout, flags: u8) -> bool {
    layout == FrameLayout::Compact && flags & flags::COMPRESSED != 0
}

/// The fields of a `REQUEST` after its header.
fn decode_request(
    mut body: Bytes,
    layout: FrameLayout,
    flags: u8,
    id: u64,
) -> Result<RequestFrame, RpcError> {
    let (budget_micros, binding) = match layout {
        FrameLayout::Fixed => {
            if body.len() < 8 + 1 {
                return Err(truncated("request"));
            }
            (body.get_u64(), Binding::Inline)
        }
        FrameLayout::Compact => {
            let budget = budget::decode(varint::take(&mut body, "budget")?)
                .ok_or_else(|| RpcError::Protocol("a budget in the reserved unit 3".into()))?;
            let method_id = varint::take(&mut body, "method id")?;
            if method_id > u64::from(MAX_METHOD_IDS) {
                return Err(RpcError::Protocol(format!(
                    "method id {method_id} is above the limit of {MAX_METHOD_IDS}"
                )));
            }
            let method_id = method_id as u32;
            let binding = match (flags & flags::NAMED != 0, method_id) {
                (true, 0) => Binding::Inline,
                (true, id) => Binding::Define(id),
                (false, 0) => {
                    return Err(RpcError::Protocol(
                        "a request with neither names nor a method id".into(),
                    ))
                }
                (false, id) => Binding::Use(id),
            };
            (budget, binding)
        }
    };
    let (service, method) = if binding == Binding::Inline || flags & flags::NAMED != 0 {
        (
            WireStr::new(take_short(&mut body, "request")?)?,
            WireStr::new(take_short(&mut body, "request")?)?,
        )
    } else {
        (WireStr::from_static(""), WireStr::from_static(""))
    };
    let metadata = Metadata::split_from_wire(&mut body, layout)?;
    Ok(RequestFrame {
        id,
        flags,
        budget_micros,
        service,
        method,
        binding,
        compressed: compressed(layout, flags),
        metadata,
        payload: body,
    })
}

/// Takes a `u8`-length-prefixed byte string off the front of `body`.
fn take_short(body: &mut Bytes, what: &str) -> Result<Bytes, RpcError> {
    if body.is_empty() {
        return Err(truncated(what));
    }
    let len = body.get_u8() as usize;
    if body.len() < len {
        return Err(truncated(what));
    }
    Ok(body.split_to(len))
}

/// How one side writes frames on a connection: the layout, the largest frame the peer
/// accepts, how this side compresses payloads (version 5), and, for one frame, what its
/// call or method chose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    /// The connection's layout.
    pub(crate) layout: FrameLayout,
    /// The peer's maximum frame size (length prefix excluded).
    pub(crate) max_frame_size: usize,
    /// Compresses the payloads of requests, stream items and value-carrying responses.
    pub(crate) compressor: Option<Compressor>,
    /// Whether this frame's call or method asks for compression (`None`: no choice, the
    /// compressor's threshold decides).
    pub(crate) compress: Option<bool>,
}

/// Appends one frame to `buf`: length prefix, header, the kind-specific fields written by
/// `fields`, and the payload written by `payload` (compressed as `framing` says);
/// returns the payload's size. If `payload` fails, panics, or the frame exceeds
/// `max_frame_size`, `buf` is left exactly as it was.
pub(crate) fn write_frame<F, P>(
    buf: &mut BytesMut,
    framing: Framing,
    kind: u8,
    flags: u8,
    id: u64,
    fields: F,
    payload: P,
) -> Result<usize, RpcError>
where
    F: FnOnce(&mut BytesMut),
    P: FnOnce(&mut BytesMut) -> Result<(), RpcError>,
{
    let Framing {
        layout,
        max_frame_size,
        compressor,
        compress,
    } = framing;
    let guard = Rollback::new(buf);
    let start = guard.start;
    let buf = &mut *guard.buf;
    buf.put_u32(0);
    buf.put_u8(kind);
    buf.put_u8(flags);
    match layout {
        FrameLayout::Fixed => buf.put_u64(id),
        FrameLayout::Compact => varint::put(buf, id),
    }
    fields(buf);
    let payload_start = buf.len();
    payload(buf)?;
    if let Some(compressor) = compressor {
        // Values, not the messages of error statuses (a RESPONSE's status is the byte
        // before its payload).
        let carries_value = match kind {
            kind::REQUEST | kind::STREAM_ITEM => true,
            kind::RESPONSE => matches!(
                buf[payload_start - 1],
                status::OK | status::APPLICATION_ERROR
            ),
            _ => false,
        };
        if carries_value && compressor.compress_tail(buf, payload_start, compress) {
            buf[start + LENGTH_PREFIX_LEN + 1] |= flags::COMPRESSED;
        }
    }
    let payload_len = buf.len() - payload_start;
    let size = buf.len() - start - LENGTH_PREFIX_LEN;
    if size > max_frame_size {
        return Err(RpcError::FrameTooLarge {
            size,
            limit: max_frame_size,
        });
    }
    buf[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&(size as u32).to_be_bytes());
    guard.commit();
    Ok(payload_len)
}

/// Truncates a buffer back to where a frame began unless the frame is committed, so an
/// error or a panic half-way through encoding never leaves a partial frame behind.
struct Rollback<'a> {
    buf: &'a mut BytesMut,
    start: usize,
    committed: bool,
}

impl<'a> Rollback<'a> {
    fn new(buf: &'a mut BytesMut) -> Self {
        let start = buf.len();
        Rollback {
            buf,
            start,
            committed: false,
        }
    }

    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.buf.truncate(self.start);
        }
    }
}

/// Writes a request's fields after its header: budget, method, metadata (the payload
/// follows). The flags of the frame must have [`flags::NAMED`] set for
/// [`Naming::Define`], and for [`Naming::Inline`] on version 5 ([`Naming::flags`]).
pub(crate) fn put_request_fields(
    buf: &mut BytesMut,
    layout: FrameLayout,
    budget_micros: u64,
    naming: Naming<'_>,
    metadata: &Metadata,
) {
    let names = match (layout, naming) {
        (FrameLayout::Fixed, Naming::Inline(service, method)) => {
            buf.put_u64(budget_micros);
            Some((service, method))
        }
        (FrameLayout::Fixed, _) => unreachable!("method ids need version 5"),
        (FrameLayout::Compact, naming) => {
            varint::put(buf, budget::encode(budget_micros));
            match naming {
                Naming::Inline(service, method) => {
                    buf.put_u8(0);
                    Some((service, method))
                }
                Naming::Define(id, service, method) => {
                    varint::put(buf, u64::from(id));
                    Some((service, method))
                }
                Naming::Use(id) => {
                    varint::put(buf, u64::from(id));
                    None
                }
            }
        }
    };
    if let Some((service, method)) = names {
        put_short_str(buf, service);
        put_short_str(buf, method);
    }
    metadata.write_to(buf, layout);
}

impl Naming<'_> {
    /// The flag bits this naming needs on a connection laid out as `layout`.
    pub(crate) fn flags(self, layout: FrameLayout) -> u8 {
        match (layout, self) {
            (FrameLayout::Fixed, _) | (_, Naming::Use(_)) => 0,
            (FrameLayout::Compact, _) => flags::NAMED,
        }
    }
}

/// Writes a `u8`-length-prefixed string. Callers guarantee `s.len() <= 255`.
pub(crate) fn put_short_str(buf: &mut BytesMut, s: &str) {
    debug_assert!(s.len() <= u8::MAX as usize);
    buf.put_u8(s.len() as u8);
    buf.put_slice(s.as_bytes());
}

/// `message`, cut at a character boundary so that an error frame carrying it fits in
/// `max_frame_size` (the longest header, a status byte, then the message).
pub(crate) fn fit_message(message: &str, max_frame_size: usize) -> &str {
    let room = max_frame_size.saturating_sub(2 + varint::MAX_LEN + 1);
    if message.len() <= room {
        return message;
    }
    let mut end = room;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::status;

    fn request_bytes(layout: FrameLayout, id: u64, budget: u64, naming: Naming<'_>) -> Bytes {
        let mut buf = BytesMut::new();
        let mut md = Metadata::new();
        md.insert("token", b"abc").unwrap();
        write_frame(
            &mut buf,
            Framing {
                layout,
                max_frame_size: 1024,
                compressor: None,
                compress: None,
            },
            kind::REQUEST,
            flags::IDEMPOTENT | naming.flags(layout),
            id,
            |b| put_request_fields(b, layout, budget, naming, &md),
            |b| {
                b.put_slice(b"args");
                Ok(())
            },
        )
        .unwrap();
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        buf.freeze().slice(4..)
    }

    fn decode_request(body: Bytes, layout: FrameLayout) -> RequestFrame {
        match Frame::decode_with(body, layout).unwrap() {
            Frame::Request(request) => request,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn request_frame_round_trips() {
        let body = request_bytes(FrameLayout::Fixed, 7, 1500, Naming::Inline("Calc", "add"));
        let req = decode_request(body, FrameLayout::Fixed);
        assert_eq!(req.id, 7);
        assert_eq!(req.flags, flags::IDEMPOTENT);
        assert_eq!(req.budget_micros, 1500);
        assert_eq!(req.service.as_str(), "Calc");
        assert_eq!(req.method.as_str(), "add");
        assert_eq!(req.binding, Binding::Inline);
        assert_eq!(req.metadata.get("token"), Some(&b"abc"[..]));
        assert_eq!(&req.payload[..], b"args");
    }

    #[test]
    fn compact_requests_round_trip_with_each_naming() {
        let layout = FrameLayout::Compact;
        for (naming, binding, names) in [
            (
                Naming::Inline("Calc", "add"),
                Binding::Inline,
                ("Calc", "add"),
            ),
            (
                Naming::Define(3, "Calc", "add"),
                Binding::Define(3),
                ("Calc", "add"),
            ),
            (Naming::Use(3), Binding::Use(3), ("", "")),
        ] {
            for id in [0, 1, 127, 128, u64::MAX] {
                let req = decode_request(request_bytes(layout, id, 1500, naming), layout);
                assert_eq!(req.id, id);
                assert_eq!(req.flags & flags::IDEMPOTENT, flags::IDEMPOTENT);
                assert_eq!(req.budget_micros, 1500);
                assert_eq!(req.binding, binding);
                assert_eq!((req.service.as_str(), req.method.as_str()), names);
                assert_eq!(req.metadata.get("token"), Some(&b"abc"[..]));
                assert_eq!(&req.payload[..], b"args");
            }
        }
        // Call id 1, method id 1, no metadata: 2 + 1 + budget + 1 + 1 bytes before the
        // payload.
        let mut buf = BytesMut::new();
        write_frame(
            &mut buf,
            Framing {
                layout,
                max_frame_size: 1024,
                compressor: None,
                compress: None,
            },
            kind::REQUEST,
            0,
            1,
            |b| put_request_fields(b, layout, 1_000_000, Naming::Use(1), &Metadata::new()),
            |b| {
                b.put_slice(&[2, 4]);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            &buf[..],
            [0, 0, 0, 9, 0x01, 0, 0x01, 0xa1, 0x1f, 0x01, 0x00, 0x02, 0x04],
            "docs/PROTOCOL.md, section 22"
        );
    }

    #[test]
    fn compact_budgets_round_up_and_keep_their_unit() {
        for (micros, wire_len, back) in [
            (0u64, 1, 0u64),
            (1, 1, 1),
            (99_999, 3, 99_999),
            (100_000, 2, 100_000),
            (1_000_000, 2, 1_000_000),
            (1_000_001, 2, 1_001_000),
            (30_000_000, 3, 30_000_000),
            (29_999_987, 3, 30_000_000),
            (99_999_999, 3, 100_000_000),
            (100_000_000, 2, 100_000_000),
            (u64::MAX, 7, u64::MAX),
        ] {
            let encoded = budget::encode(micros);
            assert_eq!(varint::len(encoded), wire_len, "{micros}");
            let decoded = budget::decode(encoded).unwrap();
            assert_eq!(decoded, back, "{micros}");
            assert!(decoded >= micros, "a budget is never shortened");
        }
        assert_eq!(budget::decode(3), None, "unit 3 is reserved");
    }

    #[test]
    fn oversized_or_failed_frames_leave_the_buffer_untouched() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let err = write_frame(
            &mut buf,
            Framing {
                layout: FrameLayout::Fixed,
                max_frame_size: 16,
                compressor: None,
                compress: None,
            },
            kind::RESPONSE,
            0,
            1,
            |b| b.put_u8(status::OK),
            |b| {
                b.put_slice(&[0u8; 64]);
                Ok(())
            },
        )
        .unwrap_err();
        assert!(matches!(err, RpcError::FrameTooLarge { limit: 16, .. }));
        assert_eq!(&buf[..], b"keep");
        let err = write_frame(
            &mut buf,
            Framing {
                layout: FrameLayout::Compact,
                max_frame_size: 1024,
                compressor: None,
                compress: None,
            },
            kind::RESPONSE,
            0,
            1,
            |b| b.put_u8(status::OK),
            |_| Err(RpcError::Encode("nope".into())),
        )
        .unwrap_err();
        assert!(matches!(err, RpcError::Encode(_)));
        assert_eq!(&buf[..], b"keep");
    }

    #[test]
    fn malformed_frames_are_protocol_errors() {
        for body in [
            &b""[..],
            &[kind::REQUEST, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
            &[
                kind::REQUEST,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                9,
                b'x',
            ][..],
            &[kind::RESPONSE, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
            &[0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
        ] {
            assert!(
                matches!(
                    Frame::decode(Bytes::copy_from_slice(body)),
                    Err(RpcError::Protocol(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn malformed_compact_frames_are_protocol_errors() {
        let named = flags::NAMED;
        for body in [
            &[kind::REQUEST, 0][..],
            // The call id runs past the end.
            &[kind::REQUEST, 0, 0x80],
            // No budget.
            &[kind::REQUEST, 0, 1],
            // Budget in the reserved unit 3.
            &[kind::REQUEST, 0, 1, 0x03, 1, 0],
            // Neither names nor a method id.
            &[kind::REQUEST, 0, 1, 0, 0, 0],
            // A method id above the limit (1025 = 81 08).
            &[kind::REQUEST, 0, 1, 0, 0x81, 0x08, 0],
            // Names announced, missing.
            &[kind::REQUEST, named, 1, 0, 1],
            &[kind::REQUEST, named, 1, 0, 1, 4, b'C'],
            // No metadata count.
            &[kind::REQUEST, 0, 1, 0, 1],
            // A metadata count above 65535 (65536 = 80 80 04).
            &[kind::REQUEST, 0, 1, 0, 1, 0x80, 0x80, 0x04],
            &[kind::RESPONSE, 0, 1],
            &[kind::GO_AWAY, 0, 1],
            &[kind::PING, 0, 0, 1, 2, 3],
            &[0x7f, 0, 1],
        ] {
            assert!(
                matches!(
                    Frame::decode_with(Bytes::copy_from_slice(body), FrameLayout::Compact),
                    Err(RpcError::Protocol(_))
                ),
                "{body:?}"
            );
        }
    }
}
