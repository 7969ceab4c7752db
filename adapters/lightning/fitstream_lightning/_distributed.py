"""Agreement across processes: every rank stops at the same epoch, sums match on every rank."""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer

__all__ = ["OtherRankFailed", "agree_on_failure", "agree_to_stop", "sum_across_ranks"]

_GO_ON, _STOP, _FAILED = 0, 1, 2


class OtherRankFailed(RuntimeError):
    """Raised on a rank whose run is fine when another rank's consumer or stages failed.

    Under DDP every rank runs the same stream. When one rank's consumer (an exception in its
    ``with fit_stream(...)`` block) or a stage of its ``StreamCallback`` raises, that rank
    ends with its own error and the others with this one, at the same epoch boundary; the
    failing rank's error says what went wrong.

    Example:
        >>> issubclass(OtherRankFailed, RuntimeError)
        True
    """


def _agree(trainer: Trainer, code: int) -> int:
    """The largest of every rank's code (one collective), so a failure outranks a stop."""
    if trainer.world_size <= 1:
        return code
    device = trainer.strategy.root_device
    reduced = trainer.strategy.reduce(torch.tensor(code, device=device), reduce_op="max")
    assert isinstance(reduced, torch.Tensor)
    return int(reduced.item())


def agree_on_failure(trainer: Trainer, *, func: str) -> None:
    """Tell the other ranks, at the epoch boundary they wait at, that this rank failed.

    Called instead of :func:`agree_to_stop` when this rank's consumer or stages raised, just
    before the error goes on: the other ranks then end with :class:`OtherRankFailed` rather
    than waiting in a collective for a process that has left.
    """
    if trainer.world_size > 1:
        _agree(trainer, _FAILED)


def agree_to_stop(trainer: Trainer, wants_to_stop: bool, *, func: str = "fit_stream") -> bool:
    """Return ``True`` on every rank if any rank wants to stop (one collective under DDP).

    Each rank calls it once at every epoch boundary, whatever it decided, so the collective
    always matches across ranks and no rank waits for another that already left. A rank that
    failed joins the same collective through :func:`agree_on_failure`; the others then raise
    :class:`OtherRankFailed`.

    Example:
        >>> trainer = Trainer(accelerator="cpu", devices=1, logger=False)
        >>> agree_to_stop(trainer, False), agree_to_stop(trainer, True)
        (False, True)
    """
    if trainer.world_size <= 1:
        return wants_to_stop
    agreed = _agree(trainer, _STOP if wants_to_stop else _GO_ON)
    if agreed == _FAILED:
        raise OtherRankFailed(
            f"{func}: another rank's consumer or stages failed at this epoch (step "
            f"{trainer.current_epoch}), so this rank (rank {trainer.global_rank}) stops too; "
            f"that rank's error says what went wrong"
        )
    return agreed == _STOP


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
