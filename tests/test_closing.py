"""Every way into closing ends as soon as the peer answers the close, with a FIN, not a reset.

The peers here answer the close themselves, as browsers and the ``websockets`` client do: a raw
socket that sends its close frame and then waits for the server to end the TCP connection, and
``websockets``. ``close_timeout`` is far longer than the tests wait, so that a connection that
waited for it instead of the peer's answer fails them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from conftest import Serve
from rawws import Opcode, RawWebSocket, address
from support import TIMEOUT, Recorder
from websockets.asyncio.client import connect as websockets_connect

from aiohttp_wsapp import Connection, WebSocketServer

LONG_CLOSE_TIMEOUT = 60.0
"""Far longer than any test waits: a connection that waited for it fails the test."""


def patient(**settings: Any) -> WebSocketServer:
    return WebSocketServer(close_timeout=LONG_CLOSE_TIMEOUT, **settings)


async def answer_close(peer: RawWebSocket) -> int | None:
    """Read up to the server's close frame, answer it with the same code; return the code."""
    frame = await peer.read_close()
    peer.send_close(frame.close_code or 1000)
    return frame.close_code


async def test_shutdown_ends_when_the_peer_answers_with_a_fin(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, websocket_server=patient())
    peer = await RawWebSocket.connect(*address(endpoint.server))
    await recorder.connection()
    shutdown = asyncio.create_task(endpoint.server.close())
    assert await answer_close(peer) == 1001
    await peer.wait_fin()
    await peer.close_socket()
    await asyncio.wait_for(shutdown, TIMEOUT)
    conn = await recorder.finish()
    assert conn.close_code == 1001
    assert recorder.finish_count == 1


async def test_shutdown_ends_when_a_websockets_client_answers(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, websocket_server=patient())
    async with websockets_connect(endpoint.url()) as ws:
        await recorder.connection()
        await asyncio.wait_for(endpoint.server.close(), TIMEOUT)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
    conn = await recorder.finish()
    assert conn.close_code == 1001


async def test_our_close_answered_by_the_peer_ends_with_a_fin(
    serve: Serve, recorder: Recorder
) -> None:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.on("message", lambda c, m: c.close(4000, "bye"))

    endpoint = await serve(on_establish, websocket_server=patient())
    peer = await RawWebSocket.connect(*address(endpoint.server))
    peer.send_text("close, please")
    assert await answer_close(peer) == 4000
    await peer.wait_fin()
    await peer.close_socket()
    conn = await recorder.finish()
    assert (conn.close_code, conn.close_reason) == (4000, "bye")


async def test_a_handler_error_answered_by_the_peer_ends_with_a_fin(
    serve: Serve, recorder: Recorder
) -> None:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.on("message", lambda c, m: 1 / 0)
        conn.on("error", lambda c, exc: None)

    endpoint = await serve(on_establish, websocket_server=patient())
    peer = await RawWebSocket.connect(*address(endpoint.server))
    peer.send_text("fail")
    assert await answer_close(peer) == 1011
    await peer.wait_fin()
    await peer.close_socket()
    conn = await recorder.finish()
    assert conn.close_code == 1011


async def test_a_message_over_max_payload_size_answered_by_the_peer_ends_with_a_fin(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, websocket_server=patient(max_payload_size=1024))
    peer = await RawWebSocket.connect(*address(endpoint.server))
    await recorder.connection()
    peer.send_frame(Opcode.BINARY, b"\x00" * 1025)
    assert await answer_close(peer) == 1009
    await peer.wait_fin()
    await peer.close_socket()
    conn = await recorder.finish()
    assert conn.close_code == 1009


async def test_a_websockets_client_over_max_payload_size_closes_cleanly(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, websocket_server=patient(max_payload_size=1024))
    async with websockets_connect(endpoint.url(), compression=None) as ws:
        await recorder.connection()
        await ws.send(b"\x00" * 1025)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert ws.close_code == 1009
    conn = await recorder.finish()
    assert conn.close_code == 1009


async def test_a_large_message_over_max_payload_size_answered_by_the_peer_ends_with_a_fin(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, websocket_server=patient(max_payload_size=1024))
    peer = await RawWebSocket.connect(*address(endpoint.server))
    await recorder.connection()
    peer.send_frame(Opcode.BINARY, b"\x00" * 1024 * 1024)
    assert await answer_close(peer) == 1009
    await peer.wait_fin()
    await peer.close_socket()
    conn = await recorder.finish()
    assert conn.close_code == 1009
