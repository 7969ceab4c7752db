"""MLPs that differ only in hidden widths, trained in one ensemble: each padded to the widest.

An ensemble stacks members of one architecture, so a search over widths would train each width
in an ensemble of its own, each smaller and dearer per member. But an MLP (an ``nn.Sequential``
of ``nn.Linear`` layers and activations ``f`` with ``f(0) = 0``, such as ReLU, GELU or Tanh)
computes the same function when its hidden layers get extra units whose weights and biases
are zero: such a unit outputs ``f(0) = 0`` and feeds nothing forward. Its gradients are zero
too (the weights after it are zero, and it sees a zero), so SGD (momentum, Nesterov, weight
decay) and Adam or AdamW (decoupled decay, amsgrad) leave its weights at exactly zero: the
padded model trains as the narrow one does, to the rounding of sums over the padded
dimension (about 1e-7 relative in float32).

So the search trains each such trial on a *carrier*: a copy of its model padded to the widest
hidden widths this worker has seen in its family (same depth, inputs, outputs, activations,
dtype and optimizer kind), with an optimizer of the trial's kind and settings. Trials of one
family and carrier stack into one ensemble whatever their widths. The trial's own model gets
its trained weights back, cut to its shape (:func:`cut_state`).

Padding trades arithmetic for fewer ensembles, which pays while the arithmetic is small: a
training step of an ensemble costs a fixed part (the operators' calls, about 0.3 ms on a CPU
core for a small MLP) and a part per member and parameter (about 9e-6 ms, measured on the
digits MLP 64-w-10 with Adam: ``benchmarks/bench_grid.py``, ``bench_search.py``). So a trial is
padded only when the parameters its padding adds, times the worker's ``slots``, stay within
``PAD_BUDGET``: about one step's fixed part. A 16-wide MLP padded to 64 (3,600 parameters more)
is padded in 16 slots (a search, whose three widths would split 16 slots into three small
ensembles) but not in 80 (a grid whose widths fill two ensembles of 40 anyway).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

__all__ = ["PAD_BUDGET", "Carrier", "carrier_of", "cut_state", "family_of"]

PAD_BUDGET = 65_536
"""A trial is padded while (parameters added) x slots stays within this (see above)."""

# activations with f(0) = 0, which an unused unit passes on as 0
_ZERO_AT_ZERO = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Softsign, nn.Hardswish, nn.Identity,
)  # fmt: skip
_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)

Family = Hashable
Widths = tuple[int, ...]


def _zero_at_zero(module: nn.Module) -> bool:
    if type(module) is nn.Hardtanh:
        return bool(module.min_val <= 0 <= module.max_val)
    return type(module) in _ZERO_AT_ZERO


def family_of(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Family, Widths] | None:
    """The family of a paddable MLP and its hidden widths; None if it is not one.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> family, widths = family_of(model, torch.optim.Adam(model.parameters()))
        >>> widths
        (16,)
        >>> family_of(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()),
        ...           torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)) is None
        True
    """
    if type(model) is not nn.Sequential or any(True for _ in model.buffers()):
        return None
    if type(optimizer) not in _OPTIMIZERS or len(optimizer.param_groups) != 1:
        return None
    params = list(model.parameters())
    if [id(p) for p in optimizer.param_groups[0]["params"]] != [id(p) for p in params]:
        return None
    if not all(p.requires_grad for p in params):
        return None
    layers: list[Hashable] = []
    linears: list[nn.Linear] = []
    for module in model.children():
        if type(module) is nn.Linear:
            linears.append(module)
            layers.append(("Linear", module.bias is not None))
        elif _zero_at_zero(module):
            layers.append(repr(module))
        else:
            return None
    if len(linears) < 2:
        return None
    first = linears[0].weight
    kind = "Adam" if isinstance(optimizer, torch.optim.Adam) else type(optimizer).__name__
    family = (
        tuple(layers), linears[0].in_features, linears[-1].out_features, str(first.dtype),
        str(first.device), kind,
    )  # fmt: skip
    return family, tuple(layer.out_features for layer in linears[:-1])


def _size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Carrier:
    """A trial's model padded to ``widths``, with an optimizer of the trial's kind and settings."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, widths: Widths) -> None:
        self.model = _padded(model, widths)
        self.optimizer = _like(optimizer, self.model)


def carrier_of(
    model: nn.Module, optimizer: torch.optim.Optimizer, widest: dict[Family, Widths],
    slots: int,
) -> Carrier | None:  # fmt: skip
    """The carrier a trial trains on, widening ``widest`` (per family) to the trial's widths.

    None when the trial is no paddable MLP, or the parameters its padding adds, times
    ``slots``, exceed ``PAD_BUDGET`` (it then trains as it is).
    """
    found = family_of(model, optimizer)
    if found is None:
        return None
    family, widths = found
    seen = widest.get(family, widths)
    wider = tuple(max(a, b) for a, b in zip(seen, widths, strict=True))
    widest[family] = wider
    added = _size_at(model, wider) - _size(model)
    if added * slots > PAD_BUDGET:
        return None
    return Carrier(model, optimizer, wider)


def _size_at(model: nn.Module, widths: Widths) -> int:
    """The parameters of ``model`` with hidden ``widths`` (without building it)."""
    linears = [m for m in model.children() if type(m) is nn.Linear]
    sizes = [linears[0].in_features, *widths, linears[-1].out_features]
    return sum(
        a * b + (b if layer.bias is not None else 0)
        for a, b, layer in zip(sizes[:-1], sizes[1:], linears, strict=True)
    )


@torch.no_grad()
def _padded(model: nn.Module, widths: Widths) -> nn.Module:
    """A copy of ``model`` whose hidden layers have ``widths`` units, the new ones all zero."""
    layers: list[nn.Module] = []
    linear = 0
    children = list(model.children())
    count = sum(type(m) is nn.Linear for m in children)
    for module in children:
        if type(module) is not nn.Linear:
            layers.append(copy.deepcopy(module))
            continue
        inputs = module.in_features if linear == 0 else widths[linear - 1]
        outputs = module.out_features if linear == count - 1 else widths[linear]
        wide = nn.Linear(inputs, outputs, bias=module.bias is not None,
                         device=module.weight.device, dtype=module.weight.dtype)  # fmt: skip
        wide.weight.zero_()
        wide.weight[: module.out_features, : module.in_features].copy_(module.weight)
        if module.bias is not None:
            assert wide.bias is not None
            wide.bias.zero_()
            wide.bias[: module.out_features].copy_(module.bias)
        layers.append(wide)
        linear += 1
    carrier = nn.Sequential(*layers)
    carrier.train(model.training)
    return carrier


def _like(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """An optimizer of ``optimizer``'s class and settings over ``model``'s parameters."""
    kind = type(optimizer)
    accepted = set(inspect.signature(kind.__init__).parameters) - {"self", "params"}
    settings: dict[str, Any] = {
        name: value
        for name, value in optimizer.param_groups[0].items()
        if name in accepted and name != "params"
    }
    return kind(model.parameters(), **settings)


def cut_state(carrier: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    """``carrier``'s weights cut to ``model``'s shapes: the trained narrow model's state.

    Example:
        >>> narrow = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
        >>> wide = _padded(narrow, (5,))
        >>> state = cut_state(wide, narrow)
        >>> all(torch.equal(state[k], v) for k, v in narrow.state_dict().items())
        True
    """
    own = model.state_dict()
    return {
        name: tensor[tuple(slice(0, size) for size in own[name].shape)].clone()
        for name, tensor in carrier.state_dict().items()
    }
