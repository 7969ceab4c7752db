"""Stages that decide how much of the stream to keep: :func:`take` and :func:`early_stop`.

Both end the stream by returning, which closes the upstream: the source is told to stop (for a
Lightning stream, training ends at that epoch boundary) and no further epoch is started.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from .._internal.checks import check_name, check_non_negative_int, check_positive_int, describe
from .._internal.lookup import metric_value
from ..events import Stage
from ..pipeline import stage_factory, upstream

__all__ = ["early_stop", "take"]


@stage_factory
def take(n: int) -> Stage:
    """Keep the first ``n`` events, then end the stream.

    The stage never asks for event ``n + 1``: after the ``n``-th event it closes the upstream
    instead of pulling again, so no extra epoch is trained. ``take(0)`` pulls nothing.

    Args:
        n: How many events to keep; an ``int`` >= 0.

    Returns:
        A stage for :func:`fitstream.pipe`; ``take(events, n)`` returns the stream.

    Raises:
        TypeError: ``n`` is not an ``int``.
        ValueError: ``n`` is negative.

    Example:
        >>> from fitstream import pipe
        >>> events = ({"step": i} for i in range(1, 1000))
        >>> [ev["step"] for ev in pipe(events, take(3))]
        [1, 2, 3]
        >>> [ev["step"] for ev in take([{"step": 1}, {"step": 2}], 5)]
        [1, 2]
    """
    check_non_negative_int(n, func="take", arg="n")

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            if n == 0:
                return
            for count, event in enumerate(it, start=1):
                yield event
                if count == n:
                    return

    return stage


def _check_min_delta(min_delta: float) -> float:
    if isinstance(min_delta, bool) or not isinstance(min_delta, int | float):
        raise TypeError(
            f"early_stop: 'min_delta' must be a non-negative number, got {describe(min_delta)}"
        )
    if not min_delta >= 0:  # also refuses NaN
        raise ValueError(
            f"early_stop: 'min_delta' must be a non-negative number, got {min_delta!r}"
        )
    return float(min_delta)


@stage_factory
def early_stop(
    key: str,
    patience: int,
    *,
    mode: Literal["min", "max"] = "min",
    min_delta: float = 0.0,
) -> Stage:
    """Pass events on until the metric ``key`` has not improved for ``patience`` events in a row.

    An event improves on the best value so far when it is better by more than ``min_delta``
    (lower for ``mode="min"``, higher for ``mode="max"``); the first event with a number always
    improves. After ``patience`` consecutive events without improvement, that last event is
    still passed on, and then the stream ends without pulling another event.

    A NaN value never counts as an improvement: it counts towards ``patience`` and leaves the
    best value as it was, so a diverging run stops instead of training on. Values may be Python
    numbers, 0-d tensors or NumPy scalars. Events pass through unchanged.

    Args:
        key: The monitored metric, e.g. ``"val_loss"``.
        patience: How many consecutive events without improvement end the stream; int >= 1.
        mode: ``"min"`` if lower is better (losses), ``"max"`` if higher is better (accuracy).
        min_delta: How much better than the best a value must be to count as an improvement;
            a number >= 0.

    Returns:
        A stage for :func:`fitstream.pipe`; ``early_stop(events, key=..., patience=...)``
        returns the stream.

    Raises:
        TypeError: At the call, for a ``key`` that is not a string or a ``patience`` or
            ``min_delta`` that is not a number of the right kind.
        ValueError: At the call, for an empty ``key``, ``patience < 1``, a ``mode`` other than
            ``"min"`` or ``"max"``, or a negative ``min_delta``.
        KeyError: While iterating, for an event without ``key`` (the message lists its keys).
        TypeError: While iterating, for a value of ``key`` that is not a number (a bool
            included).

    Example:
        >>> from fitstream import pipe
        >>> events = [{"step": i, "val_loss": v} for i, v in enumerate([5, 4, 4, 4, 3], 1)]
        >>> [ev["step"] for ev in pipe(events, early_stop(key="val_loss", patience=2))]
        [1, 2, 3, 4]
        >>> [ev["step"] for ev in early_stop(events, key="val_loss", patience=3)]
        [1, 2, 3, 4, 5]
    """
    check_name(key, func="early_stop", what="'key'")
    check_positive_int(patience, func="early_stop", arg="patience")
    if mode not in ("min", "max"):
        raise ValueError(f"early_stop: 'mode' must be 'min' or 'max', got {mode!r}")
    delta = _check_min_delta(min_delta)
    sign = 1.0 if mode == "min" else -1.0  # compare sign * value, where lower is better

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        best = math.inf
        seen_number = False
        stale = 0
        with upstream(events) as it:
            for event in it:
                score = sign * metric_value(event, key, func="early_stop")
                if not math.isnan(score) and (not seen_number or score < best - delta):
                    best, seen_number, stale = score, True, 0
                else:
                    stale += 1
                yield event
                if stale >= patience:
                    return

    return stage
