"""Quick start: train a small regression model as a stream of epochs.

Run it with ``python examples/quickstart.py``. It fits an MLP to synthetic data
(``y = sin(x1) + x2 * x3`` plus noise), adds the validation loss to every epoch, prints one line
per epoch and, at the end, how much the validation loss fell.

``FITSTREAM_EXAMPLE_EPOCHS`` sets the number of epochs (default 20).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from fitstream import augment, collect, epoch_stream, pipe, print_keys, take, tap, validation_loss


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, generator=generator)
    noise = 0.05 * torch.randn(n, generator=generator)
    y = torch.sin(x[:, 0]) + x[:, 1] * x[:, 2] + noise
    return x, y.unsqueeze(1)


def main() -> None:
    epochs = int(os.environ.get("FITSTREAM_EXAMPLE_EPOCHS", "20"))
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    X_train, y_train = make_data(2000, generator)
    X_val, y_val = make_data(500, generator)
    model = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.MSELoss()

    events = pipe(
        epoch_stream((X_train, y_train), model, optimizer, loss_fn, batch_size=64),
        augment(validation_loss((X_val, y_val), loss_fn)),
        take(epochs),
        tap(print_keys("train_loss", "val_loss")),
    )
    history = collect(events)

    first, last = history[0]["val_loss"], history[-1]["val_loss"]
    print(f"trained {len(history)} epochs: val_loss {first:.4f} -> {last:.4f}")


if __name__ == "__main__":
    main()
