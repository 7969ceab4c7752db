"""The per-batch work of :func:`~fitstream.ensemble_stream`: all members at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._member_losses import member_losses
from ._shared import explain_bad_loss
from .stacking import Ensemble
from .vectorised_optim import MemberSteps, VectorAdam, VectorSGD

__all__ = ["EnsembleLoop"]

_FUNC = "ensemble_stream"


class EnsembleLoop:
    """The per-batch work of one epoch for all members at once."""

    def __init__(
        self,
        ensemble: Ensemble,
        loss_fn: Callable[..., torch.Tensor],
        stepper: VectorSGD | VectorAdam | MemberSteps,
        last_label: bool,
    ) -> None:
        self.ensemble = ensemble
        self.stepper = stepper
        self.last_label = last_label
        self.leaves = list(ensemble.stacked)
        self.grads = [g for slab in ensemble._trainable_slabs() for g in slab.grads]
        self.k = len(ensemble)
        self.shared_losses = member_losses(loss_fn, last_label, each=False)
        self.each_losses = member_losses(loss_fn, last_label, each=True)

    def losses(self, inputs: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        """The K members' losses on one batch shared by all, shape ``(K,)``."""
        return self.shared_losses(self.ensemble(*inputs), labels)

    def losses_each(self, inputs: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        """The K members' losses, each on its own batch (inputs ``(K, B, ...)``)."""
        return self.each_losses(self.ensemble._forward_each(inputs), labels)

    def run(
        self,
        data: tuple[torch.Tensor, ...],
        batches: list[slice],
        orders: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Train every member on each batch of rows in turn; return the detached ``(K,)`` losses.

        With ``orders`` (``(K, n)`` row indices, one order per member) member ``k``'s batch is
        the rows ``orders[k, rows]``; without, every member gets ``data[rows]``.
        """
        stepper, leaves, grads = self.stepper, self.leaves, self.grads
        restore = self.ensemble._restore_frozen
        frozen = not all(self.ensemble._active)
        last_label = self.last_label
        inputs, labels = (data[:-1] if last_label else data), data[-1]
        out: list[torch.Tensor] = []
        keep = out.append
        for rows in batches:
            index: Any = rows if orders is None else orders[:, rows]
            compute = self.losses if orders is None else self.losses_each
            try:
                losses = compute([t[index] for t in inputs], labels[index] if last_label else None)
            except ValueError as exc:
                if "must only return Tensors" in str(exc):
                    raise TypeError(
                        f"{_FUNC}: 'loss_fn' must return a scalar tensor, got something else "
                        f"({exc})"
                    ) from exc
                raise
            if losses.shape != (self.k,) or not losses.requires_grad:
                _explain(losses, self.k)
            new = torch.autograd.grad(
                losses.sum(), leaves, allow_unused=True, materialize_grads=True
            )
            torch._foreach_copy_(grads, new)
            stepper.step()
            if frozen:
                restore()
            keep(losses.detach())
        return out


def _explain(losses: torch.Tensor, k: int) -> None:
    """Raise the error that says why a ``(K, ...)`` result of ``loss_fn`` cannot be trained."""
    error = RuntimeError("the members' losses cannot be back-propagated")
    explain_bad_loss(
        losses[0] if losses.dim() >= 1 else losses, error, func=_FUNC, per="member and batch"
    )
    raise error
