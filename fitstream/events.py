"""The event type that every FitStream source emits, and the type of a stage.

An event is a plain :class:`dict` with one entry per fact about a finished epoch.
:class:`Event` is a ``dict`` subclass that exists only to make signatures read well;
any ``dict`` is accepted wherever an event is expected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["Event", "EventStream", "Stage"]


class Event(dict[str, Any]):
    """One epoch's facts: ``step``, ``model``, ``train_loss``, ``train_time_sec``, and more.

    ``Event`` behaves exactly like ``dict``; it adds no fields or methods. Sources emit it so
    type checkers and readers see what flows through a pipeline.

    Example:
        >>> ev = Event(step=1, train_loss=0.25)
        >>> ev["step"], isinstance(ev, dict)
        (1, True)
    """

    __slots__ = ()


EventStream = Iterable[dict[str, Any]]
"""Anything that yields events: a source, a stage's output, a list of dicts."""

Stage = Callable[[Iterable[dict[str, Any]]], Iterator[dict[str, Any]]]
"""A function from a stream of events to a stream of events, as :func:`fitstream.pipe` takes."""
