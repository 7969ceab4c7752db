"""The in-memory training source: one event per epoch of mini-batch training."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..._internal.checks import (
    check_generator,
    describe,
)
from ..._internal.train_checks import check_no_closure, check_optimizer_for, check_rates
from ...events import Event
from .._shared import Released, check_fit, check_optimizer, check_run
from ..step_options import check_step_options
from .training import train_epochs

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
    accumulate: int = 1,
    autocast: torch.dtype | None = None,
    schedulers: Any = None,
    train_metrics: Mapping[str, Any] | None = None,
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
            ``gradient_clip_val``). Captured in the CUDA graph with ``cuda_graphs=True``.
        clip_grad_value: Before each optimizer step, clamp every gradient value to
            ``[-clip_grad_value, clip_grad_value]`` (``torch.nn.utils.clip_grad_value_``).
            One of the two clipping keywords at most.
        accumulate: Take one optimizer step per ``accumulate`` batches (Lightning's
            ``accumulate_grad_batches``): each batch's loss is divided by ``accumulate`` and
            the gradients are summed, so for a mean-reduced loss a group of full batches
            steps as one batch of their concatenated rows would. The epoch's last group may
            be shorter; it is stepped at the epoch's end with its losses still divided by
            ``accumulate`` (a smaller step), as Lightning does. ``train_loss`` stays the mean
            of the undivided losses.
        autocast: Run the forward pass and ``loss_fn`` under ``torch.autocast(device_type,
            dtype=autocast)`` (Keras's ``mixed_precision``, Lightning's
            ``precision="bf16-mixed"``); the backward pass and the step use the parameters'
            own dtype. ``torch.bfloat16`` works on the CPU and on CUDA; ``torch.float16``
            only on CUDA, where a ``torch.amp.GradScaler`` scales the loss, unscales the
            gradients before clipping and skips a step whose gradients overflowed (its state
            is saved by :func:`fitstream.checkpoint`). bfloat16 is captured in the CUDA graph
            with ``cuda_graphs=True``; float16 is not.
        schedulers: A torch LR scheduler over ``optimizer``, stepped after every optimizer
            step (``OneCycleLR``, a warm-up). The event's ``lr`` is then the rate of the
            epoch's last step. :func:`fitstream.checkpoint` saves its state and
            :func:`fitstream.resume` loads it back (into this scheduler, when the stream is
            built after the resume). A scheduler stepped once per epoch is a stage instead:
            ``tap(lambda ev: scheduler.step())``.
        train_metrics: Metrics of the training batches, by name, computed on the outputs the
            step already has (no extra forward, in train mode) and reported as
            ``train_<name>``: the same kinds :func:`fitstream.evaluate` takes (a callable
            ``fn(pred, labels)``, weighted by batch size over the epoch, or a torchmetrics
            metric, reset each epoch). They are read back with the loss, in the epoch's one
            host synchronisation.

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
            ``step_offset``, ``extra`` keys that clash with the event's own keys,
            ``cuda_graphs=True`` with data, model or optimizer not all on one CUDA device or
            with ``accumulate``, ``schedulers``, ``train_metrics`` or float16 (not captured in
            the graph yet), a non-positive clip or ``accumulate``, an ``autocast`` dtype that
            is not a half-precision float type (or float16 off CUDA), a scheduler over another
            optimizer (or a ReduceLROnPlateau), or a train metric named so that
            ``train_<name>`` is taken (or a metric class not called).

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
    check_no_closure(optimizer, func=_FUNC, arg="optimizer")
    check_rates(optimizer, func=_FUNC, arg="optimizer")
    graphed = check_fit(tensors, model, optimizer, cuda_graphs, func=_FUNC)
    check_generator(generator, tensors[0].device, func=_FUNC)
    options = check_step_options(
        clip_grad_norm=clip_grad_norm,
        clip_grad_value=clip_grad_value,
        accumulate=accumulate,
        autocast=autocast,
        schedulers=schedulers,
        train_metrics=train_metrics,
        optimizers=[optimizer],
        device=tensors[0].device,
        extra=constants,
        cuda_graphs=graphed,
        ensemble=False,
        func=_FUNC,
        last_label=bool(last_label),
    )
    return Released(
        train_epochs(
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
            options=options,
        )
    )
