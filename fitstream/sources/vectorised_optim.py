"""SGD and Adam(W) for K stacked members at once, each member with its own hyperparameters.

Each optimizer works on the ensemble's trainable slabs (``(K, n)`` tensors, see
:mod:`fitstream.sources.stacking`) with the update rules of ``torch.optim.SGD``, ``Adam`` and
``AdamW``. Hyperparameters are read from the user's ``optimizers[k].param_groups`` by
:meth:`refresh` (the stream calls it at the start of every epoch) into ``(K, 1)`` tensors on
the device, so a changed ``lr`` takes effect at the next epoch. The optimizer state (momentum
buffers, moments) is stacked here; :class:`~fitstream.sources._vector_state.StateLink` shows
each member's rows in ``optimizers[k].state`` and takes in state those optimizers already hold.

Any other optimizer class is stepped by :class:`MemberSteps`: each member's own optimizer on
gradients from the vectorised backward pass (correct, but K ``step()`` calls per batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._vector_state import StateLink, importable
from .stacking import Ensemble, _Slab

__all__ = ["MemberSteps", "VectorAdam", "VectorSGD", "hparams_of", "vectorised_kind"]

_ADAM_FAMILY = (torch.optim.Adam, torch.optim.AdamW)
_SPARE_ROWS = 4  # more than the warm-up steps before a capture (graphed.WARM_UP_STEPS)


def vectorised_kind(optimizers: Sequence[torch.optim.Optimizer]) -> tuple[str | None, str]:
    """Return ``("sgd" | "adam", "")``, or ``(None, reason)`` when members step one by one."""
    types = {type(opt) for opt in optimizers}
    if types == {torch.optim.SGD}:
        kind = "sgd"
    elif types <= set(_ADAM_FAMILY):
        kind = "adam"
    else:
        names = sorted(t.__name__ for t in types)
        return None, f"no vectorised step for {', '.join(names)} (only SGD, Adam, AdamW)"
    reason = importable(optimizers, kind)
    return (kind, "") if not reason else (None, reason)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) else value


def hparams_of(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A member's hyperparameters as plain scalars, from its first param group."""
    group = optimizer.param_groups[0]
    out: dict[str, Any] = {"optimizer": type(optimizer).__name__}
    keys: tuple[str, ...]
    if isinstance(optimizer, torch.optim.SGD):
        keys = ("lr", "weight_decay", "momentum", "dampening", "nesterov")
    elif isinstance(optimizer, _ADAM_FAMILY):
        keys = ("lr", "weight_decay", "betas", "eps", "amsgrad")
    else:
        keys = tuple(k for k in group if k != "params")
    for key in keys:
        value = _scalar(group.get(key))
        if key == "betas" and isinstance(value, tuple | list) and len(value) == 2:
            out["beta1"], out["beta2"] = float(_scalar(value[0])), float(_scalar(value[1]))
        elif (isinstance(value, bool) and key in ("nesterov", "amsgrad")) or (
            isinstance(value, int | float) and not isinstance(value, bool)
        ):
            out[key] = value
    return out


class _Vectorised:
    """Hyperparameter tensors per slab, refreshed from the members' param groups."""

    names: tuple[str, ...] = ()
    link: StateLink

    def __init__(self, ensemble: Ensemble, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.ensemble = ensemble
        self.slabs = ensemble._trainable_slabs()
        self.optimizers = list(optimizers)
        k = len(optimizers)
        self.hp = [
            torch.zeros(len(self.names), k, 1, dtype=_hp_dtype(s), device=s.data.device)
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

    def publish(self) -> None:
        """Show each member's state in its optimizer's ``state`` (after an epoch's steps)."""
        self.link.publish(self.steps)

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


def _hp_dtype(slab: _Slab) -> torch.dtype:
    return torch.float64 if slab.data.dtype == torch.float64 else torch.float32


class VectorSGD(_Vectorised):
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
            wanted=lambda group: ("momentum_buffer",) if _scalar(group["momentum"]) != 0 else (),
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
            float(_scalar(group[name])) if name != "maximize" else float(group.get(name, False))
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


class VectorAdam(_Vectorised):
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
        wd = float(_scalar(group["weight_decay"]))
        beta1, beta2 = (float(_scalar(b)) for b in group["betas"])
        return [
            float(_scalar(group["lr"])),
            0.0 if decoupled else wd,
            wd if decoupled else 0.0,
            beta1,
            beta2,
            float(_scalar(group["eps"])),
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
        self.cursor = 0
        if self.cursor_t is not None:
            self.cursor_t.zero_()
        most = steps if isinstance(steps, int) else max(steps)
        ahead = torch.arange(1, most + self.spare + 1, dtype=torch.float64).view(-1, 1, 1)
        for i, values in enumerate(self.values64):
            taken = torch.tensor(self.link.counts[i], dtype=torch.float64).view(1, -1, 1)
            t = taken + ahead  # each member's own step numbers, (steps, K, 1)
            lr, _, decoupled, beta1, beta2, _, _, maximize = values
            table = torch.stack([lr / (1 - beta1**t), (1 - beta2**t).sqrt()], dim=1)
            constants = torch.stack([1 - beta1, 1 - beta2, 1 - lr * decoupled, 1 - 2 * maximize])
            hp = self.hp[i]
            if i < len(self.tables) and self.tables[i].shape == table.shape:
                self.tables[i].copy_(table)
                self.constants[i].copy_(constants)
            else:
                self.tables[i:] = [table.to(hp.device, hp.dtype)]
                self.constants[i:] = [constants.to(hp.device, hp.dtype)]

    @torch.no_grad()
    def step(self) -> None:
        """One Adam(W) step of every member."""
        cursor = self.cursor
        self.cursor = cursor + 1
        at = self.cursor_t
        for i, slab in enumerate(self.slabs):
            _, l2, _, _, beta2, eps, amsgrad, _ = self.hp[i]
            row = self.tables[i][cursor] if at is None else self.tables[i].index_select(0, at)[0]
            step_size, correction2 = row
            one_minus_beta1, one_minus_beta2, decay, sign = self.constants[i]
            flags = self.flags[i]
            p, g = slab.data, slab.grad
            assert g is not None
            if flags["any_maximize"]:
                g = g * sign
            if flags["any_l2"]:
                g = torch.addcmul(g, p, l2)
            if flags["any_decoupled"]:
                p.mul_(decay)
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            m.lerp_(g, one_minus_beta1)
            v.mul_(beta2).addcmul_(g, g * one_minus_beta2)
            source = v
            if flags["any_amsgrad"]:
                vmax = self.max_sq[i]
                if vmax is None:
                    vmax = self.max_sq[i] = torch.zeros_like(v)
                torch.maximum(vmax, v, out=vmax)
                source = vmax if flags["all_amsgrad"] else torch.where(amsgrad.bool(), vmax, v)
            denom = source.sqrt().div_(correction2).add_(eps)
            p.addcdiv_(m * step_size, denom, value=-1)
        if at is not None:
            at.add_(1)

    def state_lists(self) -> list[list[torch.Tensor | None]]:  # noqa: D102
        return [self.exp_avg, self.exp_avg_sq, self.max_sq]  # type: ignore[list-item]

    def fixed_tensors(self) -> list[torch.Tensor]:  # noqa: D102
        cursor = [] if self.cursor_t is None else [self.cursor_t]
        return [*self.hp, *self.tables, *self.constants, *cursor]

    def needs_first_step(self) -> bool:  # noqa: D102
        return any(
            flags["any_amsgrad"] and vmax is None
            for flags, vmax in zip(self.flags, self.max_sq, strict=True)
        )


class MemberSteps:
    """Each member's own optimizer, stepped on the gradients of the vectorised backward pass."""

    def __init__(self, ensemble: Ensemble, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.ensemble = ensemble
        self.optimizers = list(optimizers)
        self.held: frozenset[int] = frozenset()
        self.links: list[tuple[nn.Parameter, torch.Tensor]] = []
        for slab in ensemble._trainable_slabs():
            assert slab.grad is not None
            for row, member in enumerate(ensemble.members):
                for i, name in enumerate(slab.names):
                    off, n = slab.offsets[i], slab.numels[i]
                    view = slab.grad[row, off : off + n].view(slab.shapes[i])
                    self.links.append((member.get_parameter(name), view))

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

    def seek(self, position: int) -> None:
        """Nothing to do: each member's optimizer counts its own steps."""

    def hold(self, rows: torch.Tensor) -> None:
        """Skip the members ``rows`` at the next step (their optimizers are not stepped)."""
        self.held = frozenset(rows.tolist())

    def release(self, rows: torch.Tensor, saved: None) -> None:
        """Step every member again from the next step on."""
        self.held = frozenset()
