"""A thousand concurrent connections on loopback, a tenth of which vanish mid-conversation.

Every message of every surviving client comes back, every connection's ``finish`` fires once, and
once they are all gone the endpoint holds nothing of them: every ``Connection`` is freed, and the
memory Python allocated (measured with :mod:`tracemalloc`) returns to its level before the load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import resource
import tracemalloc
import weakref
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from rawws import log_problems, until, wait_for_tasks
from support import require

from aiohttp_wsapp import WSAPP_KEY, Connection, WebSocketApp, WebSocketServer, create_app

CLIENTS = 1000
VANISHING_EVERY = 10
"""Every tenth client drops its TCP connection without a closing handshake."""
MESSAGES = 3
"""Messages each surviving client sends (text and binary, alternately)."""
CONNECTING_AT_ONCE = 100
"""Handshakes in flight at a time: below the listen backlog (128) so that none waits for a SYN
retransmission; the connections themselves are all open at once."""
WARM_UP_CLIENTS = CLIENTS
"""Clients of the first round. It grows every cache, and every dict and set that holds one entry
per connection (asyncio's tasks and transports, the selector's map, aiohttp's and the endpoint's
connections) to its size under load: such containers keep their capacity when emptied, which is
not a leak. The second round then has to leave memory where the first left it."""
STEP_TIMEOUT = 30.0
"""A generous bound for each step of a round (the whole test takes a few seconds)."""
MEMORY_TOLERANCE = 256 << 10
"""Bytes allocated by the second round and still held after it: 256 KiB, a quarter of a KiB per
connection (a run leaves some 70 KiB of set capacity). A connection that leaked would hold
several KiB (its request, response, reader and buffers); the round peaks at some 30 MiB."""
FILES_NEEDED = 4096


@pytest.fixture
def enough_file_descriptors() -> Any:
    """Raise the soft ``RLIMIT_NOFILE`` to :data:`FILES_NEEDED` for the test, then restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    enough = hard == resource.RLIM_INFINITY or hard >= FILES_NEEDED
    require(enough, f"the hard limit on open files is {hard}, below {FILES_NEEDED}")
    if soft != resource.RLIM_INFINITY and soft < FILES_NEEDED:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FILES_NEEDED, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class LoadEndpoint:
    """The ``on_establish`` of the load test: echoes, counts, and keeps only weak references."""

    def __init__(self) -> None:
        """Start with nothing established."""
        self.established = 0
        self.finished = 0
        self.finished_twice: list[int] = []
        self.connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._target = 0
        self._all_finished = asyncio.Event()

    def expect(self, total: int) -> None:
        """Make :meth:`all_finished` wait until ``total`` connections have finished in all."""
        self._target = total
        self._all_finished.clear()
        if self.finished >= total:
            self._all_finished.set()

    async def all_finished(self) -> None:
        """Wait until the expected number of connections have finished."""
        try:
            await asyncio.wait_for(self._all_finished.wait(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{self.finished} of {self._target} finish events after {STEP_TIMEOUT} s"
            ) from None

    def __call__(self, conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        """Echo every message, and count the connection and its ``finish``."""
        self.established += 1
        self.connections.add(conn)
        finished = False

        def on_finish(conn: Connection) -> None:
            nonlocal finished
            if finished:
                self.finished_twice.append(id(conn))
            finished = True
            self.finished += 1
            if self.finished >= self._target:
                self._all_finished.set()

        conn.on(message=lambda conn, message: conn.send(message), finish=on_finish)


@dataclasses.dataclass
class Round:
    """What one round of clients saw."""

    lost: list[str] = dataclasses.field(default_factory=list)
    """Surviving clients whose echoes did not match what they sent."""
    peak_connections: int = 0


def abort(ws: aiohttp.ClientWebSocketResponse[Any]) -> None:
    """Reset the client's TCP connection at once, without a closing handshake: the peer vanishes."""
    connection = ws._response.connection
    assert connection is not None
    assert connection.transport is not None
    connection.transport.abort()


async def run_round(
    session: aiohttp.ClientSession, url: str, clients: int, wsapp: WebSocketApp
) -> Round:
    """Connect ``clients`` clients, hold them all open, then talk; a tenth vanish mid-talk."""
    result = Round()
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    connected = 0
    all_connected = asyncio.Event()

    async def client(number: int) -> None:
        nonlocal connected
        async with gate:
            ws = await session.ws_connect(url, autoclose=True, heartbeat=None)
        connected += 1
        if connected == clients:
            # The server may still be registering the last ones: all are open once it has.
            await until(lambda: len(wsapp.connections) >= clients, STEP_TIMEOUT)
            result.peak_connections = len(wsapp.connections)
            all_connected.set()
        await asyncio.wait_for(all_connected.wait(), STEP_TIMEOUT)
        if number % VANISHING_EVERY == 0:
            await ws.send_str(f"{number} before vanishing")
            echo = (await ws.receive(timeout=STEP_TIMEOUT)).data
            if echo != f"{number} before vanishing":
                result.lost.append(f"client {number} got back {echo!r}")
            await ws.send_str(f"{number} lost in flight")
            abort(ws)
            await ws.close()  # frees the client's side; the server saw a reset
            return
        sent: list[str | bytes] = []
        for i in range(MESSAGES):
            message: str | bytes = f"{number}:{i}" if i % 2 == 0 else f"{number}:{i}".encode()
            sent.append(message)
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)
        received = [(await ws.receive(timeout=STEP_TIMEOUT)).data for _ in sent]
        if received != sent:
            result.lost.append(f"client {number} sent {sent}, got back {received}")
        await ws.close()

    await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(clients))), STEP_TIMEOUT)
    return result


async def test_thousand_connections_with_a_tenth_vanishing_are_served_and_freed(
    aiohttp_server: AiohttpServer,
    enough_file_descriptors: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # asyncio's debug mode records a traceback for every callback and future: ten times slower
    # here, and the other tests run with it. This one measures the endpoint as it runs in
    # production.
    asyncio.get_running_loop().set_debug(False)
    endpoint = LoadEndpoint()
    sub = create_app(endpoint, websocket_server=WebSocketServer(heartbeat=None))
    wsapp = sub[WSAPP_KEY]
    app = web.Application()
    app.add_subapp("/ws", sub)
    server = await aiohttp_server(app)
    url = f"ws://{server.host}:{server.port}/ws"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            before = asyncio.all_tasks()
            # The first round grows caches and containers to their size under load.
            endpoint.expect(WARM_UP_CLIENTS)
            warm_up = await run_round(session, url, WARM_UP_CLIENTS, wsapp)
            await endpoint.all_finished()
            leftover = await wait_for_tasks(before)
            assert not leftover, leftover
            gc.collect()
            baseline, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()

            endpoint.expect(WARM_UP_CLIENTS + CLIENTS)
            result = await run_round(session, url, CLIENTS, wsapp)
            await endpoint.all_finished()
            leftover = await wait_for_tasks(before)
            assert not leftover, leftover
            gc.collect()
            held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert warm_up.lost == []
    assert result.lost == []
    assert result.peak_connections == CLIENTS
    assert endpoint.established == WARM_UP_CLIENTS + CLIENTS
    assert endpoint.finished == WARM_UP_CLIENTS + CLIENTS
    assert endpoint.finished_twice == []
    assert len(wsapp.connections) == 0
    assert list(endpoint.connections) == [], "connections still referenced after finish"
    assert held - baseline < MEMORY_TOLERANCE, (
        f"{(held - baseline) / 1024:.0f} KiB still held after the load "
        f"(peak {(peak - baseline) / 1024:.0f} KiB above the baseline)"
    )
    assert not log_problems(caplog.records)
