"""Validation, early stopping and the best model, on scikit-learn's bundled digits.

Run it with ``python examples/validation_early_stopping.py``. It trains a small classifier on
the 8x8 digit images that ship with scikit-learn (no download), evaluates the validation loss
and accuracy after every epoch, stops when the validation loss has not improved for 5 epochs,
restores the weights of the best epoch, and prints the test accuracy of that best model.

``FITSTREAM_EXAMPLE_EPOCHS`` caps the number of epochs (default 100).
"""

from __future__ import annotations

import os

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from fitstream import (
    augment,
    best_model,
    collect,
    early_stop,
    epoch_stream,
    evaluate,
    pipe,
    print_keys,
    take,
    tap,
    validation_loss,
)


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(dim=1) == labels).float().mean()


def load_splits() -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    digits = load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.4, random_state=0)
    X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    return (X_train, y_train), (X_val, y_val), (X_test, y_test)


def main() -> None:
    max_epochs = int(os.environ.get("FITSTREAM_EXAMPLE_EPOCHS", "100"))
    torch.manual_seed(0)
    train, val, test = load_splits()

    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    best = best_model("val_loss")

    events = pipe(
        epoch_stream(train, model, optimizer, loss_fn, batch_size=64),
        augment(validation_loss(val, loss_fn)),
        augment(evaluate(val, metrics={"val_acc": accuracy})),
        tap(best),
        early_stop(key="val_loss", patience=5),
        take(max_epochs),
        tap(print_keys("train_loss", "val_loss", "val_acc")),
    )
    history = collect(events)

    best_epoch = min(history, key=lambda event: event["val_loss"])
    stopped_early = len(history) < max_epochs
    print(
        f"trained {len(history)} epochs"
        + (" (stopped early)" if stopped_early else " (epoch cap reached)")
    )
    print(f"best epoch {best_epoch['step']}: val_loss={best_epoch['val_loss']:.4f}")

    best.load_into(model)
    model.eval()
    X_test, y_test = test
    with torch.no_grad():
        test_acc = accuracy(model(X_test), y_test).item()
    print(f"test accuracy of the best model: {test_acc:.3f}")


if __name__ == "__main__":
    main()
