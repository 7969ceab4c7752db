"""``torch.optim.SGD`` for K stacked members at once, each with its own hyperparameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .optim import Vectorised, scalar
from .optim_state import StateLink
from .stacking import Ensemble

__all__ = ["VectorSGD"]


class VectorSGD(Vectorised):
    """``torch.optim.SGD`` (momentum, dampening, nesterov, weight decay, maximize) for K members."""

    names = ("lr", "weight_decay", "momentum", "dampening", "nesterov", "maximize")

    def __init__(self, ensemble: Ensemble, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        super().__init__(ensemble, optimizers)
        self.buffers: list[torch.Tensor | None] = [None for _ in self.slabs]
        self.link = StateLink(
            self.slabs,
            ensemble.members,
            optimizers,
            {"momentum_buffer": self.buffers},
            wanted=lambda group: ("momentum_buffer",) if scalar(group["momentum"]) != 0 else (),
            counted=False,
        )
        # Per slab, the rows whose momentum buffer starts at the next step (torch starts it at
        # the first gradient): members that held no buffer when the others did.
        self.fresh: list[torch.Tensor | None] = [None for _ in self.slabs]
        self.held_fresh: list[list[bool] | None] = []

    def refresh(self, steps: int | list[int]) -> None:
        """Read the hyperparameters; note the rows whose momentum buffer starts this epoch."""
        super().refresh(steps)
        for i, (held, values) in enumerate(zip(self.link.held, self.values64, strict=True)):
            momentum = values[self.names.index("momentum")].view(-1).tolist()
            fresh = [
                not h and m != 0 and on
                for h, m, on in zip(held, momentum, self.ensemble._active, strict=True)
            ]
            device = self.slabs[i].data.device
            self.fresh[i] = None
            if any(fresh) and self.buffers[i] is not None:
                self.fresh[i] = torch.tensor(fresh, device=device).view(-1, 1)
            self.flags[i]["fresh"] = self.fresh[i] is not None

    def hold(self, rows: torch.Tensor) -> list[list[torch.Tensor | None]]:
        """Keep the held members' buffer rows, and which of them start at their next step."""
        self.held_fresh = [
            None if fresh is None else fresh[rows].view(-1).tolist() for fresh in self.fresh
        ]
        return super().hold(rows)

    @torch.no_grad()
    def release(self, rows: torch.Tensor, saved: list[list[torch.Tensor | None]]) -> None:
        """Put the buffer rows back; a buffer not started for a held member still starts fresh.

        torch starts a momentum buffer at a member's first gradient, so a held member whose
        buffer the step created (or whose buffer was to start at its next step) is marked to
        start at its own next step.
        """
        super().release(rows, saved)
        held = rows.tolist()
        for i, buf in enumerate(self.buffers):
            if buf is None:
                continue
            before, was = saved[0][i], self.held_fresh[i]
            starting = [k for n, k in enumerate(held) if before is None or (was and was[n])]
            if not starting:
                continue
            mark = torch.zeros(buf.shape[0], 1, dtype=torch.bool, device=buf.device)
            mark[starting] = True
            fresh = self.fresh[i]
            self.fresh[i] = mark if fresh is None else fresh | mark
            self.flags[i]["fresh"] = True

    def _read(self, group: dict[str, Any]) -> list[float]:
        return [
            float(scalar(group[name])) if name != "maximize" else float(group.get(name, False))
            for name in self.names
        ]

    def state_lists(self) -> list[list[torch.Tensor | None]]:  # noqa: D102
        return [self.buffers]

    def needs_first_step(self) -> bool:  # noqa: D102
        return any(
            flags["any_momentum"] and buf is None
            for flags, buf in zip(self.flags, self.buffers, strict=True)
        ) or any(f is not None for f in self.fresh)

    @torch.no_grad()
    def step(self) -> None:
        """One SGD step of every member."""
        for i, slab in enumerate(self.slabs):
            lr, wd, momentum, dampening, nesterov, maximize = self.hp[i]
            flags = self.flags[i]
            p, g = slab.data, slab.grad
            assert g is not None
            if flags["any_maximize"]:
                g = g * (1 - 2 * maximize)
            if flags["any_weight_decay"]:
                g = torch.addcmul(g, p, wd)
            if flags["any_momentum"]:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = g.clone()
                else:
                    buf.mul_(momentum).addcmul_(g, 1 - dampening)
                    fresh = self.fresh[i]
                    if fresh is not None:  # rows whose buffer starts now: the gradient
                        buf.copy_(torch.where(fresh, g, buf))
                        self.fresh[i], flags["fresh"] = None, False
                d = buf
                if flags["any_nesterov"]:
                    d = torch.where(nesterov.bool(), torch.addcmul(g, buf, momentum), buf)
                if not flags["all_momentum"]:
                    d = torch.where(momentum != 0, d, g)
                g = d
            p.addcmul_(g, lr, value=-1)
