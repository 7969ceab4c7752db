"""Composing stages: :func:`pipe`, and the two call forms every stage factory supports.

A stage factory such as ``take(3)`` returns a *stage*, a function from a stream of events to
a stream of events. Every factory in FitStream also accepts the stream as an optional first
positional argument, in which case it applies the stage at once::

    take(events, 3)          # a stream, like pipe(events, take(3))
    early_stop(events, key="val_loss", patience=10)

:func:`stage_factory` gives a factory that second form; :func:`upstream` lets a stage close
the stream it consumes on every exit path, so closing a pipeline closes its source.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from ._internal.hints import forward_hint
from .events import Stage

__all__ = [
    "StageFactory",
    "check_stages",
    "check_stream",
    "is_stream",
    "pipe",
    "stage_factory",
    "upstream",
]

P = ParamSpec("P")
T = TypeVar("T")


def is_stream(obj: object) -> bool:
    """Tell whether ``obj`` looks like a stream of events rather than a stage argument.

    Strings, bytes and mappings are iterable but are never streams (``early_stop("val_loss",
    ...)`` takes a key, not a stream of characters); nor are tensors and arrays. A list or
    tuple is a stream when it is empty or its first item is an event dict, so a list of keys
    given by mistake (``progress(["train_loss"])``) reaches the factory's own argument check
    instead of being taken for the stream. Iterators are not looked into.

    Example:
        >>> is_stream([{"step": 1}]), is_stream("val_loss"), is_stream({"step": 1})
        (True, False, False)
        >>> is_stream(["train_loss"]), is_stream(iter(["anything"]))
        (False, True)
    """
    if not isinstance(obj, Iterable) or isinstance(obj, str | bytes | bytearray | Mapping):
        return False
    if hasattr(obj, "ndim"):  # a tensor or an array: a value, not a stream of events
        return False
    if isinstance(obj, Sequence) and len(obj) > 0:
        return isinstance(obj[0], Mapping)
    return True


def check_stream(obj: object, *, func: str, arg: str = "events") -> None:
    """Refuse an argument that is not a stream of events (see :func:`is_stream`).

    Example:
        >>> check_stream(3, func="collect")
        Traceback (most recent call last):
        ...
        TypeError: collect: 'events' must be an iterable of event dicts, got int: 3
    """
    if not is_stream(obj):
        raise TypeError(
            f"{func}: '{arg}' must be an iterable of event dicts, got {type(obj).__name__}: "
            f"{obj!r:.80}"
        )


class StageFactory(Protocol, Generic[P]):
    """A stage factory that can also be called with the stream as its first argument."""

    @overload
    def __call__(
        self, events: Iterable[dict[str, Any]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Iterator[dict[str, Any]]: ...

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Stage: ...


def stage_factory(factory: Callable[P, Stage]) -> StageFactory[P]:
    """Let ``factory(stream, *args, **kwargs)`` mean ``factory(*args, **kwargs)(stream)``.

    The factory's own argument checks still run before anything is pulled from the stream.

    Example:
        >>> @stage_factory
        ... def double(key: str) -> Stage:
        ...     def stage(events):
        ...         for ev in events:
        ...             yield {**ev, key: 2 * ev[key]}
        ...     return stage
        >>> [ev["x"] for ev in double([{"x": 1}, {"x": 2}], "x")]
        [2, 4]
        >>> [ev["x"] for ev in pipe([{"x": 3}], double("x"))]
        [6]
    """
    signature = _signature(factory)

    @functools.wraps(factory)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if args and is_stream(args[0]) and not _own_empty_list(signature, args, kwargs):
            events, *rest = args
            return factory(*rest, **kwargs)(events)
        if signature is not None:
            _check_call(factory.__name__, signature, args, kwargs)
        return factory(*args, **kwargs)

    return wrapper


def _binds(signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _own_empty_list(
    signature: inspect.Signature | None, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> bool:
    """Whether an empty first list is the factory's own argument, not an empty stream.

    ``prune([], "val_loss", study=s)`` passes an empty list of trials: the rest of the
    arguments cannot be the factory's alone, but all of them can, so the factory gets the list
    (and refuses it in its own words).
    """
    first = args[0]
    if signature is None or not isinstance(first, Sequence) or len(first) > 0:
        return False
    return not _binds(signature, args[1:], kwargs) and _binds(signature, args, kwargs)


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # pragma: no cover - every FitStream factory has one
        return None


def _check_call(
    name: str, signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """Explain a call that fits neither form: a stream that is not one, or arguments swapped."""
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        first = args[0] if args else None
        if isinstance(first, Iterable) and not isinstance(first, str | bytes | Mapping):
            raise TypeError(
                f"{name}: the first argument looks like a stream but is not one of event "
                f"dicts: {type(first).__name__}: {first!r:.60}. A stream is an iterable of "
                f"dicts such as [{{'step': 1, 'train_loss': 0.5}}, ...]; call as "
                f"{name}(events, ...) or pipe(events, {name}(...))"
            ) from exc
        stream = next((arg for arg in args[1:] if is_stream(arg)), None)
        if stream is not None:
            raise TypeError(
                f"{name}: the stream must come first: {name}(events, ...), got it as argument "
                f"{list(args).index(stream) + 1}"
            ) from exc


def pipe(stream: Iterable[dict[str, Any]], *stages: Stage) -> Iterator[dict[str, Any]]:
    """Apply ``stages`` to ``stream`` from left to right and return the resulting stream.

    ``pipe(s, f, g)`` is ``g(f(s))``. Nothing is pulled from ``stream`` until the result is
    iterated. Each stage must be callable; this is checked at once.

    Args:
        stream: The source of events, e.g. :func:`fitstream.epoch_stream`'s result.
        *stages: Functions from a stream of events to a stream of events.

    Returns:
        An iterator over the events of the last stage.

    Raises:
        TypeError: If ``stream`` is not iterable or a stage is not callable (at the call), or
            a stage returns something that is not iterable (naming the stage).

    Example:
        >>> from fitstream import take
        >>> events = ({"step": i} for i in range(1, 100))
        >>> [ev["step"] for ev in pipe(events, take(3))]
        [1, 2, 3]
    """
    check_stream(stream, func="pipe", arg="stream")
    check_stages(stages, func="pipe")
    result: Iterable[dict[str, Any]] = stream
    for position, stage in enumerate(stages, start=1):
        staged = stage(result)
        if not isinstance(staged, Iterable):
            name = getattr(stage, "__qualname__", None) or type(stage).__name__
            raise TypeError(
                f"pipe: stage {position} ({name}) must return an iterable of events, got "
                f"{type(staged).__name__}: {staged!r:.60}; a stage is a function from a stream "
                f"to a stream (did it forget to return or yield?)"
            )
        result = forward_hint(result, staged)  # e.g. take(n)'s n, for progress()
    return iter(result)


def check_stages(stages: Iterable[object], *, func: str) -> None:
    """Refuse a stage that is not callable, naming its 1-based position.

    Example:
        >>> check_stages([print, 3], func="pipe")
        Traceback (most recent call last):
        ...
        TypeError: pipe: stage 2 must be callable (a stage such as take(3)), got int: 3
    """
    for position, stage in enumerate(stages, start=1):
        if not callable(stage):
            raise TypeError(
                f"{func}: stage {position} must be callable (a stage such as take(3)), "
                f"got {type(stage).__name__}: {stage!r:.80}"
            )


@contextmanager
def upstream(events: Iterable[T]) -> Iterator[Iterator[T]]:
    """Iterate ``events`` and close it when the block exits, however it exits.

    Stages use it so that closing (or abandoning) the end of a pipeline closes the source,
    which for a Lightning stream ends training at once.

    Example:
        >>> def numbers():
        ...     try:
        ...         yield from range(10)
        ...     finally:
        ...         print("source closed")
        >>> with upstream(numbers()) as it:
        ...     next(it)
        0
        source closed
    """
    iterator = iter(events)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if callable(close):
            close()
