"""Stages that steer training: :func:`reduce_lr_on_plateau` and :func:`stop_on_nonfinite`.

Both act while the consumer holds an event, when training is paused: a changed learning rate
is the rate of the next epoch, and a stop ends the stream before another epoch starts. On an
ensemble's events (``event["model"]`` an ensemble, the monitored value a list with one number
per member) each member is handled on its own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from .._internal.checks import check_bool, check_name, check_non_negative_int, describe
from .._internal.direction import resolve_mode
from .._internal.lookup import metric_values
from .._internal.members import ensemble_of
from .._internal.optimizers import check_optimizer_arg, event_optimizers, param_groups
from .._internal.values import scalar_value
from ..events import Stage
from ..pipeline import stage_factory, upstream
from ._stateful import StatefulStage
from .transforms import _extended

__all__ = ["reduce_lr_on_plateau", "stop_on_nonfinite"]

_EPS = 1e-8  # a reduction smaller than this is skipped, as torch's ReduceLROnPlateau does


def _check_number(value: object, *, func: str, arg: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{func}: '{arg}' must be a number, got {describe(value)}")
    if not low <= value <= high:  # also refuses NaN
        raise ValueError(f"{func}: '{arg}' must be between {low} and {high}, got {value!r}")
    return float(value)


def _check_min_lr(min_lr: object) -> float | tuple[float, ...]:
    func = "reduce_lr_on_plateau"
    if isinstance(min_lr, list | tuple):
        return tuple(
            _check_number(v, func=func, arg=f"min_lr[{i}]", low=0.0, high=math.inf)
            for i, v in enumerate(min_lr)
        )
    return _check_number(min_lr, func=func, arg="min_lr", low=0.0, high=math.inf)


def _monitored(event: dict[str, Any], key: str, *, func: str) -> tuple[list[float], bool]:
    """The monitored values, one per member of an ensemble (then ``True``) or a single one."""
    value = metric_values(event, key, func=func)
    return (value, True) if isinstance(value, list) else ([value], False)


class _Plateau:
    """torch's ``ReduceLROnPlateau`` decision for one model (one member), as plain numbers."""

    def __init__(
        self, mode: str, delta_mode: str, min_delta: float, patience: int, cooldown: int
    ) -> None:
        self.mode, self.delta_mode, self.min_delta = mode, delta_mode, min_delta
        self.patience, self.cooldown = patience, cooldown

    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def better(self, value: float, best: float) -> bool:
        if self.mode == "min":
            bar = (
                best * (1.0 - self.min_delta) if self.delta_mode == "rel" else best - self.min_delta
            )
            return value < bar
        bar = best * (1.0 + self.min_delta) if self.delta_mode == "rel" else best + self.min_delta
        return value > bar

    def step(self, state: dict[str, Any], k: int, value: float) -> bool:
        """Count ``value`` for member ``k``; tell whether its rate must be reduced now."""
        if self.better(value, state["best"][k]):
            state["best"][k] = value
            state["bad"][k] = 0
        else:
            state["bad"][k] += 1
        if state["cooldown"][k] > 0:  # bad events during a cooldown are not counted
            state["cooldown"][k] -= 1
            state["bad"][k] = 0
        if state["bad"][k] > self.patience:
            state["cooldown"][k] = self.cooldown
            state["bad"][k] = 0
            return True
        return False


def _reduce(
    groups: Sequence[dict[str, Any]], factor: float, min_lr: float | tuple[float, ...]
) -> None:
    floors = min_lr if isinstance(min_lr, tuple) else (min_lr,) * len(groups)
    if len(floors) != len(groups):
        raise ValueError(
            f"reduce_lr_on_plateau: 'min_lr' has {len(floors)} values but the optimizers have "
            f"{len(groups)} param groups; give one per group, or a single number"
        )
    for group, floor in zip(groups, floors, strict=True):
        old = scalar_value(group["lr"])
        old = float("nan") if old is None else float(old)
        new = max(old * factor, floor)
        if old - new > _EPS:
            lr = group["lr"]
            if hasattr(lr, "fill_"):  # a tensor rate (capturable optimizers): change it in place
                lr.fill_(new)
            else:
                group["lr"] = new


@stage_factory
def reduce_lr_on_plateau(
    key: str,
    *,
    factor: float = 0.1,
    patience: int = 10,
    mode: Literal["min", "max"] | None = None,
    min_delta: float = 0.0,
    delta_mode: Literal["abs", "rel"] = "abs",
    cooldown: int = 0,
    min_lr: float | Sequence[float] = 0.0,
    optimizer: Any = None,
) -> Stage:
    """Multiply the learning rate by ``factor`` when ``key`` has stopped improving.

    The decision is torch's :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`, made on each
    event: a value improves on the best so far when it is lower (``mode="min"``) than
    ``best - min_delta`` (``delta_mode="abs"``) or ``best * (1 - min_delta)`` (``"rel"``), and
    higher than ``best + min_delta`` or ``best * (1 + min_delta)`` for ``mode="max"``; a NaN
    never improves. After more than ``patience`` events in a row without improvement, every
    param group's ``lr`` becomes ``max(lr * factor, min_lr)`` and the count restarts. For
    ``cooldown`` events after a reduction, events without improvement are not counted.
    ``torch``'s ``threshold`` and ``threshold_mode`` are ``min_delta`` and ``delta_mode`` here.

    The rate changes while the consumer holds the event, so the next epoch trains with it; the
    event itself is passed on unchanged (its ``lr`` is the rate its epoch used).

    The optimizers are ``optimizer`` if given, else the event's: ``event["optimizer"]``
    (:func:`fitstream.epoch_stream`) or ``event["trainer"].optimizers`` (``fit_stream``),
    every param group of each. On an ensemble's events, with ``key`` a list of one value per
    member and ``event["optimizer"]`` a list of one optimizer per member, each member has its
    own plateau count and only its own rate is reduced.

    Args:
        key: The monitored metric, e.g. ``"val_loss"``.
        factor: What the rate is multiplied by; strictly between 0 and 1.
        patience: Events without improvement that are tolerated; the next one reduces.
        mode: ``"min"`` if lower is better, ``"max"`` if higher is better; ``None`` infers it
            from the name of ``key`` (see :ref:`direction-rule`).
        min_delta: How much better than the best a value must be to count as an improvement.
        delta_mode: Whether ``min_delta`` is an absolute amount or relative to the best.
        cooldown: Events after a reduction during which no bad event is counted.
        min_lr: The lowest rate; a number, or one per param group.
        optimizer: The optimizer (or a list of them) to act on, instead of the event's.

    Returns:
        A stateful stage for :func:`fitstream.pipe` (:func:`fitstream.checkpoint` can save it);
        ``reduce_lr_on_plateau(events, key, ...)`` returns the stream.

    Raises:
        TypeError: At the call, for arguments of the wrong type.
        ValueError: At the call, for values out of range, or no ``mode`` for a key whose name
            tells no direction.
        KeyError: While iterating, for an event without ``key``, or without optimizers.

    Example:
        >>> import torch
        >>> from fitstream import pipe
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> losses = [3, 2, 2, 2, 2, 2]
        >>> events = [{"step": i, "val_loss": v} for i, v in enumerate(losses, 1)]
        >>> stage = reduce_lr_on_plateau("val_loss", patience=2, optimizer=opt)
        >>> for ev in pipe(events, stage):
        ...     print(ev["step"], opt.param_groups[0]["lr"])
        1 1.0
        2 1.0
        3 1.0
        4 1.0
        5 0.1
        6 0.1
    """
    func = "reduce_lr_on_plateau"
    check_name(key, func=func, what="'key'")
    factor = _check_number(factor, func=func, arg="factor", low=0.0, high=1.0)
    if factor in {0.0, 1.0}:
        raise ValueError(f"{func}: 'factor' must be strictly between 0 and 1, got {factor!r}")
    check_non_negative_int(patience, func=func, arg="patience")
    check_non_negative_int(cooldown, func=func, arg="cooldown")
    resolved = resolve_mode(key, mode, func=func)
    if delta_mode not in ("abs", "rel"):
        raise ValueError(f"{func}: 'delta_mode' must be 'abs' or 'rel', got {delta_mode!r}")
    delta = _check_number(min_delta, func=func, arg="min_delta", low=0.0, high=math.inf)
    floors = _check_min_lr(min_lr)
    check_optimizer_arg(optimizer, func=func, needs=("param_groups",))
    plateau = _Plateau(resolved, delta_mode, delta, patience, cooldown)

    def run(events: Iterable[dict[str, Any]], state: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for event in it:
                values, per_member = _monitored(event, key, func=func)
                optimizers = event_optimizers(event, optimizer, func=func)
                if optimizer is None:  # the event's: checked on first sight, as the call does
                    check_optimizer_arg(
                        optimizers[0] if len(optimizers) == 1 else optimizers,
                        func=func,
                        needs=("param_groups",),
                        arg="event['optimizer']",
                    )
                if per_member and len(optimizers) != len(values):
                    raise ValueError(
                        f"{func}: {key!r} has one value per member ({len(values)}) but there "
                        f"are {len(optimizers)} optimizers; an ensemble's event must hold one "
                        f"optimizer per member under 'optimizer'"
                    )
                if not state["best"]:
                    count = len(values)
                    state.update(best=[plateau.worst()] * count, bad=[0] * count)
                    state["cooldown"] = [0] * count
                for k, value in enumerate(values):
                    if plateau.step(state, k, value):
                        owned = [optimizers[k]] if per_member else optimizers
                        _reduce([g for o in owned for g in param_groups(o)], factor, floors)
                yield event

    return StatefulStage(func, lambda: {"best": [], "bad": [], "cooldown": []}, run)


@stage_factory
def stop_on_nonfinite(*keys: str, warn: bool = True) -> Stage:
    """End the stream at the first event whose value under one of ``keys`` is NaN or infinite.

    That event is still passed on, with ``stop_reason`` added (e.g. ``"train_loss is nan at
    step 7"``), and then the stream ends without pulling another event, so no further epoch is
    trained. With ``warn`` a :class:`RuntimeWarning` says the same. Other events pass unchanged.

    On an ensemble's events (a list of one value per member), a member whose value is not
    finite is frozen (``event["model"].freeze(k)``: it trains no more from the next epoch, with
    a warning); the stream ends, with ``stop_reason``, once no member is active. Without an
    ensemble under ``model`` (a replayed history), it ends once every member's value is not
    finite.

    Args:
        *keys: The values to watch; ``"train_loss"`` when none are given.
        warn: Whether to warn when the stream is stopped (or a member frozen).

    Returns:
        A stage for :func:`fitstream.pipe`; ``stop_on_nonfinite(events, "val_loss")`` returns
        the stream.

    Raises:
        TypeError: At the call, for a key that is not a string.
        ValueError: At the call, for an empty key.
        KeyError: While iterating, for an event without one of ``keys``.

    Example:
        >>> from fitstream import pipe
        >>> losses = [0.5, 0.4, float("inf"), 0.3]
        >>> events = [{"step": i, "train_loss": v} for i, v in enumerate(losses, 1)]
        >>> kept = list(pipe(events, stop_on_nonfinite(warn=False)))
        >>> [ev["step"] for ev in kept], kept[-1]["stop_reason"]
        ([1, 2, 3], 'train_loss is inf at step 3')
    """
    watched = keys or ("train_loss",)
    for name in watched:
        check_name(name, func="stop_on_nonfinite", what="each key")
    check_bool(warn, func="stop_on_nonfinite", arg="warn")
    loud = warn

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for event in it:
                reason = _nonfinite_reason(event, watched, loud)
                if reason is None:
                    yield event
                    continue
                if loud:
                    warnings.warn(f"stop_on_nonfinite: {reason}; stopping", RuntimeWarning, 2)
                yield _extended(event, {"stop_reason": reason})
                return

    return stage


def _nonfinite_reason(event: dict[str, Any], keys: Sequence[str], loud: bool) -> str | None:
    """Why the stream must end after ``event`` (freezing members as needed), else ``None``."""
    at = f"step {event['step']}" if "step" in event else "this event"
    ensemble = ensemble_of(event)
    for key in keys:
        value = metric_values(event, key, func="stop_on_nonfinite")
        if not isinstance(value, list):
            if not math.isfinite(value):
                return f"{key} is {value} at {at}"
            continue
        if ensemble is None:  # a replayed history: nothing to freeze
            stopped = [not math.isfinite(v) for v in value]
        else:
            for k, member_value in enumerate(value):
                if not math.isfinite(member_value) and ensemble.active[k]:
                    ensemble.freeze(k)
                    if loud:
                        warnings.warn(
                            f"stop_on_nonfinite: member {k} frozen, {key} is {member_value} "
                            f"at {at}",
                            RuntimeWarning,
                            3,
                        )
            stopped = [not active for active in ensemble.active]
        if all(stopped):
            return f"every member stopped: {key} not finite at {at}"
    return None
