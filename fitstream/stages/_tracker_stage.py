"""The stage form of :class:`fitstream.BestModel`, and its state for a checkpoint.

``pipe(events, best)`` tracks each event the stage passes on and, for a tracker made with
``restore=True``, loads the best weights into the live model when the stream ends, however it
ends. ``get_state``/``set_state`` let :func:`fitstream.checkpoint` and :func:`fitstream.resume`
carry the tracker's progress across processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, overload

from .._internal.checks import describe
from .._internal.members import is_ensemble
from ..pipeline import check_stream, upstream

__all__ = ["TrackerStage"]


class TrackerStage:
    """What :class:`fitstream.BestModel` adds to its per-event tracking (see there)."""

    restore: bool
    _members: int | None
    _values: list[float | None]
    _steps: list[Any]
    _states: list[dict[str, Any] | None]

    def _look_at(self, event: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _load(self, model: object, member: int) -> None:
        raise NotImplementedError

    @overload
    def __call__(self, event: Mapping[str, Any]) -> None: ...

    @overload
    def __call__(self, event: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]: ...

    def __call__(
        self, event: Mapping[str, Any] | Iterable[dict[str, Any]]
    ) -> Iterator[dict[str, Any]] | None:
        """Look at one event, or (given a stream) return the stream with each event looked at.

        For one event: snapshot its model if its metric is strictly better than the best.

        Raises:
            KeyError: The event lacks the metric (or, on improvement, ``"model"``); the message
                lists the keys it has.
            TypeError: The metric's value is not a number or a per-member list, or
                ``event["model"]`` has no ``state_dict()`` (per member: is not an ensemble).
            ValueError: The value changes between one number and a per-member list, or a
                list's length differs from the member count.
            TypeError: The tracker was made with ``restore=True`` and is given one event: it
                can restore only as a stage, ``pipe(events, ..., best)``.
        """
        if not isinstance(event, Mapping):
            check_stream(event, func="best_model")
            return self._stage(event)
        if self.restore:
            raise TypeError(
                "best_model: a tracker made with restore=True restores the best weights when "
                "the stream ends, so it must see the stream: put it in the pipeline itself, "
                "pipe(events, ..., best), not in tap(best)"
            )
        self._look_at(event)
        return None

    def _stage(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        model: Any = None
        try:
            with upstream(events) as it:
                for event in it:
                    found = event.get("model", model) if isinstance(event, Mapping) else model
                    if model is not None and found is not model:
                        raise ValueError(
                            f"best_model: event['model'] at step {event.get('step')!r} is "
                            f"another object than in the events before ({describe(found)}); "
                            f"a tracker follows one model, so its best snapshot would go into "
                            f"the wrong one: make one best_model(...) per model"
                        )
                    self._look_at(event)
                    model = found
                    yield event
        finally:
            # After the upstream is closed (a Lightning run has finished), whatever ended
            # the stream: exhaustion, a later stage, an exception, close() or the GC.
            if self.restore and model is not None:
                self._restore(model)

    def _restore(self, model: Any) -> None:
        if self._members is None:
            if self._states and self._states[0] is not None:
                self._load(model, 0)
            return
        targets = model.members if is_ensemble(model) else None
        for k, state in enumerate(self._states):
            if state is not None and targets is not None:
                self._load(targets[k], k)

    def get_state(self) -> dict[str, Any]:
        """The tracker's progress (best values, their steps, the snapshots), for a checkpoint."""
        return {
            "members": self._members,
            "values": list(self._values),
            "steps": list(self._steps),
            "states": list(self._states),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a state :meth:`get_state` gave (as :func:`fitstream.resume` does).

        Raises:
            ValueError: ``state`` is not a state of a ``BestModel``.
        """
        if not isinstance(state, Mapping) or set(state) != set(self.get_state()):
            raise ValueError(
                f"best_model: set_state needs the dict get_state returned, got {describe(state)}"
            )
        self._members = state["members"]
        self._values, self._steps = list(state["values"]), list(state["steps"])
        self._states = list(state["states"])
