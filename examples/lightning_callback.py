"""The same LightningModule with FitStream stages inside an unchanged ``trainer.fit(...)``.

Run it with ``uv run python examples/lightning_callback.py``. When the call to ``trainer.fit``
cannot change (LightningCLI, a shared training script), add ``StreamCallback(*stages)`` to the
Trainer's callbacks: each epoch's event goes through the stages, and when the pipeline ends
(here ``early_stop`` on the validation loss) the Trainer stops at that epoch.

``FITSTREAM_EXAMPLE_EPOCHS`` caps the number of epochs (default 60).
"""

from __future__ import annotations

import os

import torch
from fitstream_lightning import StreamCallback
from lightning_fit_stream import DigitsClassifier, DigitsData, quiet_lightning, quiet_trainer

from fitstream import best_model, early_stop, print_keys, tap


def main() -> None:
    max_epochs = int(os.environ.get("FITSTREAM_EXAMPLE_EPOCHS", "60"))
    quiet_lightning()
    torch.manual_seed(0)
    model, data = DigitsClassifier(), DigitsData()
    best = best_model("val_loss", device="cpu")
    callback = StreamCallback(
        early_stop(key="val_loss", patience=5),
        tap(best),
        tap(print_keys("train_loss", "val_loss", "val_acc")),
    )
    trainer = quiet_trainer(max_epochs, devices=1, callbacks=[callback])

    trainer.fit(model, datamodule=data)  # the ordinary call, unchanged

    print(f"trained {trainer.current_epoch} epochs")
    print(f"best epoch {best.best_step}: val_loss={best.best_value:.4f}")


if __name__ == "__main__":
    main()
