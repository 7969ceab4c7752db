"""The per-batch work of :func:`~fitstream.ensemble_stream`: all members at once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..._internal.denormals import flushed_denormals
from ..._internal.forward_errors import explain_forward
from ..._internal.optimizers import group_rates, mark_stepped
from ..._internal.rows import gather
from .._shared import explain_bad_loss
from ..clipping import clip_members
from ..step_options import StepOptions
from ..train_metrics import MemberTrainMetrics
from .adam import VectorAdam
from .hand_step import HandStep, hand_step
from .member_losses import member_losses
from .optim import MemberSteps
from .sgd import VectorSGD
from .stacking import Ensemble

__all__ = ["EnsembleLoop"]

_FUNC = "ensemble_stream"


class EnsembleLoop:
    """The per-batch work of one epoch for all members at once.

    With step options (:class:`~.step_options.StepOptions`) each member's step is the one its
    lone :func:`~fitstream.epoch_stream` run takes with those options: its gradients summed
    over ``accumulate`` batches, clipped by its own norm, its forward under ``autocast``, its
    own scheduler stepped after its step, and its train metrics on its own outputs.
    """

    def __init__(
        self,
        ensemble: Ensemble,
        loss_fn: Callable[..., torch.Tensor],
        stepper: VectorSGD | VectorAdam | MemberSteps,
        last_label: bool,
        *,
        options: StepOptions | None = None,
    ) -> None:
        options = options or StepOptions()
        self.ensemble = ensemble
        self.clip = options.clip
        self.accumulate = options.accumulate
        self.dtype = options.autocast
        self.schedulers = list(options.schedulers)
        self.metrics = (
            MemberTrainMetrics(options.metrics, len(ensemble), func=_FUNC)
            if options.metrics
            else None
        )
        self.rates: list[list[float] | None] = [None] * len(ensemble)  # each one's last step
        self.marked: set[int] = set()  # members whose optimizer is marked as stepped
        self.position, self.last = 0, 0  # the epoch's batch number, and its last
        self.stepper = stepper
        self.last_label = last_label
        self.leaves = list(ensemble.stacked)
        self.slabs = ensemble._trainable_slabs()
        self.grads = [g for slab in self.slabs for g in slab.grads]
        self.flat_grads = [slab.grad for slab in self.slabs if slab.grad is not None]
        self.k = len(ensemble)
        self.shared_losses = member_losses(loss_fn, last_label, each=False)
        self.each_losses = member_losses(loss_fn, last_label, each=True)
        # the gradients by hand, without autograd (hand_step), where the step allows: on the
        # CPU, where it was measured, with no mixed precision and one batch per step
        self.hand: HandStep | None = None
        plain = self.dtype is None and self.accumulate == 1 and last_label
        if plain and self.slabs and self.slabs[0].data.device.type == "cpu":
            named = {
                n: g for slab in self.slabs for n, g in zip(slab.names, slab.grads, strict=True)
            }
            self.hand = hand_step(ensemble, loss_fn, named)
        self.device = self.slabs[0].data.device if self.slabs else torch.device("meta")

    def begin_epoch(self, batches: int, device: torch.device) -> None:
        """Start an epoch of ``batches`` batches: its step groups and its train metrics."""
        self.position, self.last = 0, batches - 1
        if self.metrics is not None:
            self.metrics.begin(device)

    def outputs_and_losses(
        self, inputs: list[torch.Tensor], labels: torch.Tensor | None, each: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The K members' outputs and ``(K,)`` losses on one batch, under ``autocast`` if set.

        ``each``: every member has its own batch (inputs ``(K, B, ...)``); else one batch is
        shared by all.
        """
        context = (
            contextlib.nullcontext()
            if self.dtype is None
            # no cast cache: the step may be captured in a CUDA graph (PyTorch's graph notes)
            else torch.autocast(inputs[0].device.type, dtype=self.dtype, cache_enabled=False)
        )
        with context:
            if each:
                output = self.ensemble._forward_each(inputs)
                return output, self.each_losses(output, labels)
            output = self.ensemble(*inputs)
            return output, self.shared_losses(output, labels)

    def run(
        self,
        data: tuple[torch.Tensor, ...],
        batches: list[slice],
        orders: torch.Tensor | None = None,
        *,
        held: Sequence[int] = (),
        position: int | None = None,
    ) -> list[torch.Tensor]:
        """Train every member on each batch of rows in turn; return the detached ``(K,)`` losses.

        With ``orders`` (``(K, n)`` row indices, one order per member) member ``k``'s batch is
        the rows ``orders[k, rows]``; without, every member gets ``data[rows]``. The members
        listed in ``held`` compute a loss but do not move: their weights and optimizer state
        are put back after each step. ``position`` is the step's index in the epoch, for a
        step that is not the next one in turn (members of other batch sizes at one step).
        """
        if position is not None:
            self.stepper.seek(position)
        last_label = self.last_label
        inputs, labels = (data[:-1] if last_label else data), data[-1]
        frozen = not all(self.ensemble._active)
        out: list[torch.Tensor] = []
        keep = out.append
        each = orders is not None
        hand = self.hand
        if hand is not None and not (
            len(inputs) == 1
            and hand.fits(labels)
            and not any(leaf._backward_hooks for leaf in self.leaves)  # autograd's to run
        ):
            hand = None
        # denormals are slow on a CPU and change nothing here (fitstream._internal.denormals)
        with flushed_denormals(self.device):
            for rows in batches:
                if orders is None:
                    batch = [t[rows] for t in inputs]
                    target = labels[rows] if last_label else None
                else:  # each member's rows: one gather per tensor for all members
                    index = orders[:, rows]
                    flat = index.reshape(-1)  # a copy (a column slice): made once per batch
                    batch = [gather(t, flat, index.shape) for t in inputs]
                    target = gather(labels, flat, index.shape) if last_label else None
                keep(self.step(batch, target, each=each, frozen=frozen, held=held, hand=hand))
        return out

    def step(
        self,
        inputs: list[torch.Tensor],
        labels: torch.Tensor | None,
        *,
        each: bool,
        frozen: bool,
        held: Sequence[int] = (),
        hand: HandStep | None = None,
    ) -> torch.Tensor:
        """One training step of every member on one batch; return the detached ``(K,)`` losses.

        ``each``: the inputs are stacked per member (``(K, B, ...)``). ``frozen``: some member
        is frozen, so its weights are put back after the optimizer step.
        """
        try:
            # by hand (run() says when): the gradients are written, or None for autograd
            by_hand = None if hand is None or labels is None else hand(inputs[0], labels, each)
            if by_hand is None:
                output, losses = self.outputs_and_losses(inputs, labels, each)
            else:
                output, losses = by_hand
        except RuntimeError as exc:
            explain_forward(exc, self.ensemble.members[0], inputs, func=_FUNC, arg="train_data")
            raise
        except ValueError as exc:
            if "must only return Tensors" in str(exc):
                raise TypeError(
                    f"{_FUNC}: 'loss_fn' must return a scalar tensor, got something else ({exc})"
                ) from exc
            raise
        if by_hand is None and (losses.shape != (self.k,) or not losses.requires_grad):
            _explain(losses, self.k)
        if self.metrics is not None:
            self.metrics.add(output, labels, each=each, size=output.shape[1], held=held)
        group = self.accumulate
        if by_hand is not None:  # its gradients are in place (one batch per step)
            pass
        elif group == 1:
            torch._foreach_copy_(self.grads, self._gradients(losses.sum()))
        else:  # the gradients of a group of batches, summed before its one step
            new = self._gradients(losses.sum() / group)
            position = self.position
            self.position = position + 1
            if position % group == 0:
                torch._foreach_copy_(self.grads, new)
            else:
                torch._foreach_add_(self.grads, new)
            if (position + 1) % group != 0 and position != self.last:
                return losses.detach()
        if self.clip is not None:  # each member by its own norm, on the stacked gradients
            clip_members(self.flat_grads, self.clip)
        kept = self._hold(held) if held else None
        self.stepper.step()
        if frozen:
            self.ensemble._restore_frozen()
        if kept is not None:
            self._release(*kept)
        if self.schedulers:
            self._schedule(held)
        return losses.detach()

    def _gradients(self, total: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``d total / d`` each stacked parameter, through autograd (zeros where unused)."""
        return torch.autograd.grad(total, self.leaves, allow_unused=True, materialize_grads=True)

    def _schedule(self, held: Sequence[int]) -> None:
        """Step the scheduler of every member that stepped; give the stepper their new rates."""
        optimizers = self.stepper.optimizers
        vectorised = not isinstance(self.stepper, MemberSteps)
        active = self.ensemble._active
        for k, (scheduler, on) in enumerate(zip(self.schedulers, active, strict=True)):
            if not on or k in held:
                continue
            optimizer = optimizers[k]
            if vectorised and k not in self.marked:  # its step() is never called
                mark_stepped(optimizer)
                self.marked.add(k)
            self.rates[k] = group_rates(optimizer)
            scheduler.step()
        if vectorised:
            self.stepper.reread()  # type: ignore[union-attr]

    @torch.no_grad()
    def _hold(self, held: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor], Any]:
        """Keep the held members' weights and optimizer state rows before a step."""
        rows = torch.tensor(list(held), device=self.leaves[0].device)
        weights = [slab.data[rows] for slab in self.slabs]
        return rows, weights, self.stepper.hold(rows)

    @torch.no_grad()
    def _release(self, rows: torch.Tensor, weights: list[torch.Tensor], state: Any) -> None:
        """Put the held members' weights and optimizer state back after the step."""
        for slab, saved in zip(self.slabs, weights, strict=True):
            slab.data.index_copy_(0, rows, saved)
        self.stepper.release(rows, state)


def _explain(losses: torch.Tensor, k: int) -> None:
    """Raise the error that says why a ``(K, ...)`` result of ``loss_fn`` cannot be trained."""
    error = RuntimeError("the members' losses cannot be back-propagated")
    explain_bad_loss(
        losses[0] if losses.dim() >= 1 else losses, error, func=_FUNC, per="member and batch"
    )
    raise error
