"""Stages that add keys to each event: :func:`augment` and :func:`ema`.

Both emit a new event of the same type as the one they received (an :class:`~fitstream.Event`
stays an ``Event``) and leave the incoming event untouched, so an event kept by an earlier
consumer never changes behind its back.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from .._internal.callables import check_arity
from .._internal.checks import (
    OWN_KEYS,
    check_bool,
    check_callable,
    check_name,
    check_not_own_key,
    describe,
)
from .._internal.lookup import metric_values
from ..events import Stage
from ..pipeline import stage_factory, upstream
from ._stateful import StatefulStage

__all__ = ["augment", "ema"]

E = TypeVar("E", bound=dict[str, Any])


def _extended(event: E, extra: Mapping[str, Any]) -> E:
    """Return a shallow copy of ``event`` (same type) with ``extra`` merged in."""
    if type(event) is dict:
        return {**event, **extra}  # type: ignore[return-value]
    new = copy.copy(event)
    new.update(extra)
    return new


@stage_factory
def augment(fn: Callable[[dict[str, Any]], Mapping[str, Any] | None]) -> Stage:
    """Add the keys that ``fn`` computes from each event (an "augmenter") to that event.

    ``fn`` receives the event and returns a mapping of extra keys, or ``None`` to add nothing.
    The extra keys are merged into a shallow copy of the event; where a key already exists,
    the augmenter's value wins, except for the event's own keys (``step``, ``model``,
    ``train_loss``, ``train_time_sec``, and Lightning's ``trainer`` and ``global_step``),
    which an augmenter may not replace. The incoming event is never modified.

    Args:
        fn: The augmenter, e.g. :func:`fitstream.validation_loss`'s result.

    Returns:
        A stage for :func:`fitstream.pipe`. Called as ``augment(events, fn)`` it returns the
        augmented stream directly.

    Raises:
        TypeError: At the call, if ``fn`` is not callable, cannot take one argument, or is
            a factory such as :func:`fitstream.validation_loss` not yet called; while
            iterating, if ``fn`` returns something other than a mapping or ``None`` (the
            message quotes what came).
        ValueError: While iterating, if ``fn`` returns one of the event's own keys.

    Example:
        >>> from fitstream import pipe
        >>> events = [{"step": 1, "train_loss": 0.5}, {"step": 2, "train_loss": 0.25}]
        >>> def doubled(ev):
        ...     return {"double_loss": 2 * ev["train_loss"]}
        >>> [ev["double_loss"] for ev in pipe(events, augment(doubled))]
        [1.0, 0.5]
        >>> "double_loss" in events[0]  # the source's events are left as they were
        False
        >>> [ev["double_loss"] for ev in augment(events, doubled)]  # stream-first form
        [1.0, 0.5]
    """
    check_callable(fn, func="augment", arg="fn")
    check_arity(fn, 1, func="augment", arg="fn")
    name = getattr(fn, "__qualname__", None) or type(fn).__name__

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for event in it:
                extra = fn(event)
                if extra is None:
                    extra = {}
                elif not isinstance(extra, Mapping):
                    raise TypeError(
                        f"augment: the augmenter {name} must return a mapping of extra keys "
                        f"(or None), got {describe(extra)} for the event with keys "
                        f"{list(event)}"
                    )
                _check_no_overwrite(event, extra, name)
                yield _extended(event, extra)

    return stage


def _check_no_overwrite(event: Mapping[str, Any], extra: Mapping[str, Any], name: str) -> None:
    """Refuse an augmenter's result that would replace one of the event's own keys."""
    clashes = [key for key in extra if key in OWN_KEYS and key in event]
    if clashes:
        raise ValueError(
            f"augment: the augmenter {name} returned {clashes}, which would overwrite the "
            f"event's own key(s); give its values other names (e.g. 'val_{clashes[0]}')"
        )


def _decay_from(decay: float | None, half_life: float | None) -> float:
    """Check ema's smoothing arguments and return the per-event decay factor."""
    if (decay is None) == (half_life is None):
        raise ValueError(
            "ema: pass exactly one of 'decay' or 'half_life', "
            f"got decay={decay!r} and half_life={half_life!r}"
        )
    if half_life is not None:
        if isinstance(half_life, bool) or not isinstance(half_life, int | float):
            raise TypeError(f"ema: 'half_life' must be a number, got {describe(half_life)}")
        if not (half_life > 0 and math.isfinite(half_life)):
            raise ValueError(
                f"ema: 'half_life' must be a positive finite number of events, got {half_life!r}"
            )
        return float(2.0 ** (-1.0 / half_life))
    if isinstance(decay, bool) or not isinstance(decay, int | float):
        raise TypeError(f"ema: 'decay' must be a number, got {describe(decay)}")
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema: 'decay' must be strictly between 0 and 1, got {decay!r}")
    return float(decay)


def _kind(per_member: bool, count: int) -> str:
    return f"a per-member list of {count} values" if per_member else "one number"


@stage_factory
def ema(
    key: str,
    *,
    decay: float | None = None,
    half_life: float | None = None,
    out_key: str | None = None,
    bias_correction: bool = True,
) -> Stage:
    """Add an exponential moving average of the metric ``key`` to each event.

    With ``m`` starting at 0, each event updates ``m = decay * m + (1 - decay) * x`` where ``x``
    is the event's ``key``. With ``bias_correction`` the value written is
    ``m / (1 - decay**t)`` after ``t`` events, so the first value equals the first ``x``
    instead of being pulled towards 0. ``half_life=h`` means ``decay = 2 ** (-1 / h)``: an
    event's weight halves every ``h`` events.

    Values may be Python numbers, 0-d tensors or NumPy scalars. A NaN or infinite value is
    averaged in as it is, so the average shows it from then on (it is never hidden).

    A per-member value (a list of K numbers, from an ensemble) gets one average per member:
    the stage writes a list of K averages, in member order.

    Args:
        key: The metric to smooth, e.g. ``"val_loss"``.
        decay: Weight of the past, strictly between 0 and 1 (e.g. 0.9).
        half_life: Alternative to ``decay``: number of events after which a value's weight
            has halved; positive.
        out_key: Key to write the average to; ``f"{key}_ema"`` by default.
        bias_correction: Whether to correct the start-up bias towards 0.

    Returns:
        A stage for :func:`fitstream.pipe`; ``ema(events, key, ...)`` returns the stream. The
        stage is stateful: :func:`fitstream.checkpoint` can save its running averages and
        :func:`fitstream.resume` restore them.

    Raises:
        ValueError: At the call, for both or neither of ``decay`` and ``half_life``, a value
            outside its range, or an empty ``key`` or ``out_key``.
        TypeError: At the call, for a ``key`` or ``out_key`` that is not a string; while
            iterating, for a value of ``key`` that is not a number (a bool included) or a
            per-member list of numbers.
        ValueError: While iterating, for a value that changes between one number and a
            per-member list, or a list that changes length.
        KeyError: While iterating, for an event without ``key`` (the message lists its keys).

    Example:
        >>> from fitstream import pipe
        >>> events = [{"loss": 10.0}, {"loss": 20.0}, {"loss": 30.0}]
        >>> [round(ev["loss_ema"], 3) for ev in pipe(events, ema("loss", decay=0.5))]
        [10.0, 16.667, 24.286]
        >>> smooth = ema(
        ...     events, "loss", half_life=1, out_key="smooth", bias_correction=False
        ... )
        >>> [ev["smooth"] for ev in smooth]
        [5.0, 12.5, 21.25]

        Per member, a list in gives a list out:

        >>> members = [{"loss": [10.0, 1.0]}, {"loss": [20.0, 3.0]}]
        >>> smooth = ema(members, "loss", decay=0.5, bias_correction=False)
        >>> [ev["loss_ema"] for ev in smooth]
        [[5.0, 0.5], [12.5, 1.75]]
    """
    check_name(key, func="ema", what="'key'")
    if out_key is not None:
        check_name(out_key, func="ema", what="'out_key'")
    factor = _decay_from(decay, half_life)
    target = f"{key}_ema" if out_key is None else out_key
    check_not_own_key(target, func="ema", arg="out_key")
    check_bool(bias_correction, func="ema", arg="bias_correction")
    correct = bias_correction

    def run(events: Iterable[dict[str, Any]], state: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # averages: one per member; one in all for a single model. weight: decay ** t, the
        # share of the initial 0 still in the average.
        averages: list[float] | None = state["averages"]
        per_member: bool = state["per_member"]
        weight: float = state["weight"]
        if state["key"] is not None and state["key"] != key:
            raise ValueError(
                f"ema: the saved state averages {state['key']!r}, but this ema smooths {key!r}; "
                f"resume it with the stages in the order they were saved"
            )
        state["key"] = key
        with upstream(events) as it:
            for event in it:
                value = metric_values(event, key, func="ema")
                values = value if isinstance(value, list) else [value]
                if averages is None:
                    averages, per_member = [0.0] * len(values), isinstance(value, list)
                elif isinstance(value, list) != per_member or len(values) != len(averages):
                    raise ValueError(
                        f"ema: the value of {key!r} changed kind between events (from "
                        f"{_kind(per_member, len(averages))} to "
                        f"{_kind(isinstance(value, list), len(values))}); a stream keeps one"
                    )
                pairs = zip(averages, values, strict=True)
                averages = [factor * a + (1.0 - factor) * v for a, v in pairs]
                weight *= factor
                state.update(averages=averages, per_member=per_member, weight=weight)
                smoothed = [a / (1.0 - weight) for a in averages] if correct else averages
                yield _extended(event, {target: smoothed if per_member else smoothed[0]})

    return StatefulStage("ema", _ema_start, run, added=("key",))


def _ema_start() -> dict[str, Any]:
    # "key" (the smoothed key, set at the first pass) is newer than 0.7: None in older states
    return {"averages": None, "per_member": False, "weight": 1.0, "key": None}
