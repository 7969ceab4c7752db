"""Snapshots that put a model, its optimizer and the random generators back as they were.

Warm-up steps before a CUDA-graph capture, and a capture that fails, must leave no trace: the
values go back into the *same* tensor objects, since a captured graph keeps reading those.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .step_state import model_tensors, optimizer_params

__all__ = ["RandomState", "Snapshot"]


class Snapshot:
    """The values of a model, its optimizer and the random generators, to put back later.

    :meth:`restore` writes the values back into the *same* tensor objects (a captured graph
    keeps reading those), puts back the optimizer's state entries and hyperparameters as they
    were (state created since is removed), each parameter's ``.grad`` object, and the CPU and
    CUDA random generator states.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> opt = torch.optim.Adam(model.parameters(), lr=0.1)
        >>> before = model.weight.detach().clone()
        >>> snap = Snapshot(model, opt, torch.device("cpu"))
        >>> model(torch.ones(4, 2)).sum().backward()
        >>> opt.step()
        >>> snap.restore()
        >>> torch.equal(model.weight, before), len(opt.state)
        (True, 0)
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
    ) -> None:
        self._optimizer = optimizer
        seen: set[int] = set()
        tensors: list[torch.Tensor] = []
        for _, tensor in model_tensors(model):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                tensors.append(tensor)
        extra = [p for p in optimizer_params(optimizer) if id(p) not in seen]
        with torch.no_grad():
            self._values = [(t, t.detach().clone()) for t in (*tensors, *extra)]
        params = [*model.parameters(), *extra]
        self._grads = [(p, p.grad) for p in params]
        self._state: list[tuple[torch.Tensor, dict[Any, Any], list[tuple[Any, Any, Any]]]] = []
        for p, entries in optimizer.state.items():
            saved = [(name, value, _copy(value)) for name, value in entries.items()]
            self._state.append((p, entries, saved))
        self._groups = [
            (group, {k: copy.copy(v) for k, v in group.items() if k != "params"})
            for group in optimizer.param_groups
        ]
        self._random = RandomState(device)

    def restore(self) -> None:
        """Put every recorded value back (see the class docstring)."""
        optimizer = self._optimizer
        with torch.no_grad():
            for tensor, value in self._values:
                tensor.copy_(value)
            for p, grad in self._grads:
                p.grad = grad
            kept = {id(p) for p, _, _ in self._state}
            for p in [p for p in optimizer.state if id(p) not in kept]:
                del optimizer.state[p]
            for p, entries, saved in self._state:
                entries.clear()
                for name, original, value in saved:
                    if isinstance(original, torch.Tensor):
                        original.copy_(value)
                        entries[name] = original
                    else:
                        entries[name] = value
                optimizer.state[p] = entries
        for group, hyper in self._groups:
            group.update(hyper)
        self._random.restore()


class RandomState:
    """The CPU random generator's state and, for a CUDA ``device``, that device's: to put back.

    Example:
        >>> saved = RandomState(torch.device("cpu"))
        >>> first = torch.rand(2)
        >>> saved.restore()
        >>> torch.equal(torch.rand(2), first)
        True
    """

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        """Put the recorded generator states back."""
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state(self._cuda, self._device)


def _copy(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return copy.deepcopy(value)
