"""The handlers of a connection's events: their registry, and the calls of ``error`` and ``finish``.

``message`` handlers are called by the connection's receive loop itself, the one hot path; the
registry keeps them in a tuple it reads once per message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar, overload

from .signatures import positional

__all__ = [
    "EVENTS",
    "Emitter",
    "Events",
    "H",
    "Handler",
    "Registration",
    "call_each",
    "event_name",
    "wants_unregister",
]

logger = logging.getLogger("aiohttp_wsapp")

Handler = Callable[..., Any]
"""An event handler: a plain function or a coroutine function."""

H = TypeVar("H", bound=Handler)

_EVENT_NAMES: Final = {
    "message": "message",
    "finish": "finish",
    "close": "finish",
    "error": "error",
}
_LATE_FINISHERS: Final[set[asyncio.Task[None]]] = set()
"""The tasks of ``finish`` handlers registered after the finish, while they run."""
EVENTS: Final = ("message", "finish", "error")
"""The events, by their own names (``close`` is another name of ``finish``)."""


def event_name(event: str) -> str:
    """Return the name of ``event`` (``close`` is ``finish``).

    :raises ValueError: there is no such event.
    """
    try:
        return _EVENT_NAMES[event]
    except (KeyError, TypeError):
        raise ValueError(f"unknown event {event!r}: use message, finish, close or error") from None


def wants_unregister(handler: Handler) -> bool:
    """Tell whether a ``message`` handler takes a third positional ``unregister`` argument."""
    # Registering runs once per connection: reading the code object costs far less than
    # inspect.signature, and says the same for plain functions and bound methods.
    if type(handler) is types.FunctionType:
        function, bound = handler, 0
    elif type(handler) is types.MethodType and type(handler.__func__) is types.FunctionType:
        function, bound = handler.__func__, 1
    else:
        return _signature_wants_unregister(handler)
    if hasattr(function, "__wrapped__"):  # functools.wraps: the signature is the wrapped one's
        return _signature_wants_unregister(handler)
    code = function.__code__
    if code.co_flags & inspect.CO_VARARGS:
        return True
    defaults = function.__defaults__
    return code.co_argcount - bound - (len(defaults) if defaults else 0) >= 3


def _signature_wants_unregister(handler: Handler) -> bool:
    reading = positional(handler)
    return reading is not None and (reading.most is None or reading.required >= 3)


async def call_each(registrations: Iterable[Registration], *args: Any) -> None:
    """Call the handlers in order, awaiting each coroutine before the next."""
    for registration in registrations:
        result = registration.handler(*args)
        if inspect.isawaitable(result):
            await result


class Registration:
    """One handler registered for one event; calling it unregisters the handler."""

    __slots__ = ("event", "events", "handler", "wants_unregister")

    def __init__(self, events: Events, event: str, handler: Handler) -> None:
        self.events = events
        self.event = event
        self.handler = handler
        self.wants_unregister = event == "message" and wants_unregister(handler)

    def __call__(self) -> None:
        self.events.remove(self)


class Events:
    """The handlers of one connection, event by event, in registration order.

    ``owner`` is the connection: the first argument of every handler. Once :meth:`close` ran, a
    ``finish`` handler registered runs at once (soon), and others are not kept.
    """

    __slots__ = ("_closed", "_done", "_finished", "_owner", "error", "finish", "message")

    def __init__(self, owner: Callable[[], object]) -> None:
        # ``owner``: a weak reference to the connection. Weakly: the connection holds its
        # registry, and a cycle would leave every finished connection, with its request,
        # response and socket, to the garbage collector.
        self._owner = owner
        self.message: tuple[Registration, ...] = ()
        """The ``message`` handlers."""
        self.finish: tuple[Registration, ...] = ()
        """The ``finish`` handlers."""
        self.error: tuple[Registration, ...] = ()
        """The ``error`` handlers."""
        self._closed = False
        self._done = False  # whether the finish handlers returned
        self._finished: asyncio.Future[None] | None = None  # made when first asked for

    @property
    def owner(self) -> object:
        """The connection whose events these are (``None`` once it is gone)."""
        return self._owner()

    @property
    def finished(self) -> asyncio.Future[None]:
        """Done once the ``finish`` handlers returned (made when first asked for: most
        connections are never waited for)."""
        finished = self._finished
        if finished is None:
            finished = self._finished = asyncio.get_running_loop().create_future()
            if self._done:
                finished.set_result(None)
        return finished

    def on(
        self, event: str | None, handler: Handler | None, /, **handlers: Handler
    ) -> Callable[[], None] | Callable[[H], H] | list[Callable[[], None]]:
        """Register handlers as :meth:`Connection.on` does."""
        if event is None:
            if handler is not None:
                raise TypeError("on() takes an event with a handler, or keyword handlers")
            unregisters: list[Callable[[], None]] = [
                self.add(name, each) for name, each in handlers.items()
            ]
            return unregisters
        if handlers:
            raise TypeError("on() takes an event with a handler, or keyword handlers")
        if handler is None:
            name = event

            def decorator(function: H) -> H:
                self.add(name, function)
                return function

            event_name(event)
            return decorator
        return self.add(event, handler)

    def add(self, event: str, handler: Handler) -> Registration:
        """Register ``handler`` for ``event``; return its registration.

        :raises ValueError: there is no such event.
        :raises TypeError: ``handler`` is not callable.
        """
        name = _EVENT_NAMES.get(event) if type(event) is str else None
        if name is None:
            name = event_name(event)  # a str subclass, or no such event (which raises)
        if not callable(handler):
            raise TypeError(f"a {event} handler must be callable, not {type(handler).__name__}")
        registration = Registration(self, name, handler)
        if not self._closed:  # attributes by name, not setattr(): the store is specialised
            if name == "message":
                self.message = (*self.message, registration)
            elif name == "finish":
                self.finish = (*self.finish, registration)
            else:
                self.error = (*self.error, registration)
        elif name == "finish":
            self._run_late_finish(registration)
        # else: a finished connection has no more messages or errors to dispatch.
        return registration

    def off(self, event: str, handler: Handler) -> None:
        """Remove every registration of ``handler`` for ``event``."""
        name = event_name(event)
        setattr(self, name, tuple(r for r in getattr(self, name) if r.handler is not handler))

    def remove(self, registration: Registration) -> None:
        """Remove ``registration``, if it is still registered."""
        handlers: tuple[Registration, ...] = getattr(self, registration.event)
        if registration in handlers:
            setattr(self, registration.event, tuple(r for r in handlers if r is not registration))

    def close(self) -> tuple[Registration, ...]:
        """Forget every handler; return the ``finish`` handlers, which are to run now.

        The registrations refer back to this registry: dropping them breaks the cycles, so that
        a finished connection is freed at once rather than by the garbage collector.
        """
        self._closed = True
        finishers = self.finish
        self.message = self.finish = self.error = ()
        return finishers

    async def report(self, handlers: tuple[Registration, ...], exc: BaseException) -> None:
        """Call the ``error`` handlers with ``exc``; log what they raise."""
        try:
            await call_each(handlers, self.owner, exc)
        except Exception:
            logger.exception("an error handler raised for %r", self.owner)

    async def run_finish(
        self,
        finishers: tuple[Registration, ...],
        first: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Await ``first()`` (the end of the connection's own tasks), then call the ``finish``
        handlers one after another, then mark :attr:`finished` done.

        One that raises is logged. They run in a task of their own, shielded: aiohttp may cancel
        the request handler when the peer goes away, and finish handlers must still run to
        completion.
        """
        task = asyncio.get_running_loop().create_task(self._run_finishers(finishers, first))
        await asyncio.shield(task)

    async def _run_finishers(
        self, finishers: tuple[Registration, ...], first: Callable[[], Awaitable[None]] | None
    ) -> None:
        try:
            if first is not None:
                await first()
            owner = self.owner
            for registration in finishers:
                await self._run_finish_handler(registration, owner)
        finally:
            self.mark_finished()

    def mark_finished(self) -> None:
        """Mark :attr:`finished` done: the finish handlers returned, or there were none."""
        self._done = True
        if self._finished is not None:
            self._finished.set_result(None)

    async def _run_finish_handler(self, registration: Registration, owner: object) -> None:
        try:
            await call_each((registration,), owner)
        except Exception:
            logger.exception("a finish handler raised for %r", owner)

    def _run_late_finish(self, registration: Registration) -> None:
        # The connection goes in strongly: whoever registered it may let go of it before the
        # task runs.
        task = asyncio.get_running_loop().create_task(
            self._run_finish_handler(registration, self.owner)
        )
        _LATE_FINISHERS.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_LATE_FINISHERS.discard)


class Emitter:
    """The event emitter's side of a connection: :meth:`on` and :meth:`off`.

    A subclass sets ``_events`` to its :class:`Events` before anyone registers.
    """

    _events: Events

    @overload
    def on(self, event: str, handler: Handler, /) -> Callable[[], None]: ...
    @overload
    def on(self, event: str, /) -> Callable[[H], H]: ...
    @overload
    def on(self, /, **handlers: Handler) -> list[Callable[[], None]]: ...

    def on(
        self, event: str | None = None, handler: Handler | None = None, /, **handlers: Handler
    ) -> Callable[[], None] | Callable[[H], H] | list[Callable[[], None]]:
        """Register event handlers.

        ``on(event, handler)`` registers one handler and returns ``unregister()``, which may be
        called any number of times. ``on(message=h1, finish=h2)`` registers several and returns
        their unregisters in argument order. ``on(event)`` is a decorator that registers the
        function and returns it unchanged.

        A ``message`` handler whose signature has a third positional parameter without a default
        (or ``*args``) is called as ``handler(conn, message, unregister)``.

        :raises ValueError: the event is not ``message``, ``finish``, ``close`` or ``error``.
        :raises TypeError: a handler is not callable, or the arguments mix the forms.
        """
        if handler is not None and not handlers and event is not None:
            return self._events.add(event, handler)  # the usual form, straight to the registry
        return self._events.on(event, handler, **handlers)

    def off(self, event: str, handler: Handler) -> None:
        """Remove every registration of ``handler`` for ``event``."""
        self._events.off(event, handler)
