"""What :func:`~fitstream.ensemble_stream` gives each member of its own: rows and hparams.

``rows[k]`` are the rows of the training data member ``k`` trains on (a fold's train part, a
bootstrap sample). Each epoch, :func:`member_orders` draws every member's order of its rows,
and :func:`rows_epoch` trains all members along their orders, gathering each batch per member
(the data is never copied per member). Members whose row counts differ take different numbers
of steps: at a step where some member has no batch, or a batch of another size, that member
is held (its weights and optimizer state put back after the shared step), so it moves exactly
as it would alone.

``hparams[k]`` are plain values naming member ``k``'s setting (``{"fold": 2}``), checked by
:func:`check_member_hparams` and shown beside its optimizer's hyperparameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..._internal.checks import describe
from ..._internal.optimizers import hparams_of
from ..._internal.rows import padded
from .._shared import RESERVED_KEYS, stack_losses
from .loop import EnsembleLoop

__all__ = ["check_member_hparams", "member_orders", "rows_epoch", "steps_of"]

_PLAIN = (str, int, float, bool)
_RESERVED = RESERVED_KEYS | {"member", "active", "hparams"}


def check_member_hparams(
    hparams: object, optimizers: Sequence[torch.optim.Optimizer], *, func: str
) -> list[dict[str, Any]] | None:
    """Check ``hparams``: one dict of plain values per member, clashing with no own key.

    Example:
        >>> opts = [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)]
        >>> check_member_hparams([{"fold": 0}], opts, func="f")
        [{'fold': 0}]
        >>> check_member_hparams([{"lr": 0.2}], opts, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: 'hparams[0]' sets 'lr', which member 0's optimizer already reports ...
    """
    if hparams is None:
        return None
    if not isinstance(hparams, list | tuple):
        raise TypeError(
            f"{func}: 'hparams' must be a list of dicts, one per member (such as "
            f"[{{'fold': 0}}, {{'fold': 1}}]), got {describe(hparams)}"
        )
    if len(hparams) != len(optimizers):
        raise ValueError(
            f"{func}: 'hparams' must hold one dict per member: got {len(hparams)} for "
            f"{len(optimizers)} members"
        )
    out = []
    for k, (given, opt) in enumerate(zip(hparams, optimizers, strict=True)):
        arg = f"'hparams[{k}]'"
        if not isinstance(given, Mapping):
            raise TypeError(f"{func}: {arg} must be a dict of plain values, got {describe(given)}")
        own = hparams_of(opt)
        for name, value in given.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"{func}: the keys of {arg} must be non-empty str, got {name!r}")
            if isinstance(value, float) and math.isnan(value):
                raise ValueError(
                    f"{func}: {arg}[{name!r}] is NaN, which cannot be a setting: NaN equals "
                    "nothing, so no member could be grouped with it; give the setting a value "
                    "(or leave the name out)"
                )
            if not isinstance(value, _PLAIN):
                raise TypeError(
                    f"{func}: {arg}[{name!r}] must be a str, int, float or bool (a value a "
                    f"table or a TensorBoard HParams view can show), got {describe(value)}"
                )
            if name in own:
                raise ValueError(
                    f"{func}: {arg} sets {name!r}, which member {k}'s optimizer already "
                    f"reports ({name}={own[name]!r}); set it on the optimizer, or name the "
                    "setting otherwise"
                )
            if name in _RESERVED:
                raise ValueError(
                    f"{func}: {arg} sets {name!r}, a key the events and tables use "
                    f"themselves ({sorted(_RESERVED)}); name the setting otherwise"
                )
        out.append(dict(given))
    return out


def steps_of(counts: Sequence[int], batch_size: int) -> list[int]:
    """Each member's optimizer steps per epoch: its row count in batches, the last one short.

    Example:
        >>> steps_of([64, 65, 10], 32)
        [2, 3, 1]
    """
    return [-(-n // batch_size) for n in counts]


def member_orders(
    rows: Sequence[torch.Tensor],
    shuffle: bool,
    generator: torch.Generator | Sequence[torch.Generator] | None,
) -> list[torch.Tensor]:
    """Each member's rows in the order it visits them this epoch.

    Without shuffling, ``rows[k]`` as given. With a list of generators, member ``k``'s rows
    permuted by ``torch.randperm(len(rows[k]), generator=generator[k])``, the draw
    :func:`~fitstream.epoch_stream` makes on the data ``X[rows[k]]``; with one generator (or
    none), the K permutations are drawn from it one after the other, member 0 first.

    Example:
        >>> rows = [torch.tensor([5, 6, 7]), torch.tensor([1, 2])]
        >>> [o.tolist() for o in member_orders(rows, False, None)]
        [[5, 6, 7], [1, 2]]
        >>> sorted(member_orders(rows, True, torch.Generator().manual_seed(0))[0].tolist())
        [5, 6, 7]
    """
    if not shuffle:
        return list(rows)
    generators = generator if isinstance(generator, list | tuple) else [generator] * len(rows)
    return [
        each.index_select(0, torch.randperm(each.numel(), device=each.device, generator=g))
        for each, g in zip(rows, generators, strict=True)
    ]


def rows_epoch(
    loop: EnsembleLoop,
    data: tuple[torch.Tensor, ...],
    orders: Sequence[torch.Tensor],
    batch_size: int,
) -> torch.Tensor:
    """One epoch along each member's own order; return the size-weighted loss sums, ``(K,)``.

    The steps every member takes with a full batch run as one stacked gather per batch. The
    rest, where members run out of rows at different steps, run size by size: at step ``j``
    the members whose batch has the same size train together while the others are held.
    """
    counts = [int(o.numel()) for o in orders]
    common = min(counts) // batch_size  # full batches every member has
    total: torch.Tensor | None = None
    if common:
        stacked = torch.stack([o[: common * batch_size] for o in orders])
        batches = [slice(j * batch_size, (j + 1) * batch_size) for j in range(common)]
        total = stack_losses(loop.run(data, batches, stacked)).sum(0) * batch_size
    device = orders[0].device
    for j in range(common, max(steps_of(counts, batch_size))):
        start = j * batch_size
        sizes = [min(max(n - start, 0), batch_size) for n in counts]
        for size in sorted({s for s in sizes if s}, reverse=True):
            # the held members' rows are padding: their losses and steps are put aside
            index = torch.stack(
                [
                    padded(o[start : start + min(s, size)], size)
                    for o, s in zip(orders, sizes, strict=True)
                ]
            )
            held = [k for k, s in enumerate(sizes) if s != size]
            losses = loop.run(data, [slice(0, size)], index, held=held, position=j)[0]
            weight = torch.tensor([size if s == size else 0 for s in sizes], device=device)
            part = losses * weight
            total = part if total is None else total + part
    assert total is not None  # every member has at least one row
    return total
