"""``cuda_graphs=True``: each training step captured once as a CUDA graph, replayed per batch.

On a GPU a small model's step is a few dozen tiny kernels, and launching them from Python costs
far more than running them. Capturing the whole step (forward, loss, backward, optimizer
update, loss accumulation) as a CUDA graph turns it into one launch per batch.

How a step is captured (:meth:`GraphedSteps.run_epoch` does it at the first epoch, and again
whenever :func:`~fitstream.sources.graphed.step_state.world_key` says the world changed):

1. If some trained parameter has no optimizer state yet, the epoch's first batch is trained
   eagerly, for real: optimizers create their state in their first step, which differs from
   the later ones that a graph replays.
2. Optimizers with a ``capturable`` flag get ``capturable=True`` (same update, with the step
   counts on the device); state a graph would freeze is refused.
3. For each batch size of the epoch (the full batches, and a short last batch if any) a
   static copy of one batch is made, three warm-up steps run on a side stream with host
   synchronisations turned into errors, and everything they changed is put back
   (:class:`~fitstream.sources.graphed.snapshot.Snapshot`); then one step is captured.
4. Any failure puts the model and optimizer back as they were at the start of the epoch and
   raises; an error about capture says what in the step cannot be captured.

Each epoch then copies every batch into its graph's static inputs and replays; the losses are
summed on the device and read once per epoch by the caller.

The step itself is a :class:`StepProgram`, so a source that trains something other than one
``model``/``optimizer`` pair (an ensemble with vectorised optimizers) can reuse the mechanics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from ..clipping import Clip, clip_gradients
from ..single.loop import explain_bad_loss
from .cuda import CudaGraphs
from .snapshot import Snapshot
from .step_state import (
    CaptureError,
    check_state,
    explain_capture_failure,
    make_capturable,
    needs_first_step,
    optimizer_params,
    world_key,
)

__all__ = ["GraphedSteps", "ModelStep", "Restorable", "StepProgram"]

WARM_UP_STEPS = 3


class Restorable(Protocol):
    """A record of values taken earlier, that can put them back."""

    def restore(self) -> None:
        """Put the recorded values back."""


class StepProgram(Protocol):
    """One training step of some trainable thing, with what capture needs to know about it.

    :class:`ModelStep` is the one of :func:`~fitstream.epoch_stream`. A source that trains K
    stacked members with vectorised optimizers implements the same methods: its ``step``
    returns the K members' losses as a ``(K,)`` tensor (the epoch's sums then are ``(K,)``
    too), and hyperparameters it keeps in device tensors that the step reads need no place in
    its ``key``: changed in place, they reach the graph by themselves.
    """

    def step(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Forward, loss, backward and update on ``batch``; return the detached loss(es)."""

    def release_grads(self) -> None:
        """Set the trained tensors' gradients to ``None`` (``zero_grad(set_to_none=True)``)."""

    def key(self) -> Hashable:
        """What the captured step depends on; a change means capture again."""

    def snapshot(self) -> Restorable:
        """Record every value a step changes (and the random generators), to restore it."""

    def needs_first_step(self) -> bool:
        """Whether the next step would be a first step (creating optimizer state)."""

    def prepare(self) -> None:
        """Make the optimizer capturable, or raise an error that says why it cannot be."""

    def grads(self) -> list[torch.Tensor | None]:
        """The trained tensors' current gradients."""

    def set_grads(self, grads: Sequence[torch.Tensor | None]) -> None:
        """Point the trained tensors' ``.grad`` at ``grads``."""


class ModelStep:
    """The step of :func:`fitstream.epoch_stream`: ``model``, ``optimizer``, ``loss_fn``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[..., torch.Tensor],
        *,
        last_label: bool,
        device: torch.device,
        func: str,
        clip: Clip | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.last_label = last_label
        self.device = device
        self.func = func
        self.autocast = autocast
        self.clip = clip  # device work only (no host sync): captured with the step

    def _forward(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        # autocast's cast cache must be off while a graph is captured (PyTorch's CUDA graphs
        # notes); the casts are then part of the graph
        return torch.autocast(self.device.type, dtype=self.autocast, cache_enabled=False)

    def step(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:  # noqa: D102
        loss: Any = None
        try:
            with self._forward():
                if self.last_label:
                    loss = self.loss_fn(self.model(*batch[:-1]), batch[-1])
                else:
                    loss = self.loss_fn(self.model(*batch))
            loss.backward()
            if self.clip is not None:
                clip_gradients(optimizer_params(self.optimizer), self.clip)
            self.optimizer.step()
        except (TypeError, RuntimeError, AttributeError) as exc:
            explain_bad_loss(loss, exc)
            raise
        return loss.detach()  # type: ignore[no-any-return]

    def release_grads(self) -> None:  # noqa: D102
        self.optimizer.zero_grad(set_to_none=True)

    def key(self) -> Hashable:  # noqa: D102
        return world_key(self.model, self.optimizer)

    def snapshot(self) -> Snapshot:  # noqa: D102
        return Snapshot(self.model, self.optimizer, self.device)

    def needs_first_step(self) -> bool:  # noqa: D102
        return needs_first_step(self.optimizer)

    def prepare(self) -> None:  # noqa: D102
        make_capturable(self.optimizer)
        check_state(self.optimizer, func=self.func)

    def grads(self) -> list[torch.Tensor | None]:  # noqa: D102
        return [p.grad for p in optimizer_params(self.optimizer)]

    def set_grads(self, grads: Sequence[torch.Tensor | None]) -> None:  # noqa: D102
        for p, grad in zip(optimizer_params(self.optimizer), grads, strict=True):
            p.grad = grad


class _Captured:
    """One captured step for one batch size: its static inputs, graph, and loss sum."""

    def __init__(
        self,
        size: int,
        inputs: tuple[torch.Tensor, ...],
        graph: Any,
        total: torch.Tensor,
        grads: list[torch.Tensor | None],
    ) -> None:
        self.size = size
        self.inputs = inputs
        self.replay: Callable[[], Any] = graph.replay
        self.graph = graph
        self.total = total
        self.grads = grads

    def run(self, data: tuple[torch.Tensor, ...], rows: slice) -> None:
        for static, tensor in zip(self.inputs, data, strict=True):
            static.copy_(tensor[rows])
        self.replay()


class GraphedSteps:
    """Trains epochs by replaying captured steps; captures again when the world changes."""

    def __init__(self, program: StepProgram, *, func: str, cuda: CudaGraphs) -> None:
        self.program = program
        self.func = func
        self.cuda = cuda
        self.captured: dict[int, _Captured] = {}
        self.captures = 0  # how many times the steps were (re)captured
        self._key: Hashable = None

    def run_epoch(
        self, data: tuple[torch.Tensor, ...], slices: list[tuple[slice, int]]
    ) -> torch.Tensor:
        """Train one epoch on ``slices`` of ``data``; return the size-weighted loss sum."""
        eager: torch.Tensor | None = None
        start = 0
        if not self.captured or self.program.key() != self._key:
            eager, start = self._capture(data, slices)
        captured = self.captured
        for graph in captured.values():
            graph.total.zero_()
        last: _Captured | None = None
        for rows, size in slices[start:]:
            last = captured[size]
            last.run(data, rows)
        if last is not None:
            self.program.set_grads(last.grads)
        total = eager
        for graph in captured.values():
            weighted = graph.total * graph.size
            total = weighted if total is None else total + weighted
        assert total is not None  # at least one batch size was captured
        return total

    def _capture(
        self, data: tuple[torch.Tensor, ...], slices: list[tuple[slice, int]]
    ) -> tuple[torch.Tensor | None, int]:
        """(Re)capture a graph per batch size; return the eager first step's loss and count."""
        program = self.program
        self.captured = {}
        self._key = None
        before = program.snapshot()
        try:
            eager: torch.Tensor | None = None
            start = 0
            if program.needs_first_step():
                rows, size = slices[0]
                program.release_grads()
                loss = program.step(tuple(t[rows] for t in data))
                eager, start = _accumulator(loss) + loss * size, 1
            eager_grads = program.grads()
            program.prepare()
            stream = self.cuda.side_stream()
            captured: dict[int, _Captured] = {}
            for rows, size in _one_slice_per_size(slices):
                batch = tuple(t[rows] for t in data)
                try:
                    captured[size] = self._capture_one(batch, size, stream)
                except Exception as exc:
                    explained = explain_capture_failure(exc, func=self.func)
                    if explained is None:
                        raise
                    raise explained from exc
            program.set_grads(eager_grads)
        except BaseException:
            before.restore()
            raise
        self.captured = captured
        self.captures += 1
        self._key = program.key()
        return eager, start

    def _capture_one(self, batch: tuple[torch.Tensor, ...], size: int, stream: Any) -> _Captured:
        program = self.program
        inputs = tuple(t.clone(memory_format=torch.contiguous_format) for t in batch)
        warm = program.snapshot()
        try:
            with self.cuda.warm_up(stream):
                for _ in range(WARM_UP_STEPS):
                    program.release_grads()
                    loss = program.step(inputs)
        finally:
            warm.restore()
        total = _accumulator(loss)
        program.release_grads()  # backward then allocates the gradients in the graph's pool
        key = program.key()

        def step() -> None:
            total.add_(program.step(inputs))

        graph = self.cuda.capture(step, stream)
        if program.key() != key:
            raise CaptureError(
                f"{self.func}: cuda_graphs=True cannot capture the training step: the model or "
                "optimizer created or replaced tensors while the step was captured (lazy "
                "modules, or optimizer state created late), which a graph would replay "
                "wrongly. Pass cuda_graphs=False, or run one epoch without it first"
            )
        return _Captured(size, inputs, graph, total, program.grads())


def _accumulator(loss: torch.Tensor) -> torch.Tensor:
    """Zeros shaped as the loss, at least float32 (half sums over an epoch lose digits)."""
    return torch.zeros_like(loss, dtype=torch.promote_types(loss.dtype, torch.float32))


def _one_slice_per_size(slices: list[tuple[slice, int]]) -> list[tuple[slice, int]]:
    first: dict[int, slice] = {}
    for rows, size in slices:
        first.setdefault(size, rows)
    return [(rows, size) for size, rows in first.items()]
