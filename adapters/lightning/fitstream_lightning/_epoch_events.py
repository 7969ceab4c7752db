"""The callback that turns each finished Lightning epoch into a FitStream event.

Timing matters: the event must come after the epoch's validation, the module's
``on_train_epoch_end`` and the monitoring callbacks (``EarlyStopping``, ``ModelCheckpoint``).
Lightning calls ``on_train_epoch_end`` of ordinary callbacks *before* the module's hook and
runs the monitoring callbacks (instances of ``EarlyStopping`` or ``Checkpoint``) last. So
:class:`EpochEvents` (an ordinary callback that does the bookkeeping) installs, for the
length of a ``fit``, a tiny :class:`Checkpoint` companion at the very end of
``trainer.callbacks`` whose ``on_train_epoch_end`` builds the event. The companion is added
in ``setup`` (after Lightning's own checks of the callback list and after
``configure_callbacks``) and removed when ``fit`` ends, so ``Trainer(enable_checkpointing=...)``
and the default ``ModelCheckpoint`` are unaffected.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint

from fitstream import Event
from fitstream._internal.optimizers import learning_rate
from fitstream._internal.values import as_floats

from ._distributed import sum_across_ranks

__all__ = ["EpochEvents", "append_callback", "remove_callback"]


def remove_callback(trainer: Trainer, callback: Callback) -> None:
    """Take ``callback`` out of ``trainer.callbacks``, replacing the list (never mutating it).

    Lightning may be iterating over the current list when a hook calls this.
    """
    callbacks: list[Callback] = getattr(trainer, "callbacks", [])  # set by Lightning's connector
    if any(cb is callback for cb in callbacks):
        trainer.callbacks = [cb for cb in callbacks if cb is not callback]  # type: ignore[attr-defined]


def append_callback(trainer: Trainer, callback: Callback) -> None:
    """Put ``callback`` at the end of ``trainer.callbacks`` (in a new list)."""
    callbacks: list[Callback] = getattr(trainer, "callbacks", [])
    trainer.callbacks = [*callbacks, callback]  # type: ignore[attr-defined]


class _AfterMonitors(Checkpoint):
    """Runs after every other ``on_train_epoch_end`` and hands over to its owner."""

    def __init__(self, owner: EpochEvents) -> None:
        self.owner = owner

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.owner.epoch_ended(trainer, pl_module)


class EpochEvents(Callback):
    """Bookkeeping for one event per epoch; subclasses say what to do with it in :meth:`on_event`.

    The event holds ``step`` (completed epochs, 1-based), ``global_step``, ``train_loss``,
    every entry of ``trainer.callback_metrics`` as a float (validation metrics only in epochs
    whose validation ran), ``train_time_sec``, ``lr`` (the rate of each param group of
    ``trainer.optimizers``, a float when there is one), ``model`` and ``trainer``.
    ``train_loss`` is the module's logged ``train_loss`` if it logs one, else the mean loss its
    ``training_step`` returned this epoch (summed on the device, so no synchronisation per
    step), else NaN.
    """

    def __init__(self) -> None:
        self._companion = _AfterMonitors(self)
        self._epoch_start = time.perf_counter()
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._before_validation: dict[str, Any] | None = None
        self._validated_now: set[str] = set()
        self._from_validation: dict[str, object] = {}  # the value each key last got there

    # -- what subclasses provide -------------------------------------------------------------

    def on_event(self, trainer: Trainer, event: Event) -> None:
        """Receive the event of an epoch that just ended (``trainer.should_stop`` may be set)."""
        raise NotImplementedError

    def check(self) -> None:
        """Called before every training and validation batch; may raise to abort the run."""

    # -- installing the companion ------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.detach(trainer)
            append_callback(trainer, self._companion)
            self._from_validation = {}

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.detach(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self.detach(trainer)

    def detach(self, trainer: Trainer) -> None:
        """Take the companion callback out of ``trainer.callbacks`` (if it is there)."""
        remove_callback(trainer, self._companion)

    # -- per epoch and per batch -------------------------------------------------------------

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._loss_sum, self._loss_count = None, 0
        self._validated_now = set()

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.check()

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            return
        total = self._loss_sum
        if total is None:
            total = self._loss_sum = torch.zeros((), dtype=torch.float32, device=loss.device)
        scale = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        # Lightning divided the loss by the accumulation count; one in-place add, no sync.
        total.add_(loss.detach().reshape(()), alpha=scale)
        self._loss_count += 1

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.check()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._before_validation = dict(trainer.callback_metrics)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        before = self._before_validation
        if trainer.sanity_checking or before is None:
            return
        # Validation replaces each value it logs with a new tensor; ``before`` keeps the old
        # ones alive, so an identity test tells exactly which keys this validation logged.
        fresh = {k: v for k, v in trainer.callback_metrics.items() if before.get(k) is not v}
        self._validated_now.update(fresh)
        self._from_validation.update(fresh)
        self._before_validation = None

    def epoch_ended(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Build this epoch's event and pass it to :meth:`on_event` (called by the companion)."""
        self.on_event(trainer, self.build_event(trainer, pl_module))

    def build_event(self, trainer: Trainer, pl_module: LightningModule) -> Event:
        """The event of the epoch that is ending now."""
        # Stale: still the very value an earlier epoch's validation left (a key that training
        # logs too holds training's newer value and stays).
        stale = {
            key
            for key, value in self._from_validation.items()
            if key not in self._validated_now and trainer.callback_metrics.get(key) is value
        }
        values: dict[str, object] = {
            key: value for key, value in trainer.callback_metrics.items() if key not in stale
        }
        if "train_loss" not in values:
            values["train_loss"] = self._mean_loss(trainer, pl_module)
        numbers = as_floats(values)
        event = Event(
            step=trainer.current_epoch + 1,
            global_step=trainer.global_step,
            train_loss=numbers.pop("train_loss", math.nan),
        )
        for key, number in numbers.items():
            event.setdefault(key, number)  # the facts above win over a metric of that name
        event["train_time_sec"] = time.perf_counter() - self._epoch_start
        rate = learning_rate(trainer.optimizers)  # before the epoch's schedulers step
        if rate is not None:
            event["lr"] = rate
        event["model"] = pl_module
        event["trainer"] = trainer
        return event

    def _mean_loss(self, trainer: Trainer, pl_module: LightningModule) -> torch.Tensor:
        device = self._loss_sum.device if self._loss_sum is not None else pl_module.device
        total = self._loss_sum if self._loss_sum is not None else torch.zeros((), device=device)
        count = torch.tensor(float(self._loss_count), device=device)
        total, count = sum_across_ranks(trainer, torch.stack([total, count])).unbind()
        return total / count  # 0 / 0 is NaN: no loss was returned this epoch
