#!/usr/bin/env python3
"""Check that the tests catch what their names promise, by breaking the package on purpose.

Usage, from the repository root::

    python scripts/mutations.py            # every mutation
    python scripts/mutations.py -k shield  # the mutations whose name contains "shield"
    python scripts/mutations.py --list     # what each mutation changes, and its tests

Each mutation is a text substitution in one module of ``aiohttp_wsapp``: a regression that the
suite once let through (issue 24: a second ``finish``, ``close_timeout`` stretched eight times,
shutdown not waiting, the heartbeat eight times slower, finish handlers not shielded from
cancellation, broadcasts holding the event loop, one compression per peer). One at a time, the
script copies the package into a temporary directory, applies the mutation to the copy (the
real files are never touched), and runs the tests that must catch it with that copy first on
``PYTHONPATH``. A mutation is *killed* when those tests fail, and *survived* when they pass.
pytest must end with "tests failed" (exit status 1): a test id not found, a collection error (a
mutation that breaks the import) or a timeout stops the script instead of counting as a kill.

A mutation whose text is not found exactly once in its module stops the script with "mutation X:
pattern not found": a refactoring must move the pattern along, never let the check pass silently.
Before the mutations, the same tests run once on the unchanged package and must pass (otherwise a
"killed" would mean nothing); ``--no-baseline`` skips that run.

Exit status: 0 when every mutation was killed, 1 when one survived, 2 when the check itself could
not run (a pattern not found, the baseline failing).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "aiohttp_wsapp"
PYTEST_TIMEOUT = 900
"""Seconds one pytest run may take before it counts as a failure of the check itself."""


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One regression: replace ``old`` by ``new`` in ``module``; ``tests`` must then fail."""

    name: str
    module: str
    """The file, relative to the package directory."""
    old: str
    new: str
    tests: tuple[str, ...]
    """pytest node ids (``tests/test_x.py::test_y``) or files, relative to the repository root."""
    why: str


MUTATIONS = (
    Mutation(
        name="second-finish",
        module="events.py",
        old="        finally:\n            self.mark_finished()\n",
        new=(
            "        finally:\n"
            "            self.mark_finished()\n"
            "            for again in finishers:\n"
            "                asyncio.get_running_loop().call_later(\n"
            "                    0.01, self._run_late_finish, again\n"
            "                )\n"
        ),
        tests=(
            "tests/test_connection.py::test_finish_fires_once_when_the_peer_drops_without_closing",
            "tests/test_handler_errors.py::test_raising_handler_fires_error_and_closes_with_1011",
        ),
        why="every finish handler runs a second time, 10 ms after the first",
    ),
    Mutation(
        name="close-timeout-x8",
        module="closing.py",
        old="loop.call_later(self._timeout, abort, self._transport)",
        new="loop.call_later(self._timeout * 8, abort, self._transport)",
        tests=(
            "tests/test_lifecycle.py::"
            "test_end_of_stream_with_data_queued_finishes_and_frees_the_socket",
            "tests/test_lifecycle.py::test_our_close_with_data_queued_finishes_and_frees_the_socket",
        ),
        why="the deadline that drops a closing connection's socket comes 8 times later",
    ),
    Mutation(
        name="shutdown-close-timeout-x8",
        module="app.py",
        old="        timeout = self.websocket_server.close_timeout\n",
        new="        timeout = self.websocket_server.close_timeout * 8\n",
        tests=(
            "tests/test_shutdown.py::test_shutdown_does_not_wait_for_a_handler_that_never_returns",
        ),
        why="shutdown waits 8 times close_timeout before it stops the connections left",
    ),
    Mutation(
        name="shutdown-not-waiting",
        module="app.py",
        old=(
            "        finished = [connection.finished for connection in connections]\n"
            "        if not finished:\n"
        ),
        new=(
            "        finished = [connection.finished for connection in connections]\n"
            "        if True:\n"
        ),
        tests=("tests/test_shutdown.py::test_shutdown_closes_every_connection_with_1001",),
        why="shutdown closes every connection and returns at once, without waiting for finish",
    ),
    Mutation(
        name="heartbeat-x8",
        module="keepalive.py",
        old="self._interval = interval\n",
        new="self._interval = interval * 8\n",
        tests=(
            "tests/test_lifecycle.py::"
            "test_heartbeat_pings_a_silent_peer_every_heartbeat_and_measures_latency",
            "tests/test_lifecycle.py::test_heartbeat_drops_a_peer_that_does_not_answer",
        ),
        why="the heartbeat's round comes 8 times later than its setting",
    ),
    Mutation(
        name="finish-not-shielded",
        module="events.py",
        old=(
            "        task = asyncio.get_running_loop().create_task("
            "self._run_finishers(finishers, first))\n"
            "        await asyncio.shield(task)\n"
        ),
        new="        await self._run_finishers(finishers, first)\n",
        tests=(
            "tests/test_connection.py::"
            "test_finish_handler_completes_though_the_request_handler_is_cancelled",
        ),
        why="finish handlers run inline in the request handler, which a cancellation stops",
    ),
    Mutation(
        name="broadcast-hold-10s",
        module="hub.py",
        old="_HOLD_LIMIT = 0.001\n",
        new="_HOLD_LIMIT = 10.0\n",
        tests=("tests/test_broadcast.py::test_an_awaited_broadcast_lets_other_tasks_run",),
        why="a loop of awaited broadcasts holds the event loop for up to 10 s",
    ),
    Mutation(
        name="compression-per-peer",
        module="frames.py",
        old="        if type(deflater) is SharedDeflater:\n",
        new="        if False:\n",
        tests=(
            "tests/test_compression.py::"
            "test_a_compressed_broadcast_is_one_frame_for_every_shared_peer",
        ),
        why="a broadcast is compressed once for each shared-mode peer, not once for all",
    ),
    Mutation(
        name="drain-all-at-once",
        module="draining.py",
        old="        step = self._over / len(connections) if connections else 0.0\n",
        new="        step = 0.0\n",
        tests=(
            "tests/test_drain.py::"
            "test_drain_closes_every_connection_with_1012_spread_evenly_over_the_period",
        ),
        why="a drain closes every connection at once instead of spreading them over its period",
    ),
    Mutation(
        name="lifetime-without-jitter",
        module="limits.py",
        old="            lifetime = settings.max_lifetime * (1 + random.random() / 10)\n",
        new="            lifetime = settings.max_lifetime\n",
        tests=(
            "tests/test_timeouts.py::"
            "test_connections_close_with_1001_after_max_lifetime_with_jitter",
        ),
        why="connections opened together all reach max_lifetime together",
    ),
    Mutation(
        name="rate-bucket-starts-empty",
        module="limits.py",
        old="        self._tokens = self._capacity\n",
        new="        self._tokens = 0.0\n",
        tests=(
            "tests/test_timeouts.py::"
            "test_a_burst_up_to_the_rate_passes_the_next_message_closes_with_1008",
        ),
        why="max_message_rate refuses a connection's first messages: no burst is allowed",
    ),
    Mutation(
        name="sends-not-counted",
        module="sending.py",
        old=(
            "        counters.messages_sent += 1\n"
            "        counters.bytes_sent += size  # before compression\n"
        ),
        new="        counters.bytes_sent += size  # before compression\n",
        tests=("tests/test_stats.py::test_messages_and_payload_bytes_each_way_before_compression",),
        why="stats().messages_sent stays at 0",
    ),
)


class CheckError(Exception):
    """The check itself cannot run: a pattern not found, the baseline failing."""


def mutate(package: Path, mutation: Mutation) -> None:
    """Apply ``mutation`` to the copy of the package at ``package``; fail loudly if it misses."""
    path = package / mutation.module
    if not path.is_file():
        raise CheckError(f"mutation {mutation.name}: module {mutation.module} not found")
    source = path.read_text()
    found = source.count(mutation.old)
    if found == 0:
        raise CheckError(f"mutation {mutation.name}: pattern not found in {mutation.module}")
    if found > 1:
        raise CheckError(
            f"mutation {mutation.name}: pattern found {found} times in {mutation.module}"
        )
    path.write_text(source.replace(mutation.old, mutation.new))


_WITHOUT_WORKING_DIRECTORY = "import sys; del sys.path[0]; "
"""Started with ``python -c``, Python puts the working directory first on ``sys.path``: there it
would find the real package, not the mutated copy (``python -P`` says the same from 3.11 on)."""


def run_tests(package_parent: Path, tests: tuple[str, ...]) -> tuple[bool, str, float]:
    """Run ``tests`` importing the package from ``package_parent``; tell whether they passed."""
    env = dict(os.environ, PYTHONPATH=str(package_parent), PYTHONDONTWRITEBYTECODE="1")
    find_package = f"import {PACKAGE}; print({PACKAGE}.__file__)"
    imported = subprocess.run(
        [sys.executable, "-c", _WITHOUT_WORKING_DIRECTORY + find_package],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(imported).is_relative_to(package_parent):
        raise CheckError(f"the tests would import {imported}, not the copy in {package_parent}")
    run_pytest = "import pytest; raise SystemExit(pytest.main(sys.argv[1:]))"
    command = [
        sys.executable,
        *("-c", _WITHOUT_WORKING_DIRECTORY + run_pytest),
        *("-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider"),
        *tests,
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=PYTEST_TIMEOUT,
        )
    except subprocess.TimeoutExpired as expired:
        raise CheckError(
            f"pytest ran longer than {PYTEST_TIMEOUT} s: {' '.join(tests)}"
        ) from expired
    output = done.stdout + done.stderr
    if done.returncode not in (0, 1):  # 1: tests failed; anything else: they did not run
        print(output, file=sys.stderr)
        raise CheckError(f"pytest exited with {done.returncode}: {' '.join(tests)}")
    return done.returncode == 0, output, time.monotonic() - started


def first_failure(output: str) -> str:
    """The first failing test of pytest's summary and the first line of its error."""
    lines = output.strip().splitlines()
    failed = next((line for line in lines if line.startswith(("FAILED", "ERROR"))), "")
    error = next((line.strip() for line in lines if line.startswith("E   ")), "")
    return f"{failed.split(' - ')[0]}: {error}" if failed else (lines[-1] if lines else "")


def fresh_copy(parent: Path) -> Path:
    """Copy the package into ``parent``, replacing an earlier copy; return the copy's directory."""
    target = parent / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(ROOT / PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def main() -> int:
    """Run the mutations that the options select; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", help="only mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the run on the unchanged package"
    )
    options = parser.parse_args()
    mutations = [m for m in MUTATIONS if not options.select or options.select in m.name]
    if options.list:
        for m in mutations:
            print(f"{m.name}: {m.why}\n    {m.module}; caught by {', '.join(m.tests)}")
        return 0
    if not mutations:
        print(f"no mutation matches {options.select!r}", file=sys.stderr)
        return 2
    started = time.monotonic()
    results: list[tuple[str, str, float, str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mutations-") as temporary:
            parent = Path(temporary)
            # Every pattern is checked first: a missing one stops the check before any run.
            for mutation in mutations:
                mutate(fresh_copy(parent), mutation)
            if not options.no_baseline:
                fresh_copy(parent)
                tests = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
                passed, output, seconds = run_tests(parent, tests)
                print(
                    f"baseline: {len(tests)} test ids, {'passed' if passed else 'FAILED'}"
                    f" in {seconds:.1f} s",
                    flush=True,
                )
                if not passed:
                    print(output, file=sys.stderr)
                    raise CheckError("the tests fail on the unchanged package")
            for mutation in mutations:
                mutate(fresh_copy(parent), mutation)
                passed, output, seconds = run_tests(parent, mutation.tests)
                verdict = "SURVIVED" if passed else "killed"
                detail = "" if passed else first_failure(output)
                results.append((mutation.name, verdict, seconds, detail))
                print(f"{mutation.name}: {verdict} in {seconds:.1f} s {detail}", flush=True)
    except CheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\n{'mutation':28} {'result':9} {'seconds':>7}")
    for name, verdict, seconds, _ in results:
        print(f"{name:28} {verdict:9} {seconds:7.1f}")
    survived = [name for name, verdict, _, _ in results if verdict == "SURVIVED"]
    print(
        f"\n{len(results) - len(survived)} of {len(results)} killed"
        f" in {time.monotonic() - started:.0f} s"
    )
    if survived:
        print(f"survived: {', '.join(survived)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
