"""Agreement across processes: every rank stops at the same epoch, sums match on every rank."""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer

__all__ = ["agree_to_stop", "sum_across_ranks"]


def agree_to_stop(trainer: Trainer, wants_to_stop: bool) -> bool:
    """Return ``True`` on every rank if any rank wants to stop (one collective under DDP).

    Each rank calls it once at every epoch boundary, whatever it decided, so the collective
    always matches across ranks and no rank waits for another that already left.

    Example:
        >>> trainer = Trainer(accelerator="cpu", devices=1, logger=False)
        >>> agree_to_stop(trainer, False), agree_to_stop(trainer, True)
        (False, True)
    """
    if trainer.world_size <= 1:
        return wants_to_stop
    return bool(trainer.strategy.reduce_boolean_decision(wants_to_stop, all=False))


def sum_across_ranks(trainer: Trainer, value: torch.Tensor) -> torch.Tensor:
    """Sum ``value`` over all ranks (it is returned unchanged when there is only one).

    Example:
        >>> trainer = Trainer(accelerator="cpu", devices=1, logger=False)
        >>> sum_across_ranks(trainer, torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    if trainer.world_size <= 1:
        return value
    reduced = trainer.strategy.reduce(value, reduce_op="sum")
    assert isinstance(reduced, torch.Tensor)
    return reduced
