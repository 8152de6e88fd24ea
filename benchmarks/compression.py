"""Measure permessage-deflate: bytes on the wire, CPU per message, memory per connection.

Run from the repository root: ``python -m benchmarks.compression`` (about five minutes;
``--quick`` for a one-minute smoke run). It prints Markdown tables; nothing touches the network.
CPU is this thread's CPU time, the fastest of 15 rounds, so a busy machine skews it little.

Traces, made deterministically:

- ``chat``: a chat room's JSON events (50-200 bytes, the same keys every time: 75% messages,
  15% typing notices, 10% presence changes), as every member of the room receives them, in order.
- ``status``: a 4 KiB JSON status document sent again and again, its figures changing.

Compared: no compression, our shared mode (each message on its own), our dedicated mode with
several window sizes and memory levels, and ``websockets``' default permessage-deflate (its own
extension object: ``server_max_window_bits=12``, ``memLevel=5``, zlib's default level 6, context
takeover, no threshold). Memory is the RSS of a child process holding 1,000 deflaters (or
aiohttp's frame readers), less that of one holding none: tracemalloc cannot see zlib's
allocations.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiohttp_wsapp.frames import (
    DedicatedDeflater,
    Opcode,
    SharedDeflater,
    encode_frame,
)

Encoder = Callable[[bytes], bytes]
"""Turns one message into the bytes of its frame."""

_WORDS = (  # noqa: SIM905
    "the be to of and a in that have I it for not on with he as you do at this but his by from "
    "they we say her she or an will my one all would there their what so up out if about who get "
    "which go me when make can like time no just him know take people into year your good some "
    "could them see other than then now look only come its over think also back after use two "
    "how our work first well way even new want because any these give day most us deploy build "
    "merge review ticket lunch meeting release server bug fix test later tomorrow thanks ok sure "
    "great yes nope agreed done shipping broken green red flaky coffee standup sprint demo"
).split()
_USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")


def chat_trace(count: int, seed: int = 7) -> list[bytes]:
    """Return ``count`` chat room events of 50-200 bytes of JSON: messages, typing, presence."""
    rng = random.Random(seed)
    events: list[bytes] = []
    ts = 1_764_600_000.0
    while len(events) < count:
        ts += rng.expovariate(0.5)
        user = rng.choice(_USERS)
        kind = rng.random()
        if kind < 0.15:
            event: dict[str, object] = {"type": "typing", "room": "general", "user": user}
        elif kind < 0.25:
            status = rng.choice(("online", "away", "offline"))
            event = {"type": "presence", "room": "general", "user": user, "status": status}
        else:
            text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 16)))
            event = {
                "type": "message",
                "room": "general",
                "id": 100_000 + len(events),
                "user": user,
                "ts": round(ts, 3),
                "text": text.capitalize(),
            }
        encoded = json.dumps(event).encode()
        if len(encoded) <= 200:
            events.append(encoded)
    return events


def status_trace(count: int, seed: int = 11) -> list[bytes]:
    """Return ``count`` successive 4 KiB status documents whose figures change."""
    rng = random.Random(seed)
    names = [
        "api-gateway", "auth", "billing", "search", "notifications", "media", "chat",
        "payments", "reports", "scheduler", "inventory", "analytics", "exports", "webhooks",
        "gateway-internal", "profiles", "recommendations", "email",
    ]  # fmt: skip
    state = {
        name: {
            "instances": rng.randint(2, 16),
            "cpu": rng.random(),
            "mem_mb": rng.randint(200, 4000),
            "rps": rng.uniform(10, 3000),
            "p50_ms": rng.uniform(2, 30),
            "p99_ms": rng.uniform(40, 400),
            "errors": rng.randint(0, 50),
        }
        for name in names
    }
    documents = []
    ts = 1_764_600_000
    for _ in range(count):
        ts += 5
        services = []
        for name, figures in state.items():
            figures["cpu"] = min(1.0, max(0.0, figures["cpu"] + rng.gauss(0, 0.05)))
            figures["rps"] = max(0.0, figures["rps"] * rng.uniform(0.9, 1.1))
            figures["p50_ms"] = max(1.0, figures["p50_ms"] * rng.uniform(0.9, 1.1))
            figures["p99_ms"] = max(10.0, figures["p99_ms"] * rng.uniform(0.85, 1.15))
            figures["errors"] += rng.randint(0, 3)
            services.append(
                {
                    "name": name,
                    "status": "degraded" if figures["p99_ms"] > 350 else "ok",
                    "version": "2.14.1",
                    "region": "eu-west-1",
                    "instances": figures["instances"],
                    "cpu": round(figures["cpu"], 3),
                    "mem_mb": figures["mem_mb"],
                    "rps": round(figures["rps"], 1),
                    "p50_ms": round(figures["p50_ms"], 2),
                    "p99_ms": round(figures["p99_ms"], 2),
                    "errors": figures["errors"],
                    "updated": ts - rng.randint(0, 4),
                }
            )
        document = {"type": "status", "cluster": "prod-eu", "ts": ts, "services": services}
        documents.append(json.dumps(document).encode())
    return documents


# -- encoders: each returns a fresh function bound to fresh state --------------------------------


def plain() -> Encoder:
    return lambda message: encode_frame(Opcode.TEXT, message)


def shared(
    window_bits: int = 15, *, threshold: int = 0, level: int = 1, mem_level: int = 5
) -> Callable[[], Encoder]:
    def make() -> Encoder:
        deflater = SharedDeflater(
            window_bits, threshold=threshold, level=level, mem_level=mem_level
        )
        return lambda message: deflater.frame(Opcode.TEXT, message)

    return make


def shared_fresh(
    window_bits: int = 15, *, level: int = 1, mem_level: int = 5
) -> Callable[[], Encoder]:
    """Each message on its own with a new compressor each time: the alternative to a full flush."""

    def make() -> Encoder:
        def encode(message: bytes) -> bytes:
            compressor = zlib.compressobj(level, zlib.DEFLATED, -window_bits, mem_level)
            data = (compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
            return encode_frame(Opcode.TEXT, data, compressed=True)

        return encode

    return make


def dedicated(
    window_bits: int, *, threshold: int = 0, level: int = 3, mem_level: int = 4
) -> Callable[[], Encoder]:
    def make() -> Encoder:
        deflater = DedicatedDeflater(
            window_bits, threshold=threshold, level=level, mem_level=mem_level
        )
        return lambda message: deflater.frame(Opcode.TEXT, message)

    return make


def websockets_default() -> Encoder:
    """The frames ``websockets`` sends with its default permessage-deflate settings."""
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.frames import Frame
    from websockets.frames import Opcode as WebsocketsOpcode

    extension = PerMessageDeflate(False, False, 12, 12, {"memLevel": 5})

    def encode(message: bytes) -> bytes:
        frame = extension.encode(Frame(WebsocketsOpcode.TEXT, message))
        return encode_frame(Opcode.TEXT, frame.data, compressed=frame.rsv1)

    return encode


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Result:
    wire: float  # bytes per message, frame header included
    micros: float  # CPU µs per message


def measure(make: Callable[[], Encoder], trace: Sequence[bytes], rounds: int) -> Result:
    """Run ``trace`` through fresh encoders ``rounds`` times and return the cost per message."""
    return measure_all([make], trace, rounds)[0]


def measure_all(
    makers: Sequence[Callable[[], Encoder]], trace: Sequence[bytes], rounds: int
) -> list[Result]:
    """Run ``trace`` through fresh encoders of each kind, ``rounds`` times in turn.

    The machine may be busy: the time is this thread's CPU time, taken for every 50 messages,
    and each stretch counts its fastest round. Every round starts afresh, so that a dedicated
    deflater is in the same state at the same point of every round, and the kinds take turns,
    so that a busy spell slows all of them alike.
    """
    wires = [sum(len(frame) for frame in map(make(), trace)) for make in makers]
    chunks = [trace[start : start + 50] for start in range(0, len(trace), 50)]
    best = [[float("inf")] * len(chunks) for _ in makers]
    clock = time.thread_time_ns
    gc.disable()
    try:
        for _ in range(rounds):
            for kind, make in enumerate(makers):
                encode = make()
                times = best[kind]
                for number, chunk in enumerate(chunks):
                    start = clock()
                    for message in chunk:
                        encode(message)
                    times[number] = min(times[number], clock() - start)
    finally:
        gc.enable()
    return [
        Result(wire / len(trace), sum(times) / 1000 / len(trace))
        for wire, times in zip(wires, best, strict=True)
    ]


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def wire_table(traces: dict[str, list[bytes]], rounds: int) -> str:
    configs: list[tuple[str, Callable[[], Encoder]]] = [
        ("off", plain),
        ("shared (defaults: level 1, memLevel 5, threshold 128)", shared(threshold=128)),
        ("shared, threshold 0", shared()),
        ("shared, threshold 0, level 3", shared(level=3)),
        ("shared, threshold 0, level 6", shared(level=6)),
        ("shared, threshold 0, memLevel 8", shared(mem_level=8)),
        ("shared, threshold 0, a new compressor per message", shared_fresh()),
        ("shared, threshold 0, 9-bit window negotiated", shared(9)),
        ("shared, threshold 0, 9-bit window negotiated, memLevel 8", shared(9, mem_level=8)),
        ("dedicated 9 bits (level 3, memLevel 4)", dedicated(9)),
        ("dedicated 10 bits", dedicated(10)),
        ("dedicated 11 bits", dedicated(11)),
        ("dedicated 12 bits (defaults: level 3, memLevel 4, threshold 0)", dedicated(12)),
        ("dedicated 12 bits, level 1", dedicated(12, level=1)),
        ("dedicated 12 bits, level 6", dedicated(12, level=6)),
        ("dedicated 12 bits, memLevel 3", dedicated(12, mem_level=3)),
        ("dedicated 12 bits, memLevel 5", dedicated(12, mem_level=5)),
        ("dedicated 12 bits, threshold 128", dedicated(12, threshold=128)),
        ("dedicated 13 bits", dedicated(13)),
        ("dedicated 15 bits, memLevel 8", dedicated(15, mem_level=8)),
        ("websockets' defaults (12 bits, memLevel 5, level 6)", websockets_default),
    ]
    columns = [
        measure_all([make for _, make in configs], trace, rounds) for trace in traces.values()
    ]
    rows = []
    for number, (label, _) in enumerate(configs):
        row: list[object] = [label]
        for results in columns:
            result, off = results[number], results[0]
            saved = 100 * (1 - result.wire / off.wire)
            row += [f"{result.wire:.1f} ({saved:.0f}% saved)", f"{result.micros:.1f}"]
        rows.append(row)
    headers = ["mode"]
    for name in traces:
        headers += [f"{name}: B/message", f"{name}: µs/message"]
    return table(headers, rows)


def threshold_table(trace: list[bytes], rounds: int) -> str:
    """Bytes saved and µs spent per message, by message size.

    Shared mode compresses each message on its own. Dedicated mode compresses the whole trace in
    order, as a room member's connection does, and each message counts in its size band.
    """
    bands = [(0, 64), (64, 96), (96, 128), (128, 160), (160, 201)]
    deflater = DedicatedDeflater(12)
    in_context = [
        len(encode_frame(Opcode.TEXT, message)) - len(deflater.frame(Opcode.TEXT, message))
        for message in trace
    ]
    rows = []
    for low, high in bands:
        members = [n for n, message in enumerate(trace) if low <= len(message) < high]
        if not members:
            continue
        part = [trace[n] for n in members]
        off, level_1, level_6 = measure_all([plain, shared(), shared(level=6)], part, rounds)
        size = sum(map(len, part)) / len(part)
        dedicated_saved = sum(in_context[n] for n in members) / len(members)
        rows.append(
            (
                f"{low}-{high - 1} B",
                len(part),
                f"{off.micros:.2f}",
                f"{off.wire - level_1.wire:.1f} ({(off.wire - level_1.wire) / size:.0%})",
                f"{level_1.micros:.2f}",
                f"{off.wire - level_6.wire:.1f}",
                f"{level_6.micros:.2f}",
                f"{dedicated_saved:.1f} ({dedicated_saved / size:.0%})",
            )
        )
    headers = [
        "message size",
        "messages",
        "off: µs",
        "shared level 1: B saved",
        "µs",
        "shared level 6: B saved",
        "µs",
        "dedicated 12 bits level 3, in context: B saved",
    ]
    return table(headers, rows)


# -- memory --------------------------------------------------------------------------------------

_MEMORY_CHILD = r"""
import asyncio, gc, json, struct, sys, zlib
sys.path.insert(0, ".")
from benchmarks.compression import chat_trace
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp_wsapp.frames import DedicatedDeflater, Opcode

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

class Protocol:  # what aiohttp's queue asks of the HTTP protocol
    _reading_paused = False
    def pause_reading(self): pass
    def resume_reading(self): pass

def client_frame(payload):  # final, RSV1, text, masked with a zero key
    size = len(payload)
    length = bytes([0x80 | size]) if size < 126 else bytes([0xFE]) + size.to_bytes(2, "big")
    return b"\xc1" + length + bytes(4) + payload

kind, window_bits, mem_level, level, messages = sys.argv[1:]
window_bits, mem_level, level, messages = map(int, (window_bits, mem_level, level, messages))
trace = chat_trace(messages)
compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
frames = [client_frame((compressor.compress(m) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4])
          for m in trace]
loop = asyncio.new_event_loop()
gc.collect()
before = rss()
held = []
for _ in range(1000):
    if kind == "deflater":
        deflater = DedicatedDeflater(window_bits, threshold=0, level=level, mem_level=mem_level)
        for message in trace:
            deflater.frame(Opcode.TEXT, message)
        held.append(deflater)
    elif kind.startswith("reader"):
        queue = WebSocketDataQueue(Protocol(), 2**30, loop=loop)  # never stalls
        reader = WebSocketReader(queue, 2**22 + 1, compress=kind == "reader", decode_text=True)
        for frame in frames:
            reader.feed_data(frame)
        assert len(queue._buffer) == len(frames)
        queue._buffer.clear()
        held.append((queue, reader))
gc.collect()
print(json.dumps((rss() - before) / 1000))
"""


def memory_per_connection(
    kind: str, messages: int, window_bits: int = 15, mem_level: int = 8, level: int = 1
) -> float:
    """Bytes of RSS per connection's ``kind``, with 1,000 of them in a child process."""
    output = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, kind, str(window_bits), str(mem_level), str(level),
         str(messages)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return float(output)


def memory_table() -> str:
    """The RSS of a dedicated deflater after one message, and once its window is full."""
    none = memory_per_connection("none", 0)
    rows = []
    configs = [(9, 4, 3), (10, 4, 3), (11, 4, 3), (12, 3, 3), (12, 4, 3), (12, 5, 6), (13, 4, 3),
               (15, 8, 3)]  # fmt: skip
    for window_bits, mem_level, level in configs:
        one = memory_per_connection("deflater", 1, window_bits, mem_level, level)
        full = memory_per_connection("deflater", 1000, window_bits, mem_level, level)
        formula = (1 << (window_bits + 2)) + (1 << (mem_level + 9))
        label = f"{window_bits} bits, memLevel {mem_level}, level {level}"
        if (window_bits, mem_level) == (12, 4):
            label += " (defaults)"
        elif level == 6:
            label += " (websockets' defaults)"
        rows.append(
            (
                label,
                f"{(one - none) / 1024:.1f}",
                f"{(full - none) / 1024:.1f}",
                f"{formula / 1024:.0f}",
            )
        )
    headers = ["dedicated deflater", "KiB after 1 message", "KiB after 1,000 (120 KB)"]
    return table([*headers, "zlib's own estimate, KiB"], rows)


def reader_table() -> str:
    """The RSS of aiohttp's WebSocketReader (and its queue), with and without deflate."""
    none = memory_per_connection("none", 0)
    rows = [
        (
            "deflate not negotiated, idle",
            f"{(memory_per_connection('reader-plain', 0) - none) / 1024:.1f}",
        )
    ]
    for messages, label in ((0, "idle"), (1, "after 1 message"), (1000, "after 1,000 (120 KB)")):
        used = memory_per_connection("reader", messages)
        rows.append((f"deflate negotiated, {label}", f"{(used - none) / 1024:.1f}"))
    return table(["aiohttp's WebSocketReader", "KiB per connection"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller trace, one round")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 15
    traces = {
        "chat": chat_trace(500 if args.quick else 5000),
        "status 4 KiB": status_trace(20 if args.quick else 200),
    }
    sizes = {name: sum(map(len, trace)) / len(trace) for name, trace in traces.items()}
    print(f"zlib {zlib.ZLIB_RUNTIME_VERSION}; mean message sizes: "
          + ", ".join(f"{name} {size:.0f} B" for name, size in sizes.items()))  # fmt: skip
    print("\n## Bytes on the wire and CPU per message\n")
    print(wire_table(traces, rounds))
    print("\n## Where to start compressing: chat messages by size, each on its own\n")
    print(threshold_table(traces["chat"], rounds))
    print("\n## Memory per dedicated connection (RSS, 1,000 deflaters)\n")
    print(memory_table())
    print("\n## Memory of aiohttp's incoming side per connection (RSS, 1,000 readers)\n")
    print(reader_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
