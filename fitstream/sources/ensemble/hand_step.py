"""The forward and backward pass of a stacked MLP with its gradients written by hand.

For the commonest ensemble (an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise
activations, trained with cross-entropy on class indices, MSE or L1 at mean reduction) the
backward pass is a handful of batched products. Autograd records a node per operator and runs
its engine over them, a cost that dwarfs the arithmetic of K small members. Measured on one CPU
thread (``benchmarks/bench_ensemble.py``, same machine, alternating runs): a 40-member digits
grid's epoch (MLP 64-32-10, batch 32) took 54 ms through autograd and 41 ms by hand; on the tiny
regression workload (MLP 16-32-1) a 32-member ensemble's epoch took 0.32 s and 0.16 s.

:func:`hand_step` writes each member's gradients straight into the ensemble's gradient slabs,
computed by the same formulas autograd applies (the activations' backward through the same ATen
functions), so they equal autograd's to float rounding: the products sum in another order.

Anything else (another loss or activation, an activation in place that the gradient needs,
mixed precision, gradient accumulation, a tensor hook on a stacked parameter, labels that the
direct loss would not take) goes through autograd as before: :func:`hand_step` returns
``None``, or its step returns ``None`` for that batch. The training loop takes it on the CPU,
where it was measured; on a GPU the step stays with autograd (and ``cuda_graphs=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .member_losses import class_indices_fit, regression_losses
from .mlp import Plan, mlp_forward
from .stacking import Ensemble

__all__ = ["HandStep", "hand_step"]

Tensor = torch.Tensor
_aten = torch.ops.aten

# d(loss)/d(input) of an activation from d(loss)/d(output), its input and its output: the
# functions autograd itself calls for these modules.
_ACTIVATION_GRADS: dict[type, Callable[[Tensor, Tensor, Tensor, Any], Tensor]] = {
    nn.ReLU: lambda d, x, y, m: _aten.threshold_backward(d, y, 0),
    nn.Tanh: lambda d, x, y, m: _aten.tanh_backward(d, y),
    nn.Sigmoid: lambda d, x, y, m: _aten.sigmoid_backward(d, y),
    nn.Identity: lambda d, x, y, m: d,
    nn.GELU: lambda d, x, y, m: _aten.gelu_backward(d, x, approximate=m.approximate),
    nn.SiLU: lambda d, x, y, m: _aten.silu_backward(d, x),
    nn.LeakyReLU: lambda d, x, y, m: _aten.leaky_relu_backward(d, x, m.negative_slope, False),
}
_NEEDS_INPUT = (nn.GELU, nn.SiLU, nn.LeakyReLU)  # their gradient reads the activation's input

Layer = tuple[str, str | None]  # a Linear's weight and bias names
Done = tuple[Tensor, Tensor]  # the outputs and the (K,) losses
# f(outputs, labels, each) -> ((K,) losses, d losses.sum() / d outputs), or None
LossStep = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor] | None]


class HandStep:
    """A stacked MLP's step with its gradients by hand; see :func:`hand_step`."""

    def __init__(
        self,
        plan: Plan,
        params: dict[str, Tensor],
        loss: LossStep,
        grads: dict[str, Tensor],
        *,
        classes: int | None,
        ignore_index: int | None,
    ) -> None:
        self.plan, self.params, self.loss, self.grads = plan, params, loss, grads
        self.first = next(i for i, step in enumerate(plan) if isinstance(step, tuple))
        # for cross-entropy: the labels must index the outputs, and none be ignored
        self.classes, self.ignore_index = classes, ignore_index
        self._checked: tuple[Tensor, int, bool] | None = None

    def fits(self, labels: Tensor) -> bool:
        """Whether the epoch's ``labels`` are all ones the step takes (read once a version).

        For cross-entropy: class indices within the outputs, none ignored. Others (out of
        range, ``ignore_index``) go through autograd, which says what is wrong with them or
        ignores them as asked.
        """
        if self.classes is None:
            return True
        checked = self._checked  # the tensor itself is kept: an id can be reused
        if checked is not None and checked[0] is labels and checked[1] == labels._version:
            return checked[2]
        ok = not labels.is_floating_point() and not labels.is_complex()
        if ok and labels.numel():
            low, high = torch.aminmax(labels)
            ok = int(low) >= 0 and int(high) < self.classes
            ignored = self.ignore_index
            if ok and ignored is not None and 0 <= ignored < self.classes:
                ok = not bool((labels == ignored).any())
        self._checked = (labels, labels._version, ok)
        return ok

    def __call__(self, x: Tensor, labels: Tensor, each: bool) -> Done | None:
        """The outputs and ``(K,)`` losses on one batch, the gradients written.

        ``None`` for a batch the step does not take: it then goes through autograd.
        """
        if x.dim() != (3 if each else 2):
            return None
        plan, params = self.plan, self.params
        with torch.no_grad():
            kept: list[tuple[Tensor, Tensor]] = []  # each step's input and output
            h = mlp_forward(plan, params, x, kept)
            done = self.loss(h, labels, each)
            if done is None:
                return None
            losses, d = done
            for i in range(len(plan) - 1, self.first - 1, -1):
                step, (x_in, y) = plan[i], kept[i]
                if isinstance(step, nn.Module):
                    d = _ACTIVATION_GRADS[type(step)](d, x_in, y, step)
                    continue
                _layer_grads(d, x_in, step, self.grads)
                if i > self.first:  # below the first layer: the data, no gradient needed
                    d = torch.bmm(d, params[step[0]])
            return h, losses


def hand_step(ensemble: Ensemble, loss_fn: object, grads: dict[str, Tensor]) -> HandStep | None:
    """The hand-written step for ``ensemble`` and ``loss_fn``; ``None`` where there is none.

    ``grads`` maps each trainable parameter's name to its ``(K, ...)`` gradient, where the step
    writes it. There is a step for an ``nn.Sequential`` of ``nn.Linear`` layers and the
    activations in :data:`_ACTIVATION_GRADS`, with ``nn.CrossEntropyLoss`` (mean, no class
    weights, no label smoothing), ``nn.MSELoss`` or ``nn.L1Loss`` (mean).

    Example:
        >>> from fitstream import Ensemble
        >>> nets = [nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)) for _ in range(2)]
        >>> ensemble = Ensemble(nets)
        >>> slabs = ensemble._trainable_slabs()
        >>> grads = {n: g for slab in slabs for n, g in zip(slab.names, slab.grads)}
        >>> step = hand_step(ensemble, nn.CrossEntropyLoss(), grads)
        >>> outputs, losses = step(torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]), False)
        >>> tuple(outputs.shape), tuple(losses.shape), tuple(grads["0.weight"].shape)
        ((2, 5, 2), (2,), (2, 4, 3))
        >>> hand_step(ensemble, nn.CrossEntropyLoss(label_smoothing=0.1), grads) is None
        True
    """
    plan = ensemble._mlp
    loss = _loss(loss_fn)
    if plan is None or loss is None:
        return None
    for step in plan:
        if isinstance(step, nn.Module):
            if type(step) not in _ACTIVATION_GRADS:
                return None
            if isinstance(step, _NEEDS_INPUT) and getattr(step, "inplace", False):
                return None  # its input, which the gradient reads, is overwritten
    params = ensemble._params
    last = [step for step in plan if isinstance(step, tuple)][-1]
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        classes = int(params[last[0]].shape[1])
        ignored = int(loss_fn.ignore_index)
        return HandStep(plan, params, loss, grads, classes=classes, ignore_index=ignored)
    return HandStep(plan, params, loss, grads, classes=None, ignore_index=None)


def _layer_grads(d: Tensor, x_in: Tensor, layer: Layer, grads: dict[str, Tensor]) -> None:
    """A layer's weight and bias gradients from ``d`` (``(K, B, out)``), into ``grads``."""
    weight, bias = grads.get(layer[0]), None if layer[1] is None else grads.get(layer[1])
    if weight is not None:
        dt = d.transpose(1, 2)
        if x_in.dim() == 2:
            weight.copy_(torch.matmul(dt, x_in))
        else:
            torch.bmm(dt, x_in, out=weight)
    if bias is not None:
        torch.sum(d, 1, out=bias)


def _loss(loss_fn: object) -> LossStep | None:
    """The loss and its gradient (:data:`LossStep`) for the losses done by hand, else None."""
    kind = type(loss_fn)
    if kind in (nn.MSELoss, nn.L1Loss) and getattr(loss_fn, "reduction", None) == "mean":
        return _regression(kind is nn.MSELoss)
    if kind is nn.CrossEntropyLoss:
        ce: Any = loss_fn
        if ce.reduction == "mean" and ce.weight is None and ce.label_smoothing == 0.0:
            return _classification
    return None


def _regression(squared: bool) -> LossStep:
    def regression(out: Tensor, labels: Tensor, each: bool) -> tuple[Tensor, Tensor] | None:
        done = regression_losses(out, labels, each, squared=squared)
        if done is None:
            return None
        losses, diff = done  # the losses are already computed from diff: it may change in place
        n = out[0].numel()
        return losses, (diff.mul_(2.0 / n) if squared else diff.sign_().div_(n))

    return regression


def _classification(out: Tensor, labels: Tensor, each: bool) -> tuple[Tensor, Tensor] | None:
    """Cross-entropy on class indices (their range checked once an epoch, :meth:`HandStep.fits`)."""
    if not class_indices_fit(out, labels, each):
        return None
    k, batch, _ = out.shape
    # the classes on dim 1, as the direct loss takes them (member_losses)
    log_p = torch.log_softmax(out.transpose(1, 2), dim=1)
    index = (labels if each else labels.expand(k, batch)).unsqueeze(1)
    losses = log_p.gather(1, index).sum((1, 2)).div_(-batch)
    # softmax minus the one-hot labels, over the batch: d mean(-log p[label]) / d logits
    d = log_p.exp_().scatter_add_(1, index, _minus_one(index, log_p)).div_(batch)
    return losses, d.transpose(1, 2)


def _minus_one(index: Tensor, like: Tensor) -> Tensor:
    return torch.full((), -1.0, dtype=like.dtype, device=like.device).expand(index.shape)
