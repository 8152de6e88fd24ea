"""``Connection``: registering handlers, dispatch rules, sending, closing, state."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from conftest import Serve
from rawws import until
from support import TIMEOUT, Recorder, assert_within, within
from test_lifecycle import server_socket_exists
from test_limits import open_raw_websocket

from aiohttp_wsapp import Connection, ConnectionClosed, WebSocketServer

Establish = Callable[[Connection, web.Request, tuple[Any, ...]], Any]


async def connect(serve: Serve, on_establish: Establish, **kwargs: Any) -> tuple[Any, Any]:
    """Serve ``on_establish`` and open one client connection to it."""
    endpoint = await serve(on_establish, **kwargs)
    ws = await endpoint.client.ws_connect("/websocket")
    return endpoint, ws


# -- registering ---------------------------------------------------------------------------------


async def test_handlers_of_one_event_run_in_registration_order(serve: Serve) -> None:
    calls: asyncio.Queue[str] = asyncio.Queue()

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.on("message", lambda c, m: calls.put_nowait(f"first {m}"))
        conn.on("message", lambda c, m: calls.put_nowait(f"second {m}"))
        conn.on(message=lambda c, m: calls.put_nowait(f"third {m}"))

    _, ws = await connect(serve, on_establish)
    await ws.send_str("a")
    got = [await asyncio.wait_for(calls.get(), TIMEOUT) for _ in range(3)]
    assert got == ["first a", "second a", "third a"]
    await ws.close()


async def test_keyword_form_returns_unregisters_in_argument_order(serve: Serve) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        unregisters = conn.on(
            finish=lambda c: seen.put_nowait("finish"),
            message=lambda c, m: seen.put_nowait(f"message {m}"),
            error=lambda c, e: seen.put_nowait("error"),
        )
        assert len(unregisters) == 3
        unregisters[1]()  # the second argument's: the message handler
        conn.on("message", lambda c, m: seen.put_nowait(f"witness {m}"))

    _, ws = await connect(serve, on_establish)
    await ws.send_str("a")
    assert await asyncio.wait_for(seen.get(), TIMEOUT) == "witness a"  # not "message a"
    await ws.close()
    assert await asyncio.wait_for(seen.get(), TIMEOUT) == "finish"  # the first still registered
    assert seen.empty()


async def test_decorator_form_registers_and_returns_the_function(serve: Serve) -> None:
    seen: asyncio.Queue[str | bytes] = asyncio.Queue()
    decorated: list[Callable[..., Any]] = []

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        @conn.on("message")
        def record(conn: Connection, message: str | bytes) -> None:
            seen.put_nowait(message)

        decorated.append(record)

    _, ws = await connect(serve, on_establish)
    await ws.send_str("decorated")
    assert await asyncio.wait_for(seen.get(), TIMEOUT) == "decorated"
    assert decorated[0].__name__ == "record"
    await ws.close()


async def test_unregister_is_idempotent_and_off_removes(serve: Serve) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    def first(conn: Connection, message: str) -> None:
        seen.put_nowait("first")

    def second(conn: Connection, message: str) -> None:
        seen.put_nowait("second")

    def last(conn: Connection, message: str) -> None:
        seen.put_nowait("last")

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        unregister = conn.on("message", first)
        unregister()
        unregister()
        conn.on("message", second)
        conn.off("message", second)
        conn.on("message", last)

    _, ws = await connect(serve, on_establish)
    await ws.send_str("x")
    assert await asyncio.wait_for(seen.get(), TIMEOUT) == "last"
    assert seen.empty()
    await ws.close()


async def test_message_handler_with_a_third_parameter_gets_its_unregister(serve: Serve) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    def once(conn: Connection, message: str, unregister: Callable[[], None]) -> None:
        seen.put_nowait("once " + message)
        unregister()

    def every(conn: Connection, message: str, *rest: Any) -> None:
        seen.put_nowait(f"every {message} {len(rest)}")

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        conn.on(message=once)
        conn.on(message=every)

    _, ws = await connect(serve, on_establish)
    await ws.send_str("1")
    await ws.send_str("2")
    got = [await asyncio.wait_for(seen.get(), TIMEOUT) for _ in range(3)]
    assert got == ["once 1", "every 1 1", "every 2 1"]
    await ws.close()


async def test_unregistering_during_dispatch_takes_effect_from_the_next_event(
    serve: Serve,
) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        def first(conn: Connection, message: str) -> None:
            seen.put_nowait("first " + message)
            unregister_second()
            conn.on("message", lambda c, m: seen.put_nowait("added " + m))

        conn.on("message", first)
        unregister_second = conn.on("message", lambda c, m: seen.put_nowait("second " + m))

    _, ws = await connect(serve, on_establish)
    for message in "abc":
        await ws.send_str(message)
    got = [await asyncio.wait_for(seen.get(), TIMEOUT) for _ in range(7)]
    assert got[:2] == ["first a", "second a"]  # second was unregistered during this event
    assert got[2:4] == ["first b", "added b"]  # added during a; the one added during b waits
    assert got[4:] == ["first c", "added c", "added c"]
    await ws.close()


async def test_on_validates_event_names_and_handlers(serve: Serve, recorder: Recorder) -> None:
    _, ws = await connect(serve, recorder.on_establish)
    conn = await recorder.connection()
    with pytest.raises(ValueError, match="unknown event"):
        conn.on("open", print)
    with pytest.raises(ValueError, match="unknown event"):
        conn.on("open")
    with pytest.raises(ValueError, match="unknown event"):
        conn.on(bogus=print)
    with pytest.raises(ValueError, match="unknown event"):
        conn.off("open", print)
    with pytest.raises(TypeError, match="callable"):
        conn.on("message", "not callable")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="keyword handlers"):
        conn.on("message", print, finish=print)  # type: ignore[call-overload]
    await ws.close()


# -- dispatch ------------------------------------------------------------------------------------


async def test_coroutine_handler_is_awaited_before_the_next_message(serve: Serve) -> None:
    order: asyncio.Queue[str] = asyncio.Queue()
    release = asyncio.Event()

    async def slow(conn: Connection, message: str) -> None:
        order.put_nowait("start " + message)
        if message == "1":
            await release.wait()
        order.put_nowait("end " + message)

    _, ws = await connect(serve, lambda conn, request, hs: conn.on("message", slow))
    await ws.send_str("1")
    await ws.send_str("2")
    assert await asyncio.wait_for(order.get(), TIMEOUT) == "start 1"
    release.set()
    got = [await asyncio.wait_for(order.get(), TIMEOUT) for _ in range(3)]
    assert got == ["end 1", "start 2", "end 2"]
    await ws.close()


async def test_messages_sent_before_on_establish_returns_are_all_delivered(
    serve: Serve,
) -> None:
    seen: asyncio.Queue[str | bytes] = asyncio.Queue()
    established = asyncio.Event()
    proceed = asyncio.Event()

    async def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        established.set()
        await proceed.wait()  # the client sends while this coroutine is still running
        conn.on("message", lambda c, m: seen.put_nowait(m))

    _, ws = await connect(serve, on_establish)
    await asyncio.wait_for(established.wait(), TIMEOUT)
    for i in range(5):
        await ws.send_str(str(i))
    await ws.send_bytes(b"last")
    proceed.set()
    got = [await asyncio.wait_for(seen.get(), TIMEOUT) for _ in range(6)]
    assert got == ["0", "1", "2", "3", "4", b"last"]
    await ws.close()


async def test_text_is_str_binary_is_bytes_and_empty_messages_arrive(
    serve: Serve, recorder: Recorder
) -> None:
    _, ws = await connect(serve, recorder.on_establish)
    await ws.send_str("")
    await ws.send_bytes(b"")
    await ws.send_str("é")
    assert [await recorder.message() for _ in range(3)] == ["", b"", "é"]
    await ws.close()


# -- sending -------------------------------------------------------------------------------------


async def test_send_str_bytes_bytearray_memoryview_and_json(serve: Serve) -> None:
    async def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        await conn.send("text")
        await conn.send(b"bytes")
        conn.send(bytearray(b"bytearray"))
        conn.send(memoryview(b"memoryview"))
        await conn.send_json({"a": [1, 2]})
        await conn.send_json([1], dumps=lambda obj: json.dumps(obj).encode())

    _, ws = await connect(serve, on_establish)
    received = [await ws.receive(TIMEOUT) for _ in range(6)]
    assert [(m.type, m.data) for m in received] == [
        (WSMsgType.TEXT, "text"),
        (WSMsgType.BINARY, b"bytes"),
        (WSMsgType.BINARY, b"bytearray"),
        (WSMsgType.BINARY, b"memoryview"),
        (WSMsgType.TEXT, '{"a": [1, 2]}'),
        (WSMsgType.TEXT, "[1]"),
    ]
    await ws.close()


async def test_send_of_other_types_raises_type_error(serve: Serve) -> None:
    outcome: asyncio.Future[BaseException] = asyncio.Future()

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        try:
            conn.send(42)  # type: ignore[arg-type]
        except TypeError as exc:
            outcome.set_result(exc)

    _, ws = await connect(serve, on_establish)
    assert isinstance(await asyncio.wait_for(outcome, TIMEOUT), TypeError)
    await ws.close()


async def test_sends_not_awaited_happen_in_call_order(serve: Serve) -> None:
    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        for i in range(100):
            conn.send(str(i))
        conn.close(4001, "done")

    _, ws = await connect(serve, on_establish)
    got = [await ws.receive_str(timeout=TIMEOUT) for _ in range(100)]
    assert got == [str(i) for i in range(100)]
    closing = await ws.receive(TIMEOUT)
    assert (closing.type, ws.close_code) == (WSMsgType.CLOSE, 4001)
    assert closing.extra == "done"


@pytest.mark.parametrize("compress", [15, 0])
async def test_large_messages_round_trip_with_and_without_compression(
    serve: Serve, compress: int
) -> None:
    endpoint = await serve(lambda conn, request, hs: conn.on("message", lambda c, m: c.send(m)))
    payload = bytes(range(256)) * 1024
    async with endpoint.client.ws_connect("/websocket", compress=compress) as ws:
        for _ in range(3):
            await ws.send_bytes(payload)
            assert await ws.receive_bytes(timeout=TIMEOUT) == payload
            await ws.send_str("ü" * 70000)
            assert await ws.receive_str(timeout=TIMEOUT) == "ü" * 70000


async def test_compression_without_context_takeover(serve: Serve) -> None:
    from websockets.asyncio.client import connect as websockets_connect
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    endpoint = await serve(lambda conn, request, hs: conn.on("message", lambda c, m: c.send(m)))
    offer = ClientPerMessageDeflateFactory(server_no_context_takeover=True)
    async with websockets_connect(endpoint.url(), extensions=[offer], compression=None) as ws:
        assert ws.response is not None
        assert "server_no_context_takeover" in ws.response.headers["Sec-WebSocket-Extensions"]
        for text in ("abc" * 100, "abc" * 100, "xyz"):
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == text


async def test_awaited_operations_on_a_closed_connection_raise(
    serve: Serve, recorder: Recorder
) -> None:
    _, ws = await connect(serve, recorder.on_establish)
    conn = await recorder.connection()
    await ws.close()
    await recorder.finish()
    assert conn.closed
    for operation in (conn.send("x"), conn.send_json(1), conn.ping()):
        with pytest.raises(ConnectionClosed):
            await operation
    await conn.close()  # closing a closed connection does nothing


async def test_operations_not_awaited_on_a_closed_connection_warn_nothing(
    serve: Serve, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Not awaited, an operation on a closed connection is dropped with a debug line: no
    "exception was never retrieved" from the loop (a log line, which filterwarnings misses)."""
    _, ws = await connect(serve, recorder.on_establish)
    conn = await recorder.connection()
    await ws.close()
    await recorder.finish()
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: reported.append(context["message"]))
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp_wsapp"):
            conn.send("dropped")
            conn.send_json(["dropped"])
            conn.ping()
            conn.close()
        gc.collect()  # what was never awaited is freed, and reported if it held an exception
        await asyncio.sleep(0)
        assert reported == []
        # The same check sees a future whose exception nobody retrieved.
        unretrieved = loop.create_future()
        unretrieved.set_exception(ConnectionClosed(1000))
        del unretrieved
        gc.collect()
        assert reported == ["Future exception was never retrieved"]
    finally:
        loop.set_exception_handler(previous)
    ours = [r for r in caplog.records if r.name == "aiohttp_wsapp"]
    assert [r.levelno for r in ours] == [logging.DEBUG] * len(ours)
    assert len([r for r in ours if "dropped" in r.getMessage()]) >= 3  # send, send_json, ping


async def test_ping_reaches_the_peer(serve: Serve) -> None:
    endpoint = await serve(lambda conn, request, hs: conn.ping(b"are you there"))
    async with endpoint.client.ws_connect("/websocket", autoping=False) as ws:
        message = await ws.receive(TIMEOUT)
        assert (message.type, message.data) == (WSMsgType.PING, b"are you there")


async def test_close_is_idempotent_and_carries_code_and_reason(
    serve: Serve, recorder: Recorder
) -> None:
    _, ws = await connect(serve, recorder.on_establish)
    conn = await recorder.connection()
    await conn.close(4000, "bye")
    await conn.close()  # does nothing: the first close stands
    message = await ws.receive(TIMEOUT)
    assert (message.type, message.data, message.extra) == (WSMsgType.CLOSE, 4000, "bye")
    finished = await recorder.finish()
    assert (finished.close_code, finished.close_reason) == (4000, "bye")


@pytest.mark.parametrize(("code", "reason"), [(1005, ""), (999, ""), (1000, "x" * 124)])
async def test_close_refuses_codes_and_reasons_the_protocol_forbids(
    serve: Serve, recorder: Recorder, code: int, reason: str
) -> None:
    _, ws = await connect(serve, recorder.on_establish)
    conn = await recorder.connection()
    with pytest.raises(ValueError, match="close"):
        conn.close(code, reason)
    await ws.close()


# -- state ---------------------------------------------------------------------------------------


async def test_properties_describe_the_connection(serve: Serve, recorder: Recorder) -> None:
    endpoint, ws = await connect(serve, recorder.on_establish)
    conn = await recorder.connection()
    assert conn.request.path == "/websocket"
    assert isinstance(conn.ws, web.WebSocketResponse)
    assert conn.app is endpoint.wsapp
    assert conn.protocol is None
    assert not conn.closed
    assert (conn.close_code, conn.close_reason) == (None, None)
    assert conn.buffered_amount == 0
    assert conn in endpoint.wsapp.connections
    assert list(endpoint.wsapp.connections) == [conn]
    assert not hasattr(endpoint.wsapp.connections, "add")  # read-only
    await ws.close()
    await recorder.finish()
    assert conn not in endpoint.wsapp.connections


async def test_applications_may_keep_their_own_state_on_a_connection(serve: Serve) -> None:
    # Applications keep per-connection state on the connection itself, as users of ws do.
    finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def greet(conn: Any, message: str) -> None:
        conn.send(f"{conn.user}: {message}")

    def on_establish(conn: Any, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.user = request.query["user"]
        conn.on("message", greet)
        conn.on("finish", lambda c: finished.set_result(c.user))

    endpoint = await serve(on_establish)
    ws = await endpoint.client.ws_connect("/websocket?user=ada")
    await ws.send_str("hello")
    assert (await ws.receive(timeout=TIMEOUT)).data == "ada: hello"
    await ws.close()
    assert await asyncio.wait_for(finished, TIMEOUT) == "ada"


async def test_client_close_sets_code_and_reason(serve: Serve, recorder: Recorder) -> None:
    _, ws = await connect(serve, recorder.on_establish)
    await ws.close(code=4321, message=b"client leaves")
    conn = await recorder.finish()
    assert conn.closed
    assert (conn.close_code, conn.close_reason) == (4321, "client leaves")


async def test_close_alias_registers_a_finish_handler(serve: Serve) -> None:
    finished: asyncio.Future[Connection] = asyncio.Future()
    _, ws = await connect(serve, lambda c, r, hs: c.on("close", finished.set_result))
    await ws.close()
    assert isinstance(await asyncio.wait_for(finished, TIMEOUT), Connection)


async def test_finish_handler_registered_after_finish_runs_soon(
    serve: Serve, recorder: Recorder
) -> None:
    _, ws = await connect(serve, recorder.on_establish)
    await ws.close()
    conn = await recorder.finish()
    late: asyncio.Future[Connection] = asyncio.Future()

    async def record(conn: Connection) -> None:
        late.set_result(conn)

    conn.on("finish", record)
    assert await asyncio.wait_for(late, TIMEOUT) is conn


async def test_finish_fires_once_when_the_peer_drops_without_closing(
    serve: Serve, recorder: Recorder
) -> None:
    _, ws = await connect(serve, recorder.on_establish)
    await recorder.connection()
    ws._response.connection.transport.abort()
    conn = await recorder.finish()
    assert conn.close_code == 1006
    await ws.close()
    assert recorder.finish_count == 1


async def test_finish_handler_completes_though_the_request_handler_is_cancelled(
    serve: Serve,
) -> None:
    """aiohttp cancels a request handler whose peer went away (``handler_cancellation``), and
    shutdown cancels one still running after ``close_timeout``: a finish handler that is running
    at that moment still runs to its end (it is shielded)."""
    handlers: asyncio.Future[asyncio.Task[Any]] = asyncio.Future()
    finishing, release = asyncio.Event(), asyncio.Event()
    done: asyncio.Future[str] = asyncio.Future()

    interrupted: list[str] = []

    async def finish(conn: Connection) -> None:
        finishing.set()
        try:
            await release.wait()  # the cancellation would land here
        except asyncio.CancelledError:
            interrupted.append("cancelled while it ran")
            raise
        done.set_result("complete")

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.set_result(task)  # on_establish runs in the request handler's task
        conn.on("finish", finish)

    _, ws = await connect(serve, on_establish)
    handler = await asyncio.wait_for(handlers, TIMEOUT)
    await ws.close()
    await asyncio.wait_for(finishing.wait(), TIMEOUT)
    handler.cancel()
    await asyncio.wait([handler], timeout=TIMEOUT)  # the request handler stops at once
    assert handler.done()
    assert interrupted == []
    assert not done.done()
    release.set()
    assert await asyncio.wait_for(done, TIMEOUT) == "complete"


async def test_server_close_while_client_sends(serve: Serve) -> None:
    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        conn.on("message", lambda c, m: c.close(1000, "enough") if m == "stop" else None)

    _, ws = await connect(serve, on_establish)
    await ws.send_str("hello")
    await ws.send_str("stop")
    message = await ws.receive(TIMEOUT)
    assert (message.type, message.data, message.extra) == (WSMsgType.CLOSE, 1000, "enough")


async def test_heartbeat_drops_a_peer_that_stops_answering_pings(
    serve: Serve, recorder: Recorder
) -> None:
    server = WebSocketServer(heartbeat=0.1)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    async with endpoint.client.ws_connect("/websocket", autoping=False):
        conn = await recorder.finish()  # the client never reads, so it never answers a ping
        assert conn.close_code == 1006


async def test_works_with_the_websockets_client(serve: Serve) -> None:
    from websockets.asyncio.client import connect as websockets_connect

    endpoint = await serve(lambda conn, request, hs: conn.on("message", lambda c, m: c.send(m)))
    async with websockets_connect(endpoint.url()) as ws:
        for message in ("text", b"binary", "", b"", "ü" * 10000):
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message


async def test_aiohttp_client_session_is_fine_too(serve: Serve) -> None:
    endpoint = await serve(lambda conn, request, hs: conn.send("greeting"))
    async with aiohttp.ClientSession() as session, session.ws_connect(endpoint.url()) as ws:
        assert await ws.receive_str(timeout=TIMEOUT) == "greeting"


class _Handlers:
    """Message handlers as methods, with and without the unregister parameter."""

    def __init__(self, seen: asyncio.Queue[str]) -> None:
        self.seen = seen

    def two(self, conn: Connection, message: str) -> None:
        self.seen.put_nowait(f"two {message}")

    def three(self, conn: Connection, message: str, unregister: Callable[[], None]) -> None:
        self.seen.put_nowait(f"three {message}")
        unregister()


def _forwarding(handler: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(handler)
    def wrapper(*args: Any) -> None:
        handler(*args)

    return wrapper


async def test_unregister_argument_follows_methods_partials_and_wrappers(serve: Serve) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()
    handlers = _Handlers(seen)

    def record(prefix: str, conn: Connection, message: str) -> None:
        seen.put_nowait(f"{prefix} {message}")

    def with_default(conn: Connection, message: str, extra: str = "default") -> None:
        seen.put_nowait(f"{extra} {message}")

    def on_establish(conn: Connection, request: web.Request, hs: tuple[Any, ...]) -> None:
        conn.on("message", handlers.two)
        conn.on("message", handlers.three)
        conn.on("message", functools.partial(record, "partial"))
        conn.on("message", _forwarding(handlers.two))
        conn.on("message", with_default)

    _, ws = await connect(serve, on_establish)
    await ws.send_str("m")
    got = [await asyncio.wait_for(seen.get(), TIMEOUT) for _ in range(5)]
    assert got == ["two m", "three m", "partial m", "two m", "default m"]
    await ws.close()


async def test_finish_handler_registered_by_a_finish_handler_runs(serve: Serve) -> None:
    late: asyncio.Future[str] = asyncio.Future()

    def first(conn: Connection) -> None:
        conn.on("finish", lambda conn: late.set_result("registered during finish"))

    _, ws = await connect(serve, lambda conn, request, hs: conn.on("finish", first))
    await ws.close()
    assert await asyncio.wait_for(late, TIMEOUT) == "registered during finish"


MASKED_CLOSE_WITHOUT_CODE = bytes((0x88, 0x80, 0, 0, 0, 0))
MASKED_CLOSE_1000 = bytes((0x88, 0x82, 0, 0, 0, 0)) + (1000).to_bytes(2, "big")


async def test_close_frame_without_a_code_is_1005(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve(recorder.on_establish)
    _, writer = await open_raw_websocket(endpoint)
    writer.write(MASKED_CLOSE_WITHOUT_CODE)
    conn = await recorder.finish()
    assert (conn.close_code, conn.close_reason) == (1005, "")
    writer.close()
    await writer.wait_closed()


async def test_peer_that_closes_and_stops_reading_still_finishes(
    serve: Serve, recorder: Recorder
) -> None:
    def fill(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        for _ in range(12):  # more than the sockets hold, less than send_buffer_limit
            conn.send(b"\x00" * 1024 * 1024)

    close_timeout = 0.5
    server = WebSocketServer(compress=False, close_timeout=close_timeout)
    endpoint = await serve(fill, websocket_server=server)
    _, writer = await open_raw_websocket(endpoint)
    await recorder.connection()
    loop = asyncio.get_running_loop()
    since = loop.time()
    writer.write(MASKED_CLOSE_1000)  # then never reads what the server sent
    conn = await recorder.finish(timeout=within(close_timeout) + TIMEOUT)
    assert conn.close_code == 1000
    assert recorder.finished_at[conn] - since <= within(close_timeout)
    # The server's answer cannot get through: the socket goes when close_timeout ends.
    await until(lambda: not server_socket_exists(endpoint, writer), within(close_timeout) + TIMEOUT)
    assert_within(loop.time() - since, close_timeout, at_least=close_timeout)
    writer.close()
    with contextlib.suppress(ConnectionResetError):  # the server dropped it with a reset
        await writer.wait_closed()
