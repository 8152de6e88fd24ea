"""Origins, connection limits, slow peers and backpressure."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from conftest import Endpoint, Serve, echo
from pytest_aiohttp import AiohttpClient
from rawws import RawWebSocket, address, until
from support import TIMEOUT, Recorder

from aiohttp_wsapp import ERROR_KEY, ORIGIN_NOT_ALLOWED, Connection, WebSocketApp, WebSocketServer

# -- origins -----------------------------------------------------------------------------------


async def handshake_status(endpoint: Endpoint, origin: str | None) -> int:
    """The status of a handshake sent with ``origin`` (or none): 101 when it succeeds."""
    headers = {} if origin is None else {"Origin": origin}
    try:
        async with endpoint.client.ws_connect("/websocket", headers=headers):
            return 101
    except Exception as exc:
        return int(getattr(exc, "status", 0))


def own_origin(endpoint: Endpoint) -> str:
    return f"http://{endpoint.server.host}:{endpoint.server.port}"


async def test_default_allows_no_origin_and_the_same_origin(serve: Serve) -> None:
    endpoint = await serve(echo)
    assert await handshake_status(endpoint, None) == 101
    assert await handshake_status(endpoint, own_origin(endpoint)) == 101
    assert await handshake_status(endpoint, own_origin(endpoint).upper()) == 101


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://127.0.0.1:1", "https://127.0.0.1", "null"]
)
async def test_default_refuses_other_sites_with_403(serve: Serve, origin: str) -> None:
    endpoint = await serve(echo)
    assert await handshake_status(endpoint, origin) == 403


async def test_on_error_sees_origin_not_allowed(serve: Serve) -> None:
    errors: list[str] = []

    def on_error(request: web.Request) -> web.Response:
        errors.append(request[ERROR_KEY])
        return web.Response(status=403)

    endpoint = await serve(echo, on_error=on_error)
    await handshake_status(endpoint, "https://evil.example")
    assert errors == [ORIGIN_NOT_ALLOWED]


async def test_star_allows_every_origin(serve: Serve) -> None:
    endpoint = await serve(echo, websocket_server=WebSocketServer(allowed_origins="*"))
    assert await handshake_status(endpoint, "https://anywhere.example") == 101


async def test_listed_origins_are_exactly_those_allowed(serve: Serve) -> None:
    server = WebSocketServer(allowed_origins=["https://app.example", "https://Admin.example/"])
    endpoint = await serve(echo, websocket_server=server)
    assert await handshake_status(endpoint, "https://app.example") == 101
    assert await handshake_status(endpoint, "https://admin.example") == 101
    assert await handshake_status(endpoint, "https://other.example") == 403
    assert await handshake_status(endpoint, own_origin(endpoint)) == 403
    assert await handshake_status(endpoint, None) == 403


async def test_callable_decides_origins(serve: Serve) -> None:
    seen: list[str | None] = []

    def check(origin: str | None, request: web.Request) -> bool:
        seen.append(origin)
        return origin is not None and origin.endswith(".trusted.example")

    endpoint = await serve(echo, websocket_server=WebSocketServer(allowed_origins=check))
    assert await handshake_status(endpoint, "https://a.trusted.example") == 101
    assert await handshake_status(endpoint, "https://untrusted.example") == 403
    assert await handshake_status(endpoint, None) == 403
    assert seen == ["https://a.trusted.example", "https://untrusted.example", None]


# -- connection limits -------------------------------------------------------------------------


async def test_max_connections_refuses_with_503_until_one_finishes(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, max_connections=2)
    first = await endpoint.client.ws_connect("/websocket")
    second = await endpoint.client.ws_connect("/websocket")
    response = await endpoint.client.get("/websocket", headers=handshake_headers())
    assert response.status == 503
    assert "too many connections" in await response.text()
    await first.close()
    await recorder.finish()
    third = await endpoint.client.ws_connect("/websocket")
    await second.close()
    await third.close()


def handshake_headers() -> dict[str, str]:
    """Headers of a valid opening handshake."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }


# -- slow peers and backpressure ---------------------------------------------------------------


async def open_raw_websocket(endpoint: Endpoint) -> tuple[asyncio.StreamReader, Any]:
    """A handshake over a plain socket whose reader the test never reads past the 101."""
    reader, writer = await asyncio.open_connection(endpoint.server.host, endpoint.server.port)
    request = "GET /websocket HTTP/1.1\r\nHost: test\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in handshake_headers().items()
    )
    writer.write(request.encode() + b"\r\n")
    status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert status.startswith(b"HTTP/1.1 101")
    return reader, writer


async def test_peer_that_stops_reading_is_dropped_with_1008(
    serve: Serve, recorder: Recorder
) -> None:
    def flood(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        for _ in range(64):
            conn.send(b"\x00" * 1024 * 1024)

    server = WebSocketServer(send_buffer_limit=256 * 1024)
    endpoint = await serve(flood, websocket_server=server)
    _, writer = await open_raw_websocket(endpoint)
    conn = await recorder.finish()
    assert (conn.close_code, conn.close_reason) == (1008, "send buffer overflow")
    writer.close()
    with contextlib.suppress(ConnectionResetError):  # the server dropped it with a reset
        await writer.wait_closed()


async def test_slow_peer_does_not_delay_a_fast_one(serve: Serve, recorder: Recorder) -> None:
    connections: list[Connection] = []

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        connections.append(conn)

    server = WebSocketServer(send_buffer_limit=1024 * 1024)
    endpoint = await serve(on_establish, websocket_server=server)
    _, slow = await open_raw_websocket(endpoint)
    async with endpoint.client.ws_connect("/websocket") as fast:
        await recorder.connection()
        await recorder.connection()
        chunk = b"\x01" * 256 * 1024
        for _ in range(40):  # 10 MiB: far more than the slow peer's socket and limit hold
            await endpoint.wsapp.broadcast(chunk)
            assert await fast.receive_bytes(timeout=TIMEOUT) == chunk
        dropped = await recorder.finish()
        assert dropped.close_code == 1008
    slow.close()
    with contextlib.suppress(ConnectionResetError):  # the server dropped it with a reset
        await slow.wait_closed()


async def test_awaited_sends_wait_for_the_socket_to_drain(serve: Serve) -> None:
    congested = asyncio.Event()
    done: asyncio.Future[int] = asyncio.Future()
    chunk = b"\x02" * 64 * 1024

    async def sender(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        most_after_await = 0
        for _ in range(200):
            await conn.send(chunk)
            most_after_await = max(most_after_await, conn.buffered_amount)
            if conn.buffered_amount:
                congested.set()
        done.set_result(most_after_await)

    endpoint = await serve(sender, websocket_server=WebSocketServer(compress=False))
    async with endpoint.client.ws_connect("/websocket") as ws:
        await asyncio.wait_for(congested.wait(), TIMEOUT)  # the client has read nothing yet
        for _ in range(200):
            assert await ws.receive_bytes(timeout=TIMEOUT) == chunk
        most_after_await = await asyncio.wait_for(done, TIMEOUT)
    # Flow control resumes writing below asyncio's high-water mark (64 KiB by default).
    assert most_after_await <= 64 * 1024 + len(chunk)


def kernel_socket_buffers() -> int:
    """The most the kernel can hold of one loopback TCP connection's data in flight: the largest
    send buffer of one end plus the largest receive buffer of the other."""
    largest = [
        int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
        for name in ("tcp_wmem", "tcp_rmem")
    ]
    return sum(largest)


async def test_buffered_amount_holds_what_the_peer_does_not_read_until_it_reads(
    serve: Serve, recorder: Recorder
) -> None:
    chunk, chunks = 1024 * 1024, 32
    frame_size = chunk + 10  # a 1 MiB payload has a 10-byte header

    def fill(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        for _ in range(chunks):
            conn.send(b"\x03" * chunk)

    server = WebSocketServer(compress=False, send_buffer_limit=64 * 1024 * 1024)
    endpoint = await serve(fill, websocket_server=server)
    reader, writer = await open_raw_websocket(endpoint)
    conn = await recorder.connection()
    # What the kernel does not hold for the peer that does not read stays in the buffer.
    assert chunks * frame_size - kernel_socket_buffers() <= conn.buffered_amount
    assert conn.buffered_amount <= chunks * frame_size
    # Once the peer reads everything, nothing is left.
    received = await asyncio.wait_for(reader.readexactly(chunks * frame_size), TIMEOUT)
    assert received[10:frame_size] == b"\x03" * chunk
    await until(lambda: conn.buffered_amount == 0)
    writer.close()
    await writer.wait_closed()


async def test_oversized_message_closes_with_1009(serve: Serve, recorder: Recorder) -> None:
    server = WebSocketServer(max_payload_size=1024)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    async with endpoint.client.ws_connect("/websocket") as ws:
        await ws.send_bytes(b"\x00" * 1025)
        message = await ws.receive(TIMEOUT)
        assert (message.type, ws.close_code) == (WSMsgType.CLOSE, 1009)
    conn = await recorder.finish()
    assert conn.close_code == 1009
    assert getattr(await recorder.error(), "code", None) == 1009


@pytest.mark.parametrize("compress", [0, 15])
@pytest.mark.parametrize(
    ("fits", "too_big"),
    [("é" * 500, "é" * 500 + "x"), (b"\x00" * 1000, b"\x00" * 1001)],
    ids=["text", "binary"],
)
async def test_message_of_exactly_max_payload_size_passes_one_more_byte_closes_with_1009(
    serve: Serve, recorder: Recorder, compress: int, fits: str | bytes, too_big: str | bytes
) -> None:
    server = WebSocketServer(max_payload_size=1000)  # "é" is two bytes of UTF-8
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    async with endpoint.client.ws_connect("/websocket", compress=compress) as ws:
        for data in (fits, too_big):
            if isinstance(data, str):
                await ws.send_str(data)
            else:
                await ws.send_bytes(data)
        assert await recorder.message() == fits
        message = await ws.receive(TIMEOUT)
        assert (message.type, message.data) == (WSMsgType.CLOSE, 1009), (message, ws.close_code)
    assert (await recorder.finish()).close_code == 1009


async def test_handshakes_still_being_sent_count_against_max_connections(
    aiohttp_client: AiohttpClient,
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            entered.set()
            await release.wait()  # the first 101 is not out yet

    sub = WebSocketApp(echo, max_connections=1).to_app()
    sub.on_response_prepare.append(hold)
    client = await aiohttp_client(sub)
    first = asyncio.ensure_future(client.ws_connect("/"))
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    second = await asyncio.wait_for(client.get("/", headers=handshake_headers()), TIMEOUT)
    assert second.status == 503
    release.set()
    ws = await asyncio.wait_for(first, TIMEOUT)
    await ws.close()


async def read_bytes(reader: asyncio.StreamReader, count: int) -> None:
    """Read and drop ``count`` bytes, a chunk at a time."""

    async def read() -> None:
        left = count
        while left:
            chunk = await reader.read(min(left, 256 * 1024))
            assert chunk, f"the connection ended {left} bytes short"
            left -= len(chunk)

    await asyncio.wait_for(read(), TIMEOUT)


async def test_a_handler_that_returns_send_keeps_backpressure(
    serve: Serve, recorder: Recorder
) -> None:
    """The README's ``lambda c, m: c.send(m)``: what it returns is waited on while the buffer is
    full, so the next handler (and the next message) waits for the peer to read."""
    reply = b"\x03" * 12 * 1024 * 1024  # more than the kernel buffers for a peer that does not read
    seen: list[int] = []  # the connection's buffered bytes when the second handler ran

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.on("message", lambda c, m: c.send(reply))
        conn.on("message", lambda c, m: seen.append(c.buffered_amount))

    server = WebSocketServer(send_buffer_limit=64 * 1024 * 1024)
    endpoint = await serve(on_establish, websocket_server=server)
    peer = await RawWebSocket.connect(*address(endpoint.server), receive_buffer=16 * 1024)
    conn = await recorder.connection()
    peer.send_text("go")
    await until(lambda: conn.buffered_amount > 1024 * 1024)
    # Without the wait, the second handler would have run right after the first, in the same
    # turn of the event loop that filled the buffer.
    assert seen == []
    await read_bytes(peer.reader, len(reply) + 10)  # the frame: a 10-byte header and the reply
    await until(lambda: bool(seen))
    low_water, _ = conn.request.transport.get_write_buffer_limits()  # type: ignore[union-attr]
    assert seen[0] <= low_water
    await peer.close_socket()
    await recorder.finish()
