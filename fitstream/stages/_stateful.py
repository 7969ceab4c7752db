"""Stages whose progress can be saved and restored, for :func:`fitstream.checkpoint`.

A stage that remembers something between events (``early_stop``'s patience counter, ``ema``'s
average, ``best_model``'s snapshot) is *stateful*: it has ``get_state()``, returning a dict of
plain values and tensors, and ``set_state(state)``, which makes the stage continue from that
state. :func:`fitstream.checkpoint` saves the states of the stages it is given and
:func:`fitstream.resume` gives them back, so a resumed run takes the same decisions.

:class:`StatefulStage` turns a generator function over ``(events, state)`` into such a stage.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from ..pipeline import upstream

__all__ = ["Stateful", "StatefulStage"]

Run = Callable[[Iterable[dict[str, Any]], dict[str, Any]], Iterator[dict[str, Any]]]


@runtime_checkable
class Stateful(Protocol):
    """What :func:`fitstream.checkpoint` and :func:`fitstream.resume` need of a stage."""

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: Mapping[str, Any]) -> None: ...


class StatefulStage:
    """A stage that keeps its progress in a dict, so it can be saved and restored.

    ``run(events, state)`` is the stage's generator; it reads and updates ``state`` in place.
    Each pass over a stream starts from a fresh ``initial()`` state, or from the state last
    given to :meth:`set_state` (used by the next pass only). The state is taken when the pass's
    first event arrives, so ``set_state`` may come after the pipeline was built, and even from
    a stage upstream as the stream starts.

    Example:
        >>> def count(events, state):
        ...     for event in events:
        ...         state["seen"] += 1
        ...         yield {**event, "seen": state["seen"]}
        >>> counter = StatefulStage("count", lambda: {"seen": 0}, count)
        >>> [ev["seen"] for ev in counter([{}, {}])], counter.get_state()
        ([1, 2], {'seen': 2})
        >>> counter.set_state({"seen": 10})
        >>> [ev["seen"] for ev in counter([{}])]
        [11]
    """

    def __init__(
        self,
        name: str,
        initial: Callable[[], dict[str, Any]],
        run: Run,
        *,
        added: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self._initial = initial
        self._added = added  # state keys newer than some saved states: their initial value
        self._run = run
        self._restored: dict[str, Any] | None = None
        self._live: dict[str, Any] | None = None

    def __call__(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return self._pass(events)

    def _pass(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            first = next(it, None)
            # The state is taken once the first event has come: a stage upstream may restore
            # it on its own start (fitstream.resumable loads a checkpoint there).
            state = self._initial() if self._restored is None else self._restored
            self._restored = None
            self._live = state
            if first is None:
                return
            yield from self._run(itertools.chain([first], it), state)

    def get_state(self) -> dict[str, Any]:
        """A copy of the state of the latest pass (or of the state the next pass starts from)."""
        state = self._live if self._live is not None else self._restored
        return copy.deepcopy(state if state is not None else self._initial())

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Make the next pass over a stream continue from ``state`` (as ``get_state`` gave it).

        Raises:
            TypeError: ``state`` is not a mapping.
            ValueError: Its keys are not this stage's.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{self.name}: set_state needs the dict get_state returned, got "
                f"{type(state).__name__}: {state!r:.60}"
            )
        initial = self._initial()
        expected = set(initial)
        state = {**{k: initial[k] for k in self._added if k not in state}, **state}
        if set(state) != expected:
            raise ValueError(
                f"{self.name}: set_state needs the keys {sorted(expected)}, got {sorted(state)} "
                f"(a state saved from another kind of stage?)"
            )
        self._restored = copy.deepcopy(dict(state))

    def __repr__(self) -> str:
        return f"<stage {self.name}>"
