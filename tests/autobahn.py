"""Autobahn|Testsuite against an echo endpoint: install ``wstest``, run it, read its verdicts.

Shared by ``tests/test_autobahn.py`` and ``scripts/autobahn.py``; the logic lives only here.

``wstest`` (the ``autobahntestsuite`` package) runs on Python 2.7 only. It is installed with that
Python's own pip (``pip install --target``, no virtualenv needed) into a directory of the user's
cache, keyed by the pinned requirements below, so later runs reuse it. Its ``fuzzingclient`` mode
connects to a server, plays every selected case and writes ``index.json``: one entry per case
with two verdicts, ``behavior`` (the case as a whole) and ``behaviorClose`` (the closing
handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from aiohttp_wsapp import Connection, WebSocketServer, create_app

MODES: dict[str, bool | Literal["shared", "dedicated"]] = {
    "default": True,  # shared mode: permessage-deflate when offered, one shared compressor
    "off": False,  # no permessage-deflate
    "dedicated": "dedicated",  # permessage-deflate with a compressor per connection
    # A new compression mode is one more line here: the test is parametrized over MODES, and
    # ``scripts/autobahn.py --mode`` offers every key.
}
"""The endpoint's ``compress=`` settings to test, by name."""

FULL_MODE = "default"
"""The mode that runs every case when :data:`FULL_ENV` is set; the others stay on cases 1-10."""

FULL_ENV = "AIOHTTP_WSAPP_AUTOBAHN_FULL"
"""Set to ``1`` (as ``.ci/run`` does) to run every case, permessage-deflate ones included."""

ALL_CASES = ("*",)
BASIC_EXCLUDED = ("12.*", "13.*")
"""The permessage-deflate cases: 216 of the 517, and nearly all of a full run's time."""

ACCEPTED = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
"""Verdicts that pass. NON-STRICT and INFORMATIONAL are reported, not failed."""

UNIMPLEMENTED = "UNIMPLEMENTED"
"""The verdict of a permessage-deflate case against an endpoint that declines compression."""

PYTHON2_ENV = "AIOHTTP_WSAPP_PYTHON2"
"""Names the Python 2.7 interpreter to install ``wstest`` with, if not found on its own."""

CACHE_ENV = "AIOHTTP_WSAPP_AUTOBAHN_CACHE"
"""Overrides the directory that holds the ``wstest`` installs."""

MAX_PAYLOAD_SIZE = 32 * 1024 * 1024
"""Case 9.* sends messages of up to 16 MiB; the endpoint must accept them."""

REQUIREMENTS = (
    # Every package of the install, pinned: the last releases that still install on Python 2.7.
    "autobahntestsuite==25.10.1",
    "autobahn==0.10.9",
    "Twisted==19.10.0",
    "cryptography==3.3.2",
    "pyOpenSSL==19.1.0",
    "service-identity==18.1.0",
    "zope.interface==4.6.0",
    "klein==17.10.0",
    "Werkzeug==1.0.1",
    "jinja2==2.11.3",
    "markupsafe==1.1.1",
    "txaio==2.1.0",
    "wsaccel==0.6.6",
    "ujson==2.0.3",
    "unittest2==1.1.0",
    "traceback2==1.4.0",
    "linecache2==1.0.0",
    "argparse==1.4.0",
    "six==1.16.0",
    "attrs==21.4.0",
    "Automat==22.10.0",
    "constantly==15.1.0",
    "hyperlink==21.0.0",
    "idna==2.10",
    "typing==3.10.0.0",
    "incremental==16.10.1",
    "PyHamcrest==1.10.1",
    "cffi==1.15.1",
    "pycparser==2.21",
    "enum34==1.1.10",
    "ipaddress==1.0.23",
    "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0",
    "setuptools==44.0.0",
)

INSTALL_TIMEOUT = 900.0
"""Seconds the install may take (about one minute on the CI machine: ``wsaccel`` compiles)."""

BASIC_TIMEOUT = 600.0
"""Seconds a run of cases 1-10 may take (30 to 45 seconds measured)."""

FULL_TIMEOUT = 2400.0
"""Seconds a run of every case may take (about 23 minutes measured with compression)."""

WSTEST_MAIN = (
    "import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'wstest'; "
    "from autobahntestsuite.wstest import run; sys.exit(run())"
)
"""Runs ``wstest`` from a ``pip install --target`` directory (``addsitedir`` reads its .pth)."""


# -- installing wstest --------------------------------------------------------------------------


def find_python2() -> str | None:
    """The path of a Python 2.7 interpreter: ``$AIOHTTP_WSAPP_PYTHON2``, pyenv's, then PATH's.

    pyenv's shims are passed over: a shim on PATH fails unless 2.7 is the selected version.
    """
    named = os.environ.get(PYTHON2_ENV)
    if named:
        return named
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = sorted(glob.glob(os.path.join(pyenv_root, "versions", "2.7*", "bin", "python2.7")))
    for candidate in reversed(candidates):
        if os.access(candidate, os.X_OK):
            return candidate
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory and os.path.basename(directory) != "shims":
            found = shutil.which("python2.7", path=directory)
            if found:
                return found
    return None


def cache_dir() -> Path:
    """The directory that holds the ``wstest`` installs, outside the repository."""
    named = os.environ.get(CACHE_ENV)
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "aiohttp-wsapp" / "autobahn"


def install_dir(python2: str) -> Path:
    """Where ``wstest`` for ``python2`` and :data:`REQUIREMENTS` is (or will be) installed."""
    key = hashlib.sha256("\n".join((os.path.realpath(python2), *REQUIREMENTS)).encode())
    return cache_dir() / f"wstest-{key.hexdigest()[:16]}"


class AutobahnError(Exception):
    """Installing or running ``wstest`` failed; the message says how, with its output's tail."""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def _run(
    command: Sequence[str],
    *,
    log: Path,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``command`` with its output in ``log``; kill it on timeout or cancellation."""
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except asyncio.TimeoutError:
            raise AutobahnError(
                f"{command[0]} did not finish within {timeout:.0f} s; its output:\n{_tail(log)}"
            ) from None
        finally:
            if process.returncode is None:
                # Its own session: the whole group goes, pip's compiler or wstest alike.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                # Shielded: a cancelled caller still reaps the child before going on.
                await asyncio.shield(process.wait())


async def install_wstest(python2: str) -> Path:
    """Install ``wstest`` for ``python2`` unless it already is; return its install directory.

    The install goes to a temporary sibling directory that is renamed into place at the end, so
    an interrupted install is never taken for a finished one.
    """
    target = install_dir(python2)
    if (target / "autobahntestsuite").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    log = target.with_name(f"{target.name}.install.log")
    command = [
        python2,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--target",
        str(partial),
        *REQUIREMENTS,
    ]
    try:
        code = await _run(command, log=log, timeout=INSTALL_TIMEOUT)
        if code != 0:
            raise AutobahnError(
                f"installing wstest failed ({' '.join(command)} exited {code}):\n{_tail(log)}"
            )
        try:
            partial.rename(target)
        except OSError:
            # Another run finished the same install first.
            if not (target / "autobahntestsuite").is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def wstest_command(python2: str, installed: Path) -> list[str]:
    """The command line that runs ``wstest`` from ``installed``; append its arguments."""
    return [python2, "-c", WSTEST_MAIN, str(installed)]


# -- the endpoint -------------------------------------------------------------------------------


def echo(conn: Connection, request: web.Request, results: tuple[Any, ...]) -> None:
    """Send back every message."""
    conn.on("message", lambda conn, message: conn.send(message))


def echo_app(mode: str) -> web.Application:
    """The echo endpoint under test, with the ``compress=`` setting of ``mode``, at ``/``."""
    server = WebSocketServer(
        max_payload_size=MAX_PAYLOAD_SIZE, allowed_origins="*", compress=MODES[mode]
    )
    return create_app(echo, websocket_server=server)


def full_requested() -> bool:
    """Whether :data:`FULL_ENV` asks for every case."""
    return os.environ.get(FULL_ENV) == "1"


@dataclass(frozen=True)
class Selection:
    """Which cases a run plays, in wstest's spec syntax (``"*"``, ``"6.4.*"``, ``"7.9.5"``)."""

    cases: tuple[str, ...] = ALL_CASES
    exclude: tuple[str, ...] = BASIC_EXCLUDED

    @property
    def full(self) -> bool:
        """Whether the permessage-deflate cases may be in it (it takes the long timeout)."""
        return not self.exclude

    def __str__(self) -> str:
        text = ",".join(self.cases)
        return f"{text} except {','.join(self.exclude)}" if self.exclude else text


BASIC = Selection()
"""Cases 1-10: everything but permessage-deflate."""

FULL = Selection(exclude=())
"""Every case."""


def selection_for(mode: str) -> Selection:
    """The cases the test plays in ``mode``: every case in :data:`FULL_MODE` when asked."""
    return FULL if mode == FULL_MODE and full_requested() else BASIC


# -- running wstest and reading its verdicts ----------------------------------------------------


def case_key(case: str) -> tuple[int, ...]:
    """Sorts case ids numerically: 1.1.2 before 1.1.10."""
    return tuple(int(part) if part.isdigit() else -1 for part in case.split("."))


@dataclass(frozen=True)
class CaseResult:
    """wstest's verdicts on one case."""

    case: str
    behavior: str
    behavior_close: str
    remote_close_code: int | None = None

    def __str__(self) -> str:
        return (
            f"{self.case}: behavior={self.behavior} behaviorClose={self.behavior_close}"
            f" remoteCloseCode={self.remote_close_code}"
        )


@dataclass
class Report:
    """The verdicts of one run of wstest against the endpoint in one mode."""

    mode: str
    selection: Selection
    results: list[CaseResult]
    seconds: float = 0.0
    accepted: frozenset[str] = field(default=ACCEPTED)

    @property
    def failed(self) -> list[CaseResult]:
        """The cases with a verdict that fails: not OK, NON-STRICT or INFORMATIONAL."""
        return [
            result
            for result in self.results
            if result.behavior not in self.accepted or result.behavior_close not in self.accepted
        ]

    def counts(self) -> Counter[str]:
        """How many cases got each column of the table."""
        failed = {result.case for result in self.failed}
        counts: Counter[str] = Counter()
        for result in self.results:
            counts["FAILED" if result.case in failed else result.behavior] += 1
        return counts

    def row(self) -> dict[str, str]:
        """This run's line of the summary table."""
        counts = self.counts()
        row = {
            "mode": self.mode,
            "cases": str(len(self.results)),
            "OK": str(counts["OK"]),
            "NON-STRICT": str(counts["NON-STRICT"]),
            "INFORMATIONAL": str(counts["INFORMATIONAL"]),
        }
        if counts[UNIMPLEMENTED] or UNIMPLEMENTED in self.accepted:
            row[UNIMPLEMENTED] = str(counts[UNIMPLEMENTED])
        row["FAILED"] = str(counts["FAILED"])
        row["failed cases"] = ", ".join(result.case for result in self.failed) or "-"
        row["seconds"] = f"{self.seconds:.0f}"
        return row

    def notes(self) -> str:
        """The cases that pass with a remark (NON-STRICT, INFORMATIONAL, UNIMPLEMENTED)."""
        lines = []
        for verdict in ("NON-STRICT", "INFORMATIONAL", UNIMPLEMENTED):
            cases = [r.case for r in self.results if r.behavior == verdict and r not in self.failed]
            if cases:
                lines.append(f"{self.mode}: {verdict}: {', '.join(_ranges(cases))}")
        return "\n".join(lines)

    def failure_message(self) -> str:
        """Why the run fails: every failing case, then the table."""
        lines = [f"{len(self.failed)} Autobahn case(s) failed in mode {self.mode!r}:"]
        lines += [f"  {result}" for result in self.failed]
        lines += ["", format_table([self]), self.notes()]
        return "\n".join(lines)


def _ranges(cases: list[str]) -> list[str]:
    """Case ids, more than 4 of one parent shortened: 13.1.1 ... 13.1.18 become ``13.1.* (18)``."""
    by_parent: dict[str, list[str]] = {}
    for case in cases:
        by_parent.setdefault(case.rpartition(".")[0], []).append(case)
    out = []
    for parent, members in by_parent.items():
        out.extend([f"{parent}.* ({len(members)})"] if len(members) > 4 else members)
    return out


def accepted_for(mode: str) -> frozenset[str]:
    """The passing verdicts in ``mode``: UNIMPLEMENTED too where compression is off."""
    return ACCEPTED | {UNIMPLEMENTED} if MODES[mode] is False else ACCEPTED


def read_index(index: Path, agent: str) -> list[CaseResult]:
    """The verdicts of ``agent`` in wstest's ``index.json``, sorted by case id."""
    data = json.loads(index.read_text())
    cases: dict[str, dict[str, Any]] = data.get(agent, {})  # absent: the endpoint was unreachable
    results = [
        CaseResult(
            case=case,
            behavior=entry["behavior"],
            behavior_close=entry["behaviorClose"],
            remote_close_code=entry.get("remoteCloseCode"),
        )
        for case, entry in cases.items()
    ]
    return sorted(results, key=lambda result: case_key(result.case))


def _write_spec(workdir: Path, agent: str, url: str, selection: Selection) -> Path:
    """Write the fuzzingclient spec of this run into ``workdir``; return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "outdir": str(workdir / "reports"),
        "servers": [{"agent": agent, "url": url}],
        "cases": list(selection.cases),
        "exclude-cases": list(selection.exclude),
        "exclude-agent-cases": {},
    }
    path = workdir / "fuzzingclient.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


async def run_wstest(
    wstest: Sequence[str],
    *,
    url: str,
    mode: str,
    selection: Selection,
    workdir: Path,
    timeout: float | None = None,
) -> Report:
    """Play ``selection`` against the endpoint at ``url`` and return wstest's verdicts.

    ``wstest`` is the command from :func:`wstest_command`. The spec, the report and wstest's
    log go to ``workdir``. Raises :class:`AutobahnError` if wstest fails or times out.
    """
    if timeout is None:
        timeout = FULL_TIMEOUT if selection.full else BASIC_TIMEOUT
    agent = f"aiohttp_wsapp-{mode}"
    outdir = workdir / "reports"
    spec_path = _write_spec(workdir, agent, url, selection)
    log = workdir / "wstest.log"
    started = time.monotonic()
    code = await _run(
        [*wstest, "--mode", "fuzzingclient", "--spec", str(spec_path)],
        log=log,
        timeout=timeout,
        cwd=workdir,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    seconds = time.monotonic() - started
    index = outdir / "index.json"
    if code != 0 or not index.is_file():
        raise AutobahnError(f"wstest exited {code} without {index}; its output:\n{_tail(log)}")
    results = read_index(index, agent)
    if not results:
        raise AutobahnError(
            f"wstest played no case of {selection} against {url}; its output:\n{_tail(log)}"
        )
    return Report(mode, selection, results, seconds, accepted_for(mode))


COLUMNS = (
    "mode",
    "cases",
    "OK",
    "NON-STRICT",
    "INFORMATIONAL",
    UNIMPLEMENTED,
    "FAILED",
    "failed cases",
    "seconds",
)


def format_table(reports: Iterable[Report]) -> str:
    """A plain-text table: one line per report."""
    rows = [report.row() for report in reports]
    if not rows:
        return ""
    columns = [column for column in COLUMNS if any(column in row for row in rows)]
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(row.get(c, "").ljust(widths[c]) for c in columns).rstrip() for row in rows]
    return "\n".join(lines)


def python2_hint() -> str:
    """How to get the Python 2.7 that wstest needs."""
    return (
        f"wstest needs Python 2.7: pyenv install 2.7.18, or name one in ${PYTHON2_ENV}"
        f" (running on {sys.version.split()[0]})"
    )
