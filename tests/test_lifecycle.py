"""A connection's life (SPEC §3 ``heartbeat``/``close_timeout``, §4 ``state``): every way into
closing is bounded by ``close_timeout``, whatever the socket still has to send, and ``finish``
fires once; the keepalive drops peers that do not answer.

The stuffed peer is a raw client with a tiny receive buffer that never reads: the server then
holds megabytes it cannot send, which is what used to keep sockets alive forever.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Endpoint, Serve
from rawws import Opcode, RawWebSocket, address, build_frame, close_payload, until
from support import TIMEOUT, Recorder

from aiohttp_wsapp import Connection, ConnectionClosed, ConnectionState, WebSocketServer

BULK = b"x" * (12 * 1024 * 1024)
"""More than the kernel buffers for a peer that does not read, less than send_buffer_limit."""
CLOSE_TIMEOUT = 0.5
HEARTBEAT = 0.4


def server_socket_exists(endpoint: Endpoint, client: RawWebSocket) -> bool:
    """Tell whether the kernel still has the server's end of ``client``'s TCP connection."""
    server_port = endpoint.server.port
    client_port = client.writer.get_extra_info("sockname")[1]
    wanted = (f"{server_port:04X}", f"{client_port:04X}")
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote = line.split()[1:3]
            if (local.rsplit(":", 1)[1], remote.rsplit(":", 1)[1]) == wanted:
                return True
    return False


async def stuffed_peer(endpoint: Endpoint, recorder: Recorder) -> tuple[RawWebSocket, Connection]:
    """Connect a peer that never reads, and wait until the server holds data it cannot send."""
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket", receive_buffer=4096)
    conn = await recorder.connection()
    await until(lambda: conn.buffered_amount > 0)
    return client, conn


async def serve_stuffing(
    serve: Serve, recorder: Recorder, *, wait: bool = False, **settings: Any
) -> Endpoint:
    """Serve an endpoint whose ``on_establish`` sends :data:`BULK` (awaiting it if ``wait``)."""

    async def on_establish(
        conn: Connection, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        recorder.on_establish(conn, request, results)
        sent = conn.send(BULK)
        if wait:
            await sent

    server = WebSocketServer(close_timeout=CLOSE_TIMEOUT, **settings)
    return await serve(on_establish, websocket_server=server)


async def assert_dropped(
    endpoint: Endpoint, recorder: Recorder, client: RawWebSocket
) -> Connection:
    """Wait for ``finish``; check the connection left the endpoint and its socket is gone."""
    conn = await recorder.finish()
    assert conn.state is ConnectionState.CLOSED
    assert conn not in endpoint.wsapp.connections
    await until(lambda: not server_socket_exists(endpoint, client))
    client.abort()
    return conn


async def test_heartbeat_drops_a_peer_that_stops_reading_and_its_socket(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_stuffing(serve, recorder, heartbeat=HEARTBEAT)
    client, _ = await stuffed_peer(endpoint, recorder)
    conn = await assert_dropped(endpoint, recorder, client)
    assert conn.close_code == 1006


async def test_heartbeat_finishes_a_handler_blocked_in_send(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_stuffing(serve, recorder, wait=True, heartbeat=HEARTBEAT)
    client, _ = await stuffed_peer(endpoint, recorder)
    conn = await assert_dropped(endpoint, recorder, client)
    assert conn.close_code == 1006


async def test_end_of_stream_with_data_queued_finishes_and_frees_the_socket(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_stuffing(serve, recorder, heartbeat=None)
    client, _ = await stuffed_peer(endpoint, recorder)
    client.writer.write_eof()
    conn = await assert_dropped(endpoint, recorder, client)
    assert conn.close_code == 1006


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param((0x3, b""), 1002, id="reserved-opcode"),
        pytest.param((Opcode.TEXT, b"\xff\xfe"), 1007, id="invalid-utf8"),
    ],
)
async def test_protocol_error_with_data_queued_finishes_and_frees_the_socket(
    serve: Serve, recorder: Recorder, frame: tuple[int, bytes], code: int
) -> None:
    endpoint = await serve_stuffing(serve, recorder, heartbeat=None)
    client, _ = await stuffed_peer(endpoint, recorder)
    client.send_frame(*frame)
    conn = await assert_dropped(endpoint, recorder, client)
    assert conn.close_code == code


async def test_our_close_with_data_queued_finishes_and_frees_the_socket(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_stuffing(serve, recorder, heartbeat=None)
    client, conn = await stuffed_peer(endpoint, recorder)
    conn.close(1001, "bye")
    assert conn.state.name == "CLOSING"
    await assert_dropped(endpoint, recorder, client)
    assert (conn.close_code, conn.close_reason) == (1001, "bye")


async def test_the_peers_close_with_data_queued_finishes_and_frees_the_socket(
    serve: Serve, recorder: Recorder
) -> None:
    # The answer to the peer's close goes into a full buffer: the deadline must bound its flush
    # (armed when the connection finishes, since answering an empty buffer needs none).
    endpoint = await serve_stuffing(serve, recorder, heartbeat=None)
    client, _ = await stuffed_peer(endpoint, recorder)
    client.send_frame(Opcode.CLOSE, close_payload(1000, "done"))
    conn = await assert_dropped(endpoint, recorder, client)
    assert (conn.close_code, conn.close_reason) == (1000, "done")


@pytest.mark.parametrize("code", [1006, 1004, 2999, 5000, 65535])
async def test_a_close_code_the_peer_may_not_send_is_answered_with_1002(
    serve: Serve, recorder: Recorder, code: int
) -> None:
    endpoint = await serve(recorder.on_establish)
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    client.send_frame(Opcode.CLOSE, close_payload(code))
    answer = await client.read_close()
    assert answer.close_code == 1002
    conn = await recorder.finish()
    assert conn.close_code == 1002
    await client.close_socket()


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 3000, 4999])
async def test_a_valid_close_code_is_echoed(serve: Serve, recorder: Recorder, code: int) -> None:
    endpoint = await serve(recorder.on_establish)
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    client.send_close(code, "done")
    assert (await client.read_close()).close_code == code
    conn = await recorder.finish()
    assert (conn.close_code, conn.close_reason) == (code, "done")
    await client.close_socket()


async def test_state_goes_from_open_through_closing_to_closed(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        conn = await recorder.connection()
        assert conn.state is ConnectionState.OPEN
        assert not conn.closed
        conn.close(4000, "enough")
        assert conn.closed
        assert conn.state.name == "CLOSING"
        await ws.receive()  # the close frame: aiohttp's client answers it
    await recorder.finish()
    assert conn.state is ConnectionState.CLOSED


async def test_connection_closed_carries_the_code_and_reason(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    async with endpoint.client.ws_connect("/websocket") as ws:
        conn = await recorder.connection()
        await ws.close(code=4001, message=b"gone")
    await recorder.finish()
    with pytest.raises(ConnectionClosed) as raised:
        await conn.send("too late")
    assert (raised.value.code, raised.value.reason) == (4001, "gone")
    assert "4001 gone" in str(raised.value)


async def test_closed_connection_joins_no_group(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve(recorder.on_establish)
    async with endpoint.client.ws_connect("/websocket"):
        conn = await recorder.connection()
        conn.join("room")
    await recorder.finish()
    conn.join("later")
    assert conn.groups == frozenset()
    assert "room" not in endpoint.wsapp.groups


# -- the keepalive ---------------------------------------------------------------------------


async def answer_pings(client: RawWebSocket, pings: list[bytes]) -> None:
    """Answer every ping the server sends, recording it, until the server closes."""
    try:
        while True:
            frame = await client.read_frame(timeout=TIMEOUT)
            if frame.opcode == Opcode.PING:
                pings.append(frame.payload)
                client.send_frame(Opcode.PONG, frame.payload)
    except (EOFError, ConnectionError):
        return


async def test_heartbeat_pings_a_silent_peer_and_measures_latency(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, websocket_server=WebSocketServer(heartbeat=0.2))
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    conn = await recorder.connection()
    assert conn.latency is None
    pings: list[bytes] = []
    answering = asyncio.create_task(answer_pings(client, pings))
    await until(lambda: conn.latency is not None and len(pings) >= 2)
    assert conn.state is ConnectionState.OPEN
    latency = conn.latency
    assert latency is not None
    assert 0 < latency < TIMEOUT
    client.send_close(1000)
    await recorder.finish()
    await answering
    await client.close_socket()


async def test_heartbeat_drops_a_peer_that_does_not_answer(
    serve: Serve, recorder: Recorder
) -> None:
    server = WebSocketServer(heartbeat=0.2, close_timeout=CLOSE_TIMEOUT)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    assert (await client.read_frame()).opcode == Opcode.PING
    conn = await recorder.finish()
    assert conn.close_code == 1006
    assert await client.wait_eof() == b""
    client.abort()


async def test_heartbeat_drops_a_peer_trickling_a_frame_that_never_ends(
    serve: Serve, recorder: Recorder
) -> None:
    server = WebSocketServer(heartbeat=0.2, close_timeout=CLOSE_TIMEOUT)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    frame = client_frame_of(1000)
    finished = asyncio.ensure_future(recorder.finish())
    for byte in frame:  # one byte at a time, more often than the heartbeat: never a message
        if finished.done():
            break
        client.send_raw(bytes([byte]))
        await asyncio.sleep(0.02)
    conn = await finished
    assert conn.close_code == 1006
    client.abort()


def client_frame_of(size: int) -> bytes:
    """A masked binary frame of ``size`` bytes, as a client sends it."""
    return build_frame(Opcode.BINARY, b"y" * size)


async def test_heartbeat_does_not_ping_a_peer_that_keeps_talking(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, websocket_server=WebSocketServer(heartbeat=1.0))
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    await recorder.connection()
    # 2.5 s of messages, every 50 ms: two heartbeat rounds, with room for a slow machine's stalls
    for _ in range(50):
        client.send_text("still here")
        await asyncio.sleep(0.05)
    client.send_close(1000)
    frames = []
    while (frame := await client.read_frame()).opcode != Opcode.CLOSE:
        frames.append(frame.opcode)
    assert Opcode.PING not in frames
    await recorder.finish()
    await client.close_socket()


# -- logging ---------------------------------------------------------------------------------


async def test_a_peers_protocol_error_logs_one_warning_without_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    finished: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.on("finish", finished.set_result)

    endpoint = await serve(on_establish)
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    with caplog.at_level(logging.DEBUG, logger="aiohttp_wsapp"):
        client.send_frame(Opcode.TEXT, b"\xff")
        assert (await client.read_close()).close_code == 1007
        await client.close_socket()
        conn = await asyncio.wait_for(finished, TIMEOUT)
    ours = [r for r in caplog.records if r.name == "aiohttp_wsapp" and r.levelno >= logging.INFO]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    (record,) = ours
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert "1007" in record.getMessage()
    assert repr(conn) in record.getMessage()
