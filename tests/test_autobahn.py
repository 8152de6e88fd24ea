"""Autobahn|Testsuite conformance of an echo endpoint, in every compression mode.

Cases 1-10 in every mode (about half a minute each); with ``AIOHTTP_WSAPP_AUTOBAHN_FULL=1``
(set by ``.ci/run``) the default mode plays every case, permessage-deflate included (about 20
minutes). wstest needs Python 2.7: the test skips without it, and fails instead under
``AIOHTTP_WSAPP_REQUIRE_ALL=1``. The first run installs wstest into
``~/.cache/aiohttp-wsapp/autobahn`` (about a minute). See ``tests/autobahn.py`` and
``docs/conformance.rst``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import autobahn
import pytest
from pytest_aiohttp import AiohttpServer
from support import require_program

TEST_TIMEOUT = autobahn.INSTALL_TIMEOUT + autobahn.FULL_TIMEOUT + 60
"""pytest-timeout's last resort; the install and the run time out well before, killing wstest."""

pytestmark = pytest.mark.autobahn
"""``-m "not autobahn"`` leaves conformance out (CI runs it on the default interpreter only)."""

QUIET_LOGGERS = ("aiohttp_wsapp", "aiohttp.server", "aiohttp.web", "aiohttp.websocket")


@pytest.mark.timeout(TEST_TIMEOUT)
@pytest.mark.parametrize("mode", list(autobahn.MODES))
async def test_autobahn(
    mode: str, aiohttp_server: AiohttpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # wstest provokes thousands of protocol errors that the endpoint logs with their traceback;
    # its verdicts are what this test checks, and the assertion message lists the failing ones.
    for logger in QUIET_LOGGERS:
        caplog.set_level(logging.CRITICAL, logger)
    python2 = require_program(autobahn.find_python2() or "python2.7", autobahn.python2_hint())
    installed = await autobahn.install_wstest(python2)
    server = await aiohttp_server(autobahn.echo_app(mode), host="127.0.0.1")
    report = await autobahn.run_wstest(
        autobahn.wstest_command(python2, installed),
        url=f"ws://127.0.0.1:{server.port}/",
        mode=mode,
        selection=autobahn.selection_for(mode),
        workdir=tmp_path,
    )
    print(autobahn.format_table([report]))
    print(report.notes())
    if report.failed:
        pytest.fail(report.failure_message(), pytrace=False)
