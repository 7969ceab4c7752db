"""The eager per-batch loop of :func:`fitstream.epoch_stream`, and its explanation of bad losses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..._internal.forward_errors import forward
from .._shared import explain_bad_loss as explain_loss

__all__ = ["Loop", "explain_bad_loss", "zero_grad_of"]

_FUNC = "epoch_stream"

_backward: Callable[[torch.Tensor], None] = torch.Tensor.backward


def zero_grad_of(optimizer: Any) -> Callable[[], Any]:
    """The optimizer's ``zero_grad``, with ``set_to_none=True`` for a torch optimizer.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> zero_grad_of(opt).keywords
        {'set_to_none': True}
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        return functools.partial(optimizer.zero_grad, set_to_none=True)
    return optimizer.zero_grad  # type: ignore[no-any-return]


class Loop:
    """The per-batch work of one epoch, with every lookup done once, outside the loop."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        zero_grad: Callable[[], Any],
        step: Callable[[], Any],
        last_label: bool,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.zero_grad = zero_grad
        self.step = step
        self.last_label = last_label

    def run(self, data: tuple[torch.Tensor, ...], batches: list[slice]) -> list[torch.Tensor]:
        """Train on each batch of rows in turn; return the detached batch losses."""
        model, loss_fn, zero_grad, step = self.model, self.loss_fn, self.zero_grad, self.step
        backward = _backward
        losses: list[torch.Tensor] = []
        keep = losses.append
        loss: Any = None
        last_label = self.last_label
        inputs, labels = (data[:-1] if last_label else data), data[-1]
        try:
            for rows in batches:
                zero_grad()
                batch = [tensor[rows] for tensor in inputs]
                prediction = forward(model, batch, func=_FUNC, arg="train_data")
                loss = loss_fn(prediction, labels[rows]) if last_label else loss_fn(prediction)
                backward(loss)
                step()
                keep(loss.detach())
        except (TypeError, RuntimeError) as exc:
            explain_bad_loss(loss, exc)
            raise
        return losses


def explain_bad_loss(loss: object, exc: BaseException) -> None:
    """:func:`._shared.explain_bad_loss` in ``epoch_stream``'s words."""
    explain_loss(loss, exc, func=_FUNC)
