"""Byte-level encoding of the native wire protocol (docs/PROTOCOL.md, version 4).

This module knows nothing about sockets or asyncio: it turns handshakes, settings blocks
and frames into bytes and back. Every function names the PROTOCOL.md section it follows.
All integers in the handshake and in frame headers are big-endian (PROTOCOL.md,
"Conventions"); payloads are JSON text (section 21), which this module treats as opaque
bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple, Union

# --- Handshake (section 2) -------------------------------------------------------------

#: The 4 magic bytes that open both hellos (section 2.1).
MAGIC = b"RRPC"
#: The protocol version this client speaks: version 4 adds the JSON codec (section 17).
VERSION = 4
#: Length of each hello (section 2).
HELLO_SIZE = 12
#: The smallest max frame size a peer may announce (section 3).
MIN_FRAME_SIZE = 64
#: The largest max frame size that fits the u32 field (section 3).
MAX_FRAME_SIZE = 0xFFFF_FFFF
#: Both reference implementations default to 16 MiB (section 3).
DEFAULT_MAX_FRAME_SIZE = 16 << 20

#: Server hello status: the connection is accepted (section 2.2).
HELLO_ACCEPTED = 0
#: Server hello status: the server does not speak the client's version (section 2.2).
HELLO_UNSUPPORTED_VERSION = 1
#: Server hello status: the server is at its connection limit (section 2.2).
HELLO_TOO_MANY_CONNECTIONS = 2

# --- Settings (section 19) -------------------------------------------------------------

#: The largest settings block (bytes of entries) a peer may send (section 19).
MAX_SETTINGS_LENGTH = 1024
#: Setting id: the credit the sender of the setting grants per stream (section 19).
SETTING_STREAM_WINDOW = 0x01
#: Setting id (server to client): mask of the payload codecs the server accepts.
SETTING_CODECS = 0x02
#: Setting id (client to server): the codec of every payload on the connection.
SETTING_CODEC = 0x03
#: The stream window when a peer does not announce one (sections 18.3 and 19).
DEFAULT_STREAM_WINDOW = 262_144
#: Payload codec id of bincode (section 21).
CODEC_BINCODE = 0
#: Payload codec id of JSON (section 21).
CODEC_JSON = 1

# --- Frames (sections 3 to 6, 18, 20) --------------------------------------------------

#: Every frame body starts with kind (u8), flags (u8) and call id (u64 BE) (section 4).
HEADER_SIZE = 10

KIND_REQUEST = 0x01
KIND_RESPONSE = 0x02
KIND_CANCEL = 0x03
KIND_GO_AWAY = 0x04
KIND_PING = 0x05
KIND_PONG = 0x06
KIND_STREAM_ITEM = 0x10
KIND_STREAM_END = 0x11
KIND_WINDOW_UPDATE = 0x12
KIND_STOP_SENDING = 0x13

#: Human-readable names of the message kinds, for error messages.
KIND_NAMES = {
    KIND_REQUEST: "REQUEST",
    KIND_RESPONSE: "RESPONSE",
    KIND_CANCEL: "CANCEL",
    KIND_GO_AWAY: "GO_AWAY",
    KIND_PING: "PING",
    KIND_PONG: "PONG",
    KIND_STREAM_ITEM: "STREAM_ITEM",
    KIND_STREAM_END: "STREAM_END",
    KIND_WINDOW_UPDATE: "WINDOW_UPDATE",
    KIND_STOP_SENDING: "STOP_SENDING",
}

#: REQUEST flag: the caller declares the method safe to retry (section 6).
FLAG_IDEMPOTENT = 0x01

#: What each stream item costs in credit on top of its payload, from version 3: its
#: 4-byte length prefix and 10-byte header (section 18.3).
STREAM_ITEM_OVERHEAD = 14

#: The size of a PING / PONG body after the header (section 20).
PING_DATA_SIZE = 8

# --- Status codes (section 7) and go-away codes (section 8) ----------------------------

STATUS_OK = 0
STATUS_APPLICATION_ERROR = 1
STATUS_UNKNOWN_SERVICE = 2
STATUS_UNKNOWN_METHOD = 3
STATUS_INVALID_ARGUMENTS = 4
STATUS_DEADLINE_EXCEEDED = 5
STATUS_HANDLER_PANICKED = 6
STATUS_SHUTTING_DOWN = 7
STATUS_FRAME_TOO_LARGE = 8
STATUS_ENCODE_FAILED = 9
STATUS_INTERNAL = 10
STATUS_UNAUTHENTICATED = 11
STATUS_PERMISSION_DENIED = 12
STATUS_OVERLOADED = 13
STATUS_ABORTED = 14
STATUS_INTERRUPTED = 15

GO_AWAY_SHUTTING_DOWN = 0
GO_AWAY_PROTOCOL_ERROR = 1
GO_AWAY_FRAME_TOO_LARGE = 2
GO_AWAY_IDLE_TIMEOUT = 3

_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


class FrameError(ValueError):
    """Bytes that do not follow the protocol (raised by the decoders of this module)."""


# --- Handshake -------------------------------------------------------------------------


def encode_client_hello(max_frame_size: int, version: int = VERSION) -> bytes:
    """The 12-byte client hello (section 2.1): magic, version, reserved `00 00`, and the
    largest frame body this client accepts."""
    if not MIN_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE:
        raise ValueError(
            f"max_frame_size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE}, "
            f"not {max_frame_size}"
        )
    return MAGIC + struct.pack(">HHI", version, 0, max_frame_size)


@dataclass(frozen=True)
class ServerHello:
    """The fields of a server hello (section 2.2)."""

    magic: bytes
    version: int
    status: int
    max_frame_size: int


def decode_server_hello(data: bytes) -> ServerHello:
    """Splits the 12 bytes of a server hello (section 2.2) into its fields. It does not
    judge them: the checks of section 2.4 are the caller's."""
    if len(data) != HELLO_SIZE:
        raise FrameError(f"a server hello has {HELLO_SIZE} bytes, not {len(data)}")
    version, status, _reserved, max_frame_size = struct.unpack(">HBBI", data[4:])
    return ServerHello(bytes(data[:4]), version, status, max_frame_size)


@dataclass(frozen=True)
class Settings:
    """A decoded settings block (section 19). Absent settings have their defaults."""

    #: STREAM_WINDOW: the credit the sender of the block grants per stream.
    stream_window: int = DEFAULT_STREAM_WINDOW
    #: CODECS (server to client): bit `1 << id` per accepted codec; absent = bincode only.
    codecs: int = 1 << CODEC_BINCODE
    #: CODEC (client to server): the chosen codec id; absent = bincode.
    codec: int = CODEC_BINCODE
    #: The ids present in the block, in order, unknown ones included.
    ids: Tuple[int, ...] = field(default=())


def encode_settings(entries: Sequence[Tuple[int, bytes]]) -> bytes:
    """A settings block (section 19): u16 BE length of the entries, then each entry as
    u8 id, u8 value length, value."""
    body = b"".join(bytes([ident, len(value)]) + value for ident, value in entries)
    if len(body) > MAX_SETTINGS_LENGTH:
        raise ValueError(f"a settings block holds at most {MAX_SETTINGS_LENGTH} bytes")
    return struct.pack(">H", len(body)) + body


def encode_client_settings(stream_window: int, codec: int = CODEC_JSON) -> bytes:
    """The client's settings block: its STREAM_WINDOW, then CODEC (sections 19 and 21).
    With the defaults and JSON: `00 09 01 04 00 04 00 00 03 01 01`."""
    if not 1 <= stream_window <= 0xFFFF_FFFF:
        raise ValueError(f"stream_window must be between 1 and 2^32-1, not {stream_window}")
    entries = [(SETTING_STREAM_WINDOW, struct.pack(">I", stream_window))]
    if codec != CODEC_BINCODE:
        entries.append((SETTING_CODEC, bytes([codec])))
    return encode_settings(entries)


def settings_block_length(prefix: bytes) -> int:
    """The length of the entries announced by the 2-byte prefix of a settings block,
    checked against the limit of section 19."""
    (length,) = struct.unpack(">H", prefix)
    if length > MAX_SETTINGS_LENGTH:
        raise FrameError(f"settings block of {length} bytes (the limit is 1024)")
    return length


def decode_settings(entries: bytes) -> Settings:
    """Decodes the entries of a settings block (after its length prefix; section 19).

    Unknown ids are skipped; an entry running past the block, a known id with a value of
    the wrong size, or a window of 0 is a :class:`FrameError`.
    """
    stream_window = DEFAULT_STREAM_WINDOW
    codecs = 1 << CODEC_BINCODE
    codec = CODEC_BINCODE
    ids: List[int] = []
    at = 0
    while at < len(entries):
        if at + 2 > len(entries):
            raise FrameError("a settings entry runs past the block")
        ident, size = entries[at], entries[at + 1]
        value = entries[at + 2 : at + 2 + size]
        if len(value) != size:
            raise FrameError("a settings entry runs past the block")
        at += 2 + size
        ids.append(ident)
        if ident == SETTING_STREAM_WINDOW:
            if size != 4:
                raise FrameError(f"STREAM_WINDOW has a {size}-byte value (4 expected)")
            (stream_window,) = struct.unpack(">I", value)
            if stream_window == 0:
                raise FrameError("STREAM_WINDOW of 0")
        elif ident == SETTING_CODECS:
            if size != 1:
                raise FrameError(f"CODECS has a {size}-byte value (1 expected)")
            codecs = value[0]
        elif ident == SETTING_CODEC:
            if size != 1:
                raise FrameError(f"CODEC has a {size}-byte value (1 expected)")
            codec = value[0]
    return Settings(stream_window, codecs, codec, tuple(ids))


# --- Frames ----------------------------------------------------------------------------


def frame(kind: int, call_id: int, rest: bytes = b"", flags: int = 0) -> bytes:
    """A whole frame on the wire: u32 BE body length, then the body, which is the 10-byte
    header (section 4) followed by `rest` (sections 3 and 4)."""
    return struct.pack(">IBBQ", HEADER_SIZE + len(rest), kind, flags, call_id) + rest


MetadataValue = Union[str, bytes, bytearray, memoryview]
MetadataArg = Union[Mapping[str, MetadataValue], Iterable[Tuple[str, MetadataValue]], None]


def encode_metadata(metadata: MetadataArg) -> bytes:
    """The metadata section of a REQUEST (section 5.1): u16 BE count, then per entry a u8
    key length, the UTF-8 key, a u16 BE value length and the value. String values are
    sent as UTF-8; bytes values as they are. Order is preserved."""
    if metadata is None:
        return b"\x00\x00"
    pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
    out = [b""]
    count = 0
    for key, value in pairs:
        if not isinstance(key, str):
            raise TypeError(f"metadata keys are str, not {type(key).__name__}")
        key_bytes = key.encode("utf-8")
        if len(key_bytes) > 255:
            raise ValueError(f"metadata key {key[:40]!r}... is over 255 bytes")
        if isinstance(value, str):
            value_bytes = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            value_bytes = bytes(value)
        else:
            raise TypeError(f"metadata values are str or bytes, not {type(value).__name__}")
        if len(value_bytes) > 0xFFFF:
            raise ValueError(f"the value of metadata key {key!r} is over 65,535 bytes")
        out.append(bytes([len(key_bytes)]) + key_bytes)
        out.append(struct.pack(">H", len(value_bytes)) + value_bytes)
        count += 1
    if count > 0xFFFF:
        raise ValueError("at most 65,535 metadata entries")
    out[0] = struct.pack(">H", count)
    return b"".join(out)


def _name(what: str, name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"the {what} name is a str, not {type(name).__name__}")
    encoded = name.encode("utf-8")
    if not 1 <= len(encoded) <= 255:
        raise ValueError(f"the {what} name must be 1 to 255 bytes of UTF-8, not {len(encoded)}")
    return bytes([len(encoded)]) + encoded


def encode_request_fields(service: str, method: str, metadata: MetadataArg) -> bytes:
    """The part of a REQUEST body between the budget and the payload (section 5.1):
    service and method (u8 length + UTF-8 each) and the metadata section. Computed once
    per call, before the budget is known."""
    return _name("service", service) + _name("method", method) + encode_metadata(metadata)


def request_body_size(fields: bytes, payload: bytes) -> int:
    """The size of a REQUEST's frame body (what section 3 compares with the server's
    limit): header, budget, fields and payload."""
    return HEADER_SIZE + 8 + len(fields) + len(payload)


def encode_request(
    call_id: int, budget_us: int, fields: bytes, payload: bytes, idempotent: bool = False
) -> bytes:
    """A whole REQUEST frame (section 5.1): header, u64 BE budget in microseconds (`0` =
    no deadline, section 13), the fields of :func:`encode_request_fields`, the payload."""
    if not 0 <= budget_us <= _U64_MAX:
        raise ValueError("the budget is a u64 of microseconds")
    flags = FLAG_IDEMPOTENT if idempotent else 0
    return frame(KIND_REQUEST, call_id, struct.pack(">Q", budget_us) + fields + payload, flags)


def encode_cancel(call_id: int) -> bytes:
    """A CANCEL frame: header only (section 5.3)."""
    return frame(KIND_CANCEL, call_id)


def encode_window_update(call_id: int, credit: int) -> bytes:
    """A WINDOW_UPDATE frame granting `credit` bytes (u32 BE) on `call_id` (section 18.1)."""
    if not 1 <= credit <= 0xFFFF_FFFF:
        raise ValueError("a WINDOW_UPDATE grants 1 to 2^32-1 bytes")
    return frame(KIND_WINDOW_UPDATE, call_id, struct.pack(">I", credit))


def encode_ping(data: bytes) -> bytes:
    """A PING frame: call id 0 and 8 bytes of opaque data (section 20)."""
    if len(data) != PING_DATA_SIZE:
        raise ValueError("a PING carries exactly 8 bytes")
    return frame(KIND_PING, 0, data)


def encode_pong(data: bytes) -> bytes:
    """The PONG answering a PING with `data` (section 20)."""
    if len(data) != PING_DATA_SIZE:
        raise ValueError("a PONG carries exactly 8 bytes")
    return frame(KIND_PONG, 0, data)


@dataclass(frozen=True)
class Frame:
    """A received frame body split into its header (section 4) and the rest."""

    kind: int
    flags: int
    call_id: int
    rest: bytes


def decode_frame(body: bytes) -> Frame:
    """Splits a frame body into header and rest; a body shorter than the 10-byte header
    is a :class:`FrameError` (section 3)."""
    if len(body) < HEADER_SIZE:
        raise FrameError(f"a frame body of {len(body)} bytes is shorter than its header")
    kind, flags, call_id = struct.unpack_from(">BBQ", body)
    return Frame(kind, flags, call_id, bytes(body[HEADER_SIZE:]))


def decode_response(rest: bytes) -> Tuple[int, bytes]:
    """The status and payload of a RESPONSE (section 5.2); no status byte is a
    :class:`FrameError`."""
    if not rest:
        raise FrameError("a RESPONSE without a status byte")
    return rest[0], rest[1:]


def decode_go_away(rest: bytes) -> Tuple[int, str]:
    """The code and message of a GO_AWAY (section 5.4), the message decoded leniently; no
    code byte is a :class:`FrameError`."""
    if not rest:
        raise FrameError("a GO_AWAY without a code byte")
    return rest[0], rest[1:].decode("utf-8", "replace")


def decode_window_update(rest: bytes) -> int:
    """The credit of a WINDOW_UPDATE (section 18.1)."""
    if len(rest) < 4:
        raise FrameError("a WINDOW_UPDATE shorter than its u32 credit")
    (credit,) = struct.unpack_from(">I", rest)
    return credit


def decode_ping(rest: bytes) -> bytes:
    """The 8 bytes of a PING or PONG (section 20)."""
    if len(rest) != PING_DATA_SIZE:
        raise FrameError(f"a PING/PONG carries 8 bytes, not {len(rest)}")
    return rest


def status_name(status: int) -> str:
    """The name of a status code of section 7, or `STATUS_<n>` for a reserved one."""
    return _STATUS_NAMES.get(status, f"STATUS_{status}")


_STATUS_NAMES: Dict[int, str] = {
    value: name[len("STATUS_") :]
    for name, value in dict(globals()).items()
    if name.startswith("STATUS_") and isinstance(value, int)
}


def go_away_name(code: int) -> str:
    """The name of a go-away code of section 8, or `CODE_<n>` for a reserved one."""
    return {
        GO_AWAY_SHUTTING_DOWN: "SHUTTING_DOWN",
        GO_AWAY_PROTOCOL_ERROR: "PROTOCOL_ERROR",
        GO_AWAY_FRAME_TOO_LARGE: "FRAME_TOO_LARGE",
        GO_AWAY_IDLE_TIMEOUT: "IDLE_TIMEOUT",
    }.get(code, f"CODE_{code}")


def kind_name(kind: int) -> str:
    """The name of a message kind of section 5, or its hex value."""
    return KIND_NAMES.get(kind, f"0x{kind:02x}")


__all__ = [name for name in dir() if name.isupper() and not name.startswith("_")] + [
    "FrameError",
    "ServerHello",
    "Settings",
    "Frame",
    "encode_client_hello",
    "decode_server_hello",
    "encode_settings",
    "encode_client_settings",
    "settings_block_length",
    "decode_settings",
    "frame",
    "encode_metadata",
    "encode_request_fields",
    "request_body_size",
    "encode_request",
    "encode_cancel",
    "encode_window_update",
    "encode_ping",
    "encode_pong",
    "decode_frame",
    "decode_response",
    "decode_go_away",
    "decode_window_update",
    "decode_ping",
    "status_name",
    "go_away_name",
    "kind_name",
]
