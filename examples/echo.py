"""The seed's synopsis: an echo endpoint at /websocket beside a page at /.

Run it with ``python examples/echo.py`` and open http://127.0.0.1:8080/.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from aiohttp_wsapp import ERROR_KEY, Connection, create_app

PAGE = """<!doctype html>
<title>aiohttp-wsapp echo</title>
<p>Type a message; the server sends it back.</p>
<input id="text" autofocus><button id="send">Send</button>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const ws = new WebSocket(new URL("/websocket", location.href.replace("http", "ws")));
ws.onmessage = (event) => log("< " + event.data);
ws.onclose = () => log("closed");
document.getElementById("send").onclick = () => {
  const text = document.getElementById("text");
  ws.send(text.value);
  log("> " + text.value);
  text.value = "";
};
</script>
"""


def on_error(request: web.Request) -> web.Response:
    """Answer a failed handshake, like the seed's ``on_error``."""
    return web.Response(status=500, text="Error: " + request[ERROR_KEY])


def on_establish(
    conn: Connection, request: web.Request, handshake_results: tuple[Any, ...]
) -> None:
    """Echo every message; say goodbye in the log when the connection finishes."""
    conn.on(
        message=lambda conn, message: conn.send(message),
        finish=lambda conn: logging.getLogger("echo").info("Bye!!"),
    )


async def page(request: web.Request) -> web.Response:
    """The page at /, which talks to the endpoint."""
    return web.Response(text=PAGE, content_type="text/html")


def make_app() -> web.Application:
    """The echo endpoint mounted at /websocket, with the page at /."""
    app = web.Application()
    app.add_subapp("/websocket", create_app(on_establish, on_error=on_error))
    app.router.add_get("/", page)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    web.run_app(make_app(), host="127.0.0.1", port=8080)
