"""Peers that vanish at the worst moment: the endpoint fires ``finish`` once and cleans up.

A peer vanishes mid-message (half a frame, then FIN or reset), mid-handshake (half an HTTP
request; or while the ``handshake`` callback runs), and mid-close (it never answers the server's
close frame). Each time ``finish`` fires exactly once for an established connection, no task is left
running, and nothing is logged as an error.

The server runs under ``web.AppRunner`` with and without ``handler_cancellation``: aiohttp's test
server cancels the handler when the peer goes (``handler_cancellation=True``), ``web.run_app``
does not by default, and the endpoint must clean up in both cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from rawws import (
    Opcode,
    RawWebSocket,
    build_frame,
    handshake_headers,
    http_request,
    log_problems,
    reset_connection,
    until,
    wait_for_tasks,
)
from support import TIMEOUT, Recorder, assert_within, watch_for_repeats, within

from aiohttp_wsapp import Connection, WebSocketApp, WebSocketServer

Address = tuple[str, int]
Start = Callable[..., Awaitable[Address]]

SHORT_CLOSE_TIMEOUT = 0.5
"""``close_timeout`` of the mid-close tests: far below the default 10 s, long enough that the
margin of :func:`support.within` covers a loaded machine's stalls."""


@pytest.fixture(autouse=True)
def _no_error_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Fail the test if a traceback or a warning of the endpoint was logged, even in teardown."""
    yield
    for when in ("setup", "call", "teardown"):
        assert not log_problems(caplog.get_records(when)), when


@pytest.fixture(params=[True, False], ids=["handler-cancellation", "no-handler-cancellation"])
def handler_cancellation(request: pytest.FixtureRequest) -> bool:
    """Whether aiohttp cancels the request handler when its peer disconnects."""
    cancel: bool = request.param
    return cancel


@pytest.fixture
async def start(handler_cancellation: bool, recorder: Recorder) -> AsyncIterator[Start]:
    """Start an endpoint with this ``on_establish`` at ``/websocket`` on a loopback port; return
    its address.

    Keyword arguments go to ``WebSocketServer``. The ``recorder`` echoes. This is not the
    ``serve`` fixture because aiohttp's test server always cancels handlers.
    """
    recorder.echo = True
    runners: list[web.AppRunner] = []

    async def start(on_establish: Callable[..., Any], **options: Any) -> Address:
        wsapp = WebSocketApp(on_establish, websocket_server=WebSocketServer(**options))
        app = web.Application()
        app.add_subapp("/websocket", wsapp.to_app())
        runner = web.AppRunner(
            app, handler_cancellation=handler_cancellation, shutdown_timeout=TIMEOUT
        )
        runners.append(runner)
        await runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        host, port = sock.getsockname()[:2]
        await web.SockSite(runner, sock).start()
        return host, port

    yield start
    for runner in runners:
        await runner.cleanup()
    await watch_for_repeats()


async def vanish(writer: asyncio.StreamWriter, how: str) -> None:
    """Make the peer disappear: ``"fin"`` closes the socket, ``"reset"`` resets it."""
    if how == "reset":
        reset_connection(writer)
    else:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# What the peer sends before it vanishes.
PARTIAL_SENDS = {
    "idle": b"",
    "half-a-header": build_frame(Opcode.TEXT, b"x" * 300)[:3],
    "half-a-payload": build_frame(Opcode.TEXT, b"x" * 300)[:150],
    "whole-frame-of-a-fragmented-message": build_frame(Opcode.TEXT, b"first", fin=False),
}


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize("sent", list(PARTIAL_SENDS))
async def test_finish_fires_once_when_peer_vanishes_mid_message(
    start: Start, recorder: Recorder, sent: str, how: str
) -> None:
    host, port = await start(recorder.on_establish)
    before = asyncio.all_tasks()
    ws = await RawWebSocket.connect(host, port)
    conn = await recorder.connection()
    ws.send_raw(PARTIAL_SENDS[sent])
    await vanish(ws.writer, how)
    assert await recorder.finish() is conn
    assert not await wait_for_tasks(before)
    assert recorder.finishes == [conn]
    assert conn.closed
    assert conn.close_code is not None
    assert recorder.messages == []


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_peer_vanishing_mid_message_leaves_no_task_and_no_connection(
    start: Start, recorder: Recorder, how: str
) -> None:
    host, port = await start(recorder.on_establish)
    before = asyncio.all_tasks()
    ws = await RawWebSocket.connect(host, port)
    conn = await recorder.connection()
    ws.send_raw(PARTIAL_SENDS["half-a-payload"])
    await vanish(ws.writer, how)
    await recorder.finish()
    leftover = await wait_for_tasks(before)
    assert not leftover, leftover
    assert len(conn.app.connections) == 0


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_peer_vanishing_mid_request_establishes_nothing(
    start: Start, recorder: Recorder, how: str
) -> None:
    host, port = await start(recorder.on_establish)
    before = asyncio.all_tasks()
    request = http_request(handshake_headers(f"{host}:{port}"))
    _, writer = await asyncio.open_connection(host, port)
    writer.write(request[: len(request) // 2])
    await writer.drain()
    await vanish(writer, how)
    leftover = await wait_for_tasks(before)
    assert not leftover, leftover
    assert recorder.connections == []
    # The endpoint still serves a whole client.
    ws = await RawWebSocket.connect(host, port)
    await recorder.connection()
    ws.send_text("still here")
    assert (await ws.read_message()).payload == b"still here"
    await ws.close_socket()
    await recorder.finish()
    assert len(recorder.finishes) == 1


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_peer_vanishing_during_the_handshake_callback_is_never_half_established(
    start: Start, recorder: Recorder, how: str
) -> None:
    """The peer leaves while ``handshake`` runs: either nothing is established, or ``finish``
    fires once for what was (whichever the endpoint chooses, never an established connection
    without its ``finish``, and never a traceback)."""
    in_callback = asyncio.Event()
    peer_gone = asyncio.Event()

    async def handshake(request: web.Request, response: web.WebSocketResponse) -> None:
        in_callback.set()
        await peer_gone.wait()
        await until(lambda: request.transport is None)

    host, port = await start(recorder.on_establish, handshake=handshake)
    before = asyncio.all_tasks()
    request = http_request(handshake_headers(f"{host}:{port}"))
    _, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await asyncio.wait_for(in_callback.wait(), TIMEOUT)
    await vanish(writer, how)
    peer_gone.set()
    leftover = await wait_for_tasks(before)
    assert not leftover, leftover
    assert len(recorder.connections) == len(recorder.finishes)
    assert recorder.finishes == recorder.connections
    assert not any(c in c.app.connections for c in recorder.connections)


EstablishFunc = Callable[[Connection, web.Request, tuple[Any, ...]], None]


CLOSERS = ["close-in-on-establish", "await-close-in-message-handler"]
"""How the server starts its closing handshake: ``conn.close()`` called (not awaited) from
``on_establish``, or awaited by a ``message`` handler, once the peer sent a message."""


@pytest.fixture(params=CLOSERS)
def closer(request: pytest.FixtureRequest) -> str:
    """Each way the server starts its closing handshake, in turn."""
    how: str = request.param
    return how


def closing(recorder: Recorder, closer: str, closed_at: list[float] | None = None) -> EstablishFunc:
    """An ``on_establish``: ``recorder`` records, then the server closes as ``closer`` says,
    appending the loop's time at which it called ``close`` to ``closed_at``."""
    loop = asyncio.get_running_loop()
    started = [] if closed_at is None else closed_at

    async def close_on_message(conn: Connection, message: str | bytes) -> None:
        started.append(loop.time())
        await conn.close(1000, "bye")

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        if closer == "close-in-on-establish":
            started.append(loop.time())
            conn.close(1000, "bye")
        else:
            conn.on("message", close_on_message)

    return on_establish


async def connect_and_get_closed(host: str, port: int, closer: str) -> RawWebSocket:
    """Connect, make the server start its closing handshake, and read its close frame."""
    ws = await RawWebSocket.connect(host, port)
    if closer == "await-close-in-message-handler":
        ws.send_text("close, please")
    close = await ws.read_close()
    assert (close.close_code, close.close_reason) == (1000, "bye")
    return ws


async def test_finish_fires_once_when_peer_never_answers_the_close_frame(
    start: Start, recorder: Recorder, closer: str
) -> None:
    closed_at: list[float] = []
    on_establish = closing(recorder, closer, closed_at)
    host, port = await start(on_establish, close_timeout=SHORT_CLOSE_TIMEOUT)
    before = asyncio.all_tasks()
    ws = await connect_and_get_closed(host, port, closer)
    # The peer stays connected and silent: only close_timeout can end the closing handshake.
    conn = await recorder.finish(timeout=within(SHORT_CLOSE_TIMEOUT) + TIMEOUT)
    waited = recorder.finished_at[conn] - closed_at[0]
    assert_within(waited, SHORT_CLOSE_TIMEOUT, at_least=SHORT_CLOSE_TIMEOUT)
    assert not await wait_for_tasks(before)
    assert recorder.finishes == [conn]
    assert conn.closed
    await ws.close_socket()


async def test_socket_is_dropped_when_peer_never_answers_the_close_frame(
    start: Start, recorder: Recorder, closer: str
) -> None:
    """SPEC §3: ``close_timeout`` is how long the closing handshake waits for the peer's close
    frame before the socket is dropped: no sooner, and not much later."""
    closed_at: list[float] = []
    on_establish = closing(recorder, closer, closed_at)
    host, port = await start(on_establish, close_timeout=SHORT_CLOSE_TIMEOUT)
    ws = await connect_and_get_closed(host, port, closer)
    await ws.wait_eof(timeout=within(SHORT_CLOSE_TIMEOUT) + TIMEOUT)
    # Measured from the server's call of close(), on the same clock: exact on the early side.
    waited = asyncio.get_running_loop().time() - closed_at[0]
    assert_within(waited, SHORT_CLOSE_TIMEOUT, at_least=SHORT_CLOSE_TIMEOUT)
    await recorder.finish()
    await ws.close_socket()


async def test_closing_handshake_completes_when_peer_answers(
    start: Start, recorder: Recorder, closer: str
) -> None:
    host, port = await start(closing(recorder, closer))  # the default close_timeout: 10 s
    before = asyncio.all_tasks()
    ws = await connect_and_get_closed(host, port, closer)
    ws.send_close(1000, "bye")
    await ws.wait_eof()
    conn = await recorder.finish()
    assert not await wait_for_tasks(before)
    assert recorder.finishes == [conn]
    assert (conn.close_code, conn.close_reason) == (1000, "bye")
    await ws.close_socket()


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_finish_fires_once_when_peer_vanishes_instead_of_answering_the_close_frame(
    start: Start, recorder: Recorder, closer: str, how: str
) -> None:
    host, port = await start(closing(recorder, closer))  # the default close_timeout: 10 s
    before = asyncio.all_tasks()
    ws = await connect_and_get_closed(host, port, closer)
    await vanish(ws.writer, how)
    # Long before close_timeout: the endpoint sees the peer go and does not wait for it.
    conn = await recorder.finish()
    assert not await wait_for_tasks(before)
    assert recorder.finishes == [conn]
