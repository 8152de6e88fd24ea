"""aiohttp_wsapp with every setting at its default: what almost every user runs.

Run: ``python -m benchmarks.servers.wsapp_defaults --port 8765 [--broadcast] [--handler FORM]``
(``FORM``: ``lambda``, the default, ``def`` or ``async``, as in ``benchmarks.servers.wsapp``).
Unlike ``benchmarks.servers.wsapp`` the heartbeat is on (30 s), as it is by default; raw aiohttp's
own default is no heartbeat, so this against ``raw_aiohttp`` compares the two as users meet them.
"""

from __future__ import annotations

from aiohttp_wsapp import WebSocketServer
from benchmarks.common import parse_server_args, run_aiohttp
from benchmarks.servers.wsapp import ECHO_HANDLERS, make_app


def main() -> None:
    """Serve until interrupted."""
    options = parse_server_args(__doc__ or "", tuple(ECHO_HANDLERS))
    run_aiohttp(make_app(options, WebSocketServer()), options)


if __name__ == "__main__":
    main()
