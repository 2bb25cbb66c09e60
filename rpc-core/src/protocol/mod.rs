//! The wire protocol: handshake, frame layout and message kinds (specified in
//! `docs/PROTOCOL.md`).
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes of body, exactly
//! what tokio-util's `LengthDelimitedCodec` reads with its defaults. A body starts with a
//! header (kind, flags, call id: 10 bytes up to version 4, a varint id from version 5);
//! the rest depends on the kind (`protocol/frame.rs`). Arguments, return values and application
//! errors are bincode-encoded payloads at the end of a frame, so they are never copied to
//! be wrapped in an envelope.

mod fingerprints;
mod frame;
pub mod varint;

pub use fingerprints::Fingerprints;
pub use frame::*;

use crate::error::RpcError;

/// The four bytes that open both handshake messages.
pub const MAGIC: [u8; 4] = *b"RRPC";
/// The protocol version this implementation speaks: 2 added streaming, 3 settings in the
/// handshake, keepalive pings and stream credit that counts each item's framing, 4 the
/// choice of payload codec (bincode or JSON) in the settings, 5 the compact layout (varint
/// call ids, compact budgets, method ids bound per connection), 6 the server's method
/// fingerprints in the handshake and calls in JSON by name where schemas differ.
pub const VERSION: u16 = 6;
/// The oldest client version the server still accepts (unary calls only).
pub const MIN_VERSION: u16 = 1;
/// The first version with streaming frames.
pub const STREAMING_VERSION: u16 = 2;
/// The first version with [`Settings`] in the handshake, `PING`/`PONG`, and stream credit
/// charged [`STREAM_ITEM_OVERHEAD`] per item.
pub const SETTINGS_VERSION: u16 = 3;
/// Bytes of stream items each side may send on a call before the receiver grants more
/// with `WINDOW_UPDATE` (per call and direction), unless the receiver announced another
/// window in its [`Settings`] (version 3).
pub const INITIAL_STREAM_WINDOW: u32 = 256 * 1024;
/// What a `STREAM_ITEM` costs in credit on top of its payload from version 3: its length
/// prefix and header, so that an empty item is not free.
pub const STREAM_ITEM_OVERHEAD: usize = LENGTH_PREFIX_LEN + HEADER_LEN;
/// The first version whose settings choose the connection's payload codec
/// ([`setting::CODECS`], [`setting::CODEC`]).
pub const CODEC_VERSION: u16 = 4;
/// The first version with the compact frame layout ([`FrameLayout::Compact`]).
pub const COMPACT_VERSION: u16 = 5;
/// The first version whose handshake carries the server's method fingerprints
/// ([`Fingerprints`]) and whose requests may be flagged [`flags::JSON`].
pub const SCHEMA_VERSION: u16 = 6;
/// The largest fingerprint block a server may send.
pub const MAX_FINGERPRINTS_LEN: usize = 1024 * 1024;
/// The largest settings block a peer may send (its `u16` length).
pub const MAX_SETTINGS_LEN: usize = 1024;
/// Length in bytes of each handshake message (client hello and server reply).
pub const HANDSHAKE_LEN: usize = 12;
/// Length in bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Length in bytes of the header every frame body starts with (kind, flags, `u64` id)
/// up to version 4; from version 5 see [`FrameLayout::header_len`].
pub const HEADER_LEN: usize = 10;
/// The default maximum frame size (length prefix excluded): 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Message kinds: the first byte of every frame body.
pub mod kind {
    /// A call, client to server.
    pub const REQUEST: u8 = 0x01;
    /// The outcome of a call, server to client.
    pub const RESPONSE: u8 = 0x02;
    /// The caller gave up on a call (dropped or timed out), client to server.
    pub const CANCEL: u8 = 0x03;
    /// The sender will accept no new calls (graceful shutdown) or is closing on an error.
    pub const GO_AWAY: u8 = 0x04;
    /// One item of a call's stream, either direction (version 2).
    pub const STREAM_ITEM: u8 = 0x10;
    /// The client's stream of a call ended (status + message), client to server
    /// (version 2). A server's stream ends with the call's `RESPONSE`.
    pub const STREAM_END: u8 = 0x11;
    /// The receiver of a call's stream grants the sender more bytes (version 2).
    pub const WINDOW_UPDATE: u8 = 0x12;
    /// The receiver of a call's stream no longer wants items: the sender stops (version 2).
    pub const STOP_SENDING: u8 = 0x13;
    /// Are you there? Either direction (version 3); the peer answers `PONG` at once.
    pub const PING: u8 = 0x05;
    /// The answer to a `PING`, echoing its 8 bytes (version 3).
    pub const PONG: u8 = 0x06;
}

/// Setting identifiers in a version 3 handshake's settings block.
pub mod setting {
    /// `u32`: the credit the sender of this setting grants the peer for each stream the
    /// peer sends it (per call and direction). Absent: [`super::INITIAL_STREAM_WINDOW`].
    pub const STREAM_WINDOW: u8 = 0x01;
    /// `u8`, server to client (version 4): the payload codecs the server accepts, one
    /// bit per [`super::PayloadCodec`] (`1 << id`). Absent: bincode only.
    pub const CODECS: u8 = 0x02;
    /// `u8`, client to server (version 4): the [`super::PayloadCodec`] id of every
    /// payload on the connection, both ways. Absent: bincode.
    pub const CODEC: u8 = 0x03;
    /// `u8`, either direction (version 5): the payload compression algorithms the sender
    /// of the setting can decompress, one bit per [`crate::Compression`] (`1 << id`).
    /// Absent: none.
    pub const COMPRESSIONS: u8 = 0x04;
}

/// How the payloads of a connection (arguments, results, application errors, stream
/// items) are encoded: chosen by the client in its version 4 settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PayloadCodec {
    /// bincode 2, "standard" (section 11 of `docs/PROTOCOL.md`): what generated clients
    /// speak.
    #[default]
    Bincode,
    /// UTF-8 JSON, arguments as an object by parameter name: for callers without the
    /// compiled-in types (command-line tools, other languages).
    Json,
}

impl PayloadCodec {
    /// Its id on the wire.
    pub fn id(self) -> u8 {
        match self {
            PayloadCodec::Bincode => 0,
            PayloadCodec::Json => 1,
        }
    }

    /// The codec with wire id `id`, if there is one.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(PayloadCodec::Bincode),
            1 => Some(PayloadCodec::Json),
            _ => None,
        }
    }

    /// Its bit in a [`setting::CODECS`] mask.
    pub fn bit(self) -> u8 {
        1 << self.id()
    }
}

/// Frame flags: the second byte of every frame body. Unknown bits are ignored.
pub mod flags {
    /// On a request: the method is declared idempotent, so a retry is safe.
    pub const IDEMPOTENT: u8 = 0x01;
    /// On a version 5 request: the service and method names follow the method id (which
    /// they bind, unless it is 0). Without it the request names its method by id only.
    pub const NAMED: u8 = 0x04;
    /// On a version 5 `REQUEST`, `STREAM_ITEM`, or `RESPONSE` with status `OK` or
    /// `APPLICATION_ERROR`: the payload is compressed (see [`crate::compression`]).
    pub const COMPRESSED: u8 = 0x02;
    /// On a version 6 `REQUEST`: the call is in JSON by name (the client's schema of the
    /// method differs from the server's): its payloads both ways are JSON, and the
    /// server's `RESPONSE` carrying a value has the flag too.
    pub const JSON: u8 = 0x08;
}

/// Response status codes. `OK` and `APPLICATION_ERROR` carry a bincode payload; every other
/// status carries a UTF-8 message.
pub mod status {
    /// The call succeeded; the payload is the bincode-encoded return value.
    pub const OK: u8 = 0;
    /// The handler returned `Err(e)`; the payload is the bincode-encoded `e`.
    pub const APPLICATION_ERROR: u8 = 1;
    /// The server hosts no such service.
    pub const UNKNOWN_SERVICE: u8 = 2;
    /// The service has no such method.
    pub const UNKNOWN_METHOD: u8 = 3;
    /// The arguments did not decode as the method's parameter types.
    pub const INVALID_ARGUMENTS: u8 = 4;
    /// The call's deadline passed on the server; the handler was dropped.
    pub const DEADLINE_EXCEEDED: u8 = 5;
    /// The handler panicked.
    pub const HANDLER_PANICKED: u8 = 6;
    /// The server is shutting down and did not finish the call.
    pub const SHUTTING_DOWN: u8 = 7;
    /// The encoded return value exceeded the client's maximum frame size.
    pub const FRAME_TOO_LARGE: u8 = 8;
    /// The return value failed to encode.
    pub const ENCODE_FAILED: u8 = 9;
    /// The service ended the call without answering it (a hand-written service's bug).
    pub const INTERNAL: u8 = 10;
    /// An interceptor refused the call: the caller's credentials are missing or invalid.
    pub const UNAUTHENTICATED: u8 = 11;
    /// An interceptor refused the call: the caller may not make it.
    pub const PERMISSION_DENIED: u8 = 12;
    /// The server is at its concurrency limit and shed the call without running it.
    pub const OVERLOADED: u8 = 13;
    /// A stream was ended with an error by its producer (the message says why).
    pub const ABORTED: u8 = 14;
    /// The handler had started and the server stopped it before it finished (graceful
    /// shutdown past its grace period): it may have had effects, so it is not safe to
    /// retry unless idempotent.
    pub const INTERRUPTED: u8 = 15;
    /// A call in JSON by name (version 6) whose values do not fit this server's schema
    /// of the method: the message names the parameter, field or variant. The handler
    /// did not run.
    pub const SCHEMA_MISMATCH: u8 = 16;
}

/// Go-away codes: why the sender of a `GO_AWAY` frame stops.
pub mod go_away {
    /// Graceful shutdown: calls already received are answered, new ones are refused.
    pub const SHUTTING_DOWN: u8 = 0;
    /// The peer broke the protocol; the connection closes.
    pub const PROTOCOL_ERROR: u8 = 1;
    /// The peer sent a frame over the maximum size; the connection closes.
    pub const FRAME_TOO_LARGE: u8 = 2;
    /// The connection was idle past the server's idle timeout: nothing is running on it;
    /// it closes, and a client opens a new one when it needs to.
    pub const IDLE_TIMEOUT: u8 = 3;
}

/// Status of the server's handshake reply.
pub mod handshake_status {
    /// The connection is accepted.
    pub const ACCEPTED: u8 = 0;
    /// The server does not speak the client's protocol version.
    pub const UNSUPPORTED_VERSION: u8 = 1;
    /// The server is at its connection limit; try again later or elsewhere.
    pub const TOO_MANY_CONNECTIONS: u8 = 2;
}

/// The client's opening message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    /// Protocol version the client speaks.
    pub version: u16,
    /// The largest frame the client accepts.
    pub max_frame_size: u32,
}

/// The server's answer to a [`ClientHello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    /// Protocol version the server speaks.
    pub version: u16,
    /// One of [`handshake_status`].
    pub status: u8,
    /// The largest frame the server accepts.
    pub max_frame_size: u32,
}

impl ClientHello {
    /// The 12 bytes on the wire: magic, version, reserved `u16`, max frame size.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[8..12].copy_from_slice(&self.max_frame_size.to_be_bytes());
        out
    }

    /// Parses the 12 bytes a client sent; fails if the magic is wrong.
    pub fn decode(bytes: &[u8; HANDSHAKE_LEN]) -> Result<Self, RpcError> {
        check_magic(bytes, "client")?;
        Ok(ClientHello {
            version: u16::from_be_bytes([bytes[4], bytes[5]]),
            max_frame_size: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        })
    }
}

impl ServerHello {
    /// The 12 bytes on the wire: magic, version, status, reserved byte, max frame size.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[6] = self.status;
        out[8..12].copy_from_slice(&self.max_frame_size.to_be_bytes());
        out
    }

    /// Parses the 12 bytes a server sent; fails if the magic is wrong.
    pub fn decode(bytes: &[u8; HANDSHAKE_LEN]) -> Result<Self, RpcError> {
        check_magic(bytes, "server")?;
        Ok(ServerHello {
            version: u16::from_be_bytes([bytes[4], bytes[5]]),
            status: bytes[6],
            max_frame_size: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        })
    }
}

/// What each side announces after the 12-byte hellos on a connection of version 3 or
/// later (the server first, then the client; version 4 adds the codec settings): a `u16` length, then entries of `u8` id, `u8` length
/// and value. Unknown ids are skipped, so settings can be added without a version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The window this side grants the peer for each stream it receives
    /// ([`setting::STREAM_WINDOW`]).
    pub stream_window: u32,
    /// The server's accepted payload codecs, a mask of [`PayloadCodec::bit`]s
    /// ([`setting::CODECS`]; `None`: not sent).
    pub accepted_codecs: Option<u8>,
    /// The client's payload codec ([`setting::CODEC`]; `None`: not sent, bincode).
    pub codec: Option<PayloadCodec>,
    /// The compression algorithms this side can decompress
    /// ([`setting::COMPRESSIONS`]; `None`: not sent, none).
    pub compressions: Option<u8>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_window: INITIAL_STREAM_WINDOW,
            accepted_codecs: None,
            codec: None,
            compressions: None,
        }
    }
}

impl Settings {
    /// The block on the wire, its `u16` length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries = Vec::with_capacity(12);
        entries.push(setting::STREAM_WINDOW);
        entries.push(4);
        entries.extend_from_slice(&self.stream_window.to_be_bytes());
        if let Some(mask) = self.accepted_codecs {
            entries.extend_from_slice(&[setting::CODECS, 1, mask]);
        }
        if let Some(codec) = self.codec {
            entries.extend_from_slice(&[setting::CODEC, 1, codec.id()]);
        }
        if let Some(mask) = self.compressions {
            entries.extend_from_slice(&[setting::COMPRESSIONS, 1, mask]);
        }
        let mut out = Vec::with_capacity(2 + entries.len());
        out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
        out.extend_from_slice(&entries);
        out
    }

    /// Parses the entries of a block (its length already read). Unknown ids are skipped;
    /// a truncated entry, a known id of the wrong size, a zero window or an unknown codec
    /// is an error.
    pub fn decode(mut entries: &[u8]) -> Result<Settings, RpcError> {
        let bad = |what: &str| RpcError::Protocol(format!("malformed settings: {what}"));
        let mut settings = Settings::default();
        while !entries.is_empty() {
            if entries.len() < 2 {
                return Err(bad("truncated entry"));
            }
            let (id, len) = (entries[0], entries[1] as usize);
            let Some(value) = entries.get(2..2 + len) else {
                return Err(bad("entry longer than the block"));
            };
            if id == setting::STREAM_WINDOW {
                let value: [u8; 4] = value
                    .try_into()
                    .map_err(|_| bad("the stream window is not 4 bytes"))?;
                settings.stream_window = u32::from_be_bytes(value);
                if settings.stream_window == 0 {
                    return Err(bad("a stream window of 0"));
                }
            } else if id == setting::CODECS {
                let [mask] = value else {
                    return Err(bad("the codec mask is not 1 byte"));
                };
                settings.accepted_codecs = Some(*mask);
            } else if id == setting::CODEC {
                let [codec] = value else {
                    return Err(bad("the codec is not 1 byte"));
                };
                settings.codec =
                    Some(PayloadCodec::from_id(*codec).ok_or_else(|| bad("an unknown codec"))?);
            } else if id == setting::COMPRESSIONS {
                let [mask] = value else {
                    return Err(bad("the compression mask is not 1 byte"));
                };
                settings.compressions = Some(*mask);
            }
            entries = &entries[2 + len..];
        }
        Ok(settings)
    }
}

/// Bytes as text if they are printable ASCII (`"HTTP"`), else in hex (`0x16030100`).
fn shown(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}")
    }
}

fn check_magic(bytes: &[u8], peer: &str) -> Result<(), RpcError> {
    if bytes[..4] == MAGIC {
        Ok(())
    } else {
        Err(RpcError::Protocol(format!(
            "the {peer} does not speak this protocol (it opened with {}, expected \"RRPC\")",
            shown(&bytes[..4])
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_round_trips() {
        let hello = ClientHello {
            version: VERSION,
            max_frame_size: 1234,
        };
        assert_eq!(ClientHello::decode(&hello.encode()).unwrap(), hello);
        let reply = ServerHello {
            version: VERSION,
            status: handshake_status::UNSUPPORTED_VERSION,
            max_frame_size: 99,
        };
        assert_eq!(ServerHello::decode(&reply.encode()).unwrap(), reply);
        assert!(matches!(
            ClientHello::decode(b"GET / HTTP/1"),
            Err(RpcError::Protocol(_))
        ));
    }

    #[test]
    fn settings_round_trip_and_skip_unknown_entries() {
        let settings = Settings {
            stream_window: 1 << 20,
            ..Settings::default()
        };
        let wire = settings.encode();
        assert_eq!(wire, [0, 6, 0x01, 4, 0x00, 0x10, 0x00, 0x00]);
        assert_eq!(Settings::decode(&wire[2..]).unwrap(), settings);
        // An unknown entry (id 0x7f, 3 bytes) before a known one is skipped.
        let with_unknown = [0x7f, 3, 1, 2, 3, 0x01, 4, 0, 0, 0, 64];
        assert_eq!(Settings::decode(&with_unknown).unwrap().stream_window, 64);
        assert_eq!(Settings::decode(&[]).unwrap(), Settings::default());
        for bad in [
            &[0x01][..],
            &[0x01, 4, 0, 0],
            &[0x01, 2, 0, 1],
            &[0x01, 4, 0, 0, 0, 0],
            &[0x02, 2, 0, 3],
            &[0x03, 1, 9],
        ] {
            assert!(
                matches!(Settings::decode(bad), Err(RpcError::Protocol(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn version_4_settings_carry_the_codecs() {
        let server = Settings {
            accepted_codecs: Some(0b11),
            ..Settings::default()
        };
        assert_eq!(
            server.encode(),
            [0, 9, 0x01, 4, 0, 4, 0, 0, 0x02, 1, 0x03],
            "docs/PROTOCOL.md, section 21"
        );
        let client = Settings {
            codec: Some(PayloadCodec::Json),
            ..Settings::default()
        };
        assert_eq!(client.encode(), [0, 9, 0x01, 4, 0, 4, 0, 0, 0x03, 1, 0x01]);
        assert_eq!(Settings::decode(&client.encode()[2..]).unwrap(), client);
        assert_eq!(Settings::decode(&server.encode()[2..]).unwrap(), server);
        for codec in [PayloadCodec::Bincode, PayloadCodec::Json] {
            assert_eq!(PayloadCodec::from_id(codec.id()), Some(codec));
        }
    }
}
