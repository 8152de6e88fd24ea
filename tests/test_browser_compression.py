"""Headless Chromium, which always offers permessage-deflate, in every compression mode: it
receives short (uncompressed) and long (compressed) messages, text and binary, and what it sends
arrives intact (SPEC §3 ``compress``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from aiohttp_wsapp import Connection, WebSocketServer, create_app

if TYPE_CHECKING:
    from playwright.async_api import Browser

STATUS = json.dumps({"service": "api", "healthy": True, "nodes": list(range(600))})
SENT = ["hi", STATUS, "short again", STATUS]
"""What the server sends each page: below and above the compression threshold, twice."""

PAGE = """<!doctype html><title>deflate</title>"""

TALK = """async ([url, expected]) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const received = [];
  return await new Promise((resolve, reject) => {
    ws.onerror = () => reject(new Error("WebSocket error"));
    ws.onopen = () => ws.send("x".repeat(3000));
    ws.onmessage = (event) => {
      received.push(typeof event.data === "string" ? event.data : event.data.byteLength);
      if (received.length === expected) resolve({received, extensions: ws.extensions});
    };
  });
}"""


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


@pytest.mark.parametrize("compress", [True, "dedicated", False], ids=["shared", "dedicated", "off"])
async def test_chromium_receives_every_message_in_every_mode(
    aiohttp_server: AiohttpServer, browser: Browser, compress: Any
) -> None:
    negotiated: list[int | bool] = []

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        negotiated.append(conn.ws.compress)
        for message in SENT:
            conn.send(message)

        def answer(conn: Connection, message: str | bytes) -> None:
            conn.send(message)  # the page's 3,000 characters, back: compressed both ways
            conn.send(b"\x01" * 2000)

        conn.on("message", answer)

    app = web.Application()
    app.router.add_get("/", page)
    app.add_subapp(
        "/ws", create_app(on_establish, websocket_server=WebSocketServer(compress=compress))
    )
    server = await aiohttp_server(app)
    tab = await browser.new_page()
    await tab.goto(str(server.make_url("/")))
    url = f"ws://{server.host}:{server.port}/ws"
    result = await tab.evaluate(TALK, [url, len(SENT) + 2])
    assert result["received"] == [*SENT, "x" * 3000, 2000]
    if compress is False:
        assert result["extensions"] == ""
        assert negotiated == [False]
    else:
        assert result["extensions"].startswith("permessage-deflate")
        assert negotiated == [15]
