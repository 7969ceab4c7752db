"""An existing LightningModule, streamed: early stopping, the best model and a JSONL log.

Run it with ``uv run python examples/lightning_fit_stream.py``. ``DigitsClassifier`` is an
ordinary LightningModule on scikit-learn's bundled 8x8 digits (no download) that logs
``val_loss`` and ``val_acc`` and does not log a training loss (``fit_stream`` supplies
``train_loss`` from what ``training_step`` returns). ``fit_stream`` turns ``trainer.fit`` into a
stream of per-epoch events; FitStream's stages stop it when the validation loss stops
improving, keep the weights of the best epoch and write every epoch to
``runs/lightning_fit_stream.jsonl``. Lightning keeps device placement, precision and the loop.

``FITSTREAM_EXAMPLE_EPOCHS`` caps the number of epochs (default 60).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from fitstream_lightning import fit_stream
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset, random_split

from fitstream import best_model, collect_jsonl, early_stop, pipe, print_keys, tap


class DigitsClassifier(LightningModule):
    """A small MLP for 8x8 digit images, written the usual Lightning way."""

    def __init__(self, hidden: int = 64, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits)."""
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Return the batch loss; nothing is logged."""
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Log the validation loss and accuracy (averaged over the epoch and the ranks)."""
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam."""
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class DigitsData(LightningDataModule):
    """scikit-learn's digits, split 80/20 into training and validation sets."""

    def setup(self, stage: str) -> None:
        """Load the digits and split them."""
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        split = random_split(TensorDataset(x, y), [0.8, 0.2], torch.Generator().manual_seed(0))
        self.train_set, self.val_set = split

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled batches of 64."""
        return DataLoader(self.train_set, batch_size=64, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """The validation set in one batch."""
        return DataLoader(self.val_set, batch_size=360)


def quiet_lightning() -> None:
    """Keep the script's output to its own lines.

    At INFO level Lightning announces the hardware ("GPU available: ...") and advertises a
    cloud logger, and this Lightning release triggers a PyTorch deprecation warning inside
    ``fit``; none of it is about the example. Real warnings and errors still show.
    """
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )


def quiet_trainer(max_epochs: int, **options: Any) -> Trainer:
    """A CPU Trainer without progress bar, summary, logger or checkpoints (the stream logs)."""
    return Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def main() -> None:
    max_epochs = int(os.environ.get("FITSTREAM_EXAMPLE_EPOCHS", "60"))
    quiet_lightning()
    torch.manual_seed(0)
    model, data = DigitsClassifier(), DigitsData()
    trainer = quiet_trainer(max_epochs, devices=1)
    best = best_model("val_loss", device="cpu")
    log_path = Path("runs") / "lightning_fit_stream.jsonl"

    # The `with` block stops training at once, marked failed, if anything in it raises.
    with fit_stream(trainer, model, datamodule=data) as events:
        collect_jsonl(
            pipe(
                events,
                early_stop(key="val_loss", patience=5),
                tap(best),
                tap(print_keys("train_loss", "val_loss", "val_acc")),
            ),
            log_path,
        )

    print(f"trained {trainer.current_epoch} epochs, log in {log_path}")
    print(f"best epoch {best.best_step}: val_loss={best.best_value:.4f}")
    best.load_into(model)
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    print(f"validation accuracy of the best model: {metrics['val_acc']:.3f}")


if __name__ == "__main__":
    main()
