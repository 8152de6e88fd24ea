"""A connection's life (SPEC §3 ``heartbeat``/``close_timeout``, §4 ``state``): every way into
closing is bounded by ``close_timeout``, whatever the socket still has to send, and ``finish``
fires once; the keepalive drops peers that do not answer.

The stuffed peer is a raw client with a tiny receive buffer that never reads: the server then
holds megabytes it cannot send, which is what used to keep sockets alive forever.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Endpoint, Serve
from rawws import Opcode, RawWebSocket, address, build_frame, close_payload, until
from support import EARLY, TIMEOUT, Recorder, assert_within, within

from aiohttp_wsapp import Connection, ConnectionClosed, ConnectionState, WebSocketServer

BULK = b"x" * (12 * 1024 * 1024)
"""More than the kernel buffers for a peer that does not read, less than send_buffer_limit."""
CLOSE_TIMEOUT = 0.5
HEARTBEAT = 0.4
PONG_DEADLINE = HEARTBEAT / 2
"""SPEC §3: a ping not answered within ``heartbeat / 2`` drops the peer."""


def server_socket_exists(endpoint: Endpoint, client: asyncio.StreamWriter) -> bool:
    """Tell whether the kernel still has the server's end of ``client``'s TCP connection."""
    server_port = endpoint.server.port
    client_port = client.get_extra_info("sockname")[1]
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
    endpoint: Endpoint, recorder: Recorder, client: RawWebSocket, *, since: float, after: float
) -> Connection:
    """Wait for ``finish``; check the connection left the endpoint and its socket is gone, the
    socket ``after`` seconds (the settings' figure) after ``since`` (the loop's time), no sooner
    and at most :func:`support.within` that."""
    conn = await recorder.finish(timeout=within(after) + TIMEOUT)
    assert conn.state is ConnectionState.CLOSED
    assert conn not in endpoint.wsapp.connections
    assert recorder.finished_at[conn] - since <= within(after)
    await until(lambda: not server_socket_exists(endpoint, client.writer), within(after) + TIMEOUT)
    gone = asyncio.get_running_loop().time()
    assert_within(gone - since, after, at_least=after)
    client.abort()
    return conn


async def test_heartbeat_drops_a_peer_that_stops_reading_and_its_socket(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_stuffing(serve, recorder, heartbeat=HEARTBEAT)
    client, conn = await stuffed_peer(endpoint, recorder)
    # A silent peer is pinged after a heartbeat, and dropped when the pong is late.
    since = recorder.established_at[conn]
    await assert_dropped(endpoint, recorder, client, since=since, after=HEARTBEAT + PONG_DEADLINE)
    assert conn.close_code == 1006


async def test_heartbeat_finishes_a_handler_blocked_in_send(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_stuffing(serve, recorder, wait=True, heartbeat=HEARTBEAT)
    client, conn = await stuffed_peer(endpoint, recorder)
    since = recorder.established_at[conn]
    await assert_dropped(endpoint, recorder, client, since=since, after=HEARTBEAT + PONG_DEADLINE)
    assert conn.close_code == 1006


async def test_end_of_stream_with_data_queued_finishes_and_frees_the_socket(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_stuffing(serve, recorder, heartbeat=None)
    client, conn = await stuffed_peer(endpoint, recorder)
    since = asyncio.get_running_loop().time()
    client.writer.write_eof()
    await assert_dropped(endpoint, recorder, client, since=since, after=CLOSE_TIMEOUT)
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
    client, conn = await stuffed_peer(endpoint, recorder)
    since = asyncio.get_running_loop().time()
    client.send_frame(*frame)
    # The close frame cannot get through the full buffer: only the deadline ends it.
    await assert_dropped(endpoint, recorder, client, since=since, after=CLOSE_TIMEOUT)
    assert conn.close_code == code


async def test_our_close_with_data_queued_finishes_and_frees_the_socket(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_stuffing(serve, recorder, heartbeat=None)
    client, conn = await stuffed_peer(endpoint, recorder)
    since = asyncio.get_running_loop().time()
    conn.close(1001, "bye")
    assert conn.state.name == "CLOSING"
    await assert_dropped(endpoint, recorder, client, since=since, after=CLOSE_TIMEOUT)
    assert (conn.close_code, conn.close_reason) == (1001, "bye")


async def test_the_peers_close_with_data_queued_finishes_and_frees_the_socket(
    serve: Serve, recorder: Recorder
) -> None:
    # The answer to the peer's close goes into a full buffer: the deadline must bound its flush
    # (answering arms none when nothing is unsent: here something is).
    endpoint = await serve_stuffing(serve, recorder, heartbeat=None)
    client, conn = await stuffed_peer(endpoint, recorder)
    since = asyncio.get_running_loop().time()
    client.send_frame(Opcode.CLOSE, close_payload(1000, "done"))
    await assert_dropped(endpoint, recorder, client, since=since, after=CLOSE_TIMEOUT)
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


PONG_DELAY = HEARTBEAT / 8
"""How long the answering peer below waits before each pong: the least latency it can show."""


async def answer_pings(client: RawWebSocket, pings: list[float], *, delay: float) -> None:
    """Answer every ping the server sends after ``delay`` seconds, recording the loop's time of
    its arrival, until the server closes."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            frame = await client.read_frame(timeout=within(HEARTBEAT) + TIMEOUT)
            if frame.opcode == Opcode.PING:
                pings.append(loop.time())
                await asyncio.sleep(delay)  # a peer with this much latency
                client.send_frame(Opcode.PONG, frame.payload)
    except (EOFError, ConnectionError):
        return


async def test_heartbeat_pings_a_silent_peer_every_heartbeat_and_measures_latency(
    serve: Serve, recorder: Recorder
) -> None:
    server = WebSocketServer(heartbeat=HEARTBEAT)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    conn = await recorder.connection()
    assert conn.latency is None
    pings: list[float] = []
    answering = asyncio.create_task(answer_pings(client, pings, delay=PONG_DELAY))
    # The first round comes a heartbeat after the establishment; each next one a heartbeat
    # after the pong that ended the round before.
    await until(lambda: len(pings) >= 1, within(HEARTBEAT) + TIMEOUT)
    assert_within(pings[0] - recorder.established_at[conn], HEARTBEAT, at_least=HEARTBEAT)
    await until(lambda: len(pings) >= 3, 2 * within(HEARTBEAT + PONG_DELAY) + TIMEOUT)
    assert conn.state is ConnectionState.OPEN
    for earlier, later in itertools.pairwise(pings):
        assert_within(later - earlier - PONG_DELAY, HEARTBEAT, at_least=HEARTBEAT)
    latency = conn.latency
    assert latency is not None
    # The round trip of an answered ping: at least the peer's delay, at most the pong deadline.
    assert PONG_DELAY - EARLY <= latency <= PONG_DEADLINE
    client.send_close(1000)
    await recorder.finish()
    await answering
    await client.close_socket()


async def test_heartbeat_drops_a_peer_that_does_not_answer(
    serve: Serve, recorder: Recorder
) -> None:
    server = WebSocketServer(heartbeat=HEARTBEAT, close_timeout=CLOSE_TIMEOUT)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    conn = await recorder.connection()
    assert (await client.read_frame(timeout=within(HEARTBEAT) + TIMEOUT)).opcode == Opcode.PING
    assert await recorder.finish(timeout=within(HEARTBEAT + PONG_DEADLINE) + TIMEOUT) is conn
    assert conn.close_code == 1006
    dropped_after = recorder.finished_at[conn] - recorder.established_at[conn]
    assert_within(dropped_after, HEARTBEAT + PONG_DEADLINE, at_least=HEARTBEAT + PONG_DEADLINE)
    assert await client.wait_eof() == b""
    client.abort()


async def test_heartbeat_rounds_drop_the_silent_peer_and_keep_the_answering_one(
    serve: Serve, recorder: Recorder
) -> None:
    """The endpoint's heartbeat rounds go over all its connections. A peer established while
    they already run is pinged one to two rounds after its establishment, never sooner than a
    heartbeat; not answering, it is dropped, while the peer beside it that answers stays."""
    loop = asyncio.get_running_loop()
    server = WebSocketServer(heartbeat=HEARTBEAT, close_timeout=CLOSE_TIMEOUT)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    host, port = address(endpoint.server)
    answering = await RawWebSocket.connect(host, port, "/websocket")
    first = await recorder.connection()
    pings: list[float] = []
    answerer = asyncio.create_task(answer_pings(answering, pings, delay=0))
    await until(lambda: len(pings) >= 1, within(2 * HEARTBEAT) + TIMEOUT)  # the rounds run
    # Not for correctness (the bounds below hold whenever the second peer comes): halfway
    # between two rounds, where a peer pinged at the next round would be pinged too soon.
    await asyncio.sleep(HEARTBEAT / 2)
    silent = await RawWebSocket.connect(host, port, "/websocket")
    second = await recorder.connection()
    frame = await silent.read_frame(timeout=within(2 * HEARTBEAT) + TIMEOUT)
    assert frame.opcode == Opcode.PING
    pinged_after = loop.time() - recorder.established_at[second]
    assert_within(pinged_after, 2 * HEARTBEAT, at_least=HEARTBEAT)
    assert await recorder.finish(timeout=within(2 * HEARTBEAT + PONG_DEADLINE) + TIMEOUT) is second
    assert second.close_code == 1006
    dropped_after = recorder.finished_at[second] - recorder.established_at[second]
    assert_within(dropped_after, 2 * HEARTBEAT + PONG_DEADLINE, at_least=HEARTBEAT + PONG_DEADLINE)
    assert first.state is ConnectionState.OPEN
    assert await silent.wait_eof() == b""
    silent.abort()
    answering.send_close(1000)
    assert await recorder.finish() is first
    await answerer
    await answering.close_socket()


async def test_heartbeat_drops_a_peer_trickling_a_frame_that_never_ends(
    serve: Serve, recorder: Recorder
) -> None:
    server = WebSocketServer(heartbeat=HEARTBEAT, close_timeout=CLOSE_TIMEOUT)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    conn = await recorder.connection()
    frame = client_frame_of(1000)
    finished = asyncio.ensure_future(recorder.finish(within(HEARTBEAT + PONG_DEADLINE) + TIMEOUT))
    for byte in frame:  # one byte at a time, more often than the heartbeat: never a message
        # The client's socket may see the drop before the endpoint reports it; writing to it then
        # raises under uvloop.
        if finished.done() or client.writer.is_closing():
            break
        client.send_raw(bytes([byte]))
        await asyncio.sleep(0.02)
    assert await finished is conn
    assert conn.close_code == 1006
    dropped_after = recorder.finished_at[conn] - recorder.established_at[conn]
    assert_within(dropped_after, HEARTBEAT + PONG_DEADLINE, at_least=HEARTBEAT + PONG_DEADLINE)
    client.abort()


def client_frame_of(size: int) -> bytes:
    """A masked binary frame of ``size`` bytes, as a client sends it."""
    return build_frame(Opcode.BINARY, b"y" * size)


async def test_heartbeat_does_not_ping_a_peer_that_keeps_talking(
    serve: Serve, recorder: Recorder
) -> None:
    """A ping needs a whole heartbeat round without a message from the peer.

    The peer talks every 50 ms for three rounds. A loaded machine may stall the process for
    longer than a round, and the peer is then really silent for a round, as the server sees it;
    so instead of "no ping at all", the test checks that before every ping there was a round's
    gap between the messages the server dispatched (none, normally).
    """
    loop = asyncio.get_running_loop()
    dispatched: list[float] = []

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.on("message", lambda conn, message: dispatched.append(loop.time()))

    endpoint = await serve(on_establish, websocket_server=WebSocketServer(heartbeat=HEARTBEAT))
    host, port = address(endpoint.server)
    client = await RawWebSocket.connect(host, port, "/websocket")
    conn = await recorder.connection()
    pings: list[float] = []

    async def read_frames() -> None:
        while (frame := await client.read_frame()).opcode != Opcode.CLOSE:
            if frame.opcode == Opcode.PING:
                pings.append(loop.time())
                client.send_frame(Opcode.PONG, frame.payload)

    reading = asyncio.create_task(read_frames())
    end = recorder.established_at[conn] + 3 * HEARTBEAT
    while loop.time() < end:  # three heartbeat rounds of messages, every 50 ms
        client.send_text("still here")
        await asyncio.sleep(0.05)
    client.send_close(1000)
    await asyncio.wait_for(reading, TIMEOUT)
    await recorder.finish()
    await client.close_socket()
    assert len(dispatched) >= 3 * HEARTBEAT / 0.05 / 2, "the peer hardly talked"
    for ping in pings:
        heard = [recorder.established_at[conn], *(t for t in dispatched if t < ping), ping]
        longest_silence = max(later - earlier for earlier, later in itertools.pairwise(heard))
        assert longest_silence >= HEARTBEAT - EARLY, f"pinged after {longest_silence:.3f} s"


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
