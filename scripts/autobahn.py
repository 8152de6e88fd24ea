"""Run Autobahn|Testsuite against the echo endpoint and print a table per compression mode.

    .venv/bin/python scripts/autobahn.py                    # cases 1-10, every mode
    .venv/bin/python scripts/autobahn.py --mode default --full
    .venv/bin/python scripts/autobahn.py --mode off --cases '6.4.*,7.9.5'

Installs wstest (Python 2.7) into ~/.cache/aiohttp-wsapp/autobahn on first use, serves the
endpoint on a free loopback port, and keeps wstest's HTML report in --outdir. Exits 1 when a
case fails. The logic is shared with tests/test_autobahn.py: see tests/autobahn.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import autobahn


async def run_mode(
    wstest: list[str], mode: str, selection: autobahn.Selection, outdir: Path
) -> autobahn.Report:
    """Serve the endpoint of ``mode`` on a free loopback port and play ``selection`` on it."""
    runner = web.AppRunner(autobahn.echo_app(mode))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"{mode}: playing {selection} against ws://127.0.0.1:{port}/ ...", flush=True)
        return await autobahn.run_wstest(
            wstest,
            url=f"ws://127.0.0.1:{port}/",
            mode=mode,
            selection=selection,
            workdir=outdir / mode,
        )
    finally:
        await runner.cleanup()


async def main(args: argparse.Namespace) -> int:
    python2 = autobahn.find_python2()
    if python2 is None:
        print(autobahn.python2_hint(), file=sys.stderr)
        return 2
    print(f"wstest: {autobahn.install_dir(python2)}", flush=True)
    installed = await autobahn.install_wstest(python2)
    wstest = autobahn.wstest_command(python2, installed)
    if args.full:
        selection = autobahn.FULL
    elif args.cases:
        selection = autobahn.Selection(cases=tuple(args.cases.split(",")), exclude=())
    else:
        selection = autobahn.BASIC
    modes = list(autobahn.MODES) if args.mode == "all" else [args.mode]
    outdir: Path = args.outdir
    reports = []
    for mode in modes:
        report = await run_mode(wstest, mode, selection, outdir)
        reports.append(report)
        print(autobahn.format_table([report]), flush=True)
    print()
    print(autobahn.format_table(reports))
    for report in reports:
        if report.notes():
            print(report.notes())
        for result in report.failed:
            print(f"FAILED {report.mode} {result}")
    print(f"\nHTML reports: {outdir}/<mode>/reports/index.html; server log: {outdir}/server.log")
    return 1 if any(report.failed for report in reports) else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=[*autobahn.MODES, "all"],
        default="all",
        help="the endpoint's compress= setting to test (default: all)",
    )
    cases = parser.add_mutually_exclusive_group()
    cases.add_argument("--cases", help="comma-separated wstest case patterns, e.g. '1.*,2.*'")
    cases.add_argument("--full", action="store_true", help="every case, 12.* and 13.* included")
    parser.add_argument("--outdir", help="where to keep wstest's reports (default: a temp dir)")
    return parser.parse_args()


def prepare_outdir(args: argparse.Namespace) -> None:
    """Create the output directory, and send the endpoint's log to a file in it."""
    args.outdir = Path(args.outdir or tempfile.mkdtemp(prefix="autobahn-"))
    args.outdir.mkdir(parents=True, exist_ok=True)
    # The endpoint logs every protocol error wstest provokes: keep them out of the summary.
    logging.basicConfig(filename=args.outdir / "server.log", level=logging.INFO, force=True)


if __name__ == "__main__":
    arguments = parse_args()
    prepare_outdir(arguments)
    sys.exit(asyncio.run(main(arguments)))
