"""Collect the numbers of a run and write them as benchmarks/RESULTS.md."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.machine import cpu_model
from benchmarks.profiles import Profile
from benchmarks.sections import kept_sections
from benchmarks.servers import ServerSpec

__all__ = ["Results", "write_report"]

BASELINE = "raw_aiohttp"
CANDIDATE = "aiohttp_wsapp"
FLOOR = "broadcast_floor"
PEER_PACKAGES = (
    "aiohttp", "websockets", "starlette", "uvicorn", "httptools", "python-socketio",
    "python-engineio", "picows", "aiofastnet", "psutil",
)  # fmt: skip


@dataclass
class Results:
    """Every number of one run, by metric key and server name, one value per round."""

    profile: Profile
    servers: list[ServerSpec]
    started: float
    finished: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quiet_wait: float = 0.0
    retries: int = 0
    values: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    failures: list[str] = field(default_factory=list)
    client_check: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The ``Sec-WebSocket-Extensions`` answer each server gave the deflate client.
    negotiated: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, server: str, value: float) -> None:
        """Record one round's value."""
        self.values[key][server].append(value)

    def median(self, key: str, server: str) -> float | None:
        """The median over rounds, or None when the server has no value."""
        samples = self.values[key].get(server)
        return statistics.median(samples) if samples else None

    def spread(self, key: str, server: str) -> float | None:
        """(max - min) / median over rounds, or None with fewer than two rounds."""
        samples = self.values[key].get(server) or []
        middle = self.median(key, server)
        if len(samples) < 2 or not middle:
            return None
        return (max(samples) - min(samples)) / middle

    def ratio(self, key: str, server: str) -> float | None:
        """The server's value over raw aiohttp's: the median of the per-round ratios.

        Rounds interleave the servers, so the server and raw aiohttp of one round ran a few
        seconds apart under the same conditions; pairing them cancels the drift of a shared
        machine better than a ratio of medians does (used when the rounds do not pair up).
        """
        return paired_ratio(self.values[key].get(server), self.values[key].get(BASELINE))

    def between(self, key: str, base_key: str, server: str) -> float | None:
        """One server's ``key`` over its own ``base_key``: the median of the paired ratios.

        The values pair up when both keys have as many (the same rounds, the same repeats);
        otherwise it is the ratio of the medians.
        """
        return paired_ratio(self.values[key].get(server), self.values[base_key].get(server))


Formatter = Callable[[float], str]


def fmt_int(value: float) -> str:
    """A count with thousands separators."""
    return f"{value:,.0f}"


def fmt_1(value: float) -> str:
    """One decimal."""
    return f"{value:,.1f}"


def fmt_2(value: float) -> str:
    """Two decimals."""
    return f"{value:,.2f}"


def fmt(value: float | None, formatter: Formatter) -> str:
    """A value, or a dash when missing."""
    return "-" if value is None else formatter(value)


def fmt_ratio(value: float | None) -> str:
    """A ratio to raw aiohttp."""
    return "-" if value is None else f"{value:.2f}x"


def fmt_spread(value: float | None) -> str:
    """The spread over rounds as a percentage."""
    return "-" if value is None else f"±{value * 50:.0f}%"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def fmt_share(value: float | None) -> str:
    """A CPU share of one core as a percentage."""
    return "-" if value is None else f"{value:.0%}"


def cpu_cells(results: Results, prefix: str, server: str) -> list[str]:
    """The server's, the client's and everything else's CPU over the measured windows."""
    return [
        fmt_share(results.median(f"{prefix}.{side}_cpu", server))
        for side in ("server", "client", "other")
    ]


CPU_HEADER = ["server CPU", "client CPU", "other load"]


#: The note under a table with a rate whose client core was full.
CLIENT_BOUND_NOTE = "≥: the load client's core was full (90% or more): the server may do more."


def client_bound_mark(results: Results, prefix: str, server: str) -> str:
    """``"≥ "`` when the client's core was full while this rate was measured."""
    client = results.median(f"{prefix}.client_cpu", server)
    return "≥ " if client is not None and client >= 0.9 else ""


def metric_rows(results: Results, key: str, formatter: Formatter) -> list[list[str]]:
    """One row per server: median, ratio to raw aiohttp, spread, and CPU use if measured."""
    prefix = key.split(".")[0]
    with_cpu = bool(results.values.get(f"{prefix}.server_cpu"))
    return [
        [
            spec.label,
            client_bound_mark(results, prefix, spec.name)
            + fmt(results.median(key, spec.name), formatter),
            fmt_ratio(results.ratio(key, spec.name)),
            fmt_spread(results.spread(key, spec.name)),
            *(cpu_cells(results, prefix, spec.name) if with_cpu else []),
        ]
        for spec in results.servers
        if results.values[key].get(spec.name)
    ]


def echo_section(results: Results) -> list[str]:
    """Scenario (1): round trips, median rate and latency per server and concurrency."""
    size = results.profile.echo_size
    lines = [f"### (1) Echo round trips, {size}-byte text", ""]
    header = ["server", "connections", "round trips/s", "x raw", "spread", "p50 µs", "p99 µs",
              *CPU_HEADER]  # fmt: skip
    rows = []
    for spec in results.servers:
        for n in results.profile.echo_connections:
            key = f"echo{n}"
            rate = results.median(f"{key}.messages_per_s", spec.name)
            if rate is None:
                continue
            rows.append([
                spec.label, str(n), client_bound_mark(results, key, spec.name) + fmt_int(rate),
                fmt_ratio(results.ratio(f"{key}.messages_per_s", spec.name)),
                fmt_spread(results.spread(f"{key}.messages_per_s", spec.name)),
                fmt(results.median(f"{key}.p50_us", spec.name), fmt_int),
                fmt(results.median(f"{key}.p99_us", spec.name), fmt_int),
                *cpu_cells(results, key, spec.name),
            ])  # fmt: skip
    note = [CLIENT_BOUND_NOTE, ""] if any(row[2].startswith("≥") for row in rows) else []
    return [*lines, *table(header, rows), *note]


def simple_sections(results: Results) -> list[str]:
    """Scenarios (2), (3) and (4): one number per server."""
    profile = results.profile
    sections = [
        (f"### (2) One connection streaming {profile.stream_size // 1024} KiB binary messages",
         "stream.mb_per_s", "MB/s echoed", fmt_1),
        (f"### (3) Handshakes, {profile.openers} concurrent openers (open, then close)",
         "handshake.per_s", "handshakes/s", fmt_int),
        (f"### (4) Server RSS per idle connection, {profile.idle_connections:,} connections",
         "idle.kib_per_conn", "KiB/connection", fmt_2),
    ]  # fmt: skip
    lines: list[str] = []
    for title, key, unit, formatter in sections:
        lines += [title, ""]
        rows = metric_rows(results, key, formatter)
        extra = CPU_HEADER if rows and len(rows[0]) > 4 else []
        lines += table(["server", unit, "x raw", "spread", *extra], rows)
        if any(row[1].startswith("≥") for row in rows):
            lines += [CLIENT_BOUND_NOTE, ""]
    return lines


def broadcast_section(results: Results) -> list[str]:
    """Scenario (5): the server's time for the call and the time until the last peer got it."""
    profile = results.profile
    lines = [
        f"### (5) Broadcast of a 100-byte text to {profile.broadcast_connections:,} connections",
        "",
        "raw aiohttp: `for ws in peers: await ws.send_str(...)`; aiohttp_wsapp: "
        "`await wsapp.broadcast(...)`; websockets: `websockets.asyncio.server.broadcast(...)`; "
        "floor: raw aiohttp writing one prebuilt frame with a bare `transport.write` loop, the "
        "least time any asyncio server can take to hand the frame to every transport. "
        f"Median over {profile.broadcast_rounds} rounds x {profile.broadcast_repeats} broadcasts, "
        f"each round after {profile.broadcast_warmups} unmeasured ones. "
        '"Client CPU ms" is the load client\'s CPU time from sending the command until the '
        "last peer got the text: when it is close to the end-to-end time, the client's core "
        "was the limit of that number.",
        "",
    ]
    rows = []
    for spec in results.servers:
        if results.median("broadcast.server_ms", spec.name) is None:
            continue
        rows.append([
            spec.label,
            *timing_cells(results, "broadcast.server_ms", spec.name),
            *timing_cells(results, "broadcast.end_to_end_ms", spec.name),
            fmt(results.median("broadcast.client_ms", spec.name), fmt_2),
            fmt_share(results.median("broadcast.other_cpu", spec.name)),
        ])  # fmt: skip
    header = ["server", "server-side ms", "x raw", "spread", "end-to-end ms", "x raw", "spread",
              "client CPU ms", "other load"]  # fmt: skip
    return lines + table(header, rows)


def timing_cells(results: Results, key: str, server: str) -> list[str]:
    """Median, ratio to raw aiohttp and spread of one timing."""
    return [
        fmt(results.median(key, server), fmt_2),
        fmt_ratio(results.ratio(key, server)),
        fmt_spread(results.spread(key, server)),
    ]


def target_rows(results: Results) -> list[list[str]]:
    """Issue 6's targets for aiohttp_wsapp, each with its measured ratio."""
    checks: list[tuple[str, str, float | None, Callable[[float], bool]]] = [
        (f"(1) round trips/s, {n} conn.", "≥ 0.95x raw",
         results.ratio(f"echo{n}.messages_per_s", CANDIDATE), lambda r: r >= 0.95)
        for n in results.profile.echo_connections
    ]  # fmt: skip
    checks += [
        ("(2) streaming MB/s", "≥ 0.95x raw",
         results.ratio("stream.mb_per_s", CANDIDATE), lambda r: r >= 0.95),
        ("(3) handshakes/s", "≥ 0.95x raw",
         results.ratio("handshake.per_s", CANDIDATE), lambda r: r >= 0.95),
        ("(4) RSS per connection", "≤ 1.15x raw",
         results.ratio("idle.kib_per_conn", CANDIDATE), lambda r: r <= 1.15),
        ("(5) broadcast, server-side time", "≤ 0.50x raw (≥ 2x faster)",
         results.ratio("broadcast.server_ms", CANDIDATE), lambda r: r <= 0.5),
        ("(5) broadcast, end to end", "≤ 1.00x raw (no slower)",
         results.ratio("broadcast.end_to_end_ms", CANDIDATE), lambda r: r <= 1.0),
    ]  # fmt: skip
    rows = []
    for label, target, ratio, met in checks:
        verdict = "no data" if ratio is None else ("met" if met(ratio) else "**missed**")
        rows.append([label, target, fmt_ratio(ratio), verdict])
    return rows


def floor_note(results: Results) -> list[str]:
    """How close to a bare ``transport.write`` loop the broadcast came, and what that bounds."""
    floor = results.ratio("broadcast.server_ms", FLOOR)
    candidate = results.ratio("broadcast.server_ms", CANDIDATE)
    if floor is None or candidate is None:
        return []
    return [
        f"The floor of (5), a bare `transport.write` loop of one prebuilt frame, took "
        f"{fmt_ratio(floor)} raw aiohttp's server-side time; aiohttp_wsapp took "
        f"{fmt_ratio(candidate)}. Handing 100 bytes to a loopback socket costs that much "
        "whatever runs above it, so no asyncio server can go below the floor here.",
        "",
    ]


DEFLATE_SERVERS = ("raw_aiohttp", "aiohttp_wsapp", "aiohttp_wsapp_dedicated", "websockets")
MESSAGE_LABELS = {
    "text32": "32-byte text",
    "chat100": "100-byte chat message (JSON)",
    "text100": "100-byte text",
    "json4k": "4 KiB JSON document",
}
DEFLATE_INTRO = """\
Every browser offers permessage-deflate, so these are the figures its users see. The load
client here (`benchmarks/deflate_client.py`) does what Chromium does: it offers
`permessage-deflate; client_max_window_bits`, compresses every message it sends (zlib level 6,
memLevel 8, context kept, masked frames with RSV1), and inflates every compressed message it
receives with one decompressor per connection, checking each one. The messages are realistic
JSON whose figures change from one message to the next, so that context does not see the same
bytes twice. Servers: raw aiohttp (`WebSocketResponse(compress=True)`, its default: a
compressor per connection, level 1), aiohttp_wsapp by default (shared mode: each message
compressed on its own, under 128 bytes not at all, a broadcast compressed once), aiohttp_wsapp
with `compress="dedicated"` (a compressor per connection, context kept) and websockets (its
default: context kept, 12-bit windows). "plain" rows: the same client offering nothing."""


def deflate_specs(results: Results) -> list[ServerSpec]:
    """The servers that took part in the deflate scenarios, in table order."""
    return [spec for spec in results.servers if spec.name in DEFLATE_SERVERS]


def deflate_echo_table(results: Results) -> list[str]:
    """Scenario (6): round trips through deflate clients."""
    profile = results.profile
    rows = []
    for name in profile.deflate_messages:
        key = f"deflate_echo_{name}"
        for spec in deflate_specs(results):
            rate = results.median(f"{key}.messages_per_s", spec.name)
            if rate is None:
                continue
            rows.append([
                MESSAGE_LABELS.get(name, name), spec.label,
                client_bound_mark(results, key, spec.name) + fmt_int(rate),
                fmt_ratio(results.ratio(f"{key}.messages_per_s", spec.name)),
                fmt_spread(results.spread(f"{key}.messages_per_s", spec.name)),
                fmt(results.median(f"{key}.p50_us", spec.name), fmt_int),
                fmt(results.median(f"{key}.p99_us", spec.name), fmt_int),
                fmt(results.median(f"{key}.wire_bytes", spec.name), fmt_int),
                *cpu_cells(results, key, spec.name),
            ])  # fmt: skip
    if not rows:
        return []
    header = ["message", "server", "round trips/s", "x raw", "spread", "p50 µs", "p99 µs",
              "bytes echoed", *CPU_HEADER]  # fmt: skip
    note = [CLIENT_BOUND_NOTE, ""] if any(row[2].startswith("≥") for row in rows) else []
    title = f"### (6) Echo round trips through deflate clients, {profile.deflate_echo_connections}"
    return [title + " connections", "", *table(header, rows), *note]


def deflate_broadcast_table(results: Results) -> list[str]:
    """Scenario (7): broadcasts to deflate peers and to plain ones."""
    profile = results.profile
    rows = []
    for name in profile.deflate_payloads:
        for spec in deflate_specs(results):
            for peers in ("deflate", "plain"):
                key = f"deflate_bcast_{peers}_{name}"
                if results.median(f"{key}.server_ms", spec.name) is None:
                    continue
                plain = f"deflate_bcast_plain_{name}"
                vs_plain = "-"
                if peers == "deflate":
                    vs_plain = fmt_ratio(results.between(f"{key}.server_ms", f"{plain}.server_ms",
                                                         spec.name))  # fmt: skip
                rows.append([
                    MESSAGE_LABELS.get(name, name), spec.label, peers,
                    *timing_cells(results, f"{key}.server_ms", spec.name),
                    vs_plain,
                    *timing_cells(results, f"{key}.end_to_end_ms", spec.name),
                    fmt(results.median(f"{key}.client_ms", spec.name), fmt_2),
                    fmt(results.median(f"{key}.wire_bytes", spec.name), fmt_int),
                    fmt_share(results.median(f"{key}.other_cpu", spec.name)),
                ])  # fmt: skip
    if not rows:
        return []
    header = ["payload", "server", "peers", "server-side ms", "x raw", "spread", "x plain",
              "end-to-end ms", "x raw", "spread", "client CPU ms", "bytes per peer",
              "other load"]  # fmt: skip
    return [
        f"### (7) Broadcast to {profile.deflate_broadcast_connections:,} connections",
        "",
        "The same calls as in (5), on the connections of (8) once it is measured; the payload "
        "changes from one broadcast to the next. "
        '"x raw" compares servers with the same peers; "x plain" is a server\'s time with '
        "deflate peers over its own with plain peers (the 100-byte message stays plain in "
        'aiohttp_wsapp\'s shared mode, under its 128-byte threshold; `compress="dedicated"` '
        "is the same as the default with plain peers, so it has no plain row). "
        '"Bytes per peer" is the payload on the wire. The client inflates every copy on one '
        "core: where its CPU time is close to the end-to-end time, the client was the limit of "
        "that number.",
        "",
        *table(header, rows),
    ]


def deflate_memory_table(results: Results) -> list[str]:
    """Scenario (8): server RSS per connection, deflate negotiated or not."""
    profile = results.profile
    rows = []
    for spec in deflate_specs(results):
        if results.median("deflate_mem_deflate.opened_kib", spec.name) is None:
            continue
        plain_name = "aiohttp_wsapp" if spec.name == "aiohttp_wsapp_dedicated" else spec.name
        row = [spec.label]
        for stage in ("opened", "after", "echoed"):
            deflate = results.median(f"deflate_mem_deflate.{stage}_kib", spec.name)
            plain = results.median(f"deflate_mem_plain.{stage}_kib", plain_name)
            row += [fmt(deflate, fmt_2), fmt(plain, fmt_2), fmt_ratio(quotient(deflate, plain))]
            if stage == "after":
                websockets = results.median("deflate_mem_deflate.after_kib", "websockets")
                row.append(fmt_ratio(quotient(deflate, websockets)))
        rows.append(row)
    if not rows:
        return []
    broadcasts = profile.deflate_memory_broadcasts
    header = ["server", "opened, deflate", "opened, plain", "x plain",
              f"after {broadcasts} broadcasts, deflate", "after, plain", "x plain",
              "x websockets", "echoed, deflate", "echoed, plain", "x plain"]  # fmt: skip
    payload = MESSAGE_LABELS.get(profile.deflate_memory_payload, profile.deflate_memory_payload)
    return [
        f"### (8) Server RSS per connection (KiB), {profile.deflate_broadcast_connections:,} "
        "connections",
        "",
        'As (4): RSS growth over a warmed-up server, divided by the connections. "Opened": right '
        f'after the handshakes, never a message; "after": then {broadcasts} broadcasts of the '
        f'{payload}; "echoed": then each connection sent one 32-byte text (compressed, as a '
        "browser does) and got it back. Ratios are of medians. aiohttp_wsapp's plain figures "
        "stand for both modes. The browser compresses with context, so from its first compressed "
        "message on a server keeps a decompressor for that connection: with aiohttp's reader, "
        "which aiohttp_wsapp uses too, about 10 KiB once it has inflated a short message, and up "
        "to 40 KiB (a 32 KiB window) as more arrives. That is the step from after to echoed.",
        "",
        *table(header, rows),
    ]


def paired_ratio(samples: list[float] | None, base: list[float] | None) -> float | None:
    """The median of ``samples[i] / base[i]`` when they pair up, else the ratio of medians."""
    if not samples or not base:
        return None
    if len(samples) == len(base) and all(base):
        return statistics.median(value / ref for value, ref in zip(samples, base, strict=True))
    base_median = statistics.median(base)
    return statistics.median(samples) / base_median if base_median else None


def quotient(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None when either is missing or ``base`` is zero."""
    return None if value is None or not base else value / base


def deflate_target_rows(results: Results) -> list[list[str]]:
    """Issue 13's targets for aiohttp_wsapp's default (shared) mode."""
    checks: list[tuple[str, str, float | None, float]] = []
    limits = {"chat100": 1.1, "text100": 1.1, "json4k": 1.3}
    for name in results.profile.deflate_payloads:
        key = f"deflate_bcast_deflate_{name}.server_ms"
        plain = f"deflate_bcast_plain_{name}.server_ms"
        limit = limits.get(name, 1.3)
        checks.append((
            f"(7) broadcast of the {MESSAGE_LABELS.get(name, name)}, server-side time",
            f"≤ {limit:.2f}x plain peers", results.between(key, plain, CANDIDATE), limit,
        ))  # fmt: skip
    for stage, label in (
        ("opened", "(8) RSS per idle connection (never a message)"),
        ("after", "(8) RSS per connection after the broadcasts"),
    ):
        ratio = quotient(
            results.median(f"deflate_mem_deflate.{stage}_kib", CANDIDATE),
            results.median(f"deflate_mem_plain.{stage}_kib", CANDIDATE),
        )
        checks.append((label, "≤ 1.15x compression off", ratio, 1.15))
    rows = []
    for label, target, ratio, limit in checks:
        verdict = "no data" if ratio is None else ("met" if ratio <= limit else "**missed**")
        rows.append([label, target, fmt_ratio(ratio), verdict])
    return rows


def deflate_section(results: Results) -> list[str]:
    """The browsers' section: (6)-(8), the negotiated extensions, issue 13's targets."""
    body = deflate_echo_table(results) + deflate_broadcast_table(results)
    body += deflate_memory_table(results)
    if not body:
        return []
    negotiated = [
        f"- {spec.label}: `{results.negotiated[spec.name]}`"
        for spec in deflate_specs(results)
        if spec.name in results.negotiated
    ]
    lines = ["## Browsers (permessage-deflate)", "", *DEFLATE_INTRO.splitlines(), ""]
    if negotiated:
        lines += ["Each server answered the offer with:", "", *negotiated, ""]
    lines += body
    lines += ["### aiohttp_wsapp (default, shared mode) against the targets of issue 13", ""]
    lines += table(["scenario", "target", "measured", "verdict"], deflate_target_rows(results))
    return lines


def client_check_section(results: Results) -> list[str]:
    """Echo at 50 connections from one client process and from two, on the same core."""
    if not results.client_check:
        return []
    lines = [
        "## Is the load client the bottleneck?",
        "",
        "Echo at 50 connections from one client process, then from two processes of 25 "
        "connections each (both on the client core), against the baseline and the fastest "
        "server. If the total does not move and the server's core is busier than the "
        "client's, the server is what is measured.",
        "",
    ]
    rows = []
    for name, check in results.client_check.items():
        one, two = check["one"], check["two"]
        total = sum(part["messages_per_s"] for part in two)
        rows.append([
            name, limit_verdict(one), fmt_int(one["messages_per_s"]), fmt_int(total),
            f"{one['server_cpu']:.0%}", f"{one['client_cpu']:.0%}",
            f"{one['other_cpu']:.0%}",
            f"{max(p['server_cpu'] for p in two):.0%}",
            f"{sum(p['client_cpu'] for p in two):.0%}",
        ])  # fmt: skip
    header = ["server", "limited by", "1 process: round trips/s", "2 processes: total",
              "server CPU (1)",
              "client CPU (1)", "other load (1)", "server CPU (2)",
              "client CPU (2, sum)"]  # fmt: skip
    return lines + table(header, rows)


def limit_verdict(step: dict[str, Any]) -> str:
    """Which side's core was full during one echo run."""
    server, client = step["server_cpu"] >= 0.9, step["client_cpu"] >= 0.9
    if server and not client:
        return "the server"
    if client:
        return "the client (the server's number is a lower bound)"
    return "neither core was full"


def package_version(name: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def wsapp_version() -> str:
    """aiohttp_wsapp's ``__version__``, or why it could not be read."""
    try:
        return str(importlib.import_module("aiohttp_wsapp").__version__)
    except Exception as exc:
        return f"not importable ({type(exc).__name__})"


def machine_section(results: Results) -> list[str]:
    """The machine, the software versions and the run's settings."""
    minutes = (results.finished - results.started) / 60
    load = ", ".join(f"{x:.2f}" for x in results.load_before)
    load_after = ", ".join(f"{x:.2f}" for x in results.load_after)
    lines = [
        "## Machine",
        "",
        f"- CPU: {cpu_model()}, {psutil.cpu_count()} cores; "
        "server pinned to core 0, load client to core 1 (`taskset`)",
        f"- Memory: {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"kernel {platform.release()}; Python {platform.python_version()}",
        f"- Load average before the run: {load}; after: {load_after}; the run waited "
        f"{results.quiet_wait:.0f} s in all for quiet moments and measured {results.retries} "
        "times again because other work took CPU meanwhile",
        f"- Profile `{results.profile.name}`: {results.profile.rounds} rounds of (1)-(3) and "
        f"(6) ({results.profile.warmup:g} s warm-up, {results.profile.duration:g} s measured "
        f"each), {results.profile.memory_rounds} rounds of (4), "
        f"{results.profile.broadcast_rounds} of (5), {results.profile.deflate_broadcast_rounds} "
        f"of (7) and (8); the run took {minutes:.1f} min",
        "",
        "## Versions",
        "",
    ]
    rows = [["aiohttp_wsapp", wsapp_version()]] + [[p, package_version(p)] for p in PEER_PACKAGES]
    return lines + table(["package", "version"], rows)


METHOD = """## How it was measured

- Every server runs in its own process with the stdlib asyncio event loop (no uvloop), pinned
  to core 0; the load client (picows, Cython) runs pinned to core 1. Each round starts every
  server afresh, in the same order (raw aiohttp first, aiohttp_wsapp right after it). The
  tables show the median over rounds; "x raw" is the median over rounds of the server's value
  divided by raw aiohttp's value of the same round; "spread" is half of (max - min) over
  rounds, as % of the median.
- **No compression in (1)-(5)**: the picows client never offers permessage-deflate, so none is
  negotiated, whatever a server's default. (6)-(8) use a client that offers it as browsers do
  (see their section). Keepalive pings are off where a server has them
  (aiohttp_wsapp `heartbeat=None`, websockets `ping_interval=None`, uvicorn
  `ws_ping_interval=None`); raw aiohttp and picows send none by default. Access logs are off.
- (1) Each connection keeps one 32-byte text message in flight and sends the next as soon as
  the echo arrives. "Round trips/s" counts echoes received (one message each way); p50/p99 are
  round-trip latencies. CPU columns are each process's CPU time over the window, as a share
  of one core.
- (2) One connection keeps 4 binary messages of 64 KiB in flight; MB/s (10^6 bytes) counts
  echoed payload bytes received by the client.
- (3) 50 tasks each open a TCP connection, send a pre-built upgrade request, wait for the
  `101` (for Socket.IO, also for the namespace join), send a close frame and wait until the
  server drops the TCP connection, then start again. This opener is a minimal asyncio
  protocol rather than picows, whose `ws_connect` costs the client more CPU per connection
  than most servers spend, which would make the client the limit.
- (4) After a warm-up (50 connections echoing, then closed), the server's RSS (psutil) is
  read; then the client opens the connections, each does one echo, and after a settle time
  the RSS is read again. The difference divided by the connection count is shown.
- (5) The client opens the connections; one of them sends `broadcast`; the server times the
  call with `time.perf_counter()` and reports it; end to end is from the client sending the
  command until the last connection received the 100-byte text. On loopback, each peer's
  `send()` system call also runs the receiving side of TCP, so most of a broadcast's server
  time is spent in the kernel, whichever library builds the frames.
- "Limited by" (client check), and a client CPU near 100% anywhere: a row whose client core
  was full measures the client as much as the server; its number is a lower bound.
- **python-socketio** is not plain WebSocket: the client speaks its wire protocol itself
  (engine.io v4 over `/socket.io/?EIO=4&transport=websocket`, joins the default namespace
  with `40`, answers pings), sends `42["echo","<data>"]` and the server answers with
  `emit("echo", data, to=sid)`. Binary data goes as a `451-[...]` header frame plus one binary
  frame each way. Its "handshake" includes the namespace join. It has no broadcast row: its
  rooms are not a plain WebSocket broadcast.
- Starlette runs on uvicorn with httptools and uvicorn's websockets-sansio protocol.
- The machine may be shared with other work. Before each job the runner waits (within a
  total budget) until the machine is nearly idle; "other load" shows how many cores' worth
  of CPU other work still took during the measured windows (up to 200% on 2 cores). With
  interleaved rounds and per-round ratios that noise hits every server alike, but single
  numbers can still move by the spread shown.
"""


def write_report(results: Results, path: Path) -> None:
    """Write the Markdown report of ``results`` to ``path``."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(results.started))
    command = "python -m benchmarks" + (" --quick" if results.profile.name == "quick" else "")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {when}. Ratios are to raw aiohttp in the same run "
        "(higher is better for rates, lower for latency, memory and time).",
        "",
        "## Results",
        "",
    ]
    lines += echo_section(results) + simple_sections(results) + broadcast_section(results)
    lines += ["## aiohttp_wsapp against the targets of issue 6", ""]
    lines += table(["scenario", "target", "measured", "verdict"], target_rows(results))
    lines += floor_note(results)
    lines += deflate_section(results)
    lines += client_check_section(results)
    lines += machine_section(results) + METHOD.splitlines()
    if results.failures:
        lines += ["", "## Failures", ""] + [
            f"- {failure.splitlines()[0]}" for failure in results.failures
        ]
    for section in kept_sections(path):  # written by other tools (benchmarks.callgrind)
        lines += ["", section]
    path.write_text("\n".join(lines).rstrip() + "\n")
