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
from ..._internal.train_checks import check_rates
from ..._internal.values import as_floats
from ...events import Event
from .._shared import weighted_loss_sum
from ..batching import batch_slices, shuffled
from ..graphed.cuda import CudaGraphs
from ..graphed.steps import GraphedSteps, ModelStep
from ..step_options import StepOptions
from .loop import Loop, zero_grad_of
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
    tuned = (
        None
        if cuda_graphs or options.plain
        else TunedLoop(
            model, optimizer, loss_fn, options, last_label=last_label, device=tensors[0].device
        )
    )
    run_epoch = _epoch_runner(
        model, optimizer, loss_fn, slices, tuned=tuned, options=options,
        last_label=last_label, cuda_graphs=cuda_graphs, device=tensors[0].device,
    )  # fmt: skip
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
        check_rates(optimizer, func="epoch_stream", arg="optimizer")  # changed between epochs?
        train()
        data = shuffled(tensors, generator) if shuffle else tensors
        total, extras = run_epoch(data)
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


EpochRunner = Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, dict[str, Value]]]


def _epoch_runner(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    slices: list[tuple[slice, int]],
    *,
    tuned: TunedLoop | None,
    options: StepOptions,
    last_label: bool,
    cuda_graphs: bool,
    device: torch.device,
) -> EpochRunner:
    """One epoch per call: the size-weighted loss sum and the train metrics' values."""
    if tuned is not None:
        return functools.partial(tuned.run_epoch, slices=slices)
    if cuda_graphs:
        program = ModelStep(
            model, optimizer, loss_fn, last_label=last_label, device=device, func=_FUNC,
            clip=options.clip, autocast=options.autocast,
        )  # fmt: skip
        graphed = GraphedSteps(program, func=_FUNC, cuda=CudaGraphs(device))

        def graphed_epoch(data: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, Value]]:
            return graphed.run_epoch(data, slices=slices), {}

        return graphed_epoch
    loop = Loop(model, loss_fn, zero_grad_of(optimizer), optimizer.step, last_label)
    rows = [batch for batch, _ in slices]

    def plain_epoch(data: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, Value]]:
        return weighted_loss_sum(loop.run(data, rows), slices), {}

    return plain_epoch
