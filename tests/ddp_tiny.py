"""The tiny LightningModule and data the torchrun workers train (imported from their folder).

Kept apart from the workers so each worker is only what it tests; importing it imports
Lightning, so only the workers (never pytest's own process) import it.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Tiny(LightningModule):  # type: ignore[misc]
    """One linear layer on 4 features; logs ``val_loss`` (synced over ranks) when validated."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch: Any, _: int) -> Any:
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, _: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.layer(x), y), sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader[Any]:
    """64 seeded rows in batches of 16, the same on every rank."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    return DataLoader(TensorDataset(x, y), batch_size=16)
