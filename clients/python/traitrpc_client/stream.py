"""A server stream as its consumer sees it: :class:`ServerStream` (PROTOCOL.md section
18), its credit granted back as items are taken.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from . import protocol as p
from .errors import (
    DecodeError,
    Outcome,
    ProtocolError,
)

from typing import TYPE_CHECKING

from .calls import _ERROR, _ITEM, _decode_json, _error_of, _StreamCall

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client


class ServerStream:
    """The items of a server-streaming call (section 18), made by
    :meth:`Client.server_stream`. An async iterator, and an async context manager that
    closes it on exit.

    Each item costs its payload plus 14 bytes of the stream window this client announced;
    as items are taken, the credit is granted back to the server with WINDOW_UPDATE in
    batches of at least half the window (section 18.3). The stream ends with
    ``StopAsyncIteration`` when the server's RESPONSE says OK, or with the
    :class:`RpcError` of any other status.
    """

    def __init__(
        self,
        client: Client,
        label: str,
        fields: bytes,
        payload: bytes,
        timeout: Optional[float],
        idempotent: bool,
    ) -> None:
        """Not called directly: use :meth:`Client.server_stream`."""
        client._check_size(fields, payload, label)
        self._client = client
        self._label = label
        self._fields = fields
        self._payload = payload
        self._timeout = timeout
        self._idempotent = idempotent
        self._state = "new"  # then "open", then "done"
        self._call: Optional[_StreamCall] = None
        self._call_id: Optional[int] = None
        self._ungranted = 0
        self._batch = max(1, client.stream_window // 2)
        #: Bytes of credit granted back to the server so far (WINDOW_UPDATEs sent).
        self.credit_granted = 0
        #: What the items taken so far cost: payload + 14 bytes each (section 18.3).
        self.cost_received = 0

    @property
    def call_id(self) -> Optional[int]:
        """The call id on the wire, once the REQUEST is sent."""
        return self._call_id

    async def start(self) -> None:
        """Sends the REQUEST if it is not sent yet (iteration does this by itself)."""
        if self._state != "new":
            return
        client = self._client
        deadline = client._deadline(self._timeout)
        await client._wait_writable(deadline, self._label)
        call = _StreamCall(self._label, client.stream_window, client.max_frame_size)
        self._call_id, self._call = client._start(
            call, self._fields, self._payload, deadline, self._idempotent, self._label
        )
        self._state = "open"

    def __aiter__(self) -> "ServerStream":
        return self

    async def __anext__(self) -> Any:
        if self._state == "new":
            try:
                await self.start()
            except BaseException:
                self._state = "done"
                raise
        if self._state == "done":
            raise StopAsyncIteration
        assert self._call is not None and self._call_id is not None
        try:
            entry = await self._call.queue.get()
        except asyncio.CancelledError:
            self._close()
            raise
        if entry[0] == _ITEM:
            payload = entry[1]
            self._consumed(len(payload) + p.STREAM_ITEM_OVERHEAD)
            try:
                return _decode_json(payload, f"an item of {self._label}")
            except DecodeError:
                self._close()
                raise
        self._state = "done"
        if entry[0] == _ERROR:
            raise entry[1]
        status, payload = entry[1], entry[2]
        if status == p.STATUS_OK:
            if payload:
                raise ProtocolError(
                    f"{self._label} answered like a unary call, not a stream "
                    f"(its value: {payload[:100]!r}); call it with call()",
                    outcome=Outcome.COMPLETED,
                )
            raise StopAsyncIteration
        raise _error_of(status, payload, self._label)

    def _consumed(self, cost: int) -> None:
        self.cost_received += cost
        self._ungranted += cost
        if self._ungranted >= self._batch:
            assert self._call is not None and self._call_id is not None
            if self._client._grant(self._call_id, self._call, self._ungranted):
                self.credit_granted += self._ungranted
            self._ungranted = 0

    def _close(self) -> None:
        if self._state == "open" and self._call_id is not None:
            self._client._abandon(self._call_id)
        self._state = "done"

    async def aclose(self) -> None:
        """Stops the stream: if it is still running, sends CANCEL (section 18.4) and
        discards what the server still sends for it. Closing twice is harmless."""
        self._close()

    async def __aenter__(self) -> "ServerStream":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # An abandoned, still running stream: cancel it from the loop's thread.
        if getattr(self, "_state", None) == "open" and self._call_id is not None:
            try:
                self._client._loop.call_soon_threadsafe(self._client._abandon, self._call_id)
            except Exception:
                pass  # The loop is closed (so is the connection), or Python is exiting.
