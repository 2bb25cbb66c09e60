"""What the reader task delivers each pending call to (a unary call's future, a server
stream's queue), and the encoding and decoding of JSON payloads (PROTOCOL.md section 21).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List, Optional, Tuple, Union

from . import protocol as p
from .errors import (
    ApplicationError,
    DecodeError,
    ProtocolError,
    RpcError,
    error_for_status,
)


#: Call arguments: a JSON object keyed by parameter name, a JSON array in parameter order,
#: or ``None`` for a method without parameters (an empty payload; section 21).
Args = Union[Dict[str, Any], List[Any], Tuple[Any, ...], None]

#: The longest deadline sent: a timeout too large to represent means a year (section 13).
_MAX_BUDGET_US = 365 * 24 * 3600 * 1_000_000

_ITEM, _END, _ERROR = 0, 1, 2


def _encode_args(args: Args) -> bytes:
    """The JSON payload of a REQUEST (section 21): empty for no arguments."""
    if args is None:
        return b""
    if not isinstance(args, (dict, list, tuple)):
        raise TypeError(
            "call arguments are a dict (by parameter name), a list or tuple (in parameter "
            f"order) or None, not {type(args).__name__}"
        )
    text = json.dumps(args, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def _decode_json(payload: bytes, what: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise DecodeError(f"{what} is not valid JSON: {e}") from None


def _answer(status: int, payload: bytes, label: str) -> Any:
    """The value of a unary RESPONSE, or the error it stands for (sections 5.2, 7, 21)."""
    if status == p.STATUS_OK:
        return _decode_json(payload, f"the answer of {label}") if payload else None
    if status == p.STATUS_APPLICATION_ERROR:
        error = _decode_json(payload, f"the application error of {label}")
        raise ApplicationError(error, f"{label} returned an error: {error!r}")
    raise error_for_status(status, payload.decode("utf-8", "replace"))


class _UnaryCall:
    """A unary call waiting for its RESPONSE."""

    __slots__ = ("future", "label", "timer")

    def __init__(self, future: "asyncio.Future[Tuple[int, bytes]]", label: str) -> None:
        self.future = future
        self.label = label
        self.timer: Optional[asyncio.TimerHandle] = None

    def on_response(self, status: int, payload: bytes) -> None:
        if not self.future.done():
            self.future.set_result((status, payload))

    def fail(self, error: RpcError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class _StreamCall:
    """The receiving side of a server stream, as the reader task sees it: a queue of
    items, then the RESPONSE that ends it. It holds no reference to its
    :class:`ServerStream`, so that an abandoned stream is collected (and cancelled)."""

    __slots__ = ("queue", "label", "timer", "outstanding", "limit")

    def __init__(self, label: str, window: int, max_frame_size: int) -> None:
        self.queue: "asyncio.Queue[tuple]" = asyncio.Queue()
        self.label = label
        self.timer: Optional[asyncio.TimerHandle] = None
        #: Credit the server has used and this side has not granted back yet.
        self.outstanding = 0
        #: Above this the server sent past its credit (section 18.3).
        self.limit = window + max_frame_size + p.STREAM_ITEM_OVERHEAD

    def on_item(self, payload: bytes) -> None:
        self.outstanding += len(payload) + p.STREAM_ITEM_OVERHEAD
        if self.outstanding > self.limit:
            raise ProtocolError(
                f"the server sent {self.outstanding} bytes of {self.label}'s stream "
                f"without credit (window + one frame is {self.limit})"
            )
        self.queue.put_nowait((_ITEM, payload))

    def on_response(self, status: int, payload: bytes) -> None:
        self.queue.put_nowait((_END, status, payload))

    def fail(self, error: RpcError) -> None:
        self.queue.put_nowait((_ERROR, error))


_Call = Union[_UnaryCall, _StreamCall]


def _error_of(status: int, payload: bytes, label: str) -> RpcError:
    """The error of a RESPONSE that ends a stream with a status other than OK."""
    try:
        _answer(status, payload, label)
    except RpcError as e:
        return e
    return ProtocolError(f"{label}: status {status} did not raise")  # pragma: no cover
