"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch


class CountingSource:
    """A stream of ``{"step": i, **fields(i)}`` events that records how far it was pulled.

    ``pulled`` counts events handed out; ``closed`` is set when ``close()`` is called (stages
    must close their upstream); ``fail_at`` makes the source raise ``RuntimeError`` when that
    1-based event would be produced.
    """

    def __init__(
        self,
        n: int | None = None,
        fields: Callable[[int], dict[str, Any]] | None = None,
        fail_at: int | None = None,
    ) -> None:
        self.n = n
        self.fields = fields or (lambda i: {"val_loss": 1.0 / i})
        self.fail_at = fail_at
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.closed or (self.n is not None and self.pulled >= self.n):
            raise StopIteration
        step = self.pulled + 1
        if self.fail_at is not None and step == self.fail_at:
            raise RuntimeError(f"source failed at event {step}")
        self.pulled = step
        return {"step": step, **self.fields(step)}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def counting_source() -> type[CountingSource]:
    """The :class:`CountingSource` class, to build sources with the arguments a test needs."""
    return CountingSource


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
