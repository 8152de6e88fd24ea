"""picows: a ``WSListener`` that sends every frame back as it comes (Cython, frame level).

Run: ``python -m benchmarks.servers.picows_server --port 8765``.
"""

from __future__ import annotations

import asyncio
import contextlib

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from benchmarks.common import BACKLOG, parse_server_args

DATA_FRAMES = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)


class Echo(WSListener):
    """Send every data frame back with the same opcode and FIN bit; answer a close."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Echo data frames; reply to CLOSE and disconnect (pings are answered by picows)."""
        if frame.msg_type in DATA_FRAMES:
            transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


def make_listener(request: WSUpgradeRequest) -> WSListener:
    """One listener per connection, whatever the path."""
    return Echo()


async def serve_forever(host: str, port: int) -> None:
    """Serve until cancelled."""
    server = await ws_create_server(make_listener, host, port, backlog=BACKLOG)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(options.host, options.port))


if __name__ == "__main__":
    main()
