"""How many events a stream still expects, passed along a pipeline (``__length_hint__``).

:func:`fitstream.take` knows it ends after ``n`` events; :func:`fitstream.pipe` passes that
upper bound through the stages after it, so a :func:`fitstream.progress` bar further down can
show ``x/n`` and a time estimate. It is a hint (PEP 424): a stream may end sooner.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["Hinted", "expected_length", "forward_hint"]

T = TypeVar("T")


class Hinted(Iterator[T]):
    """An iterator that also tells how many items it still expects (``len``-like hint).

    ``close()`` closes the wrapped iterator (a stage's generator), so it stays a stream whose
    closing closes its upstream.

    Example:
        >>> import operator
        >>> it = Hinted(iter("abc"), lambda: 3)
        >>> operator.length_hint(it), next(it)
        (3, 'a')
    """

    def __init__(self, iterator: Iterator[T], hint: Callable[[], int]) -> None:
        self._iterator = iterator
        self._hint = hint

    def __iter__(self) -> Hinted[T]:
        return self

    def __next__(self) -> T:
        return next(self._iterator)

    def __length_hint__(self) -> int:
        return max(0, self._hint())

    def close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if callable(close):
            close()


def expected_length(stream: object) -> int | None:
    """Return the number of events ``stream`` expects, or None when it does not say.

    Example:
        >>> expected_length([{"step": 1}, {"step": 2}]), expected_length(e for e in [1, 2])
        (2, None)
    """
    hint = operator.length_hint(stream, -1)
    return hint if hint > 0 else None


def forward_hint(source: object, result: Any) -> Any:
    """Return ``result`` (a stage's output) carrying ``source``'s hint, if it has one.

    Used by :func:`fitstream.pipe`: a stage passes events through or drops some, so its input's
    expected length is an upper bound of its output's.
    """
    if operator.length_hint(source, -1) < 0 or operator.length_hint(result, -1) >= 0:
        return result
    return Hinted(iter(result), lambda: operator.length_hint(source, 0))
