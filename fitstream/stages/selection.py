"""Stages that decide how much of the stream to keep: :func:`take` and :func:`early_stop`.

Both end the stream by returning, which closes the upstream: the source is told to stop (for a
Lightning stream, training ends at that epoch boundary) and no further epoch is started.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from .._internal.checks import check_name, check_non_negative_int, check_positive_int, describe
from .._internal.direction import resolve_mode
from .._internal.hints import Hinted, expected_length
from .._internal.lookup import metric_values
from .._internal.members import EnsembleLike, ensemble_of
from ..events import Stage
from ..pipeline import stage_factory, upstream
from ._stateful import StatefulStage

__all__ = ["early_stop", "take"]


@stage_factory
def take(n: int) -> Stage:
    """Keep the first ``n`` events, then end the stream.

    The stage never asks for event ``n + 1``: after the ``n``-th event it closes the upstream
    instead of pulling again, so no extra epoch is trained. ``take(0)`` pulls nothing. Its
    stream tells how many events it still expects (``operator.length_hint``); in a
    :func:`fitstream.pipe` the stages after it pass that on, so a :func:`fitstream.progress`
    bar shows ``x/n`` and a time estimate.

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
        taken = 0

        def kept() -> Iterator[dict[str, Any]]:
            nonlocal taken
            with upstream(events) as it:
                if n == 0:
                    return
                for event in it:
                    taken += 1
                    yield event
                    if taken == n:
                        return

        bound = min(n, expected_length(events) or n)  # a list of 3 events: 3
        return Hinted(kept(), lambda: bound - taken)  # progress() reads it: x/n and an ETA

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


class _Patience:
    """The patience count of one metric, for one model or per member of an ensemble.

    Scores are ``sign * value``, so lower is better. ``members`` is ``None`` for one model;
    otherwise K, and each member counts on its own until it stops.
    """

    def __init__(self, key: str, delta: float, patience: int) -> None:
        self.key, self.delta, self.patience = key, delta, patience
        self.members: int | None = None
        self.best: list[float] = []
        self.stale: list[int] = []
        self.seen: list[bool] = []  # whether a number (not NaN) came yet: the first improves
        self.stopped: list[bool] = []

    _FIELDS = ("members", "best", "stale", "seen", "stopped")

    def save(self) -> dict[str, Any]:
        """The count as plain values (for a checkpoint)."""
        return {name: copy.copy(getattr(self, name)) for name in self._FIELDS}

    def load(self, state: dict[str, Any]) -> None:
        """Continue from what :meth:`save` gave."""
        for name in self._FIELDS:
            setattr(self, name, copy.copy(state[name]))

    def _start(self, count: int | None) -> None:
        self.members = count
        size = 1 if count is None else count
        self.best, self.stale = [math.inf] * size, [0] * size
        self.seen, self.stopped = [False] * size, [False] * size

    def _score(self, index: int, score: float) -> None:
        if not math.isnan(score) and (
            not self.seen[index] or score < self.best[index] - self.delta
        ):
            self.best[index], self.stale[index], self.seen[index] = score, 0, True
        else:
            self.stale[index] += 1

    def update(self, scores: float | list[float], ensemble: EnsembleLike | None) -> bool:
        """Count one event; freeze the members whose patience ran out; tell whether to end."""
        count = len(scores) if isinstance(scores, list) else None
        if not self.best:
            self._start(count)
        elif count != self.members:
            was = "one number" if self.members is None else f"a list of {self.members} values"
            now = "one number" if count is None else f"a list of {count} values"
            raise ValueError(
                f"early_stop: the value of {self.key!r} was {was} in earlier events and is "
                f"{now} now; a stream keeps one kind (per-member lists keep their length)"
            )
        if not isinstance(scores, list):
            self._score(0, scores)
            return self.stale[0] >= self.patience
        active = ensemble.active if ensemble is not None else [True] * len(scores)
        for member, score in enumerate(scores):
            if self.stopped[member]:
                continue  # a stopped member's later values are ignored
            if not active[member]:
                self.stopped[member] = True  # frozen elsewhere: it will not improve here
                continue
            self._score(member, score)
            if self.stale[member] >= self.patience:
                self.stopped[member] = True
                if ensemble is not None:
                    ensemble.freeze(member)
        return all(self.stopped)


@stage_factory
def early_stop(
    key: str,
    patience: int,
    *,
    mode: Literal["min", "max"] | None = None,
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

    **Per member.** When the value is per-member (a list of K numbers, as
    :func:`fitstream.ensemble_stream` gives for an ensemble), each member has its own patience
    count, best value and ``min_delta`` (the same ``mode`` and ``min_delta`` for all members,
    each compared with that member's own best). A member whose patience runs out is frozen
    with ``event["model"].freeze(k)`` before the event is passed on, so its weights stay those
    of that event; its later values are ignored. A member the ensemble already reports as
    inactive (frozen elsewhere) counts as stopped. The stream ends, without pulling another
    event, after the event where the last member stopped. Without an ensemble under
    ``"model"`` (a replayed history), members are counted the same way but nothing is frozen.

    Args:
        key: The monitored metric, e.g. ``"val_loss"``.
        patience: How many consecutive events without improvement end the stream; int >= 1.
        mode: ``"min"`` if lower is better, ``"max"`` if higher is better; ``None`` infers it
            from the name of ``key`` (losses and errors ``"min"``, accuracies and scores
            ``"max"``; see :ref:`direction-rule`).
        min_delta: How much better than the best a value must be to count as an improvement;
            a number >= 0.

    Returns:
        A stage for :func:`fitstream.pipe`; ``early_stop(events, key=..., patience=...)``
        returns the stream. The stage is stateful: :func:`fitstream.checkpoint` can save its
        best values and patience counts, and :func:`fitstream.resume` restore them.

    Raises:
        TypeError: At the call, for a ``key`` that is not a string or a ``patience`` or
            ``min_delta`` that is not a number of the right kind.
        ValueError: At the call, for an empty ``key``, ``patience < 1``, a ``mode`` other than
            ``"min"``, ``"max"`` or ``None``, no ``mode`` for a key whose name tells no
            direction, or a negative ``min_delta``.
        KeyError: While iterating, for an event without ``key`` (the message lists its keys).
        TypeError: While iterating, for a value of ``key`` that is not a number (a bool
            included) or a per-member list of numbers.
        ValueError: While iterating, for a per-member list whose length is not the
            ensemble's member count, or a value that changes kind or length between events.

    Example:
        >>> from fitstream import pipe
        >>> events = [{"step": i, "val_loss": v} for i, v in enumerate([5, 4, 4, 4, 3], 1)]
        >>> [ev["step"] for ev in pipe(events, early_stop(key="val_loss", patience=2))]
        [1, 2, 3, 4]
        >>> [ev["step"] for ev in early_stop(events, key="val_loss", patience=3)]
        [1, 2, 3, 4, 5]

        Per member: member 1 stops at step 3, member 0 at step 4, and step 5 is never pulled.

        >>> losses = [[5, 5], [4, 5], [4, 5], [4, 4], [3, 3]]
        >>> events = [{"step": i, "val_loss": v} for i, v in enumerate(losses, 1)]
        >>> [ev["step"] for ev in early_stop(events, key="val_loss", patience=2)]
        [1, 2, 3, 4]
    """
    check_name(key, func="early_stop", what="'key'")
    check_positive_int(patience, func="early_stop", arg="patience")
    delta = _check_min_delta(min_delta)
    lower = resolve_mode(key, mode, func="early_stop") == "min"
    sign = 1.0 if lower else -1.0  # compare sign * value, where lower is better

    def run(events: Iterable[dict[str, Any]], state: dict[str, Any]) -> Iterator[dict[str, Any]]:
        counter = _Patience(key, delta, patience)
        counter.load(state)
        with upstream(events) as it:
            for event in it:
                value = metric_values(event, key, func="early_stop")
                scores = [sign * v for v in value] if isinstance(value, list) else sign * value
                done = counter.update(scores, ensemble_of(event))
                state.update(counter.save())
                yield event
                if done:
                    return

    return StatefulStage("early_stop", _Patience(key, delta, patience).save, run)
