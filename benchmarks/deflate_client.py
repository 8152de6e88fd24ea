"""A load client that speaks permessage-deflate as browsers do: the figures a browser user sees.

Every browser offers permessage-deflate (RFC 7692); the picows load client (``client.py``) cannot.
This one is a lean asyncio protocol, in the style of ``client.LeanOpener``, that does what
Chromium does (``net/websockets/websocket_deflater.cc``, ``websocket_deflate_stream.cc``):

- it offers ``Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits``;
- it compresses every text message, however short, with zlib at ``Z_DEFAULT_COMPRESSION``
  (level 6), memLevel 8, a raw deflate window of the negotiated ``client_max_window_bits``
  (15 if the server named none; at least 9), ``Z_SYNC_FLUSH`` at the end of each message and
  the four octets ``00 00 ff ff`` removed; the compressor keeps its context from one message to
  the next unless the server asked for ``client_no_context_takeover``;
- it masks every frame with a random key and sets RSV1 on compressed ones;
- it inflates each RSV1 message with one decompressor per connection (window of the negotiated
  ``server_max_window_bits``), made on the first compressed message and kept, after appending
  ``00 00 ff ff``, and checks that the result is the message it expects.

With ``"deflate": false`` in a step it offers nothing, so the same client measures the same
servers with compression off.

One shortcut keeps the client's core from being the limit: the connections of a run all send
the same messages in the same order, so each one's compressor would produce the very same bytes.
One compressor makes them, once, for all of them (:class:`Script`); the server receives exactly
what it would from as many browsers. A connection that sends anything else (the broadcast
command) gets a compressor of its own from then on.

Run by the runner as ``python -m benchmarks.deflate_client --url ... --server-pid ... --plan ...``
with steps ``echo`` and ``broadcast`` (see their functions; a broadcast step can measure the
server's memory first); it prints one JSON list with one result per step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from benchmarks.client import (
    CLOSE_FRAME,
    CLOSE_TIMEOUT,
    CONNECT_PARALLELISM,
    HANDSHAKE_TIMEOUT,
    CpuMeter,
    Step,
    measure_window,
    percentile,
    run_plan,
    upgrade_request,
)
from benchmarks.common import TOOK_PREFIX, broadcast_command, message, raise_nofile_limit

__all__ = ["STEPS", "Agreement", "BrowserPeer", "Encoder", "Script", "main"]

#: The offer Chromium and Firefox send.
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
#: Chromium's zlib settings for its deflater (``deflateInit2``).
LEVEL = zlib.Z_DEFAULT_COMPRESSION
MEM_LEVEL = 8
#: RFC 7692 §7.2.1: the tail a sender removes and a receiver appends before inflating.
TAIL = b"\x00\x00\xff\xff"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
TOOK = TOOK_PREFIX.encode()

PeerT = TypeVar("PeerT", bound="BrowserPeer")


@dataclass(frozen=True)
class Agreement:
    """What the server's ``101`` answer negotiated (RFC 7692 §7.1)."""

    deflate: bool = False
    server_bits: int = 15
    client_bits: int = 15
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    header: str = ""


def parse_agreement(head: bytes) -> Agreement:
    """The permessage-deflate parameters in a ``101`` response's headers, if any."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"sec-websocket-extensions":
            continue
        header = value.decode().strip()
        extension, *params = (part.strip() for part in header.split(";"))
        if extension != "permessage-deflate":
            raise ConnectionError(f"unexpected extension {header!r}")
        found: dict[str, str] = {}
        for param in params:
            key, _, number = param.partition("=")
            found[key.strip()] = number.strip().strip('"')
        return Agreement(
            deflate=True,
            server_bits=int(found.get("server_max_window_bits") or 15),
            client_bits=int(found.get("client_max_window_bits") or 15),
            server_no_context_takeover="server_no_context_takeover" in found,
            client_no_context_takeover="client_no_context_takeover" in found,
            header=header,
        )
    return Agreement()


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR-ed with the repeated 4-byte ``key`` (RFC 6455 §5.3)."""
    size = len(payload)
    if not size:
        return payload
    keys = int.from_bytes((key * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(payload, "little") ^ keys).to_bytes(size, "little")


def client_frame(opcode: int, payload: bytes, *, compressed: bool = False) -> bytes:
    """One final, masked client frame (random key); RSV1 set when ``compressed``."""
    first = 0x80 | opcode | (0x40 if compressed else 0)
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    key = os.urandom(4)
    return header + key + mask(payload, key)


class Encoder:
    """Turns one connection's outgoing text messages into frames, as Chromium does.

    Without deflate negotiated, plain masked frames. With it, one compressor with context
    (or a fresh one for each message under ``client_no_context_takeover``); an empty message
    is the single octet ``00``, as Chromium sends it.
    """

    def __init__(self, agreement: Agreement) -> None:
        self.deflate = agreement.deflate
        self.bits = max(agreement.client_bits, 9)
        self.reset = agreement.client_no_context_takeover
        self.compressor: Any = None

    def frame(self, text: bytes) -> bytes:
        """The frame of one text message."""
        if not self.deflate:
            return client_frame(TEXT, text)
        if self.compressor is None or self.reset:
            self.compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -self.bits, MEM_LEVEL)
        if not text:
            return client_frame(TEXT, b"\x00", compressed=True)
        data = self.compressor.compress(text) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        return client_frame(TEXT, data[: -len(TAIL)], compressed=True)


class Script:
    """The messages every connection of a run sends, in order, as frames built once for all.

    ``texts[i]`` is the i-th message, ``frame(i)`` its frame from one :class:`Encoder`, which
    is what each connection's own encoder would make, as every connection sends the same
    messages in the same order.
    """

    def __init__(self, name: str, agreement: Agreement) -> None:
        self.name = name
        self.encoder = Encoder(agreement)
        self.texts: list[bytes] = []
        self.frames: list[bytes] = []

    def frame(self, index: int) -> bytes:
        """The frame of message ``index``, made (with every one before it) on first use."""
        frames = self.frames
        while len(frames) <= index:
            text = message(self.name, len(frames)).encode()
            self.texts.append(text)
            frames.append(self.encoder.frame(text))
        return frames[index]


@dataclass
class Run:
    """What the connections of one step share: the request, the offer, the scripts."""

    url: str
    deflate: bool
    script_name: str = "text32"
    request: bytes = b""
    scripts: dict[Agreement, Script] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.request = upgrade_request(self.url, OFFER if self.deflate else "")

    def script(self, agreement: Agreement) -> Script:
        """The script of the connections that negotiated ``agreement``."""
        script = self.scripts.get(agreement)
        if script is None:
            script = self.scripts[agreement] = Script(self.script_name, agreement)
        return script


class BrowserPeer(asyncio.Protocol):
    """One connection: the handshake, the frame layer, deflate; messages to ``on_message``."""

    def __init__(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.agreement = Agreement()
        self.script: Script | None = None
        self.sent = 0
        self.own: Encoder | None = None
        self.inflater: Any = None
        self.fragments: list[bytes] = []
        self.compressed = False
        self.closing = False
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        """Read the ``101`` answer, then frames."""
        if self.buffer:
            data, self.buffer = self.buffer + data, b""
        if not self.upgraded:
            head, separator, data = data.partition(b"\r\n\r\n")
            if not separator:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                return
            self.upgraded = True
            self.agreement = parse_agreement(head)
            self.script = self.run.script(self.agreement)
            self.ready.set_result(None)
        end, pos = len(data), 0
        while end - pos >= 2:
            first, length, start = data[pos], data[pos + 1] & 0x7F, pos + 2
            if length == 126:
                start = pos + 4
                if end < start:
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
            elif length == 127:
                start = pos + 10
                if end < start:
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
            if end - start < length:
                break
            pos = start + length
            self.on_frame(first, data[start:pos])
        if pos < end:
            self.buffer = data[pos:]

    def on_frame(self, first: int, payload: bytes) -> None:
        """One server frame: data to ``on_message`` once whole and inflated, control answered."""
        opcode = first & 0x0F
        if opcode >= CLOSE:
            self.on_control(opcode, payload)
            return
        if opcode:  # the first frame of a message
            self.compressed = bool(first & 0x40)
            if first & 0x80:
                self.deliver(payload)
                return
            self.fragments = [payload]
            return
        self.fragments.append(payload)
        if first & 0x80:
            whole, self.fragments = b"".join(self.fragments), []
            self.deliver(whole)

    def deliver(self, payload: bytes) -> None:
        """Inflate a compressed message, then hand it on with its size on the wire."""
        if not self.compressed:
            self.on_message(payload, len(payload))
            return
        if self.inflater is None:
            self.inflater = zlib.decompressobj(-self.agreement.server_bits)
        self.on_message(self.inflater.decompress(payload + TAIL), len(payload))

    def on_control(self, opcode: int, payload: bytes) -> None:
        """Answer a ping; answer a close and drop the connection."""
        transport = self.transport
        assert transport is not None
        if opcode == PING:
            transport.write(client_frame(PONG, payload))
        elif opcode == CLOSE:
            if not self.closing:
                self.closing = True
                transport.write(CLOSE_FRAME)
            transport.close()

    def on_message(self, payload: bytes, wire: int) -> None:
        """One whole message (inflated) and its payload's size on the wire; subclasses act."""

    def send_next(self) -> None:
        """Send the next message of the run's script."""
        assert self.transport is not None
        assert self.script is not None
        assert self.own is None
        self.transport.write(self.script.frame(self.sent))
        self.sent += 1

    def send_text(self, text: str) -> None:
        """Send a message of this connection's own, with a compressor of its own from now on.

        A fresh compressor's output refers to nothing sent before it, so the server inflates it
        whatever came first; the script's later frames would not, so no more of those follow.
        """
        assert self.transport is not None
        if self.own is None:
            self.own = Encoder(self.agreement)
        self.transport.write(self.own.frame(text.encode()))

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection ended (after the closing handshake, or not)."""
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    async def close(self) -> None:
        """Send a close frame; wait (bounded) until the server drops the connection."""
        transport = self.transport
        if transport is None or self.lost.done():
            return
        if not self.closing:
            self.closing = True
            transport.write(CLOSE_FRAME)
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT)
        except TimeoutError:
            transport.abort()


async def connect_many(url: str, factory: Callable[[], PeerT], count: int) -> list[PeerT]:
    """Open ``count`` upgraded connections, at most ``CONNECT_PARALLELISM`` handshakes at once."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    gate = asyncio.Semaphore(CONNECT_PARALLELISM)

    async def one() -> PeerT:
        async with gate:
            _, peer = await loop.create_connection(factory, host, port)
            await asyncio.wait_for(peer.ready, HANDSHAKE_TIMEOUT)
            return peer

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_all(peers: list[Any]) -> None:
    """Close every connection."""
    await asyncio.gather(*(peer.close() for peer in peers))


def negotiated(peers: Sequence[BrowserPeer]) -> str:
    """The extension the server accepted, as it wrote it ("none" when it accepted none)."""
    return peers[0].agreement.header or "none" if peers else "none"


@dataclass
class EchoRun(Run):
    """State shared by the connections of one echo run."""

    running: bool = True
    measuring: bool = False
    outstanding: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    wire_bytes: int = 0
    wrong: int = 0
    #: With a ``rate``: the least time between two messages of one connection, else 0.
    interval_ns: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)


class EchoPeer(BrowserPeer):
    """Sends the script's next message once the previous one came back (and checks it).

    Paced (``interval_ns``), it waits until that long after the previous message was sent.
    """

    run: EchoRun

    def __init__(self, run: EchoRun) -> None:
        super().__init__(run)
        self.received = 0
        self.sent_at = 0

    def fire(self) -> None:
        """Send one message, unless the run is over."""
        if not self.run.running:
            return
        self.run.outstanding += 1
        self.sent_at = time.perf_counter_ns()
        self.send_next()

    def on_message(self, payload: bytes, wire: int) -> None:
        """Record the round trip and send the next message, unless the run is over."""
        run = self.run
        now = time.perf_counter_ns()
        assert self.script is not None
        if payload != self.script.texts[self.received]:
            run.wrong += 1
        self.received += 1
        run.outstanding -= 1
        if run.measuring:
            run.latencies_ns.append(now - self.sent_at)
            run.wire_bytes += wire
        if not run.running:
            if run.outstanding == 0:
                run.drained.set()
            return
        wait_ns = self.sent_at + run.interval_ns - now
        if wait_ns > 0:
            asyncio.get_running_loop().call_later(wait_ns / 1e9, self.fire)
            return
        run.outstanding += 1
        self.sent_at = now
        self.send_next()


async def echo_step(
    url: str, _socketio: bool, cpu: CpuMeter, step: dict[str, Any]
) -> dict[str, Any]:
    """Round trips of the ``message`` script on ``connections`` connections, one in flight each.

    With ``rate`` (messages/s for all connections together) each connection is paced to its
    share of it, so the server is measured below saturation.

    The result adds ``wire_bytes``, the mean payload size of an echo as the server sent it.
    """
    run = EchoRun(url, step["deflate"], step["message"])
    if step.get("rate"):
        run.interval_ns = int(step["connections"] / step["rate"] * 1e9)
    peers = await connect_many(url, lambda: EchoPeer(run), step["connections"])
    loop = asyncio.get_running_loop()
    for index, peer in enumerate(peers):  # paced connections start spread over one interval
        loop.call_later(index * run.interval_ns / len(peers) / 1e9, peer.fire)
    result = await measure_window(cpu, step["warmup"], step["duration"], run)
    run.running = False
    if run.outstanding == 0:
        run.drained.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.drained.wait(), CLOSE_TIMEOUT)
    await close_all(peers)
    if run.wrong:
        raise RuntimeError(f"{run.wrong} echoes were not the message sent")
    latencies = sorted(run.latencies_ns)
    count = len(latencies)
    return result | {
        "messages_per_s": count / result["seconds"],
        "p50_us": percentile(latencies, 0.50) / 1e3,
        "p99_us": percentile(latencies, 0.99) / 1e3,
        "wire_bytes": run.wire_bytes / count if count else float("nan"),
        "negotiated": negotiated(peers),
    }


@dataclass
class Tally:
    """One broadcast (or one round of echoes) as the connections receive it."""

    expected: int
    payload: bytes
    took: float | None = None
    received: int = 0
    wrong: int = 0
    wire_bytes: int = 0
    last_ns: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BroadcastPeer(BrowserPeer):
    """Counts and checks what arrives; the control connection also gets the server's time."""

    def __init__(self, run: Run, current: list[Tally]) -> None:
        super().__init__(run)
        self.current = current

    def on_message(self, payload: bytes, wire: int) -> None:
        """Count the payload, or keep the server's time of the call."""
        now = time.perf_counter_ns()
        tally = self.current[-1]
        if payload.startswith(TOOK):
            tally.took = float(payload[len(TOOK) :])
        else:
            tally.received += 1
            tally.wire_bytes += wire
            tally.last_ns = now
            if payload != tally.payload:
                tally.wrong += 1
        if tally.received == tally.expected and tally.took is not None:
            tally.done.set()


async def expect(tally: Tally, current: list[Tally]) -> None:
    """Wait until every connection received what ``tally`` expects; fail on a wrong one."""
    await asyncio.wait_for(tally.done.wait(), HANDSHAKE_TIMEOUT)
    current.remove(tally)
    if tally.wrong:
        raise RuntimeError(f"{tally.wrong} connections received something else")


async def broadcast_once(
    control: BroadcastPeer, current: list[Tally], count: int, name: str, seq: int
) -> dict[str, float]:
    """Have the server broadcast ``message(name, seq)``; its time, end to end, client CPU."""
    tally = Tally(expected=count, payload=message(name, seq).encode())
    current.append(tally)
    start, client_start = time.perf_counter_ns(), time.process_time()
    control.send_text(broadcast_command(name, seq))
    await expect(tally, current)
    return {
        "server_s": tally.took or 0.0,
        "end_to_end_s": (tally.last_ns - start) / 1e9,
        "client_s": time.process_time() - client_start,
        "wire_bytes": tally.wire_bytes / count,
    }


async def echo_everyone(peers: list[BroadcastPeer], current: list[Tally]) -> None:
    """Each connection sends the script's first message; wait until every echo is back.

    The control connection, which has sent commands of its own, sends it with its own
    compressor.
    """
    script = peers[0].script
    assert script is not None
    script.frame(0)  # builds the first message
    text = script.texts[0]
    tally = Tally(expected=len(peers), payload=text, took=0.0)
    current.append(tally)
    for peer in peers:
        if peer.own is None:
            peer.send_next()
        else:
            peer.send_text(text.decode())
    await expect(tally, current)


async def broadcast_step(
    url: str, _socketio: bool, cpu: CpuMeter, step: dict[str, Any]
) -> dict[str, Any]:
    """For each of ``payloads``, time ``repeats`` broadcasts to ``connections`` connections.

    Each broadcast sends the next message of the payload's sequence. The result has, by
    payload name, lists ``server_s``, ``end_to_end_s``, ``client_s`` and ``wire_bytes`` and the
    CPU shares over its measured broadcasts; ``other_cpu`` is the most other work took in any.
    With ``"memory": true``, the same connections first measure the server's memory (see
    :func:`read_memory`), whose figures the result adds.
    """
    count = step["connections"]
    current: list[Tally] = []
    before = await warm_up(url, cpu, step, current) if step.get("memory") else 0
    run = Run(url, step["deflate"])
    peers = await connect_many(url, lambda: BroadcastPeer(run, current), count)
    await asyncio.sleep(step["settle"])
    seq = itertools.count(1)
    result: dict[str, Any] = {"negotiated": negotiated(peers)}
    if step.get("memory"):
        result |= await read_memory(cpu, peers, current, step, before, seq)
    by_payload = {}
    for name in step["payloads"]:
        for _ in range(step["warmup_repeats"]):
            await broadcast_once(peers[0], current, count, name, next(seq))
            await asyncio.sleep(step["gap"])
        timings: list[dict[str, float]] = []
        cpu.start()
        for _ in range(step["repeats"]):
            timings.append(await broadcast_once(peers[0], current, count, name, next(seq)))
            await asyncio.sleep(step["gap"])
        columns = {key: [timing[key] for timing in timings] for key in timings[0]}
        by_payload[name] = cpu.stop() | columns
    await close_all(peers)
    other = max((part["other_cpu"] for part in by_payload.values()), default=0.0)
    return result | {"payloads": by_payload, "other_cpu": other}


async def warm_up(url: str, cpu: CpuMeter, step: dict[str, Any], current: list[Tally]) -> int:
    """50 connections, one echo each, closed; after ``settle`` s, return the server's RSS."""
    warm = Run(url, step["deflate"])
    peers = await connect_many(url, lambda: BroadcastPeer(warm, current), 50)
    await echo_everyone(peers, current)
    await close_all(peers)
    await asyncio.sleep(step["settle"])
    return int(cpu.server.memory_info().rss)


async def read_memory(
    cpu: CpuMeter,
    peers: list[BroadcastPeer],
    current: list[Tally],
    step: dict[str, Any],
    before: int,
    seq: Iterator[int],
) -> dict[str, float]:
    """Server RSS growth per connection, over ``before`` (the RSS after :func:`warm_up`).

    ``opened``: the connections just opened (and ``settle`` s passed); ``after``: then the
    server broadcast ``memory_broadcasts`` messages of ``memory_payload`` to all; ``echoed``:
    then each connection sent one 32-byte text and got it back, which makes a server that
    negotiated deflate keep a decompressor for it. The server runs with ``--broadcast``; each
    reading follows ``settle`` seconds of quiet.
    """
    count = len(peers)
    opened = cpu.server.memory_info().rss
    for _ in range(step["memory_broadcasts"]):
        await broadcast_once(peers[0], current, count, step["memory_payload"], next(seq))
    await asyncio.sleep(step["settle"])
    after = cpu.server.memory_info().rss
    await echo_everyone(peers, current)
    await asyncio.sleep(step["settle"])
    echoed = cpu.server.memory_info().rss
    return {
        "rss_before": before,
        "rss_opened": opened,
        "rss_after": after,
        "rss_echoed": echoed,
        "opened_kib_per_conn": (opened - before) / count / 1024,
        "after_kib_per_conn": (after - before) / count / 1024,
        "echoed_kib_per_conn": (echoed - before) / count / 1024,
    }


STEPS: dict[str, Step] = {"echo": echo_step, "broadcast": broadcast_step}


def main() -> None:
    """Parse the command line, run the plan, print the results as JSON."""
    parser = argparse.ArgumentParser(description="permessage-deflate load client")
    parser.add_argument("--url", required=True)
    parser.add_argument("--framing", choices=("plain",), default="plain")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--plan", required=True, help="a JSON list of steps")
    args = parser.parse_args()
    raise_nofile_limit()
    plan = json.loads(args.plan)
    print(json.dumps(asyncio.run(run_plan(args.url, False, args.server_pid, plan, STEPS))))


if __name__ == "__main__":
    main()
