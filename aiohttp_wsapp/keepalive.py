"""The heartbeat: ping quiet peers, drop those that do not answer.

It costs nothing per message, and no timer per connection. The receive loop marks
:attr:`Keepalive.heard`; one timer per endpoint (:class:`Heartbeat`) goes over its connections
every ``heartbeat`` seconds, reads each mark once and pings the peers not heard from since the
round before. A timer per connection would be armed and cancelled once per connection, each
time a push into the event loop's heap of timers, which the connections' cancelled timers
deepen: about 4 % of a handshake (issue 19).
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

__all__ = ["Heartbeat", "Keepalive"]

logger = logging.getLogger("aiohttp_wsapp")

_HEARTBEAT_PING: Final = encode_frame(Opcode.PING, b"")


class Heartbeat:
    """The heartbeat rounds of one endpoint: every ``interval`` seconds, a round over its
    connections, and half a round later, the check of the pongs.

    In a round, a peer heard from since the round before (a whole message, a pong) is left
    alone; any other is pinged, and dropped (close code 1006) at the check if no pong came. A
    connection joins the rounds heard from: its first ping comes one to two rounds after its
    establishment, none sooner than ``interval`` seconds. The timer runs while the endpoint has
    connections in the rounds.
    """

    __slots__ = ("_checking", "_interval", "_loop", "_pinged", "_timer", "members")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self.members: set[Keepalive] = set()
        """The connections in the rounds; one leaves them with ``members.discard``."""
        self._pinged: list[Keepalive] = []
        self._checking = False  # whether the next tick is the check of a round's pongs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, keepalive: Keepalive) -> None:
        """Take ``keepalive`` into the rounds."""
        self.members.add(keepalive)
        loop = asyncio.get_running_loop()
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._checking = True  # a new round half a round from now: nobody is pinged yet
            self._timer = loop.call_later(self._interval / 2, self._tick)

    def stop(self) -> None:
        """Stop the timer (the endpoint's application stopped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        if self._checking:
            pinged, self._pinged = self._pinged, []
            for keepalive in pinged:
                keepalive.check_pong()
        else:
            members = self.members
            self._pinged = [keepalive for keepalive in tuple(members) if keepalive.ping_if_quiet()]
        self._checking = not self._checking
        if not self.members and not self._pinged:
            self._timer = None
            return
        assert self._loop is not None
        self._timer = self._loop.call_later(self._interval / 2, self._tick)


class Keepalive:
    """One connection in its endpoint's heartbeat rounds (``heartbeat`` ``None``: none), from
    :meth:`join_rounds` (the connection's establishment) until :meth:`leave_rounds`.

    The base of the connection's receive loop (:class:`.receiving.Receiver`), which hears the
    peer: one object per connection for both, none of its own. Nothing happens once the
    closing started.
    """

    __slots__ = ("_closing", "_heartbeat", "_ping_sent_at", "_sender", "heard", "latency")

    def join_rounds(self, heartbeat: Heartbeat | None, closing: Closing, sender: Sender) -> None:
        """Enter ``heartbeat``'s rounds, heard from (``None``: there are none)."""
        self.heard = True
        """Whether a whole message or a pong came in since the last round (or the
        establishment, before the first)."""
        self.latency: float | None = None
        """Seconds: the round trip of the last answered ping; ``None`` before one."""
        self._heartbeat = heartbeat
        self._closing = closing
        self._sender = sender
        self._ping_sent_at: float | None = None
        if heartbeat is not None:
            heartbeat.add(self)

    def leave_rounds(self) -> None:
        """Leave the rounds."""
        if self._heartbeat is not None:
            self._heartbeat.members.discard(self)

    def pong_received(self) -> None:
        """Take the peer's pong: the answer to the round's ping, or else a sign of life."""
        self.heard = True
        sent_at = self._ping_sent_at
        if sent_at is not None:
            self.latency = time.perf_counter() - sent_at
            self._ping_sent_at = None

    def ping_if_quiet(self) -> bool:
        """Ping the peer if it was not heard from since the last round; tell whether it was
        pinged."""
        if self._closing.state is not OPEN:
            return False
        if self.heard:
            self.heard = False
            return False
        if self._sender.cannot_send():  # the socket is going: bound its flush
            self._closing.start(WSCloseCode.ABNORMAL_CLOSURE, "")
            return False
        # perf_counter, not loop.time(): uvloop's has millisecond resolution, cached per turn.
        self._ping_sent_at = time.perf_counter()
        self._sender.write(_HEARTBEAT_PING)
        return True

    def check_pong(self) -> None:
        """Half a round after the ping: drop the peer if neither the pong nor a message came."""
        if self._closing.state is not OPEN or self._ping_sent_at is None:
            return
        self._ping_sent_at = None
        if self.heard:  # a whole message came in since: the pong is behind it
            return
        logger.info("%r dropped: no pong to the heartbeat's ping", self._sender.owner)
        self._closing.drop(WSCloseCode.ABNORMAL_CLOSURE, HEARTBEAT_TIMEOUT, cause=HEARTBEAT_TIMEOUT)
