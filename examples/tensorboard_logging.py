"""Log training runs to TensorBoard with one stage: ``log_tensorboard``.

Run it with ``python examples/tensorboard_logging.py``. It trains the same small classifier on
scikit-learn's bundled 8x8 digits (no download) with two learning rates, one TensorBoard run
each in a folder ``runs/digits/<time>_lr_<lr>`` (a new pair each time it runs, so earlier runs
stay to compare with). Every epoch's ``train_loss``, ``val_loss``, ``train_acc`` and
``val_acc`` are logged at the epoch number, in a ``train`` and a ``validation`` sub-run, so
the Time Series tab shows train and validation of each metric on one chart (``epoch/loss``,
``epoch/acc``); the HParams tab compares the two runs by their learning rate and their final
and best values. Then look at them with::

    tensorboard --logdir runs/digits

``FITSTREAM_EXAMPLE_EPOCHS`` sets the number of epochs of each run (default 30).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from fitstream import (
    augment,
    collect,
    epoch_stream,
    evaluate,
    log_tensorboard,
    pipe,
    take,
    validation_loss,
)

Data = tuple[torch.Tensor, torch.Tensor]


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(dim=1) == labels).float().mean()


def load_splits() -> tuple[Data, Data]:
    digits = load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
    return (X_train, y_train), (X_val, y_val)


def train_run(lr: float, epochs: int, train: Data, val: Data, log_dir: Path) -> dict[str, float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    batch_size = 64

    events = pipe(
        epoch_stream(train, model, optimizer, loss_fn, batch_size=batch_size),
        augment(validation_loss(val, loss_fn)),
        augment(evaluate(val, metrics={"val_acc": accuracy})),
        augment(evaluate(train, metrics={"train_acc": accuracy})),
        take(epochs),
        log_tensorboard(
            log_dir,
            keys=["train_loss", "val_loss", "train_acc", "val_acc"],
            hparams={"lr": lr, "batch_size": batch_size, "optimizer": "sgd"},
        ),
    )
    history = collect(events, include=["step", "train_loss", "val_loss", "val_acc"])
    last = history[-1]
    return {
        "epochs": last["step"],
        "train_loss": last["train_loss"],
        "val_loss": last["val_loss"],
        "val_acc": last["val_acc"],
        "best_val_loss": min(event["val_loss"] for event in history),
    }


def main() -> None:
    epochs = int(os.environ.get("FITSTREAM_EXAMPLE_EPOCHS", "30"))
    train, val = load_splits()
    root = Path("runs") / "digits"
    started = time.strftime("%Y%m%d-%H%M%S")
    for lr in (0.01, 0.1):
        log_dir = root / f"{started}_lr_{lr}"
        result = train_run(lr, epochs, train, val, log_dir)
        print(
            f"lr={lr}: wrote {result['epochs']} epochs to {log_dir}; final "
            f"train_loss={result['train_loss']:.4f} val_loss={result['val_loss']:.4f} "
            f"val_acc={result['val_acc']:.3f}, best val_loss={result['best_val_loss']:.4f}"
        )
    print(f"view the runs with: tensorboard --logdir {root}")


if __name__ == "__main__":
    main()
