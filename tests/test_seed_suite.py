"""What the Perl original's own test suite checks, with aiohttp's and the websockets client."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import Endpoint, Serve
from support import TIMEOUT
from websockets.asyncio.client import connect as websockets_connect

from aiohttp_wsapp import Connection

PAYLOADS: list[str | bytes] = [
    b"",
    "0",
    b"\x00\x01\x02\x03\x04\x05\x06\x07",
    bytes(range(256)),
    b"\xab" * 65536,
    "日本語のテキスト, Ελληνικά, emoji 🎉",
]
GREETING = "Welcome!"


def greet_and_echo(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Greet on establish, then echo every message."""
    conn.send(GREETING)
    conn.on(message=lambda conn, message: conn.send(message))


async def echo_round_trip(ws: aiohttp.ClientWebSocketResponse, payload: str | bytes) -> None:
    """Send ``payload`` as text or binary and expect it back unchanged."""
    if isinstance(payload, str):
        await ws.send_str(payload)
        assert await ws.receive_str(timeout=TIMEOUT) == payload
    else:
        await ws.send_bytes(payload)
        assert await ws.receive_bytes(timeout=TIMEOUT) == payload


@pytest.fixture
async def endpoint(serve: Serve) -> Endpoint:
    return await serve(greet_and_echo)


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{type(p).__name__}-{len(p)}")
async def test_aiohttp_client_echo_on_a_new_connection_each(
    endpoint: Endpoint, payload: str | bytes
) -> None:
    async with endpoint.client.ws_connect("/websocket") as ws:
        assert await ws.receive_str(timeout=TIMEOUT) == GREETING
        await echo_round_trip(ws, payload)


async def test_aiohttp_client_echo_all_on_one_connection(endpoint: Endpoint) -> None:
    async with endpoint.client.ws_connect("/websocket") as ws:
        assert await ws.receive_str(timeout=TIMEOUT) == GREETING
        for payload in PAYLOADS:
            await echo_round_trip(ws, payload)


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{type(p).__name__}-{len(p)}")
async def test_websockets_client_echo_on_a_new_connection_each(
    endpoint: Endpoint, payload: str | bytes
) -> None:
    async with websockets_connect(endpoint.url()) as ws:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == GREETING
        await ws.send(payload)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == payload


async def test_websockets_client_echo_all_on_one_connection(endpoint: Endpoint) -> None:
    async with websockets_connect(endpoint.url(), compression=None) as ws:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == GREETING
        for payload in PAYLOADS:
            await ws.send(payload)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == payload
