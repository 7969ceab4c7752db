"""Stages that act on events without changing them: :func:`tap` and :func:`tick`.

Also :func:`print_keys`, a ready-made callback for :func:`tap` that prints one line per event.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from .._internal.callables import check_arity, mark_factory
from .._internal.checks import (
    check_bool,
    check_callable,
    check_non_negative_int,
    check_positive_int,
    describe,
)
from .._internal.members import is_per_member
from .._internal.values import scalar_value
from ..events import Stage
from ..pipeline import stage_factory, upstream

__all__ = ["print_keys", "tap", "tick"]


@stage_factory
def tap(fn: Callable[[dict[str, Any]], object], *, every: int = 1, start: int = 1) -> Stage:
    """Call ``fn(event)`` on selected events and pass every event on unchanged.

    Events are counted from 1 as they reach the stage; ``fn`` runs on event number ``start``
    and then on every ``every``-th event after it (``start``, ``start + every``, ...). It runs
    before the event is passed on, and whatever it returns is ignored. An exception raised by
    ``fn`` ends the stream (and closes the source) and reaches the consumer unchanged.

    Args:
        fn: The side effect, e.g. ``print``, :func:`print_keys`'s result, or a logger call.
        every: Call ``fn`` on every ``every``-th event; an int >= 1.
        start: The 1-based number of the first event ``fn`` sees; an int >= 1.

    Returns:
        A stage for :func:`fitstream.pipe`; ``tap(events, fn, ...)`` returns the stream.

    Raises:
        TypeError: ``fn`` is not callable or cannot take one argument (a factory such as
            :func:`fitstream.best_model` passed uncalled is named), or ``every``/``start`` is
            not an int.
        ValueError: ``every`` or ``start`` is below 1.

    Example:
        >>> from fitstream import pipe
        >>> events = [{"step": i} for i in range(1, 8)]
        >>> kept = list(pipe(events, tap(lambda ev: print(ev["step"]), every=3, start=2)))
        2
        5
        >>> kept == events
        True
    """
    check_callable(fn, func="tap", arg="fn")
    check_arity(fn, 1, func="tap", arg="fn")
    check_positive_int(every, func="tap", arg="every")
    check_positive_int(start, func="tap", arg="start")

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for index, event in enumerate(it, start=1):
                if index >= start and (index - start) % every == 0:
                    fn(event)
                yield event

    return stage


@stage_factory
def tick(fn: Callable[[], object]) -> Stage:
    """Call ``fn()`` (no arguments) once per event and pass the event on unchanged.

    Handy for callbacks that do not need the event, such as a learning-rate scheduler's
    ``step`` at the end of each epoch. ``fn`` runs before the event is passed on.

    Args:
        fn: A callable taking no arguments; its result is ignored.

    Returns:
        A stage for :func:`fitstream.pipe`; ``tick(events, fn)`` returns the stream.

    Raises:
        TypeError: ``fn`` is not callable, or cannot be called without arguments.

    Example:
        >>> from fitstream import pipe
        >>> calls = []
        >>> events = [{"step": 1}, {"step": 2}]
        >>> list(pipe(events, tick(lambda: calls.append("tick")))) == events
        True
        >>> calls
        ['tick', 'tick']
    """
    check_callable(fn, func="tick", arg="fn")
    check_arity(fn, 0, func="tick", arg="fn")
    return tap(lambda _event: fn())


_MAX_TEXT = 40


_LISTED_MEMBERS = 4  # up to this many members, every value is printed


def _format_members(values: list[float], precision: int) -> str:
    """Format a per-member value: all of a few members, else min, median and max of K."""
    if len(values) <= _LISTED_MEMBERS:
        return "[" + ", ".join(f"{float(v):.{precision}f}" for v in values) + "]"
    numbers = [(float(v), k) for k, v in enumerate(values) if not math.isnan(v)]
    nans = len(values) - len(numbers)
    if not numbers:
        return f"[nan in all {nans}]"
    (low, low_k), (high, high_k) = min(numbers), max(numbers)
    median = statistics.median(v for v, _ in numbers)
    text = (
        f"[min {low:.{precision}f} #{low_k}, med {median:.{precision}f}, "
        f"max {high:.{precision}f} #{high_k}"
    )
    return text + (f", nan in {nans}]" if nans else "]")


def _format(value: object, precision: int) -> str:
    """Format one event value for :func:`print_keys` (numbers compact, objects by type)."""
    if is_per_member(value):
        return _format_members(value, precision)  # type: ignore[arg-type]
    number = scalar_value(value)
    if isinstance(number, bool):
        return str(number)
    if isinstance(number, int):
        return str(number)
    if isinstance(number, float):
        return f"{number:.{precision}f}"
    if isinstance(value, str):
        return value
    if isinstance(value, torch.Tensor):
        return f"<Tensor shape={tuple(value.shape)}>"
    text = str(value)
    if "\n" in text or len(text) > _MAX_TEXT:
        return f"<{type(value).__name__}>"
    return text


def print_keys(
    *keys: str, precision: int = 4, include_step: bool = True, step_key: str = "step"
) -> Callable[[dict[str, Any]], None]:
    """Make a :func:`tap` callback that prints chosen keys of an event on one line.

    The line reads ``step=0005 train_loss=0.1235 val_loss=NA``: the step first (zero-padded to
    four digits, left out when the event has no ``step_key``), then ``key=value`` for each key
    in the order given. Floats (including 0-d tensors and NumPy scalars) are printed with
    ``precision`` digits after the point, NaN as ``nan``; ints and bools as they are; strings
    as they are. A key the event lacks prints as ``NA`` rather than raising, so one callback
    serves events with and without, say, a validation metric. Other objects print as their
    ``str`` when short, else as ``<TypeName>`` (a tensor with more than one element as
    ``<Tensor shape=(...)>``), so a line stays one line. Each line is flushed at once.

    A per-member value of an ensemble (a list of K numbers) prints all its values for up to
    four members, ``val_loss=[0.3100, 0.2900, 0.4000]``; for more it prints the spread with
    the members that hold the ends, ``val_loss=[min 0.2900 #1, med 0.3100, max 0.4000 #7]``
    (the best member is the ``min`` for a loss, the ``max`` for an accuracy), and how many
    members have NaN, if any. So a line stays readable at K = 64.

    Args:
        *keys: The event keys to print, in order.
        precision: Digits after the decimal point for floats; an int >= 0.
        include_step: Whether to start the line with the step.
        step_key: The key holding the step.

    Returns:
        A callback ``fn(event)`` for :func:`tap`.

    Raises:
        TypeError: A key, ``step_key`` or ``precision`` of the wrong type.
        ValueError: ``precision`` below 0, or no keys with ``include_step=False``.

    Example:
        >>> import torch
        >>> show = print_keys("train_loss", "val_loss", precision=3)
        >>> show({"step": 5, "train_loss": torch.tensor(0.12345)})
        step=0005 train_loss=0.123 val_loss=NA
        >>> from fitstream import pipe, tap
        >>> events = [{"step": i, "train_loss": 1 / i} for i in (1, 2, 3)]
        >>> _ = list(pipe(events, tap(print_keys("train_loss"), every=2)))
        step=0001 train_loss=1.0000
        step=0003 train_loss=0.3333

        Per-member values, as an ensemble gives them:

        >>> val_loss = [0.1 * k for k in range(64)]
        >>> show({"step": 2, "train_loss": [0.5, 0.25], "val_loss": val_loss})
        step=0002 train_loss=[0.500, 0.250]
        val_loss=[min 0.000 #0, med 3.150, max 6.300 #63]
    """
    for position, key in enumerate(keys, start=1):
        if not isinstance(key, str):
            raise TypeError(
                f"print_keys: key {position} must be a string, got {describe(key)}; "
                "pass keys as separate arguments, e.g. print_keys('a', 'b')"
            )
    check_non_negative_int(precision, func="print_keys", arg="precision")
    check_bool(include_step, func="print_keys", arg="include_step")
    if not isinstance(step_key, str):
        raise TypeError(f"print_keys: 'step_key' must be a string, got {describe(step_key)}")
    if not keys and not include_step:
        raise ValueError("print_keys: give at least one key when include_step=False")

    def show(event: dict[str, Any]) -> None:
        parts: list[str] = []
        if include_step and step_key in event:
            step = event[step_key]
            number = scalar_value(step)
            if isinstance(number, int) and not isinstance(number, bool):
                parts.append(f"{step_key}={number:04d}")
            elif isinstance(number, float) and number.is_integer():
                parts.append(f"{step_key}={int(number):04d}")
            else:
                parts.append(f"{step_key}={_format(step, precision)}")
        for key in keys:
            text = _format(event[key], precision) if key in event else "NA"
            parts.append(f"{key}={text}")
        print(" ".join(parts), flush=True)

    return show


mark_factory(print_keys, "tap(print_keys('train_loss'))")
