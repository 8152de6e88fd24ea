"""The load client: one process, driven by a JSON plan, results as JSON.

Connections are picows ones, except in the handshake scenario, where a minimal asyncio
protocol opens and closes them (see :class:`LeanOpener`).

Run by the runner as::

    python -m benchmarks.client --url ws://127.0.0.1:8765/ --framing plain \\
        --server-pid 1234 --plan '[{"kind": "echo", "connections": 50, ...}]'

It never offers permessage-deflate (picows does not implement it), so no server compresses;
``deflate_client.py`` is the load client that does, as browsers do.
Each step of the plan is one scenario; the client prints one JSON list with one result per step.
The server's CPU use over each measured window is read with psutil from ``--server-pid``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks.common import BROADCAST_COMMAND, TOOK_PREFIX, raise_nofile_limit
from benchmarks.machine import busy_seconds

__all__ = ["CpuMeter", "Step", "main", "measure_window", "percentile", "run_plan"]

#: One WebSocket frame to send: its opcode and payload.
Frame = tuple[WSMsgType, bytes]
PeerT = TypeVar("PeerT", bound="Peer")

SOCKETIO_BINARY_HEADER = b'451-["echo",{"_placeholder":true,"num":0}]'
CONNECT_PARALLELISM = 100
CLOSE_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 60.0


def encode_message(payload: bytes, *, binary: bool, socketio: bool) -> tuple[Frame, ...]:
    """The frames that carry one echo request, in the framing the server speaks."""
    if not socketio:
        return ((WSMsgType.BINARY if binary else WSMsgType.TEXT, payload),)
    if binary:
        return ((WSMsgType.TEXT, SOCKETIO_BINARY_HEADER), (WSMsgType.BINARY, payload))
    return ((WSMsgType.TEXT, b'42["echo","' + payload + b'"]'),)


class Peer(WSListener):
    """One client connection: speaks the server's framing and hands each reply to ``on_reply``.

    With Socket.IO framing it answers the engine.io open packet by joining the default
    namespace, answers pings, and skips the header frame that precedes binary data.
    ``ready`` is done once messages can be sent.
    """

    def __init__(self, socketio: bool) -> None:
        self.socketio = socketio
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        """Keep the transport; a plain WebSocket is ready at once."""
        self.transport = transport
        if not self.socketio:
            self.ready.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Dispatch one frame: data to ``on_reply``, protocol frames to their handlers."""
        msg_type = frame.msg_type
        if msg_type == WSMsgType.BINARY or (msg_type == WSMsgType.TEXT and not self.socketio):
            self.on_reply(frame)
        elif msg_type == WSMsgType.TEXT:
            self.on_socketio_text(transport, frame)
        elif msg_type == WSMsgType.CLOSE and not transport.is_close_frame_sent:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_socketio_text(self, transport: WSTransport, frame: WSFrame) -> None:
        """Handle one engine.io text packet."""
        text = frame.get_payload_as_ascii_text()
        if text.startswith("42"):
            self.on_reply(frame)
        elif text == "2":
            transport.send(WSMsgType.TEXT, b"3")
        elif text.startswith("40") and not self.ready.done():
            self.ready.set_result(None)
        elif text.startswith("0"):
            transport.send(WSMsgType.TEXT, b"40")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """Fail ``ready`` if the connection ends before it."""
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected before ready"))

    def send_frames(self, frames: tuple[Frame, ...]) -> None:
        """Send one message's frames."""
        assert self.transport is not None
        for msg_type, payload in frames:
            self.transport.send(msg_type, payload)

    def on_reply(self, frame: WSFrame) -> None:
        """One echoed message (or broadcast) arrived; subclasses act on it."""

    async def close(self) -> None:
        """Start the closing handshake and wait (bounded) for the server to drop the socket."""
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(transport.wait_disconnected(), CLOSE_TIMEOUT)
        except TimeoutError:
            transport.disconnect(graceful=False)


async def connect(url: str, factory: Callable[[], PeerT]) -> PeerT:
    """Open one connection and wait until it is ready."""
    _, peer = await ws_connect(factory, url, websocket_handshake_timeout=HANDSHAKE_TIMEOUT)
    assert isinstance(peer, Peer)
    await peer.ready
    return peer  # type: ignore[return-value]


async def connect_many(url: str, factory: Callable[[], PeerT], count: int) -> list[PeerT]:
    """Open ``count`` ready connections, at most ``CONNECT_PARALLELISM`` handshakes at once."""
    gate = asyncio.Semaphore(CONNECT_PARALLELISM)

    async def one() -> PeerT:
        async with gate:
            return await connect(url, factory)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_all(peers: list[Any]) -> None:
    """Close every connection."""
    await asyncio.gather(*(peer.close() for peer in peers))


@dataclass
class CpuMeter:
    """CPU seconds used over one measured window by the server, this client and everything else.

    "other" is the machine's busy time minus the server's and the client's: the share of the
    two cores that other work on a shared machine took while this window was measured.
    """

    server: psutil.Process
    start_wall: float = 0.0
    start_server: float = 0.0
    start_client: float = 0.0
    start_busy: float = 0.0

    def start(self) -> None:
        """Begin the window."""
        self.start_wall = time.perf_counter()
        self.start_server = sum(self.server.cpu_times()[:2])
        self.start_client = time.process_time()
        self.start_busy = busy_seconds()

    def stop(self) -> dict[str, float]:
        """End the window: its seconds and each side's CPU use as a fraction of one core."""
        wall = time.perf_counter() - self.start_wall
        server = sum(self.server.cpu_times()[:2]) - self.start_server
        client = time.process_time() - self.start_client
        other = max(0.0, busy_seconds() - self.start_busy - server - client)
        return {
            "seconds": wall,
            "server_cpu": server / wall,
            "client_cpu": client / wall,
            "other_cpu": other / wall,
        }


@dataclass
class EchoRun:
    """State shared by the connections of one echo run."""

    frames: tuple[Frame, ...]
    running: bool = True
    measuring: bool = False
    outstanding: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    drained: asyncio.Event = field(default_factory=asyncio.Event)


class EchoPeer(Peer):
    """Sends the next message as soon as the previous one came back."""

    def __init__(self, socketio: bool, run: EchoRun) -> None:
        super().__init__(socketio)
        self.run = run
        self.sent_at = 0

    def fire(self) -> None:
        """Send one message."""
        self.run.outstanding += 1
        self.sent_at = time.perf_counter_ns()
        self.send_frames(self.run.frames)

    def on_reply(self, frame: WSFrame) -> None:
        """Record the round trip and send the next message, unless the run is over."""
        run = self.run
        now = time.perf_counter_ns()
        run.outstanding -= 1
        if run.measuring:
            run.latencies_ns.append(now - self.sent_at)
        if run.running:
            run.outstanding += 1
            self.sent_at = now
            self.send_frames(run.frames)
        elif run.outstanding == 0:
            run.drained.set()


def percentile(sorted_values: list[int], fraction: float) -> float:
    """The value at ``fraction`` of a sorted list (nearest rank), or NaN when it is empty."""
    if not sorted_values:
        return float("nan")
    return float(sorted_values[round(fraction * (len(sorted_values) - 1))])


async def measure_window(cpu: CpuMeter, warmup: float, duration: float, run: Any) -> dict[str, Any]:
    """Let a run warm up, then flip its ``measuring`` flag for ``duration`` seconds."""
    await asyncio.sleep(warmup)
    run.measuring = True
    cpu.start()
    await asyncio.sleep(duration)
    run.measuring = False
    return cpu.stop()


async def echo_step(
    url: str, socketio: bool, cpu: CpuMeter, step: dict[str, Any]
) -> dict[str, Any]:
    """Round trips on ``connections`` connections, one message in flight on each (``window``)."""
    size, window = step["size"], step.get("window", 1)
    run = EchoRun(encode_message(b"x" * size, binary=step["binary"], socketio=socketio))
    peers = await connect_many(url, lambda: EchoPeer(socketio, run), step["connections"])
    for peer in peers:
        for _ in range(window):
            peer.fire()
    result = await measure_window(cpu, step["warmup"], step["duration"], run)
    run.running = False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.drained.wait(), CLOSE_TIMEOUT)
    await close_all(peers)
    latencies = sorted(run.latencies_ns)
    count = len(latencies)
    result |= {
        "messages_per_s": count / result["seconds"],
        "mb_per_s": count * size / result["seconds"] / 1e6,
        "p50_us": percentile(latencies, 0.50) / 1e3,
        "p99_us": percentile(latencies, 0.99) / 1e3,
    }
    return result


@dataclass
class HandshakeRun:
    """State shared by the openers of one handshake run."""

    running: bool = True
    measuring: bool = False
    completed: int = 0


#: A client close frame (code 1000), masked with an all-zero key so it can be pre-built.
CLOSE_FRAME = bytes((0x88, 0x82, 0, 0, 0, 0)) + (1000).to_bytes(2, "big")
#: The Socket.IO "join the default namespace" packet, ``40``, as a masked text frame.
SOCKETIO_CONNECT_FRAME = bytes((0x81, 0x82, 0, 0, 0, 0)) + b"40"


def upgrade_request(url: str, extra_headers: str = "") -> bytes:
    """A complete WebSocket opening handshake request for ``url``, built once.

    ``extra_headers`` are more header lines, each ending with CRLF.
    """
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    ).encode()


def take_frame(buffer: bytes) -> tuple[bytes, bytes] | None:
    """Split one unmasked server frame off ``buffer``: (payload, rest), or None if incomplete."""
    if len(buffer) < 2:
        return None
    length, offset = buffer[1] & 0x7F, 2
    if length >= 126:
        offset = 4 if length == 126 else 10
        if len(buffer) < offset:
            return None
        length = int.from_bytes(buffer[2:offset], "big")
    if len(buffer) < offset + length:
        return None
    return buffer[offset : offset + length], buffer[offset + length :]


class LeanOpener(asyncio.Protocol):
    """One opening handshake with as little client work as possible.

    The request is pre-built, the answer is only checked for ``101``, and no frame layer runs
    but what Socket.IO needs to join its namespace. Opening connections with picows costs the
    client more CPU than it costs most servers, which would make the client the limit.
    """

    def __init__(self, request: bytes, socketio: bool) -> None:
        loop = asyncio.get_running_loop()
        self.request, self.socketio = request, socketio
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the request."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        """Wait for the 101 answer (and, for Socket.IO, the namespace join)."""
        if self.ready.done():
            return
        self.buffer += data
        if not self.upgraded:
            head, separator, self.buffer = self.buffer.partition(b"\r\n\r\n")
            if not separator:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                return
            self.upgraded = True
        if not self.socketio:
            self.ready.set_result(None)
            return
        self.join_namespace()

    def join_namespace(self) -> None:
        """Answer engine.io's open packet with ``40``; ready once the server confirms it."""
        while (frame := take_frame(self.buffer)) is not None:
            payload, self.buffer = frame
            if payload.startswith(b"40"):
                self.ready.set_result(None)
                return
            if payload.startswith(b"0") and self.transport is not None:
                self.transport.write(SOCKETIO_CONNECT_FRAME)

    def connection_lost(self, exc: Exception | None) -> None:
        """The server dropped the connection (as it should after the closing handshake)."""
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    async def close(self) -> None:
        """Send a close frame; wait (bounded) until the server drops the connection."""
        assert self.transport is not None
        self.transport.write(CLOSE_FRAME)
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT)
        except TimeoutError:
            self.transport.abort()


async def opener(url: str, socketio: bool, run: HandshakeRun) -> None:
    """Open, wait until ready, close; again and again while the run lasts."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    request = upgrade_request(url)
    while run.running:
        _, protocol = await loop.create_connection(
            lambda: LeanOpener(request, socketio), parts.hostname or "127.0.0.1", parts.port or 80
        )
        await protocol.ready
        if run.measuring:
            run.completed += 1
        await protocol.close()


async def handshake_step(
    url: str, socketio: bool, cpu: CpuMeter, step: dict[str, Any]
) -> dict[str, Any]:
    """Handshakes per second with ``openers`` concurrent open-close loops."""
    run = HandshakeRun()
    tasks = [asyncio.create_task(opener(url, socketio, run)) for _ in range(step["openers"])]
    result = await measure_window(cpu, step["warmup"], step["duration"], run)
    completed = run.completed
    run.running = False
    await asyncio.gather(*tasks)
    return result | {"handshakes_per_s": completed / result["seconds"]}


async def idle_step(
    url: str, socketio: bool, cpu: CpuMeter, step: dict[str, Any]
) -> dict[str, Any]:
    """Server RSS growth per idle connection: RSS with ``connections`` open minus RSS before."""
    ping = {"size": 32, "binary": False, "warmup": 0.0, "duration": 0.2}
    await echo_step(url, socketio, cpu, ping | {"connections": 50})
    await asyncio.sleep(step["settle"])
    before = cpu.server.memory_info().rss
    run = EchoRun(encode_message(b"x" * 32, binary=False, socketio=socketio), running=False)
    peers = await connect_many(url, lambda: EchoPeer(socketio, run), step["connections"])
    for peer in peers:
        peer.fire()
    await asyncio.wait_for(run.drained.wait(), HANDSHAKE_TIMEOUT)
    await asyncio.sleep(step["settle"])
    after = cpu.server.memory_info().rss
    await close_all(peers)
    count = step["connections"]
    return {
        "rss_before": before,
        "rss_after": after,
        "kib_per_conn": (after - before) / count / 1024,
    }


@dataclass
class BroadcastRun:
    """State shared by the connections of one broadcast."""

    expected: int
    received: int = 0
    last_ns: int = 0
    took: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check_done(self) -> None:
        """Set ``done`` once every peer got the payload and the server reported its time."""
        if self.received == self.expected and self.took is not None:
            self.done.set()


class BroadcastPeer(Peer):
    """Records when the broadcast payload arrives; the control peer also gets the timing."""

    def __init__(self, socketio: bool, runs: list[BroadcastRun]) -> None:
        super().__init__(socketio)
        self.runs = runs

    def on_reply(self, frame: WSFrame) -> None:
        """Count the payload, or keep the server's time of the call."""
        now = time.perf_counter_ns()
        run = self.runs[-1]
        text = frame.get_payload_as_ascii_text()
        if text.startswith(TOOK_PREFIX):
            run.took = float(text.removeprefix(TOOK_PREFIX))
        else:
            run.received += 1
            run.last_ns = now
        run.check_done()


async def broadcast_step(
    url: str, socketio: bool, cpu: CpuMeter, step: dict[str, Any]
) -> dict[str, Any]:
    """Time ``repeats`` broadcasts to ``connections`` peers: the server's call and end to end."""
    count = step["connections"]
    runs: list[BroadcastRun] = []
    peers = await connect_many(url, lambda: BroadcastPeer(socketio, runs), count)
    await asyncio.sleep(step["settle"])
    for _ in range(step["warmup_repeats"]):
        await broadcast_once(peers[0], runs, count)
        await asyncio.sleep(step["gap"])
    timings: list[tuple[float, float, float]] = []
    cpu.start()
    for _ in range(step["repeats"]):
        timings.append(await broadcast_once(peers[0], runs, count))
        await asyncio.sleep(step["gap"])
    result = cpu.stop()
    await close_all(peers)
    server_s, end_to_end_s, client_s = (list(column) for column in zip(*timings, strict=True))
    return result | {"server_s": server_s, "end_to_end_s": end_to_end_s, "client_s": client_s}


async def broadcast_once(
    control: BroadcastPeer, runs: list[BroadcastRun], count: int
) -> tuple[float, float, float]:
    """Trigger one broadcast; return the server's time, the end-to-end time, the client's CPU."""
    run = BroadcastRun(expected=count)
    runs.append(run)
    start, client_start = time.perf_counter_ns(), time.process_time()
    control.send_frames(((WSMsgType.TEXT, BROADCAST_COMMAND.encode()),))
    await asyncio.wait_for(run.done.wait(), HANDSHAKE_TIMEOUT)
    client = time.process_time() - client_start
    return run.took or 0.0, (run.last_ns - start) / 1e9, client


Step = Callable[[str, bool, CpuMeter, dict[str, Any]], Awaitable[dict[str, Any]]]
STEPS: dict[str, Step] = {
    "echo": echo_step,
    "handshake": handshake_step,
    "idle": idle_step,
    "broadcast": broadcast_step,
}


async def run_plan(
    url: str,
    socketio: bool,
    server_pid: int,
    plan: list[dict[str, Any]],
    steps: dict[str, Step] = STEPS,
) -> list[dict[str, Any]]:
    """Run each step of the plan against the server in turn; one result per step."""
    cpu = CpuMeter(psutil.Process(server_pid))
    return [await steps[step["kind"]](url, socketio, cpu, step) for step in plan]


def main() -> None:
    """Parse the command line, run the plan, print the results as JSON."""
    parser = argparse.ArgumentParser(description="picows load client")
    parser.add_argument("--url", required=True)
    parser.add_argument("--framing", choices=("plain", "socketio"), default="plain")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--plan", required=True, help="a JSON list of steps")
    args = parser.parse_args()
    raise_nofile_limit()
    plan = json.loads(args.plan)
    results = asyncio.run(run_plan(args.url, args.framing == "socketio", args.server_pid, plan))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
