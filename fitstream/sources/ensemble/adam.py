"""``torch.optim.Adam`` and ``AdamW`` for K stacked members at once, each with its own settings."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from .optim import Vectorised, scalar
from .optim_state import StateLink
from .stacking import Ensemble

__all__ = ["VectorAdam"]

_SPARE_ROWS = 4  # more than the warm-up steps before a capture (graphed.WARM_UP_STEPS)


@functools.cache
def fused_on_cpu() -> bool:
    """Whether this torch has ``torch._fused_adamw_`` for CPU tensors (torch 2.4 and later)."""
    fused = getattr(torch, "_fused_adamw_", None)
    if fused is None:
        return False
    p, g, m, v = (torch.zeros(1) for _ in range(4))
    try:
        fused([p], [g], [m], [v], [], [torch.ones(())], lr=1.0, beta1=0.9, beta2=0.999,
              weight_decay=1.0, eps=1e-8, amsgrad=False, maximize=False)  # fmt: skip
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


class VectorAdam(Vectorised):
    """``torch.optim.Adam`` and ``AdamW`` (amsgrad, maximize) for K members."""

    names = ("lr", "l2", "decoupled", "beta1", "beta2", "eps", "amsgrad", "maximize")

    def __init__(
        self,
        ensemble: Ensemble,
        optimizers: Sequence[torch.optim.Optimizer],
        *,
        device_cursor: bool = False,
    ) -> None:
        super().__init__(ensemble, optimizers)
        self.exp_avg = [torch.zeros_like(s.data) for s in self.slabs]
        self.exp_avg_sq = [torch.zeros_like(s.data) for s in self.slabs]
        # the step's two temporaries, made once: a (K, n) temporary per step costs more than
        # the arithmetic on it (allocated, then touched page by page)
        self.scratch = [(torch.zeros_like(s.data), torch.empty_like(s.data)) for s in self.slabs]
        self.tiny = [float(torch.finfo(s.data.dtype).tiny) for s in self.slabs]
        # the fused path (see _fused_step): per slab, whether it applies, each member's step
        # number (for the bias corrections), and the rows of the tensors it updates
        self.fusable = [False for _ in self.slabs]
        self.base: list[torch.Tensor] = [torch.zeros(0) for _ in self.slabs]
        self.numbers = [torch.zeros(0) for _ in self.slabs]
        self.lists: dict[tuple[int, bool], list[list[torch.Tensor]]] = {}  # _kernel_lists
        # per slab: the epoch's first step number where every member is at the same step (then
        # the kernel takes the slab whole, one tensor, instead of K rows: 174 against 217 us at
        # K = 128), else None
        self.level: list[float | None] = [None for _ in self.slabs]
        self.number = [torch.zeros((), dtype=torch.float32) for _ in self.slabs]
        self.max_sq: list[torch.Tensor | None] = [None for _ in self.slabs]
        self.link = StateLink(
            self.slabs,
            ensemble.members,
            optimizers,
            {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "max_exp_avg_sq": self.max_sq},
            wanted=lambda group: (
                ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
                if group.get("amsgrad", False)
                else ("exp_avg", "exp_avg_sq")
            ),
            counted=True,
        )
        self.cursor = 0  # steps taken in this epoch
        # With device_cursor (for CUDA graphs) the step reads its row of the bias-correction
        # table at a position held on the device, which a replayed graph advances; the table
        # has spare rows for the warm-up steps before a capture (they are undone).
        self.cursor_t: torch.Tensor | None = None
        self.spare = 0
        if device_cursor:
            device = self.slabs[0].data.device
            self.cursor_t = torch.zeros(1, dtype=torch.long, device=device)
            self.spare = _SPARE_ROWS
        self.tables: list[torch.Tensor] = []
        self.constants: list[torch.Tensor] = []
        self.adamw_groups: set[int] = set()  # ids of the param groups of AdamW optimizers

    def _read(self, group: dict[str, Any]) -> list[float]:
        # torch < 2.7's AdamW has no "decoupled_weight_decay" entry: it is decoupled by type.
        decoupled = bool(group.get("decoupled_weight_decay", id(group) in self.adamw_groups))
        wd = float(scalar(group["weight_decay"]))
        beta1, beta2 = (float(scalar(b)) for b in group["betas"])
        return [
            float(scalar(group["lr"])),
            0.0 if decoupled else wd,
            wd if decoupled else 0.0,
            beta1,
            beta2,
            float(scalar(group["eps"])),
            float(bool(group.get("amsgrad", False))),
            float(bool(group.get("maximize", False))),
        ]

    def seek(self, position: int) -> None:
        """Make the next step the epoch's step number ``position`` (its bias-correction row)."""
        self.cursor = position

    @torch.no_grad()
    def refresh(self, steps: int | list[int]) -> None:
        """Read the hyperparameters; tabulate the epoch's bias corrections (in float64)."""
        self.adamw_groups = {
            id(group)
            for opt in self.optimizers
            if isinstance(opt, torch.optim.AdamW)
            for group in opt.param_groups
        }
        super().refresh(steps)
        for scratch, _ in self.scratch:  # see _fused_step
            scratch.zero_()
        self.cursor = 0
        if self.cursor_t is not None:
            self.cursor_t.zero_()
        self._tabulate()

    def _tabulate(self) -> None:
        """The bias corrections of the epoch's steps, at the hyperparameters read last."""
        steps = self.steps
        most = steps if isinstance(steps, int) else max(steps)
        ahead = torch.arange(1, most + self.spare + 1, dtype=torch.float64).view(-1, 1, 1)
        for i, values in enumerate(self.values64):
            taken = torch.tensor(self.link.counts[i], dtype=torch.float64).view(1, -1, 1)
            t = taken + ahead  # each member's own step numbers, (steps, K, 1)
            self.base[i] = (taken.view(-1) + 1).to(torch.float32)  # the epoch's first step
            counts = set(self.link.counts[i])
            self.level[i] = float(counts.pop() + 1) if len(counts) == 1 else None
            lr, _, decoupled, beta1, beta2, eps, _, maximize = values
            table = _rows(lr, beta1, beta2, eps, t)
            constants = torch.stack([1 - beta1, 1 - beta2, 1 - lr * decoupled, 1 - 2 * maximize])
            hp = self.hp[i]
            if i < len(self.tables) and self.tables[i].shape == table.shape:
                self.tables[i].copy_(table)
                self.constants[i].copy_(constants)
            else:
                self.tables[i:] = [table.to(hp.device, hp.dtype)]
                self.constants[i:] = [constants.to(hp.device, hp.dtype)]

    @torch.no_grad()
    def reread(self) -> None:
        """Read the hyperparameters again, within an epoch, for the next step's row.

        The steps go forward (a seek never skips ahead of the cursor), so only the row the
        next step reads is tabulated again: one row per step, not the epoch's table.
        """
        super().reread()
        row = self.cursor
        for i, values in enumerate(self.values64):
            if row >= self.tables[i].shape[0]:
                continue
            t = torch.tensor(self.link.counts[i], dtype=torch.float64).view(-1, 1) + (row + 1)
            lr, _, decoupled, beta1, beta2, eps, _, maximize = values
            self.tables[i][row].copy_(_rows(lr, beta1, beta2, eps, t.view(1, -1, 1))[0])
            self.constants[i].copy_(
                torch.stack([1 - beta1, 1 - beta2, 1 - lr * decoupled, 1 - 2 * maximize])
            )

    @torch.no_grad()
    def step(self) -> None:
        """One Adam(W) step of every member.

        ``p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`` is taken as
        ``p -= size * m / (sqrt(v) + offset)`` with ``size = lr / (1 - beta1^t) *
        sqrt(1 - beta2^t)`` and ``offset = eps * sqrt(1 - beta2^t)`` per member (one pass less
        over the state), and betas shared by every member are plain numbers (eager steps).
        """
        cursor = self.cursor
        self.cursor = cursor + 1
        at = self.cursor_t
        for i, slab in enumerate(self.slabs):
            if self.fusable[i]:
                self._fused_step(i, cursor)
                continue
            # each (K, 1) column taken only where a flag asks for it: a select per use costs
            # less than unpacking every column at every step
            # (hp: the columns of names; constants: 1 - beta1, 1 - beta2, decay, sign)
            hp, constants = self.hp[i], self.constants[i]
            row = self.tables[i][cursor] if at is None else self.tables[i].index_select(0, at)[0]
            flags = self.flags[i]
            p, g = slab.data, slab.grad
            assert g is not None
            if flags["any_maximize"]:
                g = g * constants[3]
            if flags["any_l2"]:
                g = torch.addcmul(g, p, hp[1])
            if flags["any_decoupled"]:
                p.mul_(constants[2])
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            scratch, denom = self.scratch[i]
            shared = self.shared[i] if at is None else {}  # a graph reads tensors only
            b1, b2 = shared.get("beta1"), shared.get("beta2")
            m.lerp_(g, constants[0] if b1 is None else 1 - b1)
            if b2 is None:
                v.mul_(hp[4]).addcmul_(g, torch.mul(g, constants[1], out=scratch))
            else:
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
            source = v
            if flags["any_amsgrad"]:
                vmax = self.max_sq[i]
                if vmax is None:
                    vmax = self.max_sq[i] = torch.zeros_like(v)
                torch.maximum(vmax, v, out=vmax)
                source = vmax if flags["all_amsgrad"] else torch.where(hp[6].bool(), vmax, v)
            # a zero in the second moment (a weight whose gradient is always zero: a padded or
            # dead unit) sends torch.sqrt down a slow path, 20 times slower; the smallest
            # normal float added first changes no denominator (sqrt(1e-38) is far below eps)
            torch.add(source, self.tiny[i], out=denom).sqrt_().add_(row[1])  # offset
            p.addcdiv_(torch.mul(m, row[0], out=scratch), denom, value=-1)  # size
        if at is not None:
            at.add_(1)

    def _fused_step(self, i: int, cursor: int) -> None:
        """Slab ``i``'s step through ``torch._fused_adamw_``: one pass over the state.

        The kernel takes one rate for all its tensors, and the members have their own: it runs
        at rate 1 on a scratch, which then holds ``-m / (sqrt(v) + eps)`` with each member's
        bias corrections (the slab is one tensor where every member is at the same step, else
        each member's row is a tensor with its own step number), and the weights move by that
        times each member's rate. The kernel's decoupled decay of 1 clears the scratch first
        (``x - x``, exactly 0 for a finite ``x``), so no pass zeroes it; ``x - x`` keeps a NaN,
        so :meth:`refresh` zeroes the scratch at each epoch's start, and a member that
        diverged leaves nothing for the one that replaces it. Betas and ``eps`` are the same
        for every member here, and no member uses L2 decay, amsgrad or maximize
        (``fusable``). About 40 % less time than the separate passes at K = 40.
        """
        p = self.slabs[i].data
        hp, shared, flags = self.hp[i], self.shared[i], self.flags[i]
        if flags["any_decoupled"]:
            p.mul_(self.constants[i][2])
        level = self.level[i]
        rows = self._kernel_lists(i, whole=level is not None)  # made first: it makes numbers
        if level is not None:  # one step number: the slab whole
            self.number[i].fill_(level + cursor)
        else:
            torch.add(self.base[i], cursor, out=self.numbers[i])
        torch._fused_adamw_(  # weight_decay=1.0 at lr=1.0: the scratch cleared (x - x)
            rows[0], rows[1], rows[2], rows[3], [], rows[4], lr=1.0, beta1=shared["beta1"],
            beta2=shared["beta2"], weight_decay=1.0, eps=shared["eps"], amsgrad=False,
            maximize=False,
        )  # fmt: skip
        p.addcmul_(self.scratch[i][0], hp[0])

    def _kernel_lists(self, i: int, *, whole: bool) -> list[list[torch.Tensor]]:
        """Slab ``i``'s scratch, gradient, moments and step numbers as the kernel takes them.

        ``whole``: one tensor each (one step number); else one row per member. Made once.
        """
        key = (i, whole)
        found = self.lists.get(key)
        if found is not None:
            return found
        slab = self.slabs[i]
        assert slab.grad is not None
        tensors = (self.scratch[i][0], slab.grad, self.exp_avg[i], self.exp_avg_sq[i])
        if whole:
            made = [[t] for t in tensors] + [[self.number[i]]]
        else:
            self.numbers[i] = torch.zeros(slab.data.shape[0], dtype=torch.float32)
            made = [list(t.unbind(0)) for t in tensors] + [list(self.numbers[i].unbind(0))]
        self.lists[key] = made
        return made

    def state_lists(self) -> list[list[torch.Tensor | None]]:  # noqa: D102
        return [self.exp_avg, self.exp_avg_sq, self.max_sq]  # type: ignore[list-item]

    def _read_all(self) -> None:
        super()._read_all()
        self.shared = [
            {
                name: float(column[0])
                for name, column in zip(self.names, values, strict=True)
                if name in ("beta1", "beta2", "eps") and bool((column == column[0]).all())
            }
            for values in self.values64
        ]
        self.fusable = [
            self.cursor_t is None
            and slab.data.device.type == "cpu"
            and slab.data.dtype == torch.float32
            and len(shared) == 3
            and not any(flags[f"any_{n}"] for n in ("l2", "amsgrad", "maximize"))
            and fused_on_cpu()
            for slab, shared, flags in zip(self.slabs, self.shared, self.flags, strict=True)
        ]

    def fixed_tensors(self) -> list[torch.Tensor]:  # noqa: D102
        cursor = [] if self.cursor_t is None else [self.cursor_t]
        return [*self.hp, *self.tables, *self.constants, *cursor]

    def needs_first_step(self) -> bool:  # noqa: D102
        return any(
            flags["any_amsgrad"] and vmax is None
            for flags, vmax in zip(self.flags, self.max_sq, strict=True)
        )


def _rows(
    lr: torch.Tensor, beta1: torch.Tensor, beta2: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The steps' ``(size, offset)`` per member (float64): see :meth:`VectorAdam.step`."""
    root = (1 - beta2**t).sqrt()
    return torch.stack([lr / (1 - beta1**t) * root, eps * root], dim=1)
