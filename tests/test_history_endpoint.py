"""History in one process (no broker), over real sockets: positions, envelopes, joins since a
position, and what cannot be recovered."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from conftest import Endpoint, Serve
from support import TIMEOUT, Recorder

from aiohttp_wsapp import (
    BrokerError,
    Connection,
    ConnectionClosed,
    History,
    Position,
    Recovery,
    WebSocketApp,
    WebSocketServer,
)
from aiohttp_wsapp.broker import Broadcast, Broker, Deliver
from aiohttp_wsapp.history import new_epoch, read_envelope

Client = aiohttp.ClientWebSocketResponse


async def serve_history(
    serve: Serve, recorder: Recorder, history: History | None = None, **kwargs: Any
) -> Endpoint:
    return await serve(recorder.on_establish, history=history or History(), **kwargs)


async def connect(endpoint: Endpoint, recorder: Recorder) -> tuple[Client, Connection]:
    ws = await endpoint.client.ws_connect("/websocket")
    return ws, await recorder.connection()


async def next_frame(ws: Client) -> str | bytes:
    message = await ws.receive(TIMEOUT)
    assert message.type in (WSMsgType.TEXT, WSMsgType.BINARY), message
    return message.data  # type: ignore[no-any-return]


async def next_envelope(ws: Client) -> tuple[str, Position, str | bytes]:
    return read_envelope(await next_frame(ws))


async def marker(endpoint: Endpoint, ws: Client, text: str = "marker") -> None:
    """Broadcast a marker to everyone (not kept, not wrapped): the next frame ``ws`` gets must
    be it, so nothing else came before."""
    await endpoint.wsapp.broadcast(text)
    assert await next_frame(ws) == text


# -- broadcast ----------------------------------------------------------------------------------


async def test_group_broadcasts_return_positions_that_grow_by_one(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder)
    wsapp = endpoint.wsapp
    positions = [await wsapp.broadcast(f"m{n}", group="g") for n in range(3)]
    assert [p.offset for p in positions if p is not None] == [1, 2, 3]
    assert len({p.epoch for p in positions if p is not None}) == 1
    other = await wsapp.broadcast("x", group="other")
    assert other == Position(positions[0].epoch, 1)  # type: ignore[union-attr]
    assert await wsapp.broadcast("to all") is None


async def test_broadcast_returns_none_without_history(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve(recorder.on_establish)
    assert await endpoint.wsapp.broadcast("x", group="g") is None
    with pytest.raises(ValueError, match="history"):
        await endpoint.wsapp.position("g")


async def test_group_broadcasts_reach_peers_in_the_default_envelope(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder)
    ws, conn = await connect(endpoint, recorder)
    conn.join("room")
    text = await endpoint.wsapp.broadcast("héllo", group="room")
    binary = await endpoint.wsapp.broadcast(b"\x00\n\xff", group="room")
    text_frame = await ws.receive(TIMEOUT)
    assert text_frame.type is WSMsgType.TEXT
    assert read_envelope(text_frame.data) == ("room", text, "héllo")
    binary_frame = await ws.receive(TIMEOUT)
    assert binary_frame.type is WSMsgType.BINARY
    assert read_envelope(binary_frame.data) == ("room", binary, b"\x00\n\xff")
    await ws.close()


async def test_broadcasts_to_everyone_are_neither_kept_nor_wrapped(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder)
    ws, conn = await connect(endpoint, recorder)
    conn.join("room")
    await endpoint.wsapp.broadcast("plain")
    assert await next_frame(ws) == "plain"
    assert (await endpoint.wsapp.position("room")).offset == 0
    await ws.close()


async def test_the_envelope_is_built_once_per_broadcast(serve: Serve, recorder: Recorder) -> None:
    calls: list[tuple[Position, str, str | bytes]] = []

    def envelope(position: Position, group: str, data: str | bytes) -> bytes:
        calls.append((position, group, data))
        return f"{group}|{position}|".encode() + (data if isinstance(data, bytes) else b"")

    endpoint = await serve_history(serve, recorder, History(envelope=envelope))
    clients = [await connect(endpoint, recorder) for _ in range(3)]
    for _, conn in clients:
        conn.join("g")
    position = await endpoint.wsapp.broadcast(b"data", group="g")
    for ws, _ in clients:
        assert await next_frame(ws) == f"g|{position}|data".encode()
        await ws.close()
    assert calls == [(position, "g", b"data")]


async def test_an_envelope_that_returns_neither_str_nor_bytes_fails_the_broadcast(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder, History(envelope=lambda p, g, d: 42))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="envelope"):
        await endpoint.wsapp.broadcast("x", group="g")


async def test_exclude_applies_to_the_live_broadcast(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve_history(serve, recorder)
    (ws1, conn1), (ws2, conn2) = [await connect(endpoint, recorder) for _ in range(2)]
    conn1.join("g")
    conn2.join("g")
    position = await endpoint.wsapp.broadcast("not to 1", group="g", exclude=conn1)
    assert await next_envelope(ws2) == ("g", position, "not to 1")
    await marker(endpoint, ws1)
    await ws1.close()
    await ws2.close()


# -- position -----------------------------------------------------------------------------------


async def test_position_is_zero_before_the_first_broadcast_then_the_latest(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder)
    start = await endpoint.wsapp.position("g")
    assert start.offset == 0
    latest = await endpoint.wsapp.broadcast("x", group="g")
    assert await endpoint.wsapp.position("g") == latest == Position(start.epoch, 1)


async def test_every_endpoint_instance_is_a_new_epoch(serve: Serve, recorder: Recorder) -> None:
    one = await serve_history(serve, recorder)
    other = await serve_history(serve, Recorder())
    assert (await one.wsapp.position("g")).epoch != (await other.wsapp.position("g")).epoch


# -- join since a position ----------------------------------------------------------------------


async def test_join_since_replays_what_was_missed_in_order_then_live(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder)
    wsapp = endpoint.wsapp
    sent = [await wsapp.broadcast(f"m{n}", group="g") for n in range(5)]
    ws, conn = await connect(endpoint, recorder)
    assert sent[1] is not None
    recovery = await conn.join("g", since=sent[1])
    assert recovery == Recovery(True, sent[4], 3)  # type: ignore[arg-type]
    for n in (2, 3, 4):
        assert await next_envelope(ws) == ("g", sent[n], f"m{n}")
    live = await wsapp.broadcast("live", group="g")
    assert await next_envelope(ws) == ("g", live, "live")
    assert "g" in conn.groups
    await ws.close()


async def test_join_since_the_latest_position_replays_nothing(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder)
    latest = await endpoint.wsapp.broadcast("x", group="g")
    assert latest is not None
    ws, conn = await connect(endpoint, recorder)
    assert await conn.join("g", since=latest) == Recovery(True, latest, 0)
    await marker(endpoint, ws)
    await ws.close()


async def test_the_replay_starts_at_once_without_being_awaited(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder)
    first = await endpoint.wsapp.position("g")
    sent = await endpoint.wsapp.broadcast("missed", group="g")
    ws, conn = await connect(endpoint, recorder)
    conn.join("g", since=first)  # not awaited
    assert await next_envelope(ws) == ("g", sent, "missed")
    await ws.close()


async def test_the_replay_holds_broadcasts_that_excluded_the_member(
    serve: Serve, recorder: Recorder
) -> None:
    # SPEC §8: exclude is not recorded.
    endpoint = await serve_history(serve, recorder)
    ws, conn = await connect(endpoint, recorder)
    conn.join("g")
    before = await endpoint.wsapp.position("g")
    sent = await endpoint.wsapp.broadcast("its own", group="g", exclude=conn)
    ws2, conn2 = await connect(endpoint, recorder)
    # conn2 stands for conn's client, reconnected
    assert await conn2.join("g", since=before) == Recovery(True, sent, 1)  # type: ignore[arg-type]
    assert await next_envelope(ws2) == ("g", sent, "its own")
    await ws.close()
    await ws2.close()


async def test_join_without_since_is_unchanged(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve_history(serve, recorder)
    await endpoint.wsapp.broadcast("before", group="g")
    ws, conn = await connect(endpoint, recorder)
    conn.join("g")  # need not be awaited
    await conn.join("g")  # may be awaited; joining twice changes nothing
    await marker(endpoint, ws)  # nothing replayed
    live = await endpoint.wsapp.broadcast("live", group="g")
    assert await next_envelope(ws) == ("g", live, "live")
    await ws.close()


async def test_join_without_since_works_without_history(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve(recorder.on_establish)
    ws, conn = await connect(endpoint, recorder)
    await conn.join("g")
    await endpoint.wsapp.broadcast("plain", group="g")
    assert await next_frame(ws) == "plain"
    await ws.close()


async def test_since_without_history_is_a_value_error(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve(recorder.on_establish)
    ws, conn = await connect(endpoint, recorder)
    with pytest.raises(ValueError, match="history"):
        conn.join("g", since=Position("abc", 0))
    assert conn.groups == frozenset()
    await ws.close()


async def test_since_must_be_a_position(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve_history(serve, recorder)
    ws, conn = await connect(endpoint, recorder)
    with pytest.raises(TypeError, match="Position"):
        conn.join("g", since="abc.0")  # type: ignore[call-overload]
    assert conn.groups == frozenset()
    await ws.close()


async def test_a_closed_connection_joins_nothing(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve_history(serve, recorder)
    ws, conn = await connect(endpoint, recorder)
    await ws.close()
    await recorder.finish()
    position = await endpoint.wsapp.position("g")
    conn.join("g", since=position)  # not awaited: nothing, and no warning
    with pytest.raises(ConnectionClosed):
        await conn.join("g", since=position)
    await conn.join("g")
    assert conn.groups == frozenset()


# -- what cannot be recovered -------------------------------------------------------------------


async def not_recovered_but_joined(endpoint: Endpoint, recorder: Recorder, since: Position) -> None:
    """Join since ``since``: nothing replayed, not recovered, joined all the same."""
    ws, conn = await connect(endpoint, recorder)
    latest = await endpoint.wsapp.position("g")
    assert await conn.join("g", since=since) == Recovery(False, latest, 0)
    await marker(endpoint, ws)  # nothing was replayed
    live = await endpoint.wsapp.broadcast("live", group="g")
    assert await next_envelope(ws) == ("g", live, "live")
    await ws.close()


async def test_a_trimmed_history_is_not_recovered(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve_history(serve, recorder, History(size=3))
    first = await endpoint.wsapp.position("g")
    for n in range(4):
        await endpoint.wsapp.broadcast(f"m{n}", group="g")
    await not_recovered_but_joined(endpoint, recorder, first)


async def test_an_expired_history_is_not_recovered(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve_history(serve, recorder, History(ttl=0.2))
    first = await endpoint.wsapp.position("g")
    await endpoint.wsapp.broadcast("expires", group="g")
    await asyncio.sleep(0.3)
    await not_recovered_but_joined(endpoint, recorder, first)


async def test_another_epoch_is_not_recovered(serve: Serve, recorder: Recorder) -> None:
    endpoint = await serve_history(serve, recorder)
    await endpoint.wsapp.broadcast("x", group="g")
    await not_recovered_but_joined(endpoint, recorder, Position(new_epoch(), 1))


async def test_a_group_silent_longer_than_ttl_keeps_its_epoch_and_offset(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint = await serve_history(serve, recorder, History(ttl=0.2))
    for n in range(3):
        last = await endpoint.wsapp.broadcast(f"m{n}", group="g")
    assert last is not None
    await asyncio.sleep(0.3)
    ws, conn = await connect(endpoint, recorder)
    assert await conn.join("g", since=last) == Recovery(True, last, 0)
    following = await endpoint.wsapp.broadcast("again", group="g")
    assert following == Position(last.epoch, 4)
    assert await next_envelope(ws) == ("g", following, "again")
    await ws.close()


# -- replay and live, whatever the interleaving -------------------------------------------------


async def test_replay_then_live_none_lost_none_twice_while_broadcasting(
    serve: Serve,
) -> None:
    connections: dict[str, asyncio.Future[Connection]] = {}

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        connections[request.match_info["tail"]].set_result(conn)

    endpoint = await serve(on_establish, history=History())
    wsapp = endpoint.wsapp
    total = 400
    rng = random.Random(21)
    start = await wsapp.position("g")
    published: list[Position] = []
    joined_at: list[int] = []
    names = [f"c{n}" for n in range(6)]
    turns = {name: asyncio.Event() for name in names}
    for name in names:
        connections[name] = asyncio.get_running_loop().create_future()

    async def broadcaster() -> None:
        for n in range(total):
            if n % (total // 8) == 0 and n // (total // 8) < len(names):
                # Let a client connect now: it joins while the broadcasts go on.
                name = names[n // (total // 8)]
                turns[name].set()
                await asyncio.wait_for(connections[name], TIMEOUT)
            position = await wsapp.broadcast(f"m{n}", group="g")
            assert position is not None
            published.append(position)
            await asyncio.sleep(0)

    async def reconnecting_client(name: str) -> None:
        await turns[name].wait()
        async with endpoint.client.ws_connect(f"/websocket/{name}") as ws:
            conn = await connections[name]
            since = Position(start.epoch, rng.randrange(0, len(published) + 1))
            recovery = await conn.join("g", since=since)
            assert recovery.recovered
            joined_at.append(recovery.position.offset)
            offsets: list[int] = []
            while not offsets or offsets[-1] < total:
                _, position, data = await next_envelope(ws)
                assert data == f"m{position.offset - 1}"
                offsets.append(position.offset)
            assert offsets == list(range(since.offset + 1, total + 1))

    clients = [reconnecting_client(name) for name in names]
    await asyncio.wait_for(asyncio.gather(broadcaster(), *clients), 30)
    assert min(joined_at) < total  # at least one joined while the broadcasts went on


# -- send_buffer_limit --------------------------------------------------------------------------


async def test_a_replay_obeys_send_buffer_limit(serve: Serve, recorder: Recorder) -> None:
    server = WebSocketServer(send_buffer_limit=256 * 1024, compress=False)
    endpoint = await serve_history(serve, recorder, websocket_server=server)
    first = await endpoint.wsapp.position("g")
    for _ in range(64):  # 16 MiB kept, far more than the socket buffers and the limit hold
        await endpoint.wsapp.broadcast(b"\x00" * 256 * 1024, group="g")
    ws, conn = await connect(endpoint, recorder)
    await conn.join("g", since=first)
    finished = await recorder.finish()
    assert finished is conn
    assert (conn.close_code, conn.close_reason) == (1008, "send buffer overflow")
    with contextlib.suppress(aiohttp.ClientError):
        await ws.close()


# -- construction -------------------------------------------------------------------------------


def test_history_must_be_a_history() -> None:
    with pytest.raises(TypeError, match="History"):
        WebSocketApp(lambda c, r, h: None, history=1000)  # type: ignore[arg-type]


class _BrokerWithoutHistory(Broker):
    async def start(self, deliver: Deliver, counts: Any = None) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def publish(self, broadcast: Broadcast) -> None:
        raise BrokerError("unused")


def test_a_broker_that_keeps_no_history_is_refused() -> None:
    with pytest.raises(TypeError, match="keeps no history"):
        WebSocketApp(lambda c, r, h: None, broker=_BrokerWithoutHistory(), history=History())
