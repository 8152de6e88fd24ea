"""What a browser meets, in headless Chromium: permessage-deflate, which it always offers, in
every compression mode (SPEC §3 ``compress``), and subprotocol negotiation (SPEC §2 step 3)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from aiohttp_wsapp import ERROR_KEY, INVALID_REQUEST, Connection, WebSocketServer, create_app

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


OPEN = """async ([url, protocols]) => {
  const ws = new WebSocket(url, protocols);
  return await new Promise((resolve) => {
    ws.onopen = () => { resolve({opened: true, protocol: ws.protocol}); ws.close(); };
    ws.onclose = (event) => resolve({opened: false, code: event.code});
  });
}"""


async def test_chromium_gets_the_common_subprotocol_or_a_refusal(
    aiohttp_server: AiohttpServer, browser: Browser
) -> None:
    errors: list[str] = []
    protocols: list[str | None] = []

    def on_error(request: web.Request) -> web.Response:
        errors.append(request[ERROR_KEY])
        return web.Response(status=400, text="use chat.v1")

    def on_establish(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
        protocols.append(conn.protocol)

    server_settings = WebSocketServer(protocols=("chat.v1",))
    app = web.Application()
    app.router.add_get("/", page)
    endpoint = create_app(on_establish, on_error=on_error, websocket_server=server_settings)
    app.add_subapp("/ws", endpoint)
    server = await aiohttp_server(app)
    tab = await browser.new_page()
    await tab.goto(str(server.make_url("/")))
    url = f"ws://{server.host}:{server.port}/ws"

    assert await tab.evaluate(OPEN, [url, ["chat.v2", "chat.v1"]]) == {
        "opened": True,
        "protocol": "chat.v1",
    }
    assert await tab.evaluate(OPEN, [url, []]) == {"opened": True, "protocol": ""}
    assert await tab.evaluate(OPEN, [url, ["chat.v2"]]) == {"opened": False, "code": 1006}
    assert protocols == ["chat.v1", None]
    assert errors == [INVALID_REQUEST]
