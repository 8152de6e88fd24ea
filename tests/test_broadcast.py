"""Broadcast to every connection, to groups, with exclusions."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import Endpoint, Serve
from rawws import RawWebSocket, address, until
from support import TIMEOUT, Recorder

from aiohttp_wsapp import Connection


def join_tail_group(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Join the group named by the sub-path, if any."""
    if tail := request.match_info.get("tail", ""):
        conn.join(tail)


@pytest.fixture
async def endpoint(serve: Serve, recorder: Recorder) -> Endpoint:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        join_tail_group(conn, request, results)
        recorder.on_establish(conn, request, results)

    return await serve(on_establish)


async def open_clients(
    endpoint: Endpoint, recorder: Recorder, paths: list[str], **kwargs: Any
) -> tuple[list[aiohttp.ClientWebSocketResponse], list[Connection]]:
    """Connect one client per path; return them with their server-side connections."""
    clients, conns = [], []
    for path in paths:
        clients.append(await endpoint.client.ws_connect(path, **kwargs))
        conns.append(await recorder.connection())
    return clients, conns


async def received(ws: aiohttp.ClientWebSocketResponse) -> str | bytes:
    message = await ws.receive(TIMEOUT)
    assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
    return message.data  # type: ignore[no-any-return]


async def nothing_more(clients: list[aiohttp.ClientWebSocketResponse], marker: str) -> None:
    """Broadcasting a marker to all: each client's next message must be that marker."""
    for ws in clients:
        assert await received(ws) == marker


async def test_broadcast_reaches_every_connection(endpoint: Endpoint, recorder: Recorder) -> None:
    clients, _ = await open_clients(endpoint, recorder, ["/websocket"] * 3)
    await endpoint.wsapp.broadcast("to all")
    await endpoint.wsapp.broadcast(b"\x00bytes")
    for ws in clients:
        assert [await received(ws), await received(ws)] == ["to all", b"\x00bytes"]


async def test_broadcast_to_a_group_reaches_only_its_members(
    endpoint: Endpoint, recorder: Recorder
) -> None:
    clients, conns = await open_clients(
        endpoint, recorder, ["/websocket/red", "/websocket/red", "/websocket/blue"]
    )
    assert conns[0].groups == frozenset({"red"})
    await endpoint.wsapp.broadcast("red only", group="red")
    await endpoint.wsapp.broadcast("end")
    assert [await received(clients[0]), await received(clients[1])] == ["red only"] * 2
    await nothing_more([clients[0], clients[1]], "end")
    await nothing_more([clients[2]], "end")


async def test_broadcast_to_a_group_without_members_reaches_nobody(
    endpoint: Endpoint, recorder: Recorder
) -> None:
    clients, _ = await open_clients(endpoint, recorder, ["/websocket/red", "/websocket"])
    await endpoint.wsapp.broadcast("to an empty room", group="empty")
    await endpoint.wsapp.broadcast("end")
    await nothing_more(clients, "end")


async def test_exclude_one_connection_or_several(endpoint: Endpoint, recorder: Recorder) -> None:
    clients, conns = await open_clients(endpoint, recorder, ["/websocket"] * 3)
    await endpoint.wsapp.broadcast("not to 0", exclude=conns[0])
    await endpoint.wsapp.broadcast("only to 2", exclude=[conns[0], conns[1]])
    await endpoint.wsapp.broadcast("end")
    assert await received(clients[2]) == "not to 0"
    assert await received(clients[2]) == "only to 2"
    assert await received(clients[1]) == "not to 0"
    await nothing_more(clients, "end")


async def test_leave_and_close_remove_a_connection_from_its_groups(
    endpoint: Endpoint, recorder: Recorder
) -> None:
    clients, conns = await open_clients(endpoint, recorder, ["/websocket/a"] * 3)
    conns[0].leave("a")
    conns[0].leave("never joined")
    assert conns[0].groups == frozenset()
    await clients[1].close()
    closed = await recorder.finish()
    assert closed.groups == frozenset()  # SPEC §5: a closed connection leaves every group
    await endpoint.wsapp.broadcast("group", group="a")
    await endpoint.wsapp.broadcast("end")
    assert await received(clients[2]) == "group"
    await nothing_more([clients[0], clients[2]], "end")


async def test_compressed_and_uncompressed_peers_both_receive(
    endpoint: Endpoint, recorder: Recorder
) -> None:
    plain, _ = await open_clients(endpoint, recorder, ["/websocket"], compress=0)
    deflated, _ = await open_clients(endpoint, recorder, ["/websocket"], compress=15)
    text = "compressible " * 1000
    for _ in range(3):
        await endpoint.wsapp.broadcast(text)
    for ws in plain + deflated:
        assert [await received(ws) for _ in range(3)] == [text] * 3


async def test_broadcast_takes_only_str_or_bytes(endpoint: Endpoint) -> None:
    with pytest.raises(TypeError):
        await endpoint.wsapp.broadcast(42)  # type: ignore[arg-type]


async def test_join_takes_a_string_name(endpoint: Endpoint, recorder: Recorder) -> None:
    _, [conn] = await open_clients(endpoint, recorder, ["/websocket"])
    with pytest.raises(TypeError):
        conn.join(7)  # type: ignore[call-overload]


async def test_broadcast_from_a_message_handler(serve: Serve, recorder: Recorder) -> None:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        conn.on("message", lambda conn, message: conn.app.broadcast(message, exclude=conn))
        recorder.on_establish(conn, request, results)

    endpoint = await serve(on_establish)
    async with (
        endpoint.client.ws_connect("/websocket") as speaker,
        endpoint.client.ws_connect("/websocket") as listener,
    ):
        await recorder.connection()
        await recorder.connection()
        await speaker.send_str("hello all")
        assert await listener.receive_str(timeout=TIMEOUT) == "hello all"


BROADCASTING = 0.6
"""Seconds of broadcasts, one after the other, in the test of the loop's longest hold."""


async def test_an_awaited_broadcast_lets_other_tasks_run(
    endpoint: Endpoint, recorder: Recorder
) -> None:
    """A loop of awaited broadcasts holds the event loop only briefly at a time: a ticker task,
    which wakes up whenever the loop lets it, never waits for more than a small part of the
    broadcasting (were the loop held throughout, it would wait for all of it)."""
    host, port = address(endpoint.server)
    # Raw clients, dropped unread at the end: reading every broadcast would only slow the test.
    clients = [await RawWebSocket.connect(host, port, "/websocket") for _ in range(3)]
    for _ in clients:
        await recorder.connection()
    loop = asyncio.get_running_loop()
    wakeups: list[float] = []

    async def tick() -> None:
        while True:
            wakeups.append(loop.time())
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await until(lambda: bool(wakeups))
    started = loop.time()
    broadcasts = 0
    while loop.time() < started + BROADCASTING:
        await endpoint.wsapp.broadcast("tick")
        broadcasts += 1
    ended = loop.time()
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    for client in clients:
        client.abort()
    during = [started, *(t for t in wakeups if started < t < ended), ended]
    longest_hold = max(later - earlier for earlier, later in itertools.pairwise(during))
    assert longest_hold <= BROADCASTING / 3, f"held the loop {longest_hold:.3f} s at once"
    assert len(during) > 10
    assert broadcasts > 10
