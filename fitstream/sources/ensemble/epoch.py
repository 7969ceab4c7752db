"""One epoch of :func:`~fitstream.ensemble_stream`: the members' data orders, then their steps.

Three cases share the epoch's frame (hyperparameters refreshed, steps, state published):

- one order for all members (the data shuffled once, or kept in place), the plain path;
- one order per member over all rows (a list of generators), gathered per batch;
- each member on its own ``rows``, in its own order (:mod:`._member_data`): stacked like the
  per-member orders when the row counts are equal, size by size at the end when they differ.

With a :class:`~.graphed.GraphedSteps`, the batches are replayed graphs of row indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..._internal.rows import row_counts
from ..._internal.values import as_float_lists
from .._shared import weighted_loss_sum
from ..batching import batch_slices, shuffled
from ..graphed.steps import GraphedSteps
from .loop import EnsembleLoop
from .member_data import member_orders, rows_epoch, steps_of

__all__ = ["EnsembleEpoch"]

_TOTAL = "\0train_loss"  # the loss sums among the values read back with them


class EnsembleEpoch:
    """A callable that trains every member for one epoch and returns their mean losses."""

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        loop: EnsembleLoop,
        graphed: GraphedSteps | None,
        *,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | Sequence[torch.Generator] | None,
        rows: list[torch.Tensor] | None,
    ) -> None:
        self.tensors, self.loop, self.graphed = tensors, loop, graphed
        self.batch_size, self.shuffle, self.generator, self.rows = (
            batch_size, shuffle, generator, rows,
        )  # fmt: skip
        counts = [tensors[0].shape[0]] * loop.k if rows is None else row_counts(rows)
        self.counts = counts
        self.even = len(set(counts)) == 1
        group = loop.accumulate  # > 1 only with equal row counts (refused otherwise)
        steps = [-(-n // group) for n in steps_of(counts, batch_size)]
        self.steps: int | list[int] = steps[0] if self.even else steps
        self.slices = batch_slices(counts[0], batch_size)
        self.rows_of_batches = [batch for batch, _ in self.slices]
        self.metrics: dict[str, list[float]] = {}

    def __call__(self) -> list[float]:
        """Train one epoch; return each member's mean training loss (one host sync).

        The members' train metrics of the epoch, read back with the losses, are left in
        :attr:`metrics` (``train_<name>`` to one float per member).
        """
        loop = self.loop
        stepper = loop.stepper
        stepper.refresh(self.steps)
        loop.begin_epoch(len(self.slices), self.tensors[0].device)
        total = self._train()
        stepper.publish()
        if loop.metrics is None:
            sums = total.tolist()
        else:
            read = as_float_lists({**loop.metrics.values(self.counts), _TOTAL: total.unbind()})
            sums = read.pop(_TOTAL)
            self.metrics = read
        return [value / n for value, n in zip(sums, self.counts, strict=True)]

    def _train(self) -> torch.Tensor:
        data, orders = self.tensors, None
        if self.rows is not None:
            ordered = member_orders(self.rows, self.shuffle, self.generator)
            if not self.even:
                return rows_epoch(self.loop, data, ordered, self.batch_size)
            orders = torch.stack(ordered)
        elif self.shuffle and isinstance(self.generator, list | tuple):
            # one order per member over every row: rows gathered per batch
            n, device = data[0].shape[0], data[0].device
            orders = torch.stack(
                [torch.randperm(n, device=device, generator=g) for g in self.generator]
            )
        elif self.shuffle:
            generator = self.generator
            assert generator is None or isinstance(generator, torch.Generator)
            data = shuffled(data, generator)
        if self.graphed is not None:  # per-member orders: the batches are blocks of row indices
            return self.graphed.run_epoch(data if orders is None else (orders.T,), self.slices)
        return self._eager(data, orders)

    def _eager(self, data: tuple[torch.Tensor, ...], orders: torch.Tensor | None) -> torch.Tensor:
        """One epoch of eager steps; return the members' size-weighted loss sums, ``(K,)``."""
        return weighted_loss_sum(self.loop.run(data, self.rows_of_batches, orders), self.slices)
