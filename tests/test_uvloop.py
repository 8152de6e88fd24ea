"""The close paths and ``latency`` under uvloop, the event loop many aiohttp deployments run.

Each test runs its own ``uvloop.Loop``, whichever loop the rest of the suite runs on
(``AIOHTTP_WSAPP_LOOP``, see ``conftest.py``), serving a real endpoint on a loopback port. The
same paths are tested under asyncio's loop in ``test_lifecycle.py``, ``test_closing.py`` and
``test_connection.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rawws import RawWebSocket, until
from support import TIMEOUT, Recorder, assert_within, require_module, within
from websockets.asyncio.client import connect as websockets_connect

from aiohttp_wsapp import Connection, ConnectionState, WebSocketApp, WebSocketServer

CLOSE_TIMEOUT = 0.5
BULK = b"x" * (12 * 1024 * 1024)
"""More than the kernel buffers for a peer that does not read."""

Scenario = Callable[[TestServer, WebSocketApp, Recorder], Awaitable[None]]


def run_under_uvloop(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` on a new uvloop loop, in debug mode as the rest of the suite."""
    require_module("uvloop", "pip install uvloop")
    import uvloop

    uvloop.run(coroutine, debug=True)


async def serve(
    scenario: Scenario, on_establish: Callable[..., Any] | None = None, **settings: Any
) -> None:
    """Serve an endpoint with ``settings`` at ``/``; run ``scenario`` against it; shut down."""
    recorder = Recorder()
    wsapp = WebSocketApp(
        on_establish or recorder.on_establish, websocket_server=WebSocketServer(**settings)
    )
    server = TestServer(wsapp.to_app(), host="127.0.0.1")
    await server.start_server()
    try:
        await scenario(server, wsapp, recorder)
    finally:
        await server.close()


def test_the_loop_is_uvloop() -> None:
    async def check() -> None:
        import uvloop

        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)

    run_under_uvloop(check())


def test_end_of_stream_with_data_queued_finishes_within_close_timeout() -> None:
    """A peer that stops reading with data queued and then half-closes, heartbeat off."""

    def stuff(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.send(BULK)

    async def scenario(server: TestServer, wsapp: WebSocketApp, _: Recorder) -> None:
        assert server.port is not None
        client = await RawWebSocket.connect(server.host, server.port, "/", receive_buffer=4096)
        conn = await recorder.connection()
        await until(lambda: conn.buffered_amount > 0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        client.writer.write_eof()
        finished = await recorder.finish(timeout=within(CLOSE_TIMEOUT) + TIMEOUT)
        # The peer's end of stream starts the closing; the deadline drops the socket.
        assert_within(loop.time() - started, CLOSE_TIMEOUT, at_least=CLOSE_TIMEOUT)
        assert finished.state is ConnectionState.CLOSED
        assert finished.close_code == 1006
        assert conn not in wsapp.connections
        client.abort()

    recorder = Recorder()
    run_under_uvloop(serve(scenario, stuff, heartbeat=None, close_timeout=CLOSE_TIMEOUT))


def test_latency_measures_the_round_trip_of_a_heartbeat_ping() -> None:
    async def scenario(server: TestServer, wsapp: WebSocketApp, recorder: Recorder) -> None:
        async with websockets_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            conn = await recorder.connection()
            await until(lambda: conn.latency is not None)
            assert conn.latency is not None
            assert 0 < conn.latency < TIMEOUT
            await ws.close()

    run_under_uvloop(serve(scenario, heartbeat=0.05))


def test_shutdown_ends_when_the_peer_answers_with_a_fin() -> None:
    async def scenario(server: TestServer, wsapp: WebSocketApp, recorder: Recorder) -> None:
        assert server.port is not None
        peer = await RawWebSocket.connect(server.host, server.port, "/")
        await recorder.connection()
        shutdown = asyncio.create_task(server.close())
        frame = await peer.read_close()
        assert frame.close_code == 1001
        peer.send_close(1001)
        await peer.wait_fin()
        await peer.close_socket()
        await asyncio.wait_for(shutdown, TIMEOUT)
        assert (await recorder.finish()).close_code == 1001

    run_under_uvloop(serve(scenario, close_timeout=60.0))


@pytest.mark.parametrize("code", [4000, 1000])
def test_our_close_answered_by_the_peer_ends_with_a_fin(code: int) -> None:
    async def scenario(server: TestServer, wsapp: WebSocketApp, recorder: Recorder) -> None:
        assert server.port is not None
        peer = await RawWebSocket.connect(server.host, server.port, "/")
        conn = await recorder.connection()
        conn.close(code)
        frame = await peer.read_close()
        peer.send_close(frame.close_code or 1000)
        await peer.wait_fin()
        await peer.close_socket()
        assert (await recorder.finish()).close_code == code

    run_under_uvloop(serve(scenario, close_timeout=60.0))
