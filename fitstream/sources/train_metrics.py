"""Training metrics: the ``train_metrics=`` keyword of the sources.

Each metric is computed on the outputs the training step already has (no extra forward), in
train mode, as Keras reports its training ``accuracy``. A plain callable's batch values are
summed on the device weighted by batch size and divided by the epoch's row count; a stateful
metric (torchmetrics) is reset at the start of each epoch, updated per batch and computed at
its end. The values are read back with the epoch's loss, in one host synchronisation, and
reported as ``train_<name>``; on an ensemble, as a list with one value per member.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .._internal.checks import check_name, describe
from .._internal.chunks import add, results
from .._internal.metrics import (
    MemberVmap,
    MetricSpec,
    Value,
    check_metric,
    is_stateful_metric,
    prepare_metric,
)
from .._internal.values import exact_dtype
from ._shared import RESERVED_KEYS

__all__ = ["MemberTrainMetrics", "TrainMetrics", "check_train_metrics"]


def check_train_metrics(
    train_metrics: object, extra: Mapping[str, Any], *, func: str, last_label: bool = True
) -> tuple[MetricSpec, ...]:
    """Check ``train_metrics``: names to metrics, their ``train_<name>`` keys all new.

    Example:
        >>> [spec.name for spec in check_train_metrics({"acc": max}, {}, func="f")]
        ['train_acc']
        >>> check_train_metrics({"loss": max}, {}, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: train_metrics['loss'] would be reported as 'train_loss', ...
    """
    if train_metrics is None:
        return ()
    if not isinstance(train_metrics, Mapping) or not train_metrics:
        raise TypeError(
            f"{func}: 'train_metrics' must be a non-empty mapping of names to metrics, such as "
            f"{{'acc': accuracy}}, or None, got {describe(train_metrics)}"
        )
    specs = []
    for name, metric in train_metrics.items():
        check_name(name, func=func, what="each name in 'train_metrics'")
        key = f"train_{name}"
        if key in RESERVED_KEYS or key in extra:
            where = "the event's own key" if key in RESERVED_KEYS else "a key of 'extra'"
            raise ValueError(
                f"{func}: train_metrics[{name!r}] would be reported as {key!r}, {where}; "
                f"name it otherwise"
            )
        check_metric(metric, func=func, arg=f"train_metrics[{name!r}]", last_label=last_label)
        specs.append(MetricSpec(key, metric, is_stateful_metric(metric), f"train metric {name!r}"))
    return tuple(specs)


def _labels(labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    return () if labels is None else (labels,)


class TrainMetrics:
    """One model's training metrics over an epoch."""

    def __init__(self, specs: Sequence[MetricSpec], *, func: str) -> None:
        self.specs, self.func = tuple(specs), func
        self.fns = {spec.name: [spec.fn] for spec in self.specs}
        self.sums: dict[str, list[Value | None]] = {}

    def begin(self, device: torch.device) -> None:
        """Start an epoch: nothing summed, the stateful metrics reset (and on ``device``)."""
        self.sums = {spec.name: [None] for spec in self.specs}
        for spec in self.specs:
            spec.prepare(device)

    @torch.no_grad()
    def add(self, prediction: torch.Tensor, labels: torch.Tensor | None, size: int) -> None:
        """Add one batch of ``size`` rows."""
        pred, found = prediction.detach(), _labels(labels)
        for spec in self.specs:
            add(
                spec, 0, pred, found, func=self.func, fns=self.fns, sums=self.sums, size=size,
                chunked=True, where="",
            )  # fmt: skip

    def values(self, n_rows: int) -> dict[str, Value]:
        """Each ``train_<name>`` of the epoch, not yet read back."""
        found = results(self.func, self.specs, self.sums, self.fns, [(n_rows, True)])
        return {name: entries[0] for name, entries in found.items()}


class MemberTrainMetrics:
    """The training metrics of an ensemble's K members over an epoch.

    A plain callable runs once per batch for all members under ``torch.func.vmap`` (member
    ``k``'s value is the callable on ``pred[k]``); one that cannot run under ``vmap`` (it reads
    a value back, say) is called member by member from then on.
    """

    def __init__(self, specs: Sequence[MetricSpec], members: int, *, func: str) -> None:
        self.specs, self.k, self.func = tuple(specs), members, func
        self.fns = {
            spec.name: [copy.deepcopy(spec.fn) for _ in range(members)]
            if spec.stateful
            else [spec.fn]
            for spec in self.specs
        }
        self.vmap = MemberVmap()  # plain metrics under vmap, or member by member
        self.sums: dict[str, Any] = {}

    def begin(self, device: torch.device) -> None:
        """Start an epoch: nothing summed, each member's stateful metrics reset."""
        dtype = exact_dtype(device)
        self.sums = {
            spec.name: torch.zeros(self.k, dtype=dtype, device=device)
            for spec in self.specs
            if not spec.stateful
        }
        for spec in self.specs:
            if spec.stateful:
                for fn in self.fns[spec.name]:
                    prepare_metric(fn, device)

    @torch.no_grad()
    def add(
        self,
        output: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        each: bool,
        size: int,
        held: Sequence[int] = (),
    ) -> None:
        """Add one batch: ``output`` is ``(K, size, ...)``; the ``held`` members' is padding."""
        pred = output.detach()
        weights: Any = size
        if held:
            weights = torch.full((self.k,), float(size), dtype=torch.float64)
            weights[list(held)] = 0.0
            weights = weights.to(pred.device)
        for spec in self.specs:
            if spec.stateful:
                for k, fn in enumerate(self.fns[spec.name]):
                    if k not in held:
                        fn.update(pred[k], *_labels(_member(labels, k, each)))
                continue
            values = self._plain(spec, pred, labels, each)
            self.sums[spec.name] += values.to(self.sums[spec.name].dtype) * weights

    def _plain(
        self, spec: MetricSpec, pred: torch.Tensor, labels: torch.Tensor | None, each: bool
    ) -> torch.Tensor:
        values = self.vmap.values(spec, pred, labels, 0 if each else None)
        if values is not None:
            return values
        sums: dict[str, list[Value | None]] = {spec.name: [None] * self.k}
        fns = {spec.name: [spec.fn]}
        for k in range(self.k):
            add(
                spec, k, pred[k], _labels(_member(labels, k, each)), func=self.func, fns=fns,
                sums=sums, size=1, chunked=False, where=f" on member {k}",
            )  # fmt: skip
        device = pred.device
        return torch.stack([torch.as_tensor(v, device=device).reshape(()) for v in sums[spec.name]])

    def values(self, counts: Sequence[int]) -> dict[str, list[Value]]:
        """Each ``train_<name>`` of the epoch per member, not yet read back."""
        out: dict[str, list[Value]] = {}
        for spec in self.specs:
            if spec.stateful:
                shape = [(n, True) for n in counts]
                out.update(results(self.func, [spec], {}, self.fns, shape))
                continue
            total = self.sums[spec.name]
            rows = torch.tensor(list(counts), dtype=total.dtype, device=total.device)
            out[spec.name] = list((total / rows).unbind())
        return out


def _member(labels: torch.Tensor | None, k: int, each: bool) -> torch.Tensor | None:
    return labels[k] if each and labels is not None else labels
