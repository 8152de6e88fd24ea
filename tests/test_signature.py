"""Which ``message`` handlers are called as ``handler(conn, message, unregister)``, without sockets.

The rule (``Connection.on``): a handler that takes a third positional parameter without a default,
or ``*args``, gets ``unregister``; any other gets ``(conn, message)``. ``self`` of a bound method
does not count, nor do the arguments a ``functools.partial`` already holds; a
``functools.wraps``-decorated function counts as the function it wraps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiohttp_wsapp.events import wants_unregister

# -- plain functions ----------------------------------------------------------------------------


def test_function_of_conn_and_message_does_not_want_unregister() -> None:
    """A function of two parameters is called with two arguments."""

    def handler(conn: Any, message: Any) -> None: ...

    assert not wants_unregister(handler)


def test_function_with_a_third_parameter_wants_unregister() -> None:
    """A function of three parameters is called with ``unregister`` too."""

    def handler(conn: Any, message: Any, unregister: Any) -> None: ...

    assert wants_unregister(handler)


def test_third_parameter_with_a_default_does_not_want_unregister() -> None:
    """A third parameter with a default is left to its default."""

    def handler(conn: Any, message: Any, unregister: Any = None) -> None: ...

    assert not wants_unregister(handler)


def test_positional_only_third_parameter_wants_unregister() -> None:
    """A positional-only third parameter counts."""

    def handler(conn: Any, message: Any, unregister: Any, /) -> None: ...

    assert wants_unregister(handler)


def test_keyword_only_third_parameter_does_not_want_unregister() -> None:
    """A keyword-only parameter is not positional: ``unregister`` is never passed by name."""

    def handler(conn: Any, message: Any, *, unregister: Any) -> None: ...

    assert not wants_unregister(handler)


def test_var_positional_wants_unregister() -> None:
    """``*args`` takes whatever is passed, ``unregister`` included."""

    def handler(conn: Any, *args: Any) -> None: ...

    assert wants_unregister(handler)


def test_var_keyword_does_not_want_unregister() -> None:
    """``**kwargs`` takes no positional argument."""

    def handler(conn: Any, message: Any, **kwargs: Any) -> None: ...

    assert not wants_unregister(handler)


def test_coroutine_function_with_a_third_parameter_wants_unregister() -> None:
    """An ``async def`` handler follows the same rule."""

    async def handler(conn: Any, message: Any, unregister: Any) -> None: ...

    assert wants_unregister(handler)


# -- lambdas ------------------------------------------------------------------------------------


def test_lambda_of_conn_and_message_does_not_want_unregister() -> None:
    """A lambda of two parameters is called with two arguments."""
    assert not wants_unregister(lambda conn, message: None)


def test_lambda_with_a_third_parameter_wants_unregister() -> None:
    """A lambda of three parameters is called with ``unregister`` too."""
    assert wants_unregister(lambda conn, message, unregister: None)


def test_lambda_with_var_positional_wants_unregister() -> None:
    """A lambda of ``*args`` takes ``unregister`` too."""
    assert wants_unregister(lambda *args: None)


# -- methods ------------------------------------------------------------------------------------


class Handlers:
    def of_two(self, conn: Any, message: Any) -> None: ...

    def of_three(self, conn: Any, message: Any, unregister: Any) -> None: ...

    @classmethod
    def class_of_three(cls, conn: Any, message: Any, unregister: Any) -> None: ...


def test_bound_method_of_conn_and_message_does_not_want_unregister() -> None:
    """``self`` is bound already: it is not the third parameter."""
    assert not wants_unregister(Handlers().of_two)


def test_bound_method_with_a_third_parameter_wants_unregister() -> None:
    """A bound method of three parameters besides ``self`` is called with ``unregister``."""
    assert wants_unregister(Handlers().of_three)


def test_classmethod_with_a_third_parameter_wants_unregister() -> None:
    """``cls`` is bound already, like ``self``."""
    assert wants_unregister(Handlers.class_of_three)


# -- partial objects ----------------------------------------------------------------------------


def test_partial_leaving_conn_and_message_does_not_want_unregister() -> None:
    """The arguments a partial holds are not counted."""

    def handler(room: str, conn: Any, message: Any) -> None: ...

    assert not wants_unregister(functools.partial(handler, "lobby"))


def test_partial_leaving_three_parameters_wants_unregister() -> None:
    """Three parameters left after the partial's own arguments take ``unregister``."""

    def handler(room: str, conn: Any, message: Any, unregister: Any) -> None: ...

    assert wants_unregister(functools.partial(handler, "lobby"))


def test_partial_binding_the_third_parameter_by_keyword_does_not_want_unregister() -> None:
    """A keyword the partial holds gives the third parameter a default."""

    def handler(conn: Any, message: Any, unregister: Any) -> None: ...

    assert not wants_unregister(functools.partial(handler, unregister=None))


# -- callable instances -------------------------------------------------------------------------


class OfTwo:
    def __call__(self, conn: Any, message: Any) -> None: ...


class OfThree:
    def __call__(self, conn: Any, message: Any, unregister: Any) -> None: ...


def test_callable_instance_of_conn_and_message_does_not_want_unregister() -> None:
    """An instance is called through its ``__call__``, whose ``self`` is not counted."""
    assert not wants_unregister(OfTwo())


def test_callable_instance_with_a_third_parameter_wants_unregister() -> None:
    """An instance whose ``__call__`` takes three parameters gets ``unregister``."""
    assert wants_unregister(OfThree())


# -- decorated functions ------------------------------------------------------------------------


def passing_through(function: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator whose wrapper takes ``*args``, and names what it wraps (``functools.wraps``)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    return wrapper


def test_wrapped_function_of_conn_and_message_does_not_want_unregister() -> None:
    """The wrapped function's parameters count, not the wrapper's ``*args``."""

    @passing_through
    def handler(conn: Any, message: Any) -> None: ...

    assert not wants_unregister(handler)


def test_wrapped_function_with_a_third_parameter_wants_unregister() -> None:
    """A wrapped function of three parameters gets ``unregister`` through its wrapper."""

    @passing_through
    def handler(conn: Any, message: Any, unregister: Any) -> None: ...

    assert wants_unregister(handler)


def test_wrapper_without_functools_wraps_wants_unregister() -> None:
    """Without ``functools.wraps`` only the wrapper's ``*args`` is seen."""

    def handler(conn: Any, message: Any) -> None: ...

    def wrapper(*args: Any) -> None:
        handler(*args[:2])

    assert wants_unregister(wrapper)


# -- builtins -----------------------------------------------------------------------------------


def test_builtin_without_a_signature_does_not_want_unregister() -> None:
    """``max`` has two forms and no signature to read: it is called with two arguments."""
    assert not wants_unregister(max)


def test_builtin_of_one_parameter_does_not_want_unregister() -> None:
    """``len(obj, /)``: fewer than three positional parameters."""
    assert not wants_unregister(len)


def test_builtin_with_three_parameters_wants_unregister() -> None:
    """A builtin's signature, when it has one, follows the same rule: ``setattr(obj, name,
    value, /)``."""
    assert wants_unregister(setattr)
