"""What tests share besides fixtures: the one timeout, the recorder of connection events, and
skipping for a program or module this machine may lack.

Fixtures live in ``conftest.py``; this module holds plain names that any test module, and the
helper modules beside them (``rawws.py``), can import.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any, TypeVar

import pytest
from aiohttp import web

from aiohttp_wsapp import Connection

__all__ = ["REQUIRE_ALL", "TIMEOUT", "Recorder", "require_module", "require_program"]

TIMEOUT = 5.0
"""How long a test waits for something that should happen at once: an event, a frame, a read."""
BROWSER_TIMEOUT = 2 * TIMEOUT
"""How long a test waits for a headless browser, which starts and renders slowly."""

REQUIRE_ALL = os.environ.get("AIOHTTP_WSAPP_REQUIRE_ALL") == "1"
"""Set by ``.ci/run``: a test whose program is missing fails instead of skipping."""

T = TypeVar("T")


class Recorder:
    """An ``on_establish`` that records what every connection reports, for tests to await.

    Each established connection gets a ``message``, an ``error`` and a ``finish`` handler. The
    lists hold every report so far, in order, for assertions; :meth:`connection`,
    :meth:`message`, :meth:`error` and :meth:`finish` wait for the next report of their kind
    (each returns every report once, in order), failing after ``timeout`` seconds.

    With ``echo``, the ``message`` handler also sends each message back, without awaiting the
    send.
    """

    def __init__(self, *, echo: bool = False) -> None:
        """Create the recorder; it must be created inside the test's event loop."""
        self.echo = echo
        self.connections: list[Connection] = []
        """Every established connection."""
        self.messages: list[str | bytes] = []
        """Every message, from any connection."""
        self.errors: list[tuple[Connection, BaseException]] = []
        """Every ``error`` event: the connection and the exception."""
        self.finishes: list[Connection] = []
        """The connection of every ``finish`` event: a connection twice means it fired twice."""
        self._taken = {"connection": 0, "message": 0, "error": 0, "finish": 0}
        self._recorded = asyncio.Event()

    @property
    def finish_count(self) -> int:
        """How many times ``finish`` fired, on any connection."""
        return len(self.finishes)

    def on_establish(
        self, conn: Connection, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        """Record ``conn`` and register the recording handlers on it."""
        conn.on(message=self._on_message, error=self._on_error, finish=self._on_finish)
        self._record(self.connections, conn)

    def _on_message(self, conn: Connection, message: str | bytes) -> None:
        self._record(self.messages, message)
        if self.echo:
            conn.send(message)

    def _on_error(self, conn: Connection, exc: BaseException) -> None:
        self._record(self.errors, (conn, exc))

    def _on_finish(self, conn: Connection) -> None:
        self._record(self.finishes, conn)

    def _record(self, records: list[T], record: T) -> None:
        records.append(record)
        self._recorded.set()

    async def _next(self, kind: str, records: list[T], timeout: float) -> T:
        """Wait until ``records`` holds the next ``kind`` of report not yet returned; return it."""
        index = self._taken[kind]
        self._taken[kind] = index + 1  # claimed now, so that concurrent waiters get the next ones

        async def recorded() -> None:
            while len(records) <= index:
                self._recorded.clear()
                await self._recorded.wait()

        await asyncio.wait_for(recorded(), timeout)
        return records[index]

    async def connection(self, timeout: float = TIMEOUT) -> Connection:
        """The next established connection."""
        return await self._next("connection", self.connections, timeout)

    async def message(self, timeout: float = TIMEOUT) -> str | bytes:
        """The next message received by any connection."""
        return await self._next("message", self.messages, timeout)

    async def error(self, timeout: float = TIMEOUT) -> BaseException:
        """The exception of the next ``error`` event (its connection is in :attr:`errors`)."""
        _, exc = await self._next("error", self.errors, timeout)
        return exc

    async def finish(self, timeout: float = TIMEOUT) -> Connection:
        """The connection of the next ``finish`` event."""
        return await self._next("finish", self.finishes, timeout)


def require_program(program: str, install_hint: str) -> str:
    """Return the path of ``program``, or skip the test (fail in CI) when it is not installed."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed ({install_hint})"
        if REQUIRE_ALL:
            pytest.fail(message + "; AIOHTTP_WSAPP_REQUIRE_ALL=1 makes this mandatory")
        pytest.skip(message)
    return path


def require_module(module: str, install_hint: str) -> None:
    """Skip the test (fail in CI) when the Python module ``module`` cannot be imported."""
    try:
        __import__(module)
    except ImportError:
        message = f"Python module {module} is not installed ({install_hint})"
        if REQUIRE_ALL:
            pytest.fail(message + "; AIOHTTP_WSAPP_REQUIRE_ALL=1 makes this mandatory")
        pytest.skip(message)
