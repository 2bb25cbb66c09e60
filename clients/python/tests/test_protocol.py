"""The client without the reference server: its bytes against the examples of
docs/PROTOCOL.md, and its behaviour against a scripted fake server on loopback (the cases
the reference server cannot be made to show on demand: a refused handshake, a server
without JSON, PINGs from the server, GO_AWAY, EOF, oversized or unexpected frames).

The tests never sleep to wait for something: every time limit is an upper bound.
"""

import asyncio
import struct
import unittest

import traitrpc_client
from traitrpc_client import protocol as p

STEP = 30.0


def h(text):
    """Bytes from hex text as PROTOCOL.md prints it (spaces and line breaks ignored)."""
    return bytes.fromhex("".join(text.split()))


class EncodingTest(unittest.TestCase):
    """The encoders reproduce the byte examples of PROTOCOL.md (sections 5, 12, 19-21)."""

    def test_client_hello(self):
        self.assertEqual(p.encode_client_hello(16 << 20), h("52 52 50 43 00 04 00 00 01 00 00 00"))
        with self.assertRaises(ValueError):
            p.encode_client_hello(63)

    def test_client_settings_with_json(self):
        self.assertEqual(
            p.encode_client_settings(262_144), h("00 09 01 04 00 04 00 00 03 01 01")
        )

    def test_server_settings(self):
        block = h("00 09 01 04 00 04 00 00 02 01 03")
        length = p.settings_block_length(block[:2])
        settings = p.decode_settings(block[2 : 2 + length])
        self.assertEqual(settings.stream_window, 262_144)
        self.assertEqual(settings.codecs, 3)
        self.assertEqual(p.decode_settings(b""), p.Settings())
        # Unknown ids are skipped.
        self.assertEqual(p.decode_settings(h("7f 02 aa bb 01 04 00 00 00 10")).stream_window, 16)
        for bad in ("01 04 00 00", "01 02 00 01", "01 04 00 00 00 00", "02 02 03 00", "05"):
            with self.subTest(bad=bad), self.assertRaises(p.FrameError):
                p.decode_settings(h(bad))
        with self.assertRaises(p.FrameError):
            p.settings_block_length(h("04 01"))

    def test_json_request_of_section_21(self):
        fields = p.encode_request_fields("Calculator", "add", None)
        self.assertEqual(
            p.encode_request(1, 1_000_000, fields, b'{"a":1,"b":2}'),
            h(
                """00 00 00 30  01 00 00 00 00 00 00 00 00 01  00 00 00 00 00 0f 42 40
                0a 43 61 6c 63 75 6c 61 74 6f 72  03 61 64 64  00 00
                7b 22 61 22 3a 31 2c 22 62 22 3a 32 7d"""
            ),
        )
        self.assertEqual(p.request_body_size(fields, b'{"a":1,"b":2}'), 0x30)

    def test_idempotent_flag(self):
        fields = p.encode_request_fields("S", "m", None)
        self.assertEqual(p.encode_request(9, 0, fields, b"", idempotent=True)[5], p.FLAG_IDEMPOTENT)

    def test_metadata(self):
        self.assertEqual(
            p.encode_metadata({"token": "abc"}), h("00 01 05 74 6f 6b 65 6e 00 03 61 62 63")
        )
        self.assertEqual(p.encode_metadata([("k", b"\x00\xff"), ("k", "é")]),
                         h("00 02 01 6b 00 02 00 ff 01 6b 00 02 c3 a9"))
        self.assertEqual(p.encode_metadata(None), h("00 00"))
        with self.assertRaises(ValueError):
            p.encode_metadata({"k" * 256: "v"})
        with self.assertRaises(ValueError):
            p.encode_metadata({"k": b"v" * 65_536})
        with self.assertRaises(TypeError):
            p.encode_metadata({"k": 1})

    def test_names(self):
        with self.assertRaises(ValueError):
            p.encode_request_fields("s" * 256, "m", None)
        with self.assertRaises(ValueError):
            p.encode_request_fields("s", "", None)

    def test_control_frames(self):
        self.assertEqual(p.encode_cancel(2), h("00 00 00 0a 03 00 00 00 00 00 00 00 00 02"))
        self.assertEqual(
            p.encode_window_update(4, 131_072),
            h("00 00 00 0e 12 00 00 00 00 00 00 00 00 04 00 02 00 00"),
        )
        one = struct.pack(">Q", 1)
        self.assertEqual(
            p.encode_ping(one),
            h("00 00 00 12 05 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01"),
        )
        self.assertEqual(
            p.encode_pong(one),
            h("00 00 00 12 06 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01"),
        )

    def test_decode_frames(self):
        # divide(1, 0) of section 21: RESPONSE id 2, APPLICATION_ERROR, "division by zero".
        data = h(
            "00 00 00 1d 02 00 00 00 00 00 00 00 00 02 01 22 64 69 76 69 73 69 6f 6e 20"
            " 62 79 20 7a 65 72 6f 22"
        )
        (length,) = struct.unpack(">I", data[:4])
        frame = p.decode_frame(data[4 : 4 + length])
        self.assertEqual((frame.kind, frame.call_id), (p.KIND_RESPONSE, 2))
        self.assertEqual(p.decode_response(frame.rest), (1, b'"division by zero"'))
        go_away = p.decode_frame(
            h("04 00 00 00 00 00 00 00 00 00 00") + b"the server is shutting down"
        )
        self.assertEqual(p.decode_go_away(go_away.rest), (0, "the server is shutting down"))
        for bad in (b"", h("02 00 00 00 00 00 00 00 00")):
            with self.assertRaises(p.FrameError):
                p.decode_frame(bad)
        with self.assertRaises(p.FrameError):
            p.decode_response(b"")
        with self.assertRaises(p.FrameError):
            p.decode_go_away(b"")
        with self.assertRaises(p.FrameError):
            p.decode_ping(b"1234567")

    def test_errors(self):
        self.assertIsInstance(traitrpc_client.error_for_status(3, "m"), traitrpc_client.UnknownMethod)
        self.assertIsInstance(traitrpc_client.error_for_status(11, "m"), traitrpc_client.Unauthenticated)
        unknown = traitrpc_client.error_for_status(99, "m")
        self.assertIs(type(unknown), traitrpc_client.RpcError)
        self.assertEqual(unknown.status, 99)
        self.assertIs(unknown.outcome, traitrpc_client.Outcome.UNKNOWN)
        self.assertTrue(traitrpc_client.Outcome.NOT_STARTED.may_retry(idempotent=False))
        self.assertFalse(traitrpc_client.Outcome.UNKNOWN.may_retry(idempotent=False))
        self.assertTrue(traitrpc_client.Outcome.STARTED.may_retry(idempotent=True))
        self.assertFalse(traitrpc_client.Outcome.COMPLETED.may_retry(idempotent=True))


SERVER_SETTINGS = h("00 09 01 04 00 04 00 00 02 01 03")


def server_hello(version=4, status=0, max_frame_size=16 << 20, magic=b"RRPC"):
    return magic + struct.pack(">HBBI", version, status, 0, max_frame_size)


class FakeServer:
    """A one-connection server on loopback that runs ``script(conn)``; ``conn`` reads
    and writes raw bytes and frames."""

    def __init__(self, script):
        self.script = script
        self.done = asyncio.get_running_loop().create_future()

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        try:
            await self.script(Conn(reader, writer))
            if not self.done.done():
                self.done.set_result(None)
        except BaseException as e:  # Reported by the test that awaits `done`.
            if not self.done.done():
                self.done.set_exception(e)
        finally:
            writer.close()

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


class Conn:
    """The fake server's side of one connection."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    async def accept(self, settings=SERVER_SETTINGS, max_frame_size=16 << 20):
        """Reads the client's hello, answers ACCEPTED, reads the client's settings."""
        self.hello = await self.reader.readexactly(12)
        self.writer.write(server_hello(max_frame_size=max_frame_size) + settings)
        (length,) = struct.unpack(">H", await self.reader.readexactly(2))
        self.settings = p.decode_settings(await self.reader.readexactly(length))

    async def read_frame(self):
        (length,) = struct.unpack(">I", await self.reader.readexactly(4))
        return p.decode_frame(await self.reader.readexactly(length))

    async def read_request(self):
        """The next frame, which must be a REQUEST: (call id, service, method, payload)."""
        frame = await self.read_frame()
        assert frame.kind == p.KIND_REQUEST, frame
        rest = frame.rest[8:]
        service = rest[1 : 1 + rest[0]].decode()
        rest = rest[1 + rest[0] :]
        method = rest[1 : 1 + rest[0]].decode()
        rest = rest[1 + rest[0] :]
        (count,) = struct.unpack(">H", rest[:2])
        rest = rest[2:]
        for _ in range(count):
            rest = rest[1 + rest[0] :]
            (size,) = struct.unpack(">H", rest[:2])
            rest = rest[2 + size :]
        return frame.call_id, service, method, rest

    def respond(self, call_id, status, payload):
        self.writer.write(p.frame(p.KIND_RESPONSE, call_id, bytes([status]) + payload))

    def send(self, kind, call_id, rest=b""):
        self.writer.write(p.frame(kind, call_id, rest))


class FakeServerTest(unittest.IsolatedAsyncioTestCase):
    """The client against scripted servers, one per test (or sub-test)."""

    async def asyncSetUp(self):
        asyncio.get_running_loop().slow_callback_duration = 1.0

    async def serve(self, script, **connect_args):
        """Starts a fake server running ``script`` and returns (server, connect coroutine)."""
        server = FakeServer(script)
        port = await server.start()
        self.addAsyncCleanup(server.stop)
        connect_args.setdefault("timeout", STEP)
        return server, traitrpc_client.connect("127.0.0.1", port, **connect_args)

    async def test_handshake_bytes_and_out_of_order_answers(self):
        async def script(conn):
            await conn.accept()
            assert conn.hello == h("52 52 50 43 00 04 00 00 00 10 00 00"), conn.hello
            assert conn.settings.codec == p.CODEC_JSON
            assert conn.settings.stream_window == 1000
            first = await conn.read_request()
            second = await conn.read_request()
            assert first[1:] == ("Calculator", "add", b"[1,2]"), first
            assert second[3] == b"", second
            # An answer for an id never sent is ignored; then answers in reverse order.
            conn.respond(999, p.STATUS_OK, b"0")
            conn.respond(second[0], p.STATUS_OK, b"null")
            conn.respond(first[0], p.STATUS_OK, b"3")
            await conn.reader.read()  # Until the client closes.

        server, connecting = await self.serve(script, max_frame_size=1 << 20, stream_window=1000)
        async with await connecting as client:
            results = await asyncio.wait_for(
                asyncio.gather(
                    client.call("Calculator", "add", [1, 2]), client.call("Calculator", "none")
                ),
                STEP,
            )
            self.assertEqual(results, [3, None])
        await asyncio.wait_for(server.done, STEP)

    async def test_server_without_json(self):
        for settings in (h("00 03 02 01 01"), h("00 06 01 04 00 04 00 00")):
            with self.subTest(settings=settings.hex()):

                async def script(conn):
                    await conn.reader.readexactly(12)
                    conn.writer.write(server_hello() + settings)
                    await conn.reader.read()

                _, connecting = await self.serve(script)
                with self.assertRaises(traitrpc_client.CodecUnsupported):
                    await connecting

    async def test_refused_handshakes(self):
        cases = [
            (server_hello(version=3, status=1), traitrpc_client.VersionMismatch),
            (server_hello(version=3, status=0), traitrpc_client.VersionMismatch),
            (server_hello(status=2), traitrpc_client.Overloaded),
            (server_hello(status=7), traitrpc_client.ProtocolError),
            (server_hello(magic=b"HTTP"), traitrpc_client.ProtocolError),
            (server_hello() + h("04 01"), traitrpc_client.ProtocolError),  # Settings over 1024.
            (server_hello() + h("00 03 01 01 00"), traitrpc_client.ProtocolError),
            (b"", traitrpc_client.ConnectionClosed),
        ]
        for answer, error in cases:
            with self.subTest(answer=answer.hex()):

                async def script(conn, answer=answer):
                    await conn.reader.readexactly(12)
                    conn.writer.write(answer)

                _, connecting = await self.serve(script)
                with self.assertRaises(error) as caught:
                    await connecting
                self.assertIs(caught.exception.outcome, traitrpc_client.Outcome.NOT_SENT)
                if error is traitrpc_client.VersionMismatch:
                    self.assertEqual(caught.exception.server_version, 3)

    async def test_handshake_timeout(self):
        async def script(conn):
            await conn.reader.read()  # Never answers.

        _, connecting = await self.serve(script, timeout=0.2)
        with self.assertRaises(traitrpc_client.ConnectFailed):
            await asyncio.wait_for(connecting, STEP)

    async def test_answers_pings(self):
        async def script(conn):
            await conn.accept()
            conn.send(p.KIND_PING, 0, b"12345678")
            frame = await conn.read_frame()
            assert (frame.kind, frame.call_id, frame.rest) == (p.KIND_PONG, 0, b"12345678"), frame

        server, connecting = await self.serve(script)
        async with await connecting:
            await asyncio.wait_for(server.done, STEP)  # The PONG came back.

    async def test_ping_round_trip(self):
        async def script(conn):
            await conn.accept()
            frame = await conn.read_frame()
            conn.send(p.KIND_PONG, 0, b"unknown!")  # Not ours: ignored.
            conn.send(p.KIND_PONG, 0, frame.rest)
            await conn.reader.read()

        _, connecting = await self.serve(script)
        async with await connecting as client:
            self.assertLess(await client.ping(timeout=STEP), STEP)

    async def test_go_away_shutting_down(self):
        async def script(conn):
            await conn.accept()
            first = await conn.read_request()
            second = await conn.read_request()
            # The server received both; it says so in the GO_AWAY, answers the first...
            conn.send(p.KIND_GO_AWAY, first[0], b"\x00the server is shutting down")
            conn.respond(first[0], p.STATUS_OK, b"1")
            # ...and closes before answering the second, which it never received.
            await conn.writer.drain()

        _, connecting = await self.serve(script)
        client = await connecting
        first = asyncio.ensure_future(client.call("S", "first"))
        second = asyncio.ensure_future(client.call("S", "second"))
        self.assertEqual(await asyncio.wait_for(first, STEP), 1)
        with self.assertRaises(traitrpc_client.ShuttingDown) as caught:
            await asyncio.wait_for(second, STEP)
        self.assertIs(caught.exception.outcome, traitrpc_client.Outcome.NOT_STARTED)
        await asyncio.wait_for(client.wait_closed(), STEP)
        with self.assertRaises(traitrpc_client.ConnectionClosed):
            await client.call("S", "third")
        await client.close()

    async def test_go_away_stops_new_calls(self):
        async def script(conn):
            await conn.accept()
            call_id = (await conn.read_request())[0]
            conn.send(p.KIND_GO_AWAY, call_id, b"\x00bye")
            # A request already on its way is still read and answered.
            later = await conn.read_request()
            assert later[2] == "after_go_away_sent", later
            conn.respond(later[0], p.STATUS_SHUTTING_DOWN, b"the server is shutting down")
            conn.respond(call_id, p.STATUS_OK, b"2")

        _, connecting = await self.serve(script)
        async with await connecting as client:
            pending = asyncio.ensure_future(client.call("S", "before"))
            await asyncio.wait_for(self._until(lambda: client.pending_calls == 1), STEP)
            racing = asyncio.ensure_future(client.call("S", "after_go_away_sent"))
            await asyncio.wait_for(self._until(lambda: client.draining), STEP)
            with self.assertRaises(traitrpc_client.ShuttingDown) as caught:
                await client.call("S", "refused")
            self.assertIs(caught.exception.outcome, traitrpc_client.Outcome.NOT_SENT)
            with self.assertRaises(traitrpc_client.ShuttingDown) as caught:
                await asyncio.wait_for(racing, STEP)
            self.assertEqual(caught.exception.status, p.STATUS_SHUTTING_DOWN)
            self.assertEqual(await asyncio.wait_for(pending, STEP), 2)

    async def test_go_away_protocol_error_fails_pending_calls(self):
        async def script(conn):
            await conn.accept()
            await conn.read_request()
            conn.send(p.KIND_GO_AWAY, 1, b"\x01call id 1 is already in flight")
            await conn.reader.read()

        _, connecting = await self.serve(script)
        async with await connecting as client:
            with self.assertRaises(traitrpc_client.GoAway) as caught:
                await asyncio.wait_for(client.call("S", "m"), STEP)
            self.assertEqual(caught.exception.code, p.GO_AWAY_PROTOCOL_ERROR)
            self.assertIn("already in flight", str(caught.exception))
            self.assertTrue(client.closed)

    async def test_eof_fails_pending_calls_and_streams(self):
        async def script(conn):
            await conn.accept()
            await conn.read_request()
            stream = (await conn.read_request())[0]
            conn.send(p.KIND_STREAM_ITEM, stream, b"1")
            await conn.writer.drain()
            # Then the script ends: the connection closes.

        _, connecting = await self.serve(script)
        async with await connecting as client:
            call = asyncio.ensure_future(client.call("S", "m"))
            await asyncio.wait_for(self._until(lambda: client.pending_calls == 1), STEP)
            stream = client.server_stream("S", "s")
            self.assertEqual(await asyncio.wait_for(stream.__anext__(), STEP), 1)
            with self.assertRaises(traitrpc_client.ConnectionClosed):
                await asyncio.wait_for(call, STEP)
            with self.assertRaises(traitrpc_client.ConnectionClosed):
                await asyncio.wait_for(stream.__anext__(), STEP)

    async def test_malformed_frames_close_the_connection(self):
        bad_frames = [
            struct.pack(">I", 5) + b"\x02\x00\x00\x00\x00",  # Shorter than a header.
            p.frame(p.KIND_RESPONSE, 1),  # No status byte.
            p.frame(0x42, 1),  # Unknown kind.
            p.frame(p.KIND_REQUEST, 1, b"\x00" * 12),  # A client's frame.
            struct.pack(">I", (1 << 20) + 1),  # Over the client's limit.
        ]
        for bad in bad_frames:
            with self.subTest(frame=bad[:16].hex()):

                async def script(conn, bad=bad):
                    await conn.accept()
                    await conn.read_request()
                    conn.writer.write(bad)
                    await conn.reader.read()

                _, connecting = await self.serve(script, max_frame_size=1 << 20)
                async with await connecting as client:
                    with self.assertRaises(traitrpc_client.ProtocolError):
                        await asyncio.wait_for(client.call("S", "m"), STEP)
                    self.assertTrue(client.closed)

    async def test_request_over_the_servers_limit(self):
        async def script(conn):
            await conn.accept(max_frame_size=64)
            call_id, _, _, payload = await conn.read_request()
            conn.respond(call_id, p.STATUS_OK, payload)
            await conn.reader.read()

        _, connecting = await self.serve(script)
        async with await connecting as client:
            # Body: 10 header + 8 budget + 2 + 2 + 2 metadata + payload = 24 + payload.
            with self.assertRaises(traitrpc_client.FrameTooLarge):
                await client.call("S", "m", ["x" * 37])  # 41 bytes of JSON: 65.
            self.assertEqual(await asyncio.wait_for(client.call("S", "m", ["x" * 36]), STEP),
                             ["x" * 36])

    async def test_stream_credit(self):
        window = 100

        async def script(conn):
            await conn.accept()
            assert conn.settings.stream_window == window
            call_id = (await conn.read_request())[0]
            # Twelve items of 1 byte cost 15 each: 180, over one window.
            for i in range(1, 7):
                conn.send(p.KIND_STREAM_ITEM, call_id, str(i).encode())
            granted = 0
            while granted < 50:  # At least half a window comes back as items are taken.
                frame = await conn.read_frame()
                assert frame.kind == p.KIND_WINDOW_UPDATE and frame.call_id == call_id, frame
                granted += p.decode_window_update(frame.rest)
            for i in range(7, 13):
                conn.send(p.KIND_STREAM_ITEM, call_id, str(i % 10).encode())
            conn.respond(call_id, p.STATUS_OK, b"")
            await conn.reader.read()

        _, connecting = await self.serve(script, stream_window=window)
        async with await connecting as client:
            stream = client.server_stream("S", "s")
            items = await asyncio.wait_for(self._collect(stream), STEP)
            self.assertEqual(items, [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
            self.assertEqual(stream.cost_received, 12 * 15)

    async def test_stream_past_its_credit_closes_the_connection(self):
        async def script(conn):
            await conn.accept()
            call_id = (await conn.read_request())[0]
            # Window 100 + one frame (1024) + 14: 1138 bytes held at most; send more.
            for _ in range(100):
                conn.send(p.KIND_STREAM_ITEM, call_id, b"0")
            await conn.reader.read()

        _, connecting = await self.serve(script, stream_window=100, max_frame_size=1024)
        async with await connecting as client:
            stream = client.server_stream("S", "s")
            await stream.start()  # Sent, not read: the items pile up.
            await asyncio.wait_for(client.wait_closed(), STEP)
            self.assertTrue(client.closed)
            with self.assertRaises(traitrpc_client.ProtocolError):
                await asyncio.wait_for(self._collect(stream), STEP)

    async def test_stream_ended_by_an_error_status(self):
        async def script(conn):
            await conn.accept()
            call_id = (await conn.read_request())[0]
            conn.send(p.KIND_STREAM_ITEM, call_id, b'{"n":1}')
            conn.respond(call_id, p.STATUS_ABORTED, b"the producer failed")
            await conn.reader.read()

        _, connecting = await self.serve(script)
        async with await connecting as client:
            stream = client.server_stream("S", "s")
            self.assertEqual(await asyncio.wait_for(stream.__anext__(), STEP), {"n": 1})
            with self.assertRaises(traitrpc_client.Aborted) as caught:
                await asyncio.wait_for(stream.__anext__(), STEP)
            self.assertEqual(caught.exception.message, "the producer failed")

    async def test_cancel_and_deadline_send_cancel(self):
        async def script(conn):
            await conn.accept()
            for _ in range(2):
                call_id, _, _, _ = await conn.read_request()
                frame = await conn.read_frame()
                expected = (p.KIND_CANCEL, call_id, b"")
                assert (frame.kind, frame.call_id, frame.rest) == expected, frame
                conn.respond(call_id, p.STATUS_OK, b"1")  # Crosses the CANCEL: ignored.
            call_id, _, _, _ = await conn.read_request()
            conn.respond(call_id, p.STATUS_OK, b"3")
            await conn.reader.read()

        _, connecting = await self.serve(script)
        async with await connecting as client:
            task = asyncio.ensure_future(client.call("S", "cancelled"))
            await asyncio.wait_for(self._until(lambda: client.pending_calls == 1), STEP)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            with self.assertRaises(traitrpc_client.DeadlineExceeded):
                await asyncio.wait_for(client.call("S", "timed_out", timeout=0.05), STEP)
            self.assertEqual(await asyncio.wait_for(client.call("S", "m"), STEP), 3)

    async def test_budget(self):
        async def script(conn):
            await conn.accept()
            budgets = []
            for _ in range(2):
                frame = await conn.read_frame()
                (budget,) = struct.unpack(">Q", frame.rest[:8])
                budgets.append(budget)
                conn.respond(frame.call_id, p.STATUS_OK, b"null")
            assert 0 < budgets[0] <= 2_500_000 and budgets[0] > 2_000_000, budgets
            assert budgets[1] == 0, budgets  # No deadline.
            await conn.reader.read()

        server, connecting = await self.serve(script)
        async with await connecting as client:
            await asyncio.wait_for(client.call("S", "m", timeout=2.5), STEP)
            await asyncio.wait_for(client.call("S", "m", timeout=float("inf")), STEP)

    async def test_keepalive_timeout(self):
        async def script(conn):
            await conn.accept()
            await conn.reader.read()  # Reads the request and pings, answers nothing.

        _, connecting = await self.serve(script, keepalive_interval=0.05, keepalive_timeout=0.05)
        async with await connecting as client:
            with self.assertRaises(traitrpc_client.KeepaliveTimeout):
                await asyncio.wait_for(client.call("S", "m"), STEP)

    async def _until(self, condition):
        """Yields to the event loop (no timed sleep) until ``condition()`` holds."""
        while not condition():
            await asyncio.sleep(0)

    @staticmethod
    async def _collect(stream):
        return [item async for item in stream]


if __name__ == "__main__":
    unittest.main()
