"""The generator behind :func:`~fitstream.epoch_stream`.

It builds the per-batch loop (plain, with step options, or graphed) at the first ``next()``,
then trains one epoch per ``next()`` and yields its event.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Generator
from typing import Any

import torch
from torch import nn

from ..._internal.metrics import Value
from ..._internal.optimizers import learning_rate
from ..._internal.source_state import attach
from ..._internal.values import as_floats
from ...events import Event
from .._shared import stack_losses
from ..batching import batch_slices, shuffled
from ..graphed.cuda import CudaGraphs
from ..graphed.steps import GraphedSteps, ModelStep
from ..step_options import StepOptions
from .loop import Loop
from .tuned import TunedLoop

__all__ = ["train_epochs"]

_FUNC = "epoch_stream"
_TOTAL = "\0train_loss"  # the loss sum among the values read back with it


def train_epochs(
    tensors: tuple[torch.Tensor, ...],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    *,
    batch_size: int,
    shuffle: bool,
    last_label: bool,
    generator: torch.Generator | None,
    constants: dict[str, Any],
    step_offset: int,
    cuda_graphs: bool,
    options: StepOptions,
) -> Generator[Event, None, None]:
    """Train the checked model, one epoch per ``next()`` (see ``epoch_stream``)."""
    n_samples = tensors[0].shape[0]
    slices = batch_slices(n_samples, batch_size)
    run_epoch: Callable[[tuple[torch.Tensor, ...]], torch.Tensor]
    tuned: TunedLoop | None = None
    extras: dict[str, Value] = {}
    if cuda_graphs:
        program = ModelStep(
            model, optimizer, loss_fn, last_label=last_label, device=tensors[0].device,
            func=_FUNC, clip=options.clip, autocast=options.autocast,
        )  # fmt: skip
        graphed = GraphedSteps(program, func=_FUNC, cuda=CudaGraphs(tensors[0].device))
        run_epoch = functools.partial(graphed.run_epoch, slices=slices)
    elif options.plain:
        zero_grad: Callable[[], Any] = optimizer.zero_grad
        if isinstance(optimizer, torch.optim.Optimizer):
            zero_grad = functools.partial(optimizer.zero_grad, set_to_none=True)
        loop = Loop(model, loss_fn, zero_grad, optimizer.step, last_label)
        run_epoch = _eager_epochs(loop, slices, batch_size)
    else:
        groups = getattr(optimizer, "param_groups", None)
        params = [p for g in groups for p in g["params"]] if groups else model.parameters()
        tuned = TunedLoop(
            model, optimizer, loss_fn, options, params=params, last_label=last_label,
            device=tensors[0].device,
        )  # fmt: skip

        def run_epoch(data: tuple[torch.Tensor, ...]) -> torch.Tensor:
            total, found = tuned.run_epoch(data, slices)
            extras.clear()
            extras.update(found)
            return total

    # what checkpoint saves with the optimizer: this stream's scheduler and scaler (or none,
    # replacing what an earlier stream over the same optimizer had)
    attach(
        optimizer,
        scheduler=None if tuned is None else tuned.scheduler,
        scaler=None if tuned is None else tuned.scaler,
    )
    clock = time.perf_counter
    train = model.train
    optimizers = (optimizer,)
    step = step_offset
    while True:
        started = clock()
        train()
        data = shuffled(tensors, generator) if shuffle else tensors
        total = run_epoch(data)
        read: dict[str, float] = {}
        if extras:  # the train metrics, read back with the loss in one transfer
            read = as_floats({**extras, _TOTAL: total})
            train_loss = read.pop(_TOTAL) / n_samples
        else:
            train_loss = total.item() / n_samples
        elapsed = clock() - started
        step += 1
        event = Event(
            step=step,
            model=model,
            optimizer=optimizer,
            train_loss=train_loss,
            train_time_sec=elapsed,
        )
        # under a per-step scheduler, the rate of the epoch's last step; else the rate now
        rate = None if tuned is None else tuned.event_rate()
        rate = learning_rate(optimizers) if rate is None else rate
        if rate is not None:
            event["lr"] = rate
        event.update(read)
        event.update(constants)
        yield event


def _eager_epochs(
    loop: Loop,
    slices: list[tuple[slice, int]],
    batch_size: int,
) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    """The careful hand loop: one epoch per call, returning the size-weighted loss sum."""
    # Full batches share one weight, so their losses are summed as they are and scaled once at
    # the end of the epoch; only a short last batch needs a weight of its own.
    full = [rows for rows, size in slices if size == batch_size]
    short = slices[-1] if slices[-1][1] != batch_size else None

    def run_epoch(data: tuple[torch.Tensor, ...]) -> torch.Tensor:
        losses = loop.run(data, full)
        total = stack_losses(losses).sum() * batch_size if losses else None
        if short is not None:
            rows, size = short
            last = loop.run(data, [rows])[0] * size
            total = last if total is None else total + last
        assert total is not None  # at least one batch: the data is never empty
        return total

    return run_epoch
