"""The vectorised optimizers' stacked state, seen through each member's own optimizer.

The state of :class:`~fitstream.sources.ensemble.sgd.VectorSGD` and ``VectorAdam``
(momentum buffers, moments) is stacked like the weights: one ``(K, n)`` tensor per slab and
kind. :meth:`StateLink.publish` puts into ``optimizers[k].state[p]`` what torch keeps there
(``step`` as a tensor, the buffers as views into row ``k`` of the stacked tensors), so
``optimizers[k].state_dict()`` is member ``k``'s. :meth:`StateLink.adopt` copies into the
stacked state whatever a member's optimizer holds that is not those views: state loaded with
``load_state_dict`` (a resume), or left by an earlier stream.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .stacking import _Slab

__all__ = ["StateLink", "importable"]

SGD_KEYS = ("momentum_buffer",)
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def importable(optimizers: Sequence[torch.optim.Optimizer], kind: str) -> str:
    """Return ``""`` when the state the optimizers hold can be stacked, else why not."""
    keys = set(SGD_KEYS if kind == "sgd" else (*ADAM_KEYS, "step"))
    for k, opt in enumerate(optimizers):
        for group in opt.param_groups:
            steps: set[float] = set()
            for p in group["params"]:
                state = opt.state.get(p)
                if not state:
                    continue
                if not set(state) <= keys:
                    return f"optimizers[{k}] holds state the vectorised step does not keep"
                for key, value in state.items():
                    if key == "step":
                        steps.add(float(value))
                    elif value is not None and (
                        not isinstance(value, torch.Tensor) or value.shape != p.shape
                    ):
                        return f"optimizers[{k}] holds a {key!r} unlike its parameter"
            if len(steps) > 1:
                return f"optimizers[{k}] holds different step counts within one param group"
    return ""


def _step_tensors(n: int, group: dict[str, Any], param: torch.Tensor) -> torch.Tensor:
    """``n`` step counts as torch's Adam keeps one (float, on the device if capturable)."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    on_device = bool(group.get("capturable", False) or group.get("fused", False))
    return torch.zeros(n, dtype=dtype, device=param.device if on_device else "cpu")


def _intact(state: dict[str, Any], given: tuple[Any, ...]) -> bool:
    """Whether ``state`` still holds exactly the tensors published in it."""
    return len(state) == len(given) and all(map(operator.is_, state.values(), given))


class StateLink:
    """Per slab and member: the step count, whether it holds state, and its published entries.

    ``lists`` maps a state key to the stepper's per-slab list of stacked ``(K, n)`` tensors
    (``None`` until a step creates one; :meth:`adopt` creates zeros where it needs one).
    ``wanted(group)`` lists the keys a member keeps under its param group's current settings.
    """

    def __init__(
        self,
        slabs: list[_Slab],
        members: Sequence[nn.Module],
        optimizers: Sequence[torch.optim.Optimizer],
        lists: dict[str, list[Any]],
        *,
        wanted: Callable[[dict[str, Any]], tuple[str, ...]],
        counted: bool,
    ) -> None:
        self.slabs, self.optimizers, self.lists = slabs, list(optimizers), lists
        self.keys = tuple(lists)
        self.wanted, self.counted = wanted, counted
        k = len(members)
        self.params = [[[m.get_parameter(n) for n in s.names] for m in members] for s in slabs]
        self.counts = [[0] * k for _ in slabs]
        self.held = [[False] * k for _ in slabs]
        # (slab, member, parameter) -> the state dict put in the optimizer, and its tensors
        self.published: dict[tuple[int, int, int], tuple[dict[str, Any], tuple[Any, ...]]] = {}
        # (slab, member) -> the step counts of its parameters (each entry's "step" a 0-d view)
        self.steps: dict[tuple[int, int], torch.Tensor] = {}
        self.stepping: list[int] = []
        self.saved: list[dict[str, torch.Tensor]] = []  # the frozen members' rows, per slab
        self.frozen_rows = torch.zeros(0, dtype=torch.long)

    def _group(self, i: int, k: int) -> dict[str, Any]:
        group = self.slabs[i].group
        assert group is not None
        return self.optimizers[k].param_groups[group]

    @torch.no_grad()
    def adopt(self, active: Sequence[bool]) -> None:
        """Stack what the members' optimizers hold, where it is not the published views.

        Then note which members step this epoch and keep the others' state rows, which
        :meth:`publish` puts back (a frozen member's state does not advance).
        """
        for i in range(len(self.slabs)):
            for k, params in enumerate(self.params[i]):
                opt = self.optimizers[k]
                for j, p in enumerate(params):
                    state = opt.state.get(p)
                    mine = self.published.get((i, k, j))
                    if mine is None and not state:
                        continue
                    if mine is not None and state is mine[0] and _intact(state, mine[1]):
                        continue
                    self._take(i, k, j, state or {})
        self.stepping = [k for k, on in enumerate(active) if on]
        frozen = [k for k, on in enumerate(active) if not on]
        self.saved = []
        if frozen:
            device = self.slabs[0].data.device
            rows = torch.tensor(frozen, device=device)
            self.saved = [
                {key: t[rows] for key in self.keys if (t := self.lists[key][i]) is not None}
                for i in range(len(self.slabs))
            ]
            self.frozen_rows = rows

    @torch.no_grad()
    def restart(self, k: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Slot ``k`` has a new model and optimizer: no state, no steps, nothing published."""
        self.optimizers[k] = optimizer
        for i, slab in enumerate(self.slabs):
            self.params[i][k] = [model.get_parameter(n) for n in slab.names]
            self.counts[i][k] = 0
            self.held[i][k] = False
            self.steps.pop((i, k), None)
            for j in range(len(slab.names)):
                self.published.pop((i, k, j), None)
            for key in self.keys:
                tensor = self.lists[key][i]
                if tensor is not None:
                    tensor[k].zero_()

    def _take(self, i: int, k: int, j: int, state: dict[str, Any]) -> None:
        slab = self.slabs[i]
        self.published.pop((i, k, j), None)
        for key in self.keys:
            value = state.get(key)
            tensor = self.lists[key][i]
            if isinstance(value, torch.Tensor):
                if tensor is None:
                    tensor = self.lists[key][i] = torch.zeros_like(slab.data)
                slab.row_view(tensor, k, j).copy_(value)
            elif tensor is not None:
                slab.row_view(tensor, k, j).zero_()
        self.held[i][k] = any(isinstance(state.get(key), torch.Tensor) for key in self.keys)
        if self.counted:
            self.counts[i][k] = int(float(state.get("step", 0)))

    @torch.no_grad()
    def publish(self, steps: int | list[int]) -> None:
        """Count the epoch's ``steps`` for the members that stepped; write the entries.

        ``steps`` is one count for all members, or a list of one per member.
        """
        if self.saved:
            for i, saved in enumerate(self.saved):
                for key, rows in saved.items():
                    tensor = self.lists[key][i]
                    assert tensor is not None  # state tensors are never dropped mid-stream
                    tensor.index_copy_(0, self.frozen_rows, rows)
            self.saved = []
        for i in range(len(self.slabs)):
            for k in self.stepping:
                taken = steps if isinstance(steps, int) else steps[k]
                if taken and self.wanted(self._group(i, k)):
                    self.counts[i][k] += taken
                    self.held[i][k] = True
            for k, params in enumerate(self.params[i]):
                if self.held[i][k]:
                    self._publish(i, k, params)
        self.stepping = []

    def _publish(self, i: int, k: int, params: list[nn.Parameter]) -> None:
        group = self._group(i, k)
        opt, slab = self.optimizers[k], self.slabs[i]
        tensors = {key: t for key in self.wanted(group) if (t := self.lists[key][i]) is not None}
        keys = list(tensors)
        steps = self.steps.get((i, k))
        if self.counted:
            if steps is None:
                steps = self.steps[(i, k)] = _step_tensors(len(params), group, params[0])
            steps.fill_(self.counts[i][k])
        for j, p in enumerate(params):
            mine = self.published.get((i, k, j))
            if mine is not None and len(mine[1]) == len(keys) + int(self.counted):
                continue
            entry: dict[str, Any] = {}
            if steps is not None:
                entry["step"] = steps[j]
            for key in keys:
                entry[key] = slab.row_view(tensors[key], k, j)
            opt.state[p] = entry
            self.published[(i, k, j)] = (entry, tuple(entry.values()))
