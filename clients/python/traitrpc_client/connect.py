"""Opening a connection: TCP, the 12-byte hellos, the settings blocks and the JSON codec
choice (PROTOCOL.md sections 2, 19 and 21).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, List, Optional, Tuple

from . import protocol as p
from .errors import (
    CodecUnsupported,
    ConnectFailed,
    ConnectionClosed,
    Outcome,
    Overloaded,
    ProtocolError,
    VersionMismatch,
)


from .client import Client


async def connect(
    host: str,
    port: int,
    *,
    timeout: Optional[float] = 10.0,
    max_frame_size: int = p.DEFAULT_MAX_FRAME_SIZE,
    stream_window: int = p.DEFAULT_STREAM_WINDOW,
    call_timeout: Optional[float] = 30.0,
    max_in_flight: int = 1024,
    keepalive_interval: Optional[float] = 30.0,
    keepalive_timeout: float = 20.0,
    max_write_buffer: int = 4 << 20,
    ssl: Any = None,
    server_hostname: Optional[str] = None,
) -> Client:
    """Connects to a server and runs the version 4 handshake with JSON payloads.

    ``timeout`` bounds connect plus handshake (:class:`ConnectFailed` when exceeded).
    ``max_frame_size`` is the largest frame body this client accepts (announced in its
    hello, section 2.1); ``stream_window`` the credit it grants per server stream
    (announced in its settings, section 19). ``call_timeout`` is the deadline of calls
    that give none (``None``: no deadline); ``max_in_flight`` bounds the unary calls
    waiting for an answer (more wait for a slot within their deadline).
    ``keepalive_interval`` / ``keepalive_timeout``: ping a silent server and close the
    connection if it does not answer (``None`` disables it; section 20).
    ``max_write_buffer``: new requests wait while more than this is queued unsent.
    ``ssl`` and ``server_hostname`` are passed to :func:`asyncio.open_connection`.

    The handshake is checked as section 2.4 says: a bad magic is a
    :class:`ProtocolError`, another version a :class:`VersionMismatch`, a server at its
    connection limit :class:`Overloaded`, a server without JSON in its CODECS
    :class:`CodecUnsupported`.
    """
    hello = p.encode_client_hello(max_frame_size)
    settings = p.encode_client_settings(stream_window, p.CODEC_JSON)
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    opened: List[asyncio.StreamWriter] = []

    async def handshake() -> Client:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl, server_hostname=server_hostname, limit=1 << 20
        )
        opened.append(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass  # Not TCP (a Unix socket, say).
        writer.transport.set_write_buffer_limits(high=max_write_buffer)
        writer.write(hello)
        await writer.drain()
        server_hello, server_settings = await _read_handshake(reader)
        writer.write(settings)
        await writer.drain()
        return Client(
            reader,
            writer,
            server_max_frame_size=server_hello.max_frame_size,
            server_settings=server_settings,
            max_frame_size=max_frame_size,
            stream_window=stream_window,
            call_timeout=call_timeout,
            max_in_flight=max_in_flight,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
        )

    try:
        return await asyncio.wait_for(handshake(), timeout)
    except BaseException as e:
        for writer in opened:
            writer.close()
        if isinstance(e, asyncio.TimeoutError):
            raise ConnectFailed(
                f"connecting to {host}:{port} and its handshake took over {timeout} s"
            ) from None
        if isinstance(e, asyncio.IncompleteReadError):
            raise ConnectionClosed(
                f"{host}:{port} closed the connection during the handshake",
                outcome=Outcome.NOT_SENT,
            ) from None
        if isinstance(e, OSError):
            raise ConnectFailed(f"cannot connect to {host}:{port}: {e}") from e
        raise


async def _read_handshake(reader: asyncio.StreamReader) -> Tuple[p.ServerHello, p.Settings]:
    """Reads and checks the server hello, in the order of section 2.4, then the server's
    settings block (section 19) and its CODECS (section 21)."""
    hello = p.decode_server_hello(await reader.readexactly(p.HELLO_SIZE))
    if hello.magic != p.MAGIC:
        raise ProtocolError(
            f"the server's hello starts with {hello.magic!r}, not b'RRPC'",
            outcome=Outcome.NOT_SENT,
        )
    if hello.status == p.HELLO_UNSUPPORTED_VERSION or hello.version != p.VERSION:
        raise VersionMismatch(
            hello.version,
            f"the server speaks protocol version {hello.version} (hello status "
            f"{hello.status}); this client speaks only version {p.VERSION} (JSON payloads "
            "need it)",
        )
    if hello.status == p.HELLO_TOO_MANY_CONNECTIONS:
        raise Overloaded(
            None, "the server is at its connection limit", outcome=Outcome.NOT_SENT
        )
    if hello.status != p.HELLO_ACCEPTED:
        raise ProtocolError(
            f"the server refused the handshake (status {hello.status})",
            outcome=Outcome.NOT_SENT,
        )
    try:
        length = p.settings_block_length(await reader.readexactly(2))
        settings = p.decode_settings(await reader.readexactly(length))
    except p.FrameError as e:
        raise ProtocolError(f"the server's settings: {e}", outcome=Outcome.NOT_SENT) from None
    if not settings.codecs & (1 << p.CODEC_JSON):
        raise CodecUnsupported(
            f"the server does not accept JSON payloads (its CODECS setting is "
            f"0b{settings.codecs:08b}{'' if p.SETTING_CODECS in settings.ids else ', absent'}"
            "; JSON is bit 1)"
        )
    return hello, settings
