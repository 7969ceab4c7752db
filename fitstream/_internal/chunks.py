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
from .forward_errors import explain_forward, forward
from .metrics import MemberVmap, MetricSpec, Value, add_weighted, scalar
from .rows import gather, padded

__all__ = ["Chunks", "MemberChunks", "member_outputs"]


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
        self.vmap = MemberVmap()

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
            output = forward(model, inputs, func=self.func, arg="val_data")
            outputs = [output] if members is None else member_outputs(output, count, func=self.func)
            done: set[tuple[str, int]] = set()
            if members is not None and count > 1:  # the members' plain metrics in one call
                shared = labels[0] if labels else None
                done = _vmapped_sums(
                    self.vmap, self.specs, output, shared, label_dim=None, members=range(count),
                    size=size, chunked=[chunked] * count, sums=sums, func=self.func,
                )  # fmt: skip
            for k, pred in enumerate(outputs):
                where = "" if members is None else f" on member {k}"
                for spec in self.specs:
                    if (spec.name, k) in done:
                        continue
                    add(
                        spec, k, pred, labels, func=self.func, fns=fns, sums=sums, size=size,
                        chunked=chunked, where=where,
                    )  # fmt: skip
        return results(self.func, self.specs, sums, fns, [(self.n_total, chunked)] * count)


class MemberChunks:
    """Held-out tensors scored per member on its own rows, all members in one forward per chunk.

    Member ``k`` is evaluated on ``tensors[i][rows[k]]`` in chunks of ``batch_size`` of its
    rows, as :class:`Chunks` would cut that data alone. Per chunk, every member's rows are
    gathered into one ``(K, size, ...)`` batch (a member with fewer rows is padded with some of
    its own, whose outputs are left out) and the ensemble runs each member on its own rows.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        rows: Sequence[torch.Tensor],
        specs: Sequence[MetricSpec],
        *,
        func: str,
        last_label: bool,
        batch_size: int | None,
    ) -> None:
        self.tensors, self.specs, self.func, self.last_label = tensors, specs, func, last_label
        self.counts = [int(each.numel()) for each in rows]
        most = max(self.counts)
        step = most if batch_size is None else min(batch_size, most)
        self.chunks: list[tuple[torch.Tensor, list[int]]] = []
        for start in range(0, most, step):
            size = min(step, most - start)
            sizes = [min(max(n - start, 0), size) for n in self.counts]
            index = torch.stack(
                [padded(each[start : start + n], size) for each, n in zip(rows, sizes, strict=True)]
            )
            self.chunks.append((index, sizes))
        self.shape = [
            (n, -(-n // (n if batch_size is None else min(batch_size, n))) > 1) for n in self.counts
        ]
        self.chunked = [each_chunked for _, each_chunked in self.shape]  # per member
        self.vmap = MemberVmap()

    def run(self, model: Any, members: Sequence[Any], fns: Mapping[str, Sequence[Any]]) -> Any:
        """Evaluate each of ``members`` (``model``'s) on its rows; the values per metric."""
        count = len(self.counts)
        if len(members) != count:
            raise ValueError(
                f"{self.func}: 'rows' holds {count} index tensors, but the event's ensemble has "
                f"{len(members)} members; give one per member"
            )
        sums: dict[str, list[Value | None]] = {spec.name: [None] * count for spec in self.specs}
        each = getattr(model, "_forward_each", None)
        tensors = self.tensors
        inputs_t, labels_t = (tensors[:-1], tensors[-1]) if self.last_label else (tensors, None)
        for index, sizes in self.chunks:
            flat = index.reshape(-1)
            inputs = [gather(t, flat, index.shape) for t in inputs_t]
            chosen = None if labels_t is None else gather(labels_t, flat, index.shape)
            stacked: torch.Tensor | None = None
            try:
                if callable(each):
                    stacked = each(inputs)
                    outputs = member_outputs(stacked, count, func=self.func)
                else:
                    outputs = [m(*(x[k] for x in inputs)) for k, m in enumerate(members)]
            except RuntimeError as exc:
                explain_forward(exc, members[0], inputs, func=self.func, arg="val_data")
                raise
            done = self._vmapped(stacked, chosen, sizes, sums) if stacked is not None else set()
            for k, (pred, size) in enumerate(zip(outputs, sizes, strict=True)):
                if not size:
                    continue
                labels = () if chosen is None else (chosen[k, :size],)
                chunked = self.chunked[k]
                for spec in self.specs:
                    if (spec.name, k) in done:
                        continue
                    add(
                        spec, k, pred[:size], labels, func=self.func, fns=fns, sums=sums,
                        size=size, chunked=chunked, where=f" on member {k}",
                    )  # fmt: skip
        return results(self.func, self.specs, sums, fns, self.shape)

    def _vmapped(
        self, stacked: torch.Tensor, chosen: torch.Tensor | None, sizes: list[int],
        sums: dict[str, list[Value | None]],
    ) -> set[tuple[str, int]]:  # fmt: skip
        """The plain metrics of the members whose chunks have one size, in one call each.

        Returns the ``(metric, member)`` pairs summed; the others are called member by member.
        """
        done: set[tuple[str, int]] = set()
        for size in sorted(set(sizes) - {0}, reverse=True):
            group = [k for k, n in enumerate(sizes) if n == size]
            if len(group) < 2:
                continue
            pred, labels = stacked, chosen
            if len(group) < len(sizes):
                index = torch.tensor(group, device=stacked.device)
                pred = pred.index_select(0, index)
                labels = None if labels is None else labels.index_select(0, index)
            if size < stacked.shape[1]:  # the rest of the chunk is padding
                pred = pred[:, :size]
                labels = None if labels is None else labels[:, :size]
            done |= _vmapped_sums(
                self.vmap, self.specs, pred, labels, label_dim=0, members=group, size=size,
                chunked=self.chunked, sums=sums, func=self.func,
            )  # fmt: skip
        return done


def _vmapped_sums(
    vmap: MemberVmap, specs: Sequence[MetricSpec], pred: torch.Tensor,
    labels: torch.Tensor | None, *, label_dim: int | None, members: Sequence[int], size: int,
    chunked: Sequence[bool], sums: dict[str, list[Value | None]], func: str,
) -> set[tuple[str, int]]:  # fmt: skip
    """Each plain metric for ``members`` (``pred``'s rows, in order) in one call, summed.

    Returns the ``(metric, member)`` pairs summed; a metric that cannot run under vmap is left
    to be called member by member.
    """
    done: set[tuple[str, int]] = set()
    for spec in specs:
        values = vmap.values(spec, pred, labels, label_dim)
        if values is None:
            continue
        for k, value in zip(members, values.unbind(0), strict=True):
            _sum(sums, spec, k, value, size, chunked=chunked[k], func=func)
            done.add((spec.name, k))
    return done


def _sum(
    sums: dict[str, list[Value | None]], spec: MetricSpec, k: int, value: object, size: int,
    *, chunked: bool, func: str,
) -> None:  # fmt: skip
    """Add member ``k``'s value of a plain metric on a chunk of ``size`` rows to its sum."""
    value = scalar(value, func=func, label=spec.label)
    sums[spec.name][k] = add_weighted(sums[spec.name][k], value, size) if chunked else value


def add(
    spec: MetricSpec,
    k: int,
    pred: torch.Tensor,
    labels: Sequence[torch.Tensor],
    *,
    func: str,
    fns: Mapping[str, Sequence[Any]],
    sums: dict[str, list[Value | None]],
    size: int,
    chunked: bool,
    where: str,
) -> None:
    """Add member ``k``'s chunk to a metric: update a stateful one, or sum a plain value."""
    try:
        if spec.stateful:
            fns[spec.name][k].update(pred, *labels)
            return
        value = spec.fn(pred, *labels)
        _sum(sums, spec, k, value, size, chunked=chunked, func=func)
    except Exception as exc:
        _note(exc, f"(raised by {func}'s {spec.label}{where})")
        raise


def results(
    func: str,
    specs: Sequence[MetricSpec],
    sums: Mapping[str, list[Value | None]],
    fns: Mapping[str, Sequence[Any]],
    shape: Sequence[tuple[int, bool]],
) -> dict[str, list[Value]]:
    """Each metric's values per member; ``shape[k]`` is member k's ``(rows, chunked)``."""
    values: dict[str, list[Value]] = {}
    owners: dict[str, str] = {}
    for spec in specs:
        for k, (n_total, chunked) in enumerate(shape):
            if spec.stateful:
                found = spec.results(fns[spec.name][k].compute(), func=func)
            else:
                total = sums[spec.name][k]
                assert total is not None  # at least one chunk ran
                found = [(spec.name, total / n_total if chunked else total)]
            for name, value in found:
                if owners.setdefault(name, spec.name) != spec.name:
                    raise ValueError(
                        f"{func}: {spec.label} gives the key {name!r}, which another "
                        f"metric already gives; rename one of them"
                    )
                values.setdefault(name, []).append(value)
    return values
