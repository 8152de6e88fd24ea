"""What a callback's signature says about the positional arguments it takes.

One reading of signatures serves two purposes: which ``message`` handlers take ``unregister`` as
a third argument (:func:`.events.wants_unregister`), and which callbacks cannot be called as they
will be (checked when the endpoint and its settings are made, not per connection).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Positional", "check_callback", "positional"]


@dataclass(frozen=True, slots=True)
class Positional:
    """How many positional arguments a callable takes."""

    required: int
    """Positional parameters without a default."""
    most: int | None
    """The most it takes; ``None`` with ``*args``."""
    required_keywords: tuple[str, ...] = ()
    """Keyword-only parameters without a default: no positional call can fill them."""

    def accepts(self, count: int) -> bool:
        """Tell whether a call with ``count`` positional arguments (and no keywords) binds."""
        if self.required_keywords:
            return False
        return self.required <= count and (self.most is None or count <= self.most)


def positional(function: Callable[..., Any]) -> Positional | None:
    """Read ``function``'s signature; ``None`` when Python cannot read it (some builtins)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    required = most = 0
    variadic = False
    keywords: list[str] = []
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            variadic = True
        elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            most += 1
            if parameter.default is parameter.empty:
                required += 1
        elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
            keywords.append(parameter.name)
    return Positional(required, None if variadic else most, tuple(keywords))


def check_callback(name: str, function: object, arguments: str) -> None:
    """Raise :exc:`TypeError` unless ``function`` is callable with the positional ``arguments``.

    ``arguments`` names them, comma-separated: ``"connection, request, handshake_results"``.
    A callable whose signature cannot be read is accepted.
    """
    if not callable(function):
        raise TypeError(f"{name} must be callable, not {type(function).__name__}")
    reading = positional(function)
    count = len(arguments.split(","))
    if reading is not None and not reading.accepts(count):
        try:
            signature = f"{inspect.signature(function)}"
        except (TypeError, ValueError):  # pragma: no cover - read above
            signature = "?"
        raise TypeError(
            f"{name} is called as {name}({arguments}): {count} positional argument"
            f"{'s' if count > 1 else ''}, which its signature {signature} does not take"
        )
