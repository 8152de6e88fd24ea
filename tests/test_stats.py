"""``wsapp.stats()``: every figure counted where its event happens, over real sockets.

Each test reads the figures after the events it caused have finished (``finish`` fired, the echo
came back), and compares whole values: a count too high is as wrong as one too low.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import Serve, echo
from pytest_aiohttp import AiohttpClient
from rawws import Opcode, RawWebSocket, address, build_frame, until
from redis_server import RedisServer
from support import TIMEOUT, Recorder

from aiohttp_wsapp import (
    INVALID_REQUEST,
    NOT_SUPPORTED,
    ORIGIN_NOT_ALLOWED,
    SHUTTING_DOWN,
    TOO_MANY_CONNECTIONS,
    BrokerError,
    Connection,
    Stats,
    WebSocketApp,
    WebSocketServer,
)

ERRORS = (NOT_SUPPORTED, INVALID_REQUEST, ORIGIN_NOT_ALLOWED, TOO_MANY_CONNECTIONS, SHUTTING_DOWN)
CAUSES = (
    "send buffer overflow",
    "heartbeat timeout",
    "idle timeout",
    "max lifetime",
    "rate limit",
    "message too big",
    "protocol error",
)


def test_stats_is_a_frozen_dataclass_with_the_fields_of_the_spec() -> None:
    assert dataclasses.is_dataclass(Stats)
    assert [field.name for field in dataclasses.fields(Stats)] == [
        "connections_open",
        "handshakes_accepted",
        "handshakes_refused",
        "finished",
        "messages_received",
        "messages_sent",
        "bytes_received",
        "bytes_sent",
        "broadcasts",
        "broadcast_frames",
        "dropped",
        "broker_published",
        "broker_received",
        "broker_errors",
        "broker_reconnects",
    ]


async def test_a_new_endpoint_counts_nothing_and_knows_every_error_and_cause(
    serve: Serve,
) -> None:
    endpoint = await serve(echo)
    stats = endpoint.wsapp.stats()
    assert stats == Stats(
        connections_open=0,
        handshakes_accepted=0,
        handshakes_refused=dict.fromkeys(ERRORS, 0),
        finished={},
        messages_received=0,
        messages_sent=0,
        bytes_received=0,
        bytes_sent=0,
        broadcasts=0,
        broadcast_frames=0,
        dropped=dict.fromkeys(CAUSES, 0),
        broker_published=None,
        broker_received=None,
        broker_errors=None,
        broker_reconnects=None,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.messages_sent = 1  # type: ignore[misc]


async def test_handshakes_accepted_and_refused_by_error_string(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish, max_connections=1)
    client = endpoint.client
    async with client.ws_connect("/websocket"):
        await recorder.connection()
        assert endpoint.wsapp.stats().connections_open == 1
        with pytest.raises(aiohttp.WSServerHandshakeError):  # one is open: max_connections
            await client.ws_connect("/websocket")
    await recorder.finish()
    assert (await client.get("/websocket")).status == 400  # a plain GET
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/websocket", headers={"Origin": "https://evil.example"})
    async with client.ws_connect("/websocket"):
        await recorder.connection()
    await recorder.finish()
    stats = endpoint.wsapp.stats()
    assert stats.connections_open == 0
    assert stats.handshakes_accepted == 2
    assert stats.handshakes_refused == {
        **dict.fromkeys(ERRORS, 0),
        INVALID_REQUEST: 1,
        ORIGIN_NOT_ALLOWED: 1,
        TOO_MANY_CONNECTIONS: 1,
    }


async def test_a_refusal_by_the_handshake_callback_counts_as_invalid_request(
    serve: Serve,
) -> None:
    def handshake(request: web.Request, response: web.WebSocketResponse) -> None:
        raise web.HTTPUnauthorized()

    endpoint = await serve(echo, websocket_server=WebSocketServer(handshake=handshake))
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await endpoint.client.ws_connect("/websocket")
    assert endpoint.wsapp.stats().handshakes_refused[INVALID_REQUEST] == 1
    assert endpoint.wsapp.stats().handshakes_accepted == 0


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "deflate"])
async def test_messages_and_payload_bytes_each_way_before_compression(
    serve: Serve, recorder: Recorder, compress: int
) -> None:
    recorder.echo = True
    endpoint = await serve(recorder.on_establish)
    async with endpoint.client.ws_connect("/websocket", compress=compress) as ws:
        for message in ("héllo", b"\x00\x01\x02", "", "x" * 1000):
            if isinstance(message, str):
                await ws.send_str(message)
                assert await ws.receive_str(timeout=TIMEOUT) == message
            else:
                await ws.send_bytes(message)
                assert await ws.receive_bytes(timeout=TIMEOUT) == message
    await recorder.finish()
    stats = endpoint.wsapp.stats()
    payload = len("héllo".encode()) + 3 + 0 + 1000  # 6 bytes of UTF-8 for 5 characters
    assert (stats.messages_received, stats.bytes_received) == (4, payload)
    assert (stats.messages_sent, stats.bytes_sent) == (4, payload)


async def test_a_broadcast_counts_once_and_its_frames_once_per_peer(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve(recorder.on_establish)
    client = endpoint.client
    async with (
        client.ws_connect("/websocket") as one,
        client.ws_connect("/websocket") as two,
        client.ws_connect("/websocket") as three,
    ):
        first = await recorder.connection()
        await recorder.connection()
        await recorder.connection()
        await endpoint.wsapp.broadcast("news")
        await endpoint.wsapp.broadcast(b"\x00" * 10, exclude=first)  # first is one's
        await endpoint.wsapp.broadcast("end")
        for ws in (one, two, three):
            assert await ws.receive_str(timeout=TIMEOUT) == "news"
        for ws in (two, three):
            assert await ws.receive_bytes(timeout=TIMEOUT) == b"\x00" * 10
        for ws in (one, two, three):
            assert await ws.receive_str(timeout=TIMEOUT) == "end"
    stats = endpoint.wsapp.stats()
    assert (stats.broadcasts, stats.broadcast_frames) == (3, 8)
    assert (stats.messages_sent, stats.bytes_sent) == (8, 3 * 4 + 2 * 10 + 3 * 3)
    assert stats.messages_received == 0


async def test_finished_counts_every_connection_by_close_code(
    serve: Serve, recorder: Recorder
) -> None:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.on("message", lambda conn, message: conn.close(4000) if message == "bye" else None)

    endpoint = await serve(on_establish)
    client = endpoint.client
    async with client.ws_connect("/websocket"):  # the client closes: 1000
        await recorder.connection()
    async with client.ws_connect("/websocket") as ws:  # the server closes: 4000
        await ws.send_str("bye")
        await ws.receive(TIMEOUT)
    raw = await RawWebSocket.connect(*address(endpoint.server))  # the client vanishes: 1006
    await recorder.connection()
    raw.abort()
    for _ in range(3):
        await recorder.finish()
    assert endpoint.wsapp.stats().finished == {1000: 1, 1006: 1, 4000: 1}
    assert endpoint.wsapp.stats().dropped == dict.fromkeys(CAUSES, 0)  # none was dropped


async def test_dropped_for_a_send_buffer_overflow(serve: Serve, recorder: Recorder) -> None:
    def flood(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        for _ in range(64):
            conn.send(bytes(1024 * 1024))

    server = WebSocketServer(send_buffer_limit=256 * 1024)
    endpoint = await serve(flood, websocket_server=server)
    raw = await RawWebSocket.connect(*address(endpoint.server), receive_buffer=4096)
    conn = await recorder.finish()
    await raw.close_socket()
    assert conn.close_reason == "send buffer overflow"
    stats = endpoint.wsapp.stats()
    assert stats.dropped == {**dict.fromkeys(CAUSES, 0), "send buffer overflow": 1}
    assert stats.finished == {1008: 1}


async def test_dropped_for_a_heartbeat_timeout(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve(recorder.on_establish, websocket_server=WebSocketServer(heartbeat=0.1))
    async with endpoint.client.ws_connect("/websocket", autoping=False):
        await recorder.finish()  # the client never reads, so it never answers a ping
    stats = endpoint.wsapp.stats()
    assert stats.dropped == {**dict.fromkeys(CAUSES, 0), "heartbeat timeout": 1}
    assert stats.finished == {1006: 1}


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_dropped_for_a_message_too_big_which_is_not_received(
    serve: Serve, recorder: Recorder, deflate: bool
) -> None:
    server = WebSocketServer(max_payload_size=1024)
    endpoint = await serve(recorder.on_establish, websocket_server=server)
    async with endpoint.client.ws_connect("/websocket", compress=15 if deflate else 0) as ws:
        await ws.send_bytes(bytes(1024))
        await ws.send_bytes(bytes(1025))
        message = await ws.receive(TIMEOUT)
        assert message.data == 1009
    await recorder.finish()
    stats = endpoint.wsapp.stats()
    assert (stats.messages_received, stats.bytes_received) == (1, 1024)
    assert stats.dropped == {**dict.fromkeys(CAUSES, 0), "message too big": 1}
    assert stats.finished == {1009: 1}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (build_frame(Opcode.TEXT, b"caf\xc3"), 1007),  # invalid UTF-8
        (build_frame(0x3, b"?"), 1002),  # a reserved opcode
    ],
    ids=["invalid-utf8", "reserved-opcode"],
)
async def test_dropped_for_a_protocol_error(
    serve: Serve, recorder: Recorder, frame: bytes, code: int
) -> None:
    endpoint = await serve(recorder.on_establish)
    raw = await RawWebSocket.connect(*address(endpoint.server))
    await recorder.connection()
    raw.send_raw(frame)
    assert (await raw.read_close()).close_code == code
    await raw.close_socket()
    await recorder.finish()
    stats = endpoint.wsapp.stats()
    assert stats.dropped == {**dict.fromkeys(CAUSES, 0), "protocol error": 1}
    assert stats.finished == {code: 1}
    assert stats.messages_received == 0


async def test_a_snapshot_never_changes_and_counts_never_go_down(
    serve: Serve, recorder: Recorder
) -> None:
    recorder.echo = True
    endpoint = await serve(recorder.on_establish)
    before = endpoint.wsapp.stats()
    async with endpoint.client.ws_connect("/websocket") as ws:
        await ws.send_str("hi")
        await ws.receive_str(timeout=TIMEOUT)
        during = endpoint.wsapp.stats()
    await recorder.finish()
    after = endpoint.wsapp.stats()
    assert before.finished == {}
    assert before.messages_received == 0
    assert (during.connections_open, after.connections_open) == (1, 0)
    assert during.finished == {}
    assert after.finished == {1000: 1}
    assert after.handshakes_refused is not during.handshakes_refused  # copies, not the counters
    for field in dataclasses.fields(Stats):
        if field.name != "connections_open" and isinstance(getattr(after, field.name), int):
            assert getattr(before, field.name) <= getattr(during, field.name)
            assert getattr(during, field.name) <= getattr(after, field.name)


async def test_broker_figures_with_redis(
    aiohttp_client: AiohttpClient, recorder: Recorder, redis_server: RedisServer
) -> None:
    from aiohttp_wsapp.redis import RedisBroker

    wsapps = [
        WebSocketApp(recorder.on_establish, broker=RedisBroker(redis_server.url)) for _ in "ab"
    ]
    one, two = [await aiohttp_client(wsapp.to_app()) for wsapp in wsapps]
    async with one.ws_connect("/") as first, two.ws_connect("/") as second:
        await wsapps[0].broadcast("to every process")
        assert await first.receive_str(timeout=TIMEOUT) == "to every process"
        assert await second.receive_str(timeout=TIMEOUT) == "to every process"
        sender, other = (wsapp.stats() for wsapp in wsapps)
        assert (sender.broadcasts, sender.broker_published, sender.broker_received) == (1, 1, 1)
        assert (other.broadcasts, other.broker_published, other.broker_received) == (0, 0, 1)
        assert sender.broadcast_frames == other.broadcast_frames == 1
        assert sender.broker_errors == other.broker_errors == 0
        assert sender.broker_reconnects == other.broker_reconnects == 0

        await redis_server.kill()
        await until(lambda: wsapps[1].stats().broker_errors == 1)  # it lost its connection
        with pytest.raises(BrokerError):
            await wsapps[0].broadcast("lost")
        await redis_server.start()
        await until(lambda: all(wsapp.stats().broker_reconnects == 1 for wsapp in wsapps), 15)
        sender = wsapps[0].stats()
        assert sender.broker_published == 1
        assert sender.broker_errors == 2  # the lost connection, and the broadcast that failed
        assert wsapps[1].stats().broker_errors == 1
    for client in (one, two):
        await client.close()  # stops the brokers while their Redis still runs


async def test_group_broadcasts_with_history_count_their_envelopes(
    serve: Serve, recorder: Recorder
) -> None:
    from aiohttp_wsapp import History
    from aiohttp_wsapp.history import default_envelope

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.join("room")

    endpoint = await serve(on_establish, history=History())
    async with endpoint.client.ws_connect("/websocket") as ws:
        await recorder.connection()
        position = await endpoint.wsapp.broadcast("news", group="room")
        assert position is not None
        envelope = default_envelope(position, "room", "news")
        received = await ws.receive(TIMEOUT)
        assert received.data == envelope
    await recorder.finish()
    stats = endpoint.wsapp.stats()
    size = len(envelope.encode() if isinstance(envelope, str) else envelope)
    assert (stats.broadcasts, stats.broadcast_frames) == (1, 1)
    assert (stats.messages_sent, stats.bytes_sent) == (1, size)  # the envelope, not "news"


async def test_a_replay_counts_each_envelope_as_a_send(serve: Serve, recorder: Recorder) -> None:
    """SPEC §9: a replay counts as sends, one per replayed broadcast, its envelope's bytes."""
    from aiohttp_wsapp import History
    from aiohttp_wsapp.history import default_envelope

    endpoint = await serve(recorder.on_establish, history=History())
    wsapp = endpoint.wsapp
    before = await wsapp.position("room")
    positions = [await wsapp.broadcast(f"missed {n}", group="room") for n in range(3)]
    envelopes = [
        default_envelope(position, "room", f"missed {n}")
        for n, position in enumerate(positions)
        if position is not None
    ]
    assert len(envelopes) == 3
    async with endpoint.client.ws_connect("/websocket") as ws:
        conn = await recorder.connection()
        recovery = await conn.join("room", since=before)
        assert (recovery.recovered, recovery.replayed) == (True, 3)
        for envelope in envelopes:
            assert (await ws.receive(TIMEOUT)).data == envelope
    await recorder.finish()
    stats = wsapp.stats()
    sizes = [len(e.encode() if isinstance(e, str) else e) for e in envelopes]
    assert (stats.broadcasts, stats.broadcast_frames) == (3, 3)  # frames: the replay's
    assert (stats.messages_sent, stats.bytes_sent) == (3, sum(sizes))
