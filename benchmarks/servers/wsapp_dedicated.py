"""aiohttp_wsapp with ``compress="dedicated"``: a compressor per connection, context kept.

Run: ``python -m benchmarks.servers.wsapp_dedicated --port 8765 [--broadcast] [--handler FORM]``
(``FORM``: ``lambda``, the default, ``def`` or ``async``, as in ``benchmarks.servers.wsapp``).
Otherwise as ``benchmarks.servers.wsapp`` (heartbeat off). It differs from it only with a client
that offers permessage-deflate (``benchmarks.deflate_client``).
"""

from __future__ import annotations

from aiohttp_wsapp import WebSocketServer
from benchmarks.common import parse_server_args, run_aiohttp
from benchmarks.servers.wsapp import ECHO_HANDLERS, make_app


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "", tuple(ECHO_HANDLERS))
    run_aiohttp(make_app(options, WebSocketServer(heartbeat=None, compress="dedicated")), options)


if __name__ == "__main__":
    main()
