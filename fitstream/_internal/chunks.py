"""One evaluation pass over held-out data in chunks, for one model or an ensemble's members.

:func:`fitstream.evaluate` and :func:`fitstream.validation_loss` build :class:`Chunks` once and
call :meth:`Chunks.run` per event. For an ensemble the model's forward gives the K members'
outputs stacked on a leading dim, ``(K, n, ...)``: one forward per chunk serves every member,
and each metric is then applied to each member's slice ``pred[k]`` as it would be to that
member's own output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .checks import describe
from .metrics import MetricSpec, Value, add_weighted, scalar

__all__ = ["Chunks", "member_outputs"]


def _note(exc: BaseException, text: str) -> None:
    add_note = getattr(exc, "add_note", None)  # Python 3.11+
    if callable(add_note):
        add_note(text)


def member_outputs(output: object, members: int, *, func: str) -> list[torch.Tensor]:
    """Split an ensemble's stacked output ``(K, n, ...)`` into the K members' outputs.

    Example:
        >>> [tuple(o.shape) for o in member_outputs(torch.zeros(2, 5, 1), 2, func="evaluate")]
        [(5, 1), (5, 1)]
        >>> member_outputs(torch.zeros(5, 1), 2, func="evaluate")
        Traceback (most recent call last):
        ...
        ValueError: evaluate: an ensemble's forward must return its 2 members' outputs ...
    """
    if not isinstance(output, torch.Tensor) or output.ndim < 1 or output.shape[0] != members:
        raise ValueError(
            f"{func}: an ensemble's forward must return its {members} members' outputs stacked "
            f"on a new leading dim (a tensor of shape ({members}, batch, ...)), got "
            f"{describe(output)}"
        )
    return list(output.unbind(0))


class Chunks:
    """Held-out tensors cut once into chunk views, and the metrics to evaluate on them."""

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        specs: Sequence[MetricSpec],
        *,
        func: str,
        last_label: bool,
        batch_size: int | None,
    ) -> None:
        n_total = tensors[0].shape[0]
        step = n_total if batch_size is None else min(batch_size, n_total)
        # The chunks are views made once, so an evaluation slices nothing.
        self.chunks = [
            (tuple(t[start : start + step] for t in tensors), min(step, n_total - start))
            for start in range(0, n_total, step)
        ]
        self.n_total, self.specs, self.func, self.last_label = n_total, specs, func, last_label

    def run(
        self, model: Any, fns: Mapping[str, Sequence[Any]], members: int | None
    ) -> dict[str, list[Value]]:
        """Evaluate ``model``: each metric's values, one per member (one in all for a model).

        ``fns[name]`` holds a stateful metric's object per member (just the spec's own ``fn``
        for a single model), prepared (reset, on the device) already; a plain callable is
        called as the spec's ``fn`` for every member.
        """
        count = 1 if members is None else members
        chunked = len(self.chunks) > 1
        sums: dict[str, list[Value | None]] = {spec.name: [None] * count for spec in self.specs}
        for chunk, size in self.chunks:
            inputs, labels = (chunk[:-1], chunk[-1:]) if self.last_label else (chunk, ())
            output = model(*inputs)
            outputs = [output] if members is None else member_outputs(output, count, func=self.func)
            for spec in self.specs:
                for k, pred in enumerate(outputs):
                    try:
                        if spec.stateful:
                            fns[spec.name][k].update(pred, *labels)
                            continue
                        value = scalar(spec.fn(pred, *labels), func=self.func, label=spec.label)
                    except Exception as exc:
                        where = "" if members is None else f" on member {k}"
                        _note(exc, f"(raised by {self.func}'s {spec.label}{where})")
                        raise
                    sums[spec.name][k] = (
                        add_weighted(sums[spec.name][k], value, size) if chunked else value
                    )
        return self._results(sums, fns, count)

    def _results(
        self,
        sums: Mapping[str, list[Value | None]],
        fns: Mapping[str, Sequence[Any]],
        count: int,
    ) -> dict[str, list[Value]]:
        values: dict[str, list[Value]] = {}
        owners: dict[str, str] = {}
        for spec in self.specs:
            for k in range(count):
                if spec.stateful:
                    results = spec.results(fns[spec.name][k].compute(), func=self.func)
                else:
                    total = sums[spec.name][k]
                    assert total is not None  # at least one chunk ran
                    results = [(spec.name, total / self.n_total if len(self.chunks) > 1 else total)]
                for name, value in results:
                    if owners.setdefault(name, spec.name) != spec.name:
                        raise ValueError(
                            f"{self.func}: {spec.label} gives the key {name!r}, which another "
                            f"metric already gives; rename one of them"
                        )
                    values.setdefault(name, []).append(value)
        return values
