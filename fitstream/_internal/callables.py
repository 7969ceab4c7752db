"""Checks of the callables a user hands over: arity, and factories passed without calling them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["check_arity", "check_not_a_class", "mark_factory"]

_FACTORY_MARK = "__fitstream_factory__"

F = TypeVar("F")


def mark_factory(factory: F, usage: str) -> F:
    """Mark ``factory`` so that passing it uncalled (``tap(best_model)``) shows ``usage``.

    Example:
        >>> def make(): ...
        >>> make = mark_factory(make, "tap(make())")
        >>> check_arity(make, 1, func="tap", arg="fn")
        Traceback (most recent call last):
        ...
        TypeError: tap: 'fn' got the factory itself; call it first: tap(make())
    """
    setattr(factory, _FACTORY_MARK, usage)
    return factory


def _factory_hint(fn: object) -> str | None:
    """The hint for a FitStream factory passed where what it makes was expected, else None."""
    try:
        own = vars(fn)  # the object's own attributes: a class's mark is not its instances'
    except TypeError:
        return None
    hint = own.get(_FACTORY_MARK)
    return hint if isinstance(hint, str) else None


def check_not_a_class(value: object, *, func: str, arg: str, what: str) -> None:
    """Refuse a class where an instance of it belongs (``nn.MSELoss`` for ``nn.MSELoss()``).

    Example:
        >>> check_not_a_class(dict, func="f", arg="loss_fn", what="a loss function")
        Traceback (most recent call last):
        ...
        TypeError: f: 'loss_fn' is the class dict, not a loss function: pass an instance, ...
    """
    if isinstance(value, type):
        raise TypeError(
            f"{func}: '{arg}' is the class {value.__name__}, not {what}: pass an instance, "
            f"such as {value.__name__}(...)"
        )


def check_arity(
    fn: Callable[..., Any], n_args: int, *, func: str, arg: str, of: str = "the event"
) -> None:
    """Refuse a callable that cannot be called with ``n_args`` positional arguments.

    A FitStream factory (``best_model``, ``validation_loss``, ``print_keys``...) passed
    uncalled gets a hint to call it first. Callables whose signature Python cannot read
    (some built-ins) are accepted as they are. ``of`` says what the arguments are.

    Example:
        >>> check_arity(lambda a, b: None, 1, func="tap", arg="fn")
        Traceback (most recent call last):
        ...
        TypeError: tap: 'fn' must accept 1 positional argument(s) (the event), ...
    """
    hint = _factory_hint(fn)
    if hint is not None:
        raise TypeError(f"{func}: '{arg}' got the factory itself; call it first: {hint}")
    # A module's __call__ takes anything; what it accepts is its forward's signature.
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(n_args))
    except TypeError as exc:
        what = "no arguments" if n_args == 0 else f"{n_args} positional argument(s) ({of})"
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        raise TypeError(
            f"{func}: '{arg}' must accept {what}, but {name}{signature} cannot ({exc})"
        ) from None
