"""The heartbeat of a connection: ping a quiet peer, drop one that does not answer.

It costs nothing per message: the receive loop marks :attr:`Keepalive.heard`, and one timer reads
the mark once per round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from aiohttp import WSCloseCode

from .closing import OPEN, Closing
from .frames import Opcode, encode_frame
from .sending import Sender
from .stats import HEARTBEAT_TIMEOUT

__all__ = ["Keepalive"]

logger = logging.getLogger("aiohttp_wsapp")

_HEARTBEAT_PING: Final = encode_frame(Opcode.PING, b"")


class Keepalive:
    """Every ``heartbeat`` seconds, ping a peer not heard from since the last round.

    A peer that sends no pong within half that time is dropped (close code 1006). ``heartbeat``
    ``None`` turns it off. Nothing happens once the closing started.
    """

    __slots__ = (
        "_closing",
        "_heartbeat",
        "_loop",
        "_ping_sent_at",
        "_sender",
        "_timer",
        "heard",
        "latency",
    )

    def __init__(self, heartbeat: float | None, closing: Closing, sender: Sender) -> None:
        self.heard = False
        """Whether a whole message or a pong came in since the last round."""
        self.latency: float | None = None
        """Seconds: the round trip of the last answered ping; ``None`` before one."""
        self._heartbeat = heartbeat
        self._closing = closing
        self._sender = sender
        self._loop = asyncio.get_running_loop()
        self._ping_sent_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start the next round, while the connection is open."""
        if self._heartbeat is not None and self._closing.state is OPEN:
            self._timer = self._loop.call_later(self._heartbeat, self._round)

    def stop(self) -> None:
        """Stop the rounds."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pong_received(self) -> None:
        """Take the peer's pong: the answer to the round's ping, or else a sign of life."""
        sent_at = self._ping_sent_at
        if sent_at is None:
            self.heard = True  # unsolicited, or the answer to an application's ping
            return
        self.latency = time.perf_counter() - sent_at
        self._ping_sent_at = None
        self.heard = False
        if self._timer is not None:
            self._timer.cancel()
        self.start()

    def _round(self) -> None:
        """Ping a peer not heard from since the last round; drop it if no pong follows."""
        if self._closing.state is not OPEN:
            return
        if self.heard:
            self.heard = False
            self.start()
            return
        if self._sender.cannot_send():  # the socket is going: bound its flush
            self._closing.start(WSCloseCode.ABNORMAL_CLOSURE, "")
            return
        assert self._heartbeat is not None
        # perf_counter, not loop.time(): uvloop's has millisecond resolution, cached per turn.
        self._ping_sent_at = time.perf_counter()
        self._timer = self._loop.call_later(self._heartbeat / 2, self._pong_missed)
        self._sender.write(_HEARTBEAT_PING)

    def _pong_missed(self) -> None:
        if self._closing.state is not OPEN:
            return
        if self.heard:  # a whole message came in since: the pong is behind it
            self._ping_sent_at = None
            self._round()
            return
        logger.info("%r dropped: no pong to the heartbeat's ping", self._sender.owner)
        self._closing.drop(WSCloseCode.ABNORMAL_CLOSURE, HEARTBEAT_TIMEOUT, cause=HEARTBEAT_TIMEOUT)
