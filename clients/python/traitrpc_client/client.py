"""The asyncio client: one TCP connection multiplexing many calls (PROTOCOL.md, version 4,
JSON payloads).

:func:`connect` (in :mod:`.connect`) opens a connection and runs the handshake (sections
2, 19, 21). The returned :class:`Client` runs one reader task that dispatches every frame
it receives: RESPONSEs and STREAM_ITEMs go to the call with their id (answers may arrive
in any order, section 1), PINGs are answered with PONGs (section 20), GO_AWAY stops new
calls or fails the pending ones (sections 8, 15). Requests are written by the tasks that
make them; asyncio runs one at a time, so whole frames never interleave. Server streams
are :class:`ServerStream` (in :mod:`.stream`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
from typing import Any, Callable, Dict, Optional, Tuple

from . import protocol as p
from .errors import (
    ConnectionClosed,
    DeadlineExceeded,
    FrameTooLarge,
    GoAway,
    KeepaliveTimeout,
    Outcome,
    ProtocolError,
    RpcError,
    ShuttingDown,
)


from .calls import (
    _MAX_BUDGET_US,
    Args,
    _answer,
    _Call,
    _encode_args,
    _StreamCall,
    _UnaryCall,
)
from .stream import ServerStream


class Client:
    """A connection to a server, made by :func:`connect`. Safe to share between the tasks
    of one event loop: calls made concurrently are multiplexed on the connection.

    Use it as an async context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        server_max_frame_size: int,
        server_settings: p.Settings,
        max_frame_size: int,
        stream_window: int,
        call_timeout: Optional[float],
        max_in_flight: int,
        keepalive_interval: Optional[float],
        keepalive_timeout: float,
    ) -> None:
        """Not called directly: use :func:`connect`, which runs the handshake first."""
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._writer = writer
        #: The largest frame body the server accepts (its hello, section 2.2).
        self.server_max_frame_size = server_max_frame_size
        #: The server's settings block (section 19).
        self.server_settings = server_settings
        #: The largest frame body this client accepts (its hello).
        self.max_frame_size = max_frame_size
        #: The credit this client grants the server for each server stream.
        self.stream_window = stream_window
        #: The deadline of calls that do not give a timeout (``None``: no deadline).
        self.call_timeout = call_timeout
        self._ids = itertools.count(1)
        self._pending: Dict[int, _Call] = {}
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._drain_lock = asyncio.Lock()
        self._closed_error: Optional[Callable[[], RpcError]] = None
        # A GO_AWAY 0 / 3 (draining): (code, message, highest call id the server received).
        self._go_away: Optional[Tuple[int, str, int]] = None
        self._pings: Dict[bytes, "asyncio.Future[None]"] = {}
        self._ping_ids = itertools.count(1)
        self._last_received = self._loop.time()
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._reader_task = self._loop.create_task(self._read_loop())
        self._keepalive_task: Optional[asyncio.Task] = None
        if keepalive_interval is not None:
            self._keepalive_task = self._loop.create_task(self._keepalive())

    # --- Public API ----------------------------------------------------------------------

    async def call(
        self,
        service: str,
        method: str,
        args: Args = None,
        *,
        timeout: Optional[float] = None,
        metadata: p.MetadataArg = None,
        idempotent: bool = False,
    ) -> Any:
        """Calls ``service.method`` with ``args`` and returns its decoded JSON answer.

        ``args`` is a dict keyed by parameter name, a list in parameter order, or
        ``None`` (no parameters). ``timeout`` (seconds) is the call's deadline: ``None``
        uses the connection's ``call_timeout``, ``math.inf`` means no deadline. The
        deadline is sent to the server as a budget (section 13); when it passes here the
        call raises :class:`DeadlineExceeded` and a CANCEL is sent. Cancelling the
        awaiting task sends a CANCEL too (section 14). ``metadata`` is a mapping (or
        sequence of pairs) of str keys to str or bytes values (section 5.1);
        ``idempotent`` sets the IDEMPOTENT flag (section 6).

        Raises :class:`ApplicationError` (with ``.error``) when the method returned its
        error type, another :class:`RpcError` for any other failure, ``TypeError`` or
        ``ValueError`` for arguments that cannot be sent at all.
        """
        label = f"{service}.{method}"
        fields = p.encode_request_fields(service, method, metadata)
        payload = _encode_args(args)
        self._check_size(fields, payload, label)
        deadline = self._deadline(timeout)
        self._check_open()
        try:
            if self._in_flight.locked():
                await asyncio.wait_for(self._in_flight.acquire(), self._remaining(deadline))
            else:
                await self._in_flight.acquire()  # Free: returns at once.
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                None, f"{label}: the deadline passed before a call slot was free",
                outcome=Outcome.NOT_SENT,
            ) from None
        try:
            await self._wait_writable(deadline, label)
            call_id, call = self._start(
                _UnaryCall(self._loop.create_future(), label),
                fields, payload, deadline, idempotent, label,
            )
            try:
                status, answer = await call.future
            except asyncio.CancelledError:
                self._abandon(call_id)
                raise
            finally:
                if call.timer is not None:
                    call.timer.cancel()
        finally:
            self._in_flight.release()
        return _answer(status, answer, label)

    def server_stream(
        self,
        service: str,
        method: str,
        args: Args = None,
        *,
        timeout: Optional[float] = None,
        metadata: p.MetadataArg = None,
        idempotent: bool = False,
    ) -> "ServerStream":
        """Calls the server-streaming method ``service.method``; iterate the returned
        :class:`ServerStream` with ``async for`` to receive its items (section 18).

        The REQUEST is sent when iteration starts (or on ``async with``). The arguments
        are those of :meth:`call`; the deadline covers the whole stream. Close the
        stream (``aclose()``, or leave its ``async with`` block) to stop early: a CANCEL
        is sent. A stream dropped unclosed is cancelled when it is garbage-collected.
        """
        fields = p.encode_request_fields(service, method, metadata)
        payload = _encode_args(args)
        return ServerStream(self, f"{service}.{method}", fields, payload, timeout, idempotent)

    async def ping(self, timeout: Optional[float] = 10.0) -> float:
        """Sends a PING and waits for its PONG (section 20); returns the round trip in
        seconds. Raises :class:`DeadlineExceeded` if no PONG came within ``timeout``."""
        self._check_open()
        data = struct.pack(">Q", next(self._ping_ids) | (1 << 63))
        waiter = self._loop.create_future()
        self._pings[data] = waiter
        started = self._loop.time()
        try:
            self._send(p.encode_ping(data))
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(None, f"no PONG within {timeout} s") from None
        finally:
            self._pings.pop(data, None)
        return self._loop.time() - started

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by either side, or after a failure)."""
        return self._closed_error is not None

    @property
    def draining(self) -> bool:
        """Whether the server sent GO_AWAY SHUTTING_DOWN or IDLE_TIMEOUT: new calls are
        refused with :class:`ShuttingDown`, calls in flight go on (section 15)."""
        return self._go_away is not None

    @property
    def pending_calls(self) -> int:
        """The number of calls (and open server streams) waiting for their RESPONSE."""
        return len(self._pending)

    async def wait_closed(self) -> None:
        """Waits until the connection has ended (for example after a GO_AWAY, once the
        server closed it)."""
        await asyncio.shield(self._reader_task)

    async def close(self) -> None:
        """Closes the connection: calls still waiting fail with :class:`ConnectionClosed`.
        Closing twice is harmless."""
        self._shutdown(lambda: ConnectionClosed("the client closed the connection"))
        for task in (self._reader_task, self._keepalive_task):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            await self._writer.wait_closed()
        except (OSError, RuntimeError):
            pass

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # --- Sending ------------------------------------------------------------------------

    def _deadline(self, timeout: Optional[float]) -> float:
        """The call's deadline on the loop's clock (``math.inf``: none)."""
        if timeout is None:
            timeout = self.call_timeout if self.call_timeout is not None else math.inf
        return self._loop.time() + timeout

    def _remaining(self, deadline: float) -> Optional[float]:
        return None if math.isinf(deadline) else max(0.0, deadline - self._loop.time())

    def _check_open(self) -> None:
        """Raises if no new call may start: the connection closed, or is draining."""
        if self._closed_error is not None:
            error = self._closed_error()
            error.outcome = Outcome.NOT_SENT
            raise error
        if self._go_away is not None:
            code, message, _ = self._go_away
            raise ShuttingDown(
                None,
                f"the server sent GO_AWAY {p.go_away_name(code)} ({message}): this "
                "connection takes no new calls",
                outcome=Outcome.NOT_SENT,
            )

    def _check_size(self, fields: bytes, payload: bytes, label: str) -> None:
        size = p.request_body_size(fields, payload)
        if size > self.server_max_frame_size:
            raise FrameTooLarge(
                f"the request of {label} is {size} bytes, over the server's limit of "
                f"{self.server_max_frame_size}"
            )

    async def _wait_writable(self, deadline: float, label: str) -> None:
        """Waits, within the deadline, while the transport's write buffer is above its
        high-water mark (a server that does not read)."""
        transport = self._writer.transport
        if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
            return  # Below the high-water mark: drain() would return at once.
        try:
            async with self._drain_lock:
                await asyncio.wait_for(self._writer.drain(), self._remaining(deadline))
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                None, f"{label}: the deadline passed while the connection was busy",
                outcome=Outcome.NOT_SENT,
            ) from None
        except (ConnectionError, OSError):
            pass  # The reader task sees the connection end and fails the calls.

    def _start(
        self,
        call: _Call,
        fields: bytes,
        payload: bytes,
        deadline: float,
        idempotent: bool,
        label: str,
    ) -> Tuple[int, Any]:
        """Registers ``call`` under a fresh id and queues its REQUEST, with the budget
        computed now (section 13). Returns the id and the call."""
        self._check_open()
        budget = 0
        if not math.isinf(deadline):
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(
                    None, f"{label}: the deadline passed before the call was sent",
                    outcome=Outcome.NOT_SENT,
                )
            budget = min(_MAX_BUDGET_US, max(1, math.ceil(remaining * 1_000_000)))
        call_id = next(self._ids)
        self._pending[call_id] = call
        self._send(p.encode_request(call_id, budget, fields, payload, idempotent))
        if not math.isinf(deadline):
            call.timer = self._loop.call_at(deadline, self._on_deadline, call_id)
        return call_id, call

    def _send(self, data: bytes) -> None:
        if self._closed_error is not None:
            raise self._closed_error()
        self._writer.write(data)

    def _try_send(self, data: bytes) -> None:
        """Sends a control frame if the connection is still open."""
        if self._closed_error is None:
            self._writer.write(data)

    def _forget(self, call_id: int) -> Optional[_Call]:
        call = self._pending.pop(call_id, None)
        if call is not None and call.timer is not None:
            call.timer.cancel()
        return call

    def _abandon(self, call_id: int) -> None:
        """The caller stopped waiting for ``call_id``: forget it and send CANCEL
        (section 14). Nothing happens if its RESPONSE came already."""
        if self._forget(call_id) is not None:
            self._try_send(p.encode_cancel(call_id))

    def _on_deadline(self, call_id: int) -> None:
        call = self._forget(call_id)
        if call is not None:
            self._try_send(p.encode_cancel(call_id))
            call.fail(DeadlineExceeded(None, f"{call.label}: the deadline passed"))

    def _grant(self, call_id: int, call: _StreamCall, credit: int) -> bool:
        """Grants ``credit`` bytes back on a server stream (section 18.3); returns
        whether it did (not for a stream that is over)."""
        if self._pending.get(call_id) is not call or self._closed_error is not None:
            return False
        call.outstanding -= credit
        while credit > 0:
            chunk = min(credit, 0xFFFF_FFFF)
            self._try_send(p.encode_window_update(call_id, chunk))
            credit -= chunk
        return True

    # --- Receiving ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Reads frames until the connection ends, then fails what is still pending."""
        error: Callable[[], RpcError]
        frames = 0
        try:
            while True:
                frames += 1
                if frames % 256 == 0:
                    # readexactly() does not yield while data is buffered: let the
                    # consumers and callers run between bursts of frames.
                    await asyncio.sleep(0)
                try:
                    prefix = await self._reader.readexactly(4)
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        raise
                    message = "the server closed the connection"
                    error = lambda: ConnectionClosed(message)  # noqa: E731
                    break
                (length,) = struct.unpack(">I", prefix)
                if length > self.max_frame_size:
                    raise ProtocolError(
                        f"the server sent a frame of {length} bytes, over this client's "
                        f"limit of {self.max_frame_size}"
                    )
                body = await self._reader.readexactly(length)
                self._last_received = self._loop.time()
                self._dispatch(p.decode_frame(body))
        except asyncio.IncompleteReadError:
            error = lambda: ConnectionClosed("the connection ended inside a frame")  # noqa: E731
        except (ConnectionError, OSError) as e:
            text = f"the connection failed: {e}"
            error = lambda: ConnectionClosed(text)  # noqa: E731
        except p.FrameError as e:
            text = str(e)
            error = lambda: ProtocolError(text)  # noqa: E731
        except GoAway as e:
            code, reason = e.code, e.reason
            error = lambda: GoAway(code, reason)  # noqa: E731
        except ProtocolError as e:
            text = e.message
            error = lambda: ProtocolError(text)  # noqa: E731
        except Exception as e:  # A bug here must not leave the calls waiting forever.
            text = f"the client's reader failed: {e!r}"
            error = lambda: ConnectionClosed(text)  # noqa: E731
            self._shutdown(error)
            raise
        self._shutdown(error)

    def _dispatch(self, frame: p.Frame) -> None:
        kind, call_id = frame.kind, frame.call_id
        if kind == p.KIND_RESPONSE:
            status, payload = p.decode_response(frame.rest)
            call = self._forget(call_id)
            if call is not None:  # Otherwise cancelled, timed out, or never sent.
                call.on_response(status, payload)
        elif kind == p.KIND_STREAM_ITEM:
            call = self._pending.get(call_id)
            if isinstance(call, _StreamCall):
                call.on_item(frame.rest)
            elif isinstance(call, _UnaryCall):
                # A server-streaming method called with call(): fail that call only.
                self._abandon(call_id)
                call.fail(
                    ProtocolError(
                        f"{call.label} answers with a stream: call it with server_stream()",
                        outcome=Outcome.STARTED,
                    )
                )
        elif kind == p.KIND_PING:
            self._try_send(p.encode_pong(p.decode_ping(frame.rest)))
        elif kind == p.KIND_PONG:
            waiter = self._pings.pop(p.decode_ping(frame.rest), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == p.KIND_GO_AWAY:
            code, message = p.decode_go_away(frame.rest)
            if code in (p.GO_AWAY_SHUTTING_DOWN, p.GO_AWAY_IDLE_TIMEOUT):
                self._go_away = (code, message, call_id)
            else:
                raise GoAway(code, message)
        elif kind == p.KIND_WINDOW_UPDATE:
            p.decode_window_update(frame.rest)  # This client sends no streams: ignored.
        elif kind == p.KIND_STOP_SENDING:
            pass  # Likewise.
        elif kind in (p.KIND_REQUEST, p.KIND_CANCEL, p.KIND_STREAM_END):
            raise ProtocolError(f"the server sent a {p.kind_name(kind)}, a client's frame")
        else:
            raise ProtocolError(f"the server sent a frame of unknown kind {p.kind_name(kind)}")

    def _shutdown(self, error: Callable[[], RpcError]) -> None:
        """Marks the connection closed, fails every pending call and closes the socket."""
        if self._closed_error is not None:
            return
        self._closed_error = error
        go_away = self._go_away
        pending, self._pending = self._pending, {}
        for call_id, call in pending.items():
            if call.timer is not None:
                call.timer.cancel()
            failure = error()
            if go_away is not None and call_id > go_away[2] and type(failure) is ConnectionClosed:
                # Above the GO_AWAY's last id: the server never received it (section 15).
                failure = ShuttingDown(
                    None,
                    f"{call.label}: the server was shutting down and closed the connection "
                    "before receiving the call",
                    outcome=Outcome.NOT_STARTED,
                )
            call.fail(failure)
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(error())
        self._pings.clear()
        if self._keepalive_task is not None and self._keepalive_task is not asyncio.current_task():
            self._keepalive_task.cancel()
        self._writer.close()

    async def _keepalive(self) -> None:
        """Pings after ``keepalive_interval`` without any frame from the server, and
        closes the connection if nothing arrives within ``keepalive_timeout`` after the
        ping (section 20)."""
        assert self._keepalive_interval is not None
        data = itertools.count(1)
        while self._closed_error is None:
            idle = self._loop.time() - self._last_received
            if idle < self._keepalive_interval:
                await asyncio.sleep(self._keepalive_interval - idle)
                continue
            pinged = self._loop.time()
            self._try_send(p.encode_ping(struct.pack(">Q", next(data))))
            await asyncio.sleep(self._keepalive_timeout)
            if self._last_received < pinged:
                timeout = self._keepalive_timeout
                self._shutdown(
                    lambda: KeepaliveTimeout(f"the server did not answer a PING within {timeout} s")
                )
