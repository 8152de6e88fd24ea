"""What tests share besides fixtures: the one timeout, the bound of a "within", the recorder of
connection events, and skipping for a program, module or resource this machine may lack.

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

__all__ = [
    "EARLY",
    "REQUIRE_ALL",
    "SLACK",
    "TIMEOUT",
    "Recorder",
    "assert_within",
    "check_recorders",
    "require",
    "require_module",
    "require_program",
    "watch_for_repeats",
    "within",
]

TIMEOUT = 5.0
"""How long a test waits for something that should happen at once: an event, a frame, a read."""
BROWSER_TIMEOUT = 2 * TIMEOUT
"""How long a test waits for a headless browser, which starts and renders slowly."""

SLACK = 3.0
"""How far past its setting a "within" may end: the upper bound of an interval set to ``s`` seconds
is ``SLACK * s``. Proportional to the setting, so that a setting stretched eight times fails the
test however short it is, and wide enough for the stalls of a loaded CI machine (two cores shared
by several test runs). Choose settings of at least a few tenths of a second, so that the margin
covers scheduling, not just the clock."""
EARLY = 0.01
"""Seconds an interval measured on the event loop's clock may come out short of its setting: the
loop runs a timer when it is due within its clock's resolution, and a test's own clock reading may
come a little after the server's."""

REQUIRE_ALL = os.environ.get("AIOHTTP_WSAPP_REQUIRE_ALL") == "1"
"""Set by ``.ci/run``: a test whose program is missing fails instead of skipping."""

T = TypeVar("T")


def within(setting: float) -> float:
    """The upper bound of an interval that the settings put at ``setting`` seconds."""
    return SLACK * setting


def assert_within(elapsed: float, setting: float, *, at_least: float | None = None) -> None:
    """Assert that ``elapsed`` seconds is at most :func:`within` ``setting``; and, when given, at
    least ``at_least`` (less :data:`EARLY`): both sides of a "within"."""
    assert elapsed <= within(setting), f"took {elapsed:.3f} s; the setting is {setting} s"
    if at_least is not None:
        assert elapsed >= at_least - EARLY, f"took {elapsed:.3f} s, less than {at_least} s"


_recorders: list[Recorder] = []
"""Every recorder made by the running test, for :func:`check_recorders` after it."""


REPEAT_WINDOW = 0.05
"""Seconds a test's servers, once closed, keep the event loop running before the recorders are
checked: a ``finish`` fired again on a timer (a late callback, a retry) due within that window
still runs before the check, since the loop runs timers in the order they are due."""


async def watch_for_repeats() -> None:
    """Let the loop run :data:`REPEAT_WINDOW` more, if any recorder saw a connection: call it once
    the servers are closed, before the loop goes (the ``serve`` fixture does)."""
    if any(recorder.connections for recorder in _recorders):
        await asyncio.sleep(REPEAT_WINDOW)  # a window to observe what must not happen


def check_recorders() -> None:
    """Assert, after the test and its servers are gone, that every connection a recorder saw
    established finished exactly once in its whole life; then forget the recorders.

    A ``finish`` that fires twice (while the test or its servers run, or up to
    :data:`REPEAT_WINDOW` after they closed), or never, fails the test here: conftest runs this
    after every fixture, the servers included, has been torn down.
    """
    recorders = list(_recorders)
    _recorders.clear()
    for recorder in recorders:
        assert recorder.repeated == [], f"finish fired again for {recorder.repeated}"
        unfinished = [c for c in recorder.connections if c not in recorder.finished_at]
        assert unfinished == [], f"finish never fired for {unfinished}"


class Recorder:
    """An ``on_establish`` that records what every connection reports, for tests to await.

    Each established connection gets a ``message``, an ``error`` and a ``finish`` handler. The
    lists hold every report so far, in order, for assertions; :meth:`connection`,
    :meth:`message`, :meth:`error` and :meth:`finish` wait for the next report of their kind
    (each returns every report once, in order), failing after ``timeout`` seconds.

    With ``echo``, the ``message`` handler also sends each message back, without awaiting the
    send.

    ``finish`` is counted for the whole life of the server: :attr:`finished_at` holds the loop's
    time of each connection's first ``finish``, :attr:`repeated` every connection whose ``finish``
    fired again. After each test, conftest fails it if any connection finished twice or never
    (:func:`check_recorders`).
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
        self.established_at: dict[Connection, float] = {}
        """The event loop's time at which each connection was established."""
        self.finished_at: dict[Connection, float] = {}
        """The event loop's time of each connection's first ``finish``."""
        self.repeated: list[Connection] = []
        """Every connection whose ``finish`` fired more than once (each repeat)."""
        self._taken = {"connection": 0, "message": 0, "error": 0, "finish": 0}
        self._recorded = asyncio.Event()
        _recorders.append(self)

    @property
    def finish_count(self) -> int:
        """How many times ``finish`` fired, on any connection."""
        return len(self.finishes)

    def on_establish(
        self, conn: Connection, request: web.Request, results: tuple[Any, ...]
    ) -> None:
        """Record ``conn`` and register the recording handlers on it."""
        conn.on(message=self._on_message, error=self._on_error, finish=self._on_finish)
        self.established_at[conn] = asyncio.get_running_loop().time()
        self._record(self.connections, conn)

    def _on_message(self, conn: Connection, message: str | bytes) -> None:
        self._record(self.messages, message)
        if self.echo:
            conn.send(message)

    def _on_error(self, conn: Connection, exc: BaseException) -> None:
        self._record(self.errors, (conn, exc))

    def _on_finish(self, conn: Connection) -> None:
        if conn in self.finished_at:
            self.repeated.append(conn)
        else:
            self.finished_at[conn] = asyncio.get_running_loop().time()
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


def require(condition: bool, reason: str) -> None:
    """Skip the test when ``condition`` is false, saying ``reason``; fail it instead when
    ``AIOHTTP_WSAPP_REQUIRE_ALL=1`` (CI), where nothing may be skipped silently."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(reason + "; AIOHTTP_WSAPP_REQUIRE_ALL=1 makes this mandatory")
    pytest.skip(reason)


def require_program(program: str, install_hint: str) -> str:
    """Return the path of ``program``, or skip the test (fail in CI) when it is not installed."""
    path = shutil.which(program)
    require(path is not None, f"{program} is not installed ({install_hint})")
    assert path is not None
    return path


def require_module(module: str, install_hint: str) -> None:
    """Skip the test (fail in CI) when the Python module ``module`` cannot be imported."""
    try:
        __import__(module)
    except ImportError:
        require(False, f"Python module {module} is not installed ({install_hint})")
