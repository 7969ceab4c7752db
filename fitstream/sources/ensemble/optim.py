"""The members' optimizer steps: what the vectorised ones share, and the member-by-member one.

The vectorised steps (:mod:`.sgd`, :mod:`.adam`) work on the ensemble's trainable slabs
(``(K, n)`` tensors, see :mod:`.stacking`) with the update rules of ``torch.optim.SGD``,
``Adam`` and ``AdamW``. :class:`Vectorised` reads the hyperparameters from the user's
``optimizers[k].param_groups`` at the start of every epoch into ``(K, 1)`` tensors on the
device, so a changed ``lr`` takes effect at the next epoch. The optimizer state (momentum
buffers, moments) is stacked by the steps; :class:`~.optim_state.StateLink` shows each
member's rows in ``optimizers[k].state`` and takes in state those optimizers already hold.

Any other optimizer class is stepped by :class:`MemberSteps`: each member's own optimizer on
gradients from the vectorised backward pass (correct, but K ``step()`` calls per batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .optim_state import StateLink, importable
from .stacking import Ensemble, _Slab

__all__ = ["ADAM_FAMILY", "MemberSteps", "Vectorised", "scalar", "vectorised_kind"]

from ..._internal.optimizers import ADAM_FAMILY


def vectorised_kind(optimizers: Sequence[torch.optim.Optimizer]) -> tuple[str | None, str]:
    """Return ``("sgd" | "adam", "")``, or ``(None, reason)`` when members step one by one."""
    types = {type(opt) for opt in optimizers}
    if types == {torch.optim.SGD}:
        kind = "sgd"
    elif types <= set(ADAM_FAMILY):
        kind = "adam"
    else:
        names = sorted(t.__name__ for t in types)
        return None, f"no vectorised step for {', '.join(names)} (only SGD, Adam, AdamW)"
    reason = importable(optimizers, kind)
    return (kind, "") if not reason else (None, reason)


def scalar(value: Any) -> Any:
    """A param group's entry as a Python number (a 0-d tensor's item), else as it is."""
    return value.item() if isinstance(value, torch.Tensor) else value


class Vectorised:
    """Hyperparameter tensors per slab, refreshed from the members' param groups."""

    names: tuple[str, ...] = ()
    link: StateLink

    def __init__(self, ensemble: Ensemble, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.ensemble = ensemble
        self.slabs = ensemble._trainable_slabs()
        self.optimizers = list(optimizers)
        k = len(optimizers)
        self.hp = [
            torch.zeros(len(self.names), k, 1, dtype=hp_dtype(s), device=s.data.device)
            for s in self.slabs
        ]
        self.flags: list[dict[str, bool]] = [{} for _ in self.slabs]

    def _read(self, group: dict[str, Any]) -> list[float]:
        raise NotImplementedError

    def state_lists(self) -> list[list[torch.Tensor | None]]:
        """The per-slab state: lists whose entries are ``None`` until a first step creates them."""
        return []

    def fixed_tensors(self) -> list[torch.Tensor]:
        """The tensors a step reads that stay the same objects (hyperparameters, positions)."""
        return list(self.hp)

    def needs_first_step(self) -> bool:
        """Whether the next step would create state (a first step, unlike the later ones)."""
        return False

    def refresh(self, steps: int | list[int]) -> None:
        """Read every member's hyperparameters into the ``(K, 1)`` tensors (one copy each).

        ``steps`` is the number of optimizer steps the coming epoch takes (per member, when
        their row counts differ). State the members' optimizers hold that is not the stacked
        state's views is taken in first.
        """
        self.link.adopt(self.ensemble._active)
        self.steps = steps
        self._read_all()

    def _read_all(self) -> None:
        self.values64 = []
        for i, slab in enumerate(self.slabs):
            assert slab.group is not None
            rows = [self._read(opt.param_groups[slab.group]) for opt in self.optimizers]
            values = torch.tensor(rows, dtype=torch.float64).T.unsqueeze(-1)
            self.values64.append(values)
            self.hp[i].copy_(values)
            flags = self.flags[i]
            for j, name in enumerate(self.names):
                column = values[j]
                flags[f"any_{name}"] = bool((column != 0).any())
                flags[f"all_{name}"] = bool((column != 0).all())

    @torch.no_grad()
    def reread(self) -> None:
        """Read every member's hyperparameters again, within an epoch.

        A per-step scheduler changes them after each step: the rate, and for ``OneCycleLR``
        the momentum or ``betas`` too.
        """
        self._read_all()

    def publish(self) -> None:
        """Show each member's state in its optimizer's ``state`` (after an epoch's steps)."""
        self.link.publish(self.steps)

    def restart(self, k: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Slot ``k`` has a new model and optimizer: its state starts afresh at the next step."""
        self.optimizers[k] = optimizer
        self.link.restart(k, model, optimizer)

    def seek(self, position: int) -> None:
        """Make the next step the epoch's step number ``position`` (counted from 0)."""

    def hold(self, rows: torch.Tensor) -> list[list[torch.Tensor | None]]:
        """Keep the state rows of the members ``rows`` (held still through the next step)."""
        return [[None if t is None else t[rows] for t in kind] for kind in self.state_lists()]

    @torch.no_grad()
    def release(self, rows: torch.Tensor, saved: list[list[torch.Tensor | None]]) -> None:
        """Put back the state rows :meth:`hold` kept; a state the step created starts at zero."""
        for kind, kept in zip(self.state_lists(), saved, strict=True):
            for tensor, rows_kept in zip(kind, kept, strict=True):
                if tensor is None:
                    continue
                if rows_kept is None:
                    tensor.index_fill_(0, rows, 0)
                else:
                    tensor.index_copy_(0, rows, rows_kept)


def hp_dtype(slab: _Slab) -> torch.dtype:
    return torch.float64 if slab.data.dtype == torch.float64 else torch.float32


class MemberSteps:
    """Each member's own optimizer, stepped on the gradients of the vectorised backward pass."""

    def __init__(self, ensemble: Ensemble, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.ensemble = ensemble
        self.optimizers = list(optimizers)
        self.held: frozenset[int] = frozenset()
        self.links = self._links()

    def _links(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Each member parameter with its rows of the gradient slabs."""
        links = []
        for slab in self.ensemble._trainable_slabs():
            assert slab.grad is not None
            for row, member in enumerate(self.ensemble.members):
                for i, name in enumerate(slab.names):
                    off, n = slab.offsets[i], slab.numels[i]
                    view = slab.grad[row, off : off + n].view(slab.shapes[i])
                    links.append((member.get_parameter(name), view))
        return links

    def refresh(self, steps: int | list[int]) -> None:
        """Point every member parameter's ``.grad`` at its rows of the gradient slabs."""
        for param, grad in self.links:
            param.grad = grad

    def step(self) -> None:
        """Step the optimizer of every member that still trains and is not held."""
        held = self.held
        for k, (opt, active) in enumerate(zip(self.optimizers, self.ensemble._active, strict=True)):
            if active and k not in held:
                opt.step()

    def publish(self) -> None:
        """Nothing to show: each member's optimizer keeps its own state."""

    def restart(self, k: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Slot ``k`` has a new model and optimizer: step that one, on the slot's gradients."""
        self.optimizers[k] = optimizer
        self.links = self._links()

    def seek(self, position: int) -> None:
        """Nothing to do: each member's optimizer counts its own steps."""

    def hold(self, rows: torch.Tensor) -> None:
        """Skip the members ``rows`` at the next step (their optimizers are not stepped)."""
        self.held = frozenset(rows.tolist())

    def release(self, rows: torch.Tensor, saved: None) -> None:
        """Step every member again from the next step on."""
        self.held = frozenset()
