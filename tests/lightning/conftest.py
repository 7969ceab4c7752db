"""Small Lightning modules, a recording logger and a Trainer factory for the adapter's tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def _data(n: int = 32) -> TensorDataset:
    x = torch.randn(n, 4)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


class SmallModule(LightningModule):
    """Linear regression that logs train/val losses and records what the tests look at.

    ``on_batch(module, batch_idx)`` runs at the start of every training step.
    """

    def __init__(
        self,
        *,
        log_train_loss: bool = True,
        on_batch: Callable[[SmallModule, int], None] | None = None,
    ) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.log_train_loss = log_train_loss
        self.on_batch = on_batch
        self.batches = 0
        self.lrs: list[float] = []
        self.hooks: list[str] = []
        self.returned_losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.batches += 1
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        self.lrs.append(optimizer.param_groups[0]["lr"])
        if self.on_batch is not None:
            self.on_batch(self, batch_idx)
        x, y = batch
        loss = F.mse_loss(self.layer(x), y)
        self.returned_losses.append(loss.item())
        if self.log_train_loss:
            self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self.layer(x), y))

    def on_train_epoch_end(self) -> None:
        self.log("epoch_hook_metric", float(self.current_epoch))

    def on_train_end(self) -> None:
        self.hooks.append("on_train_end")

    def on_fit_end(self) -> None:
        self.hooks.append("on_fit_end")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(_data(), batch_size=8)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(_data(16), batch_size=8)


class RecordingLogger(Logger):
    """Remembers how it was finalised."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[str] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def finalize(self, status: str) -> None:
        self.statuses.append(status)


class HookRecorder(Callback):
    """Remembers the end-of-run hooks Lightning called."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.exceptions: list[BaseException] = []

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.calls.append("on_train_end")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.calls.append("on_fit_end")

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self.calls.append("on_exception")
        self.exceptions.append(exception)


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., Trainer]:
    """A Trainer factory with fast CPU defaults; keyword arguments override them."""

    def make(**overrides: Any) -> Trainer:
        options: dict[str, Any] = {
            "max_epochs": 6,
            "limit_train_batches": 4,
            "limit_val_batches": 2,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "logger": False,
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": tmp_path,
        }
        options.update(overrides)
        return Trainer(**options)

    return make


@pytest.fixture
def small_module() -> type[SmallModule]:
    """The :class:`SmallModule` class."""
    return SmallModule


@pytest.fixture
def recording_logger() -> RecordingLogger:
    """A fresh :class:`RecordingLogger`."""
    return RecordingLogger()


@pytest.fixture
def hook_recorder() -> HookRecorder:
    """A fresh :class:`HookRecorder`."""
    return HookRecorder()


def _bridge_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fitstream-bridge-")]


@pytest.fixture
def bridge_threads() -> Callable[[], list[str]]:
    """A function naming the stream worker threads that are running now."""
    return _bridge_threads
