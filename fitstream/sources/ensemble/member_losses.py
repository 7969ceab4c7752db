"""Each member's loss from the stacked outputs ``(K, ...)``: ``loss_fn`` under vmap, or direct.

``loss_fn`` runs once per member through ``torch.func.vmap``. For the commonest loss modules
(``nn.MSELoss``, ``nn.L1Loss`` and ``nn.CrossEntropyLoss`` with class-index targets, mean
reduction, no class weights) the same per-member means are computed directly on the stacked
outputs, which skips vmap's per-call cost; anything else goes through vmap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import vmap
from torch.nn import functional as F

__all__ = ["class_indices_fit", "member_losses", "regression_losses", "targets_fit"]

MemberLosses = Callable[[torch.Tensor, Any], torch.Tensor]


def member_losses(
    loss_fn: Callable[..., torch.Tensor], last_label: bool, *, each: bool = False
) -> MemberLosses:
    """Return ``f(outputs, labels) -> (K,)`` that applies ``loss_fn`` to each member's output.

    ``labels`` are shared by the members, or with ``each`` stacked per member ``(K, B, ...)``.
    """

    def one(out: torch.Tensor, labels: Any) -> torch.Tensor:
        return loss_fn(out, labels) if last_label else loss_fn(out)

    vmapped: MemberLosses = vmap(one, in_dims=(0, 0 if each else None), randomness="different")
    direct = _direct(loss_fn, each) if last_label else None
    if direct is None:
        return vmapped

    def losses(outputs: torch.Tensor, labels: Any) -> torch.Tensor:
        result = direct(outputs, labels)
        return vmapped(outputs, labels) if result is None else result

    return losses


def _direct(
    loss_fn: object, each: bool
) -> Callable[[torch.Tensor, Any], torch.Tensor | None] | None:
    kind = type(loss_fn)
    if kind in (nn.MSELoss, nn.L1Loss) and getattr(loss_fn, "reduction", None) == "mean":
        squared = kind is nn.MSELoss

        def regression(outputs: torch.Tensor, labels: Any) -> torch.Tensor | None:
            done = regression_losses(outputs, labels, each, squared=squared)
            return None if done is None else done[0]

        return regression
    if kind is nn.CrossEntropyLoss:
        ce: Any = loss_fn
        if ce.reduction != "mean" or ce.weight is not None:
            return None

        def classification(outputs: torch.Tensor, labels: Any) -> torch.Tensor | None:
            if not class_indices_fit(outputs, labels, each):
                return None
            k, batch, _ = outputs.shape
            # The classes on dim 1, (K, C, B): the same numbers as (K * B, C) rows, but the
            # log-softmax over a short last dim is several times slower than across it.
            per_row = F.cross_entropy(
                outputs.transpose(1, 2),
                labels if each else labels.expand(k, batch),
                reduction="none",
                ignore_index=ce.ignore_index,
                label_smoothing=ce.label_smoothing,
            )
            counted: torch.Tensor = (labels != ce.ignore_index).sum(-1)
            return per_row.sum(1) / counted

        return classification
    return None


def targets_fit(outputs: torch.Tensor, labels: Any, each: bool) -> bool:
    """Whether ``labels`` are regression targets for the stacked ``outputs`` ``(K, B, ...)``.

    ``each``: one target tensor per member, ``(K, B, ...)``; else one shared, ``(B, ...)``.

    Example:
        >>> targets_fit(torch.zeros(3, 4, 2), torch.zeros(4, 2), False)
        True
    """
    expected = outputs.shape if each else outputs.shape[1:]
    return isinstance(labels, torch.Tensor) and labels.shape == expected


def class_indices_fit(outputs: torch.Tensor, labels: Any, each: bool) -> bool:
    """Whether ``labels`` are class indices for the stacked logits ``outputs`` ``(K, B, C)``.

    Example:
        >>> class_indices_fit(torch.zeros(3, 4, 10), torch.zeros(4, dtype=torch.long), False)
        True
    """
    return (
        isinstance(labels, torch.Tensor)
        and not labels.is_floating_point()
        and outputs.dim() == 3
        and labels.shape == (outputs.shape[:2] if each else outputs.shape[1:2])
    )


def regression_losses(
    outputs: torch.Tensor, labels: Any, each: bool, *, squared: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each member's mean squared (or absolute) error ``(K,)``, and the differences it is of.

    ``None`` if the targets don't fit. The differences, ``outputs - labels``, are what the hand
    step's gradient is made of: computed once for both. The values equal ``F.mse_loss`` and
    ``F.l1_loss`` without reduction, bit for bit.

    Example:
        >>> losses, diff = regression_losses(torch.ones(2, 3, 1), torch.zeros(3, 1), False,
        ...                                  squared=True)
        >>> losses, tuple(diff.shape)
        (tensor([1., 1.]), (2, 3, 1))
    """
    if not targets_fit(outputs, labels, each):
        return None
    diff = outputs - labels.expand_as(outputs)
    pointwise = diff.square() if squared else diff.abs()
    return pointwise.flatten(1).mean(1), diff
