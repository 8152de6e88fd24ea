"""The endpoint steers its peers: ``idle_timeout``, ``max_lifetime`` and ``max_message_rate``.

Every close is timed on the one clock that server and client share (they run in one event loop):
from the moment ``on_establish`` ran to the moment the client read the close frame. Each test
bounds both sides: never before the setting, and not later than the setting plus a margin
proportional to it (the checks run a few times per period, never per message).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from conftest import Endpoint, Serve
from support import TIMEOUT, Recorder

from aiohttp_wsapp import Connection, WebSocketServer

SETTINGS = ("idle_timeout", "max_lifetime", "max_message_rate")


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1.5, ValueError), ("10", TypeError), (True, TypeError)]
)
def test_settings_refuse_what_is_not_a_positive_number(
    name: str, value: object, error: type[Exception]
) -> None:
    options: dict[str, Any] = {name: value}
    with pytest.raises(error, match=name):
        WebSocketServer(**options)


@pytest.mark.parametrize("name", SETTINGS)
def test_settings_default_to_none_and_keep_their_value(name: str) -> None:
    assert getattr(WebSocketServer(), name) is None
    for value in (2.5, 3):
        options: dict[str, Any] = {name: value}
        assert getattr(WebSocketServer(**options), name) == value


class Timed:
    """An echoing ``on_establish`` that notes when each connection was established."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.established_at: list[float] = []

    def on_establish(
        self, conn: Connection, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        self.established_at.append(asyncio.get_running_loop().time())
        self.recorder.on_establish(conn, request, results)


async def read_close(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> tuple[int, str, float]:
    """Read until the server's close frame; return its code, its reason and when it came.

    Messages before it are skipped; the client answers pings by itself.
    """
    loop = asyncio.get_running_loop()
    while True:
        message = await ws.receive(timeout)
        if message.type is WSMsgType.CLOSE:
            return message.data, message.extra or "", loop.time()
        assert message.type in (WSMsgType.TEXT, WSMsgType.BINARY), message


async def serve_timed(serve: Serve, recorder: Recorder, **settings: Any) -> tuple[Endpoint, Timed]:
    recorder.echo = True
    timed = Timed(recorder)
    endpoint = await serve(timed.on_establish, websocket_server=WebSocketServer(**settings))
    return endpoint, timed


# -- idle_timeout ---------------------------------------------------------------------------

IDLE = 0.6


async def test_idle_connection_closes_with_1001_after_idle_timeout(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint, timed = await serve_timed(serve, recorder, idle_timeout=IDLE)
    async with endpoint.client.ws_connect("/websocket") as ws:
        code, reason, closed_at = await read_close(ws, TIMEOUT)
    assert (code, reason) == (WSCloseCode.GOING_AWAY, "idle timeout")
    idle = closed_at - timed.established_at[0]
    assert IDLE <= idle <= IDLE * 1.75, idle
    conn = await recorder.finish()
    assert (conn.close_code, conn.close_reason) == (1001, "idle timeout")
    assert endpoint.wsapp.stats().dropped["idle timeout"] == 1


async def test_messages_keep_a_connection_open_and_the_last_one_starts_the_idle_time(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint, timed = await serve_timed(serve, recorder, idle_timeout=IDLE)
    loop = asyncio.get_running_loop()
    async with endpoint.client.ws_connect("/websocket") as ws:
        for number in range(8):  # 8 messages, IDLE/3 apart: 2.3 idle timeouts of talking
            last_message_at = loop.time()  # the server receives it later
            await ws.send_str(str(number))
            assert await ws.receive_str(timeout=TIMEOUT) == str(number)
            await asyncio.sleep(IDLE / 3)
        assert loop.time() - timed.established_at[0] > 2 * IDLE
        code, reason, closed_at = await read_close(ws, TIMEOUT)
    assert (code, reason) == (WSCloseCode.GOING_AWAY, "idle timeout")
    idle = closed_at - last_message_at
    assert IDLE <= idle <= IDLE * 1.75, idle


async def test_pongs_do_not_keep_a_connection_open(serve: Serve, recorder: Recorder) -> None:
    endpoint, timed = await serve_timed(serve, recorder, idle_timeout=IDLE)
    async with endpoint.client.ws_connect("/websocket") as ws:

        async def pong_forever() -> None:
            while True:
                await ws.pong(b"still here")
                await asyncio.sleep(IDLE / 6)

        ponging = asyncio.create_task(pong_forever())
        try:
            code, reason, closed_at = await read_close(ws, TIMEOUT)
        finally:
            ponging.cancel()
    assert (code, reason) == (WSCloseCode.GOING_AWAY, "idle timeout")
    assert IDLE <= closed_at - timed.established_at[0] <= IDLE * 1.75


async def test_without_idle_timeout_a_silent_connection_stays_open(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint, _ = await serve_timed(serve, recorder, heartbeat=None)
    async with endpoint.client.ws_connect("/websocket") as ws:
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(3 * IDLE)
        await ws.send_str("still open")
        assert await ws.receive_str(timeout=TIMEOUT) == "still open"


# -- max_lifetime ---------------------------------------------------------------------------

LIFETIME = 1.0


async def test_connections_close_with_1001_after_max_lifetime_with_jitter(
    serve: Serve, recorder: Recorder
) -> None:
    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        recorder.on_establish(conn, request, results)
        conn.send(repr(asyncio.get_running_loop().time()))  # when it was established

    server = WebSocketServer(max_lifetime=LIFETIME)
    endpoint = await serve(on_establish, websocket_server=server)
    count = 8

    async def lifetime() -> tuple[float, float]:
        async with endpoint.client.ws_connect("/websocket") as ws:
            established_at = float(await ws.receive_str(timeout=TIMEOUT))
            await ws.send_str("talking does not extend a lifetime")
            code, reason, closed_at = await read_close(ws, 3 * LIFETIME)
            assert (code, reason) == (WSCloseCode.GOING_AWAY, "max lifetime")
            return established_at, closed_at

    times = await asyncio.gather(*(lifetime() for _ in range(count)))
    # Never before max_lifetime; at most a tenth later, plus a margin for a loaded machine.
    lifetimes = [closed - established for established, closed in times]
    assert all(LIFETIME <= each <= LIFETIME * 1.1 + LIFETIME / 4 for each in lifetimes), lifetimes
    # Connections opened together do not close together: the jitter spreads their lifetimes
    # (8 uniform draws over a tenth of the lifetime all within a fiftieth: probability ~1e-4;
    # without jitter, they would all be equal to a few milliseconds).
    assert max(lifetimes) - min(lifetimes) >= LIFETIME / 50, lifetimes
    for _ in range(count):
        await recorder.finish()
    stats = endpoint.wsapp.stats()
    assert stats.dropped["max lifetime"] == count
    assert stats.finished == {1001: count}


# -- max_message_rate -----------------------------------------------------------------------


async def test_a_burst_up_to_the_rate_passes_the_next_message_closes_with_1008(
    serve: Serve, recorder: Recorder
) -> None:
    rate = 5  # the bucket holds 5; refilled at 5 per second, it gains one token per 200 ms
    endpoint, _ = await serve_timed(serve, recorder, max_message_rate=rate)
    async with endpoint.client.ws_connect("/websocket") as ws:
        for number in range(rate + 2):
            await ws.send_str(str(number))
        echoed = []
        while True:
            message = await ws.receive(TIMEOUT)
            if message.type is not WSMsgType.TEXT:
                break
            echoed.append(message.data)
    assert (message.type, message.data, message.extra) == (WSMsgType.CLOSE, 1008, "rate limit")
    assert echoed == [str(number) for number in range(rate)]  # the 6th was not dispatched
    assert recorder.messages == echoed
    await recorder.finish()
    stats = endpoint.wsapp.stats()
    assert stats.messages_received == rate
    assert stats.dropped["rate limit"] == 1
    assert stats.finished == {1008: 1}


async def test_a_peer_within_the_rate_is_never_limited(serve: Serve, recorder: Recorder) -> None:
    rate = 10
    endpoint, _ = await serve_timed(serve, recorder, max_message_rate=rate)
    async with endpoint.client.ws_connect("/websocket") as ws:
        for number in range(rate):  # a full burst empties the bucket...
            await ws.send_str(f"burst {number}")
        for number in range(rate):
            assert await ws.receive_str(timeout=TIMEOUT) == f"burst {number}"
        for number in range(6):  # ... and then half the rate is sustained
            await asyncio.sleep(2 / rate)
            await ws.send_str(f"steady {number}")
            assert await ws.receive_str(timeout=TIMEOUT) == f"steady {number}"
    assert (await recorder.finish()).close_code == 1000
    assert endpoint.wsapp.stats().dropped["rate limit"] == 0


async def test_a_rate_below_one_per_second_still_allows_one_message(
    serve: Serve, recorder: Recorder
) -> None:
    endpoint, _ = await serve_timed(serve, recorder, max_message_rate=0.2)
    async with endpoint.client.ws_connect("/websocket") as ws:
        await ws.send_str("one")
        await ws.send_str("two")
        assert await ws.receive_str(timeout=TIMEOUT) == "one"
        code, reason, _ = await read_close(ws, TIMEOUT)
    assert (code, reason) == (WSCloseCode.POLICY_VIOLATION, "rate limit")
    assert recorder.messages == ["one"]
