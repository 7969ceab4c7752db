"""The in-memory training source: one event per epoch of mini-batch training."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..._internal.checks import (
    check_generator,
    describe,
)
from ..._internal.optimizers import learning_rate
from ..._internal.train_checks import check_optimizer_for
from ...events import Event
from .._shared import Released, check_fit, check_optimizer, check_run, stack_losses
from ..batching import batch_slices, shuffled
from ..clipping import Clip, check_clip, clipped_step
from ..graphed.cuda import CudaGraphs
from ..graphed.steps import GraphedSteps, ModelStep
from .loop import Loop

__all__ = ["epoch_stream"]

_FUNC = "epoch_stream"


def epoch_stream(
    train_data: Sequence[torch.Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    *,
    batch_size: int = 1,
    shuffle: bool = True,
    last_label: bool = True,
    generator: torch.Generator | None = None,
    extra: Mapping[str, Any] | None = None,
    step_offset: int = 0,
    cuda_graphs: bool = False,
    clip_grad_norm: float | None = None,
    clip_grad_value: float | None = None,
) -> Iterator[Event]:
    """Train ``model`` epoch after epoch on in-memory tensors, yielding one event per epoch.

    Every argument is checked when ``epoch_stream`` is called; training starts at the first
    ``next()`` and each ``next()`` runs exactly one epoch. The stream never ends by itself:
    bound it with ``itertools.islice``, :func:`fitstream.take` or :func:`fitstream.early_stop`.

    Each event holds ``step`` (epochs done, counted from 1 plus ``step_offset``), ``model`` (the
    live model, not a copy), ``optimizer`` (the live optimizer), ``train_loss`` (the epoch's
    mean loss weighted by batch sizes, a Python ``float``; NaN or infinity are reported as they
    are), ``train_time_sec`` (seconds the epoch's training took), ``lr`` (the learning rate the
    epoch trained with: a ``float`` for one param group, a list of one ``float`` per group
    otherwise; left out for an optimizer without ``param_groups``) and every entry of
    ``extra``. Changing ``optimizer.param_groups`` while holding an event changes the rate of
    the next epoch (see :func:`fitstream.reduce_lr_on_plateau`).

    The loop is the one a careful user writes by hand: the model is put in train mode at the
    start of each epoch, the rows are shuffled once per epoch (one gathered copy of the data
    per epoch) and batches are slice views of it,
    gradients are reset with ``zero_grad(set_to_none=True)``, and the loss is summed on the
    data's device and read back once per epoch (one host-device synchronisation).

    Args:
        train_data: Tensors sharing their first (sample) dimension, e.g. ``(X, y)``, on the
            model's device.
        model: The module to train.
        optimizer: An optimizer over the model's parameters (anything with ``step()`` and
            ``zero_grad()``).
        loss_fn: Called as ``loss_fn(model(*inputs), labels)`` when ``last_label`` is true,
            else as ``loss_fn(model(*train_data))``; returns a scalar tensor.
        batch_size: Rows per mini-batch; the last batch of an epoch may be shorter.
        shuffle: Whether to visit the rows in a new random order each epoch.
        last_label: Whether the last tensor of ``train_data`` holds the labels.
        generator: Random source for the shuffle, for reproducible runs.
        extra: Constant entries added to every event, e.g. ``{"run": "baseline"}``.
        step_offset: Added to ``step``, e.g. to continue a run that already did that many epochs.
        cuda_graphs: On a CUDA device, capture each training step (forward, loss, backward,
            optimizer step) once as a CUDA graph and replay it for every batch: the same
            events and numbers (to rounding), with far less launch overhead for small models
            (the Speed page of the documentation has figures and constraints). The first
            epoch, and any
            epoch after the model's tensors, the optimizer's state objects or its
            hyperparameters changed, captures again; an optimizer with a ``capturable`` flag
            is switched to ``capturable=True``. A step that cannot be captured (a host
            synchronisation such as ``.item()``, a data-dependent shape) raises a
            ``RuntimeError`` at that ``next()`` that says what to change, with the model and
            optimizer left as they were.

        clip_grad_norm: Before each optimizer step, scale the gradients so that their total
            norm is at most this, as ``torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)``
            over the optimizer's parameters (Keras's ``clipnorm``, Lightning's
            ``gradient_clip_val``). Not with ``cuda_graphs=True`` yet.
        clip_grad_value: Before each optimizer step, clamp every gradient value to
            ``[-clip_grad_value, clip_grad_value]`` (``torch.nn.utils.clip_grad_value_``).
            One of the two clipping keywords at most.

    Returns:
        An endless iterator of :class:`~fitstream.Event` dicts. While it is iterated, an
        exception raised by the model, ``loss_fn`` or the optimizer propagates unchanged and
        ends the stream; a ``loss_fn`` result that cannot be back-propagated (not a tensor,
        more than one element, no gradient) raises a ``TypeError`` or ``ValueError`` that
        says what came.

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: For empty data, differing first dimensions, data on another device than
            the model, ``last_label=True`` with one tensor, ``batch_size < 1``, a negative
            ``step_offset``, ``extra`` keys that clash with the event's own keys, or
            ``cuda_graphs=True`` with data, model or optimizer not all on one CUDA device.

    Example:
        >>> from itertools import islice
        >>> X = torch.randn(64, 3)
        >>> y = X @ torch.tensor([1.0, -2.0, 0.5])
        >>> model = nn.Linear(3, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> loss_fn = lambda pred, target: nn.functional.mse_loss(pred.squeeze(-1), target)
        >>> events = epoch_stream((X, y), model, optimizer, loss_fn, batch_size=16,
        ...                       extra={"run": "demo"})
        >>> history = [
        ...     (ev["step"], ev["train_loss"], ev["run"]) for ev in islice(events, 20)
        ... ]
        >>> history[0][0], history[-1][0], history[-1][2]
        (1, 20, 'demo')
        >>> history[-1][1] < history[0][1]
        True
    """
    tensors, constants = check_run(
        train_data,
        loss_fn,
        batch_size=batch_size,
        shuffle=shuffle,
        last_label=last_label,
        extra=extra,
        step_offset=step_offset,
        func=_FUNC,
    )
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_FUNC}: 'model' must be a torch.nn.Module, got {describe(model)}")
    check_optimizer_for(optimizer, model, func=_FUNC)
    check_optimizer(optimizer, func=_FUNC, arg="optimizer")
    graphed = check_fit(tensors, model, optimizer, cuda_graphs, func=_FUNC)
    check_generator(generator, tensors[0].device, func=_FUNC)
    clip = check_clip(clip_grad_norm, clip_grad_value, cuda_graphs=graphed, func=_FUNC)
    return Released(
        _epochs(
            tensors,
            model,
            optimizer,
            loss_fn,
            batch_size=batch_size,
            shuffle=shuffle,
            last_label=last_label,
            generator=generator,
            constants=constants,
            step_offset=step_offset,
            cuda_graphs=graphed,
            clip=clip,
        )
    )


def _epochs(
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
    clip: Clip | None,
) -> Generator[Event, None, None]:
    n_samples = tensors[0].shape[0]
    slices = batch_slices(n_samples, batch_size)
    run_epoch: Callable[[tuple[torch.Tensor, ...]], torch.Tensor]
    if cuda_graphs:
        program = ModelStep(
            model, optimizer, loss_fn, last_label=last_label, device=tensors[0].device, func=_FUNC
        )
        graphed = GraphedSteps(program, func=_FUNC, cuda=CudaGraphs(tensors[0].device))
        run_epoch = functools.partial(graphed.run_epoch, slices=slices)
    else:
        zero_grad: Callable[[], Any] = optimizer.zero_grad
        if isinstance(optimizer, torch.optim.Optimizer):
            zero_grad = functools.partial(optimizer.zero_grad, set_to_none=True)
        groups = getattr(optimizer, "param_groups", None)
        params = [p for g in groups for p in g["params"]] if groups else model.parameters()
        step_fn = clipped_step(optimizer.step, params, clip)
        loop = Loop(model, loss_fn, zero_grad, step_fn, last_label)
        run_epoch = _eager_epochs(loop, slices, batch_size)
    clock = time.perf_counter
    train = model.train
    optimizers = (optimizer,)
    step = step_offset
    while True:
        started = clock()
        train()
        data = shuffled(tensors, generator) if shuffle else tensors
        train_loss = run_epoch(data).item() / n_samples
        elapsed = clock() - started
        step += 1
        event = Event(
            step=step,
            model=model,
            optimizer=optimizer,
            train_loss=train_loss,
            train_time_sec=elapsed,
        )
        rate = learning_rate(optimizers)
        if rate is not None:
            event["lr"] = rate
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
