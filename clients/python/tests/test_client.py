"""The client against a running reference server: the `http` example of this repository
(`cargo run --example http -- --serve --native 127.0.0.1:0 --http 127.0.0.1:0`), whose
native address comes from the environment variable ``RRPC_NATIVE_ADDR`` (``host:port``).
`examples/tests/python_client.rs` starts the server and runs these tests in `cargo test`.

The tests never sleep to wait for something: every time limit is an upper bound.
"""

import asyncio
import gc
import os
import time
import unittest

import traitrpc_client
from traitrpc_client import protocol as p

ADDR = os.environ.get("RRPC_NATIVE_ADDR")

#: Upper bound of any single step; far above what a step takes on a loaded machine.
STEP = 30.0


def _address():
    host, _, port = ADDR.rpartition(":")
    return host.strip("[]"), int(port)


@unittest.skipUnless(ADDR, "set RRPC_NATIVE_ADDR=host:port of a running `http --serve` example")
class ClientTest(unittest.IsolatedAsyncioTestCase):
    """One connection per test, to the example's `Calculator` and the built-in health
    service."""

    async def asyncSetUp(self):
        # The test runner's debug-mode loop logs callbacks over 0.1 s; a loaded machine
        # makes those common without anything being wrong.
        asyncio.get_running_loop().slow_callback_duration = 1.0
        host, port = _address()
        self.client = await traitrpc_client.connect(host, port, timeout=STEP)

    async def asyncTearDown(self):
        await self.client.close()

    async def call(self, method, args=None, **kwargs):
        """A Calculator call bounded by STEP (a stuck call fails the test, not hangs it)."""
        return await asyncio.wait_for(
            self.client.call("Calculator", method, args, **kwargs), STEP
        )

    async def assert_still_works(self):
        self.assertEqual(await self.call("add", {"a": 20, "b": 22}), 42)
        self.assertEqual(self.client.pending_calls, 0)

    # --- Unary calls --------------------------------------------------------------------

    async def test_handshake(self):
        self.assertEqual(self.client.server_max_frame_size, p.DEFAULT_MAX_FRAME_SIZE)
        self.assertTrue(self.client.server_settings.codecs & (1 << p.CODEC_JSON))
        self.assertEqual(self.client.server_settings.stream_window, p.DEFAULT_STREAM_WINDOW)

    async def test_add_object_and_array_arguments(self):
        self.assertEqual(await self.call("add", {"a": 1, "b": 2}), 3)
        self.assertEqual(await self.call("add", [1, 2]), 3)
        self.assertEqual(await self.call("add", (-5, 2)), -3)
        big = 2**62
        self.assertEqual(await self.call("add", {"a": big, "b": big - 1}), 2**63 - 1)

    async def test_idempotent_flag_and_metadata_are_accepted(self):
        self.assertEqual(
            await self.call(
                "add", {"a": 1, "b": 2}, idempotent=True, metadata={"x-user": "ann"}, timeout=5
            ),
            3,
        )

    async def test_divide_application_error(self):
        self.assertEqual(await self.call("divide", {"a": 7, "b": 2}), 3)
        with self.assertRaises(traitrpc_client.ApplicationError) as caught:
            await self.call("divide", {"a": 1, "b": 0})
        self.assertEqual(caught.exception.error, "division by zero")
        self.assertEqual(caught.exception.status, p.STATUS_APPLICATION_ERROR)
        self.assertIs(caught.exception.outcome, traitrpc_client.Outcome.COMPLETED)

    async def test_unknown_method(self):
        with self.assertRaises(traitrpc_client.UnknownMethod) as caught:
            await self.call("mul", {"a": 1, "b": 2})
        self.assertEqual(caught.exception.status, p.STATUS_UNKNOWN_METHOD)
        self.assertIn("mul", caught.exception.message)
        self.assertFalse(caught.exception.outcome is traitrpc_client.Outcome.COMPLETED)
        await self.assert_still_works()

    async def test_unknown_service(self):
        with self.assertRaises(traitrpc_client.UnknownService) as caught:
            await self.client.call("NoSuchService", "add", [1, 2])
        self.assertEqual(caught.exception.status, p.STATUS_UNKNOWN_SERVICE)
        self.assertIn("NoSuchService", caught.exception.message)
        await self.assert_still_works()

    async def test_invalid_arguments(self):
        for args in ({"a": "one", "b": 2}, {"a": 1, "b": 2, "c": 3}, [1, 2, 3], {"a": 1}):
            with self.subTest(args=args):
                with self.assertRaises(traitrpc_client.InvalidArguments) as caught:
                    await self.call("add", args)
                self.assertEqual(caught.exception.status, p.STATUS_INVALID_ARGUMENTS)
                self.assertIs(caught.exception.outcome, traitrpc_client.Outcome.NOT_STARTED)
        with self.assertRaises(TypeError):  # Not even sent.
            await self.call("add", "1, 2")
        await self.assert_still_works()

    async def test_metadata_round_trip(self):
        metadata = {"x-user": "ann", "x-bytes": b"caf\xc3\xa9", "x-empty": ""}
        self.assertEqual(await self.call("metadata", {"key": "x-user"}, metadata=metadata), "ann")
        self.assertEqual(await self.call("metadata", ["x-bytes"], metadata=metadata), "café")
        self.assertEqual(await self.call("metadata", ["x-empty"], metadata=metadata), "")
        self.assertIsNone(await self.call("metadata", ["x-absent"], metadata=metadata))
        self.assertIsNone(await self.call("metadata", ["x-user"]))
        # Pairs keep their order; the server's lookup returns the first of a repeated key.
        pairs = [("k", "first"), ("k", "second")]
        self.assertEqual(await self.call("metadata", ["k"], metadata=pairs), "first")

    async def test_health_check(self):
        health = "rpc.health.v1.Health"
        self.assertEqual(await self.client.call(health, "check", {"service": ""}), "Serving")
        self.assertEqual(await self.client.call(health, "check", ["NoSuch"]), "ServiceUnknown")

    async def test_ping(self):
        rtt = await self.client.ping(timeout=STEP)
        self.assertLess(rtt, STEP)
        await self.assert_still_works()

    async def test_request_over_the_servers_frame_limit_is_refused_locally(self):
        huge = "x" * self.client.server_max_frame_size
        with self.assertRaises(traitrpc_client.FrameTooLarge) as caught:
            await self.call("metadata", {"key": huge})
        self.assertIs(caught.exception.outcome, traitrpc_client.Outcome.NOT_SENT)
        with self.assertRaises(traitrpc_client.FrameTooLarge):
            self.client.server_stream("Calculator", "count", {"to": 1, "pad": huge})
        await self.assert_still_works()

    async def test_response_over_the_clients_frame_limit(self):
        host, port = _address()
        async with await traitrpc_client.connect(host, port, max_frame_size=256) as small:
            value = "v" * 1000
            with self.assertRaises(traitrpc_client.ResponseTooLarge) as caught:
                await asyncio.wait_for(
                    small.call("Calculator", "metadata", ["k"], metadata={"k": value}), STEP
                )
            self.assertEqual(caught.exception.status, p.STATUS_FRAME_TOO_LARGE)
            self.assertEqual(await small.call("Calculator", "add", [1, 1]), 2)

    async def test_streaming_method_called_as_unary(self):
        with self.assertRaises(traitrpc_client.ProtocolError) as caught:
            await self.call("count", {"to": 3, "every_ms": 0})
        self.assertIn("server_stream", caught.exception.message)
        await self.assert_still_works()

    # --- Deadlines and cancellation -----------------------------------------------------

    async def test_deadline(self):
        started = time.monotonic()
        with self.assertRaises(traitrpc_client.DeadlineExceeded):
            await self.call("sleep", {"ms": 5000}, timeout=0.2)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(self.client.pending_calls, 0)
        await self.assert_still_works()
        # A call that fits its deadline.
        self.assertEqual(await self.call("sleep", {"ms": 1}, timeout=STEP), 1)

    async def test_connection_default_deadline(self):
        host, port = _address()
        async with await traitrpc_client.connect(host, port, call_timeout=0.2) as short:
            started = time.monotonic()
            with self.assertRaises(traitrpc_client.DeadlineExceeded):
                await asyncio.wait_for(short.call("Calculator", "sleep", [5000]), STEP)
            self.assertLess(time.monotonic() - started, 2.0)
            self.assertEqual(await short.call("Calculator", "add", [1, 1]), 2)

    async def test_cancel_awaiting_task(self):
        task = asyncio.ensure_future(self.client.call("Calculator", "sleep", {"ms": 60_000}))
        await asyncio.wait_for(self._until(lambda: self.client.pending_calls == 1), STEP)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertEqual(self.client.pending_calls, 0)
        await self.assert_still_works()

    async def _until(self, condition):
        """Yields to the event loop (no timed sleep) until ``condition()`` holds."""
        while not condition():
            await asyncio.sleep(0)

    async def test_200_concurrent_calls_complete_out_of_order(self):
        count = 200
        sleeps = [(i * 37) % 100 for i in range(count)]  # 0..99 ms, shuffled.
        finished = []

        async def one(i):
            result = await self.client.call("Calculator", "sleep", {"ms": sleeps[i]})
            finished.append(i)
            return result

        started = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), STEP)
        elapsed = time.monotonic() - started
        self.assertEqual(results, sleeps)
        self.assertEqual(sorted(finished), list(range(count)))
        self.assertNotEqual(finished, list(range(count)), "answers came back in request order")
        # Multiplexed, not one after the other (that would take ~10 s).
        self.assertLess(elapsed, 5.0)
        self.assertEqual(self.client.pending_calls, 0)

    async def test_mixed_unary_and_adds_interleave(self):
        slow = asyncio.ensure_future(self.call("sleep", {"ms": 300}))
        # Fast calls made after the slow one complete before it.
        for i in range(10):
            self.assertEqual(await self.call("add", [i, i]), 2 * i)
        self.assertFalse(slow.done())
        self.assertEqual(await slow, 300)

    # --- Server streams -----------------------------------------------------------------

    async def test_server_stream_of_five(self):
        stream = self.client.server_stream("Calculator", "count", {"to": 5, "every_ms": 0})
        items = await asyncio.wait_for(self._collect(stream), STEP)
        self.assertEqual(items, [1, 2, 3, 4, 5])
        self.assertEqual(self.client.pending_calls, 0)
        # A finished stream stays finished.
        self.assertEqual(await self._collect(stream), [])

    async def test_empty_server_stream(self):
        stream = self.client.server_stream("Calculator", "count", {"to": 0, "every_ms": 0})
        self.assertEqual(await asyncio.wait_for(self._collect(stream), STEP), [])

    async def test_server_stream_needs_window_updates(self):
        to = 60_000
        stream = self.client.server_stream("Calculator", "count", {"to": to, "every_ms": 0})

        async def check():
            expected = 1
            async for item in stream:
                self.assertEqual(item, expected)
                expected += 1
            return expected - 1

        self.assertEqual(await asyncio.wait_for(check(), 60.0), to)
        # It cost more than one window, so it could only finish on granted credit.
        self.assertGreater(stream.cost_received, self.client.stream_window)
        self.assertGreater(stream.credit_granted, 0)
        self.assertEqual(self.client.pending_calls, 0)
        await self.assert_still_works()

    async def test_server_honours_the_clients_stream_window(self):
        # A small window and a small frame limit: a server that ignored the window would
        # overrun window + one frame and this client would close the connection.
        host, port = _address()
        async with await traitrpc_client.connect(
            host, port, stream_window=500, max_frame_size=1024
        ) as small:
            stream = small.server_stream("Calculator", "count", {"to": 3000, "every_ms": 0})
            items = await asyncio.wait_for(self._collect(stream), 60.0)
            self.assertEqual(items, list(range(1, 3001)))
            self.assertGreater(stream.credit_granted, 100 * 500)
            self.assertEqual(await small.call("Calculator", "add", [1, 1]), 2)

    async def test_close_stream_early(self):
        stream = self.client.server_stream(
            "Calculator", "count", {"to": 1_000_000, "every_ms": 0}
        )
        taken = []
        async for item in stream:
            taken.append(item)
            if len(taken) == 3:
                break
        self.assertEqual(taken, [1, 2, 3])
        self.assertEqual(self.client.pending_calls, 1)
        await stream.aclose()
        self.assertEqual(self.client.pending_calls, 0)
        await stream.aclose()  # Twice is harmless.
        self.assertEqual(await self._collect(stream), [])
        await self.assert_still_works()

    async def test_stream_closed_by_async_with(self):
        async with self.client.server_stream(
            "Calculator", "count", {"to": 1_000_000, "every_ms": 1}
        ) as stream:
            self.assertEqual(await asyncio.wait_for(stream.__anext__(), STEP), 1)
        self.assertEqual(self.client.pending_calls, 0)
        await self.assert_still_works()

    async def test_abandoned_stream_is_cancelled(self):
        stream = self.client.server_stream("Calculator", "count", {"to": 1_000_000, "every_ms": 1})
        self.assertEqual(await asyncio.wait_for(stream.__anext__(), STEP), 1)
        self.assertEqual(self.client.pending_calls, 1)
        del stream
        gc.collect()
        await asyncio.wait_for(self._until(lambda: self.client.pending_calls == 0), STEP)
        await self.assert_still_works()

    async def test_stream_deadline(self):
        stream = self.client.server_stream(
            "Calculator", "count", {"to": 1000, "every_ms": 50}, timeout=0.3
        )
        items = []
        started = time.monotonic()
        with self.assertRaises(traitrpc_client.DeadlineExceeded):
            async for item in stream:
                items.append(item)
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertLess(len(items), 1000)
        self.assertEqual(items, list(range(1, len(items) + 1)))
        self.assertEqual(self.client.pending_calls, 0)
        await self.assert_still_works()

    async def test_stream_task_cancelled(self):
        stream = self.client.server_stream("Calculator", "count", {"to": 10, "every_ms": 60_000})
        self.assertEqual(await asyncio.wait_for(stream.__anext__(), STEP), 1)
        waiting = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        waiting.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await waiting
        self.assertEqual(self.client.pending_calls, 0)
        await self.assert_still_works()

    async def test_streams_and_calls_interleave(self):
        streams = [
            self.client.server_stream("Calculator", "count", {"to": 2000 + i, "every_ms": 0})
            for i in range(5)
        ]

        async def adds():
            return [await self.client.call("Calculator", "add", [i, 1]) for i in range(50)]

        results = await asyncio.wait_for(
            asyncio.gather(adds(), *(self._collect(s) for s in streams)), 60.0
        )
        self.assertEqual(results[0], [i + 1 for i in range(50)])
        for i, items in enumerate(results[1:]):
            self.assertEqual(items, list(range(1, 2001 + i)))

    async def test_unary_method_called_as_stream(self):
        stream = self.client.server_stream("Calculator", "add", {"a": 1, "b": 2})
        with self.assertRaises(traitrpc_client.ProtocolError):
            await asyncio.wait_for(self._collect(stream), STEP)
        await self.assert_still_works()

    async def test_stream_errors(self):
        stream = self.client.server_stream("Calculator", "nope", {})
        with self.assertRaises(traitrpc_client.UnknownMethod):
            await asyncio.wait_for(self._collect(stream), STEP)
        stream = self.client.server_stream("Calculator", "count", {"to": "many"})
        with self.assertRaises(traitrpc_client.InvalidArguments):
            await asyncio.wait_for(self._collect(stream), STEP)

    @staticmethod
    async def _collect(stream):
        return [item async for item in stream]

    # --- Closing ------------------------------------------------------------------------

    async def test_close_fails_pending_calls(self):
        host, port = _address()
        other = await traitrpc_client.connect(host, port)
        task = asyncio.ensure_future(other.call("Calculator", "sleep", [60_000]))
        await asyncio.wait_for(self._until(lambda: other.pending_calls == 1), STEP)
        await other.close()
        with self.assertRaises(traitrpc_client.ConnectionClosed):
            await asyncio.wait_for(task, STEP)
        self.assertTrue(other.closed)
        with self.assertRaises(traitrpc_client.ConnectionClosed) as caught:
            await other.call("Calculator", "add", [1, 2])
        self.assertIs(caught.exception.outcome, traitrpc_client.Outcome.NOT_SENT)
        await other.close()  # Twice is harmless.


if __name__ == "__main__":
    unittest.main()
