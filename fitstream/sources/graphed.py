"""``cuda_graphs=True``: each training step captured once as a CUDA graph, replayed per batch.

On a GPU a small model's step is a few dozen tiny kernels, and launching them from Python costs
far more than running them. Capturing the whole step (forward, loss, backward, optimizer
update, loss accumulation) as a CUDA graph turns it into one launch per batch.

How a step is captured (:meth:`GraphedSteps.run_epoch` does it at the first epoch, and again
whenever :func:`~fitstream.sources._step_state.world_key` says the world changed):

1. If some trained parameter has no optimizer state yet, the epoch's first batch is trained
   eagerly, for real: optimizers create their state in their first step, which differs from
   the later ones that a graph replays.
2. Optimizers with a ``capturable`` flag get ``capturable=True`` (same update, with the step
   counts on the device); state a graph would freeze is refused.
3. For each batch size of the epoch (the full batches, and a short last batch if any) a
   static copy of one batch is made, three warm-up steps run on a side stream with host
   synchronisations turned into errors, and everything they changed is put back
   (:class:`~fitstream.sources._step_state.Snapshot`); then one step is captured.
4. Any failure puts the model and optimizer back as they were at the start of the epoch and
   raises; an error about capture says what in the step cannot be captured.

Each epoch then copies every batch into its graph's static inputs and replays; the losses are
summed on the device and read once per epoch by the caller.

The step itself is a :class:`StepProgram`, so a source that trains something other than one
``model``/``optimizer`` pair (an ensemble with vectorised optimizers) can reuse the mechanics.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import nn

from .._internal.checks import describe
from ._loop import explain_bad_loss
from ._step_state import (
    CaptureError,
    Snapshot,
    check_state,
    explain_capture_failure,
    make_capturable,
    needs_first_step,
    optimizer_params,
    world_key,
)

__all__ = ["CudaGraphs", "GraphedSteps", "ModelStep", "StepProgram", "check_cuda_graphs"]

WARM_UP_STEPS = 3


class StepProgram(Protocol):
    """One training step of some trainable thing, with what capture needs to know about it."""

    def step(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Forward, loss, backward and update on ``batch``; return the detached loss."""

    def release_grads(self) -> None:
        """Set the trained tensors' gradients to ``None`` (``zero_grad(set_to_none=True)``)."""

    def key(self) -> Hashable:
        """What the captured step depends on; a change means capture again."""

    def snapshot(self) -> Snapshot:
        """Record every value a step changes, to restore it."""

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
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.last_label = last_label
        self.device = device
        self.func = func

    def step(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:  # noqa: D102
        loss: Any = None
        try:
            if self.last_label:
                loss = self.loss_fn(self.model(*batch[:-1]), batch[-1])
            else:
                loss = self.loss_fn(self.model(*batch))
            loss.backward()
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


class CudaGraphs:
    """The CUDA calls of capture and replay, kept apart so that tests can stand in for them."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def side_stream(self) -> Any:
        """A stream for warm-up and capture (one for both: libraries cache handles per stream)."""
        return torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]

    @contextmanager
    def warm_up(self, stream: Any) -> Iterator[None]:
        """Run the block on ``stream``, with host synchronisations raised as errors."""
        current = torch.cuda.current_stream(self.device)
        stream.wait_stream(current)
        previous = torch.cuda.get_sync_debug_mode()
        try:
            with torch.cuda.stream(stream), warnings.catch_warnings():
                # capturable=True optimizers warn when stepped outside capture: expected here.
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                torch.cuda.set_sync_debug_mode("error")
                try:
                    yield
                finally:
                    torch.cuda.set_sync_debug_mode(previous)
        finally:
            current.wait_stream(stream)

    def capture(self, fn: Callable[[], None], stream: Any) -> Any:
        """Capture ``fn``'s CUDA work into a graph (nothing runs yet); return the graph."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            fn()
        return graph


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
    """A zero on the loss's device, at least float32 (half sums over an epoch lose digits)."""
    dtype = torch.promote_types(loss.dtype, torch.float32)
    return torch.zeros((), dtype=dtype, device=loss.device)


def _one_slice_per_size(slices: list[tuple[slice, int]]) -> list[tuple[slice, int]]:
    first: dict[int, slice] = {}
    for rows, size in slices:
        first.setdefault(size, rows)
    return [(rows, size) for size, rows in first.items()]


def check_cuda_graphs(
    cuda_graphs: object,
    tensors: Sequence[torch.Tensor],
    model: nn.Module,
    optimizer: object,
    *,
    func: str,
) -> bool:
    """Check ``cuda_graphs`` and, when it is true, that the training can run on CUDA graphs.

    Example:
        >>> check_cuda_graphs(False, [torch.zeros(2)], nn.Linear(1, 1), None, func="f")
        False
        >>> check_cuda_graphs(True, [torch.zeros(2)], nn.Linear(1, 1), None, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: cuda_graphs=True needs the data and the model on a CUDA device, ...
    """
    if not isinstance(cuda_graphs, bool):
        raise TypeError(f"{func}: 'cuda_graphs' must be True or False, got {describe(cuda_graphs)}")
    if not cuda_graphs:
        return False
    device = tensors[0].device
    if device.type != "cuda":
        raise ValueError(
            f"{func}: cuda_graphs=True needs the data and the model on a CUDA device, got "
            f"data on {device}; move both with .to('cuda'), or pass cuda_graphs=False"
        )
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.device != device:
            raise ValueError(
                f"{func}: cuda_graphs=True needs every parameter and buffer of the model on "
                f"the data's device {device}, but {name!r} is on {tensor.device}; move the "
                f"model with model.to({str(device)!r})"
            )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{func}: cuda_graphs=True needs a torch.optim.Optimizer (its state is recorded "
            f"and restored around the capture), got {describe(optimizer)}; pass "
            "cuda_graphs=False for other optimizers"
        )
    for p in optimizer_params(optimizer):
        if p.device != device:
            raise ValueError(
                f"{func}: cuda_graphs=True needs every parameter of the optimizer on the "
                f"data's device {device}, got one on {p.device}"
            )
    return True
