"""permessage-deflate as browsers meet it (SPEC §3 ``compress``), over real sockets: shared mode
(the default), dedicated mode and off, with clients that offer deflate (``websockets``, and a raw
client that shows what went over the wire)."""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from typing import Any

import pytest
from aiohttp import web
from conftest import Serve
from rawws import Frame, RawWebSocket, address
from support import TIMEOUT, Recorder
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosedError

from aiohttp_wsapp import Connection, WebSocketServer
from aiohttp_wsapp.frames import Payload, SharedDeflater

DEFLATE_OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
STATUS = json.dumps({"service": "api", "healthy": True, "nodes": list(range(600))})
"""A JSON status document of a few KiB: worth compressing in every mode."""


def echo(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    conn.on("message", lambda conn, message: conn.send(message))


async def raw_deflate_client(serve: Serve, **settings: Any) -> RawWebSocket:
    """A raw client that offers permessage-deflate, connected to an echo endpoint."""
    endpoint = await serve(echo, websocket_server=WebSocketServer(**settings))
    host, port = address(endpoint.server)
    return await RawWebSocket.connect(host, port, "/websocket", headers=[DEFLATE_OFFER])


async def echoed(client: RawWebSocket, text: str) -> Frame:
    client.send_text(text)
    return await client.read_message()


def inflate_alone(payload: bytes) -> bytes:
    """Inflate one message's payload with a fresh decompressor: no context from earlier ones."""
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


@pytest.mark.parametrize("compress", [True, "dedicated"], ids=["shared", "dedicated"])
async def test_a_client_that_offers_deflate_gets_it(serve: Serve, compress: Any) -> None:
    client = await raw_deflate_client(serve, compress=compress)
    assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
    frame = await echoed(client, STATUS)
    assert frame.rsv1
    assert len(frame.payload) < len(STATUS) // 2
    await client.close_socket()


async def test_compress_false_never_negotiates(serve: Serve) -> None:
    client = await raw_deflate_client(serve, compress=False)
    assert "Sec-WebSocket-Extensions" not in client.response.headers
    frame = await echoed(client, STATUS)
    assert not frame.rsv1
    assert frame.payload == STATUS.encode()
    await client.close_socket()


async def test_shared_mode_compresses_each_message_on_its_own(serve: Serve) -> None:
    client = await raw_deflate_client(serve)
    for _ in range(3):  # the same message again: with context it would shrink to a few bytes
        frame = await echoed(client, STATUS)
        assert frame.rsv1
        assert inflate_alone(frame.payload) == STATUS.encode()
    await client.close_socket()


async def test_shared_mode_sends_short_messages_uncompressed(serve: Serve) -> None:
    client = await raw_deflate_client(serve)
    short = '{"typing": "ann"}' * 3
    frame = await echoed(client, short)
    assert not frame.rsv1
    assert frame.payload == short.encode()
    await client.close_socket()


async def test_compress_threshold_sets_the_shortest_compressed_message(serve: Serve) -> None:
    client = await raw_deflate_client(serve, compress_threshold=0)
    frame = await echoed(client, "abc" * 20)
    assert frame.rsv1
    assert inflate_alone(frame.payload) == b"abc" * 20
    await client.close_socket()


async def test_dedicated_mode_keeps_context_across_messages(serve: Serve) -> None:
    client = await raw_deflate_client(serve, compress="dedicated")
    first = await echoed(client, STATUS)
    second = await echoed(client, STATUS)
    assert first.rsv1
    assert second.rsv1
    assert len(second.payload) < len(first.payload) // 4
    inflater = zlib.decompressobj(-15)  # one decompressor for the stream, as the client keeps
    for frame in (first, second):
        assert inflater.decompress(frame.payload + b"\x00\x00\xff\xff") == STATUS.encode()
    await client.close_socket()


@pytest.mark.parametrize("compress", [True, "dedicated", False], ids=["shared", "dedicated", "off"])
async def test_websockets_client_round_trips_in_every_mode(serve: Serve, compress: Any) -> None:
    endpoint = await serve(echo, websocket_server=WebSocketServer(compress=compress))
    async with websockets_connect(endpoint.url()) as ws:
        for message in ("hi", STATUS, STATUS, b"\x00" * 5000, os.urandom(3000), ""):
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message


@pytest.mark.parametrize("compress", [True, "dedicated"], ids=["shared", "dedicated"])
async def test_max_payload_size_is_the_inflated_size_of_a_compressed_message(
    serve: Serve, compress: Any
) -> None:
    limit = 64 * 1024
    server = WebSocketServer(compress=compress, max_payload_size=limit)
    endpoint = await serve(echo, websocket_server=server)
    random = os.urandom(limit)  # deflate makes it a little larger on the wire
    async with websockets_connect(endpoint.url(), max_size=None) as ws:
        await ws.send(random)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == random
        await ws.send(random + b"!")
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


@pytest.mark.parametrize("compress", [True, "dedicated"], ids=["shared", "dedicated"])
async def test_a_decompression_bomb_is_refused(serve: Serve, compress: Any) -> None:
    limit = 64 * 1024
    server = WebSocketServer(compress=compress, max_payload_size=limit)
    endpoint = await serve(echo, websocket_server=server)
    async with websockets_connect(endpoint.url(), max_size=None) as ws:
        await ws.send(b"\x00" * (64 * limit))  # a few hundred bytes compressed
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


@pytest.mark.parametrize("compress", [True, "dedicated"], ids=["shared", "dedicated"])
async def test_a_broadcast_reaches_deflate_and_plain_peers_alike(
    serve: Serve, compress: Any
) -> None:
    recorder = Recorder()
    endpoint = await serve(
        recorder.on_establish, websocket_server=WebSocketServer(compress=compress)
    )
    async with (
        websockets_connect(endpoint.url()) as deflating,
        websockets_connect(endpoint.url(), compression=None) as plain,
        endpoint.client.ws_connect("/websocket") as aiohttp_plain,
    ):
        for _ in range(3):
            await recorder.connection()
        for message in (STATUS, "short", STATUS):
            await endpoint.wsapp.broadcast(message)
            assert await asyncio.wait_for(deflating.recv(), TIMEOUT) == message
            assert await asyncio.wait_for(plain.recv(), TIMEOUT) == message
            assert await aiohttp_plain.receive_str(timeout=TIMEOUT) == message


async def test_a_compressed_broadcast_is_one_frame_for_every_shared_peer(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §3: a broadcast is compressed once for all shared-mode peers. zlib is deterministic,
    so identical frames do not show it: the shared deflater's compressions are counted."""
    compressed: list[bytes] = []
    compress = SharedDeflater.compress

    def counted(self: SharedDeflater, payload: Payload) -> bytes:
        compressed.append(bytes(payload))
        return compress(self, payload)

    monkeypatch.setattr(SharedDeflater, "compress", counted)
    recorder = Recorder()
    endpoint = await serve(recorder.on_establish)
    host, port = address(endpoint.server)
    clients = [
        await RawWebSocket.connect(host, port, "/websocket", headers=[DEFLATE_OFFER])
        for _ in range(3)
    ]
    plain = await RawWebSocket.connect(host, port, "/websocket")
    for _ in range(4):
        await recorder.connection()
    for sent in (1, 2):
        await endpoint.wsapp.broadcast(STATUS)
        frames = [await client.read_message() for client in clients]
        assert all(frame.rsv1 for frame in frames)
        assert len({frame.payload for frame in frames}) == 1
        assert inflate_alone(frames[0].payload) == STATUS.encode()
        plain_frame = await plain.read_message()
        assert (plain_frame.rsv1, plain_frame.payload) == (False, STATUS.encode())
        assert len(compressed) == sent, "compressed once per broadcast, not once per peer"
        assert set(compressed) == {STATUS.encode()}
    for client in [*clients, plain]:
        await client.close_socket()


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"compress": "always"}, ValueError),
        ({"compress_window_bits": 8}, ValueError),
        ({"compress_window_bits": 16}, ValueError),
        ({"compress_threshold": -1}, ValueError),
        ({"compress_threshold": 1.5}, TypeError),
    ],
)
def test_bad_compression_settings_raise(settings: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        WebSocketServer(**settings)
