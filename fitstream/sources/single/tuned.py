"""The per-batch loop of :func:`fitstream.epoch_stream` with step options on.

With every option off, ``epoch_stream`` runs :class:`.loop.Loop`; with any on, this loop, the
one a careful user writes around those options by hand:

- ``accumulate=A``: the gradients of ``A`` batches are summed, each batch's loss divided by
  ``A``, before one optimizer step; an epoch's last group may be shorter and is stepped at the
  epoch's end with its losses still divided by ``A``, as Lightning's
  ``accumulate_grad_batches`` does;
- ``autocast``: forward and loss under ``torch.autocast``; for float16 a ``GradScaler`` scales
  the loss, unscales the gradients before clipping, and steps (or skips) the optimizer;
- ``clip_grad_norm``/``clip_grad_value``: on the summed gradients, before each step;
- ``schedulers``: stepped after each optimizer step;
- ``train_metrics``: on each batch's own outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..._internal.forward_errors import forward
from ..._internal.metrics import Value
from ..._internal.optimizers import as_rate, group_rates
from .._shared import weighted_loss_sum
from ..clipping import clipped_step
from ..precision import new_scaler
from ..step_options import StepOptions
from ..train_metrics import TrainMetrics
from .loop import explain_bad_loss, zero_grad_of

__all__ = ["TunedLoop"]

_FUNC = "epoch_stream"


class TunedLoop:
    """One model's epoch of steps with the step options on; see the module's text."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[..., torch.Tensor],
        options: StepOptions,
        *,
        last_label: bool,
        device: torch.device,
    ) -> None:
        self.model, self.loss_fn, self.last_label = model, loss_fn, last_label
        self.device = device
        self.zero_grad = zero_grad_of(optimizer)
        self.accumulate = options.accumulate
        self.dtype = options.autocast
        self.scaler = new_scaler(options.autocast, device)
        self.scheduler = options.schedulers[0] if options.schedulers else None
        self.metrics = TrainMetrics(options.metrics, func=_FUNC) if options.metrics else None
        self.rates: list[float] = []  # the group rates of the epoch's last step
        self.optimizer = optimizer
        groups = getattr(optimizer, "param_groups", None)
        params = [p for g in groups for p in g["params"]] if groups else list(model.parameters())
        self.step = self._stepper(optimizer, params, options)

    def _stepper(
        self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], options: StepOptions
    ) -> Callable[[], Any]:
        scaler = self.scaler
        if scaler is None:
            return clipped_step(optimizer.step, params, options.clip)

        def scaled_step() -> None:
            scaler.step(optimizer)  # skipped when the gradients hold an inf or a NaN
            scaler.update()

        step = clipped_step(scaled_step, params, options.clip)
        if options.clip is None:
            return step

        def unscaled_then_clipped() -> None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            step()

        return unscaled_then_clipped

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def run_epoch(
        self, data: tuple[torch.Tensor, ...], slices: list[tuple[slice, int]]
    ) -> tuple[torch.Tensor, dict[str, Value]]:
        """Train one epoch; return the size-weighted loss sum and the train metrics' values."""
        model, loss_fn, last_label = self.model, self.loss_fn, self.last_label
        inputs, labels = (data[:-1] if last_label else data), data[-1]
        metrics, scaler, scheduler = self.metrics, self.scaler, self.scheduler
        group, last = self.accumulate, len(slices) - 1
        if metrics is not None:
            metrics.begin(self.device)
        losses: list[torch.Tensor] = []
        loss: Any = None
        try:
            for j, (rows, size) in enumerate(slices):
                if j % group == 0:
                    self.zero_grad()
                with self._precision():
                    batch = [tensor[rows] for tensor in inputs]
                    prediction = forward(model, batch, func=_FUNC, arg="train_data")
                    target = labels[rows] if last_label else None
                    loss = loss_fn(prediction, target) if last_label else loss_fn(prediction)
                scaled = loss / group if group != 1 else loss
                (scaled if scaler is None else scaler.scale(scaled)).backward()
                losses.append(loss.detach())
                if metrics is not None:
                    metrics.add(prediction, target, size)
                if (j + 1) % group == 0 or j == last:
                    self.step()
                    if scheduler is not None:
                        self.rates = group_rates(self.optimizer)
                        scheduler.step()
        except (TypeError, RuntimeError) as exc:
            explain_bad_loss(loss, exc)
            raise
        total = weighted_loss_sum(losses, slices)
        n_rows = sum(size for _, size in slices)
        return total, ({} if metrics is None else metrics.values(n_rows))

    def event_rate(self) -> float | list[float] | None:
        """The event's ``lr`` under a scheduler: the rates its last step used; else ``None``."""
        return None if self.scheduler is None else as_rate(self.rates)
